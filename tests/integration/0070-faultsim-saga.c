/* The fault loop of STYLE.md "Tests" (SQLite's faultsim) over the order
 * saga, proving SPEC section 4: a crash of any service at any instant
 * loses nothing and duplicates no effect.
 *
 * Crash loop: for k = 1, 2, 3 ... one iteration runs the products, orders
 * and payments services in a child process with the fault "the k-th hit of
 * any fault point (tidings/fault.h) crashes the process" armed, and places
 * three orders (one approved, one out of stock, one over the payment
 * limit) while the products service is down; products comes back once the
 * orders are on Kafka and takes them as one batch (a backlog after a
 * restart, and the only sure way through consumer.mid_batch). The child
 * dies at the k-th step, _exit without flushing anything, as kill -9
 * would: at once for odd k; for even k after librdkafka's threads ran on
 * for a while with every other thread stopped at its next point
 * (TD_FAULT_CRASH_LATE: an offset stored too early gets auto-committed in
 * that time, a delivery in flight completes). A second child restarts the
 * services on the same data directory without a fault and checks the
 * invariants: every order that exists ends APPROVED or REJECTED as its
 * product decides, every order the client was told about (202) exists,
 * stock is conserved, each order has exactly the events of its saga on
 * Kafka, one distinct ce_id per fact (the same ce_id twice is allowed:
 * publishing is at-least-once), no event for an order that does not exist,
 * one payment per reserved order, nothing dead-lettered. The loop ends at
 * the first k the scenario finishes without reaching.
 *
 * The broker must outlive the crash, so each iteration has its own: a
 * runner process forks the two children first and then starts the embedded
 * broker (librdkafka threads never cross a fork). Many iterations run at
 * once: most of one is waiting for the broker to drop the crashed
 * consumers from their groups (the session timeout).
 *
 * Error loop: in one process, beside the crash loop, for each fault point
 * and a few k, the k-th hit of that point takes its error path once
 * (TD_FAULT_ERROR) while the same scenario runs: every error must end in a
 * retry, not a loss. The same invariants are checked after each round.
 *
 * The test program itself stays single-threaded (it only forks and reads
 * pipes), so every fork is safe.
 *
 * Cost: the scenario has about 130-145 fault point hits (it varies with
 * thread timing, so the loop runs on until the first k the scenario does
 * not reach). An iteration takes 10-20 s, most of it waiting on the
 * broker's group protocol, at about 0.7 s of CPU; 24 at once run the whole
 * loop in about 100 s on 2 cores, using one of them. Under
 * AddressSanitizer, which multiplies the CPU, k steps by 3.
 *
 * Env knobs: TIDINGS_FAULTSIM_JOBS (iterations at once, default 24),
 * TIDINGS_FAULTSIM_STRIDE (step of k, default 1, 3 under ASan),
 * TIDINGS_FAULTSIM_FIRST / _LAST (a part of the range, for
 * debugging), TIDINGS_FAULTSIM_VERBOSE=1 prints each iteration,
 * TIDINGS_FAULTSIM_ERRORS=0 leaves out the error loop,
 * TIDINGS_FAULTSIM_KEEP=1 keeps every iteration's directory
 * (failed ones are always kept, with the children's log). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "orders/orders_service.h"
#include "payments/payments_service.h"
#include "products/products_service.h"
#include "tidings/auth.h"
#include "tidings/envelope.h"
#include "tidings/fault.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tsupport.h"

#define LIMIT_CENTS      100000 /* payment limit 1000.00 */
#define WAIT_MS          30000  /* for a saga to settle */
#define QUIET_MS         1000   /* no fault point hit for this long: the scenario is over */
#define CHILD_TIMEOUT_MS 120000 /* a child taking longer is hung: a failure */
#define RESTART_PAUSE_MS 2000   /* between the crash and the restart (run_iteration) */
#define MAX_RUNS         2000
#define DEFAULT_JOBS     24
#if defined(__SANITIZE_ADDRESS__)
#define DEFAULT_STRIDE 3
#else
#define DEFAULT_STRIDE 1
#endif
#define FETCH_WAIT_MS 10 /* many processes at once: less polling than ts_config's 1 ms */
#define MAX_KNOWN     256

/* ---- the scenario -------------------------------------------------------- */

enum { O_APPROVED, O_NO_STOCK, O_OVER_LIMIT, O_COUNT };

typedef struct step {
    const char *type, *topic, *cause; /* cause NULL: the HTTP request */
} step_t;

static const step_t approved_steps[] = {
    {"OrderCreatedEvent", "orders", NULL},
    {"ProductReservedEvent", "reservations", "OrderCreatedEvent"},
    {"PaymentProcessedEvent", "payments", "ProductReservedEvent"},
    {"OrderApprovedEvent", "orders", "PaymentProcessedEvent"},
};
static const step_t no_stock_steps[] = {
    {"OrderCreatedEvent", "orders", NULL},
    {"ProductReservationFailedEvent", "reservations", "OrderCreatedEvent"},
    {"OrderRejectedEvent", "orders", "ProductReservationFailedEvent"},
};
static const step_t over_limit_steps[] = {
    {"OrderCreatedEvent", "orders", NULL},
    {"ProductReservedEvent", "reservations", "OrderCreatedEvent"},
    {"PaymentFailedEvent", "payments", "ProductReservedEvent"},
    {"ProductReservationCancelledEvent", "reservations", "PaymentFailedEvent"},
    {"OrderRejectedEvent", "orders", "PaymentFailedEvent"},
};

/* One order per product and per user, so that the orders cannot affect
 * each other and each user's order list shows exactly that order. */
static const struct order_spec {
    const char *price; /* of the product */
    int stock;         /* of the product at the start */
    int qty;
    const char *status, *reason; /* the order's end */
    int64_t total_cents;         /* APPROVED: the order's total */
    const char *payment;         /* the payment's status, NULL: none */
    int stock_taken;             /* stock the order keeps */
    const step_t *steps;
    size_t step_cnt;
} specs[O_COUNT] = {
    {"10", 10, 2, "APPROVED", NULL, 2000, "PROCESSED", 2, approved_steps,
     TD_ARRAY_SIZE(approved_steps)},
    {"3", 1, 5, "REJECTED", "out_of_stock", 0, NULL, 0, no_stock_steps,
     TD_ARRAY_SIZE(no_stock_steps)},
    {"600", 5, 2, "REJECTED", "limit_exceeded", 0, "FAILED", 0, over_limit_steps,
     TD_ARRAY_SIZE(over_limit_steps)},
};

