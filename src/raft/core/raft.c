/* raft.c - raft_step: the one entry into the core, its timers, and the update.
 *
 * Each step frees the payloads dropped by the previous one, runs the timers
 * that expired by ev->now_ms, handles the event, then fills the update from
 * what changed: the term and vote, the log range written, the entries newly
 * committed and durable, the messages, the next deadline.
 */
#include <string.h>

#include "raft/core/core.h"
#include "util/alloc.h"

void raft_options_default(struct raft_options *o)
{
    memset(o, 0, sizeof(*o));
    o->election_timeout_ms = 1000;
    o->heartbeat_ms = 100;
    o->max_entries_per_msg = 64;
    o->max_bytes_per_msg = 1u << 20;
    o->max_inflight_msgs = 16;
    o->max_inflight_bytes = 8u << 20;
    o->snapshot_threshold = 1000;
    o->snapshot_trailing = 100;
    o->snapshot_chunk_bytes = 256u << 10;
    o->catchup_margin = 16;
}

void raft_update_init(struct raft_update *up)
{
    memset(up, 0, sizeof(*up));
}

static void update_reset(struct raft_update *up)
{
    for (uint32_t i = 0; i < up->n_msgs; i++)
        if (up->msgs[i].type == RAFT_MSG_APPEND)
            ferry_free(up->msgs[i].u.append.entries);
    struct raft_msg *msgs = up->msgs;
    uint32_t msgs_cap = up->msgs_cap;
    uint8_t *chunk_buf = up->chunk_buf;
    uint32_t chunk_cap = up->chunk_cap;
    memset(up, 0, sizeof(*up));
    up->msgs = msgs;
    up->msgs_cap = msgs_cap;
    up->chunk_buf = chunk_buf;
    up->chunk_cap = chunk_cap;
}

void raft_update_free(struct raft_update *up)
{
    update_reset(up);
    ferry_free(up->msgs);
    ferry_free(up->chunk_buf);
    memset(up, 0, sizeof(*up));
}

struct raft_msg *msg_new(struct raft *r, uint8_t type, uint64_t to)
{
    struct raft_update *up = r->up;
    if (up->n_msgs == up->msgs_cap) {
        uint32_t cap = up->msgs_cap ? up->msgs_cap * 2 : 16;
        struct raft_msg *m = ferry_realloc(up->msgs, cap * sizeof(*m));
        if (m == NULL) {
            r->oom = 1;
            return NULL;
        }
        up->msgs = m;
        up->msgs_cap = cap;
    }
    struct raft_msg *m = &up->msgs[up->n_msgs++];
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->cluster_id = r->o.cluster_id;
    m->from = r->o.id;
    m->to = to;
    m->term = r->term;
    return m;
}

struct progress *progress_of(struct raft *r, uint64_t id)
{
    int p = cfg_pos(&r->config, id);
    return p < 0 ? NULL : &r->prs[p];
}

void mark_dirty(struct raft *r, uint64_t from)
{
    if (r->dirty_from == 0 || from < r->dirty_from)
        r->dirty_from = from;
}

bool self_is_voter(const struct raft *r)
{
    return cfg_is_voter(&r->config, r->o.id);
}

/* ---- init and restore --------------------------------------------------- */

static int config_valid(const struct raft_config *c)
{
    if (c->n > RAFT_MAX_NODES)
        return 0;
    for (uint32_t i = 0; i < c->n; i++) {
        const struct raft_node *n = &c->nodes[i];
        if (n->id == 0 || (n->role != RAFT_VOTER && n->role != RAFT_LEARNER))
            return 0;
        for (uint32_t j = 0; j < i; j++)
            if (c->nodes[j].id == n->id)
                return 0;
    }
    return 1;
}

