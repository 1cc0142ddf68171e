/* dispatch.c - one handler per request op.
 *
 * Reads (PING, LIST, INFO, STATUS) are answered at once. Writes become broker
 * commands proposed to the cluster with a `struct pending` that remembers who
 * to answer; the answer is queued when the command's entry has committed.
 * If the client disconnects first, its pendings are detached (ss = NULL) and
 * the result is dropped when it arrives: the command still takes effect, as
 * it was already proposed.
 *
 * Requests that need a resource or durable subscription to exist first
 * (SUBSCRIBE and CONSUME with auto_create, durable subscriptions) propose the
 * creating commands and continue when the last of them has applied.
 */
#include "server/server.h"

#include "util/alloc.h"
#include "util/clock.h"
#include "util/log.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

struct pending {
    struct list link;  /* in session->pendings */
    struct session *ss; /* NULL once the session closed */
    uint32_t req;
    uint16_t flags;
    uint8_t op;
    union {
        struct proto_subscribe sub;
        struct proto_consume con;
    } u; /* continuation data (SUBSCRIBE, CONSUME) */
};

static struct pending *pending_new(struct session *ss, const struct proto_header *h, size_t size)
{
    struct pending *p = ferry_malloc(size);
    if (p == NULL)
        return NULL;
    p->ss = ss;
    p->req = h->request_id;
    p->flags = h->flags;
    p->op = h->op;
    list_insert_tail(&ss->pendings, &p->link);
    return p;
}

static void pending_free(struct pending *p)
{
    if (p->ss)
        list_remove(&p->link);
    ferry_free(p);
}

void dispatch_session_closed(struct session *ss)
{
    struct list *it, *tmp;
    list_foreach_safe(it, tmp, &ss->pendings)
    {
        struct pending *p = list_entry(it, struct pending, link);
        list_remove(&p->link);
        p->ss = NULL;
    }
}

static void reply_empty(struct session *ss, uint8_t op, uint32_t req)
{
    if (proto_encode_empty(&ss->obuf, op, 0, req) == 0)
        ss->srv->frames_out++;
    session_mark_dirty(ss);
}

static void reply_id_flags(struct session *ss, uint8_t op, uint16_t flags, uint32_t req,
                           uint64_t id)
{
    if (proto_encode_id(&ss->obuf, op, flags, req, id) == 0)
        ss->srv->frames_out++;
    session_mark_dirty(ss);
}

static void reply_id(struct session *ss, uint8_t op, uint32_t req, uint64_t id)
{
    reply_id_flags(ss, op, 0, req, id);
}

static void reply_err(struct session *ss, uint32_t req, const struct ferry_err *err)
{
    session_error(ss, req, err->code, "%s", err->msg);
}

/* Propose cmd; on failure answer the request at once. Returns 0 if proposed. */
static int propose(struct session *ss, const struct proto_header *h, const struct broker_cmd *cmd,
                   struct pending *p, cluster_done_cb cb)
{
    struct ferry_err err;
    ferry_err_clear(&err);
    int rc = cluster_propose(&ss->srv->cluster, cmd, cb, p, &err);
    if (rc != 0) {
        if (p)
            pending_free(p);
        reply_err(ss, h->request_id, &err);
    }
    return rc;
}

/* ---- results ---- */

static void done_publish(void *ctx, const struct broker_result *res)
{
    struct pending *p = ctx;
    struct session *ss = p->ss;
    if (ss) {
        if (res->status == 0 && res->duplicate)
            reply_id_flags(ss, PROTO_PUBLISH_OK, PROTO_F_DUPLICATE, p->req, res->id);
        else if (res->status == 0)
            reply_id(ss, PROTO_PUBLISH_OK, p->req, res->id);
        else
            session_error(ss, p->req, res->status, "%s", res->msg);
    }
    pending_free(p);
}

static void done_ok(void *ctx, const struct broker_result *res)
{
    struct pending *p = ctx;
    struct session *ss = p->ss;
    if (ss) {
        if (res->status != 0)
            session_error(ss, p->req, res->status, "%s", res->msg);
        else if (!(p->flags & PROTO_F_NOREPLY))
            reply_empty(ss, PROTO_OK, p->req);
    }
    pending_free(p);
}

static void subscribe_now(struct session *ss, uint32_t req, const struct proto_subscribe *m)
{
    struct ferry_err err;
    ferry_err_clear(&err);
    struct proto_subscribe_ok ok;
    int rc = broker_subscribe(ss->bc, m->channel, m->start, m->from_id, m->durable, m->window,
                              &ok.sub_id, &ok.next_event_id, &err);
    if (rc != 0) {
        reply_err(ss, req, &err);
        return;
    }
    if (proto_encode_subscribe_ok(&ss->obuf, req, &ok) == 0)
        ss->srv->frames_out++;
    session_mark_dirty(ss);
    ss->srv->pump_wanted = 1;
}

