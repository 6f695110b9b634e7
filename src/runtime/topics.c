/* Creates the SPEC topics (and their .DLT) on a real Kafka cluster when a
 * service starts, so that a fresh cluster needs no manual setup: Admin
 * CreateTopics with TIDINGS_PARTITIONS, TIDINGS_REPLICATION (at most the
 * broker count), retention.ms = TIDINGS_RETENTION_MS and, from replication
 * 3 on, min.insync.replicas = 2 (with acks=all a write then survives the
 * loss of any one broker, and one broker may be down without stopping
 * writes). Topics that exist are left alone, being the operator's, but an
 * existing topic with fewer partitions or another retention than
 * configured is a warning that names both values. Several services create
 * at once: TOPIC_ALREADY_EXISTS is success. Every topic is then waited
 * for until the metadata shows a leader for each of its partitions,
 * because a consumer group formed before that may get no partitions of it
 * and only look again at a later metadata refresh. The embedded broker answers no CreateTopics; its
 * topics were made by `tidings broker`, so it is detected and left alone. */
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/bus.h"
#include "tidings/log.h"

#define METADATA_WAIT_MS  TD_TOPICS_CONNECT_WAIT_MS
#define CREATE_WAIT_MS    30000
#define DESCRIBE_WAIT_MS  10000
#define PROPAGATE_WAIT_MS 10000

/* The last client-level error (authentication, TLS, transport) seen while
 * the metadata request waits, to say why Kafka could not be reached. */
typedef struct ensure_errs {
    atomic_int err;
    char why[256];
} ensure_errs_t;

static void ensure_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    ensure_errs_t *e = opaque;
    /* "all brokers down" says less than the error before it. */
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN && atomic_load(&e->err)) return;
    snprintf(e->why, sizeof(e->why), "%s", reason);
    atomic_store(&e->err, err);
}

/* Errors that say "not now" rather than "no": a controller moving, a broker
 * down, a request that timed out. The caller tries again later instead of
 * stopping the service. */
static bool transient(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
    case RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR_NOT_CONTROLLER:
    case RD_KAFKA_RESP_ERR_BROKER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_THROTTLING_QUOTA_EXCEEDED:
    /* fewer brokers registered than the metadata listed a moment ago */
    case RD_KAFKA_RESP_ERR_INVALID_REPLICATION_FACTOR:
        return true;
    default:
        return false;
    }
}

static const rd_kafka_metadata_topic_t *find_topic(const struct rd_kafka_metadata *md,
                                                   const char *name)
{
    for (int i = 0; i < md->topic_cnt; i++)
        if (!strcmp(md->topics[i].topic, name) &&
            md->topics[i].err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            return &md->topics[i];
    return NULL;
}

static bool has_broker(const struct rd_kafka_metadata *md, int32_t id)
{
    for (int i = 0; i < md->broker_cnt; i++)
        if (md->brokers[i].id == id) return true;
    return false;
}

static bool unsupported(rd_kafka_resp_err_t err)
{
    return err == RD_KAFKA_RESP_ERR__UNSUPPORTED_FEATURE ||
           err == RD_KAFKA_RESP_ERR_UNSUPPORTED_VERSION || err == RD_KAFKA_RESP_ERR_INVALID_REQUEST;
}

/* The full names of the SPEC topics and their .DLT, NULL-terminated. */
static char **wanted_topics(const td_config_t *cfg, size_t *cnt)
{
    size_t spec_cnt = 0;
    while (td_topics[spec_cnt].name) spec_cnt++;
    char **names = td_calloc(spec_cnt * 2 + 1, sizeof(*names));
    for (size_t i = 0; i < spec_cnt; i++) {
        names[2 * i] = td_topic_name(cfg, td_topics[i].name);
        names[2 * i + 1] = td_asprintf("%s.DLT", names[2 * i]);
    }
    *cnt = spec_cnt * 2;
    return names;
}

static void free_names(char **names)
{
    for (size_t i = 0; names && names[i]; i++) free(names[i]);
    free(names);
}

/* Existing topics with fewer partitions than configured, or another
 * retention.ms, are warnings naming both values: tidings keeps them as
 * they are (an operator may have chosen them), but never silently. */
static void check_existing(rd_kafka_t *rk, const td_config_t *cfg,
                           const struct rd_kafka_metadata *md, char **names, size_t cnt)
{
    char kerr[512], want_ret[32];
    snprintf(want_ret, sizeof(want_ret), "%" PRId64, cfg->retention_ms);
    rd_kafka_ConfigResource_t **res = td_calloc(cnt, sizeof(*res));
    size_t res_cnt = 0;
    for (size_t i = 0; i < cnt; i++) {
        const rd_kafka_metadata_topic_t *t = find_topic(md, names[i]);
        if (!t) continue;
        if (t->partition_cnt < cfg->partitions)
            td_warn("topic %s has %d partitions, fewer than TIDINGS_PARTITIONS=%d: kept as it is "
                    "(only %d consumers of a group can share it)",
                    names[i], t->partition_cnt, cfg->partitions, t->partition_cnt);
        res[res_cnt++] = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, names[i]);
    }
    if (res_cnt == 0) {
        free(res);
        return;
    }
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *aopts =
        rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_AdminOptions_set_request_timeout(aopts, DESCRIBE_WAIT_MS, kerr, sizeof(kerr));
    rd_kafka_DescribeConfigs(rk, res, res_cnt, aopts, q);
    rd_kafka_AdminOptions_destroy(aopts);
    rd_kafka_event_t *rkev = rd_kafka_queue_poll(q, DESCRIBE_WAIT_MS + 2000);
    if (!rkev || rd_kafka_event_error(rkev)) {
        td_warn("cannot read the configuration of the existing topics: %s",
                rkev ? rd_kafka_event_error_string(rkev) : "timed out");
    } else {
        const rd_kafka_DescribeConfigs_result_t *dres = rd_kafka_event_DescribeConfigs_result(rkev);
        size_t rcnt = 0;
        const rd_kafka_ConfigResource_t **rs =
            rd_kafka_DescribeConfigs_result_resources(dres, &rcnt);
        for (size_t i = 0; i < rcnt; i++) {
            const char *topic = rd_kafka_ConfigResource_name(rs[i]);
            if (rd_kafka_ConfigResource_error(rs[i])) {
                td_warn("cannot read the configuration of topic %s: %s", topic,
                        rd_kafka_ConfigResource_error_string(rs[i]));
                continue;
            }
            size_t ecnt = 0;
            const rd_kafka_ConfigEntry_t **es = rd_kafka_ConfigResource_configs(rs[i], &ecnt);
            for (size_t k = 0; k < ecnt; k++) {
                if (strcmp(rd_kafka_ConfigEntry_name(es[k]), "retention.ms")) continue;
                const char *have = rd_kafka_ConfigEntry_value(es[k]);
                if (have && strcmp(have, want_ret))
                    td_warn("topic %s has retention.ms=%s, not TIDINGS_RETENTION_MS=%s: kept as "
                            "it is",
                            topic, have, want_ret);
            }
        }
    }
    if (rkev) rd_kafka_event_destroy(rkev);
    rd_kafka_queue_destroy(q);
    rd_kafka_ConfigResource_destroy_array(res, res_cnt);
    free(res);
}

