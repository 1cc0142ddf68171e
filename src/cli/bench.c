/* bench.c - `ferry bench`: the peers' benchmark workload against Ferry.
 *
 * Implements the modes of the peer harness's workload definition exactly,
 * with the same flags and the same one-line result format as its clients,
 * so a Ferry row sits beside the peers' rows:
 *
 *   sync     COUNT messages one at a time (window 1); 100 warm-up messages
 *            first. Latency per message = publish call .. PUBLISH_OK.
 *            msgs/s = COUNT / elapsed.
 *   async    at most WINDOW unacknowledged messages (the client's window);
 *            100 warm-up messages. Latency = send .. ack of that message;
 *            msgs/s = COUNT / (first send .. last ack).
 *   consume  COUNT messages are stored first (untimed, as async pushes),
 *            then one consumer with prefetch WINDOW acks every delivery
 *            individually (FERRY_NOWAIT from the delivery callback); timed
 *            from the CONSUME request until the last ack was handed to the
 *            server plus one PING round trip.
 *
 * Payload: SIZE bytes (at least 16), the message id as a little-endian u64
 * in bytes 0-7, filler after it. Each run deletes and recreates its
 * resource (`bench-<pid>` unless --queue/--channel names one), and deletes
 * it afterwards unless -k. sync/async publish to a channel by default, and
 * push with --queue; consume always uses a queue. Diagnostics go to stderr,
 * prefixed with '#'. BENCH_MAX_SECONDS (default 300) bounds the whole run.
 */
#include "cli/cli.h"
#include "cli/latency.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WARMUP_ID (UINT64_MAX - 1)

struct bench {
    const char *mode;
    uint64_t size;
    uint64_t count;
    uint64_t window;
    uint64_t warmup;
    uint64_t timeout_ms;
    int keep;
    int queue; /* publish to a queue (push) rather than a channel */
    char name[FERRY_NAME_MAX + 1];
    ferry_client_t *c;
    uint8_t *payload;
    /* async and consume: written by callbacks on the client's I/O thread and
     * read by the main thread after ferry_drain() or under mu */
    uint64_t *sent_ns;
    struct latency lat;
    int record;
    uint64_t acks;
    uint64_t errors;
    uint64_t last_ack_ns;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    uint64_t received;
    uint64_t bad_ids;
    uint64_t ack_errors;
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void payload_set_id(uint8_t *p, uint64_t id)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(id >> (8 * i));
}

static uint64_t payload_id(const void *data, size_t len)
{
    const uint8_t *p = data;
    uint64_t id = 0;
    if (len < 8)
        return UINT64_MAX;
    for (int i = 0; i < 8; i++)
        id |= (uint64_t)p[i] << (8 * i);
    return id;
}

static int send_sync(struct bench *b)
{
    if (b->queue)
        return ferry_push(b->c, b->name, b->payload, b->size, NULL);
    return ferry_publish(b->c, b->name, b->payload, b->size, 0, NULL);
}

/* ---- sync ---- */

static int run_sync(struct bench *b)
{
    for (uint64_t i = 0; i < b->warmup; i++) {
        payload_set_id(b->payload, WARMUP_ID);
        send_sync(b);
    }
    uint64_t errors = 0;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < b->count; i++) {
        payload_set_id(b->payload, i);
        uint64_t a = now_ns();
        int rc = send_sync(b);
        uint64_t z = now_ns();
        if (rc == 0)
            latency_add(&b->lat, z - a);
        else if (errors++ < 5)
            note("publish error: %s", ferry_client_errmsg(b->c));
    }
    double elapsed = (double)(now_ns() - t0) / 1e9;
    printf("mode=sync size=%" PRIu64 " count=%" PRIu64 " window=1 msgs_per_s=%.0f", b->size,
           b->count, (double)b->lat.n / elapsed);
    latency_print_fields(&b->lat);
    printf(" errors=%" PRIu64 "\n", errors);
    return CLI_EXIT_OK;
}

/* ---- async ---- */

/* One bench per process: the callback argument carries the message index,
 * and the callback finds the bench here. */
static struct bench *the_bench;

static void on_ack(ferry_client_t *c, int status, uint64_t id, const char *errmsg, void *arg)
{
    (void)c;
    (void)id;
    struct bench *b = the_bench;
    uint64_t now = now_ns();
    uint64_t i = (uint64_t)(uintptr_t)arg;
    if (status == 0) {
        b->acks++;
        if (b->record && i < b->count)
            latency_add(&b->lat, now - b->sent_ns[i]);
    } else if (b->errors++ < 5) {
        note("async publish error: %s", errmsg);
    }
    b->last_ack_ns = now;
}

