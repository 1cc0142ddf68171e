/* harness.h - process-level test helpers: real ferryd processes on 127.0.0.1.
 *
 * Every ferryd a test starts runs in its own temporary data directory on a
 * free loopback port, gets SIGKILL if the test process dies (PR_SET_PDEATHSIG),
 * and is stopped by PID in node_stop. Tests also arm alarm() so none can hang.
 */
#ifndef FERRY_TEST_HARNESS_H
#define FERRY_TEST_HARNESS_H

#include "proto/proto.h"
#include "util/buf.h"
#include <stdint.h>
#include <sys/types.h>

struct node {
    pid_t pid;
    int exit_status;    /* set when node_start saw ferryd exit, or by node_wait */
    uint16_t port;      /* client endpoint */
    uint16_t raft_port; /* replication endpoint (cluster tests) */
    int priority;       /* cluster tests: [priority] in the membership, -1 for none */
    char raft_host[32]; /* cluster tests: replication host ("" = 127.0.0.1) */
    char dir[256];      /* data directory */
    char log[300];      /* ferryd's stderr */
};

/* Make a fresh temporary directory for a node (dir) and pick a free port. */
void node_init(struct node *n);
/* Start ferryd on n->port with data in n->dir plus extra "--key", "value" args
 * (NULL-terminated; may be NULL). Returns 0 once the port accepts connections
 * (a witness: its replication port), -1 if ferryd exited or did not listen
 * within 15 s. */
int node_spawn(struct node *n, const char *const *extra);
/* node_spawn, then wait until the node serves clients (it elected itself). */
int node_start(struct node *n, const char *const *extra);
/* Wait until the node serves clients; 0, or -1 (timeout or exit). */
int node_wait_serving(struct node *n, int timeout_ms);
/* STATUS value of key through a monitoring session (HELLO ANY_NODE); 0 or -1. */
int node_status(const struct node *n, const char *key, char *out, size_t cap);
/* The same with STATUS header flags (PROTO_F_DIGEST). */
int node_status_flags(const struct node *n, uint16_t flags, const char *key, char *out,
                      size_t cap);
int node_serving(const struct node *n);

/* Clusters: node i of all[0..count) gets id i+1 and the membership of all
 * (replication ports, priorities); started with node_spawn. */
int cluster_start_node(struct node *all, int count, int i, const char *const *extra);
/* Index of the node serving clients, polling up to timeout_ms; -1 if none. */
int cluster_leader(struct node *all, int count, int timeout_ms);
/* Send sig to the node (by PID). */
void node_signal(struct node *n, int sig);
/* Wait up to timeout_ms for exit; returns the exit status (>= 0), 128+signal
 * if killed, or -1 on timeout. Clears pid on exit. */
int node_wait(struct node *n, int timeout_ms);
/* SIGTERM, wait, SIGKILL if needed. Safe when not running. */
void node_stop(struct node *n);
/* Stop and remove the data directory. */
void node_destroy(struct node *n);
/* Does the node's log contain `text`? */
int node_log_contains(const struct node *n, const char *text);
/* Resident set size of the node in KiB (from /proc), or 0. */
long node_rss_kib(const struct node *n);

/* Raw protocol connections. */
int conn_open(uint16_t port);                      /* connected fd or -1 */
int conn_send(int fd, const struct buf *b);        /* 0 or -1 */
int conn_send_raw(int fd, const void *p, size_t n);
/* Read one frame into out (whole frame incl. header); 0, -1 on EOF/error, -2 on timeout. */
int conn_read_frame(int fd, struct buf *out, struct proto_header *h, int timeout_ms);
/* HELLO + HELLO_OK; 0 or -1. */
int conn_hello(int fd);
/* Returns 1 if the peer closed the connection within timeout_ms (EOF). */
int conn_closed(int fd, int timeout_ms);

/* Run the ferry CLI against port with optional stdin; captures output. */
struct run_result {
    int status;  /* exit status, or 128+signal */
    char *out;   /* stdout, NUL-terminated, caller frees */
    char *err;   /* stderr */
};
int run_ferry(uint16_t port, const char *input, struct run_result *r, const char *const *args);
void run_result_free(struct run_result *r);
/* Run ferry in the background with stdout to a file; returns pid. */
pid_t spawn_ferry(uint16_t port, const char *input_file, const char *output_file,
                  const char *const *args);

/* TLS. harness_cert_dir() makes, on first use, a directory of certificates
 * with scripts/make-certs: ca.pem, node-1..5.pem/.key, client.pem/.key, and
 * in other/ the same from another CA; it is removed at exit. With
 * FERRY_TEST_TLS=1 in the environment the harness runs every test over TLS:
 * each node gets replication_tls with node-<id>'s certificate and client_tls
 * yes, and run_ferry/spawn_ferry pass --ca. NULL if the certificates could
 * not be made. */
const char *harness_cert_dir(void);
int harness_tls(void);
/* dir/name in a static buffer that lives until the next call. */
const char *harness_cert(const char *name);

/* Sleep for ms milliseconds. */
void sleep_ms(int ms);

#endif
