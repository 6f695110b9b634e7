/* The notifications domain on an in-memory database: every row of the rule
 * table (who is notified, the exact title and body), muting, newProducts,
 * watches with price drop / back in stock / deletion, exactly one
 * notification per (cause, user) whatever the redelivery, seq per user
 * without gaps, the NotificationCreatedEvent in the outbox, bad event data,
 * chunked fan-out, and the inbox, preference and watch operations. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "notifications/notifications.h"
#include "tidings/config.h"
#include "tidings/delivery.h"
#include "tidings/json.h"
#include "tidings/record.h"

typedef struct fixture {
    td_config_t cfg;
    td_db_t *db;
    notif_t n;
    int wakes;
    int delivered;
} fixture_t;

static void on_wake(void *arg)
{
    ((fixture_t *)arg)->wakes++;
}

static int on_deliver(void *arg, td_db_t *db, const notif_made_t *m)
{
    (void)db;
    assert_string_equal(td_record_header_str(m->rec, "ce_type"), "NotificationCreatedEvent");
    json_t *n = json_loads(m->json, 0, NULL);
    assert_non_null(n);
    assert_int_equal(json_integer_value(json_object_get(n, "seq")), m->seq);
    /* What channels see is what the notification says. */
    assert_non_null(m->thread);
    assert_string_equal(json_string_value(json_object_get(n, "thread")), m->thread);
    json_t *replaces = json_object_get(n, "replaces");
    if (m->replaces)
        assert_string_equal(json_string_value(replaces), m->replaces);
    else
        assert_true(json_is_null(replaces));
    json_decref(n);
    ((fixture_t *)arg)->delivered++;
    return 0;
}

static int setup(void **state)
{
    fixture_t *f = td_calloc(1, sizeof(*f));
    td_config_defaults(&f->cfg);
    char err[256];
    f->db = td_db_open(":memory:", notif_migrations, notif_migration_cnt, err, sizeof(err));
    assert_non_null(f->db);
    assert_int_equal(td_delivery_init(f->db), 0);
    f->n.db = f->db;
    f->n.cfg = &f->cfg;
    f->n.wake = on_wake;
    f->n.wake_arg = f;
    f->n.deliver = on_deliver;
    f->n.deliver_arg = f;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    td_db_close(f->db);
    td_config_free(&f->cfg);
    free(f);
    return 0;
}

/* Users and products used throughout. */
#define ANN   "11111111-1111-4111-8111-111111111111"
#define BOB   "22222222-2222-4222-8222-222222222222"
#define CAROL "33333333-3333-4333-8333-333333333333"
#define PHONE "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
#define ORDER "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb"

/* Applies ev as the consumer would: one transaction. */
/* As the consumer runs a handler: the event's shape checked against the
 * catalogue first (a bad one never reaches notif_apply), then one unit. */
static int apply(fixture_t *f, const td_event_t *ev, char *err, size_t errlen)
{
    int rc = td_data_check(ev->data, td_event_fields(ev->type), err, errlen);
    if (rc) return rc;
    assert_int_equal(td_db_begin(f->db), 0);
    rc = notif_apply(&f->n, ev, err, errlen);
    if (rc == 0)
        assert_int_equal(td_db_commit(f->db), 0);
    else
        td_db_rollback(f->db);
    return rc;
}

static td_event_t *event(const char *type, const char *key, json_t *data)
{
    return td_event_new("test", type, key, data);
}

static void apply_ok(fixture_t *f, td_event_t *ev)
{
    char err[256] = "";
    int rc = apply(f, ev, err, sizeof(err));
    if (rc) fail_msg("%s: %s", ev->type, err);
    td_event_free(ev);
}

/* Runs the fan-out worker until idle; returns notifications made. */
static size_t drain(fixture_t *f)
{
    size_t total = 0, made;
    int rc;
    while ((rc = notif_fanout_step(&f->n, &made)) > 0) total += made;
    assert_int_equal(rc, 0);
    return total;
}

/* All of user's notifications, oldest first. */
static json_t *all_of(fixture_t *f, const char *user)
{
    json_t *arr;
    assert_int_equal(notif_after(f->db, user, 0, 100000, &arr), 0);
    return arr;
}

static int64_t count_of(fixture_t *f, const char *user)
{
    json_t *arr = all_of(f, user);
    int64_t n = (int64_t)json_array_size(arr);
    json_decref(arr);
    return n;
}

static void assert_only(fixture_t *f, const char *user, const char *title, const char *body)
{
    json_t *arr = all_of(f, user);
    assert_int_equal(json_array_size(arr), 1);
    json_t *n = json_array_get(arr, 0);
    assert_string_equal(json_string_value(json_object_get(n, "title")), title);
    if (body) assert_string_equal(json_string_value(json_object_get(n, "body")), body);
    assert_string_equal(json_string_value(json_object_get(n, "userId")), user);
    json_decref(arr);
}

static int64_t outbox_rows(fixture_t *f)
{
    td_db_lock(f->db);
    sqlite3_stmt *st = td_db_prepare(
        f->db, "SELECT COUNT(*) FROM td_outbox WHERE topic = 'tidings.notifications'");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    td_db_done(st);
    td_db_unlock(f->db);
    return n;
}

static void product_created(fixture_t *f, const char *id, const char *title, int64_t cents,
                            int quantity)
{
    apply_ok(f, event("ProductCreatedEvent", id,
                      json_pack("{s:s, s:s, s:o, s:i}", "productId", id, "title", title, "price",
                                td_json_money(cents), "quantity", quantity)));
}

static void product_updated(fixture_t *f, const char *id, const char *title, int64_t cents,
                            int quantity, int64_t prev_cents, int prev_quantity)
{
    apply_ok(f,
             event("ProductUpdatedEvent", id,
                   json_pack("{s:s, s:s, s:o, s:i, s:o, s:i}", "productId", id, "title", title,
                             "price", td_json_money(cents), "quantity", quantity, "previousPrice",
                             td_json_money(prev_cents), "previousQuantity", prev_quantity)));
}

static void watch(fixture_t *f, const char *user, const char *product)
{
    bool created;
    json_t *out = NULL;
    assert_int_equal(notif_watch_add(f->db, user, product, &created, &out), 0);
    json_decref(out);
}

static void set_prefs(fixture_t *f, const char *user, const char *json)
{
    json_t *body = json_loads(json, 0, NULL), *out = NULL;
    char err[256];
    assert_int_equal(notif_prefs_put(f->db, user, body, &out, err, sizeof(err)), 0);
    json_decref(out);
    json_decref(body);
}

