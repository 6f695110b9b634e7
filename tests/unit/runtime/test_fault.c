/* Fault injection (tidings/fault.h): the k-th hit counting for one point, a
 * prefix or every point, the one-shot error, the crashes (exit status,
 * report line, the late crash's delay), the TIDINGS_FAULT spec and its
 * environment variable (in a fresh process: the environment is read once),
 * and what the two points in td_db_commit do to a real transaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tidings/db.h"
#include "tidings/fault.h"

static void test_disarmed(void **state)
{
    (void)state;
    td_fault_disarm();
    for (int i = 0; i < 100; i++) assert_false(td__fault("db.before_commit"));
    assert_null(td_fault_fired());
}

static void test_error_at_kth_hit_of_a_point(void **state)
{
    (void)state;
    td_fault_arm("db.before_commit", 3, TD_FAULT_ERROR);
    assert_false(td__fault("db.before_commit"));
    assert_false(td__fault("db.after_commit")); /* another point: not counted */
    assert_false(td__fault("db.before_commit"));
    assert_int_equal(td_fault_hits(), 2);
    assert_null(td_fault_fired());
    assert_true(td__fault("db.before_commit"));
    assert_string_equal(td_fault_fired(), "db.before_commit");
    /* Once: later hits are counted but do not fail. */
    assert_false(td__fault("db.before_commit"));
    assert_int_equal(td_fault_hits(), 4);
    td_fault_disarm();
    assert_false(td__fault("db.before_commit"));
    assert_int_equal(td_fault_hits(), 4);
}

static void test_any_point_and_prefix(void **state)
{
    (void)state;
    td_fault_arm(NULL, 3, TD_FAULT_ERROR);
    assert_false(td__fault("outbox.after_insert"));
    assert_false(td__fault("relay.after_produce"));
    assert_true(td__fault("consumer.before_commit"));
    assert_string_equal(td_fault_fired(), "consumer.before_commit");

    td_fault_arm("*", 1, TD_FAULT_ERROR);
    assert_true(td__fault("db.after_commit"));

    td_fault_arm("relay.*", 2, TD_FAULT_ERROR);
    assert_false(td__fault("relay.after_produce"));
    assert_false(td__fault("db.before_commit"));
    assert_false(td__fault("consumer.after_commit"));
    assert_true(td__fault("relay.before_delete"));
    assert_int_equal(td_fault_hits(), 2);
    td_fault_disarm();
}

static void test_spec(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(td_fault_arm_spec("consumer.after_commit:2:error", err, sizeof err), 0);
    assert_false(td__fault("consumer.after_commit"));
    assert_true(td__fault("consumer.after_commit"));
    assert_int_equal(td_fault_arm_spec("*:1:error", err, sizeof err), 0);
    assert_true(td__fault("anything"));
    td_fault_disarm();

    static const char *const bad[] = {
        "",
        "db.before_commit",
        "db.before_commit:3",
        ":3:crash",
        "x:0:crash",
        "x:-1:crash",
        "x:3x:crash",
        "x:3:explode",
        "x::crash",
        "x:3:crash:extra",
        "x:99999999999999999999:crash",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = '\0';
        if (td_fault_arm_spec(bad[i], err, sizeof err) != TD_EINVAL)
            fail_msg("\"%s\" accepted", bad[i]);
        assert_true(err[0] != '\0');
    }
    assert_int_equal(td_fault_arm_spec(NULL, err, sizeof err), TD_EINVAL);
    /* A rejected spec arms nothing. */
    assert_false(td__fault("x"));
}

/* Runs fn in a child; its exit status, the time it took, and what it wrote
 * to the report pipe. */
