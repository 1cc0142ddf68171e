/* conn.c - address parsing, TCP connect with a deadline, HELLO exchange.
 *
 * The socket is non-blocking from the start: connect() is completed with
 * poll(POLLOUT) and SO_ERROR, and the HELLO reply is read with poll(POLLIN)
 * against the same deadline, so a node that accepts and then says nothing
 * costs at most the connect timeout. Each name resolves with getaddrinfo()
 * and every returned address is tried in turn.
 */
#include "client/conn.h"

#include "proto/proto.h"
#include "util/alloc.h"
#include "util/clock.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define HELLO_REQUEST_ID 1u

static size_t tls_prefix(const char *address)
{
    if (strncmp(address, "ferrys://", 9) == 0)
        return 9;
    if (strncmp(address, "tls:", 4) == 0)
        return 4;
    return 0;
}

int conn_address_tls(const char *address)
{
    return tls_prefix(address) > 0;
}

void conn_dispose(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    tls_conn_free(c->tls);
    c->tls = NULL;
}

int conn_parse_address(const char *address, char *host, size_t host_cap, uint16_t *port, int *tls,
                       char *msg, size_t msg_cap)
{
    size_t skip = tls_prefix(address);
    if (tls != NULL)
        *tls = skip > 0;
    address += skip;
    const char *h = address;
    size_t hlen;
    const char *p = NULL;
    if (address[0] == '[') {
        const char *close = strchr(address, ']');
        if (close == NULL) {
            snprintf(msg, msg_cap, "address '%s': missing ']'", address);
            return FERRY_EINVAL;
        }
        h = address + 1;
        hlen = (size_t)(close - h);
        if (close[1] == ':')
            p = close + 2;
        else if (close[1] != '\0') {
            snprintf(msg, msg_cap, "address '%s': expected ':port' after ']'", address);
            return FERRY_EINVAL;
        }
    } else {
        const char *colon = strrchr(address, ':');
        if (colon != NULL && strchr(address, ':') != colon) {
            snprintf(msg, msg_cap, "address '%s': write IPv6 addresses as [addr]:port", address);
            return FERRY_EINVAL;
        }
        hlen = colon ? (size_t)(colon - address) : strlen(address);
        p = colon ? colon + 1 : NULL;
    }
    if (hlen == 0 || hlen >= host_cap) {
        snprintf(msg, msg_cap, "address '%s': %s host name", address,
                 hlen == 0 ? "missing" : "overlong");
        return FERRY_EINVAL;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = FERRY_DEFAULT_PORT;
    if (p != NULL) {
        unsigned long v = 0;
        const char *q = p;
        for (; *q >= '0' && *q <= '9' && v <= 65535; q++)
            v = v * 10 + (unsigned long)(*q - '0');
        if (q == p || *q != '\0' || v == 0 || v > 65535) {
            snprintf(msg, msg_cap, "address '%s': port must be a number from 1 to 65535", address);
            return FERRY_EINVAL;
        }
        *port = (uint16_t)v;
    }
    return 0;
}

void conn_free_servers(char **servers, size_t count)
{
    for (size_t i = 0; i < count; i++)
        ferry_free(servers[i]);
    ferry_free(servers);
}

int conn_parse_servers(const char *list, char ***servers, size_t *count, char *msg, size_t msg_cap)
{
    size_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    char **v = ferry_calloc(n, sizeof *v);
    if (v == NULL)
        return FERRY_ENOMEM;
    size_t i = 0;
    const char *start = list;
    for (;;) {
        const char *end = strchr(start, ',');
        size_t len = end ? (size_t)(end - start) : strlen(start);
        while (len > 0 && (*start == ' ' || *start == '\t')) {
            start++;
            len--;
        }
        while (len > 0 && (start[len - 1] == ' ' || start[len - 1] == '\t'))
            len--;
        if (len == 0) {
            snprintf(msg, msg_cap, "servers list '%s': empty address", list);
            conn_free_servers(v, i);
            return FERRY_EINVAL;
        }
        v[i] = ferry_strndup(start, len);
        if (v[i] == NULL) {
            conn_free_servers(v, i);
            return FERRY_ENOMEM;
        }
        char host[CONN_ADDR_MAX];
        uint16_t port;
        int rc = conn_parse_address(v[i], host, sizeof host, &port, NULL, msg, msg_cap);
        i++;
        if (rc != 0) {
            conn_free_servers(v, i);
            return rc;
        }
        if (end == NULL)
            break;
        start = end + 1;
    }
    *servers = v;
    *count = i;
    return 0;
}

static int remaining_ms(uint64_t deadline_ns)
{
    uint64_t now = clock_mono_ns();
    if (now >= deadline_ns)
        return 0;
    uint64_t ms = (deadline_ns - now + 999999) / 1000000;
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

/* Wait for `events` on fd until the deadline: 1 ready, 0 timed out, -errno. */
static int wait_fd(int fd, short events, uint64_t deadline_ns)
{
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int rc = poll(&pfd, 1, remaining_ms(deadline_ns));
        if (rc > 0)
            return 1;
        if (rc == 0)
            return 0;
        if (errno != EINTR)
            return -errno;
    }
}

static int dial_one(const struct addrinfo *ai, uint64_t deadline_ns, int *fd_out, int *err_out)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
        *err_out = errno;
        return FERRY_ECONN;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        if (errno != EINPROGRESS && errno != EINTR) {
            *err_out = errno;
            close(fd);
            return FERRY_ECONN;
        }
        int w = wait_fd(fd, POLLOUT, deadline_ns);
        if (w <= 0) {
            *err_out = w == 0 ? ETIMEDOUT : -w;
            close(fd);
            return w == 0 ? FERRY_ETIMEDOUT : FERRY_ECONN;
        }
        int soerr = 0;
        socklen_t len = sizeof soerr;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0)
            soerr = errno;
        if (soerr != 0) {
            *err_out = soerr;
            close(fd);
            return FERRY_ECONN;
        }
    }
    *fd_out = fd;
    return 0;
}

