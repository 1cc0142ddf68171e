/* failover.c - reconnecting after a lost connection.
 *
 * When the connection fails (the node died, closed it, stepped down, or
 * sent something that is not the protocol) and the client reconnects (the
 * default), the I/O thread, in state CLIENT_RECONNECTING:
 *
 *   1. settles what cannot be sent again: a request whose outcome depends
 *      on the lost connection (an ack of a delivery the old session held, a
 *      CREATE that may or may not have been applied) completes with
 *      FERRY_ECONN and a message saying its outcome is unknown; an
 *      UNSUBSCRIBE or CANCEL completes with success (the subscription ended
 *      with the session). Persistent publishes and pushes carry this
 *      client's producer id and sequence, so sending them again can never
 *      store them twice: the server answers a duplicate with the original
 *      outcome (docs/protocol.md). Reads (PING, STATUS, INFO, LIST) and
 *      SUBSCRIBE/CONSUME are sent again as they are.
 *   2. dials: the leader an ENOTLEADER named first, then every server of
 *      the list round-robin (those given in the options plus the client
 *      addresses nodes listed in HELLO_OK), with a pause between rounds
 *      that doubles from backoff_initial_ms to backoff_max_ms, with jitter,
 *      until a node accepts or reconnect_timeout_ms has passed. A client
 *      whose connections keep dying at once also waits before redialling.
 *   3. on success re-sends every pending request in its original order,
 *      then re-establishes every subscription (from the event after the
 *      last one the caller received; a durable one from its cursor, with
 *      events the caller already has dropped) and consumer (the server
 *      delivers again what the lost session held, with its delivery count
 *      raised). Requests made meanwhile wait in the output like any other.
 *   4. on giving up the client is CLIENT_BROKEN: every pending request and
 *      subscription fails with the reason, as without reconnection.
 *
 * on_disconnect and on_reconnect run on the I/O thread between these steps.
 */
#include "client/client.h"

#include "util/alloc.h"
#include "util/clock.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define SHORT_LIVED_NS (1000u * 1000000u) /* a connection lost sooner than this backs off */
#define MAX_LEARNED CONN_ENDPOINTS_MAX

uint64_t failover_random(ferry_client_t *c)
{
    /* xorshift64*: jitter and the first server only, no secrecy needed */
    uint64_t x = c->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    c->rng = x;
    return x * 0x2545F4914F6CDD1DULL;
}

void failover_lost_locked(ferry_client_t *c, int code, const char *msg)
{
    int live = c->state == CLIENT_READY || c->state == CLIENT_REDIRECTING;
    c->conn_code = code;
    snprintf(c->conn_msg, sizeof c->conn_msg, "%s", msg);
    c->state = live && c->reconnect ? CLIENT_RECONNECTING : CLIENT_BROKEN;
    if (c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR);
    if (!client_in_io_thread(c))
        client_wake_locked(c);
}

void failover_learn_locked(ferry_client_t *c, const struct conn *info)
{
    for (uint32_t i = 0; i < info->n_endpoints; i++) {
        const char *a = info->endpoints[i];
        int known = 0;
        for (size_t k = 0; k < c->nservers && !known; k++)
            known = strcmp(c->servers[k], a) == 0;
        if (known || c->nservers >= c->nservers_given + MAX_LEARNED)
            continue;
        char host[CONN_ADDR_MAX], why[CONN_MSG_MAX];
        uint16_t port;
        if (conn_parse_address(a, host, sizeof host, &port, NULL, why, sizeof why) != 0)
            continue;
        char **v = ferry_realloc(c->servers, (c->nservers + 1) * sizeof *v);
        if (v == NULL)
            return;
        c->servers = v;
        if ((v[c->nservers] = ferry_strdup(a)) == NULL)
            return;
        c->nservers++;
    }
}

/* Sleep up to ms on the wake eventfd; returns 1 if the client is closing. */
static int pause_ms(ferry_client_t *c, uint64_t ms)
{
    struct pollfd p = {.fd = c->wake_fd, .events = POLLIN};
    int n = poll(&p, 1, (int)(ms > 60000 ? 60000 : ms));
    pthread_mutex_lock(&c->mu);
    if (n > 0) {
        uint64_t v;
        ssize_t r = read(c->wake_fd, &v, sizeof v);
        (void)r;
        c->wake_pending = 0;
    }
    int closing = c->state == CLIENT_CLOSING;
    pthread_mutex_unlock(&c->mu);
    return closing;
}

