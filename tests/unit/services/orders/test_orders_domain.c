/* The orders domain on an in-memory database: the state machine (every
 * legal and illegal transition, by state and by input), placing an order
 * (validation, the stored row, the OrderCreatedEvent in the outbox),
 * applying the saga's answers (the new state, total or reason, the
 * announcing event reacting to its cause; a final order refusing any
 * further answer; an unknown order being a permanent error) and the
 * newest-first paging of a user's orders. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "orders/orders.h"
#include "tidings/bus.h"
#include "tidings/json.h"
#include "tidings/log.h"

#define USER_A  "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
#define USER_B  "7a2d3c4b-5e6f-4a70-9b8c-0d1e2f3a4b5c"
#define PRODUCT "11111111-2222-4333-8444-555555555555"

typedef struct fixture {
    td_config_t cfg;
    td_db_t *db;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = td_calloc(1, sizeof *f);
    char err[256];
    td_config_defaults(&f->cfg);
    td_log_init("test", TD_LOG_WARN, false); /* the domain logs every state change */
    f->db = td_db_open(":memory:", orders_migrations, orders_migration_cnt, err, sizeof err);
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

/* The outbox rows, oldest first, as events. */
typedef struct outbox {
    td_event_t *evs[64];
    char *topics[64];
    size_t cnt;
} outbox_t;

static void outbox_read(td_db_t *db, outbox_t *out)
{
    memset(out, 0, sizeof *out);
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, "SELECT topic, key, value, headers FROM td_outbox "
                                         "ORDER BY id");
    while (sqlite3_step(st) == SQLITE_ROW) {
        assert_true(out->cnt < 64);
        td_record_t *rec = td_record_new((const char *)sqlite3_column_text(st, 0));
        td_record_set_key(rec, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1));
        td_record_set_value(rec, sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2));
        assert_int_equal(
            td_headers_decode(rec, sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3)),
            0);
        char err[256];
        td_event_t *ev = td_event_from_record(rec, err, sizeof err);
        assert_non_null(ev);
        out->topics[out->cnt] = td_strdup(rec->topic);
        out->evs[out->cnt++] = ev;
        td_record_free(rec);
    }
    td_db_done(st);
    td_db_unlock(db);
}

static void outbox_free(outbox_t *o)
{
    for (size_t i = 0; i < o->cnt; i++) {
        td_event_free(o->evs[i]);
        free(o->topics[i]);
    }
    o->cnt = 0;
}

static int64_t outbox_count(td_db_t *db)
{
    return td_outbox_backlog(db);
}

/* ---- the state machine -------------------------------------------------- */

static void test_transitions_by_state(void **state)
{
    (void)state;
    const order_status_t all[] = {ORDER_PENDING, ORDER_APPROVED, ORDER_REJECTED};
    for (size_t i = 0; i < 3; i++) {
        for (size_t j = 0; j < 3; j++) {
            bool legal = all[i] == ORDER_PENDING && all[j] != ORDER_PENDING;
            assert_int_equal(order_transition_legal(all[i], all[j]), legal);
        }
    }
    assert_false(order_status_final(ORDER_PENDING));
    assert_true(order_status_final(ORDER_APPROVED));
    assert_true(order_status_final(ORDER_REJECTED));
}

static void test_transitions_by_input(void **state)
{
    (void)state;
    order_status_t to = ORDER_PENDING;
    assert_int_equal(order_next(ORDER_PENDING, ORDER_IN_PAYMENT_PROCESSED, &to), 0);
    assert_int_equal(to, ORDER_APPROVED);
    assert_int_equal(order_next(ORDER_PENDING, ORDER_IN_PAYMENT_FAILED, &to), 0);
    assert_int_equal(to, ORDER_REJECTED);
    assert_int_equal(order_next(ORDER_PENDING, ORDER_IN_RESERVATION_FAILED, &to), 0);
    assert_int_equal(to, ORDER_REJECTED);

    const order_input_t inputs[] = {ORDER_IN_RESERVATION_FAILED, ORDER_IN_PAYMENT_PROCESSED,
                                    ORDER_IN_PAYMENT_FAILED};
    const order_status_t finals[] = {ORDER_APPROVED, ORDER_REJECTED};
    for (size_t i = 0; i < 2; i++) {
        for (size_t j = 0; j < 3; j++) {
            to = ORDER_PENDING;
            assert_int_equal(order_next(finals[i], inputs[j], &to), TD_EPERM);
            assert_int_equal(to, ORDER_PENDING); /* untouched when refused */
        }
    }
}

