/* history.c - the local record of what happened to messages that left.
 *
 * Rows are appended with increasing seq (INTEGER PRIMARY KEY) and removed
 * only from the oldest end, so seq stays contiguous and the record count is
 * max(seq) - min(seq) + 1 without a scan. Pruning by age walks from the
 * oldest row to the first one young enough and deletes everything before it
 * (timestamps come from the leader's clock and may step back slightly; such
 * a row is kept until the rows before it are old enough).
 */
#include "store/store_int.h"

#include <assert.h>

int store_history_add(struct store *s, uint64_t ts, const char *name, uint64_t id,
                      const char *state, struct ferry_err *err)
{
    assert(s->txn == 1);
    sqlite3_stmt *st = s->stmt[ST_HIST_ADD];
    bind_u64(st, 1, ts);
    bind_text(st, 2, name);
    bind_u64(st, 3, id);
    bind_text(st, 4, state);
    return store_exec_stmt(s, st, "recording history", err);
}

static int bounds(struct store *s, int64_t *lo, int64_t *hi, struct ferry_err *err)
{
    sqlite3_stmt *st = s->stmt[ST_HIST_BOUNDS];
    int rc = store_step(s, st);
    *lo = *hi = 0;
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL) {
        *lo = sqlite3_column_int64(st, 0);
        *hi = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW)
        return store_fail(s, rc, "reading history bounds", err);
    return 0;
}

static int delete_before(struct store *s, int64_t seq, uint64_t *removed, struct ferry_err *err)
{
    sqlite3_stmt *st = s->stmt[ST_HIST_DELETE_BEFORE];
    sqlite3_bind_int64(st, 1, seq);
    int rc = store_exec_stmt(s, st, "pruning history", err);
    if (rc == 0)
        *removed += (uint64_t)sqlite3_changes64(s->db);
    return rc;
}

static int prune_by_age(struct store *s, uint64_t min_ts, uint64_t *removed, struct ferry_err *err)
{
    int64_t lo, hi;
    int rc = bounds(s, &lo, &hi, err);
    if (rc != 0 || hi == 0)
        return rc;
    sqlite3_stmt *st = s->stmt[ST_HIST_KEEP_FROM];
    bind_u64(st, 1, min_ts);
    rc = store_step(s, st);
    int64_t keep_from = hi + 1;
    if (rc == SQLITE_ROW)
        keep_from = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_fail(s, rc, "pruning history", err);
    return keep_from > lo ? delete_before(s, keep_from, removed, err) : 0;
}

int store_history_prune(struct store *s, uint64_t min_ts, uint64_t max_records, uint64_t *removed,
                        struct ferry_err *err)
{
    assert(s->txn == 1);
    *removed = 0;
    int rc = 0;
    if (min_ts > 0)
        rc = prune_by_age(s, min_ts, removed, err);
    if (rc != 0 || max_records == 0)
        return rc;
    int64_t lo, hi;
    rc = bounds(s, &lo, &hi, err);
    if (rc != 0 || hi == 0)
        return rc;
    if ((uint64_t)(hi - lo + 1) <= max_records)
        return 0;
    return delete_before(s, hi - (int64_t)max_records + 1, removed, err);
}

int store_history_stats(struct store *s, uint64_t *count, uint64_t *oldest_ts,
                        struct ferry_err *err)
{
    int64_t lo, hi;
    int rc = bounds(s, &lo, &hi, err);
    if (rc != 0)
        return rc;
    *count = hi == 0 ? 0 : (uint64_t)(hi - lo + 1);
    *oldest_ts = 0;
    if (*count == 0)
        return 0;
    sqlite3_stmt *st = s->stmt[ST_HIST_OLDEST];
    rc = store_step(s, st);
    if (rc == SQLITE_ROW)
        *oldest_ts = col_u64(st, 0);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_fail(s, rc, "reading history", err);
    return 0;
}
