/* raft/log/internal.h - private structures shared by the files of the disk log. */
#ifndef FERRY_RAFT_LOG_INTERNAL_H
#define FERRY_RAFT_LOG_INTERNAL_H

#include "raft/log/log.h"

#include <stdatomic.h>
#include <stdint.h>

#include "util/buf.h"

#define RECORD_HEADER 25u /* u32 length, u32 crc, u64 term, u64 index, u8 type */
#define RECORD_FIXED 17u  /* bytes counted by `length` besides the payload */
#define RECORD_MAX_LEN (RECORD_FIXED + RAFT_MAX_ENTRY_BYTES)

/* One segment file. offsets[i] is the file offset of entry first + i. */
struct segment {
    uint64_t first; /* first index (from the name) */
    uint64_t last;  /* last index held; first - 1 when empty */
    uint64_t size;  /* bytes of valid records */
    uint64_t *offsets;
    uint64_t *terms;
    uint64_t n, cap;
};

struct raftlog {
    const struct raftlog_io *io;
    char *dir;
    uint64_t max_segment_bytes;
    uint32_t max_generations;

    struct segment *segs; /* ascending by first index; the last one is open for appends */
    uint32_t n_segs, cap_segs;
    int fd;          /* newest segment's descriptor, -1 if none */
    int unsynced;    /* fd was written or truncated since its last fdatasync */
    int dir_dirty;   /* a segment was created or deleted since the last directory fsync */
    uint64_t base;   /* with no segment: last index reported (the next append may be any) */
    struct buf wbuf; /* records encoded for the next write */

    int meta_fd;
    uint64_t meta_seq;

    /* Index of the newest snapshot known to be durable (0: none). Set by
     * raftlog_open; raised (never lowered) by whichever thread finishes a
     * snapshot writer, after the directory fsync. The only field of the log a
     * snapshot writer changes; everything else it reads (io, dir) never
     * changes after open. */
    _Atomic uint64_t snap_index;

    int failed; /* first write/sync error code; refuses changes */
    char failed_msg[FERRY_ERRMSG_MAX];
};

/* io.c */
char *path_join(const char *dir, const char *name);
/* Map -errno from `syscall` on `path` to FERRY_EIO / FERRY_ENOSPC with a message. */
int io_error(struct ferry_err *err, int neg_errno, const char *syscall, const char *path);
int io_write_all(const struct raftlog_io *io, int fd, const void *p, size_t n, uint64_t off,
                 const char *path, struct ferry_err *err);
int io_read_all(const struct raftlog_io *io, int fd, void *p, size_t n, uint64_t off,
                const char *path, struct ferry_err *err);
int io_sync_dir(const struct raftlog_io *io, const char *dir, struct ferry_err *err);
/* Read a whole file into heap memory (ferry_free). */
int io_read_file(const struct raftlog_io *io, const char *path, uint8_t **data, uint64_t *len,
                 struct ferry_err *err);

/* segment.c */
void segment_name(char *out, size_t cap, uint64_t first);
int segment_parse_name(const char *name, uint64_t *first);
size_t record_size(uint32_t payload_len);
void record_encode(uint8_t *out, const struct raft_entry *e);
int segment_push(struct segment *s, uint64_t offset, uint64_t term);
void segment_free(struct segment *s);
/* Verify one segment's bytes, filling s (s->first set by the caller). is_last
 * allows a torn tail; *valid_len is where the valid records end. */
int segment_scan(const char *path, const uint8_t *buf, uint64_t len, int is_last, struct segment *s,
                 uint64_t *valid_len, struct ferry_err *err);

/* meta.c */
int meta_open(struct raftlog *l, uint64_t *term, uint64_t *vote, struct ferry_err *err);
int meta_save(struct raftlog *l, uint64_t term, uint64_t vote, struct ferry_err *err);

/* snapshot.c */
#define SNAP_MAGIC 0x46534E50u /* "FSNP" */
#define SNAP_VERSION 2u
#define SNAP_DATA_OFFSET 512u      /* the header is zero-padded to this size; data follows */
#define SNAP_IO_CHUNK (256u << 10) /* buffer for streaming a checksum */

int snapshot_parse_name(const char *name, uint64_t *index, uint64_t *term);
void snapshot_name(char *out, size_t cap, uint64_t index, uint64_t term);
/* The snapshots in dir, newest (highest index, then term) first, as
 * {index, term} pairs in heap memory (*v, ferry_free; NULL when *n is 0). */
int snapshot_list(const struct raftlog_io *io, const char *dir, uint64_t (**v)[2], size_t *n,
                  struct ferry_err *err);
/* Fill out[SNAP_DATA_OFFSET] with the header; FERRY_EINVAL if the
 * configuration cannot be encoded. */
int snapshot_header_encode(uint8_t *out, const struct raft_snapshot_meta *m, uint32_t data_crc);
/* CRC-32C of `len` bytes of fd from file offset `off`, read in SNAP_IO_CHUNK pieces. */
int snapshot_crc_range(const struct raftlog_io *io, int fd, uint64_t off, uint64_t len,
                       const char *path, uint32_t *crc, struct ferry_err *err);
/* Open snapshot {index, term}, check its header, length and data checksum,
 * and fill m (for raftlog_open). */
int snapshot_check(struct raftlog *l, uint64_t index, uint64_t term, struct raft_snapshot_meta *m,
                   struct ferry_err *err);

#endif
