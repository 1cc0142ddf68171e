/* test_raft_election.c - raft/core elections: pre-vote, check-quorum,
 * stickiness, one vote per term, the no-op, priorities, rejection of foreign
 * or unknown senders, and prompt failover on PEER_DOWN. One test per rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "raft_harness.h"

/* Pre-vote (§9.6): a node whose timer fires asks at term+1 without bumping its own term. */
static void test_prevote_does_not_bump_term(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    h_isolate(&h, 1, 1);
    for (int i = 0; i < 20; i++) {
        h.now = h.n[1].up.deadline_ms;
        h_tick(&h, 1);
        assert_int_equal(raft_term(h.n[1].r), 0);
        assert_int_equal(raft_role(h.n[1].r), RAFT_PRECANDIDATE);
        assert_int_equal(h_count_msgs(&h, 1, RAFT_MSG_VOTE), 2);
        assert_int_equal(h.n[1].up.msgs[0].u.vote.pre_vote, 1);
        assert_int_equal(h.n[1].up.msgs[0].term, 1);
        assert_false(h.n[1].up.flags & RAFT_UPDATE_STATE);
    }
    h_free(&h);
}

/* The first election: a leader emerges, appends a no-op of its term and commits it. */
static void test_leader_appends_noop_on_election(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    h_run(&h, 500);
    int l = h_leader(&h);
    assert_true(l > 0);
    struct raft *r = h.n[l].r;
    const struct raft_entry *e = raft_entry_at(r, raft_last_index(r));
    assert_int_equal(e->type, RAFT_ENTRY_NOOP);
    assert_int_equal(e->term, raft_term(r));
    assert_int_equal(raft_commit_index(r), raft_last_index(r));
    for (int i = 1; i <= 3; i++)
        assert_int_equal(raft_leader(h.n[i].r), l);
    h_free(&h);
}

/* Check-quorum: a leader cut off from the majority steps down within about
 * an election timeout, and the rest elect a new leader. */
static void test_check_quorum_step_down(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    h_run(&h, 500);
    int l = h_leader(&h);
    h_isolate(&h, l, 1);
    h_run(&h, 250);
    assert_int_not_equal(raft_role(h.n[l].r), RAFT_LEADER);
    int l2 = h_leader(&h);
    assert_true(l2 > 0 && l2 != l);
    h_free(&h);
}

/* Stickiness: a follower that heard from its leader ignores a vote request
 * of a higher term and keeps its term; a transfer request is not ignored. */
static void test_sticky_leader_ignores_votes(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    h_run(&h, 500);
    int l = h_leader(&h);
    int f = l == 1 ? 2 : 1, c = 6 - l - f;
    uint64_t term = raft_term(h.n[f].r);
    struct raft_msg m = h_msg(RAFT_MSG_VOTE, (uint64_t)c, (uint64_t)f, term + 5);
    m.u.vote.last_index = 1000;
    m.u.vote.last_term = term + 4;
    h_recv(&h, f, &m);
    assert_int_equal(raft_term(h.n[f].r), term);
    assert_int_equal(h.n[f].up.n_msgs, 0);
    m.u.vote.transfer = 1;
    h_recv(&h, f, &m);
    assert_int_equal(raft_term(h.n[f].r), term + 5);
    assert_int_equal(raft_vote(h.n[f].r), c);
    assert_true(h.n[f].up.flags & RAFT_UPDATE_STATE);
    h_free(&h);
}

/* Election safety at the voter: one vote per term, persisted before the reply. */
static void test_one_vote_per_term(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    struct raft_msg m = h_msg(RAFT_MSG_VOTE, 2, 1, 1);
    h_recv(&h, 1, &m);
    assert_true(h.n[1].up.flags & RAFT_UPDATE_STATE);
    assert_int_equal(h.n[1].up.vote, 2);
    assert_int_equal(h.n[1].up.msgs[0].u.vote_resp.granted, 1);
    m = h_msg(RAFT_MSG_VOTE, 3, 1, 1);
    h_recv(&h, 1, &m);
    assert_int_equal(h.n[1].up.msgs[0].u.vote_resp.granted, 0);
    assert_int_equal(raft_vote(h.n[1].r), 2);
    h_free(&h);
}

