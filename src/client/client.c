/* client.c - the client handle: create, connect, close; errors; requests.
 *
 * A blocking call encodes its frame into a struct req on its own stack,
 * registers it, writes the output buffer at once and waits on the req's
 * condition variable; the I/O thread fills in the outcome and signals it.
 * An asynchronous publish takes a req from a pool, waits for a slot of the
 * window if needed, and leaves its frame in the output buffer for the next
 * batch: client_kick_locked() decides who writes it and when.
 *
 * Error messages are per thread: client_fail() writes the calling thread's
 * buffer, which ferry_client_errmsg() returns, so threads sharing a client
 * never see each other's messages.
 */
#include "client/client.h"

#include "util/alloc.h"
#include "util/clock.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONNECT_TIMEOUT_MS 5000u
#define DEFAULT_REQUEST_TIMEOUT_MS 10000u
#define DEFAULT_WINDOW 256u
#define DEFAULT_MAX_REDIRECTS 3u
#define DEFAULT_MAX_FRAME (64u * 1024u * 1024u)
#define DEFAULT_MAX_QUEUED_BYTES ((size_t)64 * 1024 * 1024)
#define CLOSE_FLUSH_MS 1000
#define DEFAULT_RECONNECT_TIMEOUT_MS 30000u
#define DEFAULT_BACKOFF_INITIAL_MS 10u
#define DEFAULT_BACKOFF_MAX_MS 2000u
#define DEFAULT_KEEPALIVE_MS 1000u

/* The calling thread's last error: which client (by serial number, so a
 * client allocated later at the same address never inherits it) and the text. */
static __thread uint64_t tls_err_client;
static __thread char tls_err_msg[CLIENT_MSG_MAX];
static _Atomic uint64_t client_serial_next = 1; /* process-wide: serial numbers */

const char *ferry_version(void)
{
    return FERRY_VERSION;
}

/* ---- errors ---- */

int client_fail_msg(ferry_client_t *c, int code, const char *msg)
{
    tls_err_client = c->serial;
    snprintf(tls_err_msg, sizeof tls_err_msg, "%s", msg && msg[0] ? msg : ferry_strerror(code));
    return code;
}

int client_fail(ferry_client_t *c, int code, const char *fmt, ...)
{
    tls_err_client = c->serial;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tls_err_msg, sizeof tls_err_msg, fmt, ap);
    va_end(ap);
    return code;
}

const char *ferry_client_errmsg(const ferry_client_t *cc)
{
    if (cc == NULL)
        return "no client";
    if (tls_err_client == cc->serial)
        return tls_err_msg;
    ferry_client_t *c = (ferry_client_t *)cc;
    pthread_mutex_lock(&c->mu);
    snprintf(tls_err_msg, sizeof tls_err_msg, "%s", c->conn_msg);
    pthread_mutex_unlock(&c->mu);
    tls_err_client = c->serial;
    return tls_err_msg;
}

int client_check_name(ferry_client_t *c, const char *what, const char *name)
{
    if (name == NULL)
        return client_fail(c, FERRY_EINVAL, "missing %s name", what);
    if (proto_name_valid(name) != 0)
        return client_fail(c, FERRY_EINVAL,
                           "invalid %s name '%.300s': names are 1-255 bytes of A-Z a-z 0-9 "
                           ". _ - : /",
                           what, name);
    return 0;
}

/* ---- time and waiting ---- */

static __thread const ferry_client_t *tls_io_client;

int client_in_io_thread(const ferry_client_t *c)
{
    return tls_io_client == c;
}

uint64_t client_deadline(const ferry_client_t *c, int timeout_ms)
{
    uint64_t ms = timeout_ms < 0 ? c->request_timeout_ms : (uint64_t)timeout_ms;
    return clock_mono_ns() + ms * 1000000u;
}

int client_cond_init(pthread_cond_t *cond)
{
    pthread_condattr_t a;
    if (pthread_condattr_init(&a) != 0)
        return FERRY_ENOMEM;
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cond, &a);
    pthread_condattr_destroy(&a);
    return rc == 0 ? 0 : FERRY_ENOMEM;
}

