/* The order saga end to end inside one process: the products, orders and
 * payments services on one embedded broker, talked to over HTTP (tokens
 * minted with the shared secret, no users service needed). An approved
 * order, a rejection for stock, a rejection for payment with the stock
 * returned, the last item ordered by two users at once, an unknown
 * product; each order's events checked on Kafka (key, correlation id =
 * orderId, causation chain, one trace). Last, redelivery: every saga record
 * is produced again with its ce_id, and nothing changes (stock, states, no
 * new event, nothing handled a second time). The tests run in order on one
 * set of services; the last one replays what the others produced. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orders/orders_service.h"
#include "payments/payments_service.h"
#include "products/products_service.h"
#include "tidings/auth.h"
#include "tidings/envelope.h"
#include "tidings/json.h"
#include "tidings/metrics.h"
#include "tsupport.h"

#define LIMIT_CENTS  100000 /* payment limit 1000.00 */
#define WAIT_MS      30000
#define MAX_PRODUCTS 32

typedef struct world {
    char *dir;
    td_config_t bcfg, pcfg, ocfg, paycfg;
    td_broker_t *broker;
    const char *brokers;
    products_service_t *products;
    orders_service_t *orders;
    payments_service_t *payments;
    char products_url[64], orders_url[64], payments_url[64];
    char *admin;
    char *alice, *bob;
    char alice_id[TD_UUID_LEN + 1], bob_id[TD_UUID_LEN + 1];
    /* every product made, for the redelivery check */
    char product_ids[MAX_PRODUCTS][TD_UUID_LEN + 1];
    size_t product_cnt;
    /* every order placed */
    char order_ids[64][TD_UUID_LEN + 1];
    size_t order_cnt;
} world_t;

static world_t W;

static char *mint(const char *role, char *sub_out)
{
    td_claims_t c;
    memset(&c, 0, sizeof c);
    td_uuid_new(c.sub);
    snprintf(c.role, sizeof c.role, "%s", role);
    c.iat = td_now_ms() / 1000;
    c.exp = c.iat + 3600;
    if (sub_out) memcpy(sub_out, c.sub, sizeof c.sub);
    return td_jwt_sign(W.pcfg.secret, W.pcfg.secret_len, &c);
}

static void service_cfg(td_config_t *cfg, const char *name, td_service_t svc)
{
    ts_config(cfg, name, W.dir, W.brokers);
    cfg->ports[svc] = 0;
}

static int world_start(void **state)
{
    (void)state;
    char err[512] = "";
    memset(&W, 0, sizeof W);
    W.dir = ts_tmpdir("0030-saga-flow");
    ts_config(&W.bcfg, "broker", W.dir, NULL);
    W.broker = ts_broker(&W.bcfg);
    assert_non_null(W.broker);
    W.brokers = td_broker_bootstraps(W.broker);

    service_cfg(&W.pcfg, "products", TD_SVC_PRODUCTS);
    service_cfg(&W.ocfg, "orders", TD_SVC_ORDERS);
    service_cfg(&W.paycfg, "payments", TD_SVC_PAYMENTS);
    W.paycfg.payment_limit = LIMIT_CENTS;

    W.products = products_service_start(&W.pcfg, err, sizeof err);
    if (!W.products) fail_msg("products: %s", err);
    W.orders = orders_service_start(&W.ocfg, err, sizeof err);
    if (!W.orders) fail_msg("orders: %s", err);
    W.payments = payments_service_start(&W.paycfg, err, sizeof err);
    if (!W.payments) fail_msg("payments: %s", err);
    snprintf(W.products_url, sizeof W.products_url, "http://127.0.0.1:%d",
             td_app_service_port(W.products));
    snprintf(W.orders_url, sizeof W.orders_url, "http://127.0.0.1:%d",
             td_app_service_port(W.orders));
    snprintf(W.payments_url, sizeof W.payments_url, "http://127.0.0.1:%d",
             td_app_service_port(W.payments));
    W.admin = mint("admin", NULL);
    W.alice = mint("customer", W.alice_id);
    W.bob = mint("customer", W.bob_id);
    return 0;
}

