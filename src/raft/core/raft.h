/* raft/core/raft.h - Ferry's Raft consensus core: a pure, deterministic state machine.
 *
 * The core implements Raft (Ongaro's dissertation) with pre-vote, check-quorum,
 * leader stickiness, a no-op entry per term, pipelined and batched replication
 * with conflict hints and per-follower flow control, snapshots sent in chunks,
 * leadership transfer, single-server membership changes, NuRaft-style
 * priorities and the witness rule (priority 0). It does no I/O, reads no clock
 * and keeps no global state: everything happens inside raft_step(), which takes
 * one event and fills a struct raft_update with what the caller (the driver)
 * must do. Randomness comes only from the seed in raft_options.
 *
 *   for (;;) {
 *       wait for a message, a storage completion, a request, or update.deadline_ms;
 *       raft_step(r, &event, &update);
 *       act on the update in the order below;
 *   }
 *
 * ORDERING CONTRACT (what the driver must do with an update, in this order):
 *
 *  1. RAFT_UPDATE_STATE: persist (term, vote) durably BEFORE sending any message
 *     of this update. A vote or a new term must never be visible to another node
 *     before it is on disk.
 *  2. RAFT_UPDATE_CHUNK: store the received snapshot chunk (offset, bytes) of
 *     the snapshot being received, before sending any message of this update
 *     (the reply acknowledges the chunk). Chunks need not be fsynced: an
 *     interrupted transfer restarts from offset 0 after a crash.
 *  3. RAFT_UPDATE_INSTALL: after every storage write requested earlier has
 *     completed, durably install the received snapshot (its metadata and data),
 *     load it into the state machine, and drop the log entries it covers: all
 *     of them if install_keep_log is 0, else those at or below its index. This
 *     happens before sending any message of this update.
 *  4. RAFT_UPDATE_ENTRIES: write persist[0..n_persist) to the log, first
 *     discarding every stored entry at or after persist_from. Writes may be
 *     asynchronous but complete in the order they were requested; when the
 *     entries up to index i (term t) are durable, call raft_step with
 *     RAFT_EV_PERSISTED {i, t}. Messages of this update may be sent before the
 *     write completes: the core acknowledges entries to a leader, and counts its
 *     own entries toward commit, only after RAFT_EV_PERSISTED.
 *  5. RAFT_UPDATE_MESSAGES: send msgs[0..n_msgs). An InstallSnapshot message
 *     has data == NULL: the driver fills `len` bytes at `offset` from its
 *     snapshot with that index before sending. Messages may be lost,
 *     duplicated or reordered; the core copes.
 *  6. RAFT_UPDATE_APPLY: apply apply[0..n_apply) to the state machine, in
 *     order. They are committed and durable locally. CONFIG and NOOP entries
 *     are passed through too; the state machine skips them.
 *  7. RAFT_UPDATE_TAKE_SNAPSHOT: once the entries above are applied, capture
 *     the state machine at exactly index take_snapshot, persist it, then call
 *     raft_step with RAFT_EV_SNAPSHOT_SAVED {index, size}. May be asynchronous.
 *  8. RAFT_UPDATE_COMPACT: stored log entries at or below compact_to may be
 *     deleted (the saved snapshot covers them).
 *  9. Call raft_step with RAFT_EV_TICK when the clock reaches deadline_ms (or
 *     earlier; any event with a later now_ms also runs expired timers).
 *
 * PEER DOWN: when the transport reports that an established connection to a
 * peer was lost (reset or closed: its process most likely died), call
 * raft_step with RAFT_EV_PEER_DOWN {node_id}. A follower whose leader is
 * node_id and that may campaign (a voter; the priority and witness rules
 * apply as usual) forgets that leader - its lease ends, so it grants others'
 * pre-votes - and acts as if its election timer fired now: it starts a
 * pre-vote at once instead of after 1-2 election timeouts. In every other
 * case (another node, a learner, a leader or a candidate) the event does
 * nothing. It is only a hint and never affects safety: a spurious one (the
 * link dropped but the leader lives) costs one pre-vote round that the
 * followers still hearing the leader ignore (stickiness), and the leader's
 * next heartbeat makes this node its follower again.
 *
 * SNAPSHOT NOW: RAFT_EV_SNAPSHOT_NOW asks for a snapshot at the applied index
 * outside the snapshot_threshold / snapshot_bytes schedule (an operator's
 * `ferry admin snapshot`). The update of that step carries
 * RAFT_UPDATE_TAKE_SNAPSHOT unless the newest snapshot is already at the
 * applied index (nothing to do, returns 0). FERRY_EBUSY while a snapshot is
 * being taken (requested and not yet reported saved).
 *
 * A client's proposal is acknowledged only once its entry (proposed_index,
 * proposed_term) has been applied with that same term.
 *
 * MEMORY: every pointer in an update (entries, payloads, messages, chunk bytes)
 * belongs to the core or to the update and stays valid until the next
 * raft_step() call on the same core or raft_close(). The core copies every
 * payload it keeps: an event's buffers (a proposal, a received message) are
 * the caller's and may be freed as soon as raft_step returns.
 *
 * ERRORS: raft_step returns 0, or a negative FERRY_E* code when a request
 * (proposal, membership change, transfer) is refused — the update is still
 * valid and must be acted on. FERRY_ENOMEM means an allocation failed; the core
 * is then unusable and must be closed and restored from storage.
 *
 * Wire messages: codec.h encodes and decodes struct raft_msg. The events,
 * actions, byte layouts and invariants are described in docs/raft.md.
 */
