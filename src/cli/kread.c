/* The shared reading of topics behind `tidings events` and `tidings trace`.
 * It assigns partitions by hand instead of joining a consumer group: a
 * group would need a unique id, would show up next to the services' groups
 * and could commit offsets; a reader from the outside should leave no
 * trace. The high watermarks taken at open are both "now" for a live view
 * and the end of history for a reader that stops when caught up, so that a
 * busy topic cannot keep `tidings trace` reading forever. */
#include "kread.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <librdkafka/rdkafka.h>

#include "tidings/bus.h"
#include "tidings/log.h"
#include "tidings/uuid.h"

#define KREAD_META_TIMEOUT_MS 10000
#define KREAD_WM_TIMEOUT_MS   5000

typedef struct kpart {
    size_t topic; /* index into kr->full / kr->short_names */
    int32_t partition;
    int64_t high; /* high watermark at open: the end of history */
    bool done;    /* caught up (until_caught_up only) */
} kpart_t;

struct kread {
    const td_config_t *cfg;
    rd_kafka_t *rk;
    char **full;              /* full topic names */
    const char **short_names; /* borrowed from full */
    size_t topic_cnt;
    kpart_t *parts;
    size_t part_cnt;
    size_t remaining; /* partitions not yet caught up */
    bool until_caught_up;
};

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

void kread_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

bool kread_interrupted(void)
{
    return interrupted != 0;
}

const char *kread_short_topic(const td_config_t *cfg, const char *full)
{
    size_t n = strlen(cfg->topic_prefix);
    if (n && !strncmp(full, cfg->topic_prefix, n) && full[n]) return full + n;
    return full;
}

/* Length of the valid UTF-8 sequence at p (at most avail bytes), 0 when the
 * bytes there are not one (overlong forms and surrogates included). */
static size_t utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    size_t n;
    unsigned cp;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (avail < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))) return 0;
    if (cp >= 0xd800 && cp <= 0xdfff) return 0;
    return n;
}

char *kread_printable(const void *data, size_t len, size_t max)
{
    const unsigned char *p = data;
    size_t cap = len * 4 + 8, o = 0;
    char *out = td_malloc(cap);
    for (size_t i = 0; i < len;) {
        if (max && o >= max) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        size_t n = utf8_seq(p + i, len - i);
        if (n == 1 && p[i] >= 0x20 && p[i] != 0x7f) {
            out[o++] = (char)p[i];
        } else if (n > 1) {
            memcpy(out + o, p + i, n);
            o += n;
        } else if (p[i] == '\n') {
            memcpy(out + o, "\\n", 2);
            o += 2;
        } else if (p[i] == '\t') {
            memcpy(out + o, "\\t", 2);
            o += 2;
        } else {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", p[i]);
            n = 1;
        }
        i += n ? n : 1;
    }
    out[o] = '\0';
    return out;
}

static const rd_kafka_metadata_topic_t *meta_topic(const rd_kafka_metadata_t *md, const char *name)
{
    for (int i = 0; i < md->topic_cnt; i++)
        if (!strcmp(md->topics[i].topic, name) && !md->topics[i].err) return &md->topics[i];
    return NULL;
}

static void add_topic(kread_t *kr, const rd_kafka_metadata_topic_t *mt)
{
    for (size_t i = 0; i < kr->topic_cnt; i++)
        if (!strcmp(kr->full[i], mt->topic)) return; /* named twice */
    kr->full = td_realloc(kr->full, (kr->topic_cnt + 1) * sizeof(*kr->full));
    kr->short_names = td_realloc(kr->short_names, (kr->topic_cnt + 1) * sizeof(*kr->short_names));
    kr->full[kr->topic_cnt] = td_strdup(mt->topic);
    kr->short_names[kr->topic_cnt] = kread_short_topic(kr->cfg, kr->full[kr->topic_cnt]);
    kr->parts =
        td_realloc(kr->parts, (kr->part_cnt + (size_t)mt->partition_cnt + 1) * sizeof(*kr->parts));
    for (int j = 0; j < mt->partition_cnt; j++) {
        kpart_t *kp = &kr->parts[kr->part_cnt++];
        kp->topic = kr->topic_cnt;
        kp->partition = mt->partitions[j].id;
        kp->high = 0;
        kp->done = false;
    }
    kr->topic_cnt++;
}

