/* test_cluster.c - three real ferryd nodes on 127.0.0.1: replication,
 * agreement of every database (by digest), failover after SIGKILL and
 * SIGSTOP of the leader, hand-over at SIGTERM, and a full restart.
 *
 * Outage times are printed for the record; speed is measured by the bench
 * scripts, never asserted here. */
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
#include <time.h>
#include <unistd.h>

#define N 3
static struct node nodes[N];

static int setup(void **state)
{
    (void)state;
    alarm(400);
    for (int i = 0; i < N; i++)
        node_init(&nodes[i]);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++)
        node_destroy(&nodes[i]);
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void start_all(void)
{
    for (int i = 0; i < N; i++)
        assert_int_equal(cluster_start_node(nodes, N, i, NULL), 0);
}

static uint64_t status_u64(const struct node *n, const char *key)
{
    char v[64];
    if (node_status(n, key, v, sizeof v) != 0)
        return 0;
    return strtoull(v, NULL, 10);
}

/* Wait until every running node applied the same index and report their
 * digests equal; returns that index. */
static uint64_t wait_agreement(void)
{
    char first[80] = "";
    for (int round = 0; round < 500; round++) {
        char digest[N][80];
        uint64_t idx[N];
        int ok = 1, have = 0;
        for (int i = 0; i < N && ok; i++) {
            if (nodes[i].pid <= 0)
                continue;
            char v[80];
            ok = node_status_flags(&nodes[i], PROTO_F_DIGEST, "digest", digest[i],
                                   sizeof digest[i]) == 0 &&
                 node_status_flags(&nodes[i], 0, "applied_index", v, sizeof v) == 0;
            idx[i] = ok ? strtoull(v, NULL, 10) : 0;
            if (ok && have && (idx[i] != idx[0] || strcmp(digest[i], first) != 0))
                ok = 0;
            if (ok && !have) {
                memcpy(first, digest[i], sizeof first);
                idx[0] = idx[i];
                have = 1;
            }
        }
        if (ok && have)
            return idx[0];
        sleep_ms(20);
    }
    fail_msg("the nodes never agreed on one digest");
    return 0;
}

static void write_numbers(const char *path, int from, int to)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = from; i <= to; i++)
        fprintf(f, "%d\n", i);
    fclose(f);
}

/* Every id in `acked` (one per line) is stored on `n`'s channel as its own
 * number: a publisher's acknowledged messages survived. */
static void assert_acked_present(const struct node *n, const char *channel, const char *acked,
                                 long *count_out)
{
    FILE *f = fopen(acked, "r");
    assert_non_null(f);
    long id, count = 0, max = 0;
    while (fscanf(f, "%ld", &id) == 1) {
        count++;
        if (id > max)
            max = id;
    }
    fclose(f);
    *count_out = count;
    if (count == 0)
        return;
    char maxs[32];
    snprintf(maxs, sizeof maxs, "%ld", max);
    const char *args[] = {"sub", channel,     "--from",    "1",  "--count",
                          maxs,  "--verbose", "--timeout", "10", NULL};
    struct run_result r;
    run_ferry(n->port, NULL, &r, args);
    assert_int_equal(r.status, 0);
    long seen = 0;
    char *save = NULL;
    for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        long eid, num;
        if (sscanf(line, "%ld\t%ld", &eid, &num) == 2 && eid <= max) {
            assert_int_equal(eid, ++seen); /* no gap */
        }
    }
    run_result_free(&r);
    assert_int_equal(seen, max);
}

