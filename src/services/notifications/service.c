/* The notifications service's lifecycle: database, VAPID key, outbox
 * relay, fan-out worker, delivery workers, SSE hub, the rule consumer, the
 * live consumer and the HTTP server, started in dependency order and
 * stopped in reverse, so nothing runs against a resource already gone.
 * Streams are ended before the HTTP server stops (libmicrohttpd must not
 * stop with suspended connections). The delivery workers start before the
 * consumers, so what a previous run left queued goes out at once, and stop
 * before the relay, which publishes the dead letters they write.
 *
 * The fan-out worker is one thread that sleeps until a consumed event
 * queues a job (or a second passes, which also picks up jobs left by a
 * crash) and then works the jobs off a chunk per transaction. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "notifications/channels.h"
#include "notifications/notifications.h"
#include "notifications/notifications_service.h"
#include "tidings/idem.h"
#include "tidings/delivery.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tidings/service.h"

#define RELAY_STOP_TIMEOUT_MS 5000
#define KEEPALIVE_S           15
/* A chunk holds the database lock for a few milliseconds; between chunks
 * the worker pauses briefly, because a mutex is not fair: without the
 * pause it would take the lock straight back, and the HTTP handlers, the
 * consumer and the relay waiting on it would starve until the job ends. */
#define FANOUT_CHUNK    1000
#define FANOUT_PAUSE_MS 2
#define FANOUT_IDLE_MS  1000
#define FANOUT_RETRY_MS 500

struct notifications_service {
    notif_ctx_t ctx;
    char instance[TD_UUID_LEN + 1];
    td_db_t *db;
    td_relay_t *relay;
    td_vapid_t *vapid;
    td_delivery_t *dlv;
    td_consumer_t *cons;
    td_consumer_t *live;
    td_http_t *http;
    td_readiness_t ready;

    pthread_t worker;
    bool worker_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool work; /* a job was queued since the worker last looked */
    bool stop;
};

static void fanout_wake(void *arg)
{
    notifications_service_t *svc = arg;
    pthread_mutex_lock(&svc->mu);
    svc->work = true;
    pthread_cond_signal(&svc->cv);
    pthread_mutex_unlock(&svc->mu);
}

/* Sleeps up to ms or until woken; false once stopping. */
static bool worker_wait(notifications_service_t *svc, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&svc->mu);
    while (!svc->stop && !svc->work)
        if (pthread_cond_timedwait(&svc->cv, &svc->mu, &ts) != 0) break;
    svc->work = false;
    bool go = !svc->stop;
    pthread_mutex_unlock(&svc->mu);
    return go;
}

static bool stopping(notifications_service_t *svc)
{
    pthread_mutex_lock(&svc->mu);
    bool stop = svc->stop;
    pthread_mutex_unlock(&svc->mu);
    return stop;
}

static void *worker_main(void *arg)
{
    notifications_service_t *svc = arg;
    for (;;) {
        int rc = 0;
        size_t made;
        while (!stopping(svc) && (rc = notif_fanout_step(&svc->ctx.notif, &made)) > 0)
            td_sleep_ms(FANOUT_PAUSE_MS);
        int64_t pause = FANOUT_IDLE_MS;
        if (rc < 0) {
            td_warn("fan-out: a chunk failed (%s); retrying", td_strerror(rc));
            pause = FANOUT_RETRY_MS;
        }
        if (!worker_wait(svc, pause)) break;
    }
    return NULL;
}

/* Ready when the database, relay and both consumers are, and the live
 * consumer has its partitions: before that, a notification made now would
 * reach open streams only with the next one (by the gap fill). */
static bool service_ready(void *arg, char *why, size_t whylen)
{
    notifications_service_t *svc = arg;
    if (!td_readiness_check(&svc->ready, why, whylen)) return false;
    if (!td_consumer_assigned(svc->live)) {
        snprintf(why, whylen, "the live stream consumer has no partitions yet");
        return false;
    }
    return true;
}

