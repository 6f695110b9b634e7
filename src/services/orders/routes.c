/* The orders HTTP API (SPEC section 2): place an order, read one, list the
 * caller's. Parsing and access rules live here; the state changes are the
 * domain's (orders.c). Someone else's order answers 404, exactly like an
 * order that does not exist, so order ids leak nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orders/orders.h"
#include "orders/orders_service.h"
#include "tidings/json.h"

#define LIST_LIMIT_DEFAULT 50
#define LIST_LIMIT_MAX     500

static json_t *order_json(const order_t *o)
{
    json_t *j = json_pack("{s:s, s:s, s:s, s:I, s:s}", "orderId", o->id, "userId", o->user_id,
                          "productId", o->product_id, "quantity", (json_int_t)o->quantity, "status",
                          order_status_name(o->status));
    if (o->reason[0]) json_object_set_new(j, "reason", json_string(o->reason));
    if (o->total_cents >= 0) json_object_set_new(j, "total", td_json_money(o->total_cents));
    json_object_set_new(j, "createdAt", json_string(o->created_at));
    json_object_set_new(j, "updatedAt", json_string(o->updated_at));
    return j;
}

static bool is_admin(const td_claims_t *caller)
{
    return !strcmp(caller->role, "admin");
}

static void post_order(td_req_t *req, td_resp_t *resp)
{
    const orders_ctx_t *ctx = req->ctx;
    static const char *const allowed[] = {"productId", "quantity", NULL};
    char err[256];
    const char *product_id;
    int64_t quantity;

    if (td_json_only_fields(req->body, allowed, err, sizeof err) ||
        td_json_req_string(req->body, "productId", 200, &product_id, err, sizeof err) ||
        td_json_req_int(req->body, "quantity", 1, ORDERS_QUANTITY_MAX, &quantity, err,
                        sizeof err)) {
        td_resp_error(resp, 400, "%s", err);
        return;
    }
    if (!td_uuid_valid(product_id)) {
        td_resp_error(resp, 400, "productId must be a UUID (lowercase, hyphenated)");
        return;
    }
    order_t o;
    int rc = orders_create(ctx->db, ctx->cfg, td_req_caller(req)->sub, product_id, quantity,
                           &req->trace, &o, err, sizeof err);
    if (rc) {
        td_resp_errno(resp, rc, err);
        return;
    }
    char location[64];
    snprintf(location, sizeof location, "/orders/%s", o.id);
    td_resp_json(resp, 202, json_pack("{s:s, s:s}", "orderId", o.id, "status", "PENDING"));
    td_resp_header(resp, "Location", location);
}

static void get_order(td_req_t *req, td_resp_t *resp)
{
    const orders_ctx_t *ctx = req->ctx;
    const td_claims_t *caller = td_req_caller(req); /* TD_AUTH_USER */
    order_t o;
    int rc = orders_get(ctx->db, td_req_param(req, "orderId"), &o);
    if (rc == TD_ENOENT || (!rc && strcmp(o.user_id, caller->sub) && !is_admin(caller))) {
        td_resp_error(resp, 404, "order not found");
        return;
    }
    if (rc) {
        td_resp_errno(resp, rc, "the order could not be read");
        return;
    }
    td_resp_json(resp, 200, order_json(&o));
}

static void list_orders(td_req_t *req, td_resp_t *resp)
{
    const orders_ctx_t *ctx = req->ctx;
    int limit;
    int64_t after;
    if (!td_req_limit(req, resp, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, &limit) ||
        !td_req_after_seq(req, resp, &after))
        return;

    order_t *list;
    size_t cnt;
    bool more;
    int rc =
        orders_list(ctx->db, td_req_caller(req)->sub, after, (size_t)limit, &list, &cnt, &more);
    if (rc) {
        td_resp_errno(resp, rc, "the orders could not be read");
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < cnt; i++) json_array_append_new(arr, order_json(&list[i]));
    json_t *next = json_null();
    if (more && cnt > 0) {
        char cursor[24];
        snprintf(cursor, sizeof cursor, "%lld", (long long)list[cnt - 1].seq);
        next = json_string(cursor);
    }
    free(list);
    td_resp_json(resp, 200, json_pack("{s:o, s:o}", "orders", arr, "next", next));
}

const td_route_t orders_routes[] = {
    {"POST", "/orders", post_order, TD_AUTH_USER, TD_BODY_JSON, 0},
    {"GET", "/orders", list_orders, TD_AUTH_USER, TD_BODY_NONE, 0},
    {"GET", "/orders/{orderId}", get_order, TD_AUTH_USER, TD_BODY_NONE, 0},
};
const size_t orders_route_cnt = TD_ARRAY_SIZE(orders_routes);
