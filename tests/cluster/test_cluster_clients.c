/* test_cluster_clients.c - libferry across failovers of a real 3-node cluster:
 * a publisher with a window of publishes in flight through two SIGKILLs and a
 * SIGSTOP of the leader (every acknowledged message stored exactly once), a
 * live and a durable subscriber (no gap, no repeat), a queue consumer (every
 * item acked exactly once, redeliveries counted), and a client given one
 * address that survives that node's death.
 *
 * Links the shared libferry (only ferry_* symbols), so its internals do not
 * meet the harness's helpers of the same names. Figures are printed for the
 * record; nothing asserts on time.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "harness.h"
#include <ferry/ferry.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define N 3
static struct node nodes[N];

static int setup(void **state)
{
    (void)state;
    alarm(500);
    for (int i = 0; i < N; i++)
        node_init(&nodes[i]);
    for (int i = 0; i < N; i++)
        assert_int_equal(cluster_start_node(nodes, N, i, NULL), 0);
    return cluster_leader(nodes, N, 15000) >= 0 ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++) {
        node_signal(&nodes[i], SIGCONT);
        node_destroy(&nodes[i]);
    }
    return 0;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void servers_of(const int *which, int count, char *out, size_t cap)
{
    size_t at = 0;
    out[0] = '\0';
    for (int k = 0; k < count; k++)
        at += (size_t)snprintf(out + at, cap - at, "%s127.0.0.1:%u", k ? "," : "",
                               nodes[which[k]].port);
}

static ferry_client_t *client_for(const char *servers, uint32_t window)
{
    ferry_options_t o;
    ferry_options_init(&o);
    o.servers = servers;
    o.window = window;
    o.connect_timeout_ms = 500;
    o.request_timeout_ms = 60000;
    o.reconnect_timeout_ms = 60000;
    if (harness_tls()) {
        o.tls = 1;
        o.tls_ca = harness_cert("ca.pem");
    }
    ferry_client_t *c = NULL;
    assert_int_equal(ferry_client_create(&c, &o), 0);
    if (ferry_client_connect(c) != 0)
        fail_msg("connect: %s", ferry_client_errmsg(c));
    return c;
}

static ferry_client_t *client_all(uint32_t window)
{
    int all[N] = {0, 1, 2};
    char servers[128];
    servers_of(all, N, servers, sizeof servers);
    return client_for(servers, window);
}

/* SIGKILL the leader, wait for another to serve, restart the dead one. */
static void kill_leader_and_restart(const char *why)
{
    int leader = cluster_leader(nodes, N, 15000);
    assert_true(leader >= 0);
    uint64_t t0 = now_ms();
    node_signal(&nodes[leader], SIGKILL);
    node_wait(&nodes[leader], 5000);
    struct node others[N - 1];
    int idx[N - 1], k = 0;
    for (int i = 0; i < N; i++)
        if (i != leader) {
            idx[k] = i;
            others[k++] = nodes[i];
        }
    int next = cluster_leader(others, N - 1, 15000);
    assert_true(next >= 0);
    fprintf(stderr, "%s: node %d killed, node %d serving %llu ms later\n", why, leader + 1,
            idx[next] + 1, (unsigned long long)(now_ms() - t0));
    assert_int_equal(cluster_start_node(nodes, N, leader, NULL), 0);
}

/* SIGSTOP the leader until another serves and, if progress is given, until
 * it has moved on by `by` (the client left the silent node by keepalive),
 * then SIGCONT it. */
static void pause_leader(atomic_int *progress, int by)
{
    int leader = cluster_leader(nodes, N, 15000);
    assert_true(leader >= 0);
    uint64_t t0 = now_ms();
    node_signal(&nodes[leader], SIGSTOP);
    int next = -1;
    for (int t = 0; t < 15000 && next < 0; t += 10) {
        for (int i = 0; i < N; i++)
            if (i != leader && node_serving(&nodes[i]))
                next = i;
        if (next < 0)
            sleep_ms(10);
    }
    assert_true(next >= 0);
    fprintf(stderr, "pause: node %d stopped, node %d serving %llu ms later\n", leader + 1,
            next + 1, (unsigned long long)(now_ms() - t0));
    if (progress != NULL) {
        int from = atomic_load(progress);
        for (int t = 0; t < 30000 && atomic_load(progress) < from + by; t += 10)
            sleep_ms(10);
        fprintf(stderr, "pause: %d more acknowledged %llu ms after the SIGSTOP, the old leader "
                        "still stopped\n",
                atomic_load(progress) - from, (unsigned long long)(now_ms() - t0));
        assert_true(atomic_load(progress) >= from + by);
    }
    node_signal(&nodes[leader], SIGCONT);
}

/* Read channel `name` from event id 1 to its last id; counts[number]++ for
 * each payload "<number>" below max, *foreign for anything else. */
