/* check.c - the simulator's safety checkers, run on every update.
 *
 * Election safety: the first leader seen for a term owns it; a second one is a
 * violation. Log matching: every (index, term) ever written anywhere must
 * carry the same payload and follow the same previous term (by induction this
 * makes logs that agree on an entry agree on everything before it), plus a
 * full pairwise comparison of the in-memory logs every few hundred steps.
 * Leader completeness: a new leader's log holds every entry any leader
 * reported committed. State-machine safety: the truth table maps each index to
 * the entry committed there; an apply of anything else, an apply out of order,
 * a re-apply that differs, or a state digest that differs is a violation.
 * Commit monotonicity: a node's commit index never goes back while it runs.
 */
#include <stdio.h>
#include <string.h>

#include "sim.h"
#include "util/alloc.h"

struct seen_entry {
    uint64_t hash;
    uint64_t prev_term;
};

uint64_t entry_hash(uint8_t type, const uint8_t *data, uint32_t len)
{
    uint64_t h = 0xcbf29ce484222325ull ^ type;
    for (uint32_t i = 0; i < len; i++) {
        h ^= data[i];
        h *= 0x100000001b3ull;
    }
    h ^= len;
    return h * 0x9e3779b97f4a7c15ull;
}

uint64_t digest_mix(uint64_t d, uint64_t h)
{
    uint64_t z = d + 0x9e3779b97f4a7c15ull + h;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void check_init(struct sim *s)
{
    umap_init(&s->leader_of_term);
    umap_init(&s->entry_at);
    s->n_truth = 0;
    s->tterm = s->thash = s->tdig = NULL;
    s->max_committed = 0;
}

void check_free(struct sim *s)
{
    size_t pos = 0;
    uint64_t k;
    void *v;
    while (umap_next(&s->entry_at, &pos, &k, &v))
        ferry_free(v);
    umap_free(&s->entry_at);
    umap_free(&s->leader_of_term);
    ferry_free(s->tterm);
    ferry_free(s->thash);
    ferry_free(s->tdig);
}

static void truth_grow(struct sim *s, uint64_t index)
{
    if (index < s->n_truth)
        return;
    uint64_t n = s->n_truth ? s->n_truth : 1024;
    while (n <= index)
        n *= 2;
    s->tterm = ferry_realloc(s->tterm, n * sizeof(uint64_t));
    s->thash = ferry_realloc(s->thash, n * sizeof(uint64_t));
    s->tdig = ferry_realloc(s->tdig, n * sizeof(uint64_t));
    memset(s->tterm + s->n_truth, 0, (n - s->n_truth) * sizeof(uint64_t));
    memset(s->thash + s->n_truth, 0, (n - s->n_truth) * sizeof(uint64_t));
    memset(s->tdig + s->n_truth, 0, (n - s->n_truth) * sizeof(uint64_t));
    s->n_truth = n;
}

/* Record that (index, term, hash) is committed; a different earlier record is a violation. */
static void truth_set(struct sim *s, uint64_t index, uint64_t term, uint64_t hash, const char *who)
{
    truth_grow(s, index);
    if (s->tterm[index] == 0) {
        s->tterm[index] = term;
        s->thash[index] = hash;
        if (index > s->max_committed)
            s->max_committed = index;
        return;
    }
    if (s->tterm[index] != term || s->thash[index] != hash)
        sim_fail(s,
                 "state machine safety: %s has index %llu as term %llu but term %llu was "
                 "committed there",
                 who, (unsigned long long)index, (unsigned long long)term,
                 (unsigned long long)s->tterm[index]);
}

uint64_t truth_digest(struct sim *s, uint64_t index, bool *known)
{
    if (index == 0) {
        *known = true;
        return 0;
    }
    *known = index < s->n_truth && s->tdig[index] != 0;
    return *known ? s->tdig[index] : 0;
}

void check_persist(struct sim *s, struct snode *n, const struct raft_update *up)
{
    uint64_t prev_term = raft_term_at(n->r, up->persist_from - 1);
    for (uint32_t i = 0; i < up->n_persist; i++) {
        const struct raft_entry *e = &up->persist[i];
        if (e->index != up->persist_from + i)
            sim_fail(s, "log: node %llu persists index %llu at position %u from %llu",
                     (unsigned long long)n->id, (unsigned long long)e->index, i,
                     (unsigned long long)up->persist_from);
        if (e->term >= (1u << 20) || e->index >= (1ull << 43))
            sim_fail(s, "simulator limit: term or index too large");
        uint64_t key = e->index << 20 | e->term;
        uint64_t h = entry_hash(e->type, e->data, e->len);
        struct seen_entry *se = umap_get(&s->entry_at, key);
        if (se == NULL) {
            se = ferry_malloc(sizeof(*se));
            se->hash = h;
            se->prev_term = prev_term;
            umap_put(&s->entry_at, key, se);
        } else if (se->hash != h || se->prev_term != prev_term) {
            sim_fail(s,
                     "log matching: node %llu has entry (index %llu, term %llu) with a different "
                     "%s than another node",
                     (unsigned long long)n->id, (unsigned long long)e->index,
                     (unsigned long long)e->term, se->hash != h ? "payload" : "previous term");
        }
        if (e->term < prev_term)
            sim_fail(s, "log: node %llu term goes back at index %llu", (unsigned long long)n->id,
                     (unsigned long long)e->index);
        prev_term = e->term;
    }
}

void check_apply(struct sim *s, struct snode *n, const struct raft_entry *e)
{
    uint64_t h = entry_hash(e->type, e->data, e->len);
    char who[32];
    snprintf(who, sizeof(who), "node %llu", (unsigned long long)n->id);
    truth_set(s, e->index, e->term, h, who);
    if (e->index <= n->sm_last)
        return; /* replay after a restart: already applied, and it matched the truth */
    if (e->index != n->sm_last + 1)
        sim_fail(s, "state machine: node %llu applies index %llu after %llu",
                 (unsigned long long)n->id, (unsigned long long)e->index,
                 (unsigned long long)n->sm_last);
    n->sm_digest = digest_mix(n->sm_digest, h);
    n->sm_last = e->index;
    bool known;
    uint64_t d = truth_digest(s, e->index, &known);
    if (!known) {
        s->tdig[e->index] = n->sm_digest;
    } else if (d != n->sm_digest) {
        sim_fail(s, "state machine safety: node %llu state after index %llu differs",
                 (unsigned long long)n->id, (unsigned long long)e->index);
    }
}

void check_role(struct sim *s, struct snode *n, const struct raft_update *up)
{
    if (up->role != RAFT_LEADER || !(up->flags & RAFT_UPDATE_ROLE))
        return;
    void *who = umap_get(&s->leader_of_term, up->term);
    if (who != NULL && (uint64_t)(uintptr_t)who != n->id)
        sim_fail(s, "election safety: nodes %llu and %llu both lead term %llu",
                 (unsigned long long)(uintptr_t)who, (unsigned long long)n->id,
                 (unsigned long long)up->term);
    umap_put(&s->leader_of_term, up->term, (void *)(uintptr_t)n->id);
    if (s->stats)
        s->stats->elections++;
    /* Leader completeness: every committed entry is in the new leader's log. */
    uint64_t first = raft_first_index(n->r);
    for (uint64_t i = first + 1; i <= s->max_committed; i++) {
        if (i >= s->n_truth || s->tterm[i] == 0)
            continue;
        if (raft_term_at(n->r, i) != s->tterm[i])
            sim_fail(s,
                     "leader completeness: new leader %llu of term %llu lacks committed index "
                     "%llu (term %llu), it has term %llu",
                     (unsigned long long)n->id, (unsigned long long)up->term, (unsigned long long)i,
                     (unsigned long long)s->tterm[i], (unsigned long long)raft_term_at(n->r, i));
    }
    if (raft_snapshot(n->r)->index > s->max_committed && raft_snapshot(n->r)->index > 0)
        sim_fail(s, "leader completeness: leader %llu has a snapshot beyond any commit",
                 (unsigned long long)n->id);
}

void check_commit(struct sim *s, struct snode *n, const struct raft_update *up)
{
    if (up->commit < n->seen_commit)
        sim_fail(s, "commit index of node %llu went back from %llu to %llu",
                 (unsigned long long)n->id, (unsigned long long)n->seen_commit,
                 (unsigned long long)up->commit);
    n->seen_commit = up->commit;
    if (up->role != RAFT_LEADER)
        return;
    /* What a leader reports committed is acknowledged to clients: record it. */
    char who[40];
    snprintf(who, sizeof(who), "leader %llu", (unsigned long long)n->id);
    uint64_t from =
        n->recorded_commit > raft_first_index(n->r) ? n->recorded_commit : raft_first_index(n->r);
    for (uint64_t i = from + 1; i <= up->commit; i++) {
        const struct raft_entry *e = raft_entry_at(n->r, i);
        if (e != NULL)
            truth_set(s, i, e->term, entry_hash(e->type, e->data, e->len), who);
    }
    if (up->commit > n->recorded_commit)
        n->recorded_commit = up->commit;
}

/* Full log matching between every pair of running nodes. */
void check_logs(struct sim *s)
{
    for (int a = 0; a < s->n_nodes; a++) {
        struct snode *x = &s->nodes[a];
        if (!x->alive)
            continue;
        for (int b = a + 1; b < s->n_nodes; b++) {
            struct snode *y = &s->nodes[b];
            if (!y->alive)
                continue;
            uint64_t lo = raft_first_index(x->r) > raft_first_index(y->r) ? raft_first_index(x->r)
                                                                          : raft_first_index(y->r);
            uint64_t hi = raft_last_index(x->r) < raft_last_index(y->r) ? raft_last_index(x->r)
                                                                        : raft_last_index(y->r);
            bool agree = false;
            for (uint64_t i = hi; i > lo; i--) {
                const struct raft_entry *ex = raft_entry_at(x->r, i);
                const struct raft_entry *ey = raft_entry_at(y->r, i);
                if (!agree && ex->term == ey->term)
                    agree = true;
                if (agree && (ex->term != ey->term || entry_hash(ex->type, ex->data, ex->len) !=
                                                          entry_hash(ey->type, ey->data, ey->len)))
                    sim_fail(s,
                             "log matching: nodes %llu and %llu agree on a later entry but differ "
                             "at index %llu",
                             (unsigned long long)x->id, (unsigned long long)y->id,
                             (unsigned long long)i);
            }
        }
    }
}
