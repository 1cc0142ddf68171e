/* codec.c - encoding and decoding of Raft messages (layouts in codec.h and
 * docs/raft.md). The decoder reads through a cursor that fails closed: once a
 * read runs past the end, every later read fails too, so each field needs no
 * check of its own and the final `ok && left == 0` decides. */
#include <string.h>

#include "raft/core/codec.h"
#include "util/alloc.h"

#define ENTRY_HEADER 13 /* u64 term | u8 type | u32 len */
#define CONFIG_MAX (4 + RAFT_MAX_NODES * 10)

static int put_header(struct buf *b, const struct raft_msg *m)
{
    uint8_t h[RAFT_WIRE_HEADER];
    h[0] = RAFT_WIRE_VERSION;
    h[1] = m->type;
    put_u64(h + 2, m->cluster_id);
    put_u64(h + 10, m->from);
    put_u64(h + 18, m->to);
    put_u64(h + 26, m->term);
    return buf_append(b, h, sizeof(h));
}

static int encode_body(const struct raft_msg *m, struct buf *b)
{
    int rc = 0;
    switch (m->type) {
    case RAFT_MSG_APPEND: {
        const struct raft_msg_append *a = &m->u.append;
        rc |= buf_append_u64(b, a->prev_index);
        rc |= buf_append_u64(b, a->prev_term);
        rc |= buf_append_u64(b, a->commit);
        rc |= buf_append_u32(b, a->n_entries);
        for (uint32_t i = 0; i < a->n_entries && rc == 0; i++) {
            const struct raft_entry *e = &a->entries[i];
            rc |= buf_append_u64(b, e->term);
            rc |= buf_append_u8(b, e->type);
            rc |= buf_append_u32(b, e->len);
            if (e->len > 0)
                rc |= buf_append(b, e->data, e->len);
        }
        break;
    }
    case RAFT_MSG_APPEND_RESP: {
        const struct raft_msg_append_resp *a = &m->u.append_resp;
        rc |= buf_append_u8(b, a->success);
        rc |= buf_append_u64(b, a->index);
        rc |= buf_append_u64(b, a->last_index);
        rc |= buf_append_u64(b, a->conflict_term);
        rc |= buf_append_u64(b, a->conflict_index);
        break;
    }
    case RAFT_MSG_VOTE:
        rc |= buf_append_u8(b, m->u.vote.pre_vote);
        rc |= buf_append_u8(b, m->u.vote.transfer);
        rc |= buf_append_u64(b, m->u.vote.last_index);
        rc |= buf_append_u64(b, m->u.vote.last_term);
        break;
    case RAFT_MSG_VOTE_RESP:
        rc |= buf_append_u8(b, m->u.vote_resp.pre_vote);
        rc |= buf_append_u8(b, m->u.vote_resp.granted);
        break;
    case RAFT_MSG_SNAPSHOT: {
        const struct raft_msg_snapshot *s = &m->u.snapshot;
        uint8_t cfg[CONFIG_MAX];
        size_t clen;
        if (raft_config_encode(&s->config, cfg, sizeof(cfg), &clen) != 0)
            return FERRY_EINVAL;
        rc |= buf_append_u64(b, s->index);
        rc |= buf_append_u64(b, s->term);
        rc |= buf_append_u32(b, (uint32_t)clen);
        rc |= buf_append(b, cfg, clen);
        rc |= buf_append_u64(b, s->size);
        rc |= buf_append_u64(b, s->offset);
        rc |= buf_append_u8(b, s->done);
        rc |= buf_append_u32(b, s->len);
        if (s->len > 0)
            rc |= buf_append(b, s->data, s->len);
        break;
    }
    case RAFT_MSG_SNAPSHOT_RESP:
        rc |= buf_append_u64(b, m->u.snapshot_resp.index);
        rc |= buf_append_u8(b, m->u.snapshot_resp.done);
        rc |= buf_append_u64(b, m->u.snapshot_resp.offset);
        break;
    case RAFT_MSG_TIMEOUT_NOW:
        break;
    default:
        return FERRY_EINVAL;
    }
    return rc == 0 ? 0 : FERRY_ENOMEM;
}

int raft_msg_encode(const struct raft_msg *m, struct buf *out)
{
    if (m->type == RAFT_MSG_SNAPSHOT && m->u.snapshot.len > 0 && m->u.snapshot.data == NULL)
        return FERRY_EINVAL;
    size_t mark = out->len;
    int rc = put_header(out, m);
    if (rc == 0)
        rc = encode_body(m, out);
    if (rc != 0)
        out->len = mark;
    return rc;
}

struct cursor {
    const uint8_t *p;
    size_t left;
    int ok;
};

static const uint8_t *take(struct cursor *c, size_t n)
{
    if (!c->ok || c->left < n) {
        c->ok = 0;
        return NULL;
    }
    const uint8_t *p = c->p;
    c->p += n;
    c->left -= n;
    return p;
}

static uint8_t rd8(struct cursor *c)
{
    const uint8_t *p = take(c, 1);
    return p ? p[0] : 0;
}
static uint32_t rd32(struct cursor *c)
{
    const uint8_t *p = take(c, 4);
    return p ? get_u32(p) : 0;
}
static uint64_t rd64(struct cursor *c)
{
    const uint8_t *p = take(c, 8);
    return p ? get_u64(p) : 0;
}
static uint8_t rdflag(struct cursor *c)
{
    uint8_t v = rd8(c);
    if (v > 1)
        c->ok = 0;
    return v;
}

