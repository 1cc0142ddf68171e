/* test_config.c - config: defaults, file syntax, precedence, every error path, value syntaxes,
 * cluster membership and cross-key rules, and config_print round trips.
 *
 * Config files are written under a fresh mkdtemp directory per test and removed afterwards.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/config.h"
#include "util/log.h"

#define MAX_FILES 8
#define KIB 1024ull
#define MIB (KIB * KIB)
#define GIB (KIB * MIB)
#define SEED_MEMBERS "[10]1:h1:9000,[5]2:h2:9000,3:h3:9000"

/* argv and envp literals: ARGV("--x", "1") is {"ferryd", "--x", "1", NULL}. */
#define ARGV(...) ((char *[]){"ferryd", __VA_ARGS__, NULL})
#define NOARGS ((char *[]){"ferryd", NULL})
#define ENV(...) ((char *[]){__VA_ARGS__, NULL})

struct fixture {
    char dir[64];
    char files[MAX_FILES][128];
    int nfiles;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/ferry-test-config-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < f->nfiles; i++)
        unlink(f->files[i]);
    int rc = rmdir(f->dir);
    free(f);
    return rc;
}

/* Write content to <tmpdir>/name; returns the path (valid until teardown). */
static char *write_file_n(struct fixture *f, const char *name, const char *content, size_t len)
{
    assert_true(f->nfiles < MAX_FILES);
    char *path = f->files[f->nfiles++], dir[sizeof f->dir];
    memcpy(dir, f->dir, sizeof dir);
    snprintf(path, sizeof f->files[0], "%s/%s", dir, name);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(content, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
    return path;
}

static char *write_file(struct fixture *f, const char *name, const char *content)
{
    return write_file_n(f, name, content, strlen(content));
}

static int load(struct config *c, struct ferry_err *err, char **envp, char **argv)
{
    int argc = 0;
    while (argv[argc] != NULL)
        argc++;
    return config_load(c, argc, argv, envp, err);
}

/* rc is FERRY_ECONFIG and err->msg contains every one of the NULL-terminated strings. */
static void assert_error_has(int rc, const struct ferry_err *err, ...)
{
    va_list ap;
    if (rc != FERRY_ECONFIG || err->code != FERRY_ECONFIG)
        fail_msg("expected FERRY_ECONFIG, got %d (message '%s')", rc, err->msg);
    va_start(ap, err);
    for (const char *s = va_arg(ap, const char *); s != NULL; s = va_arg(ap, const char *)) {
        if (strstr(err->msg, s) == NULL)
            fail_msg("error message '%s' does not contain '%s'", err->msg, s);
    }
    va_end(ap);
}
#define EXPECT_ERROR(rc, err, ...) assert_error_has(rc, err, __VA_ARGS__, (const char *)NULL)

/* config_set(key, value) on defaults fails, leaves the config unchanged, and the message
 * names the key, the value and contains `why`. */
static void expect_set_error(const char *key, const char *value, const char *why)
{
    struct config c, before;
    struct ferry_err err;
    config_defaults(&c);
    before = c;
    int rc = config_set(&c, key, value, "test.conf:7", &err);
    char quoted[64]; /* long values are shown shortened: check their start */
    snprintf(quoted, sizeof quoted, "'%.*s", strlen(value) < 60 ? 60 : 20, value);
    if (strlen(value) < 60)
        strcat(quoted, "'");
    EXPECT_ERROR(rc, &err, "test.conf:7: ", key, quoted, why);
    assert_memory_equal(&c, &before, sizeof c);
}

static void set_ok(struct config *c, const char *key, const char *value)
{
    struct ferry_err err;
    int rc = config_set(c, key, value, "test", &err);
    if (rc != 0)
        fail_msg("config_set %s '%s' failed: %s", key, value, err.msg);
}

static char *print_to_string(const struct config *c)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    assert_non_null(fp);
    config_print(c, fp);
    assert_int_equal(fclose(fp), 0);
    return text;
}

/* ---- defaults ---- */

static void test_defaults(void **state)
{
    (void)state;
    struct config c;
    struct ferry_err err;
    config_defaults(&c);
    assert_string_equal(c.client_endpoint.host, "127.0.0.1");
    assert_int_equal(c.client_endpoint.port, 7878);
    assert_string_equal(c.data_directory, "ferry-data");
    assert_int_equal(c.max_message_size, 6144000);
    assert_int_equal(c.log_level, LOG_INFO);
    assert_int_equal(c.auto_create, 1);
    assert_int_equal(c.output_buffer_limit, 8 * MIB);
    assert_int_equal(c.max_connections, 10000);
    assert_int_equal(c.default_prefetch, 256);
    assert_int_equal(c.default_max_deliveries, 10);
    assert_int_equal(c.default_capacity, 0);
    assert_int_equal(c.default_ttl_ms, 0);
    assert_int_equal(c.history_retention_ms, 24 * 3600 * 1000);
    assert_int_equal(c.history_max_records, 1000000);
    assert_int_equal(c.cluster_node_id, 0);
    assert_int_equal(c.cluster_node_endpoint.port, 0);
    assert_int_equal(c.member_count, 0);
    assert_string_equal(c.replication_logfile_directory, "");
    assert_int_equal(c.logfile_max_size, 64 * MIB);
    assert_int_equal(c.logfile_max_generations, 3);
    assert_int_equal(c.snapshot_distance, 1000);
    assert_int_equal(c.verify_replication_node_ip, 0);
    assert_int_equal(c.raft_heartbeat_ms, 50);
    assert_int_equal(c.raft_election_min_ms, 300);
    assert_int_equal(c.raft_election_max_ms, 600);
    assert_int_equal(config_validate(&c, &err), 0);
}

static void test_load_with_nothing_gives_defaults(void **state)
{
    (void)state;
    struct config c, d;
    struct ferry_err err;
    assert_int_equal(load(&c, &err, NULL, NOARGS), 0);
    assert_int_equal(err.code, 0);
    assert_string_equal(err.msg, "");
    assert_string_equal(c.replication_logfile_directory, "ferry-data/raft");
    config_defaults(&d);
    snprintf(d.replication_logfile_directory, sizeof d.replication_logfile_directory,
             "ferry-data/raft");
    assert_memory_equal(&c, &d, sizeof c);
    assert_int_equal(config_load(&c, 0, NULL, NULL, &err), 0);
}

