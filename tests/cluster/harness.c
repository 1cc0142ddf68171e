/* harness.c - see harness.h. POSIX process and socket plumbing only. */
#include "harness.h"
#include "test_port.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

void node_init(struct node *n)
{
    memset(n, 0, sizeof *n);
    snprintf(n->dir, sizeof n->dir, "/tmp/ferry-test-XXXXXX");
    if (mkdtemp(n->dir) == NULL) {
        perror("mkdtemp");
        abort();
    }
    snprintf(n->log, sizeof n->log, "%s/ferryd.log", n->dir);
    n->port = test_free_port();
    n->raft_port = test_free_port();
    n->priority = -1;
}

static int port_accepts(uint16_t port)
{
    int fd = conn_open(port);
    if (fd < 0)
        return 0;
    close(fd);
    return 1;
}

/* A node that fails to start says why in its log; CI keeps only the test's
 * output, so the last lines go there. */
static void node_print_log_tail(const struct node *n, const char *what)
{
    FILE *f = fopen(n->log, "r");
    if (f == NULL)
        return;
    char lines[8][512];
    unsigned count = 0;
    while (fgets(lines[count % 8], sizeof lines[0], f) != NULL)
        count++;
    fclose(f);
    fprintf(stderr, "harness: ferryd on port %u %s; last lines of %s:\n", n->port, what, n->log);
    for (unsigned i = count > 8 ? count - 8 : 0; i < count; i++)
        fprintf(stderr, "  %s", lines[i % 8]);
}

int node_spawn(struct node *n, const char *const *extra)
{
    char endpoint[64], data[300];
    snprintf(endpoint, sizeof endpoint, "127.0.0.1:%u", n->port);
    snprintf(data, sizeof data, "%s/data", n->dir);
    const char *argv[64];
    int a = 0;
    argv[a++] = FERRYD_BIN;
    argv[a++] = "--client_endpoint";
    argv[a++] = endpoint;
    argv[a++] = "--data_directory";
    argv[a++] = data;
    if (harness_tls()) { /* flags that follow (the test's own) override these */
        argv[a++] = "--client_tls";
        argv[a++] = "yes";
        argv[a++] = "--client_tls_certificate";
        argv[a++] = harness_cert("node-1.pem");
        argv[a++] = "--client_tls_key";
        argv[a++] = harness_cert("node-1.key");
    }
    for (int i = 0; extra && extra[i] && a < 62; i++)
        argv[a++] = extra[i];
    argv[a] = NULL;
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(n->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
            close(fd);
        }
        execv(FERRYD_BIN, (char *const *)argv);
        _exit(127);
    }
    n->pid = pid;
    for (int i = 0; i < 1500; i++) {
        if (port_accepts(n->priority == 0 ? n->raft_port : n->port))
            return 0;
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            n->pid = 0;
            n->exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            char what[64];
            snprintf(what, sizeof what, "exited at start (status %d)", n->exit_status);
            node_print_log_tail(n, what);
            return -1;
        }
        sleep_ms(10);
    }
    node_print_log_tail(n, "did not open its port in 15 s");
    return -1;
}

int node_start(struct node *n, const char *const *extra)
{
    if (node_spawn(n, extra) != 0)
        return -1;
    return node_wait_serving(n, 15000);
}

int node_wait_serving(struct node *n, int timeout_ms)
{
    for (int t = 0; t <= timeout_ms; t += 20) {
        if (node_serving(n))
            return 0;
        if (n->pid > 0) {
            int st;
            if (waitpid(n->pid, &st, WNOHANG) == n->pid) {
                n->pid = 0;
                n->exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
                return -1;
            }
        }
        sleep_ms(20);
    }
    return -1;
}

int node_status(const struct node *n, const char *key, char *out, size_t cap)
{
    return node_status_flags(n, 0, key, out, cap);
}

