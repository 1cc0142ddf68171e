/* raft/node/node.h - the Raft driver: the pure core, the log on disk, the node
 * transport and the timers, tied to one libuv loop.
 *
 * The driver runs the core (raft/core/raft.h) on the loop thread and carries
 * out every update in the order the core's contract demands:
 *
 *   - log appends go to a writer thread that batches everything queued while
 *     it was busy into one raftlog_sync (group commit) and reports
 *     RAFT_EV_PERSISTED back to the loop; messages are sent meanwhile, so the
 *     leader's fsync runs in parallel with the followers';
 *   - the rare writes that must be durable before a message leaves (term and
 *     vote, a snapshot install) first wait for the writer to go idle and then
 *     run on the loop thread, so no message of that update can overtake them;
 *   - received snapshot chunks are written as they come; a snapshot to take
 *     is streamed by the owner's snapshot_write callback on a libuv threadpool
 *     thread into a raftlog snapshot writer, while the loop keeps applying;
 *   - committed entries are handed to the owner's apply callback, in order.
 *
 * STORAGE FAILURES. When a log write or sync fails, the node cannot tell what
 * reached the disk. It stops: it drops its core, sends nothing, and reports
 * the failure through on_failed (the owner fails its pending proposals: their
 * outcome is unknown). Every second it reopens the log and restores a fresh
 * core from what is really on disk, as a restart would; the node then rejoins
 * as a follower. Nothing it applied is lost, because entries are applied only
 * once durable.
 *
 * THREADS: every function here is called on the loop thread; every callback
 * runs on the loop thread except snapshot_write (a threadpool thread).
 * Callbacks must not call rnode_propose or other stepping functions (the
 * driver asserts it): proposals made while handling an apply are queued by
 * the owner and proposed on its next turn.
 */
#ifndef FERRY_RAFT_NODE_H
#define FERRY_RAFT_NODE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "raft/core/raft.h"
#include "raft/log/log.h"
#include "raft/transport/transport.h"
#include "util/err.h"

struct rnode_member {
    uint32_t id;
    uint8_t priority; /* 0 = witness */
    const char *host; /* replication endpoint */
    uint16_t port;
};

struct rnode_config {
    uint64_t cluster_id;
    uint32_t self_id;
    const struct rnode_member *members; /* the configured membership (bootstrap) */
    uint32_t n_members;
    const char *listen_host; /* this node's replication endpoint */
    uint16_t listen_port;
    const char *log_dir;
    uint64_t max_segment_bytes;
    uint32_t max_generations;
    uint32_t snapshot_distance;
    uint64_t snapshot_bytes; /* also snapshot after this many applied payload bytes */
    uint32_t heartbeat_ms;
    uint32_t election_timeout_ms; /* the core randomizes in [min, max) */
    uint32_t election_timeout_max_ms;
    int verify_ip;
    struct tls_ctx *tls_accept; /* node links over TLS when both are set (transport.h) */
    struct tls_ctx *tls_dial;
    const char *client_address; /* sent to peers in the handshake ("" if none) */
    int join; /* cluster_join: start with an empty configuration and wait to be added
                 (members then only says whom to dial); see rnode_add_member */
    const struct raftlog_io *io; /* NULL: POSIX */
    uint64_t seed;
};

/* Sequential byte sinks and sources for snapshots: write returns 0, read the
 * bytes read (0 at the end); both a negative FERRY_E* code on failure, whose
 * message the driver logs. */
typedef int (*rnode_write_fn)(void *ctx, const void *p, size_t n);
typedef int (*rnode_read_fn)(void *ctx, void *p, size_t n);

struct rnode;

struct rnode_callbacks {
    /* Apply committed entries (every type; NOOP and CONFIG carry no command)
     * in order. A non-zero return is a storage failure of the state machine:
     * the node stops as after a log failure. */
    int (*apply)(struct rnode *n, const struct raft_entry *entries, uint32_t count,
                 struct ferry_err *err);
    /* The role, leader or term changed. */
    void (*on_role)(struct rnode *n);
    /* Pin the state machine as it is now (every entry up to `index` applied;
     * after a restart it may be further ahead, which is fine: the data carry
     * their own index and apply skips what they cover) and return a job for
     * snapshot_write. */
    int (*snapshot_begin)(struct rnode *n, uint64_t index, void **job, struct ferry_err *err);
    /* Threadpool thread: stream the pinned state to write(). */
    int (*snapshot_write)(void *job, rnode_write_fn write, void *wctx, struct ferry_err *err);
    /* Loop thread: release the job (after write, or without it on failure). */
    void (*snapshot_end)(void *job);
    /* Replace the state machine with the snapshot read from read(). Sets
     * *skipped when the state machine was already newer. */
    int (*restore)(struct rnode *n, rnode_read_fn read, void *rctx, int *skipped,
                   struct ferry_err *err);
    /* Storage failed; the node stopped (see top). why says what failed. */
    void (*on_failed)(struct rnode *n, const struct ferry_err *why);
    /* Storage works again; the node restarted from disk as a follower. */
    void (*on_recovered)(struct rnode *n);
};

