/* test_client.c - libferry against a fake server in the same process.
 *
 * The fake server is a thread with a listening socket on 127.0.0.1 (port 0)
 * that speaks the protocol through src/proto and serves one connection at a
 * time. Its `mode` makes it misbehave in one way per test: redirect with
 * ENOTLEADER, never answer, answer with garbage, close in the middle of a
 * frame, announce an oversized frame, or hold publish replies back to check
 * the in-flight window. Every wait in these tests has a bound, and nothing
 * asserts on timing.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ferry/ferry.h>

#include "proto/proto.h"
#include "util/buf.h"

#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ */
/* The fake server                                                     */
/* ------------------------------------------------------------------ */

enum fake_mode {
    FAKE_NORMAL,
    FAKE_SILENT,            /* never answers PUBLISH/PUSH */
    FAKE_GARBAGE,           /* answers PUBLISH with bytes that are no frame */
    FAKE_CLOSE_MID_FRAME,   /* answers PUBLISH with half a frame, then closes */
    FAKE_OVERSIZE,          /* answers PUBLISH with a header announcing 1 GiB */
    FAKE_REDIRECT_HELLO,    /* answers HELLO with ERROR ENOTLEADER naming `leader` */
    FAKE_REDIRECT_REQUESTS, /* accepts HELLO, answers PUBLISH with ENOTLEADER */
    FAKE_WINDOW,            /* holds PUBLISH replies until 30 ms pass without a request */
};

struct fake {
    enum fake_mode mode;
    char leader[64];
    uint32_t max_message;
    int events;    /* EVENTs/DELIVERYs sent after SUBSCRIBE_OK/CONSUME_OK */
    int end_after; /* send SUB_END after the events */
    int lfd;
    uint16_t port;
    char addr[32];
    pthread_t thread;
    atomic_int stop;
    atomic_int hellos;
    atomic_int publishes;
    atomic_int acks;
    atomic_int noreply_acks;
    atomic_int nacks;
    atomic_int sub_acks;
    atomic_int unsubscribes;
    atomic_int max_outstanding;
    uint64_t next_id;
};

static void send_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        b += w;
        n -= (size_t)w;
    }
}

static void send_buf(int fd, struct buf *b)
{
    send_all(fd, b->data, b->len);
    buf_reset(b);
}

static void send_error(int fd, struct buf *o, uint32_t req, int code, const char *msg,
                       const char *leader)
{
    struct proto_error e;
    memset(&e, 0, sizeof e);
    e.code = code;
    snprintf(e.message, sizeof e.message, "%s", msg);
    snprintf(e.leader, sizeof e.leader, "%s", leader ? leader : "");
    proto_encode_error(o, req, &e);
    send_buf(fd, o);
}

static void send_hello_ok(struct fake *f, int fd, struct buf *o, uint32_t req)
{
    struct proto_hello_ok *h = calloc(1, sizeof *h);
    h->version = PROTO_VERSION;
    snprintf(h->server_version, sizeof h->server_version, "fake-1");
    h->node_id = 42;
    h->max_frame = 1 << 20;
    h->max_message = f->max_message ? f->max_message : 1 << 19;
    snprintf(h->role, sizeof h->role, "leader");
    h->endpoint_count = 1;
    snprintf(h->endpoints[0], sizeof h->endpoints[0], "%s", f->addr);
    proto_encode_hello_ok(o, req, h);
    free(h);
    send_buf(fd, o);
}

static void fill_info(struct proto_info *i, uint8_t kind, const char *name)
{
    memset(i, 0, sizeof *i);
    i->kind = kind;
    snprintf(i->name, sizeof i->name, "%s", name);
    i->capacity = 10;
    i->count = 3;
    i->first_id = 1;
    i->last_id = 3;
    i->clients = 2;
}

/* After SUBSCRIBE_OK / CONSUME_OK: the configured pushes. */
static void send_pushes(struct fake *f, int fd, struct buf *o, int consumer, uint64_t id)
{
    for (int i = 1; i <= f->events; i++) {
        char payload[32];
        snprintf(payload, sizeof payload, "event-%d", i);
        if (consumer) {
            struct proto_delivery d = {.consumer_id = id,
                                       .item_id = (uint64_t)i,
                                       .delivery_count = 1,
                                       .timestamp_ms = 1000,
                                       .payload = (const uint8_t *)payload,
                                       .payload_len = (uint32_t)strlen(payload)};
            proto_encode_delivery(o, &d);
        } else {
            struct proto_event e = {.sub_id = id,
                                    .event_id = (uint64_t)i,
                                    .timestamp_ms = 1000,
                                    .payload = (const uint8_t *)payload,
                                    .payload_len = (uint32_t)strlen(payload)};
            proto_encode_event(o, &e);
        }
    }
    if (f->end_after) {
        struct proto_sub_end e = {.id = id, .code = FERRY_ENOTFOUND};
        snprintf(e.message, sizeof e.message, "channel was deleted");
        proto_encode_sub_end(o, &e);
    }
    send_buf(fd, o);
}

static void flush_held(struct fake *f, int fd, struct buf *o, uint32_t *held, int *nheld)
{
    for (int i = 0; i < *nheld; i++)
        proto_encode_id(o, PROTO_PUBLISH_OK, 0, held[i], ++f->next_id);
    *nheld = 0;
    send_buf(fd, o);
}

/* Answer a PUBLISH/PUSH per the mode; -1 closes the connection, -2 closes
 * its sending side only. */
