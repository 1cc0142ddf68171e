/* faults.c - ferry-faults: real ferryd nodes under faults while a workload
 * runs, then the history checked (checker.h).
 *
 *   ferry-faults [--scenario NAME]... [--random N] [--seed S] [--duration SECONDS]
 *                [--report FILE] [--list]
 *
 * Every scenario starts a fresh cluster on 127.0.0.1 (harness.h), runs the
 * workload (two publishers on a channel, a pusher and a consumer on a queue,
 * all libferry clients with failover on, every operation recorded with its
 * invocation and completion time and outcome), injects its faults, heals
 * (every node running and resumed), lets the workload run on, stops it and
 * checks: the final channel and queue read back from the cluster against
 * the history, every node's database digest equal, and a write served
 * within 30 s of the last heal. Outage per fault = from the injection to the first
 * acknowledged publish invoked after it.
 *
 * Fixed scenarios: kill-leader, kill-follower, kill-majority, kill-all,
 * pause-leader, pause-follower, witness (2 data nodes + a witness, each
 * killed in turn). `--random N` adds N schedules of 5 faults drawn from a
 * seeded generator (--seed, default from the clock); `--duration S` runs
 * random schedules until S seconds have passed (a soak). A failing run
 * prints its seed and schedule; `--scenario random:SEED` replays one.
 * Exit status 0 when every run's verdict is clean.
 */
#include "checker.h"
#include "harness.h"

#include <ferry/ferry.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define N 3
#define MAX_FAULTS 16
#define CHANNEL "fault-ch"
#define QUEUE "fault-q"

static struct node nodes[N];
static int n_data = N; /* data nodes come first; a witness last */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* ---- the history ---- */

struct history {
    pthread_mutex_t mu;
    struct fault_rec *r;
    size_t n, cap;
};

static struct history hist = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void record(uint8_t op, int rc, fault_key key, uint64_t invoke_us)
{
    uint8_t outcome = FOUT_FAILED;
    if (rc == 0)
        outcome = FOUT_OK;
    else if (rc == FERRY_ETIMEDOUT || rc == FERRY_ECONN || rc == FERRY_EUNAVAILABLE ||
             rc == FERRY_ECLOSED || rc == FERRY_ENOTLEADER)
        outcome = FOUT_UNKNOWN;
    pthread_mutex_lock(&hist.mu);
    if (hist.n == hist.cap) {
        size_t cap = hist.cap ? hist.cap * 2 : 65536;
        struct fault_rec *r = realloc(hist.r, cap * sizeof *r);
        if (r == NULL) {
            pthread_mutex_unlock(&hist.mu);
            fprintf(stderr, "ferry-faults: out of memory recording the history\n");
            exit(2);
        }
        hist.r = r;
        hist.cap = cap;
    }
    hist.r[hist.n++] = (struct fault_rec){.op = op, .outcome = outcome, .key = key,
                                          .invoke_us = invoke_us, .complete_us = now_us()};
    pthread_mutex_unlock(&hist.mu);
}

/* ---- the workload ---- */

static atomic_int stop_workload;

static void servers(char *out, size_t cap)
{
    size_t at = 0;
    out[0] = '\0';
    for (int i = 0; i < n_data; i++)
        at += (size_t)snprintf(out + at, cap - at, "%s127.0.0.1:%u", i ? "," : "", nodes[i].port);
}

static ferry_client_t *client(void)
{
    char list[256];
    servers(list, sizeof list);
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = list;
    o.client_name = "ferry-faults";
    o.connect_timeout_ms = 500;
    o.request_timeout_ms = 15000;
    o.reconnect_timeout_ms = 60000;
    ferry_client_t *c = NULL;
    if (ferry_client_create(&c, &o) != 0)
        return NULL;
    if (ferry_client_connect(c) != 0) {
        fprintf(stderr, "ferry-faults: connect: %s\n", ferry_client_errmsg(c));
        ferry_client_close(c);
        return NULL;
    }
    return c;
}

