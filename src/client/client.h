/* client/client.h - libferry's internals shared by its .c files.
 *
 *   client.c  lifecycle (create, connect, close), errors, the request
 *             machinery: submit, flush, wait, the async window
 *   io.c      the I/O thread: read, frame dispatch, callbacks, timeouts,
 *             ENOTLEADER redirects, connection failure
 *   ops.c     publish, push and the admin requests
 *   sub.c     subscriptions, consumers, the poll queue, ack/nack
 *   failover.c reconnecting after a lost connection: the server list,
 *             backoff, re-sending pending requests, resubscribing
 *
 * Locking: one mutex per client (c->mu) guards everything below except the
 * fields marked "I/O thread only". It is never held while a callback runs
 * or while connecting. Socket writes happen under the mutex (the socket is
 * non-blocking, so a write never waits); only the I/O thread reads.
 *
 * Every pending request sits in c->reqs (by request id) and in c->inflight
 * (in send order) and keeps its encoded frame, so the whole pending set can
 * be re-sent on a new connection after a redirect or a failover.
 */
#ifndef FERRY_CLIENT_CLIENT_H
#define FERRY_CLIENT_CLIENT_H

#include "client/conn.h"
#include "proto/proto.h"
#include "util/buf.h"
#include "util/list.h"
#include "util/map.h"

#include <ferry/ferry.h>
#include <pthread.h>
#include <stdint.h>

#define CLIENT_MSG_MAX CONN_MSG_MAX
#define CLIENT_FLUSH_BYTES (64u * 1024u) /* a batch this large is written at once */
#define CLIENT_READ_CHUNK (256u * 1024u) /* bytes asked of each read() */
#define CLIENT_POOL_MAX 1024u            /* idle async requests kept for reuse */
#define CLIENT_HELD_MAX 65536u           /* unacked deliveries remembered per consumer */

enum client_state {
    CLIENT_IDLE,        /* not connected yet */
    CLIENT_READY,       /* connected; requests are written */
    CLIENT_REDIRECTING, /* the I/O thread is connecting to the leader; writes wait */
    CLIENT_RECONNECTING, /* the connection was lost; the I/O thread is reconnecting and
                            requests queue up (failover.c) */
    CLIENT_BROKEN,      /* the connection failed for good: conn_code/conn_msg say why */
    CLIENT_CLOSING      /* ferry_client_close() is tearing down */
};

enum req_kind {
    REQ_SYNC, /* a caller waits on req->cond */
    REQ_ASYNC, /* ferry_publish_async/ferry_push_async: req->cb on the I/O thread */
    REQ_RESUB  /* the client's own SUBSCRIBE/CONSUME re-establishing req->sub after a
                  reconnect; freed by the I/O thread */
};

struct req {
    struct list link;  /* c->inflight, send order */
    struct list alink; /* REQ_ASYNC: c->async_q, send order (= deadline order) */
    uint32_t id;
    uint8_t op;   /* PROTO_* request op */
    uint8_t kind; /* enum req_kind */
    uint8_t done; /* REQ_SYNC: the outcome is in status/reply/msg */
    uint64_t sent_ns;
    uint64_t deadline_ns;
    uint64_t stream_end; /* c->out_total just after this frame was appended */
    struct buf frame;    /* the encoded request, for re-sending */
    size_t payload_len;  /* PUBLISH/PUSH: checked against the server's max_message */
    uint32_t seq_off;    /* persistent PUBLISH/PUSH: offset of producer_seq in frame; 0 none */
    uint64_t seq;        /* the producer sequence given at submission */
    uint64_t resend_ns;  /* answered "outcome unknown": send again at this time (0: no) */
    uint8_t refused;     /* answered ENOTLEADER: not applied, so it is sent again */
    int status;
    char *msg; /* heap; the error message, or NULL */
    /* REQ_SYNC */
    pthread_cond_t *cond;
    uint8_t reply_op;
    struct buf reply;      /* copy of the reply body */
    struct ferry_sub *sub; /* SUBSCRIBE/CONSUME: registered when the reply arrives */
    /* REQ_ASYNC */
    ferry_publish_cb cb;
    void *arg;
    uint64_t result_id;
};

