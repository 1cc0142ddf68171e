/* node.c - stepping the core and carrying out its updates on the loop.
 *
 * Every input (a message, a timer, a durable batch, a proposal) becomes one
 * raft_step; act() then performs the update in the contract's order (see
 * raft/core/raft.h). Storage failures stop the node and a retry timer
 * rebuilds it from disk (see node.h).
 */
#include "raft/node/node_int.h"

#include "raft/core/codec.h"
#include "util/alloc.h"
#include "util/clock.h"
#include "util/log.h"
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <string.h>

#define RETRY_MS 1000
#define RETRY_MAX_MS 8000
#define PROBE_BYTES (1024 * 1024)
#define SNAPSHOT_RETRY_MS 5000

static void act(struct rnode *n);
static void enter_failed(struct rnode *n, const struct ferry_err *why);

/* ---- stepping ----------------------------------------------------------- */

static int step(struct rnode *n, struct raft_event *ev)
{
    assert(!n->in_step && "rnode: a callback stepped the core");
    if (n->core == NULL)
        return FERRY_EUNAVAILABLE;
    ev->now_ms = clock_mono_ms();
    n->in_step = 1;
    int rc = raft_step(n->core, ev, &n->up);
    if (rc == FERRY_ENOMEM) {
        n->in_step = 0;
        struct ferry_err why;
        ferry_err_set(&why, FERRY_ENOMEM, "out of memory in the Raft core");
        enter_failed(n, &why);
        return rc;
    }
    act(n);
    n->in_step = 0;
    return rc;
}

/* Leader: promote a learner whose log is within catchup_margin entries of
 * ours and holds at least the entry that made it a learner, once no other
 * change is in flight. The second condition matters while the log is short:
 * by the margin alone, a learner that never answered (match 0) would count
 * as caught up, and promoting a node that is down raises the quorum. Runs on
 * every tick (a heartbeat on a leader), so a learner becomes a voter about a
 * heartbeat after it caught up; the core checks again and refuses (EBUSY,
 * EAGAIN) when it may not. */
static void maybe_promote(struct rnode *n)
{
    if (n->core == NULL || n->stopping || raft_role(n->core) != RAFT_LEADER ||
        raft_config_index(n->core) > raft_commit_index(n->core))
        return;
    const struct raft_config *c = raft_config(n->core);
    uint64_t last = raft_last_index(n->core);
    for (uint32_t i = 0; i < c->n; i++) {
        uint64_t match = 0, next = 0;
        uint64_t id = c->nodes[i].id;
        if (c->nodes[i].role != RAFT_LEARNER || raft_progress(n->core, id, &match, &next) != 0 ||
            match + n->opts.catchup_margin < last || match < raft_config_index(n->core))
            continue;
        struct raft_event ev = {.type = RAFT_EV_PROMOTE};
        ev.u.node_id = id;
        if (step(n, &ev) == 0)
            log_info("raft", "node %llu caught up (match %llu of %llu): promoting it to voter",
                     (unsigned long long)id, (unsigned long long)match, (unsigned long long)last);
        return;
    }
}

static void tick_cb(uv_timer_t *t)
{
    struct rnode *n = t->data;
    struct raft_event ev = {.type = RAFT_EV_TICK};
    step(n, &ev);
    maybe_promote(n);
}

static void wake_cb(uv_async_t *a)
{
    struct rnode *n = a->data;
    uint64_t index = 0, term = 0;
    struct ferry_err failure;
    int got = writer_take(n, &index, &term, &failure);
    if (got < 0) {
        if (!n->failed)
            enter_failed(n, &failure);
        return;
    }
    if (got > 0 && n->core != NULL) {
        struct raft_event ev = {.type = RAFT_EV_PERSISTED};
        ev.u.persisted.index = index;
        ev.u.persisted.term = term;
        step(n, &ev);
    }
}

/* ---- snapshots ------------------------------------------------------------ */

/* The configuration in force at index: the newest CONFIG entry at or below it
 * that the core still holds, else the snapshot's, else the bootstrap. */
static void config_at(const struct rnode *n, uint64_t index, struct raft_config *out)
{
    const struct raft *r = n->core;
    if (raft_config_index(r) <= index) {
        *out = *raft_config(r);
        return;
    }
    for (uint64_t i = index; i > raft_first_index(r); i--) {
        const struct raft_entry *e = raft_entry_at(r, i);
        if (e != NULL && e->type == RAFT_ENTRY_CONFIG &&
            raft_config_decode(e->data, e->len, out) == 0)
            return;
    }
    const struct raft_snapshot_meta *s = raft_snapshot(r);
    *out = s->index > 0 ? s->config : n->bootstrap;
}

struct snap_sink {
    struct raftlog_snapw *w;
    uint64_t off;
    struct ferry_err err;
};

static int snap_sink_write(void *ctx, const void *p, size_t len)
{
    struct snap_sink *s = ctx;
    int rc = raftlog_snapw_write(s->w, s->off, p, len, &s->err);
    if (rc == 0)
        s->off += len;
    return rc;
}

