/* test_raft_membership.c - raft/core membership changes, leadership transfer
 * and the witness: one test per rule. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "raft_harness.h"

static int request(struct hcluster *h, int id, uint8_t type, uint64_t node, uint8_t prio)
{
    struct raft_event ev = {.type = type};
    if (type == RAFT_EV_ADD_LEARNER) {
        ev.u.add_learner.id = node;
        ev.u.add_learner.priority = prio;
    } else {
        ev.u.node_id = node;
    }
    return h_step(h, id, &ev);
}

/* A node joins as a learner (no vote, no quorum weight), is promoted once
 * caught up, and changes go one at a time. */
static void test_learner_then_promote(void **state)
{
    (void)state;
    struct raft_options o;
    h_options(&o);
    o.catchup_margin = 0;
    struct hcluster h;
    h_init(&h, 3, NULL, &o);
    h_run(&h, 500);
    int l = h_leader(&h);
    struct raft_config c = *raft_config(h.n[l].r);
    c.nodes[c.n++] = (struct raft_node){4, RAFT_LEARNER, 1};
    h.n[4].down = 1;
    h_spawn(&h, 4, &c);
    assert_int_equal(request(&h, l, RAFT_EV_ADD_LEARNER, 4, 1), 0);
    const struct raft_node *n4 = raft_config_find(raft_config(h.n[l].r), 4);
    assert_non_null(n4);
    assert_int_equal(n4->role, RAFT_LEARNER);
    /* In force at once, one change at a time. */
    assert_int_equal(request(&h, l, RAFT_EV_REMOVE, 3, 0), FERRY_EBUSY);
    h_run(&h, 50);
    /* The learner is down: it does not hold up commits, cannot be promoted yet. */
    assert_int_equal(h_propose(&h, l, "x"), 0);
    h_run(&h, 50);
    assert_int_equal(raft_commit_index(h.n[l].r), raft_last_index(h.n[l].r));
    assert_int_equal(request(&h, l, RAFT_EV_PROMOTE, 4, 0), FERRY_EAGAIN);
    h.n[4].down = 0;
    h_run(&h, 200);
    assert_int_equal(raft_role(h.n[4].r), RAFT_FOLLOWER);
    assert_int_equal(request(&h, l, RAFT_EV_PROMOTE, 4, 0), 0);
    h_run(&h, 100);
    assert_int_equal(raft_config_find(raft_config(h.n[4].r), 4)->role, RAFT_VOTER);
    assert_int_equal(raft_config_voters(raft_config(h.n[l].r)), 4);
    assert_int_equal(request(&h, l, RAFT_EV_ADD_LEARNER, 4, 1), FERRY_EEXIST);
    h_free(&h);
}

/* A joining node starts with an empty configuration (what Ferry's driver
 * passes with cluster_join): it never campaigns on a configuration it made
 * up, however long nobody talks to it, and learns the real one from the
 * leader once added. */
static void test_joining_node_waits_to_be_added(void **state)
{
    (void)state;
    struct raft_options o;
    h_options(&o);
    o.catchup_margin = 0;
    struct hcluster h;
    h_init(&h, 3, NULL, &o);
    h_run(&h, 500);
    int l = h_leader(&h);
    assert_int_equal(h_propose(&h, l, "before"), 0);
    struct raft_config empty = {0};
    h_spawn(&h, 4, &empty);
    h_run(&h, 3000);
    assert_int_equal(raft_role(h.n[4].r), RAFT_FOLLOWER);
    assert_int_equal(raft_term(h.n[4].r), 0);
    assert_int_equal(raft_last_index(h.n[4].r), 0);
    assert_int_equal(request(&h, l, RAFT_EV_ADD_LEARNER, 4, 3), 0);
    h_run(&h, 200);
    assert_int_equal(raft_last_index(h.n[4].r), raft_last_index(h.n[l].r));
    const struct raft_node *n4 = raft_config_find(raft_config(h.n[4].r), 4);
    assert_non_null(n4);
    assert_int_equal(n4->role, RAFT_LEARNER);
    assert_int_equal(n4->priority, 3);
    assert_int_equal(request(&h, l, RAFT_EV_PROMOTE, 4, 0), 0);
    h_run(&h, 100);
    assert_int_equal(raft_config_find(raft_config(h.n[4].r), 4)->role, RAFT_VOTER);
    h_free(&h);
}

/* A leader that removes itself keeps leading until the change commits, then
 * steps down; the others elect a leader among themselves. */