static int on_publish(struct fake *f, int fd, struct buf *o, const struct proto_header *h,
                      const uint8_t *body, size_t len, uint32_t *held, int *nheld)
{
    struct proto_publish m;
    assert_int_equal(proto_decode_publish(body, len, &m), 0);
    atomic_fetch_add(&f->publishes, 1);
    switch (f->mode) {
    case FAKE_SILENT:
        return 0;
    case FAKE_GARBAGE:
        send_all(fd, "this is not a frame at all", 26);
        return 0;
    case FAKE_CLOSE_MID_FRAME: { /* half a reply, then FIN (not RST: see serve) */
        proto_encode_id(o, PROTO_PUBLISH_OK, 0, h->request_id, 1);
        send_all(fd, o->data, 10);
        buf_reset(o);
        return -2;
    }
    case FAKE_OVERSIZE: {
        uint8_t hdr[12];
        put_u32(hdr, 1u << 30);
        hdr[4] = PROTO_VERSION;
        hdr[5] = PROTO_PUBLISH_OK;
        put_u16(hdr + 6, 0);
        put_u32(hdr + 8, h->request_id);
        send_all(fd, hdr, sizeof hdr);
        return 0;
    }
    case FAKE_REDIRECT_REQUESTS:
        send_error(fd, o, h->request_id, FERRY_ENOTLEADER, "this node is a follower", f->leader);
        return 0;
    case FAKE_WINDOW:
        held[(*nheld)++] = h->request_id;
        if (*nheld > atomic_load(&f->max_outstanding))
            atomic_store(&f->max_outstanding, *nheld);
        return 0;
    default:
        break;
    }
    if (strcmp(m.name, "full") == 0) {
        send_error(fd, o, h->request_id, FERRY_EFULL, "queue 'full' is full (capacity 10)", NULL);
        return 0;
    }
    proto_encode_id(o, PROTO_PUBLISH_OK, 0, h->request_id,
                    (m.pflags & PROTO_PUB_TRANSIENT) ? 0 : ++f->next_id);
    send_buf(fd, o);
    return 0;
}

static void on_ack(struct fake *f, int fd, struct buf *o, const struct proto_header *h,
                   const uint8_t *body, size_t len)
{
    struct proto_ack a;
    assert_int_equal(proto_decode_ack(body, len, &a), 0);
    if (a.item_id == 999) { /* an item nobody has */
        send_error(fd, o, h->request_id, FERRY_ENOTFOUND, "no delivery 999 for this consumer",
                   NULL);
        return;
    }
    atomic_fetch_add(h->op == PROTO_ACK ? &f->acks : &f->nacks, 1);
    if (h->flags & PROTO_F_NOREPLY) {
        atomic_fetch_add(&f->noreply_acks, 1);
        return;
    }
    proto_encode_empty(o, PROTO_OK, 0, h->request_id);
    send_buf(fd, o);
}

static int on_frame(struct fake *f, int fd, struct buf *o, const struct proto_header *h,
                    const uint8_t *body, size_t len, uint32_t *held, int *nheld)
{
    switch (h->op) {
    case PROTO_HELLO:
        atomic_fetch_add(&f->hellos, 1);
        if (f->mode == FAKE_REDIRECT_HELLO) {
            send_error(fd, o, h->request_id, FERRY_ENOTLEADER, "not the leader", f->leader);
            return -1;
        }
        send_hello_ok(f, fd, o, h->request_id);
        return 0;
    case PROTO_PING:
        proto_encode_empty(o, PROTO_PONG, 0, h->request_id);
        send_buf(fd, o);
        return 0;
    case PROTO_PUBLISH:
    case PROTO_PUSH:
        return on_publish(f, fd, o, h, body, len, held, nheld);
    case PROTO_SUBSCRIBE: {
        struct proto_subscribe_ok ok = {.sub_id = 7, .next_event_id = 1};
        proto_encode_subscribe_ok(o, h->request_id, &ok);
        send_buf(fd, o);
        send_pushes(f, fd, o, 0, 7);
        return 0;
    }
    case PROTO_CONSUME:
        proto_encode_id(o, PROTO_CONSUME_OK, 0, h->request_id, 9);
        send_buf(fd, o);
        send_pushes(f, fd, o, 1, 9);
        return 0;
    case PROTO_ACK:
    case PROTO_NACK:
        on_ack(f, fd, o, h, body, len);
        return 0;
    case PROTO_SUB_ACK:
        atomic_fetch_add(&f->sub_acks, 1);
        if (!(h->flags & PROTO_F_NOREPLY)) {
            proto_encode_empty(o, PROTO_OK, 0, h->request_id);
            send_buf(fd, o);
        }
        return 0;
    case PROTO_UNSUBSCRIBE:
    case PROTO_CANCEL:
        atomic_fetch_add(&f->unsubscribes, 1);
        proto_encode_empty(o, PROTO_OK, 0, h->request_id);
        send_buf(fd, o);
        return 0;
    case PROTO_DELETE: {
        char name[PROTO_NAME_MAX + 1];
        assert_int_equal(proto_decode_name(body, len, name, sizeof name), 0);
        if (strcmp(name, "nosuch") == 0) {
            send_error(fd, o, h->request_id, FERRY_ENOTFOUND, "no resource named 'nosuch'", NULL);
            return 0;
        }
        proto_encode_empty(o, PROTO_OK, 0, h->request_id);
        send_buf(fd, o);
        return 0;
    }
    case PROTO_CREATE:
        proto_encode_empty(o, PROTO_OK, 0, h->request_id);
        send_buf(fd, o);
        return 0;
    case PROTO_INFO: {
        struct proto_info i;
        char name[PROTO_NAME_MAX + 1];
        assert_int_equal(proto_decode_name(body, len, name, sizeof name), 0);
        fill_info(&i, PROTO_KIND_QUEUE, name);
        proto_encode_info_ok(o, h->request_id, &i);
        send_buf(fd, o);
        return 0;
    }
    case PROTO_LIST: {
        struct proto_info v[2];
        fill_info(&v[0], PROTO_KIND_CHANNEL, "news");
        fill_info(&v[1], PROTO_KIND_QUEUE, "jobs");
        proto_encode_list_ok(o, h->request_id, v, 2);
        send_buf(fd, o);
        return 0;
    }
    case PROTO_STATUS: {
        struct proto_status *st = calloc(1, sizeof *st);
        st->count = 2;
        snprintf(st->kv[0].key, sizeof st->kv[0].key, "role");
        snprintf(st->kv[0].value, sizeof st->kv[0].value, "leader");
        snprintf(st->kv[1].key, sizeof st->kv[1].key, "connections");
        snprintf(st->kv[1].value, sizeof st->kv[1].value, "1");
        proto_encode_status_ok(o, h->request_id, st);
        free(st);
        send_buf(fd, o);
        return 0;
    }
    default:
        send_error(fd, o, h->request_id, FERRY_ENOTSUP, "unknown op", NULL);
        return 0;
    }
}

