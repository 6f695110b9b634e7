/* The consumer with its inbox: one thread per consumer group membership
 * that polls records and runs each through the service's handler inside a
 * SQLite transaction that also records the event's ce_id in td_inbox. The
 * offset (offset+1) is stored only after that transaction commits, and
 * librdkafka's auto commit sends stored offsets to the broker; a sync
 * commit at revoke and at stop covers the rest. So a crash anywhere
 * replays at most the records after the last commit, and the inbox turns
 * each replay into a no-op (SPEC section 4).
 *
 * A record that is not a valid CloudEvent, or whose handler says the event
 * is bad (TD_EINVAL), goes to <topic>.DLT through the outbox in the same
 * transaction as its inbox row; a transient failure (any other error) is
 * retried with backoff without moving the offset; an event type the
 * service does not handle is skipped. Records that vanished before we read
 * them (retention) are never passed over silently: an offset gap or an
 * offset reset is logged as an error and counted.
 *
 * Redrive (SPEC section 3): a record with a tidings_redriven_from header is
 * a dead letter sent back to its topic. When this consumer's inbox says it
 * dead-lettered that ce_id, the event is processed again (the inbox row
 * becomes handled with the effect, so any further copy is a duplicate);
 * when it handled the event, the copy is a duplicate like any other. */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/bus.h"
#include "tidings/fault.h"
#include "tidings/log.h"
#include "tidings/metrics.h"

#define HEALTH_MS      2000
#define HEALTH_WAIT_MS 1500
#define LAG_MS         1000
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define COMMITTED_WAIT 5000
/* How long a silent member keeps its partitions. Heartbeats come from
 * librdkafka's own thread, so a slow handler does not count against it;
 * only a dead or frozen process does. 6 s (the brokers' default minimum)
 * instead of Kafka's 45 s lets a restarted service take over its
 * partitions within seconds, and the embedded broker holds a group that a
 * member just left for this long minus one second before it rebalances. */
#define SESSION_TIMEOUT_MS "6000"
#define POLL_MS            100
#define HEARTBEAT_MS       "2000"

/* The last offset handed to us per assigned partition, for gap detection.
 * -1 when unknown (nothing committed and nothing read yet). */
typedef struct part_state {
    char *topic;
    int32_t partition;
    int64_t last;
    bool owned; /* assigned to us now */
} part_state_t;

typedef struct batch batch_t;

struct td_consumer {
    rd_kafka_t *rk;
    td_db_t *db;
    void *ctx;
    char *group;
    char *prefix;  /* the topic prefix, to check that a type is on its SPEC topic */
    char **topics; /* full names */
    size_t topic_cnt;
    td_handler_t *handlers; /* types copied */
    size_t handler_cnt;
    pthread_t thread;

    pthread_mutex_t mu; /* only for the interruptible sleep */
    pthread_cond_t cv;
    atomic_bool stop;
    atomic_bool connected;
    atomic_llong processed;
    atomic_llong lag;
    atomic_int assigned; /* partitions assigned now (td_consumer_assigned) */

    /* Consumer thread only (the rebalance callback runs in its poll). */
    part_state_t *parts;
    size_t part_cnt;
    int64_t next_health;
    int64_t empty_since; /* when assigned last became 0 (or the start) */
    int resubscribed;    /* times unstick subscribed again */
    int64_t next_lag;
    int generation; /* bumped by every revocation */
    bool stateless;
    char *skip_header, *skip_value;
    batch_t *batch;
};

/* ---- small helpers ----------------------------------------------------- */

static void count(const char *topic, const char *type, const char *result)
{
    char labels[768];
    td_metric_labels(labels, sizeof(labels), "topic", topic, "type", type, "result", result, NULL);
    td_metric_inc("tidings_events_consumed_total", labels);
}

static void cons_sleep(td_consumer_t *cons, int64_t ms)
{
    int64_t until = td_mono_ms() + ms;
    struct timespec ts = {.tv_sec = until / 1000, .tv_nsec = (until % 1000) * 1000000};
    pthread_mutex_lock(&cons->mu);
    while (!atomic_load(&cons->stop) && td_mono_ms() < until)
        pthread_cond_timedwait(&cons->cv, &cons->mu, &ts);
    pthread_mutex_unlock(&cons->mu);
}

static part_state_t *part_find(td_consumer_t *cons, const char *topic, int32_t partition,
                               bool create)
{
    for (size_t i = 0; i < cons->part_cnt; i++)
        if (cons->parts[i].partition == partition && !strcmp(cons->parts[i].topic, topic))
            return &cons->parts[i];
    if (!create) return NULL;
    cons->parts = td_realloc(cons->parts, (cons->part_cnt + 1) * sizeof(*cons->parts));
    part_state_t *p = &cons->parts[cons->part_cnt++];
    p->topic = td_strdup(topic);
    p->partition = partition;
    p->last = -1;
    return p;
}

static void parts_clear(td_consumer_t *cons)
{
    for (size_t i = 0; i < cons->part_cnt; i++) free(cons->parts[i].topic);
    free(cons->parts);
    cons->parts = NULL;
    cons->part_cnt = 0;
}

/* Probes the brokers from the consumer thread: the error callback says
 * when all brokers went down, this says when they are back. A metadata
 * request without topics is the cheapest round trip there is; it blocks
 * this thread at most HEALTH_WAIT_MS every HEALTH_MS, and only while the
 * brokers do not answer. */
