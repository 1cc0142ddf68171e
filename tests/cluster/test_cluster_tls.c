/* test_cluster_tls.c - TLS refusals, certificate reload and handshake
 * deadlines with real ferryd processes on 127.0.0.1.
 *
 * Certificates come from scripts/make-certs (harness_cert_dir): node-<i> of
 * the cluster CA, and other/ from another CA. Every refusal must leave a log
 * line that says why, be counted, and leave the cluster working. */
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

#define N 3
static struct node nodes[N];

static int setup(void **state)
{
    (void)state;
    alarm(300);
    if (harness_cert_dir() == NULL)
        return -1;
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

/* Flags for a node with TLS on node links and for clients (client_tls yes:
 * the harness's own status probes stay plaintext), using the certificate
 * `cert` ("node-2", "other/node-3") and trusting the cluster CA. */
struct tls_flags {
    char cert[160], key[160];
    const char *argv[24];
};

static const char *const *tls_flags(struct tls_flags *f, const char *cert, const char *more)
{
    snprintf(f->cert, sizeof f->cert, "%s/%s.pem", harness_cert_dir(), cert);
    snprintf(f->key, sizeof f->key, "%s/%s.key", harness_cert_dir(), cert);
    int a = 0;
    f->argv[a++] = "--replication_tls";
    f->argv[a++] = "yes";
    f->argv[a++] = "--replication_tls_certificate";
    f->argv[a++] = f->cert;
    f->argv[a++] = "--replication_tls_key";
    f->argv[a++] = f->key;
    f->argv[a++] = "--replication_tls_ca";
    f->argv[a++] = harness_cert("ca.pem");
    f->argv[a++] = "--client_tls";
    f->argv[a++] = "yes";
    if (more != NULL) {
        f->argv[a++] = "--verify_replication_node_ip";
        f->argv[a++] = more;
    }
    f->argv[a] = NULL;
    return f->argv;
}

static int start(int i, const char *cert, const char *verify_ip)
{
    struct tls_flags f;
    return cluster_start_node(nodes, N, i, tls_flags(&f, cert, verify_ip));
}

/* `ferry --ca CA ARGS...` against node n (CA NULL: plaintext). */
static int run_with_ca(const struct node *n, const char *ca, struct run_result *r,
                       const char *const *args)
{
    const char *argv[16];
    int a = 0;
    for (; args[a] != NULL && a < 10; a++)
        argv[a] = args[a];
    argv[a++] = "--reconnect-timeout";
    argv[a++] = "0";
    if (ca != NULL) {
        argv[a++] = "--ca";
        argv[a++] = ca;
    }
    argv[a] = NULL;
    return run_ferry(n->port, NULL, r, argv);
}

static int publish(const struct node *n, const char *ca, const char *channel, const char *msg)
{
    const char *args[] = {"pub", channel, msg, NULL};
    struct run_result r;
    int status = run_with_ca(n, ca, &r, args);
    if (status != 0)
        fprintf(stderr, "publish: %s", r.err);
    run_result_free(&r);
    return status;
}

static uint64_t status_u64(const struct node *n, const char *key)
{
    char v[64];
    if (node_status(n, key, v, sizeof v) != 0)
        return 0;
    return strtoull(v, NULL, 10);
}

/* Wait up to 10 s for one of nodes[0..count) to log every one of the texts. */
static int logged(int count, const char *a, const char *b)
{
    for (int t = 0; t < 10000; t += 50) {
        for (int i = 0; i < count; i++)
            if (node_log_contains(&nodes[i], a) && (b == NULL || node_log_contains(&nodes[i], b)))
                return 1;
        sleep_ms(50);
    }
    fprintf(stderr, "no node logged '%s'%s%s\n", a, b ? " and " : "", b ? b : "");
    return 0;
}

static int leader_of_two(void)
{
    int k = cluster_leader(nodes, 2, 15000);
    assert_true(k >= 0);
    return k;
}

static void test_refusals_keep_the_cluster_working(void **state)
{
    (void)state;
    const char *ca = harness_cert("ca.pem");
    assert_int_equal(start(0, "node-1", NULL), 0);
    assert_int_equal(start(1, "node-2", NULL), 0);
    int l = leader_of_two();
    assert_int_equal(publish(&nodes[l], ca, "t", "first"), 0);

    /* Node 3 with a certificate from another CA. */
    assert_int_equal(start(2, "other/node-3", NULL), 0);
    assert_true(logged(2, "(tls)", "certificate verify failed"));
    /* ... and nodes 1 and 2 do not accept its listener's certificate either. */
    assert_true(logged(2, "node 3 at", "certificate verify failed"));
    assert_int_equal(publish(&nodes[l], ca, "t", "after another CA"), 0);
    node_stop(&nodes[2]);

    /* Node 3 presenting node 2's certificate: a valid chain, the wrong id. */
    assert_int_equal(start(2, "node-2", NULL), 0);
    assert_true(logged(2, "(identity)", "its certificate (CN=ferry-node-2) does not name "
                                        "ferry-node-3"));
    assert_true(logged(2, "node 3 at", "hostname mismatch"));
    l = leader_of_two();
    assert_int_equal(publish(&nodes[l], ca, "t", "after the wrong id"), 0);
    node_stop(&nodes[2]);

    /* A plaintext peer on the TLS replication port. */
    int fd = conn_open(nodes[0].raft_port);
    assert_true(fd >= 0);
    const uint8_t hello[] = {0, 0, 0, 19, 1, 'F', 'R', 'R', 'T', 0, 1, 0, 0, 0, 0,
                             0, 0, 0, 1,  0, 0, 0, 3};
    assert_int_equal(conn_send_raw(fd, hello, sizeof hello), 0);
    assert_true(conn_closed(fd, 5000));
    close(fd);
    assert_true(logged(1, "(tls)", "does not speak TLS"));
    assert_true(status_u64(&nodes[0], "links_refused") >= 2);
    assert_true(status_u64(&nodes[0], "links_tls_failed") >= 1);

    /* A client that trusts another CA. */
    l = leader_of_two();
    const char *pub[] = {"pub", "t", "x", NULL};
    struct run_result r;
    assert_int_not_equal(run_with_ca(&nodes[l], harness_cert("other/ca.pem"), &r, pub), 0);
    assert_non_null(strstr(r.err, "certificate verify failed"));
    run_result_free(&r);
    assert_true(logged(2, "TLS handshake failed", "unknown ca"));
    assert_true(status_u64(&nodes[l], "tls_failures") >= 1);

    /* With its own certificate node 3 joins and catches up. */
    assert_int_equal(start(2, "node-3", NULL), 0);
    l = leader_of_two();
    assert_int_equal(publish(&nodes[l], ca, "t", "all three"), 0);
    uint64_t stored = 0;
    for (int t = 0; t < 10000 && stored != 4; t += 50) {
        stored = status_u64(&nodes[2], "stored_messages");
        sleep_ms(50);
    }
    assert_int_equal(stored, 4);
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);
}

