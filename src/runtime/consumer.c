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
#include <sys/mman.h>

#include "consumer_internal.h"
#include "tidings/bus.h"
#include "tidings/fault.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
/* ---- small helpers ----------------------------------------------------- */

void td__cons_count(const char *topic, const char *type, const char *result, size_t n)
{
    char labels[768];
    td_metric_labels(labels, sizeof(labels), "topic", topic, "type", type, "result", result, NULL);
    td_metric_add("tidings_events_consumed_total", labels, (double)n);
}

void td__cons_sleep(td_consumer_t *cons, int64_t ms)
{
    int64_t until = td_mono_ms() + ms;
    struct timespec ts = td_mono_timespec(until);
    pthread_mutex_lock(&cons->mu);
    while (!atomic_load(&cons->stop) && td_mono_ms() < until)
        pthread_cond_timedwait(&cons->cv, &cons->mu, &ts);
    pthread_mutex_unlock(&cons->mu);
}

part_state_t *td__cons_part_find(td_consumer_t *cons, const char *topic, int32_t partition,
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

void td__cons_health(td_consumer_t *cons)
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
void td__cons_refresh_lag(td_consumer_t *cons)
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
            const part_state_t *p = td__cons_part_find(cons, tp->topic, tp->partition, false);
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
            part_state_t *p = td__cons_part_find(cons, tp->topic, tp->partition, true);
            p->last = (tp->err == 0 && tp->offset >= 0) ? tp->offset - 1 : -1;
        }
    }
    for (int i = 0; i < parts->cnt; i++)
        td__cons_part_find(cons, parts->elems[i].topic, parts->elems[i].partition, true)->owned =
            true;
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
                td__cons_part_find(cons, parts->elems[i].topic, parts->elems[i].partition, false);
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

/* ---- lifecycle --------------------------------------------------------- */

static void consumer_free(td_consumer_t *cons)
{
    if (cons->rk) rd_kafka_destroy(cons->rk);
    for (size_t i = 0; i < cons->topic_cnt; i++) free(cons->topics[i]);
    free(cons->topics);
    for (size_t i = 0; i < cons->handler_cnt; i++) free((char *)cons->handlers[i].type);
    free(cons->handlers);
    parts_clear(cons);
    if (cons->batch) munmap(cons->batch, sizeof(*cons->batch));
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
    cons->batch_max = opts->batch_max && opts->batch_max < TD_CONSUMER_BATCH ? opts->batch_max
                                                                             : TD_CONSUMER_BATCH;
    cons->skip_header = opts->skip_value ? td_strdup(opts->skip_header) : NULL;
    cons->skip_value = cons->skip_header ? td_strdup(opts->skip_value) : NULL;
    /* Mapped, not calloc'd: the batch is sized for a burst (megabytes),
     * and only the pages of the items a batch uses are ever touched, so an
     * idle service does not carry the whole array (a calloc from the heap
     * zeroes, and so touches, all of it). */
    cons->batch = mmap(NULL, sizeof(*cons->batch), PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (cons->batch == MAP_FAILED) td_oom();
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
    if (pthread_create(&cons->thread, NULL, td__cons_consumer_main, cons) != 0) {
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
    td_metric_describe("tidings_consumer_batch_seconds", "histogram",
                       "Batches done, from the first try of their unit to its commit (retries "
                       "and the WAL sync included)");
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
