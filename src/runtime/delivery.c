/* The outbound delivery queue (see tidings/delivery.h): Web Push and
 * webhook requests owed to the outside world, as rows of td_delivery in
 * the service's database, sent by worker threads with libcurl.
 *
 * A worker claims one due row in a short transaction (inflight = 1,
 * attempts + 1: the attempt is counted before the request leaves, so a
 * process that crashes mid-send in a loop still runs out of attempts),
 * sends it with the database unlocked, and records the outcome in a second
 * transaction. A row still marked in flight at start belongs to a process
 * that died: it is put back as due. Each worker drives its one easy handle
 * through a multi handle so that td_delivery_stop can wake it out of a
 * request at once (curl_multi_wakeup) instead of waiting for a timeout.
 *
 * What is fixed at enqueue and what at send time: a Web Push body is
 * encrypted once, at enqueue, so every try sends the same bytes (the push
 * service and the browser see one message however often we retry) and the
 * queue never holds the plaintext or the subscription's keys. The VAPID
 * token is signed at each try: it expires (RFC 8292 allows 24 h) and a
 * retry may come hours later. Likewise a webhook is signed at each try
 * with the current time in X-Tidings-Timestamp, so a receiver that refuses
 * old timestamps (to stop replays) still takes our late retries; its
 * X-Tidings-Event-Id and body never change.
 *
 * This file holds the table and what the service calls (enqueue, cancel,
 * status, the per-user cap and the circuit breaker); delivery_send.c makes
 * one try; delivery_sched.c runs the workers: claims, backoff, the
 * outcome's transaction, start and stop. */
#include "tidings/delivery.h"

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "delivery_internal.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tidings/uuid.h"
#include "tidings/webpush.h"

/* Version 1: the queue as round 1 made it. */
static const char delivery_schema[] =
    "CREATE TABLE IF NOT EXISTS td_delivery ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " channel TEXT NOT NULL CHECK (channel IN ('webpush', 'webhook')),"
    " target_id TEXT NOT NULL,"
    " event_id TEXT NOT NULL,"
    " url TEXT NOT NULL,"
    " headers TEXT NOT NULL," /* "Name: value\n" lines */
    " body BLOB NOT NULL,"
    " secret BLOB,"
    " state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'failed')),"
    " inflight INTEGER NOT NULL DEFAULT 0,"
    " claimed_ms INTEGER,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_at_ms INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " last_status INTEGER,"
    " last_error TEXT,"
    " failed_ms INTEGER,"
    " origin_topic TEXT NOT NULL,"
    " origin_partition INTEGER NOT NULL,"
    " origin_offset INTEGER NOT NULL,"
    " origin_key BLOB,"
    " origin_value BLOB,"
    " origin_headers BLOB);"
    "CREATE INDEX IF NOT EXISTS td_delivery_due ON td_delivery(state, next_at_ms);"
    "CREATE INDEX IF NOT EXISTS td_delivery_target ON td_delivery(channel, target_id);";

/* Version 2: fair delivery. Who a row counts against and the destination
 * it shares; the circuit breaker of each destination that failed lately (a
 * row exists only while it has failures in a row). Rows of version 1 get
 * their dest in backfill_dest. */
static const char delivery_fair[] =
    "ALTER TABLE td_delivery ADD COLUMN owner TEXT;" /* a user id, or NULL */
    "ALTER TABLE td_delivery ADD COLUMN dest TEXT;"  /* the URL's scheme://host[:port] */
    "CREATE TABLE IF NOT EXISTS td_delivery_dest ("
    " dest TEXT PRIMARY KEY,"
    " failures INTEGER NOT NULL," /* in a row */
    " opens INTEGER NOT NULL,"    /* pauses in a row: the next one is twice as long */
    " open_until_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS td_delivery_dest_inflight ON td_delivery(dest, inflight);"
    "CREATE INDEX IF NOT EXISTS td_delivery_owner ON td_delivery(owner, state, inflight);";

/* ---- the table --------------------------------------------------------- */

/* The destination a URL's deliveries share (and are limited by): its
 * origin, or the URL itself when it has none we can name. Caller frees. */
