/* The web service's Kafka edge: one thread reading every SPEC topic and its
 * .DLT from the beginning into the event store, and publishing each event to
 * the live streams. It assigns partitions by hand instead of joining a
 * consumer group, so it never takes partitions from anyone, commits
 * nothing, and starts over from the beginning after a restart (the store
 * is memory only). Topics and partitions that appear later (a real cluster
 * where a service creates its topic after we started) are picked up by a
 * metadata check every few seconds, which doubles as the readiness probe. */
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/bus.h"
#include "tidings/log.h"
#include "web/web_service.h"

#define META_INTERVAL_MS 5000
#define META_RETRY_MS    1000
#define META_TIMEOUT_MS  3000
#define META_FRESH_MS    15000 /* readiness: metadata at most this old */
#define POLL_MS          100

typedef struct assigned {
    char *topic;
    int32_t partition;
} assigned_t;

struct web_reader {
    const td_config_t *cfg;
    web_ctx_t *ctx;
    rd_kafka_t *rk;
    pthread_t thread;
    bool started;
    atomic_bool stop;
    char **wanted; /* full names of the SPEC topics and their .DLT */
    size_t wanted_cnt;
    assigned_t *parts; /* touched by the reader thread only */
    size_t part_cnt;
    pthread_mutex_t lock; /* guards the readiness fields below */
    int64_t meta_ok_ms;   /* monotonic time of the last good metadata, 0 = never */
    size_t topics_seen;
    char why[256];
};

static bool is_assigned(const web_reader_t *rd, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < rd->part_cnt; i++)
        if (rd->parts[i].partition == partition && !strcmp(rd->parts[i].topic, topic)) return true;
    return false;
}

/* Assigns, from the beginning, every partition of a wanted topic that is
 * not assigned yet. 0 when the metadata was read. */
