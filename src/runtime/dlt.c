/* Dead letters from the outside (tidings/dlt.h): a reader that scans a
 * topic from its start to the high watermarks of now with a hand-assigned
 * consumer (a fresh group id that never commits), and an idempotent
 * producer for the one record a redrive publishes. Each call makes its own
 * clients and destroys them: these are rare operator actions, not a hot
 * path. */
#include "tidings/dlt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/bus.h"
#include "tidings/catalog.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tidings/topicread.h"
#include "tidings/uuid.h"

#define META_TIMEOUT_MS    10000
#define WM_TIMEOUT_MS      5000
#define SCAN_TIMEOUT_MS    60000
#define PRODUCE_TIMEOUT_MS 30000

/* ---- reading ------------------------------------------------------------- */

/* Called per record; returns 1 to stop the scan. */
typedef int (*scan_fn)(void *arg, const rd_kafka_message_t *msg);

static rd_kafka_t *reader_new(const td_config_t *cfg, char *errstr, size_t errlen)
{
    if (!cfg->brokers || !*cfg->brokers) {
        td_errf(errstr, errlen, TD_ENOENT,
                "no Kafka brokers known: give --brokers LIST, set TIDINGS_BROKERS, or start "
                "`tidings run` or `tidings broker` with this data dir");
        return NULL;
    }
    return td__topic_reader_consumer(cfg, "dlt", 10, true, errstr, errlen);
}

/* The partition count of topic, 0 when it does not exist, or an error. */
static int partitions_of(rd_kafka_t *rk, const char *topic, const char *brokers, char *errstr,
                         size_t errlen)
{
    const rd_kafka_metadata_t *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, META_TIMEOUT_MS);
    if (err)
        return td_errf(errstr, errlen, TD_EAGAIN, "cannot reach Kafka at %s: %s", brokers,
                       rd_kafka_err2str(err));
    int n = 0;
    for (int i = 0; i < md->topic_cnt; i++)
        if (!strcmp(md->topics[i].topic, topic) && !md->topics[i].err)
            n = md->topics[i].partition_cnt;
    rd_kafka_metadata_destroy(md);
    return n;
}

/* Runs fn over the records of topic (partition part, or every one when
 * part < 0) from offset from (the start when < 0) up to the high
 * watermarks of now. 0, or an error with errstr. */
static int scan(const td_config_t *cfg, const char *topic, int32_t part, int64_t from, scan_fn fn,
                void *arg, char *errstr, size_t errlen)
{
    rd_kafka_t *rk = reader_new(cfg, errstr, errlen);
    if (!rk) return TD_EIO;
    rd_kafka_topic_partition_list_t *assign = NULL;
    int64_t *high = NULL;
    int rc = partitions_of(rk, topic, cfg->brokers, errstr, errlen);
    if (rc < 0) goto out;
    if (rc == 0) {
        rc = td_errf(errstr, errlen, TD_ENOENT, "topic %s does not exist", topic);
        goto out;
    }
    int cnt = rc;
    high = td_calloc((size_t)cnt, sizeof(*high));
    assign = rd_kafka_topic_partition_list_new(cnt);
    size_t remaining = 0;
    for (int p = 0; p < cnt; p++) {
        if (part >= 0 && p != part) continue;
        int64_t lo = 0, hi = 0;
        rd_kafka_resp_err_t err =
            rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, WM_TIMEOUT_MS);
        if (err) {
            rc = td_errf(errstr, errlen, TD_EAGAIN, "cannot read the end of %s [%d]: %s", topic, p,
                         rd_kafka_err2str(err));
            goto out;
        }
        high[p] = hi;
        int64_t start = from >= 0 ? from : lo;
        if (start < lo) start = lo;
        if (start >= hi) continue;
        rd_kafka_topic_partition_list_add(assign, topic, p)->offset = start;
        remaining++;
    }
    if (part >= cnt) {
        rc = td_errf(errstr, errlen, TD_ENOENT, "topic %s has no partition %d", topic, part);
        goto out;
    }
    rc = 0;
    if (!remaining) goto out;
    rd_kafka_resp_err_t err = rd_kafka_assign(rk, assign);
    if (err) {
        rc = td_errf(errstr, errlen, TD_EIO, "cannot assign %s: %s", topic, rd_kafka_err2str(err));
        goto out;
    }
    int64_t deadline = td_mono_ms() + SCAN_TIMEOUT_MS;
    while (remaining > 0) {
        if (td_mono_ms() > deadline) {
            rc = td_errf(errstr, errlen, TD_EAGAIN, "reading %s timed out", topic);
            goto out;
        }
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 200);
        if (!msg) continue;
        int32_t p = msg->partition;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            if (p >= 0 && p < cnt && high[p] >= 0) {
                high[p] = -1;
                remaining--;
            }
        } else if (msg->err) {
            td_debug("dlt: reading %s: %s", topic, rd_kafka_message_errstr(msg));
        } else if (p >= 0 && p < cnt && high[p] >= 0 && msg->offset < high[p]) {
            int stop = fn(arg, msg);
            if (msg->offset + 1 >= high[p]) {
                high[p] = -1;
                remaining--;
            }
            if (stop) remaining = 0;
        }
        rd_kafka_message_destroy(msg);
    }
