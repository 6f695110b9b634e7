/* The outbox relay (tidings/bus.h): the thread that publishes the td_outbox
 * table (outbox.c) to Kafka.
 *
 * The relay works in batches of up to BATCH rows read on a reader
 * connection (committed rows only): produce them all straight from the
 * row (librdkafka copies), serve delivery reports until every one is in,
 * delete the persisted ones in one statement per run of ids. Waiting for a
 * whole batch keeps the code simple and still pipelines up to BATCH
 * messages per round trip.
 *
 * Per-key order (SPEC section 5): librdkafka keeps a partition's messages
 * in order and retries them itself, with no deadline (message.timeout.ms
 * 0), and with enable.gapless.guarantee an error that would leave a gap
 * stops the producer instead (the relay then makes a new one) so that the
 * later messages fail too. A row that still fails holds its key: until it
 * is confirmed, the relay publishes no later row of that key, and retries
 * it alone after a backoff, while every other key goes on. */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/bus.h"
#include "tidings/fault.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tidings/worker.h"

#define BATCH          1000
#define IDLE_WAKE_MS   1000 /* wakes without a kick, for rows another process wrote */
#define HEALTH_MS      2000 /* how often connectivity is probed */
#define HEALTH_WAIT_MS 1500
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* librdkafka retries retriable produce errors by itself, forever: a row
 * only comes back to us on a permanent error (or a stop), never because a
 * deadline passed while a later row of its key got through. */
#define MESSAGE_TIMEOUT_MS "0"
#define HELD_MAX           4096 /* keys held back at once, at most */
/* One produce request in flight per broker. With more, the idempotent
 * producer treats a batch as persisted when a later batch of the same
 * partition is acknowledged, which only holds on a broker that enforces
 * producer sequence numbers; the embedded broker does not, and a rejected
 * batch followed by an accepted one was reported persisted and lost (seen
 * in tests with injected produce errors). Each request still carries the
 * batches of every partition the broker leads, so throughput stays far
 * above what the services produce. */
#define MAX_IN_FLIGHT "1"

/* ---- relay ------------------------------------------------------------- */

enum row_state { ROW_UNSENT, ROW_PENDING, ROW_PERSISTED, ROW_FAILED, ROW_HELD };

typedef struct row {
    int64_t id;
    uint64_t key_hash; /* of topic and key: which rows keep their order */
    enum row_state state;
    rd_kafka_resp_err_t err;
    char topic[256];
    char type[80];
} row_t;

/* A key whose oldest unconfirmed row failed: nothing later of it goes out
 * before that row is confirmed. */
typedef struct held {
    uint64_t key_hash;
    int64_t retry_at; /* td_mono_ms: when its row may go again */
    int64_t backoff;
} held_t;

struct td_relay {
    td_db_t *db;
    rd_kafka_conf_t *conf; /* template: each producer gets a dup */
    rd_kafka_t *rk;        /* relay thread only (after start) */
    char *service;
    td_worker_t *worker;
    int64_t due; /* td_mono_ms of the next round without a wake (worker only) */

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
    held_t *held;
    size_t held_cnt;
    row_t *batch_rows; /* BATCH of them */
};

static uint64_t key_hash(const char *topic, const void *key, size_t len)
{
    /* FNV-1a: a collision only holds back one key more than needed. */
    uint64_t h = 14695981039346656037ull;
    for (const unsigned char *p = (const unsigned char *)topic; *p; p++)
        h = (h ^ *p) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (size_t i = 0; i < len; i++) h = (h ^ ((const unsigned char *)key)[i]) * 1099511628211ull;
    return h;
}

static held_t *held_find(td_relay_t *r, uint64_t h)
{
    for (size_t i = 0; i < r->held_cnt; i++)
        if (r->held[i].key_hash == h) return &r->held[i];
    return NULL;
}

static void held_release(td_relay_t *r, uint64_t h)
{
    held_t *k = held_find(r, h);
    if (k) *k = r->held[--r->held_cnt];
}

static void held_add(td_relay_t *r, uint64_t h, int64_t now)
{
    held_t *k = held_find(r, h);
    if (!k) {
        if (r->held_cnt == HELD_MAX) return; /* more failing keys than that: all wait anyway */
        k = &r->held[r->held_cnt++];
        *k = (held_t){.key_hash = h, .backoff = 0};
    }
    k->backoff = k->backoff ? k->backoff * 2 : BACKOFF_MIN_MS;
    if (k->backoff > BACKOFF_MAX_MS) k->backoff = BACKOFF_MAX_MS;
    k->retry_at = now + k->backoff;
}

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

typedef struct header_sink {
    rd_kafka_headers_t *hdrs;
    row_t *row; /* its type, from ce_type, labels the produced metric */
} header_sink_t;

