/* snapshot.c - snapshot files beside the log: their format, the directory
 * listing, and the reader (raftlog_snapr_*, raftlog_snapshot_load).
 *
 * snap-<index>-<term>.dat (20 digits each) is a 512-byte header, zero-padded,
 *   [u32 magic "FSNP"][u32 version 2][u64 index][u64 term][u64 size]
 *   [u32 config_len][config, raft_config_encode][u32 crc32c of the data]
 *   [u32 crc32c of every header byte before it]
 * followed by exactly `size` bytes of data at offset 512. The fixed data
 * offset lets a writer stream the data first and write the header (with the
 * data checksum) last; snapwrite.c does that under a .tmp name and renames
 * the file only once it is complete and fsynced, so a snapshot file either
 * exists whole or not at all.
 *
 * A reader holds its own descriptor and never looks at the struct raftlog
 * again after opening: it keeps working when the file is pruned (POSIX keeps
 * an unlinked open file readable) and from any thread.
 */
#include "raft/log/internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/alloc.h"
#include "util/buf.h"
#include "util/crc32c.h"

#define SNAP_FIXED 44u /* header bytes besides the configuration */

struct raftlog_snapr {
    const struct raftlog_io *io;
    int fd;
    char *path;
    uint64_t size;     /* data bytes */
    uint32_t data_crc; /* from the header */
};

/* ---- names and listing --------------------------------------------------- */

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

struct snap_listing {
    uint64_t (*v)[2];
    size_t n, cap;
    int oom;
};

static int list_snap(void *arg, const char *name)
{
    struct snap_listing *ls = arg;
    uint64_t index, term;
    if (snapshot_parse_name(name, &index, &term) < 0)
        return 0;
    if (ls->n == ls->cap) {
        size_t cap = ls->cap ? ls->cap * 2 : 8;
        uint64_t(*v)[2] = ferry_realloc(ls->v, cap * sizeof *v);
        if (v == NULL) {
            ls->oom = 1;
            return 1;
        }
        ls->v = v;
        ls->cap = cap;
    }
    ls->v[ls->n][0] = index;
    ls->v[ls->n][1] = term;
    ls->n++;
    return 0;
}

static int cmp_newest_first(const void *a, const void *b)
{
    const uint64_t *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] < y[0] ? 1 : -1;
    return x[1] < y[1] ? 1 : x[1] > y[1] ? -1 : 0;
}

int snapshot_list(const struct raftlog_io *io, const char *dir, uint64_t (**v)[2], size_t *n,
                  struct ferry_err *err)
{
    struct snap_listing ls = {0};
    *v = NULL;
    *n = 0;
    int rc = io->listdir(io->ctx, dir, list_snap, &ls);
    if (ls.oom) {
        ferry_free(ls.v);
        return ferry_err_set(err, FERRY_ENOMEM, "listing %s: out of memory", dir);
    }
    if (rc < 0) {
        ferry_free(ls.v);
        return io_error(err, rc, "readdir", dir);
    }
    if (ls.n > 1)
        qsort(ls.v, ls.n, sizeof *ls.v, cmp_newest_first);
    *v = ls.v;
    *n = ls.n;
    return 0;
}

/* ---- header -------------------------------------------------------------- */

int snapshot_header_encode(uint8_t *out, const struct raft_snapshot_meta *m, uint32_t data_crc)
{
    memset(out, 0, SNAP_DATA_OFFSET);
    size_t clen = 0;
    if (raft_config_encode(&m->config, out + 36, SNAP_DATA_OFFSET - SNAP_FIXED, &clen) != 0)
        return FERRY_EINVAL;
    put_u32(out, SNAP_MAGIC);
    put_u32(out + 4, SNAP_VERSION);
    put_u64(out + 8, m->index);
    put_u64(out + 16, m->term);
    put_u64(out + 24, m->size);
    put_u32(out + 32, (uint32_t)clen);
    put_u32(out + 36 + clen, data_crc);
    put_u32(out + 40 + clen, crc32c(out, 40 + clen));
    return 0;
}

/* Check the header of the file at path (file_len bytes long), named for
 * {index, term}, and fill m and *data_crc. */
