/* Retention (SPEC section 1): the jobs that delete old inbox rows, failed
 * deliveries and notifications, run the way the checkpoint thread runs
 * them (td_db_prune_now), with the counts they add to
 * tidings_retention_deleted_total. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "notifications/notifications.h"
#include "tidings/bus.h"
#include "tidings/db.h"
#include "tidings/delivery.h"
#include "tidings/metrics.h"
#include "tidings/uuid.h"

#define DAY_MS 86400000LL

static td_db_t *open_db(void)
{
    char err[256];
    td_db_t *db = td_db_open(":memory:", notif_migrations, notif_migration_cnt, err, sizeof(err));
    assert_non_null(db);
    assert_int_equal(td_delivery_init(db), 0);
    return db;
}

static void exec(td_db_t *db, const char *sql)
{
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, sql), 0);
    assert_int_equal(td_db_commit(db), 0);
}

static int64_t count(td_db_t *db, const char *sql)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, sql);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(db);
    return n;
}

static double deleted_metric(const char *table)
{
    char labels[128];
    td_metric_labels(labels, sizeof(labels), "table", table, NULL);
    return td_metric_value("tidings_retention_deleted_total", labels);
}

static void add_notification(td_db_t *db, const char *user, int seq, int64_t created_ms)
{
    char when[TD_TIME_LEN + 1], sql[512];
    td_time_format(created_ms, when);
    snprintf(sql, sizeof(sql),
             "INSERT INTO notifications (id, user_id, seq, type, title, body, data, created_at,"
             " cause_id) VALUES ('%s-%d', '%s', %d, 'OrderCreatedEvent', 'Order received',"
             " 'text', '{}', '%s', 'cause-%s-%d')",
             user, seq, user, seq, when, user, seq);
    exec(db, sql);
}

/* Old notifications go, each user's latest stays as a tombstone so seq
 * never starts again, young ones stay whole; a second run finds nothing. */
static void test_notifications_keep_the_latest_seq(void **state)
{
    (void)state;
    td_db_t *db = open_db();
    int64_t now = td_now_ms();
    double before = deleted_metric("notifications");
    for (int s = 1; s <= 3; s++) add_notification(db, "ann", s, now - 100 * DAY_MS + s);
    add_notification(db, "bob", 1, now - 100 * DAY_MS);
    add_notification(db, "cid", 1, now - 100 * DAY_MS);
    add_notification(db, "cid", 2, now - DAY_MS);
    td_db_prune_add(db, "notifications", notif_prune, 90 * DAY_MS);
    assert_int_equal(td_db_prune_now(db), 5);

    assert_int_equal(count(db, "SELECT count(*) FROM notifications WHERE user_id = 'ann'"), 1);
    assert_int_equal(count(db, "SELECT seq FROM notifications WHERE user_id = 'ann' AND deleted = 1"
                               " AND title = '' AND body = ''"),
                     3);
    assert_int_equal(count(db, "SELECT count(*) FROM notifications WHERE user_id = 'bob'"
                               " AND deleted = 1"),
                     1);
    assert_int_equal(count(db, "SELECT count(*) FROM notifications WHERE user_id = 'cid'"), 1);
    assert_int_equal(count(db, "SELECT seq FROM notifications WHERE user_id = 'cid' AND deleted = 0"
                               " AND title = 'Order received'"),
                     2);
    int64_t last = 0;
    assert_int_equal(notif_last_seq(db, "ann", &last), 0);
    assert_int_equal(last, 3);

    assert_int_equal(td_db_prune_now(db), 0);
    assert_true(deleted_metric("notifications") - before == 5);
    td_db_close(db);
}

/* 0 days keeps notifications forever: the job is removed. */
static void test_zero_days_keeps_everything(void **state)
{
    (void)state;
    td_db_t *db = open_db();
    add_notification(db, "ann", 1, td_now_ms() - 1000 * DAY_MS);
    add_notification(db, "ann", 2, td_now_ms() - 1000 * DAY_MS);
    td_db_prune_add(db, "notifications", notif_prune, 90 * DAY_MS);
    td_db_prune_add(db, "notifications", notif_prune, 0);
    assert_int_equal(td_db_prune_now(db), 0);
    assert_int_equal(count(db, "SELECT count(*) FROM notifications WHERE deleted = 0"), 2);
    td_db_close(db);
}

/* The inbox forgets what it processed before the cutoff, in chunks, and
 * keeps the rest. */
static void test_inbox_forgets_old_ids(void **state)
{
    (void)state;
    td_db_t *db = open_db();
    int64_t now = td_now_ms();
    char sql[256];
    for (int i = 0; i < 2 * TD_PRUNE_CHUNK + 10; i++) {
        snprintf(
            sql, sizeof(sql),
            "INSERT INTO td_inbox (event_id, topic, processed_ms) VALUES ('old-%d', 't', %lld)", i,
            (long long)(now - 10 * DAY_MS));
        exec(db, sql);
    }
    exec(db, "INSERT INTO td_inbox (event_id, topic, processed_ms) VALUES ('new', 't', "
             "strftime('%s','now') * 1000)");
    td_db_prune_add(db, "td_inbox", td_inbox_prune, DAY_MS);
    assert_int_equal(td_db_prune_now(db), 2 * TD_PRUNE_CHUNK + 10);
    assert_int_equal(count(db, "SELECT count(*) FROM td_inbox"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM td_inbox WHERE event_id = 'new'"), 1);
    td_db_close(db);
}

/* Failed deliveries go after the cutoff; pending ones never do. */
static void test_failed_deliveries_go(void **state)
{
    (void)state;
    td_db_t *db = open_db();
    int64_t old = td_now_ms() - 30 * DAY_MS;
    char sql[1024];
    const char *states[] = {"failed", "pending"};
    for (int i = 0; i < 2; i++) {
        snprintf(sql, sizeof(sql),
                 "INSERT INTO td_delivery (channel, target_id, event_id, url, headers, body,"
                 " state, next_at_ms, created_ms, failed_ms, origin_topic, origin_partition,"
                 " origin_offset) VALUES ('webhook', 'w', 'e%d', 'https://example.com/', '',"
                 " x'00', '%s', %lld, %lld, %lld, 't', 0, %d)",
                 i, states[i], (long long)old, (long long)old, (long long)old, i);
        exec(db, sql);
    }
    td_db_prune_add(db, "td_delivery", td_delivery_prune, 7 * DAY_MS);
    assert_int_equal(td_db_prune_now(db), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM td_delivery WHERE state = 'pending'"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM td_delivery"), 1);
    td_db_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_notifications_keep_the_latest_seq),
        cmocka_unit_test(test_zero_days_keeps_everything),
        cmocka_unit_test(test_inbox_forgets_old_ids),
        cmocka_unit_test(test_failed_deliveries_go),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
