/* test_broker_apply.c - the apply path: CREATE semantics and name checks,
 * auto_create on/off, wrong kind, idempotent replay by index (also after a
 * reopen), last_applied, corrupt entries, rollback after injected storage
 * and memory failures (state reloaded, no effect reaches clients), history
 * pruning by EXPIRE, introspection. */
#include "test_broker_fixture.h"

#include "store/store.h"

#include <sqlite3.h>

#define SQLITE_FULL_CODE 13
#define SQLITE_IOERR_CODE 10

static int history_total(struct fixture *f)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM history", -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int n = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static void test_create_semantics(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    struct broker_result r = fx_do(&f, cmd_create(BROKER_QUEUE, "orders", 100, 5000, 4, NULL));
    assert_int_equal(r.status, 0);
    struct broker_info info;
    assert_int_equal(broker_info(f.b, "orders", f.now, &info, NULL), 0);
    assert_int_equal(info.capacity, 100);
    assert_int_equal(info.ttl_ms, 5000);
    assert_int_equal(info.max_deliveries, 4);
    assert_string_equal(info.dlq, "orders.dlq");
    /* Same attributes: idempotent. Different: EEXIST naming the existing ones. */
    r = fx_do(&f, cmd_create(BROKER_QUEUE, "orders", 100, 5000, 4, "orders.dlq"));
    assert_int_equal(r.status, 0);
    r = fx_do(&f, cmd_create(BROKER_QUEUE, "orders", 200, 5000, 4, NULL));
    assert_int_equal(r.status, FERRY_EEXIST);
    assert_non_null(strstr(r.msg, "capacity 100"));
    r = fx_do(&f, cmd_create(BROKER_CHANNEL, "orders", 0, 0, 0, NULL));
    assert_int_equal(r.status, FERRY_EEXIST);
    assert_non_null(strstr(r.msg, "as a queue"));
    /* "Ensure it exists" (auto-create flag) accepts any attributes. */
    struct broker_cmd c = cmd_create(BROKER_QUEUE, "orders", 0, 0, 0, NULL);
    c.flags = BROKER_CMDF_AUTO_CREATE;
    assert_int_equal(fx_do(&f, c).status, 0);
    /* max_deliveries 0 -> the fixed default, whatever this node's configuration says. */
    r = fx_do(&f, cmd_create(BROKER_QUEUE, "plain", 0, 0, 0, NULL));
    assert_int_equal(broker_info(f.b, "plain", f.now, &info, NULL), 0);
    assert_int_equal(info.max_deliveries, BROKER_DEFAULT_MAX_DELIVERIES);
    /* Invalid input. */
    r = fx_do(&f, cmd_create(BROKER_CHANNEL, "bad name", 0, 0, 0, NULL));
    assert_int_equal(r.status, FERRY_EINVAL);
    assert_non_null(strstr(r.msg, "invalid"));
    r = fx_do(&f, cmd_create(BROKER_CHANNEL, "", 0, 0, 0, NULL));
    assert_int_equal(r.status, FERRY_EINVAL);
    r = fx_do(&f, cmd_create(7, "k", 0, 0, 0, NULL));
    assert_int_equal(r.status, FERRY_EINVAL);
    r = fx_do(&f, cmd_create(BROKER_CHANNEL, "ch", 0, 0, 3, NULL));
    assert_int_equal(r.status, FERRY_EINVAL);
    r = fx_do(&f, cmd_create(BROKER_QUEUE, "self", 0, 0, 0, "self"));
    assert_int_equal(r.status, FERRY_EINVAL);
    r = fx_do(&f, cmd_create(BROKER_QUEUE, "q", 0, 0, 0, "bad dlq"));
    assert_int_equal(r.status, FERRY_EINVAL);
    char longname[BROKER_NAME_MAX + 1];
    memset(longname, 'a', 255);
    longname[255] = '\0';
    r = fx_do(&f, cmd_create(BROKER_QUEUE, longname, 0, 0, 0, NULL));
    assert_int_equal(r.status, 0);
    assert_int_equal(broker_info(f.b, longname, f.now, &info, NULL), 0);
    assert_string_equal(info.dlq, ""); /* "<name>.dlq" would be too long */
    fx_teardown(&f);
}

