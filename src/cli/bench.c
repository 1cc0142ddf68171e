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
 *   failover a one-at-a-time publisher (window 1, persistent publishes to a
 *            channel) runs for DURATION; at KILL_AFTER ms the leader's node id
 *            is read from a node's status (a monitoring connection, key
 *            leader_id) and KILL_CMD is run with %s replaced by it. The
 *            client fails over by itself: it reconnects to the new leader
 *            and sends the unacknowledged publish again with its producer
 *            sequence, which the servers store once (lib_reconnects, resent,
 *            dup_acks report it). A publish that still fails is retried by
 *            the bench as a new message (errors), which may store it twice.
 *            Afterwards the channel is read back from
 *            event id 1 on the new leader and each acknowledged sequence
 *            number is looked for. Reports outage_ms (the kill command's
 *            return .. the ack of the first publish attempt started after
 *            it), max_gap_ms, acked_missing (must be 0) and duplicates
 *            (sequence numbers stored more than once).
 *
 * Payload: SIZE bytes (at least 16), the message id as a little-endian u64
 * in bytes 0-7, filler after it. Each run deletes and recreates its
 * resource (`bench-<pid>` unless --queue/--channel names one), and deletes
 * it afterwards unless -k. sync/async publish to a channel by default, and
 * push with --queue; consume always uses a queue, failover a channel. Diagnostics go to stderr,
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
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WARMUP_ID (UINT64_MAX - 1)
#define FAILOVER_TIMEOUT_MS 30000 /* per publish, unless -t: the library fails over within it */
#define FAILOVER_CONNECT_MS 500  /* per address while reconnecting */

