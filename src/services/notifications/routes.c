/* The notifications HTTP API (SPEC section 2): the inbox, preferences,
 * watches, Web Push subscriptions and webhooks, plus the live stream
 * (stream.c). Everything is the caller's own: another user's notification
 * or webhook id answers 404 exactly like one that does not exist, so ids
 * leak nothing, and a webhook's secret is never answered. Parsing and
 * access live here; the state changes are the domain's (notifications.c,
 * channels.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifications/channels.h"
#include "notifications/notifications.h"
#include "notifications/notifications_service.h"
#include "tidings/email.h"
#include "tidings/json.h"

/* ?after= and ?limit= of a list. false with 400 set. */
static bool page_args(td_req_t *req, td_resp_t *resp, int64_t *after, int *limit)
{
    return td_req_limit(req, resp, NOTIF_PAGE_DEFAULT, NOTIF_PAGE_MAX, limit) &&
           td_req_after_seq(req, resp, after);
}

static void list_notifications(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    int64_t after;
    int limit;
    if (!page_args(req, resp, &after, &limit)) return;
    const char *collapse = td_req_query(req, "collapse");
    if (collapse && strcmp(collapse, "thread") != 0) {
        td_resp_error(resp, 400, "collapse must be 'thread'");
        return;
    }
    json_t *out;
    int rc = notif_list(ctx->db, td_req_caller(req)->sub, after, limit, collapse != NULL, &out);
    if (rc) {
        td_resp_errno(resp, rc, "the notifications could not be read");
        return;
    }
    td_resp_json(resp, 200, out);
}

/* The {id} of the path, when it can name a notification at all. */
static const char *notification_id(td_req_t *req, td_resp_t *resp)
{
    const char *id = td_req_param(req, "id");
    if (!id || !td_uuid_valid(id)) {
        td_resp_error(resp, 404, "notification not found");
        return NULL;
    }
    return id;
}

static void get_notification(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    const char *id = notification_id(req, resp);
    if (!id) return;
    json_t *out;
    int rc = notif_get(ctx->db, td_req_caller(req)->sub, id, &out);
    if (rc == TD_ENOENT) {
        td_resp_error(resp, 404, "notification not found");
        return;
    }
    if (rc) {
        td_resp_errno(resp, rc, "the notification could not be read");
        return;
    }
    td_resp_json(resp, 200, out);
}

static void read_notification(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    const char *id = notification_id(req, resp);
    if (!id) return;
    json_t *out;
    int rc = notif_mark_read(ctx->db, td_req_caller(req)->sub, id, &out);
    if (rc == TD_ENOENT) {
        td_resp_error(resp, 404, "notification not found");
        return;
    }
    if (rc) {
        td_resp_errno(resp, rc, "the notification could not be updated");
        return;
    }
    td_resp_json(resp, 200, out);
}

static void read_all(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    int64_t cnt;
    int rc = notif_mark_all_read(ctx->db, td_req_caller(req)->sub, &cnt);
    if (rc) {
        td_resp_errno(resp, rc, "the notifications could not be updated");
        return;
    }
    td_resp_json(resp, 200, json_pack("{s:I, s:i}", "read", (json_int_t)cnt, "unread", 0));
}

static void delete_notification(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    const char *id = notification_id(req, resp);
    if (!id) return;
    int rc = notif_delete(ctx->db, td_req_caller(req)->sub, id);
    if (rc == TD_ENOENT) {
        td_resp_error(resp, 404, "notification not found");
        return;
    }
    if (rc) {
        td_resp_errno(resp, rc, "the notification could not be deleted");
        return;
    }
    td_resp_empty(resp, 204);
}

static void get_preferences(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    json_t *out;
    int rc = notif_prefs_get(ctx->db, td_req_caller(req)->sub, &out);
    if (rc) {
        td_resp_errno(resp, rc, "the preferences could not be read");
        return;
    }
    td_resp_json(resp, 200, out);
}

static void put_preferences(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    json_t *out = NULL;
    char err[256] = "";
    int rc = notif_prefs_put(ctx->db, td_req_caller(req)->sub, req->body, &out, err, sizeof(err));
    if (rc) {
        td_resp_errno(resp, rc, rc == TD_EINVAL ? err : "the preferences could not be saved");
        return;
    }
    td_resp_json(resp, 200, out);
}

/* SPEC section 2: a well-formed id not seen yet is watched (201, title
 * null until its ProductCreatedEvent arrives); a deleted product's id gets
 * 404. */
