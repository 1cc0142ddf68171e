/* test_raft_replication.c - raft/core replication and commit: the Figure 8
 * rule, the leader's own durability, durable-only acks, conflict hints,
 * pipelining with flow control, batching, snapshots and chunked install. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "raft_harness.h"

/* Make node 1 of a 3-node cluster leader of `term` with the given log. */
static void make_leader(struct hcluster *h, uint64_t term, const uint64_t *terms, int n)
{
    struct raft_entry es[16];
    for (int i = 0; i < n; i++)
        es[i] = (struct raft_entry){terms[i], (uint64_t)i + 1, RAFT_ENTRY_NORMAL, 0, NULL};
    struct raft_persisted p = {.term = term - 1, .n_entries = (uint32_t)n, .entries = es};
    raft_close(h->n[1].r);
    struct raft_options o = h->o;
    o.id = 1;
    struct raft_config c = {0};
    for (int i = 1; i <= 3; i++)
        c.nodes[c.n++] = (struct raft_node){(uint64_t)i, RAFT_VOTER, 1};
    raft_init(&h->n[1].r, &o, &c, NULL);
    assert_int_equal(raft_restore(h->n[1].r, &p, NULL), 0);
    h->now = 1000;
    h_tick(h, 1);
    h->now = h->n[1].up.deadline_ms;
    h_tick(h, 1); /* pre-vote */
    struct raft_msg m = h_msg(RAFT_MSG_VOTE_RESP, 2, 1, term);
    m.u.vote_resp = (struct raft_msg_vote_resp){1, 1};
    h_recv(h, 1, &m); /* real vote at `term` */
    m.u.vote_resp.pre_vote = 0;
    h_recv(h, 1, &m);
    assert_int_equal(raft_role(h->n[1].r), RAFT_LEADER);
    assert_int_equal(raft_term(h->n[1].r), term);
    h->qn = 0;
}

static void ack(struct hcluster *h, uint64_t from, uint64_t index)
{
    struct raft_msg m = h_msg(RAFT_MSG_APPEND_RESP, from, 1, raft_term(h->n[1].r));
    m.u.append_resp.success = 1;
    m.u.append_resp.index = index;
    m.u.append_resp.last_index = index;
    h_recv(h, 1, &m);
}

/* Figure 8 / §5.4.2: an entry of an earlier term replicated on a majority is
 * not committed by counting; it commits with the first entry of the leader's term. */
static void test_no_commit_of_earlier_term_by_counting(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    for (int i = 1; i <= 3; i++)
        h_isolate(&h, i, 1);
    uint64_t terms[2] = {1, 2};
    make_leader(&h, 4, terms, 2); /* no-op at index 3, term 4 */
    ack(&h, 2, 2);                /* index 2 (term 2) is on 1 and 2: a majority */
    assert_int_equal(raft_commit_index(h.n[1].r), 0);
    ack(&h, 2, 3);
    assert_int_equal(raft_commit_index(h.n[1].r), 3);
    h_free(&h);
}

/* The leader's own entries count toward commit only once its write is durable. */
static void test_leader_counts_itself_only_when_durable(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    for (int i = 1; i <= 3; i++)
        h_isolate(&h, i, 1);
    h.manual_persist = 1;
    uint64_t terms[1] = {1};
    make_leader(&h, 2, terms, 1); /* no-op at 2, not yet durable */
    ack(&h, 2, 2);
    assert_int_equal(raft_commit_index(h.n[1].r), 0);
    struct raft_event ev = {.type = RAFT_EV_PERSISTED};
    ev.u.persisted.index = 2;
    ev.u.persisted.term = 2;
    h_step(&h, 1, &ev);
    assert_int_equal(raft_commit_index(h.n[1].r), 2);
    h_free(&h);
}

/* A follower acknowledges appended entries only after they are durable. */
static void test_follower_acks_after_durable(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    h.manual_persist = 1;
    struct raft_entry es[2] = {{1, 1, RAFT_ENTRY_NOOP, 0, NULL},
                               {1, 2, RAFT_ENTRY_NORMAL, 3, (uint8_t *)"abc"}};
    struct raft_msg m = h_msg(RAFT_MSG_APPEND, 2, 1, 1);
    m.u.append.n_entries = 2;
    m.u.append.entries = es;
    h_recv(&h, 1, &m);
    assert_true(h.n[1].up.flags & RAFT_UPDATE_ENTRIES);
    assert_int_equal(h.n[1].up.persist_from, 1);
    assert_int_equal(h.n[1].up.n_persist, 2);
    assert_int_equal(h_count_msgs(&h, 1, RAFT_MSG_APPEND_RESP), 0);
    struct raft_event ev = {.type = RAFT_EV_PERSISTED};
    ev.u.persisted.index = 2;
    ev.u.persisted.term = 1;
    h_step(&h, 1, &ev);
    assert_int_equal(h_count_msgs(&h, 1, RAFT_MSG_APPEND_RESP), 1);
    assert_int_equal(h.n[1].up.msgs[0].u.append_resp.success, 1);
    assert_int_equal(h.n[1].up.msgs[0].u.append_resp.index, 2);
    h_free(&h);
}