static void add_kafka_header(void *arg, const char *name, size_t name_len, const void *value,
                             size_t len)
{
    header_sink_t *sink = arg;
    rd_kafka_header_add(sink->hdrs, name, (ssize_t)name_len, value, value ? (ssize_t)len : 0);
    if (value && name_len == 7 && !memcmp(name, "ce_type", 7) && len < sizeof(sink->row->type)) {
        memcpy(sink->row->type, value, len);
        sink->row->type[len] = '\0';
    }
}

/* Produces one row as it is read (librdkafka copies key, value and
 * headers). */
static rd_kafka_resp_err_t produce_row(td_relay_t *r, row_t *row, const void *key, size_t key_len,
                                       const void *value, size_t value_len, const void *hblob,
                                       size_t hlen, int64_t deadline)
{
    for (;;) {
        rd_kafka_headers_t *hdrs = rd_kafka_headers_new(12);
        /* A corrupt blob can only come from a damaged file. Publishing the
         * record without headers keeps it visible (consumers dead-letter
         * it) instead of blocking its key forever. */
        header_sink_t sink = {hdrs, row};
        if (td_headers_walk(hblob, hlen, add_kafka_header, &sink) != 0)
            td_error("outbox row %lld has corrupt headers; publishing it without them",
                     (long long)row->id);
        rd_kafka_resp_err_t err = rd_kafka_producev(
            r->rk, RD_KAFKA_V_TOPIC(row->topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(key, key_len), RD_KAFKA_V_VALUE((void *)value, value_len),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_OPAQUE((void *)(intptr_t)row->id), RD_KAFKA_V_END);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) return err; /* hdrs now librdkafka's */
        rd_kafka_headers_destroy(hdrs);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) return err;
        if (deadline && td_mono_ms() >= deadline) return err;
        /* The local queue is full: serving delivery reports empties it. */
        rd_kafka_poll(r->rk, 50);
    }
}

/* Reads up to BATCH rows (committed ones: a reader) and produces each
 * unless its key is held. The number read. */
static size_t produce_batch(td_relay_t *r, row_t *rows, int64_t deadline)
{
    size_t n = 0, stopped = 0; /* rows failed or held so far */
    int64_t now = td_mono_ms();
    td_db_lock(r->db);
    sqlite3_stmt *st = td_db_prepare(
        r->db, "SELECT id, topic, key, value, headers FROM td_outbox ORDER BY id LIMIT ?");
    sqlite3_bind_int(st, 1, BATCH);
    while (n < BATCH && sqlite3_step(st) == SQLITE_ROW) {
        row_t *row = &rows[n++];
        row->id = sqlite3_column_int64(st, 0);
        snprintf(row->topic, sizeof(row->topic), "%s", (const char *)sqlite3_column_text(st, 1));
        const void *key = sqlite3_column_blob(st, 2);
        size_t key_len = (size_t)sqlite3_column_bytes(st, 2);
        row->key_hash = key_hash(row->topic, key, key_len);
        row->err = 0;
        row->type[0] = '\0';
        held_t *k = held_find(r, row->key_hash);
        /* A held key: its first row here is the one that failed; it goes
         * again alone once its backoff has passed, the rest wait. */
        bool first = true;
        for (size_t i = 0; k && i + 1 < n && first; i++) first = rows[i].key_hash != row->key_hash;
        if (k && (!first || now < k->retry_at)) {
            row->state = ROW_HELD;
            stopped++;
            continue;
        }
        /* A row of a key that failed or waits earlier in this batch waits
         * too (a produce refused at once, before any report). */
        bool behind = false;
        for (size_t i = 0; stopped && i + 1 < n && !behind; i++)
            behind = rows[i].key_hash == row->key_hash &&
                     (rows[i].state == ROW_FAILED || rows[i].state == ROW_HELD);
        if (behind) {
            row->state = ROW_HELD;
            stopped++;
            continue;
        }
        const void *hblob = sqlite3_column_blob(st, 4);
        size_t hlen = (size_t)sqlite3_column_bytes(st, 4);
        row->state = ROW_PENDING;
        r->outstanding++;
        rd_kafka_resp_err_t err =
            produce_row(r, row, key, key_len, sqlite3_column_blob(st, 3),
                        (size_t)sqlite3_column_bytes(st, 3), hblob, hlen, deadline);
        if (err != RD_KAFKA_RESP_ERR_NO_ERROR) {
            r->outstanding--;
            row->state = ROW_FAILED;
            row->err = err;
            stopped++;
        }
    }
    td_db_done(st);
    td_db_unlock(r->db);
    return n;
}

