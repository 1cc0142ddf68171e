/* load.c - config_load: defaults, then the config file, then the environment, then flags.
 *
 * Each source overrides the one before by calling config_set with a source
 * name for its error messages ("ferry.conf:12", "environment (FERRY_X)",
 * "command line"). The command line is read twice: first to find
 * `--config FILE` and reject unknown options before anything else happens,
 * last to apply its keys. After all sources, the defaults that depend on
 * other keys are filled in (replication_logfile_directory follows
 * data_directory; cluster_node_endpoint follows this node's membership entry)
 * and config_validate checks the rules that span keys.
 */
#include "config/config_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#define ENV_PREFIX "FERRY_"
#define ENV_PREFIX_LEN (sizeof ENV_PREFIX - 1)
#define FLAG_NAME_MAX 64
#define SOURCE_MAX (CONFIG_PATH_MAX + 32)
#define CMDLINE "command line"

/* ---- command line ---- */

struct flag {
    char name[FLAG_NAME_MAX]; /* lower case, dashes turned into underscores */
    const char *value;        /* NULL for --print-config */
};

static int flag_is(const struct flag *f, const char *name)
{
    return strcmp(f->name, name) == 0;
}

static int flag_error(struct ferry_err *err, const char *fmt, const char *arg)
    __attribute__((format(printf, 2, 0)));

/* "command line: <fmt with arg>"; arg is shortened if long. */
static int flag_error(struct ferry_err *err, const char *fmt, const char *arg)
{
    char shown[CONFIG_SHOWN_MAX], msg[FERRY_ERRMSG_MAX];
    snprintf(msg, sizeof msg, fmt, config_shown(arg, shown));
    return ferry_err_set(err, FERRY_ECONFIG, CMDLINE ": %s", msg);
}

/* Name of the option at arg ("--Log-Level=x" -> "log_level"); -1 if not a known option. */
static int flag_name(const char *arg, struct flag *f, const char **eq)
{
    const char *name = arg + 2;
    size_t len;
    *eq = strchr(name, '=');
    len = *eq ? (size_t)(*eq - name) : strlen(name);
    if (len == 0 || len >= sizeof f->name)
        return -1;
    for (size_t i = 0; i < len; i++)
        f->name[i] = name[i] == '-' ? '_' : (char)tolower((unsigned char)name[i]);
    f->name[len] = '\0';
    return flag_is(f, "config") || flag_is(f, "print_config") || config_key_known(f->name) ? 0 : -1;
}

/* Read the option at argv[*i] (and its value, moving *i past it if separate). */
static int flag_read(int argc, char **argv, int *i, struct flag *f, struct ferry_err *err)
{
    const char *arg = argv[*i], *eq;
    if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0')
        return flag_error(err, "unexpected argument '%s' (options are --key value or --key=value)",
                          arg);
    if (flag_name(arg, f, &eq) != 0)
        return flag_error(err, "unknown option '%s'", arg);
    if (flag_is(f, "print_config")) {
        f->value = NULL;
        return eq ? flag_error(err, "%s takes no value", arg) : 0;
    }
    if (eq != NULL)
        f->value = eq + 1;
    else if (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0)
        f->value = argv[++*i];
    else
        return flag_error(err, "%s needs a value", arg);
    return 0;
}

/* First pass: the config file named on the command line, if any. */
static int find_config_flag(int argc, char **argv, const char **path, struct ferry_err *err)
{
    struct flag f;
    for (int i = 1; i < argc; i++) {
        int rc = flag_read(argc, argv, &i, &f, err);
        if (rc != 0)
            return rc;
        if (flag_is(&f, "config"))
            *path = f.value;
    }
    return 0;
}

