/* test_rtransport.c - the Raft transport over real libuv loops on loopback:
 * delivery and order, handshake refusals and timeouts, restart and redial,
 * peer-down, backpressure and payload sizes. Every wait is bounded by a uv
 * timer. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "raft/transport/transport.h"
#include "test_port.h"
#include "util/alloc.h"
#include "util/buf.h"

#define CLUSTER 0xfe11e5ull
#define MAX_ID 10
#define WAIT_MS 10000

/* ---- harness ----------------------------------------------------------- */

struct node {
    struct rtransport t;
    uint32_t id;
    int running;
    int closed;
    uint64_t recv[MAX_ID];     /* messages received per sender */
    uint32_t next_seq[MAX_ID]; /* next expected sequence number per sender */
    int bad;                   /* a message arrived corrupted or out of order */
    int ups[MAX_ID];
    int downs[MAX_ID];
    size_t lens[16]; /* lengths of short messages, in arrival order */
    int n_lens;
};

static struct rtransport_member members[4];
static uint32_t n_members;

/* TLS: contexts of nodes 1-3 from the cluster CA ("a") and, for refusals,
 * of another CA ("b"); base_config uses the first while tls_on is set. */
static char cert_dir[64];
static struct tls_ctx *tls_accept[2][4], *tls_dial[2][4];
static int tls_on;

