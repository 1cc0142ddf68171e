/* ferry/ferry.h - libferry, the C client of the Ferry message server.
 *
 * A client holds one TCP connection to one node of a Ferry cluster (the
 * leader) and offers: persistent and transient publishes to channels, pushes
 * to queues (both blocking and asynchronous with a bounded in-flight
 * window), subscriptions to channels (new events only, from an event id, from
 * the oldest retained event, or durable with a replicated cursor), queue
 * consumers with per-item ack/nack, and resource administration. The wire
 * protocol is docs/protocol.md; docs/client.md is the guide to this API.
 *
 * Errors. Every function that can fail returns 0 or a negative FERRY_E*
 * code (include/ferry/status.h). The message a person can act on ("queue
 * 'orders' is full (capacity 10000)", "no reply to PUBLISH from
 * 127.0.0.1:7878 within 10000 ms") is available from ferry_client_errmsg().
 * Errors the server reports carry the server's code and message unchanged.
 *
 * Threading model. ferry_client_connect() starts one background I/O thread
 * per client. It reads every frame from the server, completes pending
 * requests and runs every callback: asynchronous publish/push completions,
 * subscription and consumer messages, end-of-subscription and error
 * notifications. Callbacks therefore run one at a time, in the order the
 * server sent the frames, and must not block for long (they hold up every
 * other reply on the connection).
 *
 * All API functions are thread-safe: any number of threads may share a
 * client. Requests are written to the socket in the order they are made;
 * blocking calls wait on a condition variable until their reply arrives or
 * the request timeout passes (FERRY_ETIMEDOUT). A call that would have to
 * wait, made from inside a callback (that is, on the I/O thread), returns
 * FERRY_EDEADLK at once instead of deadlocking; the non-blocking calls
 * (ferry_publish_async with a free window slot, ferry_ack/ferry_nack with
 * FERRY_NOWAIT, ferry_unsubscribe/ferry_cancel) work from callbacks.
 *
 * Writes are batched: asynchronous publishes, pushes and FERRY_NOWAIT acks
 * are appended to an output buffer and written with one system call per
 * batch (when the window fills, when a blocking call is made, when the
 * buffer is large, or by the I/O thread as replies arrive). Blocking calls
 * write at once. TCP_NODELAY is set.
 *
 * Callbacks are never run from inside the call that started the operation:
 * an asynchronous call either returns an error (and its callback is never
 * run) or returns 0 (and its callback runs exactly once, on the I/O thread).
 *
 * Connection. The client tries the servers of its list in order until one
 * accepts the HELLO. A node that answers FERRY_ENOTLEADER names the leader,
 * and the client follows it, during connect and later while the connection
 * holds no subscription or consumer (pending requests are then re-sent to
 * the leader). When the connection fails, every pending request completes
 * with the error (FERRY_ECONN, FERRY_EPROTO ...), subscriptions end, and
 * later calls fail until ferry_client_connect() is called again.
 */
#ifndef FERRY_FERRY_H
#define FERRY_FERRY_H

#include <ferry/status.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FERRY_DEFAULT_SERVERS "127.0.0.1:7878"
#define FERRY_DEFAULT_PORT 7878
#define FERRY_NAME_MAX 255 /* resource, durable and client names, in bytes */

/* Version of this library, "MAJOR.MINOR.PATCH". */
const char *ferry_version(void);

/* ------------------------------------------------------------------ */
/* Handles and callbacks                                               */
/* ------------------------------------------------------------------ */

typedef struct ferry_client ferry_client_t; /* one connection; opaque */
typedef struct ferry_sub ferry_sub_t;       /* one subscription or consumer; opaque */

/* A channel event or a queue delivery. */
typedef struct ferry_message {
    ferry_sub_t *sub;        /* the subscription or consumer it came through */
    uint64_t id;             /* event id (0 for a transient event) or queue item id */
    uint64_t timestamp_ms;   /* when the server accepted it, ms since the Unix epoch */
    uint32_t delivery_count; /* queue deliveries: 1 on the first delivery; 0 for events */
    int transient;           /* 1 for a transient event */
    const void *data;        /* payload */
    size_t len;
} ferry_message_t;

