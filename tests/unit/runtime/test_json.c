/* JSON output and money: compact printing, exact money round trips through
 * JSON text, the at-most-2-decimals rule decided without float arithmetic,
 * and the strict request-field readers with their messages. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tidings/json.h"

/* money -> JSON text -> parsed -> cents again. */
static void money_round_trip(int64_t cents, const char *want_text)
{
    json_t *v = td_json_money(cents);
    char *text = td_json_dumps(v);
    assert_string_equal(text, want_text);
    json_error_t err;
    json_t *back = json_loads(text, JSON_DECODE_ANY, &err);
    assert_non_null(back);
    int64_t c = -1;
    char msg[128];
    assert_int_equal(td_json_to_cents(back, "price", &c, msg, sizeof(msg)), 0);
    assert_int_equal(c, cents);
    json_decref(back);
    json_decref(v);
    free(text);
}

static void test_money_round_trip(void **state)
{
    (void)state;
    money_round_trip(1999, "19.99");
    money_round_trip(112900, "1129");
    money_round_trip(10, "0.1");
    money_round_trip(1, "0.01");
    money_round_trip(0, "0");
    money_round_trip(1990, "19.9");
    money_round_trip(33, "0.33");
    money_round_trip(TD_MONEY_MAX_CENTS, "999999999999");
    money_round_trip(TD_MONEY_MAX_CENTS - 1, "999999999998.99");
    /* Every cent value in a range survives the trip. */
    for (int64_t c = 0; c < 100000; c += 7) {
        json_t *v = td_json_money(c);
        char *text = td_json_dumps(v);
        json_t *back = json_loads(text, JSON_DECODE_ANY, NULL);
        int64_t got = -1;
        assert_int_equal(td_json_to_cents(back, "p", &got, NULL, 0), 0);
        assert_int_equal(got, c);
        json_decref(v);
        json_decref(back);
        free(text);
    }
}

static void expect_cents(const char *json_text, int64_t want)
{
    json_t *v = json_loads(json_text, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    int64_t c = -1;
    char msg[128] = "";
    if (td_json_to_cents(v, "price", &c, msg, sizeof(msg)) != 0)
        fail_msg("'%s' refused: %s", json_text, msg);
    assert_int_equal(c, want);
    json_decref(v);
}

static void expect_money_error(json_t *v, const char *want_msg)
{
    int64_t c = -7;
    char msg[128] = "";
    assert_int_equal(td_json_to_cents(v, "price", &c, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, want_msg);
    assert_int_equal(c, -7);
    json_decref(v);
}

static void test_to_cents(void **state)
{
    (void)state;
    expect_cents("0.1", 10);
    expect_cents("0.10", 10);
    expect_cents("19.99", 1999);
    expect_cents("1129", 112900);
    expect_cents("1129.0", 112900);
    expect_cents("1.5e2", 15000);
    expect_cents("0.29", 29); /* 0.29*100 is 28.999... in floating point */
    expect_cents("1.15", 115);
    expect_cents("4.35", 435);
    expect_cents("-0.0", 0);
    expect_cents("999999999998.99", TD_MONEY_MAX_CENTS - 1);
    expect_cents("999999999999", TD_MONEY_MAX_CENTS);
}

static void test_to_cents_rejects(void **state)
{
    (void)state;
    expect_money_error(json_loads("19.999", JSON_DECODE_ANY, NULL),
                       "price must have at most 2 decimals");
    expect_money_error(json_loads("0.001", JSON_DECODE_ANY, NULL),
                       "price must have at most 2 decimals");
    expect_money_error(json_loads("0.125", JSON_DECODE_ANY, NULL),
                       "price must have at most 2 decimals");
    expect_money_error(json_integer(-1), "price must be >= 0");
    expect_money_error(json_real(-0.01), "price must be >= 0");
    expect_money_error(json_loads("1e300", JSON_DECODE_ANY, NULL),
                       "price must be at most 999999999999");
    expect_money_error(json_integer(1000000000000LL), "price must be at most 999999999999");
    expect_money_error(json_integer(INT64_MAX), "price must be at most 999999999999");
    expect_money_error(json_real(1e13), "price must be at most 999999999999");
    expect_money_error(json_loads("999999999999.01", JSON_DECODE_ANY, NULL),
                       "price must be at most 999999999999");
    expect_money_error(json_string("19.99"), "price must be a number");
    expect_money_error(json_true(), "price must be a number");
    expect_money_error(json_null(), "price must be a number");
    /* jansson cannot hold NaN or infinity (json_real refuses them), so a
     * NULL value is what a caller would have. */
    assert_null(json_real(NAN));
    assert_null(json_real(INFINITY));
    expect_money_error(NULL, "price must be a number");
}

static void test_money_format(void **state)
{
    (void)state;
    char buf[32];
    td_money_format(1999, buf, sizeof(buf));
    assert_string_equal(buf, "19.99");
    td_money_format(112900, buf, sizeof(buf));
    assert_string_equal(buf, "1129");
    td_money_format(0, buf, sizeof(buf));
    assert_string_equal(buf, "0");
    td_money_format(5, buf, sizeof(buf));
    assert_string_equal(buf, "0.05");
    td_money_format(1990, buf, sizeof(buf));
    assert_string_equal(buf, "19.90");
    td_money_format(-250, buf, sizeof(buf));
    assert_string_equal(buf, "-2.50");
}

static void test_dumps(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:s, s:i, s:o, s:[i,b,n]}", "name", "Grüße \"x\"", "n", 3, "price",
                          td_json_money(1999), "l", 1, 1);
    char *s = td_json_dumps(o);
    /* Compact, insertion order, UTF-8 kept as is (not \u escaped). */
    assert_string_equal(s, "{\"name\":\"Grüße \\\"x\\\"\",\"n\":3,\"price\":19.99,"
                           "\"l\":[1,true,null]}");
    free(s);
    json_decref(o);
    json_t *str = json_string("bare");
    s = td_json_dumps(str);
    assert_string_equal(s, "\"bare\"");
    free(s);
    json_decref(str);
    s = td_json_dumps(NULL);
    assert_string_equal(s, "null");
    free(s);

    /* Found by fuzzing: the largest doubles printed with 15 digits rounded
     * up past DBL_MAX, text that no JSON reader takes back. */
    json_t *big = json_loads("[1.7976931348623157e308,-1.797693134862315e308,1e308]", 0, NULL);
    assert_non_null(big);
    s = td_json_dumps(big);
    assert_string_equal(s, "[1.79769313486231e308,-1.79769313486231e308,1e308]");
    json_t *back = json_loads(s, 0, NULL);
    assert_non_null(back);
    json_decref(back);
    free(s);
    assert_true(json_real_value(json_array_get(big, 0)) == 1.7976931348623157e308); /* untouched */
    json_decref(big);
}