int node_status_flags(const struct node *n, uint16_t flags, const char *key, char *out,
                      size_t cap)
{
    if (n->pid <= 0 || n->priority == 0)
        return -1;
    int fd = conn_open(n->port);
    if (fd < 0)
        return -1;
    struct buf b;
    buf_init(&b);
    struct proto_hello hello;
    memset(&hello, 0, sizeof hello);
    hello.flags = PROTO_F_ANY_NODE;
    snprintf(hello.client_name, sizeof hello.client_name, "test-status");
    proto_encode_hello(&b, 1, &hello);
    proto_encode_empty(&b, PROTO_STATUS, flags, 2);
    int rc = conn_send(fd, &b);
    struct proto_header h;
    if (rc == 0)
        rc = conn_read_frame(fd, &b, &h, 2000);
    if (rc == 0 && h.op != PROTO_HELLO_OK)
        rc = -1;
    if (rc == 0)
        rc = conn_read_frame(fd, &b, &h, 2000);
    if (rc == 0 && h.op != PROTO_STATUS_OK)
        rc = -1;
    struct proto_status *st = NULL;
    if (rc == 0) {
        rc = -1;
        st = calloc(1, sizeof *st);
        if (st != NULL && proto_decode_status_ok(b.data + PROTO_HEADER_SIZE,
                                                 b.len - PROTO_HEADER_SIZE, st) == 0) {
            for (uint16_t i = 0; i < st->count; i++) {
                if (strcmp(st->kv[i].key, key) == 0) {
                    snprintf(out, cap, "%s", st->kv[i].value);
                    rc = 0;
                    break;
                }
            }
        }
    }
    free(st);
    buf_free(&b);
    close(fd);
    return rc;
}

int node_serving(const struct node *n)
{
    char v[16];
    return node_status(n, "serving", v, sizeof v) == 0 && strcmp(v, "yes") == 0;
}

int cluster_start_node(struct node *all, int count, int i, const char *const *extra)
{
    char id[16], self[64], members[1024] = "";
    size_t off = 0;
    for (int k = 0; k < count; k++) {
        char prio[16] = "";
        if (all[k].priority >= 0)
            snprintf(prio, sizeof prio, "[%d]", all[k].priority);
        off += (size_t)snprintf(members + off, sizeof members - off, "%s%s%d:%s:%u",
                                k ? "," : "", prio, k + 1,
                                all[k].raft_host[0] ? all[k].raft_host : "127.0.0.1",
                                all[k].raft_port);
    }
    snprintf(id, sizeof id, "%d", i + 1);
    snprintf(self, sizeof self, "%s:%u", all[i].raft_host[0] ? all[i].raft_host : "127.0.0.1",
             all[i].raft_port);
    /* Each test process is its own cluster: a node of another test's cluster
     * that dials a port this one got after it (a port freed by a killed node)
     * is refused at the handshake instead of joining in. */
    static char name[32];
    if (name[0] == '\0')
        snprintf(name, sizeof name, "test-%d", (int)getpid());
    const char *argv[64];
    int a = 0;
    argv[a++] = "--cluster_name";
    argv[a++] = name;
    argv[a++] = "--cluster_node_id";
    argv[a++] = id;
    argv[a++] = "--cluster_node_endpoint";
    argv[a++] = self;
    argv[a++] = "--cluster_membership";
    argv[a++] = members;
    char cert[128], key[128];
    if (harness_tls()) {
        snprintf(cert, sizeof cert, "%s/node-%d.pem", harness_cert_dir(), i + 1);
        snprintf(key, sizeof key, "%s/node-%d.key", harness_cert_dir(), i + 1);
        argv[a++] = "--replication_tls";
        argv[a++] = "yes";
        argv[a++] = "--replication_tls_certificate";
        argv[a++] = cert;
        argv[a++] = "--replication_tls_key";
        argv[a++] = key;
        argv[a++] = "--replication_tls_ca";
        argv[a++] = harness_cert("ca.pem");
    }
    for (int k = 0; extra && extra[k] && a < 62; k++)
        argv[a++] = extra[k];
    argv[a] = NULL;
    return node_spawn(&all[i], argv);
}

