/* The web service's event store (src/services/web/web.h): sequence
 * numbers, pages and cursors, eviction of the oldest when full, records
 * that are not CloudEvents (even with bytes that are not UTF-8) kept as
 * valid JSON with the reason, dead-letter details, replay in order, and a
 * saga's causal chain with parents and hop delays. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/envelope.h"
#include "tidings/json.h"
#include "web/web.h"

#define PREFIX "tidings."
#define ORDER  "0b9d3a52-7c1e-4f8a-9d2b-3e4f5a6b7c8d"

static td_record_t *record_of(const td_event_t *ev, const char *topic, int64_t offset)
{
    td_record_t *rec = td_event_to_record(ev, topic);
    rec->partition = 1;
    rec->offset = offset;
    return rec;
}

static uint64_t add_event(web_store_t *st, const char *type, int64_t offset)
{
    td_event_t *ev = td_event_new("users", type, "k", json_pack("{s:I}", "n", (json_int_t)offset));
    td_record_t *rec = record_of(ev, PREFIX "users", offset);
    uint64_t seq = web_store_add(st, rec, NULL, NULL);
    td_record_free(rec);
    td_event_free(ev);
    return seq;
}

static json_int_t seq_at(json_t *page, size_t i)
{
    return json_integer_value(
        json_object_get(json_array_get(json_object_get(page, "events"), i), "seq"));
}

static void test_pages_and_eviction(void **state)
{
    (void)state;
    web_store_t *st = web_store_new(5, PREFIX);
    for (int i = 1; i <= 8; i++) assert_int_equal(add_event(st, "UserLoggedInEvent", i), i);
    assert_int_equal(web_store_count(st), 5);
    assert_int_equal(web_store_last(st), 8);

    /* The latest 3, oldest first. */
    json_t *page = web_store_list(st, false, 0, 3, NULL);
    assert_int_equal(json_array_size(json_object_get(page, "events")), 3);
    assert_int_equal(seq_at(page, 0), 6);
    assert_int_equal(seq_at(page, 2), 8);
    assert_int_equal(json_integer_value(json_object_get(page, "last")), 8);
    json_decref(page);

    /* After 0: the oldest still held is 4; pages of 2 lead on by cursor. */
    page = web_store_list(st, true, 0, 2, NULL);
    assert_int_equal(seq_at(page, 0), 4);
    assert_int_equal(seq_at(page, 1), 5);
    assert_string_equal(json_string_value(json_object_get(page, "next")), "5");
    json_decref(page);
    page = web_store_list(st, true, 7, 2, NULL);
    assert_int_equal(json_array_size(json_object_get(page, "events")), 1);
    assert_true(json_is_null(json_object_get(page, "next")));
    json_decref(page);
    page = web_store_list(st, true, 8, 50, NULL);
    assert_int_equal(json_array_size(json_object_get(page, "events")), 0);
    json_decref(page);

    /* An event's shape. */
    page = web_store_list(st, false, 0, 1, NULL);
    json_t *e = json_array_get(json_object_get(page, "events"), 0);
    assert_string_equal(json_string_value(json_object_get(e, "topic")), "users");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "UserLoggedInEvent");
    assert_string_equal(json_string_value(json_object_get(e, "service")), "users");
    assert_string_equal(json_string_value(json_object_get(e, "key")), "k");
    assert_int_equal(json_integer_value(json_object_get(e, "partition")), 1);
    assert_int_equal(json_integer_value(json_object_get(e, "offset")), 8);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(e, "data"), "n")), 8);
    assert_non_null(json_string_value(json_object_get(e, "id")));
    assert_true(json_is_null(json_object_get(e, "causationid")));
    json_decref(page);
    web_store_free(st);
}

typedef struct seen {
    uint64_t seqs[16];
    size_t cnt;
} seen_t;

static void collect(void *arg, uint64_t seq, const char *json, const web_vis_t *vis)
{
    seen_t *s = arg;
    assert_non_null(vis);
    assert_non_null(json);
    s->seqs[s->cnt++] = seq;
}

static void test_each_and_emit(void **state)
{
    (void)state;
    web_store_t *st = web_store_new(4, PREFIX);
    seen_t live = {0};
    td_event_t *ev = td_event_new("users", "UserRegisteredEvent", "k", json_object());
    td_record_t *rec = record_of(ev, PREFIX "users", 0);
    for (int i = 0; i < 6; i++) web_store_add(st, rec, collect, &live);
    td_record_free(rec);
    td_event_free(ev);
    assert_int_equal(live.cnt, 6);
    assert_int_equal(live.seqs[5], 6);

    seen_t replay = {0};
    /* After 1, but 1..2 are gone: from 3, at most 2. */
    assert_int_equal(web_store_each(st, 1, 2, NULL, collect, &replay), 4);
    assert_int_equal(replay.cnt, 2);
    assert_int_equal(replay.seqs[0], 3);
    assert_int_equal(web_store_each(st, 4, 10, NULL, collect, &replay), 6);
    assert_int_equal(replay.cnt, 4);
    assert_int_equal(web_store_each(st, 6, 10, NULL, collect, &replay), 6); /* nothing new */
    assert_int_equal(replay.cnt, 4);
    web_store_free(st);
}