/* ---- the config file ---- */

static void test_file_syntax(void **state)
{
    struct config c;
    struct ferry_err err;
    char *path = write_file(*state, "ferry.conf",
                            "# Ferry test configuration\n"
                            "\n"
                            "   LOG_LEVEL    debug   # trailing comment\n"
                            "Max_Message_Size\t64K\n"
                            "data_directory /tmp/a#b c   \n"
                            "auto-create no\r\n"
                            "   # indented comment\n"
                            "\t\n"
                            "default_ttl 30s#no-space-so-not-a-comment-but-invalid\n");
    int rc = load(&c, &err, NULL, ARGV("--config", path));
    EXPECT_ERROR(rc, &err, "ferry.conf:9: default_ttl '30s#no-space");

    path = write_file(*state, "ok.conf",
                      "# Ferry test configuration\n"
                      "\n"
                      "   LOG_LEVEL    debug   # trailing comment\n"
                      "Max_Message_Size\t64K\n"
                      "data_directory /tmp/a#b c   \n"
                      "auto-create no\r\n"
                      "   # indented comment\n"
                      "\t\n"
                      "default_ttl\t\t30s\t#comment after a tab\n"
                      "history_retention 1h"); /* no newline at the end */
    assert_int_equal(load(&c, &err, NULL, ARGV("--config", path)), 0);
    assert_int_equal(c.log_level, LOG_DEBUG);
    assert_int_equal(c.max_message_size, 64 * KIB);
    assert_string_equal(c.data_directory, "/tmp/a#b c");
    assert_string_equal(c.replication_logfile_directory, "/tmp/a#b c/raft");
    assert_int_equal(c.auto_create, 0);
    assert_int_equal(c.default_ttl_ms, 30000);
    assert_int_equal(c.history_retention_ms, 3600000);
}

static void test_file_later_line_wins(void **state)
{
    struct config c;
    struct ferry_err err;
    char *path = write_file(*state, "ferry.conf", "log_level warn\nlog_level error\n");
    assert_int_equal(load(&c, &err, NULL,
                          ARGV("--config="
                               "x",
                               "--config", path)),
                     0);
    assert_int_equal(c.log_level, LOG_ERROR);
}

static void test_file_errors_name_file_and_line(void **state)
{
    struct config c;
    struct ferry_err err;
    char expected[256];
    char *path = write_file(*state, "bad.conf", "# comment\nmax_message_size lots\n");
    int rc = load(&c, &err, NULL, ARGV("--config", path));
    snprintf(expected, sizeof expected,
             "%s:2: max_message_size 'lots': expected a size in bytes with an optional K, M or G "
             "suffix (1 to 1G)",
             path);
    EXPECT_ERROR(rc, &err, expected);
    assert_string_equal(err.msg, expected);

    path = write_file(*state, "unknown.conf", "log_level info\n\nmax_mesage_size 1\n");
    rc = load(&c, &err, NULL, ARGV("--config", path));
    EXPECT_ERROR(rc, &err, "unknown.conf:3: unknown key 'max_mesage_size'");

    path = write_file(*state, "novalue.conf", "log_level\n");
    rc = load(&c, &err, NULL, ARGV("--config", path));
    EXPECT_ERROR(rc, &err,
                 "novalue.conf:1: log_level '': expected debug, info, warn, error or off");

    path = write_file(*state, "comment.conf", "log_level # debug\n");
    rc = load(&c, &err, NULL, ARGV("--config", path));
    EXPECT_ERROR(rc, &err, "comment.conf:1: log_level ''");
}

static void test_file_unreadable(void **state)
{
    struct fixture *f = *state;
    struct config c;
    struct ferry_err err;
    char missing[128];
    snprintf(missing, sizeof missing, "%s/missing.conf", f->dir);
    int rc = load(&c, &err, NULL, ARGV("--config", missing));
    EXPECT_ERROR(rc, &err, "command line: cannot read config file", missing,
                 "No such file or directory");

    rc = load(&c, &err, NULL, ARGV("--config", f->dir));
    EXPECT_ERROR(rc, &err, "cannot read config file", f->dir, "Is a directory");

    rc = load(&c, &err, NULL, ARGV("--config="));
    EXPECT_ERROR(rc, &err, "command line: --config needs a file name");

    rc = load(&c, &err, ENV("FERRY_CONFIG=/nonexistent/ferry.conf"), NOARGS);
    EXPECT_ERROR(rc, &err, "environment (FERRY_CONFIG): cannot read config file",
                 "/nonexistent/ferry.conf", "No such file or directory");
}

static void test_file_bad_lines(void **state)
{
    struct config c;
    struct ferry_err err;
    static char big[9000];
    memset(big, 'x', sizeof big - 1);
    memcpy(big, "data_directory ", 15);
    char *path = write_file(*state, "long.conf", big);
    int rc = load(&c, &err, NULL, ARGV("--config", path));
    EXPECT_ERROR(rc, &err, "long.conf:1: the line is longer than 8191 bytes");

    path = write_file_n(*state, "nul.conf", "log_level info\nlog_level d\0bug\n", 31);
    rc = load(&c, &err, NULL, ARGV("--config", path));
    EXPECT_ERROR(rc, &err, "nul.conf:2: the line contains a NUL byte");
}

/* ---- sources and precedence ---- */

static void test_precedence_flag_env_file(void **state)
{
    struct config c;
    struct ferry_err err;
    char *path =
        write_file(*state, "ferry.conf", "log_level warn\nmax_connections 5\ndefault_prefetch 7\n");
    char **env = ENV("FERRY_MAX_CONNECTIONS=6", "FERRY_DEFAULT_PREFETCH=8");
    assert_int_equal(load(&c, &err, env, ARGV("--default-prefetch", "9", "--config", path)), 0);
    assert_int_equal(c.log_level, LOG_WARN);        /* file */
    assert_int_equal(c.max_connections, 6);         /* environment beats file */
    assert_int_equal(c.default_prefetch, 9);        /* flag beats environment */
    assert_int_equal(c.default_max_deliveries, 10); /* default */
}

