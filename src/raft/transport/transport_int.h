/* raft/transport/transport_int.h - what the transport's files share: peers,
 * connections, frame kinds and the handshake helpers. Not for other modules. */
#ifndef FERRY_RAFT_TRANSPORT_INT_H
#define FERRY_RAFT_TRANSPORT_INT_H

#include "raft/transport/transport.h"
#include "util/buf.h"

#include <sys/socket.h>

#define LOG_MOD "rtransport"

enum frame_kind {
    FRAME_HELLO = 1,  /* dialer -> acceptor: handshake */
    FRAME_ACCEPT = 2, /* acceptor -> dialer: u32 acceptor node id */
    FRAME_REFUSE = 3, /* acceptor -> dialer: one line of text, then close */
    FRAME_MSG = 4,    /* dialer -> acceptor: opaque payload */
};

/* HELLO payload: u32 magic | u16 version | u64 cluster id | u32 node id */
#define HELLO_BYTES 18
/* Frames exchanged before a connection is handshaken are small; a larger
 * length there means the bytes are not a Ferry Raft handshake. */
#define HANDSHAKE_FRAME_MAX 512
#define REASON_MAX 200

enum conn_state {
    CONN_CONNECTING, /* outbound: waiting for the TCP connect */
    CONN_HANDSHAKE,  /* HELLO sent (outbound) or awaited (inbound) */
    CONN_READY,
    CONN_REFUSING, /* inbound: REFUSE frame in flight, closing after it */
    CONN_CLOSED,   /* uv_close called; freed in its callback */
};

struct conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* inbound only: the handshake deadline, then the REFUSE's */
    int open_handles; /* handles of this connection not yet closed (tcp, timer) */
    uv_connect_t creq;
    uv_write_t wreq;
    struct rtransport *t;
    struct rtransport_peer *peer; /* outbound: the peer dialled; inbound: once identified */
    uint32_t peer_gen;            /* peer->gen when peer was set (the slot may be reused) */
    int outbound;
    int was_up; /* outbound: was READY when it closed */
    enum conn_state state;
    struct buf rbuf;   /* received bytes not yet parsed into frames */
    struct buf wbuf;   /* bytes handed to libuv (while writing) */
    struct buf refuse; /* inbound: REFUSE frame waiting for a write in flight */
    struct tls_conn *tls; /* NULL on a plaintext transport */
    struct buf twbuf;     /* TLS: the ciphertext handed to libuv (wbuf is encrypted at once) */
    int writing;
    uint64_t wmsgs;    /* MSG frames in wbuf */
    uint64_t wpayload; /* their payload bytes */
    struct list link;  /* in t->conns */
    char name[64];     /* "peer 2" or the remote address, for logs */
};

/* A peer lives in a slot of t->peers (RTRANSPORT_MAX_MEMBERS of them, so
 * pointers stay valid). rtransport_remove_member empties the slot (active 0)
 * and bumps gen, so callbacks of its connections still closing see that
 * they belong to a peer that is gone (conn_peer). */
struct rtransport_peer {
    struct rtransport *t;
    int active;
    int timer_init; /* the slot's timer handle exists (closed by rtransport_close) */
    uint32_t gen;
    uint32_t id;
    char *host;
    uint16_t port;
    struct sockaddr_storage addr; /* resolved by rtransport_start */
    struct conn *out;             /* the outbound connection, NULL between dials */
    struct conn *in;              /* the identified inbound connection, if any */
    struct buf queue;             /* whole MSG frames not yet handed to libuv */
    uint64_t queue_msgs;
    uint64_t queue_payload;
    uv_timer_t timer; /* redial backoff, then connect timeout */
    uint32_t attempts;
    int up;
    struct rtransport_peer_stats stats;
};

/* transport.c */
struct rtransport_peer *transport_peer(const struct rtransport *t, uint32_t id);
/* The connection's peer if it is still the same member, else NULL. */
struct rtransport_peer *conn_peer(const struct conn *c);
void transport_handle_closed(struct rtransport *t);
void peer_flush(struct rtransport_peer *p);
void peer_schedule_redial(struct rtransport_peer *p);
void peer_connected(struct rtransport_peer *p);

/* conn.c */
struct conn *conn_new(struct rtransport *t, int outbound);
void conn_start_reading(struct conn *c);
/* TLS transports: give c its TLS session (verify_name: dials only). */
int conn_tls_init(struct conn *c, const char *verify_name);
void conn_arm_deadline(struct conn *c);
int conn_write(struct conn *c);
void conn_on_bytes(struct conn *c, const uint8_t *p, size_t n);
void conn_close(struct conn *c);
void conn_reject(struct conn *c, int reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void frame_put_header(struct buf *b, uint8_t kind, uint32_t payload_len);

/* handshake.c */
int handshake_hello(struct conn *c);
int handshake_on_hello(struct conn *c, uint8_t kind, const uint8_t *p, size_t n);
int handshake_on_reply(struct conn *c, uint8_t kind, const uint8_t *p, size_t n);

#endif