/* Resolves the topics to read against the cluster's metadata. */
static int pick_topics(kread_t *kr, const rd_kafka_metadata_t *md, const kread_opts_t *opts,
                       char *errstr, size_t errlen)
{
    if (opts->topic_cnt) {
        for (size_t i = 0; i < opts->topic_cnt; i++) {
            const char *name = opts->topics[i];
            char *full = td_topic_name(kr->cfg, name);
            const rd_kafka_metadata_topic_t *mt = meta_topic(md, full);
            /* The full name is accepted too, for people who paste it. */
            size_t plen = strlen(kr->cfg->topic_prefix);
            if (!mt && plen && !strncmp(name, kr->cfg->topic_prefix, plen))
                mt = meta_topic(md, name);
            if (!mt) {
                char known[256] = "";
                for (size_t k = 0; td_topics[k].name; k++)
                    snprintf(known + strlen(known), sizeof(known) - strlen(known), "%s%s",
                             k ? ", " : "", td_topics[k].name);
                td_errf(errstr, errlen, TD_ENOENT,
                        "unknown topic '%s': %s does not exist on %s (the topics are %s, "
                        "each also with .DLT)",
                        name, full, kr->cfg->brokers, known);
                free(full);
                return TD_ENOENT;
            }
            free(full);
            add_topic(kr, mt);
        }
        return 0;
    }
    for (size_t i = 0; td_topics[i].name; i++) {
        for (int dlt = 0; dlt < 2; dlt++) {
            char *short_name = td_asprintf("%s%s", td_topics[i].name, dlt ? ".DLT" : "");
            char *full = td_topic_name(kr->cfg, short_name);
            const rd_kafka_metadata_topic_t *mt = meta_topic(md, full);
            if (mt) add_topic(kr, mt);
            free(full);
            free(short_name);
        }
    }
    if (!kr->topic_cnt)
        return td_errf(errstr, errlen, TD_ENOENT,
                       "none of the tidings topics (prefix '%s') exist on %s yet",
                       kr->cfg->topic_prefix, kr->cfg->brokers);
    return 0;
}

