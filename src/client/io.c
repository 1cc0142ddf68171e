/* io.c - the client's I/O thread.
 *
 * One loop per connection: write what is buffered, poll the socket and the
 * wake eventfd (with the earliest asynchronous deadline as the timeout),
 * read, and handle every whole frame in the input under the client mutex.
 * Handling a frame only records its effect: blocking callers are signalled
 * at once, while callbacks (asynchronous completions, messages, ends,
 * errors) are collected in c->disp and run after the batch with the mutex
 * released, in frame order. Payloads handed to message callbacks point into
 * c->in, which nothing else touches until the batch is done.
 *
 * When the connection fails the thread reconnects (failover.c), unless the
 * client was made with no_reconnect or is closing; then, or when
 * reconnecting gives up, it completes every pending request with the error,
 * ends every subscription and runs the resulting callbacks before it exits.
 *
 * An ERROR ENOTLEADER naming a leader moves the connection to that leader,
 * and every pending request is sent again there, in the original order.
 * Without reconnection this is done only on a connection with no
 * subscription or consumer.
 */
#include "client/client.h"

#include "util/alloc.h"
#include "util/clock.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HANDLE_REDIRECT IO_REDIRECT
#define RESEND_DELAY_MS 200 /* after an "outcome unknown" answer */

void io_fail_locked(ferry_client_t *c, int code, const char *fmt, ...)
{
    if (c->state != CLIENT_READY && c->state != CLIENT_REDIRECTING)
        return; /* the first failure is the one to report */
    char msg[CLIENT_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    failover_lost_locked(c, code, msg);
}

#define disp_push_locked io_disp_push_locked
struct disp *io_disp_push_locked(ferry_client_t *c, uint8_t kind)
{
    if (c->ndisp == c->disp_cap) {
        size_t cap = c->disp_cap ? c->disp_cap * 2 : 256;
        struct disp *d = ferry_realloc(c->disp, cap * sizeof *d);
        if (d == NULL) {
            io_fail_locked(c, FERRY_ENOMEM, "out of memory in the client's I/O thread");
            return NULL;
        }
        c->disp = d;
        c->disp_cap = cap;
    }
    struct disp *d = &c->disp[c->ndisp++];
    memset(d, 0, sizeof *d);
    d->kind = kind;
    return d;
}

static void report_error_locked(ferry_client_t *c, int status, const char *msg)
{
    if (c->on_error == NULL)
        return;
    struct disp *d = disp_push_locked(c, DISP_ERROR);
    if (d == NULL)
        return;
    d->status = status;
    d->msg = ferry_strdup(msg);
}

int sub_end_locked(ferry_client_t *c, struct ferry_sub *s, int code, const char *msg)
{
    if (s->ended)
        return 0;
    s->ended = 1;
    s->end_code = code;
    s->end_msg = ferry_strdup(msg);
    if (s->registered) {
        umap_remove(s->consumer ? &c->consumers : &c->subs, s->id);
        s->registered = 0;
    }
    if (s->on_end != NULL && !s->released) {
        struct disp *d = disp_push_locked(c, DISP_END);
        if (d != NULL) {
            d->sub = s;
            d->status = code;
            d->msg = ferry_strdup(msg);
            s->dispatching++;
        }
    }
    if (s->waiters)
        pthread_cond_broadcast(&s->cond);
    return 1;
}

void io_settle_locked(ferry_client_t *c, struct req *r, int status, const char *msg)
{
    if (r->resend_ns != 0) {
        r->resend_ns = 0;
        c->resends_due--;
    }
    ferry_free(r->msg);
    r->status = status;
    r->msg = msg ? ferry_strdup(msg) : NULL;
    if (r->kind == REQ_SYNC) {
        r->done = 1;
        pthread_cond_signal(r->cond);
        return;
    }
    c->async_inflight--;
    struct disp *d = disp_push_locked(c, DISP_ASYNC);
    if (d == NULL) { /* cannot report it; still keep the counts right */
        c->async_pending--;
        client_req_put_locked(c, r);
        return;
    }
    d->req = r;
}

/* Complete every pending request and end every subscription (locked). */
void io_fail_all_locked(ferry_client_t *c)
{
    int code = c->state == CLIENT_CLOSING ? FERRY_ECLOSED : c->conn_code;
    const char *msg = c->state == CLIENT_CLOSING ? "client closed" : c->conn_msg;
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &c->inflight)
    {
        struct req *r = list_entry(pos, struct req, link);
        client_forget_locked(c, r);
        if (r->kind == REQ_RESUB) { /* its sub ends below */
            client_req_cleanup(r);
            ferry_free(r);
            continue;
        }
        io_settle_locked(c, r, code, msg);
    }
    list_foreach(pos, &c->all_subs)
    {
        struct ferry_sub *s = list_entry(pos, struct ferry_sub, link);
        sub_end_locked(c, s, code, msg);
    }
    client_drop_conn_locked(c);
    pthread_cond_broadcast(&c->async_cond);
}

