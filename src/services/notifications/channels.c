/* Web Push subscriptions, webhooks and the VAPID key (see channels.h).
 * Requests are validated with the runtime's standard checks
 * (tidings/webpush.h, tidings/webhook.h) before anything is written; each
 * change is one transaction, and one that removes a target also drops the
 * deliveries queued for it in that transaction, so a deleted webhook or
 * subscription is never called again. What a new notification owes to
 * these targets is queued in channels_deliver.c. */
#include "notifications/channels.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifications/notifications.h"
#include "tidings/delivery.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/webhook.h"

const char notif_channels_schema[] =
    /* One row, the application server's key (a secret: never logged). */
    "CREATE TABLE vapid_keys ("
    "  id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  private_key TEXT NOT NULL,"
    "  created_at TEXT NOT NULL"
    ");"
    "CREATE TABLE push_subscriptions ("
    "  id TEXT PRIMARY KEY,"
    "  user_id TEXT NOT NULL,"
    "  endpoint TEXT NOT NULL UNIQUE,"
    "  p256dh TEXT NOT NULL,"
    "  auth TEXT NOT NULL,"
    "  created_at TEXT NOT NULL"
    ");"
    "CREATE INDEX push_subscriptions_user ON push_subscriptions (user_id);"
    /* n orders a user's list (the cursor); id is the public one. */
    "CREATE TABLE webhooks ("
    "  n INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  id TEXT NOT NULL UNIQUE,"
    "  user_id TEXT NOT NULL,"
    "  url TEXT NOT NULL,"
    "  secret TEXT NOT NULL,"
    "  events TEXT NOT NULL," /* the JSON array as answered */
    "  created_at TEXT NOT NULL"
    ");"
    "CREATE INDEX webhooks_user ON webhooks (user_id, n);"
    /* What a notification's type is matched against. */
    "CREATE TABLE webhook_events ("
    "  webhook_id TEXT NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,"
    "  user_id TEXT NOT NULL,"
    "  type TEXT NOT NULL,"
    "  PRIMARY KEY (user_id, type, webhook_id)"
    ") WITHOUT ROWID;";

/* ---- the VAPID key ------------------------------------------------------------ */

td_vapid_t *notif_vapid_load(td_db_t *db, const char *private_b64, char *errstr, size_t errlen)
{
    char why[256] = "";
    td_vapid_t *vapid = NULL;
    if (private_b64 && *private_b64) {
        vapid = td_vapid_from_private(private_b64, why, sizeof(why));
        if (!vapid) td_errf(errstr, errlen, TD_EINVAL, "%s: %s", NOTIF_VAPID_ENV, why);
        return vapid;
    }

    if (td_db_begin(db) != 0) {
        td_errf(errstr, errlen, TD_EIO, "cannot read the VAPID key");
        return NULL;
    }
    sqlite3_stmt *st = td_db_prepare(db, "SELECT private_key FROM vapid_keys WHERE id = 1");
    char *kept =
        sqlite3_step(st) == SQLITE_ROW ? td_strdup((const char *)sqlite3_column_text(st, 0)) : NULL;
    td_db_done(st);
    if (kept) {
        vapid = td_vapid_from_private(kept, why, sizeof(why));
        if (!vapid)
            td_errf(errstr, errlen, TD_EINVAL, "the VAPID key in the database is corrupt: %s", why);
        free(kept);
        td_db_rollback(db);
        return vapid;
    }

    vapid = td_vapid_generate(why, sizeof(why));
    if (!vapid) {
        td_db_rollback(db);
        td_errf(errstr, errlen, TD_EIO, "cannot generate the VAPID key: %s", why);
        return NULL;
    }
    char *priv = td_vapid_private_b64(vapid);
    char now[TD_TIME_LEN + 1];
    td_time_format(td_now_ms(), now);
    st = td_db_prepare(db, "INSERT INTO vapid_keys (id, private_key, created_at) VALUES (1, ?, ?)");
    sqlite3_bind_text(st, 1, priv, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, now, -1, SQLITE_STATIC);
    int rc = td_db_run(db, st);
    free(priv);
    if (rc == 0)
        rc = td_db_commit(db);
    else
        td_db_rollback(db);
    if (rc != 0) {
        td_vapid_free(vapid);
        td_errf(errstr, errlen, TD_EIO, "cannot store the VAPID key");
        return NULL;
    }
    td_info("notifications: generated the VAPID key pair (public %s)", td_vapid_public_b64(vapid));
    return vapid;
}

/* ---- helpers --------------------------------------------------------------------- */

static int64_t count_where(td_db_t *db, const char *sql, const char *arg)
{
    sqlite3_stmt *st = td_db_prepare(db, sql);
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    return n;
}

