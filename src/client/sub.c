/* sub.c - subscriptions, consumers, the poll queue, ack and nack.
 *
 * A struct ferry_sub is allocated by ferry_subscribe/ferry_consume and
 * registered by the I/O thread when SUBSCRIBE_OK/CONSUME_OK arrives (so an
 * EVENT right behind the reply already finds it). It is freed once the user
 * has released it (unsubscribe, cancel, close) and no callback of it is
 * running: `dispatching` counts the callbacks the I/O thread has collected
 * for it, and `released` (read by the I/O thread without the mutex, hence
 * atomic) makes the I/O thread skip the ones not yet run.
 *
 * Poll-mode messages are copied into one heap block each and queued on the
 * sub; the client's total of buffered payload bytes is bounded by
 * max_queued_bytes, past which the I/O thread stops reading the socket.
 */
#include "client/client.h"

#include "util/alloc.h"
#include "util/clock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

void ferry_sub_options_init(ferry_sub_options_t *o)
{
    memset(o, 0, sizeof *o);
    o->start = FERRY_START_NEW;
}

void sub_drop_queue_locked(ferry_client_t *c, struct ferry_sub *s)
{
    while (!list_empty(&s->queue)) {
        struct qmsg *q = list_entry(s->queue.next, struct qmsg, link);
        list_remove(&q->link);
        c->queued_bytes -= q->m.len;
        ferry_free(q);
    }
    s->queued_bytes = 0;
}

static void sub_free(ferry_client_t *c, struct ferry_sub *s)
{
    list_remove(&s->link);
    sub_drop_queue_locked(c, s);
    pthread_cond_destroy(&s->cond);
    umap_free(&s->held);
    ferry_free(s->end_msg);
    ferry_free(s);
}

void sub_maybe_free_locked(ferry_client_t *c, struct ferry_sub *s)
{
    if (s->released && s->dispatching == 0 && s->waiters == 0)
        sub_free(c, s);
}

static struct ferry_sub *sub_new(ferry_client_t *c, int consumer, const char *name,
                                 const ferry_sub_options_t *o)
{
    struct ferry_sub *s = ferry_calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    if (client_cond_init(&s->cond) != 0) {
        ferry_free(s);
        return NULL;
    }
    s->c = c;
    s->consumer = consumer;
    s->durable = !consumer && o->start == FERRY_START_DURABLE;
    snprintf(s->name, sizeof s->name, "%s", name);
    if (s->durable && o->durable != NULL)
        snprintf(s->durable_name, sizeof s->durable_name, "%s", o->durable);
    s->window = o->window;
    s->on_message = o->on_message;
    s->on_end = o->on_end;
    s->arg = o->arg;
    list_init(&s->link);
    list_init(&s->queue);
    umap_init(&s->held);
    return s;
}

/* Send the encoded SUBSCRIBE/CONSUME in r and return the registered sub. */
static int sub_open(ferry_client_t *c, struct req *r, struct ferry_sub *s, ferry_sub_t **out)
{
    r->sub = s;
    int rc = client_call(c, r);
    client_req_cleanup(r);
    if (rc != 0) { /* never registered: the I/O thread did not see the reply */
        sub_free(c, s);
        return rc;
    }
    *out = s;
    return 0;
}

int ferry_subscribe(ferry_client_t *c, const char *channel, const ferry_sub_options_t *o,
                    ferry_sub_t **out)
{
    ferry_sub_options_t d;
    ferry_sub_options_init(&d);
    if (o == NULL)
        o = &d;
    int rc = client_check_name(c, "channel", channel);
    if (rc != 0)
        return rc;
    if (o->start < FERRY_START_NEW || o->start > FERRY_START_DURABLE)
        return client_fail(c, FERRY_EINVAL, "unknown subscription start %d", o->start);
    if (o->start == FERRY_START_DURABLE && (rc = client_check_name(c, "durable", o->durable)) != 0)
        return rc;
    if (out == NULL)
        return client_fail(c, FERRY_EINVAL, "no place for the subscription handle");
    struct proto_subscribe m;
    memset(&m, 0, sizeof m);
    snprintf(m.channel, sizeof m.channel, "%s", channel);
    m.start = (uint8_t)o->start;
    m.from_id = o->start == FERRY_START_FROM ? o->from_id : 0;
    if (o->start == FERRY_START_DURABLE)
        snprintf(m.durable, sizeof m.durable, "%s", o->durable);
    m.window = o->window;
    struct ferry_sub *s = sub_new(c, 0, channel, o);
    if (s == NULL)
        return client_fail(c, FERRY_ENOMEM, "out of memory");
    struct req r;
    client_req_init(&r, PROTO_SUBSCRIBE);
    if (proto_encode_subscribe(&r.frame, 0, &m) != 0) {
        client_req_cleanup(&r);
        sub_free(c, s);
        return client_fail(c, FERRY_ENOMEM, "out of memory");
    }
    return sub_open(c, &r, s, out);
}

