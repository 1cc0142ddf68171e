/* test_checker.c - the fault suite's checker can fail: histories with a lost,
 * an unexpected, a duplicated, a reordered and a failed-yet-stored payload
 * each get their verdict, and clean ones pass. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "checker.h"

#include <string.h>

#define K(p, s) FAULT_KEY(p, s)

static struct fault_rec rec(uint8_t op, uint8_t outcome, fault_key key)
{
    struct fault_rec r = {.op = op, .outcome = outcome, .key = key, .invoke_us = 1,
                          .complete_us = 2};
    return r;
}

/* Producer 1 publishes 1..4 (3 unknown), producer 2 publishes 1..2 (2 failed). */
static size_t clean_history(struct fault_rec *h)
{
    size_t n = 0;
    h[n++] = rec(FOP_PUBLISH, FOUT_OK, K(1, 1));
    h[n++] = rec(FOP_PUBLISH, FOUT_OK, K(2, 1));
    h[n++] = rec(FOP_PUBLISH, FOUT_OK, K(1, 2));
    h[n++] = rec(FOP_PUBLISH, FOUT_UNKNOWN, K(1, 3));
    h[n++] = rec(FOP_PUBLISH, FOUT_FAILED, K(2, 2));
    h[n++] = rec(FOP_PUBLISH, FOUT_OK, K(1, 4));
    return n;
}