struct worker {
    pthread_t thread;
    int producer; /* 1, 2: publishers; 3: pusher; 4: consumer */
    int ok;
    uint64_t ops;
};

static void *producer_main(void *arg)
{
    struct worker *w = arg;
    ferry_client_t *c = client();
    if (c == NULL)
        return NULL;
    w->ok = 1;
    for (uint64_t seq = 1; !atomic_load(&stop_workload); seq++) {
        char text[32];
        fault_key key = FAULT_KEY(w->producer, seq);
        size_t len = fault_format(key, text, sizeof text);
        uint64_t t0 = now_us();
        int rc;
        if (w->producer == 3)
            rc = ferry_push(c, QUEUE, text, len, NULL);
        else
            rc = ferry_publish(c, CHANNEL, text, len, 0, NULL);
        record(w->producer == 3 ? FOP_PUSH : FOP_PUBLISH, rc, key, t0);
        w->ops++;
        if (rc != 0 && rc != FERRY_ETIMEDOUT && rc != FERRY_EUNAVAILABLE)
            sleep_ms(20); /* the client gave up reconnecting: do not spin */
    }
    ferry_client_close(c);
    return NULL;
}

static void *consumer_main(void *arg)
{
    struct worker *w = arg;
    ferry_client_t *c = client();
    if (c == NULL)
        return NULL;
    w->ok = 1;
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.window = 8;
    ferry_sub_t *s = NULL;
    while (!atomic_load(&stop_workload) && s == NULL) {
        if (ferry_consume(c, QUEUE, &o, &s) != 0) {
            s = NULL;
            sleep_ms(50);
        }
    }
    while (s != NULL && !atomic_load(&stop_workload)) {
        ferry_message_t *m = NULL;
        if (ferry_sub_next(s, &m, 200) != 0)
            continue;
        fault_key key = fault_parse(m->data, m->len);
        uint64_t t0 = now_us();
        int rc = ferry_ack(s, m->id, 0);
        record(FOP_ACK, rc, key, t0);
        w->ops++;
        ferry_message_free(m);
    }
    ferry_client_close(c); /* its unacknowledged deliveries go back to the queue */
    return NULL;
}

/* ---- the cluster ---- */

static int start_cluster(int witness)
{
    n_data = witness ? N - 1 : N;
    for (int i = 0; i < N; i++) {
        node_init(&nodes[i]);
        nodes[i].priority = witness && i == N - 1 ? 0 : -1;
    }
    for (int i = 0; i < N; i++)
        if (cluster_start_node(nodes, N, i, NULL) != 0) {
            fprintf(stderr, "ferry-faults: node %d did not start\n", i + 1);
            return -1;
        }
    return cluster_leader(nodes, n_data, 20000) >= 0 ? 0 : -1;
}

/* Stop every node; after a failed run keep their directories (data and
 * ferryd.log) for a post-mortem and say where they are. */
static void stop_cluster(int keep)
{
    for (int i = 0; i < N; i++) {
        node_signal(&nodes[i], SIGCONT);
        if (keep) {
            node_stop(&nodes[i]);
            fprintf(stderr, "  node %d kept: %s (log: %s)\n", i + 1, nodes[i].dir, nodes[i].log);
        } else {
            node_destroy(&nodes[i]);
        }
    }
}

static int leader(void)
{
    return cluster_leader(nodes, n_data, 20000);
}

/* ---- faults ---- */

enum fault_kind {
    F_KILL_LEADER,
    F_KILL_FOLLOWER,
    F_KILL_MAJORITY,
    F_KILL_ALL,
    F_PAUSE_LEADER,
    F_PAUSE_FOLLOWER,
    F_KILL_WITNESS,
    F_KINDS
};

static const char *const fault_names[F_KINDS] = {
    "kill-leader",  "kill-follower",  "kill-majority", "kill-all",
    "pause-leader", "pause-follower", "kill-witness",
};

