/* The transactional outbox and its relay. A service writes its events into
 * the td_outbox table in the same SQLite transaction as the state change
 * that caused them; the relay thread reads the table in id order, produces
 * each row with an idempotent producer, and deletes a row only after its
 * delivery report says the broker persisted it. So a crash between commit
 * and publish publishes on the next start, a produce error is retried, and
 * the worst case is an event published twice with the same ce_id, which
 * the consumers' inbox makes a no-op (SPEC section 4).
 *
 * The relay works in batches of up to BATCH rows: produce them all, serve
 * delivery reports until every one is in, delete the persisted ones in one
 * transaction. Rows that failed stay and the next batch starts from the
 * first of them after a backoff. Waiting for a whole batch keeps the code
 * simple and still pipelines up to BATCH messages per round trip. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/bus.h"
#include "tidings/fault.h"
#include "tidings/log.h"
#include "tidings/metrics.h"

#define BATCH          1000
#define IDLE_WAKE_MS   1000 /* wakes without a kick, for rows another process wrote */
#define HEALTH_MS      2000 /* how often connectivity is probed */
#define HEALTH_WAIT_MS 1500
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* librdkafka retries retriable produce errors by itself until this runs
 * out; a row only comes back to us when the broker stayed unusable that
 * long or the error is permanent. */
#define MESSAGE_TIMEOUT_MS "300000"
/* One produce request in flight per broker. With more, the idempotent
 * producer treats a batch as persisted when a later batch of the same
 * partition is acknowledged, which only holds on a broker that enforces
 * producer sequence numbers; the embedded broker does not, and a rejected
 * batch followed by an accepted one was reported persisted and lost (seen
 * in tests with injected produce errors). Each request still carries the
 * batches of every partition the broker leads, so throughput stays far
 * above what the services produce. */
#define MAX_IN_FLIGHT "1"

/* ---- outbox ------------------------------------------------------------ */

int td_outbox_add_record(td_db_t *db, const td_record_t *rec)
{
    size_t hlen = 0;
    void *hblob = td_headers_encode(rec, &hlen);
    sqlite3_stmt *st = td_db_prepare(
        db, "INSERT INTO td_outbox(topic, key, value, headers, created_ms) VALUES(?,?,?,?,?)");
    sqlite3_bind_text(st, 1, rec->topic, -1, SQLITE_STATIC);
    if (rec->key)
        sqlite3_bind_blob(st, 2, rec->key, (int)rec->key_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 2);
    if (rec->value)
        sqlite3_bind_blob(st, 3, rec->value, (int)rec->value_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 3);
    sqlite3_bind_blob(st, 4, hblob, (int)hlen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, td_now_ms());
    int rc = td_db_run(db, st);
    free(hblob);
    if (rc != 0) return TD_EIO;
    td__db_mark_dirty(db);
    if (td__fault("outbox.after_insert")) return TD_EIO;
    return 0;
}

int td_outbox_add(td_db_t *db, const td_config_t *cfg, const char *topic_short,
                  const td_event_t *ev)
{
    char *topic = td_topic_name(cfg, topic_short);
    td_record_t *rec = td_event_to_record(ev, topic);
    int rc = td_outbox_add_record(db, rec);
    td_record_free(rec);
    free(topic);
    return rc;
}

int64_t td_outbox_backlog(td_db_t *db)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, "SELECT count(*) FROM td_outbox");
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(db);
    return n;
}

/* ---- relay ------------------------------------------------------------- */

enum row_state { ROW_UNSENT, ROW_PENDING, ROW_PERSISTED, ROW_FAILED };

typedef struct row {
    int64_t id;
    td_record_t *rec;
    enum row_state state;
    rd_kafka_resp_err_t err;
} row_t;

struct td_relay {
    td_db_t *db;
    rd_kafka_conf_t *conf; /* template: each producer gets a dup */
    rd_kafka_t *rk;        /* relay thread only (after start) */
    char *service;
    pthread_t thread;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool kick;

    atomic_bool stopping;
    atomic_llong stop_deadline; /* td_mono_ms, set before stopping */
    atomic_bool connected;
    atomic_bool fatal;

