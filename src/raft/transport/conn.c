/* conn.c - one TCP connection of the transport: byte stream, framing, close.
 *
 * The byte stream passes through exactly two functions: conn_write() hands
 * c->wbuf to the socket and conn_on_bytes() receives what the socket read.
 * With TLS (src/tls) these two are where encryption happens: conn_write
 * encrypts wbuf into the session and writes the ciphertext from twbuf (TLS
 * output made while a write is in flight waits in the session and goes out
 * when it completes); conn_on_bytes decrypts into rbuf. A dialer sends its
 * HELLO once the TLS handshake is done. A TLS failure on an accepted
 * connection is a "tls" refusal: no REFUSE frame can be sent then, only the
 * alert OpenSSL made, and the dialer logs that.
 *
 * Reads land in the transport's scratch buffer and are appended to c->rbuf;
 * each frame's length is checked as soon as its four length bytes arrive, so
 * rbuf never grows past the frame limit of the connection's state. Frames are
 * handled in order; a callback may close the connection or the whole
 * transport, so the loop re-checks the state after each frame.
 *
 * An accepted connection has a timer: it must deliver its whole HELLO within
 * handshake_timeout_ms, and once refused its REFUSE frame must be written
 * within as long again, or it is closed. So a silent or stalled client holds
 * a connection for a bounded time. The connection is freed when both its
 * handles are closed.
 */
#include "raft/transport/transport_int.h"

#include "util/alloc.h"
#include "util/log.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define READ_CHUNK (64 * 1024)

static void on_closed(uv_handle_t *h);

void frame_put_header(struct buf *b, uint8_t kind, uint32_t payload_len)
{
    assert(b->cap - b->len >= RTRANSPORT_FRAME_HEADER);
    put_u32(b->data + b->len, payload_len + 1);
    b->data[b->len + 4] = kind;
    b->len += RTRANSPORT_FRAME_HEADER;
}

struct conn *conn_new(struct rtransport *t, int outbound)
{
    struct conn *c = ferry_calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->t = t;
    c->outbound = outbound;
    c->state = outbound ? CONN_CONNECTING : CONN_HANDSHAKE;
    buf_init(&c->rbuf);
    buf_init(&c->wbuf);
    buf_init(&c->refuse);
    buf_init(&c->twbuf);
    int rc = uv_tcp_init(t->loop, &c->tcp);
    assert(rc == 0);
    c->tcp.data = c;
    c->creq.data = c;
    c->wreq.data = c;
    c->open_handles = 1;
    t->handles++;
    if (!outbound) {
        rc = uv_timer_init(t->loop, &c->timer);
        assert(rc == 0);
        c->timer.data = c;
        c->open_handles++;
        t->handles++;
    }
    (void)rc;
    list_insert_tail(&t->conns, &c->link);
    snprintf(c->name, sizeof c->name, "?");
    return c;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out)
{
    struct conn *c = h->data;
    (void)suggested;
    out->base = (char *)c->t->scratch;
    out->len = READ_CHUNK;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    struct conn *c = s->data;
    if (nread < 0) {
        if (nread != UV_EOF)
            log_debug(LOG_MOD, "%s: read failed: %s", c->name, uv_strerror((int)nread));
        else
            log_debug(LOG_MOD, "%s: closed by the other end", c->name);
        conn_close(c);
        return;
    }
    if (nread > 0)
        conn_on_bytes(c, (const uint8_t *)b->base, (size_t)nread);
}

static void on_deadline(uv_timer_t *timer)
{
    struct conn *c = timer->data;
    if (c->state == CONN_HANDSHAKE)
        conn_reject(c, RTRANSPORT_REJECT_TIMEOUT,
                    "no handshake within %u ms (handshake_timeout_ms)", c->t->handshake_timeout_ms);
    else if (c->state == CONN_REFUSING)
        conn_close(c); /* the REFUSE frame could not be written in time */
}

/* (Re)start an accepted connection's deadline: handshake_timeout_ms from now. */
void conn_arm_deadline(struct conn *c)
{
    assert(!c->outbound);
    uv_timer_start(&c->timer, on_deadline, c->t->handshake_timeout_ms, 0);
}