struct fault {
    int kind;
    int hold_ms;  /* how long the fault lasts before it heals */
    int after_ms; /* pause after healing before the next */
    uint64_t at_us;   /* injected at */
    int victims[N];   /* which nodes (1 = affected) */
    long outage_ms;   /* -1: no acknowledged publish after it */
};

static int follower(int leader_index)
{
    for (int i = 0; i < n_data; i++)
        if (i != leader_index)
            return i;
    return -1;
}

static void inject(struct fault *f)
{
    int l = leader();
    memset(f->victims, 0, sizeof f->victims);
    switch (f->kind) {
    case F_KILL_LEADER:
    case F_PAUSE_LEADER:
        if (l >= 0)
            f->victims[l] = 1;
        break;
    case F_KILL_FOLLOWER:
    case F_PAUSE_FOLLOWER:
        if (l >= 0)
            f->victims[follower(l)] = 1;
        break;
    case F_KILL_MAJORITY:
        if (l >= 0) {
            f->victims[l] = 1;
            f->victims[follower(l)] = 1;
        }
        break;
    case F_KILL_ALL:
        for (int i = 0; i < N; i++)
            f->victims[i] = 1;
        break;
    case F_KILL_WITNESS:
        f->victims[N - 1] = 1;
        break;
    }
    int pause = f->kind == F_PAUSE_LEADER || f->kind == F_PAUSE_FOLLOWER;
    f->at_us = now_us();
    for (int i = 0; i < N; i++)
        if (f->victims[i])
            node_signal(&nodes[i], pause ? SIGSTOP : SIGKILL);
    if (!pause)
        for (int i = 0; i < N; i++)
            if (f->victims[i])
                node_wait(&nodes[i], 5000);
}

static int heal(const struct fault *f)
{
    int pause = f->kind == F_PAUSE_LEADER || f->kind == F_PAUSE_FOLLOWER;
    for (int i = 0; i < N; i++) {
        if (!f->victims[i])
            continue;
        if (pause) {
            node_signal(&nodes[i], SIGCONT);
        } else if (cluster_start_node(nodes, N, i, NULL) != 0) {
            fprintf(stderr, "ferry-faults: node %d did not restart\n", i + 1);
            return -1;
        }
    }
    return 0;
}

/* The first publish invoked after `at` and acknowledged: its completion. */
static long outage_after(uint64_t at)
{
    uint64_t best = UINT64_MAX;
    pthread_mutex_lock(&hist.mu);
    for (size_t i = 0; i < hist.n; i++) {
        const struct fault_rec *r = &hist.r[i];
        if ((r->op == FOP_PUBLISH || r->op == FOP_PUSH) && r->outcome == FOUT_OK &&
            r->invoke_us >= at && r->complete_us < best)
            best = r->complete_us;
    }
    pthread_mutex_unlock(&hist.mu);
    return best == UINT64_MAX ? -1 : (long)((best - at) / 1000);
}

/* ---- the final state ---- */

static int read_channel(fault_key **out, size_t *n)
{
    ferry_client_t *c = client();
    if (c == NULL)
        return -1;
    ferry_info_t info;
    int rc = ferry_info(c, CHANNEL, &info);
    *out = NULL;
    *n = 0;
    if (rc == FERRY_ENOTFOUND) {
        ferry_client_close(c);
        return 0;
    }
    if (rc != 0) {
        fprintf(stderr, "ferry-faults: info: %s\n", ferry_client_errmsg(c));
        ferry_client_close(c);
        return -1;
    }
    fault_key *keys = malloc((info.last_id + 1) * sizeof *keys);
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.start = FERRY_START_FROM;
    o.from_id = 1;
    ferry_sub_t *s = NULL;
    if (keys == NULL || ferry_subscribe(c, CHANNEL, &o, &s) != 0) {
        free(keys);
        ferry_client_close(c);
        return -1;
    }
    uint64_t last = 0;
    while (last < info.last_id) {
        ferry_message_t *m = NULL;
        if (ferry_sub_next(s, &m, 20000) != 0) {
            fprintf(stderr, "ferry-faults: read-back stopped at event %llu of %llu: %s\n",
                    (unsigned long long)last, (unsigned long long)info.last_id,
                    ferry_client_errmsg(c));
            free(keys);
            ferry_client_close(c);
            return -1;
        }
        keys[(*n)++] = fault_parse(m->data, m->len);
        last = m->id;
        ferry_message_free(m);
    }
    ferry_client_close(c);
    *out = keys;
    return 0;
}