    /* The batch in flight: touched by the relay thread and by the
     * delivery report callback, which librdkafka calls from rd_kafka_poll
     * on that same thread. */
    row_t *batch;
    size_t batch_cnt;
    size_t outstanding;
    int64_t next_health;
};

static void relay_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    td_relay_t *r = opaque;
    int64_t id = (int64_t)(intptr_t)msg->_private;
    if (!r->batch) return;
    /* The batch is sorted by id. */
    size_t lo = 0, hi = r->batch_cnt;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->batch[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == r->batch_cnt || r->batch[lo].id != id) return;
    row_t *row = &r->batch[lo];
    /* A report for a row that is not pending belongs to an earlier,
     * abandoned attempt of the same row: ignore it. */
    if (row->state != ROW_PENDING) return;
    r->outstanding--;
    /* Only PERSISTED lets us delete: POSSIBLY_PERSISTED is published
     * again (a duplicate the inbox absorbs beats a loss). */
    if (msg->err == RD_KAFKA_RESP_ERR_NO_ERROR &&
        rd_kafka_message_status(msg) == RD_KAFKA_MSG_STATUS_PERSISTED) {
        row->state = ROW_PERSISTED;
    } else {
        row->state = ROW_FAILED;
        row->err = msg->err ? msg->err : RD_KAFKA_RESP_ERR__MSG_TIMED_OUT;
    }
}

static void relay_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    td_relay_t *r = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        atomic_store(&r->connected, false);
        td_warn("outbox relay: all brokers are down: %s", reason);
    } else if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof(why));
        td_error("outbox relay: fatal producer error, making a new producer: %s", why);
        atomic_store(&r->fatal, true);
    } else if (err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__RESOLVE) {
        td_debug("outbox relay: %s", reason);
    } else {
        td_warn("outbox relay: kafka: %s: %s", rd_kafka_err2name(err), reason);
    }
}

static rd_kafka_t *make_producer(td_relay_t *r, char *errstr, size_t errlen)
{
    char kerr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_dup(r->conf);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        td_errf(errstr, errlen, TD_EIO, "cannot create the outbox producer: %s", kerr);
    }
    return rk;
}

/* Probes the brokers with a cheap metadata request from the relay thread.
 * The error callback only reports "all brokers down"; this is what notices
 * that they are back (and catches a half-dead connection that never
 * errors). It blocks at most HEALTH_WAIT_MS, and only runs every
 * HEALTH_MS. */
static void relay_health(td_relay_t *r)
{
    int64_t now = td_mono_ms();
    if (now < r->next_health) return;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(r->rk, 0, NULL, &md, HEALTH_WAIT_MS);
    bool up = err == RD_KAFKA_RESP_ERR_NO_ERROR && md && md->broker_cnt > 0;
    if (md) rd_kafka_metadata_destroy(md);
    if (up != atomic_load(&r->connected))
        td_log(up ? TD_LOG_INFO : TD_LOG_WARN, "outbox relay: %s",
               up ? "connected to Kafka" : "cannot reach Kafka");
    atomic_store(&r->connected, up);
    r->next_health = td_mono_ms() + HEALTH_MS;
}

static size_t load_rows(td_relay_t *r, row_t *rows)
{
    size_t n = 0;
    td_db_lock(r->db);
    sqlite3_stmt *st = td_db_prepare(
        r->db, "SELECT id, topic, key, value, headers FROM td_outbox ORDER BY id LIMIT ?");
    sqlite3_bind_int(st, 1, BATCH);
    while (n < BATCH && sqlite3_step(st) == SQLITE_ROW) {
        row_t *row = &rows[n++];
        row->id = sqlite3_column_int64(st, 0);
        row->rec = td_record_new((const char *)sqlite3_column_text(st, 1));
        row->state = ROW_UNSENT;
        row->err = 0;
        if (sqlite3_column_type(st, 2) != SQLITE_NULL)
            td_record_set_key(row->rec, sqlite3_column_blob(st, 2),
                              (size_t)sqlite3_column_bytes(st, 2));
        if (sqlite3_column_type(st, 3) != SQLITE_NULL)
            td_record_set_value(row->rec, sqlite3_column_blob(st, 3),
                                (size_t)sqlite3_column_bytes(st, 3));
        const void *h = sqlite3_column_blob(st, 4);
        int hlen = sqlite3_column_bytes(st, 4);
        /* A corrupt blob can only come from a damaged file. Publishing the
         * record without headers keeps it visible (consumers dead-letter
         * it) instead of blocking the outbox forever behind it. */
        if (td_headers_decode(row->rec, h, (size_t)hlen) != 0)
            td_error("outbox row %lld has corrupt headers; publishing it without them",
                     (long long)row->id);
    }
    td_db_done(st);
    td_db_unlock(r->db);
    return n;
}