/* §5.4.1: a candidate whose log is behind the voter's is refused. */
static void test_stale_log_refused(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    h_run(&h, 500);
    int l = h_leader(&h);
    h_propose(&h, l, "x");
    h_run(&h, 50);
    for (int i = 1; i <= 3; i++)
        h_isolate(&h, i, 1);
    h_run(&h, 300); /* every lease expires; pre-votes fail, terms stay */
    int f = l == 1 ? 2 : 1;
    struct raft_msg m = h_msg(RAFT_MSG_VOTE, 3, (uint64_t)f, raft_term(h.n[f].r) + 1);
    m.u.vote.last_index = 1;
    m.u.vote.last_term = 1;
    h_recv(&h, f, &m);
    int granted = -1;
    for (uint32_t i = 0; i < h.n[f].up.n_msgs; i++)
        if (h.n[f].up.msgs[i].type == RAFT_MSG_VOTE_RESP)
            granted = h.n[f].up.msgs[i].u.vote_resp.granted;
    assert_int_equal(granted, 0);
    h_free(&h);
}

/* Priorities: a node campaigns only once its priority reaches its target,
 * which starts at the highest priority and decays each leaderless round,
 * staying at 1 for RAFT_WITNESS_ROUNDS rounds before reaching 0. */
static void test_priority_target_decay(void **state)
{
    (void)state;
    int prio[3] = {1, 5, 3};
    struct hcluster h;
    h_init(&h, 3, prio, NULL);
    h_isolate(&h, 1, 1);
    int expect[] = {5, 4, 3, 2, 1, 1, 0};
    int campaigned_at = -1;
    for (int i = 0; i < 7; i++) {
        assert_int_equal(raft_target_priority(h.n[1].r), expect[i]);
        h.now = h.n[1].up.deadline_ms;
        h_tick(&h, 1);
        if (h_count_msgs(&h, 1, RAFT_MSG_VOTE) > 0 && campaigned_at < 0)
            campaigned_at = i;
    }
    assert_int_equal(campaigned_at, 4); /* the first round with target 1 */
    h_free(&h);
}

/* A voter refuses a candidate below its target priority, unless it is a transfer. */
static void test_voter_refuses_below_target(void **state)
{
    (void)state;
    int prio[3] = {3, 1, 2};
    struct hcluster h;
    h_init(&h, 3, prio, NULL);
    struct raft_msg m = h_msg(RAFT_MSG_VOTE, 2, 1, 1);
    m.u.vote.pre_vote = 1;
    h_recv(&h, 1, &m);
    assert_int_equal(h.n[1].up.msgs[0].u.vote_resp.granted, 0);
    m.u.vote.transfer = 1;
    h_recv(&h, 1, &m);
    assert_int_equal(h.n[1].up.msgs[0].u.vote_resp.granted, 1);
    h_free(&h);
}

/* With every node up, the highest priority one ends up leading. */
static void test_highest_priority_leads(void **state)
{
    (void)state;
    int prio[5] = {1, 2, 5, 3, 1};
    struct hcluster h;
    h_init(&h, 5, prio, NULL);
    h_run(&h, 3000);
    assert_int_equal(h_leader(&h), 3);
    /* It loses leadership while away and gets it back once caught up. */
    h_isolate(&h, 3, 1);
    h_run(&h, 2000);
    int l = h_leader(&h);
    assert_true(l != 3 && l > 0);
    h_propose(&h, l, "while away");
    h_isolate(&h, 3, 0);
    h_run(&h, 3000);
    assert_int_equal(h_leader(&h), 3);
    h_free(&h);
}

/* Messages from another cluster, or votes from a node outside the
 * configuration, are rejected and reported. */