out:
    if (assign) rd_kafka_topic_partition_list_destroy(assign);
    free(high);
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return rc;
}

/* ---- dead letters ---------------------------------------------------------- */

static int64_t header_int(const td_record_t *rec, const char *name)
{
    const char *s = td_record_header_str(rec, name);
    if (!s || !*s) return -1;
    char *end;
    long long v = strtoll(s, &end, 10);
    return *end || v < 0 ? -1 : v;
}

/* Fills d from rec (taken). False when rec is not a dead letter. */
static bool dlt_from(td_dlt_t *d, td_record_t *rec)
{
    memset(d, 0, sizeof(*d));
    d->rec = rec;
    snprintf(d->ref, sizeof(d->ref), "%s:%d:%lld", rec->topic, (int)rec->partition,
             (long long)rec->offset);
    const char *reason = td_record_header_str(rec, "tidings_dlt_reason");
    const char *orig = td_record_header_str(rec, "tidings_dlt_original_topic");
    d->reason = reason ? reason : "";
    d->orig_topic = orig ? orig : "";
    d->orig_partition = (int32_t)header_int(rec, "tidings_dlt_original_partition");
    d->orig_offset = header_int(rec, "tidings_dlt_original_offset");
    d->type = td_record_header_str(rec, "ce_type");
    d->id = td_record_header_str(rec, "ce_id");
    return reason != NULL;
}

void td_dlt_clear(td_dlt_t *d)
{
    if (!d) return;
    td_record_free(d->rec);
    memset(d, 0, sizeof(*d));
}

void td_dlt_list_free(td_dlt_t *list, size_t cnt)
{
    for (size_t i = 0; i < cnt; i++) td_dlt_clear(&list[i]);
    free(list);
}

typedef struct collect {
    td_dlt_t *list;
    size_t cnt, cap;
} collect_t;

static int collect_one(void *arg, const rd_kafka_message_t *msg)
{
    collect_t *c = arg;
    td_dlt_t d;
    if (!dlt_from(&d, td_record_from_kafka(msg))) {
        td_dlt_clear(&d);
        return 0;
    }
    if (c->cnt == c->cap) c->list = td_realloc(c->list, (c->cap = c->cap * 2 + 16) * sizeof(d));
    c->list[c->cnt++] = d;
    return 0;
}

int td_dlt_list(const td_config_t *cfg, const char *topic_short, td_dlt_t **list, size_t *cnt,
                char *errstr, size_t errlen)
{
    collect_t c = {0};
    int rc = 0;
    for (size_t i = 0; td_topics[i].name && rc == 0; i++) {
        if (topic_short && strcmp(topic_short, td_topics[i].name)) continue;
        char *dlt_short = td_asprintf("%s.DLT", td_topics[i].name);
        char *topic = td_topic_name(cfg, dlt_short);
        rc = scan(cfg, topic, -1, -1, collect_one, &c, errstr, errlen);
        /* A DLT nobody has written to yet holds no dead letters. */
        if (rc == TD_ENOENT) rc = 0;
        free(topic);
        free(dlt_short);
    }
    if (topic_short && rc == 0) {
        bool known = false;
        for (size_t i = 0; td_topics[i].name; i++) known |= !strcmp(topic_short, td_topics[i].name);
        if (!known)
            rc = td_errf(errstr, errlen, TD_ENOENT,
                         "unknown topic %s (one of users, products, "
                         "reservations, orders, payments, notifications)",
                         topic_short);
    }
    if (rc) {
        td_dlt_list_free(c.list, c.cnt);
        return rc;
    }
    *list = c.list;
    *cnt = c.cnt;
    return 0;
}

