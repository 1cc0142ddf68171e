/* test_broker_channel.c - channels: event ids, capacity, TTL, subscription
 * starts, live delivery at commit, backpressure, transient events, durable
 * subscriptions (cursor, window, resume after restart, EBUSY), deletes. */
#include "test_broker_fixture.h"

#include <sqlite3.h>

static int history_count(struct fixture *f, const char *state)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT count(*) FROM history WHERE state = ?1", -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static uint64_t publish(struct fixture *f, const char *ch, const char *payload)
{
    struct broker_result r =
        fx_do(f, cmd_msg(BROKER_CMD_PUBLISH, ch, payload, f->now, BROKER_CMDF_AUTO_CREATE));
    assert_int_equal(r.status, 0);
    return r.id;
}

static uint64_t subscribe(struct fixture *f, struct recorder *r, const char *ch, int start,
                          uint64_t from, const char *durable, uint32_t window, uint64_t *next)
{
    uint64_t sub = 0, nx = 0;
    struct ferry_err err;
    int rc = broker_subscribe(r->c, ch, start, from, durable, window, &sub, &nx, &err);
    if (rc != 0)
        fail_msg("subscribe: %s", err.msg);
    if (next)
        *next = nx;
    return sub;
}

static void assert_ids(const struct recorder *r, uint64_t first, uint64_t last)
{
    assert_int_equal(r->n, last - first + 1);
    for (size_t i = 0; i < r->n; i++)
        assert_int_equal(r->msgs[i].id, first + i);
}

static void test_event_ids_per_channel_never_reused(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    for (uint64_t i = 1; i <= 5; i++)
        assert_int_equal(publish(&f, "a", "x"), i);
    assert_int_equal(publish(&f, "b", "y"), 1);
    assert_int_equal(publish(&f, "a", "x"), 6);
    /* Even after every event is gone (delete by capacity), ids go on. */
    struct broker_result r = fx_do(&f, cmd_create(BROKER_CHANNEL, "c", 1, 0, 0, NULL));
    assert_int_equal(r.status, 0);
    assert_int_equal(publish(&f, "c", "1"), 1);
    assert_int_equal(publish(&f, "c", "2"), 2);
    fx_reopen(&f);
    assert_int_equal(publish(&f, "a", "x"), 7);
    assert_int_equal(publish(&f, "c", "3"), 3);
    struct broker_info info;
    assert_int_equal(broker_info(f.b, "c", f.now, &info, NULL), 0);
    assert_int_equal(info.count, 1);
    assert_int_equal(info.first_id, 3);
    assert_int_equal(info.last_id, 3);
    fx_teardown(&f);
}

