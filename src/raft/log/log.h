/* raft/log/log.h - the Raft log on disk: segments, term/vote, snapshots.
 *
 * One directory (`replication_logfile_directory`) holds everything a node's
 * Raft core needs to restart (docs/raft-log.md has the byte layouts):
 *
 *   seg-<first index, 20 digits>.log   log segments, each at most
 *                                      `max_segment_bytes` (one record may
 *                                      exceed it alone); only the newest is
 *                                      open for appends, the others are
 *                                      immutable
 *   meta                               term and vote, two alternating
 *                                      checksummed slots
 *   snap-<index>-<term>.dat            snapshot: metadata, configuration and
 *                                      the state machine's bytes; the newest
 *                                      two are kept
 *
 * Every record is [u32 length][u32 crc32c][u64 term][u64 index][u8 type]
 * [payload], big-endian; length counts the bytes after the crc field and the
 * crc covers them.
 *
 * raftlog_open scans the directory and returns the state raft_restore takes.
 * A torn tail (the last record of the last segment short or failing its
 * checksum, with nothing valid after it) is cut off and reported; any other
 * damage fails with FERRY_ECORRUPT naming the file and offset: entries that
 * may have been acknowledged are never dropped silently.
 *
 * The functions map to the core's ORDERING CONTRACT (raft/core/raft.h):
 *   RAFT_UPDATE_STATE    raftlog_save_vote (durable on return)
 *   RAFT_UPDATE_ENTRIES  raftlog_append(persist_from, persist, n_persist),
 *                        then raftlog_sync, then RAFT_EV_PERSISTED
 *                        {raftlog_last_index, its term}; several appends may
 *                        share one sync (group commit)
 *   RAFT_UPDATE_INSTALL  raftlog_snapshot_save, then raftlog_reset (drop the
 *                        whole log) or raftlog_compact (keep the suffix)
 *   TAKE_SNAPSHOT        raftlog_snapshot_save
 *   RAFT_UPDATE_COMPACT  raftlog_compact(compact_to)
 *
 * THREADS AND BLOCKING: the module is synchronous and thread-agnostic. Every
 * call may block on the disk (those that say "durable on return" call
 * fdatasync/fsync); none takes a lock, so a struct raftlog must be used by one
 * thread at a time. The driver calls it from a writer thread or the libuv
 * threadpool so the event loop (heartbeats) never waits on the disk.
 *
 * FAILURES: I/O errors return FERRY_EIO or FERRY_ENOSPC with a message naming
 * the file and the system call. After a failed write or sync the log refuses
 * every further change (FERRY_EIO, "log failed earlier ...") until it is
 * closed and reopened: a failed fsync cannot be retried safely, since the
 * kernel may already have dropped the dirty pages.
 *
 * Names use the prefix raftlog_ (the core's in-memory log already owns rlog_).
 * All file operations go through struct raftlog_io, so tests can inject
 * errors, short writes and power loss.
 */
#ifndef FERRY_RAFT_LOG_LOG_H
#define FERRY_RAFT_LOG_LOG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "raft/core/raft.h"
#include "util/err.h"

/* The file-system seam. Each call returns 0 (or a byte count / fd) on success
 * and a negative errno on failure; it never sets errno for the caller. Reads
 * and writes may be short. `ctx` is passed back unchanged. */
struct raftlog_io {
    void *ctx;
    int (*open)(void *ctx, const char *path, int flags, int mode); /* fd */
    int (*close)(void *ctx, int fd);
    ssize_t (*pread)(void *ctx, int fd, void *buf, size_t n, uint64_t off);
    ssize_t (*pwrite)(void *ctx, int fd, const void *buf, size_t n, uint64_t off);
    int (*fdatasync)(void *ctx, int fd);
    int (*fsync)(void *ctx, int fd); /* also used on directories */
    int (*ftruncate)(void *ctx, int fd, uint64_t len);
    int (*fsize)(void *ctx, int fd, uint64_t *size);
    int (*rename)(void *ctx, const char *from, const char *to);
    int (*unlink)(void *ctx, const char *path);
    int (*mkdir)(void *ctx, const char *path, int mode); /* -EEXIST if it exists */
    /* Call fn(arg, name) for every entry of dir except "." and ".."; stops and
     * returns fn's value if it is non-zero. */
    int (*listdir)(void *ctx, const char *dir, int (*fn)(void *arg, const char *name), void *arg);
};

/* The POSIX implementation (ctx unused). A static singleton; never freed. */
const struct raftlog_io *raftlog_io_posix(void);

struct raftlog_options {
    const char *dir;             /* created if missing (its parent must exist); copied */
    uint64_t max_segment_bytes;  /* logfile_max_size; 0: 64 MiB */
    uint32_t max_generations;    /* logfile_max_generations: closed segments kept behind a
                                    snapshot */
    const struct raftlog_io *io; /* NULL: raftlog_io_posix(); must outlive the log */
};