static const char *const saga_topics[] = {"orders", "reservations", "payments"};

/* The fault points the runtime must have (tidings/fault.h). */
static const char *const fault_points[] = {
    "outbox.after_insert",
    "db.before_commit",
    "db.after_commit",
    "db.wal_sync",
    "relay.after_produce",
    "relay.before_delete",
    "relay.after_delete",
    "consumer.before_handler",
    "consumer.before_commit",
    "consumer.after_commit",
    "consumer.after_offset_store",
    "consumer.mid_batch",
    "consumer.handler_rejects",
};
/* Points the error loop skips (a crash there is like any other): an error
 * at consumer.handler_rejects dead-letters a saga event on purpose (the
 * redrive tests' stand-in for a bug), and one at db.wal_sync leaves the
 * database acknowledging nothing more until a restart (test_db checks
 * that): either way the saga cannot settle. */
static const char *const error_skip[] = {"consumer.handler_rejects", "db.wal_sync"};
#define POINT_CNT TD_ARRAY_SIZE(fault_points)

static bool error_skipped(const char *point)
{
    for (size_t i = 0; i < TD_ARRAY_SIZE(error_skip); i++)
        if (!strcmp(point, error_skip[i])) return true;
    return false;
}

typedef struct scenario {
    char product[O_COUNT][TD_UUID_LEN + 1];
    char user[O_COUNT][TD_UUID_LEN + 1];
    char placed[O_COUNT][TD_UUID_LEN + 1]; /* the id a 202 gave, "" if none */
} scenario_t;

/* ---- failing inside a child ---------------------------------------------- */

/* Where a child reports (a pipe to its runner); cmocka's asserts cannot be
 * used in a forked child, so a failed check writes one line and exits. */
static int report_fd = -1;

static TD_NORETURN TD_PRINTF(1, 2) void child_fail(const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg - 1, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if (n > (int)sizeof msg - 2) n = (int)sizeof msg - 2;
    for (int i = 0; i < n; i++)
        if (msg[i] == '\n') msg[i] = ' ';
    msg[n++] = '\n';
    char line[1100];
    int m = snprintf(line, sizeof line, "FAIL %.*s", n, msg);
    ssize_t w = write(report_fd, line, (size_t)m);
    w = write(2, line, (size_t)m);
    (void)w;
    _exit(1);
}

#define CHECK(cond, ...)                      \
    do {                                      \
        if (!(cond)) child_fail(__VA_ARGS__); \
    } while (0)

static void report_line(const char *fmt, ...) TD_PRINTF(1, 2);
static void report_line(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 1) n = (int)sizeof line - 1;
    ssize_t w = write(report_fd, line, (size_t)n);
    (void)w;
}

/* With TIDINGS_FAULTSIM_VERBOSE=1, a child's progress goes to its log. */
static void phase(const char *what)
{
    static int64_t t0;
    const char *v = getenv("TIDINGS_FAULTSIM_VERBOSE");
    if (!v || strcmp(v, "1")) return;
    if (!t0) t0 = td_mono_ms();
    fprintf(stderr, "faultsim[%d] +%lld ms: %s\n", (int)getpid(), (long long)(td_mono_ms() - t0),
            what);
}

/* ---- the services in a child --------------------------------------------- */

typedef struct world {
    char *dir;
    const char *brokers;
    td_config_t pcfg, ocfg, paycfg;
    products_service_t *products;
    orders_service_t *orders;
    payments_service_t *payments;
    char products_url[64], orders_url[64], payments_url[64];
    /* every order that exists, for the orphan-event check */
    char known[MAX_KNOWN][TD_UUID_LEN + 1];
    size_t known_cnt;
} world_t;

static void service_cfg(world_t *w, td_config_t *cfg, const char *name, td_service_t svc)
{
    ts_config(cfg, name, w->dir, w->brokers);
    cfg->ports[svc] = 0;
    cfg->payment_limit = LIMIT_CENTS;
    cfg->fetch_wait_ms = FETCH_WAIT_MS;
    /* Restarts and injected errors log warnings by design; the children's
     * stderr is a file kept only when the iteration fails. */
    if (!getenv("TIDINGS_LOG_LEVEL")) {
        cfg->log_level = TD_LOG_ERROR;
        td_log_init(name, cfg->log_level, cfg->log_json);
    }
}

static void world_products_start(world_t *w)
{
    char err[512] = "";
    w->products = products_service_start(&w->pcfg, err, sizeof err);
    CHECK(w->products, "products: %s", err);
    snprintf(w->products_url, sizeof w->products_url, "http://127.0.0.1:%d",
             td_app_service_port(w->products));
}

static void world_start(world_t *w, const char *dir, const char *brokers)
{
    char err[512] = "";
    memset(w, 0, sizeof *w);
    w->dir = td_strdup(dir);
    w->brokers = brokers;
    service_cfg(w, &w->pcfg, "products", TD_SVC_PRODUCTS);
    service_cfg(w, &w->ocfg, "orders", TD_SVC_ORDERS);
    service_cfg(w, &w->paycfg, "payments", TD_SVC_PAYMENTS);
    world_products_start(w);
    w->orders = orders_service_start(&w->ocfg, err, sizeof err);
    CHECK(w->orders, "orders: %s", err);
    w->payments = payments_service_start(&w->paycfg, err, sizeof err);
    CHECK(w->payments, "payments: %s", err);
    snprintf(w->orders_url, sizeof w->orders_url, "http://127.0.0.1:%d",
             td_app_service_port(w->orders));
    snprintf(w->payments_url, sizeof w->payments_url, "http://127.0.0.1:%d",
             td_app_service_port(w->payments));
}

/* A clean stop, as an upgrade would do it: the database closes and the
 * consumer leaves its group. */
static void world_products_stop(world_t *w)
{
    td_app_service_stop(w->products);
    w->products = NULL;
}

static void world_stop(world_t *w)
{
    td_app_service_stop(w->payments);
    td_app_service_stop(w->orders);
    td_app_service_stop(w->products);
    td_config_free(&w->pcfg);
    td_config_free(&w->ocfg);
    td_config_free(&w->paycfg);
    free(w->dir);
}

static char *mint(const world_t *w, const char *sub, const char *role)
{
    td_claims_t c;
    memset(&c, 0, sizeof c);
    snprintf(c.sub, sizeof c.sub, "%s", sub);
    snprintf(c.role, sizeof c.role, "%s", role);
    c.iat = td_now_ms() / 1000;
    c.exp = c.iat + 3600;
    return td_jwt_sign(w->pcfg.secret, w->pcfg.secret_len, &c);
}

