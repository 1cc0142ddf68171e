/* cmd_admin.c - `ferry create|delete|list|info|status|ping`.
 *
 * Output is plain text meant for people and for line tools: `info` and
 * `status` print "key: value" lines, `list` an aligned table with a header,
 * `status --json` one JSON object whose values are the server's strings.
 */
#include "cli/cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *kind_name(int kind)
{
    return kind == FERRY_QUEUE ? "queue" : kind == FERRY_CHANNEL ? "channel" : "unknown";
}

/* "30s", "1500ms", "2h", or "none" for 0. */
static void format_ttl(uint64_t ms, char *out, size_t cap)
{
    if (ms == 0)
        snprintf(out, cap, "none");
    else if (ms % 86400000u == 0)
        snprintf(out, cap, "%" PRIu64 "d", ms / 86400000u);
    else if (ms % 3600000u == 0)
        snprintf(out, cap, "%" PRIu64 "h", ms / 3600000u);
    else if (ms % 60000u == 0)
        snprintf(out, cap, "%" PRIu64 "m", ms / 60000u);
    else if (ms % 1000u == 0)
        snprintf(out, cap, "%" PRIu64 "s", ms / 1000u);
    else
        snprintf(out, cap, "%" PRIu64 "ms", ms);
}

/* ---- create ---- */

static int run_create(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a)
{
    int kind;
    if (strcmp(a->pos[0], "channel") == 0)
        kind = FERRY_CHANNEL;
    else if (strcmp(a->pos[0], "queue") == 0)
        kind = FERRY_QUEUE;
    else
        return cli_usage_error(cmd, "expected 'channel' or 'queue', not '%s'", a->pos[0]);
    ferry_resource_options_t o;
    memset(&o, 0, sizeof o);
    const char *v;
    int rc = 0;
    uint64_t md = 0;
    if ((v = cli_get(cmd, a, "capacity")) != NULL)
        rc = cli_opt_u64(cmd, "capacity", v, &o.capacity);
    if (rc == 0 && (v = cli_get(cmd, a, "ttl")) != NULL)
        rc = cli_opt_duration_ms(cmd, "ttl", v, &o.ttl_ms);
    if (rc == 0 && (v = cli_get(cmd, a, "max-deliveries")) != NULL) {
        rc = cli_opt_u64(cmd, "max-deliveries", v, &md);
        if (rc == 0 && md > UINT32_MAX)
            rc = cli_usage_error(cmd, "--max-deliveries %s is too large", v);
    }
    o.max_deliveries = (uint32_t)md;
    o.dlq = cli_get(cmd, a, "dlq");
    if (rc == 0 && kind == FERRY_CHANNEL && (o.max_deliveries || o.dlq))
        rc = cli_usage_error(cmd, "--max-deliveries and --dlq are for queues");
    if (rc != 0)
        return rc;
    ferry_client_t *c;
    if ((rc = cli_connect(g, a, 0, &c)) != 0)
        return rc;
    char what[300];
    snprintf(what, sizeof what, "create %s '%s'", kind_name(kind), a->pos[1]);
    if (ferry_create(c, kind, a->pos[1], &o) != 0)
        rc = cli_fail_client(c, what);
    ferry_client_close(c);
    return rc;
}

static const struct cli_opt create_opts[] = {
    {"capacity", 0, "N", "keep at most N messages (0 = unlimited)"},
    {"ttl", 0, "DURATION", "drop messages older than this (30s, 5m, 2h, 7d)"},
    {"max-deliveries", 0, "N", "queues: deliveries before an item moves to the DLQ"},
    {"dlq", 0, "NAME", "queues: dead-letter queue (default NAME.dlq)"},
    {NULL, 0, NULL, NULL},
};

const struct cli_cmd cli_cmd_create = {
    .name = "create",
    .synopsis = "channel|queue NAME [OPTIONS]",
    .summary = "create a channel or a queue",
    .details = "Creating a resource that exists with the same attributes succeeds.\n\n"
               "examples:\n"
               "  ferry create channel prices --ttl 1h --capacity 100000\n"
               "  ferry create queue jobs --max-deliveries 5 --dlq jobs-failed",
    .opts = create_opts,
    .min_pos = 2,
    .max_pos = 2,
    .run = run_create,
};

