/* cluster.c - proposals, apply on commit, snapshots and roles.
 *
 * Proposals: the commands of one turn are encoded into `entry`; at the end
 * of the turn the entry is proposed to the Raft node and moved, with its
 * callbacks, to the in-flight list (oldest first, by index). apply() matches
 * committed entries against that list by (index, term): same term means our
 * entry committed and its results go to the callbacks; another term at that
 * index means ours was overwritten by a new leader's log and never took
 * effect.
 */
#include "cluster/cluster.h"

#include "util/alloc.h"
#include "util/log.h"
#include <assert.h>
#include <stdio.h>
#include <string.h>

struct cluster_inflight {
    struct cluster_inflight *next;
    uint64_t index;
    uint64_t term;
    size_t n;
    struct cluster_pending *pend;  /* n */
    struct broker_result *results; /* n */
};

/* ---- callbacks ------------------------------------------------------------ */

static void set_result(struct broker_result *r, int status, const char *msg)
{
    r->status = status;
    r->id = 0;
    r->duplicate = 0;
    snprintf(r->msg, sizeof r->msg, "%s", msg);
}

static void inflight_fail(struct cluster_inflight *f, int status, const char *msg)
{
    for (size_t i = 0; i < f->n; i++)
        set_result(&f->results[i], status, msg);
}

static void push_done(struct cluster *c, struct cluster_inflight *f)
{
    f->next = NULL;
    if (c->done_tail)
        c->done_tail->next = f;
    else
        c->done = f;
    c->done_tail = f;
}

/* Run the callbacks of every finished entry. Callbacks may propose. */
static void run_done(struct cluster *c)
{
    while (c->done != NULL) {
        struct cluster_inflight *f = c->done;
        c->done = f->next;
        if (c->done == NULL)
            c->done_tail = NULL;
        for (size_t i = 0; i < f->n; i++) {
            if (f->pend[i].cb)
                f->pend[i].cb(f->pend[i].ctx, &f->results[i]);
        }
        ferry_free(f);
    }
}

/* Every proposal in flight ends with status/msg (leadership or storage lost). */
static void fail_inflight(struct cluster *c, int status, const char *msg)
{
    while (c->head != NULL) {
        struct cluster_inflight *f = c->head;
        c->head = f->next;
        inflight_fail(f, status, msg);
        push_done(c, f);
    }
    c->tail = NULL;
}

/* Commands queued this turn but never proposed: definitely not applied. */
static void fail_pending(struct cluster *c, int status, const char *msg)
{
    if (c->npend == 0)
        return;
    struct broker_result r;
    set_result(&r, status, msg);
    size_t n = c->npend;
    struct cluster_pending *pend = c->pend;
    c->pend = NULL;
    c->npend = 0;
    c->cap_pend = 0;
    buf_reset(&c->entry);
    for (size_t i = 0; i < n; i++) {
        if (pend[i].cb)
            pend[i].cb(pend[i].ctx, &r);
    }
    ferry_free(pend);
}

/* ---- the node's callbacks ------------------------------------------------ */

static void set_serving(struct cluster *c, int serving)
{
    if (c->serving == serving)
        return;
    c->serving = serving;
    log_info("cluster", "node %u %s serving clients", c->node_id, serving ? "is now" : "stopped");
    if (c->ev.on_serving)
        c->ev.on_serving(c->ev_ctx, serving);
}

/* The batch was rolled back: results gathered for it are void. The entries
 * are committed in the log, so they will be applied after recovery. */
static int apply_failed(struct cluster *c, int rc)
{
    for (struct cluster_inflight *f = c->done; f != NULL; f = f->next) {
        if (f->n > 0 && f->results[0].status != FERRY_EUNAVAILABLE)
            inflight_fail(f, FERRY_EUNAVAILABLE,
                          "outcome unknown: storage failed applying a committed entry; it is "
                          "applied once storage works again");
    }
    return rc;
}

