/* snapshot.c - compaction after a snapshot, and InstallSnapshot in chunks.
 *
 * The core asks for a snapshot every snapshot_threshold applied entries; when
 * the driver reports it saved, the log is compacted up to the snapshot index
 * minus snapshot_trailing, so followers slightly behind still get entries.
 *
 * A member that needs compacted entries gets the snapshot in chunks of
 * snapshot_chunk_bytes, one chunk in flight: the follower answers each with
 * the next offset it wants, so a lost or duplicated chunk costs one resend
 * and a large state never sits in one message. The follower stores chunks as
 * they come and installs the snapshot when the last one arrives; if it has
 * an entry with the snapshot's index and term it keeps the log after it
 * (dissertation §5.3), otherwise it discards the whole log.
 */
#include <string.h>

#include "raft/core/core.h"
#include "util/alloc.h"

void snapshot_saved(struct raft *r, uint64_t index, uint64_t size)
{
    r->snapshot_pending = false;
    if (index <= r->snap.index || index > r->applied || index < r->log.offset)
        return;
    struct raft_snapshot_meta meta;
    meta.index = index;
    meta.term = rlog_term(&r->log, index);
    meta.size = size;
    config_at(r, index, &meta.config);
    r->snap = meta;
    r->applied_bytes = 0;
    for (uint64_t i = index + 1; i <= r->applied; i++)
        r->applied_bytes += rlog_get(&r->log, i)->len;
    uint64_t trail = r->o.snapshot_trailing;
    uint64_t c = index > trail ? index - trail : 0;
    if (r->o.snapshot_bytes > 0 && c < r->log.offset)
        c = r->log.offset;
    /* The entries kept behind the snapshot hold at most a quarter of
     * snapshot_bytes, so the log in memory stays bounded. */
    if (r->o.snapshot_bytes > 0) {
        uint64_t kept = 0;
        for (uint64_t i = c + 1; i <= index; i++)
            kept += rlog_get(&r->log, i)->len;
        while (c < index && kept > r->o.snapshot_bytes / 4) {
            c++;
            kept -= rlog_get(&r->log, c)->len;
        }
    }
    if (c > r->log.offset) {
        rlog_compact(r, c);
        r->up->flags |= RAFT_UPDATE_COMPACT;
        r->up->compact_to = c;
    }
    if (r->role != RAFT_LEADER)
        return;
    /* Chunks of the older snapshot queued earlier in this step must not go
     * out: the driver now holds only the new one. */
    struct raft_update *up = r->up;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < up->n_msgs; i++) {
        if (up->msgs[i].type == RAFT_MSG_SNAPSHOT && up->msgs[i].u.snapshot.index != index)
            continue;
        up->msgs[kept++] = up->msgs[i];
    }
    up->n_msgs = kept;
    /* Members receiving an older snapshot start over with this one. */
    for (uint32_t i = 0; i < r->config.n; i++) {
        struct progress *pr = &r->prs[i];
        if (pr->state == PR_SNAPSHOT && pr->snap_index != index)
            send_snapshot(r, pr);
    }
}

void send_snapshot(struct raft *r, struct progress *pr)
{
    if (pr->state != PR_SNAPSHOT || pr->snap_index != r->snap.index) {
        pr->state = PR_SNAPSHOT;
        pr->snap_index = r->snap.index;
        pr->snap_offset = 0;
        pr->infl_head = 0;
        pr->infl_count = 0;
        pr->infl_bytes = 0;
    }
    uint64_t size = r->snap.size;
    uint64_t off = pr->snap_offset <= size ? pr->snap_offset : 0;
    uint64_t len = size - off;
    if (len > r->o.snapshot_chunk_bytes)
        len = r->o.snapshot_chunk_bytes;
    struct raft_msg *m = msg_new(r, RAFT_MSG_SNAPSHOT, pr->id);
    if (m == NULL)
        return;
    struct raft_msg_snapshot *s = &m->u.snapshot;
    s->index = r->snap.index;
    s->term = r->snap.term;
    s->config = r->snap.config;
    s->size = size;
    s->offset = off;
    s->len = (uint32_t)len;
    s->done = off + len == size;
    s->data = NULL;
    pr->sent_ms = r->now;
}