static void consume_now(struct session *ss, uint32_t req, const struct proto_consume *m)
{
    struct ferry_err err;
    ferry_err_clear(&err);
    uint64_t id;
    int rc = broker_consume(ss->bc, m->queue, m->prefetch, &id, &err);
    if (rc != 0) {
        reply_err(ss, req, &err);
        return;
    }
    reply_id(ss, PROTO_CONSUME_OK, req, id);
    ss->srv->pump_wanted = 1;
}

static void done_prepare(void *ctx, const struct broker_result *res)
{
    struct pending *p = ctx;
    struct session *ss = p->ss;
    /* EEXIST from a CREATE means someone created it differently: let the
     * subscribe/consume report what is wrong (EWRONGTYPE) below. */
    if (ss && ss->bc) {
        if (res->status != 0 && res->status != FERRY_EEXIST)
            session_error(ss, p->req, res->status, "%s", res->msg);
        else if (p->op == PROTO_SUBSCRIBE)
            subscribe_now(ss, p->req, &p->u.sub);
        else
            consume_now(ss, p->req, &p->u.con);
    }
    pending_free(p);
}

/* ---- helpers ---- */

static int check_name(struct session *ss, uint32_t req, const char *what, const char *name)
{
    if (proto_name_valid(name) == 0)
        return 0;
    session_error(ss, req, FERRY_EINVAL,
                  "invalid %s name '%s': use 1 to %d characters of A-Z a-z 0-9 . _ - : /", what,
                  name, PROTO_NAME_MAX);
    return -1;
}

static void fill_defaults(const struct config *cfg, struct broker_cmd *cmd, uint8_t kind)
{
    cmd->kind = kind;
    if (cmd->capacity == 0)
        cmd->capacity = cfg->default_capacity;
    if (cmd->ttl_ms == 0)
        cmd->ttl_ms = cfg->default_ttl_ms;
    if (kind == BROKER_QUEUE && cmd->max_deliveries == 0)
        cmd->max_deliveries = cfg->default_max_deliveries;
}

/* Decode failure of a known op's body: protocol violation. */
static int bad_body(struct session *ss, const struct proto_header *h)
{
    ss->srv->protocol_errors++;
    log_warn("server", "session %llu from %s: malformed %s body, closing",
             (unsigned long long)ss->id, ss->peer, proto_op_name(h->op));
    session_fail(ss, h->request_id, FERRY_EPROTO, "malformed %s request",
                 proto_op_name(h->op));
    return -1;
}

/* ---- handlers ---- */

static int on_hello(struct session *ss, const struct proto_header *h, const uint8_t *b, size_t n)
{
    struct proto_hello m;
    if (proto_decode_hello(b, n, &m) != 0)
        return bad_body(ss, h);
    struct server *srv = ss->srv;
    struct ferry_err err;
    ferry_err_clear(&err);
    if (!(h->flags & PROTO_F_ANY_NODE) && cluster_writable(&srv->cluster, &err) != 0) {
        /* A passive node sends the client to the leader. */
        session_fail(ss, h->request_id, err.code, "%s", err.msg);
        return -1;
    }
    ss->observer = !cluster_serving(&srv->cluster);
    memcpy(ss->producer_id, m.producer_id, sizeof ss->producer_id);
    /* Only a serving session has a broker client: a follower has none, so it
     * can install a snapshot while monitoring sessions are open. */
    if (!ss->observer &&
        broker_client_open(srv->broker, &dispatch_client_ops, ss, &ss->bc) != 0) {
        session_fail(ss, h->request_id, FERRY_ENOMEM, "server out of memory");
        return -1;
    }
    struct proto_hello_ok ok;
    memset(&ok, 0, sizeof ok);
    ok.version = PROTO_VERSION;
    snprintf(ok.server_version, sizeof ok.server_version, "ferryd %s", FERRY_VERSION);
    ok.node_id = srv->cluster.node_id;
    ok.max_frame = srv->max_frame;
    ok.max_message = (uint32_t)srv->cfg->max_message_size;
    snprintf(ok.role, sizeof ok.role, "%s", cluster_role_name(&srv->cluster));
    struct rnode_status *st = ferry_calloc(1, sizeof *st);
    if (st != NULL) {
        cluster_status(&srv->cluster, st);
        for (uint32_t i = 0; i < st->n_peers && ok.endpoint_count < PROTO_MAX_ENDPOINTS; i++) {
            if (st->peers[i].client_address[0] != '\0')
                snprintf(ok.endpoints[ok.endpoint_count++], sizeof ok.endpoints[0], "%s",
                         st->peers[i].client_address);
        }
        ferry_free(st);
    }
    if (ok.endpoint_count == 0) {
        ok.endpoint_count = 1;
        snprintf(ok.endpoints[0], sizeof ok.endpoints[0], "%s", srv->client_address);
    }
    if (proto_encode_hello_ok(&ss->obuf, h->request_id, &ok) == 0)
        srv->frames_out++;
    session_mark_dirty(ss);
    ss->hello_done = 1;
    log_debug("server", "session %llu is '%s'%s", (unsigned long long)ss->id, m.client_name,
              ss->observer ? " (monitoring)" : "");
    return 0;
}