/* ---- one test per row of the table ---- */

static void test_user_registered_welcomes_the_user(void **state)
{
    fixture_t *f = *state;
    td_event_t *ev =
        event("UserRegisteredEvent", ANN,
              json_pack("{s:s, s:s, s:s, s:s}", "userId", ANN, "email", "ann@example.com", "name",
                        "Ann", "registeredAt", "2026-01-01T00:00:00.000Z"));
    char cause[TD_EVENT_ID_MAX + 1];
    snprintf(cause, sizeof(cause), "%s", ev->id);
    apply_ok(f, ev);
    assert_only(f, ANN, "Welcome, Ann", "Your account ann@example.com is ready. Happy shopping!");
    assert_int_equal(count_of(f, BOB), 0);
    assert_int_equal(f->delivered, 1);

    /* The NotificationCreatedEvent: topic notifications, key the user,
     * caused by the event, data the notification. */
    td_db_lock(f->db);
    sqlite3_stmt *st = td_db_prepare(f->db, "SELECT topic, key, value, headers FROM td_outbox");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "tidings.notifications");
    assert_string_equal((const char *)sqlite3_column_text(st, 1), ANN);
    json_t *data = json_loads((const char *)sqlite3_column_text(st, 2), 0, NULL);
    assert_string_equal(json_string_value(json_object_get(data, "title")), "Welcome, Ann");
    assert_int_equal(json_integer_value(json_object_get(data, "seq")), 1);
    assert_string_equal(json_string_value(json_object_get(data, "type")), "UserRegisteredEvent");
    assert_true(json_is_null(json_object_get(data, "readAt")));
    json_decref(data);
    td_record_t *rec = td_record_new("x");
    assert_int_equal(
        td_headers_decode(rec, sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3)), 0);
    assert_string_equal(td_record_header_str(rec, "ce_type"), "NotificationCreatedEvent");
    assert_string_equal(td_record_header_str(rec, "ce_causationid"), cause);
    assert_string_equal(td_record_header_str(rec, "ce_source"), "/tidings/notifications");
    td_record_free(rec);
    td_db_done(st);
    td_db_unlock(f->db);
}

static void test_login_notifies_with_optional_details(void **state)
{
    fixture_t *f = *state;
    apply_ok(f, event("UserLoggedInEvent", ANN,
                      json_pack("{s:s, s:s, s:s}", "userId", ANN, "email", "ann@example.com",
                                "loggedInAt", "2026-01-01T00:00:00.000Z")));
    assert_only(f, ANN, "New sign-in to your account",
                "Someone signed in as ann@example.com. If this was not you, change your "
                "password.");
    apply_ok(f, event("UserLoggedInEvent", BOB,
                      json_pack("{s:s, s:s, s:s, s:s, s:s}", "userId", BOB, "email",
                                "bob@example.com", "loggedInAt", "2026-01-01T00:00:00.000Z", "ip",
                                "10.0.0.7", "userAgent", "curl/8")));
    assert_only(f, BOB, "New sign-in to your account",
                "Someone signed in as bob@example.com from 10.0.0.7 using curl/8. If this was "
                "not you, change your password.");
}

static void test_order_rows_use_the_product_title(void **state)
{
    fixture_t *f = *state;
    product_created(f, PHONE, "iPhone 15", 112900, 10);
    apply_ok(f, event("OrderCreatedEvent", ORDER,
                      json_pack("{s:s, s:s, s:s, s:i, s:s}", "orderId", ORDER, "userId", ANN,
                                "productId", PHONE, "quantity", 2, "createdAt",
                                "2026-01-01T00:00:00.000Z")));
    apply_ok(f,
             event("OrderApprovedEvent", ORDER,
                   json_pack("{s:s, s:s, s:s, s:i, s:o}", "orderId", ORDER, "userId", ANN,
                             "productId", PHONE, "quantity", 2, "total", td_json_money(225800))));
    apply_ok(f, event("OrderRejectedEvent", ORDER,
                      json_pack("{s:s, s:s, s:s, s:i, s:s}", "orderId", ORDER, "userId", ANN,
                                "productId", PHONE, "quantity", 2, "reason", "out_of_stock")));
    json_t *arr = all_of(f, ANN);
    assert_int_equal(json_array_size(arr), 3);
    static const char *const want[][2] = {
        {"Order received", "We received your order of 2 × iPhone 15."},
        {"Order confirmed", "Your order of 2 × iPhone 15 is confirmed: total 2,258.00."},
        {"Order rejected (out_of_stock)",
         "Your order of 2 × iPhone 15 was rejected: there is not enough stock."},
    };
    for (size_t i = 0; i < 3; i++) {
        json_t *n = json_array_get(arr, i);
        assert_string_equal(json_string_value(json_object_get(n, "title")), want[i][0]);
        assert_string_equal(json_string_value(json_object_get(n, "body")), want[i][1]);
        assert_int_equal(json_integer_value(json_object_get(n, "seq")), (json_int_t)i + 1);
        json_t *data = json_object_get(n, "data");
        assert_string_equal(json_string_value(json_object_get(data, "orderId")), ORDER);
        assert_string_equal(json_string_value(json_object_get(data, "productId")), PHONE);
    }
    json_decref(arr);
    /* No one with newProducts on, so the product made none. */
    assert_int_equal(drain(f), 0);
}

static void test_order_of_unknown_product_still_reads_well(void **state)
{
    fixture_t *f = *state;
    apply_ok(f, event("OrderRejectedEvent", ORDER,
                      json_pack("{s:s, s:s, s:s, s:i, s:s}", "orderId", ORDER, "userId", ANN,
                                "productId", PHONE, "quantity", 1, "reason", "limit_exceeded")));
    assert_only(f, ANN, "Order rejected (limit_exceeded)",
                "Your order of 1 × product aaaaaaaa was rejected: the total is above the "
                "payment limit.");
}

static void test_product_created_notifies_opted_in_users_only(void **state)
{
    fixture_t *f = *state;
    set_prefs(f, ANN, "{\"newProducts\":true}");
    set_prefs(f, BOB, "{\"newProducts\":false}");
    set_prefs(f, CAROL, "{\"newProducts\":true, \"muted\":[\"ProductCreatedEvent\"]}");
    f->wakes = 0;
    product_created(f, PHONE, "iPhone 15", 99999, 3);
    assert_int_equal(f->wakes, 1);
    assert_int_equal(notif_fanout_pending(f->db), 1);
    assert_int_equal(drain(f), 1);
    assert_int_equal(notif_fanout_pending(f->db), 0);
    assert_only(f, ANN, "New in the shop: iPhone 15", "iPhone 15 is now available for 999.99.");
    assert_int_equal(count_of(f, BOB), 0);
    assert_int_equal(count_of(f, CAROL), 0);
}

