/* The products service's reservation side on an in-memory database with
 * the real schema (products/schema.h): reserving exactly the stock there
 * is, one more than there is, an unknown and a deleted product, the same
 * order twice, and releasing (stock back exactly once, never for a failed
 * reservation, a permanent error for an order never seen), each with the
 * event it announces reacting to its cause. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "products/reserve.h"
#include "products/schema.h"
#include "tidings/bus.h"
#include "tidings/json.h"
#include "tidings/log.h"

#define USER    "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
#define PRODUCT "11111111-2222-4333-8444-555555555555"
#define GONE    "22222222-3333-4444-8555-666666666666"
#define NOWHERE "33333333-4444-4555-8666-777777777777"

static const td_migration_t migrations[] = {
    {1, PRODUCTS_SCHEMA_V1},
    {2, PRODUCTS_SCHEMA_V2},
};

typedef struct fixture {
    td_config_t cfg;
    td_db_t *db;
} fixture_t;

static void add_product(td_db_t *db, const char *id, int64_t price, int64_t qty, int deleted,
                        int seq)
{
    assert_int_equal(td_db_begin(db), 0);
    sqlite3_stmt *st = td_db_prepare(db, "INSERT INTO products (id, title, price_cents, "
                                         "quantity, created_at, updated_at, deleted, seq) "
                                         "VALUES (?, 'Lamp', ?, ?, '2026-01-01T00:00:00.000Z', "
                                         "'2026-01-01T00:00:00.000Z', ?, ?)");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, price);
    sqlite3_bind_int64(st, 3, qty);
    sqlite3_bind_int(st, 4, deleted);
    sqlite3_bind_int(st, 5, seq);
    assert_int_equal(td_db_run(db, st), 0);
    assert_int_equal(td_db_commit(db), 0);
}

static int64_t stock(td_db_t *db, const char *id)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, "SELECT quantity FROM products WHERE id = ?");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t q = sqlite3_column_int64(st, 0);
    td_db_done(st);
    td_db_unlock(db);
    return q;
}

static int setup(void **state)
{
    fixture_t *f = td_calloc(1, sizeof *f);
    char err[256];
    td_config_defaults(&f->cfg);
    td_log_init("test", TD_LOG_WARN, false); /* the domain logs every state change */
    f->db = td_db_open(":memory:", migrations, TD_ARRAY_SIZE(migrations), err, sizeof err);
    assert_non_null(f->db);
    add_product(f->db, PRODUCT, 1999, 5, 0, 1);
    add_product(f->db, GONE, 500, 10, 1, 2);
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

/* The last outbox row as an event (caller frees), and its topic. */
static td_event_t *last_event(td_db_t *db, char *topic, size_t topic_len)
{
    td_event_t *ev = NULL;
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, "SELECT topic, key, value, headers FROM td_outbox "
                                         "ORDER BY id DESC LIMIT 1");
    if (sqlite3_step(st) == SQLITE_ROW) {
        td_record_t *rec = td_record_new((const char *)sqlite3_column_text(st, 0));
        td_record_set_key(rec, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1));
        td_record_set_value(rec, sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2));
        assert_int_equal(
            td_headers_decode(rec, sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3)),
            0);
        char err[256];
        ev = td_event_from_record(rec, err, sizeof err);
        assert_non_null(ev);
        snprintf(topic, topic_len, "%s", rec->topic);
        td_record_free(rec);
    }
    td_db_done(st);
    td_db_unlock(db);
    assert_non_null(ev);
    return ev;
}

static td_event_t *order_created(const char *order_id)
{
    td_event_t *ev = td_event_new("orders", "OrderCreatedEvent", order_id, json_object());
    td_event_set_correlation(ev, order_id);
    return ev;
}

static int reserve(fixture_t *f, const td_event_t *cause, const char *order_id,
                   const char *product_id, int64_t qty, reserve_outcome_t *outcome)
{
    char err[256];
    reserve_request_t req = {order_id, USER, product_id, qty};
    assert_int_equal(td_db_begin(f->db), 0);
    int rc = reserve_stock(f->db, &f->cfg, cause, &req, outcome, err, sizeof err);
    if (rc)
        td_db_rollback(f->db);
    else
        assert_int_equal(td_db_commit(f->db), 0);
    return rc;
}

static int release(fixture_t *f, const td_event_t *cause, const char *order_id, bool *released)
{
    char err[256];
    assert_int_equal(td_db_begin(f->db), 0);
    int rc = reserve_release(f->db, &f->cfg, cause, order_id, released, err, sizeof err);
    if (rc)
        td_db_rollback(f->db);
    else
        assert_int_equal(td_db_commit(f->db), 0);
    return rc;
}