static void test_config_file_from_environment(void **state)
{
    struct config c;
    struct ferry_err err;
    char env_config[160];
    char *a = write_file(*state, "a.conf", "default_prefetch 1\n");
    char *b = write_file(*state, "b.conf", "default_prefetch 2\n");
    snprintf(env_config, sizeof env_config, "FERRY_CONFIG=%s", a);
    assert_int_equal(load(&c, &err, ENV(env_config), NOARGS), 0);
    assert_int_equal(c.default_prefetch, 1);
    assert_int_equal(load(&c, &err, ENV(env_config), ARGV("--config", b)), 0);
    assert_int_equal(c.default_prefetch, 2); /* --config beats FERRY_CONFIG */
    assert_int_equal(load(&c, &err, ENV("FERRY_CONFIG="), NOARGS), 0); /* empty = no file */
}

static void test_environment(void **state)
{
    (void)state;
    struct config c;
    struct ferry_err err;
    char **env = ENV("PATH=/usr/bin", "FERRY_SERVERS=a:1,b:2", "FERRY_=x", "FERRY_NOEQUALS",
                     "FERRY_NOT_A_KEY=1", "FERRY_LOG_LEVEL=error", "FERRY_AUTO_CREATE=off",
                     "FERRY_DEFAULT_TTL=5m", "FERRY_CLIENT_ENDPOINT=0.0.0.0");
    assert_int_equal(load(&c, &err, env, NOARGS), 0);
    assert_int_equal(c.log_level, LOG_ERROR);
    assert_int_equal(c.auto_create, 0);
    assert_int_equal(c.default_ttl_ms, 300000);
    assert_string_equal(c.client_endpoint.host, "0.0.0.0");
    assert_int_equal(c.client_endpoint.port, 7878);

    int rc = load(&c, &err, ENV("FERRY_MAX_MESSAGE_SIZE=lots"), NOARGS);
    EXPECT_ERROR(rc, &err,
                 "environment (FERRY_MAX_MESSAGE_SIZE): max_message_size 'lots': "
                 "expected a size in bytes");
}

static void test_flag_spellings(void **state)
{
    (void)state;
    struct config c;
    struct ferry_err err;
    int rc = load(&c, &err, NULL,
                  ARGV("--log-level", "debug", "--max_message_size=2M", "--DATA-DIRECTORY", "/x",
                       "--auto_create=off", "--print-config", "--client-endpoint=[::1]:9",
                       "--Default_Ttl", " 1d "));
    assert_int_equal(rc, 0);
    assert_int_equal(c.log_level, LOG_DEBUG);
    assert_int_equal(c.max_message_size, 2 * MIB);
    assert_string_equal(c.data_directory, "/x");
    assert_int_equal(c.auto_create, 0);
    assert_string_equal(c.client_endpoint.host, "::1");
    assert_int_equal(c.client_endpoint.port, 9);
    assert_int_equal(c.default_ttl_ms, 86400000);
    assert_int_equal(load(&c, &err, NULL, ARGV("--log-level", "off", "--log-level", "warn")), 0);
    assert_int_equal(c.log_level, LOG_WARN); /* the later flag wins */
}

static void test_flag_errors(void **state)
{
    (void)state;
    struct config c;
    struct ferry_err err;
    int rc = load(&c, &err, NULL, ARGV("--log-level"));
    EXPECT_ERROR(rc, &err, "command line: --log-level needs a value");
    rc = load(&c, &err, NULL, ARGV("--log-level", "--auto-create", "yes"));
    EXPECT_ERROR(rc, &err, "command line: --log-level needs a value");
    rc = load(&c, &err, NULL, ARGV("--config"));
    EXPECT_ERROR(rc, &err, "command line: --config needs a value");
    rc = load(&c, &err, NULL, ARGV("--bogus", "1"));
    EXPECT_ERROR(rc, &err, "command line: unknown option '--bogus'");
    rc = load(&c, &err, NULL, ARGV("--bogus=1"));
    EXPECT_ERROR(rc, &err, "command line: unknown option '--bogus=1'");
    rc = load(&c, &err, NULL, ARGV("stray"));
    EXPECT_ERROR(rc, &err, "command line: unexpected argument 'stray'");
    rc = load(&c, &err, NULL, ARGV("-v"));
    EXPECT_ERROR(rc, &err, "unexpected argument '-v'");
    rc = load(&c, &err, NULL, ARGV("--"));
    EXPECT_ERROR(rc, &err, "unexpected argument '--'");
    rc = load(&c, &err, NULL, ARGV("--print-config=yes"));
    EXPECT_ERROR(rc, &err, "--print-config=yes takes no value");
    rc = load(&c, &err, NULL, ARGV("--max-connections", "-5"));
    EXPECT_ERROR(rc, &err,
                 "command line: max_connections '-5': expected a whole number from 1 "
                 "to 1000000");
    rc = load(&c, &err, NULL, ARGV("--max-connections="));
    EXPECT_ERROR(rc, &err, "command line: max_connections ''");
}

static void test_value_too_long(void **state)
{
    (void)state;
    struct config c;
    struct ferry_err err;
    static char env[9100];
    memset(env, 'a', sizeof env - 1);
    memcpy(env, "FERRY_DATA_DIRECTORY=", 21);
    int rc = load(&c, &err, ENV(env), NOARGS);
    EXPECT_ERROR(rc, &err,
                 "environment (FERRY_DATA_DIRECTORY): data_directory: the value is "
                 "longer than 8191 bytes");
}

/* ---- value syntaxes ---- */

