/* The inbox makes redelivery harmless: the same event produced twice (an
 * outbox republishing after a crash) and the whole topic replayed by a new
 * consumer from offset 0 on the same database (a lost commit) both leave
 * exactly one effect per event. */
#include "tbus.h"

#define EVENTS 20

static const td_handler_t handlers[] = {{.type = "TestEvent", .fn = bt_effect_handler}};

static void test_redelivery(void **state)
{
    (void)state;
    bt_env_t env;
    bt_setup(&env, "0003-inbox-redelivery");
    td_db_t *db = bt_db(&env, "consumer.db");

    /* Each event twice on the topic, the copy right after the original. */
    td_event_t *evs[EVENTS];
    for (int i = 0; i < EVENTS; i++) {
        evs[i] = td_event_new("orders", "TestEvent", i % 2 ? "key-odd" : "key-even",
                              json_pack("{s:i}", "n", i));
        td_record_t *rec = td_event_to_record(evs[i], "tidings.orders");
        assert_int_equal(ts_produce(env.cfg.brokers, rec), 0);
        assert_int_equal(ts_produce(env.cfg.brokers, rec), 0);
        td_record_free(rec);
    }

    td_consumer_t *cons = bt_consumer(&env, db, "test-0003-a", handlers, 1, NULL);
    assert_true(bt_wait_processed(cons, 2 * EVENTS, 60000));
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM effects"), EVENTS);
    assert_int_equal(bt_query_int(db, "SELECT count(DISTINCT ce_id) FROM effects"), EVENTS);
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM td_inbox"), EVENTS);
    char labels[256];
    td_metric_labels(labels, sizeof(labels), "topic", "tidings.orders", "type", "TestEvent",
                     "result", "duplicate", NULL);
    assert_true(td_metric_value("tidings_events_consumed_total", labels) >= EVENTS);
    td_consumer_stop(cons);

    /* A new group starts at offset 0: a full replay into the same db. */
    cons = bt_consumer(&env, db, "test-0003-b", handlers, 1, NULL);
    assert_true(bt_wait_processed(cons, 2 * EVENTS, 60000));
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM effects"), EVENTS);
    td_consumer_stop(cons);

    for (int i = 0; i < EVENTS; i++) {
        char sql[512];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM effects WHERE ce_id = '%s' AND n = %d",
                 evs[i]->id, i);
        assert_int_equal(bt_query_int(db, sql), 1);
        td_event_free(evs[i]);
    }
    td_db_close(db);
    bt_teardown(&env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_redelivery)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
