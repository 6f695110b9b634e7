/* The orders service's lifecycle: database, outbox relay, consumer and HTTP
 * server, started in dependency order and stopped in reverse, so that
 * nothing runs against a resource already gone. Shared by main.c and the
 * integration tests, which run several services in one process. */
#include <stdio.h>
#include <stdlib.h>

#include "orders/orders.h"
#include "orders/orders_service.h"
#include "tidings/log.h"
#include "tidings/service.h"

/* How long a stop waits for the outbox to be delivered. */
#define RELAY_STOP_TIMEOUT_MS 5000

struct orders_service {
    orders_ctx_t ctx;
    td_db_t *db;
    td_relay_t *relay;
    td_consumer_t *cons;
    td_http_t *http;
    td_readiness_t ready;
};

orders_service_t *orders_service_start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    static const char *const topics[] = {"reservations", "payments"};
    orders_service_t *svc = td_calloc(1, sizeof *svc);

    svc->db = td_service_db(cfg, orders_migrations, orders_migration_cnt, errstr, errlen);
    if (!svc->db) goto fail;
    svc->ctx.cfg = cfg;
    svc->ctx.db = svc->db;

    svc->relay = td_relay_start(cfg, svc->db, errstr, errlen);
    if (!svc->relay) goto fail;

    td_consumer_opts_t copts = {
        .group = "tidings-orders",
        .topics = topics,
        .topic_cnt = TD_ARRAY_SIZE(topics),
        .handlers = orders_handlers,
        .handler_cnt = orders_handler_cnt,
        .ctx = &svc->ctx,
        .db = svc->db,
    };
    svc->cons = td_consumer_start(cfg, &copts, errstr, errlen);
    if (!svc->cons) goto fail;

    svc->ready.db = svc->db;
    svc->ready.relay = svc->relay;
    svc->ready.cons[0] = svc->cons;
    svc->ready.cons_cnt = 1;

    td_http_opts_t hopts = {
        .service = "orders",
        .addr = cfg->listen_addr ? cfg->listen_addr : "127.0.0.1",
        .port = td_config_port(cfg, TD_SVC_ORDERS),
        .routes = orders_routes,
        .route_cnt = orders_route_cnt,
        .ctx = &svc->ctx,
        .secret = cfg->secret,
        .secret_len = cfg->secret_len,
        .ready = td_readiness_check,
        .ready_arg = &svc->ready,
        .cors = true, /* the storefront calls the APIs directly (web/README.md) */
    };
    svc->http = td_http_start(&hopts, errstr, errlen);
    if (!svc->http) goto fail;

    td_info("orders: listening on %s:%d", hopts.addr, td_http_port(svc->http));
    return svc;
fail:
    orders_service_stop(svc);
    return NULL;
}

int orders_service_port(const orders_service_t *svc)
{
    return td_http_port(svc->http);
}

void orders_service_stop(orders_service_t *svc)
{
    if (!svc) return;
    if (svc->http) td_http_stop(svc->http);
    if (svc->cons) td_consumer_stop(svc->cons);
    if (svc->relay) td_relay_stop(svc->relay, RELAY_STOP_TIMEOUT_MS);
    if (svc->db) td_db_close(svc->db);
    free(svc);
}