static void snap_work_cb(uv_work_t *w)
{
    struct rnode *n = w->data;
    struct snap_sink sink = {n->snap_w, 0, {0, ""}};
    ferry_err_clear(&n->snap_err);
    n->snap_rc = n->cb.snapshot_write(n->snap_job, snap_sink_write, &sink, &n->snap_err);
    if (n->snap_rc == 0) {
        n->snap_size = sink.off;
        n->snap_rc = raftlog_snapw_finish(n->snap_w, sink.off, &n->snap_err);
    } else {
        if (sink.err.code != 0)
            n->snap_err = sink.err;
        raftlog_snapw_abort(n->snap_w);
    }
    n->snap_w = NULL;
}

static void report_snapshot(struct rnode *n, uint64_t index, uint64_t size)
{
    if (n->core == NULL || n->snap_generation != n->generation || n->stopping)
        return;
    struct raft_event ev = {.type = RAFT_EV_SNAPSHOT_SAVED};
    ev.u.snapshot_saved.index = index;
    ev.u.snapshot_saved.size = size;
    step(n, &ev);
}

static void snap_retry_cb(uv_timer_t *t)
{
    report_snapshot(t->data, 0, 0); /* the core asks again */
}

static void release(struct rnode *n);

static void snap_after_cb(uv_work_t *w, int status)
{
    struct rnode *n = w->data;
    n->snap_taking = 0;
    n->cb.snapshot_end(n->snap_job);
    n->snap_job = NULL;
    if (n->stopping) {
        release(n);
        return;
    }
    release(n);
    if (status != 0 || n->snap_rc != 0) {
        log_warn("raft", "snapshot at %llu failed: %s; retrying in %d s",
                 (unsigned long long)n->snap_index,
                 status != 0 ? uv_strerror(status) : n->snap_err.msg, SNAPSHOT_RETRY_MS / 1000);
        uv_timer_start(&n->snap_retry, snap_retry_cb, SNAPSHOT_RETRY_MS, 0);
        return;
    }
    log_info("raft", "snapshot at index %llu saved (%llu bytes)", (unsigned long long)n->snap_index,
             (unsigned long long)n->snap_size);
    report_snapshot(n, n->snap_index, n->snap_size);
}

static void take_snapshot(struct rnode *n, uint64_t index)
{
    struct ferry_err err;
    ferry_err_clear(&err);
    struct raft_snapshot_meta meta;
    memset(&meta, 0, sizeof meta);
    meta.index = index;
    meta.term = raft_term_at(n->core, index);
    config_at(n, index, &meta.config);
    n->snap_generation = n->generation;
    n->snap_index = index;
    int rc = n->cb.snapshot_begin(n, index, &n->snap_job, &err);
    if (rc == 0) {
        rc = raftlog_snapw_open(&n->snap_w, n->log, &meta, &err);
        if (rc != 0)
            n->cb.snapshot_end(n->snap_job);
    }
    if (rc == 0) {
        n->snap_work.data = n;
        rc = uv_queue_work(n->loop, &n->snap_work, snap_work_cb, snap_after_cb);
        if (rc != 0) {
            raftlog_snapw_abort(n->snap_w);
            n->snap_w = NULL;
            n->cb.snapshot_end(n->snap_job);
            ferry_err_set(&err, FERRY_EIO, "cannot queue the snapshot work: %s", uv_strerror(rc));
            rc = FERRY_EIO;
        }
    }
    if (rc != 0) {
        log_warn("raft", "cannot take a snapshot at %llu: %s; retrying in %d s",
                 (unsigned long long)index, err.msg, SNAPSHOT_RETRY_MS / 1000);
        uv_timer_start(&n->snap_retry, snap_retry_cb, SNAPSHOT_RETRY_MS, 0);
        return;
    }
    n->snap_taking = 1;
    n->handles++; /* released by snap_after_cb */
}

static void recv_abort(struct rnode *n)
{
    if (n->recv_w != NULL)
        raftlog_snapw_abort(n->recv_w);
    n->recv_w = NULL;
    n->recv_index = 0;
}

static int store_chunk(struct rnode *n, struct ferry_err *err)
{
    const struct raft_update *up = &n->up;
    if (n->recv_w != NULL && n->recv_index != up->chunk.index)
        recv_abort(n);
    if (n->recv_w == NULL) {
        if (n->incoming.index != up->chunk.index)
            return ferry_err_set(err, FERRY_EINTERNAL, "snapshot chunk %llu without its message",
                                 (unsigned long long)up->chunk.index);
        int rc = raftlog_snapw_open(&n->recv_w, n->log, &n->incoming, err);
        if (rc != 0)
            return rc;
        n->recv_index = up->chunk.index;
    }
    return raftlog_snapw_write(n->recv_w, up->chunk.offset, up->chunk.data, up->chunk.len, err);
}

struct snap_source {
    struct raftlog_snapr *r;
    uint64_t off;
    struct ferry_err err;
};

static int snap_source_read(void *ctx, void *p, size_t len)
{
    struct snap_source *s = ctx;
    size_t got = 0;
    if (len > (1u << 30))
        len = 1u << 30;
    int rc = raftlog_snapr_read(s->r, s->off, p, len, &got, &s->err);
    if (rc != 0)
        return rc;
    s->off += got;
    return (int)got;
}