kread_t *kread_open(const td_config_t *cfg, const kread_opts_t *opts, char *errstr, size_t errlen)
{
    char err[512];
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_topic_partition_list_t *assign = NULL;
    kread_t *kr = td_calloc(1, sizeof(*kr));
    kr->cfg = cfg;
    kr->until_caught_up = opts->until_caught_up;
    if (!cfg->brokers) {
        char *file = td_data_path(cfg, "brokers");
        td_errf(errstr, errlen, TD_ENOENT,
                "no Kafka brokers known: give --brokers LIST, set TIDINGS_BROKERS, or start "
                "`tidings run` or `tidings broker` with this data dir (%s not found)",
                file);
        free(file);
        goto fail;
    }

    rd_kafka_conf_t *conf = td_kafka_conf(cfg, errstr, errlen);
    if (!conf) goto fail;
    /* librdkafka wants a group id even for manual assignment; a fresh one
     * keeps this reader apart from everyone, and nothing is committed. */
    char uuid[TD_UUID_LEN + 1], group[64], wait[16];
    td_uuid_new(uuid);
    snprintf(group, sizeof(group), "tidings-cli-%s", uuid);
    snprintf(wait, sizeof(wait), "%d", cfg->fetch_wait_ms > 0 ? cfg->fetch_wait_ms : 100);
    if (td_kafka_set(conf, "group.id", group, errstr, errlen) ||
        td_kafka_set(conf, "enable.auto.commit", "false", errstr, errlen) ||
        td_kafka_set(conf, "enable.auto.offset.store", "false", errstr, errlen) ||
        td_kafka_set(conf, "enable.partition.eof", "true", errstr, errlen) ||
        td_kafka_set(conf, "fetch.wait.max.ms", wait, errstr, errlen) ||
        td_kafka_set(conf, "auto.offset.reset", "earliest", errstr, errlen)) {
        rd_kafka_conf_destroy(conf);
        goto fail;
    }
    kr->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    if (!kr->rk) {
        rd_kafka_conf_destroy(conf);
        td_errf(errstr, errlen, TD_EINVAL, "cannot create a Kafka consumer: %s", err);
        goto fail;
    }
    rd_kafka_poll_set_consumer(kr->rk);

    /* The embedded broker is on loopback: when it does not answer at once,
     * the brokers file is most likely left over from one that is gone. */
    rd_kafka_resp_err_t kerr = rd_kafka_metadata(kr->rk, 1, NULL, &md,
                                                 cfg->brokers_embedded ? KREAD_META_TIMEOUT_MS / 2
                                                                       : KREAD_META_TIMEOUT_MS);
    if (kerr) {
        char *file = cfg->brokers_embedded ? td_data_path(cfg, "brokers") : NULL;
        td_errf(errstr, errlen, TD_EAGAIN, "cannot reach Kafka at %s: %s%s%s%s", cfg->brokers,
                rd_kafka_err2str(kerr), file ? " (the list is from " : "", file ? file : "",
                file ? "; is `tidings run` or `tidings broker` still running?)" : "");
        free(file);
        goto fail;
    }
    if (pick_topics(kr, md, opts, errstr, errlen)) goto fail;

    assign = rd_kafka_topic_partition_list_new((int)kr->part_cnt);
    for (size_t i = 0; i < kr->part_cnt; i++) {
        kpart_t *kp = &kr->parts[i];
        int64_t low = 0, high = 0;
        kerr = rd_kafka_query_watermark_offsets(kr->rk, kr->full[kp->topic], kp->partition, &low,
                                                &high, KREAD_WM_TIMEOUT_MS);
        if (kerr) {
            td_errf(errstr, errlen, TD_EAGAIN, "cannot read the end of %s [%d] on %s: %s",
                    kr->full[kp->topic], (int)kp->partition, cfg->brokers, rd_kafka_err2str(kerr));
            goto fail;
        }
        kp->high = high;
        kp->done = opts->until_caught_up && (!opts->from_beginning || low >= high);
        if (kp->done) continue; /* nothing to read there */
        kr->remaining++;
        rd_kafka_topic_partition_list_add(assign, kr->full[kp->topic], kp->partition)->offset =
            opts->from_beginning ? RD_KAFKA_OFFSET_BEGINNING : high;
    }
    kerr = rd_kafka_assign(kr->rk, assign);
    if (kerr) {
        td_errf(errstr, errlen, TD_EIO, "cannot assign the partitions: %s", rd_kafka_err2str(kerr));
        goto fail;
    }
    rd_kafka_topic_partition_list_destroy(assign);
    rd_kafka_metadata_destroy(md);
    return kr;

fail:
    if (assign) rd_kafka_topic_partition_list_destroy(assign);
    if (md) rd_kafka_metadata_destroy(md);
    kread_close(kr);
    return NULL;
}

static kpart_t *find_part(kread_t *kr, const char *topic, int32_t partition)
{
    for (size_t i = 0; i < kr->part_cnt; i++) {
        kpart_t *kp = &kr->parts[i];
        if (kp->partition == partition && !strcmp(kr->full[kp->topic], topic)) return kp;
    }
    return NULL;
}

/* Marks kp caught up and stops fetching it: records after the start
 * watermark are not part of the history asked for. */
static void part_done(kread_t *kr, kpart_t *kp)
{
    if (kp->done) return;
    kp->done = true;
    kr->remaining--;
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, kr->full[kp->topic], kp->partition);
    rd_kafka_pause_partitions(kr->rk, l);
    rd_kafka_topic_partition_list_destroy(l);
}

