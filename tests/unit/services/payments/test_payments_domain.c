/* The payments domain on an in-memory database: the amount in integer
 * cents (and its overflow), the limit exactly at the limit and one cent
 * over (for one item and for several), the payment row and the event it
 * announces reacting to its cause, and one payment per order however often
 * it is asked for. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "payments/payments.h"
#include "tidings/bus.h"
#include "tidings/json.h"
#include "tidings/log.h"

#define USER "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"

typedef struct fixture {
    td_config_t cfg;
    td_db_t *db;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = td_calloc(1, sizeof *f);
    char err[256];
    td_config_defaults(&f->cfg);
    td_log_init("test", TD_LOG_WARN, false);        /* the domain logs every state change */
    assert_int_equal(f->cfg.payment_limit, 500000); /* SPEC default 5000.00 */
    f->db = td_db_open(":memory:", payments_migrations, payments_migration_cnt, err, sizeof err);
    assert_non_null(f->db);
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

static char *money_text(const json_t *v)
{
    return td_json_dumps(v);
}

static void test_amount(void **state)
{
    (void)state;
    int64_t a = -1;
    assert_int_equal(payments_amount(3, 1999, &a), 0);
    assert_int_equal(a, 5997);
    assert_int_equal(payments_amount(1, 0, &a), 0);
    assert_int_equal(a, 0);
    assert_int_equal(payments_amount(1000000, 99999999, &a), 0);
    assert_int_equal(a, 99999999000000LL);
    /* Past what money can hold (and past int64): capped, so declined. */
    assert_int_equal(payments_amount(1000000, 100000000000000LL, &a), 0);
    assert_int_equal(a, TD_MONEY_MAX_CENTS);
    assert_int_equal(payments_amount(INT64_MAX, INT64_MAX, &a), 0);
    assert_int_equal(a, TD_MONEY_MAX_CENTS);
    assert_int_equal(payments_amount(0, 100, &a), TD_EINVAL);
    assert_int_equal(payments_amount(1, -1, &a), TD_EINVAL);
}

static void test_limit_boundaries(void **state)
{
    (void)state;
    assert_true(payments_approves(500000, 500000));
    assert_false(payments_approves(500001, 500000));
    assert_true(payments_approves(0, 0));
    assert_false(payments_approves(1, 0));
    assert_false(payments_approves(TD_MONEY_MAX_CENTS, TD_MONEY_MAX_CENTS - 1));
}

static int charge(fixture_t *f, const td_event_t *cause, const char *order_id, int64_t qty,
                  int64_t price, payment_t *out, bool *created)
{
    char err[256];
    payment_request_t req = {order_id, USER, qty, price};
    assert_int_equal(td_db_begin(f->db), 0);
    int rc = payments_charge(f->db, &f->cfg, cause, &req, out, created, err, sizeof err);
    if (rc)
        td_db_rollback(f->db);
    else
        assert_int_equal(td_db_commit(f->db), 0);
    return rc;
}

static td_event_t *reserved(const char *order_id)
{
    td_event_t *ev = td_event_new("products", "ProductReservedEvent", order_id, json_object());
    td_event_set_correlation(ev, order_id);
    return ev;
}

