/* test_broker_queue.c - queues: item ids, prefetch, acks, capacity (EFULL),
 * round-robin, redelivery with delivery counts on close and on NACK,
 * dead-lettering past max_deliveries, TTL, restart rebuilding the ready
 * list, delete ending consumers, settle validation. */
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

static struct broker_result push(struct fixture *f, const char *q, const char *payload)
{
    return fx_do(f, cmd_msg(BROKER_CMD_PUSH, q, payload, f->now, BROKER_CMDF_AUTO_CREATE));
}

static void push_n(struct fixture *f, const char *q, int n)
{
    for (int i = 1; i <= n; i++) {
        char p[16];
        snprintf(p, sizeof p, "item%d", i);
        assert_int_equal(push(f, q, p).status, 0);
    }
}

static uint64_t consume(struct fixture *f, struct recorder *r, const char *q, uint32_t prefetch)
{
    uint64_t id;
    struct ferry_err err;
    int rc = broker_consume(r->c, q, prefetch, &id, &err);
    if (rc != 0)
        fail_msg("consume: %s", err.msg);
    (void)f;
    return id;
}

static void test_push_consume_ack_with_prefetch(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    for (uint64_t i = 1; i <= 5; i++)
        assert_int_equal(push(&f, "orders", "x").id, i);
    struct recorder r;
    rec_open(&f, &r);
    uint64_t con = consume(&f, &r, "orders", 2);
    fx_pump(&f);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.msgs[0].id, 1);
    assert_int_equal(r.msgs[1].id, 2);
    assert_int_equal(r.msgs[0].is_delivery, 1);
    assert_int_equal(r.msgs[0].handle, con);
    assert_int_equal(r.msgs[0].delivery_count, 1);
    struct broker_info info;
    assert_int_equal(broker_info(f.b, "orders", f.now, &info, NULL), 0);
    assert_int_equal(info.count, 5);
    assert_int_equal(info.unacked, 2);
    assert_int_equal(info.clients, 1);
    struct broker_result res = fx_settle(&f, &r, con, 1, 0);
    assert_int_equal(res.status, 0);
    assert_int_equal(res.id, 1);
    fx_pump(&f);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.msgs[2].id, 3);
    assert_int_equal(fx_count(&f, "orders"), 4);
    assert_int_equal(history_count(&f, "consumed"), 1);
    /* Settling an item twice, or one never delivered, is refused. */
    struct broker_cmd c;
    struct ferry_err err;
    assert_int_equal(broker_settle(r.c, con, 1, 0, f.now, &c, &err), FERRY_ENOTFOUND);
    assert_int_equal(broker_settle(r.c, con, 5, 0, f.now, &c, &err), FERRY_ENOTFOUND);
    assert_int_equal(broker_settle(r.c, con + 100, 2, 0, f.now, &c, &err), FERRY_ENOTFOUND);
    /* A pushed item goes straight to a consumer with credit at commit. */
    fx_settle(&f, &r, con, 2, 0);
    fx_settle(&f, &r, con, 3, 0);
    fx_pump(&f);
    assert_int_equal(r.n, 5);
    fx_settle(&f, &r, con, 4, 0);
    assert_int_equal(push(&f, "orders", "live").id, 6);
    assert_int_equal(r.n, 6);
    assert_int_equal(r.msgs[5].id, 6);
    assert_string_equal(r.msgs[5].payload, "live");
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

static void test_capacity_rejects_with_efull(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    fx_do(&f, cmd_create(BROKER_QUEUE, "orders", 2, 0, 0, NULL));
    assert_int_equal(push(&f, "orders", "a").status, 0);
    assert_int_equal(push(&f, "orders", "b").status, 0);
    struct broker_result r = push(&f, "orders", "c");
    assert_int_equal(r.status, FERRY_EFULL);
    assert_string_equal(r.msg, "queue 'orders' is full (capacity 2)");
    assert_int_equal(fx_count(&f, "orders"), 2);
    /* Rejected pushes use no id. */
    fx_do(&f, cmd_id(BROKER_CMD_ACK, "orders", NULL, 1, f.now));
    assert_int_equal(push(&f, "orders", "d").id, 3);
    fx_teardown(&f);
}

static void test_round_robin_between_consumers(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    fx_do(&f, cmd_create(BROKER_QUEUE, "work", 0, 0, 0, NULL));
    struct recorder a, b;
    rec_open(&f, &a);
    rec_open(&f, &b);
    consume(&f, &a, "work", 10);
    consume(&f, &b, "work", 10);
    push_n(&f, "work", 6);
    assert_int_equal(a.n, 3);
    assert_int_equal(b.n, 3);
    for (size_t i = 0; i < 3; i++)
        assert_int_not_equal(a.msgs[i].id % 2, b.msgs[i].id % 2);
    rec_close_and_return(&f, &a);
    rec_close_and_return(&f, &b);
    rec_free(&a);
    rec_free(&b);
    fx_teardown(&f);
}

