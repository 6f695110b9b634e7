/* The notifications service on the mock cluster, fed with the CloudEvents
 * the users, products and orders services would produce: every row of the
 * rule table reaches the right inbox with the right words, a redelivered
 * event (same ce_id) makes nothing, watches with price drop, back in stock
 * and deletion, newProducts opt-in and muting, the NotificationCreatedEvent
 * of each notification on the notifications topic, and the inbox,
 * preferences and watches APIs with their errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tnotif.h"

static nt_world_t W;

static int world_start(void **state)
{
    (void)state;
    nt_start(&W, "0050-notifications-rules");
    return 0;
}

static int world_stop(void **state)
{
    (void)state;
    nt_stop(&W);
    return 0;
}

typedef struct user {
    char id[TD_UUID_LEN + 1];
    char *token;
} user_t;

static void user_new(user_t *u)
{
    u->id[0] = '\0';
    u->token = nt_token(&W, u->id);
}

/* Titles of the user's inbox, oldest first, joined by "|". */
static char *titles(const user_t *u)
{
    json_t *j = nt_inbox(&W, u->token);
    json_t *items = json_object_get(j, "notifications");
    char *out = td_strdup("");
    for (size_t i = json_array_size(items); i-- > 0;) {
        const char *t = json_string_value(json_object_get(json_array_get(items, i), "title"));
        char *next = td_asprintf("%s%s%s", out, *out ? "|" : "", t);
        free(out);
        out = next;
    }
    json_decref(j);
    return out;
}

static void expect_titles(const user_t *u, size_t want_cnt, const char *want)
{
    if (!nt_wait_inbox(&W, u->token, want_cnt)) fail_msg("inbox never reached %zu", want_cnt);
    char *got = titles(u);
    assert_string_equal(got, want);
    free(got);
}

static json_t *newest(const user_t *u)
{
    json_t *j = nt_inbox(&W, u->token);
    json_t *n = json_incref(json_array_get(json_object_get(j, "notifications"), 0));
    json_decref(j);
    return n;
}

static long http_status(const char *method, const char *path, const char *token, const char *body,
                        json_t **json_out)
{
    char *url = td_asprintf("%s%s", W.url, path);
    ts_resp_t r = ts_http(method, url, token, body, NULL, NULL);
    free(url);
    long status = r.status;
    if (json_out) *json_out = r.json ? json_incref(r.json) : NULL;
    ts_resp_free(&r);
    return status;
}

static void product_event(const char *type, const char *pid, const char *title, int64_t cents,
                          int qty, int64_t prev_cents, int prev_qty, char *id_out)
{
    json_t *data;
    if (!strcmp(type, "ProductCreatedEvent"))
        data = json_pack("{s:s, s:s, s:o, s:i}", "productId", pid, "title", title, "price",
                         td_json_money(cents), "quantity", qty);
    else if (!strcmp(type, "ProductUpdatedEvent"))
        data = json_pack("{s:s, s:s, s:o, s:i, s:o, s:i}", "productId", pid, "title", title,
                         "price", td_json_money(cents), "quantity", qty, "previousPrice",
                         td_json_money(prev_cents), "previousQuantity", prev_qty);
    else
        data = json_pack("{s:s, s:s}", "productId", pid, "title", title);
    nt_produce(&W, "products", type, pid, data, id_out);
}

/* The watcher's watch of pid as GET /watches lists it (NULL when none). */
static json_t *listed_watch(const user_t *watcher, const char *pid)
{
    json_t *w, *found = NULL;
    assert_int_equal(http_status("GET", "/watches", watcher->token, NULL, &w), 200);
    json_t *item;
    size_t i;
    json_array_foreach(json_object_get(w, "watches"), i, item)
    {
        if (!strcmp(json_string_value(json_object_get(item, "productId")), pid))
            found = json_incref(item);
    }
    json_decref(w);
    return found;
}

/* Creates a product, watches it and waits until the service knows it
 * (the watch is listed with its title). */
