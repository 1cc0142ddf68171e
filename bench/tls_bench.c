/* tls_bench.c - the CPU cost of Ferry's TLS layer, in memory (not a test).
 *
 * Two tls_conn ends in one thread, certificates from scripts/make-certs in a
 * temporary directory, the contexts configured as ferryd configures node
 * links (mutual, ECDSA P-256, TLS 1.3, OpenSSL's default suite). No sockets:
 * what is measured is what TLS adds on the CPU to every write and read.
 *   handshakes: full mutual handshakes per second (both ends' work).
 *   records:    one write of B bytes encrypted by one end and decrypted by the
 *               other, for B = 112 (one 100-byte publish frame), 1036 (one
 *               1 KiB frame) and 65536 (a loop turn's batch of frames);
 *               reported as microseconds per write and MB/s.
 * Usage: tls_bench [seconds-per-case]   (default 1)
 */
#include "tls/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static char dir[64];

static struct tls_ctx *ctx(enum tls_role role, const char *node)
{
    char cert[128], key[128], ca[128];
    snprintf(cert, sizeof cert, "%s/%s.pem", dir, node);
    snprintf(key, sizeof key, "%s/%s.key", dir, node);
    snprintf(ca, sizeof ca, "%s/ca.pem", dir);
    struct tls_settings s = {.cert_file = cert,
                             .key_file = key,
                             .ca_file = ca,
                             .verify = TLS_VERIFY_REQUIRED,
                             .min_version = 12};
    struct tls_ctx *c = NULL;
    struct ferry_err err;
    if (tls_ctx_new(&c, role, &s, &err) != 0) {
        fprintf(stderr, "tls_bench: %s\n", err.msg);
        exit(1);
    }
    return c;
}

/* Move output both ways until both ends are quiet. */
static void pump(struct tls_conn *a, struct buf *ap, struct tls_conn *b, struct buf *bp,
                 struct buf *wire)
{
    while (tls_conn_output_pending(a) > 0 || tls_conn_output_pending(b) > 0) {
        wire->len = 0;
        tls_conn_take_output(a, wire);
        if (wire->len > 0 && tls_conn_input(b, wire->data, wire->len, bp) != 0) {
            fprintf(stderr, "tls_bench: %s\n", tls_conn_error(b));
            exit(1);
        }
        wire->len = 0;
        tls_conn_take_output(b, wire);
        if (wire->len > 0 && tls_conn_input(a, wire->data, wire->len, ap) != 0) {
            fprintf(stderr, "tls_bench: %s\n", tls_conn_error(a));
            exit(1);
        }
    }
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 1.0;
    snprintf(dir, sizeof dir, "/tmp/ferry-tlsbench-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    char cmd[300];
    snprintf(cmd, sizeof cmd, FERRY_SOURCE_DIR "/scripts/make-certs %s --nodes 2 >/dev/null", dir);
    if (system(cmd) != 0)
        return 1;
    struct tls_ctx *sc = ctx(TLS_SERVER, "node-1"), *cc = ctx(TLS_CLIENT, "node-2");
    struct buf sp, cp, wire;
    buf_init(&sp);
    buf_init(&cp);
    buf_init(&wire);
    struct utsname u;
    uname(&u);
    printf("# tls_bench: in-memory TLS cost, %s %s, %ld CPUs online, %.1f s per case\n",
           u.sysname, u.release, sysconf(_SC_NPROCESSORS_ONLN), secs);

    /* Handshakes. */
    unsigned long n = 0;
    double t0 = now_s(), t;
    const char *version = "?";
    do {
        struct tls_conn *s = tls_conn_new(sc, NULL), *c = tls_conn_new(cc, "ferry-node-1");
        tls_conn_start(c);
        pump(c, &cp, s, &sp, &wire);
        if (!tls_conn_established(s) || !tls_conn_peer_names(s, "ferry-node-2")) {
            fprintf(stderr, "tls_bench: handshake did not complete\n");
            return 1;
        }
        version = tls_conn_version(c);
        tls_conn_free(s);
        tls_conn_free(c);
        n++;
        t = now_s() - t0;
    } while (t < secs);
    printf("handshakes_per_s=%.0f us_per_handshake=%.0f version=%s (mutual, ECDSA P-256)\n",
           n / t, t * 1e6 / n, version);

    /* Records. */
    struct tls_conn *s = tls_conn_new(sc, NULL), *c = tls_conn_new(cc, "ferry-node-1");
    tls_conn_start(c);
    pump(c, &cp, s, &sp, &wire);
    printf("# cipher %s\n", tls_conn_cipher(c));
    static const size_t sizes[] = {112, 1036, 65536};
    uint8_t *data = malloc(65536);
    if (data == NULL)
        return 1;
    memset(data, 0x5a, 65536);
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        size_t size = sizes[k];
        n = 0;
        t0 = now_s();
        do {
            for (int i = 0; i < 64; i++) {
                if (tls_conn_encrypt(c, data, size) != 0)
                    return 1;
                pump(c, &cp, s, &sp, &wire);
                sp.len = 0;
            }
            n += 64;
            t = now_s() - t0;
        } while (t < secs);
        printf("write_bytes=%zu writes_per_s=%.0f us_per_write=%.2f MB_per_s=%.1f\n", size, n / t,
               t * 1e6 / n, (double)n * size / t / 1e6);
    }
    free(data);
    tls_conn_free(s);
    tls_conn_free(c);
    tls_ctx_free(sc);
    tls_ctx_free(cc);
    buf_free(&sp);
    buf_free(&cp);
    buf_free(&wire);
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : 1;
}
