/* config.c - the table of configuration keys, and setting, checking and printing them.
 *
 * One row per key says where its value lives in struct config, what kind of
 * value it takes, its allowed range and its default written as a value. Every
 * other function walks that table: config_defaults sets each key from its
 * default string (so defaults obey the same rules as user values),
 * config_set parses into a temporary and stores only if the value is
 * allowed, config_print formats each field back into a value. The cross-key
 * rules live in config_validate. Loading from file, environment and flags
 * is in load.c; the value syntaxes are in parse.c.
 */
#include "config/config_internal.h"

#include "util/log.h"
#include <assert.h>
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

enum kind {
    K_ENDPOINT,
    K_PATH,
    K_SIZE,
    K_NUMBER,
    K_DURATION,
    K_BOOL,
    K_LEVEL,
    K_MEMBERS,
    K_NAME,
    K_FILE,   /* a file path; empty = none (or the key it defaults to) */
    K_CHOICE, /* one of `choices`, stored as its index */
    K_TEXT,   /* free text without control characters */
};

struct key {
    const char *name;
    enum kind kind;
    size_t offset;       /* of the field in struct config */
    size_t width;        /* of the field; numbers are 4 or 8 bytes */
    uint64_t min, max;   /* numbers, sizes (bytes), durations (ms) */
    uint16_t port;       /* endpoints: the port when none is given (0 = a port is required) */
    int optional;        /* endpoints: "none" allowed; paths: empty allowed (= derived) */
    const char *initial; /* the default, written as a value */
    const char *const *choices; /* K_CHOICE: the values, NULL-terminated */
};

static const char *const client_tls_choices[] = {"no", "yes", "required", NULL};
static const char *const verify_client_choices[] = {"no", "optional", "required", NULL};
static const char *const tls_version_choices[] = {"1.2", "1.3", NULL};

#define FIELD(f) .offset = offsetof(struct config, f), .width = sizeof(((struct config *)0)->f)
#define KIB 1024ull
#define MIB (KIB * KIB)
#define GIB (KIB * MIB)
#define SECOND 1000ull
#define DAY (86400 * SECOND)