int cluster_leader(struct node *all, int count, int timeout_ms)
{
    for (int t = 0; t <= timeout_ms; t += 10) {
        for (int k = 0; k < count; k++) {
            if (all[k].pid > 0 && node_serving(&all[k]))
                return k;
        }
        sleep_ms(10);
    }
    return -1;
}

void node_signal(struct node *n, int sig)
{
    if (n->pid > 0)
        kill(n->pid, sig);
}

int node_wait(struct node *n, int timeout_ms)
{
    if (n->pid <= 0)
        return -1;
    for (int t = 0; t <= timeout_ms; t += 10) {
        int st;
        pid_t r = waitpid(n->pid, &st, WNOHANG);
        if (r == n->pid) {
            n->pid = 0;
            n->exit_status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            return n->exit_status;
        }
        sleep_ms(10);
    }
    return -1;
}

void node_stop(struct node *n)
{
    if (n->pid <= 0)
        return;
    kill(n->pid, SIGCONT);
    kill(n->pid, SIGTERM);
    if (node_wait(n, 10000) < 0) {
        kill(n->pid, SIGKILL);
        node_wait(n, 5000);
    }
}

void node_destroy(struct node *n)
{
    node_stop(n);
    if (n->dir[0] && getenv("FERRY_TEST_KEEP") == NULL) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", n->dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", n->dir);
    }
}

int node_log_contains(const struct node *n, const char *text)
{
    FILE *f = fopen(n->log, "r");
    if (f == NULL)
        return 0;
    char line[4096];
    int found = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strstr(line, text) != NULL;
    fclose(f);
    return found;
}

long node_rss_kib(const struct node *n)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)n->pid);
    FILE *f = fopen(path, "r");
    long kib = 0;
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

int conn_open(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

int conn_send_raw(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        c += w;
        n -= (size_t)w;
    }
    return 0;
}

int conn_send(int fd, const struct buf *b)
{
    return conn_send_raw(fd, b->data, b->len);
}

static int read_exact(int fd, uint8_t *p, size_t n, int timeout_ms)
{
    while (n > 0) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr == 0)
            return -2;
        if (pr < 0 && errno == EINTR)
            continue;
        ssize_t r = recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int conn_read_frame(int fd, struct buf *out, struct proto_header *h, int timeout_ms)
{
    buf_reset(out);
    if (buf_reserve(out, PROTO_HEADER_SIZE) != 0)
        return -1;
    int rc = read_exact(fd, out->data, PROTO_HEADER_SIZE, timeout_ms);
    if (rc != 0)
        return rc;
    out->len = PROTO_HEADER_SIZE;
    size_t total = (size_t)get_u32(out->data) + 4;
    if (total < PROTO_HEADER_SIZE || buf_reserve(out, total - PROTO_HEADER_SIZE) != 0)
        return -1;
    rc = read_exact(fd, out->data + PROTO_HEADER_SIZE, total - PROTO_HEADER_SIZE, timeout_ms);
    if (rc != 0)
        return rc;
    out->len = total;
    size_t flen;
    return proto_frame_check(out->data, out->len, UINT32_MAX, h, &flen) == 0 ? 0 : -1;
}

int conn_hello(int fd)
{
    struct buf b;
    buf_init(&b);
    struct proto_hello hello;
    memset(&hello, 0, sizeof hello);
    snprintf(hello.client_name, sizeof hello.client_name, "test");
    proto_encode_hello(&b, 1, &hello);
    int rc = conn_send(fd, &b);
    struct proto_header h;
    if (rc == 0)
        rc = conn_read_frame(fd, &b, &h, 5000);
    if (rc == 0 && h.op != PROTO_HELLO_OK)
        rc = -1;
    buf_free(&b);
    return rc;
}

int conn_closed(int fd, int timeout_ms)
{
    uint8_t tmp[4096];
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int pr = poll(&pfd, 1, timeout_ms);
        if (pr <= 0)
            return 0;
        ssize_t r = recv(fd, tmp, sizeof tmp, 0);
        if (r == 0 || (r < 0 && errno == ECONNRESET))
            return 1;
        if (r < 0)
            return 0;
    }
}