int conn_tls_init(struct conn *c, const char *verify_name)
{
    struct rtransport *t = c->t;
    struct tls_ctx *ctx = c->outbound ? t->tls_dial : t->tls_accept;
    if (ctx == NULL)
        return 0;
    c->tls = tls_conn_new(ctx, verify_name);
    if (c->tls == NULL) {
        log_error(LOG_MOD, "%s: out of memory starting TLS", c->name);
        conn_close(c);
        return FERRY_ENOMEM;
    }
    return 0;
}

void conn_start_reading(struct conn *c)
{
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c);
}

static void on_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;
    struct rtransport_peer *p = c->outbound ? conn_peer(c) : NULL;
    c->writing = 0;
    c->wbuf.len = 0;
    c->twbuf.len = 0;
    if (c->wbuf.cap > 4 * 1024 * 1024)
        buf_free(&c->wbuf); /* don't keep a burst's worth of memory */
    if (c->twbuf.cap > 4 * 1024 * 1024)
        buf_free(&c->twbuf);
    if (status < 0) {
        if (p != NULL)
            p->stats.lost += c->wmsgs;
        c->wmsgs = 0;
        c->wpayload = 0;
        if (status != UV_ECANCELED)
            log_debug(LOG_MOD, "%s: write failed: %s", c->name, uv_strerror(status));
        conn_close(c);
        return;
    }
    if (p != NULL) {
        p->stats.msgs_sent += c->wmsgs;
        p->stats.bytes_sent += c->wpayload;
    }
    c->wmsgs = 0;
    c->wpayload = 0;
    if (c->state == CONN_REFUSING && c->refuse.len > 0) {
        struct buf tmp = c->wbuf;
        c->wbuf = c->refuse;
        c->refuse = tmp;
        conn_write(c);
    } else if (c->tls != NULL && tls_conn_output_pending(c->tls) > 0) {
        conn_write(c);
    } else if (c->state == CONN_REFUSING) {
        conn_close(c);
    } else if (c->state == CONN_READY && p != NULL)
        peer_flush(p);
}

static void write_failed(struct conn *c)
{
    if (c->outbound && conn_peer(c) != NULL)
        c->peer->stats.lost += c->wmsgs;
    c->wmsgs = 0;
    c->wbuf.len = 0;
    conn_close(c);
}

/* Hand b to libuv; on_write follows. */
static int write_buf(struct conn *c, const struct buf *b)
{
    uv_buf_t ub = uv_buf_init((char *)b->data, (unsigned)b->len);
    int rc = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &ub, 1, on_write);
    if (rc != 0) {
        log_debug(LOG_MOD, "%s: write failed: %s", c->name, uv_strerror(rc));
        write_failed(c);
        return FERRY_ECONN;
    }
    c->writing = 1;
    return 0;
}

/* Encrypt wbuf into the session and write what the session has for the
 * network, unless a write is in flight (on_write comes back for the rest).
 * Nothing to write is fine: a REFUSING connection then closes. */
static int conn_write_tls(struct conn *c)
{
    if (c->wbuf.len > 0) {
        int rc = tls_conn_encrypt(c->tls, c->wbuf.data, c->wbuf.len);
        c->wbuf.len = 0;
        if (rc != 0) {
            log_warn(LOG_MOD, "%s: %s", c->name, tls_conn_error(c->tls));
            write_failed(c);
            return FERRY_ECONN;
        }
    }
    if (c->writing)
        return 0;
    c->twbuf.len = 0;
    if (tls_conn_take_output(c->tls, &c->twbuf) != 0) {
        log_error(LOG_MOD, "%s: out of memory writing", c->name);
        write_failed(c);
        return FERRY_ENOMEM;
    }
    if (c->twbuf.len == 0) {
        if (c->state == CONN_REFUSING)
            conn_close(c);
        return 0;
    }
    return write_buf(c, &c->twbuf);
}