/* What raftlog_open found. `p` is exactly what raft_restore takes: term, vote,
 * the newest snapshot's metadata (index 0: none) and the stored entries after
 * it, in index order. The state owns the entries and their payloads; free it
 * with raftlog_state_free (p may be handed to raft_restore first: the core
 * copies what it keeps). */
struct raftlog_state {
    struct raft_persisted p;
    uint64_t torn_bytes;  /* bytes cut from the end of the last segment (0: clean) */
    uint64_t first_index; /* first index held in the segments (0: none) */
    uint32_t n_segments;
    struct raft_entry *entries_; /* private: owns p.entries */
};

void raftlog_state_free(struct raftlog_state *st);

struct raftlog;

/* Open (creating if needed) the log in o->dir, verify every record, repair a
 * torn tail and fill *st. Blocks (reads everything; fsyncs on repair). On
 * success *out is freed by raftlog_close and *st by raftlog_state_free. Errors:
 * FERRY_ECORRUPT (file and offset in err), FERRY_EIO, FERRY_ENOMEM. */
int raftlog_open(struct raftlog **out, const struct raftlog_options *o, struct raftlog_state *st,
                 struct ferry_err *err);

/* Close the files. Does not sync: what was appended after the last
 * raftlog_sync may be lost, as after a crash. NULL is allowed. */
void raftlog_close(struct raftlog *l);

/* Index of the last stored entry (or of the point the log was reset to, minus
 * one); 0 when nothing was ever stored. */
uint64_t raftlog_last_index(const struct raftlog *l);
/* Term of the last stored entry (0 if none). */
uint64_t raftlog_last_term(const struct raftlog *l);
/* Index of the first stored entry (0 if the log is empty). */
uint64_t raftlog_first_index(const struct raftlog *l);
/* Number of segment files (for tests and metrics). */
uint32_t raftlog_segment_count(const struct raftlog *l);
/* 1 if an earlier write or sync failed and the log refuses changes. */
int raftlog_failed(const struct raftlog *l);

/* Append n entries (indexes consecutive). If persist_from is non-zero and at
 * or below the last index, every stored entry at or after persist_from is
 * discarded first (raftlog_truncate). entries[0].index must then be the next
 * index (any index if the log is empty). Not durable until raftlog_sync;
 * blocks only on write(2), and on fdatasync when a full segment is closed.
 * The entries stay the caller's. */
int raftlog_append(struct raftlog *l, uint64_t persist_from, const struct raft_entry *entries,
                   uint32_t n, struct ferry_err *err);

/* Make everything appended (and truncated) so far durable: one fdatasync of
 * the open segment, plus a directory fsync if segments were created or
 * deleted. Blocks. */
int raftlog_sync(struct raftlog *l, struct ferry_err *err);

/* Discard every entry at or after index (index <= last + 1; segments after it
 * are deleted newest first, so a crash leaves a prefix of the old log).
 * Durable after the next raftlog_sync. */
int raftlog_truncate(struct raftlog *l, uint64_t index, struct ferry_err *err);

/* Delete closed segments whose entries are all at or below index, keeping the
 * newest max_generations of them; the open segment is never deleted, and index
 * is lowered to the newest stored snapshot's (entries no snapshot covers are
 * never deleted). Blocks (unlink, directory fsync). */
int raftlog_compact(struct raftlog *l, uint64_t index, struct ferry_err *err);

/* Delete every segment; the next append may start at any index (normally the
 * installed snapshot's index + 1). Durable on return. */
int raftlog_reset(struct raftlog *l, struct ferry_err *err);

/* Store term and vote; durable on return (one slot write + fdatasync). */
int raftlog_save_vote(struct raftlog *l, uint64_t term, uint64_t vote, struct ferry_err *err);

/* Write snapshot `meta` (meta->size is set to len) with its data to
 * snap-<index>-<term>.dat: temp file, fsync, rename, directory fsync, so it is
 * durable and complete on return. Then all but the newest two snapshots are
 * deleted (the previous one may still be streaming to a follower). data stays
 * the caller's. */
int raftlog_snapshot_save(struct raftlog *l, const struct raft_snapshot_meta *meta,
                          const void *data, uint64_t len, struct ferry_err *err);

/* Load the newest snapshot: its metadata and data (checksum verified).
 * *data is heap memory the caller frees with ferry_free (NULL when *len is 0).
 * FERRY_ENOTFOUND if there is no snapshot. */
int raftlog_snapshot_load(struct raftlog *l, struct raft_snapshot_meta *meta, uint8_t **data,
                          uint64_t *len, struct ferry_err *err);

#endif
