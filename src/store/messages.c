/* messages.c - rows of the messages table: channel events and queue items.
 *
 * The table is an ordinary rowid table with a (rid, id) primary-key index:
 * payloads sit in the table b-tree, appended in rowid order, and the index
 * stays small, so every access is by key or key range and the hot path never
 * scans. (As a WITHOUT ROWID table, 1 KiB payloads fit three to a page and
 * commits cost three times as much: bench/broker_apply_bench.) Removal of a prefix (capacity drops,
 * expiry, deletes) first copies the (id, state) of the doomed rows into history with one
 * INSERT..SELECT, then deletes the range.
 */
#include "store/store_int.h"

#include <assert.h>

static const uint8_t empty_payload[1];

static void read_msg(sqlite3_stmt *st, int first, struct store_msg *m)
{
    /* columns: ts, qts, deliveries, payload starting at `first` */
    m->ts = col_u64(st, first);
    m->qts = col_u64(st, first + 1);
    m->deliveries = (uint32_t)sqlite3_column_int64(st, first + 2);
    const void *p = sqlite3_column_blob(st, first + 3);
    int n = sqlite3_column_bytes(st, first + 3);
    m->payload = p ? p : empty_payload;
    m->payload_len = (uint32_t)n;
}

int store_msg_insert(struct store *s, uint64_t rid, const struct store_msg *m,
                     struct ferry_err *err)
{
    assert(s->txn == 1);
    assert(m->payload != NULL || m->payload_len == 0);
    sqlite3_stmt *st = s->stmt[ST_MSG_INSERT];
    bind_u64(st, 1, rid);
    bind_u64(st, 2, m->id);
    bind_u64(st, 3, m->ts);
    bind_u64(st, 4, m->qts);
    sqlite3_bind_int64(st, 5, m->deliveries);
    sqlite3_bind_blob(st, 6, m->payload ? (const void *)m->payload : empty_payload,
                      (int)m->payload_len, SQLITE_STATIC);
    return store_exec_stmt(s, st, "storing a message", err);
}

int store_msg_get(struct store *s, uint64_t rid, uint64_t id, struct store_msg *m,
                  struct ferry_err *err)
{
    sqlite3_stmt *st = s->stmt[ST_MSG_GET];
    sqlite3_reset(st);
    bind_u64(st, 1, rid);
    bind_u64(st, 2, id);
    int rc = store_step(s, st);
    if (rc == SQLITE_ROW) {
        m->id = id;
        read_msg(st, 0, m);
        return 1; /* the row stays current until the next get (payload points into it) */
    }
    sqlite3_reset(st);
    if (rc == SQLITE_DONE)
        return 0;
    return store_fail(s, rc, "reading a message", err);
}

static int history_add(struct store *s, uint64_t ts, const char *name, uint64_t id,
                       const char *state, struct ferry_err *err)
{
    sqlite3_stmt *st = s->stmt[ST_HIST_ADD];
    bind_u64(st, 1, ts);
    bind_text(st, 2, name);
    bind_u64(st, 3, id);
    bind_text(st, 4, state);
    return store_exec_stmt(s, st, "recording history", err);
}

int store_msg_remove(struct store *s, uint64_t rid, uint64_t id, const char *name,
                     const char *state, uint64_t ts, struct ferry_err *err)
{
    assert(s->txn == 1);
    sqlite3_stmt *st = s->stmt[ST_MSG_DELETE];
    bind_u64(st, 1, rid);
    bind_u64(st, 2, id);
    int rc = store_exec_stmt(s, st, "removing a message", err);
    if (rc != 0)
        return rc;
    if (sqlite3_changes(s->db) == 0)
        return 0;
    rc = history_add(s, ts, name, id, state, err);
    return rc != 0 ? rc : 1;
}

int store_msg_remove_through(struct store *s, uint64_t rid, uint64_t max_id, const char *name,
                             const char *state, uint64_t ts, uint64_t *removed,
                             struct ferry_err *err)
{
    assert(s->txn == 1);
    if (max_id > INT64_MAX)
        max_id = INT64_MAX;
    sqlite3_stmt *st = s->stmt[ST_HIST_THROUGH];
    bind_u64(st, 1, rid);
    bind_u64(st, 2, max_id);
    bind_u64(st, 3, ts);
    bind_text(st, 4, name);
    bind_text(st, 5, state);
    int rc = store_exec_stmt(s, st, "recording history", err);
    if (rc != 0)
        return rc;
    st = s->stmt[ST_MSG_DELETE_THROUGH];
    bind_u64(st, 1, rid);
    bind_u64(st, 2, max_id);
    rc = store_exec_stmt(s, st, "removing messages", err);
    if (rc != 0)
        return rc;
    *removed = (uint64_t)sqlite3_changes64(s->db);
    return 0;
}

