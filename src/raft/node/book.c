/* book.c - the address book: where every member listens for replication.
 *
 * A Raft configuration carries only ids, roles and priorities, so the driver
 * keeps the addresses beside it. The book starts with cluster_membership
 * (entries marked configured: always known, never dropped) and grows with
 * the members the leader adds online (rnode_add_member). Learned entries are
 * persisted in <log_dir>/members (written to a temporary file, fsynced,
 * renamed, directory fsynced) so a restarted node still knows them.
 *
 * The leader sends its whole book to a peer whenever its link to that peer
 * comes up, whenever it becomes leader and whenever the book changes:
 *
 *   [u8 0xF2][u16 n] n x ([u32 id][u16 port][u16 host length][host])
 *
 * A node takes from it the entries it does not have (or whose address
 * changed), except its own and configured ones, which its configuration
 * decides. The book only says how to reach a node; whether a node is dialled
 * is decided by links_sync from the Raft configuration.
 */
#include "raft/node/node_int.h"

#include "util/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define BOOK_FILE "members"

struct rnode_peer *book_find(struct rnode *n, uint32_t id)
{
    for (uint32_t i = 0; i < n->n_peers; i++)
        if (n->peers[i].id == id)
            return &n->peers[i];
    return NULL;
}

int book_put(struct rnode *n, uint32_t id, const char *host, uint16_t port, int *changed,
             struct ferry_err *err)
{
    *changed = 0;
    if (id == 0 || host == NULL || host[0] == '\0' || port == 0 ||
        strlen(host) >= sizeof n->peers[0].host)
        return ferry_err_set(err, FERRY_EINVAL, "node %u needs an id, a host and a port", id);
    struct rnode_peer *p = book_find(n, id);
    if (p != NULL && strcmp(p->host, host) == 0 && p->port == port)
        return 0;
    if (p != NULL && p->configured)
        return ferry_err_set(err, FERRY_EINVAL,
                             "node %u is in cluster_membership at %s:%u, not %s:%u", id, p->host,
                             p->port, host, port);
    if (p == NULL) {
        if (n->n_peers == RNODE_BOOK_MAX)
            return ferry_err_set(err, FERRY_ELIMIT, "the address book holds at most %d nodes",
                                 RNODE_BOOK_MAX);
        p = &n->peers[n->n_peers++];
        memset(p, 0, sizeof *p);
        p->id = id;
    }
    snprintf(p->host, sizeof p->host, "%s", host);
    p->port = port;
    *changed = 1;
    return 0;
}

void book_drop(struct rnode *n, uint32_t id)
{
    struct rnode_peer *p = book_find(n, id);
    if (p == NULL || p->configured)
        return;
    if (p->linked && n->transport_up)
        rtransport_remove_member(&n->transport, id);
    *p = n->peers[--n->n_peers];
}

static char *book_path(const struct rnode *n, const char *suffix)
{
    size_t len = strlen(n->log_dir) + sizeof(BOOK_FILE) + strlen(suffix) + 2;
    char *path = ferry_malloc(len);
    if (path != NULL)
        snprintf(path, len, "%s/%s%s", n->log_dir, BOOK_FILE, suffix);
    return path;
}

int book_load(struct rnode *n, struct ferry_err *err)
{
    char *path = book_path(n, "");
    if (path == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "out of memory");
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        int e = errno;
        ferry_free(path);
        if (e == ENOENT)
            return 0;
        return ferry_err_set(err, FERRY_EIO, "cannot read the address book %s/%s: %s", n->log_dir,
                             BOOK_FILE, strerror(e));
    }
    char line[512];
    unsigned lineno = 0;
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f) != NULL) {
        lineno++;
        if (line[0] == '#' || line[0] == '\n')
            continue;
        unsigned id = 0, port = 0;
        char host[256];
        int changed;
        if (sscanf(line, "%u %255s %u", &id, host, &port) != 3 || id == 0 || port == 0 ||
            port > 65535) {
            rc = ferry_err_set(err, FERRY_ECORRUPT, "%s line %u is not 'id host port'", path,
                               lineno);
            break;
        }
        if (id == n->self_id)
            continue;
        struct rnode_peer *p = book_find(n, id);
        if (p != NULL && p->configured)
            continue; /* cluster_membership wins */
        rc = book_put(n, id, host, (uint16_t)port, &changed, err);
    }
    fclose(f);
    ferry_free(path);
    return rc;
}

int book_save(struct rnode *n, struct ferry_err *err)
{
    char *path = book_path(n, "");
    char *tmp = book_path(n, ".tmp");
    int rc = 0;
    if (path == NULL || tmp == NULL) {
        rc = ferry_err_set(err, FERRY_ENOMEM, "out of memory");
        goto out;
    }
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        rc = ferry_err_set(err, FERRY_EIO, "cannot write %s: %s", tmp, strerror(errno));
        goto out;
    }
    fprintf(f, "# Ferry address book: members added online (id host port)\n");
    for (uint32_t i = 0; i < n->n_peers; i++)
        if (!n->peers[i].configured && n->peers[i].id != n->self_id)
            fprintf(f, "%u %s %u\n", n->peers[i].id, n->peers[i].host, n->peers[i].port);
    int bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    if (bad || rename(tmp, path) != 0) {
        if (!bad)
            e = errno;
        unlink(tmp);
        rc = ferry_err_set(err, FERRY_EIO, "cannot write the address book %s: %s", path,
                           strerror(e));
        goto out;
    }
    int dfd = open(n->log_dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        if (fsync(dfd) != 0)
            rc = ferry_err_set(err, FERRY_EIO, "cannot sync %s: %s", n->log_dir, strerror(errno));
        close(dfd);
    }
