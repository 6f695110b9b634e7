/* What the hostile-events tests share (tests/integration/0080 runs the cases the services
 * must and do handle, 0081 the contract cases that are known to fail until
 * the services are fixed). Every consuming service (products, orders,
 * payments, notifications, and the web event reader) runs in this process
 * on one embedded broker; a buyer thread places real orders over HTTP
 * while the test writes hostile records straight onto every consumed
 * topic: a mutation of every field of every event type a service handles
 * (missing, null, array, object, the wrong scalar, a bad UUID, a negative,
 * fractional, 1e300 or 20-digit number, 3-decimal money, an empty or
 * 100 KiB string, a NUL), broken envelopes (not UTF-8, an array, an empty
 * value, no headers, a bad traceparent, ce_specversion 0.3, ...), unknown
 * and unhandled types, events about orders nobody placed, and copies of
 * valid events under their ce_id. Then every record is accounted for: the
 * services are alive and ready, every real order is final with stock
 * conserved, each hostile record is in <topic>.DLT once per consumer that
 * handles it (with a reason that names the problem and its key, value and
 * headers kept), skipped types are in no DLT, no hostile record caused an
 * event, a notification or a state change, and the consumed-records
 * metrics say the same. Problems are collected and reported together, so
 * one run shows every broken case. */
#include "thostile.h"

#include <ctype.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* clang-format off: cmocka needs the four above first */
#include <cmocka.h>
/* clang-format on */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifications/notifications_service.h"
#include "orders/orders_service.h"
#include "payments/payments_service.h"
#include "products/products_service.h"
#include "tidings/auth.h"
#include "tidings/envelope.h"
#include "tidings/json.h"
#include "tidings/metrics.h"
#include "tsupport.h"
#include "web/web_service.h"

#define HT_WAIT_MS     40000
#define HT_LIMIT_CENTS 100000 /* payment limit 1000.00 */
#define HT_LONG        (100 * 1024)
#define HT_MAX_ORDERS  32
#define HT_PRODUCTS    4
#define HT_MAX_EXPECT  4

/* ---- the world ------------------------------------------------------------- */

typedef struct ht_user {
    char id[TD_UUID_LEN + 1];
    char *token;
} ht_user_t;

typedef struct ht_order {
    char id[TD_UUID_LEN + 1];
    int buyer;   /* index into W.buyers */
    int product; /* index into W.pids, -1 for an unknown product */
    int qty;
    long status; /* of POST /orders */
} ht_order_t;

/* One hostile record (or, with rec NULL, a dead letter another hostile
 * record is expected to cause downstream). */
typedef struct ht_case {
    char *label;
    const char *topic; /* short name */
    char key[TD_UUID_LEN + 1];
    td_record_t *rec; /* as produced, NULL for a downstream expectation */
    char ce_id[TD_EVENT_ID_MAX + 1];
    /* One reason pattern per expected dead letter ("a|b": either word). */
    char *expect[HT_MAX_EXPECT];
    size_t expect_cnt;
} ht_case_t;

typedef struct ht_world {
    bool strict;
    char *dir;
    td_config_t bcfg, pcfg, ocfg, paycfg, ncfg, wcfg;
    td_broker_t *broker;
    const char *brokers;
    products_service_t *products;
    orders_service_t *orders;
    payments_service_t *payments;
    notifications_service_t *notif;
    web_service_t *web;
    char products_url[64], orders_url[64], payments_url[64], notif_url[64], web_url[64];
    char *admin;
    ht_user_t buyers[2]; /* alice, bob: the real traffic */
    ht_user_t carol;     /* owns the approved order the strict cases aim at */
    ht_user_t victim;    /* the userId of the hostile records: must get nothing */
    ht_user_t stranger;  /* the buyer of the order for an unknown product */
    ht_user_t watcher;   /* watches every product, wants new ones: must get nothing */
    char pids[HT_PRODUCTS][TD_UUID_LEN + 1];
    int64_t stock0[HT_PRODUCTS];
    char approved[TD_UUID_LEN + 1]; /* carol's order, APPROVED before the attack */
    ht_order_t placed[HT_MAX_ORDERS];
    size_t order_cnt;
    ht_case_t *cases;
    size_t case_cnt, case_cap;
    /* The hostile OrderCreatedEvent for an unknown product: its reaction
     * (one ProductReservationFailedEvent, one notification) is allowed. */
    char cascade_id[TD_EVENT_ID_MAX + 1];
    /* What went wrong, reported together at the end. */
    char **problems;
    size_t problem_cnt;
} ht_world_t;

static ht_world_t W;

static void problem(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void problem(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) abort();
    va_end(ap);
    W.problems = td_realloc(W.problems, (W.problem_cnt + 1) * sizeof(*W.problems));
    W.problems[W.problem_cnt++] = s;
}

/* Prints every problem so far and fails the test when there is one. */
static void problems_report(const char *what)
{
    if (!W.problem_cnt) return;
    fprintf(stderr, "---- %zu problem(s) %s ----\n", W.problem_cnt, what);
    for (size_t i = 0; i < W.problem_cnt; i++) {
        fprintf(stderr, "  %s\n", W.problems[i]);
        free(W.problems[i]);
    }
    size_t n = W.problem_cnt;
    free(W.problems);
    W.problems = NULL;
    W.problem_cnt = 0;
    fail_msg("%zu problem(s) %s (listed above)", n, what);
}

static char *ht_mint(const char *role, ht_user_t *u)
{
    td_claims_t c;
    memset(&c, 0, sizeof c);
    td_uuid_new(c.sub);
    snprintf(c.role, sizeof c.role, "%s", role);
    c.iat = td_now_ms() / 1000;
    c.exp = c.iat + 3600;
    if (u) memcpy(u->id, c.sub, sizeof u->id);
    return td_jwt_sign(W.pcfg.secret, W.pcfg.secret_len, &c);
}

static void ht_service_cfg(td_config_t *cfg, const char *name, td_service_t svc)
{
    ts_config(cfg, name, W.dir, W.brokers);
    cfg->ports[svc] = 0;
}

static void ht_url(char *buf, size_t len, int port)
{
    snprintf(buf, len, "http://127.0.0.1:%d", port);
}

void ht_world_start(bool strict)
{
    char err[512] = "";
    memset(&W, 0, sizeof W);
    W.strict = strict;
    W.dir = ts_tmpdir(strict ? "0081-hostile-events" : "0080-hostile-events");
    ts_config(&W.bcfg, "broker", W.dir, NULL);
    W.broker = ts_broker(&W.bcfg);
    W.brokers = td_broker_bootstraps(W.broker);

    ht_service_cfg(&W.pcfg, "products", TD_SVC_PRODUCTS);
    ht_service_cfg(&W.ocfg, "orders", TD_SVC_ORDERS);
    ht_service_cfg(&W.paycfg, "payments", TD_SVC_PAYMENTS);
    ht_service_cfg(&W.ncfg, "notifications", TD_SVC_NOTIFICATIONS);
    ht_service_cfg(&W.wcfg, "web", TD_SVC_WEB);
    W.paycfg.payment_limit = HT_LIMIT_CENTS;

    if (!(W.products = products_service_start(&W.pcfg, err, sizeof err)))
        fail_msg("products: %s", err);
    if (!(W.orders = orders_service_start(&W.ocfg, err, sizeof err))) fail_msg("orders: %s", err);
    if (!(W.payments = payments_service_start(&W.paycfg, err, sizeof err)))
        fail_msg("payments: %s", err);
    if (!(W.notif = notifications_service_start(&W.ncfg, err, sizeof err)))
        fail_msg("notifications: %s", err);
    if (!(W.web = web_service_start(&W.wcfg, err, sizeof err))) fail_msg("web: %s", err);
    ht_url(W.products_url, sizeof W.products_url, td_app_service_port(W.products));
    ht_url(W.orders_url, sizeof W.orders_url, td_app_service_port(W.orders));
    ht_url(W.payments_url, sizeof W.payments_url, td_app_service_port(W.payments));
    ht_url(W.notif_url, sizeof W.notif_url, notifications_service_port(W.notif));
    ht_url(W.web_url, sizeof W.web_url, web_service_port(W.web));

    W.admin = ht_mint("admin", NULL);
    ht_user_t *users[] = {&W.buyers[0], &W.buyers[1], &W.carol, &W.victim, &W.stranger, &W.watcher};
    for (size_t i = 0; i < TD_ARRAY_SIZE(users); i++)
        users[i]->token = ht_mint("customer", users[i]);
}

void ht_world_stop(void)
{
    web_service_stop(W.web);
    notifications_service_stop(W.notif);
    td_app_service_stop(W.payments);
    td_app_service_stop(W.orders);
    td_app_service_stop(W.products);
    td_broker_stop(W.broker);
    td_config_free(&W.pcfg);
    td_config_free(&W.ocfg);
    td_config_free(&W.paycfg);
    td_config_free(&W.ncfg);
    td_config_free(&W.wcfg);
    td_config_free(&W.bcfg);
    free(W.admin);
    ht_user_t *users[] = {&W.buyers[0], &W.buyers[1], &W.carol, &W.victim, &W.stranger, &W.watcher};
    for (size_t i = 0; i < TD_ARRAY_SIZE(users); i++) free(users[i]->token);
    for (size_t i = 0; i < W.case_cnt; i++) {
        ht_case_t *c = &W.cases[i];
        free(c->label);
        td_record_free(c->rec);
        for (size_t k = 0; k < c->expect_cnt; k++) free(c->expect[k]);
    }
    free(W.cases);
    free(W.dir);
}

/* ---- HTTP ------------------------------------------------------------------ */

