/* The delivery queue against a stand-in push service and webhook receiver
 * on loopback (push_receiver.py), which checks every request with its own
 * crypto: a Web Push arrives decryptable with a valid VAPID token for its
 * origin; a webhook arrives with a signature the receiver verifies (and a
 * tampered body fails); 410 runs the gone callback and drops that
 * subscription's queue; 429 waits for Retry-After (seconds and HTTP-date);
 * 500 then 201 gives exactly one success; a receiver that hangs times out
 * and is retried; a refused connection is retried until the attempts run
 * out; a 4xx is a permanent failure dead-lettered through the outbox; and
 * a rolled-back enqueue sends nothing. */
#include "tdelivery.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#define NAME "0060-delivery-outcomes"

static int setup(void **state)
{
    dt_env_t *env = td_calloc(1, sizeof(*env));
    dt_setup(env, NAME, 5, false);
    *state = env;
    return 0;
}

static int teardown(void **state)
{
    dt_teardown(*state);
    free(*state);
    return 0;
}

static int64_t dlt_rows(dt_env_t *env)
{
    return dt_sql_int(env,
                      "SELECT count(*) FROM td_outbox WHERE topic = 'tidings.notifications.DLT'");
}

static void test_webpush_success(void **state)
{
    dt_env_t *env = *state;
    json_t *n = dt_notification("Order confirmed");
    char *payload = td_json_dumps(n);
    dt_start(env, 2, 5000);
    dt_push(env, "sub-1", "/ok/push-1", n);
    assert_true(dt_wait_drained(env, 10000));

    json_t *reqs = dt_requests(&env->rcv, "/ok/push-1");
    assert_int_equal(json_array_size(reqs), 1);
    json_t *r = json_array_get(reqs, 0);
    assert_int_equal(dt_status(reqs, 0), 201);
    const char *plain = json_string_value(json_object_get(r, "plaintext"));
    if (!plain) fprintf(stderr, "%s\n", json_dumps(r, 0));
    assert_non_null(plain);
    assert_string_equal(plain, payload);
    if (!json_is_true(json_object_get(r, "vapid_ok"))) fprintf(stderr, "%s\n", json_dumps(r, 0));
    assert_true(json_is_true(json_object_get(r, "vapid_ok")));
    assert_string_equal(dt_header(r, "content-encoding"), "aes128gcm");
    assert_string_equal(dt_header(r, "content-type"), "application/octet-stream");
    assert_string_equal(dt_header(r, "ttl"), "86400");
    assert_string_equal(dt_header(r, "urgency"), "normal");
    assert_true(strncmp(dt_header(r, "authorization"), "vapid t=", 8) == 0);

    assert_true(dt_metric_is("webpush", "success", 1.0));
    assert_int_equal(td_delivery_count(env->db, "failed"), 0);
    assert_int_equal(dlt_rows(env), 0);
    json_decref(reqs);
    free(payload);
    json_decref(n);
}

static void test_webhook_success(void **state)
{
    dt_env_t *env = *state;
    json_t *n = dt_notification("Order received");
    char *body = td_json_dumps(n);
    int64_t t0 = td_now_ms() / 1000;
    dt_start(env, 2, 5000);
    dt_hook(env, "hook-1", "/ok/hook-1", n);
    assert_true(dt_wait_drained(env, 10000));
    int64_t t1 = td_now_ms() / 1000;

    json_t *reqs = dt_requests(&env->rcv, "/ok/hook-1");
    assert_int_equal(json_array_size(reqs), 1);
    json_t *r = json_array_get(reqs, 0);
    assert_int_equal(dt_status(reqs, 0), 201);
    /* The receiver's own HMAC check, and the same with a changed body. */
    assert_true(json_is_true(json_object_get(r, "sig_ok")));
    assert_true(json_is_false(json_object_get(r, "sig_tampered_ok")));
    assert_string_equal(dt_header(r, "x-tidings-event-id"),
                        json_string_value(json_object_get(n, "id")));
    assert_string_equal(dt_header(r, "content-type"), "application/json; charset=utf-8");
    const char *ts = dt_header(r, "x-tidings-timestamp");
    int64_t t = strtoll(ts, NULL, 10);
    assert_true(t >= t0 && t <= t1);

    size_t len = 0;
    unsigned char *got = td_b64url_decode(json_string_value(json_object_get(r, "body_b64")), &len);
    assert_int_equal(len, strlen(body));
    assert_memory_equal(got, body, len);
    /* Our verify agrees with the receiver's, and refuses a tampered body. */
    const char *sig = dt_header(r, "x-tidings-signature");
    assert_int_equal(td_webhook_verify(DT_SECRET, strlen(DT_SECRET), ts, got, len, sig, t1,
                                       TD_WEBHOOK_TOLERANCE_S),
                     0);
    got[len / 2] ^= 1;
    assert_int_equal(td_webhook_verify(DT_SECRET, strlen(DT_SECRET), ts, got, len, sig, t1,
                                       TD_WEBHOOK_TOLERANCE_S),
                     TD_EINVAL);

    assert_true(dt_metric_is("webhook", "success", 1.0));
    free(got);
    json_decref(reqs);
    free(body);
    json_decref(n);
}

