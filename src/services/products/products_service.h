/* The products service as a whole: its database, outbox relay, consumer
 * (group "tidings-products" on the orders and payments topics, with the
 * reservation handlers of events.h) and HTTP server (the catalogue API),
 * started and stopped in-process by td_service_main (products_service_decl)
 * and by the integration tests. Start and stop from one thread; the service
 * runs on its own threads in between. */
#ifndef TIDINGS_PRODUCTS_SERVICE_H
#define TIDINGS_PRODUCTS_SERVICE_H

#include "tidings/app.h"
#include "tidings/bus.h"
#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/http.h"
#include "tidings/service.h"

/* Nothing but an app (td_app_service_t, tidings/app.h): its port,
 * database and stop are td_app_service_port, _db and _stop. */
typedef td_app_service_t products_service_t;

/* Opens <data>/products.db, starts the relay, the consumer and the HTTP
 * server on td_config_port(cfg, TD_SVC_PRODUCTS) (0 = any free port). cfg
 * is borrowed and must outlive the service. NULL with errstr on failure. */
void *products_service_start(const td_config_t *cfg, char *errstr, size_t errlen);
/* `tidings products`: the service as a process (td_service_main):
 * products_service_start and td_app_service_stop. */
extern const td_service_decl_t products_service_decl;

/* What routes.c gets as req->ctx: borrowed, alive while the service runs. */
typedef td_app_ctx_t products_ctx_t;

/* routes.c: the catalogue API of SPEC section 2. */
extern const td_route_t products_routes[];
extern const size_t products_route_cnt;

#endif