static void post_watch(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    static const char *const allowed[] = {"productId", NULL};
    char err[256];
    const char *product_id;
    if (td_json_only_fields(req->body, allowed, err, sizeof(err)) ||
        td_json_req_string(req->body, "productId", 64, &product_id, err, sizeof(err))) {
        td_resp_error(resp, 400, "%s", err);
        return;
    }
    if (!td_uuid_valid(product_id)) {
        td_resp_error(resp, 400, "productId must be a UUID (lowercase, hyphenated)");
        return;
    }
    bool created;
    json_t *out;
    int rc = notif_watch_add(ctx->db, td_req_caller(req)->sub, product_id, &created, &out);
    if (rc == TD_ENOENT) {
        td_resp_error(resp, 404, "product not found");
        return;
    }
    if (rc) {
        td_resp_errno(resp, rc, "the watch could not be saved");
        return;
    }
    /* Watching twice is not an error: the second answer is 200. */
    td_resp_json(resp, created ? 201 : 200, out);
}

static void list_watches(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    int64_t after;
    int limit;
    if (!page_args(req, resp, &after, &limit)) return;
    json_t *out;
    int rc = notif_watch_list(ctx->db, td_req_caller(req)->sub, after, limit, &out);
    if (rc) {
        td_resp_errno(resp, rc, "the watches could not be read");
        return;
    }
    td_resp_json(resp, 200, out);
}

static void delete_watch(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    const char *product_id = td_req_param(req, "productId");
    int rc = product_id && td_uuid_valid(product_id)
                 ? notif_watch_remove(ctx->db, td_req_caller(req)->sub, product_id)
                 : TD_ENOENT;
    if (rc == TD_ENOENT) {
        td_resp_error(resp, 404, "you are not watching this product");
        return;
    }
    if (rc) {
        td_resp_errno(resp, rc, "the watch could not be removed");
        return;
    }
    td_resp_empty(resp, 204);
}

/* ---- Web Push and webhooks ------------------------------------------------ */

/* Public: a page needs it before anyone signs in, to subscribe. */
static void vapid_public_key(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    td_resp_json(resp, 200, json_pack("{s:s}", "publicKey", td_vapid_public_b64(ctx->vapid)));
}

/* An answer for a channel's domain error: the reason for bad input and
 * for a limit (409), else what could not be done. */
static void channel_error(td_resp_t *resp, int rc, const char *err, const char *what)
{
    if (rc == TD_EINVAL || rc == TD_EEXIST)
        td_resp_error(resp, rc == TD_EINVAL ? 400 : 409, "%s", err);
    else
        td_resp_errno(resp, rc, what);
}

/* Posting the same endpoint again (a page does it on every visit) updates
 * it and answers 201 again: the subscription exists as sent. */
static void post_subscription(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    json_t *out;
    char err[256] = "";
    int rc = notif_push_subscribe(ctx->db, td_req_caller(req)->sub, req->body,
                                  ctx->cfg->allow_http_endpoints, &out, err, sizeof(err));
    if (rc) {
        channel_error(resp, rc, err, "the subscription could not be saved");
        return;
    }
    td_resp_json(resp, 201, out);
}

static void delete_subscription(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    const char *endpoint = td_req_query(req, "endpoint");
    if (!endpoint || !*endpoint) {
        td_resp_error(resp, 400, "endpoint is required (?endpoint=<the subscription's URL>)");
        return;
    }
    int rc = notif_push_unsubscribe(ctx->db, td_req_caller(req)->sub, endpoint);
    if (rc == TD_ENOENT) {
        td_resp_error(resp, 404, "no push subscription of yours has this endpoint");
        return;
    }
    if (rc) {
        td_resp_errno(resp, rc, "the subscription could not be removed");
        return;
    }
    td_resp_empty(resp, 204);
}

static void post_webhook(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    json_t *out;
    char err[256] = "";
    int rc = notif_webhook_add(ctx->db, td_req_caller(req)->sub, req->body,
                               ctx->cfg->allow_http_endpoints, &out, err, sizeof(err));
    if (rc) {
        channel_error(resp, rc, err, "the webhook could not be saved");
        return;
    }
    td_resp_json(resp, 201, out);
}

static void list_webhooks(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    int64_t after;
    int limit;
    if (!page_args(req, resp, &after, &limit)) return;
    json_t *out;
    int rc = notif_webhook_list(ctx->db, td_req_caller(req)->sub, after, limit, &out);
    if (rc) {
        td_resp_errno(resp, rc, "the webhooks could not be read");
        return;
    }
    td_resp_json(resp, 200, out);
}

static void delete_webhook(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    const char *id = td_req_param(req, "webhookId");
    int rc = id && td_uuid_valid(id) ? notif_webhook_remove(ctx->db, td_req_caller(req)->sub, id)
                                     : TD_ENOENT;
    if (rc == TD_ENOENT) {
        td_resp_error(resp, 404, "webhook not found");
        return;
    }
    if (rc) {
        td_resp_errno(resp, rc, "the webhook could not be removed");
        return;
    }
    td_resp_empty(resp, 204);
}

/* The email one-click unsubscribe (RFC 8058): no login, the signature of
 * the link is the authority. The user id and its signature must match,
 * else 403; the answer is the same whether or not the user exists. */
