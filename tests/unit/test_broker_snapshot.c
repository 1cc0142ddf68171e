/* test_broker_snapshot.c - snapshots, restore, reload and the digest:
 * a restored copy has the digest of the original and behaves like it
 * (deliveries, ids, capacity, TTL); a snapshot streamed on a thread while
 * the loop thread applies reflects exactly its pinned index; a restore
 * never moves a database backwards; malformed streams (truncated, flipped,
 * garbage, crafted) are refused and change nothing; restore and reload
 * refuse open clients; reload returns items leased by nobody to ready; the
 * digest sees one payload byte and ignores history and rids; the read-only
 * connection under a snapshot keeps its view and refuses a non-WAL file. */
#include "test_broker_fixture.h"

#include "store/store.h"
#include "util/crc32c.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <sqlite3.h>

#define SQLITE_FULL_CODE 13

/* ---- a growable memory sink for broker_snapshot_write ---- */

struct mem {
    uint8_t *p;
    size_t len, cap;
    size_t pieces, max_piece;
    long fail_at_piece; /* < 0: never */
    int fail_code;
};

static void mem_init(struct mem *m)
{
    memset(m, 0, sizeof *m);
    m->fail_at_piece = -1;
}

static int mem_write(void *ctx, const void *p, size_t n)
{
    struct mem *m = ctx;
    if (m->fail_at_piece >= 0 && (long)m->pieces == m->fail_at_piece)
        return m->fail_code;
    m->pieces++;
    if (n > m->max_piece)
        m->max_piece = n;
    if (m->len + n > m->cap) {
        m->cap = (m->len + n) * 2;
        m->p = realloc(m->p, m->cap);
        if (m->p == NULL)
            abort();
    }
    memcpy(m->p + m->len, p, n);
    m->len += n;
    return 0;
}

/* ---- a reader over a byte array, at most `chunk` bytes per call ---- */

struct rd {
    const uint8_t *p;
    size_t len, off;
    size_t chunk;   /* 0: as much as asked */
    size_t fail_at; /* with fail_code: fail once off reaches it */
    int fail_code;
};

static struct rd rd_make(const uint8_t *p, size_t len, size_t chunk)
{
    struct rd r = {p, len, 0, chunk, 0, 0};
    return r;
}

static int rd_read(void *ctx, void *p, size_t n)
{
    struct rd *r = ctx;
    if (r->fail_code && r->off >= r->fail_at)
        return r->fail_code;
    size_t k = r->len - r->off;
    if (k > n)
        k = n;
    if (r->chunk && k > r->chunk)
        k = r->chunk;
    memcpy(p, r->p + r->off, k);
    r->off += k;
    return (int)k;
}

/* ---- helpers ---- */

static void digest_of(struct fixture *f, char hex[BROKER_DIGEST_HEX], uint64_t *index)
{
    struct ferry_err err;
    uint64_t idx = 0, term = 0;
    if (broker_digest(f->b, hex, &idx, &term, &err) != 0)
        fail_msg("broker_digest: %s", err.msg);
    assert_int_equal(strlen(hex), 64);
    if (index)
        *index = idx;
}

static void snapshot_to(struct fixture *f, struct mem *m, uint64_t *index)
{
    struct ferry_err err;
    struct broker_snap *s = NULL;
    if (broker_snapshot_begin(f->b, &s, &err) != 0)
        fail_msg("snapshot_begin: %s", err.msg);
    if (broker_snapshot_write(s, mem_write, m, &err) != 0)
        fail_msg("snapshot_write: %s", err.msg);
    if (index)
        *index = broker_snapshot_index(s);
    broker_snapshot_end(s);
}

static int restore_from(struct fixture *f, const uint8_t *p, size_t len, size_t chunk, int *skipped,
                        struct ferry_err *err)
{
    struct rd r = rd_make(p, len, chunk);
    int sk = -1;
    int rc = broker_restore(f->b, rd_read, &r, &sk, err);
    if (skipped)
        *skipped = sk;
    return rc;
}

static void restore_ok(struct fixture *f, const struct mem *m)
{
    struct ferry_err err;
    int skipped = -1;
    if (restore_from(f, m->p, m->len, 0, &skipped, &err) != 0)
        fail_msg("restore: %s", err.msg);
    assert_int_equal(skipped, 0);
}

static struct broker_cmd cmd_bytes(uint8_t type, const char *name, const uint8_t *p, uint32_t n,
                                   uint64_t ts)
{
    struct broker_cmd c = cmd_make(type, name, ts);
    c.flags = BROKER_CMDF_AUTO_CREATE;
    c.payload = p;
    c.payload_len = n;
    return c;
}

