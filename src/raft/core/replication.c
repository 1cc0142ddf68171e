/* replication.c - AppendEntries on both sides, commit, and flow control.
 *
 * The leader tracks each member in one of three states (etcd's progress):
 * PROBE sends one message at a time from `next` until a reply shows where the
 * logs match; REPLICATE pipelines batches, advancing `next` optimistically,
 * bounded by max_inflight_msgs and max_inflight_bytes; SNAPSHOT streams the
 * snapshot when the entries a member needs are compacted away. A rejection
 * carries the follower's conflict term and its first index, so the leader
 * skips a whole term per round trip. Messages lost in REPLICATE are noticed
 * when the pipeline makes no progress for an election timeout's half, and the
 * member drops back to PROBE.
 *
 * Commit (§5.4.2): the leader advances the commit index only to an index
 * held by a quorum of voters whose entry is from its current term; its own
 * entries count only once they are durable. A follower acknowledges entries
 * only once they are durable and known to match the leader's log.
 */
#include <stdlib.h>
#include <string.h>

#include "raft/core/core.h"
#include "util/alloc.h"

void progress_reset(struct raft *r, struct progress *pr, uint64_t next)
{
    pr->state = PR_PROBE;
    pr->next = next > pr->match ? next : pr->match + 1;
    pr->infl_head = 0;
    pr->infl_count = 0;
    pr->infl_bytes = 0;
    pr->sent_ms = 0;
    pr->progress_ms = r->now;
    pr->timeout_now_sent = 0;
}

static void infl_add(struct progress *pr, uint64_t last, uint64_t bytes)
{
    uint32_t slot = (pr->infl_head + pr->infl_count) % RAFT_MAX_INFLIGHT;
    pr->infl[slot].last = last;
    pr->infl[slot].bytes = bytes;
    pr->infl_count++;
    pr->infl_bytes += bytes;
}

static void infl_free_to(struct progress *pr, uint64_t index)
{
    while (pr->infl_count > 0 && pr->infl[pr->infl_head].last <= index) {
        pr->infl_bytes -= pr->infl[pr->infl_head].bytes;
        pr->infl_head = (pr->infl_head + 1) % RAFT_MAX_INFLIGHT;
        pr->infl_count--;
    }
}

static bool infl_full(const struct raft *r, const struct progress *pr)
{
    return pr->infl_count >= r->o.max_inflight_msgs || pr->infl_bytes >= r->o.max_inflight_bytes;
}

/* Send one AppendEntries to pr starting at pr->next (a heartbeat if empty). */
void send_append(struct raft *r, struct progress *pr)
{
    uint64_t prev = pr->next - 1;
    if (prev < r->log.offset) {
        send_snapshot(r, pr);
        return;
    }
    uint64_t last = rlog_last(&r->log);
    uint32_t n = 0;
    uint64_t bytes = 0;
    while (prev + n < last && n < r->o.max_entries_per_msg) {
        const struct raft_entry *e = rlog_get(&r->log, prev + n + 1);
        if (n > 0 && bytes + e->len > r->o.max_bytes_per_msg)
            break;
        bytes += e->len;
        n++;
    }
    struct raft_msg *m = msg_new(r, RAFT_MSG_APPEND, pr->id);
    if (m == NULL)
        return;
    m->u.append.prev_index = prev;
    m->u.append.prev_term = rlog_term(&r->log, prev);
    m->u.append.commit = r->commit;
    if (n > 0) {
        struct raft_entry *es = ferry_malloc(n * sizeof(*es));
        if (es == NULL) {
            r->oom = 1;
            return;
        }
        memcpy(es, rlog_get(&r->log, prev + 1), n * sizeof(*es));
        m->u.append.entries = es;
        m->u.append.n_entries = n;
    }
    pr->sent_ms = r->now;
    if (pr->state == PR_REPLICATE && n > 0) {
        if (pr->infl_count == 0)
            pr->progress_ms = r->now;
        infl_add(pr, prev + n, bytes);
        pr->next = prev + n + 1;
    }
}

/* A REPLICATE member's heartbeat: an empty AppendEntries at an index it is
 * known to hold, so reordering behind the pipeline cannot make it fail. */
