/* A background worker: one thread that runs rounds of work when woken
 * (td_worker_wake, e.g. from a commit hook: "there are rows now"), when
 * the deadline its last round asked for passes (a backoff, a periodic
 * look for rows another process wrote), and never more often than that.
 * The durable queues (the outbox relay, the delivery queue's scheduler,
 * the fan-out jobs, the checkpoints and retention) are a table, a round
 * over it and one of these.
 *
 * Deadlines are td_mono_ms times, so a change of the wall clock moves
 * none of them. Rounds run on the worker's thread only, one at a time. */
#ifndef TIDINGS_WORKER_H
#define TIDINGS_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct td_worker td_worker_t;

/* One round, on w's thread (w is passed because the first round may run
 * before td_worker_start has returned it). woken: td_worker_wake was
 * called since the last round began (a round is always run once at start,
 * with woken true). now: td_mono_ms.
 * Returns the td_mono_ms time of the next round without a wake; a time
 * already past runs the next round at once. */
typedef int64_t (*td_worker_round_fn)(td_worker_t *w, void *arg, bool woken, int64_t now);

typedef struct td_worker_opts {
    const char *name; /* for logs and tidings_worker_rounds_total{worker} */
    td_worker_round_fn round;
    /* On the worker's thread after the stop was asked for, once the last
     * round has returned (a last bounded attempt, a cleanup); optional. */
    void (*finish)(void *arg);
    void *arg;
} td_worker_opts_t;

/* Starts the thread; NULL with errstr when it cannot. */
td_worker_t *td_worker_start(const td_worker_opts_t *opts, char *errstr, size_t errlen);
/* Asks for a round as soon as the current one (if any) returns. Any
 * thread, cheap, never blocks on a round. */
void td_worker_wake(td_worker_t *w);
/* True once td_worker_stop was called: a long round checks it. */
bool td_worker_stopping(const td_worker_t *w);
/* Asks the thread to stop, waits for the round under way and finish, and
 * frees w. NULL is a no-op. Not from the worker's own thread. */
void td_worker_stop(td_worker_t *w);

#endif