static char *dest_of(const char *url)
{
    char *origin = NULL;
    if (td_webpush_origin(url, &origin, NULL, 0) != 0) return td_strdup(url);
    return origin;
}

/* Gives the rows queued before version 2 their destination. */
static int backfill_dest(td_db_t *db)
{
    int rc = 0;
    sqlite3_stmt *st = td_db_prepare(db, "SELECT id, url FROM td_delivery WHERE dest IS NULL");
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        char *dest = dest_of((const char *)sqlite3_column_text(st, 1));
        sqlite3_stmt *up = td_db_prepare(db, "UPDATE td_delivery SET dest = ? WHERE id = ?");
        sqlite3_bind_text(up, 1, dest, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(up, 2, sqlite3_column_int64(st, 0));
        rc = td_db_run(db, up);
        free(dest);
    }
    td_db_done(st);
    return rc;
}

/* Version 3: what became of each delivery, for the people it is for
 * (td_delivery_status): kept after a sent row is deleted from the queue.
 * target is what may be shown to the user (a push endpoint's host, not
 * its secret path). */
static const char delivery_status_schema[] =
    "CREATE TABLE IF NOT EXISTS td_delivery_status ("
    " delivery_id INTEGER PRIMARY KEY," /* td_delivery.id */
    " event_id TEXT NOT NULL,"
    " channel TEXT NOT NULL,"
    " target TEXT NOT NULL,"
    " status TEXT NOT NULL CHECK (status IN ('pending', 'held', 'sent', 'failed')),"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " last_error TEXT,"
    " updated_ms INTEGER NOT NULL);"
    "CREATE INDEX IF NOT EXISTS td_delivery_status_event ON td_delivery_status(event_id);"
    "CREATE INDEX IF NOT EXISTS td_delivery_status_age ON td_delivery_status(updated_ms);"
    /* Rows queued before version 3 */
    "INSERT OR IGNORE INTO td_delivery_status(delivery_id, event_id, channel, target, status,"
    " attempts, last_error, updated_ms)"
    " SELECT id, event_id, channel, target_id, state, attempts, last_error, created_ms"
    " FROM td_delivery;";

/* Version 4: the email channel. SQLite cannot change a CHECK, so the
 * table is made again with the same columns and rows. */
static const char delivery_email[] =
    "CREATE TABLE td_delivery_v4 ("
    " id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " channel TEXT NOT NULL CHECK (channel IN ('webpush', 'webhook', 'email')),"
    " target_id TEXT NOT NULL,"
    " event_id TEXT NOT NULL,"
    " url TEXT NOT NULL,"
    " headers TEXT NOT NULL,"
    " body BLOB NOT NULL,"
    " secret BLOB,"
    " state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'failed')),"
    " inflight INTEGER NOT NULL DEFAULT 0,"
    " claimed_ms INTEGER,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " next_at_ms INTEGER NOT NULL,"
    " created_ms INTEGER NOT NULL,"
    " last_status INTEGER,"
    " last_error TEXT,"
    " failed_ms INTEGER,"
    " origin_topic TEXT NOT NULL,"
    " origin_partition INTEGER NOT NULL,"
    " origin_offset INTEGER NOT NULL,"
    " origin_key BLOB,"
    " origin_value BLOB,"
    " origin_headers BLOB,"
    " owner TEXT,"
    " dest TEXT);"
    "INSERT INTO td_delivery_v4 SELECT id, channel, target_id, event_id, url, headers, body,"
    " secret, state, inflight, claimed_ms, attempts, next_at_ms, created_ms, last_status,"
    " last_error, failed_ms, origin_topic, origin_partition, origin_offset, origin_key,"
    " origin_value, origin_headers, owner, dest FROM td_delivery;"
    "DROP TABLE td_delivery;"
    "ALTER TABLE td_delivery_v4 RENAME TO td_delivery;"
    "CREATE INDEX IF NOT EXISTS td_delivery_due ON td_delivery(state, next_at_ms);"
    "CREATE INDEX IF NOT EXISTS td_delivery_target ON td_delivery(channel, target_id);"
    "CREATE INDEX IF NOT EXISTS td_delivery_dest_inflight ON td_delivery(dest, inflight);"
    "CREATE INDEX IF NOT EXISTS td_delivery_owner ON td_delivery(owner, state, inflight);";