int client_wait(ferry_client_t *c, pthread_cond_t *cond, uint64_t deadline_ns)
{
    struct timespec ts = {.tv_sec = (time_t)(deadline_ns / 1000000000u),
                          .tv_nsec = (long)(deadline_ns % 1000000000u)};
    return pthread_cond_timedwait(cond, &c->mu, &ts);
}

/* ---- create / connect / close ---- */

/* The producer id: 128 random bits, so that no two clients share one. */
static void make_producer_id(ferry_client_t *c)
{
    size_t got = 0;
    while (got < sizeof c->producer_id) {
        ssize_t n = getrandom(c->producer_id + got, sizeof c->producer_id - got, 0);
        if (n > 0)
            got += (size_t)n;
        else if (n < 0 && errno != EINTR)
            break;
    }
    if (got < sizeof c->producer_id) { /* no getrandom: the clock, pid and address */
        uint64_t a = clock_mono_ns() ^ ((uint64_t)getpid() << 32);
        uint64_t b = (uint64_t)(uintptr_t)c ^ c->serial ^ (uint64_t)time(NULL);
        memcpy(c->producer_id, &a, 8);
        memcpy(c->producer_id + 8, &b, 8);
    }
    memcpy(&c->rng, c->producer_id, sizeof c->rng);
    c->rng |= 1; /* xorshift must not start at 0 */
    memcpy(c->stats.producer_id, c->producer_id, sizeof c->producer_id);
}

void ferry_options_init(ferry_options_t *o)
{
    memset(o, 0, sizeof *o);
}

