/* messages.c - PUBLISH, PUSH, ACK and RETURN (with dead-lettering).
 *
 * Ids come from the resource's last_id counter; the enqueue time qts is
 * max(command ts, the resource's last_qts), so it never decreases with id
 * even if leader clocks step back, which keeps expiry a prefix removal.
 * Capacity: a full channel drops its oldest events ("dropped"); a full
 * queue rejects the push (EFULL). Expired messages are removed first, so
 * they never count against capacity.
 *
 * A message for live clients is queued as an effect carrying a pointer into
 * the entry (valid until commit), so the live path never reads it back.
 */
#include "broker/commands.h"

#include <assert.h>
#include <string.h>

/* Assign the next id and qts and store the message. */
static int store_new(struct broker *b, struct res *res, const struct broker_cmd *cmd,
                     struct ferry_err *err)
{
    struct store_msg m = {
        .id = res->last_id + 1,
        .ts = cmd->ts_ms,
        .qts = cmd->ts_ms > res->last_qts ? cmd->ts_ms : res->last_qts,
        .deliveries = 0,
        .payload = cmd->payload,
        .payload_len = cmd->payload_len,
    };
    int rc = store_msg_insert(b->store, res->rid, &m, err);
    if (rc != 0)
        return rc;
    res->last_id = m.id;
    res->last_qts = m.qts;
    if (res->count++ == 0) {
        res->oldest_qts = m.qts;
        res->head_id = m.id;
    }
    broker_res_dirty(b, res);
    return 0;
}

/* Make room in a full channel: expired events first, then the oldest. */
static int make_room(struct broker *b, struct res *ch, uint64_t ts, struct ferry_err *err)
{
    int rc = broker_expire_resource(b, ch, ts, err);
    if (rc != 0 || ch->count < ch->capacity)
        return rc;
    uint64_t drop = ch->count - ch->capacity + 1, removed = 0;
    uint64_t through = ch->head_id + drop - 1;
    rc = store_msg_remove_through(b->store, ch->rid, through, ch->name, STORE_HIST_DROPPED, ts,
                                  &removed, err);
    if (rc != 0)
        return rc;
    assert(removed == drop);
    ch->count -= removed;
    ch->head_id = through + 1;
    b->history_dirty = 1;
    return 0;
}

int broker_apply_publish(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                         struct ferry_err *err)
{
    struct res *ch = NULL;
    int rc = broker_res_for_cmd(b, cmd, BROKER_CHANNEL, &ch, r, err);
    if (rc != 0 || ch == NULL)
        return rc;
    if (ch->capacity && ch->count >= ch->capacity)
        rc = make_room(b, ch, cmd->ts_ms, err);
    if (rc == 0)
        rc = store_new(b, ch, cmd, err);
    if (rc != 0)
        return rc;
    r->id = ch->last_id;
    if (ch->nclients == 0)
        return 0;
    struct fx f = {FX_EVENT, ch, NULL, ch->last_id, cmd->ts_ms, cmd->payload, cmd->payload_len};
    return broker_fx_push(b, &f);
}

int broker_apply_push(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                      struct ferry_err *err)
{
    struct res *q = NULL;
    int rc = broker_res_for_cmd(b, cmd, BROKER_QUEUE, &q, r, err);
    if (rc != 0 || q == NULL)
        return rc;
    if (q->capacity && q->count >= q->capacity) {
        rc = broker_expire_resource(b, q, cmd->ts_ms, err);
        if (rc != 0)
            return rc;
        if (q->count >= q->capacity) {
            broker_result_set(r, FERRY_EFULL, "queue '%s' is full (capacity %llu)", q->name,
                              (unsigned long long)q->capacity);
            return 0;
        }
    }
    rc = store_new(b, q, cmd, err);
    if (rc == 0 && broker_ready_push_new(&q->ready, q->last_id) != 0)
        rc = ferry_err_set(err, FERRY_ENOMEM, "out of memory queueing an item of '%s'", q->name);
    if (rc != 0)
        return rc;
    r->id = q->last_id;
    if (q->nclients == 0)
        return 0;
    struct fx f = {FX_ITEM, q, NULL, q->last_id, cmd->ts_ms, cmd->payload, cmd->payload_len};
    return broker_fx_push(b, &f);
}

