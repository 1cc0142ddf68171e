/* test_client_failover.c - libferry's reconnect logic against fake servers.
 *
 * Each fake is a thread with a listening socket on 127.0.0.1 (port 0) that
 * serves one connection at a time in one of a few ways: close every
 * connection at once, never answer, answer with garbage, or speak enough of
 * the protocol (HELLO_OK listing configured endpoints, PUBLISH_OK, ENOTLEADER,
 * SUBSCRIBE/CONSUME followed by a stream of events or deliveries) while
 * recording the producer ids, sequences and resubscriptions it receives,
 * optionally dropping its first connection after some publishes or after
 * the stream, as a node that dies would. Waits are bounded; nothing
 * asserts on wall-clock time (CPU use is compared with elapsed time only to
 * show the client does not spin).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ferry/ferry.h>

#include "proto/proto.h"
#include "util/buf.h"

#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode {
    CLOSE_AT_ONCE, /* accept, close */
    MUTE,          /* accept, read, never answer */
    GARBAGE,       /* answer anything with bytes that are no frame */
    SPEAK,         /* the protocol */
};

#define MAX_SEQ 64

struct fake {
    enum mode mode;
    int lfd;
    char addr[32];
    char other[32];               /* a second endpoint listed in HELLO_OK ("" none) */
    int drop_after;               /* SPEAK: first connection: answer publishes up to this many, then
                                     close once one more arrives (0: never) */
    int silent_publish;           /* SPEAK: never answer PUBLISH */
    int garbage_publish;          /* SPEAK: answer PUBLISH with garbage */
    int mute_after_hello;         /* SPEAK: answer HELLO, then nothing (a paused node) */
    char notleader[32];           /* SPEAK: answer requests with ENOTLEADER naming this leader */
    int stream;                   /* SPEAK: SUBSCRIBE/CONSUME is followed by events or deliveries
                                     1..stream (count 1); then the first connection closes */
    uint64_t cursor;              /* SPEAK, later connections: a durable resumes after this id */
    uint64_t last;                /* SPEAK, later connections: events are sent up to this id */
    struct proto_subscribe resub; /* the SUBSCRIBE of a later connection */
    char reconsumed[PROTO_NAME_MAX + 1]; /* the queue of a CONSUME on a later connection */
    atomic_int nresub;                   /* incremented after resub/reconsumed are written */
    _Atomic uint64_t acked_on; /* the consumer or subscription id of the last ACK/SUB_ACK */
    pthread_t thread;
    atomic_int stop;
    atomic_int accepts;
    atomic_int hellos;
    uint8_t pids[4][16]; /* producer ids of the first HELLOs */
    /* sequences seen, by connection (0 first, 1 later) */
    uint64_t seqs[2][MAX_SEQ];
    atomic_int nseqs[2];
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

static int seen_before(struct fake *f, uint64_t seq)
{
    for (int i = 0; i < atomic_load(&f->nseqs[0]); i++)
        if (f->seqs[0][i] == seq)
            return 1;
    return 0;
}

/* Events from..to of subscription sub_id (payload "e<id>"), or deliveries
 * of items from..to with count 1 to consumer sub_id. */
static void stream_items(struct buf *out, int consumer, uint64_t sub_id, uint64_t from, uint64_t to)
{
    for (uint64_t id = from; id <= to; id++) {
        char text[32];
        int n = snprintf(text, sizeof text, "e%llu", (unsigned long long)id);
        if (consumer) {
            struct proto_delivery d = {sub_id, id, 1, 1, (const uint8_t *)text, (uint32_t)n};
            proto_encode_delivery(out, &d);
        } else {
            struct proto_event e = {sub_id, id, 1, 0, (const uint8_t *)text, (uint32_t)n};
            proto_encode_event(out, &e);
        }
    }
}

/* SUBSCRIBE or CONSUME: the first connection streams 1..stream and asks
 * to close (returns 1); a later one records the request and resumes. */
static int serve_subscription(struct fake *f, const struct proto_header *h, const uint8_t *body,
                              size_t blen, int conn_no, struct buf *out)
{
    int consumer = h->op == PROTO_CONSUME;
    uint64_t sub_id = 100 + (uint64_t)conn_no, from = 1, to = (uint64_t)f->stream;
    if (consumer) {
        struct proto_consume m;
        assert_int_equal(proto_decode_consume(body, blen, &m), 0);
        if (conn_no > 0)
            snprintf(f->reconsumed, sizeof f->reconsumed, "%s", m.queue);
        proto_encode_id(out, PROTO_CONSUME_OK, 0, h->request_id, sub_id);
    } else {
        struct proto_subscribe m;
        assert_int_equal(proto_decode_subscribe(body, blen, &m), 0);
        if (conn_no > 0) {
            f->resub = m;
            from = m.start == PROTO_START_DURABLE ? f->cursor + 1
                   : m.start == PROTO_START_FROM  ? m.from_id
                                                  : f->last + 1;
            to = f->last;
        }
        struct proto_subscribe_ok ok = {sub_id, from};
        proto_encode_subscribe_ok(out, h->request_id, &ok);
    }
    if (conn_no > 0)
        atomic_fetch_add(&f->nresub, 1);
    stream_items(out, consumer, sub_id, from, to);
    return conn_no == 0;
}

/* Serve one connection; returns when it is closed or the fake stops. */
static void serve(struct fake *f, int fd, int conn_no)
{
    struct buf in, out;
    buf_init(&in);
    buf_init(&out);
    int answered = 0;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        buf_reserve(&in, 65536);
        ssize_t n = recv(fd, in.data + in.len, in.cap - in.len, 0);
        if (n <= 0)
            break;
        in.len += (size_t)n;
        if (f->mode == MUTE)
            continue;
        if (f->mode == GARBAGE) {
            send_all(fd, "garbage, not a frame, at all", 28);
            continue;
        }
        size_t off = 0;
        for (;;) {
            struct proto_header h;
            size_t flen;
            if (proto_frame_check(in.data + off, in.len - off, 1 << 20, &h, &flen) != 0)
                break;
            const uint8_t *body = in.data + off + PROTO_HEADER_SIZE;
            size_t blen = flen - PROTO_HEADER_SIZE;
            off += flen;
            if (h.op == PROTO_HELLO) {
                struct proto_hello m;
                assert_int_equal(proto_decode_hello(body, blen, &m), 0);
                int k = atomic_fetch_add(&f->hellos, 1);
                if (k < 4)
                    memcpy(f->pids[k], m.producer_id, 16);
                struct proto_hello_ok *ok = calloc(1, sizeof *ok);
                ok->version = PROTO_VERSION;
                snprintf(ok->server_version, sizeof ok->server_version, "fake");
                ok->node_id = 1;
                ok->max_frame = 1 << 20;
                ok->max_message = 1 << 19;
                snprintf(ok->role, sizeof ok->role, "leader");
                snprintf(ok->endpoints[ok->endpoint_count++], sizeof ok->endpoints[0], "%s",
                         f->addr);
                if (f->other[0])
                    snprintf(ok->endpoints[ok->endpoint_count++], sizeof ok->endpoints[0], "%s",
                             f->other);
                proto_encode_hello_ok(&out, h.request_id, ok);
                free(ok);
            } else if (f->mute_after_hello) {
                continue;
            } else if (f->notleader[0] && h.op != PROTO_PING) {
                struct proto_error e = {.code = FERRY_ENOTLEADER};
                snprintf(e.message, sizeof e.message, "not the leader");
                snprintf(e.leader, sizeof e.leader, "%s", f->notleader);
                proto_encode_error(&out, h.request_id, &e);
            } else if (f->stream > 0 && (h.op == PROTO_SUBSCRIBE || h.op == PROTO_CONSUME)) {
                if (serve_subscription(f, &h, body, blen, conn_no, &out)) {
                    send_all(fd, out.data, out.len);
                    goto done; /* the node "dies" after streaming */
                }
            } else if (h.op == PROTO_ACK || h.op == PROTO_SUB_ACK || h.op == PROTO_UNSUBSCRIBE ||
                       h.op == PROTO_CANCEL) {
                if (h.op == PROTO_ACK || h.op == PROTO_SUB_ACK)
                    atomic_store(&f->acked_on, get_u64(body)); /* both start with the id */
                if (!(h.flags & PROTO_F_NOREPLY))
                    proto_encode_empty(&out, PROTO_OK, 0, h.request_id);
            } else if (h.op == PROTO_PUBLISH || h.op == PROTO_PUSH) {
                struct proto_publish m;
                assert_int_equal(proto_decode_publish(body, blen, &m), 0);
                int c = conn_no > 0 ? 1 : 0;
                int k = atomic_load(&f->nseqs[c]);
                if (k < MAX_SEQ) {
                    f->seqs[c][k] = m.producer_seq;
                    atomic_store(&f->nseqs[c], k + 1);
                }
                if (f->silent_publish)
                    continue;
                if (f->garbage_publish) {
                    buf_append(&out, "not a frame, no", 15);
                    break;
                }
                if (conn_no == 0 && f->drop_after > 0 && answered >= f->drop_after) {
                    send_all(fd, out.data, out.len);
                    goto done; /* the node "dies" with this publish unanswered */
                }
                uint16_t flags =
                    conn_no > 0 && seen_before(f, m.producer_seq) ? PROTO_F_DUPLICATE : 0;
                proto_encode_id(&out, PROTO_PUBLISH_OK, flags, h.request_id, ++f->next_id);
                answered++;
            } else if (h.op == PROTO_PING) {
                proto_encode_empty(&out, PROTO_PONG, 0, h.request_id);
            }
        }
        buf_consume(&in, off);
        send_all(fd, out.data, out.len);
        buf_reset(&out);
    }
done:
    buf_free(&in);
    buf_free(&out);
}

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    int conn_no = 0;
    while (!atomic_load(&f->stop)) {
        struct pollfd p = {.fd = f->lfd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        atomic_fetch_add(&f->accepts, 1);
        if (f->mode != CLOSE_AT_ONCE)
            serve(f, fd, conn_no++);
        close(fd);
    }
    return NULL;
}