/* Completion of ferry_publish_async/ferry_push_async: status 0 and the event
 * id (0 for a transient publish) or item id, or a negative code and errmsg
 * (never NULL; "" on success). errmsg is valid during the call only. */
typedef void (*ferry_publish_cb)(ferry_client_t *client, int status, uint64_t id,
                                 const char *errmsg, void *arg);

/* A message for a subscription or consumer. msg and msg->data are valid
 * during the call only. */
typedef void (*ferry_message_cb)(ferry_sub_t *sub, const ferry_message_t *msg, void *arg);

/* The server ended the subscription or consumer (for example, the resource
 * was deleted), the connection failed, or the client was closed: status and
 * message say which. Runs at most once per subscription. The handle stays
 * valid until ferry_unsubscribe/ferry_cancel/ferry_client_close. */
typedef void (*ferry_end_cb)(ferry_sub_t *sub, int status, const char *errmsg, void *arg);

/* The connection was lost (on_disconnect: status and errmsg say why) or a
 * new one is ready (on_reconnect: status 0, errmsg is the "host:port" of the
 * node). Between the two, calls wait (or fail with FERRY_EAGAIN, see
 * fail_when_full) and nothing is lost: see ferry_options.reconnect. */
typedef void (*ferry_conn_cb)(ferry_client_t *client, int status, const char *errmsg, void *arg);

/* An error that belongs to no call: a FERRY_NOWAIT ack the server refused,
 * an ERROR frame for a request that already timed out, a notice the server
 * sent before closing the connection. */
typedef void (*ferry_error_cb)(ferry_client_t *client, int status, const char *errmsg, void *arg);

/* ------------------------------------------------------------------ */
/* Client                                                              */
/* ------------------------------------------------------------------ */

typedef struct ferry_options {
    const char *servers;         /* "host:port,host:port,..." (port defaults to 7878;
                                    IPv6 as [addr]:port); NULL = FERRY_DEFAULT_SERVERS */
    const char *client_name;     /* sent in HELLO; NULL = "libferry" */
    uint32_t connect_timeout_ms; /* per address, TCP connect + HELLO; 0 = 5000 */
    uint32_t request_timeout_ms; /* every request and every wait for a window slot; 0 = 10000 */
    uint32_t window;             /* max asynchronous publishes/pushes in flight; 0 = 256 */
    uint32_t max_redirects;      /* ENOTLEADER redirects followed in a row; 0 = 3 */
    uint32_t max_frame;          /* largest frame accepted from the server; 0 = 64 MiB */
    size_t max_queued_bytes;     /* payload bytes buffered for ferry_sub_next before the
                                    client stops reading from the server; 0 = 64 MiB */
    ferry_error_cb on_error;     /* may be NULL */
    void *on_error_arg;
    int any_node;                /* 1: a monitoring connection, accepted by any node of a
                                    cluster, leader or not; only ferry_status and
                                    ferry_ping work on it */
    /* Failover (docs/client.md, "Failover"). */
    int no_reconnect;              /* 1: a lost connection is final (every pending call
                                      fails); 0 (default): reconnect, re-send, resubscribe */
    uint32_t reconnect_timeout_ms; /* how long connect, or a reconnect after a loss, keeps
                                      trying the servers before giving up; 0 = 30000 */
    uint32_t backoff_initial_ms;   /* pause after a round of the servers failed; doubles
                                      each round, with jitter; 0 = 10 */
    uint32_t backoff_max_ms;       /* cap of that pause; 0 = 2000 */
    uint32_t keepalive_ms;         /* with reconnection: a PING after this long without a
                                      frame from the node, and the connection counts as lost
                                      after three times as long (a paused or cut-off node);
                                      0 = 1000 */
    int fail_when_full;            /* 1: ferry_publish_async/ferry_push_async return
                                      FERRY_EAGAIN at once when the window is full (also
                                      while reconnecting) instead of blocking */
    ferry_conn_cb on_disconnect;   /* may be NULL; runs on the I/O thread */
    ferry_conn_cb on_reconnect;    /* may be NULL; runs on the I/O thread */
    void *conn_cb_arg;
    /* TLS (docs/client.md, "TLS"). With TLS the client speaks TLS 1.2 or later to
     * every server (a ferrys:// or tls: prefix on any address of `servers` turns
     * it on too) and accepts a server only if its certificate chains to tls_ca
     * and names the host or IP address dialled. */
    int tls;
    const char *tls_ca;   /* PEM file of trusted CAs; NULL = the system's trust store */
    const char *tls_cert; /* PEM client certificate, for servers that ask; NULL = none */
    const char *tls_key;  /* its private key */
} ferry_options_t;