static int on_publish(struct session *ss, const struct proto_header *h, const uint8_t *b, size_t n)
{
    struct proto_publish m;
    if (proto_decode_publish(b, n, &m) != 0)
        return bad_body(ss, h);
    const struct config *cfg = ss->srv->cfg;
    int is_push = h->op == PROTO_PUSH;
    if (check_name(ss, h->request_id, is_push ? "queue" : "channel", m.name) != 0)
        return 0;
    if (m.payload_len > cfg->max_message_size) {
        session_error(ss, h->request_id, FERRY_ETOOBIG,
                      "message of %u bytes exceeds max_message_size %llu", m.payload_len,
                      (unsigned long long)cfg->max_message_size);
        return 0;
    }
    enum broker_kind want = is_push ? BROKER_QUEUE : BROKER_CHANNEL;
    enum broker_kind kind;
    int exists = broker_lookup(ss->srv->broker, m.name, &kind) == 0;
    if (exists && kind != want) {
        session_error(ss, h->request_id, FERRY_EWRONGTYPE, "'%s' is a %s, not a %s", m.name,
                      kind == BROKER_QUEUE ? "queue" : "channel", is_push ? "queue" : "channel");
        return 0;
    }
    if (!exists && !cfg->auto_create) {
        session_error(ss, h->request_id, FERRY_ENOTFOUND,
                      "%s '%s' does not exist (auto_create is off)", is_push ? "queue" : "channel",
                      m.name);
        return 0;
    }
    if (!is_push && (m.pflags & PROTO_PUB_TRANSIENT)) {
        struct ferry_err err;
        ferry_err_clear(&err);
        if (exists && broker_publish_transient(ss->srv->broker, m.name, clock_wall_ms(),
                                               m.payload, m.payload_len, &err) != 0) {
            reply_err(ss, h->request_id, &err);
            return 0;
        }
        reply_id(ss, PROTO_PUBLISH_OK, h->request_id, 0);
        return 0;
    }
    struct broker_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.type = is_push ? BROKER_CMD_PUSH : BROKER_CMD_PUBLISH;
    cmd.flags = cfg->auto_create ? BROKER_CMDF_AUTO_CREATE : 0;
    cmd.ts_ms = clock_wall_ms();
    memcpy(cmd.name, m.name, sizeof cmd.name);
    fill_defaults(cfg, &cmd, want);
    cmd.producer_seq = m.producer_seq;
    memcpy(cmd.producer_id, ss->producer_id, sizeof cmd.producer_id);
    cmd.payload = m.payload;
    cmd.payload_len = m.payload_len;
    struct pending *p = pending_new(ss, h, offsetof(struct pending, u));
    if (p == NULL) {
        session_error(ss, h->request_id, FERRY_ENOMEM, "server out of memory");
        return 0;
    }
    propose(ss, h, &cmd, p, done_publish);
    return 0;
}

/* Propose CREATE (auto_create) and/or DURABLE_CREATE as needed, then continue
 * with subscribe_now/consume_now; or continue at once if nothing is needed. */
static void prepare_then(struct session *ss, const struct proto_header *h, const char *name,
                         enum broker_kind want, const char *durable, struct pending *p)
{
    struct server *srv = ss->srv;
    enum broker_kind kind;
    int exists = broker_lookup(srv->broker, name, &kind) == 0;
    int need_durable = durable && durable[0] && !(exists && kind == want &&
                                                  broker_durable_exists(srv->broker, name, durable));
    if (exists || !srv->cfg->auto_create) {
        if (!need_durable || !exists || kind != want) {
            struct broker_result now = {0};
            done_prepare(p, &now); /* broker_subscribe/consume report the error */
            return;
        }
    }
    struct broker_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.ts_ms = clock_wall_ms();
    snprintf(cmd.name, sizeof cmd.name, "%s", name);
    if (!exists) {
        cmd.type = BROKER_CMD_CREATE;
        fill_defaults(srv->cfg, &cmd, want);
        if (propose(ss, h, &cmd, need_durable ? NULL : p, need_durable ? NULL : done_prepare) != 0) {
            if (need_durable)
                pending_free(p);
            return;
        }
    }
    if (need_durable) {
        memset(&cmd, 0, sizeof cmd);
        cmd.type = BROKER_CMD_DURABLE_CREATE;
        cmd.ts_ms = clock_wall_ms();
        snprintf(cmd.name, sizeof cmd.name, "%s", name);
        snprintf(cmd.name2, sizeof cmd.name2, "%s", durable);
        cmd.id = UINT64_MAX; /* start at the channel's end: new events only */
        propose(ss, h, &cmd, p, done_prepare);
    }
}

