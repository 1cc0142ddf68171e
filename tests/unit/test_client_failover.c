/* test_client_failover.c - libferry's reconnect logic against fake servers.
 *
 * Each fake is a thread with a listening socket on 127.0.0.1 (port 0) that
 * serves one connection at a time in one of a few ways: close every
 * connection at once, never answer, answer with garbage, or speak enough of
 * the protocol (HELLO_OK listing configured endpoints, PUBLISH_OK) while
 * recording the producer ids and sequences it receives, optionally dropping
 * its first connection after some publishes. Waits are bounded; nothing
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
    char other[32];     /* a second endpoint listed in HELLO_OK ("" none) */
    int drop_after;     /* SPEAK: first connection: answer publishes up to this many, then
                           close once one more arrives (0: never) */
    int silent_publish; /* SPEAK: never answer PUBLISH */
    int garbage_publish; /* SPEAK: answer PUBLISH with garbage */
    int mute_after_hello; /* SPEAK: answer HELLO, then nothing (a paused node) */
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
                    snprintf(ok->endpoints[ok->endpoint_count++], sizeof ok->endpoints[0],
                             "%s", f->other);
                proto_encode_hello_ok(&out, h.request_id, ok);
                free(ok);
            } else if (f->mute_after_hello) {
                continue;
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
                uint16_t flags = conn_no > 0 && seen_before(f, m.producer_seq) ? PROTO_F_DUPLICATE
                                                                                : 0;
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
};

static void on_published(ferry_client_t *c, int status, uint64_t id, const char *msg, void *arg)
{
    (void)c, (void)id, (void)msg;
    struct pub_result *r = arg;
    if (status == 0)
        atomic_fetch_add(&r->ok, 1);
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
 * pending publish completes with ECLOSED and close returns. */
static void test_close_while_reconnecting(void **state)
{
    (void)state;
    struct fake *f = fake_start(SPEAK);
    f->silent_publish = 1;
    fake_run(f);
    struct counts k = {0};
    ferry_client_t *c = client(f->addr, &k, 60000);
    assert_int_equal(ferry_client_connect(c), 0);
    struct pub_result r = {0};
    assert_int_equal(ferry_publish_async(c, "ch", "a", 1, 0, on_published, &r), 0);
    fake_stop(f); /* the connection and the listener are gone */
    for (int i = 0; i < 200 && atomic_load(&k.disconnects) == 0; i++)
        usleep(10000);
    assert_int_equal(atomic_load(&k.disconnects), 1);
    ferry_client_close(c);
    assert_int_equal(atomic_load(&r.done), 1);
    assert_int_equal(atomic_load(&r.ok), 0);
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