/* Load the snapshot at `index` (0: newest) into the state machine. */
static int restore_state(struct rnode *n, uint64_t index, struct ferry_err *err)
{
    struct raftlog_snapr *r = NULL;
    struct raft_snapshot_meta meta;
    int rc = raftlog_snapr_open(&r, n->log, index, &meta, err);
    if (rc != 0)
        return rc;
    struct snap_source src = {r, 0, {0, ""}};
    int skipped = 0;
    rc = n->cb.restore(n, snap_source_read, &src, &skipped, err);
    if (rc != 0 && src.err.code != 0)
        ferry_err_set(err, rc, "reading snapshot %llu: %s", (unsigned long long)meta.index,
                      src.err.msg);
    raftlog_snapr_close(r);
    if (rc == 0)
        log_info("raft", "snapshot at index %llu %s", (unsigned long long)meta.index,
                 skipped ? "skipped: the database is newer" : "restored into the database");
    return rc;
}

static int install_snapshot(struct rnode *n, struct ferry_err *err)
{
    const struct raft_update *up = &n->up;
    if (n->recv_w == NULL || n->recv_index != up->install.index)
        return ferry_err_set(err, FERRY_EINTERNAL,
                             "asked to install snapshot %llu, but no such snapshot was received",
                             (unsigned long long)up->install.index);
    writer_drain(n);
    int rc = raftlog_snapw_finish(n->recv_w, up->install.size, err);
    n->recv_w = NULL;
    n->recv_index = 0;
    if (rc == 0)
        rc = restore_state(n, up->install.index, err);
    if (rc == 0)
        rc = up->install_keep_log ? raftlog_compact(n->log, up->install.index, err)
                                  : raftlog_reset(n->log, err);
    if (rc == 0)
        log_info("raft", "installed the leader's snapshot at index %llu (%llu bytes)",
                 (unsigned long long)up->install.index, (unsigned long long)up->install.size);
    return rc;
}

/* Fill an InstallSnapshot chunk from the saved snapshot it names. */
static int fill_chunk(struct rnode *n, struct raft_msg *m)
{
    struct raft_msg_snapshot *s = &m->u.snapshot;
    struct ferry_err err;
    ferry_err_clear(&err);
    if (n->send_r != NULL && n->send_index != s->index) {
        raftlog_snapr_close(n->send_r);
        n->send_r = NULL;
    }
    if (n->send_r == NULL) {
        struct raft_snapshot_meta meta;
        int rc = raftlog_snapr_open(&n->send_r, n->log, s->index, &meta, &err);
        if (rc != 0) {
            log_warn("raft", "cannot send snapshot %llu: %s", (unsigned long long)s->index,
                     err.msg);
            return rc;
        }
        n->send_index = s->index;
    }
    if (s->len > n->chunk_cap) {
        uint8_t *p = ferry_realloc(n->chunk, s->len);
        if (p == NULL)
            return FERRY_ENOMEM;
        n->chunk = p;
        n->chunk_cap = s->len;
    }
    size_t got = 0;
    int rc = raftlog_snapr_read(n->send_r, s->offset, n->chunk, s->len, &got, &err);
    if (rc == 0 && got != s->len)
        rc = ferry_err_set(&err, FERRY_ECORRUPT, "snapshot %llu is shorter than its size",
                           (unsigned long long)s->index);
    if (rc != 0) {
        log_warn("raft", "cannot read snapshot %llu: %s", (unsigned long long)s->index, err.msg);
        return rc;
    }
    s->data = n->chunk;
    return 0;
}

/* ---- acting on an update ------------------------------------------------- */

static void send_messages(struct rnode *n)
{
    struct raft_update *up = &n->up;
    for (uint32_t i = 0; i < up->n_msgs; i++) {
        struct raft_msg *m = &up->msgs[i];
        if (m->type == RAFT_MSG_SNAPSHOT && m->u.snapshot.data == NULL && m->u.snapshot.len > 0 &&
            fill_chunk(n, m) != 0)
            continue; /* the core resends when the chunk is not answered */
        buf_reset(&n->enc);
        if (raft_msg_encode(m, &n->enc) != 0) {
            log_warn("raft", "cannot encode a %s message", raft_msg_type_name(m->type));
            continue;
        }
        /* EBUSY (queue full) and an unreachable peer lose the message; the
         * core retries. */
        if (n->transport_up)
            (void)rtransport_send(&n->transport, (uint32_t)m->to, n->enc.data, n->enc.len);
    }
}

/* The entries a snapshot lets the core drop are freed in pieces across the
 * allocator's arenas, which keep them: once a compaction released TRIM_BYTES
 * or more, give the free pages back to the system (after the next step, when
 * the core has freed them). Rare: at most once per snapshot. */
#define TRIM_BYTES (8u << 20)
static void trim_memory(struct rnode *n)
{
    if (n->core == NULL)
        return;
    uint64_t bytes = raft_log_bytes(n->core);
    if (n->trim_due) {
#ifdef __GLIBC__
        malloc_trim(0);
#endif
        n->trim_due = 0;
        n->log_peak = bytes;
    } else if (bytes > n->log_peak) {
        n->log_peak = bytes;
    } else if (n->log_peak - bytes >= TRIM_BYTES) {
        n->trim_due = 1;
    }
}