static int in_child(void (*fn)(int report), int64_t *ms, char *report, size_t len)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    int64_t t0 = td_mono_ms();
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(p[0]);
        fn(p[1]);
        _exit(0);
    }
    close(p[1]);
    ssize_t n = read(p[0], report, len - 1);
    report[n > 0 ? n : 0] = '\0';
    close(p[0]);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    *ms = td_mono_ms() - t0;
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void crash_second_hit(int report)
{
    td_fault_report_fd(report);
    td_fault_arm(NULL, 2, TD_FAULT_CRASH);
    td__fault("outbox.after_insert");
    td__fault("relay.after_produce"); /* does not return */
    _exit(1);
}

static void crash_late_first_hit(int report)
{
    td_fault_report_fd(report);
    td_fault_arm("consumer.before_commit", 1, TD_FAULT_CRASH_LATE);
    td__fault("consumer.before_commit");
    _exit(1);
}

static void test_crash(void **state)
{
    (void)state;
    char report[256];
    int64_t ms;
    assert_int_equal(in_child(crash_second_hit, &ms, report, sizeof report), TD_FAULT_EXIT);
    assert_string_equal(report, "relay.after_produce 2 crash\n");
    assert_int_equal(in_child(crash_late_first_hit, &ms, report, sizeof report), TD_FAULT_EXIT);
    assert_string_equal(report, "consumer.before_commit 1 crash-late\n");
    assert_true(ms >= TD_FAULT_LATE_MS);
}

/* The environment is read once per process, at its first point: a fresh
 * process of this program (see main) is armed by TIDINGS_FAULT alone. */
static int run_env_child(const char *spec)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        setenv("TIDINGS_FAULT", spec, 1);
        execl("/proc/self/exe", "test_fault", "--env-child", (char *)NULL);
        _exit(126);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_environment(void **state)
{
    (void)state;
    /* The child hits db.before_commit three times, then exits 0. */
    assert_int_equal(run_env_child("db.before_commit:3:crash"), TD_FAULT_EXIT);
    assert_int_equal(run_env_child("db.before_commit:4:crash"), 0);
    assert_int_equal(run_env_child("db.*:2:crash"), TD_FAULT_EXIT);
    assert_int_equal(run_env_child("db.before_commit:2:error"), 0);
    /* A bad value stops the process instead of running it unarmed. */
    assert_int_equal(run_env_child("db.before_commit:two:crash"), 2);
}

static const td_migration_t migs[] = {{1, "CREATE TABLE t (v INTEGER);"}};

static int64_t count_rows(td_db_t *db)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, "SELECT count(*) FROM t");
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(db);
    return n;
}

static void test_db_commit_points(void **state)
{
    (void)state;
    char err[256];
    td_db_t *db = td_db_open(":memory:", migs, 1, err, sizeof err);
    assert_non_null(db);

    /* before_commit: rolled back and reported. */
    td_fault_arm("db.before_commit", 1, TD_FAULT_ERROR);
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO t VALUES (1)"), 0);
    assert_int_equal(td_db_commit(db), TD_EIO);
    assert_int_equal(count_rows(db), 0);

    /* after_commit: committed, yet reported failed. */
    td_fault_arm("db.after_commit", 1, TD_FAULT_ERROR);
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO t VALUES (2)"), 0);
    assert_int_equal(td_db_commit(db), TD_EIO);
    assert_int_equal(count_rows(db), 1);

    /* Disarmed: plain commits. */
    td_fault_disarm();
    assert_int_equal(td_db_begin(db), 0);
    assert_int_equal(td_db_exec(db, "INSERT INTO t VALUES (3)"), 0);
    assert_int_equal(td_db_commit(db), 0);
    assert_int_equal(count_rows(db), 2);
    td_db_close(db);
}

int main(int argc, char **argv)
{
    if (argc == 2 && !strcmp(argv[1], "--env-child")) {
        for (int i = 0; i < 3; i++) td__fault("db.before_commit");
        return 0;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disarmed),
        cmocka_unit_test(test_error_at_kth_hit_of_a_point),
        cmocka_unit_test(test_any_point_and_prefix),
        cmocka_unit_test(test_spec),
        cmocka_unit_test(test_crash),
        cmocka_unit_test(test_environment),
        cmocka_unit_test(test_db_commit_points),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
