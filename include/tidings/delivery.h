/* The durable outbound delivery queue: Web Push messages and webhook POSTs
 * that a service owes to the outside world, kept in the service's own
 * database (table td_delivery) and sent by worker threads with libcurl, off
 * the consumer's path so a slow receiver never stalls consumption.
 *
 *  - A delivery is enqueued inside the caller's transaction, together with
 *    the state change that caused it (a notification and its deliveries
 *    commit together or not at all).
 *  - Workers claim due rows, POST them outside the database lock and
 *    record the outcome: 2xx -> done (row deleted); Web Push 404/410 -> the
 *    subscription is gone (the gone callback runs in the same transaction
 *    that deletes the row); 408, 429, 5xx, timeouts and connection errors
 *    -> retried after cfg->delivery_backoff_ms doubling per try (with
 *    jitter, at most 5 minutes), never before a Retry-After; any other
 *    status -> a permanent failure. After cfg->delivery_max_attempts tries,
 *    or a permanent failure, the row is kept as 'failed' and its origin
 *    record goes to <origin topic>.DLT through the outbox, in the
 *    transaction that marks it failed.
 *  - At least once: the queue survives a restart; a row that was in flight
 *    when the process died is sent again at the next start. Every try of a
 *    delivery carries the same body and X-Tidings-Event-Id, so a receiver
 *    can deduplicate.
 *  - Fair (SPEC section 5): one user's slow or failing endpoints never
 *    delay anyone else's. Deliveries share their destination, the URL's
 *    origin (scheme, host, port): at most TD_DELIVERY_DEST_INFLIGHT tries
 *    to one destination and TD_DELIVERY_USER_INFLIGHT of one user are in
 *    flight, and a worker passes over rows that wait for room to the next
 *    due one. A user has at most TD_DELIVERY_USER_QUEUE_MAX deliveries
 *    queued: one more is not queued (TD_ELIMIT; counted in
 *    tidings_deliveries_dropped_total{reason="user_queue_full"}, logged at
 *    most once a minute), while the notification itself still reaches the
 *    inbox and the stream. A destination that fails
 *    TD_DELIVERY_BREAKER_FAILURES times in a row (timeouts, connection
 *    errors, refused addresses, 408, 429, 5xx) is paused (circuit breaker):
 *    its deliveries wait TD_DELIVERY_BREAKER_PAUSE_MS (or 30 first
 *    backoffs, cfg->delivery_backoff_ms, when that is shorter), doubling
 *    with each pause in a row up to TD_DELIVERY_BREAKER_PAUSE_MAX_MS (or
 *    20 pauses), without using up attempts; then one try probes it (half
 *    open): an answer closes the breaker, a failure pauses it again.
 *  - Safe towards the network it runs in: every connect is checked by the
 *    outbound-URL guard (tidings/urlguard.h) on the address connected, so
 *    a name that now resolves to a private address is refused
 *    ("blocked_address", a permanent failure); no redirects. What an
 *    endpoint answers is never kept: last_error, logs and dead-letter
 *    reasons hold only an error class: "http_<status>", "timeout",
 *    "connect_refused", "connect_error", "dns_error", "tls_error",
 *    "send_error", "recv_error", "empty_reply", "protocol_error",
 *    "blocked_address", "blocked_url", "bad_url", "network_error".
 *
 * One td_delivery_t per database. Metrics: tidings_deliveries_total
 * {channel, result = success | retry | gone | failed}, the send duration
 * tidings_delivery_seconds{channel}, the gauge tidings_delivery_pending,
 * tidings_deliveries_dropped_total{channel, reason},
 * tidings_delivery_breaker_opened_total and the gauge
 * tidings_delivery_destinations_paused. */
#ifndef TIDINGS_DELIVERY_H
#define TIDINGS_DELIVERY_H

#include <jansson.h>

#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/record.h"
#include "tidings/webpush.h"

#define TD_DELIVERY_WEBPUSH "webpush"
#define TD_DELIVERY_WEBHOOK "webhook"
/* An email (tidings/email.h): url is the SMTP server's (no credentials),
 * body the whole message, headers one "Rcpt: <address>" line; sent to the
 * server of cfg's TIDINGS_SMTP_URL with MAIL FROM of TIDINGS_SMTP_FROM.
 * Error classes "smtp_<code>" (4xx retried, 5xx permanent) and
 * "smtp_auth" besides the transfer ones. */
#define TD_DELIVERY_EMAIL "email"

/* Longest backoff between two tries. */
#define TD_DELIVERY_BACKOFF_MAX_MS (5 * 60 * 1000)
/* Longest Retry-After honoured; a longer one is cut to this. */
#define TD_DELIVERY_RETRY_AFTER_MAX_MS (60 * 60 * 1000)
/* TTL and Urgency of the Web Push messages td_delivery_enqueue_webpush
 * makes when its hints leave them out (RFC 8030 section 5.2 and 5.3). */
