/* raft/log/internal.h - private structures shared by the files of the disk log. */
#ifndef FERRY_RAFT_LOG_INTERNAL_H
#define FERRY_RAFT_LOG_INTERNAL_H

#include "raft/log/log.h"

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

    uint64_t snaps[2][2]; /* newest two snapshots: {index, term}; index 0 = none */

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
int snapshot_parse_name(const char *name, uint64_t *index, uint64_t *term);
void snapshot_name(char *out, size_t cap, uint64_t index, uint64_t term);
/* Read and verify the header of a snapshot file (data checksum too if data != NULL). */
int snapshot_read(struct raftlog *l, uint64_t index, uint64_t term, struct raft_snapshot_meta *m,
                  uint8_t **data, struct ferry_err *err);

#endif
