/* ready.c - the set of a queue's item ids waiting for a consumer.
 *
 * Two parts, merged on the way out (smallest id first):
 *   - a ring of ids in increasing order: every PUSH appends, delivery pops
 *     the head, so a queue consumed in order costs O(1) per item and 8
 *     bytes per waiting item; removing an id elsewhere (an ACK seen by a
 *     follower out of order) finds it by binary search and marks the slot
 *     with READY_TOMB; tombstones are skipped and compacted away;
 *   - a binary min-heap of ids given back by RETURN on the serving node,
 *     which are smaller than most of the ring and must go first.
 */
#include "broker/broker_int.h"

#include "util/alloc.h"

#include <assert.h>
#include <string.h>

#define READY_TOMB (1ull << 63)
#define ID(v) ((v) & ~READY_TOMB)

void broker_ready_init(struct ready *r)
{
    memset(r, 0, sizeof *r);
}

void broker_ready_free(struct ready *r)
{
    ferry_free(r->ring);
    ferry_free(r->heap);
    broker_ready_init(r);
}

size_t broker_ready_count(const struct ready *r)
{
    assert(r->tombs <= r->len);
    return r->len - r->tombs + r->hlen;
}

static uint64_t *slot(const struct ready *r, size_t i)
{
    assert(i < r->len);
    return &r->ring[(r->head + i) & (r->cap - 1)];
}

/* Copy live slots into a new ring of capacity ncap (tombstones dropped). */
static int ring_rebuild(struct ready *r, size_t ncap)
{
    uint64_t *n = ferry_malloc(ncap * sizeof *n);
    if (n == NULL)
        return FERRY_ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < r->len; i++) {
        uint64_t v = *slot(r, i);
        if (!(v & READY_TOMB))
            n[k++] = v;
    }
    ferry_free(r->ring);
    r->ring = n;
    r->cap = ncap;
    r->head = 0;
    r->len = k;
    r->tombs = 0;
    return 0;
}

int broker_ready_push_new(struct ready *r, uint64_t id)
{
    assert(id != 0 && !(id & READY_TOMB));
    assert(r->len == 0 || ID(*slot(r, r->len - 1)) < id);
    if (r->len == r->cap) {
        size_t ncap = r->cap ? r->cap * 2 : 64;
        if (r->tombs > r->len / 2)
            ncap = r->cap; /* mostly tombstones: compact in place-size */
        int rc = ring_rebuild(r, ncap);
        if (rc != 0)
            return rc;
    }
    r->ring[(r->head + r->len) & (r->cap - 1)] = id;
    r->len++;
    return 0;
}

static void heap_sift_up(uint64_t *h, size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h[parent] <= h[i])
            break;
        uint64_t t = h[parent];
        h[parent] = h[i];
        h[i] = t;
        i = parent;
    }
}

static void heap_sift_down(uint64_t *h, size_t n, size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < n && h[l] < h[m])
            m = l;
        if (l + 1 < n && h[l + 1] < h[m])
            m = l + 1;
        if (m == i)
            return;
        uint64_t t = h[m];
        h[m] = h[i];
        h[i] = t;
        i = m;
    }
}

int broker_ready_push_returned(struct ready *r, uint64_t id)
{
    assert(id != 0 && !(id & READY_TOMB));
    if (r->hlen == r->hcap) {
        size_t ncap = r->hcap ? r->hcap * 2 : 16;
        uint64_t *n = ferry_realloc(r->heap, ncap * sizeof *n);
        if (n == NULL)
            return FERRY_ENOMEM;
        r->heap = n;
        r->hcap = ncap;
    }
    r->heap[r->hlen] = id;
    heap_sift_up(r->heap, r->hlen);
    r->hlen++;
    return 0;
}

static void ring_pop_head(struct ready *r)
{
    assert(r->len > 0);
    r->head = (r->head + 1) & (r->cap - 1);
    r->len--;
}

/* Drop tombstones at both ends so the head and tail slots are live. */
static void ring_trim(struct ready *r)
{
    while (r->len > 0 && (*slot(r, 0) & READY_TOMB)) {
        ring_pop_head(r);
        r->tombs--;
    }
    while (r->len > 0 && (*slot(r, r->len - 1) & READY_TOMB)) {
        r->len--;
        r->tombs--;
    }
}

int broker_ready_peek(struct ready *r, uint64_t *id)
{
    ring_trim(r);
    int have_ring = r->len > 0, have_heap = r->hlen > 0;
    if (!have_ring && !have_heap)
        return 0;
    if (have_ring && (!have_heap || *slot(r, 0) < r->heap[0]))
        *id = *slot(r, 0);
    else
        *id = r->heap[0];
    return 1;
}

static void heap_remove_at(struct ready *r, size_t i)
{
    assert(i < r->hlen);
    r->hlen--;
    if (i == r->hlen)
        return;
    r->heap[i] = r->heap[r->hlen];
    heap_sift_down(r->heap, r->hlen, i);
    heap_sift_up(r->heap, i);
}

void broker_ready_pop(struct ready *r)
{
    uint64_t id;
    int have = broker_ready_peek(r, &id);
    assert(have);
    (void)have;
    if (r->hlen > 0 && r->heap[0] == id)
        heap_remove_at(r, 0);
    else
        ring_pop_head(r);
}

/* Index of id in the ring (live or tombstoned), or -1. */
static long ring_find(const struct ready *r, uint64_t id)
{
    size_t lo = 0, hi = r->len;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        uint64_t v = ID(*slot(r, mid));
        if (v == id)
            return (long)mid;
        if (v < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return -1;
}

static long heap_find(const struct ready *r, uint64_t id)
{
    for (size_t i = 0; i < r->hlen; i++)
        if (r->heap[i] == id)
            return (long)i;
    return -1;
}

int broker_ready_contains(const struct ready *r, uint64_t id)
{
    long i = ring_find(r, id);
    if (i >= 0 && !(*slot(r, (size_t)i) & READY_TOMB))
        return 1;
    return heap_find(r, id) >= 0;
}

int broker_ready_remove(struct ready *r, uint64_t id)
{
    long i = ring_find(r, id);
    if (i >= 0 && !(*slot(r, (size_t)i) & READY_TOMB)) {
        *slot(r, (size_t)i) |= READY_TOMB;
        r->tombs++;
        ring_trim(r);
        return 1;
    }
    i = heap_find(r, id);
    if (i < 0)
        return 0;
    heap_remove_at(r, (size_t)i);
    return 1;
}

void broker_ready_drop_through(struct ready *r, uint64_t max_id)
{
    ring_trim(r);
    while (r->len > 0 && ID(*slot(r, 0)) <= max_id) {
        if (*slot(r, 0) & READY_TOMB)
            r->tombs--;
        ring_pop_head(r);
    }
    ring_trim(r);
    while (r->hlen > 0 && r->heap[0] <= max_id)
        heap_remove_at(r, 0);
}