static rd_kafka_headers_t *kafka_headers(const td_record_t *rec)
{
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(rec->header_cnt);
    for (size_t i = 0; i < rec->header_cnt; i++) {
        const td_header_t *h = &rec->headers[i];
        rd_kafka_header_add(hdrs, h->name, -1, h->value, h->value ? (ssize_t)h->len : 0);
    }
    return hdrs;
}

static rd_kafka_resp_err_t produce_row(td_relay_t *r, row_t *row, int64_t deadline)
{
    for (;;) {
        rd_kafka_headers_t *hdrs = kafka_headers(row->rec);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            r->rk, RD_KAFKA_V_TOPIC(row->rec->topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(row->rec->key, row->rec->key_len),
            RD_KAFKA_V_VALUE(row->rec->value, row->rec->value_len), RD_KAFKA_V_HEADERS(hdrs),
            RD_KAFKA_V_OPAQUE((void *)(intptr_t)row->id), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return err; /* hdrs now librdkafka's */
        rd_kafka_headers_destroy(hdrs);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) return err;
        if (deadline && td_mono_ms() >= deadline) return err;
        /* The local queue is full: serving delivery reports empties it. */
        rd_kafka_poll(r->rk, 50);
    }
}

static void count_results(td_relay_t *r, size_t cnt, size_t *ok, size_t *failed)
{
    *ok = *failed = 0;
    const row_t *first_fail = NULL;
    for (size_t i = 0; i < cnt; i++) {
        const row_t *row = &r->batch[i];
        const char *type = td_record_header_str(row->rec, "ce_type");
        char labels[512];
        if (row->state == ROW_PERSISTED) {
            (*ok)++;
            td_metric_labels(labels, sizeof(labels), "topic", row->rec->topic, "type",
                             type ? type : "", NULL);
            td_metric_inc("tidings_events_produced_total", labels);
        } else {
            (*failed)++;
            if (!first_fail) first_fail = row;
            td_metric_labels(labels, sizeof(labels), "topic", row->rec->topic, NULL);
            td_metric_inc("tidings_produce_errors_total", labels);
        }
    }
    if (first_fail)
        td_warn("outbox relay: %zu of %zu events not published (first: row %lld to %s: %s); "
                "will retry",
                *failed, cnt, (long long)first_fail->id, first_fail->rec->topic,
                rd_kafka_err2str(first_fail->err));
}

static void delete_persisted(td_relay_t *r, size_t cnt)
{
    if (td__fault("relay.before_delete")) return;
    if (td_db_begin(r->db) != 0) return;
    int rc = 0;
    for (size_t i = 0; i < cnt && rc == 0; i++) {
        if (r->batch[i].state != ROW_PERSISTED) continue;
        sqlite3_stmt *st = td_db_prepare(r->db, "DELETE FROM td_outbox WHERE id = ?");
        sqlite3_bind_int64(st, 1, r->batch[i].id);
        rc = td_db_run(r->db, st);
    }
    /* If this fails the rows are published again later: a duplicate with
     * the same ce_id, never a loss. */
    if (rc == 0) {
        if (td_db_commit(r->db) == 0) (void)td__fault("relay.after_delete");
    } else {
        td_db_rollback(r->db);
    }
}

/* One batch: > 0 rows published (all of them), 0 nothing to do, or
 * TD_EAGAIN when some rows failed. deadline (td_mono_ms, 0 = none) bounds
 * the wait for delivery reports; a stop sets one. */
