/* Web Push subscriptions, webhooks and the VAPID key (see channels.h).
 * Requests are validated with the runtime's standard checks
 * (tidings/webpush.h, tidings/webhook.h) before anything is written; each
 * change is one transaction, and one that removes a target also drops the
 * deliveries queued for it in that transaction, so a deleted webhook or
 * subscription is never called again. The delivery hook runs inside a
 * notification's creating transaction: the notification and what it owes
 * to the outside world commit together, and the queue (td_delivery) sends
 * it after the commit, whatever happens to this process meanwhile. */
#include "notifications/channels.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifications/digest.h"
#include "notifications/notifications.h"
#include "tidings/delivery.h"
#include "tidings/email.h"
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
    json_t *next;
    td_db_lock(db);
    json_t *items =
        notif__page(db,
                    "SELECT n, id, url, events, created_at FROM webhooks"
                    " WHERE user_id = ?1 AND (?2 = 0 OR n < ?2) ORDER BY n DESC LIMIT ?3",
                    user_id, before, limit, 0, webhook_json, 1, &next);
    td_db_unlock(db);
    *out = json_pack("{s:o, s:o}", "webhooks", items, "next", next);
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

/* ---- delivery ---------------------------------------------------------------------- */

/* The first at most max bytes of s, cut on a UTF-8 character boundary. */
static char *utf8_prefix(const char *s, size_t max)
{
    size_t len = strlen(s);
    if (len <= max) return td_strdup(s);
    while (max > 0 && ((unsigned char)s[max] & 0xC0) == 0x80) max--;
    return td_strndup(s, max);
}

/* n's JSON as a push payload: whole when it fits a push message (it
 * nearly always does: titles and bodies are short sentences), else with
 * its body and then its title shortened until it does, so a long product
 * title never costs the user the push. Caller frees. */
static char *push_payload(const json_t *n)
{
    char *text = td_json_dumps(n);
    if (strlen(text) <= TD_WEBPUSH_MAX_PAYLOAD) return text;
    json_t *copy = json_deep_copy(n);
    static const char *const shrink[] = {"body", "title"};
    for (size_t f = 0; f < TD_ARRAY_SIZE(shrink); f++) {
        /* Each byte cut from a field takes at least one byte off the JSON
         * (escapes only make it more), so this ends within a few turns. */
        while (strlen(text) > TD_WEBPUSH_MAX_PAYLOAD) {
            const char *cur = json_string_value(json_object_get(copy, shrink[f]));
            if (!cur || !*cur) break;
            size_t len = strlen(cur), over = strlen(text) - TD_WEBPUSH_MAX_PAYLOAD;
            char *cut = utf8_prefix(cur, over < len ? len - over : 0);
            json_object_set_new(copy, shrink[f], json_string(cut));
            free(cut);
            free(text);
            text = td_json_dumps(copy);
        }
    }
    json_decref(copy);
    return text;
}

typedef struct delivery_ctx {
    const td_config_t *cfg;
    const notif_made_t *m;
    json_t *n; /* m->json parsed, on first need */
} delivery_ctx_t;

static const td_record_t *origin_of(delivery_ctx_t *d)
{
    return d->m->rec;
}

static const char *json_of(delivery_ctx_t *d)
{
    return d->m->json;
}

static const json_t *object_of(delivery_ctx_t *d)
{
    if (!d->n) d->n = json_loads(d->m->json, 0, NULL);
    if (!d->n) d->n = json_object(); /* we wrote it: cannot happen */
    return d->n;
}

/* Where a digest links to: the storefront's inbox. Caller frees. */
static char *inbox_url(const td_config_t *cfg)
{
    return td_asprintf("http://%s:%d/#notifications",
                       cfg->listen_addr && strcmp(cfg->listen_addr, "0.0.0.0") ? cfg->listen_addr
                                                                               : "127.0.0.1",
                       td_config_port(cfg, TD_SVC_WEB));
}

/* When a digest whose window ends at window_end_ms is due: then, or at
 * the end of the user's quiet hours when it falls inside them. */
static int64_t digest_due(td_db_t *db, const char *user_id, int64_t window_end_ms)
{
    notif_quiet_t quiet;
    if (!notif_quiet_of(db, user_id, &quiet)) return window_end_ms;
    int64_t until = notif_quiet_until(&quiet, (time_t)(window_end_ms / 1000)) * 1000;
    return until > window_end_ms ? until : window_end_ms;
}