static void act(struct rnode *n)
{
    struct raft_update *up = &n->up;
    struct ferry_err err;
    ferry_err_clear(&err);
    int rc = 0;

    if (up->flags & RAFT_UPDATE_STATE) {
        writer_drain(n);
        rc = raftlog_save_vote(n->log, up->term, up->vote, &err);
    }
    if (rc == 0 && (up->flags & RAFT_UPDATE_CHUNK))
        rc = store_chunk(n, &err);
    if (rc == 0 && (up->flags & RAFT_UPDATE_INSTALL))
        rc = install_snapshot(n, &err);
    if (rc == 0 && (up->flags & RAFT_UPDATE_ENTRIES)) {
        if (writer_append(n, up->persist_from, up->persist, up->n_persist) != 0)
            rc = ferry_err_set(&err, FERRY_ENOMEM, "out of memory queueing log entries");
    }
    if (rc != 0) {
        enter_failed(n, &err);
        return;
    }
    if (up->flags & RAFT_UPDATE_MESSAGES)
        send_messages(n);
    if (up->flags & RAFT_UPDATE_APPLY) {
        rc = n->cb.apply(n, up->apply, up->n_apply, &err);
        if (rc != 0) {
            enter_failed(n, &err);
            return;
        }
    }
    if (up->flags & RAFT_UPDATE_TAKE_SNAPSHOT)
        take_snapshot(n, up->take_snapshot);
    if (up->flags & RAFT_UPDATE_COMPACT) {
        /* An open snapshot reader keeps working once its file is pruned. */
        writer_compact(n, up->compact_to);
    }
    if (n->core != NULL &&
        memcmp(&n->linked_config, raft_config(n->core), sizeof n->linked_config) != 0)
        links_sync(n);
    if (up->flags & RAFT_UPDATE_ROLE) {
        if (up->role != n->role || up->leader_id != n->leader)
            log_info("raft", "term %llu: %s, leader %llu", (unsigned long long)up->term,
                     raft_role_name(up->role), (unsigned long long)up->leader_id);
        if (up->role == RAFT_LEADER && n->role != RAFT_LEADER)
            book_broadcast(n);
        n->role = up->role;
        n->leader = (uint32_t)up->leader_id;
        n->term = up->term;
        n->cb.on_role(n);
    }
    trim_memory(n);
    uint64_t now = clock_mono_ms();
    uint64_t wait = up->deadline_ms > now ? up->deadline_ms - now : 0;
    uv_timer_start(&n->tick, tick_cb, wait, 0);
}

/* ---- loading and failure ---------------------------------------------- */

static int load(struct rnode *n, struct ferry_err *err)
{
    struct raftlog_options lo = {
        .dir = n->log_dir,
        .max_segment_bytes = n->max_segment_bytes,
        .max_generations = n->max_generations,
        .io = n->io,
    };
    struct raftlog_state st;
    memset(&st, 0, sizeof st);
    int rc = raftlog_open(&n->log, &lo, &st, err);
    if (rc != 0)
        return rc;
    if (st.torn_bytes > 0)
        log_warn("raft", "cut a torn tail of %llu bytes from the log in %s",
                 (unsigned long long)st.torn_bytes, n->log_dir);
    rc = raft_init(&n->core, &n->opts, &n->bootstrap, err);
    if (rc == 0)
        rc = raft_restore(n->core, &st.p, err);
    uint64_t snap = st.p.snapshot.index;
    raftlog_state_free(&st);
    if (rc == 0 && snap > 0)
        rc = restore_state(n, snap, err);
    if (rc != 0) {
        raft_close(n->core);
        n->core = NULL;
        raftlog_close(n->log);
        n->log = NULL;
        return rc;
    }
    n->generation++;
    n->role = RAFT_FOLLOWER;
    n->leader = 0;
    n->term = raft_term(n->core);
    log_info("raft", "node %u: term %llu, log %llu..%llu, snapshot %llu", n->self_id,
             (unsigned long long)n->term, (unsigned long long)raft_first_index(n->core) + 1,
             (unsigned long long)raft_last_index(n->core), (unsigned long long)snap);
    return 0;
}

/* Can the log directory take new data? Write and sync PROBE_BYTES, then
 * delete them. Reading a log back works on a full disk; rejoining (and
 * perhaps being elected) only to fail the next append would keep the
 * cluster from electing a node that can write. */
