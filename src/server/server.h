/* server/server.h - ferryd's serving side: listener, sessions, request dispatch.
 *
 * One libuv loop, one thread. Each loop turn:
 *   1. poll: sessions read frames and dispatch them; writes become commands
 *      proposed to the cluster, reads (LIST, INFO, STATUS, PING) are answered
 *      at once;
 *   2. check (server_turn_end): the cluster commits the turn's entry (one
 *      transaction, fsynced) and runs the callbacks that queue replies; the
 *      broker pumps stored messages to subscribers and consumers with room;
 *      every session with output gets one uv_write.
 * Replies and deliveries are therefore batched per turn, and a producer's
 * acknowledgement is always written after its message is durable.
 */
#ifndef FERRY_SERVER_H
#define FERRY_SERVER_H

#include "broker/broker.h"
#include "cluster/cluster.h"
#include "config/config.h"
#include "proto/proto.h"
#include "tls/tls.h"
#include "util/buf.h"
#include "util/list.h"
#include <uv.h>

struct session;

/* certs.c: this node's TLS contexts (NULL where TLS is off). */
struct server_tls {
    struct tls_ctx *node_accept;
    struct tls_ctx *node_dial;
    struct tls_ctx *client;
};

struct server {
    uv_loop_t *loop;
    const struct config *cfg;
    struct broker *broker;
    struct cluster cluster;
    uv_tcp_t listener;
    uv_check_t turn_end;      /* commit + pump + flush once per loop turn */
    uv_idle_t keep_busy;      /* keeps poll from blocking while work remains */
    uv_timer_t housekeeping;  /* TTL expiry proposals, storage probes */
    uv_signal_t sigterm;
    uv_signal_t sigint;
    uv_signal_t sighup;       /* reload TLS certificates */
    struct server_tls tls;
    uint8_t *scratch;         /* TLS sessions read ciphertext here */
    uv_timer_t shutdown_timer;
    uv_timer_t stop_timer;    /* leadership hand-over, then draining, at shutdown */
    uint64_t drain_deadline;
    int listening;
    int witness;              /* priority 0: no client endpoint */
    int finishing;
    struct list sessions;     /* all sessions */
    struct list dirty;        /* sessions with output to flush this turn */
    uint32_t session_count;
    uint64_t next_session_id;
    uint64_t started_ms;
    uint32_t max_frame;
    struct buf deferred;      /* RETURN commands that could not be proposed yet */
    int pump_wanted;
    int expire_proposed;      /* an EXPIRE is in flight */
    int stopping;
    char client_address[PROTO_NAME_MAX + 1]; /* host:port clients use */
    uint64_t frames_in;
    uint64_t frames_out;
    uint64_t protocol_errors;
    uint64_t tls_sessions;        /* client sessions that spoke TLS */
    uint64_t tls_failures;        /* client TLS handshakes that failed */
    uint64_t plaintext_refused;   /* plaintext clients refused (client_tls required) */
    uint64_t handshake_timeouts;  /* sessions closed for no HELLO in time */
    uint64_t tls_reloads;
    uint64_t tls_reload_failures;
};

int server_tls_load(const struct config *cfg, struct server_tls *out, struct ferry_err *err);
void server_tls_free(struct server_tls *t);
void server_tls_describe(const struct server_tls *t, char *out, size_t n);
/* SIGHUP: load the certificates again; on any error keep the old ones. */
void server_tls_reload(struct server *s);
/* Close sessions that have not completed their HELLO (TLS included) within
 * client_handshake_timeout. */
void session_sweep_handshakes(struct server *s, uint64_t now_ms);

/* Start listening on cfg->client_endpoint. The broker must be open. The
 * server takes over the contexts in *tls (from server_tls_load; *tls is
 * emptied), also when it fails. */
int server_start(struct server *s, uv_loop_t *loop, const struct config *cfg,
                 struct server_tls *tls, struct broker *broker, struct ferry_err *err);
/* Begin a clean shutdown: stop accepting, commit what is pending, flush
 * replies, close sessions and handles; uv_run returns when done. */
void server_stop(struct server *s);
/* Free what server_start allocated (after uv_run returned). */
void server_destroy(struct server *s);

/* session.c */
struct session {
    struct list link;
    struct list dirty_link;
    struct list pendings;      /* struct pending awaiting a commit */
    struct server *srv;
    uv_tcp_t tcp;
    uv_write_t wreq;
    struct buf rbuf;           /* bytes read, not yet parsed */
    struct buf obuf;           /* output queued this turn */
    struct buf wbuf;           /* output being written */
    struct broker_client *bc;
    uint64_t id;
    int hello_done;
    int observer;              /* HELLO with PROTO_F_ANY_NODE: STATUS and PING only */
    int writing;
    int read_paused;           /* output over the limit: not reading */
    int deliver_blocked;       /* a delivery was refused (EBUSY): tell the broker when drained */
    int closing;               /* close once output is flushed */
    int closed;                /* uv_close called */
    int tls_decided;           /* the first byte said whether the client speaks TLS */
    struct tls_conn *tls;      /* its TLS session, or NULL: plaintext */
    uint64_t accepted_ms;      /* for client_handshake_timeout */
    char peer[64];
    uint8_t producer_id[16];   /* from HELLO; all zero: the client numbers nothing */
};

void session_accept(struct server *srv);
/* Queue output; mark the session for this turn's flush. */
void session_mark_dirty(struct session *ss);
void session_flush(struct session *ss);
/* Send ERROR then close after it is written. */
void session_fail(struct session *ss, uint32_t req, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void session_close(struct session *ss);
/* Leadership is gone: end the session's broker client without returning its
 * items (the broker is reloaded), then say goodbye with ENOTLEADER. */
void session_leave(struct session *ss);
size_t session_output_bytes(const struct session *ss);
/* Queue an ERROR reply (connection stays open). */
void session_error(struct session *ss, uint32_t req, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Propose encoded RETURN commands now, or keep them until writes are
 * accepted again, so leased items are never stranded. */
void server_return_items(struct server *srv, const uint8_t *cmds, size_t len);

/* dispatch.c */
/* Handle one whole frame; returns 0, or -1 if the session was failed (stop parsing). */
int dispatch_frame(struct session *ss, const struct proto_header *h, const uint8_t *body,
                   size_t len);
/* A session is going away: detach its pending replies. */
void dispatch_session_closed(struct session *ss);
/* Broker client callbacks for a session. */
extern const struct broker_client_ops dispatch_client_ops;

#endif
