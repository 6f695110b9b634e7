/* Records deleted before a consumer read them are never passed over in
 * silence. A consumer group commits offset 12 and stops; then so much is
 * written to the partition that the embedded broker (about 5 MiB per
 * partition) drops the oldest records, including the group's position. The
 * next consumer of the group resumes at the start of what is left, and the
 * exact number of records it never saw is logged as an error and counted
 * in tidings_consumer_records_lost_total. */
#include "tbus.h"

#define TOPIC     "tidings.lost"
#define FIRST     12
#define BULK      7000 /* x ~1 KiB: well past the broker's 5 MiB */
#define PAD_BYTES 1000

static td_consumer_t *lost_consumer(const bt_env_t *env, td_db_t *db)
{
    static const char *const topics[] = {"lost"};
    static const td_handler_t handlers[] = {{.type = "UnrelatedEvent", .fn = bt_effect_handler}};
    char err[512];
    td_consumer_opts_t opts = {
        .group = "test-0009",
        .topics = topics,
        .topic_cnt = 1,
        .handlers = handlers,
        .handler_cnt = 1,
        .db = db,
    };
    td_consumer_t *cons = td_consumer_start(&env->cfg, &opts, err, sizeof(err));
    if (!cons) fprintf(stderr, "%s\n", err);
    assert_non_null(cons);
    return cons;
}

/* cnt copies of one valid CloudEvent of a type nobody handles (skipped
 * quickly: the test is about offsets, not handlers). */
static void produce_bulk(const char *brokers, int cnt)
{
    char *pad = td_malloc(PAD_BYTES + 1);
    memset(pad, 'x', PAD_BYTES);
    pad[PAD_BYTES] = '\0';
    td_event_t *ev = td_event_new("orders", "FillerEvent", "k", json_pack("{s:s}", "pad", pad));
    td_record_t *rec = td_event_to_record(ev, TOPIC);
    free(pad);

    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, NULL, 0);
    rd_kafka_conf_set(conf, "linger.ms", "5", NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(rk);
    for (int i = 0; i < cnt; i++) {
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(rec->header_cnt);
        for (size_t h = 0; h < rec->header_cnt; h++)
            rd_kafka_header_add(hdrs, rec->headers[h].name, -1, rec->headers[h].value,
                                (ssize_t)rec->headers[h].len);
        rd_kafka_resp_err_t e;
        while ((e = rd_kafka_producev(rk, RD_KAFKA_V_TOPIC(TOPIC), RD_KAFKA_V_PARTITION(0),
                                      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                                      RD_KAFKA_V_KEY(rec->key, rec->key_len),
                                      RD_KAFKA_V_VALUE(rec->value, rec->value_len),
                                      RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END)) ==
               RD_KAFKA_RESP_ERR__QUEUE_FULL)
            rd_kafka_poll(rk, 10);
        assert_int_equal(e, 0);
    }
    assert_int_equal(rd_kafka_flush(rk, 60000), 0);
    rd_kafka_destroy(rk);
    td_record_free(rec);
    td_event_free(ev);
}

static void watermarks(const char *brokers, int64_t *lo, int64_t *hi)
{
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "bootstrap.servers", brokers, NULL, 0);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(rk);
    assert_int_equal(rd_kafka_query_watermark_offsets(rk, TOPIC, 0, lo, hi, 10000), 0);
    rd_kafka_destroy(rk);
}

typedef struct lost_arg {
    const char *labels;
    double want;
} lost_arg_t;

static bool lost_counted(void *arg)
{
    lost_arg_t *a = arg;
    return td_metric_value("tidings_consumer_records_lost_total", a->labels) >= a->want;
}

static void test_records_lost(void **state)
{
    (void)state;
    bt_env_t env;
    bt_setup(&env, "0009-records-lost");
    assert_int_equal(td_broker_create_topic(env.broker, TOPIC, 1), 0);
    td_db_t *db = bt_db(&env, "consumer.db");
    char labels[128];
    td_metric_labels(labels, sizeof(labels), "topic", TOPIC, NULL);

    produce_bulk(env.cfg.brokers, FIRST);
    td_consumer_t *cons = lost_consumer(&env, db);
    assert_true(bt_wait_processed(cons, FIRST, 60000));
    td_consumer_stop(cons); /* commits offset FIRST */

    produce_bulk(env.cfg.brokers, BULK);
    int64_t lo = -1, hi = -1;
    watermarks(env.cfg.brokers, &lo, &hi);
    assert_int_equal(hi, FIRST + BULK);
    assert_true(lo > FIRST); /* the group's position is gone */
    assert_int_equal(td_metric_value("tidings_consumer_records_lost_total", labels), 0);

    cons = lost_consumer(&env, db);
    lost_arg_t a = {labels, (double)(lo - FIRST)};
    assert_true(ts_wait_until(lost_counted, &a, 60000));
    /* Everything still there is consumed, and the count is exact. */
    assert_true(bt_wait_processed(cons, hi - lo, 60000));
    assert_int_equal(td_metric_value("tidings_consumer_records_lost_total", labels), lo - FIRST);

    td_consumer_stop(cons);
    td_db_close(db);
    bt_teardown(&env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_records_lost)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
