/* restore.c - installing a snapshot stream (broker_restore).
 *
 * The header comes first and decides: a stream not newer than the database
 * is skipped without reading further. Otherwise one write transaction
 * clears the live tables, inserts records as they arrive and sets
 * last_applied; every record is checked on the way (framing, order, names,
 * ids), the end record's counts and CRC-32C are compared with what was read,
 * and the stream must stop right after it. Any failure rolls the whole
 * transaction back, and memory has not been touched yet, so a bad stream
 * changes nothing. Only after the commit is the index rebuilt from scratch
 * (broker_rebuild), exactly as at open.
 *
 * Memory is bounded like the writer's: records are read one at a time, and
 * a payload buffer grows only as payload bytes actually arrive, so a
 * corrupt length cannot make it allocate more than the stream holds.
 */
#include "broker/broker_int.h"

#include "util/alloc.h"
#include "util/buf.h"
#include "util/crc32c.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

struct snap_in {
    int (*read)(void *ctx, void *p, size_t n);
    void *ctx;
    uint64_t off;  /* bytes consumed */
    uint32_t crc;  /* of the bytes consumed */
    uint64_t nrec; /* records read completely */
    struct ferry_err *err;
};

static int corrupt(struct snap_in *in, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int corrupt(struct snap_in *in, const char *fmt, ...)
{
    char what[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ferry_err_set(in->err, FERRY_ECORRUPT,
                         "snapshot stream is corrupt: %s (record %llu, byte %llu); nothing was "
                         "restored",
                         what, (unsigned long long)in->nrec + 1, (unsigned long long)in->off);
}

/* Read exactly n bytes; the end of the stream here means it was cut short. */
static int read_exact(struct snap_in *in, void *p, size_t n)
{
    uint8_t *q = p;
    size_t got = 0;
    while (got < n) {
        size_t want = n - got;
        if (want > BROKER_SNAPSHOT_PIECE_MAX)
            want = BROKER_SNAPSHOT_PIECE_MAX;
        int r = in->read(in->ctx, q + got, want);
        if (r < 0)
            return ferry_err_set(in->err, r,
                                 "reading the snapshot stream failed at byte %llu (%s); nothing "
                                 "was restored",
                                 (unsigned long long)(in->off + got), ferry_strerror(r));
        if (r == 0) {
            in->off += got;
            return corrupt(in, "the stream ends early (truncated)");
        }
        if ((size_t)r > want)
            return ferry_err_set(in->err, FERRY_EINVAL,
                                 "the snapshot read callback returned %d bytes for a %zu-byte read",
                                 r, want);
        got += (size_t)r;
    }
    in->crc = crc32c_extend(in->crc, p, n);
    in->off += n;
    return 0;
}

/* ---- parsing a record body ---- */

struct cur {
    const uint8_t *p;
    size_t n;
};

static int take(struct cur *c, void *out, size_t k)
{
    if (c->n < k)
        return -1;
    memcpy(out, c->p, k);
    c->p += k;
    c->n -= k;
    return 0;
}

static int take_u64(struct cur *c, uint64_t *v)
{
    uint8_t b[8];
    if (take(c, b, 8) != 0)
        return -1;
    *v = get_u64(b);
    return 0;
}

static int take_u32(struct cur *c, uint32_t *v)
{
    uint8_t b[4];
    if (take(c, b, 4) != 0)
        return -1;
    *v = get_u32(b);
    return 0;
}

/* A u8 length and that many bytes, with no NUL, into out[BROKER_NAME_MAX + 1]. */
static int take_str(struct cur *c, char *out)
{
    uint8_t n;
    if (take(c, &n, 1) != 0 || take(c, out, n) != 0 || memchr(out, '\0', n) != NULL)
        return -1;
    out[n] = '\0';
    return 0;
}

/* ---- the records ---- */

struct restore {
    struct broker *b;
    struct snap_in in;
    int have_res; /* a RESOURCE has been read */
    uint64_t rid; /* its row in this database */
    uint8_t kind;
    char name[BROKER_NAME_MAX + 1];
    int in_durables; /* its DURABLE records have started */
    uint64_t last_msg_id;
    char last_durable[BROKER_NAME_MAX + 1];
    uint64_t nres, nmsg, ndur;
    uint8_t *payload;
    size_t cap;
    int have_producer;
    uint8_t last_pid[16];
};

static int read_resource(struct restore *r, uint32_t len)
{
    struct snap_in *in = &r->in;
    uint8_t body[SNAP_RES_FIXED + 2 * BROKER_NAME_MAX];
    if (len < SNAP_RES_FIXED + 1 || len > sizeof body)
        return corrupt(in, "a resource record of %u bytes", len);
    int rc = read_exact(in, body, len);
    if (rc != 0)
        return rc;
    struct store_resource row;
    memset(&row, 0, sizeof row);
    struct cur c = {body, len};
    if (take(&c, &row.kind, 1) != 0 || take_str(&c, row.name) != 0 ||
        take_u64(&c, &row.capacity) != 0 || take_u64(&c, &row.ttl_ms) != 0 ||
        take_u32(&c, &row.max_deliveries) != 0 || take_str(&c, row.dlq) != 0 ||
        take_u64(&c, &row.last_id) != 0 || take_u64(&c, &row.last_qts) != 0 ||
        take_u64(&c, &row.created_ts) != 0 || c.n != 0)
        return corrupt(in, "a resource record whose fields do not fill its %u bytes", len);
    if (row.kind != BROKER_CHANNEL && row.kind != BROKER_QUEUE)
        return corrupt(in, "resource '%.64s' has unknown kind %u", row.name, row.kind);
    if (!broker_name_valid(row.name) || (row.dlq[0] && !broker_name_valid(row.dlq)))
        return corrupt(in, "an invalid resource or dead-letter queue name");
    if (r->have_res && strcmp(row.name, r->name) <= 0)
        return corrupt(in, "resource '%.64s' comes after '%.64s' (names must be ascending)",
                       row.name, r->name);
    rc = store_resource_insert(r->b->store, &row, in->err);
    if (rc != 0)
        return rc;
    r->have_res = 1;
    r->rid = row.rid;
    r->kind = row.kind;
    memcpy(r->name, row.name, sizeof r->name);
    r->in_durables = 0;
    r->last_msg_id = 0;
    r->last_durable[0] = '\0';
    r->nres++;
    return 0;
}

/* Read a payload of n bytes into r->payload, growing it only as bytes arrive. */
static int read_payload(struct restore *r, size_t n)
{
    size_t got = 0;
    while (got < n) {
        size_t k = n - got < BROKER_SNAPSHOT_PIECE_MAX ? n - got : BROKER_SNAPSHOT_PIECE_MAX;
        if (got + k > r->cap) {
            size_t ncap = r->cap * 2 > got + k ? r->cap * 2 : got + k;
            if (ncap > n)
                ncap = n;
            uint8_t *p = ferry_realloc(r->payload, ncap);
            if (p == NULL)
                return ferry_err_set(r->in.err, FERRY_ENOMEM,
                                     "out of memory restoring a message of %zu bytes", n);
            r->payload = p;
            r->cap = ncap;
        }
        int rc = read_exact(&r->in, r->payload + got, k);
        if (rc != 0)
            return rc;
        got += k;
    }
    return 0;
}

static int read_message(struct restore *r, uint32_t len)
{
    struct snap_in *in = &r->in;
    if (!r->have_res || r->in_durables)
        return corrupt(in, "a message record %s",
                       r->have_res ? "after the resource's durables" : "before any resource");
    if (len < SNAP_MSG_FIXED)
        return corrupt(in, "a message record of %u bytes", len);
    uint8_t fixed[SNAP_MSG_FIXED];
    int rc = read_exact(in, fixed, sizeof fixed);
    if (rc != 0)
        return rc;
    struct store_msg m = {
        .id = get_u64(fixed),
        .ts = get_u64(fixed + 8),
        .qts = get_u64(fixed + 16),
        .deliveries = get_u32(fixed + 24),
        .payload_len = len - SNAP_MSG_FIXED,
    };
    if (m.id <= r->last_msg_id)
        return corrupt(in, "message %llu of '%.64s' after message %llu (ids must be ascending)",
                       (unsigned long long)m.id, r->name, (unsigned long long)r->last_msg_id);
    rc = read_payload(r, m.payload_len);
    if (rc != 0)
        return rc;
    m.payload = m.payload_len ? r->payload : NULL;
    rc = store_msg_insert(r->b->store, r->rid, &m, in->err);
    if (rc != 0)
        return rc;
    r->last_msg_id = m.id;
    r->nmsg++;
    return 0;
}

static int read_durable(struct restore *r, uint32_t len)
{
    struct snap_in *in = &r->in;
    uint8_t body[SNAP_DUR_FIXED + BROKER_NAME_MAX];
    if (!r->have_res)
        return corrupt(in, "a durable record before any resource");
    if (r->kind != BROKER_CHANNEL)
        return corrupt(in, "a durable subscription on queue '%.64s'", r->name);
    if (len < SNAP_DUR_FIXED + 1 || len > sizeof body)
        return corrupt(in, "a durable record of %u bytes", len);
    int rc = read_exact(in, body, len);
    if (rc != 0)
        return rc;
    char name[BROKER_NAME_MAX + 1];
    uint64_t cursor;
    struct cur c = {body, len};
    if (take_str(&c, name) != 0 || take_u64(&c, &cursor) != 0 || c.n != 0)
        return corrupt(in, "a durable record whose fields do not fill its %u bytes", len);
    if (!broker_name_valid(name))
        return corrupt(in, "an invalid durable subscription name on '%.64s'", r->name);
    if (r->in_durables && strcmp(name, r->last_durable) <= 0)
        return corrupt(in,
                       "durable '%.64s' of '%.64s' comes after '%.64s' (names must be ascending)",
                       name, r->name, r->last_durable);
    rc = store_durable_put(r->b->store, r->rid, name, cursor, in->err);
    if (rc != 0)
        return rc;
    r->in_durables = 1;
    memcpy(r->last_durable, name, sizeof r->last_durable);
    r->ndur++;
    return 0;
}

static int read_producer(struct restore *r, uint32_t len)
{
    struct snap_in *in = &r->in;
    if (len < SNAP_PROD_FIXED || len > SNAP_PROD_FIXED + PRODUCER_RING_MAX_BYTES)
        return corrupt(in, "a producer record of %u bytes", len);
    uint8_t body[SNAP_PROD_FIXED + PRODUCER_RING_MAX_BYTES];
    int rc = read_exact(in, body, len);
    if (rc != 0)
        return rc;
    if (r->have_producer && memcmp(body, r->last_pid, 16) <= 0)
        return corrupt(in, "producer records out of order (ids must be ascending)");
    /* Check the ring as the broker will read it back. */
    uint64_t highest = get_u64(body + 16);
    if (!broker_producer_ring_valid(highest, body + SNAP_PROD_FIXED, len - SNAP_PROD_FIXED))
        return corrupt(in, "a producer record whose outcomes lie outside its last %u sequences",
                       PRODUCER_RING);
    rc = store_producer_put(r->b->store, body, highest, get_u64(body + 24), body + SNAP_PROD_FIXED,
                            len - SNAP_PROD_FIXED, in->err);
    if (rc != 0)
        return rc;
    r->have_producer = 1;
    memcpy(r->last_pid, body, 16);
    return 0;
}

/* The end record, then the end of the stream. */
static int read_end(struct restore *r, uint32_t len)
{
    struct snap_in *in = &r->in;
    if (len != SNAP_END_LEN)
        return corrupt(in, "an end record of %u bytes (expected %d)", len, SNAP_END_LEN);
    uint8_t counts[24], crc[4];
    int rc = read_exact(in, counts, sizeof counts);
    uint32_t want_crc = in->crc;
    if (rc == 0)
        rc = read_exact(in, crc, sizeof crc);
    if (rc != 0)
        return rc;
    if (get_u32(crc) != want_crc)
        return corrupt(in, "checksum mismatch (stream says %08x, bytes give %08x)", get_u32(crc),
                       want_crc);
    uint64_t nres = get_u64(counts), nmsg = get_u64(counts + 8), ndur = get_u64(counts + 16);
    if (nres != r->nres || nmsg != r->nmsg || ndur != r->ndur)
        return corrupt(in,
                       "the end record counts %llu resources, %llu messages, %llu durables but "
                       "the stream held %llu, %llu, %llu",
                       (unsigned long long)nres, (unsigned long long)nmsg, (unsigned long long)ndur,
                       (unsigned long long)r->nres, (unsigned long long)r->nmsg,
                       (unsigned long long)r->ndur);
    in->nrec++;
    uint8_t extra;
    int n = in->read(in->ctx, &extra, 1);
    if (n < 0)
        return ferry_err_set(in->err, n,
                             "reading the snapshot stream failed at byte %llu (%s); nothing was "
                             "restored",
                             (unsigned long long)in->off, ferry_strerror(n));
    if (n > 0)
        return corrupt(in, "bytes follow the end record");
    return 0;
}

static int read_records(struct restore *r)
{
    for (;;) {
        uint8_t h[SNAP_REC_HEADER_LEN];
        int rc = read_exact(&r->in, h, sizeof h);
        if (rc != 0)
            return rc;
        uint32_t len = get_u32(h + 1);
        switch (h[0]) {
        case SNAP_REC_RESOURCE:
            rc = read_resource(r, len);
            break;
        case SNAP_REC_MESSAGE:
            rc = read_message(r, len);
            break;
        case SNAP_REC_DURABLE:
            rc = read_durable(r, len);
            break;
        case SNAP_REC_PRODUCER:
            rc = read_producer(r, len);
            break;
        case SNAP_REC_END:
            return read_end(r, len);
        default:
            return corrupt(&r->in, "unknown record type %u", h[0]);
        }
        if (rc != 0)
            return rc;
        r->in.nrec++;
    }
}

/* Header: 0 with (index, term), or ECORRUPT/EVERSION. */
static int read_header(struct snap_in *in, uint64_t *index, uint64_t *term)
{
    uint8_t h[SNAP_HEADER_LEN];
    int rc = read_exact(in, h, sizeof h);
    if (rc != 0)
        return rc;
    if (memcmp(h, SNAP_MAGIC, SNAP_MAGIC_LEN) != 0)
        return corrupt(in, "not a Ferry snapshot (bad magic)");
    uint32_t version = get_u32(h + 8);
    if (version > SNAP_VERSION)
        return ferry_err_set(in->err, FERRY_EVERSION,
                             "snapshot format version %u is newer than this Ferry (%s) reads "
                             "(at most %d); upgrade this node",
                             version, FERRY_VERSION, SNAP_VERSION);
    if (version == 0)
        return corrupt(in, "format version 0");
    *index = get_u64(h + 12);
    *term = get_u64(h + 20);
    return 0;
}

/* Replace the live tables with the stream's records, in one transaction. */
static int install(struct restore *r, uint64_t index, uint64_t term)
{
    struct store *s = r->b->store;
    struct ferry_err *err = r->in.err;
    int rc = store_begin(s, err);
    if (rc != 0)
        return rc;
    rc = store_clear_live(s, err);
    if (rc == 0)
        rc = read_records(r);
    if (rc == 0)
        rc = store_set_last_applied(s, index, term, err);
    if (rc == 0)
        return store_commit(s, err); /* rolled back if it fails */
    store_rollback(s);
    return rc;
}

int broker_restore(struct broker *b, int (*read)(void *ctx, void *p, size_t n), void *ctx,
                   int *skipped, struct ferry_err *err)
{
    assert(b != NULL && read != NULL && skipped != NULL);
    *skipped = 0;
    if (b->in_txn)
        return ferry_err_set(err, FERRY_ESTATE, "broker_restore inside a transaction");
    if (b->nclients > 0)
        return ferry_err_set(
            err, FERRY_EBUSY,
            "cannot restore a snapshot while %llu broker clients are still open: close "
            "them first",
            (unsigned long long)b->nclients);
    struct restore r;
    memset(&r, 0, sizeof r);
    r.b = b;
    r.in.read = read;
    r.in.ctx = ctx;
    r.in.err = err;
    uint64_t index = 0, term = 0, db_index = 0, db_term = 0;
    int rc = read_header(&r.in, &index, &term);
    if (rc == 0)
        rc = store_last_applied(b->store, &db_index, &db_term, err);
    if (rc != 0)
        return rc;
    if (db_index >= index) {
        *skipped = 1;
        return 0;
    }
    rc = install(&r, index, term);
    ferry_free(r.payload);
    if (rc != 0)
        return rc;
    return broker_rebuild(b, err);
}
