/* Throughput of the bus, in two halves measured one after the other on the
 * embedded broker:
 *  1. outbox + relay: N typical OrderCreatedEvents committed into the
 *     outbox in transactions of BATCH rows (timed alone), then a relay
 *     starts on that backlog and publishes it with its idempotent
 *     producer; its clock stops when every row is confirmed persisted and
 *     deleted (the outbox is empty).
 *  2. consumer + inbox: a new consumer group reads those N records from the
 *     beginning, in batches of what each poll returns, one unit per batch
 *     (inbox rows + the handler's own inserts), as every service consumes;
 *     timed from its first record to its last (the group join apart).
 * N stays well below what the embedded broker keeps (about 5 MiB of record
 * batches per partition, some 8,000 of these events, see bench/retention.c):
 * the benchmark topic has PARTITIONS partitions, so each holds about 4,200
 * of the N records, half its capacity whatever batch sizes the relay ends
 * up with (with the SPEC's 6 partitions 50,000 would fill them to within a
 * few percent). The program checks that none was dropped before the
 * consumer ran (low watermark 0 everywhere) and fails otherwise. */
#include <pthread.h>
#include <stdatomic.h>

#include "bench.h"
#include "tidings/bus.h"
#include "tidings/db.h"

#define N_EVENTS 50000
#define BATCH    100
/* The events are OrderCreatedEvents, which belong on the orders topic (a
 * consumer dead-letters a SPEC type found elsewhere), so the benchmark
 * uses an orders topic of its own under the prefix "bench.". */
#define TOPIC      "orders"
#define PREFIX     "bench."
#define PARTITIONS 12
#define TIMEOUT_MS 90000

static const td_migration_t consumer_migs[] = {
    {1, "CREATE TABLE seen(order_id TEXT NOT NULL, quantity INTEGER NOT NULL)"},
};

/* What the handler keeps, for the consumer's rate from its first record to
 * its last (so group join time is not counted in it). */
typedef struct cons_clock {
    atomic_llong first_ns;
    atomic_llong last_ns;
    atomic_llong handled;
} cons_clock_t;

static int on_order_created(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr,
                            size_t errlen)
{
    cons_clock_t *clk = ctx;
    const char *order_id;
    int64_t quantity;
    if (td_data_uuid(ev->data, "orderId", &order_id, errstr, errlen) != 0 ||
        td_data_int(ev->data, "quantity", &quantity, errstr, errlen) != 0)
        return TD_EINVAL;
    sqlite3_stmt *st = td_db_prepare(db, "INSERT INTO seen(order_id, quantity) VALUES(?, ?)");
    sqlite3_bind_text(st, 1, order_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, quantity);
    if (td_db_run(db, st) != 0) return TD_EAGAIN;
    int64_t now = bench_now_ns(), zero = 0;
    atomic_compare_exchange_strong(&clk->first_ns, &zero, now);
    atomic_store(&clk->last_ns, now);
    atomic_fetch_add(&clk->handled, 1);
    return 0;
}

static const td_handler_t handlers[] = {{.type = "OrderCreatedEvent", .fn = on_order_created}};

/* Sum of the high watermarks of topic's partitions into *records; -1 when
 * a partition's low watermark moved (records were dropped) or a query
 * failed. */
static int topic_records(const td_config_t *cfg, const char *topic, int partitions,
                         int64_t *records, int64_t *max_part)
{
    char err[512] = "";
    rd_kafka_conf_t *conf = td_kafka_conf(cfg, err, sizeof(err));
    if (!conf) return -1;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, "bus_throughput: %s\n", err);
        return -1;
    }
    int rc = 0;
    *records = 0;
    *max_part = 0;
    for (int p = 0; p < partitions && rc == 0; p++) {
        int64_t lo = -1, hi = -1;
        rd_kafka_resp_err_t kerr = rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 10000);
        if (kerr) {
            fprintf(stderr, "bus_throughput: watermarks of %s/%d: %s\n", topic, p,
                    rd_kafka_err2str(kerr));
            rc = -1;
        } else if (lo != 0) {
            fprintf(stderr,
                    "bus_throughput: %s/%d dropped %lld records (retention): lower N_EVENTS\n",
                    topic, p, (long long)lo);
            rc = -1;
        }
        *records += hi;
        if (hi > *max_part) *max_part = hi;
    }
    rd_kafka_destroy(rk);
    return rc;
}

