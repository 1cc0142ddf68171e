/* broker/broker_int.h - the broker's in-memory index and what its .c files share.
 *
 * Memory holds what is needed to decide and to deliver, never payloads:
 *
 *   struct res       one per channel/queue: attributes, counters (last_id,
 *                    last_qts), count of stored messages, for channels the
 *                    retained range [head_id, last_id] (events leave only
 *                    from the head, so the range has no holes) and durable
 *                    cursors; for queues the ready set (ids, 8 bytes each)
 *                    and the leases (item id -> consumer) of the serving node.
 *   struct sub       a live subscription: next event id to offer, and for a
 *                    durable one the client's acked cursor and window.
 *   struct consumer  a live queue consumer: prefetch and unacked count.
 *
 * Invariants (asserted where they are relied on):
 *   - a stored queue item is in exactly one of: the ready set, the leases
 *     (only the serving node leases), or neither when broker_pump found it
 *     expired (it is then removed by the next EXPIRE);
 *   - qts never decreases with id inside a resource, so expired messages
 *     are always a prefix and oldest_qts is a lower bound of every qts;
 *   - between broker_begin and broker_commit no client call is made; the
 *     effects of apply that reach clients wait in b->fx until commit.
 */
#ifndef FERRY_BROKER_INT_H
#define FERRY_BROKER_INT_H

#include "broker/broker.h"
#include "store/store.h"
#include "util/list.h"
#include "util/map.h"

#include <stdarg.h>
#include <stdatomic.h>

#define BROKER_DEFAULT_WINDOW 1000
#define BROKER_DEFAULT_PREFETCH 256
#define BROKER_DEFAULT_PUMP_BATCH 1024
#define BROKER_PUMP_CHUNK 256 /* messages per subscription/queue per visit, for fairness */

/* Wire-only flag of an encoded command: producer id and sequence follow. */
#define BROKER_CMDF_WIRE_PRODUCER 0x80
#define BROKER_CMDF_KNOWN (BROKER_CMDF_AUTO_CREATE)

/* ---- idempotent producers (producers.c) ---- */

#define PRODUCER_RING 256                    /* outcomes remembered per producer */
#define PRODUCER_MAX 4096                    /* producers remembered */
#define PRODUCER_IDLE_MS (3600ull * 1000ull) /* forgotten after this long unused */

struct producer_outcome {
    uint64_t seq; /* 0: empty slot */
    uint64_t id;
    int32_t status;
};

struct producer {
    uint8_t pid[16];
    uint64_t highest; /* highest sequence applied */
    uint64_t last_ms; /* command time of its last use */
    struct producer_outcome ring[PRODUCER_RING]; /* by seq % PRODUCER_RING */
    struct producer *next;  /* same folded key in b->producers */
    struct list dirty_node; /* in b->dirty_producers: its row is written at commit */
};

/* cmd carries a producer id and sequence. */
int broker_has_producer(const struct broker_cmd *c);
/* 1: cmd is a duplicate (or too old) and r holds its result; 0: apply it. */
int broker_producer_check(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                          struct ferry_err *err);
/* Remember the outcome r of cmd (applied as new). */
int broker_producer_record(struct broker *b, const struct broker_cmd *cmd,
                           const struct broker_result *r, struct ferry_err *err);
/* Forget producers unused since before now_ms - PRODUCER_IDLE_MS. */
int broker_producers_expire(struct broker *b, uint64_t now_ms, struct ferry_err *err);
/* Write forgotten and changed producers (inside the open transaction). */
int broker_producers_flush(struct broker *b, struct ferry_err *err);
/* Replace the in-memory table with the database's. */
int broker_producers_load(struct broker *b, struct ferry_err *err);
void broker_producers_free(struct broker *b);
/* The ring as stored and in snapshots: its outcomes oldest first, as runs
 * of PRODUCER_RUN_BYTES (u64 first seq, u32 count, u64 first id, i32
 * status): consecutive sequences with one status and, for a success,
 * consecutive ids (0 for a failure). A producer publishing into one channel
 * is one run. out holds PRODUCER_RING_MAX_BYTES; returns the byte count. */
