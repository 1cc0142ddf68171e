/* raft_harness.h - a tiny deterministic cluster for the Raft unit tests.
 *
 * Nodes step on a 1 ms clock; messages go through the codec and are delivered
 * at once (unless a link is cut or a node is down); writes are durable at
 * once; snapshots are saved at once with a fixed pattern of snapshot_size
 * bytes. Header-only so each test_raft_*.c links just ferry_raft.
 */
#ifndef FERRY_TEST_RAFT_HARNESS_H
#define FERRY_TEST_RAFT_HARNESS_H

#include <string.h>

#include "raft/core/codec.h"
#include "raft/core/raft.h"
#include "util/alloc.h"
#include "util/buf.h"

#define H_MAX 6
#define H_QUEUE 4096

struct hnode {
    struct raft *r;
    struct raft_update up;
    int down;
    uint64_t applied;
    uint64_t snap_index;
    uint64_t chunks; /* snapshot chunks stored */
    uint64_t installs;
    int was_leader;
};

struct hcluster {
    struct hnode n[H_MAX + 1]; /* by id, 1-based */
    int count;
    uint64_t now;
    int cut[H_MAX + 1][H_MAX + 1];
    struct buf q[H_QUEUE];
    uint32_t qn;
    uint64_t snapshot_size;
    int manual_persist; /* 1: the test reports PERSISTED itself */
    uint32_t max_batch; /* most entries seen in one delivered AppendEntries */
    struct raft_options o;
};

static inline void h_handle(struct hcluster *h, int id);

static inline int h_step(struct hcluster *h, int id, struct raft_event *ev)
{
    ev->now_ms = h->now;
    int rc = raft_step(h->n[id].r, ev, &h->n[id].up);
    h_handle(h, id);
    return rc;
}

static inline void h_handle(struct hcluster *h, int id)
{
    struct hnode *n = &h->n[id];
    struct raft_update *up = &n->up;
    uint64_t snap_saved = 0;
    uint64_t persisted_index = 0, persisted_term = 0;
    if (up->flags & RAFT_UPDATE_CHUNK)
        n->chunks++;
    if (up->flags & RAFT_UPDATE_INSTALL) {
        n->installs++;
        n->snap_index = up->install.index;
        n->applied = up->install.index;
    }
    if ((up->flags & RAFT_UPDATE_ENTRIES) && up->n_persist > 0) {
        persisted_index = up->persist[up->n_persist - 1].index;
        persisted_term = up->persist[up->n_persist - 1].term;
    }
    static uint8_t pattern[1 << 16];
    for (uint32_t i = 0; i < up->n_msgs; i++) {
        struct raft_msg *m = &up->msgs[i];
        if (m->type == RAFT_MSG_SNAPSHOT)
            m->u.snapshot.data = pattern;
        int to = (int)m->to;
        if (to < 1 || to > H_MAX || h->cut[id][to] || h->qn == H_QUEUE)
            continue;
        buf_init(&h->q[h->qn]);
        raft_msg_encode(m, &h->q[h->qn]);
        h->qn++;
    }
    n->applied += up->n_apply;
    if (up->flags & RAFT_UPDATE_TAKE_SNAPSHOT)
        snap_saved = up->take_snapshot;
    if (up->role == RAFT_LEADER)
        n->was_leader = 1;
    if (persisted_index && !h->manual_persist) {
        struct raft_event ev = {.type = RAFT_EV_PERSISTED};
        ev.u.persisted.index = persisted_index;
        ev.u.persisted.term = persisted_term;
        h_step(h, id, &ev);
    }
    if (snap_saved) {
        struct raft_event ev = {.type = RAFT_EV_SNAPSHOT_SAVED};
        ev.u.snapshot_saved.index = snap_saved;
        ev.u.snapshot_saved.size = h->snapshot_size;
        n->snap_index = snap_saved;
        h_step(h, id, &ev);
    }
}

/* Deliver every queued message (and what they cause) until the queue is empty. */
static inline void h_deliver(struct hcluster *h)
{
    while (h->qn > 0) {
        struct buf b = h->q[0];
        memmove(h->q, h->q + 1, (h->qn - 1) * sizeof(h->q[0]));
        h->qn--;
        struct raft_msg m;
        if (raft_msg_decode(b.data, b.len, &m, NULL) == 0) {
            int to = (int)m.to;
            if (to >= 1 && to <= h->count && !h->n[to].down && h->n[to].r != NULL) {
                if (m.type == RAFT_MSG_APPEND && m.u.append.n_entries > h->max_batch)
                    h->max_batch = m.u.append.n_entries;
                struct raft_event ev = {.type = RAFT_EV_RECEIVE, .u.receive = &m};
                h_step(h, to, &ev);
            }
            raft_msg_release(&m);
        }
        buf_free(&b);
    }
}

