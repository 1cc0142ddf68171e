/* cli/latency.h - a latency recorder for `ferry bench`.
 *
 * Samples are nanoseconds in a buffer sized up front (no allocation while
 * measuring). Percentiles use the nearest-rank definition, the one the peer
 * bench clients use, so Ferry's figures compare with theirs: the p-th
 * percentile of n sorted samples is sample number ceil(p/100 * n), counted
 * from 1 and clamped to [1, n].
 */
#ifndef FERRY_CLI_LATENCY_H
#define FERRY_CLI_LATENCY_H

#include <stddef.h>
#include <stdint.h>

struct latency {
    uint64_t *ns;
    size_t n;
    size_t cap;
    int sorted;
};

/* 0, or -1 when out of memory. */
int latency_init(struct latency *l, size_t cap);
void latency_free(struct latency *l);
/* Record one sample; samples beyond the capacity are dropped. */
void latency_add(struct latency *l, uint64_t ns);
void latency_reset(struct latency *l);
/* Percentile p in [0, 100], in microseconds; 0 when there are no samples. */
double latency_pct_us(struct latency *l, double p);
double latency_mean_us(const struct latency *l);
/* Print " p50_us=… p99_us=… p999_us=… max_us=… mean_us=…" to stdout. */
void latency_print_fields(struct latency *l);

#endif
