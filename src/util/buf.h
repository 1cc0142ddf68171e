/* util/buf.h - a growable byte buffer and big-endian integer helpers.
 *
 * struct buf owns `data` (heap); buf_free releases it. Appends grow the
 * buffer geometrically and return FERRY_ENOMEM on failure, leaving the
 * buffer unchanged. buf_consume drops bytes from the front (memmove); callers
 * that read frames consume whole frames at a time.
 *
 * Wire and disk integers are big-endian: put_u16/32/64 and get_u16/32/64.
 */
#ifndef FERRY_UTIL_BUF_H
#define FERRY_UTIL_BUF_H

#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
/* Make room for at least `extra` more bytes beyond len. */
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_u8(struct buf *b, uint8_t v);
int buf_append_u16(struct buf *b, uint16_t v);
int buf_append_u32(struct buf *b, uint32_t v);
int buf_append_u64(struct buf *b, uint64_t v);
/* Drop the first n bytes (n <= len). */
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);
/* Hand the storage to the caller: returns data (caller frees), buffer becomes empty. */
uint8_t *buf_steal(struct buf *b, size_t *len_out);

static inline void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static inline void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}
static inline void put_u64(uint8_t *p, uint64_t v)
{
    put_u32(p, (uint32_t)(v >> 32));
    put_u32(p + 4, (uint32_t)v);
}
static inline uint16_t get_u16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] << 8 | p[1]);
}
static inline uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint64_t get_u64(const uint8_t *p)
{
    return (uint64_t)get_u32(p) << 32 | get_u32(p + 4);
}

#endif
