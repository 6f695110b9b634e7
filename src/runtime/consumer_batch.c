/* The consumer's processing (consumer.c has the client, its callbacks and
 * its lifecycle): the consumer thread collects up to batch_max
 * (TD_CONSUMER_BATCH) records, decides what each one is (skip, dead letter, handle), runs them
 * through their handlers in one inbox transaction (or one each, statelessly),
 * and stores the offsets only once that committed. Consumer thread only. */
#include <assert.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "consumer_internal.h"
#include "tidings/bus.h"
#include "tidings/fault.h"
#include "tidings/log.h"
#include "tidings/metrics.h"

/* Records since the last idle_trim that make the next empty poll run one. */
#define TRIM_AFTER 1024
/* A batch this big means a burst: mimalloc's delayed purge again. */
#define BURST_BATCH 64

/* ---- processing -------------------------------------------------------- */

static const char *const result_names[] = {"", "handled", "duplicate", "dead_lettered", "skipped"};

static const td_handler_t *find_handler(const td_consumer_t *cons, const char *type)
{
    for (size_t i = 0; i < cons->handler_cnt; i++)
        if (!strcmp(cons->handlers[i].type, type)) return &cons->handlers[i];
    return NULL;
}

static void check_gap(td_consumer_t *cons, const rd_kafka_message_t *msg)
{
    const char *topic = rd_kafka_topic_name(msg->rkt);
    part_state_t *p = td__cons_part_find(cons, topic, msg->partition, true);
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
    while (b->cnt < cons->batch_max && !atomic_load(&cons->stop)) {
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
            part_state_t *p = td__cons_part_find(cons, topic, it->msg->partition, false);
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
    /* Counted by runs of one (topic, type, result): a batch is mostly one. */
    const char *run_topic = NULL, *run_type = NULL;
    enum result run_result = R_NONE;
    size_t run_n = 0;
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
        if (run_n &&
            (it->result != run_result || strcmp(type, run_type) || strcmp(topic, run_topic))) {
            td__cons_count(run_topic, run_type, result_names[run_result], run_n);
            run_n = 0;
        }
        if (it->result != R_NONE) {
            run_topic = topic;
            run_type = type;
            run_result = it->result;
            run_n++;
        }
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
    if (run_n) td__cons_count(run_topic, run_type, result_names[run_result], run_n);
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
            td__cons_count(rd_kafka_topic_name(b->items[i].msg->rkt),
                           b->items[i].parsed ? b->items[i].ev.type : "(invalid)", "retried", 1);
        if (atomic_load(&cons->stop)) return;
        td__cons_sleep(cons, backoff);
        backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
        td__cons_health(cons);
        if (atomic_load(&cons->stop)) return;
    }
    int64_t ms = td_mono_ms() - t0;
    td_debug("consumer %s: batch of %zu in %lld ms", cons->group, b->cnt, (long long)ms);
    /* Its count is the batches; consumed records over it, their size. */
    char labels[256];
    td_metric_labels(labels, sizeof(labels), "group", cons->group, NULL);
    td_metric_observe("tidings_consumer_batch_seconds", labels, (double)ms / 1000.0);
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

/* mimalloc, when the binary links it (the default build): weak, so the
 * calls are NULL in binaries without it (tests, sanitizers). Its purge of
 * freed pages is delayed (decommit_delay, 25 ms), which keeps a burst
 * from faulting pages in and out (~10 % of its throughput here), but the
 * delayed purge runs only when the same thread allocates again. */
#if __has_include(<mimalloc.h>)
#include <mimalloc.h>
#pragma weak mi_collect
#pragma weak mi_option_set
#define HAVE_MIMALLOC 1
#endif

/* Idle: pages freed from now on go back at once, by every thread. */
static void allocator_idle(bool idle)
{
#ifdef HAVE_MIMALLOC
    static atomic_int state = -1; /* one consumer may go idle as another starts: last wins */
    if (!mi_option_set || atomic_exchange(&state, idle) == idle) return;
    mi_option_set(mi_option_decommit_delay, idle ? 0 : 25);
    if (idle) mi_collect(true);
#else
    (void)idle;
#endif
}

/* The first empty poll (POLL_MS without a record) after TRIM_AFTER or
 * more records: the burst is over, so what it left goes back to the
 * system, from this thread, which allocated most of it (records, parsed
 * events, the pages of the writer's cache): the page caches
 * (td_db_release_memory), glibc's free blocks (malloc_trim), mimalloc's
 * free pages (allocator_idle), and the pages of the batch array the
 * batches touched (~1.3 KiB an item; the next big batch faults them in
 * again). Nothing of it runs while records keep coming. */
static void idle_trim(td_consumer_t *cons)
{
    if (cons->db) td_db_release_memory(cons->db);
    malloc_trim(0);
    allocator_idle(true);
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t used = (cons->trim_used * sizeof(cons->batch->items[0]) + page - 1) / page * page;
    (void)madvise(cons->batch->items, used, MADV_DONTNEED);
    cons->trim_used = 0;
    cons->trim_records = 0;
}

void *td__cons_consumer_main(void *arg)
{
    td_consumer_t *cons = arg;
    while (!atomic_load(&cons->stop)) {
        td__cons_health(cons);
        td__cons_refresh_lag(cons);
        batch_t *b = collect(cons);
        if (!b->cnt) {
            if (cons->trim_records >= TRIM_AFTER) idle_trim(cons);
            continue;
        }
        if (b->cnt >= BURST_BATCH) allocator_idle(false);
        process_batch(cons, b);
        size_t cnt = b->cnt;
        batch_release(b);
        cons->trim_records += cnt;
        if (cnt > cons->trim_used) cons->trim_used = cnt;
    }
    rd_kafka_resp_err_t err = rd_kafka_commit(cons->rk, NULL, 0);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        td_warn("consumer %s: final commit failed: %s", cons->group, rd_kafka_err2str(err));
    err = rd_kafka_consumer_close(cons->rk);
    if (err) td_warn("consumer %s: close: %s", cons->group, rd_kafka_err2str(err));
    return NULL;
}