static void test_gone(void **state)
{
    dt_env_t *env = *state;
    json_t *n = dt_notification("Price drop: Lamp");
    /* Three messages queued for a subscription the push service no longer
     * has, one for a live one and a webhook. One worker, so the order is
     * the queue's. */
    for (int i = 0; i < 3; i++) dt_push(env, "sub-gone", "/status/410/gone", n);
    dt_push(env, "sub-alive", "/ok/alive", n);
    dt_hook(env, "sub-gone", "/ok/hook-same-id", n); /* another channel: not affected */
    dt_start(env, 1, 5000);
    assert_true(dt_wait_drained(env, 10000));

    json_t *reqs = dt_requests(&env->rcv, "/status/410/gone");
    assert_int_equal(json_array_size(reqs), 1); /* the other two were dropped unsent */
    json_decref(reqs);
    reqs = dt_requests(&env->rcv, "/ok/");
    assert_int_equal(json_array_size(reqs), 2);
    json_decref(reqs);

    assert_int_equal(dt_sql_int(env, "SELECT count(*) FROM gone_log"), 1);
    assert_int_equal(dt_sql_int(env, "SELECT count(*) FROM gone_log WHERE channel = 'webpush'"
                                     " AND target_id = 'sub-gone'"),
                     1);
    assert_int_equal(td_delivery_count(env->db, "failed"), 0);
    assert_int_equal(dlt_rows(env), 0);
    assert_true(dt_metric_is("webpush", "gone", 1.0));
    assert_true(dt_metric_is("webpush", "success", 1.0));
    json_decref(n);
}

static void check_retry_after(dt_env_t *env, const char *path)
{
    json_t *n = dt_notification("Back in stock: Lamp");
    dt_start(env, 2, 5000);
    dt_push(env, "sub-ra", path, n);
    assert_true(dt_wait_drained(env, 15000));
    json_t *reqs = dt_requests(&env->rcv, path);
    assert_int_equal(json_array_size(reqs), 2);
    assert_int_equal(dt_status(reqs, 0), 429);
    assert_int_equal(dt_status(reqs, 1), 201);
    /* The backoff alone would have retried after about 20 ms. */
    int64_t gap = dt_t_ms(reqs, 1) - dt_t_ms(reqs, 0);
    assert_true(gap >= 990);
    assert_true(dt_metric_is("webpush", "retry", 1.0));
    assert_true(dt_metric_is("webpush", "success", 1.0));
    json_decref(reqs);
    json_decref(n);
}

static void test_retry_after_seconds(void **state)
{
    check_retry_after(*state, "/retry-after/1/ra");
}

static void test_retry_after_date(void **state)
{
    check_retry_after(*state, "/retry-after-date/1/rd");
}

/* The status of n's delivery on channel (td_delivery_status), borrowed
 * from *all, which the caller frees. */
static const json_t *status_of(dt_env_t *env, const json_t *n, const char *channel, json_t **all)
{
    td_db_lock(env->db);
    *all = td_delivery_status(env->db, json_string_value(json_object_get(n, "id")));
    td_db_unlock(env->db);
    size_t i;
    json_t *d;
    json_array_foreach(*all, i, d)
    {
        if (!strcmp(json_string_value(json_object_get(d, "channel")), channel)) return d;
    }
    fail_msg("no %s delivery in the status", channel);
    return NULL;
}

static void assert_status(const json_t *d, const char *status, int attempts, const char *error)
{
    assert_string_equal(json_string_value(json_object_get(d, "status")), status);
    assert_int_equal(json_integer_value(json_object_get(d, "attempts")), attempts);
    if (error)
        assert_string_equal(json_string_value(json_object_get(d, "lastError")), error);
    else
        assert_true(json_is_null(json_object_get(d, "lastError")));
    assert_non_null(json_string_value(json_object_get(d, "updatedAt")));
}

