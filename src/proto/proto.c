/* proto.c - frame detection and the typed encoders/decoders of docs/protocol.md.
 *
 * The writer appends to a struct buf and remembers where the frame started,
 * so a failed encode rolls the buffer back and leaves no partial frame. The
 * reader never reads past the body: a short body sets r->err and yields zeros.
 */
#include "proto/proto.h"

#include <ferry/status.h>
#include <string.h>

const char *proto_op_name(uint8_t op)
{
    switch (op) {
    case PROTO_HELLO: return "HELLO";
    case PROTO_PING: return "PING";
    case PROTO_PUBLISH: return "PUBLISH";
    case PROTO_PUSH: return "PUSH";
    case PROTO_SUBSCRIBE: return "SUBSCRIBE";
    case PROTO_UNSUBSCRIBE: return "UNSUBSCRIBE";
    case PROTO_SUB_ACK: return "SUB_ACK";
    case PROTO_CONSUME: return "CONSUME";
    case PROTO_CANCEL: return "CANCEL";
    case PROTO_ACK: return "ACK";
    case PROTO_NACK: return "NACK";
    case PROTO_CREATE: return "CREATE";
    case PROTO_DELETE: return "DELETE";
    case PROTO_LIST: return "LIST";
    case PROTO_INFO: return "INFO";
    case PROTO_STATUS: return "STATUS";
    case PROTO_DURABLE_DELETE: return "DURABLE_DELETE";
    case PROTO_ADMIN: return "ADMIN";
    case PROTO_OK: return "OK";
    case PROTO_HELLO_OK: return "HELLO_OK";
    case PROTO_PONG: return "PONG";
    case PROTO_PUBLISH_OK: return "PUBLISH_OK";
    case PROTO_SUBSCRIBE_OK: return "SUBSCRIBE_OK";
    case PROTO_CONSUME_OK: return "CONSUME_OK";
    case PROTO_LIST_OK: return "LIST_OK";
    case PROTO_INFO_OK: return "INFO_OK";
    case PROTO_STATUS_OK: return "STATUS_OK";
    case PROTO_EVENT: return "EVENT";
    case PROTO_DELIVERY: return "DELIVERY";
    case PROTO_SUB_END: return "SUB_END";
    case PROTO_ERROR: return "ERROR";
    default: return "UNKNOWN";
    }
}

int proto_frame_check(const uint8_t *p, size_t n, uint32_t max_frame, struct proto_header *h,
                      size_t *frame_len)
{
    if (n < PROTO_HEADER_SIZE)
        return FERRY_EAGAIN;
    h->length = get_u32(p);
    h->version = p[4];
    h->op = p[5];
    h->flags = get_u16(p + 6);
    h->request_id = get_u32(p + 8);
    if (h->length < PROTO_HEADER_SIZE - 4)
        return FERRY_EPROTO;
    if (h->version != PROTO_VERSION)
        return FERRY_EVERSION;
    if ((uint64_t)h->length + 4 > max_frame)
        return FERRY_ETOOBIG;
    size_t total = (size_t)h->length + 4;
    if (n < total)
        return FERRY_EAGAIN;
    *frame_len = total;
    return 0;
}

/* ---- writer ---- */

void proto_begin(struct proto_writer *w, struct buf *b, uint8_t op, uint16_t flags,
                 uint32_t request_id)
{
    w->b = b;
    w->start = b->len;
    w->err = buf_reserve(b, PROTO_HEADER_SIZE);
    if (w->err)
        return;
    uint8_t *h = b->data + b->len;
    put_u32(h, 0);
    h[4] = PROTO_VERSION;
    h[5] = op;
    put_u16(h + 6, flags);
    put_u32(h + 8, request_id);
    b->len += PROTO_HEADER_SIZE;
}

void proto_put_u8(struct proto_writer *w, uint8_t v)
{
    if (!w->err)
        w->err = buf_append_u8(w->b, v);
}

void proto_put_u16(struct proto_writer *w, uint16_t v)
{
    if (!w->err)
        w->err = buf_append_u16(w->b, v);
}

void proto_put_u32(struct proto_writer *w, uint32_t v)
{
    if (!w->err)
        w->err = buf_append_u32(w->b, v);
}

void proto_put_u64(struct proto_writer *w, uint64_t v)
{
    if (!w->err)
        w->err = buf_append_u64(w->b, v);
}

