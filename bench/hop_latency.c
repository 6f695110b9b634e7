/* How long one event takes over one hop of the bus: from the commit of the
 * outbox row in the producing service's database, through the relay, the
 * embedded broker and the consumer, until the consuming handler runs
 * (inside its inbox transaction). Events are sent one at a time, each only
 * after the previous one was handled, so every figure is an unloaded hop.
 * The same hop is measured twice: with the fetch wait tidings uses on the
 * embedded broker (1 ms), and briefly with librdkafka's default (500 ms),
 * because the embedded broker holds an empty fetch for the whole
 * fetch.wait.max.ms instead of answering when data arrives, so that
 * setting alone decides the latency a consumer sees.
 *
 * usage: bench_hop_latency [--brokers LIST]
 * With --brokers (or TIDINGS_BROKERS) the hop runs on that cluster instead,
 * a real Kafka that answers a fetch as soon as data arrives, with the
 * TIDINGS_KAFKA_* settings every tidings client takes; the two topics are
 * made for the run (CreateTopics, a prefix of their own) and deleted
 * after it. */
#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

#include "bench.h"
#include "tidings/bus.h"
#include "tidings/db.h"
#include "tidings/envelope.h"

#define FAST_WAIT_MS   1
#define FAST_WARMUP    50
#define FAST_EVENTS    2000
#define SLOW_WAIT_MS   500
#define SLOW_WARMUP    3
#define SLOW_EVENTS    40
#define HOP_TIMEOUT_MS 10000
#define ASSIGN_WAIT_MS 30000
#define ADMIN_WAIT_MS  30000

/* Shared between the main thread (sender) and the consumer thread (the
 * handler): the monotonic time each event number was handled at. */
typedef struct hop {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t *handled_ns; /* indexed by the event's "n" */
    size_t cap;
    int64_t handled; /* events handled so far in this run */
} hop_t;

static int on_event(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr, size_t errlen)
{
    int64_t now = bench_now_ns();
    (void)db;
    hop_t *h = ctx;
    int64_t n;
    if (td_data_int(ev->data, "n", &n, errstr, errlen) != 0) return TD_EINVAL;
    pthread_mutex_lock(&h->mu);
    if (n >= 0 && (size_t)n < h->cap && h->handled_ns[n] == 0) {
        h->handled_ns[n] = now;
        h->handled++;
    }
    pthread_cond_broadcast(&h->cv);
    pthread_mutex_unlock(&h->mu);
    return 0;
}

static const td_handler_t handlers[] = {{.type = "BenchHopEvent", .fn = on_event}};

/* Waits until event n was handled. false on timeout. */
static bool wait_handled(hop_t *h, size_t n)
{
    int64_t until = td_mono_ms() + HOP_TIMEOUT_MS;
    struct timespec ts = {.tv_sec = until / 1000, .tv_nsec = (until % 1000) * 1000000};
    pthread_mutex_lock(&h->mu);
    while (h->handled_ns[n] == 0 && td_mono_ms() < until)
        pthread_cond_timedwait(&h->cv, &h->mu, &ts);
    bool ok = h->handled_ns[n] != 0;
    pthread_mutex_unlock(&h->mu);
    return ok;
}

/* Commits one event with number n into the outbox; the time just before
 * the commit into *t0. */
static int send_one(td_db_t *pdb, const td_config_t *pcfg, const char *topic, size_t n, int64_t *t0)
{
    char key[TD_UUID_LEN + 1];
    td_uuid_new(key);
    td_event_t *ev = td_event_new("orders", "BenchHopEvent", key, json_pack("{s:I}", "n", n));
    int rc = td_db_begin(pdb);
    if (rc == 0) {
        rc = td_outbox_add(pdb, pcfg, topic, ev);
        if (rc == 0) {
            *t0 = bench_now_ns();
            rc = td_db_commit(pdb);
        } else {
            td_db_rollback(pdb);
        }
    }
    td_event_free(ev);
    return rc;
}