static void product_known(const char *pid, const char *title, int64_t cents, int qty,
                          const user_t *watcher)
{
    product_event("ProductCreatedEvent", pid, title, cents, qty, 0, 0, NULL);
    char body[128];
    snprintf(body, sizeof(body), "{\"productId\":\"%s\"}", pid);
    long st = http_status("POST", "/watches", watcher->token, body, NULL);
    assert_true(st == 201 || st == 200);
    int64_t deadline = td_mono_ms() + NT_WAIT_MS;
    for (;;) {
        json_t *w = listed_watch(watcher, pid);
        bool known = w && json_is_string(json_object_get(w, "title"));
        json_decref(w);
        if (known) break;
        assert_true(td_mono_ms() < deadline);
        td_sleep_ms(20);
    }
}

static void order_event(const char *type, const user_t *u, const char *order, const char *pid,
                        int qty)
{
    json_t *data = json_pack("{s:s, s:s, s:s, s:i}", "orderId", order, "userId", u->id, "productId",
                             pid, "quantity", qty);
    if (!strcmp(type, "OrderCreatedEvent"))
        json_object_set_new(data, "createdAt", json_string("2026-01-01T00:00:00.000Z"));
    if (!strcmp(type, "OrderApprovedEvent"))
        json_object_set_new(data, "total", td_json_money(qty * 112900));
    if (!strcmp(type, "OrderRejectedEvent"))
        json_object_set_new(data, "reason", json_string("out_of_stock"));
    nt_produce(&W, "orders", type, order, data, NULL);
}

static void test_every_rule_reaches_the_inbox(void **state)
{
    (void)state;
    user_t ann;
    user_new(&ann);
    char pid[TD_UUID_LEN + 1], order[TD_UUID_LEN + 1];
    td_uuid_new(pid);
    td_uuid_new(order);

    nt_produce(&W, "users", "UserRegisteredEvent", ann.id,
               json_pack("{s:s, s:s, s:s, s:s}", "userId", ann.id, "email", "ann@example.com",
                         "name", "Ann", "registeredAt", "2026-01-01T00:00:00.000Z"),
               NULL);
    expect_titles(&ann, 1, "Welcome, Ann");
    nt_login(&W, ann.id);
    expect_titles(&ann, 2, "Welcome, Ann|New sign-in to your account");

    assert_int_equal(http_status("PUT", "/preferences", ann.token, "{\"newProducts\":true}", NULL),
                     200);
    product_known(pid, "iPhone 15", 112900, 5, &ann);
    expect_titles(&ann, 3, "Welcome, Ann|New sign-in to your account|New in the shop: iPhone 15");
    json_t *n = newest(&ann);
    assert_string_equal(json_string_value(json_object_get(n, "body")),
                        "iPhone 15 is now available for 1,129.00.");
    assert_string_equal(json_string_value(json_object_get(json_object_get(n, "data"), "productId")),
                        pid);
    json_decref(n);

    order_event("OrderCreatedEvent", &ann, order, pid, 2);
    expect_titles(&ann, 4,
                  "Welcome, Ann|New sign-in to your account|New in the shop: iPhone 15|"
                  "Order received");
    order_event("OrderApprovedEvent", &ann, order, pid, 2);
    expect_titles(&ann, 5,
                  "Welcome, Ann|New sign-in to your account|New in the shop: iPhone 15|"
                  "Order received|Order confirmed");
    n = newest(&ann);
    assert_string_equal(json_string_value(json_object_get(n, "body")),
                        "Your order of 2 × iPhone 15 is confirmed: total 2,258.00.");
    assert_string_equal(json_string_value(json_object_get(json_object_get(n, "data"), "orderId")),
                        order);
    assert_string_equal(json_string_value(json_object_get(n, "type")), "OrderApprovedEvent");
    assert_int_equal(json_integer_value(json_object_get(n, "seq")), 5);
    assert_true(json_is_null(json_object_get(n, "readAt")));
    json_decref(n);

    order_event("OrderRejectedEvent", &ann, order, pid, 9);
    product_event("ProductUpdatedEvent", pid, "iPhone 15", 99900, 5, 112900, 5, NULL);
    product_event("ProductUpdatedEvent", pid, "iPhone 15", 99900, 0, 99900, 5, NULL); /* none */
    product_event("ProductUpdatedEvent", pid, "iPhone 15", 99900, 3, 99900, 0, NULL);
    product_event("ProductDeletedEvent", pid, "iPhone 15", 0, 0, 0, 0, NULL);
    bool all = nt_wait_inbox(&W, ann.token, 9);
    char *got = titles(&ann);
    if (!all) fail_msg("the last rows never arrived: %s", got);
    /* The orders and products topics are consumed independently: the
     * rejection may land anywhere among the product rows. */
    assert_non_null(strstr(got, "|Order rejected (out_of_stock)"));
    assert_non_null(strstr(got,
                           "Price drop: iPhone 15|Back in stock: iPhone 15|No longer available: "
                           "iPhone 15"));
    free(got);
    /* Each topic's events are handled in order and fan-out jobs run in
     * order, so nothing of these can still be on its way. */
    assert_int_equal(nt_inbox_count(&W, ann.token), 9);

    /* One NotificationCreatedEvent per notification, keyed by the user. */
    char *topic = td_topic_name(&W.cfg, "notifications");
    ts_records_t recs = ts_read_topic(W.brokers, topic, 9, 300, NT_WAIT_MS);
    size_t mine = 0;
    for (size_t i = 0; i < recs.cnt; i++) {
        if (!recs.recs[i]->key || strcmp(recs.recs[i]->key, ann.id) != 0) continue;
        assert_string_equal(td_record_header_str(recs.recs[i], "ce_type"),
                            "NotificationCreatedEvent");
        assert_non_null(td_record_header_str(recs.recs[i], "ce_causationid"));
        mine++;
    }
    assert_int_equal(mine, 9);
    ts_records_free(&recs);
    free(topic);
    free(ann.token);
}

