/* broker/broker.h - Ferry's state machine: commands, apply, channels, queues,
 * subscriptions and deliveries. No sockets, no Raft, no clock.
 *
 * Two halves:
 *
 * 1. Durable state changes only through commands. The node that serves
 *    clients (the leader) encodes commands with broker_cmd_encode into an
 *    *entry* (a concatenation of encoded commands); the entry is made durable
 *    (single node: applied in a transaction that is fsynced; cluster: the Raft
 *    log) and applied on every node by
 *
 *        broker_begin(b);
 *        broker_apply(b, index, term, entry, len, results, n);   (one or more entries)
 *        broker_commit(b, &err);
 *
 *    Apply is deterministic: it depends only on the prior state and the
 *    entry (time is the command's ts_ms; ids come from per-resource counters).
 *    Entries with index <= the stored last_applied are skipped, so replaying
 *    a log after a restart is harmless. All entries between begin and commit
 *    go into one SQLite transaction together with last_applied (index, term).
 *    Per-command outcomes (queue full, wrong type...) are *results*, not
 *    failures. A storage failure makes broker_apply or broker_commit return
 *    FERRY_EIO/FERRY_ENOSPC: the transaction is rolled back, the in-memory
 *    state is reloaded from the database, and nothing from that batch may be
 *    acknowledged.
 *
 *    Effects that reach clients (events for live subscribers, deliveries for
 *    consumers) are queued during apply and handed to the clients' ops only
 *    inside broker_commit, after the transaction is durable. Entry buffers
 *    passed to broker_apply must stay valid until broker_commit returns.
 *
 * 2. Client-facing reads and leases, on the serving node only: clients
 *    (one per connection) subscribe to channels and consume from queues;
 *    broker_pump moves stored messages to clients that have room, reading
 *    payloads from the database (payloads are not held in memory). Leases of
 *    queue items are in memory only; giving items back is a command
 *    (BROKER_CMD_RETURN) that the caller proposes.
 *
 * 3. Snapshots for the Raft driver (bottom of this file): stream the live
 *    state as of an applied index, restore it on another node, rebuild the
 *    in-memory state, and a digest to compare replicas.
 *
 * Threading: single-threaded; every call on the loop thread that owns b,
 * except broker_snapshot_write (any one thread at a time per snapshot, while
 * the loop thread goes on), broker_snapshot_index/term and
 * broker_snapshot_end (any thread).
 */
#ifndef FERRY_BROKER_H
#define FERRY_BROKER_H

#include "util/buf.h"
#include "util/err.h"
#include <stddef.h>
#include <stdint.h>

#define BROKER_NAME_MAX 255
/* max_deliveries of a queue created without one. Apply never reads node-local
 * configuration, so every replica resolves attributes identically: the
 * serving node writes its configured defaults into CREATE and auto-creating
 * PUBLISH/PUSH commands, and apply takes them from there. */
#define BROKER_DEFAULT_MAX_DELIVERIES 10

struct broker;
struct broker_client;

struct broker_config {
    const char *db_path; /* the SQLite file, e.g. <data_directory>/ferry.db */
    /* 1: PRAGMA synchronous=FULL, every commit is fsynced before broker_commit
     * returns (single node: the database is the durable record). 0: NORMAL,
     * commits reach the WAL without fsync and a power loss may drop the last
     * ones; only for a cluster, where the Raft log is the durable record and
     * the database catches up by replaying it above last_applied. */
    int synchronous_full;
    uint64_t max_message_size; /* transient publishes larger are rejected (ETOOBIG); persistent
                                  ones are checked by the serving node before proposing */
    uint32_t default_prefetch; /* consumer prefetch when the request says 0 */
    uint32_t default_window;   /* durable subscription window when the request says 0 (1000) */
    uint32_t default_max_deliveries; /* unused by apply (see BROKER_DEFAULT_MAX_DELIVERIES) */
    uint64_t default_capacity;       /* unused by apply: commands carry attributes */
    uint64_t default_ttl_ms;         /* unused by apply: commands carry attributes */
    uint64_t history_retention_ms;   /* history records older than this are pruned by EXPIRE */
    uint64_t history_max_records;    /* and at most this many are kept */
    uint32_t pump_batch;             /* max messages moved by one broker_pump call (e.g. 1024) */
};

