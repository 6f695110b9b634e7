/* A service's SQLite database (tidings/db.h): one writer connection whose
 * units share transactions (group commit), a pool of reader connections
 * beside it (WAL: readers see the last commit and never wait for the
 * writer), statements cached per connection, and numbered migrations for
 * the service and for runtime components.
 *
 * Group commit. The writer runs one unit at a time under db->mu. A unit is
 * a SAVEPOINT inside the open transaction (the first unit of a group says
 * BEGIN IMMEDIATE). When a unit ends and other writers are already blocked
 * in td_db_begin, it leaves the transaction open for them, puts a ticket on
 * the group and sleeps; the last unit of the group (no one waiting, or the
 * group big or old enough) says COMMIT and hands its result to every
 * ticket. So under load one fsync (synchronous=FULL) covers many units,
 * and a unit's td_db_commit still returns only when its changes are
 * durable. A unit that fails rolls back to its savepoint and leaves the
 * others' work alone; if SQLite itself aborts the transaction (I/O error,
 * disk full), every unit of the group is told it failed.
 *
 * Which connection a statement runs on is the calling thread's: the writer
 * inside a unit, its reader between td_db_lock and td_db_unlock (kept in a
 * thread-specific slot per database). */
#include "tidings/db.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tidings/fault.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tidings/uuid.h"

#define STMT_CACHE         64 /* statements cached per connection */
#define MAX_HOOKS          16
#define GROUP_MAX_UNITS    64 /* units sharing one COMMIT at most */
#define GROUP_MAX_MS       5  /* and at most this long after its first began */
#define BUSY_TIMEOUT_MS    5000
#define CHECKPOINT_PAGES   1000 /* WAL pages that make a checkpoint due */
#define CHECKPOINT_IDLE_MS 1000
#define NEST_MAX           8 /* units begun inside one held unit at once */
#define MAX_PRUNES         8

typedef struct slot {
    const char *key; /* the sql pointer it was prepared from */
    sqlite3_stmt *st;
    bool busy;
} slot_t;

/* The transaction statements, prepared once per connection: sqlite3_exec
 * would parse them again at every unit and every read. */
static const char *const fixed_sql[] = {
    "BEGIN",          "BEGIN IMMEDIATE",  "COMMIT",           "ROLLBACK",     "SAVEPOINT unit",
    "RELEASE unit",   "ROLLBACK TO unit", "SAVEPOINT part",   "RELEASE part", "ROLLBACK TO part",
    "SAVEPOINT nest", "RELEASE nest",     "ROLLBACK TO nest",
};
#define FIXED_CNT (sizeof(fixed_sql) / sizeof(fixed_sql[0]))

typedef struct conn {
    sqlite3 *sq;
    slot_t cache[STMT_CACHE];
    size_t cache_cnt;
    sqlite3_stmt *fixed[FIXED_CNT];
    struct conn *next_free;
} conn_t;

typedef struct after {
    td_db_after_fn fn;
    void *arg;
} after_t;

/* A unit that ended inside an open group waits on one of these. */
typedef struct ticket {
    struct ticket *next;
    int rc;
    bool done;
} ticket_t;

typedef struct hook {
    td_db_commit_hook_fn fn;
    void *arg;
} hook_t;

struct td_db {
    char *path;
    bool memory; /* no readers, no groups */

    conn_t w;           /* the writer */
    pthread_mutex_t mu; /* the writer and everything below to the readers */
    pthread_cond_t cv;  /* a group committed */
    atomic_int waiting; /* threads blocked in td_db_begin */
    bool tx_open;
    bool group_broken; /* SQLite ended the transaction under us */
    int64_t group_start;
    int group_units;
    uint32_t group_marks;
    ticket_t *tickets;
    /* The unit running now (its thread holds mu). */
    uint32_t unit_marks;
    int sp_depth;
    size_t sp_after[16]; /* after_cnt when each open savepoint began */
    /* Units begun inside the unit of the writer's thread (td__db_hold):
     * depth 1 is the unit itself, each level above a SAVEPOINT nest;
     * nest_after[d] is after_cnt when level d began. 0 outside units. */
    int depth;
    size_t nest_after[NEST_MAX + 1];
    int read_nest; /* td_db_lock calls inside the unit of its thread */
    after_t *afters;
    size_t after_cnt, after_cap;

    pthread_mutex_t hook_mu; /* held while hooks run: see td_db_hook_remove */
    hook_t hooks[MAX_HOOKS];
    int legacy_hook; /* td_db_set_commit_hook's id, -1 when none */

    pthread_mutex_t rmu; /* readers */
    conn_t *free_readers;
    conn_t **readers;
    size_t reader_cnt;