#define EMPTY_GROUP_MS  15000
#define RESUBSCRIBE_MAX 3

/* A group that formed while its topics were just being created (in the
 * metadata, partitions without leaders yet) can get no partitions, and
 * librdkafka 2.0 was seen to stay so for minutes on a busy cluster instead
 * of rejoining at its next metadata refresh. After EMPTY_GROUP_MS without
 * partitions while the topics have some, the consumer subscribes again,
 * which makes it rejoin with fresh metadata. At most RESUBSCRIBE_MAX
 * times: a member of a group with more members than partitions rightly
 * has none, and must not rebalance the group forever. */
static void cons_unstick(td_consumer_t *cons)
{
    int64_t now = td_mono_ms();
    if (atomic_load(&cons->assigned) > 0) {
        cons->empty_since = now;
        return;
    }
    if (cons->resubscribed >= RESUBSCRIBE_MAX || now - cons->empty_since < EMPTY_GROUP_MS) return;
    const struct rd_kafka_metadata *md = NULL;
    if (rd_kafka_metadata(cons->rk, 1, NULL, &md, HEALTH_WAIT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return;
    int parts = 0;
    for (int i = 0; i < md->topic_cnt; i++)
        for (size_t k = 0; k < cons->topic_cnt; k++)
            if (!md->topics[i].err && !strcmp(md->topics[i].topic, cons->topics[k]))
                parts += md->topics[i].partition_cnt;
    rd_kafka_metadata_destroy(md);
    cons->empty_since = td_mono_ms();
    if (parts == 0) return;
    cons->resubscribed++;
    td_warn("consumer %s: no partitions for %d s although its topics have %d: joining the group "
            "again (%d of %d)",
            cons->group, EMPTY_GROUP_MS / 1000, parts, cons->resubscribed, RESUBSCRIBE_MAX);
    rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new((int)cons->topic_cnt);
    for (size_t k = 0; k < cons->topic_cnt; k++)
        rd_kafka_topic_partition_list_add(subs, cons->topics[k], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(cons->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (err) td_warn("consumer %s: cannot subscribe again: %s", cons->group, rd_kafka_err2str(err));
}

static void cons_health(td_consumer_t *cons)
{
    int64_t now = td_mono_ms();
    if (now < cons->next_health) return;
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(cons->rk, 0, NULL, &md, HEALTH_WAIT_MS);
    bool up = err == RD_KAFKA_RESP_ERR_NO_ERROR && md && md->broker_cnt > 0;
    if (md) rd_kafka_metadata_destroy(md);
    if (up != atomic_load(&cons->connected))
        td_log(up ? TD_LOG_INFO : TD_LOG_WARN, "consumer %s: %s", cons->group,
               up ? "connected to Kafka" : "cannot reach Kafka");
    atomic_store(&cons->connected, up);
    if (up) cons_unstick(cons);
    cons->next_health = td_mono_ms() + HEALTH_MS;
}

/* Lag from the position of each assigned partition and the high watermark
 * librdkafka cached from the last fetch response (no extra request). */
static void cons_refresh_lag(td_consumer_t *cons)
{
    int64_t now = td_mono_ms();
    if (now < cons->next_lag) return;
    cons->next_lag = now + LAG_MS;
    rd_kafka_topic_partition_list_t *parts = NULL;
    if (rd_kafka_assignment(cons->rk, &parts) != RD_KAFKA_RESP_ERR_NO_ERROR) return;
    rd_kafka_position(cons->rk, parts);
    int64_t lag = 0;
    bool known = parts->cnt == 0;
    for (int i = 0; i < parts->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &parts->elems[i];
        int64_t lo = -1, hi = -1;
        if (rd_kafka_get_watermark_offsets(cons->rk, tp->topic, tp->partition, &lo, &hi) !=
                RD_KAFKA_RESP_ERR_NO_ERROR ||
            hi < 0)
            continue;
        /* No position yet (nothing fetched since the assignment): the
         * committed offset, else the start of the partition. */
        int64_t pos = tp->offset;
        if (pos < 0) {
            const part_state_t *p = part_find(cons, tp->topic, tp->partition, false);
            pos = p && p->last >= 0 ? p->last + 1 : lo;
        }
        if (pos < 0) continue;
        if (hi > pos) lag += hi - pos;
        known = true;
    }
    rd_kafka_topic_partition_list_destroy(parts);
    atomic_store(&cons->lag, known ? lag : -1);
}

static double lag_gauge(void *arg)
{
    td_consumer_t *cons = arg;
    return (double)atomic_load(&cons->lag);
}

/* ---- callbacks --------------------------------------------------------- */

static void log_parts(td_consumer_t *cons, int level, const char *what,
                      const rd_kafka_topic_partition_list_t *parts)
{
    size_t len = 0, cap = 256;
    char *buf = td_malloc(cap);
    buf[0] = '\0';
    for (int i = 0; i < parts->cnt; i++) {
        char one[300];
        int n = snprintf(one, sizeof(one), "%s%s[%d]", i ? ", " : "", parts->elems[i].topic,
                         parts->elems[i].partition);
        if (n < 0) continue;
        if (len + (size_t)n + 1 > cap) buf = td_realloc(buf, cap = 2 * (len + (size_t)n + 1));
        memcpy(buf + len, one, (size_t)n + 1);
        len += (size_t)n;
    }
    td_log(level, "consumer %s: %s %d partitions%s%s", cons->group, what, parts->cnt,
           parts->cnt ? ": " : "", buf);
    free(buf);
}

/* Remembers the committed offset of each new partition as the baseline for
 * gap detection: if the first record we get is past it, the records in
 * between were deleted (retention) before we read them. */
static void remember_committed(td_consumer_t *cons, const rd_kafka_topic_partition_list_t *parts)
{
    rd_kafka_topic_partition_list_t *copy = rd_kafka_topic_partition_list_copy(parts);
    rd_kafka_resp_err_t err = rd_kafka_committed(cons->rk, copy, COMMITTED_WAIT);
    if (err) {
        td_warn("consumer %s: cannot read committed offsets (%s); offset gap detection starts "
                "with the first record",
                cons->group, rd_kafka_err2str(err));
    } else {
        for (int i = 0; i < copy->cnt; i++) {
            const rd_kafka_topic_partition_t *tp = &copy->elems[i];
            part_state_t *p = part_find(cons, tp->topic, tp->partition, true);
            p->last = (tp->err == 0 && tp->offset >= 0) ? tp->offset - 1 : -1;
        }
    }
    for (int i = 0; i < parts->cnt; i++)
        part_find(cons, parts->elems[i].topic, parts->elems[i].partition, true)->owned = true;
    rd_kafka_topic_partition_list_destroy(copy);
}

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque)
{
    td_consumer_t *cons = opaque;
    bool cooperative = !strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE");
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        log_parts(cons, TD_LOG_INFO, "assigned", parts);
        if (!cooperative) parts_clear(cons);
        remember_committed(cons, parts);
        rd_kafka_error_t *e = NULL;
        rd_kafka_resp_err_t aerr = RD_KAFKA_RESP_ERR_NO_ERROR;
        if (cooperative)
            e = rd_kafka_incremental_assign(rk, parts);
        else
            aerr = rd_kafka_assign(rk, parts);
        if (e) {
            td_error("consumer %s: assign failed: %s", cons->group, rd_kafka_error_string(e));
            rd_kafka_error_destroy(e);
        } else if (aerr) {
            td_error("consumer %s: assign failed: %s", cons->group, rd_kafka_err2str(aerr));
        } else if (cooperative) {
            atomic_fetch_add(&cons->assigned, parts->cnt);
        } else {
            atomic_store(&cons->assigned, parts->cnt);
        }
        return;
    }
    cons->generation++;
    if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        td_error("consumer %s: rebalance error: %s", cons->group, rd_kafka_err2str(err));
        rd_kafka_assign(rk, NULL);
        atomic_store(&cons->assigned, 0);
        parts_clear(cons);
        return;
    }
    if (rd_kafka_assignment_lost(rk)) {
        /* Another member may own these partitions by now: committing our
         * offsets could move theirs backwards or forwards. Not committing
         * only means a replay, which the inbox absorbs. */
        log_parts(cons, TD_LOG_WARN, "lost (not committing)", parts);
    } else {
        log_parts(cons, TD_LOG_INFO, "revoked", parts);
        rd_kafka_resp_err_t cerr = rd_kafka_commit(rk, NULL, 0);
        if (cerr && cerr != RD_KAFKA_RESP_ERR__NO_OFFSET)
            td_warn("consumer %s: commit at revoke failed: %s", cons->group,
                    rd_kafka_err2str(cerr));
    }
    if (cooperative)
        atomic_fetch_sub(&cons->assigned, parts->cnt);
    else
        atomic_store(&cons->assigned, 0);
    if (cooperative) {
        rd_kafka_error_t *e = rd_kafka_incremental_unassign(rk, parts);
        if (e) rd_kafka_error_destroy(e);
        for (int i = 0; i < parts->cnt; i++) {
            part_state_t *p =
                part_find(cons, parts->elems[i].topic, parts->elems[i].partition, false);
            if (p) {
                p->last = -1;
                p->owned = false;
            }
        }
    } else {
        rd_kafka_assign(rk, NULL);
        parts_clear(cons);
    }
}

static void cons_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    (void)rk;
    td_consumer_t *cons = opaque;
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
        atomic_store(&cons->connected, false);
        td_warn("consumer %s: all brokers are down: %s", cons->group, reason);
    } else if (err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__RESOLVE) {
        td_debug("consumer %s: %s", cons->group, reason);
    } else {
        td_warn("consumer %s: kafka: %s: %s", cons->group, rd_kafka_err2name(err), reason);
    }
}

