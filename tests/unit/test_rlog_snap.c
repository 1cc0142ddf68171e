/* test_rlog_snap.c - chunked snapshots of the Raft disk log: the writer
 * (sequential, resent and restarted chunks, cut to size, abort), the reader
 * (random positional reads, verification, reading a pruned file), corruption,
 * injected I/O errors and crashes through the file-system seam, bounded memory
 * at open, and a writer on a second thread while the log is appended to and
 * compacted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "raft/log/log.h"
#include "util/alloc.h"

#define KiB 1024u
#define MiB (1024u * 1024u)
#define HEADER 512 /* data offset in a snapshot file (docs/raft-log.md) */

/* ---- helpers ------------------------------------------------------------ */

static char *make_dir(void)
{
    char *d = strdup("/tmp/ferry-rlogsnap-XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void remove_dir(char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *de;
    char path[1024];
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
    free(dir);
}

static int count_files(const char *dir, const char *prefix, const char *suffix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name), sl = strlen(suffix);
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 && len >= sl &&
            strcmp(de->d_name + len - sl, suffix) == 0)
            n++;
    }
    closedir(d);
    return n;
}

static int count_tmp(const char *dir)
{
    return count_files(dir, "", ".tmp");
}

static char *snap_path(const char *dir, uint64_t index, uint64_t term)
{
    static char p[1024];
    snprintf(p, sizeof p, "%s/snap-%020llu-%020llu.dat", dir, (unsigned long long)index,
             (unsigned long long)term);
    return p;
}