/* verify_replication_node_ip with TLS: the right certificate from the
 * wrong address is refused for the address. */
static void test_right_certificate_wrong_address(void **state)
{
    (void)state;
    snprintf(nodes[2].raft_host, sizeof nodes[2].raft_host, "127.0.0.3");
    assert_int_equal(start(0, "node-1", "yes"), 0);
    assert_int_equal(start(1, "node-2", "yes"), 0);
    /* Node 3 listens and dials from 127.0.0.2; the others expect 127.0.0.3. */
    snprintf(nodes[2].raft_host, sizeof nodes[2].raft_host, "127.0.0.2");
    assert_int_equal(start(2, "node-3", "yes"), 0);
    assert_true(logged(2, "(address)", "node 3 connected from 127.0.0.2 but its configured "
                                       "address is 127.0.0.3"));
    int l = leader_of_two();
    assert_int_equal(publish(&nodes[l], harness_cert("ca.pem"), "ip", "still served"), 0);
    for (int i = 0; i < N; i++)
        node_stop(&nodes[i]);
    nodes[2].raft_host[0] = '\0';
}

static void copy_file(const char *from, const char *to)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "cp '%s' '%s'", from, to);
    assert_int_equal(system(cmd), 0);
}

/* A STATUS value read with `ferry --ca CA status` (the node takes TLS only). */
static uint64_t tls_status_u64(const struct node *n, const char *ca, const char *key)
{
    const char *args[] = {"status", NULL};
    struct run_result r;
    uint64_t v = 0;
    char want[64];
    snprintf(want, sizeof want, "\n%s: ", key);
    if (run_with_ca(n, ca, &r, args) == 0) {
        const char *at = strstr(r.out, want);
        if (at != NULL)
            v = strtoull(at + strlen(want), NULL, 10);
    }
    run_result_free(&r);
    return v;
}

