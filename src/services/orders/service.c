/* The orders service's lifecycle: database, outbox relay, consumer and HTTP
 * server, started in dependency order and stopped in reverse, so that
 * nothing runs against a resource already gone. Shared by
 * orders_service_decl and the integration tests, which run several services
 * in one process. */
#include <stdio.h>
#include <stdlib.h>

#include "orders/orders.h"
#include "orders/orders_service.h"
#include "tidings/log.h"
#include "tidings/app.h"

struct orders_service {
    orders_ctx_t ctx;
    td_app_t app;
};

void *orders_service_start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    static const char *const topics[] = {"reservations", "payments"};
    orders_service_t *svc = td_calloc(1, sizeof *svc);
    td_app_opts_t opts = {
        .service = TD_SVC_ORDERS,
        .migs = orders_migrations,
        .mig_cnt = orders_migration_cnt,
        .routes = orders_routes,
        .route_cnt = orders_route_cnt,
        .ctx = &svc->ctx,
        .topics = topics,
        .topic_cnt = TD_ARRAY_SIZE(topics),
        .handlers = orders_handlers,
        .handler_cnt = orders_handler_cnt,
    };

    if (td_app_open(&svc->app, cfg, &opts, errstr, errlen) != 0) goto fail;
    svc->ctx.cfg = cfg;
    svc->ctx.db = svc->app.db;
    if (td_app_serve(&svc->app, &opts, errstr, errlen) != 0) goto fail;
    return svc;
fail:
    orders_service_stop(svc);
    return NULL;
}

int orders_service_port(const orders_service_t *svc)
{
    return td_app_port(&svc->app);
}

void orders_service_stop(void *arg)
{
    orders_service_t *svc = arg;
    if (!svc) return;
    td_app_close(&svc->app);
    free(svc);
}

const td_service_decl_t orders_service_decl = {
    .id = TD_SVC_ORDERS,
    .summary = "the orders service",
    .start = orders_service_start,
    .stop = orders_service_stop,
};