/* Run the collected callbacks with the mutex released, then settle (locked). */
#define run_dispatch_locked io_run_dispatch_locked
void io_run_dispatch_locked(ferry_client_t *c)
{
    size_t n = c->ndisp;
    if (n == 0)
        return;
    struct disp *v = c->disp;
    pthread_mutex_unlock(&c->mu);
    for (size_t i = 0; i < n; i++) {
        struct disp *d = &v[i];
        switch (d->kind) {
        case DISP_ASYNC:
            if (d->req->cb != NULL)
                d->req->cb(c, d->req->status, d->req->result_id, d->req->msg ? d->req->msg : "",
                           d->req->arg);
            break;
        case DISP_MESSAGE:
            if (!__atomic_load_n(&d->sub->released, __ATOMIC_ACQUIRE))
                d->sub->on_message(d->sub, &d->m, d->sub->arg);
            break;
        case DISP_END:
            if (!__atomic_load_n(&d->sub->released, __ATOMIC_ACQUIRE))
                d->sub->on_end(d->sub, d->status, d->msg ? d->msg : ferry_strerror(d->status),
                               d->sub->arg);
            break;
        case DISP_ERROR:
            c->on_error(c, d->status, d->msg ? d->msg : ferry_strerror(d->status), c->on_error_arg);
            break;
        case DISP_DISCONNECT:
            if (c->on_disconnect != NULL)
                c->on_disconnect(c, d->status, d->msg ? d->msg : "", c->conn_cb_arg);
            break;
        case DISP_RECONNECT:
            if (c->on_reconnect != NULL)
                c->on_reconnect(c, 0, d->msg ? d->msg : "", c->conn_cb_arg);
            break;
        }
    }
    pthread_mutex_lock(&c->mu);
    int settled = 0;
    for (size_t i = 0; i < n; i++) {
        struct disp *d = &v[i];
        if (d->kind == DISP_ASYNC) {
            c->async_pending--;
            client_req_put_locked(c, d->req);
            settled = 1;
        } else if (d->sub != NULL) {
            struct ferry_sub *s = d->sub;
            s->dispatching--;
            if (s->dispatching == 0 && s->waiters)
                pthread_cond_broadcast(&s->cond);
            sub_maybe_free_locked(c, s);
        }
        ferry_free(d->msg);
    }
    c->ndisp = 0;
    if (settled && c->async_waiters)
        pthread_cond_broadcast(&c->async_cond);
}

/* ---- frames ---- */

static uint8_t expected_reply(uint8_t op)
{
    switch (op) {
    case PROTO_PING:
        return PROTO_PONG;
    case PROTO_PUBLISH:
    case PROTO_PUSH:
        return PROTO_PUBLISH_OK;
    case PROTO_SUBSCRIBE:
        return PROTO_SUBSCRIBE_OK;
    case PROTO_CONSUME:
        return PROTO_CONSUME_OK;
    case PROTO_LIST:
        return PROTO_LIST_OK;
    case PROTO_INFO:
        return PROTO_INFO_OK;
    case PROTO_STATUS:
        return PROTO_STATUS_OK;
    default:
        return PROTO_OK;
    }
}

static int redirect_allowed_locked(const ferry_client_t *c, const char *leader)
{
    return leader[0] != '\0' && c->state == CLIENT_READY && c->redirects < c->max_redirects &&
           c->subs.count == 0 && c->consumers.count == 0;
}

static int register_sub_locked(ferry_client_t *c, struct ferry_sub *s, uint8_t op,
                               const uint8_t *body, size_t len)
{
    if (op == PROTO_SUBSCRIBE_OK) {
        struct proto_subscribe_ok ok;
        if (proto_decode_subscribe_ok(body, len, &ok) != 0)
            return FERRY_EPROTO;
        s->id = ok.sub_id;
        if (!s->resub) /* the first one is what the caller sees */
            s->next_event_id = ok.next_event_id;
    } else if (proto_decode_id(body, len, &s->id) != 0) {
        return FERRY_EPROTO;
    }
    struct umap *m = s->consumer ? &c->consumers : &c->subs;
    if (umap_get(m, s->id) != NULL)
        return FERRY_EPROTO;
    if (umap_put(m, s->id, s) != 0)
        return FERRY_ENOMEM;
    s->registered = 1;
    if (!list_linked(&s->link))
        list_insert_tail(&c->all_subs, &s->link);
    return 0;
}

