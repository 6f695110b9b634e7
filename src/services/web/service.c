/* The web service's lifecycle: the event store and its live-stream hub, the
 * topic reader, then the HTTP server; stopped in reverse so that nothing
 * runs against a resource already gone. Shared by main.c and tests. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "tidings/log.h"
#include "web/web_service.h"

#define SSE_KEEPALIVE_S 15

struct web_service {
    web_ctx_t ctx;
    web_reader_t *reader;
    td_http_t *http;
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

web_service_t *web_service_start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    web_service_t *svc = td_calloc(1, sizeof(*svc));
    svc->ctx.cfg = cfg;
    svc->ctx.store = web_store_new(WEB_STORE_DEFAULT_CAPACITY, cfg->topic_prefix);
    svc->ctx.hub = td_sse_hub_new(SSE_KEEPALIVE_S);
    svc->ctx.web_dir = find_web_dir();

    svc->reader = web_reader_start(cfg, &svc->ctx, errstr, errlen);
    if (!svc->reader) goto fail;

    td_http_opts_t hopts = {
        .service = "web",
        .addr = cfg->listen_addr ? cfg->listen_addr : "127.0.0.1",
        .port = td_config_port(cfg, TD_SVC_WEB),
        .routes = web_routes,
        .route_cnt = web_route_cnt,
        .ctx = &svc->ctx,
        .secret = cfg->secret,
        .secret_len = cfg->secret_len,
        .ready = web_reader_ready,
        .ready_arg = svc->reader,
        .cors_origins = cfg->cors_origins,
    };
    svc->http = td_http_start(&hopts, errstr, errlen);
    if (!svc->http) goto fail;

    td_info("web: listening on %s:%d, pages from %s", hopts.addr, td_http_port(svc->http),
            svc->ctx.web_dir ? svc->ctx.web_dir : "(none)");
    return svc;
fail:
    web_service_stop(svc);
    return NULL;
}

int web_service_port(const web_service_t *svc)
{
    return td_http_port(svc->http);
}

web_store_t *web_service_store(web_service_t *svc)
{
    return svc->ctx.store;
}

void web_service_stop(web_service_t *svc)
{
    if (!svc) return;
    /* Streams end first; the hub goes after the reader, which publishes
     * to it. */
    if (svc->ctx.hub) td_sse_hub_close(svc->ctx.hub);
    if (svc->http) td_http_stop(svc->http);
    if (svc->reader) web_reader_stop(svc->reader);
    if (svc->ctx.hub) td_sse_hub_free(svc->ctx.hub);
    web_store_free(svc->ctx.store);
    free(svc->ctx.web_dir);
    free(svc);
}