static struct tls_ctx *load_ctx(enum tls_role role, const char *ca_dir, const char *cert_ca_dir,
                                const char *node)
{
    char cert[200], key[200], ca[200];
    snprintf(cert, sizeof cert, "%s/%s/%s.pem", cert_dir, cert_ca_dir, node);
    snprintf(key, sizeof key, "%s/%s/%s.key", cert_dir, cert_ca_dir, node);
    snprintf(ca, sizeof ca, "%s/%s/ca.pem", cert_dir, ca_dir);
    struct tls_settings ts = {
        .cert_file = cert, .key_file = key, .ca_file = ca, .verify = TLS_VERIFY_REQUIRED};
    struct tls_ctx *ctx = NULL;
    struct ferry_err err;
    if (tls_ctx_new(&ctx, role, &ts, &err) != 0)
        fail_msg("%s", err.msg);
    return ctx;
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(cert_dir, sizeof cert_dir, "/tmp/ferry-rt-XXXXXX");
    if (mkdtemp(cert_dir) == NULL)
        return -1;
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             FERRY_SOURCE_DIR "/scripts/make-certs %s/a >/dev/null && " FERRY_SOURCE_DIR
                              "/scripts/make-certs %s/b --ca-name Other >/dev/null",
             cert_dir, cert_dir);
    if (system(cmd) != 0)
        return -1;
    const char *dirs[2] = {"a", "b"};
    for (int d = 0; d < 2; d++) {
        for (int id = 1; id <= 3; id++) {
            char node[16];
            snprintf(node, sizeof node, "node-%d", id);
            /* Every node trusts the cluster CA "a"; "b" nodes only hold b's certificates. */
            tls_accept[d][id] = load_ctx(TLS_SERVER, "a", dirs[d], node);
            tls_dial[d][id] = load_ctx(TLS_CLIENT, "a", dirs[d], node);
        }
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (int d = 0; d < 2; d++)
        for (int id = 1; id <= 3; id++) {
            tls_ctx_free(tls_accept[d][id]);
            tls_ctx_free(tls_dial[d][id]);
        }
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", cert_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void setup_members(uint32_t n)
{
    n_members = n;
    for (uint32_t i = 0; i < n; i++) {
        members[i].id = i + 1;
        members[i].host = "127.0.0.1";
        members[i].port = test_free_port();
    }
}

static uint8_t pattern(size_t i, uint32_t seq)
{
    return (uint8_t)(i * 7 + seq);
}

/* Payload: u32 sequence number, then pattern bytes. Shorter payloads carry
 * only pattern bytes and are recorded by length. */
static void on_message(struct rtransport *t, uint32_t from, const uint8_t *p, size_t len)
{
    struct node *n = t->data;
    assert_true(from < MAX_ID);
    n->recv[from]++;
    if (len < 4) {
        if (n->n_lens < 16)
            n->lens[n->n_lens++] = len;
        for (size_t i = 0; i < len; i++)
            if (p[i] != pattern(i, 0))
                n->bad = 1;
        return;
    }
    uint32_t seq = get_u32(p);
    if (seq != n->next_seq[from])
        n->bad = 1;
    n->next_seq[from] = seq + 1;
    if (n->n_lens < 16)
        n->lens[n->n_lens++] = len;
    for (size_t i = 4; i < len; i++)
        if (p[i] != pattern(i, seq)) {
            n->bad = 1;
            break;
        }
}

static void on_up(struct rtransport *t, uint32_t id)
{
    struct node *n = t->data;
    n->ups[id]++;
}

static void on_down(struct rtransport *t, uint32_t id)
{
    struct node *n = t->data;
    n->downs[id]++;
}

static const struct rtransport_callbacks callbacks = {on_message, on_up, on_down};

static struct rtransport_config base_config(uint32_t id)
{
    struct rtransport_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.cluster_id = CLUSTER;
    cfg.self_id = id;
    cfg.listen_host = "127.0.0.1";
    for (uint32_t i = 0; i < n_members; i++)
        if (members[i].id == id)
            cfg.listen_port = members[i].port;
    cfg.members = members;
    cfg.n_members = n_members;
    cfg.frame_bytes_max = 2u << 20;
    cfg.redial_ms_min = 10;
    cfg.redial_ms_max = 100;
    cfg.seed = id;
    if (tls_on && id >= 1 && id <= 3) {
        cfg.tls_accept = tls_accept[0][id];
        cfg.tls_dial = tls_dial[0][id];
    }
    return cfg;
}

static void node_start_cfg(struct node *n, uv_loop_t *loop, const struct rtransport_config *cfg)
{
    struct ferry_err err;
    memset(n, 0, sizeof *n);
    n->id = cfg->self_id;
    assert_int_equal(rtransport_init(&n->t, loop, cfg, &callbacks, &err), 0);
    n->t.data = n;
    n->running = 1;
    int rc = rtransport_start(&n->t, &err);
    if (rc != 0)
        fail_msg("start: %s", err.msg);
}

static void node_start(struct node *n, uv_loop_t *loop, uint32_t id)
{
    struct rtransport_config cfg = base_config(id);
    node_start_cfg(n, loop, &cfg);
}

static void node_closed(struct rtransport *t)
{
    struct node *n = t->data;
    n->closed = 1;
}

static void node_close(struct node *n)
{
    if (!n->running)
        return;
    n->running = 0;
    rtransport_close(&n->t, node_closed);
}

static int timed_out;

/* uv_stop too: in UV_RUN_ONCE a timer that fires at the start of the turn
 * would otherwise leave the poll that follows blocking without a deadline. */
static void on_deadline(uv_timer_t *timer)
{
    timed_out = 1;
    uv_stop(timer->loop);
}

/* Run the loop until pred(ctx) holds; fails the test after ms. */
static void run_until(uv_loop_t *loop, int (*pred)(void *), void *ctx, unsigned ms)
{
    uv_timer_t timer;
    timed_out = 0;
    uv_timer_init(loop, &timer);
    uv_timer_start(&timer, on_deadline, ms, 0);
    while (!pred(ctx) && !timed_out)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    if (!pred(ctx))
        fail_msg("condition not reached within %u ms", ms);
}

/* Run the loop for ms regardless of events. */
static void run_for(uv_loop_t *loop, unsigned ms)
{
    uv_timer_t timer;
    timed_out = 0;
    uv_timer_init(loop, &timer);
    uv_timer_start(&timer, on_deadline, ms, 0);
    while (!timed_out)
        uv_run(loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&timer, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
}

static void finish(uv_loop_t *loop)
{
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static int send_seq(struct node *from, uint32_t to, uint32_t seq, size_t len)
{
    uint8_t *p = ferry_malloc(len ? len : 1);
    assert_non_null(p);
    for (size_t i = 0; i < len; i++)
        p[i] = pattern(i, len >= 4 ? seq : 0);
    if (len >= 4)
        put_u32(p, seq);
    int rc = rtransport_send(&from->t, to, p, len);
    ferry_free(p);
    return rc;
}

static int peer_connected(struct node *n, uint32_t id)
{
    struct rtransport_peer_stats s;
    assert_int_equal(rtransport_peer_stats(&n->t, id, &s), 0);
    return s.connected;
}

struct mesh {
    struct node *nodes;
    int n;
};

static int mesh_connected(void *ctx)
{
    struct mesh *m = ctx;
    for (int i = 0; i < m->n; i++)
        for (int j = 0; j < m->n; j++)
            if (i != j && !peer_connected(&m->nodes[i], m->nodes[j].id))
                return 0;
    return 1;
}

/* ---- delivery ------------------------------------------------------------ */

#define PER_PAIR 300

static int all_delivered(void *ctx)
{
    struct node *nodes = ctx;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (i != j && nodes[i].recv[nodes[j].id] < PER_PAIR)
                return 0;
    return 1;
}

static void test_three_nodes_exchange_in_order(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    setup_members(3);
    struct node nodes[3];
    for (uint32_t i = 0; i < 3; i++) {
        struct rtransport_config cfg = base_config(i + 1);
        cfg.verify_ip = 1;
        node_start_cfg(&nodes[i], &loop, &cfg);
    }
    /* Sent before any connection is up: queued and delivered once up. */
    for (uint32_t seq = 0; seq < PER_PAIR; seq++)
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < 3; j++)
                if (i != j)
                    assert_int_equal(send_seq(&nodes[i], nodes[j].id, seq, 4 + (seq * 37) % 3000),
                                     0);
    run_until(&loop, all_delivered, nodes, WAIT_MS);
    for (int i = 0; i < 3; i++) {
        assert_false(nodes[i].bad);
        for (int j = 0; j < 3; j++) {
            if (i == j)
                continue;
            struct rtransport_peer_stats s;
            assert_int_equal(rtransport_peer_stats(&nodes[i].t, nodes[j].id, &s), 0);
            assert_true(s.connected);
            assert_true(s.inbound);
            assert_int_equal(s.msgs_sent, PER_PAIR);
            assert_int_equal(s.msgs_recv, PER_PAIR);
            assert_int_equal(s.drops, 0);
            assert_int_equal(nodes[i].recv[nodes[j].id], PER_PAIR);
            assert_int_equal(nodes[i].ups[nodes[j].id], 1);
        }
        const struct rtransport_stats *st = rtransport_stats(&nodes[i].t);
        assert_int_equal(st->accepted, 2);
        for (int r = 0; r < RTRANSPORT_REJECT_COUNT; r++)
            assert_int_equal(st->rejected[r], 0);
    }
    for (int i = 0; i < 3; i++)
        node_close(&nodes[i]);
    finish(&loop);
    for (int i = 0; i < 3; i++) {
        assert_true(nodes[i].closed);
        for (int j = 1; j <= 3; j++)
            assert_int_equal(nodes[i].downs[j], 0); /* our own close is not a peer going down */
    }
}

static void test_send_errors_and_config_checks(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    setup_members(2);
    struct node a;
    node_start(&a, &loop, 1);
    uint8_t byte = 1;
    assert_int_equal(rtransport_send(&a.t, 7, &byte, 1), FERRY_ENOTFOUND);
    assert_int_equal(rtransport_send(&a.t, 1, &byte, 1), FERRY_ENOTFOUND);
    uint8_t *big = ferry_calloc(1, 2u << 20);
    assert_int_equal(rtransport_send(&a.t, 2, big, (2u << 20) - 4), FERRY_ETOOBIG);
    ferry_free(big);

    struct rtransport other;
    struct ferry_err err;
    struct rtransport_config cfg = base_config(5);
    assert_int_equal(rtransport_init(&other, &loop, &cfg, &callbacks, &err), FERRY_EINVAL);
    assert_non_null(strstr(err.msg, "node id 5 is not in cluster_membership"));
    cfg = base_config(1);
    cfg.send_queue_bytes_max = 1000;
    assert_int_equal(rtransport_init(&other, &loop, &cfg, &callbacks, &err), FERRY_EINVAL);
    assert_non_null(strstr(err.msg, "send_queue_bytes_max"));

    node_close(&a);
    assert_int_equal(rtransport_send(&a.t, 2, &byte, 1), FERRY_ECLOSED);
    assert_false(a.closed); /* the close callback never runs inside rtransport_close */
    finish(&loop);
    assert_true(a.closed);
}

/* ---- refusals ------------------------------------------------------------ */

/* A raw TCP client: connects, writes `out` (if any), then `later` (if any)
 * later_ms after that, and records everything it reads. */
struct raw {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    uv_write_t wreq_later;
    uv_timer_t timer;
    struct buf out;
    struct buf later;
    unsigned later_ms;
    struct buf in;
    int eof;
};

static void raw_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct raw *r = h->data;
    (void)suggested;
    assert_int_equal(buf_reserve(&r->in, 4096), 0);
    b->base = (char *)r->in.data + r->in.len;
    b->len = r->in.cap - r->in.len;
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct raw *r = s->data;
    (void)b;
    if (n < 0) {
        r->eof = 1;
        uv_read_stop(s);
        return;
    }
    r->in.len += (size_t)n;
}

static void raw_written(uv_write_t *req, int status)
{
    (void)req;
    (void)status;
}

static void raw_write_later(uv_timer_t *timer)
{
    struct raw *r = timer->data;
    uv_buf_t b = uv_buf_init((char *)r->later.data, (unsigned)r->later.len);
    assert_int_equal(uv_write(&r->wreq_later, (uv_stream_t *)&r->tcp, &b, 1, raw_written), 0);
}

static void raw_connected(uv_connect_t *req, int status)
{
    struct raw *r = req->data;
    assert_int_equal(status, 0);
    uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
    if (r->out.len > 0) {
        uv_buf_t b = uv_buf_init((char *)r->out.data, (unsigned)r->out.len);
        assert_int_equal(uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &b, 1, raw_written), 0);
    }
    if (r->later.len > 0)
        uv_timer_start(&r->timer, raw_write_later, r->later_ms, 0);
}

