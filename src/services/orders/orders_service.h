/* The orders service as a whole: its database, outbox relay, consumer (group
 * "tidings-orders" on the reservations and payments topics) and HTTP server,
 * started and stopped in-process by td_service_main (orders_service_decl)
 * and by the integration tests. Start and stop from one thread; the service
 * runs on its own threads in between. */
#ifndef TIDINGS_ORDERS_SERVICE_H
#define TIDINGS_ORDERS_SERVICE_H

#include "tidings/app.h"
#include "tidings/bus.h"
#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/http.h"
#include "tidings/service.h"

/* Nothing but an app (td_app_service_t, tidings/app.h): its port,
 * database and stop are td_app_service_port, _db and _stop. */
typedef td_app_service_t orders_service_t;

/* Opens <data>/orders.db, starts the relay, the consumer and the HTTP
 * server on td_config_port(cfg, TD_SVC_ORDERS) (0 = any free port). cfg is
 * borrowed and must outlive the service. NULL with errstr on failure. */
void *orders_service_start(const td_config_t *cfg, char *errstr, size_t errlen);
/* `tidings orders`: the service as a process (td_service_main):
 * orders_service_start and td_app_service_stop. */
extern const td_service_decl_t orders_service_decl;

/* What routes.c and events.c get as their ctx (req->ctx, the consumer's
 * ctx): borrowed, alive while the service runs. */
typedef td_app_ctx_t orders_ctx_t;

/* routes.c: the HTTP API of SPEC section 2. */
extern const td_route_t orders_routes[];
extern const size_t orders_route_cnt;

/* events.c: ProductReservationFailedEvent, PaymentProcessedEvent,
 * PaymentFailedEvent. */
extern const td_handler_t orders_handlers[];
extern const size_t orders_handler_cnt;

#endif
