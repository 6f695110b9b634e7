/* One event for many people: the notifications service in-process on an
 * embedded broker, W users who know the shop (a UserRegisteredEvent each,
 * produced onto the users topic as the users service's relay would, so
 * each also gets its welcome notification), one product
 * (ProductCreatedEvent) that all W watch (POST /watches over HTTP, each
 * with the user's own token signed with the shared secret), then one
 * ProductUpdatedEvent with a lower price. The rule consumer fixes the W
 * recipients in one statement and a worker creates their notifications a
 * chunk per transaction; the benchmark times that from the produce until
 * all W exist (tidings_notifications_created_total, counted inside each
 * chunk's transaction; the database is checked at the end), then until the
 * relay has published the W NotificationCreatedEvents and the live
 * consumer has read them back.
 *
 * Meanwhile, to show that the fan-out does not hold the service up: one
 * other user (not a watcher) signs in over and over, and the time from
 * producing each UserLoggedInEvent until its notification exists (the rule
 * consumer's own path) and until it arrives on that user's open stream
 * (behind the fan-out's events in the relay and the live consumer) is
 * measured; and a client thread reads GET /notifications in a loop. The
 * same probes run before the price drop for comparison. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <strings.h>
#include <sys/socket.h>

#include "bench.h"
#include "notifications/notifications_service.h"
#include "tidings/bus.h"
#include "tidings/metrics.h"

#define WATCHERS       10000
#define CLIENTS        4  /* threads making the watches */
#define BASE_PROBES    20 /* sign-ins measured before the price drop */
#define PROBE_GAP_MS   20 /* between one probe's notification and the next probe */
#define MAX_PROBES     4096
#define WAIT_MS        90000
#define READER_PAGE    "20"
#define PRICE_BEFORE   50000 /* cents */
#define PRICE_AFTER    45000
#define PRODUCT_TITLE  "Bench console"
#define CREATED_METRIC "tidings_notifications_created_total"

/* ---- producing events ------------------------------------------------------- */

static atomic_int dr_failures;

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (msg->err) {
        fprintf(stderr, "fanout: produce: %s\n", rd_kafka_err2str(msg->err));
        atomic_fetch_add(&dr_failures, 1);
    }
}

/* A producer as a service's relay has one (murmur2_random, so keys land
 * where they would), without batching delay. */
