/* A service's own SQLite database: WAL, a busy timeout, foreign keys, and
 * schema migrations by version number (PRAGMA user_version). The runtime's
 * tables (outbox, inbox) are created by td_db_open before the service's
 * migrations run.
 *
 * One connection per database, guarded by a mutex: td_db_begin takes it and
 * opens a write transaction (BEGIN IMMEDIATE), td_db_commit/td_db_rollback
 * end the transaction and release it; reads outside a transaction hold it
 * with td_db_lock/td_db_unlock. So a handler that changes state and adds
 * outbox rows does both in one transaction, and no two threads interleave
 * statements. Never call back into Kafka or HTTP while holding it. */
#ifndef TIDINGS_DB_H
#define TIDINGS_DB_H

#include <sqlite3.h>

#include "tidings/common.h"

typedef struct td_db td_db_t;

typedef struct td_migration {
    int version;     /* 1, 2, 3 ... applied in order, each once */
    const char *sql; /* one or more statements */
} td_migration_t;

/* Opens (creating) the database at path and migrates it. NULL with errstr
 * on failure. ":memory:" works for unit tests. */
td_db_t *td_db_open(const char *path, const td_migration_t *migs, size_t mig_cnt, char *errstr,
                    size_t errlen);
void td_db_close(td_db_t *db);

/* The raw connection, for sqlite3_prepare_v2 etc. Only while holding the
 * lock (inside a transaction or between td_db_lock/unlock). */
sqlite3 *td_db_sqlite(td_db_t *db);

/* Write transactions. begin locks the mutex; commit and rollback unlock it
 * whatever happens. commit returns TD_EIO (after rolling back) if COMMIT
 * fails. Commit hooks (the outbox relay's wake-up) run after a successful
 * commit, outside the lock. */
int td_db_begin(td_db_t *db);
int td_db_commit(td_db_t *db);
void td_db_rollback(td_db_t *db);

/* Reads outside a transaction. */
void td_db_lock(td_db_t *db);
void td_db_unlock(td_db_t *db);

/* Runs sql (no results). 0 or TD_EIO (logged with the SQLite message). */
int td_db_exec(td_db_t *db, const char *sql);
/* Prepares sql; aborts on a prepare error, which is a programming error. */
sqlite3_stmt *td_db_prepare(td_db_t *db, const char *sql);
/* Steps stmt to completion (for INSERT/UPDATE/DELETE), finalizes it, and
 * maps the result: 0, TD_EEXIST for a constraint violation, TD_EIO else. */
int td_db_run(td_db_t *db, sqlite3_stmt *stmt);
/* sqlite3_changes of the last statement. */
int td_db_changes(td_db_t *db);
/* True when the database answers a trivial query (readiness). */
bool td_db_ping(td_db_t *db);

/* Called after each successful commit whose transaction set the flag with
 * td_db_mark (the outbox marks; the relay's hook wakes the relay). */
typedef void (*td_db_commit_hook_fn)(void *arg);
void td_db_set_commit_hook(td_db_t *db, td_db_commit_hook_fn fn, void *arg);
void td__db_mark_dirty(td_db_t *db);

#endif