static void send_heartbeat(struct raft *r, struct progress *pr)
{
    uint64_t prev = pr->match >= r->log.offset ? pr->match : pr->next - 1;
    if (prev < r->log.offset) {
        progress_reset(r, pr, pr->match + 1);
        send_append(r, pr);
        return;
    }
    struct raft_msg *m = msg_new(r, RAFT_MSG_APPEND, pr->id);
    if (m == NULL)
        return;
    m->u.append.prev_index = prev;
    m->u.append.prev_term = rlog_term(&r->log, prev);
    m->u.append.commit = r->commit;
}

static void replicate_one(struct raft *r, struct progress *pr)
{
    if (pr->id == r->o.id)
        return;
    switch (pr->state) {
    case PR_PROBE:
        if (pr->sent_ms == 0 || r->now >= pr->sent_ms + r->o.heartbeat_ms)
            send_append(r, pr);
        break;
    case PR_REPLICATE:
        while (pr->next <= rlog_last(&r->log) && !infl_full(r, pr) && !r->oom) {
            uint64_t before = pr->next;
            send_append(r, pr);
            if (pr->state != PR_REPLICATE || pr->next == before)
                break;
        }
        break;
    case PR_SNAPSHOT:
        if (r->now >= pr->sent_ms + r->o.heartbeat_ms * 2)
            send_snapshot(r, pr);
        break;
    }
}

void replicate_all(struct raft *r)
{
    for (uint32_t i = 0; i < r->config.n; i++)
        replicate_one(r, &r->prs[i]);
}

/* Leader heartbeat timer: keep followers' timers from firing, resend what
 * seems lost, carry the commit index. */
void heartbeat(struct raft *r)
{
    uint64_t stall_ms = r->o.election_timeout_ms / 2;
    for (uint32_t i = 0; i < r->config.n; i++) {
        struct progress *pr = &r->prs[i];
        if (pr->id == r->o.id)
            continue;
        if (pr->state == PR_REPLICATE && pr->infl_count > 0 &&
            r->now >= pr->progress_ms + stall_ms) {
            progress_reset(r, pr, pr->match + 1);
        }
        switch (pr->state) {
        case PR_PROBE:
            send_append(r, pr);
            break;
        case PR_REPLICATE:
            if (pr->next <= rlog_last(&r->log) && !infl_full(r, pr))
                replicate_one(r, pr);
            else
                send_heartbeat(r, pr);
            break;
        case PR_SNAPSHOT:
            if (r->now >= pr->sent_ms + stall_ms)
                send_snapshot(r, pr);
            break;
        }
    }
}

static int cmp_desc(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

void advance_commit(struct raft *r, uint64_t commit)
{
    if (commit > r->commit)
        r->commit = commit;
}

void maybe_commit(struct raft *r)
{
    uint64_t m[RAFT_MAX_NODES];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->config.n; i++) {
        if (r->config.nodes[i].role != RAFT_VOTER)
            continue;
        m[n++] = r->config.nodes[i].id == r->o.id ? r->durable : r->prs[i].match;
    }
    if (n == 0)
        return;
    qsort(m, n, sizeof(m[0]), cmp_desc);
    uint64_t q = m[cfg_quorum(&r->config) - 1];
    if (q <= r->commit)
        return;
#if RAFT_MUTATION == 1
    /* Deliberately wrong: commits entries of earlier terms by counting replicas. */
    bool ok = rlog_term(&r->log, q) != 0;
#else
    bool ok = rlog_term(&r->log, q) == r->term;
#endif
    if (!ok)
        return;
    advance_commit(r, q);
    /* A leader removed from the configuration steps down once that is committed. */
    if (r->config_index <= r->commit && !self_is_voter(r))
        become_follower(r, r->term, 0);
}

/* Follower: acknowledge everything durable and matching the leader. */
void send_ack(struct raft *r)
{
    if (r->leader_id == 0 || r->leader_id == r->o.id)
        return;
#if RAFT_MUTATION == 3
    uint64_t idx = r->verified; /* deliberately wrong: acks before the write is durable */
#else
    uint64_t idx = r->durable < r->verified ? r->durable : r->verified;
#endif
    struct raft_msg *m = msg_new(r, RAFT_MSG_APPEND_RESP, r->leader_id);
    if (m == NULL)
        return;
    m->u.append_resp.success = 1;
    m->u.append_resp.index = idx;
    m->u.append_resp.last_index = rlog_last(&r->log);
    r->ack_pending = idx < r->verified;
}