static int64_t sql_int(struct fixture *f, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* A state that uses every part of the live state: channels with dropped
 * and retained events, durable cursors, a TTL channel and queue, a queue
 * with items given back (delivery counts) and one dead-lettered, a full
 * queue. Resources are created out of name order, so the rids of a copy
 * restored in name order differ from the original's. */
static void build_state(struct fixture *f)
{
    fx_do(f, cmd_create(BROKER_QUEUE, "zeta.jobs", 0, 0, 2, NULL));
    fx_do(f, cmd_create(BROKER_CHANNEL, "news", 5, 0, 0, NULL));
    fx_do(f, cmd_create(BROKER_CHANNEL, "alpha.ttl", 0, 500, 0, NULL));
    fx_do(f, cmd_create(BROKER_QUEUE, "cap", 3, 0, 0, NULL));
    fx_do(f, cmd_create(BROKER_QUEUE, "ttlq", 0, 1000, 0, NULL));
    for (int i = 1; i <= 8; i++) {
        char p[32];
        snprintf(p, sizeof p, "event-%d", i);
        assert_int_equal(fx_do(f, cmd_msg(BROKER_CMD_PUBLISH, "news", p, f->now, 0)).id,
                         (uint64_t)i);
    }
    fx_do(f, cmd_id(BROKER_CMD_DURABLE_CREATE, "news", "d1", 0, f->now));
    assert_int_equal(fx_do(f, cmd_id(BROKER_CMD_DURABLE_ACK, "news", "d1", 5, f->now)).id, 5);
    assert_int_equal(
        fx_do(f, cmd_id(BROKER_CMD_DURABLE_CREATE, "news", "d2", UINT64_MAX, f->now)).id, 8);
    fx_do(f, cmd_msg(BROKER_CMD_PUBLISH, "alpha.ttl", "t1", f->now, 0));
    f->now += 300;
    fx_do(f, cmd_msg(BROKER_CMD_PUBLISH, "alpha.ttl", "t2", f->now, 0));
    for (int i = 1; i <= 5; i++) {
        char p[32];
        snprintf(p, sizeof p, "job-%d", i);
        fx_do(f, cmd_msg(BROKER_CMD_PUSH, "zeta.jobs", p, f->now, 0));
    }
    fx_do(f, cmd_id(BROKER_CMD_RETURN, "zeta.jobs", NULL, 1, f->now));
    fx_do(f, cmd_id(BROKER_CMD_RETURN, "zeta.jobs", NULL, 2, f->now));
    fx_do(f, cmd_id(BROKER_CMD_RETURN, "zeta.jobs", NULL, 2, f->now)); /* dead-lettered */
    fx_do(f, cmd_id(BROKER_CMD_RETURN, "zeta.jobs", NULL, 3, f->now));
    assert_int_equal(fx_do(f, cmd_id(BROKER_CMD_ACK, "zeta.jobs", NULL, 4, f->now)).status, 0);
    for (int i = 1; i <= 4; i++) {
        char p[32];
        snprintf(p, sizeof p, "c%d", i);
        struct broker_result r = fx_do(f, cmd_msg(BROKER_CMD_PUSH, "cap", p, f->now, 0));
        assert_int_equal(r.status, i <= 3 ? 0 : FERRY_EFULL);
    }
    fx_do(f, cmd_msg(BROKER_CMD_PUSH, "ttlq", "q1", f->now, 0));
}

static void assert_same_resources(struct fixture *a, struct fixture *b)
{
    struct broker_info *ia = NULL, *ib = NULL;
    size_t na = 0, nb = 0;
    assert_int_equal(broker_list(a->b, a->now, &ia, &na), 0);
    assert_int_equal(broker_list(b->b, b->now, &ib, &nb), 0);
    assert_int_equal(na, nb);
    for (size_t i = 0; i < na; i++) {
        assert_string_equal(ia[i].name, ib[i].name);
        assert_int_equal(ia[i].kind, ib[i].kind);
        assert_int_equal(ia[i].capacity, ib[i].capacity);
        assert_int_equal(ia[i].ttl_ms, ib[i].ttl_ms);
        assert_int_equal(ia[i].max_deliveries, ib[i].max_deliveries);
        assert_string_equal(ia[i].dlq, ib[i].dlq);
        assert_int_equal(ia[i].count, ib[i].count);
        assert_int_equal(ia[i].first_id, ib[i].first_id);
        assert_int_equal(ia[i].last_id, ib[i].last_id);
    }
    ferry_free(ia);
    ferry_free(ib);
}

/* ---- round trip ---- */

static void test_restore_gives_same_digest_and_state(void **state)
{
    (void)state;
    struct fixture a, b;
    fx_setup(&a);
    fx_setup(&b);
    build_state(&a);
    char da[BROKER_DIGEST_HEX], db[BROKER_DIGEST_HEX];
    uint64_t ia = 0, ib = 0, si = 0;
    digest_of(&a, da, &ia);
    assert_int_equal(ia, a.index);
    struct mem m;
    mem_init(&m);
    snapshot_to(&a, &m, &si);
    assert_int_equal(si, a.index);
    assert_memory_equal(m.p, "FERRYSNP", 8);
    /* The digest is the SHA-256 of the snapshot's bytes. */
    unsigned char sha[32];
    unsigned int shalen = 0;
    assert_int_equal(EVP_Digest(m.p, m.len, sha, &shalen, EVP_sha256(), NULL), 1);
    char hex[65];
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", sha[i]);
    assert_string_equal(hex, da);

    /* b had a state of its own, which the restore replaces; its history stays. */
    fx_do(&b, cmd_msg(BROKER_CMD_PUSH, "only.b", "x", b.now, BROKER_CMDF_AUTO_CREATE));
    fx_do(&b, cmd_id(BROKER_CMD_ACK, "only.b", NULL, 1, b.now));
    assert_int_equal(sql_int(&b, "SELECT count(*) FROM history"), 1);
    restore_ok(&b, &m);
    digest_of(&b, db, &ib);
    assert_string_equal(da, db);
    assert_int_equal(ib, a.index);
    uint64_t li, lt;
    broker_last_applied(b.b, &li, &lt);
    assert_int_equal(li, a.index);
    assert_int_equal(lt, 1);
    enum broker_kind kind;
    assert_int_equal(broker_lookup(b.b, "only.b", &kind), FERRY_ENOTFOUND);
    assert_int_equal(sql_int(&b, "SELECT count(*) FROM history"), 1);
    assert_true(broker_durable_exists(b.b, "news", "d1"));
    assert_true(broker_durable_exists(b.b, "news", "d2"));
    b.now = a.now;
    assert_same_resources(&a, &b);
    /* Rids are local: the copy numbered its resources in name order. */
    assert_int_equal(sql_int(&a, "SELECT rid FROM resources WHERE name = 'zeta.jobs'"), 1);
    assert_int_not_equal(sql_int(&b, "SELECT rid FROM resources WHERE name = 'zeta.jobs'"), 1);
    struct broker_stats sa, sb;
    broker_stats(a.b, &sa);
    broker_stats(b.b, &sb);
    assert_int_equal(sa.stored_messages, sb.stored_messages);
    assert_int_equal(sa.channels, sb.channels);
    assert_int_equal(sa.queues, sb.queues);
    /* The restored database survives a reopen with the same digest. */
    fx_reopen(&b);
    digest_of(&b, db, NULL);
    assert_string_equal(da, db);
    free(m.p);
    fx_teardown(&a);
    fx_teardown(&b);
}

/* Open a client on f that consumes every queue and subscribes to the channels. */
static void observe(struct fixture *f, struct recorder *r)
{
    rec_open(f, r);
    struct ferry_err err;
    uint64_t id, next;
    const char *queues[] = {"zeta.jobs", "zeta.jobs.dlq", "cap", "ttlq"};
    for (size_t i = 0; i < 4; i++)
        if (broker_consume(r->c, queues[i], 100, &id, &err) != 0)
            fail_msg("consume %s: %s", queues[i], err.msg);
    assert_int_equal(broker_subscribe(r->c, "news", 3, 0, "d1", 0, &id, &next, &err), 0);
    assert_int_equal(next, 6);
    assert_int_equal(broker_subscribe(r->c, "news", 2, 0, NULL, 0, &id, &next, &err), 0);
    assert_int_equal(next, 4); /* 1..3 were dropped by capacity */
    assert_int_equal(broker_subscribe(r->c, "alpha.ttl", 2, 0, NULL, 0, &id, &next, &err), 0);
    fx_pump(f);
}

static void assert_same_msgs(const struct recorder *x, const struct recorder *y)
{
    assert_int_equal(x->n, y->n);
    for (size_t i = 0; i < x->n; i++) {
        assert_int_equal(x->msgs[i].is_delivery, y->msgs[i].is_delivery);
        assert_int_equal(x->msgs[i].id, y->msgs[i].id);
        assert_int_equal(x->msgs[i].ts, y->msgs[i].ts);
        assert_int_equal(x->msgs[i].delivery_count, y->msgs[i].delivery_count);
        assert_string_equal(x->msgs[i].payload, y->msgs[i].payload);
    }
}

static int has_msg(const struct recorder *r, const char *payload, uint32_t delivery_count)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->msgs[i].payload, payload) == 0 && r->msgs[i].delivery_count == delivery_count)
            return 1;
    return 0;
}

