/* test_rlog.c - the Raft disk log: CRC32C, round trips, segments, truncation,
 * compaction, term/vote, snapshots, torn tails, corruption, injected I/O
 * errors and power loss through the file-system seam. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "raft/log/log.h"
#include "util/crc32c.h"

/* ---- helpers ------------------------------------------------------------ */

static const uint32_t sizes[] = {0, 1, 7, 9, 100, 1023, 70000};
#define N_SIZES (sizeof sizes / sizeof sizes[0])

static char *make_dir(void)
{
    char *d = strdup("/tmp/ferry-rlog-XXXXXX");
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

static uint8_t payload_byte(uint64_t index, uint64_t term, uint32_t k)
{
    return (uint8_t)(index * 31 + term * 7 + k);
}

/* Entries [from, from+n) of `term`; payload sizes from `size` (or sizes[] if 0xFFFFFFFF). */
static struct raft_entry *make_entries(uint64_t from, uint32_t n, uint64_t term, uint32_t size)
{
    struct raft_entry *e = calloc(n, sizeof *e);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t idx = from + i;
        e[i].index = idx;
        e[i].term = term;
        e[i].type = idx % 5 == 0 ? RAFT_ENTRY_NOOP : RAFT_ENTRY_NORMAL;
        e[i].len = size == UINT32_MAX ? sizes[idx % N_SIZES] : size;
        if (e[i].len) {
            e[i].data = malloc(e[i].len);
            for (uint32_t k = 0; k < e[i].len; k++)
                e[i].data[k] = payload_byte(idx, term, k);
        }
    }
    return e;
}

static void free_entries(struct raft_entry *e, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        free(e[i].data);
    free(e);
}

static void append(struct raftlog *l, uint64_t persist_from, uint64_t from, uint32_t n,
                   uint64_t term, uint32_t size)
{
    struct raft_entry *e = make_entries(from, n, term, size);
    struct ferry_err err;
    int rc = raftlog_append(l, persist_from, e, n, &err);
    if (rc != 0)
        fail_msg("append %llu..: %s", (unsigned long long)from, err.msg);
    free_entries(e, n);
}

static void sync_log(struct raftlog *l)
{
    struct ferry_err err;
    int rc = raftlog_sync(l, &err);
    if (rc != 0)
        fail_msg("sync: %s", err.msg);
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

static int open_fails(const char *dir, struct ferry_err *err)
{
    struct raftlog_options o = {.dir = dir, .max_segment_bytes = 4096, .max_generations = 1};
    struct raftlog *l = NULL;
    struct raftlog_state st;
    int rc = raftlog_open(&l, &o, &st, err);
    assert_null(l);
    assert_int_equal(st.p.n_entries, 0);
    return rc;
}

/* st holds exactly from..to; entries below `split` have term t1, the rest t2. */
static void check_state(const struct raftlog_state *st, uint64_t from, uint64_t to, uint64_t split,
                        uint64_t t1, uint64_t t2, uint32_t size)
{
    assert_int_equal(st->p.n_entries, to >= from ? to - from + 1 : 0);
    for (uint32_t i = 0; i < st->p.n_entries; i++) {
        const struct raft_entry *e = &st->p.entries[i];
        uint64_t idx = from + i, term = idx < split ? t1 : t2;
        assert_int_equal(e->index, idx);
        assert_int_equal(e->term, term);
        assert_int_equal(e->type, idx % 5 == 0 ? RAFT_ENTRY_NOOP : RAFT_ENTRY_NORMAL);
        uint32_t len = size == UINT32_MAX ? sizes[idx % N_SIZES] : size;
        assert_int_equal(e->len, len);
        for (uint32_t k = 0; k < len; k++)
            if (e->data[k] != payload_byte(idx, term, k))
                fail_msg("entry %llu byte %u differs", (unsigned long long)idx, k);
    }
}

static int count_files(const char *dir, const char *prefix)
{
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL)
        if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
            n++;
    closedir(d);
    return n;
}