static void test_sizes(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t v;
    } ok[] = {{"0", 0},          {"1", 1},          {"6144000", 6144000},
              {"64K", 64 * KIB}, {"64k", 64 * KIB}, {"6M", 6 * MIB},
              {"1G", GIB},       {"007", 7},        {"18446744073709551615", UINT64_MAX}};
    static const char *const bad[] = {"",
                                      "lots",
                                      "-1",
                                      "+1",
                                      " 1",
                                      "1 ",
                                      "1.5M",
                                      "1KB",
                                      "1T",
                                      "K",
                                      "0x10",
                                      "18446744073709551616",
                                      "18014398509481984K"};
    uint64_t v;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(config_parse_size(ok[i].s, &v), 0);
        assert_int_equal(v, ok[i].v);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (config_parse_size(bad[i], &v) != FERRY_EINVAL)
            fail_msg("config_parse_size accepted '%s'", bad[i]);
    }

    struct config c;
    config_defaults(&c);
    set_ok(&c, "max_message_size", "1G");
    assert_int_equal(c.max_message_size, GIB);
    set_ok(&c, "max_message_size", "1");
    set_ok(&c, "output_buffer_limit", "64K");
    set_ok(&c, "logfile_max_size", "1M");
    set_ok(&c, "logfile_max_size", "16G");
    assert_int_equal(c.logfile_max_size, 16 * GIB);
    expect_set_error("max_message_size", "lots", "(1 to 1G)");
    expect_set_error("max_message_size", "0", "(1 to 1G)");
    expect_set_error("max_message_size", "1073741825", "(1 to 1G)");
    expect_set_error("max_message_size", "2G", "(1 to 1G)");
    expect_set_error("max_message_size", "-1", "(1 to 1G)");
    expect_set_error("max_message_size", "99999999999999999999", "(1 to 1G)");
    expect_set_error("output_buffer_limit", "63K", "(64K to 16G)");
    expect_set_error("logfile_max_size", "1023K", "(1M to 16G)");
    expect_set_error("logfile_max_size", "17G", "(1M to 16G)");
}

static void test_numbers(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    set_ok(&c, "default_prefetch", "65535");
    set_ok(&c, "cluster_node_id", "4294967295");
    assert_int_equal(c.cluster_node_id, UINT32_MAX);
    set_ok(&c, "default_capacity", "10K");
    assert_int_equal(c.default_capacity, 10240);
    set_ok(&c, "history_max_records", "0");
    set_ok(&c, "snapshot_distance", "1000000000");
    expect_set_error("default_prefetch", "0", "expected a whole number from 1 to 65535");
    expect_set_error("default_prefetch", "65536", "from 1 to 65535");
    expect_set_error("default_prefetch", "10x", "from 1 to 65535");
    expect_set_error("default_prefetch", "-5", "from 1 to 65535");
    expect_set_error("default_prefetch", "99999999999999999999", "from 1 to 65535");
    expect_set_error("max_connections", "0", "from 1 to 1000000");
    expect_set_error("default_max_deliveries", "1000001", "from 1 to 1000000");
    expect_set_error("cluster_node_id", "4294967296", "from 0 to 4294967295");
    expect_set_error("logfile_max_generations", "1001", "from 1 to 1000");
    expect_set_error("logfile_max_generations", "0", "from 1 to 1000");
    expect_set_error("snapshot_distance", "0", "from 1 to 1000000000");
    expect_set_error("snapshot_distance", "1000000001", "from 1 to 1000000000");
    expect_set_error("default_capacity", "1.5", "from 0 to 1000000000000");
}

static void test_durations(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        uint64_t ms;
    } ok[] = {{"0", 0},          {"250ms", 250}, {"30s", 30000}, {"5m", 300000}, {"2h", 7200000},
              {"7d", 604800000}, {"30", 30000},  {"1MS", 1},     {"0ms", 0}};
    static const char *const bad[] = {
        "", "5x", "-1s", "1.5s", "s", "5 s", "ms", "1w", "99999999999999999999ms", "300000000000d"};
    uint64_t ms;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(config_parse_duration(ok[i].s, &ms), 0);
        assert_int_equal(ms, ok[i].ms);
    }
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (config_parse_duration(bad[i], &ms) != FERRY_EINVAL)
            fail_msg("config_parse_duration accepted '%s'", bad[i]);
    }

    struct config c;
    config_defaults(&c);
    set_ok(&c, "default_ttl", "30s");
    assert_int_equal(c.default_ttl_ms, 30000);
    set_ok(&c, "history_retention", "0");
    set_ok(&c, "raft_heartbeat_interval", "10s");
    assert_int_equal(c.raft_heartbeat_ms, 10000);
    expect_set_error("default_ttl", "3651d",
                     "expected a duration such as 250ms, 30s, 5m, 2h or "
                     "7d (0 to 3650d)");
    expect_set_error("history_retention", "soon", "(0 to 3650d)");
    expect_set_error("raft_heartbeat_interval", "0", "(1ms to 10s)");
    expect_set_error("raft_heartbeat_interval", "11s", "(1ms to 10s)");
    expect_set_error("raft_election_timeout_min", "2m", "(1ms to 1m)");
}

static void test_bools_and_log_levels(void **state)
{
    (void)state;
    static const char *const yes[] = {"yes", "true", "on", "1", "YES", "True"};
    static const char *const no[] = {"no", "false", "off", "0", "OFF"};
    int b;
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        assert_int_equal(config_parse_bool(yes[i], &b), 0);
        assert_int_equal(b, 1);
    }
    for (size_t i = 0; i < sizeof no / sizeof no[0]; i++) {
        assert_int_equal(config_parse_bool(no[i], &b), 0);
        assert_int_equal(b, 0);
    }
    assert_int_equal(config_parse_bool("2", &b), FERRY_EINVAL);
    assert_int_equal(config_parse_bool("", &b), FERRY_EINVAL);
    expect_set_error("auto_create", "maybe", "expected yes/no, true/false, on/off or 1/0");
    expect_set_error("verify_replication_node_ip", "y", "expected yes/no");

    struct config c;
    config_defaults(&c);
    set_ok(&c, "verify_replication_node_ip", "on");
    assert_int_equal(c.verify_replication_node_ip, 1);
    set_ok(&c, "log_level", "ERROR");
    assert_int_equal(c.log_level, LOG_ERROR);
    set_ok(&c, "log_level", "off");
    assert_int_equal(c.log_level, LOG_OFF);
    expect_set_error("log_level", "verbose", "expected debug, info, warn, error or off");
}