static void read_back(const char *name, int max, uint8_t *counts, int *foreign, uint64_t *events)
{
    ferry_client_t *c = client_all(16);
    ferry_info_t info;
    if (ferry_info(c, name, &info) != 0)
        fail_msg("info: %s", ferry_client_errmsg(c));
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.start = FERRY_START_FROM;
    o.from_id = 1;
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_subscribe(c, name, &o, &s), 0);
    uint64_t last = 0;
    *events = 0;
    while (last < info.last_id) {
        ferry_message_t *m = NULL;
        int rc = ferry_sub_next(s, &m, 20000);
        if (rc != 0)
            fail_msg("read-back stopped at event %llu of %llu: %s", (unsigned long long)last,
                     (unsigned long long)info.last_id, ferry_client_errmsg(c));
        char text[32] = "";
        memcpy(text, m->data, m->len < sizeof text - 1 ? m->len : sizeof text - 1);
        char *end = NULL;
        long v = strtol(text, &end, 10);
        if (end != text && *end == '\0' && v >= 0 && v < max) {
            if (counts[v] < 255)
                counts[v]++;
        } else {
            (*foreign)++;
        }
        last = m->id;
        (*events)++;
        ferry_message_free(m);
    }
    ferry_unsubscribe(s);
    ferry_client_close(c);
}

/* ---- a publisher through two SIGKILLs and a SIGSTOP of the leader ---- */

#define PUBS 12000

struct publisher {
    ferry_client_t *c;
    int8_t outcome[PUBS]; /* 0 pending, 1 acknowledged, -1 failed */
    atomic_int acked, failed, done;
    pthread_t thread;
};

struct pub_arg {
    struct publisher *p;
    int n;
};
static struct pub_arg pub_args[PUBS];

static void on_published(ferry_client_t *c, int status, uint64_t id, const char *msg, void *arg)
{
    (void)c, (void)id;
    struct pub_arg *a = arg;
    if (status == 0) {
        a->p->outcome[a->n] = 1;
        atomic_fetch_add(&a->p->acked, 1);
    } else {
        a->p->outcome[a->n] = -1;
        if (atomic_fetch_add(&a->p->failed, 1) < 5)
            fprintf(stderr, "publish %d failed: %s\n", a->n, msg);
    }
}

static void *publisher_main(void *arg)
{
    struct publisher *p = arg;
    for (int i = 0; i < PUBS; i++) {
        char text[16];
        int len = snprintf(text, sizeof text, "%d", i);
        pub_args[i].p = p;
        pub_args[i].n = i;
        int rc = ferry_publish_async(p->c, "fo", text, (size_t)len, 0, on_published, &pub_args[i]);
        if (rc != 0) {
            p->outcome[i] = -1;
            atomic_fetch_add(&p->failed, 1);
            fprintf(stderr, "publish %d not queued: %s\n", i, ferry_client_errmsg(p->c));
        }
    }
    ferry_drain(p->c, 60000);
    atomic_store(&p->done, 1);
    return NULL;
}

static void wait_acked(struct publisher *p, int n)
{
    for (int t = 0; t < 60000 && atomic_load(&p->acked) + atomic_load(&p->failed) < n &&
                    !atomic_load(&p->done);
         t += 5)
        sleep_ms(5);
}

static void test_publisher_through_kills_and_a_pause(void **state)
{
    (void)state;
    struct publisher *p = calloc(1, sizeof *p);
    p->c = client_all(128);
    assert_int_equal(pthread_create(&p->thread, NULL, publisher_main, p), 0);
    wait_acked(p, 2000);
    kill_leader_and_restart("publisher, first kill");
    wait_acked(p, 5000);
    kill_leader_and_restart("publisher, second kill");
    wait_acked(p, 8000);
    pause_leader(&p->acked, 500);
    pthread_join(p->thread, NULL);
    ferry_client_stats_t st;
    assert_int_equal(ferry_client_stats(p->c, &st), 0);
    ferry_client_close(p->c);

    uint8_t *counts = calloc(PUBS, 1);
    int foreign = 0;
    uint64_t events = 0;
    read_back("fo", PUBS, counts, &foreign, &events);
    int acked = 0, failed = 0, pending = 0, missing = 0, twice = 0, failed_present = 0;
    for (int i = 0; i < PUBS; i++) {
        acked += p->outcome[i] == 1;
        failed += p->outcome[i] == -1;
        pending += p->outcome[i] == 0;
        if (p->outcome[i] == 1 && counts[i] == 0)
            missing++;
        if (counts[i] > 1)
            twice++;
        if (p->outcome[i] == -1 && counts[i] == 1)
            failed_present++;
    }
    fprintf(stderr,
            "publisher: %d acknowledged, %d failed (%d of them stored), %d pending; %llu events "
            "stored; missing %d, stored twice %d, foreign %d; client: %llu connects, %llu "
            "resent, %llu duplicates recognised\n",
            acked, failed, failed_present, pending, (unsigned long long)events, missing, twice,
            foreign, (unsigned long long)st.connects, (unsigned long long)st.resent,
            (unsigned long long)st.duplicates);
    assert_int_equal(pending, 0);
    assert_int_equal(missing, 0);
    assert_int_equal(twice, 0);
    assert_int_equal(foreign, 0);
    assert_int_equal(events, (uint64_t)(acked + failed_present));
    assert_true(st.connects >= 3); /* it did fail over */
    free(counts);
    free(p);
}

