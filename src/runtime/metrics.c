/* The process-wide metrics registry behind /metrics. Each series is one
 * (name, labels) pair held in a small hash table under one mutex; updates
 * are a lookup and an add, cheap enough for every HTTP request and Kafka
 * message. Rendering sorts the series by name and labels, so a family's
 * series sit together under one # HELP / # TYPE pair as the Prometheus text
 * format 0.0.4 requires, and the output is stable for tests and diffs.
 *
 * Gauge callbacks are called at scrape time without the registry mutex (a
 * callback may take a database lock whose holder is itself updating a
 * metric), but under a second mutex that td_metric_unregister also takes:
 * once unregister returns, the callback is not running and never will. */
#include "tidings/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum series_kind { KIND_COUNTER, KIND_GAUGE, KIND_FN, KIND_HISTOGRAM };

/* Upper bounds of the histogram buckets, in seconds; +Inf is implied. */
static const double bucket_le[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                   0.1,    0.25,  0.5,    1,     2.5,  5,     10};
#define BUCKET_CNT TD_ARRAY_SIZE(bucket_le)

typedef struct series {
    char *name;
    char *labels; /* preformatted, "" when none */
    enum series_kind kind;
    double value; /* counter, gauge, and the last value read from fn */
    td_metric_fn fn;
    void *arg;
    uint64_t buckets[BUCKET_CNT + 1]; /* not cumulative; last is +Inf */
    double sum;
    uint64_t count;
    struct series *hnext;
} series_t;

typedef struct desc {
    char *name;
    char *type;
    char *help;
} desc_t;

#define HASH_SIZE 1024

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
/* Held while callbacks run and while they are added or removed. Always
 * taken before reg_mu. */
static pthread_mutex_t fn_mu = PTHREAD_MUTEX_INITIALIZER;
static series_t *table[HASH_SIZE];
static series_t **all;
static size_t all_cnt, all_cap;
static desc_t *descs;
static size_t desc_cnt, desc_cap;