static void test_restored_copy_behaves_like_the_original(void **state)
{
    (void)state;
    struct fixture a, b;
    fx_setup(&a);
    fx_setup(&b);
    build_state(&a);
    struct mem m;
    mem_init(&m);
    snapshot_to(&a, &m, NULL);
    restore_ok(&b, &m);
    b.index = a.index;
    b.now = a.now;

    /* TTL schedule: nothing due yet, then alpha.ttl's first event is. */
    assert_false(broker_expire_due(a.b, a.now));
    assert_false(broker_expire_due(b.b, b.now));
    a.now += 250;
    b.now += 250;
    assert_true(broker_expire_due(a.b, a.now));
    assert_true(broker_expire_due(b.b, b.now));

    struct recorder ra, rb;
    observe(&a, &ra);
    observe(&b, &rb);
    assert_same_msgs(&ra, &rb);
    /* What was delivered: the returned items with their counts, the dead
     * letter, capacity survivors, the durable from its cursor, minus t1. */
    assert_true(has_msg(&rb, "job-1", 2));
    assert_true(has_msg(&rb, "job-2", 1)); /* in the dlq, count reset */
    assert_true(has_msg(&rb, "job-3", 2));
    assert_true(has_msg(&rb, "job-5", 1));
    assert_false(has_msg(&rb, "job-4", 1));
    assert_true(has_msg(&rb, "c3", 1));
    assert_true(has_msg(&rb, "event-6", 0));
    assert_false(has_msg(&rb, "event-3", 0));
    assert_true(has_msg(&rb, "t2", 0));
    assert_false(has_msg(&rb, "t1", 0));
    assert_true(has_msg(&rb, "q1", 1));

    /* Ids continue from the same counters, capacity holds the same. */
    struct broker_cmd cmds[] = {
        cmd_msg(BROKER_CMD_PUBLISH, "news", "event-9", a.now, 0),
        cmd_msg(BROKER_CMD_PUSH, "zeta.jobs", "job-6", a.now, 0),
        cmd_msg(BROKER_CMD_PUSH, "cap", "c5", a.now, 0),
        cmd_make(BROKER_CMD_EXPIRE, NULL, a.now),
    };
    struct broker_result res_a[4], res_b[4];
    assert_int_equal(fx_apply(&a, cmds, 4, res_a), 0);
    assert_int_equal(fx_apply(&b, cmds, 4, res_b), 0);
    assert_int_equal(res_b[0].id, 9);
    assert_int_equal(res_b[1].id, 6);
    assert_int_equal(res_b[2].status, FERRY_EFULL);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(res_a[i].status, res_b[i].status);
        assert_int_equal(res_a[i].id, res_b[i].id);
    }
    assert_same_msgs(&ra, &rb); /* the live path delivered the same */
    rec_close_and_return(&a, &ra);
    rec_close_and_return(&b, &rb);
    char da[BROKER_DIGEST_HEX], db[BROKER_DIGEST_HEX];
    digest_of(&a, da, NULL);
    digest_of(&b, db, NULL);
    assert_string_equal(da, db);
    assert_same_resources(&a, &b);
    rec_free(&ra);
    rec_free(&rb);
    free(m.p);
    fx_teardown(&a);
    fx_teardown(&b);
}

/* ---- streaming on a thread while the loop thread applies ---- */

/* Entries applied after a snapshot, kept to be applied again to a copy. */
struct elog {
    struct buf e[16];
    uint64_t idx[16];
    size_t n;
};

static void log_apply(struct fixture *f, struct elog *l, const struct broker_cmd *cmds, size_t n)
{
    assert_true(l->n < 16);
    struct buf *e = &l->e[l->n];
    buf_init(e);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(broker_cmd_encode(e, &cmds[i]), 0);
    l->idx[l->n++] = ++f->index;
    struct ferry_err err;
    assert_int_equal(broker_begin(f->b, &err), 0);
    assert_int_equal(broker_apply(f->b, f->index, 1, e->data, e->len, NULL, 0, &err), 0);
    assert_int_equal(broker_commit(f->b, &err), 0);
}

static void log_replay(struct fixture *f, const struct elog *l)
{
    struct ferry_err err;
    for (size_t i = 0; i < l->n; i++) {
        assert_int_equal(broker_begin(f->b, &err), 0);
        assert_int_equal(broker_apply(f->b, l->idx[i], 1, l->e[i].data, l->e[i].len, NULL, 0, &err),
                         0);
        assert_int_equal(broker_commit(f->b, &err), 0);
        f->index = l->idx[i];
    }
}

static void log_free(struct elog *l)
{
    for (size_t i = 0; i < l->n; i++)
        buf_free(&l->e[i]);
}

/* The worker: streams a snapshot, pausing after its first piece until the
 * main thread has applied more entries. */
struct worker {
    struct broker_snap *snap;
    struct mem mem;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int started, go;
    int rc;
    struct ferry_err err;
};

