/* test_proto.c - the wire codec: frame detection, round trips of every typed
 * message, and malformed input (truncation at every byte, bad lengths,
 * oversized strings, wrong versions). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "proto/proto.h"
#include "util/alloc.h"

/* Check the frame in b and return a pointer to its body. */
static const uint8_t *frame_body(const struct buf *b, uint8_t op, uint32_t req, size_t *len)
{
    struct proto_header h;
    size_t flen;
    assert_int_equal(proto_frame_check(b->data, b->len, UINT32_MAX, &h, &flen), 0);
    assert_int_equal(flen, b->len);
    assert_int_equal(h.op, op);
    assert_int_equal(h.request_id, req);
    assert_int_equal(h.version, PROTO_VERSION);
    *len = flen - PROTO_HEADER_SIZE;
    return b->data + PROTO_HEADER_SIZE;
}

/* Every strict prefix of a body must fail to decode (no reads past the end). */
#define ASSERT_TRUNCATIONS_FAIL(decode, body, len, msgtype)                    \
    do {                                                                       \
        for (size_t cut = 0; cut < (len); cut++) {                             \
            msgtype tmp_;                                                      \
            assert_int_equal(decode((body), cut, &tmp_), FERRY_EPROTO);        \
        }                                                                      \
    } while (0)

static void test_frame_check(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    assert_int_equal(proto_encode_empty(&b, PROTO_PING, 0, 7), 0);
    const uint8_t ping[] = {0, 0, 0, 8, 1, 2, 0, 0, 0, 0, 0, 7};
    assert_int_equal(b.len, sizeof ping);
    assert_memory_equal(b.data, ping, sizeof ping);
    struct proto_header h;
    size_t flen;
    for (size_t n = 0; n < b.len; n++)
        assert_int_equal(proto_frame_check(b.data, n, 1024, &h, &flen), FERRY_EAGAIN);
    /* length below the header */
    uint8_t bad[12] = {0, 0, 0, 7, 1, 2, 0, 0, 0, 0, 0, 1};
    assert_int_equal(proto_frame_check(bad, sizeof bad, 1024, &h, &flen), FERRY_EPROTO);
    /* wrong version */
    uint8_t v2[12] = {0, 0, 0, 8, 2, 2, 0, 0, 0, 0, 0, 1};
    assert_int_equal(proto_frame_check(v2, sizeof v2, 1024, &h, &flen), FERRY_EVERSION);
    /* too big: rejected from the header alone, request id still reported */
    uint8_t big[12] = {0x7f, 0xff, 0xff, 0xff, 1, 0x10, 0, 0, 0, 0, 0, 42};
    assert_int_equal(proto_frame_check(big, sizeof big, 1 << 20, &h, &flen), FERRY_ETOOBIG);
    assert_int_equal(h.request_id, 42);
    buf_free(&b);
}

static void test_publish_round_trip_and_truncation(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    const uint8_t payload[] = {0, 1, 2, 3, 255, 254, 'x'};
    struct proto_publish in = {.pflags = PROTO_PUB_TRANSIENT,
                               .producer_seq = 0x0102030405060708ull,
                               .payload = payload,
                               .payload_len = sizeof payload};
    snprintf(in.name, sizeof in.name, "orders.eu/1");
    assert_int_equal(proto_encode_publish(&b, PROTO_PUBLISH, 99, &in), 0);
    size_t len;
    const uint8_t *body = frame_body(&b, PROTO_PUBLISH, 99, &len);
    struct proto_publish out;
    assert_int_equal(proto_decode_publish(body, len, &out), 0);
    assert_string_equal(out.name, "orders.eu/1");
    assert_int_equal(out.pflags, PROTO_PUB_TRANSIENT);
    assert_int_equal(out.producer_seq, in.producer_seq);
    assert_int_equal(out.payload_len, sizeof payload);
    assert_memory_equal(out.payload, payload, sizeof payload);
    ASSERT_TRUNCATIONS_FAIL(proto_decode_publish, body, len, struct proto_publish);
    buf_free(&b);
}

