/* session.c - one client connection: reading frames, queueing output, backpressure.
 *
 * Reads go straight into rbuf (grown to fit the frame being received, never
 * beyond max_frame); whole frames are dispatched in order. Output is built
 * in obuf during a turn and handed to libuv in one write per turn; while a
 * write is in flight, new output collects in obuf (double buffering).
 *
 * Backpressure: when unsent output exceeds output_buffer_limit the session
 * stops reading (the client's own TCP window then throttles it) and refuses
 * further deliveries (the broker reads them from the database later); below
 * half the limit it resumes and tells the broker it is writable again.
 *
 * TLS (client_tls yes or required): the first byte a client sends decides.
 * 0x16 starts a TLS handshake record, which no HELLO frame can start (its
 * length would be over 369 MB), so with `yes` both kinds of client share the
 * port; with `required` a plaintext client gets ERROR ENOTSUP saying so, and
 * with `no` a TLS client is closed and the server logs why. A TLS session
 * reads ciphertext into the server's scratch buffer and decrypts it into
 * rbuf; session_flush encrypts obuf and writes the ciphertext from wbuf, so
 * the double buffering and the backpressure above see plaintext sizes in
 * obuf and ciphertext in flight. Every session must finish its HELLO (and
 * its TLS handshake) within client_handshake_timeout, or it is closed.
 */
#include "server/server.h"

#include "util/alloc.h"
#include "util/clock.h"
#include "util/log.h"
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define READ_CHUNK (64 * 1024)

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b);
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out);

size_t session_output_bytes(const struct session *ss)
{
    return ss->obuf.len + (ss->writing ? ss->wbuf.len : 0);
}

static void peer_name(struct session *ss)
{
    struct sockaddr_storage sa;
    int len = sizeof sa;
    snprintf(ss->peer, sizeof ss->peer, "?");
    if (uv_tcp_getpeername(&ss->tcp, (struct sockaddr *)&sa, &len) != 0)
        return;
    char host[48];
    if (sa.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&sa;
        uv_ip4_name(in, host, sizeof host);
        snprintf(ss->peer, sizeof ss->peer, "%s:%u", host, ntohs(in->sin_port));
    } else if (sa.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa;
        uv_ip6_name(in6, host, sizeof host);
        snprintf(ss->peer, sizeof ss->peer, "[%s]:%u", host, ntohs(in6->sin6_port));
    }
}

void session_accept(struct server *srv)
{
    struct session *ss = ferry_calloc(1, sizeof *ss);
    if (ss == NULL) {
        log_error("server", "out of memory accepting a connection");
        return;
    }
    ss->srv = srv;
    list_init(&ss->link);
    list_init(&ss->dirty_link);
    list_init(&ss->pendings);
    buf_init(&ss->rbuf);
    buf_init(&ss->obuf);
    buf_init(&ss->wbuf);
    uv_tcp_init(srv->loop, &ss->tcp);
    ss->tcp.data = ss;
    if (uv_accept((uv_stream_t *)&srv->listener, (uv_stream_t *)&ss->tcp) != 0) {
        ss->closed = 1;
        uv_close((uv_handle_t *)&ss->tcp, (uv_close_cb)ferry_free);
        return;
    }
    ss->id = ++srv->next_session_id;
    ss->accepted_ms = clock_mono_ms();
    list_insert_tail(&srv->sessions, &ss->link);
    srv->session_count++;
    peer_name(ss);
    if (srv->session_count > srv->cfg->max_connections) {
        log_warn("server", "refusing %s: %u connections (max_connections)", ss->peer,
                 srv->cfg->max_connections);
        session_fail(ss, 0, FERRY_ELIMIT, "server has too many connections (max_connections %u)",
                     srv->cfg->max_connections);
        return;
    }
    uv_tcp_nodelay(&ss->tcp, 1);
    uv_read_start((uv_stream_t *)&ss->tcp, on_alloc, on_read);
    log_debug("server", "session %llu connected from %s", (unsigned long long)ss->id, ss->peer);
}

void session_mark_dirty(struct session *ss)
{
    if (!list_linked(&ss->dirty_link))
        list_insert_tail(&ss->srv->dirty, &ss->dirty_link);
}

