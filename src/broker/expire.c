/* expire.c - time-to-live and history retention.
 *
 * A message is expired at time t when qts + ttl_ms <= t. Since qts never
 * decreases with id, the expired messages of a resource are a prefix in id
 * order: EXPIRE walks that prefix and removes it with one range delete
 * (history "expired"). Each resource keeps oldest_qts, a lower bound of its
 * messages' qts, so resources with nothing expired are skipped without
 * touching the database. oldest_qts may be stale-low after ACKs (it is not
 * refreshed per ACK, which would cost a read per message); then
 * broker_expire_due asks for an EXPIRE that finds nothing, refreshes the
 * bound and is not due again for another ttl.
 *
 * History retention runs in EXPIRE too, relative to the command's ts.
 */
#include "broker/broker_int.h"

#include <assert.h>

/* Is anything of r possibly expired at t? */
static int maybe_expired(const struct res *r, uint64_t t)
{
    return r->ttl_ms != 0 && r->count != 0 && t >= r->ttl_ms && r->oldest_qts <= t - r->ttl_ms;
}

int broker_expire_resource(struct broker *b, struct res *r, uint64_t ts, struct ferry_err *err)
{
    if (!maybe_expired(r, ts))
        return 0;
    uint64_t cutoff = ts - r->ttl_ms, n = 0, last = 0, removed = 0;
    int rc = store_msg_expired_prefix(b->store, r->rid, cutoff, &n, &last, err);
    if (rc == 0 && n > 0)
        rc = store_msg_remove_through(b->store, r->rid, last, r->name, STORE_HIST_EXPIRED, ts,
                                      &removed, err);
    if (rc != 0)
        return rc;
    assert(removed == n);
    assert(removed <= r->count);
    r->count -= removed;
    b->history_dirty |= removed > 0;
    if (r->kind == BROKER_QUEUE)
        broker_ready_drop_through(&r->ready, last);
    uint64_t first = 0, qts = 0;
    int found = store_msg_first(b->store, r->rid, &first, &qts, err);
    if (found < 0)
        return found;
    if (!found) {
        r->count = 0;
        r->head_id = r->last_id + 1;
        return 0;
    }
    r->oldest_qts = qts;
    r->head_id = first;
    return 0;
}

int broker_apply_expire(struct broker *b, const struct broker_cmd *cmd, struct broker_result *res,
                        struct ferry_err *err)
{
    (void)res;
    size_t pos = 0;
    void *v;
    while (smap_next(&b->res, &pos, NULL, &v)) {
        int rc = broker_expire_resource(b, v, cmd->ts_ms, err);
        if (rc != 0)
            return rc;
    }
    uint64_t keep = b->cfg.history_retention_ms;
    uint64_t min_ts = keep && cmd->ts_ms > keep ? cmd->ts_ms - keep : 0;
    uint64_t removed = 0;
    int rc = store_history_prune(b->store, min_ts, b->cfg.history_max_records, &removed, err);
    if (rc == 0)
        b->history_dirty = 1;
    if (rc == 0)
        rc = broker_producers_expire(b, cmd->ts_ms, err);
    return rc;
}

int broker_refresh_history(struct broker *b, struct ferry_err *err)
{
    int rc = store_history_stats(b->store, &b->history_count, &b->history_oldest_ts, err);
    if (rc == 0)
        b->history_dirty = 0;
    return rc;
}

/* History is due for pruning when it is 1/8 over a limit, so a steady
 * stream of records does not ask for an EXPIRE on every tick. */
static int history_due(const struct broker *b, uint64_t now_ms)
{
    uint64_t max = b->cfg.history_max_records, keep = b->cfg.history_retention_ms;
    if (b->history_count == 0)
        return 0;
    if (max && b->history_count > max + max / 8)
        return 1;
    uint64_t slack = keep / 8 > 1000 ? keep / 8 : 1000;
    return keep && now_ms > keep + slack && b->history_oldest_ts < now_ms - keep - slack;
}

int broker_expire_due(const struct broker *b, uint64_t now_ms)
{
    size_t pos = 0;
    void *v;
    while (smap_next(&b->res, &pos, NULL, &v)) {
        if (maybe_expired(v, now_ms))
            return 1;
    }
    return history_due(b, now_ms);
}
