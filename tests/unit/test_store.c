/* test_store.c - the message database: open, migrations, refusal of newer,
 * foreign and corrupt files, WAL/synchronous settings, last_applied,
 * message and history operations, and the fault injector's error mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/store.h"

struct tmpdb {
    char dir[64];
    char path[128];
};

static void tmp_init(struct tmpdb *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/ferry-store-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
    snprintf(t->path, sizeof t->path, "%s/ferry.db", t->dir);
}

static void tmp_free(struct tmpdb *t)
{
    char p[160];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", t->path, suffix[i]);
        unlink(p);
    }
    rmdir(t->dir);
}

static struct store *open_ok(const char *path, int full)
{
    struct store *s = NULL;
    struct ferry_err err;
    ferry_err_clear(&err);
    int rc = store_open(&s, path, full, &err);
    if (rc != 0)
        fail_msg("store_open: %s", err.msg);
    return s;
}

static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *msg = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK)
        fail_msg("sqlite: %s", msg);
    sqlite3_close(db);
}

static void test_open_creates_schema_wal_and_sync(void **state)
{
    (void)state;
    struct tmpdb t;
    tmp_init(&t);
    struct store *s = open_ok(t.path, 1);
    assert_int_equal(store_schema_version(s), STORE_SCHEMA_VERSION);
    char mode[16];
    int sync = -1;
    assert_int_equal(store_pragmas(s, mode, sizeof mode, &sync, NULL), 0);
    assert_string_equal(mode, "wal");
    assert_int_equal(sync, 2); /* FULL */
    store_close(s);
    s = open_ok(t.path, 0);
    assert_int_equal(store_pragmas(s, mode, sizeof mode, &sync, NULL), 0);
    assert_string_equal(mode, "wal");
    assert_int_equal(sync, 1); /* NORMAL */
    store_close(s);
    tmp_free(&t);
}

static void test_last_applied_round_trip_and_reopen(void **state)
{
    (void)state;
    struct tmpdb t;
    tmp_init(&t);
    struct store *s = open_ok(t.path, 0);
    uint64_t idx = 99, term = 99;
    assert_int_equal(store_last_applied(s, &idx, &term, NULL), 0);
    assert_int_equal(idx, 0);
    assert_int_equal(term, 0);
    assert_int_equal(store_begin(s, NULL), 0);
    assert_int_equal(store_set_last_applied(s, 12345678901ull, 7, NULL), 0);
    assert_int_equal(store_commit(s, NULL), 0);
    store_close(s);
    s = open_ok(t.path, 0);
    assert_int_equal(store_last_applied(s, &idx, &term, NULL), 0);
    assert_int_equal(idx, 12345678901ull);
    assert_int_equal(term, 7);
    /* A rolled back write leaves the stored value. */
    assert_int_equal(store_begin(s, NULL), 0);
    assert_int_equal(store_set_last_applied(s, 5, 5, NULL), 0);
    store_rollback(s);
    assert_int_equal(store_last_applied(s, &idx, &term, NULL), 0);
    assert_int_equal(idx, 12345678901ull);
    store_close(s);
    tmp_free(&t);
}

static void test_newer_schema_is_refused(void **state)
{
    (void)state;
    struct tmpdb t;
    tmp_init(&t);
    store_close(open_ok(t.path, 0));
    raw_exec(t.path, "UPDATE meta SET value = 99 WHERE key = 'schema_version'");
    struct store *s = NULL;
    struct ferry_err err;
    assert_int_equal(store_open(&s, t.path, 0, &err), FERRY_EVERSION);
    assert_null(s);
    assert_non_null(strstr(err.msg, "schema version 99"));
    assert_non_null(strstr(err.msg, "newer Ferry"));
    tmp_free(&t);
}

static void test_garbage_file_is_refused(void **state)
{
    (void)state;
    struct tmpdb t;
    tmp_init(&t);
    FILE *fp = fopen(t.path, "wb");
    assert_non_null(fp);
    for (int i = 0; i < 4096; i++)
        fputc((i * 131 + 7) & 0xff, fp);
    fclose(fp);
    struct store *s = NULL;
    struct ferry_err err;
    assert_int_equal(store_open(&s, t.path, 0, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, t.path));
    assert_non_null(strstr(err.msg, "not a database"));
    tmp_free(&t);
}