static int decode_append(struct cursor *c, struct raft_msg *m, struct ferry_err *err)
{
    struct raft_msg_append *a = &m->u.append;
    a->prev_index = rd64(c);
    a->prev_term = rd64(c);
    a->commit = rd64(c);
    a->n_entries = rd32(c);
    if (!c->ok)
        return ferry_err_set(err, FERRY_EPROTO, "raft append: truncated header");
    if (a->n_entries > c->left / ENTRY_HEADER)
        return ferry_err_set(err, FERRY_EPROTO, "raft append: %u entries cannot fit in %zu bytes",
                             a->n_entries, c->left);
    if (a->n_entries == 0)
        return 0;
    a->entries = ferry_calloc(a->n_entries, sizeof(*a->entries));
    if (a->entries == NULL)
        return ferry_err_set(err, FERRY_ENOMEM, "raft append: out of memory");
    for (uint32_t i = 0; i < a->n_entries; i++) {
        struct raft_entry *e = &a->entries[i];
        e->index = a->prev_index + 1 + i;
        e->term = rd64(c);
        e->type = rd8(c);
        e->len = rd32(c);
        if (e->type < RAFT_ENTRY_NORMAL || e->type > RAFT_ENTRY_CONFIG)
            c->ok = 0;
        e->data = (uint8_t *)take(c, e->len);
        if (!c->ok) {
            ferry_free(a->entries);
            a->entries = NULL;
            return ferry_err_set(err, FERRY_EPROTO, "raft append: entry %u is malformed", i);
        }
        if (e->len == 0)
            e->data = NULL;
    }
    return 0;
}

static int decode_snapshot(struct cursor *c, struct raft_msg *m, struct ferry_err *err)
{
    struct raft_msg_snapshot *s = &m->u.snapshot;
    s->index = rd64(c);
    s->term = rd64(c);
    uint32_t clen = rd32(c);
    const uint8_t *cfg = take(c, clen);
    if (!c->ok || raft_config_decode(cfg, clen, &s->config) != 0)
        return ferry_err_set(err, FERRY_EPROTO, "raft snapshot: malformed configuration");
    s->size = rd64(c);
    s->offset = rd64(c);
    s->done = rdflag(c);
    s->len = rd32(c);
    s->data = take(c, s->len);
    if (!c->ok)
        return ferry_err_set(err, FERRY_EPROTO, "raft snapshot: truncated chunk");
    if (s->offset > s->size || s->len > s->size - s->offset ||
        s->done != (s->offset + s->len == s->size))
        return ferry_err_set(err, FERRY_EPROTO,
                             "raft snapshot: chunk [%llu, +%u) does not fit a %llu-byte snapshot",
                             (unsigned long long)s->offset, s->len, (unsigned long long)s->size);
    if (s->len == 0)
        s->data = NULL;
    return 0;
}

int raft_msg_decode(const uint8_t *p, size_t len, struct raft_msg *m, struct ferry_err *err)
{
    memset(m, 0, sizeof(*m));
    struct cursor c = {p, len, 1};
    if (len < RAFT_WIRE_HEADER)
        return ferry_err_set(err, FERRY_EPROTO, "raft message: %zu bytes is shorter than a header",
                             len);
    uint8_t version = rd8(&c);
    if (version != RAFT_WIRE_VERSION)
        return ferry_err_set(err, FERRY_EPROTO, "raft message: unsupported version %u", version);
    m->type = rd8(&c);
    m->cluster_id = rd64(&c);
    m->from = rd64(&c);
    m->to = rd64(&c);
    m->term = rd64(&c);
    int rc = 0;
    switch (m->type) {
    case RAFT_MSG_APPEND:
        rc = decode_append(&c, m, err);
        break;
    case RAFT_MSG_APPEND_RESP:
        m->u.append_resp.success = rdflag(&c);
        m->u.append_resp.index = rd64(&c);
        m->u.append_resp.last_index = rd64(&c);
        m->u.append_resp.conflict_term = rd64(&c);
        m->u.append_resp.conflict_index = rd64(&c);
        break;
    case RAFT_MSG_VOTE:
        m->u.vote.pre_vote = rdflag(&c);
        m->u.vote.transfer = rdflag(&c);
        m->u.vote.last_index = rd64(&c);
        m->u.vote.last_term = rd64(&c);
        break;
    case RAFT_MSG_VOTE_RESP:
        m->u.vote_resp.pre_vote = rdflag(&c);
        m->u.vote_resp.granted = rdflag(&c);
        break;
    case RAFT_MSG_SNAPSHOT:
        rc = decode_snapshot(&c, m, err);
        break;
    case RAFT_MSG_SNAPSHOT_RESP:
        m->u.snapshot_resp.index = rd64(&c);
        m->u.snapshot_resp.done = rdflag(&c);
        m->u.snapshot_resp.offset = rd64(&c);
        break;
    case RAFT_MSG_TIMEOUT_NOW:
        break;
    default:
        return ferry_err_set(err, FERRY_EPROTO, "raft message: unknown type %u", m->type);
    }
    if (rc != 0)
        return rc;
    if (!c.ok || c.left != 0) {
        raft_msg_release(m);
        return ferry_err_set(err, FERRY_EPROTO, "raft %s: %s", raft_msg_type_name(m->type),
                             c.ok ? "trailing bytes" : "truncated or invalid field");
    }
    return 0;
}

void raft_msg_release(struct raft_msg *m)
{
    if (m->type == RAFT_MSG_APPEND) {
        ferry_free(m->u.append.entries);
        m->u.append.entries = NULL;
        m->u.append.n_entries = 0;
    }
}
