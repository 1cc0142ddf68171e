/* broker.c - opening and closing the broker.
 *
 * broker_open copies the configuration (filling zero limits with defaults),
 * opens the store and builds the in-memory index from it; every queue item
 * not yet acknowledged becomes ready, since leases live only in memory.
 * broker_close frees clients without calling their ops (the caller is
 * tearing everything down), then the index and the store. broker_reload
 * (and a restore, through broker_rebuild) frees the index and builds it the
 * way open does, so nothing of the old memory state survives.
 */
#include "broker/broker_int.h"

#include "util/alloc.h"

#include <assert.h>
#include <string.h>

static void init_lists(struct broker *b)
{
    smap_init(&b->res);
    umap_init(&b->handles);
    list_init(&b->dirty);
    list_init(&b->doomed);
    list_init(&b->doomed_durables);
    list_init(&b->clients);
    list_init(&b->pending_subs);
    list_init(&b->pending_queues);
    list_init(&b->zombie_subs);
    list_init(&b->zombie_consumers);
    umap_init(&b->producers);
    list_init(&b->dirty_producers);
}

static void fill_defaults(struct broker_config *cfg)
{
    if (cfg->default_window == 0)
        cfg->default_window = BROKER_DEFAULT_WINDOW;
    if (cfg->default_prefetch == 0)
        cfg->default_prefetch = BROKER_DEFAULT_PREFETCH;
    if (cfg->pump_batch == 0)
        cfg->pump_batch = BROKER_DEFAULT_PUMP_BATCH;
}

int broker_open(struct broker **out, const struct broker_config *cfg, struct ferry_err *err)
{
    assert(out != NULL && cfg != NULL);
    *out = NULL;
    if (cfg->db_path == NULL || cfg->db_path[0] == '\0')
        return ferry_err_set(err, FERRY_EINVAL, "broker: db_path is not set");
    struct broker *b = ferry_calloc(1, sizeof *b);
    if (b == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory opening the broker");
    init_lists(b);
    atomic_init(&b->snap_idle, NULL);
    atomic_init(&b->nsnaps, 0);
    b->cfg = *cfg;
    fill_defaults(&b->cfg);
    b->db_path = ferry_strdup(cfg->db_path);
    b->cfg.db_path = b->db_path;
    int rc = b->db_path ? 0 : ferry_err_set(err, FERRY_ENOMEM, "out of memory opening the broker");
    if (rc == 0)
        rc = store_open(&b->store, b->db_path, cfg->synchronous_full, err);
    if (rc == 0)
        rc = broker_index_load(b, err);
    if (rc != 0) {
        broker_close(b);
        return rc;
    }
    *out = b;
    return 0;
}

static void free_clients(struct broker *b)
{
    while (!list_empty(&b->clients)) {
        struct broker_client *c = list_entry(b->clients.next, struct broker_client, node);
        while (!list_empty(&c->subs))
            broker_sub_free(b, list_entry(c->subs.next, struct sub, client_node));
        while (!list_empty(&c->consumers)) {
            struct consumer *con = list_entry(c->consumers.next, struct consumer, client_node);
            con->unacked = 0; /* leases are memory only and go with the index */
            broker_consumer_free(b, con);
        }
        list_remove(&c->node);
        ferry_free(c);
    }
}

static void free_index(struct broker *b)
{
    size_t pos = 0;
    void *v;
    while (smap_next(&b->res, &pos, NULL, &v))
        broker_res_free(b, v);
    smap_free(&b->res);
    while (!list_empty(&b->doomed_durables)) {
        struct durable *d = list_entry(b->doomed_durables.next, struct durable, doomed_node);
        broker_durable_free(d);
    }
    while (!list_empty(&b->doomed))
        broker_res_free(b, list_entry(b->doomed.next, struct res, doomed_node));
}

void broker_close(struct broker *b)
{
    if (b == NULL)
        return;
    if (b->in_txn) {
        store_rollback(b->store);
        b->in_txn = 0;
    }
    assert(atomic_load(&b->nsnaps) == 0 && "broker_snapshot_end every snapshot first");
    free_clients(b);
    free_index(b);
    broker_producers_free(b);
    umap_free(&b->producers);
    ferry_free(b->gone);
    umap_free(&b->handles);
    ferry_free(b->fx);
    ferry_free(b->undo);
    store_close(atomic_exchange(&b->snap_idle, NULL));
    store_close(b->store);
    ferry_free(b->db_path);
    ferry_free(b);
}

void broker_last_applied(const struct broker *b, uint64_t *index, uint64_t *term)
{
    *index = b->stored_index;
    *term = b->stored_term;
}

int broker_rebuild(struct broker *b, struct ferry_err *err)
{
    assert(!b->in_txn);
    assert(list_empty(&b->clients));
    assert(b->nfx == 0 && b->nundo == 0);
    free_index(b);
    smap_init(&b->res);
    b->broken = 0;
    ferry_err_clear(&b->broken_err);
    return broker_index_load(b, err);
}

int broker_reload(struct broker *b, struct ferry_err *err)
{
    if (b->in_txn)
        return ferry_err_set(err, FERRY_ESTATE, "broker_reload inside a transaction");
    if (b->nclients > 0)
        return ferry_err_set(
            err, FERRY_EBUSY,
            "cannot reload the broker while %llu broker clients are still open: close "
            "them first",
            (unsigned long long)b->nclients);
    return broker_rebuild(b, err);
}
