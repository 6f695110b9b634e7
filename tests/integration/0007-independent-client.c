/* Events published by the relay are valid CloudEvents for a client that
 * shares no code with tidings: check_cloudevents.py (kafka-python) reads
 * them from the embedded broker and checks every header of SPEC section 3.
 * A second run against a topic holding one broken record must fail, so
 * the checker itself is known to look. */
#include "tbus.h"

#include <libgen.h>
#include <sys/wait.h>

#define EVENTS 30

static int run_checker(const char *brokers, const char *topic, int want)
{
    char *file = td_strdup(__FILE__);
    char *cmd = td_asprintf("/usr/bin/python3 %s/check_cloudevents.py '%s' '%s' %d", dirname(file),
                            brokers, topic, want);
    int status = system(cmd);
    free(cmd);
    free(file);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_independent_client(void **state)
{
    (void)state;
    bt_env_t env;
    bt_setup(&env, "0007-independent-client");
    td_db_t *db = bt_db(&env, "producer.db");
    td_relay_t *relay = bt_relay(&env, db);

    td_event_t *evs[EVENTS];
    for (int i = 0; i < EVENTS; i++) {
        char key[TD_UUID_LEN + 1];
        td_uuid_new(key);
        evs[i] = td_event_new("orders", i % 3 ? "OrderCreatedEvent" : "OrderApprovedEvent", key,
                              json_pack("{s:s, s:i}", "orderId", key, "quantity", i + 1));
        if (i % 3 == 0 && i > 0) td_event_set_cause(evs[i], evs[i - 1]);
    }
    bt_publish(db, &env.cfg, evs, EVENTS, 4);
    assert_int_equal(td_relay_drain(relay, 30000), 0);
    assert_int_equal(run_checker(env.cfg.brokers, "tidings.orders", EVENTS), 0);

    /* The checker fails on a record that is not a CloudEvent. */
    td_record_t *bad = td_event_to_record(evs[0], "tidings.users");
    for (size_t h = 0; h < bad->header_cnt; h++) {
        if (strcmp(bad->headers[h].name, "ce_time")) continue;
        free(bad->headers[h].value);
        bad->headers[h].value = td_strdup("yesterday");
        bad->headers[h].len = strlen("yesterday");
    }
    assert_int_equal(ts_produce(env.cfg.brokers, bad), 0);
    td_record_free(bad);
    assert_int_equal(run_checker(env.cfg.brokers, "tidings.users", 1), 1);

    td_relay_stop(relay, 5000);
    for (int i = 0; i < EVENTS; i++) td_event_free(evs[i]);
    td_db_close(db);
    bt_teardown(&env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_independent_client)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