int ferry_client_create(ferry_client_t **out, const ferry_options_t *o)
{
    if (out == NULL)
        return FERRY_EINVAL;
    ferry_options_t d;
    ferry_options_init(&d);
    if (o == NULL)
        o = &d;
    ferry_client_t *c = ferry_calloc(1, sizeof *c);
    if (c == NULL)
        return FERRY_ENOMEM;
    c->serial = atomic_fetch_add(&client_serial_next, 1);
    c->fd = -1;
    c->wake_fd = -1;
    c->servers_opt = ferry_strdup(o->servers ? o->servers : FERRY_DEFAULT_SERVERS);
    c->client_name = ferry_strdup(o->client_name ? o->client_name : "libferry");
    c->connect_timeout_ms =
        o->connect_timeout_ms ? o->connect_timeout_ms : DEFAULT_CONNECT_TIMEOUT_MS;
    c->request_timeout_ms =
        o->request_timeout_ms ? o->request_timeout_ms : DEFAULT_REQUEST_TIMEOUT_MS;
    c->window = o->window ? o->window : DEFAULT_WINDOW;
    c->max_redirects = o->max_redirects ? o->max_redirects : DEFAULT_MAX_REDIRECTS;
    c->any_node = o->any_node;
    c->max_frame = o->max_frame ? o->max_frame : DEFAULT_MAX_FRAME;
    if (c->max_frame < PROTO_MAX_FRAME_MIN)
        c->max_frame = PROTO_MAX_FRAME_MIN;
    c->max_queued_bytes = o->max_queued_bytes ? o->max_queued_bytes : DEFAULT_MAX_QUEUED_BYTES;
    c->on_error = o->on_error;
    c->on_error_arg = o->on_error_arg;
    c->reconnect = !o->no_reconnect && !o->any_node;
    c->reconnect_timeout_ms =
        o->reconnect_timeout_ms ? o->reconnect_timeout_ms : DEFAULT_RECONNECT_TIMEOUT_MS;
    c->backoff_initial_ms = o->backoff_initial_ms ? o->backoff_initial_ms : DEFAULT_BACKOFF_INITIAL_MS;
    c->backoff_max_ms = o->backoff_max_ms ? o->backoff_max_ms : DEFAULT_BACKOFF_MAX_MS;
    if (c->backoff_max_ms < c->backoff_initial_ms)
        c->backoff_max_ms = c->backoff_initial_ms;
    c->backoff_ms = c->backoff_initial_ms;
    c->keepalive_ms = !c->reconnect ? 0 : o->keepalive_ms ? o->keepalive_ms : DEFAULT_KEEPALIVE_MS;
    c->fail_when_full = o->fail_when_full;
    c->on_disconnect = o->on_disconnect;
    c->on_reconnect = o->on_reconnect;
    c->conn_cb_arg = o->conn_cb_arg;
    c->tls = o->tls;
    c->tls_ca = o->tls_ca ? ferry_strdup(o->tls_ca) : NULL;
    c->tls_cert = o->tls_cert ? ferry_strdup(o->tls_cert) : NULL;
    c->tls_key = o->tls_key ? ferry_strdup(o->tls_key) : NULL;
    make_producer_id(c);
    c->next_id = 2; /* 1 is the HELLO's */
    buf_init(&c->out);
    buf_init(&c->in);
    buf_init(&c->tls_out);
    buf_init(&c->tls_in);
    umap_init(&c->reqs);
    umap_init(&c->subs);
    umap_init(&c->consumers);
    list_init(&c->inflight);
    list_init(&c->async_q);
    list_init(&c->pool);
    list_init(&c->all_subs);
    int rc = 0;
    if (c->servers_opt == NULL || c->client_name == NULL || (o->tls_ca && !c->tls_ca) ||
        (o->tls_cert && !c->tls_cert) || (o->tls_key && !c->tls_key))
        rc = FERRY_ENOMEM;
    if (rc == 0 && strlen(c->client_name) > PROTO_NAME_MAX)
        rc = FERRY_EINVAL;
    if (rc == 0) {
        c->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (c->wake_fd < 0)
            rc = FERRY_ENOMEM;
    }
    if (rc == 0 && pthread_mutex_init(&c->mu, NULL) != 0)
        rc = FERRY_ENOMEM;
    if (rc == 0 && client_cond_init(&c->async_cond) != 0) {
        pthread_mutex_destroy(&c->mu);
        rc = FERRY_ENOMEM;
    }
    if (rc != 0) {
        if (c->wake_fd >= 0)
            close(c->wake_fd);
        ferry_free(c->servers_opt);
        ferry_free(c->client_name);
        ferry_free(c->tls_ca);
        ferry_free(c->tls_cert);
        ferry_free(c->tls_key);
        ferry_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* Reset the per-connection state for a new, open connection (locked). */
static int adopt_connection_locked(ferry_client_t *c, const struct conn *info, struct buf *extra)
{
    c->info = *info;
    c->fd = info->fd;
    c->out.len = 0;
    c->out_off = 0;
    c->out_total = 0;
    c->written_total = 0;
    c->in.len = 0;
    c->conn_code = 0;
    c->conn_msg[0] = '\0';
    c->notice[0] = '\0';
    c->redirects = 0;
    c->wake_pending = 0;
    c->io_polling = 0;
    c->state = CLIENT_READY;
    c->connected_ns = clock_mono_ns();
    c->rx_ns = c->connected_ns;
    c->ping_ns = 0;
    c->stats.connects++;
    failover_learn_locked(c, info);
    return buf_append(&c->in, extra->data, extra->len);
}

static void *io_entry(void *arg)
{
    ferry_client_t *c = arg;
    tls_io_client = c;
    return io_main(c);
}

static int start_io_thread(ferry_client_t *c)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old); /* signals go to the application's threads */
    int rc = pthread_create(&c->io, NULL, io_entry, c);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0)
        return FERRY_ENOMEM;
    c->io_running = 1;
    return 0;
}

/* Dial the servers: one round without reconnection, else until one accepts
 * or reconnect_timeout_ms passes (failover.c). */
static int dial_servers(ferry_client_t *c, struct conn *info, struct buf *extra, size_t *used)
{
    char msg[CLIENT_MSG_MAX];
    uint64_t deadline = clock_mono_ns() + (uint64_t)c->reconnect_timeout_ms * 1000000u;
    int rc = failover_dial(c, NULL, deadline, !c->reconnect, info, extra, used, msg, sizeof msg);
    if (rc != 0)
        return client_fail(c, rc, "%s", msg);
    return 0;
}

/* Load the TLS settings once, if TLS is on (the option, or a ferrys:// or
 * tls: address in the list). */