static void drain_until_closed(struct fake *f, int fd)
{
    char sink[4096];
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 30) == 0)
            continue;
        ssize_t r = recv(fd, sink, sizeof sink, 0);
        if (r == 0 || (r < 0 && errno != EINTR))
            return;
    }
}

static void serve(struct fake *f, int fd)
{
    struct buf in, o;
    buf_init(&in);
    buf_init(&o);
    uint32_t held[4096];
    int nheld = 0;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, 30);
        if (n == 0) {
            if (nheld > 0)
                flush_held(f, fd, &o, held, &nheld);
            continue;
        }
        buf_reserve(&in, 65536);
        ssize_t r = recv(fd, in.data + in.len, in.cap - in.len, 0);
        if (r <= 0)
            break;
        in.len += (size_t)r;
        size_t off = 0;
        int closing = 0;
        for (;;) {
            struct proto_header h;
            size_t flen;
            if (proto_frame_check(in.data + off, in.len - off, 1 << 24, &h, &flen) != 0)
                break;
            closing = on_frame(f, fd, &o, &h, in.data + off + PROTO_HEADER_SIZE,
                               flen - PROTO_HEADER_SIZE, held, &nheld);
            off += flen;
            if (closing < 0)
                break;
        }
        buf_consume(&in, off);
        if (closing == -2) {
            /* Closing with unread input would send RST and the client could
             * lose the half frame; send FIN and read until the client closes. */
            shutdown(fd, SHUT_WR);
            drain_until_closed(f, fd);
        }
        if (closing < 0)
            break;
    }
    buf_free(&in);
    buf_free(&o);
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = f->lfd, .events = POLLIN};
        if (poll(&p, 1, 20) <= 0)
            continue;
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        serve(f, fd);
        close(fd);
    }
    return NULL;
}

static uint16_t listen_any(int *lfd)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t len = sizeof a;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *lfd = fd;
    return ntohs(a.sin_port);
}

static struct fake *fake_new(enum fake_mode mode)
{
    struct fake *f = calloc(1, sizeof *f);
    f->mode = mode;
    f->port = listen_any(&f->lfd);
    assert_int_equal(listen(f->lfd, 8), 0);
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%u", f->port);
    return f;
}

static void fake_start(struct fake *f)
{
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_free(struct fake *f)
{
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    close(f->lfd);
    free(f);
}

/* An address nothing listens on: bound and closed again. */
static void refused_address(char *out, size_t cap)
{
    int fd;
    uint16_t port = listen_any(&fd);
    close(fd);
    snprintf(out, cap, "127.0.0.1:%u", port);
}

static ferry_client_t *client_for(const char *servers, uint32_t window, uint32_t timeout_ms)
{
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = servers;
    o.window = window;
    o.request_timeout_ms = timeout_ms;
    o.connect_timeout_ms = 2000;
    o.no_reconnect = 1; /* this suite covers a lost connection failing everything; the
                           reconnecting client is test_client_failover.c's */
    ferry_client_t *c = NULL;
    assert_int_equal(ferry_client_create(&c, &o), 0);
    return c;
}

static ferry_client_t *connected(struct fake *f, uint32_t window, uint32_t timeout_ms)
{
    ferry_client_t *c = client_for(f->addr, window, timeout_ms);
    int rc = ferry_client_connect(c);
    if (rc != 0)
        fail_msg("connect: %s", ferry_client_errmsg(c));
    return c;
}

/* A counter that callbacks bump and tests wait on, with a bound. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int n;
};

static void waiter_init(struct waiter *w)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    w->n = 0;
}

static void waiter_bump(struct waiter *w)
{
    pthread_mutex_lock(&w->mu);
    w->n++;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
}

/* Wait until n reaches want (at most 10 s); returns the count reached. */
static int waiter_wait(struct waiter *w, int want)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&w->mu);
    while (w->n < want && pthread_cond_timedwait(&w->cond, &w->mu, &ts) != ETIMEDOUT) {
    }
    int n = w->n;
    pthread_mutex_unlock(&w->mu);
    return n;
}

static void waiter_destroy(struct waiter *w)
{
    pthread_cond_destroy(&w->cond);
    pthread_mutex_destroy(&w->mu);
}

/* ------------------------------------------------------------------ */
/* Connecting                                                          */
/* ------------------------------------------------------------------ */

static void test_connect_skips_refusing_server(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    fake_start(f);
    char refused[32], list[80];
    refused_address(refused, sizeof refused);
    snprintf(list, sizeof list, "%s,%s", refused, f->addr);
    ferry_client_t *c = client_for(list, 0, 2000);
    assert_int_equal(ferry_client_connect(c), 0);
    ferry_server_info_t si;
    assert_int_equal(ferry_client_server_info(c, &si), 0);
    assert_string_equal(si.address, f->addr);
    assert_string_equal(si.role, "leader");
    assert_int_equal(si.node_id, 42);
    assert_int_equal(ferry_client_connect(c), FERRY_ESTATE);
    assert_int_equal(ferry_ping(c, NULL), 0);
    assert_int_equal(ferry_client_close(c), 0);
    fake_free(f);
}

