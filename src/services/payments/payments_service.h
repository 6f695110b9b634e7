/* The payments service as a whole: its database, outbox relay, consumer
 * (group "tidings-payments" on the reservations topic) and HTTP server,
 * started and stopped in-process by td_service_main (payments_service_decl)
 * and by the integration tests. Start and stop from one thread; the service
 * runs on its own threads in between. */
#ifndef TIDINGS_PAYMENTS_SERVICE_H
#define TIDINGS_PAYMENTS_SERVICE_H

#include "tidings/app.h"
#include "tidings/bus.h"
#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/http.h"
#include "tidings/service.h"

/* Nothing but an app (td_app_service_t, tidings/app.h): its port,
 * database and stop are td_app_service_port, _db and _stop. */
typedef td_app_service_t payments_service_t;

/* Opens <data>/payments.db, starts the relay, the consumer and the HTTP
 * server on td_config_port(cfg, TD_SVC_PAYMENTS) (0 = any free port). cfg
 * is borrowed and must outlive the service. NULL with errstr on failure. */
void *payments_service_start(const td_config_t *cfg, char *errstr, size_t errlen);
/* `tidings payments`: the service as a process (td_service_main):
 * payments_service_start and td_app_service_stop. */
extern const td_service_decl_t payments_service_decl;

/* What routes.c and events.c get as their ctx: borrowed, alive while the
 * service runs. */
typedef td_app_ctx_t payments_ctx_t;

/* routes.c: GET /payments/{orderId}. */
extern const td_route_t payments_routes[];
extern const size_t payments_route_cnt;

/* events.c: ProductReservedEvent. */
extern const td_handler_t payments_handlers[];
extern const size_t payments_handler_cnt;

#endif