static char *slurp_fd(int fd)
{
    struct buf b;
    buf_init(&b);
    char tmp[8192];
    ssize_t r;
    while ((r = read(fd, tmp, sizeof tmp)) > 0 || (r < 0 && errno == EINTR))
        if (r > 0)
            buf_append(&b, tmp, (size_t)r);
    buf_append_u8(&b, 0);
    return (char *)buf_steal(&b, NULL);
}

static char cert_dir[64];

static void remove_cert_dir(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", cert_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "harness: cannot remove %s\n", cert_dir);
}

const char *harness_cert_dir(void)
{
    static int made = -1;
    if (made >= 0)
        return made ? cert_dir : NULL;
    made = 0;
    snprintf(cert_dir, sizeof cert_dir, "/tmp/ferry-certs-XXXXXX");
    if (mkdtemp(cert_dir) == NULL)
        return NULL;
    atexit(remove_cert_dir);
    char cmd[512];
    snprintf(cmd, sizeof cmd,
             FERRY_SOURCE_DIR "/scripts/make-certs %s --nodes 5 >/dev/null && " FERRY_SOURCE_DIR
                              "/scripts/make-certs %s/other --nodes 5 --ca-name Other >/dev/null",
             cert_dir, cert_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "harness: scripts/make-certs failed\n");
        return NULL;
    }
    made = 1;
    return cert_dir;
}

int harness_tls(void)
{
    const char *v = getenv("FERRY_TEST_TLS");
    return v != NULL && strcmp(v, "1") == 0 && harness_cert_dir() != NULL;
}

const char *harness_cert(const char *name)
{
    static char path[8][128];
    static unsigned next;
    char *out = path[next++ % 8];
    snprintf(out, sizeof path[0], "%s/%s", harness_cert_dir(), name);
    return out;
}

static void exec_ferry(uint16_t port, const char *const *args)
{
    char servers[64];
    snprintf(servers, sizeof servers, "127.0.0.1:%u", port);
    const char *argv[64];
    int a = 0;
    argv[a++] = FERRY_BIN;
    argv[a++] = "--servers";
    argv[a++] = servers;
    if (harness_tls()) {
        argv[a++] = "--ca";
        argv[a++] = harness_cert("ca.pem");
    }
    for (int i = 0; args[i] && a < 63; i++)
        argv[a++] = args[i];
    argv[a] = NULL;
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    execv(FERRY_BIN, (char *const *)argv);
    _exit(127);
}

int run_ferry(uint16_t port, const char *input, struct run_result *r, const char *const *args)
{
    char in_path[] = "/tmp/ferry-in-XXXXXX", out_path[] = "/tmp/ferry-out-XXXXXX",
         err_path[] = "/tmp/ferry-err-XXXXXX";
    int in = mkstemp(in_path), out = mkstemp(out_path), err = mkstemp(err_path);
    if (input && write(in, input, strlen(input)) != (ssize_t)strlen(input))
        abort();
    lseek(in, 0, SEEK_SET);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in, 0);
        dup2(out, 1);
        dup2(err, 2);
        exec_ferry(port, args);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    lseek(out, 0, SEEK_SET);
    lseek(err, 0, SEEK_SET);
    r->out = slurp_fd(out);
    r->err = slurp_fd(err);
    close(in);
    close(out);
    close(err);
    unlink(in_path);
    unlink(out_path);
    unlink(err_path);
    return r->status;
}

void run_result_free(struct run_result *r)
{
    free(r->out);
    free(r->err);
    r->out = r->err = NULL;
}

pid_t spawn_ferry(uint16_t port, const char *input_file, const char *output_file,
                  const char *const *args)
{
    pid_t pid = fork();
    if (pid == 0) {
        int in = open(input_file ? input_file : "/dev/null", O_RDONLY);
        int out = open(output_file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(in, 0);
        dup2(out, 1);
        exec_ferry(port, args);
    }
    return pid;
}
