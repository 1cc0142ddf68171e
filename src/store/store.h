/* store/store.h - Ferry's message database: one SQLite file in WAL mode.
 *
 * The store is the only code that speaks SQL. It knows tables and rows
 * (resources, messages, durable cursors, history, last_applied), never
 * commands or clients: the broker decides *what* changes, the store makes
 * the change with a cached prepared statement. docs/storage.md describes the
 * schema, its migrations and what lives in memory versus on disk.
 *
 * Transactions: every write happens between store_begin and store_commit
 * (or store_rollback); reads outside a write transaction may be grouped in a
 * read transaction (store_read_begin/store_read_end) so that a batch of reads
 * sees one snapshot and pays for one lock. A failed commit leaves no
 * transaction open (it is rolled back).
 *
 * Errors: functions return 0 (or a documented positive count/flag) or a
 * negative FERRY_E* code with a message naming the database and the
 * operation: SQLITE_FULL -> FERRY_ENOSPC, SQLITE_CORRUPT/NOTADB ->
 * FERRY_ECORRUPT, SQLITE_NOMEM -> FERRY_ENOMEM, anything else -> FERRY_EIO.
 *
 * Ownership: store_open allocates the store, store_close frees it. Strings
 * passed in are copied or used only during the call. Row data handed out
 * (struct store_msg.payload, names in callbacks) points into SQLite's
 * buffers and is valid only until the next call on the store.
 *
 * Threading: a store (one SQLite connection, opened without SQLite's own
 * mutex) is used by one thread at a time; no locking inside. Different
 * stores on the same file may be used by different threads at once: that is
 * how a snapshot streams from a read-only store on a worker thread while the
 * loop thread keeps writing through the main one. Handing a store to another
 * thread needs the usual happens-before (a queue, a mutex, an atomic).
 */
#ifndef FERRY_STORE_H
#define FERRY_STORE_H

#include "util/err.h"
#include <stddef.h>
#include <stdint.h>

#define STORE_SCHEMA_VERSION 2          /* the newest schema this build knows */
#define STORE_APPLICATION_ID 0x46455259 /* "FERY" in PRAGMA application_id */
#define STORE_NAME_MAX 255

/* History states (the `state` column of the history table). */
#define STORE_HIST_CONSUMED "consumed"
#define STORE_HIST_EXPIRED "expired"
#define STORE_HIST_DROPPED "dropped"
#define STORE_HIST_DEAD_LETTERED "dead-lettered"
#define STORE_HIST_DELETED "deleted"

struct store;

/* ---- lifecycle ---- */

/* Open (creating if missing) the database at path, set WAL mode and
 * synchronous=FULL (synchronous_full) or NORMAL, and migrate the schema to
 * STORE_SCHEMA_VERSION. Fails with FERRY_EVERSION for a database written by
 * a newer Ferry, FERRY_ECORRUPT for a file that is not a (Ferry) database,
 * FERRY_EIO when the file cannot be opened or written. */
int store_open(struct store **out, const char *path, int synchronous_full, struct ferry_err *err);
/* Open a second, read-only connection to the database at path, which an
 * open store has already created and migrated (WAL mode is required, not
 * set). Only reads and read transactions may be used on it: a read
 * transaction (store_read_begin, then any read) sees one snapshot of the file
 * however long it lasts while the writer keeps committing; the writer's WAL
 * cannot be checkpointed past that snapshot until store_read_end, so keep it
 * as short as the job allows. Same errors as store_open. */
int store_open_readonly(struct store **out, const char *path, struct ferry_err *err);
/* Close the database (an open transaction is rolled back) and free s. */
void store_close(struct store *s);

const char *store_path(const struct store *s);
/* Schema version found in the file after open (== STORE_SCHEMA_VERSION). */
uint32_t store_schema_version(const struct store *s);
/* Current PRAGMA journal_mode ("wal") and synchronous (1 NORMAL, 2 FULL), read back from SQLite. */
int store_pragmas(struct store *s, char *journal_mode, size_t cap, int *synchronous,
                  struct ferry_err *err);

/* ---- transactions ---- */

int store_begin(struct store *s, struct ferry_err *err);
/* Commit; on failure the transaction is rolled back and an error returned. */
int store_commit(struct store *s, struct ferry_err *err);
/* Abandon the open write transaction (no-op if none). */
void store_rollback(struct store *s);
int store_read_begin(struct store *s, struct ferry_err *err);
void store_read_end(struct store *s);
/* 0 none, 1 write transaction, 2 read transaction. */
int store_txn(const struct store *s);