/* ---- delete ---- */

static int run_delete(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a)
{
    (void)cmd;
    ferry_client_t *c;
    int rc = cli_connect(g, a, 0, &c);
    if (rc != 0)
        return rc;
    char what[300];
    snprintf(what, sizeof what, "delete '%s'", a->pos[0]);
    if (ferry_delete(c, a->pos[0]) != 0)
        rc = cli_fail_client(c, what);
    ferry_client_close(c);
    return rc;
}

static const struct cli_opt no_opts[] = {{NULL, 0, NULL, NULL}};

const struct cli_cmd cli_cmd_delete = {
    .name = "delete",
    .synopsis = "NAME",
    .summary = "delete a channel or queue and everything stored in it",
    .details = "example:\n  ferry delete old-orders",
    .opts = no_opts,
    .min_pos = 1,
    .max_pos = 1,
    .run = run_delete,
};

/* ---- list ---- */

static int run_list(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a)
{
    (void)cmd;
    ferry_client_t *c;
    int rc = cli_connect(g, a, 0, &c);
    if (rc != 0)
        return rc;
    ferry_info_t *v = NULL;
    size_t n = 0;
    if (ferry_list(c, &v, &n) != 0) {
        rc = cli_fail_client(c, "list");
    } else {
        int w = 4;
        for (size_t i = 0; i < n; i++)
            if ((int)strlen(v[i].name) > w)
                w = (int)strlen(v[i].name);
        printf("%-7s  %-*s  %10s  %10s  %10s  %7s  %7s\n", "KIND", w, "NAME", "COUNT", "FIRST",
               "LAST", "CLIENTS", "UNACKED");
        for (size_t i = 0; i < n; i++)
            printf("%-7s  %-*s  %10" PRIu64 "  %10" PRIu64 "  %10" PRIu64 "  %7" PRIu32
                   "  %7" PRIu64 "\n",
                   kind_name(v[i].kind), w, v[i].name, v[i].count, v[i].first_id, v[i].last_id,
                   v[i].clients, v[i].unacked);
        ferry_list_free(v);
    }
    ferry_client_close(c);
    return rc;
}

const struct cli_cmd cli_cmd_list = {
    .name = "list",
    .synopsis = "",
    .summary = "list every channel and queue with its counters",
    .details = NULL,
    .opts = no_opts,
    .min_pos = 0,
    .max_pos = 0,
    .run = run_list,
};

/* ---- info ---- */

static int run_info(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a)
{
    (void)cmd;
    ferry_client_t *c;
    int rc = cli_connect(g, a, 0, &c);
    if (rc != 0)
        return rc;
    ferry_info_t i;
    char what[300];
    snprintf(what, sizeof what, "info '%s'", a->pos[0]);
    if (ferry_info(c, a->pos[0], &i) != 0) {
        rc = cli_fail_client(c, what);
    } else {
        char ttl[32];
        format_ttl(i.ttl_ms, ttl, sizeof ttl);
        printf("name: %s\nkind: %s\ncount: %" PRIu64 "\nfirst_id: %" PRIu64 "\nlast_id: %" PRIu64
               "\nclients: %" PRIu32 "\nunacked: %" PRIu64 "\n",
               i.name, kind_name(i.kind), i.count, i.first_id, i.last_id, i.clients, i.unacked);
        if (i.capacity)
            printf("capacity: %" PRIu64 "\n", i.capacity);
        else
            printf("capacity: unlimited\n");
        printf("ttl: %s\n", ttl);
        if (i.kind == FERRY_QUEUE)
            printf("max_deliveries: %" PRIu32 "\ndlq: %s\n", i.max_deliveries, i.dlq);
    }
    ferry_client_close(c);
    return rc;
}

const struct cli_cmd cli_cmd_info = {
    .name = "info",
    .synopsis = "NAME",
    .summary = "show a channel's or queue's attributes and counters",
    .details = "example:\n  ferry info orders",
    .opts = no_opts,
    .min_pos = 1,
    .max_pos = 1,
    .run = run_info,
};

/* ---- status ---- */