static int on_subscribe(struct session *ss, const struct proto_header *h, const uint8_t *b,
                        size_t n)
{
    struct pending *p = pending_new(ss, h, sizeof *p);
    if (p == NULL) {
        session_error(ss, h->request_id, FERRY_ENOMEM, "server out of memory");
        return 0;
    }
    if (proto_decode_subscribe(b, n, &p->u.sub) != 0) {
        pending_free(p);
        return bad_body(ss, h);
    }
    struct proto_subscribe *m = &p->u.sub;
    if (check_name(ss, h->request_id, "channel", m->channel) != 0 ||
        (m->start == PROTO_START_DURABLE &&
         check_name(ss, h->request_id, "durable subscription", m->durable) != 0)) {
        pending_free(p);
        return 0;
    }
    if (m->start > PROTO_START_DURABLE) {
        session_error(ss, h->request_id, FERRY_EINVAL, "unknown subscription start %u", m->start);
        pending_free(p);
        return 0;
    }
    prepare_then(ss, h, m->channel, BROKER_CHANNEL,
                 m->start == PROTO_START_DURABLE ? m->durable : NULL, p);
    return 0;
}

static int on_consume(struct session *ss, const struct proto_header *h, const uint8_t *b, size_t n)
{
    struct pending *p = pending_new(ss, h, sizeof *p);
    if (p == NULL) {
        session_error(ss, h->request_id, FERRY_ENOMEM, "server out of memory");
        return 0;
    }
    if (proto_decode_consume(b, n, &p->u.con) != 0) {
        pending_free(p);
        return bad_body(ss, h);
    }
    if (check_name(ss, h->request_id, "queue", p->u.con.queue) != 0) {
        pending_free(p);
        return 0;
    }
    prepare_then(ss, h, p->u.con.queue, BROKER_QUEUE, NULL, p);
    return 0;
}

static int on_unsubscribe_or_cancel(struct session *ss, const struct proto_header *h,
                                    const uint8_t *b, size_t n)
{
    uint64_t id;
    if (proto_decode_id(b, n, &id) != 0)
        return bad_body(ss, h);
    struct ferry_err err;
    ferry_err_clear(&err);
    int rc;
    if (h->op == PROTO_UNSUBSCRIBE) {
        rc = broker_unsubscribe(ss->bc, id, &err);
    } else {
        struct buf returns;
        buf_init(&returns);
        rc = broker_cancel(ss->bc, id, clock_wall_ms(), &returns, &err);
        if (rc == 0)
            server_return_items(ss->srv, returns.data, returns.len);
        buf_free(&returns);
        ss->srv->pump_wanted = 1;
    }
    if (rc != 0)
        reply_err(ss, h->request_id, &err);
    else
        reply_empty(ss, PROTO_OK, h->request_id);
    return 0;
}

/* ACK, NACK and SUB_ACK: validate against the session's leases/cursors, then propose. */
static int on_settle(struct session *ss, const struct proto_header *h, const uint8_t *b, size_t n)
{
    struct broker_cmd cmd;
    struct ferry_err err;
    ferry_err_clear(&err);
    int rc;
    if (h->op == PROTO_SUB_ACK) {
        struct proto_sub_ack m;
        if (proto_decode_sub_ack(b, n, &m) != 0)
            return bad_body(ss, h);
        rc = broker_sub_ack(ss->bc, m.sub_id, m.event_id, clock_wall_ms(), &cmd, &err);
    } else {
        struct proto_ack m;
        if (proto_decode_ack(b, n, &m) != 0)
            return bad_body(ss, h);
        rc = broker_settle(ss->bc, m.consumer_id, m.item_id, h->op == PROTO_NACK,
                           clock_wall_ms(), &cmd, &err);
    }
    if (rc != 0) {
        reply_err(ss, h->request_id, &err);
        return 0;
    }
    ss->srv->pump_wanted = 1;
    struct pending *p = pending_new(ss, h, offsetof(struct pending, u));
    if (p == NULL || propose(ss, h, &cmd, p, done_ok) != 0) {
        if (p == NULL)
            session_error(ss, h->request_id, FERRY_ENOMEM, "server out of memory");
        if (h->op != PROTO_SUB_ACK) {
            /* The lease was released for this ack; return the item so it is
             * delivered again rather than stranded. */
            struct buf ret;
            buf_init(&ret);
            cmd.type = BROKER_CMD_RETURN;
            if (broker_cmd_encode(&ret, &cmd) == 0)
                server_return_items(ss->srv, ret.data, ret.len);
            buf_free(&ret);
        }
    }
    return 0;
}