static void test_redelivered_events_make_nothing(void **state)
{
    (void)state;
    user_t bob, carol;
    user_new(&bob);
    user_new(&carol);
    td_event_t *ev =
        td_event_new("users", "UserLoggedInEvent", bob.id,
                     json_pack("{s:s, s:s, s:s}", "userId", bob.id, "email", "bob@example.com",
                               "loggedInAt", "2026-01-01T00:00:00.000Z"));
    nt_produce_event(&W, "users", ev);
    assert_true(nt_wait_inbox(&W, bob.token, 1));
    nt_produce_event(&W, "users", ev); /* the same ce_id again */
    nt_produce_event(&W, "users", ev);
    nt_login(&W, bob.id); /* a new one behind them in the same partition */
    assert_true(nt_wait_inbox(&W, bob.token, 2));
    assert_int_equal(nt_inbox_count(&W, bob.token), 2);
    td_event_free(ev);

    /* A fan-out event delivered twice. */
    char pid[TD_UUID_LEN + 1];
    td_uuid_new(pid);
    product_known(pid, "Lamp", 5000, 5, &carol);
    ev = td_event_new("products", "ProductUpdatedEvent", pid,
                      json_pack("{s:s, s:s, s:i, s:i, s:i, s:i}", "productId", pid, "title", "Lamp",
                                "price", 40, "quantity", 5, "previousPrice", 50, "previousQuantity",
                                5));
    nt_produce_event(&W, "products", ev);
    nt_produce_event(&W, "products", ev);
    product_event("ProductUpdatedEvent", pid, "Lamp", 3000, 5, 4000, 5, NULL);
    expect_titles(&carol, 2, "Price drop: Lamp|Price drop: Lamp");
    json_t *n = newest(&carol);
    assert_string_equal(json_string_value(json_object_get(n, "body")),
                        "Lamp now costs 30.00 instead of 40.00.");
    json_decref(n);
    td_event_free(ev);
    free(bob.token);
    free(carol.token);
}

