/* Fault injection (tidings/fault.h): the armed path of the fault points.
 * Disarmed, td__fault is one relaxed load of td__fault_armed and never gets
 * here. td__fault_armed starts at 1 so that the first point a process
 * reaches comes here once and reads TIDINGS_FAULT: a real service can be
 * armed from its environment without any start-up code knowing about
 * faults. Armed, every hit takes one mutex, which makes "the k-th hit"
 * exact however many threads race through points; only tests pay that. */
#include "tidings/fault.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

atomic_int td__fault_armed = 1;

static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t fault_mu = PTHREAD_MUTEX_INITIALIZER;
/* All under fault_mu. */
static bool armed;
static char *pattern; /* NULL: every point */
static long fire_at;
static td_fault_action_t fault_action;
static long hits;
static const char *fired;
static int report_fd = -1;

/* "*" matches everything, "relay.*" every point starting "relay.". */
static bool point_matches(const char *point)
{
    if (!pattern) return true;
    size_t n = strlen(pattern);
    if (n > 0 && pattern[n - 1] == '*') return strncmp(point, pattern, n - 1) == 0;
    return strcmp(point, pattern) == 0;
}

static void arm_locked(const char *point, long k, td_fault_action_t action)
{
    free(pattern);
    pattern = point && strcmp(point, "*") != 0 ? td_strdup(point) : NULL;
    fire_at = k;
    fault_action = action;
    hits = 0;
    fired = NULL;
    armed = true;
    atomic_store(&td__fault_armed, 1);
}

static int arm_spec(const char *spec, char *errstr, size_t errlen);

static void read_env(void)
{
    const char *spec = getenv("TIDINGS_FAULT");
    if (spec && *spec) {
        char err[256];
        if (arm_spec(spec, err, sizeof(err)) != 0) {
            /* A fault test that silently ran unarmed would pass for
             * nothing: refuse to run instead. */
            fprintf(stderr, "tidings: TIDINGS_FAULT: %s\n", err);
            _exit(2);
        }
        return;
    }
    pthread_mutex_lock(&fault_mu);
    if (!armed) atomic_store(&td__fault_armed, 0);
    pthread_mutex_unlock(&fault_mu);
}

void td_fault_arm(const char *point, long k, td_fault_action_t action)
{
    /* The environment is read first so that it never overrides an arm. */
    pthread_once(&env_once, read_env);
    pthread_mutex_lock(&fault_mu);
    arm_locked(point, k, action);
    pthread_mutex_unlock(&fault_mu);
}

static int arm_spec(const char *spec, char *errstr, size_t errlen)
{
    const char *c1 = spec ? strchr(spec, ':') : NULL;
    const char *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c1 || !c2 || c1 == spec)
        return td_errf(errstr, errlen, TD_EINVAL,
                       "\"%s\" is not <point>:<k>:crash|crash-late|error (e.g. "
                       "db.before_commit:3:crash)",
                       spec ? spec : "");
    char *end = NULL;
    errno = 0;
    long k = strtol(c1 + 1, &end, 10);
    if (end != c2 || k < 1 || errno == ERANGE)
        return td_errf(errstr, errlen, TD_EINVAL, "\"%.*s\" is not a hit number >= 1",
                       (int)(c2 - c1 - 1), c1 + 1);
    td_fault_action_t action;
    if (!strcmp(c2 + 1, "crash"))
        action = TD_FAULT_CRASH;
    else if (!strcmp(c2 + 1, "crash-late"))
        action = TD_FAULT_CRASH_LATE;
    else if (!strcmp(c2 + 1, "error"))
        action = TD_FAULT_ERROR;
    else
        return td_errf(errstr, errlen, TD_EINVAL, "action \"%s\" is not crash, crash-late or error",
                       c2 + 1);
    char *point = td_strndup(spec, (size_t)(c1 - spec));
    pthread_mutex_lock(&fault_mu);
    arm_locked(point, k, action);
    pthread_mutex_unlock(&fault_mu);
    free(point);
    return 0;
}

int td_fault_arm_spec(const char *spec, char *errstr, size_t errlen)
{
    pthread_once(&env_once, read_env);
    return arm_spec(spec, errstr, errlen);
}

void td_fault_disarm(void)
{
    pthread_once(&env_once, read_env);
    pthread_mutex_lock(&fault_mu);
    armed = false;
    atomic_store(&td__fault_armed, 0);
    pthread_mutex_unlock(&fault_mu);
}

long td_fault_hits(void)
{
    pthread_mutex_lock(&fault_mu);
    long n = hits;
    pthread_mutex_unlock(&fault_mu);
    return n;
}

const char *td_fault_fired(void)
{
    pthread_mutex_lock(&fault_mu);
    const char *p = fired;
    pthread_mutex_unlock(&fault_mu);
    return p;
}

void td_fault_report_fd(int fd)
{
    pthread_mutex_lock(&fault_mu);
    report_fd = fd;
    pthread_mutex_unlock(&fault_mu);
}

/* One write(2) per line, so a report is never torn, and nothing that
 * allocates: a crash follows. A failed write changes nothing: the action
 * still happens. */
static void report(const char *point, long k, td_fault_action_t action)
{
    const char *what = action == TD_FAULT_CRASH        ? "crash"
                       : action == TD_FAULT_CRASH_LATE ? "crash-late"
                                                       : "error";
    char line[256];
    int n = snprintf(line, sizeof(line), "%s %ld %s\n", point, k, what);
    if (n > (int)sizeof(line) - 1) n = (int)sizeof(line) - 1;
    ssize_t w = 0;
    if (report_fd >= 0 && n > 0) w = write(report_fd, line, (size_t)n);
    n = snprintf(line, sizeof(line), "tidings: fault point %s, hit %ld: %s\n", point, k, what);
    if (n > (int)sizeof(line) - 1) n = (int)sizeof(line) - 1;
    if (n > 0) w = write(2, line, (size_t)n);
    (void)w;
}

bool td__fault_hit(const char *point)
{
    pthread_once(&env_once, read_env);
    bool fire = false;
    pthread_mutex_lock(&fault_mu);
    if (armed && point_matches(point)) {
        hits++;
        if (hits == fire_at) {
            fired = point;
            report(point, hits, fault_action);
            /* Holding the lock, so no other thread passes a point
             * between the hit and the exit. */
            if (fault_action == TD_FAULT_CRASH_LATE) td_sleep_ms(TD_FAULT_LATE_MS);
            if (fault_action != TD_FAULT_ERROR) _exit(TD_FAULT_EXIT);
            fire = true;
        }
    }
    pthread_mutex_unlock(&fault_mu);
    return fire;
}
