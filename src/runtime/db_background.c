/* What runs beside a database's writer (tidings/db.h): the checkpoint
 * thread, which copies the WAL back into the database file on a connection
 * of its own so that no commit waits for it, and the retention jobs it
 * runs between checkpoints. */
#include "tidings/db.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "db_internal.h"
#include "tidings/fault.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tidings/uuid.h"

/* ---- retention ---------------------------------------------------------------- */

static int64_t prune_run(td_db_t *db, struct prune_job *job)
{
    int64_t deleted = 0;
    int64_t cutoff = td_now_ms() - job->max_age_ms;
    if (job->fn(db, cutoff, &deleted) != 0)
        td_warn("database %s: retention of %s failed; it is tried again", db->path, job->table);
    if (deleted > 0) {
        char labels[128];
        td_metric_labels(labels, sizeof(labels), "table", job->table, NULL);
        td_metric_add("tidings_retention_deleted_total", labels, (double)deleted);
        td_debug("database %s: retention deleted %lld rows of %s", db->path, (long long)deleted,
                 job->table);
    }
    return deleted;
}

static int64_t prune_due(td_db_t *db, bool all)
{
    int64_t deleted = 0;
    pthread_mutex_lock(&db->prune_mu);
    for (size_t i = 0; i < db->prune_cnt; i++) {
        struct prune_job *job = &db->prunes[i];
        int64_t now = td_mono_ms();
        if (!all && now < job->next_ms) continue;
        deleted += prune_run(db, job);
        job->next_ms = td_mono_ms() + job->interval_ms;
    }
    pthread_mutex_unlock(&db->prune_mu);
    return deleted;
}

void td_db_prune_add(td_db_t *db, const char *table, td_prune_fn fn, int64_t max_age_ms)
{
    static atomic_bool described;
    if (!atomic_exchange(&described, true))
        td_metric_describe("tidings_retention_deleted_total", "counter",
                           "Rows deleted by retention, per table.");
    pthread_mutex_lock(&db->prune_mu);
    size_t i = 0;
    while (i < db->prune_cnt && strcmp(db->prunes[i].table, table)) i++;
    if (max_age_ms <= 0) {
        if (i < db->prune_cnt) db->prunes[i] = db->prunes[--db->prune_cnt];
    } else if (i < db->prune_cnt || db->prune_cnt < MAX_PRUNES) {
        struct prune_job *job = &db->prunes[i];
        if (i == db->prune_cnt) db->prune_cnt++;
        snprintf(job->table, sizeof(job->table), "%s", table);
        job->fn = fn;
        job->max_age_ms = max_age_ms;
        job->interval_ms = max_age_ms / 4;
        if (job->interval_ms < 1000) job->interval_ms = 1000;
        if (job->interval_ms > 60000) job->interval_ms = 60000;
        job->next_ms = td_mono_ms() + job->interval_ms;
    } else {
        td_error("database %s: more than %d retention jobs; %s is kept forever", db->path,
                 MAX_PRUNES, table);
    }
    pthread_mutex_unlock(&db->prune_mu);
}

int64_t td_db_prune_now(td_db_t *db)
{
    return prune_due(db, true);
}

int td_db_prune_chunks(td_db_t *db, const char *sql, int64_t cutoff_ms, bool as_text,
                       int64_t *deleted)
{
    char when[32];
    if (as_text) td_time_format(cutoff_ms, when);
    for (;;) {
        int rc = td_db_begin(db);
        if (rc != 0) return rc;
        sqlite3_stmt *st = td_db_prepare(db, sql);
        if (as_text)
            sqlite3_bind_text(st, 1, when, -1, SQLITE_TRANSIENT);
        else
            sqlite3_bind_int64(st, 1, cutoff_ms);
        rc = td_db_run(db, st);
        int n = rc == 0 ? td_db_changes(db) : 0;
        if (rc != 0) {
            td_db_rollback(db);
            return rc;
        }
        if ((rc = td_db_commit(db)) != 0) return rc;
        *deleted += n;
        if (n < TD_PRUNE_CHUNK) return 0;
    }
}