static void test_auto_create_and_wrong_kind(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    /* Node-local defaults must not matter: attributes travel in the command. */
    f.cfg.default_capacity = 7;
    f.cfg.default_ttl_ms = 1;
    fx_reopen(&f);
    struct broker_result r = fx_do(&f, cmd_msg(BROKER_CMD_PUBLISH, "news", "x", f.now, 0));
    assert_int_equal(r.status, FERRY_ENOTFOUND);
    assert_string_equal(r.msg, "channel 'news' does not exist");
    enum broker_kind kind;
    assert_int_equal(broker_lookup(f.b, "news", &kind), FERRY_ENOTFOUND);
    struct broker_cmd auto_pub = cmd_msg(BROKER_CMD_PUBLISH, "news", "x", f.now,
                                         BROKER_CMDF_AUTO_CREATE);
    auto_pub.capacity = 50;
    auto_pub.ttl_ms = 9000;
    r = fx_do(&f, auto_pub);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.id, 1);
    assert_int_equal(broker_lookup(f.b, "news", &kind), 0);
    assert_int_equal(kind, BROKER_CHANNEL);
    struct broker_info info;
    assert_int_equal(broker_info(f.b, "news", f.now, &info, NULL), 0);
    assert_int_equal(info.capacity, 50);
    assert_int_equal(info.ttl_ms, 9000);
    r = fx_do(&f, cmd_msg(BROKER_CMD_PUSH, "jobs", "x", f.now, 0));
    assert_int_equal(r.status, FERRY_ENOTFOUND);
    r = fx_do(&f, cmd_msg(BROKER_CMD_PUSH, "jobs", "x", f.now, BROKER_CMDF_AUTO_CREATE));
    assert_int_equal(r.status, 0);
    assert_int_equal(broker_info(f.b, "jobs", f.now, &info, NULL), 0);
    assert_int_equal(info.kind, BROKER_QUEUE);
    assert_string_equal(info.dlq, "jobs.dlq");
    /* Wrong kind, with or without the flag. */
    r = fx_do(&f, cmd_msg(BROKER_CMD_PUSH, "news", "x", f.now, BROKER_CMDF_AUTO_CREATE));
    assert_int_equal(r.status, FERRY_EWRONGTYPE);
    assert_string_equal(r.msg, "'news' is a channel, not a queue");
    r = fx_do(&f, cmd_msg(BROKER_CMD_PUBLISH, "jobs", "x", f.now, 0));
    assert_int_equal(r.status, FERRY_EWRONGTYPE);
    r = fx_do(&f, cmd_id(BROKER_CMD_ACK, "news", NULL, 1, f.now));
    assert_int_equal(r.status, FERRY_EWRONGTYPE);
    r = fx_do(&f, cmd_id(BROKER_CMD_DURABLE_CREATE, "jobs", "d", 0, f.now));
    assert_int_equal(r.status, FERRY_EWRONGTYPE);
    struct recorder rec;
    rec_open(&f, &rec);
    uint64_t id, next;
    struct ferry_err err;
    assert_int_equal(broker_consume(rec.c, "news", 0, &id, &err), FERRY_EWRONGTYPE);
    assert_int_equal(broker_subscribe(rec.c, "jobs", 0, 0, NULL, 0, &id, &next, &err),
                     FERRY_EWRONGTYPE);
    assert_int_equal(broker_consume(rec.c, "nothing", 0, &id, &err), FERRY_ENOTFOUND);
    /* The size limit is the serving node's intake check, not apply's: a replica
     * with a smaller max_message_size still applies what was committed. */
    f.cfg.max_message_size = 4;
    fx_reopen(&f);
    r = fx_do(&f, cmd_msg(BROKER_CMD_PUBLISH, "news", "12345", f.now, 0));
    assert_int_equal(r.status, 0);
    rec_free(&rec);
    fx_teardown(&f);
}