static off_t file_size(const char *path)
{
    struct stat s;
    assert_int_equal(stat(path, &s), 0);
    return s.st_size;
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b;
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x10;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

/* Byte `pos` of the data stream `seed`: every (seed, pos) gives its own value. */
static uint8_t data_byte(uint64_t seed, uint64_t pos)
{
    uint64_t x = (pos + 1) * 0x9E3779B97F4A7C15ull ^ seed * 0xBF58476D1CE4E5B9ull;
    x ^= x >> 31;
    return (uint8_t)(x * 0x94D049BB133111EBull >> 56);
}

static void fill(uint8_t *p, uint64_t seed, uint64_t pos, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = data_byte(seed, pos + i);
}

static uint8_t *make_data(uint64_t seed, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    fill(p, seed, 0, n);
    return p;
}

/* A deterministic xorshift for offsets and chunk sizes. */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static struct raftlog *open_log(const char *dir, uint64_t seg, uint32_t gens,
                                const struct raftlog_io *io, struct raftlog_state *st)
{
    struct raftlog_options o = {
        .dir = dir, .max_segment_bytes = seg, .max_generations = gens, .io = io};
    struct raftlog *l;
    struct ferry_err err;
    int rc = raftlog_open(&l, &o, st, &err);
    if (rc != 0)
        fail_msg("open %s: %s", dir, err.msg);
    return l;
}

static struct raft_snapshot_meta snap_meta(uint64_t index, uint64_t term)
{
    struct raft_snapshot_meta m;
    memset(&m, 0, sizeof m);
    m.index = index;
    m.term = term;
    m.size = 12345; /* ignored by the writer */
    m.config.n = 2;
    m.config.nodes[0] = (struct raft_node){.id = 1, .role = RAFT_VOTER, .priority = 3};
    m.config.nodes[1] = (struct raft_node){.id = 7, .role = RAFT_LEARNER, .priority = 0};
    return m;
}

static void append(struct raftlog *l, uint64_t from, uint32_t n, uint64_t term)
{
    struct raft_entry *e = calloc(n, sizeof *e);
    uint8_t payload[100];
    memset(payload, 0xAB, sizeof payload);
    for (uint32_t i = 0; i < n; i++) {
        e[i].index = from + i;
        e[i].term = term;
        e[i].type = RAFT_ENTRY_NORMAL;
        e[i].len = sizeof payload;
        e[i].data = payload;
    }
    struct ferry_err err;
    int rc = raftlog_append(l, 0, e, n, &err);
    free(e);
    if (rc != 0)
        fail_msg("append %llu..: %s", (unsigned long long)from, err.msg);
}

static void sync_log(struct raftlog *l)
{
    struct ferry_err err;
    if (raftlog_sync(l, &err) != 0)
        fail_msg("sync: %s", err.msg);
}

/* Write `size` bytes of stream `seed` in pieces of 1..max_chunk bytes. */
static void write_stream(struct raftlog_snapw *w, uint64_t seed, uint64_t from, uint64_t size,
                         size_t max_chunk, uint64_t *rs)
{
    uint8_t *buf = malloc(max_chunk);
    struct ferry_err err;
    for (uint64_t off = from; off < size;) {
        size_t n = 1 + (size_t)(rnd(rs) % max_chunk);
        if (n > size - off)
            n = (size_t)(size - off);
        fill(buf, seed, off, n);
        if (raftlog_snapw_write(w, off, buf, n, &err) != 0)
            fail_msg("snapw_write at %llu: %s", (unsigned long long)off, err.msg);
        off += n;
    }
    free(buf);
}

/* Store snapshot {index, term} of `size` bytes of stream `seed` through a writer. */
static void store_snapshot(struct raftlog *l, uint64_t index, uint64_t term, uint64_t seed,
                           uint64_t size)
{
    struct raft_snapshot_meta m = snap_meta(index, term);
    struct raftlog_snapw *w;
    struct ferry_err err;
    if (raftlog_snapw_open(&w, l, &m, &err) != 0)
        fail_msg("snapw_open: %s", err.msg);
    uint64_t rs = seed * 7 + 1;
    write_stream(w, seed, 0, size, 64 * KiB, &rs);
    assert_int_equal(raftlog_snapw_written(w), size);
    if (raftlog_snapw_finish(w, size, &err) != 0)
        fail_msg("snapw_finish: %s", err.msg);
}

/* The reader's data is exactly `size` bytes of stream `seed`: read it whole in
 * odd pieces, then at `n_random` random places, then past the end. */
static void check_reader(struct raftlog_snapr *r, uint64_t seed, uint64_t size, int n_random)
{
    size_t cap = 200 * KiB;
    uint8_t *buf = malloc(cap), *want = malloc(cap);
    struct ferry_err err;
    size_t got;
    for (uint64_t off = 0; off < size; off += got) {
        size_t n = 77777;
        assert_int_equal(raftlog_snapr_read(r, off, buf, n, &got, &err), 0);
        assert_int_equal(got, size - off < n ? size - off : n);
        fill(want, seed, off, got);
        if (memcmp(buf, want, got) != 0)
            fail_msg("data differs in [%llu, +%zu)", (unsigned long long)off, got);
    }
    uint64_t rs = 0x1234567 + seed;
    for (int i = 0; i < n_random && size > 0; i++) {
        uint64_t off = rnd(&rs) % size;
        size_t n = 1 + (size_t)(rnd(&rs) % cap);
        assert_int_equal(raftlog_snapr_read(r, off, buf, n, &got, &err), 0);
        assert_int_equal(got, size - off < n ? size - off : n);
        fill(want, seed, off, got);
        if (memcmp(buf, want, got) != 0)
            fail_msg("data differs in [%llu, +%zu)", (unsigned long long)off, got);
    }
    if (size >= 10) {
        assert_int_equal(raftlog_snapr_read(r, size - 10, buf, 100, &got, &err), 0);
        assert_int_equal(got, 10);
    }
    assert_int_equal(raftlog_snapr_read(r, size, buf, 100, &got, &err), 0);
    assert_int_equal(got, 0);
    assert_int_equal(raftlog_snapr_read(r, size + 5000, buf, 100, &got, &err), 0);
    assert_int_equal(got, 0);
    free(buf);
    free(want);
}

/* The newest snapshot is {index, term} with `size` bytes of stream `seed`,
 * whole and verified, through both a reader and raftlog_snapshot_load. */
static void check_newest(struct raftlog *l, uint64_t index, uint64_t term, uint64_t seed,
                         uint64_t size)
{
    struct raftlog_snapr *r;
    struct raft_snapshot_meta m;
    struct ferry_err err;
    if (raftlog_snapr_open(&r, l, 0, &m, &err) != 0)
        fail_msg("snapr_open: %s", err.msg);
    assert_int_equal(m.index, index);
    assert_int_equal(m.term, term);
    assert_int_equal(m.size, size);
    assert_int_equal(m.config.n, 2);
    assert_int_equal(m.config.nodes[1].id, 7);
    assert_int_equal(m.config.nodes[1].role, RAFT_LEARNER);
    if (raftlog_snapr_verify(r, &err) != 0)
        fail_msg("verify: %s", err.msg);
    check_reader(r, seed, size, 50);
    raftlog_snapr_close(r);
    uint8_t *data;
    uint64_t len;
    assert_int_equal(raftlog_snapshot_load(l, &m, &data, &len, &err), 0);
    assert_int_equal(len, size);
    assert_int_equal(m.index, index);
    uint8_t *want = make_data(seed, (size_t)size);
    if (size > 0)
        assert_memory_equal(data, want, (size_t)size);
    else
        assert_null(data);
    free(want);
    free(data);
}

/* ---- writer and reader --------------------------------------------------- */

static void test_chunked_write_random_reads(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    struct ferry_err err;
    struct raftlog_snapr *r;
    assert_int_equal(raftlog_snapr_open(&r, l, 0, NULL, &err), FERRY_ENOTFOUND);
    assert_non_null(strstr(err.msg, "no snapshot in"));
    assert_null(r);

    uint64_t size = 3 * MiB + 4321;
    struct raft_snapshot_meta m = snap_meta(500, 4);
    struct raftlog_snapw *w;
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
    assert_int_equal(count_tmp(dir), 1);
    uint64_t rs = 99;
    write_stream(w, 1, 0, size, 128 * KiB, &rs);
    assert_int_equal(raftlog_snapw_written(w), size);
    /* Nothing under the final name until finish. */
    assert_int_equal(access(snap_path(dir, 500, 4), F_OK), -1);
    assert_int_equal(raftlog_snapw_finish(w, size, &err), 0);
    assert_int_equal(count_tmp(dir), 0);
    assert_int_equal(file_size(snap_path(dir, 500, 4)), HEADER + size);
    check_newest(l, 500, 4, 1, size);
    /* By index, too; an index that is not stored is not found. */
    assert_int_equal(raftlog_snapr_open(&r, l, 500, &m, &err), 0);
    assert_int_equal(m.size, size);
    check_reader(r, 1, size, 200);
    raftlog_snapr_close(r);
    assert_int_equal(raftlog_snapr_open(&r, l, 499, &m, &err), FERRY_ENOTFOUND);
    assert_non_null(strstr(err.msg, "index 499"));
    raftlog_close(l);

    /* raftlog_open reports it. */
    l = open_log(dir, 0, 2, NULL, &st);
    assert_int_equal(st.p.snapshot.index, 500);
    assert_int_equal(st.p.snapshot.term, 4);
    assert_int_equal(st.p.snapshot.size, size);
    assert_int_equal(st.p.snapshot.config.n, 2);
    assert_int_equal(raftlog_last_index(l), 500);
    raftlog_state_free(&st);
    raftlog_close(l);
    remove_dir(dir);
}

static void test_resent_and_restarted_chunks(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    struct ferry_err err;
    struct raftlog_snapw *w;
    struct raft_snapshot_meta m = snap_meta(100, 2);
    const size_t C = 64 * KiB;
    uint8_t *buf = malloc(C);

    /* 1. Every chunk arrives, the last one twice, then one from the middle
     * again (its first copy was other bytes, stream 98), then the rest. */
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
    for (uint64_t i = 0; i < 5; i++) {
        fill(buf, i == 2 ? 98 : 3, i * C, C);
        assert_int_equal(raftlog_snapw_write(w, i * C, buf, C, &err), 0);
    }
    assert_int_equal(raftlog_snapw_write(w, 4 * C, buf, C, &err), 0); /* resent */
    fill(buf, 3, 2 * C, C);
    assert_int_equal(raftlog_snapw_write(w, 2 * C, buf, C, &err), 0); /* resent, older */
    for (uint64_t i = 5; i < 8; i++) {
        fill(buf, 3, i * C, C);
        assert_int_equal(raftlog_snapw_write(w, i * C, buf, C, &err), 0);
    }
    /* A chunk past the end would leave a hole: refused, the writer goes on. */
    assert_int_equal(raftlog_snapw_write(w, 8 * C + 1, buf, 10, &err), FERRY_EINVAL);
    assert_non_null(strstr(err.msg, "hole"));
    assert_non_null(strstr(err.msg, ".tmp"));
    fill(buf, 3, 8 * C, 1000);
    assert_int_equal(raftlog_snapw_write(w, 8 * C, buf, 1000, &err), 0);
    assert_int_equal(raftlog_snapw_finish(w, 8 * C + 1000, &err), 0);
    check_newest(l, 100, 2, 3, 8 * C + 1000);

    /* 2. The last chunk resent with other bytes (the first copy was stream 99),
     * then the next one: the data and checksum are the second copy's. */
    m = snap_meta(105, 2);
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
    for (uint64_t i = 0; i < 3; i++) {
        fill(buf, i == 2 ? 99 : 4, i * C, C);
        assert_int_equal(raftlog_snapw_write(w, i * C, buf, C, &err), 0);
    }
    fill(buf, 4, 2 * C, C);
    assert_int_equal(raftlog_snapw_write(w, 2 * C, buf, C, &err), 0);
    fill(buf, 4, 3 * C, C);
    assert_int_equal(raftlog_snapw_write(w, 3 * C, buf, C, &err), 0);
    assert_int_equal(raftlog_snapw_finish(w, 4 * C, &err), 0);
    check_newest(l, 105, 2, 4, 4 * C);

    /* 3. The last chunk resent shorter, then the transfer goes on from its end. */
    m = snap_meta(110, 2);
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
    for (uint64_t i = 0; i < 3; i++) {
        fill(buf, 4, i * C, C);
        assert_int_equal(raftlog_snapw_write(w, i * C, buf, C, &err), 0);
    }
    fill(buf, 4, 2 * C, 100);
    assert_int_equal(raftlog_snapw_write(w, 2 * C, buf, 100, &err), 0);
    fill(buf, 4, 2 * C + 100, 5000);
    assert_int_equal(raftlog_snapw_write(w, 2 * C + 100, buf, 5000, &err), 0);
    assert_int_equal(raftlog_snapw_written(w), 3 * C);
    assert_int_equal(raftlog_snapw_finish(w, 2 * C + 5100, &err), 0);
    check_newest(l, 110, 2, 4, 2 * C + 5100);

    /* 4. A transfer restarts from 0 with other bytes (stream 6 instead of 5)
     * and ends earlier: what the first attempt wrote past the end is cut. */
    m = snap_meta(120, 3);
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
    uint64_t rs = 5;
    write_stream(w, 5, 0, 300 * KiB, 50 * KiB, &rs);
    write_stream(w, 6, 0, 200 * KiB + 7, 50 * KiB, &rs);
    assert_int_equal(raftlog_snapw_written(w), 300 * KiB);
    assert_int_equal(raftlog_snapw_finish(w, 200 * KiB + 7, &err), 0);
    assert_int_equal(file_size(snap_path(dir, 120, 3)), HEADER + 200 * KiB + 7);
    check_newest(l, 120, 3, 6, 200 * KiB + 7);

    /* 5. A restart that stops half-way, then goes on after a resent chunk from
     * the first attempt (the checksum is then computed from the file). */
    m = snap_meta(130, 3);
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
    write_stream(w, 7, 0, 400 * KiB, 30 * KiB, &rs);
    write_stream(w, 7, 0, 100 * KiB, 30 * KiB, &rs);
    fill(buf, 7, 300 * KiB, C);
    assert_int_equal(raftlog_snapw_write(w, 300 * KiB, buf, C, &err), 0);
    write_stream(w, 7, 100 * KiB, 400 * KiB, 30 * KiB, &rs);
    assert_int_equal(raftlog_snapw_finish(w, 400 * KiB, &err), 0);
    check_newest(l, 130, 3, 7, 400 * KiB);
    raftlog_close(l);

    /* raftlog_open verifies the newest one's checksum: it holds. */
    l = open_log(dir, 0, 2, NULL, &st);
    assert_int_equal(st.p.snapshot.index, 130);
    assert_int_equal(st.p.snapshot.size, 400 * KiB);
    raftlog_state_free(&st);
    assert_int_equal(count_files(dir, "snap-", ".dat"), 2);
    raftlog_close(l);
    free(buf);
    remove_dir(dir);
}

static void test_finish_size_rules(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    struct ferry_err err;
    struct raftlog_snapw *w;
    uint64_t rs = 11;

    /* Smaller than written: the data is the prefix. */
    struct raft_snapshot_meta m = snap_meta(10, 1);
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
    write_stream(w, 8, 0, 100000, 9000, &rs);
    assert_int_equal(raftlog_snapw_finish(w, 60000, &err), 0);
    assert_int_equal(file_size(snap_path(dir, 10, 1)), HEADER + 60000);
    check_newest(l, 10, 1, 8, 60000);

    /* Empty, even after bytes were written. */
    m = snap_meta(20, 1);
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
    write_stream(w, 8, 0, 5000, 900, &rs);
    assert_int_equal(raftlog_snapw_finish(w, 0, &err), 0);
    assert_int_equal(file_size(snap_path(dir, 20, 1)), HEADER);
    check_newest(l, 20, 1, 8, 0);

    /* Larger than written: refused, and nothing is left behind. */
    m = snap_meta(30, 1);
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
    write_stream(w, 9, 0, 5000, 900, &rs);
    assert_int_equal(raftlog_snapw_finish(w, 5001, &err), FERRY_EINVAL);
    assert_non_null(strstr(err.msg, "only 5000"));
    assert_int_equal(count_tmp(dir), 0);
    assert_int_equal(access(snap_path(dir, 30, 1), F_OK), -1);
    check_newest(l, 20, 1, 8, 0);

    /* Snapshots only move forward: an older one is refused at open, and at
     * finish if a newer one was stored meanwhile. */
    m = snap_meta(19, 1);
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), FERRY_EINVAL);
    assert_non_null(strstr(err.msg, "older than the stored one (20)"));
    m = snap_meta(0, 1);
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), FERRY_EINVAL);
    m = snap_meta(40, 1);
    m.config.n = RAFT_MAX_NODES + 1;
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), FERRY_EINVAL);
    assert_non_null(strstr(err.msg, "configuration"));
    m = snap_meta(40, 1);
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
    write_stream(w, 9, 0, 5000, 900, &rs);
    store_snapshot(l, 50, 2, 10, 3000);
    assert_int_equal(raftlog_snapw_finish(w, 5000, &err), FERRY_EINVAL);
    assert_non_null(strstr(err.msg, "older than the stored one (50)"));
    assert_int_equal(count_tmp(dir), 0);
    assert_int_equal(access(snap_path(dir, 40, 1), F_OK), -1);
    check_newest(l, 50, 2, 10, 3000);
    assert_int_equal(count_files(dir, "snap-", ".dat"), 2);

    /* The same snapshot again (e.g. a retried transfer) replaces the file. */
    store_snapshot(l, 50, 2, 11, 4000);
    check_newest(l, 50, 2, 11, 4000);
    assert_int_equal(count_files(dir, "snap-", ".dat"), 2);
    assert_int_equal(access(snap_path(dir, 20, 1), F_OK), 0);
    raftlog_close(l);
    remove_dir(dir);
}

