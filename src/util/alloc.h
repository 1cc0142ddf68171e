/* util/alloc.h - all of Ferry's heap allocation goes through these.
 *
 * The allocator is swappable (alloc_set_fault) so tests can make the Nth
 * allocation fail and check that every path returns FERRY_ENOMEM cleanly,
 * the way libuv's test-loop-oom and SQLite's test_malloc do. Production
 * uses libc directly.
 */
#ifndef FERRY_UTIL_ALLOC_H
#define FERRY_UTIL_ALLOC_H

#include <stddef.h>

void *ferry_malloc(size_t n);
void *ferry_calloc(size_t count, size_t size);
void *ferry_realloc(void *p, size_t n);
char *ferry_strdup(const char *s);
char *ferry_strndup(const char *s, size_t n);
void ferry_free(void *p);

/* Fault injection for tests: after `countdown` more successful allocations,
 * fail the next `repeat` ones (repeat < 0: fail forever). countdown < 0 turns
 * injection off. Process-wide; not for use in production. */
void alloc_set_fault(long countdown, long repeat);
/* How many allocations failed by injection since the last alloc_set_fault. */
long alloc_faults_injected(void);

#endif