static int worker_write(void *ctx, const void *p, size_t n)
{
    struct worker *w = ctx;
    pthread_mutex_lock(&w->mu);
    if (!w->started) {
        w->started = 1;
        pthread_cond_broadcast(&w->cv);
        while (!w->go)
            pthread_cond_wait(&w->cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    return mem_write(&w->mem, p, n);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    w->rc = broker_snapshot_write(w->snap, worker_write, w, &w->err);
    broker_snapshot_end(w->snap); /* on the worker: the connection goes back from here */
    return NULL;
}

static void fill_bulk(struct fixture *f)
{
    static uint8_t kib[1024];
    memset(kib, 'k', sizeof kib);
    struct broker_cmd cmds[50];
    for (int batch = 0; batch < 6; batch++) {
        for (int i = 0; i < 50; i++)
            cmds[i] = cmd_bytes(BROKER_CMD_PUSH, "bulk", kib, sizeof kib, f->now);
        assert_int_equal(fx_apply(f, cmds, 50, NULL), 0);
    }
}

static void test_snapshot_on_a_thread_reflects_its_index(void **state)
{
    (void)state;
    struct fixture a, b;
    fx_setup(&a);
    fx_setup(&b);
    build_state(&a);
    fill_bulk(&a); /* 300 KiB: several pieces */
    char at_snap[BROKER_DIGEST_HEX], final[BROKER_DIGEST_HEX], got[BROKER_DIGEST_HEX];
    uint64_t snap_index;
    digest_of(&a, at_snap, &snap_index);

    struct worker w;
    memset(&w, 0, sizeof w);
    mem_init(&w.mem);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    struct ferry_err err;
    assert_int_equal(broker_snapshot_begin(a.b, &w.snap, &err), 0);
    assert_int_equal(broker_snapshot_index(w.snap), snap_index);
    assert_int_equal(broker_snapshot_term(w.snap), 1);
    /* Between begin and the stream: the snapshot is pinned already. */
    struct elog log;
    memset(&log, 0, sizeof log);
    struct broker_cmd first[] = {
        cmd_id(BROKER_CMD_ACK, "zeta.jobs", NULL, 1, a.now),
        cmd_msg(BROKER_CMD_PUBLISH, "alpha.ttl", "t3", a.now, 0),
        cmd_make(BROKER_CMD_DELETE, "ttlq", a.now),
    };
    log_apply(&a, &log, first, 3);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, worker_main, &w), 0);
    pthread_mutex_lock(&w.mu);
    while (!w.started)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);

    /* While the worker is mid-stream: change what it has not read yet. */
    struct broker_cmd acks[100];
    for (int i = 0; i < 100; i++)
        acks[i] = cmd_id(BROKER_CMD_ACK, "bulk", NULL, (uint64_t)(101 + i), a.now);
    log_apply(&a, &log, acks, 100);
    struct broker_cmd more[] = {
        cmd_msg(BROKER_CMD_PUBLISH, "news", "later", a.now, 0),
        cmd_make(BROKER_CMD_DELETE, "cap", a.now),
        cmd_msg(BROKER_CMD_PUSH, "aaa.new", "new", a.now, BROKER_CMDF_AUTO_CREATE),
        cmd_id(BROKER_CMD_DURABLE_ACK, "news", "d1", 7, a.now),
        cmd_id(BROKER_CMD_RETURN, "zeta.jobs", NULL, 5, a.now),
    };
    log_apply(&a, &log, more, 5);
    /* A second snapshot at the same time sees the newer state. */
    struct broker_snap *s2 = NULL;
    assert_int_equal(broker_snapshot_begin(a.b, &s2, &err), 0);
    assert_int_equal(broker_snapshot_index(s2), a.index);
    struct mem m2;
    mem_init(&m2);
    assert_int_equal(broker_snapshot_write(s2, mem_write, &m2, &err), 0);
    broker_snapshot_end(s2);
    log_apply(&a, &log, (struct broker_cmd[]){cmd_make(BROKER_CMD_EXPIRE, NULL, a.now + 5000)}, 1);

    pthread_mutex_lock(&w.mu);
    w.go = 1;
    pthread_cond_broadcast(&w.cv);
    pthread_mutex_unlock(&w.mu);
    assert_int_equal(pthread_join(th, NULL), 0);
    if (w.rc != 0)
        fail_msg("snapshot_write on the worker: %s", w.err.msg);
    assert_true(w.mem.pieces > 4);
    assert_int_equal(w.mem.max_piece, BROKER_SNAPSHOT_PIECE_MAX);
    digest_of(&a, final, NULL);
    assert_string_not_equal(at_snap, final);

    /* The stream is the state at its index, not a mix. */
    restore_ok(&b, &w.mem);
    digest_of(&b, got, NULL);
    assert_string_equal(got, at_snap);
    log_replay(&b, &log);
    digest_of(&b, got, NULL);
    assert_string_equal(got, final);
    /* The second snapshot restores to its own, later index. */
    struct fixture c;
    fx_setup(&c);
    restore_ok(&c, &m2);
    uint64_t ci;
    digest_of(&c, got, &ci);
    assert_int_equal(ci, log.idx[2]);
    assert_string_not_equal(got, at_snap);
    assert_string_not_equal(got, final);

    log_free(&log);
    free(w.mem.p);
    free(m2.p);
    pthread_mutex_destroy(&w.mu);
    pthread_cond_destroy(&w.cv);
    fx_teardown(&a);
    fx_teardown(&b);
    fx_teardown(&c);
}

static void test_snapshot_write_error_stops_and_can_retry(void **state)
{
    (void)state;
    struct fixture a;
    fx_setup(&a);
    build_state(&a);
    fill_bulk(&a);
    struct ferry_err err;
    struct broker_snap *s = NULL;
    assert_int_equal(broker_snapshot_begin(a.b, &s, &err), 0);
    /* Applying goes on while the snapshot is open. */
    fx_do(&a, cmd_msg(BROKER_CMD_PUBLISH, "news", "after", a.now, 0));
    struct mem bad;
    mem_init(&bad);
    bad.fail_at_piece = 2;
    bad.fail_code = FERRY_ENOSPC;
    assert_int_equal(broker_snapshot_write(s, mem_write, &bad, &err), FERRY_ENOSPC);
    assert_int_equal(err.code, FERRY_ENOSPC);
    assert_non_null(strstr(err.msg, "after 131072 bytes"));
    assert_int_equal(bad.pieces, 2);
    struct mem good, again;
    mem_init(&good);
    mem_init(&again);
    assert_int_equal(broker_snapshot_write(s, mem_write, &good, &err), 0);
    assert_int_equal(broker_snapshot_write(s, mem_write, &again, &err), 0);
    assert_int_equal(good.len, again.len);
    assert_memory_equal(good.p, again.p, good.len);
    assert_int_equal(broker_snapshot_index(s), a.index - 1);
    broker_snapshot_end(s);
    broker_snapshot_end(NULL);
    /* A storage failure on the snapshot's connection is reported too. */
    assert_int_equal(broker_snapshot_begin(a.b, &s, &err), 0);
    struct mem m3;
    mem_init(&m3);
    store_fault_inject(10 /* SQLITE_IOERR */, 20, 1);
    assert_int_equal(broker_snapshot_write(s, mem_write, &m3, &err), FERRY_EIO);
    store_fault_inject(0, -1, 0);
    assert_non_null(strstr(err.msg, "injected fault"));
    broker_snapshot_end(s);
    /* Refusals inside a transaction. */
    assert_int_equal(broker_begin(a.b, &err), 0);
    assert_int_equal(broker_snapshot_begin(a.b, &s, &err), FERRY_ESTATE);
    assert_null(s);
    char hex[BROKER_DIGEST_HEX];
    uint64_t i, t;
    assert_int_equal(broker_digest(a.b, hex, &i, &t, &err), FERRY_ESTATE);
    struct rd r = rd_make(good.p, good.len, 0);
    int skipped;
    assert_int_equal(broker_restore(a.b, rd_read, &r, &skipped, &err), FERRY_ESTATE);
    assert_int_equal(broker_reload(a.b, &err), FERRY_ESTATE);
    assert_int_equal(r.off, 0);
    assert_int_equal(broker_commit(a.b, &err), 0);
    free(bad.p);
    free(good.p);
    free(again.p);
    free(m3.p);
    fx_teardown(&a);
}

/* ---- restore rules ---- */

