/* deliver.c - moving messages to clients: the live path at commit and the pump.
 *
 * Live path (broker_fx_run, inside broker_commit after the transaction is
 * durable): each new event is offered, from the entry's bytes, to the
 * channel's subscribers whose next_id is exactly its id (caught up); each
 * new item is offered to a consumer with credit if it is the queue's next
 * ready item. A subscriber that is not caught up, is blocked or whose window
 * is full is left to the pump.
 *
 * Pump (broker_pump): subscriptions and queues with work wait in two lists
 * (b->pending_subs, b->pending_queues; "reconsider" keeps an object in its
 * list exactly while it may have work). Each visit moves at most
 * BROKER_PUMP_CHUNK messages read from the database (one range read for a
 * subscription, one keyed read per queue item), then rotates the object to
 * the back of its list, so one busy subscriber cannot starve the others.
 * All reads of one pump call share one read transaction.
 *
 * Queue consumers are served round-robin among those with credit: after a
 * delivery the consumer moves to the back of the queue's list.
 */
#include "broker/broker_int.h"

#include "util/alloc.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

/* ---- eligibility ---- */

static int sub_has_work(const struct sub *s)
{
    if (s->ch == NULL || s->c->blocked || s->next_id > s->ch->last_id)
        return 0;
    return s->durable == NULL || s->next_id <= s->acked + s->window;
}

void broker_sub_reconsider(struct broker *b, struct sub *s)
{
    int work = sub_has_work(s);
    if (work && !list_linked(&s->pending_node))
        list_insert_tail(&b->pending_subs, &s->pending_node);
    else if (!work)
        list_remove(&s->pending_node);
}

static int consumer_has_credit(const struct consumer *con)
{
    return !con->c->blocked && con->unacked < con->prefetch;
}

/* The first consumer of q with credit (round-robin order), or NULL. */
static struct consumer *pick_consumer(struct res *q)
{
    struct list *pos;
    list_foreach(pos, &q->clients)
    {
        struct consumer *con = list_entry(pos, struct consumer, res_node);
        if (consumer_has_credit(con))
            return con;
    }
    return NULL;
}

void broker_queue_reconsider(struct broker *b, struct res *q)
{
    assert(q->kind == BROKER_QUEUE);
    int work = !q->doomed && broker_ready_count(&q->ready) > 0 && pick_consumer(q) != NULL;
    if (work && !list_linked(&q->pending_node))
        list_insert_tail(&b->pending_queues, &q->pending_node);
    else if (!work)
        list_remove(&q->pending_node);
}

/* ---- offering one message ---- */

static int offer_event(struct sub *s, uint64_t id, uint64_t ts, const uint8_t *p, uint32_t n)
{
    struct broker_msg m = {s->id, id, ts, 0, 0, p, n};
    int rc = s->c->ops->deliver(s->c->ctx, 0, &m);
    if (rc != 0) {
        s->c->blocked = 1;
        return rc;
    }
    s->next_id = id + 1;
    return 0;
}

/* Lease item id to con and offer it: 0 taken, or an error (nothing leased). */
static int offer_item(struct res *q, struct consumer *con, uint64_t id, uint64_t ts,
                      uint32_t deliveries, const uint8_t *p, uint32_t n)
{
    if (umap_put(&q->leases, id, con) != 0)
        return FERRY_ENOMEM;
    struct broker_msg m = {con->id, id, ts, deliveries + 1, 0, p, n};
    int rc = con->c->ops->deliver(con->c->ctx, 1, &m);
    if (rc != 0) {
        umap_remove(&q->leases, id);
        con->c->blocked = 1;
        return rc;
    }
    con->unacked++;
    list_remove(&con->res_node);
    list_insert_tail(&q->clients, &con->res_node);
    return 0;
}

/* ---- leases released by apply ---- */

int broker_lease_release(struct broker *b, struct res *q, uint64_t id)
{
    assert(b->in_txn);
    void *v = umap_get(&q->leases, id);
    if (v == NULL)
        return 0;
    if (b->nundo == b->undocap) {
        size_t ncap = b->undocap ? b->undocap * 2 : 64;
        struct lease_undo *n = ferry_realloc(b->undo, ncap * sizeof *n);
        if (n == NULL)
            return FERRY_ENOMEM;
        b->undo = n;
        b->undocap = ncap;
    }
    b->undo[b->nundo++] = (struct lease_undo){q, id, v};
    umap_remove(&q->leases, id);
    if (v != LEASE_SETTLING) {
        struct consumer *con = v;
        assert(con->unacked > 0);
        con->unacked--;
        broker_queue_reconsider(b, q);
    }
    return 1;
}