/* ---- subscribers ---- */

#define EVENTS 600

struct reader {
    ferry_client_t *c;
    ferry_sub_t *live, *durable;
    uint64_t live_ids[EVENTS + 16], durable_ids[EVENTS + 16];
    atomic_int nlive, ndurable;
    pthread_t thread;
    atomic_int stop;
};

static void *reader_main(void *arg)
{
    struct reader *r = arg;
    while (!atomic_load(&r->stop) &&
           (atomic_load(&r->nlive) < EVENTS || atomic_load(&r->ndurable) < EVENTS)) {
        ferry_message_t *m = NULL;
        if (atomic_load(&r->nlive) < EVENTS && ferry_sub_next(r->live, &m, 20) == 0) {
            int k = atomic_load(&r->nlive);
            if (k < EVENTS + 16)
                r->live_ids[k] = m->id;
            atomic_store(&r->nlive, k + 1);
            ferry_message_free(m);
        }
        if (atomic_load(&r->ndurable) < EVENTS && ferry_sub_next(r->durable, &m, 20) == 0) {
            int k = atomic_load(&r->ndurable);
            if (k < EVENTS + 16)
                r->durable_ids[k] = m->id;
            atomic_store(&r->ndurable, k + 1);
            ferry_ack(r->durable, m->id, FERRY_NOWAIT); /* cumulative; a lost one is harmless */
            ferry_message_free(m);
        }
    }
    return NULL;
}

static void publish_numbers(ferry_client_t *c, const char *name, int from, int to)
{
    for (int i = from; i < to; i++) {
        char text[16];
        int len = snprintf(text, sizeof text, "%d", i);
        if (ferry_publish_async(c, name, text, (size_t)len, 0, NULL, NULL) != 0)
            fail_msg("publish: %s", ferry_client_errmsg(c));
    }
    assert_int_equal(ferry_drain(c, 60000), 0);
}

static void check_sequence(const char *what, const uint64_t *ids, int n)
{
    int gaps = 0, repeats = 0;
    for (int i = 1; i < n; i++) {
        gaps += ids[i] > ids[i - 1] + 1;
        repeats += ids[i] <= ids[i - 1];
    }
    fprintf(stderr, "%s: %d events, ids %llu..%llu, %d gaps, %d repeats\n", what, n,
            (unsigned long long)ids[0], (unsigned long long)ids[n - 1], gaps, repeats);
    assert_int_equal(n, EVENTS);
    assert_int_equal(gaps, 0);
    assert_int_equal(repeats, 0);
    assert_int_equal(ids[n - 1] - ids[0] + 1, (uint64_t)EVENTS);
}

static void test_subscribers_see_no_gap_and_no_repeat(void **state)
{
    (void)state;
    ferry_client_t *pub = client_all(64);
    assert_int_equal(ferry_create(pub, FERRY_CHANNEL, "ev", NULL), 0);
    struct reader *r = calloc(1, sizeof *r);
    r->c = client_all(64);
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.start = FERRY_START_NEW;
    assert_int_equal(ferry_subscribe(r->c, "ev", &o, &r->live), 0);
    o.start = FERRY_START_DURABLE;
    o.durable = "d1";
    o.window = 64;
    assert_int_equal(ferry_subscribe(r->c, "ev", &o, &r->durable), 0);
    assert_int_equal(pthread_create(&r->thread, NULL, reader_main, r), 0);

    publish_numbers(pub, "ev", 0, EVENTS / 2);
    kill_leader_and_restart("subscribers");
    publish_numbers(pub, "ev", EVENTS / 2, EVENTS);
    for (int t = 0; t < 60000 && (atomic_load(&r->nlive) < EVENTS ||
                                  atomic_load(&r->ndurable) < EVENTS);
         t += 10)
        sleep_ms(10);
    atomic_store(&r->stop, 1);
    pthread_join(r->thread, NULL);
    ferry_client_stats_t st;
    ferry_client_stats(r->c, &st);
    fprintf(stderr, "subscribers' client: %llu connects, %llu resubscribed, %llu events dropped "
            "as already delivered\n",
            (unsigned long long)st.connects, (unsigned long long)st.resubscribed,
            (unsigned long long)st.dropped_events);
    check_sequence("live subscription", r->live_ids, atomic_load(&r->nlive));
    check_sequence("durable subscription", r->durable_ids, atomic_load(&r->ndurable));
    assert_true(st.resubscribed >= 2 || st.connects == 1);
    ferry_client_close(r->c);
    ferry_client_close(pub);
    free(r);
}

