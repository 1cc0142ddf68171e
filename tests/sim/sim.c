/* sim.c - the simulated cluster: event queue, network, disk, clock, faults and
 * workload around real Raft cores.
 *
 * Everything happens as events on one queue ordered by (simulated time,
 * sequence): message deliveries, disk write completions, snapshot saves,
 * node timers, client proposals. A step pops one event and hands it to the
 * node's core; the core's update is then acted on the way a driver would
 * (raft.h's ordering contract), and the checkers look at it. Messages go
 * through the real codec. Before each step the fault schedule may partition
 * the network (symmetric, one-way, isolating the leader), change loss,
 * duplication and delay, crash a node (losing its unfinished writes, possibly
 * tearing the first one) or restart one, jump a node's clock, change the
 * membership or transfer leadership. A crash reaches the other nodes a few
 * milliseconds later as RAFT_EV_PEER_DOWN (their connection to it resets),
 * and now and then a node hears PEER_DOWN about a peer that is alive (a link
 * that dropped on its own), most often about its leader.
 *
 * After the safety phase (the given number of steps) faults stop: the network
 * heals and every node restarts. The run must then elect a leader, commit a
 * proposal, leave no witness in office and end with the highest-priority node
 * leading, all within a bounded simulated time. Then each follower in turn
 * hears a spurious PEER_DOWN about that leader, which must stay in office in
 * the same term; finally the leader crashes and the others must elect another
 * within the same bound (the failover time is a statistic).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft/core/codec.h"
#include "sim.h"
#include "util/alloc.h"
#include "util/buf.h"

enum sev_kind { SEV_DELIVER = 1, SEV_TIMER, SEV_DISK, SEV_SNAP, SEV_CLIENT, SEV_PEER_DOWN };

struct sev {
    uint64_t t;
    uint64_t seq;
    uint8_t kind;
    uint8_t node;
    uint32_t len;
    uint64_t a, b;
    uint8_t *data;
};

#define LIVENESS_BOUND_MS 60000

/* ---- tracing and failure ------------------------------------------------ */

void sim_trace(struct sim *s, const char *fmt, ...)
{
    if (!s->trace)
        return;
    char *line = s->trace_ring[s->trace_head++ % 64];
    int k = snprintf(line, 200, "[%6ld %7llu] ", s->step, (unsigned long long)s->now);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + k, 200 - (size_t)k, fmt, ap);
    va_end(ap);
}

void sim_fail(struct sim *s, const char *fmt, ...)
{
    if (s->violation[0])
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->violation, sizeof(s->violation), fmt, ap);
    va_end(ap);
}

/* ---- event queue --------------------------------------------------------- */

static void heap_push(struct sim *s, struct sev ev)
{
    if (s->n_heap == s->cap_heap) {
        s->cap_heap = s->cap_heap ? s->cap_heap * 2 : 256;
        s->heap = ferry_realloc(s->heap, s->cap_heap * sizeof(*s->heap));
    }
    ev.seq = s->seq++;
    uint32_t i = s->n_heap++;
    while (i > 0) {
        uint32_t p = (i - 1) / 2;
        struct sev *q = &s->heap[p];
        if (q->t < ev.t || (q->t == ev.t && q->seq < ev.seq))
            break;
        s->heap[i] = *q;
        i = p;
    }
    s->heap[i] = ev;
}