/* One measured run on its own topic and consumer group: warmup events,
 * then events hop latencies in ms into lat. 0 or -1 (reason printed). */
static int run_hops(td_db_t *pdb, const td_config_t *pcfg, td_db_t *cdb, const td_config_t *ccfg,
                    const char *topic, size_t warmup, size_t events, double *lat)
{
    int ret = -1;
    char err[512] = "";
    hop_t h;
    memset(&h, 0, sizeof(h));
    pthread_mutex_init(&h.mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h.cv, &ca);
    pthread_condattr_destroy(&ca);
    h.cap = warmup + events;
    h.handled_ns = td_calloc(h.cap, sizeof(*h.handled_ns));

    char *group = td_asprintf("bench-hop-%s", topic);
    const char *topics[] = {topic};
    td_consumer_opts_t opts = {.group = group,
                               .topics = topics,
                               .topic_cnt = 1,
                               .handlers = handlers,
                               .handler_cnt = TD_ARRAY_SIZE(handlers),
                               .ctx = &h,
                               .db = cdb};
    td_consumer_t *cons = td_consumer_start(ccfg, &opts, err, sizeof(err));
    if (!cons) {
        fprintf(stderr, "hop_latency: consumer: %s\n", err);
        goto out;
    }
    int64_t until = td_mono_ms() + ASSIGN_WAIT_MS;
    while (!td_consumer_assigned(cons) && td_mono_ms() < until) td_sleep_ms(5);
    if (!td_consumer_assigned(cons)) {
        fprintf(stderr, "hop_latency: consumer got no partitions within %d ms\n", ASSIGN_WAIT_MS);
        goto out;
    }

    for (size_t n = 0; n < warmup + events; n++) {
        int64_t t0 = 0;
        if (send_one(pdb, pcfg, topic, n, &t0) != 0) {
            fprintf(stderr, "hop_latency: cannot commit event %zu\n", n);
            goto out;
        }
        if (!wait_handled(&h, n)) {
            fprintf(stderr, "hop_latency: event %zu not handled within %d ms\n", n, HOP_TIMEOUT_MS);
            goto out;
        }
        if (n >= warmup) lat[n - warmup] = (double)(h.handled_ns[n] - t0) / 1e6;
    }
    ret = 0;

out:
    td_consumer_stop(cons);
    free(group);
    free(h.handled_ns);
    pthread_cond_destroy(&h.cv);
    pthread_mutex_destroy(&h.mu);
    return ret;
}

/* Creates (create) or deletes the run's topics on a real cluster, with
 * partitions and replication min(3, brokers). 0 or -1 (reason printed). */
