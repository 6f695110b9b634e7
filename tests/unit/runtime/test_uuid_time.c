/* UUIDs and RFC 3339 times: shape of new UUIDs, strict validation, time
 * formatting with milliseconds and parsing of every RFC 3339 form the
 * contract allows (Z, offsets, fractions), with calendar errors rejected. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tidings/uuid.h"

static void test_uuid_new_is_valid_v4(void **state)
{
    (void)state;
    char a[TD_UUID_LEN + 1], b[TD_UUID_LEN + 1];
    td_uuid_new(a);
    td_uuid_new(b);
    assert_int_equal(strlen(a), TD_UUID_LEN);
    assert_true(td_uuid_valid(a));
    assert_true(td_uuid_valid(b));
    assert_string_not_equal(a, b);
    assert_int_equal(a[14], '4');           /* version 4 */
    assert_non_null(strchr("89ab", a[19])); /* RFC 4122 variant */
}

/* Version 7: valid, unique, its first 48 bits the time in ms, so ids made
 * one after the other sort in the order they were made. */
static void test_uuid_v7_is_time_ordered(void **state)
{
    (void)state;
    char prev[TD_UUID_LEN + 1] = "", id[TD_UUID_LEN + 1];
    int64_t before = td_now_ms();
    for (int i = 0; i < 1000; i++) {
        td_uuid_v7(id);
        assert_true(td_uuid_valid(id));
        assert_int_equal(id[14], '7');
        assert_non_null(strchr("89ab", id[19]));
        assert_string_not_equal(id, prev);
        /* Within one ms the random bits decide; across ms the time. */
        if (prev[0] && strncmp(prev, id, 13) != 0) assert_true(strcmp(prev, id) < 0);
        memcpy(prev, id, sizeof(id));
    }
    char hex[13];
    memcpy(hex, id, 8);
    memcpy(hex + 8, id + 9, 4);
    hex[12] = '\0';
    int64_t ms = (int64_t)strtoll(hex, NULL, 16);
    assert_true(ms >= before && ms <= td_now_ms());
}

/* Same (ms, name), same id; another name or ms, another id; the
 * timestamp leads, so ids of later ms sort after. */
static void test_uuid_v7_named(void **state)
{
    (void)state;
    char a[TD_UUID_LEN + 1], b[TD_UUID_LEN + 1], c[TD_UUID_LEN + 1], d[TD_UUID_LEN + 1];
    td_uuid_v7_named(1764000000000, "cause:user", a);
    td_uuid_v7_named(1764000000000, "cause:user", b);
    td_uuid_v7_named(1764000000000, "cause:other", c);
    td_uuid_v7_named(1764000000001, "cause:user", d);
    assert_true(td_uuid_valid(a));
    assert_string_equal(a, b);
    assert_string_not_equal(a, c);
    assert_true(strcmp(a, d) < 0 && strcmp(c, d) < 0);
    assert_int_equal(a[14], '7');
    assert_true(strchr("89ab", a[19]) != NULL);
    assert_memory_equal(a, "019ab697-e800", 13); /* 1764000000000 = 0x019ab697e800 */
}

static void test_uuid_valid_rejects(void **state)
{
    (void)state;
    assert_true(td_uuid_valid("123e4567-e89b-42d3-a456-426614174000"));
    assert_false(td_uuid_valid(NULL));
    assert_false(td_uuid_valid(""));
    assert_false(td_uuid_valid("123E4567-E89B-42D3-A456-426614174000"));  /* uppercase */
    assert_false(td_uuid_valid("123e4567e89b42d3a456426614174000"));      /* no hyphens */
    assert_false(td_uuid_valid("123e4567-e89b-42d3-a456-42661417400"));   /* short */
    assert_false(td_uuid_valid("123e4567-e89b-42d3-a456-4266141740000")); /* long */
    assert_false(td_uuid_valid("123e4567-e89b-42d3-a456_426614174000"));
    assert_false(td_uuid_valid("123e4567-e89b-42d3-a456-42661417400g"));
}

