/* test_raft_codec.c - raft/core/codec: every message round-trips; truncated,
 * oversized and malformed inputs are rejected with FERRY_EPROTO. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "raft/core/codec.h"
#include "util/alloc.h"

static struct raft_msg base(uint8_t type)
{
    struct raft_msg m;
    memset(&m, 0, sizeof(m));
    m.type = type;
    m.cluster_id = 0x1122334455667788ull;
    m.from = 3;
    m.to = 5;
    m.term = 0xabcdef;
    return m;
}

static struct raft_msg sample(uint8_t type, struct raft_entry *es, uint8_t *data)
{
    struct raft_msg m = base(type);
    switch (type) {
    case RAFT_MSG_APPEND:
        m.u.append.prev_index = 9;
        m.u.append.prev_term = 2;
        m.u.append.commit = 7;
        es[0] = (struct raft_entry){3, 10, RAFT_ENTRY_NORMAL, 5, data};
        es[1] = (struct raft_entry){3, 11, RAFT_ENTRY_NOOP, 0, NULL};
        es[2] = (struct raft_entry){4, 12, RAFT_ENTRY_CONFIG, 7, data};
        m.u.append.n_entries = 3;
        m.u.append.entries = es;
        break;
    case RAFT_MSG_APPEND_RESP:
        m.u.append_resp = (struct raft_msg_append_resp){0, 41, 50, 6, 33};
        break;
    case RAFT_MSG_VOTE:
        m.u.vote = (struct raft_msg_vote){1, 1, 77, 8};
        break;
    case RAFT_MSG_VOTE_RESP:
        m.u.vote_resp = (struct raft_msg_vote_resp){1, 1};
        break;
    case RAFT_MSG_SNAPSHOT:
        m.u.snapshot.index = 100;
        m.u.snapshot.term = 9;
        m.u.snapshot.config.n = 2;
        m.u.snapshot.config.nodes[0] = (struct raft_node){1, RAFT_VOTER, 3};
        m.u.snapshot.config.nodes[1] = (struct raft_node){4, RAFT_LEARNER, 0};
        m.u.snapshot.size = 13;
        m.u.snapshot.offset = 6;
        m.u.snapshot.len = 7;
        m.u.snapshot.done = 1;
        m.u.snapshot.data = data;
        break;
    case RAFT_MSG_SNAPSHOT_RESP:
        m.u.snapshot_resp = (struct raft_msg_snapshot_resp){100, 0, 64};
        break;
    default:
        break;
    }
    return m;
}

static void assert_same(const struct raft_msg *a, const struct raft_msg *b)
{
    assert_int_equal(a->type, b->type);
    assert_int_equal(a->cluster_id, b->cluster_id);
    assert_int_equal(a->from, b->from);
    assert_int_equal(a->to, b->to);
    assert_int_equal(a->term, b->term);
    switch (a->type) {
    case RAFT_MSG_APPEND:
        assert_int_equal(a->u.append.prev_index, b->u.append.prev_index);
        assert_int_equal(a->u.append.prev_term, b->u.append.prev_term);
        assert_int_equal(a->u.append.commit, b->u.append.commit);
        assert_int_equal(a->u.append.n_entries, b->u.append.n_entries);
        for (uint32_t i = 0; i < a->u.append.n_entries; i++) {
            const struct raft_entry *x = &a->u.append.entries[i], *y = &b->u.append.entries[i];
            assert_int_equal(x->term, y->term);
            assert_int_equal(x->index, y->index);
            assert_int_equal(x->type, y->type);
            assert_int_equal(x->len, y->len);
            if (x->len)
                assert_memory_equal(x->data, y->data, x->len);
        }
        break;
    case RAFT_MSG_SNAPSHOT:
        assert_int_equal(a->u.snapshot.index, b->u.snapshot.index);
        assert_int_equal(a->u.snapshot.config.n, b->u.snapshot.config.n);
        assert_int_equal(a->u.snapshot.config.nodes[1].id, b->u.snapshot.config.nodes[1].id);
        assert_int_equal(a->u.snapshot.config.nodes[1].role, b->u.snapshot.config.nodes[1].role);
        assert_int_equal(a->u.snapshot.config.nodes[0].priority,
                         b->u.snapshot.config.nodes[0].priority);
        assert_int_equal(a->u.snapshot.offset, b->u.snapshot.offset);
        assert_int_equal(a->u.snapshot.done, b->u.snapshot.done);
        assert_int_equal(a->u.snapshot.len, b->u.snapshot.len);
        assert_memory_equal(a->u.snapshot.data, b->u.snapshot.data, a->u.snapshot.len);
        break;
    default:
        assert_memory_equal(&a->u, &b->u, sizeof(a->u.append_resp));
        break;
    }
}

static void test_round_trip_every_type(void **state)
{
    (void)state;
    uint8_t data[16] = "payload-odd-len";
    for (uint8_t t = RAFT_MSG_APPEND; t <= RAFT_MSG_TIMEOUT_NOW; t++) {
        struct raft_entry es[3];
        struct raft_msg m = sample(t, es, data);
        struct buf b;
        buf_init(&b);
        assert_int_equal(raft_msg_encode(&m, &b), 0);
        assert_int_equal(b.data[0], RAFT_WIRE_VERSION);
        assert_int_equal(get_u64(b.data + 26), 0xabcdef); /* big-endian term */
        struct raft_msg d;
        struct ferry_err err;
        assert_int_equal(raft_msg_decode(b.data, b.len, &d, &err), 0);
        assert_same(&m, &d);
        raft_msg_release(&d);
        buf_free(&b);
    }
}

