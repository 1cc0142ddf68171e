/* test_broker_fixture.h - shared helpers for the broker's unit tests.
 *
 * A fixture owns a temporary directory with one database, a broker opened
 * on it and a Raft-like index counter; fx_apply wraps commands into one
 * entry and applies it in its own transaction, the way the cluster bridge
 * will. A recorder is a fake client (struct broker_client_ops) that keeps
 * every message offered to it and can start answering FERRY_EBUSY after a
 * number of messages, like a connection whose output buffer filled up.
 */
#ifndef FERRY_TEST_BROKER_FIXTURE_H
#define FERRY_TEST_BROKER_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "broker/broker.h"
#include "util/alloc.h"
#include "util/buf.h"

struct fixture {
    char dir[64];
    char path[128];
    struct broker_config cfg;
    struct broker *b;
    uint64_t index;
    uint64_t now;
};

static inline void fx_open(struct fixture *f)
{
    struct ferry_err err;
    ferry_err_clear(&err);
    int rc = broker_open(&f->b, &f->cfg, &err);
    if (rc != 0)
        fail_msg("broker_open: %s", err.msg);
}

static inline void fx_init(struct fixture *f)
{
    memset(f, 0, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/ferry-broker-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/ferry.db", f->dir);
    f->cfg.db_path = f->path;
    f->cfg.synchronous_full = 0;
    f->cfg.max_message_size = 1 << 20;
    f->cfg.default_prefetch = 256;
    f->cfg.default_window = 1000;
    f->cfg.default_max_deliveries = 3;
    f->cfg.history_retention_ms = 0;
    f->cfg.history_max_records = 0;
    f->cfg.pump_batch = 1024;
    f->now = 1000000;
}

static inline void fx_setup(struct fixture *f)
{
    fx_init(f);
    fx_open(f);
}

static inline void fx_reopen(struct fixture *f)
{
    broker_close(f->b);
    f->b = NULL;
    fx_open(f);
}

static inline void fx_teardown(struct fixture *f)
{
    broker_close(f->b);
    f->b = NULL;
    char p[160];
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s%s", f->path, suffix[i]);
        unlink(p);
    }
    rmdir(f->dir);
}

/* Apply n commands as one entry in one transaction; returns apply/commit's rc. */
static inline int fx_apply(struct fixture *f, const struct broker_cmd *cmds, size_t n,
                           struct broker_result *res)
{
    struct buf entry;
    buf_init(&entry);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(broker_cmd_encode(&entry, &cmds[i]), 0);
    struct ferry_err err;
    ferry_err_clear(&err);
    int rc = broker_begin(f->b, &err);
    if (rc == 0)
        rc = broker_apply(f->b, ++f->index, 1, entry.data, entry.len, res, n, &err);
    if (rc == 0)
        rc = broker_commit(f->b, &err);
    buf_free(&entry);
    return rc;
}

/* Apply one command; fail the test on a storage error; return its result. */
static inline struct broker_result fx_do(struct fixture *f, struct broker_cmd c)
{
    struct broker_result r;
    memset(&r, 0, sizeof r);
    assert_int_equal(fx_apply(f, &c, 1, &r), 0);
    return r;
}

static inline struct broker_cmd cmd_make(uint8_t type, const char *name, uint64_t ts)
{
    struct broker_cmd c;
    memset(&c, 0, sizeof c);
    c.type = type;
    c.ts_ms = ts;
    if (name)
        snprintf(c.name, sizeof c.name, "%s", name);
    return c;
}

static inline struct broker_cmd cmd_create(uint8_t kind, const char *name, uint64_t capacity,
                                           uint64_t ttl_ms, uint32_t max_deliveries,
                                           const char *dlq)
{
    struct broker_cmd c = cmd_make(BROKER_CMD_CREATE, name, 1);
    c.kind = kind;
    c.capacity = capacity;
    c.ttl_ms = ttl_ms;
    c.max_deliveries = max_deliveries;
    if (dlq)
        snprintf(c.name2, sizeof c.name2, "%s", dlq);
    return c;
}

static inline struct broker_cmd cmd_msg(uint8_t type, const char *name, const char *payload,
                                        uint64_t ts, uint8_t flags)
{
    struct broker_cmd c = cmd_make(type, name, ts);
    c.flags = flags;
    c.payload = (const uint8_t *)payload;
    c.payload_len = (uint32_t)strlen(payload);
    return c;
}

