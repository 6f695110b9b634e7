/* The web service's lifecycle, on the shared one (tidings/app.h): no
 * database; the live-stream hub and the topic reader as its components, then
 * the HTTP server; stopped in reverse so that nothing runs against a
 * resource already gone. Shared by web_service_decl and tests. */
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#include "tidings/app.h"
#include "tidings/log.h"
#include "web/web_service.h"

#define SSE_KEEPALIVE_S 15

#ifdef TIDINGS_WEB_DIR
#define WEB_DIR_DEFAULT TIDINGS_WEB_DIR
#else
#define WEB_DIR_DEFAULT "none compiled in"
#endif

struct web_service {
    web_ctx_t ctx;
    web_reader_t *reader;
    td_app_t app;
};

/* The pages' directory: $TIDINGS_WEB_DIR, else the one compiled in (the
 * source tree's web/), made absolute; NULL when neither exists. */
static char *find_web_dir(void)
{
    const char *dir = getenv("TIDINGS_WEB_DIR");
#ifdef TIDINGS_WEB_DIR
    if (!dir || !*dir) dir = TIDINGS_WEB_DIR;
#endif
    char real[PATH_MAX];
    if (!dir || !*dir || !realpath(dir, real)) {
        td_warn("web: no web pages directory (%s); set TIDINGS_WEB_DIR to the web/ directory",
                dir && *dir ? dir : "none compiled in");
        return NULL;
    }
    return td_strdup(real);
}

/* The live-stream hub: streams end before the HTTP server stops
 * (quiesce); the hub goes after the reader, which publishes to it. */
static int hub_start(td_app_t *app, void *ctx, char *errstr, size_t errlen)
{
    (void)app, (void)errstr, (void)errlen;
    web_ctx_t *c = ctx;
    c->hub = td_sse_hub_new(SSE_KEEPALIVE_S);
    return 0;
}

static void hub_quiesce(td_app_t *app, void *ctx)
{
    (void)app;
    td_sse_hub_close(((web_ctx_t *)ctx)->hub);
}

static void hub_stop(td_app_t *app, void *ctx)
{
    (void)app;
    web_ctx_t *c = ctx;
    td_sse_hub_free(c->hub);
    c->hub = NULL;
}

static web_service_t *of_ctx(void *ctx)
{
    return (web_service_t *)((char *)ctx - offsetof(web_service_t, ctx));
}

/* The topic reader filling the event store; /readyz is its metadata
 * check. */
static int reader_start(td_app_t *app, void *ctx, char *errstr, size_t errlen)
{
    web_service_t *svc = of_ctx(ctx);
    svc->reader = web_reader_start(app->cfg, &svc->ctx, errstr, errlen);
    if (!svc->reader) return TD_EIO;
    return 0;
}

static void reader_stop(td_app_t *app, void *ctx)
{
    (void)app;
    web_service_t *svc = of_ctx(ctx);
    web_reader_stop(svc->reader);
    svc->reader = NULL;
}

static const td_component_t web_components[] = {
    {.name = "hub", .start = hub_start, .quiesce = hub_quiesce, .stop = hub_stop},
    {.name = "reader", .start = reader_start, .stop = reader_stop},
};

/* web_reader_ready over the reader the component made. */
static bool web_ready(void *arg, char *why, size_t whylen)
{
    web_service_t *svc = arg;
    return svc->reader ? web_reader_ready(svc->reader, why, whylen) : false;
}

void *web_service_start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    web_service_t *svc = td_calloc(1, sizeof(*svc));
    svc->ctx.cfg = cfg;
    svc->ctx.store = web_store_new(WEB_STORE_DEFAULT_CAPACITY, cfg->topic_prefix);
    svc->ctx.web_dir = find_web_dir();
    td_app_opts_t opts = {
        .service = TD_SVC_WEB,
        .routes = web_routes,
        .route_cnt = web_route_cnt,
        .ctx = &svc->ctx,
        .components = web_components,
        .component_cnt = TD_ARRAY_SIZE(web_components),
        .ready = web_ready,
        .ready_arg = svc,
    };
    if (td_app_open(&svc->app, cfg, &opts, errstr, errlen) != 0) goto fail;
    if (td_app_serve(&svc->app, &opts, errstr, errlen) != 0) goto fail;
    td_info("web: listening on %s:%d, pages from %s",
            cfg->listen_addr ? cfg->listen_addr : "127.0.0.1", td_app_port(&svc->app),
            svc->ctx.web_dir ? svc->ctx.web_dir : "(none)");
    return svc;
fail:
    web_service_stop(svc);
    return NULL;
}

int web_service_port(const web_service_t *svc)
{
    return td_app_port(&svc->app);
}

web_store_t *web_service_store(web_service_t *svc)
{
    return svc->ctx.store;
}

void web_service_stop(void *arg)
{
    web_service_t *svc = arg;
    if (!svc) return;
    td_app_close(&svc->app);
    web_store_free(svc->ctx.store);
    free(svc->ctx.web_dir);
    free(svc);
}

const td_service_decl_t web_service_decl = {
    .id = TD_SVC_WEB,
    .summary = "the web UI",
    .help = "  TIDINGS_WEB_DIR               the pages to serve (default " WEB_DIR_DEFAULT ")\n",
    .start = web_service_start,
    .stop = web_service_stop,
};