static void test_status_names(void **state)
{
    (void)state;
    assert_string_equal(order_status_name(ORDER_PENDING), "PENDING");
    assert_string_equal(order_status_name(ORDER_APPROVED), "APPROVED");
    assert_string_equal(order_status_name(ORDER_REJECTED), "REJECTED");
    assert_int_equal(order_status_from_name("APPROVED"), ORDER_APPROVED);
    assert_int_equal(order_status_from_name("approved"), -1);
    assert_int_equal(order_status_from_name(NULL), -1);
}

/* ---- placing ------------------------------------------------------------ */

static void test_create_validates(void **state)
{
    fixture_t *f = *state;
    char err[256];
    order_t o;
    assert_int_equal(
        orders_create(f->db, &f->cfg, USER_A, "not-a-uuid", 1, NULL, &o, err, sizeof err),
        TD_EINVAL);
    assert_non_null(strstr(err, "productId"));
    assert_int_equal(orders_create(f->db, &f->cfg, USER_A, "11111111-2222-4333-8444-55555555555A",
                                   1, NULL, &o, err, sizeof err),
                     TD_EINVAL); /* uppercase is not our UUID form */
    assert_int_equal(orders_create(f->db, &f->cfg, USER_A, PRODUCT, 0, NULL, &o, err, sizeof err),
                     TD_EINVAL);
    assert_non_null(strstr(err, "quantity"));
    assert_int_equal(orders_create(f->db, &f->cfg, USER_A, PRODUCT, ORDERS_QUANTITY_MAX + 1, NULL,
                                   &o, err, sizeof err),
                     TD_EINVAL);
    assert_int_equal(outbox_count(f->db), 0); /* nothing half-written */
    assert_int_equal(orders_create(f->db, &f->cfg, USER_A, PRODUCT, ORDERS_QUANTITY_MAX, NULL, &o,
                                   err, sizeof err),
                     0);
}

static void test_create_stores_and_announces(void **state)
{
    fixture_t *f = *state;
    char err[256];
    order_t o;
    td_trace_t trace;
    td_trace_new(&trace);
    assert_int_equal(orders_create(f->db, &f->cfg, USER_A, PRODUCT, 3, &trace, &o, err, sizeof err),
                     0);
    assert_true(td_uuid_valid(o.id));
    assert_int_equal(o.status, ORDER_PENDING);

    order_t got;
    assert_int_equal(orders_get(f->db, o.id, &got), 0);
    assert_string_equal(got.user_id, USER_A);
    assert_string_equal(got.product_id, PRODUCT);
    assert_int_equal(got.quantity, 3);
    assert_int_equal(got.status, ORDER_PENDING);
    assert_string_equal(got.reason, "");
    assert_int_equal(got.total_cents, -1);
    assert_string_equal(got.created_at, o.created_at);

    outbox_t ob;
    outbox_read(f->db, &ob);
    assert_int_equal(ob.cnt, 1);
    td_event_t *ev = ob.evs[0];
    assert_string_equal(ob.topics[0], "tidings.orders");
    assert_string_equal(ev->type, "OrderCreatedEvent");
    assert_string_equal(ev->subject, o.id);
    assert_string_equal(ev->correlationid, o.id);
    assert_null(ev->causationid);
    assert_memory_equal(ev->trace.trace_id, trace.trace_id, 16); /* the request's trace */
    assert_string_equal(json_string_value(json_object_get(ev->data, "orderId")), o.id);
    assert_string_equal(json_string_value(json_object_get(ev->data, "userId")), USER_A);
    assert_string_equal(json_string_value(json_object_get(ev->data, "productId")), PRODUCT);
    assert_int_equal(json_integer_value(json_object_get(ev->data, "quantity")), 3);
    assert_string_equal(json_string_value(json_object_get(ev->data, "createdAt")), o.created_at);
    outbox_free(&ob);

    assert_int_equal(orders_get(f->db, "3b0c7a8e-0000-4000-8000-000000000000", &got), TD_ENOENT);
    assert_int_equal(orders_get(f->db, "junk", &got), TD_ENOENT);
}

/* ---- the saga's answers ------------------------------------------------- */

static td_event_t *answer(const char *type, const char *order_id)
{
    td_event_t *ev = td_event_new("payments", type, order_id, json_object());
    td_event_set_correlation(ev, order_id);
    return ev;
}