static void test_every_message_round_trips(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    size_t len;
    const uint8_t *body;

    struct proto_hello hello = {.producer_id = {1, 2, 3}};
    snprintf(hello.client_name, sizeof hello.client_name, "cli");
    assert_int_equal(proto_encode_hello(&b, 1, &hello), 0);
    body = frame_body(&b, PROTO_HELLO, 1, &len);
    struct proto_hello hello2;
    assert_int_equal(proto_decode_hello(body, len, &hello2), 0);
    assert_string_equal(hello2.client_name, "cli");
    assert_memory_equal(hello2.producer_id, hello.producer_id, 16);
    ASSERT_TRUNCATIONS_FAIL(proto_decode_hello, body, len, struct proto_hello);

    static struct proto_hello_ok hok, hok2;
    hok.version = 1;
    snprintf(hok.server_version, sizeof hok.server_version, "ferryd 0.1.0");
    hok.node_id = 3;
    hok.max_frame = 1 << 20;
    hok.max_message = 1000;
    snprintf(hok.role, sizeof hok.role, "leader");
    hok.endpoint_count = 2;
    snprintf(hok.endpoints[0], sizeof hok.endpoints[0], "h1:7878");
    snprintf(hok.endpoints[1], sizeof hok.endpoints[1], "[::1]:7878");
    buf_reset(&b);
    assert_int_equal(proto_encode_hello_ok(&b, 1, &hok), 0);
    body = frame_body(&b, PROTO_HELLO_OK, 1, &len);
    assert_int_equal(proto_decode_hello_ok(body, len, &hok2), 0);
    assert_int_equal(hok2.node_id, 3);
    assert_int_equal(hok2.endpoint_count, 2);
    assert_string_equal(hok2.endpoints[1], "[::1]:7878");
    assert_string_equal(hok2.role, "leader");

    struct proto_subscribe sub = {.start = PROTO_START_DURABLE, .from_id = 5, .window = 10};
    snprintf(sub.channel, sizeof sub.channel, "news");
    snprintf(sub.durable, sizeof sub.durable, "reader");
    buf_reset(&b);
    assert_int_equal(proto_encode_subscribe(&b, 2, &sub), 0);
    body = frame_body(&b, PROTO_SUBSCRIBE, 2, &len);
    struct proto_subscribe sub2;
    assert_int_equal(proto_decode_subscribe(body, len, &sub2), 0);
    assert_string_equal(sub2.durable, "reader");
    assert_int_equal(sub2.from_id, 5);
    assert_int_equal(sub2.window, 10);
    ASSERT_TRUNCATIONS_FAIL(proto_decode_subscribe, body, len, struct proto_subscribe);

    struct proto_create cr = {.kind = PROTO_KIND_QUEUE, .capacity = 10, .ttl_ms = 3000,
                              .max_deliveries = 4};
    snprintf(cr.name, sizeof cr.name, "jobs");
    snprintf(cr.dlq, sizeof cr.dlq, "jobs.dead");
    buf_reset(&b);
    assert_int_equal(proto_encode_create(&b, 3, &cr), 0);
    body = frame_body(&b, PROTO_CREATE, 3, &len);
    struct proto_create cr2;
    assert_int_equal(proto_decode_create(body, len, &cr2), 0);
    assert_int_equal(cr2.capacity, 10);
    assert_int_equal(cr2.ttl_ms, 3000);
    assert_int_equal(cr2.max_deliveries, 4);
    assert_string_equal(cr2.dlq, "jobs.dead");
    ASSERT_TRUNCATIONS_FAIL(proto_decode_create, body, len, struct proto_create);

    struct proto_delivery d = {.consumer_id = 7, .item_id = 8, .delivery_count = 2,
                               .timestamp_ms = 12345, .payload = (const uint8_t *)"abc",
                               .payload_len = 3};
    buf_reset(&b);
    assert_int_equal(proto_encode_delivery(&b, &d), 0);
    body = frame_body(&b, PROTO_DELIVERY, 0, &len);
    struct proto_delivery d2;
    assert_int_equal(proto_decode_delivery(body, len, &d2), 0);
    assert_int_equal(d2.delivery_count, 2);
    assert_int_equal(d2.item_id, 8);
    assert_memory_equal(d2.payload, "abc", 3);
    ASSERT_TRUNCATIONS_FAIL(proto_decode_delivery, body, len, struct proto_delivery);

    struct proto_event e = {.sub_id = 1, .event_id = 99, .timestamp_ms = 5, .eflags = 0,
                            .payload = (const uint8_t *)"", .payload_len = 0};
    buf_reset(&b);
    assert_int_equal(proto_encode_event(&b, &e), 0);
    body = frame_body(&b, PROTO_EVENT, 0, &len);
    struct proto_event e2;
    assert_int_equal(proto_decode_event(body, len, &e2), 0);
    assert_int_equal(e2.event_id, 99);
    assert_int_equal(e2.payload_len, 0);

    struct proto_error er = {.code = FERRY_ENOTLEADER};
    snprintf(er.message, sizeof er.message, "node 2 is a follower");
    snprintf(er.leader, sizeof er.leader, "10.0.0.1:7878");
    buf_reset(&b);
    assert_int_equal(proto_encode_error(&b, 44, &er), 0);
    body = frame_body(&b, PROTO_ERROR, 44, &len);
    struct proto_error er2;
    assert_int_equal(proto_decode_error(body, len, &er2), 0);
    assert_int_equal(er2.code, FERRY_ENOTLEADER);
    assert_string_equal(er2.leader, "10.0.0.1:7878");
    ASSERT_TRUNCATIONS_FAIL(proto_decode_error, body, len, struct proto_error);

    struct proto_info items[2];
    memset(items, 0, sizeof items);
    items[0].kind = PROTO_KIND_CHANNEL;
    snprintf(items[0].name, sizeof items[0].name, "a");
    items[0].last_id = 9;
    items[1].kind = PROTO_KIND_QUEUE;
    snprintf(items[1].name, sizeof items[1].name, "b");
    items[1].unacked = 4;
    buf_reset(&b);
    assert_int_equal(proto_encode_list_ok(&b, 5, items, 2), 0);
    body = frame_body(&b, PROTO_LIST_OK, 5, &len);
    struct proto_reader r;
    uint32_t n;
    assert_int_equal(proto_decode_list_ok(body, len, &r, &n), 0);
    assert_int_equal(n, 2);
    struct proto_info got;
    assert_int_equal(proto_decode_info(&r, &got), 0);
    assert_int_equal(got.last_id, 9);
    assert_int_equal(proto_decode_info(&r, &got), 0);
    assert_string_equal(got.name, "b");
    assert_int_equal(got.unacked, 4);
    assert_int_equal(proto_decode_info(&r, &got), FERRY_EPROTO); /* no third record */

    static struct proto_status st, st2;
    st.count = 2;
    snprintf(st.kv[0].key, sizeof st.kv[0].key, "role");
    snprintf(st.kv[0].value, sizeof st.kv[0].value, "leader");
    snprintf(st.kv[1].key, sizeof st.kv[1].key, "term");
    snprintf(st.kv[1].value, sizeof st.kv[1].value, "7");
    buf_reset(&b);
    assert_int_equal(proto_encode_status_ok(&b, 6, &st), 0);
    body = frame_body(&b, PROTO_STATUS_OK, 6, &len);
    assert_int_equal(proto_decode_status_ok(body, len, &st2), 0);
    assert_int_equal(st2.count, 2);
    assert_string_equal(st2.kv[1].value, "7");

    struct proto_ack a = {.consumer_id = 3, .item_id = 4};
    buf_reset(&b);
    assert_int_equal(proto_encode_ack(&b, PROTO_NACK, PROTO_F_NOREPLY, 8, &a), 0);
    struct proto_header h;
    size_t flen;
    assert_int_equal(proto_frame_check(b.data, b.len, 4096, &h, &flen), 0);
    assert_int_equal(h.flags, PROTO_F_NOREPLY);
    assert_int_equal(h.op, PROTO_NACK);
    buf_free(&b);
}