static char *seg_path(const char *dir, uint64_t first)
{
    static char p[1024];
    snprintf(p, sizeof p, "%s/seg-%020llu.log", dir, (unsigned long long)first);
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

/* ---- crc32c ------------------------------------------------------------- */

static void test_crc32c_vectors(void **state)
{
    (void)state;
    assert_int_equal(crc32c("123456789", 9), 0xE3069283u);
    assert_int_equal(crc32c_extend_sw(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(crc32c("", 0), 0);
    uint8_t buf[32];
    memset(buf, 0, sizeof buf);
    assert_int_equal(crc32c(buf, 32), 0x8A9136AAu); /* RFC 3720 B.4 */
    memset(buf, 0xFF, sizeof buf);
    assert_int_equal(crc32c(buf, 32), 0x62A8AB43u);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)i;
    assert_int_equal(crc32c(buf, 32), 0x46DD794Eu);
    for (int i = 0; i < 32; i++)
        buf[i] = (uint8_t)(31 - i);
    assert_int_equal(crc32c(buf, 32), 0x113FDB5Cu);
}

static void test_crc32c_paths_agree(void **state)
{
    (void)state;
    uint8_t buf[1000];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    for (size_t n = 0; n < sizeof buf; n += 37) {
        uint32_t whole = crc32c(buf, n);
        assert_int_equal(whole, crc32c_extend_sw(0, buf, n));
        for (size_t cut = 0; cut <= n; cut += 13)
            assert_int_equal(whole, crc32c_extend(crc32c(buf, cut), buf + cut, n - cut));
    }
}

/* ---- round trip, segments ------------------------------------------------ */

static void test_round_trip_odd_sizes(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    assert_int_equal(st.p.n_entries, 0);
    assert_int_equal(st.p.term, 0);
    assert_int_equal(raftlog_last_index(l), 0);
    raftlog_state_free(&st);
    for (uint64_t i = 1; i <= 70; i += 10)
        append(l, 0, i, 10, 3, UINT32_MAX);
    sync_log(l);
    assert_int_equal(raftlog_last_index(l), 70);
    assert_int_equal(raftlog_last_term(l), 3);
    raftlog_close(l);

    l = open_log(dir, 0, 2, NULL, &st);
    assert_int_equal(st.torn_bytes, 0);
    check_state(&st, 1, 70, 0, 3, 3, UINT32_MAX);
    assert_int_equal(raftlog_last_index(l), 70);
    assert_int_equal(raftlog_first_index(l), 1);

    /* The state is exactly what raft_restore accepts. */
    struct raft_options o;
    raft_options_default(&o);
    o.id = 1;
    struct raft_config c = {.n = 1, .nodes = {{.id = 1, .role = RAFT_VOTER, .priority = 1}}};
    struct raft *r;
    struct ferry_err err;
    assert_int_equal(raft_init(&r, &o, &c, &err), 0);
    assert_int_equal(raft_restore(r, &st.p, &err), 0);
    assert_int_equal(raft_last_index(r), 70);
    raft_close(r);

    raftlog_state_free(&st);
    raftlog_close(l);
    remove_dir(dir);
}

static void test_rollover_many_segments(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 4096, 2, NULL, &st);
    for (uint64_t i = 1; i <= 500; i += 25)
        append(l, 0, i, 25, 1, 100);
    /* An entry larger than a segment gets a segment of its own. */
    append(l, 0, 501, 1, 1, 70000);
    append(l, 0, 502, 9, 1, 100);
    sync_log(l);
    uint32_t segs = raftlog_segment_count(l);
    raftlog_close(l);
    assert_true(segs > 15);
    assert_int_equal(count_files(dir, "seg-"), segs);
    /* 4096 / 125-byte records = 32 records per segment. */
    assert_int_equal(file_size(seg_path(dir, 1)), 32 * 125);
    assert_int_equal(file_size(seg_path(dir, 33)), 32 * 125);
    assert_int_equal(file_size(seg_path(dir, 501)), 70000 + 25);

    l = open_log(dir, 4096, 2, NULL, &st);
    assert_int_equal(st.n_segments, segs);
    assert_int_equal(st.p.n_entries, 510);
    struct raftlog_state head = st;
    head.p.n_entries = 500;
    check_state(&head, 1, 500, 0, 1, 1, 100);
    assert_int_equal(st.p.entries[500].len, 70000);
    raftlog_state_free(&st);
    /* Appending continues in the newest segment after reopen. */
    append(l, 0, 511, 1, 2, 100);
    sync_log(l);
    raftlog_close(l);
    l = open_log(dir, 4096, 2, NULL, &st);
    assert_int_equal(st.p.n_entries, 511);
    assert_int_equal(st.p.entries[510].term, 2);
    raftlog_state_free(&st);
    raftlog_close(l);
    remove_dir(dir);
}

static void test_append_refuses_gap_and_term_regression(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    append(l, 0, 1, 5, 2, 10);
    struct raft_entry *e = make_entries(7, 1, 2, 10);
    struct ferry_err err;
    assert_int_equal(raftlog_append(l, 0, e, 1, &err), FERRY_EINVAL);
    assert_non_null(strstr(err.msg, "does not follow"));
    free_entries(e, 1);
    e = make_entries(6, 1, 1, 10);
    assert_int_equal(raftlog_append(l, 0, e, 1, &err), FERRY_EINVAL);
    free_entries(e, 1);
    assert_int_equal(raftlog_failed(l), 0);
    append(l, 0, 6, 1, 2, 10);
    raftlog_close(l);
    remove_dir(dir);
}

/* ---- truncation (persist_from) ----------------------------------------- */

static void test_truncate_suffix_then_append(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 1024, 2, NULL, &st);
    append(l, 0, 1, 100, 1, 100); /* 8 records per segment */
    sync_log(l);
    assert_int_equal(raftlog_segment_count(l), 13);
    /* A new leader overwrites from 40 (inside a closed segment). */
    append(l, 40, 40, 21, 2, 100);
    sync_log(l);
    assert_int_equal(raftlog_last_index(l), 60);
    raftlog_close(l);
    assert_int_equal(count_files(dir, "seg-"), 8); /* 1..64 in 8 segments, 57..60 in the last */

    l = open_log(dir, 1024, 2, NULL, &st);
    check_state(&st, 1, 60, 40, 1, 2, 100);
    raftlog_state_free(&st);
    /* Truncation at a segment boundary, then the same index again. */
    append(l, 57, 57, 2, 3, 100);
    append(l, 58, 58, 3, 3, 100);
    sync_log(l);
    struct ferry_err err;
    assert_int_equal(raftlog_truncate(l, 61, &err), 0); /* past the end: nothing */
    raftlog_close(l);
    l = open_log(dir, 1024, 2, NULL, &st);
    assert_int_equal(st.p.n_entries, 60);
    assert_int_equal(st.p.entries[56].term, 3);
    assert_int_equal(st.p.entries[59].term, 3);
    raftlog_state_free(&st);
    /* Truncating everything leaves an empty log that accepts the next index. */
    assert_int_equal(raftlog_truncate(l, 1, &err), 0);
    assert_int_equal(raftlog_segment_count(l), 0);
    append(l, 0, 1, 3, 4, 100);
    sync_log(l);
    raftlog_close(l);
    l = open_log(dir, 1024, 2, NULL, &st);
    check_state(&st, 1, 3, 0, 4, 4, 100);
    raftlog_state_free(&st);
    raftlog_close(l);
    remove_dir(dir);
}