/* The digest of a window that one more push joined: the held row's body
 * rewritten, or a held row queued when there is none yet. */
static int push_digest(delivery_ctx_t *d, td_db_t *db, const char *user_id, const char *id,
                       const char *sub, const char *endpoint, const char *p256dh, const char *auth,
                       const notif_digest_t *dg)
{
    char err[256], *title, *body;
    notif_digest_text((const char *const *)dg->titles, dg->title_cnt, &title, &body);
    char *url = inbox_url(d->cfg);
    json_t *j = json_pack("{s:s, s:s, s:s, s:s, s:{s:s, s:i}}", "id", id, "type", "digest", "title",
                          title, "body", body, "data", "url", url, "count", (int)dg->title_cnt);
    char *payload = push_payload(j);
    json_decref(j);
    free(url);
    free(title);
    free(body);
    int rc = 0;
    if (dg->delivery_id) {
        unsigned char *enc = NULL;
        size_t enc_len = 0;
        rc = td_webpush_encrypt(p256dh, auth, payload, strlen(payload), &enc, &enc_len, err,
                                sizeof(err));
        if (rc == 0) rc = td_delivery_rebody(db, dg->delivery_id, enc, enc_len);
        free(enc);
        if (rc == 1) {
            free(payload);
            return 0;
        }
        if (rc < 0 && rc != TD_EINVAL) goto out;
    }
    td_webpush_hints_t hints = {.topic = NULL};
    rc = td_delivery_enqueue_webpush(
        db, user_id, sub, endpoint, p256dh, auth, id, payload, strlen(payload), &hints,
        digest_due(db, user_id, dg->window_end_ms), origin_of(d), err, sizeof(err));
    if (rc == 0)
        rc = notif_digest_set_delivery(db, user_id, TD_DELIVERY_WEBPUSH, sub,
                                       td_delivery_last_id(db));
    else if (rc == TD_EINVAL || rc == TD_ELIMIT)
        rc = 0;
out:
    free(payload);
    return rc;
}

static int queue_pushes(delivery_ctx_t *d, td_db_t *db, const char *user_id, const char *id)
{
    char err[256];
    char *payload = NULL;
    int rc = 0, step;
    sqlite3_stmt *st = td_db_prepare(
        db, "SELECT id, endpoint, p256dh, auth FROM push_subscriptions WHERE user_id = ?");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    /* The thread is the Topic: a push service that still holds "Order
     * received" for an offline phone replaces it with "Order confirmed". */
    char topic[TD_WEBPUSH_TOPIC_LEN + 1];
    td_webpush_hints_t hints = {.topic = NULL};
    if (d->m->thread) {
        td_webpush_topic(d->m->thread, topic);
        hints.topic = topic;
    }
    notif_push_hints(d->m->type, &hints.urgency, &hints.ttl_s);
    /* Inside the user's quiet hours a push waits in the queue (persisted,
     * so a restart keeps the hold) until the window ends. */
    notif_quiet_t quiet;
    int64_t hold_until_ms = 0;
    int minutes = notif_digest_minutes(db, user_id);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *sub = (const char *)sqlite3_column_text(st, 0);
        if (minutes > 0) {
            notif_digest_t dg;
            const char *title = json_string_value(json_object_get(object_of(d), "title"));
            if ((rc = notif_digest_step(db, user_id, TD_DELIVERY_WEBPUSH, sub, title, minutes,
                                        &dg)) != 0)
                break;
            if (dg.hold)
                rc = push_digest(d, db, user_id, id, sub, (const char *)sqlite3_column_text(st, 1),
                                 (const char *)sqlite3_column_text(st, 2),
                                 (const char *)sqlite3_column_text(st, 3), &dg);
            bool held = dg.hold;
            notif_digest_clear(&dg);
            if (rc) break;
            if (held) continue;
        }
        if (!payload) {
            /* Once, and only for a user with a subscription. */
            payload = push_payload(object_of(d));
            if (notif_quiet_of(db, user_id, &quiet))
                hold_until_ms = notif_quiet_until(&quiet, (time_t)(td_now_ms() / 1000)) * 1000;
        }
        rc = td_delivery_enqueue_webpush(
            db, user_id, sub, (const char *)sqlite3_column_text(st, 1),
            (const char *)sqlite3_column_text(st, 2), (const char *)sqlite3_column_text(st, 3), id,
            payload, strlen(payload), &hints, hold_until_ms, origin_of(d), err, sizeof(err));
        if (rc == TD_EINVAL) {
            /* Keys that were checked on the way in and no longer work:
             * nothing a retry changes, so this one push is skipped. */
            td_warn("notification %s: push subscription %s skipped: %s", id, sub, err);
            rc = 0;
        } else if (rc == TD_ELIMIT) {
            /* The user's delivery queue is full (the queue counts and
             * logs it): the notification stands without this push. */
            rc = 0;
        }
        if (rc) break;
    }
    td_db_done(st);
    free(payload);
    if (rc == 0 && step != SQLITE_DONE) rc = TD_EIO;
    return rc;
}