void broker_lease_undo(struct broker *b)
{
    assert(!b->in_txn);
    while (b->nundo > 0) {
        const struct lease_undo *u = &b->undo[--b->nundo];
        if (u->holder == LEASE_SETTLING)
            continue; /* the reload makes such items ready again */
        /* If the map cannot grow, the item simply becomes ready again on
         * reload: at worst a duplicate delivery, never a lost item. */
        if (umap_put(&u->q->leases, u->id, u->holder) != 0)
            continue;
        if (u->holder != LEASE_SETTLING)
            ((struct consumer *)u->holder)->unacked++;
    }
}

/* ---- effects at commit ---- */

int broker_fx_push(struct broker *b, const struct fx *f)
{
    if (b->nfx == b->fxcap) {
        size_t ncap = b->fxcap ? b->fxcap * 2 : 256;
        struct fx *n = ferry_realloc(b->fx, ncap * sizeof *n);
        if (n == NULL)
            return FERRY_ENOMEM;
        b->fx = n;
        b->fxcap = ncap;
    }
    b->fx[b->nfx++] = *f;
    return 0;
}

void broker_fx_drop(struct broker *b)
{
    b->nfx = 0;
}

static void fx_event(struct broker *b, const struct fx *f)
{
    struct list *pos;
    list_foreach(pos, &f->res->clients)
    {
        struct sub *s = list_entry(pos, struct sub, res_node);
        int caught_up = s->next_id == f->id && !s->c->blocked;
        int in_window = s->durable == NULL || f->id <= s->acked + s->window;
        if (!caught_up || !in_window ||
            offer_event(s, f->id, f->ts, f->payload, f->payload_len) != 0)
            broker_sub_reconsider(b, s);
    }
}

static void fx_item(struct broker *b, const struct fx *f)
{
    struct res *q = f->res;
    uint64_t head;
    for (;;) {
        if (q->doomed || !broker_ready_peek(&q->ready, &head) || head != f->id)
            break;
        struct consumer *con = pick_consumer(q);
        if (con == NULL)
            break;
        int rc = offer_item(q, con, f->id, f->ts, 0, f->payload, f->payload_len);
        if (rc == 0)
            broker_ready_pop(&q->ready);
        if (rc == 0 || rc == FERRY_ENOMEM)
            break; /* taken, or left for the pump */
    }
    if (!q->doomed)
        broker_queue_reconsider(b, q);
}

static void end_res_clients(struct broker *b, struct res *r)
{
    char msg[BROKER_NAME_MAX + 64];
    snprintf(msg, sizeof msg, "%s '%s' was deleted", broker_kind_name(r->kind), r->name);
    while (!list_empty(&r->clients)) {
        struct list *n = r->clients.next;
        if (r->kind == BROKER_CHANNEL)
            broker_end_sub(b, list_entry(n, struct sub, res_node), FERRY_ENOTFOUND, msg);
        else
            broker_end_consumer(b, list_entry(n, struct consumer, res_node), FERRY_ENOTFOUND, msg);
    }
    broker_res_free(b, r);
}

static void end_durable(struct broker *b, struct durable *d)
{
    char msg[2 * BROKER_NAME_MAX + 64];
    snprintf(msg, sizeof msg, "durable subscription '%s' of channel '%s' was deleted", d->name,
             d->ch->name);
    if (d->live)
        broker_end_sub(b, d->live, FERRY_ENOTFOUND, msg);
    broker_durable_free(d);
}

void broker_fx_run(struct broker *b)
{
    assert(!b->in_txn);
    for (size_t i = 0; i < b->nfx; i++) {
        const struct fx *f = &b->fx[i];
        switch (f->type) {
        case FX_EVENT:
            fx_event(b, f);
            break;
        case FX_ITEM:
            fx_item(b, f);
            break;
        case FX_END_RES:
            end_res_clients(b, f->res);
            break;
        case FX_END_DURABLE:
            end_durable(b, f->durable);
            break;
        }
    }
    b->nfx = 0;
    assert(list_empty(&b->doomed));
    assert(list_empty(&b->doomed_durables));
}

/* ---- the pump ---- */

