/* client.c - the client-facing calls of the serving node: connections,
 * subscriptions, consumers, leases and transient publishes.
 *
 * None of these change durable state. Ending a consumer turns its leases
 * into RETURN commands for the caller to propose; until they apply the
 * lease stays (marked LEASE_SETTLING) so the item is not offered again.
 * Settling (ACK/NACK) likewise marks the lease and frees the consumer's
 * credit at once, before the command is committed.
 *
 * These calls are never made while a transaction is open (asserted): every
 * caller runs begin..commit in one go on the loop thread.
 */
#include "broker/broker_int.h"

#include "util/alloc.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

static void *find_handle(struct broker_client *c, uint64_t id, uint8_t type)
{
    uint8_t *obj = umap_get(&c->b->handles, id);
    if (obj == NULL || *obj != type)
        return NULL;
    struct broker_client *owner =
        type == OBJ_SUB ? ((struct sub *)(void *)obj)->c : ((struct consumer *)(void *)obj)->c;
    return owner == c ? obj : NULL;
}

static int add_handle(struct broker *b, uint64_t *id, void *obj)
{
    uint64_t h = ++b->next_handle;
    if (umap_put(&b->handles, h, obj) != 0)
        return FERRY_ENOMEM;
    *id = h;
    return 0;
}

/* ---- connections ---- */

int broker_client_open(struct broker *b, const struct broker_client_ops *ops, void *ctx,
                       struct broker_client **out)
{
    assert(ops != NULL && ops->deliver != NULL && ops->ended != NULL);
    struct broker_client *c = ferry_calloc(1, sizeof *c);
    if (c == NULL)
        return FERRY_ENOMEM;
    c->b = b;
    c->ops = ops;
    c->ctx = ctx;
    list_init(&c->subs);
    list_init(&c->consumers);
    list_insert_tail(&b->clients, &c->node);
    b->nclients++;
    *out = c;
    return 0;
}

void broker_sub_free(struct broker *b, struct sub *s)
{
    if (s->durable) {
        assert(s->durable->live == s);
        s->durable->live = NULL;
    }
    if (s->ch) {
        assert(s->ch->nclients > 0);
        s->ch->nclients--;
    }
    list_remove(&s->res_node);
    list_remove(&s->client_node);
    list_remove(&s->pending_node);
    umap_remove(&b->handles, s->id);
    b->nsubs--;
    ferry_free(s);
}

void broker_consumer_free(struct broker *b, struct consumer *con)
{
    assert(con->unacked == 0);
    if (con->q) {
        assert(con->q->nclients > 0);
        con->q->nclients--;
        broker_queue_reconsider(b, con->q);
    }
    list_remove(&con->res_node);
    list_remove(&con->client_node);
    umap_remove(&b->handles, con->id);
    b->nconsumers--;
    ferry_free(con);
}

/* Give up con's leases: RETURN commands appended to `returns` (the lease
 * then waits for the command), or straight back to ready if that fails. */
static void release_leases(struct broker *b, struct consumer *con, uint64_t now_ms,
                           struct buf *returns)
{
    struct res *q = con->q;
    if (q == NULL || con->unacked == 0)
        return;
    struct broker_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.type = BROKER_CMD_RETURN;
    cmd.ts_ms = now_ms;
    snprintf(cmd.name, sizeof cmd.name, "%s", q->name);
    size_t pos = 0;
    uint64_t id;
    void *v;
    while (umap_next(&q->leases, &pos, &id, &v)) {
        if (v != con)
            continue;
        cmd.id = id;
        if (returns && broker_cmd_encode(returns, &cmd) == 0) {
            umap_put(&q->leases, id, LEASE_SETTLING); /* existing key: cannot fail */
        } else {
            umap_remove(&q->leases, id);
            broker_ready_push_returned(&q->ready, id);
        }
        con->unacked--;
    }
    assert(con->unacked == 0);
    broker_queue_reconsider(b, q);
}

/* The sub/consumer is freed before the client hears of it, so `ended` may
 * close the client (broker_client_close) without pulling the rug. */
void broker_end_sub(struct broker *b, struct sub *s, int code, const char *msg)
{
    struct broker_client *c = s->c;
    uint64_t id = s->id;
    broker_sub_free(b, s);
    c->ops->ended(c->ctx, id, code, msg);
}