static bool unsubscribe_args(td_req_t *req, td_resp_t *resp, const char **user_id)
{
    notif_ctx_t *ctx = req->ctx;
    *user_id = td_req_query(req, "u");
    const char *sig = td_req_query(req, "s");
    if (!*user_id || !td_uuid_valid(*user_id) ||
        !td_email_unsubscribe_ok(ctx->cfg->secret, ctx->cfg->secret_len, *user_id, sig)) {
        td_resp_error(resp, 403, "this unsubscribe link is not valid");
        return false;
    }
    return true;
}

static void html_page(td_resp_t *resp, const char *body)
{
    char *page = td_asprintf("<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
                             "<title>tidings: email notifications</title></head><body>%s"
                             "</body></html>\n",
                             body);
    td_resp_data(resp, 200, "text/html; charset=utf-8", page, strlen(page));
    td_resp_header(resp, "Cache-Control", "no-store");
    free(page);
}

/* GET changes nothing (mail scanners follow links): it shows a form
 * that POSTs the one-click body. */
static void get_unsubscribe(td_req_t *req, td_resp_t *resp)
{
    const char *user_id;
    if (!unsubscribe_args(req, resp, &user_id)) return;
    const char *sig = td_req_query(req, "s");
    char *form = td_asprintf("<p>Stop notification emails from tidings?</p>"
                             "<form method=\"post\" action=\"unsubscribe?u=%s&amp;s=%s\">"
                             "<input type=\"hidden\" name=\"List-Unsubscribe\" "
                             "value=\"One-Click\"><button type=\"submit\">Unsubscribe</button>"
                             "</form>",
                             user_id, sig);
    html_page(resp, form);
    free(form);
}

static void post_unsubscribe(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    const char *user_id;
    if (!unsubscribe_args(req, resp, &user_id)) return;
    if (!req->body_raw || !strstr(req->body_raw, "List-Unsubscribe=One-Click")) {
        td_resp_error(resp, 400, "the body must be List-Unsubscribe=One-Click");
        return;
    }
    if (td_db_begin(ctx->db) != 0) {
        td_resp_errno(resp, TD_EIO, "the preferences could not be saved");
        return;
    }
    int rc = notif__channel_set_enabled(ctx->db, user_id, NOTIF_CHANNEL_EMAIL, false);
    rc = rc == 0 ? td_db_commit(ctx->db) : (td_db_rollback(ctx->db), rc);
    if (rc) {
        td_resp_errno(resp, rc, "the preferences could not be saved");
        return;
    }
    html_page(resp, "<p>You will get no more notification emails. You can turn them on again "
                    "in your settings.</p>");
}

const td_route_t notif_routes[] = {
    {"GET", "/unsubscribe", get_unsubscribe, TD_AUTH_PUBLIC, TD_BODY_RAW, 0},
    {"POST", "/unsubscribe", post_unsubscribe, TD_AUTH_PUBLIC, TD_BODY_RAW, 0},
    {"GET", "/notifications", list_notifications, TD_AUTH_USER, TD_BODY_NONE, 0},
    {"GET", "/notifications/stream", notif_stream_get, TD_AUTH_USER, TD_BODY_NONE,
     TD_ROUTE_QUERY_TOKEN},
    {"GET", "/notifications/{id}", get_notification, TD_AUTH_USER, TD_BODY_NONE, 0},
    {"POST", "/notifications/read-all", read_all, TD_AUTH_USER, TD_BODY_NONE, 0},
    {"POST", "/notifications/{id}/read", read_notification, TD_AUTH_USER, TD_BODY_NONE, 0},
    {"DELETE", "/notifications/{id}", delete_notification, TD_AUTH_USER, TD_BODY_NONE, 0},
    {"GET", "/preferences", get_preferences, TD_AUTH_USER, TD_BODY_NONE, 0},
    {"PUT", "/preferences", put_preferences, TD_AUTH_USER, TD_BODY_JSON, 0},
    {"POST", "/watches", post_watch, TD_AUTH_USER, TD_BODY_JSON, 0},
    {"GET", "/watches", list_watches, TD_AUTH_USER, TD_BODY_NONE, 0},
    {"DELETE", "/watches/{productId}", delete_watch, TD_AUTH_USER, TD_BODY_NONE, 0},
    {"GET", "/webpush/vapid-public-key", vapid_public_key, TD_AUTH_PUBLIC, TD_BODY_NONE, 0},
    {"POST", "/webpush/subscriptions", post_subscription, TD_AUTH_USER, TD_BODY_JSON, 0},
    {"DELETE", "/webpush/subscriptions", delete_subscription, TD_AUTH_USER, TD_BODY_NONE, 0},
    {"POST", "/webhooks", post_webhook, TD_AUTH_USER, TD_BODY_JSON, 0},
    {"GET", "/webhooks", list_webhooks, TD_AUTH_USER, TD_BODY_NONE, 0},
    {"DELETE", "/webhooks/{webhookId}", delete_webhook, TD_AUTH_USER, TD_BODY_NONE, 0},
};
const size_t notif_route_cnt = TD_ARRAY_SIZE(notif_routes);
