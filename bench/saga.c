/* The order saga end to end, as a shopper sees it: the products, orders and
 * payments services in-process on one embedded broker, products made over
 * HTTP with an admin token (signed with the shared secret, as the users
 * service would), orders placed over HTTP with customer tokens, and the
 * time from sending POST /orders until the order is APPROVED. The saga is
 * three hops of the bus after the POST (OrderCreatedEvent -> products,
 * ProductReservedEvent -> payments, PaymentProcessedEvent -> orders).
 *
 * Two phases:
 *  1. unloaded: SEQ orders one at a time, each placed only when the one
 *     before it is final;
 *  2. loaded: K orders (5,000: seconds of sustained load, not a burst)
 *     placed as fast as THREADS client threads can (32 shoppers at once,
 *     each with its own kept-alive connection), the sagas overlapping.
 * At the end every order must be final and approved, and stock conserved:
 * each product's quantity in products.db is its stock less the quantities
 * of its approved orders (the exit status says when not).
 * The end of an order is read from the orders database (updated_at, set in
 * the transaction that approves it, millisecond precision), so polling
 * adds nothing to the figures; the start is the client's wall clock just
 * before the POST. Per order: POST latency (the 202), end-to-end latency
 * (POST sent -> APPROVED) and the saga alone (created_at -> updated_at,
 * both from the orders database). */
#include <pthread.h>

#include "bench.h"
#include "orders/orders_service.h"
#include "payments/payments_service.h"
#include "products/products_service.h"

#define SEQ      50
#define K        5000
#define THREADS  32
#define PRODUCTS 10
#define WAIT_MS  90000
#define PRICE    "12.50"
#define STOCK    1000000

typedef struct order_rec {
    char id[TD_UUID_LEN + 1];
    double post_wall_ms; /* wall clock just before the POST, ms since the epoch */
    double post_ms;      /* POST latency */
    double e2e_ms;       /* filled from the database */
    double saga_ms;
    bool approved;
} order_rec_t;

typedef struct world {
    char *dir;
    td_config_t bcfg, pcfg, ocfg, paycfg;
    td_broker_t *broker;
    products_service_t *products;
    orders_service_t *orders;
    payments_service_t *payments;
    char products_url[64], orders_url[64];
    char product_ids[PRODUCTS][TD_UUID_LEN + 1];
    sqlite3 *odb; /* our own read connection to orders.db */
} world_t;

static double wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

/* POST /orders for product pid with h; the order into o. 0 or -1. */
static int place(world_t *w, bench_http_t *h, const char *token, const char *pid, order_rec_t *o)
{
    char url[96], body[128];
    snprintf(url, sizeof(url), "%s/orders", w->orders_url);
    snprintf(body, sizeof(body), "{\"productId\":\"%s\",\"quantity\":1}", pid);
    o->post_wall_ms = wall_ms();
    int64_t t0 = bench_now_ns();
    long status = bench_http_do(h, "POST", url, token, body);
    o->post_ms = bench_ms_since(t0);
    json_t *j = status == 202 ? json_loads(h->body, 0, NULL) : NULL;
    const char *id = json_string_value(json_object_get(j, "orderId"));
    if (!id || strlen(id) != TD_UUID_LEN) {
        fprintf(stderr, "saga: POST /orders: %ld %s\n", status, h->body);
        json_decref(j);
        return -1;
    }
    memcpy(o->id, id, TD_UUID_LEN + 1);
    json_decref(j);
    return 0;
}

/* Orders not yet final, or -1. */
static int64_t pending(world_t *w)
{
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_prepare_v2(w->odb, "SELECT count(*) FROM orders WHERE status = 'PENDING'", -1, &st,
                           NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    td_db_done(st);
    return n;
}

static bool wait_final(world_t *w, int timeout_ms, int poll_ms)
{
    int64_t until = td_mono_ms() + timeout_ms;
    for (;;) {
        int64_t n = pending(w);
        if (n == 0) return true;
        if (td_mono_ms() >= until) {
            fprintf(stderr, "saga: %lld orders still PENDING after %d ms\n", (long long)n,
                    timeout_ms);
            return false;
        }
        td_sleep_ms(poll_ms);
    }
}

/* Fills e2e_ms, saga_ms and approved of every order from the database. */
static int read_outcomes(world_t *w, order_rec_t *os, size_t n)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(w->odb, "SELECT status, created_at, updated_at FROM orders WHERE id = ?",
                           -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        sqlite3_reset(st);
        sqlite3_bind_text(st, 1, os[i].id, -1, SQLITE_STATIC);
        int64_t created, updated;
        if (sqlite3_step(st) != SQLITE_ROW ||
            td_time_parse((const char *)sqlite3_column_text(st, 1), &created) != 0 ||
            td_time_parse((const char *)sqlite3_column_text(st, 2), &updated) != 0) {
            fprintf(stderr, "saga: order %s not readable\n", os[i].id);
            rc = -1;
            break;
        }
        os[i].approved = !strcmp((const char *)sqlite3_column_text(st, 0), "APPROVED");
        os[i].saga_ms = (double)(updated - created);
        /* updated_at has millisecond precision: the end is known to within
         * 1 ms, so the start is rounded down the same way. */
        os[i].e2e_ms = (double)updated - floor(os[i].post_wall_ms);
    }
    td_db_done(st);
    return rc;
}