static ts_resp_t call(const char *method, const char *base, const char *path, const char *token,
                      const char *body)
{
    char *url = td_asprintf("%s%s", base, path);
    ts_resp_t r = ts_http(method, url, token, body, NULL, NULL);
    free(url);
    return r;
}

/* ---- the scenario's steps ------------------------------------------------ */

static char *scenario_path(const char *dir)
{
    return td_asprintf("%s/scenario", dir);
}

/* One line per order: product, user, placed order id or "-". Written
 * atomically, so a crash leaves the old or the new version. */
static void scenario_save(const char *dir, const scenario_t *sc)
{
    char buf[1024];
    size_t len = 0;
    for (int i = 0; i < O_COUNT; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s %s %s\n", sc->product[i],
                                sc->user[i], sc->placed[i][0] ? sc->placed[i] : "-");
    char *path = scenario_path(dir);
    CHECK(td_write_file(path, buf, len, 0644) == 0, "cannot write %s", path);
    free(path);
}

static void scenario_load(const char *dir, scenario_t *sc)
{
    memset(sc, 0, sizeof *sc);
    char *path = scenario_path(dir);
    size_t len = 0;
    char *text = td_read_file(path, &len);
    CHECK(text, "no %s: the crashed child did not get through its setup", path);
    char *save = NULL, *line = strtok_r(text, "\n", &save);
    for (int i = 0; i < O_COUNT; i++, line = strtok_r(NULL, "\n", &save)) {
        char placed[TD_UUID_LEN + 1];
        CHECK(line && sscanf(line, "%36s %36s %36s", sc->product[i], sc->user[i], placed) == 3,
              "bad %s", path);
        if (strcmp(placed, "-") != 0) memcpy(sc->placed[i], placed, sizeof placed);
    }
    free(text);
    free(path);
}

/* A service's outbox is empty: all it committed is on Kafka (arg: its db). */
static bool outbox_empty(void *arg)
{
    return td_outbox_backlog(arg) == 0;
}

/* Products and users, before any fault is armed. */
static void scenario_setup(world_t *w, scenario_t *sc)
{
    memset(sc, 0, sizeof *sc);
    char admin_id[TD_UUID_LEN + 1];
    td_uuid_new(admin_id);
    char *admin = mint(w, admin_id, "admin");
    for (int i = 0; i < O_COUNT; i++) {
        char *body = td_asprintf("{\"title\":\"Faultsim %d\",\"price\":%s,\"quantity\":%d}", i,
                                 specs[i].price, specs[i].stock);
        ts_resp_t r = call("POST", w->products_url, "/products", admin, body);
        free(body);
        CHECK(r.status == 201, "POST /products: %ld %s", r.status, r.body);
        const char *pid = json_string_value(json_object_get(r.json, "productId"));
        CHECK(pid, "no productId");
        snprintf(sc->product[i], sizeof sc->product[i], "%s", pid);
        ts_resp_free(&r);
        td_uuid_new(sc->user[i]);
    }
    free(admin);
    /* The creations' own events are out before the fault counts. */
    CHECK(ts_wait_until(outbox_empty, td_app_service_db(w->products), WAIT_MS),
          "ProductCreatedEvents not published");
}

/* Places the orders. A failed POST is allowed only when errors are being
 * injected; a crash never returns here.
 *
 * With the products service down (w->products NULL: the caller stopped it
 * before arming the fault), it starts again once the orders are all on
 * Kafka: its consumer finds the OrderCreatedEvents waiting in one partition
 * and takes them as one batch, so the run passes consumer.mid_batch. Live,
 * each order mostly comes alone. A restart costs the mock's 3 s delay
 * before a group's first rebalance. */
static void scenario_place(world_t *w, scenario_t *sc, bool errors_allowed, const char *save_dir)
{
    for (int i = 0; i < O_COUNT; i++) {
        char *token = mint(w, sc->user[i], "customer");
        char *body =
            td_asprintf("{\"productId\":\"%s\",\"quantity\":%d}", sc->product[i], specs[i].qty);
        ts_resp_t r = call("POST", w->orders_url, "/orders", token, body);
        free(body);
        free(token);
        if (r.status == 202) {
            const char *oid = json_string_value(json_object_get(r.json, "orderId"));
            CHECK(oid && td_uuid_valid(oid), "202 without an orderId: %s", r.body);
            snprintf(sc->placed[i], sizeof sc->placed[i], "%s", oid);
            if (save_dir) scenario_save(save_dir, sc);
        } else {
            CHECK(errors_allowed && r.status == 500, "POST /orders: %ld %s", r.status, r.body);
        }
        ts_resp_free(&r);
    }
    if (w->products) return;
    CHECK(ts_wait_until(outbox_empty, td_app_service_db(w->orders), WAIT_MS),
          "OrderCreatedEvents not published");
    world_products_start(w);
}

typedef struct quiet_wait {
    world_t *w;
    const scenario_t *sc;
    long hits;
    int64_t since;
} quiet_wait_t;

static const char *order_status(world_t *w, const char *user, const char *order_id, json_t **out)
{
    char path[80];
    snprintf(path, sizeof path, "/orders/%s", order_id);
    char *token = mint(w, user, "customer");
    ts_resp_t r = call("GET", w->orders_url, path, token, NULL);
    free(token);
    CHECK(r.status == 200, "GET %s: %ld %s", path, r.status, r.body);
    const char *st = json_string_value(json_object_get(r.json, "status"));
    CHECK(st, "order without status: %s", r.body);
    static char status[16];
    snprintf(status, sizeof status, "%s", st);
    if (out) *out = json_incref(r.json);
    ts_resp_free(&r);
    return status;
}

/* The placed orders are final and no fault point was hit for QUIET_MS:
 * the scenario has run to its end. */
static bool scenario_over(void *arg)
{
    quiet_wait_t *q = arg;
    for (int i = 0; i < O_COUNT; i++)
        if (q->sc->placed[i][0] &&
            !strcmp(order_status(q->w, q->sc->user[i], q->sc->placed[i], NULL), "PENDING"))
            return false;
    long hits = td_fault_hits();
    if (hits != q->hits) {
        q->hits = hits;
        q->since = td_mono_ms();
    }
    return td_mono_ms() - q->since >= QUIET_MS;
}

static void scenario_wait_over(world_t *w, const scenario_t *sc)
{
    quiet_wait_t q = {w, sc, -1, td_mono_ms()};
    CHECK(ts_wait_until(scenario_over, &q, WAIT_MS), "the scenario did not settle in %d ms",
          WAIT_MS);
}