struct qmsg { /* a poll-mode message: header and payload in one block */
    struct list link;
    ferry_message_t m;
    uint8_t data[];
};

struct ferry_sub {
    ferry_client_t *c;
    struct list link; /* c->all_subs */
    int consumer;     /* 1: queue consumer; 0: channel subscription */
    int durable;
    uint64_t id;
    uint64_t next_event_id;
    char name[FERRY_NAME_MAX + 1];
    /* to subscribe again after a reconnect */
    char durable_name[FERRY_NAME_MAX + 1];
    uint32_t window;
    uint64_t last_id; /* channel: the newest event id handed to the caller (0: none) */
    struct umap held; /* consumer: item id -> delivery count, for the deliveries handed to the
                         caller and not acked or nacked yet (bounded by CLIENT_HELD_MAX) */
    int resub;        /* lost with the connection; a REQ_RESUB re-establishes it */
    uint64_t acked;   /* durable: the highest id the caller acknowledged */
    ferry_message_cb on_message;
    ferry_end_cb on_end;
    void *arg;
    int registered; /* in c->subs / c->consumers */
    int ended;      /* the server or the connection ended it */
    int end_code;
    char *end_msg;
    int released;    /* the user gave the handle up */
    int dispatching; /* callbacks of this sub being run by the I/O thread */
    /* poll mode */
    struct list queue;
    size_t queued_bytes;
    pthread_cond_t cond;
    int waiters;
    uint64_t signaled_batch;
};

/* One callback the I/O thread runs after a batch of frames, unlocked. */
enum disp_kind { DISP_ASYNC, DISP_MESSAGE, DISP_END, DISP_ERROR, DISP_DISCONNECT, DISP_RECONNECT };
struct disp {
    uint8_t kind;
    struct req *req;       /* DISP_ASYNC */
    struct ferry_sub *sub; /* DISP_MESSAGE, DISP_END (holds a dispatching count) */
    ferry_message_t m;     /* DISP_MESSAGE; data points into c->in */
    int status;            /* DISP_END, DISP_ERROR */
    char *msg;             /* DISP_END, DISP_ERROR: heap copy or NULL */
};

struct ferry_client {
    pthread_mutex_t mu;
    uint64_t serial; /* unique per client in this process */

    /* options, immutable after create */
    char *servers_opt;
    char *client_name;
    uint32_t connect_timeout_ms;
    uint32_t request_timeout_ms;
    uint32_t window;
    uint32_t max_redirects;
    int any_node;
    uint32_t max_frame;
    size_t max_queued_bytes;
    ferry_error_cb on_error;
    void *on_error_arg;
    int reconnect;
    uint32_t reconnect_timeout_ms;
    uint32_t backoff_initial_ms;
    uint32_t backoff_max_ms;
    uint32_t keepalive_ms; /* 0: none (no reconnection) */
    int fail_when_full;
    ferry_conn_cb on_disconnect;
    ferry_conn_cb on_reconnect;
    void *conn_cb_arg;
    uint8_t producer_id[16];
    int tls;          /* TLS to every server (option, or a ferrys:// address) */
    char *tls_ca;     /* option copies, NULL if unset */
    char *tls_cert;
    char *tls_key;
    struct tls_ctx *tls_ctx; /* loaded by connect */

    /* servers, parsed by connect; the ones a node named in HELLO_OK are added */
    char **servers;
    size_t nservers;
    size_t nservers_given; /* the first nservers_given came from the options */
    size_t server_idx; /* the one used by the last successful connect */
    int ever_connected;
    int connecting; /* a ferry_client_connect is dialling */
    uint64_t connected_ns; /* when the current connection was made */
    uint64_t rx_ns;        /* when a frame last arrived (or the connection was made) */
    uint64_t ping_ns;      /* keepalive PING sent at (0: none since the last frame) */
    uint64_t backoff_ms;   /* pause before redialling after a short-lived connection */