static const td_migration_t delivery_migs[] = {
    {1, delivery_schema}, {2, delivery_fair}, {3, delivery_status_schema}, {4, delivery_email}};

int td_delivery_init(td_db_t *db)
{
    char err[256];
    int rc = td_db_migrate(db, "delivery", delivery_migs, TD_ARRAY_SIZE(delivery_migs), err,
                           sizeof(err));
    if (rc) {
        td_error("%s", err);
        return rc;
    }
    if ((rc = td_db_begin(db)) != 0) return rc;
    if ((rc = backfill_dest(db)) != 0) {
        td_db_rollback(db);
        return rc;
    }
    return td_db_commit(db);
}

static bool header_ok(const char *h)
{
    const char *colon = strchr(h, ':');
    if (!colon || colon == h) return false;
    for (const char *p = h; *p; p++)
        if (*p == '\r' || *p == '\n') return false; /* no header injection */
    return true;
}

/* ---- the per-user cap ---------------------------------------------------- */

/* Deliveries of owner waiting or in flight (-1 on a database error). */
static int64_t owner_queued(td_db_t *db, const char *owner)
{
    sqlite3_stmt *st =
        td_db_prepare(db, "SELECT count(*) FROM td_delivery WHERE owner = ? AND state = 'pending'");
    if (!st) return -1;
    sqlite3_bind_text(st, 1, owner, -1, SQLITE_STATIC);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    return n;
}

/* A delivery over the cap is not queued: counted, and logged at most
 * once a minute (a user over the cap usually stays there for a while,
 * and each of their notifications would log again). */
static void drop_over_cap(const td_delivery_msg_t *msg)
{
    static atomic_llong last_log_ms;
    static atomic_llong unlogged;
    char labels[128];
    td_metric_labels(labels, sizeof(labels), "channel", msg->channel, "reason", "user_queue_full",
                     NULL);
    td_metric_inc("tidings_deliveries_dropped_total", labels);
    long long now = td_now_ms(), last = atomic_load(&last_log_ms);
    long long n = atomic_fetch_add(&unlogged, 1) + 1;
    if (now - last >= 60000 && atomic_compare_exchange_strong(&last_log_ms, &last, now)) {
        atomic_fetch_sub(&unlogged, n);
        td_warn("delivery: %lld deliveries not queued (user %s has %d queued), e.g. %s %s of %s", n,
                msg->owner, TD_DELIVERY_USER_QUEUE_MAX, msg->channel, msg->target_id,
                msg->event_id);
    }
}

/* ---- the circuit breaker --------------------------------------------------- */

td_delivery_policy_t td__delivery_policy_default(void)
{
    td_delivery_policy_t p = {
        .dest_inflight = TD_DELIVERY_DEST_INFLIGHT,
        .user_inflight = TD_DELIVERY_USER_INFLIGHT,
        .breaker_failures = TD_DELIVERY_BREAKER_FAILURES,
        .breaker_pause_ms = TD_DELIVERY_BREAKER_PAUSE_MS,
        .breaker_pause_max_ms = TD_DELIVERY_BREAKER_PAUSE_MAX_MS,
    };
    return p;
}

bool td__breaker_record(td__breaker_t *b, const td_delivery_policy_t *p, bool failed,
                        int64_t now_ms)
{
    if (!failed) {
        memset(b, 0, sizeof(*b));
        return false;
    }
    b->failures++;
    /* Answers of tries that were in flight when it opened count, but do
     * not pause it again: the probe after the pause decides. */
    if (b->failures < p->breaker_failures || b->open_until_ms > now_ms) return false;
    int64_t pause = p->breaker_pause_ms;
    for (int i = 0; i < b->opens && pause < p->breaker_pause_max_ms; i++) pause *= 2;
    if (pause > p->breaker_pause_max_ms) pause = p->breaker_pause_max_ms;
    b->open_until_ms = now_ms + pause;
    b->opens++;
    return true;
}

int td__breaker_cap(const td__breaker_t *b, const td_delivery_policy_t *p, int64_t now_ms)
{
    if (b->open_until_ms > now_ms) return 0;
    if (b->failures >= p->breaker_failures) return 1; /* half open: one probe */
    return p->dest_inflight;
}