/* ---- processing -------------------------------------------------------- */

/* What the consumer does with one record of a batch, decided before the
 * transaction from what the record is. */
enum kind {
    K_SKIP,   /* a type this service does not handle: topics are shared */
    K_DLT,    /* not a valid CloudEvent, on the wrong topic, or a bad shape */
    K_HANDLE, /* run its handler */
};

enum result { R_NONE, R_HANDLED, R_DUPLICATE, R_DEAD_LETTERED, R_SKIPPED };

static const char *const result_names[] = {"", "handled", "duplicate", "dead_lettered", "skipped"};

typedef struct item {
    rd_kafka_message_t *msg;
    td_event_t ev; /* borrowed from msg; valid when parsed */
    bool parsed;
    bool redriven; /* has tidings_redriven_from */
    enum kind kind;
    const td_handler_t *h;
    enum result result;
    char why[512]; /* the dead-letter reason */
    char key[600]; /* the inbox key: ce_id, or raw:<topic>:<partition>:<offset> */
} item_t;

struct batch {
    item_t items[TD_CONSUMER_BATCH];
    size_t cnt;
};

static const td_handler_t *find_handler(const td_consumer_t *cons, const char *type)
{
    for (size_t i = 0; i < cons->handler_cnt; i++)
        if (!strcmp(cons->handlers[i].type, type)) return &cons->handlers[i];
    return NULL;
}