int conn_write(struct conn *c)
{
    if (c->tls != NULL)
        return conn_write_tls(c);
    assert(!c->writing);
    assert(c->wbuf.len > 0);
    return write_buf(c, &c->wbuf);
}

void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    struct rtransport_peer *p = c->peer;
    c->state = CONN_CLOSED;
    if (c->outbound) {
        assert(p != NULL);
        c->was_up = p->up;
        p->up = 0;
        p->stats.connected = 0;
        if (p->out == c)
            p->out = NULL;
        /* The redial is scheduled once the handle is closed. */
        uv_timer_stop(&p->timer);
    } else if (p != NULL && p->in == c) {
        p->in = NULL;
        p->stats.inbound = 0;
    }
    if (!c->outbound)
        uv_close((uv_handle_t *)&c->timer, on_closed);
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

static void on_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    struct rtransport *t = c->t;
    t->handles--;
    if (--c->open_handles > 0)
        return;
    /* NULL when the member was removed meanwhile: no redial, no down notice. */
    struct rtransport_peer *p = c->outbound ? conn_peer(c) : NULL;
    int down = c->was_up;
    list_remove(&c->link);
    buf_free(&c->rbuf);
    buf_free(&c->wbuf);
    buf_free(&c->refuse);
    buf_free(&c->twbuf);
    tls_conn_free(c->tls);
    ferry_free(c);
    if (!t->closing && p != NULL) {
        peer_schedule_redial(p);
        if (down && t->cb.on_peer_down != NULL)
            t->cb.on_peer_down(t, p->id);
    }
    transport_handle_closed(t);
}