static void test_connect_all_refuse_names_each(void **state)
{
    (void)state;
    char a[32], b[32], list[80];
    refused_address(a, sizeof a);
    refused_address(b, sizeof b);
    snprintf(list, sizeof list, "%s,%s", a, b);
    ferry_client_t *c = client_for(list, 0, 2000);
    assert_int_equal(ferry_client_connect(c), FERRY_ECONN);
    const char *msg = ferry_client_errmsg(c);
    assert_non_null(strstr(msg, a));
    assert_non_null(strstr(msg, b));
    assert_non_null(strstr(msg, "refused"));
    assert_int_equal(ferry_publish(c, "x", "y", 1, 0, NULL), FERRY_ESTATE);
    ferry_client_close(c);
}

static void test_bad_servers_list(void **state)
{
    (void)state;
    ferry_client_t *c = client_for("127.0.0.1:7878,,x", 0, 2000);
    assert_int_equal(ferry_client_connect(c), FERRY_EINVAL);
    assert_non_null(strstr(ferry_client_errmsg(c), "empty address"));
    ferry_client_close(c);
    c = client_for("localhost:99999", 0, 2000);
    assert_int_equal(ferry_client_connect(c), FERRY_EINVAL);
    assert_non_null(strstr(ferry_client_errmsg(c), "port"));
    ferry_client_close(c);
}

static void test_hello_redirect_followed(void **state)
{
    (void)state;
    struct fake *leader = fake_new(FAKE_NORMAL);
    struct fake *follower = fake_new(FAKE_REDIRECT_HELLO);
    snprintf(follower->leader, sizeof follower->leader, "%s", leader->addr);
    fake_start(leader);
    fake_start(follower);
    ferry_client_t *c = connected(follower, 0, 2000);
    ferry_server_info_t si;
    assert_int_equal(ferry_client_server_info(c, &si), 0);
    assert_string_equal(si.address, leader->addr);
    uint64_t id = 0;
    assert_int_equal(ferry_publish(c, "news", "hi", 2, 0, &id), 0);
    assert_int_equal(id, 1);
    assert_int_equal(atomic_load(&follower->hellos), 1);
    assert_int_equal(atomic_load(&leader->publishes), 1);
    ferry_client_close(c);
    fake_free(follower);
    fake_free(leader);
}

static void test_request_redirect_resends_to_leader(void **state)
{
    (void)state;
    struct fake *leader = fake_new(FAKE_NORMAL);
    struct fake *follower = fake_new(FAKE_REDIRECT_REQUESTS);
    snprintf(follower->leader, sizeof follower->leader, "%s", leader->addr);
    fake_start(leader);
    fake_start(follower);
    ferry_client_t *c = connected(follower, 0, 2000);
    uint64_t id = 0;
    assert_int_equal(ferry_publish(c, "news", "hi", 2, 0, &id), 0);
    assert_int_equal(id, 1);
    assert_int_equal(atomic_load(&follower->publishes), 1);
    assert_int_equal(atomic_load(&leader->publishes), 1);
    ferry_server_info_t si;
    assert_int_equal(ferry_client_server_info(c, &si), 0);
    assert_string_equal(si.address, leader->addr);
    ferry_client_close(c);
    fake_free(follower);
    fake_free(leader);
}

static void test_redirect_loop_is_bounded(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_REDIRECT_HELLO);
    snprintf(f->leader, sizeof f->leader, "%s", f->addr); /* points at itself */
    fake_start(f);
    ferry_client_t *c = client_for(f->addr, 0, 2000);
    assert_int_equal(ferry_client_connect(c), FERRY_ENOTLEADER);
    assert_non_null(strstr(ferry_client_errmsg(c), "redirected to"));
    assert_int_equal(atomic_load(&f->hellos), 4); /* the first try and 3 redirects */
    ferry_client_close(c);
    fake_free(f);
}

/* ------------------------------------------------------------------ */
/* Publishing                                                          */
/* ------------------------------------------------------------------ */

static void test_blocking_publish_and_push_get_ids(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    fake_start(f);
    ferry_client_t *c = connected(f, 0, 2000);
    uint64_t id = 0;
    assert_int_equal(ferry_publish(c, "news", "one", 3, 0, &id), 0);
    assert_int_equal(id, 1);
    assert_int_equal(ferry_publish(c, "news", "two", 3, 0, &id), 0);
    assert_int_equal(id, 2);
    assert_int_equal(ferry_publish(c, "news", "hb", 2, FERRY_TRANSIENT, &id), 0);
    assert_int_equal(id, 0);
    assert_int_equal(ferry_push(c, "jobs", "", 0, &id), 0);
    assert_int_equal(id, 3);
    ferry_client_close(c);
    fake_free(f);
}

static void test_server_error_reaches_caller(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    fake_start(f);
    ferry_client_t *c = connected(f, 0, 2000);
    assert_int_equal(ferry_push(c, "full", "x", 1, NULL), FERRY_EFULL);
    assert_string_equal(ferry_client_errmsg(c), "queue 'full' is full (capacity 10)");
    assert_int_equal(ferry_delete(c, "nosuch"), FERRY_ENOTFOUND);
    assert_string_equal(ferry_client_errmsg(c), "no resource named 'nosuch'");
    /* the connection is still good */
    uint64_t id;
    assert_int_equal(ferry_push(c, "jobs", "x", 1, &id), 0);
    ferry_client_close(c);
    fake_free(f);
}