static void test_foreign_and_unknown_rejected(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    struct raft_msg m = h_msg(RAFT_MSG_VOTE, 2, 1, 9);
    m.cluster_id = 8;
    h_recv(&h, 1, &m);
    assert_int_equal(h.n[1].up.n_rejected, 1);
    assert_int_equal(h.n[1].up.rejected[0].reason, RAFT_REJECT_CLUSTER);
    assert_int_equal(h.n[1].up.rejected[0].cluster_id, 8);
    assert_int_equal(raft_term(h.n[1].r), 0);
    m = h_msg(RAFT_MSG_VOTE, 99, 1, 9);
    h_recv(&h, 1, &m);
    assert_int_equal(h.n[1].up.n_rejected, 1);
    assert_int_equal(h.n[1].up.rejected[0].reason, RAFT_REJECT_UNKNOWN);
    assert_int_equal(h.n[1].up.rejected[0].from, 99);
    assert_int_equal(raft_term(h.n[1].r), 0);
    m = h_msg(RAFT_MSG_VOTE, 2, 3, 9); /* addressed to someone else */
    h_recv(&h, 1, &m);
    assert_int_equal(h.n[1].up.rejected[0].reason, RAFT_REJECT_MISROUTED);
    h_free(&h);
}

/* A single-node cluster elects itself and commits once its own write is durable. */
static void test_single_node(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 1, NULL, NULL);
    h_run(&h, 300);
    assert_int_equal(h_leader(&h), 1);
    assert_int_equal(h_propose(&h, 1, "solo"), 0);
    assert_int_equal(raft_commit_index(h.n[1].r), 2);
    h_free(&h);
}

/* Prompt failover: when the leader's process dies, each follower's link to it
 * resets and the follower runs its pre-vote at once. The first one to hear is
 * refused by the other, which still holds the leader's lease; once the other
 * hears too it grants, and a new leader is elected with no timer involved. */
static void test_peer_down_leader_crash_fails_over_at_once(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    h_run(&h, 500);
    int l = h_leader(&h);
    int f = l == 1 ? 2 : 1, g = 6 - l - f;
    uint64_t term = raft_term(h.n[l].r);
    h.n[l].down = 1; /* the leader's process dies */
    uint64_t t0 = h.now;
    assert_true(h.n[f].up.deadline_ms > t0 && h.n[g].up.deadline_ms > t0);

    assert_int_equal(h_peer_down(&h, f, l), 0);
    assert_int_equal(raft_role(h.n[f].r), RAFT_PRECANDIDATE);
    assert_int_equal(raft_leader(h.n[f].r), 0);
    assert_int_equal(raft_term(h.n[f].r), term);
    assert_int_equal(h_count_msgs(&h, f, RAFT_MSG_VOTE), 2);
    for (uint32_t i = 0; i < h.n[f].up.n_msgs; i++) {
        assert_int_equal(h.n[f].up.msgs[i].u.vote.pre_vote, 1);
        assert_int_equal(h.n[f].up.msgs[i].term, term + 1);
    }
    h_deliver(&h);
    assert_int_equal(raft_leader(h.n[g].r), l); /* still in lease: refused */
    assert_int_equal(raft_term(h.n[g].r), term);

    assert_int_equal(h_peer_down(&h, g, l), 0);
    h_deliver(&h);
    int l2 = h_leader(&h);
    assert_true(l2 == f || l2 == g);
    assert_int_equal(raft_term(h.n[l2].r), term + 1);
    assert_int_equal(h.now, t0);
    assert_int_equal(h_propose(&h, l2, "after failover"), 0);
    h_run(&h, 20);
    assert_int_equal(raft_commit_index(h.n[6 - l - l2].r), raft_last_index(h.n[l2].r));
    h_free(&h);
}

/* Two data nodes and a witness: the surviving data node's pre-vote reaches the
 * witness before the witness saw the link drop, and is refused; it tries
 * again after a heartbeat, not a whole election timeout. */
static void test_peer_down_refused_prevote_retried_at_heartbeat_pace(void **state)
{
    (void)state;
    struct hcluster h;
    const int prio[] = {1, 1, 0};
    h_init(&h, 3, prio, NULL);
    h_run(&h, 500);
    int l = h_leader(&h);
    assert_true(l == 1 || l == 2);
    int f = l == 1 ? 2 : 1, w = 3;
    h.n[l].down = 1;
    uint64_t t0 = h.now;
    assert_int_equal(h_peer_down(&h, f, l), 0);
    h_deliver(&h); /* the witness, still in lease, refuses */
    assert_int_equal(raft_leader(h.n[w].r), l);
    assert_int_equal(h_peer_down(&h, w, l), 0); /* now it has seen the drop too */
    while (h_leader(&h) != f && h.now < t0 + 100)
        h_run(&h, 1);
    assert_int_equal(h_leader(&h), f);
    /* Heartbeat is 10 ms and the election timeout 100 ms: two heartbeats at most. */
    assert_true(h.now - t0 < 2 * 10);
    h_free(&h);
}

