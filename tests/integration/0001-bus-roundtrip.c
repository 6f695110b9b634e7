/* Events written to the outbox of one database travel through the relay,
 * the embedded broker and a consumer into another database: every event
 * is handled exactly once, in order per key, with its key and every
 * CloudEvents header exactly as written (checked both on the raw topic and
 * in what the handler saw). */
#include "tbus.h"

#define KEYS    5
#define PER_KEY 100
#define TOTAL   (KEYS * PER_KEY)

static const td_handler_t handlers[] = {{.type = "TestEvent", .fn = bt_effect_handler}};

static void test_roundtrip(void **state)
{
    (void)state;
    bt_env_t env;
    bt_setup(&env, "0001-bus-roundtrip");
    td_db_t *pdb = bt_db(&env, "producer.db");
    td_db_t *cdb = bt_db(&env, "consumer.db");

    td_consumer_t *cons = bt_consumer(&env, cdb, "test-0001", handlers, 1, NULL);
    td_relay_t *relay = bt_relay(&env, pdb);

    /* Keys interleaved, so per-key order is not just publication order of
     * a single key; every second event is a reaction to the one before it
     * (causation id, child trace), so optional headers are covered too. */
    td_event_t **evs = td_calloc(TOTAL, sizeof(*evs));
    char keys[KEYS][TD_UUID_LEN + 1];
    for (int k = 0; k < KEYS; k++) td_uuid_new(keys[k]);
    for (int i = 0; i < TOTAL; i++) {
        int k = i % KEYS, n = i / KEYS;
        evs[i] = td_event_new("orders", "TestEvent", keys[k],
                              json_pack("{s:i, s:s}", "n", n, "key", keys[k]));
        if (i >= KEYS && n % 2 == 1) td_event_set_cause(evs[i], evs[i - KEYS]);
    }
    bt_publish(pdb, &env.cfg, evs, TOTAL, 7);

    assert_true(bt_wait_count(cdb, "SELECT count(*) FROM effects", TOTAL, 60000));
    assert_int_equal(td_relay_drain(relay, 10000), 0);
    /* Nothing more arrives: no duplicates. */
    assert_true(bt_wait_processed(cons, TOTAL, 10000));
    assert_int_equal(bt_query_int(cdb, "SELECT count(*) FROM effects"), TOTAL);
    assert_int_equal(bt_query_int(cdb, "SELECT count(DISTINCT ce_id) FROM effects"), TOTAL);

    /* What the handler saw, event by event. */
    td_db_lock(cdb);
    sqlite3_stmt *st = td_db_prepare(cdb, "SELECT subject, n, type, source, time, correlationid,"
                                          " causationid, traceparent, topic FROM effects"
                                          " WHERE ce_id = ?");
    for (int i = 0; i < TOTAL; i++) {
        const td_event_t *ev = evs[i];
        char tp[TD_TRACEPARENT_LEN + 1];
        td_trace_format(&ev->trace, tp);
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, ev->id, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_string_equal((const char *)sqlite3_column_text(st, 0), ev->subject);
        assert_int_equal(sqlite3_column_int(st, 1), i / KEYS);
        assert_string_equal((const char *)sqlite3_column_text(st, 2), "TestEvent");
        assert_string_equal((const char *)sqlite3_column_text(st, 3), "/tidings/orders");
        assert_string_equal((const char *)sqlite3_column_text(st, 4), ev->time);
        assert_string_equal((const char *)sqlite3_column_text(st, 5), ev->correlationid);
        if (ev->causationid)
            assert_string_equal((const char *)sqlite3_column_text(st, 6), ev->causationid);
        else
            assert_int_equal(sqlite3_column_type(st, 6), SQLITE_NULL);
        assert_string_equal((const char *)sqlite3_column_text(st, 7), tp);
        assert_string_equal((const char *)sqlite3_column_text(st, 8), "tidings.orders");
    }
    td_db_done(st);

    /* Per key, effects happened in n order. */
    st = td_db_prepare(cdb, "SELECT n FROM effects WHERE subject = ? ORDER BY seq");
    for (int k = 0; k < KEYS; k++) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, keys[k], -1, SQLITE_STATIC);
        int want = 0;
        while (sqlite3_step(st) == SQLITE_ROW) assert_int_equal(sqlite3_column_int(st, 0), want++);
        assert_int_equal(want, PER_KEY);
    }
    td_db_done(st);
    td_db_unlock(cdb);

    /* The raw topic: key and headers byte for byte as td_event_to_record
     * made them, one record per event, one partition per key. */
    ts_records_t recs = ts_read_topic(env.cfg.brokers, "tidings.orders", TOTAL, 300, 30000);
    assert_int_equal(recs.cnt, TOTAL);
    for (size_t r = 0; r < recs.cnt; r++) {
        const td_record_t *got = recs.recs[r];
        const char *id = bt_header(got, "ce_id");
        const td_event_t *ev = NULL;
        for (int i = 0; i < TOTAL && !ev; i++)
            if (!strcmp(evs[i]->id, id)) ev = evs[i];
        assert_non_null(ev);
        td_record_t *want = td_event_to_record(ev, "tidings.orders");
        assert_int_equal(got->key_len, want->key_len);
        assert_memory_equal(got->key, want->key, want->key_len);
        assert_int_equal(got->value_len, want->value_len);
        assert_memory_equal(got->value, want->value, want->value_len);
        assert_int_equal(got->header_cnt, want->header_cnt);
        for (size_t h = 0; h < want->header_cnt; h++) {
            assert_string_equal(got->headers[h].name, want->headers[h].name);
            assert_int_equal(got->headers[h].len, want->headers[h].len);
            assert_memory_equal(got->headers[h].value, want->headers[h].value,
                                want->headers[h].len);
        }
        td_record_free(want);
    }
    for (int k = 0; k < KEYS; k++) {
        int32_t part = -1;
        for (size_t r = 0; r < recs.cnt; r++) {
            if (strcmp(recs.recs[r]->key, keys[k])) continue;
            if (part < 0) part = recs.recs[r]->partition;
            assert_int_equal(recs.recs[r]->partition, part);
        }
    }
    ts_records_free(&recs);

    char labels[256];
    td_metric_labels(labels, sizeof(labels), "topic", "tidings.orders", "type", "TestEvent",
                     "result", "handled", NULL);
    assert_true(td_metric_value("tidings_events_consumed_total", labels) >= TOTAL);
    td_metric_labels(labels, sizeof(labels), "topic", "tidings.orders", "type", "TestEvent", NULL);
    assert_true(td_metric_value("tidings_events_produced_total", labels) >= TOTAL);
    /* Batches: at least one, never more than the records. */
    td_metric_labels(labels, sizeof(labels), "group", "test-0001", NULL);
    double batches = td_metric_value("tidings_consumer_batch_seconds", labels);
    assert_true(batches >= 1 && batches <= TOTAL);
    assert_int_equal(td_outbox_backlog(pdb), 0);

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
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_roundtrip)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
