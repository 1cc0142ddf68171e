/* store.c - opening the database, transactions, errors and the fault hook.
 *
 * Open: sqlite3_open_v2 (no mutex: a store is used by one thread at a
 * time), extended result codes, journal_mode=WAL (checked: a file system
 * that cannot do WAL is an error, not a silent fallback), synchronous FULL or
 * NORMAL, an 8 MiB page cache, then migrations (schema.c), then every
 * statement of STORE_STATEMENTS is prepared once. The first read of a garbage
 * file fails with SQLITE_NOTADB, reported as FERRY_ECORRUPT.
 *
 * A read-only store (store_open_readonly, for snapshots) is a second
 * connection to a file already open: same page cache and error settings,
 * query_only, no journal or synchronous change (it requires WAL, so its long
 * read transactions never block the writer), and no migration beyond
 * checking the schema version.
 *
 * Every sqlite3_step goes through store_step, where the test-only fault
 * injector can substitute an error code.
 */
#include "store/store_int.h"

#include "store/schema.h"
#include "util/alloc.h"

#include <assert.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

static const char *const statement_sql[ST_COUNT] = {
#define STORE_STMT_SQL(id, sql) [ST_##id] = sql,
    STORE_STATEMENTS(STORE_STMT_SQL)
#undef STORE_STMT_SQL
};

/* ---- fault injection (process-wide, tests only) ----
 * Atomic because stores on different threads step at the same time (a
 * snapshot's read-only connection streams on a worker thread). */

static _Atomic long fault_countdown = -1;
static _Atomic long fault_repeat;
static _Atomic long fault_hits;
static _Atomic int fault_code;

void store_fault_inject(int sqlite_code, long countdown, long repeat)
{
    fault_code = sqlite_code;
    fault_countdown = countdown;
    fault_repeat = repeat;
    fault_hits = 0;
}

long store_faults_injected(void)
{
    return fault_hits;
}

static int fault_now(void)
{
    long c = atomic_load_explicit(&fault_countdown, memory_order_relaxed);
    if (c < 0)
        return 0;
    if (c > 0) {
        atomic_fetch_sub(&fault_countdown, 1);
        return 0;
    }
    long r = fault_repeat;
    if (r == 0)
        return 0;
    if (r > 0)
        fault_repeat = r - 1;
    fault_hits++;
    return 1;
}

int store_step(struct store *s, sqlite3_stmt *st)
{
    (void)s;
    if (fault_now())
        return fault_code;
    return sqlite3_step(st);
}

/* ---- errors ---- */

static int map_code(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_FULL:
        return FERRY_ENOSPC;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return FERRY_ECORRUPT;
    case SQLITE_NOMEM:
        return FERRY_ENOMEM;
    default:
        return FERRY_EIO;
    }
}

int store_fail(struct store *s, int rc, const char *what, struct ferry_err *err)
{
    int code = map_code(rc);
    const char *detail = sqlite3_errstr(rc);
    if (s->db && sqlite3_extended_errcode(s->db) == rc)
        detail = sqlite3_errmsg(s->db);
    else if (fault_hits > 0 && rc == fault_code)
        detail = "injected fault";
    return ferry_err_set(err, code, "database %s: %s failed: %s (%s, SQLite code %d)", s->path,
                         what, detail, sqlite3_errstr(rc), rc);
}

int store_exec_stmt(struct store *s, sqlite3_stmt *st, const char *what, struct ferry_err *err)
{
    int rc = store_step(s, st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW)
        return store_fail(s, rc, what, err);
    return 0;
}

/* ---- open / close ---- */

static int exec_pragma(struct store *s, const char *sql, struct ferry_err *err)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return store_fail(s, rc, sql, err);
    return 0;
}