static void test_remove_leader_steps_down(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    h_run(&h, 500);
    int l = h_leader(&h);
    assert_int_equal(request(&h, l, RAFT_EV_REMOVE, (uint64_t)l, 0), 0);
    assert_int_equal(h_propose(&h, l, "x"), FERRY_ENOTLEADER);
    h_run(&h, 50);
    assert_int_not_equal(raft_role(h.n[l].r), RAFT_LEADER);
    assert_null(raft_config_find(raft_config(h.n[l].r), (uint64_t)l));
    h_run(&h, 1000);
    int l2 = h_leader(&h);
    assert_true(l2 > 0 && l2 != l);
    assert_int_equal(raft_config_voters(raft_config(h.n[l2].r)), 2);
    /* The removed node never campaigns and is not heard by the others. */
    assert_int_equal(raft_role(h.n[l].r), RAFT_FOLLOWER);
    h_free(&h);
}

/* Transfer: proposals pause, the target is brought up to date and told to
 * campaign at once; it wins despite stickiness. */
static void test_leadership_transfer(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    h_run(&h, 500);
    int l = h_leader(&h);
    int t = l == 3 ? 1 : l + 1;
    h.n[t].down = 1;
    h_propose(&h, l, "before");
    h_run(&h, 5);
    h.n[t].down = 0;
    assert_int_equal(request(&h, l, RAFT_EV_TRANSFER, (uint64_t)t, 0), 0);
    assert_int_equal(raft_transfer_target(h.n[l].r), (uint64_t)t);
    assert_int_equal(h_propose(&h, l, "during"), FERRY_EBUSY);
    h_run(&h, 60);
    assert_int_equal(h_leader(&h), t);
    assert_int_equal(raft_leader(h.n[l].r), (uint64_t)t);
    h_free(&h);
}

/* A transfer whose target never answers is abandoned after an election timeout. */
static void test_transfer_times_out(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    h_run(&h, 500);
    int l = h_leader(&h);
    int t = l == 3 ? 1 : l + 1;
    h.n[t].down = 1;
    h_propose(&h, l, "x");
    assert_int_equal(request(&h, l, RAFT_EV_TRANSFER, (uint64_t)t, 0), 0);
    h_run(&h, 150);
    assert_int_equal(h_leader(&h), l);
    assert_int_equal(raft_transfer_target(h.n[l].r), 0);
    assert_int_equal(h_propose(&h, l, "after"), 0);
    h_free(&h);
}

/* Witness: priority 0, never serves clients; when it alone holds the freshest
 * log it is elected, brings the other node up to date and hands over at once. */
static void test_witness_hand_over(void **state)
{
    (void)state;
    int prio[3] = {1, 1, 0};
    struct hcluster h;
    h_init(&h, 3, prio, NULL);
    h_run(&h, 1000);
    int l = h_leader(&h);
    assert_true(l == 1 || l == 2);
    int other = 3 - l;
    /* Only the leader and the witness get these entries. */
    h_isolate(&h, other, 1);
    for (int i = 0; i < 5; i++)
        assert_int_equal(h_propose(&h, l, "fresh"), 0);
    h_run(&h, 30);
    uint64_t committed = raft_commit_index(h.n[l].r);
    assert_int_equal(raft_last_index(h.n[3].r), raft_last_index(h.n[l].r));
    /* The leader dies; the other node is back but behind. */
    h.n[l].down = 1;
    h_isolate(&h, other, 0);
    h_isolate(&h, l, 1);
    h.n[3].was_leader = 0;
    h_run(&h, 5000);
    assert_true(h.n[3].was_leader);
    assert_int_equal(h_leader(&h), other);
    assert_true(raft_commit_index(h.n[other].r) >= committed);
    assert_int_equal(raft_role(h.n[3].r), RAFT_FOLLOWER);
    h_free(&h);
}

/* A witness in office refuses proposals and membership changes. */
static void test_witness_never_serves(void **state)
{
    (void)state;
    int prio[3] = {1, 1, 0};
    struct hcluster h;
    h_init(&h, 3, prio, NULL);
    h.n[1].down = h.n[2].down = 1;
    struct raft_msg m = h_msg(RAFT_MSG_VOTE_RESP, 1, 3, 1);
    h.now = h.n[3].up.deadline_ms;
    h_tick(&h, 3); /* target 1 > 0: decays, no campaign */
    assert_int_equal(raft_role(h.n[3].r), RAFT_FOLLOWER);
    while (raft_role(h.n[3].r) != RAFT_PRECANDIDATE) {
        h.now = h.n[3].up.deadline_ms;
        h_tick(&h, 3);
    }
    m.u.vote_resp = (struct raft_msg_vote_resp){1, 1};
    h_recv(&h, 3, &m);
    m.u.vote_resp.pre_vote = 0;
    h_recv(&h, 3, &m);
    assert_int_equal(raft_role(h.n[3].r), RAFT_LEADER);
    assert_true(raft_is_witness(h.n[3].r));
    assert_false(raft_accepts_proposals(h.n[3].r));
    assert_int_equal(h_propose(&h, 3, "x"), FERRY_ENOTLEADER);
    assert_int_equal(request(&h, 3, RAFT_EV_REMOVE, 1, 0), FERRY_ENOTLEADER);
    h_free(&h);
}

