/* cluster/cluster.h - the state machine bridge: the server's commit path
 * through Raft, and the node's role for the server.
 *
 * The server turns client requests into broker commands and proposes them
 * here. Commands proposed during one event-loop turn are coalesced into one
 * Raft entry by cluster_flush() (called once per turn from the server's
 * uv_check handler). The Raft driver (raft/node) replicates the entry and,
 * once it is committed (on a majority's disks), hands it back to apply(),
 * which runs broker_apply on every node, leader included, in one SQLite
 * transaction per batch of committed entries. Only after that transaction
 * commits are the proposers' callbacks run: a producer is acknowledged once
 * its message is durable on a majority and applied on the leader.
 *
 * Every node opens its message database with synchronous=NORMAL: the Raft
 * log is the durable record, and entries above the database's last_applied
 * are applied again after a crash (broker_apply skips the ones at or below).
 *
 * Roles. Only a leader serves clients, and only once it has applied the
 * no-op entry of its own term (so its queues and channels reflect every
 * entry committed before it took over): cluster_serving(). A node that stops
 * being leader fails the proposals still in flight (their outcome is
 * unknown: the next leader may or may not commit them) and tells the server
 * through on_role, which closes its sessions.
 *
 * A node without cluster keys is a cluster of one, on the same path.
 */
#ifndef FERRY_CLUSTER_H
#define FERRY_CLUSTER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "broker/broker.h"
#include "config/config.h"
#include "raft/node/node.h"
#include "util/buf.h"
#include "util/err.h"

/* Called once per proposed command after its entry was applied (res->status
 * 0 or a deterministic rejection) or when it cannot be known to be (the
 * leader lost office or storage: res->status FERRY_EUNAVAILABLE, and the
 * message says whether the command may still take effect). Never called from
 * inside cluster_propose. */
typedef void (*cluster_done_cb)(void *ctx, const struct broker_result *res);

struct cluster_pending {
    cluster_done_cb cb; /* may be NULL */
    void *ctx;
};

struct cluster_inflight; /* private: an entry proposed and not yet applied */

struct cluster_events {
    /* The node started or stopped serving clients (see top). */
    void (*on_serving)(void *ctx, int serving);
    /* Entries were applied: deliveries may be ready. */
    void (*on_applied)(void *ctx);
};

struct cluster {
    struct broker *broker;
    struct rnode *node;
    uint32_t node_id;
    int priority; /* this node's configured priority (0: witness) */
    struct cluster_events ev;
    void *ev_ctx;
    struct buf entry;             /* commands of the entry being built */
    struct cluster_pending *pend; /* one per command in `entry` */
    size_t npend;
    size_t cap_pend;
    struct cluster_inflight *head; /* proposed, oldest first */
    struct cluster_inflight *tail;
    struct cluster_inflight *done; /* applied in this batch, callbacks pending */
    struct cluster_inflight *done_tail;
    int serving;
    int failed; /* storage failed (the driver is retrying) */
    struct ferry_err failure;
    uint64_t entries_committed; /* statistics: entries applied on this node */
    uint64_t commands_committed;
    uint64_t last_applied;
};

struct tls_ctx;

/* TLS contexts for node links (NULL members: plaintext); the caller keeps
 * them alive while the node runs or until it sets others. */
struct cluster_tls {
    struct tls_ctx *accept;
    struct tls_ctx *dial;
};

/* Start the Raft node for cfg on loop; the broker is open. tls may be NULL. */
int cluster_start(struct cluster *c, uv_loop_t *loop, const struct config *cfg,
                  const struct cluster_tls *tls, struct broker *b, const struct cluster_events *ev,
                  void *ctx, struct ferry_err *err);
/* Node links made from now on use these contexts (certificate reload). */
void cluster_set_tls(struct cluster *c, const struct cluster_tls *tls);
/* Stop the node; pending and in-flight callbacks run with EUNAVAILABLE.
 * done(arg) runs from the loop once the node's handles are closed. */
void cluster_stop(struct cluster *c, void (*done)(void *arg), void *arg);

/* 0 if this node takes writes now, else FERRY_ENOTLEADER (the leader's client
 * address, if known, in `leader`) or FERRY_EUNAVAILABLE with the reason. */
int cluster_writable(const struct cluster *c, struct ferry_err *err);
static inline int cluster_serving(const struct cluster *c)
{
    return c->serving;
}
/* The current leader's client address, "" if unknown or none. */
const char *cluster_leader_address(const struct cluster *c);
/* "leader", "follower", "candidate", "witness", "learner", "failed". */
const char *cluster_role_name(const struct cluster *c);

/* Queue one command for the current entry. 0, FERRY_ENOMEM, or the errors of
 * cluster_writable; on error cb is not called. */
int cluster_propose(struct cluster *c, const struct broker_cmd *cmd, cluster_done_cb cb, void *ctx,
                    struct ferry_err *err);
/* Queue already-encoded commands (e.g. RETURNs from broker_client_close) with no callback. */
int cluster_propose_encoded(struct cluster *c, const uint8_t *p, size_t len, struct ferry_err *err);

/* Propose the current entry, if any. Returns the number of commands
 * proposed, or a negative error after which their callbacks have run. */
int cluster_flush(struct cluster *c);

/* Entries waiting for cluster_flush? */
static inline int cluster_has_pending(const struct cluster *c)
{
    return c->npend > 0;
}

/* Hand leadership to `target` (0: the best caught-up node). */
int cluster_transfer(struct cluster *c, uint32_t target, struct ferry_err *err);
int cluster_remove(struct cluster *c, uint32_t id, struct ferry_err *err);
/* Add node id at host:port (its replication endpoint) as a learner; it is
 * promoted to voter once caught up. */
int cluster_add(struct cluster *c, uint32_t id, uint8_t priority, const char *host, uint16_t port,
                struct ferry_err *err);
/* Ask for a snapshot of this node now; *index is the index it will cover. */
int cluster_snapshot(struct cluster *c, uint64_t *index, struct ferry_err *err);
void cluster_status(const struct cluster *c, struct rnode_status *out);

#endif