static int node_apply(struct rnode *n, const struct raft_entry *es, uint32_t count,
                      struct ferry_err *err)
{
    struct cluster *c = rnode_data(n);
    int rc = broker_begin(c->broker, err);
    if (rc != 0)
        return rc;
    int noop_of_term = 0;
    for (uint32_t i = 0; i < count; i++) {
        const struct raft_entry *e = &es[i];
        /* Proposals at lower indexes were overwritten before reaching here. */
        while (c->head != NULL && c->head->index < e->index) {
            struct cluster_inflight *f = c->head;
            c->head = f->next;
            inflight_fail(f, FERRY_EUNAVAILABLE,
                          "not committed: leadership changed before the entry was replicated");
            push_done(c, f);
        }
        if (c->head == NULL)
            c->tail = NULL;
        struct cluster_inflight *mine = NULL;
        if (c->head != NULL && c->head->index == e->index) {
            mine = c->head;
            c->head = mine->next;
            if (c->head == NULL)
                c->tail = NULL;
            if (mine->term != e->term) {
                inflight_fail(mine, FERRY_EUNAVAILABLE,
                              "not committed: leadership changed before the entry was replicated");
                push_done(c, mine);
                mine = NULL;
            }
        }
        const uint8_t *data = e->type == RAFT_ENTRY_NORMAL ? e->data : NULL;
        uint32_t len = e->type == RAFT_ENTRY_NORMAL ? e->len : 0;
        rc = broker_apply(c->broker, e->index, e->term, data, len, mine ? mine->results : NULL,
                          mine ? mine->n : 0, err);
        if (rc != 0) {
            if (mine != NULL)
                push_done(c, mine);
            broker_rollback(c->broker);
            return apply_failed(c, rc);
        }
        if (mine != NULL) {
            push_done(c, mine);
            c->commands_committed += mine->n;
        }
        c->entries_committed++;
        c->last_applied = e->index;
        if (e->type == RAFT_ENTRY_NOOP && e->term == rnode_term(n) && rnode_is_leader(n))
            noop_of_term = 1;
    }
    rc = broker_commit(c->broker, err);
    if (rc != 0)
        return apply_failed(c, rc);
    if (noop_of_term)
        set_serving(c, 1);
    run_done(c);
    if (c->ev.on_applied)
        c->ev.on_applied(c->ev_ctx);
    return 0;
}

static void node_on_role(struct rnode *n)
{
    struct cluster *c = rnode_data(n);
    if (rnode_is_leader(n))
        return; /* serving starts when the term's no-op is applied */
    set_serving(c, 0);
    fail_inflight(c, FERRY_EUNAVAILABLE,
                  "outcome unknown: this node lost leadership before the entry committed; "
                  "the new leader may still commit it");
    fail_pending(c, FERRY_ENOTLEADER, "this node is no longer the leader");
    run_done(c);
}

static int node_snapshot_begin(struct rnode *n, uint64_t index, void **job, struct ferry_err *err)
{
    struct cluster *c = rnode_data(n);
    struct broker_snap *s = NULL;
    int rc = broker_snapshot_begin(c->broker, &s, err);
    if (rc != 0)
        return rc;
    assert(broker_snapshot_index(s) >= index || index > c->last_applied);
    *job = s;
    return 0;
}

static int node_snapshot_write(void *job, rnode_write_fn write, void *wctx, struct ferry_err *err)
{
    return broker_snapshot_write(job, write, wctx, err);
}

static void node_snapshot_end(void *job)
{
    broker_snapshot_end(job);
}

static int node_restore(struct rnode *n, rnode_read_fn read, void *rctx, int *skipped,
                        struct ferry_err *err)
{
    struct cluster *c = rnode_data(n);
    int rc = broker_restore(c->broker, read, rctx, skipped, err);
    if (rc == 0 && !*skipped) {
        uint64_t term;
        broker_last_applied(c->broker, &c->last_applied, &term);
        if (c->ev.on_applied)
            c->ev.on_applied(c->ev_ctx);
    }
    return rc;
}