/* A rejection carries the conflicting term and its first index (fast backtracking). */
static void test_conflict_hints(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    struct raft_entry es[6];
    uint64_t terms[6] = {1, 1, 2, 2, 2, 2};
    for (int i = 0; i < 6; i++)
        es[i] = (struct raft_entry){terms[i], (uint64_t)i + 1, RAFT_ENTRY_NORMAL, 0, NULL};
    struct raft_msg m = h_msg(RAFT_MSG_APPEND, 2, 1, 2);
    m.u.append.n_entries = 6;
    m.u.append.entries = es;
    h_recv(&h, 1, &m);
    /* A new leader at term 3 whose log has term 3 at index 6. */
    m = h_msg(RAFT_MSG_APPEND, 3, 1, 3);
    m.u.append.prev_index = 6;
    m.u.append.prev_term = 3;
    h_recv(&h, 1, &m);
    const struct raft_msg_append_resp *a = &h.n[1].up.msgs[0].u.append_resp;
    assert_int_equal(a->success, 0);
    assert_int_equal(a->index, 6);
    assert_int_equal(a->conflict_term, 2);
    assert_int_equal(a->conflict_index, 3);
    /* Beyond the log: the hint is last + 1. */
    m.u.append.prev_index = 40;
    h_recv(&h, 1, &m);
    assert_int_equal(h.n[1].up.msgs[0].u.append_resp.conflict_index, 7);
    assert_int_equal(h.n[1].up.msgs[0].u.append_resp.conflict_term, 0);
    h_free(&h);
}

/* The leader uses a hint to skip a whole term in one round trip. */
static void test_leader_backtracks_by_term(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    for (int i = 1; i <= 3; i++)
        h_isolate(&h, i, 1);
    uint64_t terms[6] = {1, 1, 1, 3, 3, 3};
    make_leader(&h, 5, terms, 6);
    struct raft_msg m = h_msg(RAFT_MSG_APPEND_RESP, 2, 1, 5);
    m.u.append_resp.index = 6; /* the probe at prev 6 failed */
    m.u.append_resp.last_index = 9;
    m.u.append_resp.conflict_term = 2; /* the follower has term 2 from index 4 */
    m.u.append_resp.conflict_index = 4;
    h_recv(&h, 1, &m);
    assert_int_equal(h_count_msgs(&h, 1, RAFT_MSG_APPEND), 1);
    /* The leader has no term 2: it resends from the follower's first index of it. */
    assert_int_equal(h.n[1].up.msgs[0].u.append.prev_index, 3);
    h_free(&h);
}

/* Pipelining bounded by max_inflight_msgs, batches bounded by max_entries_per_msg. */
static void test_pipelining_and_flow_control(void **state)
{
    (void)state;
    struct raft_options o;
    h_options(&o);
    o.max_inflight_msgs = 3;
    o.max_entries_per_msg = 2;
    struct hcluster h;
    h_init(&h, 3, NULL, &o);
    h_run(&h, 500);
    int l = h_leader(&h);
    int f = l == 1 ? 2 : 1;
    h.cut[f][l] = 1; /* acks from f are lost: its pipeline fills */
    for (uint32_t i = 0; i < h.qn; i++)
        buf_free(&h.q[i]);
    h.qn = 0;
    for (int i = 0; i < 20; i++)
        h_propose(&h, l, "0123456789");
    int sent = 0;
    for (uint32_t k = 0; k < h.qn; k++) {
        struct raft_msg m;
        assert_int_equal(raft_msg_decode(h.q[k].data, h.q[k].len, &m, NULL), 0);
        if (m.type == RAFT_MSG_APPEND && m.to == (uint64_t)f && m.u.append.n_entries) {
            sent++;
            assert_true(m.u.append.n_entries <= 2);
        }
        raft_msg_release(&m);
    }
    assert_int_equal(sent, 3);
    h_free(&h);
}

