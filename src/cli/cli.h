/* cli/cli.h - the `ferry` command's shared pieces: option tables and their
 * parser, number/size/duration parsers, connecting, and error output.
 *
 * Every command is a `struct cli_cmd`: its name, synopsis, options and a
 * run function. Options are `--name VALUE`, `--name=VALUE`, `-x VALUE`,
 * `-xVALUE` or flags; they may appear before, between or after the
 * positional arguments, and `--` ends them. Unknown options are errors.
 *
 * Exit codes: 0 success, 1 the operation failed (a one-line reason on
 * stderr, "ferry: <what>: <why>"), 2 usage error.
 */
#ifndef FERRY_CLI_H
#define FERRY_CLI_H

#include <ferry/ferry.h>
#include <stddef.h>
#include <stdint.h>

#define CLI_EXIT_OK 0
#define CLI_EXIT_FAIL 1
#define CLI_EXIT_USAGE 2
#define CLI_MAX_OPTS 24
#define CLI_MAX_POS 4096

struct cli_opt {
    const char *name; /* long name, without the dashes */
    char short_name;  /* 0 = none */
    const char *arg;  /* NULL: a flag; else the value's name in the usage ("N") */
    const char *help;
};

struct cli_args {
    const char *value[CLI_MAX_OPTS]; /* per option of the command's table; "1" for a set flag */
    const char *servers;             /* --servers given after the command, or NULL */
    const char *reconnect;           /* --reconnect-timeout, or NULL */
    char **pos;
    int npos;
};

struct cli_global {
    const char *servers; /* --servers, FERRY_SERVERS, or the default */
};

struct cli_cmd {
    const char *name;
    const char *synopsis; /* after "ferry NAME " */
    const char *summary;  /* one line for `ferry --help` */
    const char *details;  /* more text for `ferry NAME --help`, or NULL */
    const struct cli_opt *opts;
    int min_pos;
    int max_pos; /* -1 = unlimited */
    int (*run)(struct cli_global *g, const struct cli_cmd *cmd, struct cli_args *a);
};

/* Print "ferry: " + the formatted text + newline to stderr; returns CLI_EXIT_FAIL. */
int cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Print "ferry NAME: " + text + a hint to see --help; returns CLI_EXIT_USAGE. */
int cli_usage_error(const struct cli_cmd *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void cli_print_usage(const struct cli_cmd *cmd);
/* Set o's TLS fields from --tls/--ca/--cert/--key (or FERRY_TLS, FERRY_CA,
 * FERRY_CERT, FERRY_KEY). */
void cli_apply_tls(ferry_options_t *o);
/* A global option before the command: "--tls" (value "1"), "--ca", "--cert"
 * or "--key". 0, or -1 if name is none of them. */
int cli_set_tls(const char *name, const char *value);

/* Parse argv (after the command name). Returns 0; CLI_EXIT_USAGE after
 * printing the error; or -1 when --help was given and the usage printed. */
int cli_parse(const struct cli_cmd *cmd, int argc, char **argv, struct cli_args *a);
/* The value of option `name` (a flag gives "1"), or NULL if not given. */
const char *cli_get(const struct cli_cmd *cmd, const struct cli_args *a, const char *name);

/* Number parsers: 0, or CLI_EXIT_USAGE after printing
 * "ferry CMD: --OPT 'VALUE': expected ...". */
int cli_opt_u64(const struct cli_cmd *cmd, const char *opt, const char *s, uint64_t *out);
int cli_opt_size(const struct cli_cmd *cmd, const char *opt, const char *s, uint64_t *out);
/* A duration: a number with an optional unit ms, s, m, h or d; no unit = seconds. */
int cli_opt_duration_ms(const struct cli_cmd *cmd, const char *opt, const char *s, uint64_t *out);

/* The raw parsers behind them: 0 or -1. */
int cli_parse_u64(const char *s, uint64_t *out);
int cli_parse_size(const char *s, uint64_t *out);
int cli_parse_duration_ms(const char *s, uint64_t *out);

/* Create and connect a client; prints the reason and returns CLI_EXIT_FAIL
 * on failure. window 0 = the library's default. */
int cli_connect(const struct cli_global *g, const struct cli_args *a, uint32_t window,
                ferry_client_t **out);
/* Same, choosing a monitoring connection any node accepts (STATUS, PING). */
int cli_connect_opts(const struct cli_global *g, const struct cli_args *a, uint32_t window,
                     int any_node, ferry_client_t **out);
/* Print "ferry: <what>: <client's last error>"; returns CLI_EXIT_FAIL. */
int cli_fail_client(ferry_client_t *c, const char *what);

/* Set by SIGINT/SIGTERM for the commands that run until stopped. */
extern volatile int cli_interrupted;
void cli_catch_signals(void);

/* Commands (one table entry each). */
extern const struct cli_cmd cli_cmd_pub, cli_cmd_push, cli_cmd_sub, cli_cmd_consume, cli_cmd_create,
    cli_cmd_delete, cli_cmd_list, cli_cmd_info, cli_cmd_status, cli_cmd_ping, cli_cmd_admin,
    cli_cmd_bench;

#endif
