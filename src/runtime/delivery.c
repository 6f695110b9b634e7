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
 * X-Tidings-Event-Id and body never change. */
#include "tidings/delivery.h"

#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "tidings/bus.h"
#include "tidings/email.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tidings/urlguard.h"
#include "tidings/webhook.h"

/* More workers than one destination (2) or one user (4) may use, so a
 * slow destination never holds them all. */
#define DEFAULT_THREADS    8
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_IDLE_MS    1000
#define CONNECT_TIMEOUT_MS 5000
/* A claim older than this is taken to be lost (a failed write of the
 * outcome), and the row is due again. */
#define STALE_CLAIM_EXTRA_MS 60000

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

typedef struct worker {
    struct td_delivery *dlv;
    pthread_t thread;
    CURLM *multi;
    CURL *easy;
} worker_t;

struct td_delivery {
    td_db_t *db;
    const td_config_t *cfg;
    const td_vapid_t *vapid;
    td_email_server_t smtp; /* url NULL: email rows fail ("smtp_off") */
    td_delivery_gone_fn gone;
    void *ctx;
    int timeout_ms;
    int idle_ms;
    td_delivery_policy_t policy;

    worker_t *workers;
    size_t worker_cnt;

    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    uint64_t kicks;    /* bumped by each kick, under mu */
    atomic_bool stopping;

    struct td_delivery *next; /* in the registry */
};

/* The running deliveries by database, so that td_delivery_enqueue (which
 * only has the db) can wake the right workers. */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct td_delivery *registry;

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

static void wake_db(td_db_t *db)
{
    pthread_mutex_lock(&registry_mu);
    for (struct td_delivery *d = registry; d; d = d->next)
        if (d->db == db) td_delivery_kick(d);
    pthread_mutex_unlock(&registry_mu);
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
    if (rc == 0) wake_db(db);
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

/* ---- one try ------------------------------------------------------------ */

typedef struct job {
    int64_t id;
    char *channel, *target_id, *event_id, *url, *headers;
    char *dest;  /* the destination it shares a breaker and a cap with */
    char *owner; /* NULL when it counts against no user */
    unsigned char *body;
    size_t body_len;
    unsigned char *secret; /* NULL for webpush */
    size_t secret_len;
    int attempts; /* including this try */
} job_t;

static void job_clear(job_t *job)
{
    free(job->channel);
    free(job->target_id);
    free(job->event_id);
    free(job->url);
    free(job->headers);
    free(job->dest);
    free(job->owner);
    free(job->body);
    if (job->secret) memset(job->secret, 0, job->secret_len);
    free(job->secret);
    memset(job, 0, sizeof(*job));
}

static char *column_text(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return td_strdup(t ? (const char *)t : "");
}

static unsigned char *column_blob(sqlite3_stmt *st, int col, size_t *len)
{
    const void *b = sqlite3_column_blob(st, col);
    *len = (size_t)sqlite3_column_bytes(st, col);
    unsigned char *out = td_malloc(*len + 1);
    if (*len) memcpy(out, b, *len);
    out[*len] = '\0';
    return out;
}

enum verdict { V_SUCCESS, V_GONE, V_RETRY, V_FAIL, V_ABORTED };

static const char *const verdict_metric[] = {"success", "gone", "retry", "failed", NULL};

/* What a try came to. error is an error class ("http_503", "timeout",
 * "blocked_address", ...), never text the endpoint sent: it goes into
 * last_error, logs and the dead-letter reason, which users and operators
 * see, and an endpoint's answer could be a page of an internal host. */
typedef struct outcome {
    enum verdict verdict;
    long status;            /* HTTP status, 0 when none */
    int64_t retry_after_ms; /* from Retry-After, -1 when absent */
    int health;             /* for the breaker: 1 answered, -1 failed, 0 no verdict */
    char error[64];
} outcome_t;

typedef struct response {
    int64_t retry_after_ms;
} response_t;

/* Retry-After (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date. */
static int64_t parse_retry_after(const char *v)
{
    while (*v == ' ' || *v == '\t') v++;
    if (*v >= '0' && *v <= '9') {
        char *end = NULL;
        long long s = strtoll(v, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') end++;
        if (*end || s < 0) return -1;
        if (s > TD_DELIVERY_RETRY_AFTER_MAX_MS / 1000) return TD_DELIVERY_RETRY_AFTER_MAX_MS;
        return (int64_t)s * 1000;
    }
    time_t t = curl_getdate(v, NULL);
    if (t == (time_t)-1) return -1;
    int64_t ms = (int64_t)t * 1000 - td_now_ms();
    if (ms < 0) ms = 0;
    return ms > TD_DELIVERY_RETRY_AFTER_MAX_MS ? TD_DELIVERY_RETRY_AFTER_MAX_MS : ms;
}

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
    response_t *resp = arg;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (len >= 5 && !strncmp(buf, "HTTP/", 5)) {
        resp->retry_after_ms = -1; /* a new response (after a 1xx) starts */
    } else if (len > sizeof(name) - 1 && !strncasecmp(buf, name, sizeof(name) - 1)) {
        char *v = td_strndup(buf + sizeof(name) - 1, len - (sizeof(name) - 1));
        resp->retry_after_ms = parse_retry_after(v);
        free(v);
    }
    return len;
}

/* The body of an answer is read and dropped: nothing of it is kept. */
static size_t on_body(char *buf, size_t size, size_t n, void *arg)
{
    (void)buf;
    (void)arg;
    return size * n;
}

static enum verdict classify_status(const job_t *job, long status)
{
    if (status >= 200 && status < 300) return V_SUCCESS;
    /* RFC 8030 section 7.3: the subscription has expired or never was.
     * Only push services say so; a webhook URL answering 404 is more
     * likely a misconfigured receiver, which its owner should hear about
     * through the dead-letter topic rather than lose the webhook. */
    if (!strcmp(job->channel, TD_DELIVERY_WEBPUSH) && (status == 404 || status == 410))
        return V_GONE;
    if (status == 408 || status == 429 || status >= 500) return V_RETRY;
    return V_FAIL;
}

/* The error class of a failed transfer. blocked: the guard refused a
 * socket (an address that is not public). */
static const char *curl_error_class(CURLcode cc, long os_errno, bool blocked)
{
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
        if (blocked) return "blocked_address";
        return os_errno == ECONNREFUSED ? "connect_refused" : "connect_error";
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_COULDNT_RESOLVE_HOST:
        return "dns_error";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_USE_SSL_FAILED:
        return "tls_error";
    case CURLE_SEND_ERROR:
        return "send_error";
    case CURLE_RECV_ERROR:
        return "recv_error";
    case CURLE_GOT_NOTHING:
        return "empty_reply";
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
        return "protocol_error";
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return "bad_url";
    default:
        return "network_error";
    }
}

