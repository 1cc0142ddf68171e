/* config/config.h - ferryd's configuration: file + environment + flags -> one validated struct.
 *
 * Sources, lowest to highest precedence: built-in defaults, the file given by
 * `--config FILE` (or FERRY_CONFIG), environment variables FERRY_<KEY>
 * (upper case), and command-line flags `--<key> value` (dashes or
 * underscores). Keys are case-insensitive. The file has one `key value` per
 * line; `#` starts a comment at the start of a line or after whitespace;
 * blank lines are ignored; the value is the rest of the line with
 * surrounding whitespace trimmed. FERRY_* variables that are not keys (the
 * client's FERRY_SERVERS) are ignored; unknown keys in the file or flags are not.
 *
 * Every value is validated when loaded. The first bad value makes
 * config_load fail with FERRY_ECONFIG and an error message naming the
 * source, the key, the value and what is allowed, e.g.
 *   "ferry.conf:12: max_message_size 'lots': expected a size in bytes with optional K, M or G suffix"
 * Unknown keys are errors too (a typo must not be silently ignored).
 *
 * docs/configuration.md lists every key with its default and meaning.
 */
#ifndef FERRY_CONFIG_H
#define FERRY_CONFIG_H

#include "util/err.h"
#include <stdint.h>

#define CONFIG_HOST_MAX 255
#define CONFIG_PATH_MAX 4096
#define CONFIG_MAX_MEMBERS 16

struct config_endpoint {
    char host[CONFIG_HOST_MAX + 1]; /* name or IPv4/IPv6 literal (IPv6 written [::1]:port) */
    uint16_t port;
};

struct config_member { /* one entry of cluster_membership: [priority]id:host:port */
    uint32_t id;
    uint32_t priority; /* 0 = witness; default 1 when no [n] is given */
    struct config_endpoint endpoint;
};

enum config_client_tls { CLIENT_TLS_NO = 0, CLIENT_TLS_YES = 1, CLIENT_TLS_REQUIRED = 2 };
enum config_verify_client { VERIFY_CLIENT_NO = 0, VERIFY_CLIENT_OPTIONAL = 1, VERIFY_CLIENT_REQUIRED = 2 };
enum config_tls_version { TLS_MIN_1_2 = 0, TLS_MIN_1_3 = 1 };

struct config {
    /* client service */
    struct config_endpoint client_endpoint; /* default 127.0.0.1:7878 */
    char data_directory[CONFIG_PATH_MAX];    /* default "ferry-data" */
    uint64_t max_message_size;               /* default 6144000; 1 .. 1G */
    int log_level;                           /* enum log_level; default LOG_INFO */
    int auto_create;                         /* default 1 */
    uint64_t output_buffer_limit;            /* per connection, default 8M; >= 64K */
    uint32_t max_connections;                /* default 10000 */
    uint32_t default_prefetch;               /* default 256; 1 .. 65535 */
    uint32_t default_max_deliveries;         /* default 10; 1 .. 1000000 */
    uint64_t default_capacity;               /* default 0 = unlimited */
    uint64_t default_ttl_ms;                 /* default 0 = none; durations: 500ms, 30s, 5m, 2h, 7d */
    uint64_t history_retention_ms;           /* default 24h */
    uint64_t history_max_records;            /* default 1000000 */

    /* cluster (the seed's keys) */
    uint32_t cluster_node_id;                       /* 0 = not set (single node) */
    struct config_endpoint cluster_node_endpoint;   /* port 0 = not set */
    uint32_t member_count;                          /* 0 = not set */
    struct config_member members[CONFIG_MAX_MEMBERS];
    char replication_logfile_directory[CONFIG_PATH_MAX]; /* default <data_directory>/raft */
    uint64_t logfile_max_size;        /* default 64M; 1M .. 16G */
    uint32_t logfile_max_generations; /* default 3; 1 .. 1000 */
    uint64_t snapshot_distance;       /* default 1000; 1 .. 1e9 */
    int verify_replication_node_ip;   /* default 0 */
    int cluster_join;                 /* default 0: a new node that waits to be added online */
    char cluster_name[65];            /* default "ferry": nodes link only within one name */

