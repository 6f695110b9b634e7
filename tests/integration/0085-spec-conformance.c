/* SPEC section 2 checked across every service at once, as an outside
 * client sees it: users, products, orders, payments and notifications in
 * one process on one embedded broker, talked to only over HTTP. The exact
 * field sets of each answer (nothing missing, nothing extra), ids and
 * times in their SPEC form, the error shape with its stable codes (404,
 * 405 with Allow, 413, 415) and the JSON content type on every service,
 * owner-or-admin access (someone else's order or payment is 404), lists
 * that page by 50 by default with next null on the last page, the same
 * words for a bad limit or cursor on every list, and money in
 * notification sentences written one way ("total 2,258.00"), whatever
 * the JSON number looked like. The tests run in order on one world. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifications/notifications_service.h"
#include "orders/orders_service.h"
#include "payments/payments_service.h"
#include "products/products_service.h"
#include "tidings/auth.h"
#include "tidings/json.h"
#include "tsupport.h"
#include "users/users_service.h"

#define WAIT_MS  30000
#define JSON_CT  "application/json; charset=utf-8"
#define NO_ORDER "00000000-0000-4000-8000-000000000000"

typedef struct world {
    char *dir;
    td_config_t bcfg, cfg[TD_SVC__COUNT];
    td_broker_t *broker;
    users_service_t *users;
    products_service_t *products;
    orders_service_t *orders;
    payments_service_t *payments;
    notifications_service_t *notifications;
    char base[TD_SVC__COUNT][64];
    char *admin; /* minted: the users service is not asked for it */
    char alice[1024], bob[1024];
    char alice_id[TD_UUID_LEN + 1], bob_id[TD_UUID_LEN + 1];
    char phone_id[TD_UUID_LEN + 1];
    char approved_id[TD_UUID_LEN + 1], rejected_id[TD_UUID_LEN + 1];
} world_t;

static world_t W;

/* ---- helpers --------------------------------------------------------------- */

static ts_resp_t call(const char *method, td_service_t svc, const char *path, const char *token,
                      const char *body)
{
    char *url = td_asprintf("%s%s", W.base[svc], path);
    ts_resp_t r = ts_http(method, url, token, body, NULL, NULL);
    free(url);
    return r;
}

static ts_resp_t call_json(const char *method, td_service_t svc, const char *path,
                           const char *token, json_t *body)
{
    char *text = td_json_dumps(body);
    json_decref(body);
    ts_resp_t r = call(method, svc, path, token, text);
    free(text);
    return r;
}

