/* segment.c - record framing and the scan that verifies one segment file.
 *
 * A record is [u32 length][u32 crc32c][u64 term][u64 index][u8 type][payload],
 * big-endian; length = 17 + payload bytes, the crc covers those bytes. The scan
 * checks every checksum, that indexes run on from the name without a gap, that
 * terms never go back and that types are known. Damage in the last segment
 * with nothing valid after it is a torn tail (the caller truncates it);
 * anything else is FERRY_ECORRUPT with the file and offset.
 */
#include "raft/log/internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "util/alloc.h"
#include "util/buf.h"
#include "util/crc32c.h"

void segment_name(char *out, size_t cap, uint64_t first)
{
    snprintf(out, cap, "seg-%020" PRIu64 ".log", first);
}

int segment_parse_name(const char *name, uint64_t *first)
{
    if (strlen(name) != 28 || strncmp(name, "seg-", 4) != 0 || strcmp(name + 24, ".log") != 0)
        return -1;
    uint64_t v = 0;
    for (int i = 4; i < 24; i++) {
        if (name[i] < '0' || name[i] > '9')
            return -1;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    *first = v;
    return 0;
}

size_t record_size(uint32_t payload_len)
{
    return RECORD_HEADER + (size_t)payload_len;
}

void record_encode(uint8_t *out, const struct raft_entry *e)
{
    put_u32(out, RECORD_FIXED + e->len);
    put_u64(out + 8, e->term);
    put_u64(out + 16, e->index);
    out[24] = e->type;
    if (e->len > 0)
        memcpy(out + RECORD_HEADER, e->data, e->len);
    put_u32(out + 4, crc32c(out + 8, RECORD_FIXED + e->len));
}

int segment_push(struct segment *s, uint64_t offset, uint64_t term)
{
    if (s->n == s->cap) {
        uint64_t cap = s->cap ? s->cap * 2 : 64;
        uint64_t *o = ferry_realloc(s->offsets, cap * sizeof *o);
        if (o == NULL)
            return FERRY_ENOMEM;
        s->offsets = o;
        uint64_t *t = ferry_realloc(s->terms, cap * sizeof *t);
        if (t == NULL)
            return FERRY_ENOMEM;
        s->terms = t;
        s->cap = cap;
    }
    s->offsets[s->n] = offset;
    s->terms[s->n] = term;
    s->n++;
    s->last = s->first + s->n - 1;
    return 0;
}

void segment_free(struct segment *s)
{
    ferry_free(s->offsets);
    ferry_free(s->terms);
    memset(s, 0, sizeof *s);
}

/* Does a record with a valid checksum and a plausible index start anywhere in
 * buf[from, len)? Only the header is checked at most offsets, so this is cheap. */
static int valid_record_after(const uint8_t *buf, uint64_t from, uint64_t len, uint64_t expected)
{
    for (uint64_t p = from; p + RECORD_HEADER <= len; p++) {
        uint32_t rl = get_u32(buf + p);
        if (rl < RECORD_FIXED || rl > RECORD_MAX_LEN || p + 8 + rl > len)
            continue;
        uint64_t idx = get_u64(buf + p + 16);
        if (idx < expected || idx > expected + (len - from) / RECORD_HEADER)
            continue;
        if (crc32c(buf + p + 8, rl) == get_u32(buf + p + 4))
            return 1;
    }
    return 0;
}

int segment_scan(const char *path, const uint8_t *buf, uint64_t len, int is_last, struct segment *s,
                 uint64_t *valid_len, struct ferry_err *err)
{
    uint64_t off = 0;
    uint64_t prev_term = 0;
    while (off < len) {
        uint64_t expected = s->first + s->n;
        const char *why = NULL;
        uint32_t rl = 0;
        if (len - off < RECORD_HEADER) {
            why = "short record header";
        } else {
            rl = get_u32(buf + off);
            if (rl < RECORD_FIXED || rl > RECORD_MAX_LEN)
                why = "impossible record length";
            else if (off + 8 + rl > len)
                why = "record runs past the end of the file";
            else if (crc32c(buf + off + 8, rl) != get_u32(buf + off + 4))
                why = "checksum mismatch";
        }
        if (why != NULL) {
            if (!is_last)
                return ferry_err_set(err, FERRY_ECORRUPT,
                                     "%s: %s at offset %" PRIu64 " (entry %" PRIu64
                                     ") in a closed segment",
                                     path, why, off, expected);
            if (valid_record_after(buf, off + 1, len, expected))
                return ferry_err_set(err, FERRY_ECORRUPT,
                                     "%s: %s at offset %" PRIu64 " (entry %" PRIu64
                                     ") followed by valid records",
                                     path, why, off, expected);
            break; /* torn tail */
        }
        uint64_t term = get_u64(buf + off + 8);
        uint64_t index = get_u64(buf + off + 16);
        uint8_t type = buf[off + 24];
        if (index != expected)
            return ferry_err_set(err, FERRY_ECORRUPT,
                                 "%s: entry at offset %" PRIu64 " has index %" PRIu64
                                 ", expected %" PRIu64,
                                 path, off, index, expected);
        if (term < prev_term || term == 0)
            return ferry_err_set(err, FERRY_ECORRUPT,
                                 "%s: entry %" PRIu64 " at offset %" PRIu64 " has term %" PRIu64
                                 " after term %" PRIu64,
                                 path, index, off, term, prev_term);
        if (type < RAFT_ENTRY_NORMAL || type > RAFT_ENTRY_CONFIG)
            return ferry_err_set(err, FERRY_ECORRUPT,
                                 "%s: entry %" PRIu64 " at offset %" PRIu64 " has unknown type %u",
                                 path, index, off, type);
        if (segment_push(s, off, term) < 0)
            return ferry_err_set(err, FERRY_ENOMEM, "scanning %s: out of memory", path);
        prev_term = term;
        off += 8 + rl;
    }
    s->size = off;
    *valid_len = off;
    return 0;
}