/* SIGHUP reloads the certificates: new connections get the new one, an
 * established connection carries on, a bad file keeps the old one. On a
 * TLS-only listener a plaintext client is refused with a reason. */
static void test_sighup_reloads_certificates(void **state)
{
    (void)state;
    struct node *n = &nodes[0];
    char cert[300], key[300], out[300];
    snprintf(cert, sizeof cert, "%s/server.pem", n->dir);
    snprintf(key, sizeof key, "%s/server.key", n->dir);
    snprintf(out, sizeof out, "%s/sub.out", n->dir);
    copy_file(harness_cert("node-1.pem"), cert);
    copy_file(harness_cert("node-1.key"), key);
    const char *flags[] = {"--client_tls", "required", "--client_tls_certificate", cert,
                           "--client_tls_key", key, NULL};
    assert_int_equal(node_spawn(n, flags), 0);
    const char *old_ca = harness_cert("ca.pem");
    const char *new_ca = harness_cert("other/ca.pem");
    int up = 0;
    for (int t = 0; t < 15000 && !up; t += 100) {
        up = publish(n, old_ca, "warmup", "w") == 0;
        if (!up)
            sleep_ms(100);
    }
    assert_true(up);

    const char *plain[] = {"pub", "news", "x", NULL};
    struct run_result pr;
    assert_int_not_equal(run_with_ca(n, NULL, &pr, plain), 0);
    assert_non_null(strstr(pr.err, "accepts TLS connections only"));
    run_result_free(&pr);
    assert_true(logged(1, "a plaintext client, and client_tls is required", NULL));
    assert_int_equal(tls_status_u64(n, old_ca, "plaintext_refused"), 1);
    const char *status[] = {"status", NULL};
    struct run_result sr;
    assert_int_equal(run_with_ca(n, old_ca, &sr, status), 0);
    assert_non_null(strstr(sr.out, "client_certificate: CN=ferry-node-1, issuer CN=Ferry demo CA"));
    assert_non_null(strstr(sr.out, "links_certificate: -"));
    run_result_free(&sr);

    /* A subscriber connected with the old certificate. */
    const char *sub[] = {"sub", "news", "--count", "2", "--timeout", "20s", "--ca", old_ca, NULL};
    pid_t subscriber = spawn_ferry(n->port, NULL, out, sub);
    assert_true(subscriber > 0);
    for (int t = 0; t < 10000 && tls_status_u64(n, old_ca, "subscriptions") < 1; t += 50)
        sleep_ms(50);
    assert_int_equal(tls_status_u64(n, old_ca, "subscriptions"), 1);
    assert_int_equal(publish(n, old_ca, "news", "one"), 0);

    copy_file(harness_cert("other/node-1.pem"), cert);
    copy_file(harness_cert("other/node-1.key"), key);
    node_signal(n, SIGHUP);
    assert_true(logged(1, "SIGHUP: TLS certificates reloaded", "issuer CN=Other"));
    assert_int_equal(tls_status_u64(n, new_ca, "tls_reloads"), 1);

    const char *pub[] = {"pub", "news", "x", NULL};
    struct run_result r;
    assert_int_not_equal(run_with_ca(n, old_ca, &r, pub), 0);
    assert_non_null(strstr(r.err, "certificate verify failed"));
    run_result_free(&r);
    assert_int_equal(publish(n, new_ca, "news", "two"), 0);

    /* The subscriber's session predates the reload and still works. */
    int st = 0;
    assert_int_equal(waitpid(subscriber, &st, 0), subscriber);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    char got[64] = "";
    size_t len = fread(got, 1, sizeof got - 1, f);
    got[len] = '\0';
    fclose(f);
    assert_string_equal(got, "one\ntwo\n");

    /* A broken certificate file: the reload fails and the last good one stays. */
    f = fopen(cert, "w");
    assert_non_null(f);
    fputs("not a certificate\n", f);
    fclose(f);
    node_signal(n, SIGHUP);
    assert_true(logged(1, "TLS certificates not reloaded, the old ones stay in use", NULL));
    assert_int_equal(tls_status_u64(n, new_ca, "tls_reload_failures"), 1);
    assert_int_equal(publish(n, new_ca, "news", "three"), 0);
    node_stop(n);
}

