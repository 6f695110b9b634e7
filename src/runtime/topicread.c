/* The one topic reader (see tidings/topicread.h), behind the CLI's events,
 * trace and dlt and the web service's event store. It assigns partitions by
 * hand instead of joining a consumer group: a group would need a unique id,
 * would show up next to the services' groups and could commit offsets; a
 * reader from the outside should leave no trace. The high watermarks taken
 * at open are both "now" for a live view and the end of history for a
 * reader that stops when caught up, so that a busy topic cannot keep
 * `tidings trace` reading forever. A following reader instead looks at the
 * metadata whenever it is asked to (td_topic_reader_refresh) and adds what
 * appeared since, from the beginning. */
#include "tidings/topicread.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "tidings/bus.h"
#include "tidings/catalog.h"
#include "tidings/log.h"
#include "tidings/uuid.h"

#define META_TIMEOUT_MS        10000
#define FOLLOW_META_TIMEOUT_MS 3000
#define WM_TIMEOUT_MS          5000

typedef struct kpart {
    size_t topic; /* index into tr->full / tr->short_names */
    int32_t partition;
    int64_t high; /* high watermark at open: the end of history */
    bool done;    /* caught up (until_caught_up only) */
} kpart_t;

struct td_topic_reader {
    const td_config_t *cfg;
    rd_kafka_t *rk;
    char **full;              /* full topic names */
    const char **short_names; /* borrowed from full */
    size_t topic_cnt;
    kpart_t *parts;
    size_t part_cnt;
    size_t remaining; /* partitions not yet caught up */
    bool until_caught_up;
    bool follow;
    char client[16];
};

const char *td_topic_short(const td_config_t *cfg, const char *full)
{
    size_t n = strlen(cfg->topic_prefix);
    if (n && !strncmp(full, cfg->topic_prefix, n) && full[n]) return full + n;
    return full;
}

static const rd_kafka_metadata_topic_t *meta_topic(const rd_kafka_metadata_t *md, const char *name)
{
    for (int i = 0; i < md->topic_cnt; i++)
        if (!strcmp(md->topics[i].topic, name) && !md->topics[i].err) return &md->topics[i];
    return NULL;
}

/* Adds a topic to read (once); its index. */
static size_t add_name(td_topic_reader_t *tr, const char *full)
{
    for (size_t i = 0; i < tr->topic_cnt; i++)
        if (!strcmp(tr->full[i], full)) return i; /* named twice */
    tr->full = td_realloc(tr->full, (tr->topic_cnt + 1) * sizeof(*tr->full));
    tr->short_names = td_realloc(tr->short_names, (tr->topic_cnt + 1) * sizeof(*tr->short_names));
    tr->full[tr->topic_cnt] = td_strdup(full);
    tr->short_names[tr->topic_cnt] = td_topic_short(tr->cfg, tr->full[tr->topic_cnt]);
    return tr->topic_cnt++;
}

static kpart_t *find_part(td_topic_reader_t *tr, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < tr->part_cnt; i++) {
        kpart_t *kp = &tr->parts[i];
        if (kp->partition == partition && !strcmp(tr->full[kp->topic], topic)) return kp;
    }
    return NULL;
}

static kpart_t *add_part(td_topic_reader_t *tr, size_t topic, int32_t partition)
{
    tr->parts = td_realloc(tr->parts, (tr->part_cnt + 1) * sizeof(*tr->parts));
    kpart_t *kp = &tr->parts[tr->part_cnt++];
    kp->topic = topic;
    kp->partition = partition;
    kp->high = 0;
    kp->done = false;
    return kp;
}

static void add_topic(td_topic_reader_t *tr, const rd_kafka_metadata_topic_t *mt)
{
    size_t before = tr->topic_cnt;
    size_t t = add_name(tr, mt->topic);
    if (t < before) return; /* named twice */
    for (int j = 0; j < mt->partition_cnt; j++) add_part(tr, t, mt->partitions[j].id);
}

