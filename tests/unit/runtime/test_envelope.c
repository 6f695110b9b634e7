/* The CloudEvents envelope: building an event, the record it becomes (key,
 * value, headers in SPEC order), parsing it back, and every reason a record
 * is refused, which is what a dead-letter record will carry. Also the typed
 * getters for event data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tidings/envelope.h"

#define ORDER "123e4567-e89b-42d3-a456-426614174000"

static td_event_t *order_created(void)
{
    json_t *data = json_pack("{s:s, s:i}", "orderId", ORDER, "quantity", 2);
    return td_event_new("orders", "OrderCreatedEvent", ORDER, data);
}

static void test_new(void **state)
{
    (void)state;
    int64_t before = td_now_ms();
    td_event_t *ev = order_created();
    assert_true(td_uuid_valid(ev->id));
    assert_string_equal(ev->source, "/tidings/orders");
    assert_string_equal(ev->type, "OrderCreatedEvent");
    assert_string_equal(ev->subject, ORDER);
    assert_string_equal(ev->correlationid, ORDER);
    assert_null(ev->causationid);
    int64_t t;
    assert_int_equal(td_time_parse(ev->time, &t), 0);
    assert_true(t >= before - 1 && t <= td_now_ms() + 1);
    assert_int_equal(strlen(ev->time), TD_TIME_LEN);
    assert_int_equal(ev->partition, -1);
    assert_int_equal(ev->offset, -1);
    td_event_set_correlation(ev, "req-1");
    assert_string_equal(ev->correlationid, "req-1");
    td_event_free(ev);
}

static void test_cause_and_trace(void **state)
{
    (void)state;
    td_event_t *cause = order_created();
    td_event_set_correlation(cause, "saga-9");
    td_event_t *ev = td_event_new("products", "ProductReservedEvent", ORDER, NULL);
    assert_true(json_is_object(ev->data));
    td_event_set_cause(ev, cause);
    assert_string_equal(ev->correlationid, "saga-9");
    assert_string_equal(ev->causationid, cause->id);
    assert_memory_equal(ev->trace.trace_id, cause->trace.trace_id, 16);
    assert_memory_not_equal(ev->trace.span_id, cause->trace.span_id, 8);

    td_trace_t parent;
    td_trace_new(&parent);
    td_event_set_trace_parent(ev, &parent);
    assert_memory_equal(ev->trace.trace_id, parent.trace_id, 16);
    assert_memory_not_equal(ev->trace.span_id, parent.span_id, 8);
    td_event_free(ev);
    td_event_free(cause);
}

static void test_to_record_header_order(void **state)
{
    (void)state;
    td_event_t *cause = order_created();
    td_event_t *ev = td_event_new("payments", "PaymentProcessedEvent", ORDER,
                                  json_pack("{s:s}", "orderId", ORDER));
    td_event_set_cause(ev, cause);
    td_record_t *rec = td_event_to_record(ev, "tidings.payments");
    static const char *const want[] = {
        "ce_specversion", "ce_id",        "ce_source",        "ce_type",        "ce_time",
        "ce_subject",     "content-type", "ce_correlationid", "ce_causationid", "traceparent"};
    assert_int_equal(rec->header_cnt, TD_ARRAY_SIZE(want));
    for (size_t i = 0; i < TD_ARRAY_SIZE(want); i++)
        assert_string_equal(rec->headers[i].name, want[i]);
    assert_string_equal(rec->topic, "tidings.payments");
    assert_string_equal(rec->key, ORDER);
    assert_string_equal(rec->value, "{\"orderId\":\"" ORDER "\"}");
    assert_string_equal(td_record_header_str(rec, "ce_specversion"), "1.0");
    assert_string_equal(td_record_header_str(rec, "ce_id"), ev->id);
    assert_string_equal(td_record_header_str(rec, "ce_source"), "/tidings/payments");
    assert_string_equal(td_record_header_str(rec, "content-type"), "application/json");
    assert_string_equal(td_record_header_str(rec, "ce_causationid"), cause->id);
    char tp[TD_TRACEPARENT_LEN + 1];
    td_trace_format(&ev->trace, tp);
    assert_string_equal(td_record_header_str(rec, "traceparent"), tp);
    td_record_free(rec);

    /* Caused by a request: no ce_causationid header at all. */
    rec = td_event_to_record(cause, "tidings.orders");
    assert_int_equal(rec->header_cnt, TD_ARRAY_SIZE(want) - 1);
    assert_null(td_record_header(rec, "ce_causationid"));
    assert_string_equal(rec->headers[8].name, "traceparent");
    td_record_free(rec);
    td_event_free(ev);
    td_event_free(cause);
}