/* Fill o with the defaults (all zero / NULL). */
void ferry_options_init(ferry_options_t *o);

/* Allocate a client with a copy of the options (o may be NULL for the
 * defaults); no connection is made yet, and the servers list is checked by
 * ferry_client_connect(). *out is set on success only. Errors:
 * FERRY_EINVAL (out is NULL), FERRY_ENOMEM. */
int ferry_client_create(ferry_client_t **out, const ferry_options_t *o);

/* Connect: try each server of the list in order, starting at the first (or,
 * on a reconnect after a failure, at the one after the last used), until
 * one completes the HELLO exchange; follow ENOTLEADER redirects. Starts the
 * I/O thread. Errors: FERRY_EINVAL (bad servers list), FERRY_ECONN (no
 * server accepted; the message lists each address and why), FERRY_ETIMEDOUT,
 * FERRY_EPROTO, FERRY_EVERSION, a code from the server's ERROR,
 * FERRY_ESTATE (already connected), FERRY_EDEADLK (from a callback). */
int ferry_client_connect(ferry_client_t *c);

/* Close the connection and free the client. Buffered FERRY_NOWAIT acks are
 * written first (for up to one second). Pending asynchronous operations
 * complete with FERRY_ECLOSED and subscriptions end with FERRY_ECLOSED
 * (their callbacks run on the I/O thread before this returns); every
 * ferry_sub_t of the client is freed. No other call may be in progress on c
 * or start after this one. From a callback: FERRY_EDEADLK, nothing done.
 * c may be NULL (returns 0). */
int ferry_client_close(ferry_client_t *c);

/* The message of the last failed call on this client made by the calling
 * thread (or, if this thread made none, the last failure recorded on the
 * client by any thread, including a connection failure). Never NULL; ""
 * when there was none. Valid until the next failing call on this thread. */
const char *ferry_client_errmsg(const ferry_client_t *c);

/* What the connected node said about itself in HELLO_OK. */
typedef struct ferry_server_info {
    char address[FERRY_NAME_MAX + 8]; /* "host:port" this client is connected to */
    char version[FERRY_NAME_MAX + 1]; /* server version */
    char role[32];                    /* e.g. "leader" */
    uint64_t node_id;
    uint32_t max_frame;   /* largest frame the server accepts */
    uint32_t max_message; /* largest payload the server accepts */
} ferry_server_info_t;

/* Errors: FERRY_ESTATE (not connected). */
int ferry_client_server_info(ferry_client_t *c, ferry_server_info_t *out);

/* Counters of one client since it was created. */
typedef struct ferry_client_stats {
    uint64_t connects;     /* HELLO exchanges completed (the first connect included) */
    uint64_t disconnects;  /* connections lost */
    uint64_t attempts;     /* connection attempts made, failed ones included */
    uint64_t resent;       /* requests written again on a new connection */
    uint64_t duplicates;   /* publishes/pushes the server recognised as already stored */
    uint64_t resubscribed; /* subscriptions and consumers re-established */
    uint64_t dropped_events; /* events dropped because the caller already had them */
    uint8_t producer_id[16]; /* this client's idempotent producer id */
} ferry_client_stats_t;

int ferry_client_stats(ferry_client_t *c, ferry_client_stats_t *out);

/* ------------------------------------------------------------------ */
/* Publishing                                                          */
/* ------------------------------------------------------------------ */

#define FERRY_TRANSIENT 0x1u /* publish flag: live subscribers only, never stored */

