/* Fan-out: an event that concerns many users (a product's watchers, the
 * users who want new products) becomes a job whose recipients are fixed
 * when the event is consumed, in one set-based INSERT ... SELECT; a worker
 * then creates their notifications a chunk per transaction, so a crash
 * resumes the job where its last chunk committed (see notifications.h). */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "notifications/notifications.h"
#include "notifications/notifications_internal.h"
#include "tidings/log.h"

/* ---- fan-out ---------------------------------------------------------------------- */

/* Queues d for the audience of rule: the recipients are chosen now, in
 * one statement, with muted users left out. */
int notif__queue_fanout(notif_t *n, const notif_rule_t *rule, const notif_draft_t *d,
                        const json_t *event_data)
{
    char traceparent[TD_TRACEPARENT_LEN + 1];
    td_trace_format(&d->cause->trace, traceparent);
    sqlite3_stmt *st = td_db_prepare(
        n->db, "INSERT INTO fanout_jobs (cause_id, correlation_id, traceparent, type, title, body,"
               " data, created_ms, cause_time) VALUES (?,?,?,?,?,?,?,?,?)");
    sqlite3_bind_text(st, 1, d->cause->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, d->cause->correlationid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, traceparent, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, d->type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, d->title, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, d->body, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 7, d->data, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 8, td_now_ms());
    sqlite3_bind_text(st, 9, d->cause->time, -1, SQLITE_TRANSIENT);
    int rc = td_db_run(n->db, st);
    if (rc) return rc;
    int64_t job = sqlite3_last_insert_rowid(td_db_sqlite(n->db));

    if (rule->to == NOTIF_TO_WATCHERS) {
        st = td_db_prepare(n->db, "INSERT INTO fanout_recipients (job_id, user_id)"
                                  " SELECT ?1, w.user_id FROM watches w WHERE w.product_id = ?2"
                                  " AND NOT EXISTS (SELECT 1 FROM mutes m"
                                  "   WHERE m.user_id = w.user_id AND m.type = ?3)");
        sqlite3_bind_text(st, 2, json_string_value(json_object_get(event_data, "productId")), -1,
                          SQLITE_TRANSIENT);
    } else {
        st = td_db_prepare(n->db, "INSERT INTO fanout_recipients (job_id, user_id)"
                                  " SELECT ?1, p.user_id FROM prefs p WHERE p.new_products = 1"
                                  " AND NOT EXISTS (SELECT 1 FROM mutes m"
                                  "   WHERE m.user_id = p.user_id AND m.type = ?3)");
    }
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_text(st, 3, d->type, -1, SQLITE_TRANSIENT);
    if ((rc = td_db_run(n->db, st)) != 0) return rc;
    int recipients = td_db_changes(n->db);
    if (recipients == 0) {
        st = td_db_prepare(n->db, "DELETE FROM fanout_jobs WHERE id = ?");
        sqlite3_bind_int64(st, 1, job);
        return td_db_run(n->db, st);
    }
    td_debug("fan-out job %" PRId64 " for %s: %d recipients", job, d->type, recipients);
    if (n->wake) n->wake(n->wake_arg);
    return 0;
}

int notif_fanout_step(notif_t *n, size_t *created)
{
    int chunk = n->fanout_chunk > 0 ? n->fanout_chunk : 250;
    *created = 0;
    int rc = td_db_begin(n->db);
    if (rc) return rc;

    sqlite3_stmt *job = td_db_prepare(
        n->db, "SELECT id, cause_id, correlation_id, traceparent, type, title, body, data,"
               " cause_time FROM fanout_jobs ORDER BY id LIMIT 1");
    if (sqlite3_step(job) != SQLITE_ROW) {
        td_db_done(job);
        td_db_rollback(n->db);
        return 0;
    }
    int64_t job_id = sqlite3_column_int64(job, 0);
    /* The cause as far as NotificationCreatedEvent's lineage needs it. */
    td_event_t cause;
    memset(&cause, 0, sizeof(cause));
    snprintf(cause.id, sizeof(cause.id), "%s", (const char *)sqlite3_column_text(job, 1));
    cause.correlationid = (char *)sqlite3_column_text(job, 2);
    /* The cause's time makes the recipients' notification ids (jobs
     * queued before it was kept have none: their ids then count from 0). */
    snprintf(cause.time, sizeof(cause.time), "%s",
             sqlite3_column_text(job, 8) ? (const char *)sqlite3_column_text(job, 8) : "");
    if (td_trace_parse((const char *)sqlite3_column_text(job, 3), &cause.trace, NULL, 0) != 0)
        td_trace_new(&cause.trace);
    notif_draft_t d = {(const char *)sqlite3_column_text(job, 4),
                       (const char *)sqlite3_column_text(job, 5),
                       (const char *)sqlite3_column_text(job, 6),
                       (const char *)sqlite3_column_text(job, 7),
                       &cause,
                       NULL,
                       NULL,
                       "",
                       0};
    notif__draft_ready(&d, NULL);

    sqlite3_stmt *rcp = td_db_prepare(n->db, "SELECT user_id FROM fanout_recipients"
                                             " WHERE job_id = ? ORDER BY user_id LIMIT ?");
    sqlite3_bind_int64(rcp, 1, job_id);
    sqlite3_bind_int(rcp, 2, chunk);
    int cnt = 0;
    char last[TD_UUID_LEN + 1] = "";
    while ((rc = sqlite3_step(rcp)) == SQLITE_ROW) {
        const char *user_id = (const char *)sqlite3_column_text(rcp, 0);
        bool made;
        if ((rc = notif__create_one(n, &d, user_id, &made)) != 0) break;
        if (made) (*created)++;
        snprintf(last, sizeof(last), "%s", user_id);
        cnt++;
    }
    td_db_done(rcp);
    if (rc != SQLITE_DONE) {
        rc = rc < 0 ? rc : TD_EIO;
        goto fail;
    }

    sqlite3_stmt *st;
    if (cnt < chunk) {
        st = td_db_prepare(n->db, "DELETE FROM fanout_jobs WHERE id = ?");
        sqlite3_bind_int64(st, 1, job_id);
    } else {
        st =
            td_db_prepare(n->db, "DELETE FROM fanout_recipients WHERE job_id = ? AND user_id <= ?");
        sqlite3_bind_int64(st, 1, job_id);
        sqlite3_bind_text(st, 2, last, -1, SQLITE_TRANSIENT);
    }
    if ((rc = td_db_run(n->db, st)) != 0) goto fail;
    notif__draft_clear(&d);
    td_db_done(job);
    if ((rc = td_db_commit(n->db)) != 0) return rc;
    return 1;

fail:
    notif__draft_clear(&d);
    td_db_done(job);
    td_db_rollback(n->db);
    *created = 0;
    return rc;
}

int64_t notif_fanout_pending(td_db_t *db)
{
    return td_db_read_int(db, "SELECT count(*) FROM fanout_recipients");
}