static void test_new_products_opt_in_and_muting(void **state)
{
    (void)state;
    user_t off, on, muted;
    user_new(&off);
    user_new(&on);
    user_new(&muted);
    assert_int_equal(http_status("PUT", "/preferences", on.token, "{\"newProducts\":true}", NULL),
                     200);
    assert_int_equal(http_status("PUT", "/preferences", muted.token,
                                 "{\"newProducts\":true,\"muted\":[\"ProductCreatedEvent\","
                                 "\"UserLoggedInEvent\"]}",
                                 NULL),
                     200);
    json_t *prefs;
    assert_int_equal(http_status("GET", "/preferences", muted.token, NULL, &prefs), 200);
    char *s = td_json_dumps(json_object_get(prefs, "muted"));
    assert_string_equal(s, "[\"ProductCreatedEvent\",\"UserLoggedInEvent\"]");
    free(s);
    assert_true(json_is_true(json_object_get(prefs, "newProducts")));
    json_decref(prefs);

    char pid[TD_UUID_LEN + 1];
    td_uuid_new(pid);
    product_event("ProductCreatedEvent", pid, "Desk", 25000, 1, 0, 0, NULL);
    expect_titles(&on, 1, "New in the shop: Desk");
    /* The job that reached `on` was the whole audience. */
    assert_int_equal(nt_inbox_count(&W, off.token), 0);
    assert_int_equal(nt_inbox_count(&W, muted.token), 0);
    /* A muted sign-in makes nothing; the registration behind it in the
     * same partition does. */
    nt_login(&W, muted.id);
    nt_produce(&W, "users", "UserRegisteredEvent", muted.id,
               json_pack("{s:s, s:s, s:s, s:s}", "userId", muted.id, "email", "mo@example.com",
                         "name", "Mo", "registeredAt", "2026-01-01T00:00:00.000Z"),
               NULL);
    expect_titles(&muted, 1, "Welcome, Mo");
    free(off.token);
    free(on.token);
    free(muted.token);
}

static void test_inbox_api(void **state)
{
    (void)state;
    user_t dan, eve;
    user_new(&dan);
    user_new(&eve);
    for (int i = 0; i < 5; i++) nt_login(&W, dan.id);
    nt_login(&W, eve.id);
    assert_true(nt_wait_inbox(&W, dan.token, 5));
    assert_true(nt_wait_inbox(&W, eve.token, 1));

    json_t *page;
    assert_int_equal(http_status("GET", "/notifications?limit=2", dan.token, NULL, &page), 200);
    json_t *items = json_object_get(page, "notifications");
    assert_int_equal(json_array_size(items), 2);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 0), "seq")), 5);
    assert_int_equal(json_integer_value(json_object_get(page, "unread")), 5);
    char path[256];
    snprintf(path, sizeof(path), "/notifications?limit=2&after=%s",
             json_string_value(json_object_get(page, "next")));
    char first[64];
    snprintf(first, sizeof(first), "%s",
             json_string_value(json_object_get(json_array_get(items, 0), "id")));
    json_decref(page);
    assert_int_equal(http_status("GET", path, dan.token, NULL, &page), 200);
    assert_int_equal(json_integer_value(json_object_get(
                         json_array_get(json_object_get(page, "notifications"), 0), "seq")),
                     3);
    json_decref(page);

    /* Someone else's id is not found, for every operation. */
    snprintf(path, sizeof(path), "/notifications/%s/read", first);
    assert_int_equal(http_status("POST", path, eve.token, NULL, NULL), 404);
    json_t *n;
    assert_int_equal(http_status("POST", path, dan.token, NULL, &n), 200);
    assert_true(json_is_string(json_object_get(n, "readAt")));
    json_decref(n);
    snprintf(path, sizeof(path), "/notifications/%s", first);
    assert_int_equal(http_status("DELETE", path, eve.token, NULL, NULL), 404);
    assert_int_equal(http_status("DELETE", path, dan.token, NULL, NULL), 204);
    assert_int_equal(http_status("DELETE", path, dan.token, NULL, NULL), 404);
    assert_int_equal(http_status("POST", "/notifications/not-a-uuid/read", dan.token, NULL, NULL),
                     404);
    json_t *res;
    assert_int_equal(http_status("POST", "/notifications/read-all", dan.token, NULL, &res), 200);
    assert_int_equal(json_integer_value(json_object_get(res, "read")), 4);
    json_decref(res);
    assert_int_equal(http_status("GET", "/notifications", dan.token, NULL, &page), 200);
    assert_int_equal(json_integer_value(json_object_get(page, "unread")), 0);
    assert_int_equal(json_array_size(json_object_get(page, "notifications")), 4);
    assert_true(json_is_null(json_object_get(page, "next")));
    json_decref(page);
    assert_int_equal(http_status("GET", "/notifications", eve.token, NULL, &page), 200);
    assert_int_equal(json_integer_value(json_object_get(page, "unread")), 1);
    json_decref(page);

    /* Errors. */
    json_t *err;
    assert_int_equal(http_status("GET", "/notifications", NULL, NULL, &err), 401);
    assert_string_equal(json_string_value(json_object_get(json_object_get(err, "error"), "code")),
                        "unauthenticated");
    json_decref(err);
    assert_int_equal(http_status("GET", "/notifications?limit=0", dan.token, NULL, NULL), 400);
    assert_int_equal(http_status("GET", "/notifications?limit=501", dan.token, NULL, NULL), 400);
    assert_int_equal(http_status("GET", "/notifications?after=x", dan.token, NULL, NULL), 400);
    assert_int_equal(
        http_status("PUT", "/preferences", dan.token, "{\"muted\":[\"NoSuchEvent\"]}", &err), 400);
    assert_non_null(
        strstr(json_string_value(json_object_get(json_object_get(err, "error"), "message")),
               "NoSuchEvent"));
    json_decref(err);
    assert_int_equal(
        http_status("PUT", "/preferences", dan.token, "{\"newProducts\":\"yes\"}", NULL), 400);
    assert_int_equal(http_status("PUT", "/preferences", dan.token, "[]", NULL), 400);
    free(dan.token);
    free(eve.token);
}