static void reject_append(struct raft *r, const struct raft_msg *m)
{
    const struct raft_msg_append *a = &m->u.append;
    struct raft_msg *resp = msg_new(r, RAFT_MSG_APPEND_RESP, m->from);
    if (resp == NULL)
        return;
    uint64_t last = rlog_last(&r->log);
    resp->u.append_resp.success = 0;
    resp->u.append_resp.index = a->prev_index;
    resp->u.append_resp.last_index = last;
    if (a->prev_index > last) {
        resp->u.append_resp.conflict_term = 0;
        resp->u.append_resp.conflict_index = last + 1;
        return;
    }
    uint64_t t = rlog_term(&r->log, a->prev_index);
    uint64_t i = a->prev_index;
    while (i - 1 > r->commit && i - 1 > r->log.offset && rlog_term(&r->log, i - 1) == t)
        i--;
    resp->u.append_resp.conflict_term = t;
    resp->u.append_resp.conflict_index = i;
}

void recv_append(struct raft *r, const struct raft_msg *m)
{
    const struct raft_msg_append *a = &m->u.append;
    uint64_t prev = a->prev_index;
    /* A well-formed batch has consecutive terms that never go back and none
     * beyond the sender's term; drop anything else. */
    uint64_t t = a->prev_term;
    for (uint32_t k = 0; k < a->n_entries; k++) {
        if (a->entries[k].term < t || a->entries[k].term > m->term)
            return;
        t = a->entries[k].term;
    }
    /* Entries up to our commit index match any leader's (leader completeness). */
    bool match = prev <= r->commit || (prev >= r->log.offset && prev <= rlog_last(&r->log) &&
                                       rlog_term(&r->log, prev) == a->prev_term);
    if (!match) {
        reject_append(r, m);
        return;
    }
    for (uint32_t k = 0; k < a->n_entries; k++) {
        const struct raft_entry *e = &a->entries[k];
        uint64_t idx = prev + 1 + k;
        if (idx <= r->commit || idx <= r->log.offset)
            continue;
        if (idx <= rlog_last(&r->log)) {
            if (rlog_term(&r->log, idx) == e->term)
                continue;
            rlog_truncate(r, idx);
            if (r->durable >= idx)
                r->durable = idx - 1;
            if (r->config_index >= idx)
                config_refresh(r);
        }
        if (rlog_append(r, e->term, e->type, e->data, e->len) != 0) {
            r->oom = 1;
            return;
        }
        if (e->type == RAFT_ENTRY_CONFIG)
            config_refresh(r);
    }
    uint64_t upto = prev + a->n_entries;
    if (upto > r->verified)
        r->verified = upto;
    uint64_t c = a->commit < r->verified ? a->commit : r->verified;
    advance_commit(r, c);
    uint64_t have = r->durable < r->verified ? r->durable : r->verified;
    if (have >= upto || RAFT_MUTATION == 3)
        send_ack(r);
    else
        r->ack_pending = true;
}

void recv_append_resp(struct raft *r, const struct raft_msg *m)
{
    const struct raft_msg_append_resp *a = &m->u.append_resp;
    struct progress *pr = progress_of(r, m->from);
    if (pr == NULL || pr->id == r->o.id)
        return;
    if (a->success) {
        if (pr->state == PR_SNAPSHOT)
            return;
        if (a->index > pr->match) {
            pr->match = a->index;
            pr->progress_ms = r->now;
        }
        if (pr->next <= pr->match)
            pr->next = pr->match + 1;
        infl_free_to(pr, pr->match);
        if (pr->state == PR_PROBE) {
            progress_reset(r, pr, pr->match + 1);
            pr->state = PR_REPLICATE;
        }
        maybe_commit(r);
        if (r->role != RAFT_LEADER)
            return;
        transfer_check(r, pr);
        replicate_one(r, pr);
        maybe_handover(r);
        return;
    }
    /* Rejection: stale if it answers something older than what we know. */
    if (pr->state == PR_SNAPSHOT)
        return;
    if (a->index <= pr->match)
        return;
    if (pr->state == PR_PROBE && a->index != pr->next - 1)
        return;
    uint64_t next = a->conflict_index;
    if (a->conflict_term != 0) {
        for (uint64_t i = a->index; i > r->log.offset; i--) {
            uint64_t t = rlog_term(&r->log, i);
            if (t == a->conflict_term) {
                next = i + 1;
                break;
            }
            if (t < a->conflict_term)
                break;
        }
    }
    if (next > a->index)
        next = a->index;
    if (next > a->last_index + 1)
        next = a->last_index + 1;
    if (next < 1)
        next = 1;
    progress_reset(r, pr, next);
    send_append(r, pr);
}
