/* raft/core/codec.h - Raft messages to bytes and back.
 *
 * Every message is one self-delimited body (the transport frames it):
 *
 *   header (34 bytes): u8 version (1) | u8 type | u64 cluster_id | u64 from | u64 to | u64 term
 *
 * followed by the type's fields, all integers big-endian (docs/raft.md lists
 * every layout). Decoding checks every length against the input and rejects
 * unknown versions, unknown types, flags other than 0/1, unknown entry types,
 * chunks that overrun their snapshot, and trailing bytes, so a malformed or
 * hostile input yields FERRY_EPROTO with a message, never a crash or an
 * allocation larger than the input.
 */
#ifndef FERRY_RAFT_CORE_CODEC_H
#define FERRY_RAFT_CORE_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "raft/core/raft.h"
#include "util/buf.h"
#include "util/err.h"

#define RAFT_WIRE_VERSION 1
#define RAFT_WIRE_HEADER 34

/* Append the encoding of m to out. An InstallSnapshot chunk must have its
 * data filled (len bytes). FERRY_EINVAL for a message that cannot be valid,
 * FERRY_ENOMEM if out cannot grow (out is then unchanged). */
int raft_msg_encode(const struct raft_msg *m, struct buf *out);

/* Decode one message occupying exactly p[0..len). Entry payloads and chunk
 * data point into p (which must outlive m's use); the entries array is
 * allocated and released by raft_msg_release. On error m needs no release. */
int raft_msg_decode(const uint8_t *p, size_t len, struct raft_msg *m, struct ferry_err *err);

/* Free what raft_msg_decode allocated. */
void raft_msg_release(struct raft_msg *m);

#endif