static void test_replay_is_skipped_by_index(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    struct buf entry;
    buf_init(&entry);
    struct broker_cmd c = cmd_msg(BROKER_CMD_PUSH, "q", "x", f.now, BROKER_CMDF_AUTO_CREATE);
    assert_int_equal(broker_cmd_encode(&entry, &c), 0);
    assert_int_equal(broker_cmd_encode(&entry, &c), 0);
    struct broker_result res[2];
    struct ferry_err err;
    assert_int_equal(broker_begin(f.b, &err), 0);
    assert_int_equal(broker_apply(f.b, 5, 2, entry.data, entry.len, res, 2, &err), 0);
    assert_int_equal(res[1].id, 2);
    /* Same index again in the same batch: skipped. */
    assert_int_equal(broker_apply(f.b, 5, 2, entry.data, entry.len, res, 2, &err), 0);
    assert_int_equal(res[0].status, 0);
    assert_int_equal(res[0].id, 0);
    assert_int_equal(broker_commit(f.b, &err), 0);
    uint64_t idx, term;
    broker_last_applied(f.b, &idx, &term);
    assert_int_equal(idx, 5);
    assert_int_equal(term, 2);
    fx_reopen(&f);
    broker_last_applied(f.b, &idx, &term);
    assert_int_equal(idx, 5);
    assert_int_equal(term, 2);
    /* Replaying the log after a restart changes nothing. */
    assert_int_equal(broker_begin(f.b, &err), 0);
    assert_int_equal(broker_apply(f.b, 4, 2, entry.data, entry.len, res, 2, &err), 0);
    assert_int_equal(broker_apply(f.b, 5, 2, entry.data, entry.len, res, 2, &err), 0);
    assert_int_equal(res[1].id, 0);
    assert_int_equal(broker_commit(f.b, &err), 0);
    assert_int_equal(fx_count(&f, "q"), 2);
    assert_int_equal(broker_begin(f.b, &err), 0);
    assert_int_equal(broker_apply(f.b, 6, 3, entry.data, entry.len, res, 2, &err), 0);
    assert_int_equal(res[0].id, 3);
    assert_int_equal(broker_commit(f.b, &err), 0);
    assert_int_equal(fx_count(&f, "q"), 4);
    /* An empty entry (a Raft no-op) still advances last_applied. */
    assert_int_equal(broker_begin(f.b, &err), 0);
    assert_int_equal(broker_apply(f.b, 7, 3, NULL, 0, NULL, 0, &err), 0);
    assert_int_equal(broker_commit(f.b, &err), 0);
    broker_last_applied(f.b, &idx, &term);
    assert_int_equal(idx, 7);
    buf_free(&entry);
    fx_teardown(&f);
}

static void test_corrupt_entry_changes_nothing(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    struct buf entry;
    buf_init(&entry);
    struct broker_cmd c = cmd_msg(BROKER_CMD_PUSH, "q", "x", f.now, BROKER_CMDF_AUTO_CREATE);
    assert_int_equal(broker_cmd_encode(&entry, &c), 0);
    assert_int_equal(buf_append(&entry, "\x00\x00\x00\x01", 4), 0); /* truncated second */
    struct ferry_err err;
    assert_int_equal(broker_begin(f.b, &err), 0);
    assert_int_equal(broker_apply(f.b, 1, 1, entry.data, entry.len, NULL, 0, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "log entry 1 is corrupt"));
    assert_int_equal(broker_commit(f.b, &err), 0);
    enum broker_kind kind;
    assert_int_equal(broker_lookup(f.b, "q", &kind), FERRY_ENOTFOUND);
    uint64_t idx, term;
    broker_last_applied(f.b, &idx, &term);
    assert_int_equal(idx, 0);
    buf_free(&entry);
    fx_teardown(&f);
}

/* A batch that fails inside apply or at commit leaves no trace. */
static void check_failed_batch(struct fixture *f, struct recorder *r, long countdown, int code,
                               int expect)
{
    struct broker_cmd cmds[4];
    for (int i = 0; i < 4; i++)
        cmds[i] = cmd_msg(BROKER_CMD_PUBLISH, "news", "lost", f->now, 0);
    struct buf entry;
    buf_init(&entry);
    for (int i = 0; i < 4; i++)
        assert_int_equal(broker_cmd_encode(&entry, &cmds[i]), 0);
    struct ferry_err err;
    uint64_t idx_before, term;
    broker_last_applied(f->b, &idx_before, &term);
    size_t seen = r->n;
    assert_int_equal(broker_begin(f->b, &err), 0);
    store_fault_inject(code, countdown, 1);
    int rc = broker_apply(f->b, ++f->index, 1, entry.data, entry.len, NULL, 0, &err);
    struct ferry_err commit_err;
    if (rc == 0)
        rc = broker_commit(f->b, &err);
    else
        assert_int_equal(broker_commit(f->b, &commit_err), FERRY_ESTATE);
    store_fault_inject(0, -1, 0);
    assert_int_equal(rc, expect);
    assert_non_null(strstr(err.msg, f->path));
    assert_int_equal(r->n, seen); /* nothing delivered */
    uint64_t idx;
    broker_last_applied(f->b, &idx, &term);
    assert_int_equal(idx, idx_before);
    buf_free(&entry);
}