void proto_put_str(struct proto_writer *w, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n > UINT16_MAX) {
        w->err = FERRY_EINVAL;
        return;
    }
    proto_put_u16(w, (uint16_t)n);
    if (!w->err && n)
        w->err = buf_append(w->b, s, n);
}

void proto_put_bytes(struct proto_writer *w, const void *p, uint32_t n)
{
    proto_put_u32(w, n);
    if (!w->err && n)
        w->err = buf_append(w->b, p, n);
}

int proto_end(struct proto_writer *w)
{
    if (!w->err && w->b->len - w->start - 4 > UINT32_MAX)
        w->err = FERRY_ETOOBIG;
    if (w->err) {
        if (w->b->len > w->start)
            w->b->len = w->start;
        return w->err;
    }
    put_u32(w->b->data + w->start, (uint32_t)(w->b->len - w->start - 4));
    return 0;
}

/* ---- reader ---- */

void proto_reader_init(struct proto_reader *r, const uint8_t *body, size_t len)
{
    r->p = body;
    r->len = len;
    r->pos = 0;
    r->err = 0;
}

static const uint8_t *take(struct proto_reader *r, size_t n)
{
    if (r->err || n > r->len - r->pos) {
        r->err = FERRY_EPROTO;
        return NULL;
    }
    const uint8_t *p = r->p + r->pos;
    r->pos += n;
    return p;
}

uint8_t proto_get_u8(struct proto_reader *r)
{
    const uint8_t *p = take(r, 1);
    return p ? p[0] : 0;
}

uint16_t proto_get_u16(struct proto_reader *r)
{
    const uint8_t *p = take(r, 2);
    return p ? get_u16(p) : 0;
}

uint32_t proto_get_u32(struct proto_reader *r)
{
    const uint8_t *p = take(r, 4);
    return p ? get_u32(p) : 0;
}

uint64_t proto_get_u64(struct proto_reader *r)
{
    const uint8_t *p = take(r, 8);
    return p ? get_u64(p) : 0;
}

void proto_get_str(struct proto_reader *r, char *out, size_t cap)
{
    uint16_t n = proto_get_u16(r);
    const uint8_t *p = take(r, n);
    if (p == NULL || n >= cap || memchr(p, '\0', n) != NULL) {
        r->err = FERRY_EPROTO;
        if (cap)
            out[0] = '\0';
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

void proto_get_bytes(struct proto_reader *r, const uint8_t **p, uint32_t *n)
{
    *n = proto_get_u32(r);
    *p = take(r, *n);
    if (*p == NULL)
        *n = 0;
}

/* ---- typed encoders ---- */

int proto_encode_empty(struct buf *b, uint8_t op, uint16_t flags, uint32_t req)
{
    struct proto_writer w;
    proto_begin(&w, b, op, flags, req);
    return proto_end(&w);
}

int proto_encode_hello(struct buf *b, uint32_t req, const struct proto_hello *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_HELLO, m->flags, req);
    proto_put_str(&w, m->client_name);
    if (!w.err)
        w.err = buf_append(b, m->producer_id, sizeof m->producer_id);
    return proto_end(&w);
}

int proto_encode_hello_ok(struct buf *b, uint32_t req, const struct proto_hello_ok *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_HELLO_OK, 0, req);
    proto_put_u8(&w, m->version);
    proto_put_str(&w, m->server_version);
    proto_put_u64(&w, m->node_id);
    proto_put_u32(&w, m->max_frame);
    proto_put_u32(&w, m->max_message);
    proto_put_str(&w, m->role);
    uint16_t n = m->endpoint_count > PROTO_MAX_ENDPOINTS ? PROTO_MAX_ENDPOINTS : m->endpoint_count;
    proto_put_u16(&w, n);
    for (uint16_t i = 0; i < n; i++)
        proto_put_str(&w, m->endpoints[i]);
    return proto_end(&w);
}

int proto_encode_publish(struct buf *b, uint8_t op, uint32_t req, const struct proto_publish *m)
{
    struct proto_writer w;
    proto_begin(&w, b, op, 0, req);
    proto_put_str(&w, m->name);
    proto_put_u8(&w, m->pflags);
    proto_put_u64(&w, m->producer_seq);
    proto_put_bytes(&w, m->payload, m->payload_len);
    return proto_end(&w);
}

int proto_encode_id(struct buf *b, uint8_t op, uint16_t flags, uint32_t req, uint64_t id)
{
    struct proto_writer w;
    proto_begin(&w, b, op, flags, req);
    proto_put_u64(&w, id);
    return proto_end(&w);
}