enum broker_kind { BROKER_CHANNEL = 1, BROKER_QUEUE = 2 }; /* same values as proto_kind */

/* ---- commands ---- */

enum broker_cmd_type {
    BROKER_CMD_NOOP = 0,
    BROKER_CMD_CREATE = 1,         /* kind, name, capacity, ttl_ms, max_deliveries, name2 = dlq */
    BROKER_CMD_DELETE = 2,         /* name: resource, its messages, durables */
    BROKER_CMD_PUBLISH = 3,        /* name = channel, payload, producer; result id = event id */
    BROKER_CMD_PUSH = 4,           /* name = queue, payload, producer; result id = item id */
    BROKER_CMD_ACK = 5,            /* name = queue, id = item id: remove it, history "consumed" */
    BROKER_CMD_RETURN = 6,         /* name = queue, id = item id: delivery_count+1; past
                                      max_deliveries move to the dlq (history "dead-lettered") */
    BROKER_CMD_DURABLE_CREATE = 7, /* name = channel, name2 = durable; id = cursor
                                      (UINT64_MAX = "the channel's last event id at apply") */
    BROKER_CMD_DURABLE_ACK = 8, /* name = channel, name2 = durable, id = event id (only advances) */
    BROKER_CMD_DURABLE_DELETE = 9, /* name = channel, name2 = durable */
    BROKER_CMD_EXPIRE = 10,        /* ts_ms: drop expired messages everywhere, prune history */
};

/* PUBLISH/PUSH: create the resource if missing, with the command's capacity,
 * ttl_ms and max_deliveries. */
#define BROKER_CMDF_AUTO_CREATE 0x01

struct broker_cmd {
    uint8_t type;   /* enum broker_cmd_type */
    uint8_t flags;  /* BROKER_CMDF_* */
    uint64_t ts_ms; /* leader's wall clock when the command was made */
    char name[BROKER_NAME_MAX + 1];
    char name2[BROKER_NAME_MAX + 1];
    uint8_t kind;
    uint64_t capacity;
    uint64_t ttl_ms;
    uint32_t max_deliveries;
    uint64_t id;
    uint8_t producer_id[16]; /* all zero = none (dedup arrives with idempotent producers) */
    uint64_t producer_seq;
    const uint8_t *payload; /* decode: points into the entry */
    uint32_t payload_len;
};

/* Append one encoded command to out ([u32 length][fields], big-endian). 0 or ENOMEM/EINVAL. */
int broker_cmd_encode(struct buf *out, const struct broker_cmd *cmd);
/* Decode the command at p (n bytes available); *used = bytes consumed. 0 or FERRY_ECORRUPT. */
int broker_cmd_decode(const uint8_t *p, size_t n, struct broker_cmd *cmd, size_t *used);

/* ---- lifecycle and apply ---- */

/* Open (creating or migrating) the database and rebuild the in-memory index:
 * resources, queue items not yet acked (all ready: leases do not survive a
 * restart), channel ranges and durable cursors. */
int broker_open(struct broker **out, const struct broker_config *cfg, struct ferry_err *err);
/* Close: ends every client (their ops are not called), closes the database. */
void broker_close(struct broker *b);

/* Last applied (index, term), as stored with the data. */
void broker_last_applied(const struct broker *b, uint64_t *index, uint64_t *term);

struct broker_result {
    int status;    /* 0 or FERRY_E* (ENOTFOUND, EFULL, EWRONGTYPE, EEXIST, ETOOBIG, EINVAL...) */
    uint64_t id;   /* event id / item id when status is 0 */
    int duplicate; /* PUBLISH/PUSH: a producer's re-sent command, not applied again; status
                      and id are the first one's (docs/protocol.md) */
    char msg[160]; /* human message when status != 0 */
};