/* ---- a queue consumer ---- */

#define ITEMS 400

static void test_consumer_acks_every_item_once(void **state)
{
    (void)state;
    ferry_client_t *pub = client_all(64);
    for (int i = 0; i < ITEMS; i++) {
        char text[16];
        int len = snprintf(text, sizeof text, "%d", i);
        assert_int_equal(ferry_push_async(pub, "work", text, (size_t)len, NULL, NULL), 0);
    }
    assert_int_equal(ferry_drain(pub, 60000), 0);
    ferry_client_close(pub);

    ferry_client_t *c = client_all(64);
    ferry_sub_options_t o;
    ferry_sub_options_init(&o);
    o.window = 16;
    ferry_sub_t *s = NULL;
    assert_int_equal(ferry_consume(c, "work", &o, &s), 0);
    uint8_t acked[ITEMS] = {0}, seen[ITEMS] = {0};
    int nacked = 0, redelivered = 0, ack_failures = 0, killed = 0;
    uint64_t t0 = now_ms();
    while (nacked < ITEMS && now_ms() - t0 < 120000) {
        if (!killed && nacked >= ITEMS / 4) {
            kill_leader_and_restart("consumer");
            killed = 1;
        }
        ferry_message_t *m = NULL;
        if (ferry_sub_next(s, &m, 1000) != 0)
            continue;
        char text[16] = "";
        memcpy(text, m->data, m->len < sizeof text - 1 ? m->len : sizeof text - 1);
        int n = atoi(text);
        assert_true(n >= 0 && n < ITEMS);
        assert_true(m->delivery_count >= 1);
        if (seen[n]) {
            redelivered++;
            assert_true(m->delivery_count > 1); /* a redelivery says so */
        }
        seen[n] = 1;
        if (ferry_ack(s, m->id, 0) == 0) {
            assert_int_equal(acked[n], 0); /* never acknowledged twice */
            acked[n] = 1;
            nacked++;
        } else {
            ack_failures++; /* the item comes back */
        }
        ferry_message_free(m);
    }
    fprintf(stderr, "consumer: %d of %d items acknowledged, %d redeliveries, %d acks failed\n",
            nacked, ITEMS, redelivered, ack_failures);
    assert_int_equal(nacked, ITEMS);
    ferry_info_t info;
    assert_int_equal(ferry_info(c, "work", &info), 0);
    assert_int_equal(info.count, 0);
    ferry_client_close(c);
}

/* ---- one address ---- */

static void test_client_given_one_address_survives_its_death(void **state)
{
    (void)state;
    int leader = cluster_leader(nodes, N, 15000);
    assert_true(leader >= 0);
    int one[1] = {leader};
    char servers[64];
    servers_of(one, 1, servers, sizeof servers);
    ferry_client_t *c = client_for(servers, 16);
    uint64_t id = 0;
    assert_int_equal(ferry_publish(c, "solo", "before", 6, 0, &id), 0);
    node_signal(&nodes[leader], SIGKILL);
    node_wait(&nodes[leader], 5000);
    /* The client knows the other nodes from HELLO_OK. */
    if (ferry_publish(c, "solo", "after", 5, 0, &id) != 0)
        fail_msg("publish after the death of the only configured node: %s",
                 ferry_client_errmsg(c));
    ferry_server_info_t si;
    assert_int_equal(ferry_client_server_info(c, &si), 0);
    fprintf(stderr, "one address: node %d died; now connected to %s (node %llu)\n", leader + 1,
            si.address, (unsigned long long)si.node_id);
    assert_string_not_equal(si.address, servers);
    assert_int_equal(id, 2);
    if (harness_tls()) { /* the failover went to a TLS session too */
        char v[32] = "";
        assert_true(si.node_id >= 1 && si.node_id <= N);
        assert_int_equal(node_status(&nodes[si.node_id - 1], "tls_sessions", v, sizeof v), 0);
        assert_true(strtoull(v, NULL, 10) >= 1);
        assert_int_equal(node_status(&nodes[si.node_id - 1], "links_tls", v, sizeof v), 0);
        assert_string_equal(v, "yes");
    }
    ferry_client_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_publisher_through_kills_and_a_pause, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_subscribers_see_no_gap_and_no_repeat, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_consumer_acks_every_item_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_given_one_address_survives_its_death, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
