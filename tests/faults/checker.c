/* checker.c - see checker.h. One pass over the history builds a state per
 * payload key (umap key -> index into a state array), one pass over the final
 * state counts what was read back, and a last pass over the keys decides. */
#include "checker.h"

#include "util/map.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

fault_key fault_parse(const void *payload, size_t len)
{
    const char *p = payload;
    if (len < 4 || len > 31 || p[0] != 'P')
        return FAULT_KEY_NONE;
    uint64_t producer = 0, seq = 0;
    size_t i = 1;
    for (; i < len && p[i] >= '0' && p[i] <= '9' && producer < 65536; i++)
        producer = producer * 10 + (uint64_t)(p[i] - '0');
    if (i == 1 || i >= len || p[i] != ':' || producer == 0 || producer > 65535)
        return FAULT_KEY_NONE;
    size_t start = ++i;
    for (; i < len && p[i] >= '0' && p[i] <= '9' && seq < (1ull << 40); i++)
        seq = seq * 10 + (uint64_t)(p[i] - '0');
    if (i == start || i != len || seq == 0 || seq >= (1ull << 40))
        return FAULT_KEY_NONE;
    return FAULT_KEY(producer, seq);
}

size_t fault_format(fault_key key, char *out, size_t cap)
{
    int n = snprintf(out, cap, "P%u:%llu", FAULT_KEY_PRODUCER(key),
                     (unsigned long long)FAULT_KEY_SEQ(key));
    return n < 0 ? 0 : (size_t)n;
}

struct state {
    fault_key key;
    uint8_t ok, failed, unknown; /* outcomes of its publish / push attempts */
    uint32_t found;              /* times read back (stored, or acked + still queued) */
    uint8_t ack_unknown;         /* queues: an acknowledgement of unknown outcome */
};

struct table {
    struct umap index; /* key -> position + 1 */
    struct state *s;
    size_t n, cap;
};

static void table_free(struct table *t)
{
    umap_free(&t->index);
    free(t->s);
}

static struct state *lookup(struct table *t, fault_key key)
{
    uintptr_t pos = (uintptr_t)umap_get(&t->index, key);
    return pos ? &t->s[pos - 1] : NULL;
}

static struct state *get_or_add(struct table *t, fault_key key)
{
    struct state *s = lookup(t, key);
    if (s != NULL)
        return s;
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        struct state *grown = realloc(t->s, cap * sizeof *grown);
        if (grown == NULL)
            return NULL;
        t->s = grown;
        t->cap = cap;
    }
    if (umap_put(&t->index, key, (void *)(uintptr_t)(t->n + 1)) != 0)
        return NULL;
    s = &t->s[t->n++];
    memset(s, 0, sizeof *s);
    s->key = key;
    return s;
}

static void problem(struct fault_verdict *v, const char *fmt, ...)
{
    if (v->first_problem[0] != '\0')
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->first_problem, sizeof v->first_problem, fmt, ap);
    va_end(ap);
}

/* Record the attempts of `op` in the history. -1 when out of memory. */
static int load_attempts(struct table *t, const struct fault_rec *h, size_t n, uint8_t op,
                         struct fault_verdict *v)
{
    for (size_t i = 0; i < n; i++) {
        if (h[i].op != op || h[i].key == FAULT_KEY_NONE)
            continue;
        struct state *s = get_or_add(t, h[i].key);
        if (s == NULL)
            return -1;
        v->attempted++;
        if (h[i].outcome == FOUT_OK)
            s->ok = 1;
        else if (h[i].outcome == FOUT_FAILED)
            s->failed = 1;
        else
            s->unknown = 1;
    }
    return 0;
}

/* Count one payload found in the final state (stored or acknowledged). */
static void found(struct table *t, fault_key key, const char *where, struct fault_verdict *v)
{
    char text[32];
    struct state *s = key == FAULT_KEY_NONE ? NULL : lookup(t, key);
    if (s == NULL) {
        v->unexpected++;
        if (key == FAULT_KEY_NONE)
            problem(v, "unexpected: a payload no producer writes %s", where);
        else {
            fault_format(key, text, sizeof text);
            problem(v, "unexpected: %s %s but never attempted", text, where);
        }
        return;
    }
    s->found++;
    v->read_back++;
    if (s->found == 2) {
        v->duplicated++;
        fault_format(key, text, sizeof text);
        problem(v, "duplicated: %s %s a second time", text, where);
    }
}