/* Send messages 0..n-1 asynchronously (all with the warm-up id if warmup)
 * and wait for every ack; returns the number that could not be sent. */
static uint64_t async_send(struct bench *b, uint64_t n, int warmup, int record)
{
    b->acks = 0;
    b->errors = 0;
    b->record = record;
    uint64_t send_errors = 0;
    for (uint64_t i = 0; i < n; i++) {
        payload_set_id(b->payload, warmup ? WARMUP_ID : i);
        if (record)
            b->sent_ns[i] = now_ns();
        int rc = b->queue ? ferry_push_async(b->c, b->name, b->payload, b->size, on_ack,
                                             (void *)(uintptr_t)i)
                          : ferry_publish_async(b->c, b->name, b->payload, b->size, 0, on_ack,
                                                (void *)(uintptr_t)i);
        if (rc != 0 && send_errors++ < 5)
            note("send error: %s", ferry_client_errmsg(b->c));
    }
    if (ferry_drain(b->c, 120000) != 0)
        note("drain: %s", ferry_client_errmsg(b->c));
    return send_errors;
}

static int run_async(struct bench *b)
{
    async_send(b, b->warmup, 1, 0);
    latency_reset(&b->lat);
    uint64_t t0 = now_ns();
    uint64_t send_errors = async_send(b, b->count, 0, 1);
    double elapsed = (double)(b->last_ack_ns - t0) / 1e9;
    uint64_t errs = b->errors + send_errors;
    uint64_t missing = b->count > b->acks + errs ? b->count - b->acks - errs : 0;
    printf("mode=async size=%" PRIu64 " count=%" PRIu64 " window=%" PRIu64 " msgs_per_s=%.0f",
           b->size, b->count, b->window, elapsed > 0 ? (double)b->acks / elapsed : 0.0);
    latency_print_fields(&b->lat);
    printf(" errors=%" PRIu64 "\n", errs + missing);
    return CLI_EXIT_OK;
}

/* ---- consume ---- */

static void on_delivery(ferry_sub_t *sub, const ferry_message_t *m, void *arg)
{
    struct bench *b = arg;
    uint64_t id = payload_id(m->data, m->len);
    int rc = ferry_ack(sub, m->id, FERRY_NOWAIT);
    pthread_mutex_lock(&b->mu);
    if (id >= b->count)
        b->bad_ids++;
    if (rc != 0)
        b->ack_errors++;
    if (++b->received >= b->count)
        pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->mu);
}

/* Wait until every delivery arrived, or nothing arrived for idle_ms. */
static void wait_received(struct bench *b, uint64_t idle_ms)
{
    pthread_mutex_lock(&b->mu);
    uint64_t seen = b->received, last = now_ns();
    while (b->received < b->count) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000;
        if (ts.tv_nsec >= 1000000000) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&b->cond, &b->mu, &ts);
        if (b->received != seen) {
            seen = b->received;
            last = now_ns();
        } else if (now_ns() - last > idle_ms * 1000000u) {
            note("consume stalled at %" PRIu64 " of %" PRIu64, b->received, b->count);
            break;
        }
    }
    pthread_mutex_unlock(&b->mu);
}

static int run_consume(struct bench *b)
{
    uint64_t send_errors = async_send(b, b->count, 0, 0);
    if (b->acks != b->count)
        note("fill: only %" PRIu64 " of %" PRIu64 " stored (%" PRIu64 " errors)", b->acks, b->count,
             b->errors + send_errors);
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.window = (uint32_t)b->window;
    o.on_message = on_delivery;
    o.arg = b;
    ferry_sub_t *sub = NULL;
    uint64_t t0 = now_ns();
    if (ferry_consume(b->c, b->name, &o, &sub) != 0)
        return cli_fail_client(b->c, "bench: consume");
    wait_received(b, b->timeout_ms > 10000 ? b->timeout_ms : 10000);
    if (ferry_ping(b->c, NULL) != 0)
        note("ping after the last ack: %s", ferry_client_errmsg(b->c));
    double elapsed = (double)(now_ns() - t0) / 1e9;
    pthread_mutex_lock(&b->mu);
    uint64_t got = b->received, errors = b->ack_errors + b->bad_ids;
    pthread_mutex_unlock(&b->mu);
    if (ferry_cancel(sub) != 0)
        note("cancel: %s", ferry_client_errmsg(b->c));
    errors += b->count > got ? b->count - got : 0;
    printf("mode=consume size=%" PRIu64 " count=%" PRIu64 " window=%" PRIu64
           " msgs_per_s=%.0f p50_us=- p99_us=- p999_us=- max_us=- mean_us=- errors=%" PRIu64
           " received=%" PRIu64 "\n",
           b->size, b->count, b->window, (double)got / elapsed, errors, got);
    return CLI_EXIT_OK;
}

