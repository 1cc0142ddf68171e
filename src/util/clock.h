/* util/clock.h - the process's clocks. Only edges (server, client, cli) read
 * them; the broker and the Raft core get time handed in as values. */
#ifndef FERRY_UTIL_CLOCK_H
#define FERRY_UTIL_CLOCK_H

#include <stdint.h>

/* Monotonic time in nanoseconds / milliseconds (for timeouts and latency). */
uint64_t clock_mono_ns(void);
uint64_t clock_mono_ms(void);
/* Wall-clock time in milliseconds since the Unix epoch (for timestamps in commands). */
uint64_t clock_wall_ms(void);

#endif
