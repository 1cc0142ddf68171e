/* io.c - the POSIX file-system seam and the helpers that turn its errors into
 * messages naming the file and the system call. */
#include "raft/log/internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/alloc.h"

static int px_open(void *ctx, const char *path, int flags, int mode)
{
    int fd;
    do
        fd = open(path, flags | O_CLOEXEC, mode);
    while (fd < 0 && errno == EINTR);
    return fd < 0 ? -errno : fd;
}

static int px_close(void *ctx, int fd)
{
    return close(fd) < 0 ? -errno : 0;
}

static ssize_t px_pread(void *ctx, int fd, void *buf, size_t n, uint64_t off)
{
    ssize_t r;
    do
        r = pread(fd, buf, n, (off_t)off);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static ssize_t px_pwrite(void *ctx, int fd, const void *buf, size_t n, uint64_t off)
{
    ssize_t r;
    do
        r = pwrite(fd, buf, n, (off_t)off);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : r;
}

static int px_fdatasync(void *ctx, int fd)
{
    return fdatasync(fd) < 0 ? -errno : 0;
}

static int px_fsync(void *ctx, int fd)
{
    return fsync(fd) < 0 ? -errno : 0;
}

static int px_ftruncate(void *ctx, int fd, uint64_t len)
{
    return ftruncate(fd, (off_t)len) < 0 ? -errno : 0;
}

static int px_fsize(void *ctx, int fd, uint64_t *size)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    *size = (uint64_t)st.st_size;
    return 0;
}

static int px_rename(void *ctx, const char *from, const char *to)
{
    return rename(from, to) < 0 ? -errno : 0;
}

static int px_unlink(void *ctx, const char *path)
{
    return unlink(path) < 0 ? -errno : 0;
}

static int px_mkdir(void *ctx, const char *path, int mode)
{
    return mkdir(path, (mode_t)mode) < 0 ? -errno : 0;
}

static int px_listdir(void *ctx, const char *dir, int (*fn)(void *arg, const char *name), void *arg)
{
    DIR *d = opendir(dir);
    if (d == NULL)
        return -errno;
    int rc = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        rc = fn(arg, de->d_name);
        if (rc != 0)
            break;
        errno = 0;
    }
    if (rc == 0 && de == NULL && errno != 0)
        rc = -errno;
    closedir(d);
    return rc;
}

static const struct raftlog_io posix_io = {
    .ctx = NULL,
    .open = px_open,
    .close = px_close,
    .pread = px_pread,
    .pwrite = px_pwrite,
    .fdatasync = px_fdatasync,
    .fsync = px_fsync,
    .ftruncate = px_ftruncate,
    .fsize = px_fsize,
    .rename = px_rename,
    .unlink = px_unlink,
    .mkdir = px_mkdir,
    .listdir = px_listdir,
};

const struct raftlog_io *raftlog_io_posix(void)
{
    return &posix_io;
}

char *path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = ferry_malloc(a + b + 2);
    if (p == NULL)
        return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

int io_error(struct ferry_err *err, int neg_errno, const char *syscall, const char *path)
{
    int e = -neg_errno;
    int code = (e == ENOSPC || e == EDQUOT) ? FERRY_ENOSPC : FERRY_EIO;
    return ferry_err_set(err, code, "%s %s: %s", syscall, path, strerror(e));
}

int io_write_all(const struct raftlog_io *io, int fd, const void *p, size_t n, uint64_t off,
                 const char *path, struct ferry_err *err)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = io->pwrite(io->ctx, fd, b, n, off);
        if (w < 0)
            return io_error(err, (int)w, "pwrite", path);
        if (w == 0)
            return io_error(err, -EIO, "pwrite (wrote nothing)", path);
        b += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

int io_read_all(const struct raftlog_io *io, int fd, void *p, size_t n, uint64_t off,
                const char *path, struct ferry_err *err)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t r = io->pread(io->ctx, fd, b, n, off);
        if (r < 0)
            return io_error(err, (int)r, "pread", path);
        if (r == 0)
            return ferry_err_set(err, FERRY_EIO, "pread %s: unexpected end of file at offset %llu",
                                 path, (unsigned long long)off);
        b += r;
        n -= (size_t)r;
        off += (uint64_t)r;
    }
    return 0;
}

int io_sync_dir(const struct raftlog_io *io, const char *dir, struct ferry_err *err)
{
    int fd = io->open(io->ctx, dir, O_RDONLY | O_DIRECTORY, 0);
    if (fd < 0)
        return io_error(err, fd, "open", dir);
    int rc = io->fsync(io->ctx, fd);
    io->close(io->ctx, fd);
    if (rc < 0)
        return io_error(err, rc, "fsync", dir);
    return 0;
}

int io_read_file(const struct raftlog_io *io, const char *path, uint8_t **data, uint64_t *len,
                 struct ferry_err *err)
{
    *data = NULL;
    *len = 0;
    int fd = io->open(io->ctx, path, O_RDONLY, 0);
    if (fd < 0)
        return io_error(err, fd, "open", path);
    uint64_t size;
    int rc = io->fsize(io->ctx, fd, &size);
    if (rc < 0) {
        io->close(io->ctx, fd);
        return io_error(err, rc, "fstat", path);
    }
    uint8_t *buf = NULL;
    if (size > 0) {
        buf = ferry_malloc((size_t)size);
        if (buf == NULL) {
            io->close(io->ctx, fd);
            return ferry_err_set(err, FERRY_ENOMEM, "reading %s: out of memory (%llu bytes)", path,
                                 (unsigned long long)size);
        }
        rc = io_read_all(io, fd, buf, (size_t)size, 0, path, err);
        if (rc < 0) {
            ferry_free(buf);
            io->close(io->ctx, fd);
            return rc;
        }
    }
    io->close(io->ctx, fd);
    *data = buf;
    *len = size;
    return 0;
}