static int on_create(struct session *ss, const struct proto_header *h, const uint8_t *b, size_t n)
{
    struct proto_create m;
    if (proto_decode_create(b, n, &m) != 0)
        return bad_body(ss, h);
    if (m.kind != PROTO_KIND_CHANNEL && m.kind != PROTO_KIND_QUEUE) {
        session_error(ss, h->request_id, FERRY_EINVAL,
                      "unknown resource kind %u (1 = channel, 2 = queue)", m.kind);
        return 0;
    }
    if (check_name(ss, h->request_id, "resource", m.name) != 0 ||
        (m.dlq[0] && check_name(ss, h->request_id, "dead-letter queue", m.dlq) != 0))
        return 0;
    if (m.kind == PROTO_KIND_CHANNEL && (m.dlq[0] || m.max_deliveries)) {
        session_error(ss, h->request_id, FERRY_EINVAL,
                      "max_deliveries and dlq apply to queues, not to channel '%s'", m.name);
        return 0;
    }
    struct broker_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    cmd.type = BROKER_CMD_CREATE;
    cmd.ts_ms = clock_wall_ms();
    memcpy(cmd.name, m.name, sizeof cmd.name);
    memcpy(cmd.name2, m.dlq, sizeof cmd.name2);
    cmd.capacity = m.capacity;
    cmd.ttl_ms = m.ttl_ms;
    cmd.max_deliveries = m.max_deliveries;
    fill_defaults(ss->srv->cfg, &cmd, m.kind);
    struct pending *p = pending_new(ss, h, offsetof(struct pending, u));
    if (p == NULL) {
        session_error(ss, h->request_id, FERRY_ENOMEM, "server out of memory");
        return 0;
    }
    propose(ss, h, &cmd, p, done_ok);
    return 0;
}

static int on_delete(struct session *ss, const struct proto_header *h, const uint8_t *b, size_t n)
{
    struct broker_cmd cmd;
    memset(&cmd, 0, sizeof cmd);
    if (h->op == PROTO_DELETE) {
        if (proto_decode_name(b, n, cmd.name, sizeof cmd.name) != 0)
            return bad_body(ss, h);
        cmd.type = BROKER_CMD_DELETE;
    } else {
        if (proto_decode_durable_delete(b, n, cmd.name, cmd.name2) != 0)
            return bad_body(ss, h);
        cmd.type = BROKER_CMD_DURABLE_DELETE;
    }
    enum broker_kind kind;
    if (broker_lookup(ss->srv->broker, cmd.name, &kind) != 0) {
        session_error(ss, h->request_id, FERRY_ENOTFOUND, "no resource named '%s'", cmd.name);
        return 0;
    }
    cmd.ts_ms = clock_wall_ms();
    struct pending *p = pending_new(ss, h, offsetof(struct pending, u));
    if (p == NULL) {
        session_error(ss, h->request_id, FERRY_ENOMEM, "server out of memory");
        return 0;
    }
    propose(ss, h, &cmd, p, done_ok);
    return 0;
}

static void to_proto_info(const struct broker_info *in, struct proto_info *out)
{
    memset(out, 0, sizeof *out);
    out->kind = in->kind;
    memcpy(out->name, in->name, sizeof out->name);
    out->capacity = in->capacity;
    out->ttl_ms = in->ttl_ms;
    out->max_deliveries = in->max_deliveries;
    memcpy(out->dlq, in->dlq, sizeof out->dlq);
    out->count = in->count;
    out->first_id = in->first_id;
    out->last_id = in->last_id;
    out->clients = in->clients;
    out->unacked = in->unacked;
}

static int on_info(struct session *ss, const struct proto_header *h, const uint8_t *b, size_t n)
{
    char name[PROTO_NAME_MAX + 1];
    if (proto_decode_name(b, n, name, sizeof name) != 0)
        return bad_body(ss, h);
    struct broker_info bi;
    struct ferry_err err;
    ferry_err_clear(&err);
    if (broker_info(ss->srv->broker, name, clock_wall_ms(), &bi, &err) != 0) {
        reply_err(ss, h->request_id, &err);
        return 0;
    }
    struct proto_info pi;
    to_proto_info(&bi, &pi);
    if (proto_encode_info_ok(&ss->obuf, h->request_id, &pi) == 0)
        ss->srv->frames_out++;
    session_mark_dirty(ss);
    return 0;
}

static int on_list(struct session *ss, const struct proto_header *h)
{
    struct broker_info *items = NULL;
    size_t count = 0;
    if (broker_list(ss->srv->broker, clock_wall_ms(), &items, &count) != 0) {
        session_error(ss, h->request_id, FERRY_ENOMEM, "server out of memory listing resources");
        return 0;
    }
    struct proto_info *pi = ferry_calloc(count ? count : 1, sizeof *pi);
    if (pi == NULL) {
        ferry_free(items);
        session_error(ss, h->request_id, FERRY_ENOMEM, "server out of memory listing resources");
        return 0;
    }
    for (size_t i = 0; i < count; i++)
        to_proto_info(&items[i], &pi[i]);
    if (proto_encode_list_ok(&ss->obuf, h->request_id, pi, (uint32_t)count) == 0)
        ss->srv->frames_out++;
    session_mark_dirty(ss);
    ferry_free(pi);
    ferry_free(items);
    return 0;
}