static int relay_batch(td_relay_t *r, int64_t deadline, size_t *loaded)
{
    row_t *rows = td_calloc(BATCH, sizeof(*rows));
    size_t cnt = load_rows(r, rows);
    *loaded = cnt;
    if (cnt == 0) {
        free(rows);
        return 0;
    }
    r->batch = rows;
    r->batch_cnt = cnt;
    r->outstanding = 0;

    for (size_t i = 0; i < cnt; i++) {
        row_t *row = &rows[i];
        row->state = ROW_PENDING;
        r->outstanding++;
        rd_kafka_resp_err_t err = produce_row(r, row, deadline);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            r->outstanding--;
            row->state = ROW_FAILED;
            row->err = err;
        }
    }

    bool reports_lost = td__fault("relay.after_produce");
    bool purged = false;
    int64_t give_up = 0;
    while (r->outstanding > 0) {
        rd_kafka_poll(r->rk, 100);
        relay_health(r);
        if (!deadline && atomic_load(&r->stopping)) deadline = atomic_load(&r->stop_deadline);
        int64_t now = td_mono_ms();
        if (deadline && now >= deadline && !purged) {
            /* Out of time: purged messages get failure reports and their
             * rows stay for the next start. */
            rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
            purged = true;
            give_up = now + 1000;
        }
        if (purged && now >= give_up) break;
    }

    for (size_t i = 0; reports_lost && i < cnt; i++) {
        rows[i].state = ROW_FAILED;
        rows[i].err = RD_KAFKA_RESP_ERR__FAIL;
    }
    size_t ok, failed;
    count_results(r, cnt, &ok, &failed);
    if (ok) delete_persisted(r, cnt);

    r->batch = NULL;
    r->batch_cnt = 0;
    for (size_t i = 0; i < cnt; i++) td_record_free(rows[i].rec);
    free(rows);
    return failed ? TD_EAGAIN : (int)ok;
}

/* Publishes until the outbox is empty or a batch has failures. */
static int relay_publish(td_relay_t *r, int64_t deadline)
{
    for (;;) {
        size_t loaded = 0;
        int rc = relay_batch(r, deadline, &loaded);
        if (rc < 0) return rc;
        if (loaded < BATCH) return 0;
        if (deadline && td_mono_ms() >= deadline) return TD_ETIMEDOUT;
    }
}

static void relay_renew_producer(td_relay_t *r)
{
    char err[512];
    rd_kafka_t *rk = make_producer(r, err, sizeof(err));
    if (!rk) {
        td_error("outbox relay: %s", err);
        return; /* keep the broken one; the next batch tries again */
    }
    rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(r->rk, 0);
    rd_kafka_destroy(r->rk);
    r->rk = rk;
    atomic_store(&r->fatal, false);
}

static void *relay_main(void *arg)
{
    td_relay_t *r = arg;
    int64_t backoff = 0, retry_at = 0;

    for (;;) {
        relay_health(r);
        if (atomic_load(&r->stopping)) break;
        if (td_mono_ms() >= retry_at) {
            if (relay_publish(r, 0) < 0) {
                backoff = backoff ? backoff * 2 : BACKOFF_MIN_MS;
                if (backoff > BACKOFF_MAX_MS) backoff = BACKOFF_MAX_MS;
                retry_at = td_mono_ms() + backoff;
            } else {
                backoff = 0;
                retry_at = 0;
            }
            if (atomic_load(&r->fatal)) relay_renew_producer(r);
        }

        int64_t now = td_mono_ms();
        int64_t wake = now + IDLE_WAKE_MS;
        if (retry_at > now && retry_at < wake) wake = retry_at;
        if (r->next_health < wake) wake = r->next_health;
        struct timespec ts = {.tv_sec = wake / 1000, .tv_nsec = (wake % 1000) * 1000000};
        pthread_mutex_lock(&r->mu);
        while (!r->kick && !atomic_load(&r->stopping) && td_mono_ms() < wake)
            pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        r->kick = false;
        pthread_mutex_unlock(&r->mu);
    }

    /* Stopping: one last bounded attempt at what is left. */
    int64_t deadline = atomic_load(&r->stop_deadline);
    if (td_mono_ms() < deadline) relay_publish(r, deadline);
    rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(r->rk, 0);
    return NULL;
}

static void relay_commit_hook(void *arg)
{
    td_relay_kick(arg);
}

static double relay_backlog_gauge(void *arg)
{
    td_relay_t *r = arg;
    return (double)td_outbox_backlog(r->db);
}

