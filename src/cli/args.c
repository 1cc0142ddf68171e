/* args.c - option parsing, number/size/duration parsing, connecting, errors.
 *
 * The parsers here are the command's own (the server's config module has
 * its own), kept deliberately small: sizes are whole numbers with an
 * optional K, M or G (powers of 1024) and an optional trailing B; durations
 * are a number (fractions allowed) with an optional unit ms, s, m, h or d.
 */
#include "cli/cli.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

volatile int cli_interrupted;

static const struct cli_opt common_opts[] = {
    {"servers", 0, "LIST", "servers to try, host:port,host:port (default $FERRY_SERVERS)"},
    {"reconnect-timeout", 0, "T",
     "keep trying the servers this long to connect or after a lost connection; "
     "0 = fail at once (default 30s)"},
    {"tls", 0, NULL, "connect with TLS (also implied by a ferrys:// or tls: address)"},
    {"ca", 0, "FILE", "trust the CA certificates in FILE (PEM) for the servers' certificates "
                      "(default: the system's; implies --tls)"},
    {"cert", 0, "FILE", "present the client certificate in FILE (PEM; implies --tls)"},
    {"key", 0, "FILE", "the private key of --cert"},
    {"help", 'h', NULL, "show this help"},
    {NULL, 0, NULL, NULL},
};

/* The command's TLS settings: from the common options, else the
 * environment (FERRY_TLS=1, FERRY_CA, FERRY_CERT, FERRY_KEY). One command
 * runs per process, so one copy serves every client it makes. */
static struct {
    const char *on, *ca, *cert, *key;
} cli_tls;

int cli_set_tls(const char *name, const char *value)
{
    const char **slot = strcmp(name, "--tls") == 0    ? &cli_tls.on
                        : strcmp(name, "--ca") == 0   ? &cli_tls.ca
                        : strcmp(name, "--cert") == 0 ? &cli_tls.cert
                        : strcmp(name, "--key") == 0  ? &cli_tls.key
                                                      : NULL;
    if (slot == NULL)
        return -1;
    *slot = value;
    return 0;
}

void cli_apply_tls(ferry_options_t *o)
{
    const char *on = cli_tls.on ? cli_tls.on : getenv("FERRY_TLS");
    o->tls_ca = cli_tls.ca ? cli_tls.ca : getenv("FERRY_CA");
    o->tls_cert = cli_tls.cert ? cli_tls.cert : getenv("FERRY_CERT");
    o->tls_key = cli_tls.key ? cli_tls.key : getenv("FERRY_KEY");
    o->tls = (on != NULL && strcmp(on, "0") != 0 && on[0] != '\0') || o->tls_ca != NULL ||
             o->tls_cert != NULL;
}

int cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("ferry: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return CLI_EXIT_FAIL;
}

int cli_usage_error(const struct cli_cmd *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ferry %s: ", cmd->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'ferry %s --help')\n", cmd->name);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

