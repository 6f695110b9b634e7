/* What the files of the delivery queue share (delivery.c: the table and
 * the calls that queue; delivery_send.c: one try; delivery_sched.c: the
 * workers). Nothing outside src/runtime/delivery*.c includes it: the
 * contract is tidings/delivery.h. */
#ifndef TIDINGS_DELIVERY_INTERNAL_H
#define TIDINGS_DELIVERY_INTERNAL_H

#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tidings/delivery.h"
#include "tidings/email.h"
#include "tidings/worker.h"

/* One sender: a td_worker_t whose round claims a due row and sends it. */
typedef struct worker {
    struct td_delivery *dlv;
    td_worker_t *tw;
    CURLM *multi;
    CURL *easy;
} worker_t;

struct td_delivery {
    td_db_t *db;
    const td_config_t *cfg;
    const td_vapid_t *vapid;
    td_email_server_t smtp; /* url NULL: email rows fail ("smtp_off") */
    td_delivery_gone_fn gone;
    void *ctx;
    int timeout_ms;
    int idle_ms;
    td_delivery_policy_t policy;

    worker_t *workers;
    size_t worker_cnt;

    pthread_mutex_t mu; /* guards the workers against a kick during the stop */
    atomic_bool stopping;

    struct td_delivery *next; /* in the registry */
};

typedef struct job {
    int64_t id;
    char *channel, *target_id, *event_id, *url, *headers;
    char *dest;  /* the destination it shares a breaker and a cap with */
    char *owner; /* NULL when it counts against no user */
    unsigned char *body;
    size_t body_len;
    unsigned char *secret; /* NULL for webpush */
    size_t secret_len;
    int attempts; /* including this try */
} job_t;

enum verdict { V_SUCCESS, V_GONE, V_RETRY, V_FAIL, V_ABORTED };

/* What a try came to. error is an error class ("http_503", "timeout",
 * "blocked_address", ...), never text the endpoint sent: it goes into
 * last_error, logs and the dead-letter reason, which users and operators
 * see, and an endpoint's answer could be a page of an internal host. */
typedef struct outcome {
    enum verdict verdict;
    long status;            /* HTTP status, 0 when none */
    int64_t retry_after_ms; /* from Retry-After, -1 when absent */
    int health;             /* for the breaker: 1 answered, -1 failed, 0 no verdict */
    char error[64];
} outcome_t;

/* Sends job once on w's handle, out says what it came to. Runs without the
 * database lock (delivery_send.c). */
void td__delivery_send(worker_t *w, const job_t *job, outcome_t *out);

/* Wakes the workers of every running queue of db (delivery_sched.c). */
void td__delivery_wake(td_db_t *db);

/* Feeds the outcome of a try to its destination's breaker, in the
 * transaction that records it; *opened tells whether it opened
 * (delivery.c). */
int td__delivery_update_breaker(struct td_delivery *dlv, const job_t *job, const outcome_t *out,
                                bool *opened);

#endif