static void complete_async_locked(ferry_client_t *c, struct req *r, int status, const char *msg,
                                  const uint8_t *body, size_t len)
{
    if (status == 0 && proto_decode_id(body, len, &r->result_id) != 0) {
        status = FERRY_EPROTO;
        msg = "malformed PUBLISH_OK";
    }
    r->status = status;
    r->msg = msg ? ferry_strdup(msg) : NULL;
    c->async_inflight--;
    struct disp *d = disp_push_locked(c, DISP_ASYNC);
    if (d == NULL) {
        c->async_pending--;
        client_req_put_locked(c, r);
        return;
    }
    d->req = r;
}

static void complete_sync_locked(ferry_client_t *c, struct req *r, uint8_t op, int status,
                                 const char *msg, const uint8_t *body, size_t len)
{
    char why[CLIENT_MSG_MAX];
    if (status == 0 && r->sub != NULL) { /* the reply body is not needed then */
        status = register_sub_locked(c, r->sub, op, body, len);
        if (status != 0) {
            snprintf(why, sizeof why, "malformed or duplicate %s from %s", proto_op_name(op),
                     c->info.address);
            msg = why;
        }
    } else if (status == 0 && buf_append(&r->reply, body, len) != 0) {
        status = FERRY_ENOMEM;
        msg = "out of memory copying a reply";
    }
    r->status = status;
    r->reply_op = op;
    r->msg = msg ? ferry_strdup(msg) : NULL;
    r->done = 1;
    pthread_cond_signal(r->cond);
}

/* The reply to a REQ_RESUB: the sub is live again, or ends with the error. */
static void complete_resub_locked(ferry_client_t *c, struct req *r, uint8_t op, int status,
                                  const char *msg, const uint8_t *body, size_t len)
{
    struct ferry_sub *s = r->sub;
    client_forget_locked(c, r);
    client_req_cleanup(r);
    ferry_free(r);
    if (s->ended || s->released)
        return;
    if (status == 0) {
        status = register_sub_locked(c, s, op, body, len);
        if (status == 0) {
            s->resub = 0;
            c->stats.resubscribed++;
            return;
        }
        msg = "malformed or duplicate reply to a resubscription";
    }
    char why[CLIENT_MSG_MAX];
    snprintf(why, sizeof why, "%s to '%.255s' could not be re-established on %.270s: %.900s",
             s->consumer ? "consumer" : "subscription", s->name, c->info.address,
             msg ? msg : ferry_strerror(status));
    sub_end_locked(c, s, status, why);
}

/* A publish or push the server answered "outcome unknown" (EUNAVAILABLE: the
 * node lost leadership or its storage failed before the entry committed):
 * with a producer sequence it can be sent again safely. */
static int retry_unknown_locked(ferry_client_t *c, struct req *r, int status, const char *text)
{
    if (!c->reconnect || r->seq == 0 || status != FERRY_EUNAVAILABLE || r->kind == REQ_RESUB)
        return 0;
    uint64_t now = clock_mono_ns();
    if (now + (uint64_t)RESEND_DELAY_MS * 1000000u >= r->deadline_ns)
        return 0; /* no time left: report it */
    ferry_free(r->msg);
    r->msg = ferry_strdup(text); /* reported if the deadline passes first */
    if (r->resend_ns == 0)
        c->resends_due++;
    r->resend_ns = now + (uint64_t)RESEND_DELAY_MS * 1000000u;
    return 1;
}

