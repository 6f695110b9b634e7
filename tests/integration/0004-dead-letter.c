/* Records a consumer cannot process go to <topic>.DLT with the reason
 * headers of SPEC section 3 and the original key, value and headers: not
 * CloudEvents at all (no headers), bad JSON, a bad traceparent, an array
 * instead of an object, and a valid event its handler rejects (TD_EINVAL).
 * The consumer moves on (the good record after them is handled), an event
 * type without a handler is skipped and not dead-lettered, and a replay
 * does not dead-letter anything twice. */
#include "tbus.h"

#define KEY "7d7c4b7e-2d7a-4a59-9b7e-3f1a2b3c4d5e"

static int reject_handler(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr, size_t errlen)
{
    (void)ctx;
    (void)db;
    (void)ev;
    return td_errf(errstr, errlen, TD_EINVAL, "field 'quantity' is missing");
}

static const td_handler_t handlers[] = {
    {.type = "GoodEvent", .fn = bt_effect_handler},
    {.type = "BadEvent", .fn = reject_handler},
};

static void set_header(td_record_t *rec, const char *name, const char *value)
{
    for (size_t i = 0; i < rec->header_cnt; i++) {
        if (strcmp(rec->headers[i].name, name)) continue;
        free(rec->headers[i].value);
        rec->headers[i].value = td_strdup(value);
        rec->headers[i].len = strlen(value);
        return;
    }
    fail_msg("no header %s", name);
}

static td_record_t *event_record(const char *type, int n)
{
    td_event_t *ev = td_event_new("orders", type, KEY, json_pack("{s:i}", "n", n));
    td_record_t *rec = td_event_to_record(ev, "tidings.orders");
    td_event_free(ev);
    return rec;
}

static bool same_header(const td_header_t *a, const td_header_t *b)
{
    return !strcmp(a->name, b->name) && a->len == b->len &&
           (a->value == NULL) == (b->value == NULL) &&
           (!a->value || !memcmp(a->value, b->value, a->len));
}

static void test_dead_letter(void **state)
{
    (void)state;
    bt_env_t env;
    bt_setup(&env, "0004-dead-letter");
    td_db_t *db = bt_db(&env, "consumer.db");

    td_record_t *recs[7];
    recs[0] = td_record_new("tidings.orders"); /* no headers at all */
    td_record_set_key(recs[0], KEY, strlen(KEY));
    td_record_set_value(recs[0], "{\"n\":0}", 7);
    recs[1] = event_record("GoodEvent", 1);
    td_record_set_value(recs[1], "{not json", 9);
    recs[2] = event_record("GoodEvent", 2);
    set_header(recs[2], "traceparent", "00-zzzz-not-a-trace-01");
    recs[3] = event_record("GoodEvent", 3);
    td_record_set_value(recs[3], "[1,2]", 5);
    recs[4] = event_record("BadEvent", 4);
    recs[5] = event_record("SomeoneElsesEvent", 5);
    recs[6] = event_record("GoodEvent", 6);
    for (int i = 0; i < 7; i++) assert_int_equal(ts_produce(env.cfg.brokers, recs[i]), 0);

    td_relay_t *relay = bt_relay(&env, db); /* dead letters go through the outbox */
    td_consumer_t *cons = bt_consumer(&env, db, "test-0004-a", handlers, 2, NULL);
    assert_true(bt_wait_processed(cons, 7, 60000));
    assert_int_equal(td_relay_drain(relay, 30000), 0);

    /* The good record after the bad ones was handled. */
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM effects"), 1);
    assert_int_equal(bt_query_int(db, "SELECT n FROM effects"), 6);

    ts_records_t orig = ts_read_topic(env.cfg.brokers, "tidings.orders", 7, 200, 30000);
    assert_int_equal(orig.cnt, 7);
    ts_records_t dlt = ts_read_topic(env.cfg.brokers, "tidings.orders.DLT", 5, 500, 30000);
    assert_int_equal(dlt.cnt, 5);

    /* The dead letters in order: records 0..4, each the original plus the
     * four reason headers. */
    for (size_t d = 0; d < dlt.cnt; d++) {
        const td_record_t *got = dlt.recs[d];
        const td_record_t *o = orig.recs[d];
        char num[32];
        assert_string_equal(bt_header(got, "tidings_dlt_original_topic"), "tidings.orders");
        snprintf(num, sizeof(num), "%d", (int)o->partition);
        assert_string_equal(bt_header(got, "tidings_dlt_original_partition"), num);
        snprintf(num, sizeof(num), "%lld", (long long)o->offset);
        assert_string_equal(bt_header(got, "tidings_dlt_original_offset"), num);
        assert_true(strlen(bt_header(got, "tidings_dlt_reason")) > 0);

        assert_int_equal(got->key_len, o->key_len);
        assert_memory_equal(got->key, o->key, o->key_len);
        assert_int_equal(got->value_len, o->value_len);
        assert_memory_equal(got->value, o->value, o->value_len);
        assert_int_equal(got->header_cnt, o->header_cnt + 4);
        for (size_t h = 0; h < o->header_cnt; h++)
            assert_true(same_header(&got->headers[h], &o->headers[h]));
        assert_memory_equal(o->value, recs[d]->value, recs[d]->value_len);
    }
    assert_non_null(strstr(bt_header(dlt.recs[0], "tidings_dlt_reason"), "ce_specversion"));
    assert_non_null(strstr(bt_header(dlt.recs[1], "tidings_dlt_reason"), "JSON"));
    assert_non_null(strstr(bt_header(dlt.recs[2], "tidings_dlt_reason"), "traceparent"));
    assert_non_null(strstr(bt_header(dlt.recs[3], "tidings_dlt_reason"), "object"));
    assert_string_equal(bt_header(dlt.recs[4], "tidings_dlt_reason"),
                        "field 'quantity' is missing");
    assert_string_equal(bt_header(dlt.recs[4], "ce_type"), "BadEvent");
    ts_records_free(&dlt);

    char labels[256];
    td_metric_labels(labels, sizeof(labels), "topic", "tidings.orders", "type", "(unhandled)",
                     "result", "skipped", NULL);
    assert_true(td_metric_value("tidings_events_consumed_total", labels) >= 1);
    td_consumer_stop(cons);

    /* A replay from offset 0 into the same db dead-letters nothing twice
     * and has no second effect. */
    cons = bt_consumer(&env, db, "test-0004-b", handlers, 2, NULL);
    assert_true(bt_wait_processed(cons, 7, 60000));
    assert_int_equal(td_relay_drain(relay, 30000), 0);
    dlt = ts_read_topic(env.cfg.brokers, "tidings.orders.DLT", 5, 500, 30000);
    assert_int_equal(dlt.cnt, 5);
    ts_records_free(&dlt);
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM effects"), 1);

    td_consumer_stop(cons);
    td_relay_stop(relay, 5000);
    ts_records_free(&orig);
    for (int i = 0; i < 7; i++) td_record_free(recs[i]);
    td_db_close(db);
    bt_teardown(&env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_dead_letter)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