static void raw_connect(struct raw *r, uv_loop_t *loop, uint16_t port)
{
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    uv_tcp_init(loop, &r->tcp);
    uv_timer_init(loop, &r->timer);
    r->tcp.data = r;
    r->timer.data = r;
    r->creq.data = r;
    assert_int_equal(uv_tcp_connect(&r->creq, &r->tcp, (const struct sockaddr *)&sa, raw_connected),
                     0);
}

static void raw_close(struct raw *r)
{
    uv_close((uv_handle_t *)&r->tcp, NULL);
    uv_close((uv_handle_t *)&r->timer, NULL);
}

static void raw_free(struct raw *r)
{
    buf_free(&r->out);
    buf_free(&r->later);
    buf_free(&r->in);
}

static void put_frame(struct buf *b, uint8_t kind, const void *p, uint32_t n)
{
    buf_append_u32(b, n + 1);
    buf_append_u8(b, kind);
    buf_append(b, p, n);
}

static void put_hello(struct buf *b, uint64_t cluster, uint32_t id)
{
    uint8_t h[18];
    put_u32(h, RTRANSPORT_MAGIC);
    put_u16(h + 4, RTRANSPORT_VERSION);
    put_u64(h + 6, cluster);
    put_u32(h + 14, id);
    put_frame(b, 1, h, sizeof h);
}

struct reject_wait {
    struct node *node;
    int reason;
};

static int rejected(void *ctx)
{
    struct reject_wait *w = ctx;
    return rtransport_stats(&w->node->t)->rejected[w->reason] >= 1;
}

static int raw_eof(void *ctx)
{
    return ((struct raw *)ctx)->eof;
}

static int b_got_ten(void *ctx)
{
    struct node *n = ctx;
    return n[0].recv[2] >= 10 && n[1].recv[1] >= 10;
}