void broker_end_consumer(struct broker *b, struct consumer *con, int code, const char *msg)
{
    assert(con->q == NULL || con->q->doomed);
    struct broker_client *c = con->c;
    uint64_t id = con->id;
    con->unacked = 0; /* its leases go with the deleted queue */
    broker_consumer_free(b, con);
    c->ops->ended(c->ctx, id, code, msg);
}

void broker_zombify_sub(struct broker *b, struct sub *s)
{
    if (s->durable) {
        s->durable->live = NULL;
        s->durable = NULL;
    }
    if (s->ch)
        s->ch->nclients--;
    s->ch = NULL;
    list_remove(&s->res_node);
    list_remove(&s->pending_node);
    list_insert_tail(&b->zombie_subs, &s->res_node);
}

void broker_zombify_consumer(struct broker *b, struct consumer *con)
{
    if (con->q)
        con->q->nclients--;
    con->q = NULL;
    con->unacked = 0; /* the leases went with the queue */
    list_remove(&con->res_node);
    list_insert_tail(&b->zombie_consumers, &con->res_node);
}

void broker_client_close(struct broker_client *c, uint64_t now_ms, struct buf *returns)
{
    if (c == NULL)
        return;
    struct broker *b = c->b;
    assert(!b->in_txn);
    while (!list_empty(&c->subs))
        broker_sub_free(b, list_entry(c->subs.next, struct sub, client_node));
    while (!list_empty(&c->consumers)) {
        struct consumer *con = list_entry(c->consumers.next, struct consumer, client_node);
        release_leases(b, con, now_ms, returns);
        broker_consumer_free(b, con);
    }
    list_remove(&c->node);
    b->nclients--;
    ferry_free(c);
}

void broker_client_writable(struct broker_client *c)
{
    struct broker *b = c->b;
    c->blocked = 0;
    struct list *pos;
    list_foreach(pos, &c->subs)
    {
        broker_sub_reconsider(b, list_entry(pos, struct sub, client_node));
    }
    list_foreach(pos, &c->consumers)
    {
        struct consumer *con = list_entry(pos, struct consumer, client_node);
        if (con->q)
            broker_queue_reconsider(b, con->q);
    }
}

/* ---- lookups ---- */

int broker_lookup(const struct broker *b, const char *name, enum broker_kind *kind)
{
    const struct res *r = broker_res_find(b, name);
    if (r == NULL)
        return FERRY_ENOTFOUND;
    *kind = (enum broker_kind)r->kind;
    return 0;
}

int broker_durable_exists(const struct broker *b, const char *channel, const char *durable)
{
    const struct res *r = broker_res_find(b, channel);
    return r != NULL && r->kind == BROKER_CHANNEL && smap_get(&r->durables, durable) != NULL;
}

/* The resource for a client call: found, or ENOTFOUND/EWRONGTYPE in err. */
static int client_res(struct broker *b, const char *name, uint8_t kind, struct res **out,
                      struct ferry_err *err)
{
    if (b->broken)
        return ferry_err_set(err, b->broken, "%s", b->broken_err.msg);
    struct res *r = broker_res_find(b, name);
    if (r == NULL)
        return ferry_err_set(err, FERRY_ENOTFOUND, "%s '%s' does not exist", broker_kind_name(kind),
                             name);
    if (r->kind != kind)
        return ferry_err_set(err, FERRY_EWRONGTYPE, "'%s' is a %s, not a %s", name,
                             broker_kind_name(r->kind), broker_kind_name(kind));
    *out = r;
    return 0;
}

/* ---- subscriptions ---- */

/* Where a new subscription starts, or FERRY_E* with err set. */
static int start_id(struct res *ch, int start, uint64_t from_id, struct durable *d, uint64_t *next,
                    struct ferry_err *err)
{
    switch (start) {
    case 0: /* new events only */
        *next = ch->last_id + 1;
        return 0;
    case 1: /* from from_id, clamped to what is retained / assigned */
        *next = from_id < ch->head_id ? ch->head_id : from_id;
        if (*next > ch->last_id + 1)
            *next = ch->last_id + 1;
        return 0;
    case 2: /* oldest retained */
        *next = ch->head_id;
        return 0;
    case 3: /* durable: after its cursor */
        *next = d->cursor + 1 < ch->head_id ? ch->head_id : d->cursor + 1;
        return 0;
    default:
        return ferry_err_set(err, FERRY_EINVAL,
                             "unknown start %d (0 new, 1 from id, 2 oldest, 3 durable)", start);
    }
}