#ifndef FERRY_RAFT_CORE_RAFT_H
#define FERRY_RAFT_CORE_RAFT_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

/* Upper bound on the nodes in one configuration (voters and learners). */
#define RAFT_MAX_NODES 16
/* Upper bound on AppendEntries messages in flight to one follower. */
#define RAFT_MAX_INFLIGHT 64
/* Largest entry payload the core accepts (bytes). */
#define RAFT_MAX_ENTRY_BYTES (64u << 20)
/* Rejected messages reported per update; the rest are only counted. */
#define RAFT_MAX_REJECTS 8

enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 1, /* an application command */
    RAFT_ENTRY_NOOP = 2,   /* appended by every new leader at the start of its term */
    RAFT_ENTRY_CONFIG = 3, /* a membership configuration (raft_config_encode) */
};

struct raft_entry {
    uint64_t term;
    uint64_t index;
    uint8_t type; /* enum raft_entry_type */
    uint32_t len;
    uint8_t *data; /* len bytes; NULL when len == 0 */
};

enum raft_node_role {
    RAFT_VOTER = 1,   /* counts toward quorums and may lead */
    RAFT_LEARNER = 2, /* receives the log, never votes toward quorums, never campaigns */
};

/* One member. priority: 0 = witness, otherwise higher is preferred as leader. */
struct raft_node {
    uint64_t id; /* non-zero */
    uint8_t role;
    uint8_t priority;
};

struct raft_config {
    uint32_t n;
    struct raft_node nodes[RAFT_MAX_NODES];
};

/* Metadata of a snapshot: the state machine after applying every entry up to
 * `index` (whose term is `term`), the configuration in force at that index, and
 * the size in bytes of the driver's snapshot data. */
struct raft_snapshot_meta {
    uint64_t index;
    uint64_t term;
    struct raft_config config;
    uint64_t size;
};

enum raft_role {
    RAFT_FOLLOWER = 0,
    RAFT_PRECANDIDATE = 1, /* running a pre-vote round; term not yet bumped */
    RAFT_CANDIDATE = 2,
    RAFT_LEADER = 3,
};

/* ---- messages ---------------------------------------------------------- */

enum raft_msg_type {
    RAFT_MSG_APPEND = 1,
    RAFT_MSG_APPEND_RESP = 2,
    RAFT_MSG_VOTE = 3,
    RAFT_MSG_VOTE_RESP = 4,
    RAFT_MSG_SNAPSHOT = 5,
    RAFT_MSG_SNAPSHOT_RESP = 6,
    RAFT_MSG_TIMEOUT_NOW = 7,
};