static bool permanent_curl_error(CURLcode cc, bool blocked)
{
    /* A refused address is a policy, not a condition that passes. */
    return cc == CURLE_UNSUPPORTED_PROTOCOL || cc == CURLE_URL_MALFORMAT ||
           (cc == CURLE_COULDNT_CONNECT && blocked);
}

/* Runs the transfer armed on w's handle; false when stopped (out says so). */
static bool perform(worker_t *w, CURLcode *cc, outcome_t *out)
{
    CURL *c = w->easy;
    *cc = CURLE_OK;
    curl_multi_add_handle(w->multi, c);
    for (;;) {
        int running = 0;
        if (curl_multi_perform(w->multi, &running) != CURLM_OK) {
            *cc = CURLE_FAILED_INIT;
            break;
        }
        if (!running) {
            int left = 0;
            CURLMsg *m;
            while ((m = curl_multi_info_read(w->multi, &left)))
                if (m->msg == CURLMSG_DONE) *cc = m->data.result;
            break;
        }
        if (atomic_load(&w->dlv->stopping)) {
            out->verdict = V_ABORTED;
            break;
        }
        curl_multi_poll(w->multi, NULL, 0, 1000, NULL);
    }
    curl_multi_remove_handle(w->multi, c);
    if (out->verdict == V_ABORTED) {
        snprintf(out->error, sizeof(out->error), "stopped");
        return false;
    }
    return true;
}

/* The recipient an email row carries in its headers ("Rcpt: addr"). */
static char *email_rcpt(const job_t *job)
{
    static const char name[] = "Rcpt: ";
    for (const char *line = job->headers; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (len > sizeof(name) - 1 && !strncmp(line, name, sizeof(name) - 1))
            return td_strndup(line + sizeof(name) - 1, len - (sizeof(name) - 1));
        if (!nl) break;
        line = nl + 1;
    }
    return NULL;
}

/* One SMTP try of an email row: its message as queued, to the server of
 * TIDINGS_SMTP_URL (the guard checks its address at connect time too).
 * Error classes: "smtp_<reply code>" (4xx retried, 5xx permanent), the
 * transfer classes above, "smtp_off" when no server is configured. */
static void send_email(worker_t *w, const job_t *job, outcome_t *out)
{
    struct td_delivery *dlv = w->dlv;
    td_urlguard_conn_t guard = {0};
    struct curl_slist *rcpts = NULL;
    char *rcpt = email_rcpt(job);
    CURL *c = w->easy;
    curl_easy_reset(c);
    if (!dlv->smtp.url || !rcpt) {
        out->verdict = V_FAIL;
        snprintf(out->error, sizeof(out->error), "%s", rcpt ? "smtp_off" : "bad_message");
        goto out;
    }
    if (td_urlguard_curl(c, dlv->smtp.url, "smtp,smtps",
                         dlv->cfg->allow_http_endpoints ? TD_URLGUARD_LOOPBACK : 0, &guard) != 0) {
        out->verdict = V_FAIL;
        snprintf(out->error, sizeof(out->error), "blocked_url");
        goto out;
    }
    td__email_upload_t up = {.data = job->body, .len = job->body_len};
    td__email_arm(c, &dlv->smtp, dlv->smtp.from_addr, rcpt, &up, &rcpts);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)dlv->timeout_ms);
    curl_easy_setopt(
        c, CURLOPT_CONNECTTIMEOUT_MS,
        (long)(dlv->timeout_ms < CONNECT_TIMEOUT_MS ? dlv->timeout_ms : CONNECT_TIMEOUT_MS));
    CURLcode cc;
    if (!perform(w, &cc, out)) goto out;
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    out->status = code;
    if (cc == CURLE_OK) {
        out->verdict = V_SUCCESS;
        out->health = 1;
    } else if (code >= 400 && code < 600) {
        /* The server answered: 4xx is "try again later" (RFC 5321
         * section 4.2.1), 5xx a refusal that a retry does not change. */
        out->verdict = code < 500 ? V_RETRY : V_FAIL;
        out->health = code < 500 ? -1 : 1;
        snprintf(out->error, sizeof(out->error), "smtp_%ld", code);
    } else {
        long os_errno = 0;
        curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno);
        out->verdict = permanent_curl_error(cc, guard.blocked) ? V_FAIL : V_RETRY;
        out->health = -1;
        snprintf(out->error, sizeof(out->error), "%s",
                 cc == CURLE_LOGIN_DENIED ? "smtp_auth"
                                          : curl_error_class(cc, os_errno, guard.blocked));
        if (guard.blocked)
            td_warn("delivery %" PRId64 " by email: refused to connect to a %s address", job->id,
                    td_addr_class_name(guard.blocked_class));
    }