static void test_parse_and_format(void **state)
{
    (void)state;
    char text[32];
    assert_int_equal(fault_format(K(3, 17), text, sizeof text), 5);
    assert_string_equal(text, "P3:17");
    assert_int_equal(fault_parse("P3:17", 5), K(3, 17));
    assert_int_equal(fault_parse("P65535:1099511627775", 20), K(65535, 1099511627775ull));
    const char *bad[] = {"", "P", "P3", "P3:", "P:1", "P0:1", "P3:0", "X3:1", "P3:1x",
                         "P65536:1", "P1:1099511627776", "P3:17:1"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(fault_parse(bad[i], strlen(bad[i])), FAULT_KEY_NONE);
}

static void test_clean_channel(void **state)
{
    (void)state;
    struct fault_rec h[16];
    size_t n = clean_history(h);
    struct fault_verdict v;
    /* The unknown P1:3 took effect; the failed P2:2 did not. */
    fault_key stored[] = {K(1, 1), K(2, 1), K(1, 2), K(1, 3), K(1, 4)};
    assert_int_equal(fault_check_channel(h, n, stored, 5, &v), 0);
    assert_true(fault_verdict_ok(&v));
    assert_string_equal(v.first_problem, "");
    assert_int_equal(v.attempted, 6);
    assert_int_equal(v.acknowledged, 4);
    assert_int_equal(v.read_back, 5);
    assert_int_equal(v.unknown_present, 1);
    assert_int_equal(v.unknown_absent, 0);
    /* The same without P1:3: allowed too. */
    fault_key without[] = {K(1, 1), K(2, 1), K(1, 2), K(1, 4)};
    assert_int_equal(fault_check_channel(h, n, without, 4, &v), 0);
    assert_true(fault_verdict_ok(&v));
    assert_int_equal(v.unknown_absent, 1);
}

static void test_lost(void **state)
{
    (void)state;
    struct fault_rec h[16];
    size_t n = clean_history(h);
    struct fault_verdict v;
    fault_key stored[] = {K(1, 1), K(2, 1), K(1, 4)}; /* P1:2 acknowledged, missing */
    assert_int_equal(fault_check_channel(h, n, stored, 3, &v), 0);
    assert_false(fault_verdict_ok(&v));
    assert_int_equal(v.lost, 1);
    assert_int_equal(v.unexpected + v.duplicated + v.reordered, 0);
    assert_string_equal(v.first_problem,
                        "lost: P1:2 was acknowledged but is not in the final state");
}

static void test_unexpected(void **state)
{
    (void)state;
    struct fault_rec h[16];
    size_t n = clean_history(h);
    struct fault_verdict v;
    fault_key stored[] = {K(1, 1), K(2, 1), K(1, 2), K(9, 1), K(1, 4), FAULT_KEY_NONE};
    assert_int_equal(fault_check_channel(h, n, stored, 6, &v), 0);
    assert_false(fault_verdict_ok(&v));
    assert_int_equal(v.unexpected, 2);
    assert_int_equal(v.lost, 0);
    assert_string_equal(v.first_problem, "unexpected: P9:1 in the channel but never attempted");
}

static void test_duplicated_and_reordered(void **state)
{
    (void)state;
    struct fault_rec h[16];
    size_t n = clean_history(h);
    struct fault_verdict v;
    fault_key twice[] = {K(1, 1), K(2, 1), K(1, 2), K(1, 2), K(1, 4)};
    assert_int_equal(fault_check_channel(h, n, twice, 5, &v), 0);
    assert_false(fault_verdict_ok(&v));
    assert_int_equal(v.duplicated, 1);
    assert_non_null(strstr(v.first_problem, "duplicated: P1:2"));

    fault_key swapped[] = {K(1, 2), K(2, 1), K(1, 1), K(1, 4)};
    assert_int_equal(fault_check_channel(h, n, swapped, 4, &v), 0);
    assert_false(fault_verdict_ok(&v));
    assert_int_equal(v.reordered, 1);
    assert_int_equal(v.duplicated + v.lost, 0);
    assert_string_equal(v.first_problem, "reordered: P1:1 stored after P1:2");
}

static void test_failed_yet_present(void **state)
{
    (void)state;
    struct fault_rec h[16];
    size_t n = clean_history(h);
    struct fault_verdict v;
    fault_key stored[] = {K(1, 1), K(2, 1), K(1, 2), K(2, 2), K(1, 4)};
    assert_int_equal(fault_check_channel(h, n, stored, 5, &v), 0);
    assert_false(fault_verdict_ok(&v));
    assert_int_equal(v.failed_present, 1);
}

static void test_queue(void **state)
{
    (void)state;
    struct fault_rec h[16];
    size_t n = 0;
    h[n++] = rec(FOP_PUSH, FOUT_OK, K(5, 1));
    h[n++] = rec(FOP_PUSH, FOUT_OK, K(5, 2));
    h[n++] = rec(FOP_PUSH, FOUT_UNKNOWN, K(5, 3));
    h[n++] = rec(FOP_PUSH, FOUT_OK, K(5, 4));
    h[n++] = rec(FOP_ACK, FOUT_OK, K(5, 1));
    h[n++] = rec(FOP_ACK, FOUT_UNKNOWN, K(5, 2)); /* not counted: it may not have applied */
    struct fault_verdict v;
    /* 5:1 acked, 5:2 and 5:4 left, 5:3 never stored: clean. */
    fault_key left[] = {K(5, 2), K(5, 4)};
    assert_int_equal(fault_check_queue(h, n, left, 2, &v), 0);
    assert_true(fault_verdict_ok(&v));
    assert_int_equal(v.acknowledged, 3);
    assert_int_equal(v.unknown_absent, 1);

    /* 5:2's acknowledgement had an unknown outcome: gone is fine too. */
    fault_key only4[] = {K(5, 4)};
    assert_int_equal(fault_check_queue(h, n, only4, 1, &v), 0);
    assert_true(fault_verdict_ok(&v));
    assert_int_equal(v.ack_unknown_absent, 1);

    /* 5:4 neither acked nor left: lost. */
    assert_int_equal(fault_check_queue(h, n, left, 1, &v), 0);
    assert_int_equal(v.lost, 1);
    assert_string_equal(v.first_problem,
                        "lost: P5:4 was acknowledged but is not in the final state");

    /* 5:1 acked and still queued: duplicated. */
    fault_key again[] = {K(5, 1), K(5, 2), K(5, 4)};
    assert_int_equal(fault_check_queue(h, n, again, 3, &v), 0);
    assert_int_equal(v.duplicated, 1);
    assert_string_equal(v.first_problem, "duplicated: P5:1 left in the queue a second time");

    /* 5:1 acked twice. */
    h[n++] = rec(FOP_ACK, FOUT_OK, K(5, 1));
    assert_int_equal(fault_check_queue(h, n, left, 2, &v), 0);
    assert_int_equal(v.duplicated, 1);
    assert_false(fault_verdict_ok(&v));
    n--;

    /* An item nobody pushed. */
    fault_key stranger[] = {K(5, 2), K(5, 4), K(6, 1)};
    assert_int_equal(fault_check_queue(h, n, stranger, 3, &v), 0);
    assert_int_equal(v.unexpected, 1);
    assert_false(fault_verdict_ok(&v));
}

static void test_verdicts_add(void **state)
{
    (void)state;
    struct fault_verdict a, b;
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    a.attempted = 3;
    b.attempted = 4;
    b.lost = 1;
    strcpy(b.first_problem, "lost: x");
    fault_verdict_add(&a, &b);
    assert_int_equal(a.attempted, 7);
    assert_int_equal(a.lost, 1);
    assert_string_equal(a.first_problem, "lost: x");
    assert_false(fault_verdict_ok(&a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_format),
        cmocka_unit_test(test_clean_channel),
        cmocka_unit_test(test_lost),
        cmocka_unit_test(test_unexpected),
        cmocka_unit_test(test_duplicated_and_reordered),
        cmocka_unit_test(test_failed_yet_present),
        cmocka_unit_test(test_queue),
        cmocka_unit_test(test_verdicts_add),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
