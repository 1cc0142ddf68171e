/* handshake.c - the first frames of every connection.
 *
 *   HELLO  (dialer):   u32 magic "FRRT" | u16 version | u64 cluster id | u32 node id
 *   ACCEPT (acceptor): u32 acceptor node id
 *   REFUSE (acceptor): one line of text saying why, then the acceptor closes
 *
 * The acceptor checks, in order: the frame is a HELLO of the right size with
 * the magic (else "malformed"), the version, the cluster id, that the node id
 * is a configured member other than itself, with TLS that the dialer's
 * certificate names ferry-node-<id> (the chain was verified in the TLS
 * handshake), and with verify_ip that the connection comes from the
 * member's configured address. A connection whose
 * whole HELLO has not arrived within handshake_timeout_ms is refused too
 * ("timeout", conn.c). A new accepted link from a node replaces an older one
 * (the peer restarted or redialled). The dialer checks that ACCEPT names the
 * node it meant to reach.
 */
#include "raft/transport/transport_int.h"

#include "util/log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const char *const reject_names[RTRANSPORT_REJECT_COUNT] = {
    "malformed", "version", "cluster", "unknown-node", "address", "oversized", "timeout",
    "tls",       "identity",
};

const char *rtransport_reject_name(int reason)
{
    if (reason < 0 || reason >= RTRANSPORT_REJECT_COUNT)
        return "?";
    return reject_names[reason];
}

int handshake_hello(struct conn *c)
{
    struct rtransport *t = c->t;
    c->wbuf.len = 0;
    if (buf_reserve(&c->wbuf, RTRANSPORT_FRAME_HEADER + HELLO_BYTES) != 0) {
        conn_close(c);
        return FERRY_ENOMEM;
    }
    frame_put_header(&c->wbuf, FRAME_HELLO, HELLO_BYTES);
    uint8_t *p = c->wbuf.data + c->wbuf.len;
    put_u32(p, RTRANSPORT_MAGIC);
    put_u16(p + 4, RTRANSPORT_VERSION);
    put_u64(p + 6, t->cluster_id);
    put_u32(p + 14, t->self_id);
    c->wbuf.len += HELLO_BYTES;
    c->state = CONN_HANDSHAKE;
    return conn_write(c);
}

/* Whether a and b hold the same IP address (ports ignored); an IPv4 address
 * also matches its IPv4-mapped IPv6 form. */
static int same_ip(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    uint8_t ia[16], ib[16];
    const struct sockaddr_storage *s[2] = {a, b};
    uint8_t *out[2] = {ia, ib};
    for (int i = 0; i < 2; i++) {
        if (s[i]->ss_family == AF_INET) {
            static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
            memcpy(out[i], mapped, 12);
            memcpy(out[i] + 12, &((const struct sockaddr_in *)s[i])->sin_addr, 4);
        } else if (s[i]->ss_family == AF_INET6) {
            memcpy(out[i], &((const struct sockaddr_in6 *)s[i])->sin6_addr, 16);
        } else {
            return 0;
        }
    }
    return memcmp(ia, ib, 16) == 0;
}

static void addr_text(const struct sockaddr_storage *sa, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->ss_family == AF_INET)
        uv_ip4_name((const struct sockaddr_in *)sa, host, sizeof host);
    else if (sa->ss_family == AF_INET6)
        uv_ip6_name((const struct sockaddr_in6 *)sa, host, sizeof host);
    snprintf(out, n, "%s", host);
}

static int accept_peer(struct conn *c, struct rtransport_peer *p)
{
    struct rtransport *t = c->t;
    if (p->in != NULL) {
        log_info(LOG_MOD, "node %u connected again; closing its previous connection", p->id);
        conn_close(p->in);
    }
    p->in = c;
    p->stats.inbound = 1;
    c->peer = p;
    c->peer_gen = p->gen;
    c->state = CONN_READY;
    uv_timer_stop(&c->timer);
    t->stats.accepted++;
    snprintf(c->name, sizeof c->name, "node %u (inbound)", p->id);
    log_info(LOG_MOD, "accepted connection from node %u", p->id);
    c->wbuf.len = 0;
    if (buf_append_u32(&c->wbuf, 5) != 0 || buf_append_u8(&c->wbuf, FRAME_ACCEPT) != 0 ||
        buf_append_u32(&c->wbuf, t->self_id) != 0) {
        conn_close(c);
        return FERRY_ENOMEM;
    }
    return conn_write(c);
}