#define PRODUCER_RUN_BYTES 24
#define PRODUCER_RING_MAX_BYTES (PRODUCER_RING * PRODUCER_RUN_BYTES)
size_t broker_producer_encode_ring(const struct producer *p, uint8_t *out);
/* Check an encoded ring against its producer's highest sequence: 1 valid. */
int broker_producer_ring_valid(uint64_t highest, const uint8_t *ring, size_t len);
/* Set a producer from its stored form: 0, FERRY_ECORRUPT or FERRY_ENOMEM. */
int broker_producer_put(struct broker *b, const uint8_t *pid, uint64_t highest, uint64_t last_ms,
                        const uint8_t *ring, size_t len);

/* ---- ready set (ready.c) ---- */

/* The ids of a queue's items that wait for a consumer, delivered smallest
 * id first. Pushed ids arrive in increasing order and go to a ring; ids
 * given back (RETURN) go to a min-heap, so they come before newer items.
 * Removal of an id in the middle of the ring leaves a tombstone. */
struct ready {
    uint64_t *ring; /* ascending ids; READY_TOMB marks a removed slot */
    size_t cap;     /* power of two, or 0 */
    size_t head;
    size_t len; /* slots in use, tombstones included */
    size_t tombs;
    uint64_t *heap; /* min-heap of returned ids */
    size_t hlen;
    size_t hcap;
};

void broker_ready_init(struct ready *r);
void broker_ready_free(struct ready *r);
size_t broker_ready_count(const struct ready *r);
/* id must be above every id in the ring. 0 or FERRY_ENOMEM. */
int broker_ready_push_new(struct ready *r, uint64_t id);
int broker_ready_push_returned(struct ready *r, uint64_t id);
/* Smallest id: 1 (set *id) or 0 if empty. */
int broker_ready_peek(struct ready *r, uint64_t *id);
/* Remove the smallest id (after a successful peek). */
void broker_ready_pop(struct ready *r);
int broker_ready_contains(const struct ready *r, uint64_t id);
/* Remove id if present: 1 removed, 0 absent. */
int broker_ready_remove(struct ready *r, uint64_t id);
/* Remove every id <= max_id. */
void broker_ready_drop_through(struct ready *r, uint64_t max_id);

/* ---- index (index.c) ---- */

struct durable {
    char name[BROKER_NAME_MAX + 1];
    uint64_t cursor;  /* applied: last acknowledged event id */
    struct sub *live; /* the one live subscriber, or NULL */
    struct res *ch;
    struct list doomed_node; /* in b->doomed_durables once deleted in the open transaction */
};

struct res {
    uint64_t rid;
    char name[BROKER_NAME_MAX + 1];
    uint8_t kind;
    uint64_t capacity;
    uint64_t ttl_ms;
    uint32_t max_deliveries;
    char dlq[BROKER_NAME_MAX + 1];
    uint64_t created_ts;
    uint64_t last_id;    /* persisted: last id assigned */
    uint64_t last_qts;   /* persisted: qts of the newest message */
    uint64_t count;      /* stored messages, expired ones not yet removed included */
    uint64_t head_id;    /* channels: lowest stored id; last_id + 1 when empty */
    uint64_t oldest_qts; /* <= qts of every stored message (meaningful when count > 0) */
    struct list clients; /* struct sub / struct consumer, via res_node */
    uint32_t nclients;
    struct smap durables;     /* channels: name -> struct durable */
    struct ready ready;       /* queues */
    struct umap leases;       /* queues: item id -> struct consumer *, or LEASE_SETTLING */
    struct list dirty_node;   /* in b->dirty: counters to write at commit */
    struct list pending_node; /* queues in b->pending_queues */
    struct list doomed_node;  /* in b->doomed once deleted in the open transaction */
    int doomed;
};

/* Lease of an item whose ACK/RETURN has been built but not yet applied. */
#define LEASE_SETTLING ((void *)&broker_lease_settling)
extern const char broker_lease_settling;

enum obj_type { OBJ_SUB = 1, OBJ_CONSUMER = 2 };