static int apply(fixture_t *f, const td_event_t *cause, const char *order_id, order_input_t in,
                 int64_t total, const char *reason, bool *changed)
{
    char err[256];
    assert_int_equal(td_db_begin(f->db), 0);
    int rc =
        orders_apply(f->db, &f->cfg, cause, order_id, in, total, reason, changed, err, sizeof err);
    if (rc)
        td_db_rollback(f->db);
    else
        assert_int_equal(td_db_commit(f->db), 0);
    return rc;
}

static void place(fixture_t *f, const char *user, int64_t qty, order_t *o)
{
    char err[256];
    assert_int_equal(orders_create(f->db, &f->cfg, user, PRODUCT, qty, NULL, o, err, sizeof err),
                     0);
}

static void test_payment_processed_approves(void **state)
{
    fixture_t *f = *state;
    order_t o, got;
    bool changed = false;
    place(f, USER_A, 2, &o);
    td_event_t *cause = answer("PaymentProcessedEvent", o.id);
    assert_int_equal(apply(f, cause, o.id, ORDER_IN_PAYMENT_PROCESSED, 112900, NULL, &changed), 0);
    assert_true(changed);
    assert_int_equal(orders_get(f->db, o.id, &got), 0);
    assert_int_equal(got.status, ORDER_APPROVED);
    assert_int_equal(got.total_cents, 112900);
    assert_string_equal(got.reason, "");

    outbox_t ob;
    outbox_read(f->db, &ob);
    assert_int_equal(ob.cnt, 2);
    td_event_t *ev = ob.evs[1];
    assert_string_equal(ev->type, "OrderApprovedEvent");
    assert_string_equal(ev->subject, o.id);
    assert_string_equal(ev->correlationid, o.id);
    assert_string_equal(ev->causationid, cause->id);
    assert_memory_equal(ev->trace.trace_id, cause->trace.trace_id, 16);
    assert_memory_not_equal(ev->trace.span_id, cause->trace.span_id, 8);
    char *total = td_json_dumps(json_object_get(ev->data, "total"));
    assert_string_equal(total, "1129");
    free(total);
    assert_int_equal(json_integer_value(json_object_get(ev->data, "quantity")), 2);
    assert_string_equal(json_string_value(json_object_get(ev->data, "productId")), PRODUCT);
    assert_string_equal(json_string_value(json_object_get(ev->data, "userId")), USER_A);
    outbox_free(&ob);

    /* Final: every further answer is a logged no-op. */
    const order_input_t inputs[] = {ORDER_IN_RESERVATION_FAILED, ORDER_IN_PAYMENT_PROCESSED,
                                    ORDER_IN_PAYMENT_FAILED};
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(apply(f, cause, o.id, inputs[i], 5, "limit_exceeded", &changed), 0);
        assert_false(changed);
    }
    assert_int_equal(orders_get(f->db, o.id, &got), 0);
    assert_int_equal(got.status, ORDER_APPROVED);
    assert_int_equal(got.total_cents, 112900);
    assert_int_equal(outbox_count(f->db), 2);
    td_event_free(cause);
}

static void test_rejections(void **state)
{
    fixture_t *f = *state;
    order_t o1, o2, got;
    bool changed;
    place(f, USER_A, 1, &o1);
    place(f, USER_A, 1, &o2);

    td_event_t *c1 = answer("ProductReservationFailedEvent", o1.id);
    assert_int_equal(apply(f, c1, o1.id, ORDER_IN_RESERVATION_FAILED, -1, "out_of_stock", &changed),
                     0);
    assert_true(changed);
    td_event_t *c2 = answer("PaymentFailedEvent", o2.id);
    assert_int_equal(apply(f, c2, o2.id, ORDER_IN_PAYMENT_FAILED, -1, "limit_exceeded", &changed),
                     0);
    assert_true(changed);

    assert_int_equal(orders_get(f->db, o1.id, &got), 0);
    assert_int_equal(got.status, ORDER_REJECTED);
    assert_string_equal(got.reason, "out_of_stock");
    assert_int_equal(got.total_cents, -1);
    assert_int_equal(orders_get(f->db, o2.id, &got), 0);
    assert_int_equal(got.status, ORDER_REJECTED);
    assert_string_equal(got.reason, "limit_exceeded");

    outbox_t ob;
    outbox_read(f->db, &ob);
    assert_int_equal(ob.cnt, 4);
    assert_string_equal(ob.evs[2]->type, "OrderRejectedEvent");
    assert_string_equal(ob.evs[2]->causationid, c1->id);
    assert_string_equal(json_string_value(json_object_get(ob.evs[2]->data, "reason")),
                        "out_of_stock");
    assert_string_equal(ob.evs[3]->type, "OrderRejectedEvent");
    assert_string_equal(ob.evs[3]->causationid, c2->id);
    assert_string_equal(ob.evs[3]->correlationid, o2.id);
    assert_string_equal(json_string_value(json_object_get(ob.evs[3]->data, "reason")),
                        "limit_exceeded");
    outbox_free(&ob);

    /* A rejected order is never approved later. */
    assert_int_equal(apply(f, c2, o2.id, ORDER_IN_PAYMENT_PROCESSED, 100, NULL, &changed), 0);
    assert_false(changed);
    assert_int_equal(orders_get(f->db, o2.id, &got), 0);
    assert_int_equal(got.status, ORDER_REJECTED);
    assert_int_equal(outbox_count(f->db), 4);
    td_event_free(c1);
    td_event_free(c2);
}

