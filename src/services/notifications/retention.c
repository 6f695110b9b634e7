/* Retention of notifications (TIDINGS_NOTIFICATION_RETENTION_DAYS): what
 * is older than the cutoff is deleted, except each user's latest
 * notification, which is kept as a tombstone (texts blanked, deleted = 1)
 * so that the user's next seq still follows it: a client holding a
 * Last-Event-ID never sees seq start again.
 *
 * Rows are looked at in rowid order, which is the order they were made
 * in: the scan stops at the first one young enough to keep, so a run over
 * a table with nothing old reads only the tombstones at its front. The
 * candidates are found on a reader; each chunk of them goes in one unit,
 * where the "latest" test is made again (a new notification may have
 * arrived since). */
#include <stdlib.h>
#include <string.h>

#include "notifications/notifications.h"
#include "tidings/uuid.h"

static size_t old_rows(td_db_t *db, const char *cutoff, int64_t *rowids, size_t max)
{
    size_t n = 0;
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(
        db, "SELECT rowid, created_at,"
            " seq = (SELECT MAX(seq) FROM notifications m WHERE m.user_id = n.user_id),"
            " deleted = 1 AND title = '' FROM notifications n ORDER BY rowid");
    while (n < max && sqlite3_step(st) == SQLITE_ROW) {
        const char *created = (const char *)sqlite3_column_text(st, 1);
        if (!created || strcmp(created, cutoff) >= 0) break;
        bool latest = sqlite3_column_int(st, 2), tombstone = sqlite3_column_int(st, 3);
        if (latest && tombstone) continue;
        rowids[n++] = sqlite3_column_int64(st, 0);
    }
    td_db_done(st);
    td_db_unlock(db);
    return n;
}

static int prune_chunk(td_db_t *db, const int64_t *rowids, size_t n, int64_t *deleted)
{
    int rc = td_db_begin(db);
    if (rc != 0) return rc;
    int64_t gone = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        sqlite3_stmt *st = td_db_prepare(
            db, "DELETE FROM notifications WHERE rowid = ?1 AND seq < (SELECT MAX(seq) FROM"
                " notifications m WHERE m.user_id = notifications.user_id)");
        sqlite3_bind_int64(st, 1, rowids[i]);
        rc = td_db_run(db, st);
        if (rc != 0) break;
        if (td_db_changes(db) > 0) {
            gone++;
            continue;
        }
        st = td_db_prepare(db, "UPDATE notifications SET deleted = 1, title = '', body = '',"
                               " data = '{}' WHERE rowid = ?1");
        sqlite3_bind_int64(st, 1, rowids[i]);
        rc = td_db_run(db, st);
        gone += rc == 0 && td_db_changes(db) > 0;
    }
    if (rc != 0) {
        td_db_rollback(db);
        return rc;
    }
    if ((rc = td_db_commit(db)) == 0) *deleted += gone;
    return rc;
}

int notif_prune(td_db_t *db, int64_t cutoff_ms, int64_t *deleted)
{
    char cutoff[TD_TIME_LEN + 1];
    td_time_format(cutoff_ms, cutoff);
    int64_t *rowids = malloc(TD_PRUNE_CHUNK * sizeof(*rowids));
    if (!rowids) return TD_EIO;
    int rc = 0;
    for (;;) {
        size_t n = old_rows(db, cutoff, rowids, TD_PRUNE_CHUNK);
        if (n == 0 || (rc = prune_chunk(db, rowids, n, deleted)) != 0) break;
        if (n < TD_PRUNE_CHUNK) break;
    }
    free(rowids);
    return rc;
}