static void test_three_nodes_replicate_and_agree(void **state)
{
    (void)state;
    start_all();
    int leader = cluster_leader(nodes, N, 15000);
    assert_true(leader >= 0);
    int follower = (leader + 1) % N;

    /* Through a follower: the client is sent to the leader. */
    const char *pub[] = {"pub", "news", "one", "two", "three", NULL};
    struct run_result r;
    run_ferry(nodes[follower].port, NULL, &r, pub);
    assert_int_equal(r.status, 0);
    run_result_free(&r);

    const char *many[] = {"pub", "numbers", NULL};
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    for (int i = 1; i <= 2000; i++)
        fprintf(mem, "%d\n", i);
    fclose(mem);
    run_ferry(nodes[leader].port, text, &r, many);
    free(text);
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    const char *push[] = {"push", "jobs", "a", "b", "c", "d", NULL};
    run_ferry(nodes[leader].port, NULL, &r, push);
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    const char *consume[] = {"consume", "jobs", "--count", "2", "--timeout", "5", NULL};
    run_ferry(nodes[leader].port, NULL, &r, consume);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "a\nb\n");
    run_result_free(&r);

    uint64_t idx = wait_agreement();
    fprintf(stderr, "three nodes agree at index %llu\n", (unsigned long long)idx);
    /* The followers hold the data: stored message counts match the leader's. */
    for (int i = 0; i < N; i++)
        assert_int_equal(status_u64(&nodes[i], "stored_messages"), 3 + 2000 + 2);
    if (harness_tls()) { /* the same test over TLS really ran over TLS */
        char v[16];
        for (int i = 0; i < N; i++) {
            assert_int_equal(node_status(&nodes[i], "links_tls", v, sizeof v), 0);
            assert_string_equal(v, "yes");
            assert_int_equal(status_u64(&nodes[i], "links_refused"), 0);
        }
        assert_true(status_u64(&nodes[leader], "tls_sessions") >= 3);
    }

    /* A follower refuses clients with the leader's address. */
    int fd = conn_open(nodes[follower].port);
    assert_true(fd >= 0);
    assert_int_not_equal(conn_hello(fd), 0);
    close(fd);

    /* Restart all three: the state is intact and nothing is applied twice. */
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);
    start_all();
    assert_true(cluster_leader(nodes, N, 15000) >= 0);
    uint64_t idx2 = wait_agreement();
    assert_true(idx2 > idx);
    for (int i = 0; i < N; i++)
        assert_int_equal(status_u64(&nodes[i], "stored_messages"), 3 + 2000 + 2);
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);
}

/* SIGKILL the leader in the middle of a stream of acknowledged publishes. */
static void test_kill_leader_during_publishing(void **state)
{
    (void)state;
    start_all();
    int leader = cluster_leader(nodes, N, 15000);
    assert_true(leader >= 0);
    char input[300], acked[300];
    snprintf(input, sizeof input, "%s/input.txt", nodes[0].dir);
    snprintf(acked, sizeof acked, "%s/acked.txt", nodes[0].dir);
    write_numbers(input, 1, 200000);
    const char *args[] = {"pub", "stream", "--verbose", "--window", "64", NULL};
    pid_t cli = spawn_ferry(nodes[leader].port, input, acked, args);
    sleep_ms(700);
    uint64_t killed = now_ms();
    node_signal(&nodes[leader], SIGKILL);
    node_wait(&nodes[leader], 5000);
    int st;
    assert_int_equal(waitpid(cli, &st, 0), cli);

    int next = cluster_leader(nodes, N, 15000);
    uint64_t outage = now_ms() - killed;
    assert_true(next >= 0 && next != leader);
    fprintf(stderr, "new leader node %d serving %llu ms after SIGKILL of node %d\n", next + 1,
            (unsigned long long)outage, leader + 1);
    long count = 0;
    assert_acked_present(&nodes[next], "stream", acked, &count);
    fprintf(stderr, "%ld acknowledged publishes before the kill, all present\n", count);
    assert_true(count > 0);

    /* Consumers continue on the new leader. */
    const char *push[] = {"push", "after", "x", NULL};
    struct run_result r;
    run_ferry(nodes[next].port, NULL, &r, push);
    assert_int_equal(r.status, 0);
    run_result_free(&r);

    /* The old leader comes back as a follower and catches up. */
    assert_int_equal(cluster_start_node(nodes, N, leader, NULL), 0);
    wait_agreement();
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);
}

/* A paused leader is replaced; when it resumes it steps down, and the two
 * never serve in the same term. */
static void test_sigstop_leader(void **state)
{
    (void)state;
    start_all();
    int leader = cluster_leader(nodes, N, 15000);
    assert_true(leader >= 0);
    uint64_t old_term = status_u64(&nodes[leader], "term");
    uint64_t stopped = now_ms();
    node_signal(&nodes[leader], SIGSTOP);
    int next = -1;
    for (int t = 0; t < 15000 && next < 0; t += 10) {
        for (int i = 0; i < N; i++) {
            if (i != leader && node_serving(&nodes[i]))
                next = i;
        }
        if (next < 0)
            sleep_ms(10);
    }
    assert_true(next >= 0);
    fprintf(stderr, "node %d serving %llu ms after SIGSTOP of the leader\n", next + 1,
            (unsigned long long)(now_ms() - stopped));
    uint64_t new_term = status_u64(&nodes[next], "term");
    assert_true(new_term > old_term);
    node_signal(&nodes[leader], SIGCONT);
    /* It learns of the new term and stops serving. */
    char role[32] = "";
    for (int t = 0; t < 10000; t += 20) {
        if (node_status(&nodes[leader], "role", role, sizeof role) == 0 &&
            strcmp(role, "follower") == 0)
            break;
        sleep_ms(20);
    }
    assert_string_equal(role, "follower");
    assert_false(node_serving(&nodes[leader]));
    assert_true(status_u64(&nodes[leader], "term") >= new_term);
    const char *pub[] = {"pub", "after-stop", "m", NULL};
    struct run_result r;
    run_ferry(nodes[next].port, NULL, &r, pub);
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    wait_agreement();
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);
}