static void check_event(const td_event_t *ev, const td_event_t *cause, const char *type,
                        const char *order_id)
{
    assert_string_equal(ev->type, type);
    assert_string_equal(ev->subject, order_id);
    assert_string_equal(ev->correlationid, order_id);
    assert_string_equal(ev->causationid, cause->id);
    assert_memory_equal(ev->trace.trace_id, cause->trace.trace_id, 16);
    assert_string_equal(json_string_value(json_object_get(ev->data, "orderId")), order_id);
    assert_string_equal(json_string_value(json_object_get(ev->data, "userId")), USER);
}

static void test_exactly_enough(void **state)
{
    fixture_t *f = *state;
    char topic[64];
    char o1[TD_UUID_LEN + 1];
    td_uuid_new(o1);
    td_event_t *cause = order_created(o1);
    reserve_outcome_t out;
    assert_int_equal(reserve(f, cause, o1, PRODUCT, 5, &out), 0);
    assert_int_equal(out, RESERVE_RESERVED);
    assert_int_equal(stock(f->db, PRODUCT), 0);

    td_event_t *ev = last_event(f->db, topic, sizeof topic);
    assert_string_equal(topic, "tidings.reservations");
    check_event(ev, cause, "ProductReservedEvent", o1);
    assert_string_equal(json_string_value(json_object_get(ev->data, "productId")), PRODUCT);
    assert_int_equal(json_integer_value(json_object_get(ev->data, "quantity")), 5);
    char *price = td_json_dumps(json_object_get(ev->data, "unitPrice"));
    assert_string_equal(price, "19.99");
    free(price);
    td_event_free(ev);

    reservation_t r;
    assert_int_equal(reserve_get(f->db, o1, &r), 0);
    assert_string_equal(r.status, "RESERVED");
    assert_int_equal(r.quantity, 5);
    assert_int_equal(r.unit_price_cents, 1999);
    td_event_free(cause);
}

static void test_one_more_than_stock(void **state)
{
    fixture_t *f = *state;
    char topic[64];
    char o1[TD_UUID_LEN + 1];
    td_uuid_new(o1);
    td_event_t *cause = order_created(o1);
    reserve_outcome_t out;
    assert_int_equal(reserve(f, cause, o1, PRODUCT, 6, &out), 0);
    assert_int_equal(out, RESERVE_OUT_OF_STOCK);
    assert_int_equal(stock(f->db, PRODUCT), 5); /* untouched */

    td_event_t *ev = last_event(f->db, topic, sizeof topic);
    check_event(ev, cause, "ProductReservationFailedEvent", o1);
    assert_string_equal(json_string_value(json_object_get(ev->data, "reason")), "out_of_stock");
    assert_int_equal(json_integer_value(json_object_get(ev->data, "quantity")), 6);
    assert_null(json_object_get(ev->data, "unitPrice"));
    td_event_free(ev);

    reservation_t r;
    assert_int_equal(reserve_get(f->db, o1, &r), 0);
    assert_string_equal(r.status, "FAILED");

    /* A failed reservation returns nothing when its order is cancelled. */
    bool released = true;
    assert_int_equal(release(f, cause, o1, &released), 0);
    assert_false(released);
    assert_int_equal(stock(f->db, PRODUCT), 5);
    assert_int_equal(td_outbox_backlog(f->db), 1);
    td_event_free(cause);
}

static void test_consecutive_orders_drain_stock(void **state)
{
    fixture_t *f = *state;
    const int64_t want[] = {2, 2, 2, 1, 1};
    const reserve_outcome_t expect[] = {RESERVE_RESERVED, RESERVE_RESERVED, RESERVE_OUT_OF_STOCK,
                                        RESERVE_RESERVED, RESERVE_OUT_OF_STOCK};
    const int64_t left[] = {3, 1, 1, 0, 0};
    for (size_t i = 0; i < TD_ARRAY_SIZE(want); i++) {
        char id[TD_UUID_LEN + 1];
        td_uuid_new(id);
        td_event_t *cause = order_created(id);
        reserve_outcome_t out;
        assert_int_equal(reserve(f, cause, id, PRODUCT, want[i], &out), 0);
        assert_int_equal(out, expect[i]);
        assert_int_equal(stock(f->db, PRODUCT), left[i]);
        td_event_free(cause);
    }
}

