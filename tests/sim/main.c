/* main.c - ferry-sim: run the Raft simulator over one seed or a range of seeds.
 *
 *   ferry-sim --seed N [--seeds COUNT] [--nodes 3|5|2w|mix] [--steps K]
 *             [--no-peer-down] [--snapshot-bytes N] [--expect-failure] [--quiet]
 *
 * Seeds N .. N+COUNT-1 each run one simulated cluster (with --nodes mix the
 * layout rotates 3, 5, 2w by seed). On the first violation it prints the
 * seed, the step and the property, replays the seed with tracing to the same
 * step (showing the run is deterministic) and prints the trace tail, then
 * exits 1. --expect-failure inverts the verdict: exit 0 only if some seed
 * fails (the mutation test). --no-peer-down never delivers RAFT_EV_PEER_DOWN
 * (the same faults are drawn), to compare failover times without it. Totals
 * and liveness figures go to stdout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

static const char *layout_name(int l)
{
    return l == SIM_3 ? "3" : l == SIM_5 ? "5" : "2w";
}

static void usage(void)
{
    fprintf(stderr, "usage: ferry-sim --seed N [--seeds COUNT] [--nodes 3|5|2w|mix] [--steps K] "
                    "[--no-peer-down] [--snapshot-bytes N] [--expect-failure] [--quiet]\n");
    exit(2);
}

/* Upper edge of the histogram bucket holding the pct-th percentile of the
 * clean failovers of one kind. */
static uint64_t percentile(const struct sim_stats *st, int kind, unsigned pct)
{
    uint64_t want = (st->clean_n[kind] * pct + 99) / 100, seen = 0;
    for (unsigned b = 0; b < SIM_HIST_BUCKETS; b++) {
        seen += st->clean_hist[kind][b];
        if (seen >= want)
            return b + 1 < SIM_HIST_BUCKETS ? (uint64_t)(b + 1) * SIM_HIST_MS : st->clean_max[kind];
    }
    return st->clean_max[kind];
}

static void report_failure(uint64_t seed, int layout, long steps, const struct sim *s)
{
    printf("VIOLATION seed=%llu nodes=%s step=%ld: %s\n", (unsigned long long)seed,
           layout_name(layout), s->step, s->violation);
    printf("replay: ferry-sim --seed %llu --nodes %s --steps %ld%s", (unsigned long long)seed,
           layout_name(layout), steps, s->no_peer_down ? " --no-peer-down" : "");
    if (s->snapshot_bytes)
        printf(" --snapshot-bytes %llu", (unsigned long long)s->snapshot_bytes);
    printf("\n");
    /* Replay with tracing up to the failing step. */
    static struct sim r;
    memset(&r, 0, sizeof(r));
    r.trace = 1;
    r.no_peer_down = s->no_peer_down;
    r.snapshot_bytes = s->snapshot_bytes;
    r.stop_at_step = s->step;
    char first[512];
    snprintf(first, sizeof(first), "%s", s->violation);
    sim_run(&r, seed, layout, steps, NULL);
    printf("trace tail (replayed):\n");
    for (uint32_t i = r.trace_head > 64 ? r.trace_head - 64 : 0; i < r.trace_head; i++)
        printf("  %s\n", r.trace_ring[i % 64]);
    if (strcmp(r.violation, first) != 0 || r.step != s->step)
        printf("replay diverged: step %ld, '%s'\n", r.step, r.violation);
    else
        printf("replay reproduced the violation at step %ld\n", r.step);
}

