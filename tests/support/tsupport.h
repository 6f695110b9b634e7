/* Helpers shared by the integration tests: temporary data dirs, a test
 * configuration, an in-process embedded broker, reading and writing Kafka
 * records directly, and a small blocking HTTP client (libcurl). */
#ifndef TIDINGS_TSUPPORT_H
#define TIDINGS_TSUPPORT_H

#include <jansson.h>

#include "tidings/broker.h"
#include "tidings/config.h"
#include "tidings/record.h"

/* ---- tutil.c ---- */

/* A fresh, empty directory for this test (under $TIDINGS_TEST_TMP or
 * /tmp), e.g. ts_tmpdir("0003-outbox"). Caller frees the string. */
char *ts_tmpdir(const char *name);
/* A test configuration: defaults, service, data_dir, brokers, fetch wait
 * 1 ms, a fixed 32-byte secret, log level from TIDINGS_LOG_LEVEL (default
 * warn). Free with td_config_free. */
void ts_config(td_config_t *cfg, const char *service, const char *data_dir, const char *brokers);
/* Polls cond(arg) every 5 ms until true or timeout_ms: true if it became
 * true. */
bool ts_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms);

/* ---- tkafka.c ---- */

/* Starts an embedded broker (3 brokers, SPEC topics, cfg's prefix). */
td_broker_t *ts_broker(const td_config_t *cfg);

typedef struct ts_records {
    td_record_t **recs;
    size_t cnt;
} ts_records_t;

/* Reads topic (full name) from the beginning with a throw-away consumer
 * until it has at least want records, every partition up to the end it
 * had when the read began, and then nothing new for idle_ms; or until
 * timeout_ms. Records are ordered by (partition, offset). */
ts_records_t ts_read_topic(const char *brokers, const char *topic, size_t want, int idle_ms,
                           int timeout_ms);
void ts_records_free(ts_records_t *r);
/* Produces rec (partition chosen by key) and waits for its delivery.
 * 0 or an error. */
int ts_produce(const char *brokers, const td_record_t *rec);

/* ---- thttp.c ---- */

typedef struct ts_resp {
    long status;
    char *body; /* NUL-terminated */
    size_t body_len;
    json_t *json;  /* parsed body, NULL if not JSON */
    char *headers; /* raw response headers */
} ts_resp_t;

/* One blocking request. token adds "Authorization: Bearer"; body with
 * content_type (NULL = application/json when body is set). extra_headers
 * is a NULL-terminated list of "Name: value" strings or NULL. */
ts_resp_t ts_http(const char *method, const char *url, const char *token, const char *body,
                  const char *content_type, const char *const *extra_headers);
/* ts_http with a JSON body made from a format string (jansson json_pack). */
ts_resp_t ts_http_json(const char *method, const char *url, const char *token, json_t *body);
/* A response header's value (case-insensitive), copied into buf. */
const char *ts_resp_header(const ts_resp_t *r, const char *name, char *buf, size_t len);
void ts_resp_free(ts_resp_t *r);
/* The error code of a SPEC error body ("invalid_argument"), or "". */
const char *ts_error_code(const ts_resp_t *r);

#endif