static ts_resp_t ht_call(const char *method, const char *base, const char *path, const char *token,
                         const char *body)
{
    char *url = td_asprintf("%s%s", base, path);
    ts_resp_t r = ts_http(method, url, token, body, NULL, NULL);
    free(url);
    return r;
}

static void ht_make_product(int i, const char *price, int qty)
{
    char *body = td_asprintf("{\"title\":\"Hostile-proof lamp %d\",\"price\":%s,\"quantity\":%d}",
                             i, price, qty);
    ts_resp_t r = ht_call("POST", W.products_url, "/products", W.admin, body);
    free(body);
    if (r.status != 201) fail_msg("POST /products: %ld %s", r.status, r.body);
    snprintf(W.pids[i], sizeof W.pids[i], "%s",
             json_string_value(json_object_get(r.json, "productId")));
    W.stock0[i] = qty;
    ts_resp_free(&r);
}

static int64_t ht_stock(int i)
{
    char path[80];
    snprintf(path, sizeof path, "/products/%s", W.pids[i]);
    ts_resp_t r = ht_call("GET", W.products_url, path, NULL, NULL);
    if (r.status != 200) fail_msg("GET %s: %ld %s", path, r.status, r.body);
    int64_t v = json_integer_value(json_object_get(r.json, "quantity"));
    ts_resp_free(&r);
    return v;
}

/* The order's status ("" when the request failed), NULL-safe. */
static void ht_order_status(const char *order_id, char *status, size_t len, char *reason,
                            size_t rlen)
{
    char path[80];
    snprintf(path, sizeof path, "/orders/%s", order_id);
    ts_resp_t r = ht_call("GET", W.orders_url, path, W.admin, NULL);
    const char *st = r.status == 200 ? json_string_value(json_object_get(r.json, "status")) : NULL;
    const char *why = r.status == 200 ? json_string_value(json_object_get(r.json, "reason")) : NULL;
    snprintf(status, len, "%s", st ? st : "");
    if (reason) snprintf(reason, rlen, "%s", why ? why : "");
    ts_resp_free(&r);
}

static bool ht_order_final(void *arg)
{
    char st[32];
    ht_order_status(arg, st, sizeof st, NULL, 0);
    return !strcmp(st, "APPROVED") || !strcmp(st, "REJECTED");
}

/* Waits for every placed order to be final, all within one HT_WAIT_MS
 * (a stalled partition must fail the test, not hold it for an age). */
static bool ht_all_final(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < W.order_cnt; i++)
        if (W.placed[i].status == 202 && !ht_order_final(W.placed[i].id)) return false;
    return true;
}

static long ht_status(const char *method, const char *base, const char *path, const char *token)
{
    ts_resp_t r = ht_call(method, base, path, token, NULL);
    long s = r.status;
    ts_resp_free(&r);
    return s;
}

/* The user's inbox (first 500), caller decrefs. */
static json_t *ht_inbox(const ht_user_t *u)
{
    ts_resp_t r = ht_call("GET", W.notif_url, "/notifications?limit=500", u->token, NULL);
    if (r.status != 200) fail_msg("GET /notifications: %ld %s", r.status, r.body);
    json_t *items = json_incref(json_object_get(r.json, "notifications"));
    ts_resp_free(&r);
    return items;
}

typedef struct ht_known_wait {
    const char *product_id;
} ht_known_wait_t;

/* Watches the product and is true once the notifications service knows
 * it: the watch is listed with its title (a product not seen yet is
 * watched too, with title null). */
static bool ht_watch_ok(void *arg)
{
    const char *pid = ((ht_known_wait_t *)arg)->product_id;
    char *body = td_asprintf("{\"productId\":\"%s\"}", pid);
    ts_resp_t r = ht_call("POST", W.notif_url, "/watches", W.watcher.token, body);
    free(body);
    bool ok = false;
    json_t *w;
    size_t i;
    if (r.status == 200 || r.status == 201) {
        ts_resp_free(&r);
        r = ht_call("GET", W.notif_url, "/watches?limit=100", W.watcher.token, NULL);
        json_array_foreach(json_object_get(r.json, "watches"), i, w)
        {
            if (!strcmp(json_string_value(json_object_get(w, "productId")), pid))
                ok = json_is_string(json_object_get(w, "title"));
        }
    }
    ts_resp_free(&r);
    return ok;
}

/* ---- the buyer: real orders while the hostile records flow ----------------- */

static const struct {
    int buyer, product, qty;
} ht_plan[] = {
    {0, 0, 3},  {1, 1, 2},  /* 600.00: approved */
    {0, 1, 4},              /* 1200.00: over the payment limit, stock back */
    {1, 2, 1},  {0, 2, 5},  /* out of stock */
    {1, -1, 1},             /* an unknown product */
    {0, 0, 10}, {1, 0, 60}, /* out of stock */
    {0, 1, 1},  {1, 2, 2},  /* 1999.98: over the limit */
    {0, 0, 1},  {1, 1, 3},  {0, 2, 1}, {1, 0, 2}, {0, 1, 1}, {1, 0, 4},
};

static void *ht_buyer_main(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < TD_ARRAY_SIZE(ht_plan) && W.order_cnt < HT_MAX_ORDERS; i++) {
        ht_order_t *o = &W.placed[W.order_cnt];
        o->buyer = ht_plan[i].buyer;
        o->product = ht_plan[i].product;
        o->qty = ht_plan[i].qty;
        char ghost[TD_UUID_LEN + 1];
        td_uuid_new(ghost);
        char *body = td_asprintf("{\"productId\":\"%s\",\"quantity\":%d}",
                                 o->product >= 0 ? W.pids[o->product] : ghost, o->qty);
        ts_resp_t r = ht_call("POST", W.orders_url, "/orders", W.buyers[o->buyer].token, body);
        free(body);
        o->status = r.status;
        const char *oid = json_string_value(json_object_get(r.json, "orderId"));
        snprintf(o->id, sizeof o->id, "%s", oid ? oid : "");
        ts_resp_free(&r);
        W.order_cnt++;
        /* Pacing, so the orders spread over the whole attack. */
        td_sleep_ms(250);
    }
    return NULL;
}

/* ---- the event types and what their consumers check ------------------------ */

typedef enum {
    K_UUID,
    K_STR,
    K_QTY,  /* an order's quantity: an integer >= 1 */
    K_QTY0, /* a stock quantity: an integer >= 0 */
    K_MONEY,
    K_TIME,
    K_OPT, /* an optional string */
} ht_kind_t;

typedef enum {
    M_MISSING,
    M_NULL,
    M_ARRAY,
    M_OBJECT,
    M_WRONG, /* a number for a string, a string for a number */
    M_BAD_UUID,
    M_UPPER_UUID,
    M_EMPTY,
    M_LONG,
    M_NUL,
    M_NEG,
    M_ZERO,
    M_FRACTION,
    M_HUGE,   /* 1e300 */
    M_BIGINT, /* 99999999999999999999: no JSON parser keeps it */
    M_DEC3,
    M_BAD_TIME,
    M_COUNT
} ht_mut_t;

static const char *const ht_mut_names[] = {
    "missing",
    "null",
    "an array",
    "an object",
    "the wrong type",
    "not a UUID",
    "an uppercase UUID",
    "empty",
    "100 KiB long",
    "holding a NUL",
    "-1",
    "0",
    "1.5",
    "1e300",
    "99999999999999999999",
    "1.005 (3 decimals)",
    "not a time",
};

typedef struct ht_field {
    const char *name;
    ht_kind_t kind;
} ht_field_t;

/* A consumer of a type: the checks it makes today ("field" for the type
 * and format checks, "field:zero", "field:empty", "field:long" for the
 * value checks beyond them), which only decide whether a case belongs to
 * 0080 or 0081, and what it says about a well-formed event for an order it
 * does not know (NULL: it would act on it). */
typedef struct ht_consumer {
    const char *svc;
    const char *checks;
    const char *fallback;
} ht_consumer_t;

typedef struct ht_type {
    const char *type, *topic;
    ht_field_t fields[7];
    ht_consumer_t cons[2];
    size_t cons_cnt;
} ht_type_t;