/* A reply for pending request r. */
static int complete_locked(ferry_client_t *c, struct req *r, uint8_t op, uint16_t flags,
                           const uint8_t *body, size_t len)
{
    int status = 0;
    char msg[CLIENT_MSG_MAX];
    const char *m = NULL;
    if (op == PROTO_ERROR) {
        struct proto_error e;
        if (proto_decode_error(body, len, &e) != 0) {
            io_fail_locked(c, FERRY_EPROTO, "malformed ERROR frame from %s", c->info.address);
            return -1;
        }
        status = e.code < 0 ? e.code : FERRY_EPROTO;
        if (status == FERRY_ENOTLEADER && c->reconnect && r->kind != REQ_RESUB &&
            c->redirects < c->max_redirects) {
            /* Move to the leader (or look for one); r is sent again there. */
            snprintf(c->redirect_to, sizeof c->redirect_to, "%s", e.leader);
            c->redirects++;
            r->refused = 1;
            io_fail_locked(c, FERRY_ENOTLEADER, "%s is not the leader any more%s%s",
                           c->info.address, e.leader[0] ? "; the leader is " : "", e.leader);
            return -1;
        }
        if (retry_unknown_locked(c, r, status, e.message[0] ? e.message : ferry_strerror(status)))
            return 0;
        if (status == FERRY_ENOTLEADER && redirect_allowed_locked(c, e.leader)) {
            snprintf(c->redirect_to, sizeof c->redirect_to, "%s", e.leader);
            c->redirects++;
            return HANDLE_REDIRECT;
        }
        const char *text = e.message[0] ? e.message : ferry_strerror(status);
        if (status == FERRY_ENOTLEADER && e.leader[0] && strstr(text, e.leader) == NULL)
            snprintf(msg, sizeof msg, "%s (leader: %s)", text, e.leader);
        else
            snprintf(msg, sizeof msg, "%s", text);
        m = msg;
    } else if (op != expected_reply(r->op)) {
        status = FERRY_EPROTO;
        snprintf(msg, sizeof msg, "server %s answered %s with %s", c->info.address,
                 proto_op_name(r->op), proto_op_name(op));
        m = msg;
    } else {
        c->redirects = 0;
        if (flags & PROTO_F_DUPLICATE)
            c->stats.duplicates++;
    }
    if (r->resend_ns != 0) {
        r->resend_ns = 0;
        c->resends_due--;
    }
    ferry_free(r->msg); /* an earlier "outcome unknown": this answer replaces it */
    r->msg = NULL;
    if (r->kind == REQ_RESUB) {
        complete_resub_locked(c, r, op, status, m, body, len);
        return 0;
    }
    client_forget_locked(c, r);
    if (r->kind == REQ_ASYNC)
        complete_async_locked(c, r, status, m, body, len);
    else
        complete_sync_locked(c, r, op, status, m, body, len);
    return 0;
}

/* The server confirmed a subscription or consumer nobody waits for any more
 * (its caller timed out): end it so the server does not keep delivering. */
static void cancel_orphan_locked(ferry_client_t *c, uint8_t op, const uint8_t *body, size_t len)
{
    uint64_t id;
    if (proto_decode_id(body, len, &id) != 0)
        return;
    struct buf f;
    buf_init(&f);
    uint8_t cancel = op == PROTO_SUBSCRIBE_OK ? PROTO_UNSUBSCRIBE : PROTO_CANCEL;
    if (proto_encode_id(&f, cancel, 0, 0, id) == 0)
        client_send_untracked_locked(c, &f);
    buf_free(&f);
}

static void deliver_locked(ferry_client_t *c, struct ferry_sub *s, const ferry_message_t *m)
{
    if (s->on_message != NULL) {
        struct disp *d = disp_push_locked(c, DISP_MESSAGE);
        if (d == NULL)
            return;
        d->sub = s;
        d->m = *m;
        s->dispatching++;
        return;
    }
    struct qmsg *q = ferry_malloc(sizeof *q + m->len);
    if (q == NULL) {
        io_fail_locked(c, FERRY_ENOMEM, "out of memory buffering a message of %zu bytes", m->len);
        return;
    }
    q->m = *m;
    memcpy(q->data, m->data, m->len);
    q->m.data = q->data;
    list_insert_tail(&s->queue, &q->link);
    s->queued_bytes += m->len;
    c->queued_bytes += m->len;
    if (s->waiters && s->signaled_batch != c->batch) {
        s->signaled_batch = c->batch;
        pthread_cond_broadcast(&s->cond);
    }
}

