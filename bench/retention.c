/* How many events of a typical size one partition of the embedded broker
 * keeps before it drops the oldest: librdkafka's mock cluster holds about
 * 5 MiB (or 100,000 record batches) per partition and deletes whole
 * batches from the front beyond that, whatever the topic's retention.ms
 * says. A consumer that falls further behind than this loses records (the
 * consumer logs and counts the gap). The program produces typical
 * OrderCreatedEvents (real CloudEvents headers) into a one-partition topic
 * until its log start offset moves, reading it with
 * rd_kafka_query_watermark_offsets, then keeps going a little to see the
 * steady state. Twice: one event per record batch (a quiet shop, where
 * every event is its own produce request) and batches of up to 100 (a busy
 * relay), since the per-batch overhead counts against the 5 MiB. */
#include <stdatomic.h>

#include "bench.h"
#include "tidings/bus.h"

#define CHUNK         100
#define MAX_EVENTS    400000
#define FLUSH_MS      30000
#define STEADY_FACTOR 1.5 /* keep producing to this multiple of the first drop */
#define LAG_RATE_CNT  3

typedef struct mode {
    const char *name;
    const char *topic_short;
    const char *batch_num_messages;
    const char *linger_ms;
} prod_mode_t;

typedef struct outcome {
    int64_t produced;   /* when the log start first moved */
    int64_t kept_first; /* hi - lo at that moment */
    int64_t kept_min;   /* over the checks after it */
    int64_t kept_max;
} outcome_t;

static atomic_llong delivery_errors;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (msg->err) atomic_fetch_add(&delivery_errors, 1);
}

static int run_mode(const td_config_t *cfg, const prod_mode_t *m, outcome_t *out)
{
    int ret = -1;
    char err[512] = "";
    char *topic = td_topic_name(cfg, m->topic_short);
    memset(out, 0, sizeof(*out));
    rd_kafka_conf_t *conf = td_kafka_conf(cfg, err, sizeof(err));
    if (!conf) goto fail;
    if (td_kafka_set(conf, "acks", "all", err, sizeof(err)) != 0 ||
        td_kafka_set(conf, "linger.ms", m->linger_ms, err, sizeof(err)) != 0 ||
        td_kafka_set(conf, "batch.num.messages", m->batch_num_messages, err, sizeof(err)) != 0) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }

    int64_t produced = 0, stop_at = MAX_EVENTS;
    while (produced < stop_at) {
        for (int i = 0; i < CHUNK; i++) {
            td_event_t *ev = bench_order_created();
            td_record_t *rec = td_event_to_record(ev, topic);
            rd_kafka_headers_t *hdrs = rd_kafka_headers_new(rec->header_cnt);
            for (size_t h = 0; h < rec->header_cnt; h++)
                rd_kafka_header_add(hdrs, rec->headers[h].name, -1, rec->headers[h].value,
                                    (ssize_t)rec->headers[h].len);
            rd_kafka_resp_err_t kerr;
            do {
                kerr = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(0),
                                         RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                         RD_KAFKA_V_KEY(rec->key, rec->key_len),
                                         RD_KAFKA_V_VALUE(rec->value, rec->value_len),
                                         RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
                if (kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL) rd_kafka_poll(rk, 10);
            } while (kerr == RD_KAFKA_RESP_ERR__QUEUE_FULL);
            if (kerr) rd_kafka_headers_destroy(hdrs);
            td_record_free(rec);
            td_event_free(ev);
            if (kerr) {
                snprintf(err, sizeof(err), "produce: %s", rd_kafka_err2str(kerr));
                goto done;
            }
        }
        produced += CHUNK;
        if (rd_kafka_flush(rk, FLUSH_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
            snprintf(err, sizeof(err), "records not delivered within %d ms", FLUSH_MS);
            goto done;
        }
        if (atomic_load(&delivery_errors) > 0) {
            snprintf(err, sizeof(err), "%lld delivery errors",
                     (long long)atomic_load(&delivery_errors));
            goto done;
        }
        int64_t lo = -1, hi = -1;
        rd_kafka_resp_err_t kerr = rd_kafka_query_watermark_offsets(rk, topic, 0, &lo, &hi, 10000);
        if (kerr) {
            snprintf(err, sizeof(err), "watermarks: %s", rd_kafka_err2str(kerr));
            goto done;
        }
        if (lo > 0) {
            int64_t kept = hi - lo;
            if (out->produced == 0) {
                out->produced = produced;
                out->kept_first = out->kept_min = out->kept_max = kept;
                stop_at = (int64_t)((double)produced * STEADY_FACTOR);
            }
            if (kept < out->kept_min) out->kept_min = kept;
            if (kept > out->kept_max) out->kept_max = kept;
        }
    }
    if (out->produced == 0)
        snprintf(err, sizeof(err), "nothing dropped after %d events", MAX_EVENTS);
    else
        ret = 0;

done:
    rd_kafka_destroy(rk);
fail:
    if (ret != 0) fprintf(stderr, "retention (%s): %s\n", m->name, err);
    free(topic);
    return ret;
}

