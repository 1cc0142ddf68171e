/* transport.c - peers, dialing with backoff, the listener, send and close.
 *
 * Each peer owns a queue of whole MSG frames and one timer. While no
 * connection is up the timer waits out the redial backoff: min * 2^attempts
 * capped at max, with the delay drawn uniformly from its upper half (seeded
 * jitter so restarted nodes do not redial in lockstep). While dialing it is
 * the connect timeout. Once the ACCEPT arrives the queue is written in one
 * uv_write per batch; new frames collect in the queue meanwhile. The queue
 * plus the batch in flight never exceed send_queue_bytes_max.
 *
 * Close counts open handles (listener, peer timers, connections) and calls
 * the owner's callback from the last close callback.
 */
#include "raft/transport/transport_int.h"

#include "util/alloc.h"
#include "util/log.h"

#include <assert.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>

#define DEFAULT_FRAME_BYTES_MAX ((32u << 20) + (64u << 10))

struct rtransport_peer *transport_peer(const struct rtransport *t, uint32_t id)
{
    for (uint32_t i = 0; i < t->n_peers; i++)
        if (t->peers[i].active && t->peers[i].id == id)
            return &t->peers[i];
    return NULL;
}

struct rtransport_peer *conn_peer(const struct conn *c)
{
    struct rtransport_peer *p = c->peer;
    return p != NULL && p->active && p->gen == c->peer_gen ? p : NULL;
}

static int validate(const struct rtransport_config *cfg, struct ferry_err *err)
{
    int self_found = 0;
    if (cfg->self_id == 0)
        return ferry_err_set(err, FERRY_EINVAL, "node id must be non-zero");
    if (cfg->n_members > RTRANSPORT_MAX_MEMBERS)
        return ferry_err_set(err, FERRY_EINVAL, "%u members configured (at most %u)",
                             cfg->n_members, RTRANSPORT_MAX_MEMBERS);
    if (cfg->listen_host == NULL)
        return ferry_err_set(err, FERRY_EINVAL, "no listen address for node %u", cfg->self_id);
    for (uint32_t i = 0; i < cfg->n_members; i++) {
        const struct rtransport_member *m = &cfg->members[i];
        if (m->id == 0 || m->host == NULL || m->port == 0)
            return ferry_err_set(err, FERRY_EINVAL,
                                 "member %u of cluster_membership needs a non-zero id, a host "
                                 "and a port",
                                 i + 1);
        for (uint32_t j = 0; j < i; j++)
            if (cfg->members[j].id == m->id)
                return ferry_err_set(err, FERRY_EINVAL,
                                     "node id %u appears twice in cluster_membership", m->id);
        self_found |= m->id == cfg->self_id;
    }
    if (!self_found)
        return ferry_err_set(err, FERRY_EINVAL, "node id %u is not in cluster_membership",
                             cfg->self_id);
    uint32_t frame = cfg->frame_bytes_max ? cfg->frame_bytes_max : DEFAULT_FRAME_BYTES_MAX;
    if (frame < HANDSHAKE_FRAME_MAX)
        return ferry_err_set(err, FERRY_EINVAL, "frame_bytes_max %u is below the minimum %u", frame,
                             HANDSHAKE_FRAME_MAX);
    if (cfg->send_queue_bytes_max != 0 && cfg->send_queue_bytes_max < frame)
        return ferry_err_set(err, FERRY_EINVAL,
                             "send_queue_bytes_max %zu is smaller than frame_bytes_max %u",
                             cfg->send_queue_bytes_max, frame);
    if ((cfg->tls_accept == NULL) != (cfg->tls_dial == NULL))
        return ferry_err_set(err, FERRY_EINVAL,
                             "TLS needs both an accepting and a dialling context");
    if (cfg->redial_ms_min > cfg->redial_ms_max && cfg->redial_ms_max != 0)
        return ferry_err_set(err, FERRY_EINVAL, "redial_ms_min %u exceeds redial_ms_max %u",
                             cfg->redial_ms_min, cfg->redial_ms_max);
    return 0;
}

static void free_peers(struct rtransport *t)
{
    for (uint32_t i = 0; i < t->n_peers; i++) {
        ferry_free(t->peers[i].host);
        t->peers[i].host = NULL;
        buf_free(&t->peers[i].queue);
    }
    ferry_free(t->peers);
    t->peers = NULL;
    t->n_peers = 0;
    ferry_free(t->listen_host);
    t->listen_host = NULL;
    ferry_free(t->source_host);
    t->source_host = NULL;
    ferry_free(t->scratch);
    t->scratch = NULL;
}

