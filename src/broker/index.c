/* index.c - the in-memory index of resources, built from the database.
 *
 * broker_index_load runs at open and after every failed or abandoned
 * transaction. It rebuilds in place: a resource or durable that still exists
 * in the database keeps its struct (so live subscriptions, consumers and
 * leases keep their pointers), its counters and ready set are reloaded,
 * leases of items that are gone are dropped, and structs that have no row
 * any more are freed (their clients, which cannot normally exist, are
 * ended at the next pump). Rows are matched by name, preferring a struct
 * deleted in the abandoned transaction over one created in it.
 */
#include "broker/broker_int.h"

#include "util/alloc.h"
#include "util/log.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

const char broker_lease_settling = 0;

int broker_name_valid(const char *name)
{
    size_t n = strnlen(name, BROKER_NAME_MAX + 1);
    if (n == 0 || n > BROKER_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '.' || ch == '_' || ch == '-' || ch == ':' || ch == '/';
        if (!ok)
            return 0;
    }
    return 1;
}

const char *broker_kind_name(uint8_t kind)
{
    return kind == BROKER_CHANNEL ? "channel" : kind == BROKER_QUEUE ? "queue" : "resource";
}

void broker_default_dlq(const char *name, char *out)
{
    size_t n = strlen(name);
    if (n + 4 > BROKER_NAME_MAX) {
        out[0] = '\0';
        return;
    }
    memcpy(out, name, n);
    memcpy(out + n, ".dlq", 5);
}

void broker_res_defaults(const struct broker *b, uint8_t kind, const char *name,
                         const struct broker_cmd *cmd, struct store_resource *out)
{
    (void)b;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    out->kind = kind;
    if (cmd) {
        out->capacity = cmd->capacity;
        out->ttl_ms = cmd->ttl_ms;
    }
    if (kind == BROKER_QUEUE) {
        out->max_deliveries = cmd && cmd->max_deliveries ? cmd->max_deliveries
                                                         : BROKER_DEFAULT_MAX_DELIVERIES;
        broker_default_dlq(name, out->dlq);
    }
}

struct res *broker_res_find(const struct broker *b, const char *name)
{
    return smap_get(&b->res, name);
}

static struct res *res_alloc(void)
{
    struct res *r = ferry_calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    list_init(&r->clients);
    smap_init(&r->durables);
    broker_ready_init(&r->ready);
    umap_init(&r->leases);
    list_init(&r->dirty_node);
    list_init(&r->pending_node);
    list_init(&r->doomed_node);
    return r;
}

static void res_set_attrs(struct res *r, const struct store_resource *a)
{
    r->rid = a->rid;
    memcpy(r->name, a->name, sizeof r->name);
    r->kind = a->kind;
    r->capacity = a->capacity;
    r->ttl_ms = a->ttl_ms;
    r->max_deliveries = a->max_deliveries;
    memcpy(r->dlq, a->dlq, sizeof r->dlq);
    r->created_ts = a->created_ts;
    r->last_id = a->last_id;
    r->last_qts = a->last_qts;
}

static void count_kind(struct broker *b, uint8_t kind, int delta)
{
    if (kind == BROKER_CHANNEL)
        b->nchannels += (uint64_t)(int64_t)delta;
    else
        b->nqueues += (uint64_t)(int64_t)delta;
}

int broker_res_create(struct broker *b, const struct store_resource *attrs, struct res **out,
                      struct ferry_err *err)
{
    assert(b->in_txn);
    assert(broker_res_find(b, attrs->name) == NULL);
    struct store_resource row = *attrs;
    struct res *r = res_alloc();
    if (r == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory creating %s '%s'",
                             broker_kind_name(attrs->kind), attrs->name);
    int rc = store_resource_insert(b->store, &row, err);
    if (rc == 0 && smap_put(&b->res, row.name, r) != 0)
        rc = ferry_err_set(err, FERRY_ENOMEM, "out of memory creating '%s'", row.name);
    if (rc != 0) {
        broker_res_free(b, r);
        return rc;
    }
    res_set_attrs(r, &row);
    r->head_id = r->last_id + 1;
    count_kind(b, r->kind, +1);
    *out = r;
    return 0;
}

void broker_res_dirty(struct broker *b, struct res *r)
{
    if (!list_linked(&r->dirty_node))
        list_insert_tail(&b->dirty, &r->dirty_node);
}

void broker_durable_free(struct durable *d)
{
    if (d == NULL)
        return;
    assert(d->live == NULL);
    list_remove(&d->doomed_node);
    ferry_free(d);
}

void broker_res_free(struct broker *b, struct res *r)
{
    (void)b;
    assert(list_empty(&r->clients));
    size_t pos = 0;
    void *v;
    while (smap_next(&r->durables, &pos, NULL, &v))
        broker_durable_free(v);
    smap_free(&r->durables);
    broker_ready_free(&r->ready);
    umap_free(&r->leases);
    list_remove(&r->dirty_node);
    list_remove(&r->pending_node);
    list_remove(&r->doomed_node);
    ferry_free(r);
}