/* When dest's pause ends (0 when it is not paused). */
static int64_t dest_paused_until(td_db_t *db, const char *dest)
{
    sqlite3_stmt *st =
        td_db_prepare(db, "SELECT open_until_ms FROM td_delivery_dest WHERE dest = ?");
    if (!st) return 0;
    sqlite3_bind_text(st, 1, dest, -1, SQLITE_STATIC);
    int64_t until = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    td_db_done(st);
    return until;
}

/* Feeds the outcome of a try to its destination's breaker, in the
 * transaction that records it. When the breaker opens, every delivery
 * waiting for that destination is put off until the pause ends, so that
 * the workers pass it by instead of trying it. *opened tells. */
int td__delivery_update_breaker(struct td_delivery *dlv, const job_t *job, const outcome_t *out,
                                bool *opened)
{
    td_db_t *db = dlv->db;
    *opened = false;
    td__breaker_t b = {0};
    sqlite3_stmt *st = td_db_prepare(
        db, "SELECT failures, opens, open_until_ms FROM td_delivery_dest WHERE dest = ?");
    sqlite3_bind_text(st, 1, job->dest, -1, SQLITE_STATIC);
    bool known = sqlite3_step(st) == SQLITE_ROW;
    if (known) {
        b.failures = sqlite3_column_int(st, 0);
        b.opens = sqlite3_column_int(st, 1);
        b.open_until_ms = sqlite3_column_int64(st, 2);
    }
    td_db_done(st);
    if (!known && out->health > 0) return 0; /* healthy and no history: nothing to write */

    int64_t now = td_now_ms();
    *opened = td__breaker_record(&b, &dlv->policy, out->health < 0, now);
    if (b.failures == 0) {
        st = td_db_prepare(db, "DELETE FROM td_delivery_dest WHERE dest = ?");
        sqlite3_bind_text(st, 1, job->dest, -1, SQLITE_STATIC);
        return td_db_run(db, st);
    }
    st = td_db_prepare(db, "INSERT INTO td_delivery_dest(dest, failures, opens, open_until_ms)"
                           " VALUES(?,?,?,?) ON CONFLICT(dest) DO UPDATE SET"
                           " failures = excluded.failures, opens = excluded.opens,"
                           " open_until_ms = excluded.open_until_ms");
    sqlite3_bind_text(st, 1, job->dest, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, b.failures);
    sqlite3_bind_int(st, 3, b.opens);
    sqlite3_bind_int64(st, 4, b.open_until_ms);
    int rc = td_db_run(db, st);
    if (rc != 0 || !*opened) return rc;
    st = td_db_prepare(db, "UPDATE td_delivery SET next_at_ms = max(next_at_ms, ?)"
                           " WHERE dest = ? AND state = 'pending' AND inflight = 0");
    sqlite3_bind_int64(st, 1, b.open_until_ms);
    sqlite3_bind_text(st, 2, job->dest, -1, SQLITE_STATIC);
    rc = td_db_run(db, st);
    if (rc == 0)
        td_warn("delivery: %s failed %d times in a row (last: %s): paused for %" PRId64 " s",
                job->dest, b.failures, out->error, (b.open_until_ms - now + 999) / 1000);
    return rc;
}

/* What a delivery's status names as its target when msg gives none: a
 * push endpoint's host (its path is a capability, never shown), else the
 * target id. Caller frees. */
static char *target_of(const td_delivery_msg_t *msg)
{
    if (strcmp(msg->channel, TD_DELIVERY_WEBPUSH) != 0) return td_strdup(msg->target_id);
    const char *host = strstr(msg->url, "://");
    host = host ? host + 3 : msg->url;
    size_t len = strcspn(host, "/?#");
    const char *at = memchr(host, '@', len); /* userinfo is never shown */
    if (at) {
        len -= (size_t)(at + 1 - host);
        host = at + 1;
    }
    if (len > 0 && host[0] == '[') {
        const char *end = memchr(host, ']', len);
        if (end) len = (size_t)(end + 1 - host);
    } else {
        const char *colon = memchr(host, ':', len);
        if (colon) len = (size_t)(colon - host);
    }
    return td_strndup(host, len);
}