/* An optional string field under a nested object: present and a string. */
static int req_key(const json_t *keys, const char *field, const char **out, char *errstr,
                   size_t errlen)
{
    const json_t *v = json_object_get(keys, field);
    if (!v) return td_errf(errstr, errlen, TD_EINVAL, "keys.%s is required", field);
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) > 200)
        return td_errf(errstr, errlen, TD_EINVAL, "keys.%s must be a base64url string", field);
    *out = json_string_value(v);
    return 0;
}

/* ---- Web Push subscriptions ------------------------------------------------------- */

static int check_subscription(const json_t *body, bool allow_http, const char **endpoint,
                              const char **p256dh, const char **auth, char *errstr, size_t errlen)
{
    static const char *const allowed[] = {"endpoint", "expirationTime", "keys", NULL};
    static const char *const key_fields[] = {"p256dh", "auth", NULL};
    int rc = td_json_only_fields(body, allowed, errstr, errlen);
    if (rc) return rc;
    if ((rc = td_json_req_string(body, "endpoint", TD_WEBPUSH_URL_MAX, endpoint, errstr, errlen)))
        return rc;
    if ((rc = td_webpush_check_endpoint(*endpoint, allow_http, errstr, errlen))) return rc;
    /* A browser's toJSON() has it, usually null; we do not expire
     * subscriptions ourselves (the push service's 404/410 does). */
    const json_t *exp = json_object_get(body, "expirationTime");
    if (exp && !json_is_null(exp) && !json_is_number(exp))
        return td_errf(errstr, errlen, TD_EINVAL, "expirationTime must be a number or null");
    const json_t *keys = json_object_get(body, "keys");
    if (!keys) return td_errf(errstr, errlen, TD_EINVAL, "keys is required");
    if (!json_is_object(keys))
        return td_errf(errstr, errlen, TD_EINVAL, "keys must be an object {p256dh, auth}");
    if ((rc = td_json_only_fields(keys, key_fields, errstr, errlen)) ||
        (rc = req_key(keys, "p256dh", p256dh, errstr, errlen)) ||
        (rc = req_key(keys, "auth", auth, errstr, errlen)))
        return rc;
    return td_webpush_check_keys(*p256dh, *auth, errstr, errlen);
}

/* Deletes subscription id and what is queued for it. */
static int drop_subscription(td_db_t *db, const char *id)
{
    if (td_delivery_cancel(db, TD_DELIVERY_WEBPUSH, id) < 0) return TD_EIO;
    sqlite3_stmt *st = td_db_prepare(db, "DELETE FROM push_subscriptions WHERE id = ?");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    return td_db_run(db, st);
}

int notif_push_subscribe(td_db_t *db, const char *user_id, const json_t *body, bool allow_http,
                         json_t **out, char *errstr, size_t errlen)
{
    const char *endpoint, *p256dh, *auth;
    *out = NULL;
    int rc = check_subscription(body, allow_http, &endpoint, &p256dh, &auth, errstr, errlen);
    if (rc) return rc;

    char id[TD_UUID_LEN + 1] = "", now[TD_TIME_LEN + 1];
    td_time_format(td_now_ms(), now);
    if ((rc = td_db_begin(db)) != 0) return rc;
    sqlite3_stmt *st = td_db_prepare(db, "SELECT id, user_id, p256dh, auth, created_at"
                                         " FROM push_subscriptions WHERE endpoint = ?");
    sqlite3_bind_text(st, 1, endpoint, -1, SQLITE_TRANSIENT);
    bool known = false, mine = false, same_keys = false;
    char created[TD_TIME_LEN + 1] = "";
    if (sqlite3_step(st) == SQLITE_ROW) {
        known = true;
        snprintf(id, sizeof(id), "%s", (const char *)sqlite3_column_text(st, 0));
        mine = strcmp((const char *)sqlite3_column_text(st, 1), user_id) == 0;
        same_keys = strcmp((const char *)sqlite3_column_text(st, 2), p256dh) == 0 &&
                    strcmp((const char *)sqlite3_column_text(st, 3), auth) == 0;
        snprintf(created, sizeof(created), "%s", (const char *)sqlite3_column_text(st, 4));
    }
    td_db_done(st);

    if (known && mine) {
        if (!same_keys) {
            if (td_delivery_cancel(db, TD_DELIVERY_WEBPUSH, id) < 0) {
                rc = TD_EIO;
                goto fail;
            }
            st = td_db_prepare(db, "UPDATE push_subscriptions SET p256dh = ?, auth = ?"
                                   " WHERE id = ?");
            sqlite3_bind_text(st, 1, p256dh, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 2, auth, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 3, id, -1, SQLITE_STATIC);
            if ((rc = td_db_run(db, st)) != 0) goto fail;
        }
    } else if (known) {
        /* Someone else's: it never moves (SPEC section 5), or anyone who
         * learnt an endpoint could take its owner's notifications. */
        rc = td_errf(errstr, errlen, TD_EEXIST,
                     "this push endpoint is registered by another account");
        goto fail;
    } else {
        int64_t have =
            count_where(db, "SELECT COUNT(*) FROM push_subscriptions WHERE user_id = ?", user_id);
        if (have < 0) {
            rc = TD_EIO;
            goto fail;
        }
        if (have >= NOTIF_MAX_SUBSCRIPTIONS) {
            rc = td_errf(errstr, errlen, TD_EEXIST,
                         "at most %d push subscriptions per user: delete one first",
                         NOTIF_MAX_SUBSCRIPTIONS);
            goto fail;
        }
        td_uuid_new(id);
        snprintf(created, sizeof(created), "%s", now);
        st = td_db_prepare(db, "INSERT INTO push_subscriptions (id, user_id, endpoint, p256dh,"
                               " auth, created_at) VALUES (?,?,?,?,?,?)");
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, endpoint, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 4, p256dh, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 5, auth, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 6, created, -1, SQLITE_STATIC);
        if ((rc = td_db_run(db, st)) != 0) goto fail;
    }
    if ((rc = td_db_commit(db)) != 0) return rc;
    *out = json_pack("{s:s, s:s, s:s}", "subscriptionId", id, "endpoint", endpoint, "createdAt",
                     created);
    return 0;