int store_msg_expired_prefix(struct store *s, uint64_t rid, uint64_t cutoff_qts, uint64_t *count,
                             uint64_t *last_id, struct ferry_err *err)
{
    sqlite3_stmt *st = s->stmt[ST_MSG_PREFIX];
    bind_u64(st, 1, rid);
    *count = 0;
    *last_id = 0;
    int rc;
    while ((rc = store_step(s, st)) == SQLITE_ROW) {
        if (col_u64(st, 1) > cutoff_qts)
            break;
        (*count)++;
        *last_id = col_u64(st, 0);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_fail(s, rc, "looking for expired messages", err);
    return 0;
}

int store_msg_first(struct store *s, uint64_t rid, uint64_t *id, uint64_t *qts,
                    struct ferry_err *err)
{
    sqlite3_stmt *st = s->stmt[ST_MSG_FIRST];
    bind_u64(st, 1, rid);
    int rc = store_step(s, st);
    if (rc == SQLITE_ROW) {
        *id = col_u64(st, 0);
        *qts = col_u64(st, 1);
    }
    sqlite3_reset(st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return store_fail(s, rc, "reading the oldest message", err);
}

int store_msg_last(struct store *s, uint64_t rid, uint64_t *id, struct ferry_err *err)
{
    sqlite3_stmt *st = s->stmt[ST_MSG_LAST];
    bind_u64(st, 1, rid);
    int rc = store_step(s, st);
    if (rc == SQLITE_ROW)
        *id = col_u64(st, 0);
    sqlite3_reset(st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return store_fail(s, rc, "reading the newest message", err);
}

int store_msg_bump_deliveries(struct store *s, uint64_t rid, uint64_t id, uint32_t *deliveries,
                              struct ferry_err *err)
{
    assert(s->txn == 1);
    sqlite3_stmt *st = s->stmt[ST_MSG_BUMP];
    bind_u64(st, 1, rid);
    bind_u64(st, 2, id);
    int rc = store_step(s, st);
    if (rc == SQLITE_ROW) {
        int64_t d = sqlite3_column_int64(st, 0);
        *deliveries = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
        rc = store_step(s, st);
        if (rc == SQLITE_DONE)
            rc = SQLITE_ROW;
    }
    sqlite3_reset(st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return store_fail(s, rc, "counting a delivery", err);
}

int store_msg_move(struct store *s, uint64_t rid, uint64_t id, uint64_t to_rid, uint64_t new_id,
                   uint64_t new_qts, const char *name, const char *state, uint64_t ts,
                   struct ferry_err *err)
{
    assert(s->txn == 1);
    assert(rid != to_rid);
    sqlite3_stmt *st = s->stmt[ST_MSG_MOVE];
    bind_u64(st, 1, rid);
    bind_u64(st, 2, id);
    bind_u64(st, 3, to_rid);
    bind_u64(st, 4, new_id);
    bind_u64(st, 5, new_qts);
    int rc = store_exec_stmt(s, st, "moving a message", err);
    if (rc != 0)
        return rc;
    if (sqlite3_changes(s->db) == 0)
        return 0;
    rc = store_msg_remove(s, rid, id, name, state, ts, err);
    if (rc < 0)
        return rc;
    assert(rc == 1);
    return 1;
}

int store_msg_ids(struct store *s, uint64_t rid, store_id_cb cb, void *ctx, struct ferry_err *err)
{
    sqlite3_stmt *st = s->stmt[ST_MSG_IDS];
    bind_u64(st, 1, rid);
    int rc, stop = 0;
    while ((rc = store_step(s, st)) == SQLITE_ROW) {
        stop = cb(ctx, col_u64(st, 0));
        if (stop != 0)
            break;
    }
    sqlite3_reset(st);
    if (stop != 0)
        return stop;
    if (rc != SQLITE_DONE)
        return store_fail(s, rc, "loading queue items", err);
    return 0;
}

int store_msgs_walk(struct store *s, uint64_t rid, store_msg_cb cb, void *ctx,
                    struct ferry_err *err)
{
    sqlite3_stmt *st = s->stmt[ST_MSG_ALL];
    bind_u64(st, 1, rid);
    struct store_msg m;
    int rc, stop = 0;
    while ((rc = store_step(s, st)) == SQLITE_ROW) {
        m.id = col_u64(st, 0);
        read_msg(st, 1, &m);
        stop = cb(ctx, &m);
        if (stop != 0)
            break;
    }
    sqlite3_reset(st);
    if (stop != 0)
        return stop;
    if (rc != SQLITE_DONE)
        return store_fail(s, rc, "reading messages", err);
    return 0;
}

int store_scan_open(struct store *s, uint64_t rid, uint64_t from_id, uint32_t limit,
                    struct ferry_err *err)
{
    (void)err;
    assert(!s->scan_open);
    sqlite3_stmt *st = s->stmt[ST_MSG_SCAN];
    bind_u64(st, 1, rid);
    bind_u64(st, 2, from_id > INT64_MAX ? INT64_MAX : from_id);
    sqlite3_bind_int64(st, 3, limit);
    s->scan_open = 1;
    return 0;
}

int store_scan_next(struct store *s, struct store_msg *m, struct ferry_err *err)
{
    assert(s->scan_open);
    sqlite3_stmt *st = s->stmt[ST_MSG_SCAN];
    int rc = store_step(s, st);
    if (rc == SQLITE_ROW) {
        m->id = col_u64(st, 0);
        read_msg(st, 1, m);
        return 1;
    }
    if (rc == SQLITE_DONE)
        return 0;
    return store_fail(s, rc, "reading messages", err);
}

void store_scan_close(struct store *s)
{
    assert(s->scan_open);
    sqlite3_reset(s->stmt[ST_MSG_SCAN]);
    s->scan_open = 0;
}