static inline struct broker_cmd cmd_id(uint8_t type, const char *name, const char *name2,
                                       uint64_t id, uint64_t ts)
{
    struct broker_cmd c = cmd_make(type, name, ts);
    if (name2)
        snprintf(c.name2, sizeof c.name2, "%s", name2);
    c.id = id;
    return c;
}

/* ---- recorder: a fake client ---- */

struct rec_msg {
    int is_delivery;
    uint64_t handle, id, ts;
    uint32_t delivery_count;
    uint8_t transient;
    char payload[64];
};

struct rec_end {
    uint64_t handle;
    int code;
    char msg[160];
};

struct recorder {
    struct rec_msg *msgs;
    size_t n, cap;
    long busy_after; /* accept this many more, then FERRY_EBUSY; < 0: never busy */
    struct rec_end ends[16];
    size_t nends;
    struct broker_client *c;
};

static inline int rec_deliver(void *ctx, int is_delivery, const struct broker_msg *m)
{
    struct recorder *r = ctx;
    if (r->busy_after == 0)
        return FERRY_EBUSY;
    if (r->busy_after > 0)
        r->busy_after--;
    if (r->n == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->msgs = realloc(r->msgs, r->cap * sizeof *r->msgs);
        assert_non_null(r->msgs);
    }
    struct rec_msg *x = &r->msgs[r->n++];
    memset(x, 0, sizeof *x);
    x->is_delivery = is_delivery;
    x->handle = m->handle;
    x->id = m->id;
    x->ts = m->ts_ms;
    x->delivery_count = m->delivery_count;
    x->transient = m->transient;
    size_t len = m->payload_len < sizeof x->payload - 1 ? m->payload_len : sizeof x->payload - 1;
    memcpy(x->payload, m->payload, len);
    return 0;
}

static inline void rec_ended(void *ctx, uint64_t handle, int code, const char *msg)
{
    struct recorder *r = ctx;
    assert_true(r->nends < 16);
    r->ends[r->nends].handle = handle;
    r->ends[r->nends].code = code;
    snprintf(r->ends[r->nends].msg, sizeof r->ends[r->nends].msg, "%s", msg);
    r->nends++;
}

static const struct broker_client_ops rec_ops = {rec_deliver, rec_ended};

static inline void rec_open(struct fixture *f, struct recorder *r)
{
    memset(r, 0, sizeof *r);
    r->busy_after = -1;
    assert_int_equal(broker_client_open(f->b, &rec_ops, r, &r->c), 0);
}

static inline void rec_free(struct recorder *r)
{
    free(r->msgs);
    r->msgs = NULL;
    r->n = r->cap = 0;
}

/* Close the client; apply the RETURN commands it produced. */
static inline void rec_close_and_return(struct fixture *f, struct recorder *r)
{
    struct buf returns;
    buf_init(&returns);
    broker_client_close(r->c, f->now, &returns);
    r->c = NULL;
    if (returns.len) {
        struct ferry_err err;
        assert_int_equal(broker_begin(f->b, &err), 0);
        assert_int_equal(
            broker_apply(f->b, ++f->index, 1, returns.data, returns.len, NULL, 0, &err), 0);
        assert_int_equal(broker_commit(f->b, &err), 0);
    }
    buf_free(&returns);
}

/* Pump until idle. */
static inline void fx_pump(struct fixture *f)
{
    int rc;
    int rounds = 0;
    while ((rc = broker_pump(f->b, f->now)) == 1)
        assert_true(++rounds < 100000);
    assert_int_equal(rc, 0);
}

/* Settle (ack or nack) an item and apply the resulting command. */
static inline struct broker_result fx_settle(struct fixture *f, struct recorder *r,
                                             uint64_t consumer, uint64_t item, int nack)
{
    struct broker_cmd c;
    struct ferry_err err;
    assert_int_equal(broker_settle(r->c, consumer, item, nack, f->now, &c, &err), 0);
    return fx_do(f, c);
}

static inline uint64_t fx_count(struct fixture *f, const char *name)
{
    struct broker_info info;
    struct ferry_err err;
    assert_int_equal(broker_info(f->b, name, f->now, &info, &err), 0);
    return info.count;
}

#endif