/* ---- the invariants ------------------------------------------------------ */

typedef struct order_state {
    char id[TD_UUID_LEN + 1]; /* "" when the order does not exist */
} order_state_t;

/* The user's orders: at most one, and the placed one if it was placed. */
static void find_order(world_t *w, const scenario_t *sc, int i, order_state_t *o)
{
    char *token = mint(w, sc->user[i], "customer");
    ts_resp_t r = call("GET", w->orders_url, "/orders", token, NULL);
    free(token);
    CHECK(r.status == 200, "GET /orders: %ld %s", r.status, r.body);
    json_t *arr = json_object_get(r.json, "orders");
    CHECK(json_is_array(arr), "no orders array: %s", r.body);
    CHECK(json_array_size(arr) <= 1, "order %d: %zu orders for one POST: %s", i,
          json_array_size(arr), r.body);
    o->id[0] = '\0';
    if (json_array_size(arr) == 1) {
        const char *id = json_string_value(json_object_get(json_array_get(arr, 0), "orderId"));
        CHECK(id, "order without id: %s", r.body);
        snprintf(o->id, sizeof o->id, "%s", id);
    }
    CHECK(!sc->placed[i][0] || !strcmp(sc->placed[i], o->id),
          "order %d: the client got 202 for %s but the service has \"%s\"", i, sc->placed[i],
          o->id);
    ts_resp_free(&r);
}

typedef struct final_wait {
    world_t *w;
    const char *user, *order_id;
} final_wait_t;

static bool order_final(void *arg)
{
    final_wait_t *f = arg;
    return strcmp(order_status(f->w, f->user, f->order_id, NULL), "PENDING") != 0;
}

static void check_order(world_t *w, const scenario_t *sc, int i, const order_state_t *o)
{
    final_wait_t f = {w, sc->user[i], o->id};
    CHECK(ts_wait_until(order_final, &f, WAIT_MS), "order %d (%s) still PENDING after %d ms", i,
          o->id, WAIT_MS);
    json_t *j = NULL;
    const char *status = order_status(w, sc->user[i], o->id, &j);
    CHECK(!strcmp(status, specs[i].status), "order %d (%s): %s, expected %s", i, o->id, status,
          specs[i].status);
    const char *reason = json_string_value(json_object_get(j, "reason"));
    if (specs[i].reason)
        CHECK(reason && !strcmp(reason, specs[i].reason), "order %d: reason %s, expected %s", i,
              reason ? reason : "(none)", specs[i].reason);
    if (specs[i].total_cents) {
        int64_t total = -1;
        char err[128];
        CHECK(td_json_to_cents(json_object_get(j, "total"), "total", &total, err, sizeof err) == 0,
              "order %d: %s", i, err);
        CHECK(total == specs[i].total_cents, "order %d: total %lld cents", i, (long long)total);
    }
    json_decref(j);

    /* One payment per reserved order, in the state the limit decides. */
    char path[160];
    snprintf(path, sizeof path, "/payments/%s", o->id);
    char *token = mint(w, sc->user[i], "customer");
    ts_resp_t r = call("GET", w->payments_url, path, token, NULL);
    free(token);
    if (specs[i].payment) {
        CHECK(r.status == 200, "order %d: GET %s: %ld %s", i, path, r.status, r.body);
        const char *ps = json_string_value(json_object_get(r.json, "status"));
        CHECK(ps && !strcmp(ps, specs[i].payment), "order %d: payment %s, expected %s", i,
              ps ? ps : "(none)", specs[i].payment);
    } else {
        CHECK(r.status == 404, "order %d: a payment without a reservation: %ld %s", i, r.status,
              r.body);
    }
    ts_resp_free(&r);
}

static int64_t stock_of(world_t *w, const char *product_id)
{
    char path[80];
    snprintf(path, sizeof path, "/products/%s", product_id);
    ts_resp_t r = call("GET", w->products_url, path, NULL, NULL);
    CHECK(r.status == 200, "GET %s: %ld %s", path, r.status, r.body);
    json_t *q = json_object_get(r.json, "quantity");
    CHECK(json_is_integer(q), "no quantity: %s", r.body);
    int64_t v = json_integer_value(q);
    ts_resp_free(&r);
    return v;
}

typedef struct stock_wait {
    world_t *w;
    const scenario_t *sc;
    int64_t want[O_COUNT], have[O_COUNT];
} stock_wait_t;

static bool stock_right(void *arg)
{
    stock_wait_t *s = arg;
    bool ok = true;
    for (int i = 0; i < O_COUNT; i++) {
        s->have[i] = stock_of(s->w, s->sc->product[i]);
        ok &= s->have[i] == s->want[i];
    }
    return ok;
}

/* The saga events on Kafka, by order: distinct ce_ids per type. */
typedef struct seen {
    td_event_t *evs[64];
    size_t cnt;
    size_t records; /* records read, copies included */
} seen_t;

static void seen_free(seen_t *s)
{
    for (size_t i = 0; i < s->cnt; i++) td_event_free(s->evs[i]);
    s->cnt = 0;
}

static bool known_order(const world_t *w, const char *id)
{
    for (size_t i = 0; i < w->known_cnt; i++)
        if (!strcmp(w->known[i], id)) return true;
    return false;
}

/* Reads the saga topics: every record a CloudEvent of an order that exists
 * (an event of a rolled-back change would be an orphan), with its key;
 * events of this scenario's orders kept once per ce_id. */
/* Every record on topics (full names) up to their ends now: a consumer
 * assigned every partition from the beginning reads until each one has
 * reported its end. Exact, unlike waiting for a quiet spell. */