int raft_init(struct raft **out, const struct raft_options *o, const struct raft_config *bootstrap,
              struct ferry_err *err)
{
    *out = NULL;
    if (o->id == 0)
        return ferry_err_set(err, FERRY_EINVAL, "raft: node id must be non-zero");
    if (o->heartbeat_ms == 0 || o->heartbeat_ms >= o->election_timeout_ms)
        return ferry_err_set(err, FERRY_EINVAL,
                             "raft: heartbeat (%u ms) must be shorter than the election timeout "
                             "(%u ms)",
                             o->heartbeat_ms, o->election_timeout_ms);
    if (o->max_inflight_msgs == 0 || o->max_inflight_msgs > RAFT_MAX_INFLIGHT)
        return ferry_err_set(err, FERRY_EINVAL, "raft: max_inflight_msgs must be 1..%d",
                             RAFT_MAX_INFLIGHT);
    if (o->max_entries_per_msg == 0 || o->snapshot_chunk_bytes == 0)
        return ferry_err_set(err, FERRY_EINVAL,
                             "raft: max_entries_per_msg and snapshot_chunk_bytes must be non-zero");
    if (!config_valid(bootstrap))
        return ferry_err_set(err, FERRY_EINVAL,
                             "raft: bootstrap configuration is invalid (ids must be unique and "
                             "non-zero, at most %d nodes)",
                             RAFT_MAX_NODES);
    struct raft *r = ferry_calloc(1, sizeof(*r));
    if (r == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "raft: out of memory");
    r->o = *o;
    rng_seed(&r->rng, o->seed ^ (o->id * 0x9e3779b97f4a7c15ull));
    r->snap.config = *bootstrap;
    r->role = RAFT_FOLLOWER;
    config_refresh(r);
    priority_reset(r);
    *out = r;
    return 0;
}

int raft_restore(struct raft *r, const struct raft_persisted *p, struct ferry_err *err)
{
    if (rlog_last(&r->log) != 0 || r->term != 0)
        return ferry_err_set(err, FERRY_ESTATE, "raft: restore on a core already in use");
    if (p->snapshot.index > 0 && !config_valid(&p->snapshot.config))
        return ferry_err_set(err, FERRY_ECORRUPT, "raft: snapshot configuration is invalid");
    const struct raft_entry *es = p->entries;
    for (uint32_t i = 1; i < p->n_entries; i++) {
        if (es[i].index != es[i - 1].index + 1 || es[i].term < es[i - 1].term)
            return ferry_err_set(err, FERRY_ECORRUPT,
                                 "raft: stored log is not contiguous at index %llu",
                                 (unsigned long long)es[i].index);
    }
    uint64_t s = p->snapshot.index;
    if (p->n_entries > 0 && es[0].index > s + 1)
        return ferry_err_set(err, FERRY_ECORRUPT,
                             "raft: stored log starts at %llu, after the snapshot at %llu",
                             (unsigned long long)es[0].index, (unsigned long long)s);
    if (s > 0)
        r->snap = p->snapshot;
    if (p->n_entries > 0 && es[0].index == 0)
        return ferry_err_set(err, FERRY_ECORRUPT, "raft: stored log holds an entry at index 0");
    uint32_t first = 0;
    uint64_t offset = s, offset_term = s > 0 ? p->snapshot.term : 0;
    if (p->n_entries > 0 && es[0].index <= s) {
        uint64_t at = s - es[0].index;
        if (at >= p->n_entries || es[at].term != p->snapshot.term) {
            first = p->n_entries; /* the log does not continue the snapshot */
        } else {
            /* Keep the trailing entries; the first one only gives its term. */
            first = 1;
            offset = es[0].index;
            offset_term = es[0].term;
        }
    }
    rlog_reset(r, offset, offset_term);
    for (uint32_t i = first; i < p->n_entries; i++) {
        if (rlog_append(r, es[i].term, es[i].type, es[i].data, es[i].len) != 0)
            return ferry_err_set(err, FERRY_ENOMEM, "raft: out of memory restoring the log");
    }
    r->dirty_from = 0;
    raft_free_garbage(r);
    r->term = p->term;
    r->vote = p->vote;
    r->durable = rlog_last(&r->log);
    r->commit = s;
    r->applied = s;
    config_refresh(r);
    priority_reset(r);
    return 0;
}

void raft_close(struct raft *r)
{
    if (r == NULL)
        return;
    raft_free_garbage(r);
    ferry_free(r->garbage);
    rlog_free(r);
    ferry_free(r);
}

/* ---- the step ------------------------------------------------------------ */

static void reject(struct raft *r, const struct raft_msg *m, uint8_t reason)
{
    struct raft_update *up = r->up;
    if (up->n_rejected < RAFT_MAX_REJECTS) {
        struct raft_reject *j = &up->rejected[up->n_rejected];
        j->from = m->from;
        j->cluster_id = m->cluster_id;
        j->type = m->type;
        j->reason = reason;
    }
    up->n_rejected++;
}

static void reply_stale(struct raft *r, const struct raft_msg *m)
{
    /* Tell a sender from an older term about ours so it steps down. */
    if (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_SNAPSHOT) {
        struct raft_msg *resp = msg_new(r, RAFT_MSG_APPEND_RESP, m->from);
        if (resp != NULL)
            resp->u.append_resp.last_index = rlog_last(&r->log);
    } else if (m->type == RAFT_MSG_VOTE && m->u.vote.pre_vote) {
        struct raft_msg *resp = msg_new(r, RAFT_MSG_VOTE_RESP, m->from);
        if (resp != NULL)
            resp->u.vote_resp.pre_vote = 1;
    }
}

