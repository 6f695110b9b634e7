/* The notifications service's channels on an in-memory database (and one
 * temp file for the VAPID key's persistence): the VAPID key made once and
 * kept, or taken from TIDINGS_VAPID_PRIVATE_KEY; Web Push subscriptions
 * validated (https or flagged loopback http, a real P-256 point, a 16-byte
 * auth, no unknown fields), updated by endpoint, moved between users,
 * removed only by their owner, capped; webhooks validated (URL, secret
 * length, rule-table event types), listed without their secret, paged,
 * removed only by their owner; and the delivery hook: one Web Push per
 * subscription and one webhook per matching webhook for each new
 * notification, in its transaction, nothing for a redelivered event or
 * another user, queued deliveries dropped with their target, a long
 * notification trimmed to fit a push, and the gone callback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "notifications/channels.h"
#include "notifications/notifications.h"
#include "tidings/urlguard.h"
#include "tidings/auth.h"
#include "tidings/config.h"
#include "tidings/delivery.h"
#include "tidings/json.h"
#include "tsupport.h"

#define ANN "11111111-1111-4111-8111-111111111111"
#define BOB "22222222-2222-4222-8222-222222222222"

#define SECRET "a-webhook-secret-of-some-length"

typedef struct fixture {
    td_config_t cfg;
    td_db_t *db;
    notif_t n;
    char *p256dh, *auth; /* a browser's subscription keys */
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = td_calloc(1, sizeof(*f));
    td_config_defaults(&f->cfg);
    char err[256];
    f->db = td_db_open(":memory:", notif_migrations, notif_migration_cnt, err, sizeof(err));
    assert_non_null(f->db);
    assert_int_equal(td_delivery_init(f->db), 0);
    f->n.db = f->db;
    f->n.cfg = &f->cfg;
    f->n.deliver = notif_channels_deliver;
    f->n.deliver_arg = &f->cfg;

    td_vapid_t *ua = td_vapid_generate(err, sizeof(err));
    assert_non_null(ua);
    f->p256dh = td_strdup(td_vapid_public_b64(ua));
    td_vapid_free(ua);
    unsigned char secret[16];
    assert_int_equal(RAND_bytes(secret, sizeof(secret)), 1);
    f->auth = td_b64url_encode(secret, sizeof(secret));
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    td_db_close(f->db);
    td_config_free(&f->cfg);
    free(f->p256dh);
    free(f->auth);
    free(f);
    return 0;
}

static int64_t sql_int(fixture_t *f, const char *sql)
{
    td_db_lock(f->db);
    sqlite3_stmt *st = td_db_prepare(f->db, sql);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(f->db);
    return v;
}

static int64_t queued(fixture_t *f, const char *channel)
{
    char sql[160];
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM td_delivery WHERE channel = '%s' AND state = 'pending'",
             channel);
    return sql_int(f, sql);
}

/* {endpoint, keys} with the fixture's keys unless given. New reference. */
static json_t *sub_body(const fixture_t *f, const char *endpoint, const char *p256dh,
                        const char *auth)
{
    return json_pack("{s:s, s:{s:s, s:s}}", "endpoint", endpoint, "keys", "p256dh",
                     p256dh ? p256dh : f->p256dh, "auth", auth ? auth : f->auth);
}

/* Subscribes; returns the rc, the reason in err. */
static int subscribe(fixture_t *f, const char *user, json_t *body, bool allow_http, char *id_out,
                     char *err, size_t errlen)
{
    json_t *out = NULL;
    err[0] = '\0';
    int rc = notif_push_subscribe(f->db, user, body, allow_http, &out, err, errlen);
    json_decref(body);
    if (rc == 0) {
        assert_non_null(out);
        const char *id = json_string_value(json_object_get(out, "subscriptionId"));
        assert_true(td_uuid_valid(id));
        if (id_out) snprintf(id_out, TD_UUID_LEN + 1, "%s", id);
        assert_non_null(json_object_get(out, "endpoint"));
        assert_non_null(json_object_get(out, "createdAt"));
    } else {
        assert_null(out);
    }
    json_decref(out);
    return rc;
}

static void subscribe_ok(fixture_t *f, const char *user, const char *endpoint, char *id_out)
{
    char err[256];
    int rc = subscribe(f, user, sub_body(f, endpoint, NULL, NULL), false, id_out, err, sizeof(err));
    if (rc) fail_msg("subscribe %s: %s", endpoint, err);
}

/* Adds a webhook; returns rc; *out (may be NULL) gets the answer. */
static int add_hook(fixture_t *f, const char *user, json_t *body, bool allow_http, json_t **out,
                    char *err, size_t errlen)
{
    json_t *o = NULL;
    err[0] = '\0';
    int rc = notif_webhook_add(f->db, user, body, allow_http, &o, err, errlen);
    json_decref(body);
    if (out)
        *out = o;
    else
        json_decref(o);
    return rc;
}