struct sub {
    uint8_t type; /* OBJ_SUB; first, so a handle can be told apart */
    uint64_t id;
    struct broker_client *c;
    struct res *ch;           /* NULL once the channel vanished (b->zombie_subs) */
    struct durable *durable;  /* NULL unless durable */
    uint64_t next_id;         /* next event id to offer */
    uint64_t acked;           /* durable: cursor as acknowledged by this client */
    uint32_t window;          /* durable: max delivered beyond acked */
    struct list res_node;     /* ch->clients, or b->zombie_subs */
    struct list client_node;  /* c->subs */
    struct list pending_node; /* b->pending_subs */
};

struct consumer {
    uint8_t type; /* OBJ_CONSUMER */
    uint64_t id;
    struct broker_client *c;
    struct res *q; /* NULL once the queue vanished (b->zombie_consumers) */
    uint32_t prefetch;
    uint32_t unacked; /* leases held */
    struct list res_node;
    struct list client_node;
};

struct broker_client {
    struct broker *b;
    const struct broker_client_ops *ops;
    void *ctx;
    int blocked; /* deliver said EBUSY; nothing is offered until broker_client_writable */
    struct list subs;
    struct list consumers;
    struct list node; /* b->clients */
};

/* ---- effects handed to clients at commit (deliver.c) ---- */

enum fx_type { FX_EVENT = 1, FX_ITEM, FX_END_RES, FX_END_DURABLE };

struct fx {
    uint8_t type;
    struct res *res;
    struct durable *durable;
    uint64_t id;
    uint64_t ts;
    const uint8_t *payload; /* points into the applied entry */
    uint32_t payload_len;
};

/* A lease released by apply, to restore if the batch is abandoned: leases
 * are memory only, so the reload from the database cannot bring them back. */
struct lease_undo {
    struct res *q;
    uint64_t id;
    void *holder; /* struct consumer * or LEASE_SETTLING */
};

struct broker {
    struct broker_config cfg;
    char *db_path;
    struct store *store;
    struct smap res;                      /* name -> struct res */
    uint64_t applied_index, applied_term; /* including the open transaction */
    uint64_t stored_index, stored_term;   /* as committed */
    int in_txn;
    int broken; /* 0, or the error that made the in-memory state unusable */
    struct ferry_err broken_err;
    struct list dirty;
    struct list doomed;
    struct list doomed_durables;
    struct fx *fx;
    size_t nfx, fxcap;
    struct lease_undo *undo;
    size_t nundo, undocap;
    struct list clients;
    struct umap handles; /* sub/consumer id -> object */
    uint64_t next_handle;
    struct list pending_subs;
    struct list pending_queues;
    struct list zombie_subs;      /* subs whose channel vanished in a reload */
    struct list zombie_consumers; /* consumers whose queue vanished in a reload */
    struct umap producers; /* folded producer id -> struct producer chain */
    size_t nproducers;
    struct list dirty_producers;
    uint8_t (*gone)[16]; /* producers forgotten in the open transaction */
    size_t ngone, gonecap;
    int history_dirty;
    uint64_t history_count, history_oldest_ts;
    uint64_t nchannels, nqueues, nclients, nsubs, nconsumers;
    /* Snapshots (snapshot.c). broker_snapshot_end may run on any thread, so
     * these two are atomics: the read-only connection kept for the next
     * snapshot, and how many snapshots are open (0 at broker_close). */
    _Atomic(struct store *) snap_idle;
    atomic_uint nsnaps;
};

int broker_name_valid(const char *name);
struct res *broker_res_find(const struct broker *b, const char *name);
/* Create a resource (row and memory) inside the open transaction. */
int broker_res_create(struct broker *b, const struct store_resource *attrs, struct res **out,
                      struct ferry_err *err);
/* Mark counters to be written at commit. */
void broker_res_dirty(struct broker *b, struct res *r);
/* Free a resource's memory (it has no clients left). */
void broker_res_free(struct broker *b, struct res *r);
void broker_durable_free(struct durable *d);
/* (Re)build the whole index from the database, keeping live clients attached. */
int broker_index_load(struct broker *b, struct ferry_err *err);
/* Free the whole index and build it afresh as broker_open does (no client
 * may be open); clears b->broken on success (broker.c). */