static void test_rollback_after_injected_failure(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    for (int i = 0; i < 3; i++)
        fx_do(&f, cmd_msg(BROKER_CMD_PUBLISH, "news", "kept", f.now, BROKER_CMDF_AUTO_CREATE));
    struct recorder r;
    rec_open(&f, &r);
    uint64_t sub, next;
    struct ferry_err err;
    assert_int_equal(broker_subscribe(r.c, "news", 0, 0, NULL, 0, &sub, &next, &err), 0);
    assert_int_equal(next, 4);
    /* Fail the 3rd statement of apply (disk full), then the COMMIT itself (I/O error). */
    check_failed_batch(&f, &r, 2, SQLITE_FULL_CODE, FERRY_ENOSPC);
    /* 4 inserts, counters and last_applied succeed; COMMIT fails. */
    check_failed_batch(&f, &r, 4 + 2, SQLITE_IOERR_CODE, FERRY_EIO);
    struct broker_info info;
    assert_int_equal(broker_info(f.b, "news", f.now, &info, NULL), 0);
    assert_int_equal(info.count, 3);
    assert_int_equal(info.last_id, 3);
    /* The next batch works and ids continue without a gap; the live subscriber gets it. */
    struct broker_result res = fx_do(&f, cmd_msg(BROKER_CMD_PUBLISH, "news", "next", f.now, 0));
    assert_int_equal(res.id, 4);
    assert_int_equal(r.n, 1);
    assert_int_equal(r.msgs[0].id, 4);
    /* broker_rollback on request. */
    assert_int_equal(broker_begin(f.b, &err), 0);
    struct buf entry;
    buf_init(&entry);
    struct broker_cmd c = cmd_make(BROKER_CMD_DELETE, "news", f.now);
    assert_int_equal(broker_cmd_encode(&entry, &c), 0);
    assert_int_equal(broker_apply(f.b, ++f.index, 1, entry.data, entry.len, NULL, 0, &err), 0);
    broker_rollback(f.b);
    buf_free(&entry);
    assert_int_equal(r.nends, 0);
    res = fx_do(&f, cmd_msg(BROKER_CMD_PUBLISH, "news", "after", f.now, 0));
    assert_int_equal(res.id, 5);
    assert_int_equal(r.n, 2); /* the subscription survived the rolled back delete */
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

static void test_rollback_keeps_leases_and_queue_state(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    for (int i = 0; i < 4; i++)
        fx_do(&f, cmd_msg(BROKER_CMD_PUSH, "q", "x", f.now, BROKER_CMDF_AUTO_CREATE));
    struct recorder r;
    rec_open(&f, &r);
    uint64_t con;
    struct ferry_err err;
    assert_int_equal(broker_consume(r.c, "q", 2, &con, &err), 0);
    fx_pump(&f);
    assert_int_equal(r.n, 2);
    struct broker_cmd ack;
    assert_int_equal(broker_settle(r.c, con, 1, 0, f.now, &ack, &err), 0);
    struct broker_cmd cmds[2] = {ack, cmd_msg(BROKER_CMD_PUSH, "q", "y", f.now, 0)};
    store_fault_inject(SQLITE_FULL_CODE, 3, 1);
    assert_int_equal(fx_apply(&f, cmds, 2, NULL), FERRY_ENOSPC);
    store_fault_inject(0, -1, 0);
    /* Item 2 is still leased to the consumer. Item 1's ACK was in the failed
     * batch: it is offered again rather than stuck, with its count unchanged. */
    fx_pump(&f);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.msgs[2].id, 1);
    assert_int_equal(r.msgs[2].delivery_count, 1);
    assert_int_equal(fx_count(&f, "q"), 4);
    /* The same commands applied again (as a log replay would) succeed. */
    assert_int_equal(fx_apply(&f, cmds, 2, NULL), 0);
    assert_int_equal(fx_count(&f, "q"), 4);
    fx_pump(&f);
    assert_int_equal(r.n, 4);
    assert_int_equal(r.msgs[3].id, 3);
    struct broker_info info;
    assert_int_equal(broker_info(f.b, "q", f.now, &info, NULL), 0);
    assert_int_equal(info.unacked, 2); /* items 2 and 3 */
    rec_close_and_return(&f, &r);
    rec_free(&r);
    fx_teardown(&f);
}