typedef struct client {
    pthread_t thread;
    world_t *w;
    char *token;
    order_rec_t *orders; /* this client's slice */
    size_t n;
    int failed;
} client_t;

static void *client_main(void *arg)
{
    client_t *c = arg;
    bench_http_t h;
    bench_http_init(&h);
    for (size_t i = 0; i < c->n; i++) {
        const char *pid = c->w->product_ids[i % PRODUCTS];
        if (place(c->w, &h, c->token, pid, &c->orders[i]) != 0) {
            c->failed = 1;
            break;
        }
    }
    bench_http_free(&h);
    return NULL;
}

typedef struct phase {
    bench_stats_t post, e2e, saga;
    size_t approved;
    double seconds; /* first POST sent -> last order final */
    double rate;
} phase_t;

static void summarise(order_rec_t *os, size_t n, phase_t *ph)
{
    double *post = td_malloc(n * sizeof(double)), *e2e = td_malloc(n * sizeof(double)),
           *saga = td_malloc(n * sizeof(double));
    double first = 0, last = 0;
    ph->approved = 0;
    for (size_t i = 0; i < n; i++) {
        post[i] = os[i].post_ms;
        e2e[i] = os[i].e2e_ms;
        saga[i] = os[i].saga_ms;
        if (os[i].approved) ph->approved++;
        double end = floor(os[i].post_wall_ms) + os[i].e2e_ms;
        if (i == 0 || os[i].post_wall_ms < first) first = os[i].post_wall_ms;
        if (i == 0 || end > last) last = end;
    }
    ph->post = bench_stats(post, n);
    ph->e2e = bench_stats(e2e, n);
    ph->saga = bench_stats(saga, n);
    ph->seconds = (last - first) / 1000.0;
    ph->rate = ph->seconds > 0 ? (double)n / ph->seconds : 0;
    free(post);
    free(e2e);
    free(saga);
}

static json_t *phase_json(const phase_t *ph, size_t n)
{
    return json_pack("{s:I, s:I, s:o, s:o, s:o, s:f, s:f}", "orders", (json_int_t)n, "approved",
                     (json_int_t)ph->approved, "post_ms", bench_stats_json(&ph->post), "e2e_ms",
                     bench_stats_json(&ph->e2e), "saga_ms", bench_stats_json(&ph->saga), "seconds",
                     bench_round3(ph->seconds), "orders_per_s", round(ph->rate * 10) / 10);
}

static void service_cfg(world_t *w, td_config_t *cfg, const char *name)
{
    bench_config(cfg, name, w->dir, td_broker_bootstraps(w->broker), 1);
}

static int world_start(world_t *w)
{
    char err[512] = "";
    w->dir = bench_tmpdir("saga");
    if (!w->dir) return -1;
    bench_config(&w->bcfg, "broker", w->dir, NULL, 1);
    w->broker = bench_broker(&w->bcfg);
    if (!w->broker) return -1;
    service_cfg(w, &w->pcfg, "products");
    service_cfg(w, &w->ocfg, "orders");
    service_cfg(w, &w->paycfg, "payments");
    w->products = products_service_start(&w->pcfg, err, sizeof(err));
    if (!w->products) goto fail;
    w->orders = orders_service_start(&w->ocfg, err, sizeof(err));
    if (!w->orders) goto fail;
    w->payments = payments_service_start(&w->paycfg, err, sizeof(err));
    if (!w->payments) goto fail;
    snprintf(w->products_url, sizeof(w->products_url), "http://127.0.0.1:%d",
             td_app_service_port(w->products));
    snprintf(w->orders_url, sizeof(w->orders_url), "http://127.0.0.1:%d",
             td_app_service_port(w->orders));
    char *path = td_asprintf("%s/orders.db", w->dir);
    int src = sqlite3_open_v2(path, &w->odb, SQLITE_OPEN_READONLY, NULL);
    free(path);
    if (src != SQLITE_OK) {
        fprintf(stderr, "saga: cannot open orders.db: %s\n", sqlite3_errmsg(w->odb));
        return -1;
    }
    sqlite3_busy_timeout(w->odb, 5000);
    return 0;

fail:
    fprintf(stderr, "saga: %s\n", err);
    return -1;
}