/* ---- compaction and snapshots ------------------------------------------- */

static struct raft_snapshot_meta snap_meta(uint64_t index, uint64_t term)
{
    struct raft_snapshot_meta m;
    memset(&m, 0, sizeof m);
    m.index = index;
    m.term = term;
    m.config.n = 2;
    m.config.nodes[0] = (struct raft_node){.id = 1, .role = RAFT_VOTER, .priority = 3};
    m.config.nodes[1] = (struct raft_node){.id = 7, .role = RAFT_LEARNER, .priority = 0};
    return m;
}

static void test_compaction_keeps_generations(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 1000, 2, NULL, &st);
    append(l, 0, 1, 200, 1, 100); /* 8 records of 125 B per segment: 25 segments */
    sync_log(l);
    assert_int_equal(raftlog_segment_count(l), 25);
    struct raft_snapshot_meta m = snap_meta(150, 1);
    struct ferry_err err;
    assert_int_equal(raftlog_snapshot_save(l, &m, "state", 5, &err), 0);
    /* Segments 1..144 (18 of them) lie wholly at or below 150; 2 are kept. */
    assert_int_equal(raftlog_compact(l, 150, &err), 0);
    assert_int_equal(raftlog_segment_count(l), 25 - 16);
    assert_int_equal(raftlog_first_index(l), 129);
    assert_int_equal(count_files(dir, "seg-"), 9);
    assert_int_equal(access(seg_path(dir, 121), F_OK), -1);
    assert_int_equal(access(seg_path(dir, 129), F_OK), 0);
    /* Compacting again changes nothing, and nothing past the snapshot goes. */
    assert_int_equal(raftlog_compact(l, 150, &err), 0);
    assert_int_equal(raftlog_segment_count(l), 9);
    assert_int_equal(raftlog_compact(l, 1000, &err), 0);
    assert_int_equal(raftlog_segment_count(l), 9);
    raftlog_close(l);

    l = open_log(dir, 1000, 2, NULL, &st);
    assert_int_equal(st.p.snapshot.index, 150);
    assert_int_equal(st.first_index, 129);
    check_state(&st, 151, 200, 0, 1, 1, 100);
    raftlog_state_free(&st);
    /* A later snapshot lets compaction go further; the open segment always stays. */
    m = snap_meta(200, 1);
    assert_int_equal(raftlog_snapshot_save(l, &m, "state", 5, &err), 0);
    assert_int_equal(raftlog_compact(l, 200, &err), 0);
    assert_int_equal(raftlog_segment_count(l), 3); /* 177..184, 185..192 kept; 193..200 open */
    raftlog_close(l);

    l = open_log(dir, 1000, 2, NULL, &st);
    assert_int_equal(st.p.snapshot.index, 200);
    assert_int_equal(st.first_index, 177);
    assert_int_equal(st.p.n_entries, 0);
    raftlog_state_free(&st);
    append(l, 0, 201, 1, 2, 100);
    sync_log(l);
    raftlog_close(l);
    l = open_log(dir, 1000, 2, NULL, &st);
    check_state(&st, 201, 201, 0, 2, 2, 100);
    raftlog_state_free(&st);
    raftlog_close(l);
    remove_dir(dir);
}