static void test_abort_keeps_previous(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    struct ferry_err err;
    store_snapshot(l, 10, 1, 20, 70000);
    struct raftlog_snapw *w;
    struct raft_snapshot_meta m = snap_meta(20, 1);
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
    uint64_t rs = 3;
    write_stream(w, 21, 0, 200000, 30000, &rs);
    assert_int_equal(count_tmp(dir), 1);
    raftlog_snapw_abort(w);
    raftlog_snapw_abort(NULL);
    assert_int_equal(count_tmp(dir), 0);
    assert_int_equal(access(snap_path(dir, 20, 1), F_OK), -1);
    assert_int_equal(count_files(dir, "snap-", ""), 1);
    check_newest(l, 10, 1, 20, 70000);
    /* Compaction still stops at the previous snapshot. */
    raftlog_close(l);
    l = open_log(dir, 0, 2, NULL, &st);
    assert_int_equal(st.p.snapshot.index, 10);
    raftlog_state_free(&st);
    raftlog_close(l);
    remove_dir(dir);
}

static void test_two_writers_of_one_snapshot(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    struct ferry_err err;
    struct raftlog_snapw *a, *b;
    struct raft_snapshot_meta m = snap_meta(7, 1);
    assert_int_equal(raftlog_snapw_open(&a, l, &m, &err), 0);
    assert_int_equal(raftlog_snapw_open(&b, l, &m, &err), 0);
    assert_int_equal(count_tmp(dir), 2); /* each has its own file */
    uint64_t rs = 8;
    write_stream(a, 30, 0, 50000, 7000, &rs);
    write_stream(b, 31, 0, 60000, 7000, &rs);
    assert_int_equal(raftlog_snapw_finish(b, 60000, &err), 0);
    check_newest(l, 7, 1, 31, 60000);
    assert_int_equal(raftlog_snapw_finish(a, 50000, &err), 0);
    check_newest(l, 7, 1, 30, 50000);
    assert_int_equal(count_tmp(dir), 0);
    assert_int_equal(count_files(dir, "snap-", ""), 1);
    raftlog_close(l);
    remove_dir(dir);
}