int proto_encode_name(struct buf *b, uint8_t op, uint32_t req, const char *name)
{
    struct proto_writer w;
    proto_begin(&w, b, op, 0, req);
    proto_put_str(&w, name);
    return proto_end(&w);
}

int proto_encode_subscribe(struct buf *b, uint32_t req, const struct proto_subscribe *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_SUBSCRIBE, 0, req);
    proto_put_str(&w, m->channel);
    proto_put_u8(&w, m->start);
    proto_put_u64(&w, m->from_id);
    proto_put_str(&w, m->durable);
    proto_put_u32(&w, m->window);
    return proto_end(&w);
}

int proto_encode_subscribe_ok(struct buf *b, uint32_t req, const struct proto_subscribe_ok *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_SUBSCRIBE_OK, 0, req);
    proto_put_u64(&w, m->sub_id);
    proto_put_u64(&w, m->next_event_id);
    return proto_end(&w);
}

int proto_encode_sub_ack(struct buf *b, uint16_t flags, uint32_t req, const struct proto_sub_ack *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_SUB_ACK, flags, req);
    proto_put_u64(&w, m->sub_id);
    proto_put_u64(&w, m->event_id);
    return proto_end(&w);
}

int proto_encode_consume(struct buf *b, uint32_t req, const struct proto_consume *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_CONSUME, 0, req);
    proto_put_str(&w, m->queue);
    proto_put_u32(&w, m->prefetch);
    return proto_end(&w);
}

int proto_encode_ack(struct buf *b, uint8_t op, uint16_t flags, uint32_t req,
                     const struct proto_ack *m)
{
    struct proto_writer w;
    proto_begin(&w, b, op, flags, req);
    proto_put_u64(&w, m->consumer_id);
    proto_put_u64(&w, m->item_id);
    return proto_end(&w);
}

int proto_encode_create(struct buf *b, uint32_t req, const struct proto_create *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_CREATE, 0, req);
    proto_put_u8(&w, m->kind);
    proto_put_str(&w, m->name);
    proto_put_u64(&w, m->capacity);
    proto_put_u64(&w, m->ttl_ms);
    proto_put_u32(&w, m->max_deliveries);
    proto_put_str(&w, m->dlq);
    return proto_end(&w);
}

int proto_encode_durable_delete(struct buf *b, uint32_t req, const char *channel,
                                const char *durable)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_DURABLE_DELETE, 0, req);
    proto_put_str(&w, channel);
    proto_put_str(&w, durable);
    return proto_end(&w);
}

int proto_encode_admin(struct buf *b, uint32_t req, const struct proto_admin *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_ADMIN, 0, req);
    proto_put_u8(&w, m->action);
    proto_put_u32(&w, m->node_id);
    proto_put_u8(&w, m->priority);
    proto_put_str(&w, m->address);
    return proto_end(&w);
}

static void put_info(struct proto_writer *w, const struct proto_info *m)
{
    proto_put_u8(w, m->kind);
    proto_put_str(w, m->name);
    proto_put_u64(w, m->capacity);
    proto_put_u64(w, m->ttl_ms);
    proto_put_u32(w, m->max_deliveries);
    proto_put_str(w, m->dlq);
    proto_put_u64(w, m->count);
    proto_put_u64(w, m->first_id);
    proto_put_u64(w, m->last_id);
    proto_put_u32(w, m->clients);
    proto_put_u64(w, m->unacked);
}

int proto_encode_info_ok(struct buf *b, uint32_t req, const struct proto_info *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_INFO_OK, 0, req);
    put_info(&w, m);
    return proto_end(&w);
}

int proto_encode_list_ok(struct buf *b, uint32_t req, const struct proto_info *items,
                         uint32_t count)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_LIST_OK, 0, req);
    proto_put_u32(&w, count);
    for (uint32_t i = 0; i < count; i++)
        put_info(&w, &items[i]);
    return proto_end(&w);
}

int proto_encode_status_ok(struct buf *b, uint32_t req, const struct proto_status *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_STATUS_OK, 0, req);
    uint16_t n = m->count > PROTO_MAX_KV ? PROTO_MAX_KV : m->count;
    proto_put_u16(&w, n);
    for (uint16_t i = 0; i < n; i++) {
        proto_put_str(&w, m->kv[i].key);
        proto_put_str(&w, m->kv[i].value);
    }
    return proto_end(&w);
}

