/* Fair delivery (SPEC section 5) against the stand-in receiver: a
 * destination (scheme, host, port) never has more than 2 tries in flight,
 * and while its tries hang, deliveries to another destination go at once;
 * a user has at most 1,000 deliveries queued and the next one is not
 * queued (TD_ELIMIT, counted), while other users are not affected; a
 * destination that keeps failing is paused by its circuit breaker
 * (nothing is tried meanwhile and no attempt is used up), probed when the
 * pause ends, and closed again by an answer. The receiver is reached as
 * 127.0.0.1 and as localhost: two destinations on one server. */
#include "tdelivery.h"

#define NAME  "0060-delivery-fairness"
#define OTHER "0b9a8c7d-6e5f-4a3b-9c2d-1e0f9a8b7c6d"

static int setup(void **state)
{
    dt_env_t *env = td_calloc(1, sizeof(*env));
    dt_setup(env, NAME, 100, false);
    *state = env;
    return 0;
}

static int teardown(void **state)
{
    dt_teardown(*state);
    free(*state);
    return 0;
}

/* A webhook of n to base + path for owner, in its own transaction. */
static int hook_at(dt_env_t *env, const char *owner, const char *base, const char *path,
                   const json_t *n)
{
    char err[256];
    char *url = td_asprintf("%s%s", base, path);
    char *body = td_json_dumps(n);
    td_record_t *origin = dt_origin(env, n);
    assert_int_equal(td_db_begin(env->db), 0);
    int rc = td_delivery_enqueue_webhook(env->db, owner, "hook-f", url, DT_SECRET,
                                         json_string_value(json_object_get(n, "id")), body,
                                         strlen(body), origin, err, sizeof(err));
    assert_int_equal(td_db_commit(env->db), 0);
    td_record_free(origin);
    free(body);
    free(url);
    return rc;
}

static size_t received(dt_env_t *env, const char *prefix)
{
    json_t *r = dt_requests(&env->rcv, prefix);
    size_t n = json_array_size(r);
    json_decref(r);
    return n;
}

typedef struct wait_arg {
    dt_env_t *env;
    const char *prefix;
    size_t n;
} wait_arg_t;

static bool received_cond(void *arg)
{
    wait_arg_t *w = arg;
    return received(w->env, w->prefix) >= w->n;
}

static void test_slow_destination_holds_only_its_share(void **state)
{
    dt_env_t *env = *state;
    json_t *n = dt_notification("Order confirmed");
    char local[64];
    snprintf(local, sizeof(local), "http://localhost:%d", env->rcv.port);
    /* Ten deliveries to a destination whose every answer takes 3 s. */
    for (int i = 0; i < 10; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/hang/3000/slow-%d", i);
        assert_int_equal(hook_at(env, DT_USER, env->rcv.base, path, n), 0);
    }
    dt_start(env, 4, 10000);
    wait_arg_t w = {env, "/hang/", 2};
    assert_true(ts_wait_until(received_cond, &w, 10000));

    /* Another user's delivery to another destination goes at once. */
    int64_t t0 = td_mono_ms();
    assert_int_equal(hook_at(env, OTHER, local, "/ok/fast", n), 0);
    wait_arg_t fast = {env, "/ok/fast", 1};
    assert_true(ts_wait_until(received_cond, &fast, 10000));
    int64_t took = td_mono_ms() - t0;
    if (took > 1500) fail_msg("the other destination waited %lld ms", (long long)took);

    /* And the slow one never had more than 2 in flight: within its first
     * answer's 3 s, no third request arrived. */
    json_t *reqs = dt_requests(&env->rcv, "/hang/");
    int64_t first = dt_t_ms(reqs, 0);
    size_t early = 0;
    for (size_t i = 0; i < json_array_size(reqs); i++) early += dt_t_ms(reqs, i) < first + 2500;
    assert_true(early <= 2);
    /* (The fast one may still be in flight while its answer is recorded.) */
    assert_true(dt_sql_int(env, "SELECT count(*) FROM td_delivery WHERE inflight = 1"
                                " AND url LIKE '%/hang/%'") <= 2);
    json_decref(reqs);
    json_decref(n);
}

static void test_user_queue_cap(void **state)
{
    dt_env_t *env = *state;
    json_t *n = dt_notification("Price drop: Lamp");
    char *body = td_json_dumps(n);
    td_record_t *origin = dt_origin(env, n);
    char err[256];
    /* Nothing is sent: the workers are not started. */
    assert_int_equal(td_db_begin(env->db), 0);
    for (int i = 0; i < TD_DELIVERY_USER_QUEUE_MAX; i++)
        assert_int_equal(td_delivery_enqueue_webhook(env->db, DT_USER, "hook-q",
                                                     "https://8.8.8.8/hook", DT_SECRET, "ev", body,
                                                     strlen(body), origin, err, sizeof(err)),
                         0);
    assert_int_equal(td_delivery_enqueue_webhook(env->db, DT_USER, "hook-q", "https://8.8.8.8/hook",
                                                 DT_SECRET, "ev", body, strlen(body), origin, err,
                                                 sizeof(err)),
                     TD_ELIMIT);
    /* Another user, and deliveries that count against nobody, still go. */
    assert_int_equal(td_delivery_enqueue_webhook(env->db, OTHER, "hook-o", "https://8.8.8.8/hook",
                                                 DT_SECRET, "ev", body, strlen(body), origin, err,
                                                 sizeof(err)),
                     0);
    assert_int_equal(td_delivery_enqueue_webhook(env->db, NULL, "hook-n", "https://8.8.8.8/hook",
                                                 DT_SECRET, "ev", body, strlen(body), origin, err,
                                                 sizeof(err)),
                     0);
    assert_int_equal(td_db_commit(env->db), 0);
    assert_int_equal(td_delivery_count(env->db, "pending"), TD_DELIVERY_USER_QUEUE_MAX + 2);
    char labels[128];
    td_metric_labels(labels, sizeof(labels), "channel", "webhook", "reason", "user_queue_full",
                     NULL);
    assert_true(td_metric_value("tidings_deliveries_dropped_total", labels) == 1.0);

    /* Once one leaves the queue, there is room for one more. */
    assert_int_equal(td_db_begin(env->db), 0);
    assert_int_equal(td_delivery_cancel(env->db, TD_DELIVERY_WEBHOOK, "hook-q"),
                     TD_DELIVERY_USER_QUEUE_MAX);
    assert_int_equal(td_delivery_enqueue_webhook(env->db, DT_USER, "hook-q", "https://8.8.8.8/hook",
                                                 DT_SECRET, "ev", body, strlen(body), origin, err,
                                                 sizeof(err)),
                     0);
    assert_int_equal(td_db_commit(env->db), 0);
    td_record_free(origin);
    free(body);
    json_decref(n);
}