/* True when topic t is usable: no error and every partition has a leader.
 * A topic created a moment ago is in the metadata before its partitions
 * have leaders; a consumer group that forms then may get no partitions of
 * it, and librdkafka 2.0 was seen not to rejoin for minutes after. */
static bool usable(const rd_kafka_metadata_topic_t *t)
{
    if (!t || t->err || t->partition_cnt <= 0) return false;
    for (int p = 0; p < t->partition_cnt; p++)
        if (t->partitions[p].err || t->partitions[p].leader < 0) return false;
    return true;
}

/* Waits until every name in names is usable in the metadata of two answers
 * in a row (each from whichever broker librdkafka asks, and brokers learn
 * new topics from the controller one by one), so that a consumer
 * subscribing next finds all of it. */
static void wait_visible(rd_kafka_t *rk, char **names, size_t cnt)
{
    int64_t deadline = td_mono_ms() + PROPAGATE_WAIT_MS;
    int good = 0;
    while (td_mono_ms() < deadline) {
        const struct rd_kafka_metadata *md = NULL;
        if (rd_kafka_metadata(rk, 1, NULL, &md, 2000) == RD_KAFKA_RESP_ERR_NO_ERROR) {
            size_t seen = 0;
            for (size_t i = 0; i < cnt; i++) seen += usable(find_topic(md, names[i]));
            rd_kafka_metadata_destroy(md);
            good = seen == cnt ? good + 1 : 0;
            if (good == 2) return;
        }
        td_sleep_ms(100);
    }
    td_warn("%zu topics do not all have partition leaders after %d s", cnt,
            PROPAGATE_WAIT_MS / 1000);
}