static void test_not_a_cloudevent_and_dlt(void **state)
{
    (void)state;
    web_store_t *st = web_store_new(10, PREFIX);
    td_record_t *rec = td_record_new(PREFIX "orders");
    rec->partition = 0;
    rec->offset = 7;
    rec->timestamp = 1700000000000LL;
    td_record_set_key(rec, "bad\xff\xfekey", 9);
    td_record_set_value(rec, "{not json \xc3\x28", 13);
    web_store_add(st, rec, NULL, NULL);
    td_record_free(rec);

    td_event_t *ev = td_event_new("orders", "OrderCreatedEvent", ORDER, json_object());
    rec = record_of(ev, PREFIX "orders.DLT", 0);
    td_record_add_header_str(rec, "tidings_dlt_reason", "field 'quantity' is missing");
    td_record_add_header_str(rec, "tidings_dlt_original_topic", PREFIX "orders");
    web_store_add(st, rec, NULL, NULL);
    td_record_free(rec);
    td_event_free(ev);

    json_t *page = web_store_list(st, false, 0, 10, NULL);
    char *text = td_json_dumps(page); /* all of it is valid JSON text */
    assert_non_null(text);
    free(text);
    json_t *bad = json_array_get(json_object_get(page, "events"), 0);
    assert_true(json_is_null(json_object_get(bad, "type")));
    assert_non_null(json_string_value(json_object_get(bad, "error")));
    assert_non_null(strstr(json_string_value(json_object_get(bad, "key")), "bad"));
    assert_string_equal(json_string_value(json_object_get(bad, "time")),
                        "2023-11-14T22:13:20.000Z");
    json_t *dlt = json_array_get(json_object_get(page, "events"), 1);
    assert_string_equal(json_string_value(json_object_get(dlt, "topic")), "orders.DLT");
    json_t *d = json_object_get(dlt, "dlt");
    assert_string_equal(json_string_value(json_object_get(d, "reason")),
                        "field 'quantity' is missing");
    assert_string_equal(json_string_value(json_object_get(d, "originalTopic")), PREFIX "orders");
    json_decref(page);
    web_store_free(st);
}

static void test_trace_of_a_saga(void **state)
{
    (void)state;
    web_store_t *st = web_store_new(100, PREFIX);
    add_event(st, "UserLoggedInEvent", 1); /* noise */
    td_event_t *created = td_event_new("orders", "OrderCreatedEvent", ORDER, json_object());
    td_event_t *reserved = td_event_new("products", "ProductReservedEvent", ORDER, json_object());
    td_event_set_cause(reserved, created);
    td_event_t *paid = td_event_new("payments", "PaymentProcessedEvent", ORDER, json_object());
    td_event_set_cause(paid, reserved);
    /* Times 40 ms apart, in the order the hops happened. */
    td_time_format(1800000000000LL, created->time);
    td_time_format(1800000000040LL, reserved->time);
    td_time_format(1800000000100LL, paid->time);
    /* Stored out of order, and the payment twice (at-least-once). */
    const td_event_t *order[] = {paid, created, reserved, paid};
    const char *topics[] = {PREFIX "payments", PREFIX "orders", PREFIX "reservations",
                            PREFIX "payments"};
    for (int i = 0; i < 4; i++) {
        td_record_t *rec = record_of(order[i], topics[i], i);
        web_store_add(st, rec, NULL, NULL);
        td_record_free(rec);
    }

    json_t *chain = web_store_trace(st, ORDER);
    assert_non_null(chain);
    json_t *evs = json_object_get(chain, "events");
    assert_int_equal(json_array_size(evs), 3);
    assert_int_equal(json_integer_value(json_object_get(chain, "spanMs")), 100);
    const char *types[] = {"OrderCreatedEvent", "ProductReservedEvent", "PaymentProcessedEvent"};
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(evs, i);
        assert_string_equal(json_string_value(json_object_get(e, "type")), types[i]);
        assert_int_equal(json_integer_value(json_object_get(e, "depth")), (json_int_t)i);
        assert_string_equal(json_string_value(json_object_get(e, "group")), ORDER);
    }
    json_t *first = json_array_get(evs, 0), *third = json_array_get(evs, 2);
    assert_true(json_is_null(json_object_get(first, "parent")));
    assert_true(json_is_null(json_object_get(first, "delayMs")));
    assert_string_equal(json_string_value(json_object_get(third, "parent")), reserved->id);
    assert_int_equal(json_integer_value(json_object_get(third, "delayMs")), 60);
    json_decref(chain);

    /* An event id stands for its chain. */
    chain = web_store_trace(st, paid->id);
    assert_int_equal(json_array_size(json_object_get(chain, "events")), 3);
    json_decref(chain);
    assert_null(web_store_trace(st, "no-such-id"));

    td_event_free(created);
    td_event_free(reserved);
    td_event_free(paid);
    web_store_free(st);
}

