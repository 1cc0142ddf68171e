/* ops.c - publish, push, drain and the request/reply admin operations.
 *
 * Each blocking operation encodes its frame into a struct req on the stack,
 * runs it through client_call() and decodes the reply body the I/O thread
 * copied. The asynchronous publish/push path encodes straight into a pooled
 * request under the client mutex, after waiting for a slot of the window.
 */
#include "client/client.h"

#include "util/alloc.h"
#include "util/clock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static int check_publish(ferry_client_t *c, uint8_t op, const char *name, const void *data,
                         size_t len, unsigned flags)
{
    int rc = client_check_name(c, op == PROTO_PUSH ? "queue" : "channel", name);
    if (rc != 0)
        return rc;
    if ((flags & ~FERRY_TRANSIENT) != 0)
        return client_fail(c, FERRY_EINVAL, "unknown publish flags 0x%x", flags);
    if (data == NULL && len > 0)
        return client_fail(c, FERRY_EINVAL, "payload pointer is NULL");
    if (len > UINT32_MAX - 1024)
        return client_fail(c, FERRY_ETOOBIG, "message of %zu bytes is too large", len);
    return 0;
}

/* Encode into r->frame. A persistent publish or push gets its producer
 * sequence when submitted (client_submit_locked): r->seq_off says where. */
static int encode_publish(struct req *r, uint8_t op, const char *name, const void *data,
                          size_t len, unsigned flags)
{
    struct proto_publish m;
    size_t n = strlen(name);
    memcpy(m.name, name, n + 1);
    m.pflags = (flags & FERRY_TRANSIENT) ? PROTO_PUB_TRANSIENT : 0;
    m.producer_seq = 0;
    m.payload = data;
    m.payload_len = (uint32_t)len;
    size_t at = r->frame.len;
    int rc = proto_encode_publish(&r->frame, op, 0, &m);
    /* header, str name (u16 length + bytes), u8 pflags, then u64 producer_seq */
    r->seq_off = m.pflags & PROTO_PUB_TRANSIENT ? 0 : (uint32_t)(at + PROTO_HEADER_SIZE + 2 + n + 1);
    return rc;
}

static int publish_sync(ferry_client_t *c, uint8_t op, const char *name, const void *data,
                        size_t len, unsigned flags, uint64_t *id)
{
    int rc = check_publish(c, op, name, data, len, flags);
    if (rc != 0)
        return rc;
    struct req r;
    client_req_init(&r, op);
    r.payload_len = len;
    if (encode_publish(&r, op, name, data, len, flags) != 0) {
        client_req_cleanup(&r);
        return client_fail(c, FERRY_ENOMEM, "out of memory");
    }
    rc = client_call(c, &r);
    uint64_t v = 0;
    if (rc == 0 && proto_decode_id(r.reply.data, r.reply.len, &v) != 0)
        rc = client_fail(c, FERRY_EPROTO, "malformed PUBLISH_OK");
    client_req_cleanup(&r);
    if (rc == 0 && id != NULL)
        *id = v;
    return rc;
}

/* Wait until a slot of the window is free (locked). */
static int wait_window_locked(ferry_client_t *c)
{
    uint64_t deadline = 0;
    int rc = 0;
    while (rc == 0 && c->async_inflight >= c->window) {
        if (c->fail_when_full)
            return client_fail(c, FERRY_EAGAIN,
                               "the window of %u asynchronous requests is full%s", c->window,
                               c->state == CLIENT_RECONNECTING ? " (reconnecting)" : "");
        if (client_in_io_thread(c))
            return client_fail(c, FERRY_EDEADLK,
                               "the window of %u asynchronous requests is full, and a callback "
                               "cannot wait for a slot",
                               c->window);
        if (deadline == 0)
            deadline = client_deadline(c, -1);
        client_flush_locked(c);
        c->async_waiters++;
        int w = client_wait(c, &c->async_cond, deadline);
        c->async_waiters--;
        rc = client_usable_locked(c);
        if (rc == 0 && w == ETIMEDOUT && c->async_inflight >= c->window)
            rc = client_fail(c, FERRY_ETIMEDOUT,
                             "the window of %u asynchronous requests to %s is still full "
                             "after %u ms",
                             c->window, c->info.address, c->request_timeout_ms);
    }
    return rc;
}

