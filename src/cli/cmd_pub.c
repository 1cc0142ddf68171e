/* cmd_pub.c - `ferry pub` and `ferry push`: publish to a channel, push to a queue.
 *
 * The messages are the arguments, or else the lines of standard input (the
 * newline removed). Either way they go out asynchronously with a window of
 * unacknowledged messages, so a large input streams at full speed. The
 * completion callback (on the client's I/O thread) prints the acknowledged
 * id of each message with --verbose and records the first failure; the
 * reading loop stops at the first failure, waits for what is in flight, and
 * the command exits 1 with that failure's reason. Persistent messages are
 * acknowledged in order, so the printed ids follow the input.
 */
#include "cli/cli.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct pub_run {
    int verbose;
    atomic_int failed;
    char msg[1200]; /* the first failure's reason */
};

static void on_done(ferry_client_t *c, int status, uint64_t id, const char *errmsg, void *arg)
{
    (void)c;
    struct pub_run *p = arg;
    if (status == 0) {
        if (p->verbose)
            printf("%" PRIu64 "\n", id);
        return;
    }
    if (atomic_load(&p->failed))
        return;
    snprintf(p->msg, sizeof p->msg, "%s", errmsg);
    atomic_store(&p->failed, 1);
}

static int send_one(ferry_client_t *c, int queue, const char *name, const char *data, size_t len,
                    unsigned flags, struct pub_run *p)
{
    if (queue)
        return ferry_push_async(c, name, data, len, on_done, p);
    return ferry_publish_async(c, name, data, len, flags, on_done, p);
}

static int run_pub(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a, int queue)
{
    const char *name = a->pos[0];
    uint64_t window = 0;
    const char *w = cli_get(cmd, a, "window");
    int rc = w ? cli_opt_u64(cmd, "window", w, &window) : 0;
    if (rc != 0)
        return rc;
    if (w && (window == 0 || window > 1000000))
        return cli_usage_error(cmd, "--window must be from 1 to 1000000");
    unsigned flags = (!queue && cli_get(cmd, a, "transient")) ? FERRY_TRANSIENT : 0;
    struct pub_run p = {.verbose = cli_get(cmd, a, "verbose") != NULL};
    ferry_client_t *c;
    rc = cli_connect(g, a, (uint32_t)window, &c);
    if (rc != 0)
        return rc;
    const char *what = queue ? "push to" : "publish to";
    int send_rc = 0;
    if (a->npos > 1) {
        for (int i = 1; i < a->npos && send_rc == 0 && !atomic_load(&p.failed); i++)
            send_rc = send_one(c, queue, name, a->pos[i], strlen(a->pos[i]), flags, &p);
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while (send_rc == 0 && !atomic_load(&p.failed) && (n = getline(&line, &cap, stdin)) >= 0) {
            if (n > 0 && line[n - 1] == '\n')
                n--;
            send_rc = send_one(c, queue, name, line, (size_t)n, flags, &p);
        }
        free(line);
    }
    char err[1300];
    if (send_rc != 0)
        snprintf(err, sizeof err, "%s", ferry_client_errmsg(c));
    int drain_rc = ferry_drain(c, -1);
    if (send_rc == 0 && drain_rc != 0 && !atomic_load(&p.failed)) {
        send_rc = drain_rc;
        snprintf(err, sizeof err, "%s", ferry_client_errmsg(c));
    }
    rc = CLI_EXIT_OK;
    if (atomic_load(&p.failed))
        rc = cli_error("%s '%s': %s", what, name, p.msg);
    else if (send_rc != 0)
        rc = cli_error("%s '%s': %s", what, name, err);
    ferry_client_close(c);
    return rc;
}

static int run_publish(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a)
{
    return run_pub(g, cmd, a, 0);
}

static int run_push(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a)
{
    return run_pub(g, cmd, a, 1);
}

static const struct cli_opt pub_opts[] = {
    {"transient", 0, NULL, "deliver to live subscribers only; never stored, no event id"},
    {"verbose", 'v', NULL, "print the event id of each acknowledged message, one per line"},
    {"window", 'w', "N", "messages in flight at once (default 256)"},
    {NULL, 0, NULL, NULL},
};

static const struct cli_opt push_opts[] = {
    {"verbose", 'v', NULL, "print the item id of each acknowledged message, one per line"},
    {"window", 'w', "N", "messages in flight at once (default 256)"},
    {NULL, 0, NULL, NULL},
};

const struct cli_cmd cli_cmd_pub = {
    .name = "pub",
    .synopsis = "CHANNEL [MESSAGE...]",
    .summary = "publish messages to a channel (the arguments, or each line of stdin)",
    .details = "Each MESSAGE is one event; without MESSAGE arguments every line of standard\n"
               "input is one (without its newline). Messages are acknowledged once stored;\n"
               "the command stops at the first failure and exits 1 with its reason.\n"
               "A lost connection is not a failure: the command reconnects (to the new\n"
               "leader after a failover) and sends again what was not acknowledged, which\n"
               "the servers store only once (--reconnect-timeout bounds the wait).\n"
               "Use -- before a message that starts with '-'.\n\n"
               "examples:\n"
               "  ferry pub orders 'order 1' 'order 2'\n"
               "  seq 100000 | ferry pub numbers --verbose > acked-ids.txt",
    .opts = pub_opts,
    .min_pos = 1,
    .max_pos = -1,
    .run = run_publish,
};

const struct cli_cmd cli_cmd_push = {
    .name = "push",
    .synopsis = "QUEUE [MESSAGE...]",
    .summary = "push items to a queue (the arguments, or each line of stdin)",
    .details = "As 'ferry pub', for a work queue: each item goes to one consumer.\n\n"
               "examples:\n"
               "  ferry push jobs 'resize img-1.png'\n"
               "  ferry push jobs < jobs.txt",
    .opts = push_opts,
    .min_pos = 1,
    .max_pos = -1,
    .run = run_push,
};
