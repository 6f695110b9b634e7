/* The service database: migrations by version applied once and only once,
 * a failing migration leaving the schema at the last good version, write
 * transactions (begin/commit/rollback), constraint violations mapped to
 * TD_EEXIST, the runtime tables, and the commit hook firing only after a
 * commit whose transaction marked itself (the outbox relay's wake-up). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tidings/db.h"
#include "tidings/log.h"
#include "tsupport.h"

static const td_migration_t migs_v2[] = {
    {1, "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);"},
    {2, "ALTER TABLE items ADD COLUMN qty INTEGER NOT NULL DEFAULT 0;"
        "INSERT INTO items(name, qty) VALUES('seed', 1);"},
};

static char *db_path(const char *name)
{
    char *dir = ts_tmpdir(name);
    char *path = td_asprintf("%s/test.db", dir);
    free(dir);
    return path;
}

static int query_int(td_db_t *db, const char *sql)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, sql);
    int v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    td_db_unlock(db);
    return v;
}

static void test_migrations_applied_once(void **state)
{
    (void)state;
    char err[256];
    char *path = db_path("test_db-mig");

    td_db_t *db = td_db_open(path, migs_v2, 2, err, sizeof(err));
    assert_non_null(db);
    assert_int_equal(query_int(db, "PRAGMA user_version"), 2);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items"), 1);
    /* The runtime tables exist. */
    assert_int_equal(query_int(db, "SELECT count(*) FROM td_outbox"), 0);
    assert_int_equal(query_int(db, "SELECT count(*) FROM td_inbox"), 0);
    td_db_close(db);

    /* Reopening does not re-run migration 2 (which would add a second
     * seed row, or fail on ALTER TABLE). */
    db = td_db_open(path, migs_v2, 2, err, sizeof(err));
    assert_non_null(db);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items"), 1);
    td_db_close(db);

    /* A database at version 1 gets only migration 2. */
    char *path1 = db_path("test_db-mig1");
    db = td_db_open(path1, migs_v2, 1, err, sizeof(err));
    assert_non_null(db);
    assert_int_equal(query_int(db, "PRAGMA user_version"), 1);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items"), 0);
    td_db_close(db);
    db = td_db_open(path1, migs_v2, 2, err, sizeof(err));
    assert_non_null(db);
    assert_int_equal(query_int(db, "PRAGMA user_version"), 2);
    assert_int_equal(query_int(db, "SELECT qty FROM items WHERE name = 'seed'"), 1);
    td_db_close(db);
    free(path1);
    free(path);
}

static void test_failing_migration(void **state)
{
    (void)state;
    char err[256] = "";
    char *path = db_path("test_db-fail");
    static const td_migration_t bad[] = {
        {1, "CREATE TABLE items(id INTEGER PRIMARY KEY, name TEXT);"},
        {2, "INSERT INTO items(name) VALUES('half');"
            "INSERT INTO no_such_table VALUES(1);"},
    };
    td_db_t *db = td_db_open(path, bad, 2, err, sizeof(err));
    assert_null(db);
    assert_non_null(strstr(err, "no_such_table"));
    assert_non_null(strstr(err, "migration 2"));

    /* Version 1 stays, and migration 2's first statement was rolled back. */
    db = td_db_open(path, bad, 1, err, sizeof(err));
    assert_non_null(db);
    assert_int_equal(query_int(db, "PRAGMA user_version"), 1);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items"), 0);
    td_db_close(db);
    free(path);
}

