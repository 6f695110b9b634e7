/* The products service's Kafka handlers: the reservation side of the order
 * saga (SPEC section 3). The catalog side starts one consumer (group
 * "tidings-products", topics "orders" and "payments") with this table.
 *
 * ctx of the consumer (td_consumer_opts_t.ctx) must be the service's
 * `products_ctx_t *` (the handlers need its cfg for the outbox's topic
 * prefix); it must outlive the consumer. Handlers run on the consumer thread inside
 * its transaction. */
#ifndef TIDINGS_PRODUCTS_EVENTS_H
#define TIDINGS_PRODUCTS_EVENTS_H

#include <stddef.h>

#include "tidings/bus.h"

/* OrderCreatedEvent -> reserve stock; PaymentFailedEvent -> return it. */
extern const td_handler_t products_handlers[];
extern const size_t products_handler_cnt;

#endif