static char *hook_ok(fixture_t *f, const char *user, const char *url, const char *events_csv)
{
    json_t *events = json_array();
    char *copy = td_strdup(events_csv), *save = NULL;
    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save))
        json_array_append_new(events, json_string(t));
    free(copy);
    json_t *out;
    char err[256];
    int rc = add_hook(f, user,
                      json_pack("{s:s, s:s, s:o}", "url", url, "secret", SECRET, "events", events),
                      false, &out, err, sizeof(err));
    if (rc) fail_msg("webhook %s: %s", url, err);
    char *id = td_strdup(json_string_value(json_object_get(out, "webhookId")));
    assert_true(td_uuid_valid(id));
    json_decref(out);
    return id;
}

/* Applies ev in one transaction, as the consumer does. */
static void apply_ok(fixture_t *f, td_event_t *ev)
{
    char err[256] = "";
    assert_int_equal(td_db_begin(f->db), 0);
    int rc = notif_apply(&f->n, ev, err, sizeof(err));
    if (rc) {
        td_db_rollback(f->db);
        fail_msg("%s: %s", ev->type, err);
    }
    assert_int_equal(td_db_commit(f->db), 0);
}

static td_event_t *login_event(const char *user)
{
    return td_event_new("users", "UserLoggedInEvent", user,
                        json_pack("{s:s, s:s, s:s}", "userId", user, "email", "x@example.com",
                                  "loggedInAt", "2026-01-01T00:00:00.000Z"));
}

/* A new sign-in of user, applied. */
static void login(fixture_t *f, const char *user)
{
    td_event_t *ev = login_event(user);
    apply_ok(f, ev);
    td_event_free(ev);
}

/* ---- VAPID key ------------------------------------------------------------ */

static void test_vapid_key_made_once_and_kept(void **state)
{
    (void)state;
    char err[256] = "";
    char *dir = ts_tmpdir("unit-notifications-channels");
    char *path = td_asprintf("%s/notifications.db", dir);

    td_db_t *db = td_db_open(path, notif_migrations, notif_migration_cnt, err, sizeof(err));
    assert_non_null(db);
    td_vapid_t *a = notif_vapid_load(db, NULL, err, sizeof(err));
    assert_non_null(a);
    char *pub = td_strdup(td_vapid_public_b64(a));
    size_t len;
    unsigned char *raw = td_b64url_decode(pub, &len);
    assert_int_equal(len, TD_WEBPUSH_KEY_LEN);
    assert_int_equal(raw[0], 0x04);
    free(raw);
    td_vapid_t *again = notif_vapid_load(db, "", err, sizeof(err)); /* empty env = unset */
    assert_string_equal(td_vapid_public_b64(again), pub);
    td_vapid_free(again);
    td_vapid_free(a);
    td_db_close(db);

    /* After a restart: the same key. */
    db = td_db_open(path, notif_migrations, notif_migration_cnt, err, sizeof(err));
    assert_non_null(db);
    td_vapid_t *b = notif_vapid_load(db, NULL, err, sizeof(err));
    assert_non_null(b);
    assert_string_equal(td_vapid_public_b64(b), pub);

    /* The environment's key wins, and the kept one is left as it was. */
    td_vapid_t *other = td_vapid_generate(err, sizeof(err));
    char *other_priv = td_vapid_private_b64(other);
    td_vapid_t *c = notif_vapid_load(db, other_priv, err, sizeof(err));
    assert_non_null(c);
    assert_string_equal(td_vapid_public_b64(c), td_vapid_public_b64(other));
    td_vapid_t *d = notif_vapid_load(db, NULL, err, sizeof(err));
    assert_string_equal(td_vapid_public_b64(d), pub);

    /* A malformed one is a start-up error that names the variable. */
    assert_null(notif_vapid_load(db, "not-a-key", err, sizeof(err)));
    assert_non_null(strstr(err, NOTIF_VAPID_ENV));

    td_vapid_free(b);
    td_vapid_free(c);
    td_vapid_free(d);
    td_vapid_free(other);
    free(other_priv);
    td_db_close(db);
    static const char *const suffixes[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < TD_ARRAY_SIZE(suffixes); i++) {
        char *file = td_asprintf("%s%s", path, suffixes[i]);
        unlink(file);
        free(file);
    }
    free(path);
    free(pub);
    rmdir(dir);
    free(dir);
}

/* ---- subscriptions ------------------------------------------------------------ */

