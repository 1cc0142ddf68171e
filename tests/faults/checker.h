/* checker.h - the no-loss checker of the fault suite.
 *
 * A workload writes unique payloads "P<producer>:<seq>" and records each
 * operation with its invocation and completion times and its outcome: ok
 * (acknowledged), failed (a definite error: the server said it did not
 * happen) or unknown (timed out, connection lost: it may have happened).
 * After the faults heal, the whole of every resource is read back from the
 * surviving majority. The checker compares the two:
 *
 *   lost        acknowledged, never read back                        must be 0
 *   unexpected  read back, never attempted (or not a payload at all)  must be 0
 *   duplicated  a payload stored twice in a channel, an item acked
 *               twice or both acked and still queued                  must be 0
 *   reordered   one producer's payloads out of its order in a channel must be 0
 *   failed_present   a publish reported failed but stored: must be 0 (a
 *               failure is definite; docs/semantics.md)
 *   unknown_present / unknown_absent: outcome-unknown operations that did /
 *               did not take effect; either is allowed, both are counted.
 *
 * Queues: an item counts as read back if a consumer acknowledged it (an ACK
 * record with outcome ok) or it is still in the queue at the end. An item
 * whose acknowledgement has an unknown outcome may rightly be gone: it is
 * not counted as lost.
 */
#ifndef FERRY_FAULTS_CHECKER_H
#define FERRY_FAULTS_CHECKER_H

#include <stddef.h>
#include <stdint.h>

enum fault_op {
    FOP_PUBLISH = 1, /* to a channel */
    FOP_PUSH = 2,    /* to a queue */
    FOP_ACK = 3,     /* a consumer acknowledged a queue item */
};

enum fault_outcome { FOUT_OK = 0, FOUT_FAILED = 1, FOUT_UNKNOWN = 2 };

/* The identity of a payload: producer (1..65535) and its sequence (1..2^40). */
typedef uint64_t fault_key;
#define FAULT_KEY(producer, seq) (((uint64_t)(producer) << 40) | (uint64_t)(seq))
#define FAULT_KEY_PRODUCER(k) ((uint32_t)((k) >> 40))
#define FAULT_KEY_SEQ(k) ((k) & ((1ull << 40) - 1))
#define FAULT_KEY_NONE 0 /* not a payload of the workload */

struct fault_rec {
    uint8_t op;      /* enum fault_op */
    uint8_t outcome; /* enum fault_outcome */
    fault_key key;
    uint64_t invoke_us;
    uint64_t complete_us;
};

struct fault_verdict {
    uint64_t attempted; /* publishes + pushes */
    uint64_t acknowledged;
    uint64_t read_back; /* payloads found in the final state, acks included */
    uint64_t lost;
    uint64_t unexpected;
    uint64_t duplicated;
    uint64_t reordered;
    uint64_t failed_present;
    uint64_t unknown_present;
    uint64_t unknown_absent;
    uint64_t ack_unknown_absent; /* queue items gone after an ack of unknown outcome */
    char first_problem[256]; /* "" when the history is clean */
};

/* "P3:17" -> FAULT_KEY(3, 17); anything else -> FAULT_KEY_NONE. */
fault_key fault_parse(const void *payload, size_t len);
/* Write the payload of key into out (at least 32 bytes); returns its length. */
size_t fault_format(fault_key key, char *out, size_t cap);

/* Check one channel: the history's FOP_PUBLISH records (others are ignored)
 * against `stored`, the channel's payload keys in event order. */
int fault_check_channel(const struct fault_rec *h, size_t n, const fault_key *stored,
                        size_t n_stored, struct fault_verdict *v);

/* Check one queue: FOP_PUSH and FOP_ACK records against `remaining`, the
 * keys left in the queue at the end. */
int fault_check_queue(const struct fault_rec *h, size_t n, const fault_key *remaining,
                      size_t n_remaining, struct fault_verdict *v);

/* Whether the verdict is clean: nothing lost, unexpected, duplicated,
 * reordered, or failed yet present. */
int fault_verdict_ok(const struct fault_verdict *v);

/* Add b's counts to a (first_problem kept from a, else b's). */
void fault_verdict_add(struct fault_verdict *a, const struct fault_verdict *b);

#endif
