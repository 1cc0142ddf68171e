/* producers.c - the dedup table of idempotent producers.
 *
 * A client sends a random 128-bit producer id in HELLO and numbers its
 * persistent publishes and pushes (producer_seq, increasing in the order it
 * submits them). A publish sent again after a failover carries the same
 * (id, seq), and this table recognises it: per producer it keeps the
 * highest sequence applied, when it was last used, and the outcome (status
 * and id) of its last PRODUCER_RING sequences, in a ring indexed by
 * seq % PRODUCER_RING. For a command with a producer:
 *
 *   - seq > highest, or seq within the ring's span but not in it (never
 *     applied: refused before it reached the log): applied as new, and its
 *     outcome recorded;
 *   - seq in the ring: not applied again; the recorded outcome is the
 *     result, with `duplicate` set;
 *   - seq older than the ring's span: not applied; ESTATE, since its
 *     outcome is no longer known.
 *
 * The table is part of the replicated state: it changes only in
 * broker_apply, from the command alone (time is the command's ts_ms, the
 * leader's clock carried in the entry), is written in the same transaction
 * as the messages (dirty producers at commit), is in snapshots and in the
 * digest. It is bounded: at most PRODUCER_MAX producers (a new one evicts
 * the least recently used, ties broken by id) and a producer unused for
 * PRODUCER_IDLE_MS is forgotten. Memory: PRODUCER_MAX x ~6 KiB at most.
 */
#include "broker/broker_int.h"

#include "util/alloc.h"
#include "util/buf.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>


static uint64_t fold(const uint8_t *pid)
{
    uint64_t a, b;
    memcpy(&a, pid, 8);
    memcpy(&b, pid + 8, 8);
    return a ^ (b * 0x9E3779B97F4A7C15ULL);
}

int broker_has_producer(const struct broker_cmd *c)
{
    static const uint8_t zero[16];
    return c->producer_seq != 0 && memcmp(c->producer_id, zero, sizeof zero) != 0;
}

static struct producer *find(const struct broker *b, const uint8_t *pid)
{
    for (struct producer *p = umap_get(&b->producers, fold(pid)); p != NULL; p = p->next)
        if (memcmp(p->pid, pid, 16) == 0)
            return p;
    return NULL;
}

static void unlink_producer(struct broker *b, struct producer *p)
{
    uint64_t k = fold(p->pid);
    struct producer *head = umap_get(&b->producers, k);
    if (head == p) {
        if (p->next != NULL)
            umap_put(&b->producers, k, p->next); /* replaces: no allocation */
        else
            umap_remove(&b->producers, k);
    } else {
        struct producer *q = head;
        while (q != NULL && q->next != p)
            q = q->next;
        if (q != NULL)
            q->next = p->next;
    }
    if (list_linked(&p->dirty_node))
        list_remove(&p->dirty_node);
    b->nproducers--;
}

static int insert(struct broker *b, const uint8_t *pid, struct producer **out)
{
    struct producer *p = ferry_calloc(1, sizeof *p);
    if (p == NULL)
        return FERRY_ENOMEM;
    memcpy(p->pid, pid, 16);
    list_init(&p->dirty_node);
    uint64_t k = fold(pid);
    p->next = umap_get(&b->producers, k);
    if (umap_put(&b->producers, k, p) != 0) {
        ferry_free(p);
        return FERRY_ENOMEM;
    }
    b->nproducers++;
    *out = p;
    return 0;
}

/* Forget p inside the open transaction: its row goes at commit. */
static int forget(struct broker *b, struct producer *p)
{
    if (b->ngone == b->gonecap) {
        size_t cap = b->gonecap ? 2 * b->gonecap : 16;
        uint8_t(*g)[16] = ferry_realloc(b->gone, cap * sizeof *g);
        if (g == NULL)
            return FERRY_ENOMEM;
        b->gone = g;
        b->gonecap = cap;
    }
    memcpy(b->gone[b->ngone++], p->pid, 16);
    unlink_producer(b, p);
    ferry_free(p);
    return 0;
}

/* The least recently used producer (ties: the smallest id). */
static struct producer *oldest(const struct broker *b)
{
    struct producer *best = NULL;
    size_t pos = 0;
    void *v;
    while (umap_next(&b->producers, &pos, NULL, &v))
        for (struct producer *p = v; p != NULL; p = p->next)
            if (best == NULL || p->last_ms < best->last_ms ||
                (p->last_ms == best->last_ms && memcmp(p->pid, best->pid, 16) < 0))
                best = p;
    return best;
}