int broker_begin(struct broker *b, struct ferry_err *err);
/* Apply one entry. results (may be NULL) receives one result per command, in
 * order, up to cap. Returns 0, FERRY_ECORRUPT for an undecodable entry, or a
 * storage error (see top). */
int broker_apply(struct broker *b, uint64_t index, uint64_t term, const uint8_t *entry, size_t len,
                 struct broker_result *results, size_t cap, struct ferry_err *err);
/* Commit the transaction (durably if synchronous_full), then hand queued
 * effects to clients. On failure the batch is rolled back (see top). */
int broker_commit(struct broker *b, struct ferry_err *err);
/* Abandon the open transaction and reload in-memory state from the database. */
void broker_rollback(struct broker *b);

/* ---- clients (serving node only) ---- */

struct broker_msg {
    uint64_t handle; /* sub_id (events) or consumer_id (deliveries) */
    uint64_t id;     /* event id (0 for transient) or item id */
    uint64_t ts_ms;
    uint32_t delivery_count; /* deliveries: 1 on first delivery */
    uint8_t transient;
    const uint8_t *payload; /* valid only during the call */
    uint32_t payload_len;
};

struct broker_client_ops {
    /* Offer one event (is_delivery 0) or queue delivery (1) to the client.
     * Return 0 if taken, or FERRY_EBUSY if the client's output is full: the
     * broker then stops offering to this client until broker_client_writable.
     * Must not call back into the broker. */
    int (*deliver)(void *ctx, int is_delivery, const struct broker_msg *m);
    /* A subscription or consumer was ended by the broker (resource deleted). */
    void (*ended)(void *ctx, uint64_t handle, int code, const char *msg);
};

int broker_client_open(struct broker *b, const struct broker_client_ops *ops, void *ctx,
                       struct broker_client **out);
/* End the client's subscriptions and consumers. Items it had leased and not
 * acked are appended to `returns` as BROKER_CMD_RETURN commands (ts_ms = now_ms)
 * for the caller to propose; until those apply, the items are not redelivered. */
void broker_client_close(struct broker_client *c, uint64_t now_ms, struct buf *returns);
/* The client's output drained: offer to it again (at the next broker_pump). */
void broker_client_writable(struct broker_client *c);

/* Does the resource exist, and of which kind? 0 (kind set) or FERRY_ENOTFOUND. */
int broker_lookup(const struct broker *b, const char *name, enum broker_kind *kind);
/* Does the durable subscription exist? 1 or 0. */
int broker_durable_exists(const struct broker *b, const char *channel, const char *durable);

/* Subscribe to an existing channel. start/from_id/durable/window as in
 * docs/protocol.md (SUBSCRIBE); a durable subscription must already exist
 * (create it with BROKER_CMD_DURABLE_CREATE first). *sub_id and
 * *next_event_id returned. Errors: ENOTFOUND, EWRONGTYPE, EBUSY (durable name
 * in use), EINVAL. */
int broker_subscribe(struct broker_client *c, const char *channel, int start, uint64_t from_id,
                     const char *durable, uint32_t window, uint64_t *sub_id,
                     uint64_t *next_event_id, struct ferry_err *err);
int broker_unsubscribe(struct broker_client *c, uint64_t sub_id, struct ferry_err *err);
/* Validate a durable SUB_ACK and build the BROKER_CMD_DURABLE_ACK to propose.
 * Also advances the in-memory window at once. ENOTFOUND / EINVAL (not durable,
 * or event_id beyond what was delivered). */
int broker_sub_ack(struct broker_client *c, uint64_t sub_id, uint64_t event_id, uint64_t now_ms,
                   struct broker_cmd *cmd_out, struct ferry_err *err);

/* Register a consumer on an existing queue (prefetch 0 = default). */
int broker_consume(struct broker_client *c, const char *queue, uint32_t prefetch,
                   uint64_t *consumer_id, struct ferry_err *err);