    /* TLS (docs/tls.md) */
    int replication_tls;                               /* default 0: node links in plaintext */
    char replication_tls_certificate[CONFIG_PATH_MAX]; /* this node's certificate (PEM chain) */
    char replication_tls_key[CONFIG_PATH_MAX];
    char replication_tls_ca[CONFIG_PATH_MAX];          /* the cluster CA */
    int client_tls;                                    /* enum config_client_tls */
    char client_tls_certificate[CONFIG_PATH_MAX];      /* "" = replication_tls_certificate */
    char client_tls_key[CONFIG_PATH_MAX];              /* "" = replication_tls_key */
    char client_tls_ca[CONFIG_PATH_MAX];               /* "" = replication_tls_ca */
    int client_tls_verify_client;                      /* enum config_verify_client */
    int tls_min_version;                               /* enum config_tls_version */
    char tls_ciphers[256];                             /* TLS 1.2 list; "" = OpenSSL's */
    char tls_ciphersuites[256];                        /* TLS 1.3 suites; "" = OpenSSL's */
    uint64_t client_handshake_timeout_ms;              /* default 10s: TLS + HELLO */

    /* Raft timing (issue: replicated cluster) */
    uint32_t raft_heartbeat_ms;       /* default 50; 1 .. 10000 */
    uint32_t raft_election_min_ms;    /* default 300; > heartbeat */
    uint32_t raft_election_max_ms;    /* default 600; > election_min */
};

/* Fill every field with its default. */
void config_defaults(struct config *c);

/* Load the configuration for a process started as argv[0..argc-1] with
 * environment envp (NULL-terminated "KEY=VALUE" strings; NULL = none).
 * Recognises `--config FILE` and `--<key> value` flags (also `--key=value`);
 * `--help`/`-h` and `--version` are NOT handled here (main checks them first);
 * `--print-config` (no value) is accepted and ignored here, for main to act on.
 * Cross-key rules are checked last (for example: cluster_node_id must be a
 * member of cluster_membership, its endpoint port must match
 * cluster_node_endpoint's, member ids unique, election_min > heartbeat).
 * Returns 0, or FERRY_ECONFIG with err->msg naming source, key, value and
 * what is allowed. *c is fully written either way. */
int config_load(struct config *c, int argc, char **argv, char **envp, struct ferry_err *err);

/* Set one key from a string, as if read from `source` ("ferry.conf:12",
 * "environment", "command line"). 0 or FERRY_ECONFIG (c unchanged on error). */
int config_set(struct config *c, const char *key, const char *value, const char *source,
               struct ferry_err *err);

/* Cross-key validation (run by config_load after all sources). */
int config_validate(const struct config *c, struct ferry_err *err);

/* Parsers shared with the CLI (flags such as --ttl 30s, --capacity 10K). 0 or FERRY_EINVAL. */
int config_parse_size(const char *s, uint64_t *out);      /* "6144000", "64K", "6M", "1G" (x1024) */
int config_parse_duration(const char *s, uint64_t *ms_out); /* "0", "250ms", "30s", "5m", "2h", "7d"; bare number = seconds */
int config_parse_bool(const char *s, int *out);           /* yes/no, true/false, on/off, 1/0 */
int config_parse_endpoint(const char *s, uint16_t default_port, struct config_endpoint *out);
/* "[10]1:h1:9000,[5]2:h2:9000,3:h3:9000" */
int config_parse_membership(const char *s, struct config_member *out, uint32_t max,
                            uint32_t *count, struct ferry_err *err);

/* Print every key and its effective value, one `key value` per line (for `ferryd --print-config`). */
void config_print(const struct config *c, void *file /* FILE * */);

#endif