static void test_subscription_validation(void **state)
{
    fixture_t *f = *state;
    char err[256];
    const char *ok = "https://push.example.net/send/abc";

    /* A key of the right length that is not a point on P-256. */
    unsigned char bad_point[TD_WEBPUSH_KEY_LEN];
    memset(bad_point, 0x11, sizeof(bad_point));
    bad_point[0] = 0x04;
    char *off_curve = td_b64url_encode(bad_point, sizeof(bad_point));
    unsigned char short_auth[15] = {1};
    char *auth15 = td_b64url_encode(short_auth, sizeof(short_auth));

    struct {
        json_t *body;
        bool allow_http;
        const char *why; /* in the message */
    } bad[] = {
        {json_pack("{s:{s:s, s:s}}", "keys", "p256dh", f->p256dh, "auth", f->auth), false,
         "endpoint"},
        {sub_body(f, "http://push.example.net/x", NULL, NULL), false, ""},
        {sub_body(f, "http://127.0.0.1:9/x", NULL, NULL), false, ""},
        {sub_body(f, "http://push.example.net/x", NULL, NULL), true, ""}, /* not loopback */
        {sub_body(f, "ftp://push.example.net/x", NULL, NULL), true, ""},
        {sub_body(f, "https://user:pw@push.example.net/x", NULL, NULL), false, ""},
        {sub_body(f, "not a url", NULL, NULL), false, ""},
        {sub_body(f, ok, off_curve, NULL), false, ""},
        {sub_body(f, ok, "AAAA", NULL), false, ""},
        {sub_body(f, ok, NULL, auth15), false, ""},
        {sub_body(f, ok, NULL, "!!!notbase64!!!"), false, ""},
        {json_pack("{s:s}", "endpoint", ok), false, "keys"},
        {json_pack("{s:s, s:s}", "endpoint", ok, "keys", "x"), false, "keys"},
        {json_pack("{s:s, s:{s:s}}", "endpoint", ok, "keys", "p256dh", f->p256dh), false, "auth"},
        {json_pack("{s:s, s:{s:s, s:s, s:s}}", "endpoint", ok, "keys", "p256dh", f->p256dh, "auth",
                   f->auth, "extra", "x"),
         false, "extra"},
        {json_pack("{s:s, s:{s:s, s:i}}", "endpoint", ok, "keys", "p256dh", f->p256dh, "auth", 5),
         false, "auth"},
        {json_pack("{s:s, s:{s:s, s:s}, s:s}", "endpoint", ok, "keys", "p256dh", f->p256dh, "auth",
                   f->auth, "userId", BOB),
         false, "userId"},
        {json_pack("{s:s, s:{s:s, s:s}, s:s}", "endpoint", ok, "keys", "p256dh", f->p256dh, "auth",
                   f->auth, "expirationTime", "soon"),
         false, "expirationTime"},
        {json_pack("{s:i, s:{s:s, s:s}}", "endpoint", 7, "keys", "p256dh", f->p256dh, "auth",
                   f->auth),
         false, "endpoint"},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++) {
        int rc = subscribe(f, ANN, bad[i].body, bad[i].allow_http, NULL, err, sizeof(err));
        if (rc != TD_EINVAL) fail_msg("case %zu: rc %d, want TD_EINVAL", i, rc);
        assert_true(*err);
        if (!strstr(err, bad[i].why)) fail_msg("case %zu: '%s' lacks '%s'", i, err, bad[i].why);
    }
    assert_int_equal(notif_push_count(f->db, ANN), 0);

    /* Accepted: https; loopback http with the flag; a browser's toJSON()
     * with expirationTime null; padded base64url keys. */
    assert_int_equal(subscribe(f, ANN, sub_body(f, ok, NULL, NULL), false, NULL, err, sizeof(err)),
                     0);
    assert_int_equal(subscribe(f, ANN, sub_body(f, "http://127.0.0.1:9/x", NULL, NULL), true, NULL,
                               err, sizeof(err)),
                     0);
    assert_int_equal(subscribe(f, ANN, sub_body(f, "http://localhost:9/y", NULL, NULL), true, NULL,
                               err, sizeof(err)),
                     0);
    json_t *browser =
        json_pack("{s:s, s:n, s:{s:s, s:s}}", "endpoint", "https://fcm.googleapis.com/fcm/send/xyz",
                  "expirationTime", "keys", "p256dh", f->p256dh, "auth", f->auth);
    assert_int_equal(subscribe(f, ANN, browser, false, NULL, err, sizeof(err)), 0);
    assert_int_equal(notif_push_count(f->db, ANN), 4);
    free(off_curve);
    free(auth15);
}