/* A consumer error: fatal ones end the read, a vanished topic counts as
 * caught up, the rest (connection trouble) librdkafka retries by itself. */
static int on_error(kread_t *kr, rd_kafka_message_t *m, char *errstr, size_t errlen)
{
    char fatal[256];
    const char *topic = m->rkt ? rd_kafka_topic_name(m->rkt) : NULL;
    if (rd_kafka_fatal_error(kr->rk, fatal, sizeof(fatal)))
        return td_errf(errstr, errlen, TD_EIO, "kafka: %s", fatal);
    if (m->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
        m->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION ||
        m->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC) {
        td_warn("%s [%d]: %s", topic ? topic : "?", (int)m->partition, rd_kafka_message_errstr(m));
        for (size_t i = 0; topic && kr->until_caught_up && i < kr->part_cnt; i++)
            if (!strcmp(kr->full[kr->parts[i].topic], topic)) part_done(kr, &kr->parts[i]);
        return 0;
    }
    td_warn("kafka%s%s: %s", topic ? " " : "", topic ? topic : "", rd_kafka_message_errstr(m));
    return 0;
}

int kread_next(kread_t *kr, int timeout_ms, kread_msg_t *msg, char *errstr, size_t errlen)
{
    int64_t deadline = td_mono_ms() + timeout_ms;
    memset(msg, 0, sizeof(*msg));
    for (;;) {
        if (kr->until_caught_up && !kr->remaining) return KREAD_DONE;
        int64_t left = deadline - td_mono_ms();
        if (left < 0) return TD_EAGAIN;
        rd_kafka_message_t *m = rd_kafka_consumer_poll(kr->rk, (int)left);
        if (!m) return TD_EAGAIN;
        kpart_t *kp = m->rkt ? find_part(kr, rd_kafka_topic_name(m->rkt), m->partition) : NULL;
        if (m->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            /* The end of a partition now is at or past its start
             * watermark, since watermarks only grow. */
            if (kp && kr->until_caught_up) part_done(kr, kp);
            rd_kafka_message_destroy(m);
            continue;
        }
        if (m->err) {
            int r = on_error(kr, m, errstr, errlen);
            rd_kafka_message_destroy(m);
            if (r) return r;
            continue;
        }
        if (!kp) { /* not ours: cannot happen with manual assignment */
            rd_kafka_message_destroy(m);
            continue;
        }
        if (kr->until_caught_up && (kp->done || m->offset >= kp->high)) {
            part_done(kr, kp);
            rd_kafka_message_destroy(m);
            continue;
        }
        if (kr->until_caught_up && m->offset + 1 >= kp->high) part_done(kr, kp);
        msg->rec = td_record_from_kafka(m);
        msg->topic = kr->short_names[kp->topic];
        rd_kafka_message_destroy(m);
        msg->ev = td_event_from_record(msg->rec, msg->reason, sizeof(msg->reason));
        if (!msg->ev && !msg->reason[0]) snprintf(msg->reason, sizeof(msg->reason), "invalid");
        return 0;
    }
}

void kread_msg_clear(kread_msg_t *msg)
{
    td_event_free(msg->ev);
    td_record_free(msg->rec);
    memset(msg, 0, sizeof(*msg));
}

size_t kread_partition_count(const kread_t *kr)
{
    return kr->part_cnt;
}

size_t kread_topic_count(const kread_t *kr)
{
    return kr->topic_cnt;
}

void kread_close(kread_t *kr)
{
    if (!kr) return;
    if (kr->rk) {
        rd_kafka_consumer_close(kr->rk);
        rd_kafka_destroy(kr->rk);
    }
    for (size_t i = 0; i < kr->topic_cnt; i++) free(kr->full[i]);
    free(kr->full);
    free(kr->short_names);
    free(kr->parts);
    free(kr);
}
