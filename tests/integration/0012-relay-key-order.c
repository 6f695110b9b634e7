/* SPEC section 5: the relay never publishes an event before an earlier
 * event of the same key that it has not published. An outbox row that
 * cannot be published (here, larger than the producer's message.max.bytes,
 * refused on every try) holds its key: the rows of that key committed
 * after it stay in the outbox, while every other key's rows go out. Once
 * the operator removes the stuck row, the held rows follow, in order. */
#include "tbus.h"

#define LATER 20 /* rows of the held key after the stuck one */
#define OTHER 50 /* rows of other keys, committed between them */

static td_event_t *event_of(const char *key, int n, size_t pad)
{
    json_t *data = json_pack("{s:i}", "n", n);
    if (pad) {
        char *big = td_calloc(1, pad + 1);
        memset(big, 'x', pad);
        json_object_set_new(data, "pad", json_string(big));
        free(big);
    }
    return td_event_new("orders", "TestEvent", key, data);
}

static int n_of(const td_record_t *rec)
{
    json_t *v = json_loadb(rec->value, rec->value_len, 0, NULL);
    int n = (int)json_integer_value(json_object_get(v, "n"));
    json_decref(v);
    return n;
}

static void test_a_stuck_row_holds_only_its_key(void **state)
{
    (void)state;
    bt_env_t env;
    bt_setup(&env, "0012-relay-key-order");
    td_db_t *db = bt_db(&env, "producer.db");
    char held[TD_UUID_LEN + 1], other[TD_UUID_LEN + 1];
    td_uuid_new(held);

    /* The stuck row first, then later rows of its key interleaved with
     * rows of other keys, in one transaction each. */
    td_event_t *evs[1 + LATER + OTHER];
    size_t cnt = 0;
    evs[cnt++] = event_of(held, 0, 2 * 1024 * 1024);
    for (int i = 1; i <= LATER + OTHER; i++) {
        if (i % 3 == 0 && i / 3 <= LATER) {
            evs[cnt++] = event_of(held, i, 0);
        } else {
            td_uuid_new(other);
            evs[cnt++] = event_of(other, i, 0);
        }
    }
    size_t later = 0;
    for (size_t i = 1; i < cnt; i++) later += !strcmp(evs[i]->subject, held);
    bt_publish(db, &env.cfg, evs, cnt, 1);

    td_relay_t *relay = bt_relay(&env, db);
    /* Every other key's rows are published; the held key's are not. */
    assert_true(bt_wait_count(db, "SELECT count(*) FROM td_outbox", (int64_t)(1 + later), 30000));
    ts_records_t recs =
        ts_read_topic(env.cfg.brokers, "tidings.orders", cnt - 1 - later, 500, 30000);
    assert_int_equal(recs.cnt, cnt - 1 - later);
    for (size_t r = 0; r < recs.cnt; r++)
        assert_string_not_equal((const char *)recs.recs[r]->key, held);
    ts_records_free(&recs);
    /* It stays so over further tries (the stuck row is retried alone). */
    td_sleep_ms(1500);
    assert_int_equal(bt_query_int(db, "SELECT count(*) FROM td_outbox"), (int64_t)(1 + later));

    /* The operator removes the stuck row: the key's rows follow in order. */
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "DELETE FROM td_outbox WHERE id = (SELECT min(id) FROM"
                                    " td_outbox)"),
                     0);
    assert_int_equal(td_db_commit(db), 0);
    td_relay_kick(relay);
    assert_int_equal(td_relay_drain(relay, 30000), 0);
    recs = ts_read_topic(env.cfg.brokers, "tidings.orders", cnt - 1, 500, 30000);
    assert_int_equal(recs.cnt, cnt - 1);
    int last = -1;
    size_t seen = 0;
    for (size_t r = 0; r < recs.cnt; r++) {
        if (strcmp((const char *)recs.recs[r]->key, held)) continue;
        int n = n_of(recs.recs[r]);
        assert_true(n > last);
        last = n;
        seen++;
    }
    assert_int_equal(seen, later);
    ts_records_free(&recs);

    td_relay_stop(relay, 5000);
    for (size_t i = 0; i < cnt; i++) td_event_free(evs[i]);
    td_db_close(db);
    bt_teardown(&env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_a_stuck_row_holds_only_its_key)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
