/* cmd.c - the command codec: the state machine's input language on the wire.
 *
 * Every command is [u32 length][u8 type][u8 flags][u64 ts_ms][body], all
 * big-endian, where length counts the bytes after itself and the body
 * depends on the type (docs/storage.md has the table):
 *
 *   NOOP, EXPIRE             -
 *   CREATE                   u8 kind, str name, u64 capacity, u64 ttl_ms,
 *                            u32 max_deliveries, str dlq (name2)
 *   DELETE                   str name
 *   PUBLISH, PUSH            str name, [u64 capacity, u64 ttl_ms, u32 max_deliveries]
 *                            (only with AUTO_CREATE: the attributes to create with),
 *                            [16 producer_id, u64 producer_seq] (only with flag 0x80),
 *                            bytes payload
 *   ACK, RETURN              str name, u64 id
 *   DURABLE_CREATE, _ACK     str name, str name2, u64 id
 *   DURABLE_DELETE           str name, str name2
 *
 * str = u8 length + bytes (names are at most 255 bytes, no NUL);
 * bytes = u32 length + bytes. The decoder is strict: every read is bounds
 * checked, the body must end exactly at length, unknown types and flags
 * are rejected; any violation is FERRY_ECORRUPT, never a crash.
 */
#include "broker/broker_int.h"

#include <assert.h>
#include <string.h>

#define CMD_HEADER 14 /* length, type, flags, ts */

static int has_producer(const struct broker_cmd *c)
{
    static const uint8_t zero[16];
    return c->producer_seq != 0 || memcmp(c->producer_id, zero, sizeof zero) != 0;
}

static size_t str_len(const char *s)
{
    return strnlen(s, BROKER_NAME_MAX + 1);
}

/* Body size of cmd, or 0 with *bad set for an unencodable command. */
static size_t body_size(const struct broker_cmd *c, int *bad)
{
    size_t n1 = str_len(c->name), n2 = str_len(c->name2);
    *bad = n1 > BROKER_NAME_MAX || n2 > BROKER_NAME_MAX;
    switch (c->type) {
    case BROKER_CMD_NOOP:
    case BROKER_CMD_EXPIRE:
        return 0;
    case BROKER_CMD_CREATE:
        return 1 + 1 + n1 + 8 + 8 + 4 + 1 + n2;
    case BROKER_CMD_DELETE:
        return 1 + n1;
    case BROKER_CMD_PUBLISH:
    case BROKER_CMD_PUSH:
        *bad = *bad || (c->payload == NULL && c->payload_len > 0);
        return 1 + n1 + (c->flags & BROKER_CMDF_AUTO_CREATE ? 20 : 0) +
               (has_producer(c) ? 24 : 0) + 4 + (size_t)c->payload_len;
    case BROKER_CMD_ACK:
    case BROKER_CMD_RETURN:
        return 1 + n1 + 8;
    case BROKER_CMD_DURABLE_CREATE:
    case BROKER_CMD_DURABLE_ACK:
        return 1 + n1 + 1 + n2 + 8;
    case BROKER_CMD_DURABLE_DELETE:
        return 1 + n1 + 1 + n2;
    default:
        *bad = 1;
        return 0;
    }
}

static uint8_t *put_str(uint8_t *p, const char *s)
{
    size_t n = str_len(s);
    *p++ = (uint8_t)n;
    memcpy(p, s, n);
    return p + n;
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
    put_u64(p, v);
    return p + 8;
}

static uint8_t *put_body(uint8_t *p, const struct broker_cmd *c)
{
    switch (c->type) {
    case BROKER_CMD_CREATE:
        *p++ = c->kind;
        p = put_str(p, c->name);
        p = put64(p, c->capacity);
        p = put64(p, c->ttl_ms);
        put_u32(p, c->max_deliveries);
        return put_str(p + 4, c->name2);
    case BROKER_CMD_DELETE:
        return put_str(p, c->name);
    case BROKER_CMD_PUBLISH:
    case BROKER_CMD_PUSH:
        p = put_str(p, c->name);
        if (c->flags & BROKER_CMDF_AUTO_CREATE) {
            p = put64(p, c->capacity);
            p = put64(p, c->ttl_ms);
            put_u32(p, c->max_deliveries);
            p += 4;
        }
        if (has_producer(c)) {
            memcpy(p, c->producer_id, 16);
            p = put64(p + 16, c->producer_seq);
        }
        put_u32(p, c->payload_len);
        if (c->payload_len)
            memcpy(p + 4, c->payload, c->payload_len);
        return p + 4 + c->payload_len;
    case BROKER_CMD_ACK:
    case BROKER_CMD_RETURN:
        return put64(put_str(p, c->name), c->id);
    case BROKER_CMD_DURABLE_CREATE:
    case BROKER_CMD_DURABLE_ACK:
        return put64(put_str(put_str(p, c->name), c->name2), c->id);
    case BROKER_CMD_DURABLE_DELETE:
        return put_str(put_str(p, c->name), c->name2);
    default:
        return p;
    }
}