static bool same_series(const row_t *a, const row_t *b)
{
    return !strcmp(a->topic, b->topic) && !strcmp(a->type, b->type);
}

static void count_results(td_relay_t *r, size_t cnt, size_t *ok, size_t *failed)
{
    *ok = *failed = 0;
    const row_t *first_fail = NULL;
    size_t held = 0;
    for (size_t i = 0; i < cnt; i++) {
        const row_t *row = &r->batch[i];
        if (row->state == ROW_PERSISTED)
            (*ok)++;
        else if (row->state == ROW_HELD)
            held++;
        else {
            (*failed)++;
            if (!first_fail) first_fail = row;
            char labels[512];
            td_metric_labels(labels, sizeof(labels), "topic", row->topic, NULL);
            td_metric_inc("tidings_produce_errors_total", labels);
        }
    }
    /* One series per topic and type, added to once per batch. */
    for (size_t i = 0; i < cnt; i++) {
        const row_t *a = &r->batch[i];
        if (a->state != ROW_PERSISTED) continue;
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++)
            seen = r->batch[j].state == ROW_PERSISTED && same_series(&r->batch[j], a);
        if (seen) continue;
        size_t same = 0;
        for (size_t j = i; j < cnt; j++)
            same += r->batch[j].state == ROW_PERSISTED && same_series(&r->batch[j], a);
        char labels[512];
        td_metric_labels(labels, sizeof(labels), "topic", a->topic, "type", a->type, NULL);
        td_metric_add("tidings_events_produced_total", labels, (double)same);
    }
    if (first_fail)
        td_warn("outbox relay: %zu of %zu events not published (first: row %lld to %s: %s); "
                "their keys wait%s%zu more held back",
                *failed, cnt, (long long)first_fail->id, first_fail->topic,
                rd_kafka_err2str(first_fail->err), held ? ", " : ", ", held);
}

/* Deletes the persisted rows: one statement per run of consecutive
 * persisted rows (the whole batch, when all went well). Every row with an
 * id inside a run was read by this batch: ids only grow, and the batch read
 * them in order. */
static void delete_persisted(td_relay_t *r, size_t cnt)
{
    if (td__fault("relay.before_delete")) return;
    if (td_db_begin(r->db) != 0) return;
    int rc = 0;
    for (size_t i = 0; i < cnt && rc == 0;) {
        if (r->batch[i].state != ROW_PERSISTED) {
            i++;
            continue;
        }
        size_t j = i;
        while (j + 1 < cnt && r->batch[j + 1].state == ROW_PERSISTED) j++;
        sqlite3_stmt *st = td_db_prepare(r->db, "DELETE FROM td_outbox WHERE id BETWEEN ? AND ?");
        sqlite3_bind_int64(st, 1, r->batch[i].id);
        sqlite3_bind_int64(st, 2, r->batch[j].id);
        rc = td_db_run(r->db, st);
        i = j + 1;
    }
    /* If this fails the rows are published again later: a duplicate with
     * the same ce_id, never a loss. */
    if (rc == 0) {
        if (td_db_commit(r->db) == 0) (void)td__fault("relay.after_delete");
    } else {
        td_db_rollback(r->db);
    }
}

/* One batch: > 0 rows published, 0 nothing to do, or TD_EAGAIN when rows
 * failed or wait behind a held key. deadline (td_mono_ms, 0 = none) bounds
 * the wait for delivery reports; a stop sets one. */
static int relay_batch(td_relay_t *r, int64_t deadline, size_t *loaded)
{
    row_t *rows = r->batch_rows;
    r->outstanding = 0;
    r->batch = rows;
    r->batch_cnt = 0;
    size_t cnt = produce_batch(r, rows, deadline);
    r->batch_cnt = cnt;
    *loaded = cnt;
    if (cnt == 0) {
        r->batch = NULL;
        return 0;
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
            /* Out of time: what was not sent yet is purged (its rows stay
             * for the next start); what is in flight gets its report. The
             * queue is purged first and in-flight requests are left their
             * reports, so no later row of a partition overtakes one that
             * is still queued. */
            rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE);
            purged = true;
            give_up = now + 1000;
        }
        if (purged && now >= give_up) {
            rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_INFLIGHT);
            rd_kafka_poll(r->rk, 0);
            break;
        }
    }

    for (size_t i = 0; reports_lost && i < cnt; i++)
        if (rows[i].state == ROW_PERSISTED) {
            rows[i].state = ROW_FAILED;
            rows[i].err = RD_KAFKA_RESP_ERR__FAIL;
        }
    size_t ok, failed;
    count_results(r, cnt, &ok, &failed);
    if (ok) delete_persisted(r, cnt);
    /* Keys: a confirmed row frees its key, a failed one holds it. */
    int64_t now = td_mono_ms();
    bool waiting = false;
    for (size_t i = 0; i < cnt; i++)
        if (rows[i].state == ROW_PERSISTED) held_release(r, rows[i].key_hash);
    for (size_t i = 0; i < cnt; i++) {
        if (rows[i].state == ROW_FAILED) held_add(r, rows[i].key_hash, now);
        if (rows[i].state != ROW_PERSISTED) waiting = true;
    }
    r->batch = NULL;
    r->batch_cnt = 0;
    return waiting ? TD_EAGAIN : (int)ok;
}

