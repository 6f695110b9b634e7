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

void *orders_service_start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    static const char *const topics[] = {"reservations", "payments"};
    td_app_opts_t opts = {
        .service = TD_SVC_ORDERS,
        .http_threads = TD_HTTP_WRITE_THREADS,
        .migs = orders_migrations,
        .mig_cnt = orders_migration_cnt,
        .routes = orders_routes,
        .route_cnt = orders_route_cnt,
        .topics = topics,
        .topic_cnt = TD_ARRAY_SIZE(topics),
        .handlers = orders_handlers,
        .handler_cnt = orders_handler_cnt,
    };
    return td_app_service_start(&opts, cfg, errstr, errlen);
}

const td_service_decl_t orders_service_decl = {
    .id = TD_SVC_ORDERS,
    .summary = "the orders service",
    .start = orders_service_start,
    .stop = td_app_service_stop,
};