static int publish_async(ferry_client_t *c, uint8_t op, const char *name, const void *data,
                         size_t len, unsigned flags, ferry_publish_cb cb, void *arg)
{
    int rc = check_publish(c, op, name, data, len, flags);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&c->mu);
    rc = client_usable_locked(c);
    if (rc == 0)
        rc = wait_window_locked(c);
    struct req *r = NULL;
    if (rc == 0 && (r = client_req_get_locked(c)) == NULL)
        rc = client_fail(c, FERRY_ENOMEM, "out of memory");
    if (rc == 0) {
        r->kind = REQ_ASYNC;
        r->op = op;
        r->cb = cb;
        r->arg = arg;
        r->payload_len = len;
        buf_reset(&r->frame);
        if (encode_publish(r, op, name, data, len, flags) != 0)
            rc = client_fail(c, FERRY_ENOMEM, "out of memory");
        if (rc == 0)
            rc = client_submit_locked(c, r);
        if (rc != 0)
            client_req_put_locked(c, r);
    }
    if (rc == 0) {
        c->async_inflight++;
        c->async_pending++;
        client_kick_locked(c, 1);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

int ferry_publish(ferry_client_t *c, const char *channel, const void *data, size_t len,
                  unsigned flags, uint64_t *id)
{
    return publish_sync(c, PROTO_PUBLISH, channel, data, len, flags, id);
}

int ferry_publish_async(ferry_client_t *c, const char *channel, const void *data, size_t len,
                        unsigned flags, ferry_publish_cb cb, void *arg)
{
    return publish_async(c, PROTO_PUBLISH, channel, data, len, flags, cb, arg);
}

int ferry_push(ferry_client_t *c, const char *queue, const void *data, size_t len, uint64_t *id)
{
    return publish_sync(c, PROTO_PUSH, queue, data, len, 0, id);
}

int ferry_push_async(ferry_client_t *c, const char *queue, const void *data, size_t len,
                     ferry_publish_cb cb, void *arg)
{
    return publish_async(c, PROTO_PUSH, queue, data, len, 0, cb, arg);
}

int ferry_drain(ferry_client_t *c, int timeout_ms)
{
    pthread_mutex_lock(&c->mu);
    client_flush_locked(c);
    int rc = 0;
    if (timeout_ms != 0 && c->async_pending > 0 && client_in_io_thread(c))
        rc = client_fail(c, FERRY_EDEADLK,
                         "ferry_drain would wait inside a callback for %u requests",
                         c->async_pending);
    uint64_t deadline = client_deadline(c, timeout_ms);
    while (rc == 0 && timeout_ms != 0 && c->async_pending > 0) {
        c->async_waiters++;
        int w = client_wait(c, &c->async_cond, deadline);
        c->async_waiters--;
        client_flush_locked(c);
        if (w == ETIMEDOUT && c->async_pending > 0)
            rc = client_fail(c, FERRY_ETIMEDOUT,
                             "%u asynchronous requests still pending after %d ms", c->async_pending,
                             timeout_ms < 0 ? (int)c->request_timeout_ms : timeout_ms);
    }
    if (rc == 0 && c->state != CLIENT_READY && c->state != CLIENT_REDIRECTING)
        rc = client_usable_locked(c);
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ---- admin ---- */

/* Run a request whose encoder wrote r->frame; the reply body stays in r->reply. */
static int call_encoded(ferry_client_t *c, struct req *r, int enc)
{
    if (enc != 0) {
        client_req_cleanup(r);
        return client_fail(c, enc == FERRY_ENOMEM ? FERRY_ENOMEM : FERRY_EINVAL, "%s",
                           enc == FERRY_ENOMEM ? "out of memory" : "cannot encode the request");
    }
    return client_call(c, r);
}

int ferry_create(ferry_client_t *c, int kind, const char *name, const ferry_resource_options_t *o)
{
    if (kind != FERRY_CHANNEL && kind != FERRY_QUEUE)
        return client_fail(c, FERRY_EINVAL, "unknown resource kind %d", kind);
    int rc = client_check_name(c, kind == FERRY_QUEUE ? "queue" : "channel", name);
    if (rc == 0 && o != NULL && o->dlq != NULL && o->dlq[0] != '\0')
        rc = client_check_name(c, "dead-letter queue", o->dlq);
    if (rc != 0)
        return rc;
    struct proto_create m;
    memset(&m, 0, sizeof m);
    m.kind = (uint8_t)kind;
    snprintf(m.name, sizeof m.name, "%s", name);
    if (o != NULL) {
        m.capacity = o->capacity;
        m.ttl_ms = o->ttl_ms;
        m.max_deliveries = o->max_deliveries;
        if (o->dlq != NULL)
            snprintf(m.dlq, sizeof m.dlq, "%s", o->dlq);
    }
    struct req r;
    client_req_init(&r, PROTO_CREATE);
    rc = call_encoded(c, &r, proto_encode_create(&r.frame, 0, &m));
    client_req_cleanup(&r);
    return rc;
}

/* r was initialised by the caller, who cleans it up. */
static int call_name(ferry_client_t *c, uint8_t op, const char *name, struct req *r)
{
    int rc = client_check_name(c, "resource", name);
    if (rc != 0)
        return rc;
    return call_encoded(c, r, proto_encode_name(&r->frame, op, 0, name));
}

int ferry_delete(ferry_client_t *c, const char *name)
{
    struct req r;
    client_req_init(&r, PROTO_DELETE);
    int rc = call_name(c, PROTO_DELETE, name, &r);
    client_req_cleanup(&r);
    return rc;
}

int ferry_durable_delete(ferry_client_t *c, const char *channel, const char *durable)
{
    int rc = client_check_name(c, "channel", channel);
    if (rc == 0)
        rc = client_check_name(c, "durable", durable);
    if (rc != 0)
        return rc;
    struct req r;
    client_req_init(&r, PROTO_DURABLE_DELETE);
    rc = call_encoded(c, &r, proto_encode_durable_delete(&r.frame, 0, channel, durable));
    client_req_cleanup(&r);
    return rc;
}

int ferry_admin(ferry_client_t *c, int action, uint32_t node_id, int priority, const char *address)
{
    struct proto_admin m;
    memset(&m, 0, sizeof m);
    if (action < FERRY_ADMIN_TRANSFER_LEADER || action > FERRY_ADMIN_SNAPSHOT)
        return client_fail(c, FERRY_EINVAL, "unknown admin action %d", action);
    int add = action == FERRY_ADMIN_ADD_NODE;
    if (address == NULL)
        address = "";
    if (add && address[0] == '\0')
        return client_fail(c, FERRY_EINVAL,
                           "add-node needs the node's replication address "
                           "(host:port)");
    if (!add && address[0] != '\0')
        return client_fail(c, FERRY_EINVAL, "only add-node takes an address");
    if (strlen(address) > PROTO_NAME_MAX)
        return client_fail(c, FERRY_EINVAL, "address of %zu bytes is too long (at most %d)",
                           strlen(address), PROTO_NAME_MAX);
    if (add && priority < 0)
        priority = 1;
    if (priority > 255 || (priority != -1 && priority < 0) || (!add && priority > 0))
        return client_fail(c, FERRY_EINVAL, "priority %d: add-node takes 0 to 255", priority);
    if ((add || action == FERRY_ADMIN_REMOVE_NODE) && node_id == 0)
        return client_fail(c, FERRY_EINVAL, "a node id above 0 is needed");
    if (action == FERRY_ADMIN_SNAPSHOT && node_id != 0)
        return client_fail(c, FERRY_EINVAL,
                           "snapshot takes no node id (the leader snapshots "
                           "itself)");
    m.action = (uint8_t)action;
    m.node_id = node_id;
    m.priority = add ? (uint8_t)priority : 0;
    memcpy(m.address, address, strlen(address) + 1);
    struct req r;
    client_req_init(&r, PROTO_ADMIN);
    int rc = call_encoded(c, &r, proto_encode_admin(&r.frame, 0, &m));
    client_req_cleanup(&r);
    return rc;
}

static void info_from_proto(ferry_info_t *out, const struct proto_info *in)
{
    memset(out, 0, sizeof *out);
    out->kind = in->kind;
    memcpy(out->name, in->name, sizeof out->name);
    out->capacity = in->capacity;
    out->ttl_ms = in->ttl_ms;
    out->max_deliveries = in->max_deliveries;
    memcpy(out->dlq, in->dlq, sizeof out->dlq);
    out->count = in->count;
    out->first_id = in->first_id;
    out->last_id = in->last_id;
    out->clients = in->clients;
    out->unacked = in->unacked;
}

int ferry_info(ferry_client_t *c, const char *name, ferry_info_t *out)
{
    struct req r;
    client_req_init(&r, PROTO_INFO);
    int rc = call_name(c, PROTO_INFO, name, &r);
    if (rc == 0) {
        struct proto_info pi;
        if (proto_decode_info_ok(r.reply.data, r.reply.len, &pi) != 0)
            rc = client_fail(c, FERRY_EPROTO, "malformed INFO_OK");
        else
            info_from_proto(out, &pi);
    }
    client_req_cleanup(&r);
    return rc;
}

#define INFO_MIN_BYTES 61 /* an info record with empty strings */

int ferry_list(ferry_client_t *c, ferry_info_t **items, size_t *count)
{
    struct req r;
    client_req_init(&r, PROTO_LIST);
    int rc = call_encoded(c, &r, proto_encode_empty(&r.frame, PROTO_LIST, 0, 0));
    ferry_info_t *v = NULL;
    uint32_t n = 0;
    if (rc == 0) {
        struct proto_reader rd;
        if (proto_decode_list_ok(r.reply.data, r.reply.len, &rd, &n) != 0 ||
            n > r.reply.len / INFO_MIN_BYTES)
            rc = client_fail(c, FERRY_EPROTO, "malformed LIST_OK");
        else if ((v = ferry_calloc(n ? n : 1, sizeof *v)) == NULL)
            rc = client_fail(c, FERRY_ENOMEM, "out of memory");
        for (uint32_t i = 0; rc == 0 && i < n; i++) {
            struct proto_info pi;
            if (proto_decode_info(&rd, &pi) != 0)
                rc = client_fail(c, FERRY_EPROTO, "malformed LIST_OK record %u", i);
            else
                info_from_proto(&v[i], &pi);
        }
    }
    client_req_cleanup(&r);
    if (rc != 0) {
        ferry_free(v);
        return rc;
    }
    *items = v;
    *count = n;
    return 0;
}

void ferry_list_free(ferry_info_t *items)
{
    ferry_free(items);
}

/* Pack the pairs and their strings into one block. */
static ferry_kv_t *pack_status(const struct proto_status *st)
{
    size_t bytes = (st->count + 1) * sizeof(ferry_kv_t);
    for (uint16_t i = 0; i < st->count; i++)
        bytes += strlen(st->kv[i].key) + strlen(st->kv[i].value) + 2;
    ferry_kv_t *kv = ferry_malloc(bytes);
    if (kv == NULL)
        return NULL;
    char *p = (char *)(kv + st->count + 1);
    for (uint16_t i = 0; i < st->count; i++) {
        size_t k = strlen(st->kv[i].key) + 1;
        size_t v = strlen(st->kv[i].value) + 1;
        memcpy(p, st->kv[i].key, k);
        kv[i].key = p;
        p += k;
        memcpy(p, st->kv[i].value, v);
        kv[i].value = p;
        p += v;
    }
    kv[st->count].key = NULL;
    kv[st->count].value = NULL;
    return kv;
}

int ferry_status(ferry_client_t *c, ferry_kv_t **kv, size_t *count)
{
    struct req r;
    client_req_init(&r, PROTO_STATUS);
    int rc = call_encoded(c, &r, proto_encode_empty(&r.frame, PROTO_STATUS, 0, 0));
    struct proto_status *st = NULL;
    if (rc == 0 && (st = ferry_malloc(sizeof *st)) == NULL)
        rc = client_fail(c, FERRY_ENOMEM, "out of memory");
    if (rc == 0 && proto_decode_status_ok(r.reply.data, r.reply.len, st) != 0)
        rc = client_fail(c, FERRY_EPROTO, "malformed STATUS_OK");
    if (rc == 0) {
        *kv = pack_status(st);
        if (*kv == NULL)
            rc = client_fail(c, FERRY_ENOMEM, "out of memory");
        else
            *count = st->count;
    }
    ferry_free(st);
    client_req_cleanup(&r);
    return rc;
}

void ferry_status_free(ferry_kv_t *kv)
{
    ferry_free(kv);
}

int ferry_ping(ferry_client_t *c, uint64_t *rtt_us)
{
    struct req r;
    client_req_init(&r, PROTO_PING);
    uint64_t t0 = clock_mono_ns();
    int rc = call_encoded(c, &r, proto_encode_empty(&r.frame, PROTO_PING, 0, 0));
    uint64_t t1 = clock_mono_ns();
    client_req_cleanup(&r);
    if (rc == 0 && rtt_us != NULL)
        *rtt_us = (t1 - t0) / 1000;
    return rc;
}