/* TCP connect to address within the deadline; every resolved address is
 * tried. host receives the address's host part (what TLS verifies). */
static int dial(const char *address, uint64_t deadline_ns, int *fd, char *host, char *msg,
                size_t cap)
{
    uint16_t port;
    int rc = conn_parse_address(address, host, CONN_ADDR_MAX, &port, NULL, msg, cap);
    if (rc != 0)
        return rc;
    char service[8];
    snprintf(service, sizeof service, "%u", (unsigned)port);
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0) {
        snprintf(msg, cap, "%s: cannot resolve '%s': %s", address, host, gai_strerror(gai));
        return FERRY_ECONN;
    }
    int err = 0;
    rc = FERRY_ECONN;
    for (struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        rc = dial_one(ai, deadline_ns, fd, &err);
        if (rc == 0 || rc == FERRY_ETIMEDOUT)
            break;
    }
    freeaddrinfo(res);
    if (rc == FERRY_ETIMEDOUT)
        snprintf(msg, cap, "%s: connect timed out", address);
    else if (rc != 0)
        snprintf(msg, cap, "%s: %s", address, strerror(err ? err : ECONNREFUSED));
    return rc;
}

/* Everything here reads and writes through a wire: the socket, and the TLS
 * session on it when there is one. */
struct wire {
    int fd;
    struct tls_conn *tls;
    struct buf cipher; /* TLS: ciphertext being sent or received */
};

static int send_all(int fd, const uint8_t *p, size_t n, uint64_t deadline_ns)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int r = wait_fd(fd, POLLOUT, deadline_ns);
            if (r == 0)
                return FERRY_ETIMEDOUT;
            if (r < 0)
                return FERRY_ECONN;
            continue;
        }
        return FERRY_ECONN;
    }
    return 0;
}

/* Send what the TLS session has for the network. */
static int wire_send_pending(struct wire *w, uint64_t deadline_ns)
{
    w->cipher.len = 0;
    if (tls_conn_take_output(w->tls, &w->cipher) != 0)
        return FERRY_ENOMEM;
    return send_all(w->fd, w->cipher.data, w->cipher.len, deadline_ns);
}

static int wire_send(struct wire *w, const uint8_t *p, size_t n, uint64_t deadline_ns)
{
    if (w->tls == NULL)
        return send_all(w->fd, p, n, deadline_ns);
    int rc = tls_conn_encrypt(w->tls, p, n);
    return rc != 0 ? rc : wire_send_pending(w, deadline_ns);
}

#define WIRE_TLS_ERROR (-100000) /* not an errno */

/* Receive what is there into `in` (decrypted with TLS): >0 progress, 0 the
 * server closed, <0 -errno (EAGAIN: nothing yet), or WIRE_TLS_ERROR. */
static ssize_t wire_recv(struct wire *w, struct buf *in)
{
    struct buf *into = w->tls != NULL ? &w->cipher : in;
    if (w->tls != NULL)
        w->cipher.len = 0;
    if (buf_reserve(into, 16384) != 0)
        return -ENOMEM;
    ssize_t r = recv(w->fd, into->data + into->len, into->cap - into->len, 0);
    if (r <= 0)
        return r < 0 ? -errno : 0;
    into->len += (size_t)r;
    if (w->tls != NULL) {
        int rc = tls_conn_input(w->tls, w->cipher.data, w->cipher.len, in);
        if (rc != 0)
            return rc == FERRY_ECLOSED ? 0 : WIRE_TLS_ERROR;
    }
    return r;
}