static void check_backpressure(struct session *ss)
{
    size_t out = session_output_bytes(ss);
    uint64_t limit = ss->srv->cfg->output_buffer_limit;
    if (ss->closing || ss->closed)
        return;
    if (!ss->read_paused && out > limit) {
        ss->read_paused = 1;
        uv_read_stop((uv_stream_t *)&ss->tcp);
    } else if (out <= limit / 2) {
        if (ss->read_paused) {
            ss->read_paused = 0;
            uv_read_start((uv_stream_t *)&ss->tcp, on_alloc, on_read);
        }
        if (ss->deliver_blocked && ss->bc) {
            ss->deliver_blocked = 0;
            broker_client_writable(ss->bc);
            ss->srv->pump_wanted = 1;
        }
    }
}

static void finish_close(uv_handle_t *h)
{
    struct session *ss = h->data;
    tls_conn_free(ss->tls);
    buf_free(&ss->rbuf);
    buf_free(&ss->obuf);
    buf_free(&ss->wbuf);
    ferry_free(ss);
}

void session_close(struct session *ss)
{
    if (ss->closed)
        return;
    ss->closed = 1;
    struct server *srv = ss->srv;
    list_remove(&ss->link);
    list_remove(&ss->dirty_link);
    srv->session_count--;
    dispatch_session_closed(ss);
    if (ss->bc) {
        struct buf returns;
        buf_init(&returns);
        broker_client_close(ss->bc, clock_wall_ms(), &returns);
        ss->bc = NULL;
        server_return_items(srv, returns.data, returns.len);
        buf_free(&returns);
        srv->pump_wanted = 1;
    }
    log_debug("server", "session %llu closed", (unsigned long long)ss->id);
    uv_close((uv_handle_t *)&ss->tcp, finish_close);
}

static size_t unsent(const struct session *ss)
{
    return ss->obuf.len + (ss->tls != NULL ? tls_conn_output_pending(ss->tls) : 0);
}

static void on_write(uv_write_t *req, int status)
{
    struct session *ss = req->data;
    ss->writing = 0;
    ss->wbuf.len = 0;
    if (ss->wbuf.cap > 4 * 1024 * 1024)
        buf_free(&ss->wbuf); /* don't keep a burst's worth of memory */
    if (status < 0) {
        if (status != UV_ECANCELED)
            log_debug("server", "session %llu write failed: %s", (unsigned long long)ss->id,
                      uv_strerror(status));
        session_close(ss);
        return;
    }
    if (ss->closed)
        return;
    if (unsent(ss) > 0) {
        session_flush(ss);
        return;
    }
    if (ss->closing) {
        session_close(ss);
        return;
    }
    check_backpressure(ss);
}

/* TLS: encrypt obuf into the session and move the ciphertext to wbuf.
 * Output queued before the handshake finished (a refusal at accept) cannot
 * be sent in TLS and is dropped. */
static int tls_stage(struct session *ss)
{
    if (ss->obuf.len > 0 && tls_conn_established(ss->tls) &&
        tls_conn_encrypt(ss->tls, ss->obuf.data, ss->obuf.len) != 0) {
        log_warn("server", "session %llu from %s: %s", (unsigned long long)ss->id, ss->peer,
                 tls_conn_error(ss->tls));
        return -1;
    }
    ss->obuf.len = 0;
    ss->wbuf.len = 0;
    return tls_conn_take_output(ss->tls, &ss->wbuf) == 0 ? 0 : -1;
}

void session_flush(struct session *ss)
{
    if (ss->closed || ss->writing || unsent(ss) == 0) {
        if (!ss->closed && ss->closing && !ss->writing && unsent(ss) == 0)
            session_close(ss);
        return;
    }
    if (ss->tls != NULL) {
        if (tls_stage(ss) != 0) {
            session_close(ss);
            return;
        }
        if (ss->wbuf.len == 0) { /* only plaintext that could not be sent */
            if (ss->closing)
                session_close(ss);
            return;
        }
    } else {
        struct buf t = ss->wbuf;
        ss->wbuf = ss->obuf;
        ss->obuf = t;
        ss->obuf.len = 0;
    }
    uv_buf_t b = uv_buf_init((char *)ss->wbuf.data, (unsigned)ss->wbuf.len);
    ss->wreq.data = ss;
    int rc = uv_write(&ss->wreq, (uv_stream_t *)&ss->tcp, &b, 1, on_write);
    if (rc != 0) {
        ss->wbuf.len = 0;
        session_close(ss);
        return;
    }
    ss->writing = 1;
    check_backpressure(ss);
}