static uint32_t series_hash(const char *name, const char *labels)
{
    uint32_t h = 2166136261u;
    for (const char *p = name; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    h = (h ^ 0xffu) * 16777619u;
    for (const char *p = labels; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    return h;
}

/* The series (name, labels), created with kind when absent. reg_mu held. */
static series_t *series_get(const char *name, const char *labels, enum series_kind kind)
{
    if (!labels) labels = "";
    uint32_t h = series_hash(name, labels) % HASH_SIZE;
    for (series_t *s = table[h]; s; s = s->hnext)
        if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0) return s;
    series_t *s = td_calloc(1, sizeof(*s));
    s->name = td_strdup(name);
    s->labels = td_strdup(labels);
    s->kind = kind;
    s->hnext = table[h];
    table[h] = s;
    if (all_cnt == all_cap) {
        all_cap = all_cap ? all_cap * 2 : 64;
        all = td_realloc(all, all_cap * sizeof(*all));
    }
    all[all_cnt++] = s;
    return s;
}

static series_t *series_find(const char *name, const char *labels)
{
    if (!labels) labels = "";
    uint32_t h = series_hash(name, labels) % HASH_SIZE;
    for (series_t *s = table[h]; s; s = s->hnext)
        if (strcmp(s->name, name) == 0 && strcmp(s->labels, labels) == 0) return s;
    return NULL;
}

static void series_remove(series_t *s)
{
    uint32_t h = series_hash(s->name, s->labels) % HASH_SIZE;
    for (series_t **pp = &table[h]; *pp; pp = &(*pp)->hnext) {
        if (*pp == s) {
            *pp = s->hnext;
            break;
        }
    }
    for (size_t i = 0; i < all_cnt; i++) {
        if (all[i] == s) {
            memmove(&all[i], &all[i + 1], (all_cnt - i - 1) * sizeof(*all));
            all_cnt--;
            break;
        }
    }
    free(s->name);
    free(s->labels);
    free(s);
}

void td_metric_describe(const char *name, const char *type, const char *help)
{
    pthread_mutex_lock(&reg_mu);
    desc_t *d = NULL;
    for (size_t i = 0; i < desc_cnt; i++)
        if (strcmp(descs[i].name, name) == 0) d = &descs[i];
    if (!d) {
        if (desc_cnt == desc_cap) {
            desc_cap = desc_cap ? desc_cap * 2 : 32;
            descs = td_realloc(descs, desc_cap * sizeof(*descs));
        }
        d = &descs[desc_cnt++];
        d->name = td_strdup(name);
    } else {
        free(d->type);
        free(d->help);
    }
    d->type = td_strdup(type ? type : "untyped");
    d->help = td_strdup(help ? help : "");
    pthread_mutex_unlock(&reg_mu);
}

void td_metric_add(const char *name, const char *labels, double v)
{
    pthread_mutex_lock(&reg_mu);
    series_t *s = series_get(name, labels, KIND_COUNTER);
    if (s->kind == KIND_COUNTER || s->kind == KIND_GAUGE) s->value += v;
    pthread_mutex_unlock(&reg_mu);
}

void td_metric_inc(const char *name, const char *labels)
{
    td_metric_add(name, labels, 1);
}

void td_metric_set(const char *name, const char *labels, double v)
{
    pthread_mutex_lock(&reg_mu);
    series_t *s = series_get(name, labels, KIND_GAUGE);
    if (s->kind == KIND_COUNTER || s->kind == KIND_GAUGE) s->value = v;
    pthread_mutex_unlock(&reg_mu);
}

void td_metric_observe(const char *name, const char *labels, double seconds)
{
    if (isnan(seconds)) return;
    pthread_mutex_lock(&reg_mu);
    series_t *s = series_get(name, labels, KIND_HISTOGRAM);
    if (s->kind == KIND_HISTOGRAM) {
        size_t i = 0;
        while (i < BUCKET_CNT && seconds > bucket_le[i]) i++;
        s->buckets[i]++;
        s->sum += seconds;
        s->count++;
    }
    pthread_mutex_unlock(&reg_mu);
}

void td_metric_gauge_fn(const char *name, const char *labels, td_metric_fn fn, void *arg)
{
    pthread_mutex_lock(&fn_mu);
    pthread_mutex_lock(&reg_mu);
    series_t *s = series_get(name, labels, KIND_FN);
    s->kind = KIND_FN;
    s->fn = fn;
    s->arg = arg;
    pthread_mutex_unlock(&reg_mu);
    pthread_mutex_unlock(&fn_mu);
}

void td_metric_unregister(void *arg)
{
    pthread_mutex_lock(&fn_mu);
    pthread_mutex_lock(&reg_mu);
    for (size_t i = all_cnt; i > 0; i--) {
        series_t *s = all[i - 1];
        if (s->kind == KIND_FN && s->arg == arg) series_remove(s);
    }
    pthread_mutex_unlock(&reg_mu);
    pthread_mutex_unlock(&fn_mu);
}

double td_metric_value(const char *name, const char *labels)
{
    double v = 0;
    pthread_mutex_lock(&fn_mu);
    pthread_mutex_lock(&reg_mu);
    series_t *s = series_find(name, labels);
    td_metric_fn fn = NULL;
    void *arg = NULL;
    if (s && s->kind == KIND_FN) {
        fn = s->fn;
        arg = s->arg;
    } else if (s && s->kind == KIND_HISTOGRAM) {
        v = (double)s->count;
    } else if (s) {
        v = s->value;
    }
    pthread_mutex_unlock(&reg_mu);
    if (fn) v = fn(arg);
    pthread_mutex_unlock(&fn_mu);
    return v;
}

char *td_metric_labels(char *buf, size_t len, ...)
{
    if (!buf || !len) return buf;
    buf[0] = '\0';
    size_t n = 0;
    va_list ap;
    va_start(ap, len);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (!key) break;
        const char *val = va_arg(ap, const char *);
        if (!val) val = "";
        /* Write the pair after n; keep it only if it fits whole, so a
         * too-small buffer drops pairs rather than producing a broken
         * label set. */
        size_t m = n;
        bool fits = true;
#define PUT(c)              \
    do {                    \
        if (m + 1 >= len) { \
            fits = false;   \
        } else {            \
            buf[m++] = (c); \
        }                   \
    } while (0)
        if (n > 0) PUT(',');
        for (const char *p = key; *p && fits; p++) PUT(*p);
        PUT('=');
        PUT('"');
        for (const char *p = val; *p && fits; p++) {
            if (*p == '\\') {
                PUT('\\');
                PUT('\\');
            } else if (*p == '"') {
                PUT('\\');
                PUT('"');
            } else if (*p == '\n') {
                PUT('\\');
                PUT('n');
            } else {
                PUT(*p);
            }
        }
        PUT('"');
#undef PUT
        if (!fits) break;
        n = m;
    }
    va_end(ap);
    buf[n] = '\0';
    return buf;
}

/* A sample value as Prometheus expects it: integers without a fraction,
 * others in the shortest form that reads back exactly. */
static void format_value(double v, char *buf, size_t len)
{
    if (isnan(v)) {
        snprintf(buf, len, "NaN");
    } else if (isinf(v)) {
        snprintf(buf, len, v > 0 ? "+Inf" : "-Inf");
    } else if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, len, "%.0f", v);
    } else {
        snprintf(buf, len, "%.15g", v);
        if (strtod(buf, NULL) != v) snprintf(buf, len, "%.17g", v);
    }
}

static int series_cmp(const void *a, const void *b)
{
    const series_t *x = *(series_t *const *)a;
    const series_t *y = *(series_t *const *)b;
    int c = strcmp(x->name, y->name);
    return c ? c : strcmp(x->labels, y->labels);
}

