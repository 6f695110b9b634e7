/* The metrics registry: exact Prometheus text for counters, gauges,
 * callback gauges and histograms, label escaping, unregistering, and
 * concurrent updates losing nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/metrics.h"

static int setup(void **state)
{
    (void)state;
    td_metrics_reset();
    return 0;
}

static void test_counter_and_gauge_render(void **state)
{
    (void)state;
    td_metric_describe("tidings_test_total", "counter", "Things counted.");
    td_metric_inc("tidings_test_total", "kind=\"a\"");
    td_metric_inc("tidings_test_total", "kind=\"a\"");
    td_metric_add("tidings_test_total", "kind=\"b\"", 5);
    td_metric_set("tidings_test_gauge", NULL, 2.5);
    td_metric_set("tidings_test_gauge", NULL, -0.125);

    char *text = td_metrics_render();
    const char *want = "# HELP tidings_test_gauge tidings metric tidings_test_gauge\n"
                       "# TYPE tidings_test_gauge gauge\n"
                       "tidings_test_gauge -0.125\n"
                       "# HELP tidings_test_total Things counted.\n"
                       "# TYPE tidings_test_total counter\n"
                       "tidings_test_total{kind=\"a\"} 2\n"
                       "tidings_test_total{kind=\"b\"} 5\n";
    assert_string_equal(text, want);
    free(text);

    assert_true(td_metric_value("tidings_test_total", "kind=\"a\"") == 2);
    assert_true(td_metric_value("tidings_test_gauge", NULL) == -0.125);
    assert_true(td_metric_value("tidings_test_gauge", "") == -0.125);
    assert_true(td_metric_value("absent", NULL) == 0);
}

static void test_value_formatting(void **state)
{
    (void)state;
    td_metric_set("g", "k=\"1\"", 0.1);
    td_metric_set("g", "k=\"2\"", 1e20);
    td_metric_set("g", "k=\"3\"", 1.0 / 0.0);
    td_metric_set("g", "k=\"4\"", 123456789);
    char *text = td_metrics_render();
    assert_non_null(strstr(text, "g{k=\"1\"} 0.1\n"));
    assert_non_null(strstr(text, "g{k=\"2\"} 1e+20\n"));
    assert_non_null(strstr(text, "g{k=\"3\"} +Inf\n"));
    assert_non_null(strstr(text, "g{k=\"4\"} 123456789\n"));
    free(text);
}

static void test_histogram_render(void **state)
{
    (void)state;
    td_metric_describe("lat_seconds", "histogram", "Latency.");
    td_metric_observe("lat_seconds", "route=\"/x\"", 0.0004);
    td_metric_observe("lat_seconds", "route=\"/x\"", 0.003);
    td_metric_observe("lat_seconds", "route=\"/x\"", 0.003);
    td_metric_observe("lat_seconds", "route=\"/x\"", 0.25); /* on a bound: le is inclusive */
    td_metric_observe("lat_seconds", "route=\"/x\"", 42);

    char *text = td_metrics_render();
    const char *want = "# HELP lat_seconds Latency.\n"
                       "# TYPE lat_seconds histogram\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"0.0005\"} 1\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"0.001\"} 1\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"0.0025\"} 1\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"0.005\"} 3\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"0.01\"} 3\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"0.025\"} 3\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"0.05\"} 3\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"0.1\"} 3\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"0.25\"} 4\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"0.5\"} 4\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"1\"} 4\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"2.5\"} 4\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"5\"} 4\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"10\"} 4\n"
                       "lat_seconds_bucket{route=\"/x\",le=\"+Inf\"} 5\n"
                       "lat_seconds_sum{route=\"/x\"} 42.2564\n"
                       "lat_seconds_count{route=\"/x\"} 5\n";
    assert_string_equal(text, want);
    free(text);

    /* Without labels there is no leading comma. */
    td_metrics_reset();
    td_metric_observe("bare_seconds", NULL, 2);
    text = td_metrics_render();
    assert_non_null(strstr(text, "bare_seconds_bucket{le=\"1\"} 0\n"));
    assert_non_null(strstr(text, "bare_seconds_bucket{le=\"2.5\"} 1\n"));
    assert_non_null(strstr(text, "bare_seconds_sum 2\n"));
    assert_non_null(strstr(text, "bare_seconds_count 1\n"));
    assert_non_null(strstr(text, "# TYPE bare_seconds histogram\n"));
    free(text);
}

