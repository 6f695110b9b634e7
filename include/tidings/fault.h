/* Fault injection for tests (SQLite's faultsim): named fault points compiled
 * into the runtime at the instants where a crash or an error matters to the
 * guarantees of SPEC section 4 (before and after a commit, after a produce,
 * before an offset store ...). A test arms one fault, "the k-th hit of point
 * P (or of any point) crashes the process" or "... fails", runs a scenario,
 * and checks that nothing was lost or duplicated; a loop over k = 1, 2, 3 ...
 * reaches every instant the scenario passes through.
 *
 * TEST-ONLY. Disarmed (always, in production) a point costs one relaxed
 * atomic load. The environment can arm a fault in a real process:
 *   TIDINGS_FAULT=<point>:<k>:crash|crash-late|error   e.g. db.before_commit:3:crash
 * where <point> may be `*` (any point) or end in `*` (a prefix,
 * `relay.*`). Read once, at the first point the process reaches; a bad
 * value stops the process (exit 2) rather than run a test unarmed.
 *
 * The points and what TD_FAULT_ERROR does at each (the crashes do the same
 * everywhere):
 *   outbox.after_insert         row inserted in the caller's transaction:
 *                               td_outbox_add fails (TD_EIO), caller rolls back
 *   db.before_commit            td_db_commit rolls back and fails (TD_EIO)
 *   db.after_commit             committed, but td_db_commit reports TD_EIO
 *                               (the ambiguous outcome of a lost reply)
 *   db.wal_sync                 COMMIT written, its WAL sync not begun: the
 *                               sync fails (as on an I/O error), the units
 *                               waiting for it and every later one get TD_EIO
 *   relay.after_produce         batch produced, reports not yet served: the
 *                               reports count as failed, rows are published again
 *   relay.before_delete         persisted, rows not deleted: published again
 *   relay.after_delete          rows deleted (ERROR: nothing to fail)
 *   consumer.before_handler     inbox row inserted, handler not run: the
 *                               batch is rolled back and retried
 *   consumer.handler_rejects    the handler succeeded: its event is treated as
 *                               rejected for good instead (dead-lettered, its
 *                               effects rolled back), as by a bug that a new
 *                               release fixes (redrive tests)
 *   consumer.mid_batch          a record done, the next not begun (inside the
 *                               batch's unit): rolled back, retried
 *   consumer.before_commit      every record done, before COMMIT: rolled back,
 *                               retried
 *   consumer.after_commit       batch committed (handled, skipped, duplicate
 *                               or dead-lettered), offsets not stored: retried
 *   consumer.after_offset_store offset stored (ERROR: nothing to fail)
 *
 * Threading: every function may be called from any thread. The hit count
 * is exact across threads (the armed path takes a mutex). */
#ifndef TIDINGS_FAULT_H
#define TIDINGS_FAULT_H

#include <stdatomic.h>

#include "tidings/common.h"

typedef enum td_fault_action {
    TD_FAULT_CRASH = 1, /* _exit(TD_FAULT_EXIT) at once: no flush, no atexit, like kill -9 */
    TD_FAULT_ERROR = 2, /* the call site takes its error path, once */
    /* A process that hangs at the point and is killed later: every thread
     * that reaches a point stops there (so no SQLite commit happens), while
     * librdkafka's own threads run on for TD_FAULT_LATE_MS (offset auto
     * commits, deliveries in flight, heartbeats); then as CRASH. It catches
     * what an instant crash cannot, such as an offset stored before the
     * effect commits and auto-committed meanwhile. */
    TD_FAULT_CRASH_LATE = 3,
} td_fault_action_t;

/* The exit status of a process crashed by a fault. */
#define TD_FAULT_EXIT 97
/* How long TD_FAULT_CRASH_LATE lets the background run: longer than the
 * consumers' offset auto-commit interval (1 s, consumer.c). */
#define TD_FAULT_LATE_MS 1500

/* Arms one fault: the k-th hit (k >= 1) of point, counting only the hits of
 * point (NULL or "*": of every point; "relay.*": of every point with that
 * prefix), performs action. Resets the hit count and what fired. point is
 * copied. */
void td_fault_arm(const char *point, long k, td_fault_action_t action);
/* Parses and arms "<point>:<k>:crash|crash-late|error". 0, or TD_EINVAL
 * with errstr. */
int td_fault_arm_spec(const char *spec, char *errstr, size_t errlen);
/* Disarms: points cost one atomic load again. Hits and what fired stay
 * readable. */
void td_fault_disarm(void);
/* Hits of the armed point(s) since the last arm, the firing one included
 * (ERROR faults keep counting after they fired). */
long td_fault_hits(void);
/* The point that fired since the last arm (a static string), or NULL. */
const char *td_fault_fired(void);
/* When a fault fires, one line "<point> <k> <action>\n" is written to
 * fd with one write(2) before the action (-1: no report; the default).
 * A line always goes to stderr as well. */
void td_fault_report_fd(int fd);

/* ---- for the call sites in the runtime --------------------------------- */

/* Non-zero while a fault is armed, or before the environment was read. */
extern atomic_int td__fault_armed;
/* The armed path of td__fault. */
bool td__fault_hit(const char *point);

/* At a fault point: false (nothing to do) unless an armed ERROR fault fires
 * here now; an armed crash that fires does not return. point is a
 * string literal ("consumer.before_commit"). */
static inline bool td__fault(const char *point)
{
    return atomic_load_explicit(&td__fault_armed, memory_order_relaxed) && td__fault_hit(point);
}

#endif
