/* snapwrite.c - the snapshot writer (raftlog_snapw_*) and raftlog_snapshot_save.
 *
 * A writer owns a temporary file snap-<index>-<term>.dat.<k>.tmp, where k is
 * the first number O_EXCL finds free, so writers of the same snapshot never
 * share a file. Data byte i goes to file offset 512 + i; the header stays a
 * hole until finish. While the writes come in order (each where the previous
 * one ended, a restart at 0, or a resend of the previous piece) the data
 * checksum is kept up to date; after any other write, finish reads the data
 * back to compute it. Finish cuts the file to its final size, writes the
 * header, fsyncs, renames, fsyncs the directory, raises l->snap_index and
 * deletes all but the newest two snapshot files.
 *
 * A writer reads only l->io and l->dir, which never change after raftlog_open,
 * and writes only the atomic l->snap_index: it may run on one thread while
 * others use the log.
 */
#include "raft/log/internal.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "util/alloc.h"
#include "util/crc32c.h"
#include "util/log.h"

#define TMP_TRIES 1000 /* writers of one snapshot open at the same time, at most */

struct raftlog_snapw {
    struct raftlog *l;
    struct raft_snapshot_meta meta;
    char *path; /* final name */
    char *tmp;
    int fd;
    uint64_t written; /* end of the furthest data byte written; no write may start past it */
    uint64_t run_end; /* run_crc is the CRC-32C of data [0, run_end) ... */
    uint32_t run_crc;
    int in_order;      /* ... while this is 1 */
    uint64_t last_off; /* the newest in-order write started at last_off, */
    uint32_t last_crc; /* where the CRC of [0, last_off) was last_crc */
    int failed;        /* first I/O error: the writer takes no more data */
    char failed_msg[FERRY_ERRMSG_MAX];
};

static void writer_free(struct raftlog_snapw *w)
{
    if (w->fd >= 0)
        w->l->io->close(w->l->io->ctx, w->fd);
    ferry_free(w->path);
    ferry_free(w->tmp);
    ferry_free(w);
}

/* Snapshots only move forward: refuse one older than the newest stored. */
static int older_than_stored(struct raftlog *l, uint64_t index, struct ferry_err *err)
{
    uint64_t newest = atomic_load(&l->snap_index);
    if (index >= newest)
        return 0;
    return ferry_err_set(err, FERRY_EINVAL,
                         "snapshot at index %" PRIu64 " is older than the stored one (%" PRIu64 ")",
                         index, newest);
}