int td_delivery_enqueue(td_db_t *db, const td_delivery_msg_t *msg, char *errstr, size_t errlen)
{
    bool webpush = msg->channel && !strcmp(msg->channel, TD_DELIVERY_WEBPUSH);
    bool webhook = msg->channel && !strcmp(msg->channel, TD_DELIVERY_WEBHOOK);
    bool email = msg->channel && !strcmp(msg->channel, TD_DELIVERY_EMAIL);
    if (!webpush && !webhook && !email)
        return td_errf(errstr, errlen, TD_EINVAL, "unknown delivery channel '%s'",
                       msg->channel ? msg->channel : "(null)");
    if (!msg->target_id || !*msg->target_id || !msg->event_id || !*msg->event_id || !msg->url ||
        !*msg->url)
        return td_errf(errstr, errlen, TD_EINVAL, "a delivery needs target_id, event_id, url");
    if (!msg->body && msg->body_len)
        return td_errf(errstr, errlen, TD_EINVAL, "delivery body is NULL");
    if (webhook && !msg->secret)
        return td_errf(errstr, errlen, TD_EINVAL, "a webhook delivery needs its secret");
    if (!msg->origin || !msg->origin->topic)
        return td_errf(errstr, errlen, TD_EINVAL, "a delivery needs its origin record");
    if (msg->owner) {
        int64_t queued = owner_queued(db, msg->owner);
        if (queued < 0) return td_errf(errstr, errlen, TD_EIO, "cannot count the queue");
        if (queued >= TD_DELIVERY_USER_QUEUE_MAX) {
            drop_over_cap(msg);
            return td_errf(errstr, errlen, TD_ELIMIT, "%d deliveries of this user are queued",
                           TD_DELIVERY_USER_QUEUE_MAX);
        }
    }

    size_t cap = 1, used = 0;
    for (const char *const *h = msg->headers; h && *h; h++) {
        if (!header_ok(*h)) return td_errf(errstr, errlen, TD_EINVAL, "bad header '%.60s'", *h);
        cap += strlen(*h) + 1;
    }
    char *headers = td_malloc(cap);
    for (const char *const *h = msg->headers; h && *h; h++)
        used += (size_t)sprintf(headers + used, "%s\n", *h);
    headers[used] = '\0';

    size_t hlen = 0;
    void *hblob = td_headers_encode(msg->origin, &hlen);
    int64_t now = td_now_ms();
    char *dest = dest_of(msg->url);
    int64_t due = dest_paused_until(db, dest);
    if (due < now) due = now;
    bool held = msg->hold_until_ms > now;
    if (held && due < msg->hold_until_ms) due = msg->hold_until_ms;
    int rc = TD_EIO;
    sqlite3_stmt *st = td_db_prepare(
        db, "INSERT INTO td_delivery(channel, target_id, event_id, url, headers, body, secret,"
            " next_at_ms, created_ms, origin_topic, origin_partition, origin_offset, origin_key,"
            " origin_value, origin_headers, owner, dest)"
            " VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)");
    if (!st) goto out;
    static const char empty[1];
    sqlite3_bind_text(st, 1, msg->channel, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, msg->target_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, msg->event_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, msg->url, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, headers, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 6, msg->body ? msg->body : empty, (int)msg->body_len, SQLITE_STATIC);
    if (msg->secret)
        sqlite3_bind_blob(st, 7, msg->secret_len ? msg->secret : empty, (int)msg->secret_len,
                          SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 7);
    sqlite3_bind_int64(st, 8, due);
    sqlite3_bind_int64(st, 9, now);
    sqlite3_bind_text(st, 10, msg->origin->topic, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 11, msg->origin->partition);
    sqlite3_bind_int64(st, 12, msg->origin->offset);
    if (msg->origin->key)
        sqlite3_bind_blob(st, 13, msg->origin->key, (int)msg->origin->key_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 13);
    if (msg->origin->value)
        sqlite3_bind_blob(st, 14, msg->origin->value, (int)msg->origin->value_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 14);
    sqlite3_bind_blob(st, 15, hblob, (int)hlen, SQLITE_STATIC);
    if (msg->owner)
        sqlite3_bind_text(st, 16, msg->owner, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 16);
    sqlite3_bind_text(st, 17, dest, -1, SQLITE_STATIC);
    rc = td_db_run(db, st) == 0 ? 0 : TD_EIO;
    if (rc == 0) {
        int64_t id = sqlite3_last_insert_rowid(td_db_sqlite(db));
        char *target = msg->target ? td_strdup(msg->target) : target_of(msg);
        st = td_db_prepare(db,
                           "INSERT INTO td_delivery_status(delivery_id, event_id, channel, target,"
                           " status, updated_ms) VALUES(?,?,?,?,?,?)");
        if (st) {
            sqlite3_bind_int64(st, 1, id);
            sqlite3_bind_text(st, 2, msg->event_id, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 3, msg->channel, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 4, target, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 5, held ? "held" : "pending", -1, SQLITE_STATIC);
            sqlite3_bind_int64(st, 6, now);
        }
        rc = st && td_db_run(db, st) == 0 ? 0 : TD_EIO;
        free(target);
    }
    if (rc != 0) td_errf(errstr, errlen, TD_EIO, "cannot queue the delivery");
out:
    free(dest);
    free(hblob);
    free(headers);
    /* The workers wake now and block on the database lock, which the
     * caller holds until its commit: they see the row as soon as it is
     * committed, and nothing if it is rolled back. */
    if (rc == 0) td__delivery_wake(db);
    return rc;
}