/* Offer stored events to s from its next_id: moved/scanned counted in *budget. */
static int pump_sub(struct broker *b, struct sub *s, uint64_t now_ms, uint32_t *budget,
                    struct ferry_err *err)
{
    struct res *ch = s->ch;
    if (s->next_id < ch->head_id) {
        /* The events in between were dropped or expired: nothing to deliver
         * or acknowledge there, so the window starts after them. */
        s->next_id = ch->head_id;
        if (s->durable && s->acked < ch->head_id - 1)
            s->acked = ch->head_id - 1;
    }
    uint32_t limit = *budget < BROKER_PUMP_CHUNK ? *budget : BROKER_PUMP_CHUNK;
    if (s->durable) {
        assert(s->next_id <= s->acked + s->window + 1);
        uint64_t room = s->acked + s->window - (s->next_id - 1);
        if (room < limit)
            limit = (uint32_t)room;
    }
    int rc = store_scan_open(b->store, ch->rid, s->next_id, limit, err);
    struct store_msg m;
    uint32_t seen = 0;
    while (rc == 0 && (rc = store_scan_next(b->store, &m, err)) == 1) {
        seen++;
        if (ch->ttl_ms && m.qts + ch->ttl_ms <= now_ms) {
            s->next_id = m.id + 1;
        } else if (offer_event(s, m.id, m.ts, m.payload, m.payload_len) != 0) {
            break;
        }
        rc = 0;
    }
    store_scan_close(b->store);
    if (rc < 0)
        return rc;
    if (seen == 0 && limit > 0)
        s->next_id = ch->last_id + 1; /* nothing stored from next_id on */
    *budget -= seen < *budget ? seen : *budget;
    list_remove(&s->pending_node);
    broker_sub_reconsider(b, s);
    return 0;
}

/* Offer ready items of q to its consumers, up to a chunk. */
static int pump_queue(struct broker *b, struct res *q, uint64_t now_ms, uint32_t *budget,
                      struct ferry_err *err)
{
    uint32_t limit = *budget < BROKER_PUMP_CHUNK ? *budget : BROKER_PUMP_CHUNK, done = 0;
    uint64_t id;
    struct store_msg m;
    while (done < limit && broker_ready_peek(&q->ready, &id)) {
        struct consumer *con = pick_consumer(q);
        if (con == NULL)
            break;
        int found = store_msg_get(b->store, q->rid, id, &m, err);
        if (found < 0)
            return found;
        done++;
        if (!found || (q->ttl_ms && m.qts + q->ttl_ms <= now_ms)) {
            broker_ready_pop(&q->ready); /* gone, or expired: EXPIRE removes it */
            continue;
        }
        int rc = offer_item(q, con, id, m.ts, m.deliveries, m.payload, m.payload_len);
        if (rc == FERRY_ENOMEM)
            return ferry_err_set(err, rc, "out of memory leasing an item of '%s'", q->name);
        if (rc == 0)
            broker_ready_pop(&q->ready);
    }
    *budget -= done;
    list_remove(&q->pending_node);
    broker_queue_reconsider(b, q);
    return 0;
}

static void end_zombies(struct broker *b)
{
    const char *msg = "the resource no longer exists";
    while (!list_empty(&b->zombie_subs))
        broker_end_sub(b, list_entry(b->zombie_subs.next, struct sub, res_node), FERRY_ENOTFOUND,
                       msg);
    while (!list_empty(&b->zombie_consumers))
        broker_end_consumer(b, list_entry(b->zombie_consumers.next, struct consumer, res_node),
                            FERRY_ENOTFOUND, msg);
}

/* Visit subscriptions and queues alternately, so neither kind starves the other. */
static int pump_lists(struct broker *b, uint64_t now_ms, struct ferry_err *err)
{
    uint32_t budget = b->cfg.pump_batch;
    int rc = 0;
    while (rc == 0 && budget > 0) {
        int subs = !list_empty(&b->pending_subs), queues = !list_empty(&b->pending_queues);
        if (!subs && !queues)
            break;
        if (subs)
            rc = pump_sub(b, list_entry(b->pending_subs.next, struct sub, pending_node), now_ms,
                          &budget, err);
        if (rc == 0 && queues && budget > 0)
            rc = pump_queue(b, list_entry(b->pending_queues.next, struct res, pending_node), now_ms,
                            &budget, err);
    }
    return rc;
}

int broker_pump(struct broker *b, uint64_t now_ms)
{
    assert(!b->in_txn);
    if (b->broken)
        return b->broken;
    end_zombies(b);
    if (list_empty(&b->pending_subs) && list_empty(&b->pending_queues))
        return 0;
    struct ferry_err err;
    ferry_err_clear(&err);
    int rc = store_read_begin(b->store, &err);
    if (rc == 0) {
        rc = pump_lists(b, now_ms, &err);
        store_read_end(b->store);
    }
    if (rc != 0)
        return rc;
    return !list_empty(&b->pending_subs) || !list_empty(&b->pending_queues);
}
