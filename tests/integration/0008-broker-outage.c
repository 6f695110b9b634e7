/* All brokers go away and come back. The relay and the consumer report the
 * loss within seconds (what /readyz shows), events committed during the
 * outage wait in the outbox, and after the brokers return everything is
 * published and handled exactly once. */
#include "tbus.h"

#include <librdkafka/rdkafka_mock.h>

#include "tidings/service.h"

#define EVENTS 20

static const td_handler_t handlers[] = {{.type = "TestEvent", .fn = bt_effect_handler}};

static bool ready(void *arg)
{
    return td_readiness_check(arg, NULL, 0);
}

/* Both clients noticed, not just the first one. */
static bool all_disconnected(void *arg)
{
    const td_readiness_t *rd = arg;
    return !td_relay_connected(rd->relay) && !td_consumer_connected(rd->cons[0]);
}

static void test_outage(void **state)
{
    (void)state;
    bt_env_t env;
    bt_setup(&env, "0008-broker-outage");
    rd_kafka_mock_cluster_t *mc = td_broker_mock(env.broker);
    td_db_t *pdb = bt_db(&env, "producer.db");
    td_db_t *cdb = bt_db(&env, "consumer.db");
    td_relay_t *relay = bt_relay(&env, pdb);
    td_consumer_t *cons = bt_consumer(&env, cdb, "test-0008", handlers, 1, NULL);
    td_readiness_t rd = {.db = pdb, .relay = relay};
    td_readiness_add(&rd, cons);

    assert_true(ts_wait_until(ready, &rd, 15000));

    for (int b = 1; b <= 3; b++) assert_int_equal(rd_kafka_mock_broker_set_down(mc, b), 0);
    assert_true(ts_wait_until(all_disconnected, &rd, 15000));
    char why[128] = "";
    assert_false(td_readiness_check(&rd, why, sizeof(why)));
    assert_non_null(strstr(why, "Kafka"));

    td_event_t *evs[EVENTS];
    for (int i = 0; i < EVENTS; i++)
        evs[i] = td_event_new("orders", "TestEvent", i % 2 ? "a" : "b", json_pack("{s:i}", "n", i));
    bt_publish(pdb, &env.cfg, evs, EVENTS, 5);
    td_sleep_ms(500); /* the relay had its chance; nothing can have been confirmed */
    assert_int_equal(td_outbox_backlog(pdb), EVENTS);

    for (int b = 1; b <= 3; b++) assert_int_equal(rd_kafka_mock_broker_set_up(mc, b), 0);
    assert_true(ts_wait_until(ready, &rd, 20000));
    assert_int_equal(td_relay_drain(relay, 60000), 0);
    assert_true(bt_wait_count(cdb, "SELECT count(*) FROM effects", EVENTS, 60000));
    td_sleep_ms(300);
    assert_int_equal(bt_query_int(cdb, "SELECT count(*) FROM effects"), EVENTS);
    assert_int_equal(bt_query_int(cdb, "SELECT count(DISTINCT ce_id) FROM effects"), EVENTS);

    td_readiness_clear(&rd);
    td_consumer_stop(cons);
    td_relay_stop(relay, 5000);
    for (int i = 0; i < EVENTS; i++) td_event_free(evs[i]);
    td_db_close(cdb);
    td_db_close(pdb);
    bt_teardown(&env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_outage)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
