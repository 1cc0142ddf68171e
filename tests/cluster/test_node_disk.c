/* test_node_disk.c - a full disk under a running ferryd: publishes fail with
 * a clear error and are not acknowledged, the server stays up and says why,
 * writes resume once space is freed, and every acknowledged message is
 * still there after a restart.
 *
 * The data directory is a small tmpfs mounted by the test, which needs root
 * (CI runs as root); elsewhere the test is skipped with that reason. */
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
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static struct node node;
static char mnt[300];
static int mounted;

static int setup(void **state)
{
    (void)state;
    alarm(300);
    node_init(&node);
    snprintf(mnt, sizeof mnt, "%s/data", node.dir);
    mkdir(mnt, 0700);
    mounted = geteuid() == 0 && mount("tmpfs", mnt, "tmpfs", 0, "size=8m") == 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    node_stop(&node);
    if (mounted)
        umount2(mnt, MNT_DETACH);
    node_destroy(&node);
    return 0;
}

static long count_ids(const char *path, long *max_id)
{
    FILE *f = fopen(path, "r");
    long id, n = 0;
    *max_id = 0;
    if (f == NULL)
        return 0;
    while (fscanf(f, "%ld", &id) == 1) {
        n++;
        if (id > *max_id)
            *max_id = id;
    }
    fclose(f);
    return n;
}

static void test_full_disk_refuses_then_recovers(void **state)
{
    (void)state;
    if (!mounted) {
        fprintf(stderr, "skipped: mounting a small tmpfs needs root\n");
        skip();
    }
    /* A filler file takes most of the space; the database gets the rest. */
    char filler[400], cmd[600];
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    snprintf(cmd, sizeof cmd, "dd if=/dev/zero of=%s bs=1M count=6 2>/dev/null", filler);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(node_start(&node, NULL), 0);

    /* A consumer leases three queue items and holds them across the failure. */
    struct run_result r;
    const char *push[] = {"push", "work", "w1", "w2", "w3", NULL};
    run_ferry(node.port, NULL, &r, push);
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    int consumer = conn_open(node.port);
    assert_int_equal(conn_hello(consumer), 0);
    struct buf b;
    buf_init(&b);
    struct proto_consume c = {.prefetch = 10};
    snprintf(c.queue, sizeof c.queue, "work");
    proto_encode_consume(&b, 2, &c);
    assert_int_equal(conn_send(consumer, &b), 0);
    struct proto_header h;
    int deliveries = 0;
    while (deliveries < 3) {
        assert_int_equal(conn_read_frame(consumer, &b, &h, 5000), 0);
        deliveries += h.op == PROTO_DELIVERY;
    }
    buf_free(&b);

    /* Three messages stored before the disk fills (whether any of the burst
     * below is acknowledged depends on how it is batched). */
    const char *first[] = {"pub", "disk", "1 a", "2 b", "3 c", NULL};
    run_ferry(node.port, NULL, &r, first);
    assert_int_equal(r.status, 0);
    run_result_free(&r);

    /* Publish 8 KiB messages until the disk is full. */
    char input[300], acked[300];
    snprintf(input, sizeof input, "%s/input.txt", node.dir);
    snprintf(acked, sizeof acked, "%s/acked.txt", node.dir);
    FILE *f = fopen(input, "w");
    char pad[8192];
    memset(pad, 'd', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 4; i <= 2000; i++) /* ~16 MiB: more than the disk holds */
        fprintf(f, "%d %s\n", i, pad);
    fclose(f);
    /* A single node has no other to fail over to: the client gives up once
     * its reconnect timeout has passed (or its requests' timeout). */
    const char *args[] = {"pub", "disk", "--verbose", "--reconnect-timeout", "2s", NULL};
    pid_t cli = spawn_ferry(node.port, input, acked, args);
    int st;
    assert_int_equal(waitpid(cli, &st, 0), cli);
    assert_true(WIFEXITED(st));
    assert_int_not_equal(WEXITSTATUS(st), 0); /* the publisher saw the failure */
    long max_id;
    long nacked = count_ids(acked, &max_id);
    fprintf(stderr, "acknowledged before the disk filled: 3 + %ld\n", nacked);
    assert_true(nacked < 2000 - 3);
    if (max_id < 3)
        max_id = 3;
    assert_true(node_log_contains(&node, "storage failed"));

    /* The consumer goes away while writes are refused: its items cannot be
     * returned through a command yet, and must not be stranded. */
    close(consumer);

    /* The server is up and says it refuses writes. */
    const char *status[] = {"status", NULL};
    run_ferry(node.port, NULL, &r, status);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.out, "writable"));
    assert_non_null(strstr(r.out, "no"));
    run_result_free(&r);
    const char *one[] = {"pub", "disk", "after-full", "--reconnect-timeout", "1s", NULL};
    run_ferry(node.port, NULL, &r, one);
    assert_int_not_equal(r.status, 0);
    run_result_free(&r);

    /* Free space: writes resume within a few probe intervals. */
    assert_int_equal(unlink(filler), 0);
    int ok = 0;
    for (int i = 0; i < 100 && !ok; i++) {
        sleep_ms(100);
        run_ferry(node.port, NULL, &r, one);
        ok = r.status == 0;
        run_result_free(&r);
    }
    assert_true(ok);

    /* The items the consumer held are delivered again, counted as redeliveries. */
    const char *consume[] = {"consume", "work", "--count", "3", "--timeout", "10", NULL};
    run_ferry(node.port, NULL, &r, consume);
    assert_int_equal(r.status, 0);
    assert_string_equal(r.out, "w1\nw2\nw3\n");
    run_result_free(&r);

    /* After a restart every acknowledged message is present. */
    node_stop(&node);
    assert_int_equal(node_start(&node, NULL), 0);
    const char *sub[] = {"sub", "disk", "--from", "1", "--verbose", "--timeout", "3", NULL};
    run_ferry(node.port, NULL, &r, sub);
    assert_int_equal(r.status, 0);
    long seen = 0;
    char *save = NULL;
    for (char *line = strtok_r(r.out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        long id, num;
        if (sscanf(line, "%ld\t%ld", &id, &num) == 2 && id <= max_id) {
            assert_int_equal(num, id);
            seen++;
        }
    }
    run_result_free(&r);
    assert_int_equal(seen, max_id);
}