int ferry_consume(ferry_client_t *c, const char *queue, const ferry_sub_options_t *o,
                  ferry_sub_t **out)
{
    ferry_sub_options_t d;
    ferry_sub_options_init(&d);
    if (o == NULL)
        o = &d;
    int rc = client_check_name(c, "queue", queue);
    if (rc != 0)
        return rc;
    if (out == NULL)
        return client_fail(c, FERRY_EINVAL, "no place for the consumer handle");
    struct proto_consume m;
    memset(&m, 0, sizeof m);
    snprintf(m.queue, sizeof m.queue, "%s", queue);
    m.prefetch = o->window;
    struct ferry_sub *s = sub_new(c, 1, queue, o);
    if (s == NULL)
        return client_fail(c, FERRY_ENOMEM, "out of memory");
    struct req r;
    client_req_init(&r, PROTO_CONSUME);
    if (proto_encode_consume(&r.frame, 0, &m) != 0) {
        client_req_cleanup(&r);
        sub_free(c, s);
        return client_fail(c, FERRY_ENOMEM, "out of memory");
    }
    return sub_open(c, &r, s, out);
}

/* ---- poll mode ---- */

static void take_locked(ferry_client_t *c, struct ferry_sub *s, ferry_message_t **msg)
{
    struct qmsg *q = list_entry(s->queue.next, struct qmsg, link);
    list_remove(&q->link);
    s->queued_bytes -= q->m.len;
    int was_full = c->queued_bytes >= c->max_queued_bytes;
    c->queued_bytes -= q->m.len;
    if (was_full && c->queued_bytes < c->max_queued_bytes)
        client_wake_locked(c); /* it stopped reading; resume */
    *msg = &q->m;
}

