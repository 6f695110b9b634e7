/* The payments service's lifecycle: database, outbox relay, consumer and
 * HTTP server, started in dependency order and stopped in reverse, so that
 * nothing runs against a resource already gone. Shared by
 * payments_service_decl and the integration tests, which run several
 * services in one process. */
#include <stdio.h>
#include <stdlib.h>

#include "payments/payments.h"
#include "payments/payments_service.h"
#include "tidings/log.h"
#include "tidings/app.h"

void *payments_service_start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    static const char *const topics[] = {"reservations"};
    td_app_opts_t opts = {
        .service = TD_SVC_PAYMENTS,
        .http_threads = TD_HTTP_WRITE_THREADS,
        .migs = payments_migrations,
        .mig_cnt = payments_migration_cnt,
        .routes = payments_routes,
        .route_cnt = payments_route_cnt,
        .topics = topics,
        .topic_cnt = TD_ARRAY_SIZE(topics),
        .handlers = payments_handlers,
        .handler_cnt = payments_handler_cnt,
    };
    return td_app_service_start(&opts, cfg, errstr, errlen);
}

const td_service_decl_t payments_service_decl = {
    .id = TD_SVC_PAYMENTS,
    .summary = "the payments service",
    .start = payments_service_start,
    .stop = td_app_service_stop,
};