#define ALICE "1a2b3c4d-0000-4000-8000-00000000000a"
#define BOB   "1a2b3c4d-0000-4000-8000-00000000000b"

static void add_on(web_store_t *st, const char *topic, const char *type, const char *key,
                   json_t *data)
{
    td_event_t *ev = td_event_new("x", type, key, data);
    char *full = td_asprintf(PREFIX "%s", topic);
    td_record_t *rec = record_of(ev, full, 0);
    web_store_add(st, rec, NULL, NULL);
    td_record_free(rec);
    td_event_free(ev);
    free(full);
}

static size_t count_types(json_t *page, const char *type)
{
    size_t n = 0, i;
    json_t *e;
    json_array_foreach(json_object_get(page, "events"), i, e) n +=
        type ? !strcmp(json_string_value(json_object_get(e, "type")) ?: "", type) : 1;
    return n;
}

/* SPEC section 5: a visitor sees product events only, a user also their
 * own, an admin everything; dead letters and invalid records are admin's. */
static void test_visibility(void **state)
{
    (void)state;
    web_store_t *st = web_store_new(100, PREFIX);
    add_on(st, "products", "ProductCreatedEvent", "p", json_pack("{s:s}", "title", "Kettle"));
    add_on(st, "users", "UserLoggedInEvent", ALICE,
           json_pack("{s:s, s:s, s:s}", "userId", ALICE, "email", "a@x", "ip", "10.1.2.3"));
    add_on(st, "users", "UserRegisteredEvent", BOB, json_pack("{s:s}", "email", "b@x"));
    add_on(st, "orders", "OrderCreatedEvent", "o", json_pack("{s:s}", "userId", BOB));
    /* A product type on the wrong topic is no product event. */
    add_on(st, "orders", "ProductCreatedEvent", "p", json_object());
    add_on(st, "products.DLT", "ProductCreatedEvent", "p", json_object());

    web_viewer_t anon = {0}, alice = {0}, bob = {0}, admin = {.admin = true};
    snprintf(alice.user_id, sizeof(alice.user_id), "%s", ALICE);
    snprintf(bob.user_id, sizeof(bob.user_id), "%s", BOB);

    json_t *page = web_store_list(st, false, 0, 50, &anon);
    assert_int_equal(count_types(page, NULL), 1);
    assert_int_equal(count_types(page, "ProductCreatedEvent"), 1);
    json_decref(page);
    page = web_store_list(st, true, 0, 50, &alice);
    assert_int_equal(count_types(page, NULL), 2);
    assert_int_equal(count_types(page, "UserLoggedInEvent"), 1);
    json_decref(page);
    page = web_store_list(st, false, 0, 50, &bob);
    assert_int_equal(count_types(page, NULL), 3); /* product, registered (by key), order */
    assert_int_equal(count_types(page, "UserLoggedInEvent"), 0);
    json_decref(page);
    page = web_store_list(st, false, 0, 50, &admin);
    assert_int_equal(count_types(page, NULL), 6);
    json_decref(page);

    /* The latest 1 a visitor may see is the product, however old. */
    page = web_store_list(st, false, 0, 1, &anon);
    assert_int_equal(count_types(page, "ProductCreatedEvent"), 1);
    json_decref(page);
    /* Paging after 1 for a visitor: nothing more to see, cursor at the end. */
    page = web_store_list(st, true, 1, 2, &anon);
    assert_int_equal(count_types(page, NULL), 0);
    json_decref(page);

    seen_t seen = {0};
    assert_int_equal(web_store_each(st, 0, 10, &alice, collect, &seen), 6);
    assert_int_equal(seen.cnt, 2);
    web_store_free(st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pages_and_eviction),
        cmocka_unit_test(test_each_and_emit),
        cmocka_unit_test(test_not_a_cloudevent_and_dlt),
        cmocka_unit_test(test_trace_of_a_saga),
        cmocka_unit_test(test_visibility),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