int ferry_sub_next(ferry_sub_t *s, ferry_message_t **msg, int timeout_ms)
{
    ferry_client_t *c = s->c;
    if (s->on_message != NULL)
        return client_fail(c, FERRY_EINVAL, "subscription to '%s' delivers to a callback", s->name);
    uint64_t deadline = timeout_ms > 0 ? client_deadline(c, timeout_ms) : 0;
    int rc = 0;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        if (!list_empty(&s->queue)) {
            take_locked(c, s, msg);
            break;
        }
        if (s->ended) {
            rc = client_fail(c, s->end_code, "%s to '%s' ended: %s",
                             s->consumer ? "consumer" : "subscription", s->name,
                             s->end_msg ? s->end_msg : ferry_strerror(s->end_code));
            break;
        }
        if (timeout_ms == 0) {
            rc = client_fail(c, FERRY_ETIMEDOUT, "no message waiting");
            break;
        }
        if (client_in_io_thread(c)) {
            rc = client_fail(c, FERRY_EDEADLK, "ferry_sub_next would wait inside a callback");
            break;
        }
        client_flush_locked(c); /* buffered acks go out before we sleep */
        s->waiters++;
        int w = timeout_ms < 0 ? pthread_cond_wait(&s->cond, &c->mu)
                               : client_wait(c, &s->cond, deadline);
        s->waiters--;
        if (w == ETIMEDOUT && list_empty(&s->queue) && !s->ended) {
            rc = client_fail(c, FERRY_ETIMEDOUT, "no message within %d ms", timeout_ms);
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

void ferry_message_free(ferry_message_t *msg)
{
    if (msg != NULL)
        ferry_free(list_entry(msg, struct qmsg, m));
}

/* ---- ack / nack ---- */

static int ack_send(ferry_sub_t *s, uint8_t op, uint64_t id, unsigned flags)
{
    ferry_client_t *c = s->c;
    if ((flags & ~FERRY_NOWAIT) != 0)
        return client_fail(c, FERRY_EINVAL, "unknown flags 0x%x", flags);
    uint16_t pflags = (flags & FERRY_NOWAIT) ? PROTO_F_NOREPLY : 0;
    struct req r;
    client_req_init(&r, op);
    pthread_mutex_lock(&c->mu);
    int rc = client_usable_locked(c);
    if (rc == 0 && s->ended) /* the server forgot it: nothing left to ack */
        rc = client_fail(c, s->end_code, "%s to '%s' ended: %s",
                         s->consumer ? "consumer" : "subscription", s->name,
                         s->end_msg ? s->end_msg : ferry_strerror(s->end_code));
    if (rc == 0 && op == PROTO_SUB_ACK && id > s->acked)
        s->acked = id; /* replayed after a resubscription if this one is lost */
    if (rc == 0 && s->resub) {
        /* The session that delivered it is gone. A durable ack is replayed
         * once the new session has delivered up to it; a queue delivery
         * comes again and is acknowledged then. */
        pthread_mutex_unlock(&c->mu);
        client_req_cleanup(&r);
        if (op == PROTO_SUB_ACK)
            return 0;
        return client_fail(c, FERRY_ECONN,
                           "the connection that delivered %llu was lost; it will be delivered "
                           "again",
                           (unsigned long long)id);
    }
    if (rc == 0) { /* encoded under the lock: s->id changes when it is re-established */
        if (op == PROTO_SUB_ACK) {
            struct proto_sub_ack m = {.sub_id = s->id, .event_id = id};
            rc = proto_encode_sub_ack(&r.frame, pflags, 0, &m);
        } else {
            struct proto_ack m = {.consumer_id = s->id, .item_id = id};
            rc = proto_encode_ack(&r.frame, op, pflags, 0, &m);
        }
        if (rc != 0)
            rc = client_fail(c, FERRY_ENOMEM, "out of memory");
    }
    if (rc != 0 || !(flags & FERRY_NOWAIT)) {
        pthread_mutex_unlock(&c->mu);
        if (rc == 0)
            rc = client_call(c, &r);
        client_req_cleanup(&r);
        if (rc == 0 && s->consumer) { /* settled: a later delivery of it is a new one */
            pthread_mutex_lock(&c->mu);
            umap_remove(&s->held, id);
            pthread_mutex_unlock(&c->mu);
        }
        return rc;
    }
    if (s->consumer)
        umap_remove(&s->held, id);
    if (client_send_untracked_locked(c, &r.frame) != 0)
        rc = client_fail(c, FERRY_ENOMEM, "out of memory buffering an ack");
    if (rc == 0)
        client_kick_locked(c, 0);
    pthread_mutex_unlock(&c->mu);
    client_req_cleanup(&r);
    return rc;
}

int ferry_ack(ferry_sub_t *s, uint64_t id, unsigned flags)
{
    if (s->consumer)
        return ack_send(s, PROTO_ACK, id, flags);
    if (!s->durable)
        return client_fail(s->c, FERRY_EINVAL,
                           "subscription to '%s' is not durable: only durable subscriptions "
                           "take acks",
                           s->name);
    return ack_send(s, PROTO_SUB_ACK, id, flags);
}

int ferry_nack(ferry_sub_t *s, uint64_t id, unsigned flags)
{
    if (!s->consumer)
        return client_fail(s->c, FERRY_EINVAL, "nack is for queue consumers; '%s' is a channel",
                           s->name);
    return ack_send(s, PROTO_NACK, id, flags);
}

/* ---- unsubscribe / cancel ---- */

static int sub_close(ferry_sub_t *s)
{
    ferry_client_t *c = s->c;
    int in_io = client_in_io_thread(c);
    pthread_mutex_lock(&c->mu);
    __atomic_store_n(&s->released, 1, __ATOMIC_RELEASE);
    int live =
        s->registered && !s->ended && (c->state == CLIENT_READY || c->state == CLIENT_REDIRECTING);
    s->resub = 0;
    if (s->registered) {
        umap_remove(s->consumer ? &c->consumers : &c->subs, s->id);
        s->registered = 0;
    }
    sub_drop_queue_locked(c, s);
    while (!in_io && s->dispatching > 0) { /* no callback runs after we return */
        s->waiters++;
        pthread_cond_wait(&s->cond, &c->mu);
        s->waiters--;
    }
    pthread_mutex_unlock(&c->mu);

    int rc = 0;
    if (live) {
        struct req r;
        client_req_init(&r, s->consumer ? PROTO_CANCEL : PROTO_UNSUBSCRIBE);
        rc = proto_encode_id(&r.frame, r.op, 0, 0, s->id);
        if (rc != 0) {
            rc = client_fail(c, FERRY_ENOMEM, "out of memory");
        } else if (in_io) { /* a callback cannot wait: send, and let the reply go */
            pthread_mutex_lock(&c->mu);
            if (client_send_untracked_locked(c, &r.frame) != 0)
                rc = client_fail(c, FERRY_ENOMEM, "out of memory");
            pthread_mutex_unlock(&c->mu);
        } else {
            rc = client_call(c, &r);
        }
        client_req_cleanup(&r);
    }
    pthread_mutex_lock(&c->mu);
    sub_maybe_free_locked(c, s);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int ferry_unsubscribe(ferry_sub_t *s)
{
    if (s->consumer)
        return client_fail(s->c, FERRY_EINVAL, "'%s' is a consumer: use ferry_cancel", s->name);
    return sub_close(s);
}

int ferry_cancel(ferry_sub_t *s)
{
    if (!s->consumer)
        return client_fail(s->c, FERRY_EINVAL, "'%s' is a subscription: use ferry_unsubscribe",
                           s->name);
    return sub_close(s);
}

uint64_t ferry_sub_id(const ferry_sub_t *s)
{
    return s->id;
}

uint64_t ferry_sub_next_event_id(const ferry_sub_t *s)
{
    return s->next_event_id;
}

ferry_client_t *ferry_sub_client(const ferry_sub_t *s)
{
    return s->c;
}