static int world_stop(void **state)
{
    (void)state;
    td_app_service_stop(W.payments);
    td_app_service_stop(W.orders);
    td_app_service_stop(W.products);
    td_broker_stop(W.broker);
    td_config_free(&W.pcfg);
    td_config_free(&W.ocfg);
    td_config_free(&W.paycfg);
    td_config_free(&W.bcfg);
    free(W.admin);
    free(W.alice);
    free(W.bob);
    free(W.dir);
    return 0;
}

/* ---- HTTP helpers -------------------------------------------------------- */

static ts_resp_t call(const char *method, const char *base, const char *path, const char *token,
                      const char *body)
{
    char *url = td_asprintf("%s%s", base, path);
    ts_resp_t r = ts_http(method, url, token, body, NULL, NULL);
    free(url);
    return r;
}

/* A product made through the products API; its id into id. */
static void make_product(const char *price, int qty, char *id)
{
    char *body = td_asprintf("{\"title\":\"Saga lamp %zu\",\"price\":%s,\"quantity\":%d}",
                             W.product_cnt, price, qty);
    ts_resp_t r = call("POST", W.products_url, "/products", W.admin, body);
    free(body);
    if (r.status != 201) fail_msg("POST /products: %ld %s", r.status, r.body);
    const char *pid = json_string_value(json_object_get(r.json, "productId"));
    assert_non_null(pid);
    snprintf(id, TD_UUID_LEN + 1, "%s", pid);
    assert_true(W.product_cnt < MAX_PRODUCTS);
    memcpy(W.product_ids[W.product_cnt++], id, TD_UUID_LEN + 1);
    ts_resp_free(&r);
}

static int64_t stock_of(const char *product_id)
{
    char path[80];
    snprintf(path, sizeof path, "/products/%s", product_id);
    ts_resp_t r = call("GET", W.products_url, path, NULL, NULL);
    if (r.status != 200) fail_msg("GET %s: %ld %s", path, r.status, r.body);
    json_t *q = json_object_get(r.json, "quantity");
    assert_true(json_is_integer(q));
    int64_t v = json_integer_value(q);
    ts_resp_free(&r);
    return v;
}

/* POST /orders; the order id into id. */
static void place(const char *token, const char *product_id, int qty, char *id)
{
    char *body = td_asprintf("{\"productId\":\"%s\",\"quantity\":%d}", product_id, qty);
    ts_resp_t r = call("POST", W.orders_url, "/orders", token, body);
    free(body);
    if (r.status != 202) fail_msg("POST /orders: %ld %s", r.status, r.body);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "PENDING");
    const char *oid = json_string_value(json_object_get(r.json, "orderId"));
    assert_non_null(oid);
    assert_true(td_uuid_valid(oid));
    snprintf(id, TD_UUID_LEN + 1, "%s", oid);
    ts_resp_free(&r);
}

typedef struct final_wait {
    const char *token, *order_id;
    json_t *order;
} final_wait_t;

static bool order_final(void *arg)
{
    final_wait_t *w = arg;
    char path[80];
    snprintf(path, sizeof path, "/orders/%s", w->order_id);
    ts_resp_t r = call("GET", W.orders_url, path, w->token, NULL);
    assert_int_equal(r.status, 200);
    const char *st = json_string_value(json_object_get(r.json, "status"));
    assert_non_null(st);
    bool done = strcmp(st, "PENDING") != 0;
    if (done) w->order = json_incref(r.json);
    ts_resp_free(&r);
    return done;
}

/* Waits for the order to leave PENDING; its JSON (caller decrefs). */
static json_t *wait_final(const char *token, const char *order_id)
{
    final_wait_t w = {token, order_id, NULL};
    if (!ts_wait_until(order_final, &w, WAIT_MS))
        fail_msg("order %s still PENDING after %d ms", order_id, WAIT_MS);
    return w.order;
}

typedef struct stock_wait {
    const char *product_id;
    int64_t want;
} stock_wait_t;

static bool stock_is(void *arg)
{
    stock_wait_t *w = arg;
    return stock_of(w->product_id) == w->want;
}

static char *money_text(const json_t *v)
{
    return v ? td_json_dumps(v) : td_strdup("(none)");
}

/* ---- the events of one order on Kafka ------------------------------------ */

typedef struct chain {
    td_event_t *evs[16];
    char *topics[16];
    size_t cnt;
} chain_t;