/* ---- setup ---- */

static int recreate(struct bench *b)
{
    int kind = b->queue ? FERRY_QUEUE : FERRY_CHANNEL;
    int rc = ferry_delete(b->c, b->name);
    if (rc != 0 && rc != FERRY_ENOTFOUND)
        return cli_error("bench: cannot delete '%s': %s", b->name, ferry_client_errmsg(b->c));
    if (ferry_create(b->c, kind, b->name, NULL) != 0)
        return cli_error("bench: create %s '%s': %s", kind == FERRY_QUEUE ? "queue" : "channel",
                         b->name, ferry_client_errmsg(b->c));
    ferry_server_info_t si;
    if (ferry_client_server_info(b->c, &si) == 0)
        note("%s '%s' on %s (%s, %s)", kind == FERRY_QUEUE ? "queue" : "channel", b->name,
             si.address, si.role, si.version);
    return 0;
}

static int connect_bench(struct cli_global *g, struct cli_args *a, const char *servers,
                         struct bench *b)
{
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = servers ? servers : a->servers ? a->servers : g->servers;
    o.client_name = "ferry-bench";
    o.window = (uint32_t)b->window;
    o.request_timeout_ms = (uint32_t)b->timeout_ms;
    int rc = ferry_client_create(&b->c, &o);
    if (rc != 0)
        return cli_error("bench: %s", ferry_strerror(rc));
    if (ferry_client_connect(b->c) != 0) {
        cli_error("bench: %s", ferry_client_errmsg(b->c));
        ferry_client_close(b->c);
        b->c = NULL;
        return CLI_EXIT_FAIL;
    }
    return 0;
}

static int parse_bench(const struct cli_cmd *cmd, struct cli_args *a, struct bench *b)
{
    const char *v;
    int rc = 0;
    b->mode = cli_get(cmd, a, "mode") ? cli_get(cmd, a, "mode") : "sync";
    if ((v = cli_get(cmd, a, "size")) != NULL)
        rc = cli_opt_size(cmd, "size", v, &b->size);
    if (rc == 0 && (v = cli_get(cmd, a, "count")) != NULL)
        rc = cli_opt_u64(cmd, "count", v, &b->count);
    if (rc == 0 && (v = cli_get(cmd, a, "window")) != NULL)
        rc = cli_opt_u64(cmd, "window", v, &b->window);
    if (rc == 0 && (v = cli_get(cmd, a, "warmup")) != NULL)
        rc = cli_opt_u64(cmd, "warmup", v, &b->warmup);
    if (rc == 0 && (v = cli_get(cmd, a, "timeout")) != NULL)
        rc = cli_opt_u64(cmd, "timeout", v, &b->timeout_ms);
    if (rc != 0)
        return rc;
    if (strcmp(b->mode, "sync") && strcmp(b->mode, "async") && strcmp(b->mode, "consume") &&
        strcmp(b->mode, "failover"))
        return cli_usage_error(cmd, "unknown mode '%s' (sync, async, consume, failover)", b->mode);
    if (b->window == 0 || b->window > 65535)
        return cli_usage_error(cmd, "-w must be from 1 to 65535");
    if (b->count == 0 || b->count > 100000000)
        return cli_usage_error(cmd, "-n must be from 1 to 100000000");
    if (b->size > 64u * 1024 * 1024)
        return cli_usage_error(cmd, "-s must be at most 64M");
    if (b->timeout_ms == 0 || b->timeout_ms > 3600000)
        return cli_usage_error(cmd, "-t must be from 1 to 3600000 ms");
    if (b->size < 16)
        b->size = 16;
    const char *q = cli_get(cmd, a, "queue"), *ch = cli_get(cmd, a, "channel");
    if (q && ch)
        return cli_usage_error(cmd, "give --queue or --channel, not both");
    if (ch && strcmp(b->mode, "consume") == 0)
        return cli_usage_error(cmd, "consume mode reads a queue: use --queue");
    b->queue = q != NULL || strcmp(b->mode, "consume") == 0;
    if (q || ch)
        snprintf(b->name, sizeof b->name, "%s", q ? q : ch);
    else
        snprintf(b->name, sizeof b->name, "bench-%ld", (long)getpid());
    b->keep = cli_get(cmd, a, "keep") != NULL;
    return 0;
}

