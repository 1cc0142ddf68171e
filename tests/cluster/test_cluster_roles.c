/* test_cluster_roles.c - two data nodes and a witness, and election
 * priorities, with real ferryd processes on 127.0.0.1. */
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

#define N 3
static struct node nodes[N];

static int setup(void **state)
{
    (void)state;
    alarm(300);
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

static int publish(const struct node *n, const char *channel, const char *msg)
{
    const char *args[] = {"pub", channel, msg, NULL};
    struct run_result r;
    run_ferry(n->port, NULL, &r, args);
    int status = r.status;
    run_result_free(&r);
    return status;
}

static int leader_among(int a, int b)
{
    struct node pair[2] = {nodes[a], nodes[b]};
    int k = cluster_leader(pair, 2, 15000);
    return k < 0 ? -1 : (k == 0 ? a : b);
}

static void test_two_nodes_and_a_witness(void **state)
{
    (void)state;
    nodes[2].priority = 0; /* node 3 is the witness */
    for (int i = 0; i < N; i++)
        assert_int_equal(cluster_start_node(nodes, N, i, NULL), 0);
    int leader = leader_among(0, 1);
    assert_true(leader >= 0);
    assert_int_equal(publish(&nodes[leader], "w", "first"), 0);
    /* The witness has no client endpoint at all. */
    assert_true(conn_open(nodes[2].port) < 0);
    /* `ferry status --cluster` lists every member; the witness without a
     * client address, the others with their own indexes. */
    const char *st[] = {"status", "--cluster", NULL};
    struct run_result r;
    run_ferry(nodes[leader == 0 ? 1 : 0].port, NULL, &r, st);
    assert_int_equal(r.status, 0);
    int lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char id[8], role[16], prio[8], reach[8], term[16], last[16], commit[16], applied[16],
            lag[16], client[64];
        if (sscanf(line, "%7s %15s %7s %7s %15s %15s %15s %15s %15s %63s", id, role, prio, reach,
                   term, last, commit, applied, lag, client) != 10 ||
            strcmp(id, "id") == 0)
            continue;
        lines++;
        assert_string_equal(reach, "yes");
        if (strcmp(id, "3") == 0) {
            assert_string_equal(role, "witness");
            assert_string_equal(client, "-");
        } else {
            assert_string_not_equal(client, "-");
            assert_string_not_equal(applied, "-");
        }
    }
    run_result_free(&r);
    assert_int_equal(lines, 3);

    /* Lose the witness: the pair keeps serving. */
    node_signal(&nodes[2], SIGKILL);
    node_wait(&nodes[2], 5000);
    assert_int_equal(publish(&nodes[leader], "w", "without witness"), 0);
    assert_int_equal(cluster_start_node(nodes, N, 2, NULL), 0);

    /* Lose either data node: the other one serves, with the witness's vote. */
    for (int round = 0; round < 2; round++) {
        leader = leader_among(0, 1);
        assert_true(leader >= 0);
        int other = leader == 0 ? 1 : 0;
        int victim = round == 0 ? leader : other;
        int survivor = victim == 0 ? 1 : 0;
        node_signal(&nodes[victim], SIGKILL);
        node_wait(&nodes[victim], 5000);
        struct node one[1] = {nodes[survivor]};
        assert_int_equal(cluster_leader(one, 1, 15000), 0);
        assert_int_equal(publish(&nodes[survivor], "w", "after a loss"), 0);
        assert_int_equal(cluster_start_node(nodes, N, victim, NULL), 0);
    }
    /* The witness never served: it has no client listener, and its log
     * never says it did. */
    assert_false(node_log_contains(&nodes[2], "is now serving clients"));
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);
}

static void test_priorities(void **state)
{
    (void)state;
    nodes[0].priority = 10;
    nodes[1].priority = 5;
    for (int i = 0; i < N; i++)
        assert_int_equal(cluster_start_node(nodes, N, i, NULL), 0);
    /* Node 1 (priority 10) leads once it is up and caught up. */
    assert_int_equal(node_wait_serving(&nodes[0], 15000), 0);
    assert_int_equal(publish(&nodes[0], "p", "one"), 0);

    /* Kill it: node 2 (priority 5) takes over. */
    node_signal(&nodes[0], SIGKILL);
    node_wait(&nodes[0], 5000);
    assert_int_equal(node_wait_serving(&nodes[1], 15000), 0);
    assert_false(node_serving(&nodes[2]));
    assert_int_equal(publish(&nodes[1], "p", "two"), 0);

    /* Restart node 1: leadership returns to it. */
    assert_int_equal(cluster_start_node(nodes, N, 0, NULL), 0);
    assert_int_equal(node_wait_serving(&nodes[0], 15000), 0);
    assert_int_equal(publish(&nodes[0], "p", "three"), 0);
    char v[32];
    assert_int_equal(node_status(&nodes[0], "stored_messages", v, sizeof v), 0);
    assert_string_equal(v, "3");
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);
}

