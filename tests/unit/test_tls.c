/* test_tls.c - tls: handshakes and records pumped between two connections in
 * memory, identity checks, refusals (another CA, no client certificate, a
 * name the certificate lacks, plaintext on a TLS port) and loading errors.
 * Certificates come from scripts/make-certs, run into a temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tls/tls.h"

static char dir[64];
static char path_buf[8][300];
static int path_next;

/* dir/name, in one of a few rotating buffers. */
static const char *p(const char *name)
{
    char *out = path_buf[path_next++ % 8];
    snprintf(out, sizeof path_buf[0], "%s/%s", dir, name);
    return out;
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/ferry-tls-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    char cmd[600];
    snprintf(cmd, sizeof cmd,
             FERRY_SOURCE_DIR "/scripts/make-certs %s/a --nodes 2 >/dev/null && " FERRY_SOURCE_DIR
                              "/scripts/make-certs %s/b --nodes 1 --ca-name Other >/dev/null",
             dir, dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct tls_ctx *ctx(enum tls_role role, const char *cert, const char *key, const char *ca,
                           int verify, int min)
{
    struct tls_settings s = {.cert_file = cert,
                             .key_file = key,
                             .ca_file = ca,
                             .verify = verify,
                             .min_version = min};
    struct tls_ctx *c = NULL;
    struct ferry_err err;
    ferry_err_clear(&err);
    int rc = tls_ctx_new(&c, role, &s, &err);
    if (rc != 0)
        fprintf(stderr, "tls_ctx_new: %s\n", err.msg);
    assert_int_equal(rc, 0);
    return c;
}

/* Move output between the two ends until neither has any; plaintext read by
 * each end is appended to its buffer. Returns 0, or the first failure. */
static int pump(struct tls_conn *a, struct buf *a_plain, struct tls_conn *b, struct buf *b_plain)
{
    struct buf wire;
    buf_init(&wire);
    int rc = 0;
    for (int rounds = 0; rounds < 100 && rc == 0; rounds++) {
        if (tls_conn_output_pending(a) == 0 && tls_conn_output_pending(b) == 0)
            break;
        wire.len = 0;
        assert_int_equal(tls_conn_take_output(a, &wire), 0);
        if (wire.len > 0)
            rc = tls_conn_input(b, wire.data, wire.len, b_plain);
        if (rc != 0)
            break;
        wire.len = 0;
        assert_int_equal(tls_conn_take_output(b, &wire), 0);
        if (wire.len > 0)
            rc = tls_conn_input(a, wire.data, wire.len, a_plain);
    }
    buf_free(&wire);
    return rc;
}

static void test_handshake_and_records(void **state)
{
    (void)state;
    struct tls_ctx *sc = ctx(TLS_SERVER, p("a/node-1.pem"), p("a/node-1.key"), NULL, 0, 0);
    struct tls_ctx *cc = ctx(TLS_CLIENT, NULL, NULL, p("a/ca.pem"), TLS_VERIFY_REQUIRED, 0);
    char desc[200];
    tls_ctx_describe(sc, desc, sizeof desc);
    assert_non_null(strstr(desc, "CN=ferry-node-1, issuer CN=Ferry demo CA, expires 20"));
    struct tls_conn *s = tls_conn_new(sc, NULL);
    struct tls_conn *c = tls_conn_new(cc, "127.0.0.1");
    assert_non_null(s);
    assert_non_null(c);
    struct buf sp, cp;
    buf_init(&sp);
    buf_init(&cp);
    assert_int_equal(tls_conn_encrypt(c, (const uint8_t *)"x", 1), FERRY_ESTATE);
    assert_int_equal(tls_conn_start(c), 0);
    assert_int_equal(pump(c, &cp, s, &sp), 0);
    assert_true(tls_conn_established(c));
    assert_true(tls_conn_established(s));
    assert_string_equal(tls_conn_version(c), "TLSv1.3");
    assert_true(tls_conn_peer_names(c, "ferry-node-1"));
    assert_false(tls_conn_peer_names(c, "ferry-node-2"));
    assert_false(tls_conn_peer_names(s, "ferry-client")); /* the client sent none */

    /* 1 MiB one way, a short reply the other: bytes arrive intact and in order. */
    size_t big = 1u << 20;
    uint8_t *data = malloc(big);
    assert_non_null(data);
    for (size_t i = 0; i < big; i++)
        data[i] = (uint8_t)(i * 7 + (i >> 11));
    assert_int_equal(tls_conn_encrypt(c, data, big), 0);
    assert_true(tls_conn_output_pending(c) > big); /* records add their overhead */
    assert_int_equal(tls_conn_encrypt(s, (const uint8_t *)"pong", 4), 0);
    assert_int_equal(pump(c, &cp, s, &sp), 0);
    assert_int_equal(sp.len, big);
    assert_memory_equal(sp.data, data, big);
    assert_int_equal(cp.len, 4);
    assert_memory_equal(cp.data, "pong", 4);

    /* Ciphertext fed one byte at a time still decrypts. */
    sp.len = 0;
    assert_int_equal(tls_conn_encrypt(c, data, 5000), 0);
    struct buf wire;
    buf_init(&wire);
    assert_int_equal(tls_conn_take_output(c, &wire), 0);
    for (size_t i = 0; i < wire.len; i++)
        assert_int_equal(tls_conn_input(s, wire.data + i, 1, &sp), 0);
    assert_int_equal(sp.len, 5000);
    assert_memory_equal(sp.data, data, 5000);

    /* A corrupted record is an error, not garbage plaintext. */
    wire.len = 0;
    assert_int_equal(tls_conn_encrypt(c, data, 100), 0);
    assert_int_equal(tls_conn_take_output(c, &wire), 0);
    wire.data[wire.len - 3] ^= 1;
    sp.len = 0;
    assert_int_equal(tls_conn_input(s, wire.data, wire.len, &sp), FERRY_EPROTO);
    assert_int_equal(sp.len, 0);
    assert_non_null(strstr(tls_conn_error(s), "TLS error"));
    buf_free(&wire);
    free(data);
    buf_free(&sp);
    buf_free(&cp);
    tls_conn_free(s);
    tls_conn_free(c);
    tls_ctx_free(sc);
    tls_ctx_free(cc);
}

/* Node links: both sides present certificates of the cluster CA, both
 * verify, and each side can tell which node the other is. */
static void test_mutual_and_identity(void **state)
{
    (void)state;
    struct tls_ctx *sc = ctx(TLS_SERVER, p("a/node-1.pem"), p("a/node-1.key"), p("a/ca.pem"),
                             TLS_VERIFY_REQUIRED, 13);
    struct tls_ctx *cc = ctx(TLS_CLIENT, p("a/node-2.pem"), p("a/node-2.key"), p("a/ca.pem"),
                             TLS_VERIFY_REQUIRED, 13);
    struct tls_conn *s = tls_conn_new(sc, NULL);
    struct tls_conn *c = tls_conn_new(cc, "ferry-node-1");
    struct buf sp, cp;
    buf_init(&sp);
    buf_init(&cp);
    assert_int_equal(tls_conn_start(c), 0);
    assert_int_equal(pump(c, &cp, s, &sp), 0);
    assert_true(tls_conn_established(s));
    assert_true(tls_conn_peer_names(s, "ferry-node-2"));
    assert_false(tls_conn_peer_names(s, "ferry-node-1"));
    assert_false(tls_conn_peer_names(s, "ferry-node-*"));
    char subject[100];
    tls_conn_peer_subject(s, subject, sizeof subject);
    assert_string_equal(subject, "CN=ferry-node-2");
    tls_conn_free(s);
    tls_conn_free(c);

    /* The dialer expects node 2 at this address, but node 1 answers. */
    s = tls_conn_new(sc, NULL);
    c = tls_conn_new(cc, "ferry-node-2");
    assert_int_equal(tls_conn_start(c), 0);
    assert_int_equal(pump(c, &cp, s, &sp), FERRY_EPROTO);
    assert_false(tls_conn_established(c));
    assert_non_null(strstr(tls_conn_error(c), "certificate verify failed: hostname mismatch"));
    /* The alert for the server is pending: it learns why too. */
    assert_true(tls_conn_output_pending(c) > 0);
    struct buf wire;
    buf_init(&wire);
    tls_conn_take_output(c, &wire);
    assert_int_equal(tls_conn_input(s, wire.data, wire.len, &sp), FERRY_EPROTO);
    assert_non_null(strstr(tls_conn_error(s), "alert"));
    buf_free(&wire);
    tls_conn_free(s);
    tls_conn_free(c);
    buf_free(&sp);
    buf_free(&cp);
    tls_ctx_free(sc);
    tls_ctx_free(cc);
}

static void expect_refused(struct tls_ctx *sc, struct tls_ctx *cc, const char *name,
                           const char *server_says, const char *client_says)
{
    struct tls_conn *s = tls_conn_new(sc, NULL);
    struct tls_conn *c = tls_conn_new(cc, name);
    struct buf sp, cp;
    buf_init(&sp);
    buf_init(&cp);
    assert_int_equal(tls_conn_start(c), 0);
    assert_int_not_equal(pump(c, &cp, s, &sp), 0);
    assert_false(tls_conn_established(s) && tls_conn_established(c));
    /* Whichever side failed, the other hears of it through the alert. */
    for (int i = 0; i < 2; i++) {
        struct buf wire;
        buf_init(&wire);
        tls_conn_take_output(c, &wire);
        if (wire.len)
            tls_conn_input(s, wire.data, wire.len, &sp);
        wire.len = 0;
        tls_conn_take_output(s, &wire);
        if (wire.len)
            tls_conn_input(c, wire.data, wire.len, &cp);
        buf_free(&wire);
    }
    if (server_says != NULL && strstr(tls_conn_error(s), server_says) == NULL)
        fail_msg("server error '%s' lacks '%s'", tls_conn_error(s), server_says);
    if (client_says != NULL && strstr(tls_conn_error(c), client_says) == NULL)
        fail_msg("client error '%s' lacks '%s'", tls_conn_error(c), client_says);
    buf_free(&sp);
    buf_free(&cp);
    tls_conn_free(s);
    tls_conn_free(c);
}

static void test_refusals(void **state)
{
    (void)state;
    struct tls_ctx *server = ctx(TLS_SERVER, p("a/node-1.pem"), p("a/node-1.key"), p("a/ca.pem"),
                                 TLS_VERIFY_REQUIRED, 0);
    /* A client that trusts another CA does not accept the server. */
    struct tls_ctx *other_ca = ctx(TLS_CLIENT, p("a/node-2.pem"), p("a/node-2.key"), p("b/ca.pem"),
                                   TLS_VERIFY_REQUIRED, 0);
    expect_refused(server, other_ca, NULL, "unknown ca", "certificate verify failed");
    /* A node whose certificate comes from another CA is not accepted. */
    struct tls_ctx *foreign = ctx(TLS_CLIENT, p("b/node-1.pem"), p("b/node-1.key"), p("a/ca.pem"),
                                  TLS_VERIFY_REQUIRED, 0);
    expect_refused(server, foreign, NULL, "certificate verify failed", NULL);
    /* A client without a certificate where one is required. */
    struct tls_ctx *anon = ctx(TLS_CLIENT, NULL, NULL, p("a/ca.pem"), TLS_VERIFY_REQUIRED, 0);
    expect_refused(server, anon, NULL, "certificate", NULL);
    /* The name a client dials must be in the certificate. */
    struct tls_ctx *plain_server = ctx(TLS_SERVER, p("a/node-1.pem"), p("a/node-1.key"), NULL, 0, 0);
    expect_refused(plain_server, anon, "ferry.example.com", NULL, "hostname mismatch");
    expect_refused(plain_server, anon, "127.0.0.2", NULL, "IP address mismatch");

    /* Plaintext on a TLS port. */
    struct tls_conn *s = tls_conn_new(server, NULL);
    struct buf plain;
    buf_init(&plain);
    const uint8_t hello[] = {0, 0, 0, 20, 1, 1, 0, 0};
    assert_int_equal(tls_conn_input(s, hello, sizeof hello, &plain), FERRY_EPROTO);
    assert_non_null(strstr(tls_conn_error(s), "does not speak TLS"));
    assert_int_equal(plain.len, 0);
    buf_free(&plain);
    tls_conn_free(s);
    tls_ctx_free(server);
    tls_ctx_free(other_ca);
    tls_ctx_free(foreign);
    tls_ctx_free(anon);
    tls_ctx_free(plain_server);
}

static void test_load_errors(void **state)
{
    (void)state;
    struct tls_ctx *c = NULL;
    struct ferry_err err;
    struct tls_settings s = {.cert_file = p("a/nope.pem"), .key_file = p("a/node-1.key")};
    assert_int_equal(tls_ctx_new(&c, TLS_SERVER, &s, &err), FERRY_ECONFIG);
    assert_non_null(strstr(err.msg, "certificate file"));
    assert_non_null(strstr(err.msg, "nope.pem"));
    s.cert_file = p("a/node-2.pem");
    assert_int_equal(tls_ctx_new(&c, TLS_SERVER, &s, &err), FERRY_ECONFIG);
    assert_non_null(strstr(err.msg, "does not match certificate"));
    s.cert_file = p("a/node-1.key"); /* a key where a certificate belongs */
    assert_int_equal(tls_ctx_new(&c, TLS_SERVER, &s, &err), FERRY_ECONFIG);
    assert_non_null(strstr(err.msg, "cannot load it"));
    struct tls_settings no_key = {.cert_file = p("a/node-1.pem")};
    assert_int_equal(tls_ctx_new(&c, TLS_SERVER, &no_key, &err), FERRY_ECONFIG);
    assert_non_null(strstr(err.msg, "no key file"));
    struct tls_settings nothing = {0};
    assert_int_equal(tls_ctx_new(&c, TLS_SERVER, &nothing, &err), FERRY_ECONFIG);
    assert_non_null(strstr(err.msg, "needs a certificate"));
    struct tls_settings bad_ca = {.ca_file = p("a/missing-ca.pem"), .verify = TLS_VERIFY_REQUIRED};
    assert_int_equal(tls_ctx_new(&c, TLS_CLIENT, &bad_ca, &err), FERRY_ECONFIG);
    assert_non_null(strstr(err.msg, "CA file"));
    struct tls_settings bad_cipher = {.ciphers = "NO-SUCH-CIPHER"};
    assert_int_equal(tls_ctx_new(&c, TLS_CLIENT, &bad_cipher, &err), FERRY_ECONFIG);
    assert_non_null(strstr(err.msg, "cipher list"));
    assert_null(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_and_records),
        cmocka_unit_test(test_mutual_and_identity),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_load_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