static void test_subscription_update_no_takeover_and_delete(void **state)
{
    fixture_t *f = *state;
    char err[256], id1[TD_UUID_LEN + 1], id2[TD_UUID_LEN + 1], id3[TD_UUID_LEN + 1];
    const char *ep = "https://push.example.net/send/one";

    subscribe_ok(f, ANN, ep, id1);
    subscribe_ok(f, ANN, ep, id2); /* the same again: updated, not doubled */
    assert_string_equal(id1, id2);
    assert_int_equal(notif_push_count(f->db, ANN), 1);

    /* New keys for the same endpoint: the old queued pushes go. */
    login(f, ANN);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 1);
    char e[256];
    td_vapid_t *ua2 = td_vapid_generate(e, sizeof(e));
    assert_int_equal(subscribe(f, ANN, sub_body(f, ep, td_vapid_public_b64(ua2), NULL), false, id2,
                               err, sizeof(err)),
                     0);
    td_vapid_free(ua2);
    assert_string_equal(id1, id2);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 0);
    assert_int_equal(notif_push_count(f->db, ANN), 1);

    /* Bob posts the same endpoint: 409, and it stays Ann's with her keys
     * and her queued push (SPEC section 5: an endpoint never moves). */
    login(f, ANN);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 1);
    err[0] = '\0';
    assert_int_equal(subscribe(f, BOB, sub_body(f, ep, NULL, NULL), false, id3, err, sizeof(err)),
                     TD_EEXIST);
    assert_non_null(strstr(err, "another account"));
    assert_int_equal(notif_push_count(f->db, ANN), 1);
    assert_int_equal(notif_push_count(f->db, BOB), 0);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 1);
    /* Once Ann removes it, Bob may register that browser. */
    assert_int_equal(notif_push_unsubscribe(f->db, ANN, ep), 0);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 0);
    subscribe_ok(f, BOB, ep, id3);
    assert_string_not_equal(id1, id3);
    assert_int_equal(notif_push_count(f->db, BOB), 1);

    /* Only the owner removes it; its queued pushes go with it. */
    login(f, BOB);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 1);
    assert_int_equal(notif_push_unsubscribe(f->db, ANN, ep), TD_ENOENT);
    assert_int_equal(notif_push_count(f->db, BOB), 1);
    assert_int_equal(notif_push_unsubscribe(f->db, BOB, "https://push.example.net/other"),
                     TD_ENOENT);
    assert_int_equal(notif_push_unsubscribe(f->db, BOB, ep), 0);
    assert_int_equal(notif_push_count(f->db, BOB), 0);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 0);
    assert_int_equal(notif_push_unsubscribe(f->db, BOB, ep), TD_ENOENT);
}

static void test_subscription_cap(void **state)
{
    fixture_t *f = *state;
    char err[256], url[128];
    for (int i = 0; i < NOTIF_MAX_SUBSCRIPTIONS; i++) {
        snprintf(url, sizeof(url), "https://push.example.net/s/%d", i);
        subscribe_ok(f, ANN, url, NULL);
    }
    int rc = subscribe(f, ANN, sub_body(f, "https://push.example.net/s/one-more", NULL, NULL),
                       false, NULL, err, sizeof(err));
    assert_int_equal(rc, TD_EEXIST);
    assert_non_null(strstr(err, "at most"));
    /* An update of one it has is still fine, and Bob is not limited by Ann. */
    subscribe_ok(f, ANN, "https://push.example.net/s/0", NULL);
    subscribe_ok(f, BOB, "https://push.example.net/s/bob", NULL);
    assert_int_equal(notif_push_count(f->db, ANN), NOTIF_MAX_SUBSCRIPTIONS);
}

/* ---- webhooks ------------------------------------------------------------------- */