/* Publish to a channel and wait for PUBLISH_OK: committed (persistent) or
 * handed to live subscribers (FERRY_TRANSIENT). *id (may be NULL) gets the
 * event id (0 for a transient publish). Errors: the server's (EFULL,
 * ENOTFOUND, EWRONGTYPE, ENOTLEADER ...), FERRY_ETOOBIG (over the server's
 * max_message; nothing sent), FERRY_EINVAL (bad name or flags),
 * FERRY_ETIMEDOUT, FERRY_ECONN, FERRY_EDEADLK (from a callback). */
int ferry_publish(ferry_client_t *c, const char *channel, const void *data, size_t len,
                  unsigned flags, uint64_t *id);

/* Publish without waiting: the payload is copied, and cb (may be NULL) runs
 * once with the outcome. At most `window` asynchronous publishes and pushes
 * are in flight; while the window is full this call blocks (up to the
 * request timeout: FERRY_ETIMEDOUT; from a callback: FERRY_EDEADLK). An
 * error return means nothing was queued and cb will not run. Persistent
 * publishes on one connection are acknowledged in the order they were
 * made. */
int ferry_publish_async(ferry_client_t *c, const char *channel, const void *data, size_t len,
                        unsigned flags, ferry_publish_cb cb, void *arg);

/* Push an item to a queue and wait until it is stored; *id (may be NULL)
 * gets the item id. Errors as ferry_publish. */
int ferry_push(ferry_client_t *c, const char *queue, const void *data, size_t len, uint64_t *id);

/* Push without waiting; as ferry_publish_async. */
int ferry_push_async(ferry_client_t *c, const char *queue, const void *data, size_t len,
                     ferry_publish_cb cb, void *arg);

/* Write everything buffered and wait until every asynchronous publish and
 * push has completed (its callback has returned). timeout_ms < 0 waits for
 * the request timeout; 0 only writes. Errors: FERRY_ETIMEDOUT, the
 * connection's error, FERRY_EDEADLK (from a callback with operations in
 * flight). */
int ferry_drain(ferry_client_t *c, int timeout_ms);

/* ------------------------------------------------------------------ */
/* Subscriptions and consumers                                         */
/* ------------------------------------------------------------------ */

enum ferry_start {
    FERRY_START_NEW = 0,    /* events published after the subscription only */
    FERRY_START_FROM = 1,   /* from event id from_id (or the oldest retained, if later) */
    FERRY_START_OLDEST = 2, /* from the oldest retained event */
    FERRY_START_DURABLE = 3 /* durable subscription `durable`: resumes after its cursor */
};

typedef struct ferry_sub_options {
    int start;                   /* enum ferry_start (subscriptions only) */
    uint64_t from_id;            /* FERRY_START_FROM */
    const char *durable;         /* FERRY_START_DURABLE: the name */
    uint32_t window;             /* durable: max unacknowledged events; consumer: prefetch;
                                    0 = server default */
    ferry_message_cb on_message; /* NULL: poll with ferry_sub_next() */
    ferry_end_cb on_end;         /* may be NULL */
    void *arg;                   /* passed to both callbacks */
} ferry_sub_options_t;

/* Fill o with the defaults: FERRY_START_NEW, no callbacks (poll mode). */
void ferry_sub_options_init(ferry_sub_options_t *o);

/* Subscribe to a channel and wait for SUBSCRIBE_OK. Events arrive through
 * o->on_message or ferry_sub_next(). *out is set on success only. Errors:
 * the server's (ENOTFOUND, EWRONGTYPE, EBUSY for a durable name in use ...),
 * FERRY_EINVAL, FERRY_ETIMEDOUT, FERRY_ECONN, FERRY_EDEADLK. */
int ferry_subscribe(ferry_client_t *c, const char *channel, const ferry_sub_options_t *o,
                    ferry_sub_t **out);

/* Register a consumer of a queue with o->window unacknowledged deliveries
 * (o->start/from_id/durable are ignored). Acknowledge each delivery with
 * ferry_ack (done: removed) or ferry_nack (back to the queue). Errors as
 * ferry_subscribe. */