static void test_label_escaping(void **state)
{
    (void)state;
    char buf[128];
    assert_string_equal(td_metric_labels(buf, sizeof(buf), "a", "x", "b", "y", NULL),
                        "a=\"x\",b=\"y\"");
    assert_string_equal(td_metric_labels(buf, sizeof(buf), "v", "q\"uo\\te\nnl", NULL),
                        "v=\"q\\\"uo\\\\te\\nnl\"");
    assert_string_equal(td_metric_labels(buf, sizeof(buf), NULL), "");
    assert_string_equal(td_metric_labels(buf, sizeof(buf), "n", NULL, NULL), "n=\"\"");

    /* A buffer too small keeps only whole pairs. */
    char small[12];
    assert_string_equal(td_metric_labels(small, sizeof(small), "a", "1", "bb", "2222", NULL),
                        "a=\"1\"");

    /* Escaped labels render as given. */
    td_metric_labels(buf, sizeof(buf), "path", "/a\"b", NULL);
    td_metric_inc("esc_total", buf);
    char *text = td_metrics_render();
    assert_non_null(strstr(text, "esc_total{path=\"/a\\\"b\"} 1\n"));
    free(text);
}

static double read_counter(void *arg)
{
    return (double)*(int *)arg;
}

static void test_gauge_fn_and_unregister(void **state)
{
    (void)state;
    int a = 7, b = 9;
    td_metric_gauge_fn("backlog", "q=\"a\"", read_counter, &a);
    td_metric_gauge_fn("backlog", "q=\"b\"", read_counter, &b);
    td_metric_describe("backlog", "gauge", "Rows waiting.\nSecond line \\ here");

    char *text = td_metrics_render();
    assert_string_equal(text, "# HELP backlog Rows waiting.\\nSecond line \\\\ here\n"
                              "# TYPE backlog gauge\n"
                              "backlog{q=\"a\"} 7\n"
                              "backlog{q=\"b\"} 9\n");
    free(text);

    a = 8; /* read at scrape time, not at registration */
    assert_true(td_metric_value("backlog", "q=\"a\"") == 8);
    text = td_metrics_render();
    assert_non_null(strstr(text, "backlog{q=\"a\"} 8\n"));
    free(text);

    td_metric_unregister(&a);
    text = td_metrics_render();
    assert_null(strstr(text, "q=\"a\""));
    assert_non_null(strstr(text, "backlog{q=\"b\"} 9\n"));
    free(text);
    assert_true(td_metric_value("backlog", "q=\"a\"") == 0);

    td_metric_unregister(&b);
    text = td_metrics_render();
    assert_string_equal(text, "");
    free(text);
}

/* A callback that itself updates a metric must not deadlock the scrape. */
static double reentrant(void *arg)
{
    (void)arg;
    td_metric_inc("scrapes_total", NULL);
    return 1;
}

static void test_callback_may_update_metrics(void **state)
{
    (void)state;
    int tag = 0;
    td_metric_gauge_fn("up", NULL, reentrant, &tag);
    char *text = td_metrics_render();
    assert_non_null(strstr(text, "up 1\n"));
    free(text);
    assert_true(td_metric_value("scrapes_total", NULL) == 1);
    td_metric_unregister(&tag);
}

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 20000; i++) {
        td_metric_inc("hits_total", "t=\"x\"");
        td_metric_observe("hit_seconds", NULL, 0.001);
    }
    return NULL;
}

static void test_concurrent_updates(void **state)
{
    (void)state;
    pthread_t th[4];
    for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    assert_true(td_metric_value("hits_total", "t=\"x\"") == 80000);
    char *text = td_metrics_render();
    assert_non_null(strstr(text, "hit_seconds_count 80000\n"));
    assert_non_null(strstr(text, "hit_seconds_bucket{le=\"0.001\"} 80000\n"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_counter_and_gauge_render, setup),
        cmocka_unit_test_setup(test_value_formatting, setup),
        cmocka_unit_test_setup(test_histogram_render, setup),
        cmocka_unit_test_setup(test_label_escaping, setup),
        cmocka_unit_test_setup(test_gauge_fn_and_unregister, setup),
        cmocka_unit_test_setup(test_callback_may_update_metrics, setup),
        cmocka_unit_test_setup(test_concurrent_updates, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