static void test_tls_keys(void **state)
{
    (void)state;
    struct config c;
    config_defaults(&c);
    set_ok(&c, "client_tls", "Required");
    assert_int_equal(c.client_tls, CLIENT_TLS_REQUIRED);
    set_ok(&c, "client_tls", "yes");
    assert_int_equal(c.client_tls, CLIENT_TLS_YES);
    set_ok(&c, "client_tls_verify_client", "optional");
    assert_int_equal(c.client_tls_verify_client, VERIFY_CLIENT_OPTIONAL);
    set_ok(&c, "tls_min_version", "1.3");
    assert_int_equal(c.tls_min_version, TLS_MIN_1_3);
    set_ok(&c, "tls_ciphers", "ECDHE+AESGCM:!aNULL");
    assert_string_equal(c.tls_ciphers, "ECDHE+AESGCM:!aNULL");
    set_ok(&c, "replication_tls_certificate", "/etc/ferry/node-1.pem");
    assert_string_equal(c.replication_tls_certificate, "/etc/ferry/node-1.pem");
    set_ok(&c, "replication_tls_certificate", "");
    assert_string_equal(c.replication_tls_certificate, "");
    expect_set_error("client_tls", "maybe", "expected one of no, yes, required");
    expect_set_error("client_tls_verify_client", "always", "expected one of no, optional, required");
    expect_set_error("tls_min_version", "1.1", "expected one of 1.2, 1.3");
    expect_set_error("client_handshake_timeout", "10ms", "expected a duration");

    struct ferry_err err;
    int rc = load(&c, &err, NULL, ARGV("--replication-tls", "yes"));
    EXPECT_ERROR(rc, &err, "replication_tls is on but replication_tls_certificate is not set");
    rc = load(&c, &err, NULL,
              ARGV("--replication-tls", "yes", "--replication-tls-certificate", "n.pem",
                   "--replication-tls-key", "n.key"));
    EXPECT_ERROR(rc, &err, "replication_tls_ca is not set");
    rc = load(&c, &err, NULL, ARGV("--client-tls", "required"));
    EXPECT_ERROR(rc, &err, "client_tls is on but neither client_tls_certificate nor");
    rc = load(&c, &err, NULL,
              ARGV("--client-tls", "yes", "--client-tls-certificate", "s.pem", "--client-tls-key",
                   "s.key", "--client-tls-verify-client", "required"));
    EXPECT_ERROR(rc, &err, "client_tls_verify_client needs a CA");
    rc = load(&c, &err, NULL, ARGV("--client-tls-verify-client", "required"));
    EXPECT_ERROR(rc, &err, "client_tls_verify_client is set but client_tls is no");
    /* The client listener falls back to the node's own certificate. */
    rc = load(&c, &err, NULL,
              ARGV("--client-tls", "required", "--replication-tls-certificate", "n.pem",
                   "--replication-tls-key", "n.key"));
    assert_int_equal(rc, 0);
}

static void test_endpoints(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        const char *host;
        uint16_t port;
    } ok[] = {{"h:1", "h", 1},
              {"example.com", "example.com", 7878},
              {"[::1]:7878", "::1", 7878},
              {"[::1]", "::1", 7878},
              {"[2001:db8::2]:65535", "2001:db8::2", 65535},
              {"0.0.0.0:80", "0.0.0.0", 80},
              {"my_host-1.Local:9000", "my_host-1.Local", 9000}};
    struct config_endpoint ep;
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        assert_int_equal(config_parse_endpoint(ok[i].s, 7878, &ep), 0);
        assert_string_equal(ep.host, ok[i].host);
        assert_int_equal(ep.port, ok[i].port);
    }
    assert_int_equal(config_parse_endpoint("h", 0, &ep), FERRY_EINVAL);
    assert_int_equal(config_parse_endpoint("h:0", 7878, &ep), FERRY_EINVAL);

    char longhost[300];
    memset(longhost, 'a', sizeof longhost);
    memcpy(longhost + 280, ":1", 3);
    expect_set_error("client_endpoint", "h:0", "port 0 is out of range (1 to 65535)");
    expect_set_error("client_endpoint", "h:65536", "port 65536 is out of range (1 to 65535)");
    expect_set_error("client_endpoint", "h:", "port '' is not a number from 1 to 65535");
    expect_set_error("client_endpoint", "h:80x", "port '80x' is not a number");
    expect_set_error("client_endpoint", "h:-1", "port '-1' is not a number");
    expect_set_error("client_endpoint", ":80", "missing host");
    expect_set_error("client_endpoint", "::1", "an IPv6 address must be in brackets");
    expect_set_error("client_endpoint", "[::1", "missing ']'");
    expect_set_error("client_endpoint", "[::1]x", "unexpected 'x' after ']'");
    expect_set_error("client_endpoint", "[zz]:1", "'zz' is not an IPv6 address");
    expect_set_error("client_endpoint", "999.1.1.1:1", "'999.1.1.1' is not an IPv4 address");
    expect_set_error("client_endpoint", "a..b:1", "'a..b' is not a host name");
    expect_set_error("client_endpoint", "-a:1", "'-a' is not a host name");
    expect_set_error("client_endpoint", "has space:1", "is not a host name");
    expect_set_error("cluster_node_endpoint", "localhost", "missing port (expected host:port)");
    expect_set_error("client_endpoint", longhost, "the host is longer than 255 bytes");

    struct config c;
    config_defaults(&c);
    set_ok(&c, "cluster_node_endpoint", "localhost:9000");
    assert_int_equal(c.cluster_node_endpoint.port, 9000);
    set_ok(&c, "cluster_node_endpoint", "none");
    assert_int_equal(c.cluster_node_endpoint.port, 0);
}