static void test_reader_survives_pruning(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    struct ferry_err err;
    store_snapshot(l, 10, 1, 40, 1 * MiB + 3);
    struct raftlog_snapr *r;
    struct raft_snapshot_meta m;
    assert_int_equal(raftlog_snapr_open(&r, l, 10, &m, &err), 0);
    store_snapshot(l, 20, 1, 41, 5000);
    /* The one before the newest is still there to stream. */
    struct raftlog_snapr *r20;
    assert_int_equal(raftlog_snapr_open(&r20, l, 20, &m, &err), 0);
    store_snapshot(l, 30, 2, 42, 6000);
    /* 10 is deleted by the two newer ones... */
    assert_int_equal(access(snap_path(dir, 10, 1), F_OK), -1);
    assert_int_equal(count_files(dir, "snap-", ""), 2);
    struct raftlog_snapr *gone;
    assert_int_equal(raftlog_snapr_open(&gone, l, 10, &m, &err), FERRY_ENOTFOUND);
    /* ...but its open reader reads it whole, even after the log is closed. */
    raftlog_close(l);
    check_reader(r, 40, 1 * MiB + 3, 100);
    assert_int_equal(raftlog_snapr_verify(r, &err), 0);
    raftlog_snapr_close(r);
    check_reader(r20, 41, 5000, 20);
    raftlog_snapr_close(r20);
    raftlog_snapr_close(NULL);
    remove_dir(dir);
}

static void test_corruption_is_reported(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    struct ferry_err err;
    store_snapshot(l, 10, 2, 50, 300000);
    const char *p = snap_path(dir, 10, 2);
    const char *name = "snap-00000000000000000010-00000000000000000002.dat";

    /* One data byte: the header still reads, verify names the file. */
    flip_byte(p, HEADER + 150000);
    struct raftlog_snapr *r;
    struct raft_snapshot_meta m;
    assert_int_equal(raftlog_snapr_open(&r, l, 0, &m, &err), 0);
    assert_int_equal(m.size, 300000);
    assert_int_equal(raftlog_snapr_verify(r, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, name));
    assert_non_null(strstr(err.msg, "data checksum"));
    raftlog_snapr_close(r);
    uint8_t *data = (uint8_t *)1;
    uint64_t len = 1;
    assert_int_equal(raftlog_snapshot_load(l, &m, &data, &len, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, name));
    assert_null(data);
    assert_int_equal(len, 0);
    raftlog_close(l);
    struct raftlog_options o = {.dir = dir};
    assert_int_equal(raftlog_open(&l, &o, &st, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, name));
    assert_non_null(strstr(err.msg, "data checksum"));
    flip_byte(p, HEADER + 150000);
    l = open_log(dir, 0, 2, NULL, &st);
    raftlog_state_free(&st);

    /* The header (the term field): caught at open. */
    flip_byte(p, 20);
    assert_int_equal(raftlog_snapr_open(&r, l, 0, &m, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, name));
    assert_non_null(strstr(err.msg, "header checksum"));
    flip_byte(p, 20);

    /* A file cut short. */
    assert_int_equal(truncate(p, HEADER + 299999), 0);
    assert_int_equal(raftlog_snapr_open(&r, l, 0, &m, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "299999 data bytes"));
    assert_int_equal(truncate(p, 100), 0);
    assert_int_equal(raftlog_snapr_open(&r, l, 0, &m, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "shorter than the 512-byte header"));
    raftlog_close(l);
    remove_dir(dir);
}