/* Splits ref into the full topic, partition and offset. */
static int parse_ref(const td_config_t *cfg, const char *ref, char **topic, int32_t *part,
                     int64_t *off, char *errstr, size_t errlen)
{
    const char *c2 = strrchr(ref, ':');
    const char *c1 = c2 && c2 > ref ? memrchr(ref, ':', (size_t)(c2 - ref)) : NULL;
    char *end1, *end2;
    long p = c1 ? strtol(c1 + 1, &end1, 10) : -1;
    long long o = c2 ? strtoll(c2 + 1, &end2, 10) : -1;
    if (!c1 || c1 == ref || end1 != c2 || c1[1] == ':' || !c2[1] || *end2 || p < 0 || o < 0 ||
        p > INT32_MAX)
        return td_errf(errstr, errlen, TD_EINVAL,
                       "'%s' is not a DLT-REF (<dlt topic>:<partition>:<offset>, e.g. "
                       "orders.DLT:0:12)",
                       ref);
    size_t tlen = (size_t)(c1 - ref);
    if (tlen < 4 || strncmp(c1 - 4, ".DLT", 4))
        return td_errf(errstr, errlen, TD_EINVAL, "'%.*s' is not a dead-letter topic", (int)tlen,
                       ref);
    char *name = td_strndup(ref, tlen);
    size_t plen = cfg->topic_prefix ? strlen(cfg->topic_prefix) : 0;
    if (plen && strncmp(name, cfg->topic_prefix, plen)) {
        *topic = td_topic_name(cfg, name);
        free(name);
    } else {
        *topic = name;
    }
    *part = (int32_t)p;
    *off = o;
    return 0;
}

typedef struct one {
    int64_t want;
    td_record_t *rec;
} one_t;

static int take_one(void *arg, const rd_kafka_message_t *msg)
{
    one_t *o = arg;
    if (msg->offset != o->want) return msg->offset > o->want;
    o->rec = td_record_from_kafka(msg);
    return 1;
}

int td_dlt_get(const td_config_t *cfg, const char *ref, td_dlt_t *out, char *errstr, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    char *topic = NULL;
    int32_t part = -1;
    int64_t off = -1;
    int rc = parse_ref(cfg, ref, &topic, &part, &off, errstr, errlen);
    if (rc) return rc;
    one_t o = {.want = off};
    rc = scan(cfg, topic, part, off, take_one, &o, errstr, errlen);
    if (rc == 0 && !o.rec) rc = td_errf(errstr, errlen, TD_ENOENT, "no record at %s", ref);
    if (rc == 0 && !dlt_from(out, o.rec)) {
        td_dlt_clear(out);
        rc = td_errf(errstr, errlen, TD_ENOENT, "the record at %s is not a dead letter", ref);
    }
    free(topic);
    return rc;
}

/* ---- redrive ---------------------------------------------------------------- */

typedef struct prior {
    const char *ref;
    bool found;
    int64_t ms;
    int32_t partition;
    int64_t offset;
} prior_t;

static int find_prior(void *arg, const rd_kafka_message_t *msg)
{
    prior_t *p = arg;
    rd_kafka_headers_t *hdrs = NULL;
    const void *v = NULL;
    size_t len = 0;
    if (rd_kafka_message_headers((rd_kafka_message_t *)msg, &hdrs) != 0 ||
        rd_kafka_header_get_last(hdrs, TD_REDRIVEN_FROM, &v, &len) != 0 || !v ||
        len != strlen(p->ref) || memcmp(v, p->ref, len))
        return 0;
    rd_kafka_timestamp_type_t tstype;
    p->found = true;
    p->ms = rd_kafka_message_timestamp(msg, &tstype);
    p->partition = msg->partition;
    p->offset = msg->offset;
    return 1;
}

