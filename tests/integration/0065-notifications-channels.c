/* Web Push and webhooks through the whole notifications service, in-process
 * on an embedded broker, with the python stand-in push service / webhook
 * receiver (push_receiver.py) on loopback checking every request
 * independently of the C code: the Web Push body decrypted (RFC 8291) and
 * the VAPID token verified (RFC 8292) against the key the service
 * publishes, each webhook's signature verified and the same signature
 * over a tampered body refused.
 *
 *  - the routes: the public VAPID key, validation errors, auth, isolation
 *    between users, a webhook's secret never answered;
 *  - a sign-in reaches the user's push subscription and the webhook
 *    subscribed to UserLoggedInEvent, and not a webhook of another type;
 *  - 410 from the push service removes the subscription;
 *  - 500 then success: delivered once, the same bytes on both tries;
 *  - always 500: tried cfg.delivery_max_attempts times, then the
 *    NotificationCreatedEvent lands in notifications.DLT;
 *  - the service stopped with deliveries pending and started again: each
 *    is delivered exactly once, signed with the same (kept) VAPID key. */
#include "tdelivery.h"

#include <curl/curl.h>
#include <sqlite3.h>

#include "tnotif.h"
#include "notifications/channels.h"

#define ATTEMPTS 3
#define WAIT_MS  30000

static nt_world_t W;
static dt_receiver_t R;
static char *ua_private, *ua_public, *ua_auth; /* the browser's subscription keys */
static char *vapid_public;                     /* as the service publishes it */

static void service_start(void)
{
    char err[512] = "";
    W.svc = notifications_service_start(&W.cfg, err, sizeof(err));
    if (!W.svc) fail_msg("notifications: %s", err);
    W.port = notifications_service_port(W.svc);
    snprintf(W.url, sizeof(W.url), "http://127.0.0.1:%d", W.port);
}

static int world_start(void **state)
{
    (void)state;
    char err[256];
    memset(&W, 0, sizeof(W));
    W.dir = ts_tmpdir("0065-notifications-channels");
    ts_config(&W.bcfg, "broker", W.dir, NULL);
    W.broker = ts_broker(&W.bcfg);
    W.brokers = td_broker_bootstraps(W.broker);
    ts_config(&W.cfg, "notifications", W.dir, W.brokers);
    W.cfg.ports[TD_SVC_NOTIFICATIONS] = 0;
    W.cfg.allow_http_endpoints = true;
    W.cfg.delivery_max_attempts = ATTEMPTS;
    W.cfg.delivery_backoff_ms = 20;
    free(W.cfg.vapid_subject);
    W.cfg.vapid_subject = td_strdup(DT_SUBJECT);
    unsetenv(NOTIF_VAPID_ENV);
    service_start();

    td_vapid_t *ua = td_vapid_generate(err, sizeof(err));
    assert_non_null(ua);
    ua_private = td_vapid_private_b64(ua);
    ua_public = td_strdup(td_vapid_public_b64(ua));
    td_vapid_free(ua);
    unsigned char secret[16];
    assert_int_equal(RAND_bytes(secret, sizeof(secret)), 1);
    ua_auth = td_b64url_encode(secret, sizeof(secret));

    char url[128];
    snprintf(url, sizeof(url), "%s/webpush/vapid-public-key", W.url);
    ts_resp_t r = ts_http("GET", url, NULL, NULL, NULL, NULL);
    assert_int_equal(r.status, 200);
    vapid_public = td_strdup(json_string_value(json_object_get(r.json, "publicKey")));
    ts_resp_free(&r);

    dt_receiver_start(&R);
    dt_control(&R, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "ua_private", ua_private,
                             "ua_public", ua_public, "auth", ua_auth, "vapid_public", vapid_public,
                             "subject", DT_SUBJECT, "secret", DT_SECRET));
    return 0;
}