static int read_queue(fault_key **out, size_t *n)
{
    ferry_client_t *c = client();
    if (c == NULL)
        return -1;
    ferry_info_t info;
    *out = NULL;
    *n = 0;
    int rc = ferry_info(c, QUEUE, &info);
    if (rc == FERRY_ENOTFOUND || (rc == 0 && info.count == 0)) {
        ferry_client_close(c);
        return 0;
    }
    fault_key *keys = rc == 0 ? malloc(info.count * sizeof *keys) : NULL;
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.window = 256;
    ferry_sub_t *s = NULL;
    if (keys == NULL || ferry_consume(c, QUEUE, &o, &s) != 0) {
        free(keys);
        ferry_client_close(c);
        return -1;
    }
    while (*n < info.count) {
        ferry_message_t *m = NULL;
        if (ferry_sub_next(s, &m, 20000) != 0) {
            fprintf(stderr, "ferry-faults: queue read-back stopped at %zu of %llu\n", *n,
                    (unsigned long long)info.count);
            free(keys);
            ferry_client_close(c);
            return -1;
        }
        keys[(*n)++] = fault_parse(m->data, m->len);
        ferry_ack(s, m->id, FERRY_NOWAIT); /* for the next window; the workload is over */
        ferry_message_free(m);
    }
    ferry_client_close(c);
    *out = keys;
    return 0;
}

/* Every node's digest at one applied index, equal. */
static int digests_agree(char *why, size_t cap)
{
    char first[80] = "", cur[80], idx[32], idx0[32] = "";
    for (int t = 0; t < 30000; t += 100) {
        int same = 1;
        first[0] = '\0';
        for (int i = 0; i < N && same; i++) {
            if (nodes[i].priority == 0)
                continue; /* a witness has no client endpoint to ask */
            if (node_status_flags(&nodes[i], PROTO_F_DIGEST, "digest", cur, sizeof cur) != 0 ||
                node_status(&nodes[i], "applied_index", idx, sizeof idx) != 0) {
                same = 0;
                break;
            }
            if (first[0] == '\0') {
                snprintf(first, sizeof first, "%s", cur);
                snprintf(idx0, sizeof idx0, "%s", idx);
            } else if (strcmp(first, cur) != 0 || strcmp(idx0, idx) != 0) {
                same = 0;
            }
        }
        if (same && first[0] != '\0')
            return 0;
        sleep_ms(100);
    }
    snprintf(why, cap, "the nodes' digests did not agree within 30 s");
    return -1;
}

/* ---- one run ---- */

struct kind_stats {
    uint64_t runs, acked, lost, unexpected, duplicated;
    long outages[4096];
    size_t n_outages;
};

static struct kind_stats kinds[F_KINDS];

struct run {
    char name[64];
    uint64_t seed;
    int witness;
    struct fault faults[MAX_FAULTS];
    int n_faults;
};

static void describe(const struct run *r, char *out, size_t cap)
{
    size_t at = (size_t)snprintf(out, cap, "%s:", r->name);
    for (int i = 0; i < r->n_faults && at < cap; i++)
        at += (size_t)snprintf(out + at, cap - at, " %s(hold %d ms, then %d ms)",
                               fault_names[r->faults[i].kind], r->faults[i].hold_ms,
                               r->faults[i].after_ms);
}