int ferry_consume(ferry_client_t *c, const char *queue, const ferry_sub_options_t *o,
                  ferry_sub_t **out);

/* Poll mode: take the next message, waiting up to timeout_ms (< 0: no
 * limit; 0: do not wait). The caller frees *msg with ferry_message_free().
 * Errors: FERRY_ETIMEDOUT (nothing arrived); once the subscription has
 * ended and every buffered message was taken, the code it ended with
 * (FERRY_ECONN, the SUB_END code ...), every time; FERRY_EINVAL (the
 * subscription has a callback); FERRY_EDEADLK (would wait, from a
 * callback). */
int ferry_sub_next(ferry_sub_t *sub, ferry_message_t **msg, int timeout_ms);

/* Free a message returned by ferry_sub_next (NULL is allowed). Messages may
 * outlive their subscription, but msg->sub must not be used then. */
void ferry_message_free(ferry_message_t *msg);

#define FERRY_NOWAIT 0x2u /* ack/nack flag: send with NOREPLY and return at once */

/* Acknowledge. For a consumer: the delivery `id` is done and removed from
 * the queue. For a durable subscription: every event <= `id` is processed
 * (the cursor moves; cumulative). Without FERRY_NOWAIT the call waits for
 * the server's OK; with it, the ack is buffered, written with the next
 * batch, and a failure is reported to the client's on_error callback.
 * Errors: FERRY_EINVAL (a non-durable subscription, or flags),
 * FERRY_ENOTFOUND etc. from the server, FERRY_ETIMEDOUT, FERRY_ECONN,
 * FERRY_EDEADLK (waiting, from a callback). */
int ferry_ack(ferry_sub_t *sub, uint64_t id, unsigned flags);

/* Return the delivery `id` of a consumer to the queue at once. As ferry_ack. */
int ferry_nack(ferry_sub_t *sub, uint64_t id, unsigned flags);

/* End a subscription (UNSUBSCRIBE) or a consumer (CANCEL; its unacknowledged
 * deliveries go back to the queue) and free the handle, whatever the result.
 * No callback for it runs after this returns (called from inside its own
 * callback: none after that callback returns). Waits for the server's OK,
 * except from a callback, where the request is sent and not waited for.
 * Buffered poll-mode messages are dropped. No other thread may be using
 * the handle (in ferry_sub_next, ferry_ack ...) at the same time. Errors
 * (the handle is freed anyway): the server's, FERRY_ETIMEDOUT, FERRY_ECONN.
 * FERRY_EINVAL (ferry_unsubscribe on a consumer or ferry_cancel on a
 * subscription) leaves the handle as it was. */
int ferry_unsubscribe(ferry_sub_t *sub);
int ferry_cancel(ferry_sub_t *sub);

/* The server's id of the subscription (sub_id) or consumer (consumer_id). */
uint64_t ferry_sub_id(const ferry_sub_t *sub);
/* Subscriptions: the first event id this subscription can deliver
 * (SUBSCRIBE_OK's next_event_id); 0 for consumers. */
uint64_t ferry_sub_next_event_id(const ferry_sub_t *sub);
ferry_client_t *ferry_sub_client(const ferry_sub_t *sub);

/* ------------------------------------------------------------------ */
/* Resources, status, ping                                             */
/* ------------------------------------------------------------------ */

enum ferry_kind { FERRY_CHANNEL = 1, FERRY_QUEUE = 2 };

typedef struct ferry_resource_options {
    uint64_t capacity;       /* max stored messages; 0 = unlimited */
    uint64_t ttl_ms;         /* message lifetime; 0 = forever */
    uint32_t max_deliveries; /* queues; 0 = server default */
    const char *dlq;         /* queues: dead-letter queue; NULL or "" = "<name>.dlq" */
} ferry_resource_options_t;

/* Create a channel or queue (o may be NULL: defaults). Creating a resource
 * that exists with the same attributes succeeds. Errors: FERRY_EEXIST
 * (exists with other attributes), FERRY_EINVAL, ... */
