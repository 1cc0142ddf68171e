/* resources.c - rows of the resources and durables tables.
 *
 * A resource row carries its attributes and the two counters that must
 * survive even when every message is gone: last_id (ids are never reused)
 * and last_qts (enqueue timestamps never go backwards, so expiry always
 * removes a prefix). Deleting a resource deletes its messages (each leaving
 * a "deleted" history record) and its durable cursors in the same
 * transaction.
 */
#include "store/store_int.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

static void copy_text(char *dst, size_t cap, sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(dst, cap, "%s", t ? (const char *)t : "");
}

/* Walk the rows of RES_LOAD or RES_BY_NAME (same columns). */
static int walk_resources(struct store *s, sqlite3_stmt *st, store_resource_cb cb, void *ctx,
                          struct ferry_err *err)
{
    struct store_resource r;
    int rc, stop = 0;
    while ((rc = store_step(s, st)) == SQLITE_ROW) {
        memset(&r, 0, sizeof r);
        r.rid = col_u64(st, 0);
        copy_text(r.name, sizeof r.name, st, 1);
        r.kind = (uint8_t)sqlite3_column_int(st, 2);
        r.capacity = col_u64(st, 3);
        r.ttl_ms = col_u64(st, 4);
        r.max_deliveries = (uint32_t)sqlite3_column_int64(st, 5);
        copy_text(r.dlq, sizeof r.dlq, st, 6);
        r.last_id = col_u64(st, 7);
        r.last_qts = col_u64(st, 8);
        r.created_ts = col_u64(st, 9);
        stop = cb(ctx, &r);
        if (stop != 0)
            break;
    }
    sqlite3_reset(st);
    if (stop != 0)
        return stop;
    if (rc != SQLITE_DONE)
        return store_fail(s, rc, "loading resources", err);
    return 0;
}

int store_resources_load(struct store *s, store_resource_cb cb, void *ctx, struct ferry_err *err)
{
    return walk_resources(s, s->stmt[ST_RES_LOAD], cb, ctx, err);
}

int store_resources_by_name(struct store *s, store_resource_cb cb, void *ctx, struct ferry_err *err)
{
    return walk_resources(s, s->stmt[ST_RES_BY_NAME], cb, ctx, err);
}

int store_clear_live(struct store *s, struct ferry_err *err)
{
    assert(s->txn == 1);
    int rc = store_exec_stmt(s, s->stmt[ST_CLEAR_MESSAGES], "clearing messages", err);
    if (rc == 0)
        rc = store_exec_stmt(s, s->stmt[ST_CLEAR_DURABLES], "clearing durable subscriptions", err);
    if (rc == 0)
        rc = store_exec_stmt(s, s->stmt[ST_CLEAR_RESOURCES], "clearing resources", err);
    if (rc == 0)
        rc = store_exec_stmt(s, s->stmt[ST_CLEAR_PRODUCERS], "clearing producers", err);
    return rc;
}

int store_producer_put(struct store *s, const uint8_t pid[STORE_PRODUCER_ID], uint64_t highest,
                       uint64_t last_ms, const void *ring, size_t ring_len, struct ferry_err *err)
{
    assert(s->txn == 1);
    sqlite3_stmt *st = s->stmt[ST_PROD_PUT];
    sqlite3_bind_blob(st, 1, pid, STORE_PRODUCER_ID, SQLITE_STATIC);
    bind_u64(st, 2, highest);
    bind_u64(st, 3, last_ms);
    sqlite3_bind_blob(st, 4, ring_len ? ring : "", (int)ring_len, SQLITE_STATIC);
    return store_exec_stmt(s, st, "writing a producer", err);
}

int store_producer_delete(struct store *s, const uint8_t pid[STORE_PRODUCER_ID],
                          struct ferry_err *err)
{
    assert(s->txn == 1);
    sqlite3_stmt *st = s->stmt[ST_PROD_DELETE];
    sqlite3_bind_blob(st, 1, pid, STORE_PRODUCER_ID, SQLITE_STATIC);
    return store_exec_stmt(s, st, "deleting a producer", err);
}

