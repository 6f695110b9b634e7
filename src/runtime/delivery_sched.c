/* The delivery workers (see tidings/delivery.h): each claims the next due
 * row the claim policy allows (room at its destination and for its owner,
 * the breaker closed) in a short transaction, makes the try
 * (delivery_send.c) with the database unlocked, and records the outcome in
 * a second transaction: deleted when sent, due again after a jittered
 * backoff, or failed and dead-lettered, with the destination's breaker
 * and the status the user sees updated in the same transaction. Also the
 * queue's start and stop, and the registry by which an enqueue wakes the
 * workers of its database. */
#include <curl/curl.h>
#include <inttypes.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "delivery_internal.h"
#include "tidings/bus.h"
#include "tidings/email.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tidings/urlguard.h"

/* More workers than one destination (2) or one user (4) may use, so a
 * slow destination never holds them all. */
#define DEFAULT_THREADS    8
#define DEFAULT_TIMEOUT_MS 10000
#define DEFAULT_IDLE_MS    1000

/* A claim older than this is taken to be lost (a failed write of the
 * outcome), and the row is due again. */
#define STALE_CLAIM_EXTRA_MS 60000

/* The running deliveries by database, so that td_delivery_enqueue (which
 * only has the db) can wake the right workers. */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static struct td_delivery *registry;

void td__delivery_wake(td_db_t *db)
{
    pthread_mutex_lock(&registry_mu);
    for (struct td_delivery *d = registry; d; d = d->next)
        if (d->db == db) td_delivery_kick(d);
    pthread_mutex_unlock(&registry_mu);
}

/* ---- a claimed row ---------------------------------------------------- */

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

static const char *const verdict_metric[] = {"success", "gone", "retry", "failed", NULL};

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
        rc = td__delivery_update_breaker(dlv, job, out, &opened);
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

/* A round of one sender: one due row claimed, sent and its outcome
 * recorded, then at once another round; with none due, the next round
 * comes when the earliest pending row is due (at most idle_ms away, for
 * rows another process queued), or when a kick wakes it. */
static int64_t send_round(td_worker_t *tw, void *arg, bool woken, int64_t now)
{
    (void)woken;
    worker_t *w = arg;
    struct td_delivery *dlv = w->dlv;
    if (td_worker_stopping(tw)) return now + dlv->idle_ms;
    job_t job = {0};
    int64_t next_due = INT64_MAX;
    if (!claim(dlv, &job, &next_due)) {
        /* next_at_ms is wall-clock time (it is stored); the worker's
         * deadline is monotonic: only the distance carries over. */
        int64_t wait = dlv->idle_ms, wall = td_now_ms();
        if (next_due != INT64_MAX && next_due - wall < wait) wait = next_due - wall;
        return now + (wait > 0 ? wait : 0);
    }
    outcome_t out;
    int64_t t0 = td_mono_ms();
    td__delivery_send(w, &job, &out);
    if (out.verdict != V_ABORTED) {
        char labels[64];
        td_metric_labels(labels, sizeof(labels), "channel", job.channel, NULL);
        td_metric_observe("tidings_delivery_seconds", labels, (double)(td_mono_ms() - t0) / 1000.0);
    }
    int64_t next = td_mono_ms();
    if (record_outcome(dlv, &job, &out) != 0) {
        /* The row stays claimed; the stale-claim rule hands it out
         * again later, so it is delayed, never lost. */
        td_error("delivery %" PRId64 ": cannot record the outcome (%s)", job.id, out.error);
        next += 100;
    }
    job_clear(&job);
    /* A place at a destination is free now: rows that waited for it
     * may go. */
    td_delivery_kick(dlv);
    return next;
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
        td_worker_opts_t wopts = {.name = "delivery", .round = send_round, .arg = w};
        char err[256] = "";
        pthread_mutex_lock(&dlv->mu);
        if (w->multi && w->easy) w->tw = td_worker_start(&wopts, err, sizeof(err));
        if (w->tw) dlv->worker_cnt = i + 1;
        pthread_mutex_unlock(&dlv->mu);
        if (!w->tw) {
            if (w->easy) curl_easy_cleanup(w->easy);
            if (w->multi) curl_multi_cleanup(w->multi);
            td_errf(errstr, errlen, TD_EIO, "cannot start delivery worker %zu%s%s", i,
                    *err ? ": " : "", err);
            td_delivery_stop(dlv);
            return NULL;
        }
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
    if (!atomic_load(&dlv->stopping))
        for (size_t i = 0; i < dlv->worker_cnt; i++) td_worker_wake(dlv->workers[i].tw);
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

    /* No kick reaches a worker from here on; a send under way is cut
     * short (delivery_send.c checks stopping) and its row is due again
     * at once, without using up an attempt (record_outcome). */
    pthread_mutex_lock(&dlv->mu);
    atomic_store(&dlv->stopping, true);
    pthread_mutex_unlock(&dlv->mu);
    for (size_t i = 0; i < dlv->worker_cnt; i++) curl_multi_wakeup(dlv->workers[i].multi);
    for (size_t i = 0; i < dlv->worker_cnt; i++) {
        worker_t *w = &dlv->workers[i];
        td_worker_stop(w->tw);
        curl_easy_cleanup(w->easy);
        curl_multi_cleanup(w->multi);
    }
    td_metric_unregister(dlv);
    free(dlv->workers);
    td_email_server_clear(&dlv->smtp);
    pthread_mutex_destroy(&dlv->mu);
    free(dlv);
}
