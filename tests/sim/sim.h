/* sim.h - the deterministic cluster simulator for the Raft core (ferry-sim).
 *
 * One process runs several cores over a simulated network, disk and clock,
 * every choice drawn from one seeded generator, so a seed replays a run bit
 * for bit. sim.c drives the cluster (events, faults, workload); check.c holds
 * the safety checkers run after every step; main.c is the command line.
 */
#ifndef FERRY_SIM_H
#define FERRY_SIM_H

#include <stdbool.h>
#include <stdint.h>

#include "raft/core/raft.h"
#include "util/map.h"
#include "util/rand.h"

#define SIM_MAX_NODES 9
#define SIM_CLUSTER_ID 0xfe77ull
#define SIM_HIST_MS 25
#define SIM_HIST_BUCKETS 400

enum sim_layout { SIM_3 = 0, SIM_5 = 1, SIM_2W = 2 };

/* An entry as stored on the simulated disk (payload owned). */
struct dentry {
    uint64_t index;
    uint64_t term;
    uint8_t type;
    uint32_t len;
    uint8_t *data;
};

struct dwrite {
    uint64_t id;
    uint64_t from;
    uint32_t n;
    struct dentry *es;
};

struct snode {
    uint64_t id;
    bool exists;  /* created (a founding member or added) */
    bool alive;   /* running */
    bool retired; /* removed from the cluster for good */
    uint64_t incarnation;
    struct raft *r;
    struct raft_update up;
    uint64_t clock_off; /* node-local time = global time + clock_off */
    uint64_t timer_gen;
    struct raft_config bootstrap;

    /* durable state */
    uint64_t term, vote;
    struct raft_snapshot_meta snap;
    uint8_t *snap_data;
    struct dentry *log;
    uint32_t n_log, cap_log;

    /* disk writes not yet durable, in order */
    struct dwrite *pend;
    uint32_t n_pend, cap_pend;
    uint64_t next_write_id;
    uint64_t disk_free_at;

    /* snapshot being received (volatile) */
    uint8_t *rx;
    uint64_t rx_len, rx_cap, rx_index;

    /* state machine: applied through sm_last with digest sm_digest (durable) */
    uint64_t sm_last, sm_digest;

    /* checker state for this incarnation */
    uint64_t seen_commit;
    uint64_t recorded_commit;
};

struct sim_stats {
    uint64_t seeds, steps, sim_ms, proposals, commits, elections, snapshots_installed;
    uint64_t crashes, partitions, transfers, member_changes, rejects_seen;
    uint64_t peer_downs, spurious_peer_downs; /* RAFT_EV_PEER_DOWN delivered; of them spurious */
    /* leader crash to the next leader elected, during the fault phase */
    uint64_t failover_n, failover_sum, failover_max, failover_fast, failover_open;
    /* after the liveness phase the settled leader crashes on a healthy network;
     * [0]: a voter of its priority survives it, [1]: only lower priorities do */
    uint64_t clean_n[2], clean_sum[2], clean_max[2], clean_fast[2];
    uint64_t clean_hist[2][SIM_HIST_BUCKETS]; /* by SIM_HIST_MS ms; the last one is open-ended */
    /* liveness, in simulated ms */
    uint64_t first_elect_n, first_elect_sum, first_elect_max;
    uint64_t heal_elect_n, heal_elect_sum, heal_elect_max;
    uint64_t heal_commit_sum, heal_commit_max;
    uint64_t settle_sum, settle_max;
};

struct sim {
    uint64_t seed;
    int layout;
    long steps_max;
    int verbose;
    int trace;         /* keep a trace ring */
    bool no_peer_down; /* comparison runs: PEER_DOWN events are drawn but never delivered */
    uint64_t snapshot_bytes; /* > 0: raft_options.snapshot_bytes (plus seed % 1024) */

    struct rng rng;
    uint64_t now;
    uint64_t seq;
    long step;
    struct snode nodes[SIM_MAX_NODES];
    int n_nodes; /* slots in use */
    struct raft_options opts;

    /* event queue (binary heap) */
    struct sev *heap;
    uint32_t n_heap, cap_heap;

    /* network */
    uint32_t loss_pm, dup_pm, delay_min, delay_max;
    bool cut[SIM_MAX_NODES][SIM_MAX_NODES];
    /* the latest delivery scheduled from one slot to another */
    uint64_t net_last[SIM_MAX_NODES][SIM_MAX_NODES];
    bool faults; /* safety phase: faults are being injected */

    /* failover latency: the leader crashed at this time in this term */
    bool leader_crashed;
    uint64_t leader_crash_ms, leader_crash_term;

    /* workload */
    uint64_t payload_seq;
    uint64_t first_leader_ms;

    /* checker */
    struct umap leader_of_term;
    struct umap entry_at;           /* (index, term) -> struct seen_entry */
    uint64_t *tterm, *thash, *tdig; /* truth per index: committed term, hash, digest */
    uint64_t n_truth;
    uint64_t max_committed;

    char violation[512];
    char trace_ring[64][200];
    uint32_t trace_head;
    long stop_at_step; /* replay: stop after this step */
    struct sim_stats *stats;
};

/* sim.c */
int sim_run(struct sim *s, uint64_t seed, int layout, long steps, struct sim_stats *stats);
void sim_trace(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sim_fail(struct sim *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* check.c */
void check_init(struct sim *s);
void check_free(struct sim *s);
uint64_t entry_hash(uint8_t type, const uint8_t *data, uint32_t len);
uint64_t digest_mix(uint64_t d, uint64_t h);
void check_persist(struct sim *s, struct snode *n, const struct raft_update *up);
void check_apply(struct sim *s, struct snode *n, const struct raft_entry *e);
void check_role(struct sim *s, struct snode *n, const struct raft_update *up);
void check_commit(struct sim *s, struct snode *n, const struct raft_update *up);
void check_logs(struct sim *s);
uint64_t truth_digest(struct sim *s, uint64_t index, bool *known);

#endif
