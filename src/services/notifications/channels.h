/* The outbound channels of the notifications service (SPEC section 2):
 * the VAPID key pair of this application server, the users' Web Push
 * subscriptions and webhooks, and the hook that queues one delivery per
 * subscription and per matching webhook for every new notification, in the
 * transaction that creates it (tidings/delivery.h sends them, retries and
 * dead-letters). No HTTP and no Kafka here: routes.c and service.c call
 * these, the unit tests call them on an in-memory database. Any thread
 * (the database's mutex serialises them).
 *
 * The VAPID key is generated once and kept in the database, so browsers'
 * subscriptions (made with its public key as applicationServerKey) stay
 * valid across restarts. TIDINGS_VAPID_PRIVATE_KEY (the base64url P-256
 * scalar, 43 characters, as td_vapid_private_b64 writes it) overrides it,
 * for several instances sharing one key; changing the key invalidates
 * every existing subscription at the push services. */
#ifndef TIDINGS_NOTIFICATIONS_CHANNELS_H
#define TIDINGS_NOTIFICATIONS_CHANNELS_H

#include <jansson.h>

#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/envelope.h"
#include "tidings/webpush.h"

/* The environment variable that supplies the VAPID private key. */
#define NOTIF_VAPID_ENV "TIDINGS_VAPID_PRIVATE_KEY"

/* Per user: every subscription or webhook costs work on every one of the
 * user's notifications, so a client cannot register without bound. */
#define NOTIF_MAX_SUBSCRIPTIONS 50
#define NOTIF_MAX_WEBHOOKS      50
#define NOTIF_SECRET_MIN        16
#define NOTIF_SECRET_MAX        256

/* The channels' tables (migration 2 of notif_migrations). */
extern const char notif_channels_schema[];

/* The service's key pair: from private_b64 when it is set and not empty
 * (TIDINGS_VAPID_PRIVATE_KEY), else the one kept in db, created on the
 * first start. NULL with errstr (a malformed key names the variable).
 * Caller frees with td_vapid_free. */
td_vapid_t *notif_vapid_load(td_db_t *db, const char *private_b64, char *errstr, size_t errlen);

/* ---- Web Push subscriptions ------------------------------------------------ */

/* Applies POST /webpush/subscriptions for user: body is a PushSubscription
 * as a browser's toJSON() gives it ({endpoint, expirationTime?, keys:
 * {p256dh, auth}}; any other field is TD_EINVAL). The endpoint must be
 * https (or loopback http when allow_http). An endpoint already known is
 * updated when it is the caller's: its keys replaced (deliveries queued
 * under the old keys are dropped: the browser could not decrypt them).
 * One registered by another user is TD_EEXIST and stays theirs (SPEC
 * section 5: an endpoint never moves, or anyone who learnt one could
 * take its owner's notifications; the other account deletes it first).
 * TD_EEXIST with errstr past NOTIF_MAX_SUBSCRIPTIONS too. *out =
 * {subscriptionId, endpoint, createdAt}, caller owns it. */
int notif_push_subscribe(td_db_t *db, const char *user_id, const json_t *body, bool allow_http,
                         json_t **out, char *errstr, size_t errlen);
/* Removes user's subscription of endpoint and its queued deliveries.
 * TD_ENOENT when user has none with that endpoint. */
int notif_push_unsubscribe(td_db_t *db, const char *user_id, const char *endpoint);
/* The number of user's subscriptions (-1 on a database error). */
int64_t notif_push_count(td_db_t *db, const char *user_id);

/* ---- webhooks ----------------------------------------------------------------- */

/* Applies POST /webhooks for user: {url, secret, events} with url https
 * (or loopback http when allow_http), secret NOTIF_SECRET_MIN..MAX
 * characters, events a non-empty array of rule-table event types
 * (duplicates collapse). TD_EINVAL with the reason; TD_EEXIST past
 * NOTIF_MAX_WEBHOOKS. *out = {webhookId, url, events, createdAt} (never
 * the secret), caller owns it. */
int notif_webhook_add(td_db_t *db, const char *user_id, const json_t *body, bool allow_http,
                      json_t **out, char *errstr, size_t errlen);
/* {webhooks:[{webhookId, url, events, createdAt}], next}, newest first,
 * paged by the cursor before (0 = from the newest). */
int notif_webhook_list(td_db_t *db, const char *user_id, int64_t before, int limit, json_t **out);
/* Deletes user's webhook and its queued deliveries. TD_ENOENT when it is
 * not user's (or not at all). */
int notif_webhook_remove(td_db_t *db, const char *user_id, const char *webhook_id);

/* ---- delivery -------------------------------------------------------------------- */

/* The notif_t.deliver hook (arg: the service's td_config_t): for the new
 * notification n, whose NotificationCreatedEvent is ev, queues a Web Push
 * to each of its user's subscriptions (payload: n's JSON, trimmed to fit
 * a push message) and a webhook POST (body: n's JSON) to each of the
 * user's webhooks subscribed to n's type. Inside the creating
 * transaction. A subscription whose stored keys no longer encrypt is
 * skipped with a warning, never a reason to lose the notification. */
struct notif_made;
int notif_channels_deliver(void *arg, td_db_t *db, const struct notif_made *m);
/* The one-click unsubscribe link of user_id's emails (RFC 8058): POST
 * /unsubscribe?u=<userId>&s=<signature> on the notifications service at
 * TIDINGS_PUBLIC_NOTIFICATIONS_URL (or its own address). Caller frees. */
char *notif_unsubscribe_url(const td_config_t *cfg, const char *user_id);

/* The delivery queue's gone callback: a push service said 404/410, so the
 * subscription is deleted (inside the queue's transaction). */
int notif_channels_gone(void *ctx, td_db_t *db, const char *channel, const char *target_id);

#endif
