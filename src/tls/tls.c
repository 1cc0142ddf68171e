/* tls.c - OpenSSL contexts and connections over a pair of memory BIOs.
 *
 * Each connection owns an SSL and two memory BIOs: `rbio` holds ciphertext
 * the caller read from the network until OpenSSL consumes it, `wbio`
 * collects every record OpenSSL produces (handshake flights, application
 * data, alerts) until the caller takes it. A memory BIO never blocks, so
 * SSL_write always completes and SSL_read/SSL_do_handshake stop with
 * SSL_ERROR_WANT_READ when the input runs dry.
 *
 * Errors: OpenSSL keeps a per-thread error queue. Every entry point clears it
 * first and turns what a failure left there (and the certificate verify
 * result) into one readable line kept in the connection.
 */
#include "tls/tls.h"

#include "util/alloc.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define TLS_ERROR_MAX 256
#define READ_CHUNK (16 * 1024)

struct tls_ctx {
    SSL_CTX *ssl;
    enum tls_role role;
    int verify;
};

struct tls_conn {
    SSL *ssl;
    BIO *rbio; /* owned by ssl */
    BIO *wbio; /* owned by ssl */
    int established;
    int failed;
    int got_input;
    char error[TLS_ERROR_MAX];
};

/* The last reason OpenSSL queued on this thread ("no start line"), or `dflt`. */
static const char *openssl_reason(char *out, size_t n, const char *dflt)
{
    unsigned long e, last = 0;
    while ((e = ERR_get_error()) != 0)
        last = e;
    if (last == 0) {
        snprintf(out, n, "%s", dflt);
        return out;
    }
    const char *r = ERR_reason_error_string(last);
    if (r != NULL)
        snprintf(out, n, "%s", r);
    else
        ERR_error_string_n(last, out, n);
    return out;
}

static int ctx_fail(struct ferry_err *err, const char *what, const char *file)
{
    char why[TLS_ERROR_MAX];
    openssl_reason(why, sizeof why, "unknown error");
    return ferry_err_set(err, FERRY_ECONFIG, "%s '%s': cannot load it: %s", what, file, why);
}

static int set_if(const char *s)
{
    return s != NULL && s[0] != '\0';
}

static int load_identity(SSL_CTX *ssl, const struct tls_settings *s, struct ferry_err *err)
{
    if (!set_if(s->cert_file) && !set_if(s->key_file))
        return 0;
    if (!set_if(s->cert_file) || !set_if(s->key_file))
        return ferry_err_set(err, FERRY_ECONFIG, "a %s file is set but no %s file",
                             set_if(s->cert_file) ? "certificate" : "key",
                             set_if(s->cert_file) ? "key" : "certificate");
    if (SSL_CTX_use_certificate_chain_file(ssl, s->cert_file) != 1)
        return ctx_fail(err, "certificate file", s->cert_file);
    if (SSL_CTX_use_PrivateKey_file(ssl, s->key_file, SSL_FILETYPE_PEM) != 1 &&
        ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH)
        return ctx_fail(err, "key file", s->key_file);
    if (SSL_CTX_check_private_key(ssl) != 1) {
        ERR_clear_error();
        return ferry_err_set(err, FERRY_ECONFIG, "key file '%s' does not match certificate '%s'",
                             s->key_file, s->cert_file);
    }
    return 0;
}

static int load_trust(SSL_CTX *ssl, enum tls_role role, const struct tls_settings *s,
                      struct ferry_err *err)
{
    if (s->verify == TLS_VERIFY_NONE)
        return 0;
    if (!set_if(s->ca_file)) {
        if (role == TLS_SERVER)
            return ferry_err_set(err, FERRY_ECONFIG,
                                 "verifying client certificates needs a CA file");
        if (SSL_CTX_set_default_verify_paths(ssl) != 1)
            return ctx_fail(err, "the system's trust store", "default");
        return 0;
    }
    if (SSL_CTX_load_verify_locations(ssl, s->ca_file, NULL) != 1)
        return ctx_fail(err, "CA file", s->ca_file);
    if (role == TLS_SERVER) {
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(s->ca_file);
        if (names == NULL)
            return ctx_fail(err, "CA file", s->ca_file);
        SSL_CTX_set_client_CA_list(ssl, names);
    }
    return 0;
}