static void test_webhook_validation(void **state)
{
    fixture_t *f = *state;
    char err[256];
    const char *url = "https://hooks.example.com/tidings";
    char long_secret[NOTIF_SECRET_MAX + 2];
    memset(long_secret, 's', sizeof(long_secret) - 1);
    long_secret[sizeof(long_secret) - 1] = '\0';

    struct {
        json_t *body;
        bool allow_http;
        const char *why;
    } bad[] = {
        {json_pack("{s:s, s:[s]}", "secret", SECRET, "events", "UserLoggedInEvent"), false, "url"},
        {json_pack("{s:s, s:s, s:[s]}", "url", "http://hooks.example.com/x", "secret", SECRET,
                   "events", "UserLoggedInEvent"),
         true, ""},
        {json_pack("{s:s, s:s, s:[s]}", "url", "http://127.0.0.1:9/x", "secret", SECRET, "events",
                   "UserLoggedInEvent"),
         false, ""},
        {json_pack("{s:s, s:s, s:[s]}", "url", "javascript:alert(1)", "secret", SECRET, "events",
                   "UserLoggedInEvent"),
         false, ""},
        {json_pack("{s:s, s:[s]}", "url", url, "events", "UserLoggedInEvent"), false, "secret"},
        {json_pack("{s:s, s:s, s:[s]}", "url", url, "secret", "fifteen-chars!!", "events",
                   "UserLoggedInEvent"),
         false, "secret"},
        {json_pack("{s:s, s:s, s:[s]}", "url", url, "secret", long_secret, "events",
                   "UserLoggedInEvent"),
         false, "secret"},
        {json_pack("{s:s, s:i, s:[s]}", "url", url, "secret", 12345, "events", "UserLoggedInEvent"),
         false, "secret"},
        {json_pack("{s:s, s:s}", "url", url, "secret", SECRET), false, "events"},
        {json_pack("{s:s, s:s, s:[]}", "url", url, "secret", SECRET, "events"), false, "events"},
        {json_pack("{s:s, s:s, s:s}", "url", url, "secret", SECRET, "events", "UserLoggedInEvent"),
         false, "events"},
        {json_pack("{s:s, s:s, s:[s]}", "url", url, "secret", SECRET, "events", "NoSuchEvent"),
         false, "NoSuchEvent"},
        /* Consumed but not a rule: no notification is ever of this type. */
        {json_pack("{s:s, s:s, s:[s]}", "url", url, "secret", SECRET, "events",
                   "PaymentFailedEvent"),
         false, "PaymentFailedEvent"},
        {json_pack("{s:s, s:s, s:[i]}", "url", url, "secret", SECRET, "events", 1), false,
         "events"},
        {json_pack("{s:s, s:s, s:[s], s:b}", "url", url, "secret", SECRET, "events",
                   "UserLoggedInEvent", "active", 1),
         false, "active"},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++) {
        int rc = add_hook(f, ANN, bad[i].body, bad[i].allow_http, NULL, err, sizeof(err));
        if (rc != TD_EINVAL) fail_msg("case %zu: rc %d, want TD_EINVAL", i, rc);
        if (!strstr(err, bad[i].why)) fail_msg("case %zu: '%s' lacks '%s'", i, err, bad[i].why);
    }
    json_t *list;
    assert_int_equal(notif_webhook_list(f->db, ANN, 0, 50, &list), 0);
    assert_int_equal(json_array_size(json_object_get(list, "webhooks")), 0);
    json_decref(list);

    /* Good ones: duplicates collapse; loopback http with the flag; a
     * 16-character secret and a 256-character one. */
    json_t *out;
    char secret256[NOTIF_SECRET_MAX + 1];
    memset(secret256, 'k', NOTIF_SECRET_MAX);
    secret256[NOTIF_SECRET_MAX] = '\0';
    assert_int_equal(
        add_hook(f, ANN,
                 json_pack("{s:s, s:s, s:[s,s,s]}", "url", url, "secret", "sixteen-chars!!!",
                           "events", "OrderCreatedEvent", "UserLoggedInEvent", "OrderCreatedEvent"),
                 false, &out, err, sizeof(err)),
        0);
    assert_true(td_uuid_valid(json_string_value(json_object_get(out, "webhookId"))));
    assert_null(json_object_get(out, "secret"));
    char *events = td_json_dumps(json_object_get(out, "events"));
    assert_string_equal(events, "[\"OrderCreatedEvent\",\"UserLoggedInEvent\"]");
    free(events);
    json_decref(out);
    assert_int_equal(add_hook(f, ANN,
                              json_pack("{s:s, s:s, s:[s]}", "url", "http://127.0.0.1:8/h",
                                        "secret", secret256, "events", "UserLoggedInEvent"),
                              true, NULL, err, sizeof(err)),
                     0);
}

static void test_webhook_list_delete_isolation(void **state)
{
    fixture_t *f = *state;
    char *ids[5];
    char url[96];
    for (int i = 0; i < 5; i++) {
        snprintf(url, sizeof(url), "https://hooks.example.com/%d", i);
        ids[i] = hook_ok(f, ANN, url, "UserLoggedInEvent,OrderApprovedEvent");
    }
    char *bobs = hook_ok(f, BOB, "https://bob.example.com/", "UserLoggedInEvent");

    /* Newest first, two a page, never a secret, never Bob's. */
    json_t *page;
    int64_t cursor = 0;
    size_t seen = 0;
    for (int p = 0; p < 3; p++) {
        assert_int_equal(notif_webhook_list(f->db, ANN, cursor, 2, &page), 0);
        json_t *items = json_object_get(page, "webhooks");
        size_t i;
        json_t *w;
        json_array_foreach(items, i, w)
        {
            assert_string_equal(json_string_value(json_object_get(w, "webhookId")), ids[4 - seen]);
            assert_null(json_object_get(w, "secret"));
            assert_non_null(json_object_get(w, "createdAt"));
            assert_int_equal(json_array_size(json_object_get(w, "events")), 2);
            char *text = td_json_dumps(w);
            assert_null(strstr(text, SECRET));
            free(text);
            seen++;
        }
        json_t *next = json_object_get(page, "next");
        if (p < 2) {
            assert_true(json_is_string(next));
            cursor = strtoll(json_string_value(next), NULL, 10);
        } else {
            assert_true(json_is_null(next));
        }
        json_decref(page);
    }
    assert_int_equal(seen, 5);

    /* Bob cannot remove Ann's; Ann can, once. */
    assert_int_equal(notif_webhook_remove(f->db, BOB, ids[0]), TD_ENOENT);
    assert_int_equal(notif_webhook_remove(f->db, ANN, bobs), TD_ENOENT);
    assert_int_equal(notif_webhook_remove(f->db, ANN, ids[0]), 0);
    assert_int_equal(notif_webhook_remove(f->db, ANN, ids[0]), TD_ENOENT);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM webhook_events"), 4 * 2 + 1);
    assert_int_equal(notif_webhook_list(f->db, BOB, 0, 50, &page), 0);
    assert_int_equal(json_array_size(json_object_get(page, "webhooks")), 1);
    json_decref(page);

    for (int i = 0; i < 5; i++) free(ids[i]);
    free(bobs);
}