static void kv(struct proto_status *st, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void kv(struct proto_status *st, const char *key, const char *fmt, ...)
{
    if (st->count >= PROTO_MAX_KV)
        return;
    struct proto_kv *e = &st->kv[st->count++];
    snprintf(e->key, sizeof e->key, "%s", key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->value, sizeof e->value, fmt, ap);
    va_end(ap);
}

static int on_status(struct session *ss, const struct proto_header *h)
{
    struct server *srv = ss->srv;
    struct broker_stats bs;
    broker_stats(srv->broker, &bs);
    uint64_t idx, term;
    broker_last_applied(srv->broker, &idx, &term);
    struct proto_status *st = ferry_calloc(1, sizeof *st);
    if (st == NULL) {
        session_error(ss, h->request_id, FERRY_ENOMEM, "server out of memory");
        return 0;
    }
    struct rnode_status *rs = ferry_calloc(1, sizeof *rs);
    if (rs == NULL) {
        ferry_free(st);
        session_error(ss, h->request_id, FERRY_ENOMEM, "server out of memory");
        return 0;
    }
    cluster_status(&srv->cluster, rs);
    kv(st, "node_id", "%llu", (unsigned long long)srv->cluster.node_id);
    kv(st, "role", "%s", cluster_role_name(&srv->cluster));
    kv(st, "mode", "%s", srv->cfg->member_count > 0 ? "cluster" : "single-node");
    kv(st, "version", "%s", FERRY_VERSION);
    kv(st, "protocol_version", "%d", PROTO_VERSION);
    kv(st, "client_endpoint", "%s", srv->client_address);
    kv(st, "data_directory", "%s", srv->cfg->data_directory);
    kv(st, "uptime_s", "%llu",
       (unsigned long long)((clock_mono_ms() - srv->started_ms) / 1000));
    kv(st, "serving", "%s", cluster_serving(&srv->cluster) ? "yes" : "no");
    kv(st, "writable", "%s", cluster_writable(&srv->cluster, NULL) == 0 ? "yes" : "no");
    if (srv->cluster.failed)
        kv(st, "write_failure", "%s", srv->cluster.failure.msg);
    kv(st, "leader_id", "%u", rs->leader_id);
    kv(st, "leader", "%s", cluster_leader_address(&srv->cluster));
    kv(st, "term", "%llu", (unsigned long long)rs->term);
    kv(st, "first_index", "%llu", (unsigned long long)rs->first_index);
    kv(st, "last_index", "%llu", (unsigned long long)rs->last_index);
    kv(st, "commit_index", "%llu", (unsigned long long)rs->commit);
    kv(st, "applied_index", "%llu", (unsigned long long)idx);
    kv(st, "snapshot_index", "%llu", (unsigned long long)rs->snapshot_index);
    kv(st, "log_memory_bytes", "%llu", (unsigned long long)rs->log_bytes);
#ifdef __GLIBC__
    {
        struct mallinfo2 mi = mallinfo2();
        kv(st, "heap_in_use_bytes", "%llu", (unsigned long long)(mi.uordblks + mi.hblkhd));
    }
#endif
    if (h->flags & PROTO_F_DIGEST) {
        char hex[BROKER_DIGEST_HEX];
        uint64_t didx = 0, dterm = 0;
        struct ferry_err derr;
        ferry_err_clear(&derr);
        if (broker_digest(srv->broker, hex, &didx, &dterm, &derr) == 0) {
            kv(st, "digest", "%s", hex);
            kv(st, "digest_index", "%llu", (unsigned long long)didx);
        } else {
            kv(st, "digest", "error: %s", derr.msg);
        }
    }
    kv(st, "log_syncs", "%llu", (unsigned long long)rs->syncs);
    kv(st, "links_tls", "%s", srv->tls.node_accept != NULL ? "yes" : "no");
    kv(st, "links_refused", "%llu", (unsigned long long)rs->links_refused);
    kv(st, "links_last_refused", "%s", rs->links_last_refused[0] ? rs->links_last_refused : "-");
    kv(st, "links_tls_failed", "%llu", (unsigned long long)rs->links_tls_failed);
    kv(st, "log_entries_written", "%llu", (unsigned long long)rs->entries_persisted);
    for (uint32_t i = 0; i < rs->n_peers; i++) {
        const struct rnode_peer_status *p = &rs->peers[i];
        uint64_t lag = rs->role == RAFT_LEADER && rs->last_index > p->match
                           ? rs->last_index - p->match
                           : 0;
        char key[32];
        snprintf(key, sizeof key, "member.%u", p->id);
        kv(st, key, "role=%s priority=%u reachable=%s match=%llu lag=%llu client=%s",
           p->id == rs->leader_id ? "leader"
           : p->role == RAFT_LEARNER ? "learner"
           : p->priority == 0       ? "witness"
                                    : "follower",
           p->priority, p->reachable ? "yes" : "no", (unsigned long long)p->match,
           (unsigned long long)lag, p->client_address[0] ? p->client_address : "-");
    }
    ferry_free(rs);
    kv(st, "connections", "%u", srv->session_count);
    kv(st, "resources", "%llu", (unsigned long long)bs.resources);
    kv(st, "channels", "%llu", (unsigned long long)bs.channels);
    kv(st, "queues", "%llu", (unsigned long long)bs.queues);
    kv(st, "stored_messages", "%llu", (unsigned long long)bs.stored_messages);
    kv(st, "subscriptions", "%llu", (unsigned long long)bs.subscriptions);
    kv(st, "consumers", "%llu", (unsigned long long)bs.consumers);
    kv(st, "history_records", "%llu", (unsigned long long)bs.history_records);
    kv(st, "producers", "%llu", (unsigned long long)bs.producers);
    kv(st, "entries_applied", "%llu", (unsigned long long)srv->cluster.entries_committed);
    kv(st, "commands_committed", "%llu", (unsigned long long)srv->cluster.commands_committed);
    kv(st, "frames_in", "%llu", (unsigned long long)srv->frames_in);
    kv(st, "frames_out", "%llu", (unsigned long long)srv->frames_out);
    kv(st, "protocol_errors", "%llu", (unsigned long long)srv->protocol_errors);
    static const char *const client_tls[] = {"no", "yes", "required"};
    kv(st, "client_tls", "%s", client_tls[srv->cfg->client_tls]);
    kv(st, "tls_sessions", "%llu", (unsigned long long)srv->tls_sessions);
    kv(st, "tls_failures", "%llu", (unsigned long long)srv->tls_failures);
    kv(st, "plaintext_refused", "%llu", (unsigned long long)srv->plaintext_refused);
    kv(st, "handshake_timeouts", "%llu", (unsigned long long)srv->handshake_timeouts);
    char cert[200] = "-";
    if (srv->tls.node_accept != NULL)
        tls_ctx_describe(srv->tls.node_accept, cert, sizeof cert);
    kv(st, "links_certificate", "%s", cert);
    snprintf(cert, sizeof cert, "-");
    if (srv->tls.client != NULL)
        tls_ctx_describe(srv->tls.client, cert, sizeof cert);
    kv(st, "client_certificate", "%s", cert);
    kv(st, "tls_reloads", "%llu", (unsigned long long)srv->tls_reloads);
    kv(st, "tls_reload_failures", "%llu", (unsigned long long)srv->tls_reload_failures);
    kv(st, "max_message_size", "%llu", (unsigned long long)srv->cfg->max_message_size);
    if (proto_encode_status_ok(&ss->obuf, h->request_id, st) == 0)
        srv->frames_out++;
    session_mark_dirty(ss);
    ferry_free(st);
    return 0;
}

/* "host:port" or "[v6]:port" into host and port; 0 or -1. */
static int split_address(const char *s, char *host, size_t cap, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (colon == NULL || colon == s || colon[1] == '\0')
        return -1;
    const char *h = s;
    size_t hl = (size_t)(colon - s);
    if (h[0] == '[') {
        if (hl < 3 || h[hl - 1] != ']')
            return -1;
        h++;
        hl -= 2;
    }
    if (hl >= cap)
        return -1;
    char *end;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (*end != '\0' || p == 0 || p > 65535)
        return -1;
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)p;
    return 0;
}