static const struct key keys[] = {
    {"client_endpoint", K_ENDPOINT, FIELD(client_endpoint), .port = 7878,
     .initial = "127.0.0.1:7878"},
    {"data_directory", K_PATH, FIELD(data_directory), .initial = "ferry-data"},
    {"max_message_size", K_SIZE, FIELD(max_message_size), 1, GIB, .initial = "6144000"},
    {"log_level", K_LEVEL, FIELD(log_level), .initial = "info"},
    {"auto_create", K_BOOL, FIELD(auto_create), .initial = "yes"},
    {"output_buffer_limit", K_SIZE, FIELD(output_buffer_limit), 64 * KIB, 16 * GIB,
     .initial = "8M"},
    {"max_connections", K_NUMBER, FIELD(max_connections), 1, 1000000, .initial = "10000"},
    {"default_prefetch", K_NUMBER, FIELD(default_prefetch), 1, 65535, .initial = "256"},
    {"default_max_deliveries", K_NUMBER, FIELD(default_max_deliveries), 1, 1000000,
     .initial = "10"},
    {"default_capacity", K_NUMBER, FIELD(default_capacity), 0, 1000000000000ull, .initial = "0"},
    {"default_ttl", K_DURATION, FIELD(default_ttl_ms), 0, 3650 * DAY, .initial = "0"},
    {"history_retention", K_DURATION, FIELD(history_retention_ms), 0, 3650 * DAY, .initial = "24h"},
    {"history_max_records", K_NUMBER, FIELD(history_max_records), 0, 1000000000000ull,
     .initial = "1000000"},
    {"cluster_node_id", K_NUMBER, FIELD(cluster_node_id), 0, UINT32_MAX, .initial = "0"},
    {"cluster_node_endpoint", K_ENDPOINT, FIELD(cluster_node_endpoint), .optional = 1,
     .initial = "none"},
    {"cluster_membership", K_MEMBERS, FIELD(members), .initial = "none"},
    {"replication_logfile_directory", K_PATH, FIELD(replication_logfile_directory), .optional = 1,
     .initial = ""},
    {"logfile_max_size", K_SIZE, FIELD(logfile_max_size), MIB, 16 * GIB, .initial = "64M"},
    {"logfile_max_generations", K_NUMBER, FIELD(logfile_max_generations), 1, 1000, .initial = "3"},
    {"snapshot_distance", K_NUMBER, FIELD(snapshot_distance), 1, 1000000000, .initial = "1000"},
    {"verify_replication_node_ip", K_BOOL, FIELD(verify_replication_node_ip), .initial = "no"},
    {"cluster_join", K_BOOL, FIELD(cluster_join), .initial = "no"},
    {"cluster_name", K_NAME, FIELD(cluster_name), .initial = "ferry"},
    {"replication_tls", K_BOOL, FIELD(replication_tls), .initial = "no"},
    {"replication_tls_certificate", K_FILE, FIELD(replication_tls_certificate), .initial = ""},
    {"replication_tls_key", K_FILE, FIELD(replication_tls_key), .initial = ""},
    {"replication_tls_ca", K_FILE, FIELD(replication_tls_ca), .initial = ""},
    {"client_tls", K_CHOICE, FIELD(client_tls), .initial = "no", .choices = client_tls_choices},
    {"client_tls_certificate", K_FILE, FIELD(client_tls_certificate), .initial = ""},
    {"client_tls_key", K_FILE, FIELD(client_tls_key), .initial = ""},
    {"client_tls_ca", K_FILE, FIELD(client_tls_ca), .initial = ""},
    {"client_tls_verify_client", K_CHOICE, FIELD(client_tls_verify_client), .initial = "no",
     .choices = verify_client_choices},
    {"tls_min_version", K_CHOICE, FIELD(tls_min_version), .initial = "1.2",
     .choices = tls_version_choices},
    {"tls_ciphers", K_TEXT, FIELD(tls_ciphers), .initial = ""},
    {"tls_ciphersuites", K_TEXT, FIELD(tls_ciphersuites), .initial = ""},
    {"client_handshake_timeout", K_DURATION, FIELD(client_handshake_timeout_ms), 100,
     3600 * SECOND, .initial = "10s"},
    {"raft_heartbeat_interval", K_DURATION, FIELD(raft_heartbeat_ms), 1, 10 * SECOND,
     .initial = "50ms"},
    {"raft_election_timeout_min", K_DURATION, FIELD(raft_election_min_ms), 1, 60 * SECOND,
     .initial = "300ms"},
    {"raft_election_timeout_max", K_DURATION, FIELD(raft_election_max_ms), 1, 60 * SECOND,
     .initial = "600ms"},
};

#define NKEYS (sizeof keys / sizeof keys[0])
#define KEY_NAME_MAX 64

union value {
    uint64_t number;
    int flag;
    const char *path;
    struct config_endpoint endpoint;
    struct {
        struct config_member m[CONFIG_MAX_MEMBERS];
        uint32_t count;
    } members;
};

static const struct key *key_find(const char *name)
{
    char norm[KEY_NAME_MAX];
    size_t len = strlen(name);
    if (len >= sizeof norm)
        return NULL;
    for (size_t i = 0; i <= len; i++)
        norm[i] = name[i] == '-' ? '_' : (char)tolower((unsigned char)name[i]);
    for (size_t i = 0; i < NKEYS; i++) {
        if (strcmp(norm, keys[i].name) == 0)
            return &keys[i];
    }
    return NULL;
}

int config_key_known(const char *name)
{
    return key_find(name) != NULL;
}