static void test_local_validation(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    f->max_message = 1000;
    fake_start(f);
    ferry_client_t *c = connected(f, 0, 2000);
    char big[2000];
    memset(big, 'x', sizeof big);
    assert_int_equal(ferry_publish(c, "news", big, sizeof big, 0, NULL), FERRY_ETOOBIG);
    assert_non_null(strstr(ferry_client_errmsg(c), "limit of 1000 bytes"));
    assert_int_equal(ferry_publish(c, "bad name!", "x", 1, 0, NULL), FERRY_EINVAL);
    assert_non_null(strstr(ferry_client_errmsg(c), "bad name!"));
    assert_int_equal(ferry_publish(c, "news", "x", 1, 0x80, NULL), FERRY_EINVAL);
    assert_int_equal(ferry_publish_async(c, "", "x", 1, 0, NULL, NULL), FERRY_EINVAL);
    assert_int_equal(ferry_create(c, 7, "x", NULL), FERRY_EINVAL);
    assert_int_equal(atomic_load(&f->publishes), 0);
    ferry_client_close(c);
    fake_free(f);
}

struct async_log {
    struct waiter w;
    pthread_mutex_t mu;
    uint64_t ids[1000];
    int status[1000];
    char last_msg[256];
    int n;
};

static void on_async(ferry_client_t *c, int status, uint64_t id, const char *errmsg, void *arg)
{
    (void)c;
    struct async_log *l = arg;
    pthread_mutex_lock(&l->mu);
    if (l->n < 1000) {
        l->ids[l->n] = id;
        l->status[l->n] = status;
        l->n++;
    }
    snprintf(l->last_msg, sizeof l->last_msg, "%s", errmsg);
    pthread_mutex_unlock(&l->mu);
    waiter_bump(&l->w);
}

static struct async_log *async_log_new(void)
{
    struct async_log *l = calloc(1, sizeof *l);
    waiter_init(&l->w);
    pthread_mutex_init(&l->mu, NULL);
    return l;
}

static void async_log_free(struct async_log *l)
{
    waiter_destroy(&l->w);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static void test_async_publish_respects_window(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_WINDOW);
    fake_start(f);
    ferry_client_t *c = connected(f, 8, 5000);
    struct async_log *l = async_log_new();
    for (int i = 0; i < 100; i++)
        assert_int_equal(ferry_publish_async(c, "news", "m", 1, 0, on_async, l), 0);
    assert_int_equal(ferry_drain(c, -1), 0);
    assert_int_equal(l->n, 100);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(l->status[i], 0);
        assert_int_equal(l->ids[i], (uint64_t)i + 1); /* acknowledged in order */
    }
    int max = atomic_load(&f->max_outstanding);
    assert_true(max <= 8);
    assert_true(max > 1);
    ferry_client_close(c);
    async_log_free(l);
    fake_free(f);
}

static void test_async_errors_reach_callback(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    fake_start(f);
    ferry_client_t *c = connected(f, 4, 2000);
    struct async_log *l = async_log_new();
    assert_int_equal(ferry_push_async(c, "jobs", "a", 1, on_async, l), 0);
    assert_int_equal(ferry_push_async(c, "full", "b", 1, on_async, l), 0);
    assert_int_equal(ferry_drain(c, -1), 0);
    assert_int_equal(l->n, 2);
    assert_int_equal(l->status[0], 0);
    assert_int_equal(l->status[1], FERRY_EFULL);
    assert_string_equal(l->last_msg, "queue 'full' is full (capacity 10)");
    ferry_client_close(c);
    async_log_free(l);
    fake_free(f);
}

/* ------------------------------------------------------------------ */
/* A misbehaving server                                                */
/* ------------------------------------------------------------------ */

static void test_never_answers_times_out(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_SILENT);
    fake_start(f);
    ferry_client_t *c = connected(f, 4, 200);
    assert_int_equal(ferry_publish(c, "news", "x", 1, 0, NULL), FERRY_ETIMEDOUT);
    assert_non_null(strstr(ferry_client_errmsg(c), "no reply to PUBLISH"));
    struct async_log *l = async_log_new();
    assert_int_equal(ferry_publish_async(c, "news", "x", 1, 0, on_async, l), 0);
    assert_int_equal(waiter_wait(&l->w, 1), 1);
    assert_int_equal(l->status[0], FERRY_ETIMEDOUT);
    assert_non_null(strstr(l->last_msg, "within 200 ms"));
    /* the connection itself is fine: PING is answered */
    assert_int_equal(ferry_ping(c, NULL), 0);
    ferry_client_close(c);
    async_log_free(l);
    fake_free(f);
}

static void test_garbage_is_a_protocol_error(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_GARBAGE);
    fake_start(f);
    ferry_client_t *c = connected(f, 0, 2000);
    assert_int_equal(ferry_publish(c, "news", "x", 1, 0, NULL), FERRY_EPROTO);
    assert_non_null(strstr(ferry_client_errmsg(c), f->addr));
    /* the connection is gone; calls fail at once with the same reason */
    assert_int_equal(ferry_ping(c, NULL), FERRY_EPROTO);
    /* connecting again starts over on a fresh connection */
    assert_int_equal(ferry_client_connect(c), 0);
    assert_int_equal(ferry_ping(c, NULL), 0);
    assert_int_equal(atomic_load(&f->hellos), 2);
    ferry_client_close(c);
    fake_free(f);
}

static void test_oversize_frame_is_refused(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_OVERSIZE);
    fake_start(f);
    ferry_client_t *c = connected(f, 0, 2000);
    assert_int_equal(ferry_publish(c, "news", "x", 1, 0, NULL), FERRY_EPROTO);
    assert_non_null(strstr(ferry_client_errmsg(c), "max_frame"));
    ferry_client_close(c);
    fake_free(f);
}

