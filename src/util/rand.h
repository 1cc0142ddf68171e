/* util/rand.h - a small seeded PRNG (xoshiro256**, seeded by splitmix64).
 *
 * Deterministic for a given seed, so the Raft core and the simulator can
 * replay a run exactly. Not for cryptographic use. The state is a value the
 * caller owns: there is no global generator.
 */
#ifndef FERRY_UTIL_RAND_H
#define FERRY_UTIL_RAND_H

#include <stdint.h>

struct rng {
    uint64_t s[4];
};

void rng_seed(struct rng *r, uint64_t seed);
uint64_t rng_next(struct rng *r);
/* Uniform in [0, n); n > 0. */
uint64_t rng_below(struct rng *r, uint64_t n);
/* Uniform in [lo, hi]; lo <= hi. */
uint64_t rng_range(struct rng *r, uint64_t lo, uint64_t hi);
/* 1 with probability num/den. */
int rng_chance(struct rng *r, uint64_t num, uint64_t den);

#endif
