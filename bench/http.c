/* Requests per second and latency of the HTTP layer as the services run
 * it: the products service in-process (libmicrohttpd, its default worker
 * pool) on an embedded broker, a catalogue of PRODUCTS products made
 * through its API, and THREADS client threads each reusing one libcurl
 * handle (one kept-alive connection per thread) for SECONDS per endpoint:
 * GET /products (public, the first page as JSON from SQLite) and
 * GET /healthz (the routing and response path alone). Clients and server
 * share the same 2 cores, so the figures are a floor, not a ceiling. */
#include <pthread.h>

#include "bench.h"
#include "products/products_service.h"

#define THREADS   4
#define SECONDS   4
#define WARMUP_MS 500
#define PRODUCTS  20

typedef struct worker {
    pthread_t thread;
    const char *url;
    int64_t warmup_until_ns, until_ns;
    double *lat; /* ms */
    size_t n, cap;
    int64_t errors;
    size_t body_bytes;
    long connects;
} worker_t;

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    bench_http_t h;
    bench_http_init(&h);
    for (;;) {
        int64_t t0 = bench_now_ns();
        if (t0 >= w->until_ns) break;
        long status = bench_http_do(&h, "GET", w->url, NULL, NULL);
        int64_t t1 = bench_now_ns();
        long connects = 0;
        curl_easy_getinfo(h.c, CURLINFO_NUM_CONNECTS, &connects);
        w->connects += connects;
        if (status != 200) {
            w->errors++;
            continue;
        }
        w->body_bytes = h.len;
        if (t0 < w->warmup_until_ns) continue;
        if (w->n == w->cap) {
            w->cap = w->cap ? 2 * w->cap : 4096;
            w->lat = td_realloc(w->lat, w->cap * sizeof(*w->lat));
        }
        w->lat[w->n++] = (double)(t1 - t0) / 1e6;
    }
    bench_http_free(&h);
    return NULL;
}

typedef struct endpoint_result {
    bench_stats_t stats;
    double rps;
    int64_t errors;
    size_t body_bytes;
    long connects; /* connections opened, all threads */
} endpoint_result_t;

/* THREADS workers on url for WARMUP_MS + SECONDS. 0 or -1. */
static int run_endpoint(const char *url, endpoint_result_t *out)
{
    worker_t ws[THREADS];
    memset(ws, 0, sizeof(ws));
    int64_t start = bench_now_ns();
    int64_t warm = start + (int64_t)WARMUP_MS * 1000000;
    int64_t until = warm + (int64_t)SECONDS * 1000000000;
    for (int i = 0; i < THREADS; i++) {
        ws[i].url = url;
        ws[i].warmup_until_ns = warm;
        ws[i].until_ns = until;
        if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) {
            fprintf(stderr, "http: cannot start a client thread\n");
            abort();
        }
    }
    size_t total = 0;
    memset(out, 0, sizeof(*out));
    for (int i = 0; i < THREADS; i++) {
        pthread_join(ws[i].thread, NULL);
        total += ws[i].n;
        out->errors += ws[i].errors;
        out->body_bytes = ws[i].body_bytes;
        out->connects += ws[i].connects;
    }
    double *all = td_malloc((total ? total : 1) * sizeof(*all));
    size_t k = 0;
    for (int i = 0; i < THREADS; i++) {
        memcpy(all + k, ws[i].lat, ws[i].n * sizeof(*all));
        k += ws[i].n;
        free(ws[i].lat);
    }
    out->stats = bench_stats(all, total);
    out->rps = (double)total / SECONDS;
    free(all);
    return total > 0 && out->errors == 0 ? 0 : -1;
}