static void test_price_drop_notifies_watchers(void **state)
{
    fixture_t *f = *state;
    product_created(f, PHONE, "iPhone 15", 112900, 5);
    watch(f, ANN, PHONE);
    watch(f, BOB, PHONE);
    product_updated(f, PHONE, "iPhone 15", 99900, 5, 112900, 5);
    assert_int_equal(drain(f), 2);
    assert_only(f, ANN, "Price drop: iPhone 15", "iPhone 15 now costs 999.00 instead of 1,129.00.");
    assert_only(f, BOB, "Price drop: iPhone 15", NULL);
    assert_int_equal(count_of(f, CAROL), 0);

    /* A rise, a stock change from 5 to 4, a title change: nothing. */
    product_updated(f, PHONE, "iPhone 15", 109900, 5, 99900, 5);
    product_updated(f, PHONE, "iPhone 15", 109900, 4, 109900, 5);
    product_updated(f, PHONE, "iPhone 15 Pro", 109900, 4, 109900, 4);
    assert_int_equal(drain(f), 0);
    assert_int_equal(count_of(f, ANN), 1);
}

static void test_back_in_stock_notifies_watchers(void **state)
{
    fixture_t *f = *state;
    product_created(f, PHONE, "iPhone 15", 112900, 0);
    watch(f, ANN, PHONE);
    product_updated(f, PHONE, "iPhone 15", 112900, 7, 112900, 0);
    assert_int_equal(drain(f), 1);
    assert_only(f, ANN, "Back in stock: iPhone 15",
                "iPhone 15 is back in stock: 7 available at 1,129.00.");

    /* Restocked and cheaper at once: one notification, back in stock. */
    product_updated(f, PHONE, "iPhone 15", 112900, 0, 112900, 7);
    product_updated(f, PHONE, "iPhone 15", 100000, 2, 112900, 0);
    assert_int_equal(drain(f), 1);
    json_t *arr = all_of(f, ANN);
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 1), "title")),
                        "Back in stock: iPhone 15");
    json_decref(arr);
}

static void test_deletion_notifies_watchers_and_ends_watches(void **state)
{
    fixture_t *f = *state;
    product_created(f, PHONE, "iPhone 15", 112900, 5);
    watch(f, ANN, PHONE);
    apply_ok(f, event("ProductDeletedEvent", PHONE,
                      json_pack("{s:s, s:s}", "productId", PHONE, "title", "iPhone 15")));
    assert_int_equal(drain(f), 1);
    assert_only(f, ANN, "No longer available: iPhone 15",
                "iPhone 15 has been removed from the shop.");
    json_t *out;
    assert_int_equal(notif_watch_list(f->db, ANN, 0, 50, &out), 0);
    assert_int_equal(json_array_size(json_object_get(out, "watches")), 0);
    json_decref(out);
    /* A deleted product cannot be watched. */
    bool created;
    assert_int_equal(notif_watch_add(f->db, ANN, PHONE, &created, &out), TD_ENOENT);
}

static void test_watchers_who_muted_are_left_out(void **state)
{
    fixture_t *f = *state;
    product_created(f, PHONE, "iPhone 15", 112900, 5);
    watch(f, ANN, PHONE);
    watch(f, BOB, PHONE);
    set_prefs(f, BOB, "{\"muted\":[\"ProductUpdatedEvent\"]}");
    product_updated(f, PHONE, "iPhone 15", 100000, 5, 112900, 5);
    assert_int_equal(drain(f), 1);
    assert_int_equal(count_of(f, ANN), 1);
    assert_int_equal(count_of(f, BOB), 0);
}

/* ---- exactly once, seq, muting ---- */

static void test_redelivery_creates_nothing(void **state)
{
    fixture_t *f = *state;
    td_event_t *ev = event("UserLoggedInEvent", ANN,
                           json_pack("{s:s, s:s, s:s}", "userId", ANN, "email", "a@b.c",
                                     "loggedInAt", "2026-01-01T00:00:00.000Z"));
    char err[256];
    for (int i = 0; i < 3; i++) assert_int_equal(apply(f, ev, err, sizeof(err)), 0);
    assert_int_equal(count_of(f, ANN), 1);
    assert_int_equal(outbox_rows(f), 1);
    td_event_free(ev);

    /* A fan-out event applied twice (two jobs): the second finds them made. */
    product_created(f, PHONE, "iPhone 15", 112900, 5);
    watch(f, ANN, PHONE);
    watch(f, BOB, PHONE);
    ev = event("ProductUpdatedEvent", PHONE,
               json_pack("{s:s, s:s, s:i, s:i, s:i, s:i}", "productId", PHONE, "title", "iPhone 15",
                         "price", 1000, "quantity", 5, "previousPrice", 1129, "previousQuantity",
                         5));
    assert_int_equal(apply(f, ev, err, sizeof(err)), 0);
    assert_int_equal(apply(f, ev, err, sizeof(err)), 0);
    assert_int_equal(notif_fanout_pending(f->db), 4);
    assert_int_equal(drain(f), 2);
    assert_int_equal(count_of(f, ANN), 2);
    assert_int_equal(count_of(f, BOB), 1);
    assert_int_equal(outbox_rows(f), 3);
    td_event_free(ev);
}

static void test_seq_has_no_gaps_and_muted_types_make_nothing(void **state)
{
    fixture_t *f = *state;
    set_prefs(f, ANN, "{\"muted\":[\"UserLoggedInEvent\"]}");
    for (int i = 0; i < 5; i++) {
        apply_ok(f, event("UserLoggedInEvent", ANN,
                          json_pack("{s:s, s:s, s:s}", "userId", ANN, "email", "a@b.c",
                                    "loggedInAt", "2026-01-01T00:00:00.000Z")));
        apply_ok(f, event("OrderCreatedEvent", ORDER,
                          json_pack("{s:s, s:s, s:s, s:i, s:s}", "orderId", ORDER, "userId", ANN,
                                    "productId", PHONE, "quantity", 1, "createdAt",
                                    "2026-01-01T00:00:00.000Z")));
        apply_ok(f, event("OrderCreatedEvent", ORDER,
                          json_pack("{s:s, s:s, s:s, s:i, s:s}", "orderId", ORDER, "userId", BOB,
                                    "productId", PHONE, "quantity", 1, "createdAt",
                                    "2026-01-01T00:00:00.000Z")));
    }
    json_t *arr = all_of(f, ANN);
    assert_int_equal(json_array_size(arr), 5);
    for (size_t i = 0; i < 5; i++) {
        json_t *n = json_array_get(arr, i);
        assert_int_equal(json_integer_value(json_object_get(n, "seq")), (json_int_t)i + 1);
        assert_string_equal(json_string_value(json_object_get(n, "type")), "OrderCreatedEvent");
    }
    json_decref(arr);
    int64_t last;
    assert_int_equal(notif_last_seq(f->db, BOB, &last), 0);
    assert_int_equal(last, 5);
    /* Unmuting brings the type back. */
    set_prefs(f, ANN, "{\"muted\":[]}");
    apply_ok(f, event("UserLoggedInEvent", ANN,
                      json_pack("{s:s, s:s, s:s}", "userId", ANN, "email", "a@b.c", "loggedInAt",
                                "2026-01-01T00:00:00.000Z")));
    assert_int_equal(notif_last_seq(f->db, ANN, &last), 0);
    assert_int_equal(last, 6);
}

