/* Migrations of a td_db_t (tidings/db.h): a service's schema numbered in
 * user_version, each runtime component's numbered apart in td_schema, and
 * the runtime's own tables (outbox and inbox). */
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

/* ---- migrations ------------------------------------------------------------ */

int td__db_user_version(sqlite3 *sq, int *out)
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
int td__db_migrate_conn(sqlite3 *sq, const char *what, int have, const td_migration_t *migs,
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
        if (td__db_exec_err(sq, "BEGIN IMMEDIATE", msg, sizeof(msg)) != 0)
            return td_errf(errstr, errlen, TD_EIO, "%s %d: %s", what, m->version, msg);
        if (td__db_exec_err(sq, m->sql, msg, sizeof(msg)) != 0 ||
            td__db_exec_err(sq, bump, msg, sizeof(msg)) != 0 ||
            td__db_exec_err(sq, "COMMIT", msg, sizeof(msg)) != 0) {
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
    int rc = td__db_exec_err(db->w.sq,
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
        rc = td__db_migrate_conn(db->w.sq, what, have, migs, mig_cnt, name, errstr, errlen);
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}

/* The runtime's own tables. Version 1 is the first release's outbox and
 * inbox (created only where missing, so an old database keeps its rows);
 * version 2 gives the inbox a time-ordered rowid, so the oldest rows are
 * pruned without an index on time, and the outcome a redrive looks at. */
const td_migration_t td__db_runtime_migrations[] = {
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
const size_t td__db_runtime_migration_cnt = TD_ARRAY_SIZE(td__db_runtime_migrations);