int td_delivery_enqueue_webpush(td_db_t *db, const char *owner, const char *subscription_id,
                                const char *endpoint, const char *p256dh, const char *auth,
                                const char *event_id, const void *payload, size_t len,
                                const td_webpush_hints_t *hints, int64_t hold_until_ms,
                                const td_record_t *origin, char *errstr, size_t errlen)
{
    static const td_webpush_hints_t none = {NULL, NULL, 0};
    if (!hints) hints = &none;
    int rc = td_webpush_check_hints(hints, errstr, errlen);
    if (rc != 0) return rc;
    unsigned char *body = NULL;
    size_t body_len = 0;
    if ((rc = td_webpush_encrypt(p256dh, auth, payload, len, &body, &body_len, errstr, errlen)))
        return rc;
    char ttl[40], urgency[40], topic[TD_WEBPUSH_TOPIC_LEN + 8];
    snprintf(ttl, sizeof(ttl), "TTL: %d", hints->ttl_s > 0 ? hints->ttl_s : TD_DELIVERY_PUSH_TTL_S);
    snprintf(urgency, sizeof(urgency), "Urgency: %s",
             hints->urgency ? hints->urgency : TD_DELIVERY_PUSH_URGENCY);
    snprintf(topic, sizeof(topic), "Topic: %s", hints->topic ? hints->topic : "");
    const char *const headers[] = {ttl,
                                   urgency,
                                   "Content-Encoding: aes128gcm",
                                   "Content-Type: application/octet-stream",
                                   hints->topic ? topic : NULL,
                                   NULL};
    td_delivery_msg_t msg = {
        .channel = TD_DELIVERY_WEBPUSH,
        .owner = owner,
        .target_id = subscription_id,
        .event_id = event_id,
        .url = endpoint,
        .headers = headers,
        .body = body,
        .body_len = body_len,
        .origin = origin,
        .hold_until_ms = hold_until_ms,
    };
    rc = td_delivery_enqueue(db, &msg, errstr, errlen);
    free(body);
    return rc;
}

int td_delivery_enqueue_webhook(td_db_t *db, const char *owner, const char *webhook_id,
                                const char *url, const char *secret, const char *event_id,
                                const void *body, size_t len, const td_record_t *origin,
                                char *errstr, size_t errlen)
{
    const char *const headers[] = {"Content-Type: application/json; charset=utf-8", NULL};
    td_delivery_msg_t msg = {
        .channel = TD_DELIVERY_WEBHOOK,
        .owner = owner,
        .target_id = webhook_id,
        .event_id = event_id,
        .url = url,
        .headers = headers,
        .body = body,
        .body_len = len,
        .secret = secret,
        .secret_len = secret ? strlen(secret) : 0,
        .origin = origin,
    };
    return td_delivery_enqueue(db, &msg, errstr, errlen);
}