int broker_apply_ack(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                     struct ferry_err *err)
{
    struct res *q = NULL;
    int rc = broker_res_existing(b, cmd->name, BROKER_QUEUE, &q, r);
    if (q == NULL)
        return rc;
    rc = store_msg_remove(b->store, q->rid, cmd->id, q->name, STORE_HIST_CONSUMED, cmd->ts_ms, err);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        rc = broker_lease_release(b, q, cmd->id);
        if (rc < 0)
            return ferry_err_set(err, rc, "out of memory acknowledging an item");
        broker_result_set(r, FERRY_ENOTFOUND,
                          "item %llu is not in queue '%s' (already acknowledged, expired or "
                          "dead-lettered)",
                          (unsigned long long)cmd->id, q->name);
        return 0;
    }
    assert(q->count > 0);
    q->count--;
    b->history_dirty = 1;
    rc = broker_lease_release(b, q, cmd->id);
    if (rc < 0)
        return ferry_err_set(err, rc, "out of memory acknowledging an item");
    if (rc == 0)
        broker_ready_remove(&q->ready, cmd->id);
    r->id = cmd->id;
    return 0;
}

/* The queue that receives q's dead letters, created on first need. NULL if none usable. */
static int dlq_for(struct broker *b, struct res *q, uint64_t ts, struct res **out,
                   struct ferry_err *err)
{
    *out = NULL;
    if (q->dlq[0] == '\0' || strcmp(q->dlq, q->name) == 0)
        return 0;
    struct res *d = broker_res_find(b, q->dlq);
    if (d == NULL) {
        struct store_resource attrs;
        broker_res_defaults(b, BROKER_QUEUE, q->dlq, NULL, &attrs);
        attrs.max_deliveries = q->max_deliveries;
        attrs.dlq[0] = '\0'; /* a dead-letter queue keeps what it cannot deliver */
        attrs.created_ts = ts;
        int rc = broker_res_create(b, &attrs, &d, err);
        if (rc != 0)
            return rc;
    }
    if (d->kind != BROKER_QUEUE)
        return 0;
    if (d->capacity && d->count >= d->capacity) {
        int rc = broker_expire_resource(b, d, ts, err);
        if (rc != 0 || d->count >= d->capacity)
            return rc;
    }
    *out = d;
    return 0;
}

/* Move item id of q to its dead-letter queue: 1 moved, 0 kept in q, or an error. */
static int dead_letter(struct broker *b, struct res *q, uint64_t id, uint64_t ts,
                       struct ferry_err *err)
{
    struct res *d = NULL;
    int rc = dlq_for(b, q, ts, &d, err);
    if (rc != 0 || d == NULL)
        return rc;
    uint64_t new_id = d->last_id + 1, qts = ts > d->last_qts ? ts : d->last_qts;
    rc = store_msg_move(b->store, q->rid, id, d->rid, new_id, qts, q->name,
                        STORE_HIST_DEAD_LETTERED, ts, err);
    if (rc <= 0)
        return rc;
    d->last_id = new_id;
    d->last_qts = qts;
    if (d->count++ == 0)
        d->oldest_qts = qts;
    if (broker_ready_push_new(&d->ready, new_id) != 0)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory dead-lettering to '%s'", d->name);
    broker_res_dirty(b, d);
    broker_queue_reconsider(b, d);
    assert(q->count > 0);
    q->count--;
    broker_ready_remove(&q->ready, id);
    b->history_dirty = 1;
    return 1;
}

int broker_apply_return(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                        struct ferry_err *err)
{
    struct res *q = NULL;
    int rc = broker_res_existing(b, cmd->name, BROKER_QUEUE, &q, r);
    if (q == NULL)
        return rc;
    int was_leased = broker_lease_release(b, q, cmd->id);
    if (was_leased < 0)
        return ferry_err_set(err, was_leased, "out of memory returning an item");
    uint32_t deliveries = 0;
    rc = store_msg_bump_deliveries(b->store, q->rid, cmd->id, &deliveries, err);
    if (rc < 0)
        return rc;
    if (rc == 0) {
        broker_result_set(r, FERRY_ENOTFOUND,
                          "item %llu is not in queue '%s' (acknowledged, expired or "
                          "dead-lettered)",
                          (unsigned long long)cmd->id, q->name);
        return 0;
    }
    r->id = cmd->id;
    if (q->max_deliveries && deliveries >= q->max_deliveries) {
        rc = dead_letter(b, q, cmd->id, cmd->ts_ms, err);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
    if (was_leased || !broker_ready_contains(&q->ready, cmd->id)) {
        if (broker_ready_push_returned(&q->ready, cmd->id) != 0)
            return ferry_err_set(err, FERRY_ENOMEM, "out of memory returning an item of '%s'",
                                 q->name);
    }
    broker_queue_reconsider(b, q);
    return 0;
}