static int refresh(web_reader_t *rd)
{
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(rd->rk, 1, NULL, &md, META_TIMEOUT_MS);
    if (kerr) {
        pthread_mutex_lock(&rd->lock);
        snprintf(rd->why, sizeof(rd->why), "cannot read Kafka metadata from %s: %s",
                 rd->cfg->brokers, rd_kafka_err2str(kerr));
        pthread_mutex_unlock(&rd->lock);
        return TD_EAGAIN;
    }
    rd_kafka_topic_partition_list_t *add = rd_kafka_topic_partition_list_new(16);
    size_t seen = 0;
    for (int t = 0; t < md->topic_cnt; t++) {
        const rd_kafka_metadata_topic_t *mt = &md->topics[t];
        bool wanted = false;
        for (size_t w = 0; w < rd->wanted_cnt && !wanted; w++)
            wanted = !strcmp(rd->wanted[w], mt->topic);
        if (!wanted || mt->err) continue;
        seen++;
        for (int p = 0; p < mt->partition_cnt; p++) {
            int32_t id = mt->partitions[p].id;
            if (is_assigned(rd, mt->topic, id)) continue;
            rd_kafka_topic_partition_list_add(add, mt->topic, id)->offset =
                RD_KAFKA_OFFSET_BEGINNING;
        }
    }
    int rc = 0;
    if (add->cnt) {
        rd_kafka_error_t *error = rd_kafka_incremental_assign(rd->rk, add);
        if (error) {
            td_warn("web: cannot assign %d partitions: %s", add->cnt, rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            rc = TD_EAGAIN;
        } else {
            rd->parts =
                td_realloc(rd->parts, (rd->part_cnt + (size_t)add->cnt) * sizeof(*rd->parts));
            for (int i = 0; i < add->cnt; i++) {
                rd->parts[rd->part_cnt].topic = td_strdup(add->elems[i].topic);
                rd->parts[rd->part_cnt].partition = add->elems[i].partition;
                rd->part_cnt++;
            }
            td_info("web: reading %d more partitions (%zu in all, %zu topics)", add->cnt,
                    rd->part_cnt, seen);
        }
    }
    rd_kafka_topic_partition_list_destroy(add);
    rd_kafka_metadata_destroy(md);
    pthread_mutex_lock(&rd->lock);
    if (!rc) {
        rd->meta_ok_ms = td_mono_ms();
        rd->topics_seen = seen;
        rd->why[0] = '\0';
    } else {
        snprintf(rd->why, sizeof(rd->why), "cannot assign the topics' partitions");
    }
    pthread_mutex_unlock(&rd->lock);
    return rc;
}

/* Runs under the store lock: hands the event to every live stream. */
static void publish(void *arg, uint64_t seq, const char *json, const web_vis_t *vis)
{
    web_ctx_t *ctx = arg;
    char id[32];
    snprintf(id, sizeof(id), "%llu", (unsigned long long)seq);
    /* Each stream's filter (routes.c) lets through what its viewer may see. */
    td_sse_publish_tagged(ctx->hub, "*", vis, "event", id, json);
}

static void *reader_main(void *arg)
{
    web_reader_t *rd = arg;
    int64_t next_meta = 0;
    while (!atomic_load(&rd->stop)) {
        int64_t now = td_mono_ms();
        if (now >= next_meta)
            next_meta = now + (refresh(rd) == 0 ? META_INTERVAL_MS : META_RETRY_MS);
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rd->rk, POLL_MS);
        if (!msg) continue;
        if (msg->err) {
            if (msg->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                td_debug("web: consumer: %s", rd_kafka_message_errstr(msg));
        } else {
            td_record_t *rec = td_record_from_kafka(msg);
            web_store_add(rd->ctx->store, rec, publish, rd->ctx);
            td_record_free(rec);
        }
        rd_kafka_message_destroy(msg);
    }
    return NULL;
}

web_reader_t *web_reader_start(const td_config_t *cfg, web_ctx_t *ctx, char *errstr, size_t errlen)
{
    char err[512], num[32], group[64], uuid[TD_UUID_LEN + 1];
    web_reader_t *rd = td_calloc(1, sizeof(*rd));
    rd->cfg = cfg;
    rd->ctx = ctx;
    pthread_mutex_init(&rd->lock, NULL);
    snprintf(rd->why, sizeof(rd->why), "no Kafka metadata yet");
    for (size_t i = 0; td_topics[i].name; i++) {
        rd->wanted = td_realloc(rd->wanted, (rd->wanted_cnt + 2) * sizeof(*rd->wanted));
        char *full = td_topic_name(cfg, td_topics[i].name);
        rd->wanted[rd->wanted_cnt++] = full;
        rd->wanted[rd->wanted_cnt++] = td_asprintf("%s.DLT", full);
    }

    rd_kafka_conf_t *conf = td_kafka_conf(cfg, errstr, errlen);
    if (!conf) goto fail;
    /* librdkafka wants a group id even for manual assignment; a fresh one
     * keeps this reader apart, and nothing is ever committed. */
    td_uuid_new(uuid);
    snprintf(group, sizeof(group), "tidings-web-%s", uuid);
    snprintf(num, sizeof(num), "%d", cfg->fetch_wait_ms > 0 ? cfg->fetch_wait_ms : 1);
    if (td_kafka_set(conf, "group.id", group, errstr, errlen) ||
        td_kafka_set(conf, "enable.auto.commit", "false", errstr, errlen) ||
        td_kafka_set(conf, "enable.auto.offset.store", "false", errstr, errlen) ||
        td_kafka_set(conf, "auto.offset.reset", "earliest", errstr, errlen) ||
        td_kafka_set(conf, "fetch.wait.max.ms", num, errstr, errlen)) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    rd->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rd->rk) {
        rd_kafka_conf_destroy(conf);
        td_errf(errstr, errlen, TD_EINVAL, "cannot create a Kafka consumer: %s", err);
        goto fail;
    }
    rd_kafka_poll_set_consumer(rd->rk);
    if (pthread_create(&rd->thread, NULL, reader_main, rd) != 0) {
        td_errf(errstr, errlen, TD_EIO, "cannot start the topic reader thread");
        goto fail;
    }
    rd->started = true;
    return rd;
fail:
    web_reader_stop(rd);
    return NULL;
}

bool web_reader_ready(void *arg, char *why, size_t whylen)
{
    web_reader_t *rd = arg;
    pthread_mutex_lock(&rd->lock);
    bool ok = rd->meta_ok_ms && td_mono_ms() - rd->meta_ok_ms <= META_FRESH_MS;
    if (!ok) snprintf(why, whylen, "%s", rd->why[0] ? rd->why : "Kafka metadata is stale");
    pthread_mutex_unlock(&rd->lock);
    return ok;
}

void web_reader_stop(web_reader_t *rd)
{
    if (!rd) return;
    atomic_store(&rd->stop, true);
    if (rd->started) pthread_join(rd->thread, NULL);
    if (rd->rk) {
        rd_kafka_consumer_close(rd->rk);
        rd_kafka_destroy(rd->rk);
    }
    for (size_t i = 0; i < rd->part_cnt; i++) free(rd->parts[i].topic);
    free(rd->parts);
    for (size_t i = 0; i < rd->wanted_cnt; i++) free(rd->wanted[i]);
    free(rd->wanted);
    pthread_mutex_destroy(&rd->lock);
    free(rd);
}