static void test_snapshot_save_load_keeps_two(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    struct ferry_err err;
    uint8_t *data;
    uint64_t len;
    struct raft_snapshot_meta got;
    assert_int_equal(raftlog_snapshot_load(l, &got, &data, &len, &err), FERRY_ENOTFOUND);
    append(l, 0, 1, 40, 1, 10);
    append(l, 0, 41, 10, 2, 10);
    sync_log(l);
    char big[100000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 13);
    struct raft_snapshot_meta m10 = snap_meta(10, 1), m20 = snap_meta(20, 1),
                              m45 = snap_meta(45, 2);
    assert_int_equal(raftlog_snapshot_save(l, &m10, "ten", 3, &err), 0);
    assert_int_equal(raftlog_snapshot_save(l, &m20, NULL, 0, &err), 0);
    assert_int_equal(raftlog_snapshot_save(l, &m45, big, sizeof big, &err), 0);
    assert_int_equal(raftlog_snapshot_save(l, &m10, "old", 3, &err), FERRY_EINVAL);
    assert_int_equal(count_files(dir, "snap-"), 2);
    char p[1024];
    snprintf(p, sizeof p, "%s/snap-%020d-%020d.dat", dir, 20, 1);
    assert_int_equal(access(p, F_OK), 0);
    assert_int_equal(raftlog_snapshot_load(l, &got, &data, &len, &err), 0);
    assert_int_equal(len, sizeof big);
    assert_memory_equal(data, big, sizeof big);
    free(data);
    assert_int_equal(got.index, 45);
    assert_int_equal(got.term, 2);
    assert_int_equal(got.size, sizeof big);
    assert_int_equal(got.config.n, 2);
    assert_int_equal(got.config.nodes[1].id, 7);
    assert_int_equal(got.config.nodes[1].role, RAFT_LEARNER);
    assert_int_equal(got.config.nodes[0].priority, 3);
    raftlog_close(l);

    l = open_log(dir, 0, 2, NULL, &st);
    assert_int_equal(st.p.snapshot.index, 45);
    assert_int_equal(st.p.snapshot.size, sizeof big);
    assert_int_equal(st.p.snapshot.config.n, 2);
    check_state(&st, 46, 50, 0, 2, 2, 10);
    raftlog_state_free(&st);
    raftlog_close(l);

    /* A damaged snapshot is never used silently. */
    snprintf(p, sizeof p, "%s/snap-%020d-%020d.dat", dir, 45, 2);
    flip_byte(p, 5000);
    assert_int_equal(open_fails(dir, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "snap-00000000000000000045"));
    assert_non_null(strstr(err.msg, "data checksum"));
    remove_dir(dir);
}

static void test_installed_snapshot_replaces_stale_log(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 1000, 1, NULL, &st);
    append(l, 0, 1, 30, 1, 100);
    sync_log(l);
    /* A leader's snapshot at 40 (term 3) arrives; the node stops before reset. */
    struct raft_snapshot_meta m = snap_meta(40, 3);
    struct ferry_err err;
    assert_int_equal(raftlog_snapshot_save(l, &m, "x", 1, &err), 0);
    raftlog_close(l);
    l = open_log(dir, 1000, 1, NULL, &st);
    assert_int_equal(st.p.snapshot.index, 40);
    assert_int_equal(st.p.n_entries, 0);
    assert_int_equal(raftlog_segment_count(l), 0);
    assert_int_equal(raftlog_last_index(l), 40);
    raftlog_state_free(&st);
    append(l, 0, 41, 5, 3, 100);
    sync_log(l);
    /* The same through raftlog_reset. */
    m = snap_meta(60, 4);
    assert_int_equal(raftlog_snapshot_save(l, &m, "y", 1, &err), 0);
    assert_int_equal(raftlog_reset(l, &err), 0);
    assert_int_equal(count_files(dir, "seg-"), 0);
    append(l, 0, 61, 5, 4, 100);
    sync_log(l);
    raftlog_close(l);
    l = open_log(dir, 1000, 1, NULL, &st);
    check_state(&st, 61, 65, 0, 4, 4, 100);
    raftlog_state_free(&st);
    raftlog_close(l);
    remove_dir(dir);
}

