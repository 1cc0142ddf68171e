/* snapshot.c - snapshot files beside the log.
 *
 * snap-<index>-<term>.dat (20 digits each) is
 *   [u32 magic "FSNP"][u32 version 1][u64 index][u64 term][u64 size]
 *   [u32 config_len][config, raft_config_encode][u32 crc32c of the data]
 *   [u32 crc32c of every header byte before it][size bytes of data]
 * It is written under a .tmp name, fsynced, renamed and the directory fsynced,
 * so a snapshot file either exists whole or not at all. The newest two are
 * kept: the previous one may still be streaming to a follower.
 */
#include "raft/log/internal.h"

#include <assert.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "util/alloc.h"
#include "util/buf.h"
#include "util/crc32c.h"
#include "util/log.h"

#define SNAP_MAGIC 0x46534E50u /* "FSNP" */
#define SNAP_VERSION 1u
#define SNAP_HEADER_MAX 512u

void snapshot_name(char *out, size_t cap, uint64_t index, uint64_t term)
{
    snprintf(out, cap, "snap-%020" PRIu64 "-%020" PRIu64 ".dat", index, term);
}

static int parse_digits(const char *p, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < 20; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        x = x * 10 + (uint64_t)(p[i] - '0');
    }
    *v = x;
    return 0;
}

int snapshot_parse_name(const char *name, uint64_t *index, uint64_t *term)
{
    /* snap- (5) + 20 + '-' + 20 + .dat (4) = 50 */
    if (strlen(name) != 50 || strncmp(name, "snap-", 5) != 0 || name[25] != '-' ||
        strcmp(name + 46, ".dat") != 0)
        return -1;
    if (parse_digits(name + 5, index) < 0 || parse_digits(name + 26, term) < 0)
        return -1;
    return 0;
}

/* Encode the header into out (SNAP_HEADER_MAX bytes); returns its length. */
static size_t header_encode(uint8_t *out, const struct raft_snapshot_meta *m, uint64_t size,
                            uint32_t data_crc)
{
    size_t clen = 0;
    int rc = raft_config_encode(&m->config, out + 36, SNAP_HEADER_MAX - 44, &clen);
    (void)rc;
    assert(rc == 0);
    put_u32(out, SNAP_MAGIC);
    put_u32(out + 4, SNAP_VERSION);
    put_u64(out + 8, m->index);
    put_u64(out + 16, m->term);
    put_u64(out + 24, size);
    put_u32(out + 32, (uint32_t)clen);
    put_u32(out + 36 + clen, data_crc);
    put_u32(out + 40 + clen, crc32c(out, 40 + clen));
    return 44 + clen;
}

