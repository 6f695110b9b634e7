/* What the two halves of the consumer share (consumer.c the client:
 * helpers, rebalance and error callbacks, start and stop; consumer_batch.c
 * the processing of a batch through the inbox). Not a public header. */
#ifndef TIDINGS_CONSUMER_INTERNAL_H
#define TIDINGS_CONSUMER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "tidings/bus.h"

#define HEALTH_MS      2000
#define HEALTH_WAIT_MS 1500
#define LAG_MS         1000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define COMMITTED_WAIT 5000
/* How long a silent member keeps its partitions. Heartbeats come from
 * librdkafka's own thread, so a slow handler does not count against it;
 * only a dead or frozen process does. 6 s (the brokers' default minimum)
 * instead of Kafka's 45 s lets a restarted service take over its
 * partitions within seconds, and the embedded broker holds a group that a
 * member just left for this long minus one second before it rebalances. */
#define SESSION_TIMEOUT_MS "6000"
#define POLL_MS            100
#define HEARTBEAT_MS       "2000"

/* The last offset handed to us per assigned partition, for gap detection.
 * -1 when unknown (nothing committed and nothing read yet). */
typedef struct part_state {
    char *topic;
    int32_t partition;
    int64_t last;
    bool owned; /* assigned to us now */
} part_state_t;

typedef struct batch batch_t;

struct td_consumer {
    rd_kafka_t *rk;
    td_db_t *db;
    void *ctx;
    char *group;
    char *prefix;  /* the topic prefix, to check that a type is on its SPEC topic */
    char **topics; /* full names */
    size_t topic_cnt;
    td_handler_t *handlers; /* types copied */
    size_t handler_cnt;
    pthread_t thread;

    pthread_mutex_t mu; /* only for the interruptible sleep */
    pthread_cond_t cv;
    atomic_bool stop;
    atomic_bool connected;
    atomic_llong processed;
    atomic_llong lag;
    atomic_int assigned; /* partitions assigned now (td_consumer_assigned) */

    /* Consumer thread only (the rebalance callback runs in its poll). */
    part_state_t *parts;
    size_t part_cnt;
    int64_t next_health;
    int64_t empty_since; /* when assigned last became 0 (or the start) */
    int resubscribed;    /* times unstick subscribed again */
    int64_t next_lag;
    int generation; /* bumped by every revocation */
    bool stateless;
    size_t batch_max;    /* 1..TD_CONSUMER_BATCH */
    size_t trim_records; /* records since the last idle_trim */
    size_t trim_used;    /* the largest batch since then */
    char *skip_header, *skip_value;
    batch_t *batch;
};
/* What the consumer does with one record of a batch, decided before the
 * transaction from what the record is. */
enum kind {
    K_SKIP,   /* a type this service does not handle: topics are shared */
    K_DLT,    /* not a valid CloudEvent, on the wrong topic, or a bad shape */
    K_HANDLE, /* run its handler */
};

enum result { R_NONE, R_HANDLED, R_DUPLICATE, R_DEAD_LETTERED, R_SKIPPED };

typedef struct item {
    rd_kafka_message_t *msg;
    td_event_t ev; /* borrowed from msg; valid when parsed */
    bool parsed;
    bool redriven; /* has tidings_redriven_from */
    enum kind kind;
    const td_handler_t *h;
    enum result result;
    char why[512]; /* the dead-letter reason */
    char key[600]; /* the inbox key: ce_id, or raw:<topic>:<partition>:<offset> */
} item_t;

struct batch {
    item_t items[TD_CONSUMER_BATCH];
    size_t cnt;
};

/* consumer.c */
/* Adds n to tidings_events_consumed_total{topic,type,result}. */
void td__cons_count(const char *topic, const char *type, const char *result, size_t n);
void td__cons_sleep(td_consumer_t *cons, int64_t ms);
part_state_t *td__cons_part_find(td_consumer_t *cons, const char *topic, int32_t partition,
                                 bool create);
void td__cons_health(td_consumer_t *cons);
void td__cons_refresh_lag(td_consumer_t *cons);

/* consumer_batch.c */
void *td__cons_consumer_main(void *arg);

#endif