static void test_bad_answers(void **state)
{
    fixture_t *f = *state;
    order_t o, got;
    place(f, USER_A, 1, &o);
    td_event_t *cause = answer("PaymentProcessedEvent", o.id);
    /* Unknown order: permanent (dead-letter), nothing written. */
    assert_int_equal(apply(f, cause, "3b0c7a8e-0000-4000-8000-000000000000",
                           ORDER_IN_PAYMENT_PROCESSED, 100, NULL, NULL),
                     TD_EINVAL);
    assert_int_equal(apply(f, cause, o.id, ORDER_IN_PAYMENT_PROCESSED, -5, NULL, NULL), TD_EINVAL);
    assert_int_equal(apply(f, cause, o.id, ORDER_IN_PAYMENT_FAILED, -1, "", NULL), TD_EINVAL);
    assert_int_equal(apply(f, cause, o.id, ORDER_IN_PAYMENT_FAILED, -1, NULL, NULL), TD_EINVAL);
    assert_int_equal(orders_get(f->db, o.id, &got), 0);
    assert_int_equal(got.status, ORDER_PENDING);
    assert_int_equal(outbox_count(f->db), 1);
    td_event_free(cause);
}

static void test_list_newest_first_paged(void **state)
{
    fixture_t *f = *state;
    order_t placed[5], other;
    for (int i = 0; i < 5; i++) place(f, USER_A, i + 1, &placed[i]);
    place(f, USER_B, 9, &other);

    order_t *list;
    size_t cnt;
    bool more;
    assert_int_equal(orders_list(f->db, USER_A, 0, 2, &list, &cnt, &more), 0);
    assert_int_equal(cnt, 2);
    assert_true(more);
    assert_string_equal(list[0].id, placed[4].id);
    assert_string_equal(list[1].id, placed[3].id);
    int64_t cursor = list[1].seq;
    free(list);

    assert_int_equal(orders_list(f->db, USER_A, cursor, 2, &list, &cnt, &more), 0);
    assert_int_equal(cnt, 2);
    assert_true(more);
    assert_string_equal(list[0].id, placed[2].id);
    assert_string_equal(list[1].id, placed[1].id);
    cursor = list[1].seq;
    free(list);

    assert_int_equal(orders_list(f->db, USER_A, cursor, 2, &list, &cnt, &more), 0);
    assert_int_equal(cnt, 1);
    assert_false(more);
    assert_string_equal(list[0].id, placed[0].id);
    free(list);

    /* Exactly a page: no phantom next page. */
    assert_int_equal(orders_list(f->db, USER_B, 0, 1, &list, &cnt, &more), 0);
    assert_int_equal(cnt, 1);
    assert_false(more);
    assert_string_equal(list[0].id, other.id);
    free(list);

    assert_int_equal(
        orders_list(f->db, "00000000-0000-4000-8000-000000000000", 0, 50, &list, &cnt, &more), 0);
    assert_int_equal(cnt, 0);
    assert_false(more);
    free(list);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transitions_by_state),
        cmocka_unit_test(test_transitions_by_input),
        cmocka_unit_test(test_status_names),
        cmocka_unit_test_setup_teardown(test_create_validates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_stores_and_announces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payment_processed_approves, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rejections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_answers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_newest_first_paged, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
