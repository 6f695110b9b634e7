/* A consumer stopped in the middle of a stream and a new one started on
 * the same database and group (a service restart): every event has
 * exactly one effect, none is lost, and the second consumer picks up
 * where the first committed rather than from the beginning. */
#include "tbus.h"

#define TOTAL 1000
#define KEYS  12

/* Slow enough that the stop lands mid-stream. */
static int slow_handler(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr, size_t errlen)
{
    (void)ctx;
    (void)errstr;
    (void)errlen;
    td_sleep_ms(2);
    return bt_record_effect(db, ev);
}

static const td_handler_t handlers[] = {{.type = "TestEvent", .fn = slow_handler}};

static void test_restart(void **state)
{
    (void)state;
    bt_env_t env;
    bt_setup(&env, "0005-consumer-restart");
    td_db_t *pdb = bt_db(&env, "producer.db");
    td_db_t *cdb = bt_db(&env, "consumer.db");

    td_event_t **evs = td_calloc(TOTAL, sizeof(*evs));
    char keys[KEYS][TD_UUID_LEN + 1];
    for (int k = 0; k < KEYS; k++) td_uuid_new(keys[k]);
    for (int i = 0; i < TOTAL; i++)
        evs[i] = td_event_new("orders", "TestEvent", keys[i % KEYS], json_pack("{s:i}", "n", i));
    td_relay_t *relay = bt_relay(&env, pdb);
    bt_publish(pdb, &env.cfg, evs, TOTAL, 50);
    assert_int_equal(td_relay_drain(relay, 60000), 0);

    /* Batches of 100, so that a stop can come in the middle of the stream
     * (one default batch would take all of it). */
    td_consumer_t *cons = bt_consumer_batched(&env, cdb, "test-0005", handlers, 1, NULL, 100);
    assert_true(bt_wait_count(cdb, "SELECT count(*) FROM effects", 300, 60000));
    td_consumer_stop(cons);
    int64_t first = bt_query_int(cdb, "SELECT count(*) FROM effects");
    assert_true(first >= 300);
    assert_true(first < TOTAL); /* it really stopped mid-stream */

    cons = bt_consumer(&env, cdb, "test-0005", handlers, 1, NULL);
    assert_true(bt_wait_count(cdb, "SELECT count(DISTINCT ce_id) FROM effects", TOTAL, 60000));
    /* Let anything redelivered arrive, then check nothing doubled. */
    assert_true(bt_wait_processed(cons, TOTAL - first, 10000));
    int64_t lag_zero_deadline = td_mono_ms() + 10000;
    while (td_consumer_lag(cons) != 0 && td_mono_ms() < lag_zero_deadline) td_sleep_ms(20);
    assert_int_equal(td_consumer_lag(cons), 0);
    assert_int_equal(bt_query_int(cdb, "SELECT count(*) FROM effects"), TOTAL);
    assert_int_equal(bt_query_int(cdb, "SELECT count(DISTINCT n) FROM effects"), TOTAL);
    /* The second consumer resumed from the commit: it did not reread all
     * TOTAL records (at most a handful around the stop). */
    assert_true(td_consumer_processed(cons) < TOTAL - first + 50);

    /* Per key, effects in publication order across the restart. */
    td_db_lock(cdb);
    sqlite3_stmt *st = td_db_prepare(cdb, "SELECT n FROM effects WHERE subject = ? ORDER BY seq");
    for (int k = 0; k < KEYS; k++) {
        sqlite3_bind_text(st, 1, keys[k], -1, SQLITE_STATIC);
        int64_t prev = -1;
        while (sqlite3_step(st) == SQLITE_ROW) {
            int64_t n = sqlite3_column_int64(st, 0);
            assert_true(n > prev);
            prev = n;
        }
        sqlite3_reset(st);
    }
    td_db_done(st);
    td_db_unlock(cdb);

    td_consumer_stop(cons);
    td_relay_stop(relay, 5000);
    for (int i = 0; i < TOTAL; i++) td_event_free(evs[i]);
    free(evs);
    td_db_close(cdb);
    td_db_close(pdb);
    bt_teardown(&env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_restart)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