static int run_one(struct run *r, FILE *report)
{
    char schedule[1024];
    describe(r, schedule, sizeof schedule);
    fprintf(stderr, "== %s\n", schedule);
    hist.n = 0;
    atomic_store(&stop_workload, 0);
    if (start_cluster(r->witness) != 0) {
        stop_cluster(1);
        fprintf(stderr, "FAIL %s: the cluster did not start\n", schedule);
        return -1;
    }
    struct worker w[4];
    memset(w, 0, sizeof w);
    for (int i = 0; i < 4; i++) {
        w[i].producer = i + 1;
        pthread_create(&w[i].thread, NULL, i == 3 ? consumer_main : producer_main, &w[i]);
    }
    sleep_ms(1000);
    int failed = 0;
    for (int i = 0; i < r->n_faults && !failed; i++) {
        inject(&r->faults[i]);
        sleep_ms(r->faults[i].hold_ms);
        failed = heal(&r->faults[i]) != 0;
        sleep_ms(r->faults[i].after_ms);
    }
    /* Healed: a write must be served again, within 30 s (a bound, not a target). */
    uint64_t healed = now_us();
    long after_heal = -1;
    for (int t = 0; t < 30000 && after_heal < 0; t += 100) {
        sleep_ms(100);
        after_heal = outage_after(healed);
    }
    sleep_ms(1000);
    atomic_store(&stop_workload, 1);
    for (int i = 0; i < 4; i++)
        pthread_join(w[i].thread, NULL);
    for (int i = 0; i < 4; i++)
        if (!w[i].ok)
            failed = 1;

    fault_key *stored = NULL, *left = NULL;
    size_t n_stored = 0, n_left = 0;
    char why[256] = "";
    struct fault_verdict vc, vq, v;
    memset(&v, 0, sizeof v);
    int agree = -1;
    if (!failed && leader() >= 0 && read_channel(&stored, &n_stored) == 0 &&
        read_queue(&left, &n_left) == 0) {
        fault_check_channel(hist.r, hist.n, stored, n_stored, &vc);
        fault_check_queue(hist.r, hist.n, left, n_left, &vq);
        fault_verdict_add(&v, &vc);
        fault_verdict_add(&v, &vq);
        agree = digests_agree(why, sizeof why);
    } else {
        failed = 1;
        snprintf(why, sizeof why, "the workload or the final read did not work");
    }
    free(stored);
    free(left);
    int ok = !failed && fault_verdict_ok(&v) && agree == 0 && after_heal >= 0;
    stop_cluster(!ok);
    char outages[512] = "";
    size_t at = 0;
    int seen[F_KINDS] = {0};
    for (int i = 0; i < r->n_faults; i++) {
        struct fault *f = &r->faults[i];
        if (f->at_us == 0) /* not injected: the run failed before it */
            continue;
        f->outage_ms = outage_after(f->at_us);
        at += (size_t)snprintf(outages + at, sizeof outages - at, "%s%s=%ld", i ? "," : "",
                               fault_names[f->kind], f->outage_ms);
        struct kind_stats *k = &kinds[f->kind];
        k->runs++;
        if (f->outage_ms >= 0 && k->n_outages < 4096)
            k->outages[k->n_outages++] = f->outage_ms;
        if (!seen[f->kind]++) { /* a run's verdict counts once per kind it had */
            k->acked += v.acknowledged;
            k->lost += v.lost;
            k->unexpected += v.unexpected;
            k->duplicated += v.duplicated;
        }
    }
    char line[2048];
    snprintf(line, sizeof line,
             "%s %s seed=%llu ops=%zu attempted=%llu acked=%llu read_back=%llu lost=%llu "
             "unexpected=%llu duplicated=%llu reordered=%llu failed_present=%llu "
             "unknown_present=%llu unknown_absent=%llu ack_unknown_absent=%llu digests=%s "
             "served_after_heal_ms=%ld "
             "outage_ms=%s%s%s",
             ok ? "PASS" : "FAIL", r->name, (unsigned long long)r->seed, hist.n,
             (unsigned long long)v.attempted, (unsigned long long)v.acknowledged,
             (unsigned long long)v.read_back, (unsigned long long)v.lost,
             (unsigned long long)v.unexpected, (unsigned long long)v.duplicated,
             (unsigned long long)v.reordered, (unsigned long long)v.failed_present,
             (unsigned long long)v.unknown_present, (unsigned long long)v.unknown_absent,
             (unsigned long long)v.ack_unknown_absent, agree == 0 ? "equal" : "DIFFER", after_heal, outages,
             v.first_problem[0] || why[0] ? " problem=" : "",
             v.first_problem[0] ? v.first_problem : why);
    printf("%s\n", line);
    fflush(stdout);
    if (report != NULL) {
        fprintf(report, "%s\n", line);
        fflush(report);
    }
    if (!ok)
        fprintf(stderr, "FAIL: replay with: ferry-faults --scenario %s\n  schedule: %s\n",
                r->name, schedule);
    return ok ? 0 : -1;
}