int main(void)
{
    int rc = 1;
    char err[512] = "";
    td_config_t bcfg, pcfg, ccfg;
    memset(&bcfg, 0, sizeof(bcfg));
    memset(&pcfg, 0, sizeof(pcfg));
    memset(&ccfg, 0, sizeof(ccfg));
    td_broker_t *broker = NULL;
    td_db_t *pdb = NULL, *cdb = NULL;
    td_relay_t *relay = NULL;
    td_consumer_t *cons = NULL;
    char *topic = NULL;
    cons_clock_t clk;
    atomic_init(&clk.first_ns, 0);
    atomic_init(&clk.last_ns, 0);
    atomic_init(&clk.handled, 0);

    bench_begin();
    char *dir = bench_tmpdir("throughput");
    if (!dir) return 1;
    bench_config(&bcfg, "broker", dir, NULL, 1);
    broker = bench_broker(&bcfg);
    if (!broker) goto out;
    bench_config(&pcfg, "orders", dir, td_broker_bootstraps(broker), 1);
    bench_config(&ccfg, "bench", dir, td_broker_bootstraps(broker), 1);
    free(pcfg.topic_prefix);
    pcfg.topic_prefix = td_strdup(PREFIX);
    free(ccfg.topic_prefix);
    ccfg.topic_prefix = td_strdup(PREFIX);
    topic = td_topic_name(&pcfg, TOPIC);
    if (td_broker_create_topic(broker, topic, PARTITIONS) != 0) goto out;

    char *ppath = td_asprintf("%s/producer.db", dir), *cpath = td_asprintf("%s/consumer.db", dir);
    pdb = td_db_open(ppath, NULL, 0, err, sizeof(err));
    if (pdb) cdb = td_db_open(cpath, consumer_migs, TD_ARRAY_SIZE(consumer_migs), err, sizeof(err));
    free(ppath);
    free(cpath);
    if (!pdb || !cdb) {
        fprintf(stderr, "bus_throughput: database: %s\n", err);
        goto out;
    }
    td_event_t *sample = bench_order_created();
    td_record_t *srec = td_event_to_record(sample, topic);
    size_t value_bytes, header_bytes;
    size_t rec_bytes = bench_record_bytes(srec, &value_bytes, &header_bytes);
    td_record_free(srec);
    td_event_free(sample);

    printf("bus_throughput: %d OrderCreatedEvents (%zu bytes: value %zu + headers %zu + key), "
           "%d partitions; load average at start %.2f\n",
           N_EVENTS, rec_bytes, value_bytes, header_bytes, PARTITIONS, bench_load_start);

    /* ---- 1. outbox + relay ---- */
    int64_t t0 = bench_now_ns();
    for (int b = 0; b < N_EVENTS / BATCH; b++) {
        if (td_db_begin(pdb) != 0) goto out;
        for (int i = 0; i < BATCH; i++) {
            td_event_t *ev = bench_order_created();
            int arc = td_outbox_add(pdb, &pcfg, TOPIC, ev);
            td_event_free(ev);
            if (arc != 0) {
                td_db_rollback(pdb);
                fprintf(stderr, "bus_throughput: td_outbox_add failed\n");
                goto out;
            }
        }
        if (td_db_commit(pdb) != 0) {
            fprintf(stderr, "bus_throughput: commit failed\n");
            goto out;
        }
    }
    double commit_ms = bench_ms_since(t0);
    int64_t r0 = bench_now_ns();
    relay = td_relay_start(&pcfg, pdb, err, sizeof(err));
    if (!relay) {
        fprintf(stderr, "bus_throughput: relay: %s\n", err);
        goto out;
    }
    int64_t deadline = td_mono_ms() + TIMEOUT_MS;
    while (td_outbox_backlog(pdb) != 0) {
        if (td_mono_ms() >= deadline) {
            fprintf(stderr, "bus_throughput: outbox not empty after %d ms\n", TIMEOUT_MS);
            goto out;
        }
        td_sleep_ms(2);
    }
    double relay_ms = bench_ms_since(r0);

    int64_t on_topic = 0, max_part = 0;
    if (topic_records(&pcfg, topic, PARTITIONS, &on_topic, &max_part) != 0) goto out;
    if (on_topic < N_EVENTS) {
        fprintf(stderr, "bus_throughput: only %lld of %d records on the topic\n",
                (long long)on_topic, N_EVENTS);
        goto out;
    }

    /* ---- 2. consumer + inbox ---- */
    const char *topics[] = {TOPIC};
    td_consumer_opts_t opts = {.group = "bench-throughput",
                               .topics = topics,
                               .topic_cnt = 1,
                               .handlers = handlers,
                               .handler_cnt = TD_ARRAY_SIZE(handlers),
                               .ctx = &clk,
                               .db = cdb};
    int64_t c0 = bench_now_ns();
    cons = td_consumer_start(&ccfg, &opts, err, sizeof(err));
    if (!cons) {
        fprintf(stderr, "bus_throughput: consumer: %s\n", err);
        goto out;
    }
    deadline = td_mono_ms() + TIMEOUT_MS;
    while (td_consumer_processed(cons) < on_topic) {
        if (td_mono_ms() >= deadline) {
            fprintf(stderr, "bus_throughput: consumer processed %lld of %lld in %d ms\n",
                    (long long)td_consumer_processed(cons), (long long)on_topic, TIMEOUT_MS);
            goto out;
        }
        td_sleep_ms(5);
    }
    double first_ms = (double)(atomic_load(&clk.first_ns) - c0) / 1e6;
    double consume_ms = (double)(atomic_load(&clk.last_ns) - atomic_load(&clk.first_ns)) / 1e6;
    int64_t handled = atomic_load(&clk.handled);
    if (handled != N_EVENTS) {
        /* processed counts dead letters and skips too: a figure over
         * records the handler never saw would be meaningless. */
        fprintf(stderr, "bus_throughput: the handler saw %lld of %d events\n", (long long)handled,
                N_EVENTS);
        goto out;
    }

    double commit_rate = N_EVENTS / (commit_ms / 1000.0);
    double relay_rate = N_EVENTS / (relay_ms / 1000.0);
    double consume_rate = consume_ms > 0 ? (double)(handled - 1) / (consume_ms / 1000.0) : 0;
    printf("  %-46s %10s %12s\n", "", "seconds", "events/s");
    printf("  %-46s %10.2f %12.0f\n", "commit into outbox (100 per transaction)", commit_ms / 1000,
           commit_rate);
    printf("  %-46s %10.2f %12.0f\n", "backlog -> relay -> broker, confirmed + deleted",
           relay_ms / 1000, relay_rate);
    printf("  %-46s %10.2f %12.0f\n", "consumer + inbox, a unit per batch", consume_ms / 1000,
           consume_rate);
    printf("  records on the topic %lld (duplicates %lld), largest partition %lld records, none "
           "dropped; consumer's first record after %.0f ms (group join)\n",
           (long long)on_topic, (long long)(on_topic - N_EVENTS), (long long)max_part, first_ms);

    json_t *res = bench_result_new("bus_throughput");
    json_object_set_new(res, "events", json_integer(N_EVENTS));
    json_object_set_new(res, "record_bytes", json_integer((json_int_t)rec_bytes));
    json_object_set_new(res, "partitions", json_integer(PARTITIONS));
    json_object_set_new(res, "outbox_commit_per_s", json_integer((json_int_t)commit_rate));
    json_object_set_new(res, "relay_per_s", json_integer((json_int_t)relay_rate));
    json_object_set_new(res, "relay_seconds", json_real(bench_round3(relay_ms / 1000)));
    json_object_set_new(res, "consumer_inbox_per_s", json_integer((json_int_t)consume_rate));
    json_object_set_new(res, "consumer_seconds", json_real(bench_round3(consume_ms / 1000)));
    json_object_set_new(res, "consumer_first_record_ms", json_integer((json_int_t)first_ms));
    json_object_set_new(res, "duplicates", json_integer(on_topic - N_EVENTS));
    json_object_set_new(res, "largest_partition_records", json_integer(max_part));
    bench_result_print(res);
    rc = 0;

out:
    td_consumer_stop(cons);
    td_relay_stop(relay, 5000);
    td_db_close(cdb);
    td_db_close(pdb);
    td_broker_stop(broker);
    free(topic);
    td_config_free(&pcfg);
    td_config_free(&ccfg);
    td_config_free(&bcfg);
    bench_rmtree(dir);
    free(dir);
    return rc;
}