static const ht_type_t ht_types[] = {
    {"UserRegisteredEvent",
     "users",
     {{"userId", K_UUID}, {"email", K_STR}, {"name", K_STR}, {"registeredAt", K_TIME}},
     {{"notifications", "userId email email:empty name name:empty", NULL}},
     1},
    {"UserLoggedInEvent",
     "users",
     {{"userId", K_UUID},
      {"email", K_STR},
      {"loggedInAt", K_TIME},
      {"userAgent", K_OPT},
      {"ip", K_OPT}},
     {{"notifications", "userId email email:empty", NULL}},
     1},
    {"ProductCreatedEvent",
     "products",
     {{"productId", K_UUID}, {"title", K_STR}, {"price", K_MONEY}, {"quantity", K_QTY0}},
     {{"notifications", "productId title title:empty price quantity", NULL}},
     1},
    {"ProductUpdatedEvent",
     "products",
     {{"productId", K_UUID},
      {"title", K_STR},
      {"price", K_MONEY},
      {"quantity", K_QTY0},
      {"previousPrice", K_MONEY},
      {"previousQuantity", K_QTY0}},
     {{"notifications", "productId title title:empty price quantity previousPrice previousQuantity",
       NULL}},
     1},
    {"ProductDeletedEvent",
     "products",
     {{"productId", K_UUID}, {"title", K_STR}},
     {{"notifications", "productId title title:empty", NULL}},
     1},
    {"OrderCreatedEvent",
     "orders",
     {{"orderId", K_UUID},
      {"userId", K_UUID},
      {"productId", K_UUID},
      {"quantity", K_QTY},
      {"createdAt", K_TIME}},
     {{"products", "orderId userId productId quantity quantity:zero", NULL},
      {"notifications", "orderId userId productId quantity", NULL}},
     2},
    {"OrderApprovedEvent",
     "orders",
     {{"orderId", K_UUID},
      {"userId", K_UUID},
      {"productId", K_UUID},
      {"quantity", K_QTY},
      {"total", K_MONEY}},
     {{"notifications", "orderId userId productId quantity total", NULL}},
     1},
    {"OrderRejectedEvent",
     "orders",
     {{"orderId", K_UUID},
      {"userId", K_UUID},
      {"productId", K_UUID},
      {"quantity", K_QTY},
      {"reason", K_STR}},
     {{"notifications", "orderId userId productId quantity reason reason:empty", NULL}},
     1},
    {"ProductReservedEvent",
     "reservations",
     {{"orderId", K_UUID},
      {"userId", K_UUID},
      {"productId", K_UUID},
      {"quantity", K_QTY},
      {"unitPrice", K_MONEY}},
     {{"payments", "orderId userId productId quantity quantity:zero unitPrice", NULL}},
     1},
    {"ProductReservationFailedEvent",
     "reservations",
     {{"orderId", K_UUID},
      {"userId", K_UUID},
      {"productId", K_UUID},
      {"quantity", K_QTY},
      {"reason", K_STR}},
     {{"orders", "orderId userId reason reason:empty reason:long", "unknown order"}},
     1},
    {"ProductReservationCancelledEvent",
     "reservations",
     {{"orderId", K_UUID}, {"userId", K_UUID}, {"productId", K_UUID}, {"quantity", K_QTY}},
     {{NULL, NULL, NULL}},
     0},
    {"PaymentProcessedEvent",
     "payments",
     {{"paymentId", K_UUID}, {"orderId", K_UUID}, {"userId", K_UUID}, {"amount", K_MONEY}},
     {{"orders", "orderId userId amount", "unknown order"}},
     1},
    {"PaymentFailedEvent",
     "payments",
     {{"orderId", K_UUID}, {"userId", K_UUID}, {"amount", K_MONEY}, {"reason", K_STR}},
     {{"products", "orderId", "reservation"},
      {"orders", "orderId userId reason reason:empty reason:long", "unknown order"}},
     2},
};

/* Consumer groups reading a topic (the web reader dead-letters nothing). */
static int ht_groups(const char *topic)
{
    if (!strcmp(topic, "users") || !strcmp(topic, "products")) return 1; /* notifications */
    if (!strcmp(topic, "notifications")) return 1; /* this instance's live consumer */
    return 2; /* orders: products, notifications; reservations: orders, payments;
                 payments: products, orders */
}

/* The service that writes a topic (the ce_source of its events). */
static const char *ht_writer(const char *topic)
{
    return !strcmp(topic, "reservations") ? "products" : topic;
}

/* Whether consumer c checks field for mutation m today. */
static bool ht_checks(const ht_consumer_t *c, const ht_field_t *f, ht_mut_t m)
{
    const char *extra = m == M_ZERO                         ? "zero"
                        : m == M_EMPTY && f->kind != K_UUID ? "empty"
                        : m == M_LONG                       ? "long"
                                                            : NULL;
    char want[64];
    if (extra)
        snprintf(want, sizeof want, "%s:%s", f->name, extra);
    else
        snprintf(want, sizeof want, "%s", f->name);
    size_t n = strlen(want);
    for (const char *p = c->checks; p && (p = strstr(p, want)); p += n)
        if ((p == c->checks || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0')) return true;
    return false;
}

static bool ht_applies(ht_kind_t k, ht_mut_t m)
{
    switch (m) {
    case M_MISSING:
    case M_NULL:
        return k != K_OPT;
    case M_ARRAY:
    case M_OBJECT:
    case M_WRONG:
        return true;
    case M_BAD_UUID:
    case M_UPPER_UUID:
        return k == K_UUID;
    case M_EMPTY:
        return k == K_UUID || k == K_STR || k == K_TIME;
    case M_LONG:
    case M_NUL:
        return k == K_STR;
    case M_NEG:
    case M_HUGE:
    case M_BIGINT:
        return k == K_QTY || k == K_QTY0 || k == K_MONEY;
    case M_FRACTION: /* 1.5 is money */
        return k == K_QTY || k == K_QTY0;
    case M_ZERO:
        return k == K_QTY;
    case M_DEC3:
        return k == K_MONEY;
    case M_BAD_TIME:
        return k == K_TIME;
    default:
        return false;
    }
}

/* ---- building records ------------------------------------------------------ */

static json_t *ht_base(const ht_type_t *t, const char *order_id)
{
    char now[TD_TIME_LEN + 1], fresh[TD_UUID_LEN + 1];
    td_time_format(td_now_ms(), now);
    td_uuid_new(fresh);
    const char *v = W.victim.id, *p0 = W.pids[0];
    const char *ty = t->type;
    if (!strcmp(ty, "UserRegisteredEvent"))
        return json_pack("{s:s, s:s, s:s, s:s}", "userId", v, "email", "victim@example.com", "name",
                         "Victim", "registeredAt", now);
    if (!strcmp(ty, "UserLoggedInEvent"))
        return json_pack("{s:s, s:s, s:s, s:s, s:s}", "userId", v, "email", "victim@example.com",
                         "loggedInAt", now, "userAgent", "curl/8.0", "ip", "127.0.0.1");
    if (!strcmp(ty, "ProductCreatedEvent"))
        return json_pack("{s:s, s:s, s:f, s:i}", "productId", fresh, "title", "Forged lamp",
                         "price", 12.5, "quantity", 3);
    /* A price drop and a restock of a product the watcher watches. */
    if (!strcmp(ty, "ProductUpdatedEvent"))
        return json_pack("{s:s, s:s, s:i, s:i, s:i, s:i}", "productId", p0, "title", "Forged lamp",
                         "price", 5, "quantity", 5, "previousPrice", 10, "previousQuantity", 0);
    if (!strcmp(ty, "ProductDeletedEvent"))
        return json_pack("{s:s, s:s}", "productId", W.pids[1], "title", "Forged lamp");
    if (!strcmp(ty, "OrderCreatedEvent"))
        return json_pack("{s:s, s:s, s:s, s:i, s:s}", "orderId", order_id, "userId", v, "productId",
                         p0, "quantity", 1, "createdAt", now);
    if (!strcmp(ty, "OrderApprovedEvent"))
        return json_pack("{s:s, s:s, s:s, s:i, s:i}", "orderId", order_id, "userId", v, "productId",
                         p0, "quantity", 1, "total", 10);
    if (!strcmp(ty, "OrderRejectedEvent") || !strcmp(ty, "ProductReservationFailedEvent"))
        return json_pack("{s:s, s:s, s:s, s:i, s:s}", "orderId", order_id, "userId", v, "productId",
                         p0, "quantity", 1, "reason", "out_of_stock");
    if (!strcmp(ty, "ProductReservedEvent"))
        return json_pack("{s:s, s:s, s:s, s:i, s:i}", "orderId", order_id, "userId", v, "productId",
                         p0, "quantity", 1, "unitPrice", 10);
    if (!strcmp(ty, "ProductReservationCancelledEvent"))
        return json_pack("{s:s, s:s, s:s, s:i}", "orderId", order_id, "userId", v, "productId", p0,
                         "quantity", 1);
    if (!strcmp(ty, "PaymentProcessedEvent"))
        return json_pack("{s:s, s:s, s:s, s:i}", "paymentId", fresh, "orderId", order_id, "userId",
                         v, "amount", 10);
    if (!strcmp(ty, "PaymentFailedEvent"))
        return json_pack("{s:s, s:s, s:i, s:s}", "orderId", order_id, "userId", v, "amount", 10,
                         "reason", "limit_exceeded");
    fail_msg("no base data for %s", ty);
    return NULL;
}

#define HT_RAW "@@raw@@"

/* Replaces the first needle in *text (of *len bytes) with repl. */
static void ht_replace(char **text, size_t *len, const char *needle, const void *repl,
                       size_t repl_len)
{
    char *at = strstr(*text, needle);
    if (!at) fail_msg("marker %s not in %s", needle, *text);
    size_t pre = (size_t)(at - *text), nlen = strlen(needle);
    size_t out_len = *len - nlen + repl_len;
    char *out = td_malloc(out_len + 1);
    memcpy(out, *text, pre);
    memcpy(out + pre, repl, repl_len);
    memcpy(out + pre + repl_len, at + nlen, *len - pre - nlen);
    out[out_len] = '\0';
    free(*text);
    *text = out;
    *len = out_len;
}

/* Applies m to field f of data; the raw JSON number text to put in the
 * HT_RAW marker's place, or NULL. */
static const char *ht_mutate(json_t *data, const ht_field_t *f, ht_mut_t m)
{
    const char *raw = NULL;
    json_t *v = NULL;
    switch (m) {
    case M_MISSING:
        json_object_del(data, f->name);
        return NULL;
    case M_NULL:
        v = json_null();
        break;
    case M_ARRAY:
        v = json_pack("[s]", "x");
        break;
    case M_OBJECT:
        v = json_pack("{s:s}", "x", "y");
        break;
    case M_WRONG:
        v = (f->kind == K_QTY || f->kind == K_QTY0 || f->kind == K_MONEY) ? json_string("2")
                                                                          : json_integer(42);
        break;
    case M_BAD_UUID:
        v = json_string("not-a-uuid");
        break;
    case M_UPPER_UUID: {
        char up[TD_UUID_LEN + 1];
        snprintf(up, sizeof up, "%s", json_string_value(json_object_get(data, f->name)));
        for (char *p = up; *p; p++) *p = (char)toupper((unsigned char)*p);
        v = json_string(up);
        break;
    }
    case M_EMPTY:
        v = json_string("");
        break;
    case M_LONG: {
        char *s = td_malloc(HT_LONG + 1);
        memset(s, 'A', HT_LONG);
        s[HT_LONG] = '\0';
        v = json_string(s);
        free(s);
        break;
    }
    case M_NUL:
        v = json_stringn("a\0b", 3);
        break;
    case M_BAD_TIME:
        v = json_string("yesterday");
        break;
    case M_NEG:
        raw = "-1";
        break;
    case M_ZERO:
        raw = "0";
        break;
    case M_FRACTION:
        raw = "1.5";
        break;
    case M_HUGE:
        raw = "1e300";
        break;
    case M_BIGINT:
        raw = "99999999999999999999";
        break;
    case M_DEC3:
        raw = "1.005";
        break;
    default:
        fail_msg("bad mutation %d", (int)m);
    }
    if (raw) v = json_string(HT_RAW);
    json_object_set_new(data, f->name, v);
    return raw;
}

static void ht_set_header(td_record_t *rec, const char *name, const void *value, size_t len)
{
    for (size_t i = 0; i < rec->header_cnt; i++) {
        if (strcmp(rec->headers[i].name, name)) continue;
        free(rec->headers[i].value);
        rec->headers[i].value = td_malloc(len + 1);
        memcpy(rec->headers[i].value, value, len);
        ((char *)rec->headers[i].value)[len] = '\0';
        rec->headers[i].len = len;
        return;
    }
    td_record_add_header(rec, name, value, len);
}

static void ht_drop_header(td_record_t *rec, const char *name)
{
    size_t j = 0;
    for (size_t i = 0; i < rec->header_cnt; i++) {
        if (!strcmp(rec->headers[i].name, name)) {
            free(rec->headers[i].name);
            free(rec->headers[i].value);
            continue;
        }
        rec->headers[j++] = rec->headers[i];
    }
    rec->header_cnt = j;
}

/* A new case: a CloudEvent of type on topic with data (stolen) as its
 * value, keyed by a fresh UUID (so its dead letters can be found). */
static ht_case_t *ht_case_new(const char *topic, const char *type, json_t *data, const char *key,
                              const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static ht_case_t *ht_case_new(const char *topic, const char *type, json_t *data, const char *key,
                              const char *fmt, ...)
{
    if (W.case_cnt == W.case_cap) {
        W.case_cap = W.case_cap ? W.case_cap * 2 : 256;
        W.cases = td_realloc(W.cases, W.case_cap * sizeof(*W.cases));
    }
    ht_case_t *c = &W.cases[W.case_cnt++];
    memset(c, 0, sizeof *c);
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&c->label, fmt, ap) < 0) abort();
    va_end(ap);
    c->topic = topic;
    if (key)
        snprintf(c->key, sizeof c->key, "%s", key);
    else
        td_uuid_new(c->key);
    td_event_t *ev = td_event_new(ht_writer(topic), type, c->key, json_object());
    snprintf(c->ce_id, sizeof c->ce_id, "%s", ev->id);
    char *full = td_topic_name(&W.pcfg, topic);
    c->rec = td_event_to_record(ev, full);
    free(full);
    td_event_free(ev);
    char *text = td_json_dumps(data);
    td_record_set_value(c->rec, text, strlen(text));
    free(text);
    json_decref(data);
    return c;
}

static void ht_expect(ht_case_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ht_expect(ht_case_t *c, const char *fmt, ...)
{
    assert_true(c->expect_cnt < HT_MAX_EXPECT);
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&c->expect[c->expect_cnt++], fmt, ap) < 0) abort();
    va_end(ap);
}