int64_t td_delivery_last_id(td_db_t *db)
{
    /* td_delivery_status is the last insert, keyed by the delivery id. */
    return sqlite3_last_insert_rowid(td_db_sqlite(db));
}

int td_delivery_rebody(td_db_t *db, int64_t id, const void *body, size_t len)
{
    static const char empty[1];
    sqlite3_stmt *st = td_db_prepare(db, "UPDATE td_delivery SET body = ? WHERE id = ?"
                                         " AND state = 'pending' AND inflight = 0"
                                         " AND next_at_ms > ?");
    if (!st) return TD_EIO;
    sqlite3_bind_blob(st, 1, body ? body : empty, (int)len, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, id);
    sqlite3_bind_int64(st, 3, td_now_ms());
    if (td_db_run(db, st) != 0) return TD_EIO;
    return sqlite3_changes(td_db_sqlite(db)) > 0 ? 1 : 0;
}

int td_delivery_cancel(td_db_t *db, const char *channel, const char *target_id)
{
    sqlite3_stmt *st = td_db_prepare(
        db, "UPDATE td_delivery_status SET status = 'failed', last_error = 'cancelled',"
            " updated_ms = ? WHERE delivery_id IN (SELECT id FROM td_delivery"
            " WHERE channel = ? AND target_id = ? AND state = 'pending')");
    if (!st) return TD_EIO;
    sqlite3_bind_int64(st, 1, td_now_ms());
    sqlite3_bind_text(st, 2, channel, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, target_id, -1, SQLITE_STATIC);
    if (td_db_run(db, st) != 0) return TD_EIO;
    st = td_db_prepare(
        db, "DELETE FROM td_delivery WHERE channel = ? AND target_id = ? AND state = 'pending'");
    if (!st) return TD_EIO;
    sqlite3_bind_text(st, 1, channel, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, target_id, -1, SQLITE_STATIC);
    if (td_db_run(db, st) != 0) return TD_EIO;
    return td_db_changes(db);
}

int64_t td_delivery_count(td_db_t *db, const char *state)
{
    td_db_lock(db);
    int64_t n = -1;
    sqlite3_stmt *st = td_db_prepare(db, "SELECT count(*) FROM td_delivery WHERE state = ?");
    if (st) {
        sqlite3_bind_text(st, 1, state, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int64(st, 0);
        td_db_done(st);
    }
    td_db_unlock(db);
    return n;
}

/* Retention of failed deliveries: the dead-letter record holds what is
 * left to know, for as long as Kafka keeps the topics. */
int td_delivery_prune(td_db_t *db, int64_t cutoff_ms, int64_t *deleted)
{
    return td_db_prune_chunks(db,
                              "DELETE FROM td_delivery WHERE id IN (SELECT id FROM td_delivery"
                              " WHERE state = 'failed' AND failed_ms < ?1 LIMIT 2000)",
                              cutoff_ms, false, deleted);
}

json_t *td_delivery_status(td_db_t *db, const char *event_id)
{
    json_t *out = json_array();
    sqlite3_stmt *st = td_db_prepare(db, "SELECT channel, target, status, attempts, last_error,"
                                         " updated_ms FROM td_delivery_status WHERE event_id = ?"
                                         " ORDER BY delivery_id");
    sqlite3_bind_text(st, 1, event_id, -1, SQLITE_TRANSIENT);
    while (sqlite3_step(st) == SQLITE_ROW) {
        char when[TD_TIME_LEN + 1];
        td_time_format(sqlite3_column_int64(st, 5), when);
        const char *err = (const char *)sqlite3_column_text(st, 4);
        json_array_append_new(out, json_pack("{s:s, s:s, s:s, s:i, s:s?, s:s}", "channel",
                                             (const char *)sqlite3_column_text(st, 0), "target",
                                             (const char *)sqlite3_column_text(st, 1), "status",
                                             (const char *)sqlite3_column_text(st, 2), "attempts",
                                             sqlite3_column_int(st, 3), "lastError", err,
                                             "updatedAt", when));
    }
    td_db_done(st);
    return out;
}
