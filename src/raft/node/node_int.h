/* node_int.h - the driver's private state, shared by node.c and writer.c. */
#ifndef FERRY_RAFT_NODE_INT_H
#define FERRY_RAFT_NODE_INT_H

#include <pthread.h>

#include "raft/node/node.h"
#include "util/alloc.h"
#include "util/buf.h"

enum { WOP_APPEND = 1, WOP_COMPACT = 2 };

/* One operation for the writer thread; entries and payloads share the
 * allocation. */
struct wop {
    struct wop *next;
    int kind;
    uint64_t persist_from;
    uint32_t n;
    struct raft_entry *entries;
    uint64_t compact_to;
};

/* One entry of the address book (book.c): every node this one knows the
 * replication address of, itself included. */
struct rnode_peer {
    uint32_t id;
    char host[256];
    uint16_t port;
    uint8_t priority;
    char client_address[128];
    uint8_t configured; /* from cluster_membership: always known, never dropped */
    uint8_t linked;     /* a member of the transport now (links_sync) */
};

#define RNODE_BOOK_MAX RTRANSPORT_MAX_MEMBERS

struct rnode {
    uv_loop_t *loop;
    void *data;
    struct rnode_callbacks cb;

    /* configuration (copied) */
    uint64_t cluster_id;
    uint32_t self_id;
    char *log_dir;
    char *listen_host;
    uint16_t listen_port;
    char client_address[128];
    uint64_t max_segment_bytes;
    uint32_t max_generations;
    const struct raftlog_io *io;
    struct raft_options opts;
    struct raft_config bootstrap;
    struct rnode_peer peers[RNODE_BOOK_MAX]; /* the address book */
    uint32_t n_peers;
    int join;                         /* started with an empty configuration (cluster_join) */
    struct raft_config linked_config; /* configuration links_sync last acted on */

    /* the core and its log; core is NULL while storage has failed */
    struct raft *core;
    struct raftlog *log;
    struct raft_update up;
    int in_step;
    unsigned generation; /* bumped whenever the core is rebuilt */
    struct buf enc;      /* message encoding scratch */
    uint8_t role;
    uint32_t leader;
    uint64_t term;
    uint64_t log_peak; /* most payload bytes the core held since memory was last trimmed */
    int trim_due;      /* a compaction freed much of it: trim after the next step */

    /* libuv */
    struct rtransport transport;
    int transport_up;
    uv_timer_t tick;
    uv_timer_t retry;
    uv_async_t wake;
    unsigned handles;
    int stopping;
    void (*stop_cb)(void *data);
    void *stop_data;

    /* writer thread (writer.c) */
    pthread_t w_thread;
    int w_running;
    pthread_mutex_t mu;
    pthread_cond_t w_cv;      /* work queued or stop */
    pthread_cond_t w_idle_cv; /* queue empty and not busy */
    struct wop *w_head, *w_tail;
    int w_busy;
    int w_stop;
    int w_failed;
    struct ferry_err w_err;
    int w_new;
    uint64_t w_index, w_term;
    uint64_t w_syncs;
    uint64_t w_entries;

    /* snapshot being taken (threadpool) */
    int snap_taking;
    unsigned snap_generation;
    uv_work_t snap_work;
    void *snap_job;
    struct raftlog_snapw *snap_w;
    uint64_t snap_index;
    uint64_t snap_size;
    int snap_rc;
    struct ferry_err snap_err;
    uv_timer_t snap_retry;

    /* snapshot being received */
    struct raft_snapshot_meta incoming; /* of the last InstallSnapshot message */
    struct raftlog_snapw *recv_w;
    uint64_t recv_index;
    uint64_t recv_size;

    /* snapshot being sent */
    struct raftlog_snapr *send_r;
    uint64_t send_index;
    uint8_t *chunk;
    size_t chunk_cap;

    /* storage failure */
    int failed;
    struct ferry_err failure;
    uint64_t retry_ms;     /* current recovery interval */
    uint64_t recovered_ms; /* when storage last came back */
};

/* book.c: the address book, its file and its driver message */
#define BOOK_TAG 0xF2
struct rnode_peer *book_find(struct rnode *n, uint32_t id);
/* Add or update a learned entry; *changed says whether anything changed.
 * FERRY_EINVAL for a configured member under another address, FERRY_ELIMIT. */
int book_put(struct rnode *n, uint32_t id, const char *host, uint16_t port, int *changed,
             struct ferry_err *err);
void book_drop(struct rnode *n, uint32_t id);
/* <log_dir>/members: learned entries, one "id host port" line each. */
int book_load(struct rnode *n, struct ferry_err *err);
int book_save(struct rnode *n, struct ferry_err *err);
void book_send(struct rnode *n, uint32_t to);
void book_broadcast(struct rnode *n);
void book_recv(struct rnode *n, uint32_t from, const uint8_t *p, size_t len);
/* Make the transport's members match the book and the configuration. */
void links_sync(struct rnode *n);

int writer_start(struct rnode *n, struct ferry_err *err);
void writer_stop(struct rnode *n);
void writer_drain(struct rnode *n);
int writer_append(struct rnode *n, uint64_t persist_from, const struct raft_entry *es,
                  uint32_t count);
int writer_compact(struct rnode *n, uint64_t index);
/* 1 with the newest durable (index, term), 0 if nothing new, -1 with the
 * failure if the writer failed. */
int writer_take(struct rnode *n, uint64_t *index, uint64_t *term, struct ferry_err *failure);

#endif
