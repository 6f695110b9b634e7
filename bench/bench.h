/* What the benchmark programs share: a temporary data dir removed at the
 * end, a configuration like the tests' (fixed secret, chosen fetch wait,
 * quiet logs), an embedded broker, a nanosecond clock, percentiles, the
 * human-readable rows and the final JSON line. Header-only (static inline)
 * because every bench/<name>.c is its own executable and nothing else is
 * linked into it but tidings_svc and tidings_rt. All helpers are for the
 * main thread except bench_now_ns, which any thread may call. */
#ifndef TIDINGS_BENCH_H
#define TIDINGS_BENCH_H

#include <curl/curl.h>
#include <ftw.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tidings/auth.h"
#include "tidings/broker.h"
#include "tidings/config.h"
#include "tidings/envelope.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/uuid.h"

/* A monotonic clock in nanoseconds (td_mono_ms is too coarse for one hop). */
static inline int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline double bench_ms_since(int64_t t0_ns)
{
    return (double)(bench_now_ns() - t0_ns) / 1e6;
}

/* A fresh directory under $TMPDIR (or /tmp). Caller frees the string and
 * removes the tree with bench_rmtree. NULL if it cannot be made. */
static inline char *bench_tmpdir(const char *name)
{
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    char *path = td_asprintf("%s/tidings-bench-%s.XXXXXX", base, name);
    if (!mkdtemp(path)) {
        fprintf(stderr, "bench: cannot create %s\n", path);
        free(path);
        return NULL;
    }
    return path;
}

static inline int bench_rm_one(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* rm -rf path (only ever a directory bench_tmpdir made). */
static inline void bench_rmtree(const char *path)
{
    if (path && nftw(path, bench_rm_one, 16, FTW_DEPTH | FTW_PHYS) != 0)
        fprintf(stderr, "bench: could not remove all of %s\n", path);
}

/* The key every benchmark signs tokens with (32 bytes, as SPEC asks). */
#define BENCH_SECRET "tidings-bench-secret-0123456789a"

/* Defaults, then what a benchmark needs: its service name, data dir,
 * brokers (may be NULL until the broker runs), the fetch wait, every HTTP
 * port 0 (any free port), a fixed secret; logs as text at warn unless
 * TIDINGS_LOG_LEVEL says otherwise, so the tables stay readable. Free with
 * td_config_free. */
static inline void bench_config(td_config_t *cfg, const char *service, const char *dir,
                                const char *brokers, int fetch_wait_ms)
{
    td_config_defaults(cfg);
    cfg->service = td_strdup(service);
    free(cfg->data_dir);
    cfg->data_dir = td_strdup(dir);
    cfg->brokers = td_strdup(brokers);
    cfg->fetch_wait_ms = fetch_wait_ms;
    for (int i = 0; i < TD_SVC__COUNT; i++) cfg->ports[i] = 0;
    cfg->secret_len = sizeof(BENCH_SECRET) - 1;
    cfg->secret = td_malloc(sizeof(BENCH_SECRET));
    memcpy(cfg->secret, BENCH_SECRET, sizeof(BENCH_SECRET));
    int level = td_log_level_from_name(getenv("TIDINGS_LOG_LEVEL"));
    cfg->log_level = level >= 0 ? level : TD_LOG_WARN;
    cfg->log_json = false;
    td_log_init(service, cfg->log_level, false);
}

/* The embedded broker as `tidings run` starts it (3 brokers, the SPEC
 * topics with cfg's partitions). NULL after printing why. */
static inline td_broker_t *bench_broker(const td_config_t *cfg)
{
    char err[512] = "";
    td_broker_t *broker = td_broker_start(cfg, 3, err, sizeof(err));
    if (!broker) fprintf(stderr, "bench: embedded broker: %s\n", err);
    return broker;
}

/* ---- events ---------------------------------------------------------------- */

/* A typical OrderCreatedEvent (SPEC section 3) for a new order: the event
 * the benchmarks send when they need a realistic size. Free with
 * td_event_free. */
static inline td_event_t *bench_order_created(void)
{
    char order_id[TD_UUID_LEN + 1], user_id[TD_UUID_LEN + 1], product_id[TD_UUID_LEN + 1];
    char now[TD_TIME_LEN + 1];
    td_uuid_new(order_id);
    td_uuid_new(user_id);
    td_uuid_new(product_id);
    td_time_format(td_now_ms(), now);
    json_t *data = json_pack("{s:s, s:s, s:s, s:i, s:s}", "orderId", order_id, "userId", user_id,
                             "productId", product_id, "quantity", 1, "createdAt", now);
    td_event_t *ev = td_event_new("orders", "OrderCreatedEvent", order_id, data);
    td_event_set_correlation(ev, order_id);
    return ev;
}

/* Bytes of a record as a client sees them: key + value + header names and
 * values (without Kafka's per-record and per-batch framing). */
static inline size_t bench_record_bytes(const td_record_t *rec, size_t *value_bytes,
                                        size_t *header_bytes)
{
    size_t h = 0;
    for (size_t i = 0; i < rec->header_cnt; i++)
        h += strlen(rec->headers[i].name) + rec->headers[i].len;
    if (value_bytes) *value_bytes = rec->value_len;
    if (header_bytes) *header_bytes = h;
    return rec->key_len + rec->value_len + h;
}

/* ---- HTTP client ---------------------------------------------------------- */

/* One libcurl easy handle reused for every request of one thread, so the
 * connection is kept alive; the last response body is kept in it. One
 * thread each. Call curl_global_init once in main before any thread. */
typedef struct bench_http {
    CURL *c;
    char *body; /* last response body, NUL-terminated */
    size_t len, cap;
} bench_http_t;

static inline size_t bench_http_on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    bench_http_t *h = arg;
    size_t n = size * nmemb;
    if (h->len + n + 1 > h->cap) {
        h->cap = 2 * (h->len + n + 1);
        h->body = td_realloc(h->body, h->cap);
    }
    memcpy(h->body + h->len, data, n);
    h->len += n;
    h->body[h->len] = '\0';
    return n;
}

