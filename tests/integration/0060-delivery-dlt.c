/* Deliveries that never succeed end on the dead-letter topic: a push
 * service answering 500 and a webhook answering 503 to every try are tried
 * exactly cfg->delivery_max_attempts times, then each delivery is marked
 * failed and its NotificationCreatedEvent record is published to
 * tidings.notifications.DLT by the outbox relay (read back from an
 * embedded broker with an independent consumer) with the reason headers of
 * SPEC section 3, and nothing else is published. */
#include "tdelivery.h"

#define ATTEMPTS 4

static bool two_failed(void *arg)
{
    return td_delivery_count(((dt_env_t *)arg)->db, "failed") == 2;
}

static void test_always_failing_goes_to_dlt(void **state)
{
    (void)state;
    dt_env_t env;
    char err[512];
    dt_setup(&env, "0060-delivery-dlt", ATTEMPTS, true);
    td_relay_t *relay = td_relay_start(&env.cfg, env.db, err, sizeof(err));
    assert_non_null(relay);

    json_t *np = dt_notification("Order confirmed");
    json_t *nh = dt_notification("Order received");
    dt_start(&env, 2, 5000);
    dt_push(&env, "sub-d", "/status/500/push", np);
    dt_hook(&env, "hook-d", "/status/503/hook", nh);
    assert_true(ts_wait_until(two_failed, &env, 30000));
    assert_int_equal(td_delivery_count(env.db, "pending"), 0);

    json_t *reqs = dt_requests(&env.rcv, "/status/500/push");
    assert_int_equal(json_array_size(reqs), ATTEMPTS);
    json_decref(reqs);
    reqs = dt_requests(&env.rcv, "/status/503/hook");
    assert_int_equal(json_array_size(reqs), ATTEMPTS);
    json_decref(reqs);
    assert_true(dt_metric_is("webpush", "retry", ATTEMPTS - 1));
    assert_true(dt_metric_is("webpush", "failed", 1.0));
    assert_true(dt_metric_is("webhook", "retry", ATTEMPTS - 1));
    assert_true(dt_metric_is("webhook", "failed", 1.0));

    assert_int_equal(td_relay_drain(relay, 20000), 0);
    ts_records_t dlt = ts_read_topic(env.cfg.brokers, "tidings.notifications.DLT", 2, 500, 30000);
    assert_int_equal(dlt.cnt, 2);
    int seen_push = 0, seen_hook = 0;
    for (size_t i = 0; i < dlt.cnt; i++) {
        const td_record_t *rec = dlt.recs[i];
        const char *channel = td_record_header_str(rec, "tidings_dlt_channel");
        assert_non_null(channel);
        bool push = !strcmp(channel, "webpush");
        seen_push += push;
        seen_hook += !push;
        assert_int_equal(rec->key_len, strlen(DT_USER));
        assert_memory_equal(rec->key, DT_USER, rec->key_len);
        json_t *v = json_loadb(rec->value, rec->value_len, 0, NULL);
        assert_true(json_equal(v, push ? np : nh));
        json_decref(v);
        /* The original CloudEvent headers are kept ... */
        assert_string_equal(td_record_header_str(rec, "ce_type"), "NotificationCreatedEvent");
        assert_string_equal(td_record_header_str(rec, "ce_source"), "/tidings/notifications");
        assert_string_equal(td_record_header_str(rec, "ce_subject"), DT_USER);
        /* ... and the reason added. */
        assert_string_equal(td_record_header_str(rec, "tidings_dlt_original_topic"),
                            "tidings.notifications");
        assert_non_null(td_record_header_str(rec, "tidings_dlt_original_partition"));
        assert_non_null(td_record_header_str(rec, "tidings_dlt_original_offset"));
        assert_string_equal(td_record_header_str(rec, "tidings_dlt_target"),
                            push ? "sub-d" : "hook-d");
        assert_string_equal(td_record_header_str(rec, "tidings_dlt_attempts"), "4");
        const char *reason = td_record_header_str(rec, "tidings_dlt_reason");
        assert_non_null(reason);
        assert_non_null(strstr(reason, "gave up after 4 attempts"));
        assert_non_null(strstr(reason, push ? ": http_500" : ": http_503"));
    }
    assert_int_equal(seen_push, 1);
    assert_int_equal(seen_hook, 1);
    ts_records_free(&dlt);

    /* Failing a delivery publishes nothing on the notifications topic. */
    ts_records_t none = ts_read_topic(env.cfg.brokers, "tidings.notifications", 0, 300, 3000);
    assert_int_equal(none.cnt, 0);
    ts_records_free(&none);

    dt_stop(&env);
    td_relay_stop(relay, 5000);
    json_decref(nh);
    json_decref(np);
    dt_teardown(&env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_always_failing_goes_to_dlt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