static void test_unknown_and_deleted_products(void **state)
{
    fixture_t *f = *state;
    char topic[64];
    const char *products[] = {NOWHERE, GONE};
    for (size_t i = 0; i < 2; i++) {
        char id[TD_UUID_LEN + 1];
        td_uuid_new(id);
        td_event_t *cause = order_created(id);
        reserve_outcome_t out;
        assert_int_equal(reserve(f, cause, id, products[i], 1, &out), 0);
        assert_int_equal(out, RESERVE_UNKNOWN_PRODUCT);
        td_event_t *ev = last_event(f->db, topic, sizeof topic);
        check_event(ev, cause, "ProductReservationFailedEvent", id);
        assert_string_equal(json_string_value(json_object_get(ev->data, "reason")),
                            "unknown_product");
        td_event_free(ev);
        td_event_free(cause);
    }
    assert_int_equal(stock(f->db, GONE), 10); /* a deleted product sells nothing */
}

static void test_same_order_twice(void **state)
{
    fixture_t *f = *state;
    char o1[TD_UUID_LEN + 1];
    td_uuid_new(o1);
    td_event_t *cause = order_created(o1);
    reserve_outcome_t out;
    assert_int_equal(reserve(f, cause, o1, PRODUCT, 2, &out), 0);
    assert_int_equal(out, RESERVE_RESERVED);
    td_event_t *again = order_created(o1); /* same order, another event id */
    assert_int_equal(reserve(f, again, o1, PRODUCT, 2, &out), 0);
    assert_int_equal(out, RESERVE_DUPLICATE);
    assert_int_equal(stock(f->db, PRODUCT), 3);
    assert_int_equal(td_outbox_backlog(f->db), 1);
    td_event_free(cause);
    td_event_free(again);
}

static void test_release_once(void **state)
{
    fixture_t *f = *state;
    char topic[64];
    char o1[TD_UUID_LEN + 1];
    td_uuid_new(o1);
    td_event_t *created = order_created(o1);
    assert_int_equal(reserve(f, created, o1, PRODUCT, 4, NULL), 0);
    assert_int_equal(stock(f->db, PRODUCT), 1);

    td_event_t *failed = td_event_new("payments", "PaymentFailedEvent", o1, json_object());
    td_event_set_cause(failed, created);
    bool released = false;
    assert_int_equal(release(f, failed, o1, &released), 0);
    assert_true(released);
    assert_int_equal(stock(f->db, PRODUCT), 5);

    td_event_t *ev = last_event(f->db, topic, sizeof topic);
    assert_string_equal(topic, "tidings.reservations");
    check_event(ev, failed, "ProductReservationCancelledEvent", o1);
    assert_string_equal(json_string_value(json_object_get(ev->data, "productId")), PRODUCT);
    assert_int_equal(json_integer_value(json_object_get(ev->data, "quantity")), 4);
    td_event_free(ev);

    reservation_t r;
    assert_int_equal(reserve_get(f->db, o1, &r), 0);
    assert_string_equal(r.status, "CANCELLED");

    /* Again (another event for the same fact): nothing more comes back. */
    assert_int_equal(release(f, failed, o1, &released), 0);
    assert_false(released);
    assert_int_equal(stock(f->db, PRODUCT), 5);
    assert_int_equal(td_outbox_backlog(f->db), 2);

    /* The stock that came back can be reserved again, all of it. */
    char o2[TD_UUID_LEN + 1];
    td_uuid_new(o2);
    td_event_t *c2 = order_created(o2);
    reserve_outcome_t out;
    assert_int_equal(reserve(f, c2, o2, PRODUCT, 5, &out), 0);
    assert_int_equal(out, RESERVE_RESERVED);
    assert_int_equal(stock(f->db, PRODUCT), 0);
    td_event_free(c2);
    td_event_free(failed);
    td_event_free(created);
}

static void test_bad_requests(void **state)
{
    fixture_t *f = *state;
    char o1[TD_UUID_LEN + 1];
    td_uuid_new(o1);
    td_event_t *cause = order_created(o1);
    assert_int_equal(reserve(f, cause, o1, PRODUCT, 0, NULL), TD_EINVAL);
    assert_int_equal(reserve(f, cause, o1, PRODUCT, -3, NULL), TD_EINVAL);
    assert_int_equal(reserve(f, cause, "nope", PRODUCT, 1, NULL), TD_EINVAL);
    /* A payment failure for an order never reserved: dead-letter. */
    assert_int_equal(release(f, cause, o1, NULL), TD_EINVAL);
    assert_int_equal(stock(f->db, PRODUCT), 5);
    assert_int_equal(td_outbox_backlog(f->db), 0);
    reservation_t r;
    assert_int_equal(reserve_get(f->db, o1, &r), TD_ENOENT);
    td_event_free(cause);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exactly_enough, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_more_than_stock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consecutive_orders_drain_stock, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_and_deleted_products, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_order_twice, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
