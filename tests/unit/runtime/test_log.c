/* Structured logs: JSON lines with the fixed keys and event fields, proper
 * escaping of hostile messages, the level filter, the text format, and
 * whole lines when many threads log at once. */
#include <fcntl.h>
#include <pthread.h>
#include <regex.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tidings/envelope.h"
#include "tidings/log.h"
#include "tsupport.h"

static char *dir, *path;
static int fd = -1;

static int setup(void **state)
{
    (void)state;
    dir = ts_tmpdir("test_log");
    path = td_asprintf("%s/log", dir);
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    assert_true(fd >= 0);
    td_log_set_fd(fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    td_log_set_fd(2);
    close(fd);
    unlink(path);
    rmdir(dir);
    free(path);
    free(dir);
    return 0;
}

/* Everything logged so far. Caller frees. */
static char *output(void)
{
    char *s = td_read_file(path, NULL);
    assert_non_null(s);
    return s;
}

/* The only line logged so far, parsed. */
static json_t *only_line(void)
{
    char *s = output();
    size_t n = strlen(s);
    assert_true(n > 0);
    assert_int_equal(s[n - 1], '\n');
    assert_null(memchr(s, '\n', n - 1)); /* exactly one line */
    json_error_t err;
    json_t *j = json_loads(s, 0, &err);
    if (!j) fail_msg("not JSON (%s): %s", err.text, s);
    free(s);
    return j;
}

static void test_json_line(void **state)
{
    (void)state;
    td_log_init("orders", TD_LOG_INFO, true);
    td_info("order %s is \"odd\"\n\tsee \\ here", "o-1");
    json_t *j = only_line();
    assert_string_equal(json_string_value(json_object_get(j, "level")), "info");
    assert_string_equal(json_string_value(json_object_get(j, "service")), "orders");
    assert_string_equal(json_string_value(json_object_get(j, "msg")),
                        "order o-1 is \"odd\"\n\tsee \\ here");
    int64_t ms;
    assert_int_equal(td_time_parse(json_string_value(json_object_get(j, "time")), &ms), 0);
    assert_true(ms <= td_now_ms() && ms > td_now_ms() - 60000);
    /* The fixed keys come first, in this order. */
    const char *want[] = {"time", "level", "service", "msg"};
    size_t i = 0;
    const char *key;
    json_t *val;
    json_object_foreach(j, key, val)
    {
        assert_true(i < 4);
        assert_string_equal(key, want[i++]);
    }
    json_decref(j);
}

static void test_level_filter(void **state)
{
    (void)state;
    td_log_init("users", TD_LOG_WARN, true);
    assert_int_equal(td_log_level(), TD_LOG_WARN);
    td_debug("no");
    td_info("no");
    td_log_fields(TD_LOG_INFO, json_pack("{s:i}", "x", 1), "no"); /* freed, not logged */
    char *s = output();
    assert_string_equal(s, "");
    free(s);
    td_error("yes");
    json_t *j = only_line();
    assert_string_equal(json_string_value(json_object_get(j, "level")), "error");
    json_decref(j);

    assert_int_equal(td_log_level_from_name("debug"), TD_LOG_DEBUG);
    assert_int_equal(td_log_level_from_name("info"), TD_LOG_INFO);
    assert_int_equal(td_log_level_from_name("warn"), TD_LOG_WARN);
    assert_int_equal(td_log_level_from_name("error"), TD_LOG_ERROR);
    assert_int_equal(td_log_level_from_name("loud"), -1);
    assert_int_equal(td_log_level_from_name(NULL), -1);
}

static void test_event_fields(void **state)
{
    (void)state;
    td_log_init("payments", TD_LOG_DEBUG, true);
    td_event_t *ev =
        td_event_new("orders", "OrderCreatedEvent", "123e4567-e89b-42d3-a456-426614174000", NULL);
    td_event_set_correlation(ev, "saga-1");
    td_log_event(TD_LOG_DEBUG, ev, "handled %d", 1);
    json_t *j = only_line();
    char trace_id[33];
    td_trace_id_hex(&ev->trace, trace_id);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "handled 1");
    assert_string_equal(json_string_value(json_object_get(j, "level")), "debug");
    assert_string_equal(json_string_value(json_object_get(j, "event_id")), ev->id);
    assert_string_equal(json_string_value(json_object_get(j, "event_type")), "OrderCreatedEvent");
    assert_string_equal(json_string_value(json_object_get(j, "correlation_id")), "saga-1");
    assert_string_equal(json_string_value(json_object_get(j, "trace_id")), trace_id);
    json_decref(j);
    td_event_free(ev);
}

static void test_fields_and_bad_utf8(void **state)
{
    (void)state;
    td_log_init("web", TD_LOG_INFO, true);
    td_log_fields(TD_LOG_WARN,
                  json_pack("{s:s, s:i, s:s}", "path", "/x", "status", 404, "msg", "not me"),
                  "bad header %s", "\xff\xfe\xc0");
    json_t *j = only_line();
    assert_string_equal(json_string_value(json_object_get(j, "msg")),
                        "bad header \xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");
    assert_string_equal(json_string_value(json_object_get(j, "path")), "/x");
    assert_int_equal(json_integer_value(json_object_get(j, "status")), 404);
    json_decref(j);
}

static void test_text_format(void **state)
{
    (void)state;
    td_log_init("orders", TD_LOG_INFO, false);
    td_log_fields(TD_LOG_WARN,
                  json_pack("{s:s, s:i, s:s}", "order", "o-1", "n", 3, "why", "two words"),
                  "stuck");
    char *s = output();
    regex_t re;
    assert_int_equal(regcomp(&re,
                             "^[0-2][0-9]:[0-5][0-9]:[0-5][0-9]\\.[0-9]{3} WARN orders stuck "
                             "order=o-1 n=3 why=\"two words\"\n$",
                             REG_EXTENDED),
                     0);
    if (regexec(&re, s, 0, NULL, 0) != 0) fail_msg("unexpected text line: '%s'", s);
    regfree(&re);
    free(s);
}

static void *spam(void *arg)
{
    long id = (long)arg;
    for (int i = 0; i < 300; i++)
        td_info("thread %ld line %d %s", id, i, "padding padding padding");
    return NULL;
}

static void test_threads_whole_lines(void **state)
{
    (void)state;
    td_log_init("bus", TD_LOG_INFO, true);
    pthread_t th[4];
    for (long i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, spam, (void *)i), 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    char *s = output();
    int lines = 0;
    for (char *line = s, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
        *nl = '\0';
        json_t *j = json_loads(line, 0, NULL);
        if (!j) fail_msg("torn line: %s", line);
        assert_non_null(strstr(json_string_value(json_object_get(j, "msg")), "padding"));
        json_decref(j);
        lines++;
    }
    assert_int_equal(lines, 4 * 300);
    free(s);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_json_line),           T(test_level_filter), T(test_event_fields),
        T(test_fields_and_bad_utf8), T(test_text_format),  T(test_threads_whole_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