static void check_gap(td_consumer_t *cons, const rd_kafka_message_t *msg)
{
    const char *topic = rd_kafka_topic_name(msg->rkt);
    part_state_t *p = part_find(cons, topic, msg->partition, true);
    if (p->last >= 0 && msg->offset > p->last + 1) {
        int64_t lost = msg->offset - p->last - 1;
        td_error("consumer %s: %lld records lost on %s/%d (retention?): offsets %lld..%lld "
                 "were gone before they were read",
                 cons->group, (long long)lost, topic, msg->partition, (long long)(p->last + 1),
                 (long long)(msg->offset - 1));
        char labels[512];
        td_metric_labels(labels, sizeof(labels), "topic", topic, NULL);
        td_metric_add("tidings_consumer_records_lost_total", labels, (double)lost);
    }
    if (msg->offset > p->last) p->last = msg->offset;
}

static void consumer_error(td_consumer_t *cons, const rd_kafka_message_t *msg);

/* The next batch: what one poll hands out (waiting up to POLL_MS for the
 * first record), then whatever is already fetched, up to the bound. Error
 * events are dealt with here and are not part of it. */
static batch_t *collect(td_consumer_t *cons)
{
    batch_t *b = cons->batch;
    b->cnt = 0;
    int generation = cons->generation;
    int wait = POLL_MS;
    while (b->cnt < TD_CONSUMER_BATCH && !atomic_load(&cons->stop)) {
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(cons->rk, wait);
        if (!msg) break;
        wait = 0;
        if (msg->err) {
            consumer_error(cons, msg);
            rd_kafka_message_destroy(msg);
            continue;
        }
        item_t *it = &b->items[b->cnt++];
        memset(it, 0, offsetof(item_t, why));
        it->why[0] = '\0';
        it->msg = msg;
    }
    /* A rebalance inside this poll: records of partitions we no longer own
     * go back (their new owner reads them from the last commit). */
    if (generation != cons->generation) {
        size_t kept = 0;
        for (size_t i = 0; i < b->cnt; i++) {
            item_t *it = &b->items[i];
            const char *topic = rd_kafka_topic_name(it->msg->rkt);
            part_state_t *p = part_find(cons, topic, it->msg->partition, false);
            if (!p || !p->owned) {
                rd_kafka_message_destroy(it->msg);
                continue;
            }
            if (kept != i) b->items[kept] = *it;
            kept++;
        }
        b->cnt = kept;
    }
    return b;
}

static void batch_release(batch_t *b)
{
    for (size_t i = 0; i < b->cnt; i++) {
        td_event_clear(&b->items[i].ev);
        rd_kafka_message_destroy(b->items[i].msg);
    }
    b->cnt = 0;
}

/* Parses a record and decides what to do with it (no database yet). */
static void classify(td_consumer_t *cons, item_t *it)
{
    const rd_kafka_message_t *msg = it->msg;
    const char *topic = rd_kafka_topic_name(msg->rkt);
    check_gap(cons, msg);
    if (cons->skip_header) {
        rd_kafka_headers_t *hdrs = NULL;
        const void *v = NULL;
        size_t len = 0;
        if (rd_kafka_message_headers((rd_kafka_message_t *)msg, &hdrs) == 0 &&
            rd_kafka_header_get_last(hdrs, cons->skip_header, &v, &len) == 0 && v &&
            len == strlen(cons->skip_value) && !memcmp(v, cons->skip_value, len)) {
            it->kind = K_SKIP;
            return;
        }
    }
    {
        rd_kafka_headers_t *hdrs = NULL;
        const void *v = NULL;
        size_t len = 0;
        it->redriven = rd_kafka_message_headers((rd_kafka_message_t *)msg, &hdrs) == 0 &&
                       rd_kafka_header_get_last(hdrs, TD_REDRIVEN_FROM, &v, &len) == 0;
    }
    if (td_event_parse_message(msg, &it->ev, it->why, sizeof(it->why)) != 0) {
        it->kind = K_DLT;
        snprintf(it->key, sizeof(it->key), "raw:%s:%d:%lld", topic, (int)msg->partition,
                 (long long)msg->offset);
        return;
    }
    it->parsed = true;
    snprintf(it->key, sizeof(it->key), "%s", it->ev.id);
    it->h = find_handler(cons, it->ev.type);
    if (!it->h) {
        it->kind = K_SKIP;
        return;
    }
    it->kind = K_DLT;
    /* A catalogued type has one topic; the same type anywhere else is not
     * the event its name says (SPEC section 3), so acting on it would let
     * a stray record reserve stock or charge a payment. */
    const td_event_def_t *def = td_catalog_find(it->ev.type);
    size_t plen = strlen(cons->prefix);
    if (def && (strncmp(topic, cons->prefix, plen) || strcmp(topic + plen, def->topic))) {
        snprintf(it->why, sizeof(it->why), "%s belongs on topic %s%s, not %s", it->ev.type,
                 cons->prefix, def->topic, topic);
        return;
    }
    /* The whole shape, once, before any handler: a handler trusts it. */
    if (def && td_data_check(it->ev.data, def->fields, it->why, sizeof(it->why)) != 0) return;
    it->kind = K_HANDLE;
}