/* ---- loading ---- */

struct load_ctx {
    struct broker *b;
    struct smap *old; /* structs not yet matched to a row */
    struct ferry_err *err;
};

/* The struct to reuse for the row named `name`, taken out of the old sets. */
static struct res *take_old(struct broker *b, struct smap *old, const char *name, uint64_t rid)
{
    struct list *pos;
    list_foreach(pos, &b->doomed)
    {
        struct res *r = list_entry(pos, struct res, doomed_node);
        if (r->rid == rid && strcmp(r->name, name) == 0) {
            list_remove(&r->doomed_node);
            r->doomed = 0;
            return r;
        }
    }
    return smap_remove(old, name);
}

static int load_res_cb(void *ctx, const struct store_resource *row)
{
    struct load_ctx *lc = ctx;
    struct res *r = take_old(lc->b, lc->old, row->name, row->rid);
    if (r == NULL && (r = res_alloc()) == NULL)
        return ferry_err_set(lc->err, FERRY_ENOMEM, "out of memory loading resources");
    if (smap_put(&lc->b->res, row->name, r) != 0) {
        if (list_empty(&r->clients))
            broker_res_free(lc->b, r);
        else
            smap_put(lc->old, row->name, r);
        return ferry_err_set(lc->err, FERRY_ENOMEM, "out of memory loading resources");
    }
    if (r->kind != 0 && r->kind != row->kind)
        log_warn("broker", "'%s' changed kind on reload", row->name);
    res_set_attrs(r, row);
    count_kind(lc->b, r->kind, +1);
    return 0;
}

struct durable_ctx {
    struct res *ch;
    struct broker *b;
    struct smap old;
    struct ferry_err *err;
};

static struct durable *take_old_durable(struct durable_ctx *dc, const char *name)
{
    struct list *pos;
    list_foreach(pos, &dc->b->doomed_durables)
    {
        struct durable *d = list_entry(pos, struct durable, doomed_node);
        if (d->ch == dc->ch && strcmp(d->name, name) == 0) {
            list_remove(&d->doomed_node);
            return d;
        }
    }
    return smap_remove(&dc->old, name);
}

static int load_durable_cb(void *ctx, const char *name, uint64_t cursor)
{
    struct durable_ctx *dc = ctx;
    struct durable *d = take_old_durable(dc, name);
    if (d == NULL) {
        d = ferry_calloc(1, sizeof *d);
        if (d == NULL)
            return ferry_err_set(dc->err, FERRY_ENOMEM, "out of memory loading durables");
        list_init(&d->doomed_node);
        snprintf(d->name, sizeof d->name, "%s", name);
        d->ch = dc->ch;
    }
    d->cursor = cursor;
    if (smap_put(&dc->ch->durables, name, d) != 0) {
        smap_put(&dc->old, name, d);
        return ferry_err_set(dc->err, FERRY_ENOMEM, "out of memory loading durables");
    }
    return 0;
}

/* Free durables that have no row any more; end their live subscribers. */
static void drop_durables(struct broker *b, struct smap *old)
{
    size_t pos = 0;
    void *v;
    while (smap_next(old, &pos, NULL, &v)) {
        struct durable *d = v;
        if (d->live)
            broker_zombify_sub(b, d->live);
        broker_durable_free(d);
    }
    smap_free(old);
}

static int load_durables(struct broker *b, struct res *ch, struct ferry_err *err)
{
    struct durable_ctx dc = {ch, b, ch->durables, err};
    smap_init(&ch->durables);
    int rc = store_durables_load(b->store, ch->rid, load_durable_cb, &dc, err);
    /* Durables of ch deleted in the abandoned transaction and still without a row. */
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &b->doomed_durables)
    {
        struct durable *d = list_entry(pos, struct durable, doomed_node);
        if (d->ch != ch)
            continue;
        if (d->live)
            broker_zombify_sub(b, d->live);
        broker_durable_free(d);
    }
    drop_durables(b, &dc.old);
    return rc;
}

static int load_channel(struct broker *b, struct res *ch, struct ferry_err *err)
{
    uint64_t first = 0, qts = 0, last = 0;
    int found = store_msg_first(b->store, ch->rid, &first, &qts, err);
    if (found < 0)
        return found;
    if (found) {
        int rc = store_msg_last(b->store, ch->rid, &last, err);
        if (rc < 0)
            return rc;
        if (last > ch->last_id)
            ch->last_id = last; /* never reuse an id that is on disk */
        ch->head_id = first;
        ch->count = last - first + 1;
        ch->oldest_qts = qts;
    } else {
        ch->head_id = ch->last_id + 1;
        ch->count = 0;
    }
    struct list *pos;
    list_foreach(pos, &ch->clients)
    {
        struct sub *s = list_entry(pos, struct sub, res_node);
        if (s->next_id > ch->last_id + 1)
            s->next_id = ch->last_id + 1;
    }
    return load_durables(b, ch, err);
}

static int load_id_cb(void *ctx, uint64_t id)
{
    struct res *q = ctx;
    q->count++;
    if (q->last_id < id)
        q->last_id = id;
    if (umap_get(&q->leases, id) != NULL)
        return 0;
    return broker_ready_push_new(&q->ready, id);
}

