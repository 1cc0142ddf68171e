/* certs.c - the TLS contexts of a node, loaded from the configuration and
 * reloaded on SIGHUP.
 *
 * Three contexts: node links accepted (server role) and dialled (client
 * role), both with this node's certificate and requiring a peer certificate
 * from the cluster CA; and the client listener's (server role), with the
 * client_tls_* files or the node's own, asking for client certificates as
 * client_tls_verify_client says. A reload builds all three anew and swaps
 * them in only if every one loaded: a bad file leaves the old certificates
 * in use, and connections already up keep their sessions either way.
 */
#include "server/server.h"

#include "util/log.h"
#include <string.h>

static const char *either(const char *a, const char *b)
{
    return a[0] != '\0' ? a : b;
}

int server_tls_load(const struct config *cfg, struct server_tls *out, struct ferry_err *err)
{
    memset(out, 0, sizeof *out);
    int min = cfg->tls_min_version == TLS_MIN_1_3 ? 13 : 12;
    if (cfg->replication_tls) {
        struct tls_settings s = {.cert_file = cfg->replication_tls_certificate,
                                 .key_file = cfg->replication_tls_key,
                                 .ca_file = cfg->replication_tls_ca,
                                 .verify = TLS_VERIFY_REQUIRED,
                                 .min_version = min,
                                 .ciphers = cfg->tls_ciphers,
                                 .ciphersuites = cfg->tls_ciphersuites};
        struct ferry_err e;
        int rc = tls_ctx_new(&out->node_accept, TLS_SERVER, &s, &e);
        if (rc == 0)
            rc = tls_ctx_new(&out->node_dial, TLS_CLIENT, &s, &e);
        if (rc != 0) {
            server_tls_free(out);
            return ferry_err_set(err, rc, "replication_tls: %s", e.msg);
        }
    }
    if (cfg->client_tls != CLIENT_TLS_NO) {
        static const int verify[] = {TLS_VERIFY_NONE, TLS_VERIFY_OPTIONAL, TLS_VERIFY_REQUIRED};
        struct tls_settings s = {
            .cert_file = either(cfg->client_tls_certificate, cfg->replication_tls_certificate),
            .key_file = either(cfg->client_tls_key, cfg->replication_tls_key),
            .ca_file = either(cfg->client_tls_ca, cfg->replication_tls_ca),
            .verify = verify[cfg->client_tls_verify_client],
            .min_version = min,
            .ciphers = cfg->tls_ciphers,
            .ciphersuites = cfg->tls_ciphersuites};
        struct ferry_err e;
        int rc = tls_ctx_new(&out->client, TLS_SERVER, &s, &e);
        if (rc != 0) {
            server_tls_free(out);
            return ferry_err_set(err, rc, "client_tls: %s", e.msg);
        }
    }
    return 0;
}

void server_tls_free(struct server_tls *t)
{
    tls_ctx_free(t->node_accept);
    tls_ctx_free(t->node_dial);
    tls_ctx_free(t->client);
    memset(t, 0, sizeof *t);
}

void server_tls_describe(const struct server_tls *t, char *out, size_t n)
{
    char node[200] = "plaintext", client[200] = "plaintext";
    if (t->node_accept != NULL)
        tls_ctx_describe(t->node_accept, node, sizeof node);
    if (t->client != NULL)
        tls_ctx_describe(t->client, client, sizeof client);
    snprintf(out, n, "node links: %s; clients: %s", node, client);
}

void server_tls_reload(struct server *srv)
{
    struct server_tls fresh;
    struct ferry_err err;
    ferry_err_clear(&err);
    if (srv->tls.node_accept == NULL && srv->tls.client == NULL) {
        log_info("server", "SIGHUP: no TLS configured, nothing to reload");
        return;
    }
    if (server_tls_load(srv->cfg, &fresh, &err) != 0) {
        srv->tls_reload_failures++;
        log_error("server", "SIGHUP: TLS certificates not reloaded, the old ones stay in use: %s",
                  err.msg);
        return;
    }
    struct server_tls old = srv->tls;
    srv->tls = fresh;
    if (fresh.node_accept != NULL) {
        struct cluster_tls ct = {fresh.node_accept, fresh.node_dial};
        cluster_set_tls(&srv->cluster, &ct);
    }
    server_tls_free(&old); /* live sessions hold their own references */
    srv->tls_reloads++;
    char desc[512];
    server_tls_describe(&srv->tls, desc, sizeof desc);
    log_info("server", "SIGHUP: TLS certificates reloaded (%s)", desc);
}