static int load_tls(ferry_client_t *c)
{
    for (size_t i = 0; i < c->nservers; i++)
        c->tls |= conn_address_tls(c->servers[i]);
    if (!c->tls || c->tls_ctx != NULL)
        return 0;
    struct tls_settings s = {.cert_file = c->tls_cert,
                             .key_file = c->tls_key,
                             .ca_file = c->tls_ca,
                             .verify = TLS_VERIFY_REQUIRED,
                             .min_version = 12};
    struct ferry_err err;
    int rc = tls_ctx_new(&c->tls_ctx, TLS_CLIENT, &s, &err);
    if (rc != 0)
        return client_fail(c, FERRY_EINVAL, "TLS: %s", err.msg);
    return 0;
}

int ferry_client_connect(ferry_client_t *c)
{
    if (client_in_io_thread(c))
        return client_fail(c, FERRY_EDEADLK, "ferry_client_connect called from a callback");
    pthread_mutex_lock(&c->mu);
    if (c->state == CLIENT_READY || c->state == CLIENT_REDIRECTING ||
        c->state == CLIENT_RECONNECTING) {
        pthread_mutex_unlock(&c->mu);
        return client_fail(c, FERRY_ESTATE, "already connected to %s", c->info.address);
    }
    if (c->state == CLIENT_CLOSING || c->connecting) {
        pthread_mutex_unlock(&c->mu);
        return client_fail(c, FERRY_ESTATE, "client is %s",
                           c->connecting ? "already connecting" : "closing");
    }
    c->connecting = 1;
    int joined = c->io_running;
    c->io_running = 0;
    pthread_mutex_unlock(&c->mu);
    if (joined) /* the I/O thread of a failed connection ends by itself */
        pthread_join(c->io, NULL);

    int rc = 0;
    if (c->servers == NULL) {
        char msg[CONN_MSG_MAX];
        rc = conn_parse_servers(c->servers_opt, &c->servers, &c->nservers, msg, sizeof msg);
        if (rc != 0)
            client_fail(c, rc, "%s", rc == FERRY_ENOMEM ? ferry_strerror(rc) : msg);
        c->nservers_given = c->nservers;
    }
    if (rc == 0)
        rc = load_tls(c);
    struct conn info;
    struct buf extra;
    buf_init(&extra);
    size_t used = 0;
    if (rc == 0)
        rc = dial_servers(c, &info, &extra, &used);
    if (rc != 0) {
        buf_free(&extra);
        pthread_mutex_lock(&c->mu);
        c->connecting = 0;
        pthread_mutex_unlock(&c->mu);
        return rc;
    }
    pthread_mutex_lock(&c->mu);
    c->connecting = 0;
    rc = adopt_connection_locked(c, &info, &extra);
    if (rc == 0)
        rc = start_io_thread(c);
    if (rc != 0) {
        client_drop_conn_locked(c);
        c->state = CLIENT_IDLE;
    } else {
        if (used != SIZE_MAX)
            c->server_idx = used;
        c->ever_connected = 1;
    }
    pthread_mutex_unlock(&c->mu);
    buf_free(&extra);
    if (rc != 0)
        return client_fail(c, rc, "cannot start the client's I/O thread: %s", ferry_strerror(rc));
    return 0;
}

/* Give buffered acks a moment to reach the server before closing (locked). */
static void close_flush_locked(ferry_client_t *c)
{
    uint64_t deadline = clock_mono_ns() + (uint64_t)CLOSE_FLUSH_MS * 1000000u;
    while (c->state == CLIENT_READY && client_out_pending(c)) {
        client_flush_locked(c);
        if (!client_out_pending(c) || c->state != CLIENT_READY)
            break;
        client_wake_locked(c);
        c->flush_waiters++;
        int w = client_wait(c, &c->async_cond, deadline);
        c->flush_waiters--;
        if (w == ETIMEDOUT)
            break;
    }
}