static void test_restore_skipped_when_database_is_not_older(void **state)
{
    (void)state;
    struct fixture a, b;
    fx_setup(&a);
    fx_setup(&b);
    build_state(&a);
    struct mem m;
    mem_init(&m);
    snapshot_to(&a, &m, NULL);
    /* b is ahead of the snapshot. */
    for (uint64_t i = 0; i < a.index + 3; i++)
        fx_do(&b, cmd_msg(BROKER_CMD_PUBLISH, "b.only", "x", b.now, BROKER_CMDF_AUTO_CREATE));
    char before[BROKER_DIGEST_HEX], after[BROKER_DIGEST_HEX];
    digest_of(&b, before, NULL);
    struct ferry_err err;
    int skipped = -1;
    struct rd r = rd_make(m.p, m.len, 0);
    assert_int_equal(broker_restore(b.b, rd_read, &r, &skipped, &err), 0);
    assert_int_equal(skipped, 1);
    assert_int_equal(r.off, 28); /* the header only */
    digest_of(&b, after, NULL);
    assert_string_equal(before, after);
    /* At the same index: skipped as well. */
    struct fixture c;
    fx_setup(&c);
    for (uint64_t i = 0; i < a.index; i++)
        fx_do(&c, cmd_make(BROKER_CMD_NOOP, NULL, c.now));
    assert_int_equal(restore_from(&c, m.p, m.len, 0, &skipped, &err), 0);
    assert_int_equal(skipped, 1);
    /* A snapshot of an empty broker (index 0) never replaces anything. */
    struct fixture e;
    fx_setup(&e);
    struct mem empty;
    mem_init(&empty);
    snapshot_to(&e, &empty, NULL);
    assert_int_equal(restore_from(&e, empty.p, empty.len, 0, &skipped, &err), 0);
    assert_int_equal(skipped, 1);
    free(m.p);
    free(empty.p);
    fx_teardown(&a);
    fx_teardown(&b);
    fx_teardown(&c);
    fx_teardown(&e);
}

/* b's digest and last_applied, to check a failed restore changed nothing. */
struct before {
    char hex[BROKER_DIGEST_HEX];
    uint64_t index;
};

static void expect_refused(struct fixture *b, const struct before *was, const uint8_t *p,
                           size_t len, size_t chunk, int code, const char *needle)
{
    struct ferry_err err;
    ferry_err_clear(&err);
    int skipped = -1;
    int rc = restore_from(b, p, len, chunk, &skipped, &err);
    if (rc != code)
        fail_msg("restore gave %d (%s), expected %d", rc, err.msg, code);
    assert_int_equal(skipped, 0);
    if (needle && strstr(err.msg, needle) == NULL)
        fail_msg("'%s' not in '%s'", needle, err.msg);
    char now[BROKER_DIGEST_HEX];
    uint64_t idx;
    digest_of(b, now, &idx);
    assert_string_equal(now, was->hex);
    assert_int_equal(idx, was->index);
    uint64_t li, lt;
    broker_last_applied(b->b, &li, &lt);
    assert_int_equal(li, was->index);
}

static void test_malformed_streams_change_nothing(void **state)
{
    (void)state;
    struct fixture a, b;
    fx_setup(&a);
    fx_setup(&b);
    build_state(&a);
    struct mem m;
    mem_init(&m);
    snapshot_to(&a, &m, NULL);
    fx_do(&b, cmd_msg(BROKER_CMD_PUSH, "mine", "keep me", b.now, BROKER_CMDF_AUTO_CREATE));
    struct before was;
    digest_of(&b, was.hex, &was.index);

    /* Truncated anywhere, read in small and large pieces. */
    size_t cuts[] = {0, 5, 27, 28, 29, 33, 100, m.len / 2, m.len - 5, m.len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++)
        expect_refused(&b, &was, m.p, cuts[i], i % 2 ? 7 : 0, FERRY_ECORRUPT, "truncated");
    /* One flipped byte in a payload: the checksum catches it. */
    uint8_t *copy = malloc(m.len + 1);
    assert_non_null(copy);
    memcpy(copy, m.p, m.len);
    uint8_t *hit = memmem(copy, m.len, "event-7", 7);
    assert_non_null(hit);
    hit[6] ^= 0x01;
    expect_refused(&b, &was, copy, m.len, 0, FERRY_ECORRUPT, "checksum mismatch");
    /* Every single byte flipped somewhere in the stream is refused. */
    for (size_t off = 0; off < m.len; off += 97) {
        memcpy(copy, m.p, m.len);
        copy[off] ^= 0x40;
        expect_refused(&b, &was, copy, m.len, 0, FERRY_ECORRUPT, NULL);
    }
    /* Magic, version, trailing bytes. */
    memcpy(copy, m.p, m.len);
    copy[0] = 'X';
    expect_refused(&b, &was, copy, m.len, 0, FERRY_ECORRUPT, "bad magic");
    memcpy(copy, m.p, m.len);
    copy[11] = 3;
    expect_refused(&b, &was, copy, m.len, 0, FERRY_EVERSION, "format version 3");
    copy[11] = 0;
    expect_refused(&b, &was, copy, m.len, 0, FERRY_ECORRUPT, "version 0");
    memcpy(copy, m.p, m.len);
    copy[m.len] = 0;
    expect_refused(&b, &was, copy, m.len + 1, 0, FERRY_ECORRUPT, "follow the end record");
    /* Garbage. */
    uint8_t garbage[4096];
    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = (uint8_t)(i * 131 + 7);
    expect_refused(&b, &was, garbage, sizeof garbage, 0, FERRY_ECORRUPT, "bad magic");
    memcpy(garbage, m.p, 28); /* a good header, then garbage */
    expect_refused(&b, &was, garbage, sizeof garbage, 0, FERRY_ECORRUPT, NULL);
    /* The read callback fails half-way: its error is returned. */
    struct rd r = rd_make(m.p, m.len, 0);
    r.fail_at = m.len / 2;
    r.fail_code = FERRY_EIO;
    struct ferry_err err;
    int skipped;
    assert_int_equal(broker_restore(b.b, rd_read, &r, &skipped, &err), FERRY_EIO);
    assert_non_null(strstr(err.msg, "reading the snapshot stream failed"));
    char now[BROKER_DIGEST_HEX], want[BROKER_DIGEST_HEX];
    digest_of(&b, now, NULL);
    assert_string_equal(now, was.hex);
    /* After all that, b still works, and a good stream still restores. */
    assert_int_equal(fx_count(&b, "mine"), 1);
    restore_ok(&b, &m);
    digest_of(&a, want, NULL);
    digest_of(&b, now, NULL);
    assert_string_equal(now, want);
    free(copy);
    free(m.p);
    fx_teardown(&a);
    fx_teardown(&b);
}

/* ---- crafted streams: what the checksum cannot catch ---- */

static void c_header(struct buf *o, uint32_t version, uint64_t index)
{
    buf_append(o, "FERRYSNP", 8);
    buf_append_u32(o, version);
    buf_append_u64(o, index);
    buf_append_u64(o, 1);
}

static void c_str(struct buf *o, const char *s)
{
    buf_append_u8(o, (uint8_t)strlen(s));
    buf_append(o, s, strlen(s));
}

