/* test_node_protocol.c - one real ferryd, driven through the raw wire protocol:
 * bad input (garbage, oversized frames, missing HELLO, malformed bodies, big
 * payloads) gets an error and leaves the server serving others; queue
 * redelivery after a consumer disconnects; bad configuration; clean SIGTERM;
 * bounded memory under a subscriber that does not read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct node node;

static int setup(void **state)
{
    (void)state;
    alarm(300);
    node_init(&node);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    node_destroy(&node);
    return 0;
}

static int start_node(const char *const *extra)
{
    int rc = node_start(&node, extra);
    if (rc != 0) {
        fprintf(stderr, "ferryd did not start; log %s\n", node.log);
        char cmd[400];
        snprintf(cmd, sizeof cmd, "cat %s >&2", node.log);
        if (system(cmd) != 0)
            fprintf(stderr, "(no log)\n");
    }
    return rc;
}

/* Read frames until one with request id req (skipping pushes); returns its op. */
static int expect_reply(int fd, uint32_t req, struct buf *frame)
{
    struct proto_header h;
    for (;;) {
        int rc = conn_read_frame(fd, frame, &h, 10000);
        if (rc != 0)
            return -1;
        if (h.request_id == req && h.op != PROTO_EVENT && h.op != PROTO_DELIVERY)
            return h.op;
    }
}

static int error_code(const struct buf *frame)
{
    struct proto_error e;
    assert_int_equal(proto_decode_error(frame->data + PROTO_HEADER_SIZE,
                                        frame->len - PROTO_HEADER_SIZE, &e),
                     0);
    return e.code;
}

static int ping_works(void)
{
    int fd = conn_open(node.port);
    if (fd < 0 || conn_hello(fd) != 0)
        return 0;
    struct buf b;
    buf_init(&b);
    proto_encode_empty(&b, PROTO_PING, 0, 9);
    int ok = conn_send(fd, &b) == 0 && expect_reply(fd, 9, &b) == PROTO_PONG;
    buf_free(&b);
    close(fd);
    return ok;
}

static uint64_t push(int fd, uint32_t req, const char *queue, const char *payload)
{
    struct buf b;
    buf_init(&b);
    struct proto_publish m;
    memset(&m, 0, sizeof m);
    snprintf(m.name, sizeof m.name, "%s", queue);
    m.payload = (const uint8_t *)payload;
    m.payload_len = (uint32_t)strlen(payload);
    proto_encode_publish(&b, PROTO_PUSH, req, &m);
    assert_int_equal(conn_send(fd, &b), 0);
    assert_int_equal(expect_reply(fd, req, &b), PROTO_PUBLISH_OK);
    uint64_t id;
    assert_int_equal(proto_decode_id(b.data + PROTO_HEADER_SIZE, b.len - PROTO_HEADER_SIZE, &id),
                     0);
    buf_free(&b);
    return id;
}

static void test_garbage_gets_error_and_server_stays_up(void **state)
{
    (void)state;
    assert_int_equal(start_node(NULL), 0);
    int fd = conn_open(node.port);
    assert_true(fd >= 0);
    const char *garbage = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(conn_send_raw(fd, garbage, strlen(garbage)), 0);
    struct buf f;
    buf_init(&f);
    struct proto_header h;
    assert_int_equal(conn_read_frame(fd, &f, &h, 5000), 0);
    assert_int_equal(h.op, PROTO_ERROR);
    int code = error_code(&f);
    assert_true(code == FERRY_EPROTO || code == FERRY_EVERSION || code == FERRY_ETOOBIG);
    assert_true(conn_closed(fd, 5000));
    close(fd);
    assert_true(ping_works());
    buf_free(&f);
}