/* ---- term and vote ------------------------------------------------------ */

static void test_vote_atomic_slots(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct ferry_err err;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    assert_int_equal(raftlog_save_vote(l, 5, 2, &err), 0); /* seq 2: slot at 512 */
    assert_int_equal(raftlog_save_vote(l, 6, 3, &err), 0); /* seq 3: slot at 0 */
    raftlog_close(l);
    l = open_log(dir, 0, 2, NULL, &st);
    assert_int_equal(st.p.term, 6);
    assert_int_equal(st.p.vote, 3);
    raftlog_close(l);

    /* A torn write of the newest slot: the previous state survives. */
    char p[1024];
    snprintf(p, sizeof p, "%s/meta", dir);
    flip_byte(p, 20);
    l = open_log(dir, 0, 2, NULL, &st);
    assert_int_equal(st.p.term, 5);
    assert_int_equal(st.p.vote, 2);
    /* The next save goes to the damaged slot's neighbour... and then over it. */
    assert_int_equal(raftlog_save_vote(l, 7, 0, &err), 0);
    raftlog_close(l);
    l = open_log(dir, 0, 2, NULL, &st);
    assert_int_equal(st.p.term, 7);
    assert_int_equal(st.p.vote, 0);
    raftlog_close(l);

    /* Both slots damaged: refuse to guess. */
    flip_byte(p, 20);
    flip_byte(p, 512 + 20);
    assert_int_equal(open_fails(dir, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "meta"));
    assert_non_null(strstr(err.msg, "both"));
    remove_dir(dir);
}

/* ---- torn tails and corruption ----------------------------------------- */

static void test_torn_tail_cut_mid_record(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    append(l, 0, 1, 20, 1, 100);
    sync_log(l);
    raftlog_close(l);
    assert_int_equal(truncate(seg_path(dir, 1), 20 * 125 - 10), 0);
    l = open_log(dir, 0, 2, NULL, &st);
    assert_int_equal(st.torn_bytes, 115);
    check_state(&st, 1, 19, 0, 1, 1, 100);
    raftlog_state_free(&st);
    assert_int_equal(file_size(seg_path(dir, 1)), 19 * 125);
    append(l, 0, 20, 2, 2, 100);
    sync_log(l);
    raftlog_close(l);
    l = open_log(dir, 0, 2, NULL, &st);
    assert_int_equal(st.torn_bytes, 0);
    check_state(&st, 1, 21, 20, 1, 2, 100);
    raftlog_state_free(&st);
    raftlog_close(l);

    /* Cut inside the header of the last record. */
    assert_int_equal(truncate(seg_path(dir, 1), 20 * 125 + 3), 0);
    l = open_log(dir, 0, 2, NULL, &st);
    assert_int_equal(st.torn_bytes, 3);
    assert_int_equal(st.p.n_entries, 20);
    raftlog_state_free(&st);
    raftlog_close(l);
    remove_dir(dir);
}

static void test_torn_tail_bad_crc_last_record(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 4096, 2, NULL, &st);
    append(l, 0, 1, 40, 1, 100); /* segments 1..32 and 33..40 */
    sync_log(l);
    raftlog_close(l);
    flip_byte(seg_path(dir, 33), 7 * 125 + 60);
    l = open_log(dir, 4096, 2, NULL, &st);
    assert_int_equal(st.torn_bytes, 125);
    check_state(&st, 1, 39, 0, 1, 1, 100);
    raftlog_state_free(&st);
    raftlog_close(l);
    remove_dir(dir);
}

static void test_corrupt_record_followed_by_valid_data(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    append(l, 0, 1, 20, 1, 100);
    sync_log(l);
    raftlog_close(l);
    flip_byte(seg_path(dir, 1), 5 * 125 + 30);
    struct ferry_err err;
    assert_int_equal(open_fails(dir, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "seg-00000000000000000001.log"));
    assert_non_null(strstr(err.msg, "offset 625"));
    assert_non_null(strstr(err.msg, "followed by valid records"));
    /* A damaged length field is caught the same way. */
    flip_byte(seg_path(dir, 1), 5 * 125 + 30);
    flip_byte(seg_path(dir, 1), 5 * 125 + 1);
    assert_int_equal(open_fails(dir, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "offset 625"));
    remove_dir(dir);
}

