/* main.c - ferryd: load configuration, lock and open the data directory,
 * open the message database, serve until SIGTERM/SIGINT.
 *
 * Exit status: 0 after a clean shutdown, 2 for bad configuration or usage,
 * 1 for any other failure to start (data directory, database, listen).
 */
#include "server/server.h"

#include "util/log.h"
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

extern char **environ;

static void usage(FILE *f)
{
    fprintf(f, "usage: ferryd [--config FILE] [--KEY VALUE]... [--print-config]\n"
               "       ferryd --help | --version\n"
               "\n"
               "Runs a Ferry message server node. Every configuration key can be given in the\n"
               "file (`key value` lines), as FERRY_<KEY> in the environment, or as --<key>\n"
               "VALUE (flag beats environment beats file). Keys are listed in\n"
               "docs/configuration.md; --print-config shows the effective configuration.\n");
}

/* mkdir -p with mode 0700 for new directories. */
static int make_dirs(const char *path, struct ferry_err *err)
{
    char tmp[CONFIG_PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return ferry_err_set(err, FERRY_EIO, "cannot create directory '%s': %s", tmp,
                                 strerror(errno));
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return ferry_err_set(err, FERRY_EIO, "cannot create data_directory '%s': %s", tmp,
                             strerror(errno));
    return 0;
}

/* One ferryd per data directory: an advisory lock on <dir>/LOCK, held until exit. */
static int lock_data_dir(const char *dir, int *fd_out, struct ferry_err *err)
{
    char path[CONFIG_PATH_MAX + 8];
    snprintf(path, sizeof path, "%s/LOCK", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return ferry_err_set(err, FERRY_EIO, "cannot open '%s': %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        char pid[32] = "";
        ssize_t n = pread(fd, pid, sizeof pid - 1, 0);
        pid[n > 0 ? n : 0] = '\0';
        pid[strcspn(pid, "\n")] = '\0';
        close(fd);
        return ferry_err_set(err, FERRY_EBUSY,
                             "data_directory '%s' is in use by another ferryd (pid %s)", dir,
                             pid[0] ? pid : "unknown");
    }
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != n) {
        close(fd);
        return ferry_err_set(err, FERRY_EIO, "cannot write '%s': %s", path, strerror(errno));
    }
    *fd_out = fd;
    return 0;
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static int run(const struct config *cfg, struct server_tls *tls)
{
    struct ferry_err err;
    ferry_err_clear(&err);
    int lock_fd = -1;
    if (make_dirs(cfg->data_directory, &err) != 0 ||
        lock_data_dir(cfg->data_directory, &lock_fd, &err) != 0) {
        log_error("main", "%s", err.msg);
        server_tls_free(tls);
        return 1;
    }
    char db_path[CONFIG_PATH_MAX + 16];
    snprintf(db_path, sizeof db_path, "%s/ferry.db", cfg->data_directory);
    struct broker_config bcfg = {
        .db_path = db_path,
        .synchronous_full = 0, /* the Raft log is the durable record */
        .max_message_size = cfg->max_message_size,
        .default_prefetch = cfg->default_prefetch,
        .default_window = 1000,
        .default_max_deliveries = cfg->default_max_deliveries,
        .default_capacity = cfg->default_capacity,
        .default_ttl_ms = cfg->default_ttl_ms,
        .history_retention_ms = cfg->history_retention_ms,
        .history_max_records = cfg->history_max_records,
        .pump_batch = 1024,
    };
    struct broker *broker = NULL;
    if (broker_open(&broker, &bcfg, &err) != 0) {
        log_error("main", "cannot open the message database %s: %s", db_path, err.msg);
        close(lock_fd);
        server_tls_free(tls);
        return 1;
    }
    struct broker_stats bs;
    broker_stats(broker, &bs);
    uint64_t idx, term;
    broker_last_applied(broker, &idx, &term);
    log_info("main", "message database %s: %llu resources, %llu stored messages, last applied "
             "index %llu", db_path, (unsigned long long)bs.resources,
             (unsigned long long)bs.stored_messages, (unsigned long long)idx);

    uv_loop_t loop;
    uv_loop_init(&loop);
    static struct server srv;
    int rc = server_start(&srv, &loop, cfg, tls, broker, &err);
    if (rc != 0) {
        log_error("main", "%s", err.msg);
    } else {
        log_info("main", "ferryd %s ready (pid %ld)", FERRY_VERSION, (long)getpid());
        uv_run(&loop, UV_RUN_DEFAULT);
    }
    uv_walk(&loop, close_walk_cb, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    server_destroy(&srv);
    broker_close(broker);
    close(lock_fd);
    if (rc == 0)
        log_info("main", "stopped cleanly");
    return rc == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    /* Log entries and payloads come and go in large buffers: keep those in
     * their own mappings, returned to the system when freed, instead of
     * letting glibc raise the threshold and keep a burst's worth of heap. */
    mallopt(M_MMAP_THRESHOLD, 256 * 1024);
    int print_config = 0;
    int n = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("ferryd %s\n", FERRY_VERSION);
            return 0;
        }
    }
    /* Drop --print-config before handing the rest to the configuration loader. */
    char **args = calloc((size_t)argc + 1, sizeof *args);
    if (args == NULL)
        return 1;
    for (int i = 0; i < argc; i++) {
        if (i > 0 && strcmp(argv[i], "--print-config") == 0)
            print_config = 1;
        else
            args[n++] = argv[i];
    }
    static struct config cfg;
    struct ferry_err err;
    ferry_err_clear(&err);
    int rc = config_load(&cfg, n, args, environ, &err);
    free(args);
    if (rc != 0) {
        fprintf(stderr, "ferryd: %s\n", err.msg);
        return 2;
    }
    log_set_level((enum log_level)cfg.log_level);
    if (print_config) {
        config_print(&cfg, stdout);
        return 0;
    }
    /* Certificates are configuration: a file that does not load is exit 2. */
    struct server_tls tls;
    if (server_tls_load(&cfg, &tls, &err) != 0) {
        fprintf(stderr, "ferryd: %s\n", err.msg);
        return 2;
    }
    return run(&cfg, &tls);
}
