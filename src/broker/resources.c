/* resources.c - CREATE and DELETE, and finding the resource a command names
 * (auto-creating it when the command carries BROKER_CMDF_AUTO_CREATE).
 *
 * Attributes are fixed at creation. An explicit CREATE takes capacity and
 * ttl_ms literally (0 = unlimited / never expires); max_deliveries 0 and an
 * empty dlq mean the configured default and "<name>.dlq". An auto-created
 * resource (PUBLISH/PUSH/DURABLE_CREATE with the flag, or CREATE with the
 * flag) gets every attribute from broker_config. CREATE of an existing name
 * with the same kind and the same resolved attributes succeeds; with the
 * flag any attributes are accepted ("ensure it exists").
 */
#include "broker/commands.h"

#include <assert.h>
#include <string.h>

/* Reject an invalid name; returns 0 so handlers can `return reject_name(...)`. */
int broker_reject_name(struct broker_result *r, const char *what, const char *name)
{
    broker_result_set(r, FERRY_EINVAL,
                      "invalid %s name '%.64s': use 1 to 255 characters of A-Z a-z 0-9 . _ - : /",
                      what, name);
    return 0;
}

static void wrong_kind(struct broker_result *r, const struct res *res, uint8_t want)
{
    broker_result_set(r, FERRY_EWRONGTYPE, "'%s' is a %s, not a %s", res->name,
                      broker_kind_name(res->kind), broker_kind_name(want));
}

int broker_res_existing(struct broker *b, const char *name, uint8_t kind, struct res **out,
                        struct broker_result *r)
{
    *out = NULL;
    if (!broker_name_valid(name))
        return broker_reject_name(r, broker_kind_name(kind), name);
    struct res *res = broker_res_find(b, name);
    if (res == NULL) {
        broker_result_set(r, FERRY_ENOTFOUND, "%s '%s' does not exist", broker_kind_name(kind),
                          name);
        return 0;
    }
    if (res->kind != kind) {
        wrong_kind(r, res, kind);
        return 0;
    }
    *out = res;
    return 0;
}

int broker_res_for_cmd(struct broker *b, const struct broker_cmd *cmd, uint8_t kind,
                       struct res **out, struct broker_result *r, struct ferry_err *err)
{
    int rc = broker_res_existing(b, cmd->name, kind, out, r);
    if (*out != NULL || r->status != FERRY_ENOTFOUND || !(cmd->flags & BROKER_CMDF_AUTO_CREATE))
        return rc;
    struct store_resource attrs;
    broker_res_defaults(b, kind, cmd->name, cmd, &attrs);
    attrs.created_ts = cmd->ts_ms;
    rc = broker_res_create(b, &attrs, out, err);
    if (rc == 0) {
        r->status = 0;
        r->msg[0] = '\0';
    }
    return rc;
}

/* Resolve CREATE's attributes into *a; 0, or a rejection written to r. */
static int create_attrs(const struct broker *b, const struct broker_cmd *cmd,
                        struct store_resource *a, struct broker_result *r)
{
    if (cmd->kind != BROKER_CHANNEL && cmd->kind != BROKER_QUEUE) {
        broker_result_set(r, FERRY_EINVAL, "unknown kind %u (1 = channel, 2 = queue)", cmd->kind);
        return -1;
    }
    if (!broker_name_valid(cmd->name)) {
        broker_reject_name(r, broker_kind_name(cmd->kind), cmd->name);
        return -1;
    }
    broker_res_defaults(b, cmd->kind, cmd->name, cmd, a);
    a->created_ts = cmd->ts_ms;
    if (cmd->flags & BROKER_CMDF_AUTO_CREATE)
        return 0;
    a->capacity = cmd->capacity;
    a->ttl_ms = cmd->ttl_ms;
    if (cmd->kind == BROKER_CHANNEL) {
        if (cmd->max_deliveries == 0 && cmd->name2[0] == '\0')
            return 0;
        broker_result_set(r, FERRY_EINVAL,
                          "max_deliveries and dlq apply to queues; '%s' is a channel", cmd->name);
        return -1;
    }
    if (cmd->max_deliveries)
        a->max_deliveries = cmd->max_deliveries;
    if (cmd->name2[0] == '\0')
        return 0;
    if (!broker_name_valid(cmd->name2)) {
        broker_reject_name(r, "dead-letter queue", cmd->name2);
        return -1;
    }
    if (strcmp(cmd->name2, cmd->name) == 0) {
        broker_result_set(r, FERRY_EINVAL, "queue '%s' cannot be its own dead-letter queue",
                          cmd->name);
        return -1;
    }
    memcpy(a->dlq, cmd->name2, sizeof a->dlq);
    return 0;
}

static int same_attrs(const struct res *res, const struct store_resource *a)
{
    return res->capacity == a->capacity && res->ttl_ms == a->ttl_ms &&
           res->max_deliveries == a->max_deliveries && strcmp(res->dlq, a->dlq) == 0;
}

int broker_apply_create(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                        struct ferry_err *err)
{
    struct store_resource a;
    if (create_attrs(b, cmd, &a, r) != 0)
        return 0;
    struct res *res = broker_res_find(b, cmd->name);
    if (res == NULL)
        return broker_res_create(b, &a, &res, err);
    if (res->kind != a.kind) {
        broker_result_set(r, FERRY_EEXIST, "'%s' already exists as a %s", res->name,
                          broker_kind_name(res->kind));
        return 0;
    }
    if ((cmd->flags & BROKER_CMDF_AUTO_CREATE) || same_attrs(res, &a))
        return 0;
    broker_result_set(r, FERRY_EEXIST,
                      "%s '%s' already exists with other attributes (capacity %llu, ttl_ms %llu, "
                      "max_deliveries %u, dlq '%s')",
                      broker_kind_name(res->kind), res->name, (unsigned long long)res->capacity,
                      (unsigned long long)res->ttl_ms, res->max_deliveries, res->dlq);
    return 0;
}

int broker_apply_delete(struct broker *b, const struct broker_cmd *cmd, struct broker_result *r,
                        struct ferry_err *err)
{
    if (!broker_name_valid(cmd->name))
        return broker_reject_name(r, "resource", cmd->name);
    struct res *res = broker_res_find(b, cmd->name);
    if (res == NULL) {
        broker_result_set(r, FERRY_ENOTFOUND, "no channel or queue named '%s'", cmd->name);
        return 0;
    }
    uint64_t removed = 0;
    int rc = store_resource_delete(b->store, res->rid, res->name, cmd->ts_ms, &removed, err);
    if (rc != 0)
        return rc;
    b->history_dirty |= removed > 0;
    void *was = smap_remove(&b->res, res->name);
    assert(was == res);
    (void)was;
    if (res->kind == BROKER_CHANNEL)
        b->nchannels--;
    else
        b->nqueues--;
    res->doomed = 1;
    list_remove(&res->dirty_node);
    list_remove(&res->pending_node);
    list_insert_tail(&b->doomed, &res->doomed_node);
    struct fx f = {.type = FX_END_RES, .res = res};
    return broker_fx_push(b, &f);
}