    pthread_key_t cur; /* conn_t *: this thread's connection now */

    /* The checkpointer: copies the WAL back into the database file on a
     * connection of its own, so that no commit waits for it. */
    conn_t ck;
    pthread_t ck_thread;
    bool ck_started, ck_stop, ck_due;
    pthread_mutex_t ck_mu;
    pthread_cond_t ck_cv;
    bool sync_full;

    /* Retention jobs, run by the checkpoint thread (prune_mu: the list,
     * and a run in progress). */
    pthread_mutex_t prune_mu;
    struct prune_job {
        char table[48];
        td_prune_fn fn;
        int64_t max_age_ms, interval_ms, next_ms; /* next: td_mono_ms */
    } prunes[MAX_PRUNES];
    size_t prune_cnt;
};

/* The connections this thread has open sections on, so td_db_done (which
 * gets no db) finds the cache a statement came from. */
#define THREAD_CONNS 4
static __thread conn_t *thread_conns[THREAD_CONNS];

/* The database whose next unit this thread begins is held (td__db_hold). */
static __thread td_db_t *thread_hold;

static void thread_conn_add(conn_t *c)
{
    for (int i = 0; i < THREAD_CONNS; i++)
        if (!thread_conns[i]) {
            thread_conns[i] = c;
            return;
        }
    /* More than four databases open in one thread at once: statements of
     * the extra ones are finalized instead of cached. */
}

static void thread_conn_del(conn_t *c)
{
    for (int i = 0; i < THREAD_CONNS; i++)
        if (thread_conns[i] == c) thread_conns[i] = NULL;
}

/* ---- connections ---------------------------------------------------------- */