/* Cancel a consumer; its unacked leases become RETURN commands in `returns`. */
int broker_cancel(struct broker_client *c, uint64_t consumer_id, uint64_t now_ms,
                  struct buf *returns, struct ferry_err *err);
/* Validate an ACK (nack=0) or NACK (nack=1) of an item leased to this
 * consumer, release the lease's credit, and build the ACK/RETURN command to
 * propose. ENOTFOUND if the consumer does not exist or the item is not
 * leased to it. */
int broker_settle(struct broker_client *c, uint64_t consumer_id, uint64_t item_id, int nack,
                  uint64_t now_ms, struct broker_cmd *cmd_out, struct ferry_err *err);

/* Transient publish: offer to the channel's live subscribers that are caught
 * up and have room; nothing stored. ENOTFOUND / EWRONGTYPE / ETOOBIG. */
int broker_publish_transient(struct broker *b, const char *channel, uint64_t ts_ms,
                             const uint8_t *payload, uint32_t len, struct ferry_err *err);

/* Move stored messages to clients with room (catch-up subscribers, consumers
 * with credit), skipping messages expired at now_ms. Moves at most
 * cfg.pump_batch messages; returns 1 if more work is pending (call again
 * soon), 0 if idle, or a negative storage error. */
int broker_pump(struct broker *b, uint64_t now_ms);

/* Is any stored message expired at now_ms (so an EXPIRE command is due)? */
int broker_expire_due(const struct broker *b, uint64_t now_ms);

/* ---- introspection ---- */

struct broker_info {
    uint8_t kind;
    char name[BROKER_NAME_MAX + 1];
    uint64_t capacity;
    uint64_t ttl_ms;
    uint32_t max_deliveries;
    char dlq[BROKER_NAME_MAX + 1];
    uint64_t count;    /* stored messages not expired at now_ms */
    uint64_t first_id; /* oldest retained id, 0 if none */
    uint64_t last_id;  /* newest assigned id, 0 if none */
    uint32_t clients;  /* live subscribers / consumers */
    uint64_t unacked;  /* leased items / delivered-but-unacked durable events */
};

int broker_info(const struct broker *b, const char *name, uint64_t now_ms, struct broker_info *out,
                struct ferry_err *err);
/* Allocates *items (caller frees with ferry_free); sorted by name. */
int broker_list(const struct broker *b, uint64_t now_ms, struct broker_info **items, size_t *count);

struct broker_stats {
    uint64_t resources;
    uint64_t channels;
    uint64_t queues;
    uint64_t stored_messages;
    uint64_t clients;
    uint64_t subscriptions;
    uint64_t consumers;
    uint64_t history_records;
    uint64_t producers; /* idempotent producers remembered */
};
void broker_stats(const struct broker *b, struct broker_stats *out);

/* ---- snapshots, restore, reload, digest (the Raft driver's side) ----
 *
 * A snapshot is the replicated live state as of one applied (index, term):
 * every resource (attributes and id counters), its stored messages (with
 * payloads and delivery counts) and durable cursors. Not history (local to
 * each node), not leases, subscriptions or clients (memory of the serving
 * node). docs/storage.md gives the byte format and the restore rules. */

struct broker_snap;

/* Pieces handed to broker_snapshot_write's write() are at most this long. */
#define BROKER_SNAPSHOT_PIECE_MAX 65536
/* Buffer size for broker_digest's hex output (64 digits and a NUL). */
#define BROKER_DIGEST_HEX 65

/* Pin the state as of now (the last committed entry) for streaming: take a
 * read-only connection to the database (the broker keeps one for reuse) and
 * open a read transaction on it, which WAL keeps stable while apply goes on
 * through the main connection. Cheap: nothing is copied. Loop thread, outside
 * broker_begin..broker_commit (FERRY_ESTATE). *out is freed by
 * broker_snapshot_end, which must happen before broker_close. While a
 * snapshot is open the WAL cannot be checkpointed past it and grows with
 * what is applied meanwhile: end snapshots promptly. */