#define TD_DELIVERY_PUSH_TTL_S   86400
#define TD_DELIVERY_PUSH_URGENCY "normal"

/* The fairness limits (SPEC section 5) and the circuit breaker. */
#define TD_DELIVERY_DEST_INFLIGHT        2    /* tries in flight to one destination */
#define TD_DELIVERY_USER_INFLIGHT        4    /* tries in flight of one user */
#define TD_DELIVERY_USER_QUEUE_MAX       1000 /* deliveries queued per user */
#define TD_DELIVERY_BREAKER_FAILURES     5    /* failures in a row that pause a destination */
#define TD_DELIVERY_BREAKER_PAUSE_MS     30000
#define TD_DELIVERY_BREAKER_PAUSE_MAX_MS (10 * 60 * 1000)

/* Creates the td_delivery table if it does not exist. Call it right after
 * td_db_open (td_delivery_start calls it too), before the first enqueue.
 * 0 or TD_EIO. Takes the lock. */
/* Retention of failed deliveries (a td_prune_fn; td_delivery_start
 * registers it with TIDINGS_RETENTION_MS). */
int td_delivery_prune(td_db_t *db, int64_t cutoff_ms, int64_t *deleted);
int td_delivery_init(td_db_t *db);

typedef struct td_delivery_msg {
    const char *channel;        /* TD_DELIVERY_WEBPUSH, TD_DELIVERY_WEBHOOK or TD_DELIVERY_EMAIL */
    const char *owner;          /* the user whose queue it is in (their cap), or NULL */
    const char *target_id;      /* the subscription's or the webhook's id */
    const char *event_id;       /* the notification id: X-Tidings-Event-Id */
    const char *url;            /* the push endpoint or webhook URL */
    const char *const *headers; /* NULL-terminated "Name: value" list, or NULL */
    const void *body;           /* sent as is on every try */
    size_t body_len;
    const void *secret; /* webhook: the HMAC key; NULL for webpush */
    size_t secret_len;
    /* The record that goes to <origin->topic>.DLT (key, value and headers
     * kept, reason headers added) if the delivery fails: normally the
     * NotificationCreatedEvent record (td_event_to_record on the
     * notifications topic). Required. */
    const td_record_t *origin;
    /* What the delivery's status shows as its target (an email address);
     * NULL = a push endpoint's host, or else target_id. */
    const char *target;
    /* Held until then (Unix ms; the user's quiet hours): its status is
     * "held" and no worker takes it earlier. 0 = due now. */
    int64_t hold_until_ms;
} td_delivery_msg_t;

/* Adds a delivery, due now (or at msg->hold_until_ms). Must be called inside a td_db_begin
 * transaction on db; msg and everything it points to stay the caller's.
 * Webpush rows get their Authorization (VAPID) at each try; webhook rows
 * get X-Tidings-Event-Id, X-Tidings-Timestamp and X-Tidings-Signature at
 * each try. 0, TD_EINVAL (errstr) for a malformed msg, TD_ELIMIT when
 * msg->owner already has TD_DELIVERY_USER_QUEUE_MAX deliveries queued
 * (nothing is queued: the caller goes on without it), TD_EIO. Wakes the
 * database's workers, who start once the transaction commits. */
int td_delivery_enqueue(td_db_t *db, const td_delivery_msg_t *msg, char *errstr, size_t errlen);

/* A Web Push delivery of payload to one subscription: encrypted here
 * (RFC 8291, so every try sends the same bytes), Content-Encoding
 * aes128gcm, with the Topic, Urgency and TTL of hints (NULL, or a field
 * left NULL or 0: no Topic, Urgency TD_DELIVERY_PUSH_URGENCY, TTL
 * TD_DELIVERY_PUSH_TTL_S), held until hold_until_ms as in
 * td_delivery_msg_t. Same rules as td_delivery_enqueue; TD_EINVAL
 * for bad keys, bad hints or a payload over TD_WEBPUSH_MAX_PAYLOAD. The
 * encryption takes about 0.1 ms of the caller's transaction. */
int td_delivery_enqueue_webpush(td_db_t *db, const char *owner, const char *subscription_id,
                                const char *endpoint, const char *p256dh, const char *auth,
                                const char *event_id, const void *payload, size_t len,
                                const td_webpush_hints_t *hints, int64_t hold_until_ms,
                                const td_record_t *origin, char *errstr, size_t errlen);
/* A webhook delivery of a JSON body (the notification) to url, signed with
 * secret (a string; its bytes are the HMAC key). Same rules. owner: as in
 * td_delivery_msg_t. */
int td_delivery_enqueue_webhook(td_db_t *db, const char *owner, const char *webhook_id,
                                const char *url, const char *secret, const char *event_id,
                                const void *body, size_t len, const td_record_t *origin,
                                char *errstr, size_t errlen);

