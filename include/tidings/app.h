/* The parts every service runs, in dependency order: its database and the
 * outbox relay (none for a service without a schema), the service's own
 * components (threads, hubs, readers, in the order given), an optional
 * consumer with its inbox, and the HTTP server whose /readyz covers them;
 * stopped in reverse, so that nothing runs against a resource already
 * gone. A service's service.c fills a td_app_opts_t and keeps only what is
 * its own. Not thread-safe: start and stop from one thread. */
#ifndef TIDINGS_APP_H
#define TIDINGS_APP_H

#include "tidings/bus.h"
#include "tidings/http.h"
#include "tidings/service.h"

typedef struct td_app td_app_t;

/* One part of a service beyond the shared ones. start runs after the
 * database and the relay (app->db may be NULL for a service without a
 * schema) and before the consumer and the HTTP server; 0 or an error with
 * errstr. quiesce (optional) runs before the HTTP server stops, e.g. to
 * end streams; stop after it, in reverse order, and only for components
 * whose start succeeded. */
typedef struct td_component {
    const char *name;
    int (*start)(td_app_t *app, void *ctx, char *errstr, size_t errlen);
    void (*quiesce)(td_app_t *app, void *ctx);
    void (*stop)(td_app_t *app, void *ctx);
} td_component_t;

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
    const td_component_t *components; /* started in order, after db and relay */
    size_t component_cnt;
    /* /readyz: td_readiness_check over app->ready unless ready is set. */
    td_ready_fn ready;
    void *ready_arg;
    unsigned http_threads; /* 0: the HTTP layer's default */
} td_app_opts_t;

struct td_app {
    const td_config_t *cfg; /* borrowed: must outlive the app */
    td_db_t *db;
    td_relay_t *relay;
    td_consumer_t *cons; /* NULL when the service consumes nothing */
    td_http_t *http;
    td_readiness_t ready;
    td_app_opts_t opts; /* a copy; the arrays it points to must outlive the app */
    size_t started;     /* components whose start succeeded */
};

/* Phase one: opens <data>/<service>.db and starts the outbox relay (not
 * when opts has no migrations), so the caller can put app->db into its
 * ctx (and do start-up work such as creating an admin) before anything is
 * served. 0, or an error with errstr (call td_app_close either way). */
int td_app_open(td_app_t *app, const td_config_t *cfg, const td_app_opts_t *opts, char *errstr,
                size_t errlen);
/* Phase two: the components, the consumer (group "tidings-<service>") and
 * the HTTP server on the service's port (0 = any free one). 0 or an error
 * with errstr. */
int td_app_serve(td_app_t *app, const td_app_opts_t *opts, char *errstr, size_t errlen);
/* The port the server listens on. */
int td_app_port(const td_app_t *app);
/* Graceful stop: the components' quiesce, HTTP (requests in flight
 * finish), consumer (stored offsets committed), the components' stop in
 * reverse, relay (outbox flushed, bounded), database. Safe on a partly
 * started or zeroed app; leaves it zeroed. */
void td_app_close(td_app_t *app);

/* ---- a service that is only an app -------------------------------------- */

/* What the routes and handlers of a service that needs nothing but its
 * configuration and database get as ctx (orders, payments, products). */
typedef struct td_app_ctx {
    const td_config_t *cfg;
    td_db_t *db;
} td_app_ctx_t;

typedef struct td_app_service td_app_service_t;

/* Opens and serves an app by opts (whose ctx is ignored: the routes and
 * handlers get the service's own td_app_ctx_t). cfg and the arrays opts
 * points to are borrowed and must outlive the service. NULL with errstr;
 * what was started is stopped again. */
td_app_service_t *td_app_service_start(const td_app_opts_t *opts, const td_config_t *cfg,
                                       char *errstr, size_t errlen);
/* The HTTP port actually bound. */
int td_app_service_port(const td_app_service_t *svc);
td_db_t *td_app_service_db(const td_app_service_t *svc);
/* Graceful stop (td_app_close) and free. NULL is fine. A void * so that
 * it is a td_service_decl_t's stop as it is. */
void td_app_service_stop(void *svc);

#endif
