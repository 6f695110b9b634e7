/* The orders service's Kafka handlers: the saga's answers about an order,
 * from the reservations topic (products) and the payments topic. The
 * consumer checked each event's whole shape against the catalogue before
 * (a field this service does not use is still part of the contract, and
 * another consumer of the same event may act on it); each handler decodes
 * the fields it needs and hands the
 * decision to the state machine in orders.c; it runs inside the consumer's transaction, so the
 * order's new state, the inbox row and the OrderApproved/RejectedEvent commit together.
 * ProductReservedEvent and ProductReservationCancelledEvent say nothing an order needs and have no
 * handler (they are skipped). */
#include "orders/orders.h"
#include "tidings/catalog.h"
#include "orders/orders_service.h"

/* Every field of the event, then the order it is about. */
static int decode_common(const td_event_t *ev, const char **order_id, char *errstr, size_t errlen)
{
    int err = td_data_uuid(ev->data, "orderId", order_id, errstr, errlen);
    return err;
}

/* A step that failed: the order it is about and the reason. */
static int on_failed(void *ctx, td_db_t *db, const td_event_t *ev, order_input_t input,
                     char *errstr, size_t errlen)
{
    const orders_ctx_t *octx = ctx;
    const char *order_id, *reason;
    int err = decode_common(ev, &order_id, errstr, errlen);
    if (!err) err = td_data_str(ev->data, "reason", &reason, errstr, errlen);
    if (err) return err;
    return orders_apply(db, octx->cfg, ev, order_id, input, -1, reason, NULL, errstr, errlen);
}

static int on_reservation_failed(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr,
                                 size_t errlen)
{
    return on_failed(ctx, db, ev, ORDER_IN_RESERVATION_FAILED, errstr, errlen);
}

static int on_payment_processed(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr,
                                size_t errlen)
{
    const orders_ctx_t *octx = ctx;
    const char *order_id;
    int64_t amount;
    int err = decode_common(ev, &order_id, errstr, errlen);
    if (!err) err = td_data_cents(ev->data, "amount", &amount, errstr, errlen);
    if (err) return err;
    return orders_apply(db, octx->cfg, ev, order_id, ORDER_IN_PAYMENT_PROCESSED, amount, NULL, NULL,
                        errstr, errlen);
}

static int on_payment_failed(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr,
                             size_t errlen)
{
    return on_failed(ctx, db, ev, ORDER_IN_PAYMENT_FAILED, errstr, errlen);
}

const td_handler_t orders_handlers[] = {
    {.ev = TD_EV_PRODUCT_RESERVATION_FAILED, .fn = on_reservation_failed},
    {.ev = TD_EV_PAYMENT_PROCESSED, .fn = on_payment_processed},
    {.ev = TD_EV_PAYMENT_FAILED, .fn = on_payment_failed},
};
const size_t orders_handler_cnt = TD_ARRAY_SIZE(orders_handlers);