/* Resolves the topics to read against the cluster's metadata. */
static int pick_topics(td_topic_reader_t *tr, const rd_kafka_metadata_t *md,
                       const td_topic_reader_opts_t *opts, char *errstr, size_t errlen)
{
    if (opts->topic_cnt) {
        for (size_t i = 0; i < opts->topic_cnt; i++) {
            const char *name = opts->topics[i];
            char *full = td_topic_name(tr->cfg, name);
            const rd_kafka_metadata_topic_t *mt = meta_topic(md, full);
            /* The full name is accepted too, for people who paste it. */
            size_t plen = strlen(tr->cfg->topic_prefix);
            if (!mt && plen && !strncmp(name, tr->cfg->topic_prefix, plen))
                mt = meta_topic(md, name);
            if (!mt) {
                char known[256] = "";
                for (size_t k = 0; td_topics[k].name; k++)
                    snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s",
                             k ? ", " : "", td_topics[k].name);
                td_errf(errstr, errlen, TD_ENOENT,
                        "unknown topic '%s': %s does not exist on %s (the topics are %s, "
                        "each also with .DLT)",
                        name, full, tr->cfg->brokers, known);
                free(full);
                return TD_ENOENT;
            }
            free(full);
            add_topic(tr, mt);
        }
        return 0;
    }
    for (size_t i = 0; td_topics[i].name; i++) {
        for (int dlt = 0; dlt < 2; dlt++) {
            char *short_name = td_asprintf("%s%s", td_topics[i].name, dlt ? ".DLT" : "");
            char *full = td_topic_name(tr->cfg, short_name);
            const rd_kafka_metadata_topic_t *mt = meta_topic(md, full);
            if (mt) add_topic(tr, mt);
            free(full);
            free(short_name);
        }
    }
    if (!tr->topic_cnt)
        return td_errf(errstr, errlen, TD_ENOENT,
                       "none of the tidings topics (prefix '%s') exist on %s yet",
                       tr->cfg->topic_prefix, tr->cfg->brokers);
    return 0;
}

/* The names a following reader wants: known before any metadata. */
static void want_topics(td_topic_reader_t *tr, const td_topic_reader_opts_t *opts)
{
    for (size_t i = 0; i < opts->topic_cnt; i++) {
        char *full = td_topic_name(tr->cfg, opts->topics[i]);
        add_name(tr, full);
        free(full);
    }
    for (size_t i = 0; !opts->topic_cnt && td_topics[i].name; i++) {
        char *full = td_topic_name(tr->cfg, td_topics[i].name);
        char *dlt = td_asprintf("%s.DLT", full);
        add_name(tr, full);
        add_name(tr, dlt);
        free(dlt);
        free(full);
    }
}