int ferry_client_close(ferry_client_t *c)
{
    if (c == NULL)
        return 0;
    if (client_in_io_thread(c))
        return client_fail(c, FERRY_EDEADLK, "ferry_client_close called from a callback");
    pthread_mutex_lock(&c->mu);
    close_flush_locked(c);
    c->state = CLIENT_CLOSING;
    if (c->fd >= 0)
        shutdown(c->fd, SHUT_RDWR);
    client_wake_locked(c);
    int running = c->io_running;
    c->io_running = 0;
    pthread_mutex_unlock(&c->mu);
    if (running)
        pthread_join(c->io, NULL);

    /* The I/O thread completed every request and ended every subscription. */
    struct list *pos, *tmp;
    list_foreach_safe(pos, tmp, &c->all_subs)
    {
        struct ferry_sub *s = list_entry(pos, struct ferry_sub, link);
        s->released = 1;
        s->dispatching = 0;
        s->waiters = 0;
        sub_maybe_free_locked(c, s);
    }
    list_foreach_safe(pos, tmp, &c->pool)
    {
        struct req *r = list_entry(pos, struct req, link);
        client_req_cleanup(r);
        ferry_free(r);
    }
    client_drop_conn_locked(c);
    close(c->wake_fd);
    buf_free(&c->out);
    buf_free(&c->in);
    buf_free(&c->tls_out);
    buf_free(&c->tls_in);
    tls_ctx_free(c->tls_ctx);
    ferry_free(c->tls_ca);
    ferry_free(c->tls_cert);
    ferry_free(c->tls_key);
    ferry_free(c->disp);
    umap_free(&c->reqs);
    umap_free(&c->subs);
    umap_free(&c->consumers);
    if (c->servers)
        conn_free_servers(c->servers, c->nservers);
    ferry_free(c->servers_opt);
    ferry_free(c->client_name);
    pthread_cond_destroy(&c->async_cond);
    pthread_mutex_destroy(&c->mu);
    ferry_free(c);
    return 0;
}

int ferry_client_stats(ferry_client_t *c, ferry_client_stats_t *out)
{
    if (c == NULL || out == NULL)
        return FERRY_EINVAL;
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    pthread_mutex_unlock(&c->mu);
    return 0;
}