static void test_webhook_cap(void **state)
{
    fixture_t *f = *state;
    char err[256];
    for (int i = 0; i < NOTIF_MAX_WEBHOOKS; i++)
        free(hook_ok(f, ANN, "https://h.example.com/", "UserLoggedInEvent"));
    int rc = add_hook(f, ANN,
                      json_pack("{s:s, s:s, s:[s]}", "url", "https://h.example.com/", "secret",
                                SECRET, "events", "UserLoggedInEvent"),
                      false, NULL, err, sizeof(err));
    assert_int_equal(rc, TD_EEXIST);
    free(hook_ok(f, BOB, "https://h.example.com/", "UserLoggedInEvent"));
}

/* ---- the delivery hook ------------------------------------------------------------- */

/* A sign-in is of the account thread: its Topic is base64url of the first
 * 24 bytes of SHA-256("account") (python3 -c 'import hashlib,base64;
 * print(base64.urlsafe_b64encode(hashlib.sha256(b"account").digest()[:24]))'),
 * and a security alert is urgent. */
#define ACCOUNT_TOPIC "mvIRMpsvyC5e_pBgYscwCCgZsj_oOUvE"

static void test_new_notification_queues_its_deliveries(void **state)
{
    fixture_t *f = *state;
    char sub1[TD_UUID_LEN + 1], sub2[TD_UUID_LEN + 1];
    subscribe_ok(f, ANN, "https://push.example.net/ann/1", sub1);
    subscribe_ok(f, ANN, "https://push.example.net/ann/2", sub2);
    subscribe_ok(f, BOB, "https://push.example.net/bob", NULL);
    char *logins = hook_ok(f, ANN, "https://hooks.example.com/logins", "UserLoggedInEvent");
    char *orders = hook_ok(f, ANN, "https://hooks.example.com/orders", "OrderCreatedEvent");
    char *bobs = hook_ok(f, BOB, "https://hooks.example.com/bob", "UserLoggedInEvent");

    td_event_t *ev = login_event(ANN);
    apply_ok(f, ev);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 2);
    assert_int_equal(queued(f, TD_DELIVERY_WEBHOOK), 1);

    /* Every row carries the notification id and the dead-letter origin
     * (the NotificationCreatedEvent on the notifications topic). */
    json_t *inbox;
    assert_int_equal(notif_after(f->db, ANN, 0, 10, &inbox), 0);
    assert_int_equal(json_array_size(inbox), 1);
    const char *nid = json_string_value(json_object_get(json_array_get(inbox, 0), "id"));
    char sql[512];
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM td_delivery WHERE event_id = '%s'"
             " AND origin_topic = 'tidings.notifications' AND origin_key = CAST('%s' AS BLOB)",
             nid, ANN);
    assert_int_equal(sql_int(f, sql), 3);
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM td_delivery WHERE channel = 'webhook' AND target_id = '%s'"
             " AND url = 'https://hooks.example.com/logins' AND secret = CAST('%s' AS BLOB)"
             " AND CAST(body AS TEXT) LIKE '%%\"id\":\"%s\"%%'",
             logins, SECRET, nid);
    assert_int_equal(sql_int(f, sql), 1);
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM td_delivery WHERE channel = 'webpush' AND target_id IN"
             " ('%s', '%s') AND headers LIKE '%%Content-Encoding: aes128gcm%%'"
             " AND headers LIKE '%%TTL: 86400%%' AND headers LIKE '%%Urgency: high%%'"
             " AND headers LIKE '%%Topic: %s%%'",
             sub1, sub2, ACCOUNT_TOPIC);
    assert_int_equal(sql_int(f, sql), 2);
    /* The push body is encrypted: the notification's text is not in it. */
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM td_delivery WHERE channel = 'webpush'"
             " AND instr(body, CAST('%s' AS BLOB)) > 0",
             nid);
    assert_int_equal(sql_int(f, sql), 0);
    json_decref(inbox);

    /* The same event again: no notification, so nothing queued. */
    apply_ok(f, ev);
    td_event_free(ev);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM td_delivery"), 3);

    /* A muted type: no notification, no delivery. */
    json_t *prefs;
    char err[256];
    json_t *put = json_pack("{s:[s]}", "muted", "UserLoggedInEvent");
    assert_int_equal(notif_prefs_put(f->db, ANN, put, &prefs, err, sizeof(err)), 0);
    json_decref(put);
    json_decref(prefs);
    td_event_t *again = login_event(ANN);
    apply_ok(f, again);
    td_event_free(again);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM td_delivery"), 3);

    /* Removing the webhook drops what is queued for it. */
    assert_int_equal(notif_webhook_remove(f->db, ANN, logins), 0);
    assert_int_equal(queued(f, TD_DELIVERY_WEBHOOK), 0);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 2);

    free(logins);
    free(orders);
    free(bobs);
}

/* A channel switched off or with the type muted gets nothing; the
 * inbox still gets the notification, and the other channel its part. */
