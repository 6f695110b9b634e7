/* What the bus integration tests (0001-0009) share: an embedded broker with
 * a test configuration, a consumer-side database with an "effects" table
 * that a recording handler appends to (one row per effect, so a duplicate
 * effect is a second row), and small query helpers. The bodies are in
 * tests/support/tbus.c. */
#ifndef TIDINGS_TBUS_H
#define TIDINGS_TBUS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/broker.h"
#include "tidings/bus.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tsupport.h"

typedef struct bt_env {
    char *dir;
    td_config_t cfg;
    td_broker_t *broker;
} bt_env_t;

/* Config for service "orders" (topic tidings.orders) on a fresh broker. */
void bt_setup(bt_env_t *env, const char *name);

void bt_teardown(bt_env_t *env);

td_db_t *bt_db(const bt_env_t *env, const char *file);

/* The recording handler: one effects row per call that commits. */
int bt_record_effect(td_db_t *db, const td_event_t *ev);

int bt_effect_handler(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr, size_t errlen);

int64_t bt_query_int(td_db_t *db, const char *sql);

/* Adds events through the outbox in transactions of per_tx events. */
void bt_publish(td_db_t *db, const td_config_t *cfg, td_event_t **evs, size_t cnt, size_t per_tx);

typedef struct bt_count_arg {
    td_db_t *db;
    const char *sql;
    int64_t want;
} bt_count_arg_t;

bool bt_count_reached(void *arg);

/* Waits until the query's first column reaches want. */
bool bt_wait_count(td_db_t *db, const char *sql, int64_t want, int timeout_ms);

typedef struct bt_processed_arg {
    td_consumer_t *cons;
    int64_t want;
} bt_processed_arg_t;

bool bt_processed_reached(void *arg);

bool bt_wait_processed(td_consumer_t *cons, int64_t want, int timeout_ms);

td_consumer_t *bt_consumer(const bt_env_t *env, td_db_t *db, const char *group,
                           const td_handler_t *handlers, size_t handler_cnt, void *ctx);
/* The same with at most batch_max records a batch (0 = the default). */
td_consumer_t *bt_consumer_batched(const bt_env_t *env, td_db_t *db, const char *group,
                                   const td_handler_t *handlers, size_t handler_cnt, void *ctx,
                                   size_t batch_max);

td_relay_t *bt_relay(const bt_env_t *env, td_db_t *db);

/* A header's value as text ("" when absent). */
const char *bt_header(const td_record_t *rec, const char *name);

#endif