void conn_reject(struct conn *c, int reason, const char *fmt, ...)
{
    struct rtransport *t = c->t;
    char why[REASON_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    assert(!c->outbound);
    assert(reason >= 0 && reason < RTRANSPORT_REJECT_COUNT);
    t->stats.rejected[reason]++;
    snprintf(t->stats.last_reject, sizeof t->stats.last_reject, "%s", why);
    log_warn(LOG_MOD, "closing connection from %s (%s): %s", c->name,
             rtransport_reject_name(reason), why);
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (c->tls != NULL && !tls_conn_established(c->tls)) {
        /* No REFUSE frame without a TLS session: send the alert, if any. */
        c->state = CONN_REFUSING;
        conn_arm_deadline(c);
        if (!c->writing)
            conn_write(c);
        return;
    }
    /* If the ACCEPT is still in flight the reason follows it (on_write). */
    struct buf *out = c->writing ? &c->refuse : &c->wbuf;
    size_t n = strlen(why);
    out->len = 0;
    if (buf_reserve(out, RTRANSPORT_FRAME_HEADER + n) != 0) {
        conn_close(c);
        return;
    }
    frame_put_header(out, FRAME_REFUSE, (uint32_t)n);
    buf_append(out, why, n);
    c->state = CONN_REFUSING;
    conn_arm_deadline(c);
    if (!c->writing)
        conn_write(c);
}

/* The largest frame (length field included) acceptable in c's state. */
static size_t frame_limit(const struct conn *c)
{
    if (c->state == CONN_READY && !c->outbound)
        return c->t->frame_bytes_max;
    return HANDSHAKE_FRAME_MAX;
}

static void frame_too_big(struct conn *c, size_t frame)
{
    if (c->outbound) {
        log_warn(LOG_MOD, "%s: answered with a frame of %zu bytes, closing", c->name, frame);
        conn_close(c);
    } else if (c->state == CONN_READY) {
        conn_reject(c, RTRANSPORT_REJECT_OVERSIZED, "frame of %zu bytes exceeds frame_bytes_max %u",
                    frame, c->t->frame_bytes_max);
    } else {
        conn_reject(c, RTRANSPORT_REJECT_MALFORMED, "not a Ferry Raft handshake");
    }
}

static void handle_frame(struct conn *c, uint8_t kind, const uint8_t *p, size_t n)
{
    struct rtransport *t = c->t;
    if (c->outbound) {
        handshake_on_reply(c, kind, p, n);
        return;
    }
    if (c->state == CONN_HANDSHAKE) {
        handshake_on_hello(c, kind, p, n);
        return;
    }
    if (kind != FRAME_MSG) {
        conn_reject(c, RTRANSPORT_REJECT_MALFORMED, "unexpected frame kind %u", kind);
        return;
    }
    struct rtransport_peer *peer = c->peer;
    peer->stats.msgs_recv++;
    peer->stats.bytes_recv += n;
    if (t->cb.on_message != NULL)
        t->cb.on_message(t, peer->id, p, n);
}

/* A dial whose TLS handshake or session failed: say why (the alert for the
 * acceptor goes out if the socket takes it at once), count it, close. */
static void dial_tls_failed(struct conn *c)
{
    struct rtransport_peer *p = conn_peer(c);
    if (p != NULL) {
        p->stats.tls_failed++;
        log_warn(LOG_MOD, "node %u at %s:%u: %s", p->id, p->host, p->port,
                 tls_conn_error(c->tls));
    }
    if (!c->writing) {
        c->twbuf.len = 0;
        if (tls_conn_take_output(c->tls, &c->twbuf) == 0 && c->twbuf.len > 0) {
            uv_buf_t b = uv_buf_init((char *)c->twbuf.data, (unsigned)c->twbuf.len);
            (void)uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
        }
    }
    conn_close(c);
}

/* Decrypt into rbuf and advance the handshake: 0 to go on parsing frames,
 * -1 when the connection is done for. */
static int tls_on_bytes(struct conn *c, const uint8_t *bytes, size_t n)
{
    int was_up = tls_conn_established(c->tls);
    int rc = tls_conn_input(c->tls, bytes, n, &c->rbuf);
    if (rc != 0) {
        if (c->outbound)
            dial_tls_failed(c);
        else
            conn_reject(c, RTRANSPORT_REJECT_TLS, "%s", tls_conn_error(c->tls));
        return -1;
    }
    if (!was_up && tls_conn_established(c->tls)) {
        log_debug(LOG_MOD, "%s: %s %s", c->name, tls_conn_version(c->tls),
                  tls_conn_cipher(c->tls));
        if (c->outbound) /* writes the handshake's last flight too */
            return handshake_hello(c) == 0 ? 0 : -1;
    }
    if (tls_conn_output_pending(c->tls) > 0 && !c->writing && conn_write(c) != 0)
        return -1;
    return c->state == CONN_CLOSED ? -1 : 0;
}

void conn_on_bytes(struct conn *c, const uint8_t *bytes, size_t n)
{
    struct rtransport *t = c->t;
    if (c->tls != NULL) {
        if (tls_on_bytes(c, bytes, n) != 0)
            return;
    } else if (buf_append(&c->rbuf, bytes, n) != 0) {
        log_error(LOG_MOD, "%s: out of memory reading, closing", c->name);
        conn_close(c);
        return;
    }
    size_t off = 0;
    while (c->state == CONN_HANDSHAKE || c->state == CONN_READY) {
        size_t avail = c->rbuf.len - off;
        if (avail < 4)
            break;
        size_t len = get_u32(c->rbuf.data + off);
        if (len + 4 > frame_limit(c)) {
            frame_too_big(c, len + 4);
            break;
        }
        if (len == 0) {
            if (c->outbound) {
                log_warn(LOG_MOD, "%s: answered with an empty frame, closing", c->name);
                conn_close(c);
            } else {
                conn_reject(c, RTRANSPORT_REJECT_MALFORMED, "empty frame");
            }
            break;
        }
        if (avail < 4 + len)
            break;
        const uint8_t *f = c->rbuf.data + off;
        off += 4 + len;
        handle_frame(c, f[4], f + RTRANSPORT_FRAME_HEADER, len - 1);
        if (t->closing)
            break;
    }
    if (c->state == CONN_CLOSED)
        return;
    buf_consume(&c->rbuf, off);
    if (c->rbuf.len == 0 && c->rbuf.cap > 4 * READ_CHUNK)
        buf_free(&c->rbuf);
}