static struct fake *fake_start(enum mode mode)
{
    struct fake *f = calloc(1, sizeof *f);
    f->mode = mode;
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(f->lfd, 16), 0);
    socklen_t len = sizeof a;
    getsockname(f->lfd, (struct sockaddr *)&a, &len);
    snprintf(f->addr, sizeof f->addr, "127.0.0.1:%u", ntohs(a.sin_port));
    return f;
}

static void fake_run(struct fake *f)
{
    assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

/* Stop serving and close the listener: the address now refuses. */
static void fake_stop(struct fake *f)
{
    if (f->lfd < 0)
        return;
    atomic_store(&f->stop, 1);
    pthread_join(f->thread, NULL);
    close(f->lfd);
    f->lfd = -1;
}

static void fake_free(struct fake *f)
{
    fake_stop(f);
    free(f);
}

static double cpu_seconds(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return (double)u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + (double)u.ru_stime.tv_sec +
           u.ru_stime.tv_usec / 1e6;
}

static double wall_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

struct counts {
    atomic_int disconnects, reconnects;
    char reconnected_to[64];
    char why[256];
};

static void on_disconnect(ferry_client_t *c, int status, const char *msg, void *arg)
{
    (void)c, (void)status;
    struct counts *k = arg;
    snprintf(k->why, sizeof k->why, "%s", msg);
    atomic_fetch_add(&k->disconnects, 1);
}

static void on_reconnect(ferry_client_t *c, int status, const char *addr, void *arg)
{
    (void)c, (void)status;
    struct counts *k = arg;
    snprintf(k->reconnected_to, sizeof k->reconnected_to, "%s", addr);
    atomic_fetch_add(&k->reconnects, 1);
}

static ferry_client_t *client(const char *servers, struct counts *k, uint32_t reconnect_ms)
{
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = servers;
    o.connect_timeout_ms = 300;
    o.request_timeout_ms = 10000;
    o.reconnect_timeout_ms = reconnect_ms;
    o.backoff_initial_ms = 20;
    o.backoff_max_ms = 200;
    o.on_disconnect = on_disconnect;
    o.on_reconnect = on_reconnect;
    o.conn_cb_arg = k;
    ferry_client_t *c = NULL;
    assert_int_equal(ferry_client_create(&c, &o), 0);
    return c;
}

/* Connecting to a misbehaving server: it is retried with backoff until the
 * reconnect timeout, reported with the address, and the CPU stays idle. */
static void connect_fails_politely(enum mode mode)
{
    struct fake *f = fake_start(mode);
    fake_run(f);
    struct counts k = {0};
    ferry_client_t *c = client(f->addr, &k, 1500);
    double cpu0 = cpu_seconds(), t0 = wall_seconds();
    int rc = ferry_client_connect(c);
    double cpu = cpu_seconds() - cpu0, wall = wall_seconds() - t0;
    const char *msg = ferry_client_errmsg(c);
    ferry_client_stats_t st;
    assert_int_equal(ferry_client_stats(c, &st), 0);
    fprintf(stderr, "mode %d: rc %s after %llu attempts, %.3f s CPU in %.3f s: %s\n", mode,
            ferry_errname(rc), (unsigned long long)st.attempts, cpu, wall, msg);
    assert_true(rc == FERRY_ECONN || rc == FERRY_ETIMEDOUT || rc == FERRY_EPROTO);
    assert_non_null(strstr(msg, f->addr));
    assert_true(st.attempts > 1);   /* it retried */
    assert_true(st.attempts < 200); /* with pauses, not in a loop */
    assert_true(cpu < wall / 2);    /* and without spinning */
    assert_int_equal(st.connects, 0);
    assert_true(atomic_load(&f->accepts) >= 2);
    ferry_client_close(c);
    fake_free(f);
}

static void test_server_closing_at_once(void **state)
{
    (void)state;
    connect_fails_politely(CLOSE_AT_ONCE);
}

static void test_server_never_answering(void **state)
{
    (void)state;
    connect_fails_politely(MUTE);
}

static void test_server_sending_garbage(void **state)
{
    (void)state;
    connect_fails_politely(GARBAGE);
}

struct pub_result {
    atomic_int done;
    atomic_int ok;
    atomic_int closed; /* completed with FERRY_ECLOSED */
};

static void on_published(ferry_client_t *c, int status, uint64_t id, const char *msg, void *arg)
{
    (void)c, (void)id, (void)msg;
    struct pub_result *r = arg;
    if (status == 0)
        atomic_fetch_add(&r->ok, 1);
    if (status == FERRY_ECLOSED)
        atomic_fetch_add(&r->closed, 1);
    atomic_fetch_add(&r->done, 1);
}

/* A node that greets properly and then sends garbage: each connection is
 * dropped as a protocol error and made again, with pauses that grow, until
 * the request times out; no crash, no spinning. */
static void test_garbage_after_hello_is_retried_with_backoff(void **state)
{
    (void)state;
    struct fake *f = fake_start(SPEAK);
    f->garbage_publish = 1;
    fake_run(f);
    struct counts k = {0};
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = f->addr;
    o.request_timeout_ms = 1500;
    o.backoff_initial_ms = 20;
    o.backoff_max_ms = 200;
    o.on_disconnect = on_disconnect;
    o.on_reconnect = on_reconnect;
    o.conn_cb_arg = &k;
    ferry_client_t *c = NULL;
    assert_int_equal(ferry_client_create(&c, &o), 0);
    assert_int_equal(ferry_client_connect(c), 0);
    double cpu0 = cpu_seconds(), t0 = wall_seconds();
    uint64_t id;
    int rc = ferry_publish(c, "ch", "a", 1, 0, &id);
    double cpu = cpu_seconds() - cpu0, wall = wall_seconds() - t0;
    ferry_client_stats_t st;
    assert_int_equal(ferry_client_stats(c, &st), 0);
    fprintf(stderr, "garbage after HELLO: %s after %llu connections, %.3f s CPU in %.3f s\n",
            ferry_errname(rc), (unsigned long long)st.connects, cpu, wall);
    assert_int_equal(rc, FERRY_ETIMEDOUT);
    assert_true(st.connects > 2 && st.connects < 100);
    assert_true(atomic_load(&k.disconnects) >= 2);
    assert_true(cpu < wall / 2);
    ferry_client_close(c);
    fake_free(f);
}

/* The node drops the connection with publishes unanswered: the client
 * reconnects and sends them again with the same producer id and sequences,
 * and the server's DUPLICATE answers are counted. */
static void test_pending_publishes_resent_with_same_sequence(void **state)
{
    (void)state;
    struct fake *f = fake_start(SPEAK);
    f->drop_after = 2;
    fake_run(f);
    struct counts k = {0};
    ferry_client_t *c = client(f->addr, &k, 10000);
    assert_int_equal(ferry_client_connect(c), 0);
    struct pub_result r = {0};
    for (int i = 0; i < 5; i++)
        assert_int_equal(ferry_publish_async(c, "ch", "m", 1, 0, on_published, &r), 0);
    assert_int_equal(ferry_drain(c, 10000), 0);
    assert_int_equal(atomic_load(&r.done), 5);
    assert_int_equal(atomic_load(&r.ok), 5);
    assert_int_equal(atomic_load(&k.disconnects), 1);
    assert_int_equal(atomic_load(&k.reconnects), 1);
    assert_int_equal(atomic_load(&f->hellos), 2);
    assert_memory_equal(f->pids[0], f->pids[1], 16); /* one producer id */
    ferry_client_stats_t st;
    assert_int_equal(ferry_client_stats(c, &st), 0);
    assert_memory_equal(st.producer_id, f->pids[0], 16);
    /* Whatever the first connection received unanswered was sent again
     * with the same sequence, and the fake called those duplicates. */
    int first = atomic_load(&f->nseqs[0]), again = atomic_load(&f->nseqs[1]);
    assert_true(first >= 3);
    for (int i = 2; i < first; i++) {
        int found = 0;
        for (int j = 0; j < again; j++)
            found |= f->seqs[1][j] == f->seqs[0][i];
        assert_true(found);
    }
    assert_int_equal(f->seqs[0][0], 1);
    assert_true(st.resent >= 3);
    assert_int_equal(st.duplicates, (uint64_t)(first - 2));
    assert_int_equal(st.connects, 2);
    ferry_client_close(c);
    fake_free(f);
}

/* Publishes made while the client is reconnecting go out once, in order,
 * after the ones that were pending. */
static void test_requests_made_while_reconnecting_go_out_once(void **state)
{
    (void)state;
    struct fake *f = fake_start(SPEAK);
    f->drop_after = 1;
    fake_run(f);
    struct counts k = {0};
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = f->addr;
    o.backoff_initial_ms = 600; /* the pause before redialling a short-lived connection */
    o.backoff_max_ms = 600;
    o.on_disconnect = on_disconnect;
    o.on_reconnect = on_reconnect;
    o.conn_cb_arg = &k;
    ferry_client_t *c = NULL;
    assert_int_equal(ferry_client_create(&c, &o), 0);
    assert_int_equal(ferry_client_connect(c), 0);
    struct pub_result r = {0};
    assert_int_equal(ferry_publish_async(c, "ch", "1", 1, 0, on_published, &r), 0);
    assert_int_equal(ferry_publish_async(c, "ch", "2", 1, 0, on_published, &r), 0);
    for (int i = 0; i < 500 && atomic_load(&k.disconnects) == 0; i++)
        usleep(2000);
    assert_int_equal(atomic_load(&k.disconnects), 1);
    assert_int_equal(atomic_load(&k.reconnects), 0); /* still pausing */
    for (int i = 0; i < 3; i++)
        assert_int_equal(ferry_publish_async(c, "ch", "n", 1, 0, on_published, &r), 0);
    assert_int_equal(ferry_drain(c, 10000), 0);
    assert_int_equal(atomic_load(&r.ok), 5);
    /* The second connection saw sequences 2..5, each once, in order. */
    int n = atomic_load(&f->nseqs[1]);
    assert_int_equal(n, 4);
    for (int i = 0; i < n; i++)
        assert_int_equal(f->seqs[1][i], (uint64_t)(i + 2));
    ferry_client_close(c);
    fake_free(f);
}

/* A client told one address learns the other from HELLO_OK and moves there
 * when the first node goes away. */
static void test_learned_endpoint_used_on_failover(void **state)
{
    (void)state;
    struct fake *b = fake_start(SPEAK);
    fake_run(b);
    struct fake *a = fake_start(SPEAK);
    snprintf(a->other, sizeof a->other, "%s", b->addr);
    fake_run(a);
    struct counts k = {0};
    ferry_client_t *c = client(a->addr, &k, 10000);
    assert_int_equal(ferry_client_connect(c), 0);
    uint64_t id = 0;
    assert_int_equal(ferry_publish(c, "ch", "x", 1, 0, &id), 0);
    fake_stop(a);
    assert_int_equal(ferry_publish(c, "ch", "y", 1, 0, &id), 0);
    assert_int_equal(atomic_load(&k.reconnects), 1);
    assert_string_equal(k.reconnected_to, b->addr);
    ferry_server_info_t si;
    assert_int_equal(ferry_client_server_info(c, &si), 0);
    assert_string_equal(si.address, b->addr);
    ferry_client_close(c);
    fake_free(a);
    fake_free(b);
}

/* A node that greets and then falls silent (paused, cut off) is given up by
 * the keepalive, and the publish waiting on it goes to the other node. */
static void test_keepalive_leaves_a_silent_node(void **state)
{
    (void)state;
    struct fake *b = fake_start(SPEAK);
    fake_run(b);
    struct fake *a = fake_start(SPEAK);
    a->mute_after_hello = 1;
    snprintf(a->other, sizeof a->other, "%s", b->addr);
    fake_run(a);
    struct counts k = {0};
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = a->addr;
    o.keepalive_ms = 100;
    o.connect_timeout_ms = 300;
    o.request_timeout_ms = 20000;
    o.on_disconnect = on_disconnect;
    o.on_reconnect = on_reconnect;
    o.conn_cb_arg = &k;
    ferry_client_t *c = NULL;
    assert_int_equal(ferry_client_create(&c, &o), 0);
    assert_int_equal(ferry_client_connect(c), 0);
    uint64_t id = 0;
    if (ferry_publish(c, "ch", "x", 1, 0, &id) != 0)
        fail_msg("publish: %s", ferry_client_errmsg(c));
    fprintf(stderr, "left the silent node: %s\n", k.why);
    assert_true(atomic_load(&k.disconnects) >= 1);
    assert_non_null(strstr(k.why, "keepalive"));
    assert_string_equal(k.reconnected_to, b->addr);
    ferry_client_close(c);
    fake_free(a);
    fake_free(b);
}

/* fail_when_full: the window full (here because nothing is answered) makes
 * an asynchronous publish fail at once instead of blocking. */
static void test_fail_when_full(void **state)
{
    (void)state;
    struct fake *f = fake_start(SPEAK);
    f->silent_publish = 1;
    fake_run(f);
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = f->addr;
    o.window = 2;
    o.fail_when_full = 1;
    ferry_client_t *c = NULL;
    assert_int_equal(ferry_client_create(&c, &o), 0);
    assert_int_equal(ferry_client_connect(c), 0);
    struct pub_result r = {0};
    assert_int_equal(ferry_publish_async(c, "ch", "a", 1, 0, on_published, &r), 0);
    assert_int_equal(ferry_publish_async(c, "ch", "b", 1, 0, on_published, &r), 0);
    assert_int_equal(ferry_publish_async(c, "ch", "c", 1, 0, on_published, &r), FERRY_EAGAIN);
    assert_non_null(strstr(ferry_client_errmsg(c), "window"));
    ferry_client_close(c);
    assert_int_equal(atomic_load(&r.done), 2); /* the two queued ones completed (ECLOSED) */
    assert_int_equal(atomic_load(&r.ok), 0);
    fake_free(f);
}

/* Closing while the client is reconnecting to a node that is gone: the
 * pending publish completes with ECLOSED and close returns. ECLOSED (not
 * ECONN or ETIMEDOUT) shows that close cut the loop short instead of
 * waiting for the reconnect timeout (60 s) or the request timeout. */
static void test_close_while_reconnecting(void **state)
{
    (void)state;
    struct fake *f = fake_start(SPEAK);
    f->silent_publish = 1;
    fake_run(f);
    struct counts k = {0};
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = f->addr;
    o.connect_timeout_ms = 300;
    o.request_timeout_ms = 120000;
    o.reconnect_timeout_ms = 120000;
    o.backoff_initial_ms = 5000; /* it pauses before redialling a short-lived connection */
    o.backoff_max_ms = 60000;
    o.on_disconnect = on_disconnect;
    o.conn_cb_arg = &k;
    ferry_client_t *c = NULL;
    assert_int_equal(ferry_client_create(&c, &o), 0);
    assert_int_equal(ferry_client_connect(c), 0);
    struct pub_result r = {0};
    assert_int_equal(ferry_publish_async(c, "ch", "a", 1, 0, on_published, &r), 0);
    assert_int_equal(ferry_publish_async(c, "ch", "b", 1, 0, on_published, &r), 0);
    fake_stop(f); /* the connection and the listener are gone */
    for (int i = 0; i < 200 && atomic_load(&k.disconnects) == 0; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&k.disconnects), 1);
    assert_int_equal(ferry_client_close(c), 0);
    assert_int_equal(atomic_load(&r.done), 2);
    assert_int_equal(atomic_load(&r.closed), 2);
    fake_free(f);
}