static void set_prefs(fixture_t *f, const char *user, const char *json)
{
    json_t *body = json_loads(json, 0, NULL), *out = NULL;
    char err[256] = "";
    int rc = notif_prefs_put(f->db, user, body, &out, err, sizeof(err));
    if (rc) fail_msg("%s: %s", json, err);
    json_decref(out);
    json_decref(body);
}

static void test_channel_preferences_decide_deliveries(void **state)
{
    fixture_t *f = *state;
    subscribe_ok(f, ANN, "https://push.example.net/ann", NULL);
    free(hook_ok(f, ANN, "https://hooks.example.com/ann", "UserLoggedInEvent"));
    login(f, ANN);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 1);
    assert_int_equal(queued(f, TD_DELIVERY_WEBHOOK), 1);

    set_prefs(f, ANN, "{\"channels\":{\"push\":{\"enabled\":false}}}");
    login(f, ANN);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 1);
    assert_int_equal(queued(f, TD_DELIVERY_WEBHOOK), 2);

    set_prefs(f, ANN,
              "{\"channels\":{\"push\":{\"enabled\":true},"
              "\"webhook\":{\"muted\":[\"UserLoggedInEvent\"]}}}");
    login(f, ANN);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 2);
    assert_int_equal(queued(f, TD_DELIVERY_WEBHOOK), 2);

    /* A type muted on a channel still reaches the inbox: all three are there. */
    json_t *inbox;
    assert_int_equal(notif_after(f->db, ANN, 0, 10, &inbox), 0);
    assert_int_equal(json_array_size(inbox), 3);
    json_decref(inbox);
}

/* Inside the user's quiet hours a push is queued held until the window
 * ends; the webhook is not held. */
static void test_quiet_hours_hold_pushes(void **state)
{
    fixture_t *f = *state;
    subscribe_ok(f, ANN, "https://push.example.net/ann", NULL);
    free(hook_ok(f, ANN, "https://hooks.example.com/ann", "UserLoggedInEvent"));
    /* A window from an hour ago to an hour from now, in UTC. */
    time_t now = (time_t)(td_now_ms() / 1000);
    char prefs[256];
    long day = (long)(now % 86400);
    long from = (day + 86400 - 3600) % 86400, to = (day + 3600) % 86400;
    snprintf(prefs, sizeof(prefs),
             "{\"quietHours\":{\"start\":\"%02ld:%02ld:%02ld\",\"end\":\"%02ld:%02ld:%02ld\","
             "\"timeZone\":\"UTC\"}}",
             from / 3600, from / 60 % 60, from % 60, to / 3600, to / 60 % 60, to % 60);
    set_prefs(f, ANN, prefs);
    login(f, ANN);
    int64_t end_ms = ((int64_t)now + 3600) * 1000;
    /* The push waits for the window's end (a second's rounding aside). */
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT COUNT(*) FROM td_delivery WHERE channel = 'webpush'"
             " AND next_at_ms BETWEEN %lld AND %lld",
             (long long)end_ms - 1000, (long long)end_ms + 1000);
    assert_int_equal(sql_int(f, sql), 1);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM td_delivery WHERE channel = 'webhook'"
                                " AND next_at_ms = created_ms"),
                     1);
    json_t *inbox;
    assert_int_equal(notif_after(f->db, ANN, 0, 10, &inbox), 0);
    json_t *n;
    const char *id = json_string_value(json_object_get(json_array_get(inbox, 0), "id"));
    assert_int_equal(notif_get(f->db, ANN, id, &n), 0);
    json_t *ds = json_object_get(n, "deliveries");
    assert_int_equal(json_array_size(ds), 2);
    size_t i;
    json_t *d;
    json_array_foreach(ds, i, d)
    {
        const char *channel = json_string_value(json_object_get(d, "channel"));
        const char *status = json_string_value(json_object_get(d, "status"));
        assert_string_equal(status, !strcmp(channel, "push") ? "held" : "pending");
    }
    json_decref(n);
    json_decref(inbox);

    /* Without quiet hours, nothing is held. */
    set_prefs(f, ANN, "{\"quietHours\":null}");
    login(f, ANN);
    assert_int_equal(sql_int(f, "SELECT COUNT(*) FROM td_delivery_status WHERE status = 'held'"),
                     1);
}

static void test_fanout_notifications_are_delivered_too(void **state)
{
    fixture_t *f = *state;
    const char *product = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
    subscribe_ok(f, ANN, "https://push.example.net/ann", NULL);
    char *hook = hook_ok(f, BOB, "https://hooks.example.com/bob", "ProductCreatedEvent");
    json_t *prefs, *put = json_pack("{s:b}", "newProducts", 1);
    char err[256];
    assert_int_equal(notif_prefs_put(f->db, ANN, put, &prefs, err, sizeof(err)), 0);
    json_decref(prefs);
    assert_int_equal(notif_prefs_put(f->db, BOB, put, &prefs, err, sizeof(err)), 0);
    json_decref(prefs);
    json_decref(put);

    td_event_t *ev = td_event_new("products", "ProductCreatedEvent", product,
                                  json_pack("{s:s, s:s, s:i, s:i}", "productId", product, "title",
                                            "Lamp", "price", 20, "quantity", 3));
    apply_ok(f, ev);
    td_event_free(ev);
    size_t made;
    while (notif_fanout_step(&f->n, &made) > 0) {
    }
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 1);
    assert_int_equal(queued(f, TD_DELIVERY_WEBHOOK), 1);
    free(hook);
}