int broker_rebuild(struct broker *b, struct ferry_err *err);
/* Fill the attributes of a resource being created: from cmd (capacity,
 * ttl_ms, max_deliveries) when given, else unlimited, no TTL and
 * BROKER_DEFAULT_MAX_DELIVERIES. Never from node-local configuration. */
void broker_res_defaults(const struct broker *b, uint8_t kind, const char *name,
                         const struct broker_cmd *cmd, struct store_resource *out);
/* "<name>.dlq", or "" when that would be longer than BROKER_NAME_MAX. */
void broker_default_dlq(const char *name, char *out);
const char *broker_kind_name(uint8_t kind);

/* ---- apply helpers (apply.c, expire.c) ---- */

void broker_result_set(struct broker_result *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Remove r's expired prefix at ts (history "expired"). */
int broker_expire_resource(struct broker *b, struct res *r, uint64_t ts, struct ferry_err *err);
int broker_apply_expire(struct broker *b, const struct broker_cmd *cmd, struct broker_result *res,
                        struct ferry_err *err);
int broker_refresh_history(struct broker *b, struct ferry_err *err);

/* ---- delivery (deliver.c, client.c) ---- */

int broker_fx_push(struct broker *b, const struct fx *f);
/* Release the lease of item id of q inside apply (recorded for undo):
 * 1 it was leased, 0 not, or FERRY_ENOMEM. */
int broker_lease_release(struct broker *b, struct res *q, uint64_t id);
/* Put back the leases released by the abandoned batch. */
void broker_lease_undo(struct broker *b);
void broker_fx_run(struct broker *b);
void broker_fx_drop(struct broker *b);
void broker_sub_reconsider(struct broker *b, struct sub *s);
void broker_queue_reconsider(struct broker *b, struct res *q);
void broker_sub_free(struct broker *b, struct sub *s);
void broker_consumer_free(struct broker *b, struct consumer *con);
/* End a sub/consumer now: tell the client, then free it. */
void broker_end_sub(struct broker *b, struct sub *s, int code, const char *msg);
void broker_end_consumer(struct broker *b, struct consumer *con, int code, const char *msg);
/* Detach a sub/consumer whose resource vanished; it is ended at the next pump. */
void broker_zombify_sub(struct broker *b, struct sub *s);
void broker_zombify_consumer(struct broker *b, struct consumer *con);

/* ---- snapshot stream (snapshot.c writes it, restore.c reads it) ----
 * Big-endian; the byte layout is documented in docs/storage.md. */

#define SNAP_MAGIC "FERRYSNP"
#define SNAP_MAGIC_LEN 8
#define SNAP_VERSION 2 /* 2: PRODUCER records */
#define SNAP_HEADER_LEN 28    /* magic, u32 version, u64 index, u64 term */
#define SNAP_REC_HEADER_LEN 5 /* u8 type, u32 body length */
#define SNAP_RES_FIXED 47     /* a RESOURCE body without its two names' bytes */
#define SNAP_MSG_FIXED 28     /* a MESSAGE body without its payload */
#define SNAP_DUR_FIXED 9      /* a DURABLE body without its name's bytes */
#define SNAP_END_LEN 28       /* u64 resources, u64 messages, u64 durables, u32 crc32c */

enum snap_rec_type {
    SNAP_REC_RESOURCE = 1,
    SNAP_REC_MESSAGE = 2,
    SNAP_REC_DURABLE = 3,
    SNAP_REC_END = 4,
    SNAP_REC_PRODUCER = 5, /* after the resources: 16 id, u64 highest, u64 last_ms, ring */
};
#define SNAP_PROD_FIXED 32 /* a PRODUCER body without its ring */

/* Where encoded bytes go: 0 or a negative FERRY_E* code that stops the encoding. */
typedef int (*snap_sink)(void *ctx, const void *p, size_t n);
/* Encode the committed state seen by s (inside a read transaction) as a
 * snapshot stream for (index, term), in pieces of at most
 * BROKER_SNAPSHOT_PIECE_MAX bytes. */
int broker_snap_encode(struct store *s, uint64_t index, uint64_t term, snap_sink sink, void *ctx,
                       struct ferry_err *err);

#endif
