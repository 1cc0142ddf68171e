/* proto/proto.h - the client wire format, shared by ferryd and libferry.
 *
 * docs/protocol.md is the specification; this header is its C face. A frame
 * is a 12-byte header followed by a body:
 *
 *   offset size field
 *   0      4    length      bytes after this field (8 + body), big-endian
 *   4      1    version     PROTO_VERSION
 *   5      1    op          enum proto_op
 *   6      2    flags       PROTO_F_*
 *   8      4    request_id  chosen by the client; echoed in the reply
 *   12     ...  body        fields in the order given per op below
 *
 * Body fields: u8/u16/u32/u64 big-endian; `str` = u16 length + bytes (no NUL);
 * `bytes` = u32 length + bytes. Decoders accept (and ignore) trailing bytes
 * after the last known field, so later versions may append fields.
 *
 * Encoders append one whole frame to a struct buf. Decoders read a body and
 * fill a struct whose strings are copied into fixed arrays (NUL-terminated)
 * and whose payloads point into the frame (valid while the frame is).
 */
#ifndef FERRY_PROTO_H
#define FERRY_PROTO_H

#include "util/buf.h"
#include <ferry/status.h>
#include <stdint.h>
#include <stddef.h>

#define PROTO_VERSION 1
#define PROTO_HEADER_SIZE 12
#define PROTO_NAME_MAX 255          /* resource, durable and client names */
#define PROTO_TEXT_MAX 1023         /* error messages, status values, addresses */
#define PROTO_MAX_FRAME_MIN 4096
#define PROTO_MAX_ENDPOINTS 64
#define PROTO_MAX_KV 128

/* Header flags. */
#define PROTO_F_NOREPLY 0x0001u /* ACK/NACK/SUB_ACK: send no OK (errors are still sent) */
#define PROTO_F_ANY_NODE 0x0002u /* HELLO: a monitoring session, accepted on any node (STATUS, PING) */
#define PROTO_F_DIGEST 0x0004u   /* STATUS: include the digest of the replicated state */
#define PROTO_F_DUPLICATE 0x0008u /* PUBLISH_OK: already stored (a retried publish); the id is the original's */

enum proto_op {
    /* requests (client -> server) */
    PROTO_HELLO = 0x01,
    PROTO_PING = 0x02,
    PROTO_PUBLISH = 0x10,
    PROTO_PUSH = 0x11,
    PROTO_SUBSCRIBE = 0x12,
    PROTO_UNSUBSCRIBE = 0x13,
    PROTO_SUB_ACK = 0x14,
    PROTO_CONSUME = 0x15,
    PROTO_CANCEL = 0x16,
    PROTO_ACK = 0x17,
    PROTO_NACK = 0x18,
    PROTO_CREATE = 0x20,
    PROTO_DELETE = 0x21,
    PROTO_LIST = 0x22,
    PROTO_INFO = 0x23,
    PROTO_STATUS = 0x24,
    PROTO_DURABLE_DELETE = 0x25,
    PROTO_ADMIN = 0x30, /* cluster administration (struct proto_admin); reply OK */
    /* replies (server -> client, request_id echoed) */
    PROTO_OK = 0x80,
    PROTO_HELLO_OK = 0x81,
    PROTO_PONG = 0x82,
    PROTO_PUBLISH_OK = 0x90, /* also the reply to PUSH */
    PROTO_SUBSCRIBE_OK = 0x91,
    PROTO_CONSUME_OK = 0x92,
    PROTO_LIST_OK = 0x93,
    PROTO_INFO_OK = 0x94,
    PROTO_STATUS_OK = 0x95,
    /* server pushes (request_id 0) */
    PROTO_EVENT = 0xA0,
    PROTO_DELIVERY = 0xA1,
    PROTO_SUB_END = 0xA2,
    PROTO_ERROR = 0xFF,
};

/* Name of an op ("PUBLISH"), or "UNKNOWN". */
const char *proto_op_name(uint8_t op);

enum proto_kind { PROTO_KIND_CHANNEL = 1, PROTO_KIND_QUEUE = 2 };

