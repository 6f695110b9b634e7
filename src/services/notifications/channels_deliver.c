/* The delivery hook of the notifications service (see channels.h): for a
 * new notification, one Web Push per subscription, one webhook POST per
 * matching webhook and an email to the account address, each channel as
 * the user's preferences, quiet hours and digest interval say. It runs
 * inside the notification's creating transaction: the notification and
 * what it owes to the outside world commit together, and the queue
 * (td_delivery) sends it after the commit, whatever happens to this
 * process meanwhile. */
#include <stdlib.h>
#include <string.h>

#include "notifications/channels.h"
#include "notifications/digest.h"
#include "notifications/notifications.h"
#include "tidings/delivery.h"
#include "tidings/email.h"
#include "tidings/json.h"
#include "tidings/log.h"

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