/* Good nodes 1 and 2 keep exchanging messages after a refusal. */
static void check_good_pair_works(uv_loop_t *loop, struct node *ab)
{
    struct mesh m = {ab, 2};
    run_until(loop, mesh_connected, &m, WAIT_MS);
    for (uint32_t seq = 0; seq < 10; seq++) {
        assert_int_equal(send_seq(&ab[0], 2, seq, 100), 0);
        assert_int_equal(send_seq(&ab[1], 1, seq, 100), 0);
    }
    run_until(loop, b_got_ten, ab, WAIT_MS);
    assert_false(ab[0].bad);
    assert_false(ab[1].bad);
}

/* Start good nodes 1 and 2 of members {1,2,3}; a bad node configured by cfg
 * dials node 1 and must be refused for `reason` with a message containing
 * `text`. */
static void refusal_case(const struct rtransport_config *bad_cfg, int verify_ip, int reason,
                         const char *text)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct node ab[2], bad;
    struct rtransport_config cfg = base_config(1);
    cfg.verify_ip = verify_ip;
    node_start_cfg(&ab[0], &loop, &cfg);
    node_start(&ab[1], &loop, 2);
    node_start_cfg(&bad, &loop, bad_cfg);
    struct reject_wait w = {&ab[0], reason};
    run_until(&loop, rejected, &w, WAIT_MS);
    const struct rtransport_stats *st = rtransport_stats(&ab[0].t);
    assert_non_null(strstr(st->last_reject, text));
    struct rtransport_peer_stats ps;
    assert_int_equal(rtransport_peer_stats(&bad.t, 1, &ps), 0);
    assert_false(ps.connected);
    check_good_pair_works(&loop, ab);
    assert_int_equal(ab[0].recv[3] + ab[0].recv[9], 0);
    node_close(&ab[0]);
    node_close(&ab[1]);
    node_close(&bad);
    finish(&loop);
}

static void test_refuse_wrong_cluster(void **state)
{
    (void)state;
    setup_members(3);
    struct rtransport_config cfg = base_config(3);
    cfg.cluster_id = CLUSTER + 1;
    refusal_case(&cfg, 0, RTRANSPORT_REJECT_CLUSTER, "belongs to another cluster");
}

static void test_refuse_unknown_node(void **state)
{
    (void)state;
    setup_members(3);
    /* Node 9 believes in members {1, 9}; node 1 does not know it. */
    static struct rtransport_member theirs[2];
    theirs[0] = members[0];
    theirs[1].id = 9;
    theirs[1].host = "127.0.0.1";
    theirs[1].port = members[2].port;
    struct rtransport_config cfg = base_config(3);
    cfg.self_id = 9;
    cfg.members = theirs;
    cfg.n_members = 2;
    refusal_case(&cfg, 0, RTRANSPORT_REJECT_UNKNOWN_NODE, "node id 9 is not a member");
}

static void test_refuse_wrong_source_address(void **state)
{
    (void)state;
    setup_members(3);
    struct rtransport_config cfg = base_config(3);
    cfg.source_host = "127.0.0.2"; /* member 3 is configured at 127.0.0.1 */
    refusal_case(&cfg, 1, RTRANSPORT_REJECT_ADDRESS,
                 "node 3 connected from 127.0.0.2 but its configured address is 127.0.0.1");
}

static void raw_case(struct buf *bytes, int reason, const char *text, int expect_accept)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    struct node ab[2];
    node_start(&ab[0], &loop, 1);
    node_start(&ab[1], &loop, 2);
    struct raw r;
    memset(&r, 0, sizeof r);
    r.out = *bytes;
    raw_connect(&r, &loop, members[0].port);
    run_until(&loop, raw_eof, &r, WAIT_MS);
    struct reject_wait w = {&ab[0], reason};
    assert_true(rejected(&w));
    assert_non_null(strstr(rtransport_stats(&ab[0].t)->last_reject, text));
    /* The raw client saw [ACCEPT] then a REFUSE frame with the reason. */
    size_t off = 0;
    if (expect_accept) {
        assert_true(r.in.len >= 9);
        assert_int_equal(r.in.data[4], 2);
        assert_int_equal(get_u32(r.in.data + 5), 1);
        off = 9;
    }
    assert_true(r.in.len > off + 5);
    assert_int_equal(r.in.data[off + 4], 3);
    assert_int_equal(get_u32(r.in.data + off) + 4, r.in.len - off);
    check_good_pair_works(&loop, ab);
    raw_close(&r);
    node_close(&ab[0]);
    node_close(&ab[1]);
    finish(&loop);
    raw_free(&r);
}