td_relay_t *td_relay_start(const td_config_t *cfg, td_db_t *db, char *errstr, size_t errlen)
{
    td_relay_t *r = td_calloc(1, sizeof(*r));
    r->db = db;
    r->service = td_strdup(cfg->service ? cfg->service : "");
    atomic_init(&r->stopping, false);
    atomic_init(&r->stop_deadline, 0);
    atomic_init(&r->connected, false);
    atomic_init(&r->fatal, false);
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);

    r->conf = td_kafka_conf(cfg, errstr, errlen);
    if (!r->conf) goto fail;
    /* murmur2_random puts a key where the Java client would (SPEC 3). */
    if (td_kafka_set(r->conf, "enable.idempotence", "true", errstr, errlen) != 0 ||
        td_kafka_set(r->conf, "acks", "all", errstr, errlen) != 0 ||
        td_kafka_set(r->conf, "partitioner", "murmur2_random", errstr, errlen) != 0 ||
        td_kafka_set(r->conf, "linger.ms", "1", errstr, errlen) != 0 ||
        td_kafka_set(r->conf, "max.in.flight.requests.per.connection", MAX_IN_FLIGHT, errstr,
                     errlen) != 0 ||
        td_kafka_set(r->conf, "message.timeout.ms", MESSAGE_TIMEOUT_MS, errstr, errlen) != 0)
        goto fail;
    rd_kafka_conf_set_dr_msg_cb(r->conf, relay_dr_cb);
    rd_kafka_conf_set_error_cb(r->conf, relay_error_cb);
    rd_kafka_conf_set_opaque(r->conf, r);

    r->rk = make_producer(r, errstr, errlen);
    if (!r->rk) goto fail;
    if (pthread_create(&r->thread, NULL, relay_main, r) != 0) {
        td_errf(errstr, errlen, TD_EIO, "cannot start the outbox relay thread");
        goto fail;
    }
    td_db_set_commit_hook(db, relay_commit_hook, r);
    char labels[128];
    td_metric_labels(labels, sizeof(labels), "service", r->service, NULL);
    td_metric_describe("tidings_outbox_backlog", "gauge", "Outbox rows waiting to be published");
    td_metric_describe("tidings_events_produced_total", "counter",
                       "Events published from the outbox and confirmed persisted");
    td_metric_describe("tidings_produce_errors_total", "counter",
                       "Outbox rows whose publication failed (they are retried)");
    td_metric_gauge_fn("tidings_outbox_backlog", labels, relay_backlog_gauge, r);
    return r;

fail:
    if (r->rk) rd_kafka_destroy(r->rk);
    if (r->conf) rd_kafka_conf_destroy(r->conf);
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    free(r->service);
    free(r);
    return NULL;
}

void td_relay_stop(td_relay_t *relay, int timeout_ms)
{
    if (!relay) return;
    /* After this returns no commit calls into relay any more. */
    td_db_set_commit_hook(relay->db, NULL, NULL);
    td_metric_unregister(relay);
    atomic_store(&relay->stop_deadline, td_mono_ms() + (timeout_ms > 0 ? timeout_ms : 0));
    pthread_mutex_lock(&relay->mu);
    atomic_store(&relay->stopping, true);
    pthread_cond_signal(&relay->cv);
    pthread_mutex_unlock(&relay->mu);
    pthread_join(relay->thread, NULL);

    rd_kafka_destroy(relay->rk);
    rd_kafka_conf_destroy(relay->conf);
    pthread_cond_destroy(&relay->cv);
    pthread_mutex_destroy(&relay->mu);
    free(relay->service);
    free(relay);
}

bool td_relay_connected(td_relay_t *relay)
{
    return relay && atomic_load(&relay->connected);
}

void td_relay_kick(td_relay_t *relay)
{
    pthread_mutex_lock(&relay->mu);
    relay->kick = true;
    pthread_cond_signal(&relay->cv);
    pthread_mutex_unlock(&relay->mu);
}

int td_relay_drain(td_relay_t *relay, int timeout_ms)
{
    int64_t deadline = td_mono_ms() + timeout_ms;
    td_relay_kick(relay);
    for (;;) {
        if (td_outbox_backlog(relay->db) == 0) return 0;
        if (td_mono_ms() >= deadline) return TD_ETIMEDOUT;
        td_sleep_ms(10);
    }
}