int config_raft_dir(const char *data_dir, char *out, size_t n)
{
    size_t len = strlen(data_dir);
    const char *sep = len > 0 && data_dir[len - 1] == '/' ? "" : "/";
    int w = snprintf(out, n, "%s%sraft", data_dir, sep);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

/* ---- parsing one value ---- */

static int range_error(const struct key *k, char *why, size_t n)
{
    char lo[32], hi[32];
    if (k->kind == K_SIZE) {
        config_format_size(k->min, lo, sizeof lo);
        config_format_size(k->max, hi, sizeof hi);
        return config_fail(why, n,
                           "expected a size in bytes with an optional K, M or G suffix (%s to %s)",
                           lo, hi);
    }
    if (k->kind == K_DURATION) {
        config_format_duration(k->min, lo, sizeof lo);
        config_format_duration(k->max, hi, sizeof hi);
        return config_fail(
            why, n, "expected a duration such as 250ms, 30s, 5m, 2h or 7d (%s to %s)", lo, hi);
    }
    return config_fail(why, n, "expected a whole number from %llu to %llu",
                       (unsigned long long)k->min, (unsigned long long)k->max);
}

static int parse_number(const struct key *k, const char *s, uint64_t *out, char *why, size_t n)
{
    int rc = k->kind == K_DURATION ? config_parse_duration(s, out) : config_parse_size(s, out);
    if (rc != 0 || *out < k->min || *out > k->max)
        return range_error(k, why, n);
    return 0;
}

static int parse_path(const struct key *k, const char *s, char *why, size_t n)
{
    size_t len = strlen(s);
    if (len == 0 && !k->optional)
        return config_fail(why, n, "expected a directory path");
    if (len >= CONFIG_PATH_MAX)
        return config_fail(why, n, "the path is longer than %d bytes", CONFIG_PATH_MAX - 1);
    for (size_t i = 0; i < len; i++) {
        if (iscntrl((unsigned char)s[i]))
            return config_fail(why, n, "the path contains a control character");
        if (s[i] == '#' && (i == 0 || isspace((unsigned char)s[i - 1])))
            return config_fail(why, n,
                               "a '#' at the start or after a space would start a comment in a "
                               "config file; rename the directory");
    }
    return 0;
}

static int parse_endpoint_value(const struct key *k, const char *s, struct config_endpoint *out,
                                char *why, size_t n)
{
    if (k->optional && strcasecmp(s, "none") == 0) {
        memset(out, 0, sizeof *out);
        return 0;
    }
    return config_endpoint_parse(s, k->port, out, why, n);
}

static int parse_members_value(const char *s, union value *v, char *why, size_t n)
{
    struct ferry_err e;
    if (config_parse_membership(s, v->members.m, CONFIG_MAX_MEMBERS, &v->members.count, &e) != 0)
        return config_fail(why, n, "%s", e.msg);
    return 0;
}

static int parse_value(const struct key *k, const char *s, union value *v, char *why, size_t n)
{
    enum log_level level;
    switch (k->kind) {
    case K_ENDPOINT:
        return parse_endpoint_value(k, s, &v->endpoint, why, n);
    case K_PATH:
        v->path = s;
        return parse_path(k, s, why, n);
    case K_SIZE:
    case K_NUMBER:
    case K_DURATION:
        return parse_number(k, s, &v->number, why, n);
    case K_BOOL:
        if (config_parse_bool(s, &v->flag) != 0)
            return config_fail(why, n, "expected yes/no, true/false, on/off or 1/0");
        return 0;
    case K_LEVEL:
        if (log_level_parse(s, &level) != 0)
            return config_fail(why, n, "expected debug, info, warn, error or off");
        v->flag = (int)level;
        return 0;
    case K_MEMBERS:
        return parse_members_value(s, v, why, n);
    case K_FILE:
        v->path = s;
        if (s[0] == '\0')
            return 0;
        if (strlen(s) >= k->width)
            return config_fail(why, n, "the path is longer than %zu bytes", k->width - 1);
        return parse_path(k, s, why, n);
    case K_TEXT:
        if (strlen(s) >= k->width)
            return config_fail(why, n, "expected at most %zu characters", k->width - 1);
        for (const char *p = s; *p; p++)
            if (iscntrl((unsigned char)*p))
                return config_fail(why, n, "the value contains a control character");
        v->path = s;
        return 0;
    case K_CHOICE: {
        char allowed[128] = "";
        for (int i = 0; k->choices[i] != NULL; i++) {
            if (strcasecmp(s, k->choices[i]) == 0) {
                v->flag = i;
                return 0;
            }
            size_t len = strlen(allowed);
            snprintf(allowed + len, sizeof allowed - len, "%s%s", i ? ", " : "", k->choices[i]);
        }
        return config_fail(why, n, "expected one of %s", allowed);
    }
    case K_NAME:
        if (s[0] == '\0' || strlen(s) >= k->width)
            return config_fail(why, n, "expected 1 to %zu characters", k->width - 1);
        for (const char *p = s; *p; p++)
            if (!isalnum((unsigned char)*p) && *p != '-' && *p != '_' && *p != '.')
                return config_fail(why, n, "expected letters, digits, '-', '_' or '.' only");
        v->path = s;
        return 0;
    }
    return config_fail(why, n, "unknown kind of key");
}

/* ---- storing and reading fields ---- */

static void store_number(void *field, size_t width, uint64_t v)
{
    if (width == sizeof(uint32_t)) {
        uint32_t v32 = (uint32_t)v;
        assert(v <= UINT32_MAX);
        memcpy(field, &v32, sizeof v32);
    } else {
        assert(width == sizeof(uint64_t));
        memcpy(field, &v, sizeof v);
    }
}

static uint64_t read_number(const void *field, size_t width)
{
    uint32_t v32;
    uint64_t v;
    if (width == sizeof(uint32_t)) {
        memcpy(&v32, field, sizeof v32);
        return v32;
    }
    memcpy(&v, field, sizeof v);
    return v;
}

/* Whole fields are overwritten (strings zero-filled), so a config's bytes depend only on its
 * values. */
static void store(struct config *c, const struct key *k, const union value *v)
{
    char *field = (char *)c + k->offset;
    switch (k->kind) {
    case K_ENDPOINT:
        memcpy(field, &v->endpoint, sizeof v->endpoint);
        break;
    case K_PATH:
    case K_NAME:
    case K_FILE:
    case K_TEXT:
        memset(field, 0, k->width);
        memcpy(field, v->path, strlen(v->path));
        break;
    case K_BOOL:
    case K_LEVEL:
    case K_CHOICE:
        memcpy(field, &v->flag, sizeof v->flag);
        break;
    case K_MEMBERS:
        memset(c->members, 0, sizeof c->members);
        memcpy(c->members, v->members.m, v->members.count * sizeof v->members.m[0]);
        c->member_count = v->members.count;
        break;
    default:
        store_number(field, k->width, v->number);
    }
}

/* Trim surrounding whitespace from s into buf (CONFIG_VALUE_MAX bytes); -1 if too long. */
static int trim_value(const char *s, char *buf)
{
    const char *end;
    while (isspace((unsigned char)*s))
        s++;
    end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        end--;
    if ((size_t)(end - s) >= CONFIG_VALUE_MAX)
        return -1;
    memcpy(buf, s, (size_t)(end - s));
    buf[end - s] = '\0';
    return 0;
}

int config_set(struct config *c, const char *key, const char *value, const char *source,
               struct ferry_err *err)
{
    char buf[CONFIG_VALUE_MAX], why[CONFIG_WHY_MAX], shown[CONFIG_SHOWN_MAX];
    union value v;
    const struct key *k = key_find(key);
    if (k == NULL)
        return ferry_err_set(err, FERRY_ECONFIG, "%s: unknown key '%s'", source,
                             config_shown(key, shown));
    if (trim_value(value, buf) != 0)
        return ferry_err_set(err, FERRY_ECONFIG, "%s: %s: the value is longer than %d bytes",
                             source, k->name, CONFIG_VALUE_MAX - 1);
    if (parse_value(k, buf, &v, why, sizeof why) != 0)
        return ferry_err_set(err, FERRY_ECONFIG, "%s: %s '%s': %s", source, k->name,
                             config_shown(buf, shown), why);
    store(c, k, &v);
    return 0;
}

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    for (size_t i = 0; i < NKEYS; i++) {
        int rc = config_set(c, keys[i].name, keys[i].initial, "default", NULL);
        assert(rc == 0);
        (void)rc;
    }
}

