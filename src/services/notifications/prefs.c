/* Preferences: muted types, newProducts, per-channel switches and mutes,
 * quiet hours and the digest interval of a user, checked whole before any
 * of it is saved (see notifications.h). */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "notifications/digest.h"
#include "notifications/notifications.h"
#include "tidings/json.h"

/* ---- preferences ------------------------------------------------------------------------ */

static const notif_channel_t *channel_find(const char *name)
{
    for (size_t i = 0; i < notif_channel_cnt; i++)
        if (strcmp(notif_channels[i].name, name) == 0) return &notif_channels[i];
    return NULL;
}

bool notif_channel_wants(td_db_t *db, const char *user_id, const char *channel, const char *type)
{
    const notif_channel_t *c = channel_find(channel);
    assert(c && "a channel of notif_channels");
    sqlite3_stmt *st = td_db_prepare(
        db, "SELECT COALESCE((SELECT enabled FROM channel_prefs WHERE user_id = ?1"
            "   AND channel = ?2), ?3)"
            " AND NOT EXISTS (SELECT 1 FROM channel_mutes WHERE user_id = ?1 AND channel = ?2"
            "   AND type = ?4)");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, channel, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, c->enabled_by_default);
    sqlite3_bind_text(st, 4, type, -1, SQLITE_TRANSIENT);
    bool wants = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
    td_db_done(st);
    return wants;
}

static json_t *channels_json(td_db_t *db, const char *user_id)
{
    json_t *out = json_object();
    for (size_t i = 0; i < notif_channel_cnt; i++) {
        const notif_channel_t *c = &notif_channels[i];
        sqlite3_stmt *st = td_db_prepare(
            db, "SELECT enabled FROM channel_prefs WHERE user_id = ? AND channel = ?");
        sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, c->name, -1, SQLITE_STATIC);
        bool enabled =
            sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) != 0 : c->enabled_by_default;
        td_db_done(st);
        json_t *muted = json_array();
        st = td_db_prepare(db, "SELECT type FROM channel_mutes WHERE user_id = ? AND channel = ?"
                               " ORDER BY type");
        sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, c->name, -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW)
            json_array_append_new(muted, json_string((const char *)sqlite3_column_text(st, 0)));
        td_db_done(st);
        json_object_set_new(out, c->name,
                            json_pack("{s:b, s:o}", "enabled", enabled, "muted", muted));
    }
    return out;
}

/* An array of rule-table event types, or TD_EINVAL naming what (field). */
static int check_types(const json_t *arr, const char *field, char *errstr, size_t errlen)
{
    if (!json_is_array(arr))
        return td_errf(errstr, errlen, TD_EINVAL, "%s must be an array of event types", field);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (!json_is_string(v))
            return td_errf(errstr, errlen, TD_EINVAL, "%s must be an array of event types", field);
        if (!notif_type_known(json_string_value(v)))
            return td_errf(errstr, errlen, TD_EINVAL, "unknown event type '%.100s' in %s",
                           json_string_value(v), field);
    }
    return 0;
}

static int check_channels(const json_t *channels, char *errstr, size_t errlen)
{
    static const char *const fields[] = {"enabled", "muted", NULL};
    if (!json_is_object(channels))
        return td_errf(errstr, errlen, TD_EINVAL,
                       "channels must be an object of push, webhook and email");
    const char *name;
    json_t *c;
    json_object_foreach((json_t *)channels, name, c)
    {
        if (!channel_find(name))
            return td_errf(errstr, errlen, TD_EINVAL,
                           "unknown channel '%.40s' (push, webhook or email)", name);
        if (!json_is_object(c))
            return td_errf(errstr, errlen, TD_EINVAL,
                           "channels.%s must be an object {enabled, muted}", name);
        int rc = td_json_only_fields(c, fields, errstr, errlen);
        if (rc) return rc;
        const json_t *enabled = json_object_get(c, "enabled");
        if (enabled && !json_is_boolean(enabled))
            return td_errf(errstr, errlen, TD_EINVAL, "channels.%s.enabled must be true or false",
                           name);
        const json_t *muted = json_object_get(c, "muted");
        char field[64];
        snprintf(field, sizeof(field), "channels.%s.muted", name);
        if (muted && (rc = check_types(muted, field, errstr, errlen)) != 0) return rc;
    }
    return 0;
}