/* Run a journal_mode pragma (setting or reading it) and insist on WAL. */
static int want_wal(struct store *s, const char *sql, struct ferry_err *err)
{
    char what[64];
    snprintf(what, sizeof what, "opening (%s)", sql);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return store_fail(s, rc, what, err);
    rc = sqlite3_step(st);
    char mode[16] = "";
    if (rc == SQLITE_ROW)
        snprintf(mode, sizeof mode, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return store_fail(s, rc, what, err);
    if (strcmp(mode, "wal") != 0)
        return ferry_err_set(err, FERRY_EIO,
                             "database %s: cannot use WAL mode (journal_mode stays '%s'); put the "
                             "data directory on a local file system",
                             s->path, mode);
    return 0;
}

static int configure(struct store *s, int synchronous_full, struct ferry_err *err)
{
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, 0);
    int rc = want_wal(s, "PRAGMA journal_mode=WAL", err);
    if (rc == 0)
        rc = exec_pragma(
            s, synchronous_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", err);
    if (rc == 0)
        rc = exec_pragma(s, "PRAGMA cache_size=-8192", err);
    if (rc == 0)
        rc = exec_pragma(s, "PRAGMA temp_store=MEMORY", err);
    if (rc == 0)
        rc = exec_pragma(s, "PRAGMA foreign_keys=OFF", err);
    return rc;
}

static int prepare_all(struct store *s, struct ferry_err *err)
{
    for (int i = 0; i < ST_COUNT; i++) {
        int rc = sqlite3_prepare_v3(s->db, statement_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                    &s->stmt[i], NULL);
        if (rc != SQLITE_OK)
            return store_fail(s, rc, "preparing statements", err);
    }
    return 0;
}

/* A reader takes the pragmas that matter to a connection that never writes.
 * The file must already be in WAL mode: in rollback mode a long read would
 * make the writer's commits fail with SQLITE_BUSY. */
static int configure_reader(struct store *s, struct ferry_err *err)
{
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, 0);
    int rc = want_wal(s, "PRAGMA journal_mode", err);
    /* The reader streams snapshots and digests: one pass over everything,
     * which a large page cache would only fill (and keep in memory). */
    if (rc == 0)
        rc = exec_pragma(s, "PRAGMA cache_size=-512", err);
    if (rc == 0)
        rc = exec_pragma(s, "PRAGMA temp_store=MEMORY", err);
    if (rc == 0)
        rc = exec_pragma(s, "PRAGMA query_only=1", err);
    return rc;
}