/* Inserts the inbox row; 1 when it was new, 0 when the key was there (a
 * duplicate), TD_EIO. Inside the batch's unit. */
static int inbox_insert(td_db_t *db, const char *key, const char *topic, int outcome, int64_t now)
{
    sqlite3_stmt *st = td_db_prepare(db, "INSERT OR IGNORE INTO td_inbox(event_id, topic,"
                                         " processed_ms, outcome) VALUES(?,?,?,?)");
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, topic, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now);
    sqlite3_bind_int(st, 4, outcome);
    if (td_db_run(db, st) != 0) return TD_EIO;
    return td_db_changes(db) > 0 ? 1 : 0;
}

/* A redriven copy of an event this consumer dead-lettered: its inbox row
 * takes the new outcome, and 1 says "process it"; 0 when the row says the
 * event was handled (or there is none, which inbox_insert then makes). */
static int inbox_redrive(td_db_t *db, const char *key, int outcome, int64_t now)
{
    sqlite3_stmt *st = td_db_prepare(db, "UPDATE td_inbox SET outcome = ?, processed_ms = ?"
                                         " WHERE event_id = ? AND outcome = ?");
    sqlite3_bind_int(st, 1, outcome);
    sqlite3_bind_int64(st, 2, now);
    sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, TD_INBOX_DEAD_LETTERED);
    if (td_db_run(db, st) != 0) return TD_EIO;
    return td_db_changes(db) > 0 ? 1 : 0;
}

/* The record as it came, for the dead-letter copy (the rare path: here
 * the copy is worth it). */
static int dead_letter(td_consumer_t *cons, item_t *it)
{
    td_record_t *rec = td_record_from_kafka(it->msg);
    td_record_t *dlt = rec;
    char *topic = td_asprintf("%s.DLT", rec->topic);
    char num[32];
    td_record_add_header_str(dlt, "tidings_dlt_reason", it->why);
    td_record_add_header_str(dlt, "tidings_dlt_original_topic", rec->topic);
    snprintf(num, sizeof(num), "%d", (int)rec->partition);
    td_record_add_header_str(dlt, "tidings_dlt_original_partition", num);
    snprintf(num, sizeof(num), "%lld", (long long)rec->offset);
    td_record_add_header_str(dlt, "tidings_dlt_original_offset", num);
    free(dlt->topic);
    dlt->topic = topic;
    dlt->partition = -1;
    dlt->offset = -1;
    int rc = td_outbox_add_record(cons->db, dlt);
    td_record_free(dlt);
    return rc;
}

/* A handler refused its event: the batch is run again with that record
 * dead-lettered in place of its effects. */
#define REDO 1

/* One record inside the batch's unit. No savepoint per record (each cost
 * more than the record's own work): when a handler refuses its event, the
 * whole unit is rolled back and run again with that record going to the
 * DLT, so a bad record is still dead-lettered alone and the others keep
 * exactly one effect. 0, REDO, or a transient error that rolls the whole
 * batch back. */
static int process_item(td_consumer_t *cons, item_t *it, int64_t now)
{
    const char *topic = rd_kafka_topic_name(it->msg->rkt);
    int outcome = it->kind == K_DLT ? TD_INBOX_DEAD_LETTERED : TD_INBOX_HANDLED;
    int rc = it->redriven && it->parsed ? inbox_redrive(cons->db, it->key, outcome, now) : 0;
    if (rc == 1 && it->kind == K_HANDLE)
        td_log_event(TD_LOG_INFO, &it->ev,
                     "consumer %s: processing a redriven %s again (it was "
                     "dead-lettered before)",
                     cons->group, it->ev.type);
    if (rc == 0) rc = inbox_insert(cons->db, it->key, topic, outcome, now);
    if (rc < 0) return rc;
    if (rc == 0) {
        it->result = R_DUPLICATE;
        return 0;
    }
    if (it->kind == K_HANDLE) {
        it->why[0] = '\0';
        rc = td__fault("consumer.before_handler")
                 ? TD_EAGAIN
                 : it->h->fn(cons->ctx, cons->db, &it->ev, it->why, sizeof(it->why));
        if (rc == 0 && td__fault("consumer.handler_rejects"))
            rc = td_errf(it->why, sizeof(it->why), TD_EINVAL,
                         "injected fault consumer.handler_rejects");
        if (rc == 0) {
            it->result = R_HANDLED;
            return 0;
        }
        if (rc != TD_EINVAL) {
            td_log_event(TD_LOG_WARN, &it->ev, "consumer %s: %s failed (%s%s%s); will retry",
                         cons->group, it->ev.type, td_strerror(rc), it->why[0] ? ": " : "",
                         it->why);
            return rc;
        }
        /* Permanent: the event is bad. */
        if (!it->why[0]) snprintf(it->why, sizeof(it->why), "the handler rejected the event");
        it->kind = K_DLT;
        return REDO;
    }
    if ((rc = dead_letter(cons, it)) != 0) return rc;
    it->result = R_DEAD_LETTERED;
    return 0;
}

/* The batch's database work in one unit: 0 when committed, REDO, or an
 * error after which nothing of it stays (the batch is retried). */