/* The original record again: the dead letter without its tidings_dlt_*
 * headers (and without an older tidings_redriven_from), plus ref. */
static td_record_t *redriven_copy(const td_dlt_t *d)
{
    const td_record_t *src = d->rec;
    td_record_t *r = td_record_new(d->orig_topic);
    if (src->key) td_record_set_key(r, src->key, src->key_len);
    if (src->value) td_record_set_value(r, src->value, src->value_len);
    for (size_t i = 0; i < src->header_cnt; i++) {
        const td_header_t *h = &src->headers[i];
        if (!strncmp(h->name, "tidings_dlt_", 12) || !strcmp(h->name, TD_REDRIVEN_FROM)) continue;
        td_record_add_header(r, h->name, h->value, h->value ? h->len : 0);
    }
    td_record_add_header_str(r, TD_REDRIVEN_FROM, d->ref);
    r->partition = d->orig_partition;
    return r;
}

typedef struct delivered {
    bool done;
    rd_kafka_resp_err_t err;
    int32_t partition;
    int64_t offset;
} delivered_t;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    (void)opaque;
    delivered_t *d = msg->_private;
    d->done = true;
    d->err = msg->err;
    d->partition = msg->partition;
    d->offset = msg->offset;
}

static int publish(const td_config_t *cfg, const td_record_t *rec, delivered_t *dv, char *errstr,
                   size_t errlen)
{
    rd_kafka_conf_t *conf = td_kafka_conf(cfg, errstr, errlen);
    if (!conf) return TD_EINVAL;
    if (td_kafka_set(conf, "enable.idempotence", "true", errstr, errlen) ||
        td_kafka_set(conf, "acks", "all", errstr, errlen)) {
        rd_kafka_conf_destroy(conf);
        return TD_EINVAL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    char kerr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return td_errf(errstr, errlen, TD_EIO, "cannot create a Kafka producer: %s", kerr);
    }
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(rec->header_cnt);
    for (size_t i = 0; i < rec->header_cnt; i++)
        rd_kafka_header_add(hdrs, rec->headers[i].name, -1, rec->headers[i].value,
                            rec->headers[i].value ? (ssize_t)rec->headers[i].len : 0);
    rd_kafka_resp_err_t err = rd_kafka_producev(
        rk, RD_KAFKA_V_TOPIC(rec->topic), RD_KAFKA_V_PARTITION(rec->partition),
        RD_KAFKA_V_KEY(rec->key, rec->key_len), RD_KAFKA_V_VALUE(rec->value, rec->value_len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE(dv),
        RD_KAFKA_V_END);
    int rc = 0;
    if (err) {
        rd_kafka_headers_destroy(hdrs);
        rc = td_errf(errstr, errlen, TD_EIO, "cannot publish to %s: %s", rec->topic,
                     rd_kafka_err2str(err));
    } else {
        rd_kafka_flush(rk, PRODUCE_TIMEOUT_MS);
        if (!dv->done)
            rc = td_errf(errstr, errlen, TD_EAGAIN, "%s did not confirm the record within %d s",
                         rec->topic, PRODUCE_TIMEOUT_MS / 1000);
        else if (dv->err)
            rc = td_errf(errstr, errlen, TD_EIO, "publishing to %s failed: %s", rec->topic,
                         rd_kafka_err2str(dv->err));
    }
    rd_kafka_destroy(rk);
    return rc;
}

int td_dlt_redrive(const td_config_t *cfg, const td_dlt_t *d, bool dry_run, td_dlt_redrive_t *out,
                   char *errstr, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->offset = -1;
    out->prior_ms = -1;
    if (!d->orig_topic[0] || d->orig_partition < 0)
        return td_errf(errstr, errlen, TD_EINVAL, "%s names no original topic and partition",
                       d->ref);
    snprintf(out->topic, sizeof(out->topic), "%s", d->orig_topic);
    out->partition = d->orig_partition;
    prior_t p = {.ref = d->ref};
    int rc = scan(cfg, d->orig_topic, -1, -1, find_prior, &p, errstr, errlen);
    if (rc) return rc;
    if (p.found) {
        char when[TD_TIME_LEN + 1] = "an unknown time";
        if (p.ms >= 0) td_time_format(p.ms, when);
        out->prior_ms = p.ms;
        out->prior_partition = p.partition;
        out->prior_offset = p.offset;
        return td_errf(errstr, errlen, TD_EEXIST,
                       "%s was redriven already at %s (%s [%d] @ %lld); a dead letter is redriven "
                       "once",
                       d->ref, when, d->orig_topic, (int)p.partition, (long long)p.offset);
    }
    if (dry_run) return 0;
    td_record_t *copy = redriven_copy(d);
    delivered_t dv = {0};
    rc = publish(cfg, copy, &dv, errstr, errlen);
    td_record_free(copy);
    if (rc) return rc;
    out->partition = dv.partition;
    out->offset = dv.offset;
    char labels[320];
    td_metric_labels(labels, sizeof(labels), "topic", d->orig_topic, NULL);
    td_metric_describe("tidings_dlt_redriven_total", "counter",
                       "Dead letters republished to their original topic, by topic");
    td_metric_inc("tidings_dlt_redriven_total", labels);
    td_info("dlt: redrove %s to %s [%d] @ %lld", d->ref, d->orig_topic, (int)dv.partition,
            (long long)dv.offset);
    return 0;
}

/* ---- JSON ------------------------------------------------------------------- */

/* A JSON string of len bytes: as they are when valid UTF-8, else with each
 * byte outside printable ASCII as \xNN. */
static json_t *bytes_json(const void *p, size_t len)
{
    if (!p) return json_null();
    json_t *j = json_stringn(p, len);
    if (j) return j;
    const unsigned char *s = p;
    char *buf = td_malloc(len * 4 + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] >= 0x20 && s[i] < 0x7f)
            buf[n++] = (char)s[i];
        else
            n += (size_t)snprintf(buf + n, 5, "\\x%02x", s[i]);
    }
    j = json_stringn(buf, n);
    free(buf);
    return j;
}