int store_producers_load(struct store *s, store_producer_cb cb, void *ctx, struct ferry_err *err)
{
    sqlite3_stmt *st = s->stmt[ST_PROD_LOAD];
    int rc, stop = 0;
    while ((rc = store_step(s, st)) == SQLITE_ROW) {
        int idlen = sqlite3_column_bytes(st, 0);
        if (idlen != STORE_PRODUCER_ID) {
            sqlite3_reset(st);
            return ferry_err_set(err, FERRY_ECORRUPT, "%s: a producer row has an id of %d bytes",
                                 s->path, idlen);
        }
        const uint8_t *pid = sqlite3_column_blob(st, 0);
        const void *ring = sqlite3_column_blob(st, 3);
        size_t ring_len = (size_t)sqlite3_column_bytes(st, 3);
        stop = cb(ctx, pid, col_u64(st, 1), col_u64(st, 2), ring, ring_len);
        if (stop != 0)
            break;
    }
    sqlite3_reset(st);
    if (stop != 0)
        return stop;
    if (rc != SQLITE_DONE)
        return store_fail(s, rc, "loading producers", err);
    return 0;
}

int store_resource_insert(struct store *s, struct store_resource *r, struct ferry_err *err)
{
    assert(s->txn == 1);
    sqlite3_stmt *st = s->stmt[ST_RES_INSERT];
    bind_text(st, 1, r->name);
    sqlite3_bind_int(st, 2, r->kind);
    bind_u64(st, 3, r->capacity);
    bind_u64(st, 4, r->ttl_ms);
    sqlite3_bind_int64(st, 5, r->max_deliveries);
    bind_text(st, 6, r->dlq);
    bind_u64(st, 7, r->last_id);
    bind_u64(st, 8, r->last_qts);
    bind_u64(st, 9, r->created_ts);
    int rc = store_exec_stmt(s, st, "creating a resource", err);
    if (rc == 0)
        r->rid = (uint64_t)sqlite3_last_insert_rowid(s->db);
    return rc;
}

int store_resource_set_counters(struct store *s, uint64_t rid, uint64_t last_id, uint64_t last_qts,
                                struct ferry_err *err)
{
    assert(s->txn == 1);
    sqlite3_stmt *st = s->stmt[ST_RES_COUNTERS];
    bind_u64(st, 1, rid);
    bind_u64(st, 2, last_id);
    bind_u64(st, 3, last_qts);
    return store_exec_stmt(s, st, "updating resource counters", err);
}

int store_resource_delete(struct store *s, uint64_t rid, const char *name, uint64_t ts,
                          uint64_t *removed, struct ferry_err *err)
{
    assert(s->txn == 1);
    int rc =
        store_msg_remove_through(s, rid, UINT64_MAX, name, STORE_HIST_DELETED, ts, removed, err);
    if (rc != 0)
        return rc;
    sqlite3_stmt *st = s->stmt[ST_DUR_DELETE_ALL];
    bind_u64(st, 1, rid);
    rc = store_exec_stmt(s, st, "deleting durable subscriptions", err);
    if (rc != 0)
        return rc;
    st = s->stmt[ST_RES_DELETE];
    bind_u64(st, 1, rid);
    return store_exec_stmt(s, st, "deleting a resource", err);
}

int store_durable_put(struct store *s, uint64_t rid, const char *name, uint64_t cursor,
                      struct ferry_err *err)
{
    assert(s->txn == 1);
    sqlite3_stmt *st = s->stmt[ST_DUR_PUT];
    bind_u64(st, 1, rid);
    bind_text(st, 2, name);
    bind_u64(st, 3, cursor);
    return store_exec_stmt(s, st, "writing a durable cursor", err);
}

int store_durable_delete(struct store *s, uint64_t rid, const char *name, struct ferry_err *err)
{
    assert(s->txn == 1);
    sqlite3_stmt *st = s->stmt[ST_DUR_DELETE];
    bind_u64(st, 1, rid);
    bind_text(st, 2, name);
    int rc = store_exec_stmt(s, st, "deleting a durable subscription", err);
    if (rc != 0)
        return rc;
    return sqlite3_changes(s->db) > 0;
}

int store_durables_load(struct store *s, uint64_t rid, store_durable_cb cb, void *ctx,
                        struct ferry_err *err)
{
    sqlite3_stmt *st = s->stmt[ST_DUR_LOAD];
    bind_u64(st, 1, rid);
    char name[STORE_NAME_MAX + 1];
    int rc, stop = 0;
    while ((rc = store_step(s, st)) == SQLITE_ROW) {
        copy_text(name, sizeof name, st, 0);
        stop = cb(ctx, name, col_u64(st, 1));
        if (stop != 0)
            break;
    }
    sqlite3_reset(st);
    if (stop != 0)
        return stop;
    if (rc != SQLITE_DONE)
        return store_fail(s, rc, "loading durable subscriptions", err);
    return 0;
}