struct raft_msg_append {
    uint64_t prev_index;
    uint64_t prev_term;
    uint64_t commit; /* leader's commit index */
    uint32_t n_entries;
    struct raft_entry *entries; /* indexes prev_index+1 .. prev_index+n_entries */
};

struct raft_msg_append_resp {
    uint8_t success;
    /* success: every entry up to `index` matches the leader and is durable.
     * rejection: the prev_index that did not match. */
    uint64_t index;
    uint64_t last_index;     /* the follower's last log index */
    uint64_t conflict_term;  /* rejection hint: term of the follower's entry at index, 0 if none */
    uint64_t conflict_index; /* rejection hint: first index of conflict_term, or last_index + 1 */
};

struct raft_msg_vote {
    uint8_t pre_vote; /* 1: pre-vote; `term` is the term the sender would campaign in */
    uint8_t transfer; /* 1: leadership transfer; voters ignore stickiness and priority */
    uint64_t last_index;
    uint64_t last_term;
};

struct raft_msg_vote_resp {
    uint8_t pre_vote;
    uint8_t granted;
};

struct raft_msg_snapshot {
    uint64_t index; /* snapshot's last included index */
    uint64_t term;
    struct raft_config config;
    uint64_t size;   /* total bytes */
    uint64_t offset; /* of this chunk */
    uint8_t done;    /* this chunk ends the snapshot */
    uint32_t len;
    const uint8_t *data; /* NULL in an update: the driver fills it from its snapshot */
};

struct raft_msg_snapshot_resp {
    uint64_t index;  /* snapshot index being answered */
    uint8_t done;    /* 1: the follower holds the whole snapshot (installed or already had it) */
    uint64_t offset; /* done == 0: the next offset the follower wants */
};

struct raft_msg {
    uint8_t type; /* enum raft_msg_type */
    uint64_t cluster_id;
    uint64_t from;
    uint64_t to;
    uint64_t term;
    union {
        struct raft_msg_append append;
        struct raft_msg_append_resp append_resp;
        struct raft_msg_vote vote;
        struct raft_msg_vote_resp vote_resp;
        struct raft_msg_snapshot snapshot;
        struct raft_msg_snapshot_resp snapshot_resp;
    } u;
};

/* ---- events ------------------------------------------------------------ */

enum raft_event_type {
    RAFT_EV_TICK = 1,           /* time passed */
    RAFT_EV_RECEIVE = 2,        /* a message arrived */
    RAFT_EV_PERSISTED = 3,      /* log entries up to (index, term) are durable */
    RAFT_EV_SNAPSHOT_SAVED = 4, /* a snapshot requested by take_snapshot is durable */
    RAFT_EV_PROPOSE = 5,        /* append a NORMAL entry (leader only) */
    RAFT_EV_ADD_LEARNER = 6,    /* membership: add a non-voting node */
    RAFT_EV_PROMOTE = 7,        /* membership: make a caught-up learner a voter */
    RAFT_EV_REMOVE = 8,         /* membership: remove a node (the leader too) */
    RAFT_EV_TRANSFER = 9,       /* hand leadership to node id (0: the best candidate) */
    RAFT_EV_PEER_DOWN = 10,     /* the link to node id was lost (connection reset or closed) */
    RAFT_EV_SNAPSHOT_NOW = 11,  /* take a snapshot at the applied index now (any role) */
};

struct raft_event {
    uint8_t type;    /* enum raft_event_type */
    uint64_t now_ms; /* the node's monotonic clock; never goes back */
    union {
        const struct raft_msg *receive;
        struct {
            uint64_t index;
            uint64_t term;
        } persisted;
        struct {
            uint64_t index;
            uint64_t size;
        } snapshot_saved;
        struct {
            const void *data;
            uint32_t len;
        } propose;
        struct {
            uint64_t id;
            uint8_t priority;
        } add_learner;
        uint64_t node_id; /* PROMOTE, REMOVE, TRANSFER, PEER_DOWN */
    } u;
};

/* ---- updates ----------------------------------------------------------- */