fail:
    td_db_rollback(db);
    return rc;
}

int notif_push_unsubscribe(td_db_t *db, const char *user_id, const char *endpoint)
{
    int rc = td_db_begin(db);
    if (rc) return rc;
    sqlite3_stmt *st =
        td_db_prepare(db, "SELECT id FROM push_subscriptions WHERE endpoint = ? AND user_id = ?");
    sqlite3_bind_text(st, 1, endpoint, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_TRANSIENT);
    char id[TD_UUID_LEN + 1] = "";
    if (sqlite3_step(st) == SQLITE_ROW)
        snprintf(id, sizeof(id), "%s", (const char *)sqlite3_column_text(st, 0));
    td_db_done(st);
    if (!*id) {
        td_db_rollback(db);
        return TD_ENOENT;
    }
    if ((rc = drop_subscription(db, id)) != 0) {
        td_db_rollback(db);
        return rc;
    }
    return td_db_commit(db);
}

int64_t notif_push_count(td_db_t *db, const char *user_id)
{
    td_db_lock(db);
    int64_t n =
        count_where(db, "SELECT COUNT(*) FROM push_subscriptions WHERE user_id = ?", user_id);
    td_db_unlock(db);
    return n;
}

/* ---- webhooks ---------------------------------------------------------------------- */

/* events of a POST /webhooks body, checked, duplicates dropped, in the
 * order given. New reference in *out. */
static int check_events(const json_t *body, json_t **out, char *errstr, size_t errlen)
{
    const json_t *events = json_object_get(body, "events");
    if (!events) return td_errf(errstr, errlen, TD_EINVAL, "events is required");
    if (!json_is_array(events) || json_array_size(events) == 0)
        return td_errf(errstr, errlen, TD_EINVAL,
                       "events must be a non-empty array of event types");
    json_t *list = json_array();
    size_t i;
    json_t *v;
    json_array_foreach(events, i, v)
    {
        if (!json_is_string(v)) {
            json_decref(list);
            return td_errf(errstr, errlen, TD_EINVAL, "events must be an array of event types");
        }
        const char *type = json_string_value(v);
        if (!notif_type_known(type)) {
            json_decref(list);
            return td_errf(errstr, errlen, TD_EINVAL, "unknown event type '%.100s' in events",
                           type);
        }
        bool seen = false;
        for (size_t j = 0; j < json_array_size(list) && !seen; j++)
            seen = strcmp(json_string_value(json_array_get(list, j)), type) == 0;
        if (!seen) json_array_append(list, v);
    }
    *out = list;
    return 0;
}

static int check_webhook(const json_t *body, bool allow_http, const char **url, const char **secret,
                         json_t **events, char *errstr, size_t errlen)
{
    static const char *const allowed[] = {"url", "secret", "events", NULL};
    int rc = td_json_only_fields(body, allowed, errstr, errlen);
    if (rc) return rc;
    if ((rc = td_json_req_string(body, "url", TD_WEBPUSH_URL_MAX, url, errstr, errlen)) ||
        (rc = td_webhook_check_url(*url, allow_http, errstr, errlen)))
        return rc;
    if ((rc = td_json_req_string(body, "secret", NOTIF_SECRET_MAX, secret, errstr, errlen)))
        return rc;
    if (td_utf8_len(*secret) < NOTIF_SECRET_MIN)
        return td_errf(errstr, errlen, TD_EINVAL, "secret must be at least %d characters",
                       NOTIF_SECRET_MIN);
    return check_events(body, events, errstr, errlen);
}

