/* durables.c - DURABLE_CREATE, DURABLE_ACK and DURABLE_DELETE.
 *
 * A durable subscription is a named cursor on a channel: the last event id
 * its subscriber acknowledged. The cursor is part of the replicated state;
 * which client is attached to it right now is not (struct durable.live).
 * DURABLE_CREATE of an existing name keeps the existing cursor (result id =
 * that cursor), so two clients racing to create it both succeed.
 */
#include "broker/commands.h"

#include "util/alloc.h"

#include <stdio.h>

static int durable_name_ok(const struct broker_cmd *cmd, struct broker_result *r)
{
    if (broker_name_valid(cmd->name2))
        return 1;
    broker_reject_name(r, "durable subscription", cmd->name2);
    return 0;
}

static struct durable *find_durable(struct res *ch, const struct broker_cmd *cmd,
                                    struct broker_result *r)
{
    struct durable *d = smap_get(&ch->durables, cmd->name2);
    if (d == NULL)
        broker_result_set(r, FERRY_ENOTFOUND,
                          "durable subscription '%s' of channel '%s' does not exist", cmd->name2,
                          ch->name);
    return d;
}

int broker_apply_durable_create(struct broker *b, const struct broker_cmd *cmd,
                                struct broker_result *r, struct ferry_err *err)
{
    if (!durable_name_ok(cmd, r))
        return 0;
    struct res *ch = NULL;
    int rc = broker_res_for_cmd(b, cmd, BROKER_CHANNEL, &ch, r, err);
    if (rc != 0 || ch == NULL)
        return rc;
    struct durable *d = smap_get(&ch->durables, cmd->name2);
    if (d != NULL) {
        r->id = d->cursor;
        return 0;
    }
    uint64_t cursor = cmd->id < ch->last_id ? cmd->id : ch->last_id;
    rc = store_durable_put(b->store, ch->rid, cmd->name2, cursor, err);
    if (rc != 0)
        return rc;
    d = ferry_calloc(1, sizeof *d);
    if (d == NULL || smap_put(&ch->durables, cmd->name2, d) != 0) {
        ferry_free(d);
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory creating durable '%s'", cmd->name2);
    }
    list_init(&d->doomed_node);
    snprintf(d->name, sizeof d->name, "%s", cmd->name2);
    d->cursor = cursor;
    d->ch = ch;
    r->id = cursor;
    return 0;
}

int broker_apply_durable_ack(struct broker *b, const struct broker_cmd *cmd,
                             struct broker_result *r, struct ferry_err *err)
{
    if (!durable_name_ok(cmd, r))
        return 0;
    struct res *ch = NULL;
    int rc = broker_res_existing(b, cmd->name, BROKER_CHANNEL, &ch, r);
    if (ch == NULL)
        return rc;
    struct durable *d = find_durable(ch, cmd, r);
    if (d == NULL)
        return 0;
    if (cmd->id > ch->last_id) {
        broker_result_set(r, FERRY_EINVAL,
                          "cannot acknowledge event %llu: the last event of channel '%s' is %llu",
                          (unsigned long long)cmd->id, ch->name, (unsigned long long)ch->last_id);
        return 0;
    }
    if (cmd->id > d->cursor) {
        rc = store_durable_put(b->store, ch->rid, d->name, cmd->id, err);
        if (rc != 0)
            return rc;
        d->cursor = cmd->id;
        if (d->live && d->live->acked < d->cursor) {
            d->live->acked = d->cursor;
            broker_sub_reconsider(b, d->live);
        }
    }
    r->id = d->cursor;
    return 0;
}

int broker_apply_durable_delete(struct broker *b, const struct broker_cmd *cmd,
                                struct broker_result *r, struct ferry_err *err)
{
    if (!durable_name_ok(cmd, r))
        return 0;
    struct res *ch = NULL;
    int rc = broker_res_existing(b, cmd->name, BROKER_CHANNEL, &ch, r);
    if (ch == NULL)
        return rc;
    struct durable *d = find_durable(ch, cmd, r);
    if (d == NULL)
        return 0;
    rc = store_durable_delete(b->store, ch->rid, d->name, err);
    if (rc < 0)
        return rc;
    smap_remove(&ch->durables, d->name);
    if (d->live == NULL) {
        broker_durable_free(d);
        return 0;
    }
    list_insert_tail(&b->doomed_durables, &d->doomed_node);
    struct fx f = {.type = FX_END_DURABLE, .res = ch, .durable = d};
    return broker_fx_push(b, &f);
}