static int copy_config(struct rtransport *t, const struct rtransport_config *cfg)
{
    t->listen_host = ferry_strdup(cfg->listen_host);
    t->scratch = ferry_malloc(64 * 1024);
    /* Every slot up front: peers added later (rtransport_add_member) must
     * not move the ones connections point to. */
    t->peers = ferry_calloc(RTRANSPORT_MAX_MEMBERS, sizeof *t->peers);
    if (t->listen_host == NULL || t->scratch == NULL || t->peers == NULL)
        return FERRY_ENOMEM;
    if (cfg->source_host != NULL && (t->source_host = ferry_strdup(cfg->source_host)) == NULL)
        return FERRY_ENOMEM;
    for (uint32_t i = 0; i < cfg->n_members; i++) {
        const struct rtransport_member *m = &cfg->members[i];
        if (m->id == cfg->self_id)
            continue;
        struct rtransport_peer *p = &t->peers[t->n_peers++];
        p->t = t;
        p->active = 1;
        p->id = m->id;
        p->port = m->port;
        p->stats.id = m->id;
        buf_init(&p->queue);
        if ((p->host = ferry_strdup(m->host)) == NULL)
            return FERRY_ENOMEM;
    }
    return 0;
}

int rtransport_init(struct rtransport *t, uv_loop_t *loop, const struct rtransport_config *cfg,
                    const struct rtransport_callbacks *cb, struct ferry_err *err)
{
    memset(t, 0, sizeof *t);
    int rc = validate(cfg, err);
    if (rc != 0)
        return rc;
    t->loop = loop;
    t->cb = *cb;
    t->cluster_id = cfg->cluster_id;
    t->self_id = cfg->self_id;
    t->listen_port = cfg->listen_port;
    t->frame_bytes_max = cfg->frame_bytes_max ? cfg->frame_bytes_max : DEFAULT_FRAME_BYTES_MAX;
    t->send_queue_bytes_max =
        cfg->send_queue_bytes_max ? cfg->send_queue_bytes_max : 2 * (size_t)t->frame_bytes_max;
    t->redial_ms_min = cfg->redial_ms_min ? cfg->redial_ms_min : 50;
    t->redial_ms_max = cfg->redial_ms_max ? cfg->redial_ms_max : 2000;
    if (t->redial_ms_max < t->redial_ms_min)
        t->redial_ms_max = t->redial_ms_min;
    t->connect_timeout_ms = cfg->connect_timeout_ms ? cfg->connect_timeout_ms : 3000;
    t->handshake_timeout_ms = cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : 3000;
    t->verify_ip = cfg->verify_ip;
    t->tls_accept = cfg->tls_accept;
    t->tls_dial = cfg->tls_dial;
    rng_seed(&t->rng, cfg->seed);
    list_init(&t->conns);
    if (copy_config(t, cfg) != 0) {
        free_peers(t);
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory setting up the Raft transport");
    }
    rc = uv_tcp_init(loop, &t->listener);
    assert(rc == 0);
    t->listener.data = t;
    t->handles++;
    for (uint32_t i = 0; i < t->n_peers; i++) {
        rc = uv_timer_init(loop, &t->peers[i].timer);
        assert(rc == 0);
        t->peers[i].timer.data = &t->peers[i];
        t->peers[i].timer_init = 1;
        t->handles++;
    }
    return 0;
}

/* Resolve host:port once, synchronously (start-up only), first address wins. */
static int resolve(const char *host, uint16_t port, int passive, struct sockaddr_storage *out,
                   struct ferry_err *err)
{
    struct addrinfo hints, *res = NULL;
    char service[8];
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    snprintf(service, sizeof service, "%u", port);
    int rc = getaddrinfo(host, service, &hints, &res);
    if (rc != 0 || res == NULL)
        return ferry_err_set(err, FERRY_ECONFIG, "cannot resolve '%s': %s", host,
                             rc != 0 ? gai_strerror(rc) : "no address");
    memset(out, 0, sizeof *out);
    memcpy(out, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    return 0;
}

static void on_connection(uv_stream_t *server, int status);

static int start_listening(struct rtransport *t, struct ferry_err *err)
{
    struct sockaddr_storage sa;
    int rc = resolve(t->listen_host, t->listen_port, 1, &sa, err);
    if (rc != 0)
        return ferry_err_wrap(err, "listen address of node %u", t->self_id);
    rc = uv_tcp_bind(&t->listener, (const struct sockaddr *)&sa, 0);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&t->listener, 128, on_connection);
    if (rc != 0)
        return ferry_err_set(err, FERRY_EIO, "cannot listen on %s:%u for Raft peers: %s",
                             t->listen_host, t->listen_port, uv_strerror(rc));
    return 0;
}