/* A voter whose promotion has not reached it (it still sees itself as a
 * learner) does not campaign, but it votes, and its target priority decays
 * like everyone's while no leader is heard from. Here the only high-priority
 * node, the leader, dies right after promoting node 4 while cut off from it:
 * 1 and 2 (priority 1) need node 4's vote for a quorum of the four voters, and
 * node 4 must not keep refusing them at the dead leader's priority. */
static void test_stale_learner_target_decays(void **state)
{
    (void)state;
    int prio[3] = {1, 1, 3};
    struct hcluster h;
    h_init(&h, 3, prio, NULL);
    h_run(&h, 1000);
    assert_int_equal(h_leader(&h), 3);
    struct raft_config c = *raft_config(h.n[3].r);
    c.nodes[c.n++] = (struct raft_node){4, RAFT_LEARNER, 1};
    h_spawn(&h, 4, &c);
    assert_int_equal(request(&h, 3, RAFT_EV_ADD_LEARNER, 4, 1), 0);
    h_run(&h, 200);
    assert_int_equal(raft_last_index(h.n[4].r), raft_last_index(h.n[3].r));
    /* The promotion commits on 1, 2 and 3 but never reaches 4. */
    h.cut[3][4] = h.cut[4][3] = 1;
    assert_int_equal(request(&h, 3, RAFT_EV_PROMOTE, 4, 0), 0);
    h_run(&h, 50);
    assert_int_equal(raft_commit_index(h.n[3].r), raft_last_index(h.n[3].r));
    assert_int_equal(raft_config_find(raft_config(h.n[1].r), 4)->role, RAFT_VOTER);
    assert_int_equal(raft_config_find(raft_config(h.n[4].r), 4)->role, RAFT_LEARNER);
    h.n[3].down = 1;
    h_run(&h, 3000);
    int l = h_leader(&h);
    assert_true(l == 1 || l == 2);
    assert_int_equal(raft_config_find(raft_config(h.n[4].r), 4)->role, RAFT_VOTER);
    assert_int_equal(raft_leader(h.n[4].r), (uint64_t)l);
    h_free(&h);
}

/* A leader appends its own removal, is cut off before replicating it and steps
 * down (check-quorum). Its log is now the only up-to-date one, so it refuses
 * every other candidate, and with one of the four voters down nobody else can
 * reach a quorum of the old configuration. It must campaign itself - in its
 * latest configuration, not counting itself - commit its removal and step
 * down, after which the rest elect a leader among themselves. */
static void test_pending_removal_campaigns(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 4, NULL, NULL);
    h_run(&h, 1000);
    int l = h_leader(&h);
    assert_true(l > 0);
    int d = l == 1 ? 2 : 1; /* a follower that goes down for good */
    h.n[d].down = 1;
    h_isolate(&h, l, 1);
    assert_int_equal(request(&h, l, RAFT_EV_REMOVE, (uint64_t)l, 0), 0);
    uint64_t removal = raft_config_index(h.n[l].r);
    h_run(&h, 500);
    assert_int_not_equal(raft_role(h.n[l].r), RAFT_LEADER);
    assert_true(raft_commit_index(h.n[l].r) < removal);
    h_isolate(&h, l, 0);
    h_run(&h, 5000);
    int l2 = h_leader(&h);
    assert_true(l2 > 0 && l2 != l && l2 != d);
    assert_int_equal(raft_config_voters(raft_config(h.n[l2].r)), 3);
    assert_null(raft_config_find(raft_config(h.n[l2].r), (uint64_t)l));
    assert_true(raft_commit_index(h.n[l2].r) >= removal);
    h_free(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_learner_then_promote),
        cmocka_unit_test(test_joining_node_waits_to_be_added),
        cmocka_unit_test(test_remove_leader_steps_down),
        cmocka_unit_test(test_leadership_transfer),
        cmocka_unit_test(test_transfer_times_out),
        cmocka_unit_test(test_witness_hand_over),
        cmocka_unit_test(test_witness_never_serves),
        cmocka_unit_test(test_stale_learner_target_decays),
        cmocka_unit_test(test_pending_removal_campaigns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