enum proto_start {
    PROTO_START_NEW = 0,    /* only events published after the subscription */
    PROTO_START_FROM = 1,   /* from event id `from_id` (or the oldest retained if older) */
    PROTO_START_OLDEST = 2, /* from the oldest retained event */
    PROTO_START_DURABLE = 3 /* named durable subscription; resumes after its cursor */
};

#define PROTO_PUB_TRANSIENT 0x01 /* PUBLISH flags: deliver to live subscribers only */

struct proto_header {
    uint32_t length; /* bytes after the length field */
    uint8_t version;
    uint8_t op;
    uint16_t flags;
    uint32_t request_id;
};

/* Frame detection on a receive buffer.
 * Returns 0 with *h and *frame_len (header + body, including the length field)
 * when a whole frame is at p; FERRY_EAGAIN if more bytes are needed;
 * FERRY_ETOOBIG if the announced length exceeds max_frame; FERRY_EPROTO for a
 * length below the header size; FERRY_EVERSION for an unknown version. The
 * header is validated as soon as its 12 bytes are present, so an oversized
 * frame is rejected before its body arrives. */
int proto_frame_check(const uint8_t *p, size_t n, uint32_t max_frame, struct proto_header *h,
                      size_t *frame_len);

/* --- low-level writer/reader (for the typed codecs and tests) --- */
struct proto_writer {
    struct buf *b;
    size_t start;
    int err;
};
void proto_begin(struct proto_writer *w, struct buf *b, uint8_t op, uint16_t flags,
                 uint32_t request_id);
void proto_put_u8(struct proto_writer *w, uint8_t v);
void proto_put_u16(struct proto_writer *w, uint16_t v);
void proto_put_u32(struct proto_writer *w, uint32_t v);
void proto_put_u64(struct proto_writer *w, uint64_t v);
void proto_put_str(struct proto_writer *w, const char *s);
void proto_put_bytes(struct proto_writer *w, const void *p, uint32_t n);
/* Patch the length; 0 or the first error (the buffer is rolled back on error). */
int proto_end(struct proto_writer *w);

struct proto_reader {
    const uint8_t *p;
    size_t len;
    size_t pos;
    int err; /* FERRY_EPROTO once any read ran past the end or a string was too long */
};
void proto_reader_init(struct proto_reader *r, const uint8_t *body, size_t len);
uint8_t proto_get_u8(struct proto_reader *r);
uint16_t proto_get_u16(struct proto_reader *r);
uint32_t proto_get_u32(struct proto_reader *r);
uint64_t proto_get_u64(struct proto_reader *r);
/* Copy a str into out[cap] NUL-terminated; too long for cap -> EPROTO. */
void proto_get_str(struct proto_reader *r, char *out, size_t cap);
void proto_get_bytes(struct proto_reader *r, const uint8_t **p, uint32_t *n);

/* --- typed messages --- */

struct proto_hello { /* HELLO */
    uint16_t flags; /* header flags: PROTO_F_ANY_NODE */
    char client_name[PROTO_NAME_MAX + 1];
    uint8_t producer_id[16]; /* all zero: none (dedup arrives with idempotent producers) */
};

struct proto_hello_ok { /* HELLO_OK */
    uint8_t version;
    char server_version[PROTO_NAME_MAX + 1];
    uint64_t node_id;
    uint32_t max_frame;
    uint32_t max_message;
    char role[32];
    uint16_t endpoint_count;
    char endpoints[PROTO_MAX_ENDPOINTS][PROTO_NAME_MAX + 1]; /* client addresses of members */
};

struct proto_publish { /* PUBLISH and PUSH (PUSH ignores pflags) */
    char name[PROTO_NAME_MAX + 1];
    uint8_t pflags;        /* PROTO_PUB_* */
    uint64_t producer_seq; /* 0 = none */
    const uint8_t *payload;
    uint32_t payload_len;
};

struct proto_subscribe { /* SUBSCRIBE */
    char channel[PROTO_NAME_MAX + 1];
    uint8_t start;     /* enum proto_start */
    uint64_t from_id;  /* PROTO_START_FROM */
    char durable[PROTO_NAME_MAX + 1]; /* PROTO_START_DURABLE */
    uint32_t window;   /* max unacked events for a durable subscription; 0 = server default */
};