/* SIGTERM on the leader hands leadership over before it exits. */
static void test_sigterm_leader_hands_over(void **state)
{
    (void)state;
    start_all();
    int leader = cluster_leader(nodes, N, 15000);
    assert_true(leader >= 0);
    uint64_t t0 = now_ms();
    node_signal(&nodes[leader], SIGTERM);
    assert_int_equal(node_wait(&nodes[leader], 10000), 0);
    int next = cluster_leader(nodes, N, 15000);
    assert_true(next >= 0 && next != leader);
    fprintf(stderr, "node %d serving %llu ms after SIGTERM of the leader\n", next + 1,
            (unsigned long long)(now_ms() - t0));
    assert_true(node_log_contains(&nodes[leader], "handing leadership over"));
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);
}

/* A follower that was down while thousands of entries were committed and
 * compacted, restarted with an empty data directory, catches up from the
 * leader's snapshot sent in chunks; payloads of odd sizes survive the
 * snapshot and a restart of everything. */
static void test_follower_catches_up_by_snapshot(void **state)
{
    (void)state;
    const char *extra[] = {"--snapshot_distance",
                           "50",
                           "--logfile_max_generations",
                           "1",
                           "--logfile_max_size",
                           "1M",
                           NULL};
    for (int i = 0; i < N; i++)
        assert_int_equal(cluster_start_node(nodes, N, i, extra), 0);
    int leader = cluster_leader(nodes, N, 15000);
    assert_true(leader >= 0);
    int lagger = (leader + 1) % N;
    node_stop(&nodes[lagger]);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s/data", nodes[lagger].dir);
    assert_int_equal(system(cmd), 0);

    static const int sizes[] = {1, 7, 9, 100, 1023};
    char *text = NULL;
    size_t len = 0;
    FILE *mem = open_memstream(&text, &len);
    for (int i = 0; i < 3000; i++) {
        int size = sizes[i % 5];
        for (int k = 0; k < size; k++)
            fputc('a' + (i + k) % 26, mem);
        fputc('\n', mem);
    }
    fclose(mem);
    struct run_result r;
    /* Window 1: one entry per message, so thousands of entries. */
    const char *pub[] = {"pub", "odd", "--window", "1", NULL};
    run_ferry(nodes[leader].port, text, &r, pub);
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    const char *push[] = {"push", "q", "x", "yy", "zzz", NULL};
    run_ferry(nodes[leader].port, NULL, &r, push);
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    assert_true(status_u64(&nodes[leader], "snapshot_index") > 0);
    assert_true(status_u64(&nodes[leader], "first_index") > 1);

    assert_int_equal(cluster_start_node(nodes, N, lagger, extra), 0);
    wait_agreement();
    assert_true(node_log_contains(&nodes[lagger], "installed the leader's snapshot"));
    assert_int_equal(status_u64(&nodes[lagger], "stored_messages"), 3003);

    /* Everything again after a restart of all three. */
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);
    for (int i = 0; i < N; i++)
        assert_int_equal(cluster_start_node(nodes, N, i, extra), 0);
    leader = cluster_leader(nodes, N, 15000);
    assert_true(leader >= 0);
    wait_agreement();
    const char *sub[] = {"sub", "odd", "--from", "1", "--count", "3000", "--timeout", "10", NULL};
    run_ferry(nodes[leader].port, NULL, &r, sub);
    assert_int_equal(r.status, 0);
    assert_int_equal(strlen(r.out), len);
    assert_memory_equal(r.out, text, len);
    run_result_free(&r);
    free(text);
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_three_nodes_replicate_and_agree, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_leader_during_publishing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigstop_leader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sigterm_leader_hands_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_follower_catches_up_by_snapshot, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