static int apply_with_alloc_fault(struct fixture *f, const struct buf *entry, long n, long repeat)
{
    struct ferry_err err;
    int rc = broker_begin(f->b, &err);
    if (rc != 0)
        return rc;
    alloc_set_fault(n, repeat);
    rc = broker_apply(f->b, ++f->index, 1, entry->data, entry->len, NULL, 0, &err);
    if (rc == 0)
        rc = broker_commit(f->b, &err);
    alloc_set_fault(-1, 0);
    return rc;
}

static void test_out_of_memory_in_apply(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    fx_do(&f, cmd_msg(BROKER_CMD_PUSH, "q", "x", f.now, BROKER_CMDF_AUTO_CREATE));
    struct broker_cmd cmds[3] = {
        cmd_create(BROKER_QUEUE, "new-q", 0, 0, 0, NULL),
        cmd_msg(BROKER_CMD_PUSH, "q", "y", f.now, 0),
        cmd_msg(BROKER_CMD_PUBLISH, "c", "z", f.now, BROKER_CMDF_AUTO_CREATE),
    };
    struct buf entry;
    buf_init(&entry);
    for (int i = 0; i < 3; i++)
        assert_int_equal(broker_cmd_encode(&entry, &cmds[i]), 0);
    /* One allocation fails at each point in turn: the batch fails with
     * ENOMEM, nothing of it stays, and the broker keeps working. */
    int failures = 0, rc;
    enum broker_kind kind;
    for (long n = 0; (rc = apply_with_alloc_fault(&f, &entry, n, 1)) != 0; n++) {
        assert_int_equal(rc, FERRY_ENOMEM);
        assert_int_equal(broker_lookup(f.b, "new-q", &kind), FERRY_ENOTFOUND);
        assert_int_equal(broker_lookup(f.b, "c", &kind), FERRY_ENOTFOUND);
        assert_int_equal(fx_count(&f, "q"), 1);
        failures++;
        assert_true(n < 100);
    }
    assert_true(failures > 0);
    assert_int_equal(fx_count(&f, "q"), 2);
    assert_int_equal(broker_lookup(f.b, "new-q", &kind), 0);
    /* Every allocation failing, the reload too: the broker says it stopped. */
    struct broker_cmd another = cmd_create(BROKER_QUEUE, "another", 0, 0, 0, NULL);
    buf_reset(&entry);
    assert_int_equal(broker_cmd_encode(&entry, &another), 0);
    rc = apply_with_alloc_fault(&f, &entry, 0, -1);
    assert_int_equal(rc, FERRY_ENOMEM);
    struct ferry_err err;
    if (broker_begin(f.b, &err) == 0)
        broker_rollback(f.b);
    else
        assert_non_null(strstr(err.msg, "restart the node"));
    fx_reopen(&f);
    assert_int_equal(fx_count(&f, "q"), 2);
    buf_free(&entry);
    fx_teardown(&f);
}

static void test_history_pruned_by_expire(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    f.cfg.history_retention_ms = 1000;
    f.cfg.history_max_records = 5;
    fx_reopen(&f);
    f.now = 10000;
    for (int i = 0; i < 8; i++)
        fx_do(&f, cmd_msg(BROKER_CMD_PUSH, "q", "x", f.now, BROKER_CMDF_AUTO_CREATE));
    for (uint64_t i = 1; i <= 8; i++) {
        f.now = 10000 + i * 100;
        assert_int_equal(fx_do(&f, cmd_id(BROKER_CMD_ACK, "q", NULL, i, f.now)).status, 0);
    }
    assert_int_equal(history_total(&f), 8);
    struct broker_stats st;
    broker_stats(f.b, &st);
    assert_int_equal(st.history_records, 8);
    assert_true(broker_expire_due(f.b, 10800)); /* 8 records, max 5 */
    fx_do(&f, cmd_make(BROKER_CMD_EXPIRE, NULL, 10800));
    assert_int_equal(history_total(&f), 5); /* max_records */
    /* Retention 1000 ms relative to the command's ts: records with ts < 10700 go. */
    fx_do(&f, cmd_make(BROKER_CMD_EXPIRE, NULL, 11700));
    assert_int_equal(history_total(&f), 2);
    broker_stats(f.b, &st);
    assert_int_equal(st.history_records, 2);
    assert_false(broker_expire_due(f.b, 11700));
    assert_true(broker_expire_due(f.b, 20000));
    fx_teardown(&f);
}