/* Every proper prefix and every one-byte extension of a valid message is rejected. */
static void test_truncated_and_trailing_rejected(void **state)
{
    (void)state;
    uint8_t data[16] = "payload-odd-len";
    for (uint8_t t = RAFT_MSG_APPEND; t <= RAFT_MSG_TIMEOUT_NOW; t++) {
        struct raft_entry es[3];
        struct raft_msg m = sample(t, es, data);
        struct buf b;
        buf_init(&b);
        assert_int_equal(raft_msg_encode(&m, &b), 0);
        for (size_t len = 0; len < b.len; len++) {
            struct raft_msg d;
            struct ferry_err err;
            assert_int_equal(raft_msg_decode(b.data, len, &d, &err), FERRY_EPROTO);
            assert_true(strlen(err.msg) > 0);
        }
        buf_append_u8(&b, 0);
        struct raft_msg d;
        assert_int_equal(raft_msg_decode(b.data, b.len, &d, NULL), FERRY_EPROTO);
        buf_free(&b);
    }
}

static void test_malformed_fields_rejected(void **state)
{
    (void)state;
    uint8_t data[16] = "payload-odd-len";
    struct raft_entry es[3];
    struct raft_msg m = sample(RAFT_MSG_VOTE, es, data);
    struct buf b;
    buf_init(&b);
    raft_msg_encode(&m, &b);
    struct raft_msg d;
    struct ferry_err err;
    b.data[0] = 2; /* version */
    assert_int_equal(raft_msg_decode(b.data, b.len, &d, &err), FERRY_EPROTO);
    assert_non_null(strstr(err.msg, "version"));
    b.data[0] = 1;
    b.data[1] = 99; /* type */
    assert_int_equal(raft_msg_decode(b.data, b.len, &d, &err), FERRY_EPROTO);
    b.data[1] = RAFT_MSG_VOTE;
    b.data[RAFT_WIRE_HEADER] = 2; /* a flag that is not 0/1 */
    assert_int_equal(raft_msg_decode(b.data, b.len, &d, &err), FERRY_EPROTO);
    buf_free(&b);

    /* An entry count far beyond the bytes present must not allocate. */
    m = sample(RAFT_MSG_APPEND, es, data);
    buf_init(&b);
    raft_msg_encode(&m, &b);
    put_u32(b.data + RAFT_WIRE_HEADER + 24, 0xffffffffu);
    assert_int_equal(raft_msg_decode(b.data, b.len, &d, &err), FERRY_EPROTO);
    put_u32(b.data + RAFT_WIRE_HEADER + 24, 3);
    b.data[RAFT_WIRE_HEADER + 28 + 8] = 9; /* entry type */
    assert_int_equal(raft_msg_decode(b.data, b.len, &d, &err), FERRY_EPROTO);
    buf_free(&b);

    /* A chunk that overruns its snapshot, or says done when it is not. */
    m = sample(RAFT_MSG_SNAPSHOT, es, data);
    m.u.snapshot.size = 10;
    m.u.snapshot.done = 0;
    buf_init(&b);
    raft_msg_encode(&m, &b);
    assert_int_equal(raft_msg_decode(b.data, b.len, &d, &err), FERRY_EPROTO);
    buf_free(&b);
    m.u.snapshot.size = 20;
    m.u.snapshot.done = 1;
    buf_init(&b);
    raft_msg_encode(&m, &b);
    assert_int_equal(raft_msg_decode(b.data, b.len, &d, &err), FERRY_EPROTO);
    buf_free(&b);
}

static void test_encode_refuses_chunk_without_data(void **state)
{
    (void)state;
    uint8_t data[16];
    struct raft_entry es[3];
    struct raft_msg m = sample(RAFT_MSG_SNAPSHOT, es, data);
    m.u.snapshot.data = NULL;
    struct buf b;
    buf_init(&b);
    assert_int_equal(raft_msg_encode(&m, &b), FERRY_EINVAL);
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

static void test_encode_enomem_leaves_buffer(void **state)
{
    (void)state;
    uint8_t data[16] = "payload-odd-len";
    struct raft_entry es[3];
    struct raft_msg m = sample(RAFT_MSG_APPEND, es, data);
    struct buf b;
    buf_init(&b);
    buf_append(&b, "x", 1);
    alloc_set_fault(0, -1);
    int rc = raft_msg_encode(&m, &b);
    alloc_set_fault(-1, 0);
    if (rc != 0) {
        assert_int_equal(rc, FERRY_ENOMEM);
        assert_int_equal(b.len, 1);
    }
    buf_free(&b);
}

static void test_config_codec(void **state)
{
    (void)state;
    struct raft_config c = {0}, d;
    c.nodes[c.n++] = (struct raft_node){1, RAFT_VOTER, 2};
    c.nodes[c.n++] = (struct raft_node){9, RAFT_LEARNER, 0};
    uint8_t buf[200];
    size_t len;
    assert_int_equal(raft_config_encode(&c, buf, sizeof(buf), &len), 0);
    assert_int_equal(len, 24);
    assert_int_equal(raft_config_decode(buf, len, &d), 0);
    assert_int_equal(d.n, 2);
    assert_int_equal(d.nodes[1].id, 9);
    assert_int_equal(d.nodes[0].priority, 2);
    assert_int_not_equal(raft_config_decode(buf, len - 1, &d), 0);
    buf[4 + 10 + 7] = 9; /* second id -> same as first */
    buf[4 + 10 + 7] = buf[4 + 7];
    assert_int_not_equal(raft_config_decode(buf, len, &d), 0);
    assert_int_equal(raft_config_encode(&c, buf, 10, &len), FERRY_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_truncated_and_trailing_rejected),
        cmocka_unit_test(test_malformed_fields_rejected),
        cmocka_unit_test(test_encode_refuses_chunk_without_data),
        cmocka_unit_test(test_encode_enomem_leaves_buffer),
        cmocka_unit_test(test_config_codec),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
