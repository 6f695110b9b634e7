/* The web service as a whole: the static storefront, admin and event-flow
 * pages (files of the web/ directory), /config.json telling the pages where
 * the services' APIs are (the pages call them directly, with CORS), and the
 * event-flow API over a reader of every topic: GET /api/events, GET
 * /api/events/stream (SSE) and GET /api/trace/{id}. Started and stopped
 * in-process by td_service_main (web_service_decl) and by tests. Start and
 * stop from one thread; the service runs on its own threads in between. */
#ifndef TIDINGS_WEB_SERVICE_H
#define TIDINGS_WEB_SERVICE_H

#include "tidings/config.h"
#include "tidings/http.h"
#include "tidings/service.h"
#include "tidings/sse.h"
#include "web/web.h"

typedef struct web_service web_service_t;

/* Starts the topic reader and the HTTP server on td_config_port(cfg,
 * TD_SVC_WEB) (0 = any free port). The pages are served from
 * $TIDINGS_WEB_DIR, else the directory compiled in. cfg is borrowed and
 * must outlive the service. NULL with errstr on failure. */
void *web_service_start(const td_config_t *cfg, char *errstr, size_t errlen);
/* The HTTP port actually bound. */
int web_service_port(const web_service_t *svc);
/* The event store (tests). */
web_store_t *web_service_store(web_service_t *svc);
/* Graceful stop: HTTP, live streams, reader. NULL is fine. */
void web_service_stop(void *svc);
/* `tidings web`: the service as a process (td_service_main), with
 * the two functions above as its start and stop (hence their void *:
 * the service is a web_service_t). */
extern const td_service_decl_t web_service_decl;

/* What routes.c gets as req->ctx: borrowed, alive while the service runs. */
typedef struct web_ctx {
    const td_config_t *cfg;
    web_store_t *store;
    td_sse_hub_t *hub;
    char *web_dir; /* absolute, no trailing slash; NULL when there is none */
} web_ctx_t;

/* routes.c */
extern const td_route_t web_routes[];
extern const size_t web_route_cnt;

/* events.c: the reader of every SPEC topic and its .DLT, from the
 * beginning, by manual assignment (no consumer group: it disturbs no
 * one), into ctx->store, publishing each event to ctx->hub under key "*".
 * New partitions and topics are picked up by a periodic metadata check. */
typedef struct web_reader web_reader_t;
web_reader_t *web_reader_start(const td_config_t *cfg, web_ctx_t *ctx, char *errstr, size_t errlen);
/* A td_ready_fn: true while the reader has fresh metadata from a broker and
 * every topic it knows of assigned. */
bool web_reader_ready(void *reader, char *why, size_t whylen);
void web_reader_stop(web_reader_t *reader);

#endif
