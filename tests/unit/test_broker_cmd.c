/* test_broker_cmd.c - the command codec: round trips of every type,
 * concatenated entries, and malformed input (truncated, bad length, bad
 * type/flags, trailing bytes, random garbage) decoded as FERRY_ECORRUPT. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "broker/broker.h"
#include "util/rand.h"

static struct broker_cmd full_cmd(uint8_t type)
{
    struct broker_cmd c;
    memset(&c, 0, sizeof c);
    c.type = type;
    c.ts_ms = 0x0102030405060708ull;
    static const uint8_t payload[] = "hello, ferry";
    switch (type) {
    case BROKER_CMD_CREATE:
        c.kind = BROKER_QUEUE;
        strcpy(c.name, "orders");
        c.capacity = 10000;
        c.ttl_ms = 60000;
        c.max_deliveries = 5;
        strcpy(c.name2, "orders.dead");
        break;
    case BROKER_CMD_DELETE:
        strcpy(c.name, "a/b:c-d_e.f");
        break;
    case BROKER_CMD_PUBLISH:
    case BROKER_CMD_PUSH:
        c.flags = BROKER_CMDF_AUTO_CREATE;
        strcpy(c.name, "news");
        for (int i = 0; i < 16; i++)
            c.producer_id[i] = (uint8_t)(i + 1);
        c.producer_seq = 77;
        c.payload = payload;
        c.payload_len = sizeof payload - 1;
        break;
    case BROKER_CMD_ACK:
    case BROKER_CMD_RETURN:
        strcpy(c.name, "orders");
        c.id = UINT64_MAX - 1;
        break;
    case BROKER_CMD_DURABLE_CREATE:
    case BROKER_CMD_DURABLE_ACK:
        strcpy(c.name, "news");
        strcpy(c.name2, "reader");
        c.id = UINT64_MAX;
        break;
    case BROKER_CMD_DURABLE_DELETE:
        strcpy(c.name, "news");
        strcpy(c.name2, "reader");
        break;
    default:
        break;
    }
    return c;
}

static void assert_cmd_equal(const struct broker_cmd *a, const struct broker_cmd *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->flags, b->flags);
    assert_int_equal(a->ts_ms, b->ts_ms);
    assert_string_equal(a->name, b->name);
    assert_string_equal(a->name2, b->name2);
    assert_int_equal(a->kind, b->kind);
    assert_int_equal(a->capacity, b->capacity);
    assert_int_equal(a->ttl_ms, b->ttl_ms);
    assert_int_equal(a->max_deliveries, b->max_deliveries);
    assert_int_equal(a->id, b->id);
    assert_memory_equal(a->producer_id, b->producer_id, 16);
    assert_int_equal(a->producer_seq, b->producer_seq);
    assert_int_equal(a->payload_len, b->payload_len);
    if (a->payload_len)
        assert_memory_equal(a->payload, b->payload, a->payload_len);
}

static void test_round_trip_every_type(void **state)
{
    (void)state;
    for (uint8_t t = BROKER_CMD_NOOP; t <= BROKER_CMD_EXPIRE; t++) {
        struct broker_cmd in = full_cmd(t), out;
        struct buf b;
        buf_init(&b);
        assert_int_equal(broker_cmd_encode(&b, &in), 0);
        assert_int_equal(get_u32(b.data), b.len - 4);
        size_t used = 0;
        assert_int_equal(broker_cmd_decode(b.data, b.len, &out, &used), 0);
        assert_int_equal(used, b.len);
        assert_cmd_equal(&in, &out);
        buf_free(&b);
    }
}

static void test_publish_without_producer_is_compact(void **state)
{
    (void)state;
    struct broker_cmd in = full_cmd(BROKER_CMD_PUBLISH), out;
    memset(in.producer_id, 0, 16);
    in.producer_seq = 0;
    in.flags = 0; /* no auto-create attributes either */
    struct buf b;
    buf_init(&b);
    assert_int_equal(broker_cmd_encode(&b, &in), 0);
    /* header 14 + name (1 + 4) + payload (4 + 12) */
    assert_int_equal(b.len, 14 + 5 + 4 + 12);
    size_t used;
    assert_int_equal(broker_cmd_decode(b.data, b.len, &out, &used), 0);
    assert_cmd_equal(&in, &out);
    buf_free(&b);
    /* With AUTO_CREATE the attributes to create with travel along (20 bytes). */
    in.flags = BROKER_CMDF_AUTO_CREATE;
    in.capacity = 77;
    in.ttl_ms = 5000;
    in.max_deliveries = 3;
    buf_init(&b);
    assert_int_equal(broker_cmd_encode(&b, &in), 0);
    assert_int_equal(b.len, 14 + 5 + 20 + 4 + 12);
    assert_int_equal(broker_cmd_decode(b.data, b.len, &out, &used), 0);
    assert_int_equal(out.capacity, 77);
    assert_int_equal(out.ttl_ms, 5000);
    assert_int_equal(out.max_deliveries, 3);
    buf_free(&b);
}