static int on_push_locked(ferry_client_t *c, uint8_t op, const uint8_t *body, size_t len)
{
    ferry_message_t m;
    memset(&m, 0, sizeof m);
    struct ferry_sub *s = NULL;
    if (op == PROTO_EVENT) {
        struct proto_event e;
        if (proto_decode_event(body, len, &e) != 0)
            goto malformed;
        s = umap_get(&c->subs, e.sub_id);
        m.id = e.event_id;
        m.timestamp_ms = e.timestamp_ms;
        m.transient = (e.eflags & PROTO_PUB_TRANSIENT) != 0;
        m.data = e.payload;
        m.len = e.payload_len;
    } else if (op == PROTO_DELIVERY) {
        struct proto_delivery e;
        if (proto_decode_delivery(body, len, &e) != 0)
            goto malformed;
        s = umap_get(&c->consumers, e.consumer_id);
        m.id = e.item_id;
        m.timestamp_ms = e.timestamp_ms;
        m.delivery_count = e.delivery_count;
        m.data = e.payload;
        m.len = e.payload_len;
    } else {
        struct proto_sub_end e;
        if (proto_decode_sub_end(body, len, &e) != 0)
            goto malformed;
        s = umap_get(&c->subs, e.id);
        if (s == NULL)
            s = umap_get(&c->consumers, e.id);
        if (s != NULL)
            sub_end_locked(c, s, e.code < 0 ? e.code : FERRY_ECLOSED,
                           e.message[0] ? e.message : "ended by the server");
        return 0;
    }
    if (s != NULL && op == PROTO_EVENT && !m.transient) {
        /* After a resubscription the server may send again what the caller
         * already has (a durable subscription resumes after its cursor). */
        if (m.id <= s->last_id) {
            c->stats.dropped_events++;
            if (s->durable && m.id == s->acked) { /* the ack the lost session may not have got */
                struct buf f;
                buf_init(&f);
                struct proto_sub_ack a = {.sub_id = s->id, .event_id = m.id};
                if (proto_encode_sub_ack(&f, PROTO_F_NOREPLY, 0, &a) == 0)
                    client_send_untracked_locked(c, &f);
                buf_free(&f);
            }
            return 0;
        }
        s->last_id = m.id;
    }
    if (s != NULL && op == PROTO_DELIVERY) {
        /* An item this consumer was handed before and has not settled comes
         * back after a failover with the count the cluster had committed,
         * which a crashed leader's deliveries never reached: count them here. */
        uintptr_t before = (uintptr_t)umap_get(&s->held, m.id);
        if (before != 0 && m.delivery_count <= before)
            m.delivery_count = (uint32_t)before + 1;
        if (before != 0 || s->held.count < CLIENT_HELD_MAX)
            umap_put(&s->held, m.id, (void *)(uintptr_t)m.delivery_count);
    }
    if (s != NULL) { /* else: it was just unsubscribed */
        m.sub = s;
        deliver_locked(c, s, &m);
    }
    return 0;
malformed:
    io_fail_locked(c, FERRY_EPROTO, "malformed %s frame from %s", proto_op_name(op),
                   c->info.address);
    return -1;
}

static int handle_frame_locked(ferry_client_t *c, const struct proto_header *h, const uint8_t *body,
                               size_t len)
{
    if (h->op == PROTO_EVENT || h->op == PROTO_DELIVERY || h->op == PROTO_SUB_END)
        return on_push_locked(c, h->op, body, len);
    struct req *r = h->request_id ? umap_get(&c->reqs, h->request_id) : NULL;
    if (r != NULL)
        return complete_locked(c, r, h->op, h->flags, body, len);
    if (h->op == PROTO_ERROR) {
        struct proto_error e;
        if (proto_decode_error(body, len, &e) != 0) {
            io_fail_locked(c, FERRY_EPROTO, "malformed ERROR frame from %s", c->info.address);
            return -1;
        }
        int code = e.code < 0 ? e.code : FERRY_EPROTO;
        const char *text = e.message[0] ? e.message : ferry_strerror(code);
        char msg[CLIENT_MSG_MAX];
        if (h->request_id == 0) {
            snprintf(c->notice, sizeof c->notice, "%s", text);
            if (code == FERRY_ENOTLEADER && e.leader[0] != '\0' && c->reconnect)
                snprintf(c->redirect_to, sizeof c->redirect_to, "%s", e.leader); /* dial it first */
            snprintf(msg, sizeof msg, "server %s: %s", c->info.address, text);
        } else {
            snprintf(msg, sizeof msg, "%s (request %u)", text, h->request_id);
        }
        report_error_locked(c, code, msg);
        return 0;
    }
    if (h->request_id == 0 || h->op < PROTO_OK) {
        io_fail_locked(c, FERRY_EPROTO, "unexpected %s frame (op 0x%02x) from %s",
                       proto_op_name(h->op), h->op, c->info.address);
        return -1;
    }
    if (h->op == PROTO_SUBSCRIBE_OK || h->op == PROTO_CONSUME_OK)
        cancel_orphan_locked(c, h->op, body, len);
    return 0; /* a late reply to a request that timed out, or to an untracked one */
}

static const char *frame_error_text(int rc)
{
    switch (rc) {
    case FERRY_ETOOBIG:
        return "a frame over the client's max_frame limit";
    case FERRY_EVERSION:
        return "a frame of an unknown protocol version";
    default:
        return "a frame with an invalid length";
    }
}

