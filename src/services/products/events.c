/* The products service's Kafka handlers, the reservation side of the order
 * saga: an OrderCreatedEvent (topic orders) reserves stock, a
 * PaymentFailedEvent (topic payments) returns it. The consumer checked the
 * whole shape of each event against the catalogue first, not only the
 * fields a handler uses: an event another consumer dead-letters must have
 * no effect here
 * either (a PaymentFailedEvent with a bad reason returning stock while
 * orders refuses it would break stock conservation). Then it calls
 * reserve.c inside the consumer's transaction, so the stock
 * change, the reservation row, the inbox row and the outgoing event commit
 * together. The other event types on those topics are skipped. */
#include "products/events.h"
#include "tidings/catalog.h"
#include "products/products_service.h"

#include "products/reserve.h"

static int on_order_created(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr,
                            size_t errlen)
{
    const td_config_t *cfg = ((const products_ctx_t *)ctx)->cfg;
    reserve_request_t req;
    int err = td_data_uuid(ev->data, "orderId", &req.order_id, errstr, errlen);
    if (!err) err = td_data_uuid(ev->data, "userId", &req.user_id, errstr, errlen);
    if (!err) err = td_data_uuid(ev->data, "productId", &req.product_id, errstr, errlen);
    if (!err) err = td_data_int(ev->data, "quantity", &req.quantity, errstr, errlen);
    if (err) return err;
    return reserve_stock(db, cfg, ev, &req, NULL, errstr, errlen);
}

static int on_payment_failed(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr,
                             size_t errlen)
{
    const td_config_t *cfg = ((const products_ctx_t *)ctx)->cfg;
    const char *order_id;
    int err = td_data_uuid(ev->data, "orderId", &order_id, errstr, errlen);
    if (err) return err;
    return reserve_release(db, cfg, ev, order_id, NULL, errstr, errlen);
}

const td_handler_t products_handlers[] = {
    {.ev = TD_EV_ORDER_CREATED, .fn = on_order_created},
    {.ev = TD_EV_PAYMENT_FAILED, .fn = on_payment_failed},
};
const size_t products_handler_cnt = TD_ARRAY_SIZE(products_handlers);