static void test_refuse_garbage(void **state)
{
    (void)state;
    setup_members(3);
    struct buf b;
    buf_init(&b);
    buf_append(&b, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
    raw_case(&b, RTRANSPORT_REJECT_MALFORMED, "not a Ferry Raft handshake", 0);
}

static void test_close_oversized_frame(void **state)
{
    (void)state;
    setup_members(3);
    struct buf b;
    buf_init(&b);
    put_hello(&b, CLUSTER, 3);
    buf_append_u32(&b, (2u << 20) + 1); /* frame_bytes_max is 2 MiB */
    buf_append_u8(&b, 4);
    raw_case(&b, RTRANSPORT_REJECT_OVERSIZED, "exceeds frame_bytes_max", 1);
}

/* ---- handshake timeout ------------------------------------------------------- */

static int both_raw_eof(void *ctx)
{
    struct raw *r = ctx;
    return r[0].eof && r[1].eof;
}

/* A client that connects and sends nothing, and one that stops halfway
 * through its HELLO, are both closed after handshake_timeout_ms, told why,
 * and counted as "timeout". */
static void test_silent_connection_times_out(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    setup_members(3);
    struct node a;
    struct rtransport_config cfg = base_config(1);
    cfg.handshake_timeout_ms = 100;
    node_start_cfg(&a, &loop, &cfg);
    struct raw r[2];
    memset(r, 0, sizeof r);
    struct buf hello;
    buf_init(&hello);
    put_hello(&hello, CLUSTER, 3);
    buf_append(&r[1].out, hello.data, 10);
    buf_free(&hello);
    raw_connect(&r[0], &loop, members[0].port);
    raw_connect(&r[1], &loop, members[0].port);
    run_until(&loop, both_raw_eof, r, WAIT_MS);
    const struct rtransport_stats *st = rtransport_stats(&a.t);
    assert_int_equal(st->rejected[RTRANSPORT_REJECT_TIMEOUT], 2);
    assert_int_equal(st->accepted, 0);
    assert_non_null(strstr(st->last_reject, "no handshake within 100 ms"));
    assert_string_equal(rtransport_reject_name(RTRANSPORT_REJECT_TIMEOUT), "timeout");
    for (int i = 0; i < 2; i++) { /* a REFUSE frame, and nothing else */
        assert_true(r[i].in.len > 5);
        assert_int_equal(r[i].in.data[4], 3);
        assert_int_equal(get_u32(r[i].in.data) + 4, r[i].in.len);
        raw_close(&r[i]);
    }
    node_close(&a);
    finish(&loop);
    for (int i = 0; i < 2; i++)
        raw_free(&r[i]);
}

static int got_msg_from_3(void *ctx)
{
    return ((struct node *)ctx)->recv[3] >= 1;
}

/* A HELLO that arrives slowly, in two parts, but within handshake_timeout_ms
 * is accepted, and the connection then outlives the timeout. */
static void test_slow_hello_accepted(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    setup_members(3);
    struct node a;
    struct rtransport_config cfg = base_config(1);
    cfg.handshake_timeout_ms = 500;
    node_start_cfg(&a, &loop, &cfg);
    struct raw r;
    memset(&r, 0, sizeof r);
    struct buf b;
    buf_init(&b);
    put_hello(&b, CLUSTER, 3);
    uint8_t seq0[4] = {0, 0, 0, 0};
    put_frame(&b, 4, seq0, sizeof seq0);
    buf_append(&r.out, b.data, 10);
    buf_append(&r.later, b.data + 10, b.len - 10);
    buf_free(&b);
    r.later_ms = 150;
    raw_connect(&r, &loop, members[0].port);
    run_until(&loop, got_msg_from_3, &a, WAIT_MS);
    const struct rtransport_stats *st = rtransport_stats(&a.t);
    assert_int_equal(st->accepted, 1);
    assert_int_equal(r.in.len, 9); /* ACCEPT from node 1 */
    assert_int_equal(r.in.data[4], 2);
    assert_int_equal(get_u32(r.in.data + 5), 1);
    run_for(&loop, 2 * cfg.handshake_timeout_ms);
    assert_false(r.eof);
    assert_int_equal(st->rejected[RTRANSPORT_REJECT_TIMEOUT], 0);
    struct rtransport_peer_stats ps;
    assert_int_equal(rtransport_peer_stats(&a.t, 3, &ps), 0);
    assert_true(ps.inbound);
    assert_false(a.bad);
    raw_close(&r);
    node_close(&a);
    finish(&loop);
    raw_free(&r);
}

/* ---- restart, peer down ---------------------------------------------------- */

static int b_down_seen(void *ctx)
{
    struct node *n = ctx;
    return n[0].downs[2] >= 1 && n[2].downs[2] >= 1 && n[1].closed;
}

static int restarted_b_got(void *ctx)
{
    struct node *n = ctx;
    return n[1].recv[1] >= 5 && n[1].recv[3] >= 5 && n[0].recv[2] >= 10;
}

static void test_peer_restart_redials_and_reports_down(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    setup_members(3);
    struct node nodes[3];
    for (uint32_t i = 0; i < 3; i++)
        node_start(&nodes[i], &loop, i + 1);
    struct mesh m = {nodes, 3};
    run_until(&loop, mesh_connected, &m, WAIT_MS);
    assert_int_equal(send_seq(&nodes[1], 1, 0, 50), 0);
    assert_int_equal(nodes[0].downs[2], 0);

    node_close(&nodes[1]); /* node 2's process goes away */
    run_until(&loop, b_down_seen, nodes, WAIT_MS);
    assert_int_equal(nodes[0].downs[2], 1);
    assert_int_equal(nodes[0].downs[3], 0);
    assert_false(peer_connected(&nodes[0], 2));
    /* node 1 received seq 0 from the old node 2; the new one starts at 0 again. */
    nodes[0].next_seq[2] = 0;
    nodes[0].recv[2] = 0;

    node_start(&nodes[1], &loop, 2); /* same id, same port */
    for (uint32_t seq = 0; seq < 5; seq++) {
        assert_int_equal(send_seq(&nodes[0], 2, seq, 64), 0);
        assert_int_equal(send_seq(&nodes[2], 2, seq, 64), 0);
    }
    for (uint32_t seq = 0; seq < 10; seq++)
        assert_int_equal(send_seq(&nodes[1], 1, seq, 64), 0);
    run_until(&loop, mesh_connected, &m, WAIT_MS);
    run_until(&loop, restarted_b_got, nodes, WAIT_MS);
    assert_false(nodes[0].bad);
    assert_false(nodes[1].bad);
    assert_true(nodes[0].ups[2] >= 2);
    for (int i = 0; i < 3; i++)
        node_close(&nodes[i]);
    finish(&loop);
}

/* ---- backpressure ------------------------------------------------------------ */

/* A member that accepts, answers ACCEPT as node 2 and never reads. */
struct paused {
    uv_tcp_t listener;
    uv_tcp_t conn;
    uv_write_t wreq;
    uint8_t accept[9];
    int accepted;
};

static void paused_on_connection(uv_stream_t *server, int status)
{
    struct paused *p = server->data;
    assert_int_equal(status, 0);
    assert_false(p->accepted);
    uv_tcp_init(server->loop, &p->conn);
    assert_int_equal(uv_accept(server, (uv_stream_t *)&p->conn), 0);
    p->accepted = 1;
    put_u32(p->accept, 5);
    p->accept[4] = 2;
    put_u32(p->accept + 5, 2);
    uv_buf_t b = uv_buf_init((char *)p->accept, sizeof p->accept);
    assert_int_equal(uv_write(&p->wreq, (uv_stream_t *)&p->conn, &b, 1, raw_written), 0);
}

static int a_sees_2_up(void *ctx)
{
    return ((struct node *)ctx)->ups[2] >= 1;
}

static void test_backpressure_busy_and_bounded(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    setup_members(2);
    struct paused p;
    memset(&p, 0, sizeof p);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", members[1].port, &sa);
    uv_tcp_init(&loop, &p.listener);
    p.listener.data = &p;
    assert_int_equal(uv_tcp_bind(&p.listener, (const struct sockaddr *)&sa, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&p.listener, 8, paused_on_connection), 0);

    struct node a;
    struct rtransport_config cfg = base_config(1);
    cfg.frame_bytes_max = 128 * 1024;
    cfg.send_queue_bytes_max = 512 * 1024;
    node_start_cfg(&a, &loop, &cfg);
    run_until(&loop, a_sees_2_up, &a, WAIT_MS);

    /* Keep sending 60 KB messages while the loop runs; the kernel buffers
     * fill up, then the queue does, then send refuses. */
    uint64_t accepted = 0;
    int busy = 0;
    for (int round = 0; round < 2000 && busy < 50; round++) {
        int rc = send_seq(&a, 2, (uint32_t)accepted, 60000);
        if (rc == FERRY_EBUSY) {
            struct rtransport_peer_stats s;
            rtransport_peer_stats(&a.t, 2, &s);
            assert_true(s.queued_bytes + 60005 > cfg.send_queue_bytes_max);
            busy++;
            run_for(&loop, 2);
            continue;
        }
        assert_int_equal(rc, 0);
        accepted++;
        struct rtransport_peer_stats s;
        rtransport_peer_stats(&a.t, 2, &s);
        assert_true(s.queued_bytes <= cfg.send_queue_bytes_max);
        if (round % 8 == 0)
            uv_run(&loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(busy, 50);
    struct rtransport_peer_stats s;
    assert_int_equal(rtransport_peer_stats(&a.t, 2, &s), 0);
    assert_int_equal(s.drops, 50);
    assert_true(s.connected);
    assert_true(s.queued_bytes <= cfg.send_queue_bytes_max);
    assert_true(s.msgs_sent < accepted);

    node_close(&a);
    uv_close((uv_handle_t *)&p.listener, NULL);
    if (p.accepted)
        uv_close((uv_handle_t *)&p.conn, NULL);
    finish(&loop);
    assert_true(a.closed);
}

/* ---- payload sizes ------------------------------------------------------------ */

static const size_t sizes[] = {0, 1, 7, 9, 1023, 1u << 20, 3, 4};
#define N_SIZES (sizeof sizes / sizeof sizes[0])

static int got_all_sizes(void *ctx)
{
    return ((struct node *)ctx)->n_lens >= (int)N_SIZES;
}

static void test_odd_payload_sizes(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    setup_members(2);
    struct node ab[2];
    node_start(&ab[0], &loop, 1);
    node_start(&ab[1], &loop, 2);
    for (size_t i = 0; i < N_SIZES; i++)
        assert_int_equal(
            send_seq(&ab[0], 2, (uint32_t)(sizes[i] >= 4 ? ab[0].n_lens++ : 0), sizes[i]), 0);
    run_until(&loop, got_all_sizes, &ab[1], WAIT_MS);
    assert_false(ab[1].bad);
    assert_int_equal(ab[1].n_lens, N_SIZES);
    for (size_t i = 0; i < N_SIZES; i++)
        assert_int_equal(ab[1].lens[i], sizes[i]);
    struct rtransport_peer_stats s;
    assert_int_equal(rtransport_peer_stats(&ab[1].t, 1, &s), 0);
    size_t total = 0;
    for (size_t i = 0; i < N_SIZES; i++)
        total += sizes[i];
    assert_int_equal(s.bytes_recv, total);
    node_close(&ab[0]);
    node_close(&ab[1]);
    finish(&loop);
}

/* ---- members added and removed while running ------------------------------ */

struct dyn {
    struct node *nodes;
    uint64_t rejected_before;
    uint64_t recv_before; /* node 1's messages from node 3 */
};

static int node1_refused_3(void *ctx)
{
    struct dyn *d = ctx;
    return rtransport_stats(&d->nodes[0].t)->rejected[RTRANSPORT_REJECT_UNKNOWN_NODE] >
           d->rejected_before;
}

static int node3_linked_both_ways(void *ctx)
{
    struct dyn *d = ctx;
    struct rtransport_peer_stats s;
    return peer_connected(&d->nodes[0], 3) && peer_connected(&d->nodes[2], 1) &&
           rtransport_peer_stats(&d->nodes[0].t, 3, &s) == 0 && s.inbound &&
           peer_connected(&d->nodes[1], 3) && peer_connected(&d->nodes[2], 2);
}

static int node1_got_from_3(void *ctx)
{
    struct dyn *d = ctx;
    return d->nodes[0].recv[3] > d->recv_before && d->nodes[2].recv[1] >= 1;
}

static int node3_saw_1_down(void *ctx)
{
    struct dyn *d = ctx;
    return d->nodes[2].downs[1] >= 1;
}

/* A node the others do not know is refused until they add it; then it links
 * both ways. Removed, it is refused again, not redialled, and the remover
 * gets no peer-down notice; added back, it links again (the slot is reused). */
static void test_add_and_remove_members(void **state)
{
    (void)state;
    uv_loop_t loop;
    uv_loop_init(&loop);
    setup_members(3);
    struct node nodes[3];
    for (uint32_t i = 0; i < 2; i++) {
        struct rtransport_config cfg = base_config(i + 1);
        cfg.n_members = 2; /* nodes 1 and 2 do not know node 3 */
        node_start_cfg(&nodes[i], &loop, &cfg);
    }
    node_start(&nodes[2], &loop, 3);
    struct dyn d = {nodes, 0, 0};
    run_until(&loop, node1_refused_3, &d, WAIT_MS);
    struct ferry_err err;
    assert_int_equal(rtransport_send(&nodes[0].t, 3, "x", 1), FERRY_ENOTFOUND);
    assert_int_equal(rtransport_add_member(&nodes[0].t, &members[2], &err), 0);
    assert_int_equal(rtransport_add_member(&nodes[1].t, &members[2], &err), 0);
    assert_int_equal(rtransport_add_member(&nodes[0].t, &members[2], &err), 0); /* again: no-op */
    assert_int_equal(rtransport_add_member(&nodes[0].t, &members[0], &err), FERRY_EINVAL);
    struct rtransport_member unresolvable = {9, "no-such-host.invalid", 1};
    assert_int_equal(rtransport_add_member(&nodes[0].t, &unresolvable, &err), FERRY_ECONFIG);
    run_until(&loop, node3_linked_both_ways, &d, WAIT_MS);
    assert_int_equal(send_seq(&nodes[0], 3, 0, 8), 0);
    assert_int_equal(send_seq(&nodes[2], 1, 0, 8), 0);
    run_until(&loop, node1_got_from_3, &d, WAIT_MS);

    d.rejected_before = rtransport_stats(&nodes[0].t)->rejected[RTRANSPORT_REJECT_UNKNOWN_NODE];
    assert_int_equal(rtransport_remove_member(&nodes[0].t, 3), 0);
    assert_int_equal(rtransport_remove_member(&nodes[0].t, 3), FERRY_ENOTFOUND);
    struct rtransport_peer_stats s;
    assert_int_equal(rtransport_peer_stats(&nodes[0].t, 3, &s), FERRY_ENOTFOUND);
    assert_int_equal(rtransport_send(&nodes[0].t, 3, "x", 1), FERRY_ENOTFOUND);
    run_until(&loop, node3_saw_1_down, &d, WAIT_MS);
    run_until(&loop, node1_refused_3, &d, WAIT_MS); /* node 3 redials and is refused */
    assert_int_equal(nodes[0].downs[3], 0);
    assert_int_equal(rtransport_peer_stats(&nodes[0].t, 2, &s), 0); /* others untouched */
    assert_true(s.connected);

    assert_int_equal(rtransport_add_member(&nodes[0].t, &members[2], &err), 0);
    d.recv_before = nodes[0].recv[3];
    run_until(&loop, node3_linked_both_ways, &d, WAIT_MS);
    assert_int_equal(send_seq(&nodes[2], 1, 1, 8), 0);
    run_until(&loop, node1_got_from_3, &d, WAIT_MS);
    assert_false(nodes[0].bad);
    assert_false(nodes[2].bad);
    for (int i = 0; i < 3; i++)
        node_close(&nodes[i]);
    finish(&loop);
    for (int i = 0; i < 3; i++)
        assert_true(nodes[i].closed);
}

/* ---- TLS ----------------------------------------------------------------- */

/* The same behaviour with every link over TLS. */
#define WITH_TLS(name, test)                                                                       \
    static void name(void **state)                                                                 \
    {                                                                                              \
        tls_on = 1;                                                                                \
        test(state);                                                                               \
        tls_on = 0;                                                                                \
    }
WITH_TLS(test_tls_three_nodes_exchange_in_order, test_three_nodes_exchange_in_order)
WITH_TLS(test_tls_refuse_wrong_cluster, test_refuse_wrong_cluster)
WITH_TLS(test_tls_refuse_wrong_source_address, test_refuse_wrong_source_address)
WITH_TLS(test_tls_peer_restart_redials_and_reports_down, test_peer_restart_redials_and_reports_down)
WITH_TLS(test_tls_odd_payload_sizes, test_odd_payload_sizes)
WITH_TLS(test_tls_add_and_remove_members, test_add_and_remove_members)

/* Node 3's certificate comes from another CA: node 1 refuses it in the TLS
 * handshake, and node 1's own dial to node 3 fails as well. */
static void test_tls_refuse_other_ca(void **state)
{
    (void)state;
    tls_on = 1;
    setup_members(3);
    struct rtransport_config cfg = base_config(3);
    cfg.tls_accept = tls_accept[1][3];
    cfg.tls_dial = tls_dial[1][3];
    refusal_case(&cfg, 0, RTRANSPORT_REJECT_TLS, "certificate verify failed");
    tls_on = 0;
}

/* Node 3 presents node 2's (valid) certificate. */
static void test_tls_refuse_wrong_identity(void **state)
{
    (void)state;
    tls_on = 1;
    setup_members(3);
    struct rtransport_config cfg = base_config(3);
    cfg.tls_accept = tls_accept[0][2];
    cfg.tls_dial = tls_dial[0][2];
    refusal_case(&cfg, 0, RTRANSPORT_REJECT_IDENTITY,
                 "says it is node 3 but its certificate (CN=ferry-node-2) does not name "
                 "ferry-node-3");
    tls_on = 0;
}

/* A plaintext node dials a TLS node. */
static void test_tls_refuse_plaintext_peer(void **state)
{
    (void)state;
    tls_on = 1;
    setup_members(3);
    struct rtransport_config cfg = base_config(3);
    cfg.tls_accept = NULL;
    cfg.tls_dial = NULL;
    refusal_case(&cfg, 0, RTRANSPORT_REJECT_TLS, "does not speak TLS");
    tls_on = 0;
}

/* Certificate reload: after rtransport_set_tls, new connections use the new
 * contexts and links that are up keep theirs. Node 2 switches to another
 * CA's certificate; its link to node 3 stays up, and node 1, restarted,
 * can no longer link with it. */
static int node1_refused_tls(void *ctx)
{
    struct node *n = ctx;
    struct rtransport_peer_stats ps;
    assert_int_equal(rtransport_peer_stats(&n[0].t, 2, &ps), 0);
    return rtransport_stats(&n[0].t)->rejected[RTRANSPORT_REJECT_TLS] >= 1 && ps.tls_failed >= 1;
}

static int node3_got_two_more(void *ctx)
{
    struct node *n = ctx;
    return n[2].recv[2] >= 2;
}

static void test_tls_set_tls_applies_to_new_connections(void **state)
{
    (void)state;
    tls_on = 1;
    uv_loop_t loop;
    uv_loop_init(&loop);
    setup_members(3);
    struct node nodes[3];
    for (uint32_t i = 0; i < 3; i++)
        node_start(&nodes[i], &loop, i + 1);
    struct mesh m = {nodes, 3};
    run_until(&loop, mesh_connected, &m, WAIT_MS);

    rtransport_set_tls(&nodes[1].t, tls_accept[1][2], tls_dial[1][2]);
    node_close(&nodes[0]);
    run_for(&loop, 100);
    node_start(&nodes[0], &loop, 1);
    run_until(&loop, node1_refused_tls, nodes, WAIT_MS);
    assert_false(peer_connected(&nodes[0], 2));
    assert_true(peer_connected(&nodes[0], 3));
    /* The link from node 2 to node 3 predates the switch and carries on. */
    assert_true(peer_connected(&nodes[1], 3));
    assert_int_equal(send_seq(&nodes[1], 3, 0, 10), 0);
    assert_int_equal(send_seq(&nodes[1], 3, 1, 10), 0);
    run_until(&loop, node3_got_two_more, nodes, WAIT_MS);
    assert_false(nodes[2].bad);
    for (int i = 0; i < 3; i++)
        node_close(&nodes[i]);
    finish(&loop);
    tls_on = 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_three_nodes_exchange_in_order),
        cmocka_unit_test(test_send_errors_and_config_checks),
        cmocka_unit_test(test_refuse_wrong_cluster),
        cmocka_unit_test(test_refuse_unknown_node),
        cmocka_unit_test(test_refuse_wrong_source_address),
        cmocka_unit_test(test_refuse_garbage),
        cmocka_unit_test(test_close_oversized_frame),
        cmocka_unit_test(test_silent_connection_times_out),
        cmocka_unit_test(test_slow_hello_accepted),
        cmocka_unit_test(test_peer_restart_redials_and_reports_down),
        cmocka_unit_test(test_backpressure_busy_and_bounded),
        cmocka_unit_test(test_odd_payload_sizes),
        cmocka_unit_test(test_add_and_remove_members),
        cmocka_unit_test(test_tls_three_nodes_exchange_in_order),
        cmocka_unit_test(test_tls_refuse_wrong_cluster),
        cmocka_unit_test(test_tls_refuse_wrong_source_address),
        cmocka_unit_test(test_tls_peer_restart_redials_and_reports_down),
        cmocka_unit_test(test_tls_odd_payload_sizes),
        cmocka_unit_test(test_tls_add_and_remove_members),
        cmocka_unit_test(test_tls_refuse_other_ca),
        cmocka_unit_test(test_tls_refuse_wrong_identity),
        cmocka_unit_test(test_tls_refuse_plaintext_peer),
        cmocka_unit_test(test_tls_set_tls_applies_to_new_connections),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