static void test_round_trip(void **state)
{
    (void)state;
    td_event_t *cause = order_created();
    td_event_t *ev = td_event_new("products", "ProductReservedEvent", ORDER,
                                  json_pack("{s:s, s:f}", "orderId", ORDER, "unitPrice", 19.99));
    td_event_set_cause(ev, cause);
    td_record_t *rec = td_event_to_record(ev, "tidings.reservations");
    rec->partition = 4;
    rec->offset = 99;
    char err[256] = "";
    td_event_t *back = td_event_from_record(rec, err, sizeof(err));
    if (!back) fail_msg("refused: %s", err);
    assert_string_equal(back->id, ev->id);
    assert_string_equal(back->source, ev->source);
    assert_string_equal(back->type, ev->type);
    assert_string_equal(back->time, ev->time);
    assert_string_equal(back->subject, ev->subject);
    assert_string_equal(back->correlationid, ev->correlationid);
    assert_string_equal(back->causationid, cause->id);
    assert_memory_equal(&back->trace, &ev->trace, sizeof(td_trace_t));
    assert_true(json_equal(back->data, ev->data));
    assert_string_equal(back->topic, "tidings.reservations");
    assert_int_equal(back->partition, 4);
    assert_int_equal(back->offset, 99);
    int64_t cents;
    assert_int_equal(td_data_cents(back->data, "unitPrice", &cents, err, sizeof(err)), 0);
    assert_int_equal(cents, 1999);
    td_event_free(back);
    td_record_free(rec);
    td_event_free(ev);
    td_event_free(cause);
}

/* A valid record, then one header replaced (value NULL removes it). */
static td_record_t *with_header(const char *name, const void *value, size_t len)
{
    td_event_t *ev = order_created();
    td_record_t *good = td_event_to_record(ev, "tidings.orders");
    td_event_free(ev);
    td_record_t *rec = td_record_new(good->topic);
    td_record_set_key(rec, good->key, good->key_len);
    td_record_set_value(rec, good->value, good->value_len);
    bool done = false;
    for (size_t i = 0; i < good->header_cnt; i++) {
        const td_header_t *h = &good->headers[i];
        if (!strcmp(h->name, name)) {
            if (value) td_record_add_header(rec, name, value, len);
            done = true;
        } else {
            td_record_add_header(rec, h->name, h->value, h->len);
        }
    }
    if (!done && value) td_record_add_header(rec, name, value, len);
    td_record_free(good);
    return rec;
}

static void expect_refused(td_record_t *rec, const char *want)
{
    char err[256] = "";
    td_event_t *ev = td_event_from_record(rec, err, sizeof(err));
    if (ev) fail_msg("accepted a record that should fail with '%s'", want);
    if (!strstr(err, want)) fail_msg("reason '%s' lacks '%s'", err, want);
    td_record_free(rec);
}

static void expect_refused_hdr(const char *name, const char *value, const char *want)
{
    expect_refused(with_header(name, value, value ? strlen(value) : 0), want);
}