static void test_long_notification_is_trimmed_to_fit_a_push(void **state)
{
    fixture_t *f = *state;
    subscribe_ok(f, ANN, "https://push.example.net/ann", NULL);
    char *hook = hook_ok(f, ANN, "https://hooks.example.com/", "OrderApprovedEvent");
    /* 6000 bytes of multi-byte text: over a push message, fine for a
     * webhook. */
    size_t len = 6000;
    char *body = td_malloc(len + 1);
    for (size_t i = 0; i < len; i += 3) memcpy(body + i, "\xe2\x82\xac", 3); /* € */
    body[len] = '\0';
    json_t *n = json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:{}, s:s, s:n}", "id",
                          "cccccccc-cccc-4ccc-8ccc-cccccccccccc", "seq", 1, "userId", ANN, "type",
                          "OrderApprovedEvent", "title", "Order confirmed", "body", body, "data",
                          "createdAt", "2026-01-01T00:00:00.000Z", "readAt");
    td_event_t *ev =
        td_event_new("notifications", "NotificationCreatedEvent", ANN, json_deep_copy(n));
    td_record_t *rec = td_event_to_record(ev, "tidings.notifications");
    char *json = td_json_dumps(n);
    notif_made_t m = {.id = "cccccccc-cccc-4ccc-8ccc-cccccccccccc",
                      .user_id = ANN,
                      .type = "OrderApprovedEvent",
                      .seq = 1,
                      .thread = "order:bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb",
                      .json = json,
                      .rec = rec};
    assert_int_equal(td_db_begin(f->db), 0);
    assert_int_equal(notif_channels_deliver(&f->cfg, f->db, &m), 0);
    assert_int_equal(td_db_commit(f->db), 0);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 1);
    assert_int_equal(queued(f, TD_DELIVERY_WEBHOOK), 1);
    /* One aes128gcm record: the header, at most 4096 bytes of record. */
    assert_true(sql_int(f, "SELECT length(body) FROM td_delivery WHERE channel = 'webpush'") <=
                TD_WEBPUSH_HEADER_LEN + TD_WEBPUSH_RS);
    assert_true(sql_int(f, "SELECT length(body) FROM td_delivery WHERE channel = 'webhook'") >
                (int64_t)len);
    td_record_free(rec);
    free(json);
    td_event_free(ev);
    json_decref(n);
    free(body);
    free(hook);
}

static void test_gone_removes_the_subscription(void **state)
{
    fixture_t *f = *state;
    char sub[TD_UUID_LEN + 1];
    subscribe_ok(f, ANN, "https://push.example.net/ann", sub);
    subscribe_ok(f, ANN, "https://push.example.net/ann-2", NULL);
    char *hook = hook_ok(f, ANN, "https://hooks.example.com/", "UserLoggedInEvent");

    assert_int_equal(td_db_begin(f->db), 0);
    assert_int_equal(notif_channels_gone(NULL, f->db, TD_DELIVERY_WEBPUSH, sub), 0);
    /* A webhook is never "gone" (404 is a failure): nothing changes. */
    assert_int_equal(notif_channels_gone(NULL, f->db, TD_DELIVERY_WEBHOOK, hook), 0);
    assert_int_equal(td_db_commit(f->db), 0);
    assert_int_equal(notif_push_count(f->db, ANN), 1);
    json_t *list;
    assert_int_equal(notif_webhook_list(f->db, ANN, 0, 10, &list), 0);
    assert_int_equal(json_array_size(json_object_get(list, "webhooks")), 1);
    json_decref(list);

    login(f, ANN);
    assert_int_equal(queued(f, TD_DELIVERY_WEBPUSH), 1);
    free(hook);
}

/* No name resolves in these tests: names are judged by their spelling,
 * without waiting on DNS (what resolved addresses do is test_urlguard's). */
static int no_answers(const char *host, int port, struct sockaddr_storage *out, int max)
{
    (void)host;
    (void)port;
    (void)out;
    (void)max;
    return 0;
}

int main(void)
{
    td_urlguard_set_resolver(no_answers);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vapid_key_made_once_and_kept),
        cmocka_unit_test_setup_teardown(test_subscription_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_subscription_update_no_takeover_and_delete, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_subscription_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_webhook_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_webhook_list_delete_isolation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_webhook_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_new_notification_queues_its_deliveries, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_fanout_notifications_are_delivered_too, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_long_notification_is_trimmed_to_fit_a_push, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_gone_removes_the_subscription, setup, teardown),
        cmocka_unit_test_setup_teardown(test_channel_preferences_decide_deliveries, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_quiet_hours_hold_pushes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