/* ---- printing ---- */

static void format_value(const struct config *c, const struct key *k, char *out, size_t n)
{
    const char *field = (const char *)c + k->offset;
    static const char *const levels[] = {"debug", "info", "warn", "error", "off"};
    switch (k->kind) {
    case K_ENDPOINT:
        config_format_endpoint((const struct config_endpoint *)(const void *)field, out, n);
        break;
    case K_PATH: /* an empty optional path is printed as the directory it stands for */
        if (field[0] != '\0' || !k->optional || config_raft_dir(c->data_directory, out, n) != 0)
            snprintf(out, n, "%s", field);
        break;
    case K_SIZE:
        config_format_size(read_number(field, k->width), out, n);
        break;
    case K_DURATION:
        config_format_duration(read_number(field, k->width), out, n);
        break;
    case K_NUMBER:
        snprintf(out, n, "%llu", (unsigned long long)read_number(field, k->width));
        break;
    case K_BOOL:
        snprintf(out, n, "%s", *(const int *)(const void *)field ? "yes" : "no");
        break;
    case K_LEVEL:
        snprintf(out, n, "%s", levels[(unsigned)c->log_level <= LOG_OFF ? c->log_level : LOG_INFO]);
        break;
    case K_MEMBERS:
        config_format_members(c->members, c->member_count, out, n);
        break;
    case K_NAME:
    case K_FILE:
    case K_TEXT:
        snprintf(out, n, "%s", field);
        break;
    case K_CHOICE:
        snprintf(out, n, "%s", k->choices[*(const int *)(const void *)field]);
        break;
    }
}

