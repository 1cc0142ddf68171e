/* broker_apply_bench.c - throughput of the broker's apply path (not a test).
 *
 * Workload, for synchronous_full = 1 and = 0, each on a fresh database:
 *   push     N PUSH commands of S bytes to one queue, B commands per entry,
 *            one entry per transaction (begin, apply, commit);
 *   consume  one consumer (prefetch B) drains the queue: broker_pump offers
 *            items, each is settled with broker_settle and the ACKs are
 *            applied B per transaction, until the queue is empty;
 *   publish  N PUBLISH commands to a channel with one live subscriber,
 *            delivered at commit.
 * Reported: messages/s over the whole phase, and the mean time of
 * broker_apply for one entry (excluding commit, so excluding fsync) and of
 * broker_commit. Entries for push/publish are encoded before timing (the
 * leader encodes them; apply is what every node pays).
 *
 * Usage: broker_apply_bench [N] [S] [B] [dir]   (defaults 20000 100 256 /tmp)
 */
#include "broker/broker.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

struct args {
    long n, size, batch;
    const char *dir;
};

struct timing {
    double apply_s, commit_s, total_s;
    long batches;
};

struct sink {
    uint64_t ids[65536];
    size_t n;
    uint64_t delivered;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, const struct ferry_err *err)
{
    fprintf(stderr, "broker_apply_bench: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

static int sink_deliver(void *ctx, int is_delivery, const struct broker_msg *m)
{
    struct sink *s = ctx;
    s->delivered++;
    if (is_delivery) {
        if (s->n == sizeof s->ids / sizeof s->ids[0])
            return FERRY_EBUSY;
        s->ids[s->n++] = m->id;
    }
    return 0;
}

static void sink_ended(void *ctx, uint64_t handle, int code, const char *msg)
{
    (void)ctx;
    (void)handle;
    (void)code;
    (void)msg;
}

static const struct broker_client_ops sink_ops = {sink_deliver, sink_ended};

/* Apply one entry in its own transaction, timing apply and commit apart. */
static void apply_timed(struct broker *b, uint64_t *index, const struct buf *e, struct timing *t)
{
    struct ferry_err err;
    double t0 = now_s();
    if (broker_begin(b, &err) != 0)
        die("begin", &err);
    if (broker_apply(b, ++*index, 1, e->data, e->len, NULL, 0, &err) != 0)
        die("apply", &err);
    double t1 = now_s();
    if (broker_commit(b, &err) != 0)
        die("commit", &err);
    double t2 = now_s();
    t->apply_s += t1 - t0;
    t->commit_s += t2 - t1;
    t->batches++;
}

static struct buf *encode_entries(const struct args *a, uint8_t type, const char *name,
                                  size_t *count)
{
    size_t n = (size_t)((a->n + a->batch - 1) / a->batch);
    struct buf *entries = calloc(n, sizeof *entries);
    uint8_t *payload = malloc((size_t)a->size);
    memset(payload, 'p', (size_t)a->size);
    struct broker_cmd c;
    memset(&c, 0, sizeof c);
    c.type = type;
    c.flags = BROKER_CMDF_AUTO_CREATE;
    c.ts_ms = 1700000000000ull;
    snprintf(c.name, sizeof c.name, "%s", name);
    c.payload = payload;
    c.payload_len = (uint32_t)a->size;
    for (long i = 0; i < a->n; i++) {
        if (broker_cmd_encode(&entries[i / a->batch], &c) != 0)
            die("encode", NULL);
    }
    free(payload);
    *count = n;
    return entries;
}

static void free_entries(struct buf *entries, size_t n)
{
    for (size_t i = 0; i < n; i++)
        buf_free(&entries[i]);
    free(entries);
}

static void report(const char *phase, int sync, long msgs, const struct timing *t)
{
    printf("%-8s sync_full=%d  %8.0f msgs/s  apply %7.3f ms/entry  commit %7.3f ms/entry  "
           "(%ld entries)\n",
           phase, sync, (double)msgs / t->total_s, 1e3 * t->apply_s / (double)t->batches,
           1e3 * t->commit_s / (double)t->batches, t->batches);
}

static void phase_push(struct broker *b, uint64_t *index, const struct args *a, int sync)
{
    size_t n;
    struct buf *entries = encode_entries(a, BROKER_CMD_PUSH, "bench-q", &n);
    struct timing t = {0};
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        apply_timed(b, index, &entries[i], &t);
    t.total_s = now_s() - t0;
    report("push", sync, a->n, &t);
    free_entries(entries, n);
}

static void phase_consume(struct broker *b, uint64_t *index, const struct args *a, int sync)
{
    struct sink *s = calloc(1, sizeof *s);
    struct broker_client *c;
    struct ferry_err err;
    uint64_t con;
    broker_client_open(b, &sink_ops, s, &c);
    if (broker_consume(c, "bench-q", (uint32_t)a->batch, &con, &err) != 0)
        die("consume", &err);
    struct timing t = {0};
    struct buf entry;
    buf_init(&entry);
    long acked = 0;
    double t0 = now_s();
    while (acked < a->n) {
        if (broker_pump(b, 0) < 0)
            die("pump", NULL);
        if (s->n == 0)
            die("consume: nothing delivered", NULL);
        buf_reset(&entry);
        for (size_t i = 0; i < s->n; i++) {
            struct broker_cmd cmd;
            if (broker_settle(c, con, s->ids[i], 0, 0, &cmd, &err) != 0)
                die("settle", &err);
            broker_cmd_encode(&entry, &cmd);
        }
        acked += (long)s->n;
        s->n = 0;
        apply_timed(b, index, &entry, &t);
    }
    t.total_s = now_s() - t0;
    report("consume", sync, a->n, &t);
    buf_free(&entry);
    broker_client_close(c, 0, NULL);
    free(s);
}

static void phase_publish(struct broker *b, uint64_t *index, const struct args *a, int sync)
{
    struct sink *s = calloc(1, sizeof *s);
    struct broker_client *c;
    struct ferry_err err;
    uint64_t sub, next;
    size_t n;
    struct buf *entries = encode_entries(a, BROKER_CMD_PUBLISH, "bench-ch", &n);
    apply_timed(b, index, &entries[0], &(struct timing){0}); /* creates the channel */
    broker_client_open(b, &sink_ops, s, &c);
    if (broker_subscribe(c, "bench-ch", 0, 0, NULL, 0, &sub, &next, &err) != 0)
        die("subscribe", &err);
    struct timing t = {0};
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        apply_timed(b, index, &entries[i], &t);
    t.total_s = now_s() - t0;
    if (s->delivered != (uint64_t)a->n)
        die("publish: not every event reached the live subscriber", NULL);
    report("publish", sync, a->n, &t);
    broker_client_close(c, 0, NULL);
    free_entries(entries, n);
    free(s);
}

static void run(const struct args *a, int sync)
{
    char path[512];
    snprintf(path, sizeof path, "%s/broker-bench-%d-%ld.db", a->dir, sync, (long)getpid());
    struct broker_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.db_path = path;
    cfg.synchronous_full = sync;
    cfg.max_message_size = 1 << 20;
    cfg.default_max_deliveries = 10;
    cfg.pump_batch = 1024;
    struct broker *b;
    struct ferry_err err;
    if (broker_open(&b, &cfg, &err) != 0)
        die("open", &err);
    uint64_t index = 0;
    phase_push(b, &index, a, sync);
    phase_consume(b, &index, a, sync);
    phase_publish(b, &index, a, sync);
    broker_close(b);
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[600];
        snprintf(p, sizeof p, "%s%s", path, suffix[i]);
        unlink(p);
    }
}

static void print_machine(const struct args *a)
{
    struct utsname u;
    uname(&u);
    char model[512] = "unknown";
    FILE *fp = fopen("/proc/cpuinfo", "r");
    char line[512];
    while (fp && fgets(line, sizeof line, fp)) {
        if (strncmp(line, "model name", 10) == 0) {
            char *p = strchr(line, ':');
            snprintf(model, sizeof model, "%s", p ? p + 2 : line);
            model[strcspn(model, "\n")] = '\0';
            break;
        }
    }
    if (fp)
        fclose(fp);
    printf("broker_apply_bench: %ld messages of %ld bytes, %ld commands per entry/transaction\n",
           a->n, a->size, a->batch);
    printf("machine: %s %s, %ld CPUs, %s; SQLite %s; database in %s\n", u.sysname, u.release,
           sysconf(_SC_NPROCESSORS_ONLN), model, sqlite3_libversion(), a->dir);
}

int main(int argc, char **argv)
{
    struct args a = {20000, 100, 256, "/tmp"};
    if (argc > 1)
        a.n = atol(argv[1]);
    if (argc > 2)
        a.size = atol(argv[2]);
    if (argc > 3)
        a.batch = atol(argv[3]);
    if (argc > 4)
        a.dir = argv[4];
    if (a.n <= 0 || a.size < 0 || a.batch <= 0 || a.batch > 65536) {
        fprintf(stderr, "usage: broker_apply_bench [N] [SIZE] [BATCH<=65536] [DIR]\n");
        return 2;
    }
    print_machine(&a);
    run(&a, 1);
    run(&a, 0);
    return 0;
}