/* synchronous_full < 0: a read-only connection. */
static int open_conn(struct store **out, const char *path, int synchronous_full,
                     struct ferry_err *err)
{
    assert(out != NULL);
    assert(path != NULL);
    *out = NULL;
    struct store *s = ferry_calloc(1, sizeof *s);
    if (s == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory opening %s", path);
    s->path = ferry_strdup(path);
    if (s->path == NULL) {
        ferry_free(s);
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory opening %s", path);
    }
    s->readonly = synchronous_full < 0;
    int flags = s->readonly ? SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX
                            : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(path, &s->db, flags, NULL);
    if (rc != SQLITE_OK)
        rc = store_fail(s, rc, "opening", err);
    if (rc == 0)
        rc = s->readonly ? configure_reader(s, err) : configure(s, synchronous_full, err);
    if (rc == 0)
        rc = store_schema_migrate(s, err);
    if (rc == 0)
        rc = prepare_all(s, err);
    if (rc != 0) {
        store_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

int store_open(struct store **out, const char *path, int synchronous_full, struct ferry_err *err)
{
    return open_conn(out, path, synchronous_full ? 1 : 0, err);
}

int store_open_readonly(struct store **out, const char *path, struct ferry_err *err)
{
    return open_conn(out, path, -1, err);
}

void store_close(struct store *s)
{
    if (s == NULL)
        return;
    if (s->db && !sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    for (int i = 0; i < ST_COUNT; i++) {
        sqlite3_finalize(s->stmt[i]);
        s->stmt[i] = NULL;
    }
    sqlite3_close(s->db);
    s->db = NULL;
    ferry_free(s->path);
    s->path = NULL;
    ferry_free(s);
}

const char *store_path(const struct store *s)
{
    return s->path;
}

uint32_t store_schema_version(const struct store *s)
{
    return s->schema_version;
}

int store_pragmas(struct store *s, char *journal_mode, size_t cap, int *synchronous,
                  struct ferry_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT * FROM pragma_journal_mode, pragma_synchronous", -1,
                                &st, NULL);
    if (rc != SQLITE_OK)
        return store_fail(s, rc, "reading pragmas", err);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        snprintf(journal_mode, cap, "%s", (const char *)sqlite3_column_text(st, 0));
        *synchronous = sqlite3_column_int(st, 1);
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW)
        return store_fail(s, rc, "reading pragmas", err);
    return 0;
}

/* ---- transactions ---- */

/* A row handed out by store_msg_get keeps its statement active; let it go
 * before a transaction boundary so no read lingers across it. */
static void release_reads(struct store *s)
{
    sqlite3_reset(s->stmt[ST_MSG_GET]);
}

int store_begin(struct store *s, struct ferry_err *err)
{
    assert(s->txn == 0);
    assert(!s->readonly);
    release_reads(s);
    int rc = store_exec_stmt(s, s->stmt[ST_BEGIN], "beginning a transaction", err);
    if (rc == 0)
        s->txn = 1;
    return rc;
}

int store_commit(struct store *s, struct ferry_err *err)
{
    assert(s->txn == 1);
    assert(!s->scan_open);
    release_reads(s);
    int rc = store_exec_stmt(s, s->stmt[ST_COMMIT], "committing", err);
    if (rc != 0) {
        store_rollback(s);
        return rc;
    }
    s->txn = 0;
    return 0;
}

void store_rollback(struct store *s)
{
    if (s->scan_open)
        store_scan_close(s);
    release_reads(s);
    if (!sqlite3_get_autocommit(s->db)) {
        /* ROLLBACK is not routed through the fault injector: it must work. */
        int rc = sqlite3_step(s->stmt[ST_ROLLBACK]);
        sqlite3_reset(s->stmt[ST_ROLLBACK]);
        assert(rc == SQLITE_DONE || !sqlite3_get_autocommit(s->db));
        (void)rc;
    }
    s->txn = 0;
}

int store_read_begin(struct store *s, struct ferry_err *err)
{
    assert(s->txn == 0);
    release_reads(s);
    int rc = store_exec_stmt(s, s->stmt[ST_BEGIN_READ], "beginning a read", err);
    if (rc == 0)
        s->txn = 2;
    return rc;
}

void store_read_end(struct store *s)
{
    assert(s->txn == 2);
    if (s->scan_open)
        store_scan_close(s);
    release_reads(s);
    if (!sqlite3_get_autocommit(s->db)) {
        sqlite3_step(s->stmt[ST_COMMIT]);
        sqlite3_reset(s->stmt[ST_COMMIT]);
    }
    if (!sqlite3_get_autocommit(
            s->db)) { /* the COMMIT of a read failed: let go of the read anyway */
        sqlite3_step(s->stmt[ST_ROLLBACK]);
        sqlite3_reset(s->stmt[ST_ROLLBACK]);
    }
    s->txn = 0;
}

int store_txn(const struct store *s)
{
    return s->txn;
}

/* ---- last applied ---- */

int store_last_applied(struct store *s, uint64_t *index, uint64_t *term, struct ferry_err *err)
{
    sqlite3_stmt *st = s->stmt[ST_APPLIED_GET];
    int rc = store_step(s, st);
    if (rc == SQLITE_ROW) {
        *index = col_u64(st, 0);
        *term = col_u64(st, 1);
    }
    sqlite3_reset(st);
    if (rc == SQLITE_ROW)
        return 0;
    if (rc == SQLITE_DONE)
        return ferry_err_set(err, FERRY_ECORRUPT, "database %s: the applied row is missing",
                             s->path);
    return store_fail(s, rc, "reading last_applied", err);
}

int store_set_last_applied(struct store *s, uint64_t index, uint64_t term, struct ferry_err *err)
{
    assert(s->txn == 1);
    sqlite3_stmt *st = s->stmt[ST_APPLIED_SET];
    bind_u64(st, 1, index);
    bind_u64(st, 2, term);
    return store_exec_stmt(s, st, "writing last_applied", err);
}