static int exec_err(sqlite3 *sq, const char *sql, char *errstr, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(sq, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    td_errf(errstr, errlen, TD_EIO, "%s", msg ? msg : sqlite3_errmsg(sq));
    sqlite3_free(msg);
    return TD_EIO;
}

/* Runs one of fixed_sql on c (sql is one of its entries), else like
 * sqlite3_exec. */
static int conn_exec(conn_t *c, const char *sql)
{
    for (size_t i = 0; i < FIXED_CNT; i++) {
        if (strcmp(sql, fixed_sql[i])) continue;
        if (!c->fixed[i] && sqlite3_prepare_v3(c->sq, sql, -1, SQLITE_PREPARE_PERSISTENT,
                                               &c->fixed[i], NULL) != SQLITE_OK) {
            td_error("database: %s (in: %s)", sqlite3_errmsg(c->sq), sql);
            return TD_EIO;
        }
        int rc = sqlite3_step(c->fixed[i]);
        sqlite3_reset(c->fixed[i]);
        if (rc == SQLITE_DONE) return 0;
        td_error("database: %s (in: %s)", sqlite3_errmsg(c->sq), sql);
        return TD_EIO;
    }
    char *msg = NULL;
    if (sqlite3_exec(c->sq, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    td_error("database: %s (in: %.200s)", msg ? msg : sqlite3_errmsg(c->sq), sql);
    sqlite3_free(msg);
    return TD_EIO;
}

/* Resets every statement of c still handed out: a section's end never
 * leaves one stepping (which would keep its transaction alive). */
static void conn_reset_busy(conn_t *c)
{
    for (size_t i = 0; i < c->cache_cnt; i++)
        if (c->cache[i].busy) {
            sqlite3_reset(c->cache[i].st);
            sqlite3_clear_bindings(c->cache[i].st);
            c->cache[i].busy = false;
        }
}

static void conn_close(conn_t *c)
{
    for (size_t i = 0; i < FIXED_CNT; i++) {
        sqlite3_finalize(c->fixed[i]);
        c->fixed[i] = NULL;
    }
    for (size_t i = 0; i < c->cache_cnt; i++) sqlite3_finalize(c->cache[i].st);
    c->cache_cnt = 0;
    if (c->sq) sqlite3_close_v2(c->sq);
    c->sq = NULL;
}

static int conn_open(conn_t *c, const char *path, bool reader, char *errstr, size_t errlen)
{
    int rc = sqlite3_open_v2(
        path, &c->sq, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK)
        return td_errf(errstr, errlen, TD_EIO, "cannot open database %s: %s", path,
                       c->sq ? sqlite3_errmsg(c->sq) : sqlite3_errstr(rc));
    sqlite3_extended_result_codes(c->sq, 1);
    sqlite3_busy_timeout(c->sq, BUSY_TIMEOUT_MS);
    char msg[512];
    /* A reader may not write: a write there would be outside every unit.
     * The writer: a page cache that holds a whole batch (SQLite spills
     * dirty pages to the WAL mid-transaction when it is full, a pwrite per
     * page; the cache is virtual until used), savepoint journals in memory
     * (a consumer's batch is a savepoint per record), and no checkpoints
     * on the commit path (the checkpointer thread does them beside it). */
    const char *pragmas = reader ? "PRAGMA query_only=1;"
                                 : "PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;"
                                   " PRAGMA cache_size=-65536; PRAGMA temp_store=MEMORY;"
                                   " PRAGMA wal_autocheckpoint=0;";
    if (exec_err(c->sq, pragmas, msg, sizeof(msg)) != 0)
        return td_errf(errstr, errlen, TD_EIO, "database %s: %s", path, msg);
    return 0;
}

static conn_t *current(td_db_t *db)
{
    conn_t *c = pthread_getspecific(db->cur);
    /* A statement outside a unit or a read has no connection to run on. */
    assert(c && "database used outside td_db_begin/commit and td_db_lock/unlock");
    return c;
}

/* ---- migrations ------------------------------------------------------------ */

static int user_version(sqlite3 *sq, int *out)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sq, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) return TD_EIO;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : TD_EIO;
}

static int component_version(sqlite3 *sq, const char *name, int *out)
{
    sqlite3_stmt *st = NULL;
    *out = 0;
    if (sqlite3_prepare_v2(sq, "SELECT version FROM td_schema WHERE name = ?", -1, &st, NULL) !=
        SQLITE_OK)
        return TD_EIO;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : TD_EIO;
}

/* Applies migs above the version read by `have`; each migration and its
 * version bump (bump_fmt with the version) in one transaction, so a crash
 * never leaves a half-applied version that would be skipped next time. */
static int migrate(sqlite3 *sq, const char *what, int have, const td_migration_t *migs,
                   size_t mig_cnt, const char *name, char *errstr, size_t errlen)
{
    int prev = 0;
    for (size_t i = 0; i < mig_cnt; i++) {
        const td_migration_t *m = &migs[i];
        if (m->version <= prev)
            return td_errf(errstr, errlen, TD_EINVAL, "%s versions must increase (%d after %d)",
                           what, m->version, prev);
        prev = m->version;
        if (m->version <= have) continue;
        char msg[512], bump[160];
        if (name)
            snprintf(bump, sizeof(bump),
                     "INSERT INTO td_schema(name, version) VALUES('%s', %d)"
                     " ON CONFLICT(name) DO UPDATE SET version = excluded.version",
                     name, m->version);
        else
            snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", m->version);
        if (exec_err(sq, "BEGIN IMMEDIATE", msg, sizeof(msg)) != 0)
            return td_errf(errstr, errlen, TD_EIO, "%s %d: %s", what, m->version, msg);
        if (exec_err(sq, m->sql, msg, sizeof(msg)) != 0 ||
            exec_err(sq, bump, msg, sizeof(msg)) != 0 ||
            exec_err(sq, "COMMIT", msg, sizeof(msg)) != 0) {
            sqlite3_exec(sq, "ROLLBACK", NULL, NULL, NULL);
            return td_errf(errstr, errlen, TD_EIO, "%s %d: %s", what, m->version, msg);
        }
        td_debug("database: %s migrated to version %d", what, m->version);
        have = m->version;
    }
    return 0;
}

int td_db_migrate(td_db_t *db, const char *name, const td_migration_t *migs, size_t mig_cnt,
                  char *errstr, size_t errlen)
{
    char msg[512];
    int have = 0;
    pthread_mutex_lock(&db->mu);
    assert(!db->tx_open);
    int rc = exec_err(db->w.sq,
                      "CREATE TABLE IF NOT EXISTS td_schema ("
                      " name TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID",
                      msg, sizeof(msg));
    if (rc == 0) rc = component_version(db->w.sq, name, &have);
    if (rc != 0)
        td_errf(errstr, errlen, TD_EIO, "database %s: schema of %s: %s", db->path, name,
                rc ? sqlite3_errmsg(db->w.sq) : msg);
    else {
        char what[96];
        snprintf(what, sizeof(what), "%s migration", name);
        rc = migrate(db->w.sq, what, have, migs, mig_cnt, name, errstr, errlen);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

/* The runtime's own tables. Version 1 is the first release's outbox and
 * inbox (created only where missing, so an old database keeps its rows);
 * version 2 gives the inbox a time-ordered rowid, so the oldest rows are
 * pruned without an index on time, and the outcome a redrive looks at. */
static const td_migration_t runtime_migrations[] = {
    {1, "CREATE TABLE IF NOT EXISTS td_outbox ("
        " id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " topic TEXT NOT NULL,"
        " key BLOB,"
        " value BLOB,"
        " headers BLOB,"
        " created_ms INTEGER NOT NULL);"
        "CREATE TABLE IF NOT EXISTS td_inbox ("
        " event_id TEXT PRIMARY KEY,"
        " topic TEXT NOT NULL,"
        " processed_ms INTEGER NOT NULL);"},
    {2, "CREATE TABLE td_inbox2 ("
        " id INTEGER PRIMARY KEY,"
        " event_id TEXT NOT NULL UNIQUE,"
        " topic TEXT NOT NULL,"
        " processed_ms INTEGER NOT NULL,"
        " outcome INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO td_inbox2(event_id, topic, processed_ms)"
        " SELECT event_id, topic, processed_ms FROM td_inbox ORDER BY processed_ms;"
        "DROP TABLE td_inbox;"
        "ALTER TABLE td_inbox2 RENAME TO td_inbox;"},
};

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
    if (pages >= CHECKPOINT_PAGES) {
        pthread_mutex_lock(&db->ck_mu);
        if (!db->ck_due) {
            db->ck_due = true;
            pthread_cond_signal(&db->ck_cv);
        }
        pthread_mutex_unlock(&db->ck_mu);
    }
    return SQLITE_OK;
}

static void *checkpoint_main(void *arg)
{
    td_db_t *db = arg;
    pthread_mutex_lock(&db->ck_mu);
    while (!db->ck_stop) {
        if (!db->ck_due) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += CHECKPOINT_IDLE_MS / 1000;
            pthread_cond_timedwait(&db->ck_cv, &db->ck_mu, &ts);
            if (db->ck_stop) break;
        }
        db->ck_due = false;
        pthread_mutex_unlock(&db->ck_mu);
        /* PASSIVE: copies what no reader still needs, never waits. */
        int log = 0, done = 0;
        int rc = sqlite3_wal_checkpoint_v2(db->ck.sq, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            td_warn("database %s: checkpoint failed: %s", db->path, sqlite3_errmsg(db->ck.sq));
        prune_due(db, false);
        pthread_mutex_lock(&db->ck_mu);
    }
    pthread_mutex_unlock(&db->ck_mu);
    return NULL;
}

static int checkpointer_start(td_db_t *db, char *errstr, size_t errlen)
{
    if (conn_open(&db->ck, db->path, false, errstr, errlen) != 0) return TD_EIO;
    sqlite3_wal_hook(db->w.sq, wal_hook, db);
    if (pthread_create(&db->ck_thread, NULL, checkpoint_main, db) != 0)
        return td_errf(errstr, errlen, TD_EIO, "cannot start the checkpoint thread");
    db->ck_started = true;
    return 0;
}

static void checkpointer_stop(td_db_t *db)
{
    if (db->ck_started) {
        pthread_mutex_lock(&db->ck_mu);
        db->ck_stop = true;
        pthread_cond_signal(&db->ck_cv);
        pthread_mutex_unlock(&db->ck_mu);
        pthread_join(db->ck_thread, NULL);
        db->ck_started = false;
    }
    if (db->w.sq) sqlite3_wal_hook(db->w.sq, NULL, NULL);
    conn_close(&db->ck);
}

/* ---- open and close ---------------------------------------------------------- */

td_db_t *td_db_open(const char *path, const td_migration_t *migs, size_t mig_cnt, char *errstr,
                    size_t errlen)
{
    td_db_t *db = td_calloc(1, sizeof(*db));
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->cv, NULL);
    pthread_mutex_init(&db->hook_mu, NULL);
    pthread_mutex_init(&db->rmu, NULL);
    pthread_key_create(&db->cur, NULL);
    pthread_mutex_init(&db->ck_mu, NULL);
    pthread_cond_init(&db->ck_cv, NULL);
    pthread_mutex_init(&db->prune_mu, NULL);
    atomic_init(&db->waiting, 0);
    db->legacy_hook = -1;
    db->path = td_strdup(path);
    db->memory = !strcmp(path, ":memory:") || !strncmp(path, "file::memory:", 13);
    db->sync_full = true;
    char msg[512];
    int have = 0;

    if (conn_open(&db->w, path, false, errstr, errlen) != 0) goto fail;
    if (exec_err(db->w.sq, "PRAGMA synchronous=FULL", msg, sizeof(msg)) != 0) {
        td_errf(errstr, errlen, TD_EIO, "database %s: %s", path, msg);
        goto fail;
    }
    if (td_db_migrate(db, "runtime", runtime_migrations, TD_ARRAY_SIZE(runtime_migrations), errstr,
                      errlen) != 0)
        goto fail;
    if (user_version(db->w.sq, &have) != 0) {
        td_errf(errstr, errlen, TD_EIO, "database %s: reading user_version: %s", path,
                sqlite3_errmsg(db->w.sq));
        goto fail;
    }
    if (migrate(db->w.sq, "migration", have, migs, mig_cnt, NULL, msg, sizeof(msg)) != 0) {
        td_errf(errstr, errlen, TD_EIO, "database %s: %s", path, msg);
        goto fail;
    }
    if (!db->memory && checkpointer_start(db, errstr, errlen) != 0) goto fail;
    return db;

fail:
    td_db_close(db);
    return NULL;
}

void td_db_set_full_sync(td_db_t *db, bool full)
{
    pthread_mutex_lock(&db->mu);
    assert(!db->tx_open);
    db->sync_full = full;
    conn_exec(&db->w, full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    pthread_mutex_unlock(&db->mu);
}

void td_db_close(td_db_t *db)
{
    if (!db) return;
    assert(!db->tx_open && !db->tickets);
    checkpointer_stop(db);
    for (size_t i = 0; i < db->reader_cnt; i++) {
        conn_close(db->readers[i]);
        free(db->readers[i]);
    }
    free(db->readers);
    conn_close(&db->w);
    free(db->afters);
    free(db->path);
    pthread_key_delete(db->cur);
    pthread_cond_destroy(&db->ck_cv);
    pthread_mutex_destroy(&db->ck_mu);
    pthread_mutex_destroy(&db->prune_mu);
    pthread_mutex_destroy(&db->rmu);
    pthread_mutex_destroy(&db->hook_mu);
    pthread_cond_destroy(&db->cv);
    pthread_mutex_destroy(&db->mu);
    free(db);
}

sqlite3 *td_db_sqlite(td_db_t *db)
{
    return current(db)->sq;
}

bool td__db_in_unit(td_db_t *db)
{
    return pthread_getspecific(db->cur) == &db->w && db->tx_open;
}

/* ---- units and groups ------------------------------------------------------- */

/* Tells the callbacks registered since after_cnt was from that their
 * changes will not commit, and forgets them. */
static void afters_cancel_from(td_db_t *db, size_t from)
{
    for (size_t i = from; i < db->after_cnt; i++) db->afters[i].fn(db->afters[i].arg, false);
    db->after_cnt = from;
}

static void set_current(td_db_t *db, conn_t *c)
{
    conn_t *old = pthread_getspecific(db->cur);
    if (old) thread_conn_del(old);
    pthread_setspecific(db->cur, c);
    if (c) thread_conn_add(c);
}

void td__db_hold(td_db_t *db)
{
    thread_hold = db;
}

/* A unit begun inside the unit this thread holds: a savepoint of it. */
static int nest_begin(td_db_t *db)
{
    assert(db->depth >= 1 && db->depth < NEST_MAX);
    if (conn_exec(&db->w, "SAVEPOINT nest") != 0) return TD_EIO;
    db->nest_after[++db->depth] = db->after_cnt;
    return 0;
}

static void nest_rollback(td_db_t *db)
{
    assert(db->depth > 1);
    size_t from = db->nest_after[db->depth--];
    afters_cancel_from(db, from);
    conn_reset_busy(&db->w);
    if (!sqlite3_get_autocommit(db->w.sq) &&
        (conn_exec(&db->w, "ROLLBACK TO nest") != 0 || conn_exec(&db->w, "RELEASE nest") != 0))
        db->group_broken = true;
}

int td_db_begin(td_db_t *db)
{
    if (pthread_getspecific(db->cur) == &db->w && db->depth > 0) return nest_begin(db);
    /* Units do not nest (but inside a held one), and a read of this thread
     * would see none of the unit's rows: both are bugs of the caller. */
    assert(!pthread_getspecific(db->cur));
    atomic_fetch_add(&db->waiting, 1);
    pthread_mutex_lock(&db->mu);
    atomic_fetch_sub(&db->waiting, 1);
    if (!db->tx_open) {
        if (conn_exec(&db->w, "BEGIN IMMEDIATE") != 0) {
            pthread_mutex_unlock(&db->mu);
            return TD_EIO;
        }
        db->tx_open = true;
        db->group_broken = false;
        db->group_start = td_mono_ms();
        db->group_units = 0;
        db->group_marks = 0;
    }
    db->unit_marks = 0;
    db->sp_depth = 0;
    db->after_cnt = 0;
    db->depth = 1;
    db->read_nest = 0;
    set_current(db, &db->w);
    if (conn_exec(&db->w, "SAVEPOINT unit") != 0) {
        td_db_rollback(db);
        return TD_EIO;
    }
    if (thread_hold == db) {
        /* The holder ends the unit; this caller's commit only ends the
         * savepoint it gets. */
        thread_hold = NULL;
        if (nest_begin(db) != 0) {
            td_db_rollback(db);
            return TD_EIO;
        }
    }
    return 0;
}

/* Runs the hooks marked in marks. Outside db->mu. */
static void run_hooks(td_db_t *db, uint32_t marks)
{
    pthread_mutex_lock(&db->hook_mu);
    for (int i = 0; i < MAX_HOOKS; i++)
        if ((marks & (1u << i)) && db->hooks[i].fn) db->hooks[i].fn(db->hooks[i].arg);
    pthread_mutex_unlock(&db->hook_mu);
}

/* Ends the group if this unit is its last, else waits for the group's
 * COMMIT (unit_ok) or just leaves (a failed unit has nothing to wait for).
 * Called with db->mu held; returns with it released. The result: 0 when
 * the unit's changes are committed. */
static int finish_unit(td_db_t *db, bool unit_ok)
{
    bool leave_open = !db->memory && !db->group_broken && atomic_load(&db->waiting) > 0 &&
                      db->group_units < GROUP_MAX_UNITS &&
                      td_mono_ms() - db->group_start < GROUP_MAX_MS;
    if (leave_open) {
        if (!unit_ok) {
            pthread_mutex_unlock(&db->mu);
            return TD_EIO;
        }
        ticket_t t = {.next = db->tickets, .rc = TD_EIO, .done = false};
        db->tickets = &t;
        while (!t.done) pthread_cond_wait(&db->cv, &db->mu);
        pthread_mutex_unlock(&db->mu);
        return t.rc;
    }

    int grc = 0;
    uint32_t marks = db->group_marks;
    if (db->group_broken) {
        grc = TD_EIO;
    } else if (db->group_units == 0) {
        /* Nothing to keep: ending the transaction writes nothing. */
        conn_exec(&db->w, "ROLLBACK");
    } else if (conn_exec(&db->w, "COMMIT") != 0) {
        td_error("database commit failed: %s", sqlite3_errmsg(db->w.sq));
        if (!sqlite3_get_autocommit(db->w.sq)) conn_exec(&db->w, "ROLLBACK");
        grc = TD_EIO;
    }
    if (grc) marks = 0;
    db->tx_open = false;
    for (ticket_t *t = db->tickets; t; t = t->next) {
        t->rc = grc;
        t->done = true;
    }
    db->tickets = NULL;
    pthread_cond_broadcast(&db->cv);
    pthread_mutex_unlock(&db->mu);
    if (marks) run_hooks(db, marks);
    return unit_ok ? grc : TD_EIO;
}

/* Takes the unit's after-commit callbacks out of db (they run once the
 * unit is known committed, outside the lock). */
static after_t *take_afters(td_db_t *db, size_t *cnt)
{
    *cnt = db->after_cnt;
    if (!db->after_cnt) return NULL;
    after_t *a = td_malloc(db->after_cnt * sizeof(*a));
    memcpy(a, db->afters, db->after_cnt * sizeof(*a));
    db->after_cnt = 0;
    return a;
}

/* Tells the callbacks from..cnt that their changes did not commit. */
static void afters_cancel(after_t *a, size_t cnt)
{
    for (size_t i = 0; i < cnt; i++) a[i].fn(a[i].arg, false);
}

static void unit_undo(td_db_t *db)
{
    conn_reset_busy(&db->w);
    if (!sqlite3_get_autocommit(db->w.sq) &&
        (conn_exec(&db->w, "ROLLBACK TO unit") != 0 || conn_exec(&db->w, "RELEASE unit") != 0))
        db->group_broken = true;
}

int td_db_commit(td_db_t *db)
{
    assert(td__db_in_unit(db));
    if (db->depth > 1) {
        conn_reset_busy(&db->w);
        if (conn_exec(&db->w, "RELEASE nest") != 0) {
            nest_rollback(db);
            return TD_EIO;
        }
        db->depth--;
        return 0;
    }
    db->depth = 0;
    bool ok = !td__fault("db.before_commit");
    if (!ok) td_error("database commit failed: injected fault db.before_commit");
    conn_reset_busy(&db->w);
    if (ok && conn_exec(&db->w, "RELEASE unit") != 0) ok = false;
    if (!ok) unit_undo(db);
    /* SQLite ends a transaction by itself on some errors (I/O, full disk):
     * then the group's earlier units are gone too. */
    if (sqlite3_get_autocommit(db->w.sq)) db->group_broken = true;
    if (ok && !db->group_broken) {
        db->group_units++;
        db->group_marks |= db->unit_marks;
    }
    size_t after_cnt;
    after_t *afters = take_afters(db, &after_cnt);
    set_current(db, NULL);
    int rc = finish_unit(db, ok && !db->group_broken);
    /* Committed (or not) as a whole, whatever td_db_commit reports. */
    for (size_t i = 0; i < after_cnt; i++) afters[i].fn(afters[i].arg, rc == 0);
    free(afters);
    if (rc == 0 && td__fault("db.after_commit")) rc = TD_EIO; /* committed, reported failed */
    return rc;
}

void td_db_rollback(td_db_t *db)
{
    assert(pthread_getspecific(db->cur) == &db->w);
    if (db->depth > 1) {
        nest_rollback(db);
        return;
    }
    db->depth = 0;
    unit_undo(db);
    if (sqlite3_get_autocommit(db->w.sq)) db->group_broken = true;
    size_t after_cnt;
    after_t *afters = take_afters(db, &after_cnt);
    set_current(db, NULL);
    (void)finish_unit(db, false);
    afters_cancel(afters, after_cnt);
    free(afters);
}

int td_db_savepoint(td_db_t *db)
{
    assert(td__db_in_unit(db));
    assert(db->sp_depth < (int)TD_ARRAY_SIZE(db->sp_after));
    if (conn_exec(&db->w, "SAVEPOINT part") != 0) return TD_EIO;
    db->sp_after[db->sp_depth++] = db->after_cnt;
    return 0;
}

int td_db_savepoint_release(td_db_t *db)
{
    assert(td__db_in_unit(db) && db->sp_depth > 0);
    db->sp_depth--;
    conn_reset_busy(&db->w);
    return conn_exec(&db->w, "RELEASE part");
}

void td_db_savepoint_rollback(td_db_t *db)
{
    assert(td__db_in_unit(db) && db->sp_depth > 0);
    db->sp_depth--;
    /* What the undone part registered will never commit. (Called with the
     * writer held; the callbacks only free or queue, by contract.) */
    size_t from = db->sp_after[db->sp_depth];
    afters_cancel(db->afters + from, db->after_cnt - from);
    db->after_cnt = from;
    conn_reset_busy(&db->w);
    if (!sqlite3_get_autocommit(db->w.sq) &&
        (conn_exec(&db->w, "ROLLBACK TO part") != 0 || conn_exec(&db->w, "RELEASE part") != 0))
        db->group_broken = true;
}

void td_db_after_commit(td_db_t *db, td_db_after_fn fn, void *arg)
{
    assert(td__db_in_unit(db));
    if (db->after_cnt == db->after_cap) {
        db->after_cap = db->after_cap ? db->after_cap * 2 : 16;
        db->afters = td_realloc(db->afters, db->after_cap * sizeof(*db->afters));
    }
    db->afters[db->after_cnt++] = (after_t){fn, arg};
}

/* ---- reads -------------------------------------------------------------------- */

static conn_t *reader_get(td_db_t *db)
{
    pthread_mutex_lock(&db->rmu);
    conn_t *c = db->free_readers;
    if (c) db->free_readers = c->next_free;
    pthread_mutex_unlock(&db->rmu);
    if (c) return c;
    c = td_calloc(1, sizeof(*c));
    char err[512];
    if (conn_open(c, db->path, true, err, sizeof(err)) != 0) {
        /* The writer opened the same file a moment ago: out of memory or
         * file descriptors, both fatal to the service. */
        td_error("%s", err);
        td_oom();
    }
    pthread_mutex_lock(&db->rmu);
    db->readers = td_realloc(db->readers, (db->reader_cnt + 1) * sizeof(*db->readers));
    db->readers[db->reader_cnt++] = c;
    pthread_mutex_unlock(&db->rmu);
    return c;
}

void td_db_lock(td_db_t *db)
{
    /* Inside the held unit of this thread: read on the writer, which sees
     * the unit's own rows. */
    if (pthread_getspecific(db->cur) == &db->w && db->depth > 0) {
        db->read_nest++;
        return;
    }
    assert(!pthread_getspecific(db->cur));
    if (db->memory) {
        pthread_mutex_lock(&db->mu);
        set_current(db, &db->w);
        return;
    }
    conn_t *c = reader_get(db);
    set_current(db, c);
    /* One read transaction: every statement until unlock sees the same
     * committed state. */
    conn_exec(c, "BEGIN");
}

void td_db_unlock(td_db_t *db)
{
    conn_t *c = pthread_getspecific(db->cur);
    assert(c);
    if (c == &db->w && db->depth > 0) {
        assert(db->read_nest > 0);
        db->read_nest--;
        return;
    }
    conn_reset_busy(c);
    set_current(db, NULL);
    if (db->memory) {
        pthread_mutex_unlock(&db->mu);
        return;
    }
    if (!sqlite3_get_autocommit(c->sq)) conn_exec(c, "COMMIT");
    pthread_mutex_lock(&db->rmu);
    c->next_free = db->free_readers;
    db->free_readers = c;
    pthread_mutex_unlock(&db->rmu);
}

/* ---- statements ---------------------------------------------------------------- */

int td_db_exec(td_db_t *db, const char *sql)
{
    return conn_exec(current(db), sql);
}

sqlite3_stmt *td_db_prepare(td_db_t *db, const char *sql)
{
    conn_t *c = current(db);
    for (size_t i = 0; i < c->cache_cnt; i++) {
        slot_t *s = &c->cache[i];
        /* The pointer finds it; the text proves it (a freed string's
         * address may come back holding other SQL). */
        if (s->key == sql && !s->busy && !strcmp(sqlite3_sql(s->st), sql)) {
            s->busy = true;
            return s->st;
        }
    }
    sqlite3_stmt *st = NULL;
    bool cache = c->cache_cnt < STMT_CACHE;
    if (sqlite3_prepare_v3(c->sq, sql, -1, cache ? SQLITE_PREPARE_PERSISTENT : 0, &st, NULL) !=
        SQLITE_OK) {
        /* The SQL is a constant in the code: a prepare error is a bug. */
        fprintf(stderr, "tidings: cannot prepare SQL: %s\n  %s\n", sqlite3_errmsg(c->sq), sql);
        abort();
    }
    if (cache) c->cache[c->cache_cnt++] = (slot_t){.key = sql, .st = st, .busy = true};
    return st;
}

void td_db_done(sqlite3_stmt *stmt)
{
    if (!stmt) return;
    sqlite3 *sq = sqlite3_db_handle(stmt);
    for (int t = 0; t < THREAD_CONNS; t++) {
        conn_t *c = thread_conns[t];
        if (!c || c->sq != sq) continue;
        for (size_t i = 0; i < c->cache_cnt; i++)
            if (c->cache[i].st == stmt) {
                sqlite3_reset(stmt);
                sqlite3_clear_bindings(stmt);
                c->cache[i].busy = false;
                return;
            }
    }
    sqlite3_finalize(stmt);
}

int td_db_run(td_db_t *db, sqlite3_stmt *stmt)
{
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    }
    int out = 0;
    if (rc != SQLITE_DONE) {
        if ((rc & 0xff) == SQLITE_CONSTRAINT) {
            out = TD_EEXIST;
        } else {
            td_error("database: %s (in: %.200s)", sqlite3_errmsg(current(db)->sq),
                     sqlite3_sql(stmt));
            out = TD_EIO;
        }
    }
    td_db_done(stmt);
    return out;
}

int td_db_changes(td_db_t *db)
{
    return sqlite3_changes(current(db)->sq);
}

bool td_db_ping(td_db_t *db)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, "SELECT 1");
    bool ok = sqlite3_step(st) == SQLITE_ROW;
    td_db_done(st);
    td_db_unlock(db);
    return ok;
}

