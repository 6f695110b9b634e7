/* The lifecycle every service shares (tidings/app.h): database, outbox
 * relay, the service's components, consumer and HTTP server up in
 * dependency order, down in reverse. */
#include "tidings/app.h"

#include <assert.h>
#include <string.h>

#include "tidings/log.h"

#include "tidings/idem.h"

/* How long a stop waits for the outbox to be delivered. */
#define RELAY_STOP_TIMEOUT_MS 5000

int td_app_open(td_app_t *app, const td_config_t *cfg, const td_app_opts_t *opts, char *errstr,
                size_t errlen)
{
    memset(app, 0, sizeof(*app));
    app->cfg = cfg;
    app->opts = *opts;
    if (!opts->migs || opts->mig_cnt == 0) return 0; /* no schema: no db, no relay */
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
    assert(app->opts.components == opts->components && "serve with the options of the open");

    for (; app->started < opts->component_cnt; app->started++) {
        const td_component_t *c = &opts->components[app->started];
        int rc = c->start(app, opts->ctx, errstr, errlen);
        if (rc != 0) {
            td_debug("%s: component %s did not start", name, c->name);
            return rc;
        }
    }

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
        td_readiness_add(&app->ready, app->cons);
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
        .ready = opts->ready ? opts->ready : td_readiness_check,
        .ready_arg = opts->ready ? opts->ready_arg : &app->ready,
        /* The storefront calls the APIs directly (web/README.md). */
        .cors_origins = cfg->cors_origins,
        .idem_db = app->db, /* NULL without a schema: no Idempotency-Key store */
        .threads = opts->http_threads,
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
    const td_app_opts_t *opts = &app->opts;
    for (size_t i = app->started; i-- > 0;)
        if (opts->components[i].quiesce) opts->components[i].quiesce(app, opts->ctx);
    if (app->http) td_http_stop(app->http);
    if (app->cons) td_consumer_stop(app->cons);
    for (size_t i = app->started; i-- > 0;) opts->components[i].stop(app, opts->ctx);
    if (app->relay) td_relay_stop(app->relay, RELAY_STOP_TIMEOUT_MS);
    if (app->db) td_db_close(app->db);
    td_readiness_clear(&app->ready);
    memset(app, 0, sizeof(*app));
}

/* ---- a service that is only an app ------------------------------------------ */

struct td_app_service {
    td_app_ctx_t ctx;
    td_app_t app;
};

td_app_service_t *td_app_service_start(const td_app_opts_t *opts, const td_config_t *cfg,
                                       char *errstr, size_t errlen)
{
    td_app_service_t *svc = td_calloc(1, sizeof *svc);
    td_app_opts_t o = *opts;
    o.ctx = &svc->ctx;
    if (td_app_open(&svc->app, cfg, &o, errstr, errlen) != 0) goto fail;
    svc->ctx.cfg = cfg;
    svc->ctx.db = svc->app.db;
    if (td_app_serve(&svc->app, &o, errstr, errlen) != 0) goto fail;
    return svc;
fail:
    td_app_service_stop(svc);
    return NULL;
}

int td_app_service_port(const td_app_service_t *svc)
{
    return td_app_port(&svc->app);
}

td_db_t *td_app_service_db(const td_app_service_t *svc)
{
    return svc->app.db;
}

void td_app_service_stop(void *arg)
{
    td_app_service_t *svc = arg;
    if (!svc) return;
    td_app_close(&svc->app);
    free(svc);
}