static int idle(const struct producer *p, uint64_t now_ms)
{
    return now_ms > p->last_ms && now_ms - p->last_ms > PRODUCER_IDLE_MS;
}

int broker_producer_check(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                          struct ferry_err *err)
{
    struct producer *p = find(b, cmd->producer_id);
    if (p != NULL && idle(p, cmd->ts_ms)) {
        if (forget(b, p) != 0)
            return ferry_err_set(err, FERRY_ENOMEM, "out of memory forgetting a producer");
        p = NULL;
    }
    uint64_t seq = cmd->producer_seq;
    if (p == NULL || seq > p->highest)
        return 0;
    const struct producer_outcome *o = &p->ring[seq % PRODUCER_RING];
    if (o->seq == seq) {
        r->status = o->status;
        r->id = o->id;
        r->duplicate = 1;
        if (o->status != 0)
            snprintf(r->msg, sizeof r->msg,
                     "duplicate of an earlier publish of this producer, which failed: %s",
                     ferry_strerror(o->status));
        return 1;
    }
    if (seq + PRODUCER_RING > p->highest)
        return 0; /* within the ring's span and not in it: never applied */
    broker_result_set(r, FERRY_ESTATE,
                      "outcome of this retried publish is no longer known (sequence %llu is "
                      "older than the last %u of its producer)",
                      (unsigned long long)seq, PRODUCER_RING);
    return 1;
}

int broker_producer_record(struct broker *b, const struct broker_cmd *cmd,
                           const struct broker_result *r, struct ferry_err *err)
{
    struct producer *p = find(b, cmd->producer_id);
    if (p == NULL) {
        if (b->nproducers >= PRODUCER_MAX && forget(b, oldest(b)) != 0)
            return ferry_err_set(err, FERRY_ENOMEM, "out of memory evicting a producer");
        if (insert(b, cmd->producer_id, &p) != 0)
            return ferry_err_set(err, FERRY_ENOMEM, "out of memory recording a producer");
    }
    struct producer_outcome *o = &p->ring[cmd->producer_seq % PRODUCER_RING];
    o->seq = cmd->producer_seq;
    o->id = r->status == 0 ? r->id : 0;
    o->status = r->status;
    if (cmd->producer_seq > p->highest)
        p->highest = cmd->producer_seq;
    if (cmd->ts_ms > p->last_ms)
        p->last_ms = cmd->ts_ms;
    if (!list_linked(&p->dirty_node))
        list_insert_tail(&b->dirty_producers, &p->dirty_node);
    return 0;
}

int broker_producers_expire(struct broker *b, uint64_t now_ms, struct ferry_err *err)
{
    /* Collect first: forgetting changes the map being walked. */
    struct producer **idle_ones = NULL;
    size_t n = 0, cap = 0;
    size_t pos = 0;
    void *v;
    int rc = 0;
    while (rc == 0 && umap_next(&b->producers, &pos, NULL, &v))
        for (struct producer *p = v; p != NULL && rc == 0; p = p->next) {
            if (!idle(p, now_ms))
                continue;
            if (n == cap) {
                size_t ncap = cap ? 2 * cap : 64;
                struct producer **g = ferry_realloc(idle_ones, ncap * sizeof *g);
                if (g == NULL) {
                    rc = FERRY_ENOMEM;
                    break;
                }
                idle_ones = g;
                cap = ncap;
            }
            idle_ones[n++] = p;
        }
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = forget(b, idle_ones[i]);
    ferry_free(idle_ones);
    if (rc != 0)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory forgetting producers");
    return 0;
}

/* ---- persistence ---- */

size_t broker_producer_encode_ring(const struct producer *p, uint8_t *out)
{
    size_t n = 0;
    uint8_t *run = NULL;
    uint64_t next_seq = 0, next_id = 0;
    int32_t status = 0;
    uint32_t count = 0;
    /* oldest first, so the encoding of a state does not depend on the slots */
    uint64_t from = p->highest >= PRODUCER_RING ? p->highest - PRODUCER_RING + 1 : 1;
    for (uint64_t seq = from; seq <= p->highest; seq++) {
        const struct producer_outcome *o = &p->ring[seq % PRODUCER_RING];
        if (o->seq != seq)
            continue;
        if (run != NULL && seq == next_seq && o->status == status && o->id == next_id) {
            put_u32(run + 8, ++count);
        } else {
            run = out + n;
            n += PRODUCER_RUN_BYTES;
            count = 1;
            status = o->status;
            put_u64(run, seq);
            put_u32(run + 8, count);
            put_u64(run + 12, o->id);
            put_u32(run + 20, (uint32_t)o->status);
        }
        next_seq = seq + 1;
        next_id = o->status == 0 ? o->id + 1 : 0;
    }
    return n;
}