static void chain_free(chain_t *c)
{
    for (size_t i = 0; i < c->cnt; i++) {
        td_event_free(c->evs[i]);
        free(c->topics[i]);
    }
    c->cnt = 0;
}

/* The distinct events (by ce_id) of the saga of order_id on the three saga
 * topics, in topic order. */
static void chain_read(const char *order_id, chain_t *c)
{
    static const char *const topics[] = {"orders", "reservations", "payments"};
    memset(c, 0, sizeof *c);
    for (size_t t = 0; t < 3; t++) {
        char *topic = td_topic_name(&W.pcfg, topics[t]);
        ts_records_t rs = ts_read_topic(W.brokers, topic, 1, 200, 10000);
        for (size_t i = 0; i < rs.cnt; i++) {
            char err[256];
            td_event_t *ev = td_event_from_record(rs.recs[i], err, sizeof err);
            if (!ev) fail_msg("bad record on %s: %s", topic, err);
            bool dup = false;
            for (size_t j = 0; j < c->cnt; j++) dup |= !strcmp(c->evs[j]->id, ev->id);
            if (strcmp(ev->correlationid, order_id) || dup) {
                td_event_free(ev);
                continue;
            }
            /* The key is the order id on every saga topic. */
            assert_int_equal(rs.recs[i]->key_len, TD_UUID_LEN);
            assert_memory_equal(rs.recs[i]->key, order_id, TD_UUID_LEN);
            assert_true(c->cnt < 16);
            c->topics[c->cnt] = td_strdup(topics[t]);
            c->evs[c->cnt++] = ev;
        }
        ts_records_free(&rs);
        free(topic);
    }
}

static const td_event_t *chain_find(const chain_t *c, const char *type)
{
    const td_event_t *found = NULL;
    for (size_t i = 0; i < c->cnt; i++) {
        if (strcmp(c->evs[i]->type, type)) continue;
        if (found) fail_msg("two %s events for one order", type);
        found = c->evs[i];
    }
    return found;
}

typedef struct step {
    const char *type, *topic, *cause; /* cause NULL: caused by the HTTP request */
} step_t;

typedef struct chain_wait {
    const char *order_id;
    size_t want;
    chain_t chain;
} chain_wait_t;

static bool chain_complete(void *arg)
{
    chain_wait_t *w = arg;
    chain_free(&w->chain);
    chain_read(w->order_id, &w->chain);
    return w->chain.cnt >= w->want;
}

/* Waits for exactly the events of steps for order_id and checks each one:
 * its topic, its key, correlation id = orderId, causation id = the id of
 * the event it reacts to, one trace for the whole saga, orderId in the
 * data. The chain is left in *out (caller frees). */
static void check_chain(const char *order_id, const step_t *steps, size_t n, chain_t *out)
{
    chain_wait_t w;
    memset(&w, 0, sizeof w);
    w.order_id = order_id;
    w.want = n;
    if (!ts_wait_until(chain_complete, &w, WAIT_MS))
        fail_msg("order %s: %zu of %zu events on Kafka", order_id, w.chain.cnt, n);
    chain_t *c = &w.chain;
    assert_int_equal(c->cnt, n); /* nothing more than the saga says */
    const td_event_t *first = chain_find(c, steps[0].type);
    assert_non_null(first);
    for (size_t i = 0; i < n; i++) {
        const td_event_t *ev = chain_find(c, steps[i].type);
        if (!ev) fail_msg("order %s: no %s", order_id, steps[i].type);
        size_t at = 0;
        while (c->evs[at] != ev) at++;
        assert_string_equal(c->topics[at], steps[i].topic);
        assert_string_equal(ev->subject, order_id);
        assert_string_equal(ev->correlationid, order_id);
        assert_string_equal(json_string_value(json_object_get(ev->data, "orderId")), order_id);
        assert_memory_equal(ev->trace.trace_id, first->trace.trace_id, 16);
        if (!steps[i].cause) {
            assert_null(ev->causationid);
        } else {
            const td_event_t *cause = chain_find(c, steps[i].cause);
            assert_non_null(cause);
            assert_non_null(ev->causationid);
            assert_string_equal(ev->causationid, cause->id);
            /* A child span of its cause, never the cause's own span. */
            assert_memory_not_equal(ev->trace.span_id, cause->trace.span_id, 8);
        }
    }
    *out = w.chain;
}