static void test_foreign_sqlite_file_is_refused(void **state)
{
    (void)state;
    struct tmpdb t;
    tmp_init(&t);
    raw_exec(t.path, "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT)");
    struct store *s = NULL;
    struct ferry_err err;
    assert_int_equal(store_open(&s, t.path, 0, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "not a Ferry database"));
    tmp_free(&t);
}

static void test_damaged_meta_is_refused(void **state)
{
    (void)state;
    struct tmpdb t;
    tmp_init(&t);
    store_close(open_ok(t.path, 0));
    raw_exec(t.path, "DELETE FROM meta");
    struct store *s = NULL;
    struct ferry_err err;
    assert_int_equal(store_open(&s, t.path, 0, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "schema_version"));
    tmp_free(&t);
}

static void test_unopenable_path_is_eio(void **state)
{
    (void)state;
    struct store *s = NULL;
    struct ferry_err err;
    assert_int_equal(store_open(&s, "/nonexistent-dir-ferry/x/ferry.db", 0, &err), FERRY_EIO);
    assert_non_null(strstr(err.msg, "/nonexistent-dir-ferry/x/ferry.db"));
}

static void put_msg(struct store *s, uint64_t rid, uint64_t id, uint64_t qts, const char *p)
{
    struct store_msg m = {id, qts, qts, 0, (const uint8_t *)p, (uint32_t)strlen(p)};
    assert_int_equal(store_msg_insert(s, rid, &m, NULL), 0);
}

static int count_history(const char *path, const char *state)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
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

static void test_messages_and_history(void **state)
{
    (void)state;
    struct tmpdb t;
    tmp_init(&t);
    struct store *s = open_ok(t.path, 0);
    struct store_resource r;
    memset(&r, 0, sizeof r);
    snprintf(r.name, sizeof r.name, "orders");
    r.kind = 2;
    assert_int_equal(store_begin(s, NULL), 0);
    assert_int_equal(store_resource_insert(s, &r, NULL), 0);
    assert_true(r.rid > 0);
    for (uint64_t i = 1; i <= 10; i++)
        put_msg(s, r.rid, i, 100 * i, "payload");
    put_msg(s, r.rid, 11, 1100, "");
    uint64_t n = 0, last = 0, removed = 0;
    assert_int_equal(store_msg_expired_prefix(s, r.rid, 350, &n, &last, NULL), 0);
    assert_int_equal(n, 3);
    assert_int_equal(last, 3);
    assert_int_equal(
        store_msg_remove_through(s, r.rid, last, r.name, STORE_HIST_EXPIRED, 350, &removed, NULL),
        0);
    assert_int_equal(removed, 3);
    assert_int_equal(store_msg_remove(s, r.rid, 5, r.name, STORE_HIST_CONSUMED, 400, NULL), 1);
    assert_int_equal(store_msg_remove(s, r.rid, 5, r.name, STORE_HIST_CONSUMED, 400, NULL), 0);
    uint32_t d = 0;
    assert_int_equal(store_msg_bump_deliveries(s, r.rid, 6, &d, NULL), 1);
    assert_int_equal(d, 1);
    assert_int_equal(store_msg_bump_deliveries(s, r.rid, 6, &d, NULL), 1);
    assert_int_equal(d, 2);
    assert_int_equal(store_msg_bump_deliveries(s, r.rid, 5, &d, NULL), 0);
    assert_int_equal(store_commit(s, NULL), 0);

    struct store_msg m;
    assert_int_equal(store_msg_get(s, r.rid, 6, &m, NULL), 1);
    assert_int_equal(m.deliveries, 2);
    assert_int_equal(m.payload_len, 7);
    assert_memory_equal(m.payload, "payload", 7);
    assert_int_equal(store_msg_get(s, r.rid, 11, &m, NULL), 1);
    assert_int_equal(m.payload_len, 0);
    assert_non_null(m.payload);
    assert_int_equal(store_msg_get(s, r.rid, 5, &m, NULL), 0);
    uint64_t first = 0, qts = 0;
    assert_int_equal(store_msg_first(s, r.rid, &first, &qts, NULL), 1);
    assert_int_equal(first, 4);
    assert_int_equal(qts, 400);
    assert_int_equal(store_scan_open(s, r.rid, 5, 3, NULL), 0);
    uint64_t seen[3];
    int k = 0, rc;
    while ((rc = store_scan_next(s, &m, NULL)) == 1)
        seen[k++] = m.id;
    store_scan_close(s);
    assert_int_equal(rc, 0);
    assert_int_equal(k, 3);
    assert_int_equal(seen[0], 6);
    assert_int_equal(seen[2], 8);

    uint64_t count = 0, oldest = 0;
    assert_int_equal(store_history_stats(s, &count, &oldest, NULL), 0);
    assert_int_equal(count, 4);
    assert_int_equal(oldest, 350);
    assert_int_equal(count_history(t.path, "expired"), 3);
    assert_int_equal(count_history(t.path, "consumed"), 1);
    /* Prune by age: records with ts < 400 go. */
    assert_int_equal(store_begin(s, NULL), 0);
    assert_int_equal(store_history_prune(s, 400, 0, &removed, NULL), 0);
    assert_int_equal(removed, 3);
    for (int i = 0; i < 20; i++)
        assert_int_equal(store_history_add(s, 500 + (uint64_t)i, "orders", 100, "consumed", NULL),
                         0);
    assert_int_equal(store_history_prune(s, 0, 5, &removed, NULL), 0);
    assert_int_equal(removed, 16);
    assert_int_equal(store_commit(s, NULL), 0);
    assert_int_equal(store_history_stats(s, &count, &oldest, NULL), 0);
    assert_int_equal(count, 5);
    assert_int_equal(oldest, 515);
    store_close(s);
    tmp_free(&t);
}