static int configure(SSL_CTX *ssl, enum tls_role role, const struct tls_settings *s,
                     struct ferry_err *err)
{
    int min = s->min_version == 13 ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (s->min_version != 0 && s->min_version != 12 && s->min_version != 13)
        return ferry_err_set(err, FERRY_ECONFIG, "minimum TLS version %d: expected 1.2 or 1.3",
                             s->min_version);
    if (SSL_CTX_set_min_proto_version(ssl, min) != 1)
        return ctx_fail(err, "minimum version", min == TLS1_3_VERSION ? "1.3" : "1.2");
    if (set_if(s->ciphers) && SSL_CTX_set_cipher_list(ssl, s->ciphers) != 1)
        return ctx_fail(err, "cipher list", s->ciphers);
    if (set_if(s->ciphersuites) && SSL_CTX_set_ciphersuites(ssl, s->ciphersuites) != 1)
        return ctx_fail(err, "TLS 1.3 cipher suites", s->ciphersuites);
    /* No renegotiation, no session resumption: connections are long-lived and
     * a ticket would only cost bytes and a key to protect. */
    SSL_CTX_set_options(ssl, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_session_cache_mode(ssl, SSL_SESS_CACHE_OFF);
    if (role == TLS_SERVER)
        SSL_CTX_set_num_tickets(ssl, 0);
    int rc = load_identity(ssl, s, err);
    if (rc == 0)
        rc = load_trust(ssl, role, s, err);
    if (rc != 0)
        return rc;
    int mode = SSL_VERIFY_NONE;
    if (s->verify != TLS_VERIFY_NONE)
        mode = SSL_VERIFY_PEER;
    if (s->verify == TLS_VERIFY_REQUIRED && role == TLS_SERVER)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ssl, mode, NULL);
    if (role == TLS_SERVER && SSL_CTX_get0_certificate(ssl) == NULL)
        return ferry_err_set(err, FERRY_ECONFIG, "a TLS listener needs a certificate and a key");
    return 0;
}

int tls_ctx_new(struct tls_ctx **out, enum tls_role role, const struct tls_settings *s,
                struct ferry_err *err)
{
    ERR_clear_error();
    struct tls_ctx *ctx = ferry_calloc(1, sizeof *ctx);
    if (ctx == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory creating a TLS context");
    ctx->role = role;
    ctx->verify = s->verify;
    ctx->ssl = SSL_CTX_new(TLS_method());
    if (ctx->ssl == NULL) {
        ferry_free(ctx);
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory creating a TLS context");
    }
    int rc = configure(ctx->ssl, role, s, err);
    if (rc != 0) {
        tls_ctx_free(ctx);
        return rc;
    }
    *out = ctx;
    return 0;
}

void tls_ctx_free(struct tls_ctx *ctx)
{
    if (ctx == NULL)
        return;
    SSL_CTX_free(ctx->ssl); /* reference counted: live connections keep it */
    ferry_free(ctx);
}

static void name_of(X509_NAME *name, char *out, size_t n)
{
    BIO *b = name ? BIO_new(BIO_s_mem()) : NULL;
    if (b == NULL) {
        snprintf(out, n, "none");
        return;
    }
    X509_NAME_print_ex(b, name, 0, XN_FLAG_RFC2253);
    int len = BIO_read(b, out, (int)(n > 1 ? n - 1 : 0));
    out[len > 0 ? len : 0] = '\0';
    BIO_free(b);
}

static void subject_of(X509 *x, char *out, size_t n)
{
    name_of(x ? X509_get_subject_name(x) : NULL, out, n);
}

void tls_ctx_describe(const struct tls_ctx *ctx, char *out, size_t n)
{
    X509 *x = SSL_CTX_get0_certificate(ctx->ssl);
    if (x == NULL) {
        snprintf(out, n, "no certificate");
        return;
    }
    char subject[200], issuer[200];
    subject_of(x, subject, sizeof subject);
    name_of(X509_get_issuer_name(x), issuer, sizeof issuer);
    struct tm tm;
    char expires[32] = "?";
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1)
        strftime(expires, sizeof expires, "%Y-%m-%d", &tm);
    snprintf(out, n, "%s, issuer %s, expires %s", subject, issuer, expires);
}