static int setup_plain(void **state)
{
    (void)state;
    alarm(300);
    node_init(&node);
    mounted = 0;
    return 0;
}

/* A database behind the newest snapshot (lost, or a snapshot installed from
 * the leader just before a crash): the node restores the snapshot while it
 * starts, then replays the log, and serves everything. Found by the fault
 * suite: the restore's callback used server handles not yet made, and the
 * node died with SIGSEGV at every start. */
static void test_database_behind_snapshot_is_restored_at_start(void **state)
{
    (void)state;
    assert_int_equal(node_start(&node, NULL), 0);
    /* 200 messages, a snapshot, 10 more (in the log after the snapshot). */
    char lines[200 * 8] = "", more[10 * 8] = "";
    size_t at = 0;
    for (int i = 1; i <= 200; i++)
        at += (size_t)snprintf(lines + at, sizeof lines - at, "m%d\n", i);
    at = 0;
    for (int i = 201; i <= 210; i++)
        at += (size_t)snprintf(more + at, sizeof more - at, "m%d\n", i);
    const char *pub[] = {"pub", "snapped", NULL};
    const char *snap[] = {"admin", "snapshot", NULL};
    struct run_result r;
    run_ferry(node.port, lines, &r, pub);
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    run_ferry(node.port, NULL, &r, snap);
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    for (int t = 0; t < 10000 && !node_log_contains(&node, "saved"); t += 50)
        sleep_ms(50);
    assert_true(node_log_contains(&node, "saved"));
    run_ferry(node.port, more, &r, pub);
    assert_int_equal(r.status, 0);
    run_result_free(&r);
    node_stop(&node);

    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -f %s/data/ferry.db %s/data/ferry.db-wal %s/data/ferry.db-shm",
             node.dir, node.dir, node.dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(node_start(&node, NULL), 0);
    assert_true(node_log_contains(&node, "restored into the database"));
    char v[32];
    assert_int_equal(node_status(&node, "stored_messages", v, sizeof v), 0);
    assert_string_equal(v, "210");
    const char *sub[] = {"sub", "snapped", "--from", "1", "--count", "210", "--timeout", "10", NULL};
    run_ferry(node.port, NULL, &r, sub);
    assert_int_equal(r.status, 0);
    assert_int_equal(strncmp(r.out, "m1\nm2\n", 6), 0);
    assert_non_null(strstr(r.out, "\nm200\nm201\n"));
    assert_non_null(strstr(r.out, "\nm210\n"));
    run_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_full_disk_refuses_then_recovers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_database_behind_snapshot_is_restored_at_start,
                                        setup_plain, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
