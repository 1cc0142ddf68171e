/* membership.c - single-server membership changes, leadership transfer, and
 * the priority hand-over.
 *
 * Changes go one at a time (dissertation §4.1): a new configuration is
 * appended only once the previous one is committed and this leader's no-op is
 * committed (which closes the known single-server bug when leaders change).
 * A node joins as a learner and is promoted once its log is within
 * catchup_margin entries of the leader's; a leader that removes itself keeps
 * leading until the change commits, without counting itself, then steps down.
 *
 * Transfer (§3.10): the leader stops taking proposals, brings the target up
 * to date, then sends it TimeoutNow; the target campaigns at once and voters
 * grant it despite stickiness and priorities. The transfer is abandoned after
 * an election timeout. The same mechanism hands leadership to a caught-up
 * voter of higher priority than the leader's, which is how a witness that had
 * to lead gives leadership away as soon as another node has its log.
 */
#include <string.h>

#include "raft/core/core.h"

static int propose_config(struct raft *r, const struct raft_config *c)
{
    uint8_t buf[4 + RAFT_MAX_NODES * 10];
    size_t len;
    int rc = raft_config_encode(c, buf, sizeof(buf), &len);
    if (rc != 0)
        return rc;
    if (rlog_append(r, r->term, RAFT_ENTRY_CONFIG, buf, (uint32_t)len) != 0) {
        r->oom = 1;
        return FERRY_ENOMEM;
    }
    config_refresh(r);
    r->up->proposed_index = rlog_last(&r->log);
    r->up->proposed_term = r->term;
    replicate_all(r);
    maybe_commit(r);
    return 0;
}

static bool caught_up(const struct raft *r, const struct progress *pr)
{
    return pr->match + r->o.catchup_margin >= rlog_last(&r->log);
}

int membership_change(struct raft *r, const struct raft_event *ev)
{
    if (r->role != RAFT_LEADER || raft_is_witness(r) || !self_is_voter(r))
        return FERRY_ENOTLEADER;
    if (r->transfer_target != 0 || r->config_index > r->commit || r->commit < r->term_start)
        return FERRY_EBUSY;
    struct raft_config c = r->config;
    uint64_t id = ev->type == RAFT_EV_ADD_LEARNER ? ev->u.add_learner.id : ev->u.node_id;
    int p = cfg_pos(&c, id);
    switch (ev->type) {
    case RAFT_EV_ADD_LEARNER:
        if (id == 0)
            return FERRY_EINVAL;
        if (p >= 0)
            return FERRY_EEXIST;
        if (c.n == RAFT_MAX_NODES)
            return FERRY_ELIMIT;
        c.nodes[c.n].id = id;
        c.nodes[c.n].role = RAFT_LEARNER;
        c.nodes[c.n].priority = ev->u.add_learner.priority;
        c.n++;
        break;
    case RAFT_EV_PROMOTE:
        if (p < 0)
            return FERRY_ENOTFOUND;
        if (c.nodes[p].role != RAFT_LEARNER)
            return FERRY_EINVAL;
        if (!caught_up(r, &r->prs[p]))
            return FERRY_EAGAIN;
        c.nodes[p].role = RAFT_VOTER;
        break;
    case RAFT_EV_REMOVE:
        if (p < 0)
            return FERRY_ENOTFOUND;
        if (c.nodes[p].role == RAFT_VOTER && raft_config_voters(&c) == 1)
            return FERRY_EINVAL;
        c.nodes[p] = c.nodes[c.n - 1];
        c.n--;
        break;
    default:
        return FERRY_EINVAL;
    }
    return propose_config(r, &c);
}

static void send_timeout_now(struct raft *r, struct progress *pr)
{
    if (msg_new(r, RAFT_MSG_TIMEOUT_NOW, pr->id) != NULL)
        pr->timeout_now_sent = 1;
}

/* Called when pr's match advanced: fire TimeoutNow once the target has everything. */
void transfer_check(struct raft *r, struct progress *pr)
{
    if (r->transfer_target != pr->id || pr->timeout_now_sent)
        return;
    if (pr->match == rlog_last(&r->log))
        send_timeout_now(r, pr);
}

int transfer_start(struct raft *r, uint64_t id)
{
    if (r->role != RAFT_LEADER)
        return FERRY_ENOTLEADER;
    if (r->transfer_target != 0)
        return FERRY_EBUSY;
    if (id == 0) {
        /* The best voter: highest priority, then most caught up. */
        const struct progress *best = NULL;
        int best_prio = -1;
        for (uint32_t i = 0; i < r->config.n; i++) {
            const struct raft_node *n = &r->config.nodes[i];
            if (n->id == r->o.id || n->role != RAFT_VOTER)
                continue;
            if (n->priority > best_prio ||
                (n->priority == best_prio && r->prs[i].match > best->match)) {
                best = &r->prs[i];
                best_prio = n->priority;
            }
        }
        if (best == NULL)
            return FERRY_ENOTFOUND;
        id = best->id;
    }
    if (id == r->o.id)
        return FERRY_EINVAL;
    if (!cfg_is_voter(&r->config, id))
        return FERRY_ENOTFOUND;
    struct progress *pr = progress_of(r, id);
    r->transfer_target = id;
    r->transfer_deadline = r->now + r->o.election_timeout_ms;
    pr->timeout_now_sent = 0;
    if (pr->match == rlog_last(&r->log))
        send_timeout_now(r, pr);
    else
        replicate_all(r);
    return 0;
}

/* Leader: give leadership to a caught-up voter of higher priority. */
void maybe_handover(struct raft *r)
{
    if (r->role != RAFT_LEADER || r->transfer_target != 0 || r->now < r->handover_hold_until)
        return;
    int mine = raft_priority(r);
    uint64_t last = rlog_last(&r->log);
    int best_prio = mine;
    uint64_t best = 0;
    for (uint32_t i = 0; i < r->config.n; i++) {
        const struct raft_node *n = &r->config.nodes[i];
        if (n->id == r->o.id || n->role != RAFT_VOTER || r->prs[i].match != last)
            continue;
        if (n->priority > best_prio) {
            best_prio = n->priority;
            best = n->id;
        }
    }
    if (best != 0)
        transfer_start(r, best);
}

void recv_timeout_now(struct raft *r, const struct raft_msg *m)
{
    if (r->role != RAFT_FOLLOWER || m->from != r->leader_id || !self_is_voter(r))
        return;
    campaign(r, false, true);
}
