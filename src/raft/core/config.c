/* config.c - membership configurations: lookup, quorum, encoding, and which
 * configuration is in force.
 *
 * A configuration takes effect on a node as soon as its CONFIG entry is in
 * the node's log, committed or not (dissertation §4.1); truncating that entry
 * reverts to the previous one. The snapshot carries the configuration in
 * force at its index, so the latest configuration is the last CONFIG entry
 * after the snapshot, or the snapshot's.
 */
#include <string.h>

#include "raft/core/core.h"
#include "util/buf.h"

int cfg_pos(const struct raft_config *c, uint64_t id)
{
    for (uint32_t i = 0; i < c->n; i++)
        if (c->nodes[i].id == id)
            return (int)i;
    return -1;
}

const struct raft_node *raft_config_find(const struct raft_config *c, uint64_t id)
{
    int p = cfg_pos(c, id);
    return p < 0 ? NULL : &c->nodes[p];
}

bool cfg_is_voter(const struct raft_config *c, uint64_t id)
{
    const struct raft_node *n = raft_config_find(c, id);
    return n != NULL && n->role == RAFT_VOTER;
}

uint32_t raft_config_voters(const struct raft_config *c)
{
    uint32_t v = 0;
    for (uint32_t i = 0; i < c->n; i++)
        v += c->nodes[i].role == RAFT_VOTER;
    return v;
}

uint32_t cfg_quorum(const struct raft_config *c)
{
    return raft_config_voters(c) / 2 + 1;
}

uint32_t cfg_max_priority(const struct raft_config *c)
{
    uint32_t m = 0;
    for (uint32_t i = 0; i < c->n; i++)
        if (c->nodes[i].role == RAFT_VOTER && c->nodes[i].priority > m)
            m = c->nodes[i].priority;
    return m;
}

int cfg_priority(const struct raft_config *c, uint64_t id)
{
    const struct raft_node *n = raft_config_find(c, id);
    return n == NULL ? 0 : n->priority;
}

int raft_config_encode(const struct raft_config *c, uint8_t *out, size_t cap, size_t *len)
{
    size_t need = 4 + (size_t)c->n * 10;
    if (c->n > RAFT_MAX_NODES || cap < need)
        return FERRY_EINVAL;
    put_u32(out, c->n);
    for (uint32_t i = 0; i < c->n; i++) {
        uint8_t *p = out + 4 + i * 10;
        put_u64(p, c->nodes[i].id);
        p[8] = c->nodes[i].role;
        p[9] = c->nodes[i].priority;
    }
    *len = need;
    return 0;
}

int raft_config_decode(const uint8_t *p, size_t len, struct raft_config *c)
{
    if (len < 4)
        return FERRY_EPROTO;
    uint32_t n = get_u32(p);
    if (n > RAFT_MAX_NODES || len != 4 + (size_t)n * 10)
        return FERRY_EPROTO;
    memset(c, 0, sizeof(*c));
    c->n = n;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *q = p + 4 + i * 10;
        c->nodes[i].id = get_u64(q);
        c->nodes[i].role = q[8];
        c->nodes[i].priority = q[9];
        if (c->nodes[i].id == 0 || (q[8] != RAFT_VOTER && q[8] != RAFT_LEARNER))
            return FERRY_EPROTO;
        for (uint32_t j = 0; j < i; j++)
            if (c->nodes[j].id == c->nodes[i].id)
                return FERRY_EPROTO;
    }
    return 0;
}

/* The configuration in force at `index` (index >= the snapshot's). */
void config_at(const struct raft *r, uint64_t index, struct raft_config *out)
{
    *out = r->snap.config;
    uint64_t lo = r->snap.index + 1;
    if (lo <= r->log.offset)
        lo = r->log.offset + 1;
    for (uint64_t i = index; i >= lo; i--) {
        const struct raft_entry *e = rlog_get(&r->log, i);
        if (e != NULL && e->type == RAFT_ENTRY_CONFIG &&
            raft_config_decode(e->data, e->len, out) == 0)
            return;
    }
    *out = r->snap.config;
}

/* Recompute the latest configuration after the log changed under it. */
void config_refresh(struct raft *r)
{
    uint64_t last = rlog_last(&r->log);
    uint64_t lo = r->snap.index + 1;
    if (lo <= r->log.offset)
        lo = r->log.offset + 1;
    r->config = r->snap.config;
    r->config_index = 0;
    for (uint64_t i = last; i >= lo && i > 0; i--) {
        const struct raft_entry *e = rlog_get(&r->log, i);
        if (e != NULL && e->type == RAFT_ENTRY_CONFIG &&
            raft_config_decode(e->data, e->len, &r->config) == 0) {
            r->config_index = i;
            break;
        }
    }
    progress_rebuild(r);
}

/* Keep prs[] parallel to config.nodes, preserving each member's progress. */
void progress_rebuild(struct raft *r)
{
    struct progress old[RAFT_MAX_NODES];
    memcpy(old, r->prs, sizeof(old));
    for (uint32_t i = 0; i < r->config.n; i++) {
        uint64_t id = r->config.nodes[i].id;
        struct progress *pr = &r->prs[i];
        bool found = false;
        for (uint32_t j = 0; j < RAFT_MAX_NODES; j++) {
            if (old[j].id == id) {
                *pr = old[j];
                found = true;
                break;
            }
        }
        if (!found) {
            memset(pr, 0, sizeof(*pr));
            pr->id = id;
            pr->next = rlog_last(&r->log) + 1;
            pr->active = 1;
            pr->progress_ms = r->now;
        }
    }
    for (uint32_t i = r->config.n; i < RAFT_MAX_NODES; i++)
        memset(&r->prs[i], 0, sizeof(r->prs[i]));
}
