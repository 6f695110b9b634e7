/* Creates the SPEC topics (and their .DLT) on a real Kafka cluster when a
 * service starts, so that a fresh cluster needs no manual setup. Topics that
 * exist are left alone: partitions and retention of an existing topic are
 * the operator's. The embedded broker answers no CreateTopics; its topics
 * were made by `tidings broker`, so an unsupported request is fine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/bus.h"
#include "tidings/log.h"

#define METADATA_WAIT_MS 10000
#define CREATE_WAIT_MS   30000

static bool topic_exists(const struct rd_kafka_metadata *md, const char *name)
{
    for (int i = 0; i < md->topic_cnt; i++)
        if (!strcmp(md->topics[i].topic, name) &&
            md->topics[i].err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            return true;
    return false;
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

int td_topics_ensure(const td_config_t *cfg, char *errstr, size_t errlen)
{
    char kerr[512];
    int rc = 0;
    rd_kafka_t *rk = NULL;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_NewTopic_t **newt = NULL;
    size_t newt_cnt = 0;
    rd_kafka_queue_t *q = NULL;
    rd_kafka_event_t *rkev = NULL;

    rd_kafka_conf_t *conf = td_kafka_conf(cfg, errstr, errlen);
    if (!conf) return TD_EINVAL;
    /* A producer handle can run admin requests and needs no group. */
    rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return td_errf(errstr, errlen, TD_EIO, "cannot create a Kafka client: %s", kerr);
    }

    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, METADATA_WAIT_MS);
    if (err) {
        rc = td_errf(errstr, errlen, TD_ETIMEDOUT, "cannot reach Kafka at %s: %s", cfg->brokers,
                     rd_kafka_err2str(err));
        goto out;
    }
    int brokers = md->broker_cnt > 0 ? md->broker_cnt : 1;
    int want = cfg->replication > 0 ? cfg->replication : 3;
    int replication = want < brokers ? want : brokers;
    char retention[32];
    snprintf(retention, sizeof(retention), "%lld", (long long)cfg->retention_ms);

    size_t spec_cnt = 0;
    while (td_topics[spec_cnt].name) spec_cnt++;
    newt = td_calloc(spec_cnt * 2, sizeof(*newt));
    for (size_t i = 0; i < spec_cnt * 2; i++) {
        char *base = td_topic_name(cfg, td_topics[i / 2].name);
        char *name = i % 2 ? td_asprintf("%s.DLT", base) : td_strdup(base);
        free(base);
        if (!topic_exists(md, name)) {
            rd_kafka_NewTopic_t *nt =
                rd_kafka_NewTopic_new(name, cfg->partitions, replication, kerr, sizeof(kerr));
            if (!nt) {
                rc = td_errf(errstr, errlen, TD_EINVAL, "topic %s: %s", name, kerr);
                free(name);
                goto out;
            }
            rd_kafka_NewTopic_set_config(nt, "retention.ms", retention);
            newt[newt_cnt++] = nt;
        }
        free(name);
    }
    if (newt_cnt == 0) goto out;
    /* CreateTopics goes to the controller. The embedded broker names one
     * that is not among its brokers (id 0) and would let the request wait
     * out its whole timeout: no such controller means no CreateTopics, as
     * the header promises. */
    if (!has_broker(md, rd_kafka_controllerid(rk, 2000))) {
        td_debug("no Kafka controller known (the embedded broker?): %zu topics not created",
                 newt_cnt);
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
            rc = td_errf(errstr, errlen, TD_EIO, "creating topics: %s",
                         rd_kafka_event_error_string(rkev));
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
            td_info("created topic %s (%d partitions, replication %d)", name, cfg->partitions,
                    replication);
        } else if (terr == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            continue; /* another service made it first */
        } else if (unsupported(terr)) {
            td_debug("topic %s: CreateTopics not supported: %s", name,
                     rd_kafka_topic_result_error_string(results[i]));
        } else if (rc == 0) {
            rc = td_errf(errstr, errlen, TD_EIO, "cannot create topic %s: %s", name,
                         rd_kafka_topic_result_error_string(results[i]));
        }
    }

out:
    if (rkev) rd_kafka_event_destroy(rkev);
    if (q) rd_kafka_queue_destroy(q);
    for (size_t i = 0; i < newt_cnt; i++) rd_kafka_NewTopic_destroy(newt[i]);
    free(newt);
    if (md) rd_kafka_metadata_destroy(md);
    rd_kafka_destroy(rk);
    return rc;
}