static void vqueue_error(struct session *ss, uint32_t req, int code, const char *fmt, va_list ap)
{
    struct proto_error e;
    memset(&e, 0, sizeof e);
    e.code = code;
    vsnprintf(e.message, sizeof e.message, fmt, ap);
    if (code == FERRY_ENOTLEADER)
        snprintf(e.leader, sizeof e.leader, "%s", cluster_leader_address(&ss->srv->cluster));
    if (proto_encode_error(&ss->obuf, req, &e) == 0)
        ss->srv->frames_out++;
    session_mark_dirty(ss);
}

void session_error(struct session *ss, uint32_t req, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vqueue_error(ss, req, code, fmt, ap);
    va_end(ap);
}

void session_fail(struct session *ss, uint32_t req, int code, const char *fmt, ...)
{
    if (ss->closing || ss->closed)
        return;
    va_list ap;
    va_start(ap, fmt);
    vqueue_error(ss, req, code, fmt, ap);
    va_end(ap);
    ss->closing = 1;
    if (!ss->read_paused)
        uv_read_stop((uv_stream_t *)&ss->tcp);
    ss->read_paused = 1;
}

void session_leave(struct session *ss)
{
    if (ss->bc != NULL) {
        struct buf returns;
        buf_init(&returns);
        broker_client_close(ss->bc, clock_wall_ms(), &returns);
        ss->bc = NULL;
        buf_free(&returns);
    }
    const char *leader = cluster_leader_address(&ss->srv->cluster);
    if (leader[0] != '\0')
        session_fail(ss, 0, FERRY_ENOTLEADER, "this node is no longer the leader; the leader is %s",
                     leader);
    else
        session_fail(ss, 0, FERRY_ENOTLEADER, "this node is no longer the leader");
}

static void alloc_for_frame(struct session *ss, uv_buf_t *out)
{
    size_t want = READ_CHUNK;
    if (ss->rbuf.len >= 4) {
        size_t frame = (size_t)get_u32(ss->rbuf.data) + 4;
        if (frame > ss->rbuf.len && frame <= ss->srv->max_frame && frame - ss->rbuf.len > want)
            want = frame - ss->rbuf.len;
    }
    if (buf_reserve(&ss->rbuf, want) != 0) {
        out->base = NULL;
        out->len = 0;
        return;
    }
    out->base = (char *)ss->rbuf.data + ss->rbuf.len;
    out->len = ss->rbuf.cap - ss->rbuf.len;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct session *ss = h->data;
    (void)suggested;
    if (ss->tls != NULL) { /* ciphertext, decrypted into rbuf */
        out->base = (char *)ss->srv->scratch;
        out->len = 64 * 1024;
        return;
    }
    alloc_for_frame(ss, out);
}

/* Parse and dispatch every whole frame in rbuf. */
static void process_frames(struct session *ss)
{
    size_t off = 0;
    while (!ss->closing && !ss->closed) {
        struct proto_header h;
        size_t flen;
        int rc = proto_frame_check(ss->rbuf.data + off, ss->rbuf.len - off, ss->srv->max_frame,
                                   &h, &flen);
        if (rc == FERRY_EAGAIN)
            break;
        if (rc != 0) {
            ss->srv->protocol_errors++;
            const char *why = rc == FERRY_ETOOBIG   ? "frame too large"
                              : rc == FERRY_EVERSION ? "unsupported protocol version"
                                                     : "malformed frame header";
            log_warn("server", "session %llu from %s: %s, closing", (unsigned long long)ss->id,
                     ss->peer, why);
            if (rc == FERRY_ETOOBIG)
                session_fail(ss, h.request_id, rc, "frame of %llu bytes exceeds max_frame %u",
                             (unsigned long long)h.length + 4, ss->srv->max_frame);
            else if (rc == FERRY_EVERSION)
                session_fail(ss, h.request_id, rc, "protocol version %u not supported (server "
                             "speaks %u)", h.version, PROTO_VERSION);
            else
                session_fail(ss, 0, FERRY_EPROTO, "malformed frame header");
            break;
        }
        ss->srv->frames_in++;
        const uint8_t *body = ss->rbuf.data + off + PROTO_HEADER_SIZE;
        off += flen;
        if (dispatch_frame(ss, &h, body, flen - PROTO_HEADER_SIZE) != 0)
            break;
    }
    if (!ss->closed)
        buf_consume(&ss->rbuf, off);
    if (!ss->closed && ss->rbuf.len == 0 && ss->rbuf.cap > 4 * READ_CHUNK)
        buf_free(&ss->rbuf);
}

/* Ciphertext from a TLS client: decrypt into rbuf, send what the handshake
 * wants sent, then handle whole frames. */