static int find_durable_for(struct res *ch, int start, const char *name, struct durable **out,
                            struct ferry_err *err)
{
    *out = NULL;
    if (start != 3)
        return 0;
    if (name == NULL || !broker_name_valid(name))
        return ferry_err_set(err, FERRY_EINVAL, "a durable subscription needs a valid name");
    struct durable *d = smap_get(&ch->durables, name);
    if (d == NULL)
        return ferry_err_set(err, FERRY_ENOTFOUND,
                             "durable subscription '%s' of channel '%s' does not exist", name,
                             ch->name);
    if (d->live != NULL)
        return ferry_err_set(err, FERRY_EBUSY,
                             "durable subscription '%s' of channel '%s' already has a live "
                             "subscriber",
                             name, ch->name);
    *out = d;
    return 0;
}

int broker_subscribe(struct broker_client *c, const char *channel, int start, uint64_t from_id,
                     const char *durable, uint32_t window, uint64_t *sub_id,
                     uint64_t *next_event_id, struct ferry_err *err)
{
    struct broker *b = c->b;
    assert(!b->in_txn);
    struct res *ch = NULL;
    struct durable *d = NULL;
    uint64_t next = 0;
    int rc = client_res(b, channel, BROKER_CHANNEL, &ch, err);
    if (rc == 0)
        rc = find_durable_for(ch, start, durable, &d, err);
    if (rc == 0)
        rc = start_id(ch, start, from_id, d, &next, err);
    if (rc != 0)
        return rc;
    struct sub *s = ferry_calloc(1, sizeof *s);
    if (s == NULL || add_handle(b, &s->id, s) != 0) {
        ferry_free(s);
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory subscribing to '%s'", channel);
    }
    s->type = OBJ_SUB;
    s->c = c;
    s->ch = ch;
    s->next_id = next;
    s->durable = d;
    s->window = window ? window : b->cfg.default_window;
    if (d) {
        d->live = s;
        s->acked = next - 1;
    }
    list_init(&s->pending_node);
    list_insert_tail(&ch->clients, &s->res_node);
    list_insert_tail(&c->subs, &s->client_node);
    ch->nclients++;
    b->nsubs++;
    broker_sub_reconsider(b, s);
    *sub_id = s->id;
    *next_event_id = next;
    return 0;
}

int broker_unsubscribe(struct broker_client *c, uint64_t sub_id, struct ferry_err *err)
{
    assert(!c->b->in_txn);
    struct sub *s = find_handle(c, sub_id, OBJ_SUB);
    if (s == NULL)
        return ferry_err_set(err, FERRY_ENOTFOUND, "no subscription %llu on this connection",
                             (unsigned long long)sub_id);
    broker_sub_free(c->b, s);
    return 0;
}

int broker_sub_ack(struct broker_client *c, uint64_t sub_id, uint64_t event_id, uint64_t now_ms,
                   struct broker_cmd *cmd_out, struct ferry_err *err)
{
    assert(!c->b->in_txn);
    struct sub *s = find_handle(c, sub_id, OBJ_SUB);
    if (s == NULL || s->ch == NULL)
        return ferry_err_set(err, FERRY_ENOTFOUND, "no subscription %llu on this connection",
                             (unsigned long long)sub_id);
    if (s->durable == NULL)
        return ferry_err_set(err, FERRY_EINVAL,
                             "subscription %llu is not durable: only durable subscriptions are "
                             "acknowledged",
                             (unsigned long long)sub_id);
    if (event_id >= s->next_id)
        return ferry_err_set(err, FERRY_EINVAL,
                             "event %llu has not been delivered to subscription %llu yet (next "
                             "is %llu)",
                             (unsigned long long)event_id, (unsigned long long)sub_id,
                             (unsigned long long)s->next_id);
    if (event_id > s->acked) {
        s->acked = event_id;
        broker_sub_reconsider(c->b, s);
    }
    memset(cmd_out, 0, sizeof *cmd_out);
    cmd_out->type = BROKER_CMD_DURABLE_ACK;
    cmd_out->ts_ms = now_ms;
    snprintf(cmd_out->name, sizeof cmd_out->name, "%s", s->ch->name);
    snprintf(cmd_out->name2, sizeof cmd_out->name2, "%s", s->durable->name);
    cmd_out->id = event_id;
    return 0;
}