static int queue_webhooks(delivery_ctx_t *d, td_db_t *db, const char *user_id, const char *type,
                          const char *id)
{
    char err[256];
    int rc = 0, step;
    sqlite3_stmt *st = td_db_prepare(db, "SELECT w.id, w.url, w.secret FROM webhook_events e"
                                         " JOIN webhooks w ON w.id = e.webhook_id"
                                         " WHERE e.user_id = ? AND e.type = ? ORDER BY w.n");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, type, -1, SQLITE_TRANSIENT);
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *body = json_of(d);
        const char *hook = (const char *)sqlite3_column_text(st, 0);
        rc =
            td_delivery_enqueue_webhook(db, user_id, hook, (const char *)sqlite3_column_text(st, 1),
                                        (const char *)sqlite3_column_text(st, 2), id, body,
                                        strlen(body), origin_of(d), err, sizeof(err));
        if (rc == TD_ELIMIT) {
            rc = 0; /* the user's queue is full: as for pushes */
        } else if (rc == TD_EINVAL) {
            td_warn("notification %s: webhook %s skipped: %s", id, hook, err);
            rc = 0;
        } else if (rc) {
            td_warn("notification %s: cannot queue webhook %s: %s", id, hook, err);
            break;
        }
    }
    td_db_done(st);
    if (rc == 0 && step != SQLITE_DONE) rc = TD_EIO;
    return rc;
}

char *notif_unsubscribe_url(const td_config_t *cfg, const char *user_id)
{
    char sig[65];
    td_email_unsubscribe_sig(cfg->secret, cfg->secret_len, user_id, sig);
    char *base =
        cfg->public_notifications_url
            ? td_strdup(cfg->public_notifications_url)
            : td_asprintf("http://%s:%d",
                          cfg->listen_addr && strcmp(cfg->listen_addr, "0.0.0.0") ? cfg->listen_addr
                                                                                  : "127.0.0.1",
                          td_config_port(cfg, TD_SVC_NOTIFICATIONS));
    char *url = td_asprintf("%s/unsubscribe?u=%s&s=%s", base, user_id, sig);
    free(base);
    return url;
}

/* The email of a notification to its user's account address (kept from
 * UserRegisteredEvent), held in quiet hours like a push. */