/* Sets the case's value to text with the raw marker replaced. */
static void ht_value_raw(ht_case_t *c, const char *raw)
{
    char *text = td_strndup(c->rec->value, c->rec->value_len);
    size_t len = c->rec->value_len;
    char marker[32];
    snprintf(marker, sizeof marker, "\"%s\"", HT_RAW);
    ht_replace(&text, &len, marker, raw, strlen(raw));
    td_record_set_value(c->rec, text, len);
    free(text);
}

/* The order id a hostile saga event talks about: in 0080 one nobody
 * placed (each consumer that knows the orders must refuse it), in 0081
 * carol's approved order (so the consumers' order checks cannot stand in
 * for the field checks under test). */
static void ht_order_for_case(char *out)
{
    if (W.strict)
        memcpy(out, W.approved, TD_UUID_LEN + 1);
    else
        td_uuid_new(out);
}

/* Every field mutation of every type: in 0080 those each consumer refuses
 * today, in 0081 the rest (with the contract's expectation: every consumer
 * that handles the type dead-letters it, naming the field). */
static void ht_build_field_cases(void)
{
    for (size_t ti = 0; ti < TD_ARRAY_SIZE(ht_types); ti++) {
        const ht_type_t *t = &ht_types[ti];
        for (size_t fi = 0; fi < TD_ARRAY_SIZE(t->fields) && t->fields[fi].name; fi++) {
            const ht_field_t *f = &t->fields[fi];
            for (int mi = 0; mi < M_COUNT; mi++) {
                ht_mut_t m = (ht_mut_t)mi;
                if (!ht_applies(f->kind, m)) continue;
                /* A type nobody handles: a few of its mutations suffice. */
                if (!t->cons_cnt && m != M_MISSING && m != M_WRONG && m != M_LONG) continue;
                /* The value is not JSON (jansson refuses \u0000 too). */
                bool envelope = m == M_BIGINT || m == M_NUL;
                bool gap = false;
                for (size_t k = 0; k < t->cons_cnt && !envelope; k++)
                    if (!ht_checks(&t->cons[k], f, m) && !t->cons[k].fallback) gap = true;
                /* In 0081 only the gaps (a fallback would not apply there). */
                if (W.strict) {
                    gap = false;
                    for (size_t k = 0; k < t->cons_cnt && !envelope; k++)
                        if (!ht_checks(&t->cons[k], f, m)) gap = true;
                }
                if (gap != W.strict) continue;

                char order_id[TD_UUID_LEN + 1];
                ht_order_for_case(order_id);
                json_t *data = ht_base(t, order_id);
                const char *raw = ht_mutate(data, f, m);
                ht_case_t *c = ht_case_new(t->topic, t->type, data, NULL, "%s with %s %s", t->type,
                                           f->name, ht_mut_names[m]);
                if (raw) ht_value_raw(c, raw);
                if (envelope) {
                    for (int g = 0; g < ht_groups(t->topic); g++) ht_expect(c, "JSON");
                    continue;
                }
                /* In 0080 the order is unknown, so a consumer that knows
                 * the orders may name either the field or the order (a
                 * consumer now checks every field before it looks the
                 * order up); in 0081 the order exists: only the field. */
                for (size_t k = 0; k < t->cons_cnt; k++) {
                    const ht_consumer_t *cons = &t->cons[k];
                    if (W.strict || !cons->fallback)
                        ht_expect(c, "%s", f->name);
                    else
                        ht_expect(c, "%s|%s", f->name, cons->fallback);
                }
            }
        }
    }
}

/* A well-formed event about an order nobody placed, for the types whose
 * consumers all know the orders. */
static void ht_build_unknown_order_cases(void)
{
    for (size_t ti = 0; ti < TD_ARRAY_SIZE(ht_types); ti++) {
        const ht_type_t *t = &ht_types[ti];
        bool all = t->cons_cnt > 0;
        for (size_t k = 0; k < t->cons_cnt; k++) all &= t->cons[k].fallback != NULL;
        if (!all) continue;
        char order_id[TD_UUID_LEN + 1];
        td_uuid_new(order_id);
        ht_case_t *c = ht_case_new(t->topic, t->type, ht_base(t, order_id), order_id,
                                   "%s for an order nobody placed", t->type);
        for (size_t k = 0; k < t->cons_cnt; k++) ht_expect(c, "%s", order_id);
    }

    /* An order for a product that does not exist, which the orders service
     * never saw: products answers unknown_product as the saga says, and
     * the orders service dead-letters that answer (an order it does not
     * know). The notification to its buyer is the one effect allowed. */
    char order_id[TD_UUID_LEN + 1], ghost[TD_UUID_LEN + 1], now[TD_TIME_LEN + 1];
    td_uuid_new(order_id);
    td_uuid_new(ghost);
    td_time_format(td_now_ms(), now);
    ht_case_t *c =
        ht_case_new("orders", "OrderCreatedEvent",
                    json_pack("{s:s, s:s, s:s, s:i, s:s}", "orderId", order_id, "userId",
                              W.stranger.id, "productId", ghost, "quantity", 1, "createdAt", now),
                    order_id, "OrderCreatedEvent for an unknown product, an order nobody placed");
    memcpy(W.cascade_id, c->ce_id, sizeof W.cascade_id);
    ht_case_t *down = ht_case_new("reservations", "-", json_object(), order_id,
                                  "the unknown_product answer to it (dead-lettered by orders)");
    td_record_free(down->rec);
    down->rec = NULL;
    ht_expect(down, "%s", order_id);
}

/* Broken envelopes and values, for every type (each consumer group of the
 * topic refuses them, whether or not it handles the type). */
