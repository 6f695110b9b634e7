/* The bounded work pool (see tidings/pool.h): a FIFO of jobs under one
 * mutex, worker threads that take them, and a count of places taken
 * (reserved, waiting or running) that never passes threads + queue_max.
 * The count is what admission looks at; the queue only holds what was
 * given to run. */
#include "tidings/pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/log.h"
#include "tidings/metrics.h"

typedef struct job {
    td_pool_fn fn;
    void *arg;
    struct job *next;
} job_t;

struct td_pool {
    char *name;
    char labels[96];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job_t *head, *tail;
    unsigned taken; /* places reserved, waiting or running */
    unsigned cap;   /* threads + queue_max */
    bool stopping;
    pthread_t *threads;
    unsigned thread_cnt;
};

static void *worker_main(void *arg)
{
    td_pool_t *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->head && !p->stopping) pthread_cond_wait(&p->cv, &p->mu);
        job_t *j = p->head;
        if (!j) break; /* stopping and nothing left */
        p->head = j->next;
        if (!p->head) p->tail = NULL;
        pthread_mutex_unlock(&p->mu);
        j->fn(j->arg);
        free(j);
        pthread_mutex_lock(&p->mu);
        p->taken--;
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

static double load_gauge(void *arg)
{
    return (double)td_pool_load(arg);
}

td_pool_t *td_pool_new(const char *name, unsigned threads, unsigned queue_max)
{
    td_pool_t *p = td_calloc(1, sizeof(*p));
    p->name = td_strdup(name ? name : "pool");
    td_metric_labels(p->labels, sizeof(p->labels), "pool", p->name, NULL);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    if (threads == 0) threads = 1;
    p->cap = threads + queue_max;
    p->threads = td_calloc(threads, sizeof(*p->threads));
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker_main, p) != 0) break;
        p->thread_cnt++;
    }
    if (p->thread_cnt == 0) {
        td_pool_free(p);
        return NULL;
    }
    td_metric_describe("tidings_pool_jobs", "gauge",
                       "Jobs running or waiting in a bounded work pool (password hashing)");
    td_metric_describe("tidings_pool_rejected_total", "counter",
                       "Jobs refused because their pool was full (answered 503)");
    td_metric_gauge_fn("tidings_pool_jobs", p->labels, load_gauge, p);
    return p;
}

int td_pool_reserve(td_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    bool ok = !p->stopping && p->taken < p->cap;
    if (ok) p->taken++;
    pthread_mutex_unlock(&p->mu);
    if (!ok) td_metric_inc("tidings_pool_rejected_total", p->labels);
    return ok ? 0 : TD_EAGAIN;
}

void td_pool_run(td_pool_t *p, td_pool_fn fn, void *arg)
{
    job_t *j = td_calloc(1, sizeof(*j));
    j->fn = fn;
    j->arg = arg;
    pthread_mutex_lock(&p->mu);
    if (p->tail)
        p->tail->next = j;
    else
        p->head = j;
    p->tail = j;
    pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
}

void td_pool_release(td_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    p->taken--;
    pthread_mutex_unlock(&p->mu);
}

int td_pool_submit(td_pool_t *p, td_pool_fn fn, void *arg)
{
    int rc = td_pool_reserve(p);
    if (rc == 0) td_pool_run(p, fn, arg);
    return rc;
}

unsigned td_pool_load(td_pool_t *p)
{
    pthread_mutex_lock(&p->mu);
    unsigned n = p->taken;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void td_pool_free(td_pool_t *p)
{
    if (!p) return;
    td_metric_unregister(p);
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->thread_cnt; i++) pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->name);
    free(p);
}