int main(void)
{
    int rc = 1;
    char err[512] = "";
    td_config_t bcfg, pcfg;
    memset(&bcfg, 0, sizeof(bcfg));
    memset(&pcfg, 0, sizeof(pcfg));
    td_broker_t *broker = NULL;
    products_service_t *products = NULL;
    char *admin = NULL;
    bench_http_t h;
    memset(&h, 0, sizeof(h));
    curl_global_init(CURL_GLOBAL_ALL);

    bench_begin();
    char *dir = bench_tmpdir("http");
    if (!dir) return 1;
    bench_config(&bcfg, "broker", dir, NULL, 1);
    broker = bench_broker(&bcfg);
    if (!broker) goto out;
    bench_config(&pcfg, "products", dir, td_broker_bootstraps(broker), 1);
    products = products_service_start(&pcfg, err, sizeof(err));
    if (!products) {
        fprintf(stderr, "http: products service: %s\n", err);
        goto out;
    }
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", td_app_service_port(products));

    admin = bench_token(&pcfg, "admin", NULL);
    bench_http_init(&h);
    char *url = td_asprintf("%s/products", base);
    for (int i = 0; i < PRODUCTS; i++) {
        char *body = td_asprintf("{\"title\":\"Bench lamp %d\",\"price\":%d.99,\"quantity\":%d}", i,
                                 10 + i, 100 + i);
        long status = bench_http_do(&h, "POST", url, admin, body);
        free(body);
        if (status != 201) {
            fprintf(stderr, "http: POST /products: %ld %s\n", status, h.body);
            free(url);
            goto out;
        }
    }
    free(url);

    printf("http: products service in-process, %d client threads (keep-alive, one connection "
           "each), %d s per endpoint after %d ms warm-up; load average at start %.2f\n",
           THREADS, SECONDS, WARMUP_MS, bench_load_start);
    static const char *const paths[] = {"/products", "/healthz"};
    endpoint_result_t res[2];
    for (size_t i = 0; i < 2; i++) {
        char *u = td_asprintf("%s%s", base, paths[i]);
        int erc = run_endpoint(u, &res[i]);
        free(u);
        if (erc != 0) {
            fprintf(stderr, "http: GET %s: %lld errors\n", paths[i], (long long)res[i].errors);
            goto out;
        }
    }

    printf("  %-34s %7s %9s %9s %9s %9s %9s %7s %6s\n", "", "n", "req/s", "median", "p90", "p99",
           "max", "bytes", "conns");
    for (size_t i = 0; i < 2; i++) {
        char label[64];
        snprintf(label, sizeof(label), "GET %s%s", paths[i], i == 0 ? " (20 products)" : "");
        const bench_stats_t *s = &res[i].stats;
        printf("  %-34s %7zu %9.0f %9.3f %9.3f %9.3f %9.3f %7zu %6ld\n", label, s->n, res[i].rps,
               s->median, s->p90, s->p99, s->max, res[i].body_bytes, res[i].connects);
    }
    printf("  (latencies in ms, measured by the client; conns = TCP connections opened)\n");

    json_t *out = bench_result_new("http");
    json_object_set_new(out, "threads", json_integer(THREADS));
    json_object_set_new(out, "seconds", json_integer(SECONDS));
    json_object_set_new(out, "unit", json_string("ms"));
    for (size_t i = 0; i < 2; i++) {
        json_t *e = bench_stats_json(&res[i].stats);
        json_object_set_new(e, "rps", json_integer((json_int_t)res[i].rps));
        json_object_set_new(e, "body_bytes", json_integer((json_int_t)res[i].body_bytes));
        json_object_set_new(e, "connections", json_integer(res[i].connects));
        json_object_set_new(out, i == 0 ? "get_products" : "get_healthz", e);
    }
    bench_result_print(out);
    rc = 0;

out:
    bench_http_free(&h);
    free(admin);
    td_app_service_stop(products);
    td_broker_stop(broker);
    td_config_free(&pcfg);
    td_config_free(&bcfg);
    bench_rmtree(dir);
    free(dir);
    curl_global_cleanup();
    return rc;
}