struct bench {
    const char *mode;
    uint64_t size;
    uint64_t count;
    uint64_t window;
    uint64_t warmup;
    uint64_t timeout_ms;
    uint64_t duration_ms;   /* failover */
    uint64_t kill_after_ms; /* failover */
    const char *kill_cmd;   /* failover */
    const char *servers;
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

/* ---- connecting ---- */

/* Create a client for b->servers and connect it (any_node: a monitoring
 * connection any node accepts). 0 and *out, or the code and the reason in
 * why. */
static int new_client(const struct bench *b, int any_node, ferry_client_t **out, char *why,
                      size_t why_cap)
{
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = b->servers;
    o.client_name = "ferry-bench";
    o.window = (uint32_t)b->window;
    o.request_timeout_ms = (uint32_t)b->timeout_ms;
    o.any_node = any_node;
    cli_apply_tls(&o);
    if (strcmp(b->mode, "failover") == 0)
        o.connect_timeout_ms = FAILOVER_CONNECT_MS; /* a paused node must not hold us long */
    ferry_client_t *c = NULL;
    int rc = ferry_client_create(&c, &o);
    if (rc != 0) {
        snprintf(why, why_cap, "%s", ferry_strerror(rc));
        return rc;
    }
    rc = ferry_client_connect(c);
    if (rc != 0) {
        snprintf(why, why_cap, "%s", ferry_client_errmsg(c));
        ferry_client_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* ---- failover ---- */

#define RECONNECT_PAUSE_MS 2
#define GIVE_UP_AFTER_END_MS 30000 /* a message still unacked this long after the end */
#define READBACK_LIMIT_MS 60000
#define READBACK_IDLE_MS 10000

/* One sequence number: its latest publish attempt and its ack. */
struct fo_msg {
    uint64_t sent_ns; /* start of the latest attempt */
    uint64_t ack_ns;  /* 0: never acknowledged */
};

struct failover {
    struct bench *b;
    uint64_t t_start;
    /* written by the killer thread, read after joining it */
    uint64_t t_kill; /* 0: no kill happened */
    char killed[32]; /* the leader's node id, or "" when unknown */
    int kill_rc;     /* the kill command's exit status; -1 when it could not run */
    /* publisher */
    struct fo_msg *msg;
    uint64_t cap, nseq, acked, errors, reconnects;
    uint64_t lib_reconnects, lib_resent, lib_dups; /* the client library's failovers */
    char client_url[FERRY_NAME_MAX + 8];
    /* read-back */
    uint8_t *seen; /* copies of each sequence number found, saturating */
    uint64_t stored, readback, foreign;
    int verified;
};

static void sleep_ms(uint64_t ms)
{
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static void sleep_until(uint64_t t_ns)
{
    uint64_t now = now_ns();
    if (t_ns > now) {
        struct timespec ts = {(time_t)((t_ns - now) / 1000000000u),
                              (long)((t_ns - now) % 1000000000u)};
        while (nanosleep(&ts, &ts) != 0)
            ;
    }
}

/* The leader's node id as a node reports it (STATUS key leader_id, "0" when
 * it knows none), asked over a monitoring connection; retried for up to 3 s
 * while no node knows a leader. 0, or -1 after a note. */
static int find_leader(const struct bench *b, char *id, size_t cap)
{
    char why[512] = "no node named a leader";
    uint64_t deadline = now_ns() + 3000000000u;
    do {
        ferry_client_t *c = NULL;
        ferry_kv_t *kv = NULL;
        size_t n = 0;
        if (new_client(b, 1, &c, why, sizeof why) == 0 && ferry_status(c, &kv, &n) == 0) {
            for (size_t i = 0; i < n; i++) {
                if (strcmp(kv[i].key, "leader_id") == 0 && strcmp(kv[i].value, "0") != 0 &&
                    kv[i].value[0] != '\0')
                    snprintf(id, cap, "%s", kv[i].value);
            }
            ferry_status_free(kv);
        } else if (c != NULL) {
            snprintf(why, sizeof why, "status: %s", ferry_client_errmsg(c));
        }
        ferry_client_close(c);
        if (id[0] != '\0')
            return 0;
        sleep_ms(10);
    } while (now_ns() < deadline);
    note("cannot find the leader: %s", why);
    return -1;
}

/* cmd with every %s replaced by id and %% by %; -1 if it does not fit. */
static int expand_kill_cmd(const char *fmt, const char *id, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = fmt; *p; p++) {
        const char *add = p;
        size_t len = 1;
        if (p[0] == '%' && p[1] == 's') {
            add = id;
            len = strlen(id);
            p++;
        } else if (p[0] == '%' && p[1] == '%') {
            p++;
        }
        if (n + len >= cap)
            return -1;
        memcpy(out + n, add, len);
        n += len;
    }
    out[n] = '\0';
    return 0;
}

/* At KILL_AFTER: find the leader and run the kill command. t_kill is taken
 * when the command has returned, that is when the process is gone, so no
 * attempt started after it can be acknowledged by the killed node. */
static void *killer_main(void *arg)
{
    struct failover *f = arg;
    struct bench *b = f->b;
    sleep_until(f->t_start + b->kill_after_ms * 1000000u);
    char cmd[4096];
    if (find_leader(b, f->killed, sizeof f->killed) != 0)
        return NULL;
    if (expand_kill_cmd(b->kill_cmd, f->killed, cmd, sizeof cmd) != 0) {
        note("the kill command is too long");
        return NULL;
    }
    int rc = system(cmd);
    f->t_kill = now_ns();
    f->kill_rc = rc == -1 ? -1 : WIFEXITED(rc) ? WEXITSTATUS(rc) : 128 + WTERMSIG(rc);
    note("killed leader node %s at +%.3f s (exit status %d): %s", f->killed,
         (double)(f->t_kill - f->t_start) / 1e9, f->kill_rc, cmd);
    return NULL;
}

/* Close b->c and connect a new client over the whole servers list, every
 * RECONNECT_PAUSE_MS until a node serves or deadline_ns. 0 or -1. */
static int reconnect(struct failover *f, uint64_t deadline_ns)
{
    struct bench *b = f->b;
    ferry_client_close(b->c);
    b->c = NULL;
    char why[512] = "";
    uint64_t t0 = now_ns();
    for (unsigned attempts = 1;; attempts++) {
        if (new_client(b, 0, &b->c, why, sizeof why) == 0) {
            ferry_server_info_t si;
            if (f->reconnects++ < 5 && ferry_client_server_info(b->c, &si) == 0)
                note("connected to %s (node %" PRIu64 ") after %u attempts in %.1f ms%s%s",
                     si.address, si.node_id, attempts, (double)(now_ns() - t0) / 1e6,
                     attempts > 1 ? "; the last failure: " : "", attempts > 1 ? why : "");
            return 0;
        }
        if (now_ns() >= deadline_ns) {
            note("no node serves: %s", why);
            return -1;
        }
        sleep_ms(RECONNECT_PAUSE_MS);
    }
}

/* Add the stats of b->c to the totals (before it is replaced). */
static void fo_add_stats(struct failover *f)
{
    ferry_client_stats_t s;
    if (f->b->c == NULL || ferry_client_stats(f->b->c, &s) != 0)
        return;
    f->lib_reconnects += s.connects > 0 ? s.connects - 1 : 0;
    f->lib_resent += s.resent;
    f->lib_dups += s.duplicates;
}

static int fo_grow(struct failover *f)
{
    uint64_t cap = f->cap ? 2 * f->cap : 65536;
    struct fo_msg *m = realloc(f->msg, cap * sizeof *m);
    if (m == NULL)
        return -1;
    memset(m + f->cap, 0, (cap - f->cap) * sizeof *m);
    f->msg = m;
    f->cap = cap;
    return 0;
}

/* Publish sequence numbers 0, 1, ... one at a time until the duration has
 * passed. The client fails over by itself and re-sends a publish whose
 * connection was lost (with its producer sequence, so it is stored once);
 * a publish that still fails is retried, on a new client if this one gave
 * up, which may store it twice: such retries are counted in `errors`. */
static int fo_publish(struct failover *f)
{
    struct bench *b = f->b;
    uint64_t t_end = f->t_start + b->duration_ms * 1000000u;
    uint64_t give_up = t_end + GIVE_UP_AFTER_END_MS * 1000000u;
    for (uint64_t seq = 0; now_ns() < t_end; seq++) {
        if (seq == f->cap && fo_grow(f) != 0)
            return cli_error("bench: out of memory");
        f->nseq = seq + 1;
        payload_set_id(b->payload, seq);
        for (;;) {
            uint64_t a = now_ns();
            f->msg[seq].sent_ns = a;
            int rc = ferry_publish(b->c, b->name, b->payload, b->size, 0, NULL);
            uint64_t z = now_ns();
            if (rc == 0) {
                f->msg[seq].ack_ns = z;
                f->acked++;
                break;
            }
            if (f->errors++ < 5)
                note("publish #%" PRIu64 " failed at +%.3f s: %s; retrying", seq,
                     (double)(z - f->t_start) / 1e9, ferry_client_errmsg(b->c));
            if (z >= give_up)
                return 0; /* stop here: seq stays unacknowledged */
            if (ferry_ping(b->c, NULL) == 0)
                continue; /* the client is connected: retry on it */
            fo_add_stats(f);
            if (reconnect(f, give_up) != 0)
                return 0;
        }
    }
    return 0;
}

/* Read the whole channel back from event id 1 and count the copies of each
 * sequence number. Retried from the start on a new connection when the
 * subscription fails or stalls. */
static void fo_read_back(struct failover *f)
{
    struct bench *b = f->b;
    uint64_t deadline = now_ns() + READBACK_LIMIT_MS * 1000000u;
    f->seen = calloc(f->nseq ? f->nseq : 1, 1);
    if (f->seen == NULL) {
        note("read-back: out of memory");
        return;
    }
    while (!f->verified && now_ns() < deadline) {
        if (b->c == NULL && reconnect(f, deadline) != 0)
            return;
        ferry_info_t info;
        ferry_sub_options_t o;
        ferry_sub_options_init(&o);
        o.start = FERRY_START_FROM;
        o.from_id = 1;
        ferry_sub_t *sub = NULL;
        if (ferry_info(b->c, b->name, &info) != 0 ||
            ferry_subscribe(b->c, b->name, &o, &sub) != 0) {
            note("read-back: %s; reconnecting", ferry_client_errmsg(b->c));
            ferry_client_close(b->c);
            b->c = NULL;
            sleep_ms(100);
            continue;
        }
        memset(f->seen, 0, f->nseq ? f->nseq : 1);
        f->stored = info.count;
        f->readback = f->foreign = 0;
        uint64_t last_id = 0, progress = now_ns();
        int failed = 0;
        while (last_id < info.last_id && !failed) {
            ferry_message_t *m = NULL;
            int rc = ferry_sub_next(sub, &m, 1000);
            if (rc == FERRY_ETIMEDOUT) {
                failed = now_ns() - progress > READBACK_IDLE_MS * 1000000u || now_ns() >= deadline;
                continue;
            }
            if (rc != 0) {
                note("read-back subscription ended: %s", ferry_strerror(rc));
                failed = 1;
                break;
            }
            progress = now_ns();
            last_id = m->id;
            uint64_t seq = payload_id(m->data, m->len);
            f->readback++;
            if (seq < f->nseq) {
                if (f->seen[seq] < UINT8_MAX)
                    f->seen[seq]++;
            } else {
                f->foreign++;
            }
            ferry_message_free(m);
        }
        ferry_unsubscribe(sub);
        if (failed) {
            note("read-back stalled at %" PRIu64 " of %" PRIu64 " events", f->readback, f->stored);
            ferry_client_close(b->c);
            b->c = NULL;
            continue;
        }
        f->verified = 1;
    }
}

static int run_failover(struct bench *b)
{
    struct failover f;
    memset(&f, 0, sizeof f);
    f.b = b;
    f.kill_rc = -1;
    ferry_server_info_t si;
    if (ferry_client_server_info(b->c, &si) == 0)
        snprintf(f.client_url, sizeof f.client_url, "%s", si.address);
    if (fo_grow(&f) != 0)
        return cli_error("bench: out of memory");
    pthread_t killer;
    f.t_start = now_ns();
    if (pthread_create(&killer, NULL, killer_main, &f) != 0) {
        free(f.msg);
        return cli_error("bench: cannot start the killer thread");
    }
    int rc = fo_publish(&f);
    fo_add_stats(&f);
    pthread_join(killer, NULL);
    if (rc == 0)
        fo_read_back(&f);

    /* latency: publish call .. ack of the attempt that was acknowledged */
    latency_free(&b->lat);
    if (latency_init(&b->lat, f.acked) != 0)
        rc = cli_error("bench: out of memory");
    double outage_ms = -1, max_gap_ms = 0;
    uint64_t prev = 0;
    for (uint64_t i = 0; rc == 0 && i < f.nseq; i++) {
        uint64_t ack = f.msg[i].ack_ns;
        if (ack == 0)
            continue;
        latency_add(&b->lat, ack - f.msg[i].sent_ns);
        if (prev && (double)(ack - prev) / 1e6 > max_gap_ms)
            max_gap_ms = (double)(ack - prev) / 1e6;
        prev = ack;
        if (outage_ms < 0 && f.t_kill && f.msg[i].sent_ns >= f.t_kill)
            outage_ms = (double)(ack - f.t_kill) / 1e6;
    }
    uint64_t missing = 0, dups = 0, unacked_present = 0;
    for (uint64_t i = 0; f.seen != NULL && i < f.nseq; i++) {
        if (f.msg[i].ack_ns && !f.seen[i])
            missing++;
        if (!f.msg[i].ack_ns && f.seen[i])
            unacked_present++;
        if (f.seen[i] > 1)
            dups++;
    }
    if (rc == 0) {
        printf("mode=failover size=%" PRIu64 " count=- window=1 msgs_per_s=%.0f", b->size,
               (double)f.acked * 1000.0 / (double)b->duration_ms);
        latency_print_fields(&b->lat);
        printf(" duration_s=%.0f kill_at_ms=%" PRIu64 " killed=%s%s client_url=%s outage_ms=%.0f"
               " max_gap_ms=%.0f acked=%" PRIu64 " unacked=%" PRIu64 " stream_msgs=%" PRIu64
               " readback=%" PRIu64 " acked_missing=%" PRIu64 " duplicates=%" PRIu64
               " unacked_present=%" PRIu64 " reconnects=%" PRIu64 " lib_reconnects=%" PRIu64
               " resent=%" PRIu64 " dup_acks=%" PRIu64 " verify=%s errors=%" PRIu64 "\n",
               (double)b->duration_ms / 1000.0, b->kill_after_ms, f.killed[0] ? "n" : "unknown",
               f.killed, f.client_url[0] ? f.client_url : "-", outage_ms, max_gap_ms, f.acked,
               f.nseq - f.acked, f.stored, f.readback, missing, dups, unacked_present, f.reconnects,
               f.lib_reconnects, f.lib_resent, f.lib_dups, f.verified && f.foreign == 0 ? "ok" : "incomplete", f.errors);
    }
    free(f.msg);
    free(f.seen);
    if (rc == 0 && (f.t_kill == 0 || f.kill_rc != 0))
        rc = cli_error(
            "bench: the leader was not killed (%s): these figures are no failover measurement",
            f.t_kill == 0 ? "no kill command ran" : "the kill command failed");
    return rc;
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

static int connect_bench(struct bench *b)
{
    char why[512];
    int rc = new_client(b, 0, &b->c, why, sizeof why);
    if (rc != 0)
        return cli_error("bench: %s", why);
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
    else if (strcmp(b->mode, "failover") == 0)
        b->timeout_ms = FAILOVER_TIMEOUT_MS;
    if (rc == 0 && (v = cli_get(cmd, a, "duration")) != NULL)
        rc = cli_opt_duration_ms(cmd, "duration", v, &b->duration_ms);
    if (rc == 0 && (v = cli_get(cmd, a, "kill-after")) != NULL)
        rc = cli_opt_u64(cmd, "kill-after", v, &b->kill_after_ms);
    if (rc != 0)
        return rc;
    b->kill_cmd = cli_get(cmd, a, "kill-cmd");
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
    if (strcmp(b->mode, "failover") == 0) {
        if (q)
            return cli_usage_error(cmd, "failover mode publishes to a channel: use --channel");
        if (b->kill_cmd == NULL || b->kill_cmd[0] == '\0')
            return cli_usage_error(cmd, "failover mode needs --kill-cmd (%%s = the leader's "
                                        "node id)");
        if (b->duration_ms == 0 || b->duration_ms > 3600000)
            return cli_usage_error(cmd, "-d must be from 1 ms to 1 h");
        if (b->kill_after_ms >= b->duration_ms)
            return cli_usage_error(cmd, "-a must be less than the duration (%" PRIu64 " ms)",
                                   b->duration_ms);
    }
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
    b.duration_ms = 15000;
    b.kill_after_ms = 4000;
    int rc = parse_bench(cmd, a, &b);
    if (rc != 0)
        return rc;
    b.servers = cli_get(cmd, a, "url") ? cli_get(cmd, a, "url")
                : a->servers           ? a->servers
                                       : g->servers;
    int failover = strcmp(b.mode, "failover") == 0;
    const char *e = getenv("BENCH_MAX_SECONDS");
    unsigned max_s = e ? (unsigned)atoi(e) : 300;
    if (max_s)
        alarm(max_s);
    size_t n = b.count > b.warmup ? b.count : b.warmup;
    b.payload = malloc(b.size);
    b.sent_ns = calloc(n ? n : 1, sizeof *b.sent_ns);
    if (b.payload == NULL || b.sent_ns == NULL ||
        latency_init(&b.lat, failover ? 1 : b.count) != 0) {
        free(b.payload);
        free(b.sent_ns);
        return cli_error("bench: out of memory");
    }
    for (uint64_t i = 0; i < b.size; i++)
        b.payload[i] = (uint8_t)('a' + i % 26);
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cond, NULL);
    the_bench = &b;
    rc = connect_bench(&b);
    if (rc == 0)
        rc = recreate(&b);
    if (rc == 0) {
        if (strcmp(b.mode, "sync") == 0)
            rc = run_sync(&b);
        else if (strcmp(b.mode, "async") == 0)
            rc = run_async(&b);
        else if (failover)
            rc = run_failover(&b);
        else
            rc = run_consume(&b);
        fflush(stdout);
        if (!b.keep && b.c != NULL && ferry_delete(b.c, b.name) != 0)
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
    {"mode", 'm', "MODE", "sync, async, consume, failover (default sync)"},
    {"size", 's', "SIZE", "payload bytes, at least 16; K/M suffixes (default 100)"},
    {"count", 'n', "COUNT", "messages measured (default 2000)"},
    {"window", 'w', "W", "async: unacked publishes; consume: prefetch (default 256)"},
    {"warmup", 'W', "N", "warm-up messages before sync/async (default 100)"},
    {"timeout", 't', "MS", "request timeout in milliseconds (default 5000; failover 30000)"},
    {"keep", 'k', NULL, "keep the resource afterwards"},
    {"url", 'u', "LIST", "servers, as --servers (for the peers' -u)"},
    {"queue", 0, "NAME", "use queue NAME (publishes become pushes)"},
    {"channel", 0, "NAME", "use channel NAME"},
    {"duration", 'd', "S", "failover: run time; no unit = seconds (default 15)"},
    {"kill-after", 'a', "MS", "failover: kill the leader after MS ms (default 4000)"},
    {"kill-cmd", 'K', "CMD", "failover: shell command killing the leader, %s = its node id"},
    {NULL, 0, NULL, NULL},
};

const struct cli_cmd cli_cmd_bench = {
    .name = "bench",
    .synopsis = "-m sync|async|consume|failover -s SIZE -n COUNT -w WINDOW [--queue NAME | "
                "--channel NAME] [-d S -a MS -K CMD]",
    .summary = "measure publish/push/consume rates and latencies (one result line)",
    .details =
        "Runs one measurement of the peer benchmark workload and prints one line:\n"
        "  mode=<m> size=<bytes> count=<N> window=<W> msgs_per_s=<x> p50_us=<x>\n"
        "  p99_us=<x> p999_us=<x> max_us=<x> mean_us=<x> errors=<n>\n"
        "The resource (bench-<pid> unless named) is deleted, recreated, and deleted\n"
        "again afterwards (unless -k).\n\n"
        "examples:\n"
        "  ferry bench -m sync -s 100 -n 2000\n"
        "  ferry bench -m async -s 1K -n 20000 -w 256\n"
        "  ferry bench -m consume -s 100 -n 20000 -w 256\n"
        "  ferry bench -m failover -s 100 -d 15 -a 4000 -K 'kill -9 $(cat /data/n%s/LOCK)'\n\n"
        "failover publishes one message at a time; at -a ms it asks a node for the\n"
        "leader's node id (status key leader_id), runs CMD with %s replaced by it,\n"
        "and retries every failed publish on a new connection. Its line adds\n"
        "outage_ms (kill .. first ack of a publish started after it), max_gap_ms,\n"
        "acked_missing (acked but not read back; must be 0) and duplicates.",
    .opts = bench_opts,
    .min_pos = 0,
    .max_pos = 0,
    .run = run_bench,
};