/* ---- the scenarios ------------------------------------------------------- */

static void remember(const char *order_id)
{
    assert_true(W.order_cnt < 64);
    memcpy(W.order_ids[W.order_cnt++], order_id, TD_UUID_LEN + 1);
}

static void test_approved(void **state)
{
    (void)state;
    char pid[TD_UUID_LEN + 1], oid[TD_UUID_LEN + 1];
    make_product("19.99", 10, pid);
    place(W.alice, pid, 3, oid);
    remember(oid);

    json_t *o = wait_final(W.alice, oid);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "APPROVED");
    assert_string_equal(json_string_value(json_object_get(o, "orderId")), oid);
    assert_string_equal(json_string_value(json_object_get(o, "userId")), W.alice_id);
    assert_string_equal(json_string_value(json_object_get(o, "productId")), pid);
    assert_int_equal(json_integer_value(json_object_get(o, "quantity")), 3);
    assert_null(json_object_get(o, "reason"));
    char *total = money_text(json_object_get(o, "total"));
    assert_string_equal(total, "59.97");
    free(total);
    assert_non_null(json_string_value(json_object_get(o, "createdAt")));
    assert_non_null(json_string_value(json_object_get(o, "updatedAt")));
    json_decref(o);
    assert_int_equal(stock_of(pid), 7);

    /* The payment: the owner and an admin see it, nobody else does. */
    char path[80];
    snprintf(path, sizeof path, "/payments/%s", oid);
    ts_resp_t r = call("GET", W.payments_url, path, W.alice, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "PROCESSED");
    assert_string_equal(json_string_value(json_object_get(r.json, "orderId")), oid);
    assert_true(td_uuid_valid(json_string_value(json_object_get(r.json, "paymentId"))));
    char *amount = money_text(json_object_get(r.json, "amount"));
    assert_string_equal(amount, "59.97");
    free(amount);
    ts_resp_free(&r);
    r = call("GET", W.payments_url, path, W.admin, NULL);
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);
    r = call("GET", W.payments_url, path, W.bob, NULL);
    assert_int_equal(r.status, 404);
    assert_string_equal(ts_error_code(&r), "not_found");
    ts_resp_free(&r);
    r = call("GET", W.payments_url, path, NULL, NULL);
    assert_int_equal(r.status, 401);
    ts_resp_free(&r);

    /* The order: same rule. */
    snprintf(path, sizeof path, "/orders/%s", oid);
    r = call("GET", W.orders_url, path, W.bob, NULL);
    assert_int_equal(r.status, 404);
    assert_string_equal(ts_error_code(&r), "not_found");
    ts_resp_free(&r);
    r = call("GET", W.orders_url, path, W.admin, NULL);
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);

    static const step_t steps[] = {
        {"OrderCreatedEvent", "orders", NULL},
        {"ProductReservedEvent", "reservations", "OrderCreatedEvent"},
        {"PaymentProcessedEvent", "payments", "ProductReservedEvent"},
        {"OrderApprovedEvent", "orders", "PaymentProcessedEvent"},
    };
    chain_t c;
    check_chain(oid, steps, TD_ARRAY_SIZE(steps), &c);
    const td_event_t *ev = chain_find(&c, "ProductReservedEvent");
    char *price = money_text(json_object_get(ev->data, "unitPrice"));
    assert_string_equal(price, "19.99");
    free(price);
    assert_string_equal(json_string_value(json_object_get(ev->data, "userId")), W.alice_id);
    ev = chain_find(&c, "OrderApprovedEvent");
    total = money_text(json_object_get(ev->data, "total"));
    assert_string_equal(total, "59.97");
    free(total);
    assert_int_equal(json_integer_value(json_object_get(ev->data, "quantity")), 3);
    chain_free(&c);
}

