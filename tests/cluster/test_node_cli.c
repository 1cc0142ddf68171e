/* test_node_cli.c - one real ferryd driven by the `ferry` command, as a user
 * would: publish/subscribe round trips (from an id, live, durable across a
 * restart), queues, capacity and unknown-resource errors, and kill -9 in the
 * middle of a stream of acknowledged publishes and pushes. */
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
#include <sys/wait.h>
#include <unistd.h>

static struct node node;

static int setup(void **state)
{
    (void)state;
    alarm(300);
    node_init(&node);
    if (node_start(&node, NULL) != 0) {
        fprintf(stderr, "ferryd did not start, see %s\n", node.log);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    node_destroy(&node);
    return 0;
}

#define FERRY(input, res, ...)                                                 \
    do {                                                                       \
        const char *args_[] = {__VA_ARGS__, NULL};                             \
        run_ferry(node.port, (input), (res), args_);                           \
    } while (0)

static int count_lines(const char *s)
{
    int n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static long file_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    long n = 0;
    int c;
    while ((c = fgetc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

static void test_pub_then_sub_from_start(void **state)
{
    (void)state;
    struct run_result r;
    FERRY(NULL, &r, "pub", "news", "alpha", "beta", "gamma");
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    FERRY(NULL, &r, "sub", "news", "--from", "1", "--count", "3", "--timeout", "10");
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "alpha\nbeta\ngamma\n");
    run_result_free(&r);
    FERRY(NULL, &r, "sub", "news", "--from", "2", "--count", "2", "--verbose", "--timeout", "10");
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "2\tbeta\n3\tgamma\n");
    run_result_free(&r);
}

static void test_live_subscriber_gets_new_events(void **state)
{
    (void)state;
    char out[300];
    snprintf(out, sizeof out, "%s/live.out", node.dir);
    const char *args[] = {"sub", "live", "--new", "--count", "2", "--timeout", "20", NULL};
    pid_t sub = spawn_ferry(node.port, NULL, out, args);
    /* Wait until the subscription exists: the channel shows one client. */
    int ready = 0;
    for (int i = 0; i < 500 && !ready; i++) {
        struct run_result r;
        FERRY(NULL, &r, "info", "live");
        ready = r.status == 0 && strstr(r.out, "clients") && !strstr(r.out, "clients 0") &&
                !strstr(r.out, "clients: 0") && !strstr(r.out, "\"clients\":0");
        run_result_free(&r);
        if (!ready)
            sleep_ms(20);
    }
    assert_true(ready);
    struct run_result r;
    FERRY(NULL, &r, "pub", "live", "one", "two");
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    int st;
    assert_int_equal(waitpid(sub, &st, 0), sub);
    assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    FILE *f = fopen(out, "r");
    char text[64] = "";
    size_t n = fread(text, 1, sizeof text - 1, f);
    text[n] = '\0';
    fclose(f);
    assert_string_equal(text, "one\ntwo\n");
}

static void test_durable_subscription_resumes_after_restart(void **state)
{
    (void)state;
    struct run_result r;
    /* First use creates the durable at the channel's end. */
    FERRY(NULL, &r, "sub", "audit", "--durable", "auditor", "--timeout", "1");
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "");
    run_result_free(&r);
    FERRY(NULL, &r, "pub", "audit", "e1", "e2", "e3");
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    FERRY(NULL, &r, "sub", "audit", "--durable", "auditor", "--count", "2", "--timeout", "10");
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "e1\ne2\n");
    run_result_free(&r);
    node_stop(&node);
    assert_int_equal(node_start(&node, NULL), 0);
    FERRY(NULL, &r, "sub", "audit", "--durable", "auditor", "--timeout", "2");
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "e3\n");
    run_result_free(&r);
}

static void test_queue_push_consume_ack(void **state)
{
    (void)state;
    struct run_result r;
    char input[4096] = "";
    for (int i = 1; i <= 50; i++) {
        char line[16];
        snprintf(line, sizeof line, "job-%d\n", i);
        strcat(input, line);
    }
    FERRY(input, &r, "push", "work");
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    FERRY(NULL, &r, "consume", "work", "--count", "50", "--timeout", "10");
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, input);
    run_result_free(&r);
    /* Acked items are gone: nothing more to consume. */
    FERRY(NULL, &r, "consume", "work", "--timeout", "1");
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "");
    run_result_free(&r);
}

