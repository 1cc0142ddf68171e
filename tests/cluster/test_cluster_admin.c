/* test_cluster_admin.c - online cluster administration with real ferryd
 * nodes on 127.0.0.1 and the `ferry admin` command: a fourth node joins
 * (cluster_join) without ever campaigning, catches up and becomes a voter; a
 * founding node is removed and killed while the rest keep serving; leadership
 * moves to a chosen node; an on-demand snapshot advances snapshot_index; and
 * after a restart of every node the membership, node 4's address included
 * (learned online, not in the others' cluster_membership), is still there.
 *
 * Every wait polls with a bound; nothing asserts how fast anything is. */
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

#define N 4
static struct node nodes[N];

static int setup(void **state)
{
    (void)state;
    alarm(500);
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

/* Node i (0-based) as a founding node: membership of nodes 1-3 only. */
static void start_founder(int i)
{
    assert_int_equal(cluster_start_node(nodes, 3, i, NULL), 0);
}

/* Node 4: membership of all four (so it can reach the others), joining. */
static void start_joiner(void)
{
    const char *join[] = {"--cluster_join", "yes", NULL};
    assert_int_equal(cluster_start_node(nodes, 4, 3, join), 0);
}

static int status_has(const struct node *n, const char *key, const char *needle)
{
    char v[1100];
    return node_status(n, key, v, sizeof v) == 0 && strstr(v, needle) != NULL;
}

static uint64_t status_u64(const struct node *n, const char *key)
{
    char v[64];
    if (node_status(n, key, v, sizeof v) != 0)
        return 0;
    return strtoull(v, NULL, 10);
}

/* Index of the serving node among `mask` (bit i = nodes[i]); -1 if none in time. */
static int leader_among(unsigned mask, int timeout_ms)
{
    for (int t = 0; t <= timeout_ms; t += 20) {
        for (int i = 0; i < N; i++)
            if ((mask & (1u << i)) && nodes[i].pid > 0 && node_serving(&nodes[i]))
                return i;
        sleep_ms(20);
    }
    return -1;
}

/* "127.0.0.1:p1,127.0.0.1:p2,..." for the nodes in mask. */
static void servers_of(unsigned mask, char *out, size_t cap)
{
    size_t off = 0;
    out[0] = '\0';
    for (int i = 0; i < N; i++)
        if (mask & (1u << i))
            off += (size_t)snprintf(out + off, cap - off, "%s127.0.0.1:%u", off ? "," : "",
                                    nodes[i].port);
}

/* Run `ferry <args> --servers <mask>`; returns its exit status, output in r. */
static int ferry_on(unsigned mask, const char *const *args, struct run_result *r)
{
    char servers[256];
    servers_of(mask, servers, sizeof servers);
    const char *argv[80];
    int a = 0;
    for (; args[a] != NULL; a++)
        argv[a] = args[a];
    argv[a++] = "--servers";
    argv[a++] = servers;
    argv[a] = NULL;
    int first = -1;
    for (int i = 0; i < N && first < 0; i++)
        if (mask & (1u << i))
            first = i;
    return run_ferry(nodes[first].port, NULL, r, argv);
}

static void must_run(unsigned mask, const char *const *args)
{
    struct run_result r;
    int st = ferry_on(mask, args, &r);
    if (st != 0)
        fail_msg("ferry %s %s failed (%d): %s", args[0], args[1] ? args[1] : "", st, r.err);
    run_result_free(&r);
}

static void publish(unsigned mask, const char *channel, int count)
{
    char *argv[8 + 64];
    int a = 0;
    argv[a++] = "pub";
    argv[a++] = (char *)channel;
    char bufs[64][16];
    for (int i = 0; i < count && i < 64; i++) {
        snprintf(bufs[i], sizeof bufs[i], "m%d", i);
        argv[a++] = bufs[i];
    }
    argv[a] = NULL;
    /* A write right after a leadership change may meet the old leader
     * closing its sessions: retry a few times. */
    for (int attempt = 0;; attempt++) {
        struct run_result r;
        int st = ferry_on(mask, (const char *const *)argv, &r);
        if (st == 0) {
            run_result_free(&r);
            return;
        }
        if (attempt == 50)
            fail_msg("publishing to %s never worked: %s", channel, r.err);
        run_result_free(&r);
        sleep_ms(100);
    }
}

/* Wait until every node in mask applied the same index with the same digest. */
static void wait_agreement(unsigned mask)
{
    for (int round = 0; round < 1000; round++) {
        char first[80] = "", d[80], v[64];
        uint64_t idx0 = 0;
        int ok = 1, have = 0;
        for (int i = 0; i < N && ok; i++) {
            if (!(mask & (1u << i)))
                continue;
            ok = node_status_flags(&nodes[i], PROTO_F_DIGEST, "digest", d, sizeof d) == 0 &&
                 node_status_flags(&nodes[i], 0, "applied_index", v, sizeof v) == 0;
            uint64_t idx = ok ? strtoull(v, NULL, 10) : 0;
            if (ok && have && (idx != idx0 || strcmp(d, first) != 0))
                ok = 0;
            if (ok && !have) {
                snprintf(first, sizeof first, "%s", d);
                idx0 = idx;
                have = 1;
            }
        }
        if (ok && have)
            return;
        sleep_ms(20);
    }
    fail_msg("the nodes never agreed on one digest");
}

/* Poll until pred holds on node i (about timeout_ms); fails the test otherwise. */
static void wait_status(int i, const char *key, const char *needle, int timeout_ms)
{
    for (int t = 0; t <= timeout_ms; t += 50) {
        if (status_has(&nodes[i], key, needle))
            return;
        sleep_ms(50);
    }
    char v[1100] = "(none)";
    node_status(&nodes[i], key, v, sizeof v);
    fail_msg("node %d: %s never contained '%s' (now: %s)", i + 1, key, needle, v);
}

static void test_add_remove_transfer_snapshot_restart(void **state)
{
    (void)state;
    const unsigned founders = 0x7, all = 0xF, after = 0xB; /* {1,2,3}, {1,2,3,4}, {1,2,4} */
    for (int i = 0; i < 3; i++)
        start_founder(i);
    int leader = leader_among(founders, 15000);
    assert_true(leader >= 0);
    publish(founders, "before", 50);

    /* Node 4 joins with an empty directory: it waits, it never campaigns
     * (the others refuse its links until it is added, so it hears nobody). */
    start_joiner();
    sleep_ms(1500);
    assert_int_equal(status_u64(&nodes[3], "term"), 0);
    assert_true(status_has(&nodes[3], "serving", "no"));
    assert_true(leader_among(founders, 15000) >= 0);

    /* Refused requests say why. */
    struct run_result r;
    const char *bad[] = {"admin", "add-node", "4", "127.0.0.1", NULL};
    assert_int_not_equal(ferry_on(founders, bad, &r), 0);
    assert_non_null(strstr(r.err, "HOST:PORT"));
    run_result_free(&r);
    const char *exists[] = {"admin", "add-node", "1", "127.0.0.1:1", NULL};
    assert_int_not_equal(ferry_on(founders, exists, &r), 0);
    assert_non_null(strstr(r.err, "already a member"));
    run_result_free(&r);
    const char *gone[] = {"admin", "remove-node", "9", NULL};
    assert_int_not_equal(ferry_on(founders, gone, &r), 0);
    run_result_free(&r);

    /* Added while it is down: a learner that does not count toward the
     * quorum, shown with its progress in the leader's status. */
    node_signal(&nodes[3], SIGKILL);
    node_wait(&nodes[3], 5000);
    char addr4[32];
    snprintf(addr4, sizeof addr4, "127.0.0.1:%u", nodes[3].raft_port);
    const char *add[] = {"admin", "add-node", "4", addr4, "--priority", "1", NULL};
    must_run(founders, add);
    leader = leader_among(founders, 15000);
    assert_true(leader >= 0);
    wait_status(leader, "member.4", "role=learner", 10000);
    assert_true(status_has(&nodes[leader], "member.4", "reachable=no"));
    assert_true(status_has(&nodes[leader], "member.4", "match=0 lag="));
    publish(founders, "learner-down", 10);
    const char *again[] = {"admin", "add-node", "4", addr4, NULL};
    assert_int_not_equal(ferry_on(founders, again, &r), 0);
    assert_non_null(strstr(r.err, "already a member (learner)"));
    run_result_free(&r);

    start_joiner();
    /* Caught up, then promoted: a voter everywhere, with the same state. */
    wait_status(leader, "member.4", "role=follower", 60000);
    publish(all, "with4", 20);
    wait_agreement(all);
    wait_status(3, "member.4", "role=follower", 10000);
    assert_true(status_u64(&nodes[3], "term") > 0);
    fprintf(stderr, "node 4 joined, caught up and is a voter (leader: node %d)\n", leader + 1);

    /* Remove node 3 (whichever node leads), then kill it: {1,2,4} serve. */
    const char *remove3[] = {"admin", "remove-node", "3", NULL};
    must_run(all, remove3);
    leader = leader_among(after, 20000);
    assert_true(leader >= 0);
    char v[1100];
    for (int t = 0; t < 400 && node_status(&nodes[leader], "member.3", v, sizeof v) == 0; t++)
        sleep_ms(50);
    assert_int_equal(node_status(&nodes[leader], "member.3", v, sizeof v), -1);
    assert_true(status_has(&nodes[leader], "member.4", "role="));
    node_signal(&nodes[2], SIGKILL);
    node_wait(&nodes[2], 5000);
    publish(after, "without3", 20);
    wait_agreement(after);
    fprintf(stderr, "node 3 removed and killed; nodes 1, 2, 4 serve and agree\n");

    /* Hand leadership to a chosen node, which then serves. */
    leader = leader_among(after, 15000);
    assert_true(leader >= 0);
    int target = leader == 3 ? 0 : 3;
    char tid[8];
    snprintf(tid, sizeof tid, "%d", target + 1);
    const char *transfer[] = {"admin", "transfer-leader", tid, NULL};
    must_run(after, transfer);
    assert_int_equal(leader_among(1u << target, 20000), target);
    publish(1u << target, "moved", 10);

    /* An on-demand snapshot on the leader. */
    uint64_t snap_before = status_u64(&nodes[target], "snapshot_index");
    const char *snapshot[] = {"admin", "snapshot", NULL};
    must_run(after, snapshot);
    int advanced = 0;
    for (int t = 0; t < 400 && !advanced; t++) {
        advanced = status_u64(&nodes[target], "snapshot_index") > snap_before;
        if (!advanced)
            sleep_ms(50);
    }
    assert_true(advanced);
    fprintf(stderr, "leadership moved to node %d; its snapshot_index went from %llu to %llu\n",
            target + 1, (unsigned long long)snap_before,
            (unsigned long long)status_u64(&nodes[target], "snapshot_index"));

    /* Restart everyone: nodes 1 and 2 with the founding membership only;
     * node 4's address comes from their address books. */
    for (int i = 0; i < N; i++)
        if (after & (1u << i))
            node_stop(&nodes[i]);
    start_founder(0);
    start_founder(1);
    start_joiner();
    leader = leader_among(after, 20000);
    assert_true(leader >= 0);
    for (int i = 0; i < 2; i++) {
        char path[400], book[400] = "";
        snprintf(path, sizeof path, "%s/data/raft/members", nodes[i].dir);
        FILE *f = fopen(path, "r");
        assert_non_null(f);
        size_t got = fread(book, 1, sizeof book - 1, f);
        book[got] = '\0';
        fclose(f);
        char line[64];
        snprintf(line, sizeof line, "\n4 127.0.0.1 %u\n", nodes[3].raft_port);
        assert_non_null(strstr(book, line));
    }
    for (int i = 0; i < N; i++) {
        if (!(after & (1u << i)))
            continue;
        wait_status(i, "member.4", "reachable=yes", 20000);
        wait_status(i, "member.1", "reachable=yes", 20000);
        assert_int_equal(node_status(&nodes[i], "member.3", v, sizeof v), -1);
    }
    publish(after, "restarted", 10);
    wait_agreement(after);
    fprintf(stderr, "after a restart of all, node %d leads the same membership\n", leader + 1);
    /* Two of three voters still make a quorum once one more goes. */
    int victim = leader == 1 ? 0 : 1;
    node_signal(&nodes[victim], SIGKILL);
    node_wait(&nodes[victim], 5000);
    publish(after & ~(1u << victim), "two-left", 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_remove_transfer_snapshot_restart, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