static void leader_contact(struct raft *r, const struct raft_msg *m)
{
    if (r->role != RAFT_FOLLOWER || r->leader_id != m->from)
        become_follower(r, r->term, m->from);
    r->leader_contact_ms = r->now;
    r->quick_until = 0;
    election_reset_timer(r);
    priority_reset(r);
}

static void recv_msg(struct raft *r, const struct raft_msg *m)
{
    if (m->cluster_id != r->o.cluster_id) {
        reject(r, m, RAFT_REJECT_CLUSTER);
        return;
    }
    if (m->to != r->o.id || m->from == r->o.id) {
        reject(r, m, RAFT_REJECT_MISROUTED);
        return;
    }
    /* Leader traffic is accepted from outside our configuration: a node
     * learns the configuration from the leader (dissertation §4.1). */
    bool leader_traffic = m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_SNAPSHOT;
    if (!leader_traffic && cfg_pos(&r->config, m->from) < 0) {
        reject(r, m, RAFT_REJECT_UNKNOWN);
        return;
    }
    if (m->type == RAFT_MSG_VOTE && !m->u.vote.transfer && m->term > r->term && in_lease(r))
        return; /* stickiness: a leader is alive, ignore the disruption */
    if (m->term > r->term) {
        bool pre =
            (m->type == RAFT_MSG_VOTE && m->u.vote.pre_vote) ||
            (m->type == RAFT_MSG_VOTE_RESP && m->u.vote_resp.pre_vote && m->u.vote_resp.granted);
        if (!pre)
            become_follower(r, m->term, leader_traffic ? m->from : 0);
    } else if (m->term < r->term) {
        reply_stale(r, m);
        return;
    }
    if (r->role == RAFT_LEADER) {
        struct progress *pr = progress_of(r, m->from);
        if (pr != NULL && m->term == r->term)
            pr->active = 1;
    }
    switch (m->type) {
    case RAFT_MSG_APPEND:
        if (r->role == RAFT_LEADER)
            return; /* two leaders in one term: impossible unless election safety broke */
        leader_contact(r, m);
        recv_append(r, m);
        break;
    case RAFT_MSG_SNAPSHOT:
        if (r->role == RAFT_LEADER)
            return;
        leader_contact(r, m);
        recv_snapshot(r, m);
        break;
    case RAFT_MSG_APPEND_RESP:
        if (r->role == RAFT_LEADER)
            recv_append_resp(r, m);
        break;
    case RAFT_MSG_SNAPSHOT_RESP:
        if (r->role == RAFT_LEADER)
            recv_snapshot_resp(r, m);
        break;
    case RAFT_MSG_VOTE:
        recv_vote(r, m);
        break;
    case RAFT_MSG_VOTE_RESP:
        recv_vote_resp(r, m);
        break;
    case RAFT_MSG_TIMEOUT_NOW:
        recv_timeout_now(r, m);
        break;
    default:
        break;
    }
}

static void persisted(struct raft *r, uint64_t index, uint64_t term)
{
    if (index > rlog_last(&r->log) || index < r->log.offset || rlog_term(&r->log, index) != term)
        return; /* a write overtaken by a truncation */
    if (index <= r->durable)
        return;
    r->durable = index;
    if (r->role == RAFT_LEADER)
        maybe_commit(r);
    else if (r->ack_pending)
        send_ack(r);
}

static int propose(struct raft *r, const void *data, uint32_t len)
{
    if (r->role != RAFT_LEADER || raft_is_witness(r) || !self_is_voter(r))
        return FERRY_ENOTLEADER;
    if (r->transfer_target != 0)
        return FERRY_EBUSY;
    if (len > RAFT_MAX_ENTRY_BYTES)
        return FERRY_ETOOBIG;
    if (rlog_append(r, r->term, RAFT_ENTRY_NORMAL, data, len) != 0) {
        r->oom = 1;
        return FERRY_ENOMEM;
    }
    r->up->proposed_index = rlog_last(&r->log);
    r->up->proposed_term = r->term;
    replicate_all(r);
    maybe_commit(r);
    return 0;
}