static void test_resource_delete_records_history(void **state)
{
    (void)state;
    struct tmpdb t;
    tmp_init(&t);
    struct store *s = open_ok(t.path, 0);
    struct store_resource r;
    memset(&r, 0, sizeof r);
    snprintf(r.name, sizeof r.name, "news");
    r.kind = 1;
    assert_int_equal(store_begin(s, NULL), 0);
    assert_int_equal(store_resource_insert(s, &r, NULL), 0);
    for (uint64_t i = 1; i <= 4; i++)
        put_msg(s, r.rid, i, i, "x");
    assert_int_equal(store_durable_put(s, r.rid, "d1", 2, NULL), 0);
    uint64_t removed = 0;
    assert_int_equal(store_resource_delete(s, r.rid, r.name, 10, &removed, NULL), 0);
    assert_int_equal(removed, 4);
    assert_int_equal(store_commit(s, NULL), 0);
    assert_int_equal(count_history(t.path, "deleted"), 4);
    uint64_t first, qts;
    assert_int_equal(store_msg_first(s, r.rid, &first, &qts, NULL), 0);
    store_close(s);
    tmp_free(&t);
}

static void test_fault_injection_maps_errors(void **state)
{
    (void)state;
    struct tmpdb t;
    tmp_init(&t);
    struct store *s = open_ok(t.path, 0);
    struct ferry_err err;
    assert_int_equal(store_begin(s, NULL), 0);
    store_fault_inject(13 /* SQLITE_FULL */, 0, 1);
    assert_int_equal(store_set_last_applied(s, 1, 1, &err), FERRY_ENOSPC);
    assert_non_null(strstr(err.msg, "injected"));
    assert_non_null(strstr(err.msg, "last_applied"));
    assert_int_equal(store_faults_injected(), 1);
    /* Repeat exhausted: the next statement works again. */
    assert_int_equal(store_set_last_applied(s, 2, 1, &err), 0);
    store_fault_inject(10 /* SQLITE_IOERR */, 0, 1);
    assert_int_equal(store_commit(s, &err), FERRY_EIO);
    assert_int_equal(store_txn(s), 0);
    store_fault_inject(0, -1, 0);
    uint64_t idx, term;
    assert_int_equal(store_last_applied(s, &idx, &term, NULL), 0);
    assert_int_equal(idx, 0); /* the failed commit was rolled back */
    store_close(s);
    tmp_free(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_creates_schema_wal_and_sync),
        cmocka_unit_test(test_last_applied_round_trip_and_reopen),
        cmocka_unit_test(test_newer_schema_is_refused),
        cmocka_unit_test(test_garbage_file_is_refused),
        cmocka_unit_test(test_foreign_sqlite_file_is_refused),
        cmocka_unit_test(test_damaged_meta_is_refused),
        cmocka_unit_test(test_unopenable_path_is_eio),
        cmocka_unit_test(test_messages_and_history),
        cmocka_unit_test(test_resource_delete_records_history),
        cmocka_unit_test(test_fault_injection_maps_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
