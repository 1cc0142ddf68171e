/* election.c - leader election: pre-vote, votes, stickiness and priorities.
 *
 * A node whose election timer fires without hearing from a leader first runs
 * a pre-vote round at term+1 without changing its term (dissertation §9.6),
 * and only a node that would win it increments its term and asks for real
 * votes. A node that has heard from a leader within the election timeout
 * ignores vote requests (leader stickiness, §4.2.3), unless the candidate was
 * told to campaign by the leader itself (a transfer).
 *
 * Priorities follow NuRaft: each node keeps a target priority, reset to the
 * highest voter priority whenever the leader is heard from and decayed by a
 * fifth (at least to 1) after every election round without a leader; after
 * RAFT_WITNESS_ROUNDS further rounds at 1 it reaches 0. A node campaigns only
 * if its priority is at least its target, and votes only for candidates whose
 * priority is at least its target. A witness (priority 0) therefore campaigns,
 * and is voted for, only once several rounds failed to elect anyone else.
 *
 * A follower told that its link to the leader was lost (RAFT_EV_PEER_DOWN)
 * runs that round at once rather than waiting for its timer.
 */
#include <string.h>

#include "raft/core/core.h"

void election_reset_timer(struct raft *r)
{
    if (r->now < r->quick_until) {
        /* The leader's link dropped: if this round fails (a voter had not yet
         * seen the drop and was still in its lease, or two candidates split
         * the vote), try again after a heartbeat or two rather than a whole
         * election timeout. */
        uint64_t h = r->o.heartbeat_ms;
        r->election_deadline = r->now + rng_range(&r->rng, h, 2 * h - 1);
        return;
    }
    uint64_t t = r->o.election_timeout_ms;
    uint64_t max = r->o.election_timeout_max_ms > t ? r->o.election_timeout_max_ms : 2 * t;
    r->election_deadline = r->now + rng_range(&r->rng, t, max - 1);
}

void priority_reset(struct raft *r)
{
    r->target_priority = cfg_max_priority(&r->config);
    r->rounds_at_one = 0;
}

static void priority_decay(struct raft *r)
{
    if (r->target_priority > 1) {
        uint32_t t = r->target_priority * 4 / 5;
        r->target_priority = t < 1 ? 1 : t;
    } else if (r->target_priority == 1) {
        if (++r->rounds_at_one >= RAFT_WITNESS_ROUNDS)
            r->target_priority = 0;
    }
}

bool in_lease(const struct raft *r)
{
    if (r->role == RAFT_LEADER)
        return true;
    return r->leader_id != 0 && r->now < r->leader_contact_ms + r->o.election_timeout_ms;
}

void become_follower(struct raft *r, uint64_t term, uint64_t leader)
{
    if (term > r->term) {
        r->term = term;
        r->vote = 0;
        r->state_dirty = true;
        r->verified = 0;
    }
    if (r->role != RAFT_FOLLOWER || r->leader_id != leader)
        r->verified = 0;
    r->role = RAFT_FOLLOWER;
    r->leader_id = leader;
    r->transfer_target = 0;
    r->ack_pending = false;
    election_reset_timer(r);
}

static uint32_t count_votes(const struct raft *r, uint8_t kind)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->config.n; i++)
        if (r->config.nodes[i].role == RAFT_VOTER && r->prs[i].vote == kind)
            n++;
    return n;
}

void become_leader(struct raft *r)
{
    r->role = RAFT_LEADER;
    r->leader_id = r->o.id;
    r->transfer_target = 0;
    r->handover_hold_until = 0;
    uint64_t last = rlog_last(&r->log);
    for (uint32_t i = 0; i < r->config.n; i++) {
        struct progress *pr = &r->prs[i];
        progress_reset(r, pr, last + 1);
        pr->match = 0;
        pr->active = 1;
        pr->progress_ms = r->now;
    }
    priority_reset(r);
    r->term_start = last + 1;
    if (rlog_append(r, r->term, RAFT_ENTRY_NOOP, NULL, 0) != 0) {
        r->oom = 1;
        return;
    }
    r->quorum_deadline = r->now + r->o.election_timeout_ms;
    r->heartbeat_deadline = r->now + r->o.heartbeat_ms;
    replicate_all(r);
    maybe_commit(r);
}

void campaign(struct raft *r, bool pre, bool transfer)
{
    if (pre) {
        r->role = RAFT_PRECANDIDATE;
    } else {
        r->term++;
        r->vote = r->o.id;
        r->state_dirty = true;
        r->role = RAFT_CANDIDATE;
    }
    r->leader_id = 0;
    r->verified = 0;
    r->ack_pending = false;
    election_reset_timer(r);
    for (uint32_t i = 0; i < r->config.n; i++)
        r->prs[i].vote = r->config.nodes[i].id == r->o.id ? 1 : 0;
    if (count_votes(r, 1) >= cfg_quorum(&r->config)) {
        if (pre)
            campaign(r, false, transfer);
        else
            become_leader(r);
        return;
    }
    uint64_t last = rlog_last(&r->log);
    for (uint32_t i = 0; i < r->config.n; i++) {
        const struct raft_node *n = &r->config.nodes[i];
        if (n->id == r->o.id || n->role != RAFT_VOTER)
            continue;
        struct raft_msg *m = msg_new(r, RAFT_MSG_VOTE, n->id);
        if (m == NULL)
            return;
        m->term = pre ? r->term + 1 : r->term;
        m->u.vote.pre_vote = pre;
        m->u.vote.transfer = transfer;
        m->u.vote.last_index = last;
        m->u.vote.last_term = rlog_term(&r->log, last);
    }
}