/* Handle every whole frame in c->in (locked); returns HANDLE_REDIRECT when
 * the connection must move to c->redirect_to. */
static int process_input_locked(ferry_client_t *c)
{
    size_t off = 0;
    int result = 0;
    c->batch++;
    uint32_t inflight_before = c->async_inflight;
    while (c->state == CLIENT_READY) {
        struct proto_header h;
        size_t flen = 0;
        int rc = proto_frame_check(c->in.data + off, c->in.len - off, c->max_frame, &h, &flen);
        if (rc == FERRY_EAGAIN)
            break;
        if (rc != 0) {
            io_fail_locked(c, FERRY_EPROTO, "server %s sent %s (length %u, version %u)",
                           c->info.address, frame_error_text(rc), h.length, h.version);
            break;
        }
        rc = handle_frame_locked(c, &h, c->in.data + off + PROTO_HEADER_SIZE,
                                 flen - PROTO_HEADER_SIZE);
        if (rc < 0)
            break;
        off += flen;
        if (rc == HANDLE_REDIRECT) {
            result = HANDLE_REDIRECT;
            break;
        }
    }
    if (c->async_inflight < inflight_before && c->async_waiters)
        pthread_cond_broadcast(&c->async_cond);
    run_dispatch_locked(c);
    buf_consume(&c->in, off);
    return result;
}

/* Connect to c->redirect_to and re-send every pending request (locked). */
static void redirect_locked(ferry_client_t *c)
{
    char target[CONN_ADDR_MAX];
    char from[CONN_ADDR_MAX];
    snprintf(target, sizeof target, "%s", c->redirect_to);
    snprintf(from, sizeof from, "%s", c->info.address);
    c->state = CLIENT_REDIRECTING;
    client_drop_conn_locked(c);
    c->in.len = 0;
    struct conn_params p = {.client_name = c->client_name,
                            .timeout_ms = c->connect_timeout_ms,
                            .max_frame = c->max_frame,
                            .max_redirects = c->max_redirects,
                            .any_node = c->any_node,
                            .producer_id = c->producer_id,
                            .tls = c->tls_ctx};
    pthread_mutex_unlock(&c->mu);
    struct conn info;
    struct buf extra;
    buf_init(&extra);
    char msg[CONN_MSG_MAX];
    int rc = conn_open(&p, target, &info, &extra, msg, sizeof msg);
    pthread_mutex_lock(&c->mu);
    if (c->state != CLIENT_REDIRECTING) { /* closing */
        if (rc == 0)
            conn_dispose(&info);
        buf_free(&extra);
        return;
    }
    if (rc != 0) {
        io_fail_locked(c, rc, "%s is not the leader; following it to %s: %s", from, target, msg);
        buf_free(&extra);
        return;
    }
    c->fd = info.fd;
    c->info = info;
    c->state = CLIENT_READY;
    c->out.len = 0;
    c->out_off = 0;
    c->out_total = 0;
    c->written_total = 0;
    rc = buf_append(&c->in, extra.data, extra.len);
    buf_free(&extra);
    struct list *pos;
    list_foreach(pos, &c->inflight)
    {
        struct req *r = list_entry(pos, struct req, link);
        if (rc == 0)
            rc = client_append_locked(c, r->frame.data, r->frame.len);
        r->stream_end = c->out_total;
    }
    if (rc != 0) {
        io_fail_locked(c, FERRY_ENOMEM, "out of memory re-sending requests to %s", target);
        return;
    }
    client_flush_locked(c);
}

/* ---- the loop ---- */

static void read_ended_locked(ferry_client_t *c, ssize_t n);

/* TLS: read ciphertext, decrypt it into c->in under the lock (the session
 * is shared with the writers), send what the session wants sent. Returns
 * bytes read (> 0), 0 at EOF, or -errno; -EPROTO after a TLS failure,
 * already reported. */
static ssize_t tls_read_locked(ferry_client_t *c)
{
    if (buf_reserve(&c->tls_in, CLIENT_READ_CHUNK) != 0)
        return -ENOMEM;
    int fd = c->fd;
    pthread_mutex_unlock(&c->mu);
    ssize_t n = recv(fd, c->tls_in.data, c->tls_in.cap, 0);
    int err = errno;
    pthread_mutex_lock(&c->mu);
    if (n <= 0)
        return n < 0 ? -err : 0;
    if (c->state != CLIENT_READY)
        return -EAGAIN;
    int rc = tls_conn_input(c->info.tls, c->tls_in.data, (size_t)n, &c->in);
    if (rc == FERRY_ECLOSED)
        return 0;
    if (rc != 0) {
        io_fail_locked(c, rc == FERRY_ENOMEM ? FERRY_ENOMEM : FERRY_EPROTO, "TLS with %s: %s",
                       c->info.address, tls_conn_error(c->info.tls));
        return -EPROTO;
    }
    if (tls_conn_output_pending(c->info.tls) > 0)
        client_flush_locked(c);
    return n;
}