static void c_resource(struct buf *o, uint8_t kind, const char *name)
{
    buf_append_u8(o, 1);
    buf_append_u32(o, (uint32_t)(47 + strlen(name)));
    buf_append_u8(o, kind);
    c_str(o, name);
    buf_append_u64(o, 0);  /* capacity */
    buf_append_u64(o, 0);  /* ttl */
    buf_append_u32(o, 0);  /* max_deliveries */
    c_str(o, "");          /* dlq */
    buf_append_u64(o, 10); /* last_id */
    buf_append_u64(o, 5);  /* last_qts */
    buf_append_u64(o, 1);  /* created_ts */
}

static void c_message(struct buf *o, uint64_t id, const char *payload)
{
    buf_append_u8(o, 2);
    buf_append_u32(o, (uint32_t)(28 + strlen(payload)));
    buf_append_u64(o, id);
    buf_append_u64(o, 5);
    buf_append_u64(o, 5);
    buf_append_u32(o, 0);
    buf_append(o, payload, strlen(payload));
}

static void c_durable(struct buf *o, const char *name, uint64_t cursor)
{
    buf_append_u8(o, 3);
    buf_append_u32(o, (uint32_t)(9 + strlen(name)));
    c_str(o, name);
    buf_append_u64(o, cursor);
}

static void c_end(struct buf *o, uint64_t nres, uint64_t nmsg, uint64_t ndur)
{
    buf_append_u8(o, 4);
    buf_append_u32(o, 28);
    buf_append_u64(o, nres);
    buf_append_u64(o, nmsg);
    buf_append_u64(o, ndur);
    buf_append_u32(o, crc32c(o->data, o->len));
}

static void test_crafted_streams(void **state)
{
    (void)state;
    struct fixture b;
    fx_setup(&b);
    fx_do(&b, cmd_msg(BROKER_CMD_PUSH, "mine", "keep me", b.now, BROKER_CMDF_AUTO_CREATE));
    struct before was;
    digest_of(&b, was.hex, &was.index);
    struct buf o;
    buf_init(&o);

#define CRAFT_REFUSED(code, needle, ...)                                                           \
    do {                                                                                           \
        buf_reset(&o);                                                                             \
        c_header(&o, 1, 50);                                                                       \
        __VA_ARGS__;                                                                               \
        expect_refused(&b, &was, o.data, o.len, 0, code, needle);                                  \
    } while (0)

    CRAFT_REFUSED(FERRY_ECORRUPT, "counts 2 resources",
                  (c_resource(&o, 1, "a"), c_end(&o, 2, 0, 0)));
    CRAFT_REFUSED(FERRY_ECORRUPT, "names must be ascending",
                  (c_resource(&o, 1, "b"), c_resource(&o, 1, "a"), c_end(&o, 2, 0, 0)));
    CRAFT_REFUSED(FERRY_ECORRUPT, "names must be ascending",
                  (c_resource(&o, 1, "a"), c_resource(&o, 2, "a"), c_end(&o, 2, 0, 0)));
    CRAFT_REFUSED(
        FERRY_ECORRUPT, "ids must be ascending",
        (c_resource(&o, 2, "q"), c_message(&o, 3, "x"), c_message(&o, 3, "y"), c_end(&o, 1, 2, 0)));
    CRAFT_REFUSED(FERRY_ECORRUPT, "ids must be ascending",
                  (c_resource(&o, 2, "q"), c_message(&o, 0, "x"), c_end(&o, 1, 1, 0)));
    CRAFT_REFUSED(FERRY_ECORRUPT, "on queue 'q'",
                  (c_resource(&o, 2, "q"), c_durable(&o, "d", 1), c_end(&o, 1, 0, 1)));
    CRAFT_REFUSED(
        FERRY_ECORRUPT, "after the resource's durables",
        (c_resource(&o, 1, "c"), c_durable(&o, "d", 1), c_message(&o, 1, "x"), c_end(&o, 1, 1, 1)));
    CRAFT_REFUSED(FERRY_ECORRUPT, "before any resource",
                  (c_message(&o, 1, "x"), c_end(&o, 0, 1, 0)));
    CRAFT_REFUSED(FERRY_ECORRUPT, "unknown record type 9",
                  (buf_append_u8(&o, 9), buf_append_u32(&o, 0), c_end(&o, 0, 0, 0)));
    CRAFT_REFUSED(FERRY_ECORRUPT, "unknown kind 3", (c_resource(&o, 3, "z"), c_end(&o, 1, 0, 0)));
    CRAFT_REFUSED(FERRY_ECORRUPT, "invalid resource",
                  (c_resource(&o, 1, "a b"), c_end(&o, 1, 0, 0)));
    CRAFT_REFUSED(FERRY_ECORRUPT, "end record of 27 bytes",
                  (buf_append_u8(&o, 4), buf_append_u32(&o, 27)));
    /* A resource record whose length covers more than its fields. */
    CRAFT_REFUSED(
        FERRY_ECORRUPT, "do not fill",
        (c_resource(&o, 1, "a"), o.data[28 + 4] += 1, buf_append_u8(&o, 0), c_end(&o, 1, 0, 0)));
    /* A message claiming almost 4 GiB, then the stream ends: refused
     * without allocating what was never sent. */
    CRAFT_REFUSED(FERRY_ECORRUPT, "truncated",
                  (c_resource(&o, 2, "q"), buf_append_u8(&o, 2), buf_append_u32(&o, 0xFFFFFFF0u),
                   buf_append(&o, "0123456789012345678901234567", 28), buf_append(&o, "x", 1)));

    /* The same crafting, well formed, restores. */
    buf_reset(&o);
    c_header(&o, 1, 50);
    c_resource(&o, 1, "c");
    c_message(&o, 9, "nine");
    c_message(&o, 10, "ten");
    c_durable(&o, "d", 9);
    c_durable(&o, "e", 10);
    c_resource(&o, 2, "q");
    c_message(&o, 4, "");
    c_end(&o, 2, 3, 2);
    struct ferry_err err;
    int skipped;
    if (restore_from(&b, o.data, o.len, 3, &skipped, &err) != 0)
        fail_msg("restore: %s", err.msg);
    assert_int_equal(skipped, 0);
    struct broker_info info;
    assert_int_equal(broker_info(b.b, "c", b.now, &info, &err), 0);
    assert_int_equal(info.count, 2);
    assert_int_equal(info.first_id, 9);
    assert_int_equal(info.last_id, 10);
    assert_true(broker_durable_exists(b.b, "c", "e"));
    assert_int_equal(broker_info(b.b, "q", b.now, &info, &err), 0);
    assert_int_equal(info.count, 1);
    enum broker_kind kind;
    assert_int_equal(broker_lookup(b.b, "mine", &kind), FERRY_ENOTFOUND);
    uint64_t li, lt;
    broker_last_applied(b.b, &li, &lt);
    assert_int_equal(li, 50);
    buf_free(&o);
    fx_teardown(&b);
}

