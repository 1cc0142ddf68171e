/* test_broker_dedup.c - the dedup table of idempotent producers: a re-sent
 * publish or push is answered with its first outcome and stored once; the
 * table is bounded (ring, producer count, idle time), durable, in snapshots
 * and in the digest, and a failed batch leaves no trace in it.
 */
#include "test_broker_fixture.h"

#include "store/store.h"

static const uint8_t PID_A[16] = {0xa1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static const uint8_t PID_B[16] = {0xb2, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

static struct broker_cmd pub(uint8_t type, const char *name, const uint8_t *pid, uint64_t seq,
                             uint64_t ts)
{
    struct broker_cmd c = cmd_msg(type, name, "payload", ts, BROKER_CMDF_AUTO_CREATE);
    if (pid)
        memcpy(c.producer_id, pid, 16);
    c.producer_seq = seq;
    return c;
}

static uint64_t stored(struct fixture *f)
{
    struct broker_stats s;
    broker_stats(f->b, &s);
    return s.stored_messages;
}

static uint64_t producers(struct fixture *f)
{
    struct broker_stats s;
    broker_stats(f->b, &s);
    return s.producers;
}

static void test_duplicate_publish_and_push_stored_once(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    struct broker_result r1 = fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", PID_A, 1, f.now));
    assert_int_equal(r1.status, 0);
    assert_int_equal(r1.duplicate, 0);
    struct broker_result r2 = fx_do(&f, pub(BROKER_CMD_PUSH, "q", PID_A, 2, f.now));
    assert_int_equal(r2.status, 0);
    assert_int_equal(stored(&f), 2);
    /* Both again, as after a failover: the first outcomes, nothing stored. */
    struct broker_result d1 = fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", PID_A, 1, f.now));
    struct broker_result d2 = fx_do(&f, pub(BROKER_CMD_PUSH, "q", PID_A, 2, f.now));
    assert_int_equal(d1.status, 0);
    assert_int_equal(d1.duplicate, 1);
    assert_int_equal(d1.id, r1.id);
    assert_int_equal(d2.status, 0);
    assert_int_equal(d2.duplicate, 1);
    assert_int_equal(d2.id, r2.id);
    assert_int_equal(stored(&f), 2);
    /* Without a producer nothing is recognised. */
    assert_int_equal(fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", NULL, 0, f.now)).duplicate, 0);
    assert_int_equal(stored(&f), 3);
    /* In one entry, a command and its copy: the copy is the duplicate. */
    struct broker_cmd two[2] = {pub(BROKER_CMD_PUBLISH, "ch", PID_A, 3, f.now),
                                pub(BROKER_CMD_PUBLISH, "ch", PID_A, 3, f.now)};
    struct broker_result rr[2];
    assert_int_equal(fx_apply(&f, two, 2, rr), 0);
    assert_int_equal(rr[0].duplicate, 0);
    assert_int_equal(rr[1].duplicate, 1);
    assert_int_equal(rr[1].id, rr[0].id);
    assert_int_equal(stored(&f), 4);
    fx_teardown(&f);
}

static void test_duplicate_of_a_failure_fails_the_same_way(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    struct broker_cmd c = pub(BROKER_CMD_PUBLISH, "later", PID_A, 1, f.now);
    c.flags = 0; /* auto_create off: unknown channel */
    struct broker_result r = fx_do(&f, c);
    assert_int_equal(r.status, FERRY_ENOTFOUND);
    assert_int_equal(fx_do(&f, cmd_create(BROKER_CHANNEL, "later", 0, 0, 0, NULL)).status, 0);
    /* The channel exists now, but the re-sent publish failed the first time. */
    struct broker_result d = fx_do(&f, c);
    assert_int_equal(d.status, FERRY_ENOTFOUND);
    assert_int_equal(d.duplicate, 1);
    assert_non_null(strstr(d.msg, "duplicate"));
    assert_int_equal(stored(&f), 0);
    /* The next sequence is new and works. */
    c.producer_seq = 2;
    assert_int_equal(fx_do(&f, c).status, 0);
    assert_int_equal(stored(&f), 1);
    fx_teardown(&f);
}

static void test_ring_bounds_what_is_recognised(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    /* Sequences 1..300 with gaps at 290 and 295 (refused before the log). */
    for (uint64_t s = 1; s <= 300; s++)
        if (s != 290 && s != 295)
            assert_int_equal(fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", PID_A, s, f.now)).status, 0);
    uint64_t n = stored(&f);
    assert_int_equal(n, 298);
    /* What follows runs on the ring as written and read back (runs broken by
     * the gaps and by another resource's ids in between). */
    assert_int_equal(fx_do(&f, pub(BROKER_CMD_PUSH, "q", PID_B, 1, f.now)).status, 0);
    fx_reopen(&f);
    n = stored(&f);
    /* Older than the last 256: the outcome is unknown; nothing is stored. */
    struct broker_result old = fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", PID_A, 10, f.now));
    assert_int_equal(old.status, FERRY_ESTATE);
    assert_non_null(strstr(old.msg, "no longer known"));
    assert_int_equal(stored(&f), n);
    /* Within the last 256 and never applied: applied now, once. */
    assert_int_equal(fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", PID_A, 290, f.now)).duplicate, 0);
    assert_int_equal(fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", PID_A, 290, f.now)).duplicate, 1);
    assert_int_equal(stored(&f), n + 1);
    /* The oldest one still in the ring (300 - 255 = 45) is recognised. */
    assert_int_equal(fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", PID_A, 45, f.now)).duplicate, 1);
    assert_int_equal(fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", PID_A, 44, f.now)).status,
                     FERRY_ESTATE);
    /* A failure inside a run of successes is kept through a reopen too. */
    struct broker_cmd nf = pub(BROKER_CMD_PUBLISH, "nochannel", PID_A, 301, f.now);
    nf.flags = 0;
    assert_int_equal(fx_do(&f, nf).status, FERRY_ENOTFOUND);
    assert_int_equal(fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", PID_A, 302, f.now)).status, 0);
    fx_reopen(&f);
    assert_int_equal(fx_do(&f, nf).status, FERRY_ENOTFOUND);
    struct broker_result again = fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", PID_A, 302, f.now));
    assert_int_equal(again.duplicate, 1);
    assert_int_equal(stored(&f), n + 2);
    n = stored(&f);
    /* Another producer's sequence 10 is its own. */
    assert_int_equal(fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", PID_B, 10, f.now)).duplicate, 0);
    assert_int_equal(stored(&f), n + 1);
    fx_teardown(&f);
}

static void test_producer_count_and_idle_time_are_bounded(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    /* PRODUCER_MAX + 1 producers, each a little later than the one before,
     * in one entry: the first is evicted. */
    enum { N = 4097 };
    struct broker_cmd *cmds = calloc(N, sizeof *cmds);
    struct broker_result *res = calloc(N, sizeof *res);
    uint8_t (*pids)[16] = calloc(N, 16);
    for (int i = 0; i < N; i++) {
        memcpy(pids[i], PID_A, 16);
        memcpy(pids[i] + 8, &i, sizeof i);
        cmds[i] = pub(BROKER_CMD_PUBLISH, "ch", pids[i], 1, f.now + (uint64_t)i);
    }
    assert_int_equal(fx_apply(&f, cmds, N, res), 0);
    assert_int_equal(producers(&f), 4096);
    uint64_t n = stored(&f);
    assert_int_equal(fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", pids[1], 1, f.now + N)).duplicate, 1);
    /* The evicted one is new again (and evicts the next oldest, pids[2]). */
    assert_int_equal(fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", pids[0], 1, f.now + N)).duplicate, 0);
    assert_int_equal(stored(&f), n + 1);
    assert_int_equal(producers(&f), 4096);
    /* After an hour unused a producer is forgotten: by its next command... */
    uint64_t later = f.now + N + 3600ull * 1000ull + 1000;
    assert_int_equal(fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", pids[3], 1, later)).duplicate, 0);
    /* ...and all of them by the periodic EXPIRE, except the one used since. */
    fx_do(&f, cmd_make(BROKER_CMD_EXPIRE, NULL, later));
    assert_int_equal(producers(&f), 1);
    fx_reopen(&f); /* the deletions were written */
    assert_int_equal(producers(&f), 1);
    free(cmds);
    free(res);
    free(pids);
    fx_teardown(&f);
}

static void test_table_survives_reopen(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    struct broker_result r = fx_do(&f, pub(BROKER_CMD_PUSH, "q", PID_A, 7, f.now));
    fx_reopen(&f);
    struct broker_result d = fx_do(&f, pub(BROKER_CMD_PUSH, "q", PID_A, 7, f.now));
    assert_int_equal(d.duplicate, 1);
    assert_int_equal(d.id, r.id);
    assert_int_equal(stored(&f), 1);
    fx_teardown(&f);
}

/* ---- snapshots ---- */

struct mem {
    uint8_t *p;
    size_t len, cap;
};

static int mem_write(void *ctx, const void *p, size_t n)
{
    struct mem *m = ctx;
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->p = realloc(m->p, m->cap);
        assert_non_null(m->p);
    }
    memcpy(m->p + m->len, p, n);
    m->len += n;
    return 0;
}

struct rd {
    const uint8_t *p;
    size_t len, off;
};

static int rd_read(void *ctx, void *p, size_t n)
{
    struct rd *r = ctx;
    size_t k = r->len - r->off < n ? r->len - r->off : n;
    memcpy(p, r->p + r->off, k);
    r->off += k;
    return (int)k;
}

static void digest(struct fixture *f, char hex[BROKER_DIGEST_HEX])
{
    struct ferry_err err;
    uint64_t idx, term;
    if (broker_digest(f->b, hex, &idx, &term, &err) != 0)
        fail_msg("digest: %s", err.msg);
}

static void test_snapshot_carries_the_table(void **state)
{
    (void)state;
    struct fixture a, b;
    fx_setup(&a);
    fx_setup(&b);
    struct broker_result r = fx_do(&a, pub(BROKER_CMD_PUBLISH, "ch", PID_A, 5, a.now));
    char before[BROKER_DIGEST_HEX], after[BROKER_DIGEST_HEX];
    digest(&a, before);
    fx_do(&a, pub(BROKER_CMD_PUBLISH, "ch", PID_B, 1, a.now));
    /* a duplicate changes the table's last use only through a new command */
    digest(&a, after);
    assert_string_not_equal(before, after); /* B's row is in the digest */

    struct ferry_err err;
    struct broker_snap *s = NULL;
    struct mem m = {0};
    assert_int_equal(broker_snapshot_begin(a.b, &s, &err), 0);
    assert_int_equal(broker_snapshot_write(s, mem_write, &m, &err), 0);
    broker_snapshot_end(s);
    struct rd in = {m.p, m.len, 0};
    int skipped = -1;
    if (broker_restore(b.b, rd_read, &in, &skipped, &err) != 0)
        fail_msg("restore: %s", err.msg);
    assert_int_equal(skipped, 0);
    char da[BROKER_DIGEST_HEX], db[BROKER_DIGEST_HEX];
    digest(&a, da);
    digest(&b, db);
    assert_string_equal(da, db);
    assert_int_equal(producers(&b), 2);
    /* The restored node recognises the re-sent publish. */
    b.index = a.index;
    struct broker_result d = fx_do(&b, pub(BROKER_CMD_PUBLISH, "ch", PID_A, 5, b.now));
    assert_int_equal(d.duplicate, 1);
    assert_int_equal(d.id, r.id);
    /* A producer record out of order is refused. */
    free(m.p);
    fx_teardown(&a);
    fx_teardown(&b);
}

/* ---- a failed batch ---- */

static void test_failed_batch_leaves_no_trace(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", PID_A, 1, f.now));
    /* Fail the batch at every statement in turn: whatever was applied of it
     * in memory is rolled back with the database, so the publish is still
     * new afterwards and is stored exactly once in the end. */
    int failed = 0;
    for (long at = 0; at < 40; at++) {
        store_fault_inject(13 /* SQLITE_FULL */, at, 1);
        struct broker_cmd c = pub(BROKER_CMD_PUBLISH, "ch", PID_A, 2, f.now);
        struct broker_result r;
        uint64_t index = f.index;
        int rc = fx_apply(&f, &c, 1, &r);
        store_fault_inject(0, -1, 0);
        if (rc == 0) {
            assert_int_equal(r.duplicate, 0); /* the first success is the first apply */
            break;
        }
        failed++;
        f.index = index; /* the entry was not applied: the next try is the same index */
    }
    assert_true(failed > 0);
    assert_int_equal(stored(&f), 2);
    assert_int_equal(fx_do(&f, pub(BROKER_CMD_PUBLISH, "ch", PID_A, 2, f.now)).duplicate, 1);
    assert_int_equal(stored(&f), 2);
    fx_teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duplicate_publish_and_push_stored_once),
        cmocka_unit_test(test_duplicate_of_a_failure_fails_the_same_way),
        cmocka_unit_test(test_ring_bounds_what_is_recognised),
        cmocka_unit_test(test_producer_count_and_idle_time_are_bounded),
        cmocka_unit_test(test_table_survives_reopen),
        cmocka_unit_test(test_snapshot_carries_the_table),
        cmocka_unit_test(test_failed_batch_leaves_no_trace),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