static void test_close_mid_frame_is_a_connection_error(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_CLOSE_MID_FRAME);
    fake_start(f);
    ferry_client_t *c = connected(f, 0, 2000);
    struct async_log *l = async_log_new();
    assert_int_equal(ferry_publish_async(c, "news", "x", 1, 0, on_async, l), 0);
    assert_int_equal(ferry_publish(c, "news", "y", 1, 0, NULL), FERRY_ECONN);
    assert_non_null(strstr(ferry_client_errmsg(c), "middle of a frame"));
    assert_int_equal(waiter_wait(&l->w, 1), 1);
    assert_int_equal(l->status[0], FERRY_ECONN);
    assert_int_equal(ferry_publish_async(c, "news", "z", 1, 0, on_async, l), FERRY_ECONN);
    ferry_client_close(c);
    assert_int_equal(l->n, 1); /* a refused call never runs its callback */
    async_log_free(l);
    fake_free(f);
}

static void test_close_completes_pending_with_eclosed(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_SILENT);
    fake_start(f);
    ferry_client_t *c = connected(f, 4, 10000);
    struct async_log *l = async_log_new();
    for (int i = 0; i < 3; i++)
        assert_int_equal(ferry_publish_async(c, "news", "x", 1, 0, on_async, l), 0);
    ferry_client_close(c);
    assert_int_equal(l->n, 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(l->status[i], FERRY_ECLOSED);
    async_log_free(l);
    fake_free(f);
}

/* ------------------------------------------------------------------ */
/* Subscriptions and consumers                                         */
/* ------------------------------------------------------------------ */

struct sub_log {
    struct waiter w;
    pthread_mutex_t mu;
    char payloads[8][32];
    uint64_t ids[8];
    int n;
    int end_status;
    int ends;
    int publish_rc; /* a blocking call made from the callback */
    int drain_rc;
    int next_rc;
    int ack_rc; /* a FERRY_NOWAIT ack from the callback */
    int unsub_rc;
    int unsubscribe_in_callback;
};

static void on_event(ferry_sub_t *sub, const ferry_message_t *m, void *arg)
{
    struct sub_log *l = arg;
    ferry_client_t *c = ferry_sub_client(sub);
    pthread_mutex_lock(&l->mu);
    if (l->n < 8) {
        snprintf(l->payloads[l->n], sizeof l->payloads[0], "%.*s", (int)m->len,
                 (const char *)m->data);
        l->ids[l->n] = m->id;
    }
    l->n++;
    pthread_mutex_unlock(&l->mu);
    if (m->id == 1) {
        l->publish_rc = ferry_publish(c, "news", "x", 1, 0, NULL);
        ferry_message_t *none;
        l->next_rc = ferry_sub_next(sub, &none, 100);
        if (m->delivery_count > 0)
            l->ack_rc = ferry_ack(sub, m->id, FERRY_NOWAIT);
    }
    if (l->unsubscribe_in_callback && m->id == 2)
        l->unsub_rc = ferry_cancel(sub);
    waiter_bump(&l->w);
}

static void on_end(ferry_sub_t *sub, int status, const char *errmsg, void *arg)
{
    (void)sub;
    (void)errmsg;
    struct sub_log *l = arg;
    l->end_status = status;
    l->ends++;
    waiter_bump(&l->w);
}

static struct sub_log *sub_log_new(void)
{
    struct sub_log *l = calloc(1, sizeof *l);
    waiter_init(&l->w);
    pthread_mutex_init(&l->mu, NULL);
    return l;
}

static void sub_log_free(struct sub_log *l)
{
    waiter_destroy(&l->w);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static void test_subscription_callback_gets_events(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    f->events = 3;
    fake_start(f);
    ferry_client_t *c = connected(f, 0, 2000);
    struct sub_log *l = sub_log_new();
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.start = FERRY_START_OLDEST;
    o.on_message = on_event;
    o.arg = l;
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_subscribe(c, "news", &o, &s), 0);
    assert_int_equal(ferry_sub_id(s), 7);
    assert_int_equal(ferry_sub_next_event_id(s), 1);
    assert_int_equal(waiter_wait(&l->w, 3), 3);
    for (int i = 0; i < 3; i++) {
        char want[32];
        snprintf(want, sizeof want, "event-%d", i + 1);
        assert_string_equal(l->payloads[i], want);
        assert_int_equal(l->ids[i], (uint64_t)i + 1);
    }
    /* blocking calls from inside the callback refuse instead of deadlocking */
    assert_int_equal(l->publish_rc, FERRY_EDEADLK);
    assert_int_equal(l->next_rc, FERRY_EINVAL); /* a callback subscription has no poll queue */
    assert_int_equal(ferry_ack(s, 3, 0), FERRY_EINVAL); /* not durable */
    assert_int_equal(ferry_unsubscribe(s), 0);
    assert_int_equal(atomic_load(&f->unsubscribes), 1);
    ferry_client_close(c);
    sub_log_free(l);
    fake_free(f);
}

static void test_poll_durable_subscription_acks(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    f->events = 3;
    fake_start(f);
    ferry_client_t *c = connected(f, 0, 2000);
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.start = FERRY_START_DURABLE;
    o.durable = "auditor";
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_subscribe(c, "news", &o, &s), 0);
    for (int i = 1; i <= 3; i++) {
        ferry_message_t *m = NULL;
        assert_int_equal(ferry_sub_next(s, &m, 5000), 0);
        assert_int_equal(m->id, (uint64_t)i);
        assert_int_equal(m->len, 7);
        assert_memory_equal(m->data, "event-", 6);
        assert_int_equal(ferry_ack(s, m->id, i < 3 ? FERRY_NOWAIT : 0), 0);
        ferry_message_free(m);
    }
    assert_int_equal(atomic_load(&f->sub_acks), 3);
    assert_int_equal(ferry_unsubscribe(s), 0);
    assert_int_equal(atomic_load(&f->unsubscribes), 1);
    ferry_client_close(c);
    fake_free(f);
}