static rd_kafka_t *producer_new(const td_config_t *cfg)
{
    char err[512] = "";
    rd_kafka_conf_t *conf = td_kafka_conf(cfg, err, sizeof(err));
    if (!conf || td_kafka_set(conf, "partitioner", "murmur2_random", err, sizeof(err)) != 0 ||
        td_kafka_set(conf, "linger.ms", "0", err, sizeof(err)) != 0) {
        fprintf(stderr, "fanout: producer: %s\n", err);
        if (conf) rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "fanout: producer: %s\n", err);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* Produces an event of service's topic (data stolen); the delivery report
 * is served by a later rd_kafka_poll or flush. Main thread. */
static int produce(rd_kafka_t *rk, const td_config_t *cfg, const char *topic_short,
                   const char *type, const char *key, json_t *data)
{
    td_event_t *ev = td_event_new(topic_short, type, key, data);
    char *topic = td_topic_name(cfg, topic_short);
    td_record_t *rec = td_event_to_record(ev, topic);
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(rec->header_cnt);
    for (size_t i = 0; i < rec->header_cnt; i++)
        rd_kafka_header_add(hdrs, rec->headers[i].name, -1, rec->headers[i].value,
                            rec->headers[i].value ? (ssize_t)rec->headers[i].len : 0);
    rd_kafka_resp_err_t e;
    for (;;) {
        e = rd_kafka_producev(
            rk, RD_KAFKA_V_TOPIC(rec->topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
            RD_KAFKA_V_KEY(rec->key, rec->key_len), RD_KAFKA_V_VALUE(rec->value, rec->value_len),
            RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
        if (e != RD_KAFKA_RESP_ERR__QUEUE_FULL) break;
        rd_kafka_poll(rk, 10);
    }
    if (e) {
        rd_kafka_headers_destroy(hdrs);
        fprintf(stderr, "fanout: produce: %s\n", rd_kafka_err2str(e));
    }
    td_record_free(rec);
    free(topic);
    td_event_free(ev);
    rd_kafka_poll(rk, 0);
    return e ? -1 : 0;
}

/* ---- the world -------------------------------------------------------------- */

typedef struct world {
    char *dir;
    td_config_t bcfg, cfg;
    td_broker_t *broker;
    notifications_service_t *svc;
    rd_kafka_t *rk;
    char url[64];
    int port;
    char (*users)[TD_UUID_LEN + 1]; /* WATCHERS watchers */
    char **tokens;
    char probe[TD_UUID_LEN + 1]; /* the user who signs in during the fan-out */
    char *probe_token;
    char product[TD_UUID_LEN + 1];
    sqlite3 *db; /* our own read connection to notifications.db */
    /* metric label strings */
    char lbl_login[64], lbl_update[64], lbl_welcome[64];
    char lbl_published[256], lbl_live[256], lbl_update_consumed[256];
} world_t;

static double metric(const char *name, const char *labels)
{
    return td_metric_value(name, labels);
}

static int64_t query_int(world_t *w, const char *sql)
{
    sqlite3_stmt *st = NULL;
    int64_t v = -1;
    if (sqlite3_prepare_v2(w->db, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, w->product, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    }
    td_db_done(st);
    return v;
}

/* Waits until metric name{labels} >= want (main thread, serving the
 * producer meanwhile). */
static bool wait_metric(world_t *w, const char *name, const char *labels, double want, int ms)
{
    int64_t deadline = td_mono_ms() + ms;
    while (metric(name, labels) < want) {
        if (td_mono_ms() > deadline) {
            fprintf(stderr, "fanout: %s{%s} is %.0f, not %.0f, after %d ms\n", name, labels,
                    metric(name, labels), want, ms);
            return false;
        }
        rd_kafka_poll(w->rk, 1);
    }
    return true;
}

static int world_start(world_t *w)
{
    char err[512] = "";
    w->dir = bench_tmpdir("fanout");
    if (!w->dir) return -1;
    bench_config(&w->bcfg, "broker", w->dir, NULL, 1);
    w->broker = bench_broker(&w->bcfg);
    if (!w->broker) return -1;
    bench_config(&w->cfg, "notifications", w->dir, td_broker_bootstraps(w->broker), 1);
    w->svc = notifications_service_start(&w->cfg, err, sizeof(err));
    if (!w->svc) {
        fprintf(stderr, "fanout: notifications: %s\n", err);
        return -1;
    }
    w->port = notifications_service_port(w->svc);
    snprintf(w->url, sizeof(w->url), "http://127.0.0.1:%d", w->port);
    w->rk = producer_new(&w->cfg);
    if (!w->rk) return -1;
    char *path = td_asprintf("%s/notifications.db", w->dir);
    int src = sqlite3_open_v2(path, &w->db, SQLITE_OPEN_READONLY, NULL);
    free(path);
    if (src != SQLITE_OK) {
        fprintf(stderr, "fanout: cannot open notifications.db: %s\n", sqlite3_errmsg(w->db));
        return -1;
    }
    sqlite3_busy_timeout(w->db, 10000);

    char *users = td_topic_name(&w->cfg, "users"), *products = td_topic_name(&w->cfg, "products"),
         *notifications = td_topic_name(&w->cfg, "notifications");
    td_metric_labels(w->lbl_login, sizeof(w->lbl_login), "type", "UserLoggedInEvent", NULL);
    td_metric_labels(w->lbl_update, sizeof(w->lbl_update), "type", "ProductUpdatedEvent", NULL);
    td_metric_labels(w->lbl_welcome, sizeof(w->lbl_welcome), "type", "UserRegisteredEvent", NULL);
    td_metric_labels(w->lbl_published, sizeof(w->lbl_published), "topic", notifications, "type",
                     "NotificationCreatedEvent", NULL);
    /* The live consumer passes over this instance's own records (their
     * frames went to the streams right after the commit). */
    td_metric_labels(w->lbl_live, sizeof(w->lbl_live), "topic", notifications, "type", "(own)",
                     "result", "skipped", NULL);
    td_metric_labels(w->lbl_update_consumed, sizeof(w->lbl_update_consumed), "topic", products,
                     "type", "ProductUpdatedEvent", "result", "handled", NULL);
    free(users);
    free(products);
    free(notifications);

    int64_t deadline = td_mono_ms() + 60000;
    while (!notifications_service_live(w->svc) && td_mono_ms() < deadline) td_sleep_ms(10);
    if (!notifications_service_live(w->svc)) {
        fprintf(stderr, "fanout: the live consumer got no partitions in 60 s\n");
        return -1;
    }
    return 0;
}

static void world_stop(world_t *w)
{
    if (w->db) sqlite3_close(w->db);
    if (w->rk) {
        rd_kafka_flush(w->rk, 5000);
        rd_kafka_destroy(w->rk);
    }
    notifications_service_stop(w->svc);
    td_broker_stop(w->broker);
    if (w->tokens)
        for (int i = 0; i < WATCHERS; i++) free(w->tokens[i]);
    free(w->tokens);
    free(w->users);
    free(w->probe_token);
    td_config_free(&w->cfg);
    td_config_free(&w->bcfg);
    if (w->dir) bench_rmtree(w->dir);
    free(w->dir);
}

/* ---- setup: users, product, watches ------------------------------------------ */

static int register_user(world_t *w, const char *user_id, int i)
{
    char now[TD_TIME_LEN + 1], email[64], name[32];
    td_time_format(td_now_ms(), now);
    snprintf(email, sizeof(email), "watcher%d@bench.example", i);
    snprintf(name, sizeof(name), "Watcher %d", i);
    return produce(w->rk, &w->cfg, "users", "UserRegisteredEvent", user_id,
                   json_pack("{s:s, s:s, s:s, s:s}", "userId", user_id, "email", email, "name",
                             name, "registeredAt", now));
}

typedef struct watcher_client {
    pthread_t thread;
    world_t *w;
    int from, to; /* users[from..to) */
    int failed;
} watcher_client_t;

static void *watch_main(void *arg)
{
    watcher_client_t *c = arg;
    bench_http_t h;
    bench_http_init(&h);
    char url[96], body[80];
    snprintf(url, sizeof(url), "%s/watches", c->w->url);
    snprintf(body, sizeof(body), "{\"productId\":\"%s\"}", c->w->product);
    for (int i = c->from; i < c->to && !c->failed; i++) {
        long status = bench_http_do(&h, "POST", url, c->w->tokens[i], body);
        if (status != 201) {
            fprintf(stderr, "fanout: POST /watches: %ld %s\n", status, h.body);
            c->failed = 1;
        }
    }
    bench_http_free(&h);
    return NULL;
}

/* Every watcher watches the product, CLIENTS clients at once. The first
 * watch waits until the product is known (its event consumed). */
static int make_watches(world_t *w, double *secs)
{
    bench_http_t h;
    bench_http_init(&h);
    char url[96], body[80];
    snprintf(url, sizeof(url), "%s/watches", w->url);
    snprintf(body, sizeof(body), "{\"productId\":\"%s\"}", w->product);
    long status = 0;
    int64_t deadline = td_mono_ms() + WAIT_MS;
    while (status != 201 && td_mono_ms() < deadline) {
        status = bench_http_do(&h, "POST", url, w->tokens[0], body);
        if (status != 201) td_sleep_ms(10);
    }
    bench_http_free(&h);
    if (status != 201) {
        fprintf(stderr, "fanout: the product never became watchable\n");
        return -1;
    }
    watcher_client_t cs[CLIENTS];
    memset(cs, 0, sizeof(cs));
    int per = (WATCHERS - 1) / CLIENTS;
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < CLIENTS; i++) {
        cs[i].w = w;
        cs[i].from = 1 + i * per;
        cs[i].to = i == CLIENTS - 1 ? WATCHERS : 1 + (i + 1) * per;
        if (pthread_create(&cs[i].thread, NULL, watch_main, &cs[i]) != 0) abort();
    }
    int failed = 0;
    for (int i = 0; i < CLIENTS; i++) {
        pthread_join(cs[i].thread, NULL);
        failed |= cs[i].failed;
    }
    *secs = bench_ms_since(t0) / 1000.0;
    return failed ? -1 : 0;
}

/* ---- the probe's stream ------------------------------------------------------ */

/* One SSE stream read without blocking: a byte-at-a-time parser of the
 * HTTP response (headers, chunked framing) that notes when each
 * "event: notification" line arrives. */
enum { S_HEADERS, S_SIZE, S_DATA, S_DATA_END, S_RAW, S_ENDED };

typedef struct stream {
    int fd;
    int state, status;
    bool chunked, in_ext;
    uint32_t chunk_left;
    size_t line_len;
    char line[40];
    size_t frames;
    int64_t at_ns[MAX_PROBES + 64]; /* arrival of each frame */
} stream_t;

static void stream_line(stream_t *s)
{
    size_t n = s->line_len < sizeof(s->line) ? s->line_len : sizeof(s->line) - 1;
    if (n > 0 && s->line[n - 1] == '\r') n--;
    s->line[n] = '\0';
    s->line_len = 0;
    if (s->state == S_HEADERS) {
        if (s->status == 0) {
            if (sscanf(s->line, "HTTP/1.%*d %d", &s->status) != 1) s->status = -1;
        } else if (n == 0) {
            s->state = s->status != 200 ? S_ENDED : s->chunked ? S_SIZE : S_RAW;
        } else if (!strncasecmp(s->line, "transfer-encoding:", 18) &&
                   strcasestr(s->line, "chunked")) {
            s->chunked = true;
        }
        return;
    }
    if (strcmp(s->line, "event: notification") == 0 && s->frames < TD_ARRAY_SIZE(s->at_ns))
        s->at_ns[s->frames++] = bench_now_ns();
}

static void stream_byte(stream_t *s, char b)
{
    if (b == '\n')
        stream_line(s);
    else if (s->line_len < sizeof(s->line) - 1)
        s->line[s->line_len++] = b;
}

static void stream_feed(stream_t *s, const char *p, size_t n)
{
    for (size_t i = 0; i < n && s->state != S_ENDED; i++) {
        char b = p[i];
        switch (s->state) {
        case S_HEADERS:
        case S_RAW:
            stream_byte(s, b);
            break;
        case S_SIZE:
            if (b == '\n') {
                s->state = s->chunk_left ? S_DATA : S_ENDED;
                s->in_ext = false;
            } else if (b == ';') {
                s->in_ext = true;
            } else if (!s->in_ext && b != '\r') {
                int v = b >= '0' && b <= '9'   ? b - '0'
                        : b >= 'a' && b <= 'f' ? b - 'a' + 10
                        : b >= 'A' && b <= 'F' ? b - 'A' + 10
                                               : 0;
                s->chunk_left = s->chunk_left * 16 + (uint32_t)v;
            }
            break;
        case S_DATA:
            stream_byte(s, b);
            if (--s->chunk_left == 0) s->state = S_DATA_END;
            break;
        case S_DATA_END:
            if (b == '\n') s->state = S_SIZE;
            break;
        default:
            break;
        }
    }
}

/* Reads what is there within ms. */
static void stream_pump(stream_t *s, int ms)
{
    struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
    while (s->state != S_ENDED && poll(&pfd, 1, ms) > 0) {
        char buf[8192];
        ssize_t n = recv(s->fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            s->state = S_ENDED;
            break;
        }
        if (n > 0) stream_feed(s, buf, (size_t)n);
        ms = 0;
    }
}

static stream_t *stream_open(world_t *w)
{
    stream_t *s = td_calloc(1, sizeof(*s));
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)w->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET /notifications/stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Accept: text/event-stream\r\nAuthorization: Bearer %s\r\n\r\n",
                     w->port, w->probe_token);
    if (s->fd < 0 || connect(s->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        send(s->fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        fprintf(stderr, "fanout: cannot open the stream: %s\n", strerror(errno));
        if (s->fd >= 0) close(s->fd);
        free(s);
        return NULL;
    }
    int64_t deadline = td_mono_ms() + WAIT_MS;
    while (s->state == S_HEADERS && td_mono_ms() < deadline) stream_pump(s, 50);
    if (s->status != 200 || s->state == S_ENDED) {
        fprintf(stderr, "fanout: the stream answered %d\n", s->status);
        close(s->fd);
        free(s);
        return NULL;
    }
    return s;
}

/* ---- probes ------------------------------------------------------------------ */

/* The probe user's sign-ins: when each was produced, when its
 * notification was counted, and (from the stream) when its frame came. */
typedef struct probes {
    size_t cnt, first;
    int64_t sent_ns[MAX_PROBES], created_ns[MAX_PROBES];
    double logins_base; /* the login counter before the first probe */
} probes_t;

static int probe_login(world_t *w)
{
    char now[TD_TIME_LEN + 1];
    td_time_format(td_now_ms(), now);
    return produce(w->rk, &w->cfg, "users", "UserLoggedInEvent", w->probe,
                   json_pack("{s:s, s:s, s:s}", "userId", w->probe, "email", "probe@bench.example",
                             "loggedInAt", now));
}

/* One probe: a sign-in, then waits until its notification exists, reading
 * the stream meanwhile. */
static int probe_once(world_t *w, probes_t *p, stream_t *s)
{
    if (p->cnt == MAX_PROBES) return 0;
    size_t k = p->cnt++;
    p->sent_ns[k] = bench_now_ns();
    if (probe_login(w) != 0) return -1;
    int64_t deadline = td_mono_ms() + WAIT_MS;
    while (metric(CREATED_METRIC, w->lbl_login) < p->logins_base + (double)(k + 1)) {
        if (td_mono_ms() > deadline) {
            fprintf(stderr, "fanout: a sign-in was not notified in %d ms\n", WAIT_MS);
            return -1;
        }
        stream_pump(s, 0);
        rd_kafka_poll(w->rk, 0);
        usleep(100);
    }
    p->created_ns[k] = bench_now_ns();
    return 0;
}

/* Waits until the stream has want frames (one per probe so far: the
 * probe user gets no other notification while the stream is open). */
static bool probe_frames(stream_t *s, size_t want)
{
    int64_t deadline = td_mono_ms() + WAIT_MS;
    while (s->frames < want && s->state != S_ENDED && td_mono_ms() < deadline) stream_pump(s, 20);
    if (s->frames < want) fprintf(stderr, "fanout: %zu of %zu frames came\n", s->frames, want);
    return s->frames >= want;
}

/* Latencies of probes [from, to): until created, and until on the stream
 * (frame k is probe k's, as the stream opened just before probe 0). */
static void probe_stats(const probes_t *p, const stream_t *s, size_t from, size_t to,
                        bench_stats_t *created, bench_stats_t *streamed)
{
    size_t n = to - from;
    double *c = td_malloc((n + 1) * sizeof(double)), *f = td_malloc((n + 1) * sizeof(double));
    for (size_t i = 0; i < n; i++) {
        c[i] = (double)(p->created_ns[from + i] - p->sent_ns[from + i]) / 1e6;
        f[i] = (double)(s->at_ns[from + i] - p->sent_ns[from + i]) / 1e6;
    }
    *created = bench_stats(c, n);
    *streamed = bench_stats(f, n);
    free(c);
    free(f);
}

/* ---- the inbox reader -------------------------------------------------------- */

typedef struct reader {
    pthread_t thread;
    world_t *w;
    atomic_bool stop;
    int64_t *start_ns;
    double *ms;
    size_t n, cap;
    int errors;
} reader_t;

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    bench_http_t h;
    bench_http_init(&h);
    char url[128];
    snprintf(url, sizeof(url), "%s/notifications?limit=" READER_PAGE, r->w->url);
    while (!atomic_load(&r->stop)) {
        int64_t t0 = bench_now_ns();
        long status = bench_http_do(&h, "GET", url, r->w->probe_token, NULL);
        double ms = bench_ms_since(t0);
        if (status != 200) {
            r->errors++;
            continue;
        }
        if (r->n == r->cap) {
            r->cap = r->cap ? 2 * r->cap : 1024;
            r->start_ns = td_realloc(r->start_ns, r->cap * sizeof(*r->start_ns));
            r->ms = td_realloc(r->ms, r->cap * sizeof(*r->ms));
        }
        r->start_ns[r->n] = t0;
        r->ms[r->n++] = ms;
    }
    bench_http_free(&h);
    return NULL;
}

static void reader_start(reader_t *r, world_t *w)
{
    memset(r, 0, sizeof(*r));
    r->w = w;
    atomic_init(&r->stop, false);
    if (pthread_create(&r->thread, NULL, reader_main, r) != 0) abort();
}

static void reader_stop(reader_t *r)
{
    atomic_store(&r->stop, true);
    pthread_join(r->thread, NULL);
}

/* Requests started in [from, to). */
static bench_stats_t reader_stats(const reader_t *r, int64_t from, int64_t to)
{
    double *v = td_malloc((r->n + 1) * sizeof(double));
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->start_ns[i] >= from && r->start_ns[i] < to) v[n++] = r->ms[i];
    bench_stats_t s = bench_stats(v, n);
    free(v);
    return s;
}

static void reader_free(reader_t *r)
{
    free(r->start_ns);
    free(r->ms);
}

/* ---- the fan-out's clock ----------------------------------------------------- */

/* Polls the counters every millisecond from the price drop on and notes
 * when each milestone was passed. The targets of the published and live
 * milestones include the probes' notifications, known once probing ends. */
typedef struct clock_watch {
    pthread_t thread;
    world_t *w;
    int64_t t0;
    double created_base, published_base, live_base;
    atomic_bool probing_done;
    atomic_int probes;
    atomic_bool all_created;
    int64_t queued_ns, first_ns, all_ns, published_ns, live_ns;
} clock_watch_t;

static void *clock_main(void *arg)
{
    clock_watch_t *c = arg;
    world_t *w = c->w;
    int64_t deadline = td_mono_ms() + WAIT_MS;
    while (td_mono_ms() < deadline) {
        int64_t now = bench_now_ns();
        if (!c->queued_ns && metric("tidings_events_consumed_total", w->lbl_update_consumed) >= 1)
            c->queued_ns = now;
        double made = metric(CREATED_METRIC, w->lbl_update) - c->created_base;
        if (!c->first_ns && made >= 1) c->first_ns = now;
        if (!c->all_ns && made >= WATCHERS) {
            c->all_ns = now;
            atomic_store(&c->all_created, true);
        }
        if (c->all_ns && atomic_load(&c->probing_done)) {
            double want = WATCHERS + atomic_load(&c->probes);
            if (!c->published_ns &&
                metric("tidings_events_produced_total", w->lbl_published) - c->published_base >=
                    want)
                c->published_ns = now;
            if (!c->live_ns &&
                metric("tidings_events_consumed_total", w->lbl_live) - c->live_base >= want)
                c->live_ns = now;
            if (c->published_ns && c->live_ns) break;
        }
        td_sleep_ms(1);
    }
    return NULL;
}

static double since_ms(int64_t t0, int64_t t)
{
    return t ? (double)(t - t0) / 1e6 : -1;
}

/* ---- main -------------------------------------------------------------------- */

typedef struct result {
    double welcome_s, watches_s;
    bench_stats_t base_created, base_streamed, base_read;
    bench_stats_t fan_created, fan_streamed, fan_read;
    double queued_ms, first_ms, all_ms, published_ms, live_ms;
    int64_t in_db, distinct_in_db;
} result_t;

static json_t *result_json(const result_t *r)
{
    double rate = r->all_ms > 0 ? WATCHERS / (r->all_ms / 1000.0) : 0;
    double worker_rate =
        r->all_ms > r->first_ms ? WATCHERS / ((r->all_ms - r->first_ms) / 1000.0) : 0;
    json_t *j = json_pack("{s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "watchers",
                          WATCHERS, "welcome_s", bench_round3(r->welcome_s), "watches_s",
                          bench_round3(r->watches_s), "queued_ms", bench_round3(r->queued_ms),
                          "first_ms", bench_round3(r->first_ms), "all_created_ms",
                          bench_round3(r->all_ms), "published_ms", bench_round3(r->published_ms),
                          "live_consumed_ms", bench_round3(r->live_ms), "notifications_per_s",
                          round(rate), "worker_notifications_per_s", round(worker_rate));
    json_object_set_new(j, "before",
                        json_pack("{s:o, s:o, s:o}", "signin_created_ms",
                                  bench_stats_json(&r->base_created), "signin_streamed_ms",
                                  bench_stats_json(&r->base_streamed), "get_notifications_ms",
                                  bench_stats_json(&r->base_read)));
    json_object_set_new(j, "during",
                        json_pack("{s:o, s:o, s:o}", "signin_created_ms",
                                  bench_stats_json(&r->fan_created), "signin_streamed_ms",
                                  bench_stats_json(&r->fan_streamed), "get_notifications_ms",
                                  bench_stats_json(&r->fan_read)));
    return j;
}

int main(void)
{
    int rc = 1;
    world_t w;
    memset(&w, 0, sizeof(w));
    result_t r;
    memset(&r, 0, sizeof(r));
    probes_t *p = td_calloc(1, sizeof(*p));
    stream_t *s = NULL;
    clock_watch_t cw;
    memset(&cw, 0, sizeof(cw));
    reader_t rd;
    memset(&rd, 0, sizeof(rd));
    bool reader_running = false;
    curl_global_init(CURL_GLOBAL_ALL);
    bench_begin();

    if (world_start(&w) != 0) goto out;
    w.users = td_calloc(WATCHERS, sizeof(*w.users));
    w.tokens = td_calloc(WATCHERS, sizeof(*w.tokens));
    for (int i = 0; i < WATCHERS; i++) w.tokens[i] = bench_token(&w.cfg, "customer", w.users[i]);
    w.probe_token = bench_token(&w.cfg, "customer", w.probe);
    td_uuid_new(w.product);
    printf("fanout: notifications service in-process, embedded broker (3), %d watchers of one "
           "product; load average at start %.2f\n",
           WATCHERS, bench_load_start);

    /* The users: each welcome notification is the rule consumer's
     * one-recipient path, timed as a side figure. */
    int64_t t0 = bench_now_ns();
    for (int i = 0; i < WATCHERS; i++)
        if (register_user(&w, w.users[i], i) != 0) goto out;
    if (register_user(&w, w.probe, WATCHERS) != 0) goto out;
    if (!wait_metric(&w, CREATED_METRIC, w.lbl_welcome, WATCHERS + 1, WAIT_MS)) goto out;
    r.welcome_s = bench_ms_since(t0) / 1000.0;

    if (produce(w.rk, &w.cfg, "products", "ProductCreatedEvent", w.product,
                json_pack("{s:s, s:s, s:o, s:i}", "productId", w.product, "title", PRODUCT_TITLE,
                          "price", td_json_money(PRICE_BEFORE), "quantity", 20)) != 0)
        goto out;
    if (make_watches(&w, &r.watches_s) != 0) goto out;
    if (query_int(&w, "SELECT COUNT(*) FROM watches WHERE product_id = ?") != WATCHERS) {
        fprintf(stderr, "fanout: not every watch is in the database\n");
        goto out;
    }
    /* The welcome notifications' events published and read back by the
     * live consumer, so the baseline is quiet. */
    if (!wait_metric(&w, "tidings_events_produced_total", w.lbl_published, WATCHERS + 1, WAIT_MS) ||
        !wait_metric(&w, "tidings_events_consumed_total", w.lbl_live, WATCHERS + 1, WAIT_MS))
        goto out;

    /* The probe's stream, proven live by a first sign-in. */
    s = stream_open(&w);
    if (!s) goto out;
    p->logins_base = metric(CREATED_METRIC, w.lbl_login);
    if (probe_once(&w, p, s) != 0 || !probe_frames(s, 1)) goto out;

    /* Before: BASE_PROBES sign-ins while the reader reads. */
    reader_start(&rd, &w);
    reader_running = true;
    td_sleep_ms(100);
    int64_t base_from = bench_now_ns();
    size_t base_first = p->cnt;
    for (int i = 0; i < BASE_PROBES; i++) {
        if (probe_once(&w, p, s) != 0) goto out;
        stream_pump(s, PROBE_GAP_MS);
    }
    int64_t base_to = bench_now_ns();
    if (!probe_frames(s, p->cnt)) goto out;
    probe_stats(p, s, base_first, p->cnt, &r.base_created, &r.base_streamed);
    r.base_read = reader_stats(&rd, base_from, base_to);

    /* The price drop, with the probes and the reader going on until all
     * its notifications exist. */
    cw.w = &w;
    cw.created_base = metric(CREATED_METRIC, w.lbl_update);
    cw.published_base = metric("tidings_events_produced_total", w.lbl_published);
    cw.live_base = metric("tidings_events_consumed_total", w.lbl_live);
    atomic_init(&cw.probing_done, false);
    atomic_init(&cw.probes, 0);
    atomic_init(&cw.all_created, false);
    cw.t0 = bench_now_ns();
    if (pthread_create(&cw.thread, NULL, clock_main, &cw) != 0) abort();
    int prc =
        produce(w.rk, &w.cfg, "products", "ProductUpdatedEvent", w.product,
                json_pack("{s:s, s:s, s:o, s:i, s:o, s:i}", "productId", w.product, "title",
                          PRODUCT_TITLE, "price", td_json_money(PRICE_AFTER), "quantity", 20,
                          "previousPrice", td_json_money(PRICE_BEFORE), "previousQuantity", 20));
    size_t fan_first = p->cnt;
    int64_t deadline = td_mono_ms() + WAIT_MS;
    while (prc == 0 && !atomic_load(&cw.all_created) && td_mono_ms() < deadline) {
        if ((prc = probe_once(&w, p, s)) != 0) break;
        atomic_fetch_add(&cw.probes, 1);
        stream_pump(s, PROBE_GAP_MS);
    }
    int64_t fan_to = bench_now_ns();
    atomic_store(&cw.probing_done, true);
    reader_stop(&rd);
    reader_running = false;
    pthread_join(cw.thread, NULL);
    if (prc != 0 || !cw.all_ns) {
        fprintf(stderr, "fanout: the fan-out did not finish in %d ms\n", WAIT_MS);
        goto out;
    }
    if (!probe_frames(s, p->cnt)) goto out;
    probe_stats(p, s, fan_first, p->cnt, &r.fan_created, &r.fan_streamed);
    r.fan_read = reader_stats(&rd, cw.t0, fan_to);
    r.queued_ms = since_ms(cw.t0, cw.queued_ns);
    r.first_ms = since_ms(cw.t0, cw.first_ns);
    r.all_ms = since_ms(cw.t0, cw.all_ns);
    r.published_ms = since_ms(cw.t0, cw.published_ns);
    r.live_ms = since_ms(cw.t0, cw.live_ns);

    /* Exactly one each, in the database. */
    const char *sql_cnt = "SELECT COUNT(*) FROM notifications WHERE type = 'ProductUpdatedEvent'"
                          " AND json_extract(data, '$.productId') = ?";
    const char *sql_distinct = "SELECT COUNT(DISTINCT user_id) FROM notifications"
                               " WHERE type = 'ProductUpdatedEvent'"
                               " AND json_extract(data, '$.productId') = ?";
    deadline = td_mono_ms() + WAIT_MS;
    while ((r.in_db = query_int(&w, sql_cnt)) < WATCHERS && td_mono_ms() < deadline)
        td_sleep_ms(10);
    r.distinct_in_db = query_int(&w, sql_distinct);
    if (r.in_db != WATCHERS || r.distinct_in_db != WATCHERS || atomic_load(&dr_failures) != 0) {
        fprintf(stderr, "fanout: %lld notifications for %lld users in the database, want %d\n",
                (long long)r.in_db, (long long)r.distinct_in_db, WATCHERS);
        goto out;
    }

    printf("  setup: %d UserRegisteredEvents -> welcome notifications in %.2f s (%.0f/s); "
           "%d POST /watches from %d clients in %.2f s (%.0f/s)\n",
           WATCHERS + 1, r.welcome_s, (WATCHERS + 1) / r.welcome_s, WATCHERS - 1, CLIENTS,
           r.watches_s, (WATCHERS - 1) / r.watches_s);
    printf("  price drop: ProductUpdatedEvent produced at 0 ms; consumed, %d recipients queued "
           "%.1f ms; first notification %.1f ms; all %d %.1f ms (%.0f notifications/s, %.0f/s "
           "from the first)\n",
           WATCHERS, r.queued_ms, r.first_ms, WATCHERS, r.all_ms, WATCHERS / (r.all_ms / 1000.0),
           r.all_ms > r.first_ms ? WATCHERS / ((r.all_ms - r.first_ms) / 1000.0) : 0);
    printf("  their NotificationCreatedEvents all published %.1f ms, all read by the live "
           "consumer %.1f ms; in the database: %lld for %lld users\n",
           r.published_ms, r.live_ms, (long long)r.in_db, (long long)r.distinct_in_db);
    bench_stats_header("ms");
    bench_stats_row("before: sign-in -> notification", &r.base_created);
    bench_stats_row("before: sign-in -> on its stream", &r.base_streamed);
    bench_stats_row("before: GET /notifications", &r.base_read);
    bench_stats_row("during: sign-in -> notification", &r.fan_created);
    bench_stats_row("during: sign-in -> on its stream", &r.fan_streamed);
    bench_stats_row("during: GET /notifications", &r.fan_read);

    json_t *res = bench_result_new("fanout");
    json_t *figures = result_json(&r);
    json_object_update(res, figures);
    json_decref(figures);
    bench_result_print(res);
    rc = 0;

out:
    if (reader_running) reader_stop(&rd);
    reader_free(&rd);
    if (s) {
        close(s->fd);
        free(s);
    }
    free(p);
    world_stop(&w);
    curl_global_cleanup();
    return rc;
}