int proto_encode_event(struct buf *b, const struct proto_event *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_EVENT, 0, 0);
    proto_put_u64(&w, m->sub_id);
    proto_put_u64(&w, m->event_id);
    proto_put_u64(&w, m->timestamp_ms);
    proto_put_u8(&w, m->eflags);
    proto_put_bytes(&w, m->payload, m->payload_len);
    return proto_end(&w);
}

int proto_encode_delivery(struct buf *b, const struct proto_delivery *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_DELIVERY, 0, 0);
    proto_put_u64(&w, m->consumer_id);
    proto_put_u64(&w, m->item_id);
    proto_put_u32(&w, m->delivery_count);
    proto_put_u64(&w, m->timestamp_ms);
    proto_put_bytes(&w, m->payload, m->payload_len);
    return proto_end(&w);
}

int proto_encode_sub_end(struct buf *b, const struct proto_sub_end *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_SUB_END, 0, 0);
    proto_put_u64(&w, m->id);
    proto_put_u32(&w, (uint32_t)m->code);
    proto_put_str(&w, m->message);
    return proto_end(&w);
}

int proto_encode_error(struct buf *b, uint32_t req, const struct proto_error *m)
{
    struct proto_writer w;
    proto_begin(&w, b, PROTO_ERROR, 0, req);
    proto_put_u32(&w, (uint32_t)m->code);
    proto_put_str(&w, m->message);
    proto_put_str(&w, m->leader);
    return proto_end(&w);
}

/* ---- typed decoders ---- */

#define READER(body, len)                                                      \
    struct proto_reader r_;                                                    \
    proto_reader_init(&r_, (body), (len));                                     \
    struct proto_reader *r = &r_

int proto_decode_hello(const uint8_t *body, size_t len, struct proto_hello *m)
{
    READER(body, len);
    proto_get_str(r, m->client_name, sizeof m->client_name);
    const uint8_t *p = take(r, sizeof m->producer_id);
    if (p)
        memcpy(m->producer_id, p, sizeof m->producer_id);
    return r->err;
}

int proto_decode_hello_ok(const uint8_t *body, size_t len, struct proto_hello_ok *m)
{
    READER(body, len);
    m->version = proto_get_u8(r);
    proto_get_str(r, m->server_version, sizeof m->server_version);
    m->node_id = proto_get_u64(r);
    m->max_frame = proto_get_u32(r);
    m->max_message = proto_get_u32(r);
    proto_get_str(r, m->role, sizeof m->role);
    m->endpoint_count = proto_get_u16(r);
    if (m->endpoint_count > PROTO_MAX_ENDPOINTS)
        return FERRY_EPROTO;
    for (uint16_t i = 0; i < m->endpoint_count; i++)
        proto_get_str(r, m->endpoints[i], sizeof m->endpoints[i]);
    return r->err;
}

int proto_decode_publish(const uint8_t *body, size_t len, struct proto_publish *m)
{
    READER(body, len);
    proto_get_str(r, m->name, sizeof m->name);
    m->pflags = proto_get_u8(r);
    m->producer_seq = proto_get_u64(r);
    proto_get_bytes(r, &m->payload, &m->payload_len);
    return r->err;
}

int proto_decode_id(const uint8_t *body, size_t len, uint64_t *id)
{
    READER(body, len);
    *id = proto_get_u64(r);
    return r->err;
}

int proto_decode_name(const uint8_t *body, size_t len, char *name, size_t cap)
{
    READER(body, len);
    proto_get_str(r, name, cap);
    return r->err;
}

int proto_decode_admin(const uint8_t *body, size_t len, struct proto_admin *m)
{
    READER(body, len);
    m->action = proto_get_u8(r);
    m->node_id = proto_get_u32(r);
    m->priority = proto_get_u8(r);
    proto_get_str(r, m->address, sizeof m->address);
    return r->err;
}

int proto_decode_subscribe(const uint8_t *body, size_t len, struct proto_subscribe *m)
{
    READER(body, len);
    proto_get_str(r, m->channel, sizeof m->channel);
    m->start = proto_get_u8(r);
    m->from_id = proto_get_u64(r);
    proto_get_str(r, m->durable, sizeof m->durable);
    m->window = proto_get_u32(r);
    return r->err;
}

int proto_decode_subscribe_ok(const uint8_t *body, size_t len, struct proto_subscribe_ok *m)
{
    READER(body, len);
    m->sub_id = proto_get_u64(r);
    m->next_event_id = proto_get_u64(r);
    return r->err;
}

int proto_decode_sub_ack(const uint8_t *body, size_t len, struct proto_sub_ack *m)
{
    READER(body, len);
    m->sub_id = proto_get_u64(r);
    m->event_id = proto_get_u64(r);
    return r->err;
}

