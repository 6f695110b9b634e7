/* The products service's lifecycle: database (catalogue and reservations),
 * outbox relay, the reservation consumer and the HTTP server, started in
 * dependency order and stopped in reverse, so nothing runs against a
 * resource already gone. Shared by main.c and the integration tests. */
#include <stdio.h>
#include <stdlib.h>

#include "products/events.h"
#include "products/products.h"
#include "products/products_service.h"
#include "tidings/log.h"
#include "tidings/service.h"

/* How long a stop waits for the outbox to be delivered. */
#define RELAY_STOP_TIMEOUT_MS 5000

struct products_service {
    products_ctx_t ctx;
    td_db_t *db;
    td_relay_t *relay;
    td_consumer_t *cons;
    td_http_t *http;
    td_readiness_t ready;
};

products_service_t *products_service_start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    static const char *const topics[] = {"orders", "payments"};
    products_service_t *svc = td_calloc(1, sizeof *svc);

    svc->db = td_service_db(cfg, products_migrations, products_migration_cnt, errstr, errlen);
    if (!svc->db) goto fail;
    svc->ctx.cfg = cfg;
    svc->ctx.db = svc->db;

    svc->relay = td_relay_start(cfg, svc->db, errstr, errlen);
    if (!svc->relay) goto fail;

    /* The reservation handlers take the configuration as their ctx
     * (events.h). */
    td_consumer_opts_t copts = {
        .group = "tidings-products",
        .topics = topics,
        .topic_cnt = TD_ARRAY_SIZE(topics),
        .handlers = products_handlers,
        .handler_cnt = products_handler_cnt,
        .ctx = (void *)cfg,
        .db = svc->db,
    };
    svc->cons = td_consumer_start(cfg, &copts, errstr, errlen);
    if (!svc->cons) goto fail;

    svc->ready.db = svc->db;
    svc->ready.relay = svc->relay;
    svc->ready.cons[0] = svc->cons;
    svc->ready.cons_cnt = 1;

    td_http_opts_t hopts = {
        .service = "products",
        .addr = cfg->listen_addr ? cfg->listen_addr : "127.0.0.1",
        .port = td_config_port(cfg, TD_SVC_PRODUCTS),
        .routes = products_routes,
        .route_cnt = products_route_cnt,
        .ctx = &svc->ctx,
        .secret = cfg->secret,
        .secret_len = cfg->secret_len,
        .ready = td_readiness_check,
        .ready_arg = &svc->ready,
        .cors = true, /* the storefront calls the APIs directly (web/README.md) */
    };
    svc->http = td_http_start(&hopts, errstr, errlen);
    if (!svc->http) goto fail;

    td_info("products: listening on %s:%d", hopts.addr, td_http_port(svc->http));
    return svc;
fail:
    products_service_stop(svc);
    return NULL;
}

int products_service_port(const products_service_t *svc)
{
    return td_http_port(svc->http);
}

td_db_t *products_service_db(const products_service_t *svc)
{
    return svc->db;
}

void products_service_stop(products_service_t *svc)
{
    if (!svc) return;
    if (svc->http) td_http_stop(svc->http);
    if (svc->cons) td_consumer_stop(svc->cons);
    if (svc->relay) td_relay_stop(svc->relay, RELAY_STOP_TIMEOUT_MS);
    if (svc->db) td_db_close(svc->db);
    free(svc);
}
