/* meta.c - term and vote in two alternating checksummed slots.
 *
 * The file `meta` holds two 512-byte slots at offsets 0 and 512, each
 * [u32 magic "FRVM"][u32 version 1][u64 seq][u64 term][u64 vote][u32 crc32c of
 * the 32 bytes before it]. A save writes the slot the newest one is not in,
 * with seq + 1, and fdatasyncs: a torn write damages only that slot and the
 * other still holds the previous state. Open takes the valid slot with the
 * higher seq. The file is first created whole (temp name, fsync, rename,
 * directory fsync) so both slots are valid from the start.
 */
#include "raft/log/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>

#include "util/alloc.h"
#include "util/buf.h"
#include "util/crc32c.h"
#include "util/log.h"

#define META_MAGIC 0x4652564Du /* "FRVM" */
#define META_VERSION 1u
#define SLOT_BYTES 512u
#define SLOT_USED 36u

static void slot_encode(uint8_t *p, uint64_t seq, uint64_t term, uint64_t vote)
{
    memset(p, 0, SLOT_BYTES);
    put_u32(p, META_MAGIC);
    put_u32(p + 4, META_VERSION);
    put_u64(p + 8, seq);
    put_u64(p + 16, term);
    put_u64(p + 24, vote);
    put_u32(p + 32, crc32c(p, 32));
}

static int slot_decode(const uint8_t *p, uint64_t *seq, uint64_t *term, uint64_t *vote)
{
    if (get_u32(p) != META_MAGIC || get_u32(p + 4) != META_VERSION ||
        crc32c(p, 32) != get_u32(p + 32))
        return -1;
    *seq = get_u64(p + 8);
    *term = get_u64(p + 16);
    *vote = get_u64(p + 24);
    return 0;
}

static int meta_create(struct raftlog *l, const char *path, struct ferry_err *err)
{
    const struct raftlog_io *io = l->io;
    char *tmp = path_join(l->dir, "meta.tmp");
    if (tmp == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    uint8_t buf[2 * SLOT_BYTES];
    slot_encode(buf, 1, 0, 0);
    slot_encode(buf + SLOT_BYTES, 0, 0, 0);
    int rc = 0;
    int fd = io->open(io->ctx, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        rc = io_error(err, fd, "open", tmp);
        goto out;
    }
    rc = io_write_all(io, fd, buf, sizeof buf, 0, tmp, err);
    if (rc == 0) {
        int s = io->fsync(io->ctx, fd);
        if (s < 0)
            rc = io_error(err, s, "fsync", tmp);
    }
    io->close(io->ctx, fd);
    if (rc == 0) {
        int r = io->rename(io->ctx, tmp, path);
        rc = r < 0 ? io_error(err, r, "rename", tmp) : io_sync_dir(io, l->dir, err);
    }
out:
    ferry_free(tmp);
    return rc;
}

int meta_open(struct raftlog *l, uint64_t *term, uint64_t *vote, struct ferry_err *err)
{
    const struct raftlog_io *io = l->io;
    char *path = path_join(l->dir, "meta");
    if (path == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    int rc = 0;
    int fd = io->open(io->ctx, path, O_RDWR, 0);
    if (fd == -ENOENT) {
        rc = meta_create(l, path, err);
        if (rc < 0)
            goto out;
        fd = io->open(io->ctx, path, O_RDWR, 0);
    }
    if (fd < 0) {
        rc = io_error(err, fd, "open", path);
        goto out;
    }
    uint8_t buf[2 * SLOT_BYTES];
    uint64_t size = 0;
    int s = io->fsize(io->ctx, fd, &size);
    if (s < 0) {
        rc = io_error(err, s, "fstat", path);
    } else if (size < sizeof buf) {
        rc = ferry_err_set(err, FERRY_ECORRUPT, "%s: %" PRIu64 " bytes, expected %zu", path, size,
                           sizeof buf);
    } else {
        rc = io_read_all(io, fd, buf, sizeof buf, 0, path, err);
    }
    if (rc < 0) {
        io->close(io->ctx, fd);
        goto out;
    }
    uint64_t seq[2], t[2], v[2];
    int ok0 = slot_decode(buf, &seq[0], &t[0], &v[0]) == 0;
    int ok1 = slot_decode(buf + SLOT_BYTES, &seq[1], &t[1], &v[1]) == 0;
    if (!ok0 && !ok1) {
        io->close(io->ctx, fd);
        rc = ferry_err_set(err, FERRY_ECORRUPT,
                           "%s: both term/vote slots (offsets 0 and %u) fail their checksum", path,
                           SLOT_BYTES);
        goto out;
    }
    if (!ok0 || !ok1)
        log_warn("raftlog",
                 "%s: slot at offset %u is damaged (an interrupted save); using the other", path,
                 ok0 ? SLOT_BYTES : 0);
    int pick = !ok0 ? 1 : !ok1 ? 0 : (seq[1] > seq[0] ? 1 : 0);
    *term = t[pick];
    *vote = v[pick];
    l->meta_seq = seq[pick];
    l->meta_fd = fd;
out:
    ferry_free(path);
    return rc;
}

int meta_save(struct raftlog *l, uint64_t term, uint64_t vote, struct ferry_err *err)
{
    const struct raftlog_io *io = l->io;
    uint8_t buf[SLOT_BYTES];
    uint64_t seq = l->meta_seq + 1;
    slot_encode(buf, seq, term, vote);
    uint64_t off = (seq % 2 == 1) ? 0 : SLOT_BYTES;
    char *path = path_join(l->dir, "meta");
    if (path == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    int rc = io_write_all(io, l->meta_fd, buf, SLOT_BYTES, off, path, err);
    if (rc == 0) {
        int s = io->fdatasync(io->ctx, l->meta_fd);
        if (s < 0)
            rc = io_error(err, s, "fdatasync", path);
    }
    ferry_free(path);
    if (rc == 0)
        l->meta_seq = seq;
    return rc;
}
