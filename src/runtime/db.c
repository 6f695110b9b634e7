/* A service's SQLite database: one connection guarded by one mutex, the
 * runtime's outbox and inbox tables, and the service's schema migrations
 * by PRAGMA user_version. Write transactions are BEGIN IMMEDIATE so that a
 * second process on the same file (the CLI, a restarted service) waits on
 * the busy timeout instead of failing half-way. A transaction that added
 * outbox rows marks itself dirty; after its COMMIT succeeds and the mutex
 * is released, the commit hook (the relay's wake-up) runs, so the relay
 * never waits on a lock its own wake-up still holds. */
#include "tidings/db.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "tidings/fault.h"
#include "tidings/log.h"

struct td_db {
    sqlite3 *sq;
    pthread_mutex_t mu; /* the connection and everything below */
    bool in_tx;
    bool dirty;
    /* The hook has its own mutex: it is called outside mu, and holding
     * hook_mu while calling it lets td_db_set_commit_hook(NULL) guarantee
     * that no call with the old argument is still running when it returns
     * (the relay frees that argument right after). */
    pthread_mutex_t hook_mu;
    td_db_commit_hook_fn hook;
    void *hook_arg;
};

/* Runtime tables: created before the service's migrations, outside the
 * user_version numbering, so that services number their own schema from 1. */
static const char runtime_schema[] = "CREATE TABLE IF NOT EXISTS td_outbox ("
                                     " id INTEGER PRIMARY KEY AUTOINCREMENT,"
                                     " topic TEXT NOT NULL,"
                                     " key BLOB,"
                                     " value BLOB,"
                                     " headers BLOB,"
                                     " created_ms INTEGER NOT NULL);"
                                     "CREATE TABLE IF NOT EXISTS td_inbox ("
                                     " event_id TEXT PRIMARY KEY,"
                                     " topic TEXT NOT NULL,"
                                     " processed_ms INTEGER NOT NULL);";

static int exec_err(sqlite3 *sq, const char *sql, char *errstr, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(sq, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    td_errf(errstr, errlen, TD_EIO, "%s", msg ? msg : sqlite3_errmsg(sq));
    sqlite3_free(msg);
    return TD_EIO;
}

static int user_version(sqlite3 *sq, int *out)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sq, "PRAGMA user_version", -1, &st, NULL) != SQLITE_OK) return TD_EIO;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    return rc == SQLITE_ROW ? 0 : TD_EIO;
}

static int migrate(sqlite3 *sq, const td_migration_t *migs, size_t mig_cnt, char *errstr,
                   size_t errlen)
{
    int have = 0;
    if (user_version(sq, &have) != 0)
        return td_errf(errstr, errlen, TD_EIO, "reading user_version: %s", sqlite3_errmsg(sq));
    int prev = 0;
    for (size_t i = 0; i < mig_cnt; i++) {
        const td_migration_t *m = &migs[i];
        if (m->version <= prev)
            return td_errf(errstr, errlen, TD_EINVAL,
                           "migration versions must increase (%d after %d)", m->version, prev);
        prev = m->version;
        if (m->version <= have) continue;
        char msg[512];
        if (exec_err(sq, "BEGIN IMMEDIATE", msg, sizeof(msg)) != 0)
            return td_errf(errstr, errlen, TD_EIO, "migration %d: %s", m->version, msg);
        /* The version bump is part of the migration's transaction: either
         * both land or neither, so a crash never leaves a half-applied
         * version that would be skipped on the next start. */
        char bump[64];
        snprintf(bump, sizeof(bump), "PRAGMA user_version = %d", m->version);
        if (exec_err(sq, m->sql, msg, sizeof(msg)) != 0 ||
            exec_err(sq, bump, msg, sizeof(msg)) != 0 ||
            exec_err(sq, "COMMIT", msg, sizeof(msg)) != 0) {
            sqlite3_exec(sq, "ROLLBACK", NULL, NULL, NULL);
            return td_errf(errstr, errlen, TD_EIO, "migration %d: %s", m->version, msg);
        }
        td_debug("database migrated to version %d", m->version);
        have = m->version;
    }
    return 0;
}