int notif__channel_set_enabled(td_db_t *db, const char *user_id, const char *channel, bool enabled)
{
    assert(channel_find(channel));
    sqlite3_stmt *st = td_db_prepare(
        db, "INSERT INTO channel_prefs (user_id, channel, enabled) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id, channel) DO UPDATE SET enabled = excluded.enabled");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, channel, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 3, enabled);
    return td_db_run(db, st);
}

static int save_channels(td_db_t *db, const char *user_id, const json_t *channels)
{
    const char *name;
    json_t *c;
    int rc;
    json_object_foreach((json_t *)channels, name, c)
    {
        const json_t *enabled = json_object_get(c, "enabled");
        if (enabled && (rc = notif__channel_set_enabled(db, user_id, name, json_is_true(enabled))))
            return rc;
        const json_t *muted = json_object_get(c, "muted");
        if (!muted) continue;
        sqlite3_stmt *st =
            td_db_prepare(db, "DELETE FROM channel_mutes WHERE user_id = ? AND channel = ?");
        sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
        if ((rc = td_db_run(db, st)) != 0) return rc;
        size_t i;
        json_t *v;
        json_array_foreach(muted, i, v)
        {
            st = td_db_prepare(db, "INSERT OR IGNORE INTO channel_mutes (user_id, channel, type)"
                                   " VALUES (?, ?, ?)");
            sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 3, json_string_value(v), -1, SQLITE_TRANSIENT);
            if ((rc = td_db_run(db, st)) != 0) return rc;
        }
    }
    return 0;
}

bool notif_quiet_of(td_db_t *db, const char *user_id, notif_quiet_t *q)
{
    sqlite3_stmt *st = td_db_prepare(db, "SELECT quiet_start, quiet_end, quiet_zone FROM prefs"
                                         " WHERE user_id = ? AND quiet_zone IS NOT NULL");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    bool has = sqlite3_step(st) == SQLITE_ROW;
    if (has) {
        q->start_s = sqlite3_column_int(st, 0);
        q->end_s = sqlite3_column_int(st, 1);
        snprintf(q->zone, sizeof(q->zone), "%s", (const char *)sqlite3_column_text(st, 2));
    }
    td_db_done(st);
    return has;
}

static json_t *prefs_json(td_db_t *db, const char *user_id)
{
    sqlite3_stmt *st = td_db_prepare(db, "SELECT new_products FROM prefs WHERE user_id = ?");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    bool new_products = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
    td_db_done(st);
    json_t *muted = json_array();
    st = td_db_prepare(db, "SELECT type FROM mutes WHERE user_id = ? ORDER BY type");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(muted, json_string((const char *)sqlite3_column_text(st, 0)));
    td_db_done(st);
    notif_quiet_t q;
    json_t *quiet = notif_quiet_of(db, user_id, &q) ? notif_quiet_json(&q) : json_null();
    return json_pack("{s:o, s:b, s:o, s:o, s:i}", "muted", muted, "newProducts", new_products,
                     "channels", channels_json(db, user_id), "quietHours", quiet, "digestMinutes",
                     notif_digest_minutes(db, user_id));
}

int notif_prefs_get(td_db_t *db, const char *user_id, json_t **out)
{
    td_db_lock(db);
    *out = prefs_json(db, user_id);
    td_db_unlock(db);
    return 0;
}