static void test_corrupt_earlier_segment(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 4096, 2, NULL, &st);
    append(l, 0, 1, 40, 1, 100);
    sync_log(l);
    raftlog_close(l);
    /* The last record of a closed segment: a tail, but not THE tail. */
    flip_byte(seg_path(dir, 1), 31 * 125 + 40);
    struct ferry_err err;
    assert_int_equal(open_fails(dir, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "seg-00000000000000000001.log"));
    assert_non_null(strstr(err.msg, "offset 3875"));
    assert_non_null(strstr(err.msg, "closed segment"));
    /* The file is untouched: nothing was truncated. */
    assert_int_equal(file_size(seg_path(dir, 1)), 32 * 125);
    remove_dir(dir);
}

static void test_index_gap_is_corrupt(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 1000, 2, NULL, &st);
    append(l, 0, 1, 40, 1, 100); /* segments at 1, 9, 17, 25, 33 */
    sync_log(l);
    raftlog_close(l);
    assert_int_equal(unlink(seg_path(dir, 17)), 0);
    struct ferry_err err;
    assert_int_equal(open_fails(dir, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "seg-00000000000000000009.log ends at entry 16"));
    assert_non_null(strstr(err.msg, "starts at 25"));
    /* A log that does not start at 1 with no snapshot is missing entries too. */
    assert_int_equal(unlink(seg_path(dir, 1)), 0);
    assert_int_equal(unlink(seg_path(dir, 9)), 0);
    assert_int_equal(open_fails(dir, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "starts at entry 25"));
    remove_dir(dir);
}

static void test_wrong_index_inside_segment_is_corrupt(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, NULL, &st);
    append(l, 0, 1, 5, 1, 10);
    sync_log(l);
    raftlog_close(l);
    /* A file whose name claims a different first index. */
    char to[1024];
    snprintf(to, sizeof to, "%s", seg_path(dir, 2));
    assert_int_equal(rename(seg_path(dir, 1), to), 0);
    struct ferry_err err;
    assert_int_equal(open_fails(dir, &err), FERRY_ECORRUPT);
    assert_non_null(strstr(err.msg, "has index 1, expected 2"));
    remove_dir(dir);
}

/* ---- the fault seam ------------------------------------------------------ */

/* A raftlog_io over POSIX that fails chosen calls, and remembers each file's
 * contents at its last fsync/fdatasync so "power loss" can restore them. */
struct image {
    char path[512];
    uint8_t *data;
    size_t len;
};

struct fio {
    struct raftlog_io io;
    int pwrite_errno; /* non-zero: fail pwrite after pwrite_ok more successes */
    int pwrite_ok;
    int short_first; /* the failing pwrite first writes half and returns that */
    int sync_errno;  /* non-zero: fail fdatasync after sync_ok more successes */
    int sync_ok;
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
            memmove(f->img[i].path, path, n); /* path may alias another image's name */
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
    int fd = px()->open(NULL, path, flags, mode);
    if (fd >= 0 && !(flags & O_DIRECTORY)) {
        assert_true(fd < 256);
        snprintf(f->fd_path[fd], sizeof f->fd_path[fd], "%s", path);
        if (find_image(f, path, 0) == NULL)
            capture(f, fd); /* what was on disk before: durable */
    }
    return fd;
}

static ssize_t f_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off)
{
    struct fio *f = FIO(ctx);
    if (f->pwrite_errno) {
        if (f->pwrite_ok > 0) {
            f->pwrite_ok--;
        } else if (f->short_first && n > 1) {
            f->short_first = 0;
            return px()->pwrite(NULL, fd, buf, n / 2, off);
        } else {
            return -f->pwrite_errno;
        }
    }
    return px()->pwrite(NULL, fd, buf, n, off);
}