static void tls_read(struct session *ss, const uint8_t *bytes, size_t n)
{
    struct server *srv = ss->srv;
    int was_up = tls_conn_established(ss->tls);
    int rc = tls_conn_input(ss->tls, bytes, n, &ss->rbuf);
    if (rc == FERRY_ECLOSED) {
        session_close(ss);
        return;
    }
    if (rc != 0) {
        if (!was_up)
            srv->tls_failures++;
        log_warn("server", "session %llu from %s: %s", (unsigned long long)ss->id, ss->peer,
                 tls_conn_error(ss->tls));
        /* The alert OpenSSL made goes out before the close. */
        ss->closing = 1;
        uv_read_stop((uv_stream_t *)&ss->tcp);
        ss->read_paused = 1;
        session_flush(ss);
        return;
    }
    if (!was_up && tls_conn_established(ss->tls)) {
        char subject[160];
        tls_conn_peer_subject(ss->tls, subject, sizeof subject);
        log_debug("server", "session %llu from %s: %s %s, client certificate %s",
                  (unsigned long long)ss->id, ss->peer, tls_conn_version(ss->tls),
                  tls_conn_cipher(ss->tls), subject);
    }
    if (tls_conn_output_pending(ss->tls) > 0)
        session_mark_dirty(ss);
    process_frames(ss);
}

/* The first bytes of a connection: TLS or not, and is that allowed here?
 * 0 to go on in plaintext; -1 when the session became TLS (its bytes were
 * handed to tls_read) or was refused. */
static int decide_tls(struct session *ss)
{
    struct server *srv = ss->srv;
    int mode = srv->cfg->client_tls;
    ss->tls_decided = 1;
    if (!tls_looks_like_handshake(ss->rbuf.data[0])) {
        if (mode != CLIENT_TLS_REQUIRED)
            return 0;
        srv->plaintext_refused++;
        log_warn("server", "refusing session %llu from %s: a plaintext client, and client_tls is "
                 "required", (unsigned long long)ss->id, ss->peer);
        session_fail(ss, 0, FERRY_ENOTSUP,
                     "this server accepts TLS connections only (client_tls required): connect "
                     "with TLS (ferry --tls, or a ferrys:// address)");
        return -1;
    }
    if (mode == CLIENT_TLS_NO || srv->tls.client == NULL) {
        log_warn("server", "closing session %llu from %s: the client speaks TLS but client_tls "
                 "is no", (unsigned long long)ss->id, ss->peer);
        session_close(ss);
        return -1;
    }
    ss->tls = tls_conn_new(srv->tls.client, NULL);
    if (ss->tls == NULL) {
        log_error("server", "out of memory starting TLS for %s", ss->peer);
        session_close(ss);
        return -1;
    }
    srv->tls_sessions++;
    /* What was read so far is ciphertext: move it out of rbuf. */
    struct buf first = ss->rbuf;
    buf_init(&ss->rbuf);
    tls_read(ss, first.data, first.len);
    buf_free(&first);
    return -1;
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *b)
{
    struct session *ss = stream->data;
    if (nread == UV_ENOBUFS) {
        session_fail(ss, 0, FERRY_ENOMEM, "server out of memory");
        return;
    }
    if (nread < 0) {
        if (nread != UV_EOF)
            log_debug("server", "session %llu read: %s", (unsigned long long)ss->id,
                      uv_strerror((int)nread));
        /* The client is gone; replies to its pending requests have nowhere to go. */
        session_close(ss);
        return;
    }
    if (nread == 0)
        return;
    if (ss->tls != NULL) {
        tls_read(ss, (const uint8_t *)b->base, (size_t)nread);
        return;
    }
    ss->rbuf.len += (size_t)nread;
    if (!ss->tls_decided && decide_tls(ss) != 0)
        return;
    process_frames(ss);
}

void session_sweep_handshakes(struct server *srv, uint64_t now_ms)
{
    uint64_t limit = srv->cfg->client_handshake_timeout_ms;
    struct list *it, *tmp;
    list_foreach_safe(it, tmp, &srv->sessions)
    {
        struct session *ss = list_entry(it, struct session, link);
        if (ss->hello_done || ss->closing || now_ms - ss->accepted_ms < limit)
            continue;
        srv->handshake_timeouts++;
        log_warn("server", "closing session %llu from %s: no %s within %llu ms "
                 "(client_handshake_timeout)",
                 (unsigned long long)ss->id, ss->peer,
                 ss->tls != NULL && !tls_conn_established(ss->tls) ? "TLS handshake" : "HELLO",
                 (unsigned long long)limit);
        session_close(ss);
    }
}