static int world_stop(void **state)
{
    (void)state;
    dt_receiver_stop(&R);
    nt_stop(&W);
    free(ua_private);
    free(ua_public);
    free(ua_auth);
    free(vapid_public);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------- */

static int64_t sql_int(const char *sql, const char *arg)
{
    char *path = td_asprintf("%s/notifications.db", W.dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (arg) sqlite3_bind_text(st, 1, arg, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    td_db_done(st);
    sqlite3_close(db);
    free(path);
    return v;
}

static int64_t pending(void)
{
    return sql_int("SELECT COUNT(*) FROM td_delivery WHERE state = 'pending'", NULL);
}

static bool drained_cond(void *arg)
{
    (void)arg;
    return pending() == 0;
}

static char *url_of(const char *path)
{
    return td_asprintf("%s%s", W.url, path);
}

/* A request to the service; the response is the caller's. */
static ts_resp_t call(const char *method, const char *path, const char *token, json_t *body)
{
    char *url = url_of(path);
    ts_resp_t r = body ? ts_http_json(method, url, token, body)
                       : ts_http(method, url, token, NULL, NULL, NULL);
    free(url);
    return r;
}

static long status_of(const char *method, const char *path, const char *token, json_t *body,
                      const char *want_code)
{
    ts_resp_t r = call(method, path, token, body);
    long status = r.status;
    if (want_code && strcmp(ts_error_code(&r), want_code) != 0)
        fail_msg("%s %s: %ld %s, want code %s", method, path, status, r.body, want_code);
    ts_resp_free(&r);
    return status;
}

static json_t *sub_json(const char *endpoint)
{
    return json_pack("{s:s, s:{s:s, s:s}}", "endpoint", endpoint, "keys", "p256dh", ua_public,
                     "auth", ua_auth);
}

/* Subscribes token's user to <receiver><path>. */
static void subscribe(const char *token, const char *path)
{
    char *endpoint = td_asprintf("%s%s", R.base, path);
    ts_resp_t r = call("POST", "/webpush/subscriptions", token, sub_json(endpoint));
    if (r.status != 201) fail_msg("subscribe: %ld %s", r.status, r.body);
    ts_resp_free(&r);
    free(endpoint);
}

/* A webhook of token's user to <base><path> for one type; its id. */
static char *add_webhook_at(const char *token, const char *base, const char *path, const char *type)
{
    char *url = td_asprintf("%s%s", base, path);
    ts_resp_t r =
        call("POST", "/webhooks", token,
             json_pack("{s:s, s:s, s:[s]}", "url", url, "secret", DT_SECRET, "events", type));
    if (r.status != 201) fail_msg("webhook: %ld %s", r.status, r.body);
    char *id = td_strdup(json_string_value(json_object_get(r.json, "webhookId")));
    assert_true(td_uuid_valid(id));
    ts_resp_free(&r);
    free(url);
    return id;
}

/* The same at the receiver. */
static char *add_webhook(const char *token, const char *path, const char *type)
{
    return add_webhook_at(token, R.base, path, type);
}

typedef struct want_reqs {
    const char *path;
    size_t n;
} want_reqs_t;

static bool reqs_cond(void *arg)
{
    want_reqs_t *w = arg;
    json_t *reqs = dt_requests(&R, w->path);
    bool ok = json_array_size(reqs) >= w->n;
    json_decref(reqs);
    return ok;
}

/* Waits until the receiver has at least n requests under path; returns
 * them all. */
static json_t *wait_requests(const char *path, size_t n)
{
    want_reqs_t w = {path, n};
    if (!ts_wait_until(reqs_cond, &w, WAIT_MS)) {
        json_t *got = dt_requests(&R, path);
        fail_msg("%s: %zu requests, want %zu", path, json_array_size(got), n);
    }
    return dt_requests(&R, path);
}

static char *body_of(const json_t *req, size_t *len)
{
    unsigned char *raw = td_b64url_decode(json_string_value(json_object_get(req, "body_b64")), len);
    assert_non_null(raw);
    char *s = td_malloc(*len + 1);
    memcpy(s, raw, *len);
    s[*len] = '\0';
    free(raw);
    return s;
}

/* The user's only notification (waited for). New reference. */
static json_t *only_notification(const char *token)
{
    assert_true(nt_wait_inbox(&W, token, 1));
    json_t *inbox = nt_inbox(&W, token);
    json_t *list = json_object_get(inbox, "notifications");
    assert_int_equal(json_array_size(list), 1);
    json_t *n = json_incref(json_array_get(list, 0));
    json_decref(inbox);
    return n;
}

/* ---- routes -------------------------------------------------------------------- */

static void test_routes(void **state)
{
    (void)state;
    char ann[TD_UUID_LEN + 1] = "", bob[TD_UUID_LEN + 1] = "";
    char *ta = nt_token(&W, ann), *tb = nt_token(&W, bob);

    /* The public key: no auth, a 65-byte uncompressed P-256 point. */
    ts_resp_t r = call("GET", "/webpush/vapid-public-key", NULL, NULL);
    assert_int_equal(r.status, 200);
    size_t len;
    unsigned char *raw =
        td_b64url_decode(json_string_value(json_object_get(r.json, "publicKey")), &len);
    assert_non_null(raw);
    assert_int_equal(len, 65);
    assert_int_equal(raw[0], 0x04);
    free(raw);
    ts_resp_free(&r);

    /* Subscriptions. */
    char *ep = td_asprintf("%s/ok/routes-%s", R.base, ann);
    assert_int_equal(
        status_of("POST", "/webpush/subscriptions", NULL, sub_json(ep), "unauthenticated"), 401);
    assert_int_equal(
        status_of("POST", "/webpush/subscriptions", "not-a-token", sub_json(ep), "unauthenticated"),
        401);
    json_t *bad[] = {
        json_pack("{s:s, s:{s:s, s:s}}", "endpoint", "http://example.com/push", "keys", "p256dh",
                  ua_public, "auth", ua_auth),
        json_pack("{s:s, s:{s:s, s:s}}", "endpoint", ep, "keys", "p256dh", "AAAA", "auth", ua_auth),
        json_pack("{s:s, s:{s:s, s:s}}", "endpoint", ep, "keys", "p256dh", ua_public, "auth",
                  "AAAA"),
        json_pack("{s:s, s:{s:s, s:s}, s:s}", "endpoint", ep, "keys", "p256dh", ua_public, "auth",
                  ua_auth, "owner", bob),
        json_pack("{s:s}", "endpoint", ep),
        json_array(),
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++)
        assert_int_equal(
            status_of("POST", "/webpush/subscriptions", ta, bad[i], "invalid_argument"), 400);
    char *url = url_of("/webpush/subscriptions");
    r = ts_http("POST", url, ta, "endpoint=x", "application/x-www-form-urlencoded", NULL);
    assert_int_equal(r.status, 415);
    ts_resp_free(&r);
    free(url);

    r = call("POST", "/webpush/subscriptions", ta, sub_json(ep));
    assert_int_equal(r.status, 201);
    char *sub_id = td_strdup(json_string_value(json_object_get(r.json, "subscriptionId")));
    ts_resp_free(&r);
    r = call("POST", "/webpush/subscriptions", ta, sub_json(ep)); /* again: updated */
    assert_int_equal(r.status, 201);
    assert_string_equal(json_string_value(json_object_get(r.json, "subscriptionId")), sub_id);
    ts_resp_free(&r);
    assert_int_equal(sql_int("SELECT COUNT(*) FROM push_subscriptions WHERE user_id = ?", ann), 1);

    char *escaped = curl_easy_escape(NULL, ep, 0);
    char *del = td_asprintf("/webpush/subscriptions?endpoint=%s", escaped);
    curl_free(escaped);
    assert_int_equal(status_of("DELETE", del, NULL, NULL, "unauthenticated"), 401);
    assert_int_equal(status_of("DELETE", del, tb, NULL, "not_found"), 404); /* Ann's */
    assert_int_equal(status_of("DELETE", "/webpush/subscriptions", ta, NULL, "invalid_argument"),
                     400);
    assert_int_equal(status_of("DELETE", del, ta, NULL, NULL), 204);
    assert_int_equal(status_of("DELETE", del, ta, NULL, "not_found"), 404);
    assert_int_equal(sql_int("SELECT COUNT(*) FROM push_subscriptions WHERE user_id = ?", ann), 0);
    free(del);

    /* Webhooks. */
    char *hook_url = td_asprintf("%s/ok/routes-hook", R.base);
    json_t *hook = json_pack("{s:s, s:s, s:[s]}", "url", hook_url, "secret", DT_SECRET, "events",
                             "UserLoggedInEvent");
    assert_int_equal(status_of("POST", "/webhooks", NULL, json_incref(hook), "unauthenticated"),
                     401);
    json_t *bad_hooks[] = {
        json_pack("{s:s, s:s, s:[s]}", "url", hook_url, "secret", DT_SECRET, "events", "Nope"),
        json_pack("{s:s, s:s, s:[]}", "url", hook_url, "secret", DT_SECRET, "events"),
        json_pack("{s:s, s:s, s:[s]}", "url", hook_url, "secret", "short", "events",
                  "UserLoggedInEvent"),
        json_pack("{s:s, s:s, s:[s]}", "url", "ftp://127.0.0.1/x", "secret", DT_SECRET, "events",
                  "UserLoggedInEvent"),
        json_pack("{s:s, s:s, s:[s]}", "url", "http://example.com/x", "secret", DT_SECRET, "events",
                  "UserLoggedInEvent"),
        json_pack("{s:s, s:s, s:[s], s:i}", "url", hook_url, "secret", DT_SECRET, "events",
                  "UserLoggedInEvent", "retries", 3),
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad_hooks); i++)
        assert_int_equal(status_of("POST", "/webhooks", ta, bad_hooks[i], "invalid_argument"), 400);

    r = call("POST", "/webhooks", ta, json_incref(hook));
    assert_int_equal(r.status, 201);
    char *hook_id = td_strdup(json_string_value(json_object_get(r.json, "webhookId")));
    assert_true(td_uuid_valid(hook_id));
    assert_null(strstr(r.body, DT_SECRET));
    ts_resp_free(&r);
    json_decref(hook);

    r = call("GET", "/webhooks", ta, NULL);
    assert_int_equal(r.status, 200);
    assert_null(strstr(r.body, DT_SECRET));
    json_t *list = json_object_get(r.json, "webhooks");
    assert_int_equal(json_array_size(list), 1);
    json_t *w = json_array_get(list, 0);
    assert_string_equal(json_string_value(json_object_get(w, "webhookId")), hook_id);
    assert_string_equal(json_string_value(json_object_get(w, "url")), hook_url);
    assert_string_equal(json_string_value(json_array_get(json_object_get(w, "events"), 0)),
                        "UserLoggedInEvent");
    assert_non_null(json_object_get(w, "createdAt"));
    assert_true(json_is_null(json_object_get(r.json, "next")));
    ts_resp_free(&r);

    r = call("GET", "/webhooks", tb, NULL); /* Bob sees none of Ann's */
    assert_int_equal(r.status, 200);
    assert_int_equal(json_array_size(json_object_get(r.json, "webhooks")), 0);
    ts_resp_free(&r);
    assert_int_equal(status_of("GET", "/webhooks", NULL, NULL, "unauthenticated"), 401);
    assert_int_equal(status_of("GET", "/webhooks?limit=0", ta, NULL, "invalid_argument"), 400);

    char *del_hook = td_asprintf("/webhooks/%s", hook_id);
    assert_int_equal(status_of("DELETE", del_hook, tb, NULL, "not_found"), 404);
    assert_int_equal(status_of("DELETE", "/webhooks/not-a-uuid", ta, NULL, "not_found"), 404);
    assert_int_equal(status_of("PUT", del_hook, ta, NULL, "method_not_allowed"), 405);
    assert_int_equal(status_of("DELETE", del_hook, ta, NULL, NULL), 204);
    assert_int_equal(status_of("DELETE", del_hook, ta, NULL, "not_found"), 404);
    free(del_hook);

    free(hook_id);
    free(hook_url);
    free(sub_id);
    free(ep);
    free(ta);
    free(tb);
}

/* ---- deliveries ------------------------------------------------------------------ */

static void test_signin_reaches_push_and_webhook(void **state)
{
    (void)state;
    char user[TD_UUID_LEN + 1] = "";
    char *token = nt_token(&W, user);
    char push_path[96], hook_path[96], other_path[96];
    snprintf(push_path, sizeof(push_path), "/ok/push-%s", user);
    snprintf(hook_path, sizeof(hook_path), "/ok/hook-%s", user);
    snprintf(other_path, sizeof(other_path), "/ok/other-%s", user);
    subscribe(token, push_path);
    char *hook = add_webhook(token, hook_path, "UserLoggedInEvent");
    char *other = add_webhook(token, other_path, "OrderCreatedEvent");

    int64_t t0 = td_now_ms() / 1000;
    nt_login(&W, user);
    json_t *n = only_notification(token);
    const char *nid = json_string_value(json_object_get(n, "id"));

    /* The push: decrypted by the receiver to the notification, VAPID
     * valid for the receiver's origin and our published key. */
    json_t *reqs = wait_requests(push_path, 1);
    assert_true(ts_wait_until(drained_cond, NULL, WAIT_MS));
    json_decref(reqs);
    reqs = dt_requests(&R, push_path);
    assert_int_equal(json_array_size(reqs), 1);
    json_t *push = json_array_get(reqs, 0);
    assert_int_equal(dt_status(reqs, 0), 201);
    assert_null(json_object_get(push, "decrypt_error"));
    json_t *plain = json_loads(json_string_value(json_object_get(push, "plaintext")), 0, NULL);
    assert_non_null(plain);
    assert_true(json_equal(plain, n));
    json_t *plain_thread = plain;
    if (!json_is_true(json_object_get(push, "vapid_ok")))
        fail_msg("VAPID: %s", json_string_value(json_object_get(push, "vapid_error")));
    assert_string_equal(dt_header(push, "content-encoding"), "aes128gcm");
    assert_string_equal(dt_header(push, "ttl"), "86400");
    /* A sign-in is a security alert (urgent), of the account thread: its
     * Topic is base64url of the first 24 bytes of SHA-256("account"). */
    assert_string_equal(dt_header(push, "urgency"), "high");
    assert_string_equal(dt_header(push, "topic"), "mvIRMpsvyC5e_pBgYscwCCgZsj_oOUvE");
    assert_string_equal(json_string_value(json_object_get(plain_thread, "thread")), "account");
    json_decref(plain_thread);
    json_decref(reqs);

    /* The webhook: the notification as JSON, signed (verified by the
     * receiver and here), a tampered body refused. */
    reqs = dt_requests(&R, hook_path);
    assert_int_equal(json_array_size(reqs), 1);
    json_t *hk = json_array_get(reqs, 0);
    assert_int_equal(dt_status(reqs, 0), 201);
    assert_true(json_is_true(json_object_get(hk, "sig_ok")));
    assert_true(json_is_false(json_object_get(hk, "sig_tampered_ok")));
    assert_string_equal(dt_header(hk, "x-tidings-event-id"), nid);
    assert_non_null(strstr(dt_header(hk, "content-type"), "application/json"));
    const char *ts = dt_header(hk, "x-tidings-timestamp");
    int64_t ts_s = strtoll(ts, NULL, 10);
    assert_true(ts_s >= t0 - 1 && ts_s <= td_now_ms() / 1000 + 1);
    size_t len;
    char *body = body_of(hk, &len);
    json_t *sent = json_loadb(body, len, 0, NULL);
    assert_true(json_equal(sent, n));
    json_decref(sent);
    const char *sig = dt_header(hk, "x-tidings-signature");
    assert_int_equal(td_webhook_verify(DT_SECRET, strlen(DT_SECRET), ts, body, len, sig,
                                       td_now_ms() / 1000, TD_WEBHOOK_TOLERANCE_S),
                     0);
    body[len / 2] ^= 1;
    assert_int_equal(td_webhook_verify(DT_SECRET, strlen(DT_SECRET), ts, body, len, sig,
                                       td_now_ms() / 1000, TD_WEBHOOK_TOLERANCE_S),
                     TD_EINVAL);
    free(body);
    json_decref(reqs);

    /* The webhook of another type got nothing. */
    reqs = dt_requests(&R, other_path);
    assert_int_equal(json_array_size(reqs), 0);
    json_decref(reqs);

    json_decref(n);
    free(hook);
    free(other);
    free(token);
}

static bool subscription_gone(void *arg)
{
    return sql_int("SELECT COUNT(*) FROM push_subscriptions WHERE user_id = ?", arg) == 0;
}

static void test_gone_subscription_is_removed(void **state)
{
    (void)state;
    char user[TD_UUID_LEN + 1] = "";
    char *token = nt_token(&W, user);
    char gone_path[96], ok_path[96];
    snprintf(gone_path, sizeof(gone_path), "/status/410/gone-%s", user);
    snprintf(ok_path, sizeof(ok_path), "/ok/kept-%s", user);
    subscribe(token, gone_path);
    assert_int_equal(sql_int("SELECT COUNT(*) FROM push_subscriptions WHERE user_id = ?", user), 1);

    nt_login(&W, user);
    json_decref(wait_requests(gone_path, 1));
    assert_true(ts_wait_until(subscription_gone, user, WAIT_MS));

    /* The next notification goes to the new subscription only. */
    subscribe(token, ok_path);
    nt_login(&W, user);
    assert_true(nt_wait_inbox(&W, token, 2));
    json_decref(wait_requests(ok_path, 1));
    assert_true(ts_wait_until(drained_cond, NULL, WAIT_MS));
    json_t *reqs = dt_requests(&R, gone_path);
    assert_int_equal(json_array_size(reqs), 1);
    json_decref(reqs);
    free(token);
}

static void test_failure_then_success_delivers_once(void **state)
{
    (void)state;
    char user[TD_UUID_LEN + 1] = "";
    char *token = nt_token(&W, user);
    char push_path[96], hook_path[96];
    snprintf(push_path, sizeof(push_path), "/flaky/1/push-%s", user);
    snprintf(hook_path, sizeof(hook_path), "/flaky/1/hook-%s", user);
    subscribe(token, push_path);
    char *hook = add_webhook(token, hook_path, "UserLoggedInEvent");

    nt_login(&W, user);
    json_t *n = only_notification(token);
    const char *nid = json_string_value(json_object_get(n, "id"));
    json_decref(wait_requests(push_path, 2));
    json_decref(wait_requests(hook_path, 2));
    assert_true(ts_wait_until(drained_cond, NULL, WAIT_MS));
    td_sleep_ms(200); /* a third try would come within the backoff */

    const char *paths[] = {push_path, hook_path};
    for (size_t p = 0; p < 2; p++) {
        json_t *reqs = dt_requests(&R, paths[p]);
        assert_int_equal(json_array_size(reqs), 2);
        assert_int_equal(dt_status(reqs, 0), 500);
        assert_int_equal(dt_status(reqs, 1), 201);
        /* The same message both times: the same bytes for the push (one
         * encryption), the same event id for the webhook. */
        json_t *a = json_array_get(reqs, 0), *b = json_array_get(reqs, 1);
        if (p == 0) {
            assert_string_equal(json_string_value(json_object_get(a, "body_b64")),
                                json_string_value(json_object_get(b, "body_b64")));
            assert_true(json_is_true(json_object_get(b, "vapid_ok")));
        } else {
            assert_string_equal(dt_header(a, "x-tidings-event-id"), nid);
            assert_string_equal(dt_header(b, "x-tidings-event-id"), nid);
            assert_true(json_is_true(json_object_get(b, "sig_ok")));
        }
        json_decref(reqs);
    }
    json_decref(n);
    free(hook);
    free(token);
}

static bool failed_cond(void *arg)
{
    return sql_int("SELECT COUNT(*) FROM td_delivery WHERE state = 'failed' AND target_id = ?",
                   arg) == 1;
}

static void test_always_failing_lands_in_dlt(void **state)
{
    (void)state;
    char user[TD_UUID_LEN + 1] = "";
    char *token = nt_token(&W, user);
    char hook_path[96];
    snprintf(hook_path, sizeof(hook_path), "/status/500/hook-%s", user);
    char *hook = add_webhook(token, hook_path, "UserLoggedInEvent");

    nt_login(&W, user);
    json_t *n = only_notification(token);
    assert_true(ts_wait_until(failed_cond, hook, WAIT_MS));
    td_sleep_ms(200); /* no try after the last */
    json_t *reqs = dt_requests(&R, hook_path);
    assert_int_equal(json_array_size(reqs), ATTEMPTS);
    for (size_t i = 0; i < ATTEMPTS; i++) assert_int_equal(dt_status(reqs, i), 500);
    json_decref(reqs);

    /* The NotificationCreatedEvent, on notifications.DLT, with why. */
    td_record_t *found = NULL;
    int64_t deadline = td_mono_ms() + WAIT_MS;
    while (!found && td_mono_ms() < deadline) {
        ts_records_t dlt = ts_read_topic(W.brokers, "tidings.notifications.DLT", 1, 300, 5000);
        for (size_t i = 0; i < dlt.cnt && !found; i++) {
            const char *target = td_record_header_str(dlt.recs[i], "tidings_dlt_target");
            if (target && !strcmp(target, hook)) found = td_record_dup(dlt.recs[i]);
        }
        ts_records_free(&dlt);
    }
    assert_non_null(found);
    assert_string_equal(td_record_header_str(found, "ce_type"), "NotificationCreatedEvent");
    assert_string_equal(td_record_header_str(found, "tidings_dlt_original_topic"),
                        "tidings.notifications");
    assert_string_equal(td_record_header_str(found, "tidings_dlt_channel"), "webhook");
    assert_non_null(strstr(td_record_header_str(found, "tidings_dlt_reason"), ": http_500"));
    assert_memory_equal(found->key, user, TD_UUID_LEN);
    json_t *v = json_loadb(found->value, found->value_len, 0, NULL);
    assert_true(json_equal(v, n));
    json_decref(v);
    td_record_free(found);
    json_decref(n);
    free(hook);
    free(token);
}

/* Last: it restarts the service with another retry policy. */
static void test_restart_with_pending_delivers_each_once(void **state)
{
    (void)state;
    enum { LOGINS = 3 };
    notifications_service_stop(W.svc);
    W.cfg.delivery_max_attempts = 1000; /* retry while down, never give up */
    W.cfg.delivery_backoff_ms = 50;
    service_start();

    char user[TD_UUID_LEN + 1] = "";
    char *token = nt_token(&W, user);
    char push_path[96], hook_path[96];
    snprintf(push_path, sizeof(push_path), "/down/push-%s", user);
    snprintf(hook_path, sizeof(hook_path), "/down/hook-%s", user);
    dt_control(&R, json_pack("{s:b}", "down", 1));
    subscribe(token, push_path);
    /* The webhook at another origin (same receiver, as "localhost"), as a
     * push service and a webhook receiver are in life: each has its own
     * circuit breaker. */
    char *local = td_asprintf("http://localhost:%d", R.port);
    char *hook = add_webhook_at(token, local, hook_path, "UserLoggedInEvent");
    free(local);

    for (int i = 0; i < LOGINS; i++) nt_login(&W, user);
    assert_true(nt_wait_inbox(&W, token, LOGINS));
    /* Every delivery has been tried (and refused) at least once. (Not
     * much more: after 5 failures in a row the breaker pauses the
     * receiver, whose deliveries then wait without using attempts.) */
    json_decref(wait_requests(push_path, LOGINS));
    json_decref(wait_requests(hook_path, LOGINS));
    notifications_service_stop(W.svc);
    W.svc = NULL;
    assert_int_equal(pending(), 2 * LOGINS);

    dt_control(&R, json_pack("{s:b}", "down", 0));
    service_start();
    ts_resp_t r = call("GET", "/webpush/vapid-public-key", NULL, NULL);
    assert_string_equal(json_string_value(json_object_get(r.json, "publicKey")), vapid_public);
    ts_resp_free(&r);
    assert_true(ts_wait_until(drained_cond, NULL, WAIT_MS));
    td_sleep_ms(300);

    /* Per notification and channel: exactly one 201. */
    json_t *inbox = nt_inbox(&W, token);
    json_t *list = json_object_get(inbox, "notifications");
    assert_int_equal(json_array_size(list), LOGINS);
    json_t *pushes = dt_requests(&R, push_path), *hooks = dt_requests(&R, hook_path);
    int push_ok = 0;
    size_t i;
    json_t *req;
    json_array_foreach(pushes, i, req)
    {
        if (dt_status(pushes, i) != 201) continue;
        push_ok++;
        assert_true(json_is_true(json_object_get(req, "vapid_ok")));
    }
    assert_int_equal(push_ok, LOGINS);
    size_t k;
    json_t *n;
    json_array_foreach(list, k, n)
    {
        const char *nid = json_string_value(json_object_get(n, "id"));
        int hook_ok = 0, push_seen = 0;
        json_array_foreach(hooks, i, req)
        {
            if (dt_status(hooks, i) == 201 && !strcmp(dt_header(req, "x-tidings-event-id"), nid)) {
                hook_ok++;
                assert_true(json_is_true(json_object_get(req, "sig_ok")));
            }
        }
        json_array_foreach(pushes, i, req)
        {
            const char *text = json_string_value(json_object_get(req, "plaintext"));
            json_t *plain = text ? json_loads(text, 0, NULL) : NULL;
            if (dt_status(pushes, i) == 201 && plain &&
                !strcmp(json_string_value(json_object_get(plain, "id")), nid))
                push_seen++;
            json_decref(plain);
        }
        assert_int_equal(hook_ok, 1);
        assert_int_equal(push_seen, 1);
    }
    json_decref(pushes);
    json_decref(hooks);
    json_decref(inbox);
    free(hook);
    free(token);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_signin_reaches_push_and_webhook),
        cmocka_unit_test(test_gone_subscription_is_removed),
        cmocka_unit_test(test_failure_then_success_delivers_once),
        cmocka_unit_test(test_always_failing_lands_in_dlt),
        cmocka_unit_test(test_restart_with_pending_delivers_each_once),
    };
    return cmocka_run_group_tests(tests, world_start, world_stop);
}