static void json_string(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", stdout);
            break;
        case '\\':
            fputs("\\\\", stdout);
            break;
        case '\n':
            fputs("\\n", stdout);
            break;
        case '\r':
            fputs("\\r", stdout);
            break;
        case '\t':
            fputs("\\t", stdout);
            break;
        default:
            if (*p < 0x20)
                printf("\\u%04x", *p);
            else
                putchar(*p);
        }
    }
    putchar('"');
}

static const char *kv_get(const ferry_kv_t *kv, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(kv[i].key, key) == 0)
            return kv[i].value;
    }
    return NULL;
}

/* STATUS from one address over a monitoring connection; 0 or -1. */
static int fetch_status(const char *address, ferry_kv_t **kv, size_t *n)
{
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = address;
    o.client_name = "ferry-cli";
    o.any_node = 1;
    o.connect_timeout_ms = 1000;
    o.request_timeout_ms = 2000;
    cli_apply_tls(&o);
    ferry_client_t *c = NULL;
    if (ferry_client_create(&c, &o) != 0)
        return -1;
    int rc = ferry_client_connect(c) == 0 && ferry_status(c, kv, n) == 0 ? 0 : -1;
    ferry_client_close(c);
    return rc;
}

/* Text after `name=` in a member line ("role=leader priority=1 ..."). */
static void field(const char *line, const char *name, char *out, size_t cap)
{
    char pat[32];
    snprintf(pat, sizeof pat, "%s=", name);
    out[0] = '\0';
    for (const char *p = line; (p = strstr(p, pat)) != NULL; p++) {
        if (p != line && p[-1] != ' ')
            continue;
        p += strlen(pat);
        size_t len = strcspn(p, " ");
        if (len >= cap)
            len = cap - 1;
        memcpy(out, p, len);
        out[len] = '\0';
        return;
    }
}

/* The whole cluster: the leader's view of every member (role, priority,
 * reachability, replication lag), plus each member's own term and indexes
 * asked from it directly ("-" when it has no client endpoint or does not
 * answer). */
static int run_status_cluster(struct cli_global *g, struct cli_args *a, int json)
{
    const char *servers = a->servers ? a->servers : g->servers;
    ferry_kv_t *kv = NULL, *lkv = NULL;
    size_t n = 0, ln = 0;
    ferry_client_t *c;
    int rc = cli_connect_opts(g, a, 0, 1, &c);
    if (rc != 0)
        return rc;
    if (ferry_status(c, &kv, &n) != 0) {
        rc = cli_fail_client(c, "status");
        ferry_client_close(c);
        return rc;
    }
    ferry_client_close(c);
    const char *leader = kv_get(kv, n, "leader");
    const char *serving = kv_get(kv, n, "serving");
    if (serving && strcmp(serving, "yes") == 0) {
        lkv = kv;
        ln = n;
    } else if (leader && leader[0] && fetch_status(leader, &lkv, &ln) != 0) {
        lkv = NULL;
    }
    if (lkv == NULL) {
        ferry_status_free(kv);
        return cli_error("status: no leader answers (asked %s)", servers ? servers : "default");
    }
    if (json)
        printf("{\n  \"leader\": ");
    else
        printf("%-4s %-9s %-8s %-9s %-6s %-10s %-10s %-10s %-8s %s\n", "id", "role", "priority",
               "reachable", "term", "last_index", "commit", "applied", "lag", "client");
    if (json) {
        json_string(kv_get(lkv, ln, "node_id") ? kv_get(lkv, ln, "node_id") : "");
        printf(",\n  \"members\": [");
    }
    int first = 1;
    for (size_t i = 0; i < ln; i++) {
        if (strncmp(lkv[i].key, "member.", 7) != 0)
            continue;
        const char *id = lkv[i].key + 7;
        char role[32], prio[16], reach[8], lag[32], client[300];
        field(lkv[i].value, "role", role, sizeof role);
        field(lkv[i].value, "priority", prio, sizeof prio);
        field(lkv[i].value, "reachable", reach, sizeof reach);
        field(lkv[i].value, "lag", lag, sizeof lag);
        field(lkv[i].value, "client", client, sizeof client);
        ferry_kv_t *mkv = NULL;
        size_t mn = 0;
        int have = strcmp(client, "-") != 0 && client[0] && fetch_status(client, &mkv, &mn) == 0;
        const char *term = have ? kv_get(mkv, mn, "term") : NULL;
        const char *last = have ? kv_get(mkv, mn, "last_index") : NULL;
        const char *commit = have ? kv_get(mkv, mn, "commit_index") : NULL;
        const char *applied = have ? kv_get(mkv, mn, "applied_index") : NULL;
        if (json) {
            printf("%s\n    {", first ? "" : ",");
            const char *keys[] = {"id",   "role",       "priority",     "reachable",
                                  "term", "last_index", "commit_index", "applied_index",
                                  "lag",  "client"};
            const char *vals[] = {id, role, prio, reach, term, last, commit, applied, lag, client};
            for (int k = 0; k < 10; k++) {
                printf("%s", k ? ", " : "");
                json_string(keys[k]);
                printf(": ");
                json_string(vals[k] ? vals[k] : "-");
            }
            printf("}");
        } else {
            printf("%-4s %-9s %-8s %-9s %-6s %-10s %-10s %-10s %-8s %s\n", id, role, prio, reach,
                   term ? term : "-", last ? last : "-", commit ? commit : "-",
                   applied ? applied : "-", lag, client);
        }
        first = 0;
        if (mkv)
            ferry_status_free(mkv);
    }
    if (json)
        printf("\n  ]\n}\n");
    if (lkv != kv)
        ferry_status_free(lkv);
    ferry_status_free(kv);
    return 0;
}

