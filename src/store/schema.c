/* schema.c - the schema's migrations and the code that runs them.
 *
 * The schema version lives in meta('schema_version'). A database with no
 * tables is version 0. Opening runs, in order, every migration whose version
 * is above the file's, each in its own transaction together with the new
 * version number, so a crash mid-migration leaves the previous version. A
 * file whose version is above STORE_SCHEMA_VERSION was written by a newer
 * Ferry and is refused (FERRY_EVERSION); a SQLite file with tables but no
 * Ferry application id / meta table is refused as not ours (FERRY_ECORRUPT).
 *
 * To change the schema: append a migration with the next version, bump
 * STORE_SCHEMA_VERSION, document it in docs/storage.md. Never edit a
 * migration that has shipped.
 */
#include "store/schema.h"

#include "store/store_int.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

struct migration {
    uint32_t version;
    const char *sql;
};

static const struct migration migrations[] = {
    {1, "PRAGMA application_id = 1178948185;" /* STORE_APPLICATION_ID */
        "CREATE TABLE meta ("
        "  key TEXT PRIMARY KEY,"
        "  value INTEGER NOT NULL"
        ") WITHOUT ROWID;"
        "CREATE TABLE applied ("
        "  id INTEGER PRIMARY KEY CHECK (id = 1),"
        "  idx INTEGER NOT NULL,"
        "  term INTEGER NOT NULL"
        ");"
        "INSERT INTO applied(id, idx, term) VALUES(1, 0, 0);"
        "CREATE TABLE resources ("
        "  rid INTEGER PRIMARY KEY,"
        "  name TEXT NOT NULL UNIQUE,"
        "  kind INTEGER NOT NULL,"
        "  capacity INTEGER NOT NULL,"
        "  ttl_ms INTEGER NOT NULL,"
        "  max_deliveries INTEGER NOT NULL,"
        "  dlq TEXT NOT NULL,"
        "  last_id INTEGER NOT NULL,"
        "  last_qts INTEGER NOT NULL,"
        "  created_ts INTEGER NOT NULL"
        ");"
        "CREATE TABLE messages ("
        "  rid INTEGER NOT NULL,"
        "  id INTEGER NOT NULL,"
        "  ts INTEGER NOT NULL,"
        "  qts INTEGER NOT NULL,"
        "  deliveries INTEGER NOT NULL,"
        "  payload BLOB NOT NULL,"
        "  PRIMARY KEY (rid, id)"
        ");"
        "CREATE TABLE durables ("
        "  rid INTEGER NOT NULL,"
        "  name TEXT NOT NULL,"
        "  cursor INTEGER NOT NULL,"
        "  PRIMARY KEY (rid, name)"
        ") WITHOUT ROWID;"
        "CREATE TABLE history ("
        "  seq INTEGER PRIMARY KEY,"
        "  ts INTEGER NOT NULL,"
        "  resource TEXT NOT NULL,"
        "  id INTEGER NOT NULL,"
        "  state TEXT NOT NULL"
        ");"},
    /* 2: idempotent producers (docs/storage.md) */
    {2, "CREATE TABLE producers ("
        "  pid BLOB PRIMARY KEY,"
        "  highest INTEGER NOT NULL,"
        "  last_ms INTEGER NOT NULL,"
        "  ring BLOB NOT NULL"
        ") WITHOUT ROWID;"},
};

#define MIGRATION_COUNT (sizeof migrations / sizeof migrations[0])

_Static_assert(1178948185 == STORE_APPLICATION_ID, "application id literal in migration 1");

static int exec(struct store *s, const char *sql, const char *what, struct ferry_err *err)
{
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    sqlite3_free(msg);
    if (rc != SQLITE_OK)
        return store_fail(s, rc, what, err);
    return 0;
}

/* One integer from a one-row query; *found = 0 if no row. */
static int query_int(struct store *s, const char *sql, int64_t *out, int *found,
                     struct ferry_err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return store_fail(s, rc, "reading the schema", err);
    rc = sqlite3_step(st);
    *found = rc == SQLITE_ROW;
    if (rc == SQLITE_ROW)
        *out = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return store_fail(s, rc, "reading the schema", err);
    return 0;
}

/* The file's schema version: 0 for an empty database. */
static int read_version(struct store *s, uint32_t *version, struct ferry_err *err)
{
    int64_t v = 0, app = 0, tables = 0;
    int found = 0;
    int rc = query_int(s, "PRAGMA application_id", &app, &found, err);
    if (rc == 0)
        rc = query_int(s, "SELECT count(*) FROM sqlite_schema", &tables, &found, err);
    if (rc != 0)
        return rc;
    if (tables == 0 && app == 0) {
        *version = 0;
        return 0;
    }
    if (app != STORE_APPLICATION_ID)
        return ferry_err_set(err, FERRY_ECORRUPT,
                             "%s is not a Ferry database (SQLite application_id %lld, %lld "
                             "tables); move it away or point db_path elsewhere",
                             s->path, (long long)app, (long long)tables);
    rc = query_int(s, "SELECT value FROM meta WHERE key = 'schema_version'", &v, &found, err);
    if (rc != 0)
        return ferry_err_wrap(err, "%s looks like a damaged Ferry database", s->path);
    if (!found || v < 1 || v > UINT32_MAX)
        return ferry_err_set(err, FERRY_ECORRUPT,
                             "%s: Ferry database without a valid schema_version; restore it from "
                             "a backup or let the node resynchronise from the cluster",
                             s->path);
    *version = (uint32_t)v;
    return 0;
}

static int run_migration(struct store *s, const struct migration *m, struct ferry_err *err)
{
    char what[64];
    snprintf(what, sizeof what, "migrating the schema to version %u", m->version);
    int rc = exec(s, "BEGIN IMMEDIATE", what, err);
    if (rc != 0)
        return rc;
    rc = exec(s, m->sql, what, err);
    if (rc == 0) {
        char sql[128];
        snprintf(sql, sizeof sql,
                 "INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', %u)",
                 m->version);
        rc = exec(s, sql, what, err);
    }
    if (rc == 0)
        rc = exec(s, "COMMIT", what, err);
    if (rc != 0 && !sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    return rc;
}

int store_schema_migrate(struct store *s, struct ferry_err *err)
{
    uint32_t version = 0;
    int rc = read_version(s, &version, err);
    if (rc != 0)
        return rc;
    if (version > STORE_SCHEMA_VERSION)
        return ferry_err_set(err, FERRY_EVERSION,
                             "%s has schema version %u but this Ferry (%s) supports at most "
                             "version %u: it was written by a newer Ferry; run that version or "
                             "restore a backup",
                             s->path, version, FERRY_VERSION, STORE_SCHEMA_VERSION);
    for (size_t i = 0; i < MIGRATION_COUNT; i++) {
        assert(migrations[i].version == i + 1);
        if (migrations[i].version <= version)
            continue;
        rc = run_migration(s, &migrations[i], err);
        if (rc != 0)
            return rc;
        version = migrations[i].version;
    }
    assert(version == STORE_SCHEMA_VERSION);
    s->schema_version = version;
    return 0;
}
