/* A bounded pool of worker threads for slow CPU work that must not run on
 * HTTP threads (argon2id password hashing: 64 MiB and tens of
 * milliseconds each). It holds at most `threads` jobs running and
 * `queue_max` waiting; a caller that finds it full gets TD_EAGAIN at once
 * and answers 503, rather than queueing without bound, so a flood costs
 * the flooder, not everyone else.
 *
 * A place can be taken before the work is known (td_pool_reserve), so a
 * handler can refuse with 503 before it changes anything, then give the
 * job (td_pool_run) or the place back (td_pool_release). Metrics, by
 * pool name: the gauge tidings_pool_jobs{pool} (running and waiting) and
 * tidings_pool_rejected_total{pool}. Any thread. */
#ifndef TIDINGS_POOL_H
#define TIDINGS_POOL_H

#include "tidings/common.h"

typedef struct td_pool td_pool_t;
typedef void (*td_pool_fn)(void *arg);

/* Starts threads workers (at least 1) with room for queue_max waiting
 * jobs. name labels the metrics ("password_hash"). NULL when no thread
 * could be started. */
td_pool_t *td_pool_new(const char *name, unsigned threads, unsigned queue_max);
/* Takes one place: 0, or TD_EAGAIN (counted as rejected) when
 * threads + queue_max jobs are running or waiting. */
int td_pool_reserve(td_pool_t *pool);
/* Runs fn(arg) on a pool thread, in a place taken by td_pool_reserve.
 * fn owns arg. */
void td_pool_run(td_pool_t *pool, td_pool_fn fn, void *arg);
/* Gives back a place taken by td_pool_reserve and not used. */
void td_pool_release(td_pool_t *pool);
/* td_pool_reserve then td_pool_run: 0 or TD_EAGAIN (fn not called). */
int td_pool_submit(td_pool_t *pool, td_pool_fn fn, void *arg);
/* Jobs running or waiting, places reserved included. */
unsigned td_pool_load(td_pool_t *pool);
/* Runs every job given so far to its end, then stops the threads and
 * frees the pool. Give it no work meanwhile. NULL is fine. */
void td_pool_free(td_pool_t *pool);

#endif