/* backoff/2 plus a random part up to backoff/2 */
static uint64_t jittered(ferry_client_t *c, uint64_t backoff_ms)
{
    pthread_mutex_lock(&c->mu);
    uint64_t r = failover_random(c);
    pthread_mutex_unlock(&c->mu);
    return backoff_ms / 2 + r % (backoff_ms / 2 + 1);
}

int failover_dial(ferry_client_t *c, const char *preferred, uint64_t deadline_ns, int single_round,
                  struct conn *info, struct buf *extra, size_t *used, char *msg, size_t cap)
{
    pthread_mutex_lock(&c->mu);
    size_t n = c->nservers;
    char **list = ferry_calloc(n ? n : 1, sizeof *list);
    for (size_t i = 0; list != NULL && i < n; i++)
        if ((list[i] = ferry_strdup(c->servers[i])) == NULL) {
            conn_free_servers(list, i);
            list = NULL;
        }
    size_t start = c->ever_connected ? (c->server_idx + 1) % n : failover_random(c) % n;
    struct conn_params p = {.client_name = c->client_name,
                            .timeout_ms = c->connect_timeout_ms,
                            .max_frame = c->max_frame,
                            .max_redirects = c->max_redirects,
                            .any_node = c->any_node,
                            .producer_id = c->producer_id,
                            .tls = c->tls_ctx};
    uint64_t backoff = c->backoff_initial_ms;
    pthread_mutex_unlock(&c->mu);
    if (list == NULL) {
        snprintf(msg, cap, "out of memory");
        return FERRY_ENOMEM;
    }
    char pref[CONN_ADDR_MAX] = "";
    if (preferred != NULL)
        snprintf(pref, sizeof pref, "%s", preferred);
    uint64_t began = clock_mono_ns();
    int rc = FERRY_ECONN;
    char all[CLIENT_MSG_MAX] = ""; /* why each address failed, in the last round that tried */
    char cur[CLIENT_MSG_MAX];
    for (unsigned round = 0;; round++) {
        size_t at = 0;
        size_t misfits = 0; /* answers that say this client cannot work here */
        cur[0] = '\0';
        size_t tries = n + (round == 0 && pref[0] ? 1 : 0);
        for (size_t k = 0; k < tries; k++) {
            int is_pref = round == 0 && pref[0] && k == 0;
            size_t i = is_pref ? 0 : (start + k - (pref[0] && round == 0 ? 1 : 0)) % n;
            const char *addr = is_pref ? pref : list[i];
            uint64_t now = clock_mono_ns();
            if (round > 0 || k > 0) {
                if (now >= deadline_ns)
                    break;
            }
            uint64_t left_ms = deadline_ns > now ? (deadline_ns - now) / 1000000u : 0;
            struct conn_params q = p;
            if (!single_round && left_ms < q.timeout_ms)
                q.timeout_ms = left_ms > 0 ? (uint32_t)left_ms : 1;
            pthread_mutex_lock(&c->mu);
            int closing = c->state == CLIENT_CLOSING;
            c->stats.attempts++;
            pthread_mutex_unlock(&c->mu);
            if (closing) {
                snprintf(msg, cap, "client closed");
                conn_free_servers(list, n);
                return FERRY_ECLOSED;
            }
            char m[CONN_MSG_MAX];
            buf_reset(extra);
            rc = conn_open(&q, addr, info, extra, m, sizeof m);
            if (rc == 0) {
                size_t idx = is_pref ? SIZE_MAX : i;
                if (is_pref) /* the named leader: its place in the list, if any */
                    for (size_t j = 0; j < n; j++)
                        if (strcmp(list[j], pref) == 0)
                            idx = j;
                *used = idx;
                conn_free_servers(list, n);
                return 0;
            }
            if (at < sizeof cur)
                at += (size_t)snprintf(cur + at, sizeof cur - at, "%s%s", at ? "; " : "", m);
            misfits += rc == FERRY_ENOTSUP || rc == FERRY_EVERSION;
        }
        if (at > 0)
            memcpy(all, cur, sizeof all);
        uint64_t now = clock_mono_ns();
        /* Every server refused this client for what it is (plaintext where
         * TLS is required, a protocol version it does not speak): waiting
         * will not change that. */
        if (single_round || now >= deadline_ns || (misfits > 0 && misfits == tries))
            break;
        uint64_t wait = jittered(c, backoff);
        uint64_t left_ms = (deadline_ns - now) / 1000000u;
        if (wait > left_ms)
            wait = left_ms;
        if (pause_ms(c, wait)) {
            snprintf(msg, cap, "client closed");
            conn_free_servers(list, n);
            return FERRY_ECLOSED;
        }
        backoff = backoff * 2 > c->backoff_max_ms ? c->backoff_max_ms : backoff * 2;
    }
    conn_free_servers(list, n);
    uint64_t spent = (clock_mono_ns() - began) / 1000000u;
    char when[64] = "";
    if (!single_round)
        snprintf(when, sizeof when, " (tried for %llu ms)", (unsigned long long)spent);
    if (n == 1)
        snprintf(msg, cap, "cannot connect%s: %s", when, all);
    else
        snprintf(msg, cap, "cannot connect to any of %zu servers%s: %s", n, when, all);
    return rc;
}