static ts_records_t read_all(const char *brokers, char *const *topics, size_t topic_cnt)
{
    ts_records_t out = {NULL, 0};
    size_t cap = 0;
    char err[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) ||
        rd_kafka_conf_set(conf, "group.id", "faultsim-reader", err, sizeof err) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) ||
        rd_kafka_conf_set(conf, "enable.partition.eof", "true", err, sizeof err) ||
        rd_kafka_conf_set(conf, "fetch.wait.max.ms", "5", err, sizeof err))
        child_fail("reader: %s", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    CHECK(rk, "reader: %s", err);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(64);
    for (size_t t = 0; t < topic_cnt; t++) {
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topics[t], NULL);
        rd_kafka_resp_err_t e = rd_kafka_metadata(rk, 0, rkt, &md, 10000);
        CHECK(!e && md->topic_cnt == 1 && !md->topics[0].err, "no metadata for %s", topics[t]);
        for (int p = 0; p < md->topics[0].partition_cnt; p++)
            rd_kafka_topic_partition_list_add(l, topics[t], p)->offset = RD_KAFKA_OFFSET_BEGINNING;
        rd_kafka_metadata_destroy(md);
        rd_kafka_topic_destroy(rkt);
    }
    rd_kafka_assign(rk, l);
    int parts = l->cnt, at_end = 0;
    rd_kafka_topic_partition_list_destroy(l);
    int64_t deadline = td_mono_ms() + 20000;
    while (at_end < parts) {
        CHECK(td_mono_ms() < deadline, "reading the topics took too long");
        rd_kafka_message_t *msg = rd_kafka_consumer_poll(rk, 50);
        if (!msg) continue;
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            at_end++;
        } else if (msg->err) {
            child_fail("reader: %s", rd_kafka_message_errstr(msg));
        } else {
            if (out.cnt == cap)
                out.recs = td_realloc(out.recs, (cap = cap ? cap * 2 : 64) * sizeof(*out.recs));
            out.recs[out.cnt++] = td_record_from_kafka(msg);
        }
        rd_kafka_message_destroy(msg);
    }
    rd_kafka_consumer_close(rk);
    rd_kafka_destroy(rk);
    return out;
}

static void read_saga(world_t *w, const order_state_t *os, seen_t *s)
{
    memset(s, 0, sizeof *s);
    char *topics[TD_ARRAY_SIZE(saga_topics)];
    for (size_t t = 0; t < TD_ARRAY_SIZE(saga_topics); t++)
        topics[t] = td_topic_name(&w->pcfg, saga_topics[t]);
    ts_records_t rs = read_all(w->brokers, topics, TD_ARRAY_SIZE(saga_topics));
    for (size_t r = 0; r < rs.cnt; r++) {
        const char *topic = rs.recs[r]->topic;
        char err[256];
        td_event_t *ev = td_event_from_record(rs.recs[r], err, sizeof err);
        CHECK(ev, "a record on %s that is no CloudEvent: %s", topic, err);
        CHECK(known_order(w, ev->correlationid), "%s %s on %s for order %s, which does not exist",
              ev->type, ev->id, topic, ev->correlationid);
        CHECK(rs.recs[r]->key_len == TD_UUID_LEN &&
                  !memcmp(rs.recs[r]->key, ev->correlationid, TD_UUID_LEN),
              "%s %s: key is not the order id", ev->type, ev->id);
        bool ours = false, dup = false;
        for (int i = 0; i < O_COUNT; i++) ours |= !strcmp(os[i].id, ev->correlationid);
        for (size_t j = 0; j < s->cnt; j++) dup |= !strcmp(s->evs[j]->id, ev->id);
        if (ours) s->records++;
        if (!ours || dup) {
            td_event_free(ev);
            continue;
        }
        CHECK(s->cnt < TD_ARRAY_SIZE(s->evs), "too many events");
        free(ev->topic);
        ev->topic = NULL;
        for (size_t t = 0; t < TD_ARRAY_SIZE(saga_topics); t++)
            if (!strcmp(topic, topics[t])) ev->topic = td_strdup(saga_topics[t]);
        s->evs[s->cnt++] = ev;
    }
    ts_records_free(&rs);
    for (size_t t = 0; t < TD_ARRAY_SIZE(saga_topics); t++) free(topics[t]);
}

static size_t count_type(const seen_t *s, const char *order_id, const char *type,
                         const td_event_t **last)
{
    size_t n = 0;
    for (size_t i = 0; i < s->cnt; i++) {
        if (strcmp(s->evs[i]->correlationid, order_id) || strcmp(s->evs[i]->type, type)) continue;
        n++;
        if (last) *last = s->evs[i];
    }
    return n;
}

typedef struct saga_wait {
    world_t *w;
    const order_state_t *os;
    seen_t seen;
} saga_wait_t;

static bool sagas_complete(void *arg)
{
    saga_wait_t *sw = arg;
    seen_free(&sw->seen);
    read_saga(sw->w, sw->os, &sw->seen);
    for (int i = 0; i < O_COUNT; i++) {
        if (!sw->os[i].id[0]) continue;
        for (size_t k = 0; k < specs[i].step_cnt; k++)
            if (count_type(&sw->seen, sw->os[i].id, specs[i].steps[k].type, NULL) == 0)
                return false;
    }
    return true;
}

/* Exactly the saga's events per order: each fact once (one distinct ce_id),
 * on its topic, caused by the event before it; nothing else. */
static void check_events(world_t *w, const order_state_t *os)
{
    saga_wait_t sw;
    memset(&sw, 0, sizeof sw);
    sw.w = w;
    sw.os = os;
    CHECK(ts_wait_until(sagas_complete, &sw, WAIT_MS), "saga events missing after %d ms", WAIT_MS);
    seen_free(&sw.seen);
    /* Once more after a pause, for stragglers: a second event for one fact
     * would come from the same processing as the first. */
    td_sleep_ms(300);
    seen_t s;
    read_saga(w, os, &s);
    size_t want = 0;
    for (int i = 0; i < O_COUNT; i++) {
        if (!os[i].id[0]) continue;
        want += specs[i].step_cnt;
        for (size_t k = 0; k < specs[i].step_cnt; k++) {
            const step_t *st = &specs[i].steps[k];
            const td_event_t *ev = NULL, *cause = NULL;
            size_t n = count_type(&s, os[i].id, st->type, &ev);
            CHECK(n == 1, "order %d (%s): %zu distinct %s events", i, os[i].id, n, st->type);
            CHECK(!strcmp(ev->topic, st->topic), "%s on %s", st->type, ev->topic);
            if (!st->cause) {
                CHECK(!ev->causationid, "%s has a causation id", st->type);
                continue;
            }
            count_type(&s, os[i].id, st->cause, &cause);
            CHECK(ev->causationid && !strcmp(ev->causationid, cause->id),
                  "order %d: %s not caused by its %s", i, st->type, st->cause);
        }
    }
    if (s.cnt != want) {
        for (size_t j = 0; j < s.cnt; j++)
            fprintf(stderr, "  %s %s %s\n", s.evs[j]->correlationid, s.evs[j]->type, s.evs[j]->id);
        child_fail("%zu distinct saga events, expected %zu", s.cnt, want);
    }
    seen_free(&s);

    /* Nothing was dead-lettered. */
    char *dlts[TD_ARRAY_SIZE(saga_topics)];
    for (size_t t = 0; t < TD_ARRAY_SIZE(saga_topics); t++) {
        char *name = td_asprintf("%s.DLT", saga_topics[t]);
        dlts[t] = td_topic_name(&w->pcfg, name);
        free(name);
    }
    ts_records_t rs = read_all(w->brokers, dlts, TD_ARRAY_SIZE(saga_topics));
    CHECK(rs.cnt == 0, "%zu records dead-lettered, the first on %s", rs.cnt, rs.recs[0]->topic);
    for (size_t t = 0; t < TD_ARRAY_SIZE(saga_topics); t++) free(dlts[t]);
}