static void check_quorum(struct raft *r)
{
    uint32_t active = 0;
    for (uint32_t i = 0; i < r->config.n; i++) {
        if (r->config.nodes[i].role != RAFT_VOTER)
            continue;
        if (r->config.nodes[i].id == r->o.id || r->prs[i].active)
            active++;
    }
    for (uint32_t i = 0; i < r->config.n; i++)
        r->prs[i].active = 0;
    if (active < cfg_quorum(&r->config))
        become_follower(r, r->term, 0);
}

static void run_timers(struct raft *r)
{
    if (r->role != RAFT_LEADER) {
        if (r->now >= r->election_deadline)
            election_timeout(r);
        return;
    }
    if (r->now >= r->quorum_deadline) {
        r->quorum_deadline = r->now + r->o.election_timeout_ms;
        check_quorum(r);
        if (r->role != RAFT_LEADER)
            return;
    }
    if (r->transfer_target != 0 && r->now >= r->transfer_deadline) {
        r->transfer_target = 0;
        r->handover_hold_until = r->now + r->o.election_timeout_ms;
    }
    if (r->now >= r->heartbeat_deadline) {
        r->heartbeat_deadline = r->now + r->o.heartbeat_ms;
        heartbeat(r);
        maybe_handover(r);
    }
}

static void finish(struct raft *r, struct raft_update *up)
{
    if (r->state_dirty)
        up->flags |= RAFT_UPDATE_STATE;
    uint64_t last = rlog_last(&r->log);
    if (r->dirty_from != 0) {
        uint64_t from = r->dirty_from > r->log.offset ? r->dirty_from : r->log.offset + 1;
        up->flags |= RAFT_UPDATE_ENTRIES;
        up->persist_from = from;
        up->n_persist = from <= last ? (uint32_t)(last - from + 1) : 0;
        up->persist = up->n_persist ? rlog_get(&r->log, from) : NULL;
    }
    uint64_t target = r->commit < r->durable ? r->commit : r->durable;
    if (target > last)
        target = last;
    if (target > r->applied) {
        up->flags |= RAFT_UPDATE_APPLY;
        up->apply = rlog_get(&r->log, r->applied + 1);
        up->n_apply = (uint32_t)(target - r->applied);
        for (uint32_t i = 0; i < up->n_apply; i++)
            r->applied_bytes += up->apply[i].len;
        r->applied = target;
    }
    bool by_count = r->o.snapshot_threshold > 0 &&
                    r->applied >= r->snap.index + r->o.snapshot_threshold;
    bool by_bytes = r->o.snapshot_bytes > 0 && r->applied_bytes >= r->o.snapshot_bytes &&
                    r->applied > r->snap.index;
    bool wanted = r->snapshot_wanted && r->applied > r->snap.index;
    r->snapshot_wanted = false;
    if (!r->snapshot_pending && (by_count || by_bytes || wanted)) {
        up->flags |= RAFT_UPDATE_TAKE_SNAPSHOT;
        up->take_snapshot = r->applied;
        r->snapshot_pending = true;
    }
    if (up->n_msgs > 0)
        up->flags |= RAFT_UPDATE_MESSAGES;
    if (r->role != r->step_role || r->leader_id != r->step_leader || r->term != r->step_term)
        up->flags |= RAFT_UPDATE_ROLE;
    up->role = r->role;
    up->leader_id = r->leader_id;
    up->term = r->term;
    up->vote = r->vote;
    up->commit = r->commit;
    if (r->role == RAFT_LEADER) {
        uint64_t d =
            r->heartbeat_deadline < r->quorum_deadline ? r->heartbeat_deadline : r->quorum_deadline;
        if (r->transfer_target != 0 && r->transfer_deadline < d)
            d = r->transfer_deadline;
        up->deadline_ms = d;
    } else {
        up->deadline_ms = r->election_deadline;
    }
}