static bool breaker_opened(void *arg)
{
    (void)arg;
    return td_metric_value("tidings_delivery_breaker_opened_total", "") >= 1.0;
}

static void test_breaker_pauses_and_probes(void **state)
{
    dt_env_t *env = *state;
    json_t *n = dt_notification("Order received");
    char local[64];
    snprintf(local, sizeof(local), "http://localhost:%d", env->rcv.port);
    dt_control(&env->rcv, json_pack("{s:b}", "down", 1));
    for (int i = 0; i < 6; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/down/b-%d", i);
        assert_int_equal(hook_at(env, DT_USER, env->rcv.base, path, n), 0);
    }
    td_delivery_policy_t policy = {
        .breaker_failures = 3, .breaker_pause_ms = 1500, .breaker_pause_max_ms = 3000};
    dt_start_policy(env, 4, 5000, &policy);
    assert_true(ts_wait_until(breaker_opened, NULL, 10000));
    assert_int_equal(dt_sql_int(env, "SELECT count(*) FROM td_delivery_dest"
                                     " WHERE open_until_ms > 0 AND failures >= 3"),
                     1);

    /* Paused: nothing more reaches it (the tries in flight when it opened
     * aside), no attempt is used, and another destination is not held. */
    int64_t settle = td_mono_ms() + 5000;
    while (dt_sql_int(env, "SELECT count(*) FROM td_delivery WHERE inflight = 1"
                           " AND url LIKE '%/down/%'") > 0 &&
           td_mono_ms() < settle)
        td_sleep_ms(20);
    td_sleep_ms(200);
    size_t before = received(env, "/down/");
    int64_t attempts = dt_sql_int(env, "SELECT sum(attempts) FROM td_delivery");
    assert_int_equal(hook_at(env, DT_USER, local, "/ok/during-pause", n), 0);
    wait_arg_t other = {env, "/ok/during-pause", 1};
    assert_true(ts_wait_until(received_cond, &other, 1000));
    assert_int_equal(received(env, "/down/"), before);
    assert_int_equal(dt_sql_int(env, "SELECT sum(attempts) FROM td_delivery"), attempts);

    /* The receiver recovers: the probe after the pause gets through, the
     * breaker closes and everything is delivered. */
    dt_control(&env->rcv, json_pack("{s:b}", "down", 0));
    assert_true(dt_wait_drained(env, 20000));
    assert_int_equal(td_delivery_count(env->db, "failed"), 0);
    assert_int_equal(dt_sql_int(env, "SELECT count(*) FROM td_delivery_dest"), 0);
    assert_true(dt_metric_is("webhook", "success", 7.0));
    json_decref(n);
}

static void test_breaker_arithmetic(void **state)
{
    (void)state;
    td_delivery_policy_t p = td__delivery_policy_default();
    assert_int_equal(p.dest_inflight, 2);
    p.breaker_failures = 3;
    p.breaker_pause_ms = 1000;
    p.breaker_pause_max_ms = 3000;
    td__breaker_t b = {0};
    assert_int_equal(td__breaker_cap(&b, &p, 0), 2);
    assert_false(td__breaker_record(&b, &p, true, 0));
    assert_false(td__breaker_record(&b, &p, true, 0));
    assert_true(td__breaker_record(&b, &p, true, 100)); /* the third in a row */
    assert_int_equal(b.open_until_ms, 1100);
    assert_int_equal(td__breaker_cap(&b, &p, 500), 0);
    /* A try that was in flight fails meanwhile: no longer pause. */
    assert_false(td__breaker_record(&b, &p, true, 600));
    assert_int_equal(b.open_until_ms, 1100);
    assert_int_equal(td__breaker_cap(&b, &p, 1100), 1);  /* half open: one probe */
    assert_true(td__breaker_record(&b, &p, true, 1200)); /* the probe failed */
    assert_int_equal(b.open_until_ms, 1200 + 2000);
    assert_true(td__breaker_record(&b, &p, true, 4000));
    assert_int_equal(b.open_until_ms, 4000 + 3000); /* at most the max */
    assert_true(td__breaker_record(&b, &p, true, 8000));
    assert_int_equal(b.open_until_ms, 8000 + 3000);
    assert_false(td__breaker_record(&b, &p, false, 12000)); /* an answer closes it */
    assert_int_equal(b.failures, 0);
    assert_int_equal(b.opens, 0);
    assert_int_equal(td__breaker_cap(&b, &p, 12000), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_breaker_arithmetic),
        cmocka_unit_test_setup_teardown(test_slow_destination_holds_only_its_share, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_user_queue_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_breaker_pauses_and_probes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
