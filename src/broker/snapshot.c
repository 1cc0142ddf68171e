/* snapshot.c - writing snapshots, and the digest that hashes the same bytes.
 *
 * A snapshot pins the database with a read transaction on a second,
 * read-only connection (WAL gives it a stable view while the loop thread
 * keeps committing on the main one) and streams it from whichever thread
 * calls broker_snapshot_write; only that connection is touched there, never
 * the broker. The connection is kept for the next snapshot in an atomic
 * slot, since broker_snapshot_end may run on the worker.
 *
 * The encoder (broker_snap_encode) walks resources in name order, each
 * followed by its messages in id order and its durables in name order, into
 * one BROKER_SNAPSHOT_PIECE_MAX buffer that is handed to a sink whenever it
 * fills: memory is that buffer plus the current row, whatever the number of
 * messages. The order depends only on replicated data (not on the
 * file-local rid), so the stream of a state is canonical and broker_digest
 * is simply SHA-256 over it, computed on the main connection.
 */
#include "broker/broker_int.h"

#include "util/alloc.h"
#include "util/buf.h"
#include "util/crc32c.h"

#include <assert.h>
#include <openssl/evp.h>
#include <string.h>

struct broker_snap {
    struct broker *b;
    struct store *reader; /* read-only, inside a read transaction */
    uint64_t index, term;
};

/* ---- the encoder ---- */

struct snap_out {
    uint8_t *buf; /* BROKER_SNAPSHOT_PIECE_MAX bytes */
    size_t len;
    uint64_t sent; /* bytes handed to the sink */
    uint32_t crc;  /* of the bytes handed to the sink */
    snap_sink sink;
    void *ctx;
    struct store *store;
    uint64_t nres, nmsg, ndur;
    struct ferry_err *err;
};

static int out_flush(struct snap_out *o)
{
    if (o->len == 0)
        return 0;
    o->crc = crc32c_extend(o->crc, o->buf, o->len);
    int rc = o->sink(o->ctx, o->buf, o->len);
    if (rc != 0) {
        rc = rc < 0 ? rc : FERRY_EIO;
        return ferry_err_set(o->err, rc, "writing the snapshot stream failed after %llu bytes (%s)",
                             (unsigned long long)o->sent, ferry_strerror(rc));
    }
    o->sent += o->len;
    o->len = 0;
    return 0;
}