static int header_decode(const char *path, const uint8_t *h, uint64_t file_len, uint64_t index,
                         uint64_t term, struct raft_snapshot_meta *m, uint32_t *data_crc,
                         struct ferry_err *err)
{
    int rc = FERRY_ECORRUPT;
    if (get_u32(h) != SNAP_MAGIC || get_u32(h + 4) != SNAP_VERSION)
        return ferry_err_set(
            err, rc, "%s: not a version %u snapshot file (bad magic or version at offset 0)", path,
            SNAP_VERSION);
    uint32_t clen = get_u32(h + 32);
    if (clen > SNAP_DATA_OFFSET - SNAP_FIXED)
        return ferry_err_set(err, rc, "%s: impossible configuration length %u at offset 32", path,
                             clen);
    size_t hlen = SNAP_FIXED + clen;
    if (crc32c(h, hlen - 4) != get_u32(h + hlen - 4))
        return ferry_err_set(err, rc, "%s: header checksum mismatch (offset %zu)", path, hlen - 4);
    memset(m, 0, sizeof *m);
    m->index = get_u64(h + 8);
    m->term = get_u64(h + 16);
    m->size = get_u64(h + 24);
    if (m->index != index || m->term != term)
        return ferry_err_set(err, rc, "%s: header says index %" PRIu64 " term %" PRIu64, path,
                             m->index, m->term);
    if (raft_config_decode(h + 36, clen, &m->config) != 0)
        return ferry_err_set(err, rc, "%s: undecodable configuration at offset 36", path);
    if (file_len - SNAP_DATA_OFFSET != m->size)
        return ferry_err_set(
            err, rc, "%s: %" PRIu64 " data bytes after the header at offset %u, expected %" PRIu64,
            path, file_len - SNAP_DATA_OFFSET, SNAP_DATA_OFFSET, m->size);
    *data_crc = get_u32(h + hlen - 8);
    return 0;
}

int snapshot_crc_range(const struct raftlog_io *io, int fd, uint64_t off, uint64_t len,
                       const char *path, uint32_t *crc, struct ferry_err *err)
{
    *crc = 0;
    if (len == 0)
        return 0;
    size_t cap = len < SNAP_IO_CHUNK ? (size_t)len : SNAP_IO_CHUNK;
    uint8_t *buf = ferry_malloc(cap);
    if (buf == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "checksumming %s: out of memory", path);
    uint32_t c = 0;
    int rc = 0;
    while (len > 0) {
        size_t n = len < cap ? (size_t)len : cap;
        rc = io_read_all(io, fd, buf, n, off, path, err);
        if (rc < 0)
            break;
        c = crc32c_extend(c, buf, n);
        off += n;
        len -= n;
    }
    ferry_free(buf);
    *crc = c;
    return rc;
}

/* ---- reader -------------------------------------------------------------- */

static int data_mismatch(const char *path, struct ferry_err *err)
{
    return ferry_err_set(err, FERRY_ECORRUPT, "%s: data checksum mismatch (data at offset %u)",
                         path, SNAP_DATA_OFFSET);
}

static int open_file(struct raftlog_snapr **out, const struct raftlog_io *io, const char *dir,
                     uint64_t index, uint64_t term, struct raft_snapshot_meta *meta,
                     struct ferry_err *err)
{
    char name[64];
    snapshot_name(name, sizeof name, index, term);
    struct raftlog_snapr *r = ferry_calloc(1, sizeof *r);
    if (r == NULL || (r->path = path_join(dir, name)) == NULL) {
        ferry_free(r);
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    }
    r->io = io;
    int rc = 0;
    r->fd = io->open(io->ctx, r->path, O_RDONLY, 0);
    if (r->fd == -ENOENT) {
        rc = ferry_err_set(err, FERRY_ENOTFOUND,
                           "%s: deleted before it could be opened (newer snapshots replaced it)",
                           r->path);
        goto fail;
    }
    if (r->fd < 0) {
        rc = io_error(err, r->fd, "open", r->path);
        goto fail;
    }
    uint64_t len = 0;
    int s = io->fsize(io->ctx, r->fd, &len);
    if (s < 0) {
        rc = io_error(err, s, "fstat", r->path);
        goto fail;
    }
    if (len < SNAP_DATA_OFFSET) {
        rc = ferry_err_set(err, FERRY_ECORRUPT,
                           "%s: %" PRIu64 " bytes, shorter than the %u-byte header", r->path, len,
                           SNAP_DATA_OFFSET);
        goto fail;
    }
    uint8_t h[SNAP_DATA_OFFSET];
    rc = io_read_all(io, r->fd, h, sizeof h, 0, r->path, err);
    if (rc < 0)
        goto fail;
    struct raft_snapshot_meta m;
    rc = header_decode(r->path, h, len, index, term, &m, &r->data_crc, err);
    if (rc < 0)
        goto fail;
    r->size = m.size;
    if (meta != NULL)
        *meta = m;
    *out = r;
    return 0;
fail:
    raftlog_snapr_close(r);
    return rc;
}

