/* apply.c - the transaction around apply: broker_begin, broker_apply,
 * broker_commit, broker_rollback.
 *
 * broker_apply first decodes the whole entry (a corrupt entry changes
 * nothing), skips it when its index is not above last_applied, then runs
 * each command's handler (commands.c). A handler decides from the state and
 * the command alone, writes through the store and updates the in-memory
 * index, and reports a per-command result; only a storage or memory failure
 * is an error. Such a failure abandons the whole batch: the transaction is
 * rolled back, queued client effects are dropped and the index is rebuilt
 * from the database, so memory never disagrees with what is on disk.
 *
 * Resource counters (last_id, last_qts) change on almost every command; they
 * are written once per batch, at commit, for every resource marked dirty.
 */
#include "broker/broker_int.h"
#include "broker/commands.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

void broker_result_set(struct broker_result *r, int status, const char *fmt, ...)
{
    r->status = status;
    r->id = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->msg, sizeof r->msg, fmt, ap);
    va_end(ap);
}

static int broken(struct broker *b, struct ferry_err *err)
{
    return ferry_err_set(err, b->broken, "%s", b->broken_err.msg);
}

int broker_begin(struct broker *b, struct ferry_err *err)
{
    assert(b != NULL);
    if (b->broken)
        return broken(b, err);
    if (b->in_txn)
        return ferry_err_set(err, FERRY_ESTATE, "broker_begin: a transaction is already open");
    int rc = store_begin(b->store, err);
    if (rc != 0)
        return rc;
    assert(b->nfx == 0);
    assert(b->nundo == 0);
    assert(list_empty(&b->dirty));
    b->in_txn = 1;
    return 0;
}

/* Abandon the batch after a failure: roll back, forget effects, reload. */
static int fail_batch(struct broker *b, int rc)
{
    store_rollback(b->store);
    b->in_txn = 0;
    broker_fx_drop(b);
    broker_lease_undo(b);
    struct ferry_err reload_err;
    ferry_err_clear(&reload_err);
    broker_index_load(b, &reload_err);
    return rc;
}

/* Walk the entry once to check that every command decodes; *count = commands. */
static int validate_entry(const uint8_t *entry, size_t len, uint64_t index, size_t *count,
                          struct ferry_err *err)
{
    struct broker_cmd cmd;
    size_t off = 0, n = 0, used = 0;
    while (off < len) {
        if (broker_cmd_decode(entry + off, len - off, &cmd, &used) != 0)
            return ferry_err_set(err, FERRY_ECORRUPT,
                                 "log entry %llu is corrupt: command %zu at byte %zu of %zu does "
                                 "not decode",
                                 (unsigned long long)index, n, off, len);
        off += used;
        n++;
    }
    *count = n;
    return 0;
}

static int apply_one(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                     struct ferry_err *err)
{
    switch (cmd->type) {
    case BROKER_CMD_NOOP:
        return 0;
    case BROKER_CMD_CREATE:
        return broker_apply_create(b, cmd, r, err);
    case BROKER_CMD_DELETE:
        return broker_apply_delete(b, cmd, r, err);
    case BROKER_CMD_PUBLISH:
    case BROKER_CMD_PUSH: {
        int producer = broker_has_producer(cmd);
        if (producer) {
            int dup = broker_producer_check(b, cmd, r, err);
            if (dup != 0)
                return dup < 0 ? dup : 0;
        }
        int rc = cmd->type == BROKER_CMD_PUBLISH ? broker_apply_publish(b, cmd, r, err)
                                                 : broker_apply_push(b, cmd, r, err);
        if (rc == 0 && producer)
            rc = broker_producer_record(b, cmd, r, err);
        return rc;
    }
    case BROKER_CMD_ACK:
        return broker_apply_ack(b, cmd, r, err);
    case BROKER_CMD_RETURN:
        return broker_apply_return(b, cmd, r, err);
    case BROKER_CMD_DURABLE_CREATE:
        return broker_apply_durable_create(b, cmd, r, err);
    case BROKER_CMD_DURABLE_ACK:
        return broker_apply_durable_ack(b, cmd, r, err);
    case BROKER_CMD_DURABLE_DELETE:
        return broker_apply_durable_delete(b, cmd, r, err);
    case BROKER_CMD_EXPIRE:
        return broker_apply_expire(b, cmd, r, err);
    default:
        assert(0 && "validated by decode");
        return FERRY_EINTERNAL;
    }
}

static void skip_results(struct broker_result *results, size_t cap, size_t count)
{
    for (size_t i = 0; results && i < cap && i < count; i++) {
        results[i].status = 0;
        results[i].id = 0;
        results[i].duplicate = 0;
        results[i].msg[0] = '\0';
    }
}

int broker_apply(struct broker *b, uint64_t index, uint64_t term, const uint8_t *entry, size_t len,
                 struct broker_result *results, size_t cap, struct ferry_err *err)
{
    if (b->broken)
        return broken(b, err);
    if (!b->in_txn)
        return ferry_err_set(err, FERRY_ESTATE, "broker_apply outside broker_begin/commit");
    size_t count = 0;
    int rc = validate_entry(entry, len, index, &count, err);
    if (rc != 0)
        return rc;
    if (index <= b->applied_index) {
        skip_results(results, cap, count);
        return 0;
    }
    struct broker_result scratch;
    struct broker_cmd cmd;
    size_t off = 0, used = 0;
    for (size_t i = 0; i < count; i++) {
        rc = broker_cmd_decode(entry + off, len - off, &cmd, &used);
        assert(rc == 0);
        off += used;
        struct broker_result *r = results && i < cap ? &results[i] : &scratch;
        r->status = 0;
        r->id = 0;
        r->duplicate = 0;
        r->msg[0] = '\0';
        rc = apply_one(b, &cmd, r, err);
        if (rc != 0)
            return fail_batch(b, rc);
    }
    assert(off == len);
    b->applied_index = index;
    b->applied_term = term;
    return 0;
}

static int flush_dirty(struct broker *b, struct ferry_err *err)
{
    while (!list_empty(&b->dirty)) {
        struct res *r = list_entry(b->dirty.next, struct res, dirty_node);
        int rc = store_resource_set_counters(b->store, r->rid, r->last_id, r->last_qts, err);
        if (rc != 0)
            return rc;
        list_remove(&r->dirty_node);
    }
    return 0;
}

static int write_batch_tail(struct broker *b, struct ferry_err *err)
{
    int rc = flush_dirty(b, err);
    if (rc == 0)
        rc = broker_producers_flush(b, err);
    if (rc == 0 && (b->applied_index != b->stored_index || b->applied_term != b->stored_term))
        rc = store_set_last_applied(b->store, b->applied_index, b->applied_term, err);
    if (rc == 0 && b->history_dirty)
        rc = broker_refresh_history(b, err);
    return rc;
}

int broker_commit(struct broker *b, struct ferry_err *err)
{
    if (b->broken)
        return broken(b, err);
    if (!b->in_txn)
        return ferry_err_set(err, FERRY_ESTATE,
                             "broker_commit without an open transaction (it was rolled back)");
    int rc = write_batch_tail(b, err);
    if (rc == 0)
        rc = store_commit(b->store, err);
    if (rc != 0)
        return fail_batch(b, rc);
    b->in_txn = 0;
    b->nundo = 0;
    b->stored_index = b->applied_index;
    b->stored_term = b->applied_term;
    broker_fx_run(b);
    return 0;
}

void broker_rollback(struct broker *b)
{
    if (!b->in_txn)
        return;
    fail_batch(b, 0);
}
