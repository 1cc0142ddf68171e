/* info.c - introspection: broker_info, broker_list, broker_stats.
 *
 * Counts come from memory, except that a resource with a TTL may hold
 * expired messages not yet removed by EXPIRE: those are counted out by
 * walking the expired prefix in the database (bounded by what EXPIRE will
 * remove next; nothing when oldest_qts shows none can be expired).
 */
#include "broker/broker_int.h"

#include "util/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t durable_unacked(const struct res *ch)
{
    uint64_t n = 0;
    const struct list *pos;
    list_foreach(pos, &ch->clients)
    {
        const struct sub *s = list_entry(pos, const struct sub, res_node);
        if (s->durable && s->next_id - 1 > s->acked)
            n += s->next_id - 1 - s->acked;
    }
    return n;
}

/* Oldest retained id that is not expired, and how many expired ones precede it. */
static int live_range(const struct broker *b, const struct res *r, uint64_t now_ms,
                      uint64_t *expired, uint64_t *first, struct ferry_err *err)
{
    uint64_t last = 0, qts = 0;
    *expired = 0;
    *first = 0;
    if (r->count == 0)
        return 0;
    if (r->ttl_ms && now_ms >= r->ttl_ms && r->oldest_qts <= now_ms - r->ttl_ms) {
        int rc =
            store_msg_expired_prefix(b->store, r->rid, now_ms - r->ttl_ms, expired, &last, err);
        if (rc != 0)
            return rc;
    }
    if (*expired >= r->count)
        return 0;
    if (r->kind == BROKER_CHANNEL) {
        *first = *expired ? last + 1 : r->head_id;
        return 0;
    }
    if (*expired == 0) {
        int found = store_msg_first(b->store, r->rid, first, &qts, err);
        return found < 0 ? found : 0;
    }
    struct store_msg m;
    int rc = store_scan_open(b->store, r->rid, last + 1, 1, err);
    int found = rc == 0 ? store_scan_next(b->store, &m, err) : rc;
    store_scan_close(b->store);
    if (found < 0)
        return found;
    *first = found ? m.id : 0;
    return 0;
}

static int fill_info(const struct broker *b, const struct res *r, uint64_t now_ms,
                     struct broker_info *out, struct ferry_err *err)
{
    memset(out, 0, sizeof *out);
    out->kind = r->kind;
    memcpy(out->name, r->name, sizeof out->name);
    out->capacity = r->capacity;
    out->ttl_ms = r->ttl_ms;
    out->max_deliveries = r->max_deliveries;
    memcpy(out->dlq, r->dlq, sizeof out->dlq);
    uint64_t expired = 0;
    int rc = live_range(b, r, now_ms, &expired, &out->first_id, err);
    if (rc != 0)
        return rc;
    out->count = r->count - (expired < r->count ? expired : r->count);
    out->last_id = r->last_id;
    out->clients = r->nclients;
    out->unacked = r->kind == BROKER_QUEUE ? r->leases.count : durable_unacked(r);
    return 0;
}

int broker_info(const struct broker *b, const char *name, uint64_t now_ms, struct broker_info *out,
                struct ferry_err *err)
{
    const struct res *r = broker_res_find(b, name);
    if (r == NULL)
        return ferry_err_set(err, FERRY_ENOTFOUND, "no channel or queue named '%s'", name);
    return fill_info(b, r, now_ms, out, err);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const struct broker_info *)a)->name, ((const struct broker_info *)b)->name);
}

int broker_list(const struct broker *b, uint64_t now_ms, struct broker_info **items, size_t *count)
{
    size_t n = b->res.count, i = 0, pos = 0;
    struct broker_info *arr = ferry_calloc(n ? n : 1, sizeof *arr);
    if (arr == NULL)
        return FERRY_ENOMEM;
    void *v;
    while (smap_next(&b->res, &pos, NULL, &v)) {
        int rc = fill_info(b, v, now_ms, &arr[i++], NULL);
        if (rc != 0) {
            ferry_free(arr);
            return rc;
        }
    }
    qsort(arr, i, sizeof *arr, by_name);
    *items = arr;
    *count = i;
    return 0;
}

void broker_stats(const struct broker *b, struct broker_stats *out)
{
    memset(out, 0, sizeof *out);
    out->channels = b->nchannels;
    out->queues = b->nqueues;
    out->resources = b->nchannels + b->nqueues;
    size_t pos = 0;
    void *v;
    while (smap_next(&b->res, &pos, NULL, &v))
        out->stored_messages += ((const struct res *)v)->count;
    out->clients = b->nclients;
    out->subscriptions = b->nsubs;
    out->consumers = b->nconsumers;
    out->history_records = b->history_count;
    out->producers = b->nproducers;
}