static void test_capacity_drops_oldest(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    fx_do(&f, cmd_create(BROKER_CHANNEL, "news", 3, 0, 0, NULL));
    for (int i = 1; i <= 5; i++) {
        char p[8];
        snprintf(p, sizeof p, "e%d", i);
        publish(&f, "news", p);
    }
    struct broker_info info;
    assert_int_equal(broker_info(f.b, "news", f.now, &info, NULL), 0);
    assert_int_equal(info.count, 3);
    assert_int_equal(info.first_id, 3);
    assert_int_equal(info.last_id, 5);
    assert_int_equal(history_count(&f, "dropped"), 2);
    struct recorder r;
    rec_open(&f, &r);
    subscribe(&f, &r, "news", 2, 0, NULL, 0, NULL);
    fx_pump(&f);
    assert_ids(&r, 3, 5);
    assert_string_equal(r.msgs[0].payload, "e3");
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

static void test_ttl_expired_neither_delivered_nor_counted(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    fx_do(&f, cmd_create(BROKER_CHANNEL, "tick", 0, 100, 0, NULL));
    f.now = 1000;
    publish(&f, "tick", "old");
    f.now = 1050;
    publish(&f, "tick", "mid");
    f.now = 1200;
    publish(&f, "tick", "new");
    f.now = 1160; /* "old" (qts 1000) expired at 1100, "mid" at 1150 */
    assert_int_equal(fx_count(&f, "tick"), 1);
    assert_true(broker_expire_due(f.b, f.now));
    assert_false(broker_expire_due(f.b, 1099));
    struct recorder r;
    rec_open(&f, &r);
    subscribe(&f, &r, "tick", 2, 0, NULL, 0, NULL);
    fx_pump(&f);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.msgs[0].id, 3);
    /* EXPIRE removes them for good, with history. */
    struct broker_result res = fx_do(&f, cmd_make(BROKER_CMD_EXPIRE, NULL, 1160));
    assert_int_equal(res.status, 0);
    assert_int_equal(history_count(&f, "expired"), 2);
    struct broker_info info;
    assert_int_equal(broker_info(f.b, "tick", f.now, &info, NULL), 0);
    assert_int_equal(info.count, 1);
    assert_int_equal(info.first_id, 3);
    assert_false(broker_expire_due(f.b, 1160));
    assert_true(broker_expire_due(f.b, 1300));
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

static void test_subscribe_starts(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    fx_do(&f, cmd_create(BROKER_CHANNEL, "s", 8, 0, 0, NULL));
    for (int i = 0; i < 10; i++)
        publish(&f, "s", "x"); /* ids 1..10, 3..10 retained */
    struct recorder newr, from, older, oldest;
    rec_open(&f, &newr);
    rec_open(&f, &from);
    rec_open(&f, &older);
    rec_open(&f, &oldest);
    uint64_t next;
    subscribe(&f, &newr, "s", 0, 0, NULL, 0, &next);
    assert_int_equal(next, 11);
    subscribe(&f, &from, "s", 1, 6, NULL, 0, &next);
    assert_int_equal(next, 6);
    subscribe(&f, &older, "s", 1, 1, NULL, 0, &next);
    assert_int_equal(next, 3);
    subscribe(&f, &oldest, "s", 2, 0, NULL, 0, &next);
    assert_int_equal(next, 3);
    fx_pump(&f);
    assert_int_equal(newr.n, 0);
    assert_ids(&from, 6, 10);
    assert_ids(&older, 3, 10);
    assert_ids(&oldest, 3, 10);
    publish(&f, "s", "live");
    assert_ids(&newr, 11, 11);
    assert_string_equal(newr.msgs[0].payload, "live");
    assert_ids(&from, 6, 11);
    uint64_t sub;
    struct ferry_err err;
    assert_int_equal(broker_subscribe(newr.c, "s", 9, 0, NULL, 0, &sub, &next, &err), FERRY_EINVAL);
    assert_int_equal(broker_subscribe(newr.c, "nope", 0, 0, NULL, 0, &sub, &next, &err),
                     FERRY_ENOTFOUND);
    struct recorder *all[] = {&newr, &from, &older, &oldest};
    for (int i = 0; i < 4; i++) {
        rec_close_and_return(&f, all[i]);
        rec_free(all[i]);
    }
    fx_teardown(&f);
}

static void test_live_delivery_at_commit_without_pump(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    publish(&f, "live", "first");
    struct recorder r;
    rec_open(&f, &r);
    uint64_t sub = subscribe(&f, &r, "live", 0, 0, NULL, 0, NULL);
    struct broker_cmd cmds[3] = {
        cmd_msg(BROKER_CMD_PUBLISH, "live", "a", f.now, 0),
        cmd_msg(BROKER_CMD_PUBLISH, "live", "b", f.now, 0),
        cmd_msg(BROKER_CMD_PUBLISH, "live", "c", f.now, 0),
    };
    struct broker_result res[3];
    assert_int_equal(fx_apply(&f, cmds, 3, res), 0);
    assert_ids(&r, 2, 4);
    assert_int_equal(r.msgs[0].handle, sub);
    assert_string_equal(r.msgs[2].payload, "c");
    assert_int_equal(r.msgs[1].ts, f.now);
    assert_int_equal(broker_pump(f.b, f.now), 0);
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

static void test_backpressure_resumes_in_order_without_gaps(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    f.cfg.pump_batch = 4; /* force several pump rounds */
    fx_reopen(&f);
    publish(&f, "bp", "0");
    struct recorder r;
    rec_open(&f, &r);
    subscribe(&f, &r, "bp", 0, 0, NULL, 0, NULL);
    r.busy_after = 3;
    struct broker_cmd cmds[10];
    for (int i = 0; i < 10; i++)
        cmds[i] = cmd_msg(BROKER_CMD_PUBLISH, "bp", "p", f.now, 0);
    assert_int_equal(fx_apply(&f, cmds, 10, NULL), 0);
    assert_ids(&r, 2, 4);
    /* Blocked: the pump offers nothing, later publishes are not offered either. */
    assert_int_equal(broker_pump(f.b, f.now), 0);
    assert_int_equal(fx_apply(&f, cmds, 5, NULL), 0);
    assert_int_equal(r.n, 3);
    r.busy_after = -1;
    broker_client_writable(r.c);
    assert_int_equal(broker_pump(f.b, f.now), 1); /* more than one batch of 4 */
    fx_pump(&f);
    assert_ids(&r, 2, 16);
    /* Caught up again: the next publish is live. */
    publish(&f, "bp", "z");
    assert_ids(&r, 2, 17);
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

static void test_transient_only_to_caught_up(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    publish(&f, "t", "stored");
    struct recorder live, behind;
    rec_open(&f, &live);
    rec_open(&f, &behind);
    subscribe(&f, &live, "t", 0, 0, NULL, 0, NULL);
    subscribe(&f, &behind, "t", 2, 0, NULL, 0, NULL); /* has event 1 to catch up on */
    struct ferry_err err;
    assert_int_equal(broker_publish_transient(f.b, "t", 42, (const uint8_t *)"hb", 2, &err), 0);
    assert_int_equal(live.n, 1);
    assert_int_equal(live.msgs[0].id, 0);
    assert_int_equal(live.msgs[0].transient, 1);
    assert_int_equal(live.msgs[0].ts, 42);
    assert_string_equal(live.msgs[0].payload, "hb");
    assert_int_equal(behind.n, 0);
    assert_int_equal(broker_publish_transient(f.b, "missing", 42, (const uint8_t *)"x", 1, &err),
                     FERRY_ENOTFOUND);
    fx_do(&f, cmd_create(BROKER_QUEUE, "q", 0, 0, 0, NULL));
    assert_int_equal(broker_publish_transient(f.b, "q", 42, (const uint8_t *)"x", 1, &err),
                     FERRY_EWRONGTYPE);
    /* Never stored: a new oldest-subscriber sees only the persistent event. */
    fx_pump(&f);
    assert_ids(&behind, 1, 1);
    rec_close_and_return(&f, &live);
    rec_close_and_return(&f, &behind);
    rec_free(&live);
    rec_free(&behind);
    fx_teardown(&f);
}

static void ack(struct fixture *f, struct recorder *r, uint64_t sub, uint64_t id)
{
    struct broker_cmd c;
    struct ferry_err err;
    assert_int_equal(broker_sub_ack(r->c, sub, id, f->now, &c, &err), 0);
    struct broker_result res = fx_do(f, c);
    assert_int_equal(res.status, 0);
}

static void test_durable_cursor_window_and_resume(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    publish(&f, "d", "before");
    struct broker_result res =
        fx_do(&f, cmd_id(BROKER_CMD_DURABLE_CREATE, "d", "r1", UINT64_MAX, f.now));
    assert_int_equal(res.status, 0);
    assert_int_equal(res.id, 1); /* cursor = last event at creation */
    /* Creating it again keeps the cursor. */
    res = fx_do(&f, cmd_id(BROKER_CMD_DURABLE_CREATE, "d", "r1", 0, f.now));
    assert_int_equal(res.id, 1);
    assert_true(broker_durable_exists(f.b, "d", "r1"));
    struct recorder r, other;
    rec_open(&f, &r);
    rec_open(&f, &other);
    uint64_t next;
    uint64_t sub = subscribe(&f, &r, "d", 3, 0, "r1", 5, &next);
    assert_int_equal(next, 2);
    uint64_t s2;
    struct ferry_err err;
    assert_int_equal(broker_subscribe(other.c, "d", 3, 0, "r1", 0, &s2, &next, &err), FERRY_EBUSY);
    assert_non_null(strstr(err.msg, "r1"));
    for (int i = 0; i < 10; i++)
        publish(&f, "d", "e"); /* ids 2..11 */
    assert_ids(&r, 2, 6);      /* window 5 beyond cursor 1 */
    fx_pump(&f);
    assert_int_equal(r.n, 5);
    struct broker_info info;
    assert_int_equal(broker_info(f.b, "d", f.now, &info, NULL), 0);
    assert_int_equal(info.unacked, 5);
    struct broker_cmd c;
    assert_int_equal(broker_sub_ack(r.c, sub, 7, f.now, &c, &err), FERRY_EINVAL);
    ack(&f, &r, sub, 4);
    fx_pump(&f);
    assert_ids(&r, 2, 9);
    /* Disconnect, restart, resume after the cursor (4). */
    rec_close_and_return(&f, &r);
    rec_free(&r);
    rec_close_and_return(&f, &other);
    rec_free(&other);
    fx_reopen(&f);
    rec_open(&f, &r);
    sub = subscribe(&f, &r, "d", 3, 0, "r1", 100, &next);
    assert_int_equal(next, 5);
    fx_pump(&f);
    assert_ids(&r, 5, 11);
    /* Acks only advance. */
    res = fx_do(&f, cmd_id(BROKER_CMD_DURABLE_ACK, "d", "r1", 3, f.now));
    assert_int_equal(res.status, 0);
    assert_int_equal(res.id, 4);
    res = fx_do(&f, cmd_id(BROKER_CMD_DURABLE_ACK, "d", "r1", 99, f.now));
    assert_int_equal(res.status, FERRY_EINVAL);
    res = fx_do(&f, cmd_id(BROKER_CMD_DURABLE_ACK, "d", "nobody", 1, f.now));
    assert_int_equal(res.status, FERRY_ENOTFOUND);
    /* A non-durable subscription takes no acks. */
    uint64_t plain = subscribe(&f, &r, "d", 0, 0, NULL, 0, NULL);
    assert_int_equal(broker_sub_ack(r.c, plain, 1, f.now, &c, &err), FERRY_EINVAL);
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

static void test_durable_subscribe_requires_existing(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    publish(&f, "d", "x");
    struct recorder r;
    rec_open(&f, &r);
    uint64_t sub, next;
    struct ferry_err err;
    assert_int_equal(broker_subscribe(r.c, "d", 3, 0, "ghost", 0, &sub, &next, &err),
                     FERRY_ENOTFOUND);
    assert_non_null(strstr(err.msg, "ghost"));
    /* DURABLE_CREATE with auto-create makes the channel too. */
    struct broker_cmd c = cmd_id(BROKER_CMD_DURABLE_CREATE, "fresh", "r", UINT64_MAX, f.now);
    struct broker_result res = fx_do(&f, c);
    assert_int_equal(res.status, FERRY_ENOTFOUND);
    c.flags = BROKER_CMDF_AUTO_CREATE;
    res = fx_do(&f, c);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.id, 0);
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

static void test_delete_ends_subscriptions(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    publish(&f, "gone", "x");
    fx_do(&f, cmd_id(BROKER_CMD_DURABLE_CREATE, "gone", "dur", 0, f.now));
    struct recorder r;
    rec_open(&f, &r);
    uint64_t s1 = subscribe(&f, &r, "gone", 2, 0, NULL, 0, NULL);
    uint64_t s2 = subscribe(&f, &r, "gone", 3, 0, "dur", 0, NULL);
    struct broker_result res = fx_do(&f, cmd_make(BROKER_CMD_DELETE, "gone", f.now));
    assert_int_equal(res.status, 0);
    assert_int_equal(r.nends, 2);
    assert_int_equal(r.ends[0].handle, s1);
    assert_int_equal(r.ends[1].handle, s2);
    assert_int_equal(r.ends[0].code, FERRY_ENOTFOUND);
    assert_non_null(strstr(r.ends[0].msg, "'gone' was deleted"));
    struct ferry_err err;
    assert_int_equal(broker_unsubscribe(r.c, s1, &err), FERRY_ENOTFOUND);
    enum broker_kind kind;
    assert_int_equal(broker_lookup(f.b, "gone", &kind), FERRY_ENOTFOUND);
    assert_false(broker_durable_exists(f.b, "gone", "dur"));
    assert_int_equal(history_count(&f, "deleted"), 1);
    /* Recreated, it starts again from event id 1. */
    assert_int_equal(publish(&f, "gone", "y"), 1);
    /* Deleting a durable ends its live subscriber only. */
    fx_do(&f, cmd_id(BROKER_CMD_DURABLE_CREATE, "gone", "dur", 0, f.now));
    uint64_t s3 = subscribe(&f, &r, "gone", 3, 0, "dur", 0, NULL);
    uint64_t s4 = subscribe(&f, &r, "gone", 0, 0, NULL, 0, NULL);
    res = fx_do(&f, cmd_id(BROKER_CMD_DURABLE_DELETE, "gone", "dur", 0, f.now));
    assert_int_equal(res.status, 0);
    assert_int_equal(r.nends, 3);
    assert_int_equal(r.ends[2].handle, s3);
    assert_non_null(strstr(r.ends[2].msg, "durable subscription 'dur'"));
    assert_int_equal(broker_unsubscribe(r.c, s4, &err), 0);
    res = fx_do(&f, cmd_make(BROKER_CMD_DELETE, "gone", f.now));
    res = fx_do(&f, cmd_make(BROKER_CMD_DELETE, "gone", f.now));
    assert_int_equal(res.status, FERRY_ENOTFOUND);
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_ids_per_channel_never_reused),
        cmocka_unit_test(test_capacity_drops_oldest),
        cmocka_unit_test(test_ttl_expired_neither_delivered_nor_counted),
        cmocka_unit_test(test_subscribe_starts),
        cmocka_unit_test(test_live_delivery_at_commit_without_pump),
        cmocka_unit_test(test_backpressure_resumes_in_order_without_gaps),
        cmocka_unit_test(test_transient_only_to_caught_up),
        cmocka_unit_test(test_durable_cursor_window_and_resume),
        cmocka_unit_test(test_durable_subscribe_requires_existing),
        cmocka_unit_test(test_delete_ends_subscriptions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