static void test_time_format(void **state)
{
    (void)state;
    char buf[TD_TIME_LEN + 1];
    td_time_format(0, buf);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    td_time_format(1795778393123LL, buf);
    assert_string_equal(buf, "2026-11-27T11:19:53.123Z");
    td_time_format(951782400000LL, buf); /* leap day 2000 */
    assert_string_equal(buf, "2000-02-29T00:00:00.000Z");
    td_time_format(-1, buf);
    assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
    assert_int_equal(strlen(buf), TD_TIME_LEN);
}

static void test_time_round_trip(void **state)
{
    (void)state;
    char buf[TD_TIME_LEN + 1];
    int64_t samples[] = {
        0, 1, 999, 1000, 86399999, 1795778393123LL, 253402300799999LL, 951868799999LL};
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        int64_t back = -1;
        td_time_format(samples[i], buf);
        assert_int_equal(td_time_parse(buf, &back), 0);
        assert_int_equal(back, samples[i]);
    }
    int64_t now = td_now_ms(), back;
    td_time_format(now, buf);
    assert_int_equal(td_time_parse(buf, &back), 0);
    assert_int_equal(back, now);
}

static void test_time_parse_forms(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(td_time_parse("2026-11-21T11:19:53.123Z", &ms), 0);
    int64_t base = ms;
    assert_int_equal(td_time_parse("2026-11-21T11:19:53Z", &ms), 0);
    assert_int_equal(ms, base - 123);
    assert_int_equal(td_time_parse("2026-11-21T11:19:53.1Z", &ms), 0);
    assert_int_equal(ms, base - 23);
    assert_int_equal(td_time_parse("2026-11-21T11:19:53.123456789Z", &ms), 0);
    assert_int_equal(ms, base);
    assert_int_equal(td_time_parse("2026-11-21T12:19:53.123+01:00", &ms), 0);
    assert_int_equal(ms, base);
    assert_int_equal(td_time_parse("2026-11-21T05:49:53.123-05:30", &ms), 0);
    assert_int_equal(ms, base);
    assert_int_equal(td_time_parse("2026-11-21t11:19:53.123z", &ms), 0);
    assert_int_equal(ms, base);
    assert_int_equal(td_time_parse("2026-11-21T11:19:53.123+00:00", &ms), 0);
    assert_int_equal(ms, base);
    assert_int_equal(td_time_parse("2024-02-29T00:00:00Z", &ms), 0);
}

static void test_time_parse_rejects(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "2026-11-21",
        "2026-11-21T11:19:53",     /* no zone */
        "2026-11-21T11:19:53.123", /* no zone */
        "2026-11-21 11:19:53Z",    /* space */
        "2026-13-21T11:19:53Z",    /* month */
        "2026-00-21T11:19:53Z",
        "2026-11-31T11:19:53Z", /* 31 November */
        "2025-02-29T00:00:00Z", /* not a leap year */
        "1900-02-29T00:00:00Z",
        "2026-11-21T24:00:00Z",
        "2026-11-21T11:60:00Z",
        "2026-11-21T11:19:61Z",
        "2026-11-21T11:19:53.Z",        /* empty fraction */
        "2026-11-21T11:19:53.123+0100", /* offset without colon */
        "2026-11-21T11:19:53.123+24:00",
        "2026-11-21T11:19:53.123+01:60",
        "2026-11-21T11:19:53.123ZZ",
        "2026-11-21T11:19:53.123Z ",
        "26-11-21T11:19:53.123Z",
        "2026-1-21T11:19:53.123Z",
        "abcd-11-21T11:19:53.123Z",
        "2026-11-21T11:19:53.12aZ",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int64_t ms = 42;
        if (td_time_parse(bad[i], &ms) != TD_EINVAL) fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(ms, 42);
    }
    int64_t ms;
    assert_int_equal(td_time_parse(NULL, &ms), TD_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uuid_new_is_valid_v4), cmocka_unit_test(test_uuid_v7_is_time_ordered),
        cmocka_unit_test(test_uuid_v7_named),        cmocka_unit_test(test_uuid_valid_rejects),
        cmocka_unit_test(test_time_format),          cmocka_unit_test(test_time_round_trip),
        cmocka_unit_test(test_time_parse_forms),     cmocka_unit_test(test_time_parse_rejects),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