static inline void bench_http_init(bench_http_t *h)
{
    memset(h, 0, sizeof(*h));
    h->c = curl_easy_init();
    h->cap = 4096;
    h->body = td_malloc(h->cap);
    h->body[0] = '\0';
    curl_easy_setopt(h->c, CURLOPT_WRITEFUNCTION, bench_http_on_body);
    curl_easy_setopt(h->c, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(h->c, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(h->c, CURLOPT_NOSIGNAL, 1L);
}

static inline void bench_http_free(bench_http_t *h)
{
    if (h->c) curl_easy_cleanup(h->c);
    free(h->body);
    memset(h, 0, sizeof(*h));
}

/* One request: method GET or POST (body JSON), token NULL or a bearer
 * token. The HTTP status, or -1 when there was no response (error on
 * stderr). The body is in h->body until the next request. */
static inline long bench_http_do(bench_http_t *h, const char *method, const char *url,
                                 const char *token, const char *body)
{
    struct curl_slist *hdrs = NULL;
    char *auth = NULL;
    h->len = 0;
    h->body[0] = '\0';
    curl_easy_setopt(h->c, CURLOPT_URL, url);
    if (!strcmp(method, "POST")) {
        curl_easy_setopt(h->c, CURLOPT_POSTFIELDS, body ? body : "");
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
    } else {
        curl_easy_setopt(h->c, CURLOPT_HTTPGET, 1L);
    }
    if (token) {
        auth = td_asprintf("Authorization: Bearer %s", token);
        hdrs = curl_slist_append(hdrs, auth);
    }
    curl_easy_setopt(h->c, CURLOPT_HTTPHEADER, hdrs);
    CURLcode cc = curl_easy_perform(h->c);
    long status = -1;
    if (cc == CURLE_OK)
        curl_easy_getinfo(h->c, CURLINFO_RESPONSE_CODE, &status);
    else
        fprintf(stderr, "bench: %s %s: %s\n", method, url, curl_easy_strerror(cc));
    curl_easy_setopt(h->c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(hdrs);
    free(auth);
    return status;
}

/* A token for a new user id (into sub if not NULL) with role, signed with
 * cfg's secret as the users service would. Caller frees. */
static inline char *bench_token(const td_config_t *cfg, const char *role, char *sub)
{
    td_claims_t c;
    memset(&c, 0, sizeof(c));
    td_uuid_new(c.sub);
    snprintf(c.role, sizeof(c.role), "%s", role);
    c.iat = td_now_ms() / 1000;
    c.exp = c.iat + 3600;
    if (sub) memcpy(sub, c.sub, sizeof(c.sub));
    return td_jwt_sign(cfg->secret, cfg->secret_len, &c);
}

/* ---- statistics ---------------------------------------------------------- */

typedef struct bench_stats {
    size_t n;
    double min, mean, median, p90, p99, max;
} bench_stats_t;

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted v (p in 0..100). */
static inline double bench_pct(const double *v, size_t n, double p)
{
    if (n == 0) return 0;
    size_t rank = (size_t)ceil(p / 100.0 * (double)n);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}

/* Sorts v in place and summarises it. */
static inline bench_stats_t bench_stats(double *v, size_t n)
{
    bench_stats_t s;
    memset(&s, 0, sizeof(s));
    s.n = n;
    if (n == 0) return s;
    qsort(v, n, sizeof(*v), bench_cmp_double);
    double sum = 0;
    for (size_t i = 0; i < n; i++) sum += v[i];
    s.min = v[0];
    s.max = v[n - 1];
    s.mean = sum / (double)n;
    s.median = bench_pct(v, n, 50);
    s.p90 = bench_pct(v, n, 90);
    s.p99 = bench_pct(v, n, 99);
    return s;
}

/* v rounded to 3 decimals, so the JSON line stays short. */
static inline double bench_round3(double v)
{
    return round(v * 1000.0) / 1000.0;
}

/* {"n":..,"min":..,"median":..,"p90":..,"p99":..,"max":..,"mean":..}. New
 * reference. */
static inline json_t *bench_stats_json(const bench_stats_t *s)
{
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f}", "n", (json_int_t)s->n, "min",
                     bench_round3(s->min), "median", bench_round3(s->median), "p90",
                     bench_round3(s->p90), "p99", bench_round3(s->p99), "max", bench_round3(s->max),
                     "mean", bench_round3(s->mean));
}

static inline void bench_stats_header(const char *unit)
{
    printf("  %-34s %7s %9s %9s %9s %9s %9s  (%s)\n", "", "n", "min", "median", "p90", "p99", "max",
           unit);
}

static inline void bench_stats_row(const char *label, const bench_stats_t *s)
{
    printf("  %-34s %7zu %9.3f %9.3f %9.3f %9.3f %9.3f\n", label, s->n, s->min, s->median, s->p90,
           s->p99, s->max);
}

/* ---- the JSON line -------------------------------------------------------- */

static double bench_load_start = -1;

static inline double bench_loadavg(void)
{
    double load[1] = {0};
    return getloadavg(load, 1) == 1 ? round(load[0] * 100) / 100 : -1;
}

/* Call first: remembers the load average before the benchmark adds its
 * own, because the figures of a 2-core box move with whatever else runs
 * on it. */
static inline void bench_begin(void)
{
    bench_load_start = bench_loadavg();
}

/* {"bench":name,"date":now,"cores":n,"loadavg_start":l} to which the
 * figures are added. New reference; bench_result_print prints and
 * releases it. */
static inline json_t *bench_result_new(const char *name)
{
    char now[TD_TIME_LEN + 1];
    td_time_format(td_now_ms(), now);
    return json_pack("{s:s, s:s, s:I, s:f}", "bench", name, "date", now, "cores",
                     (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "loadavg_start", bench_load_start);
}

/* Prints res as the program's last line (one compact JSON object). */
static inline void bench_result_print(json_t *res)
{
    char *line = td_json_dumps(res);
    printf("%s\n", line);
    fflush(stdout);
    free(line);
    json_decref(res);
}

#endif