int broker_producer_ring_valid(uint64_t highest, const uint8_t *ring, size_t len)
{
    if (len % PRODUCER_RUN_BYTES != 0 || len > PRODUCER_RING_MAX_BYTES)
        return 0;
    uint64_t after = 0; /* the sequences must ascend */
    for (size_t off = 0; off < len; off += PRODUCER_RUN_BYTES) {
        uint64_t seq = get_u64(ring + off);
        uint32_t count = get_u32(ring + off + 8);
        if (count == 0 || count > PRODUCER_RING || seq < after || seq == 0 ||
            seq + PRODUCER_RING <= highest || seq + count - 1 > highest)
            return 0;
        after = seq + count;
    }
    return 1;
}

int broker_producer_put(struct broker *b, const uint8_t *pid, uint64_t highest, uint64_t last_ms,
                        const uint8_t *ring, size_t len)
{
    if (!broker_producer_ring_valid(highest, ring, len))
        return FERRY_ECORRUPT;
    struct producer *p = find(b, pid);
    if (p == NULL && insert(b, pid, &p) != 0)
        return FERRY_ENOMEM;
    p->highest = highest;
    p->last_ms = last_ms;
    memset(p->ring, 0, sizeof p->ring);
    for (size_t off = 0; off < len; off += PRODUCER_RUN_BYTES) {
        uint64_t seq = get_u64(ring + off);
        uint32_t count = get_u32(ring + off + 8);
        uint64_t id = get_u64(ring + off + 12);
        int32_t status = (int32_t)get_u32(ring + off + 20);
        for (uint32_t i = 0; i < count; i++) {
            struct producer_outcome *o = &p->ring[(seq + i) % PRODUCER_RING];
            o->seq = seq + i;
            o->id = status == 0 ? id + i : 0;
            o->status = status;
        }
    }
    return 0;
}

static int load_cb(void *ctx, const uint8_t *pid, uint64_t highest, uint64_t last_ms,
                   const void *ring, size_t len)
{
    return broker_producer_put(ctx, pid, highest, last_ms, ring, len);
}

void broker_producers_free(struct broker *b)
{
    size_t pos = 0;
    void *v;
    while (umap_next(&b->producers, &pos, NULL, &v)) {
        struct producer *p = v;
        while (p != NULL) {
            struct producer *next = p->next;
            ferry_free(p);
            p = next;
        }
    }
    umap_free(&b->producers);
    umap_init(&b->producers);
    list_init(&b->dirty_producers);
    b->nproducers = 0;
    b->ngone = 0;
}

int broker_producers_load(struct broker *b, struct ferry_err *err)
{
    broker_producers_free(b);
    int rc = store_producers_load(b->store, load_cb, b, err);
    if (rc > 0 || rc == FERRY_ECORRUPT || rc == FERRY_ENOMEM) {
        int code = rc > 0 ? FERRY_ECORRUPT : rc;
        return ferry_err_set(err, code, "%s: the producers table %s", b->db_path,
                             code == FERRY_ENOMEM ? "does not fit in memory"
                                                  : "holds a malformed row");
    }
    return rc;
}

int broker_producers_flush(struct broker *b, struct ferry_err *err)
{
    for (size_t i = 0; i < b->ngone; i++) {
        if (find(b, b->gone[i]) != NULL)
            continue; /* forgotten, then back in the same batch: the put below writes it */
        int rc = store_producer_delete(b->store, b->gone[i], err);
        if (rc != 0)
            return rc;
    }
    b->ngone = 0;
    uint8_t ring[PRODUCER_RING_MAX_BYTES];
    while (!list_empty(&b->dirty_producers)) {
        struct producer *p = list_entry(b->dirty_producers.next, struct producer, dirty_node);
        size_t n = broker_producer_encode_ring(p, ring);
        int rc = store_producer_put(b->store, p->pid, p->highest, p->last_ms, ring, n, err);
        if (rc != 0)
            return rc;
        list_remove(&p->dirty_node);
    }
    return 0;
}