/* ---- schedules ---- */

static uint64_t rng_state;

static uint64_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void fixed(struct run *r, const char *name)
{
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "%s", name);
    struct fault *f = r->faults;
    if (strcmp(name, "witness") == 0) {
        r->witness = 1;
        f[0] = (struct fault){.kind = F_KILL_WITNESS, .hold_ms = 1500, .after_ms = 1500};
        f[1] = (struct fault){.kind = F_KILL_LEADER, .hold_ms = 1500, .after_ms = 1500};
        f[2] = (struct fault){.kind = F_KILL_FOLLOWER, .hold_ms = 1500, .after_ms = 1500};
        r->n_faults = 3;
        return;
    }
    for (int k = 0; k < F_KINDS; k++)
        if (strcmp(name, fault_names[k]) == 0) {
            f[0] = (struct fault){.kind = k, .hold_ms = 2000, .after_ms = 1500};
            f[1] = (struct fault){.kind = k, .hold_ms = 1000, .after_ms = 1500};
            r->n_faults = 2;
        }
}

static void random_run(struct run *r, uint64_t seed)
{
    memset(r, 0, sizeof *r);
    snprintf(r->name, sizeof r->name, "random:%llu", (unsigned long long)seed);
    r->seed = seed;
    rng_state = seed * 2685821657736338717ull + 1;
    r->witness = next_random() % 4 == 0;
    r->n_faults = 5;
    for (int i = 0; i < r->n_faults; i++) {
        int k = (int)(next_random() % (r->witness ? F_KINDS : F_KINDS - 1));
        if (r->witness && (k == F_KILL_MAJORITY || k == F_PAUSE_FOLLOWER))
            k = F_KILL_WITNESS;
        r->faults[i].kind = k;
        r->faults[i].hold_ms = 200 + (int)(next_random() % 2800);
        r->faults[i].after_ms = 300 + (int)(next_random() % 2000);
    }
}

