/* The consumer side of a redrive (SPEC section 3): an event its handler
 * rejected goes to the DLT and the inbox remembers it was dead-lettered.
 * Once the handler is fixed, a redriven copy (the original record plus
 * tidings_redriven_from) is processed again and has its effect once; a
 * second copy is a duplicate; a redriven copy of an event that was handled
 * is a no-op; a copy that still fails is dead-lettered again. Without the
 * feature the redriven copy would be a duplicate and never take effect. */
#include <stdatomic.h>

#include "tbus.h"

#define KEY "7d7c4b7e-2d7a-4a59-9b7e-3f1a2b3c4d5e"

static atomic_bool fixed;

/* "FlakyEvent" is rejected until the fix; then it records its effect. */
static int flaky_handler(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr, size_t errlen)
{
    (void)ctx;
    if (!atomic_load(&fixed)) return td_errf(errstr, errlen, TD_EINVAL, "not fixed yet");
    return bt_record_effect(db, ev);
}

static const td_handler_t handlers[] = {
    {.type = "GoodEvent", .fn = bt_effect_handler},
    {.type = "FlakyEvent", .fn = flaky_handler},
};

static td_record_t *event_record(const char *type, int n)
{
    td_event_t *ev = td_event_new("orders", type, KEY, json_pack("{s:i}", "n", n));
    td_record_t *rec = td_event_to_record(ev, "tidings.orders");
    td_event_free(ev);
    return rec;
}

static td_record_t *redriven(const td_record_t *orig, const char *ref)
{
    td_record_t *r = td_record_dup(orig);
    td_record_add_header_str(r, TD_REDRIVEN_FROM, ref);
    return r;
}

static void test_redrive(void **state)
{
    (void)state;
    bt_env_t env;
    bt_setup(&env, "0016-redrive-consumer");
    td_db_t *db = bt_db(&env, "consumer.db");
    td_relay_t *relay = bt_relay(&env, db);
    td_consumer_t *cons = bt_consumer(&env, db, "test-0016", handlers, 2, NULL);

    td_record_t *flaky = event_record("FlakyEvent", 1);
    td_record_t *good = event_record("GoodEvent", 2);
    td_record_t *again = event_record("FlakyEvent", 3);
    assert_int_equal(ts_produce(env.cfg.brokers, flaky), 0);
    assert_int_equal(ts_produce(env.cfg.brokers, good), 0);
    assert_int_equal(ts_produce(env.cfg.brokers, again), 0);
    assert_true(bt_wait_processed(cons, 3, 60000));
    assert_int_equal(td_relay_drain(relay, 30000), 0);
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM effects"), 1);
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM td_inbox WHERE outcome = 1"), 2);
    ts_records_t dlt = ts_read_topic(env.cfg.brokers, "tidings.orders.DLT", 2, 500, 30000);
    assert_int_equal(dlt.cnt, 2);
    ts_records_free(&dlt);

    /* A redrive while the handler still refuses: dead-lettered again (a
     * new DLT record), no effect. */
    td_record_t *r0 = redriven(again, "tidings.orders.DLT:0:1");
    assert_int_equal(ts_produce(env.cfg.brokers, r0), 0);
    assert_true(bt_wait_processed(cons, 4, 60000));
    assert_int_equal(td_relay_drain(relay, 30000), 0);
    dlt = ts_read_topic(env.cfg.brokers, "tidings.orders.DLT", 3, 500, 30000);
    assert_int_equal(dlt.cnt, 3);
    assert_string_equal(bt_header(dlt.recs[2], TD_REDRIVEN_FROM), "tidings.orders.DLT:0:1");
    ts_records_free(&dlt);

    /* Fixed: the redriven copies take effect once each. */
    atomic_store(&fixed, true);
    td_record_t *r1 = redriven(flaky, "tidings.orders.DLT:0:0");
    td_record_t *r2 = redriven(flaky, "tidings.orders.DLT:0:0"); /* a second copy */
    td_record_t *r3 = redriven(good, "tidings.orders.DLT:0:9");  /* it had succeeded */
    td_record_t *r4 = redriven(again, "tidings.orders.DLT:0:2");
    td_record_t *plain = td_record_dup(again); /* a plain redelivery: a duplicate */
    assert_int_equal(ts_produce(env.cfg.brokers, plain), 0);
    assert_int_equal(ts_produce(env.cfg.brokers, r1), 0);
    assert_int_equal(ts_produce(env.cfg.brokers, r2), 0);
    assert_int_equal(ts_produce(env.cfg.brokers, r3), 0);
    assert_int_equal(ts_produce(env.cfg.brokers, r4), 0);
    assert_true(bt_wait_processed(cons, 9, 60000));
    assert_int_equal(td_relay_drain(relay, 30000), 0);
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM effects"), 3);
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM effects WHERE n = 1"), 1);
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM effects WHERE n = 2"), 1);
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM effects WHERE n = 3"), 1);
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM td_inbox WHERE outcome = 1"), 0);
    dlt = ts_read_topic(env.cfg.brokers, "tidings.orders.DLT", 3, 500, 10000);
    assert_int_equal(dlt.cnt, 3); /* nothing more dead-lettered */
    ts_records_free(&dlt);

    td_consumer_stop(cons);
    td_relay_stop(relay, 5000);
    td_record_t *all[] = {flaky, good, again, r0, r1, r2, r3, r4, plain};
    for (size_t i = 0; i < TD_ARRAY_SIZE(all); i++) td_record_free(all[i]);
    td_db_close(db);
    bt_teardown(&env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_redrive)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
