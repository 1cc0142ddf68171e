/* log.c - the in-memory tail of the Raft log since the last compaction.
 *
 * Entries live in one array used as a sliding window: compaction advances
 * `start`, appends grow the array (moving the live window to the front when
 * that frees enough room). Payloads are copied in on append; payloads of
 * entries truncated or compacted away go to the garbage list and are freed at
 * the start of the next raft_step, so pointers handed out in an update stay
 * valid until then.
 */
#include <assert.h>
#include <string.h>

#include "raft/core/core.h"
#include "util/alloc.h"

uint64_t rlog_last(const struct rlog *l)
{
    return l->offset + l->n;
}

uint64_t rlog_term(const struct rlog *l, uint64_t index)
{
    if (index == l->offset)
        return l->offset_term;
    if (index < l->offset || index > rlog_last(l))
        return 0;
    return l->e[l->start + (index - l->offset - 1)].term;
}

struct raft_entry *rlog_get(const struct rlog *l, uint64_t index)
{
    if (index <= l->offset || index > rlog_last(l))
        return NULL;
    return &l->e[l->start + (index - l->offset - 1)];
}

void raft_discard(struct raft *r, void *p, size_t len)
{
    if (p == NULL)
        return;
    if (r->n_garbage == r->garbage_cap) {
        size_t cap = r->garbage_cap ? r->garbage_cap * 2 : 64;
        void **g = ferry_realloc(r->garbage, cap * sizeof(*g));
        if (g == NULL) {
            /* Out of memory: the core is unusable from here (raft_step returns
             * FERRY_ENOMEM), so freeing now cannot be observed. */
            r->oom = 1;
            ferry_free(p);
            return;
        }
        r->garbage = g;
        r->garbage_cap = cap;
    }
    r->garbage[r->n_garbage++] = p;
    r->garbage_bytes += len;
}

void raft_free_garbage(struct raft *r)
{
    for (size_t i = 0; i < r->n_garbage; i++)
        ferry_free(r->garbage[i]);
    r->n_garbage = 0;
    r->garbage_bytes = 0;
}

static int rlog_grow(struct rlog *l)
{
    if (l->start > 0 && l->start >= l->n) {
        memmove(l->e, l->e + l->start, l->n * sizeof(*l->e));
        l->start = 0;
        return 0;
    }
    size_t cap = l->cap ? l->cap * 2 : 64;
    struct raft_entry *e = ferry_realloc(l->e, cap * sizeof(*e));
    if (e == NULL)
        return FERRY_ENOMEM;
    l->e = e;
    l->cap = cap;
    return 0;
}

int rlog_append(struct raft *r, uint64_t term, uint8_t type, const void *data, uint32_t len)
{
    struct rlog *l = &r->log;
    assert(term >= rlog_term(l, rlog_last(l)));
    if (l->start + l->n == l->cap && rlog_grow(l) != 0)
        return FERRY_ENOMEM;
    uint8_t *copy = NULL;
    if (len > 0) {
        copy = ferry_malloc(len);
        if (copy == NULL)
            return FERRY_ENOMEM;
        memcpy(copy, data, len);
    }
    struct raft_entry *e = &l->e[l->start + l->n];
    e->term = term;
    e->index = rlog_last(l) + 1;
    e->type = type;
    e->len = len;
    e->data = copy;
    l->n++;
    l->bytes += len;
    mark_dirty(r, e->index);
    return 0;
}

void rlog_truncate(struct raft *r, uint64_t from)
{
    struct rlog *l = &r->log;
    assert(from > l->offset);
    while (rlog_last(l) >= from) {
        struct raft_entry *e = &l->e[l->start + l->n - 1];
        raft_discard(r, e->data, e->len);
        e->data = NULL;
        l->bytes -= e->len;
        l->n--;
    }
}

void rlog_compact(struct raft *r, uint64_t upto)
{
    struct rlog *l = &r->log;
    assert(upto <= rlog_last(l));
    if (upto <= l->offset)
        return;
    uint64_t term = rlog_term(l, upto);
    while (l->offset < upto) {
        struct raft_entry *e = &l->e[l->start];
        raft_discard(r, e->data, e->len);
        e->data = NULL;
        l->bytes -= e->len;
        l->start++;
        l->n--;
        l->offset++;
    }
    l->offset_term = term;
    if (l->n == 0)
        l->start = 0;
}

void rlog_reset(struct raft *r, uint64_t index, uint64_t term)
{
    struct rlog *l = &r->log;
    while (l->n > 0) {
        raft_discard(r, l->e[l->start + l->n - 1].data, l->e[l->start + l->n - 1].len);
        l->n--;
    }
    l->start = 0;
    l->bytes = 0;
    l->offset = index;
    l->offset_term = term;
}

void rlog_free(struct raft *r)
{
    struct rlog *l = &r->log;
    for (size_t i = 0; i < l->n; i++)
        ferry_free(l->e[l->start + i].data);
    ferry_free(l->e);
    memset(l, 0, sizeof(*l));
}