/* ---- the checkpointer -------------------------------------------------------- */

/* sqlite3_wal_hook of the writer: runs inside each COMMIT. */
static int wal_hook(void *arg, sqlite3 *sq, const char *name, int pages)
{
    (void)sq;
    (void)name;
    td_db_t *db = arg;
    if (pages >= CHECKPOINT_PAGES) td_worker_wake(db->ck_worker);
    return SQLITE_OK;
}

/* With db->mu held and no unit open. */
static void release_caches(td_db_t *db)
{
    sqlite3_db_release_memory(db->w.sq);
    pthread_mutex_lock(&db->rmu);
    for (conn_t *c = db->free_readers; c; c = c->next_free) sqlite3_db_release_memory(c->sq);
    pthread_mutex_unlock(&db->rmu);
    db->ck_released = true;
}

/* When the writer has changed no row for CACHE_IDLE_MS: hands the page
 * caches' memory back (the writer's may hold the whole database, up to its
 * 64 MiB; each idle reader's up to SQLite's default 2 MiB). A busy writer
 * keeps its cache, and the next burst reads its pages back from the OS page
 * cache. An idle service so holds the memory of its open streams, not that
 * of its last burst. Units that change nothing (a sender finding no due
 * row) do not count as activity. */
static void release_idle_caches(td_db_t *db, int64_t now)
{
    if (pthread_mutex_trylock(&db->mu) != 0) return;
    if (!db->tx_open) {
        int64_t changes = sqlite3_total_changes64(db->w.sq);
        if (changes != db->ck_changes) {
            db->ck_changes = changes;
            db->ck_changed_at = now;
            db->ck_released = false;
        } else if (!db->ck_released && now - db->ck_changed_at >= CACHE_IDLE_MS) {
            release_caches(db);
        }
    }
    pthread_mutex_unlock(&db->mu);
}

void td_db_release_memory(td_db_t *db)
{
    if (db->memory || pthread_mutex_trylock(&db->mu) != 0) return;
    if (!db->tx_open) release_caches(db);
    pthread_mutex_unlock(&db->mu);
}

/* A round of the checkpoint worker: when the WAL has grown (woken) or
 * every CHECKPOINT_IDLE_MS, a PASSIVE checkpoint (it copies what no reader
 * still needs and never waits) and the retention jobs that are due. */
static int64_t checkpoint_round(td_worker_t *w, void *arg, bool woken, int64_t now)
{
    (void)w;
    (void)woken;
    td_db_t *db = arg;
    int log = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(db->ck.sq, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    if (rc != SQLITE_OK && rc != SQLITE_BUSY)
        td_warn("database %s: checkpoint failed: %s", db->path, sqlite3_errmsg(db->ck.sq));
    prune_due(db, false);
    release_idle_caches(db, now);
    return now + CHECKPOINT_IDLE_MS;
}

int td__db_checkpointer_start(td_db_t *db, char *errstr, size_t errlen)
{
    if (td__db_conn_open(&db->ck, db->path, false, errstr, errlen) != 0) return TD_EIO;
    td_worker_opts_t wopts = {.name = "checkpoint", .round = checkpoint_round, .arg = db};
    db->ck_worker = td_worker_start(&wopts, errstr, errlen);
    if (!db->ck_worker) return TD_EIO;
    sqlite3_wal_hook(db->w.sq, wal_hook, db);
    return 0;
}

void td__db_checkpointer_stop(td_db_t *db)
{
    /* The hook first: no commit may wake a worker being freed. */
    if (db->w.sq) sqlite3_wal_hook(db->w.sq, NULL, NULL);
    td_worker_stop(db->ck_worker);
    db->ck_worker = NULL;
    td__db_conn_close(&db->ck);
}