out:
    ferry_free(path);
    ferry_free(tmp);
    return rc;
}

void book_send(struct rnode *n, uint32_t to)
{
    struct buf b;
    buf_init(&b);
    int rc = buf_append_u8(&b, BOOK_TAG);
    uint16_t count = 0;
    for (uint32_t i = 0; i < n->n_peers; i++)
        count += n->peers[i].port != 0;
    rc = rc ? rc : buf_append_u16(&b, count);
    for (uint32_t i = 0; i < n->n_peers && rc == 0; i++) {
        const struct rnode_peer *p = &n->peers[i];
        if (p->port == 0)
            continue;
        size_t len = strlen(p->host);
        rc = buf_append_u32(&b, p->id);
        rc = rc ? rc : buf_append_u16(&b, p->port);
        rc = rc ? rc : buf_append_u16(&b, (uint16_t)len);
        rc = rc ? rc : buf_append(&b, p->host, len);
    }
    if (rc == 0)
        (void)rtransport_send(&n->transport, to, b.data, b.len);
    buf_free(&b);
}

void book_broadcast(struct rnode *n)
{
    if (!n->transport_up)
        return;
    for (uint32_t i = 0; i < n->n_peers; i++)
        if (n->peers[i].linked)
            book_send(n, n->peers[i].id);
}

void book_recv(struct rnode *n, uint32_t from, const uint8_t *p, size_t len)
{
    struct rnode_peer got[RNODE_BOOK_MAX];
    size_t off = 3;
    uint16_t count = len >= 3 ? get_u16(p + 1) : 0;
    int ok = len >= 3 && count <= RNODE_BOOK_MAX;
    for (uint16_t i = 0; ok && i < count; i++) {
        if (len - off < 8) {
            ok = 0;
            break;
        }
        got[i].id = get_u32(p + off);
        got[i].port = get_u16(p + off + 4);
        size_t hl = get_u16(p + off + 6);
        off += 8;
        if (len - off < hl || hl == 0 || hl >= sizeof got[i].host || memchr(p + off, 0, hl)) {
            ok = 0;
            break;
        }
        memcpy(got[i].host, p + off, hl);
        got[i].host[hl] = '\0';
        off += hl;
    }
    if (!ok || off != len) {
        log_warn("raft", "dropped a malformed address book from node %u", from);
        return;
    }
    int any = 0;
    for (uint16_t i = 0; i < count; i++) {
        struct rnode_peer *have = book_find(n, got[i].id);
        if (got[i].id == n->self_id || (have != NULL && have->configured))
            continue;
        int changed = 0;
        struct ferry_err err;
        if (book_put(n, got[i].id, got[i].host, got[i].port, &changed, &err) != 0) {
            log_warn("raft", "address book from node %u: %s", from, err.msg);
            continue;
        }
        if (changed) {
            log_info("raft", "learned node %u at %s:%u from node %u", got[i].id, got[i].host,
                     got[i].port, from);
            have = book_find(n, got[i].id);
            if (have->linked && n->transport_up) { /* its address changed: dial the new one */
                rtransport_remove_member(&n->transport, have->id);
                have->linked = 0;
            }
            any = 1;
        }
    }
    if (!any)
        return;
    struct ferry_err err;
    if (book_save(n, &err) != 0)
        log_warn("raft", "%s", err.msg);
    links_sync(n);
}

void links_sync(struct rnode *n)
{
    if (!n->transport_up || n->core == NULL || n->stopping)
        return;
    const struct raft_config *c = raft_config(n->core);
    n->linked_config = *c;
    /* A node outside its own configuration (joining, or removed) keeps every
     * link it knows: a leader may still need its answers. */
    int member = raft_config_find(c, n->self_id) != NULL;
    for (uint32_t i = 0; i < n->n_peers; i++) {
        struct rnode_peer *p = &n->peers[i];
        if (p->id == n->self_id)
            continue;
        int want = !member || raft_config_find(c, p->id) != NULL;
        if (want && !p->linked) {
            struct rtransport_member m = {p->id, p->host, p->port};
            struct ferry_err err;
            if (rtransport_add_member(&n->transport, &m, &err) == 0)
                p->linked = 1;
            else
                log_warn("raft", "cannot link to node %u: %s", p->id, err.msg);
        } else if (!want && p->linked) {
            rtransport_remove_member(&n->transport, p->id);
            p->linked = 0;
            log_info("raft", "node %u left the configuration; no longer linked", p->id);
        }
    }
}