/* The priority a node campaigns with, or -1 if it may not campaign: a voter
 * of its latest configuration, or a node whose latest configuration removes it
 * but is not committed yet (as far as it knows) while the one before made it a
 * voter. That node may hold the only log the others would vote for - a leader
 * that appended its own removal and lost leadership before committing it - so
 * were it barred, no one could be elected. It counts votes in its latest
 * configuration, not itself (as a leader removing itself does), and once
 * elected commits the removal and steps down (maybe_commit). */
static int campaign_priority(const struct raft *r)
{
    if (self_is_voter(r))
        return raft_priority(r);
    if (r->config_index > r->commit) {
        struct raft_config prev;
        config_at(r, r->config_index - 1, &prev);
        if (cfg_is_voter(&prev, r->o.id))
            return cfg_priority(&prev, r->o.id);
    }
    return -1;
}

/* The election timer fired: the node heard from no leader for a whole timeout.
 *
 * The target decays on every node, including one that is not a voter in its
 * own configuration: such a node still votes (its configuration may be stale
 * - a learner whose promotion has not reached it yet, or a leader that
 * appended its own removal which never committed), and were its target stuck
 * at the highest priority it would refuse every lower-priority candidate
 * forever, which can leave no candidate able to gather a quorum. */
void election_timeout(struct raft *r)
{
    election_reset_timer(r);
    int prio = campaign_priority(r);
    bool eligible = prio >= 0 && (uint32_t)prio >= r->target_priority;
    priority_decay(r);
    if (eligible)
        campaign(r, true, false);
}

/* The driver lost its link to node id (RAFT_EV_PEER_DOWN): most likely the
 * process died and its kernel reset the connection. If that is the leader of
 * this follower, forget it - its lease ends, so this node grants the pre-votes
 * of others - and run the election timer's round now instead of 1-2 timeouts
 * later; the priority and witness rules apply unchanged (election_timeout).
 * A node that may not campaign (a learner) keeps waiting for its timer, and
 * so does everyone about any other node. A spurious report (the link dropped,
 * the leader lives) costs one pre-vote round: every follower still hearing
 * the leader is in lease and ignores it, and the leader's next heartbeat
 * makes this node its follower again. */
void peer_down(struct raft *r, uint64_t id)
{
    if (r->role != RAFT_FOLLOWER || id == 0 || id != r->leader_id || campaign_priority(r) < 0)
        return;
    become_follower(r, r->term, 0);
    r->quick_until = r->now + 2 * (uint64_t)r->o.election_timeout_ms;
#if RAFT_MUTATION == 4
    campaign(r, false, false); /* deliberately wrong: skips the pre-vote, deposing a live leader */
#else
    election_timeout(r);
#endif
}

static bool log_up_to_date(const struct raft *r, const struct raft_msg *m)
{
    uint64_t last = rlog_last(&r->log);
    uint64_t lt = rlog_term(&r->log, last);
    if (m->u.vote.last_term != lt)
        return m->u.vote.last_term > lt;
    return m->u.vote.last_index >= last;
}

void recv_vote(struct raft *r, const struct raft_msg *m)
{
    const struct raft_msg_vote *v = &m->u.vote;
    bool grant = false;
    if (m->term >= r->term) {
#if RAFT_MUTATION == 2
        bool can_vote = true; /* deliberately wrong: ignores an earlier vote */
#else
        bool can_vote = r->vote == m->from || (r->vote == 0 && r->leader_id == 0) ||
                        (v->pre_vote && m->term > r->term);
#endif
        bool prio_ok =
            v->transfer || (uint32_t)cfg_priority(&r->config, m->from) >= r->target_priority;
        grant = can_vote && prio_ok && log_up_to_date(r, m);
    }
    struct raft_msg *resp = msg_new(r, RAFT_MSG_VOTE_RESP, m->from);
    if (resp == NULL)
        return;
    resp->u.vote_resp.pre_vote = v->pre_vote;
    resp->u.vote_resp.granted = grant;
    resp->term = grant && v->pre_vote ? m->term : r->term;
    if (grant && !v->pre_vote) {
        r->vote = m->from;
        r->state_dirty = true;
        election_reset_timer(r);
    }
}

void recv_vote_resp(struct raft *r, const struct raft_msg *m)
{
    const struct raft_msg_vote_resp *v = &m->u.vote_resp;
    bool pre = v->pre_vote;
    if (pre ? (r->role != RAFT_PRECANDIDATE || m->term != r->term + 1)
            : (r->role != RAFT_CANDIDATE || m->term != r->term))
        return;
    int p = cfg_pos(&r->config, m->from);
    if (p < 0)
        return;
    if (r->prs[p].vote == 0)
        r->prs[p].vote = v->granted ? 1 : 2;
    uint32_t q = cfg_quorum(&r->config);
    if (count_votes(r, 1) >= q) {
        if (pre)
            campaign(r, false, false);
        else
            become_leader(r);
    } else if (count_votes(r, 2) >= q) {
        become_follower(r, r->term, 0);
    }
}