int ferry_create(ferry_client_t *c, int kind, const char *name, const ferry_resource_options_t *o);

/* Delete a channel or queue and everything stored in it. */
int ferry_delete(ferry_client_t *c, const char *name);

/* Delete the durable subscription `durable` of a channel (its cursor). */
int ferry_durable_delete(ferry_client_t *c, const char *channel, const char *durable);

typedef struct ferry_info {
    int kind; /* enum ferry_kind */
    char name[FERRY_NAME_MAX + 1];
    uint64_t capacity;
    uint64_t ttl_ms;
    uint32_t max_deliveries;
    char dlq[FERRY_NAME_MAX + 1];
    uint64_t count;    /* stored, unexpired messages */
    uint64_t first_id; /* oldest retained id (0 if none) */
    uint64_t last_id;  /* newest assigned id (0 if none) */
    uint32_t clients;  /* live subscribers or consumers */
    uint64_t unacked;  /* deliveries in flight */
} ferry_info_t;

/* Attributes and counters of one resource. */
int ferry_info(ferry_client_t *c, const char *name, ferry_info_t *out);

/* Every resource: *items (free with ferry_list_free) and *count. */
int ferry_list(ferry_client_t *c, ferry_info_t **items, size_t *count);
void ferry_list_free(ferry_info_t *items);

typedef struct ferry_kv {
    const char *key;
    const char *value;
} ferry_kv_t;

/* The server's status as key/value text pairs, in the server's order:
 * *kv (free with ferry_status_free; the strings live in the same block) and
 * *count. */
int ferry_status(ferry_client_t *c, ferry_kv_t **kv, size_t *count);
void ferry_status_free(ferry_kv_t *kv);

/* Round trip: PING/PONG. *rtt_us (may be NULL) gets the time it took.
 * Everything sent before the PING (such as FERRY_NOWAIT acks) has been read
 * by the server when this returns. */
int ferry_ping(ferry_client_t *c, uint64_t *rtt_us);

/* ------------------------------------------------------------------ */
/* Cluster administration                                              */
/* ------------------------------------------------------------------ */

enum ferry_admin_action {
    FERRY_ADMIN_TRANSFER_LEADER = 1, /* node_id: the new leader, 0 = the best caught-up voter */
    FERRY_ADMIN_ADD_NODE = 2,        /* node_id, priority (0-255, 0 = witness), address */
    FERRY_ADMIN_REMOVE_NODE = 3,     /* node_id (the leader itself too) */
    FERRY_ADMIN_SNAPSHOT = 4,        /* the leader snapshots itself at its applied index */
};

/* One cluster administration request (the ADMIN op), served by the leader;
 * the client must be connected normally (not FERRY_ANY_NODE), which finds
 * the leader. Returns 0 once the leader accepted it:
 *
 *   TRANSFER_LEADER  the hand-over started; the leader closes its sessions
 *                    when it steps down (clients reconnect to the new one).
 *   ADD_NODE         node_id joins as a learner replicating from `address`
 *                    ("host:port", its replication endpoint); the leader
 *                    makes it a voter once it has caught up. The new node
 *                    must run with cluster_join yes (docs/cluster.md).
 *   REMOVE_NODE      node_id is out of the configuration; nobody dials it.
 *   SNAPSHOT         a snapshot is being taken (snapshot_index in status
 *                    advances once it is saved).
 *
 * priority is used by ADD_NODE only (pass -1 for the default, 1); address
 * must be NULL or "" for the other actions. Membership changes are in force
 * once accepted and durable once committed: if the leader fails before
 * that, the outcome is unknown (check `member.<id>` in ferry_status).
 * Errors: FERRY_EINVAL (bad argument), FERRY_EBUSY (another membership
 * change or a transfer in progress: retry), FERRY_EEXIST / FERRY_ENOTFOUND
 * (already / not a member), FERRY_ENOTLEADER, FERRY_ENOTSUP (single-node
 * server), and the connection errors. */
int ferry_admin(ferry_client_t *c, int action, uint32_t node_id, int priority, const char *address);

#ifdef __cplusplus
}
#endif
#endif
