/* alloc.c - libc allocation with an optional countdown fault injector. */
#include "util/alloc.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static _Atomic long fault_countdown = -1;
static _Atomic long fault_repeat;
static _Atomic long fault_hits;

void alloc_set_fault(long countdown, long repeat)
{
    fault_hits = 0;
    fault_repeat = repeat;
    fault_countdown = countdown;
}

long alloc_faults_injected(void)
{
    return fault_hits;
}

static int should_fail(void)
{
    long c = atomic_load_explicit(&fault_countdown, memory_order_relaxed);
    if (c < 0)
        return 0;
    if (c > 0) {
        atomic_fetch_sub(&fault_countdown, 1);
        return 0;
    }
    long r = fault_repeat;
    if (r == 0)
        return 0;
    if (r > 0)
        fault_repeat = r - 1;
    fault_hits++;
    return 1;
}

void *ferry_malloc(size_t n)
{
    return should_fail() ? NULL : malloc(n ? n : 1);
}

void *ferry_calloc(size_t count, size_t size)
{
    return should_fail() ? NULL : calloc(count ? count : 1, size ? size : 1);
}

void *ferry_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : realloc(p, n ? n : 1);
}

char *ferry_strdup(const char *s)
{
    return ferry_strndup(s, strlen(s));
}

char *ferry_strndup(const char *s, size_t n)
{
    size_t len = strnlen(s, n);
    char *p = ferry_malloc(len + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

void ferry_free(void *p)
{
    free(p);
}