/* Publishes until the outbox is empty or a batch leaves rows behind. */
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

/* When the first held key may go again (0 when none is held). */
static int64_t next_retry(const td_relay_t *r)
{
    int64_t at = 0;
    for (size_t i = 0; i < r->held_cnt; i++)
        if (!at || r->held[i].retry_at < at) at = r->held[i].retry_at;
    return at;
}

/* One round of the relay's worker: new rows go out at once, whatever
 * waits behind a held key; the held ones when their backoff has passed;
 * without a wake, every IDLE_WAKE_MS a look for rows another process
 * wrote. */
static int64_t relay_round(td_worker_t *w, void *arg, bool woken, int64_t now)
{
    (void)w;
    td_relay_t *r = arg;
    relay_health(r);
    if (woken || now >= r->due) {
        int rc = relay_publish(r, 0);
        int64_t retry_at = rc < 0 ? next_retry(r) : 0;
        if (rc < 0 && !retry_at) retry_at = td_mono_ms() + BACKOFF_MIN_MS;
        if (atomic_load(&r->fatal)) relay_renew_producer(r);
        r->due = retry_at ? retry_at : td_mono_ms() + IDLE_WAKE_MS;
    }
    return r->next_health < r->due ? r->next_health : r->due;
}

/* Stopping: one last bounded attempt at what is left. */
static void relay_finish(void *arg)
{
    td_relay_t *r = arg;
    int64_t deadline = atomic_load(&r->stop_deadline);
    if (td_mono_ms() < deadline) relay_publish(r, deadline);
    rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(r->rk, 0);
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
    r->batch_rows = td_calloc(BATCH, sizeof(*r->batch_rows));
    r->held = td_calloc(HELD_MAX, sizeof(*r->held));
    r->service = td_strdup(cfg->service ? cfg->service : "");
    atomic_init(&r->stopping, false);
    atomic_init(&r->stop_deadline, 0);
    atomic_init(&r->connected, false);
    atomic_init(&r->fatal, false);

    r->conf = td_kafka_conf(cfg, errstr, errlen);
    if (!r->conf) goto fail;
    /* murmur2_random puts a key where the Java client would (SPEC 3). */
    if (td_kafka_set(r->conf, "enable.idempotence", "true", errstr, errlen) != 0 ||
        td_kafka_set(r->conf, "acks", "all", errstr, errlen) != 0 ||
        td_kafka_set(r->conf, "partitioner", "murmur2_random", errstr, errlen) != 0 ||
        td_kafka_set(r->conf, "linger.ms", "1", errstr, errlen) != 0 ||
        td_kafka_set(r->conf, "max.in.flight.requests.per.connection", MAX_IN_FLIGHT, errstr,
                     errlen) != 0 ||
        td_kafka_set(r->conf, "message.timeout.ms", MESSAGE_TIMEOUT_MS, errstr, errlen) != 0 ||
        td_kafka_set(r->conf, "enable.gapless.guarantee", "true", errstr, errlen) != 0)
        goto fail;
    rd_kafka_conf_set_dr_msg_cb(r->conf, relay_dr_cb);
    rd_kafka_conf_set_error_cb(r->conf, relay_error_cb);
    rd_kafka_conf_set_opaque(r->conf, r);

    r->rk = make_producer(r, errstr, errlen);
    if (!r->rk) goto fail;
    td_worker_opts_t wopts = {
        .name = "relay", .round = relay_round, .finish = relay_finish, .arg = r};
    r->worker = td_worker_start(&wopts, errstr, errlen);
    if (!r->worker) goto fail;
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
    free(r->batch_rows);
    free(r->held);
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
    atomic_store(&relay->stopping, true);
    td_worker_stop(relay->worker);

    rd_kafka_destroy(relay->rk);
    rd_kafka_conf_destroy(relay->conf);
    free(relay->batch_rows);
    free(relay->held);
    free(relay->service);
    free(relay);
}

bool td_relay_connected(td_relay_t *relay)
{
    return relay && atomic_load(&relay->connected);
}

void td_relay_kick(td_relay_t *relay)
{
    td_worker_wake(relay->worker);
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