static void test_500_then_success(void **state)
{
    dt_env_t *env = *state;
    json_t *n = dt_notification("Order confirmed");
    dt_start(env, 2, 5000);
    dt_push(env, "sub-f", "/flaky/2/push", n);
    dt_hook(env, "hook-f", "/flaky/1/hook", n);
    assert_true(dt_wait_drained(env, 15000));

    json_t *p = dt_requests(&env->rcv, "/flaky/2/push");
    assert_int_equal(json_array_size(p), 3);
    assert_int_equal(dt_status(p, 0), 500);
    assert_int_equal(dt_status(p, 1), 500);
    assert_int_equal(dt_status(p, 2), 201);
    /* Every try carries the same encrypted payload. */
    const char *b0 = json_string_value(json_object_get(json_array_get(p, 0), "body_b64"));
    for (size_t i = 1; i < 3; i++)
        assert_string_equal(json_string_value(json_object_get(json_array_get(p, i), "body_b64")),
                            b0);

    json_t *h = dt_requests(&env->rcv, "/flaky/1/hook");
    assert_int_equal(json_array_size(h), 2);
    assert_int_equal(dt_status(h, 0), 500);
    assert_int_equal(dt_status(h, 1), 201);
    for (size_t i = 0; i < 2; i++) {
        json_t *r = json_array_get(h, i);
        assert_string_equal(dt_header(r, "x-tidings-event-id"),
                            json_string_value(json_object_get(n, "id")));
        assert_true(json_is_true(json_object_get(r, "sig_ok")));
    }

    assert_true(dt_metric_is("webpush", "retry", 2.0));
    assert_true(dt_metric_is("webpush", "success", 1.0));
    assert_true(dt_metric_is("webhook", "retry", 1.0));
    assert_true(dt_metric_is("webhook", "success", 1.0));
    assert_int_equal(td_delivery_count(env->db, "failed"), 0);
    assert_int_equal(dlt_rows(env), 0);

    /* The status outlives the queue row: sent, after how many tries; the
     * push names its endpoint's host only (the path is a capability). */
    json_t *all;
    const json_t *ps = status_of(env, n, TD_DELIVERY_WEBPUSH, &all);
    assert_status(ps, "sent", 3, NULL);
    assert_string_equal(json_string_value(json_object_get(ps, "target")), "127.0.0.1");
    json_decref(all);
    const json_t *hs = status_of(env, n, TD_DELIVERY_WEBHOOK, &all);
    assert_status(hs, "sent", 2, NULL);
    assert_string_equal(json_string_value(json_object_get(hs, "target")), "hook-f");
    assert_int_equal(json_array_size(all), 2);
    json_decref(all);
    json_decref(h);
    json_decref(p);
    json_decref(n);
}

static void test_hang_times_out_and_retries(void **state)
{
    dt_env_t *env = *state;
    json_t *n = dt_notification("Order confirmed");
    dt_start(env, 2, 1000);
    dt_hook(env, "hook-h", "/hang/4000/hook", n);
    assert_true(dt_wait_drained(env, 20000));
    json_t *reqs = dt_requests(&env->rcv, "/hang/4000/hook");
    assert_int_equal(json_array_size(reqs), 2);
    assert_int_equal(dt_status(reqs, 0), -1); /* never answered */
    assert_int_equal(dt_status(reqs, 1), 201);
    /* Not before the timeout (less the time the receiver took to log the
     * first request, which a loaded machine stretches). */
    assert_true(dt_t_ms(reqs, 1) - dt_t_ms(reqs, 0) >= 500);
    assert_true(dt_metric_is("webhook", "retry", 1.0));
    assert_true(dt_metric_is("webhook", "success", 1.0));
    json_decref(reqs);
    json_decref(n);
}

static bool one_failed(void *arg)
{
    return td_delivery_count(((dt_env_t *)arg)->db, "failed") == 1;
}

