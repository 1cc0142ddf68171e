/* server.c - the listener and the per-turn work: commit, pump, flush.
 *
 * See server.h for the turn structure. Shutdown (server_stop) stops
 * accepting, commits what is pending so every request already taken gets its
 * answer, flushes output, then closes sessions and handles; uv_run returns
 * when the last handle is closed.
 */
#include "server/server.h"

#include "util/alloc.h"
#include "util/clock.h"
#include "util/log.h"
#include <stdio.h>
#include <string.h>

#define PROTO_FRAME_OVERHEAD (64 * 1024) /* names and fields around a payload */

static void turn_end_cb(uv_check_t *h);

static void on_connection(uv_stream_t *listener, int status)
{
    struct server *srv = listener->data;
    if (status < 0) {
        log_warn("server", "accept failed: %s", uv_strerror(status));
        return;
    }
    session_accept(srv);
}

static void keep_busy_cb(uv_idle_t *h)
{
    (void)h; /* its only job is to make poll return at once */
}

static void work_done(struct server *srv, int more)
{
    if (more && !uv_is_active((uv_handle_t *)&srv->keep_busy))
        uv_idle_start(&srv->keep_busy, keep_busy_cb);
    else if (!more && uv_is_active((uv_handle_t *)&srv->keep_busy))
        uv_idle_stop(&srv->keep_busy);
}

static void flush_dirty(struct server *srv)
{
    while (!list_empty(&srv->dirty)) {
        struct session *ss = list_entry(srv->dirty.next, struct session, dirty_link);
        list_remove(&ss->dirty_link);
        session_flush(ss);
    }
}

static void turn_end_cb(uv_check_t *h)
{
    struct server *srv = h->data;
    cluster_flush(&srv->cluster);
    int more = 0;
    if (srv->pump_wanted && !cluster_serving(&srv->cluster)) {
        srv->pump_wanted = 0;
    } else if (srv->pump_wanted) {
        srv->pump_wanted = 0;
        int rc = broker_pump(srv->broker, clock_wall_ms());
        if (rc > 0)
            srv->pump_wanted = 1;
        else if (rc < 0)
            log_error("server", "reading messages for delivery failed: %s", ferry_strerror(rc));
    }
    more = srv->pump_wanted || cluster_has_pending(&srv->cluster);
    flush_dirty(srv);
    work_done(srv, more);
}

static void expire_done(void *ctx, const struct broker_result *res)
{
    struct server *srv = ctx;
    srv->expire_proposed = 0;
    if (res->status != 0)
        log_warn("server", "expiry failed: %s", res->msg);
    srv->pump_wanted = 1;
}

void server_return_items(struct server *srv, const uint8_t *cmds, size_t len)
{
    if (len == 0)
        return;
    struct ferry_err err;
    ferry_err_clear(&err);
    if (srv->deferred.len == 0 && cluster_propose_encoded(&srv->cluster, cmds, len, &err) == 0) {
        srv->pump_wanted = 1;
        return;
    }
    if (buf_append(&srv->deferred, cmds, len) != 0)
        log_error("server", "out of memory keeping unacked items to return; they become "
                  "available again after a restart");
}

static void propose_deferred(struct server *srv)
{
    if (srv->deferred.len == 0)
        return;
    struct ferry_err err;
    ferry_err_clear(&err);
    if (cluster_propose_encoded(&srv->cluster, srv->deferred.data, srv->deferred.len, &err) == 0) {
        log_info("server", "returned %zu bytes of deferred unacked items to their queues",
                 srv->deferred.len);
        buf_reset(&srv->deferred);
        srv->pump_wanted = 1; /* the returned items are ready once this entry applies */
        work_done(srv, 1);
    }
}