enum raft_update_flag {
    RAFT_UPDATE_STATE = 1 << 0,
    RAFT_UPDATE_CHUNK = 1 << 1,
    RAFT_UPDATE_INSTALL = 1 << 2,
    RAFT_UPDATE_ENTRIES = 1 << 3,
    RAFT_UPDATE_MESSAGES = 1 << 4,
    RAFT_UPDATE_APPLY = 1 << 5,
    RAFT_UPDATE_TAKE_SNAPSHOT = 1 << 6,
    RAFT_UPDATE_COMPACT = 1 << 7,
    RAFT_UPDATE_ROLE = 1 << 8, /* role, leader or term changed during this step */
};

/* Why a received message was rejected. */
enum raft_reject_reason {
    RAFT_REJECT_CLUSTER = 1,   /* cluster id differs from ours */
    RAFT_REJECT_UNKNOWN = 2,   /* sender is not in our configuration */
    RAFT_REJECT_MISROUTED = 3, /* addressed to another node */
};

struct raft_reject {
    uint64_t from;
    uint64_t cluster_id;
    uint8_t type;   /* message type */
    uint8_t reason; /* enum raft_reject_reason */
};

struct raft_update {
    uint32_t flags; /* enum raft_update_flag */

    /* Always filled: the node's view after the step. */
    uint8_t role; /* enum raft_role */
    uint64_t leader_id;
    uint64_t term;
    uint64_t vote;
    uint64_t commit;
    uint64_t deadline_ms; /* call raft_step with RAFT_EV_TICK at this time */

    /* RAFT_UPDATE_CHUNK */
    struct {
        uint64_t index;
        uint64_t offset;
        uint32_t len;
        const uint8_t *data;
    } chunk;
    /* RAFT_UPDATE_INSTALL */
    struct raft_snapshot_meta install;
    uint8_t install_keep_log;

    /* RAFT_UPDATE_ENTRIES */
    uint64_t persist_from;
    uint32_t n_persist;
    const struct raft_entry *persist;

    /* RAFT_UPDATE_MESSAGES */
    uint32_t n_msgs;
    struct raft_msg *msgs;

    /* RAFT_UPDATE_APPLY */
    uint32_t n_apply;
    const struct raft_entry *apply;

    uint64_t take_snapshot; /* RAFT_UPDATE_TAKE_SNAPSHOT */
    uint64_t compact_to;    /* RAFT_UPDATE_COMPACT */

    /* RAFT_EV_PROPOSE / membership accepted: the entry that carries it. */
    uint64_t proposed_index;
    uint64_t proposed_term;

    /* Messages rejected during this step (cluster id, unknown sender). */
    uint32_t n_rejected; /* may exceed RAFT_MAX_REJECTS; only that many are listed */
    struct raft_reject rejected[RAFT_MAX_REJECTS];

    /* private: storage reused across steps */
    uint32_t msgs_cap;
    uint8_t *chunk_buf;
    uint32_t chunk_cap;
};

void raft_update_init(struct raft_update *up);
void raft_update_free(struct raft_update *up);

/* ---- the core ---------------------------------------------------------- */

struct raft_options {
    uint64_t id;                  /* this node, non-zero */
    uint64_t cluster_id;          /* every message carries it; others are rejected */
    uint32_t election_timeout_ms; /* randomized in [t, max) */
    uint32_t election_timeout_max_ms; /* max; 0 (or not above t): 2t */
    uint32_t heartbeat_ms;
    uint32_t max_entries_per_msg;
    uint32_t max_bytes_per_msg;    /* batch limit (at least one entry is always sent) */
    uint32_t max_inflight_msgs;    /* <= RAFT_MAX_INFLIGHT */
    uint64_t max_inflight_bytes;   /* per follower */
    uint32_t snapshot_threshold;   /* applied entries between snapshots (snapshot_distance) */
    uint64_t snapshot_bytes;       /* also snapshot once the entries applied since the last
                                      one carry this many payload bytes (0: no such limit);
                                      bounds the log held in memory */
    uint32_t snapshot_trailing;    /* entries kept behind a snapshot */
    uint32_t snapshot_chunk_bytes; /* InstallSnapshot chunk size */
    uint32_t catchup_margin;       /* a learner within this many entries is caught up */
    uint64_t seed;                 /* for election timeouts */
};