static void test_rejected_for_stock(void **state)
{
    (void)state;
    char pid[TD_UUID_LEN + 1], oid[TD_UUID_LEN + 1];
    make_product("5", 4, pid);
    place(W.bob, pid, 5, oid);
    remember(oid);
    json_t *o = wait_final(W.bob, oid);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "REJECTED");
    assert_string_equal(json_string_value(json_object_get(o, "reason")), "out_of_stock");
    assert_null(json_object_get(o, "total"));
    json_decref(o);
    assert_int_equal(stock_of(pid), 4);

    static const step_t steps[] = {
        {"OrderCreatedEvent", "orders", NULL},
        {"ProductReservationFailedEvent", "reservations", "OrderCreatedEvent"},
        {"OrderRejectedEvent", "orders", "ProductReservationFailedEvent"},
    };
    chain_t c;
    check_chain(oid, steps, TD_ARRAY_SIZE(steps), &c);
    const td_event_t *ev = chain_find(&c, "OrderRejectedEvent");
    assert_string_equal(json_string_value(json_object_get(ev->data, "reason")), "out_of_stock");
    chain_free(&c);

    /* No payment was ever asked for. */
    char path[80];
    snprintf(path, sizeof path, "/payments/%s", oid);
    ts_resp_t r = call("GET", W.payments_url, path, W.bob, NULL);
    assert_int_equal(r.status, 404);
    ts_resp_free(&r);

    /* Exactly what is left still sells. */
    place(W.bob, pid, 4, oid);
    remember(oid);
    o = wait_final(W.bob, oid);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "APPROVED");
    json_decref(o);
    assert_int_equal(stock_of(pid), 0);
}

static void test_rejected_for_payment(void **state)
{
    (void)state;
    char pid[TD_UUID_LEN + 1], oid[TD_UUID_LEN + 1];
    make_product("90.91", 20, pid);
    place(W.alice, pid, 11, oid); /* 11 x 90.91 = 1000.01: one cent over the limit */
    remember(oid);
    json_t *o = wait_final(W.alice, oid);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "REJECTED");
    assert_string_equal(json_string_value(json_object_get(o, "reason")), "limit_exceeded");
    json_decref(o);
    /* The reserved stock comes back (the products service hears it too). */
    stock_wait_t sw = {pid, 20};
    assert_true(ts_wait_until(stock_is, &sw, WAIT_MS));

    char path[80];
    snprintf(path, sizeof path, "/payments/%s", oid);
    ts_resp_t r = call("GET", W.payments_url, path, W.alice, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "status")), "FAILED");
    char *amount = money_text(json_object_get(r.json, "amount"));
    assert_string_equal(amount, "1000.01");
    free(amount);
    ts_resp_free(&r);

    static const step_t steps[] = {
        {"OrderCreatedEvent", "orders", NULL},
        {"ProductReservedEvent", "reservations", "OrderCreatedEvent"},
        {"PaymentFailedEvent", "payments", "ProductReservedEvent"},
        {"ProductReservationCancelledEvent", "reservations", "PaymentFailedEvent"},
        {"OrderRejectedEvent", "orders", "PaymentFailedEvent"},
    };
    chain_t c;
    check_chain(oid, steps, TD_ARRAY_SIZE(steps), &c);
    const td_event_t *ev = chain_find(&c, "PaymentFailedEvent");
    assert_string_equal(json_string_value(json_object_get(ev->data, "reason")), "limit_exceeded");
    ev = chain_find(&c, "ProductReservationCancelledEvent");
    assert_int_equal(json_integer_value(json_object_get(ev->data, "quantity")), 11);
    assert_string_equal(json_string_value(json_object_get(ev->data, "productId")), pid);
    chain_free(&c);

    /* Exactly at the limit is approved. */
    make_product("1000", 1, pid);
    place(W.alice, pid, 1, oid);
    remember(oid);
    o = wait_final(W.alice, oid);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "APPROVED");
    json_decref(o);
    assert_int_equal(stock_of(pid), 0);
}

typedef struct racer {
    const char *token, *product_id;
    pthread_barrier_t *go;
    char order_id[TD_UUID_LEN + 1];
    long status;
} racer_t;

static void *race(void *arg)
{
    racer_t *r = arg;
    char *body = td_asprintf("{\"productId\":\"%s\",\"quantity\":1}", r->product_id);
    pthread_barrier_wait(r->go);
    ts_resp_t resp = call("POST", W.orders_url, "/orders", r->token, body);
    free(body);
    r->status = resp.status;
    const char *oid = json_string_value(json_object_get(resp.json, "orderId"));
    snprintf(r->order_id, sizeof r->order_id, "%s", oid ? oid : "");
    ts_resp_free(&resp);
    return NULL;
}

