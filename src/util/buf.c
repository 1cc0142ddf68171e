/* buf.c - growable byte buffer. Growth doubles capacity (min 256 bytes). */
#include "util/buf.h"

#include "util/alloc.h"
#include <ferry/status.h>
#include <string.h>

void buf_init(struct buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void buf_free(struct buf *b)
{
    ferry_free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int buf_reserve(struct buf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len)
        return FERRY_ENOMEM;
    size_t need = b->len + extra;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    uint8_t *p = ferry_realloc(b->data, cap);
    if (p == NULL)
        return FERRY_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = buf_reserve(b, n);
    if (rc != 0)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int buf_append_u8(struct buf *b, uint8_t v)
{
    return buf_append(b, &v, 1);
}

int buf_append_u16(struct buf *b, uint16_t v)
{
    uint8_t t[2];
    put_u16(t, v);
    return buf_append(b, t, sizeof t);
}

int buf_append_u32(struct buf *b, uint32_t v)
{
    uint8_t t[4];
    put_u32(t, v);
    return buf_append(b, t, sizeof t);
}

int buf_append_u64(struct buf *b, uint64_t v)
{
    uint8_t t[8];
    put_u64(t, v);
    return buf_append(b, t, sizeof t);
}

void buf_consume(struct buf *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void buf_reset(struct buf *b)
{
    b->len = 0;
}

uint8_t *buf_steal(struct buf *b, size_t *len_out)
{
    uint8_t *p = b->data;
    if (len_out)
        *len_out = b->len;
    buf_init(b);
    return p;
}