/* Every allocation of a writer, a reader and a load, failed in turn: each call
 * reports FERRY_ENOMEM or succeeds, nothing leaks (ASan), no temporary file is
 * left, and the newest snapshot is the old one or the new one, whole. */
static void test_out_of_memory(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    store_snapshot(l, 10, 1, 90, 3000);
    uint8_t buf[3000];
    fill(buf, 91, 0, sizeof buf);
    int completed = 0, failures = 0;
    for (long k = 0; !completed; k++) {
        struct ferry_err err;
        struct raft_snapshot_meta m = snap_meta(20, 1);
        struct raftlog_snapw *w = NULL;
        struct raftlog_snapr *r = NULL;
        uint8_t *data = NULL;
        uint64_t len;
        alloc_set_fault(k, 1);
        int rc = raftlog_snapw_open(&w, l, &m, &err);
        if (rc == 0) {
            /* Out of order, so finish allocates its read-back buffer. */
            assert_int_equal(raftlog_snapw_write(w, 0, buf, sizeof buf, &err), 0);
            assert_int_equal(raftlog_snapw_write(w, 1000, buf + 1000, 10, &err), 0);
            rc = raftlog_snapw_finish(w, sizeof buf, &err);
        }
        if (rc == 0)
            rc = raftlog_snapr_open(&r, l, 0, &m, &err);
        if (rc == 0)
            rc = raftlog_snapr_verify(r, &err);
        raftlog_snapr_close(r);
        if (rc == 0)
            rc = raftlog_snapshot_load(l, &m, &data, &len, &err);
        free(data);
        completed = alloc_faults_injected() == 0;
        alloc_set_fault(-1, 0);
        /* (A call may also succeed despite a failed allocation: deleting old
         * snapshots after a finish is best effort.) */
        if (rc != 0) {
            assert_int_equal(rc, FERRY_ENOMEM);
            assert_non_null(strstr(err.msg, "out of memory"));
            failures++;
        }
        assert_int_equal(count_tmp(dir), 0);
        struct raftlog_snapr *n;
        assert_int_equal(raftlog_snapr_open(&n, l, 0, &m, &err), 0);
        assert_int_equal(raftlog_snapr_verify(n, &err), 0);
        raftlog_snapr_close(n);
        if (m.index == 20) {
            check_newest(l, 20, 1, 91, sizeof buf);
            if (!completed) {
                /* Stored before the failure (a later step failed): go on from 10 again. */
                char *p = snap_path(dir, 20, 1);
                assert_int_equal(unlink(p), 0);
                raftlog_close(l);
                l = open_log(dir, 0, 2, NULL, &st);
            }
        } else {
            check_newest(l, 10, 1, 90, 3000);
        }
    }
    assert_true(failures >= 10); /* writer, temp name, read-back buffer, readers, load */
    raftlog_close(l);
    remove_dir(dir);
}

/* ---- the fault seam ------------------------------------------------------ */

/* A raftlog_io over POSIX that fails chosen calls, can "crash" (the process
 * dies at a chosen call: that call and every later one fail and do nothing),
 * remembers each file's contents at its last fsync/fdatasync so power loss
 * can restore them, and records the largest pread. */
struct image {
    char path[512];
    uint8_t *data;
    size_t len;
};

enum crash_point { CRASH_NONE, CRASH_PWRITE, CRASH_RENAME, CRASH_DIRSYNC };

struct fio {
    struct raftlog_io io;
    int pwrite_errno; /* non-zero: fail pwrite after pwrite_ok more successes */
    int pwrite_ok;
    int fsync_errno; /* non-zero: fail the next fsync/fdatasync of a file */
    enum crash_point crash;
    int crash_after; /* calls at the crash point that still succeed */
    int dead;
    size_t max_pread;
    long preads;
    char fd_path[256][512];
    struct image img[64];
};

static struct fio *FIO(void *ctx)
{
    return ctx;
}

static const struct raftlog_io *px(void)
{
    return raftlog_io_posix();
}

/* Does the process die at this call? */
static int crashes(struct fio *f, enum crash_point at)
{
    if (f->dead)
        return 1;
    if (f->crash != at)
        return 0;
    if (f->crash_after > 0) {
        f->crash_after--;
        return 0;
    }
    f->dead = 1;
    return 1;
}

static struct image *find_image(struct fio *f, const char *path, int create)
{
    for (int i = 0; i < 64; i++)
        if (f->img[i].path[0] && strcmp(f->img[i].path, path) == 0)
            return &f->img[i];
    if (!create)
        return NULL;
    for (int i = 0; i < 64; i++)
        if (!f->img[i].path[0]) {
            size_t n = strnlen(path, sizeof f->img[i].path - 1);
            memmove(f->img[i].path, path, n); /* path may be an fd_path of f */
            f->img[i].path[n] = '\0';
            return &f->img[i];
        }
    fail_msg("too many files");
    return NULL;
}

static void capture(struct fio *f, int fd)
{
    struct image *im = find_image(f, f->fd_path[fd], 1);
    uint64_t size = 0;
    assert_int_equal(px()->fsize(NULL, fd, &size), 0);
    free(im->data);
    im->data = malloc(size + 1);
    im->len = size;
    assert_int_equal(px()->pread(NULL, fd, im->data, size, 0), (ssize_t)size);
}

static int f_open(void *ctx, const char *path, int flags, int mode)
{
    struct fio *f = FIO(ctx);
    if (f->dead)
        return -EIO;
    int fd = px()->open(NULL, path, flags, mode);
    if (fd >= 0 && !(flags & O_DIRECTORY)) {
        assert_true(fd < 256);
        snprintf(f->fd_path[fd], sizeof f->fd_path[fd], "%s", path);
        if (find_image(f, path, 0) == NULL)
            capture(f, fd); /* what was on disk before: durable */
    }
    return fd;
}

static int f_close(void *ctx, int fd)
{
    FIO(ctx)->fd_path[fd][0] = '\0';
    return px()->close(NULL, fd); /* even when dead: the kernel closes it */
}