/* ---- the I/O thread's reconnect ---- */

static int resendable(const struct req *r)
{
    switch (r->op) {
    case PROTO_PUBLISH:
    case PROTO_PUSH:
        return r->seq != 0; /* a transient publish may have been delivered already */
    case PROTO_PING:
    case PROTO_STATUS:
    case PROTO_INFO:
    case PROTO_LIST:
    case PROTO_SUBSCRIBE:
    case PROTO_CONSUME:
        return 1;
    default:
        return 0;
    }
}

static void settle_locked(ferry_client_t *c, const char *from)
{
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &c->inflight)
    {
        struct req *r = list_entry(pos, struct req, link);
        if (r->kind == REQ_RESUB) { /* its sub is still marked resub: a new one follows */
            client_forget_locked(c, r);
            client_req_cleanup(r);
            ferry_free(r);
            continue;
        }
        if (resendable(r) || r->refused) { /* a refused request was not applied */
            r->refused = 0;
            continue;
        }
        int ended = r->op == PROTO_UNSUBSCRIBE || r->op == PROTO_CANCEL;
        char msg[CLIENT_MSG_MAX];
        snprintf(msg, sizeof msg,
                 "the connection to %s was lost before the reply to %s; its outcome is unknown",
                 from, proto_op_name(r->op));
        client_forget_locked(c, r);
        io_settle_locked(c, r, ended ? 0 : FERRY_ECONN, ended ? NULL : msg);
    }
    list_foreach(pos, &c->all_subs)
    {
        struct ferry_sub *s = list_entry(pos, struct ferry_sub, link);
        if (s->ended)
            continue;
        if (s->registered) {
            umap_remove(s->consumer ? &c->consumers : &c->subs, s->id);
            s->registered = 0;
        }
        if (!s->released)
            s->resub = 1;
        /* Deliveries not yet taken come again from the new session (with a
         * raised count, from `held`); handing them out twice would do harm. */
        if (s->consumer)
            sub_drop_queue_locked(c, s);
    }
    pthread_cond_broadcast(&c->async_cond);
}

/* Queue a SUBSCRIBE/CONSUME that re-establishes s (locked). */
static int resubscribe_locked(ferry_client_t *c, struct ferry_sub *s)
{
    struct req *r = ferry_malloc(sizeof *r);
    if (r == NULL)
        return FERRY_ENOMEM;
    int rc;
    if (s->consumer) {
        client_req_init(r, PROTO_CONSUME);
        struct proto_consume m;
        memset(&m, 0, sizeof m);
        snprintf(m.queue, sizeof m.queue, "%s", s->name);
        m.prefetch = s->window;
        rc = proto_encode_consume(&r->frame, 0, &m);
    } else {
        client_req_init(r, PROTO_SUBSCRIBE);
        struct proto_subscribe m;
        memset(&m, 0, sizeof m);
        snprintf(m.channel, sizeof m.channel, "%s", s->name);
        m.window = s->window;
        if (s->durable) {
            m.start = PROTO_START_DURABLE;
            snprintf(m.durable, sizeof m.durable, "%s", s->durable_name);
        } else {
            m.start = PROTO_START_FROM;
            m.from_id = s->last_id ? s->last_id + 1 : s->next_event_id;
        }
        rc = proto_encode_subscribe(&r->frame, 0, &m);
    }
    r->kind = REQ_RESUB;
    r->sub = s;
    if (rc == 0)
        rc = client_submit_locked(c, r);
    if (rc != 0) {
        client_req_cleanup(r);
        ferry_free(r);
        return rc;
    }
    return 0;
}

/* Send every pending request again, then resubscribe (locked). */
static int resume_locked(ferry_client_t *c)
{
    struct list *pos;
    list_foreach(pos, &c->inflight)
    {
        struct req *r = list_entry(pos, struct req, link);
        if (r->resend_ns != 0) {
            r->resend_ns = 0;
            c->resends_due--;
        }
        if (client_append_locked(c, r->frame.data, r->frame.len) != 0)
            return FERRY_ENOMEM;
        r->stream_end = c->out_total;
        c->stats.resent++;
    }
    list_foreach(pos, &c->all_subs)
    {
        struct ferry_sub *s = list_entry(pos, struct ferry_sub, link);
        if (s->resub && !s->ended && !s->released && resubscribe_locked(c, s) != 0)
            return FERRY_ENOMEM;
    }
    return 0;
}