/* Fill defaults: 1000 ms election timeout, 100 ms heartbeat, 64 entries / 1 MiB
 * per message, 16 messages / 8 MiB in flight, snapshot every 1000 entries
 * keeping 100 behind, 256 KiB chunks, learners caught up within 16 entries. */
void raft_options_default(struct raft_options *o);

struct raft;

/* Create a core for a node with an empty log whose initial configuration is
 * `bootstrap` (identical on every founding node; a joining node passes an
 * empty configuration, so it cannot campaign before the leader adds it).
 * *out is freed by raft_close. */
int raft_init(struct raft **out, const struct raft_options *o, const struct raft_config *bootstrap,
              struct ferry_err *err);

/* State the driver restores on restart. entries are the stored log in index
 * order (copied); snapshot.index == 0 means no snapshot. */
struct raft_persisted {
    uint64_t term;
    uint64_t vote;
    struct raft_snapshot_meta snapshot;
    uint32_t n_entries;
    const struct raft_entry *entries;
};

/* Load persisted state into a core fresh from raft_init (before any step).
 * FERRY_ECORRUPT if the entries are not contiguous, go back in term, or leave
 * a gap after the snapshot. */
int raft_restore(struct raft *r, const struct raft_persisted *p, struct ferry_err *err);

void raft_close(struct raft *r);

/* Feed one event; see the contract at the top. Clears `up` first. */
int raft_step(struct raft *r, const struct raft_event *ev, struct raft_update *up);

/* ---- read-only accessors ---------------------------------------------- */
uint64_t raft_id(const struct raft *r);
enum raft_role raft_role(const struct raft *r);
uint64_t raft_leader(const struct raft *r);
uint64_t raft_term(const struct raft *r);
uint64_t raft_vote(const struct raft *r);
uint64_t raft_commit_index(const struct raft *r);
uint64_t raft_applied_index(const struct raft *r);
uint64_t raft_last_index(const struct raft *r);
/* Index of the entry before the first one held in memory (a snapshot covers it). */
uint64_t raft_first_index(const struct raft *r);
/* Payload bytes of the entries held in memory, including those dropped by
 * the last step and freed at the start of the next. */
uint64_t raft_log_bytes(const struct raft *r);
/* Term of the entry at index, or 0 if not known (compacted or beyond the log). */
uint64_t raft_term_at(const struct raft *r, uint64_t index);
/* The entry at index, or NULL if not held in memory. */
const struct raft_entry *raft_entry_at(const struct raft *r, uint64_t index);
const struct raft_config *raft_config(const struct raft *r);
/* Index of the entry holding the latest configuration (0: the snapshot's or bootstrap). */
uint64_t raft_config_index(const struct raft *r);
const struct raft_snapshot_meta *raft_snapshot(const struct raft *r);
/* This node's priority in the configuration (0 also when absent). */
int raft_priority(const struct raft *r);
int raft_target_priority(const struct raft *r);
/* 1 if this node is a voter with priority 0. */
int raft_is_witness(const struct raft *r);
/* Leader in office whose proposals are accepted (not a witness, no transfer running). */
int raft_accepts_proposals(const struct raft *r);
/* Node id of a running leadership transfer (0 if none). */
uint64_t raft_transfer_target(const struct raft *r);
/* Leader: replication state of a member (0 if unknown). */
int raft_progress(const struct raft *r, uint64_t id, uint64_t *match, uint64_t *next);

/* ---- configurations ----------------------------------------------------- */
const struct raft_node *raft_config_find(const struct raft_config *c, uint64_t id);
uint32_t raft_config_voters(const struct raft_config *c);
/* Encode as a CONFIG entry payload: [u32 n] n x [u64 id][u8 role][u8 priority]. */
int raft_config_encode(const struct raft_config *c, uint8_t *out, size_t cap, size_t *len);
int raft_config_decode(const uint8_t *p, size_t len, struct raft_config *c);

const char *raft_role_name(enum raft_role role);
const char *raft_msg_type_name(uint8_t type);

#endif