static void decide(struct table *t, struct fault_verdict *v)
{
    char text[32];
    for (size_t i = 0; i < t->n; i++) {
        const struct state *s = &t->s[i];
        v->acknowledged += s->ok;
        if (s->ok && s->found == 0 && s->ack_unknown) {
            v->ack_unknown_absent++;
        } else if (s->ok && s->found == 0) {
            v->lost++;
            fault_format(s->key, text, sizeof text);
            problem(v, "lost: %s was acknowledged but is not in the final state", text);
        } else if (!s->ok && s->failed && !s->unknown && s->found > 0) {
            v->failed_present++;
            fault_format(s->key, text, sizeof text);
            problem(v, "failed but present: %s was reported failed yet is stored", text);
        } else if (!s->ok && s->unknown) {
            if (s->found > 0)
                v->unknown_present++;
            else
                v->unknown_absent++;
        }
    }
}

/* A fresh verdict and a table of the attempts of `op`; -1 (nothing to free)
 * when out of memory. */
static int table_load(struct table *t, const struct fault_rec *h, size_t n, uint8_t op,
                      struct fault_verdict *v)
{
    memset(v, 0, sizeof *v);
    memset(t, 0, sizeof *t);
    umap_init(&t->index);
    if (load_attempts(t, h, n, op, v) != 0) {
        table_free(t);
        return -1;
    }
    return 0;
}

int fault_check_channel(const struct fault_rec *h, size_t n, const fault_key *stored,
                        size_t n_stored, struct fault_verdict *v)
{
    struct table t;
    if (table_load(&t, h, n, FOP_PUBLISH, v) != 0)
        return -1;
    /* Per producer, the last sequence seen in event order. */
    struct umap last;
    umap_init(&last);
    char text[32];
    for (size_t i = 0; i < n_stored; i++) {
        found(&t, stored[i], "in the channel", v);
        if (stored[i] == FAULT_KEY_NONE)
            continue;
        uint32_t producer = FAULT_KEY_PRODUCER(stored[i]);
        uint64_t seq = FAULT_KEY_SEQ(stored[i]);
        uint64_t prev = (uint64_t)(uintptr_t)umap_get(&last, producer);
        if (seq < prev) {
            v->reordered++;
            fault_format(stored[i], text, sizeof text);
            problem(v, "reordered: %s stored after P%u:%llu", text, producer,
                    (unsigned long long)prev);
        } else if (umap_put(&last, producer, (void *)(uintptr_t)seq) != 0) {
            umap_free(&last);
            table_free(&t);
            return -1;
        }
    }
    umap_free(&last);
    decide(&t, v);
    table_free(&t);
    return 0;
}

int fault_check_queue(const struct fault_rec *h, size_t n, const fault_key *remaining,
                      size_t n_remaining, struct fault_verdict *v)
{
    struct table t;
    if (table_load(&t, h, n, FOP_PUSH, v) != 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (h[i].op != FOP_ACK)
            continue;
        if (h[i].outcome == FOUT_OK) {
            found(&t, h[i].key, "acknowledged by a consumer", v);
        } else if (h[i].outcome == FOUT_UNKNOWN) {
            struct state *s = lookup(&t, h[i].key);
            if (s != NULL)
                s->ack_unknown = 1;
        }
    }
    for (size_t i = 0; i < n_remaining; i++)
        found(&t, remaining[i], "left in the queue", v);
    decide(&t, v);
    table_free(&t);
    return 0;
}

int fault_verdict_ok(const struct fault_verdict *v)
{
    return v->lost == 0 && v->unexpected == 0 && v->duplicated == 0 && v->reordered == 0 &&
           v->failed_present == 0;
}

void fault_verdict_add(struct fault_verdict *a, const struct fault_verdict *b)
{
    a->attempted += b->attempted;
    a->acknowledged += b->acknowledged;
    a->read_back += b->read_back;
    a->lost += b->lost;
    a->unexpected += b->unexpected;
    a->duplicated += b->duplicated;
    a->reordered += b->reordered;
    a->failed_present += b->failed_present;
    a->unknown_present += b->unknown_present;
    a->unknown_absent += b->unknown_absent;
    a->ack_unknown_absent += b->ack_unknown_absent;
    if (a->first_problem[0] == '\0')
        memcpy(a->first_problem, b->first_problem, sizeof a->first_problem);
}