    /* connection */
    enum client_state state;
    int fd;
    int wake_fd; /* eventfd: wakes the I/O thread */
    int wake_pending;
    int io_polling; /* the I/O thread is (about to be) blocked in poll() */
    pthread_t io;
    int io_running;
    struct conn info;
    int conn_code;
    char conn_msg[CLIENT_MSG_MAX];
    char notice[CLIENT_MSG_MAX]; /* last ERROR the server sent with request id 0 */
    uint32_t redirects;          /* ENOTLEADER redirects in a row */
    char redirect_to[CONN_ADDR_MAX];

    /* output: bytes [out_off, out.len) are waiting to be written; with TLS
     * they are encrypted into tls_out, whose [tls_out_off, len) is unsent */
    struct buf out;
    size_t out_off;
    struct buf tls_out;
    size_t tls_out_off;
    uint64_t out_total;     /* bytes ever appended on this connection */
    uint64_t written_total; /* bytes ever written on this connection */

    /* requests */
    uint32_t next_id;
    uint64_t next_seq;      /* the last producer sequence given */
    uint32_t resends_due;   /* requests with resend_ns set */
    ferry_client_stats_t stats;
    uint64_t rng;           /* jitter and the first server */
    struct umap reqs;
    struct list inflight;
    struct list async_q;
    uint32_t async_inflight;   /* REQ_ASYNC awaiting their reply: the window */
    uint32_t async_pending;    /* REQ_ASYNC whose callback has not returned yet */
    int async_waiters;         /* threads waiting for a window slot or for drain */
    int flush_waiters;         /* threads waiting for the output to be written */
    pthread_cond_t async_cond; /* a slot freed, async_pending fell, output written */
    struct list pool;          /* idle REQ_ASYNC requests */
    size_t pool_count;

    /* subscriptions */
    struct umap subs;
    struct umap consumers;
    struct list all_subs;
    size_t queued_bytes; /* poll-mode payload bytes buffered, all subs */
    uint64_t batch;      /* I/O thread batch counter, for one signal per batch */

    /* I/O thread only */
    struct buf in;
    struct buf tls_in; /* ciphertext just read */
    struct disp *disp;
    size_t ndisp;
    size_t disp_cap;
};

/* ---- client.c ---- */