struct proto_subscribe_ok {
    uint64_t sub_id;
    uint64_t next_event_id; /* id the next delivered event will have at least */
};

struct proto_sub_ack { /* SUB_ACK: cumulative, all events <= event_id */
    uint64_t sub_id;
    uint64_t event_id;
};

struct proto_consume { /* CONSUME */
    char queue[PROTO_NAME_MAX + 1];
    uint32_t prefetch; /* max unacked deliveries; 0 = server default */
};

struct proto_ack { /* ACK and NACK */
    uint64_t consumer_id;
    uint64_t item_id;
};

struct proto_create { /* CREATE */
    uint8_t kind; /* enum proto_kind */
    char name[PROTO_NAME_MAX + 1];
    uint64_t capacity;       /* 0 = unlimited */
    uint64_t ttl_ms;         /* 0 = never expires */
    uint32_t max_deliveries; /* queues; 0 = server default */
    char dlq[PROTO_NAME_MAX + 1]; /* queues; "" = "<name>.dlq" */
};

struct proto_info { /* one record of INFO_OK / LIST_OK */
    uint8_t kind;
    char name[PROTO_NAME_MAX + 1];
    uint64_t capacity;
    uint64_t ttl_ms;
    uint32_t max_deliveries;
    char dlq[PROTO_NAME_MAX + 1];
    uint64_t count;    /* stored, unexpired messages */
    uint64_t first_id; /* oldest retained event / item id (0 if none) */
    uint64_t last_id;  /* newest assigned id (0 if none) */
    uint32_t clients;  /* live subscribers or consumers */
    uint64_t unacked;  /* deliveries in flight */
};

enum proto_admin_action {
    PROTO_ADMIN_TRANSFER = 1,    /* hand leadership to node_id (0: the best caught-up voter) */
    PROTO_ADMIN_ADD_NODE = 2,    /* add node_id at address as a learner with priority */
    PROTO_ADMIN_REMOVE_NODE = 3, /* remove node_id from the configuration */
    PROTO_ADMIN_SNAPSHOT = 4,    /* take a snapshot at the applied index now */
};

struct proto_admin {                  /* ADMIN */
    uint8_t action;                   /* enum proto_admin_action */
    uint32_t node_id;                 /* 0: none (or the best, for TRANSFER) */
    uint8_t priority;                 /* ADD_NODE: election priority, 0 = witness */
    char address[PROTO_NAME_MAX + 1]; /* ADD_NODE: replication host:port, else "" */
};

struct proto_kv {
    char key[PROTO_NAME_MAX + 1];
    char value[PROTO_TEXT_MAX + 1];
};

struct proto_status { /* STATUS_OK */
    uint16_t count;
    struct proto_kv kv[PROTO_MAX_KV];
};

struct proto_event { /* EVENT */
    uint64_t sub_id;
    uint64_t event_id; /* 0 for transient events */
    uint64_t timestamp_ms;
    uint8_t eflags; /* PROTO_PUB_TRANSIENT */
    const uint8_t *payload;
    uint32_t payload_len;
};

struct proto_delivery { /* DELIVERY */
    uint64_t consumer_id;
    uint64_t item_id;
    uint32_t delivery_count; /* 1 on first delivery */
    uint64_t timestamp_ms;
    const uint8_t *payload;
    uint32_t payload_len;
};

struct proto_sub_end { /* SUB_END: a subscription or consumer ended by the server */
    uint64_t id;
    int32_t code;
    char message[PROTO_TEXT_MAX + 1];
};

struct proto_error { /* ERROR */
    int32_t code; /* FERRY_E* */
    char message[PROTO_TEXT_MAX + 1];
    char leader[PROTO_NAME_MAX + 1]; /* ENOTLEADER: leader's client address, else "" */
};

