/* log.c - open/scan, append, sync, truncate, compact and reset of the disk log.
 *
 * In memory the log keeps, per segment, the file offset and term of every
 * entry (16 bytes an entry), so truncation knows where to cut without reading.
 * Appends are encoded into one buffer and written with one pwrite per segment
 * touched; a full segment is fdatasynced and closed before the next one is
 * created, so only the newest segment ever holds unsynced bytes and only its
 * tail can be torn. Segments are deleted newest first when truncating (a crash
 * leaves a prefix of the old log) and oldest first when compacting (a crash
 * leaves a suffix, and open ignores segments a snapshot covers).
 */
#include "raft/log/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"
#include "util/log.h"

#define DEFAULT_SEGMENT_BYTES (64u << 20)
#define FLUSH_BYTES (1u << 20)
/* Largest write buffer kept between batches; a bigger one is freed after its write. */
#define WBUF_KEEP (2u << 20)

/* ---- helpers ------------------------------------------------------------ */

static struct segment *newest(struct raftlog *l)
{
    return l->n_segs ? &l->segs[l->n_segs - 1] : NULL;
}

static char *segment_path(const struct raftlog *l, uint64_t first)
{
    char name[40];
    segment_name(name, sizeof name, first);
    return path_join(l->dir, name);
}

/* Record the first write/sync failure: the log refuses changes from now on. */
static int fail(struct raftlog *l, int rc, struct ferry_err *err)
{
    if (!l->failed) {
        l->failed = rc;
        snprintf(l->failed_msg, sizeof l->failed_msg, "%s", err->msg);
    }
    return rc;
}

static int refuse_if_failed(const struct raftlog *l, struct ferry_err *err)
{
    if (!l->failed)
        return 0;
    return ferry_err_set(err, FERRY_EIO, "raft log in %s failed earlier (%s); it must be reopened",
                         l->dir, l->failed_msg);
}

static int add_segment(struct raftlog *l, uint64_t first)
{
    if (l->n_segs == l->cap_segs) {
        uint32_t cap = l->cap_segs ? l->cap_segs * 2 : 8;
        struct segment *s = ferry_realloc(l->segs, cap * sizeof *s);
        if (s == NULL)
            return FERRY_ENOMEM;
        l->segs = s;
        l->cap_segs = cap;
    }
    struct segment *s = &l->segs[l->n_segs++];
    memset(s, 0, sizeof *s);
    s->first = first;
    s->last = first - 1;
    return 0;
}

/* Remove segs[i] from the array (its file is already gone). */
static void drop_segment(struct raftlog *l, uint32_t i)
{
    segment_free(&l->segs[i]);
    memmove(&l->segs[i], &l->segs[i + 1], (l->n_segs - i - 1) * sizeof *l->segs);
    l->n_segs--;
}