td_db_t *td_db_open(const char *path, const td_migration_t *migs, size_t mig_cnt, char *errstr,
                    size_t errlen)
{
    td_db_t *db = td_calloc(1, sizeof(*db));
    pthread_mutex_init(&db->mu, NULL);
    pthread_mutex_init(&db->hook_mu, NULL);
    char msg[512];

    int rc = sqlite3_open_v2(
        path, &db->sq, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc != SQLITE_OK) {
        td_errf(errstr, errlen, TD_EIO, "cannot open database %s: %s", path,
                db->sq ? sqlite3_errmsg(db->sq) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_extended_result_codes(db->sq, 1);
    sqlite3_busy_timeout(db->sq, 5000);
    /* WAL lets readers (the CLI) run beside the writer; NORMAL sync is
     * durable across process crashes, which is what the outbox needs. */
    if (exec_err(db->sq,
                 "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;", msg,
                 sizeof(msg)) != 0 ||
        exec_err(db->sq, runtime_schema, msg, sizeof(msg)) != 0) {
        td_errf(errstr, errlen, TD_EIO, "database %s: %s", path, msg);
        goto fail;
    }
    if (migrate(db->sq, migs, mig_cnt, msg, sizeof(msg)) != 0) {
        td_errf(errstr, errlen, TD_EIO, "database %s: %s", path, msg);
        goto fail;
    }
    return db;

fail:
    td_db_close(db);
    return NULL;
}

void td_db_close(td_db_t *db)
{
    if (!db) return;
    if (db->sq) sqlite3_close_v2(db->sq);
    pthread_mutex_destroy(&db->hook_mu);
    pthread_mutex_destroy(&db->mu);
    free(db);
}

sqlite3 *td_db_sqlite(td_db_t *db)
{
    return db->sq;
}

int td_db_begin(td_db_t *db)
{
    pthread_mutex_lock(&db->mu);
    if (td_db_exec(db, "BEGIN IMMEDIATE") != 0) {
        pthread_mutex_unlock(&db->mu);
        return TD_EIO;
    }
    db->in_tx = true;
    db->dirty = false;
    return 0;
}

int td_db_commit(td_db_t *db)
{
    int rc = 0;
    bool dirty = db->dirty;
    if (td__fault("db.before_commit") ||
        sqlite3_exec(db->sq, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        td_error("database commit failed: %s", sqlite3_errmsg(db->sq));
        if (!sqlite3_get_autocommit(db->sq)) sqlite3_exec(db->sq, "ROLLBACK", NULL, NULL, NULL);
        rc = TD_EIO;
        dirty = false;
    } else if (td__fault("db.after_commit")) {
        rc = TD_EIO; /* committed, reported failed: the caller must cope */
    }
    db->in_tx = false;
    db->dirty = false;
    pthread_mutex_unlock(&db->mu);

    if (dirty) {
        pthread_mutex_lock(&db->hook_mu);
        if (db->hook) db->hook(db->hook_arg);
        pthread_mutex_unlock(&db->hook_mu);
    }
    return rc;
}

void td_db_rollback(td_db_t *db)
{
    /* A failed statement may already have ended the transaction (SQLite
     * rolls back on some errors by itself); ROLLBACK then would fail. */
    if (!sqlite3_get_autocommit(db->sq) &&
        sqlite3_exec(db->sq, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK)
        td_error("database rollback failed: %s", sqlite3_errmsg(db->sq));
    db->in_tx = false;
    db->dirty = false;
    pthread_mutex_unlock(&db->mu);
}

void td_db_lock(td_db_t *db)
{
    pthread_mutex_lock(&db->mu);
}

void td_db_unlock(td_db_t *db)
{
    pthread_mutex_unlock(&db->mu);
}

int td_db_exec(td_db_t *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db->sq, sql, NULL, NULL, &msg) == SQLITE_OK) return 0;
    td_error("database: %s (in: %.200s)", msg ? msg : sqlite3_errmsg(db->sq), sql);
    sqlite3_free(msg);
    return TD_EIO;
}

sqlite3_stmt *td_db_prepare(td_db_t *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->sq, sql, -1, &st, NULL) != SQLITE_OK) {
        /* The SQL is a constant in the code: a prepare error is a bug. */
        fprintf(stderr, "tidings: cannot prepare SQL: %s\n  %s\n", sqlite3_errmsg(db->sq), sql);
        abort();
    }
    return st;
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
            td_error("database: %s (in: %.200s)", sqlite3_errmsg(db->sq), sqlite3_sql(stmt));
            out = TD_EIO;
        }
    }
    sqlite3_finalize(stmt);
    return out;
}

int td_db_changes(td_db_t *db)
{
    return sqlite3_changes(db->sq);
}

bool td_db_ping(td_db_t *db)
{
    pthread_mutex_lock(&db->mu);
    sqlite3_stmt *st = NULL;
    bool ok = sqlite3_prepare_v2(db->sq, "SELECT 1", -1, &st, NULL) == SQLITE_OK &&
              sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    pthread_mutex_unlock(&db->mu);
    return ok;
}

void td_db_set_commit_hook(td_db_t *db, td_db_commit_hook_fn fn, void *arg)
{
    pthread_mutex_lock(&db->hook_mu);
    db->hook = fn;
    db->hook_arg = arg;
    pthread_mutex_unlock(&db->hook_mu);
}

void td__db_mark_dirty(td_db_t *db)
{
    db->dirty = true;
}