static void test_storage_failure_during_restore_changes_nothing(void **state)
{
    (void)state;
    struct fixture a, b;
    fx_setup(&a);
    fx_setup(&b);
    build_state(&a);
    struct mem m;
    mem_init(&m);
    snapshot_to(&a, &m, NULL);
    char want[BROKER_DIGEST_HEX];
    digest_of(&a, want, NULL);
    fx_do(&b, cmd_msg(BROKER_CMD_PUSH, "mine", "keep me", b.now, BROKER_CMDF_AUTO_CREATE));
    struct before was;
    digest_of(&b, was.hex, &was.index);
    /* Fail each statement step of the restore in turn. */
    int failures = 0;
    for (long n = 0;; n++) {
        struct ferry_err err;
        int skipped;
        struct rd r = rd_make(m.p, m.len, 0);
        store_fault_inject(SQLITE_FULL_CODE, n, 1);
        int rc = broker_restore(b.b, rd_read, &r, &skipped, &err);
        long hits = store_faults_injected();
        store_fault_inject(0, -1, 0);
        if (hits == 0) {
            assert_int_equal(rc, 0); /* n went past the last step */
            break;
        }
        if (rc == 0)
            fail_msg("step %ld failed but the restore succeeded", n);
        assert_int_equal(rc, FERRY_ENOSPC);
        char now[BROKER_DIGEST_HEX];
        uint64_t idx;
        digest_of(&b, now, &idx);
        if (strcmp(now, was.hex) == 0) {
            assert_int_equal(idx, was.index);
            failures++;
            continue;
        }
        /* The step was in the rebuild after the commit: the data is in,
         * and the broker refuses to go on until it is reloaded. */
        assert_string_equal(now, want);
        assert_int_equal(broker_begin(b.b, &err), FERRY_ENOSPC);
        assert_non_null(strstr(err.msg, "the broker stopped"));
        assert_int_equal(broker_reload(b.b, &err), 0);
        assert_int_equal(fx_count(&b, "news"), 5);
        break;
    }
    assert_true(failures > 20);
    char got[BROKER_DIGEST_HEX];
    digest_of(&b, got, NULL);
    assert_string_equal(got, want);
    free(m.p);
    fx_teardown(&a);
    fx_teardown(&b);
}

/* ---- clients, reload ---- */

static void test_restore_and_reload_refuse_open_clients(void **state)
{
    (void)state;
    struct fixture a, b;
    fx_setup(&a);
    fx_setup(&b);
    build_state(&a);
    struct mem m;
    mem_init(&m);
    snapshot_to(&a, &m, NULL);
    struct recorder r;
    rec_open(&b, &r);
    struct ferry_err err;
    int skipped = -1;
    struct rd in = rd_make(m.p, m.len, 0);
    assert_int_equal(broker_restore(b.b, rd_read, &in, &skipped, &err), FERRY_EBUSY);
    assert_non_null(strstr(err.msg, "1 broker clients are still open"));
    assert_int_equal(in.off, 0);
    assert_int_equal(broker_reload(b.b, &err), FERRY_EBUSY);
    rec_close_and_return(&b, &r);
    rec_free(&r);
    restore_ok(&b, &m);
    char da[BROKER_DIGEST_HEX], db[BROKER_DIGEST_HEX];
    digest_of(&a, da, NULL);
    digest_of(&b, db, NULL);
    assert_string_equal(da, db);
    free(m.p);
    fx_teardown(&a);
    fx_teardown(&b);
}

static void test_reload_returns_items_leased_by_nobody(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    for (int i = 0; i < 3; i++)
        fx_do(&f, cmd_msg(BROKER_CMD_PUSH, "q", "item", f.now, BROKER_CMDF_AUTO_CREATE));
    struct recorder r;
    rec_open(&f, &r);
    uint64_t con;
    struct ferry_err err;
    assert_int_equal(broker_consume(r.c, "q", 10, &con, &err), 0);
    fx_pump(&f);
    assert_int_equal(r.n, 3);
    /* The node steps down: clients closed, their RETURNs never committed. */
    struct buf returns;
    buf_init(&returns);
    broker_client_close(r.c, f.now, &returns);
    assert_true(returns.len > 0);
    buf_free(&returns);
    rec_free(&r);
    struct broker_info info;
    assert_int_equal(broker_info(f.b, "q", f.now, &info, &err), 0);
    assert_int_equal(info.unacked, 3); /* leased by nobody */
    struct recorder r2;
    rec_open(&f, &r2);
    assert_int_equal(broker_consume(r2.c, "q", 10, &con, &err), 0);
    fx_pump(&f);
    assert_int_equal(r2.n, 0);
    rec_close_and_return(&f, &r2);
    rec_free(&r2);

    char before[BROKER_DIGEST_HEX], after[BROKER_DIGEST_HEX];
    digest_of(&f, before, NULL);
    assert_int_equal(broker_reload(f.b, &err), 0);
    digest_of(&f, after, NULL);
    assert_string_equal(before, after);
    assert_int_equal(broker_info(f.b, "q", f.now, &info, &err), 0);
    assert_int_equal(info.unacked, 0);
    assert_int_equal(info.count, 3);
    struct recorder r3;
    rec_open(&f, &r3);
    assert_int_equal(broker_consume(r3.c, "q", 10, &con, &err), 0);
    fx_pump(&f);
    assert_int_equal(r3.n, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(r3.msgs[i].id, i + 1);
        assert_int_equal(r3.msgs[i].delivery_count, 1); /* the RETURNs never applied */
    }
    rec_close_and_return(&f, &r3);
    rec_free(&r3);
    fx_teardown(&f);
}

/* ---- digest ---- */

static void apply_same(struct fixture *f, uint8_t last_byte)
{
    uint8_t p[100];
    memset(p, 'p', sizeof p);
    p[99] = last_byte;
    fx_do(f, cmd_create(BROKER_QUEUE, "q", 0, 0, 0, NULL));
    fx_do(f, cmd_bytes(BROKER_CMD_PUSH, "q", p, sizeof p, f->now));
    fx_do(f, cmd_bytes(BROKER_CMD_PUSH, "q", p, 50, f->now));
    fx_do(f, cmd_id(BROKER_CMD_ACK, "q", NULL, 2, f->now));
    fx_do(f, cmd_create(BROKER_CHANNEL, "c", 1, 0, 0, NULL));
    fx_do(f, cmd_msg(BROKER_CMD_PUBLISH, "c", "e1", f->now, 0)); /* dropped */
    fx_do(f, cmd_msg(BROKER_CMD_PUBLISH, "c", "e2", f->now, 0)); /* dropped */
    fx_do(f, cmd_msg(BROKER_CMD_PUBLISH, "c", "e3", f->now, 0));
    fx_do(f, cmd_make(BROKER_CMD_EXPIRE, NULL, f->now));
}