static void test_redelivery_after_close_counts_deliveries(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    push_n(&f, "orders", 4);
    struct recorder r;
    rec_open(&f, &r);
    consume(&f, &r, "orders", 2);
    fx_pump(&f);
    assert_int_equal(r.n, 2); /* items 1, 2 leased */
    rec_close_and_return(&f, &r);
    rec_free(&r);
    struct recorder r2;
    rec_open(&f, &r2);
    consume(&f, &r2, "orders", 10);
    fx_pump(&f);
    assert_int_equal(r2.n, 4);
    /* Returned items come before newer ones, with their count. */
    assert_int_equal(r2.msgs[0].id, 1);
    assert_int_equal(r2.msgs[0].delivery_count, 2);
    assert_int_equal(r2.msgs[1].id, 2);
    assert_int_equal(r2.msgs[1].delivery_count, 2);
    assert_int_equal(r2.msgs[2].id, 3);
    assert_int_equal(r2.msgs[2].delivery_count, 1);
    rec_close_and_return(&f, &r2);
    rec_free(&r2);
    fx_teardown(&f);
}

static void test_nack_redelivers_before_newer(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    push_n(&f, "orders", 3);
    struct recorder r;
    rec_open(&f, &r);
    uint64_t con = consume(&f, &r, "orders", 1);
    fx_pump(&f);
    assert_int_equal(r.n, 1);
    struct broker_result res = fx_settle(&f, &r, con, 1, 1);
    assert_int_equal(res.status, 0);
    fx_pump(&f);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.msgs[1].id, 1);
    assert_int_equal(r.msgs[1].delivery_count, 2);
    /* broker_cancel turns the lease into a RETURN too. */
    struct buf returns;
    buf_init(&returns);
    struct ferry_err err;
    assert_int_equal(broker_cancel(r.c, con, f.now, &returns, &err), 0);
    assert_true(returns.len > 0);
    struct broker_cmd c;
    size_t used;
    assert_int_equal(broker_cmd_decode(returns.data, returns.len, &c, &used), 0);
    assert_int_equal(c.type, BROKER_CMD_RETURN);
    assert_int_equal(c.id, 1);
    assert_string_equal(c.name, "orders");
    assert_int_equal(broker_cancel(r.c, con, f.now, &returns, &err), FERRY_ENOTFOUND);
    buf_free(&returns);
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

static void test_dead_letter_past_max_deliveries(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    fx_do(&f, cmd_create(BROKER_QUEUE, "jobs", 0, 0, 2, NULL));
    f.now = 5000;
    push(&f, "jobs", "poison");
    push(&f, "jobs", "fine");
    f.now = 6000;
    struct recorder r;
    rec_open(&f, &r);
    uint64_t con = consume(&f, &r, "jobs", 1);
    fx_pump(&f);
    assert_int_equal(r.msgs[0].delivery_count, 1);
    fx_settle(&f, &r, con, 1, 1);
    fx_pump(&f);
    assert_int_equal(r.msgs[1].id, 1);
    assert_int_equal(r.msgs[1].delivery_count, 2);
    struct broker_result res = fx_settle(&f, &r, con, 1, 1);
    assert_int_equal(res.status, 0);
    fx_pump(&f);
    /* Item 1 went to jobs.dlq; the consumer now gets item 2. */
    assert_int_equal(r.msgs[2].id, 2);
    assert_int_equal(history_count(&f, "dead-lettered"), 1);
    struct broker_info info;
    assert_int_equal(broker_info(f.b, "jobs", f.now, &info, NULL), 0);
    assert_int_equal(info.count, 1);
    assert_string_equal(info.dlq, "jobs.dlq");
    assert_int_equal(broker_info(f.b, "jobs.dlq", f.now, &info, NULL), 0);
    assert_int_equal(info.kind, BROKER_QUEUE);
    assert_int_equal(info.count, 1);
    assert_string_equal(info.dlq, ""); /* no dlq of its own */
    struct recorder d;
    rec_open(&f, &d);
    uint64_t dcon = consume(&f, &d, "jobs.dlq", 1);
    fx_pump(&f);
    assert_int_equal(d.n, 1);
    assert_int_equal(d.msgs[0].id, 1);
    assert_string_equal(d.msgs[0].payload, "poison");
    assert_int_equal(d.msgs[0].ts, 5000); /* original timestamp */
    assert_int_equal(d.msgs[0].delivery_count, 1);
    /* In the dlq, past max_deliveries it stays. */
    for (int i = 0; i < 4; i++) {
        fx_settle(&f, &d, dcon, 1, 1);
        fx_pump(&f);
    }
    assert_int_equal(d.n, 5);
    assert_int_equal(d.msgs[4].delivery_count, 5);
    assert_int_equal(fx_count(&f, "jobs.dlq"), 1);
    rec_close_and_return(&f, &r);
    rec_close_and_return(&f, &d);
    rec_free(&r);
    rec_free(&d);
    fx_teardown(&f);
}