static void test_connection_refused(void **state)
{
    dt_env_t *env = *state;
    /* A port nobody listens on. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    close(fd);
    char *url = td_asprintf("http://127.0.0.1:%d/nobody", ntohs(a.sin_port));

    json_t *n = dt_notification("Order confirmed");
    char *body = td_json_dumps(n);
    td_record_t *origin = dt_origin(env, n);
    char err[256];
    dt_start(env, 2, 2000);
    assert_int_equal(td_db_begin(env->db), 0);
    assert_int_equal(td_delivery_enqueue_webhook(env->db, DT_USER, "hook-c", url, DT_SECRET,
                                                 json_string_value(json_object_get(n, "id")), body,
                                                 strlen(body), origin, err, sizeof(err)),
                     0);
    assert_int_equal(td_db_commit(env->db), 0);
    assert_true(ts_wait_until(one_failed, env, 20000));

    assert_int_equal(dt_sql_int(env, "SELECT attempts FROM td_delivery"), 5);
    assert_int_equal(
        dt_sql_int(env, "SELECT count(*) FROM td_delivery WHERE last_error = 'connect_refused'"),
        1);
    assert_int_equal(td_delivery_count(env->db, "pending"), 0);
    assert_int_equal(dlt_rows(env), 1);
    assert_true(dt_metric_is("webhook", "retry", 4.0));
    assert_true(dt_metric_is("webhook", "failed", 1.0));
    td_record_free(origin);
    free(body);
    json_decref(n);
    free(url);
}

static bool two_failed(void *arg)
{
    return td_delivery_count(((dt_env_t *)arg)->db, "failed") == 2;
}

static void test_permanent_failure(void **state)
{
    dt_env_t *env = *state;
    json_t *n = dt_notification("Order rejected (out_of_stock)");
    dt_start(env, 2, 5000);
    dt_push(env, "sub-p", "/status/400/push", n);
    dt_hook(env, "hook-p", "/status/404/hook", n); /* a webhook 404 is not "gone" */
    assert_true(ts_wait_until(two_failed, env, 10000));

    json_t *reqs = dt_requests(&env->rcv, "/status/");
    assert_int_equal(json_array_size(reqs), 2); /* no retries */
    json_decref(reqs);
    assert_int_equal(dt_sql_int(env, "SELECT count(*) FROM gone_log"), 0);
    assert_int_equal(td_delivery_count(env->db, "pending"), 0);
    assert_int_equal(dlt_rows(env), 2);

    /* The dead letter keeps the NotificationCreatedEvent record and says
     * why, as SPEC section 3 asks of every .DLT record. */
    td_db_lock(env->db);
    sqlite3_stmt *st = td_db_prepare(env->db, "SELECT key, value, headers FROM td_outbox"
                                              " ORDER BY id");
    int seen = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        td_record_t *rec = td_record_new("x");
        assert_int_equal(
            td_headers_decode(rec, sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2)),
            0);
        assert_memory_equal(sqlite3_column_blob(st, 0), DT_USER, strlen(DT_USER));
        json_t *v =
            json_loadb(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1), 0, NULL);
        assert_true(json_equal(v, n));
        json_decref(v);
        assert_string_equal(td_record_header_str(rec, "ce_type"), "NotificationCreatedEvent");
        assert_string_equal(td_record_header_str(rec, "tidings_dlt_original_topic"),
                            "tidings.notifications");
        assert_non_null(td_record_header_str(rec, "tidings_dlt_original_partition"));
        assert_non_null(td_record_header_str(rec, "tidings_dlt_original_offset"));
        const char *reason = td_record_header_str(rec, "tidings_dlt_reason");
        const char *channel = td_record_header_str(rec, "tidings_dlt_channel");
        assert_non_null(strstr(reason, "after 1 attempt:"));
        /* The status, never what the endpoint said. */
        assert_non_null(strstr(reason, !strcmp(channel, "webpush") ? ": http_400" : ": http_404"));
        assert_null(strstr(reason, "stand-in"));
        td_record_free(rec);
        seen++;
    }
    td_db_done(st);
    td_db_unlock(env->db);
    assert_int_equal(seen, 2);
    assert_true(dt_metric_is("webpush", "failed", 1.0));
    assert_true(dt_metric_is("webhook", "failed", 1.0));
    json_t *all;
    assert_status(status_of(env, n, TD_DELIVERY_WEBPUSH, &all), "failed", 1, "http_400");
    json_decref(all);
    assert_status(status_of(env, n, TD_DELIVERY_WEBHOOK, &all), "failed", 1, "http_404");
    json_decref(all);
    json_decref(n);
}