int raftlog_snapw_open(struct raftlog_snapw **out, struct raftlog *l,
                       const struct raft_snapshot_meta *meta, struct ferry_err *err)
{
    struct ferry_err local;
    if (err == NULL)
        err = &local;
    *out = NULL;
    if (meta->index == 0 || meta->term == 0)
        return ferry_err_set(err, FERRY_EINVAL, "snapshot needs a non-zero index and term");
    int rc = older_than_stored(l, meta->index, err);
    if (rc < 0)
        return rc;
    uint8_t h[SNAP_DATA_OFFSET];
    if (snapshot_header_encode(h, meta, 0) < 0)
        return ferry_err_set(err, FERRY_EINVAL,
                             "snapshot at index %" PRIu64 ": its configuration (%u nodes) cannot "
                             "be encoded",
                             meta->index, meta->config.n);
    struct raftlog_snapw *w = ferry_calloc(1, sizeof *w);
    if (w == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    w->l = l;
    w->meta = *meta;
    w->meta.size = 0;
    w->fd = -1;
    w->in_order = 1;
    char name[64], tmpname[80];
    snapshot_name(name, sizeof name, meta->index, meta->term);
    w->path = path_join(l->dir, name);
    if (w->path == NULL)
        goto oom;
    int fd = -EEXIST;
    for (unsigned k = 0; k < TMP_TRIES && fd == -EEXIST; k++) {
        snprintf(tmpname, sizeof tmpname, "%s.%u.tmp", name, k);
        ferry_free(w->tmp);
        w->tmp = path_join(l->dir, tmpname);
        if (w->tmp == NULL)
            goto oom;
        fd = l->io->open(l->io->ctx, w->tmp, O_RDWR | O_CREAT | O_EXCL, 0644);
    }
    if (fd < 0) {
        rc = io_error(err, fd, "open", w->tmp);
        writer_free(w);
        return rc;
    }
    w->fd = fd;
    *out = w;
    return 0;
oom:
    writer_free(w);
    return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
}

static int refuse_if_failed(const struct raftlog_snapw *w, struct ferry_err *err)
{
    if (!w->failed)
        return 0;
    return ferry_err_set(err, w->failed, "snapshot writer failed earlier (%s)", w->failed_msg);
}

/* Keep run_crc up to date for a write of n bytes at offset (already done). */
static void track_checksum(struct raftlog_snapw *w, uint64_t offset, const void *p, size_t n)
{
    if (offset == 0) {
        /* A (re)start: every byte of the new run comes after this one. */
        w->in_order = 1;
        w->last_off = 0;
        w->last_crc = 0;
    } else if (offset == w->run_end) {
        w->last_off = w->run_end;
        w->last_crc = w->run_crc;
    } else if (offset != w->last_off) {
        w->in_order = 0; /* finish reads the data back */
        return;
    }
    /* offset is now last_off: a new piece, or the previous one sent again. */
    w->run_crc = crc32c_extend(w->last_crc, p, n);
    w->run_end = offset + n;
}

int raftlog_snapw_write(struct raftlog_snapw *w, uint64_t offset, const void *p, size_t n,
                        struct ferry_err *err)
{
    struct ferry_err local;
    if (err == NULL)
        err = &local;
    int rc = refuse_if_failed(w, err);
    if (rc < 0)
        return rc;
    if (offset > w->written)
        return ferry_err_set(err, FERRY_EINVAL,
                             "%s: write at data offset %" PRIu64 " would leave a hole (%" PRIu64
                             " bytes written)",
                             w->tmp, offset, w->written);
    if (n > UINT64_MAX - SNAP_DATA_OFFSET - offset)
        return ferry_err_set(err, FERRY_EINVAL, "%s: write of %zu bytes at %" PRIu64 " overflows",
                             w->tmp, n, offset);
    if (n == 0)
        return 0;
    rc = io_write_all(w->l->io, w->fd, p, n, SNAP_DATA_OFFSET + offset, w->tmp, err);
    if (rc < 0) {
        w->failed = rc;
        snprintf(w->failed_msg, sizeof w->failed_msg, "%s", err->msg);
        return rc;
    }
    if (offset + n > w->written)
        w->written = offset + n;
    track_checksum(w, offset, p, n);
    return 0;
}

uint64_t raftlog_snapw_written(const struct raftlog_snapw *w)
{
    return w->written;
}

/* Raise l->snap_index to index unless it is already higher. */
static void publish(struct raftlog *l, uint64_t index)
{
    uint64_t cur = atomic_load(&l->snap_index);
    while (cur < index && !atomic_compare_exchange_weak(&l->snap_index, &cur, index))
        ;
}

/* Delete all but the newest two snapshots. A failure only leaves a file for
 * the next save or raftlog_open to delete, so it is logged, not returned. */
static void prune(const struct raftlog_io *io, const char *dir)
{
    uint64_t(*v)[2];
    size_t n;
    struct ferry_err err;
    if (snapshot_list(io, dir, &v, &n, &err) < 0) {
        log_warn("raftlog", "cannot delete old snapshots: %s", err.msg);
        return;
    }
    for (size_t i = 2; i < n; i++) {
        char name[64];
        snapshot_name(name, sizeof name, v[i][0], v[i][1]);
        char *path = path_join(dir, name);
        if (path == NULL)
            break;
        int rc = io->unlink(io->ctx, path);
        if (rc < 0 && rc != -ENOENT)
            log_warn("raftlog", "cannot delete old snapshot %s: %s", path, strerror(-rc));
        ferry_free(path);
    }
    ferry_free(v);
}

/* Everything of raftlog_snapw_finish but the cleanup; *renamed is set once
 * the temporary file has its final name. */
static int finish(struct raftlog_snapw *w, uint64_t size, int *renamed, struct ferry_err *err)
{
    struct raftlog *l = w->l;
    const struct raftlog_io *io = l->io;
    int rc = refuse_if_failed(w, err);
    if (rc < 0)
        return rc;
    if (size > w->written)
        return ferry_err_set(err, FERRY_EINVAL,
                             "%s: cannot finish with %" PRIu64 " data bytes, only %" PRIu64
                             " were written",
                             w->tmp, size, w->written);
    if (w->written > size) {
        int r = io->ftruncate(io->ctx, w->fd, SNAP_DATA_OFFSET + size);
        if (r < 0)
            return io_error(err, r, "ftruncate", w->tmp);
    }
    uint32_t crc = w->run_crc;
    if (!w->in_order || w->run_end != size) {
        rc = snapshot_crc_range(io, w->fd, SNAP_DATA_OFFSET, size, w->tmp, &crc, err);
        if (rc < 0)
            return rc;
    }
    rc = older_than_stored(l, w->meta.index, err);
    if (rc < 0)
        return rc;
    w->meta.size = size;
    uint8_t h[SNAP_DATA_OFFSET];
    rc = snapshot_header_encode(h, &w->meta, crc);
    assert(rc == 0); /* checked by raftlog_snapw_open */
    rc = io_write_all(io, w->fd, h, sizeof h, 0, w->tmp, err);
    if (rc < 0)
        return rc;
    int r = io->fsync(io->ctx, w->fd);
    if (r < 0)
        return io_error(err, r, "fsync", w->tmp);
    io->close(io->ctx, w->fd);
    w->fd = -1;
    r = io->rename(io->ctx, w->tmp, w->path);
    if (r < 0)
        return io_error(err, r, "rename", w->tmp);
    *renamed = 1;
    rc = io_sync_dir(io, l->dir, err);
    if (rc < 0)
        return rc;
    publish(l, w->meta.index);
    prune(io, l->dir);
    return 0;
}

int raftlog_snapw_finish(struct raftlog_snapw *w, uint64_t size, struct ferry_err *err)
{
    struct ferry_err local;
    if (err == NULL)
        err = &local;
    int renamed = 0;
    int rc = finish(w, size, &renamed, err);
    if (rc < 0 && !renamed) {
        if (w->fd >= 0)
            w->l->io->close(w->l->io->ctx, w->fd);
        w->fd = -1;
        w->l->io->unlink(w->l->io->ctx, w->tmp);
    }
    writer_free(w);
    return rc;
}

void raftlog_snapw_abort(struct raftlog_snapw *w)
{
    if (w == NULL)
        return;
    if (w->fd >= 0)
        w->l->io->close(w->l->io->ctx, w->fd);
    w->fd = -1;
    w->l->io->unlink(w->l->io->ctx, w->tmp);
    writer_free(w);
}

int raftlog_snapshot_save(struct raftlog *l, const struct raft_snapshot_meta *meta,
                          const void *data, uint64_t len, struct ferry_err *err)
{
    struct ferry_err local;
    if (err == NULL)
        err = &local;
    struct raftlog_snapw *w;
    int rc = raftlog_snapw_open(&w, l, meta, err);
    if (rc < 0)
        return rc;
    if (len > 0) {
        rc = raftlog_snapw_write(w, 0, data, (size_t)len, err);
        if (rc < 0) {
            raftlog_snapw_abort(w);
            return rc;
        }
    }
    return raftlog_snapw_finish(w, len, err);
}
