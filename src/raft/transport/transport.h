/* raft/transport/transport.h - node-to-node links for Ferry's Raft over libuv.
 *
 * Every node dials every other member and sends only on its own outbound
 * connection; connections a node accepts are receive-only. So each pair of
 * nodes uses two TCP connections, one per direction, and no tie-break rule is
 * needed when both dial at once (docs/raft-transport.md).
 *
 * Wire format: frames of [u32 length][u8 kind][payload], big-endian, where
 * length counts the kind byte and the payload. The dialer's first frame is a
 * HELLO carrying magic, protocol version, cluster id (u64) and its node id
 * (u32). The acceptor answers ACCEPT (its own node id) or a REFUSE frame with
 * a one-line reason and closes. Then the dialer sends MSG frames whose payload
 * is opaque to the transport (the driver puts raft_msg_encode output there).
 *
 * The transport never calls a callback from inside the call that started the
 * operation (init, start, send, close): callbacks run from the loop.
 *
 * Ownership: the caller owns struct rtransport and may free it only after the
 * close callback ran. Configuration strings are copied by rtransport_init.
 */
#ifndef FERRY_RAFT_TRANSPORT_H
#define FERRY_RAFT_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "tls/tls.h"
#include "util/err.h"
#include "util/list.h"
#include "util/rand.h"

#define RTRANSPORT_MAGIC 0x46525254u /* "FRRT" */
#define RTRANSPORT_VERSION 1
/* Bytes of [u32 length][u8 kind] before every payload. */
#define RTRANSPORT_FRAME_HEADER 5

/* Why this node closed a connection it accepted. Counted in rtransport_stats. */
enum rtransport_reject {
    RTRANSPORT_REJECT_MALFORMED = 0,    /* not a handshake, or a frame that cannot be valid */
    RTRANSPORT_REJECT_VERSION = 1,      /* protocol version this node does not speak */
    RTRANSPORT_REJECT_CLUSTER = 2,      /* another cluster id */
    RTRANSPORT_REJECT_UNKNOWN_NODE = 3, /* node id not a configured member */
    RTRANSPORT_REJECT_ADDRESS = 4,   /* verify_ip on and the source address is not the member's */
    RTRANSPORT_REJECT_OVERSIZED = 5, /* frame larger than frame_bytes_max */
    RTRANSPORT_REJECT_TIMEOUT = 6,   /* no complete HELLO within handshake_timeout_ms */
    RTRANSPORT_REJECT_TLS = 7,       /* TLS handshake failed: not TLS, no or untrusted certificate */
    RTRANSPORT_REJECT_IDENTITY = 8,  /* the certificate does not name the node id claimed */
    RTRANSPORT_REJECT_COUNT = 9
};

/* Short name of a reject reason ("cluster"); never NULL. */
const char *rtransport_reject_name(int reason);

struct rtransport_member {
    uint32_t id;      /* non-zero */
    const char *host; /* name or address; resolved once by rtransport_start */
    uint16_t port;
};

struct rtransport_config {
    uint64_t cluster_id;
    uint32_t self_id; /* must be one of members */
    const char *listen_host;
    uint16_t listen_port;    /* 0: any free port (rtransport_port tells which) */
    const char *source_host; /* NULL: the OS picks the source address of dials */
    const struct rtransport_member *members;
    uint32_t n_members;            /* at most RTRANSPORT_MAX_MEMBERS, self included */
    uint32_t frame_bytes_max;      /* largest frame, header included; 0: 32 MiB + 64 KiB */
    size_t send_queue_bytes_max;   /* unsent bytes per peer; >= frame_bytes_max; 0: 2 frames */
    uint32_t redial_ms_min;        /* first redial delay; 0: 50 */
    uint32_t redial_ms_max;        /* cap of the exponential backoff; 0: 2000 */
    uint32_t connect_timeout_ms;   /* dial to ACCEPT; 0: 3000 */
    uint32_t handshake_timeout_ms; /* accepted connection to its whole HELLO; 0: 3000 */
    int verify_ip;                 /* verify_replication_node_ip */
    uint64_t seed;                 /* jitter of the redial backoff */
    /* TLS (both or neither; docs/tls.md). Accepted connections use tls_accept
     * (server role, requiring a client certificate); dials use tls_dial
     * (client role) and accept only a certificate naming ferry-node-<id> of
     * the member dialled. The acceptor checks, at HELLO, that the dialer's
     * certificate names the node id it claims. The caller keeps both
     * contexts alive until the transport is closed or they are replaced. */
    struct tls_ctx *tls_accept;
    struct tls_ctx *tls_dial;
};

#define RTRANSPORT_MAX_MEMBERS 64

struct rtransport;

struct rtransport_callbacks {
    /* A MSG frame from member `from`; bytes are valid only during the call.
     * Messages from one sender arrive in the order it sent them. */
    void (*on_message)(struct rtransport *t, uint32_t from, const uint8_t *bytes, size_t len);
    /* The outbound connection to `id` completed its handshake. */
    void (*on_peer_up)(struct rtransport *t, uint32_t id);
    /* An established outbound connection to `id` was lost (reset, closed by
     * the peer, write error). Not called for rtransport_close. The driver
     * decides whether `id` was its leader and starts a pre-vote if so. */
    void (*on_peer_down)(struct rtransport *t, uint32_t id);
};