int td_topics_ensure(const td_config_t *cfg, char *errstr, size_t errlen)
{
    char kerr[512];
    int rc = 0;
    rd_kafka_t *rk = NULL;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_NewTopic_t **newt = NULL;
    size_t newt_cnt = 0, name_cnt = 0;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *rkev = NULL;
    ensure_errs_t errs;
    memset(&errs, 0, sizeof(errs));
    char **names = wanted_topics(cfg, &name_cnt);

    rd_kafka_conf_t *conf = td_kafka_conf(cfg, errstr, errlen);
    if (!conf) {
        free_names(names);
        return TD_EINVAL;
    }
    rd_kafka_conf_set_error_cb(conf, ensure_error_cb);
    rd_kafka_conf_set_opaque(conf, &errs);
    /* A producer handle can run admin requests and needs no group. */
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        free_names(names);
        return td_errf(errstr, errlen, TD_EINVAL, "cannot create a Kafka client: %s", kerr);
    }

    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, METADATA_WAIT_MS);
    if (err) {
        /* The error callback runs from rd_kafka_poll only. */
        rd_kafka_poll(rk, 0);
        int why = atomic_load(&errs.err);
        if (why == RD_KAFKA_RESP_ERR__AUTHENTICATION)
            rc = td_errf(errstr, errlen, TD_EAGAIN,
                         "Kafka at %s refused the credentials (check sasl.username, "
                         "sasl.password, sasl.mechanism): %s",
                         cfg->brokers, errs.why);
        else
            rc = td_errf(errstr, errlen, TD_ETIMEDOUT, "cannot reach Kafka at %s: %s%s%s",
                         cfg->brokers, rd_kafka_err2str(err), why ? ": " : "", why ? errs.why : "");
        goto out;
    }
    /* CreateTopics goes to the controller. The embedded broker names one
     * that is not among its brokers (id 0) and would let the request wait
     * out its whole timeout: no such controller means no CreateTopics, as
     * the header promises. */
    if (!has_broker(md, rd_kafka_controllerid(rk, 2000))) {
        td_debug("no Kafka controller known (the embedded broker?): topics left as they are");
        goto out;
    }
    int brokers = md->broker_cnt > 0 ? md->broker_cnt : 1;
    int replication = cfg->replication > 0 ? cfg->replication : 3;
    if (replication > brokers) {
        if (cfg->replication > 0)
            td_warn("TIDINGS_REPLICATION=%d, but the cluster has %d broker%s: new topics get "
                    "replication %d",
                    cfg->replication, brokers, brokers == 1 ? "" : "s", brokers);
        replication = brokers;
    }
    char retention[32];
    snprintf(retention, sizeof(retention), "%" PRId64, cfg->retention_ms);

    newt = td_calloc(name_cnt, sizeof(*newt));
    for (size_t i = 0; i < name_cnt; i++) {
        if (find_topic(md, names[i])) continue;
        rd_kafka_NewTopic_t *nt =
            rd_kafka_NewTopic_new(names[i], cfg->partitions, replication, kerr, sizeof(kerr));
        if (!nt) {
            rc = td_errf(errstr, errlen, TD_EINVAL, "topic %s: %s", names[i], kerr);
            goto out;
        }
        rd_kafka_NewTopic_set_config(nt, "retention.ms", retention);
        if (replication >= 3) rd_kafka_NewTopic_set_config(nt, "min.insync.replicas", "2");
        newt[newt_cnt++] = nt;
    }
    check_existing(rk, cfg, md, names, name_cnt);
    if (newt_cnt == 0) {
        wait_visible(rk, names, name_cnt);
        goto out;
    }

    q = rd_kafka_queue_new(rk);
    rd_kafka_AdminOptions_t *aopts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(aopts, CREATE_WAIT_MS / 2, kerr, sizeof(kerr));
    rd_kafka_AdminOptions_set_request_timeout(aopts, CREATE_WAIT_MS, kerr, sizeof(kerr));
    rd_kafka_CreateTopics(rk, newt, newt_cnt, aopts, q);
    rd_kafka_AdminOptions_destroy(aopts);
    rkev = rd_kafka_queue_poll(q, CREATE_WAIT_MS + 5000);
    if (!rkev) {
        rc = td_errf(errstr, errlen, TD_ETIMEDOUT, "creating topics timed out");
        goto out;
    }
    err = rd_kafka_event_error(rkev);
    if (err) {
        if (unsupported(err)) {
            td_debug("the brokers do not support CreateTopics (%s); assuming the topics exist",
                     rd_kafka_event_error_string(rkev));
        } else {
            rc = td_errf(errstr, errlen, transient(err) ? TD_ETIMEDOUT : TD_EIO,
                         "creating topics: %s", rd_kafka_event_error_string(rkev));
        }
        goto out;
    }
    const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(rkev);
    size_t res_cnt = 0;
    const rd_kafka_topic_result_t **results = rd_kafka_CreateTopics_result_topics(res, &res_cnt);
    for (size_t i = 0; i < res_cnt; i++) {
        const char *name = rd_kafka_topic_result_name(results[i]);
        rd_kafka_resp_err_t terr = rd_kafka_topic_result_error(results[i]);
        if (terr == RD_KAFKA_RESP_ERR_NO_ERROR) {
            td_info("created topic %s (%d partitions, replication %d, retention.ms %s%s)", name,
                    cfg->partitions, replication, retention,
                    replication >= 3 ? ", min.insync.replicas 2" : "");
        } else if (terr == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            continue; /* another service made it first */
        } else if (unsupported(terr)) {
            td_debug("topic %s: CreateTopics not supported: %s", name,
                     rd_kafka_topic_result_error_string(results[i]));
        } else if (rc == 0) {
            rc = td_errf(errstr, errlen, transient(terr) ? TD_ETIMEDOUT : TD_EIO,
                         "cannot create topic %s: %s", name,
                         rd_kafka_topic_result_error_string(results[i]));
        }
    }
    if (rc == 0) wait_visible(rk, names, name_cnt);

out:
    if (rkev) rd_kafka_event_destroy(rkev);
    if (q) rd_kafka_queue_destroy(q);
    for (size_t i = 0; i < newt_cnt; i++) rd_kafka_NewTopic_destroy(newt[i]);
    free(newt);
    free_names(names);
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return rc;
}