int handshake_on_hello(struct conn *c, uint8_t kind, const uint8_t *p, size_t n)
{
    struct rtransport *t = c->t;
    if (kind != FRAME_HELLO || n != HELLO_BYTES || get_u32(p) != RTRANSPORT_MAGIC) {
        conn_reject(c, RTRANSPORT_REJECT_MALFORMED, "not a Ferry Raft handshake");
        return FERRY_EPROTO;
    }
    uint16_t version = get_u16(p + 4);
    uint64_t cluster = get_u64(p + 6);
    uint32_t id = get_u32(p + 14);
    if (version != RTRANSPORT_VERSION) {
        conn_reject(c, RTRANSPORT_REJECT_VERSION,
                    "protocol version %u not supported (this node speaks %u)", version,
                    RTRANSPORT_VERSION);
        return FERRY_EVERSION;
    }
    if (cluster != t->cluster_id) {
        conn_reject(c, RTRANSPORT_REJECT_CLUSTER,
                    "the peer belongs to another cluster (cluster id %llx, this node's %llx: "
                    "cluster_name differs)",
                    (unsigned long long)cluster, (unsigned long long)t->cluster_id);
        return FERRY_EPROTO;
    }
    struct rtransport_peer *peer = transport_peer(t, id);
    if (peer == NULL) {
        conn_reject(c, RTRANSPORT_REJECT_UNKNOWN_NODE,
                    "node id %u is not a member of this cluster (cluster_membership)", id);
        return FERRY_EPROTO;
    }
    if (c->tls != NULL) {
        char identity[32], subject[160];
        snprintf(identity, sizeof identity, "ferry-node-%u", id);
        if (!tls_conn_peer_names(c->tls, identity)) {
            tls_conn_peer_subject(c->tls, subject, sizeof subject);
            conn_reject(c, RTRANSPORT_REJECT_IDENTITY,
                        "the peer says it is node %u but its certificate (%s) does not name %s",
                        id, subject, identity);
            return FERRY_EPROTO;
        }
    }
    if (t->verify_ip) {
        struct sockaddr_storage sa;
        int len = sizeof sa;
        int rc = uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&sa, &len);
        if (rc != 0 || !same_ip(&sa, &peer->addr)) {
            char got[INET6_ADDRSTRLEN + 1], want[INET6_ADDRSTRLEN + 1];
            if (rc == 0)
                addr_text(&sa, got, sizeof got);
            else
                snprintf(got, sizeof got, "?");
            addr_text(&peer->addr, want, sizeof want);
            conn_reject(c, RTRANSPORT_REJECT_ADDRESS,
                        "node %u connected from %s but its configured address is %s "
                        "(verify_replication_node_ip)",
                        id, got, want);
            return FERRY_EPROTO;
        }
    }
    return accept_peer(c, peer);
}

int handshake_on_reply(struct conn *c, uint8_t kind, const uint8_t *p, size_t n)
{
    struct rtransport_peer *peer = c->peer;
    if (c->state == CONN_HANDSHAKE && kind == FRAME_ACCEPT && n == 4) {
        uint32_t id = get_u32(p);
        if (id != peer->id) {
            log_warn(LOG_MOD, "%s:%u answered as node %u, not node %u; check cluster_membership",
                     peer->host, peer->port, id, peer->id);
            conn_close(c);
            return FERRY_EPROTO;
        }
        c->state = CONN_READY;
        peer_connected(peer);
        return 0;
    }
    if (kind == FRAME_REFUSE) {
        char why[REASON_MAX + 1];
        size_t k = n < REASON_MAX ? n : REASON_MAX;
        for (size_t i = 0; i < k; i++)
            why[i] = (p[i] >= 0x20 && p[i] < 0x7f) ? (char)p[i] : '?';
        why[k] = '\0';
        peer->stats.refused_by_peer++;
        log_warn(LOG_MOD, "node %u at %s:%u refused this node: %s", peer->id, peer->host,
                 peer->port, why);
        conn_close(c);
        return FERRY_ECONN;
    }
    log_warn(LOG_MOD, "%s: unexpected frame kind %u, closing", c->name, kind);
    conn_close(c);
    return FERRY_EPROTO;
}