int ferry_client_server_info(ferry_client_t *c, ferry_server_info_t *out)
{
    pthread_mutex_lock(&c->mu);
    int rc = client_usable_locked(c);
    if (rc == 0) {
        memset(out, 0, sizeof *out);
        snprintf(out->address, sizeof out->address, "%s", c->info.address);
        snprintf(out->version, sizeof out->version, "%s", c->info.server_version);
        snprintf(out->role, sizeof out->role, "%s", c->info.role);
        out->node_id = c->info.node_id;
        out->max_frame = c->info.max_frame;
        out->max_message = c->info.max_message;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- output ---- */

int client_usable_locked(ferry_client_t *c)
{
    switch (c->state) {
    case CLIENT_READY:
    case CLIENT_REDIRECTING:
    case CLIENT_RECONNECTING: /* requests wait in the output and go out on the new connection */
        return 0;
    case CLIENT_IDLE:
        return client_fail(c, FERRY_ESTATE, "not connected");
    case CLIENT_BROKEN:
        return client_fail(c, c->conn_code, "%s", c->conn_msg);
    case CLIENT_CLOSING:
        break;
    }
    return client_fail(c, FERRY_ECLOSED, "client is closing");
}

void client_wake_locked(ferry_client_t *c)
{
    if (c->wake_pending)
        return;
    c->wake_pending = 1;
    uint64_t one = 1;
    ssize_t n = write(c->wake_fd, &one, sizeof one);
    (void)n; /* a full counter means the I/O thread is already woken */
}

int client_out_pending(const ferry_client_t *c)
{
    return c->out_off < c->out.len || c->tls_out_off < c->tls_out.len;
}

void client_drop_conn_locked(ferry_client_t *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    tls_conn_free(c->info.tls);
    c->info.tls = NULL;
    c->tls_out.len = 0;
    c->tls_out_off = 0;
}

/* Send b from *off on as far as the socket takes it, counting into
 * *written. 0 when all is sent; -1 when the socket is full (the I/O thread
 * polls for POLLOUT) or the connection failed (reported). */
static int send_some_locked(ferry_client_t *c, const struct buf *b, size_t *off, uint64_t *written)
{
    while (*off < b->len) {
        ssize_t n = send(c->fd, b->data + *off, b->len - *off, MSG_NOSIGNAL);
        if (n > 0) {
            *off += (size_t)n;
            if (written != NULL)
                *written += (uint64_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (c->io_polling) /* so that it polls for POLLOUT */
                client_wake_locked(c);
            return -1;
        }
        io_fail_locked(c, FERRY_ECONN, "write to %s failed: %s", c->info.address,
                       n == 0 ? "no progress" : strerror(errno));
        return -1;
    }
    return 0;
}

/* TLS: encrypt the pending plaintext, then send ciphertext as the socket
 * takes it. Plaintext counts as written once encrypted: the ciphertext left
 * over keeps the I/O thread polling for POLLOUT until it is out. */
static void tls_flush_locked(ferry_client_t *c)
{
    struct tls_conn *tls = c->info.tls;
    if (c->out_off < c->out.len) {
        size_t n = c->out.len - c->out_off;
        if (tls_conn_encrypt(tls, c->out.data + c->out_off, n) != 0) {
            io_fail_locked(c, FERRY_EPROTO, "TLS with %s: %s", c->info.address,
                           tls_conn_error(tls));
            return;
        }
        c->written_total += n;
        c->out.len = 0;
        c->out_off = 0;
    }
    if (tls_conn_output_pending(tls) > 0) {
        if (c->tls_out_off > 0) {
            memmove(c->tls_out.data, c->tls_out.data + c->tls_out_off,
                    c->tls_out.len - c->tls_out_off);
            c->tls_out.len -= c->tls_out_off;
            c->tls_out_off = 0;
        }
        if (tls_conn_take_output(tls, &c->tls_out) != 0) {
            io_fail_locked(c, FERRY_ENOMEM, "out of memory encrypting for %s", c->info.address);
            return;
        }
    }
    if (send_some_locked(c, &c->tls_out, &c->tls_out_off, NULL) != 0)
        return;
    c->tls_out.len = 0;
    c->tls_out_off = 0;
    if (c->tls_out.cap > 4 * 1024 * 1024)
        buf_free(&c->tls_out);
}

void client_flush_locked(ferry_client_t *c)
{
    if (c->state != CLIENT_READY)
        return;
    if (c->info.tls != NULL) {
        tls_flush_locked(c);
        return;
    }
    if (send_some_locked(c, &c->out, &c->out_off, &c->written_total) != 0)
        return;
    c->out.len = 0;
    c->out_off = 0;
}

void client_kick_locked(ferry_client_t *c, int nagle)
{
    size_t pending = c->out.len - c->out_off;
    if (pending == 0)
        return;
    if (pending >= CLIENT_FLUSH_BYTES) {
        client_flush_locked(c);
        return;
    }
    if (!c->io_polling)
        return; /* the I/O thread is busy and writes before it polls again */
    if (nagle && !list_empty(&c->async_q)) {
        struct req *oldest = list_entry(c->async_q.next, struct req, alink);
        if (oldest->stream_end <= c->written_total)
            return; /* its reply will wake the I/O thread, which writes then */
    }
    client_wake_locked(c);
}

int client_append_locked(ferry_client_t *c, const uint8_t *p, size_t n)
{
    if (c->out_off > 0 && c->out_off >= c->out.len / 2) {
        memmove(c->out.data, c->out.data + c->out_off, c->out.len - c->out_off);
        c->out.len -= c->out_off;
        c->out_off = 0;
    }
    int rc = buf_append(&c->out, p, n);
    if (rc == 0)
        c->out_total += n;
    return rc;
}

/* ---- requests ---- */

void client_frame_set_id(struct buf *frame, uint32_t id)
{
    put_u32(frame->data + 8, id);
}

void client_req_init(struct req *r, uint8_t op)
{
    memset(r, 0, sizeof *r);
    list_init(&r->link);
    list_init(&r->alink);
    buf_init(&r->frame);
    buf_init(&r->reply);
    r->op = op;
}

void client_req_cleanup(struct req *r)
{
    buf_free(&r->frame);
    buf_free(&r->reply);
    ferry_free(r->msg);
    r->msg = NULL;
}

struct req *client_req_get_locked(ferry_client_t *c)
{
    struct req *r;
    if (!list_empty(&c->pool)) {
        r = list_entry(c->pool.next, struct req, link);
        list_remove(&r->link);
        c->pool_count--;
    } else {
        r = ferry_malloc(sizeof *r);
        if (r == NULL)
            return NULL;
        client_req_init(r, 0);
    }
    return r;
}

void client_req_put_locked(ferry_client_t *c, struct req *r)
{
    ferry_free(r->msg);
    r->msg = NULL;
    if (c->pool_count >= CLIENT_POOL_MAX || r->frame.cap > 4 * CLIENT_FLUSH_BYTES) {
        client_req_cleanup(r);
        ferry_free(r);
        return;
    }
    struct buf keep = r->frame;
    keep.len = 0;
    client_req_init(r, 0);
    r->frame = keep;
    list_insert_tail(&c->pool, &r->link);
    c->pool_count++;
}

static uint32_t next_request_id_locked(ferry_client_t *c)
{
    for (;;) {
        uint32_t id = c->next_id++;
        if (id != 0 && umap_get(&c->reqs, id) == NULL)
            return id;
    }
}

int client_send_untracked_locked(ferry_client_t *c, struct buf *frame)
{
    client_frame_set_id(frame, next_request_id_locked(c));
    return client_append_locked(c, frame->data, frame->len);
}

int client_submit_locked(ferry_client_t *c, struct req *r)
{
    if (c->info.max_message != 0 && r->payload_len > c->info.max_message)
        return client_fail(c, FERRY_ETOOBIG,
                           "message of %zu bytes is over the limit of %u bytes of server %s",
                           r->payload_len, c->info.max_message, c->info.address);
    uint32_t id = next_request_id_locked(c);
    client_frame_set_id(&r->frame, id);
    r->id = id;
    if (r->seq_off != 0) { /* numbered here, so that the server sees them in order */
        r->seq = ++c->next_seq;
        put_u64(r->frame.data + r->seq_off, r->seq);
    }
    if (umap_put(&c->reqs, id, r) != 0)
        return client_fail(c, FERRY_ENOMEM, "out of memory registering a request");
    if (client_append_locked(c, r->frame.data, r->frame.len) != 0) {
        umap_remove(&c->reqs, id);
        return client_fail(c, FERRY_ENOMEM, "out of memory buffering a request");
    }
    r->stream_end = c->out_total;
    r->sent_ns = clock_mono_ns();
    r->deadline_ns = r->sent_ns + (uint64_t)c->request_timeout_ms * 1000000u;
    list_insert_tail(&c->inflight, &r->link);
    if (r->kind == REQ_ASYNC)
        list_insert_tail(&c->async_q, &r->alink);
    return 0;
}

void client_forget_locked(ferry_client_t *c, struct req *r)
{
    umap_remove(&c->reqs, r->id);
    list_remove(&r->link);
    list_remove(&r->alink);
}

int client_call(ferry_client_t *c, struct req *r)
{
    if (client_in_io_thread(c))
        return r->status =
                   client_fail(c, FERRY_EDEADLK, "%s would wait for a reply inside a callback",
                               proto_op_name(r->op));
    pthread_cond_t cond;
    if (client_cond_init(&cond) != 0)
        return r->status = client_fail(c, FERRY_ENOMEM, "out of memory");
    r->kind = REQ_SYNC;
    r->cond = &cond;
    pthread_mutex_lock(&c->mu);
    int rc = client_usable_locked(c);
    if (rc == 0)
        rc = client_submit_locked(c, r);
    if (rc != 0) {
        pthread_mutex_unlock(&c->mu);
        pthread_cond_destroy(&cond);
        return r->status = rc;
    }
    client_flush_locked(c);
    while (!r->done) {
        if (client_wait(c, &cond, r->deadline_ns) == ETIMEDOUT && !r->done) {
            client_forget_locked(c, r);
            if (r->resend_ns != 0) {
                r->resend_ns = 0;
                c->resends_due--;
            }
            r->status = FERRY_ETIMEDOUT;
            client_fail(c, FERRY_ETIMEDOUT, "no reply to %s from %s within %u ms",
                        proto_op_name(r->op), c->info.address, c->request_timeout_ms);
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    pthread_cond_destroy(&cond);
    if (r->status != 0 && r->status != FERRY_ETIMEDOUT)
        client_fail_msg(c, r->status, r->msg);
    return r->status;
}