static void test_entry_of_many_commands(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    for (uint8_t t = BROKER_CMD_NOOP; t <= BROKER_CMD_EXPIRE; t++) {
        struct broker_cmd c = full_cmd(t);
        assert_int_equal(broker_cmd_encode(&b, &c), 0);
    }
    size_t off = 0, used;
    uint8_t t = 0;
    struct broker_cmd out;
    while (off < b.len) {
        assert_int_equal(broker_cmd_decode(b.data + off, b.len - off, &out, &used), 0);
        struct broker_cmd want = full_cmd(t++);
        assert_cmd_equal(&want, &out);
        off += used;
    }
    assert_int_equal(t, BROKER_CMD_EXPIRE + 1);
    buf_free(&b);
}

static void test_empty_payload_and_max_name(void **state)
{
    (void)state;
    struct broker_cmd in = full_cmd(BROKER_CMD_PUSH), out;
    in.payload = NULL;
    in.payload_len = 0;
    memset(in.name, 'n', BROKER_NAME_MAX);
    in.name[BROKER_NAME_MAX] = '\0';
    struct buf b;
    buf_init(&b);
    assert_int_equal(broker_cmd_encode(&b, &in), 0);
    size_t used;
    assert_int_equal(broker_cmd_decode(b.data, b.len, &out, &used), 0);
    assert_int_equal(out.payload_len, 0);
    assert_int_equal(strlen(out.name), BROKER_NAME_MAX);
    buf_free(&b);
}

static void test_encode_rejects_invalid(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    struct broker_cmd c = full_cmd(BROKER_CMD_PUBLISH);
    c.type = 42;
    assert_int_equal(broker_cmd_encode(&b, &c), FERRY_EINVAL);
    c = full_cmd(BROKER_CMD_PUBLISH);
    c.flags = 0x40;
    assert_int_equal(broker_cmd_encode(&b, &c), FERRY_EINVAL);
    c = full_cmd(BROKER_CMD_PUBLISH);
    c.payload = NULL;
    assert_int_equal(broker_cmd_encode(&b, &c), FERRY_EINVAL);
    c = full_cmd(BROKER_CMD_DELETE);
    memset(c.name, 'x', sizeof c.name); /* not NUL-terminated within 255 */
    assert_int_equal(broker_cmd_encode(&b, &c), FERRY_EINVAL);
    assert_int_equal(b.len, 0); /* nothing appended on error */
    buf_free(&b);
}