static void test_errors_are_reported(void **state)
{
    (void)state;
    struct run_result r;
    FERRY(NULL, &r, "info", "nosuch");
    assert_int_not_equal(r.status, 0);
    assert_non_null(strstr(r.err, "nosuch"));
    run_result_free(&r);
    FERRY(NULL, &r, "create", "queue", "small", "--capacity", "2");
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    FERRY(NULL, &r, "push", "small", "a", "b");
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    FERRY(NULL, &r, "push", "small", "c");
    assert_int_not_equal(r.status, 0);
    assert_non_null(strstr(r.err, "full"));
    run_result_free(&r);
    FERRY(NULL, &r, "pub", "small", "wrong-kind");
    assert_int_not_equal(r.status, 0);
    assert_non_null(strstr(r.err, "small"));
    run_result_free(&r);
    FERRY(NULL, &r, "status", "--json");
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "\"role\""));
    run_result_free(&r);
}

/* Write N numbered lines ("m1".."mN") to a file in the node's directory. */
static void make_input(char *path, size_t cap, int n)
{
    snprintf(path, cap, "%s/input.txt", node.dir);
    FILE *f = fopen(path, "w");
    for (int i = 1; i <= n; i++)
        fprintf(f, "m%d\n", i);
    fclose(f);
}

/* Start `ferry <cmd> NAME --verbose` reading the input, kill -9 ferryd once at
 * least min_acks acks were printed, restart it, and return the acked ids. */
static int kill_during_stream(const char *cmd, const char *name, int n, int min_acks,
                              char *acked_path, size_t cap)
{
    char input[300];
    make_input(input, sizeof input, n);
    snprintf(acked_path, cap, "%s/acked.txt", node.dir);
    const char *args[] = {cmd, name, "--verbose", NULL};
    pid_t cli = spawn_ferry(node.port, input, acked_path, args);
    for (int i = 0; i < 3000 && file_lines(acked_path) < min_acks; i++)
        sleep_ms(10);
    assert_true(file_lines(acked_path) >= min_acks);
    node_signal(&node, SIGKILL);
    assert_int_equal(node_wait(&node, 10000), 128 + SIGKILL);
    int st;
    assert_int_equal(waitpid(cli, &st, 0), cli);
    assert_int_equal(node_start(&node, NULL), 0);
    return (int)file_lines(acked_path);
}

static void test_kill9_during_publish_stream_loses_no_acked_event(void **state)
{
    (void)state;
    enum { N = 200000 };
    char acked[300];
    int nacked = kill_during_stream("pub", "stream", N, 2000, acked, sizeof acked);
    fprintf(stderr, "acknowledged before kill -9: %d\n", nacked);
    assert_true(nacked < N); /* the kill really interrupted the stream */

    struct run_result r;
    FERRY(NULL, &r, "sub", "stream", "--from", "1", "--verbose", "--timeout", "3");
    assert_int_equal(r.status, 0);
    /* Stored events are 1..M, contiguous, each carrying line M of the input. */
    long m = 0;
    char *save = NULL;
    for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        long id;
        char payload[32];
        assert_int_equal(sscanf(line, "%ld\tm%31s", &id, payload), 2);
        assert_int_equal(id, m + 1);
        assert_int_equal(atol(payload), id);
        m = id;
    }
    run_result_free(&r);
    /* Every acknowledged event id is among them. */
    FILE *f = fopen(acked, "r");
    long id, count = 0;
    while (fscanf(f, "%ld", &id) == 1) {
        assert_true(id >= 1 && id <= m);
        count++;
    }
    fclose(f);
    assert_int_equal(count, nacked);
    fprintf(stderr, "stored after restart: %ld (acknowledged %d)\n", m, nacked);
}

static void test_kill9_during_push_stream_rebuilds_queue(void **state)
{
    (void)state;
    enum { N = 200000 };
    char acked[300];
    int nacked = kill_during_stream("push", "jobs", N, 2000, acked, sizeof acked);
    assert_true(nacked < N);
    struct run_result r;
    FERRY(NULL, &r, "consume", "jobs", "--timeout", "3");
    assert_int_equal(r.status, 0);
    int stored = count_lines(r.out);
    /* Items 1..stored come back in order, once each: the undelivered list was rebuilt. */
    char *save = NULL;
    long expect = 1;
    for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        assert_int_equal(atol(line + 1), expect);
        expect++;
    }
    run_result_free(&r);
    assert_true(stored >= nacked);
    FILE *f = fopen(acked, "r");
    long id;
    while (fscanf(f, "%ld", &id) == 1)
        assert_true(id >= 1 && id <= stored);
    fclose(f);
    fprintf(stderr, "queue items after restart: %d (acknowledged %d)\n", stored, nacked);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_pub_then_sub_from_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_live_subscriber_gets_new_events, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_subscription_resumes_after_restart, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_push_consume_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_are_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_during_publish_stream_loses_no_acked_event,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill9_during_push_stream_rebuilds_queue, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