static void world_stop(world_t *w)
{
    if (w->odb) sqlite3_close(w->odb);
    td_app_service_stop(w->payments);
    td_app_service_stop(w->orders);
    td_app_service_stop(w->products);
    td_broker_stop(w->broker);
    td_config_free(&w->pcfg);
    td_config_free(&w->ocfg);
    td_config_free(&w->paycfg);
    td_config_free(&w->bcfg);
    if (w->dir) bench_rmtree(w->dir);
    free(w->dir);
}

static int make_products(world_t *w, const char *admin)
{
    bench_http_t h;
    bench_http_init(&h);
    char *url = td_asprintf("%s/products", w->products_url);
    int rc = 0;
    for (int i = 0; i < PRODUCTS && rc == 0; i++) {
        char *body = td_asprintf("{\"title\":\"Saga bench item %d\",\"price\":%s,\"quantity\":%d}",
                                 i, PRICE, STOCK);
        long status = bench_http_do(&h, "POST", url, admin, body);
        free(body);
        json_t *j = status == 201 ? json_loads(h.body, 0, NULL) : NULL;
        const char *id = json_string_value(json_object_get(j, "productId"));
        if (id && strlen(id) == TD_UUID_LEN) {
            memcpy(w->product_ids[i], id, TD_UUID_LEN + 1);
        } else {
            fprintf(stderr, "saga: POST /products: %ld %s\n", status, h.body);
            rc = -1;
        }
        json_decref(j);
    }
    free(url);
    bench_http_free(&h);
    return rc;
}

/* Stock conserved: for every product, the stock it was made with less the
 * quantities of its approved orders is its quantity now. true when so. */
static bool stock_conserved(world_t *w)
{
    char *path = td_asprintf("%s/products.db", w->dir);
    sqlite3 *pdb = NULL;
    int src = sqlite3_open_v2(path, &pdb, SQLITE_OPEN_READONLY, NULL);
    free(path);
    sqlite3_stmt *po = NULL, *pp = NULL;
    bool ok = src == SQLITE_OK &&
              sqlite3_prepare_v2(w->odb,
                                 "SELECT coalesce(sum(quantity), 0) FROM orders WHERE product_id = "
                                 "? AND status = 'APPROVED'",
                                 -1, &po, NULL) == SQLITE_OK &&
              sqlite3_prepare_v2(pdb, "SELECT quantity FROM products WHERE id = ?", -1, &pp,
                                 NULL) == SQLITE_OK;
    for (int i = 0; ok && i < PRODUCTS; i++) {
        sqlite3_reset(po);
        sqlite3_reset(pp);
        sqlite3_bind_text(po, 1, w->product_ids[i], -1, SQLITE_STATIC);
        sqlite3_bind_text(pp, 1, w->product_ids[i], -1, SQLITE_STATIC);
        if (sqlite3_step(po) != SQLITE_ROW || sqlite3_step(pp) != SQLITE_ROW) {
            ok = false;
            break;
        }
        int64_t sold = sqlite3_column_int64(po, 0), left = sqlite3_column_int64(pp, 0);
        if (left != STOCK - sold) {
            fprintf(stderr, "saga: product %s: %lld left, but %d - %lld approved = %lld\n",
                    w->product_ids[i], (long long)left, STOCK, (long long)sold,
                    (long long)(STOCK - sold));
            ok = false;
        }
    }
    if (src != SQLITE_OK || !po || !pp) fprintf(stderr, "saga: cannot read the stock\n");
    sqlite3_finalize(po);
    sqlite3_finalize(pp);
    sqlite3_close(pdb);
    return ok;
}

