/* Deferred responses of the HTTP layer (td_req_defer, tidings/http.h): a
 * handler hands its slow work to another thread and returns; the
 * connection is suspended, holds no HTTP thread, and gets the response
 * the other thread sets. With two HTTP threads and eight slow requests in
 * flight, /healthz still answers at once; the deferred answers carry
 * their status, body and headers and are logged and counted like any
 * other; a client that leaves meanwhile harms nothing; and td_http_stop
 * waits until every deferred request has been answered. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tidings/http.h"
#include "tidings/metrics.h"
#include "tsupport.h"

#define SLOW_MS 1000

static atomic_int finished;

typedef struct work {
    td_deferred_t *d;
    char q[64];
} work_t;

static void *slow_work(void *arg)
{
    work_t *w = arg;
    td_sleep_ms(SLOW_MS);
    td_resp_t *resp = td_deferred_resp(w->d);
    td_req_t *req = td_deferred_req(w->d);
    td_resp_json(resp, 202, json_pack("{s:s, s:s}", "q", w->q, "route", req->route));
    td_resp_header(resp, "Retry-After", "7");
    atomic_fetch_add(&finished, 1);
    td_deferred_done(w->d);
    free(w);
    return NULL;
}

static void get_slow(td_req_t *req, td_resp_t *resp)
{
    (void)resp;
    work_t *w = td_calloc(1, sizeof(*w));
    const char *q = td_req_query(req, "q");
    snprintf(w->q, sizeof(w->q), "%s", q ? q : "");
    w->d = td_req_defer(req);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_work, w), 0);
    pthread_detach(t);
}

static const td_route_t routes[] = {
    {"GET", "/slow", get_slow, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0}};

static td_http_t *start(void)
{
    char err[256];
    td_http_opts_t opts = {
        .service = "deferred-test", .routes = routes, .route_cnt = 1, .threads = 2};
    td_http_t *http = td_http_start(&opts, err, sizeof(err));
    if (!http) fail_msg("td_http_start: %s", err);
    return http;
}

typedef struct client {
    char url[128];
    ts_resp_t resp;
    pthread_t t;
} client_t;

static void *client_main(void *arg)
{
    client_t *c = arg;
    c->resp = ts_http("GET", c->url, NULL, NULL, NULL, NULL);
    return NULL;
}

static void test_slow_requests_hold_no_thread(void **state)
{
    (void)state;
    td_http_t *http = start();
    int port = td_http_port(http);
    enum { N = 8 };
    client_t c[N];
    int64_t t0 = td_mono_ms();
    for (int i = 0; i < N; i++) {
        snprintf(c[i].url, sizeof(c[i].url), "http://127.0.0.1:%d/slow?q=%d", port, i);
        assert_int_equal(pthread_create(&c[i].t, NULL, client_main, &c[i]), 0);
    }
    td_sleep_ms(200); /* all eight are in their handlers' hands now */
    char health[64];
    snprintf(health, sizeof(health), "http://127.0.0.1:%d/healthz", port);
    for (int i = 0; i < 5; i++) {
        int64_t h0 = td_mono_ms();
        ts_resp_t r = ts_http("GET", health, NULL, NULL, NULL, NULL);
        int64_t took = td_mono_ms() - h0;
        assert_int_equal(r.status, 200);
        ts_resp_free(&r);
        /* Blocking handlers would hold both threads for a second. */
        if (took > SLOW_MS / 2) fail_msg("/healthz took %lld ms", (long long)took);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(c[i].t, NULL);
        assert_int_equal(c[i].resp.status, 202);
        char want[32];
        snprintf(want, sizeof(want), "%d", i);
        assert_string_equal(json_string_value(json_object_get(c[i].resp.json, "q")), want);
        assert_string_equal(json_string_value(json_object_get(c[i].resp.json, "route")), "/slow");
        assert_non_null(strstr(c[i].resp.headers, "Retry-After: 7"));
        ts_resp_free(&c[i].resp);
    }
    /* They ran side by side, not one after the other on two threads. */
    assert_true(td_mono_ms() - t0 < (N / 2) * SLOW_MS);
    char labels[256];
    td_metric_labels(labels, sizeof(labels), "method", "GET", "route", "/slow", "status", "202",
                     NULL);
    /* Counted when libmicrohttpd reports the request done, which may be
     * a moment after the client has read the answer. */
    int64_t deadline = td_mono_ms() + 5000;
    while (td_metric_value("tidings_http_requests_total", labels) < N && td_mono_ms() < deadline)
        td_sleep_ms(5);
    assert_true(td_metric_value("tidings_http_requests_total", labels) >= N);
    td_http_stop(http);
}

static void test_client_leaves_and_stop_waits(void **state)
{
    (void)state;
    td_http_t *http = start();
    int port = td_http_port(http);
    atomic_store(&finished, 0);

    /* A client that sends its request and hangs up at once. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    static const char req[] = "GET /slow?q=gone HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_int_equal(write(fd, req, sizeof(req) - 1), (ssize_t)(sizeof(req) - 1));
    td_sleep_ms(100);
    close(fd);

    /* One that waits, while the server is told to stop. */
    client_t c;
    snprintf(c.url, sizeof(c.url), "http://127.0.0.1:%d/slow?q=kept", port);
    assert_int_equal(pthread_create(&c.t, NULL, client_main, &c), 0);
    td_sleep_ms(200);
    td_http_stop(http);
    /* Both deferred answers were made before the stop returned. */
    assert_int_equal(atomic_load(&finished), 2);
    pthread_join(c.t, NULL);
    assert_int_equal(c.resp.status, 202);
    assert_string_equal(json_string_value(json_object_get(c.resp.json, "q")), "kept");
    ts_resp_free(&c.resp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slow_requests_hold_no_thread),
        cmocka_unit_test(test_client_leaves_and_stop_waits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