struct rnode_peer_status {
    uint32_t id;
    uint8_t role;     /* RAFT_VOTER / RAFT_LEARNER */
    uint8_t priority; /* 0: witness */
    int reachable;    /* outbound link up (self: 1) */
    uint64_t match;   /* leader only: highest index known replicated (0 unknown) */
    char client_address[128];
};

struct rnode_status {
    uint32_t id;
    uint8_t role; /* enum raft_role */
    uint32_t leader_id;
    uint64_t term;
    uint64_t first_index;
    uint64_t last_index;
    uint64_t commit;
    uint64_t applied;
    uint64_t snapshot_index;
    uint64_t log_bytes; /* payload bytes of the entries the core holds in memory */
    int failed; /* storage failed; retrying */
    char failure[FERRY_ERRMSG_MAX];
    uint32_t n_peers; /* members of the current configuration, self included */
    struct rnode_peer_status peers[RAFT_MAX_NODES];
    uint64_t entries_persisted; /* statistics */
    uint64_t syncs;
    uint64_t links_refused;     /* node-link connections this node refused, every reason */
    uint64_t links_tls_failed;  /* this node's dials whose TLS handshake failed */
    char links_last_refused[200]; /* why the last one was refused, "" if none */
};

/* Open the log, restore the core and the state machine, start the transport.
 * The state machine must already be open: when its applied index is below
 * the newest snapshot's, cb->restore is called from inside rnode_start.
 * On error nothing is left running and *out is NULL. */
int rnode_start(struct rnode **out, uv_loop_t *loop, const struct rnode_config *cfg,
                const struct rnode_callbacks *cb, void *data, struct ferry_err *err);

/* Stop timers, the writer and the transport; cb runs from the loop when every
 * handle is closed, then the node is freed. Appended entries not yet synced
 * may be lost, as after a crash (the writer finishes its current batch). */
void rnode_stop(struct rnode *n, void (*cb)(void *data), void *data);

void *rnode_data(const struct rnode *n);

/* New node links use these TLS contexts (certificate reload); see
 * rtransport_set_tls. */
void rnode_set_tls(struct rnode *n, struct tls_ctx *accept, struct tls_ctx *dial);

/* Propose one NORMAL entry. 0 with its (index, term), FERRY_ENOTLEADER, or
 * FERRY_EUNAVAILABLE (storage failed, transfer running). */
int rnode_propose(struct rnode *n, const void *data, uint32_t len, uint64_t *index, uint64_t *term,
                  struct ferry_err *err);

/* Membership and leadership (leader only).
 *
 * rnode_add_member: add node `id`, replicating at host:port, as a learner
 * with that priority (0: a witness once promoted). The address goes into the
 * address book (kept in <log_dir>/members and sent to every peer), the node
 * is dialled, and the driver promotes it to voter on the first tick after
 * its log is within catchup_margin entries of the leader's. 0 once the
 * change is appended (in force at once; committed like any entry): its
 * outcome is unknown if leadership is lost before it commits.
 * FERRY_ENOTLEADER, FERRY_EEXIST (already a member), FERRY_EBUSY (another
 * change or a transfer in progress, or this term's no-op not committed yet),
 * FERRY_EINVAL (a member of cluster_membership at another address),
 * FERRY_ELIMIT, FERRY_EUNAVAILABLE.
 *
 * rnode_remove: remove a member (the leader too: it steps down once the
 * change commits). Every node stops dialling it as soon as the change is in
 * its log. rnode_transfer: hand leadership to `target` (0: the best voter). */
int rnode_add_member(struct rnode *n, uint32_t id, uint8_t priority, const char *host,
                     uint16_t port, struct ferry_err *err);
int rnode_transfer(struct rnode *n, uint32_t target, struct ferry_err *err);
int rnode_remove(struct rnode *n, uint32_t id, struct ferry_err *err);

/* Take a snapshot at the applied index now (any role); *index is the index
 * of the snapshot being taken, or of the newest one when it already covers
 * every applied entry. FERRY_EBUSY while a snapshot is being taken. The
 * snapshot is saved in the background; `snapshot_index` in the status shows
 * it once saved. */
int rnode_snapshot_now(struct rnode *n, uint64_t *index, struct ferry_err *err);

int rnode_is_leader(const struct rnode *n);
uint32_t rnode_leader(const struct rnode *n);
uint64_t rnode_term(const struct rnode *n);
/* Client address a member announced in its handshake ("" if unknown). */
const char *rnode_client_address(const struct rnode *n, uint32_t id);
void rnode_status(const struct rnode *n, struct rnode_status *out);

#endif