static int real_topics(const td_config_t *cfg, char **names, size_t cnt, bool create)
{
    char err[512];
    int ret = -1;
    rd_kafka_conf_t *conf = td_kafka_conf(cfg, err, sizeof(err));
    if (!conf) {
        fprintf(stderr, "hop_latency: %s\n", err);
        return -1;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "hop_latency: %s\n", err);
        return -1;
    }
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rk, 0, NULL, &md, ADMIN_WAIT_MS);
    if (kerr) {
        fprintf(stderr, "hop_latency: cannot reach %s: %s\n", cfg->brokers, rd_kafka_err2str(kerr));
        rd_kafka_destroy(rk);
        return -1;
    }
    int repl = md->broker_cnt < 3 ? md->broker_cnt : 3;
    rd_kafka_metadata_destroy(md);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_ANY);
    rd_kafka_AdminOptions_set_operation_timeout(opts, ADMIN_WAIT_MS, err, sizeof(err));
    rd_kafka_NewTopic_t *nt[4];
    rd_kafka_DeleteTopic_t *dt[4];
    assert(cnt <= 4);
    for (size_t i = 0; i < cnt; i++) {
        if (create) {
            nt[i] = rd_kafka_NewTopic_new(names[i], cfg->partitions, repl, err, sizeof(err));
            if (repl >= 3) rd_kafka_NewTopic_set_config(nt[i], "min.insync.replicas", "2");
        } else {
            dt[i] = rd_kafka_DeleteTopic_new(names[i]);
        }
    }
    if (create)
        rd_kafka_CreateTopics(rk, nt, cnt, opts, q);
    else
        rd_kafka_DeleteTopics(rk, dt, cnt, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, ADMIN_WAIT_MS + 5000);
    if (!ev || rd_kafka_event_error(ev)) {
        fprintf(stderr, "hop_latency: %s topics: %s\n", create ? "creating" : "deleting",
                ev ? rd_kafka_event_error_string(ev) : "timed out");
    } else {
        const rd_kafka_topic_result_t **res;
        size_t rcnt = 0;
        if (create)
            res =
                rd_kafka_CreateTopics_result_topics(rd_kafka_event_CreateTopics_result(ev), &rcnt);
        else
            res =
                rd_kafka_DeleteTopics_result_topics(rd_kafka_event_DeleteTopics_result(ev), &rcnt);
        ret = 0;
        for (size_t i = 0; i < rcnt; i++) {
            if (!rd_kafka_topic_result_error(res[i])) continue;
            fprintf(stderr, "hop_latency: topic %s: %s\n", rd_kafka_topic_result_name(res[i]),
                    rd_kafka_topic_result_error_string(res[i]));
            ret = -1;
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
    for (size_t i = 0; i < cnt; i++) {
        if (create)
            rd_kafka_NewTopic_destroy(nt[i]);
        else
            rd_kafka_DeleteTopic_destroy(dt[i]);
    }
    rd_kafka_AdminOptions_destroy(opts);
    rd_kafka_queue_destroy(q);
    rd_kafka_destroy(rk);
    return ret;
}

/* Points cfg at the run's own topic prefix. */
static void use_prefix(td_config_t *cfg, const char *prefix)
{
    free(cfg->topic_prefix);
    cfg->topic_prefix = td_strdup(prefix);
}

int main(int argc, char **argv)
{
    const char *real = getenv("TIDINGS_BROKERS");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--brokers") && i + 1 < argc) {
            real = argv[++i];
        } else {
            fprintf(stderr, "usage: bench_hop_latency [--brokers LIST]\n");
            return 2;
        }
    }
    if (real && !*real) real = NULL;
    int rc = 1;
    char err[512] = "";
    td_config_t bcfg, pcfg, fast_cfg, slow_cfg;
    memset(&bcfg, 0, sizeof(bcfg));
    memset(&pcfg, 0, sizeof(pcfg));
    memset(&fast_cfg, 0, sizeof(fast_cfg));
    memset(&slow_cfg, 0, sizeof(slow_cfg));
    td_broker_t *broker = NULL;
    char prefix[96] = "";
    char *real_names[2] = {NULL, NULL};
    bool made_topics = false;
    td_db_t *pdb = NULL, *cdb = NULL;
    td_relay_t *relay = NULL;
    double *fast = td_calloc(FAST_EVENTS, sizeof(*fast));
    double *slow = td_calloc(SLOW_EVENTS, sizeof(*slow));
    bench_begin();
    char *dir = bench_tmpdir("hop");
    if (!dir) return 1;

    bench_config(&bcfg, "broker", dir, NULL, FAST_WAIT_MS);
    const char *brokers = real;
    if (!real) {
        broker = bench_broker(&bcfg);
        if (!broker) goto out;
        brokers = td_broker_bootstraps(broker);
    }
    bench_config(&pcfg, "orders", dir, brokers, FAST_WAIT_MS);
    bench_config(&fast_cfg, "bench", dir, brokers, FAST_WAIT_MS);
    bench_config(&slow_cfg, "bench", dir, brokers, SLOW_WAIT_MS);
    /* A topic per run, so the second consumer does not see the first
     * run's events; on a real cluster under a prefix of this run. */
    if (real) {
        snprintf(prefix, sizeof(prefix), "tidings-bench-%ld-%lld.", (long)getpid(),
                 (long long)td_mono_ms());
        use_prefix(&pcfg, prefix);
        use_prefix(&fast_cfg, prefix);
        use_prefix(&slow_cfg, prefix);
        real_names[0] = td_topic_name(&pcfg, "bench-hop-fast");
        real_names[1] = td_topic_name(&pcfg, "bench-hop-slow");
        if (real_topics(&pcfg, real_names, 2, true) != 0) goto out;
        made_topics = true;
    } else if (td_broker_create_topic(broker, "tidings.bench-hop-fast", bcfg.partitions) != 0 ||
               td_broker_create_topic(broker, "tidings.bench-hop-slow", bcfg.partitions) != 0) {
        goto out;
    }

    char *ppath = td_asprintf("%s/producer.db", dir), *cpath = td_asprintf("%s/consumer.db", dir);
    pdb = td_db_open(ppath, NULL, 0, err, sizeof(err));
    if (pdb) cdb = td_db_open(cpath, NULL, 0, err, sizeof(err));
    free(ppath);
    free(cpath);
    if (!pdb || !cdb) {
        fprintf(stderr, "hop_latency: database: %s\n", err);
        goto out;
    }
    relay = td_relay_start(&pcfg, pdb, err, sizeof(err));
    if (!relay) {
        fprintf(stderr, "hop_latency: relay: %s\n", err);
        goto out;
    }

    if (real)
        printf("hop_latency: outbox commit -> relay -> Kafka at %s -> consumer handler\n", brokers);
    else
        printf("hop_latency: outbox commit -> relay -> embedded broker (3) -> consumer handler\n");
    printf("  one event at a time, %d partitions, random keys; load average at start %.2f\n",
           bcfg.partitions, bench_load_start);
    if (run_hops(pdb, &pcfg, cdb, &fast_cfg, "bench-hop-fast", FAST_WARMUP, FAST_EVENTS, fast) != 0)
        goto out;
    if (run_hops(pdb, &pcfg, cdb, &slow_cfg, "bench-hop-slow", SLOW_WARMUP, SLOW_EVENTS, slow) != 0)
        goto out;

    bench_stats_t sf = bench_stats(fast, FAST_EVENTS), ss = bench_stats(slow, SLOW_EVENTS);
    double ratio = sf.median > 0 ? ss.median / sf.median : 0;
    char label_fast[64], label_slow[64];
    snprintf(label_fast, sizeof(label_fast), "fetch.wait.max.ms=%d", FAST_WAIT_MS);
    snprintf(label_slow, sizeof(label_slow), "fetch.wait.max.ms=%d (default)", SLOW_WAIT_MS);
    bench_stats_header("ms");
    bench_stats_row(label_fast, &sf);
    bench_stats_row(label_slow, &ss);
    printf("  median with %d ms wait / median with %d ms wait: %.1fx\n", SLOW_WAIT_MS, FAST_WAIT_MS,
           ratio);

    json_t *res = bench_result_new("hop_latency");
    json_object_set_new(res, "unit", json_string("ms"));
    json_object_set_new(res, "broker", json_string(real ? "kafka" : "embedded"));
    json_object_set_new(res, "fetch_wait_1ms", bench_stats_json(&sf));
    json_object_set_new(res, "fetch_wait_500ms", bench_stats_json(&ss));
    json_object_set_new(res, "median_ratio_500_vs_1", json_real(round(ratio * 10) / 10));
    bench_result_print(res);
    rc = 0;

out:
    td_relay_stop(relay, 5000);
    if (made_topics) real_topics(&pcfg, real_names, 2, false);
    free(real_names[0]);
    free(real_names[1]);
    td_db_close(cdb);
    td_db_close(pdb);
    td_broker_stop(broker);
    td_config_free(&pcfg);
    td_config_free(&fast_cfg);
    td_config_free(&slow_cfg);
    td_config_free(&bcfg);
    bench_rmtree(dir);
    free(dir);
    free(fast);
    free(slow);
    return rc;
}
