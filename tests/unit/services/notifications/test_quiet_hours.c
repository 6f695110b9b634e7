/* Quiet hours and the zone arithmetic under them, at fixed instants: a
 * window inside one day and one across midnight, both directions of a DST
 * change (a window that spans the night the clocks move, an end the
 * clocks skip, a window in the hour shown twice), zones a quarter of an
 * hour off (Asia/Kathmandu, UTC+5:45) and with DST at a 45-minute offset
 * (Pacific/Chatham, +12:45 / +13:45), and the input that gets 400. The
 * expected instants were worked out with Python's zoneinfo. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "notifications/quiet.h"
#include "tidings/common.h"
#include "tidings/tz.h"

/* A UTC instant "YYYY-MM-DDTHH:MM:SS". */
static time_t utc(const char *s)
{
    struct tm tm = {0};
    assert_int_equal(sscanf(s, "%d-%d-%dT%d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                            &tm.tm_hour, &tm.tm_min, &tm.tm_sec),
                     6);
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return timegm(&tm);
}

static notif_quiet_t quiet(const char *start, const char *end, const char *zone)
{
    notif_quiet_t q;
    char err[256] = "";
    json_t *v = json_pack("{s:s, s:s, s:s}", "start", start, "end", end, "timeZone", zone);
    if (notif_quiet_parse(v, &q, err, sizeof(err)) != 0) fail_msg("%s", err);
    json_decref(v);
    return q;
}

/* notif_quiet_until at now is want (a UTC instant, or NULL: not inside). */
static void until_is(const notif_quiet_t *q, const char *now, const char *want)
{
    int64_t got = notif_quiet_until(q, utc(now));
    if (!want) {
        if (got != 0)
            fail_msg("%s in %s: held until %lld, want not held", now, q->zone, (long long)got);
        return;
    }
    if (got != (int64_t)utc(want))
        fail_msg("%s in %s: held until %lld, want %s (%lld)", now, q->zone, (long long)got, want,
                 (long long)utc(want));
}

static void test_window_across_midnight(void **state)
{
    (void)state;
    notif_quiet_t q = quiet("22:00", "07:00", "Europe/Berlin"); /* CET, UTC+1, in January */
    until_is(&q, "2026-01-15T20:59:59", NULL);                  /* 21:59:59 */
    until_is(&q, "2026-01-15T21:00:00", "2026-01-16T06:00:00"); /* 22:00: starts */
    until_is(&q, "2026-01-15T21:30:00", "2026-01-16T06:00:00"); /* 22:30 */
    until_is(&q, "2026-01-15T23:30:00", "2026-01-16T06:00:00"); /* 00:30 the next day */
    until_is(&q, "2026-01-16T05:59:59", "2026-01-16T06:00:00"); /* 06:59:59 */
    until_is(&q, "2026-01-16T06:00:00", NULL);                  /* 07:00: over */
    until_is(&q, "2026-01-16T12:00:00", NULL);
}

static void test_window_inside_one_day(void **state)
{
    (void)state;
    notif_quiet_t q = quiet("12:30", "14:00", "Europe/Berlin"); /* CEST, UTC+2, in June */
    until_is(&q, "2026-06-10T10:29:00", NULL);
    until_is(&q, "2026-06-10T10:30:00", "2026-06-10T12:00:00");
    until_is(&q, "2026-06-10T11:59:59", "2026-06-10T12:00:00");
    until_is(&q, "2026-06-10T12:00:00", NULL);
    until_is(&q, "2026-06-10T23:00:00", NULL);
}

static void test_spring_forward(void **state)
{
    (void)state;
    /* Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST (01:00 UTC). */
    notif_quiet_t q = quiet("22:00", "07:00", "Europe/Berlin");
    /* 23:00 CET: the night is an hour short, 07:00 CEST is 05:00 UTC. */
    until_is(&q, "2026-03-28T22:00:00", "2026-03-29T05:00:00");
    /* 03:30 CEST, after the jump. */
    until_is(&q, "2026-03-29T01:30:00", "2026-03-29T05:00:00");
    /* An end the clocks skip: 02:30 never shows, the window ends when the
     * clocks jump past it. */
    notif_quiet_t gap = quiet("22:00", "02:30", "Europe/Berlin");
    until_is(&gap, "2026-03-28T22:00:00", "2026-03-29T01:00:00");
    until_is(&gap, "2026-03-29T00:59:59", "2026-03-29T01:00:00"); /* 01:59:59 CET */
    until_is(&gap, "2026-03-29T01:00:00", NULL);                  /* 03:00 CEST */
}

static void test_fall_back(void **state)
{
    (void)state;
    /* Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET (01:00 UTC). */
    notif_quiet_t q = quiet("22:00", "07:00", "Europe/Berlin");
    /* 23:00 CEST: the night is an hour long, 07:00 CET is 06:00 UTC. */
    until_is(&q, "2026-10-24T21:00:00", "2026-10-25T06:00:00");
    /* A window in the hour shown twice: each showing has its own end. */
    notif_quiet_t twice = quiet("02:10", "02:40", "Europe/Berlin");
    until_is(&twice, "2026-10-25T00:20:00", "2026-10-25T00:40:00"); /* 02:20 CEST */
    until_is(&twice, "2026-10-25T00:50:00", NULL);                  /* 02:50 CEST */
    until_is(&twice, "2026-10-25T01:20:00", "2026-10-25T01:40:00"); /* 02:20 CET */
    until_is(&twice, "2026-10-25T01:40:00", NULL);                  /* 02:40 CET */
}

static void test_odd_offsets(void **state)
{
    (void)state;
    notif_quiet_t k = quiet("09:00", "10:00", "Asia/Kathmandu"); /* UTC+5:45 */
    until_is(&k, "2026-06-01T03:14:59", NULL);                   /* 08:59:59 */
    until_is(&k, "2026-06-01T03:30:00", "2026-06-01T04:15:00");  /* 09:15 */
    until_is(&k, "2026-06-01T04:15:00", NULL);                   /* 10:00 */

    notif_quiet_t c = quiet("22:00", "07:00", "Pacific/Chatham");
    /* July: standard time, +12:45. 22:45 -> 07:00 the next day. */
    until_is(&c, "2026-07-01T10:00:00", "2026-07-01T18:15:00");
    /* January: daylight time, +13:45. */
    until_is(&c, "2026-01-10T09:00:00", "2026-01-10T17:15:00");
    until_is(&c, "2026-01-10T08:00:00", NULL); /* 21:45 */
}

static void test_seconds_and_json(void **state)
{
    (void)state;
    notif_quiet_t q = quiet("10:00:05", "10:00:15", "UTC");
    until_is(&q, "2026-05-05T10:00:04", NULL);
    until_is(&q, "2026-05-05T10:00:05", "2026-05-05T10:00:15");
    json_t *made = notif_quiet_json(&q);
    char *s = json_dumps(made, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(made);
    json_t *back = json_loads(s, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(back, "start")), "10:00:05");
    json_decref(back);
    free(s);
    q = quiet("22:00", "07:00", "Europe/Berlin");
    json_t *j = notif_quiet_json(&q);
    s = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(s,
                        "{\"end\":\"07:00\",\"start\":\"22:00\",\"timeZone\":\"Europe/Berlin\"}");
    free(s);
    json_decref(j);
}

static void test_bad_input(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "{\"start\":\"22:00\",\"end\":\"07:00\",\"timeZone\":\"Mars/Olympus_Mons\"}",
        "{\"start\":\"22:00\",\"end\":\"07:00\",\"timeZone\":\"../../etc/passwd\"}",
        "{\"start\":\"22:00\",\"end\":\"07:00\",\"timeZone\":\"/etc/localtime\"}",
        "{\"start\":\"22:00\",\"end\":\"07:00\",\"timeZone\":\"Europe\"}", /* a directory */
        "{\"start\":\"22:00\",\"end\":\"07:00\",\"timeZone\":\"\"}",
        "{\"start\":\"22:00\",\"end\":\"07:00\"}",
        "{\"start\":\"24:00\",\"end\":\"07:00\",\"timeZone\":\"UTC\"}",
        "{\"start\":\"7:00\",\"end\":\"08:00\",\"timeZone\":\"UTC\"}",
        "{\"start\":\"22:60\",\"end\":\"07:00\",\"timeZone\":\"UTC\"}",
        "{\"start\":\"22:00\",\"end\":\"07:00:60\",\"timeZone\":\"UTC\"}",
        "{\"start\":\"22:00 \",\"end\":\"07:00\",\"timeZone\":\"UTC\"}",
        "{\"start\":\"+2:00\",\"end\":\"07:00\",\"timeZone\":\"UTC\"}",
        "{\"start\":\"07:00\",\"end\":\"07:00\",\"timeZone\":\"UTC\"}",
        "{\"start\":2200,\"end\":\"07:00\",\"timeZone\":\"UTC\"}",
        "{\"start\":\"22:00\",\"end\":\"07:00\",\"timeZone\":\"UTC\",\"days\":[1]}",
        "\"22:00-07:00\"",
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++) {
        json_t *v = json_loads(bad[i], JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        notif_quiet_t q;
        char err[256] = "";
        if (notif_quiet_parse(v, &q, err, sizeof(err)) != TD_EINVAL)
            fail_msg("accepted %s", bad[i]);
        assert_true(err[0] != '\0');
        json_decref(v);
    }
    assert_false(td_tz_valid("Europe/Berlin/"));
    assert_true(td_tz_valid("America/Argentina/Buenos_Aires"));
    assert_true(td_tz_valid("Etc/GMT+5"));
}

/* The process's own zone is back after each call. */
static void test_tz_restored(void **state)
{
    (void)state;
    setenv("TZ", "America/New_York", 1);
    tzset();
    struct tm tm;
    assert_int_equal(td_tz_local("Asia/Kathmandu", utc("2026-06-01T00:00:00"), &tm), 0);
    assert_int_equal(tm.tm_hour, 5);
    assert_int_equal(tm.tm_min, 45);
    assert_string_equal(getenv("TZ"), "America/New_York");
    td_tz_localtime(utc("2026-06-01T12:00:00"), &tm);
    assert_int_equal(tm.tm_hour, 8); /* EDT */
    unsetenv("TZ");
    tzset();
    assert_int_equal(td_tz_local("Nowhere/Special", 0, &tm), TD_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_window_across_midnight),
        cmocka_unit_test(test_window_inside_one_day),
        cmocka_unit_test(test_spring_forward),
        cmocka_unit_test(test_fall_back),
        cmocka_unit_test(test_odd_offsets),
        cmocka_unit_test(test_seconds_and_json),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_tz_restored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