static void read_input_locked(ferry_client_t *c)
{
    if (c->info.tls != NULL) {
        ssize_t n = tls_read_locked(c);
        if (c->state != CLIENT_READY || n == -EPROTO)
            return;
        if (n > 0) {
            c->rx_ns = clock_mono_ns();
            c->ping_ns = 0;
            if (process_input_locked(c) == HANDLE_REDIRECT)
                redirect_locked(c);
            return;
        }
        errno = n < 0 ? (int)-n : 0;
        read_ended_locked(c, n);
        return;
    }
    if (c->in.cap - c->in.len < CLIENT_READ_CHUNK / 4 &&
        buf_reserve(&c->in, CLIENT_READ_CHUNK) != 0) {
        io_fail_locked(c, FERRY_ENOMEM, "out of memory reading from %s", c->info.address);
        return;
    }
    int fd = c->fd;
    pthread_mutex_unlock(&c->mu);
    ssize_t n = recv(fd, c->in.data + c->in.len, c->in.cap - c->in.len, 0);
    int err = errno;
    pthread_mutex_lock(&c->mu);
    if (c->state != CLIENT_READY)
        return;
    if (n > 0) {
        c->in.len += (size_t)n;
        c->rx_ns = clock_mono_ns();
        c->ping_ns = 0;
        if (process_input_locked(c) == HANDLE_REDIRECT)
            redirect_locked(c);
        return;
    }
    errno = err;
    read_ended_locked(c, n);
}

/* A read returned n <= 0 (errno set): nothing yet, or the connection is gone. */
static void read_ended_locked(ferry_client_t *c, ssize_t n)
{
    int err = errno;
    if (n < 0 && (err == EINTR || err == EAGAIN || err == EWOULDBLOCK))
        return;
    if (n < 0) {
        io_fail_locked(c, FERRY_ECONN, "connection to %s failed: %s", c->info.address,
                       strerror(err));
        return;
    }
    if (c->in.len > 0)
        io_fail_locked(c, FERRY_ECONN,
                       "connection to %s closed by the server in the middle of a frame "
                       "(%zu bytes received)",
                       c->info.address, c->in.len);
    else
        io_fail_locked(c, FERRY_ECONN, "connection to %s closed by the server%s%s", c->info.address,
                       c->notice[0] ? ": " : "", c->notice);
}

/* Send again the requests whose resend time came (READY only); returns the
 * ms until the next one, or -1. */
static int resend_due_locked(ferry_client_t *c, uint64_t now)
{
    if (c->resends_due == 0)
        return -1;
    uint64_t next = UINT64_MAX;
    struct list *pos;
    list_foreach(pos, &c->inflight)
    {
        struct req *r = list_entry(pos, struct req, link);
        if (r->resend_ns == 0)
            continue;
        if (r->resend_ns > now) {
            if (r->resend_ns < next)
                next = r->resend_ns;
            continue;
        }
        if (c->state != CLIENT_READY)
            continue; /* a reconnect sends every pending request anyway */
        r->resend_ns = 0;
        c->resends_due--;
        if (client_append_locked(c, r->frame.data, r->frame.len) != 0) {
            io_fail_locked(c, FERRY_ENOMEM, "out of memory re-sending a request");
            return -1;
        }
        r->stream_end = c->out_total;
        c->stats.resent++;
    }
    if (next == UINT64_MAX)
        return -1;
    return (int)((next - now + 999999) / 1000000);
}

/* A node that stopped answering (paused, cut off, a half-open connection)
 * is noticed by its silence: after keepalive_ms without a frame a PING goes
 * out, and after three times that the connection counts as lost. Returns the
 * ms until the next check, or -1. */