void config_print(const struct config *c, void *file)
{
    char value[CONFIG_VALUE_MAX];
    for (size_t i = 0; i < NKEYS; i++) {
        format_value(c, &keys[i], value, sizeof value);
        fprintf((FILE *)file, "%s %s\n", keys[i].name, value);
    }
}

/* ---- cross-key rules ---- */

static int check_raft_timing(const struct config *c, struct ferry_err *err)
{
    char a[32], b[32];
    config_format_duration(c->raft_election_min_ms, a, sizeof a);
    config_format_duration(c->raft_heartbeat_ms, b, sizeof b);
    if (c->raft_election_min_ms <= c->raft_heartbeat_ms)
        return ferry_err_set(err, FERRY_ECONFIG,
                             "raft_election_timeout_min %s must be greater than "
                             "raft_heartbeat_interval %s",
                             a, b);
    config_format_duration(c->raft_election_max_ms, b, sizeof b);
    if (c->raft_election_max_ms <= c->raft_election_min_ms)
        return ferry_err_set(err, FERRY_ECONFIG,
                             "raft_election_timeout_max %s must be greater than "
                             "raft_election_timeout_min %s",
                             b, a);
    return 0;
}

static const struct config_member *find_member(const struct config *c, uint32_t id)
{
    for (uint32_t i = 0; i < c->member_count; i++) {
        if (c->members[i].id == id)
            return &c->members[i];
    }
    return NULL;
}

static int check_single_node(const struct config *c, struct ferry_err *err)
{
    char ep[CONFIG_HOST_MAX + 16];
    if (c->cluster_node_id != 0)
        return ferry_err_set(err, FERRY_ECONFIG,
                             "cluster_node_id %u is set but cluster_membership is not "
                             "(list every node as [priority]id:host:port, comma separated)",
                             c->cluster_node_id);
    if (c->cluster_node_endpoint.port != 0) {
        config_format_endpoint(&c->cluster_node_endpoint, ep, sizeof ep);
        return ferry_err_set(err, FERRY_ECONFIG,
                             "cluster_node_endpoint %s is set but cluster_membership is not", ep);
    }
    if (c->cluster_join)
        return ferry_err_set(err, FERRY_ECONFIG,
                             "cluster_join is set but cluster_membership is not (list this node "
                             "and the nodes it should reach)");
    return 0;
}

static int check_membership(const struct config *c, struct ferry_err *err)
{
    char why[CONFIG_WHY_MAX];
    if (c->member_count > CONFIG_MAX_MEMBERS)
        return ferry_err_set(err, FERRY_ECONFIG,
                             "cluster_membership has %u members; at most %d are allowed",
                             c->member_count, CONFIG_MAX_MEMBERS);
    if (config_members_check(c->members, c->member_count, why, sizeof why) != 0)
        return ferry_err_set(err, FERRY_ECONFIG, "cluster_membership: %s", why);
    return 0;
}