static void test_strings_are_bounded(void **state)
{
    (void)state;
    /* A name of 300 bytes cannot land in a 256-byte field. */
    struct buf b;
    buf_init(&b);
    struct proto_writer w;
    proto_begin(&w, &b, PROTO_INFO, 0, 1);
    char longname[301];
    memset(longname, 'n', 300);
    longname[300] = '\0';
    proto_put_str(&w, longname);
    assert_int_equal(proto_end(&w), 0);
    char name[PROTO_NAME_MAX + 1];
    assert_int_equal(proto_decode_name(b.data + PROTO_HEADER_SIZE, b.len - PROTO_HEADER_SIZE, name,
                                       sizeof name),
                     FERRY_EPROTO);
    /* Embedded NUL in a string is malformed. */
    buf_reset(&b);
    proto_begin(&w, &b, PROTO_INFO, 0, 1);
    proto_put_u16(&w, 3);
    proto_put_u8(&w, 'a');
    proto_put_u8(&w, 0);
    proto_put_u8(&w, 'b');
    assert_int_equal(proto_end(&w), 0);
    assert_int_equal(proto_decode_name(b.data + PROTO_HEADER_SIZE, b.len - PROTO_HEADER_SIZE, name,
                                       sizeof name),
                     FERRY_EPROTO);
    buf_free(&b);
}

