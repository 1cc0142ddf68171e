/* cluster.c - node-local commit: coalesce a turn's commands into one entry,
 * apply it in one fsynced transaction, then report results in order.
 *
 * Index and term of the entries continue from the database's last_applied,
 * so the numbering survives restarts and the replicated log can take over
 * the same sequence.
 */
#include "cluster/cluster.h"

#include "util/alloc.h"
#include "util/log.h"
#include <assert.h>
#include <stdio.h>
#include <string.h>

int cluster_init(struct cluster *c, struct broker *b, uint64_t node_id, struct ferry_err *err)
{
    memset(c, 0, sizeof *c);
    c->broker = b;
    c->node_id = node_id;
    buf_init(&c->entry);
    broker_last_applied(b, &c->last_index, &c->term);
    if (c->term == 0)
        c->term = 1;
    (void)err;
    return 0;
}

void cluster_destroy(struct cluster *c)
{
    buf_free(&c->entry);
    ferry_free(c->pend);
    ferry_free(c->results);
    c->pend = NULL;
    c->results = NULL;
}

int cluster_writable(const struct cluster *c, struct ferry_err *err)
{
    if (!c->failed)
        return 0;
    return ferry_err_set(err, FERRY_EUNAVAILABLE, "node is not accepting writes: %s",
                         c->failure.msg);
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
    struct broker_result *r = ferry_realloc(c->results, cap * sizeof *r);
    if (r == NULL)
        return FERRY_ENOMEM;
    c->results = r;
    c->cap_pend = cap;
    return 0;
}

int cluster_propose(struct cluster *c, const struct broker_cmd *cmd, cluster_done_cb cb,
                    void *ctx, struct ferry_err *err)
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

static void run_callbacks(const struct cluster_pending *pend, const struct broker_result *results,
                          size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (pend[i].cb)
            pend[i].cb(pend[i].ctx, &results[i]);
    }
}

static void enter_failed(struct cluster *c, const struct ferry_err *why)
{
    if (!c->failed)
        log_error("cluster", "storage failure, refusing writes until storage works again: %s",
                  why->msg);
    c->failed = 1;
    c->failure = *why;
}

/* Apply `entry` as the next index in one transaction; results[0..n) filled. */
static int commit_entry(struct cluster *c, const struct buf *entry, struct broker_result *results,
                        size_t n, struct ferry_err *err)
{
    uint64_t index = c->last_index + 1;
    memset(results, 0, n * sizeof *results);
    int rc = broker_begin(c->broker, err);
    if (rc == 0)
        rc = broker_apply(c->broker, index, c->term, entry->data, entry->len, results, n, err);
    if (rc == 0)
        rc = broker_commit(c->broker, err);
    else
        broker_rollback(c->broker);
    if (rc == 0)
        c->last_index = index;
    return rc;
}

int cluster_flush(struct cluster *c)
{
    if (c->npend == 0)
        return 0;
    /* Detach the batch: callbacks may propose commands for the next entry. */
    size_t n = c->npend;
    struct cluster_pending *pend = c->pend;
    struct broker_result *results = c->results;
    size_t cap = c->cap_pend;
    struct buf entry = c->entry;
    c->pend = NULL;
    c->results = NULL;
    c->cap_pend = 0;
    c->npend = 0;
    buf_init(&c->entry);

    struct ferry_err err;
    ferry_err_clear(&err);
    int rc = commit_entry(c, &entry, results, n, &err);
    if (rc != 0) {
        if (err.code == 0)
            ferry_err_set(&err, rc, "%s", ferry_strerror(rc));
        enter_failed(c, &err);
        int code = rc == FERRY_ENOSPC ? FERRY_ENOSPC : FERRY_EIO;
        for (size_t i = 0; i < n; i++) {
            results[i].status = code;
            results[i].id = 0;
            size_t m = strnlen(err.msg, sizeof results[i].msg - 1);
            memcpy(results[i].msg, err.msg, m);
            results[i].msg[m] = '\0';
        }
    } else {
        c->entries_committed++;
        c->commands_committed += n;
    }
    run_callbacks(pend, results, n);
    buf_free(&entry);
    if (c->pend == NULL) {
        c->pend = pend; /* nothing new was proposed: keep the arrays */
        c->results = results;
        c->cap_pend = cap;
    } else {
        ferry_free(pend);
        ferry_free(results);
    }
    return rc != 0 ? rc : (int)n;
}

int cluster_probe(struct cluster *c)
{
    if (!c->failed)
        return 0;
    struct ferry_err err;
    ferry_err_clear(&err);
    struct buf noop;
    buf_init(&noop);
    struct broker_cmd cmd = {.type = BROKER_CMD_NOOP};
    struct broker_result res;
    int rc = broker_cmd_encode(&noop, &cmd);
    if (rc == 0)
        rc = commit_entry(c, &noop, &res, 1, &err);
    buf_free(&noop);
    if (rc == 0) {
        c->failed = 0;
        log_info("cluster", "storage works again, accepting writes");
    }
    return rc;
}
