/* cmd_sub.c - `ferry sub` (channel subscription) and `ferry consume` (queue consumer).
 *
 * Both poll the library (ferry_sub_next) and print one message per line.
 * Acknowledgements are batched: while more messages are waiting they are
 * only printed; when none is waiting (or the command ends) standard output
 * is flushed first and then every printed message is acknowledged (queue
 * items one by one, durable subscriptions with one cumulative ack), so a
 * message is never acknowledged before it was written out. All acks are
 * sent without waiting except the very last one, which waits for the
 * server's OK: the command exits only when its acks are in.
 *
 * The loop waits in slices of at most 200 ms so SIGINT/SIGTERM end it
 * cleanly (acks sent, subscription closed, exit 0).
 */
#include "cli/cli.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLICE_MS 200
#define DEFAULT_PREFETCH 256

struct sub_run {
    const char *name;
    int consumer;
    int durable;
    uint64_t count;      /* stop after this many; 0 = no limit */
    uint64_t timeout_ms; /* stop after this long without a message; 0 = never */
    int verbose;
    /* printed but not yet acknowledged */
    uint64_t *pending;
    size_t npending;
    size_t cap;
    uint64_t last_id;
    int have_last;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void print_message(const struct sub_run *r, const ferry_message_t *m)
{
    if (r->verbose && r->consumer)
        printf("%" PRIu64 "\t%" PRIu32 "\t", m->id, m->delivery_count);
    else if (r->verbose)
        printf("%" PRIu64 "\t", m->id);
    fwrite(m->data, 1, m->len, stdout);
    putchar('\n');
}

static int remember(struct sub_run *r, uint64_t id)
{
    r->last_id = id;
    r->have_last = 1;
    if (!r->consumer)
        return 0;
    if (r->npending == r->cap) {
        size_t cap = r->cap ? r->cap * 2 : 256;
        uint64_t *p = realloc(r->pending, cap * sizeof *p);
        if (p == NULL)
            return cli_error("out of memory");
        r->pending = p;
        r->cap = cap;
    }
    r->pending[r->npending++] = id;
    return 0;
}

/* Write out what was printed, then acknowledge it; `final` waits for the last OK. */
static int settle(ferry_sub_t *s, struct sub_run *r, int final)
{
    if (fflush(stdout) != 0)
        return cli_error("cannot write the output");
    ferry_client_t *c = ferry_sub_client(s);
    int rc = 0;
    if (r->consumer) {
        for (size_t i = 0; i < r->npending && rc == 0; i++) {
            unsigned flags = final && i + 1 == r->npending ? 0 : FERRY_NOWAIT;
            rc = ferry_ack(s, r->pending[i], flags);
        }
        r->npending = 0;
    } else if (r->durable && r->have_last) {
        rc = ferry_ack(s, r->last_id, final ? 0 : FERRY_NOWAIT);
    }
    r->have_last = 0;
    if (rc != 0)
        return cli_error("ack on '%s': %s", r->name, ferry_client_errmsg(c));
    return 0;
}

static int receive(ferry_sub_t *s, struct sub_run *r)
{
    ferry_client_t *c = ferry_sub_client(s);
    uint64_t got = 0;
    uint64_t last_activity = now_ms();
    while (!cli_interrupted && (r->count == 0 || got < r->count)) {
        int wait = SLICE_MS;
        if (r->have_last)
            wait = 0; /* settle before sleeping */
        else if (r->timeout_ms) {
            uint64_t idle = now_ms() - last_activity;
            if (idle >= r->timeout_ms)
                break;
            if (r->timeout_ms - idle < (uint64_t)wait)
                wait = (int)(r->timeout_ms - idle);
        }
        ferry_message_t *m = NULL;
        int rc = ferry_sub_next(s, &m, wait);
        if (rc == FERRY_ETIMEDOUT) {
            if (r->have_last && (rc = settle(s, r, 0)) != 0)
                return rc;
            continue;
        }
        if (rc != 0)
            return cli_error("%s", ferry_client_errmsg(c));
        print_message(r, m);
        rc = remember(r, m->id);
        ferry_message_free(m);
        if (rc != 0)
            return rc;
        got++;
        last_activity = now_ms();
    }
    return settle(s, r, 1);
}

/* Deliveries that arrived beyond --count go straight back to the queue. */
static void return_extra(ferry_sub_t *s)
{
    ferry_message_t *m = NULL;
    while (ferry_sub_next(s, &m, 0) == 0) {
        ferry_nack(s, m->id, FERRY_NOWAIT);
        ferry_message_free(m);
    }
}

static int parse_common(const struct cli_cmd *cmd, struct cli_args *a, struct sub_run *r)
{
    const char *v;
    int rc = 0;
    if ((v = cli_get(cmd, a, "count")) != NULL)
        rc = cli_opt_u64(cmd, "count", v, &r->count);
    if (rc == 0 && (v = cli_get(cmd, a, "timeout")) != NULL) {
        rc = cli_opt_duration_ms(cmd, "timeout", v, &r->timeout_ms);
        if (rc == 0 && r->timeout_ms == 0)
            r->timeout_ms = 1;
    }
    r->verbose = cli_get(cmd, a, "verbose") != NULL;
    r->name = a->pos[0];
    return rc;
}

static int run_sub(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a)
{
    struct sub_run r;
    memset(&r, 0, sizeof r);
    int rc = parse_common(cmd, a, &r);
    if (rc != 0)
        return rc;
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    const char *from = cli_get(cmd, a, "from"), *durable = cli_get(cmd, a, "durable"),
               *window = cli_get(cmd, a, "window");
    int starts = (from != NULL) + (cli_get(cmd, a, "new") != NULL) +
                 (cli_get(cmd, a, "oldest") != NULL) + (durable != NULL);
    if (starts > 1)
        return cli_usage_error(cmd, "give at most one of --from, --new, --oldest, --durable");
    if (from != NULL) {
        o.start = FERRY_START_FROM;
        if ((rc = cli_opt_u64(cmd, "from", from, &o.from_id)) != 0)
            return rc;
    } else if (cli_get(cmd, a, "oldest")) {
        o.start = FERRY_START_OLDEST;
    } else if (durable != NULL) {
        o.start = FERRY_START_DURABLE;
        o.durable = durable;
        r.durable = 1;
    }
    uint64_t w = 0;
    if (window != NULL && (rc = cli_opt_u64(cmd, "window", window, &w)) != 0)
        return rc;
    if (w > UINT32_MAX)
        return cli_usage_error(cmd, "--window %s is too large", window);
    o.window = (uint32_t)w;

    ferry_client_t *c;
    if ((rc = cli_connect(g, a, 0, &c)) != 0)
        return rc;
    cli_catch_signals();
    ferry_sub_t *s = NULL;
    char what[300];
    snprintf(what, sizeof what, "subscribe to '%s'", r.name);
    if (ferry_subscribe(c, r.name, &o, &s) != 0)
        rc = cli_fail_client(c, what);
    else
        rc = receive(s, &r);
    if (s != NULL && ferry_unsubscribe(s) != 0 && rc == 0)
        rc = cli_fail_client(c, "unsubscribe");
    ferry_client_close(c);
    free(r.pending);
    return rc;
}

static int run_consume(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a)
{
    struct sub_run r;
    memset(&r, 0, sizeof r);
    r.consumer = 1;
    int rc = parse_common(cmd, a, &r);
    if (rc != 0)
        return rc;
    uint64_t prefetch = DEFAULT_PREFETCH;
    const char *p = cli_get(cmd, a, "prefetch");
    if (p != NULL && (rc = cli_opt_u64(cmd, "prefetch", p, &prefetch)) != 0)
        return rc;
    if (p != NULL && (prefetch == 0 || prefetch > 65535))
        return cli_usage_error(cmd, "--prefetch must be from 1 to 65535");
    if (p == NULL && r.count != 0 && r.count < prefetch)
        prefetch = r.count; /* do not take items this run will not process */
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.window = (uint32_t)prefetch;

    ferry_client_t *c;
    if ((rc = cli_connect(g, a, 0, &c)) != 0)
        return rc;
    cli_catch_signals();
    ferry_sub_t *s = NULL;
    char what[300];
    snprintf(what, sizeof what, "consume from '%s'", r.name);
    if (ferry_consume(c, r.name, &o, &s) != 0) {
        rc = cli_fail_client(c, what);
    } else {
        rc = receive(s, &r);
        return_extra(s);
    }
    if (s != NULL && ferry_cancel(s) != 0 && rc == 0)
        rc = cli_fail_client(c, "cancel");
    ferry_client_close(c);
    free(r.pending);
    return rc;
}

static const struct cli_opt sub_opts[] = {
    {"from", 0, "EVENT_ID", "start at this event id (or the oldest retained, if later)"},
    {"new", 0, NULL, "only events published from now on (the default)"},
    {"oldest", 0, NULL, "start at the oldest retained event"},
    {"durable", 0, "NAME", "durable subscription NAME: resume after its cursor; acks each event"},
    {"count", 'n', "N", "exit after N events"},
    {"timeout", 't', "SECONDS", "exit after this long without an event (30s, 500ms, 2m ...)"},
    {"verbose", 'v', NULL, "prefix each event with its event id and a tab"},
    {"window", 'w', "N", "durable: events delivered ahead of the acks (server default)"},
    {NULL, 0, NULL, NULL},
};

static const struct cli_opt consume_opts[] = {
    {"count", 'n', "N", "exit after N items"},
    {"timeout", 't', "SECONDS", "exit after this long without an item (30s, 500ms, 2m ...)"},
    {"verbose", 'v', NULL, "prefix each item with its item id and delivery count (tabs)"},
    {"prefetch", 'p', "N", "unacknowledged deliveries at once (default 256, or --count)"},
    {NULL, 0, NULL, NULL},
};

const struct cli_cmd cli_cmd_sub = {
    .name = "sub",
    .synopsis = "CHANNEL [--from EVENT_ID | --new | --oldest | --durable NAME] [OPTIONS]",
    .summary = "subscribe to a channel and print its events, one per line",
    .details = "Runs until --count events arrived, --timeout passed without one, or it is\n"
               "interrupted (exit 0). A durable subscription acknowledges every printed\n"
               "event, so the next run with the same NAME resumes after it.\n\n"
               "examples:\n"
               "  ferry sub orders --oldest --timeout 2s\n"
               "  ferry sub orders --from 1000 --count 10 --verbose\n"
               "  ferry sub orders --durable billing",
    .opts = sub_opts,
    .min_pos = 1,
    .max_pos = 1,
    .run = run_sub,
};

const struct cli_cmd cli_cmd_consume = {
    .name = "consume",
    .synopsis = "QUEUE [OPTIONS]",
    .summary = "take items from a queue, print and acknowledge each",
    .details = "Each printed item is acknowledged (removed from the queue) after it was\n"
               "written out. Runs until --count items, --timeout without one, or an\n"
               "interrupt (exit 0).\n\n"
               "examples:\n"
               "  ferry consume jobs --count 1\n"
               "  ferry consume jobs --timeout 5s --verbose",
    .opts = consume_opts,
    .min_pos = 1,
    .max_pos = 1,
    .run = run_consume,
};