static void test_last_item_two_buyers(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        char pid[TD_UUID_LEN + 1];
        make_product("10", 1, pid);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        racer_t rs[2] = {{W.alice, pid, &go, "", 0}, {W.bob, pid, &go, "", 0}};
        pthread_t th[2];
        for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, race, &rs[i]);
        for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
        pthread_barrier_destroy(&go);

        int approved = 0, out_of_stock = 0;
        for (int i = 0; i < 2; i++) {
            assert_int_equal(rs[i].status, 202);
            remember(rs[i].order_id);
            json_t *o = wait_final(rs[i].token, rs[i].order_id);
            const char *st = json_string_value(json_object_get(o, "status"));
            const char *reason = json_string_value(json_object_get(o, "reason"));
            if (!strcmp(st, "APPROVED")) approved++;
            if (reason && !strcmp(reason, "out_of_stock")) out_of_stock++;
            json_decref(o);
        }
        assert_int_equal(approved, 1);
        assert_int_equal(out_of_stock, 1);
        assert_int_equal(stock_of(pid), 0);
    }
}

static void test_unknown_product(void **state)
{
    (void)state;
    char ghost[TD_UUID_LEN + 1], oid[TD_UUID_LEN + 1];
    td_uuid_new(ghost);
    place(W.bob, ghost, 1, oid);
    remember(oid);
    json_t *o = wait_final(W.bob, oid);
    assert_string_equal(json_string_value(json_object_get(o, "status")), "REJECTED");
    assert_string_equal(json_string_value(json_object_get(o, "reason")), "unknown_product");
    json_decref(o);
    static const step_t steps[] = {
        {"OrderCreatedEvent", "orders", NULL},
        {"ProductReservationFailedEvent", "reservations", "OrderCreatedEvent"},
        {"OrderRejectedEvent", "orders", "ProductReservationFailedEvent"},
    };
    chain_t c;
    check_chain(oid, steps, TD_ARRAY_SIZE(steps), &c);
    const td_event_t *ev = chain_find(&c, "ProductReservationFailedEvent");
    assert_string_equal(json_string_value(json_object_get(ev->data, "reason")), "unknown_product");
    chain_free(&c);

    /* A deleted product is unknown too, and keeps its stock. */
    char pid[TD_UUID_LEN + 1], path[80];
    make_product("3", 2, pid);
    snprintf(path, sizeof path, "/products/%s", pid);
    ts_resp_t r = call("DELETE", W.products_url, path, W.admin, NULL);
    assert_int_equal(r.status, 204);
    ts_resp_free(&r);
    place(W.bob, pid, 1, oid);
    remember(oid);
    o = wait_final(W.bob, oid);
    assert_string_equal(json_string_value(json_object_get(o, "reason")), "unknown_product");
    json_decref(o);
    /* Gone from the API, so not part of the redelivery's stock snapshot
     * (it was the last product made). */
    W.product_cnt--;
}

