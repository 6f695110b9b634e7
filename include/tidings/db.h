/* A service's own SQLite database: WAL, a busy timeout, foreign keys, and
 * schema migrations by version number (PRAGMA user_version). The runtime's
 * tables (outbox, inbox, and those of runtime components) are created by
 * their own numbered migrations before the service's run.
 *
 * One writer connection and a pool of reader connections:
 *  - Writes are units: td_db_begin opens one (a SAVEPOINT inside the open
 *    write transaction, BEGIN IMMEDIATE when none is open) and takes the
 *    writer; td_db_commit / td_db_rollback end it. A unit that rolls back
 *    undoes only its own changes. Group commit: the COMMIT writes the WAL
 *    under the writer's lock without waiting for the disk
 *    (synchronous=NORMAL), and td_db_commit then waits, with the writer
 *    free for the next units, until an fdatasync of the WAL that began
 *    after its COMMIT has ended; one sync serves every COMMIT made before
 *    it began. So td_db_commit returning 0 still means "durably committed"
 *    (TIDINGS_DB_SYNC=full), and commit hooks and after-commit callbacks
 *    run only then; readers may see the rows a moment earlier (between
 *    COMMIT and sync). Where the WAL cannot be opened for this, the writer
 *    stays synchronous=FULL and units that arrive while others run share
 *    one transaction and one COMMIT instead.
 *  - Reads run on reader connections beside the writer: td_db_lock takes one
 *    for the calling thread (a read transaction: one consistent snapshot of
 *    what is committed) and td_db_unlock gives it back. Readers never wait
 *    for a write unit or a COMMIT, and never see uncommitted rows. An
 *    in-memory database (":memory:", unit tests) has no readers: its reads
 *    take the writer, and every unit commits at once.
 *  - td_db_prepare and friends act on the calling thread's current
 *    connection (the writer inside a unit, its reader inside td_db_lock)
 *    and cache prepared statements per connection: give each back with
 *    td_db_done (td_db_run does).
 * Never call back into Kafka or HTTP inside a unit or a read. */
#ifndef TIDINGS_DB_H
#define TIDINGS_DB_H

#include <sqlite3.h>

#include "tidings/common.h"

typedef struct td_db td_db_t;

typedef struct td_migration {
    int version;     /* 1, 2, 3 ... applied in order, each once */
    const char *sql; /* one or more statements */
} td_migration_t;

/* Opens (creating, mode 0600) the database at path and migrates it. NULL
 * with errstr on failure. ":memory:" works for unit tests. Durable by
 * default (synchronous=FULL). */
td_db_t *td_db_open(const char *path, const td_migration_t *migs, size_t mig_cnt, char *errstr,
                    size_t errlen);
void td_db_close(td_db_t *db);

/* synchronous=FULL (true: a power cut loses nothing committed) or NORMAL
 * (a process crash loses nothing; a power cut may lose the last commits).
 * Call before the service starts writing. */
void td_db_set_full_sync(td_db_t *db, bool full);

/* A component's own tables, migrated like a service's schema but numbered
 * apart (kept in td_schema under name): the runtime's queues use it. Call
 * right after td_db_open, from the opening thread. 0 or TD_EIO with errstr. */
int td_db_migrate(td_db_t *db, const char *name, const td_migration_t *migs, size_t mig_cnt,
                  char *errstr, size_t errlen);

/* The calling thread's current connection (the writer inside a unit, its
 * reader inside td_db_lock), for sqlite3_* calls such as last_insert_rowid
 * and errmsg. Only inside a unit or a read. */
sqlite3 *td_db_sqlite(td_db_t *db);

/* Write units (see above). begin takes the writer; commit and rollback
 * release it whatever happens. commit returns 0 once the unit's changes
 * are committed, TD_EIO when they are not (the unit failed to end, or the
 * group's COMMIT failed). Commit hooks and after-commit callbacks run after
 * the COMMIT, outside every lock. A thread must not nest units. */
int td_db_begin(td_db_t *db);
int td_db_commit(td_db_t *db);
void td_db_rollback(td_db_t *db);

/* Inside a unit: a nested savepoint, for work that may be undone alone
 * (one record of a consumer's batch). 0 or TD_EIO. */
int td_db_savepoint(td_db_t *db);
int td_db_savepoint_release(td_db_t *db);
void td_db_savepoint_rollback(td_db_t *db);

/* Inside a unit: fn(arg, true) runs once the unit's changes are committed,
 * on the thread that called td_db_commit, before it returns 0; fn(arg,
 * false) when they are not (the unit, or the savepoint that registered
 * it, rolled back, or the commit failed), so arg can always be freed. In
 * order of registration, outside every lock. */
typedef void (*td_db_after_fn)(void *arg, bool committed);
void td_db_after_commit(td_db_t *db, td_db_after_fn fn, void *arg);

/* Reads outside a unit: a reader (a consistent snapshot) for this thread
 * until td_db_unlock. Not inside a unit of the same thread. */
void td_db_lock(td_db_t *db);
void td_db_unlock(td_db_t *db);