static int unlink_segment(struct raftlog *l, uint32_t i, struct ferry_err *err)
{
    char *path = segment_path(l, l->segs[i].first);
    if (path == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    int rc = l->io->unlink(l->io->ctx, path);
    if (rc < 0 && rc != -ENOENT)
        rc = io_error(err, rc, "unlink", path);
    else
        rc = 0;
    ferry_free(path);
    if (rc == 0) {
        drop_segment(l, i);
        l->dir_dirty = 1;
    }
    return rc;
}

static void close_fd(struct raftlog *l)
{
    if (l->fd >= 0)
        l->io->close(l->io->ctx, l->fd);
    l->fd = -1;
    l->unsynced = 0;
}

/* ---- open --------------------------------------------------------------- */

struct listing {
    struct raftlog *l;
    uint64_t *segs;
    size_t n_segs, cap_segs;
    uint64_t (*snaps)[2];
    size_t n_snaps, cap_snaps;
};

static int grow(void **p, size_t *cap, size_t n, size_t elem)
{
    if (n < *cap)
        return 0;
    size_t c = *cap ? *cap * 2 : 16;
    void *q = ferry_realloc(*p, c * elem);
    if (q == NULL)
        return -1;
    *p = q;
    *cap = c;
    return 0;
}

static int list_one(void *arg, const char *name)
{
    struct listing *ls = arg;
    uint64_t a, b;
    size_t len = strlen(name);
    if (segment_parse_name(name, &a) == 0) {
        if (grow((void **)&ls->segs, &ls->cap_segs, ls->n_segs, sizeof *ls->segs) < 0)
            return FERRY_ENOMEM;
        ls->segs[ls->n_segs++] = a;
    } else if (snapshot_parse_name(name, &a, &b) == 0) {
        if (grow((void **)&ls->snaps, &ls->cap_snaps, ls->n_snaps, sizeof *ls->snaps) < 0)
            return FERRY_ENOMEM;
        ls->snaps[ls->n_snaps][0] = a;
        ls->snaps[ls->n_snaps][1] = b;
        ls->n_snaps++;
    } else if (len > 4 && strcmp(name + len - 4, ".tmp") == 0) {
        /* An interrupted snapshot or meta creation: never renamed, so never used. */
        char *path = path_join(ls->l->dir, name);
        if (path == NULL)
            return FERRY_ENOMEM;
        log_info("raftlog", "removing leftover temporary file %s", path);
        ls->l->io->unlink(ls->l->io->ctx, path);
        ferry_free(path);
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int cmp_snap_desc(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] < y[0] ? 1 : -1;
    return x[1] < y[1] ? 1 : x[1] > y[1] ? -1 : 0;
}

static int push_entry(struct raftlog_state *st, size_t *cap, const uint8_t *rec)
{
    if (grow((void **)&st->entries_, cap, st->p.n_entries, sizeof *st->entries_) < 0)
        return FERRY_ENOMEM;
    struct raft_entry *e = &st->entries_[st->p.n_entries];
    e->len = get_u32(rec) - RECORD_FIXED;
    e->term = get_u64(rec + 8);
    e->index = get_u64(rec + 16);
    e->type = rec[24];
    e->data = NULL;
    if (e->len > 0) {
        e->data = ferry_malloc(e->len);
        if (e->data == NULL)
            return FERRY_ENOMEM;
        memcpy(e->data, rec + RECORD_HEADER, e->len);
    }
    st->p.n_entries++;
    return 0;
}

static void free_entries(struct raftlog_state *st)
{
    for (uint32_t i = 0; i < st->p.n_entries; i++)
        ferry_free(st->entries_[i].data);
    ferry_free(st->entries_);
    st->entries_ = NULL;
    st->p.entries = NULL;
    st->p.n_entries = 0;
}

void raftlog_state_free(struct raftlog_state *st)
{
    if (st == NULL)
        return;
    free_entries(st);
    memset(st, 0, sizeof *st);
}

/* Read and verify segment `first`; entries after `keep_after` go to st. */
static int scan_segment(struct raftlog *l, uint64_t first, int is_last, uint64_t keep_after,
                        struct raftlog_state *st, size_t *cap, struct ferry_err *err)
{
    const struct raftlog_io *io = l->io;
    char *path = segment_path(l, first);
    if (path == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    uint8_t *buf = NULL;
    uint64_t len = 0, valid = 0;
    int rc = io_read_file(io, path, &buf, &len, err);
    if (rc < 0)
        goto out;
    rc = add_segment(l, first);
    if (rc < 0) {
        ferry_err_set(err, rc, "out of memory");
        goto out;
    }
    struct segment *s = newest(l);
    rc = segment_scan(path, buf, len, is_last, s, &valid, err);
    if (rc < 0)
        goto out;
    for (uint64_t i = 0; i < s->n; i++) {
        if (s->first + i <= keep_after)
            continue;
        rc = push_entry(st, cap, buf + s->offsets[i]);
        if (rc < 0) {
            ferry_err_set(err, rc, "reading %s: out of memory", path);
            goto out;
        }
    }
    if (valid < len) {
        /* Torn tail: cut it off durably before anything is appended after it. */
        int fd = io->open(io->ctx, path, O_RDWR, 0);
        if (fd < 0) {
            rc = io_error(err, fd, "open", path);
            goto out;
        }
        int r = io->ftruncate(io->ctx, fd, valid);
        if (r < 0)
            rc = io_error(err, r, "ftruncate", path);
        else if ((r = io->fdatasync(io->ctx, fd)) < 0)
            rc = io_error(err, r, "fdatasync", path);
        io->close(io->ctx, fd);
        if (rc < 0)
            goto out;
        st->torn_bytes = len - valid;
        log_warn("raftlog",
                 "%s: torn tail of %" PRIu64 " bytes at offset %" PRIu64
                 " (a write the crash interrupted) truncated; last entry is now %" PRIu64,
                 path, len - valid, valid, s->last);
    }
out:
    ferry_free(buf);
    ferry_free(path);
    return rc;
}

/* Check that the segments follow one another and agree with the snapshot;
 * drop what the snapshot makes obsolete. */
static int check_chain(struct raftlog *l, struct raftlog_state *st, struct ferry_err *err)
{
    const struct raft_snapshot_meta *snap = &st->p.snapshot;
    for (uint32_t i = 1; i < l->n_segs; i++) {
        struct segment *a = &l->segs[i - 1], *b = &l->segs[i];
        if (b->first == a->last + 1)
            continue;
        if (b->first < a->last + 1 || b->first > snap->index + 1) {
            char an[40], bn[40];
            segment_name(an, sizeof an, a->first);
            segment_name(bn, sizeof bn, b->first);
            return ferry_err_set(err, FERRY_ECORRUPT,
                                 "%s/%s ends at entry %" PRIu64 " but %s starts at %" PRIu64
                                 " (entries missing or duplicated)",
                                 l->dir, an, a->last, bn, b->first);
        }
        /* A gap the snapshot covers (an interrupted compaction): the
         * segments before it are obsolete. */
        while (i > 0) {
            int rc = unlink_segment(l, 0, err);
            if (rc < 0)
                return rc;
            i--;
        }
    }
    if (l->n_segs == 0)
        return 0;
    struct segment *first = &l->segs[0], *last = newest(l);
    if (first->first > snap->index + 1) {
        char n[40];
        segment_name(n, sizeof n, first->first);
        return ferry_err_set(err, FERRY_ECORRUPT,
                             "%s/%s starts at entry %" PRIu64 " but the snapshot ends at %" PRIu64
                             " (entries missing)",
                             l->dir, n, first->first, snap->index);
    }
    if (snap->index == 0)
        return 0;
    int stale = 0;
    if (last->last < snap->index) {
        stale = 1;
    } else if (snap->index >= first->first) {
        for (uint32_t i = 0; i < l->n_segs; i++) {
            struct segment *s = &l->segs[i];
            if (snap->index >= s->first && snap->index <= s->last)
                stale = s->terms[snap->index - s->first] != snap->term;
        }
    }
    if (stale) {
        /* The snapshot was installed from a leader and the log it replaces
         * was not yet dropped when the node stopped: drop it now. */
        log_warn("raftlog",
                 "%s: log (entries %" PRIu64 "..%" PRIu64 ") does not extend snapshot %" PRIu64
                 " term %" PRIu64 "; dropping it",
                 l->dir, first->first, last->last, snap->index, snap->term);
        free_entries(st);
        return raftlog_reset(l, err);
    }
    return 0;
}

static int open_dir(struct raftlog *l, struct raftlog_state *st, struct ferry_err *err)
{
    const struct raftlog_io *io = l->io;
    int rc = io->mkdir(io->ctx, l->dir, 0755);
    if (rc < 0 && rc != -EEXIST)
        return io_error(err, rc, "mkdir", l->dir);
    struct listing ls = {.l = l};
    rc = io->listdir(io->ctx, l->dir, list_one, &ls);
    if (rc < 0) {
        if (rc == FERRY_ENOMEM)
            ferry_err_set(err, rc, "listing %s: out of memory", l->dir);
        else
            io_error(err, rc, "readdir", l->dir);
        rc = err->code;
        goto out;
    }
    rc = meta_open(l, &st->p.term, &st->p.vote, err);
    if (rc < 0)
        goto out;

    if (ls.n_snaps > 1)
        qsort(ls.snaps, ls.n_snaps, sizeof *ls.snaps, cmp_snap_desc);
    if (ls.n_snaps > 0) {
        /* Header, length and data checksum, the data streamed through a
         * fixed buffer: a snapshot of any size is verified in bounded memory. */
        rc = snapshot_check(l, ls.snaps[0][0], ls.snaps[0][1], &st->p.snapshot, err);
        if (rc < 0)
            goto out;
        atomic_store(&l->snap_index, ls.snaps[0][0]);
    }
    for (size_t i = 2; i < ls.n_snaps; i++) {
        char name[64];
        snapshot_name(name, sizeof name, ls.snaps[i][0], ls.snaps[i][1]);
        char *path = path_join(l->dir, name);
        if (path != NULL)
            io->unlink(io->ctx, path);
        ferry_free(path);
    }

    if (ls.n_segs > 1)
        qsort(ls.segs, ls.n_segs, sizeof *ls.segs, cmp_u64);
    size_t cap = 0;
    for (size_t i = 0; i < ls.n_segs; i++) {
        rc = scan_segment(l, ls.segs[i], i + 1 == ls.n_segs, st->p.snapshot.index, st, &cap, err);
        if (rc < 0)
            goto out;
    }
    rc = check_chain(l, st, err);
    if (rc < 0)
        goto out;
    if (l->dir_dirty) {
        rc = io_sync_dir(io, l->dir, err);
        if (rc < 0)
            goto out;
        l->dir_dirty = 0;
    }
    struct segment *s = newest(l);
    if (s != NULL) {
        char *path = segment_path(l, s->first);
        if (path == NULL) {
            rc = ferry_err_set(err, FERRY_ENOMEM, "out of memory");
            goto out;
        }
        l->fd = io->open(io->ctx, path, O_RDWR, 0);
        if (l->fd < 0)
            rc = io_error(err, l->fd, "open", path);
        ferry_free(path);
        if (rc < 0)
            goto out;
        st->first_index = l->segs[0].n ? l->segs[0].first : 0;
    }
    l->base = st->p.snapshot.index;
    st->n_segments = l->n_segs;
    st->p.entries = st->entries_;
out:
    ferry_free(ls.segs);
    ferry_free(ls.snaps);
    return rc;
}

int raftlog_open(struct raftlog **out, const struct raftlog_options *o, struct raftlog_state *st,
                 struct ferry_err *err)
{
    struct ferry_err local;
    if (err == NULL)
        err = &local;
    ferry_err_clear(err);
    memset(st, 0, sizeof *st);
    *out = NULL;
    struct raftlog *l = ferry_calloc(1, sizeof *l);
    if (l == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    l->io = o->io ? o->io : raftlog_io_posix();
    l->dir = ferry_strdup(o->dir);
    l->max_segment_bytes = o->max_segment_bytes ? o->max_segment_bytes : DEFAULT_SEGMENT_BYTES;
    l->max_generations = o->max_generations;
    l->fd = -1;
    l->meta_fd = -1;
    buf_init(&l->wbuf);
    if (l->dir == NULL) {
        raftlog_close(l);
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    }
    int rc = open_dir(l, st, err);
    if (rc < 0) {
        raftlog_state_free(st);
        raftlog_close(l);
        return rc;
    }
    *out = l;
    return 0;
}

void raftlog_close(struct raftlog *l)
{
    if (l == NULL)
        return;
    close_fd(l);
    if (l->meta_fd >= 0)
        l->io->close(l->io->ctx, l->meta_fd);
    for (uint32_t i = 0; i < l->n_segs; i++)
        segment_free(&l->segs[i]);
    ferry_free(l->segs);
    buf_free(&l->wbuf);
    ferry_free(l->dir);
    ferry_free(l);
}

/* ---- accessors ---------------------------------------------------------- */

uint64_t raftlog_last_index(const struct raftlog *l)
{
    return l->n_segs ? l->segs[l->n_segs - 1].last : l->base;
}

uint64_t raftlog_last_term(const struct raftlog *l)
{
    for (uint32_t i = l->n_segs; i-- > 0;)
        if (l->segs[i].n)
            return l->segs[i].terms[l->segs[i].n - 1];
    return 0;
}

uint64_t raftlog_first_index(const struct raftlog *l)
{
    for (uint32_t i = 0; i < l->n_segs; i++)
        if (l->segs[i].n)
            return l->segs[i].first;
    return 0;
}

uint32_t raftlog_segment_count(const struct raftlog *l)
{
    return l->n_segs;
}

int raftlog_failed(const struct raftlog *l)
{
    return l->failed != 0;
}

/* ---- append and sync ---------------------------------------------------- */

/* Write the encoded records to the newest segment. */
static int flush(struct raftlog *l, struct ferry_err *err)
{
    if (l->wbuf.len == 0)
        return 0;
    struct segment *s = newest(l);
    char *path = segment_path(l, s->first);
    if (path == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    int rc = io_write_all(l->io, l->fd, l->wbuf.data, l->wbuf.len, s->size, path, err);
    ferry_free(path);
    if (rc < 0)
        return fail(l, rc, err);
    s->size += l->wbuf.len;
    l->unsynced = 1;
    buf_reset(&l->wbuf);
    if (l->wbuf.cap > WBUF_KEEP)
        buf_free(&l->wbuf); /* don't keep a burst's worth of memory */
    return 0;
}

/* Close the full newest segment (durably) and create the next one. */
static int roll(struct raftlog *l, uint64_t first, struct ferry_err *err)
{
    int rc = flush(l, err);
    if (rc < 0)
        return rc;
    if (l->fd >= 0) {
        if (l->unsynced) {
            int r = l->io->fdatasync(l->io->ctx, l->fd);
            if (r < 0) {
                char *path = segment_path(l, newest(l)->first);
                io_error(err, r, "fdatasync", path ? path : l->dir);
                ferry_free(path);
                return fail(l, err->code, err);
            }
        }
        close_fd(l);
    }
    char *path = segment_path(l, first);
    if (path == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    int fd = l->io->open(l->io->ctx, path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        io_error(err, fd, "open", path);
        ferry_free(path);
        return fail(l, err->code, err);
    }
    ferry_free(path);
    rc = add_segment(l, first);
    if (rc < 0) {
        l->io->close(l->io->ctx, fd);
        return ferry_err_set(err, rc, "out of memory");
    }
    l->fd = fd;
    l->dir_dirty = 1;
    return 0;
}

static int check_entry(struct raftlog *l, const struct raft_entry *e, struct ferry_err *err)
{
    struct segment *s = newest(l);
    if (s != NULL && e->index != s->last + 1)
        return ferry_err_set(err, FERRY_EINVAL,
                             "entry %" PRIu64 " does not follow the last stored entry %" PRIu64,
                             e->index, s->last);
    if (e->index == 0 || e->term == 0 || e->term < raftlog_last_term(l))
        return ferry_err_set(err, FERRY_EINVAL,
                             "entry %" PRIu64 " has term %" PRIu64 " (last stored term %" PRIu64
                             ")",
                             e->index, e->term, raftlog_last_term(l));
    if (e->type < RAFT_ENTRY_NORMAL || e->type > RAFT_ENTRY_CONFIG)
        return ferry_err_set(err, FERRY_EINVAL, "entry %" PRIu64 " has unknown type %u", e->index,
                             e->type);
    if (e->len > RAFT_MAX_ENTRY_BYTES || (e->len > 0 && e->data == NULL))
        return ferry_err_set(err, FERRY_EINVAL, "entry %" PRIu64 " has a bad payload (%u bytes)",
                             e->index, e->len);
    return 0;
}

int raftlog_append(struct raftlog *l, uint64_t persist_from, const struct raft_entry *entries,
                   uint32_t n, struct ferry_err *err)
{
    struct ferry_err local;
    if (err == NULL)
        err = &local;
    int rc = refuse_if_failed(l, err);
    if (rc < 0)
        return rc;
    if (persist_from != 0 && persist_from <= raftlog_last_index(l)) {
        rc = raftlog_truncate(l, persist_from, err);
        if (rc < 0)
            return rc;
    }
    for (uint32_t i = 0; i < n; i++) {
        const struct raft_entry *e = &entries[i];
        rc = check_entry(l, e, err);
        if (rc < 0)
            goto fail_flush;
        size_t rs = record_size(e->len);
        struct segment *s = newest(l);
        if (s == NULL ||
            (s->size + l->wbuf.len > 0 && s->size + l->wbuf.len + rs > l->max_segment_bytes)) {
            rc = roll(l, e->index, err);
            if (rc < 0)
                return rc;
            s = newest(l);
        }
        if (buf_reserve(&l->wbuf, rs) < 0) {
            rc =
                ferry_err_set(err, FERRY_ENOMEM, "out of memory encoding entry %" PRIu64, e->index);
            goto fail_flush;
        }
        uint64_t off = s->size + l->wbuf.len;
        if (segment_push(s, off, e->term) < 0) {
            rc = ferry_err_set(err, FERRY_ENOMEM, "out of memory");
            goto fail_flush;
        }
        record_encode(l->wbuf.data + l->wbuf.len, e);
        l->wbuf.len += rs;
        if (l->wbuf.len >= FLUSH_BYTES) {
            rc = flush(l, err);
            if (rc < 0)
                return rc;
        }
    }
    return flush(l, err);
fail_flush:
    /* Entries before the refused one are written; the refused one is not. */
    {
        struct ferry_err e2;
        if (flush(l, &e2) < 0)
            return fail(l, e2.code, err);
    }
    return rc;
}

int raftlog_sync(struct raftlog *l, struct ferry_err *err)
{
    struct ferry_err local;
    if (err == NULL)
        err = &local;
    int rc = refuse_if_failed(l, err);
    if (rc < 0)
        return rc;
    if (l->fd >= 0 && l->unsynced) {
        int r = l->io->fdatasync(l->io->ctx, l->fd);
        if (r < 0) {
            char *path = segment_path(l, newest(l)->first);
            io_error(err, r, "fdatasync", path ? path : l->dir);
            ferry_free(path);
            return fail(l, err->code, err);
        }
        l->unsynced = 0;
    }
    if (l->dir_dirty) {
        rc = io_sync_dir(l->io, l->dir, err);
        if (rc < 0)
            return fail(l, rc, err);
        l->dir_dirty = 0;
    }
    return 0;
}

/* ---- truncate, compact, reset ------------------------------------------- */

int raftlog_truncate(struct raftlog *l, uint64_t index, struct ferry_err *err)
{
    struct ferry_err local;
    if (err == NULL)
        err = &local;
    int rc = refuse_if_failed(l, err);
    if (rc < 0)
        return rc;
    if (index == 0)
        return ferry_err_set(err, FERRY_EINVAL, "cannot truncate at index 0");
    if (index > raftlog_last_index(l))
        return 0;
    while (l->n_segs > 0 && newest(l)->first >= index) {
        close_fd(l);
        rc = unlink_segment(l, l->n_segs - 1, err);
        if (rc < 0)
            return fail(l, rc, err);
    }
    struct segment *s = newest(l);
    if (s == NULL) {
        l->base = index - 1;
        return 0;
    }
    char *path = segment_path(l, s->first);
    if (path == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    if (l->fd < 0) {
        /* The cut falls in a closed segment: it becomes the open one. */
        int fd = l->io->open(l->io->ctx, path, O_RDWR, 0);
        if (fd < 0) {
            io_error(err, fd, "open", path);
            ferry_free(path);
            return fail(l, err->code, err);
        }
        l->fd = fd;
    }
    if (s->last >= index) {
        uint64_t size = s->offsets[index - s->first];
        int r = l->io->ftruncate(l->io->ctx, l->fd, size);
        if (r < 0) {
            io_error(err, r, "ftruncate", path);
            ferry_free(path);
            return fail(l, err->code, err);
        }
        s->n = index - s->first;
        s->last = index - 1;
        s->size = size;
        l->unsynced = 1;
    }
    ferry_free(path);
    return 0;
}

int raftlog_compact(struct raftlog *l, uint64_t index, struct ferry_err *err)
{
    struct ferry_err local;
    if (err == NULL)
        err = &local;
    int rc = refuse_if_failed(l, err);
    if (rc < 0)
        return rc;
    /* Never delete what no stored snapshot covers. snap_index is raised by a
     * snapshot writer (on any thread) only once its file is durable. */
    uint64_t snap = atomic_load(&l->snap_index);
    if (index > snap)
        index = snap;
    uint32_t covered = 0;
    while (covered + 1 < l->n_segs && l->segs[covered].last <= index)
        covered++;
    if (covered <= l->max_generations)
        return 0;
    uint32_t del = covered - l->max_generations;
    for (uint32_t i = 0; i < del; i++) {
        rc = unlink_segment(l, 0, err);
        if (rc < 0)
            return rc;
    }
    rc = io_sync_dir(l->io, l->dir, err);
    if (rc < 0)
        return rc;
    l->dir_dirty = 0;
    return 0;
}

int raftlog_reset(struct raftlog *l, struct ferry_err *err)
{
    struct ferry_err local;
    if (err == NULL)
        err = &local;
    int rc = refuse_if_failed(l, err);
    if (rc < 0)
        return rc;
    close_fd(l);
    buf_reset(&l->wbuf);
    while (l->n_segs > 0) {
        rc = unlink_segment(l, l->n_segs - 1, err);
        if (rc < 0)
            return fail(l, rc, err);
    }
    l->base = atomic_load(&l->snap_index);
    rc = io_sync_dir(l->io, l->dir, err);
    if (rc < 0)
        return fail(l, rc, err);
    l->dir_dirty = 0;
    return 0;
}

int raftlog_save_vote(struct raftlog *l, uint64_t term, uint64_t vote, struct ferry_err *err)
{
    struct ferry_err local;
    if (err == NULL)
        err = &local;
    int rc = refuse_if_failed(l, err);
    if (rc < 0)
        return rc;
    rc = meta_save(l, term, vote, err);
    if (rc < 0)
        return fail(l, rc, err);
    return 0;
}
