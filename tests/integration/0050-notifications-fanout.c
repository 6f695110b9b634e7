/* 10,000 watchers of one product and a price drop: every watcher gets
 * exactly one notification (and its NotificationCreatedEvent), a watcher
 * with an open stream sees it live, and while the fan-out runs the
 * consumer and the HTTP API keep answering (an event behind the price drop
 * is notified, the inbox is read; the times are printed). The watchers are
 * written straight into the service's database: POST /watches is tested
 * elsewhere, and ten thousand requests would only measure curl. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>

#include "tnotif.h"
#include "tidings/metrics.h"

#define WATCHERS 10000

static nt_world_t W;

static int world_start(void **state)
{
    (void)state;
    nt_start(&W, "0050-notifications-fanout");
    return 0;
}

static int world_stop(void **state)
{
    (void)state;
    nt_stop(&W);
    return 0;
}

static sqlite3 *open_db(void)
{
    char *path = td_asprintf("%s/notifications.db", W.dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    free(path);
    return db;
}

static int64_t query_int(sqlite3 *db, const char *sql, const char *arg)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (arg) sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    td_db_done(st);
    return v;
}

static void test_ten_thousand_watchers_all_get_theirs(void **state)
{
    (void)state;
    char pid[TD_UUID_LEN + 1], body[128];
    td_uuid_new(pid);
    char live_user[TD_UUID_LEN + 1] = "", other[TD_UUID_LEN + 1] = "";
    char *live_token = nt_token(&W, live_user);
    char *other_token = nt_token(&W, other);

    /* The product, known once a watch on it succeeds. */
    nt_produce(&W, "products", "ProductCreatedEvent", pid,
               json_pack("{s:s, s:s, s:i, s:i}", "productId", pid, "title", "Console", "price", 500,
                         "quantity", 20),
               NULL);
    snprintf(body, sizeof(body), "{\"productId\":\"%s\"}", pid);
    char url[128];
    snprintf(url, sizeof(url), "%s/watches", W.url);
    long status = 0;
    int64_t deadline = td_mono_ms() + NT_WAIT_MS;
    while (status != 201 && td_mono_ms() < deadline) {
        ts_resp_t r = ts_http("POST", url, live_token, body, NULL, NULL);
        status = r.status;
        ts_resp_free(&r);
        if (status != 201) td_sleep_ms(20);
    }
    assert_int_equal(status, 201);
    nt_sse_t *stream = nt_stream_live(&W, live_token, live_user);

    /* The other watchers, in one transaction beside the service. */
    sqlite3 *db = open_db();
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "INSERT INTO watches (user_id, product_id, created_at)"
                                        " VALUES (?, ?, '2026-01-01T00:00:00.000Z')",
                                        -1, &st, NULL),
                     SQLITE_OK);
    for (int i = 1; i < WATCHERS; i++) {
        char user[TD_UUID_LEN + 1];
        snprintf(user, sizeof(user), "00000000-0000-4000-8000-%012d", i);
        sqlite3_bind_text(st, 1, user, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, pid, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    td_db_done(st);
    assert_int_equal(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(query_int(db, "SELECT COUNT(*) FROM watches WHERE product_id = ?", pid),
                     WATCHERS);

    /* The price drop; while its fan-out runs, the API answers and an event
     * for someone else is notified. */
    int64_t t0 = td_mono_ms();
    nt_produce(&W, "products", "ProductUpdatedEvent", pid,
               json_pack("{s:s, s:s, s:i, s:i, s:i, s:i}", "productId", pid, "title", "Console",
                         "price", 450, "quantity", 20, "previousPrice", 500, "previousQuantity",
                         20),
               NULL);
    deadline = td_mono_ms() + NT_WAIT_MS;
    while (td_metric_value("tidings_notifications_fanout_pending", NULL) == 0 &&
           td_mono_ms() < deadline)
        td_sleep_ms(1);
    int64_t t_queued = td_mono_ms() - t0;
    int64_t t1 = td_mono_ms();
    size_t n = nt_inbox_count(&W, other_token);
    int64_t t_read = td_mono_ms() - t1;
    t1 = td_mono_ms();
    nt_login(&W, other);
    assert_true(nt_wait_inbox(&W, other_token, 1));
    int64_t t_other = td_mono_ms() - t1;
    int64_t pending_then = (int64_t)td_metric_value("tidings_notifications_fanout_pending", NULL);

    const char *count_sql = "SELECT COUNT(*) FROM notifications WHERE type = ?";
    deadline = td_mono_ms() + 60000;
    while (query_int(db, count_sql, "ProductUpdatedEvent") < WATCHERS && td_mono_ms() < deadline)
        td_sleep_ms(20);
    int64_t t_all = td_mono_ms() - t0;
    print_message("fan-out to %d watchers: queued %lld ms and all made %lld ms after the event; "
                  "meanwhile a GET /notifications took %lld ms and a sign-in (produce, consume, "
                  "notify) %lld ms, with %lld recipients still pending\n",
                  WATCHERS, (long long)t_queued, (long long)t_all, (long long)t_read,
                  (long long)t_other, (long long)pending_then);
    assert_int_equal(n, 0);

    /* Exactly one each, seq 1 for the inserted watchers. */
    assert_int_equal(query_int(db, count_sql, "ProductUpdatedEvent"), WATCHERS);
    assert_int_equal(query_int(db,
                               "SELECT COUNT(DISTINCT user_id) FROM notifications WHERE type = ?",
                               "ProductUpdatedEvent"),
                     WATCHERS);
    assert_int_equal(query_int(db,
                               "SELECT COUNT(*) FROM notifications WHERE type = ? AND seq != 1"
                               " AND user_id LIKE '00000000-%'",
                               "ProductUpdatedEvent"),
                     0);
    sqlite3_close(db);
    char labels[64];
    snprintf(labels, sizeof(labels), "type=\"ProductUpdatedEvent\"");
    assert_int_equal((int64_t)td_metric_value("tidings_notifications_created_total", labels),
                     WATCHERS);

    /* The watcher with a stream saw it live. */
    assert_true(nt_sse_wait(stream, 1, NT_WAIT_MS));
    json_t *j = nt_sse_json(stream, 0);
    assert_string_equal(json_string_value(json_object_get(j, "title")), "Price drop: Console");
    assert_string_equal(json_string_value(json_object_get(j, "body")),
                        "Console now costs 450.00 instead of 500.00.");
    json_decref(j);
    nt_sse_close(stream);

    /* And every one went out as a NotificationCreatedEvent. */
    char *topic = td_topic_name(&W.cfg, "notifications");
    ts_records_t recs = ts_read_topic(W.brokers, topic, WATCHERS, 500, 60000);
    size_t drops = 0;
    for (size_t i = 0; i < recs.cnt; i++) {
        json_t *v = json_loads(recs.recs[i]->value, 0, NULL);
        if (!strcmp(json_string_value(json_object_get(v, "type")), "ProductUpdatedEvent")) drops++;
        json_decref(v);
    }
    assert_int_equal(drops, WATCHERS);
    ts_records_free(&recs);
    free(topic);
    assert_int_equal((int64_t)td_metric_value("tidings_notifications_fanout_pending", NULL), 0);
    free(live_token);
    free(other_token);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ten_thousand_watchers_all_get_theirs),
    };
    return cmocka_run_group_tests(tests, world_start, world_stop);
}