static int f_sync(struct fio *f, int fd, int data_only)
{
    if (f->sync_errno) {
        if (f->sync_ok > 0)
            f->sync_ok--;
        else
            return -f->sync_errno;
    }
    int rc = data_only ? px()->fdatasync(NULL, fd) : px()->fsync(NULL, fd);
    if (rc == 0 && f->fd_path[fd][0]) {
        struct stat s;
        fstat(fd, &s);
        if (!S_ISDIR(s.st_mode))
            capture(f, fd);
    }
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

static int f_close(void *ctx, int fd)
{
    FIO(ctx)->fd_path[fd][0] = '\0';
    return px()->close(NULL, fd);
}

static int f_rename(void *ctx, const char *from, const char *to)
{
    struct fio *f = FIO(ctx);
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
    struct image *im = find_image(FIO(ctx), path, 0);
    if (im) {
        free(im->data);
        memset(im, 0, sizeof *im);
    }
    return px()->unlink(NULL, path);
}

static struct fio *fio_new(void)
{
    struct fio *f = calloc(1, sizeof *f);
    f->io = *px();
    f->io.ctx = f;
    f->io.open = f_open;
    f->io.close = f_close;
    f->io.pwrite = f_pwrite;
    f->io.fdatasync = f_fdatasync;
    f->io.fsync = f_fsync;
    f->io.rename = f_rename;
    f->io.unlink = f_unlink;
    return f;
}

/* Power loss: every file goes back to what its last sync made durable. */
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
}

static void fio_free(struct fio *f)
{
    for (int i = 0; i < 64; i++)
        free(f->img[i].data);
    free(f);
}

static void check_refuses(struct raftlog *l)
{
    struct ferry_err err;
    assert_true(raftlog_failed(l));
    struct raft_entry *e = make_entries(raftlog_last_index(l) + 1, 1, 9, 10);
    assert_int_equal(raftlog_append(l, 0, e, 1, &err), FERRY_EIO);
    assert_non_null(strstr(err.msg, "must be reopened"));
    free_entries(e, 1);
    assert_int_equal(raftlog_sync(l, &err), FERRY_EIO);
    assert_int_equal(raftlog_save_vote(l, 9, 1, &err), FERRY_EIO);
}

static void test_write_errors(void **state)
{
    (void)state;
    const int errs[] = {EIO, ENOSPC};
    const int want[] = {FERRY_EIO, FERRY_ENOSPC};
    for (int k = 0; k < 2; k++)
        for (int shortw = 0; shortw < 2; shortw++) {
            char *dir = make_dir();
            struct fio *f = fio_new();
            struct raftlog_state st;
            struct raftlog *l = open_log(dir, 0, 2, &f->io, &st);
            append(l, 0, 1, 10, 1, 100);
            sync_log(l);
            f->pwrite_errno = errs[k];
            f->short_first = shortw;
            struct raft_entry *e = make_entries(11, 5, 1, 100);
            struct ferry_err err;
            assert_int_equal(raftlog_append(l, 0, e, 5, &err), want[k]);
            free_entries(e, 5);
            assert_non_null(strstr(err.msg, "pwrite"));
            assert_non_null(strstr(err.msg, "seg-00000000000000000001.log"));
            assert_non_null(strstr(err.msg, strerror(errs[k])));
            f->pwrite_errno = 0;
            check_refuses(l);
            raftlog_close(l);
            /* Reopen: the half-written batch is a torn tail; the synced part stays. */
            l = open_log(dir, 0, 2, &f->io, &st);
            /* Half of 5 records: 2 whole ones (never synced, but intact) and 62 bytes. */
            uint64_t last = shortw ? 12 : 10;
            assert_int_equal(st.torn_bytes, shortw ? 5 * 125 / 2 - 2 * 125 : 0);
            check_state(&st, 1, last, 0, 1, 1, 100);
            raftlog_state_free(&st);
            append(l, 0, last + 1, 1, 1, 100);
            sync_log(l);
            raftlog_close(l);
            fio_free(f);
            remove_dir(dir);
        }
}

static void test_sync_errors(void **state)
{
    (void)state;
    const int errs[] = {EIO, ENOSPC};
    const int want[] = {FERRY_EIO, FERRY_ENOSPC};
    for (int k = 0; k < 2; k++) {
        char *dir = make_dir();
        struct fio *f = fio_new();
        struct raftlog_state st;
        struct raftlog *l = open_log(dir, 0, 2, &f->io, &st);
        append(l, 0, 1, 10, 1, 100);
        f->sync_errno = errs[k];
        struct ferry_err err;
        assert_int_equal(raftlog_sync(l, &err), want[k]);
        assert_non_null(strstr(err.msg, "fdatasync"));
        assert_non_null(strstr(err.msg, "seg-00000000000000000001.log"));
        f->sync_errno = 0;
        check_refuses(l);
        raftlog_close(l);
        fio_free(f);
        remove_dir(dir);
    }
    /* A failing term/vote save refuses further changes too. */
    char *dir = make_dir();
    struct fio *f = fio_new();
    struct raftlog_state st;
    struct raftlog *l = open_log(dir, 0, 2, &f->io, &st);
    f->sync_errno = EIO;
    struct ferry_err err;
    assert_int_equal(raftlog_save_vote(l, 3, 1, &err), FERRY_EIO);
    assert_non_null(strstr(err.msg, "meta"));
    f->sync_errno = 0;
    check_refuses(l);
    raftlog_close(l);
    /* The failure at rollover (fdatasync of the full segment) is reported too. */
    l = open_log(dir, 1000, 2, &f->io, &st);
    f->sync_errno = EIO;
    struct raft_entry *e = make_entries(1, 20, 1, 100);
    assert_int_equal(raftlog_append(l, 0, e, 20, &err), FERRY_EIO);
    assert_non_null(strstr(err.msg, "fdatasync"));
    free_entries(e, 20);
    f->sync_errno = 0;
    check_refuses(l);
    raftlog_close(l);
    fio_free(f);
    remove_dir(dir);
}

