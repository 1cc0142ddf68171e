/* client/conn.h - opening a connection to one Ferry node.
 *
 * Address parsing ("host:port", "[v6addr]:port", "host"), a TCP connect with
 * a deadline, and the HELLO exchange, following ENOTLEADER redirects to the
 * leader the node names. Everything here is blocking with deadlines and
 * touches no client state, so ferry_client_connect() (on the caller's
 * thread) and the I/O thread (when it follows a redirect mid-session) share
 * it.
 */
#ifndef FERRY_CLIENT_CONN_H
#define FERRY_CLIENT_CONN_H

#include "tls/tls.h"
#include "util/buf.h"
#include <ferry/ferry.h>
#include <stddef.h>
#include <stdint.h>

#define CONN_ADDR_MAX (FERRY_NAME_MAX + 8) /* "host:port" with brackets */
#define CONN_MSG_MAX 1536                  /* error messages built here */

struct conn_params {
    const char *client_name;
    uint32_t timeout_ms;    /* per address: TCP connect + HELLO */
    uint32_t max_frame;     /* largest frame accepted from the server */
    uint32_t max_redirects; /* ENOTLEADER answers followed */
    int any_node;           /* HELLO with PROTO_F_ANY_NODE */
    const uint8_t *producer_id; /* 16 bytes sent in HELLO; NULL: none */
    struct tls_ctx *tls; /* non-NULL: TLS to every address, the server's certificate
                            checked against the address's host name or IP */
};

#define CONN_ENDPOINTS_MAX 16 /* client addresses kept from HELLO_OK */

/* An open, greeted connection and what the node said in HELLO_OK. */
struct conn {
    int fd; /* non-blocking, TCP_NODELAY, close-on-exec */
    struct tls_conn *tls; /* the established TLS session, or NULL: plaintext */
    char address[CONN_ADDR_MAX];
    char server_version[FERRY_NAME_MAX + 1];
    char role[32];
    uint64_t node_id;
    uint32_t max_frame;
    uint32_t max_message;
    uint32_t n_endpoints; /* the cluster members' client addresses, from HELLO_OK */
    char endpoints[CONN_ENDPOINTS_MAX][CONN_ADDR_MAX];
};

/* Split an address into host (brackets removed) and port (default
 * FERRY_DEFAULT_PORT); a "ferrys://" or "tls:" prefix is removed and
 * reported in *tls (may be NULL). 0 or FERRY_EINVAL with a message in msg. */
int conn_parse_address(const char *address, char *host, size_t host_cap, uint16_t *port, int *tls,
                       char *msg, size_t msg_cap);
/* Whether an address carries a TLS prefix. */
int conn_address_tls(const char *address);
/* Close the socket and free the TLS session of an open connection. */
void conn_dispose(struct conn *c);

/* Split a comma-separated servers list into a heap array of heap strings
 * (free with conn_free_servers); every entry is checked with
 * conn_parse_address. 0, FERRY_EINVAL (message in msg) or FERRY_ENOMEM. */
int conn_parse_servers(const char *list, char ***servers, size_t *count, char *msg, size_t msg_cap);
void conn_free_servers(char **servers, size_t count);

/* Connect to `address`, send HELLO and wait for HELLO_OK, following up to
 * p->max_redirects ENOTLEADER answers. On success fills *out (the caller
 * owns out->fd) and appends to `extra` any bytes that arrived after the
 * HELLO_OK frame. On failure returns a negative code and a message naming
 * the address(es) in msg; nothing stays open. */
int conn_open(const struct conn_params *p, const char *address, struct conn *out, struct buf *extra,
              char *msg, size_t msg_cap);

#endif