static int run_status(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a)
{
    int json = cli_get(cmd, a, "json") != NULL;
    if (cli_get(cmd, a, "cluster") != NULL)
        return run_status_cluster(g, a, json);
    ferry_client_t *c;
    int rc = cli_connect_opts(g, a, 0, 1, &c);
    if (rc != 0)
        return rc;
    ferry_kv_t *kv = NULL;
    size_t n = 0;
    if (ferry_status(c, &kv, &n) != 0) {
        rc = cli_fail_client(c, "status");
    } else if (json) {
        printf("{");
        for (size_t i = 0; i < n; i++) {
            printf(i ? ",\n  " : "\n  ");
            json_string(kv[i].key);
            printf(": ");
            json_string(kv[i].value);
        }
        printf("\n}\n");
    } else {
        for (size_t i = 0; i < n; i++)
            printf("%s: %s\n", kv[i].key, kv[i].value);
    }
    ferry_status_free(kv);
    ferry_client_close(c);
    return rc;
}

static const struct cli_opt status_opts[] = {
    {"json", 0, NULL, "print one JSON object (every value a string)"},
    {"cluster", 'c', NULL, "one line per member: the leader's view plus each member's own indexes"},
    {NULL, 0, NULL, NULL},
};

const struct cli_cmd cli_cmd_status = {
    .name = "status",
    .synopsis = "[--json] [--cluster]",
    .summary = "show a node's status (role, leader, counters ...), or the whole cluster's",
    .details = "Works on any node of a cluster, leader or not.\n\n"
               "examples:\n  ferry status\n  ferry status --json | jq -r .role\n"
               "  ferry status --cluster --servers h1:7878,h2:7878,h3:7878",
    .opts = status_opts,
    .min_pos = 0,
    .max_pos = 0,
    .run = run_status,
};

/* ---- ping ---- */

static int run_ping(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a)
{
    (void)cmd;
    ferry_client_t *c;
    int rc = cli_connect_opts(g, a, 0, 1, &c);
    if (rc != 0)
        return rc;
    uint64_t us = 0;
    ferry_server_info_t si;
    if (ferry_ping(c, &us) != 0 || ferry_client_server_info(c, &si) != 0)
        rc = cli_fail_client(c, "ping");
    else
        printf("pong from %s in %.3f ms (%s, node %" PRIu64 ", %s)\n", si.address,
               (double)us / 1000.0, si.role[0] ? si.role : "unknown role", si.node_id, si.version);
    ferry_client_close(c);
    return rc;
}

const struct cli_cmd cli_cmd_ping = {
    .name = "ping",
    .synopsis = "",
    .summary = "check that a server answers, and how fast",
    .details = "example:\n  ferry --servers 10.0.0.5:7878 ping",
    .opts = no_opts,
    .min_pos = 0,
    .max_pos = 0,
    .run = run_ping,
};