static void test_bad_event_data_is_rejected_without_effect(void **state)
{
    fixture_t *f = *state;
    struct {
        const char *type, *json, *reason;
    } bad[] = {
        {"UserRegisteredEvent", "{\"userId\":\"" ANN "\",\"email\":\"a@b.c\"}", "'name'"},
        {"UserLoggedInEvent", "{\"userId\":\"nope\",\"email\":\"a@b.c\"}", "UUID"},
        {"OrderApprovedEvent",
         "{\"orderId\":\"" ORDER "\",\"userId\":\"" ANN "\",\"productId\":\"" PHONE
         "\",\"quantity\":2,\"total\":1.005}",
         "decimals"},
        {"OrderCreatedEvent",
         "{\"orderId\":\"" ORDER "\",\"userId\":\"" ANN "\",\"productId\":\"" PHONE
         "\",\"quantity\":\"2\"}",
         "integer"},
        {"ProductUpdatedEvent",
         "{\"productId\":\"" PHONE "\",\"title\":\"x\",\"price\":1,\"quantity\":1}",
         "previousPrice"},
        {"ProductCreatedEvent",
         "{\"productId\":\"" PHONE "\",\"title\":7,\"price\":1,"
         "\"quantity\":1}",
         "string"},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++) {
        td_event_t *ev = event(bad[i].type, ANN, json_loads(bad[i].json, 0, NULL));
        char err[256] = "";
        assert_int_equal(apply(f, ev, err, sizeof(err)), TD_EINVAL);
        if (!strstr(err, bad[i].reason))
            fail_msg("%s: '%s' lacks %s", bad[i].type, err, bad[i].reason);
        td_event_free(ev);
    }
    assert_int_equal(count_of(f, ANN), 0);
    assert_int_equal(outbox_rows(f), 0);
}

static void test_every_rule_renders(void **state)
{
    (void)state;
    /* Every field a rule may name, so every template must fill. */
    json_t *data = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:i, s:i, s:o, s:o, s:o, s:s, s:s, s:s, s:s, s:s}",
        "userId", ANN, "orderId", ORDER, "productId", PHONE, "email", "a@b.c", "name", "Ann",
        "title", "Lamp", "quantity", 2, "previousQuantity", 0, "price", td_json_money(1999),
        "previousPrice", td_json_money(2999), "total", td_json_money(3998), "reason", "x",
        "reasonText", "because", "product", "Lamp", "loggedInAt", "2026-01-01T00:00:00Z",
        "createdAt", "2026-01-01T00:00:00Z");
    for (size_t i = 0; i < notif_rule_cnt; i++) {
        const notif_rule_t *r = &notif_rules[i];
        char err[256] = "";
        /* Each {field} outside [optional] parts is required by the
         * catalogue, or made by the service ({product}, {reasonText}). */
        for (const char *tpl = r->title; tpl; tpl = tpl == r->title ? r->body : NULL) {
            int depth = 0;
            for (const char *p = tpl; *p; p++) {
                if (*p == '[') depth++;
                if (*p == ']') depth--;
                if (*p != '{' || depth) continue;
                size_t n = strcspn(p + 1, "}");
                char name[64];
                snprintf(name, sizeof(name), "%.*s", (int)n, p + 1);
                bool ok = !strcmp(name, "product") || !strcmp(name, "reasonText");
                for (const td_field_spec_t *fs = td_event_fields(TD_EV_NAME(r->ev));
                     fs && !ok && fs->name; fs++)
                    ok = !strcmp(fs->name, name) && !fs->optional;
                if (!ok)
                    fail_msg("%s: {%s} is not a required field of the type", TD_EV_NAME(r->ev),
                             name);
            }
        }
        char *t = notif_render(r->title, data, err, sizeof(err));
        char *b = notif_render(r->body, data, err, sizeof(err));
        if (!t || !b) fail_msg("%s: %s", TD_EV_NAME(r->ev), err);
        assert_null(strchr(t, '{'));
        assert_null(strchr(b, '{'));
        assert_true(notif_type_known(TD_EV_NAME(r->ev)));
        free(t);
        free(b);
    }
    json_decref(data);
    assert_false(notif_type_known("PaymentProcessedEvent"));
    const char *types[32];
    size_t cnt = notif_handled_types(types, 32);
    assert_int_equal(cnt, 8);
}

static void test_render_template_syntax(void **state)
{
    (void)state;
    json_t *vars =
        json_pack("{s:s, s:i, s:o, s:s}", "a", "A", "n", 3, "price", json_real(19.9), "empty", "");
    char err[128];
    char *s = notif_render("x{a}y[ n={n}][ z={zz}][{empty}!] {price}", vars, err, sizeof(err));
    assert_string_equal(s, "xAy n=3 19.90");
    free(s);
    assert_null(notif_render("{missing}", vars, err, sizeof(err)));
    assert_non_null(strstr(err, "missing"));
    assert_null(notif_render("{a", vars, err, sizeof(err)));
    json_decref(vars);
}

/* One money format in every sentence: grouped units and both decimals,
 * whatever the JSON form of the amount was. */
