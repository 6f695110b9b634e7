/* The service database: migrations by version applied once and only once,
 * a failing migration leaving the schema at the last good version, write
 * transactions (begin/commit/rollback), constraint violations mapped to
 * TD_EEXIST, the runtime tables, the commit hook firing only after a
 * commit whose transaction marked itself (the outbox relay's wake-up), and
 * held units (td__db_hold): what the thread begins inside is one unit with
 * the holder's, undone alone when rolled back, committed only with it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>

#include "tidings/db.h"
#include "tidings/fault.h"
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
    td_db_done(st);
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

static int after_ok, after_undone;

static void after(void *arg, bool committed)
{
    (void)arg;
    if (committed)
        after_ok++;
    else
        after_undone++;
}

static void held_round(td_db_t *db, bool holder_commits)
{
    after_ok = after_undone = 0;
    td__db_hold(db);
    /* What a domain function does: a unit, a read, a unit it rolls back. */
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO items(name) VALUES('held')"), 0);
    td_db_after_commit(db, after, NULL);
    assert_int_equal(td_db_commit(db), 0);
    assert_true(td__db_in_unit(db)); /* still open: the holder's */
    assert_int_equal(query_int(db, "SELECT count(*) FROM items WHERE name = 'held'"), 1);
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO items(name) VALUES('undone')"), 0);
    td_db_after_commit(db, after, NULL);
    td_db_rollback(db);
    assert_int_equal(after_undone, 1);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items WHERE name = 'undone'"), 0);
    assert_int_equal(after_ok, 0); /* nothing is committed yet */
    /* The holder's own row, then its end. */
    assert_int_equal(td_db_exec(db, "INSERT INTO items(name) VALUES('answer')"), 0);
    if (holder_commits) {
        assert_int_equal(td_db_commit(db), 0);
        assert_int_equal(after_ok, 1);
    } else {
        td_db_rollback(db);
        assert_int_equal(after_undone, 2);
    }
    assert_false(td__db_in_unit(db));
}

static void test_held_units(void **state)
{
    (void)state;
    char err[256];
    char *path = db_path("test_db_held");
    td_db_t *db = td_db_open(path, migs_v2, 2, err, sizeof(err));
    assert_non_null(db);
    held_round(db, false);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items WHERE name IN ('held','answer')"),
                     0);
    held_round(db, true);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items WHERE name IN ('held','answer')"),
                     2);
    /* Disarmed: units are plain again. */
    td__db_hold(db);
    td__db_hold(NULL);
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO items(name) VALUES('plain')"), 0);
    assert_int_equal(td_db_commit(db), 0);
    assert_false(td__db_in_unit(db));
    td_db_close(db);
    free(path);
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

/* ---- readers and group commit (a file database: WAL) ---- */

typedef struct writer_arg {
    td_db_t *db;
    int id;
    bool fail; /* roll this unit back */
    int rc;
    int seen_after; /* rows a reader saw from the after-commit callback */
} writer_arg_t;

static void after_cb(void *arg, bool committed)
{
    writer_arg_t *w = arg;
    assert_true(committed);
    /* Runs after the COMMIT: a reader already sees the row. */
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM items WHERE name = 'w%d'", w->id);
    w->seen_after = query_int(w->db, sql);
}

static void *writer_main(void *arg)
{
    writer_arg_t *w = arg;
    for (int i = 0; i < 20; i++) {
        if (td_db_begin(w->db) != 0) {
            w->rc = TD_EIO;
            return NULL;
        }
        sqlite3_stmt *st = td_db_prepare(w->db, "INSERT INTO items(name, qty) VALUES(?, ?)");
        char name[32];
        snprintf(name, sizeof(name), i == 19 ? "w%d" : "w%d-%d", w->id, i);
        sqlite3_bind_text(st, 1, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(st, 2, w->id);
        if (td_db_run(w->db, st) != 0) w->rc = TD_EIO;
        if (w->fail) {
            td_db_rollback(w->db);
            continue;
        }
        if (i == 19) td_db_after_commit(w->db, after_cb, w);
        if (td_db_commit(w->db) != 0) w->rc = TD_EIO;
    }
    return NULL;
}

typedef struct count_arg {
    td_db_t *db;
    const char *sql;
    int n;
} count_arg_t;

static void *count_main(void *arg)
{
    count_arg_t *c = arg;
    c->n = query_int(c->db, c->sql);
    return NULL;
}

/* query_int on another thread (this one may be inside a unit). */
static int count_elsewhere(td_db_t *db, const char *sql)
{
    count_arg_t c = {db, sql, -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, count_main, &c), 0);
    pthread_join(t, NULL);
    return c.n;
}