/* ---- last applied (index, term) ---- */

int store_last_applied(struct store *s, uint64_t *index, uint64_t *term, struct ferry_err *err);
int store_set_last_applied(struct store *s, uint64_t index, uint64_t term, struct ferry_err *err);

/* ---- resources ---- */

struct store_resource {
    uint64_t rid; /* the row's internal id (local to this database) */
    char name[STORE_NAME_MAX + 1];
    uint8_t kind; /* 1 channel, 2 queue */
    uint64_t capacity;
    uint64_t ttl_ms;
    uint32_t max_deliveries;
    char dlq[STORE_NAME_MAX + 1];
    uint64_t last_id;  /* last event/item id assigned (ids are never reused) */
    uint64_t last_qts; /* enqueue timestamp of the newest message (monotonic) */
    uint64_t created_ts;
};

/* Called once per resource in rid order; a non-zero return stops the walk and is returned. */
typedef int (*store_resource_cb)(void *ctx, const struct store_resource *r);
int store_resources_load(struct store *s, store_resource_cb cb, void *ctx, struct ferry_err *err);
/* The same, in name order (byte-wise): the canonical order of snapshots and
 * digests, which must not depend on the file-local rid. cb may walk the
 * resource's messages and durables (other statements) during the call. */
int store_resources_by_name(struct store *s, store_resource_cb cb, void *ctx,
                            struct ferry_err *err);
/* Insert r (rid ignored); the new rid is written to r->rid. */
int store_resource_insert(struct store *s, struct store_resource *r, struct ferry_err *err);
int store_resource_set_counters(struct store *s, uint64_t rid, uint64_t last_id, uint64_t last_qts,
                                struct ferry_err *err);
/* Delete every resource, message and durable cursor, leaving no history
 * records (a snapshot restore replaces the live state; history stays).
 * last_applied and history are untouched. */
int store_clear_live(struct store *s, struct ferry_err *err);
/* Delete the resource row, its durable cursors and its messages; each
 * message leaves a history record (name, id, "deleted", ts). *removed = how
 * many messages were deleted. */
int store_resource_delete(struct store *s, uint64_t rid, const char *name, uint64_t ts,
                          uint64_t *removed, struct ferry_err *err);

/* ---- messages (channel events and queue items share one table) ---- */

struct store_msg {
    uint64_t id;
    uint64_t ts;            /* publish time, as delivered */
    uint64_t qts;           /* enqueue time in this resource (TTL counts from it) */
    uint32_t deliveries;    /* queue items: failed deliveries so far */
    const uint8_t *payload; /* valid until the next call on the store */
    uint32_t payload_len;
};

int store_msg_insert(struct store *s, uint64_t rid, const struct store_msg *m,
                     struct ferry_err *err);
/* Read one message: 1 found (m filled), 0 missing, or an error. */
int store_msg_get(struct store *s, uint64_t rid, uint64_t id, struct store_msg *m,
                  struct ferry_err *err);
/* Remove one message and record (name, id, state, ts) in history: 1 removed, 0 missing. */
int store_msg_remove(struct store *s, uint64_t rid, uint64_t id, const char *name,
                     const char *state, uint64_t ts, struct ferry_err *err);
/* Remove every message with id <= max_id, each with a history record; *removed = count. */
int store_msg_remove_through(struct store *s, uint64_t rid, uint64_t max_id, const char *name,
                             const char *state, uint64_t ts, uint64_t *removed,
                             struct ferry_err *err);
/* Walk messages in id order from the first while qts <= cutoff_qts (the
 * expired prefix: qts never decreases with id): *count of them and the id
 * of the last one (0 if none). Nothing is changed. */
int store_msg_expired_prefix(struct store *s, uint64_t rid, uint64_t cutoff_qts, uint64_t *count,
                             uint64_t *last_id, struct ferry_err *err);
/* First (lowest id) message: 1 found (*id, *qts), 0 none. */
int store_msg_first(struct store *s, uint64_t rid, uint64_t *id, uint64_t *qts,
                    struct ferry_err *err);
/* Last (highest id) message: 1 found, 0 none. */
int store_msg_last(struct store *s, uint64_t rid, uint64_t *id, struct ferry_err *err);
/* deliveries += 1: 1 done (*deliveries = the new value), 0 missing. */
int store_msg_bump_deliveries(struct store *s, uint64_t rid, uint64_t id, uint32_t *deliveries,
                              struct ferry_err *err);