/* Every invariant of SPEC section 4 for the scenario's orders. */
static void verify(world_t *w, const scenario_t *sc)
{
    order_state_t os[O_COUNT];
    for (int i = 0; i < O_COUNT; i++) {
        find_order(w, sc, i, &os[i]);
        if (os[i].id[0] && !known_order(w, os[i].id)) {
            CHECK(w->known_cnt < MAX_KNOWN, "too many orders");
            memcpy(w->known[w->known_cnt++], os[i].id, TD_UUID_LEN + 1);
        }
    }
    for (int i = 0; i < O_COUNT; i++)
        if (os[i].id[0]) check_order(w, sc, i, &os[i]);
    phase("orders final");

    stock_wait_t sw;
    memset(&sw, 0, sizeof sw);
    sw.w = w;
    sw.sc = sc;
    for (int i = 0; i < O_COUNT; i++)
        sw.want[i] = specs[i].stock - (os[i].id[0] ? specs[i].stock_taken : 0);
    if (!ts_wait_until(stock_right, &sw, WAIT_MS))
        child_fail("stock %lld/%lld/%lld, expected %lld/%lld/%lld", (long long)sw.have[0],
                   (long long)sw.have[1], (long long)sw.have[2], (long long)sw.want[0],
                   (long long)sw.want[1], (long long)sw.want[2]);

    phase("stock right");
    check_events(w, os);
    /* Late effects of a duplicate would show in the stock last. */
    CHECK(stock_right(&sw), "stock changed after the saga settled");
}

/* ---- the crash loop: one iteration --------------------------------------- */

static char *read_line_fd(int fd)
{
    char buf[4096];
    size_t len = 0;
    while (len < sizeof buf - 1) {
        ssize_t n = read(fd, buf + len, 1);
        if (n <= 0 || buf[len] == '\n') break;
        len++;
    }
    buf[len] = '\0';
    return td_strdup(buf);
}

/* Child 1: the services with the k-th hit of any point crashing. */
static TD_NORETURN void crash_child(const char *dir, int go_fd, long k)
{
    char *brokers = read_line_fd(go_fd);
    CHECK(*brokers, "no broker");
    phase("crash child: start");
    world_t w;
    world_start(&w, dir, brokers);
    scenario_t sc;
    scenario_setup(&w, &sc);
    scenario_save(dir, &sc);
    world_products_stop(&w);
    phase("crash child: set up");

    td_fault_report_fd(report_fd);
    td_fault_arm(NULL, k, k % 2 ? TD_FAULT_CRASH : TD_FAULT_CRASH_LATE);
    scenario_place(&w, &sc, false, dir);
    phase("crash child: placed");
    scenario_wait_over(&w, &sc);
    /* Not reached when the fault fired. */
    report_line("done %ld\n", td_fault_hits());
    _exit(0);
}

/* Child 2: the same services restarted on the crashed one's data, no
 * fault: everything must come right. */
static TD_NORETURN void recover_child(const char *dir, int go_fd)
{
    char *brokers = read_line_fd(go_fd);
    if (!*brokers) _exit(3); /* child 1 failed: nothing to check */
    td_fault_disarm();
    phase("recovery: start");
    world_t w;
    world_start(&w, dir, brokers);
    scenario_t sc;
    scenario_load(dir, &sc);
    verify(&w, &sc);
    phase("recovery: verified");
    world_stop(&w);
    report_line("ok\n");
    _exit(0);
}

/* In a child just forked from parent: dies with it, so that a test killed
 * by its timeout leaves no services behind. */
static void die_with_parent(pid_t parent)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(12);
}

/* waitpid with a deadline; a child past it is killed and counts as hung
 * (-1). Otherwise the exit status, or 128 + the signal. */
static int wait_child(pid_t pid, int timeout_ms)
{
    int64_t deadline = td_mono_ms() + timeout_ms;
    int st = 0;
    for (;;) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) break;
        if (r < 0 && errno != EINTR) return -2;
        if (td_mono_ms() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        td_sleep_ms(10);
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* The runner of iteration k, a child of the test: forks both children
 * while it has no thread yet, then runs the broker. Writes one result line
 * to out_fd: <k> <c1 status> <c2 status> <c1 ms> <c2 ms> <dir> <children's
 * lines joined by |>. */
static TD_NORETURN void run_iteration(long k, int out_fd)
{
    int64_t t0 = td_mono_ms();
    char *dir = ts_tmpdir("0070-faultsim");
    char *logpath = td_asprintf("%s/children.log", dir);
    int logfd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int go1[2], go2[2], res[2];
    if (logfd < 0 || pipe(go1) || pipe(go2) || pipe(res)) _exit(10);
    fflush(NULL);
    pid_t self = getpid();
    pid_t c1 = fork();
    if (c1 == 0) {
        die_with_parent(self);
        close(go1[1]);
        close(go2[0]);
        close(go2[1]);
        close(res[0]);
        dup2(logfd, 2);
        report_fd = res[1];
        crash_child(dir, go1[0], k);
    }
    pid_t c2 = fork();
    if (c2 == 0) {
        die_with_parent(self);
        close(go1[0]);
        close(go1[1]);
        close(go2[1]);
        close(res[0]);
        dup2(logfd, 2);
        report_fd = res[1];
        recover_child(dir, go2[0]);
    }
    close(go1[0]);
    close(go2[0]);
    close(res[1]);
    if (c1 < 0 || c2 < 0) _exit(11);

    dup2(logfd, 2);
    td_config_t bcfg;
    ts_config(&bcfg, "broker", dir, NULL);
    bcfg.partitions = 1; /* a backlog is one fetch (scenario_place) */
    td_broker_t *broker = ts_broker(&bcfg);
    char *boot = td_asprintf("%s\n", td_broker_bootstraps(broker));
    ssize_t w = write(go1[1], boot, strlen(boot));
    close(go1[1]);
    int s1 = wait_child(c1, CHILD_TIMEOUT_MS);
    int64_t t1 = td_mono_ms();
    /* The broker drops the crashed consumers from their groups only after
     * their session timeout (6 s, consumer.c), and a rebalance that starts
     * before may wait for them through a second round. After a short pause
     * the first round more often ends without them: 2 s measured fastest
     * (0 to 3 s tried). Only a crash or a finished scenario leaves
     * something to check. */
    if (s1 == TD_FAULT_EXIT) td_sleep_ms(RESTART_PAUSE_MS);
    if (s1 == TD_FAULT_EXIT || s1 == 0) w = write(go2[1], boot, strlen(boot));
    close(go2[1]);
    int s2 = wait_child(c2, CHILD_TIMEOUT_MS);
    (void)w;
    td_broker_stop(broker);

    char lines[2048];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof lines - 1 && (n = read(res[0], lines + len, sizeof lines - 1 - len)) > 0)
        len += (size_t)n;
    lines[len] = '\0';
    for (size_t i = 0; i < len; i++)
        if (lines[i] == '\n') lines[i] = '|';
    bool ok = (s1 == TD_FAULT_EXIT || s1 == 0) && s2 == 0;
    const char *keep = getenv("TIDINGS_FAULTSIM_KEEP");
    if (ok && !(keep && *keep == '1')) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    char *out = td_asprintf("%ld %d %d %lld %lld %s %s\n", k, s1, s2, (long long)(t1 - t0),
                            (long long)(td_mono_ms() - t1), dir, lines);
    w = write(out_fd, out, strlen(out));
    _exit(0);
}

