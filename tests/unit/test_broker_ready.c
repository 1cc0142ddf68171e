/* test_broker_ready.c - the queue ready set (ring + heap + tombstones)
 * against a plain reference set under a long seeded random workload, and
 * its behaviour when memory runs out. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "broker/broker_int.h"
#include "util/alloc.h"
#include "util/rand.h"

#define MAX_ID 20000

struct model {
    uint8_t in[MAX_ID + 2];
    size_t count;
};

static uint64_t model_min(const struct model *m)
{
    for (uint64_t i = 1; i <= MAX_ID; i++)
        if (m->in[i])
            return i;
    return 0;
}

static void check_same(struct ready *r, const struct model *m)
{
    assert_int_equal(broker_ready_count(r), m->count);
    uint64_t id = 0;
    int have = broker_ready_peek(r, &id);
    assert_int_equal(have, m->count > 0);
    if (have)
        assert_int_equal(id, model_min(m));
}

static void test_random_against_model(void **state)
{
    (void)state;
    static struct model m;
    memset(&m, 0, sizeof m);
    struct ready r;
    broker_ready_init(&r);
    struct rng g;
    rng_seed(&g, 42);
    uint64_t next = 1;
    for (int step = 0; step < 60000 && next < MAX_ID; step++) {
        uint64_t op = rng_below(&g, 100), id;
        if (op < 40) { /* push a new id */
            assert_int_equal(broker_ready_push_new(&r, next), 0);
            m.in[next] = 1;
            m.count++;
            next++;
        } else if (op < 70) { /* deliver the smallest */
            if (broker_ready_peek(&r, &id)) {
                assert_true(m.in[id]);
                broker_ready_pop(&r);
                m.in[id] = 0;
                m.count--;
            }
        } else if (op < 80) { /* give back an id that is not in the set */
            id = rng_range(&g, 1, next - 1 > 0 ? next - 1 : 1);
            if (next > 1 && !m.in[id]) {
                assert_false(broker_ready_contains(&r, id));
                assert_int_equal(broker_ready_push_returned(&r, id), 0);
                m.in[id] = 1;
                m.count++;
            }
        } else if (op < 97) { /* remove an arbitrary id (a follower's ACK) */
            id = rng_range(&g, 1, next);
            assert_int_equal(broker_ready_contains(&r, id), m.in[id]);
            assert_int_equal(broker_ready_remove(&r, id), m.in[id]);
            if (m.in[id]) {
                m.in[id] = 0;
                m.count--;
            }
        } else { /* expire a prefix */
            uint64_t through = model_min(&m) + rng_below(&g, 5);
            broker_ready_drop_through(&r, through);
            for (uint64_t i = 1; i <= through && i <= MAX_ID; i++) {
                if (m.in[i]) {
                    m.in[i] = 0;
                    m.count--;
                }
            }
        }
        check_same(&r, &m);
    }
    /* Drain: strictly increasing ids, exactly the model's. */
    uint64_t id, last = 0;
    while (broker_ready_peek(&r, &id)) {
        assert_true(id > last);
        assert_true(m.in[id]);
        m.in[id] = 0;
        m.count--;
        last = id;
        broker_ready_pop(&r);
    }
    assert_int_equal(m.count, 0);
    broker_ready_free(&r);
}

static void test_returned_ids_go_first(void **state)
{
    (void)state;
    struct ready r;
    broker_ready_init(&r);
    for (uint64_t i = 10; i <= 12; i++)
        assert_int_equal(broker_ready_push_new(&r, i), 0);
    assert_int_equal(broker_ready_push_returned(&r, 7), 0);
    assert_int_equal(broker_ready_push_returned(&r, 3), 0);
    uint64_t want[] = {3, 7, 10, 11, 12}, id;
    for (int i = 0; i < 5; i++) {
        assert_true(broker_ready_peek(&r, &id));
        assert_int_equal(id, want[i]);
        broker_ready_pop(&r);
    }
    assert_false(broker_ready_peek(&r, &id));
    broker_ready_free(&r);
}

static void test_out_of_memory_leaves_set_unchanged(void **state)
{
    (void)state;
    struct ready r;
    broker_ready_init(&r);
    for (uint64_t i = 1; i <= 64; i++)
        assert_int_equal(broker_ready_push_new(&r, i), 0);
    alloc_set_fault(0, 1);
    assert_int_equal(broker_ready_push_new(&r, 65), FERRY_ENOMEM); /* ring full: must grow */
    alloc_set_fault(0, 1);
    assert_int_equal(broker_ready_push_returned(&r, 100), FERRY_ENOMEM);
    alloc_set_fault(-1, 0);
    assert_int_equal(broker_ready_count(&r), 64);
    assert_int_equal(broker_ready_push_new(&r, 65), 0);
    assert_int_equal(broker_ready_count(&r), 65);
    broker_ready_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_against_model),
        cmocka_unit_test(test_returned_ids_go_first),
        cmocka_unit_test(test_out_of_memory_leaves_set_unchanged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