static inline void h_tick(struct hcluster *h, int id)
{
    struct raft_event ev = {.type = RAFT_EV_TICK};
    h_step(h, id, &ev);
}

/* Advance the clock ms milliseconds, firing timers and delivering messages. */
static inline void h_run(struct hcluster *h, uint64_t ms)
{
    for (uint64_t t = 0; t < ms; t++) {
        h->now++;
        for (int i = 1; i <= h->count; i++)
            if (!h->n[i].down && h->n[i].r != NULL && h->n[i].up.deadline_ms <= h->now)
                h_tick(h, i);
        h_deliver(h);
    }
}

static inline void h_options(struct raft_options *o)
{
    raft_options_default(o);
    o->cluster_id = 7;
    o->election_timeout_ms = 100;
    o->heartbeat_ms = 10;
    o->seed = 42;
}

/* A cluster of count voters with the given priorities (NULL: all 1). */
static inline void h_init(struct hcluster *h, int count, const int *prio,
                          const struct raft_options *o)
{
    memset(h, 0, sizeof(*h));
    h->count = count;
    h->snapshot_size = 100;
    h->now = 1;
    if (o)
        h->o = *o;
    else
        h_options(&h->o);
    struct raft_config c = {0};
    for (int i = 1; i <= count; i++)
        c.nodes[c.n++] =
            (struct raft_node){(uint64_t)i, RAFT_VOTER, (uint8_t)(prio ? prio[i - 1] : 1)};
    for (int i = 1; i <= count; i++) {
        struct raft_options no = h->o;
        no.id = (uint64_t)i;
        raft_init(&h->n[i].r, &no, &c, NULL);
        raft_update_init(&h->n[i].up);
        h_tick(h, i);
    }
}

/* Add a node process (not yet a member) that knows configuration c. */
static inline void h_spawn(struct hcluster *h, int id, const struct raft_config *c)
{
    struct raft_options no = h->o;
    no.id = (uint64_t)id;
    raft_init(&h->n[id].r, &no, c, NULL);
    raft_update_init(&h->n[id].up);
    if (id > h->count)
        h->count = id;
    h_tick(h, id);
}

static inline void h_free(struct hcluster *h)
{
    for (int i = 1; i <= H_MAX; i++) {
        if (h->n[i].r) {
            raft_update_free(&h->n[i].up);
            raft_close(h->n[i].r);
        }
    }
    for (uint32_t i = 0; i < h->qn; i++)
        buf_free(&h->q[i]);
}

/* The leader with the highest term among running nodes (0 if none). */
static inline int h_leader(struct hcluster *h)
{
    int best = 0;
    for (int i = 1; i <= h->count; i++) {
        struct hnode *n = &h->n[i];
        if (!n->down && n->r && raft_role(n->r) == RAFT_LEADER &&
            (best == 0 || raft_term(n->r) > raft_term(h->n[best].r)))
            best = i;
    }
    return best;
}

static inline int h_propose(struct hcluster *h, int id, const char *s)
{
    struct raft_event ev = {.type = RAFT_EV_PROPOSE};
    ev.u.propose.data = s;
    ev.u.propose.len = (uint32_t)strlen(s);
    return h_step(h, id, &ev);
}

static inline void h_isolate(struct hcluster *h, int id, int on)
{
    for (int i = 1; i <= H_MAX; i++)
        h->cut[id][i] = h->cut[i][id] = on && i != id;
}

/* A message built by hand, from `from` to `to` at `term`. */
static inline struct raft_msg h_msg(uint8_t type, uint64_t from, uint64_t to, uint64_t term)
{
    struct raft_msg m;
    memset(&m, 0, sizeof(m));
    m.type = type;
    m.cluster_id = 7;
    m.from = from;
    m.to = to;
    m.term = term;
    return m;
}

/* Step one node with a hand-built message (no harness delivery). */
static inline int h_recv(struct hcluster *h, int id, const struct raft_msg *m)
{
    struct raft_event ev = {.type = RAFT_EV_RECEIVE, .u.receive = m};
    return h_step(h, id, &ev);
}

/* Tell node id that its link to node `about` was lost (RAFT_EV_PEER_DOWN). */
static inline int h_peer_down(struct hcluster *h, int id, int about)
{
    struct raft_event ev = {.type = RAFT_EV_PEER_DOWN};
    ev.u.node_id = (uint64_t)about;
    return h_step(h, id, &ev);
}

/* Count messages of a type in node id's last update. */
static inline int h_count_msgs(struct hcluster *h, int id, uint8_t type)
{
    int k = 0;
    for (uint32_t i = 0; i < h->n[id].up.n_msgs; i++)
        k += h->n[id].up.msgs[i].type == type;
    return k;
}

#endif