static struct sev heap_pop(struct sim *s)
{
    struct sev top = s->heap[0];
    struct sev last = s->heap[--s->n_heap];
    uint32_t i = 0;
    for (;;) {
        uint32_t c = 2 * i + 1;
        if (c >= s->n_heap)
            break;
        if (c + 1 < s->n_heap &&
            (s->heap[c + 1].t < s->heap[c].t ||
             (s->heap[c + 1].t == s->heap[c].t && s->heap[c + 1].seq < s->heap[c].seq)))
            c++;
        if (last.t < s->heap[c].t || (last.t == s->heap[c].t && last.seq < s->heap[c].seq))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (s->n_heap > 0)
        s->heap[i] = last;
    return top;
}

static void schedule(struct sim *s, uint64_t t, uint8_t kind, int node, uint64_t a, uint64_t b,
                     uint8_t *data, uint32_t len)
{
    struct sev ev = {
        .t = t, .kind = kind, .node = (uint8_t)node, .a = a, .b = b, .data = data, .len = len};
    heap_push(s, ev);
}

static uint64_t rnd(struct sim *s, uint64_t lo, uint64_t hi)
{
    return rng_range(&s->rng, lo, hi);
}

static bool chance(struct sim *s, uint32_t per_mille)
{
    return rng_below(&s->rng, 1000) < per_mille;
}

/* ---- nodes --------------------------------------------------------------- */

static int slot_of(struct sim *s, uint64_t id)
{
    for (int i = 0; i < s->n_nodes; i++)
        if (s->nodes[i].id == id)
            return i;
    return -1;
}

static uint64_t local_now(struct sim *s, struct snode *n)
{
    return s->now + n->clock_off;
}

static void dentries_free(struct dentry *es, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        ferry_free(es[i].data);
}

static void disk_append(struct snode *n, const struct dentry *e)
{
    if (n->n_log == n->cap_log) {
        n->cap_log = n->cap_log ? n->cap_log * 2 : 64;
        n->log = ferry_realloc(n->log, n->cap_log * sizeof(*n->log));
    }
    n->log[n->n_log++] = *e;
}

/* Apply one write to the durable log: drop entries >= from, append the rest. */
static void disk_apply(struct snode *n, struct dwrite *w, uint32_t count)
{
    while (n->n_log > 0 && n->log[n->n_log - 1].index >= w->from) {
        ferry_free(n->log[n->n_log - 1].data);
        n->n_log--;
    }
    for (uint32_t i = 0; i < count; i++) {
        disk_append(n, &w->es[i]);
        w->es[i].data = NULL;
    }
}

static void pend_pop(struct snode *n)
{
    dentries_free(n->pend[0].es, n->pend[0].n);
    ferry_free(n->pend[0].es);
    memmove(n->pend, n->pend + 1, (n->n_pend - 1) * sizeof(*n->pend));
    n->n_pend--;
}

static void handle_update(struct sim *s, struct snode *n);

static void step_node(struct sim *s, struct snode *n, struct raft_event *ev)
{
    ev->now_ms = local_now(s, n);
    int rc = raft_step(n->r, ev, &n->up);
    if (rc == FERRY_ENOMEM)
        sim_fail(s, "node %llu: out of memory", (unsigned long long)n->id);
    handle_update(s, n);
}

static void tick(struct sim *s, struct snode *n)
{
    struct raft_event ev = {.type = RAFT_EV_TICK};
    step_node(s, n, &ev);
}

static void node_start(struct sim *s, struct snode *n)
{
    struct ferry_err err;
    struct raft_options o = s->opts;
    o.id = n->id;
    o.seed = s->seed * 1000003u + n->id * 7919u + n->incarnation;
    if (raft_init(&n->r, &o, &n->bootstrap, &err) != 0) {
        sim_fail(s, "raft_init: %s", err.msg);
        return;
    }
    struct raft_entry *es = ferry_calloc(n->n_log + 1, sizeof(*es));
    for (uint32_t i = 0; i < n->n_log; i++) {
        es[i].index = n->log[i].index;
        es[i].term = n->log[i].term;
        es[i].type = n->log[i].type;
        es[i].len = n->log[i].len;
        es[i].data = n->log[i].data;
    }
    struct raft_persisted p = {.term = n->term,
                               .vote = n->vote,
                               .snapshot = n->snap,
                               .n_entries = n->n_log,
                               .entries = es};
    if (raft_restore(n->r, &p, &err) != 0)
        sim_fail(s, "raft_restore of node %llu: %s", (unsigned long long)n->id, err.msg);
    ferry_free(es);
    raft_update_init(&n->up);
    /* The state machine is durable; if it is behind the snapshot, load the snapshot. */
    if (n->sm_last < n->snap.index) {
        n->sm_last = n->snap.index;
        n->sm_digest = get_u64(n->snap_data + 8);
    }
    n->alive = true;
    n->seen_commit = 0;
    n->recorded_commit = 0;
    n->disk_free_at = s->now;
    tick(s, n);
}

static struct snode *current_leader(struct sim *s);

/* Node n's process dies: each running node whose link to it gets the reset
 * hears RAFT_EV_PEER_DOWN about it 1-20 ms after the last message n had sent
 * it arrives (the kernel closes the sockets behind the data already sent).
 * No reset crosses a cut link, and now and then none is sent at all (the
 * machine vanished): those nodes notice only when their election timer
 * fires. Spurious reports (spurious_peer_down) come in any order. */
static void announce_crash(struct sim *s, struct snode *n)
{
    int k = slot_of(s, n->id);
    for (int i = 0; i < s->n_nodes; i++) {
        struct snode *y = &s->nodes[i];
        if (i == k || !y->alive || s->cut[k][i] || chance(s, 100))
            continue;
        uint64_t after = s->net_last[k][i] > s->now ? s->net_last[k][i] : s->now;
        schedule(s, after + rnd(s, 1, 20), SEV_PEER_DOWN, i, y->incarnation, n->id, NULL, 0);
    }
}

static void node_crash(struct sim *s, struct snode *n)
{
    if (s->faults && !s->leader_crashed && current_leader(s) == n) {
        s->leader_crashed = true;
        s->leader_crash_ms = s->now;
        s->leader_crash_term = raft_term(n->r);
    }
    announce_crash(s, n);
    n->alive = false;
    n->incarnation++;
    n->timer_gen++;
    raft_update_free(&n->up);
    raft_close(n->r);
    n->r = NULL;
    /* The first unfinished write may be torn: a prefix of it reached the disk. */
    if (n->n_pend > 0 && chance(s, 500)) {
        uint32_t k = (uint32_t)rnd(s, 0, n->pend[0].n);
        disk_apply(n, &n->pend[0], k);
    }
    while (n->n_pend > 0)
        pend_pop(n);
    ferry_free(n->rx);
    n->rx = NULL;
    n->rx_len = n->rx_cap = n->rx_index = 0;
    /* The state machine's database may lose its last transactions (it catches
     * up from the log), but never goes behind the durable snapshot. */
    if (n->sm_last > n->snap.index && chance(s, 500)) {
        uint64_t keep = rnd(s, n->snap.index, n->sm_last);
        bool known;
        uint64_t d = truth_digest(s, keep, &known);
        if (keep == n->snap.index) {
            n->sm_last = keep;
            n->sm_digest = get_u64(n->snap_data + 8);
        } else if (known) {
            n->sm_last = keep;
            n->sm_digest = d;
        }
    }
    if (s->stats)
        s->stats->crashes++;
    sim_trace(s, "node %llu crashes", (unsigned long long)n->id);
}

static void node_free(struct snode *n)
{
    if (n->r != NULL) {
        raft_update_free(&n->up);
        raft_close(n->r);
    }
    while (n->n_pend > 0)
        pend_pop(n);
    ferry_free(n->pend);
    dentries_free(n->log, n->n_log);
    ferry_free(n->log);
    ferry_free(n->snap_data);
    ferry_free(n->rx);
    memset(n, 0, sizeof(*n));
}

/* Snapshot bytes: [u64 index][u64 digest][filler derived from the digest]. */
static uint8_t *snap_make(uint64_t index, uint64_t digest, uint64_t *size)
{
    uint64_t fill = digest % 3000;
    uint8_t *p = ferry_malloc(16 + fill);
    put_u64(p, index);
    put_u64(p + 8, digest);
    for (uint64_t i = 0; i < fill; i++)
        p[16 + i] = (uint8_t)(digest >> (8 * (i % 8))) ^ (uint8_t)i;
    *size = 16 + fill;
    return p;
}

static bool snap_valid(const uint8_t *p, uint64_t size, uint64_t index)
{
    if (size < 16 || get_u64(p) != index)
        return false;
    uint64_t digest = get_u64(p + 8);
    if (size != 16 + digest % 3000)
        return false;
    for (uint64_t i = 0; i < size - 16; i++)
        if (p[16 + i] != ((uint8_t)(digest >> (8 * (i % 8))) ^ (uint8_t)i))
            return false;
    return true;
}

/* ---- network ------------------------------------------------------------- */

static void send_msg(struct sim *s, struct snode *n, struct raft_msg *m)
{
    int to = slot_of(s, m->to);
    struct buf b;
    buf_init(&b);
    if (m->type == RAFT_MSG_SNAPSHOT) {
        if (n->snap.index != m->u.snapshot.index || n->snap.size != m->u.snapshot.size)
            sim_fail(s, "node %llu sends snapshot %llu but holds %llu", (unsigned long long)n->id,
                     (unsigned long long)m->u.snapshot.index, (unsigned long long)n->snap.index);
        else
            m->u.snapshot.data = n->snap_data + m->u.snapshot.offset;
    }
    if (raft_msg_encode(m, &b) != 0) {
        sim_fail(s, "encode of %s failed", raft_msg_type_name(m->type));
        buf_free(&b);
        return;
    }
    int from = slot_of(s, n->id);
    if (to < 0 || s->cut[from][to] || chance(s, s->loss_pm)) {
        buf_free(&b);
        return;
    }
    int copies = chance(s, s->dup_pm) ? 2 : 1;
    for (int c = 0; c < copies; c++) {
        uint8_t *data = ferry_malloc(b.len);
        memcpy(data, b.data, b.len);
        uint64_t t = s->now + rnd(s, s->delay_min, s->delay_max);
        if (t > s->net_last[from][to])
            s->net_last[from][to] = t;
        schedule(s, t, SEV_DELIVER, to, 0, 0, data, (uint32_t)b.len);
    }
    buf_free(&b);
}

static void deliver(struct sim *s, struct sev *ev)
{
    struct snode *n = &s->nodes[ev->node];
    struct raft_msg m;
    struct ferry_err err;
    if (raft_msg_decode(ev->data, ev->len, &m, &err) != 0) {
        sim_fail(s, "decode failed: %s", err.msg);
        return;
    }
    if (n->alive) {
        sim_trace(s, "%llu -> %llu %s term %llu", (unsigned long long)m.from,
                  (unsigned long long)m.to, raft_msg_type_name(m.type), (unsigned long long)m.term);
        struct raft_event rev = {.type = RAFT_EV_RECEIVE, .u.receive = &m};
        step_node(s, n, &rev);
        /* Now and then the same message arrives from a foreign cluster. */
        if (s->faults && n->alive && chance(s, 5)) {
            m.cluster_id ^= 1;
            step_node(s, n, &rev);
            if (n->up.n_rejected != 1 || n->up.rejected[0].reason != RAFT_REJECT_CLUSTER)
                sim_fail(s, "node %llu accepted a message from another cluster",
                         (unsigned long long)n->id);
            else if (s->stats)
                s->stats->rejects_seen++;
        }
    }
    raft_msg_release(&m);
}

/* The driver's on_peer_down: node ev->node (incarnation ev->a) lost its link
 * to node ev->b. A node restarted since has no such link. */
static void deliver_peer_down(struct sim *s, struct sev *ev)
{
    struct snode *n = &s->nodes[ev->node];
    if (!n->alive || ev->a != n->incarnation || s->no_peer_down)
        return;
    sim_trace(s, "node %llu: link to %llu lost", (unsigned long long)n->id,
              (unsigned long long)ev->b);
    struct raft_event rev = {.type = RAFT_EV_PEER_DOWN, .u.node_id = ev->b};
    step_node(s, n, &rev);
    if (s->stats)
        s->stats->peer_downs++;
}

/* A link drops while both ends live: a random running node hears PEER_DOWN
 * about a running peer - its leader, seven times in ten when it has one. */
static void spurious_peer_down(struct sim *s)
{
    int k = (int)rnd(s, 0, s->n_nodes - 1);
    struct snode *y = &s->nodes[k];
    if (!y->alive)
        return;
    uint64_t about = raft_leader(y->r);
    if (about == 0 || about == y->id || chance(s, 300)) {
        const struct raft_config *c = raft_config(y->r);
        about = c->nodes[rnd(s, 0, c->n - 1)].id;
    }
    int a = slot_of(s, about);
    if (about == y->id || a < 0 || !s->nodes[a].alive)
        return;
    schedule(s, s->now + rnd(s, 0, 5), SEV_PEER_DOWN, k, y->incarnation, about, NULL, 0);
    if (s->stats && !s->no_peer_down)
        s->stats->spurious_peer_downs++;
}

/* ---- acting on an update ---------------------------------------------------- */

static void install_snapshot(struct sim *s, struct snode *n, const struct raft_update *up)
{
    /* Earlier writes complete first (the contract's barrier). */
    while (n->n_pend > 0) {
        disk_apply(n, &n->pend[0], n->pend[0].n);
        pend_pop(n);
    }
    const struct raft_snapshot_meta *m = &up->install;
    if (n->rx_index != m->index || n->rx_len != m->size ||
        !snap_valid(n->rx, n->rx_len, m->index)) {
        sim_fail(s, "node %llu installs snapshot %llu from corrupt chunks (%llu of %llu bytes)",
                 (unsigned long long)n->id, (unsigned long long)m->index,
                 (unsigned long long)n->rx_len, (unsigned long long)m->size);
        return;
    }
    bool known;
    uint64_t d = truth_digest(s, m->index, &known);
    if (known && d != get_u64(n->rx + 8))
        sim_fail(s, "state machine safety: snapshot %llu installed on node %llu differs",
                 (unsigned long long)m->index, (unsigned long long)n->id);
    ferry_free(n->snap_data);
    n->snap_data = n->rx;
    n->snap = *m;
    n->rx = NULL;
    n->rx_len = n->rx_cap = n->rx_index = 0;
    uint32_t keep = 0;
    for (uint32_t i = 0; i < n->n_log; i++) {
        if (up->install_keep_log && n->log[i].index > m->index)
            n->log[keep++] = n->log[i];
        else
            ferry_free(n->log[i].data);
    }
    n->n_log = keep;
    n->sm_last = m->index;
    n->sm_digest = get_u64(n->snap_data + 8);
    if (s->stats)
        s->stats->snapshots_installed++;
    sim_trace(s, "node %llu installs snapshot %llu", (unsigned long long)n->id,
              (unsigned long long)m->index);
}

static void store_chunk(struct sim *s, struct snode *n, const struct raft_update *up)
{
    if (up->chunk.offset == 0) {
        n->rx_len = 0;
        n->rx_index = up->chunk.index;
    }
    if (up->chunk.index != n->rx_index || up->chunk.offset != n->rx_len) {
        sim_fail(s, "node %llu stores chunk at %llu of snapshot %llu, expected %llu",
                 (unsigned long long)n->id, (unsigned long long)up->chunk.offset,
                 (unsigned long long)up->chunk.index, (unsigned long long)n->rx_len);
        return;
    }
    if (n->rx_len + up->chunk.len > n->rx_cap) {
        n->rx_cap = (n->rx_len + up->chunk.len) * 2;
        n->rx = ferry_realloc(n->rx, n->rx_cap);
    }
    if (up->chunk.len > 0)
        memcpy(n->rx + n->rx_len, up->chunk.data, up->chunk.len);
    n->rx_len += up->chunk.len;
}

static void write_entries(struct sim *s, struct snode *n, const struct raft_update *up)
{
    check_persist(s, n, up);
    if (n->n_pend == n->cap_pend) {
        n->cap_pend = n->cap_pend ? n->cap_pend * 2 : 16;
        n->pend = ferry_realloc(n->pend, n->cap_pend * sizeof(*n->pend));
    }
    struct dwrite *w = &n->pend[n->n_pend++];
    w->id = n->next_write_id++;
    w->from = up->persist_from;
    w->n = up->n_persist;
    w->es = ferry_calloc(w->n + 1, sizeof(*w->es));
    for (uint32_t i = 0; i < w->n; i++) {
        const struct raft_entry *e = &up->persist[i];
        w->es[i].index = e->index;
        w->es[i].term = e->term;
        w->es[i].type = e->type;
        w->es[i].len = e->len;
        if (e->len > 0) {
            w->es[i].data = ferry_malloc(e->len);
            memcpy(w->es[i].data, e->data, e->len);
        }
    }
    uint64_t start = n->disk_free_at > s->now ? n->disk_free_at : s->now;
    n->disk_free_at = start + rnd(s, 1, 8);
    schedule(s, n->disk_free_at, SEV_DISK, slot_of(s, n->id), n->incarnation, w->id, NULL, 0);
}

static void disk_done(struct sim *s, struct sev *ev)
{
    struct snode *n = &s->nodes[ev->node];
    if (!n->alive || ev->a != n->incarnation || n->n_pend == 0 || n->pend[0].id != ev->b)
        return;
    struct dwrite *w = &n->pend[0];
    uint64_t index = w->n ? w->es[w->n - 1].index : 0;
    uint64_t term = w->n ? w->es[w->n - 1].term : 0;
    disk_apply(n, w, w->n);
    pend_pop(n);
    if (index == 0)
        return;
    struct raft_event rev = {.type = RAFT_EV_PERSISTED, .u.persisted = {index, term}};
    step_node(s, n, &rev);
}

static void take_snapshot(struct sim *s, struct snode *n, uint64_t index)
{
    bool known;
    uint64_t d = truth_digest(s, index, &known);
    if (!known || n->sm_last < index) {
        sim_fail(s, "node %llu asked to snapshot index %llu it has not applied",
                 (unsigned long long)n->id, (unsigned long long)index);
        return;
    }
    schedule(s, s->now + rnd(s, 2, 20), SEV_SNAP, slot_of(s, n->id), n->incarnation, index, NULL,
             0);
    (void)d;
}

static void snap_done(struct sim *s, struct sev *ev)
{
    struct snode *n = &s->nodes[ev->node];
    if (!n->alive || ev->a != n->incarnation)
        return;
    uint64_t index = ev->b;
    bool known;
    uint64_t d = truth_digest(s, index, &known);
    uint64_t size = 0;
    sim_trace(s, "node %llu saved snapshot %llu (had %llu)", (unsigned long long)n->id,
              (unsigned long long)index, (unsigned long long)n->snap.index);
    if (index > n->snap.index) {
        ferry_free(n->snap_data);
        n->snap_data = snap_make(index, d, &size);
        n->snap.index = index;
        n->snap.size = size;
        n->snap.term = raft_term_at(n->r, index);
        struct raft_event rev = {.type = RAFT_EV_SNAPSHOT_SAVED, .u.snapshot_saved = {index, size}};
        step_node(s, n, &rev);
        /* The metadata as the core recorded it, configuration included. */
        if (n->alive && raft_snapshot(n->r)->index == index)
            n->snap = *raft_snapshot(n->r);
        else
            sim_fail(s, "node %llu did not record its saved snapshot %llu",
                     (unsigned long long)n->id, (unsigned long long)index);
        return;
    }
    struct raft_event rev = {.type = RAFT_EV_SNAPSHOT_SAVED, .u.snapshot_saved = {0, 0}};
    step_node(s, n, &rev);
}

static void compact(struct snode *n, uint64_t upto)
{
    uint32_t k = 0;
    while (k < n->n_log && n->log[k].index <= upto)
        ferry_free(n->log[k++].data);
    memmove(n->log, n->log + k, (n->n_log - k) * sizeof(*n->log));
    n->n_log -= k;
}

static void handle_update(struct sim *s, struct snode *n)
{
    struct raft_update *up = &n->up;
    if (up->flags & RAFT_UPDATE_STATE) {
        n->term = up->term;
        n->vote = up->vote;
    }
    if (up->flags & RAFT_UPDATE_CHUNK)
        store_chunk(s, n, up);
    if (up->flags & RAFT_UPDATE_INSTALL)
        install_snapshot(s, n, up);
    if (up->flags & RAFT_UPDATE_ENTRIES)
        write_entries(s, n, up);
    for (uint32_t i = 0; i < up->n_msgs; i++)
        send_msg(s, n, &up->msgs[i]);
    for (uint32_t i = 0; i < up->n_apply; i++)
        check_apply(s, n, &up->apply[i]);
    if (up->flags & RAFT_UPDATE_TAKE_SNAPSHOT)
        take_snapshot(s, n, up->take_snapshot);
    if (up->flags & RAFT_UPDATE_COMPACT) {
        if (up->compact_to > n->snap.index)
            sim_fail(s, "node %llu compacts to %llu beyond its snapshot %llu",
                     (unsigned long long)n->id, (unsigned long long)up->compact_to,
                     (unsigned long long)n->snap.index);
        compact(n, up->compact_to);
    }
    check_role(s, n, up);
    check_commit(s, n, up);
    if (up->flags & RAFT_UPDATE_ROLE)
        sim_trace(s, "node %llu is %s, term %llu, leader %llu", (unsigned long long)n->id,
                  raft_role_name(up->role), (unsigned long long)up->term,
                  (unsigned long long)up->leader_id);
    if (up->role == RAFT_LEADER && s->first_leader_ms == 0 && up->commit >= 1)
        s->first_leader_ms = s->now ? s->now : 1;
    if (up->role == RAFT_LEADER && s->leader_crashed && up->term > s->leader_crash_term) {
        s->leader_crashed = false;
        uint64_t d = s->now - s->leader_crash_ms;
        if (s->stats) {
            s->stats->failover_n++;
            s->stats->failover_sum += d;
            s->stats->failover_max = d > s->stats->failover_max ? d : s->stats->failover_max;
            s->stats->failover_fast += d < s->opts.election_timeout_ms;
        }
    }
    n->timer_gen++;
    uint64_t t = up->deadline_ms > n->clock_off ? up->deadline_ms - n->clock_off : 0;
    schedule(s, t > s->now ? t : s->now, SEV_TIMER, slot_of(s, n->id), n->timer_gen, 0, NULL, 0);
}

/* ---- workload, membership, faults --------------------------------------------- */

/* The leader with the highest term among running nodes, or NULL. */
static struct snode *current_leader(struct sim *s)
{
    struct snode *best = NULL;
    for (int i = 0; i < s->n_nodes; i++) {
        struct snode *n = &s->nodes[i];
        if (n->alive && raft_role(n->r) == RAFT_LEADER &&
            (best == NULL || raft_term(n->r) > raft_term(best->r)))
            best = n;
    }
    return best;
}

static uint64_t max_term(struct sim *s)
{
    uint64_t t = 0;
    for (int i = 0; i < s->n_nodes; i++)
        if (s->nodes[i].alive && raft_term(s->nodes[i].r) > t)
            t = raft_term(s->nodes[i].r);
    return t;
}

static uint64_t propose(struct sim *s, struct snode *n)
{
    uint8_t buf[300];
    uint32_t len = (uint32_t)rnd(s, 0, sizeof(buf));
    uint64_t id = ++s->payload_seq;
    for (uint32_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(id >> (8 * (i % 8))) ^ (uint8_t)rnd(s, 0, 255);
    if (len >= 8)
        put_u64(buf, id);
    struct raft_event ev = {.type = RAFT_EV_PROPOSE, .u.propose = {buf, len}};
    ev.now_ms = local_now(s, n);
    int rc = raft_step(n->r, &ev, &n->up);
    uint64_t index = rc == 0 ? n->up.proposed_index : 0;
    handle_update(s, n);
    if (rc == 0 && s->stats)
        s->stats->proposals++;
    return index;
}

static int request(struct sim *s, struct snode *n, struct raft_event *ev)
{
    ev->now_ms = local_now(s, n);
    int rc = raft_step(n->r, ev, &n->up);
    handle_update(s, n);
    return rc;
}

static void membership_action(struct sim *s)
{
    struct snode *l = current_leader(s);
    if (l == NULL || raft_term(l->r) < max_term(s) || !raft_accepts_proposals(l->r))
        return;
    const struct raft_config *c = raft_config(l->r);
    if (raft_config_index(l->r) > raft_commit_index(l->r))
        return;
    uint64_t roll = rnd(s, 0, 2);
    struct raft_event ev = {0};
    if (roll == 0 && c->n < 6 && s->n_nodes < SIM_MAX_NODES) {
        struct snode *n = &s->nodes[s->n_nodes];
        memset(n, 0, sizeof(*n));
        n->id = (uint64_t)s->n_nodes + 1;
        n->exists = true;
        n->snap_data = snap_make(0, 0, &n->snap.size);
        n->snap.size = 0;
        n->bootstrap = *c;
        uint8_t prio = (uint8_t)rnd(s, 1, 3);
        n->bootstrap.nodes[n->bootstrap.n++] = (struct raft_node){n->id, RAFT_LEARNER, prio};
        s->n_nodes++;
        node_start(s, n);
        ev.type = RAFT_EV_ADD_LEARNER;
        ev.u.add_learner.id = n->id;
        ev.u.add_learner.priority = prio;
        int rc = request(s, l, &ev);
        if (rc != 0) {
            node_crash(s, n);
            n->retired = true;
        } else if (s->stats) {
            s->stats->member_changes++;
        }
        sim_trace(s, "add learner %llu: %s", (unsigned long long)n->id, ferry_errname(rc));
        return;
    }
    if (roll == 1) {
        for (uint32_t i = 0; i < c->n; i++) {
            if (c->nodes[i].role == RAFT_LEARNER) {
                ev.type = RAFT_EV_PROMOTE;
                ev.u.node_id = c->nodes[i].id;
                int rc = request(s, l, &ev);
                if (rc == 0 && s->stats)
                    s->stats->member_changes++;
                sim_trace(s, "promote %llu: %s", (unsigned long long)ev.u.node_id,
                          ferry_errname(rc));
                return;
            }
        }
        return;
    }
    if (roll == 2 && raft_config_voters(c) > 3) {
        ev.type = RAFT_EV_REMOVE;
        ev.u.node_id = c->nodes[rnd(s, 0, c->n - 1)].id;
        int rc = request(s, l, &ev);
        if (rc == 0 && s->stats)
            s->stats->member_changes++;
        sim_trace(s, "remove %llu: %s", (unsigned long long)ev.u.node_id, ferry_errname(rc));
    }
}

/* Nodes no longer in the current leader's committed configuration leave for good. */
static void retire_removed(struct sim *s)
{
    struct snode *l = current_leader(s);
    if (l == NULL || raft_term(l->r) < max_term(s) ||
        raft_config_index(l->r) > raft_commit_index(l->r))
        return;
    const struct raft_config *c = raft_config(l->r);
    for (int i = 0; i < s->n_nodes; i++) {
        struct snode *n = &s->nodes[i];
        if (n->exists && !n->retired && raft_config_find(c, n->id) == NULL) {
            if (n->alive)
                node_crash(s, n);
            n->retired = true;
            sim_trace(s, "node %llu retired", (unsigned long long)n->id);
        }
    }
}

static void heal(struct sim *s)
{
    memset(s->cut, 0, sizeof(s->cut));
}

static void inject_fault(struct sim *s)
{
    int n = s->n_nodes;
    struct snode *l = current_leader(s);
    switch (rnd(s, 0, 11)) {
    case 0: { /* partition into two sides */
        uint32_t side = (uint32_t)rnd(s, 1, (1u << n) - 2);
        for (int a = 0; a < n; a++)
            for (int b = 0; b < n; b++)
                s->cut[a][b] = ((side >> a) & 1) != ((side >> b) & 1);
        if (s->stats)
            s->stats->partitions++;
        sim_trace(s, "partition %x", side);
        break;
    }
    case 1: { /* one-way link failure */
        int a = (int)rnd(s, 0, n - 1), b = (int)rnd(s, 0, n - 1);
        s->cut[a][b] = true;
        sim_trace(s, "cut %d -> %d", a, b);
        break;
    }
    case 2: /* isolate the leader */
        if (l != NULL) {
            int k = slot_of(s, l->id);
            for (int b = 0; b < n; b++)
                s->cut[k][b] = s->cut[b][k] = b != k;
            if (s->stats)
                s->stats->partitions++;
            sim_trace(s, "isolate leader %llu", (unsigned long long)l->id);
        }
        break;
    case 3:
    case 4:
        heal(s);
        sim_trace(s, "heal");
        break;
    case 5: { /* crash */
        int k = (int)rnd(s, 0, n - 1);
        if (s->nodes[k].alive)
            node_crash(s, &s->nodes[k]);
        break;
    }
    case 6:
    case 7: { /* restart */
        int k = (int)rnd(s, 0, n - 1);
        struct snode *x = &s->nodes[k];
        if (x->exists && !x->retired && !x->alive) {
            sim_trace(s, "node %llu restarts", (unsigned long long)x->id);
            node_start(s, x);
        }
        break;
    }
    case 8: { /* the node's clock jumps forward (a pause, a slow timer) */
        int k = (int)rnd(s, 0, n - 1);
        struct snode *x = &s->nodes[k];
        if (x->alive) {
            x->clock_off += rnd(s, 50, 2 * s->opts.election_timeout_ms);
            sim_trace(s, "clock of node %llu jumps", (unsigned long long)x->id);
            tick(s, x);
        }
        break;
    }
    case 9: /* network quality */
        s->loss_pm = (uint32_t)(chance(s, 300) ? 0 : rnd(s, 0, 300));
        s->dup_pm = (uint32_t)rnd(s, 0, 100);
        s->delay_min = (uint32_t)rnd(s, 0, 10);
        s->delay_max = s->delay_min + (uint32_t)rnd(s, 1, chance(s, 200) ? 400 : 60);
        break;
    case 10:
        if (s->layout != SIM_2W)
            membership_action(s);
        break;
    case 11: /* leadership transfer */
        if (l != NULL) {
            struct raft_event ev = {.type = RAFT_EV_TRANSFER};
            const struct raft_config *c = raft_config(l->r);
            ev.u.node_id = chance(s, 200) ? 0 : c->nodes[rnd(s, 0, c->n - 1)].id;
            int rc = request(s, l, &ev);
            if (rc == 0 && s->stats)
                s->stats->transfers++;
            sim_trace(s, "transfer to %llu: %s", (unsigned long long)ev.u.node_id,
                      ferry_errname(rc));
        }
        break;
    }
}

/* ---- the run --------------------------------------------------------------- */

static void setup(struct sim *s, uint64_t seed, int layout)
{
    rng_seed(&s->rng, seed);
    raft_options_default(&s->opts);
    s->opts.cluster_id = SIM_CLUSTER_ID;
    s->opts.max_entries_per_msg = (uint32_t)(chance(s, 500) ? rnd(s, 1, 3) : rnd(s, 1, 64));
    s->opts.max_bytes_per_msg = (uint32_t)rnd(s, 64, 8192);
    s->opts.max_inflight_msgs = (uint32_t)rnd(s, 1, 16);
    s->opts.max_inflight_bytes = rnd(s, 256, 65536);
    s->opts.snapshot_threshold = (uint32_t)rnd(s, 10, 120);
    s->opts.snapshot_trailing = (uint32_t)rnd(s, 0, 20);
    s->opts.snapshot_chunk_bytes = (uint32_t)rnd(s, 64, 1024);
    s->opts.catchup_margin = (uint32_t)rnd(s, 0, 8);
    /* --snapshot-bytes: also snapshot by payload bytes (no draw from the
     * random stream, so every seed's run is otherwise unchanged). */
    s->opts.snapshot_bytes = s->snapshot_bytes ? s->snapshot_bytes + seed % 1024 : 0;
    s->n_nodes = layout == SIM_5 ? 5 : 3;
    struct raft_config c = {0};
    bool equal = chance(s, 400);
    for (int i = 0; i < s->n_nodes; i++) {
        uint8_t prio = equal ? 1 : (uint8_t)rnd(s, 1, 3);
        if (layout == SIM_2W && i == 2)
            prio = 0;
        c.nodes[c.n++] = (struct raft_node){(uint64_t)i + 1, RAFT_VOTER, prio};
    }
    for (int i = 0; i < s->n_nodes; i++) {
        struct snode *n = &s->nodes[i];
        n->id = (uint64_t)i + 1;
        n->exists = true;
        n->bootstrap = c;
        n->snap.config = c;
        n->snap_data = snap_make(0, 0, &n->snap.size);
        n->snap.size = 0;
    }
    s->loss_pm = 0;
    s->dup_pm = 0;
    s->delay_min = 1;
    s->delay_max = 10;
    for (int i = 0; i < s->n_nodes; i++)
        node_start(s, &s->nodes[i]);
    schedule(s, s->now + 10, SEV_CLIENT, 0, 0, 0, NULL, 0);
}

static void run_event(struct sim *s, struct sev *ev)
{
    if (ev->t > s->now)
        s->now = ev->t;
    struct snode *n = &s->nodes[ev->node];
    switch (ev->kind) {
    case SEV_DELIVER:
        deliver(s, ev);
        break;
    case SEV_TIMER:
        if (n->alive && ev->a == n->timer_gen)
            tick(s, n);
        break;
    case SEV_DISK:
        disk_done(s, ev);
        break;
    case SEV_SNAP:
        snap_done(s, ev);
        break;
    case SEV_PEER_DOWN:
        deliver_peer_down(s, ev);
        break;
    case SEV_CLIENT: {
        struct snode *l = current_leader(s);
        if (l != NULL && raft_accepts_proposals(l->r)) {
            int k = (int)rnd(s, 1, 3);
            for (int i = 0; i < k && l->alive; i++)
                propose(s, l);
        }
        schedule(s, s->now + rnd(s, 5, 80), SEV_CLIENT, 0, 0, 0, NULL, 0);
        break;
    }
    }
    ferry_free(ev->data);
}

static bool stopped(const struct sim *s)
{
    return s->stop_at_step > 0 && s->step >= s->stop_at_step;
}

static bool one_step(struct sim *s)
{
    if (s->n_heap == 0) {
        sim_fail(s, "simulator: event queue ran dry");
        return false;
    }
    struct sev ev = heap_pop(s);
    run_event(s, &ev);
    s->step++;
    if (s->step % 256 == 0)
        check_logs(s);
    if (s->step % 16 == 0)
        retire_removed(s);
    return s->violation[0] == 0 && !stopped(s);
}

/* Highest priority among running voters of the leader's configuration. */
static int best_priority(struct sim *s, const struct raft_config *c)
{
    int best = -1;
    for (uint32_t i = 0; i < c->n; i++) {
        int k = slot_of(s, c->nodes[i].id);
        if (c->nodes[i].role == RAFT_VOTER && k >= 0 && s->nodes[k].alive &&
            c->nodes[i].priority > best)
            best = c->nodes[i].priority;
    }
    return best;
}

static void liveness(struct sim *s)
{
    s->faults = false;
    if (s->leader_crashed && s->stats)
        s->stats->failover_open++; /* no new leader before the faults stopped */
    s->leader_crashed = false;
    heal(s);
    s->loss_pm = 0;
    s->dup_pm = 0;
    s->delay_min = 1;
    s->delay_max = 10;
    for (int i = 0; i < s->n_nodes; i++) {
        struct snode *n = &s->nodes[i];
        if (n->exists && !n->retired && !n->alive)
            node_start(s, n);
    }
    sim_trace(s, "faults stop");
    uint64_t t0 = s->now, t_elect = 0, t_commit = 0;
    uint64_t marker = 0, marker_term = 0;
    /* The checks run after every step, including the last one a replay runs
     * (stop_at_step), so a replay reproduces a liveness violation found there. */
    while (s->violation[0] == 0) {
        if (s->now > t0 + LIVENESS_BOUND_MS) {
            struct snode *l = current_leader(s);
            sim_fail(s,
                     "liveness: %s %llu ms after faults stopped (leader %llu, witness %d, "
                     "marker %llu)",
                     t_elect == 0    ? "no leader elected"
                     : t_commit == 0 ? "no proposal committed"
                                     : "leadership did not settle on the best node",
                     (unsigned long long)(s->now - t0), l ? (unsigned long long)l->id : 0ull,
                     l ? raft_is_witness(l->r) : -1, (unsigned long long)marker);
            return;
        }
        struct snode *l = current_leader(s);
        /* Elected: the leader has committed an entry of its own term (its no-op). */
        if (l != NULL && t_elect == 0 &&
            raft_term_at(l->r, raft_commit_index(l->r)) == raft_term(l->r))
            t_elect = s->now;
        if (l != NULL && t_elect && t_commit == 0 && raft_accepts_proposals(l->r) &&
            (marker == 0 || raft_term_at(l->r, marker) != marker_term)) {
            marker = propose(s, l);
            marker_term = raft_term(l->r);
        }
        if (l != NULL && marker && t_commit == 0 && raft_commit_index(l->r) >= marker &&
            raft_term_at(l->r, marker) == marker_term)
            t_commit = s->now;
        if (l != NULL && t_commit) {
            const struct raft_config *c = raft_config(l->r);
            bool settled = !raft_is_witness(l->r) && raft_priority(l->r) == best_priority(s, c) &&
                           raft_transfer_target(l->r) == 0;
            for (int i = 0; i < s->n_nodes && settled; i++) {
                struct snode *n = &s->nodes[i];
                if (n->alive && raft_config_find(c, n->id) != NULL &&
                    raft_applied_index(n->r) < marker)
                    settled = false;
            }
            if (settled)
                break;
        }
        if (stopped(s))
            break;
        one_step(s);
    }
    if (s->violation[0] || s->stats == NULL || stopped(s))
        return;
    struct sim_stats *st = s->stats;
    uint64_t e = t_elect - t0, c = t_commit - t0, f = s->now - t0;
    st->heal_elect_n++;
    st->heal_elect_sum += e;
    st->heal_elect_max = e > st->heal_elect_max ? e : st->heal_elect_max;
    st->heal_commit_sum += c;
    st->heal_commit_max = c > st->heal_commit_max ? c : st->heal_commit_max;
    st->settle_sum += f;
    st->settle_max = f > st->settle_max ? f : st->settle_max;
}

/* Spurious link drops at a settled cluster: each follower in turn hears
 * PEER_DOWN about its leader, which lives. Its pre-vote must be ignored by
 * the others, which still hear the leader (stickiness): for three heartbeats
 * after each report (ample for a pre-vote and a vote round) the leader keeps
 * its office and nobody's term moves. */
static void spurious_check(struct sim *s)
{
    struct snode *l = current_leader(s);
    if (l == NULL || s->no_peer_down)
        return;
    uint64_t term = raft_term(l->r);
    for (int i = 0; i < s->n_nodes; i++) {
        struct snode *f = &s->nodes[i];
        if (f == l || !f->alive || raft_leader(f->r) != l->id)
            continue;
        sim_trace(s, "spurious check: node %llu hears its leader %llu is down",
                  (unsigned long long)f->id, (unsigned long long)l->id);
        schedule(s, s->now, SEV_PEER_DOWN, i, f->incarnation, l->id, NULL, 0);
        if (s->stats)
            s->stats->spurious_peer_downs++;
        uint64_t until = s->now + 3 * s->opts.heartbeat_ms;
        while (s->now < until) {
            if (s->violation[0] || stopped(s))
                return;
            one_step(s);
        }
        if (current_leader(s) != l || raft_term(l->r) != term || max_term(s) != term) {
            sim_fail(s,
                     "a spurious PEER_DOWN at node %llu disturbed healthy leader %llu of term "
                     "%llu (term now %llu)",
                     (unsigned long long)f->id, (unsigned long long)l->id, (unsigned long long)term,
                     (unsigned long long)max_term(s));
            return;
        }
    }
}

/* A clean failover once the cluster has settled: the leader's process dies on
 * a healthy network. The others hear of it through PEER_DOWN (unless
 * --no-peer-down, or no reset was sent) and must elect a new leader within
 * the liveness bound; the time that takes is the failover figure, kept apart
 * for clusters where only voters of lower priority survive (they must first
 * decay their target priority, one election round each). */
static void failover(struct sim *s)
{
    struct snode *l = current_leader(s);
    if (l == NULL)
        return;
    const struct raft_config *c = raft_config(l->r);
    int kind = 1;
    for (uint32_t i = 0; i < c->n; i++)
        if (c->nodes[i].id != l->id && c->nodes[i].role == RAFT_VOTER &&
            c->nodes[i].priority == raft_priority(l->r))
            kind = 0;
    uint64_t term = raft_term(l->r), t0 = s->now;
    unsigned long long old = (unsigned long long)l->id;
    sim_trace(s, "settled leader %llu crashes", old);
    node_crash(s, l);
    for (;;) {
        if (s->violation[0] || stopped(s))
            return;
        struct snode *n = current_leader(s);
        if (n != NULL && raft_term(n->r) > term)
            break;
        if (s->now > t0 + LIVENESS_BOUND_MS) {
            sim_fail(s, "liveness: no leader elected %llu ms after the settled leader %llu crashed",
                     (unsigned long long)(s->now - t0), old);
            return;
        }
        one_step(s);
    }
    if (s->stats == NULL)
        return;
    struct sim_stats *st = s->stats;
    uint64_t d = s->now - t0, b = d / SIM_HIST_MS;
    st->clean_n[kind]++;
    st->clean_sum[kind] += d;
    st->clean_max[kind] = d > st->clean_max[kind] ? d : st->clean_max[kind];
    st->clean_fast[kind] += d < s->opts.election_timeout_ms;
    st->clean_hist[kind][b < SIM_HIST_BUCKETS ? b : SIM_HIST_BUCKETS - 1]++;
}

int sim_run(struct sim *s, uint64_t seed, int layout, long steps, struct sim_stats *stats)
{
    int trace = s->trace;
    long stop_at = s->stop_at_step;
    bool no_peer_down = s->no_peer_down;
    uint64_t snapshot_bytes = s->snapshot_bytes;
    memset(s, 0, sizeof(*s));
    s->trace = trace;
    s->stop_at_step = stop_at;
    s->no_peer_down = no_peer_down;
    s->snapshot_bytes = snapshot_bytes;
    s->seed = seed;
    s->layout = layout;
    s->steps_max = steps;
    s->stats = stats;
    check_init(s);
    setup(s, seed, layout);
    /* Cold start without faults until the first leader commits its no-op. */
    while (s->violation[0] == 0 && s->first_leader_ms == 0 && s->now < LIVENESS_BOUND_MS &&
           !stopped(s))
        one_step(s);
    if (s->first_leader_ms == 0 && s->violation[0] == 0 && s->now >= LIVENESS_BOUND_MS)
        sim_fail(s, "liveness: no leader elected at cold start");
    if (stats && s->first_leader_ms) {
        stats->first_elect_n++;
        stats->first_elect_sum += s->first_leader_ms;
        if (s->first_leader_ms > stats->first_elect_max)
            stats->first_elect_max = s->first_leader_ms;
    }
    s->faults = true;
    uint32_t fault_pm = (uint32_t)rnd(s, 5, 40);
    uint32_t spurious_pm = (uint32_t)rnd(s, 0, 10);
    while (s->violation[0] == 0 && s->step < steps && !stopped(s)) {
        if (chance(s, fault_pm))
            inject_fault(s);
        if (chance(s, spurious_pm))
            spurious_peer_down(s);
        if (s->violation[0])
            break;
        one_step(s);
    }
    /* A replay stopped inside the fault phase ends here; one stopped at its
     * last step still runs the liveness checks that follow that step. */
    bool faults_done = s->violation[0] == 0 && s->step >= steps;
    if (faults_done)
        liveness(s);
    if (faults_done && s->violation[0] == 0 && !stopped(s))
        spurious_check(s);
    if (faults_done && s->violation[0] == 0 && !stopped(s))
        failover(s);
    if (faults_done && s->violation[0] == 0 && !stopped(s))
        check_logs(s);
    if (stats) {
        stats->seeds++;
        stats->steps += (uint64_t)s->step;
        stats->sim_ms += s->now;
    }
    for (int i = 0; i < SIM_MAX_NODES; i++)
        node_free(&s->nodes[i]);
    while (s->n_heap > 0) {
        struct sev ev = heap_pop(s);
        ferry_free(ev.data);
    }
    ferry_free(s->heap);
    s->heap = NULL;
    check_free(s);
    return s->violation[0] ? 1 : 0;
}