static void test_rollback_and_bad_input(void **state)
{
    dt_env_t *env = *state;
    json_t *n = dt_notification("Welcome, Ada");
    dt_start(env, 2, 5000);

    /* Enqueued in a transaction that rolls back: never sent. */
    char *body = td_json_dumps(n);
    td_record_t *origin = dt_origin(env, n);
    char *url = td_asprintf("%s/ok/rolled-back", env->rcv.base);
    char err[256];
    assert_int_equal(td_db_begin(env->db), 0);
    assert_int_equal(td_delivery_enqueue_webhook(env->db, DT_USER, "hook-r", url, DT_SECRET, "ev-1",
                                                 body, strlen(body), origin, err, sizeof(err)),
                     0);
    td_db_rollback(env->db);
    /* A committed one after it is; once it has arrived, the rolled-back
     * one would have too. */
    dt_hook(env, "hook-r", "/ok/committed", n);
    assert_true(dt_wait_drained(env, 10000));
    json_t *reqs = dt_requests(&env->rcv, "/ok/");
    assert_int_equal(json_array_size(reqs), 1);
    assert_string_equal(json_string_value(json_object_get(json_array_get(reqs, 0), "path")),
                        "/ok/committed");
    json_decref(reqs);

    /* Malformed messages are refused with a reason. */
    const char *inject[] = {"X-A: b\r\nX-Evil: 1", NULL};
    const char *noname[] = {": v", NULL};
    td_delivery_msg_t bad[] = {
        {.channel = "sms", .target_id = "t", .event_id = "e", .url = url, .origin = origin},
        {.channel = TD_DELIVERY_WEBHOOK,
         .target_id = "t",
         .event_id = "e",
         .url = url,
         .secret = "s",
         .origin = NULL},
        {.channel = TD_DELIVERY_WEBHOOK,
         .target_id = "t",
         .event_id = "e",
         .url = url,
         .origin = origin}, /* no secret */
        {.channel = TD_DELIVERY_WEBPUSH,
         .target_id = "",
         .event_id = "e",
         .url = url,
         .origin = origin},
        {.channel = TD_DELIVERY_WEBPUSH,
         .target_id = "t",
         .event_id = "e",
         .url = url,
         .headers = inject,
         .origin = origin},
        {.channel = TD_DELIVERY_WEBPUSH,
         .target_id = "t",
         .event_id = "e",
         .url = url,
         .headers = noname,
         .origin = origin},
    };
    assert_int_equal(td_db_begin(env->db), 0);
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        assert_int_equal(td_delivery_enqueue(env->db, &bad[i], err, sizeof(err)), TD_EINVAL);
        assert_true(err[0] != '\0');
    }
    /* Bad subscription keys and an oversized payload. */
    assert_int_equal(td_delivery_enqueue_webpush(env->db, DT_USER, "s", url, "AAAA", env->auth, "e",
                                                 "x", 1, NULL, 0, origin, err, sizeof(err)),
                     TD_EINVAL);
    char *big = td_calloc(1, TD_WEBPUSH_MAX_PAYLOAD + 1);
    assert_int_equal(td_delivery_enqueue_webpush(env->db, DT_USER, "s", url, env->p256dh, env->auth,
                                                 "e", big, TD_WEBPUSH_MAX_PAYLOAD + 1, NULL, 0,
                                                 origin, err, sizeof(err)),
                     TD_EINVAL);
    free(big);
    /* Hints that cannot be headers: a Topic outside base64url or too long,
     * an unknown Urgency. */
    static const td_webpush_hints_t bad_hints[] = {
        {"order:1", NULL, 0}, {"abcdefghijklmnopqrstuvwxyz0123456", NULL, 0}, {NULL, "urgent", 0}};
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad_hints); i++)
        assert_int_equal(td_delivery_enqueue_webpush(env->db, DT_USER, "s", url, env->p256dh,
                                                     env->auth, "e", "x", 1, &bad_hints[i], 0,
                                                     origin, err, sizeof(err)),
                         TD_EINVAL);
    td_db_rollback(env->db);
    assert_int_equal(dt_sql_int(env, "SELECT count(*) FROM td_delivery"), 0);

    /* cancel drops a target's pending rows. */
    dt_stop(env); /* so nothing is sent meanwhile */
    assert_int_equal(td_db_begin(env->db), 0);
    td_delivery_msg_t later = {.channel = TD_DELIVERY_WEBHOOK,
                               .target_id = "hook-z",
                               .event_id = "e",
                               .url = url,
                               .secret = "s",
                               .origin = origin};
    assert_int_equal(td_delivery_enqueue(env->db, &later, err, sizeof(err)), 0);
    assert_int_equal(td_delivery_enqueue(env->db, &later, err, sizeof(err)), 0);
    assert_int_equal(td_delivery_cancel(env->db, TD_DELIVERY_WEBHOOK, "hook-z"), 2);
    assert_int_equal(td_db_commit(env->db), 0);
    assert_int_equal(td_delivery_count(env->db, "pending"), 0);

    free(url);
    td_record_free(origin);
    free(body);
    json_decref(n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_webpush_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_webhook_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_seconds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_after_date, setup, teardown),
        cmocka_unit_test_setup_teardown(test_500_then_success, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hang_times_out_and_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_permanent_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_and_bad_input, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
