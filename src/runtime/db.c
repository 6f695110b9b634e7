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
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "db_internal.h"
#include "tidings/fault.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tidings/uuid.h"

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

int td__db_exec_err(sqlite3 *sq, const char *sql, char *errstr, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(sq, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    td_errf(errstr, errlen, TD_EIO, "%s", msg ? msg : sqlite3_errmsg(sq));
    sqlite3_free(msg);
    return TD_EIO;
}

/* Runs one of fixed_sql on c (sql is one of its entries), else like
 * sqlite3_exec. */
int td__db_conn_exec(conn_t *c, const char *sql)
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

void td__db_conn_close(conn_t *c)
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

int td__db_conn_open(conn_t *c, const char *path, bool reader, char *errstr, size_t errlen)
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
    if (td__db_exec_err(c->sq, pragmas, msg, sizeof(msg)) != 0)
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

/* ---- open and close ---------------------------------------------------------- */

/* Opens the WAL file for the syncs after COMMIT (durable_wait) and turns
 * the writer's own sync at COMMIT off. SQLite keeps no lock on the WAL
 * file (its locks are on the database and the -shm), so a descriptor of
 * our own closes safely; fsync of any descriptor flushes the file. When
 * it cannot be opened, the writer stays synchronous=FULL. */
static void wal_sync_open(td_db_t *db)
{
    char *wal = td_asprintf("%s-wal", db->path);
    int fd = open(wal, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        td_debug("database %s: %s: %s; COMMIT syncs itself", db->path, wal, strerror(errno));
    } else if (fdatasync(fd) != 0) {
        /* A file system that cannot sync this way: SQLite's own then. */
        td_debug("database %s: fdatasync of %s: %s; COMMIT syncs itself", db->path, wal,
                 strerror(errno));
        close(fd);
    } else if (td__db_conn_exec(&db->w, "PRAGMA synchronous=NORMAL") != 0) {
        close(fd);
    } else {
        db->wal_fd = fd;
    }
    free(wal);
}

td_db_t *td_db_open(const char *path, const td_migration_t *migs, size_t mig_cnt, char *errstr,
                    size_t errlen)
{
    td_db_t *db = td_calloc(1, sizeof(*db));
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->cv, NULL);
    pthread_mutex_init(&db->hook_mu, NULL);
    pthread_mutex_init(&db->rmu, NULL);
    pthread_key_create(&db->cur, NULL);
    pthread_mutex_init(&db->prune_mu, NULL);
    atomic_init(&db->waiting, 0);
    atomic_init(&db->commit_epoch, 0);
    pthread_mutex_init(&db->sync_mu, NULL);
    pthread_cond_init(&db->sync_cv, NULL);
    db->wal_fd = -1;
    db->legacy_hook = -1;
    db->path = td_strdup(path);
    db->memory = !strcmp(path, ":memory:") || !strncmp(path, "file::memory:", 13);
    db->sync_full = true;
    char msg[512];
    int have = 0;

    if (td__db_conn_open(&db->w, path, false, errstr, errlen) != 0) goto fail;
    if (td__db_exec_err(db->w.sq, "PRAGMA synchronous=FULL", msg, sizeof(msg)) != 0) {
        td_errf(errstr, errlen, TD_EIO, "database %s: %s", path, msg);
        goto fail;
    }
    if (td_db_migrate(db, "runtime", td__db_runtime_migrations, td__db_runtime_migration_cnt,
                      errstr, errlen) != 0)
        goto fail;
    if (td__db_user_version(db->w.sq, &have) != 0) {
        td_errf(errstr, errlen, TD_EIO, "database %s: reading user_version: %s", path,
                sqlite3_errmsg(db->w.sq));
        goto fail;
    }
    if (td__db_migrate_conn(db->w.sq, "migration", have, migs, mig_cnt, NULL, msg, sizeof(msg)) !=
        0) {
        td_errf(errstr, errlen, TD_EIO, "database %s: %s", path, msg);
        goto fail;
    }
    if (!db->memory && td__db_checkpointer_start(db, errstr, errlen) != 0) goto fail;
    if (!db->memory) wal_sync_open(db);
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
    /* With a WAL of our own to sync, the writer is NORMAL already. */
    if (db->wal_fd < 0)
        td__db_conn_exec(&db->w, full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL");
    pthread_mutex_unlock(&db->mu);
}

void td_db_close(td_db_t *db)
{
    if (!db) return;
    assert(!db->tx_open && !db->tickets);
    td__db_checkpointer_stop(db);
    for (size_t i = 0; i < db->reader_cnt; i++) {
        td__db_conn_close(db->readers[i]);
        free(db->readers[i]);
    }
    free(db->readers);
    td__db_conn_close(&db->w);
    if (db->wal_fd >= 0) close(db->wal_fd);
    free(db->afters);
    free(db->path);
    pthread_key_delete(db->cur);
    pthread_mutex_destroy(&db->prune_mu);
    pthread_mutex_destroy(&db->rmu);
    pthread_mutex_destroy(&db->hook_mu);
    pthread_cond_destroy(&db->cv);
    pthread_mutex_destroy(&db->mu);
    pthread_cond_destroy(&db->sync_cv);
    pthread_mutex_destroy(&db->sync_mu);
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
    assert(db->depth >= 1);
    /* Deeper than any handler goes; refused rather than overrun (asserts
     * are off in release builds). */
    if (db->depth >= NEST_MAX) {
        td_error("database: units nested deeper than %d inside a held unit", NEST_MAX);
        return TD_EIO;
    }
    if (td__db_conn_exec(&db->w, "SAVEPOINT nest") != 0) return TD_EIO;
    db->nest_after[++db->depth] = db->after_cnt;
    return 0;
}

static void nest_rollback(td_db_t *db)
{
    assert(db->depth > 1);
    size_t from = db->nest_after[db->depth--];
    afters_cancel_from(db, from);
    conn_reset_busy(&db->w);
    if (!sqlite3_get_autocommit(db->w.sq) && (td__db_conn_exec(&db->w, "ROLLBACK TO nest") != 0 ||
                                              td__db_conn_exec(&db->w, "RELEASE nest") != 0))
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
        if (td__db_conn_exec(&db->w, "BEGIN IMMEDIATE") != 0) {
            pthread_mutex_unlock(&db->mu);
            return TD_EIO;
        }
        db->tx_open = true;
        db->group_broken = false;
        db->group_start = td_mono_ms();
        db->group_changes = sqlite3_total_changes64(db->w.sq);
        db->group_units = 0;
        db->group_marks = 0;
    }
    db->unit_marks = 0;
    db->sp_depth = 0;
    db->after_cnt = 0;
    db->depth = 1;
    db->read_nest = 0;
    set_current(db, &db->w);
    if (td__db_conn_exec(&db->w, "SAVEPOINT unit") != 0) {
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

/* Returns once every COMMIT up to epoch is on disk: the first waiter
 * syncs the WAL for all (what was committed before its fdatasync began),
 * the others wait for it. 0, or TD_EIO once a sync has failed (then
 * nothing more is reported durable: the kernel may have dropped the
 * pages it could not write, so a later sync proves nothing). */
static int durable_wait(td_db_t *db, int64_t epoch)
{
    if (db->wal_fd < 0 || !db->sync_full || epoch <= 0) return 0;
    pthread_mutex_lock(&db->sync_mu);
    while (db->synced_epoch < epoch && !db->sync_failed) {
        if (db->syncing) {
            pthread_cond_wait(&db->sync_cv, &db->sync_mu);
            continue;
        }
        db->syncing = true;
        int64_t upto = atomic_load(&db->commit_epoch);
        pthread_mutex_unlock(&db->sync_mu);
        struct stat st;
        int rc, err;
        if (td__fault("db.wal_sync")) {
            rc = -1;
            err = EIO;
        } else {
            rc = fdatasync(db->wal_fd);
            err = errno;
        }
        /* SQLite never removes the WAL of an open database; if something
         * did, the sync above covered a file no one reads. */
        if (rc == 0 && fstat(db->wal_fd, &st) == 0 && st.st_nlink == 0) rc = -1, err = ENOENT;
        pthread_mutex_lock(&db->sync_mu);
        db->syncing = false;
        if (rc == 0) {
            if (upto > db->synced_epoch) db->synced_epoch = upto;
        } else {
            td_error("database %s: syncing the WAL failed: %s; nothing written from now on is "
                     "acknowledged: restart the service",
                     db->path, strerror(err));
            db->sync_failed = true;
        }
        pthread_cond_broadcast(&db->sync_cv);
    }
    int ret = db->synced_epoch >= epoch ? 0 : TD_EIO;
    pthread_mutex_unlock(&db->sync_mu);
    return ret;
}

/* Ends the group if this unit is its last, else waits for the group's
 * COMMIT (unit_ok) or just leaves (a failed unit has nothing to wait for).
 * Groups of units stay open only where COMMIT syncs itself (no WAL of our
 * own): with one, every unit commits at once and durable_wait shares the
 * syncs.
 * Called with db->mu held; returns with it released. The result: 0 when
 * the unit's changes are committed. */
static int finish_unit(td_db_t *db, bool unit_ok)
{
    bool leave_open = !db->memory && db->wal_fd < 0 && !db->group_broken &&
                      atomic_load(&db->waiting) > 0 && db->group_units < GROUP_MAX_UNITS &&
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
    int64_t epoch = 0;
    uint32_t marks = db->group_marks;
    if (db->group_broken) {
        grc = TD_EIO;
    } else if (db->group_units == 0) {
        /* Nothing to keep: ending the transaction writes nothing. */
        td__db_conn_exec(&db->w, "ROLLBACK");
    } else if (td__db_conn_exec(&db->w, "COMMIT") != 0) {
        td_error("database commit failed: %s", sqlite3_errmsg(db->w.sq));
        if (!sqlite3_get_autocommit(db->w.sq)) td__db_conn_exec(&db->w, "ROLLBACK");
        grc = TD_EIO;
    } else if (sqlite3_total_changes64(db->w.sq) != db->group_changes) {
        epoch = atomic_fetch_add(&db->commit_epoch, 1) + 1;
    } else {
        /* It wrote nothing, but what it read must be on disk too. */
        epoch = atomic_load(&db->commit_epoch);
    }
    db->tx_open = false;
    for (ticket_t *t = db->tickets; t; t = t->next) {
        t->rc = grc;
        t->done = true;
    }
    db->tickets = NULL;
    pthread_cond_broadcast(&db->cv);
    pthread_mutex_unlock(&db->mu);
    /* The group's rows are visible to readers from here, and acknowledged
     * (hooks, td_db_commit's 0) once on disk. */
    if (grc == 0) grc = durable_wait(db, epoch);
    if (grc == 0 && marks) td__db_run_hooks(db, marks);
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
    if (!sqlite3_get_autocommit(db->w.sq) && (td__db_conn_exec(&db->w, "ROLLBACK TO unit") != 0 ||
                                              td__db_conn_exec(&db->w, "RELEASE unit") != 0))
        db->group_broken = true;
}

int td_db_commit(td_db_t *db)
{
    assert(td__db_in_unit(db));
    if (db->depth > 1) {
        conn_reset_busy(&db->w);
        if (td__db_conn_exec(&db->w, "RELEASE nest") != 0) {
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
    if (ok && td__db_conn_exec(&db->w, "RELEASE unit") != 0) ok = false;
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
    if (td__db_conn_exec(&db->w, "SAVEPOINT part") != 0) return TD_EIO;
    db->sp_after[db->sp_depth++] = db->after_cnt;
    return 0;
}

int td_db_savepoint_release(td_db_t *db)
{
    assert(td__db_in_unit(db) && db->sp_depth > 0);
    db->sp_depth--;
    conn_reset_busy(&db->w);
    return td__db_conn_exec(&db->w, "RELEASE part");
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
    if (!sqlite3_get_autocommit(db->w.sq) && (td__db_conn_exec(&db->w, "ROLLBACK TO part") != 0 ||
                                              td__db_conn_exec(&db->w, "RELEASE part") != 0))
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
    if (td__db_conn_open(c, db->path, true, err, sizeof(err)) != 0) {
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
    td__db_conn_exec(c, "BEGIN");
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
    if (!sqlite3_get_autocommit(c->sq)) td__db_conn_exec(c, "COMMIT");
    pthread_mutex_lock(&db->rmu);
    c->next_free = db->free_readers;
    db->free_readers = c;
    pthread_mutex_unlock(&db->rmu);
}

/* ---- statements ---------------------------------------------------------------- */

int td_db_exec(td_db_t *db, const char *sql)
{
    return td__db_conn_exec(current(db), sql);
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

int td_db_run_last_one(td_db_t *db, sqlite3_stmt *stmt)
{
    int rc = td_db_run(db, stmt);
    if (rc == 0 && td_db_changes(db) == 0) rc = TD_ENOENT;
    if (rc != 0) {
        td_db_rollback(db);
        return rc;
    }
    return td_db_commit(db);
}

int64_t td_db_read_int(td_db_t *db, const char *sql)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, sql);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(db);
    return n;
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