static int run_unit(td_consumer_t *cons, batch_t *b)
{
    bool any = false;
    for (size_t i = 0; i < b->cnt && !any; i++) any = b->items[i].kind != K_SKIP;
    for (size_t i = 0; i < b->cnt; i++)
        b->items[i].result = b->items[i].kind == K_SKIP ? R_SKIPPED : R_NONE;
    if (!any) return 0;
    if (td_db_begin(cons->db) != 0) return TD_EIO;
    int64_t now = td_now_ms();
    for (size_t i = 0; i < b->cnt; i++) {
        item_t *it = &b->items[i];
        if (it->kind == K_SKIP) continue;
        /* A stop does not wait for a long batch: it is undone and comes
         * again after the restart. */
        if (atomic_load(&cons->stop)) {
            td_db_rollback(cons->db);
            return TD_EAGAIN;
        }
        int rc = process_item(cons, it, now);
        if (rc == 0 && i + 1 < b->cnt && td__fault("consumer.mid_batch")) rc = TD_EAGAIN;
        if (rc != 0) {
            td_db_rollback(cons->db);
            return rc;
        }
    }
    if (td__fault("consumer.before_commit")) {
        td_db_rollback(cons->db);
        return TD_EAGAIN;
    }
    return td_db_commit(cons->db);
}

/* A stateless consumer's batch: valid events go to their handlers with no
 * unit and no inbox (the handler's effects are idempotent by themselves);
 * what cannot be parsed is still dead-lettered, once, through the db. */
static int run_stateless(td_consumer_t *cons, batch_t *b)
{
    bool dlt = false;
    for (size_t i = 0; i < b->cnt; i++) {
        item_t *it = &b->items[i];
        it->result = R_SKIPPED;
        /* Every instance of a service reads a stateless consumer's topic
         * (a group each): an event it cannot use is skipped, or it would be
         * dead-lettered once per instance. */
        if (it->kind == K_DLT && it->parsed) {
            td_log_event(TD_LOG_WARN, &it->ev, "consumer %s: skipping a %s it cannot use: %s",
                         cons->group, it->ev.type, it->why);
            it->kind = K_SKIP;
        }
        if (it->kind == K_DLT) dlt = true;
        if (it->kind != K_HANDLE) continue;
        it->why[0] = '\0';
        int rc = it->h->fn(cons->ctx, NULL, &it->ev, it->why, sizeof(it->why));
        if (rc == 0) {
            it->result = R_HANDLED;
            continue;
        }
        if (rc != TD_EINVAL) return rc;
        td_log_event(TD_LOG_WARN, &it->ev, "consumer %s: skipping a %s it cannot use: %s",
                     cons->group, it->ev.type, it->why);
    }
    if (!dlt || !cons->db) return 0;
    if (td_db_begin(cons->db) != 0) return TD_EIO;
    int64_t now = td_now_ms();
    for (size_t i = 0; i < b->cnt; i++) {
        item_t *it = &b->items[i];
        if (it->kind != K_DLT) continue;
        int rc = process_item(cons, it, now);
        if (rc != 0) {
            td_db_rollback(cons->db);
            return rc;
        }
    }
    return td_db_commit(cons->db);
}

/* Counts, logs and offsets once a batch is done. */
static void batch_done(td_consumer_t *cons, batch_t *b)
{
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)b->cnt);
    for (size_t i = 0; i < b->cnt; i++) {
        item_t *it = &b->items[i];
        const char *topic = rd_kafka_topic_name(it->msg->rkt);
        /* Offsets: the highest of each partition, plus one. */
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_find(l, topic, it->msg->partition);
        if (!tp) tp = rd_kafka_topic_partition_list_add(l, topic, it->msg->partition);
        if (it->msg->offset + 1 > tp->offset) tp->offset = it->msg->offset + 1;

        /* One label for every unhandled type: types are outside input, and
         * a label per type would let anyone grow the metrics without end. */
        const char *type = it->kind == K_SKIP && !it->parsed ? "(own)"
                           : !it->parsed                     ? "(invalid)"
                           : it->h                           ? it->ev.type
                                                             : "(unhandled)";
        if (it->result != R_NONE) count(topic, type, result_names[it->result]);
        if (it->result == R_DEAD_LETTERED) {
            if (it->parsed)
                td_log_event(TD_LOG_WARN, &it->ev, "consumer %s: %s sent to %s.DLT: %s",
                             cons->group, it->ev.type, topic, it->why);
            else
                td_warn("consumer %s: %s/%d@%lld is not a valid CloudEvent, sent to %s.DLT: %s",
                        cons->group, topic, (int)it->msg->partition, (long long)it->msg->offset,
                        topic, it->why);
        } else if (it->result == R_DUPLICATE) {
            td_log_event(TD_LOG_DEBUG, &it->ev, "consumer %s: duplicate event %s skipped",
                         cons->group, it->key);
        }
    }
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(cons->rk, l);
    /* __STATE: a partition was revoked meanwhile; its new owner starts
     * from the last commit and the inbox absorbs the replay. */
    if (err) td_debug("consumer %s: offsets not stored: %s", cons->group, rd_kafka_err2str(err));
    (void)td__fault("consumer.after_offset_store");
    atomic_fetch_add(&cons->processed, (long long)b->cnt);
    rd_kafka_topic_partition_list_destroy(l);
}

/* Runs a batch to completion: done with its offsets stored, or left when
 * the consumer stops before it could finish (no offset moves, so the
 * records come again after the restart). */