/* A client that connects and says nothing, or stalls its TLS handshake,
 * loses its connection after client_handshake_timeout. */
static void test_stalled_handshakes_are_closed(void **state)
{
    (void)state;
    struct node *n = &nodes[0];
    const char *flags[] = {"--client_tls", "yes", "--client_tls_certificate",
                           harness_cert("node-1.pem"), "--client_tls_key",
                           harness_cert("node-1.key"), "--client_handshake_timeout", "1s", NULL};
    assert_int_equal(node_start(n, flags), 0);
    int silent = conn_open(n->port);
    int stalled = conn_open(n->port);
    assert_true(silent >= 0 && stalled >= 0);
    const uint8_t partial_record[] = {0x16, 0x03, 0x01, 0x00};
    assert_int_equal(conn_send_raw(stalled, partial_record, sizeof partial_record), 0);
    assert_true(conn_closed(silent, 10000));
    assert_true(conn_closed(stalled, 10000));
    close(silent);
    close(stalled);
    assert_true(logged(1, "no HELLO within 1000 ms (client_handshake_timeout)", NULL));
    assert_true(logged(1, "no TLS handshake within 1000 ms", NULL));
    assert_true(status_u64(n, "handshake_timeouts") >= 2);
    /* Clients that finish in time are served. */
    assert_int_equal(publish(n, harness_cert("ca.pem"), "h", "fine"), 0);
    assert_int_equal(publish(n, NULL, "h", "fine in plaintext too"), 0);
    node_stop(n);
}

/* Certificate files that do not load: ferryd refuses to start (exit 2) and
 * names the file; ferry says which CA file it could not use. */
static void test_bad_certificate_files(void **state)
{
    (void)state;
    struct node *n = &nodes[0];
    const char *missing[] = {"--client_tls", "yes", "--client_tls_certificate",
                             "/nonexistent/node.pem", "--client_tls_key",
                             harness_cert("node-1.key"), NULL};
    assert_int_not_equal(node_spawn(n, missing), 0);
    assert_int_equal(n->exit_status, 2);
    assert_true(node_log_contains(n, "client_tls: certificate file '/nonexistent/node.pem': "
                                     "cannot load it"));
    const char *mismatch[] = {"--client_tls", "yes", "--client_tls_certificate",
                              harness_cert("node-1.pem"), "--client_tls_key",
                              harness_cert("node-2.key"), NULL};
    assert_int_not_equal(node_spawn(n, mismatch), 0);
    assert_int_equal(n->exit_status, 2);
    assert_true(node_log_contains(n, "does not match certificate"));

    const char *good[] = {"--client_tls", "yes", "--client_tls_certificate",
                          harness_cert("node-1.pem"), "--client_tls_key",
                          harness_cert("node-1.key"), NULL};
    assert_int_equal(node_start(n, good), 0);
    const char *pub[] = {"pub", "c", "x", NULL};
    struct run_result r;
    assert_int_not_equal(run_with_ca(n, "/nonexistent/ca.pem", &r, pub), 0);
    assert_non_null(strstr(r.err, "TLS: CA file '/nonexistent/ca.pem': cannot load it"));
    run_result_free(&r);
    node_stop(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_refusals_keep_the_cluster_working, setup, teardown),
        cmocka_unit_test_setup_teardown(test_right_certificate_wrong_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sighup_reloads_certificates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stalled_handshakes_are_closed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_certificate_files, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