static void test_http_rules(void **state)
{
    (void)state;
    char pid[TD_UUID_LEN + 1];
    td_uuid_new(pid);
    static const char *const bad[] = {
        "{\"productId\":\"not-a-uuid\",\"quantity\":1}",
        "{\"productId\":\"11111111-2222-4333-8444-55555555555A\",\"quantity\":1}",
        "{\"productId\":\"%s\",\"quantity\":0}",
        "{\"productId\":\"%s\",\"quantity\":1000001}",
        "{\"productId\":\"%s\",\"quantity\":1.5}",
        "{\"productId\":\"%s\",\"quantity\":\"2\"}",
        "{\"productId\":\"%s\"}",
        "{\"quantity\":1}",
        "{\"productId\":\"%s\",\"quantity\":1,\"price\":0}",
        "{\"productId\":7,\"quantity\":1}",
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++) {
        char body[256];
        snprintf(body, sizeof body, bad[i], pid);
        ts_resp_t r = call("POST", W.orders_url, "/orders", W.alice, body);
        if (r.status != 400) fail_msg("%s: %ld %s", body, r.status, r.body);
        assert_string_equal(ts_error_code(&r), "invalid_argument");
        ts_resp_free(&r);
    }
    ts_resp_t r = call("POST", W.orders_url, "/orders", NULL, "{}");
    assert_int_equal(r.status, 401);
    ts_resp_free(&r);
    r = call("GET", W.orders_url, "/orders", NULL, NULL);
    assert_int_equal(r.status, 401);
    ts_resp_free(&r);
    r = call("GET", W.orders_url, "/orders/not-a-uuid", W.admin, NULL);
    assert_int_equal(r.status, 404);
    ts_resp_free(&r);
    r = call("GET", W.orders_url, "/orders?limit=0", W.alice, NULL);
    assert_int_equal(r.status, 400);
    ts_resp_free(&r);
    r = call("GET", W.orders_url, "/orders?after=xyz", W.alice, NULL);
    assert_int_equal(r.status, 400);
    ts_resp_free(&r);

    /* Alice's orders, newest first, two per page, and nobody else's. */
    char *seen[64];
    size_t seen_cnt = 0;
    char *path = td_strdup("/orders?limit=2");
    for (;;) {
        r = call("GET", W.orders_url, path, W.alice, NULL);
        assert_int_equal(r.status, 200);
        json_t *arr = json_object_get(r.json, "orders");
        assert_true(json_is_array(arr));
        assert_true(json_array_size(arr) <= 2);
        size_t i;
        json_t *o;
        json_array_foreach(arr, i, o)
        {
            assert_string_equal(json_string_value(json_object_get(o, "userId")), W.alice_id);
            assert_true(seen_cnt < 64);
            seen[seen_cnt++] = td_strdup(json_string_value(json_object_get(o, "orderId")));
        }
        json_t *next = json_object_get(r.json, "next");
        free(path);
        path = NULL;
        if (json_is_null(next)) {
            ts_resp_free(&r);
            break;
        }
        assert_true(json_is_string(next));
        path = td_asprintf("/orders?limit=2&after=%s", json_string_value(next));
        ts_resp_free(&r);
    }
    /* The same orders as placed by alice, in reverse order of placing. */
    size_t k = 0;
    for (size_t i = W.order_cnt; i-- > 0;) {
        char p[80];
        snprintf(p, sizeof p, "/orders/%s", W.order_ids[i]);
        r = call("GET", W.orders_url, p, W.admin, NULL);
        assert_int_equal(r.status, 200);
        bool alices = !strcmp(json_string_value(json_object_get(r.json, "userId")), W.alice_id);
        ts_resp_free(&r);
        if (!alices) continue;
        assert_true(k < seen_cnt);
        assert_string_equal(seen[k], W.order_ids[i]);
        k++;
    }
    assert_int_equal(k, seen_cnt);
    for (size_t i = 0; i < seen_cnt; i++) free(seen[i]);
}

/* ---- redelivery ---------------------------------------------------------- */

/* Sum of tidings_events_consumed_total over every label set whose result
 * is `result` (NULL: every result but "retried"). */
static double consumed(const char *result)
{
    char *text = td_metrics_render();
    double sum = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        if (strncmp(line, "tidings_events_consumed_total{", 30)) continue;
        char *res = strstr(line, "result=\"");
        char *close = strrchr(line, '}');
        if (!res || !close) continue;
        res += 8;
        size_t n = strcspn(res, "\"");
        if (result ? (strlen(result) != n || strncmp(res, result, n))
                   : (n == 7 && !strncmp(res, "retried", 7)))
            continue;
        sum += strtod(close + 1, NULL);
    }
    free(text);
    return sum;
}

/* Records consumed for the first time: a rebalance under load may hand a
 * consumer records again whose offsets it had not committed yet, and the
 * inbox counts those as duplicates. */
static double consumed_once(void)
{
    return consumed(NULL) - consumed("duplicate");
}

typedef struct consumed_wait {
    double want;
    bool first_time; /* count consumed_once, not every consumption */
} consumed_wait_t;

static bool consumed_reached(void *arg)
{
    consumed_wait_t *cw = arg;
    return (cw->first_time ? consumed_once() : consumed(NULL)) >= cw->want;
}

typedef struct snapshot {
    ts_records_t topics[3];
    int64_t stock[MAX_PRODUCTS];
    char *orders[64]; /* each order's JSON as the orders API shows it */
} snapshot_t;

static const char *const saga_topics[] = {"orders", "reservations", "payments"};
/* How many of the three services consume each topic. */
static const int saga_readers[] = {1 /* products */, 2 /* orders, payments */,
                                   2 /* orders, products */};