/* ADMIN: membership, leadership and snapshots, on the serving leader (a
 * monitoring session was already answered ENOTLEADER with the leader). */
static int on_admin(struct session *ss, const struct proto_header *h, const uint8_t *b, size_t n)
{
    struct proto_admin m;
    if (proto_decode_admin(b, n, &m) != 0)
        return bad_body(ss, h);
    struct server *srv = ss->srv;
    struct cluster *c = &srv->cluster;
    struct ferry_err err;
    ferry_err_clear(&err);
    int rc;
    if (c->node == NULL || cluster_writable(c, &err) != 0) {
        if (err.code == 0)
            ferry_err_set(&err, FERRY_EUNAVAILABLE, "the server is stopping");
        reply_err(ss, h->request_id, &err);
        return 0;
    }
    if (m.action != PROTO_ADMIN_SNAPSHOT && srv->cfg->member_count == 0) {
        session_error(ss, h->request_id, FERRY_ENOTSUP,
                      "this server runs as a single node: membership and leadership need "
                      "cluster_membership");
        return 0;
    }
    char host[PROTO_NAME_MAX + 1];
    uint16_t port = 0;
    uint64_t snap = 0;
    switch (m.action) {
    case PROTO_ADMIN_TRANSFER:
        rc = cluster_transfer(c, m.node_id, &err);
        break;
    case PROTO_ADMIN_ADD_NODE:
        if (m.node_id == 0 || split_address(m.address, host, sizeof host, &port) != 0) {
            session_error(ss, h->request_id, FERRY_EINVAL,
                          "add-node needs a node id above 0 and a replication address "
                          "HOST:PORT, not %u '%s'",
                          m.node_id, m.address);
            return 0;
        }
        rc = cluster_add(c, m.node_id, m.priority, host, port, &err);
        break;
    case PROTO_ADMIN_REMOVE_NODE:
        rc = cluster_remove(c, m.node_id, &err);
        break;
    case PROTO_ADMIN_SNAPSHOT:
        rc = cluster_snapshot(c, &snap, &err);
        break;
    default:
        session_error(ss, h->request_id, FERRY_ENOTSUP, "unknown ADMIN action %u", m.action);
        return 0;
    }
    if (rc != 0) {
        reply_err(ss, h->request_id, &err);
        return 0;
    }
    if (m.action == PROTO_ADMIN_SNAPSHOT)
        log_info("server", "session %llu from %s: snapshot at index %llu requested",
                 (unsigned long long)ss->id, ss->peer, (unsigned long long)snap);
    else
        log_info("server", "session %llu from %s: admin action %u (node %u) accepted",
                 (unsigned long long)ss->id, ss->peer, m.action, m.node_id);
    reply_empty(ss, PROTO_OK, h->request_id);
    return 0;
}