/* With no_reconnect a lost connection ends subscriptions with ECONN. */
static void test_no_reconnect_ends_subscriptions(void **state)
{
    (void)state;
    struct fake *f = fake_start(SPEAK);
    f->stream = 2;
    fake_run(f);
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = f->addr;
    o.no_reconnect = 1;
    ferry_client_t *c = NULL;
    assert_int_equal(ferry_client_create(&c, &o), 0);
    assert_int_equal(ferry_client_connect(c), 0);
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_subscribe(c, "ch", NULL, &s), 0);
    ferry_message_t *m = NULL;
    for (uint64_t id = 1; id <= 2; id++) {
        assert_int_equal(ferry_sub_next(s, &m, 5000), 0);
        assert_int_equal(m->id, id);
        ferry_message_free(m);
    }
    assert_int_equal(ferry_sub_next(s, &m, 5000), FERRY_ECONN);
    assert_int_equal(ferry_sub_next(s, &m, 0), FERRY_ECONN); /* every time */
    uint64_t id;
    assert_int_equal(ferry_publish(c, "ch", "x", 1, 0, &id), FERRY_ECONN);
    ferry_client_stats_t st;
    assert_int_equal(ferry_client_stats(c, &st), 0);
    assert_int_equal(st.resubscribed, 0);
    assert_int_equal(atomic_load(&f->hellos), 1);
    assert_int_equal(ferry_unsubscribe(s), 0);
    ferry_client_close(c);
    fake_free(f);
}