/* Copy message (rid, id) to (to_rid, new_id) with qts = new_qts and
 * deliveries = 0 (payload and ts kept), then remove the original with a
 * history record (name, id, state, ts). 1 moved, 0 missing. */
int store_msg_move(struct store *s, uint64_t rid, uint64_t id, uint64_t to_rid, uint64_t new_id,
                   uint64_t new_qts, const char *name, const char *state, uint64_t ts,
                   struct ferry_err *err);
/* Every message id of rid in ascending order, to cb (non-zero stops and is returned). */
typedef int (*store_id_cb)(void *ctx, uint64_t id);
int store_msg_ids(struct store *s, uint64_t rid, store_id_cb cb, void *ctx, struct ferry_err *err);

/* Every message of rid in id order, payload included (valid during the
 * call), to cb (non-zero stops and is returned). */
typedef int (*store_msg_cb)(void *ctx, const struct store_msg *m);
int store_msgs_walk(struct store *s, uint64_t rid, store_msg_cb cb, void *ctx,
                    struct ferry_err *err);

/* A range scan (one at a time per store): messages with id >= from_id, in id
 * order, at most limit. store_scan_next returns 1 with m filled (payload
 * valid until the next store call), 0 at the end, or an error.
 * store_scan_close must follow. */
int store_scan_open(struct store *s, uint64_t rid, uint64_t from_id, uint32_t limit,
                    struct ferry_err *err);
int store_scan_next(struct store *s, struct store_msg *m, struct ferry_err *err);
void store_scan_close(struct store *s);

/* ---- durable subscription cursors ---- */

int store_durable_put(struct store *s, uint64_t rid, const char *name, uint64_t cursor,
                      struct ferry_err *err);
/* 1 deleted, 0 missing. */
int store_durable_delete(struct store *s, uint64_t rid, const char *name, struct ferry_err *err);
/* rid's durable cursors in name order to cb (non-zero stops and is returned). */
typedef int (*store_durable_cb)(void *ctx, const char *name, uint64_t cursor);
int store_durables_load(struct store *s, uint64_t rid, store_durable_cb cb, void *ctx,
                        struct ferry_err *err);

/* ---- idempotent producers (the dedup table, replicated) ---- */

#define STORE_PRODUCER_ID 16
/* Write one producer's row: its id, highest sequence, last use and the
 * broker's encoding of its recent outcomes. */
int store_producer_put(struct store *s, const uint8_t pid[STORE_PRODUCER_ID], uint64_t highest,
                       uint64_t last_ms, const void *ring, size_t ring_len, struct ferry_err *err);
int store_producer_delete(struct store *s, const uint8_t pid[STORE_PRODUCER_ID],
                          struct ferry_err *err);
/* Every producer, in id order, to cb (non-zero stops and is returned);
 * ring is valid during the call only. */
typedef int (*store_producer_cb)(void *ctx, const uint8_t *pid, uint64_t highest,
                                 uint64_t last_ms, const void *ring, size_t ring_len);
int store_producers_load(struct store *s, store_producer_cb cb, void *ctx, struct ferry_err *err);

/* ---- history (local to this node; not replicated, not in snapshots) ---- */

int store_history_add(struct store *s, uint64_t ts, const char *name, uint64_t id,
                      const char *state, struct ferry_err *err);
/* Drop the oldest records (in insertion order) while their ts < min_ts
 * (min_ts 0: no time limit), then the oldest beyond max_records (0: no
 * limit). *removed = records deleted. */
int store_history_prune(struct store *s, uint64_t min_ts, uint64_t max_records, uint64_t *removed,
                        struct ferry_err *err);
/* Records stored and the ts of the oldest one (0 if none). */
int store_history_stats(struct store *s, uint64_t *count, uint64_t *oldest_ts,
                        struct ferry_err *err);

/* ---- fault injection (tests only) ----
 * After `countdown` more statement steps (reads, writes, BEGIN and COMMIT
 * all count), make the next `repeat` steps (repeat < 0: all) fail with the
 * SQLite result code `sqlite_code` (e.g. 13 = SQLITE_FULL, 10 =
 * SQLITE_IOERR) as if SQLite had returned it. countdown < 0 disables.
 * Process-wide (read-only stores on other threads count too), like
 * alloc_set_fault; never used in production. */
void store_fault_inject(int sqlite_code, long countdown, long repeat);
/* Steps failed by injection since the last store_fault_inject. */
long store_faults_injected(void);

#endif