int main(void)
{
    int rc = 1;
    td_config_t cfg;
    memset(&cfg, 0, sizeof(cfg));
    td_broker_t *broker = NULL;
    static const prod_mode_t modes[] = {
        {"one event per batch", "bench-retention-single", "1", "0"},
        {"batches of up to 100", "bench-retention-batched", "100", "20"},
    };
    outcome_t outs[TD_ARRAY_SIZE(modes)];
    atomic_init(&delivery_errors, 0);

    bench_begin();
    char *dir = bench_tmpdir("retention");
    if (!dir) return 1;
    bench_config(&cfg, "broker", dir, NULL, 1);
    broker = bench_broker(&cfg);
    if (!broker) goto out;
    free(cfg.brokers);
    cfg.brokers = td_strdup(td_broker_bootstraps(broker));
    for (size_t i = 0; i < TD_ARRAY_SIZE(modes); i++) {
        char *topic = td_topic_name(&cfg, modes[i].topic_short);
        int crc = td_broker_create_topic(broker, topic, 1);
        free(topic);
        if (crc != 0) goto out;
    }

    td_event_t *sample = bench_order_created();
    td_record_t *srec = td_event_to_record(sample, "tidings.orders");
    size_t value_bytes, header_bytes;
    size_t rec_bytes = bench_record_bytes(srec, &value_bytes, &header_bytes);
    td_record_free(srec);
    td_event_free(sample);
    printf("retention: OrderCreatedEvents of %zu bytes (value %zu + %zu of headers + key) into one "
           "partition until the oldest are dropped; load average at start %.2f\n",
           rec_bytes, value_bytes, header_bytes, bench_load_start);

    for (size_t i = 0; i < TD_ARRAY_SIZE(modes); i++)
        if (run_mode(&cfg, &modes[i], &outs[i]) != 0) goto out;

    printf("  %-22s %14s %16s %18s %14s\n", "", "first drop at", "events kept", "5 MiB / kept",
           "per topic");
    for (size_t i = 0; i < TD_ARRAY_SIZE(modes); i++) {
        const outcome_t *o = &outs[i];
        char kept[48];
        if (o->kept_min == o->kept_max)
            snprintf(kept, sizeof(kept), "%lld", (long long)o->kept_min);
        else
            snprintf(kept, sizeof(kept), "%lld..%lld", (long long)o->kept_min,
                     (long long)o->kept_max);
        printf("  %-22s %14lld %16s %12.0f bytes %14lld\n", modes[i].name, (long long)o->produced,
               kept, 5.0 * 1024 * 1024 / (double)o->kept_min,
               (long long)o->kept_min * cfg.partitions);
    }
    printf("  (per topic: x %d partitions, with keys spread evenly)\n", cfg.partitions);
    /* What the quiet-shop figure means for a consumer that stops. */
    static const int rates[LAG_RATE_CNT] = {10, 100, 1000};
    printf("  a consumer of a %d-partition topic may stop for about (one event per batch):",
           cfg.partitions);
    for (int r = 0; r < LAG_RATE_CNT; r++) {
        double s = (double)outs[0].kept_min * cfg.partitions / rates[r];
        printf("%s %.0f s at %d events/s", r ? "," : "", s, rates[r]);
    }
    printf("\n");

    json_t *res = bench_result_new("retention");
    json_object_set_new(res, "record_bytes", json_integer((json_int_t)rec_bytes));
    json_object_set_new(res, "value_bytes", json_integer((json_int_t)value_bytes));
    json_object_set_new(res, "header_bytes", json_integer((json_int_t)header_bytes));
    json_object_set_new(res, "partitions_per_topic", json_integer(cfg.partitions));
    for (size_t i = 0; i < TD_ARRAY_SIZE(modes); i++) {
        const outcome_t *o = &outs[i];
        json_object_set_new(res, i == 0 ? "one_per_batch" : "batched_100",
                            json_pack("{s:I, s:I, s:I}", "first_drop_at", (json_int_t)o->produced,
                                      "kept_min", (json_int_t)o->kept_min, "kept_max",
                                      (json_int_t)o->kept_max));
    }
    bench_result_print(res);
    rc = 0;

out:
    td_broker_stop(broker);
    td_config_free(&cfg);
    bench_rmtree(dir);
    free(dir);
    return rc;
}
