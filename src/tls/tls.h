/* tls/tls.h - TLS for Ferry's connections: OpenSSL driven through memory buffers.
 *
 * ferryd's sockets are libuv streams and the client library polls its own
 * non-blocking socket, so OpenSSL must never touch a socket or block. A
 * tls_conn therefore does no I/O at all: the caller hands it the ciphertext it
 * read (tls_conn_input, which returns the plaintext), hands it plaintext to
 * send (tls_conn_encrypt), and collects the ciphertext to write
 * (tls_conn_take_output) - handshake flights and alerts come out the same
 * way. The caller owns the socket, the deadlines and the buffers.
 *
 * A tls_ctx is a loaded configuration (certificate, key, trusted CAs, the
 * minimum version, ciphers) for one role. Connections keep what they need of
 * it, so a context may be replaced and freed while connections made from it
 * live on (certificate reload). Contexts are thread-safe; one connection
 * must be used by one thread at a time.
 *
 * Identity: tls_conn_peer_names(c, "ferry-node-3") is true when the peer's
 * verified certificate carries that name as a DNS subjectAltName or, only if
 * the certificate has no DNS names at all, as its subject CN (RFC 6125, as
 * X509_check_host does it); wildcards never match.
 */
#ifndef FERRY_TLS_H
#define FERRY_TLS_H

#include "util/buf.h"
#include "util/err.h"
#include <stddef.h>
#include <stdint.h>

enum tls_role { TLS_CLIENT = 0, TLS_SERVER = 1 };

/* What a context asks of the other side's certificate. */
enum tls_verify {
    TLS_VERIFY_NONE = 0,     /* ask for none (server) / do not verify (client) */
    TLS_VERIFY_OPTIONAL = 1, /* server: ask; verify one if the client sends it */
    TLS_VERIFY_REQUIRED = 2, /* a certificate that chains to ca_file is required */
};

struct tls_settings {
    const char *cert_file;    /* PEM certificate chain; NULL or "" = none */
    const char *key_file;     /* PEM private key; needed with cert_file */
    const char *ca_file;      /* PEM CAs trusted for the peer; NULL or "" = the
                                 system's trust store (client role only) */
    int verify;               /* enum tls_verify */
    int min_version;          /* 12 (TLS 1.2) or 13 (TLS 1.3); 0 = 12 */
    const char *ciphers;      /* TLS 1.2 cipher list (OpenSSL syntax); NULL/"" = default */
    const char *ciphersuites; /* TLS 1.3 suites; NULL/"" = default */
};

struct tls_ctx;
struct tls_conn;

/* Load settings for `role`. Files are read now; errors (FERRY_ECONFIG) name
 * the file and OpenSSL's reason, e.g. "certificate file 'n1.pem': cannot
 * load it: no start line". *out is set on success only. */
int tls_ctx_new(struct tls_ctx **out, enum tls_role role, const struct tls_settings *s,
                struct ferry_err *err);
/* Connections made from ctx stay valid. NULL is ignored. */
void tls_ctx_free(struct tls_ctx *ctx);
/* "CN=ferry-node-1, issuer CN=Ferry demo CA, expires 2027-11-22" for the context's own certificate,
 * or "no certificate". */
void tls_ctx_describe(const struct tls_ctx *ctx, char *out, size_t n);

/* A connection in ctx's role. verify_name (client role): the host name or
 * IP address the server's certificate must name; NULL checks the chain only.
 * Returns NULL when out of memory. */
struct tls_conn *tls_conn_new(struct tls_ctx *ctx, const char *verify_name);
void tls_conn_free(struct tls_conn *c);

/* Client role: begin the handshake (the ClientHello becomes output). */
int tls_conn_start(struct tls_conn *c);

/* Ciphertext from the network. Advances the handshake, and appends the
 * plaintext that became readable to `plain`. Returns 0; FERRY_EPROTO when
 * the handshake failed, the peer sent an alert or bytes that are not TLS
 * (tls_conn_error says which, and an alert for the peer may be pending as
 * output); FERRY_ECLOSED when the peer closed the TLS session; FERRY_ENOMEM. */
int tls_conn_input(struct tls_conn *c, const uint8_t *in, size_t n, struct buf *plain);

/* Encrypt plaintext into the pending output. Only once established:
 * FERRY_ESTATE before. FERRY_EPROTO, FERRY_ENOMEM otherwise. */
int tls_conn_encrypt(struct tls_conn *c, const uint8_t *plain, size_t n);

/* Ciphertext waiting to be written, and taking it (appended to out). */
size_t tls_conn_output_pending(const struct tls_conn *c);
int tls_conn_take_output(struct tls_conn *c, struct buf *out);

int tls_conn_established(const struct tls_conn *c);
/* Why the last call failed; "" if none did. */
const char *tls_conn_error(const struct tls_conn *c);
/* Whether the peer presented a verified certificate that names `name`. */
int tls_conn_peer_names(const struct tls_conn *c, const char *name);
/* The peer certificate's subject ("CN=ferry-node-2") or "none". */
void tls_conn_peer_subject(const struct tls_conn *c, char *out, size_t n);
/* The negotiated protocol ("TLSv1.3") and cipher, once established. */
const char *tls_conn_version(const struct tls_conn *c);
const char *tls_conn_cipher(const struct tls_conn *c);

/* Whether the first byte of a stream begins a TLS handshake record. */
static inline int tls_looks_like_handshake(uint8_t first)
{
    return first == 0x16;
}

#endif