/* Drop leases of items that are no longer stored, and every lease waiting
 * for an ACK/RETURN to apply: a reload follows an abandoned batch, whose
 * commands may never apply, so those items become ready again (at worst a
 * duplicate delivery; never an item stuck out of reach). */
static int prune_leases(struct broker *b, struct res *q, struct ferry_err *err)
{
    size_t pos = 0;
    uint64_t id;
    void *v;
    struct store_msg m;
    while (umap_next(&q->leases, &pos, &id, &v)) {
        int found = v == LEASE_SETTLING ? 0 : store_msg_get(b->store, q->rid, id, &m, err);
        if (found < 0)
            return found;
        if (found)
            continue;
        umap_remove(&q->leases, id);
        if (v != LEASE_SETTLING) {
            struct consumer *con = v;
            assert(con->unacked > 0);
            con->unacked--;
        }
    }
    return 0;
}

static int load_queue(struct broker *b, struct res *q, struct ferry_err *err)
{
    broker_ready_free(&q->ready);
    q->count = 0;
    int rc = prune_leases(b, q, err);
    if (rc == 0)
        rc = store_msg_ids(b->store, q->rid, load_id_cb, q, err);
    if (rc == FERRY_ENOMEM)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory loading queue '%s'", q->name);
    if (rc != 0)
        return rc;
    uint64_t first, qts;
    int found = store_msg_first(b->store, q->rid, &first, &qts, err);
    if (found < 0)
        return found;
    q->oldest_qts = found ? qts : 0;
    q->head_id = found ? first : q->last_id + 1;
    return 0;
}

static void discard_res(struct broker *b, struct res *r)
{
    while (!list_empty(&r->clients)) {
        struct list *n = r->clients.next;
        if (r->kind == BROKER_CHANNEL)
            broker_zombify_sub(b, list_entry(n, struct sub, res_node));
        else
            broker_zombify_consumer(b, list_entry(n, struct consumer, res_node));
    }
    broker_res_free(b, r);
}

/* Free resources that have no row any more (the doomed list and the old
 * map are disjoint: a deleted resource left the map when it was deleted). */
static void drop_old(struct broker *b, struct smap *old)
{
    while (!list_empty(&b->doomed_durables)) {
        struct durable *d = list_entry(b->doomed_durables.next, struct durable, doomed_node);
        if (d->live)
            broker_zombify_sub(b, d->live);
        broker_durable_free(d);
    }
    while (!list_empty(&b->doomed))
        discard_res(b, list_entry(b->doomed.next, struct res, doomed_node));
    size_t p = 0;
    void *v;
    while (smap_next(old, &p, NULL, &v))
        discard_res(b, v);
    smap_free(old);
}

static int load_all(struct broker *b, struct smap *old, struct ferry_err *err)
{
    struct load_ctx lc = {b, old, err};
    int rc = store_resources_load(b->store, load_res_cb, &lc, err);
    size_t pos = 0;
    void *v;
    while (rc == 0 && smap_next(&b->res, &pos, NULL, &v)) {
        struct res *r = v;
        rc = r->kind == BROKER_CHANNEL ? load_channel(b, r, err) : load_queue(b, r, err);
    }
    if (rc == 0)
        rc = store_last_applied(b->store, &b->stored_index, &b->stored_term, err);
    if (rc == 0)
        rc = broker_producers_load(b, err);
    if (rc == 0)
        rc = broker_refresh_history(b, err);
    return rc;
}

static void rebuild_pending(struct broker *b)
{
    while (!list_empty(&b->pending_subs))
        list_remove(b->pending_subs.next);
    while (!list_empty(&b->pending_queues))
        list_remove(b->pending_queues.next);
    size_t pos = 0;
    void *v;
    while (smap_next(&b->res, &pos, NULL, &v)) {
        struct res *r = v;
        struct list *n;
        if (r->kind == BROKER_QUEUE) {
            broker_queue_reconsider(b, r);
            continue;
        }
        list_foreach(n, &r->clients)
        {
            broker_sub_reconsider(b, list_entry(n, struct sub, res_node));
        }
    }
}

int broker_index_load(struct broker *b, struct ferry_err *err)
{
    assert(!b->in_txn);
    struct smap old = b->res;
    smap_init(&b->res);
    while (!list_empty(&b->dirty))
        list_remove(b->dirty.next);
    b->nchannels = b->nqueues = 0;
    int rc = store_read_begin(b->store, err);
    if (rc == 0) {
        rc = load_all(b, &old, err);
        store_read_end(b->store);
    }
    drop_old(b, &old);
    b->applied_index = b->stored_index;
    b->applied_term = b->stored_term;
    rebuild_pending(b);
    if (rc != 0) {
        b->broken = rc;
        ferry_err_set(&b->broken_err, rc,
                      "the broker stopped: reloading its state from the database failed (%s); "
                      "restart the node",
                      err ? err->msg : ferry_strerror(rc));
    }
    return rc;
}