static void print_summary(FILE *f)
{
    fprintf(f, "# runs = faults of the kind injected; acked/lost/unexpected/duplicated = totals of "
               "the runs that had the kind\n");
    fprintf(f, "# fault kind      runs  acked_in_runs  lost unexpected duplicated  outage_p50_ms "
               "outage_p99_ms outage_max_ms\n");
    for (int k = 0; k < F_KINDS; k++) {
        struct kind_stats *s = &kinds[k];
        if (s->runs == 0)
            continue;
        for (size_t i = 1; i < s->n_outages; i++) /* insertion sort: a few thousand at most */
            for (size_t j = i; j > 0 && s->outages[j - 1] > s->outages[j]; j--) {
                long t = s->outages[j];
                s->outages[j] = s->outages[j - 1];
                s->outages[j - 1] = t;
            }
        long p50 = s->n_outages ? s->outages[(s->n_outages - 1) / 2] : -1;
        long p99 = s->n_outages ? s->outages[(s->n_outages - 1) * 99 / 100] : -1;
        long mx = s->n_outages ? s->outages[s->n_outages - 1] : -1;
        fprintf(f, "# %-15s %5llu %14llu %5llu %10llu %10llu %14ld %13ld %13ld\n", fault_names[k],
                (unsigned long long)s->runs, (unsigned long long)s->acked,
                (unsigned long long)s->lost, (unsigned long long)s->unexpected,
                (unsigned long long)s->duplicated, p50, p99, mx);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: ferry-faults [--scenario NAME]... [--random N] [--seed S] "
               "[--duration SECONDS] [--report FILE] [--list]\n"
               "scenarios: all, witness, random:SEED");
    for (int k = 0; k < F_KINDS - 1; k++)
        fprintf(f, ", %s", fault_names[k]);
    fprintf(f, "\n");
}

int main(int argc, char **argv)
{
    const char *names[32];
    int n_names = 0, n_random = 0;
    uint64_t seed = (uint64_t)time(NULL) ^ (uint64_t)getpid() << 16;
    long duration = 0;
    const char *report_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--scenario") == 0 && v && n_names < 32) {
            names[n_names++] = v;
            i++;
        } else if (strcmp(a, "--random") == 0 && v) {
            n_random = atoi(v);
            i++;
        } else if (strcmp(a, "--seed") == 0 && v) {
            seed = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--duration") == 0 && v) {
            duration = atol(v);
            i++;
        } else if (strcmp(a, "--report") == 0 && v) {
            report_path = v;
            i++;
        } else if (strcmp(a, "--list") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    FILE *report = NULL;
    if (report_path != NULL && (report = fopen(report_path, "w")) == NULL) {
        fprintf(stderr, "ferry-faults: cannot write %s: %s\n", report_path, strerror(errno));
        return 2;
    }
    if (report != NULL)
        fprintf(report, "# ferry-faults, first seed %llu, duration %ld s\n",
                (unsigned long long)seed, duration);
    int failures = 0, runs = 0;
    struct run r;
    for (int i = 0; i < n_names; i++) {
        if (strncmp(names[i], "random:", 7) == 0) {
            random_run(&r, strtoull(names[i] + 7, NULL, 10));
            failures += run_one(&r, report) != 0;
            runs++;
            continue;
        }
        int all = strcmp(names[i], "all") == 0;
        static const char *const every[] = {"kill-leader",  "kill-follower",  "kill-majority",
                                            "kill-all",     "pause-leader",   "pause-follower",
                                            "witness"};
        for (size_t k = 0; k < sizeof every / sizeof every[0]; k++) {
            if (!all && strcmp(names[i], every[k]) != 0)
                continue;
            fixed(&r, every[k]);
            failures += run_one(&r, report) != 0;
            runs++;
        }
    }
    for (int i = 0; i < n_random; i++) {
        random_run(&r, seed + (uint64_t)i);
        failures += run_one(&r, report) != 0;
        runs++;
    }
    uint64_t t_end = now_us() + (uint64_t)duration * 1000000u;
    for (uint64_t s = seed + (uint64_t)n_random; duration > 0 && now_us() < t_end; s++) {
        random_run(&r, s);
        failures += run_one(&r, report) != 0;
        runs++;
    }
    if (runs == 0) {
        usage(stderr);
        return 2;
    }
    print_summary(stdout);
    if (report != NULL) {
        print_summary(report);
        fprintf(report, "# %d runs, %d failed\n", runs, failures);
        fclose(report);
    }
    printf("# %d runs, %d failed\n", runs, failures);
    free(hist.r);
    return failures == 0 ? 0 : 1;
}
