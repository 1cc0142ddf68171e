/* latency.c - nearest-rank percentiles over a fixed-capacity sample buffer. */
#include "cli/latency.h"

#include <stdio.h>
#include <stdlib.h>

int latency_init(struct latency *l, size_t cap)
{
    l->cap = cap ? cap : 1;
    l->n = 0;
    l->sorted = 0;
    l->ns = malloc(l->cap * sizeof *l->ns);
    return l->ns ? 0 : -1;
}

void latency_free(struct latency *l)
{
    free(l->ns);
    l->ns = NULL;
    l->n = l->cap = 0;
}

void latency_add(struct latency *l, uint64_t ns)
{
    if (l->n < l->cap) {
        l->ns[l->n++] = ns;
        l->sorted = 0;
    }
}

void latency_reset(struct latency *l)
{
    l->n = 0;
    l->sorted = 0;
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

double latency_pct_us(struct latency *l, double p)
{
    if (l->n == 0)
        return 0;
    if (!l->sorted) {
        qsort(l->ns, l->n, sizeof *l->ns, compare_u64);
        l->sorted = 1;
    }
    double exact = p / 100.0 * (double)l->n;
    size_t rank = (size_t)exact;
    if (exact - (double)rank > 1e-6)
        rank++; /* ceil, tolerant of rounding: 99.9% of 2000 is rank 1998 */
    if (rank < 1)
        rank = 1;
    if (rank > l->n)
        rank = l->n;
    return (double)l->ns[rank - 1] / 1000.0;
}

double latency_mean_us(const struct latency *l)
{
    if (l->n == 0)
        return 0;
    long double sum = 0;
    for (size_t i = 0; i < l->n; i++)
        sum += l->ns[i];
    return (double)(sum / l->n / 1000.0);
}

void latency_print_fields(struct latency *l)
{
    printf(" p50_us=%.1f p99_us=%.1f p999_us=%.1f max_us=%.1f mean_us=%.1f", latency_pct_us(l, 50),
           latency_pct_us(l, 99), latency_pct_us(l, 99.9), latency_pct_us(l, 100),
           latency_mean_us(l));
}