static void process_batch(td_consumer_t *cons, batch_t *b)
{
    for (size_t i = 0; i < b->cnt; i++) classify(cons, &b->items[i]);
    int64_t backoff = BACKOFF_MIN_MS;
    int64_t t0 = td_mono_ms();
    for (;;) {
        int rc = cons->stateless ? run_stateless(cons, b) : run_unit(cons, b);
        if (rc == REDO) continue; /* at once: a record is now a dead letter */
        /* Committed, offsets not stored: run it again, and the inbox makes
         * it a row of duplicates whose offsets are stored. */
        if (rc == 0 && td__fault("consumer.after_commit")) rc = TD_EAGAIN;
        if (rc == 0) break;
        for (size_t i = 0; i < b->cnt; i++)
            count(rd_kafka_topic_name(b->items[i].msg->rkt),
                  b->items[i].parsed ? b->items[i].ev.type : "(invalid)", "retried");
        if (atomic_load(&cons->stop)) return;
        cons_sleep(cons, backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        cons_health(cons);
        if (atomic_load(&cons->stop)) return;
    }
    td_debug("consumer %s: batch of %zu in %lld ms", cons->group, b->cnt,
             (long long)(td_mono_ms() - t0));
    batch_done(cons, b);
}

static void consumer_error(td_consumer_t *cons, const rd_kafka_message_t *msg)
{
    const char *topic = msg->rkt ? rd_kafka_topic_name(msg->rkt) : "";
    switch (msg->err) {
    case RD_KAFKA_RESP_ERR__PARTITION_EOF:
        return;
    case RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET:
    case RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE: {
        /* The position we wanted no longer exists: records were deleted
         * before we read them. Never silent. */
        td_error("consumer %s: offset reset on %s/%d: %s (records may be lost)", cons->group, topic,
                 msg->partition, rd_kafka_message_errstr(msg));
        char labels[512];
        td_metric_labels(labels, sizeof(labels), "topic", topic, NULL);
        td_metric_inc("tidings_consumer_offset_resets_total", labels);
        return;
    }
    default:
        td_warn("consumer %s: %s%s%s", cons->group, topic, *topic ? ": " : "",
                rd_kafka_message_errstr(msg));
    }
}

static void *consumer_main(void *arg)
{
    td_consumer_t *cons = arg;
    while (!atomic_load(&cons->stop)) {
        cons_health(cons);
        cons_refresh_lag(cons);
        batch_t *b = collect(cons);
        if (!b->cnt) continue;
        process_batch(cons, b);
        batch_release(b);
    }
    rd_kafka_resp_err_t err = rd_kafka_commit(cons->rk, NULL, 0);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        td_warn("consumer %s: final commit failed: %s", cons->group, rd_kafka_err2str(err));
    err = rd_kafka_consumer_close(cons->rk);
    if (err) td_warn("consumer %s: close: %s", cons->group, rd_kafka_err2str(err));
    return NULL;
}

/* ---- lifecycle --------------------------------------------------------- */

static void consumer_free(td_consumer_t *cons)
{
    if (cons->rk) rd_kafka_destroy(cons->rk);
    for (size_t i = 0; i < cons->topic_cnt; i++) free(cons->topics[i]);
    free(cons->topics);
    for (size_t i = 0; i < cons->handler_cnt; i++) free((char *)cons->handlers[i].type);
    free(cons->handlers);
    parts_clear(cons);
    free(cons->batch);
    free(cons->skip_header);
    free(cons->skip_value);
    free(cons->group);
    free(cons->prefix);
    pthread_cond_destroy(&cons->cv);
    pthread_mutex_destroy(&cons->mu);
    free(cons);
}

/* Retention of the inbox: its rowid follows processing time, so the
 * oldest rows are the first ones and a chunk looks at no more rows than it
 * may delete. */
int td_inbox_prune(td_db_t *db, int64_t cutoff_ms, int64_t *deleted)
{
    return td_db_prune_chunks(db,
                              "DELETE FROM td_inbox WHERE id IN (SELECT id FROM (SELECT id,"
                              " processed_ms FROM td_inbox ORDER BY id LIMIT 2000)"
                              " WHERE processed_ms < ?1)",
                              cutoff_ms, false, deleted);
}

td_consumer_t *td_consumer_start(const td_config_t *cfg, const td_consumer_opts_t *opts,
                                 char *errstr, size_t errlen)
{
    td_consumer_t *cons = td_calloc(1, sizeof(*cons));
    rd_kafka_conf_t *conf = NULL;
    rd_kafka_topic_partition_list_t *subs = NULL;
    char kerr[512], num[32];

    pthread_mutex_init(&cons->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&cons->cv, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&cons->stop, false);
    atomic_init(&cons->connected, false);
    atomic_init(&cons->processed, 0);
    atomic_init(&cons->lag, -1);
    atomic_init(&cons->assigned, 0);
    cons->empty_since = td_mono_ms();
    cons->db = opts->db;
    cons->ctx = opts->ctx;
    cons->stateless = opts->stateless;
    cons->skip_header = opts->skip_value ? td_strdup(opts->skip_header) : NULL;
    cons->skip_value = cons->skip_header ? td_strdup(opts->skip_value) : NULL;
    cons->batch = td_calloc(1, sizeof(*cons->batch));
    cons->group = td_strdup(opts->group);
    cons->prefix = td_strdup(cfg->topic_prefix ? cfg->topic_prefix : "");
    cons->handlers = td_calloc(opts->handler_cnt, sizeof(*cons->handlers));
    cons->handler_cnt = opts->handler_cnt;
    for (size_t i = 0; i < opts->handler_cnt; i++) {
        const td_handler_t *h = &opts->handlers[i];
        cons->handlers[i].type = td_strdup(h->type ? h->type : TD_EV_NAME(h->ev));
        cons->handlers[i].fn = opts->handlers[i].fn;
    }
    cons->topics = td_calloc(opts->topic_cnt, sizeof(*cons->topics));
    cons->topic_cnt = opts->topic_cnt;
    for (size_t i = 0; i < opts->topic_cnt; i++)
        cons->topics[i] = td_topic_name(cfg, opts->topics[i]);

    if (!opts->group || (!opts->db && !opts->stateless) || opts->topic_cnt == 0) {
        td_errf(errstr, errlen, TD_EINVAL, "a consumer needs a group, a database and topics");
        goto fail;
    }
    if (!opts->stateless)
        td_db_prune_add(opts->db, "td_inbox", td_inbox_prune,
                        cfg->inbox_retention_ms > 0 ? cfg->inbox_retention_ms : 0);
    conf = td_kafka_conf(cfg, errstr, errlen);
    if (!conf) goto fail;
    snprintf(num, sizeof(num), "%d", cfg->fetch_wait_ms > 0 ? cfg->fetch_wait_ms : 100);
    if (td_kafka_set(conf, "group.id", opts->group, errstr, errlen) != 0 ||
        td_kafka_set(conf, "enable.auto.offset.store", "false", errstr, errlen) != 0 ||
        td_kafka_set(conf, "enable.auto.commit", "true", errstr, errlen) != 0 ||
        td_kafka_set(conf, "auto.commit.interval.ms", "1000", errstr, errlen) != 0 ||
        td_kafka_set(conf, "auto.offset.reset",
                     opts->offset_reset ? opts->offset_reset : "earliest", errstr, errlen) != 0 ||
        td_kafka_set(conf, "fetch.wait.max.ms", num, errstr, errlen) != 0 ||
        td_kafka_set(conf, "session.timeout.ms", SESSION_TIMEOUT_MS, errstr, errlen) != 0 ||
        td_kafka_set(conf, "heartbeat.interval.ms", HEARTBEAT_MS, errstr, errlen) != 0)
        goto fail;
    rd_kafka_conf_set_rebalance_cb(conf, rebalance_cb);
    rd_kafka_conf_set_error_cb(conf, cons_error_cb);
    rd_kafka_conf_set_opaque(conf, cons);

    cons->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, kerr, sizeof(kerr));
    if (!cons->rk) {
        td_errf(errstr, errlen, TD_EIO, "cannot create consumer %s: %s", opts->group, kerr);
        goto fail;
    }
    conf = NULL; /* now the consumer's */
    rd_kafka_poll_set_consumer(cons->rk);

    subs = rd_kafka_topic_partition_list_new((int)cons->topic_cnt);
    for (size_t i = 0; i < cons->topic_cnt; i++)
        rd_kafka_topic_partition_list_add(subs, cons->topics[i], RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t err = rd_kafka_subscribe(cons->rk, subs);
    rd_kafka_topic_partition_list_destroy(subs);
    if (err) {
        td_errf(errstr, errlen, TD_EIO, "consumer %s cannot subscribe: %s", opts->group,
                rd_kafka_err2str(err));
        goto fail;
    }
    if (pthread_create(&cons->thread, NULL, consumer_main, cons) != 0) {
        td_errf(errstr, errlen, TD_EIO, "cannot start the consumer thread");
        goto fail;
    }

    char labels[256];
    td_metric_labels(labels, sizeof(labels), "group", cons->group, NULL);
    td_metric_describe("tidings_consumer_lag", "gauge",
                       "Records on assigned partitions not yet consumed");
    td_metric_describe("tidings_events_consumed_total", "counter",
                       "Records consumed, by result (handled, duplicate, skipped, "
                       "dead_lettered, retried)");
    td_metric_describe("tidings_consumer_records_lost_total", "counter",
                       "Records deleted from a partition before the consumer read them");
    td_metric_gauge_fn("tidings_consumer_lag", labels, lag_gauge, cons);
    return cons;

fail:
    if (conf) rd_kafka_conf_destroy(conf);
    if (cons->rk) rd_kafka_consumer_close(cons->rk);
    consumer_free(cons);
    return NULL;
}

void td_consumer_stop(td_consumer_t *cons)
{
    if (!cons) return;
    td_metric_unregister(cons);
    pthread_mutex_lock(&cons->mu);
    atomic_store(&cons->stop, true);
    pthread_cond_signal(&cons->cv);
    pthread_mutex_unlock(&cons->mu);
    pthread_join(cons->thread, NULL);
    consumer_free(cons);
}

bool td_consumer_connected(td_consumer_t *cons)
{
    return cons && atomic_load(&cons->connected);
}

int64_t td_consumer_processed(td_consumer_t *cons)
{
    return atomic_load(&cons->processed);
}

int64_t td_consumer_lag(td_consumer_t *cons)
{
    return atomic_load(&cons->lag);
}

bool td_consumer_assigned(td_consumer_t *cons)
{
    return cons && atomic_load(&cons->assigned) > 0;
}