static void ht_build_envelope_cases(void)
{
    for (size_t ti = 0; ti < TD_ARRAY_SIZE(ht_types); ti++) {
        const ht_type_t *t = &ht_types[ti];
        int groups = ht_groups(t->topic);
        char order_id[TD_UUID_LEN + 1];
        ht_case_t *c;

#define HT_ENV_CASE(what, pattern)                                                           \
    ht_order_for_case(order_id);                                                             \
    c = ht_case_new(t->topic, t->type, ht_base(t, order_id), NULL, "%s: %s", t->type, what); \
    for (int g = 0; g < groups; g++) ht_expect(c, "%s", pattern)

        /* Bytes that are not UTF-8 inside a string of the value. */
        HT_ENV_CASE("a value that is not UTF-8", "UTF-8");
        {
            const char *first = t->fields[0].name;
            json_t *data = ht_base(t, order_id);
            json_object_set_new(data, first, json_string("x" HT_RAW "y"));
            char *text = td_json_dumps(data);
            size_t len = strlen(text);
            json_decref(data);
            ht_replace(&text, &len, HT_RAW, "\xc3\x28\xff", 3);
            td_record_set_value(c->rec, text, len);
            free(text);
        }

        HT_ENV_CASE("a value that is a JSON array", "JSON object");
        {
            char *inner = td_strndup(c->rec->value, c->rec->value_len);
            char *text = td_asprintf("[%s]", inner);
            td_record_set_value(c->rec, text, strlen(text));
            free(text);
            free(inner);
        }

        HT_ENV_CASE("an empty value", "empty");
        td_record_set_value(c->rec, "", 0);

        HT_ENV_CASE("no headers at all", "ce_specversion");
        for (size_t i = 0; i < c->rec->header_cnt; i++) {
            free(c->rec->headers[i].name);
            free(c->rec->headers[i].value);
        }
        free(c->rec->headers);
        c->rec->headers = NULL;
        c->rec->header_cnt = 0;

        HT_ENV_CASE("a bad traceparent", "traceparent");
        ht_set_header(c->rec, "traceparent", "00-xyz-01", 9);

        HT_ENV_CASE("ce_specversion 0.3", "ce_specversion");
        ht_set_header(c->rec, "ce_specversion", "0.3", 3);
#undef HT_ENV_CASE
    }
}

/* Envelope faults beyond the common ones, once per topic. */
static void ht_build_topic_cases(void)
{
    static const char *const topics[] = {"users", "products", "orders", "reservations", "payments"};
    static const char *const types[] = {"UserLoggedInEvent", "ProductCreatedEvent",
                                        "OrderCreatedEvent", "ProductReservedEvent",
                                        "PaymentProcessedEvent"};
    for (size_t i = 0; i < TD_ARRAY_SIZE(topics); i++) {
        const char *topic = topics[i], *type = types[i];
        const ht_type_t *t = NULL;
        for (size_t k = 0; k < TD_ARRAY_SIZE(ht_types); k++)
            if (!strcmp(ht_types[k].type, type)) t = &ht_types[k];
        int groups = ht_groups(topic);
        char order_id[TD_UUID_LEN + 1];
        ht_case_t *c;

#define HT_TOPIC_CASE(what, pattern)                                                             \
    ht_order_for_case(order_id);                                                                 \
    c = ht_case_new(topic, type, ht_base(t, order_id), NULL, "%s on %s: %s", type, topic, what); \
    for (int g = 0; g < groups; g++) ht_expect(c, "%s", pattern)

        HT_TOPIC_CASE("a value that is not JSON", "JSON");
        td_record_set_value(c->rec, "{\"orderId\": ", 12);
        HT_TOPIC_CASE("a value that is JSON null", "JSON object");
        td_record_set_value(c->rec, "null", 4);
        HT_TOPIC_CASE("a value with a duplicate key", "JSON");
        {
            char *inner = td_strndup(c->rec->value, c->rec->value_len);
            char *text = td_asprintf("{\"%s\":\"dup\",%s", t->fields[0].name, inner + 1);
            td_record_set_value(c->rec, text, strlen(text));
            free(text);
            free(inner);
        }
        HT_TOPIC_CASE("a ce_subject header that is not UTF-8", "UTF-8");
        ht_set_header(c->rec, "ce_subject", "\xff\xfe", 2);
        HT_TOPIC_CASE("a 300-byte ce_id", "ce_id");
        {
            char id[301];
            memset(id, 'i', 300);
            id[300] = '\0';
            ht_set_header(c->rec, "ce_id", id, 300);
        }
        HT_TOPIC_CASE("no ce_type", "ce_type");
        ht_drop_header(c->rec, "ce_type");
        HT_TOPIC_CASE("an empty ce_id", "ce_id");
        ht_set_header(c->rec, "ce_id", "", 0);
        HT_TOPIC_CASE("a ce_time that is no time", "ce_time");
        ht_set_header(c->rec, "ce_time", "yesterday", 9);
        HT_TOPIC_CASE("content-type text/plain", "content-type");
        ht_set_header(c->rec, "content-type", "text/plain", 10);
#undef HT_TOPIC_CASE

        /* Types nobody handles are skipped, whatever their data. */
        ht_case_new(topic, "HostileUnknownEvent", ht_base(t, "not-an-order"), NULL,
                    "an unknown type on %s", topic);
        ht_case_new(topic, "HostileUnknownEvent",
                    json_pack("{s:s, s:[i]}", "quantity", "lots", "orderId", 7), NULL,
                    "an unknown type with junk data on %s", topic);
    }
}

static bool ht_live_cond(void *arg)
{
    return notifications_service_live(arg);
}

/* Broken NotificationCreatedEvents for the live stream consumer, which
 * skips bad data (it runs in every instance; dead-lettering would copy
 * the record once per instance): no dead letter, no crash. */
static void ht_build_live_cases(void)
{
    if (!ts_wait_until(ht_live_cond, W.notif, HT_WAIT_MS)) fail_msg("live consumer unassigned");
    ht_case_new("notifications", "NotificationCreatedEvent",
                json_pack("{s:s, s:s}", "userId", "not-a-user", "seq", "one"), NULL,
                "NotificationCreatedEvent with junk userId and seq");
    ht_case_new("notifications", "NotificationCreatedEvent",
                json_pack("{s:s, s:i}", "userId", W.victim.id, "seq", -5), NULL,
                "NotificationCreatedEvent with seq -5");
    ht_case_new("notifications", "HostileUnknownEvent", json_object(), NULL,
                "an unknown type on notifications");
}

/* What the contract asks beyond the field checks: an event type on a
 * topic it does not belong to is not acted on (the consumer dead-letters
 * it, once per group that handles the type: products for an
 * OrderCreatedEvent on payments, notifications for a UserLoggedInEvent on
 * orders; the other group skips a type it does not handle), and a record
 * the live consumer cannot parse is in notifications.DLT once (or at
 * least not counted as dead-lettered when it is not). */
static void ht_build_strict_cases(void)
{
    char order_id[TD_UUID_LEN + 1], now[TD_TIME_LEN + 1];
    td_uuid_new(order_id);
    td_time_format(td_now_ms(), now);
    ht_case_t *c =
        ht_case_new("payments", "OrderCreatedEvent",
                    json_pack("{s:s, s:s, s:s, s:i, s:s}", "orderId", order_id, "userId",
                              W.victim.id, "productId", W.pids[0], "quantity", 1, "createdAt", now),
                    order_id, "a valid OrderCreatedEvent on the payments topic");
    ht_expect(c, "belongs on topic");
    c = ht_case_new("orders", "UserLoggedInEvent",
                    json_pack("{s:s, s:s, s:s}", "userId", W.victim.id, "email",
                              "victim@example.com", "loggedInAt", now),
                    NULL, "a valid UserLoggedInEvent on the orders topic");
    ht_expect(c, "belongs on topic");

    if (!ts_wait_until(ht_live_cond, W.notif, HT_WAIT_MS)) fail_msg("live consumer unassigned");
    c = ht_case_new("notifications", "NotificationCreatedEvent", json_object(), NULL,
                    "a record without headers on notifications");
    for (size_t i = 0; i < c->rec->header_cnt; i++) {
        free(c->rec->headers[i].name);
        free(c->rec->headers[i].value);
    }
    free(c->rec->headers);
    c->rec->headers = NULL;
    c->rec->header_cnt = 0;
    ht_expect(c, "ce_specversion");
}

/* ---- the accounting ---------------------------------------------------------- */

static const char *const ht_topics[] = {"users",        "products", "orders",
                                        "reservations", "payments", "notifications"};

/* A label's value in one Prometheus line ("" when absent). */
static void ht_label(const char *line, const char *name, char *out, size_t len)
{
    out[0] = '\0';
    char pat[64];
    snprintf(pat, sizeof pat, "%s=\"", name);
    const char *p = line;
    while ((p = strstr(p, pat))) {
        if (p > line && (p[-1] == '{' || p[-1] == ',')) break;
        p++;
    }
    if (!p) return;
    p += strlen(pat);
    size_t n = 0;
    for (; *p && *p != '"' && n + 1 < len; p++) {
        if (*p == '\\' && p[1]) p++;
        out[n++] = *p;
    }
    out[n] = '\0';
}

/* Sum of tidings_events_consumed_total over the label sets matching topic
 * (full name), type and result; NULL matches any, except that result NULL
 * leaves out "retried". */
static double ht_consumed(const char *topic, const char *type, const char *result)
{
    char *text = td_metrics_render();
    double sum = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "tidings_events_consumed_total{", 30)) continue;
        char v[256];
        ht_label(line, "topic", v, sizeof v);
        if (topic && strcmp(v, topic)) continue;
        ht_label(line, "type", v, sizeof v);
        if (type && strcmp(v, type)) continue;
        ht_label(line, "result", v, sizeof v);
        if (result ? strcmp(v, result) != 0 : strcmp(v, "retried") == 0) continue;
        const char *close = strrchr(line, '}');
        if (close) sum += strtod(close + 1, NULL);
    }
    free(text);
    return sum;
}