int broker_cmd_encode(struct buf *out, const struct broker_cmd *cmd)
{
    assert(out != NULL);
    assert(cmd != NULL);
    int bad = 0;
    size_t body = body_size(cmd, &bad);
    if (bad || (cmd->flags & ~BROKER_CMDF_KNOWN) != 0)
        return FERRY_EINVAL;
    if (body > UINT32_MAX - (CMD_HEADER - 4))
        return FERRY_ETOOBIG;
    int rc = buf_reserve(out, CMD_HEADER + body);
    if (rc != 0)
        return rc;
    uint8_t *start = out->data + out->len;
    put_u32(start, (uint32_t)(CMD_HEADER - 4 + body));
    start[4] = cmd->type;
    start[5] = (uint8_t)(cmd->flags | (has_producer(cmd) && (cmd->type == BROKER_CMD_PUBLISH ||
                                                             cmd->type == BROKER_CMD_PUSH)
                                           ? BROKER_CMDF_WIRE_PRODUCER
                                           : 0));
    put_u64(start + 6, cmd->ts_ms);
    uint8_t *end = put_body(start + CMD_HEADER, cmd);
    assert((size_t)(end - start) == CMD_HEADER + body);
    (void)end;
    out->len += CMD_HEADER + body;
    return 0;
}

/* ---- decoding ---- */

struct rd {
    const uint8_t *p;
    size_t left;
    int bad;
};

static const uint8_t *take(struct rd *r, size_t n)
{
    if (r->bad || n > r->left) {
        r->bad = 1;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n;
    r->left -= n;
    return p;
}

static uint64_t get64(struct rd *r)
{
    const uint8_t *p = take(r, 8);
    return p ? get_u64(p) : 0;
}

static uint32_t get32(struct rd *r)
{
    const uint8_t *p = take(r, 4);
    return p ? get_u32(p) : 0;
}

static uint8_t get8(struct rd *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

static void get_str(struct rd *r, char *out)
{
    uint8_t n = get8(r);
    const uint8_t *p = take(r, n);
    if (p == NULL || memchr(p, '\0', n) != NULL) {
        r->bad = 1;
        out[0] = '\0';
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

static void get_body(struct rd *r, struct broker_cmd *c, uint8_t wire_flags)
{
    switch (c->type) {
    case BROKER_CMD_NOOP:
    case BROKER_CMD_EXPIRE:
        return;
    case BROKER_CMD_CREATE:
        c->kind = get8(r);
        get_str(r, c->name);
        c->capacity = get64(r);
        c->ttl_ms = get64(r);
        c->max_deliveries = get32(r);
        get_str(r, c->name2);
        return;
    case BROKER_CMD_DELETE:
        get_str(r, c->name);
        return;
    case BROKER_CMD_PUBLISH:
    case BROKER_CMD_PUSH:
        get_str(r, c->name);
        if (c->flags & BROKER_CMDF_AUTO_CREATE) {
            c->capacity = get64(r);
            c->ttl_ms = get64(r);
            c->max_deliveries = get32(r);
        }
        if (wire_flags & BROKER_CMDF_WIRE_PRODUCER) {
            const uint8_t *id = take(r, 16);
            if (id)
                memcpy(c->producer_id, id, 16);
            c->producer_seq = get64(r);
        }
        c->payload_len = get32(r);
        c->payload = take(r, c->payload_len);
        return;
    case BROKER_CMD_ACK:
    case BROKER_CMD_RETURN:
        get_str(r, c->name);
        c->id = get64(r);
        return;
    case BROKER_CMD_DURABLE_CREATE:
    case BROKER_CMD_DURABLE_ACK:
        get_str(r, c->name);
        get_str(r, c->name2);
        c->id = get64(r);
        return;
    case BROKER_CMD_DURABLE_DELETE:
        get_str(r, c->name);
        get_str(r, c->name2);
        return;
    default:
        r->bad = 1;
    }
}

int broker_cmd_decode(const uint8_t *p, size_t n, struct broker_cmd *cmd, size_t *used)
{
    assert(cmd != NULL);
    assert(used != NULL);
    if (p == NULL || n < CMD_HEADER)
        return FERRY_ECORRUPT;
    uint32_t length = get_u32(p);
    if (length < CMD_HEADER - 4 || length > n - 4)
        return FERRY_ECORRUPT;
    uint8_t wire_flags = p[5];
    uint8_t type = p[4];
    int producer_ok = type == BROKER_CMD_PUBLISH || type == BROKER_CMD_PUSH;
    uint8_t allowed = BROKER_CMDF_KNOWN | (producer_ok ? BROKER_CMDF_WIRE_PRODUCER : 0);
    if ((wire_flags & ~allowed) != 0)
        return FERRY_ECORRUPT;
    memset(cmd, 0, offsetof(struct broker_cmd, name));
    cmd->name[0] = cmd->name2[0] = '\0';
    memset(&cmd->kind, 0, sizeof *cmd - offsetof(struct broker_cmd, kind));
    cmd->type = type;
    cmd->flags = wire_flags & BROKER_CMDF_KNOWN;
    cmd->ts_ms = get_u64(p + 6);
    struct rd r = {p + CMD_HEADER, length - (CMD_HEADER - 4), 0};
    get_body(&r, cmd, wire_flags);
    if (r.bad || r.left != 0)
        return FERRY_ECORRUPT;
    *used = (size_t)length + 4;
    return 0;
}