static void test_watches_api(void **state)
{
    (void)state;
    user_t fay;
    user_new(&fay);
    char pid[TD_UUID_LEN + 1], body[128], path[128];
    td_uuid_new(pid);
    snprintf(body, sizeof(body), "{\"productId\":\"%s\"}", pid);
    /* Not seen yet (created a moment ago, say): watched, title null. */
    json_t *w;
    assert_int_equal(http_status("POST", "/watches", fay.token, body, &w), 201);
    assert_true(json_is_null(json_object_get(w, "title")));
    assert_true(json_is_null(json_object_get(w, "price")));
    json_decref(w);
    assert_int_equal(http_status("POST", "/watches", fay.token, "{\"productId\":\"x\"}", NULL),
                     400);
    assert_int_equal(http_status("POST", "/watches", fay.token, "{}", NULL), 400);
    assert_int_equal(
        http_status("POST", "/watches", fay.token, "{\"productId\":\"x\",\"extra\":1}", NULL), 400);
    product_known(pid, "Chair", 4999, 2, &fay); /* the title arrives */
    assert_int_equal(http_status("POST", "/watches", fay.token, body, &w), 200);
    assert_string_equal(json_string_value(json_object_get(w, "title")), "Chair");
    char *price = td_json_dumps(json_object_get(w, "price"));
    assert_string_equal(price, "49.99");
    free(price);
    json_decref(w);
    assert_int_equal(http_status("GET", "/watches", fay.token, NULL, &w), 200);
    assert_int_equal(json_array_size(json_object_get(w, "watches")), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(w, "watches"), 0), "productId")),
                        pid);
    json_decref(w);
    snprintf(path, sizeof(path), "/watches/%s", pid);
    assert_int_equal(http_status("DELETE", path, fay.token, NULL, NULL), 204);
    assert_int_equal(http_status("DELETE", path, fay.token, NULL, NULL), 404);
    assert_int_equal(http_status("DELETE", "/watches/zzz", fay.token, NULL, NULL), 404);
    /* Not watching any more: a price drop does not reach her. */
    product_event("ProductUpdatedEvent", pid, "Chair", 3999, 2, 4999, 2, NULL);
    nt_login(&W, fay.id);
    expect_titles(&fay, 1, "New sign-in to your account");
    /* A deleted product can never fire: 404 once the service knows. */
    product_event("ProductDeletedEvent", pid, "Chair", 0, 0, 0, 0, NULL);
    int64_t deadline = td_mono_ms() + NT_WAIT_MS;
    long st;
    while ((st = http_status("POST", "/watches", fay.token, body, NULL)) != 404 &&
           td_mono_ms() < deadline) {
        http_status("DELETE", path, fay.token, NULL, NULL);
        td_sleep_ms(20);
    }
    assert_int_equal(st, 404);
    free(fay.token);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_rule_reaches_the_inbox),
        cmocka_unit_test(test_redelivered_events_make_nothing),
        cmocka_unit_test(test_new_products_opt_in_and_muting),
        cmocka_unit_test(test_inbox_api),
        cmocka_unit_test(test_watches_api),
    };
    return cmocka_run_group_tests(tests, world_start, world_stop);
}