static ssize_t f_pread(void *ctx, int fd, void *buf, size_t n, uint64_t off)
{
    struct fio *f = FIO(ctx);
    if (f->dead)
        return -EIO;
    f->preads++;
    if (n > f->max_pread)
        f->max_pread = n;
    return px()->pread(NULL, fd, buf, n, off);
}

static ssize_t f_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off)
{
    struct fio *f = FIO(ctx);
    if (crashes(f, CRASH_PWRITE))
        return -EIO;
    if (f->pwrite_errno) {
        if (f->pwrite_ok > 0)
            f->pwrite_ok--;
        else
            return -f->pwrite_errno;
    }
    return px()->pwrite(NULL, fd, buf, n, off);
}

static int f_sync(struct fio *f, int fd, int data_only)
{
    struct stat s;
    assert_int_equal(fstat(fd, &s), 0);
    int is_dir = S_ISDIR(s.st_mode);
    if (is_dir ? crashes(f, CRASH_DIRSYNC) : f->dead)
        return -EIO;
    if (f->fsync_errno && !is_dir) {
        int e = f->fsync_errno;
        f->fsync_errno = 0;
        return -e;
    }
    int rc = data_only ? px()->fdatasync(NULL, fd) : px()->fsync(NULL, fd);
    if (rc == 0 && !is_dir)
        capture(f, fd);
    return rc;
}

static int f_fdatasync(void *ctx, int fd)
{
    return f_sync(FIO(ctx), fd, 1);
}

static int f_fsync(void *ctx, int fd)
{
    return f_sync(FIO(ctx), fd, 0);
}

static int f_ftruncate(void *ctx, int fd, uint64_t len)
{
    if (FIO(ctx)->dead)
        return -EIO;
    return px()->ftruncate(NULL, fd, len);
}

static int f_rename(void *ctx, const char *from, const char *to)
{
    struct fio *f = FIO(ctx);
    if (crashes(f, CRASH_RENAME))
        return -EIO;
    int rc = px()->rename(NULL, from, to);
    if (rc == 0) {
        struct image *old = find_image(f, to, 0);
        if (old) {
            free(old->data);
            memset(old, 0, sizeof *old);
        }
        struct image *im = find_image(f, from, 0);
        if (im)
            snprintf(im->path, sizeof im->path, "%s", to);
    }
    return rc;
}

static int f_unlink(void *ctx, const char *path)
{
    struct fio *f = FIO(ctx);
    if (f->dead)
        return -EIO;
    struct image *im = find_image(f, path, 0);
    if (im) {
        free(im->data);
        memset(im, 0, sizeof *im);
    }
    return px()->unlink(NULL, path);
}

static int f_listdir(void *ctx, const char *dir, int (*fn)(void *arg, const char *name), void *arg)
{
    if (FIO(ctx)->dead)
        return -EIO;
    return px()->listdir(NULL, dir, fn, arg);
}

static struct fio *fio_new(void)
{
    struct fio *f = calloc(1, sizeof *f);
    f->io = *px();
    f->io.ctx = f;
    f->io.open = f_open;
    f->io.close = f_close;
    f->io.pread = f_pread;
    f->io.pwrite = f_pwrite;
    f->io.fdatasync = f_fdatasync;
    f->io.fsync = f_fsync;
    f->io.ftruncate = f_ftruncate;
    f->io.rename = f_rename;
    f->io.unlink = f_unlink;
    f->io.listdir = f_listdir;
    return f;
}

/* Power loss: every file goes back to what its last sync made durable; the
 * machine restarts (the process is alive again, with no failures armed). */
static void fio_power_loss(struct fio *f)
{
    for (int i = 0; i < 64; i++) {
        struct image *im = &f->img[i];
        if (!im->path[0])
            continue;
        int fd = open(im->path, O_WRONLY | O_TRUNC);
        if (fd >= 0) {
            if (im->len)
                assert_int_equal(pwrite(fd, im->data, im->len, 0), (ssize_t)im->len);
            close(fd);
        }
    }
    f->dead = 0;
    f->crash = CRASH_NONE;
    f->pwrite_errno = 0;
    f->fsync_errno = 0;
}

static void fio_free(struct fio *f)
{
    for (int i = 0; i < 64; i++)
        free(f->img[i].data);
    free(f);
}

/* After a failed snapshot: no temporary file, the previous snapshot is the
 * newest and whole, and the log itself still takes entries. */
static void check_previous_intact(struct raftlog *l, const char *dir)
{
    assert_int_equal(count_tmp(dir), 0);
    assert_int_equal(count_files(dir, "snap-", ""), 1);
    check_newest(l, 10, 1, 60, 200000);
    assert_int_equal(raftlog_failed(l), 0);
    uint64_t next = raftlog_last_index(l) + 1;
    append(l, next, 1, 1);
    sync_log(l);
}

