/* The products service's lifecycle: database (catalogue and reservations),
 * outbox relay, the reservation consumer and the HTTP server, started in
 * dependency order and stopped in reverse, so nothing runs against a
 * resource already gone. Shared by products_service_decl and the integration
 * tests. */
#include <stdio.h>
#include <stdlib.h>

#include "products/events.h"
#include "products/products.h"
#include "products/products_service.h"
#include "tidings/log.h"
#include "tidings/app.h"

struct products_service {
    products_ctx_t ctx;
    td_app_t app;
};

void *products_service_start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    static const char *const topics[] = {"orders", "payments"};
    products_service_t *svc = td_calloc(1, sizeof *svc);
    td_app_opts_t opts = {
        .service = TD_SVC_PRODUCTS,
        .migs = products_migrations,
        .mig_cnt = products_migration_cnt,
        .routes = products_routes,
        .route_cnt = products_route_cnt,
        .ctx = &svc->ctx,
        .topics = topics,
        .topic_cnt = TD_ARRAY_SIZE(topics),
        .handlers = products_handlers,
        .handler_cnt = products_handler_cnt,
    };

    if (td_app_open(&svc->app, cfg, &opts, errstr, errlen) != 0) goto fail;
    svc->ctx.cfg = cfg;
    svc->ctx.db = svc->app.db;
    if (td_app_serve(&svc->app, &opts, errstr, errlen) != 0) goto fail;
    return svc;
fail:
    products_service_stop(svc);
    return NULL;
}

int products_service_port(const products_service_t *svc)
{
    return td_app_port(&svc->app);
}

td_db_t *products_service_db(const products_service_t *svc)
{
    return svc->app.db;
}

void products_service_stop(void *arg)
{
    products_service_t *svc = arg;
    if (!svc) return;
    td_app_close(&svc->app);
    free(svc);
}

const td_service_decl_t products_service_decl = {
    .id = TD_SVC_PRODUCTS,
    .summary = "the products service",
    .start = products_service_start,
    .stop = products_service_stop,
};
