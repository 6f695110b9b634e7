/* W3C traceparent: generation, child spans, formatting, and the strict
 * parsing rules (length, lowercase hex, separators, all-zero ids, version
 * ff, future versions). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "tidings/trace.h"

#define GOOD "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void test_new_and_format(void **state)
{
    (void)state;
    td_trace_t a, b;
    td_trace_new(&a);
    td_trace_new(&b);
    assert_memory_not_equal(a.trace_id, b.trace_id, sizeof(a.trace_id));
    assert_int_equal(a.flags, 0x01);

    char tp[TD_TRACEPARENT_LEN + 1];
    td_trace_format(&a, tp);
    assert_int_equal(strlen(tp), TD_TRACEPARENT_LEN);
    assert_memory_equal(tp, "00-", 3);
    assert_int_equal(strspn(tp + 3, "0123456789abcdef"), 32);

    td_trace_t back;
    char err[128];
    assert_int_equal(td_trace_parse(tp, &back, err, sizeof(err)), 0);
    assert_memory_equal(&back.trace_id, a.trace_id, 16);
    assert_memory_equal(&back.span_id, a.span_id, 8);
    assert_int_equal(back.flags, a.flags);
}

static void test_child_keeps_trace(void **state)
{
    (void)state;
    td_trace_t parent, child;
    td_trace_new(&parent);
    parent.flags = 0x00;
    td_trace_child(&parent, &child);
    assert_memory_equal(child.trace_id, parent.trace_id, 16);
    assert_memory_not_equal(child.span_id, parent.span_id, 8);
    assert_int_equal(child.flags, 0x00);
}

static void test_parse_known_value(void **state)
{
    (void)state;
    td_trace_t t;
    char err[128] = "";
    assert_int_equal(td_trace_parse(GOOD, &t, err, sizeof(err)), 0);
    char hex[33];
    td_trace_id_hex(&t, hex);
    assert_string_equal(hex, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_int_equal(t.span_id[0], 0x00);
    assert_int_equal(t.span_id[7], 0xb7);
    assert_int_equal(t.flags, 0x01);
    char tp[TD_TRACEPARENT_LEN + 1];
    td_trace_format(&t, tp);
    assert_string_equal(tp, GOOD);
}

static void expect_bad(const char *s, const char *why)
{
    td_trace_t t;
    memset(&t, 0x5a, sizeof(t));
    td_trace_t before = t;
    char err[128] = "";
    if (td_trace_parse(s, &t, err, sizeof(err)) != TD_EINVAL) fail_msg("accepted '%s'", s);
    if (!strstr(err, why)) fail_msg("'%s': reason '%s' lacks '%s'", s, err, why);
    assert_memory_equal(&t, &before, sizeof(t)); /* out untouched on failure */
}

static void test_parse_rejects(void **state)
{
    (void)state;
    expect_bad(NULL, "missing");
    expect_bad("", "55 characters");
    expect_bad("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0", "55 characters");
    expect_bad(GOOD "0", "55 characters");
    expect_bad(GOOD "-x", "55 characters");
    /* uppercase hex anywhere */
    expect_bad("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", "trace-id");
    expect_bad("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01", "parent-id");
    expect_bad("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0A", "flags");
    expect_bad("0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version");
    /* non-hex and separators */
    expect_bad("00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", "trace-id");
    expect_bad("00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-<32 hex>");
    expect_bad("00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01", "00-<32 hex>");
    expect_bad("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01", "00-<32 hex>");
    /* wrong field lengths with the right total */
    expect_bad("00-4bf92f3577b34da6a3ce929d0e0e47360-0f067aa0ba902b7-01", "00-<32 hex>");
    /* all-zero ids */
    expect_bad("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "trace-id is all zeros");
    expect_bad("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", "parent-id is all zeros");
    /* version ff is never valid */
    expect_bad("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "version ff");
    /* a future version may only extend with '-' fields */
    expect_bad("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", "trailing");
}

static void test_future_version(void **state)
{
    (void)state;
    td_trace_t t;
    char err[128];
    assert_int_equal(td_trace_parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", &t,
                                    err, sizeof(err)),
                     0);
    assert_int_equal(
        td_trace_parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever", &t, err,
                       sizeof(err)),
        0);
    char hex[33];
    td_trace_id_hex(&t, hex);
    assert_string_equal(hex, "4bf92f3577b34da6a3ce929d0e0e4736");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_and_format),    cmocka_unit_test(test_child_keeps_trace),
        cmocka_unit_test(test_parse_known_value), cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_future_version),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