static void test_sub_end_reaches_poller(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    f->events = 1;
    f->end_after = 1;
    fake_start(f);
    ferry_client_t *c = connected(f, 0, 2000);
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.start = FERRY_START_DURABLE;
    o.durable = "auditor";
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_subscribe(c, "news", &o, &s), 0);
    ferry_message_t *m = NULL;
    assert_int_equal(ferry_sub_next(s, &m, 5000), 0); /* buffered messages come first */
    assert_int_equal(m->id, 1);
    ferry_message_free(m);
    assert_int_equal(ferry_sub_next(s, &m, 5000), FERRY_ENOTFOUND);
    assert_non_null(strstr(ferry_client_errmsg(c), "channel was deleted"));
    assert_int_equal(ferry_sub_next(s, &m, 0), FERRY_ENOTFOUND); /* every time */
    assert_int_equal(ferry_ack(s, 1, 0), FERRY_ENOTFOUND);
    assert_int_equal(ferry_unsubscribe(s), 0); /* ended: nothing to send */
    assert_int_equal(atomic_load(&f->unsubscribes), 0);
    assert_int_equal(ferry_ping(c, NULL), 0); /* the connection is unaffected */
    ferry_client_close(c);
    fake_free(f);
}

static void test_poll_timeout(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    fake_start(f);
    ferry_client_t *c = connected(f, 0, 2000);
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_subscribe(c, "news", NULL, &s), 0);
    ferry_message_t *m = NULL;
    assert_int_equal(ferry_sub_next(s, &m, 0), FERRY_ETIMEDOUT);
    assert_int_equal(ferry_sub_next(s, &m, 50), FERRY_ETIMEDOUT);
    assert_null(m);
    ferry_client_close(c); /* frees the subscription handle */
    fake_free(f);
}

static void test_poll_buffer_limit_pauses_reading(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    f->events = 200;
    fake_start(f);
    ferry_options_t opts;
    ferry_options_init(&opts);
    opts.servers = f->addr;
    opts.max_queued_bytes = 20; /* about three events */
    ferry_client_t *c = NULL;
    assert_int_equal(ferry_client_create(&c, &opts), 0);
    assert_int_equal(ferry_client_connect(c), 0);
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_subscribe(c, "news", NULL, &s), 0);
    for (int i = 1; i <= 200; i++) {
        ferry_message_t *m = NULL;
        assert_int_equal(ferry_sub_next(s, &m, 5000), 0);
        assert_int_equal(m->id, (uint64_t)i);
        ferry_message_free(m);
    }
    assert_int_equal(ferry_ping(c, NULL), 0); /* reading resumed */
    assert_int_equal(ferry_unsubscribe(s), 0);
    ferry_client_close(c);
    fake_free(f);
}

static void on_async_error(ferry_client_t *c, int status, const char *errmsg, void *arg)
{
    (void)c;
    struct sub_log *l = arg;
    l->end_status = status;
    snprintf(l->payloads[7], sizeof l->payloads[7], "%.31s", errmsg);
    waiter_bump(&l->w);
}

static void test_consumer_acks_and_nacks(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    f->events = 4;
    fake_start(f);
    struct sub_log *errors = sub_log_new();
    ferry_options_t opts;
    ferry_options_init(&opts);
    opts.servers = f->addr;
    opts.on_error = on_async_error;
    opts.on_error_arg = errors;
    ferry_client_t *c = NULL;
    assert_int_equal(ferry_client_create(&c, &opts), 0);
    assert_int_equal(ferry_client_connect(c), 0);
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.window = 16;
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_consume(c, "jobs", &o, &s), 0);
    assert_int_equal(ferry_sub_id(s), 9);
    uint64_t ids[4];
    for (int i = 0; i < 4; i++) {
        ferry_message_t *m = NULL;
        assert_int_equal(ferry_sub_next(s, &m, 5000), 0);
        assert_int_equal(m->delivery_count, 1);
        ids[i] = m->id;
        ferry_message_free(m);
    }
    assert_int_equal(ferry_ack(s, ids[0], 0), 0);
    assert_int_equal(ferry_ack(s, ids[1], FERRY_NOWAIT), 0);
    assert_int_equal(ferry_nack(s, ids[2], 0), 0);
    assert_int_equal(ferry_nack(s, ids[3], FERRY_NOWAIT), 0);
    assert_int_equal(ferry_ack(s, 999, 0), FERRY_ENOTFOUND);
    assert_int_equal(ferry_ack(s, 999, FERRY_NOWAIT), 0); /* the error arrives later */
    assert_int_equal(waiter_wait(&errors->w, 1), 1);
    assert_int_equal(errors->end_status, FERRY_ENOTFOUND);
    assert_int_equal(ferry_ping(c, NULL), 0); /* everything before it was read */
    assert_int_equal(atomic_load(&f->acks), 2);
    assert_int_equal(atomic_load(&f->nacks), 2);
    assert_int_equal(atomic_load(&f->noreply_acks), 2);
    assert_int_equal(ferry_unsubscribe(s), FERRY_EINVAL); /* a consumer is cancelled */
    assert_int_equal(ferry_cancel(s), 0);
    assert_int_equal(atomic_load(&f->unsubscribes), 1);
    ferry_client_close(c);
    sub_log_free(errors);
    fake_free(f);
}

static void test_callback_may_ack_and_cancel(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    f->events = 3;
    fake_start(f);
    ferry_client_t *c = connected(f, 0, 2000);
    struct sub_log *l = sub_log_new();
    l->unsubscribe_in_callback = 1;
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.on_message = on_event;
    o.on_end = on_end;
    o.arg = l;
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_consume(c, "jobs", &o, &s), 0);
    assert_int_equal(waiter_wait(&l->w, 2), 2);
    assert_int_equal(ferry_ping(c, NULL), 0);
    assert_int_equal(l->ack_rc, 0);   /* FERRY_NOWAIT works inside a callback */
    assert_int_equal(l->unsub_rc, 0); /* and so does cancel, without waiting */
    assert_int_equal(ferry_ping(c, NULL), 0);
    assert_int_equal(l->n, 2); /* nothing after the cancel */
    assert_int_equal(l->ends, 0);
    assert_int_equal(atomic_load(&f->acks), 1);
    assert_int_equal(atomic_load(&f->unsubscribes), 1);
    ferry_client_close(c);
    sub_log_free(l);
    fake_free(f);
}