/* The TLS handshake on a connected socket, within the deadline. */
static int tls_handshake(struct wire *w, const char *address, uint64_t deadline_ns, char *msg,
                         size_t cap)
{
    struct buf none;
    buf_init(&none);
    int rc = tls_conn_start(w->tls);
    if (rc == 0)
        rc = wire_send_pending(w, deadline_ns);
    while (rc == 0 && !tls_conn_established(w->tls)) {
        ssize_t r = wire_recv(w, &none);
        if (r > 0) {
            rc = wire_send_pending(w, deadline_ns);
            continue;
        }
        if (r == WIRE_TLS_ERROR) {
            (void)wire_send_pending(w, deadline_ns); /* the alert tells the server why */
            snprintf(msg, cap, "%s: %s", address, tls_conn_error(w->tls));
            rc = FERRY_EPROTO;
        } else if (r == 0) {
            snprintf(msg, cap,
                     "%s: connection closed by the server during the TLS handshake (does it "
                     "have client_tls on?)",
                     address);
            rc = FERRY_ECONN;
        } else if (r == -EINTR) {
            continue;
        } else if (r == -EAGAIN || r == -EWOULDBLOCK) {
            int wr = wait_fd(w->fd, POLLIN, deadline_ns);
            if (wr == 0) {
                snprintf(msg, cap, "%s: no TLS handshake in time", address);
                rc = FERRY_ETIMEDOUT;
            } else if (wr < 0) {
                snprintf(msg, cap, "%s: %s", address, strerror(-wr));
                rc = FERRY_ECONN;
            }
        } else {
            snprintf(msg, cap, "%s: %s", address, strerror((int)-r));
            rc = FERRY_ECONN;
        }
    }
    if (rc != 0 && msg[0] == '\0')
        snprintf(msg, cap, "%s: TLS handshake failed: %s", address, ferry_strerror(rc));
    buf_free(&none);
    return rc;
}

/* Read one whole frame into in (which may hold more after it); *flen its size. */
static int recv_frame(struct wire *w, struct buf *in, uint32_t max_frame, uint64_t deadline_ns,
                      struct proto_header *h, size_t *flen, const char *address, char *msg,
                      size_t cap)
{
    for (;;) {
        int rc = proto_frame_check(in->data, in->len, max_frame, h, flen);
        if (rc == 0)
            return 0;
        if (rc != FERRY_EAGAIN) {
            snprintf(msg, cap, "%s: malformed reply to HELLO (%s)", address, ferry_strerror(rc));
            return FERRY_EPROTO;
        }
        ssize_t r = wire_recv(w, in);
        if (r > 0)
            continue;
        if (r == WIRE_TLS_ERROR) {
            snprintf(msg, cap, "%s: %s", address, tls_conn_error(w->tls));
            return FERRY_EPROTO;
        }
        if (r == -ENOMEM)
            return FERRY_ENOMEM;
        if (r == 0) {
            snprintf(msg, cap, "%s: connection closed by the server during HELLO", address);
            return FERRY_ECONN;
        }
        errno = (int)-r;
        if (errno == EINTR)
            continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) {
            snprintf(msg, cap, "%s: %s", address, strerror(errno));
            return FERRY_ECONN;
        }
        int wr = wait_fd(w->fd, POLLIN, deadline_ns);
        if (wr == 0) {
            snprintf(msg, cap, "%s: no reply to HELLO in time", address);
            return FERRY_ETIMEDOUT;
        }
        if (wr < 0) {
            snprintf(msg, cap, "%s: %s", address, strerror(-wr));
            return FERRY_ECONN;
        }
    }
}

static void take_hello(struct conn *out, const struct proto_hello_ok *ok, int fd,
                       const char *address)
{
    out->fd = fd;
    snprintf(out->address, sizeof out->address, "%s", address);
    snprintf(out->server_version, sizeof out->server_version, "%s", ok->server_version);
    snprintf(out->role, sizeof out->role, "%s", ok->role);
    out->node_id = ok->node_id;
    out->max_frame = ok->max_frame;
    out->max_message = ok->max_message;
    out->n_endpoints = 0;
    for (uint16_t i = 0; i < ok->endpoint_count && out->n_endpoints < CONN_ENDPOINTS_MAX; i++)
        if (ok->endpoints[i][0] != '\0' && strlen(ok->endpoints[i]) < CONN_ADDR_MAX)
            snprintf(out->endpoints[out->n_endpoints++], CONN_ADDR_MAX, "%s", ok->endpoints[i]);
}

/* HELLO on an open socket. 0 (HELLO_OK), FERRY_ENOTLEADER with leader set,
 * or another error with msg. */