static void node_on_failed(struct rnode *n, const struct ferry_err *why)
{
    struct cluster *c = rnode_data(n);
    c->failed = 1;
    c->failure = *why;
    char msg[160];
    int len = snprintf(msg, sizeof msg, "outcome unknown: storage failed on the leader: ");
    snprintf(msg + len, sizeof msg - (size_t)len, "%.*s", (int)(sizeof msg - (size_t)len - 1),
             why->msg);
    set_serving(c, 0);
    fail_inflight(c, FERRY_EUNAVAILABLE, msg);
    fail_pending(c, FERRY_EUNAVAILABLE, "storage failed on this node");
    run_done(c);
}

static void node_on_recovered(struct rnode *n)
{
    struct cluster *c = rnode_data(n);
    c->failed = 0;
}

/* ---- public ------------------------------------------------------------------ */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h;
}

void cluster_set_tls(struct cluster *c, const struct cluster_tls *tls)
{
    if (c->node != NULL)
        rnode_set_tls(c->node, tls->accept, tls->dial);
}

int cluster_start(struct cluster *c, uv_loop_t *loop, const struct config *cfg,
                  const struct cluster_tls *tls, struct broker *b,
                  const struct cluster_events *ev, void *ctx, struct ferry_err *err)
{
    memset(c, 0, sizeof *c);
    c->broker = b;
    c->ev = *ev;
    c->ev_ctx = ctx;
    buf_init(&c->entry);
    uint64_t term;
    broker_last_applied(b, &c->last_applied, &term);

    struct rnode_member members[CONFIG_MAX_MEMBERS];
    struct rnode_config rc_cfg;
    memset(&rc_cfg, 0, sizeof rc_cfg);
    char client_address[CONFIG_HOST_MAX + 16] = "";
    int witness = 0;
    for (uint32_t i = 0; i < cfg->member_count; i++)
        witness |= cfg->members[i].id == cfg->cluster_node_id && cfg->members[i].priority == 0;
    if (cfg->client_endpoint.port != 0 && !witness) /* a witness has no client endpoint */
        snprintf(client_address, sizeof client_address, "%s:%u", cfg->client_endpoint.host,
                 cfg->client_endpoint.port);
    if (cfg->member_count == 0) {
        /* A cluster of one: its replication listener takes any free port on
         * the client host and nobody dials it. */
        c->node_id = 1;
        members[0].id = 1;
        members[0].priority = 1;
        members[0].host = cfg->client_endpoint.host;
        members[0].port = 0;
        rc_cfg.n_members = 1;
        rc_cfg.listen_host = cfg->client_endpoint.host;
        rc_cfg.listen_port = 0;
    } else {
        c->node_id = cfg->cluster_node_id;
        for (uint32_t i = 0; i < cfg->member_count; i++) {
            members[i].id = cfg->members[i].id;
            members[i].priority = (uint8_t)cfg->members[i].priority;
            members[i].host = cfg->members[i].endpoint.host;
            members[i].port = cfg->members[i].endpoint.port;
            if (members[i].id == c->node_id)
                c->priority = (int)cfg->members[i].priority;
        }
        rc_cfg.n_members = cfg->member_count;
        rc_cfg.listen_host = cfg->cluster_node_endpoint.host;
        rc_cfg.listen_port = cfg->cluster_node_endpoint.port;
        for (uint32_t i = 0; i < cfg->member_count && rc_cfg.listen_port == 0; i++) {
            if (cfg->members[i].id == c->node_id) { /* default: this node's own entry */
                rc_cfg.listen_host = cfg->members[i].endpoint.host;
                rc_cfg.listen_port = cfg->members[i].endpoint.port;
            }
        }
    }
    rc_cfg.cluster_id = fnv1a(cfg->cluster_name);
    rc_cfg.self_id = c->node_id;
    rc_cfg.members = members;
    rc_cfg.log_dir = cfg->replication_logfile_directory;
    rc_cfg.max_segment_bytes = cfg->logfile_max_size;
    rc_cfg.max_generations = cfg->logfile_max_generations;
    rc_cfg.snapshot_distance = (uint32_t)cfg->snapshot_distance;
    /* The core keeps applied entries in memory until a snapshot covers them:
     * one segment's worth of payload at most. */
    rc_cfg.snapshot_bytes = cfg->logfile_max_size;
    rc_cfg.heartbeat_ms = cfg->raft_heartbeat_ms;
    rc_cfg.election_timeout_ms = cfg->raft_election_min_ms;
    rc_cfg.election_timeout_max_ms = cfg->raft_election_max_ms;
    rc_cfg.verify_ip = cfg->verify_replication_node_ip;
    if (tls != NULL) {
        rc_cfg.tls_accept = tls->accept;
        rc_cfg.tls_dial = tls->dial;
    }
    rc_cfg.join = cfg->cluster_join;
    rc_cfg.client_address = client_address;
    rc_cfg.seed = ((uint64_t)c->node_id << 32) ^ (uint64_t)uv_hrtime();

    struct rnode_callbacks cb = {
        .apply = node_apply,
        .on_role = node_on_role,
        .snapshot_begin = node_snapshot_begin,
        .snapshot_write = node_snapshot_write,
        .snapshot_end = node_snapshot_end,
        .restore = node_restore,
        .on_failed = node_on_failed,
        .on_recovered = node_on_recovered,
    };
    int rc = rnode_start(&c->node, loop, &rc_cfg, &cb, c, err);
    if (rc != 0) {
        buf_free(&c->entry);
        return rc;
    }
    return 0;
}