/* The only voter of its configuration elects itself on its first step,
 * without waiting for an election timeout. */
static void test_single_voter_elects_itself_at_once(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 1, NULL, NULL);
    uint64_t t0 = h.now;
    h_tick(&h, 1);
    assert_int_equal(raft_role(h.n[1].r), RAFT_LEADER);
    assert_int_equal(h.now, t0);
    h_free(&h);
}

/* PEER_DOWN about anyone but this follower's leader, or at a leader, a
 * pre-candidate or a learner, changes nothing and sends nothing. */
static void test_peer_down_not_about_leader_ignored(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    h_run(&h, 500);
    int l = h_leader(&h);
    int f = l == 1 ? 2 : 1, g = 6 - l - f;
    uint64_t term = raft_term(h.n[l].r);
    int about[] = {g, 0, 5};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(h_peer_down(&h, f, about[i]), 0);
        assert_int_equal(raft_role(h.n[f].r), RAFT_FOLLOWER);
        assert_int_equal(raft_leader(h.n[f].r), l);
        assert_int_equal(h.n[f].up.n_msgs, 0);
        assert_false(h.n[f].up.flags & (RAFT_UPDATE_ROLE | RAFT_UPDATE_STATE));
    }
    assert_int_equal(h_peer_down(&h, l, f), 0); /* the leader loses a follower */
    assert_int_equal(raft_role(h.n[l].r), RAFT_LEADER);
    assert_false(h.n[l].up.flags & (RAFT_UPDATE_ROLE | RAFT_UPDATE_STATE));

    /* A learner never campaigns, so it keeps its leader and waits. */
    struct raft_config c = *raft_config(h.n[l].r);
    c.nodes[c.n++] = (struct raft_node){4, RAFT_LEARNER, 1};
    h_spawn(&h, 4, &c);
    struct raft_event ev = {.type = RAFT_EV_ADD_LEARNER};
    ev.u.add_learner.id = 4;
    ev.u.add_learner.priority = 1;
    assert_int_equal(h_step(&h, l, &ev), 0);
    h_run(&h, 50);
    assert_int_equal(raft_leader(h.n[4].r), l);
    assert_int_equal(h_peer_down(&h, 4, l), 0);
    assert_int_equal(raft_role(h.n[4].r), RAFT_FOLLOWER);
    assert_int_equal(raft_leader(h.n[4].r), l);
    assert_int_equal(h.n[4].up.n_msgs, 0);

    /* A pre-candidate has no leader to lose. */
    h_isolate(&h, g, 1);
    h_run(&h, 250);
    assert_int_equal(raft_role(h.n[g].r), RAFT_PRECANDIDATE);
    assert_int_equal(h_peer_down(&h, g, l), 0);
    assert_int_equal(raft_role(h.n[g].r), RAFT_PRECANDIDATE);
    assert_int_equal(h.n[g].up.n_msgs, 0);
    for (int i = 1; i <= 4; i++)
        assert_int_equal(raft_term(h.n[i].r), term);
    h_free(&h);
}

/* A spurious PEER_DOWN (the link dropped, the leader lives) at one follower
 * of a 3-node cluster: it runs a pre-vote, which the other follower (still
 * hearing the leader) and the leader ignore; nobody's term changes, nobody
 * else is elected, and the next heartbeat makes it a follower again. */
