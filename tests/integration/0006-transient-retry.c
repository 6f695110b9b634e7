/* A handler that fails transiently (TD_EAGAIN) is retried with backoff on
 * the same record until it succeeds: one effect in the end, none of the
 * failed attempts' writes survive (each was rolled back), and while it
 * keeps failing the group's committed offset does not move past it. */
#include "tbus.h"

#include <stdatomic.h>

#define FAILURES 5 /* 100+200+400+800+1600 ms of backoff: past the 1 s auto commit */

typedef struct retry_ctx {
    atomic_int attempts;
    const char *flaky_id;
} retry_ctx_t;

static int flaky_handler(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr, size_t errlen)
{
    retry_ctx_t *rc = ctx;
    /* Write first, then fail: the rollback must undo it. */
    int err = bt_record_effect(db, ev);
    if (err) return err;
    if (strcmp(ev->id, rc->flaky_id)) return 0;
    if (atomic_fetch_add(&rc->attempts, 1) < FAILURES)
        return td_errf(errstr, errlen, TD_EAGAIN, "database of a neighbour is down");
    return 0;
}

static const td_handler_t handlers[] = {{.type = "TestEvent", .fn = flaky_handler}};

/* The group's committed offset for (topic, partition), via a separate
 * client that never joins the group. */
static int64_t committed(rd_kafka_t *rk, int32_t partition)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(l, "tidings.orders", partition);
    int64_t off = -2;
    if (rd_kafka_committed(rk, l, 5000) == RD_KAFKA_RESP_ERR_NO_ERROR && !l->elems[0].err)
        off = l->elems[0].offset;
    rd_kafka_topic_partition_list_destroy(l);
    return off;
}

static bool attempts_done(void *arg)
{
    retry_ctx_t *rc = arg;
    return atomic_load(&rc->attempts) > FAILURES;
}

static void test_transient_retry(void **state)
{
    (void)state;
    bt_env_t env;
    bt_setup(&env, "0006-transient-retry");
    td_db_t *db = bt_db(&env, "consumer.db");

    /* A good event, then the flaky one, same key: same partition. */
    td_event_t *good = td_event_new("orders", "TestEvent", "k", json_pack("{s:i}", "n", 1));
    td_event_t *flaky = td_event_new("orders", "TestEvent", "k", json_pack("{s:i}", "n", 2));
    td_record_t *r1 = td_event_to_record(good, "tidings.orders");
    td_record_t *r2 = td_event_to_record(flaky, "tidings.orders");
    assert_int_equal(ts_produce(env.cfg.brokers, r1), 0);
    assert_int_equal(ts_produce(env.cfg.brokers, r2), 0);
    ts_records_t on_topic = ts_read_topic(env.cfg.brokers, "tidings.orders", 2, 100, 10000);
    assert_int_equal(on_topic.cnt, 2);
    int32_t part = on_topic.recs[1]->partition;
    int64_t flaky_off = on_topic.recs[1]->offset;
    assert_string_equal(bt_header(on_topic.recs[1], "ce_id"), flaky->id);
    ts_records_free(&on_topic);

    char err[512];
    rd_kafka_conf_t *conf = td_kafka_conf(&env.cfg, err, sizeof(err));
    assert_non_null(conf);
    assert_int_equal(td_kafka_set(conf, "group.id", "test-0006", err, sizeof(err)), 0);
    rd_kafka_t *probe = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof(err));
    assert_non_null(probe);

    retry_ctx_t rc = {.flaky_id = flaky->id};
    atomic_init(&rc.attempts, 0);
    td_consumer_t *cons = bt_consumer(&env, db, "test-0006", handlers, 1, &rc);

    /* While it fails, the committed offset never passes the flaky record
     * (the good one before it may be committed: offset == flaky_off). */
    int64_t max_seen = -1;
    int64_t deadline = td_mono_ms() + 60000;
    while (!attempts_done(&rc) && td_mono_ms() < deadline) {
        int64_t c = committed(probe, part);
        if (c > max_seen) max_seen = c;
        assert_true(c <= flaky_off);
        td_sleep_ms(100);
    }
    assert_true(attempts_done(&rc));
    /* The good record's offset may be committed meanwhile (when a poll
     * gave it alone) or not (when both came in one batch, which is retried
     * whole): either way never past the flaky one. */
    assert_true(max_seen <= flaky_off);

    assert_true(bt_wait_processed(cons, 2, 10000));
    assert_int_equal(atomic_load(&rc.attempts), FAILURES + 1);
    char sql[512];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM effects WHERE ce_id = '%s'", flaky->id);
    assert_int_equal(bt_query_int(db, sql), 1);
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM effects"), 2);

    /* And then the offset moves on (auto commit within about a second). */
    deadline = td_mono_ms() + 15000;
    while (committed(probe, part) != flaky_off + 1 && td_mono_ms() < deadline) td_sleep_ms(100);
    assert_int_equal(committed(probe, part), flaky_off + 1);

    char labels[256];
    td_metric_labels(labels, sizeof(labels), "topic", "tidings.orders", "type", "TestEvent",
                     "result", "retried", NULL);
    assert_true(td_metric_value("tidings_events_consumed_total", labels) >= FAILURES);

    td_consumer_stop(cons);
    rd_kafka_destroy(probe);
    td_record_free(r1);
    td_record_free(r2);
    td_event_free(good);
    td_event_free(flaky);
    td_db_close(db);
    bt_teardown(&env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_transient_retry)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