static void print_opts(const struct cli_opt *opts)
{
    for (const struct cli_opt *o = opts; o->name; o++) {
        char left[64];
        if (o->short_name)
            snprintf(left, sizeof left, "-%c, --%s%s%s", o->short_name, o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        else
            snprintf(left, sizeof left, "    --%s%s%s", o->name, o->arg ? " " : "",
                     o->arg ? o->arg : "");
        printf("  %-28s %s\n", left, o->help);
    }
}

void cli_print_usage(const struct cli_cmd *cmd)
{
    printf("usage: ferry %s %s\n\n%s\n", cmd->name, cmd->synopsis, cmd->summary);
    if (cmd->details)
        printf("\n%s\n", cmd->details);
    printf("\noptions:\n");
    print_opts(cmd->opts);
    print_opts(common_opts);
}

static int find_opt(const struct cli_opt *opts, const char *name, size_t len, char short_name)
{
    for (int i = 0; opts[i].name; i++) {
        if (short_name ? opts[i].short_name == short_name
                       : strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0)
            return i;
    }
    return -1;
}

/* Store option i's value; *k is advanced past a separate value argument. */
static int take_value(const struct cli_cmd *cmd, const struct cli_opt *o, const char *inline_v,
                      int argc, char **argv, int *k, const char **slot, const char *spelled)
{
    if (o->arg == NULL) {
        if (inline_v != NULL)
            return cli_usage_error(cmd, "option '%s' takes no value", spelled);
        *slot = "1";
        return 0;
    }
    if (inline_v != NULL) {
        *slot = inline_v;
        return 0;
    }
    if (*k + 1 >= argc)
        return cli_usage_error(cmd, "option '%s' needs a value (%s)", spelled, o->arg);
    *slot = argv[++*k];
    return 0;
}

int cli_parse(const struct cli_cmd *cmd, int argc, char **argv, struct cli_args *a)
{
    memset(a->value, 0, sizeof a->value);
    a->servers = NULL;
    a->reconnect = NULL;
    a->npos = 0;
    int only_pos = 0;
    for (int k = 0; k < argc; k++) {
        char *arg = argv[k];
        if (only_pos || arg[0] != '-' || arg[1] == '\0') {
            a->pos[a->npos++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_pos = 1;
            continue;
        }
        const char *name, *inline_v = NULL;
        size_t len;
        char short_name = 0;
        if (arg[1] == '-') {
            name = arg + 2;
            const char *eq = strchr(name, '=');
            len = eq ? (size_t)(eq - name) : strlen(name);
            inline_v = eq ? eq + 1 : NULL;
        } else {
            name = arg + 1;
            short_name = arg[1];
            len = 1;
            inline_v = arg[2] ? arg + 2 : NULL;
        }
        int i = find_opt(cmd->opts, name, len, short_name);
        if (i >= 0) {
            int rc = take_value(cmd, &cmd->opts[i], inline_v, argc, argv, &k, &a->value[i], arg);
            if (rc != 0)
                return rc;
            continue;
        }
        i = find_opt(common_opts, name, len, short_name);
        if (i < 0)
            return cli_usage_error(cmd, "unknown option '%s'", arg);
        if (strcmp(common_opts[i].name, "help") == 0) {
            cli_print_usage(cmd);
            return -1;
        }
        const char *which = common_opts[i].name;
        const char **slot = strcmp(which, "servers") == 0   ? &a->servers
                            : strcmp(which, "tls") == 0   ? &cli_tls.on
                            : strcmp(which, "ca") == 0    ? &cli_tls.ca
                            : strcmp(which, "cert") == 0  ? &cli_tls.cert
                            : strcmp(which, "key") == 0   ? &cli_tls.key
                                                          : &a->reconnect;
        int rc = take_value(cmd, &common_opts[i], inline_v, argc, argv, &k, slot, arg);
        if (rc != 0)
            return rc;
    }
    if (a->npos < cmd->min_pos)
        return cli_usage_error(cmd, "missing arguments: %s", cmd->synopsis);
    if (cmd->max_pos >= 0 && a->npos > cmd->max_pos)
        return cli_usage_error(cmd, "unexpected argument '%s'", a->pos[cmd->max_pos]);
    return 0;
}

const char *cli_get(const struct cli_cmd *cmd, const struct cli_args *a, const char *name)
{
    int i = find_opt(cmd->opts, name, strlen(name), 0);
    return i >= 0 ? a->value[i] : NULL;
}

/* ---- numbers ---- */

int cli_parse_u64(const char *s, uint64_t *out)
{
    if (s == NULL || !isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return -1;
    *out = v;
    return 0;
}

int cli_parse_size(const char *s, uint64_t *out)
{
    if (s == NULL || !isdigit((unsigned char)s[0]))
        return -1;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0)
        return -1;
    unsigned shift = 0;
    switch (toupper((unsigned char)*end)) {
    case 'K':
        shift = 10;
        end++;
        break;
    case 'M':
        shift = 20;
        end++;
        break;
    case 'G':
        shift = 30;
        end++;
        break;
    default:
        break;
    }
    if (shift && (end[0] == 'i' || end[0] == 'I') && toupper((unsigned char)end[1]) == 'B')
        end += 2;
    else if (toupper((unsigned char)*end) == 'B')
        end++;
    if (*end != '\0' || (shift && v > (UINT64_MAX >> shift)))
        return -1;
    *out = (uint64_t)v << shift;
    return 0;
}

int cli_parse_duration_ms(const char *s, uint64_t *out)
{
    if (s == NULL || !(isdigit((unsigned char)s[0]) || s[0] == '.'))
        return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (errno != 0 || end == s || v < 0)
        return -1;
    double unit_ms;
    if (strcmp(end, "") == 0 || strcmp(end, "s") == 0)
        unit_ms = 1000;
    else if (strcmp(end, "ms") == 0)
        unit_ms = 1;
    else if (strcmp(end, "m") == 0 || strcmp(end, "min") == 0)
        unit_ms = 60000;
    else if (strcmp(end, "h") == 0)
        unit_ms = 3600000;
    else if (strcmp(end, "d") == 0)
        unit_ms = 86400000;
    else
        return -1;
    double ms = v * unit_ms;
    if (ms > 9.0e15)
        return -1;
    *out = (uint64_t)(ms + 0.5);
    return 0;
}

int cli_opt_u64(const struct cli_cmd *cmd, const char *opt, const char *s, uint64_t *out)
{
    if (cli_parse_u64(s, out) != 0)
        return cli_usage_error(cmd, "--%s '%s': expected a whole number", opt, s);
    return 0;
}

int cli_opt_size(const struct cli_cmd *cmd, const char *opt, const char *s, uint64_t *out)
{
    if (cli_parse_size(s, out) != 0)
        return cli_usage_error(cmd,
                               "--%s '%s': expected a size in bytes with an optional K, M or G "
                               "suffix",
                               opt, s);
    return 0;
}

int cli_opt_duration_ms(const struct cli_cmd *cmd, const char *opt, const char *s, uint64_t *out)
{
    if (cli_parse_duration_ms(s, out) != 0)
        return cli_usage_error(cmd,
                               "--%s '%s': expected a duration such as 30s, 5m, 250ms or 2h "
                               "(no unit: seconds)",
                               opt, s);
    return 0;
}

/* ---- connecting ---- */

int cli_connect(const struct cli_global *g, const struct cli_args *a, uint32_t window,
                ferry_client_t **out)
{
    return cli_connect_opts(g, a, window, 0, out);
}

/* Failover notices: a command keeps going, and says so on stderr. */
static void on_conn_lost(ferry_client_t *c, int status, const char *msg, void *arg)
{
    (void)c, (void)status, (void)arg;
    fprintf(stderr, "ferry: %s; reconnecting\n", msg);
}

static void on_conn_back(ferry_client_t *c, int status, const char *address, void *arg)
{
    (void)c, (void)status, (void)arg;
    fprintf(stderr, "ferry: reconnected to %s\n", address);
}

int cli_connect_opts(const struct cli_global *g, const struct cli_args *a, uint32_t window,
                     int any_node, ferry_client_t **out)
{
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = a->servers ? a->servers : g->servers;
    o.client_name = "ferry-cli";
    o.window = window;
    o.any_node = any_node;
    o.on_disconnect = on_conn_lost;
    o.on_reconnect = on_conn_back;
    cli_apply_tls(&o);
    if (a->reconnect != NULL) {
        uint64_t ms = 0;
        if (cli_parse_duration_ms(a->reconnect, &ms) != 0 || ms > UINT32_MAX)
            return cli_error("--reconnect-timeout '%s': expected a duration such as 30s or 500ms",
                             a->reconnect);
        if (ms == 0)
            o.no_reconnect = 1;
        else
            o.reconnect_timeout_ms = (uint32_t)ms;
    }
    ferry_client_t *c = NULL;
    int rc = ferry_client_create(&c, &o);
    if (rc != 0)
        return cli_error("cannot create a client: %s", ferry_strerror(rc));
    rc = ferry_client_connect(c);
    if (rc != 0) {
        cli_error("%s", ferry_client_errmsg(c));
        ferry_client_close(c);
        return CLI_EXIT_FAIL;
    }
    *out = c;
    return 0;
}

int cli_fail_client(ferry_client_t *c, const char *what)
{
    return cli_error("%s: %s", what, ferry_client_errmsg(c));
}

static void on_signal(int sig)
{
    (void)sig;
    cli_interrupted = 1;
}

void cli_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}