static int keepalive_locked(ferry_client_t *c, uint64_t now)
{
    if (c->keepalive_ms == 0 || c->state != CLIENT_READY)
        return -1;
    if (c->queued_bytes >= c->max_queued_bytes) { /* not reading: silence proves nothing */
        c->rx_ns = now;
        c->ping_ns = 0;
        return -1;
    }
    uint64_t every = (uint64_t)c->keepalive_ms * 1000000u;
    uint64_t silent = now - c->rx_ns;
    uint8_t byte;
    if (silent >= every && recv(c->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) > 0) {
        c->rx_ns = now; /* bytes wait unread (a long callback ran): the node is alive */
        c->ping_ns = 0;
        silent = 0;
    }
    if (silent >= 3 * every) {
        io_fail_locked(c, FERRY_ETIMEDOUT, "no frame from %s for %llu ms (keepalive)",
                       c->info.address, (unsigned long long)(silent / 1000000u));
        return -1;
    }
    if (silent >= every && c->ping_ns == 0) {
        struct buf f;
        buf_init(&f);
        if (proto_encode_empty(&f, PROTO_PING, 0, 0) == 0 &&
            client_send_untracked_locked(c, &f) == 0)
            c->ping_ns = now;
        buf_free(&f);
    }
    uint64_t next = c->ping_ns == 0 ? c->rx_ns + every : c->rx_ns + 3 * every;
    return next > now ? (int)((next - now + 999999) / 1000000) : 1;
}

static int earlier(int a, int b)
{
    return a < 0 ? b : b < 0 ? a : a < b ? a : b;
}

/* Fail asynchronous requests whose deadline passed; returns the poll timeout. */
int io_expire_locked(ferry_client_t *c)
{
    uint64_t now = clock_mono_ns();
    uint32_t before = c->async_inflight;
    int timeout = earlier(resend_due_locked(c, now), keepalive_locked(c, now));
    while (!list_empty(&c->async_q)) {
        struct req *r = list_entry(c->async_q.next, struct req, alink);
        if (r->deadline_ns > now) {
            uint64_t ms = (r->deadline_ns - now + 999999) / 1000000;
            if (ms > 60000)
                ms = 60000;
            if (timeout < 0 || (int)ms < timeout)
                timeout = (int)ms;
            break;
        }
        char msg[CLIENT_MSG_MAX];
        int code = FERRY_ETIMEDOUT;
        if (r->msg != NULL) { /* answered "outcome unknown" and still so at the deadline */
            code = FERRY_EUNAVAILABLE;
            snprintf(msg, sizeof msg, "%s (retried for %u ms)", r->msg, c->request_timeout_ms);
        } else {
            snprintf(msg, sizeof msg, "no reply to %s from %s within %u ms%s",
                     proto_op_name(r->op), c->info.address, c->request_timeout_ms,
                     c->state == CLIENT_RECONNECTING ? " (reconnecting)" : "");
        }
        ferry_free(r->msg);
        r->msg = NULL;
        if (r->resend_ns != 0) {
            r->resend_ns = 0;
            c->resends_due--;
        }
        client_forget_locked(c, r);
        complete_async_locked(c, r, code, msg, NULL, 0);
    }
    if (c->async_inflight < before && c->async_waiters)
        pthread_cond_broadcast(&c->async_cond);
    return timeout;
}

void *io_main(void *arg)
{
    ferry_client_t *c = arg;
    pthread_mutex_lock(&c->mu);
    while (c->state == CLIENT_READY || c->state == CLIENT_RECONNECTING) {
        if (c->state == CLIENT_RECONNECTING) {
            failover_reconnect_locked(c);
            continue;
        }
        int timeout = io_expire_locked(c);
        client_flush_locked(c);
        int pending_out = client_out_pending(c);
        if (!pending_out && c->flush_waiters)
            pthread_cond_broadcast(&c->async_cond);
        if (c->ndisp > 0) {
            run_dispatch_locked(c);
            continue;
        }
        if (c->state != CLIENT_READY)
            continue;
        struct pollfd pfd[2] = {
            {.fd = c->fd,
             .events = (short)((c->queued_bytes < c->max_queued_bytes ? POLLIN : 0) |
                               (pending_out ? POLLOUT : 0))},
            {.fd = c->wake_fd, .events = POLLIN},
        };
        c->io_polling = 1;
        pthread_mutex_unlock(&c->mu);
        int n = poll(pfd, 2, timeout);
        int err = errno;
        pthread_mutex_lock(&c->mu);
        c->io_polling = 0;
        if (n < 0 && err != EINTR) {
            io_fail_locked(c, FERRY_EINTERNAL, "poll failed: %s", strerror(err));
            continue;
        }
        if (n <= 0)
            continue;
        if (pfd[1].revents & POLLIN) {
            uint64_t v;
            ssize_t r = read(c->wake_fd, &v, sizeof v);
            (void)r;
            c->wake_pending = 0;
        }
        if (c->state == CLIENT_READY && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL)))
            read_input_locked(c);
    }
    io_fail_all_locked(c);
    run_dispatch_locked(c);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}
