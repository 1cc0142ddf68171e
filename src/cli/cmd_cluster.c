/* cmd_cluster.c - `ferry admin add-node|remove-node|transfer-leader|snapshot`.
 *
 * Each subcommand is one ADMIN request (ferry_admin) to the leader, found
 * through --servers like any request. A membership change refused because
 * another one is still in flight (EBUSY: the previous change, or the
 * promotion of a node just added, is not committed yet) is retried every
 * 200 ms until --timeout; every other error is reported at once.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static void pause_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int parse_node_id(const struct cli_cmd *cmd, const char *s, uint32_t *out)
{
    uint64_t v;
    if (cli_parse_u64(s, &v) != 0 || v == 0 || v > UINT32_MAX)
        return cli_usage_error(cmd, "'%s' is not a node id (1 to 4294967295)", s);
    *out = (uint32_t)v;
    return 0;
}

static int run_admin(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a)
{
    const char *sub = a->pos[0];
    int action;
    int want_pos; /* positional arguments after the subcommand: exact, or -1 for 0..1 */
    if (strcmp(sub, "add-node") == 0) {
        action = FERRY_ADMIN_ADD_NODE;
        want_pos = 2;
    } else if (strcmp(sub, "remove-node") == 0) {
        action = FERRY_ADMIN_REMOVE_NODE;
        want_pos = 1;
    } else if (strcmp(sub, "transfer-leader") == 0) {
        action = FERRY_ADMIN_TRANSFER_LEADER;
        want_pos = -1;
    } else if (strcmp(sub, "snapshot") == 0) {
        action = FERRY_ADMIN_SNAPSHOT;
        want_pos = 0;
    } else {
        return cli_usage_error(cmd,
                               "unknown subcommand '%s' (add-node, remove-node, "
                               "transfer-leader, snapshot)",
                               sub);
    }
    int npos = a->npos - 1;
    if (want_pos >= 0 ? npos != want_pos : npos > 1)
        return cli_usage_error(cmd, "%s takes %s", sub,
                               action == FERRY_ADMIN_ADD_NODE      ? "ID HOST:PORT"
                               : action == FERRY_ADMIN_REMOVE_NODE ? "ID"
                               : action == FERRY_ADMIN_SNAPSHOT    ? "no arguments"
                                                                   : "at most one ID");
    uint32_t id = 0;
    if (npos >= 1) {
        int rc = parse_node_id(cmd, a->pos[1], &id);
        if (rc != 0)
            return rc;
    }
    const char *address = action == FERRY_ADMIN_ADD_NODE ? a->pos[2] : NULL;
    int priority = -1;
    const char *v = cli_get(cmd, a, "priority");
    if (v != NULL) {
        uint64_t p;
        if (action != FERRY_ADMIN_ADD_NODE)
            return cli_usage_error(cmd, "--priority is for add-node");
        if (cli_opt_u64(cmd, "priority", v, &p) != 0)
            return CLI_EXIT_USAGE;
        if (p > 255)
            return cli_usage_error(cmd, "--priority %s: expected 0 to 255", v);
        priority = (int)p;
    }
    uint64_t timeout = 10000;
    if ((v = cli_get(cmd, a, "timeout")) != NULL &&
        cli_opt_duration_ms(cmd, "timeout", v, &timeout) != 0)
        return CLI_EXIT_USAGE;

    ferry_client_t *c;
    int rc = cli_connect(g, a, 0, &c);
    if (rc != 0)
        return rc;
    uint64_t deadline = now_ms() + timeout;
    int st;
    while ((st = ferry_admin(c, action, id, priority, address)) == FERRY_EBUSY &&
           now_ms() < deadline && !cli_interrupted)
        pause_ms(200);
    char what[300];
    if (id != 0)
        snprintf(what, sizeof what, "%s %u", sub, id);
    else
        snprintf(what, sizeof what, "%s", sub);
    if (st != 0) {
        rc = cli_fail_client(c, what);
    } else if (action == FERRY_ADMIN_ADD_NODE) {
        printf("node %u at %s added as a learner; it becomes a voter once it has caught up "
               "(member.%u in 'ferry status')\n",
               id, address, id);
    } else if (action == FERRY_ADMIN_REMOVE_NODE) {
        printf("node %u removed from the cluster\n", id);
    } else if (action == FERRY_ADMIN_TRANSFER_LEADER) {
        if (id != 0)
            printf("leadership is being handed to node %u\n", id);
        else
            printf("leadership is being handed to the best caught-up node\n");
    } else {
        printf("snapshot started on the leader (snapshot_index in 'ferry status')\n");
    }
    ferry_client_close(c);
    return rc;
}

static const struct cli_opt admin_opts[] = {
    {"priority", 0, "N", "add-node: election priority 0-255 (default 1; 0 = witness)"},
    {"timeout", 0, "DURATION", "retry while another membership change is in flight (default 10s)"},
    {NULL, 0, NULL, NULL},
};

const struct cli_cmd cli_cmd_admin = {
    .name = "admin",
    .synopsis = "add-node ID HOST:PORT [--priority N] | remove-node ID |\n"
                "                   transfer-leader [ID] | snapshot",
    .summary = "change the cluster's members, move leadership, take a snapshot",
    .details =
        "Requests go to the leader (found through --servers).\n\n"
        "  add-node ID HOST:PORT  add node ID, whose replication endpoint is HOST:PORT, as a\n"
        "                         learner; the leader makes it a voter once it has caught up.\n"
        "                         Start the new node first, with an empty data directory,\n"
        "                         cluster_join yes and a cluster_membership listing itself\n"
        "                         and the existing nodes.\n"
        "  remove-node ID         take node ID out of the cluster (stop it afterwards).\n"
        "  transfer-leader [ID]   hand leadership to node ID, or to the best caught-up node.\n"
        "  snapshot               make the leader snapshot its state now.\n\n"
        "One membership change at a time: while the previous one (or the promotion of a node\n"
        "just added) is not committed, the leader answers EBUSY and ferry retries until\n"
        "--timeout.\n\n"
        "examples:\n"
        "  ferry admin add-node 4 h4:9000 --priority 5\n"
        "  ferry admin remove-node 3\n"
        "  ferry admin transfer-leader 2\n"
        "  ferry --servers h1:7878,h2:7878 admin snapshot",
    .opts = admin_opts,
    .min_pos = 1,
    .max_pos = 3,
    .run = run_admin,
};
