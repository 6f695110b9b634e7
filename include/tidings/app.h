/* The parts every service runs, in dependency order: its database, the
 * outbox relay, an optional consumer with its inbox, and the HTTP server
 * whose /readyz covers all three; stopped in reverse, so that nothing runs
 * against a resource already gone. A service's service.c fills a
 * td_app_opts_t and keeps only what is its own (admin accounts, extra
 * threads). Not thread-safe: start and stop from one thread. */
#ifndef TIDINGS_APP_H
#define TIDINGS_APP_H

#include "tidings/bus.h"
#include "tidings/http.h"
#include "tidings/service.h"

typedef struct td_app_opts {
    td_service_t service;       /* name, port and consumer group from it */
    const td_migration_t *migs; /* the service's schema */
    size_t mig_cnt;
    const td_route_t *routes; /* its HTTP API */
    size_t route_cnt;
    void *ctx;                 /* req->ctx for routes, ctx for handlers */
    const char *const *topics; /* consumed topics (short names); none if 0 */
    size_t topic_cnt;
    const td_handler_t *handlers;
    size_t handler_cnt;
} td_app_opts_t;

typedef struct td_app {
    const td_config_t *cfg; /* borrowed: must outlive the app */
    td_db_t *db;
    td_relay_t *relay;
    td_consumer_t *cons; /* NULL when the service consumes nothing */
    td_http_t *http;
    td_readiness_t ready;
} td_app_t;

/* Phase one: opens <data>/<service>.db and starts the outbox relay, so the
 * caller can put app->db into its ctx (and do start-up work such as
 * creating an admin) before anything is served. 0, or an error with errstr
 * (call td_app_close either way). */
int td_app_open(td_app_t *app, const td_config_t *cfg, const td_app_opts_t *opts, char *errstr,
                size_t errlen);
/* Phase two: the consumer (group "tidings-<service>") and the HTTP server
 * on the service's port (0 = any free one). 0 or an error with errstr. */
int td_app_serve(td_app_t *app, const td_app_opts_t *opts, char *errstr, size_t errlen);
/* The port the server listens on. */
int td_app_port(const td_app_t *app);
/* Graceful stop: HTTP (requests in flight finish), consumer (stored offsets
 * committed), relay (outbox flushed, bounded), database. Safe on a partly
 * started or zeroed app; leaves it zeroed. */
void td_app_close(td_app_t *app);

#endif