out:
    td_urlguard_conn_clear(&guard);
    curl_slist_free_all(rcpts);
    free(rcpt);
}

/* Sends job once. Runs without the database lock. */
static void send_job(worker_t *w, const job_t *job, outcome_t *out)
{
    struct td_delivery *dlv = w->dlv;
    char err[256];
    struct curl_slist *hdrs = NULL;
    response_t resp = {.retry_after_ms = -1};
    char *auth = NULL;
    td_urlguard_conn_t guard = {0};

    memset(out, 0, sizeof(*out));
    out->retry_after_ms = -1;

    /* The stored headers, then the per-try ones. */
    for (char *line = job->headers, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) break;
        *nl = '\0';
        hdrs = curl_slist_append(hdrs, line);
        *nl = '\n';
    }
    int64_t now_s = td_now_ms() / 1000;
    if (!strcmp(job->channel, TD_DELIVERY_EMAIL)) {
        send_email(w, job, out);
        goto out;
    }
    if (!strcmp(job->channel, TD_DELIVERY_WEBPUSH)) {
        char *value = dlv->vapid ? td_vapid_header(dlv->vapid, job->url, dlv->cfg->vapid_subject,
                                                   now_s, err, sizeof(err))
                                 : NULL;
        if (!value) {
            out->verdict = V_FAIL;
            td_warn("delivery %" PRId64 ": cannot sign the VAPID header: %s", job->id,
                    dlv->vapid ? err : "no VAPID key");
            snprintf(out->error, sizeof(out->error), "vapid_error");
            goto out;
        }
        auth = td_asprintf("Authorization: %s", value);
        free(value);
        hdrs = curl_slist_append(hdrs, auth);
    } else {
        char *sig = td_webhook_sign(job->secret, job->secret_len, now_s, job->body, job->body_len);
        char *h = td_asprintf(TD_WEBHOOK_HDR_EVENT_ID ": %s", job->event_id);
        hdrs = curl_slist_append(hdrs, h);
        free(h);
        h = td_asprintf(TD_WEBHOOK_HDR_TIMESTAMP ": %" PRId64, now_s);
        hdrs = curl_slist_append(hdrs, h);
        free(h);
        h = td_asprintf(TD_WEBHOOK_HDR_SIGNATURE ": %s", sig);
        hdrs = curl_slist_append(hdrs, h);
        free(h);
        free(sig);
    }
    /* No "Expect: 100-continue" round trip for bodies over 1 KiB. */
    hdrs = curl_slist_append(hdrs, "Expect:");

    CURL *c = w->easy;
    curl_easy_reset(c);
    /* Endpoints come from users: the guard checks the address of every
     * socket at connect time (so DNS rebinding gets nowhere), allows no
     * redirect (a 3xx is an answer, not a hop), no proxy, and the URL's
     * scheme only. */
    if (td_urlguard_curl(c, job->url, "https",
                         dlv->cfg->allow_http_endpoints ? TD_URLGUARD_HTTP_LOOPBACK : 0,
                         &guard) != 0) {
        out->verdict = V_FAIL;
        out->health = 0;
        snprintf(out->error, sizeof(out->error), "blocked_url");
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, job->url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, (const char *)job->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)job->body_len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "tidings/" TIDINGS_VERSION);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)dlv->timeout_ms);
    curl_easy_setopt(
        c, CURLOPT_CONNECTTIMEOUT_MS,
        (long)(dlv->timeout_ms < CONNECT_TIMEOUT_MS ? dlv->timeout_ms : CONNECT_TIMEOUT_MS));
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &resp);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);

    CURLcode cc = CURLE_OK;
    if (!perform(w, &cc, out)) goto out;

    if (cc != CURLE_OK) {
        long os_errno = 0;
        curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno);
        out->verdict = permanent_curl_error(cc, guard.blocked) ? V_FAIL : V_RETRY;
        out->health = -1;
        snprintf(out->error, sizeof(out->error), "%s",
                 curl_error_class(cc, os_errno, guard.blocked));
        if (guard.blocked)
            td_warn("delivery %" PRId64 " to %s %s: refused to connect to a %s address", job->id,
                    job->channel, job->target_id, td_addr_class_name(guard.blocked_class));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    out->verdict = classify_status(job, out->status);
    out->retry_after_ms = resp.retry_after_ms;
    /* 408, 429 and 5xx say the host is in trouble; any other answer, even
     * a refusal of this one request, says it is there. */
    out->health = out->status == 408 || out->status == 429 || out->status >= 500 ? -1 : 1;
    if (out->verdict != V_SUCCESS)
        snprintf(out->error, sizeof(out->error), "http_%ld", out->status);