/* The local path (notif_t.local): a committed notification to this
 * instance's streams. */
static void local_push(void *arg, const char *user_id, int64_t seq, const char *json)
{
    notif_stream_push(arg, user_id, seq, json);
}

static double streams_open(void *arg)
{
    return (double)td_sse_count(arg);
}

static double fanout_pending(void *arg)
{
    return (double)notif_fanout_pending(arg);
}

notifications_service_t *notifications_service_start(const td_config_t *cfg, char *errstr,
                                                     size_t errlen)
{
    static const char *const topics[] = {"users", "products", "orders"};
    static const char *const live_topics[] = {"notifications"};
    notifications_service_t *svc = td_calloc(1, sizeof(*svc));
    pthread_mutex_init(&svc->mu, NULL);
    pthread_cond_init(&svc->cv, NULL);

    svc->db = td_service_db(cfg, notif_migrations, notif_migration_cnt, errstr, errlen);
    if (!svc->db || td_idem_migrate(svc->db, errstr, errlen) != 0) goto fail;
    if (td_delivery_init(svc->db) != 0) {
        td_errf(errstr, errlen, TD_EIO, "cannot create the delivery queue");
        goto fail;
    }
    td_db_prune_add(svc->db, "notifications", notif_prune,
                    (int64_t)cfg->notification_retention_days * 86400000);
    svc->vapid = notif_vapid_load(svc->db, getenv(NOTIF_VAPID_ENV), errstr, errlen);
    if (!svc->vapid) goto fail;

    svc->ctx.cfg = cfg;
    svc->ctx.db = svc->db;
    svc->ctx.hub = td_sse_hub_new(KEEPALIVE_S);
    svc->ctx.vapid = svc->vapid;
    td_uuid_new(svc->instance);
    svc->ctx.notif = (notif_t){
        .db = svc->db,
        .cfg = cfg,
        .fanout_chunk = FANOUT_CHUNK,
        .deliver = notif_channels_deliver,
        .deliver_arg = (void *)cfg,
        .wake = fanout_wake,
        .wake_arg = svc,
        .local = local_push,
        .local_arg = &svc->ctx,
        .instance = svc->instance,
    };

    svc->relay = td_relay_start(cfg, svc->db, errstr, errlen);
    if (!svc->relay) goto fail;

    if (pthread_create(&svc->worker, NULL, worker_main, svc) != 0) {
        td_errf(errstr, errlen, TD_EIO, "cannot start the fan-out worker");
        goto fail;
    }
    svc->worker_started = true;

    td_delivery_opts_t dopts = {
        .db = svc->db,
        .cfg = cfg,
        .vapid = svc->vapid,
        .gone = notif_channels_gone,
    };
    svc->dlv = td_delivery_start(&dopts, errstr, errlen);
    if (!svc->dlv) goto fail;

    td_handler_t handlers[32];
    td_consumer_opts_t copts = {
        .group = "tidings-notifications",
        .topics = topics,
        .topic_cnt = TD_ARRAY_SIZE(topics),
        .handlers = handlers,
        .handler_cnt = notif_handlers(handlers, TD_ARRAY_SIZE(handlers)),
        .ctx = &svc->ctx,
        .db = svc->db,
    };
    svc->cons = td_consumer_start(cfg, &copts, errstr, errlen);
    if (!svc->cons) goto fail;

    /* A group of its own per instance, so every instance sees every
     * notification; from the latest offset, because a stream that was
     * away reconnects with Last-Event-ID and replays from the database. */
    char group[80];
    snprintf(group, sizeof(group), "tidings-notifications-live-%s", svc->instance);
    td_consumer_opts_t lopts = {
        .group = group,
        .topics = live_topics,
        .topic_cnt = 1,
        .handlers = notif_live_handlers,
        .handler_cnt = notif_live_handler_cnt,
        .ctx = &svc->ctx,
        /* No inbox (see events.c); the database only dead-letters, through
         * the outbox, a record that is no CloudEvent at all. */
        .db = svc->db,
        .offset_reset = "latest",
        .stateless = true,
        /* What this instance wrote reached its streams by the local path. */
        .skip_header = NOTIF_INSTANCE_HEADER,
        .skip_value = svc->instance,
    };
    svc->live = td_consumer_start(cfg, &lopts, errstr, errlen);
    if (!svc->live) goto fail;

    svc->ready.db = svc->db;
    svc->ready.relay = svc->relay;
    svc->ready.cons[0] = svc->cons;
    svc->ready.cons[1] = svc->live;
    svc->ready.cons_cnt = 2;

    td_metric_describe("tidings_notifications_created_total", "counter",
                       "Notifications created, by the event type that caused them.");
    td_metric_describe("tidings_notifications_streams_open", "gauge",
                       "Live notification streams open on this instance.");
    td_metric_describe("tidings_notifications_stream_writes_total", "counter",
                       "Notifications written to live streams (live and replayed).");
    td_metric_describe("tidings_notifications_replayed_total", "counter",
                       "Notifications replayed to streams that reconnected.");
    td_metric_describe("tidings_notifications_fanout_pending", "gauge",
                       "Recipients of fan-out jobs still waiting for their notification.");
    td_metric_gauge_fn("tidings_notifications_streams_open", NULL, streams_open, svc->ctx.hub);
    td_metric_gauge_fn("tidings_notifications_fanout_pending", NULL, fanout_pending, svc->db);

    td_http_opts_t hopts = {
        .service = "notifications",
        .addr = cfg->listen_addr ? cfg->listen_addr : "127.0.0.1",
        .port = td_config_port(cfg, TD_SVC_NOTIFICATIONS),
        .routes = notif_routes,
        .route_cnt = notif_route_cnt,
        .form_routes = notif_form_routes,
        .ctx = &svc->ctx,
        .secret = cfg->secret,
        .secret_len = cfg->secret_len,
        .ready = service_ready,
        .ready_arg = svc,
        .cors_origins = cfg->cors_origins,
        .idem_db = svc->db,
    };
    svc->http = td_http_start(&hopts, errstr, errlen);
    if (!svc->http) goto fail;

    td_info("notifications: listening on %s:%d", hopts.addr, td_http_port(svc->http));
    return svc;

fail:
    notifications_service_stop(svc);
    return NULL;
}

