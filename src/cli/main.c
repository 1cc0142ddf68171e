/* main.c - `ferry`, the command-line client of ferryd.
 *
 *   ferry [--servers LIST] COMMAND [ARGS] [OPTIONS]
 *
 * Global options come before the command; --servers may also follow it.
 * The servers list comes from --servers, else $FERRY_SERVERS, else
 * 127.0.0.1:7878. docs/client.md is the command reference.
 */
#include "cli/cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct cli_cmd *const commands[] = {
    &cli_cmd_pub,    &cli_cmd_push,   &cli_cmd_sub,   &cli_cmd_consume,
    &cli_cmd_create, &cli_cmd_delete, &cli_cmd_list,  &cli_cmd_info,
    &cli_cmd_status, &cli_cmd_ping,   &cli_cmd_admin, &cli_cmd_bench,
};
#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *f)
{
    fprintf(f, "usage: ferry [--servers LIST] COMMAND [ARGS] [OPTIONS]\n\n"
               "The command-line client of the Ferry message server.\n\ncommands:\n");
    for (size_t i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-9s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(f,
            "\nglobal options:\n"
            "  --servers LIST   servers to try in order, host:port,host:port\n"
            "                   (default: $FERRY_SERVERS, else %s)\n"
            "  --tls            connect with TLS (a ferrys://host:port address does too)\n"
            "  --ca FILE        CA certificates (PEM) to verify the servers with (implies --tls)\n"
            "  --cert FILE      client certificate (PEM) for servers that ask for one\n"
            "  --key FILE       its private key\n"
            "  -h, --help       show this help; 'ferry COMMAND --help' for a command\n"
            "  --version        print the version\n",
            FERRY_DEFAULT_SERVERS);
}

int main(int argc, char **argv)
{
    struct cli_global g;
    g.servers = getenv("FERRY_SERVERS");
    if (g.servers == NULL || g.servers[0] == '\0')
        g.servers = FERRY_DEFAULT_SERVERS;
    int k = 1;
    for (; k < argc && argv[k][0] == '-'; k++) {
        const char *arg = argv[k];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            usage(stdout);
            return CLI_EXIT_OK;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("ferry %s\n", ferry_version());
            return CLI_EXIT_OK;
        }
        if (strncmp(arg, "--servers=", 10) == 0) {
            g.servers = arg + 10;
        } else if (strcmp(arg, "--servers") == 0 && k + 1 < argc) {
            g.servers = argv[++k];
        } else if (strcmp(arg, "--tls") == 0) {
            cli_set_tls(arg, "1");
        } else if ((strcmp(arg, "--ca") == 0 || strcmp(arg, "--cert") == 0 ||
                    strcmp(arg, "--key") == 0) &&
                   k + 1 < argc) {
            cli_set_tls(arg, argv[++k]);
        } else {
            fprintf(stderr,
                    "ferry: unknown or incomplete global option '%s' (see 'ferry --help')\n", arg);
            return CLI_EXIT_USAGE;
        }
    }
    if (k >= argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const struct cli_cmd *cmd = NULL;
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i]->name, argv[k]) == 0)
            cmd = commands[i];
    if (cmd == NULL) {
        fprintf(stderr, "ferry: unknown command '%s' (see 'ferry --help')\n", argv[k]);
        return CLI_EXIT_USAGE;
    }
    struct cli_args a;
    a.pos = calloc((size_t)argc, sizeof *a.pos);
    if (a.pos == NULL)
        return cli_error("out of memory");
    int rc = cli_parse(cmd, argc - k - 1, argv + k + 1, &a);
    if (rc == 0)
        rc = cmd->run(&g, cmd, &a);
    else if (rc < 0)
        rc = CLI_EXIT_OK; /* --help */
    free(a.pos);
    if (fflush(stdout) != 0 && rc == CLI_EXIT_OK)
        rc = cli_error("cannot write the output");
    return rc;
}