/* The id of the delivery the last td_delivery_enqueue* on this thread's
 * connection queued (inside the same transaction). */
int64_t td_delivery_last_id(td_db_t *db);
/* Replaces the body of delivery id while it is held (pending, not in
 * flight, due later than now): a digest that gains a member. 1 when
 * replaced, 0 when the row is no longer held (the caller queues anew),
 * TD_EIO. Inside the caller's transaction. */
int td_delivery_rebody(td_db_t *db, int64_t id, const void *body, size_t len);

/* Drops the pending deliveries to one target (a deleted subscription or
 * webhook). Inside the caller's transaction. Returns the number dropped
 * (>= 0) or TD_EIO. A try already in flight still completes. */
int td_delivery_cancel(td_db_t *db, const char *channel, const char *target_id);

/* How long the status of a delivery that ended is kept (it is pruned at
 * td_delivery_start). */
#define TD_DELIVERY_STATUS_KEEP_MS (30LL * 24 * 3600 * 1000)

/* What became of every delivery queued for event_id (a notification id),
 * in the order they were queued: a JSON array of {channel (as queued),
 * target, status ("held" until its hold ends, "pending" while waiting or
 * retrying, "sent", "failed"),
 * attempts (tries so far), lastError (an error class as above, or null),
 * updatedAt}. A delivery dropped with its target (td_delivery_cancel) is
 * "failed" with lastError "cancelled". The caller holds the lock or is in
 * a transaction; it owns the array. */
json_t *td_delivery_status(td_db_t *db, const char *event_id);

/* Rows by state: "pending" (waiting or in flight) or "failed". -1 on a
 * database error. Takes the lock. */
int64_t td_delivery_count(td_db_t *db, const char *state);

/* Called by a worker when a push service answers 404 or 410 for a
 * subscription: inside the transaction that deletes that target's
 * pending deliveries, on a worker thread, holding the database lock
 * (so: SQL on db only). Return 0, or an error to roll back and retry the
 * delivery later. */
typedef int (*td_delivery_gone_fn)(void *ctx, td_db_t *db, const char *channel,
                                   const char *target_id);

/* The scheduling limits; a field left 0 takes its TD_DELIVERY_* default. */
typedef struct td_delivery_policy {
    int dest_inflight;
    int user_inflight;
    int breaker_failures;
    int64_t breaker_pause_ms;
    int64_t breaker_pause_max_ms;
} td_delivery_policy_t;

typedef struct td_delivery_opts {
    td_db_t *db;                        /* the service's database (borrowed; outlives stop) */
    const td_config_t *cfg;             /* attempts, backoff, VAPID subject (borrowed) */
    const td_vapid_t *vapid;            /* signs webpush tries; NULL: webpush rows fail */
    td_delivery_gone_fn gone;           /* may be NULL */
    void *ctx;                          /* passed to gone */
    unsigned threads;                   /* worker threads, 0 = 8 */
    int timeout_ms;                     /* per request, 0 = 10000 */
    int idle_ms;                        /* re-check for due rows at least this often, 0 = 1000 */
    const td_delivery_policy_t *policy; /* NULL = the defaults (tests shorten the pauses) */
} td_delivery_opts_t;

typedef struct td_delivery td_delivery_t;

/* Creates the table if needed, puts rows left in flight by a previous
 * process back in the queue, and starts the workers. NULL with errstr. */
td_delivery_t *td_delivery_start(const td_delivery_opts_t *opts, char *errstr, size_t errlen);
/* Stops the workers: tries in flight are cut short and stay queued (the
 * cut try does not count as an attempt). The database stays open. */
void td_delivery_stop(td_delivery_t *dlv);
/* Wakes the workers now (enqueue does it anyway). Any thread. */
void td_delivery_kick(td_delivery_t *dlv);

/* ---- internal: the breaker's arithmetic (kept apart for the tests and
 * for the work-queue primitive this scheduler will move onto) ---------- */

/* One destination's breaker: failures in a row, pauses in a row and the
 * end of the current pause (0 when none). */
typedef struct td__breaker {
    int failures;
    int opens;
    int64_t open_until_ms;
} td__breaker_t;

/* The TD_DELIVERY_* defaults. */
td_delivery_policy_t td__delivery_policy_default(void);
/* Records a try's outcome (failed or answered) at now_ms: an answer
 * closes the breaker; the policy's breaker_failures-th failure in a row,
 * and every failed probe after a pause, opens it for breaker_pause_ms,
 * doubled for each pause in a row, at most breaker_pause_max_ms. True
 * when this outcome opened it. */
bool td__breaker_record(td__breaker_t *b, const td_delivery_policy_t *p, bool failed,
                        int64_t now_ms);
/* Tries the destination may have in flight at now_ms: 0 while paused, 1
 * while half open (the probe), else the policy's dest_inflight. */
int td__breaker_cap(const td__breaker_t *b, const td_delivery_policy_t *p, int64_t now_ms);

#endif