static void test_io_errors_keep_previous(void **state)
{
    (void)state;
    const int errs[] = {EIO, ENOSPC};
    const int want[] = {FERRY_EIO, FERRY_ENOSPC};
    for (int k = 0; k < 2; k++) {
        char *dir = make_dir();
        struct fio *f = fio_new();
        struct raftlog_state st;
        struct raftlog *l = open_log(dir, 0, 2, &f->io, &st);
        struct ferry_err err;
        append(l, 1, 5, 1);
        sync_log(l);
        store_snapshot(l, 10, 1, 60, 200000);
        struct raft_snapshot_meta m = snap_meta(20, 1);
        struct raftlog_snapw *w;
        uint8_t buf[1000];
        fill(buf, 61, 0, sizeof buf);

        /* A data write fails: reported with the file, refused afterwards. */
        assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
        assert_int_equal(raftlog_snapw_write(w, 0, buf, sizeof buf, &err), 0);
        f->pwrite_errno = errs[k];
        f->pwrite_ok = 0;
        assert_int_equal(raftlog_snapw_write(w, 1000, buf, sizeof buf, &err), want[k]);
        assert_non_null(strstr(err.msg, "pwrite"));
        assert_non_null(strstr(err.msg, "snap-00000000000000000020-00000000000000000001.dat"));
        assert_non_null(strstr(err.msg, ".tmp"));
        assert_non_null(strstr(err.msg, strerror(errs[k])));
        f->pwrite_errno = 0;
        assert_int_equal(raftlog_snapw_write(w, 1000, buf, sizeof buf, &err), want[k]);
        assert_non_null(strstr(err.msg, "failed earlier"));
        assert_int_equal(raftlog_snapw_finish(w, 1000, &err), want[k]);
        check_previous_intact(l, dir);

        /* The header write at finish fails. */
        assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
        assert_int_equal(raftlog_snapw_write(w, 0, buf, sizeof buf, &err), 0);
        f->pwrite_errno = errs[k];
        assert_int_equal(raftlog_snapw_finish(w, sizeof buf, &err), want[k]);
        assert_non_null(strstr(err.msg, "pwrite"));
        assert_non_null(strstr(err.msg, ".tmp"));
        f->pwrite_errno = 0;
        check_previous_intact(l, dir);

        /* The fsync at finish fails. */
        assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
        assert_int_equal(raftlog_snapw_write(w, 0, buf, sizeof buf, &err), 0);
        f->fsync_errno = errs[k];
        assert_int_equal(raftlog_snapw_finish(w, sizeof buf, &err), want[k]);
        assert_non_null(strstr(err.msg, "fsync"));
        assert_non_null(strstr(err.msg, ".tmp"));
        assert_non_null(strstr(err.msg, strerror(errs[k])));
        check_previous_intact(l, dir);

        /* raftlog_snapshot_save reports the same way. */
        f->fsync_errno = errs[k];
        assert_int_equal(raftlog_snapshot_save(l, &m, buf, sizeof buf, &err), want[k]);
        assert_non_null(strstr(err.msg, "fsync"));
        check_previous_intact(l, dir);
        raftlog_close(l);

        l = open_log(dir, 0, 2, &f->io, &st);
        assert_int_equal(st.p.snapshot.index, 10);
        raftlog_state_free(&st);
        raftlog_close(l);
        fio_free(f);
        remove_dir(dir);
    }
}

static void test_crash_keeps_previous(void **state)
{
    (void)state;
    /* Where the process dies, and whether the new snapshot must survive. */
    const struct {
        enum crash_point at;
        int after;
        int survives;
    } cases[] = {
        {CRASH_PWRITE, 3, 0},  /* mid-data */
        {CRASH_PWRITE, 4, 0},  /* the header */
        {CRASH_RENAME, 0, 0},  /* after the fsync, before the rename */
        {CRASH_DIRSYNC, 0, 1}, /* after the rename (directory operations are durable here) */
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char *dir = make_dir();
        struct fio *f = fio_new();
        struct raftlog_state st;
        struct raftlog *l = open_log(dir, 0, 2, &f->io, &st);
        struct ferry_err err;
        append(l, 1, 30, 1);
        sync_log(l);
        store_snapshot(l, 10, 1, 60, 200000);
        struct raft_snapshot_meta m = snap_meta(20, 1);
        struct raftlog_snapw *w;
        assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
        f->crash = cases[c].at;
        f->crash_after = cases[c].after;
        uint8_t buf[10000];
        int rc = 0;
        for (uint64_t off = 0; off < 40000 && rc == 0; off += sizeof buf) {
            fill(buf, 62, off, sizeof buf);
            rc = raftlog_snapw_write(w, off, buf, sizeof buf, &err);
        }
        if (rc == 0)
            rc = raftlog_snapw_finish(w, 40000, &err);
        else
            raftlog_snapw_abort(w); /* dies too: unlink fails */
        assert_int_equal(rc, FERRY_EIO);
        assert_true(f->dead);
        raftlog_close(l);
        fio_power_loss(f);
        if (!cases[c].survives)
            assert_true(count_tmp(dir) > 0); /* what the crash left */

        l = open_log(dir, 0, 2, &f->io, &st);
        assert_int_equal(count_tmp(dir), 0);
        if (cases[c].survives) {
            assert_int_equal(st.p.snapshot.index, 20);
            check_newest(l, 20, 1, 62, 40000);
        } else {
            assert_int_equal(st.p.snapshot.index, 10);
            check_newest(l, 10, 1, 60, 200000);
            assert_int_equal(count_files(dir, "snap-", ""), 1);
        }
        assert_int_equal(st.p.n_entries, cases[c].survives ? 10 : 20);
        raftlog_state_free(&st);
        raftlog_close(l);
        fio_free(f);
        remove_dir(dir);
    }
}

static void test_open_and_finish_stream_in_bounded_memory(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct fio *f = fio_new();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, &f->io, &st);
    struct ferry_err err;
    /* In order: finish has the checksum already and reads nothing back. */
    f->preads = 0;
    store_snapshot(l, 10, 1, 70, 8 * MiB);
    assert_int_equal(f->preads, 0);
    /* A resent last chunk, a transfer restarted from 0 and a final size
     * below what was written keep it too. */
    struct raftlog_snapw *w;
    struct raft_snapshot_meta m = snap_meta(15, 1);
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
    uint64_t rs = 77;
    write_stream(w, 72, 0, 1 * MiB - 1000, 64 * KiB, &rs);
    uint8_t piece[1000];
    fill(piece, 72, 1 * MiB - 1000, sizeof piece);
    assert_int_equal(raftlog_snapw_write(w, 1 * MiB - 1000, piece, sizeof piece, &err), 0);
    assert_int_equal(raftlog_snapw_write(w, 1 * MiB - 1000, piece, sizeof piece, &err), 0);
    write_stream(w, 73, 0, 512 * KiB, 64 * KiB, &rs);
    assert_int_equal(raftlog_snapw_finish(w, 512 * KiB, &err), 0);
    assert_int_equal(f->preads, 0);
    check_newest(l, 15, 1, 73, 512 * KiB);
    /* Out of order: the checksum is read back, in bounded pieces. */
    m = snap_meta(20, 1);
    assert_int_equal(raftlog_snapw_open(&w, l, &m, &err), 0);
    write_stream(w, 71, 0, 6 * MiB, 64 * KiB, &rs);
    write_stream(w, 71, 2 * MiB, 3 * MiB, 64 * KiB, &rs);
    f->max_pread = 0;
    f->preads = 0;
    assert_int_equal(raftlog_snapw_finish(w, 6 * MiB, &err), 0);
    assert_true(f->preads > 0);
    assert_true(f->max_pread <= 256 * KiB);
    raftlog_close(l);

    /* raftlog_open verifies the 6 MiB snapshot through a 256 KiB buffer. */
    f->max_pread = 0;
    l = open_log(dir, 0, 2, &f->io, &st);
    assert_int_equal(st.p.snapshot.index, 20);
    assert_int_equal(st.p.snapshot.size, 6 * MiB);
    assert_true(f->max_pread > 0 && f->max_pread <= 256 * KiB);
    raftlog_state_free(&st);
    check_newest(l, 20, 1, 71, 6 * MiB);
    raftlog_close(l);
    fio_free(f);
    remove_dir(dir);
}

