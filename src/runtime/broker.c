/* The embedded development broker: librdkafka's mock cluster, owned by a
 * producer handle that exists only to carry it. It speaks the Kafka
 * protocol on loopback ports, so services, kcat and the Python client use
 * it like a real cluster, but it keeps records in memory only and answers
 * no CreateTopics, which is why every SPEC topic and its .DLT is created
 * here up front. */
#include "tidings/broker.h"

#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdlib.h>

#include "tidings/log.h"

struct td_broker {
    rd_kafka_t *rk;
    rd_kafka_mock_cluster_t *mcluster;
    char *bootstraps;
    int count;
};

static void broker_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    (void)rk;
    int lvl = level <= 3 ? TD_LOG_WARN : TD_LOG_DEBUG;
    if (lvl < td_log_level()) return;
    td_log(lvl, "embedded broker: %s: %s", fac, buf);
}

int td_broker_create_topic(td_broker_t *broker, const char *topic, int partitions)
{
    int replication = broker->count < 3 ? broker->count : 3;
    rd_kafka_resp_err_t err =
        rd_kafka_mock_topic_create(broker->mcluster, topic, partitions, replication);
    if (err) {
        td_error("embedded broker: cannot create topic %s: %s", topic, rd_kafka_err2str(err));
        return TD_EIO;
    }
    return 0;
}

td_broker_t *td_broker_start(const td_config_t *cfg, int count, char *errstr, size_t errlen)
{
    td_broker_t *broker = td_calloc(1, sizeof(*broker));
    char kerr[512];
    broker->count = count;
    if (count < 1) {
        td_errf(errstr, errlen, TD_EINVAL, "broker count must be at least 1");
        goto fail;
    }
    int partitions = cfg->partitions > 0 ? cfg->partitions : 6;

    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, broker_log_cb);
    rd_kafka_conf_set(conf, "client.id", "tidings-broker", NULL, 0);
    broker->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (!broker->rk) {
        rd_kafka_conf_destroy(conf);
        td_errf(errstr, errlen, TD_EIO, "cannot start the embedded broker: %s", kerr);
        goto fail;
    }
    broker->mcluster = rd_kafka_mock_cluster_new(broker->rk, count);
    if (!broker->mcluster) {
        td_errf(errstr, errlen, TD_EIO, "cannot start the embedded broker (mock cluster)");
        goto fail;
    }
    broker->bootstraps = td_strdup(rd_kafka_mock_cluster_bootstraps(broker->mcluster));

    for (size_t i = 0; td_topics[i].name; i++) {
        char *name = td_topic_name(cfg, td_topics[i].name);
        char *dlt = td_asprintf("%s.DLT", name);
        int rc = td_broker_create_topic(broker, name, partitions);
        if (rc == 0) rc = td_broker_create_topic(broker, dlt, partitions);
        if (rc != 0) td_errf(errstr, errlen, TD_EIO, "embedded broker: cannot create %s", name);
        free(dlt);
        free(name);
        if (rc != 0) goto fail;
    }
    return broker;

fail:
    td_broker_stop(broker);
    return NULL;
}

const char *td_broker_bootstraps(const td_broker_t *broker)
{
    return broker->bootstraps;
}

void *td_broker_mock(td_broker_t *broker)
{
    return broker->mcluster;
}

void td_broker_stop(td_broker_t *broker)
{
    if (!broker) return;
    if (broker->mcluster) rd_kafka_mock_cluster_destroy(broker->mcluster);
    if (broker->rk) rd_kafka_destroy(broker->rk);
    free(broker->bootstraps);
    free(broker);
}