static void snapshot_take(snapshot_t *s, size_t at_least_per_topic[3])
{
    memset(s, 0, sizeof *s);
    for (size_t t = 0; t < 3; t++) {
        char *topic = td_topic_name(&W.pcfg, saga_topics[t]);
        s->topics[t] = ts_read_topic(W.brokers, topic, at_least_per_topic[t], 500, 20000);
        free(topic);
    }
    for (size_t i = 0; i < W.product_cnt; i++) s->stock[i] = stock_of(W.product_ids[i]);
    for (size_t i = 0; i < W.order_cnt; i++) {
        char path[80];
        snprintf(path, sizeof path, "/orders/%s", W.order_ids[i]);
        ts_resp_t r = call("GET", W.orders_url, path, W.admin, NULL);
        assert_int_equal(r.status, 200);
        s->orders[i] = td_strdup(r.body);
        ts_resp_free(&r);
    }
}

static void snapshot_free(snapshot_t *s)
{
    for (size_t t = 0; t < 3; t++) ts_records_free(&s->topics[t]);
    for (size_t i = 0; i < W.order_cnt; i++) free(s->orders[i]);
}

static void test_redelivery_changes_nothing(void **state)
{
    (void)state;
    /* First let every service finish what the scenarios started: each
     * record on a saga topic is consumed once by each of its readers. */
    size_t none[3] = {1, 1, 1};
    snapshot_t before;
    double expect = 0;
    consumed_wait_t cw;
    /* Twice: the first wait may let late reactions onto the topics. */
    for (int pass = 0; pass < 2; pass++) {
        if (pass) snapshot_free(&before);
        snapshot_take(&before, none);
        expect = 0;
        for (size_t t = 0; t < 3; t++) expect += (double)before.topics[t].cnt * saga_readers[t];
        cw.want = expect;
        cw.first_time = true;
        if (!ts_wait_until(consumed_reached, &cw, WAIT_MS))
            fail_msg("consumed %.0f of %.0f records", consumed_once(), expect);
    }
    assert_true(consumed_once() == expect); /* nothing else in flight */
    double total = consumed(NULL);
    double handled = consumed("handled"), dead = consumed("dead_lettered");
    double dups = consumed("duplicate");

    /* Every saga record again, same ce_id, same key, same everything. */
    size_t replayed = 0;
    for (size_t t = 0; t < 3; t++) {
        for (size_t i = 0; i < before.topics[t].cnt; i++) {
            assert_int_equal(ts_produce(W.brokers, before.topics[t].recs[i]), 0);
            replayed++;
        }
    }
    assert_true(replayed > 20);
    cw.want = total + expect;
    cw.first_time = false;
    if (!ts_wait_until(consumed_reached, &cw, WAIT_MS))
        fail_msg("consumed %.0f of %.0f records after the replay", consumed(NULL), cw.want);

    /* Nothing was handled a second time; the handled ones were caught as
     * duplicates by the inbox. */
    assert_true(consumed("handled") == handled);
    assert_true(consumed("dead_lettered") == dead);
    assert_true(consumed("duplicate") == dups + handled);

    size_t doubled[3];
    for (size_t t = 0; t < 3; t++) doubled[t] = before.topics[t].cnt * 2;
    snapshot_t after;
    snapshot_take(&after, doubled);
    for (size_t t = 0; t < 3; t++) {
        /* The copies and not one event more. */
        if (after.topics[t].cnt != doubled[t])
            fail_msg("%s: %zu records, expected %zu", saga_topics[t], after.topics[t].cnt,
                     doubled[t]);
    }
    for (size_t i = 0; i < W.product_cnt; i++) assert_int_equal(after.stock[i], before.stock[i]);
    for (size_t i = 0; i < W.order_cnt; i++) assert_string_equal(after.orders[i], before.orders[i]);
    snapshot_free(&after);
    snapshot_free(&before);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_approved),
        cmocka_unit_test(test_rejected_for_stock),
        cmocka_unit_test(test_rejected_for_payment),
        cmocka_unit_test(test_last_item_two_buyers),
        cmocka_unit_test(test_unknown_product),
        cmocka_unit_test(test_http_rules),
        cmocka_unit_test(test_redelivery_changes_nothing),
    };
    return cmocka_run_group_tests(tests, world_start, world_stop);
}