static void test_digest_sees_one_byte_and_ignores_history(void **state)
{
    (void)state;
    struct fixture x, y, z;
    fx_init(&x);
    fx_open(&x);
    fx_init(&y);
    y.cfg.history_max_records = 1; /* node-local: y prunes its history, x does not */
    fx_open(&y);
    fx_setup(&z);
    apply_same(&x, 'a');
    apply_same(&y, 'a');
    apply_same(&z, 'b');
    assert_int_not_equal(sql_int(&x, "SELECT count(*) FROM history"),
                         sql_int(&y, "SELECT count(*) FROM history"));
    char dx[BROKER_DIGEST_HEX], dy[BROKER_DIGEST_HEX], dz[BROKER_DIGEST_HEX];
    digest_of(&x, dx, NULL);
    digest_of(&y, dy, NULL);
    digest_of(&z, dz, NULL);
    assert_string_equal(dx, dy);
    assert_string_not_equal(dx, dz);
    /* last_applied is part of it: one more no-op entry changes the digest. */
    fx_do(&x, cmd_make(BROKER_CMD_NOOP, NULL, x.now));
    digest_of(&x, dx, NULL);
    assert_string_not_equal(dx, dy);
    fx_teardown(&x);
    fx_teardown(&y);
    fx_teardown(&z);
}

/* ---- payload sizes ---- */

struct full {
    uint64_t ids[16];
    uint8_t *payloads[16];
    uint32_t lens[16];
    size_t n;
};

static int full_deliver(void *ctx, int is_delivery, const struct broker_msg *m)
{
    struct full *f = ctx;
    if (f->n == 16 || !is_delivery)
        return FERRY_EBUSY;
    f->ids[f->n] = m->id;
    f->lens[f->n] = m->payload_len;
    f->payloads[f->n] = malloc(m->payload_len + 1);
    memcpy(f->payloads[f->n], m->payload, m->payload_len);
    f->n++;
    return 0;
}

static void full_ended(void *ctx, uint64_t handle, int code, const char *msg)
{
    (void)ctx;
    (void)handle;
    (void)code;
    (void)msg;
}

static const struct broker_client_ops full_ops = {full_deliver, full_ended};

static const uint32_t sizes[] = {0, 1, 7, 9, 100, 1023, 65537};
#define NSIZES (sizeof sizes / sizeof sizes[0])

static void fill_pattern(uint8_t *p, uint32_t n, size_t seed)
{
    for (uint32_t j = 0; j < n; j++)
        p[j] = (uint8_t)(seed * 31 + j * 7 + (j >> 8));
}

static void test_payload_sizes_survive(void **state)
{
    (void)state;
    struct fixture a, b;
    fx_setup(&a);
    fx_setup(&b);
    static uint8_t buf[65537];
    for (size_t i = 0; i < NSIZES; i++) {
        fill_pattern(buf, sizes[i], i);
        fx_do(&a, cmd_bytes(BROKER_CMD_PUSH, "sizes", buf, sizes[i], a.now));
    }
    struct mem m;
    mem_init(&m);
    snapshot_to(&a, &m, NULL);
    assert_true(m.max_piece <= BROKER_SNAPSHOT_PIECE_MAX);
    /* Read back in awkward pieces. */
    struct ferry_err err;
    int skipped;
    if (restore_from(&b, m.p, m.len, 4093, &skipped, &err) != 0)
        fail_msg("restore: %s", err.msg);
    struct full got;
    memset(&got, 0, sizeof got);
    struct broker_client *c;
    assert_int_equal(broker_client_open(b.b, &full_ops, &got, &c), 0);
    uint64_t con;
    assert_int_equal(broker_consume(c, "sizes", 100, &con, &err), 0);
    fx_pump(&b);
    assert_int_equal(got.n, NSIZES);
    for (size_t i = 0; i < NSIZES; i++) {
        assert_int_equal(got.ids[i], i + 1);
        assert_int_equal(got.lens[i], sizes[i]);
        fill_pattern(buf, sizes[i], i);
        assert_memory_equal(got.payloads[i], buf, sizes[i]);
        free(got.payloads[i]);
    }
    broker_client_close(c, b.now, NULL);
    char da[BROKER_DIGEST_HEX], db[BROKER_DIGEST_HEX];
    digest_of(&a, da, NULL);
    digest_of(&b, db, NULL);
    assert_string_equal(da, db);
    free(m.p);
    fx_teardown(&a);
    fx_teardown(&b);
}

/* ---- the read-only connection under a snapshot ---- */

static void test_readonly_store_keeps_its_view(void **state)
{
    (void)state;
    struct fixture f;
    fx_setup(&f);
    fx_do(&f, cmd_msg(BROKER_CMD_PUSH, "q", "x", f.now, BROKER_CMDF_AUTO_CREATE));
    struct ferry_err err;
    struct store *r = NULL;
    if (store_open_readonly(&r, f.path, &err) != 0)
        fail_msg("store_open_readonly: %s", err.msg);
    uint64_t idx = 0, term = 0;
    assert_int_equal(store_read_begin(r, &err), 0);
    assert_int_equal(store_last_applied(r, &idx, &term, &err), 0);
    assert_int_equal(idx, 1);
    for (int i = 0; i < 3; i++)
        fx_do(&f, cmd_msg(BROKER_CMD_PUSH, "q", "y", f.now, 0));
    assert_int_equal(store_last_applied(r, &idx, &term, &err), 0);
    assert_int_equal(idx, 1); /* still the view it started with */
    store_read_end(r);
    assert_int_equal(store_last_applied(r, &idx, &term, &err), 0);
    assert_int_equal(idx, 4);
    store_close(r);

    /* A file not in WAL mode is refused: a long read would block its writer. */
    char path[160];
    snprintf(path, sizeof path, "%s/plain.db", f.dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE t(x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(store_open_readonly(&r, path, &err), FERRY_EIO);
    assert_null(r);
    assert_non_null(strstr(err.msg, "cannot use WAL mode"));
    unlink(path);
    fx_teardown(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restore_gives_same_digest_and_state),
        cmocka_unit_test(test_restored_copy_behaves_like_the_original),
        cmocka_unit_test(test_snapshot_on_a_thread_reflects_its_index),
        cmocka_unit_test(test_snapshot_write_error_stops_and_can_retry),
        cmocka_unit_test(test_restore_skipped_when_database_is_not_older),
        cmocka_unit_test(test_malformed_streams_change_nothing),
        cmocka_unit_test(test_crafted_streams),
        cmocka_unit_test(test_storage_failure_during_restore_changes_nothing),
        cmocka_unit_test(test_restore_and_reload_refuse_open_clients),
        cmocka_unit_test(test_reload_returns_items_leased_by_nobody),
        cmocka_unit_test(test_digest_sees_one_byte_and_ignores_history),
        cmocka_unit_test(test_payload_sizes_survive),
        cmocka_unit_test(test_readonly_store_keeps_its_view),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