/* ---- consumers ---- */

int broker_consume(struct broker_client *c, const char *queue, uint32_t prefetch,
                   uint64_t *consumer_id, struct ferry_err *err)
{
    struct broker *b = c->b;
    assert(!b->in_txn);
    struct res *q = NULL;
    int rc = client_res(b, queue, BROKER_QUEUE, &q, err);
    if (rc != 0)
        return rc;
    struct consumer *con = ferry_calloc(1, sizeof *con);
    if (con == NULL || add_handle(b, &con->id, con) != 0) {
        ferry_free(con);
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory consuming from '%s'", queue);
    }
    con->type = OBJ_CONSUMER;
    con->c = c;
    con->q = q;
    con->prefetch = prefetch ? prefetch : b->cfg.default_prefetch;
    list_insert_tail(&q->clients, &con->res_node);
    list_insert_tail(&c->consumers, &con->client_node);
    q->nclients++;
    b->nconsumers++;
    broker_queue_reconsider(b, q);
    *consumer_id = con->id;
    return 0;
}

int broker_cancel(struct broker_client *c, uint64_t consumer_id, uint64_t now_ms,
                  struct buf *returns, struct ferry_err *err)
{
    assert(!c->b->in_txn);
    struct consumer *con = find_handle(c, consumer_id, OBJ_CONSUMER);
    if (con == NULL)
        return ferry_err_set(err, FERRY_ENOTFOUND, "no consumer %llu on this connection",
                             (unsigned long long)consumer_id);
    release_leases(c->b, con, now_ms, returns);
    broker_consumer_free(c->b, con);
    return 0;
}

int broker_settle(struct broker_client *c, uint64_t consumer_id, uint64_t item_id, int nack,
                  uint64_t now_ms, struct broker_cmd *cmd_out, struct ferry_err *err)
{
    assert(!c->b->in_txn);
    struct consumer *con = find_handle(c, consumer_id, OBJ_CONSUMER);
    if (con == NULL || con->q == NULL)
        return ferry_err_set(err, FERRY_ENOTFOUND, "no consumer %llu on this connection",
                             (unsigned long long)consumer_id);
    struct res *q = con->q;
    if (umap_get(&q->leases, item_id) != con)
        return ferry_err_set(err, FERRY_ENOTFOUND,
                             "item %llu of queue '%s' is not delivered to consumer %llu (already "
                             "settled, or never delivered to it)",
                             (unsigned long long)item_id, q->name, (unsigned long long)consumer_id);
    umap_put(&q->leases, item_id, LEASE_SETTLING); /* existing key: cannot fail */
    assert(con->unacked > 0);
    con->unacked--;
    broker_queue_reconsider(c->b, q);
    memset(cmd_out, 0, sizeof *cmd_out);
    cmd_out->type = nack ? BROKER_CMD_RETURN : BROKER_CMD_ACK;
    cmd_out->ts_ms = now_ms;
    snprintf(cmd_out->name, sizeof cmd_out->name, "%s", q->name);
    cmd_out->id = item_id;
    return 0;
}

/* ---- transient publish ---- */

int broker_publish_transient(struct broker *b, const char *channel, uint64_t ts_ms,
                             const uint8_t *payload, uint32_t len, struct ferry_err *err)
{
    assert(!b->in_txn);
    struct res *ch = NULL;
    int rc = client_res(b, channel, BROKER_CHANNEL, &ch, err);
    if (rc != 0)
        return rc;
    if (b->cfg.max_message_size && len > b->cfg.max_message_size)
        return ferry_err_set(err, FERRY_ETOOBIG,
                             "message of %u bytes exceeds max_message_size (%llu)", len,
                             (unsigned long long)b->cfg.max_message_size);
    struct broker_msg m = {0, 0, ts_ms, 0, 1, payload, len};
    struct list *pos;
    list_foreach(pos, &ch->clients)
    {
        struct sub *s = list_entry(pos, struct sub, res_node);
        if (s->c->blocked || s->next_id != ch->last_id + 1)
            continue;
        m.handle = s->id;
        if (s->c->ops->deliver(s->c->ctx, 0, &m) != 0)
            s->c->blocked = 1;
    }
    return 0;
}
