/* Deliveries survive a restart and arrive once. With the receiver down
 * (503), webhook and Web Push deliveries are tried and retried; one more
 * hangs in flight. The delivery is stopped (the hanging try is cut short at
 * once and not counted), more deliveries are queued while nothing runs,
 * half the rows are marked in flight as a crash mid-send would leave them,
 * and the database is closed. After reopening and starting again with the
 * receiver up, every delivery arrives with exactly one success, every try
 * of one delivery carries the same event id (webhook) or the same bytes
 * (Web Push), and nothing fails. */
#include "tdelivery.h"

#define EACH 6 /* per channel, tried before the restart */

typedef struct want {
    char path[64];
    json_t *n;
    bool push;
} want_t;

static bool all_tried_twice(void *arg)
{
    dt_env_t *env = arg;
    return dt_sql_int(env, "SELECT count(*) FROM td_delivery WHERE attempts >= 2"
                           " AND url LIKE '%/down/%'") == 2 * EACH;
}

static bool hang_received(void *arg)
{
    dt_env_t *env = arg;
    json_t *r = dt_requests(&env->rcv, "/hang/");
    size_t n = json_array_size(r);
    json_decref(r);
    return n == 1;
}

static void check_delivered_once(dt_env_t *env, const want_t *w)
{
    json_t *reqs = dt_requests(&env->rcv, w->path);
    size_t n = json_array_size(reqs);
    assert_true(n >= 1);
    int ok = 0;
    char *payload = td_json_dumps(w->n);
    const char *body0 = json_string_value(json_object_get(json_array_get(reqs, 0), "body_b64"));
    for (size_t i = 0; i < n; i++) {
        json_t *r = json_array_get(reqs, i);
        int st = dt_status(reqs, i);
        if (st == 201) ok++;
        if (w->push) {
            assert_string_equal(json_string_value(json_object_get(r, "body_b64")), body0);
            assert_string_equal(json_string_value(json_object_get(r, "plaintext")), payload);
            assert_true(json_is_true(json_object_get(r, "vapid_ok")));
        } else {
            assert_string_equal(dt_header(r, "x-tidings-event-id"),
                                json_string_value(json_object_get(w->n, "id")));
            assert_true(json_is_true(json_object_get(r, "sig_ok")));
        }
    }
    if (ok != 1) fprintf(stderr, "%s: %d successes in %zu requests\n", w->path, ok, n);
    assert_int_equal(ok, 1);
    assert_int_equal(dt_status(reqs, n - 1), 201); /* and nothing after it */
    free(payload);
    json_decref(reqs);
}

static void test_restart(void **state)
{
    (void)state;
    dt_env_t env;
    dt_setup(&env, "0060-delivery-restart", 1000, false);
    dt_control(&env.rcv, json_pack("{s:b}", "down", 1));

    want_t w[2 * EACH + 3];
    size_t cnt = 0;
    for (int i = 0; i < EACH; i++) {
        for (int push = 0; push < 2; push++) {
            want_t *x = &w[cnt++];
            snprintf(x->path, sizeof(x->path), "/down/%s-%d", push ? "push" : "hook", i);
            x->n = dt_notification("Order confirmed");
            x->push = push;
            if (push)
                dt_push(&env, "sub-r", x->path, x->n);
            else
                dt_hook(&env, "hook-r", x->path, x->n);
        }
    }
    want_t *hang = &w[cnt++];
    snprintf(hang->path, sizeof(hang->path), "/hang/8000/hook");
    hang->n = dt_notification("Order received");
    hang->push = false;
    dt_hook(&env, "hook-r", hang->path, hang->n);

    dt_start(&env, 2, 10000);
    assert_true(ts_wait_until(all_tried_twice, &env, 20000));
    assert_true(ts_wait_until(hang_received, &env, 20000));

    /* Stopping does not wait for the hanging receiver's timeout. */
    int64_t t0 = td_mono_ms();
    dt_stop(&env);
    assert_true(td_mono_ms() - t0 < 5000);
    assert_int_equal(td_delivery_count(env.db, "pending"), 2 * EACH + 1);
    assert_int_equal(td_delivery_count(env.db, "failed"), 0);
    assert_int_equal(dt_sql_int(&env, "SELECT attempts FROM td_delivery WHERE url LIKE '%/hang/%'"),
                     0);
    assert_true(dt_metric_is("webpush", "success", 0.0));
    assert_true(dt_metric_is("webhook", "success", 0.0));

    /* Queued while no delivery runs. */
    for (int push = 0; push < 2; push++) {
        want_t *x = &w[cnt++];
        snprintf(x->path, sizeof(x->path), "/ok/after-stop-%s", push ? "push" : "hook");
        x->n = dt_notification("Back in stock: Lamp");
        x->push = push;
        if (push)
            dt_push(&env, "sub-r", x->path, x->n);
        else
            dt_hook(&env, "hook-r", x->path, x->n);
    }
    /* What a crash in the middle of sending leaves behind. */
    assert_int_equal(td_db_begin(env.db), 0);
    char *sql = td_asprintf("UPDATE td_delivery SET inflight = 1, claimed_ms = %lld"
                            " WHERE id %% 2 = 0",
                            (long long)td_now_ms());
    assert_int_equal(td_db_exec(env.db, sql), 0);
    free(sql);
    assert_int_equal(td_db_commit(env.db), 0);
    assert_true(dt_sql_int(&env, "SELECT count(*) FROM td_delivery WHERE inflight = 1") > 0);

    td_db_close(env.db);
    dt_open_db(&env);
    dt_control(&env.rcv, json_pack("{s:b}", "down", 0));
    dt_start(&env, 2, 10000);
    assert_true(dt_wait_drained(&env, 30000));

    for (size_t i = 0; i < cnt; i++) check_delivered_once(&env, &w[i]);
    json_t *all = dt_requests(&env.rcv, NULL);
    size_t ok = 0;
    for (size_t i = 0; i < json_array_size(all); i++) ok += dt_status(all, i) == 201;
    assert_int_equal(ok, cnt);
    json_decref(all);
    assert_int_equal(td_delivery_count(env.db, "failed"), 0);
    assert_true(dt_metric_is("webpush", "success", EACH + 1));
    assert_true(dt_metric_is("webhook", "success", EACH + 2));

    for (size_t i = 0; i < cnt; i++) json_decref(w[i].n);
    dt_teardown(&env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