static void housekeeping_cb(uv_timer_t *t)
{
    struct server *srv = t->data;
    session_sweep_handshakes(srv, clock_mono_ms());
    if (!cluster_serving(&srv->cluster))
        return;
    propose_deferred(srv);
    uint64_t now = clock_wall_ms();
    if (!srv->expire_proposed && broker_expire_due(srv->broker, now)) {
        struct broker_cmd cmd;
        memset(&cmd, 0, sizeof cmd);
        cmd.type = BROKER_CMD_EXPIRE;
        cmd.ts_ms = now;
        if (cluster_propose(&srv->cluster, &cmd, expire_done, srv, NULL) == 0) {
            srv->expire_proposed = 1;
            work_done(srv, 1);
        }
    }
}

static void finish_stop(struct server *srv);

/* The cluster says this node started or stopped serving clients. */
static void on_serving(void *ctx, int serving)
{
    struct server *srv = ctx;
    if (serving) {
        srv->pump_wanted = 1;
        work_done(srv, 1);
        return;
    }
    /* Leases and subscriptions die with the sessions; the broker's view of
     * what is ready is rebuilt from the database, and the next leader
     * delivers every unacked item again. */
    buf_reset(&srv->deferred);
    srv->expire_proposed = 0;
    struct list *it, *tmp;
    list_foreach_safe(it, tmp, &srv->sessions)
    {
        struct session *ss = list_entry(it, struct session, link);
        if (!ss->observer)
            session_leave(ss);
    }
    struct ferry_err err;
    ferry_err_clear(&err);
    if (broker_reload(srv->broker, &err) != 0)
        log_error("server", "rebuilding the delivery state after losing leadership failed: %s",
                  err.msg);
    flush_dirty(srv);
    if (srv->stopping)
        finish_stop(srv);
}