static int hello(const struct conn_params *p, struct wire *wire, const char *address,
                 uint64_t deadline_ns,
                 struct conn *out, struct buf *extra, char *leader, size_t leader_cap, char *msg,
                 size_t cap)
{
    struct buf b;
    buf_init(&b);
    struct proto_hello h;
    memset(&h, 0, sizeof h);
    snprintf(h.client_name, sizeof h.client_name, "%s", p->client_name);
    h.flags = p->any_node ? PROTO_F_ANY_NODE : 0;
    if (p->producer_id != NULL)
        memcpy(h.producer_id, p->producer_id, sizeof h.producer_id);
    int rc = proto_encode_hello(&b, HELLO_REQUEST_ID, &h);
    if (rc == 0) {
        rc = wire_send(wire, b.data, b.len, deadline_ns);
        if (rc != 0)
            snprintf(msg, cap, "%s: cannot send HELLO: %s", address,
                     rc == FERRY_ETIMEDOUT ? "timed out" : strerror(errno));
    }
    buf_reset(&b);
    struct proto_header hdr;
    size_t flen = 0;
    if (rc == 0)
        rc = recv_frame(wire, &b, p->max_frame, deadline_ns, &hdr, &flen, address, msg, cap);
    if (rc != 0)
        goto out;
    const uint8_t *body = b.data + PROTO_HEADER_SIZE;
    size_t blen = flen - PROTO_HEADER_SIZE;
    if (hdr.op == PROTO_HELLO_OK) {
        struct proto_hello_ok *ok = ferry_malloc(sizeof *ok);
        if (ok == NULL) {
            rc = FERRY_ENOMEM;
            goto out;
        }
        rc = proto_decode_hello_ok(body, blen, ok);
        if (rc == 0 && ok->version != PROTO_VERSION) {
            snprintf(msg, cap, "%s: server speaks protocol version %u, this client %u", address,
                     ok->version, PROTO_VERSION);
            rc = FERRY_EVERSION;
        } else if (rc != 0) {
            snprintf(msg, cap, "%s: malformed HELLO_OK", address);
            rc = FERRY_EPROTO;
        } else {
            take_hello(out, ok, wire->fd, address);
            rc = buf_append(extra, b.data + flen, b.len - flen);
        }
        ferry_free(ok);
    } else if (hdr.op == PROTO_ERROR) {
        struct proto_error e;
        if (proto_decode_error(body, blen, &e) != 0 || e.code >= 0) {
            snprintf(msg, cap, "%s: malformed ERROR in reply to HELLO", address);
            rc = FERRY_EPROTO;
        } else {
            rc = e.code;
            snprintf(leader, leader_cap, "%s", e.leader);
            snprintf(msg, cap, "%s: %s", address, e.message[0] ? e.message : ferry_strerror(rc));
        }
    } else {
        snprintf(msg, cap, "%s: unexpected %s in reply to HELLO", address, proto_op_name(hdr.op));
        rc = FERRY_EPROTO;
    }
out:
    buf_free(&b);
    return rc;
}

int conn_open(const struct conn_params *p, const char *address, struct conn *out, struct buf *extra,
              char *msg, size_t msg_cap)
{
    char addr[CONN_ADDR_MAX];
    char leader[CONN_ADDR_MAX];
    char trail[CONN_MSG_MAX] = ""; /* "a redirected to b; " ... */
    snprintf(addr, sizeof addr, "%s", address);
    for (uint32_t redirects = 0;; redirects++) {
        uint64_t deadline = clock_mono_ns() + (uint64_t)p->timeout_ms * 1000000u;
        char m[CONN_MSG_MAX] = "";
        char host[CONN_ADDR_MAX];
        struct wire w = {.fd = -1};
        buf_init(&w.cipher);
        int rc = dial(addr, deadline, &w.fd, host, m, sizeof m);
        if (rc == 0 && p->tls != NULL) {
            w.tls = tls_conn_new(p->tls, host);
            rc = w.tls == NULL ? FERRY_ENOMEM : tls_handshake(&w, addr, deadline, m, sizeof m);
        }
        if (rc == 0) {
            leader[0] = '\0';
            rc = hello(p, &w, addr, deadline, out, extra, leader, sizeof leader, m, sizeof m);
        }
        buf_free(&w.cipher);
        if (rc == 0) {
            out->tls = w.tls;
            return 0;
        }
        if (w.fd >= 0)
            close(w.fd);
        tls_conn_free(w.tls);
        if (rc == FERRY_ENOTLEADER && leader[0] != '\0' && redirects < p->max_redirects) {
            size_t t = strlen(trail);
            snprintf(trail + t, sizeof trail - t, "%s redirected to %s; ", addr, leader);
            snprintf(addr, sizeof addr, "%s", leader);
            continue;
        }
        snprintf(msg, msg_cap, "%s%s", trail, m);
        return rc;
    }
}