/* The error loop runs beside the crash loop (it is one process, mostly
 * waiting, like the crash loop's), started by the group setup. */
static struct {
    pid_t pid;
    int fd;
    int status; /* once reaped by the crash loop's waitpid(-1), else -100 */
    char *dir, *logpath;
    int64_t t0;
} E = {-1, -1, -100, NULL, NULL, 0};

/* ---- the crash loop: the driver ------------------------------------------ */

typedef struct runner {
    pid_t pid;
    int fd;
    long k;
} runner_t;

typedef struct result {
    long k;
    int s1, s2;
    long ms1, ms2; /* how long each child took */
    char dir[512];
    char point[64]; /* where child 1 crashed, "" if it did not */
    bool late;      /* TD_FAULT_CRASH_LATE */
    long hits;      /* child 1 finished: how many hits the scenario has */
    char text[1500];
} result_t;

static long env_long(const char *name, long dflt, long lo, long hi)
{
    const char *v = getenv(name);
    if (!v || !*v) return dflt;
    char *end = NULL;
    long n = strtol(v, &end, 10);
    if (*end || n < lo || n > hi) fail_msg("%s=%s: must be %ld..%ld", name, v, lo, hi);
    return n;
}

static void parse_result(const char *line, result_t *r)
{
    memset(r, 0, sizeof *r);
    int off = 0;
    if (sscanf(line, "%ld %d %d %ld %ld %511s %n", &r->k, &r->s1, &r->s2, &r->ms1, &r->ms2, r->dir,
               &off) < 6)
        fail_msg("bad runner line: %s", line);
    snprintf(r->text, sizeof r->text, "%s", line + off);
    r->hits = -1;
    const char *p = r->text;
    while (*p) {
        long n;
        char word[64], action[16];
        if (sscanf(p, "done %ld", &n) == 1)
            r->hits = n;
        else if (r->s1 == TD_FAULT_EXIT && !r->point[0] &&
                 sscanf(p, "%63s %ld %15[a-z-]", word, &n, action) == 3 &&
                 !strncmp(action, "crash", 5)) {
            snprintf(r->point, sizeof r->point, "%s", word);
            r->late = !strcmp(action, "crash-late");
        }
        const char *bar = strchr(p, '|');
        if (!bar) break;
        p = bar + 1;
    }
}

static int point_index(const char *point)
{
    for (size_t i = 0; i < POINT_CNT; i++)
        if (!strcmp(fault_points[i], point)) return (int)i;
    return -1;
}

static void test_crash_loop(void **state)
{
    (void)state;
    long jobs = env_long("TIDINGS_FAULTSIM_JOBS", DEFAULT_JOBS, 1, 32);
    long stride = env_long("TIDINGS_FAULTSIM_STRIDE", DEFAULT_STRIDE, 1, 1000);
    bool verbose = env_long("TIDINGS_FAULTSIM_VERBOSE", 0, 0, 1) == 1;
    int64_t t0 = td_mono_ms();
    runner_t run[32];
    size_t running = 0;
    result_t *results = td_calloc(MAX_RUNS, sizeof(*results));
    size_t result_cnt = 0;
    long first_k = env_long("TIDINGS_FAULTSIM_FIRST", 1, 1, MAX_RUNS - 1);
    long last_k = env_long("TIDINGS_FAULTSIM_LAST", MAX_RUNS - 1, first_k, MAX_RUNS - 1);
    bool whole = first_k == 1 && last_k == MAX_RUNS - 1;
    long next_k = first_k, end_k = 0; /* end_k: first k the scenario did not reach */
    bool failed = false;

    while (running > 0 || (!end_k && !failed && next_k <= last_k)) {
        while (!end_k && !failed && running < (size_t)jobs && next_k <= last_k) {
            int p[2];
            assert_int_equal(pipe(p), 0);
            fflush(NULL);
            pid_t self = getpid();
            pid_t pid = fork();
            assert_true(pid >= 0);
            if (pid == 0) {
                die_with_parent(self);
                close(p[0]);
                for (size_t i = 0; i < running; i++) close(run[i].fd);
                run_iteration(next_k, p[1]);
            }
            close(p[1]);
            run[running++] = (runner_t){pid, p[0], next_k};
            next_k += stride;
        }
        int st;
        pid_t pid = waitpid(-1, &st, 0);
        if (pid < 0) {
            if (errno == EINTR) continue;
            fail_msg("waitpid: %s", strerror(errno));
        }
        if (pid == E.pid) {
            E.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            continue;
        }
        size_t i = 0;
        while (i < running && run[i].pid != pid) i++;
        if (i == running) continue;
        char *line = read_line_fd(run[i].fd);
        long k = run[i].k;
        close(run[i].fd);
        run[i] = run[--running];
        result_t *r = &results[result_cnt++];
        if (!*line) {
            r->k = k;
            snprintf(r->text, sizeof r->text, "runner died (status %d)", st);
            r->s1 = -3;
        } else {
            parse_result(line, r);
        }
        free(line);
        bool ok = (r->s1 == TD_FAULT_EXIT || r->s1 == 0) && r->s2 == 0;
        if (!ok) {
            failed = true;
            fprintf(stderr, "faultsim: k=%ld FAILED (child 1: %d, child 2: %d) %s\n  logs: %s\n",
                    r->k, r->s1, r->s2, r->text, r->dir);
        } else if (r->s1 == 0 && (!end_k || r->k < end_k)) {
            end_k = r->k;
        }
        if (verbose)
            printf("  k=%-4ld %-28s crashed child %5ld ms, recovery %5ld ms\n", r->k,
                   r->s1 == 0 ? "(scenario over)" : r->point, r->ms1, r->ms2);
    }

    /* Summary: where the crashes landed. */
    long crashes = 0, max_k = 0, hits = -1;
    long per_point[POINT_CNT] = {0}, late_point[POINT_CNT] = {0};
    for (size_t i = 0; i < result_cnt; i++) {
        const result_t *r = &results[i];
        if (r->s1 == TD_FAULT_EXIT) {
            crashes++;
            if (r->k > max_k) max_k = r->k;
            int pi = point_index(r->point);
            if (pi >= 0) {
                per_point[pi]++;
                late_point[pi] += r->late;
            } else
                fprintf(stderr, "faultsim: k=%ld crashed at unknown point \"%s\"\n", r->k,
                        r->point);
        }
        if (r->s1 == 0 && r->k == end_k) hits = r->hits;
    }
    printf("faultsim crash loop: k=1..%ld%s, %ld crash points, %ld runs (scenario: %ld hits), "
           "%lld s with %ld at once%s\n",
           max_k, stride > 1 ? " (strided)" : "", crashes, (long)result_cnt, hits,
           (long long)((td_mono_ms() - t0) / 1000), jobs, failed ? "" : ", all invariants held");
    for (size_t i = 0; i < POINT_CNT; i++)
        printf("  %-28s %2ld crashes (%ld late)\n", fault_points[i], per_point[i], late_point[i]);
    fflush(stdout);
    if (failed) fail_msg("an iteration broke an invariant (see above)");
    free(results);
    if (!whole) return; /* a debugging run over part of the range */
    assert_true(end_k > 0);
    assert_true(crashes >= 10);
    /* Every point is on the scenario's path, so a full loop crashes at
     * each of them at least once. */
    if (stride == 1)
        for (size_t i = 0; i < POINT_CNT; i++)
            if (per_point[i] == 0) fail_msg("no crash at %s", fault_points[i]);
}

