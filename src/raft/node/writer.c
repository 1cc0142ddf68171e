/* writer.c - the log writer thread: group commit off the event loop.
 *
 * The loop thread queues operations (append entries, compact) and wakes the
 * writer. The writer takes everything queued at once, appends it, makes it
 * durable with one raftlog_sync, records the last durable (index, term) and
 * wakes the loop through a uv_async, which steps RAFT_EV_PERSISTED. What was
 * queued while a sync ran forms the next batch, so under load every fsync
 * carries many entries.
 *
 * The loop thread uses the struct raftlog itself only after writer_drain(),
 * when the queue is empty and the writer idle; the mutex hand-off orders the
 * two threads' accesses.
 */
#include "raft/node/node_int.h"

#include "util/alloc.h"
#include "util/log.h"
#include <string.h>

static void wop_free(struct wop *op)
{
    ferry_free(op);
}

static void *writer_main(void *arg)
{
    struct rnode *n = arg;
    pthread_mutex_lock(&n->mu);
    for (;;) {
        while (n->w_head == NULL && !n->w_stop)
            pthread_cond_wait(&n->w_cv, &n->mu);
        if (n->w_head == NULL && n->w_stop)
            break;
        struct wop *batch = n->w_head;
        n->w_head = n->w_tail = NULL;
        n->w_busy = 1;
        int failed = n->w_failed;
        pthread_mutex_unlock(&n->mu);

        struct ferry_err err;
        ferry_err_clear(&err);
        int rc = 0, appended = 0;
        uint64_t entries = 0;
        for (struct wop *op = batch; op != NULL; op = op->next) {
            if (failed || rc != 0)
                continue;
            if (op->kind == WOP_APPEND) {
                rc = raftlog_append(n->log, op->persist_from, op->entries, op->n, &err);
                appended = 1;
                entries += op->n;
            } else if (op->kind == WOP_COMPACT) {
                /* A failed compaction leaves files behind; it is not a reason
                 * to stop the node. */
                struct ferry_err cerr;
                ferry_err_clear(&cerr);
                if (raftlog_compact(n->log, op->compact_to, &cerr) != 0)
                    log_warn("raft", "log compaction to %llu failed: %s",
                             (unsigned long long)op->compact_to, cerr.msg);
            }
        }
        if (!failed && rc == 0 && appended)
            rc = raftlog_sync(n->log, &err);
        uint64_t idx = raftlog_last_index(n->log), term = raftlog_last_term(n->log);

        while (batch != NULL) {
            struct wop *next = batch->next;
            wop_free(batch);
            batch = next;
        }
        pthread_mutex_lock(&n->mu);
        n->w_busy = 0;
        if (!failed && rc != 0) {
            n->w_failed = 1;
            n->w_err = err;
            if (n->w_err.code == 0)
                ferry_err_set(&n->w_err, rc, "%s", ferry_strerror(rc));
        } else if (!failed && appended) {
            n->w_index = idx;
            n->w_term = term;
            n->w_new = 1;
            n->w_syncs++;
            n->w_entries += entries;
        }
        pthread_cond_broadcast(&n->w_idle_cv);
        pthread_mutex_unlock(&n->mu);
        if (appended || rc != 0)
            uv_async_send(&n->wake);
        pthread_mutex_lock(&n->mu);
    }
    pthread_mutex_unlock(&n->mu);
    return NULL;
}

int writer_start(struct rnode *n, struct ferry_err *err)
{
    int rc = pthread_create(&n->w_thread, NULL, writer_main, n);
    if (rc != 0)
        return ferry_err_set(err, FERRY_ENOMEM, "cannot start the log writer thread: %s",
                             strerror(rc));
    n->w_running = 1;
    return 0;
}

void writer_stop(struct rnode *n)
{
    if (!n->w_running)
        return;
    pthread_mutex_lock(&n->mu);
    n->w_stop = 1;
    pthread_cond_signal(&n->w_cv);
    pthread_mutex_unlock(&n->mu);
    pthread_join(n->w_thread, NULL);
    n->w_running = 0;
    while (n->w_head != NULL) {
        struct wop *next = n->w_head->next;
        wop_free(n->w_head);
        n->w_head = next;
    }
    n->w_tail = NULL;
}

void writer_drain(struct rnode *n)
{
    pthread_mutex_lock(&n->mu);
    while (n->w_head != NULL || n->w_busy)
        pthread_cond_wait(&n->w_idle_cv, &n->mu);
    pthread_mutex_unlock(&n->mu);
}

static void enqueue(struct rnode *n, struct wop *op)
{
    op->next = NULL;
    pthread_mutex_lock(&n->mu);
    if (n->w_tail)
        n->w_tail->next = op;
    else
        n->w_head = op;
    n->w_tail = op;
    pthread_cond_signal(&n->w_cv);
    pthread_mutex_unlock(&n->mu);
}

int writer_append(struct rnode *n, uint64_t persist_from, const struct raft_entry *es,
                  uint32_t count)
{
    size_t bytes = sizeof(struct wop) + (size_t)count * sizeof(struct raft_entry);
    for (uint32_t i = 0; i < count; i++)
        bytes += es[i].len;
    struct wop *op = ferry_malloc(bytes);
    if (op == NULL)
        return FERRY_ENOMEM;
    memset(op, 0, sizeof *op);
    op->kind = WOP_APPEND;
    op->persist_from = persist_from;
    op->n = count;
    op->entries = (struct raft_entry *)(op + 1);
    uint8_t *p = (uint8_t *)(op->entries + count);
    for (uint32_t i = 0; i < count; i++) {
        op->entries[i] = es[i];
        if (es[i].len > 0) {
            memcpy(p, es[i].data, es[i].len);
            op->entries[i].data = p;
            p += es[i].len;
        } else {
            op->entries[i].data = NULL;
        }
    }
    enqueue(n, op);
    return 0;
}

int writer_compact(struct rnode *n, uint64_t index)
{
    struct wop *op = ferry_malloc(sizeof *op);
    if (op == NULL)
        return FERRY_ENOMEM;
    memset(op, 0, sizeof *op);
    op->kind = WOP_COMPACT;
    op->compact_to = index;
    enqueue(n, op);
    return 0;
}

int writer_take(struct rnode *n, uint64_t *index, uint64_t *term, struct ferry_err *failure)
{
    int got = 0;
    pthread_mutex_lock(&n->mu);
    if (n->w_failed) {
        *failure = n->w_err;
        got = -1;
    } else if (n->w_new) {
        *index = n->w_index;
        *term = n->w_term;
        n->w_new = 0;
        got = 1;
    }
    pthread_mutex_unlock(&n->mu);
    return got;
}