static void test_oversized_frame_rejected_before_body(void **state)
{
    (void)state;
    assert_int_equal(start_node(NULL), 0);
    int fd = conn_open(node.port);
    assert_true(fd >= 0);
    assert_int_equal(conn_hello(fd), 0);
    /* A header announcing 2 GiB; the body never comes. */
    uint8_t hdr[PROTO_HEADER_SIZE];
    put_u32(hdr, 0x7fffffffu);
    hdr[4] = PROTO_VERSION;
    hdr[5] = PROTO_PUBLISH;
    put_u16(hdr + 6, 0);
    put_u32(hdr + 8, 77);
    assert_int_equal(conn_send_raw(fd, hdr, sizeof hdr), 0);
    struct buf f;
    buf_init(&f);
    struct proto_header h;
    assert_int_equal(conn_read_frame(fd, &f, &h, 5000), 0);
    assert_int_equal(h.op, PROTO_ERROR);
    assert_int_equal(h.request_id, 77);
    assert_int_equal(error_code(&f), FERRY_ETOOBIG);
    assert_true(conn_closed(fd, 5000));
    close(fd);
    assert_true(ping_works());
    buf_free(&f);
}

static void test_payload_over_max_message_size(void **state)
{
    (void)state;
    const char *extra[] = {"--max_message_size", "1K", NULL};
    assert_int_equal(start_node(extra), 0);
    int fd = conn_open(node.port);
    assert_int_equal(conn_hello(fd), 0);
    char big[2000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    struct buf b;
    buf_init(&b);
    struct proto_publish m;
    memset(&m, 0, sizeof m);
    snprintf(m.name, sizeof m.name, "big");
    m.payload = (const uint8_t *)big;
    m.payload_len = (uint32_t)strlen(big);
    proto_encode_publish(&b, PROTO_PUBLISH, 5, &m);
    assert_int_equal(conn_send(fd, &b), 0);
    assert_int_equal(expect_reply(fd, 5, &b), PROTO_ERROR);
    assert_int_equal(error_code(&b), FERRY_ETOOBIG);
    /* The connection stays usable and nothing was stored. */
    assert_int_equal(push(fd, 6, "small", "fits"), 1);
    buf_free(&b);
    close(fd);
}

static void test_first_frame_must_be_hello_and_bodies_must_parse(void **state)
{
    (void)state;
    assert_int_equal(start_node(NULL), 0);
    int fd = conn_open(node.port);
    struct buf b;
    buf_init(&b);
    proto_encode_empty(&b, PROTO_PING, 0, 3);
    assert_int_equal(conn_send(fd, &b), 0);
    assert_int_equal(expect_reply(fd, 3, &b), PROTO_ERROR);
    assert_int_equal(error_code(&b), FERRY_EPROTO);
    assert_true(conn_closed(fd, 5000));
    close(fd);

    /* A PUBLISH whose body is cut short. */
    fd = conn_open(node.port);
    assert_int_equal(conn_hello(fd), 0);
    struct proto_writer w;
    buf_reset(&b);
    proto_begin(&w, &b, PROTO_PUBLISH, 0, 4);
    proto_put_u16(&w, 200); /* a name length with no name behind it */
    assert_int_equal(proto_end(&w), 0);
    assert_int_equal(conn_send(fd, &b), 0);
    assert_int_equal(expect_reply(fd, 4, &b), PROTO_ERROR);
    assert_int_equal(error_code(&b), FERRY_EPROTO);
    assert_true(conn_closed(fd, 5000));
    close(fd);

    /* Unknown op: answered, connection stays. Invalid name: EINVAL. */
    fd = conn_open(node.port);
    assert_int_equal(conn_hello(fd), 0);
    proto_encode_empty(&b, 0x7e, 0, 8);
    assert_int_equal(conn_send(fd, &b), 0);
    assert_int_equal(expect_reply(fd, 8, &b), PROTO_ERROR);
    assert_int_equal(error_code(&b), FERRY_ENOTSUP);
    buf_reset(&b);
    proto_encode_name(&b, PROTO_INFO, 10, "no such thing");
    assert_int_equal(conn_send(fd, &b), 0);
    assert_int_equal(expect_reply(fd, 10, &b), PROTO_ERROR);
    assert_int_equal(error_code(&b), FERRY_ENOTFOUND);
    assert_int_equal(push(fd, 11, "still-ok", "yes"), 1);
    close(fd);
    buf_free(&b);
    assert_true(ping_works());
}

static void test_consumer_disconnect_redelivers(void **state)
{
    (void)state;
    assert_int_equal(start_node(NULL), 0);
    int fd = conn_open(node.port);
    assert_int_equal(conn_hello(fd), 0);
    for (int i = 1; i <= 5; i++) {
        char p[16];
        snprintf(p, sizeof p, "job-%d", i);
        assert_int_equal(push(fd, (uint32_t)i, "jobs", p), (uint64_t)i);
    }
    struct buf b;
    buf_init(&b);
    struct proto_consume c = {.prefetch = 10};
    snprintf(c.queue, sizeof c.queue, "jobs");
    /* Consumer 1 takes all five and disappears without acking. */
    int c1 = conn_open(node.port);
    assert_int_equal(conn_hello(c1), 0);
    proto_encode_consume(&b, 20, &c);
    assert_int_equal(conn_send(c1, &b), 0);
    assert_int_equal(expect_reply(c1, 20, &b), PROTO_CONSUME_OK);
    struct proto_header h;
    for (int i = 1; i <= 5; i++) {
        assert_int_equal(conn_read_frame(c1, &b, &h, 5000), 0);
        assert_int_equal(h.op, PROTO_DELIVERY);
        struct proto_delivery d;
        assert_int_equal(proto_decode_delivery(b.data + PROTO_HEADER_SIZE,
                                               b.len - PROTO_HEADER_SIZE, &d),
                         0);
        assert_int_equal(d.item_id, (uint64_t)i);
        assert_int_equal(d.delivery_count, 1);
    }
    close(c1);
    /* Consumer 2 gets them again, counted as second deliveries, and acks. */
    int c2 = conn_open(node.port);
    assert_int_equal(conn_hello(c2), 0);
    buf_reset(&b);
    proto_encode_consume(&b, 30, &c);
    assert_int_equal(conn_send(c2, &b), 0);
    assert_int_equal(expect_reply(c2, 30, &b), PROTO_CONSUME_OK);
    uint64_t cid;
    proto_decode_id(b.data + PROTO_HEADER_SIZE, b.len - PROTO_HEADER_SIZE, &cid);
    int seen[6] = {0};
    for (int i = 1; i <= 5; i++) {
        assert_int_equal(conn_read_frame(c2, &b, &h, 5000), 0);
        assert_int_equal(h.op, PROTO_DELIVERY);
        struct proto_delivery d;
        proto_decode_delivery(b.data + PROTO_HEADER_SIZE, b.len - PROTO_HEADER_SIZE, &d);
        assert_true(d.item_id >= 1 && d.item_id <= 5);
        assert_int_equal(d.delivery_count, 2);
        char want[16];
        snprintf(want, sizeof want, "job-%llu", (unsigned long long)d.item_id);
        assert_int_equal(d.payload_len, strlen(want));
        assert_memory_equal(d.payload, want, d.payload_len);
        seen[d.item_id]++;
        struct proto_ack a = {.consumer_id = cid, .item_id = d.item_id};
        struct buf ab;
        buf_init(&ab);
        proto_encode_ack(&ab, PROTO_ACK, 0, 100 + (uint32_t)i, &a);
        assert_int_equal(conn_send(c2, &ab), 0);
        buf_free(&ab);
    }
    for (int i = 1; i <= 5; i++)
        assert_int_equal(seen[i], 1);
    for (int i = 1; i <= 5; i++)
        assert_int_equal(expect_reply(c2, 100 + (uint32_t)i, &b), PROTO_OK);
    /* Nothing left. */
    buf_reset(&b);
    proto_encode_name(&b, PROTO_INFO, 200, "jobs");
    assert_int_equal(conn_send(fd, &b), 0);
    assert_int_equal(expect_reply(fd, 200, &b), PROTO_INFO_OK);
    struct proto_info info;
    assert_int_equal(proto_decode_info_ok(b.data + PROTO_HEADER_SIZE, b.len - PROTO_HEADER_SIZE,
                                          &info),
                     0);
    assert_int_equal(info.count, 0);
    close(c2);
    close(fd);
    buf_free(&b);
}

static void test_bad_config_names_key(void **state)
{
    (void)state;
    const char *extra[] = {"--max_message_size", "lots", NULL};
    assert_int_equal(node_start(&node, extra), -1);
    assert_int_equal(node.exit_status, 2);
    assert_true(node_log_contains(&node, "max_message_size"));
    assert_true(node_log_contains(&node, "lots"));
    const char *extra2[] = {"--client_endpoint", "127.0.0.1:99999", NULL};
    assert_int_equal(node_start(&node, extra2), -1);
    assert_int_equal(node.exit_status, 2);
    assert_true(node_log_contains(&node, "99999"));
}

static void test_sigterm_stops_cleanly(void **state)
{
    (void)state;
    assert_int_equal(start_node(NULL), 0);
    int fd = conn_open(node.port);
    assert_int_equal(conn_hello(fd), 0);
    assert_int_equal(push(fd, 1, "q", "kept"), 1);
    node_signal(&node, SIGTERM);
    assert_int_equal(node_wait(&node, 10000), 0);
    assert_true(node_log_contains(&node, "stopped cleanly"));
    close(fd);
    /* Restart: the item is still there. */
    assert_int_equal(start_node(NULL), 0);
    fd = conn_open(node.port);
    assert_int_equal(conn_hello(fd), 0);
    assert_int_equal(push(fd, 2, "q", "second"), 2);
    close(fd);
}

static void test_second_ferryd_on_same_data_dir_refused(void **state)
{
    (void)state;
    assert_int_equal(start_node(NULL), 0);
    struct node other = node;
    other.pid = 0;
    uint16_t port = node.port;
    struct node tmp;
    node_init(&tmp);
    other.port = tmp.port;
    node_destroy(&tmp);
    snprintf(other.log, sizeof other.log, "%s/other.log", node.dir);
    assert_int_equal(node_start(&other, NULL), -1);
    assert_int_equal(other.exit_status, 1);
    assert_true(node_log_contains(&other, "in use by another ferryd"));
    node.port = port;
    assert_true(ping_works());
}

/* A STATUS figure in KiB. */
static long status_kib(const char *key)
{
    char v[32] = "";
    if (node_status(&node, key, v, sizeof v) != 0)
        fail_msg("STATUS has no %s", key);
    return (long)(strtoull(v, NULL, 10) / 1024);
}

/* A subscriber that stops reading must not make the server buffer without
 * bound: output stops at output_buffer_limit and the rest waits on disk.
 * Measured as heap in use (live allocations, heap_in_use_bytes of STATUS)
 * rather than RSS, which also holds freed memory the allocator keeps. The
 * Raft log keeps applied entries in memory until a snapshot covers them
 * (docs/cluster.md); STATUS reports it (log_memory_bytes), so it is taken
 * out of the figure, and a small logfile_max_size keeps it small. */
static void test_stalled_subscriber_bounded_memory(void **state)
{
    (void)state;
    setenv("ASAN_OPTIONS", "quarantine_size_mb=1:detect_leaks=1", 1);
    const char *extra[] = {"--output_buffer_limit", "1M", "--logfile_max_size", "4M", NULL};
    assert_int_equal(start_node(extra), 0);
    int sub = conn_open(node.port);
    assert_int_equal(conn_hello(sub), 0);
    struct buf b;
    buf_init(&b);
    struct proto_subscribe s;
    memset(&s, 0, sizeof s);
    snprintf(s.channel, sizeof s.channel, "firehose");
    s.start = PROTO_START_NEW;
    proto_encode_subscribe(&b, 1, &s);
    assert_int_equal(conn_send(sub, &b), 0);
    assert_int_equal(expect_reply(sub, 1, &b), PROTO_SUBSCRIBE_OK);

    int pub = conn_open(node.port);
    assert_int_equal(conn_hello(pub), 0);
    /* ~192 MiB of 32 KiB events: buffering them would dwarf the fixed costs
     * (page caches, the Raft log kept until a snapshot) that also show in RSS. */
    int N = getenv("STALL_N") ? atoi(getenv("STALL_N")) : 6000;
    enum { SIZE = 32 * 1024 };
    char *payload = malloc(SIZE);
    memset(payload, 'p', SIZE);
    struct proto_publish m;
    memset(&m, 0, sizeof m);
    snprintf(m.name, sizeof m.name, "firehose");
    m.payload = (const uint8_t *)payload;
    m.payload_len = SIZE;
    long rss_half = 0, heap_half = 0, log_half = 0;
    for (int i = 0; i < N; i += 100) {
        if (i == N / 2) {
            rss_half = node_rss_kib(&node);
            heap_half = status_kib("heap_in_use_bytes");
            log_half = status_kib("log_memory_bytes");
        }
        buf_reset(&b);
        for (int j = 0; j < 100; j++) {
            memcpy(payload, &i, sizeof i);
            proto_encode_publish(&b, PROTO_PUBLISH, (uint32_t)(1000 + i + j), &m);
        }
        assert_int_equal(conn_send(pub, &b), 0);
        for (int j = 0; j < 100; j++)
            assert_int_equal(expect_reply(pub, (uint32_t)(1000 + i + j), &b), PROTO_PUBLISH_OK);
    }
    /* Let the snapshot that follows the burst finish and release the log
     * entries it covers (the bound of docs/cluster.md), then measure. */
    char si[32] = "", li[32] = "";
    for (int t = 0; t < 10000; t += 50) {
        if (node_status(&node, "snapshot_index", si, sizeof si) == 0 &&
            node_status(&node, "applied_index", li, sizeof li) == 0 &&
            strtoull(si, NULL, 10) + 20 >= strtoull(li, NULL, 10))
            break;
        sleep_ms(50);
    }
    long rss_end = node_rss_kib(&node);
    long heap_end = status_kib("heap_in_use_bytes");
    long log_end = status_kib("log_memory_bytes");
    long added_kib = (long)(N - N / 2) * SIZE / 1024;
    long grew = (heap_end - log_end) - (heap_half - log_half);
    fprintf(stderr, "stalled subscriber: %ld KiB published in between; heap in use %ld -> %ld KiB "
            "(Raft log %ld -> %ld KiB), grew %ld KiB besides the log; rss %ld -> %ld KiB\n",
            added_kib, heap_half, heap_end, log_half, log_end, grew, rss_half, rss_end);
    /* Buffering the events would grow the heap by about what was published.
     * Under AddressSanitizer allocations bypass glibc's heap, so the bound is
     * checked in the release build (CI runs both). */
#if defined(__SANITIZE_ADDRESS__)
    fprintf(stderr, "stalled subscriber: heap bound not checked under AddressSanitizer\n");
#else
    assert_true(grew < added_kib / 8);
#endif

    /* Now read everything: every event arrives, in order, without gaps. */
    struct proto_header h;
    uint64_t expect = 1;
    while (expect <= (uint64_t)N) {
        assert_int_equal(conn_read_frame(sub, &b, &h, 20000), 0);
        if (h.op != PROTO_EVENT)
            continue;
        struct proto_event e;
        assert_int_equal(proto_decode_event(b.data + PROTO_HEADER_SIZE, b.len - PROTO_HEADER_SIZE,
                                            &e),
                         0);
        assert_int_equal(e.event_id, expect);
        assert_int_equal(e.payload_len, SIZE);
        expect++;
    }
    free(payload);
    buf_free(&b);
    close(pub);
    close(sub);
    unsetenv("ASAN_OPTIONS");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_garbage_gets_error_and_server_stays_up, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_oversized_frame_rejected_before_body, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_payload_over_max_message_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_frame_must_be_hello_and_bodies_must_parse,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_consumer_disconnect_redelivers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_config_names_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_stops_cleanly, setup, teardown),
        cmocka_unit_test_setup_teardown(test_second_ferryd_on_same_data_dir_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stalled_subscriber_bounded_memory, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
