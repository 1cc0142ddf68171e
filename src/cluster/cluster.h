/* cluster/cluster.h - the commit path between the server and the state machine.
 *
 * The server turns client requests into broker commands and proposes them
 * here; the cluster makes them durable, applies them through broker_apply on
 * this node, and reports each command's result to the proposer's callback.
 *
 * Commands proposed during one event-loop turn are coalesced into one entry
 * and committed by cluster_flush(), which the server calls once per turn
 * (from its uv_check handler, after all reads of the turn were handled).
 *
 * This node-local implementation commits an entry by applying it in one
 * SQLite transaction with synchronous=FULL: the fsync of that transaction
 * happens before any callback runs, so a producer is acknowledged only after
 * its message is on disk. The replicated cluster replaces the body of
 * cluster_flush with "append to the Raft log, replicate, apply on commit";
 * the interface stays.
 *
 * After a storage failure the cluster refuses writes (cluster_writable
 * returns FERRY_EUNAVAILABLE with the reason) until a probe transaction
 * succeeds again (cluster_probe, retried by the server every second).
 */
#ifndef FERRY_CLUSTER_H
#define FERRY_CLUSTER_H

#include "broker/broker.h"
#include "util/buf.h"
#include "util/err.h"
#include <stddef.h>
#include <stdint.h>

/* Called once per proposed command after its entry committed (res->status 0
 * or a deterministic rejection) or failed (res->status is the storage error;
 * nothing of that entry was stored). Never called from inside cluster_propose. */
typedef void (*cluster_done_cb)(void *ctx, const struct broker_result *res);

struct cluster_pending {
    cluster_done_cb cb; /* may be NULL */
    void *ctx;
};

struct cluster {
    struct broker *broker;
    uint64_t node_id;
    uint64_t term;
    uint64_t last_index;           /* last entry committed */
    struct buf entry;              /* commands of the entry being built */
    struct cluster_pending *pend;  /* one per command in `entry` */
    size_t npend;
    size_t cap_pend;
    struct broker_result *results; /* scratch, cap_pend long */
    int failed;                    /* writes refused after a storage failure */
    struct ferry_err failure;      /* why */
    uint64_t entries_committed;    /* statistics */
    uint64_t commands_committed;
};

int cluster_init(struct cluster *c, struct broker *b, uint64_t node_id, struct ferry_err *err);
void cluster_destroy(struct cluster *c);

/* 0 if writes are accepted, else FERRY_EUNAVAILABLE with the reason in err. */
int cluster_writable(const struct cluster *c, struct ferry_err *err);

/* Queue one command for the current entry. 0, FERRY_ENOMEM, or
 * FERRY_EUNAVAILABLE (see cluster_writable); on error cb is not called. */
int cluster_propose(struct cluster *c, const struct broker_cmd *cmd, cluster_done_cb cb,
                    void *ctx, struct ferry_err *err);
/* Queue already-encoded commands (e.g. RETURNs from broker_client_close) with no callback. */
int cluster_propose_encoded(struct cluster *c, const uint8_t *p, size_t len, struct ferry_err *err);

/* Commit the current entry, if any, and run its callbacks. Returns the
 * number of commands committed, or a negative storage error (after which the
 * callbacks have run with that error and writes are refused). */
int cluster_flush(struct cluster *c);

/* After a failure: try an empty transaction; on success writes resume. */
int cluster_probe(struct cluster *c);

/* Entries waiting for cluster_flush? */
static inline int cluster_has_pending(const struct cluster *c)
{
    return c->npend > 0;
}

#endif