static int check_this_node(const struct config *c, struct ferry_err *err)
{
    char ep[CONFIG_HOST_MAX + 16], members[CONFIG_VALUE_MAX], shown[CONFIG_SHOWN_MAX];
    const struct config_member *me = find_member(c, c->cluster_node_id);
    if (c->cluster_node_id == 0)
        return ferry_err_set(err, FERRY_ECONFIG,
                             "cluster_membership is set but cluster_node_id is not "
                             "(set it to this node's id in cluster_membership)");
    if (me == NULL) {
        config_format_members(c->members, c->member_count, members, sizeof members);
        return ferry_err_set(err, FERRY_ECONFIG,
                             "cluster_node_id %u is not in cluster_membership '%s'",
                             c->cluster_node_id, config_shown(members, shown));
    }
    if (c->cluster_node_endpoint.port != 0 && c->cluster_node_endpoint.port != me->endpoint.port) {
        config_format_endpoint(&c->cluster_node_endpoint, ep, sizeof ep);
        return ferry_err_set(err, FERRY_ECONFIG,
                             "cluster_node_endpoint %s: the port must be %u, member %u's port in "
                             "cluster_membership",
                             ep, (unsigned)me->endpoint.port, me->id);
    }
    return 0;
}

static int is_wildcard(const char *host)
{
    return strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0;
}

static int check_ports_apart(const struct config *c, struct ferry_err *err)
{
    const struct config_endpoint *a = &c->client_endpoint, *b = &c->cluster_node_endpoint;
    char ep[CONFIG_HOST_MAX + 16];
    if (b->port != a->port ||
        (strcasecmp(a->host, b->host) != 0 && !is_wildcard(a->host) && !is_wildcard(b->host)))
        return 0;
    config_format_endpoint(b, ep, sizeof ep);
    return ferry_err_set(err, FERRY_ECONFIG,
                         "cluster_node_endpoint %s uses the same port as client_endpoint; "
                         "give them different ports",
                         ep);
}

static int check_tls(const struct config *c, struct ferry_err *err)
{
    static const char *const rep_keys[3] = {"replication_tls_certificate", "replication_tls_key",
                                            "replication_tls_ca"};
    const char *rep_vals[3] = {c->replication_tls_certificate, c->replication_tls_key,
                               c->replication_tls_ca};
    for (int i = 0; c->replication_tls && i < 3; i++) {
        if (rep_vals[i][0] == '\0')
            return ferry_err_set(err, FERRY_ECONFIG,
                                 "replication_tls is on but %s is not set (node links need this "
                                 "node's certificate and key and the cluster CA)",
                                 rep_keys[i]);
    }
    if (c->client_tls != CLIENT_TLS_NO) {
        if (c->client_tls_certificate[0] == '\0' && c->replication_tls_certificate[0] == '\0')
            return ferry_err_set(err, FERRY_ECONFIG,
                                 "client_tls is on but neither client_tls_certificate nor "
                                 "replication_tls_certificate is set");
        if (c->client_tls_key[0] == '\0' && c->replication_tls_key[0] == '\0')
            return ferry_err_set(err, FERRY_ECONFIG,
                                 "client_tls is on but neither client_tls_key nor "
                                 "replication_tls_key is set");
    }
    if (c->client_tls_verify_client != VERIFY_CLIENT_NO) {
        if (c->client_tls == CLIENT_TLS_NO)
            return ferry_err_set(err, FERRY_ECONFIG,
                                 "client_tls_verify_client is set but client_tls is no");
        if (c->client_tls_ca[0] == '\0' && c->replication_tls_ca[0] == '\0')
            return ferry_err_set(err, FERRY_ECONFIG,
                                 "client_tls_verify_client needs a CA: set client_tls_ca (or "
                                 "replication_tls_ca)");
    }
    return 0;
}

int config_validate(const struct config *c, struct ferry_err *err)
{
    int rc = check_raft_timing(c, err);
    if (rc == 0)
        rc = check_membership(c, err);
    if (rc == 0)
        rc = c->member_count == 0 ? check_single_node(c, err) : check_this_node(c, err);
    if (rc == 0)
        rc = check_ports_apart(c, err);
    if (rc == 0)
        rc = check_tls(c, err);
    return rc;
}