static void test_list_and_stats(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    fx_do(&f, cmd_create(BROKER_QUEUE, "zeta", 0, 0, 0, NULL));
    fx_do(&f, cmd_create(BROKER_CHANNEL, "alpha", 0, 0, 0, NULL));
    fx_do(&f, cmd_msg(BROKER_CMD_PUBLISH, "alpha", "x", f.now, 0));
    struct broker_info *items = NULL;
    size_t n = 0;
    assert_int_equal(broker_list(f.b, f.now, &items, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(items[0].name, "alpha");
    assert_int_equal(items[0].count, 1);
    assert_string_equal(items[1].name, "zeta");
    ferry_free(items);
    struct recorder r;
    rec_open(&f, &r);
    uint64_t id, next;
    assert_int_equal(broker_subscribe(r.c, "alpha", 0, 0, NULL, 0, &id, &next, NULL), 0);
    assert_int_equal(broker_consume(r.c, "zeta", 0, &id, NULL), 0);
    struct broker_stats st;
    broker_stats(f.b, &st);
    assert_int_equal(st.resources, 2);
    assert_int_equal(st.channels, 1);
    assert_int_equal(st.queues, 1);
    assert_int_equal(st.stored_messages, 1);
    assert_int_equal(st.clients, 1);
    assert_int_equal(st.subscriptions, 1);
    assert_int_equal(st.consumers, 1);
    struct ferry_err err;
    struct broker_info info;
    assert_int_equal(broker_info(f.b, "nope", f.now, &info, &err), FERRY_ENOTFOUND);
    rec_close_and_return(&f, &r);
    broker_stats(f.b, &st);
    assert_int_equal(st.clients, 0);
    assert_int_equal(st.subscriptions, 0);
    rec_free(&r);
    fx_teardown(&f);
}

static void test_apply_outside_transaction_is_refused(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    struct ferry_err err;
    assert_int_equal(broker_apply(f.b, 1, 1, NULL, 0, NULL, 0, &err), FERRY_ESTATE);
    assert_int_equal(broker_commit(f.b, &err), FERRY_ESTATE);
    assert_int_equal(broker_begin(f.b, &err), 0);
    assert_int_equal(broker_begin(f.b, &err), FERRY_ESTATE);
    broker_rollback(f.b);
    fx_teardown(&f);
}

static void test_open_refuses_bad_config_and_db(void **state)
{
    (void)state;
    struct broker_config cfg;
    memset(&cfg, 0, sizeof cfg);
    struct broker *b = NULL;
    struct ferry_err err;
    assert_int_equal(broker_open(&b, &cfg, &err), FERRY_EINVAL);
    assert_non_null(strstr(err.msg, "db_path"));
    cfg.db_path = "/nonexistent-ferry-dir/ferry.db";
    assert_int_equal(broker_open(&b, &cfg, &err), FERRY_EIO);
    assert_null(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_semantics),
        cmocka_unit_test(test_auto_create_and_wrong_kind),
        cmocka_unit_test(test_replay_is_skipped_by_index),
        cmocka_unit_test(test_corrupt_entry_changes_nothing),
        cmocka_unit_test(test_rollback_after_injected_failure),
        cmocka_unit_test(test_rollback_keeps_leases_and_queue_state),
        cmocka_unit_test(test_out_of_memory_in_apply),
        cmocka_unit_test(test_history_pruned_by_expire),
        cmocka_unit_test(test_list_and_stats),
        cmocka_unit_test(test_apply_outside_transaction_is_refused),
        cmocka_unit_test(test_open_refuses_bad_config_and_db),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