/* With no_reconnect a lost connection is final. */
static void test_no_reconnect_fails_at_once(void **state)
{
    (void)state;
    struct fake *f = fake_start(SPEAK);
    f->drop_after = 1;
    fake_run(f);
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = f->addr;
    o.no_reconnect = 1;
    ferry_client_t *c = NULL;
    assert_int_equal(ferry_client_create(&c, &o), 0);
    assert_int_equal(ferry_client_connect(c), 0);
    uint64_t id;
    assert_int_equal(ferry_publish(c, "ch", "a", 1, 0, &id), 0);
    assert_int_equal(ferry_publish(c, "ch", "b", 1, 0, &id), FERRY_ECONN);
    assert_int_equal(ferry_publish(c, "ch", "c", 1, 0, &id), FERRY_ECONN);
    assert_int_equal(atomic_load(&f->hellos), 1);
    ferry_client_close(c);
    fake_free(f);
}

/* An ENOTLEADER answer mid-session moves the client to the leader it
 * names, where the publish is sent again with its sequence. */
static void test_not_leader_mid_session_moves_to_the_leader(void **state)
{
    (void)state;
    struct fake *b = fake_start(SPEAK);
    fake_run(b);
    struct fake *a = fake_start(SPEAK);
    snprintf(a->notleader, sizeof a->notleader, "%s", b->addr);
    fake_run(a);
    struct counts k = {0};
    ferry_client_t *c = client(a->addr, &k, 10000);
    assert_int_equal(ferry_client_connect(c), 0);
    struct pub_result r = {0};
    assert_int_equal(ferry_publish_async(c, "ch", "x", 1, 0, on_published, &r), 0);
    assert_int_equal(ferry_drain(c, 10000), 0);
    assert_int_equal(atomic_load(&r.ok), 1);
    assert_int_equal(atomic_load(&k.reconnects), 1);
    assert_string_equal(k.reconnected_to, b->addr);
    assert_int_equal(atomic_load(&b->nseqs[0]), 1);
    assert_int_equal(b->seqs[0][0], 1);
    ferry_client_close(c);
    fake_free(a);
    fake_free(b);
}