struct tls_conn *tls_conn_new(struct tls_ctx *ctx, const char *verify_name)
{
    ERR_clear_error();
    struct tls_conn *c = ferry_calloc(1, sizeof *c);
    if (c == NULL)
        return NULL;
    c->ssl = SSL_new(ctx->ssl);
    c->rbio = BIO_new(BIO_s_mem());
    c->wbio = BIO_new(BIO_s_mem());
    if (c->ssl == NULL || c->rbio == NULL || c->wbio == NULL) {
        BIO_free(c->rbio);
        BIO_free(c->wbio);
        SSL_free(c->ssl);
        ferry_free(c);
        ERR_clear_error();
        return NULL;
    }
    /* An empty memory BIO reports "retry", not end of file. */
    BIO_set_mem_eof_return(c->rbio, -1);
    BIO_set_mem_eof_return(c->wbio, -1);
    SSL_set_bio(c->ssl, c->rbio, c->wbio);
    if (ctx->role == TLS_SERVER) {
        SSL_set_accept_state(c->ssl);
    } else {
        SSL_set_connect_state(c->ssl);
        if (verify_name != NULL && verify_name[0] != '\0') {
            unsigned char ip[16];
            int is_ip = inet_pton(AF_INET, verify_name, ip) == 1 ||
                        inet_pton(AF_INET6, verify_name, ip) == 1;
            int ok;
            if (is_ip) {
                ok = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), verify_name);
            } else {
                SSL_set_hostflags(c->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                ok = SSL_set1_host(c->ssl, verify_name) == 1 &&
                     SSL_set_tlsext_host_name(c->ssl, verify_name) == 1;
            }
            if (!ok) {
                tls_conn_free(c);
                ERR_clear_error();
                return NULL;
            }
        }
    }
    return c;
}

void tls_conn_free(struct tls_conn *c)
{
    if (c == NULL)
        return;
    SSL_free(c->ssl); /* frees both BIOs */
    ferry_free(c);
}

/* Record why the handshake or a record failed; returns FERRY_EPROTO. */
static int conn_fail(struct tls_conn *c, int ssl_error)
{
    char why[160];
    long verify = SSL_get_verify_result(c->ssl);
    c->failed = 1;
    if (ssl_error == SSL_ERROR_ZERO_RETURN) {
        ERR_clear_error();
        snprintf(c->error, sizeof c->error, "the peer closed the TLS session");
        return FERRY_ECLOSED;
    }
    openssl_reason(why, sizeof why, "protocol error");
    if (!c->established && verify != X509_V_OK)
        snprintf(c->error, sizeof c->error, "TLS handshake failed: certificate verify failed: %s",
                 X509_verify_cert_error_string(verify));
    else if (!c->established)
        snprintf(c->error, sizeof c->error, "TLS handshake failed: %s", why);
    else
        snprintf(c->error, sizeof c->error, "TLS error: %s", why);
    return FERRY_EPROTO;
}

int tls_conn_start(struct tls_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->established = 1;
        return 0;
    }
    int e = SSL_get_error(c->ssl, r);
    return e == SSL_ERROR_WANT_READ ? 0 : conn_fail(c, e);
}

static int feed(struct tls_conn *c, const uint8_t *in, size_t n)
{
    while (n > 0) {
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
        int w = BIO_write(c->rbio, in, chunk);
        if (w <= 0) {
            ERR_clear_error();
            snprintf(c->error, sizeof c->error, "out of memory buffering TLS input");
            return FERRY_ENOMEM;
        }
        in += w;
        n -= (size_t)w;
    }
    return 0;
}