void cluster_stop(struct cluster *c, void (*done)(void *arg), void *arg)
{
    fail_pending(c, FERRY_EUNAVAILABLE, "server is shutting down");
    fail_inflight(c, FERRY_EUNAVAILABLE,
                  "outcome unknown: the server stopped before the entry committed");
    run_done(c);
    if (c->node != NULL)
        rnode_stop(c->node, done, arg);
    c->node = NULL;
    c->serving = 0;
    buf_free(&c->entry);
    ferry_free(c->pend);
    c->pend = NULL;
    c->npend = c->cap_pend = 0;
}

const char *cluster_leader_address(const struct cluster *c)
{
    if (c->node == NULL)
        return "";
    uint32_t leader = rnode_leader(c->node);
    return leader != 0 ? rnode_client_address(c->node, leader) : "";
}

const char *cluster_role_name(const struct cluster *c)
{
    if (c->node == NULL || c->failed)
        return "failed";
    struct rnode_status st;
    rnode_status(c->node, &st);
    if (c->priority == 0 && st.n_peers > 1 && c->node_id != 0) {
        for (uint32_t i = 0; i < st.n_peers; i++) {
            if (st.peers[i].id == c->node_id && st.peers[i].priority == 0 &&
                st.peers[i].role == RAFT_VOTER && st.role != RAFT_LEADER)
                return "witness";
        }
    }
    for (uint32_t i = 0; i < st.n_peers; i++) {
        if (st.peers[i].id == c->node_id && st.peers[i].role == RAFT_LEARNER)
            return "learner";
    }
    return raft_role_name(st.role);
}

int cluster_writable(const struct cluster *c, struct ferry_err *err)
{
    if (c->failed)
        return ferry_err_set(err, FERRY_EUNAVAILABLE, "node is not accepting writes: %s",
                             c->failure.msg);
    if (c->serving)
        return 0;
    const char *leader = cluster_leader_address(c);
    if (leader[0] != '\0')
        return ferry_err_set(err, FERRY_ENOTLEADER, "node %u is not the leader; the leader is %s",
                             c->node_id, leader);
    return ferry_err_set(err, FERRY_ENOTLEADER,
                         "node %u is not the leader, and no leader is known "
                         "yet",
                         c->node_id);
}

static int reserve_pending(struct cluster *c, size_t extra)
{
    if (c->npend + extra <= c->cap_pend)
        return 0;
    size_t cap = c->cap_pend ? c->cap_pend : 256;
    while (cap < c->npend + extra)
        cap *= 2;
    struct cluster_pending *p = ferry_realloc(c->pend, cap * sizeof *p);
    if (p == NULL)
        return FERRY_ENOMEM;
    c->pend = p;
    c->cap_pend = cap;
    return 0;
}