int raftlog_snapr_open(struct raftlog_snapr **out, struct raftlog *l, uint64_t index,
                       struct raft_snapshot_meta *meta, struct ferry_err *err)
{
    struct ferry_err local;
    if (err == NULL)
        err = &local;
    *out = NULL;
    uint64_t(*v)[2];
    size_t n;
    int rc = snapshot_list(l->io, l->dir, &v, &n, err);
    if (rc < 0)
        return rc;
    size_t i = 0;
    if (index != 0)
        while (i < n && v[i][0] != index)
            i++;
    if (i == n) {
        ferry_free(v);
        if (index == 0)
            return ferry_err_set(err, FERRY_ENOTFOUND, "no snapshot in %s", l->dir);
        return ferry_err_set(err, FERRY_ENOTFOUND, "no snapshot at index %" PRIu64 " in %s", index,
                             l->dir);
    }
    uint64_t found_index = v[i][0], found_term = v[i][1];
    ferry_free(v);
    return open_file(out, l->io, l->dir, found_index, found_term, meta, err);
}

int raftlog_snapr_read(struct raftlog_snapr *r, uint64_t offset, void *buf, size_t n, size_t *got,
                       struct ferry_err *err)
{
    *got = 0;
    if (offset >= r->size || n == 0)
        return 0;
    if (n > r->size - offset)
        n = (size_t)(r->size - offset);
    int rc = io_read_all(r->io, r->fd, buf, n, SNAP_DATA_OFFSET + offset, r->path, err);
    if (rc < 0)
        return rc;
    *got = n;
    return 0;
}

int raftlog_snapr_verify(struct raftlog_snapr *r, struct ferry_err *err)
{
    uint32_t crc;
    int rc = snapshot_crc_range(r->io, r->fd, SNAP_DATA_OFFSET, r->size, r->path, &crc, err);
    if (rc < 0)
        return rc;
    return crc == r->data_crc ? 0 : data_mismatch(r->path, err);
}

void raftlog_snapr_close(struct raftlog_snapr *r)
{
    if (r == NULL)
        return;
    if (r->fd >= 0)
        r->io->close(r->io->ctx, r->fd);
    ferry_free(r->path);
    ferry_free(r);
}

int snapshot_check(struct raftlog *l, uint64_t index, uint64_t term, struct raft_snapshot_meta *m,
                   struct ferry_err *err)
{
    struct raftlog_snapr *r;
    int rc = open_file(&r, l->io, l->dir, index, term, m, err);
    if (rc < 0)
        return rc;
    rc = raftlog_snapr_verify(r, err);
    raftlog_snapr_close(r);
    return rc;
}

int raftlog_snapshot_load(struct raftlog *l, struct raft_snapshot_meta *meta, uint8_t **data,
                          uint64_t *len, struct ferry_err *err)
{
    struct ferry_err local;
    if (err == NULL)
        err = &local;
    *data = NULL;
    *len = 0;
    struct raftlog_snapr *r;
    struct raft_snapshot_meta m;
    int rc = raftlog_snapr_open(&r, l, 0, &m, err);
    if (rc < 0)
        return rc;
    uint8_t *buf = NULL;
    if ((uint64_t)(size_t)m.size != m.size) {
        rc = ferry_err_set(err, FERRY_ENOMEM, "%s: %" PRIu64 " bytes do not fit in memory", r->path,
                           m.size);
        goto out;
    }
    if (m.size > 0) {
        buf = ferry_malloc((size_t)m.size);
        if (buf == NULL) {
            rc = ferry_err_set(err, FERRY_ENOMEM, "loading %s: out of memory (%" PRIu64 " bytes)",
                               r->path, m.size);
            goto out;
        }
        size_t got;
        rc = raftlog_snapr_read(r, 0, buf, (size_t)m.size, &got, err);
        if (rc < 0)
            goto out;
    }
    if (crc32c(buf, (size_t)m.size) != r->data_crc) {
        rc = data_mismatch(r->path, err);
        goto out;
    }
    *meta = m;
    *data = buf;
    *len = m.size;
    buf = NULL;
out:
    ferry_free(buf);
    raftlog_snapr_close(r);
    return rc;
}
