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

struct payments_service {
    payments_ctx_t ctx;
    td_app_t app;
};

void *payments_service_start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    static const char *const topics[] = {"reservations"};
    payments_service_t *svc = td_calloc(1, sizeof *svc);
    td_app_opts_t opts = {
        .service = TD_SVC_PAYMENTS,
        .migs = payments_migrations,
        .mig_cnt = payments_migration_cnt,
        .routes = payments_routes,
        .route_cnt = payments_route_cnt,
        .ctx = &svc->ctx,
        .topics = topics,
        .topic_cnt = TD_ARRAY_SIZE(topics),
        .handlers = payments_handlers,
        .handler_cnt = payments_handler_cnt,
    };

    if (td_app_open(&svc->app, cfg, &opts, errstr, errlen) != 0) goto fail;
    svc->ctx.cfg = cfg;
    svc->ctx.db = svc->app.db;
    if (td_app_serve(&svc->app, &opts, errstr, errlen) != 0) goto fail;
    return svc;
fail:
    payments_service_stop(svc);
    return NULL;
}

int payments_service_port(const payments_service_t *svc)
{
    return td_app_port(&svc->app);
}

void payments_service_stop(void *arg)
{
    payments_service_t *svc = arg;
    if (!svc) return;
    td_app_close(&svc->app);
    free(svc);
}

const td_service_decl_t payments_service_decl = {
    .id = TD_SVC_PAYMENTS,
    .summary = "the payments service",
    .start = payments_service_start,
    .stop = payments_service_stop,
};
