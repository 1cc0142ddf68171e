/* raft/core/core.h - the core's private state, shared by its .c files.
 *
 * Files by concept: log.c (the in-memory log), config.c (configurations),
 * election.c (pre-vote, votes, priorities), replication.c (AppendEntries,
 * commit, flow control), snapshot.c (taking, sending, installing snapshots),
 * membership.c (changes, transfer, priority hand-over), raft.c (raft_step, the
 * update and the timers).
 */
#ifndef FERRY_RAFT_CORE_CORE_H
#define FERRY_RAFT_CORE_CORE_H

#include <stdbool.h>

#include "raft/core/raft.h"
#include "util/rand.h"

#ifndef RAFT_MUTATION
#define RAFT_MUTATION 0
#endif

/* Decayed target priority stays at 1 for this many leaderless rounds before
 * reaching 0, the only target a witness may campaign at or be voted in at. */
#define RAFT_WITNESS_ROUNDS 2

/* In-memory log: entries offset+1 .. offset+n in e[start .. start+n). The term
 * of entry `offset` is always known (offset_term): it is the snapshot's last
 * entry or the last compacted one. */
struct rlog {
    struct raft_entry *e;
    size_t cap;
    size_t start;
    size_t n;
    uint64_t offset;
    uint64_t offset_term;
    uint64_t bytes; /* payload bytes held */
};

enum progress_state {
    PR_PROBE = 0,     /* one AppendEntries at a time, looking for the match point */
    PR_REPLICATE = 1, /* pipelined AppendEntries, next advanced optimistically */
    PR_SNAPSHOT = 2,  /* sending the snapshot in chunks */
};

struct inflight {
    uint64_t last;  /* last index carried by the message */
    uint64_t bytes; /* payload bytes */
};

/* Leader's view of one member (also used for vote counting). */
struct progress {
    uint64_t id;
    uint64_t next;
    uint64_t match;
    uint8_t state;
    uint8_t active; /* heard from since the last check-quorum */
    uint8_t vote;   /* 0 none, 1 granted, 2 refused */
    uint8_t timeout_now_sent;
    uint64_t sent_ms;     /* last probe / chunk sent */
    uint64_t progress_ms; /* match last advanced, or pipeline started */
    struct inflight infl[RAFT_MAX_INFLIGHT];
    uint32_t infl_head;
    uint32_t infl_count;
    uint64_t infl_bytes;
    uint64_t snap_index;
    uint64_t snap_offset;
};

struct raft {
    struct raft_options o;
    struct rng rng;
    uint64_t now;

    /* persistent */
    uint64_t term;
    uint64_t vote;
    struct rlog log;
    struct raft_snapshot_meta snap;

    /* volatile */
    uint8_t role;
    uint64_t leader_id;
    uint64_t commit;
    uint64_t applied;
    uint64_t durable;  /* entries up to here are on disk */
    uint64_t verified; /* entries up to here match the current leader's log */
    bool ack_pending;  /* an AppendEntries awaits durability before its ack */

    struct raft_config config; /* latest, in force from the moment it is appended */
    uint64_t config_index;     /* entry holding it; 0 = snapshot/bootstrap */

    struct progress prs[RAFT_MAX_NODES]; /* parallel to config.nodes */

    uint64_t election_deadline;
    uint64_t heartbeat_deadline;
    uint64_t quorum_deadline;
    uint64_t leader_contact_ms;
    uint64_t transfer_target;
    uint64_t transfer_deadline;
    uint64_t handover_hold_until;
    uint64_t term_start; /* leader: index of this term's no-op */

    uint32_t target_priority;
    uint32_t rounds_at_one;

    bool snapshot_pending;
    bool snapshot_wanted;   /* RAFT_EV_SNAPSHOT_NOW this step */
    uint64_t quick_until; /* until then, election timer resets draw heartbeat-paced timeouts */
    uint64_t applied_bytes; /* payload bytes applied since the snapshot's index */
    struct {
        uint64_t index;
        uint64_t term;
        uint64_t offset;
    } recv; /* snapshot being received */

    /* per step */
    struct raft_update *up;
    uint64_t dirty_from; /* lowest log index written this step, 0 if none */
    bool state_dirty;
    uint8_t step_role;
    uint64_t step_leader;
    uint64_t step_term;
    int oom;

    void **garbage; /* payloads dropped this step, freed at the next */
    size_t n_garbage;
    uint64_t garbage_bytes; /* payload bytes on the garbage list */
    size_t garbage_cap;
};

/* log.c */
uint64_t rlog_last(const struct rlog *l);
uint64_t rlog_term(const struct rlog *l, uint64_t index);
struct raft_entry *rlog_get(const struct rlog *l, uint64_t index);
int rlog_append(struct raft *r, uint64_t term, uint8_t type, const void *data, uint32_t len);
void rlog_truncate(struct raft *r, uint64_t from);
void rlog_compact(struct raft *r, uint64_t upto);
void rlog_reset(struct raft *r, uint64_t index, uint64_t term);
void rlog_free(struct raft *r);
void raft_discard(struct raft *r, void *p, size_t len);
void raft_free_garbage(struct raft *r);

/* config.c */
int cfg_pos(const struct raft_config *c, uint64_t id);
bool cfg_is_voter(const struct raft_config *c, uint64_t id);
uint32_t cfg_quorum(const struct raft_config *c);
uint32_t cfg_max_priority(const struct raft_config *c);
int cfg_priority(const struct raft_config *c, uint64_t id);
void config_refresh(struct raft *r);
void config_at(const struct raft *r, uint64_t index, struct raft_config *out);
void progress_rebuild(struct raft *r);

/* election.c */
void election_reset_timer(struct raft *r);
void become_follower(struct raft *r, uint64_t term, uint64_t leader);
void become_leader(struct raft *r);
void election_timeout(struct raft *r);
void peer_down(struct raft *r, uint64_t id);
void campaign(struct raft *r, bool pre, bool transfer);
void recv_vote(struct raft *r, const struct raft_msg *m);
void recv_vote_resp(struct raft *r, const struct raft_msg *m);
void priority_reset(struct raft *r);
bool in_lease(const struct raft *r);

/* replication.c */
void send_append(struct raft *r, struct progress *pr);
void replicate_all(struct raft *r);
void heartbeat(struct raft *r);
void maybe_commit(struct raft *r);
void recv_append(struct raft *r, const struct raft_msg *m);
void recv_append_resp(struct raft *r, const struct raft_msg *m);
void send_ack(struct raft *r);
void progress_reset(struct raft *r, struct progress *pr, uint64_t next);
void advance_commit(struct raft *r, uint64_t commit);

/* snapshot.c */
void send_snapshot(struct raft *r, struct progress *pr);
void recv_snapshot(struct raft *r, const struct raft_msg *m);
void recv_snapshot_resp(struct raft *r, const struct raft_msg *m);
void snapshot_saved(struct raft *r, uint64_t index, uint64_t size);

/* membership.c */
int membership_change(struct raft *r, const struct raft_event *ev);
int transfer_start(struct raft *r, uint64_t id);
void transfer_check(struct raft *r, struct progress *pr);
void maybe_handover(struct raft *r);
void recv_timeout_now(struct raft *r, const struct raft_msg *m);

/* raft.c */
struct raft_msg *msg_new(struct raft *r, uint8_t type, uint64_t to);
struct progress *progress_of(struct raft *r, uint64_t id);
void mark_dirty(struct raft *r, uint64_t from);
bool self_is_voter(const struct raft *r);

#endif