static void test_money_reads_naturally(void **state)
{
    (void)state;
    static const struct {
        int64_t cents;
        const char *text;
    } cases[] = {
        {0, "0.00"},
        {5, "0.05"},
        {1999, "19.99"},
        {8950, "89.50"},
        {99900, "999.00"},
        {112900, "1,129.00"},
        {225800, "2,258.00"},
        {123456780, "1,234,567.80"},
        {TD_MONEY_MAX_CENTS, "999,999,999,999.00"},
    };
    char buf[32];
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        notif_money_text(cases[i].cents, buf, sizeof(buf));
        assert_string_equal(buf, cases[i].text);
    }
    /* Through a template, an integer price and a real one read alike. */
    json_t *vars = json_pack("{s:o, s:o}", "price", td_json_money(100000), "previousPrice",
                             td_json_money(123450));
    char err[128];
    char *s = notif_render("{price} instead of {previousPrice}", vars, err, sizeof(err));
    assert_string_equal(s, "1,000.00 instead of 1,234.50");
    free(s);
    json_decref(vars);
}

/* ---- fan-out ---- */

static void test_fanout_works_in_bounded_chunks(void **state)
{
    fixture_t *f = *state;
    f->n.fanout_chunk = 100;
    product_created(f, PHONE, "iPhone 15", 112900, 5);
    enum { WATCHERS = 1050 };
    assert_int_equal(td_db_begin(f->db), 0);
    for (int i = 0; i < WATCHERS; i++) {
        char user[TD_UUID_LEN + 1];
        snprintf(user, sizeof(user), "00000000-0000-4000-8000-%012d", i);
        sqlite3_stmt *st = td_db_prepare(
            f->db, "INSERT INTO watches (user_id, product_id, created_at) VALUES (?,?,'x')");
        sqlite3_bind_text(st, 1, user, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, PHONE, -1, SQLITE_STATIC);
        assert_int_equal(td_db_run(f->db, st), 0);
    }
    assert_int_equal(td_db_commit(f->db), 0);

    product_updated(f, PHONE, "iPhone 15", 100000, 5, 112900, 5);
    assert_int_equal(notif_fanout_pending(f->db), WATCHERS);
    size_t made, total = 0;
    int steps = 0, rc;
    while ((rc = notif_fanout_step(&f->n, &made)) > 0) {
        assert_true(made <= 100);
        total += made;
        steps++;
    }
    assert_int_equal(rc, 0);
    assert_int_equal(total, WATCHERS);
    assert_int_equal(steps, 11);
    assert_int_equal(outbox_rows(f), WATCHERS);
    assert_int_equal(count_of(f, "00000000-0000-4000-8000-000000000777"), 1);
    assert_int_equal(notif_fanout_pending(f->db), 0);
}

/* ---- inbox, preferences, watches ---- */

static void test_inbox_pages_reads_and_deletes(void **state)
{
    fixture_t *f = *state;
    for (int i = 0; i < 7; i++)
        apply_ok(f, event("UserLoggedInEvent", ANN,
                          json_pack("{s:s, s:s, s:s}", "userId", ANN, "email", "a@b.c",
                                    "loggedInAt", "2026-01-01T00:00:00.000Z")));
    apply_ok(f, event("UserLoggedInEvent", BOB,
                      json_pack("{s:s, s:s, s:s}", "userId", BOB, "email", "b@b.c", "loggedInAt",
                                "2026-01-01T00:00:00.000Z")));
    json_t *page;
    assert_int_equal(notif_list(f->db, ANN, 0, 3, false, &page), 0);
    json_t *items = json_object_get(page, "notifications");
    assert_int_equal(json_array_size(items), 3);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 0), "seq")), 7);
    assert_int_equal(json_integer_value(json_object_get(page, "unread")), 7);
    assert_string_equal(json_string_value(json_object_get(page, "next")), "5");
    char first_id[64];
    snprintf(first_id, sizeof(first_id), "%s",
             json_string_value(json_object_get(json_array_get(items, 0), "id")));
    json_decref(page);

    assert_int_equal(notif_list(f->db, ANN, 5, 3, false, &page), 0);
    items = json_object_get(page, "notifications");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(items, 0), "seq")), 4);
    json_decref(page);
    assert_int_equal(notif_list(f->db, ANN, 2, 3, false, &page), 0);
    assert_int_equal(json_array_size(json_object_get(page, "notifications")), 1);
    assert_true(json_is_null(json_object_get(page, "next")));
    json_decref(page);

    /* Read one; reading again keeps the first time; Bob cannot. */
    json_t *n;
    assert_int_equal(notif_mark_read(f->db, ANN, first_id, &n), 0);
    assert_true(json_is_string(json_object_get(n, "readAt")));
    json_decref(n);
    assert_int_equal(notif_mark_read(f->db, BOB, first_id, &n), TD_ENOENT);
    assert_int_equal(notif_delete(f->db, BOB, first_id), TD_ENOENT);
    assert_int_equal(notif_list(f->db, ANN, 0, 50, false, &page), 0);
    assert_int_equal(json_integer_value(json_object_get(page, "unread")), 6);
    json_decref(page);

    int64_t cnt;
    assert_int_equal(notif_mark_all_read(f->db, ANN, &cnt), 0);
    assert_int_equal(cnt, 6);
    assert_int_equal(notif_delete(f->db, ANN, first_id), 0);
    assert_int_equal(notif_delete(f->db, ANN, first_id), TD_ENOENT);
    assert_int_equal(notif_list(f->db, ANN, 0, 50, false, &page), 0);
    assert_int_equal(json_array_size(json_object_get(page, "notifications")), 6);
    assert_int_equal(json_integer_value(json_object_get(page, "unread")), 0);
    json_decref(page);
    /* Bob's is untouched and a deleted one is not replayed. */
    assert_int_equal(notif_list(f->db, BOB, 0, 50, false, &page), 0);
    assert_int_equal(json_integer_value(json_object_get(page, "unread")), 1);
    json_decref(page);
    assert_int_equal(count_of(f, ANN), 6);
    int64_t last;
    assert_int_equal(notif_last_seq(f->db, ANN, &last), 0);
    assert_int_equal(last, 7);
}

/* ---- threads ---- */

static const char *str_of(const json_t *o, const char *field)
{
    return json_string_value(json_object_get(o, field));
}

/* The notifications of a page, newest first, by title. */
static void assert_titles(const json_t *page, const char *const *titles, size_t cnt)
{
    const json_t *items = json_object_get(page, "notifications");
    assert_int_equal(json_array_size(items), cnt);
    for (size_t i = 0; i < cnt; i++)
        assert_string_equal(str_of(json_array_get(items, i), "title"), titles[i]);
}

