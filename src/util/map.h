/* util/map.h - open-addressing hash maps: string keys and uint64 keys.
 *
 * Values are `void *` the caller owns; the maps never free values. smap
 * copies its keys (freed on removal and in smap_free). Lookups are O(1)
 * expected; the table doubles at 70% load (tombstones included) and may
 * fail to grow with FERRY_ENOMEM, leaving the map unchanged.
 * Iteration order is unspecified; do not insert while iterating.
 */
#ifndef FERRY_UTIL_MAP_H
#define FERRY_UTIL_MAP_H

#include <stddef.h>
#include <stdint.h>

struct smap_slot {
    char *key;      /* NULL = empty; SMAP_TOMBSTONE = removed */
    uint64_t hash;
    void *value;
};

struct smap {
    struct smap_slot *slots;
    size_t cap;     /* power of two, or 0 */
    size_t count;   /* live entries */
    size_t used;    /* live + tombstones */
};

void smap_init(struct smap *m);
void smap_free(struct smap *m);
void *smap_get(const struct smap *m, const char *key);
/* Insert or replace. */
int smap_put(struct smap *m, const char *key, void *value);
/* Remove; returns the old value or NULL. */
void *smap_remove(struct smap *m, const char *key);
/* Iterate: start with *pos = 0; returns 0 when done. */
int smap_next(const struct smap *m, size_t *pos, const char **key, void **value);

struct umap_slot {
    uint64_t key;
    uint8_t state;  /* 0 empty, 1 live, 2 tombstone */
    void *value;
};

struct umap {
    struct umap_slot *slots;
    size_t cap;
    size_t count;
    size_t used;
};

void umap_init(struct umap *m);
void umap_free(struct umap *m);
void *umap_get(const struct umap *m, uint64_t key);
int umap_put(struct umap *m, uint64_t key, void *value);
void *umap_remove(struct umap *m, uint64_t key);
int umap_next(const struct umap *m, size_t *pos, uint64_t *key, void **value);

#endif