rd_kafka_t *td__topic_reader_consumer(const td_config_t *cfg, const char *client, int fetch_wait_ms,
                                      bool eof, char *errstr, size_t errlen)
{
    char err[512];
    rd_kafka_conf_t *conf = td_kafka_conf(cfg, errstr, errlen);
    if (!conf) return NULL;
    /* librdkafka wants a group id even for manual assignment; a fresh one
     * keeps this reader apart from everyone, and nothing is committed. */
    char uuid[TD_UUID_LEN + 1], group[64], wait[16];
    td_uuid_new(uuid);
    snprintf(group, sizeof(group), "tidings-%s-%s", client, uuid);
    snprintf(wait, sizeof(wait), "%d", fetch_wait_ms);
    if (td_kafka_set(conf, "group.id", group, errstr, errlen) ||
        td_kafka_set(conf, "enable.auto.commit", "false", errstr, errlen) ||
        td_kafka_set(conf, "enable.auto.offset.store", "false", errstr, errlen) ||
        (eof && td_kafka_set(conf, "enable.partition.eof", "true", errstr, errlen)) ||
        td_kafka_set(conf, "fetch.wait.max.ms", wait, errstr, errlen) ||
        td_kafka_set(conf, "auto.offset.reset", "earliest", errstr, errlen)) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        td_errf(errstr, errlen, TD_EINVAL, "cannot create a Kafka consumer: %s", err);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

td_topic_reader_t *td_topic_reader_open(const td_config_t *cfg, const td_topic_reader_opts_t *opts,
                                        char *errstr, size_t errlen)
{
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_partition_list_t *assign = NULL;
    td_topic_reader_t *tr = td_calloc(1, sizeof(*tr));
    tr->cfg = cfg;
    tr->follow = opts->follow;
    tr->until_caught_up = opts->until_caught_up && !opts->follow;
    snprintf(tr->client, sizeof(tr->client), "%s", opts->client ? opts->client : "reader");
    if (!cfg->brokers && !tr->follow) {
        char *file = td_data_path(cfg, "brokers");
        td_errf(errstr, errlen, TD_ENOENT,
                "no Kafka brokers known: give --brokers LIST, set TIDINGS_BROKERS, or start "
                "`tidings run` or `tidings broker` with this data dir (%s not found)",
                file);
        free(file);
        goto fail;
    }
    int wait = cfg->fetch_wait_ms > 0 ? cfg->fetch_wait_ms
                                      : (opts->fetch_wait_ms > 0 ? opts->fetch_wait_ms : 100);
    tr->rk = td__topic_reader_consumer(cfg, tr->client, wait, !opts->follow, errstr, errlen);
    if (!tr->rk) goto fail;
    if (tr->follow) {
        want_topics(tr, opts);
        return tr;
    }

    /* The embedded broker is on loopback: when it does not answer at once,
     * the brokers file is most likely left over from one that is gone. */
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(
        tr->rk, 1, NULL, &md, cfg->brokers_embedded ? META_TIMEOUT_MS / 2 : META_TIMEOUT_MS);
    if (kerr) {
        char *file = cfg->brokers_embedded ? td_data_path(cfg, "brokers") : NULL;
        td_errf(errstr, errlen, TD_EAGAIN, "cannot reach Kafka at %s: %s%s%s%s", cfg->brokers,
                rd_kafka_err2str(kerr), file ? " (the list is from " : "", file ? file : "",
                file ? "; is `tidings run` or `tidings broker` still running?)" : "");
        free(file);
        goto fail;
    }
    if (pick_topics(tr, md, opts, errstr, errlen)) goto fail;

    assign = rd_kafka_topic_partition_list_new((int)tr->part_cnt);
    for (size_t i = 0; i < tr->part_cnt; i++) {
        kpart_t *kp = &tr->parts[i];
        int64_t low = 0, high = 0;
        kerr = rd_kafka_query_watermark_offsets(tr->rk, tr->full[kp->topic], kp->partition, &low,
                                                &high, WM_TIMEOUT_MS);
        if (kerr) {
            td_errf(errstr, errlen, TD_EAGAIN, "cannot read the end of %s [%d] on %s: %s",
                    tr->full[kp->topic], (int)kp->partition, cfg->brokers, rd_kafka_err2str(kerr));
            goto fail;
        }
        kp->high = high;
        kp->done = opts->until_caught_up && (!opts->from_beginning || low >= high);
        if (kp->done) continue; /* nothing to read there */
        tr->remaining++;
        rd_kafka_topic_partition_list_add(assign, tr->full[kp->topic], kp->partition)->offset =
            opts->from_beginning ? RD_KAFKA_OFFSET_BEGINNING : high;
    }
    kerr = rd_kafka_assign(tr->rk, assign);
    if (kerr) {
        td_errf(errstr, errlen, TD_EIO, "cannot assign the partitions: %s", rd_kafka_err2str(kerr));
        goto fail;
    }
    rd_kafka_topic_partition_list_destroy(assign);
    rd_kafka_metadata_destroy(md);
    return tr;

fail:
    if (assign) rd_kafka_topic_partition_list_destroy(assign);
    if (md) rd_kafka_metadata_destroy(md);
    td_topic_reader_close(tr);
    return NULL;
}

int td_topic_reader_refresh(td_topic_reader_t *tr, char *errstr, size_t errlen)
{
    assert(tr->follow);
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(tr->rk, 1, NULL, &md, FOLLOW_META_TIMEOUT_MS);
    if (kerr)
        return td_errf(errstr, errlen, TD_EAGAIN, "cannot read Kafka metadata from %s: %s",
                       tr->cfg->brokers, rd_kafka_err2str(kerr));
    rd_kafka_topic_partition_list_t *add = rd_kafka_topic_partition_list_new(16);
    size_t seen = 0;
    for (size_t t = 0; t < tr->topic_cnt; t++) {
        const rd_kafka_metadata_topic_t *mt = meta_topic(md, tr->full[t]);
        if (!mt) continue;
        seen++;
        for (int p = 0; p < mt->partition_cnt; p++) {
            int32_t id = mt->partitions[p].id;
            if (find_part(tr, mt->topic, id)) continue;
            rd_kafka_topic_partition_list_add(add, mt->topic, id)->offset =
                RD_KAFKA_OFFSET_BEGINNING;
        }
    }
    int rc = 0;
    if (add->cnt) {
        rd_kafka_error_t *error = rd_kafka_incremental_assign(tr->rk, add);
        if (error) {
            td_warn("%s: cannot assign %d partitions: %s", tr->client, add->cnt,
                    rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            rc = td_errf(errstr, errlen, TD_EAGAIN, "cannot assign the topics' partitions");
        } else {
            for (int i = 0; i < add->cnt; i++) {
                size_t t = 0;
                while (strcmp(tr->full[t], add->elems[i].topic)) t++;
                add_part(tr, t, add->elems[i].partition);
            }
            td_info("%s: reading %d more partitions (%zu in all, %zu topics)", tr->client, add->cnt,
                    tr->part_cnt, seen);
        }
    }
    rd_kafka_topic_partition_list_destroy(add);
    rd_kafka_metadata_destroy(md);
    return rc;
}

/* Marks kp caught up and stops fetching it: records after the start
 * watermark are not part of the history asked for. */
static void part_done(td_topic_reader_t *tr, kpart_t *kp)
{
    assert(tr->until_caught_up);
    if (kp->done) return;
    assert(tr->remaining > 0);
    kp->done = true;
    tr->remaining--;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, tr->full[kp->topic], kp->partition);
    rd_kafka_pause_partitions(tr->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/* A consumer error: fatal ones end the read, a vanished topic counts as
 * caught up, the rest (connection trouble) librdkafka retries by itself. A
 * following reader only notes them: it runs as long as its service. */
static int on_error(td_topic_reader_t *tr, rd_kafka_message_t *m, char *errstr, size_t errlen)
{
    char fatal[256];
    const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : NULL;
    if (tr->follow) {
        td_debug("%s: consumer: %s", tr->client, rd_kafka_message_errstr(m));
        return 0;
    }
    if (rd_kafka_fatal_error(tr->rk, fatal, sizeof(fatal)))
        return td_errf(errstr, errlen, TD_EIO, "kafka: %s", fatal);
    if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
        m->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
        m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
        td_warn("%s [%d]: %s", topic ? topic : "?", (int)m->partition, rd_kafka_message_errstr(m));
        for (size_t i = 0; topic && tr->until_caught_up && i < tr->part_cnt; i++)
            if (!strcmp(tr->full[tr->parts[i].topic], topic)) part_done(tr, &tr->parts[i]);
        return 0;
    }
    td_warn("kafka%s%s: %s", topic ? " " : "", topic ? topic : "", rd_kafka_message_errstr(m));
    return 0;
}

int td_topic_reader_next(td_topic_reader_t *tr, int timeout_ms, td_topic_reader_msg_t *msg,
                         char *errstr, size_t errlen)
{
    int64_t deadline = td_mono_ms() + timeout_ms;
    memset(msg, 0, sizeof(*msg));
    for (;;) {
        if (tr->until_caught_up && !tr->remaining) return TD_TOPIC_READER_DONE;
        int64_t left = deadline - td_mono_ms();
        if (left < 0) return TD_EAGAIN;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(tr->rk, (int)left);
        if (!m) return TD_EAGAIN;
        kpart_t *kp = m->rkt ? find_part(tr, rd_kafka_topic_name(m->rkt), m->partition) : NULL;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* The end of a partition now is at or past its start
             * watermark, since watermarks only grow. */
            if (kp && tr->until_caught_up) part_done(tr, kp);
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err) {
            int r = on_error(tr, m, errstr, errlen);
            rd_kafka_message_destroy(m);
            if (r) return r;
            continue;
        }
        if (!kp) { /* not ours: cannot happen with manual assignment */
            rd_kafka_message_destroy(m);
            continue;
        }
        if (tr->until_caught_up && (kp->done || m->offset >= kp->high)) {
            part_done(tr, kp);
            rd_kafka_message_destroy(m);
            continue;
        }
        if (tr->until_caught_up && m->offset + 1 >= kp->high) part_done(tr, kp);
        msg->rec = td_record_from_kafka(m);
        msg->topic = tr->short_names[kp->topic];
        rd_kafka_message_destroy(m);
        msg->ev = td_event_from_record(msg->rec, msg->reason, sizeof(msg->reason));
        if (!msg->ev && !msg->reason[0]) snprintf(msg->reason, sizeof(msg->reason), "invalid");
        return 0;
    }
}

void td_topic_reader_msg_clear(td_topic_reader_msg_t *msg)
{
    td_event_free(msg->ev);
    td_record_free(msg->rec);
    memset(msg, 0, sizeof(*msg));
}

size_t td_topic_reader_partition_count(const td_topic_reader_t *tr)
{
    return tr->part_cnt;
}

size_t td_topic_reader_topic_count(const td_topic_reader_t *tr)
{
    return tr->topic_cnt;
}

void td_topic_reader_close(td_topic_reader_t *tr)
{
    if (!tr) return;
    if (tr->rk) {
        rd_kafka_consumer_close(tr->rk);
        rd_kafka_destroy(tr->rk);
    }
    for (size_t i = 0; i < tr->topic_cnt; i++) free(tr->full[i]);
    free(tr->full);
    free(tr->short_names);
    free(tr->parts);
    free(tr);
}
