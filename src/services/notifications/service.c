/* The notifications service's lifecycle, on the shared one (tidings/app.h):
 * database and outbox relay, then its components (the delivery queue's
 * tables, the VAPID key and the SSE hub; the fan-out worker; the delivery
 * workers; the live consumer), the rule consumer and the HTTP server,
 * started in dependency order and stopped in reverse, so nothing runs
 * against a resource already gone.
 * Streams are ended before the HTTP server stops (libmicrohttpd must not
 * stop with suspended connections). The delivery workers start before the
 * consumers, so what a previous run left queued goes out at once, and stop
 * before the relay, which publishes the dead letters they write.
 *
 * The fan-out worker is one thread that sleeps until a consumed event
 * queues a job (or a second passes, which also picks up jobs left by a
 * crash) and then works the jobs off a chunk per transaction. */
#include <assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "notifications/channels.h"
#include "notifications/notifications.h"
#include "notifications/notifications_service.h"
#include "tidings/app.h"
#include "tidings/delivery.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tidings/service.h"
#include "tidings/worker.h"

#define KEEPALIVE_S 15
/* A chunk holds the database writer for a few milliseconds; between
 * chunks the worker pauses briefly, because a mutex is not fair: without
 * the pause it would take the writer straight back, and the HTTP handlers,
 * the consumer and the relay waiting on it would starve until the job
 * ends. */
#define FANOUT_CHUNK    1000
#define FANOUT_PAUSE_MS 2
#define FANOUT_IDLE_MS  1000
#define FANOUT_RETRY_MS 500

struct notifications_service {
    notif_ctx_t ctx;
    char instance[TD_UUID_LEN + 1];
    td_vapid_t *vapid;
    td_worker_t *fanout;
    td_delivery_t *dlv;
    td_consumer_t *live;
    td_handler_t handlers[32];
    td_app_t app;
};

static notifications_service_t *of_ctx(void *ctx)
{
    return (notifications_service_t *)((char *)ctx - offsetof(notifications_service_t, ctx));
}

/* ---- the fan-out worker ---- */

/* notif_t.wake: a consumed event queued a job (inside its unit). Only the
 * rule consumer queues jobs, and it starts after the fan-out component and
 * stops before it (notif_components[], td_app_close), so the worker is
 * there. */
static void fanout_wake(void *arg)
{
    notifications_service_t *svc = arg;
    assert(svc->fanout && "a fan-out job queued outside the fan-out worker's life");
    td_worker_wake(svc->fanout);
}

/* Works the jobs off, a chunk per unit, until none is left; then sleeps
 * until woken or a second passes (which also picks up jobs left by a
 * crash). */
static int64_t fanout_round(td_worker_t *w, void *arg, bool woken, int64_t now)
{
    (void)woken;
    notifications_service_t *svc = arg;
    int rc = 0;
    size_t made;
    while (!td_worker_stopping(w) && (rc = notif_fanout_step(&svc->ctx.notif, &made)) > 0)
        td_sleep_ms(FANOUT_PAUSE_MS);
    if (rc < 0) {
        td_warn("fan-out: a chunk failed (%s); retrying", td_strerror(rc));
        return td_mono_ms() + FANOUT_RETRY_MS;
    }
    return now + FANOUT_IDLE_MS;
}

/* Ready when the database, relay and both consumers are, and the live
 * consumer has its partitions: before that, a notification made now would
 * reach open streams only with the next one (by the gap fill). */