int cluster_propose(struct cluster *c, const struct broker_cmd *cmd, cluster_done_cb cb, void *ctx,
                    struct ferry_err *err)
{
    int rc = cluster_writable(c, err);
    if (rc)
        return rc;
    if (reserve_pending(c, 1) != 0)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory queueing a command");
    size_t before = c->entry.len;
    rc = broker_cmd_encode(&c->entry, cmd);
    if (rc) {
        c->entry.len = before;
        return ferry_err_set(err, rc, "cannot encode command: %s", ferry_strerror(rc));
    }
    c->pend[c->npend].cb = cb;
    c->pend[c->npend].ctx = ctx;
    c->npend++;
    return 0;
}

int cluster_propose_encoded(struct cluster *c, const uint8_t *p, size_t len, struct ferry_err *err)
{
    int rc = cluster_writable(c, err);
    if (rc)
        return rc;
    size_t n = 0;
    for (size_t off = 0; off < len;) {
        struct broker_cmd cmd;
        size_t used;
        rc = broker_cmd_decode(p + off, len - off, &cmd, &used);
        if (rc)
            return ferry_err_set(err, rc, "cannot queue malformed commands");
        off += used;
        n++;
    }
    if (reserve_pending(c, n) != 0 || buf_append(&c->entry, p, len) != 0)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory queueing commands");
    for (size_t i = 0; i < n; i++) {
        c->pend[c->npend].cb = NULL;
        c->pend[c->npend].ctx = NULL;
        c->npend++;
    }
    return 0;
}

int cluster_flush(struct cluster *c)
{
    if (c->npend == 0)
        return 0;
    size_t n = c->npend;
    struct cluster_inflight *f = ferry_malloc(
        sizeof *f + n * (sizeof(struct cluster_pending) + sizeof(struct broker_result)));
    struct ferry_err err;
    ferry_err_clear(&err);
    int rc = 0;
    if (f == NULL) {
        rc = ferry_err_set(&err, FERRY_ENOMEM, "out of memory proposing an entry");
    } else if (c->entry.len > RAFT_MAX_ENTRY_BYTES) {
        rc = ferry_err_set(&err, FERRY_ETOOBIG, "entry of %zu bytes is over the Raft limit",
                           c->entry.len);
    } else {
        uint64_t index = 0, term = 0;
        rc = rnode_propose(c->node, c->entry.data, (uint32_t)c->entry.len, &index, &term, &err);
        if (rc == 0) {
            f->next = NULL;
            f->index = index;
            f->term = term;
            f->n = n;
            f->pend = (struct cluster_pending *)(f + 1);
            f->results = (struct broker_result *)(f->pend + n);
            memcpy(f->pend, c->pend, n * sizeof *f->pend);
            memset(f->results, 0, n * sizeof *f->results);
            if (c->tail)
                c->tail->next = f;
            else
                c->head = f;
            c->tail = f;
            c->npend = 0;
            buf_reset(&c->entry);
            if (c->entry.cap > 1u << 20) /* don't keep a burst's worth of memory */
                buf_free(&c->entry);
            return (int)n;
        }
    }
    ferry_free(f);
    fail_pending(c, rc == FERRY_ENOTLEADER ? FERRY_ENOTLEADER : FERRY_EUNAVAILABLE, err.msg);
    return rc;
}

int cluster_transfer(struct cluster *c, uint32_t target, struct ferry_err *err)
{
    return rnode_transfer(c->node, target, err);
}

int cluster_remove(struct cluster *c, uint32_t id, struct ferry_err *err)
{
    return rnode_remove(c->node, id, err);
}

int cluster_add(struct cluster *c, uint32_t id, uint8_t priority, const char *host, uint16_t port,
                struct ferry_err *err)
{
    return rnode_add_member(c->node, id, priority, host, port, err);
}

int cluster_snapshot(struct cluster *c, uint64_t *index, struct ferry_err *err)
{
    return rnode_snapshot_now(c->node, index, err);
}

void cluster_status(const struct cluster *c, struct rnode_status *out)
{
    if (c->node == NULL) {
        memset(out, 0, sizeof *out);
        out->id = c->node_id;
        return;
    }
    rnode_status(c->node, out);
}
