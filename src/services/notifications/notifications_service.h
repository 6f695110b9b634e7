/* The notifications service as a whole: its database, outbox relay, the
 * consumer that applies the rule table (group "tidings-notifications" on
 * users, products and orders), the fan-out worker, the live consumer that
 * feeds this instance's SSE streams (topic notifications, a group of its
 * own, from the latest offset, with an in-memory inbox), the Web Push and
 * webhook delivery queue (tidings/delivery.h, with the VAPID key of
 * channels.h), and the HTTP server. Started and stopped in-process by
 * td_service_main (notifications_service_decl) and by the integration tests.
 * Start and stop from one thread; the service runs on its own threads in
 * between. */
#ifndef TIDINGS_NOTIFICATIONS_SERVICE_H
#define TIDINGS_NOTIFICATIONS_SERVICE_H

#include "notifications/notifications.h"
#include "tidings/bus.h"
#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/http.h"
#include "tidings/service.h"
#include "tidings/sse.h"
#include "tidings/webpush.h"

typedef struct notifications_service notifications_service_t;

/* Opens <data>/notifications.db, loads (or makes) the VAPID key, starts
 * the relay, the fan-out worker, the delivery workers, both consumers and
 * the HTTP server on td_config_port(cfg,
 * TD_SVC_NOTIFICATIONS) (0 = any free port). cfg is borrowed and must
 * outlive the service. NULL with errstr on failure. */
void *notifications_service_start(const td_config_t *cfg, char *errstr, size_t errlen);
/* The HTTP port actually bound. */
int notifications_service_port(const notifications_service_t *svc);
/* True once the live consumer has been assigned its partitions, so a
 * notification created from now on reaches this instance's streams
 * without waiting for the next one (tests and /readyz). */
bool notifications_service_live(const notifications_service_t *svc);
/* Graceful stop: streams ended, HTTP (finishing requests in flight),
 * consumers, fan-out worker, delivery workers (a try in flight is cut and
 * stays queued for the next start), relay (flushing the outbox),
 * database. NULL is fine. */
void notifications_service_stop(void *svc);
/* `tidings notifications`: the service as a process (td_service_main), with
 * the two functions above as its start and stop (hence their void *:
 * the service is a notifications_service_t). */
extern const td_service_decl_t notifications_service_decl;

/* What routes.c, stream.c and events.c get as their ctx (req->ctx, the
 * consumers' ctx): borrowed, alive while the service runs. */
typedef struct notif_ctx {
    const td_config_t *cfg;
    td_db_t *db;
    notif_t notif;           /* the domain with its hooks */
    td_sse_hub_t *hub;       /* this instance's live streams, by userId */
    const td_vapid_t *vapid; /* the application server's Web Push key */
    int64_t live_seen;       /* live records handled (live consumer thread) */
} notif_ctx_t;

/* routes.c */
extern const td_route_t notif_routes[];
extern const size_t notif_route_cnt;

/* stream.c: GET /notifications/stream, and the live push of one
 * notification (its JSON text) to the streams of user_id. */
void notif_stream_get(td_req_t *req, td_resp_t *resp);
void notif_stream_push(notif_ctx_t *ctx, const char *user_id, int64_t seq, const char *json);

/* events.c: the handlers of the rule consumer (one per handled event
 * type, into out, at most max; returns the count) and of the live
 * consumer. */
size_t notif_handlers(td_handler_t *out, size_t max);
extern const td_handler_t notif_live_handlers[];
extern const size_t notif_live_handler_cnt;

#endif