static int out_bytes(struct snap_out *o, const void *p, size_t n)
{
    const uint8_t *q = p;
    while (n > 0) {
        size_t k = BROKER_SNAPSHOT_PIECE_MAX - o->len;
        if (k > n)
            k = n;
        memcpy(o->buf + o->len, q, k);
        o->len += k;
        q += k;
        n -= k;
        if (o->len == BROKER_SNAPSHOT_PIECE_MAX) {
            int rc = out_flush(o);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

/* Small fixed-size records are assembled in a stack buffer first. */
static uint8_t *put_rec_header(uint8_t *p, uint8_t type, uint32_t len)
{
    p[0] = type;
    put_u32(p + 1, len);
    return p + SNAP_REC_HEADER_LEN;
}

static uint8_t *put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s);
    assert(n <= BROKER_NAME_MAX);
    *p++ = (uint8_t)n;
    memcpy(p, s, n);
    return p + n;
}

static int msg_cb(void *ctx, const struct store_msg *m)
{
    struct snap_out *o = ctx;
    assert(m->payload_len <= UINT32_MAX - SNAP_MSG_FIXED);
    uint8_t rec[SNAP_REC_HEADER_LEN + SNAP_MSG_FIXED];
    uint8_t *p = put_rec_header(rec, SNAP_REC_MESSAGE, SNAP_MSG_FIXED + m->payload_len);
    put_u64(p, m->id);
    put_u64(p + 8, m->ts);
    put_u64(p + 16, m->qts);
    put_u32(p + 24, m->deliveries);
    int rc = out_bytes(o, rec, sizeof rec);
    if (rc == 0)
        rc = out_bytes(o, m->payload, m->payload_len);
    o->nmsg++;
    return rc;
}

static int durable_cb(void *ctx, const char *name, uint64_t cursor)
{
    struct snap_out *o = ctx;
    uint8_t rec[SNAP_REC_HEADER_LEN + SNAP_DUR_FIXED + BROKER_NAME_MAX];
    size_t n = strlen(name);
    uint8_t *p = put_rec_header(rec, SNAP_REC_DURABLE, (uint32_t)(SNAP_DUR_FIXED + n));
    p = put_str(p, name);
    put_u64(p, cursor);
    o->ndur++;
    return out_bytes(o, rec, (size_t)(p + 8 - rec));
}

static int resource_cb(void *ctx, const struct store_resource *r)
{
    struct snap_out *o = ctx;
    uint8_t rec[SNAP_REC_HEADER_LEN + SNAP_RES_FIXED + 2 * BROKER_NAME_MAX];
    size_t len = SNAP_RES_FIXED + strlen(r->name) + strlen(r->dlq);
    uint8_t *p = put_rec_header(rec, SNAP_REC_RESOURCE, (uint32_t)len);
    *p++ = r->kind;
    p = put_str(p, r->name);
    put_u64(p, r->capacity);
    put_u64(p + 8, r->ttl_ms);
    put_u32(p + 16, r->max_deliveries);
    p = put_str(p + 20, r->dlq);
    put_u64(p, r->last_id);
    put_u64(p + 8, r->last_qts);
    put_u64(p + 16, r->created_ts);
    p += 24;
    assert((size_t)(p - rec) == SNAP_REC_HEADER_LEN + len);
    o->nres++;
    int rc = out_bytes(o, rec, (size_t)(p - rec));
    if (rc == 0)
        rc = store_msgs_walk(o->store, r->rid, msg_cb, o, o->err);
    if (rc == 0)
        rc = store_durables_load(o->store, r->rid, durable_cb, o, o->err);
    return rc;
}

/* A PRODUCER record: its id, highest sequence, last use and outcomes. */
static int producer_cb(void *ctx, const uint8_t *pid, uint64_t highest, uint64_t last_ms,
                       const void *ring, size_t ring_len)
{
    struct snap_out *o = ctx;
    if (!broker_producer_ring_valid(highest, ring, ring_len))
        return ferry_err_set(o->err, FERRY_ECORRUPT,
                             "a producer row holds %zu bytes of malformed outcomes", ring_len);
    uint8_t rec[SNAP_REC_HEADER_LEN + SNAP_PROD_FIXED];
    uint8_t *p = put_rec_header(rec, SNAP_REC_PRODUCER, (uint32_t)(SNAP_PROD_FIXED + ring_len));
    memcpy(p, pid, 16);
    put_u64(p + 16, highest);
    put_u64(p + 24, last_ms);
    int rc = out_bytes(o, rec, sizeof rec);
    if (rc == 0 && ring_len > 0)
        rc = out_bytes(o, ring, ring_len);
    return rc;
}

/* The end record: counts, then the CRC-32C of every byte before the CRC. */
static int put_end(struct snap_out *o)
{
    uint8_t rec[SNAP_REC_HEADER_LEN + SNAP_END_LEN];
    uint8_t *p = put_rec_header(rec, SNAP_REC_END, SNAP_END_LEN);
    put_u64(p, o->nres);
    put_u64(p + 8, o->nmsg);
    put_u64(p + 16, o->ndur);
    int rc = out_bytes(o, rec, sizeof rec - 4);
    if (rc != 0)
        return rc;
    uint8_t crc[4];
    put_u32(crc, crc32c_extend(o->crc, o->buf, o->len));
    rc = out_bytes(o, crc, sizeof crc);
    return rc != 0 ? rc : out_flush(o);
}

int broker_snap_encode(struct store *s, uint64_t index, uint64_t term, snap_sink sink, void *ctx,
                       struct ferry_err *err)
{
    struct snap_out o = {.sink = sink, .ctx = ctx, .store = s, .err = err};
    o.buf = ferry_malloc(BROKER_SNAPSHOT_PIECE_MAX);
    if (o.buf == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory writing a snapshot");
    uint8_t h[SNAP_HEADER_LEN];
    memcpy(h, SNAP_MAGIC, SNAP_MAGIC_LEN);
    put_u32(h + 8, SNAP_VERSION);
    put_u64(h + 12, index);
    put_u64(h + 20, term);
    int rc = out_bytes(&o, h, sizeof h);
    if (rc == 0)
        rc = store_resources_by_name(s, resource_cb, &o, err);
    if (rc == 0)
        rc = store_producers_load(s, producer_cb, &o, err);
    if (rc == 0)
        rc = put_end(&o);
    ferry_free(o.buf);
    return rc;
}

/* ---- snapshots ---- */

int broker_snapshot_begin(struct broker *b, struct broker_snap **out, struct ferry_err *err)
{
    assert(b != NULL && out != NULL);
    *out = NULL;
    if (b->in_txn)
        return ferry_err_set(err, FERRY_ESTATE,
                             "broker_snapshot_begin inside a transaction (it would not see it)");
    struct broker_snap *s = ferry_calloc(1, sizeof *s);
    if (s == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory taking a snapshot");
    s->b = b;
    s->reader = atomic_exchange(&b->snap_idle, NULL);
    int rc = 0;
    if (s->reader == NULL)
        rc = store_open_readonly(&s->reader, b->db_path, err);
    if (rc == 0)
        rc = store_read_begin(s->reader, err);
    /* The first read fixes the transaction's view of the file. */
    if (rc == 0)
        rc = store_last_applied(s->reader, &s->index, &s->term, err);
    if (rc != 0) {
        store_close(s->reader); /* not reused: it may be what failed */
        ferry_free(s);
        return ferry_err_wrap(err, "taking a snapshot");
    }
    /* Nothing is being applied: the view is the last commit. */
    assert(b->broken || (s->index == b->stored_index && s->term == b->stored_term));
    atomic_fetch_add(&b->nsnaps, 1);
    *out = s;
    return 0;
}

uint64_t broker_snapshot_index(const struct broker_snap *s)
{
    return s->index;
}

uint64_t broker_snapshot_term(const struct broker_snap *s)
{
    return s->term;
}

int broker_snapshot_write(struct broker_snap *s, int (*write)(void *ctx, const void *p, size_t n),
                          void *ctx, struct ferry_err *err)
{
    assert(s != NULL && write != NULL);
    assert(store_txn(s->reader) == 2);
    return broker_snap_encode(s->reader, s->index, s->term, write, ctx, err);
}

void broker_snapshot_end(struct broker_snap *s)
{
    if (s == NULL)
        return;
    struct broker *b = s->b;
    store_read_end(s->reader);
    struct store *none = NULL;
    if (!atomic_compare_exchange_strong(&b->snap_idle, &none, s->reader))
        store_close(s->reader); /* another one is kept already */
    unsigned was = atomic_fetch_sub(&b->nsnaps, 1);
    assert(was > 0);
    (void)was;
    ferry_free(s);
}

/* ---- digest ---- */

static int digest_sink(void *ctx, const void *p, size_t n)
{
    return EVP_DigestUpdate(ctx, p, n) == 1 ? 0 : FERRY_EINTERNAL;
}

int broker_digest(struct broker *b, char hex[BROKER_DIGEST_HEX], uint64_t *index, uint64_t *term,
                  struct ferry_err *err)
{
    if (b->in_txn)
        return ferry_err_set(err, FERRY_ESTATE,
                             "broker_digest inside a transaction (it covers committed state)");
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory computing a digest");
    int rc = 0;
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        rc = ferry_err_set(err, FERRY_EINTERNAL, "OpenSSL cannot start a SHA-256 digest");
    if (rc == 0)
        rc = store_read_begin(b->store, err);
    if (rc == 0) {
        rc = store_last_applied(b->store, index, term, err);
        if (rc == 0)
            rc = broker_snap_encode(b->store, *index, *term, digest_sink, md, err);
        store_read_end(b->store);
    }
    unsigned char d[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    if (rc == 0 && (EVP_DigestFinal_ex(md, d, &dlen) != 1 || dlen != 32))
        rc = ferry_err_set(err, FERRY_EINTERNAL, "OpenSSL cannot finish a SHA-256 digest");
    EVP_MD_CTX_free(md);
    if (rc != 0)
        return rc;
    static const char digits[] = "0123456789abcdef";
    for (unsigned i = 0; i < dlen; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[2 * dlen] = '\0';
    return 0;
}