static json_t *webhook_json(sqlite3_stmt *st, int first)
{
    /* Columns from first: id, url, events, created_at. */
    const char *events = (const char *)sqlite3_column_text(st, first + 2);
    json_t *ev = events ? json_loads(events, 0, NULL) : NULL;
    if (!json_is_array(ev)) {
        json_decref(ev);
        ev = json_array();
    }
    return json_pack("{s:s, s:s, s:o, s:s}", "webhookId",
                     (const char *)sqlite3_column_text(st, first), "url",
                     (const char *)sqlite3_column_text(st, first + 1), "events", ev, "createdAt",
                     (const char *)sqlite3_column_text(st, first + 3));
}

int notif_webhook_add(td_db_t *db, const char *user_id, const json_t *body, bool allow_http,
                      json_t **out, char *errstr, size_t errlen)
{
    const char *url, *secret;
    json_t *events = NULL;
    char *events_text = NULL;
    *out = NULL;
    int rc = check_webhook(body, allow_http, &url, &secret, &events, errstr, errlen);
    if (rc) return rc;

    char id[TD_UUID_LEN + 1], now[TD_TIME_LEN + 1];
    td_uuid_new(id);
    td_time_format(td_now_ms(), now);
    events_text = td_json_dumps(events);
    if ((rc = td_db_begin(db)) != 0) goto out;
    int64_t have = count_where(db, "SELECT COUNT(*) FROM webhooks WHERE user_id = ?", user_id);
    if (have < 0) {
        rc = TD_EIO;
        goto fail;
    }
    if (have >= NOTIF_MAX_WEBHOOKS) {
        rc = td_errf(errstr, errlen, TD_EEXIST, "at most %d webhooks per user: delete one first",
                     NOTIF_MAX_WEBHOOKS);
        goto fail;
    }
    sqlite3_stmt *st = td_db_prepare(db, "INSERT INTO webhooks (id, user_id, url, secret, events,"
                                         " created_at) VALUES (?,?,?,?,?,?)");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, url, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, secret, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, events_text, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, now, -1, SQLITE_STATIC);
    if ((rc = td_db_run(db, st)) != 0) goto fail;
    size_t i;
    json_t *v;
    json_array_foreach(events, i, v)
    {
        st = td_db_prepare(db,
                           "INSERT INTO webhook_events (webhook_id, user_id, type) VALUES (?,?,?)");
        sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, json_string_value(v), -1, SQLITE_TRANSIENT);
        if ((rc = td_db_run(db, st)) != 0) goto fail;
    }
    if ((rc = td_db_commit(db)) != 0) goto out;
    *out = json_pack("{s:s, s:s, s:O, s:s}", "webhookId", id, "url", url, "events", events,
                     "createdAt", now);
    goto out;

fail:
    td_db_rollback(db);
out:
    json_decref(events);
    free(events_text);
    return rc;
}

int notif_webhook_list(td_db_t *db, const char *user_id, int64_t before, int limit, json_t **out)
{
    *out = notif__page_answer(db, "webhooks",
                              "SELECT n, id, url, events, created_at FROM webhooks"
                              " WHERE user_id = ?1 AND (?2 = 0 OR n < ?2) ORDER BY n DESC LIMIT ?3",
                              user_id, before, limit, webhook_json);
    return 0;
}

int notif_webhook_remove(td_db_t *db, const char *user_id, const char *webhook_id)
{
    int rc = td_db_begin(db);
    if (rc) return rc;
    sqlite3_stmt *st = td_db_prepare(db, "DELETE FROM webhooks WHERE id = ? AND user_id = ?");
    sqlite3_bind_text(st, 1, webhook_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_TRANSIENT);
    if ((rc = td_db_run(db, st)) != 0) goto fail;
    if (td_db_changes(db) == 0) {
        rc = TD_ENOENT;
        goto fail;
    }
    /* webhook_events goes with it (ON DELETE CASCADE); what is queued
     * must not reach a URL its owner just removed. */
    if (td_delivery_cancel(db, TD_DELIVERY_WEBHOOK, webhook_id) < 0) {
        rc = TD_EIO;
        goto fail;
    }
    return td_db_commit(db);

fail:
    td_db_rollback(db);
    return rc;
}