/* Whether word occurs in s with no letter or digit right around it. */
static bool ht_has_word(const char *s, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = s; (p = strstr(p, word)); p++) {
        bool left = p == s || !isalnum((unsigned char)p[-1]);
        bool right = !isalnum((unsigned char)p[n]);
        if (left && right) return true;
    }
    return false;
}

/* pattern is "a|b|c": true when reason has any of them as a word. */
static bool ht_reason_matches(const char *reason, const char *pattern)
{
    char *copy = td_strdup(pattern), *save = NULL;
    bool ok = false;
    for (char *alt = strtok_r(copy, "|", &save); alt && !ok; alt = strtok_r(NULL, "|", &save))
        ok = ht_has_word(reason, alt);
    free(copy);
    return ok;
}

static bool ht_hostile_key(const char *topic, const char *key, size_t key_len)
{
    for (size_t i = 0; i < W.case_cnt; i++)
        if (!strcmp(W.cases[i].topic, topic) && key_len == TD_UUID_LEN &&
            !memcmp(W.cases[i].key, key, TD_UUID_LEN))
            return true;
    return false;
}

static bool ht_hostile_id(const char *id)
{
    for (size_t i = 0; i < W.case_cnt; i++)
        if (W.cases[i].rec && !strcmp(W.cases[i].ce_id, id)) return true;
    return false;
}

/* Records of every topic (main or .DLT), read once things are quiet. */
typedef struct ht_snapshot {
    ts_records_t topic[TD_ARRAY_SIZE(ht_topics)];
    ts_records_t dlt[TD_ARRAY_SIZE(ht_topics)];
} ht_snapshot_t;

static void ht_snapshot_free(ht_snapshot_t *s)
{
    for (size_t i = 0; i < TD_ARRAY_SIZE(ht_topics); i++) {
        ts_records_free(&s->topic[i]);
        ts_records_free(&s->dlt[i]);
    }
}

static size_t ht_expected_dlt(const char *topic)
{
    size_t n = 0;
    for (size_t i = 0; i < W.case_cnt; i++)
        if (!strcmp(W.cases[i].topic, topic)) n += W.cases[i].expect_cnt;
    return n;
}

/* Reads every topic until each consumer group has consumed every record
 * of the topics it reads (by the consumed-records metrics) and the dead
 * letters expected are there. */
static void ht_settle(ht_snapshot_t *s)
{
    memset(s, 0, sizeof *s);
    int64_t deadline = td_mono_ms() + HT_WAIT_MS;
    size_t last_total = 0;
    for (;;) {
        ht_snapshot_free(s);
        double want = 0, got = 0;
        size_t total = 0;
        for (size_t i = 0; i < TD_ARRAY_SIZE(ht_topics); i++) {
            char *full = td_topic_name(&W.pcfg, ht_topics[i]);
            s->topic[i] = ts_read_topic(W.brokers, full, 1, 300, 15000);
            /* The live consumer of notifications starts at the end: its
             * count is not a function of the topic. */
            if (strcmp(ht_topics[i], "notifications")) {
                want += (double)s->topic[i].cnt * ht_groups(ht_topics[i]);
                got += ht_consumed(full, NULL, NULL);
            }
            total += s->topic[i].cnt;
            free(full);
        }
        /* Everything consumed, and no reaction still on its way out of an
         * outbox (two reads in a row see the same records). A rebalance
         * on a slow machine redelivers what was not yet stored, and the
         * copy counts again (as a duplicate): more is not a stall. */
        if (got >= want && total == last_total) break;
        last_total = total;
        if (td_mono_ms() > deadline) {
            problem("the consumers took %.0f of %.0f records: something stalls", got, want);
            break;
        }
        td_sleep_ms(200);
    }
    for (size_t i = 0; i < TD_ARRAY_SIZE(ht_topics); i++) {
        char *full = td_topic_name(&W.pcfg, ht_topics[i]);
        char *dlt = td_asprintf("%s.DLT", full);
        /* Dead letters go out through the outbox after the commit that
         * counted them: wait for as many as were counted (and expected),
         * then for quiet. */
        size_t want = ht_expected_dlt(ht_topics[i]);
        double counted = ht_consumed(full, NULL, "dead_lettered");
        if ((double)want > counted) want = (size_t)counted;
        s->dlt[i] = ts_read_topic(W.brokers, dlt, want, 1000, 10000);
        free(dlt);
        free(full);
    }
}

static const td_record_t *ht_find_at(const ts_records_t *rs, int32_t partition, int64_t offset)
{
    for (size_t i = 0; i < rs->cnt; i++)
        if (rs->recs[i]->partition == partition && rs->recs[i]->offset == offset)
            return rs->recs[i];
    return NULL;
}

static bool ht_same_bytes(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || !memcmp(a, b, alen));
}

/* One dead letter of case c: the original key, value and headers, then
 * the four tidings_dlt_* headers pointing back at the original. */
static void ht_check_dead_letter(const ht_case_t *c, const td_record_t *d, const ts_records_t *src,
                                 const char *full_topic)
{
    if (c->rec) {
        if (!ht_same_bytes(d->value, d->value_len, c->rec->value, c->rec->value_len))
            problem("%s: the dead letter's value (%zu bytes: %.60s) is not the original (%zu "
                    "bytes), from %s@%s",
                    c->label, d->value_len, d->value ? (const char *)d->value : "",
                    c->rec->value_len, td_record_header_str(d, "tidings_dlt_original_partition"),
                    td_record_header_str(d, "tidings_dlt_original_offset"));
        if (d->header_cnt != c->rec->header_cnt + 4) {
            problem("%s: the dead letter has %zu headers, not the original %zu + 4", c->label,
                    d->header_cnt, c->rec->header_cnt);
        } else {
            for (size_t h = 0; h < c->rec->header_cnt; h++) {
                const td_header_t *a = &c->rec->headers[h], *b = &d->headers[h];
                if (strcmp(a->name, b->name) || !ht_same_bytes(a->value, a->len, b->value, b->len))
                    problem("%s: header %zu (%s) of the original is not kept", c->label, h,
                            a->name);
            }
        }
    }
    const char *otopic = td_record_header_str(d, "tidings_dlt_original_topic");
    const char *opart = td_record_header_str(d, "tidings_dlt_original_partition");
    const char *ooff = td_record_header_str(d, "tidings_dlt_original_offset");
    if (!otopic || strcmp(otopic, full_topic))
        problem("%s: tidings_dlt_original_topic is %s", c->label, otopic ? otopic : "(none)");
    if (!opart || !ooff) {
        problem("%s: no original partition/offset headers", c->label);
        return;
    }
    const td_record_t *orig = ht_find_at(src, (int32_t)atoi(opart), atoll(ooff));
    if (!orig || !ht_same_bytes(orig->key, orig->key_len, c->key, TD_UUID_LEN))
        problem("%s: %s/%s@%s is not the original record", c->label, full_topic, opart, ooff);
}

/* Each case is in its topic's .DLT exactly as often as expected, each
 * copy with a reason matching a distinct expected pattern; nothing else
 * is dead-lettered; the metrics count every dead letter. */
static void ht_check_dead_letters(const ht_snapshot_t *s)
{
    for (size_t ti = 0; ti < TD_ARRAY_SIZE(ht_topics); ti++) {
        const char *topic = ht_topics[ti];
        const ts_records_t *dl = &s->dlt[ti];
        char *full = td_topic_name(&W.pcfg, topic);
        for (size_t i = 0; i < W.case_cnt; i++) {
            const ht_case_t *c = &W.cases[i];
            if (strcmp(c->topic, topic)) continue;
            bool used[HT_MAX_EXPECT] = {false};
            size_t got = 0;
            char reasons[1024] = "";
            for (size_t k = 0; k < dl->cnt; k++) {
                const td_record_t *d = dl->recs[k];
                if (!ht_same_bytes(d->key, d->key_len, c->key, TD_UUID_LEN)) continue;
                got++;
                const char *reason = td_record_header_str(d, "tidings_dlt_reason");
                if (!reason || !*reason) {
                    problem("%s: a dead letter without tidings_dlt_reason", c->label);
                    continue;
                }
                size_t rl = strlen(reasons);
                snprintf(reasons + rl, sizeof reasons - rl, "%s\"%.150s\" (of %s@%s)",
                         rl ? ", " : "", reason,
                         td_record_header_str(d, "tidings_dlt_original_partition"),
                         td_record_header_str(d, "tidings_dlt_original_offset"));
                bool matched = false;
                for (size_t e = 0; e < c->expect_cnt && !matched; e++)
                    if (!used[e] && ht_reason_matches(reason, c->expect[e]))
                        used[e] = matched = true;
                if (!matched)
                    problem("%s: dead-letter reason \"%.200s\" does not name the problem", c->label,
                            reason);
                ht_check_dead_letter(c, d, &s->topic[ti], full);
            }
            if (got != c->expect_cnt) {
                problem("%s: %zu dead letter(s) on %s.DLT, expected %zu%s%s", c->label, got, topic,
                        c->expect_cnt, got ? ": " : "", reasons);
                const ts_records_t *src = &s->topic[ti];
                for (size_t k = 0; k < src->cnt; k++)
                    if (ht_same_bytes(src->recs[k]->key, src->recs[k]->key_len, c->key,
                                      TD_UUID_LEN)) {
                        const td_record_t *r = src->recs[k];
                        char hs[2048] = "";
                        for (size_t h = 0; h < r->header_cnt; h++) {
                            size_t hl = strlen(hs);
                            snprintf(hs + hl, sizeof hs - hl, " %s=%.60s", r->headers[h].name,
                                     r->headers[h].value ? (const char *)r->headers[h].value
                                                         : "(null)");
                        }
                        problem("  %s holds it at %d@%lld ts %lld: value %zu bytes [%.40s]%s",
                                topic, (int)r->partition, (long long)r->offset,
                                (long long)r->timestamp, r->value_len,
                                r->value ? (const char *)r->value : "(null)", hs);
                    }
            }
        }
        /* Nothing but hostile records is dead-lettered. */
        for (size_t k = 0; k < dl->cnt; k++) {
            const td_record_t *d = dl->recs[k];
            if (!d->key || !ht_hostile_key(topic, d->key, d->key_len))
                problem("%s.DLT holds a record that is not one of ours (key %.40s, reason %.200s)",
                        topic, d->key ? (const char *)d->key : "(none)",
                        td_record_header_str(d, "tidings_dlt_reason"));
        }
        double counted = ht_consumed(full, NULL, "dead_lettered");
        if (counted != (double)dl->cnt)
            problem(
                "%s: tidings_events_consumed_total{result=\"dead_lettered\"} is %.0f, but %s.DLT "
                "holds %zu",
                topic, counted, topic, dl->cnt);
        if (ht_consumed(full, "HostileUnknownEvent", "dead_lettered") != 0)
            problem("%s: an unknown event type was dead-lettered", topic);
        free(full);
    }
}

