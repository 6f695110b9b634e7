/* The products service's HTTP API (SPEC section 2): the public catalogue
 * (list and read) and the admin's writes (create, patch, delete). Handlers
 * check the caller, parse the body with the domain's strict rules, and
 * call the domain, which changes the row and adds the event in one
 * transaction, so a refused request leaves no trace anywhere. */
#include <stdlib.h>

#include "products/products.h"
#include "products/products_service.h"
#include "tidings/json.h"
#include "tidings/log.h"

#define NOT_FOUND "product not found"

static products_origin_t origin_of(const td_req_t *req)
{
    products_origin_t o = {&req->trace, req->request_id};
    return o;
}

static void create(td_req_t *req, td_resp_t *resp)
{
    products_ctx_t *ctx = req->ctx;
    char err[200];
    products_input_t in;
    if (products_parse_create(req->body, &in, err, sizeof(err)) != 0) {
        td_resp_error(resp, 400, "%s", err);
        return;
    }
    products_origin_t origin = origin_of(req);
    products_product_t p;
    if (products_create(ctx->db, ctx->cfg, &in, &origin, td_now_ms(), &p) != 0) {
        td_resp_error(resp, 500, "cannot create the product");
        return;
    }
    td_info("products: created %s", p.id);
    td_resp_json(resp, 201, products_to_json(&p));
    products_clear(&p);
}

static void list(td_req_t *req, td_resp_t *resp)
{
    products_ctx_t *ctx = req->ctx;
    char err[200];
    int limit;
    int64_t after;
    if (products_limit_parse(td_req_query(req, "limit"), &limit, err, sizeof(err)) != 0 ||
        products_cursor_decode(td_req_query(req, "after"), &after, err, sizeof(err)) != 0) {
        td_resp_error(resp, 400, "%s", err);
        return;
    }
    products_product_t *items;
    size_t cnt;
    bool more;
    if (products_list(ctx->db, after, limit, &items, &cnt, &more) != 0) {
        td_resp_error(resp, 500, "cannot list the products");
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < cnt; i++) json_array_append_new(arr, products_to_json(&items[i]));
    json_t *next = json_null();
    if (more) {
        char cursor[PRODUCTS_CURSOR_MAX];
        products_cursor_encode(items[cnt - 1].seq, cursor);
        json_decref(next);
        next = json_string(cursor);
    }
    for (size_t i = 0; i < cnt; i++) products_clear(&items[i]);
    free(items);
    td_resp_json(resp, 200, json_pack("{s:o, s:o}", "products", arr, "next", next));
}

static void get(td_req_t *req, td_resp_t *resp)
{
    products_ctx_t *ctx = req->ctx;
    products_product_t p;
    int rc = products_get(ctx->db, td_req_param(req, "productId"), &p);
    if (rc == TD_ENOENT) {
        td_resp_error(resp, 404, NOT_FOUND);
        return;
    }
    if (rc) {
        td_resp_error(resp, 500, "cannot read the product");
        return;
    }
    td_resp_json(resp, 200, products_to_json(&p));
    products_clear(&p);
}

static void patch(td_req_t *req, td_resp_t *resp)
{
    products_ctx_t *ctx = req->ctx;
    char err[200];
    products_input_t in;
    if (products_parse_patch(req->body, &in, err, sizeof(err)) != 0) {
        td_resp_error(resp, 400, "%s", err);
        return;
    }
    products_origin_t origin = origin_of(req);
    products_product_t p;
    int rc = products_update(ctx->db, ctx->cfg, td_req_param(req, "productId"), &in, &origin,
                             td_now_ms(), &p);
    if (rc == TD_ENOENT) {
        td_resp_error(resp, 404, NOT_FOUND);
        return;
    }
    if (rc) {
        td_resp_error(resp, 500, "cannot update the product");
        return;
    }
    td_resp_json(resp, 200, products_to_json(&p));
    products_clear(&p);
}

static void delete (td_req_t *req, td_resp_t *resp)
{
    products_ctx_t *ctx = req->ctx;
    products_origin_t origin = origin_of(req);
    const char *id = td_req_param(req, "productId");
    int rc = products_delete(ctx->db, ctx->cfg, id, &origin, td_now_ms());
    if (rc == TD_ENOENT) {
        td_resp_error(resp, 404, NOT_FOUND);
        return;
    }
    if (rc) {
        td_resp_error(resp, 500, "cannot delete the product");
        return;
    }
    td_info("products: deleted %s", id);
    td_resp_empty(resp, 204);
}

const td_route_t products_routes[] = {
    {"POST", "/products", create, TD_AUTH_ADMIN, TD_BODY_JSON, 0},
    {"GET", "/products", list, TD_AUTH_PUBLIC, TD_BODY_NONE, 0},
    {"GET", "/products/{productId}", get, TD_AUTH_PUBLIC, TD_BODY_NONE, 0},
    {"PATCH", "/products/{productId}", patch, TD_AUTH_ADMIN, TD_BODY_JSON, 0},
    {"DELETE", "/products/{productId}", delete, TD_AUTH_ADMIN, TD_BODY_NONE, 0},
};
const size_t products_route_cnt = TD_ARRAY_SIZE(products_routes);
