/* What the delivery integration tests (0060-delivery-*) share: the python
 * stand-in push service / webhook receiver (push_receiver.py) as a child
 * process, a service-like database with a gone-callback log, a fresh
 * subscription key pair, the NotificationCreatedEvent record a delivery
 * dead-letters, and helpers to enqueue and wait. The bodies are in
 * tests/support/tdelivery.c. */
#ifndef TIDINGS_TDELIVERY_H
#define TIDINGS_TDELIVERY_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <libgen.h>
#include <openssl/rand.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tidings/auth.h"
#include "tidings/bus.h"
#include "tidings/delivery.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tidings/webhook.h"
#include "tidings/webpush.h"
#include "tsupport.h"

extern char **environ;

#define DT_SUBJECT "mailto:ops@tidings.local"
#define DT_SECRET  "whsec-test-0123456789"
#define DT_USER    "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"

/* ---- the receiver --------------------------------------------------------- */

typedef struct dt_receiver {
    pid_t pid;
    int stdin_fd; /* closing it makes the receiver exit */
    int port;
    char base[64]; /* "http://127.0.0.1:<port>" */
} dt_receiver_t;

void dt_receiver_start(dt_receiver_t *r);

void dt_receiver_stop(dt_receiver_t *r);

/* POST /_control with obj (stolen). */
void dt_control(const dt_receiver_t *r, json_t *obj);

/* The requests received so far whose path starts with prefix (all when
 * NULL), in arrival order. New reference. */
json_t *dt_requests(const dt_receiver_t *r, const char *prefix);

const char *dt_header(const json_t *req, const char *lower_name);

/* Status of request i: a number, or -1 for "hang". */
int dt_status(const json_t *reqs, size_t i);

int64_t dt_t_ms(const json_t *reqs, size_t i);

/* ---- the service side ------------------------------------------------------ */

/* The notifications service's stand-in tables: who was reported gone. */

typedef struct dt_env {
    char *dir;
    char *db_path;
    td_config_t cfg;
    td_broker_t *broker; /* only when asked for */
    td_db_t *db;
    td_vapid_t *vapid; /* the application server's key */
    td_vapid_t *ua;    /* the browser's subscription key pair */
    char *ua_private, *p256dh, *auth;
    dt_receiver_t rcv;
    td_delivery_t *dlv;
} dt_env_t;

int dt_gone(void *ctx, td_db_t *db, const char *channel, const char *target_id);

void dt_open_db(dt_env_t *env);

/* A fresh env: tmpdir, config (backoff 20 ms, max_attempts as given), db,
 * keys, receiver with the keys and the webhook secret registered. With
 * a broker when with_broker. The delivery is not started. */
void dt_setup(dt_env_t *env, const char *name, int max_attempts, bool with_broker);

/* Starts the delivery with policy (NULL: no circuit breaker, so the tests
 * of retries and restarts see every try; 0060-delivery-fairness tests the
 * breaker). */
void dt_start_policy(dt_env_t *env, unsigned threads, int timeout_ms,
                     const td_delivery_policy_t *policy);

void dt_start(dt_env_t *env, unsigned threads, int timeout_ms);

void dt_stop(dt_env_t *env);

void dt_teardown(dt_env_t *env);

/* A notification object of SPEC section 2 (new reference). */
json_t *dt_notification(const char *title);

/* The NotificationCreatedEvent record of n, the one a failed delivery
 * dead-letters. Caller frees. */
td_record_t *dt_origin(const dt_env_t *env, const json_t *n);

/* Enqueues, in its own transaction, a Web Push of n (its JSON is the
 * payload) for subscription sub_id to <receiver><path>. */
void dt_push(dt_env_t *env, const char *sub_id, const char *path, const json_t *n);

/* The same for a webhook POST of n to <receiver><path>. */
void dt_hook(dt_env_t *env, const char *hook_id, const char *path, const json_t *n);

bool dt_queue_empty_cond(void *arg);

/* Waits (bounded) until nothing is pending. */
bool dt_wait_drained(dt_env_t *env, int timeout_ms);

/* One integer from SQL on the env's db. */
int64_t dt_sql_int(dt_env_t *env, const char *sql);

double dt_metric(const char *channel, const char *result);

/* True once tidings_deliveries_total{channel,result} is want (bounded: a
 * worker counts right after the commit the test may already have seen). */
bool dt_metric_is(const char *channel, const char *result, double want);

#endif