static void test_group_commit_and_readers(void **state)
{
    (void)state;
    char err[256];
    char *path = db_path("test_db-group");
    td_db_t *db = td_db_open(path, migs_v2, 2, err, sizeof(err));
    assert_non_null(db);

    /* A reader never sees a unit that has not committed, and is not held
     * up by it. */
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO items(name) VALUES('open')"), 0);
    assert_int_equal(count_elsewhere(db, "SELECT count(*) FROM items WHERE name = 'open'"), 0);
    assert_int_equal(td_db_commit(db), 0);
    assert_int_equal(count_elsewhere(db, "SELECT count(*) FROM items WHERE name = 'open'"), 1);

    /* Eight writers at once, one of them rolling every unit back: every
     * committed unit is there, none of the rolled back ones, and each
     * after-commit callback saw its own row from a reader. */
    enum { WRITERS = 8 };
    writer_arg_t w[WRITERS];
    pthread_t th[WRITERS];
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (writer_arg_t){.db = db, .id = i, .fail = i == 3, .seen_after = -1};
        assert_int_equal(pthread_create(&th[i], NULL, writer_main, &w[i]), 0);
    }
    for (int i = 0; i < WRITERS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].rc, 0);
        if (i != 3) assert_int_equal(w[i].seen_after, 1);
    }
    assert_int_equal(query_int(db, "SELECT count(*) FROM items WHERE qty = 3"), 0);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items WHERE name LIKE 'w%'"),
                     (WRITERS - 1) * 20);
    td_db_close(db);

    /* And it is all on disk: a fresh open sees it. */
    db = td_db_open(path, migs_v2, 2, err, sizeof(err));
    assert_non_null(db);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items WHERE name LIKE 'w%'"),
                     (WRITERS - 1) * 20);
    td_db_close(db);
    free(path);
}

/* The statement cache: the same SQL gives back the same statement once
 * it was given back, a second one while the first is in use, and both
 * work. */
static void test_statement_cache(void **state)
{
    (void)state;
    char err[256];
    td_db_t *db = td_db_open(":memory:", migs_v2, 2, err, sizeof(err));
    assert_non_null(db);
    static const char sql[] = "SELECT count(*) FROM items";
    td_db_lock(db);
    sqlite3_stmt *a = td_db_prepare(db, sql);
    sqlite3_stmt *b = td_db_prepare(db, sql);
    assert_ptr_not_equal(a, b);
    assert_int_equal(sqlite3_step(a), SQLITE_ROW);
    assert_int_equal(sqlite3_step(b), SQLITE_ROW);
    td_db_done(b);
    td_db_done(a);
    sqlite3_stmt *c = td_db_prepare(db, sql);
    assert_ptr_equal(c, a);
    assert_int_equal(sqlite3_step(c), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(c, 0), 1);
    td_db_done(c);
    td_db_unlock(db);
    td_db_close(db);
}

/* The writer's page cache holds what a burst read and wrote; once no row
 * has changed for a while, the checkpoint thread hands it back. */
static void test_idle_cache_released(void **state)
{
    (void)state;
    char err[256];
    char *path = db_path("idle-cache");
    td_db_t *db = td_db_open(path, migs_v2, 2, err, sizeof(err));
    assert_non_null(db);
    assert_int_equal(td_db_begin(db), 0);
    sqlite3_stmt *st =
        td_db_prepare(db, "INSERT INTO items(name) VALUES (? || printf('%.*c', 4000, 'x'))");
    for (int i = 0; i < 2000; i++) {
        char c[16];
        snprintf(c, sizeof c, "%d", i);
        sqlite3_bind_text(st, 1, c, -1, SQLITE_TRANSIENT);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    td_db_done(st);
    assert_int_equal(td_db_commit(db), 0);
    int64_t busy = sqlite3_memory_used();
    assert_true(busy > 8 << 20); /* ~2,000 pages of 4 KiB, and more for the index */
    int64_t now = busy;
    for (int i = 0; i < 100 && now > busy / 2; i++) {
        td_sleep_ms(100);
        now = sqlite3_memory_used();
    }
    assert_true(now <= busy / 2);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items"), 2001);
    td_db_close(db);
    free(path);
}

/* A commit returns 0 only once its WAL sync is done: a failed sync fails
 * the unit waiting for it (its rows were written, but are not known to be
 * on disk), and every later one, since the kernel may have dropped the
 * pages it could not write and a later sync would prove nothing. */
static void test_failed_sync_acknowledges_nothing(void **state)
{
    (void)state;
    char err[256];
    char *path = db_path("wal-sync");
    td_db_t *db = td_db_open(path, migs_v2, 2, err, sizeof(err));
    assert_non_null(db);
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO items(name) VALUES ('synced')"), 0);
    assert_int_equal(td_db_commit(db), 0);

    td_fault_arm("db.wal_sync", 1, TD_FAULT_ERROR);
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO items(name) VALUES ('unsynced')"), 0);
    assert_int_equal(td_db_commit(db), TD_EIO);
    assert_string_equal(td_fault_fired(), "db.wal_sync");
    td_fault_disarm();
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO items(name) VALUES ('later')"), 0);
    assert_int_equal(td_db_commit(db), TD_EIO);
    /* A unit that writes nothing acknowledges nothing either. */
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_commit(db), TD_EIO);
    /* Without the sync (TIDINGS_DB_SYNC=normal) commits are acknowledged. */
    td_db_set_full_sync(db, false);
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO items(name) VALUES ('normal')"), 0);
    assert_int_equal(td_db_commit(db), 0);
    td_db_close(db);
    free(path);
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
        cmocka_unit_test(test_group_commit_and_readers),
        cmocka_unit_test(test_statement_cache),
        cmocka_unit_test(test_held_units),
        cmocka_unit_test(test_idle_cache_released),
        cmocka_unit_test(test_failed_sync_acknowledges_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
