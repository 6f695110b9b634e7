/* Digests (see digest.h): the pure window and text logic, and the two
 * tables that keep each open window and its members. */
#include "notifications/digest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/common.h"

const char notif_digest_schema[] =
    "ALTER TABLE prefs ADD COLUMN digest_minutes INTEGER NOT NULL DEFAULT 0;"
    "CREATE TABLE digests ("
    "  user_id TEXT NOT NULL,"
    "  channel TEXT NOT NULL,"
    "  target_id TEXT NOT NULL,"
    "  window_end_ms INTEGER NOT NULL,"
    "  delivery_id INTEGER," /* the held td_delivery row of the window's digest */
    "  PRIMARY KEY (user_id, channel, target_id)) WITHOUT ROWID;"
    "CREATE TABLE digest_items ("
    "  n INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  user_id TEXT NOT NULL,"
    "  channel TEXT NOT NULL,"
    "  target_id TEXT NOT NULL,"
    "  title TEXT NOT NULL);"
    "CREATE INDEX digest_items_key ON digest_items (user_id, channel, target_id);";

bool notif_digest_hold(int64_t now_ms, int64_t open_end_ms, int minutes, int64_t minute_ms,
                       int64_t *window_end_ms)
{
    if (minutes <= 0) {
        *window_end_ms = 0;
        return false;
    }
    if (open_end_ms > now_ms) {
        *window_end_ms = open_end_ms;
        return true;
    }
    *window_end_ms = now_ms + (int64_t)minutes * minute_ms;
    return false;
}

void notif_digest_text(const char *const *titles, size_t n, char **title, char **body)
{
    *title = td_asprintf("%zu new notification%s", n, n == 1 ? "" : "s");
    size_t cap = 1, shown = n < NOTIF_DIGEST_LIST_MAX ? n : NOTIF_DIGEST_LIST_MAX;
    for (size_t i = 0; i < shown; i++) cap += strlen(titles[i]) + 2;
    cap += 32;
    char *out = td_malloc(cap);
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < shown; i++)
        used += (size_t)snprintf(out + used, cap - used, "%s%s", i ? ", " : "", titles[i]);
    if (n > shown) snprintf(out + used, cap - used, " and %zu more", n - shown);
    *body = out;
}

int notif_digest_minutes(td_db_t *db, const char *user_id)
{
    sqlite3_stmt *st = td_db_prepare(db, "SELECT digest_minutes FROM prefs WHERE user_id = ?");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    int m = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
    td_db_done(st);
    return m;
}

int64_t notif_digest_minute_ms(void)
{
#ifdef TIDINGS_TEST_HOOKS
    const char *v = getenv("TIDINGS_TEST_DIGEST_MINUTE_MS");
    if (v && atoll(v) > 0) return atoll(v);
#endif
    return 60000;
}

static void bind_key(sqlite3_stmt *st, const char *user_id, const char *channel,
                     const char *target_id)
{
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, channel, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, target_id, -1, SQLITE_TRANSIENT);
}

int notif_digest_step(td_db_t *db, const char *user_id, const char *channel, const char *target_id,
                      const char *title, int minutes, notif_digest_t *d)
{
    memset(d, 0, sizeof(*d));
    sqlite3_stmt *st = td_db_prepare(db, "SELECT window_end_ms, delivery_id FROM digests"
                                         " WHERE user_id = ? AND channel = ? AND target_id = ?");
    bind_key(st, user_id, channel, target_id);
    int64_t open_end = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        open_end = sqlite3_column_int64(st, 0);
        d->delivery_id = sqlite3_column_int64(st, 1);
    }
    td_db_done(st);
    d->hold = notif_digest_hold(td_now_ms(), open_end, minutes, notif_digest_minute_ms(),
                                &d->window_end_ms);
    if (!d->hold) {
        d->delivery_id = 0;
        st = td_db_prepare(db, "DELETE FROM digest_items WHERE user_id = ? AND channel = ?"
                               " AND target_id = ?");
        bind_key(st, user_id, channel, target_id);
        if (td_db_run(db, st) != 0) return TD_EIO;
        st = td_db_prepare(db, "INSERT INTO digests (user_id, channel, target_id, window_end_ms)"
                               " VALUES (?, ?, ?, ?) ON CONFLICT (user_id, channel, target_id)"
                               " DO UPDATE SET window_end_ms = excluded.window_end_ms,"
                               " delivery_id = NULL");
        bind_key(st, user_id, channel, target_id);
        sqlite3_bind_int64(st, 4, d->window_end_ms);
        return td_db_run(db, st) == 0 ? 0 : TD_EIO;
    }
    st = td_db_prepare(db, "INSERT INTO digest_items (user_id, channel, target_id, title)"
                           " VALUES (?, ?, ?, ?)");
    bind_key(st, user_id, channel, target_id);
    sqlite3_bind_text(st, 4, title ? title : "", -1, SQLITE_TRANSIENT);
    if (td_db_run(db, st) != 0) return TD_EIO;
    st = td_db_prepare(db, "SELECT title FROM digest_items WHERE user_id = ? AND channel = ?"
                           " AND target_id = ? ORDER BY n");
    bind_key(st, user_id, channel, target_id);
    size_t cap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (d->title_cnt == cap) {
            cap = cap ? cap * 2 : 8;
            d->titles = td_realloc(d->titles, cap * sizeof(*d->titles));
        }
        d->titles[d->title_cnt++] = td_strdup((const char *)sqlite3_column_text(st, 0));
    }
    td_db_done(st);
    return 0;
}

int notif_digest_set_delivery(td_db_t *db, const char *user_id, const char *channel,
                              const char *target_id, int64_t delivery_id)
{
    sqlite3_stmt *st = td_db_prepare(db, "UPDATE digests SET delivery_id = ? WHERE user_id = ?"
                                         " AND channel = ? AND target_id = ?");
    sqlite3_bind_int64(st, 1, delivery_id);
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, channel, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, target_id, -1, SQLITE_TRANSIENT);
    return td_db_run(db, st) == 0 ? 0 : TD_EIO;
}

void notif_digest_clear(notif_digest_t *d)
{
    for (size_t i = 0; i < d->title_cnt; i++) free(d->titles[i]);
    free(d->titles);
    memset(d, 0, sizeof(*d));
}