/* ---- the error loop ------------------------------------------------------ */

/* Rounds in one process: each arms an error at the k-th hit of one point,
 * runs the scenario with new products and users, and checks everything. */
static TD_NORETURN void error_child(const char *dir, const long *ks, size_t k_cnt)
{
    td_config_t bcfg;
    ts_config(&bcfg, "broker", dir, NULL);
    bcfg.partitions = 1; /* a backlog is one fetch (scenario_place) */
    td_broker_t *broker = ts_broker(&bcfg);
    world_t w;
    world_start(&w, dir, td_broker_bootstraps(broker));
    for (size_t p = 0; p < POINT_CNT; p++) {
        if (error_skipped(fault_points[p])) continue;
        for (size_t i = 0; i < k_cnt; i++) {
            scenario_t sc;
            scenario_setup(&w, &sc);
            /* Live, the point is hardly ever reached (scenario_place). */
            if (!strcmp(fault_points[p], "consumer.mid_batch")) world_products_stop(&w);
            td_fault_arm(fault_points[p], ks[i], TD_FAULT_ERROR);
            scenario_place(&w, &sc, true, NULL);
            scenario_wait_over(&w, &sc);
            const char *fired = td_fault_fired();
            long hits = td_fault_hits();
            td_fault_disarm();
            verify(&w, &sc);
            report_line("%s %ld %s %ld\n", fault_points[p], ks[i], fired ? "fired" : "-", hits);
        }
    }
    world_stop(&w);
    td_broker_stop(broker);
    report_line("ok\n");
    _exit(0);
}

static int start_error_loop(void **state)
{
    (void)state;
    static const long ks[] = {1, 2, 4};
    if (env_long("TIDINGS_FAULTSIM_ERRORS", 1, 0, 1) == 0) return 0;
    E.t0 = td_mono_ms();
    E.dir = ts_tmpdir("0070-faultsim-errors");
    E.logpath = td_asprintf("%s/child.log", E.dir);
    int logfd = open(E.logpath, O_WRONLY | O_CREAT | O_APPEND, 0644);
    int p[2];
    if (logfd < 0 || pipe(p) != 0) return -1;
    fflush(NULL);
    pid_t self = getpid();
    E.pid = fork();
    if (E.pid < 0) return -1;
    if (E.pid == 0) {
        die_with_parent(self);
        close(p[0]);
        dup2(logfd, 2);
        report_fd = p[1];
        error_child(E.dir, ks, TD_ARRAY_SIZE(ks));
    }
    close(p[1]);
    close(logfd);
    E.fd = p[0];
    return 0;
}

static void test_error_loop(void **state)
{
    (void)state;
    if (E.pid < 0) skip();
    int rounds = 0, fired = 0;
    bool ok = false;
    char failure[1200] = "";
    for (;;) {
        char *line = read_line_fd(E.fd);
        if (!*line) {
            free(line);
            break;
        }
        char point[64], what[16];
        long k, hits;
        if (!strcmp(line, "ok")) {
            ok = true;
        } else if (!strncmp(line, "FAIL ", 5)) {
            snprintf(failure, sizeof failure, "%s", line + 5);
        } else if (sscanf(line, "%63s %ld %15s %ld", point, &k, what, &hits) == 4) {
            rounds++;
            fired += !strcmp(what, "fired");
            printf("  error at %-28s hit %ld: %s (%ld hits)\n", point, k,
                   strcmp(what, "fired") ? "not reached" : "invariants held", hits);
        }
        free(line);
    }
    close(E.fd);
    int s = E.status != -100 ? E.status : wait_child(E.pid, CHILD_TIMEOUT_MS * 4);
    printf("faultsim error loop: %d rounds, %d errors injected, %lld s\n", rounds, fired,
           (long long)((td_mono_ms() - E.t0) / 1000));
    fflush(stdout);
    if (!ok || s != 0)
        fail_msg("error loop failed (status %d): %s; logs: %s", s, failure, E.logpath);
    /* Each point's first hit is on the scenario's path. */
    assert_true(fired >= (int)(POINT_CNT - TD_ARRAY_SIZE(error_skip)));
    nftw(E.dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(E.logpath);
    free(E.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crash_loop),
        cmocka_unit_test(test_error_loop),
    };
    return cmocka_run_group_tests(tests, start_error_loop, NULL);
}
