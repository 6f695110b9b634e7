/* Process-wide metrics in the Prometheus text format: counters, gauges
 * (set, or read from a callback at scrape time) and latency histograms.
 * Labels are passed preformatted ('topic="tidings.orders",type="X"'),
 * built with td_metric_labels so values are escaped. Thread-safe. */
#ifndef TIDINGS_METRICS_H
#define TIDINGS_METRICS_H

#include "tidings/common.h"

/* HELP and TYPE ("counter", "gauge", "histogram") of a family. Optional;
 * families without one get a generic HELP line. */
void td_metric_describe(const char *name, const char *type, const char *help);
void td_metric_inc(const char *name, const char *labels);
void td_metric_add(const char *name, const char *labels, double v);
void td_metric_set(const char *name, const char *labels, double v);
/* Observes a duration in seconds (buckets 0.5 ms .. 10 s). */
void td_metric_observe(const char *name, const char *labels, double seconds);

typedef double (*td_metric_fn)(void *arg);
/* A gauge read at scrape time. Unregister (by arg) before arg dies. */
void td_metric_gauge_fn(const char *name, const char *labels, td_metric_fn fn, void *arg);
void td_metric_unregister(void *arg);

/* Current value of a counter or gauge (0 when absent). For tests. */
double td_metric_value(const char *name, const char *labels);

/* Formats k="v" pairs (NULL-terminated list of key, value) into buf,
 * escaping values. Returns buf. */
char *td_metric_labels(char *buf, size_t len, ...);

/* The whole registry as Prometheus text. Caller frees. */
char *td_metrics_render(void);
/* Forgets everything (tests). */
void td_metrics_reset(void);

#endif