/* Record an error for the calling thread and the client; returns code. */
int client_fail(ferry_client_t *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Record err (an error code and message) as the calling thread's error. */
int client_fail_msg(ferry_client_t *c, int code, const char *msg);
/* 0 if name is a valid resource name; else FERRY_EINVAL, recorded. */
int client_check_name(ferry_client_t *c, const char *what, const char *name);
/* 1 if the caller runs on c's I/O thread (inside a callback). */
int client_in_io_thread(const ferry_client_t *c);
/* Absolute monotonic deadline for a timeout; timeout_ms < 0 = the request timeout. */
uint64_t client_deadline(const ferry_client_t *c, int timeout_ms);
/* pthread_cond_timedwait on c->mu against a monotonic deadline; 0 or ETIMEDOUT. */
int client_wait(ferry_client_t *c, pthread_cond_t *cond, uint64_t deadline_ns);
/* Condition variable using the monotonic clock. */
int client_cond_init(pthread_cond_t *cond);

/* 0 if requests may be submitted now; otherwise the error, recorded (locked). */
int client_usable_locked(ferry_client_t *c);
/* Write what is buffered, without blocking (locked). */
void client_flush_locked(ferry_client_t *c);
/* Whether output waits to be written (locked). */
int client_out_pending(const ferry_client_t *c);
/* Close the connection's socket and TLS session, drop unsent ciphertext (locked). */
void client_drop_conn_locked(ferry_client_t *c);
/* Output was appended by a non-blocking call: flush it now or make sure
 * someone will soon (locked). */
void client_kick_locked(ferry_client_t *c, int nagle);
/* Wake the I/O thread (locked). */
void client_wake_locked(ferry_client_t *c);
/* Append bytes of a frame to the output (locked). */
int client_append_locked(ferry_client_t *c, const uint8_t *p, size_t n);
/* Queue a frame whose reply is not tracked: FERRY_NOWAIT acks and
 * clean-ups; an ERROR in reply goes to on_error (locked). */
int client_send_untracked_locked(ferry_client_t *c, struct buf *frame);
/* Give req an id, register it and queue its frame (locked). */
int client_submit_locked(ferry_client_t *c, struct req *r);
/* Unregister a pending request (locked). */
void client_forget_locked(ferry_client_t *c, struct req *r);
/* Send the frame in r->frame (encoded with request id 0 and patched here) as
 * a blocking request and wait for the reply; the outcome is in r (status,
 * reply_op, reply, msg) and the return value is r->status. The error is
 * recorded for the caller. Takes and releases c->mu. */
int client_call(ferry_client_t *c, struct req *r);
void client_req_init(struct req *r, uint8_t op);
void client_req_cleanup(struct req *r);
/* Take a REQ_ASYNC request from the pool or the heap (locked). */
struct req *client_req_get_locked(ferry_client_t *c);
void client_req_put_locked(ferry_client_t *c, struct req *r);
/* Patch the request id into an encoded frame. */
void client_frame_set_id(struct buf *frame, uint32_t id);

/* ---- io.c ---- */
void *io_main(void *arg);
/* Mark the connection failed and wake the I/O thread, which completes every
 * pending request with the error (locked). */
void io_fail_locked(ferry_client_t *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Handle every whole frame in c->in (locked); returns IO_REDIRECT when the
 * connection must move to c->redirect_to. */
#define IO_REDIRECT 1
/* Run the collected callbacks with the mutex released (locked). */
void io_run_dispatch_locked(ferry_client_t *c);
/* Fail asynchronous requests whose deadline passed, send due re-sends;
 * returns the poll timeout in ms (-1: none) (locked). */
int io_expire_locked(ferry_client_t *c);
/* Complete every pending request with the connection's error and end every
 * subscription (locked). */
void io_fail_all_locked(ferry_client_t *c);
/* Complete r, already forgotten, with status and msg (may be NULL): signal
 * its waiter or queue its callback (locked). */
void io_settle_locked(ferry_client_t *c, struct req *r, int status, const char *msg);
struct disp *io_disp_push_locked(ferry_client_t *c, uint8_t kind);

/* ---- failover.c ---- */
/* The I/O thread, state CLIENT_RECONNECTING: settle what cannot be re-sent,
 * dial until a node accepts or reconnect_timeout_ms passes, then re-send and
 * resubscribe (READY) or give up (BROKEN). Returns with the mutex held. */
void failover_reconnect_locked(ferry_client_t *c);
/* A lost connection: go to CLIENT_RECONNECTING if the client reconnects,
 * else CLIENT_BROKEN (locked). */
void failover_lost_locked(ferry_client_t *c, int code, const char *msg);
/* Add the addresses a node named in HELLO_OK to the server list (locked). */
void failover_learn_locked(ferry_client_t *c, const struct conn *info);
/* Dial the servers round-robin with backoff until one accepts or the
 * deadline passes (mutex NOT held; c->mu is taken briefly). *used = index
 * in c->servers of the one that answered; preferred (may be NULL) first. */
int failover_dial(ferry_client_t *c, const char *preferred, uint64_t deadline_ns, int single_round,
                  struct conn *info, struct buf *extra, size_t *used, char *msg, size_t cap);
uint64_t failover_random(ferry_client_t *c);

/* ---- sub.c ---- */
/* Free a sub if the user released it and no callback is running (locked). */
void sub_maybe_free_locked(ferry_client_t *c, struct ferry_sub *s);
/* Drop every buffered poll-mode message of s (locked). */
void sub_drop_queue_locked(ferry_client_t *c, struct ferry_sub *s);
/* Mark s ended with code and message (locked); returns 1 if it was live. */
int sub_end_locked(ferry_client_t *c, struct ferry_sub *s, int code, const char *msg);

#endif
