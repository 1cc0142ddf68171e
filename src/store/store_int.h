/* store/store_int.h - what the store's .c files share: the store struct, the
 * cached statements and the error/step helpers. Not part of the public face.
 *
 * Every statement the store runs in steady state is listed once in
 * STORE_STATEMENTS and prepared (SQLITE_PREPARE_PERSISTENT) when the store
 * opens, so the hot path only binds, steps and resets.
 */
#ifndef FERRY_STORE_INT_H
#define FERRY_STORE_INT_H

#include "store/store.h"

#include <sqlite3.h>

/* XX(id, sql) */
#define STORE_STATEMENTS(XX)                                                                       \
    XX(BEGIN, "BEGIN IMMEDIATE")                                                                   \
    XX(BEGIN_READ, "BEGIN")                                                                        \
    XX(COMMIT, "COMMIT")                                                                           \
    XX(ROLLBACK, "ROLLBACK")                                                                       \
    XX(APPLIED_GET, "SELECT idx, term FROM applied WHERE id = 1")                                  \
    XX(APPLIED_SET, "UPDATE applied SET idx = ?1, term = ?2 WHERE id = 1")                         \
    XX(RES_LOAD, "SELECT rid, name, kind, capacity, ttl_ms, max_deliveries, dlq, last_id, "        \
                 "last_qts, created_ts FROM resources ORDER BY rid")                               \
    XX(RES_BY_NAME, "SELECT rid, name, kind, capacity, ttl_ms, max_deliveries, dlq, last_id, "     \
                    "last_qts, created_ts FROM resources ORDER BY name")                           \
    XX(RES_INSERT, "INSERT INTO resources(name, kind, capacity, ttl_ms, max_deliveries, dlq, "     \
                   "last_id, last_qts, created_ts) VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)")    \
    XX(RES_COUNTERS, "UPDATE resources SET last_id = ?2, last_qts = ?3 WHERE rid = ?1")            \
    XX(RES_DELETE, "DELETE FROM resources WHERE rid = ?1")                                         \
    XX(MSG_INSERT, "INSERT INTO messages(rid, id, ts, qts, deliveries, payload) "                  \
                   "VALUES(?1, ?2, ?3, ?4, ?5, ?6)")                                               \
    XX(MSG_GET, "SELECT ts, qts, deliveries, payload FROM messages WHERE rid = ?1 AND id = ?2")    \
    XX(MSG_DELETE, "DELETE FROM messages WHERE rid = ?1 AND id = ?2")                              \
    XX(MSG_DELETE_THROUGH, "DELETE FROM messages WHERE rid = ?1 AND id <= ?2")                     \
    XX(MSG_FIRST, "SELECT id, qts FROM messages WHERE rid = ?1 ORDER BY id LIMIT 1")               \
    XX(MSG_LAST, "SELECT id FROM messages WHERE rid = ?1 ORDER BY id DESC LIMIT 1")                \
    XX(MSG_PREFIX, "SELECT id, qts FROM messages WHERE rid = ?1 ORDER BY id")                      \
    XX(MSG_BUMP, "UPDATE messages SET deliveries = deliveries + 1 WHERE rid = ?1 AND id = ?2 "     \
                 "RETURNING deliveries")                                                           \
    XX(MSG_MOVE, "INSERT INTO messages(rid, id, ts, qts, deliveries, payload) "                    \
                 "SELECT ?3, ?4, ts, ?5, 0, payload FROM messages WHERE rid = ?1 AND id = ?2")     \
    XX(MSG_IDS, "SELECT id FROM messages WHERE rid = ?1 ORDER BY id")                              \
    XX(MSG_SCAN, "SELECT id, ts, qts, deliveries, payload FROM messages "                          \
                 "WHERE rid = ?1 AND id >= ?2 ORDER BY id LIMIT ?3")                               \
    XX(MSG_ALL,                                                                                    \
       "SELECT id, ts, qts, deliveries, payload FROM messages WHERE rid = ?1 ORDER BY id")         \
    XX(CLEAR_MESSAGES, "DELETE FROM messages")                                                     \
    XX(CLEAR_DURABLES, "DELETE FROM durables")                                                     \
    XX(CLEAR_RESOURCES, "DELETE FROM resources")                                                   \
    XX(DUR_PUT, "INSERT OR REPLACE INTO durables(rid, name, cursor) VALUES(?1, ?2, ?3)")           \
    XX(DUR_DELETE, "DELETE FROM durables WHERE rid = ?1 AND name = ?2")                            \
    XX(DUR_DELETE_ALL, "DELETE FROM durables WHERE rid = ?1")                                      \
    XX(DUR_LOAD, "SELECT name, cursor FROM durables WHERE rid = ?1 ORDER BY name")                 \
    XX(HIST_ADD, "INSERT INTO history(ts, resource, id, state) VALUES(?1, ?2, ?3, ?4)")            \
    XX(HIST_THROUGH,                                                                               \
       "INSERT INTO history(ts, resource, id, state) "                                             \
       "SELECT ?3, ?4, id, ?5 FROM messages WHERE rid = ?1 AND id <= ?2 ORDER BY id")              \
    XX(HIST_KEEP_FROM, "SELECT seq FROM history WHERE ts >= ?1 ORDER BY seq LIMIT 1")              \
    XX(HIST_DELETE_BEFORE, "DELETE FROM history WHERE seq < ?1")                                   \
    XX(HIST_BOUNDS, "SELECT (SELECT min(seq) FROM history), (SELECT max(seq) FROM history)")       \
    XX(HIST_OLDEST, "SELECT ts FROM history ORDER BY seq LIMIT 1")                                 \
    XX(PROD_PUT, "INSERT OR REPLACE INTO producers(pid, highest, last_ms, ring) "                  \
                 "VALUES(?1, ?2, ?3, ?4)")                                                         \
    XX(PROD_DELETE, "DELETE FROM producers WHERE pid = ?1")                                        \
    XX(PROD_LOAD, "SELECT pid, highest, last_ms, ring FROM producers ORDER BY pid")                \
    XX(CLEAR_PRODUCERS, "DELETE FROM producers")

enum store_stmt {
#define STORE_STMT_ENUM(id, sql) ST_##id,
    STORE_STATEMENTS(STORE_STMT_ENUM)
#undef STORE_STMT_ENUM
        ST_COUNT
};

struct store {
    sqlite3 *db;
    char *path;
    uint32_t schema_version;
    int readonly;  /* opened by store_open_readonly */
    int txn;       /* 0 none, 1 write, 2 read */
    int scan_open; /* a store_scan is in progress */
    sqlite3_stmt *stmt[ST_COUNT];
};

/* Step a statement through the fault injector. */
int store_step(struct store *s, sqlite3_stmt *st);
/* Map a SQLite result code to FERRY_E* and fill err with the database path,
 * what was being done and SQLite's message. Returns the FERRY_E* code. */
int store_fail(struct store *s, int rc, const char *what, struct ferry_err *err);
/* Run a statement that returns no rows (bound already); resets it. 0 or error. */
int store_exec_stmt(struct store *s, sqlite3_stmt *st, const char *what, struct ferry_err *err);
/* Bind helpers: ids and timestamps are stored as SQLite's signed 64-bit integers. */
static inline void bind_u64(sqlite3_stmt *st, int i, uint64_t v)
{
    sqlite3_bind_int64(st, i, (sqlite3_int64)v);
}
static inline void bind_text(sqlite3_stmt *st, int i, const char *s)
{
    sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
}
static inline uint64_t col_u64(sqlite3_stmt *st, int i)
{
    return (uint64_t)sqlite3_column_int64(st, i);
}

#endif