struct collected {
    uint64_t ids[64];
    atomic_int n;
    atomic_int ended;
};

static void on_event(ferry_sub_t *sub, const ferry_message_t *m, void *arg)
{
    (void)sub;
    struct collected *k = arg;
    int i = atomic_load(&k->n);
    if (i < 64)
        k->ids[i] = m->id;
    atomic_store(&k->n, i + 1);
}

static void on_sub_end(ferry_sub_t *sub, int status, const char *msg, void *arg)
{
    (void)sub, (void)status, (void)msg;
    atomic_fetch_add(&((struct collected *)arg)->ended, 1);
}

/* A live subscription resumes after the last event the caller got: the
 * node dies after events 1..5, and the new SUBSCRIBE asks from 6. */
static void test_subscription_resumes_after_the_last_event(void **state)
{
    (void)state;
    struct fake *f = fake_start(SPEAK);
    f->stream = 5;
    f->last = 8;
    fake_run(f);
    struct counts k = {0};
    ferry_client_t *c = client(f->addr, &k, 10000);
    assert_int_equal(ferry_client_connect(c), 0);
    struct collected got = {0};
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.on_message = on_event;
    o.on_end = on_sub_end;
    o.arg = &got;
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_subscribe(c, "ch", &o, &s), 0);
    for (int i = 0; i < 500 && atomic_load(&got.n) < 8; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&got.n), 8);
    for (int i = 0; i < 8; i++)
        assert_int_equal(got.ids[i], (uint64_t)(i + 1));
    assert_int_equal(atomic_load(&f->nresub), 1);
    assert_int_equal(f->resub.start, PROTO_START_FROM);
    assert_int_equal(f->resub.from_id, 6);
    assert_string_equal(f->resub.channel, "ch");
    ferry_client_stats_t st;
    assert_int_equal(ferry_client_stats(c, &st), 0);
    assert_int_equal(st.resubscribed, 1);
    assert_int_equal(st.dropped_events, 0);
    assert_int_equal(atomic_load(&got.ended), 0);
    assert_int_equal(atomic_load(&k.reconnects), 1);
    assert_int_equal(ferry_unsubscribe(s), 0);
    ferry_client_close(c);
    fake_free(f);
}