static int apply_flags(struct config *c, int argc, char **argv, struct ferry_err *err)
{
    struct flag f;
    for (int i = 1; i < argc; i++) {
        int rc = flag_read(argc, argv, &i, &f, err);
        if (rc == 0 && f.value != NULL && !flag_is(&f, "config"))
            rc = config_set(c, f.name, f.value, CMDLINE, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- environment ---- */

/* For "FERRY_NAME=value": NAME into name (n bytes) and the value; -1 if not of that form. */
static int env_split(const char *entry, char *name, size_t n, const char **value)
{
    const char *eq = strchr(entry, '=');
    size_t len;
    if (strncmp(entry, ENV_PREFIX, ENV_PREFIX_LEN) != 0 || eq == NULL)
        return -1;
    len = (size_t)(eq - entry) - ENV_PREFIX_LEN;
    if (len == 0 || len >= n)
        return -1;
    memcpy(name, entry + ENV_PREFIX_LEN, len);
    name[len] = '\0';
    *value = eq + 1;
    return 0;
}

static const char *env_config_file(char **envp)
{
    char name[FLAG_NAME_MAX];
    const char *value, *found = NULL;
    for (char **e = envp; e != NULL && *e != NULL; e++) {
        if (env_split(*e, name, sizeof name, &value) == 0 && strcasecmp(name, "CONFIG") == 0)
            found = value[0] != '\0' ? value : NULL;
    }
    return found;
}

/* FERRY_<KEY> for every key; other FERRY_* variables belong to other programs (the client's
 * FERRY_SERVERS) and are left alone. */
static int apply_env(struct config *c, char **envp, struct ferry_err *err)
{
    char name[FLAG_NAME_MAX], source[FLAG_NAME_MAX + 32];
    const char *value;
    for (char **e = envp; e != NULL && *e != NULL; e++) {
        if (env_split(*e, name, sizeof name, &value) != 0 || !config_key_known(name))
            continue;
        snprintf(source, sizeof source, "environment (" ENV_PREFIX "%s)", name);
        int rc = config_set(c, name, value, source, err);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* ---- config file ---- */

enum line_status { LINE_OK, LINE_EOF, LINE_LONG, LINE_NUL, LINE_ERROR };

static enum line_status read_line(FILE *f, char *buf, size_t cap)
{
    size_t len = 0;
    int ch;
    while ((ch = getc(f)) != EOF && ch != '\n') {
        if (ch == '\0')
            return LINE_NUL;
        if (len + 1 >= cap)
            return LINE_LONG;
        buf[len++] = (char)ch;
    }
    buf[len] = '\0';
    if (ch == EOF && ferror(f))
        return LINE_ERROR;
    return ch == EOF && len == 0 ? LINE_EOF : LINE_OK;
}

/* Cut the value at the first '#' that starts it or follows whitespace. */
static void strip_comment(char *value)
{
    for (size_t i = 0; value[i] != '\0'; i++) {
        if (value[i] == '#' && (i == 0 || isspace((unsigned char)value[i - 1]))) {
            value[i] = '\0';
            return;
        }
    }
}

static int apply_line(struct config *c, char *line, const char *source, struct ferry_err *err)
{
    static const char space[] = " \t\r\f\v";
    char *key = line + strspn(line, space), *value;
    if (*key == '\0' || *key == '#')
        return 0;
    value = key + strcspn(key, space);
    if (*value != '\0')
        *value++ = '\0';
    strip_comment(value);
    return config_set(c, key, value, source, err);
}

static int read_lines(struct config *c, FILE *f, const char *path, const char *from,
                      struct ferry_err *err)
{
    char line[CONFIG_VALUE_MAX], source[SOURCE_MAX];
    int rc = 0;
    for (unsigned n = 1; rc == 0; n++) {
        enum line_status st = read_line(f, line, sizeof line);
        int read_errno = errno;
        snprintf(source, sizeof source, "%s:%u", path, n);
        if (st == LINE_EOF)
            break;
        else if (st == LINE_LONG)
            rc = ferry_err_set(err, FERRY_ECONFIG, "%s: the line is longer than %d bytes", source,
                               CONFIG_VALUE_MAX - 1);
        else if (st == LINE_NUL)
            rc = ferry_err_set(err, FERRY_ECONFIG, "%s: the line contains a NUL byte", source);
        else if (st == LINE_ERROR)
            rc = ferry_err_set(err, FERRY_ECONFIG, "%s: cannot read config file '%s': %s", from,
                               path, strerror(read_errno));
        else
            rc = apply_line(c, line, source, err);
    }
    return rc;
}

static int apply_file(struct config *c, const char *path, const char *from, struct ferry_err *err)
{
    FILE *f;
    int rc;
    if (path[0] == '\0')
        return ferry_err_set(err, FERRY_ECONFIG, "%s: --config needs a file name", from);
    f = fopen(path, "r");
    if (f == NULL)
        return ferry_err_set(err, FERRY_ECONFIG, "%s: cannot read config file '%s': %s", from, path,
                             strerror(errno));
    rc = read_lines(c, f, path, from, err);
    fclose(f);
    return rc;
}

/* ---- derived defaults ---- */

static int derive(struct config *c, struct ferry_err *err)
{
    char dir[CONFIG_PATH_MAX], shown[CONFIG_SHOWN_MAX];
    if (c->replication_logfile_directory[0] == '\0') {
        memset(dir, 0, sizeof dir); /* the whole field is copied: no stray bytes after the NUL */
        if (config_raft_dir(c->data_directory, dir, sizeof dir) != 0)
            return ferry_err_set(err, FERRY_ECONFIG,
                                 "data_directory '%s' is too long to hold the default "
                                 "replication_logfile_directory; set that key",
                                 config_shown(c->data_directory, shown));
        memcpy(c->replication_logfile_directory, dir, sizeof dir);
    }
    for (uint32_t i = 0; i < c->member_count && c->cluster_node_endpoint.port == 0; i++) {
        if (c->members[i].id == c->cluster_node_id)
            c->cluster_node_endpoint = c->members[i].endpoint;
    }
    return 0;
}

int config_load(struct config *c, int argc, char **argv, char **envp, struct ferry_err *err)
{
    const char *path = NULL, *from = CMDLINE;
    int rc;
    config_defaults(c);
    ferry_err_clear(err);
    rc = find_config_flag(argc, argv, &path, err);
    if (rc == 0 && path == NULL) {
        path = env_config_file(envp);
        from = "environment (" ENV_PREFIX "CONFIG)";
    }
    if (rc == 0 && path != NULL)
        rc = apply_file(c, path, from, err);
    if (rc == 0)
        rc = apply_env(c, envp, err);
    if (rc == 0)
        rc = apply_flags(c, argc, argv, err);
    if (rc == 0)
        rc = derive(c, err);
    if (rc == 0)
        rc = config_validate(c, err);
    return rc;
}