/* Batching: a follower catching up gets many entries per message. */
static void test_batching_many_entries(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL);
    h_run(&h, 500);
    int l = h_leader(&h);
    int f = l == 1 ? 2 : 1;
    h.n[f].down = 1;
    for (int i = 0; i < 40; i++)
        h_propose(&h, l, "batch");
    h_run(&h, 20);
    h.n[f].down = 0;
    h.max_batch = 0;
    h_run(&h, 200);
    assert_int_equal(h.max_batch, 40);
    assert_int_equal(raft_last_index(h.n[f].r), raft_last_index(h.n[l].r));
    assert_int_equal(raft_commit_index(h.n[f].r), raft_commit_index(h.n[l].r));
    h_free(&h);
}

/* Snapshots: every snapshot_threshold applied entries the core asks for one;
 * once saved, the log is compacted leaving snapshot_trailing entries. */
static void test_snapshot_compaction(void **state)
{
    (void)state;
    struct raft_options o;
    h_options(&o);
    o.snapshot_threshold = 10;
    o.snapshot_trailing = 3;
    struct hcluster h;
    h_init(&h, 3, NULL, &o);
    h_run(&h, 500);
    int l = h_leader(&h);
    for (int i = 0; i < 12; i++)
        h_propose(&h, l, "s");
    h_run(&h, 50);
    uint64_t si = raft_snapshot(h.n[l].r)->index;
    assert_true(si >= 10);
    assert_int_equal(raft_first_index(h.n[l].r), si - 3);
    assert_null(raft_entry_at(h.n[l].r, si - 3));
    assert_non_null(raft_entry_at(h.n[l].r, si - 2));
    h_free(&h);
}

/* RAFT_EV_SNAPSHOT_NOW asks for a snapshot at the applied index outside the
 * schedule, on any role; nothing when the newest snapshot is already there;
 * EBUSY while one is being taken. */
static void test_snapshot_now(void **state)
{
    (void)state;
    struct hcluster h;
    h_init(&h, 3, NULL, NULL); /* snapshot_threshold 1000: none by schedule */
    h_run(&h, 500);
    int l = h_leader(&h);
    int f = l == 1 ? 2 : 1;
    for (int i = 0; i < 5; i++)
        h_propose(&h, l, "n");
    h_run(&h, 50);
    assert_int_equal(raft_snapshot(h.n[l].r)->index, 0);
    uint64_t applied = raft_applied_index(h.n[l].r);
    assert_true(applied >= 6);
    struct raft_event ev = {.type = RAFT_EV_SNAPSHOT_NOW};
    ev.now_ms = h.now;
    /* Stepped by hand so the snapshot stays pending. */
    assert_int_equal(raft_step(h.n[l].r, &ev, &h.n[l].up), 0);
    assert_true(h.n[l].up.flags & RAFT_UPDATE_TAKE_SNAPSHOT);
    assert_int_equal(h.n[l].up.take_snapshot, applied);
    assert_int_equal(raft_step(h.n[l].r, &ev, &h.n[l].up), FERRY_EBUSY);
    assert_false(h.n[l].up.flags & RAFT_UPDATE_TAKE_SNAPSHOT);
    struct raft_event saved = {.type = RAFT_EV_SNAPSHOT_SAVED};
    saved.u.snapshot_saved.index = applied;
    saved.u.snapshot_saved.size = h.snapshot_size;
    assert_int_equal(h_step(&h, l, &saved), 0);
    assert_int_equal(raft_snapshot(h.n[l].r)->index, applied);
    /* Nothing applied since: nothing to take. */
    assert_int_equal(h_step(&h, l, &ev), 0);
    assert_false(h.n[l].up.flags & RAFT_UPDATE_TAKE_SNAPSHOT);
    /* A follower snapshots itself too (the harness saves at once). */
    h_run(&h, 50);
    assert_int_equal(h_step(&h, f, &ev), 0);
    assert_int_equal(raft_snapshot(h.n[f].r)->index, raft_applied_index(h.n[f].r));
    assert_true(raft_snapshot(h.n[f].r)->index >= applied);
    h_free(&h);
}

