/* The lifecycle every service shares (tidings/app.h): database, outbox
 * relay, consumer and HTTP server up in dependency order, down in reverse.
 * Services that run more threads of their own (notifications, web) stop
 * those between td_http_stop and the consumer in their own service.c. */
#include "tidings/app.h"

#include <string.h>

#include "tidings/idem.h"

/* How long a stop waits for the outbox to be delivered. */
#define RELAY_STOP_TIMEOUT_MS 5000

int td_app_open(td_app_t *app, const td_config_t *cfg, const td_app_opts_t *opts, char *errstr,
                size_t errlen)
{
    memset(app, 0, sizeof(*app));
    app->cfg = cfg;
    app->db = td_service_db(cfg, opts->migs, opts->mig_cnt, errstr, errlen);
    if (!app->db) return TD_EIO;
    if (td_idem_migrate(app->db, errstr, errlen) != 0) return TD_EIO;
    app->relay = td_relay_start(cfg, app->db, errstr, errlen);
    if (!app->relay) return TD_EIO;
    app->ready.db = app->db;
    app->ready.relay = app->relay;
    return 0;
}

int td_app_serve(td_app_t *app, const td_app_opts_t *opts, char *errstr, size_t errlen)
{
    const char *name = td_service_name(opts->service);
    const td_config_t *cfg = app->cfg;

    if (opts->topic_cnt > 0) {
        char group[64];
        snprintf(group, sizeof(group), "tidings-%s", name);
        td_consumer_opts_t copts = {
            .group = group,
            .topics = opts->topics,
            .topic_cnt = opts->topic_cnt,
            .handlers = opts->handlers,
            .handler_cnt = opts->handler_cnt,
            .ctx = opts->ctx,
            .db = app->db,
        };
        app->cons = td_consumer_start(cfg, &copts, errstr, errlen);
        if (!app->cons) return TD_EIO;
        app->ready.cons[app->ready.cons_cnt++] = app->cons;
    }

    td_http_opts_t hopts = {
        .service = name,
        .addr = cfg->listen_addr ? cfg->listen_addr : "127.0.0.1",
        .port = td_config_port(cfg, opts->service),
        .routes = opts->routes,
        .route_cnt = opts->route_cnt,
        .ctx = opts->ctx,
        .secret = cfg->secret,
        .secret_len = cfg->secret_len,
        .ready = td_readiness_check,
        .ready_arg = &app->ready,
        /* The storefront calls the APIs directly (web/README.md). */
        .cors_origins = cfg->cors_origins,
        .idem_db = app->db,
    };
    app->http = td_http_start(&hopts, errstr, errlen);
    return app->http ? 0 : TD_EIO;
}

int td_app_port(const td_app_t *app)
{
    return app->http ? td_http_port(app->http) : -1;
}

void td_app_close(td_app_t *app)
{
    if (app->http) td_http_stop(app->http);
    if (app->cons) td_consumer_stop(app->cons);
    if (app->relay) td_relay_stop(app->relay, RELAY_STOP_TIMEOUT_MS);
    if (app->db) td_db_close(app->db);
    memset(app, 0, sizeof(*app));
}