int dispatch_frame(struct session *ss, const struct proto_header *h, const uint8_t *body,
                   size_t len)
{
    if (!ss->hello_done) {
        if (h->op != PROTO_HELLO) {
            ss->srv->protocol_errors++;
            session_fail(ss, h->request_id, FERRY_EPROTO, "expected HELLO, got %s (op 0x%02x)",
                         proto_op_name(h->op), h->op);
            return -1;
        }
        return on_hello(ss, h, body, len);
    }
    if (ss->closing)
        return -1; /* said goodbye (lost leadership, shutdown): read nothing more */
    if (ss->observer && h->op != PROTO_PING && h->op != PROTO_STATUS) {
        struct ferry_err err;
        ferry_err_clear(&err);
        if (cluster_writable(&ss->srv->cluster, &err) == 0)
            ferry_err_set(&err, FERRY_ENOTLEADER, "a monitoring session takes STATUS and PING only");
        session_error(ss, h->request_id, err.code, "%s", err.msg);
        return 0;
    }
    switch (h->op) {
    case PROTO_PING:
        reply_empty(ss, PROTO_PONG, h->request_id);
        return 0;
    case PROTO_PUBLISH:
    case PROTO_PUSH:
        return on_publish(ss, h, body, len);
    case PROTO_SUBSCRIBE:
        return on_subscribe(ss, h, body, len);
    case PROTO_UNSUBSCRIBE:
    case PROTO_CANCEL:
        return on_unsubscribe_or_cancel(ss, h, body, len);
    case PROTO_SUB_ACK:
    case PROTO_ACK:
    case PROTO_NACK:
        return on_settle(ss, h, body, len);
    case PROTO_CONSUME:
        return on_consume(ss, h, body, len);
    case PROTO_CREATE:
        return on_create(ss, h, body, len);
    case PROTO_DELETE:
    case PROTO_DURABLE_DELETE:
        return on_delete(ss, h, body, len);
    case PROTO_LIST:
        return on_list(ss, h);
    case PROTO_INFO:
        return on_info(ss, h, body, len);
    case PROTO_STATUS:
        return on_status(ss, h);
    case PROTO_ADMIN:
        return on_admin(ss, h, body, len);
    case PROTO_HELLO:
        session_error(ss, h->request_id, FERRY_ESTATE, "HELLO was already received");
        return 0;
    default:
        session_error(ss, h->request_id, FERRY_ENOTSUP, "unknown operation 0x%02x", h->op);
        return 0;
    }
}

/* ---- broker -> session ---- */

static int client_deliver(void *ctx, int is_delivery, const struct broker_msg *m)
{
    struct session *ss = ctx;
    if (ss->closing || ss->closed)
        return FERRY_EBUSY;
    if (session_output_bytes(ss) > ss->srv->cfg->output_buffer_limit) {
        ss->deliver_blocked = 1;
        return FERRY_EBUSY;
    }
    int rc;
    if (is_delivery) {
        struct proto_delivery d = {.consumer_id = m->handle,
                                   .item_id = m->id,
                                   .delivery_count = m->delivery_count,
                                   .timestamp_ms = m->ts_ms,
                                   .payload = m->payload,
                                   .payload_len = m->payload_len};
        rc = proto_encode_delivery(&ss->obuf, &d);
    } else {
        struct proto_event e = {.sub_id = m->handle,
                                .event_id = m->id,
                                .timestamp_ms = m->ts_ms,
                                .eflags = m->transient ? PROTO_PUB_TRANSIENT : 0,
                                .payload = m->payload,
                                .payload_len = m->payload_len};
        rc = proto_encode_event(&ss->obuf, &e);
    }
    if (rc != 0) {
        ss->deliver_blocked = 1;
        return FERRY_EBUSY;
    }
    ss->srv->frames_out++;
    session_mark_dirty(ss);
    return 0;
}

static void client_ended(void *ctx, uint64_t handle, int code, const char *msg)
{
    struct session *ss = ctx;
    struct proto_sub_end e;
    memset(&e, 0, sizeof e);
    e.id = handle;
    e.code = code;
    snprintf(e.message, sizeof e.message, "%s", msg);
    if (proto_encode_sub_end(&ss->obuf, &e) == 0)
        ss->srv->frames_out++;
    session_mark_dirty(ss);
}

const struct broker_client_ops dispatch_client_ops = {
    .deliver = client_deliver,
    .ended = client_ended,
};