static void test_spurious_peer_down_keeps_healthy_leader(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    h_run(&h, 500);
    int l = h_leader(&h);
    int f = l == 1 ? 2 : 1, g = 6 - l - f;
    uint64_t term = raft_term(h.n[l].r);
    uint64_t vote_g = raft_vote(h.n[g].r);
    for (int i = 1; i <= 3; i++)
        h.n[i].was_leader = 0;

    assert_int_equal(h_peer_down(&h, f, l), 0);
    assert_int_equal(raft_role(h.n[f].r), RAFT_PRECANDIDATE);
    assert_int_equal(h_count_msgs(&h, f, RAFT_MSG_VOTE), 2);
    h_deliver(&h);
    assert_int_equal(raft_term(h.n[g].r), term);
    assert_int_equal(raft_vote(h.n[g].r), vote_g);
    assert_int_equal(raft_leader(h.n[g].r), l);
    assert_int_equal(raft_role(h.n[l].r), RAFT_LEADER);
    assert_int_equal(raft_term(h.n[l].r), term);

    h_run(&h, 300); /* three election timeouts */
    assert_int_equal(h_leader(&h), l);
    for (int i = 1; i <= 3; i++) {
        assert_int_equal(raft_term(h.n[i].r), term);
        assert_int_equal(raft_leader(h.n[i].r), l);
        if (i != l)
            assert_false(h.n[i].was_leader);
    }
    assert_int_equal(raft_role(h.n[f].r), RAFT_FOLLOWER);
    assert_int_equal(h_propose(&h, l, "still leading"), 0);
    h_run(&h, 20);
    assert_int_equal(raft_commit_index(h.n[f].r), raft_last_index(h.n[l].r));
    h_free(&h);
}

/* PEER_DOWN runs the election timer's round early, priority rules and all:
 * followers below their target priority (here a witness and a priority-1
 * node whose target is 2) forget the leader and decay their target, but do
 * not campaign; the next round of the priority-1 node elects it. */
static void test_peer_down_keeps_priority_rules(void **state)
{
    (void)state;
    int prio[3] = {2, 1, 0};
    struct hcluster h;
    h_init(&h, 3, prio, NULL);
    h_run(&h, 1000);
    assert_int_equal(h_leader(&h), 1);
    uint64_t term = raft_term(h.n[1].r);
    h.n[1].down = 1;
    for (int i = 2; i <= 3; i++) {
        assert_int_equal(raft_target_priority(h.n[i].r), 2);
        assert_int_equal(h_peer_down(&h, i, 1), 0);
        assert_int_equal(raft_role(h.n[i].r), RAFT_FOLLOWER);
        assert_int_equal(raft_leader(h.n[i].r), 0);
        assert_int_equal(h_count_msgs(&h, i, RAFT_MSG_VOTE), 0);
        assert_int_equal(raft_target_priority(h.n[i].r), 1);
    }
    h_run(&h, 250);
    assert_int_equal(h_leader(&h), 2);
    assert_int_equal(raft_term(h.n[2].r), term + 1);
    h_free(&h);
}

static void test_init_validates(void **state)
{
    (void)state;
    struct raft_options o;
    h_options(&o);
    struct raft_config c = {0};
    c.nodes[c.n++] = (struct raft_node){1, RAFT_VOTER, 1};
    c.nodes[c.n++] = (struct raft_node){1, RAFT_VOTER, 1};
    struct raft *r;
    struct ferry_err err;
    o.id = 1;
    assert_int_equal(raft_init(&r, &o, &c, &err), FERRY_EINVAL);
    assert_non_null(strstr(err.msg, "bootstrap"));
    o.heartbeat_ms = o.election_timeout_ms;
    assert_int_equal(raft_init(&r, &o, &c, &err), FERRY_EINVAL);
    assert_non_null(strstr(err.msg, "heartbeat"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prevote_does_not_bump_term),
        cmocka_unit_test(test_leader_appends_noop_on_election),
        cmocka_unit_test(test_check_quorum_step_down),
        cmocka_unit_test(test_sticky_leader_ignores_votes),
        cmocka_unit_test(test_one_vote_per_term),
        cmocka_unit_test(test_stale_log_refused),
        cmocka_unit_test(test_priority_target_decay),
        cmocka_unit_test(test_voter_refuses_below_target),
        cmocka_unit_test(test_highest_priority_leads),
        cmocka_unit_test(test_foreign_and_unknown_rejected),
        cmocka_unit_test(test_single_node),
        cmocka_unit_test(test_peer_down_leader_crash_fails_over_at_once),
        cmocka_unit_test(test_peer_down_refused_prevote_retried_at_heartbeat_pace),
        cmocka_unit_test(test_peer_down_not_about_leader_ignored),
        cmocka_unit_test(test_single_voter_elects_itself_at_once),
        cmocka_unit_test(test_spurious_peer_down_keeps_healthy_leader),
        cmocka_unit_test(test_peer_down_keeps_priority_rules),
        cmocka_unit_test(test_init_validates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