static void peer_dial(struct rtransport_peer *p);

int rtransport_start(struct rtransport *t, struct ferry_err *err)
{
    assert(!t->started);
    assert(!t->closing);
    for (uint32_t i = 0; i < t->n_peers; i++) {
        struct rtransport_peer *p = &t->peers[i];
        if (p->active && resolve(p->host, p->port, 0, &p->addr, err) != 0)
            return ferry_err_wrap(err, "member %u", p->id);
    }
    if (t->source_host != NULL) {
        if (resolve(t->source_host, 0, 1, &t->source_addr, err) != 0)
            return ferry_err_wrap(err, "source address of node %u", t->self_id);
        t->has_source = 1;
    }
    int rc = start_listening(t, err);
    if (rc != 0)
        return rc;
    t->started = 1;
    for (uint32_t i = 0; i < t->n_peers; i++)
        if (t->peers[i].active)
            peer_dial(&t->peers[i]);
    return 0;
}

int rtransport_add_member(struct rtransport *t, const struct rtransport_member *m,
                          struct ferry_err *err)
{
    if (t->closing)
        return ferry_err_set(err, FERRY_ECLOSED, "the Raft transport is closing");
    if (m->id == 0 || m->id == t->self_id || m->host == NULL || m->port == 0)
        return ferry_err_set(err, FERRY_EINVAL,
                             "a member needs a non-zero id other than this node's (%u), a host "
                             "and a port",
                             t->self_id);
    struct rtransport_peer *old = transport_peer(t, m->id);
    if (old != NULL) {
        if (strcmp(old->host, m->host) == 0 && old->port == m->port)
            return 0;
        rtransport_remove_member(t, m->id);
    }
    struct sockaddr_storage addr;
    int rc = resolve(m->host, m->port, 0, &addr, err);
    if (rc != 0)
        return ferry_err_wrap(err, "member %u", m->id);
    struct rtransport_peer *p = NULL;
    for (uint32_t i = 0; i < t->n_peers && p == NULL; i++)
        if (!t->peers[i].active)
            p = &t->peers[i];
    if (p == NULL) {
        if (t->n_peers == RTRANSPORT_MAX_MEMBERS)
            return ferry_err_set(err, FERRY_ELIMIT, "at most %u members", RTRANSPORT_MAX_MEMBERS);
        p = &t->peers[t->n_peers++];
        p->t = t;
    }
    char *host = ferry_strdup(m->host);
    if (host == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory adding member %u", m->id);
    if (!p->timer_init) {
        rc = uv_timer_init(t->loop, &p->timer);
        assert(rc == 0);
        p->timer.data = p;
        p->timer_init = 1;
        t->handles++;
    }
    p->active = 1;
    p->id = m->id;
    p->host = host;
    p->port = m->port;
    p->addr = addr;
    p->out = NULL;
    p->in = NULL;
    buf_init(&p->queue);
    p->queue_msgs = 0;
    p->queue_payload = 0;
    p->attempts = 0;
    p->up = 0;
    memset(&p->stats, 0, sizeof p->stats);
    p->stats.id = m->id;
    log_info(LOG_MOD, "member %u at %s:%u added", p->id, p->host, p->port);
    if (t->started)
        peer_dial(p);
    return 0;
}

int rtransport_remove_member(struct rtransport *t, uint32_t id)
{
    struct rtransport_peer *p = transport_peer(t, id);
    if (p == NULL)
        return FERRY_ENOTFOUND;
    if (p->out != NULL)
        conn_close(p->out);
    if (p->in != NULL)
        conn_close(p->in);
    uv_timer_stop(&p->timer);
    ferry_free(p->host);
    p->host = NULL;
    buf_free(&p->queue);
    p->queue_msgs = 0;
    p->queue_payload = 0;
    p->up = 0;
    p->active = 0;
    p->gen++; /* its connections still closing no longer reach this slot */
    log_info(LOG_MOD, "member %u removed", id);
    return 0;
}

void rtransport_set_tls(struct rtransport *t, struct tls_ctx *accept, struct tls_ctx *dial)
{
    if (t->tls_accept == NULL || accept == NULL || dial == NULL)
        return;
    t->tls_accept = accept;
    t->tls_dial = dial;
}

int rtransport_port(const struct rtransport *t, uint16_t *port)
{
    struct sockaddr_storage sa;
    int len = sizeof sa;
    if (!t->started)
        return FERRY_ESTATE;
    if (uv_tcp_getsockname(&t->listener, (struct sockaddr *)&sa, &len) != 0)
        return FERRY_EIO;
    if (sa.ss_family == AF_INET)
        *port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
    else
        *port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
    return 0;
}

static void on_connection(uv_stream_t *server, int status)
{
    struct rtransport *t = server->data;
    if (status < 0) {
        log_warn(LOG_MOD, "accepting a Raft connection failed: %s", uv_strerror(status));
        return;
    }
    struct conn *c = conn_new(t, 0);
    if (c == NULL) {
        log_error(LOG_MOD, "out of memory accepting a Raft connection");
        return;
    }
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage sa;
    int len = sizeof sa;
    char host[64] = "?";
    uint16_t port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len) == 0) {
        if (sa.ss_family == AF_INET) {
            uv_ip4_name((struct sockaddr_in *)&sa, host, sizeof host);
            port = ntohs(((struct sockaddr_in *)&sa)->sin_port);
        } else if (sa.ss_family == AF_INET6) {
            uv_ip6_name((struct sockaddr_in6 *)&sa, host, sizeof host);
            port = ntohs(((struct sockaddr_in6 *)&sa)->sin6_port);
        }
    }
    snprintf(c->name, sizeof c->name, "%.46s:%u", host, port); /* INET6_ADDRSTRLEN */
    conn_arm_deadline(c);
    if (conn_tls_init(c, NULL) != 0)
        return;
    conn_start_reading(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (c->state == CONN_CLOSED)
        return; /* closed while connecting (UV_ECANCELED) */
    if (status < 0) {
        log_debug(LOG_MOD, "%s: connect failed: %s", c->name, uv_strerror(status));
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (c->tls != NULL) { /* HELLO follows once the TLS handshake is done (conn.c) */
        if (tls_conn_start(c->tls) != 0) {
            log_warn(LOG_MOD, "%s: %s", c->name, tls_conn_error(c->tls));
            conn_close(c);
            return;
        }
        if (conn_write(c) != 0)
            return;
    } else if (handshake_hello(c) != 0) {
        return;
    }
    conn_start_reading(c);
}

static void on_peer_timer(uv_timer_t *timer)
{
    struct rtransport_peer *p = timer->data;
    if (!p->active)
        return;
    if (p->out == NULL) {
        peer_dial(p);
    } else if (!p->up) {
        log_warn(LOG_MOD, "node %u at %s:%u: no handshake within %u ms, redialing", p->id, p->host,
                 p->port, p->t->connect_timeout_ms);
        conn_close(p->out);
    }
}

static void peer_dial(struct rtransport_peer *p)
{
    struct rtransport *t = p->t;
    assert(p->out == NULL);
    struct conn *c = conn_new(t, 1);
    if (c == NULL) {
        log_error(LOG_MOD, "out of memory dialing node %u", p->id);
        peer_schedule_redial(p);
        return;
    }
    c->peer = p;
    c->peer_gen = p->gen;
    p->out = c;
    p->stats.dials++;
    snprintf(c->name, sizeof c->name, "node %u (%s:%u)", p->id, p->host, p->port);
    char identity[32];
    snprintf(identity, sizeof identity, "ferry-node-%u", p->id);
    if (conn_tls_init(c, identity) != 0)
        return;
    int rc = 0;
    if (t->has_source)
        rc = uv_tcp_bind(&c->tcp, (const struct sockaddr *)&t->source_addr, 0);
    if (rc == 0)
        rc = uv_tcp_connect(&c->creq, &c->tcp, (const struct sockaddr *)&p->addr, on_connect);
    if (rc != 0) {
        log_warn(LOG_MOD, "%s: cannot dial: %s", c->name, uv_strerror(rc));
        conn_close(c);
        return;
    }
    uv_timer_start(&p->timer, on_peer_timer, t->connect_timeout_ms, 0);
}

void peer_schedule_redial(struct rtransport_peer *p)
{
    struct rtransport *t = p->t;
    uint64_t delay = t->redial_ms_min;
    for (uint32_t i = 0; i < p->attempts && delay < t->redial_ms_max; i++)
        delay *= 2;
    if (delay > t->redial_ms_max)
        delay = t->redial_ms_max;
    delay = rng_range(&t->rng, delay / 2, delay);
    if (p->attempts < 32)
        p->attempts++;
    uv_timer_start(&p->timer, on_peer_timer, delay, 0);
}

void peer_connected(struct rtransport_peer *p)
{
    struct rtransport *t = p->t;
    p->up = 1;
    p->attempts = 0;
    p->stats.connected = 1;
    uv_timer_stop(&p->timer);
    log_info(LOG_MOD, "connected to node %u at %s:%u", p->id, p->host, p->port);
    if (t->cb.on_peer_up != NULL)
        t->cb.on_peer_up(t, p->id);
    if (p->up && !t->closing)
        peer_flush(p);
}

void peer_flush(struct rtransport_peer *p)
{
    struct conn *c = p->out;
    if (!p->up || c == NULL || c->writing || p->queue.len == 0)
        return;
    struct buf tmp = c->wbuf;
    c->wbuf = p->queue;
    p->queue = tmp;
    p->queue.len = 0;
    c->wmsgs = p->queue_msgs;
    c->wpayload = p->queue_payload;
    p->queue_msgs = 0;
    p->queue_payload = 0;
    conn_write(c);
}

static size_t peer_pending(const struct rtransport_peer *p)
{
    size_t n = p->queue.len;
    if (p->out != NULL && p->out->writing)
        n += p->out->tls != NULL ? p->out->twbuf.len : p->out->wbuf.len;
    return n;
}

int rtransport_send(struct rtransport *t, uint32_t to, const void *bytes, size_t len)
{
    if (t->closing)
        return FERRY_ECLOSED;
    struct rtransport_peer *p = transport_peer(t, to);
    if (p == NULL)
        return FERRY_ENOTFOUND;
    if (len > t->frame_bytes_max - RTRANSPORT_FRAME_HEADER)
        return FERRY_ETOOBIG;
    size_t frame = RTRANSPORT_FRAME_HEADER + len;
    if (peer_pending(p) + frame > t->send_queue_bytes_max) {
        p->stats.drops++;
        return FERRY_EBUSY;
    }
    if (buf_reserve(&p->queue, frame) != 0)
        return FERRY_ENOMEM;
    frame_put_header(&p->queue, FRAME_MSG, (uint32_t)len);
    if (len > 0)
        memcpy(p->queue.data + p->queue.len, bytes, len);
    p->queue.len += len;
    p->queue_msgs++;
    p->queue_payload += len;
    assert(peer_pending(p) <= t->send_queue_bytes_max);
    peer_flush(p);
    return 0;
}

void transport_handle_closed(struct rtransport *t)
{
    if (!t->closing || t->handles > 0)
        return;
    free_peers(t);
    rtransport_close_cb cb = t->close_cb;
    t->close_cb = NULL;
    if (cb != NULL)
        cb(t);
}

static void on_handle_closed(uv_handle_t *h)
{
    struct rtransport *t;
    if (h->type == UV_TIMER)
        t = ((struct rtransport_peer *)h->data)->t;
    else
        t = h->data;
    t->handles--;
    transport_handle_closed(t);
}

void rtransport_close(struct rtransport *t, rtransport_close_cb cb)
{
    assert(!t->closing);
    t->closing = 1;
    t->close_cb = cb;
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &t->conns) conn_close(list_entry(pos, struct conn, link));
    for (uint32_t i = 0; i < t->n_peers; i++)
        if (t->peers[i].timer_init)
            uv_close((uv_handle_t *)&t->peers[i].timer, on_handle_closed);
    uv_close((uv_handle_t *)&t->listener, on_handle_closed);
}

int rtransport_peer_stats(const struct rtransport *t, uint32_t id,
                          struct rtransport_peer_stats *out)
{
    const struct rtransport_peer *p = transport_peer(t, id);
    if (p == NULL)
        return FERRY_ENOTFOUND;
    *out = p->stats;
    out->queued_bytes = peer_pending(p);
    return 0;
}

const struct rtransport_stats *rtransport_stats(const struct rtransport *t)
{
    return &t->stats;
}