int main(int argc, char **argv)
{
    uint64_t seed = 1, count = 1;
    long steps = 3000;
    int layout = -1, expect_failure = 0, quiet = 0, have_seed = 0, no_peer_down = 0;
    uint64_t snapshot_bytes = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--seed") == 0 && v) {
            seed = strtoull(v, NULL, 10);
            have_seed = 1;
            i++;
        } else if (strcmp(a, "--seeds") == 0 && v) {
            count = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--steps") == 0 && v) {
            steps = strtol(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--nodes") == 0 && v) {
            layout = strcmp(v, "3") == 0     ? SIM_3
                     : strcmp(v, "5") == 0   ? SIM_5
                     : strcmp(v, "2w") == 0  ? SIM_2W
                     : strcmp(v, "mix") == 0 ? -1
                                             : -2;
            if (layout == -2)
                usage();
            i++;
        } else if (strcmp(a, "--snapshot-bytes") == 0 && v) {
            snapshot_bytes = strtoull(v, NULL, 10);
            i++;
        } else if (strcmp(a, "--no-peer-down") == 0) {
            no_peer_down = 1;
        } else if (strcmp(a, "--expect-failure") == 0) {
            expect_failure = 1;
        } else if (strcmp(a, "--quiet") == 0) {
            quiet = 1;
        } else {
            usage();
        }
    }
    if (!have_seed || count == 0 || steps <= 0)
        usage();
    static struct sim s;
    struct sim_stats st;
    memset(&st, 0, sizeof(st));
    int failed = 0;
    for (uint64_t k = 0; k < count; k++) {
        uint64_t sd = seed + k;
        int l = layout >= 0 ? layout : (int)(sd % 3);
        memset(&s, 0, sizeof(s));
        s.no_peer_down = no_peer_down;
        s.snapshot_bytes = snapshot_bytes;
        if (sim_run(&s, sd, l, steps, &st) != 0) {
            failed = 1;
            if (expect_failure)
                printf("caught after %llu seed(s): seed=%llu nodes=%s step=%ld: %s\n",
                       (unsigned long long)(k + 1), (unsigned long long)sd, layout_name(l), s.step,
                       s.violation);
            else
                report_failure(sd, l, steps, &s);
            break;
        }
        if (!quiet && count > 1 && (k + 1) % 500 == 0)
            fprintf(stderr, "... %llu seeds\n", (unsigned long long)(k + 1));
    }
    printf("seeds %llu, steps %llu, simulated %.1f s, elections %llu, proposals %llu, "
           "crashes %llu, partitions %llu, transfers %llu, membership changes %llu, "
           "snapshots installed %llu, foreign messages rejected %llu\n",
           (unsigned long long)st.seeds, (unsigned long long)st.steps, st.sim_ms / 1000.0,
           (unsigned long long)st.elections, (unsigned long long)st.proposals,
           (unsigned long long)st.crashes, (unsigned long long)st.partitions,
           (unsigned long long)st.transfers, (unsigned long long)st.member_changes,
           (unsigned long long)st.snapshots_installed, (unsigned long long)st.rejects_seen);
    printf("peer-down events %llu (%llu spurious)%s\n", (unsigned long long)st.peer_downs,
           (unsigned long long)st.spurious_peer_downs,
           no_peer_down ? ", not delivered (--no-peer-down)" : "");
    if (st.failover_n)
        printf("during faults, leader crash to next leader: %llu failovers, mean %llu ms, "
               "max %llu ms, %llu%% within one election timeout; %llu with no new leader before "
               "faults stopped\n",
               (unsigned long long)st.failover_n,
               (unsigned long long)(st.failover_sum / st.failover_n),
               (unsigned long long)st.failover_max,
               (unsigned long long)(st.failover_fast * 100 / st.failover_n),
               (unsigned long long)st.failover_open);
    for (int kind = 0; kind < 2; kind++) {
        uint64_t n = st.clean_n[kind];
        if (n == 0)
            continue;
        printf("settled leader crash to next leader, %s: %llu failovers, %llu%% within one "
               "election timeout, mean %llu ms, median %llu ms, p90 %llu ms, max %llu ms\n",
               kind == 0 ? "a voter of its priority survives" : "only lower priorities survive",
               (unsigned long long)n, (unsigned long long)(st.clean_fast[kind] * 100 / n),
               (unsigned long long)(st.clean_sum[kind] / n),
               (unsigned long long)percentile(&st, kind, 50),
               (unsigned long long)percentile(&st, kind, 90),
               (unsigned long long)st.clean_max[kind]);
    }
    if (st.first_elect_n)
        printf("cold start to first commit: mean %llu ms, max %llu ms\n",
               (unsigned long long)(st.first_elect_sum / st.first_elect_n),
               (unsigned long long)st.first_elect_max);
    if (st.heal_elect_n)
        printf("after faults stop: leader in mean %llu ms (max %llu), proposal committed in mean "
               "%llu ms (max %llu), settled on best node in mean %llu ms (max %llu)\n",
               (unsigned long long)(st.heal_elect_sum / st.heal_elect_n),
               (unsigned long long)st.heal_elect_max,
               (unsigned long long)(st.heal_commit_sum / st.heal_elect_n),
               (unsigned long long)st.heal_commit_max,
               (unsigned long long)(st.settle_sum / st.heal_elect_n),
               (unsigned long long)st.settle_max);
    if (expect_failure) {
        if (!failed)
            printf("NOT CAUGHT: no violation in %llu seeds\n", (unsigned long long)count);
        return failed ? 0 : 1;
    }
    return failed ? 1 : 0;
}