/* Encoders append one frame to b; 0 or FERRY_ENOMEM / FERRY_EINVAL (b unchanged on error). */
int proto_encode_empty(struct buf *b, uint8_t op, uint16_t flags, uint32_t req);
int proto_encode_hello(struct buf *b, uint32_t req, const struct proto_hello *m);
int proto_encode_hello_ok(struct buf *b, uint32_t req, const struct proto_hello_ok *m);
int proto_encode_publish(struct buf *b, uint8_t op, uint32_t req, const struct proto_publish *m);
int proto_encode_id(struct buf *b, uint8_t op, uint16_t flags, uint32_t req, uint64_t id);
int proto_encode_name(struct buf *b, uint8_t op, uint32_t req, const char *name);
int proto_encode_subscribe(struct buf *b, uint32_t req, const struct proto_subscribe *m);
int proto_encode_subscribe_ok(struct buf *b, uint32_t req, const struct proto_subscribe_ok *m);
int proto_encode_sub_ack(struct buf *b, uint16_t flags, uint32_t req, const struct proto_sub_ack *m);
int proto_encode_consume(struct buf *b, uint32_t req, const struct proto_consume *m);
int proto_encode_ack(struct buf *b, uint8_t op, uint16_t flags, uint32_t req,
                     const struct proto_ack *m);
int proto_encode_create(struct buf *b, uint32_t req, const struct proto_create *m);
int proto_encode_durable_delete(struct buf *b, uint32_t req, const char *channel,
                                const char *durable);
int proto_encode_admin(struct buf *b, uint32_t req, const struct proto_admin *m);
int proto_encode_info_ok(struct buf *b, uint32_t req, const struct proto_info *m);
int proto_encode_list_ok(struct buf *b, uint32_t req, const struct proto_info *items,
                         uint32_t count);
int proto_encode_status_ok(struct buf *b, uint32_t req, const struct proto_status *m);
int proto_encode_event(struct buf *b, const struct proto_event *m);
int proto_encode_delivery(struct buf *b, const struct proto_delivery *m);
int proto_encode_sub_end(struct buf *b, const struct proto_sub_end *m);
int proto_encode_error(struct buf *b, uint32_t req, const struct proto_error *m);

/* Decoders read a body (the bytes after the 12-byte header); 0 or FERRY_EPROTO. */
int proto_decode_hello(const uint8_t *body, size_t len, struct proto_hello *m);
int proto_decode_hello_ok(const uint8_t *body, size_t len, struct proto_hello_ok *m);
int proto_decode_publish(const uint8_t *body, size_t len, struct proto_publish *m);
int proto_decode_id(const uint8_t *body, size_t len, uint64_t *id);
int proto_decode_name(const uint8_t *body, size_t len, char *name, size_t cap);
int proto_decode_subscribe(const uint8_t *body, size_t len, struct proto_subscribe *m);
int proto_decode_subscribe_ok(const uint8_t *body, size_t len, struct proto_subscribe_ok *m);
int proto_decode_sub_ack(const uint8_t *body, size_t len, struct proto_sub_ack *m);
int proto_decode_consume(const uint8_t *body, size_t len, struct proto_consume *m);
int proto_decode_ack(const uint8_t *body, size_t len, struct proto_ack *m);
int proto_decode_create(const uint8_t *body, size_t len, struct proto_create *m);
int proto_decode_durable_delete(const uint8_t *body, size_t len, char *channel, char *durable);
int proto_decode_admin(const uint8_t *body, size_t len, struct proto_admin *m);
int proto_decode_info(struct proto_reader *r, struct proto_info *m);
int proto_decode_info_ok(const uint8_t *body, size_t len, struct proto_info *m);
/* LIST_OK: the count; then call proto_decode_info on the reader for each record. */
int proto_decode_list_ok(const uint8_t *body, size_t len, struct proto_reader *r,
                         uint32_t *count);
int proto_decode_status_ok(const uint8_t *body, size_t len, struct proto_status *m);
int proto_decode_event(const uint8_t *body, size_t len, struct proto_event *m);
int proto_decode_delivery(const uint8_t *body, size_t len, struct proto_delivery *m);
int proto_decode_sub_end(const uint8_t *body, size_t len, struct proto_sub_end *m);
int proto_decode_error(const uint8_t *body, size_t len, struct proto_error *m);

/* Resource names: 1..255 bytes of [A-Za-z0-9._-:/]; 0 or FERRY_EINVAL. */
int proto_name_valid(const char *name);

#endif