static const struct {
    const char *topic, *type, *field;
    int readers; /* consumer groups that handle the type */
} ht_dups[] = {
    {"orders", "OrderCreatedEvent", "quantity", 2},
    {"reservations", "ProductReservedEvent", "unitPrice", 1},
    {"payments", "PaymentProcessedEvent", "amount", 1},
};
#define HT_DUP_COPIES 3

/* Unknown types were skipped by every group; nothing was retried (a
 * hostile record that fails "transiently" would stall its partition). */
static void ht_check_metrics(void)
{
    for (size_t ti = 0; ti < TD_ARRAY_SIZE(ht_topics); ti++) {
        const char *topic = ht_topics[ti];
        size_t unknown = 0;
        for (size_t i = 0; i < W.case_cnt; i++)
            if (!strcmp(W.cases[i].topic, topic) && W.cases[i].rec) {
                const char *type = td_record_header_str(W.cases[i].rec, "ce_type");
                if (type && !strcmp(type, "HostileUnknownEvent")) unknown++;
            }
        char *full = td_topic_name(&W.pcfg, topic);
        /* Every unhandled type shares one label (bounded cardinality), so
         * the unknown ones are at least part of it, and no per-type series
         * was made for them. */
        double skipped = ht_consumed(full, "(unhandled)", "skipped");
        if (skipped < (double)(unknown * (size_t)ht_groups(topic)))
            problem("%s: unhandled types skipped %.0f times, expected at least %zu", topic, skipped,
                    unknown * (size_t)ht_groups(topic));
        if (ht_consumed(full, "HostileUnknownEvent", NULL) != 0)
            problem("%s: a metrics series was made for an unknown type", topic);
        free(full);
    }
    /* The copies under a valid event's ce_id were duplicates to each
     * reader (a redelivery may add more, never fewer). */
    for (size_t i = 0; !W.strict && i < TD_ARRAY_SIZE(ht_dups); i++) {
        char *full = td_topic_name(&W.pcfg, ht_dups[i].topic);
        double dups = ht_consumed(full, ht_dups[i].type, "duplicate");
        if (dups < HT_DUP_COPIES * ht_dups[i].readers)
            problem("%s: %.0f duplicates counted, expected at least %d", ht_dups[i].type, dups,
                    HT_DUP_COPIES * ht_dups[i].readers);
        free(full);
    }
    double retried = ht_consumed(NULL, NULL, "retried");
    if (retried != 0)
        problem("%.0f records were retried (a hostile record as a transient error?)", retried);
}

/* No service event has a hostile record as its cause, but for the one
 * allowed cascade (an answer and a notification). */
static void ht_check_no_reactions(const ht_snapshot_t *s)
{
    size_t cascade = 0;
    for (size_t ti = 0; ti < TD_ARRAY_SIZE(ht_topics); ti++) {
        const ts_records_t *rs = &s->topic[ti];
        for (size_t i = 0; i < rs->cnt; i++) {
            const char *cause = td_record_header_str(rs->recs[i], "ce_causationid");
            if (!cause || !ht_hostile_id(cause)) continue;
            if (*W.cascade_id && !strcmp(cause, W.cascade_id)) {
                cascade++;
                continue;
            }
            const char *type = td_record_header_str(rs->recs[i], "ce_type");
            const ht_case_t *c = NULL;
            for (size_t k = 0; k < W.case_cnt && !c; k++)
                if (!strcmp(W.cases[k].ce_id, cause)) c = &W.cases[k];
            problem("%s caused a %s on %s", c ? c->label : cause, type ? type : "record",
                    ht_topics[ti]);
        }
    }
    if (*W.cascade_id && cascade != 2)
        problem("the order for an unknown product caused %zu events, expected 2 (its "
                "ProductReservationFailedEvent and the buyer's notification)",
                cascade);
}

/* The record that says what was handled: per (topic, type), the distinct
 * ce_ids the services wrote, times the groups that handle the type. */
static void ht_check_handled(const ht_snapshot_t *s)
{
    for (size_t ti = 0; ti < TD_ARRAY_SIZE(ht_types); ti++) {
        const ht_type_t *t = &ht_types[ti];
        if (!t->cons_cnt) continue;
        size_t topic_i = 0;
        while (strcmp(ht_topics[topic_i], t->topic)) topic_i++;
        const ts_records_t *rs = &s->topic[topic_i];
        char **seen = td_calloc(rs->cnt + 1, sizeof(*seen));
        size_t distinct = 0;
        for (size_t i = 0; i < rs->cnt; i++) {
            const td_record_t *r = rs->recs[i];
            const char *type = td_record_header_str(r, "ce_type");
            const char *id = td_record_header_str(r, "ce_id");
            if (!type || !id || strcmp(type, t->type)) continue;
            if (ht_hostile_key(t->topic, r->key, r->key_len) && strcmp(id, W.cascade_id)) continue;
            /* The answer to the cascade is dead-lettered, not handled. */
            const char *cause = td_record_header_str(r, "ce_causationid");
            if (cause && *W.cascade_id && !strcmp(cause, W.cascade_id)) continue;
            bool dup = false;
            for (size_t k = 0; k < distinct && !dup; k++) dup = !strcmp(seen[k], id);
            if (!dup) seen[distinct++] = (char *)id;
        }
        free(seen);
        char *full = td_topic_name(&W.pcfg, t->topic);
        double handled = ht_consumed(full, t->type, "handled");
        if (handled != (double)(distinct * t->cons_cnt))
            problem("%s: handled %.0f times, but %zu valid events x %zu consumers were written",
                    t->type, handled, distinct, t->cons_cnt);
        free(full);
    }
}

/* The services live and are ready; the web event reader still answers. */
static void ht_check_alive(void)
{
    const char *urls[] = {W.products_url, W.orders_url, W.payments_url, W.notif_url, W.web_url};
    for (size_t i = 0; i < TD_ARRAY_SIZE(urls); i++) {
        long h = ht_status("GET", urls[i], "/healthz", NULL);
        long r = ht_status("GET", urls[i], "/readyz", NULL);
        if (h != 200 || r != 200) problem("%s: /healthz %ld, /readyz %ld", urls[i], h, r);
    }
    ts_resp_t r = ht_call("GET", W.web_url, "/api/events?limit=500", NULL, NULL);
    if (r.status != 200 || !json_is_array(json_object_get(r.json, "events")))
        problem("web: GET /api/events: %ld", r.status);
    ts_resp_free(&r);
    r = ht_call("GET", W.orders_url, "/metrics", NULL, NULL);
    if (r.status != 200 || !strstr(r.body, "result=\"dead_lettered\""))
        problem("GET /metrics shows no dead letters (%ld)", r.status);
    ts_resp_free(&r);
}

typedef struct ht_web_wait {
    size_t want;
    json_int_t last;
} ht_web_wait_t;

static bool ht_web_caught_up(void *arg)
{
    ht_web_wait_t *w = arg;
    ts_resp_t r = ht_call("GET", W.web_url, "/api/events?limit=1", NULL, NULL);
    w->last = r.status == 200 ? json_integer_value(json_object_get(r.json, "last")) : -1;
    ts_resp_free(&r);
    return w->last >= (json_int_t)w->want;
}

/* The web event reader took in every record, hostile ones and dead
 * letters included, and can still list and trace them. */
static void ht_check_web(const ht_snapshot_t *s)
{
    ht_web_wait_t w = {0, 0};
    for (size_t i = 0; i < TD_ARRAY_SIZE(ht_topics); i++) w.want += s->topic[i].cnt + s->dlt[i].cnt;
    if (!ts_wait_until(ht_web_caught_up, &w, HT_WAIT_MS / 4))
        problem("web: the event reader holds %lld events, the topics %zu", (long long)w.last,
                w.want);
    for (size_t i = 0; i < W.case_cnt; i += 37) {
        char path[80];
        snprintf(path, sizeof path, "/api/trace/%s", W.cases[i].key);
        /* Traces show personal data: an admin's (SPEC section 5). */
        long st = ht_status("GET", W.web_url, path, W.admin);
        if (st != 200 && st != 404) problem("web: GET %s: %ld", path, st);
    }
}