/* ---- cluster membership ---- */

static void test_membership_parse(void **state)
{
    (void)state;
    struct config_member m[CONFIG_MAX_MEMBERS];
    struct ferry_err err;
    uint32_t n = 99;
    assert_int_equal(config_parse_membership(SEED_MEMBERS, m, CONFIG_MAX_MEMBERS, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_int_equal(m[0].priority, 10);
    assert_int_equal(m[0].id, 1);
    assert_string_equal(m[0].endpoint.host, "h1");
    assert_int_equal(m[0].endpoint.port, 9000);
    assert_int_equal(m[1].priority, 5);
    assert_int_equal(m[1].id, 2);
    assert_int_equal(m[2].priority, 1); /* no [n]: priority 1 */
    assert_int_equal(m[2].id, 3);
    assert_string_equal(m[2].endpoint.host, "h3");

    assert_int_equal(config_parse_membership("1:a:1,2:b:1,[0]3:c:1", m, 16, &n, &err), 0);
    assert_int_equal(m[2].priority, 0); /* witness */

    assert_int_equal(config_parse_membership("[2]4:[::1]:9000, 5:[fe80::1]:9001 ", m, 16, &n, &err),
                     0);
    assert_int_equal(n, 2);
    assert_int_equal(m[0].priority, 2);
    assert_int_equal(m[0].id, 4);
    assert_string_equal(m[0].endpoint.host, "::1");
    assert_string_equal(m[1].endpoint.host, "fe80::1");
    assert_int_equal(m[1].endpoint.port, 9001);

    assert_int_equal(config_parse_membership("none", m, 16, &n, &err), 0);
    assert_int_equal(n, 0);

    char sixteen[512] = "", seventeen[sizeof sixteen + 16];
    for (int i = 1; i <= 16; i++)
        snprintf(sixteen + strlen(sixteen), sizeof sixteen - strlen(sixteen), "%s%d:h%d:9000",
                 i > 1 ? "," : "", i, i);
    assert_int_equal(config_parse_membership(sixteen, m, CONFIG_MAX_MEMBERS, &n, &err), 0);
    assert_int_equal(n, 16);
    snprintf(seventeen, sizeof seventeen, "%s,17:h17:9000", sixteen);
    assert_int_equal(config_parse_membership(seventeen, m, CONFIG_MAX_MEMBERS, &n, &err),
                     FERRY_EINVAL);
    assert_non_null(strstr(err.msg, "more than 16 members"));
    expect_set_error("cluster_membership", seventeen, "more than 16 members");
}

static void test_membership_errors(void **state)
{
    (void)state;
    const char *key = "cluster_membership";
    expect_set_error(key, "1:a:1,,2:b:2", "entry 2 is empty");
    expect_set_error(key, "1:a:1,", "entry 2 is empty");
    expect_set_error(key, ",1:a:1", "entry 1 is empty");
    expect_set_error(key, "", "entry 1 is empty");
    expect_set_error(key, "1:a:1,1:b:2", "member id 1 appears twice (entries 1 and 2)");
    expect_set_error(key, "1:a:1,2:A:1", "entries 1 and 2 have the same address A:1");
    expect_set_error(key, "[x]1:a:1",
                     "entry 1 '[x]1:a:1': expected a priority from [0] to [65535]");
    expect_set_error(key, "[70000]1:a:1", "expected a priority from [0] to [65535]");
    expect_set_error(key, "[1 1:a:1", "expected a priority");
    expect_set_error(key, "0:a:1", "entry 1 '0:a:1': expected [priority]id:host:port with an id");
    expect_set_error(key, "1:a:1,b:1", "entry 2 'b:1': expected [priority]id:host:port");
    expect_set_error(key, "4294967296:a:1", "with an id from 1 to 4294967295");
    expect_set_error(key, "1:a", "entry 1 '1:a': missing port");
    expect_set_error(key, "1:a:0", "port 0 is out of range");
    expect_set_error(key, "1:::1:9000", "an IPv6 address must be in brackets");
    expect_set_error(key, "[0]1:a:1,[0]2:b:1", "every member is a witness");
}

static void test_cluster_seed_configuration(void **state)
{
    struct config c;
    struct ferry_err err;
    char *path = write_file(*state, "oms2.conf",
                            "cluster_node_id 2\n"
                            "cluster_node_endpoint localhost:9000\n"
                            "cluster_membership " SEED_MEMBERS "\n");
    assert_int_equal(load(&c, &err, NULL, ARGV("--config", path)), 0);
    assert_int_equal(c.cluster_node_id, 2);
    assert_string_equal(c.cluster_node_endpoint.host, "localhost");
    assert_int_equal(c.cluster_node_endpoint.port, 9000);
    assert_int_equal(c.member_count, 3);
    assert_int_equal(c.members[1].priority, 5);

    /* cluster_node_endpoint defaults to this node's own membership entry */
    char **env = ENV("FERRY_CLUSTER_NODE_ID=3", "FERRY_CLUSTER_MEMBERSHIP=" SEED_MEMBERS);
    assert_int_equal(load(&c, &err, env, NOARGS), 0);
    assert_string_equal(c.cluster_node_endpoint.host, "h3");
    assert_int_equal(c.cluster_node_endpoint.port, 9000);
}

static void test_cluster_cross_key_errors(void **state)
{
    (void)state;
    struct config c;
    struct ferry_err err;
    int rc = load(&c, &err, NULL, ARGV("--cluster-membership", SEED_MEMBERS));
    EXPECT_ERROR(rc, &err, "cluster_membership is set but cluster_node_id is not");
    rc = load(&c, &err, NULL, ARGV("--cluster-node-id", "2"));
    EXPECT_ERROR(rc, &err, "cluster_node_id 2 is set but cluster_membership is not");
    rc = load(&c, &err, NULL, ARGV("--cluster-node-endpoint", "localhost:9000"));
    EXPECT_ERROR(rc, &err,
                 "cluster_node_endpoint localhost:9000 is set but cluster_membership "
                 "is not");
    rc = load(&c, &err, NULL, ARGV("--cluster-join", "yes"));
    EXPECT_ERROR(rc, &err, "cluster_join is set but cluster_membership is not");
    rc = load(&c, &err, NULL, ARGV("--cluster-node-id", "4", "--cluster-membership", SEED_MEMBERS));
    EXPECT_ERROR(rc, &err, "cluster_node_id 4 is not in cluster_membership", SEED_MEMBERS);
    rc = load(&c, &err, NULL,
              ARGV("--cluster-node-id", "1", "--cluster-membership", SEED_MEMBERS,
                   "--cluster-node-endpoint", "localhost:9001"));
    EXPECT_ERROR(rc, &err, "cluster_node_endpoint localhost:9001: the port must be 9000");
    rc = load(&c, &err, NULL,
              ARGV("--cluster-node-id", "1", "--cluster-membership", "1:127.0.0.1:9000,2:h:9000",
                   "--client-endpoint", "127.0.0.1:9000"));
    EXPECT_ERROR(rc, &err,
                 "cluster_node_endpoint 127.0.0.1:9000 uses the same port as "
                 "client_endpoint");
    rc = load(&c, &err, NULL,
              ARGV("--cluster-node-id", "1", "--cluster-membership", "1:h1:9000,2:h:9000",
                   "--client-endpoint", "0.0.0.0:9000"));
    EXPECT_ERROR(rc, &err, "uses the same port as client_endpoint");
    /* a node id of 0 means "not set" */
    rc = load(&c, &err, NULL, ARGV("--cluster-node-id", "0", "--cluster-membership", SEED_MEMBERS));
    EXPECT_ERROR(rc, &err, "cluster_node_id is not");
}

static void test_validate_membership_struct(void **state)
{
    (void)state;
    struct config c;
    struct ferry_err err;
    config_defaults(&c);
    set_ok(&c, "cluster_membership", SEED_MEMBERS);
    set_ok(&c, "cluster_node_id", "1");
    assert_int_equal(config_validate(&c, &err), 0);
    c.members[2].id = 1;
    EXPECT_ERROR(config_validate(&c, &err), &err, "cluster_membership: member id 1 appears twice");
    c.members[2].id = 0;
    EXPECT_ERROR(config_validate(&c, &err), &err, "cluster_membership: member 3 has id 0");
    c.member_count = CONFIG_MAX_MEMBERS + 1;
    EXPECT_ERROR(config_validate(&c, &err), &err, "cluster_membership has 17 members; at most 16");
}

static void test_raft_timing(void **state)
{
    (void)state;
    struct config c;
    struct ferry_err err;
    int rc = load(&c, &err, NULL, ARGV("--raft-election-timeout-min", "50ms"));
    EXPECT_ERROR(rc, &err,
                 "raft_election_timeout_min 50ms must be greater than "
                 "raft_heartbeat_interval 50ms");
    rc = load(&c, &err, NULL, ARGV("--raft-election-timeout-max", "300ms"));
    EXPECT_ERROR(rc, &err,
                 "raft_election_timeout_max 300ms must be greater than "
                 "raft_election_timeout_min 300ms");
    rc = load(&c, &err, NULL,
              ARGV("--raft-heartbeat-interval", "100ms", "--raft-election-timeout-min", "1s",
                   "--raft-election-timeout-max", "2s"));
    assert_int_equal(rc, 0);
    assert_int_equal(c.raft_heartbeat_ms, 100);
    assert_int_equal(c.raft_election_min_ms, 1000);
    assert_int_equal(c.raft_election_max_ms, 2000);
}

/* ---- paths ---- */

static void test_paths(void **state)
{
    (void)state;
    struct config c;
    struct ferry_err err;
    assert_int_equal(load(&c, &err, NULL, ARGV("--data-directory", "/var/lib/ferry")), 0);
    assert_string_equal(c.replication_logfile_directory, "/var/lib/ferry/raft");
    assert_int_equal(load(&c, &err, NULL, ARGV("--data-directory", "/x/")), 0);
    assert_string_equal(c.replication_logfile_directory, "/x/raft");
    /* the derived default follows data_directory whichever source sets it */
    assert_int_equal(load(&c, &err, ENV("FERRY_DATA_DIRECTORY=/e"), NOARGS), 0);
    assert_string_equal(c.replication_logfile_directory, "/e/raft");
    assert_int_equal(load(&c, &err, ENV("FERRY_REPLICATION_LOGFILE_DIRECTORY=/fast/raft"),
                          ARGV("--data-directory", "/d")),
                     0);
    assert_string_equal(c.replication_logfile_directory, "/fast/raft");
    assert_int_equal(load(&c, &err, NULL, ARGV("--replication-logfile-directory=")), 0);
    assert_string_equal(c.replication_logfile_directory, "ferry-data/raft");

    static char longdir[CONFIG_PATH_MAX + 1];
    memset(longdir, 'd', CONFIG_PATH_MAX - 3);
    int rc = load(&c, &err, NULL, ARGV("--data-directory", longdir));
    EXPECT_ERROR(rc, &err, "data_directory 'ddd",
                 "too long to hold the default "
                 "replication_logfile_directory");
    memset(longdir, 'd', CONFIG_PATH_MAX);
    expect_set_error("data_directory", longdir, "the path is longer than 4095 bytes");
    expect_set_error("data_directory", "", "expected a directory path");
    expect_set_error("data_directory", "a\tb", "control character");
    expect_set_error("data_directory", "my #1", "would start a comment");
    expect_set_error("replication_logfile_directory", "#raft", "would start a comment");
    expect_set_error("cluster_name", "two words", "letters, digits");
    expect_set_error("cluster_name", "", "expected 1 to 64 characters");
}

/* ---- printing ---- */

/* Print c, load the printed file, and check the result is byte-for-byte the same config. */
static void assert_round_trip(struct fixture *f, const struct config *c, const char *name)
{
    struct config back;
    struct ferry_err err;
    char *text = print_to_string(c);
    char *path = write_file(f, name, text);
    int rc = load(&back, &err, NULL, ARGV("--config", path));
    if (rc != 0)
        fail_msg("printed config does not load: %s\n%s", err.msg, text);
    char *again = print_to_string(&back);
    assert_string_equal(again, text);
    assert_memory_equal(&back, c, sizeof back);
    free(again);
    free(text);
}

static void test_print_defaults(void **state)
{
    struct config c;
    struct ferry_err err;
    assert_int_equal(load(&c, &err, NULL, NOARGS), 0);
    char *text = print_to_string(&c);
    int lines = 0;
    for (const char *p = text; *p; p++)
        lines += *p == '\n';
    assert_int_equal(lines, 39);
    static const char *const expected[] = {"client_endpoint 127.0.0.1:7878\n",
                                           "max_message_size 6000K\n",
                                           "log_level info\n",
                                           "auto_create yes\n",
                                           "default_ttl 0\n",
                                           "history_retention 1d\n",
                                           "cluster_node_id 0\n",
                                           "cluster_node_endpoint none\n",
                                           "cluster_membership none\n",
                                           "cluster_join no\n",
                                           "cluster_name ferry\n",
                                           "replication_logfile_directory ferry-data/raft\n",
                                           "logfile_max_size 64M\n",
                                           "raft_heartbeat_interval 50ms\n",
                                           "replication_tls no\n",
                                           "client_tls no\n",
                                           "client_tls_verify_client no\n",
                                           "tls_min_version 1.2\n",
                                           "client_handshake_timeout 10s\n"};
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        if (strstr(text, expected[i]) == NULL)
            fail_msg("printed config lacks '%s':\n%s", expected[i], text);
    }
    free(text);
    assert_round_trip(*state, &c, "defaults.conf");

    /* config_print shows the derived directory even before config_load filled it in */
    config_defaults(&c);
    text = print_to_string(&c);
    assert_non_null(strstr(text, "replication_logfile_directory ferry-data/raft\n"));
    free(text);
}

static void test_print_round_trip_cluster(void **state)
{
    struct config c;
    struct ferry_err err;
    int rc =
        load(&c, &err, NULL,
             ARGV("--client-endpoint", "[::]:7000", "--data-directory", "/srv/ferry data",
                  "--max-message-size", "1000", "--log-level", "warn", "--auto-create", "no",
                  "--output-buffer-limit", "3G", "--max-connections", "7", "--default-prefetch",
                  "1", "--default-max-deliveries", "1000000", "--default-capacity", "123456789",
                  "--default-ttl", "90s", "--history-retention", "36h", "--history-max-records",
                  "0", "--cluster-node-id", "2", "--cluster-node-endpoint", "0.0.0.0:9000",
                  "--cluster-membership", "[10]1:h1:9000,[5]2:[::1]:9000,[0]3:h3:9001",
                  "--replication-logfile-directory", "/fast/raft", "--logfile-max-size", "1500K",
                  "--logfile-max-generations", "1000", "--snapshot-distance", "999999999",
                  "--verify-replication-node-ip", "yes", "--raft-heartbeat-interval", "1001ms",
                  "--raft-election-timeout-min", "61s", "--raft-election-timeout-max", "1m"));
    EXPECT_ERROR(rc, &err, "raft_election_timeout_min '61s'", "(1ms to 1m)");
    rc = load(&c, &err, NULL,
              ARGV("--client-endpoint", "[::]:7000", "--data-directory", "/srv/ferry data",
                   "--max-message-size", "1000", "--log-level", "warn", "--auto-create", "no",
                   "--output-buffer-limit", "3G", "--max-connections", "7", "--default-prefetch",
                   "1", "--default-max-deliveries", "1000000", "--default-capacity", "123456789",
                   "--default-ttl", "90s", "--history-retention", "36h", "--history-max-records",
                   "0", "--cluster-node-id", "2", "--cluster-node-endpoint", "0.0.0.0:9000",
                   "--cluster-membership", "[10]1:h1:9000,[5]2:[::1]:9000,[0]3:h3:9001",
                   "--replication-logfile-directory", "/fast/raft", "--logfile-max-size", "1500K",
                   "--logfile-max-generations", "1000", "--snapshot-distance", "999999999",
                   "--verify-replication-node-ip", "yes", "--raft-heartbeat-interval", "1001ms",
                   "--raft-election-timeout-min", "59s", "--raft-election-timeout-max", "1m"));
    if (rc != 0)
        fail_msg("%s", err.msg);
    char *text = print_to_string(&c);
    assert_non_null(
        strstr(text, "cluster_membership [10]1:h1:9000,[5]2:[::1]:9000,[0]3:h3:9001\n"));
    assert_non_null(strstr(text, "client_endpoint [::]:7000\n"));
    assert_non_null(strstr(text, "data_directory /srv/ferry data\n"));
    assert_non_null(strstr(text, "default_ttl 90s\n"));
    assert_non_null(strstr(text, "history_retention 36h\n"));
    assert_non_null(strstr(text, "raft_heartbeat_interval 1001ms\n"));
    assert_non_null(strstr(text, "raft_election_timeout_max 1m\n"));
    free(text);
    assert_round_trip(*state, &c, "cluster.conf");
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_load_with_nothing_gives_defaults),
        T(test_file_syntax),
        T(test_file_later_line_wins),
        T(test_file_errors_name_file_and_line),
        T(test_file_unreadable),
        T(test_file_bad_lines),
        T(test_precedence_flag_env_file),
        T(test_config_file_from_environment),
        T(test_environment),
        T(test_flag_spellings),
        T(test_flag_errors),
        T(test_value_too_long),
        T(test_sizes),
        T(test_numbers),
        T(test_durations),
        T(test_bools_and_log_levels),
        T(test_tls_keys),
        T(test_endpoints),
        T(test_membership_parse),
        T(test_membership_errors),
        T(test_cluster_seed_configuration),
        T(test_cluster_cross_key_errors),
        T(test_validate_membership_struct),
        T(test_raft_timing),
        T(test_paths),
        T(test_print_defaults),
        T(test_print_round_trip_cluster),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