int snapshot_read(struct raftlog *l, uint64_t index, uint64_t term, struct raft_snapshot_meta *m,
                  uint8_t **data, struct ferry_err *err)
{
    const struct raftlog_io *io = l->io;
    char name[64];
    snapshot_name(name, sizeof name, index, term);
    char *path = path_join(l->dir, name);
    if (path == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    uint8_t *buf = NULL;
    uint64_t len = 0;
    int rc = io_read_file(io, path, &buf, &len, err);
    if (rc < 0)
        goto out;
    rc = FERRY_ECORRUPT;
    if (len < 44 || get_u32(buf) != SNAP_MAGIC || get_u32(buf + 4) != SNAP_VERSION) {
        ferry_err_set(err, rc, "%s: not a snapshot file (bad magic or version at offset 0)", path);
        goto out;
    }
    uint32_t clen = get_u32(buf + 32);
    if (clen > SNAP_HEADER_MAX - 44 || 44 + (uint64_t)clen > len) {
        ferry_err_set(err, rc, "%s: impossible configuration length %u at offset 32", path, clen);
        goto out;
    }
    size_t hlen = 44 + clen;
    if (crc32c(buf, hlen - 4) != get_u32(buf + hlen - 4)) {
        ferry_err_set(err, rc, "%s: header checksum mismatch (offset %zu)", path, hlen - 4);
        goto out;
    }
    memset(m, 0, sizeof *m);
    m->index = get_u64(buf + 8);
    m->term = get_u64(buf + 16);
    m->size = get_u64(buf + 24);
    if (m->index != index || m->term != term) {
        ferry_err_set(err, rc, "%s: header says index %" PRIu64 " term %" PRIu64, path, m->index,
                      m->term);
        goto out;
    }
    if (raft_config_decode(buf + 36, clen, &m->config) != 0) {
        ferry_err_set(err, rc, "%s: undecodable configuration at offset 36", path);
        goto out;
    }
    if (len - hlen != m->size) {
        ferry_err_set(
            err, rc, "%s: %" PRIu64 " data bytes after the header at offset %zu, expected %" PRIu64,
            path, len - hlen, hlen, m->size);
        goto out;
    }
    if (crc32c(buf + hlen, (size_t)m->size) != get_u32(buf + hlen - 8)) {
        ferry_err_set(err, rc, "%s: data checksum mismatch (data at offset %zu)", path, hlen);
        goto out;
    }
    rc = 0;
    if (data != NULL) {
        *data = NULL;
        if (m->size > 0) {
            *data = ferry_malloc((size_t)m->size);
            if (*data == NULL) {
                rc = ferry_err_set(err, FERRY_ENOMEM, "%s: out of memory", path);
                goto out;
            }
            memcpy(*data, buf + hlen, (size_t)m->size);
        }
    }
out:
    ferry_free(buf);
    ferry_free(path);
    return rc;
}

static void delete_snapshot(struct raftlog *l, uint64_t index, uint64_t term)
{
    char name[64];
    snapshot_name(name, sizeof name, index, term);
    char *path = path_join(l->dir, name);
    if (path == NULL)
        return;
    int rc = l->io->unlink(l->io->ctx, path);
    if (rc < 0)
        log_warn("raftlog", "cannot delete old snapshot %s: %s", path, strerror(-rc));
    ferry_free(path);
}

int raftlog_snapshot_save(struct raftlog *l, const struct raft_snapshot_meta *meta,
                          const void *data, uint64_t len, struct ferry_err *err)
{
    const struct raftlog_io *io = l->io;
    if (meta->index == 0 || meta->term == 0)
        return ferry_err_set(err, FERRY_EINVAL, "snapshot needs a non-zero index and term");
    if (meta->index < l->snaps[0][0])
        return ferry_err_set(err, FERRY_EINVAL,
                             "snapshot at index %" PRIu64 " is older than the stored one (%" PRIu64
                             ")",
                             meta->index, l->snaps[0][0]);
    char name[64], tmpname[72];
    snapshot_name(name, sizeof name, meta->index, meta->term);
    snprintf(tmpname, sizeof tmpname, "%s.tmp", name);
    char *path = path_join(l->dir, name);
    char *tmp = path_join(l->dir, tmpname);
    int rc = 0;
    if (path == NULL || tmp == NULL) {
        rc = ferry_err_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    uint8_t hdr[SNAP_HEADER_MAX];
    size_t hlen = header_encode(hdr, meta, len, crc32c(data, (size_t)len));
    int fd = io->open(io->ctx, tmp, O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        rc = io_error(err, fd, "open", tmp);
        goto out;
    }
    rc = io_write_all(io, fd, hdr, hlen, 0, tmp, err);
    if (rc == 0 && len > 0)
        rc = io_write_all(io, fd, data, (size_t)len, hlen, tmp, err);
    if (rc == 0) {
        int s = io->fsync(io->ctx, fd);
        if (s < 0)
            rc = io_error(err, s, "fsync", tmp);
    }
    io->close(io->ctx, fd);
    if (rc == 0) {
        int r = io->rename(io->ctx, tmp, path);
        if (r < 0)
            rc = io_error(err, r, "rename", tmp);
    }
    if (rc < 0) {
        io->unlink(io->ctx, tmp);
        goto out;
    }
    rc = io_sync_dir(io, l->dir, err);
    if (rc < 0)
        goto out;
    if (meta->index != l->snaps[0][0] || meta->term != l->snaps[0][1]) {
        if (l->snaps[1][0] != 0)
            delete_snapshot(l, l->snaps[1][0], l->snaps[1][1]);
        l->snaps[1][0] = l->snaps[0][0];
        l->snaps[1][1] = l->snaps[0][1];
        l->snaps[0][0] = meta->index;
        l->snaps[0][1] = meta->term;
    }
out:
    ferry_free(path);
    ferry_free(tmp);
    return rc;
}

int raftlog_snapshot_load(struct raftlog *l, struct raft_snapshot_meta *meta, uint8_t **data,
                          uint64_t *len, struct ferry_err *err)
{
    *data = NULL;
    *len = 0;
    if (l->snaps[0][0] == 0)
        return ferry_err_set(err, FERRY_ENOTFOUND, "no snapshot in %s", l->dir);
    int rc = snapshot_read(l, l->snaps[0][0], l->snaps[0][1], meta, data, err);
    if (rc == 0)
        *len = meta->size;
    return rc;
}