static void test_threads_replace_and_collapse(void **state)
{
    fixture_t *f = *state;
    apply_ok(f, event("UserRegisteredEvent", ANN,
                      json_pack("{s:s, s:s, s:s, s:s}", "userId", ANN, "email", "ann@example.com",
                                "name", "Ann", "registeredAt", "2026-01-01T00:00:00.000Z")));
    product_created(f, PHONE, "iPhone 15", 112900, 10);
    watch(f, ANN, PHONE);
    apply_ok(f, event("OrderCreatedEvent", ORDER,
                      json_pack("{s:s, s:s, s:s, s:i, s:s}", "orderId", ORDER, "userId", ANN,
                                "productId", PHONE, "quantity", 2, "createdAt",
                                "2026-01-01T00:00:00.000Z")));
    apply_ok(f, event("UserLoggedInEvent", ANN,
                      json_pack("{s:s, s:s, s:s}", "userId", ANN, "email", "ann@example.com",
                                "loggedInAt", "2026-01-01T00:00:01.000Z")));
    apply_ok(f,
             event("OrderApprovedEvent", ORDER,
                   json_pack("{s:s, s:s, s:s, s:i, s:o}", "orderId", ORDER, "userId", ANN,
                             "productId", PHONE, "quantity", 2, "total", td_json_money(225800))));
    product_updated(f, PHONE, "iPhone 15", 99900, 10, 112900, 10);
    assert_int_equal(drain(f), 1);

    /* The inbox keeps all five, seq without gaps; each names its thread
     * and the one of the thread it supersedes. */
    json_t *arr = all_of(f, ANN);
    assert_int_equal(json_array_size(arr), 5);
    const json_t *welcome = json_array_get(arr, 0), *received = json_array_get(arr, 1),
                 *signin = json_array_get(arr, 2), *confirmed = json_array_get(arr, 3),
                 *drop = json_array_get(arr, 4);
    assert_string_equal(str_of(welcome, "thread"), "account");
    assert_true(json_is_null(json_object_get(welcome, "replaces")));
    assert_string_equal(str_of(received, "thread"), "order:" ORDER);
    assert_true(json_is_null(json_object_get(received, "replaces")));
    assert_string_equal(str_of(signin, "thread"), "account");
    assert_string_equal(str_of(signin, "replaces"), str_of(welcome, "id"));
    assert_string_equal(str_of(confirmed, "title"), "Order confirmed");
    assert_string_equal(str_of(confirmed, "thread"), "order:" ORDER);
    assert_string_equal(str_of(confirmed, "replaces"), str_of(received, "id"));
    assert_string_equal(str_of(drop, "thread"), "product:" PHONE);
    assert_true(json_is_null(json_object_get(drop, "replaces")));
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(json_integer_value(json_object_get(json_array_get(arr, i), "seq")),
                         (json_int_t)i + 1);
    assert_int_equal(f->delivered, 5);

    /* Collapsed: the latest of each thread, and unread counts those. */
    json_t *page;
    assert_int_equal(notif_list(f->db, ANN, 0, 50, false, &page), 0);
    assert_int_equal(json_integer_value(json_object_get(page, "unread")), 5);
    json_decref(page);
    assert_int_equal(notif_list(f->db, ANN, 0, 50, true, &page), 0);
    static const char *const latest[] = {"Price drop: iPhone 15", "Order confirmed",
                                         "New sign-in to your account"};
    assert_titles(page, latest, 3);
    assert_int_equal(json_integer_value(json_object_get(page, "unread")), 3);
    assert_true(json_is_null(json_object_get(page, "next")));
    json_decref(page);

    /* Pages of the collapsed list go on by seq. */
    assert_int_equal(notif_list(f->db, ANN, 0, 2, true, &page), 0);
    assert_titles(page, latest, 2);
    int64_t next = 0;
    assert_int_equal(td_parse_positive(str_of(page, "next"), INT64_MAX, &next), 0);
    json_decref(page);
    assert_int_equal(notif_list(f->db, ANN, next, 2, true, &page), 0);
    assert_titles(page, latest + 2, 1);
    json_decref(page);

    /* Reading the card the user sees takes it off the collapsed count. */
    json_t *out;
    assert_int_equal(notif_mark_read(f->db, ANN, str_of(confirmed, "id"), &out), 0);
    json_decref(out);
    assert_int_equal(notif_list(f->db, ANN, 0, 50, true, &page), 0);
    assert_int_equal(json_integer_value(json_object_get(page, "unread")), 2);
    json_decref(page);
    assert_int_equal(notif_list(f->db, ANN, 0, 50, false, &page), 0);
    assert_int_equal(json_integer_value(json_object_get(page, "unread")), 4);
    json_decref(page);

    /* Deleting the latest shows the one before it again; a later one of
     * the thread then replaces that one. */
    assert_int_equal(notif_delete(f->db, ANN, str_of(confirmed, "id")), 0);
    assert_int_equal(notif_list(f->db, ANN, 0, 50, true, &page), 0);
    static const char *const after_delete[] = {"Price drop: iPhone 15",
                                               "New sign-in to your account", "Order received"};
    assert_titles(page, after_delete, 3);
    json_decref(page);
    apply_ok(f, event("OrderRejectedEvent", ORDER,
                      json_pack("{s:s, s:s, s:s, s:i, s:s}", "orderId", ORDER, "userId", ANN,
                                "productId", PHONE, "quantity", 2, "reason", "out_of_stock")));
    assert_int_equal(notif_list(f->db, ANN, 0, 1, false, &page), 0);
    const json_t *rejected = json_array_get(json_object_get(page, "notifications"), 0);
    assert_string_equal(str_of(rejected, "replaces"), str_of(received, "id"));
    json_decref(page);

    /* notif_get answers one, with its thread; another user's is not found. */
    assert_int_equal(notif_get(f->db, ANN, str_of(drop, "id"), &out), 0);
    assert_string_equal(str_of(out, "thread"), "product:" PHONE);
    assert_int_equal(json_array_size(json_object_get(out, "deliveries")), 0);
    json_decref(out);
    assert_int_equal(notif_get(f->db, BOB, str_of(drop, "id"), &out), TD_ENOENT);
    json_decref(arr);
}

