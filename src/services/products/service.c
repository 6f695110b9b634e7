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

void *products_service_start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    static const char *const topics[] = {"orders", "payments"};
    td_app_opts_t opts = {
        .service = TD_SVC_PRODUCTS,
        .http_threads = TD_HTTP_WRITE_THREADS,
        .migs = products_migrations,
        .mig_cnt = products_migration_cnt,
        .routes = products_routes,
        .route_cnt = products_route_cnt,
        .topics = topics,
        .topic_cnt = TD_ARRAY_SIZE(topics),
        .handlers = products_handlers,
        .handler_cnt = products_handler_cnt,
    };
    return td_app_service_start(&opts, cfg, errstr, errlen);
}

const td_service_decl_t products_service_decl = {
    .id = TD_SVC_PRODUCTS,
    .summary = "the products service",
    .start = products_service_start,
    .stop = td_app_service_stop,
};