static const char *jstr(const json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

static void want_status(const ts_resp_t *r, long status)
{
    if (r->status != status)
        fail_msg("status %ld, want %ld: %s", r->status, status, r->body ? r->body : "");
}

/* A JSON answer: status, SPEC content type, and an object. */
static void want_json(const ts_resp_t *r, long status)
{
    char ct[128];
    want_status(r, status);
    if (!ts_resp_header(r, "Content-Type", ct, sizeof ct) || strcmp(ct, JSON_CT))
        fail_msg("Content-Type '%s', want '%s'", ct, JSON_CT);
    if (!json_is_object(r->json)) fail_msg("not a JSON object: %s", r->body);
}

/* obj has exactly the keys of the space-separated list. */
static void want_keys(const json_t *obj, const char *keys)
{
    char *copy = td_strdup(keys), *save = NULL;
    size_t n = 0;
    for (char *k = strtok_r(copy, " ", &save); k; k = strtok_r(NULL, " ", &save), n++)
        if (!json_object_get(obj, k)) {
            char *text = td_json_dumps(obj);
            fail_msg("'%s' is missing from %s", k, text);
        }
    free(copy);
    if (json_object_size(obj) != n) {
        char *text = td_json_dumps(obj);
        fail_msg("%s has %zu fields, want exactly: %s", text, json_object_size(obj), keys);
    }
}

/* The SPEC error shape with code and, when given, message. */
static void want_error(const ts_resp_t *r, long status, const char *code, const char *message)
{
    want_json(r, status);
    want_keys(r->json, "error");
    const json_t *e = json_object_get(r->json, "error");
    want_keys(e, "code message");
    assert_string_equal(jstr(e, "code"), code);
    if (message && strcmp(jstr(e, "message"), message))
        fail_msg("message '%s', want '%s'", jstr(e, "message"), message);
}

static void want_uuid(const json_t *obj, const char *key)
{
    const char *s = jstr(obj, key);
    if (!s || !td_uuid_valid(s)) fail_msg("%s is not a lowercase UUID: %s", key, s ? s : "(none)");
    for (const char *p = s; *p; p++)
        if (isupper((unsigned char)*p)) fail_msg("%s has upper case: %s", key, s);
}

/* RFC 3339 in UTC: 2026-01-02T03:04:05[.fff]Z. */
static void want_time(const json_t *obj, const char *key)
{
    const char *s = jstr(obj, key);
    size_t n = s ? strlen(s) : 0;
    if (n < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':' ||
        s[n - 1] != 'Z')
        fail_msg("%s is not an RFC 3339 UTC time: %s", key, s ? s : "(none)");
}

static char *mint(const char *role, const char *sub)
{
    td_claims_t c;
    memset(&c, 0, sizeof c);
    snprintf(c.sub, sizeof c.sub, "%s", sub);
    snprintf(c.role, sizeof c.role, "%s", role);
    c.iat = td_now_ms() / 1000;
    c.exp = c.iat + 3600;
    return td_jwt_sign(W.cfg[0].secret, W.cfg[0].secret_len, &c);
}

/* Registers and logs in a customer; the token and id into the buffers. */
static void sign_up(const char *email, const char *name, char *token, char *id)
{
    ts_resp_t r = call_json(
        "POST", TD_SVC_USERS, "/users", NULL,
        json_pack("{s:s, s:s, s:s}", "email", email, "password", "correct-horse", "name", name));
    want_json(&r, 201);
    want_keys(r.json, "userId email name createdAt");
    want_uuid(r.json, "userId");
    want_time(r.json, "createdAt");
    assert_string_equal(jstr(r.json, "email"), email);
    snprintf(id, TD_UUID_LEN + 1, "%s", jstr(r.json, "userId"));
    ts_resp_free(&r);

    r = call_json("POST", TD_SVC_USERS, "/login", NULL,
                  json_pack("{s:s, s:s}", "email", email, "password", "correct-horse"));
    want_json(&r, 200);
    want_keys(r.json, "token userId role expiresAt");
    assert_string_equal(jstr(r.json, "userId"), id);
    assert_string_equal(jstr(r.json, "role"), "customer");
    want_time(r.json, "expiresAt");
    snprintf(token, 1024, "%s", jstr(r.json, "token"));
    ts_resp_free(&r);
}

static void make_product(const char *title, const char *price, int quantity, char *id)
{
    char *body =
        td_asprintf("{\"title\":\"%s\",\"price\":%s,\"quantity\":%d}", title, price, quantity);
    ts_resp_t r = call("POST", TD_SVC_PRODUCTS, "/products", W.admin, body);
    free(body);
    want_json(&r, 201);
    want_keys(r.json, "productId title price quantity createdAt");
    want_uuid(r.json, "productId");
    want_time(r.json, "createdAt");
    if (id) snprintf(id, TD_UUID_LEN + 1, "%s", jstr(r.json, "productId"));
    ts_resp_free(&r);
}

/* The notifications service has kept the product: the admin's watch of
 * it shows its title (null until the ProductCreatedEvent got there).
 * Products and orders are separate topics, so without this wait an order
 * placed at once may be read first and its notifications would name
 * "product 1a2b3c4d". The admin's watch goes again once the title shows. */
static bool product_known(void *arg)
{
    const char *id = arg;
    ts_resp_t r = call_json("POST", TD_SVC_NOTIFICATIONS, "/watches", W.admin,
                            json_pack("{s:s}", "productId", id));
    ts_resp_free(&r);
    r = call("GET", TD_SVC_NOTIFICATIONS, "/watches", W.admin, NULL);
    bool known = false;
    size_t i;
    json_t *it;
    json_array_foreach(json_object_get(r.json, "watches"), i, it)
    {
        const char *pid = jstr(it, "productId");
        if (pid && !strcmp(pid, id) && json_is_string(json_object_get(it, "title"))) known = true;
    }
    ts_resp_free(&r);
    if (!known) return false;
    char *path = td_asprintf("/watches/%s", id);
    r = call("DELETE", TD_SVC_NOTIFICATIONS, path, W.admin, NULL);
    free(path);
    ts_resp_free(&r);
    return true;
}

static void place_order(const char *token, const char *product_id, int quantity, char *id)
{
    ts_resp_t r = call_json("POST", TD_SVC_ORDERS, "/orders", token,
                            json_pack("{s:s, s:i}", "productId", product_id, "quantity", quantity));
    want_json(&r, 202);
    want_keys(r.json, "orderId status");
    want_uuid(r.json, "orderId");
    assert_string_equal(jstr(r.json, "status"), "PENDING");
    if (id) snprintf(id, TD_UUID_LEN + 1, "%s", jstr(r.json, "orderId"));
    ts_resp_free(&r);
}

typedef struct order_wait {
    const char *token, *id;
} order_wait_t;

static bool order_final(void *arg)
{
    const order_wait_t *w = arg;
    char *path = td_asprintf("/orders/%s", w->id);
    ts_resp_t r = call("GET", TD_SVC_ORDERS, path, w->token, NULL);
    free(path);
    bool done = r.status == 200 && strcmp(jstr(r.json, "status"), "PENDING");
    ts_resp_free(&r);
    return done;
}

static void wait_final(const char *token, const char *id)
{
    order_wait_t w = {token, id};
    if (!ts_wait_until(order_final, &w, WAIT_MS)) fail_msg("order %s stayed PENDING", id);
}

/* The notification of token's inbox whose title is title, or NULL. */
static json_t *find_notification(const char *token, const char *title)
{
    ts_resp_t r = call("GET", TD_SVC_NOTIFICATIONS, "/notifications?limit=500", token, NULL);
    json_t *found = NULL, *n;
    size_t i;
    if (r.status == 200) json_array_foreach(json_object_get(r.json, "notifications"), i, n)
        {
            if (!found && !strcmp(jstr(n, "title"), title)) found = json_incref(n);
        }
    ts_resp_free(&r);
    return found;
}

typedef struct notif_wait {
    const char *token, *title;
    json_t *found;
} notif_wait_t;

static bool notification_here(void *arg)
{
    notif_wait_t *w = arg;
    w->found = find_notification(w->token, w->title);
    return w->found != NULL;
}

static json_t *wait_notification(const char *token, const char *title)
{
    notif_wait_t w = {token, title, NULL};
    if (!ts_wait_until(notification_here, &w, WAIT_MS))
        fail_msg("no notification '%s' arrived", title);
    return w.found;
}

/* ---- world ----------------------------------------------------------------- */

static int world_start(void **state)
{
    (void)state;
    char err[512] = "";
    memset(&W, 0, sizeof W);
    W.dir = ts_tmpdir("0085-spec-conformance");
    ts_config(&W.bcfg, "broker", W.dir, NULL);
    W.broker = ts_broker(&W.bcfg);
    assert_non_null(W.broker);
    const char *brokers = td_broker_bootstraps(W.broker);
    for (int s = 0; s < TD_SVC__COUNT; s++) {
        ts_config(&W.cfg[s], td_service_name((td_service_t)s), W.dir, brokers);
        W.cfg[s].ports[s] = 0;
    }
    W.users = users_service_start(&W.cfg[TD_SVC_USERS], err, sizeof err);
    if (!W.users) fail_msg("users: %s", err);
    W.products = products_service_start(&W.cfg[TD_SVC_PRODUCTS], err, sizeof err);
    if (!W.products) fail_msg("products: %s", err);
    W.orders = orders_service_start(&W.cfg[TD_SVC_ORDERS], err, sizeof err);
    if (!W.orders) fail_msg("orders: %s", err);
    W.payments = payments_service_start(&W.cfg[TD_SVC_PAYMENTS], err, sizeof err);
    if (!W.payments) fail_msg("payments: %s", err);
    W.notifications = notifications_service_start(&W.cfg[TD_SVC_NOTIFICATIONS], err, sizeof err);
    if (!W.notifications) fail_msg("notifications: %s", err);
    const int ports[] = {
        [TD_SVC_USERS] = users_service_port(W.users),
        [TD_SVC_PRODUCTS] = td_app_service_port(W.products),
        [TD_SVC_ORDERS] = td_app_service_port(W.orders),
        [TD_SVC_PAYMENTS] = td_app_service_port(W.payments),
        [TD_SVC_NOTIFICATIONS] = notifications_service_port(W.notifications),
        [TD_SVC_WEB] = 0,
    };
    for (int s = 0; s < TD_SVC__COUNT; s++)
        snprintf(W.base[s], sizeof W.base[s], "http://127.0.0.1:%d", ports[s]);

    char admin_id[TD_UUID_LEN + 1];
    td_uuid_new(admin_id);
    W.admin = mint("admin", admin_id);
    sign_up("alice@example.com", "Alice", W.alice, W.alice_id);
    sign_up("bob@example.com", "Bob", W.bob, W.bob_id);
    return 0;
}

static int world_stop(void **state)
{
    (void)state;
    notifications_service_stop(W.notifications);
    td_app_service_stop(W.payments);
    td_app_service_stop(W.orders);
    td_app_service_stop(W.products);
    users_service_stop(W.users);
    td_broker_stop(W.broker);
    for (int s = 0; s < TD_SVC__COUNT; s++) td_config_free(&W.cfg[s]);
    td_config_free(&W.bcfg);
    free(W.admin);
    free(W.dir);
    return 0;
}

/* ---- the tests ------------------------------------------------------------- */

/* Every answer of the saga's resources has exactly its SPEC fields:
 * reason only when rejected, total only when approved. */
static void test_resources_have_exactly_their_spec_fields(void **state)
{
    (void)state;
    ts_resp_t r = call("GET", TD_SVC_USERS, "/users/me", W.alice, NULL);
    want_json(&r, 200);
    want_keys(r.json, "userId email name role createdAt");
    assert_string_equal(jstr(r.json, "userId"), W.alice_id);
    ts_resp_free(&r);

    make_product("Phone", "1129", 100, W.phone_id);
    r = call("GET", TD_SVC_PRODUCTS, "/products", NULL, NULL);
    want_json(&r, 200);
    want_keys(r.json, "products next");
    assert_true(json_is_null(json_object_get(r.json, "next")));
    want_keys(json_array_get(json_object_get(r.json, "products"), 0),
              "productId title price quantity createdAt");
    ts_resp_free(&r);
    if (!ts_wait_until(product_known, W.phone_id, WAIT_MS))
        fail_msg("the notifications service never heard of the product");

    place_order(W.alice, W.phone_id, 2, W.approved_id); /* 2258.00: approved */
    place_order(W.alice, W.phone_id, 5, W.rejected_id); /* 5645.00: over 5000.00 */
    wait_final(W.alice, W.approved_id);
    wait_final(W.alice, W.rejected_id);

    char *path = td_asprintf("/orders/%s", W.approved_id);
    r = call("GET", TD_SVC_ORDERS, path, W.alice, NULL);
    free(path);
    want_json(&r, 200);
    want_keys(r.json, "orderId userId productId quantity status total createdAt updatedAt");
    assert_string_equal(jstr(r.json, "status"), "APPROVED");
    assert_true(json_is_integer(json_object_get(r.json, "total")));
    assert_int_equal(json_integer_value(json_object_get(r.json, "total")), 2258);
    want_time(r.json, "createdAt");
    want_time(r.json, "updatedAt");
    ts_resp_free(&r);

    path = td_asprintf("/orders/%s", W.rejected_id);
    r = call("GET", TD_SVC_ORDERS, path, W.alice, NULL);
    free(path);
    want_json(&r, 200);
    want_keys(r.json, "orderId userId productId quantity status reason createdAt updatedAt");
    assert_string_equal(jstr(r.json, "reason"), "limit_exceeded");
    ts_resp_free(&r);

    path = td_asprintf("/payments/%s", W.approved_id);
    r = call("GET", TD_SVC_PAYMENTS, path, W.alice, NULL);
    free(path);
    want_json(&r, 200);
    want_keys(r.json, "paymentId orderId amount status");
    want_uuid(r.json, "paymentId");
    assert_int_equal(json_integer_value(json_object_get(r.json, "amount")), 2258);
    ts_resp_free(&r);

    json_t *n = wait_notification(W.alice, "Order confirmed");
    want_keys(n, "id seq userId type title body data createdAt readAt thread replaces");
    want_uuid(n, "id");
    want_time(n, "createdAt");
    assert_true(json_is_null(json_object_get(n, "readAt")));
    /* "Order confirmed" replaces "Order received" in the order's thread. */
    assert_int_equal(strncmp(json_string_value(json_object_get(n, "thread")), "order:", 6), 0);
    want_uuid(n, "replaces");
    want_keys(json_object_get(n, "data"), "orderId productId");
    json_decref(n);

    r = call("GET", TD_SVC_NOTIFICATIONS, "/notifications", W.alice, NULL);
    want_json(&r, 200);
    want_keys(r.json, "notifications unread next");
    ts_resp_free(&r);
    r = call("GET", TD_SVC_NOTIFICATIONS, "/preferences", W.alice, NULL);
    want_json(&r, 200);
    want_keys(r.json, "muted newProducts channels quietHours digestMinutes");
    want_keys(json_object_get(r.json, "channels"), "push webhook email");
    ts_resp_free(&r);
    r = call("GET", TD_SVC_NOTIFICATIONS, "/webpush/vapid-public-key", NULL, NULL);
    want_json(&r, 200);
    want_keys(r.json, "publicKey");
    assert_int_equal(strlen(jstr(r.json, "publicKey")), 87); /* base64url of 65 bytes */
    ts_resp_free(&r);
}

/* Owner or admin; anyone else gets the 404 of a thing that does not
 * exist, so ids leak nothing. */
static void test_others_resources_are_not_found(void **state)
{
    (void)state;
    static const struct {
        td_service_t svc;
        const char *fmt;
        const char *message;
    } paths[] = {
        {TD_SVC_ORDERS, "/orders/%s", "order not found"},
        {TD_SVC_PAYMENTS, "/payments/%s", "payment not found"},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(paths); i++) {
        char *mine = td_asprintf(paths[i].fmt, W.approved_id);
        char *none = td_asprintf(paths[i].fmt, NO_ORDER);
        ts_resp_t r = call("GET", paths[i].svc, mine, W.bob, NULL);
        want_error(&r, 404, "not_found", paths[i].message);
        ts_resp_free(&r);
        r = call("GET", paths[i].svc, none, W.alice, NULL);
        want_error(&r, 404, "not_found", paths[i].message);
        ts_resp_free(&r);
        r = call("GET", paths[i].svc, mine, W.admin, NULL);
        want_json(&r, 200);
        ts_resp_free(&r);
        r = call("GET", paths[i].svc, mine, NULL, NULL);
        want_error(&r, 401, "unauthenticated", NULL);
        ts_resp_free(&r);
        free(mine);
        free(none);
    }
    json_t *n = find_notification(W.alice, "Order confirmed");
    assert_non_null(n);
    char *path = td_asprintf("/notifications/%s/read", jstr(n, "id"));
    ts_resp_t r = call("POST", TD_SVC_NOTIFICATIONS, path, W.bob, NULL);
    want_error(&r, 404, "not_found", NULL);
    ts_resp_free(&r);
    free(path);
    json_decref(n);
}

/* The error shape, its codes and the JSON content type on every service:
 * unknown route, wrong method (with Allow), wrong content type, a body
 * over 64 KiB. */
static void test_errors_have_the_spec_shape_everywhere(void **state)
{
    (void)state;
    static const struct {
        td_service_t svc;
        const char *post; /* a route that takes a JSON body, or NULL */
    } svcs[] = {
        {TD_SVC_USERS, "/users"}, {TD_SVC_PRODUCTS, "/products"},      {TD_SVC_ORDERS, "/orders"},
        {TD_SVC_PAYMENTS, NULL},  {TD_SVC_NOTIFICATIONS, "/webhooks"},
    };
    char *big = td_malloc(70 * 1024 + 1);
    memset(big, ' ', 70 * 1024);
    big[0] = '{';
    big[70 * 1024 - 1] = '}';
    big[70 * 1024] = '\0';
    for (size_t i = 0; i < TD_ARRAY_SIZE(svcs); i++) {
        td_service_t s = svcs[i].svc;
        ts_resp_t r = call("GET", s, "/no/such/route", W.admin, NULL);
        want_error(&r, 404, "not_found", NULL);
        ts_resp_free(&r);

        r = call("DELETE", s, "/healthz", W.admin, NULL);
        want_error(&r, 405, "method_not_allowed", NULL);
        char allow[64];
        if (!ts_resp_header(&r, "Allow", allow, sizeof allow) || !strstr(allow, "GET"))
            fail_msg("%s: 405 without an Allow header naming GET", W.base[s]);
        ts_resp_free(&r);

        r = call("GET", s, "/healthz", NULL, NULL);
        want_json(&r, 200);
        ts_resp_free(&r);

        if (!svcs[i].post) continue;
        char *url = td_asprintf("%s%s", W.base[s], svcs[i].post);
        r = ts_http("POST", url, W.admin, "{}", "text/plain", NULL);
        want_error(&r, 415, "unsupported_media_type", NULL);
        ts_resp_free(&r);
        r = ts_http("POST", url, W.admin, big, NULL, NULL);
        want_error(&r, 413, "payload_too_large", NULL);
        ts_resp_free(&r);
        r = ts_http("POST", url, W.admin, "{\"x\":", NULL, NULL);
        want_error(&r, 400, "invalid_argument", NULL);
        ts_resp_free(&r);
        free(url);
    }
    free(big);
}

/* A bad ?limit= or ?after= reads the same on every list of every
 * service, so a client needs one way to handle it. */
static void test_bad_page_arguments_read_the_same_on_every_list(void **state)
{
    (void)state;
    static const struct {
        td_service_t svc;
        const char *path;
        bool authed;
    } lists[] = {
        {TD_SVC_PRODUCTS, "/products", false},          {TD_SVC_ORDERS, "/orders", true},
        {TD_SVC_NOTIFICATIONS, "/notifications", true}, {TD_SVC_NOTIFICATIONS, "/watches", true},
        {TD_SVC_NOTIFICATIONS, "/webhooks", true},
    };
    static const struct {
        const char *query, *message;
    } bad[] = {
        {"?limit=0", "limit must be an integer from 1 to 500"},
        {"?limit=501", "limit must be an integer from 1 to 500"},
        {"?limit=ten", "limit must be an integer from 1 to 500"},
        {"?limit=-1", "limit must be an integer from 1 to 500"},
        {"?after=not-a-cursor", "after is not a valid cursor"},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(lists); i++)
        for (size_t j = 0; j < TD_ARRAY_SIZE(bad); j++) {
            char *path = td_asprintf("%s%s", lists[i].path, bad[j].query);
            ts_resp_t r = call("GET", lists[i].svc, path, lists[i].authed ? W.alice : NULL, NULL);
            if (r.status != 400) fail_msg("GET %s: %ld %s", path, r.status, r.body);
            want_error(&r, 400, "invalid_argument", bad[j].message);
            ts_resp_free(&r);
            free(path);
        }
}

/* GET of a list at path, checked for the SPEC shape: the number of its
 * items, and its next cursor into next ("" when null). */
static size_t page(td_service_t svc, const char *path, const char *token, const char *plural,
                   char *next, size_t next_len)
{
    ts_resp_t r = call("GET", svc, path, token, NULL);
    want_json(&r, 200);
    const json_t *items = json_object_get(r.json, plural);
    assert_true(json_is_array(items));
    const json_t *n = json_object_get(r.json, "next");
    assert_true(json_is_null(n) || json_is_string(n));
    snprintf(next, next_len, "%s", json_is_string(n) ? json_string_value(n) : "");
    size_t cnt = json_array_size(items);
    ts_resp_free(&r);
    return cnt;
}

typedef struct count_wait {
    const char *token;
    size_t want;
} count_wait_t;

static bool inbox_has(void *arg)
{
    const count_wait_t *w = arg;
    char next[64];
    return page(TD_SVC_NOTIFICATIONS, "/notifications?limit=500", w->token, "notifications", next,
                sizeof next) >= w->want;
}

/* Default page 50, next null exactly on the last page, limit up to 500:
 * products, orders and notifications alike. */
static void test_lists_page_by_50_and_end_with_null(void **state)
{
    (void)state;
    char next[64], *path;
    /* 51 products in all with the phone of the first test. */
    for (int i = 0; i < 50; i++) {
        char title[32];
        snprintf(title, sizeof title, "Pen %02d", i);
        make_product(title, "1.5", 1000, NULL);
    }
    assert_int_equal(page(TD_SVC_PRODUCTS, "/products", NULL, "products", next, sizeof next), 50);
    assert_true(*next);
    path = td_asprintf("/products?after=%s", next);
    assert_int_equal(page(TD_SVC_PRODUCTS, path, NULL, "products", next, sizeof next), 1);
    assert_false(*next);
    free(path);
    assert_int_equal(
        page(TD_SVC_PRODUCTS, "/products?limit=500", NULL, "products", next, sizeof next), 51);
    assert_false(*next);
    assert_int_equal(
        page(TD_SVC_PRODUCTS, "/products?limit=51", NULL, "products", next, sizeof next), 51);
    assert_false(*next); /* a full last page still ends the list */

    /* 51 orders in all with the two of the first test. */
    char last[TD_UUID_LEN + 1];
    for (int i = 0; i < 49; i++) place_order(W.bob, W.phone_id, 1, last);
    place_order(W.alice, W.phone_id, 1, last);
    for (int i = 0; i < 48; i++) place_order(W.alice, W.phone_id, 1, last);
    wait_final(W.alice, last);
    assert_int_equal(page(TD_SVC_ORDERS, "/orders", W.alice, "orders", next, sizeof next), 50);
    assert_true(*next);
    path = td_asprintf("/orders?after=%s&limit=500", next);
    assert_int_equal(page(TD_SVC_ORDERS, path, W.alice, "orders", next, sizeof next), 1);
    assert_false(*next);
    free(path);

    /* Alice's inbox: welcome, sign-in, and two per order (received, and
     * confirmed or rejected): 2 + 2 * 51 = 104. */
    count_wait_t w = {W.alice, 104};
    if (!ts_wait_until(inbox_has, &w, WAIT_MS)) fail_msg("alice's inbox never reached 104");
    assert_int_equal(
        page(TD_SVC_NOTIFICATIONS, "/notifications", W.alice, "notifications", next, sizeof next),
        50);
    assert_true(*next);
    size_t seen = 50;
    while (*next) {
        path = td_asprintf("/notifications?after=%s", next);
        seen += page(TD_SVC_NOTIFICATIONS, path, W.alice, "notifications", next, sizeof next);
        free(path);
    }
    assert_int_equal(seen, 104);
}

/* Money in a sentence reads one way: grouped units and two decimals,
 * through the real services (products -> orders -> notifications). */
static void test_money_reads_naturally_in_notifications(void **state)
{
    (void)state;
    /* Alice's first order, 2 x 1129 (an integer in JSON). */
    ts_resp_t r = call("GET", TD_SVC_NOTIFICATIONS, "/notifications?limit=500", W.alice, NULL);
    bool found = false;
    size_t i;
    json_t *it;
    char seen[2048] = "";
    json_array_foreach(json_object_get(r.json, "notifications"), i, it)
    {
        if (!strcmp(jstr(it, "body"), "Your order of 2 × Phone is confirmed: total 2,258.00."))
            found = true;
        else if (strstr(jstr(it, "body"), "2 ×") && strlen(seen) < sizeof(seen) - 200)
            snprintf(seen + strlen(seen), sizeof(seen) - strlen(seen), " [%s]", jstr(it, "body"));
    }
    size_t listed = json_array_size(json_object_get(r.json, "notifications"));
    ts_resp_free(&r);
    if (!found)
        fail_msg("no confirmation of the 2 x Phone order among %zu notifications (status %ld); "
                 "other texts with '2 ×':%s",
                 listed, r.status, seen);

    /* A watcher hears of a price drop in the same words. */
    json_t *body_json = json_pack("{s:s}", "productId", W.phone_id);
    r = call_json("POST", TD_SVC_NOTIFICATIONS, "/watches", W.bob, body_json);
    want_json(&r, 201);
    ts_resp_free(&r);
    char *path = td_asprintf("/products/%s", W.phone_id);
    r = call("PATCH", TD_SVC_PRODUCTS, path, W.admin, "{\"price\":999.9}");
    free(path);
    want_json(&r, 200);
    ts_resp_free(&r);
    json_t *n = wait_notification(W.bob, "Price drop: Phone");
    assert_string_equal(jstr(n, "body"), "Phone now costs 999.90 instead of 1,129.00.");
    json_decref(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resources_have_exactly_their_spec_fields),
        cmocka_unit_test(test_others_resources_are_not_found),
        cmocka_unit_test(test_errors_have_the_spec_shape_everywhere),
        cmocka_unit_test(test_bad_page_arguments_read_the_same_on_every_list),
        cmocka_unit_test(test_lists_page_by_50_and_end_with_null),
        cmocka_unit_test(test_money_reads_naturally_in_notifications),
    };
    return cmocka_run_group_tests(tests, world_start, world_stop);
}
