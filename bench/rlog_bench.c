/* rlog_bench.c - group-commit throughput of the Raft disk log (not a test).
 *
 * Workload: B batches of N entries of S bytes each; every batch is one
 * raftlog_append and one raftlog_sync (one fdatasync), as the driver does for
 * one RAFT_UPDATE_ENTRIES. Segments of 64 MiB; the directory is a fresh
 * mkdtemp under `dir`, removed at the end.
 * Reported: entries/s and MB/s over the whole run, and the mean, median and
 * 99th percentile of one raftlog_sync in microseconds.
 *
 * Usage: rlog_bench [batches] [entries-per-batch] [entry-bytes] [dir]
 *        (defaults 2000 256 100 /tmp)
 */
#include "raft/log/log.h"

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return;
    struct dirent *de;
    char path[4096 + 512];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    long batches = argc > 1 ? atol(argv[1]) : 2000;
    long per = argc > 2 ? atol(argv[2]) : 256;
    long size = argc > 3 ? atol(argv[3]) : 100;
    const char *base = argc > 4 ? argv[4] : "/tmp";
    if (batches <= 0 || per <= 0 || size < 0) {
        fprintf(stderr, "usage: rlog_bench [batches] [entries-per-batch] [entry-bytes] [dir]\n");
        return 2;
    }
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/rlog_bench.XXXXXX", base);
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    struct raftlog_options o = {.dir = dir, .max_segment_bytes = 64u << 20, .max_generations = 2};
    struct raftlog *l;
    struct raftlog_state st;
    struct ferry_err err;
    if (raftlog_open(&l, &o, &st, &err) != 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        return 1;
    }
    raftlog_state_free(&st);

    uint8_t *payload = malloc((size_t)size + 1);
    memset(payload, 'x', (size_t)size + 1);
    struct raft_entry *e = calloc((size_t)per, sizeof *e);
    double *sync_us = calloc((size_t)batches, sizeof *sync_us);
    uint64_t index = 1;
    double t0 = now_us();
    for (long b = 0; b < batches; b++) {
        for (long i = 0; i < per; i++) {
            e[i] = (struct raft_entry){.term = 1,
                                       .index = index++,
                                       .type = RAFT_ENTRY_NORMAL,
                                       .len = (uint32_t)size,
                                       .data = size ? payload : NULL};
        }
        if (raftlog_append(l, 0, e, (uint32_t)per, &err) != 0) {
            fprintf(stderr, "append: %s\n", err.msg);
            return 1;
        }
        double s0 = now_us();
        if (raftlog_sync(l, &err) != 0) {
            fprintf(stderr, "sync: %s\n", err.msg);
            return 1;
        }
        sync_us[b] = now_us() - s0;
    }
    double total = now_us() - t0;
    double sum = 0;
    for (long b = 0; b < batches; b++)
        sum += sync_us[b];
    qsort(sync_us, (size_t)batches, sizeof *sync_us, cmp_double);
    long n = batches * per;

    struct utsname u;
    uname(&u);
    printf("# rlog_bench: %ld batches x %ld entries x %ld B, one fdatasync per batch, dir %s\n",
           batches, per, size, base);
    printf("# machine: %s %s %s, %ld cpus\n", u.sysname, u.release, u.machine,
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("entries=%ld segments=%u seconds=%.3f entries_per_s=%.0f mb_per_s=%.1f\n", n,
           raftlog_segment_count(l), total / 1e6, (double)n / (total / 1e6),
           (double)n * (double)(size + 25) / total);
    printf("sync_us_mean=%.1f sync_us_p50=%.1f sync_us_p99=%.1f\n", sum / (double)batches,
           sync_us[batches / 2], sync_us[(batches * 99) / 100]);

    raftlog_close(l);
    remove_dir(dir);
    free(payload);
    free(e);
    free(sync_us);
    return 0;
}