/* td_json_quote writes what jansson writes for the same string. */
static void test_quote(void **state)
{
    (void)state;
    static const char *const cases[] = {
        "",
        "plain",
        "quote \" and back\\slash",
        "line\nbreak\ttab\r\b\f",
        "\x01\x1f control",
        "caf\xc3\xa9 \xe2\x82\xac 19.99",
        "slash / and \x7f DEL",
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(cases); i++) {
        json_t *j = json_string(cases[i]);
        assert_non_null(j);
        char *want = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
        char *got = td_json_quote(cases[i]);
        assert_string_equal(got, want);
        json_t *back = json_loads(got, JSON_DECODE_ANY, NULL);
        assert_non_null(back);
        assert_string_equal(json_string_value(back), cases[i]);
        json_decref(back);
        free(got);
        free(want);
        json_decref(j);
    }
}

static void test_only_fields(void **state)
{
    (void)state;
    static const char *const allowed[] = {"title", "price", NULL};
    json_t *o = json_pack("{s:s, s:i}", "title", "x", "price", 1);
    char msg[128] = "";
    assert_int_equal(td_json_only_fields(o, allowed, msg, sizeof(msg)), 0);
    json_object_set_new(o, "colour", json_string("red"));
    assert_int_equal(td_json_only_fields(o, allowed, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, "unknown field 'colour'");
    json_decref(o);
}

static void test_req_string(void **state)
{
    (void)state;
    json_t *o = json_pack("{s:s, s:i, s:s, s:s, s:n}", "title", "Grüße", "num", 5, "empty", "",
                          "long", "abcdef", "nul", "title");
    json_object_set_new(o, "zero", json_stringn("a\0b", 3));
    const char *out = NULL;
    char msg[128];
    assert_int_equal(td_json_req_string(o, "title", 5, &out, msg, sizeof(msg)), 0);
    assert_string_equal(out, "Grüße"); /* 5 code points, 7 bytes */
    assert_int_equal(td_json_req_string(o, "title", 4, &out, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, "title must be at most 4 characters");
    assert_int_equal(td_json_req_string(o, "missing", 10, &out, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, "missing is required");
    assert_int_equal(td_json_req_string(o, "nul", 10, &out, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, "nul is required");
    assert_int_equal(td_json_req_string(o, "empty", 10, &out, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, "empty is required");
    assert_int_equal(td_json_req_string(o, "num", 10, &out, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, "num must be a string");
    assert_int_equal(td_json_req_string(o, "zero", 10, &out, msg, sizeof(msg)), TD_EINVAL);
    json_decref(o);
    assert_int_equal(td_utf8_len("Grüße"), 5);
    assert_int_equal(td_utf8_len(""), 0);
}

static void test_req_int(void **state)
{
    (void)state;
    json_t *o = json_loads("{\"q\":3,\"r\":3.0,\"f\":2.5,\"s\":\"3\",\"b\":true,\"big\":1e30,"
                           "\"neg\":-1}",
                           0, NULL);
    assert_non_null(o);
    int64_t v = 0;
    char msg[128];
    assert_int_equal(td_json_req_int(o, "q", 1, 10, &v, msg, sizeof(msg)), 0);
    assert_int_equal(v, 3);
    assert_int_equal(td_json_req_int(o, "r", 1, 10, &v, msg, sizeof(msg)), 0);
    assert_int_equal(v, 3);
    assert_int_equal(td_json_req_int(o, "f", 1, 10, &v, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, "f must be an integer");
    assert_int_equal(td_json_req_int(o, "s", 1, 10, &v, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, "s must be an integer");
    assert_int_equal(td_json_req_int(o, "b", 1, 10, &v, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, "b must be an integer");
    assert_int_equal(td_json_req_int(o, "big", 1, 10, &v, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, "big must be an integer");
    assert_int_equal(td_json_req_int(o, "neg", 0, 10, &v, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, "neg must be >= 0");
    assert_int_equal(td_json_req_int(o, "q", 0, 2, &v, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, "q must be <= 2");
    assert_int_equal(td_json_req_int(o, "none", 0, 2, &v, msg, sizeof(msg)), TD_EINVAL);
    assert_string_equal(msg, "none is required");
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_money_round_trip),
        cmocka_unit_test(test_to_cents),
        cmocka_unit_test(test_to_cents_rejects),
        cmocka_unit_test(test_money_format),
        cmocka_unit_test(test_dumps),
        cmocka_unit_test(test_quote),
        cmocka_unit_test(test_only_fields),
        cmocka_unit_test(test_req_string),
        cmocka_unit_test(test_req_int),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