static void test_thread_of_and_push_hints(void **state)
{
    (void)state;
    char buf[NOTIF_THREAD_LEN + 1];
    json_t *d = json_pack("{s:s, s:s}", "orderId", ORDER, "productId", PHONE);
    assert_string_equal(notif_thread_of(d, buf), "order:" ORDER);
    json_object_del(d, "orderId");
    assert_string_equal(notif_thread_of(d, buf), "product:" PHONE);
    json_object_set_new(d, "productId", json_string("not-a-uuid"));
    assert_string_equal(notif_thread_of(d, buf), "account");
    assert_string_equal(notif_thread_of(NULL, buf), "account");
    json_decref(d);

    const char *urgency;
    int ttl;
    notif_push_hints("UserLoggedInEvent", &urgency, &ttl);
    assert_string_equal(urgency, "high");
    assert_int_equal(ttl, 86400);
    notif_push_hints("OrderCreatedEvent", &urgency, &ttl);
    assert_string_equal(urgency, "normal");
    assert_int_equal(ttl, 3600);
    notif_push_hints("ProductCreatedEvent", &urgency, &ttl);
    assert_string_equal(urgency, "low");
    /* Every rule says both, in RFC 8030's words. */
    for (size_t i = 0; i < notif_rule_cnt; i++) {
        const char *u = notif_rules[i].urgency;
        assert_non_null(u);
        assert_true(!strcmp(u, "very-low") || !strcmp(u, "low") || !strcmp(u, "normal") ||
                    !strcmp(u, "high"));
        assert_true(notif_rules[i].ttl_s > 0);
    }
}

/* A database made before threads gets each old notification's thread
 * from its data when it migrates. */
static void test_migration_threads_old_notifications(void **state)
{
    (void)state;
    char path[] = "/tmp/td_notif_mig_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    char err[256];
    td_db_t *db = td_db_open(path, notif_migrations, 2, err, sizeof(err));
    assert_non_null(db);
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(
        sqlite3_exec(td_db_sqlite(db),
                     "INSERT INTO notifications (id, user_id, seq, type, title, body, data,"
                     " created_at, cause_id) VALUES"
                     " ('a', 'u', 1, 'OrderCreatedEvent', 't', 'b', '{\"orderId\":\"" ORDER
                     "\",\"productId\":\"" PHONE "\"}', 'now', 'c1'),"
                     " ('b', 'u', 2, 'ProductCreatedEvent', 't', 'b', '{\"productId\":\"" PHONE
                     "\"}', 'now', 'c2'),"
                     " ('c', 'u', 3, 'UserLoggedInEvent', 't', 'b', '{}', 'now', 'c3')",
                     NULL, NULL, NULL),
        SQLITE_OK);
    assert_int_equal(td_db_commit(db), 0);
    td_db_close(db);
    db = td_db_open(path, notif_migrations, notif_migration_cnt, err, sizeof(err));
    assert_non_null(db);
    json_t *arr;
    assert_int_equal(notif_after(db, "u", 0, 10, &arr), 0);
    assert_int_equal(json_array_size(arr), 3);
    assert_string_equal(str_of(json_array_get(arr, 0), "thread"), "order:" ORDER);
    assert_string_equal(str_of(json_array_get(arr, 1), "thread"), "product:" PHONE);
    assert_string_equal(str_of(json_array_get(arr, 2), "thread"), "account");
    assert_true(json_is_null(json_object_get(json_array_get(arr, 0), "replaces")));
    /* Migration 7 rebuilt the table: the ids stay, the (cause, user)
     * index is gone (the id, made from both, stands for it). */
    assert_string_equal(str_of(json_array_get(arr, 0), "id"), "a");
    assert_string_equal(str_of(json_array_get(arr, 2), "id"), "c");
    json_decref(arr);
    sqlite3_stmt *st;
    td_db_lock(db);
    assert_int_equal(sqlite3_prepare_v2(td_db_sqlite(db),
                                        "SELECT group_concat(name, ' ') FROM (SELECT name FROM"
                                        " sqlite_master WHERE type = 'index' AND tbl_name ="
                                        " 'notifications' ORDER BY name)",
                                        -1, &st, NULL),
                     SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0),
                        "notifications_thread notifications_unread"
                        " sqlite_autoindex_notifications_1 sqlite_autoindex_notifications_2");
    sqlite3_finalize(st);
    td_db_unlock(db);
    td_db_close(db);
    unlink(path);
    char side[sizeof(path) + 8];
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);
}