int notifications_service_port(const notifications_service_t *svc)
{
    return td_http_port(svc->http);
}

bool notifications_service_live(const notifications_service_t *svc)
{
    return td_consumer_assigned(svc->live);
}

void notifications_service_stop(notifications_service_t *svc)
{
    if (!svc) return;
    if (svc->ctx.hub) td_sse_hub_close(svc->ctx.hub);
    if (svc->http) td_http_stop(svc->http);
    td_metric_unregister(svc->ctx.hub);
    td_metric_unregister(svc->db);
    if (svc->live) td_consumer_stop(svc->live);
    if (svc->cons) td_consumer_stop(svc->cons);
    if (svc->worker_started) {
        pthread_mutex_lock(&svc->mu);
        svc->stop = true;
        pthread_cond_signal(&svc->cv);
        pthread_mutex_unlock(&svc->mu);
        pthread_join(svc->worker, NULL);
    }
    td_delivery_stop(svc->dlv);
    if (svc->relay) td_relay_stop(svc->relay, RELAY_STOP_TIMEOUT_MS);
    if (svc->ctx.hub) td_sse_hub_free(svc->ctx.hub);
    if (svc->db) td_db_close(svc->db);
    td_vapid_free(svc->vapid);
    pthread_cond_destroy(&svc->cv);
    pthread_mutex_destroy(&svc->mu);
    free(svc);
}