static void test_transactions(void **state)
{
    (void)state;
    char err[256];
    td_db_t *db = td_db_open(":memory:", migs_v2, 2, err, sizeof(err));
    assert_non_null(db);

    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO items(name) VALUES('a')"), 0);
    assert_int_equal(td_db_commit(db), 0);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items WHERE name = 'a'"), 1);

    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO items(name) VALUES('b')"), 0);
    td_db_rollback(db);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items WHERE name = 'b'"), 0);

    /* Constraint -> TD_EEXIST; other failures -> TD_EIO. */
    assert_int_equal(td_db_begin(db), 0);
    sqlite3_stmt *st = td_db_prepare(db, "INSERT INTO items(name) VALUES(?)");
    sqlite3_bind_text(st, 1, "a", -1, SQLITE_STATIC);
    assert_int_equal(td_db_run(db, st), TD_EEXIST);
    st = td_db_prepare(db, "INSERT INTO items(name) VALUES(NULL)");
    assert_int_equal(td_db_run(db, st), TD_EEXIST); /* NOT NULL is a constraint too */
    st = td_db_prepare(db, "INSERT INTO items(name) VALUES('c')");
    assert_int_equal(td_db_run(db, st), 0);
    assert_int_equal(td_db_changes(db), 1);
    assert_int_equal(td_db_exec(db, "THIS IS NOT SQL"), TD_EIO);
    assert_int_equal(td_db_commit(db), 0);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items"), 3); /* seed, a, c */

    assert_true(td_db_ping(db));
    td_db_close(db);
}

static int hook_calls;

static void hook(void *arg)
{
    assert_ptr_equal(arg, &hook_calls);
    hook_calls++;
}

static void test_commit_hook(void **state)
{
    (void)state;
    char err[256];
    td_db_t *db = td_db_open(":memory:", migs_v2, 2, err, sizeof(err));
    assert_non_null(db);
    td_db_set_commit_hook(db, hook, &hook_calls);
    hook_calls = 0;

    /* Unmarked commit: no call. */
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO items(name) VALUES('x')"), 0);
    assert_int_equal(td_db_commit(db), 0);
    assert_int_equal(hook_calls, 0);

    /* Marked commit: one call. */
    assert_int_equal(td_db_begin(db), 0);
    td__db_mark_dirty(db);
    assert_int_equal(td_db_commit(db), 0);
    assert_int_equal(hook_calls, 1);

    /* Marked then rolled back: no call, and the mark does not leak into the
     * next transaction. */
    assert_int_equal(td_db_begin(db), 0);
    td__db_mark_dirty(db);
    td_db_rollback(db);
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_commit(db), 0);
    assert_int_equal(hook_calls, 1);

    /* Removed hook: no call. */
    td_db_set_commit_hook(db, NULL, NULL);
    assert_int_equal(td_db_begin(db), 0);
    td__db_mark_dirty(db);
    assert_int_equal(td_db_commit(db), 0);
    assert_int_equal(hook_calls, 1);
    td_db_close(db);
}

/* The hook runs with the lock released: it may itself use the database. */
static td_db_t *reentrant_db;
static int reentrant_seen;

static void reentrant_hook(void *arg)
{
    (void)arg;
    reentrant_seen = query_int(reentrant_db, "SELECT count(*) FROM items");
}

static void test_commit_hook_outside_lock(void **state)
{
    (void)state;
    char err[256];
    reentrant_db = td_db_open(":memory:", migs_v2, 2, err, sizeof(err));
    assert_non_null(reentrant_db);
    td_db_set_commit_hook(reentrant_db, reentrant_hook, NULL);
    reentrant_seen = -1;
    assert_int_equal(td_db_begin(reentrant_db), 0);
    assert_int_equal(td_db_exec(reentrant_db, "INSERT INTO items(name) VALUES('y')"), 0);
    td__db_mark_dirty(reentrant_db);
    assert_int_equal(td_db_commit(reentrant_db), 0);
    assert_int_equal(reentrant_seen, 2); /* seed + y, and no deadlock */
    td_db_close(reentrant_db);
}

int main(void)
{
    td_log_init("test", TD_LOG_ERROR, false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migrations_applied_once),
        cmocka_unit_test(test_failing_migration),
        cmocka_unit_test(test_transactions),
        cmocka_unit_test(test_commit_hook),
        cmocka_unit_test(test_commit_hook_outside_lock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