/* ---- commit hooks --------------------------------------------------------------- */

int td_db_hook_add(td_db_t *db, td_db_commit_hook_fn fn, void *arg)
{
    pthread_mutex_lock(&db->hook_mu);
    int id = -1;
    for (int i = 0; i < MAX_HOOKS && id < 0; i++)
        if (!db->hooks[i].fn) id = i;
    assert(id >= 0 && "more than 16 commit hooks on one database");
    if (id >= 0) db->hooks[id] = (hook_t){fn, arg};
    pthread_mutex_unlock(&db->hook_mu);
    return id;
}

void td_db_hook_remove(td_db_t *db, int id)
{
    if (id < 0 || id >= MAX_HOOKS) return;
    /* hook_mu is held while hooks run: once we hold it, none of this
     * hook's calls is still running, and none starts after. */
    pthread_mutex_lock(&db->hook_mu);
    db->hooks[id] = (hook_t){NULL, NULL};
    pthread_mutex_unlock(&db->hook_mu);
}

void td_db_mark(td_db_t *db, int id)
{
    assert(td__db_in_unit(db));
    if (id >= 0 && id < MAX_HOOKS) db->unit_marks |= 1u << id;
}

void td_db_set_commit_hook(td_db_t *db, td_db_commit_hook_fn fn, void *arg)
{
    if (db->legacy_hook >= 0) td_db_hook_remove(db, db->legacy_hook);
    db->legacy_hook = fn ? td_db_hook_add(db, fn, arg) : -1;
}

void td__db_mark_dirty(td_db_t *db)
{
    td_db_mark(db, db->legacy_hook);
}