static void on_applied(void *ctx)
{
    struct server *srv = ctx;
    srv->pump_wanted = 1;
    work_done(srv, 1);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct server *srv = h->data;
    log_info("server", "received %s, shutting down", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    server_stop(srv);
}

static int resolve_listen(const struct config_endpoint *ep, struct sockaddr_storage *sa,
                          struct ferry_err *err)
{
    if (uv_ip4_addr(ep->host, ep->port, (struct sockaddr_in *)sa) == 0)
        return 0;
    if (uv_ip6_addr(ep->host, ep->port, (struct sockaddr_in6 *)sa) == 0)
        return 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(ep->host, NULL, &hints, &res);
    if (rc != 0 || res == NULL)
        return ferry_err_set(err, FERRY_ECONFIG, "client_endpoint: cannot resolve host '%s': %s",
                             ep->host, gai_strerror(rc));
    memcpy(sa, res->ai_addr, res->ai_addrlen);
    if (sa->ss_family == AF_INET)
        ((struct sockaddr_in *)sa)->sin_port = htons(ep->port);
    else
        ((struct sockaddr_in6 *)sa)->sin6_port = htons(ep->port);
    freeaddrinfo(res);
    return 0;
}

static void on_sighup(uv_signal_t *h, int signum)
{
    (void)signum;
    server_tls_reload(h->data);
}

int server_start(struct server *srv, uv_loop_t *loop, const struct config *cfg,
                 struct server_tls *tls, struct broker *broker, struct ferry_err *err)
{
    memset(srv, 0, sizeof *srv);
    srv->tls = *tls;
    memset(tls, 0, sizeof *tls);
    srv->scratch = ferry_malloc(64 * 1024);
    if (srv->scratch == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory starting the server");
    srv->loop = loop;
    srv->cfg = cfg;
    srv->broker = broker;
    srv->started_ms = clock_mono_ms();
    srv->max_frame = (uint32_t)(cfg->max_message_size + PROTO_FRAME_OVERHEAD);
    list_init(&srv->sessions);
    list_init(&srv->dirty);
    buf_init(&srv->deferred);
    snprintf(srv->client_address, sizeof srv->client_address, "%.240s:%u", cfg->client_endpoint.host,
             cfg->client_endpoint.port);
    srv->witness = 0;
    for (uint32_t i = 0; i < cfg->member_count; i++) {
        if (cfg->members[i].id == cfg->cluster_node_id && cfg->members[i].priority == 0)
            srv->witness = 1;
    }
    if (srv->witness)
        srv->client_address[0] = '\0'; /* a witness never serves clients */

    if (!srv->witness) {
        struct sockaddr_storage sa;
        int rc = resolve_listen(&cfg->client_endpoint, &sa, err);
        if (rc)
            return rc;
        uv_tcp_init(loop, &srv->listener);
        srv->listener.data = srv;
        rc = uv_tcp_bind(&srv->listener, (struct sockaddr *)&sa, 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&srv->listener, 511, on_connection);
        if (rc != 0) {
            uv_close((uv_handle_t *)&srv->listener, NULL);
            return ferry_err_set(err, FERRY_EIO, "cannot listen on client_endpoint %s: %s",
                                 srv->client_address, uv_strerror(rc));
        }
        srv->listening = 1;
    }
    /* The cluster may call back while it starts (a snapshot newer than the
     * database is restored inside cluster_start, and on_applied follows):
     * the handles those callbacks use exist before it. If it fails, main
     * closes every handle of the loop. */
    uv_check_init(loop, &srv->turn_end);
    srv->turn_end.data = srv;
    uv_idle_init(loop, &srv->keep_busy);
    uv_timer_init(loop, &srv->housekeeping);
    struct cluster_events ev = {.on_serving = on_serving, .on_applied = on_applied};
    struct cluster_tls ct = {srv->tls.node_accept, srv->tls.node_dial};
    int rc = cluster_start(&srv->cluster, loop, cfg, &ct, broker, &ev, srv, err);
    if (rc) {
        if (srv->listening)
            uv_close((uv_handle_t *)&srv->listener, NULL);
        return rc;
    }
    uv_check_start(&srv->turn_end, turn_end_cb);
    srv->housekeeping.data = srv;
    uv_timer_start(&srv->housekeeping, housekeeping_cb, 1000, 1000);
    uv_signal_init(loop, &srv->sigterm);
    uv_signal_init(loop, &srv->sigint);
    srv->sigterm.data = srv->sigint.data = srv;
    uv_signal_start(&srv->sigterm, on_signal, SIGTERM);
    uv_signal_start(&srv->sigint, on_signal, SIGINT);
    uv_signal_init(loop, &srv->sighup);
    srv->sighup.data = srv;
    uv_signal_start(&srv->sighup, on_sighup, SIGHUP);
    /* Broken client connections must surface as EPIPE on write, not kill us. */
    signal(SIGPIPE, SIG_IGN);
    srv->pump_wanted = 1;
    static const char *const modes[] = {"plaintext", "TLS or plaintext", "TLS only"};
    if (srv->listening)
        log_info("server", "listening for clients on %s, %s (max_message_size %llu bytes)",
                 srv->client_address, modes[cfg->client_tls],
                 (unsigned long long)cfg->max_message_size);
    else
        log_info("server", "witness node: no client endpoint");
    if (srv->tls.node_accept != NULL || srv->tls.client != NULL) {
        char desc[512];
        server_tls_describe(&srv->tls, desc, sizeof desc);
        log_info("server", "TLS: %s", desc);
    }
    return 0;
}

static void shutdown_timeout_cb(uv_timer_t *t)
{
    struct server *srv = t->data;
    struct list *it, *tmp;
    list_foreach_safe(it, tmp, &srv->sessions)
    {
        struct session *ss = list_entry(it, struct session, link);
        log_warn("server", "closing session %llu from %s: output not drained at shutdown",
                 (unsigned long long)ss->id, ss->peer);
        session_close(ss);
    }
    uv_close((uv_handle_t *)t, NULL);
}

static void stop_timer_cb(uv_timer_t *t)
{
    finish_stop(t->data);
}

static void drain_cb(uv_timer_t *t);

/* Close sessions and handles; the cluster node last. */
static void close_all(struct server *srv)
{
    struct list *it, *tmp;
    const char *leader = cluster_leader_address(&srv->cluster);
    list_foreach_safe(it, tmp, &srv->sessions)
    {
        struct session *ss = list_entry(it, struct session, link);
        if (leader[0] != '\0' && strcmp(leader, srv->client_address) != 0)
            session_fail(ss, 0, FERRY_ENOTLEADER,
                         "this node is shutting down; the leader is %s", leader);
        else
            session_fail(ss, 0, FERRY_EUNAVAILABLE, "server is shutting down");
    }
    flush_dirty(srv);
    /* RETURN commands of closing consumers are not needed: leases do not
     * survive a restart, every unacked item is ready again at start. */
    cluster_stop(&srv->cluster, NULL, NULL);
    uv_check_stop(&srv->turn_end);
    uv_close((uv_handle_t *)&srv->turn_end, NULL);
    uv_close((uv_handle_t *)&srv->keep_busy, NULL);
    uv_close((uv_handle_t *)&srv->housekeeping, NULL);
    uv_close((uv_handle_t *)&srv->sigterm, NULL);
    uv_close((uv_handle_t *)&srv->sigint, NULL);
    uv_close((uv_handle_t *)&srv->sighup, NULL);
    uv_close((uv_handle_t *)&srv->stop_timer, NULL);
    /* A client that does not read cannot hold shutdown hostage. */
    uv_timer_init(srv->loop, &srv->shutdown_timer);
    srv->shutdown_timer.data = srv;
    uv_timer_start(&srv->shutdown_timer, shutdown_timeout_cb, 3000, 0);
    uv_unref((uv_handle_t *)&srv->shutdown_timer);
}

/* Answer what was already taken: propose the turn's entry and give the
 * entries in flight a moment to commit. */
static void drain_cb(uv_timer_t *t)
{
    struct server *srv = t->data;
    cluster_flush(&srv->cluster);
    int busy = cluster_serving(&srv->cluster) && srv->cluster.head != NULL;
    if (busy && clock_mono_ms() < srv->drain_deadline)
        return;
    uv_timer_stop(t);
    close_all(srv);
}

static void finish_stop(struct server *srv)
{
    if (srv->finishing)
        return;
    srv->finishing = 1;
    uv_timer_stop(&srv->stop_timer);
    srv->drain_deadline = clock_mono_ms() + 2000;
    uv_timer_start(&srv->stop_timer, drain_cb, 0, 5);
}

static uint32_t voters(const struct server *srv)
{
    struct rnode_status *st = ferry_calloc(1, sizeof *st);
    if (st == NULL)
        return 0;
    cluster_status(&srv->cluster, st);
    uint32_t n = 0;
    for (uint32_t i = 0; i < st->n_peers; i++)
        n += st->peers[i].role == RAFT_VOTER;
    ferry_free(st);
    return n;
}

void server_stop(struct server *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = 1;
    if (srv->listening)
        uv_close((uv_handle_t *)&srv->listener, NULL);
    srv->listening = 0;
    uv_timer_init(srv->loop, &srv->stop_timer);
    srv->stop_timer.data = srv;
    /* A leader hands over first, so a planned stop costs no election. */
    if (cluster_serving(&srv->cluster) && voters(srv) > 1) {
        struct ferry_err err;
        ferry_err_clear(&err);
        if (cluster_transfer(&srv->cluster, 0, &err) == 0) {
            log_info("server", "handing leadership over before stopping");
            uv_timer_start(&srv->stop_timer, stop_timer_cb,
                           2ull * srv->cfg->raft_election_max_ms, 0);
            return;
        }
        log_warn("server", "cannot hand leadership over: %s", err.msg);
    }
    finish_stop(srv);
}

void server_destroy(struct server *srv)
{
    buf_free(&srv->deferred);
    server_tls_free(&srv->tls);
    ferry_free(srv->scratch);
    srv->scratch = NULL;
}