int raft_step(struct raft *r, const struct raft_event *ev, struct raft_update *up)
{
    raft_free_garbage(r);
    update_reset(up);
    if (r->oom)
        return FERRY_ENOMEM;
    r->up = up;
    r->dirty_from = 0;
    r->state_dirty = false;
    r->step_role = r->role;
    r->step_leader = r->leader_id;
    r->step_term = r->term;
    if (r->election_deadline == 0) {
        /* First step: the clock starts now. The only voter of its
         * configuration has nobody to wait for: it elects itself at once. */
        r->now = ev->now_ms;
        election_reset_timer(r);
        const struct raft_node *self = raft_config_find(&r->config, r->o.id);
        if (self != NULL && self->role == RAFT_VOTER && raft_config_voters(&r->config) == 1)
            r->election_deadline = r->now;
    }
    if (ev->now_ms > r->now)
        r->now = ev->now_ms;
    run_timers(r);
    int rc = 0;
    switch (ev->type) {
    case RAFT_EV_TICK:
        break;
    case RAFT_EV_RECEIVE:
        recv_msg(r, ev->u.receive);
        break;
    case RAFT_EV_PERSISTED:
        persisted(r, ev->u.persisted.index, ev->u.persisted.term);
        break;
    case RAFT_EV_SNAPSHOT_SAVED:
        snapshot_saved(r, ev->u.snapshot_saved.index, ev->u.snapshot_saved.size);
        break;
    case RAFT_EV_PROPOSE:
        rc = propose(r, ev->u.propose.data, ev->u.propose.len);
        break;
    case RAFT_EV_ADD_LEARNER:
    case RAFT_EV_PROMOTE:
    case RAFT_EV_REMOVE:
        rc = membership_change(r, ev);
        break;
    case RAFT_EV_TRANSFER:
        rc = transfer_start(r, ev->u.node_id);
        break;
    case RAFT_EV_PEER_DOWN:
        peer_down(r, ev->u.node_id);
        break;
    case RAFT_EV_SNAPSHOT_NOW:
        if (r->snapshot_pending)
            rc = FERRY_EBUSY;
        else
            r->snapshot_wanted = true;
        break;
    default:
        rc = FERRY_EINVAL;
        break;
    }
    if (r->oom)
        return FERRY_ENOMEM;
    finish(r, up);
    return rc;
}

/* ---- accessors ---------------------------------------------------------- */

uint64_t raft_id(const struct raft *r)
{
    return r->o.id;
}
enum raft_role raft_role(const struct raft *r)
{
    return (enum raft_role)r->role;
}
uint64_t raft_leader(const struct raft *r)
{
    return r->leader_id;
}
uint64_t raft_term(const struct raft *r)
{
    return r->term;
}
uint64_t raft_vote(const struct raft *r)
{
    return r->vote;
}
uint64_t raft_commit_index(const struct raft *r)
{
    return r->commit;
}
uint64_t raft_applied_index(const struct raft *r)
{
    return r->applied;
}
uint64_t raft_last_index(const struct raft *r)
{
    return rlog_last(&r->log);
}
uint64_t raft_first_index(const struct raft *r)
{
    return r->log.offset;
}
uint64_t raft_log_bytes(const struct raft *r)
{
    return r->log.bytes + r->garbage_bytes;
}
uint64_t raft_term_at(const struct raft *r, uint64_t index)
{
    if (index == r->snap.index)
        return r->snap.term;
    return rlog_term(&r->log, index);
}
const struct raft_entry *raft_entry_at(const struct raft *r, uint64_t index)
{
    return rlog_get(&r->log, index);
}
const struct raft_config *raft_config(const struct raft *r)
{
    return &r->config;
}
uint64_t raft_config_index(const struct raft *r)
{
    return r->config_index;
}
const struct raft_snapshot_meta *raft_snapshot(const struct raft *r)
{
    return &r->snap;
}
int raft_priority(const struct raft *r)
{
    return cfg_priority(&r->config, r->o.id);
}
int raft_target_priority(const struct raft *r)
{
    return (int)r->target_priority;
}
int raft_is_witness(const struct raft *r)
{
    const struct raft_node *n = raft_config_find(&r->config, r->o.id);
    return n != NULL && n->role == RAFT_VOTER && n->priority == 0;
}
int raft_accepts_proposals(const struct raft *r)
{
    return r->role == RAFT_LEADER && !raft_is_witness(r) && self_is_voter(r) &&
           r->transfer_target == 0;
}
uint64_t raft_transfer_target(const struct raft *r)
{
    return r->transfer_target;
}
int raft_progress(const struct raft *r, uint64_t id, uint64_t *match, uint64_t *next)
{
    int p = cfg_pos(&r->config, id);
    if (p < 0 || r->role != RAFT_LEADER)
        return FERRY_ENOTFOUND;
    *match = id == r->o.id ? r->durable : r->prs[p].match;
    *next = r->prs[p].next;
    return 0;
}

const char *raft_role_name(enum raft_role role)
{
    switch (role) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_PRECANDIDATE:
        return "pre-candidate";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    }
    return "unknown";
}

const char *raft_msg_type_name(uint8_t type)
{
    static const char *names[] = {"?",         "append",   "append-resp",   "vote",
                                  "vote-resp", "snapshot", "snapshot-resp", "timeout-now"};
    return type < sizeof(names) / sizeof(names[0]) ? names[type] : "?";
}