/* Runs sql (no results) on the current connection. 0 or TD_EIO (logged). */
int td_db_exec(td_db_t *db, const char *sql);
/* A prepared statement for sql on the current connection, from its cache
 * when sql was prepared before (sql is best a string constant); aborts on
 * a prepare error, which is a programming error. Give it back with
 * td_db_done. */
sqlite3_stmt *td_db_prepare(td_db_t *db, const char *sql);
/* Resets a statement from td_db_prepare and returns it to its cache (or
 * finalizes it when it is not cached). NULL is fine. */
void td_db_done(sqlite3_stmt *stmt);
/* Steps stmt to completion (for INSERT/UPDATE/DELETE), gives it back, and
 * maps the result: 0, TD_EEXIST for a constraint violation, TD_EIO else. */
int td_db_run(td_db_t *db, sqlite3_stmt *stmt);
/* sqlite3_changes of the last statement on the current connection. */
int td_db_changes(td_db_t *db);
/* Runs stmt as the last statement of the caller's unit and ends the unit:
 * committed (0, or what td_db_commit says) when stmt changed a row,
 * rolled back with TD_ENOENT when it changed none, rolled back with the
 * error when it failed ("delete the user's row, 404 when there is none"). */
int td_db_run_last_one(td_db_t *db, sqlite3_stmt *stmt);
/* The integer the one-row query sql (no parameters) gives, read under
 * td_db_lock: a count for a gauge or a test. -1 when it gives no row. */
int64_t td_db_read_int(td_db_t *db, const char *sql);
/* Hands the page caches' memory back now (the writer's when no unit is
 * open, and the idle readers'): for a thread that goes idle after a burst
 * it wrote, so that what it allocated is freed on its own thread. The
 * checkpoint thread does the same once no row has changed for a second.
 * Any thread outside a unit; a busy writer is left alone. */
void td_db_release_memory(td_db_t *db);
/* True when the database answers a trivial query (readiness). Any thread
 * outside a unit. */
bool td_db_ping(td_db_t *db);

/* Retention (SPEC section 1): jobs that delete what is older than their
 * age, run beside the writer (on the checkpoint thread) every quarter of
 * the age, at least every second and at most every minute. fn deletes
 * what is older than cutoff_ms (epoch ms) in units of its own, and adds
 * what it deleted to *deleted; 0 or TD_EIO. Adding a job for a table that
 * has one replaces it; max_age_ms 0 removes it (keep forever). Counted in
 * tidings_retention_deleted_total{table}. */
typedef int (*td_prune_fn)(td_db_t *db, int64_t cutoff_ms, int64_t *deleted);
void td_db_prune_add(td_db_t *db, const char *table, td_prune_fn fn, int64_t max_age_ms);
/* Runs every job now (tests, and databases in memory, which have no
 * checkpoint thread). The rows deleted. */
int64_t td_db_prune_now(td_db_t *db);
/* For a td_prune_fn: runs sql, a DELETE of at most TD_PRUNE_CHUNK rows
 * with ?1 bound to cutoff (as an integer, or as an RFC 3339 text when
 * as_text), one unit per chunk, until a chunk deletes fewer. */
#define TD_PRUNE_CHUNK 2000
int td_db_prune_chunks(td_db_t *db, const char *sql, int64_t cutoff_ms, bool as_text,
                       int64_t *deleted);

/* Commit hooks: fn(arg) after each COMMIT that included a unit which
 * called td_db_mark(db, id) (the outbox marks, and its relay's hook wakes
 * the relay). td_db_hook_add returns the id (at most 16 hooks), any thread;
 * td_db_hook_remove guarantees that no call with that hook's argument runs
 * after it returns. */
typedef void (*td_db_commit_hook_fn)(void *arg);
int td_db_hook_add(td_db_t *db, td_db_commit_hook_fn fn, void *arg);
void td_db_hook_remove(td_db_t *db, int id);
/* Inside a unit: hook id runs after this unit's COMMIT. */
void td_db_mark(td_db_t *db, int id);

/* The one hook of older callers (id 0 of its own): replaces what was set
 * with td_db_set_commit_hook before (NULL removes it); td__db_mark_dirty
 * marks it. */
void td_db_set_commit_hook(td_db_t *db, td_db_commit_hook_fn fn, void *arg);
void td__db_mark_dirty(td_db_t *db);

/* Holding a unit open (idempotent HTTP requests, tidings/http.h): the
 * next unit this thread begins on db stays open after its td_db_commit,
 * which then returns 0 with the changes kept in the unit; every unit this
 * thread begins inside it is a savepoint of it (td_db_rollback undoes only
 * that), and its td_db_lock reads on the writer (seeing the unit's rows).
 * The holder ends the unit with one more td_db_commit or td_db_rollback
 * once td__db_in_unit says it is open. td__db_hold(NULL) disarms it when
 * no unit was begun. Only the calling thread is affected. */
void td__db_hold(td_db_t *db);

/* True when the calling thread is inside a unit of db (asserts). */
bool td__db_in_unit(td_db_t *db);

#endif