static void test_encode_enomem_rolls_back(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    assert_int_equal(proto_encode_empty(&b, PROTO_PING, 0, 1), 0);
    size_t before = b.len;
    static uint8_t big[100000];
    struct proto_publish m = {.payload = big, .payload_len = sizeof big};
    snprintf(m.name, sizeof m.name, "x");
    alloc_set_fault(0, 1);
    assert_int_equal(proto_encode_publish(&b, PROTO_PUBLISH, 2, &m), FERRY_ENOMEM);
    alloc_set_fault(-1, 0);
    assert_int_equal(b.len, before);
    buf_free(&b);
}

/* ADMIN: byte layout, round trip of each action, truncation, oversized address. */
static void test_admin(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    struct proto_admin in = {.action = PROTO_ADMIN_ADD_NODE, .node_id = 0x01020304, .priority = 7};
    snprintf(in.address, sizeof in.address, "h4:9004");
    assert_int_equal(proto_encode_admin(&b, 5, &in), 0);
    size_t len;
    const uint8_t *body = frame_body(&b, PROTO_ADMIN, 5, &len);
    const uint8_t expect[] = {2, 1, 2, 3, 4, 7, 0, 7, 'h', '4', ':', '9', '0', '0', '4'};
    assert_int_equal(len, sizeof expect);
    assert_memory_equal(body, expect, sizeof expect);
    assert_int_equal(b.data[5], 0x30);
    struct proto_admin out;
    assert_int_equal(proto_decode_admin(body, len, &out), 0);
    assert_int_equal(out.action, PROTO_ADMIN_ADD_NODE);
    assert_int_equal(out.node_id, 0x01020304);
    assert_int_equal(out.priority, 7);
    assert_string_equal(out.address, "h4:9004");
    ASSERT_TRUNCATIONS_FAIL(proto_decode_admin, body, len, struct proto_admin);
    static const uint8_t actions[] = {PROTO_ADMIN_TRANSFER, PROTO_ADMIN_REMOVE_NODE,
                                      PROTO_ADMIN_SNAPSHOT};
    for (size_t i = 0; i < sizeof actions; i++) {
        b.len = 0;
        struct proto_admin a = {.action = actions[i], .node_id = (uint32_t)i};
        assert_int_equal(proto_encode_admin(&b, 6, &a), 0);
        body = frame_body(&b, PROTO_ADMIN, 6, &len);
        assert_int_equal(proto_decode_admin(body, len, &out), 0);
        assert_int_equal(out.action, actions[i]);
        assert_int_equal(out.node_id, i);
        assert_string_equal(out.address, "");
    }
    /* An address longer than PROTO_NAME_MAX does not decode. */
    b.len = 0;
    struct proto_writer w;
    char big[PROTO_NAME_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    proto_begin(&w, &b, PROTO_ADMIN, 0, 1);
    proto_put_u8(&w, PROTO_ADMIN_ADD_NODE);
    proto_put_u32(&w, 4);
    proto_put_u8(&w, 1);
    proto_put_str(&w, big);
    assert_int_equal(proto_end(&w), 0);
    body = frame_body(&b, PROTO_ADMIN, 1, &len);
    assert_int_equal(proto_decode_admin(body, len, &out), FERRY_EPROTO);
    assert_string_equal(proto_op_name(PROTO_ADMIN), "ADMIN");
    buf_free(&b);
}

static void test_names(void **state)
{
    (void)state;
    assert_int_equal(proto_name_valid("orders"), 0);
    assert_int_equal(proto_name_valid("a.b_c-d:e/f9"), 0);
    assert_int_equal(proto_name_valid(""), FERRY_EINVAL);
    assert_int_equal(proto_name_valid("has space"), FERRY_EINVAL);
    assert_int_equal(proto_name_valid("semi;colon"), FERRY_EINVAL);
    char n256[257];
    memset(n256, 'a', 256);
    n256[256] = '\0';
    assert_int_equal(proto_name_valid(n256), FERRY_EINVAL);
    n256[255] = '\0';
    assert_int_equal(proto_name_valid(n256), 0);
    assert_string_equal(proto_op_name(PROTO_SUB_ACK), "SUB_ACK");
    assert_string_equal(proto_op_name(0x77), "UNKNOWN");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_check),
        cmocka_unit_test(test_publish_round_trip_and_truncation),
        cmocka_unit_test(test_every_message_round_trips),
        cmocka_unit_test(test_strings_are_bounded),
        cmocka_unit_test(test_encode_enomem_rolls_back),
        cmocka_unit_test(test_admin),
        cmocka_unit_test(test_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