int proto_decode_consume(const uint8_t *body, size_t len, struct proto_consume *m)
{
    READER(body, len);
    proto_get_str(r, m->queue, sizeof m->queue);
    m->prefetch = proto_get_u32(r);
    return r->err;
}

int proto_decode_ack(const uint8_t *body, size_t len, struct proto_ack *m)
{
    READER(body, len);
    m->consumer_id = proto_get_u64(r);
    m->item_id = proto_get_u64(r);
    return r->err;
}

int proto_decode_create(const uint8_t *body, size_t len, struct proto_create *m)
{
    READER(body, len);
    m->kind = proto_get_u8(r);
    proto_get_str(r, m->name, sizeof m->name);
    m->capacity = proto_get_u64(r);
    m->ttl_ms = proto_get_u64(r);
    m->max_deliveries = proto_get_u32(r);
    proto_get_str(r, m->dlq, sizeof m->dlq);
    return r->err;
}

int proto_decode_durable_delete(const uint8_t *body, size_t len, char *channel, char *durable)
{
    READER(body, len);
    proto_get_str(r, channel, PROTO_NAME_MAX + 1);
    proto_get_str(r, durable, PROTO_NAME_MAX + 1);
    return r->err;
}

int proto_decode_info(struct proto_reader *r, struct proto_info *m)
{
    m->kind = proto_get_u8(r);
    proto_get_str(r, m->name, sizeof m->name);
    m->capacity = proto_get_u64(r);
    m->ttl_ms = proto_get_u64(r);
    m->max_deliveries = proto_get_u32(r);
    proto_get_str(r, m->dlq, sizeof m->dlq);
    m->count = proto_get_u64(r);
    m->first_id = proto_get_u64(r);
    m->last_id = proto_get_u64(r);
    m->clients = proto_get_u32(r);
    m->unacked = proto_get_u64(r);
    return r->err;
}

int proto_decode_info_ok(const uint8_t *body, size_t len, struct proto_info *m)
{
    READER(body, len);
    return proto_decode_info(r, m);
}

int proto_decode_list_ok(const uint8_t *body, size_t len, struct proto_reader *r, uint32_t *count)
{
    proto_reader_init(r, body, len);
    *count = proto_get_u32(r);
    return r->err;
}

int proto_decode_status_ok(const uint8_t *body, size_t len, struct proto_status *m)
{
    READER(body, len);
    m->count = proto_get_u16(r);
    if (m->count > PROTO_MAX_KV)
        return FERRY_EPROTO;
    for (uint16_t i = 0; i < m->count; i++) {
        proto_get_str(r, m->kv[i].key, sizeof m->kv[i].key);
        proto_get_str(r, m->kv[i].value, sizeof m->kv[i].value);
    }
    return r->err;
}

int proto_decode_event(const uint8_t *body, size_t len, struct proto_event *m)
{
    READER(body, len);
    m->sub_id = proto_get_u64(r);
    m->event_id = proto_get_u64(r);
    m->timestamp_ms = proto_get_u64(r);
    m->eflags = proto_get_u8(r);
    proto_get_bytes(r, &m->payload, &m->payload_len);
    return r->err;
}

int proto_decode_delivery(const uint8_t *body, size_t len, struct proto_delivery *m)
{
    READER(body, len);
    m->consumer_id = proto_get_u64(r);
    m->item_id = proto_get_u64(r);
    m->delivery_count = proto_get_u32(r);
    m->timestamp_ms = proto_get_u64(r);
    proto_get_bytes(r, &m->payload, &m->payload_len);
    return r->err;
}

int proto_decode_sub_end(const uint8_t *body, size_t len, struct proto_sub_end *m)
{
    READER(body, len);
    m->id = proto_get_u64(r);
    m->code = (int32_t)proto_get_u32(r);
    proto_get_str(r, m->message, sizeof m->message);
    return r->err;
}

int proto_decode_error(const uint8_t *body, size_t len, struct proto_error *m)
{
    READER(body, len);
    m->code = (int32_t)proto_get_u32(r);
    proto_get_str(r, m->message, sizeof m->message);
    proto_get_str(r, m->leader, sizeof m->leader);
    return r->err;
}

int proto_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > PROTO_NAME_MAX)
        return FERRY_EINVAL;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == '-' || c == ':' || c == '/';
        if (!ok)
            return FERRY_EINVAL;
    }
    return 0;
}
