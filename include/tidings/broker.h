/* The embedded development broker: librdkafka's in-process mock cluster
 * (rdkafka_mock.h), N brokers on loopback speaking the real Kafka protocol,
 * with every SPEC topic and its .DLT created (it answers no CreateTopics).
 * Memory only, about the last 5 MiB per partition; for development, demos
 * and tests. */
#ifndef TIDINGS_BROKER_H
#define TIDINGS_BROKER_H

#include "tidings/config.h"

typedef struct td_broker td_broker_t;

/* Starts count brokers and creates the SPEC topics (cfg's prefix and
 * partition count; replication min(3, count)). NULL with errstr. */
td_broker_t *td_broker_start(const td_config_t *cfg, int count, char *errstr, size_t errlen);
/* "127.0.0.1:port,..." (owned by broker). */
const char *td_broker_bootstraps(const td_broker_t *broker);
/* The underlying rd_kafka_mock_cluster_t *, for tests that inject errors. */
void *td_broker_mock(td_broker_t *broker);
/* Creates one more topic (full name). */
int td_broker_create_topic(td_broker_t *broker, const char *topic, int partitions);
void td_broker_stop(td_broker_t *broker);

#endif