out:
    td_urlguard_conn_clear(&guard);
    free(auth);
    curl_slist_free_all(hdrs);
}

/* ---- recording the outcome --------------------------------------------- */

static int64_t random_between(int64_t lo, int64_t hi)
{
    uint32_t r = 0;
    if (hi <= lo || RAND_bytes((unsigned char *)&r, sizeof(r)) != 1) return lo;
    return lo + (int64_t)(r % (uint64_t)(hi - lo + 1));
}

/* The wait before try attempts + 1: base * 2^(attempts - 1), +-20 %
 * jitter (so that deliveries that failed together do not retry together),
 * at most TD_DELIVERY_BACKOFF_MAX_MS, and never before Retry-After. */
static int64_t backoff_ms(int64_t base, int attempts, int64_t retry_after_ms)
{
    int64_t d = base > 0 ? base : 1;
    for (int i = 1; i < attempts && d < TD_DELIVERY_BACKOFF_MAX_MS; i++) d *= 2;
    if (d > TD_DELIVERY_BACKOFF_MAX_MS) d = TD_DELIVERY_BACKOFF_MAX_MS;
    d = random_between(d - d / 5, d + d / 5);
    if (d > TD_DELIVERY_BACKOFF_MAX_MS) d = TD_DELIVERY_BACKOFF_MAX_MS;
    if (retry_after_ms > d) d = retry_after_ms;
    return d;
}

static void count(const job_t *job, enum verdict v)
{
    char labels[128];
    td_metric_labels(labels, sizeof(labels), "channel", job->channel, "result", verdict_metric[v],
                     NULL);
    td_metric_inc("tidings_deliveries_total", labels);
}

static int set_error(td_db_t *db, const char *sql, const job_t *job, const outcome_t *out,
                     int64_t when)
{
    sqlite3_stmt *st = td_db_prepare(db, sql);
    sqlite3_bind_int64(st, 1, when);
    if (out->status)
        sqlite3_bind_int64(st, 2, out->status);
    else
        sqlite3_bind_null(st, 2);
    sqlite3_bind_text(st, 3, out->error, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, job->id);
    return td_db_run(db, st);
}

/* Marks job failed and dead-letters its origin record, in the caller's
 * transaction. A row already gone (cancelled meanwhile) is left alone. */
static int fail_job(struct td_delivery *dlv, const job_t *job, const outcome_t *out, bool exhausted,
                    bool *done)
{
    td_db_t *db = dlv->db;
    *done = false;
    sqlite3_stmt *st = td_db_prepare(
        db, "SELECT origin_topic, origin_partition, origin_offset, origin_key, origin_value,"
            " origin_headers FROM td_delivery WHERE id = ? AND state = 'pending'");
    sqlite3_bind_int64(st, 1, job->id);
    int step = sqlite3_step(st);
    if (step != SQLITE_ROW) {
        td_db_done(st);
        return step == SQLITE_DONE ? 0 : TD_EIO;
    }
    char *topic = column_text(st, 0);
    td_record_t *dlt = td_record_new("");
    free(dlt->topic);
    dlt->topic = td_asprintf("%s.DLT", topic);
    int64_t part = sqlite3_column_int64(st, 1), off = sqlite3_column_int64(st, 2);
    if (sqlite3_column_type(st, 3) != SQLITE_NULL)
        td_record_set_key(dlt, sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3));
    if (sqlite3_column_type(st, 4) != SQLITE_NULL)
        td_record_set_value(dlt, sqlite3_column_blob(st, 4), (size_t)sqlite3_column_bytes(st, 4));
    int rc =
        td_headers_decode(dlt, sqlite3_column_blob(st, 5), (size_t)sqlite3_column_bytes(st, 5));
    td_db_done(st);
    if (rc != 0) td_warn("delivery %" PRId64 ": origin headers are corrupt, dropped", job->id);

    char num[32];
    char *reason = td_asprintf("%s delivery %s after %d attempt%s: %s", job->channel,
                               exhausted ? "gave up" : "rejected", job->attempts,
                               job->attempts == 1 ? "" : "s", out->error);
    td_record_add_header_str(dlt, "tidings_dlt_reason", reason);
    td_record_add_header_str(dlt, "tidings_dlt_original_topic", topic);
    snprintf(num, sizeof(num), "%" PRId64, part);
    td_record_add_header_str(dlt, "tidings_dlt_original_partition", num);
    snprintf(num, sizeof(num), "%" PRId64, off);
    td_record_add_header_str(dlt, "tidings_dlt_original_offset", num);
    td_record_add_header_str(dlt, "tidings_dlt_channel", job->channel);
    td_record_add_header_str(dlt, "tidings_dlt_target", job->target_id);
    snprintf(num, sizeof(num), "%d", job->attempts);
    td_record_add_header_str(dlt, "tidings_dlt_attempts", num);
    rc = td_outbox_add_record(db, dlt);
    if (rc == 0)
        rc = set_error(db,
                       "UPDATE td_delivery SET state = 'failed', inflight = 0, failed_ms = ?,"
                       " last_status = ?, last_error = ?, secret = NULL WHERE id = ?",
                       job, out, td_now_ms());
    if (rc == 0) {
        *done = true;
        td_warn("delivery %" PRId64 " of %s to %s %s failed, sent to %s: %s", job->id,
                job->event_id, job->channel, job->target_id, dlt->topic, reason);
    }
    free(reason);
    td_record_free(dlt);
    free(topic);
    return rc;
}

