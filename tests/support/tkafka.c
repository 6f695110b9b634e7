/* Kafka helpers for tests: an embedded broker, reading a whole topic with a
 * throw-away consumer that bypasses every tidings component (so a test sees
 * what really is on the topic), and producing one record directly (to play
 * a misbehaving producer or a redelivery). */
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/bus.h"
#include "tidings/log.h"
#include "tsupport.h"

td_broker_t *ts_broker(const td_config_t *cfg)
{
    char err[512];
    td_broker_t *broker = td_broker_start(cfg, 3, err, sizeof(err));
    if (!broker) {
        fprintf(stderr, "ts_broker: %s\n", err);
        abort();
    }
    return broker;
}

static rd_kafka_conf_t *plain_conf(const char *brokers)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, NULL, 0);
    rd_kafka_conf_set(conf, "client.id", "tidings-test", NULL, 0);
    return conf;
}

static int cmp_rec(const void *a, const void *b)
{
    const td_record_t *x = *(td_record_t *const *)a, *y = *(td_record_t *const *)b;
    if (x->partition != y->partition) return x->partition < y->partition ? -1 : 1;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

ts_records_t ts_read_topic(const char *brokers, const char *topic, size_t want, int idle_ms,
                           int timeout_ms)
{
    ts_records_t out = {NULL, 0};
    size_t cap = 0;
    char err[512], group[64];
    rd_kafka_conf_t *conf = plain_conf(brokers);
    /* No group coordination is used (partitions are assigned by hand),
     * but a consumer handle wants a group id. */
    snprintf(group, sizeof(group), "ts-read-%lld", (long long)td_mono_ms());
    rd_kafka_conf_set(conf, "group.id", group, NULL, 0);
    rd_kafka_conf_set(conf, "enable.auto.commit", "false", NULL, 0);
    rd_kafka_conf_set(conf, "fetch.wait.max.ms", "1", NULL, 0);
    rd_kafka_conf_set(conf, "enable.partition.eof", "true", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "ts_read_topic: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return out;
    }
    int64_t deadline = td_mono_ms() + timeout_ms;

    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    const struct rd_kafka_metadata *md = NULL;
    int parts = 0;
    while (td_mono_ms() < deadline) {
        if (rd_kafka_metadata(rk, 0, rkt, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            if (md->topic_cnt == 1 && !md->topics[0].err) parts = md->topics[0].partition_cnt;
            rd_kafka_metadata_destroy(md);
            if (parts > 0) break;
        }
        td_sleep_ms(50);
    }
    rd_kafka_topic_destroy(rkt);
    if (parts == 0) {
        fprintf(stderr, "ts_read_topic: no metadata for %s\n", topic);
        goto out;
    }

    /* Each partition is read at least up to its end as of now (its high
     * watermark), whatever the pauses between fetches: a machine slowed
     * down can take longer than idle_ms between two fetches, and a read
     * that ended on quiet alone then missed records that were there. */
    int64_t *high = td_calloc((size_t)parts, sizeof(*high));
    bool *at_end = td_calloc((size_t)parts, sizeof(*at_end));
    int ends = 0;
    for (int p = 0; p < parts; p++) {
        int64_t lo = 0, hi = 0;
        if (rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, 5000) ==
                RD_KAFKA_RESP_ERR_NO_ERROR &&
            hi > lo)
            high[p] = hi;
        else
            at_end[p] = true, ends++;
    }
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(parts);
    for (int p = 0; p < parts; p++)
        rd_kafka_topic_partition_list_add(l, topic, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
    rd_kafka_assign(rk, l);
    rd_kafka_topic_partition_list_destroy(l);

    int64_t last_new = td_mono_ms();
    while (td_mono_ms() < deadline) {
        if (out.cnt >= want && ends == parts && td_mono_ms() - last_new >= idle_ms) break;
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 20);
        if (!msg) continue;
        int p = msg->partition;
        bool ours = p >= 0 && p < parts;
        if (!msg->err) {
            if (out.cnt == cap)
                out.recs = td_realloc(out.recs, (cap = cap ? cap * 2 : 64) * sizeof(*out.recs));
            out.recs[out.cnt++] = td_record_from_kafka(msg);
            last_new = td_mono_ms();
            if (ours && !at_end[p] && msg->offset + 1 >= high[p]) at_end[p] = true, ends++;
        } else if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* Past the watermark's offset, also when it was a marker. */
            if (ours && !at_end[p] && msg->offset >= high[p]) at_end[p] = true, ends++;
        } else {
            fprintf(stderr, "ts_read_topic: %s\n", rd_kafka_message_errstr(msg));
        }
        rd_kafka_message_destroy(msg);
    }
    free(high);
    free(at_end);
    if (out.cnt) qsort(out.recs, out.cnt, sizeof(*out.recs), cmp_rec);

out:
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return out;
}

void ts_records_free(ts_records_t *r)
{
    for (size_t i = 0; i < r->cnt; i++) td_record_free(r->recs[i]);
    free(r->recs);
    r->recs = NULL;
    r->cnt = 0;
}

static void produce_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    (void)opaque;
    *(rd_kafka_resp_err_t *)msg->_private = msg->err;
}

int ts_produce(const char *brokers, const td_record_t *rec)
{
    char err[512];
    rd_kafka_conf_t *conf = plain_conf(brokers);
    /* The same partitioner as the relay, so a key lands where it would. */
    rd_kafka_conf_set(conf, "partitioner", "murmur2_random", NULL, 0);
    rd_kafka_conf_set(conf, "linger.ms", "0", NULL, 0);
    rd_kafka_conf_set_dr_msg_cb(conf, produce_dr_cb);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "ts_produce: %s\n", err);
        rd_kafka_conf_destroy(conf);
        return TD_EIO;
    }
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(rec->header_cnt);
    for (size_t i = 0; i < rec->header_cnt; i++)
        rd_kafka_header_add(hdrs, rec->headers[i].name, -1, rec->headers[i].value,
                            rec->headers[i].value ? (ssize_t)rec->headers[i].len : 0);
    rd_kafka_resp_err_t dr = RD_KAFKA_RESP_ERR__IN_PROGRESS;
    rd_kafka_resp_err_t e = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(rec->topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(rec->key, rec->key_len), RD_KAFKA_V_VALUE(rec->value, rec->value_len),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(&dr), RD_KAFKA_V_END);
    if (e) {
        rd_kafka_headers_destroy(hdrs);
        fprintf(stderr, "ts_produce: %s\n", rd_kafka_err2str(e));
        rd_kafka_destroy(rk);
        return TD_EIO;
    }
    rd_kafka_flush(rk, 30000);
    rd_kafka_destroy(rk);
    if (dr != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, "ts_produce: delivery failed: %s\n", rd_kafka_err2str(dr));
        return TD_EIO;
    }
    return 0;
}
