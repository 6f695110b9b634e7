/* The payments HTTP API (SPEC section 2): the payment of an order, for its
 * owner or an admin. Anyone else gets 404, as for an order without a
 * payment, so the answer leaks nothing about other people's orders. */
#include <string.h>

#include "payments/payments.h"
#include "payments/payments_service.h"
#include "tidings/json.h"

static void get_payment(td_req_t *req, td_resp_t *resp)
{
    const payments_ctx_t *ctx = req->ctx;
    const td_claims_t *caller = td_req_caller(req); /* TD_AUTH_USER */
    payment_t p;
    int rc = payments_get(ctx->db, td_req_param(req, "orderId"), &p);
    if (rc == TD_ENOENT ||
        (!rc && strcmp(p.user_id, caller->sub) && strcmp(caller->role, "admin"))) {
        td_resp_error(resp, 404, "payment not found");
        return;
    }
    if (rc) {
        td_resp_errno(resp, rc, "the payment could not be read");
        return;
    }
    td_resp_json(resp, 200,
                 json_pack("{s:s, s:s, s:o, s:s}", "paymentId", p.id, "orderId", p.order_id,
                           "amount", td_json_money(p.amount_cents), "status",
                           payment_status_name(p.status)));
}

const td_route_t payments_routes[] = {
    {"GET", "/payments/{orderId}", get_payment, TD_AUTH_USER, TD_BODY_NONE, 0},
};
const size_t payments_route_cnt = TD_ARRAY_SIZE(payments_routes);