static int run_bench(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a)
{
    struct bench b;
    memset(&b, 0, sizeof b);
    b.size = 100;
    b.count = 2000;
    b.window = 256;
    b.warmup = 100;
    b.timeout_ms = 5000;
    int rc = parse_bench(cmd, a, &b);
    if (rc != 0)
        return rc;
    if (strcmp(b.mode, "failover") == 0)
        return cli_error("bench: mode 'failover' is not supported yet: it needs the client's "
                         "automatic failover and idempotent retries");
    const char *e = getenv("BENCH_MAX_SECONDS");
    unsigned max_s = e ? (unsigned)atoi(e) : 300;
    if (max_s)
        alarm(max_s);
    size_t n = b.count > b.warmup ? b.count : b.warmup;
    b.payload = malloc(b.size);
    b.sent_ns = calloc(n ? n : 1, sizeof *b.sent_ns);
    if (b.payload == NULL || b.sent_ns == NULL || latency_init(&b.lat, b.count) != 0) {
        free(b.payload);
        free(b.sent_ns);
        return cli_error("bench: out of memory");
    }
    for (uint64_t i = 0; i < b.size; i++)
        b.payload[i] = (uint8_t)('a' + i % 26);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cond, NULL);
    the_bench = &b;
    rc = connect_bench(g, a, cli_get(cmd, a, "url"), &b);
    if (rc == 0)
        rc = recreate(&b);
    if (rc == 0) {
        if (strcmp(b.mode, "sync") == 0)
            rc = run_sync(&b);
        else if (strcmp(b.mode, "async") == 0)
            rc = run_async(&b);
        else
            rc = run_consume(&b);
        fflush(stdout);
        if (!b.keep && ferry_delete(b.c, b.name) != 0)
            note("delete '%s': %s", b.name, ferry_client_errmsg(b.c));
    }
    ferry_client_close(b.c);
    pthread_cond_destroy(&b.cond);
    pthread_mutex_destroy(&b.mu);
    latency_free(&b.lat);
    free(b.payload);
    free(b.sent_ns);
    return rc;
}

static const struct cli_opt bench_opts[] = {
    {"mode", 'm', "MODE", "sync, async, consume (failover: not supported yet)"},
    {"size", 's', "SIZE", "payload bytes, at least 16; K/M suffixes (default 100)"},
    {"count", 'n', "COUNT", "messages measured (default 2000)"},
    {"window", 'w', "W", "async: unacked publishes; consume: prefetch (default 256)"},
    {"warmup", 'W', "N", "warm-up messages before sync/async (default 100)"},
    {"timeout", 't', "MS", "request timeout in milliseconds (default 5000)"},
    {"keep", 'k', NULL, "keep the resource afterwards"},
    {"url", 'u', "LIST", "servers, as --servers (for the peers' -u)"},
    {"queue", 0, "NAME", "use queue NAME (publishes become pushes)"},
    {"channel", 0, "NAME", "use channel NAME"},
    {"duration", 'd', "S", "failover: run time"},
    {"kill-after", 'a', "MS", "failover: when to kill the leader"},
    {"kill-cmd", 'K', "CMD", "failover: kill command, %s = the leader's name"},
    {NULL, 0, NULL, NULL},
};

const struct cli_cmd cli_cmd_bench = {
    .name = "bench",
    .synopsis = "-m sync|async|consume -s SIZE -n COUNT -w WINDOW [--queue NAME | --channel NAME]",
    .summary = "measure publish/push/consume rates and latencies (one result line)",
    .details = "Runs one measurement of the peer benchmark workload and prints one line:\n"
               "  mode=<m> size=<bytes> count=<N> window=<W> msgs_per_s=<x> p50_us=<x>\n"
               "  p99_us=<x> p999_us=<x> max_us=<x> mean_us=<x> errors=<n>\n"
               "The resource (bench-<pid> unless named) is deleted, recreated, and deleted\n"
               "again afterwards (unless -k).\n\n"
               "examples:\n"
               "  ferry bench -m sync -s 100 -n 2000\n"
               "  ferry bench -m async -s 1K -n 20000 -w 256\n"
               "  ferry bench -m consume -s 100 -n 20000 -w 256",
    .opts = bench_opts,
    .min_pos = 0,
    .max_pos = 0,
    .run = run_bench,
};
