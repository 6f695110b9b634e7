/* The payments service's Kafka handler: a ProductReservedEvent is a request
 * to charge an order. It runs inside the consumer's transaction, so the
 * payment row, the inbox row and the PaymentProcessed/FailedEvent commit
 * together. The other reservation events are skipped. */
#include "payments/payments.h"
#include "tidings/catalog.h"
#include "payments/payments_service.h"

static int on_product_reserved(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr,
                               size_t errlen)
{
    const payments_ctx_t *pctx = ctx;
    payment_request_t req;
    const char *product_id;
    int err = td_data_uuid(ev->data, "orderId", &req.order_id, errstr, errlen);
    if (!err) err = td_data_uuid(ev->data, "userId", &req.user_id, errstr, errlen);
    if (!err) err = td_data_uuid(ev->data, "productId", &product_id, errstr, errlen);
    if (!err) err = td_data_int(ev->data, "quantity", &req.quantity, errstr, errlen);
    if (!err) err = td_data_cents(ev->data, "unitPrice", &req.unit_price_cents, errstr, errlen);
    if (err) return err;
    return payments_charge(db, pctx->cfg, ev, &req, NULL, NULL, errstr, errlen);
}

const td_handler_t payments_handlers[] = {
    {.ev = TD_EV_PRODUCT_RESERVED, .fn = on_product_reserved},
};
const size_t payments_handler_cnt = TD_ARRAY_SIZE(payments_handlers);