/* ---- a writer on another thread ------------------------------------------ */

struct bg_writer {
    struct raftlog *l;
    uint64_t index, term, seed, size;
    atomic_int finishing; /* set just before raftlog_snapw_finish */
    atomic_int done;
    int rc;
    char msg[FERRY_ERRMSG_MAX];
};

static void *bg_write(void *arg)
{
    struct bg_writer *b = arg;
    struct raft_snapshot_meta m = snap_meta(b->index, b->term);
    struct raftlog_snapw *w;
    struct ferry_err err;
    int rc = raftlog_snapw_open(&w, b->l, &m, &err);
    if (rc == 0) {
        size_t cap = 64 * KiB;
        uint8_t *buf = malloc(cap);
        for (uint64_t off = 0; off < b->size && rc == 0; off += cap) {
            size_t n = b->size - off < cap ? (size_t)(b->size - off) : cap;
            fill(buf, b->seed, off, n);
            rc = raftlog_snapw_write(w, off, buf, n, &err);
        }
        free(buf);
        atomic_store(&b->finishing, 1);
        if (rc == 0)
            rc = raftlog_snapw_finish(w, b->size, &err);
        else
            raftlog_snapw_abort(w);
    }
    b->rc = rc;
    if (rc != 0)
        snprintf(b->msg, sizeof b->msg, "%s", err.msg);
    atomic_store(&b->done, 1);
    return NULL;
}

static void test_writer_thread_with_appends_and_compaction(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    /* 16 records of 125 bytes per segment; compaction keeps no extra one. */
    struct raftlog *l = open_log(dir, 2000, 0, NULL, &st);
    struct ferry_err err;
    append(l, 1, 400, 1);
    sync_log(l);
    store_snapshot(l, 100, 1, 80, 300000);
    assert_int_equal(raftlog_compact(l, 400, &err), 0);
    assert_int_equal(raftlog_first_index(l), 97); /* 97..112 holds 100 */

    struct bg_writer b = {.l = l, .index = 400, .term = 1, .seed = 81, .size = 8 * MiB};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, bg_write, &b), 0);
    struct raftlog_snapr *old;
    struct raft_snapshot_meta m;
    assert_int_equal(raftlog_snapr_open(&old, l, 100, &m, &err), 0);
    uint64_t next = 401, rs = 5;
    int rounds = 0, rounds_after = 0;
    uint8_t got_buf[4096], want[4096];
    while (rounds_after < 3) {
        int done = atomic_load(&b.done);
        append(l, next, 16, 1);
        next += 16;
        sync_log(l);
        int finishing = atomic_load(&b.finishing);
        /* The newest snapshot is the old one until the writer finishes. */
        struct raftlog_snapr *r;
        assert_int_equal(raftlog_snapr_open(&r, l, 0, &m, &err), 0);
        if (!finishing)
            assert_int_equal(m.index, 100);
        if (done)
            assert_int_equal(m.index, 400);
        raftlog_snapr_close(r);
        /* Compaction never passes a snapshot that is not finished. */
        assert_int_equal(raftlog_compact(l, next - 1, &err), 0);
        if (!finishing)
            assert_int_equal(raftlog_first_index(l), 97);
        /* The previous snapshot streams on meanwhile. */
        uint64_t off = rnd(&rs) % (300000 - sizeof got_buf);
        size_t got;
        assert_int_equal(raftlog_snapr_read(old, off, got_buf, sizeof got_buf, &got, &err), 0);
        assert_int_equal(got, sizeof got_buf);
        fill(want, 80, off, sizeof want);
        assert_memory_equal(got_buf, want, sizeof want);
        rounds++;
        if (done)
            rounds_after++;
    }
    assert_int_equal(pthread_join(t, NULL), 0);
    if (b.rc != 0)
        fail_msg("writer thread: %s", b.msg);
    print_message("# %d rounds of append+sync+compact while the snapshot was written\n", rounds);
    /* Now compaction uses snapshot 400: the segment 385..400 went too. */
    assert_int_equal(raftlog_compact(l, next - 1, &err), 0);
    assert_int_equal(raftlog_first_index(l), 401);
    assert_int_equal(raftlog_snapr_verify(old, &err), 0);
    raftlog_snapr_close(old);
    check_newest(l, 400, 1, 81, 8 * MiB);
    assert_int_equal(count_tmp(dir), 0);
    assert_int_equal(count_files(dir, "snap-", ""), 2);
    raftlog_close(l);

    l = open_log(dir, 2000, 0, NULL, &st);
    assert_int_equal(st.p.snapshot.index, 400);
    assert_int_equal(st.p.snapshot.size, 8 * MiB);
    assert_int_equal(st.first_index, 401);
    assert_int_equal(st.p.n_entries, next - 401);
    assert_int_equal(st.p.entries[0].index, 401);
    assert_int_equal(st.p.entries[st.p.n_entries - 1].index, next - 1);
    raftlog_state_free(&st);
    raftlog_close(l);
    remove_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_chunked_write_random_reads),
        cmocka_unit_test(test_resent_and_restarted_chunks),
        cmocka_unit_test(test_finish_size_rules),
        cmocka_unit_test(test_abort_keeps_previous),
        cmocka_unit_test(test_two_writers_of_one_snapshot),
        cmocka_unit_test(test_reader_survives_pruning),
        cmocka_unit_test(test_corruption_is_reported),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_io_errors_keep_previous),
        cmocka_unit_test(test_crash_keeps_previous),
        cmocka_unit_test(test_open_and_finish_stream_in_bounded_memory),
        cmocka_unit_test(test_writer_thread_with_appends_and_compaction),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