static void queue_conn_cb_locked(ferry_client_t *c, uint8_t kind, int status, const char *msg)
{
    if ((kind == DISP_DISCONNECT ? c->on_disconnect : c->on_reconnect) == NULL)
        return;
    struct disp *d = io_disp_push_locked(c, kind);
    if (d == NULL)
        return;
    d->status = status;
    d->msg = ferry_strdup(msg);
}

void failover_reconnect_locked(ferry_client_t *c)
{
    char from[CONN_ADDR_MAX];
    snprintf(from, sizeof from, "%s", c->info.address);
    c->stats.disconnects++;
    client_drop_conn_locked(c);
    c->in.len = 0;
    c->out.len = 0;
    c->out_off = 0;
    c->out_total = 0;
    c->written_total = 0;
    queue_conn_cb_locked(c, DISP_DISCONNECT, c->conn_code, c->conn_msg);
    settle_locked(c, from);
    io_run_dispatch_locked(c);
    if (c->state != CLIENT_RECONNECTING)
        return;
    char lost[CLIENT_MSG_MAX];
    snprintf(lost, sizeof lost, "%s", c->conn_msg);
    char preferred[CONN_ADDR_MAX];
    snprintf(preferred, sizeof preferred, "%s", c->redirect_to);
    c->redirect_to[0] = '\0';

    /* A node that accepts and then drops every connection must not make us
     * spin: a connection that lived less than SHORT_LIVED_NS backs off. */
    uint64_t now = clock_mono_ns();
    uint64_t pause = 0;
    if (now - c->connected_ns < SHORT_LIVED_NS) {
        pause = c->backoff_ms / 2 + failover_random(c) % (c->backoff_ms / 2 + 1);
        c->backoff_ms = c->backoff_ms * 2 > c->backoff_max_ms ? c->backoff_max_ms
                                                              : c->backoff_ms * 2;
    } else {
        c->backoff_ms = c->backoff_initial_ms;
    }
    uint64_t deadline = now + (uint64_t)c->reconnect_timeout_ms * 1000000u;
    pthread_mutex_unlock(&c->mu);
    struct conn info;
    struct buf extra;
    buf_init(&extra);
    char msg[CLIENT_MSG_MAX];
    size_t used = 0;
    int rc = pause > 0 && pause_ms(c, pause) ? FERRY_ECLOSED : 0;
    if (rc == 0)
        rc = failover_dial(c, preferred[0] ? preferred : NULL, deadline, 0, &info, &extra, &used,
                           msg, sizeof msg);
    pthread_mutex_lock(&c->mu);
    /* The deadlines of requests may have passed while we were dialling. */
    io_expire_locked(c);
    io_run_dispatch_locked(c);
    if (c->state != CLIENT_RECONNECTING) { /* closing */
        if (rc == 0)
            conn_dispose(&info);
        buf_free(&extra);
        return;
    }
    if (rc != 0) {
        c->state = CLIENT_BROKEN;
        c->conn_code = rc;
        snprintf(c->conn_msg, sizeof c->conn_msg, "%.600s; reconnecting failed: %.900s", lost, msg);
        buf_free(&extra);
        return;
    }
    c->info = info;
    c->fd = info.fd;
    c->state = CLIENT_READY;
    c->notice[0] = '\0';
    c->connected_ns = clock_mono_ns();
    c->rx_ns = c->connected_ns;
    c->ping_ns = 0;
    c->stats.connects++;
    if (used != SIZE_MAX)
        c->server_idx = used;
    failover_learn_locked(c, &info);
    /* Requests made while we dialled were appended to the output too; they
     * are pending like the others and go out once, below, in order. Untracked
     * frames (FERRY_NOWAIT acks of the lost session's deliveries) are dropped. */
    c->out.len = 0;
    c->out_off = 0;
    c->out_total = 0;
    c->written_total = 0;
    rc = buf_append(&c->in, extra.data, extra.len);
    buf_free(&extra);
    if (rc == 0)
        rc = resume_locked(c);
    if (rc != 0) {
        io_fail_locked(c, FERRY_ENOMEM, "out of memory re-sending requests to %s", info.address);
        return;
    }
    client_flush_locked(c);
    queue_conn_cb_locked(c, DISP_RECONNECT, 0, info.address);
    io_run_dispatch_locked(c);
    pthread_cond_broadcast(&c->async_cond);
}