int tls_conn_input(struct tls_conn *c, const uint8_t *in, size_t n, struct buf *plain)
{
    if (c->failed)
        return FERRY_EPROTO;
    ERR_clear_error();
    if (n > 0 && !c->got_input && !c->established && SSL_is_server(c->ssl) &&
        !tls_looks_like_handshake(in[0])) {
        c->failed = 1;
        snprintf(c->error, sizeof c->error,
                 "TLS handshake failed: the peer does not speak TLS (first byte 0x%02x; a "
                 "plaintext client or node on a TLS port?)",
                 in[0]);
        return FERRY_EPROTO;
    }
    c->got_input |= n > 0;
    int rc = feed(c, in, n);
    if (rc != 0)
        return rc;
    if (!c->established) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            return e == SSL_ERROR_WANT_READ ? 0 : conn_fail(c, e);
        }
        c->established = 1;
    }
    for (;;) {
        if (buf_reserve(plain, READ_CHUNK) != 0) {
            snprintf(c->error, sizeof c->error, "out of memory decrypting TLS input");
            return FERRY_ENOMEM;
        }
        size_t room = plain->cap - plain->len;
        int want = room > (1u << 30) ? (1 << 30) : (int)room;
        int r = SSL_read(c->ssl, plain->data + plain->len, want);
        if (r > 0) {
            plain->len += (size_t)r;
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ)
            return 0;
        return conn_fail(c, e);
    }
}

int tls_conn_encrypt(struct tls_conn *c, const uint8_t *plain, size_t n)
{
    if (!c->established || c->failed) {
        snprintf(c->error, sizeof c->error, "the TLS session is not established");
        return FERRY_ESTATE;
    }
    ERR_clear_error();
    while (n > 0) {
        int chunk = n > (1u << 30) ? (1 << 30) : (int)n;
        int w = SSL_write(c->ssl, plain, chunk);
        if (w <= 0)
            return conn_fail(c, SSL_get_error(c->ssl, w));
        plain += w;
        n -= (size_t)w;
    }
    return 0;
}

size_t tls_conn_output_pending(const struct tls_conn *c)
{
    return BIO_ctrl_pending(c->wbio);
}

int tls_conn_take_output(struct tls_conn *c, struct buf *out)
{
    size_t pending = BIO_ctrl_pending(c->wbio);
    if (pending == 0)
        return 0;
    if (buf_reserve(out, pending) != 0)
        return FERRY_ENOMEM;
    while (pending > 0) {
        int chunk = pending > (1u << 30) ? (1 << 30) : (int)pending;
        int r = BIO_read(c->wbio, out->data + out->len, chunk);
        if (r <= 0)
            break;
        out->len += (size_t)r;
        pending -= (size_t)r;
    }
    return 0;
}

int tls_conn_established(const struct tls_conn *c)
{
    return c->established && !c->failed;
}

const char *tls_conn_error(const struct tls_conn *c)
{
    return c->error;
}

int tls_conn_peer_names(const struct tls_conn *c, const char *name)
{
    if (!c->established || SSL_get_verify_result(c->ssl) != X509_V_OK)
        return 0;
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (peer == NULL)
        return 0;
    int ok = X509_check_host(peer, name, strlen(name), X509_CHECK_FLAG_NO_WILDCARDS, NULL) == 1;
    ERR_clear_error();
    return ok;
}

void tls_conn_peer_subject(const struct tls_conn *c, char *out, size_t n)
{
    subject_of(SSL_get0_peer_certificate(c->ssl), out, n);
}

const char *tls_conn_version(const struct tls_conn *c)
{
    return SSL_get_version(c->ssl);
}

const char *tls_conn_cipher(const struct tls_conn *c)
{
    const char *name = SSL_get_cipher_name(c->ssl);
    return name ? name : "none";
}