static int queue_email(delivery_ctx_t *d, td_db_t *db, const char *user_id, const char *id)
{
    char err[256];
    td_email_server_t srv;
    notif_digest_t dg = {0};
    if (td_email_server_load(d->cfg, &srv, err, sizeof(err)) != 0) return 0;
    sqlite3_stmt *st = td_db_prepare(db, "SELECT email FROM users WHERE id = ?");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    char *rcpt = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)
                     ? td_strdup((const char *)sqlite3_column_text(st, 0))
                     : NULL;
    td_db_done(st);
    int rc = 0;
    if (!rcpt) goto out; /* no address known (yet): no email */
    const json_t *n = object_of(d);
    const char *title = json_string_value(json_object_get(n, "title"));
    const char *body = json_string_value(json_object_get(n, "body"));
    /* A digest: the window's members in one email, linking to the inbox. */
    int minutes = notif_digest_minutes(db, user_id);
    if (minutes > 0 &&
        (rc = notif_digest_step(db, user_id, TD_DELIVERY_EMAIL, user_id, title, minutes, &dg)))
        goto out;
    char *dtitle = NULL, *dbody = NULL, *link = NULL;
    if (dg.hold) {
        notif_digest_text((const char *const *)dg.titles, dg.title_cnt, &dtitle, &dbody);
        title = dtitle;
        body = dbody;
        link = inbox_url(d->cfg);
    }
    char *mid = td_asprintf("%s.email@%s", id, srv.host);
    char *unsub = notif_unsubscribe_url(d->cfg, user_id);
    td_email_t e = {
        .from = srv.from,
        .to = rcpt,
        .subject = title ? title : "",
        .text = body ? body : "",
        .link = link,
        .message_id = mid,
        .unsubscribe_url = unsub,
        .date_s = td_now_ms() / 1000,
    };
    size_t len = 0;
    char *message = td_email_build(&e, &len);
    free(mid);
    free(unsub);
    free(dtitle);
    free(dbody);
    free(link);
    if (!message) {
        td_warn("notification %s: no email: the account address is not usable", id);
        goto out;
    }
    if (dg.hold && dg.delivery_id &&
        (rc = td_delivery_rebody(db, dg.delivery_id, message, len)) != 0) {
        free(message);
        rc = rc == 1 ? 0 : rc;
        goto out;
    }
    notif_quiet_t quiet;
    int64_t hold_until_ms = 0;
    if (dg.hold)
        hold_until_ms = digest_due(db, user_id, dg.window_end_ms);
    else if (notif_quiet_of(db, user_id, &quiet))
        hold_until_ms = notif_quiet_until(&quiet, (time_t)(td_now_ms() / 1000)) * 1000;
    rc = td_email_enqueue(db, &srv, user_id, rcpt, id, message, len, hold_until_ms, origin_of(d),
                          err, sizeof(err));
    if (rc == 0 && dg.hold)
        rc = notif_digest_set_delivery(db, user_id, TD_DELIVERY_EMAIL, user_id,
                                       td_delivery_last_id(db));
    free(message);
    if (rc == TD_ELIMIT || rc == TD_EINVAL) {
        if (rc == TD_EINVAL) td_warn("notification %s: email skipped: %s", id, err);
        rc = 0;
    }
out:
    notif_digest_clear(&dg);
    free(rcpt);
    td_email_server_clear(&srv);
    return rc;
}

int notif_channels_deliver(void *arg, td_db_t *db, const struct notif_made *m)
{
    delivery_ctx_t d = {.cfg = arg, .m = m};
    int rc = 0;
    /* Most users have no push subscription and no webhook for the type:
     * one lookup says so, and the per-channel checks are left out. */
    sqlite3_stmt *st = td_db_prepare(
        db, "SELECT EXISTS (SELECT 1 FROM push_subscriptions WHERE user_id = ?1),"
            " EXISTS (SELECT 1 FROM webhook_events WHERE user_id = ?1 AND type = ?2)");
    sqlite3_bind_text(st, 1, m->user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, m->type, -1, SQLITE_TRANSIENT);
    if (sqlite3_step(st) != SQLITE_ROW) {
        td_db_done(st);
        return TD_EIO;
    }
    bool pushes = sqlite3_column_int(st, 0), hooks = sqlite3_column_int(st, 1);
    td_db_done(st);
    /* A channel the user switched off, or muted this type on, gets
     * nothing; the inbox and the stream have it anyway. */
    if (pushes && notif_channel_wants(db, m->user_id, NOTIF_CHANNEL_PUSH, m->type))
        rc = queue_pushes(&d, db, m->user_id, m->id);
    if (rc == 0 && hooks && notif_channel_wants(db, m->user_id, NOTIF_CHANNEL_WEBHOOK, m->type))
        rc = queue_webhooks(&d, db, m->user_id, m->type, m->id);
    if (rc == 0 && d.cfg && d.cfg->smtp_url &&
        notif_channel_wants(db, m->user_id, NOTIF_CHANNEL_EMAIL, m->type))
        rc = queue_email(&d, db, m->user_id, m->id);
    json_decref(d.n);
    return rc;
}

int notif_channels_gone(void *ctx, td_db_t *db, const char *channel, const char *target_id)
{
    (void)ctx;
    if (strcmp(channel, TD_DELIVERY_WEBPUSH) != 0) return 0;
    sqlite3_stmt *st = td_db_prepare(db, "DELETE FROM push_subscriptions WHERE id = ?");
    sqlite3_bind_text(st, 1, target_id, -1, SQLITE_TRANSIENT);
    int rc = td_db_run(db, st);
    if (rc == 0) td_info("push subscription %s is gone at its push service: removed", target_id);
    return rc;
}