static void put_help_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            fputs("\\\\", f);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

static const char *kind_type(enum series_kind kind)
{
    switch (kind) {
    case KIND_COUNTER:
        return "counter";
    case KIND_HISTOGRAM:
        return "histogram";
    default:
        return "gauge";
    }
}

static void render_histogram(FILE *f, const series_t *s)
{
    const char *sep = s->labels[0] ? "," : "";
    uint64_t cum = 0;
    char num[40];
    for (size_t i = 0; i <= BUCKET_CNT; i++) {
        cum += s->buckets[i];
        if (i < BUCKET_CNT)
            format_value(bucket_le[i], num, sizeof(num));
        else
            snprintf(num, sizeof(num), "+Inf");
        fprintf(f, "%s_bucket{%s%sle=\"%s\"} %llu\n", s->name, s->labels, sep, num,
                (unsigned long long)cum);
    }
    format_value(s->sum, num, sizeof(num));
    if (s->labels[0]) {
        fprintf(f, "%s_sum{%s} %s\n", s->name, s->labels, num);
        fprintf(f, "%s_count{%s} %llu\n", s->name, s->labels, (unsigned long long)s->count);
    } else {
        fprintf(f, "%s_sum %s\n", s->name, num);
        fprintf(f, "%s_count %llu\n", s->name, (unsigned long long)s->count);
    }
}

char *td_metrics_render(void)
{
    char *out = NULL;
    size_t out_len = 0;
    FILE *f = open_memstream(&out, &out_len);
    if (!f) td_oom();

    pthread_mutex_lock(&fn_mu);

    /* Read the callbacks first, without reg_mu (see the top of the file). */
    pthread_mutex_lock(&reg_mu);
    size_t fn_cnt = 0;
    for (size_t i = 0; i < all_cnt; i++) fn_cnt += all[i]->kind == KIND_FN;
    series_t **fns = td_calloc(fn_cnt, sizeof(*fns));
    fn_cnt = 0;
    for (size_t i = 0; i < all_cnt; i++)
        if (all[i]->kind == KIND_FN) fns[fn_cnt++] = all[i];
    pthread_mutex_unlock(&reg_mu);
    double *vals = td_calloc(fn_cnt, sizeof(*vals));
    for (size_t i = 0; i < fn_cnt; i++) vals[i] = fns[i]->fn(fns[i]->arg);

    /* fn_mu keeps fns alive: only gauge_fn and unregister remove or
     * retype callback series, and both take it. */
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < fn_cnt; i++) fns[i]->value = vals[i];
    series_t **sorted = td_calloc(all_cnt, sizeof(*sorted));
    size_t cnt = all_cnt;
    memcpy(sorted, all, cnt * sizeof(*sorted));
    qsort(sorted, cnt, sizeof(*sorted), series_cmp);

    char num[40];
    for (size_t i = 0; i < cnt; i++) {
        const series_t *s = sorted[i];
        if (i == 0 || strcmp(sorted[i - 1]->name, s->name) != 0) {
            const desc_t *d = NULL;
            for (size_t k = 0; k < desc_cnt; k++)
                if (strcmp(descs[k].name, s->name) == 0) d = &descs[k];
            fprintf(f, "# HELP %s ", s->name);
            if (d && d->help[0])
                put_help_text(f, d->help);
            else
                fprintf(f, "tidings metric %s", s->name);
            fprintf(f, "\n# TYPE %s %s\n", s->name, d ? d->type : kind_type(s->kind));
        }
        if (s->kind == KIND_HISTOGRAM) {
            render_histogram(f, s);
            continue;
        }
        format_value(s->value, num, sizeof(num));
        if (s->labels[0])
            fprintf(f, "%s{%s} %s\n", s->name, s->labels, num);
        else
            fprintf(f, "%s %s\n", s->name, num);
    }
    pthread_mutex_unlock(&reg_mu);
    pthread_mutex_unlock(&fn_mu);

    free(sorted);
    free(vals);
    free(fns);
    if (fclose(f) != 0) td_oom();
    return out;
}

void td_metrics_reset(void)
{
    pthread_mutex_lock(&fn_mu);
    pthread_mutex_lock(&reg_mu);
    for (size_t i = 0; i < all_cnt; i++) {
        free(all[i]->name);
        free(all[i]->labels);
        free(all[i]);
    }
    free(all);
    all = NULL;
    all_cnt = all_cap = 0;
    memset(table, 0, sizeof(table));
    for (size_t i = 0; i < desc_cnt; i++) {
        free(descs[i].name);
        free(descs[i].type);
        free(descs[i].help);
    }
    free(descs);
    descs = NULL;
    desc_cnt = desc_cap = 0;
    pthread_mutex_unlock(&reg_mu);
    pthread_mutex_unlock(&fn_mu);
}