static void snapshot_reply(struct raft *r, uint64_t to, uint64_t index, bool done, uint64_t offset)
{
    struct raft_msg *m = msg_new(r, RAFT_MSG_SNAPSHOT_RESP, to);
    if (m == NULL)
        return;
    m->u.snapshot_resp.index = index;
    m->u.snapshot_resp.done = done;
    m->u.snapshot_resp.offset = offset;
}

static void install(struct raft *r, const struct raft_msg_snapshot *s)
{
    struct raft_update *up = r->up;
    bool keep = rlog_term(&r->log, s->index) == s->term && s->index <= rlog_last(&r->log);
    if (keep) {
        rlog_compact(r, s->index);
    } else {
        rlog_reset(r, s->index, s->term);
        r->durable = s->index;
        r->dirty_from = 0;
    }
    if (r->durable < s->index)
        r->durable = s->index;
    r->snap.index = s->index;
    r->snap.term = s->term;
    r->snap.config = s->config;
    r->snap.size = s->size;
    r->snapshot_pending = false;
    config_refresh(r);
    advance_commit(r, s->index);
    r->applied = s->index;
    r->applied_bytes = 0;
    if (r->verified < s->index)
        r->verified = s->index;
    up->flags |= RAFT_UPDATE_INSTALL;
    up->install = r->snap;
    up->install_keep_log = keep;
    memset(&r->recv, 0, sizeof(r->recv));
}

static int store_chunk(struct raft *r, const struct raft_msg_snapshot *s)
{
    struct raft_update *up = r->up;
    if (s->len > up->chunk_cap) {
        uint8_t *b = ferry_realloc(up->chunk_buf, s->len);
        if (b == NULL)
            return FERRY_ENOMEM;
        up->chunk_buf = b;
        up->chunk_cap = s->len;
    }
    if (s->len > 0)
        memcpy(up->chunk_buf, s->data, s->len);
    up->flags |= RAFT_UPDATE_CHUNK;
    up->chunk.index = s->index;
    up->chunk.offset = s->offset;
    up->chunk.len = s->len;
    up->chunk.data = up->chunk_buf;
    return 0;
}

void recv_snapshot(struct raft *r, const struct raft_msg *m)
{
    const struct raft_msg_snapshot *s = &m->u.snapshot;
    if (s->index <= r->commit) {
        /* Everything it covers is committed here already. */
        snapshot_reply(r, m->from, s->index, true, 0);
        return;
    }
    if (r->recv.index != s->index || r->recv.term != s->term) {
        if (s->offset != 0) {
            snapshot_reply(r, m->from, s->index, false, 0);
            return;
        }
        r->recv.index = s->index;
        r->recv.term = s->term;
        r->recv.offset = 0;
    }
    if (s->offset != r->recv.offset || (r->up->flags & RAFT_UPDATE_CHUNK)) {
        snapshot_reply(r, m->from, s->index, false, r->recv.offset);
        return;
    }
    if (store_chunk(r, s) != 0) {
        r->oom = 1;
        return;
    }
    r->recv.offset += s->len;
    if (!s->done) {
        snapshot_reply(r, m->from, s->index, false, r->recv.offset);
        return;
    }
    install(r, s);
    snapshot_reply(r, m->from, s->index, true, 0);
}

void recv_snapshot_resp(struct raft *r, const struct raft_msg *m)
{
    const struct raft_msg_snapshot_resp *s = &m->u.snapshot_resp;
    struct progress *pr = progress_of(r, m->from);
    if (pr == NULL || pr->state != PR_SNAPSHOT || s->index != pr->snap_index)
        return;
    if (s->done) {
        if (s->index > pr->match)
            pr->match = s->index;
        progress_reset(r, pr, pr->match + 1);
        maybe_commit(r);
        if (r->role == RAFT_LEADER)
            send_append(r, pr);
        return;
    }
    if (s->offset == pr->snap_offset && r->now < pr->sent_ms + r->o.heartbeat_ms)
        return; /* a duplicate answer to a chunk already re-sent */
    pr->snap_offset = s->offset;
    send_snapshot(r, pr); /* starts over if a newer snapshot replaced this one */
}
