/* The edge between tidings and librdkafka: the configuration every client
 * (relay producer, consumers, admin, CLI readers) shares, librdkafka's log
 * lines routed into td_log, and the conversion of a consumed message into a
 * plain td_record_t so that everything past this file is Kafka-free. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/bus.h"
#include "tidings/log.h"

/* librdkafka logs with syslog levels. Its level 3 lines are mostly
 * transient connection trouble it recovers from by itself, so they are
 * warnings here; the error_cb of each client says when it is serious. */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    int lvl = level <= 2 ? TD_LOG_ERROR : level <= 4 ? TD_LOG_WARN : TD_LOG_DEBUG;
    /* The relay asks for enable.gapless.guarantee on purpose (per-key
     * order); librdkafka's note that it is experimental is no news. */
    if (!strcmp(fac, "CONFWARN") && strstr(buf, "enable.gapless.guarantee")) lvl = TD_LOG_DEBUG;
    if (lvl < td_log_level()) return;
    td_log(lvl, "kafka %s: %s: %s", rk ? rd_kafka_name(rk) : "-", fac, buf);
}

int td_kafka_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                 size_t errlen)
{
    char kerr[512];
    if (rd_kafka_conf_set(conf, name, value, kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK)
        return td_errf(errstr, errlen, TD_EINVAL, "kafka setting %s=%s: %s", name, value, kerr);
    return 0;
}

rd_kafka_conf_t *td_kafka_conf(const td_config_t *cfg, char *errstr, size_t errlen)
{
    if (!cfg->brokers || !*cfg->brokers) {
        td_errf(errstr, errlen, TD_EINVAL,
                "no Kafka brokers: set TIDINGS_BROKERS or --brokers, or start `tidings broker` / "
                "`tidings run`");
        return NULL;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char *client_id = td_asprintf("tidings-%s", cfg->service ? cfg->service : "cli");
    /* A lost broker is noticed and reconnected within about a second or
     * two, which is what /readyz and the relay's wake-up rely on; the
     * librdkafka default backs off up to 10 s. */
    if (td_kafka_set(conf, "bootstrap.servers", cfg->brokers, errstr, errlen) != 0 ||
        td_kafka_set(conf, "client.id", client_id, errstr, errlen) != 0 ||
        td_kafka_set(conf, "reconnect.backoff.ms", "100", errstr, errlen) != 0 ||
        td_kafka_set(conf, "reconnect.backoff.max.ms", "2000", errstr, errlen) != 0 ||
        td_kafka_set(conf, "socket.keepalive.enable", "true", errstr, errlen) != 0)
        goto fail;
    /* librdkafka's own tracing ("cgrp,fetch", "all") for operators chasing
     * a client problem; its lines are logged at debug level. */
    const char *debug = getenv("TIDINGS_KAFKA_DEBUG");
    if (debug && *debug && td_kafka_set(conf, "debug", debug, errstr, errlen) != 0) goto fail;
    free(client_id);
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    return conf;

fail:
    free(client_id);
    rd_kafka_conf_destroy(conf);
    return NULL;
}

td_record_t *td_record_from_kafka(const rd_kafka_message_t *msg)
{
    td_record_t *rec = td_record_new(msg->rkt ? rd_kafka_topic_name(msg->rkt) : "");
    rec->partition = msg->partition;
    rec->offset = msg->offset;
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(msg, &tstype);
    rec->timestamp = tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts;
    if (msg->key) td_record_set_key(rec, msg->key, msg->key_len);
    if (msg->payload) td_record_set_value(rec, msg->payload, msg->len);

    rd_kafka_headers_t *hdrs = NULL;
    /* rd_kafka_message_headers parses lazily into the message, hence the
     * cast: the message is not changed in any way the caller could see. */
    if (rd_kafka_message_headers((rd_kafka_message_t *)msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *value;
        size_t size;
        for (size_t i = 0;
             rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
             i++)
            td_record_add_header(rec, name, value, value ? size : 0);
    }
    return rec;
}

bool td_kafka_is_mock(const td_config_t *cfg, int timeout_ms)
{
    char err[512];
    rd_kafka_conf_t *conf = td_kafka_conf(cfg, err, sizeof(err));
    if (!conf) return false;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return false;
    }
    char *id = rd_kafka_clusterid(rk, timeout_ms);
    /* rdkafka_mock.c names its clusters "mockCluster<hex>". */
    bool mock = id && !strncmp(id, "mockCluster", 11);
    if (id) rd_kafka_mem_free(rk, id);
    rd_kafka_destroy(rk);
    return mock;
}