typedef void (*rtransport_close_cb)(struct rtransport *t);

struct rtransport_peer_stats {
    uint32_t id;
    int connected;       /* outbound link handshaken and usable */
    int inbound;         /* an identified inbound link from this peer is open */
    uint64_t msgs_sent;  /* written to the socket */
    uint64_t bytes_sent; /* payload bytes of msgs_sent */
    uint64_t msgs_recv;
    uint64_t bytes_recv;
    uint64_t drops;           /* send() refused with FERRY_EBUSY (queue full) */
    uint64_t lost;            /* accepted by send() but lost with a failed connection */
    uint64_t dials;           /* connection attempts */
    uint64_t refused_by_peer; /* REFUSE frames received from this peer */
    uint64_t tls_failed;      /* dials whose TLS handshake failed (certificate, alert) */
    size_t queued_bytes;      /* unsent bytes, in the queue and in flight */
};

struct rtransport_stats {
    uint64_t accepted;                          /* inbound handshakes accepted */
    uint64_t rejected[RTRANSPORT_REJECT_COUNT]; /* inbound connections closed, by reason */
    char last_reject[200];                      /* the last reason logged, "" if none */
};

struct rtransport_peer; /* private */

struct rtransport {
    void *data; /* public: for the owner */
    /* private */
    uv_loop_t *loop;
    struct rtransport_callbacks cb;
    uint64_t cluster_id;
    uint32_t self_id;
    char *listen_host;
    uint16_t listen_port;
    char *source_host;
    struct sockaddr_storage source_addr;
    int has_source;
    uint32_t frame_bytes_max;
    size_t send_queue_bytes_max;
    uint32_t redial_ms_min;
    uint32_t redial_ms_max;
    uint32_t connect_timeout_ms;
    uint32_t handshake_timeout_ms;
    int verify_ip;
    struct tls_ctx *tls_accept;
    struct tls_ctx *tls_dial;
    struct rng rng;
    struct rtransport_peer *peers;
    uint32_t n_peers;
    uv_tcp_t listener;
    struct list conns; /* every open connection, both directions */
    unsigned handles;  /* libuv handles not yet closed */
    int started;
    int closing;
    rtransport_close_cb close_cb;
    uint8_t *scratch; /* read buffer handed to libuv */
    struct rtransport_stats stats;
};

/* Validate cfg and initialise t on loop. Copies cfg. On error (FERRY_EINVAL
 * with a message naming the setting, FERRY_ENOMEM) t needs no close;
 * on success it must be closed with rtransport_close before it is freed. */
int rtransport_init(struct rtransport *t, uv_loop_t *loop, const struct rtransport_config *cfg,
                    const struct rtransport_callbacks *cb, struct ferry_err *err);

/* Resolve member hosts (once), listen, and dial every peer. FERRY_ECONFIG
 * when a host does not resolve, FERRY_EIO when listening fails; the
 * transport must still be closed. */
int rtransport_start(struct rtransport *t, struct ferry_err *err);

/* Queue `len` bytes for `to` as one MSG frame; the bytes are copied.
 * FERRY_ENOTFOUND: not a peer. FERRY_ETOOBIG: larger than frame_bytes_max.
 * FERRY_EBUSY: the peer's queue is full; the message is dropped and counted.
 * FERRY_ECLOSED after rtransport_close. Messages queued while the peer is
 * unreachable are sent when a connection is up again. */
int rtransport_send(struct rtransport *t, uint32_t to, const void *bytes, size_t len);

/* Members can change while the transport runs (online membership changes).
 *
 * rtransport_add_member: dial a new member and accept its connections from
 * now on. Its host is resolved at once, synchronously (as at start-up).
 * Adding a member that exists with the same address does nothing; with
 * another address, its connections are closed and it is dialled anew.
 * FERRY_EINVAL (id 0, this node, no host or port), FERRY_ECONFIG (the host
 * does not resolve), FERRY_ELIMIT (RTRANSPORT_MAX_MEMBERS), FERRY_ECLOSED.
 *
 * rtransport_remove_member: close its connections (both directions), drop
 * its queue, stop dialling it, refuse its handshakes from now on. No
 * on_peer_down follows. FERRY_ENOTFOUND if it is not a member. */
int rtransport_add_member(struct rtransport *t, const struct rtransport_member *m,
                          struct ferry_err *err);
int rtransport_remove_member(struct rtransport *t, uint32_t id);

/* Close every connection and timer; pending writes are cancelled (their
 * messages count as lost). cb runs from the loop once all handles are closed;
 * t may be freed then. */
void rtransport_close(struct rtransport *t, rtransport_close_cb cb);

/* Use these TLS contexts for connections made from now on (certificate
 * reload); connections already up keep theirs. Both must be non-NULL when
 * the transport was started with TLS; a plaintext transport stays plaintext. */
void rtransport_set_tls(struct rtransport *t, struct tls_ctx *accept, struct tls_ctx *dial);

/* The port the listener is bound to (after a successful start). */
int rtransport_port(const struct rtransport *t, uint16_t *port);

/* Counters of one peer; FERRY_ENOTFOUND if `id` is not a peer. */
int rtransport_peer_stats(const struct rtransport *t, uint32_t id,
                          struct rtransport_peer_stats *out);

const struct rtransport_stats *rtransport_stats(const struct rtransport *t);

#endif