/* A follower too far behind gets the snapshot in chunks and installs it. */
static void test_chunked_snapshot_install(void **state)
{
    (void)state;
    struct raft_options o;
    h_options(&o);
    o.snapshot_threshold = 10;
    o.snapshot_trailing = 2;
    o.snapshot_chunk_bytes = 16;
    struct hcluster h;
    h_init(&h, 3, NULL, &o);
    h.snapshot_size = 100;
    h_run(&h, 500);
    int l = h_leader(&h);
    int f = l == 1 ? 2 : 1;
    h.n[f].down = 1;
    for (int i = 0; i < 30; i++)
        h_propose(&h, l, "catch me");
    h_run(&h, 50);
    assert_true(raft_first_index(h.n[l].r) > raft_last_index(h.n[f].r));
    h.n[f].down = 0;
    h_run(&h, 300);
    assert_int_equal(h.n[f].installs, 1);
    assert_int_equal(h.n[f].chunks, 7); /* 100 bytes in 16-byte chunks */
    assert_true(raft_snapshot(h.n[f].r)->index >= 10);
    assert_int_equal(raft_last_index(h.n[f].r), raft_last_index(h.n[l].r));
    assert_int_equal(raft_commit_index(h.n[f].r), raft_commit_index(h.n[l].r));
    h_free(&h);
}

/* A restore rebuilds term, vote, snapshot and log; a gap is corruption. */
static void test_restore(void **state)
{
    (void)state;
    struct raft_options o;
    h_options(&o);
    o.id = 1;
    struct raft_config c = {0};
    c.nodes[c.n++] = (struct raft_node){1, RAFT_VOTER, 1};
    struct raft *r;
    raft_init(&r, &o, &c, NULL);
    struct raft_entry es[3] = {{2, 8, 1, 0, NULL}, {2, 9, 1, 0, NULL}, {3, 10, 1, 0, NULL}};
    struct raft_persisted p = {.term = 3, .vote = 1, .n_entries = 3, .entries = es};
    p.snapshot.index = 8;
    p.snapshot.term = 2;
    p.snapshot.config = c;
    assert_int_equal(raft_restore(r, &p, NULL), 0);
    assert_int_equal(raft_last_index(r), 10);
    assert_int_equal(raft_commit_index(r), 8);
    assert_int_equal(raft_term_at(r, 9), 2);
    raft_close(r);
    raft_init(&r, &o, &c, NULL);
    p.snapshot.index = 5;
    struct ferry_err err;
    assert_int_equal(raft_restore(r, &p, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "after the snapshot"));
    raft_close(r);
}

/* Allocation failures anywhere in a busy cluster: every step returns 0 or
 * FERRY_ENOMEM, nothing crashes or leaks, and a failed core stays failed. */
static void test_allocation_failures(void **state)
{
    (void)state;
    for (long countdown = 0; countdown < 600; countdown += 13) {
        struct hcluster h;
        h_init(&h, 3, NULL, NULL);
        h_run(&h, 300);
        alloc_set_fault(countdown, -1);
        for (int i = 0; i < 10; i++) {
            int l = h_leader(&h);
            if (l > 0) {
                int rc = h_propose(&h, l, "under pressure");
                assert_true(rc == 0 || rc == FERRY_ENOMEM || rc == FERRY_EBUSY);
            }
            h_run(&h, 20);
        }
        int failed = 0;
        for (int i = 1; i <= 3; i++) {
            struct raft_event ev = {.type = RAFT_EV_TICK};
            ev.now_ms = h.now;
            int rc = raft_step(h.n[i].r, &ev, &h.n[i].up);
            assert_true(rc == 0 || rc == FERRY_ENOMEM);
            failed += rc == FERRY_ENOMEM;
        }
        alloc_set_fault(-1, 0);
        for (int i = 1; i <= 3; i++) {
            struct raft_event ev = {.type = RAFT_EV_TICK};
            ev.now_ms = h.now;
            int rc = raft_step(h.n[i].r, &ev, &h.n[i].up);
            if (rc == FERRY_ENOMEM)
                failed--;
        }
        assert_int_equal(failed, 0);
        h_free(&h);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_commit_of_earlier_term_by_counting),
        cmocka_unit_test(test_leader_counts_itself_only_when_durable),
        cmocka_unit_test(test_follower_acks_after_durable),
        cmocka_unit_test(test_conflict_hints),
        cmocka_unit_test(test_leader_backtracks_by_term),
        cmocka_unit_test(test_pipelining_and_flow_control),
        cmocka_unit_test(test_batching_many_entries),
        cmocka_unit_test(test_snapshot_compaction),
        cmocka_unit_test(test_snapshot_now),
        cmocka_unit_test(test_chunked_snapshot_install),
        cmocka_unit_test(test_restore),
        cmocka_unit_test(test_allocation_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