/* A durable subscription resumes from the server's cursor (2 here): the
 * events the caller already had (3..5) are dropped, the rest delivered. */
static void test_durable_resumes_from_the_cursor_without_repeats(void **state)
{
    (void)state;
    struct fake *f = fake_start(SPEAK);
    f->stream = 5;
    f->cursor = 2;
    f->last = 8;
    fake_run(f);
    struct counts k = {0};
    ferry_client_t *c = client(f->addr, &k, 10000);
    assert_int_equal(ferry_client_connect(c), 0);
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.start = FERRY_START_DURABLE;
    o.durable = "d1";
    o.window = 16;
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_subscribe(c, "ch", &o, &s), 0);
    for (uint64_t id = 1; id <= 8; id++) {
        ferry_message_t *m = NULL;
        if (ferry_sub_next(s, &m, 5000) != 0)
            fail_msg("event %llu: %s", (unsigned long long)id, ferry_client_errmsg(c));
        assert_int_equal(m->id, id);
        char text[32];
        snprintf(text, sizeof text, "e%llu", (unsigned long long)id);
        assert_int_equal(m->len, strlen(text));
        assert_memory_equal(m->data, text, m->len);
        ferry_message_free(m);
    }
    ferry_message_t *m = NULL;
    assert_int_equal(ferry_sub_next(s, &m, 100), FERRY_ETIMEDOUT); /* nothing twice */
    assert_int_equal(atomic_load(&f->nresub), 1);
    assert_int_equal(f->resub.start, PROTO_START_DURABLE);
    assert_string_equal(f->resub.durable, "d1");
    assert_int_equal(f->resub.window, 16);
    assert_int_equal(ferry_ack(s, 8, 0), 0);
    assert_int_equal(atomic_load(&f->acked_on), 101); /* the subscription of the new session */
    ferry_client_stats_t st;
    assert_int_equal(ferry_client_stats(c, &st), 0);
    assert_int_equal(st.dropped_events, 3);
    assert_int_equal(st.resubscribed, 1);
    assert_int_equal(ferry_unsubscribe(s), 0);
    ferry_client_close(c);
    fake_free(f);
}