static void test_ttl_items_skipped_and_expired(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    fx_do(&f, cmd_create(BROKER_QUEUE, "q", 1, 100, 0, NULL));
    f.now = 1000;
    assert_int_equal(push(&f, "q", "stale").status, 0);
    f.now = 1100; /* "stale" expired: it does not count against capacity */
    assert_int_equal(push(&f, "q", "fresh").status, 0);
    assert_int_equal(history_count(&f, "expired"), 1);
    fx_do(&f, cmd_create(BROKER_QUEUE, "q2", 0, 100, 0, NULL));
    f.now = 2000;
    push(&f, "q2", "a");
    f.now = 2060;
    push(&f, "q2", "b");
    f.now = 2150;
    assert_int_equal(fx_count(&f, "q2"), 1);
    struct recorder r;
    rec_open(&f, &r);
    consume(&f, &r, "q2", 10);
    fx_pump(&f);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.msgs[0].id, 2);
    assert_true(broker_expire_due(f.b, f.now));
    fx_do(&f, cmd_make(BROKER_CMD_EXPIRE, NULL, f.now));
    assert_int_equal(history_count(&f, "expired"), 3); /* + q's "fresh" and q2's "a" */
    struct broker_stats st;
    broker_stats(f.b, &st);
    assert_int_equal(st.stored_messages, 1); /* q2's leased "b" */
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

static void test_restart_rebuilds_ready_list(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    push_n(&f, "orders", 10);
    struct recorder r;
    rec_open(&f, &r);
    uint64_t con = consume(&f, &r, "orders", 5);
    fx_pump(&f);
    assert_int_equal(r.n, 5);
    fx_settle(&f, &r, con, 2, 0);
    fx_settle(&f, &r, con, 4, 0);
    /* Crash-like restart: the client is not closed, no RETURN is applied. */
    rec_free(&r);
    fx_reopen(&f);
    struct recorder r2;
    rec_open(&f, &r2);
    consume(&f, &r2, "orders", 100);
    fx_pump(&f);
    uint64_t want[] = {1, 3, 5, 6, 7, 8, 9, 10};
    assert_int_equal(r2.n, 8);
    for (size_t i = 0; i < 8; i++) {
        assert_int_equal(r2.msgs[i].id, want[i]);
        assert_int_equal(r2.msgs[i].delivery_count, 1);
    }
    rec_close_and_return(&f, &r2);
    rec_free(&r2);
    fx_teardown(&f);
}

static void test_delete_queue_ends_consumers(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    push_n(&f, "tmp", 3);
    struct recorder r;
    rec_open(&f, &r);
    uint64_t con = consume(&f, &r, "tmp", 2);
    fx_pump(&f);
    fx_do(&f, cmd_make(BROKER_CMD_DELETE, "tmp", f.now));
    assert_int_equal(r.nends, 1);
    assert_int_equal(r.ends[0].handle, con);
    assert_non_null(strstr(r.ends[0].msg, "queue 'tmp' was deleted"));
    assert_int_equal(history_count(&f, "deleted"), 3);
    struct broker_stats st;
    broker_stats(f.b, &st);
    assert_int_equal(st.consumers, 0);
    assert_int_equal(st.stored_messages, 0);
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

static void test_consumer_backpressure(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    push_n(&f, "bp", 6);
    struct recorder r;
    rec_open(&f, &r);
    consume(&f, &r, "bp", 100);
    r.busy_after = 2;
    fx_pump(&f);
    assert_int_equal(r.n, 2);
    struct broker_info info;
    assert_int_equal(broker_info(f.b, "bp", f.now, &info, NULL), 0);
    assert_int_equal(info.unacked, 2);
    r.busy_after = -1;
    broker_client_writable(r.c);
    fx_pump(&f);
    assert_int_equal(r.n, 6);
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(r.msgs[i].id, i + 1);
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_push_consume_ack_with_prefetch),
        cmocka_unit_test(test_capacity_rejects_with_efull),
        cmocka_unit_test(test_round_robin_between_consumers),
        cmocka_unit_test(test_redelivery_after_close_counts_deliveries),
        cmocka_unit_test(test_nack_redelivers_before_newer),
        cmocka_unit_test(test_dead_letter_past_max_deliveries),
        cmocka_unit_test(test_ttl_items_skipped_and_expired),
        cmocka_unit_test(test_restart_rebuilds_ready_list),
        cmocka_unit_test(test_delete_queue_ends_consumers),
        cmocka_unit_test(test_consumer_backpressure),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