json_t *td_dlt_json(const td_dlt_t *d, bool whole)
{
    const td_record_t *r = d->rec;
    json_t *o = json_object();
    char when[TD_TIME_LEN + 1];
    json_object_set_new(o, "ref", json_string(d->ref));
    json_object_set_new(o, "dltTopic", json_string(r->topic));
    json_object_set_new(o, "partition", json_integer(r->partition));
    json_object_set_new(o, "offset", json_integer(r->offset));
    if (r->timestamp >= 0) td_time_format(r->timestamp, when);
    json_object_set_new(o, "time", r->timestamp >= 0 ? json_string(when) : json_null());
    json_object_set_new(o, "reason", bytes_json(d->reason, strlen(d->reason)));
    json_object_set_new(o, "originalTopic", bytes_json(d->orig_topic, strlen(d->orig_topic)));
    json_object_set_new(o, "originalPartition",
                        d->orig_partition >= 0 ? json_integer(d->orig_partition) : json_null());
    json_object_set_new(o, "originalOffset",
                        d->orig_offset >= 0 ? json_integer(d->orig_offset) : json_null());
    json_object_set_new(o, "type", d->type ? bytes_json(d->type, strlen(d->type)) : json_null());
    json_object_set_new(o, "id", d->id ? bytes_json(d->id, strlen(d->id)) : json_null());
    json_object_set_new(o, "key", bytes_json(r->key, r->key_len));
    if (whole) {
        json_t *h = json_array();
        for (size_t i = 0; i < r->header_cnt; i++)
            json_array_append_new(h, json_pack("{s:s, s:o}", "name", r->headers[i].name, "value",
                                               bytes_json(r->headers[i].value, r->headers[i].len)));
        json_object_set_new(o, "headers", h);
        json_object_set_new(o, "value", bytes_json(r->value, r->value_len));
    }
    return o;
}
