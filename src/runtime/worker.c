/* td_worker_t (tidings/worker.h): a thread, a condition variable on the
 * monotonic clock, a wake flag and a stop flag. */
#include "tidings/worker.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "tidings/common.h"
#include "tidings/metrics.h"

struct td_worker {
    td_worker_opts_t opts;
    char *name;
    char labels[96];
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool woken; /* under mu */
    atomic_bool stop;
};

static void *worker_main(void *arg)
{
    td_worker_t *w = arg;
    bool woken = true;
    for (;;) {
        if (atomic_load(&w->stop)) break;
        int64_t next = w->opts.round(w, w->opts.arg, woken, td_mono_ms());
        td_metric_inc("tidings_worker_rounds_total", w->labels);
        struct timespec ts = td_mono_timespec(next);
        pthread_mutex_lock(&w->mu);
        while (!w->woken && !atomic_load(&w->stop) && td_mono_ms() < next)
            pthread_cond_timedwait(&w->cv, &w->mu, &ts);
        woken = w->woken;
        w->woken = false;
        pthread_mutex_unlock(&w->mu);
    }
    if (w->opts.finish) w->opts.finish(w->opts.arg);
    return NULL;
}

td_worker_t *td_worker_start(const td_worker_opts_t *opts, char *errstr, size_t errlen)
{
    assert(opts->round && opts->name);
    td_worker_t *w = td_calloc(1, sizeof(*w));
    w->opts = *opts;
    w->name = td_strdup(opts->name);
    w->opts.name = w->name;
    atomic_init(&w->stop, false);
    td_metric_labels(w->labels, sizeof(w->labels), "worker", w->name, NULL);
    td_metric_describe("tidings_worker_rounds_total", "counter",
                       "Rounds of work run by a background worker");
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        td_errf(errstr, errlen, TD_EIO, "cannot start the %s thread", w->name);
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w->name);
        free(w);
        return NULL;
    }
    return w;
}

void td_worker_wake(td_worker_t *w)
{
    pthread_mutex_lock(&w->mu);
    if (!w->woken) {
        w->woken = true;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
}

bool td_worker_stopping(const td_worker_t *w)
{
    return atomic_load(&w->stop);
}

void td_worker_stop(td_worker_t *w)
{
    if (!w) return;
    assert(!pthread_equal(pthread_self(), w->thread) && "a worker cannot stop itself");
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->stop, true);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->name);
    free(w);
}