/* Charges qty x price for a new order and checks the outcome end to end. */
static void charge_and_check(fixture_t *f, int64_t qty, int64_t price, bool approved,
                             const char *amount_text)
{
    char order_id[TD_UUID_LEN + 1], topic[64];
    td_uuid_new(order_id);
    td_event_t *cause = reserved(order_id);
    payment_t p;
    bool created = false;
    assert_int_equal(charge(f, cause, order_id, qty, price, &p, &created), 0);
    assert_true(created);
    assert_int_equal(p.status, approved ? PAYMENT_PROCESSED : PAYMENT_FAILED);
    assert_true(td_uuid_valid(p.id));

    payment_t got;
    assert_int_equal(payments_get(f->db, order_id, &got), 0);
    assert_string_equal(got.id, p.id);
    assert_string_equal(got.user_id, USER);
    assert_int_equal(got.amount_cents, p.amount_cents);
    assert_int_equal(got.status, p.status);
    assert_string_equal(payment_status_name(got.status), approved ? "PROCESSED" : "FAILED");

    td_event_t *ev = last_event(f->db, topic, sizeof topic);
    assert_string_equal(topic, "tidings.payments");
    assert_string_equal(ev->type, approved ? "PaymentProcessedEvent" : "PaymentFailedEvent");
    assert_string_equal(ev->subject, order_id);
    assert_string_equal(ev->correlationid, order_id);
    assert_string_equal(ev->causationid, cause->id);
    assert_memory_equal(ev->trace.trace_id, cause->trace.trace_id, 16);
    assert_string_equal(json_string_value(json_object_get(ev->data, "orderId")), order_id);
    assert_string_equal(json_string_value(json_object_get(ev->data, "userId")), USER);
    char *amount = money_text(json_object_get(ev->data, "amount"));
    assert_string_equal(amount, amount_text);
    free(amount);
    if (approved) {
        assert_string_equal(json_string_value(json_object_get(ev->data, "paymentId")), p.id);
        assert_null(json_object_get(ev->data, "reason"));
    } else {
        assert_string_equal(json_string_value(json_object_get(ev->data, "reason")),
                            "limit_exceeded");
        assert_null(json_object_get(ev->data, "paymentId"));
    }
    td_event_free(ev);
    td_event_free(cause);
}

static void test_charge_at_the_limit(void **state)
{
    charge_and_check(*state, 1, 500000, true, "5000");
    charge_and_check(*state, 4, 125000, true, "5000");
    charge_and_check(*state, 3, 1999, true, "59.97");
}

static void test_charge_one_cent_over(void **state)
{
    charge_and_check(*state, 1, 500001, false, "5000.01");
    charge_and_check(*state, 3, 166667, false, "5000.01");
}

static void test_limit_from_config(void **state)
{
    fixture_t *f = *state;
    f->cfg.payment_limit = 1000; /* 10.00 */
    charge_and_check(f, 2, 500, true, "10");
    charge_and_check(f, 1, 1001, false, "10.01");
}

static void test_one_payment_per_order(void **state)
{
    fixture_t *f = *state;
    char order_id[TD_UUID_LEN + 1];
    td_uuid_new(order_id);
    td_event_t *c1 = reserved(order_id), *c2 = reserved(order_id);
    payment_t p1, p2;
    bool created = false;
    assert_int_equal(charge(f, c1, order_id, 1, 100, &p1, &created), 0);
    assert_true(created);
    assert_int_equal(charge(f, c2, order_id, 1, 100, &p2, &created), 0);
    assert_false(created);
    assert_string_equal(p2.id, p1.id);
    assert_int_equal(td_outbox_backlog(f->db), 1);
    td_event_free(c1);
    td_event_free(c2);
}

static void test_bad_requests(void **state)
{
    fixture_t *f = *state;
    char order_id[TD_UUID_LEN + 1];
    td_uuid_new(order_id);
    td_event_t *cause = reserved(order_id);
    assert_int_equal(charge(f, cause, order_id, 0, 100, NULL, NULL), TD_EINVAL);
    assert_int_equal(charge(f, cause, order_id, 1, -1, NULL, NULL), TD_EINVAL);
    assert_int_equal(charge(f, cause, "x", 1, 100, NULL, NULL), TD_EINVAL);
    payment_t p;
    assert_int_equal(payments_get(f->db, order_id, &p), TD_ENOENT);
    assert_int_equal(payments_get(f->db, "junk", &p), TD_ENOENT);
    assert_int_equal(td_outbox_backlog(f->db), 0);
    td_event_free(cause);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_amount),
        cmocka_unit_test(test_limit_boundaries),
        cmocka_unit_test_setup_teardown(test_charge_at_the_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_charge_one_cent_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit_from_config, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_payment_per_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
