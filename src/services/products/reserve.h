/* The products service's reservation side: stock held for orders (the
 * reservations table of schema.h). Reserving is one conditional UPDATE, so
 * stock never goes below zero however many orders race for the last item;
 * releasing returns exactly what was reserved, once. Each function runs
 * inside the caller's (the consumer's) transaction and adds its event
 * (topic "reservations", key orderId) as a reaction to the event that
 * caused it. No HTTP and no Kafka here. */
#ifndef TIDINGS_PRODUCTS_RESERVE_H
#define TIDINGS_PRODUCTS_RESERVE_H

#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/envelope.h"

typedef enum reserve_outcome {
    RESERVE_RESERVED,        /* stock taken: ProductReservedEvent */
    RESERVE_OUT_OF_STOCK,    /* ProductReservationFailedEvent out_of_stock */
    RESERVE_UNKNOWN_PRODUCT, /* ProductReservationFailedEvent unknown_product */
    RESERVE_DUPLICATE,       /* the order was handled before: nothing done */
} reserve_outcome_t;

/* What an OrderCreatedEvent asks for. Strings are borrowed. */
typedef struct reserve_request {
    const char *order_id;
    const char *user_id;
    const char *product_id;
    int64_t quantity;
} reserve_request_t;

/* A reservation row. status is "RESERVED", "FAILED" or "CANCELLED". */
typedef struct reservation {
    char order_id[TD_UUID_LEN + 1];
    char product_id[TD_UUID_LEN + 1];
    char user_id[TD_UUID_LEN + 1];
    int64_t quantity;
    int64_t unit_price_cents;
    char status[16];
    char created_at[TD_TIME_LEN + 1];
    char updated_at[TD_TIME_LEN + 1];
} reservation_t;

/* Reserves req->quantity of req->product_id for the order, or records
 * why not, and adds ProductReservedEvent (with the unit price at this
 * moment) or ProductReservationFailedEvent as a reaction to cause (may be
 * NULL in tests). A deleted product is unknown. An order seen before is
 * left alone. *outcome (may be NULL) says what happened. 0, TD_EINVAL for
 * a bad request (reason in errstr), TD_EIO. */
int reserve_stock(td_db_t *db, const td_config_t *cfg, const td_event_t *cause,
                  const reserve_request_t *req, reserve_outcome_t *outcome, char *errstr,
                  size_t errlen);

/* Returns the stock reserved for order_id (its payment failed), marks the
 * reservation CANCELLED and adds ProductReservationCancelledEvent as a
 * reaction to cause. A reservation already cancelled (or that never took
 * stock) is left alone, logged: 0 with *released false. TD_EINVAL when the
 * order has no reservation at all; TD_EIO. released may be NULL. */
int reserve_release(td_db_t *db, const td_config_t *cfg, const td_event_t *cause,
                    const char *order_id, bool *released, char *errstr, size_t errlen);

/* The reservation of order_id: 0, TD_ENOENT, TD_EIO. Takes the lock. */
int reserve_get(td_db_t *db, const char *order_id, reservation_t *out);

#endif
