/* map.c - linear probing with tombstones; FNV-1a for strings, a splitmix
 * finaliser for integers. */
#include "util/map.h"

#include "util/alloc.h"
#include <ferry/status.h>
#include <string.h>

static char smap_tombstone_mark;
#define SMAP_TOMBSTONE (&smap_tombstone_mark)

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 1099511628211ull;
    }
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

void smap_init(struct smap *m)
{
    memset(m, 0, sizeof *m);
}

void smap_free(struct smap *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key && m->slots[i].key != SMAP_TOMBSTONE)
            ferry_free(m->slots[i].key);
    }
    ferry_free(m->slots);
    smap_init(m);
}

static struct smap_slot *smap_find(const struct smap *m, const char *key, uint64_t h)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct smap_slot *s = &m->slots[i];
        if (s->key == NULL)
            return NULL;
        if (s->key != SMAP_TOMBSTONE && s->hash == h && strcmp(s->key, key) == 0)
            return s;
    }
}

static int smap_grow(struct smap *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    if (m->count * 2 < m->cap)
        ncap = m->cap; /* mostly tombstones: rehash in place-size */
    struct smap_slot *ns = ferry_calloc(ncap, sizeof *ns);
    if (ns == NULL)
        return FERRY_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        struct smap_slot *s = &m->slots[i];
        if (s->key == NULL || s->key == SMAP_TOMBSTONE)
            continue;
        size_t j = s->hash & (ncap - 1);
        while (ns[j].key)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    ferry_free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    m->used = m->count;
    return 0;
}

void *smap_get(const struct smap *m, const char *key)
{
    struct smap_slot *s = smap_find(m, key, hash_str(key));
    return s ? s->value : NULL;
}

int smap_put(struct smap *m, const char *key, void *value)
{
    uint64_t h = hash_str(key);
    struct smap_slot *s = smap_find(m, key, h);
    if (s) {
        s->value = value;
        return 0;
    }
    if ((m->used + 1) * 10 > m->cap * 7) {
        int rc = smap_grow(m);
        if (rc)
            return rc;
    }
    char *k = ferry_strdup(key);
    if (k == NULL)
        return FERRY_ENOMEM;
    size_t i = h & (m->cap - 1);
    while (m->slots[i].key && m->slots[i].key != SMAP_TOMBSTONE)
        i = (i + 1) & (m->cap - 1);
    if (m->slots[i].key == NULL)
        m->used++;
    m->slots[i].key = k;
    m->slots[i].hash = h;
    m->slots[i].value = value;
    m->count++;
    return 0;
}

void *smap_remove(struct smap *m, const char *key)
{
    struct smap_slot *s = smap_find(m, key, hash_str(key));
    if (s == NULL)
        return NULL;
    void *v = s->value;
    ferry_free(s->key);
    s->key = SMAP_TOMBSTONE;
    s->value = NULL;
    m->count--;
    return v;
}

int smap_next(const struct smap *m, size_t *pos, const char **key, void **value)
{
    for (; *pos < m->cap; (*pos)++) {
        struct smap_slot *s = &m->slots[*pos];
        if (s->key && s->key != SMAP_TOMBSTONE) {
            if (key)
                *key = s->key;
            if (value)
                *value = s->value;
            (*pos)++;
            return 1;
        }
    }
    return 0;
}

void umap_init(struct umap *m)
{
    memset(m, 0, sizeof *m);
}

void umap_free(struct umap *m)
{
    ferry_free(m->slots);
    umap_init(m);
}

static struct umap_slot *umap_find(const struct umap *m, uint64_t key)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = hash_u64(key) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        struct umap_slot *s = &m->slots[i];
        if (s->state == 0)
            return NULL;
        if (s->state == 1 && s->key == key)
            return s;
    }
}

static int umap_grow(struct umap *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    if (m->count * 2 < m->cap)
        ncap = m->cap;
    struct umap_slot *ns = ferry_calloc(ncap, sizeof *ns);
    if (ns == NULL)
        return FERRY_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        struct umap_slot *s = &m->slots[i];
        if (s->state != 1)
            continue;
        size_t j = hash_u64(s->key) & (ncap - 1);
        while (ns[j].state)
            j = (j + 1) & (ncap - 1);
        ns[j] = *s;
    }
    ferry_free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    m->used = m->count;
    return 0;
}

void *umap_get(const struct umap *m, uint64_t key)
{
    struct umap_slot *s = umap_find(m, key);
    return s ? s->value : NULL;
}

int umap_put(struct umap *m, uint64_t key, void *value)
{
    struct umap_slot *s = umap_find(m, key);
    if (s) {
        s->value = value;
        return 0;
    }
    if ((m->used + 1) * 10 > m->cap * 7) {
        int rc = umap_grow(m);
        if (rc)
            return rc;
    }
    size_t i = hash_u64(key) & (m->cap - 1);
    while (m->slots[i].state == 1)
        i = (i + 1) & (m->cap - 1);
    if (m->slots[i].state == 0)
        m->used++;
    m->slots[i].state = 1;
    m->slots[i].key = key;
    m->slots[i].value = value;
    m->count++;
    return 0;
}

void *umap_remove(struct umap *m, uint64_t key)
{
    struct umap_slot *s = umap_find(m, key);
    if (s == NULL)
        return NULL;
    void *v = s->value;
    s->state = 2;
    s->value = NULL;
    m->count--;
    return v;
}

int umap_next(const struct umap *m, size_t *pos, uint64_t *key, void **value)
{
    for (; *pos < m->cap; (*pos)++) {
        struct umap_slot *s = &m->slots[*pos];
        if (s->state == 1) {
            if (key)
                *key = s->key;
            if (value)
                *value = s->value;
            (*pos)++;
            return 1;
        }
    }
    return 0;
}
