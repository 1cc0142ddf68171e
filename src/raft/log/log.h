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
 *   snap-<index>-<term>.dat            snapshot: a 512-byte header (metadata,
 *                                      configuration, data checksum) and the
 *                                      state machine's bytes; the newest two
 *                                      are kept
 *   *.tmp                              a file being written (deleted by
 *                                      raftlog_open: left by a crash)
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
 *   RAFT_UPDATE_INSTALL  the received chunks go through a snapshot writer
 *                        (raftlog_snapw_*, or raftlog_snapshot_save if held
 *                        whole), then raftlog_reset (drop the whole log) or
 *                        raftlog_compact (keep the suffix)
 *   TAKE_SNAPSHOT        a snapshot writer (or raftlog_snapshot_save)
 *   RAFT_UPDATE_COMPACT  raftlog_compact(compact_to)
 * and InstallSnapshot chunks are read with a snapshot reader (raftlog_snapr_*).
 *
 * THREADS AND BLOCKING: the module is synchronous and thread-agnostic. Every
 * call may block on the disk (those that say "durable on return" call
 * fdatasync/fsync); none takes a lock, so a struct raftlog must be used by one
 * thread at a time. The driver calls it from a writer thread or the libuv
 * threadpool so the event loop (heartbeats) never waits on the disk.
 * The snapshot calls are the exception: raftlog_snapw_*, raftlog_snapr_*,
 * raftlog_snapshot_save and raftlog_snapshot_load only read the log's
 * directory path and io (fixed at open) and update one atomic (the newest
 * durable snapshot's index), so they may run on other threads at the same
 * time as the log's other calls and as each other, provided the io functions
 * are thread-safe (raftlog_io_posix() is). Each writer or reader object is used
 * by one thread at a time.
 *
 * FAILURES: I/O errors return FERRY_EIO or FERRY_ENOSPC with a message naming
 * the file and the system call. After a failed write or sync the log refuses
 * every further change (FERRY_EIO, "log failed earlier ...") until it is
 * closed and reopened: a failed fsync cannot be retried safely, since the
 * kernel may already have dropped the dirty pages. A failed snapshot write
 * does not make the log refuse anything: that snapshot is lost (its temporary
 * file deleted) and the previous ones stay as they were.
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
    const struct raftlog_io *io; /* NULL: raftlog_io_posix(); must outlive the log and
                                    its snapshot readers */
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

/* Open (creating if needed) the log in o->dir, verify every record and the
 * newest snapshot (its data checksum streamed through a fixed buffer, never
 * loaded whole), delete temporary files a crash left, repair a torn tail and
 * fill *st. Blocks (reads everything; fsyncs on repair). No snapshot writer of
 * an earlier struct raftlog on the same directory may still be open. On
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
 * never deleted). "Stored" means found by raftlog_open or finished by a
 * snapshot writer on any thread, up to its directory fsync: a snapshot still
 * being written, or one whose finish failed, does not count. Blocks (unlink,
 * directory fsync). */
int raftlog_compact(struct raftlog *l, uint64_t index, struct ferry_err *err);

/* Delete every segment; the next append may start at any index (normally the
 * installed snapshot's index + 1), and raftlog_last_index reports the newest
 * stored snapshot's index until then. Durable on return. */
int raftlog_reset(struct raftlog *l, struct ferry_err *err);

/* Store term and vote; durable on return (one slot write + fdatasync). */
int raftlog_save_vote(struct raftlog *l, uint64_t term, uint64_t vote, struct ferry_err *err);

/* ---- snapshots ----------------------------------------------------------
 *
 * A snapshot file holds the metadata and the state machine's bytes ("data",
 * offsets below count from its first byte). It is written through a writer
 * under a temporary name and appears under its final name only complete and
 * durable; it is read through a reader with positional reads, so neither side
 * ever holds the data in memory whole. After each finished snapshot all but
 * the newest two are deleted (the previous one may still be streaming to a
 * follower); an open reader keeps reading a deleted file.
 */

/* A snapshot being written. */
struct raftlog_snapw;

/* Start snapshot `meta` (meta->size is ignored): create a temporary file in
 * the log's directory. Several writers may be open at once, even for the same
 * snapshot (each has its own file). l must stay open until the writer is
 * finished or aborted. Errors: FERRY_EINVAL (index or term 0, index below the
 * newest stored snapshot's, configuration not encodable), FERRY_EIO,
 * FERRY_ENOSPC, FERRY_ENOMEM. On success *out is freed by raftlog_snapw_finish
 * or raftlog_snapw_abort. */
int raftlog_snapw_open(struct raftlog_snapw **out, struct raftlog *l,
                       const struct raft_snapshot_meta *meta, struct ferry_err *err);

/* Write n data bytes at offset. offset may not lie past the end of what was
 * written so far (FERRY_EINVAL: no holes); writing again over earlier bytes is
 * allowed (a resent chunk, or a transfer restarted from 0). Not durable until
 * finish; blocks only on pwrite. After an I/O error (FERRY_EIO, FERRY_ENOSPC)
 * the writer refuses further writes and finish fails: abort it. p stays the
 * caller's. */
int raftlog_snapw_write(struct raftlog_snapw *w, uint64_t offset, const void *p, size_t n,
                        struct ferry_err *err);

/* End of the furthest byte written so far: the size of a snapshot written
 * sequentially. */
uint64_t raftlog_snapw_written(const struct raftlog_snapw *w);

/* Complete the snapshot with `size` data bytes (size <= raftlog_snapw_written;
 * bytes past size, left by a restarted transfer, are cut off): compute the data
 * checksum (reading the data back if the writes were not in order), write the
 * header, fsync, rename to snap-<index>-<term>.dat, fsync the directory,
 * record it as the newest stored snapshot (see raftlog_compact), and delete
 * all but the newest two snapshots. Durable and complete on success. Frees w
 * in every case; on failure the temporary file is deleted and the previous
 * snapshots are untouched. FERRY_EINVAL if size is too large or a newer
 * snapshot was stored meanwhile; FERRY_EIO / FERRY_ENOSPC naming the file and
 * the system call. (If only the final directory fsync fails, the file already
 * has its final name; it is complete, but it counts as stored only after the
 * next raftlog_open finds it.) */
int raftlog_snapw_finish(struct raftlog_snapw *w, uint64_t size, struct ferry_err *err);

/* Drop the snapshot: close and delete the temporary file, free w. NULL is
 * allowed. */
void raftlog_snapw_abort(struct raftlog_snapw *w);

/* An open snapshot file. */
struct raftlog_snapr;

/* Open the stored snapshot at `index` (0: the newest) and fill *meta (if not
 * NULL) from its header, which is checked (magic, version, header checksum,
 * name, file length); the data is not read (raftlog_snapr_verify does that).
 * The reader keeps its own descriptor and does not use l after this returns:
 * it keeps working after the file is deleted by newer snapshots and after l is
 * closed (the io must stay valid). Errors: FERRY_ENOTFOUND (no such snapshot,
 * or it was deleted before it could be opened), FERRY_ECORRUPT naming the file,
 * FERRY_EIO, FERRY_ENOMEM. On success *out is freed by raftlog_snapr_close. */
int raftlog_snapr_open(struct raftlog_snapr **out, struct raftlog *l, uint64_t index,
                       struct raft_snapshot_meta *meta, struct ferry_err *err);

/* Read up to n data bytes at offset into buf; *got is n, or fewer only when
 * the data ends first (0 at or past the end). Positional: calls may come in
 * any order. Blocks on pread. */
int raftlog_snapr_read(struct raftlog_snapr *r, uint64_t offset, void *buf, size_t n, size_t *got,
                       struct ferry_err *err);

/* Read all the data (through a fixed buffer) and check it against the
 * header's checksum: FERRY_ECORRUPT naming the file if it differs. */
int raftlog_snapr_verify(struct raftlog_snapr *r, struct ferry_err *err);

/* Close the file and free r. NULL is allowed. */
void raftlog_snapr_close(struct raftlog_snapr *r);

/* Write snapshot `meta` (meta->size is set to len) with its data held whole in
 * memory: raftlog_snapw_open, one raftlog_snapw_write, raftlog_snapw_finish.
 * Durable and complete on return; all but the newest two snapshots are then
 * deleted. data stays the caller's. */
int raftlog_snapshot_save(struct raftlog *l, const struct raft_snapshot_meta *meta,
                          const void *data, uint64_t len, struct ferry_err *err);

/* Load the newest snapshot whole: its metadata and data (checksum verified).
 * *data is heap memory the caller frees with ferry_free (NULL when *len is 0).
 * FERRY_ENOTFOUND if there is no snapshot. For large snapshots prefer a
 * reader. */
int raftlog_snapshot_load(struct raftlog *l, struct raft_snapshot_meta *meta, uint8_t **data,
                          uint64_t *len, struct ferry_err *err);

#endif