static void test_preferences_are_validated(void **state)
{
    fixture_t *f = *state;
    json_t *out;
    assert_int_equal(notif_prefs_get(f->db, ANN, &out), 0);
    char *s = td_json_dumps(out);
    assert_string_equal(s, "{\"muted\":[],\"newProducts\":false,\"channels\":{"
                           "\"push\":{\"enabled\":true,\"muted\":[]},"
                           "\"webhook\":{\"enabled\":true,\"muted\":[]},"
                           "\"email\":{\"enabled\":false,\"muted\":[]}},\"quietHours\":null,"
                           "\"digestMinutes\":0}");
    free(s);
    json_decref(out);

    static const char *const bad[] = {
        "[]",
        "{\"channels\":[]}",
        "{\"channels\":{\"sms\":{\"enabled\":true}}}",
        "{\"channels\":{\"push\":true}}",
        "{\"channels\":{\"push\":{\"enabled\":\"yes\"}}}",
        "{\"channels\":{\"push\":{\"muted\":[\"NoSuchEvent\"]}}}",
        "{\"channels\":{\"push\":{\"muted\":\"UserLoggedInEvent\"}}}",
        "{\"channels\":{\"push\":{\"enabled\":false,\"colour\":1}}}",
        /* a good part and a bad one: nothing of it is saved */
        "{\"newProducts\":true,\"channels\":{\"email\":{\"enabled\":true},\"sms\":{}}}",
        "{\"quietHours\":{\"start\":\"22:00\",\"end\":\"07:00\",\"timeZone\":\"Mars/Base\"}}",
        "{\"quietHours\":{\"start\":\"25:00\",\"end\":\"07:00\",\"timeZone\":\"UTC\"}}",
        "{\"quietHours\":\"22:00-07:00\"}",
        "{\"muted\":[\"NoSuchEvent\"]}",
        "{\"muted\":\"UserLoggedInEvent\"}",
        "{\"muted\":[1]}",
        "{\"newProducts\":1}",
        "{\"colour\":\"red\"}",
        "{\"muted\":[\"PaymentProcessedEvent\"]}",
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++) {
        json_t *body = json_loads(bad[i], 0, NULL);
        char err[256] = "";
        out = NULL;
        assert_int_equal(notif_prefs_put(f->db, ANN, body, &out, err, sizeof(err)), TD_EINVAL);
        assert_true(err[0] != '\0');
        json_decref(body);
    }
    set_prefs(f, ANN,
              "{\"muted\":[\"UserLoggedInEvent\",\"OrderCreatedEvent\","
              "\"UserLoggedInEvent\"],\"newProducts\":true}");
    set_prefs(f, ANN, "{}");
    assert_int_equal(notif_prefs_get(f->db, ANN, &out), 0);
    s = td_json_dumps(out);
    assert_string_equal(
        s, "{\"muted\":[\"OrderCreatedEvent\",\"UserLoggedInEvent\"],\"newProducts\":true,"
           "\"channels\":{\"push\":{\"enabled\":true,\"muted\":[]},"
           "\"webhook\":{\"enabled\":true,\"muted\":[]},"
           "\"email\":{\"enabled\":false,\"muted\":[]}},\"quietHours\":null,\"digestMinutes\":0}");
    free(s);
    json_decref(out);

    /* Channels: each part kept when left out, muted replaced as a whole. */
    set_prefs(f, ANN,
              "{\"channels\":{\"email\":{\"enabled\":true},"
              "\"push\":{\"muted\":[\"ProductCreatedEvent\",\"OrderCreatedEvent\"]}}}");
    set_prefs(f, ANN, "{\"channels\":{\"push\":{\"enabled\":false},\"webhook\":{}}}");
    assert_int_equal(notif_prefs_get(f->db, ANN, &out), 0);
    s = td_json_dumps(json_object_get(out, "channels"));
    assert_string_equal(s, "{\"push\":{\"enabled\":false,\"muted\":[\"OrderCreatedEvent\","
                           "\"ProductCreatedEvent\"]},"
                           "\"webhook\":{\"enabled\":true,\"muted\":[]},"
                           "\"email\":{\"enabled\":true,\"muted\":[]}}");
    free(s);
    json_decref(out);
    td_db_lock(f->db);
    assert_false(notif_channel_wants(f->db, ANN, NOTIF_CHANNEL_PUSH, "UserLoggedInEvent"));
    assert_true(notif_channel_wants(f->db, ANN, NOTIF_CHANNEL_EMAIL, "UserLoggedInEvent"));
    assert_true(notif_channel_wants(f->db, ANN, NOTIF_CHANNEL_WEBHOOK, "OrderCreatedEvent"));
    /* Bob has the defaults. */
    assert_true(notif_channel_wants(f->db, BOB, NOTIF_CHANNEL_PUSH, "UserLoggedInEvent"));
    assert_false(notif_channel_wants(f->db, BOB, NOTIF_CHANNEL_EMAIL, "UserLoggedInEvent"));
    td_db_unlock(f->db);
    /* Quiet hours: kept until replaced or cleared with null. */
    set_prefs(f, ANN,
              "{\"quietHours\":{\"start\":\"22:00\",\"end\":\"07:00\","
              "\"timeZone\":\"Asia/Kathmandu\"}}");
    set_prefs(f, ANN, "{\"newProducts\":false}");
    assert_int_equal(notif_prefs_get(f->db, ANN, &out), 0);
    s = td_json_dumps(json_object_get(out, "quietHours"));
    assert_string_equal(s,
                        "{\"start\":\"22:00\",\"end\":\"07:00\",\"timeZone\":\"Asia/Kathmandu\"}");
    free(s);
    json_decref(out);
    set_prefs(f, ANN, "{\"quietHours\":null,\"digestMinutes\":0}");
    assert_int_equal(notif_prefs_get(f->db, ANN, &out), 0);
    assert_true(json_is_null(json_object_get(out, "quietHours")));
    json_decref(out);
    set_prefs(f, ANN, "{\"channels\":{\"push\":{\"enabled\":true,\"muted\":[]}}}");
    td_db_lock(f->db);
    assert_true(notif_channel_wants(f->db, ANN, NOTIF_CHANNEL_PUSH, "OrderCreatedEvent"));
    td_db_unlock(f->db);
}

static void test_watches(void **state)
{
    fixture_t *f = *state;
    bool created;
    json_t *out;
    /* Not seen yet: watched, with no title until its event arrives. */
    assert_int_equal(notif_watch_add(f->db, BOB, PHONE, &created, &out), 0);
    assert_true(created);
    assert_true(json_is_null(json_object_get(out, "title")));
    json_decref(out);
    product_created(f, PHONE, "iPhone 15", 112900, 5);
    assert_int_equal(notif_watch_add(f->db, ANN, PHONE, &created, &out), 0);
    assert_true(created);
    char *s = td_json_dumps(json_object_get(out, "price"));
    assert_string_equal(s, "1129");
    free(s);
    assert_string_equal(json_string_value(json_object_get(out, "title")), "iPhone 15");
    json_decref(out);
    assert_int_equal(notif_watch_add(f->db, ANN, PHONE, &created, &out), 0);
    assert_false(created);
    json_decref(out);
    assert_int_equal(notif_watch_list(f->db, ANN, 0, 50, &out), 0);
    assert_int_equal(json_array_size(json_object_get(out, "watches")), 1);
    json_decref(out);
    assert_int_equal(notif_watch_list(f->db, BOB, 0, 50, &out), 0);
    assert_int_equal(json_array_size(json_object_get(out, "watches")), 1);
    assert_string_equal(json_string_value(json_object_get(
                            json_array_get(json_object_get(out, "watches"), 0), "title")),
                        "iPhone 15");
    json_decref(out);
    assert_int_equal(notif_watch_remove(f->db, BOB, PHONE), 0);
    assert_int_equal(notif_watch_remove(f->db, BOB, PHONE), TD_ENOENT);
    assert_int_equal(notif_watch_remove(f->db, ANN, PHONE), 0);
    assert_int_equal(notif_watch_remove(f->db, ANN, PHONE), TD_ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_user_registered_welcomes_the_user, setup, teardown),
        cmocka_unit_test_setup_teardown(test_login_notifies_with_optional_details, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_rows_use_the_product_title, setup, teardown),
        cmocka_unit_test_setup_teardown(test_order_of_unknown_product_still_reads_well, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_product_created_notifies_opted_in_users_only, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_price_drop_notifies_watchers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_back_in_stock_notifies_watchers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deletion_notifies_watchers_and_ends_watches, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_watchers_who_muted_are_left_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redelivery_creates_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_seq_has_no_gaps_and_muted_types_make_nothing, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_bad_event_data_is_rejected_without_effect, setup,
                                        teardown),
        cmocka_unit_test(test_every_rule_renders),
        cmocka_unit_test(test_render_template_syntax),
        cmocka_unit_test(test_money_reads_naturally),
        cmocka_unit_test_setup_teardown(test_fanout_works_in_bounded_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbox_pages_reads_and_deletes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_preferences_are_validated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_threads_replace_and_collapse, setup, teardown),
        cmocka_unit_test(test_thread_of_and_push_hints),
        cmocka_unit_test(test_migration_threads_old_notifications),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