static int probe_storage(struct rnode *n, struct ferry_err *err)
{
    static const uint8_t zeros[64 * 1024];
    const struct raftlog_io *io = n->io ? n->io : raftlog_io_posix();
    char path[4200];
    snprintf(path, sizeof path, "%s/probe.tmp", n->log_dir);
    int fd = io->open(io->ctx, path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return ferry_err_set(err, FERRY_EIO, "cannot create %s: %s", path, strerror(-fd));
    long rc = 0;
    for (uint64_t off = 0; off < PROBE_BYTES && rc >= 0; off += sizeof zeros) {
        rc = io->pwrite(io->ctx, fd, zeros, sizeof zeros, off);
        if (rc >= 0 && (size_t)rc != sizeof zeros)
            rc = -ENOSPC;
    }
    if (rc >= 0)
        rc = io->fdatasync(io->ctx, fd);
    io->close(io->ctx, fd);
    io->unlink(io->ctx, path);
    if (rc < 0)
        return ferry_err_set(err, rc == -ENOSPC ? FERRY_ENOSPC : FERRY_EIO, "cannot write %s: %s",
                             path, strerror((int)-rc));
    return 0;
}

static void retry_cb(uv_timer_t *t)
{
    struct rnode *n = t->data;
    if (n->snap_taking)
        return; /* its writer still uses the old log; try again next time */
    writer_drain(n);
    if (n->send_r != NULL) {
        raftlog_snapr_close(n->send_r);
        n->send_r = NULL;
    }
    raftlog_close(n->log);
    n->log = NULL;
    pthread_mutex_lock(&n->mu);
    n->w_failed = 0;
    n->w_new = 0;
    pthread_mutex_unlock(&n->mu);
    struct ferry_err err;
    ferry_err_clear(&err);
    if (probe_storage(n, &err) != 0 || load(n, &err) != 0) {
        log_warn("raft", "storage still failing: %s", err.msg);
        snprintf(n->failure.msg, sizeof n->failure.msg, "%s", err.msg);
        n->retry_ms = n->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : n->retry_ms * 2;
        uv_timer_start(&n->retry, retry_cb, n->retry_ms, 0);
        return;
    }
    n->failed = 0;
    n->recovered_ms = clock_mono_ms();
    log_info("raft", "storage works again; node %u rejoins as a follower", n->self_id);
    if (n->cb.on_recovered)
        n->cb.on_recovered(n);
    struct raft_event ev = {.type = RAFT_EV_TICK};
    step(n, &ev);
}

static void enter_failed(struct rnode *n, const struct ferry_err *why)
{
    if (n->failed)
        return;
    n->failed = 1;
    n->failure = *why;
    log_error("raft", "storage failed, node %u stops taking part until it works again: %s",
              n->self_id, why->msg);
    uv_timer_stop(&n->tick);
    uv_timer_stop(&n->snap_retry);
    recv_abort(n);
    raft_close(n->core);
    n->core = NULL;
    n->generation++;
    int was_leader = n->role == RAFT_LEADER;
    n->role = RAFT_FOLLOWER;
    n->leader = 0;
    if (n->cb.on_failed)
        n->cb.on_failed(n, why);
    if (was_leader)
        n->cb.on_role(n);
    /* Back off while failures repeat: 1 s, doubling up to 8 s, back to 1 s
     * once the node has run for a minute without one. */
    uint64_t now = clock_mono_ms();
    if (n->retry_ms == 0 || now > n->recovered_ms + 60000)
        n->retry_ms = RETRY_MS;
    else
        n->retry_ms = n->retry_ms * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : n->retry_ms * 2;
    uv_timer_start(&n->retry, retry_cb, n->retry_ms, 0);
}

/* ---- transport ----------------------------------------------------------- */

/* Driver messages share the links with the core's: a core message starts
 * with its wire version (1), a driver message with a tag no version uses.
 * NODE_INFO tells a peer this node's client address, so a follower can send
 * clients to whichever node leads: [u8 0xF1][u16 len][address]. */
#define NODE_INFO_TAG 0xF1

static void send_node_info(struct rnode *n, uint32_t to)
{
    uint8_t msg[3 + sizeof n->client_address];
    size_t len = strlen(n->client_address);
    msg[0] = NODE_INFO_TAG;
    put_u16(msg + 1, (uint16_t)len);
    memcpy(msg + 3, n->client_address, len);
    (void)rtransport_send(&n->transport, to, msg, 3 + len);
}

static void recv_node_info(struct rnode *n, uint32_t from, const uint8_t *p, size_t len)
{
    if (len < 3 || get_u16(p + 1) != len - 3 || len - 3 >= sizeof n->peers[0].client_address) {
        log_warn("raft", "dropped a malformed node-info message from node %u", from);
        return;
    }
    struct rnode_peer *peer = book_find(n, from);
    if (peer != NULL) {
        memcpy(peer->client_address, p + 3, len - 3);
        peer->client_address[len - 3] = '\0';
    }
}

static void on_message(struct rtransport *t, uint32_t from, const uint8_t *bytes, size_t len)
{
    struct rnode *n = t->data;
    if (len > 0 && bytes[0] == NODE_INFO_TAG) {
        recv_node_info(n, from, bytes, len);
        return;
    }
    if (len > 0 && bytes[0] == BOOK_TAG) {
        if (!n->stopping)
            book_recv(n, from, bytes, len);
        return;
    }
    if (n->core == NULL || n->stopping)
        return;
    struct raft_msg m;
    struct ferry_err err;
    ferry_err_clear(&err);
    if (raft_msg_decode(bytes, len, &m, &err) != 0) {
        log_warn("raft", "dropped a malformed message from node %u: %s", from, err.msg);
        return;
    }
    if (m.type == RAFT_MSG_SNAPSHOT) {
        /* A chunk update names only the index; the file needs the rest. */
        n->incoming.index = m.u.snapshot.index;
        n->incoming.term = m.u.snapshot.term;
        n->incoming.config = m.u.snapshot.config;
        n->incoming.size = m.u.snapshot.size;
    }
    if (m.from != from) {
        log_warn("raft", "dropped a message claiming node %llu on node %u's link",
                 (unsigned long long)m.from, from);
        raft_msg_release(&m);
        return;
    }
    struct raft_event ev = {.type = RAFT_EV_RECEIVE, .u.receive = &m};
    step(n, &ev);
    raft_msg_release(&m);
}

static void on_peer_up(struct rtransport *t, uint32_t id)
{
    struct rnode *n = t->data;
    log_debug("raft", "link to node %u is up", id);
    send_node_info(n, id);
    if (n->core != NULL && raft_role(n->core) == RAFT_LEADER)
        book_send(n, id);
}

static void on_peer_down(struct rtransport *t, uint32_t id)
{
    struct rnode *n = t->data;
    log_info("raft", "link to node %u lost", id);
    if (n->core == NULL || n->stopping)
        return;
    struct raft_event ev = {.type = RAFT_EV_PEER_DOWN};
    ev.u.node_id = id;
    step(n, &ev);
}

/* ---- public ------------------------------------------------------------------ */

static void free_node(struct rnode *n)
{
    buf_free(&n->enc);
    raft_update_free(&n->up);
    ferry_free(n->chunk);
    ferry_free(n->log_dir);
    ferry_free(n->listen_host);
    pthread_mutex_destroy(&n->mu);
    pthread_cond_destroy(&n->w_cv);
    pthread_cond_destroy(&n->w_idle_cv);
    ferry_free(n);
}

/* One libuv handle (or the transport, or a snapshot job) is done; the last
 * one of a stopping node frees it. */
static void release(struct rnode *n)
{
    assert(n->handles > 0);
    if (--n->handles > 0 || !n->stopping)
        return;
    raftlog_close(n->log);
    void (*cb)(void *) = n->stop_cb;
    void *data = n->stop_data;
    free_node(n);
    if (cb)
        cb(data);
}

static void handle_closed(uv_handle_t *h)
{
    release(h->data);
}

static void transport_closed(struct rtransport *t)
{
    release(t->data);
}

int rnode_start(struct rnode **out, uv_loop_t *loop, const struct rnode_config *cfg,
                const struct rnode_callbacks *cb, void *data, struct ferry_err *err)
{
    *out = NULL;
    if (cfg->n_members == 0 || cfg->n_members > RAFT_MAX_NODES)
        return ferry_err_set(err, FERRY_ECONFIG, "cluster membership must list 1 to %d nodes",
                             RAFT_MAX_NODES);
    struct rnode *n = ferry_calloc(1, sizeof *n);
    if (n == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    n->loop = loop;
    n->data = data;
    n->cb = *cb;
    n->cluster_id = cfg->cluster_id;
    n->self_id = cfg->self_id;
    n->log_dir = ferry_strdup(cfg->log_dir);
    n->listen_host = ferry_strdup(cfg->listen_host);
    n->listen_port = cfg->listen_port;
    snprintf(n->client_address, sizeof n->client_address, "%s",
             cfg->client_address ? cfg->client_address : "");
    n->max_segment_bytes = cfg->max_segment_bytes;
    n->max_generations = cfg->max_generations;
    n->io = cfg->io;
    pthread_mutex_init(&n->mu, NULL);
    pthread_cond_init(&n->w_cv, NULL);
    pthread_cond_init(&n->w_idle_cv, NULL);
    buf_init(&n->enc);
    raft_update_init(&n->up);
    if (n->log_dir == NULL || n->listen_host == NULL) {
        free_node(n);
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    }

    raft_options_default(&n->opts);
    n->opts.id = cfg->self_id;
    n->opts.cluster_id = cfg->cluster_id;
    n->opts.heartbeat_ms = cfg->heartbeat_ms;
    n->opts.election_timeout_ms = cfg->election_timeout_ms;
    n->opts.election_timeout_max_ms = cfg->election_timeout_max_ms;
    n->opts.snapshot_threshold = cfg->snapshot_distance;
    n->opts.snapshot_bytes = cfg->snapshot_bytes;
    n->opts.seed = cfg->seed;
    /* A joining node starts with an empty configuration: it is nobody's
     * voter, so it never campaigns, and learns the real configuration from
     * the leader once added (docs/cluster.md, Membership changes). */
    n->join = cfg->join;
    n->bootstrap.n = cfg->join ? 0 : cfg->n_members;
    struct rtransport_member tm[RAFT_MAX_NODES];
    for (uint32_t i = 0; i < cfg->n_members; i++) {
        const struct rnode_member *m = &cfg->members[i];
        n->bootstrap.nodes[i].id = m->id;
        n->bootstrap.nodes[i].role = RAFT_VOTER;
        n->bootstrap.nodes[i].priority = m->priority;
        struct rnode_peer *p = &n->peers[i];
        p->id = m->id;
        snprintf(p->host, sizeof p->host, "%s", m->host);
        p->port = m->port;
        p->priority = m->priority;
        p->configured = 1;
        p->linked = m->id != cfg->self_id;
        tm[i].id = m->id;
        tm[i].host = p->host;
        tm[i].port = m->port;
    }
    n->n_peers = cfg->n_members;
    if (cfg->join)
        memset(&n->bootstrap.nodes, 0, sizeof n->bootstrap.nodes);

    int rc = load(n, err);
    if (rc != 0) {
        free_node(n);
        return rc;
    }
    struct ferry_err berr;
    if (book_load(n, &berr) != 0)
        log_warn("raft", "%s; members added online must be added again", berr.msg);
    rc = writer_start(n, err);
    if (rc != 0) {
        raft_close(n->core);
        raftlog_close(n->log);
        free_node(n);
        return rc;
    }

    uv_timer_init(loop, &n->tick);
    uv_timer_init(loop, &n->retry);
    uv_timer_init(loop, &n->snap_retry);
    uv_async_init(loop, &n->wake, wake_cb);
    n->tick.data = n->retry.data = n->snap_retry.data = n->wake.data = n;
    n->handles = 4; /* tick, retry, snap_retry, wake (+ the transport) */
    /* A cluster of one with no replication endpoint has no links. */
    if (cfg->n_members > 1 || cfg->listen_port != 0) {
        struct rtransport_config tc = {
            .cluster_id = cfg->cluster_id,
            .self_id = cfg->self_id,
            .listen_host = cfg->listen_host,
            .listen_port = cfg->listen_port,
            .members = tm,
            .n_members = cfg->n_members,
            .verify_ip = cfg->verify_ip,
            .tls_accept = cfg->tls_accept,
            .tls_dial = cfg->tls_dial,
            .seed = cfg->seed ^ 0x9e3779b97f4a7c15ull,
        };
        /* With verify_replication_node_ip on, peers accept this node's links
         * only from the address its membership entry names: dial from it. */
        for (uint32_t i = 0; cfg->verify_ip && i < cfg->n_members; i++) {
            if (cfg->members[i].id == cfg->self_id)
                tc.source_host = cfg->members[i].host;
        }
        struct rtransport_callbacks tcb = {on_message, on_peer_up, on_peer_down};
        rc = rtransport_init(&n->transport, loop, &tc, &tcb, err);
        if (rc == 0) {
            n->transport.data = n;
            n->transport_up = 1;
            n->handles++;
            rc = rtransport_start(&n->transport, err);
        }
        if (rc != 0) {
            rnode_stop(n, NULL, NULL);
            return rc;
        }
        links_sync(n);
    }
    *out = n;
    struct raft_event ev = {.type = RAFT_EV_TICK};
    step(n, &ev);
    return 0;
}

void rnode_stop(struct rnode *n, void (*cb)(void *data), void *data)
{
    if (n->stopping)
        return;
    n->stopping = 1;
    n->stop_cb = cb;
    n->stop_data = data;
    writer_stop(n);
    recv_abort(n);
    if (n->send_r != NULL)
        raftlog_snapr_close(n->send_r);
    n->send_r = NULL;
    raft_close(n->core);
    n->core = NULL;
    uv_close((uv_handle_t *)&n->tick, handle_closed);
    uv_close((uv_handle_t *)&n->retry, handle_closed);
    uv_close((uv_handle_t *)&n->snap_retry, handle_closed);
    uv_close((uv_handle_t *)&n->wake, handle_closed);
    if (n->transport_up)
        rtransport_close(&n->transport, transport_closed);
}

void *rnode_data(const struct rnode *n)
{
    return n->data;
}

int rnode_propose(struct rnode *n, const void *data, uint32_t len, uint64_t *index, uint64_t *term,
                  struct ferry_err *err)
{
    if (n->core == NULL)
        return ferry_err_set(err, FERRY_EUNAVAILABLE, "node is not accepting writes: %s",
                             n->failure.msg);
    if (!raft_accepts_proposals(n->core))
        return ferry_err_set(err, FERRY_ENOTLEADER, "node %u is not the leader", n->self_id);
    struct raft_event ev = {.type = RAFT_EV_PROPOSE};
    ev.u.propose.data = data;
    ev.u.propose.len = len;
    int rc = step(n, &ev);
    if (rc != 0)
        return ferry_err_set(err, rc == FERRY_ENOTLEADER ? rc : FERRY_EUNAVAILABLE,
                             "proposal refused: %s", ferry_strerror(rc));
    if (n->core == NULL)
        return ferry_err_set(err, FERRY_EUNAVAILABLE, "node is not accepting writes: %s",
                             n->failure.msg);
    *index = n->up.proposed_index;
    *term = n->up.proposed_term;
    return 0;
}

int rnode_transfer(struct rnode *n, uint32_t target, struct ferry_err *err)
{
    if (n->core == NULL || raft_role(n->core) != RAFT_LEADER)
        return ferry_err_set(err, FERRY_ENOTLEADER, "node %u is not the leader", n->self_id);
    struct raft_event ev = {.type = RAFT_EV_TRANSFER};
    ev.u.node_id = target;
    int rc = step(n, &ev);
    if (rc != 0)
        return ferry_err_set(err, rc, "leadership transfer refused: %s", ferry_strerror(rc));
    return 0;
}

int rnode_remove(struct rnode *n, uint32_t id, struct ferry_err *err)
{
    if (n->core == NULL || raft_role(n->core) != RAFT_LEADER)
        return ferry_err_set(err, FERRY_ENOTLEADER, "node %u is not the leader", n->self_id);
    struct raft_event ev = {.type = RAFT_EV_REMOVE};
    ev.u.node_id = id;
    int rc = step(n, &ev);
    if (rc != 0)
        return ferry_err_set(err, rc, "removing node %u refused: %s", id, ferry_strerror(rc));
    return 0;
}

int rnode_add_member(struct rnode *n, uint32_t id, uint8_t priority, const char *host,
                     uint16_t port, struct ferry_err *err)
{
    if (n->core == NULL)
        return ferry_err_set(err, FERRY_EUNAVAILABLE, "node is not taking part: %s",
                             n->failure.msg);
    if (!raft_accepts_proposals(n->core))
        return ferry_err_set(err, FERRY_ENOTLEADER, "node %u is not the leader", n->self_id);
    const struct raft_node *have = raft_config_find(raft_config(n->core), id);
    if (id == n->self_id || have != NULL)
        return ferry_err_set(err, FERRY_EEXIST, "node %u is already a member (%s)", id,
                             have != NULL && have->role == RAFT_LEARNER ? "learner" : "voter");
    struct rnode_peer *p = book_find(n, id);
    struct rnode_peer old;
    int existed = p != NULL;
    if (existed)
        old = *p;
    int changed = 0;
    int rc = book_put(n, id, host, port, &changed, err);
    if (rc != 0)
        return rc;
    struct raft_event ev = {.type = RAFT_EV_ADD_LEARNER};
    ev.u.add_learner.id = id;
    ev.u.add_learner.priority = priority;
    rc = step(n, &ev);
    if (rc != 0) {
        if (!existed)
            book_drop(n, id);
        else if (changed)
            *book_find(n, id) = old;
        return ferry_err_set(err, rc == FERRY_ENOMEM ? FERRY_EUNAVAILABLE : rc,
                             "adding node %u refused: %s%s", id, ferry_strerror(rc),
                             rc == FERRY_EBUSY ? " (a membership change or leadership transfer "
                                                 "is in progress; try again)"
                                               : "");
    }
    if (changed) {
        struct ferry_err serr;
        if (book_save(n, &serr) != 0)
            log_warn("raft", "%s", serr.msg);
        book_broadcast(n);
    }
    log_info("raft",
             "node %u at %s:%u added as a learner (priority %u); it becomes a voter "
             "once caught up",
             id, host, port, priority);
    return 0;
}

int rnode_snapshot_now(struct rnode *n, uint64_t *index, struct ferry_err *err)
{
    if (n->core == NULL)
        return ferry_err_set(err, FERRY_EUNAVAILABLE, "node is not taking part: %s",
                             n->failure.msg);
    uint64_t before = n->snap_index;
    struct raft_event ev = {.type = RAFT_EV_SNAPSHOT_NOW};
    int rc = step(n, &ev);
    if (rc == FERRY_EBUSY)
        return ferry_err_set(err, rc,
                             "a snapshot (index %llu) is being taken; try again once it "
                             "is saved",
                             (unsigned long long)n->snap_index);
    if (rc != 0)
        return ferry_err_set(err, FERRY_EUNAVAILABLE, "snapshot refused: %s", ferry_strerror(rc));
    if (n->core == NULL)
        return ferry_err_set(err, FERRY_EUNAVAILABLE, "node is not taking part: %s",
                             n->failure.msg);
    *index = n->snap_index != before ? n->snap_index : raft_snapshot(n->core)->index;
    return 0;
}

int rnode_is_leader(const struct rnode *n)
{
    return n->core != NULL && n->role == RAFT_LEADER;
}

uint32_t rnode_leader(const struct rnode *n)
{
    return n->core != NULL ? n->leader : 0;
}

uint64_t rnode_term(const struct rnode *n)
{
    return n->term;
}

const char *rnode_client_address(const struct rnode *n, uint32_t id)
{
    if (id == n->self_id)
        return n->client_address;
    const struct rnode_peer *p = book_find((struct rnode *)n, id);
    return p != NULL ? p->client_address : "";
}

void rnode_set_tls(struct rnode *n, struct tls_ctx *accept, struct tls_ctx *dial)
{
    if (n->transport_up)
        rtransport_set_tls(&n->transport, accept, dial);
}

void rnode_status(const struct rnode *n, struct rnode_status *out)
{
    memset(out, 0, sizeof *out);
    out->id = n->self_id;
    out->failed = n->failed;
    if (n->failed)
        snprintf(out->failure, sizeof out->failure, "%s", n->failure.msg);
    out->term = n->term;
    pthread_mutex_lock((pthread_mutex_t *)&n->mu);
    out->syncs = n->w_syncs;
    out->entries_persisted = n->w_entries;
    pthread_mutex_unlock((pthread_mutex_t *)&n->mu);
    if (n->transport_up) {
        const struct rtransport_stats *ts = rtransport_stats(&n->transport);
        for (int i = 0; i < RTRANSPORT_REJECT_COUNT; i++)
            out->links_refused += ts->rejected[i];
        snprintf(out->links_last_refused, sizeof out->links_last_refused, "%s", ts->last_reject);
    }
    if (n->core == NULL)
        return;
    const struct raft *r = n->core;
    out->role = (uint8_t)raft_role(r);
    out->leader_id = (uint32_t)raft_leader(r);
    out->first_index = raft_first_index(r) + 1;
    out->last_index = raft_last_index(r);
    out->commit = raft_commit_index(r);
    out->applied = raft_applied_index(r);
    out->snapshot_index = raft_snapshot(r)->index;
    out->log_bytes = raft_log_bytes(r);
    const struct raft_config *c = raft_config(r);
    out->n_peers = c->n;
    for (uint32_t i = 0; i < c->n; i++) {
        struct rnode_peer_status *p = &out->peers[i];
        p->id = (uint32_t)c->nodes[i].id;
        p->role = c->nodes[i].role;
        p->priority = c->nodes[i].priority;
        snprintf(p->client_address, sizeof p->client_address, "%s", rnode_client_address(n, p->id));
        if (p->id == n->self_id) {
            p->reachable = 1;
            p->match = out->last_index;
        } else {
            struct rtransport_peer_stats ps;
            int known = n->transport_up && rtransport_peer_stats(&n->transport, p->id, &ps) == 0;
            p->reachable = known && ps.connected;
            out->links_tls_failed += known ? ps.tls_failed : 0;
            uint64_t match = 0, next = 0;
            if (raft_role(r) == RAFT_LEADER && raft_progress(r, p->id, &match, &next) == 0)
                p->match = match;
        }
    }
}