int broker_snapshot_begin(struct broker *b, struct broker_snap **out, struct ferry_err *err);
/* The pinned last_applied (index, term), as the snapshot's read sees it. */
uint64_t broker_snapshot_index(const struct broker_snap *s);
uint64_t broker_snapshot_term(const struct broker_snap *s);
/* Stream the pinned state (docs/storage.md, "Snapshots") to write() in
 * pieces of at most BROKER_SNAPSHOT_PIECE_MAX bytes. Meant for a worker
 * thread: it uses only s and its connection, never b, so the loop thread
 * keeps applying meanwhile; one call at a time per snapshot. Memory stays
 * bounded (one piece, one message's payload, SQLite's page cache) however
 * many messages there are. write returns 0 or a negative FERRY_E* code,
 * which stops the stream and is returned. May be called again to stream the
 * same state again. 0, the write error, or a storage error. */
int broker_snapshot_write(struct broker_snap *s, int (*write)(void *ctx, const void *p, size_t n),
                          void *ctx, struct ferry_err *err);
/* End the read transaction and free s (the connection goes back to b for
 * the next snapshot). Any thread; not concurrently with a write on s. NULL
 * is a no-op. */
void broker_snapshot_end(struct broker_snap *s);

/* Install a snapshot stream (a follower catching up from the leader's
 * snapshot). read(ctx, p, n) fills up to n bytes and returns how many, 0 at
 * the end of the stream, or a negative FERRY_E* code (returned as is). Loop
 * thread, outside a transaction (FERRY_ESTATE), with no broker client open
 * (FERRY_EBUSY: leases and subscriptions cannot survive a change of state).
 *
 * The header is read first. If the database's last_applied index is at or
 * above the stream's, nothing more is read, nothing changes, *skipped = 1
 * and 0 is returned: a restore never moves the database backwards.
 * Otherwise (*skipped = 0), in one SQLite transaction: the live state
 * (resources, messages, durables) is replaced by the stream's and
 * last_applied set to its (index, term); history is kept. The whole stream
 * is validated on the way (magic, record framing and order, names, ids,
 * end-record counts and checksum, nothing after the end): a malformed one
 * is FERRY_ECORRUPT with a message naming the byte, and a format version
 * newer than this build's is FERRY_EVERSION; then nothing changes. After
 * the commit the in-memory state is rebuilt as broker_open builds it, so the
 * broker goes on as if it had applied the same entries itself. */
int broker_restore(struct broker *b, int (*read)(void *ctx, void *p, size_t n), void *ctx,
                   int *skipped, struct ferry_err *err);

/* Drop every in-memory delivery state (leases, including those waiting for
 * an ACK/RETURN that may never apply) and rebuild the index from the
 * database as broker_open does: every stored queue item becomes ready. For a
 * leader stepping down after closing its clients, so that no item stays
 * leased by nobody. Loop thread, outside a transaction (FERRY_ESTATE), no
 * broker client open (FERRY_EBUSY). A successful reload (or restore) also
 * clears the "broker stopped" state left by a failed rebuild. */
int broker_reload(struct broker *b, struct ferry_err *err);

/* SHA-256, in lowercase hex, of the replicated state as committed: exactly
 * the bytes broker_snapshot_write would stream for it (header with
 * last_applied, resources in name order, each with its messages in id order
 * and its durables in name order, length-framed, end record). Two nodes
 * that applied the same entries give the same digest whatever their rids,
 * history or clients. *index and *term = the last_applied it covers. Loop
 * thread, outside a transaction (FERRY_ESTATE). Reads the whole database:
 * for tests and for comparing replicas, not for a hot path. */
int broker_digest(struct broker *b, char hex[BROKER_DIGEST_HEX], uint64_t *index, uint64_t *term,
                  struct ferry_err *err);

#endif