static bool service_ready(void *arg, char *why, size_t whylen)
{
    notifications_service_t *svc = arg;
    if (!td_readiness_check(&svc->app.ready, why, whylen)) return false;
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

/* ---- components ---- */

/* The delivery queue's tables, retention, the VAPID key, the hub and the
 * notif_t the handlers use; the metrics. */
static int base_start(td_app_t *app, void *ctx, char *errstr, size_t errlen)
{
    notifications_service_t *svc = of_ctx(ctx);
    const td_config_t *cfg = app->cfg;
    if (td_delivery_init(app->db) != 0)
        return td_errf(errstr, errlen, TD_EIO, "cannot create the delivery queue");
    td_db_prune_add(app->db, "notifications", notif_prune,
                    (int64_t)cfg->notification_retention_days * 86400000);
    svc->vapid = notif_vapid_load(app->db, getenv(NOTIF_VAPID_ENV), errstr, errlen);
    if (!svc->vapid) return TD_EIO;

    svc->ctx.cfg = cfg;
    svc->ctx.db = app->db;
    svc->ctx.hub = td_sse_hub_new(KEEPALIVE_S);
    svc->ctx.vapid = svc->vapid;
    svc->ctx.notif = (notif_t){
        .db = app->db,
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
    td_metric_gauge_fn("tidings_notifications_fanout_pending", NULL, fanout_pending, app->db);
    return 0;
}

/* Streams end before the HTTP server stops (libmicrohttpd must not stop
 * with suspended connections). */
static void base_quiesce(td_app_t *app, void *ctx)
{
    notifications_service_t *svc = of_ctx(ctx);
    td_sse_hub_close(svc->ctx.hub);
    td_metric_unregister(svc->ctx.hub);
    td_metric_unregister(app->db);
}

static void base_stop(td_app_t *app, void *ctx)
{
    (void)app;
    notifications_service_t *svc = of_ctx(ctx);
    td_sse_hub_free(svc->ctx.hub);
    svc->ctx.hub = NULL;
    td_vapid_free(svc->vapid);
    svc->vapid = NULL;
}

static int fanout_start(td_app_t *app, void *ctx, char *errstr, size_t errlen)
{
    (void)app;
    notifications_service_t *svc = of_ctx(ctx);
    td_worker_opts_t wopts = {.name = "fanout", .round = fanout_round, .arg = svc};
    svc->fanout = td_worker_start(&wopts, errstr, errlen);
    return svc->fanout ? 0 : TD_EIO;
}

static void fanout_stop(td_app_t *app, void *ctx)
{
    (void)app;
    notifications_service_t *svc = of_ctx(ctx);
    /* The consumers, which wake it, have stopped by now. */
    td_worker_stop(svc->fanout);
    svc->fanout = NULL;
}

/* The delivery workers start before the consumers, so what a previous
 * run left queued goes out at once, and stop before the relay, which
 * publishes the dead letters they write. */
static int delivery_start(td_app_t *app, void *ctx, char *errstr, size_t errlen)
{
    notifications_service_t *svc = of_ctx(ctx);
    td_delivery_opts_t dopts = {
        .db = app->db,
        .cfg = app->cfg,
        .vapid = svc->vapid,
        .gone = notif_channels_gone,
    };
    svc->dlv = td_delivery_start(&dopts, errstr, errlen);
    return svc->dlv ? 0 : TD_EIO;
}

static void delivery_stop(td_app_t *app, void *ctx)
{
    (void)app;
    notifications_service_t *svc = of_ctx(ctx);
    td_delivery_stop(svc->dlv);
    svc->dlv = NULL;
}

/* A group of its own per instance, so every instance sees every
 * notification; from the latest offset, because a stream that was away
 * reconnects with Last-Event-ID and replays from the database. */
static int live_start(td_app_t *app, void *ctx, char *errstr, size_t errlen)
{
    static const char *const live_topics[] = {"notifications"};
    notifications_service_t *svc = of_ctx(ctx);
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
        .db = app->db,
        .offset_reset = "latest",
        .stateless = true,
        /* What this instance wrote reached its streams by the local path. */
        .skip_header = NOTIF_INSTANCE_HEADER,
        .skip_value = svc->instance,
    };
    svc->live = td_consumer_start(app->cfg, &lopts, errstr, errlen);
    if (!svc->live) return TD_EIO;
    td_readiness_add(&app->ready, svc->live);
    return 0;
}

static void live_stop(td_app_t *app, void *ctx)
{
    (void)app;
    notifications_service_t *svc = of_ctx(ctx);
    td_consumer_stop(svc->live);
    svc->live = NULL;
}

static const td_component_t notif_components[] = {
    {.name = "base", .start = base_start, .quiesce = base_quiesce, .stop = base_stop},
    {.name = "fanout", .start = fanout_start, .stop = fanout_stop},
    {.name = "delivery", .start = delivery_start, .stop = delivery_stop},
    {.name = "live", .start = live_start, .stop = live_stop},
};

void *notifications_service_start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    static const char *const topics[] = {"users", "products", "orders"};
    notifications_service_t *svc = td_calloc(1, sizeof(*svc));
    td_uuid_new(svc->instance);
    td_app_opts_t opts = {
        .service = TD_SVC_NOTIFICATIONS,
        .migs = notif_migrations,
        .mig_cnt = notif_migration_cnt,
        .routes = notif_routes,
        .route_cnt = notif_route_cnt,
        .ctx = &svc->ctx,
        .topics = topics,
        .topic_cnt = TD_ARRAY_SIZE(topics),
        .handlers = svc->handlers,
        .handler_cnt = notif_handlers(svc->handlers, TD_ARRAY_SIZE(svc->handlers)),
        .components = notif_components,
        .component_cnt = TD_ARRAY_SIZE(notif_components),
        .ready = service_ready,
        .ready_arg = svc,
    };
    if (td_app_open(&svc->app, cfg, &opts, errstr, errlen) != 0) goto fail;
    if (td_app_serve(&svc->app, &opts, errstr, errlen) != 0) goto fail;
    td_info("notifications: listening on %s:%d", cfg->listen_addr ? cfg->listen_addr : "127.0.0.1",
            td_app_port(&svc->app));
    return svc;

fail:
    notifications_service_stop(svc);
    return NULL;
}

int notifications_service_port(const notifications_service_t *svc)
{
    return td_app_port(&svc->app);
}

bool notifications_service_live(const notifications_service_t *svc)
{
    return td_consumer_assigned(svc->live);
}

void notifications_service_stop(void *arg)
{
    notifications_service_t *svc = arg;
    if (!svc) return;
    td_app_close(&svc->app);
    free(svc);
}

const td_service_decl_t notifications_service_decl = {
    .id = TD_SVC_NOTIFICATIONS,
    .summary = "the notifications service",
    .help = "\nTIDINGS_VAPID_PRIVATE_KEY is the Web Push (VAPID) key as 43 base64url\n"
            "characters (the P-256 private scalar); without it a key is generated once and\n"
            "kept in <data>/notifications.db. Changing it voids every browser's push\n"
            "subscription. TIDINGS_VAPID_SUBJECT is the contact pushed with it (mailto: or\n"
            "https:). TIDINGS_ALLOW_HTTP_ENDPOINTS=1 accepts http:// push endpoints and\n"
            "webhooks on loopback, for tests.\n",
    .start = notifications_service_start,
    .stop = notifications_service_stop,
};