static void print_phase(const char *name, const phase_t *ph, size_t n)
{
    char label[80];
    printf("  %s: %zu orders, %zu approved, %.2f s, %.1f orders/s\n", name, n, ph->approved,
           ph->seconds, ph->rate);
    snprintf(label, sizeof(label), "POST /orders -> 202");
    bench_stats_row(label, &ph->post);
    snprintf(label, sizeof(label), "POST sent -> APPROVED");
    bench_stats_row(label, &ph->e2e);
    snprintf(label, sizeof(label), "saga (created -> approved in db)");
    bench_stats_row(label, &ph->saga);
}

int main(void)
{
    int rc = 1;
    world_t w;
    memset(&w, 0, sizeof(w));
    char *admin = NULL, *tokens[THREADS] = {NULL};
    order_rec_t *seq = td_calloc(SEQ, sizeof(*seq)), *load = td_calloc(K, sizeof(*load));
    curl_global_init(CURL_GLOBAL_ALL);
    bench_begin();

    if (world_start(&w) != 0) goto out;
    admin = bench_token(&w.pcfg, "admin", NULL);
    for (int i = 0; i < THREADS; i++) tokens[i] = bench_token(&w.pcfg, "customer", NULL);
    if (make_products(&w, admin) != 0) goto out;
    printf("saga: products + orders + payments in-process, embedded broker (3), %d products; "
           "load average at start %.2f\n",
           PRODUCTS, bench_load_start);

    /* Phase 1: one order at a time. The first order also waits for the
     * consumer groups to settle, so it is placed before the clock runs. */
    bench_http_t h;
    bench_http_init(&h);
    order_rec_t warm;
    int prc = place(&w, &h, tokens[0], w.product_ids[0], &warm);
    if (prc == 0 && !wait_final(&w, WAIT_MS, 5)) prc = -1;
    for (size_t i = 0; i < SEQ && prc == 0; i++) {
        prc = place(&w, &h, tokens[0], w.product_ids[i % PRODUCTS], &seq[i]);
        if (prc == 0 && !wait_final(&w, 10000, 1)) prc = -1;
    }
    bench_http_free(&h);
    if (prc != 0 || read_outcomes(&w, seq, SEQ) != 0) goto out;

    /* Phase 2: K orders from THREADS clients at once. */
    client_t cs[THREADS];
    memset(cs, 0, sizeof(cs));
    size_t per = K / THREADS;
    for (int i = 0; i < THREADS; i++) {
        cs[i].w = &w;
        cs[i].token = tokens[i];
        cs[i].orders = load + (size_t)i * per;
        cs[i].n = i == THREADS - 1 ? K - (size_t)i * per : per;
        if (pthread_create(&cs[i].thread, NULL, client_main, &cs[i]) != 0) {
            fprintf(stderr, "saga: cannot start a client thread\n");
            abort();
        }
    }
    int failed = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(cs[i].thread, NULL);
        failed |= cs[i].failed;
    }
    if (failed || !wait_final(&w, WAIT_MS, 5) || read_outcomes(&w, load, K) != 0) goto out;

    phase_t p1, p2;
    summarise(seq, SEQ, &p1);
    summarise(load, K, &p2);
    bench_stats_header("ms");
    print_phase("one order at a time", &p1, SEQ);
    char name[64];
    snprintf(name, sizeof(name), "%d client threads at once", THREADS);
    print_phase(name, &p2, K);
    if (p1.approved != SEQ || p2.approved != K)
        fprintf(stderr, "saga: not every order was approved (%zu/%d, %zu/%d)\n", p1.approved, SEQ,
                p2.approved, K);

    json_t *res = bench_result_new("saga");
    json_object_set_new(res, "unloaded", phase_json(&p1, SEQ));
    json_object_set_new(res, "loaded", phase_json(&p2, K));
    json_object_set_new(res, "client_threads", json_integer(THREADS));
    bool conserved = stock_conserved(&w);
    printf("  every order final, %s\n",
           conserved ? "stock conserved (each product: stock - approved = left)"
                     : "STOCK NOT CONSERVED");
    json_object_set_new(res, "stock_conserved", json_boolean(conserved));
    bench_result_print(res);
    rc = p1.approved == SEQ && p2.approved == K && conserved ? 0 : 1;

out:
    free(admin);
    for (int i = 0; i < THREADS; i++) free(tokens[i]);
    world_stop(&w);
    free(seq);
    free(load);
    curl_global_cleanup();
    return rc;
}
