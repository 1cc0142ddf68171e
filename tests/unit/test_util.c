/* test_util.c - util: buffers, maps, errors, PRNG determinism, allocation faults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "util/alloc.h"
#include "util/buf.h"
#include "util/err.h"
#include "util/map.h"
#include "util/rand.h"

static void test_buf_append_consume(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    for (uint32_t i = 0; i < 1000; i++)
        assert_int_equal(buf_append_u32(&b, i), 0);
    assert_int_equal(b.len, 4000);
    assert_int_equal(get_u32(b.data + 4 * 999), 999);
    buf_consume(&b, 3996);
    assert_int_equal(b.len, 4);
    assert_int_equal(get_u32(b.data), 999);
    buf_append_u64(&b, 0x0102030405060708ull);
    assert_int_equal(get_u64(b.data + 4), 0x0102030405060708ull);
    assert_int_equal(b.data[4], 1);
    buf_free(&b);
}

static void test_buf_enomem_leaves_buffer_unchanged(void **state)
{
    (void)state;
    struct buf b;
    buf_init(&b);
    assert_int_equal(buf_append(&b, "abc", 3), 0);
    alloc_set_fault(0, 1);
    char big[1024] = {0};
    assert_int_equal(buf_append(&b, big, sizeof big), FERRY_ENOMEM);
    alloc_set_fault(-1, 0);
    assert_int_equal(b.len, 3);
    assert_memory_equal(b.data, "abc", 3);
    buf_free(&b);
}

static void test_smap(void **state)
{
    (void)state;
    struct smap m;
    smap_init(&m);
    char key[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(smap_put(&m, key, (void *)(intptr_t)(i + 1)), 0);
    }
    assert_int_equal(m.count, 5000);
    for (int i = 0; i < 5000; i += 2) {
        snprintf(key, sizeof key, "k%d", i);
        assert_ptr_equal(smap_remove(&m, key), (void *)(intptr_t)(i + 1));
    }
    assert_int_equal(m.count, 2500);
    assert_null(smap_get(&m, "k0"));
    assert_ptr_equal(smap_get(&m, "k1"), (void *)(intptr_t)2);
    size_t pos = 0, seen = 0;
    const char *k;
    void *v;
    while (smap_next(&m, &pos, &k, &v))
        seen++;
    assert_int_equal(seen, 2500);
    smap_free(&m);
}

static void test_umap(void **state)
{
    (void)state;
    struct umap m;
    umap_init(&m);
    for (uint64_t i = 1; i <= 10000; i++)
        assert_int_equal(umap_put(&m, i * 7919, (void *)(uintptr_t)i), 0);
    for (uint64_t i = 1; i <= 10000; i++)
        assert_ptr_equal(umap_get(&m, i * 7919), (void *)(uintptr_t)i);
    assert_null(umap_get(&m, 3));
    for (uint64_t i = 1; i <= 10000; i++)
        assert_non_null(umap_remove(&m, i * 7919));
    assert_int_equal(m.count, 0);
    umap_free(&m);
}

static void test_err_messages(void **state)
{
    (void)state;
    struct ferry_err e;
    ferry_err_clear(&e);
    assert_int_equal(ferry_err_set(&e, FERRY_EFULL, "queue '%s' is full", "q"), FERRY_EFULL);
    ferry_err_wrap(&e, "push");
    assert_string_equal(e.msg, "push: queue 'q' is full");
    assert_string_equal(ferry_errname(FERRY_EFULL), "EFULL");
    assert_string_equal(ferry_strerror(FERRY_ENOTLEADER), "node is not the leader");
    assert_string_equal(ferry_errname(12345), "EUNKNOWN");
}

static void test_rng_deterministic(void **state)
{
    (void)state;
    struct rng a, b;
    rng_seed(&a, 42);
    rng_seed(&b, 42);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(rng_next(&a), rng_next(&b));
    for (int i = 0; i < 1000; i++) {
        uint64_t x = rng_range(&a, 10, 20);
        assert_true(x >= 10 && x <= 20);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buf_append_consume),
        cmocka_unit_test(test_buf_enomem_leaves_buffer_unchanged),
        cmocka_unit_test(test_smap),
        cmocka_unit_test(test_umap),
        cmocka_unit_test(test_err_messages),
        cmocka_unit_test(test_rng_deterministic),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