/* verify_replication_node_ip: a node's links are accepted only from the
 * address its membership entry names. Node 3 lives on 127.0.0.2 and dials
 * from there; a node whose entry names another address is refused. */
static void test_verify_replication_node_ip(void **state)
{
    (void)state;
    snprintf(nodes[2].raft_host, sizeof nodes[2].raft_host, "127.0.0.2");
    const char *verify[] = {"--verify_replication_node_ip", "yes", NULL};
    for (int i = 0; i < N; i++)
        assert_int_equal(cluster_start_node(nodes, N, i, verify), 0);
    int l = cluster_leader(nodes, N, 15000);
    assert_true(l >= 0);
    assert_int_equal(publish(&nodes[l], "v", "one"), 0);
    /* Every node, node 3 included, applies it: links in both directions work. */
    for (int i = 0; i < N; i++) {
        char v[32] = "";
        for (int t = 0; t < 10000; t += 20) {
            if (node_status(&nodes[i], "stored_messages", v, sizeof v) == 0 && strcmp(v, "1") == 0)
                break;
            sleep_ms(20);
        }
        assert_string_equal(v, "1");
    }
    /* The leader hears every follower's acknowledgements: matches above 0. */
    for (int i = 0; i < N; i++) {
        if (i == l)
            continue;
        char key[32], line[256] = "";
        unsigned long long match = 0;
        snprintf(key, sizeof key, "member.%d", i + 1);
        assert_int_equal(node_status(&nodes[l], key, line, sizeof line), 0);
        const char *m = strstr(line, "match=");
        assert_non_null(m);
        match = strtoull(m + 6, NULL, 10);
        assert_true(match > 0);
    }
    assert_false(node_log_contains(&nodes[1], "configured address is"));
    assert_false(node_log_contains(&nodes[0], "configured address is"));
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);

    /* Nodes 1 and 2 now expect node 3 at 127.0.0.3; it still dials from
     * 127.0.0.2, so they refuse its links and say why. */
    snprintf(nodes[2].raft_host, sizeof nodes[2].raft_host, "127.0.0.3");
    for (int i = 0; i < 2; i++)
        assert_int_equal(cluster_start_node(nodes, N, i, verify), 0);
    snprintf(nodes[2].raft_host, sizeof nodes[2].raft_host, "127.0.0.2");
    assert_int_equal(cluster_start_node(nodes, N, 2, verify), 0);
    int refused = 0;
    for (int t = 0; t < 10000 && !refused; t += 50) {
        refused = node_log_contains(&nodes[0], "configured address is") ||
                  node_log_contains(&nodes[1], "configured address is");
        sleep_ms(50);
    }
    assert_true(refused);
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);
}

/* A node of another cluster (another cluster_name) is refused at the
 * handshake, with the reason in the log, and cannot disturb this one. */
static void test_other_cluster_name_refused(void **state)
{
    (void)state;
    for (int i = 0; i < 2; i++)
        assert_int_equal(cluster_start_node(nodes, N, i, NULL), 0);
    int l = cluster_leader(nodes, 2, 15000);
    assert_true(l >= 0);
    const char *other[] = {"--cluster_name", "another-cluster", NULL};
    assert_int_equal(cluster_start_node(nodes, N, 2, other), 0);
    int refused = 0;
    for (int t = 0; t < 10000 && !refused; t += 50) {
        for (int i = 0; i < N; i++)
            refused |= node_log_contains(&nodes[i], "cluster_name differs");
        sleep_ms(50);
    }
    assert_true(refused);
    char term[32] = "";
    assert_int_equal(node_status(&nodes[2], "term", term, sizeof term), 0);
    assert_string_equal(term, "0"); /* it heard nothing from the others */
    assert_int_equal(cluster_leader(nodes, 2, 15000), l);
    assert_int_equal(publish(&nodes[l], "v", "still"), 0);
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_two_nodes_and_a_witness, setup, teardown),
        cmocka_unit_test_setup_teardown(test_priorities, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verify_replication_node_ip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_cluster_name_refused, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