/* Every real order is final; stock is what the approved ones took; each
 * buyer has exactly the two notifications of each of their orders; the
 * victim and the watcher have none; no hostile order exists anywhere. */
static void ht_check_state(void)
{
    int64_t taken[HT_PRODUCTS] = {0};
    size_t per_buyer[2] = {0, 0};
    for (size_t i = 0; i < W.order_cnt; i++) {
        ht_order_t *o = &W.placed[i];
        if (o->status != 202) {
            problem("POST /orders %zu: %ld", i, o->status);
            continue;
        }
        if (!ht_order_final(o->id)) {
            problem("order %s never left PENDING", o->id);
            continue;
        }
        char st[32], reason[80];
        ht_order_status(o->id, st, sizeof st, reason, sizeof reason);
        per_buyer[o->buyer]++;
        if (!strcmp(st, "APPROVED")) {
            if (o->product < 0)
                problem("order %s for an unknown product approved", o->id);
            else
                taken[o->product] += o->qty;
        } else if (strcmp(reason, "out_of_stock") && strcmp(reason, "limit_exceeded") &&
                   strcmp(reason, "unknown_product")) {
            problem("order %s rejected for \"%s\"", o->id, reason);
        }
    }
    taken[3] += 1; /* carol's order */
    for (int p = 0; p < HT_PRODUCTS; p++) {
        int64_t now = ht_stock(p);
        if (now != W.stock0[p] - taken[p])
            problem("product %d: stock %lld, expected %lld - %lld approved", p, (long long)now,
                    (long long)W.stock0[p], (long long)taken[p]);
    }
    char st[32];
    ht_order_status(W.approved, st, sizeof st, NULL, 0);
    if (strcmp(st, "APPROVED")) problem("carol's approved order is now %s", st);

    /* Notifications come from the fan-out worker and the consumer; give
     * the buyers' ones time to arrive (their count is what we compare). */
    int64_t deadline = td_mono_ms() + HT_WAIT_MS / 2;
    for (int b = 0; b < 2; b++) {
        size_t want = per_buyer[b] * 2;
        json_t *items = NULL;
        for (;;) {
            json_decref(items);
            items = ht_inbox(&W.buyers[b]);
            if (json_array_size(items) >= want || td_mono_ms() > deadline) break;
            td_sleep_ms(50);
        }
        if (json_array_size(items) != want)
            problem("buyer %d has %zu notifications, expected %zu (2 per order)", b,
                    json_array_size(items), want);
        json_decref(items);
    }
    const ht_user_t *silent[] = {&W.victim, &W.watcher};
    const char *names[] = {"the victim", "the watcher"};
    for (size_t u = 0; u < 2; u++) {
        json_t *items = ht_inbox(silent[u]);
        size_t i;
        json_t *n;
        json_array_foreach(items, i, n)
        {
            const char *title = json_string_value(json_object_get(n, "title"));
            problem("%s got a notification: %s \"%.80s\"", names[u],
                    json_string_value(json_object_get(n, "type")), title ? title : "");
        }
        json_decref(items);
    }

    /* No hostile order id became an order or a payment. */
    for (size_t i = 0; i < W.case_cnt; i++) {
        const ht_case_t *c = &W.cases[i];
        if (!c->rec) continue;
        json_error_t jerr;
        json_t *data = json_loadb(c->rec->value, c->rec->value_len, 0, &jerr);
        const char *oid = json_string_value(json_object_get(data, "orderId"));
        if (oid && td_uuid_valid(oid) && strcmp(oid, W.approved)) {
            char path[80];
            snprintf(path, sizeof path, "/orders/%s", oid);
            if (ht_status("GET", W.orders_url, path, W.admin) != 404)
                problem("%s: the orders service has order %s", c->label, oid);
            snprintf(path, sizeof path, "/payments/%s", oid);
            if (ht_status("GET", W.payments_url, path, W.admin) != 404)
                problem("%s: the payments service has a payment for %s", c->label, oid);
        }
        json_decref(data);
    }
}

/* ---- the scenario -------------------------------------------------------------- */

/* Copies of valid saga events under their own ce_id (one as it was, one
 * with other data, one with a field missing): duplicates, no effect, no
 * dead letter. */

static void ht_produce_duplicates(void)
{
    for (size_t i = 0; i < TD_ARRAY_SIZE(ht_dups); i++) {
        char *full = td_topic_name(&W.pcfg, ht_dups[i].topic);
        ts_records_t rs = ts_read_topic(W.brokers, full, 1, 200, 10000);
        const td_record_t *orig = NULL;
        /* A real one: not one of ours (their keys are ours). */
        for (size_t k = 0; k < rs.cnt && !orig; k++) {
            const td_record_t *r = rs.recs[k];
            const char *type = td_record_header_str(r, "ce_type");
            if (type && !strcmp(type, ht_dups[i].type) && r->key &&
                !ht_hostile_key(ht_dups[i].topic, r->key, r->key_len))
                orig = r;
        }
        if (!orig) fail_msg("no %s on %s to copy", ht_dups[i].type, ht_dups[i].topic);
        for (int v = 0; v < HT_DUP_COPIES; v++) {
            td_record_t *copy = td_record_dup(orig);
            copy->partition = -1;
            copy->offset = -1;
            if (v > 0) {
                json_t *data = json_loadb(orig->value, orig->value_len, 0, NULL);
                assert_non_null(data);
                if (v == 1)
                    json_object_set_new(data, ht_dups[i].field, json_integer(7));
                else
                    json_object_del(data, ht_dups[i].field);
                char *text = td_json_dumps(data);
                td_record_set_value(copy, text, strlen(text));
                free(text);
                json_decref(data);
            }
            assert_int_equal(ts_produce(W.brokers, copy), 0);
            td_record_free(copy);
        }
        ts_records_free(&rs);
        free(full);
    }
}

static void ht_setup_traffic(void)
{
    ht_make_product(0, "10", 50);
    ht_make_product(1, "300", 5);
    ht_make_product(2, "999.99", 3);
    ht_make_product(3, "1", 100);

    /* The watcher watches every product and wants to hear of new ones,
     * from when the notifications service knows them all (so the four
     * real ProductCreatedEvents are behind it). */
    for (int p = 0; p < HT_PRODUCTS; p++) {
        ht_known_wait_t kw = {W.pids[p]};
        if (!ts_wait_until(ht_watch_ok, &kw, HT_WAIT_MS))
            fail_msg("the notifications service never learnt product %d", p);
    }
    ts_resp_t r = ht_call("PUT", W.notif_url, "/preferences", W.watcher.token,
                          "{\"muted\":[],\"newProducts\":true}");
    if (r.status != 200) fail_msg("PUT /preferences: %ld %s", r.status, r.body);
    ts_resp_free(&r);

    /* Carol's order, approved before the attack starts. */
    char *body = td_asprintf("{\"productId\":\"%s\",\"quantity\":1}", W.pids[3]);
    r = ht_call("POST", W.orders_url, "/orders", W.carol.token, body);
    free(body);
    if (r.status != 202) fail_msg("POST /orders: %ld %s", r.status, r.body);
    snprintf(W.approved, sizeof W.approved, "%s",
             json_string_value(json_object_get(r.json, "orderId")));
    ts_resp_free(&r);
    if (!ts_wait_until(ht_order_final, W.approved, HT_WAIT_MS)) fail_msg("carol's order hangs");
    char st[32];
    ht_order_status(W.approved, st, sizeof st, NULL, 0);
    assert_string_equal(st, "APPROVED");
}

/* Produces every case (in a shuffled order, so topics and partitions
 * interleave) while the buyer thread places its orders. */
static void ht_attack(void)
{
    size_t n = W.case_cnt;
    size_t *order = td_calloc(n, sizeof(*order));
    for (size_t i = 0; i < n; i++) order[i] = i;
    unsigned seed = 80;
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)rand_r(&seed) % i;
        size_t tmp = order[i - 1];
        order[i - 1] = order[j];
        order[j] = tmp;
    }
    pthread_t buyer;
    assert_int_equal(pthread_create(&buyer, NULL, ht_buyer_main, NULL), 0);
    for (size_t i = 0; i < n; i++) {
        const ht_case_t *c = &W.cases[order[i]];
        if (c->rec && ts_produce(W.brokers, c->rec) != 0) fail_msg("producing %s", c->label);
    }
    pthread_join(buyer, NULL);
    free(order);
}

void ht_run(void)
{
    ht_setup_traffic();
    ht_build_field_cases();
    if (W.strict) {
        ht_build_strict_cases();
    } else {
        ht_build_envelope_cases();
        ht_build_unknown_order_cases();
        ht_build_topic_cases();
        ht_build_live_cases();
    }
    size_t records = 0;
    for (size_t i = 0; i < W.case_cnt; i++) records += W.cases[i].rec != NULL;
    fprintf(stderr, "hostile: %zu records\n", records);

    ht_attack();
    /* The duplicates need the real events the orders made. */
    if (!ts_wait_until(ht_all_final, NULL, HT_WAIT_MS)) problem("orders still PENDING");
    if (!W.strict) ht_produce_duplicates();

    ht_snapshot_t snap;
    ht_settle(&snap);
    ht_check_alive();
    ht_check_web(&snap);
    ht_check_dead_letters(&snap);
    ht_check_metrics();
    ht_check_no_reactions(&snap);
    ht_check_handled(&snap);
    ht_check_state();
    ht_check_alive();
    ht_snapshot_free(&snap);
    problems_report(W.strict ? "against the contract (0081)" : "with hostile events");
}