int notif_prefs_put(td_db_t *db, const char *user_id, const json_t *body, json_t **out,
                    char *errstr, size_t errlen)
{
    static const char *const allowed[] = {"muted",      "newProducts",   "channels",
                                          "quietHours", "digestMinutes", NULL};
    if (!json_is_object(body))
        return td_errf(errstr, errlen, TD_EINVAL, "the preferences must be an object");
    int rc = td_json_only_fields(body, allowed, errstr, errlen);
    if (rc) return rc;
    json_t *muted = json_object_get(body, "muted");
    json_t *new_products = json_object_get(body, "newProducts");
    json_t *channels = json_object_get(body, "channels");
    if (muted && (rc = check_types(muted, "muted", errstr, errlen)) != 0) return rc;
    if (new_products && !json_is_boolean(new_products))
        return td_errf(errstr, errlen, TD_EINVAL, "newProducts must be true or false");
    if (channels && (rc = check_channels(channels, errstr, errlen)) != 0) return rc;
    json_t *digest = json_object_get(body, "digestMinutes");
    if (digest && (!json_is_integer(digest) || json_integer_value(digest) < 0 ||
                   json_integer_value(digest) > NOTIF_DIGEST_MAX_MINUTES))
        return td_errf(errstr, errlen, TD_EINVAL, "digestMinutes must be an integer from 0 to %d",
                       NOTIF_DIGEST_MAX_MINUTES);
    json_t *quiet_v = json_object_get(body, "quietHours");
    notif_quiet_t quiet;
    if (quiet_v && !json_is_null(quiet_v) &&
        (rc = notif_quiet_parse(quiet_v, &quiet, errstr, errlen)) != 0)
        return rc;

    if ((rc = td_db_begin(db)) != 0) return rc;
    sqlite3_stmt *st = td_db_prepare(db, "INSERT INTO prefs (user_id, new_products) VALUES (?1, ?2)"
                                         " ON CONFLICT (user_id) DO UPDATE SET new_products ="
                                         " CASE WHEN ?3 THEN ?2 ELSE new_products END");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, json_is_true(new_products));
    sqlite3_bind_int(st, 3, new_products != NULL);
    if ((rc = td_db_run(db, st)) != 0) goto fail;
    if (muted) {
        st = td_db_prepare(db, "DELETE FROM mutes WHERE user_id = ?");
        sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
        if ((rc = td_db_run(db, st)) != 0) goto fail;
        size_t i;
        json_t *v;
        json_array_foreach(muted, i, v)
        {
            st = td_db_prepare(db, "INSERT OR IGNORE INTO mutes (user_id, type) VALUES (?, ?)");
            sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 2, json_string_value(v), -1, SQLITE_TRANSIENT);
            if ((rc = td_db_run(db, st)) != 0) goto fail;
        }
    }
    if (channels && (rc = save_channels(db, user_id, channels)) != 0) goto fail;
    if (digest) {
        st = td_db_prepare(db, "UPDATE prefs SET digest_minutes = ? WHERE user_id = ?");
        sqlite3_bind_int(st, 1, (int)json_integer_value(digest));
        sqlite3_bind_text(st, 2, user_id, -1, SQLITE_TRANSIENT);
        if ((rc = td_db_run(db, st)) != 0) goto fail;
    }
    if (quiet_v) {
        bool none = json_is_null(quiet_v);
        st = td_db_prepare(db, "UPDATE prefs SET quiet_start = ?, quiet_end = ?, quiet_zone = ?"
                               " WHERE user_id = ?");
        if (none) {
            sqlite3_bind_null(st, 1);
            sqlite3_bind_null(st, 2);
            sqlite3_bind_null(st, 3);
        } else {
            sqlite3_bind_int(st, 1, quiet.start_s);
            sqlite3_bind_int(st, 2, quiet.end_s);
            sqlite3_bind_text(st, 3, quiet.zone, -1, SQLITE_TRANSIENT);
        }
        sqlite3_bind_text(st, 4, user_id, -1, SQLITE_TRANSIENT);
        if ((rc = td_db_run(db, st)) != 0) goto fail;
    }
    *out = prefs_json(db, user_id);
    if ((rc = td_db_commit(db)) != 0) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;

fail:
    td_db_rollback(db);
    return rc;
}