static void test_refusals(void **state)
{
    (void)state;
    /* Missing required headers. */
    expect_refused_hdr("ce_specversion", NULL, "missing header 'ce_specversion'");
    expect_refused_hdr("ce_id", NULL, "missing header 'ce_id'");
    expect_refused_hdr("ce_source", NULL, "missing header 'ce_source'");
    expect_refused_hdr("ce_type", NULL, "missing header 'ce_type'");
    expect_refused_hdr("ce_time", NULL, "missing header 'ce_time'");
    expect_refused_hdr("ce_id", "", "missing header 'ce_id'");
    /* A null header is as good as missing. */
    td_record_t *rec = with_header("ce_type", NULL, 0);
    td_record_add_header(rec, "ce_type", NULL, 0);
    expect_refused(rec, "missing header 'ce_type'");

    /* Wrong values. */
    expect_refused_hdr("ce_specversion", "0.3", "ce_specversion must be '1.0', not '0.3'");
    expect_refused_hdr("ce_time", "yesterday", "ce_time 'yesterday' is not an RFC 3339 time");
    expect_refused_hdr("ce_time", "2026-02-30T00:00:00Z", "is not an RFC 3339 time");
    expect_refused_hdr("traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                       "bad traceparent");
    expect_refused_hdr("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                       "bad traceparent: traceparent trace-id is all zeros");
    expect_refused_hdr("content-type", "text/plain", "content-type must be application/json");

    /* Oversize ce_id: 200 bytes is fine, 201 is not. */
    char id[202];
    memset(id, 'a', 201);
    id[201] = '\0';
    expect_refused_hdr("ce_id", id, "ce_id is longer than 200 bytes");
    id[200] = '\0';
    rec = with_header("ce_id", id, 200);
    char err[256] = "";
    td_event_t *ev = td_event_from_record(rec, err, sizeof(err));
    if (!ev) fail_msg("a 200-byte ce_id was refused: %s", err);
    assert_string_equal(ev->id, id);
    td_event_free(ev);
    td_record_free(rec);

    /* NUL bytes and invalid UTF-8 in headers. */
    expect_refused(with_header("ce_type", "Order\0Evil", 10),
                   "header 'ce_type' contains a NUL byte");
    expect_refused(with_header("ce_source", "/tidings/\xff", 10),
                   "header 'ce_source' is not valid UTF-8");
    expect_refused(with_header("ce_correlationid", "\xc0\xaf", 2),
                   "header 'ce_correlationid' is not valid UTF-8");

    /* The value. */
    rec = with_header("ce_id", "x", 1);
    td_record_set_value(rec, "{not json", 9);
    expect_refused(rec, "value is not JSON");
    rec = with_header("ce_id", "x", 1);
    td_record_set_value(rec, "[1,2]", 5);
    expect_refused(rec, "value is not a JSON object");
    rec = with_header("ce_id", "x", 1);
    td_record_set_value(rec, "\"str\"", 5);
    expect_refused(rec, "value is not a JSON object");
    rec = with_header("ce_id", "x", 1);
    td_record_set_value(rec, "{\"a\":\"\xed\xa0\x80\"}", 10); /* a UTF-16 surrogate */
    expect_refused(rec, "value is not valid UTF-8");
    rec = with_header("ce_id", "x", 1);
    td_record_set_value(rec, "{\"a\":1}\0", 8);
    expect_refused(rec, "value is not JSON");
    rec = with_header("ce_id", "x", 1);
    td_record_set_value(rec, NULL, 0);
    expect_refused(rec, "value is empty");
    rec = with_header("ce_id", "x", 1);
    td_record_set_value(rec, "{\"a\":1,\"a\":2}", 13);
    expect_refused(rec, "value is not JSON");
}

static void test_lenient_defaults(void **state)
{
    (void)state;
    char err[256] = "";
    /* No traceparent: a new trace. No correlation id: the subject. An
     * offset time is normalised to UTC. content-type with parameters. */
    td_record_t *rec = with_header("traceparent", NULL, 0);
    td_record_t *r2 = with_header("ce_correlationid", NULL, 0);
    td_event_t *ev = td_event_from_record(rec, err, sizeof(err));
    if (!ev) fail_msg("refused: %s", err);
    td_trace_t zero;
    memset(&zero, 0, sizeof(zero));
    assert_memory_not_equal(ev->trace.trace_id, zero.trace_id, 16);
    td_event_free(ev);
    td_record_free(rec);

    ev = td_event_from_record(r2, err, sizeof(err));
    if (!ev) fail_msg("refused: %s", err);
    assert_string_equal(ev->correlationid, ORDER);
    td_event_free(ev);
    td_record_free(r2);

    rec = with_header("ce_time", "2026-11-21T12:19:53.5+01:00", 27);
    ev = td_event_from_record(rec, err, sizeof(err));
    if (!ev) fail_msg("refused: %s", err);
    assert_string_equal(ev->time, "2026-11-21T11:19:53.500Z");
    td_event_free(ev);
    td_record_free(rec);

    rec = with_header("content-type", "application/json; charset=utf-8", 31);
    ev = td_event_from_record(rec, err, sizeof(err));
    if (!ev) fail_msg("refused: %s", err);
    td_event_free(ev);
    td_record_free(rec);

    /* No subject header, no correlation id: subject from the key; with no
     * key either, the correlation id falls back to the event id. */
    rec = with_header("ce_subject", NULL, 0);
    ev = td_event_from_record(rec, err, sizeof(err));
    if (!ev) fail_msg("refused: %s", err);
    assert_string_equal(ev->subject, ORDER);
    td_event_free(ev);
    td_record_free(rec);

    rec = td_record_new("t");
    td_record_add_header_str(rec, "ce_specversion", "1.0");
    td_record_add_header_str(rec, "ce_id", "id-1");
    td_record_add_header_str(rec, "ce_source", "/x");
    td_record_add_header_str(rec, "ce_type", "T");
    td_record_add_header_str(rec, "ce_time", "2026-11-21T11:19:53Z");
    td_record_set_value(rec, "{}", 2);
    ev = td_event_from_record(rec, err, sizeof(err));
    if (!ev) fail_msg("refused: %s", err);
    assert_null(ev->subject);
    assert_string_equal(ev->correlationid, "id-1");
    assert_null(ev->causationid);
    td_event_free(ev);
    td_record_free(rec);
}

static void test_data_getters(void **state)
{
    (void)state;
    json_t *d = json_loads("{\"orderId\":\"" ORDER "\",\"q\":3,\"qs\":\"3\",\"qf\":1.5,"
                           "\"bad\":\"nope\",\"amount\":19.99,\"cheap\":0.001,\"n\":null}",
                           0, NULL);
    assert_non_null(d);
    const char *s;
    int64_t v;
    char err[128];
    assert_int_equal(td_data_str(d, "orderId", &s, err, sizeof(err)), 0);
    assert_string_equal(s, ORDER);
    assert_int_equal(td_data_uuid(d, "orderId", &s, err, sizeof(err)), 0);
    assert_int_equal(td_data_uuid(d, "bad", &s, err, sizeof(err)), TD_EINVAL);
    assert_string_equal(err, "field 'bad' must be a UUID");
    assert_int_equal(td_data_str(d, "q", &s, err, sizeof(err)), TD_EINVAL);
    assert_string_equal(err, "field 'q' must be a string");
    assert_int_equal(td_data_str(d, "absent", &s, err, sizeof(err)), TD_EINVAL);
    assert_string_equal(err, "field 'absent' is missing");
    assert_int_equal(td_data_int(d, "q", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 3);
    assert_int_equal(td_data_int(d, "qs", &v, err, sizeof(err)), TD_EINVAL);
    assert_string_equal(err, "field 'qs' must be an integer");
    assert_int_equal(td_data_int(d, "qf", &v, err, sizeof(err)), TD_EINVAL);
    assert_int_equal(td_data_int(d, "n", &v, err, sizeof(err)), TD_EINVAL);
    assert_string_equal(err, "field 'n' is missing");
    assert_int_equal(td_data_cents(d, "amount", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 1999);
    assert_int_equal(td_data_cents(d, "q", &v, err, sizeof(err)), 0);
    assert_int_equal(v, 300);
    assert_int_equal(td_data_cents(d, "cheap", &v, err, sizeof(err)), TD_EINVAL);
    assert_string_equal(err, "field 'cheap' must have at most 2 decimals");
    assert_int_equal(td_data_cents(d, "absent", &v, err, sizeof(err)), TD_EINVAL);
    assert_string_equal(err, "field 'absent' is missing");
    json_decref(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new),
        cmocka_unit_test(test_cause_and_trace),
        cmocka_unit_test(test_to_record_header_order),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_lenient_defaults),
        cmocka_unit_test(test_data_getters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