/* Feeds the outcome of a try to its destination's breaker, in the
 * transaction that records it. When the breaker opens, every delivery
 * waiting for that destination is put off until the pause ends, so that
 * the workers pass it by instead of trying it. *opened tells. */
static int update_breaker(struct td_delivery *dlv, const job_t *job, const outcome_t *out,
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

/* The status the user sees of job after this try, in the transaction
 * that records it. */
static int record_status(td_db_t *db, const job_t *job, const outcome_t *out)
{
    const char *status = out->verdict == V_SUCCESS ? "sent"
                         : out->verdict == V_RETRY ? "pending"
                                                   : "failed";
    sqlite3_stmt *st = td_db_prepare(db, "UPDATE td_delivery_status SET status = ?, attempts = ?,"
                                         " last_error = ?, updated_ms = ? WHERE delivery_id = ?");
    sqlite3_bind_text(st, 1, status, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 2, job->attempts);
    if (out->verdict == V_SUCCESS)
        sqlite3_bind_null(st, 3);
    else
        sqlite3_bind_text(st, 3, out->error, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, td_now_ms());
    sqlite3_bind_int64(st, 5, job->id);
    return td_db_run(db, st);
}

/* The one transaction that records what happened to job. */
static int record_outcome(struct td_delivery *dlv, const job_t *job, outcome_t *out)
{
    td_db_t *db = dlv->db;
    int rc = td_db_begin(db);
    if (rc != 0) return rc;
    sqlite3_stmt *st;
    bool counted = true;

    if (out->verdict == V_GONE && dlv->gone) {
        rc = dlv->gone(dlv->ctx, db, job->channel, job->target_id);
        if (rc != 0) {
            /* The service could not forget the subscription now: keep
             * the delivery and ask again after a backoff. */
            td_db_rollback(db);
            rc = td_db_begin(db);
            if (rc != 0) return rc;
            out->verdict = V_RETRY;
            snprintf(out->error, sizeof(out->error), "gone_callback_failed");
        }
    }
    bool exhausted = false;
    if (out->verdict == V_RETRY && job->attempts >= dlv->cfg->delivery_max_attempts) {
        out->verdict = V_FAIL;
        exhausted = true;
    }

    switch (out->verdict) {
    case V_SUCCESS:
        st = td_db_prepare(db, "DELETE FROM td_delivery WHERE id = ?");
        sqlite3_bind_int64(st, 1, job->id);
        rc = td_db_run(db, st);
        break;
    case V_GONE:
        /* Every queued message to a gone subscription would be refused. */
        rc = td_delivery_cancel(db, job->channel, job->target_id);
        if (rc > 0) rc = 0;
        if (rc == 0)
            td_info("delivery %" PRId64 ": %s %s is gone (HTTP %ld), its deliveries dropped",
                    job->id, job->channel, job->target_id, out->status);
        break;
    case V_RETRY: {
        int64_t wait =
            backoff_ms(dlv->cfg->delivery_backoff_ms, job->attempts, out->retry_after_ms);
        rc = set_error(db,
                       "UPDATE td_delivery SET inflight = 0, next_at_ms = ?, last_status = ?,"
                       " last_error = ? WHERE id = ? AND state = 'pending'",
                       job, out, td_now_ms() + wait);
        td_debug("delivery %" PRId64 " of %s to %s: try %d failed (%s), next in %" PRId64 " ms",
                 job->id, job->event_id, job->channel, job->attempts, out->error, wait);
        break;
    }
    case V_FAIL: {
        bool done = false;
        rc = fail_job(dlv, job, out, exhausted, &done);
        counted = done;
        break;
    }
    case V_ABORTED:
        /* Not this row's fault: it is due again at once, and the try we
         * cut does not use up one of its attempts. */
        st = td_db_prepare(db, "UPDATE td_delivery SET inflight = 0, next_at_ms = ?,"
                               " attempts = max(attempts - 1, 0) WHERE id = ?");
        sqlite3_bind_int64(st, 1, td_now_ms());
        sqlite3_bind_int64(st, 2, job->id);
        rc = td_db_run(db, st);
        counted = false;
        break;
    }
    if (rc == 0 && out->verdict != V_ABORTED) rc = record_status(db, job, out);
    bool opened = false;
    if (rc == 0 && out->verdict != V_ABORTED && out->health != 0)
        rc = update_breaker(dlv, job, out, &opened);
    if (rc != 0) {
        td_db_rollback(db);
        return TD_EIO;
    }
    rc = td_db_commit(db);
    if (rc == 0 && counted) count(job, out->verdict);
    if (rc == 0 && opened) td_metric_inc("tidings_delivery_breaker_opened_total", "");
    return rc;
}

/* Statuses of deliveries that ended more than TD_DELIVERY_STATUS_KEEP_MS
 * ago are forgotten (at each start: a status is for a notification
 * someone may still look at). Inside the caller's transaction. */
static int prune_status(td_db_t *db)
{
    sqlite3_stmt *st = td_db_prepare(db, "DELETE FROM td_delivery_status WHERE updated_ms < ?"
                                         " AND status IN ('sent', 'failed')");
    sqlite3_bind_int64(st, 1, td_now_ms() - TD_DELIVERY_STATUS_KEEP_MS);
    return td_db_run(db, st);
}

/* ---- workers ------------------------------------------------------------ */

/* ---- the claim policy ------------------------------------------------------ */

/* The next delivery a worker may start: the earliest due row whose
 * destination has room (fewer than policy.dest_inflight tries in flight,
 * one while its breaker is half open, none while it is paused) and whose
 * owner has fewer than policy.user_inflight in flight. Rows of a full
 * destination or owner are passed by, not waited for: a slow destination
 * holds at most its own share of the workers. A claim older than stale_ms
 * is lost and counts as not in flight. Counts come from the table, so
 * instances sharing one database share the limits. Among rows due at the
 * same moment (those a pause released) the least tried go first, so the
 * probes after a pause take turns instead of one row probing each time. */
static const char claim_sql[] =
    "SELECT d.id, d.channel, d.target_id, d.event_id, d.url, d.headers, d.body, d.secret,"
    " d.attempts, d.dest, d.owner"
    " FROM td_delivery d LEFT JOIN td_delivery_dest b ON b.dest = d.dest"
    " WHERE d.state = 'pending' AND d.next_at_ms <= ?1"
    " AND (d.inflight = 0 OR d.claimed_ms < ?2)"
    " AND coalesce(b.open_until_ms, 0) <= ?1"
    " AND (SELECT count(*) FROM td_delivery f WHERE f.dest = d.dest AND f.inflight = 1"
    "      AND f.claimed_ms >= ?2)"
    "     < CASE WHEN coalesce(b.failures, 0) >= ?3 THEN 1 ELSE ?4 END"
    " AND (d.owner IS NULL OR (SELECT count(*) FROM td_delivery f WHERE f.owner = d.owner"
    "      AND f.state = 'pending' AND f.inflight = 1 AND f.claimed_ms >= ?2) < ?5)"
    " ORDER BY d.next_at_ms, d.attempts, d.id LIMIT 1";

/* Claims the next delivery into job: true if there was one; else
 * *next_due_ms gets when the earliest row not yet due is (INT64_MAX if
 * none). Rows that are due but wait for room are not in it: the end of a
 * try wakes the workers. */
static bool claim(struct td_delivery *dlv, job_t *job, int64_t *next_due_ms)
{
    td_db_t *db = dlv->db;
    const td_delivery_policy_t *p = &dlv->policy;
    *next_due_ms = INT64_MAX;
    if (td_db_begin(db) != 0) {
        *next_due_ms = td_now_ms() + dlv->idle_ms;
        return false;
    }
    int64_t now = td_now_ms();
    int64_t stale = now - dlv->timeout_ms - STALE_CLAIM_EXTRA_MS;
    sqlite3_stmt *st = td_db_prepare(db, claim_sql);
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int64(st, 2, stale);
    sqlite3_bind_int(st, 3, p->breaker_failures);
    sqlite3_bind_int(st, 4, p->dest_inflight);
    sqlite3_bind_int(st, 5, p->user_inflight);
    bool found = false;
    if (sqlite3_step(st) == SQLITE_ROW) {
        found = true;
        job->id = sqlite3_column_int64(st, 0);
        job->channel = column_text(st, 1);
        job->target_id = column_text(st, 2);
        job->event_id = column_text(st, 3);
        job->url = column_text(st, 4);
        job->headers = column_text(st, 5);
        job->body = column_blob(st, 6, &job->body_len);
        if (sqlite3_column_type(st, 7) != SQLITE_NULL)
            job->secret = column_blob(st, 7, &job->secret_len);
        job->attempts = sqlite3_column_int(st, 8) + 1;
        job->dest = column_text(st, 9);
        if (sqlite3_column_type(st, 10) != SQLITE_NULL) job->owner = column_text(st, 10);
    }
    td_db_done(st);

    int rc = 0;
    if (found) {
        st = td_db_prepare(db, "UPDATE td_delivery SET inflight = 1, claimed_ms = ?,"
                               " attempts = attempts + 1 WHERE id = ?");
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int64(st, 2, job->id);
        rc = td_db_run(db, st);
    } else {
        st = td_db_prepare(db, "SELECT min(next_at_ms) FROM td_delivery"
                               " WHERE state = 'pending' AND next_at_ms > ?");
        sqlite3_bind_int64(st, 1, now);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
            *next_due_ms = sqlite3_column_int64(st, 0);
        td_db_done(st);
    }
    if (rc != 0) {
        td_db_rollback(db);
    } else {
        rc = td_db_commit(db);
    }
    if (rc != 0) {
        job_clear(job);
        *next_due_ms = td_now_ms() + dlv->idle_ms;
        return false;
    }
    return found;
}

static void wait_for_work(struct td_delivery *dlv, uint64_t seen, int64_t next_due_ms)
{
    int64_t now = td_now_ms();
    int64_t wait = dlv->idle_ms;
    if (next_due_ms != INT64_MAX && next_due_ms - now < wait) wait = next_due_ms - now;
    if (wait <= 0) return;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += wait / 1000;
    ts.tv_nsec += (long)(wait % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&dlv->mu);
    while (dlv->kicks == seen && !atomic_load(&dlv->stopping))
        if (pthread_cond_timedwait(&dlv->cv, &dlv->mu, &ts) != 0) break;
    pthread_mutex_unlock(&dlv->mu);
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    struct td_delivery *dlv = w->dlv;
    while (!atomic_load(&dlv->stopping)) {
        pthread_mutex_lock(&dlv->mu);
        uint64_t seen = dlv->kicks;
        pthread_mutex_unlock(&dlv->mu);

        job_t job = {0};
        int64_t next_due = INT64_MAX;
        if (!claim(dlv, &job, &next_due)) {
            wait_for_work(dlv, seen, next_due);
            continue;
        }
        outcome_t out;
        int64_t t0 = td_mono_ms();
        send_job(w, &job, &out);
        if (out.verdict != V_ABORTED) {
            char labels[64];
            td_metric_labels(labels, sizeof(labels), "channel", job.channel, NULL);
            td_metric_observe("tidings_delivery_seconds", labels,
                              (double)(td_mono_ms() - t0) / 1000.0);
        }
        if (record_outcome(dlv, &job, &out) != 0) {
            /* The row stays claimed; the stale-claim rule hands it out
             * again later, so it is delayed, never lost. */
            td_error("delivery %" PRId64 ": cannot record the outcome (%s)", job.id, out.error);
            td_sleep_ms(100);
        }
        job_clear(&job);
        /* A place at a destination is free now: rows that waited for it
         * may go. */
        td_delivery_kick(dlv);
    }
    return NULL;
}

static double pending_gauge(void *arg)
{
    struct td_delivery *dlv = arg;
    return (double)td_delivery_count(dlv->db, "pending");
}

static double paused_gauge(void *arg)
{
    struct td_delivery *dlv = arg;
    td_db_lock(dlv->db);
    sqlite3_stmt *st =
        td_db_prepare(dlv->db, "SELECT count(*) FROM td_delivery_dest WHERE open_until_ms > ?");
    sqlite3_bind_int64(st, 1, td_now_ms());
    double n = sqlite3_step(st) == SQLITE_ROW ? (double)sqlite3_column_int64(st, 0) : 0;
    td_db_done(st);
    td_db_unlock(dlv->db);
    return n;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
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

td_delivery_t *td_delivery_start(const td_delivery_opts_t *opts, char *errstr, size_t errlen)
{
    if (!opts->db || !opts->cfg) {
        td_errf(errstr, errlen, TD_EINVAL, "delivery needs a database and a configuration");
        return NULL;
    }
    pthread_once(&curl_once, curl_init_once);
    if (td_delivery_init(opts->db) != 0) {
        td_errf(errstr, errlen, TD_EIO, "cannot create the delivery table");
        return NULL;
    }
    td_db_prune_add(opts->db, "td_delivery", td_delivery_prune,
                    opts->cfg->retention_ms > 0 ? opts->cfg->retention_ms : 0);
    /* Rows in flight belong to a process that died mid-send: whether the
     * receiver got them is unknown, so they go again (at least once). */
    int rc = td_db_begin(opts->db);
    if (rc == 0 &&
        (rc = td_db_exec(opts->db, "UPDATE td_delivery SET inflight = 0 WHERE inflight = 1")) != 0)
        td_db_rollback(opts->db);
    else if (rc == 0 && (rc = prune_status(opts->db)) != 0)
        td_db_rollback(opts->db);
    else if (rc == 0)
        rc = td_db_commit(opts->db);
    if (rc != 0) {
        td_errf(errstr, errlen, TD_EIO, "cannot reset the delivery queue");
        return NULL;
    }

    /* The SMTP server is checked once here (a private or loopback host is
     * refused at start) and again at each connect. */
    td_email_server_t smtp = {0};
    if (opts->cfg && opts->cfg->smtp_url) {
        if (td_email_server_load(opts->cfg, &smtp, errstr, errlen) < 0) return NULL;
        char err[256];
        if (td_urlguard_check_url(smtp.url, "smtp,smtps",
                                  opts->cfg->allow_http_endpoints ? TD_URLGUARD_LOOPBACK : 0, err,
                                  sizeof(err)) != 0) {
            td_errf(errstr, errlen, TD_EINVAL, "TIDINGS_SMTP_URL: %s", err);
            td_email_server_clear(&smtp);
            return NULL;
        }
    }
    struct td_delivery *dlv = td_calloc(1, sizeof(*dlv));
    dlv->smtp = smtp;
    dlv->db = opts->db;
    dlv->cfg = opts->cfg;
    dlv->vapid = opts->vapid;
    dlv->gone = opts->gone;
    dlv->ctx = opts->ctx;
    dlv->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : DEFAULT_TIMEOUT_MS;
    dlv->idle_ms = opts->idle_ms > 0 ? opts->idle_ms : DEFAULT_IDLE_MS;
    dlv->policy = td__delivery_policy_default();
    /* The pause follows the retry pace: 30 first backoffs (30 s at the
     * default 1 s), at most 20 pauses. */
    if (opts->cfg->delivery_backoff_ms > 0 &&
        opts->cfg->delivery_backoff_ms * 30 < dlv->policy.breaker_pause_ms) {
        dlv->policy.breaker_pause_ms = opts->cfg->delivery_backoff_ms * 30;
        dlv->policy.breaker_pause_max_ms = dlv->policy.breaker_pause_ms * 20;
    }
    if (opts->policy) {
        const td_delivery_policy_t *p = opts->policy;
        if (p->dest_inflight > 0) dlv->policy.dest_inflight = p->dest_inflight;
        if (p->user_inflight > 0) dlv->policy.user_inflight = p->user_inflight;
        if (p->breaker_failures > 0) dlv->policy.breaker_failures = p->breaker_failures;
        if (p->breaker_pause_ms > 0) dlv->policy.breaker_pause_ms = p->breaker_pause_ms;
        if (p->breaker_pause_max_ms > 0) dlv->policy.breaker_pause_max_ms = p->breaker_pause_max_ms;
    }
    pthread_mutex_init(&dlv->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&dlv->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&dlv->stopping, false);

    td_metric_describe("tidings_deliveries_total", "counter",
                       "Web Push and webhook delivery tries by channel and result");
    td_metric_describe("tidings_delivery_seconds", "histogram",
                       "Duration of one Web Push or webhook request");
    td_metric_describe("tidings_delivery_pending", "gauge",
                       "Web Push and webhook deliveries waiting or in flight");
    td_metric_gauge_fn("tidings_delivery_pending", "", pending_gauge, dlv);
    td_metric_describe("tidings_deliveries_dropped_total", "counter",
                       "Deliveries not queued because their user already had "
                       "1000 queued, by channel and reason");
    td_metric_describe("tidings_delivery_breaker_opened_total", "counter",
                       "Times a destination was paused after failing again and again");
    td_metric_describe("tidings_delivery_destinations_paused", "gauge",
                       "Destinations (scheme, host, port) paused by their circuit breaker now");
    td_metric_gauge_fn("tidings_delivery_destinations_paused", "", paused_gauge, dlv);

    size_t n = opts->threads ? opts->threads : DEFAULT_THREADS;
    dlv->workers = td_calloc(n, sizeof(worker_t));
    for (size_t i = 0; i < n; i++) {
        worker_t *w = &dlv->workers[i];
        w->dlv = dlv;
        w->multi = curl_multi_init();
        w->easy = curl_easy_init();
        if (!w->multi || !w->easy || pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            if (w->easy) curl_easy_cleanup(w->easy);
            if (w->multi) curl_multi_cleanup(w->multi);
            td_errf(errstr, errlen, TD_EIO, "cannot start delivery worker %zu", i);
            dlv->worker_cnt = i;
            td_delivery_stop(dlv);
            return NULL;
        }
        dlv->worker_cnt = i + 1;
    }

    pthread_mutex_lock(&registry_mu);
    dlv->next = registry;
    registry = dlv;
    pthread_mutex_unlock(&registry_mu);
    return dlv;
}

void td_delivery_kick(td_delivery_t *dlv)
{
    pthread_mutex_lock(&dlv->mu);
    dlv->kicks++;
    pthread_cond_broadcast(&dlv->cv);
    pthread_mutex_unlock(&dlv->mu);
}

void td_delivery_stop(td_delivery_t *dlv)
{
    if (!dlv) return;
    pthread_mutex_lock(&registry_mu);
    for (struct td_delivery **p = &registry; *p; p = &(*p)->next)
        if (*p == dlv) {
            *p = dlv->next;
            break;
        }
    pthread_mutex_unlock(&registry_mu);

    atomic_store(&dlv->stopping, true);
    td_delivery_kick(dlv);
    for (size_t i = 0; i < dlv->worker_cnt; i++) curl_multi_wakeup(dlv->workers[i].multi);
    for (size_t i = 0; i < dlv->worker_cnt; i++) {
        worker_t *w = &dlv->workers[i];
        pthread_join(w->thread, NULL);
        curl_easy_cleanup(w->easy);
        curl_multi_cleanup(w->multi);
    }
    td_metric_unregister(dlv);
    free(dlv->workers);
    td_email_server_clear(&dlv->smtp);
    pthread_cond_destroy(&dlv->cv);
    pthread_mutex_destroy(&dlv->mu);
    free(dlv);
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