/* A consumer gets the items it held unacked again after a failover, and a
 * delivery count the new node did not raise (a crashed leader's deliveries
 * were never committed) is raised by the client: the caller sees 2. Items
 * still waiting in the local queue when the connection dropped are not
 * handed out from it: only their redelivery is. */
static void test_consumer_redeliveries_count_up(void **state)
{
    (void)state;
    struct fake *f = fake_start(SPEAK);
    f->stream = 3;
    fake_run(f);
    struct counts k = {0};
    ferry_client_t *c = client(f->addr, &k, 10000);
    assert_int_equal(ferry_client_connect(c), 0);
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.window = 8;
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_consume(c, "jobs", &o, &s), 0);
    int seen[4] = {0}, again[4] = {0}, taken = 0;
    while (!(again[1] && again[2] && again[3])) {
        ferry_message_t *m = NULL;
        if (ferry_sub_next(s, &m, 5000) != 0)
            fail_msg("delivery %d: %s", taken, ferry_client_errmsg(c));
        assert_true(m->id >= 1 && m->id <= 3);
        taken++;
        if (seen[m->id])
            assert_int_equal(m->delivery_count, 2); /* a redelivery says so */
        if (m->delivery_count == 2)
            again[m->id] = 1;
        else
            assert_int_equal(seen[m->id], 0); /* a first delivery only once */
        seen[m->id] = 1;
        ferry_message_free(m);
    }
    assert_true(taken <= 6);
    ferry_message_t *extra = NULL;
    assert_int_equal(ferry_sub_next(s, &extra, 100), FERRY_ETIMEDOUT); /* nothing twice more */
    assert_int_equal(atomic_load(&f->nresub), 1);
    assert_string_equal(f->reconsumed, "jobs");
    assert_int_equal(ferry_ack(s, 1, 0), 0);
    assert_int_equal(atomic_load(&f->acked_on), 101); /* the consumer of the new session */
    ferry_client_stats_t st;
    assert_int_equal(ferry_client_stats(c, &st), 0);
    assert_int_equal(st.resubscribed, 1);
    assert_int_equal(ferry_cancel(s), 0);
    ferry_client_close(c);
    fake_free(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_server_closing_at_once),
        cmocka_unit_test(test_server_never_answering),
        cmocka_unit_test(test_server_sending_garbage),
        cmocka_unit_test(test_garbage_after_hello_is_retried_with_backoff),
        cmocka_unit_test(test_pending_publishes_resent_with_same_sequence),
        cmocka_unit_test(test_requests_made_while_reconnecting_go_out_once),
        cmocka_unit_test(test_learned_endpoint_used_on_failover),
        cmocka_unit_test(test_keepalive_leaves_a_silent_node),
        cmocka_unit_test(test_fail_when_full),
        cmocka_unit_test(test_close_while_reconnecting),
        cmocka_unit_test(test_no_reconnect_fails_at_once),
        cmocka_unit_test(test_no_reconnect_ends_subscriptions),
        cmocka_unit_test(test_not_leader_mid_session_moves_to_the_leader),
        cmocka_unit_test(test_subscription_resumes_after_the_last_event),
        cmocka_unit_test(test_durable_resumes_from_the_cursor_without_repeats),
        cmocka_unit_test(test_consumer_redeliveries_count_up),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