static void test_end_callback_on_connection_loss(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_CLOSE_MID_FRAME);
    fake_start(f);
    ferry_client_t *c = connected(f, 0, 2000);
    struct sub_log *l = sub_log_new();
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.on_message = on_event;
    o.on_end = on_end;
    o.arg = l;
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_subscribe(c, "news", &o, &s), 0);
    assert_int_equal(ferry_publish(c, "news", "x", 1, 0, NULL), FERRY_ECONN);
    assert_int_equal(waiter_wait(&l->w, 1), 1);
    assert_int_equal(l->ends, 1);
    assert_int_equal(l->end_status, FERRY_ECONN);
    assert_int_equal(ferry_unsubscribe(s), 0);
    ferry_client_close(c);
    sub_log_free(l);
    fake_free(f);
}

/* ------------------------------------------------------------------ */
/* Admin                                                               */
/* ------------------------------------------------------------------ */

static void test_admin_requests(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    fake_start(f);
    ferry_client_t *c = connected(f, 0, 2000);
    ferry_resource_options_t ro = {
        .capacity = 10, .ttl_ms = 30000, .max_deliveries = 5, .dlq = "jobs-dead"};
    assert_int_equal(ferry_create(c, FERRY_QUEUE, "jobs", &ro), 0);
    ferry_info_t info;
    assert_int_equal(ferry_info(c, "jobs", &info), 0);
    assert_string_equal(info.name, "jobs");
    assert_int_equal(info.kind, FERRY_QUEUE);
    assert_int_equal(info.count, 3);
    assert_int_equal(info.clients, 2);
    ferry_info_t *v = NULL;
    size_t n = 0;
    assert_int_equal(ferry_list(c, &v, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(v[0].name, "news");
    assert_int_equal(v[0].kind, FERRY_CHANNEL);
    assert_string_equal(v[1].name, "jobs");
    ferry_list_free(v);
    ferry_kv_t *kv = NULL;
    assert_int_equal(ferry_status(c, &kv, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(kv[0].key, "role");
    assert_string_equal(kv[0].value, "leader");
    assert_string_equal(kv[1].key, "connections");
    ferry_status_free(kv);
    uint64_t rtt = 0;
    assert_int_equal(ferry_ping(c, &rtt), 0);
    assert_int_equal(ferry_delete(c, "jobs"), 0);
    assert_int_equal(ferry_durable_delete(c, "news", "bad name"), FERRY_EINVAL);
    ferry_client_close(c);
    fake_free(f);
}

static void test_many_threads_share_a_client(void **state);

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_skips_refusing_server),
        cmocka_unit_test(test_connect_all_refuse_names_each),
        cmocka_unit_test(test_bad_servers_list),
        cmocka_unit_test(test_hello_redirect_followed),
        cmocka_unit_test(test_request_redirect_resends_to_leader),
        cmocka_unit_test(test_redirect_loop_is_bounded),
        cmocka_unit_test(test_blocking_publish_and_push_get_ids),
        cmocka_unit_test(test_server_error_reaches_caller),
        cmocka_unit_test(test_local_validation),
        cmocka_unit_test(test_async_publish_respects_window),
        cmocka_unit_test(test_async_errors_reach_callback),
        cmocka_unit_test(test_never_answers_times_out),
        cmocka_unit_test(test_garbage_is_a_protocol_error),
        cmocka_unit_test(test_oversize_frame_is_refused),
        cmocka_unit_test(test_close_mid_frame_is_a_connection_error),
        cmocka_unit_test(test_close_completes_pending_with_eclosed),
        cmocka_unit_test(test_subscription_callback_gets_events),
        cmocka_unit_test(test_poll_durable_subscription_acks),
        cmocka_unit_test(test_sub_end_reaches_poller),
        cmocka_unit_test(test_poll_timeout),
        cmocka_unit_test(test_poll_buffer_limit_pauses_reading),
        cmocka_unit_test(test_consumer_acks_and_nacks),
        cmocka_unit_test(test_callback_may_ack_and_cancel),
        cmocka_unit_test(test_end_callback_on_connection_loss),
        cmocka_unit_test(test_admin_requests),
        cmocka_unit_test(test_many_threads_share_a_client),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* ------------------------------------------------------------------ */
/* Threads                                                             */
/* ------------------------------------------------------------------ */

struct worker {
    ferry_client_t *c;
    int ok;
    int async_ok;
};

static void count_ok(ferry_client_t *c, int status, uint64_t id, const char *errmsg, void *arg)
{
    (void)c;
    (void)id;
    (void)errmsg;
    if (status == 0)
        atomic_fetch_add((atomic_int *)arg, 1);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    atomic_int async_ok = 0;
    for (int i = 0; i < 200; i++) {
        if (ferry_publish(w->c, "news", "s", 1, 0, NULL) == 0)
            w->ok++;
        ferry_publish_async(w->c, "news", "a", 1, 0, count_ok, &async_ok);
    }
    ferry_drain(w->c, -1);
    w->async_ok = atomic_load(&async_ok);
    return NULL;
}

static void test_many_threads_share_a_client(void **state)
{
    (void)state;
    struct fake *f = fake_new(FAKE_NORMAL);
    fake_start(f);
    ferry_client_t *c = connected(f, 16, 5000);
    pthread_t t[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){.c = c};
        assert_int_equal(pthread_create(&t[i], NULL, worker_main, &w[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].ok, 200);
        assert_int_equal(w[i].async_ok, 200);
    }
    assert_int_equal(atomic_load(&f->publishes), 1600);
    ferry_client_close(c);
    fake_free(f);
}