static void test_power_loss_keeps_synced_prefix(void **state)
{
    (void)state;
    char *dir = make_dir();
    struct fio *f = fio_new();
    struct raftlog_state st;
    struct ferry_err err;
    struct raftlog *l = open_log(dir, 0, 2, &f->io, &st);
    append(l, 0, 1, 50, 1, UINT32_MAX);
    sync_log(l);
    assert_int_equal(raftlog_save_vote(l, 2, 1, &err), 0);
    append(l, 0, 51, 30, 1, UINT32_MAX);  /* never synced */
    append(l, 45, 45, 10, 2, UINT32_MAX); /* truncation, never synced */
    assert_int_equal(raftlog_save_vote(l, 3, 0, &err), 0);
    raftlog_close(l);
    fio_power_loss(f);
    l = open_log(dir, 0, 2, &f->io, &st);
    assert_int_equal(st.p.term, 3);
    check_state(&st, 1, 50, 0, 1, 1, UINT32_MAX);
    raftlog_state_free(&st);
    /* Synced after a truncation: the new suffix survives. */
    append(l, 45, 45, 10, 2, UINT32_MAX);
    sync_log(l);
    append(l, 0, 55, 3, 2, UINT32_MAX);
    raftlog_close(l);
    fio_power_loss(f);
    l = open_log(dir, 0, 2, &f->io, &st);
    check_state(&st, 1, 54, 45, 1, 2, UINT32_MAX);
    raftlog_state_free(&st);
    raftlog_close(l);
    fio_free(f);
    remove_dir(dir);

    /* Across segments: full segments are synced when closed, so what
     * survives is a contiguous prefix at least as long as the synced one. */
    dir = make_dir();
    f = fio_new();
    l = open_log(dir, 2000, 2, &f->io, &st);
    append(l, 0, 1, 30, 1, 100);
    sync_log(l);
    append(l, 0, 31, 40, 1, 100);
    raftlog_close(l);
    fio_power_loss(f);
    l = open_log(dir, 2000, 2, &f->io, &st);
    assert_true(st.p.n_entries >= 30 && st.p.n_entries <= 70);
    check_state(&st, 1, st.p.n_entries, 0, 1, 1, 100);
    uint64_t last = st.p.n_entries;
    raftlog_state_free(&st);
    append(l, 0, last + 1, 5, 2, 100);
    sync_log(l);
    raftlog_close(l);
    l = open_log(dir, 2000, 2, &f->io, &st);
    check_state(&st, 1, last + 5, last + 1, 1, 2, 100);
    raftlog_state_free(&st);
    raftlog_close(l);
    fio_free(f);
    remove_dir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32c_vectors),
        cmocka_unit_test(test_crc32c_paths_agree),
        cmocka_unit_test(test_round_trip_odd_sizes),
        cmocka_unit_test(test_rollover_many_segments),
        cmocka_unit_test(test_append_refuses_gap_and_term_regression),
        cmocka_unit_test(test_truncate_suffix_then_append),
        cmocka_unit_test(test_compaction_keeps_generations),
        cmocka_unit_test(test_snapshot_save_load_keeps_two),
        cmocka_unit_test(test_installed_snapshot_replaces_stale_log),
        cmocka_unit_test(test_vote_atomic_slots),
        cmocka_unit_test(test_torn_tail_cut_mid_record),
        cmocka_unit_test(test_torn_tail_bad_crc_last_record),
        cmocka_unit_test(test_corrupt_record_followed_by_valid_data),
        cmocka_unit_test(test_corrupt_earlier_segment),
        cmocka_unit_test(test_index_gap_is_corrupt),
        cmocka_unit_test(test_wrong_index_inside_segment_is_corrupt),
        cmocka_unit_test(test_write_errors),
        cmocka_unit_test(test_sync_errors),
        cmocka_unit_test(test_power_loss_keeps_synced_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