static void test_truncated_input_is_corrupt(void **state)
{
    (void)state;
    for (uint8_t t = BROKER_CMD_NOOP; t <= BROKER_CMD_EXPIRE; t++) {
        struct broker_cmd in = full_cmd(t), out;
        struct buf b;
        buf_init(&b);
        assert_int_equal(broker_cmd_encode(&b, &in), 0);
        size_t used;
        for (size_t n = 0; n < b.len; n++)
            assert_int_equal(broker_cmd_decode(b.data, n, &out, &used), FERRY_ECORRUPT);
        /* A length that claims less than the fields need. */
        if (b.len > 14) {
            put_u32(b.data, (uint32_t)(b.len - 5));
            assert_int_equal(broker_cmd_decode(b.data, b.len, &out, &used), FERRY_ECORRUPT);
        }
        buf_free(&b);
    }
}

static void test_bad_header_fields_are_corrupt(void **state)
{
    (void)state;
    struct broker_cmd in = full_cmd(BROKER_CMD_ACK), out;
    struct buf b;
    buf_init(&b);
    assert_int_equal(broker_cmd_encode(&b, &in), 0);
    size_t used;
    uint8_t copy[512];
    memcpy(copy, b.data, b.len);
    put_u32(copy, 0xFFFFFFFFu); /* length beyond the buffer */
    assert_int_equal(broker_cmd_decode(copy, b.len, &out, &used), FERRY_ECORRUPT);
    put_u32(copy, 3); /* shorter than the header */
    assert_int_equal(broker_cmd_decode(copy, b.len, &out, &used), FERRY_ECORRUPT);
    memcpy(copy, b.data, b.len);
    copy[4] = 200; /* unknown type */
    assert_int_equal(broker_cmd_decode(copy, b.len, &out, &used), FERRY_ECORRUPT);
    memcpy(copy, b.data, b.len);
    copy[5] = 0x80; /* producer flag on an ACK */
    assert_int_equal(broker_cmd_decode(copy, b.len, &out, &used), FERRY_ECORRUPT);
    memcpy(copy, b.data, b.len);
    copy[5] = 0x20; /* unknown flag */
    assert_int_equal(broker_cmd_decode(copy, b.len, &out, &used), FERRY_ECORRUPT);
    /* A trailing byte inside the command's length. */
    memcpy(copy, b.data, b.len);
    copy[b.len] = 0;
    put_u32(copy, (uint32_t)(b.len - 4 + 1));
    assert_int_equal(broker_cmd_decode(copy, b.len + 1, &out, &used), FERRY_ECORRUPT);
    /* A NUL inside a name. */
    memcpy(copy, b.data, b.len);
    copy[15] = '\0';
    assert_int_equal(broker_cmd_decode(copy, b.len, &out, &used), FERRY_ECORRUPT);
    assert_int_equal(broker_cmd_decode(NULL, 0, &out, &used), FERRY_ECORRUPT);
    buf_free(&b);
}

static void test_random_garbage_never_crashes(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, 12345);
    uint8_t data[300];
    struct broker_cmd out;
    int ok = 0;
    for (int round = 0; round < 100000; round++) {
        size_t n = rng_next(&r) % sizeof data;
        for (size_t i = 0; i < n; i++)
            data[i] = (uint8_t)rng_next(&r);
        if (n >= 4 && (round & 1)) /* make the length plausible half of the time */
            put_u32(data, (uint32_t)(n - 4));
        if (n >= 5 && (round & 2))
            data[4] = (uint8_t)(data[4] % 12);
        size_t used = 0;
        int rc = broker_cmd_decode(data, n, &out, &used);
        assert_true(rc == 0 || rc == FERRY_ECORRUPT);
        if (rc == 0) {
            assert_true(used <= n);
            ok++;
        }
    }
    (void)ok;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_publish_without_producer_is_compact),
        cmocka_unit_test(test_entry_of_many_commands),
        cmocka_unit_test(test_empty_payload_and_max_name),
        cmocka_unit_test(test_encode_rejects_invalid),
        cmocka_unit_test(test_truncated_input_is_corrupt),
        cmocka_unit_test(test_bad_header_fields_are_corrupt),
        cmocka_unit_test(test_random_garbage_never_crashes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
