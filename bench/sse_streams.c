/* What thousands of idle live notification streams cost, and how fast one
 * notification reaches all of them: the notifications service in-process
 * on an embedded broker, and N streams (GET /notifications/stream with a
 * customer token signed with the shared secret) held by this program on
 * raw non-blocking sockets, all read by one epoll loop in the main thread,
 * so the client adds no threads of its own. Each stream is suspended by
 * the HTTP layer while it has nothing to send (tidings/sse.h), so the
 * process's thread count must not move with N; its RSS does, and the
 * delta over N is the memory one idle stream costs (server side, plus the
 * client's few bytes of parser state, which are allocated beforehand).
 *
 * Phases: 1 stream (also the warm-up: the live path is proven first), then
 * N = 1,000 and 5,000 streams, each spread over USERS users and then all
 * of ONE user. Per phase: the time to open them all (connect, request, the
 * 200 with its headers), threads and RSS before and after, and the latency
 * of UserLoggedInEvents produced onto the users topic (as the users
 * service's relay would) until every targeted stream has parsed its
 * "event: notification" frame: one event for one user, one event per user
 * at once, or one event for the user holding all N. That path is two hops
 * of the bus: the rule consumer creates the notification and its
 * NotificationCreatedEvent in one transaction, the relay publishes it, and
 * the live consumer publishes the frame to the user's streams.
 *
 * Two sockets per stream live in this process (client and server), so N
 * is bounded by the open-file limit, raised to the hard limit first. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "bench.h"
#include "notifications/notifications_service.h"
#include "tidings/bus.h"
#include "tidings/metrics.h"

#define ROUNDS         7
#define USERS          100
#define IN_FLIGHT      256 /* streams asked for but not yet answered */
#define RESERVE_FDS    512 /* descriptors for everything but the streams */
#define WAIT_MS        20000
#define SETTLE_MS      300
#define MIN_PER_STREAM 100 /* streams needed for a per-stream memory figure */

static const size_t SIZES[] = {1000, 5000};

enum cstate { C_CONNECTING, C_HEADERS, C_SIZE, C_DATA, C_DATA_END, C_RAW, C_ENDED };

/* One stream as the client sees it: a byte-at-a-time parser of the HTTP
 * response (status line, headers, chunked framing) and of the event stream
 * inside, which only counts "event: notification" lines. */
typedef struct client {
    int fd;
    int user;
    uint8_t state;
    bool chunked, in_ext;
    int status;
    uint32_t chunk_left;
    uint16_t line_len;
    char line[40]; /* the current line, truncated: enough to recognise ours */
    int frames;    /* notification frames received */
    int expect;    /* frames it should have received */
    int want;      /* this round waits until frames == want (0: not targeted) */
    int64_t got_ns;
} client_t;

typedef struct world {
    char *dir;
    td_config_t bcfg, cfg;
    td_broker_t *broker;
    notifications_service_t *svc;
    rd_kafka_t *rk;
    int port;
    int ep;
    client_t *cl;
    size_t cap;       /* clients allocated */
    size_t cnt;       /* clients of this phase */
    size_t answered;  /* of them, with a 200 and its headers */
    size_t remaining; /* targeted clients still waiting this round */
    size_t failed;    /* ended, refused or not 200 */
    int64_t first_ns; /* first frame of the round */
    int users;
    char user_ids[USERS][TD_UUID_LEN + 1];
    char *tokens[USERS];
} world_t;

static int dr_failures; /* delivery reports with an error (main thread) */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
    (void)rk;
    (void)opaque;
    if (msg->err) {
        fprintf(stderr, "sse_streams: produce: %s\n", rd_kafka_err2str(msg->err));
        dr_failures++;
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
        fprintf(stderr, "sse_streams: producer: %s\n", err);
        if (conf) rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        fprintf(stderr, "sse_streams: producer: %s\n", err);
        rd_kafka_conf_destroy(conf);
    }
    return rk;
}

/* Produces a UserLoggedInEvent for user_id onto the users topic; its
 * delivery report is served by a later rd_kafka_poll. */
static int produce_login(world_t *w, const char *user_id)
{
    char now[TD_TIME_LEN + 1];
    td_time_format(td_now_ms(), now);
    json_t *data = json_pack("{s:s, s:s, s:s}", "userId", user_id, "email", "bench@example.com",
                             "loggedInAt", now);
    td_event_t *ev = td_event_new("users", "UserLoggedInEvent", user_id, data);
    char *topic = td_topic_name(&w->cfg, "users");
    td_record_t *rec = td_event_to_record(ev, topic);
    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(rec->header_cnt);
    for (size_t i = 0; i < rec->header_cnt; i++)
        rd_kafka_header_add(hdrs, rec->headers[i].name, -1, rec->headers[i].value,
                            rec->headers[i].value ? (ssize_t)rec->headers[i].len : 0);
    rd_kafka_resp_err_t e = rd_kafka_producev(
        w->rk, RD_KAFKA_V_TOPIC(rec->topic), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
        RD_KAFKA_V_KEY(rec->key, rec->key_len), RD_KAFKA_V_VALUE(rec->value, rec->value_len),
        RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
    if (e) {
        rd_kafka_headers_destroy(hdrs);
        fprintf(stderr, "sse_streams: produce: %s\n", rd_kafka_err2str(e));
    }
    td_record_free(rec);
    free(topic);
    td_event_free(ev);
    rd_kafka_poll(w->rk, 0);
    return e ? -1 : 0;
}

/* ---- the process ---------------------------------------------------------- */

static long nofile_raise(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 1024;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur == RLIM_INFINITY ? 1L << 20 : (long)rl.rlim_cur;
}

static int thread_count(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static double rss_mib(void)
{
    long pages = 0, resident = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = -1;
    fclose(f);
    return resident < 0 ? -1 : (double)resident * (double)sysconf(_SC_PAGESIZE) / 1048576.0;
}

static double streams_open(void)
{
    return td_metric_value("tidings_notifications_streams_open", NULL);
}

/* ---- the client ----------------------------------------------------------- */

static void on_line(world_t *w, client_t *c)
{
    size_t n = c->line_len < sizeof(c->line) ? c->line_len : sizeof(c->line) - 1;
    if (n > 0 && c->line[n - 1] == '\r') n--;
    c->line[n] = '\0';
    c->line_len = 0;
    if (c->state == C_HEADERS) {
        if (c->status == 0) {
            if (sscanf(c->line, "HTTP/1.%*d %d", &c->status) != 1) c->status = -1;
        } else if (n == 0) {
            if (c->status != 200) {
                fprintf(stderr, "sse_streams: stream answered %d\n", c->status);
                c->state = C_ENDED;
                w->failed++;
                return;
            }
            c->state = c->chunked ? C_SIZE : C_RAW;
            w->answered++;
        } else if (!strncasecmp(c->line, "transfer-encoding:", 18) &&
                   strcasestr(c->line, "chunked")) {
            c->chunked = true;
        }
        return;
    }
    if (strcmp(c->line, "event: notification") != 0) return;
    c->frames++;
    if (c->want && c->frames == c->want) {
        c->got_ns = bench_now_ns();
        if (!w->first_ns) w->first_ns = c->got_ns;
        w->remaining--;
    }
}

static void line_byte(world_t *w, client_t *c, char b)
{
    if (b == '\n')
        on_line(w, c);
    else if (c->line_len < sizeof(c->line) - 1)
        c->line[c->line_len++] = b;
    else
        c->line_len = sizeof(c->line) - 1; /* truncated: never one of ours */
}

static void feed(world_t *w, client_t *c, const char *p, size_t n)
{
    for (size_t i = 0; i < n && c->state != C_ENDED; i++) {
        char b = p[i];
        switch (c->state) {
        case C_HEADERS:
        case C_RAW:
            line_byte(w, c, b);
            break;
        case C_SIZE:
            if (b == '\n') {
                if (c->chunk_left == 0) { /* the last chunk: the server ended it */
                    c->state = C_ENDED;
                    w->failed++;
                } else {
                    c->state = C_DATA;
                }
                c->in_ext = false;
            } else if (b == ';') {
                c->in_ext = true;
            } else if (!c->in_ext && b != '\r') {
                int v = b >= '0' && b <= '9'   ? b - '0'
                        : b >= 'a' && b <= 'f' ? b - 'a' + 10
                        : b >= 'A' && b <= 'F' ? b - 'A' + 10
                                               : 0;
                c->chunk_left = c->chunk_left * 16 + (uint32_t)v;
            }
            break;
        case C_DATA:
            line_byte(w, c, b);
            if (--c->chunk_left == 0) c->state = C_DATA_END;
            break;
        case C_DATA_END:
            if (b == '\n') c->state = C_SIZE;
            break;
        default:
            break;
        }
    }
}

static void client_fail(world_t *w, client_t *c, const char *why)
{
    if (c->state == C_ENDED) return;
    fprintf(stderr, "sse_streams: stream %zu: %s\n", (size_t)(c - w->cl), why);
    c->state = C_ENDED;
    w->failed++;
    epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
}

static int client_start(world_t *w, size_t i, int user)
{
    client_t *c = &w->cl[i];
    memset(c, 0, sizeof(*c));
    c->user = user;
    c->state = C_CONNECTING;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        fprintf(stderr, "sse_streams: socket: %s\n", strerror(errno));
        return -1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)w->port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 && errno != EINPROGRESS) {
        fprintf(stderr, "sse_streams: connect: %s\n", strerror(errno));
        close(c->fd);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.u64 = i};
    epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
}

static void on_writable(world_t *w, client_t *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err) {
        client_fail(w, c, strerror(err ? err : errno));
        return;
    }
    char req[1024];
    int n = snprintf(req, sizeof(req),
                     "GET /notifications/stream HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                     "Accept: text/event-stream\r\nAuthorization: Bearer %s\r\n\r\n",
                     w->port, w->tokens[c->user]);
    /* A fresh socket's send buffer takes a request this small whole. */
    if (send(c->fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        client_fail(w, c, "could not send the request");
        return;
    }
    c->state = C_HEADERS;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(c - w->cl)};
    epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

static void on_readable(world_t *w, client_t *c)
{
    char buf[16384];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof(buf), 0);
        if (n > 0) {
            feed(w, c, buf, (size_t)n);
            if (c->state == C_ENDED) {
                epoll_ctl(w->ep, EPOLL_CTL_DEL, c->fd, NULL);
                return;
            }
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        client_fail(w, c, n == 0 ? "the server closed the stream" : strerror(errno));
        return;
    }
}

/* Handles what is ready within ms (one epoll_wait), and serves the
 * producer's delivery reports. */
static void pump(world_t *w, int ms)
{
    struct epoll_event evs[256];
    int n = epoll_wait(w->ep, evs, 256, ms);
    for (int i = 0; i < n; i++) {
        client_t *c = &w->cl[evs[i].data.u64];
        if (c->state == C_ENDED) continue;
        if (c->state == C_CONNECTING) {
            if (evs[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) on_writable(w, c);
            continue;
        }
        if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(w, c);
    }
    rd_kafka_poll(w->rk, 0);
}

static void pump_for(world_t *w, int ms)
{
    int64_t until = td_mono_ms() + ms;
    for (int64_t now = td_mono_ms(); now < until; now = td_mono_ms()) pump(w, (int)(until - now));
}

/* ---- phases --------------------------------------------------------------- */

typedef struct phase {
    size_t streams;
    int users;
    double open_s;
    int threads_before, threads_after, threads_rounds;
    double rss_before, rss_after; /* MiB */
    bench_stats_t one, all;       /* ms until every targeted stream had it */
    bench_stats_t one_first, all_first;
    int one_targets; /* streams one event of one user reaches */
} phase_t;

static void new_users(world_t *w, int users)
{
    for (int u = 0; u < w->users; u++) free(w->tokens[u]);
    w->users = users;
    for (int u = 0; u < users; u++) w->tokens[u] = bench_token(&w->cfg, "customer", w->user_ids[u]);
}

/* Opens n streams over the current users, round-robin, IN_FLIGHT at a
 * time, until each has its 200 and headers. */
static int open_streams(world_t *w, size_t n, double *secs)
{
    w->cnt = 0;
    w->answered = w->failed = 0;
    size_t started = 0;
    int64_t t0 = bench_now_ns(), deadline = td_mono_ms() + 60000;
    while (w->answered + w->failed < n) {
        while (started < n && started - (w->answered + w->failed) < IN_FLIGHT) {
            if (client_start(w, started, (int)(started % (size_t)w->users)) != 0) return -1;
            w->cnt = ++started;
        }
        pump(w, 10);
        if (td_mono_ms() > deadline) {
            fprintf(stderr, "sse_streams: only %zu of %zu streams open after 60 s\n", w->answered,
                    n);
            return -1;
        }
    }
    *secs = bench_ms_since(t0) / 1000.0;
    return w->failed ? -1 : 0;
}

/* One round: a login for user `only` (or for every user when -1), then
 * waits until every stream of those users has one more frame. */
static int round_run(world_t *w, int only, double *all_ms, double *first_ms)
{
    w->remaining = 0;
    w->first_ns = 0;
    for (size_t i = 0; i < w->cnt; i++) {
        client_t *c = &w->cl[i];
        c->want = 0;
        if (only < 0 || c->user == only) {
            c->expect++;
            c->want = c->expect;
            w->remaining++;
        }
    }
    int64_t t0 = bench_now_ns();
    for (int u = 0; u < w->users; u++)
        if ((only < 0 || u == only) && produce_login(w, w->user_ids[u]) != 0) return -1;
    int64_t deadline = td_mono_ms() + WAIT_MS;
    while (w->remaining > 0 && !w->failed && td_mono_ms() < deadline) pump(w, 5);
    if (w->remaining > 0 || w->failed) {
        fprintf(stderr, "sse_streams: %zu streams still without their frame (%zu failed)\n",
                w->remaining, w->failed);
        return -1;
    }
    int64_t last = 0;
    for (size_t i = 0; i < w->cnt; i++)
        if (w->cl[i].want && w->cl[i].got_ns > last) last = w->cl[i].got_ns;
    *all_ms = (double)(last - t0) / 1e6;
    *first_ms = (double)(w->first_ns - t0) / 1e6;
    pump_for(w, 50);
    return 0;
}

/* ROUNDS rounds of `only` (user r % users each round when only == -2). */
static int rounds(world_t *w, int only, bench_stats_t *all, bench_stats_t *first)
{
    double a[ROUNDS], f[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        int who = only == -2 ? r % w->users : only;
        if (round_run(w, who, &a[r], &f[r]) != 0) return -1;
    }
    *all = bench_stats(a, ROUNDS);
    *first = bench_stats(f, ROUNDS);
    return 0;
}

/* Every stream got exactly what it was sent, nothing twice. */
static int check_counts(world_t *w)
{
    pump_for(w, SETTLE_MS);
    size_t bad = 0;
    for (size_t i = 0; i < w->cnt; i++)
        if (w->cl[i].frames != w->cl[i].expect) bad++;
    if (bad) fprintf(stderr, "sse_streams: %zu streams got a wrong number of frames\n", bad);
    return bad ? -1 : 0;
}

/* Closes the client ends; one more login per user makes the server look
 * at each stream and drop it (a suspended socket is not watched), so the
 * next phase starts with none open. */
static void close_streams(world_t *w)
{
    for (size_t i = 0; i < w->cnt; i++) close(w->cl[i].fd);
    w->cnt = 0;
    for (int u = 0; u < w->users; u++) produce_login(w, w->user_ids[u]);
    int64_t deadline = td_mono_ms() + WAIT_MS;
    while (streams_open() > 0 && td_mono_ms() < deadline) pump(w, 10);
    if (streams_open() > 0)
        fprintf(stderr, "sse_streams: %.0f streams still open on the server\n", streams_open());
}

/* Proves the live path (rule consumer joined, relay up, live consumer
 * assigned) on one open stream: logs its user in until a frame comes. */
static int warm_up(world_t *w)
{
    int64_t deadline = td_mono_ms() + 60000;
    client_t *c = &w->cl[0];
    while (c->frames == 0 && td_mono_ms() < deadline) {
        if (produce_login(w, w->user_ids[0]) != 0) return -1;
        pump_for(w, 500);
    }
    if (c->frames == 0) {
        fprintf(stderr, "sse_streams: no notification reached the stream in 60 s\n");
        return -1;
    }
    /* Logins of the first tries that are still on their way. */
    int seen;
    do {
        seen = c->frames;
        pump_for(w, SETTLE_MS);
    } while (c->frames != seen);
    c->expect = c->frames;
    return 0;
}

static int run_phase(world_t *w, size_t n, int users, bool first, phase_t *ph)
{
    memset(ph, 0, sizeof(*ph));
    ph->streams = n;
    ph->users = users;
    new_users(w, users);
    /* The heap pages the phase before freed go back to the system first,
     * so these streams do not simply reuse them and hide their cost. */
    malloc_trim(0);
    ph->threads_before = thread_count();
    ph->rss_before = rss_mib();
    if (open_streams(w, n, &ph->open_s) != 0) return -1;
    pump_for(w, SETTLE_MS); /* each stream's first read: retry:, then suspended */
    ph->threads_after = thread_count();
    ph->rss_after = rss_mib();
    if (streams_open() < (double)n) {
        fprintf(stderr, "sse_streams: the server counts %.0f streams, not %zu\n", streams_open(),
                n);
        return -1;
    }
    if (first && warm_up(w) != 0) return -1;
    ph->one_targets = (int)((n + (size_t)users - 1) / (size_t)users);
    if (rounds(w, -2, &ph->one, &ph->one_first) != 0) return -1;
    if (users > 1 && rounds(w, -1, &ph->all, &ph->all_first) != 0) return -1;
    if (check_counts(w) != 0) return -1;
    ph->threads_rounds = thread_count();
    close_streams(w);
    return 0;
}

static json_t *phase_json(const phase_t *ph)
{
    json_t *j =
        json_pack("{s:I, s:i, s:f, s:f, s:i, s:i, s:i, s:f, s:f}", "streams",
                  (json_int_t)ph->streams, "users", ph->users, "open_s", bench_round3(ph->open_s),
                  "streams_per_s", round((double)ph->streams / ph->open_s), "threads_before",
                  ph->threads_before, "threads_after", ph->threads_after, "threads_after_rounds",
                  ph->threads_rounds, "rss_before_mib", bench_round3(ph->rss_before),
                  "rss_after_mib", bench_round3(ph->rss_after));
    /* RSS moves by a page or a malloc arena on its own: a delta over a
     * handful of streams says nothing. */
    if (ph->streams >= MIN_PER_STREAM)
        json_object_set_new(j, "kib_per_stream",
                            json_real(bench_round3((ph->rss_after - ph->rss_before) * 1024.0 /
                                                   (double)ph->streams)));
    json_object_set_new(j, "one_user_streams", json_integer(ph->one_targets));
    json_object_set_new(j, "one_user_event_ms", bench_stats_json(&ph->one));
    json_object_set_new(j, "one_user_event_first_ms", bench_stats_json(&ph->one_first));
    if (ph->users > 1) {
        json_object_set_new(j, "every_user_event_ms", bench_stats_json(&ph->all));
        json_object_set_new(j, "every_user_event_first_ms", bench_stats_json(&ph->all_first));
    }
    return j;
}

static bool live_cond(world_t *w)
{
    return notifications_service_live(w->svc);
}

static int world_start(world_t *w, size_t cap)
{
    char err[512] = "";
    w->dir = bench_tmpdir("sse-streams");
    if (!w->dir) return -1;
    bench_config(&w->bcfg, "broker", w->dir, NULL, 1);
    w->broker = bench_broker(&w->bcfg);
    if (!w->broker) return -1;
    bench_config(&w->cfg, "notifications", w->dir, td_broker_bootstraps(w->broker), 1);
    w->cfg.max_streams_per_user = (int)cap; /* phases hold all streams for one user */
    w->svc = notifications_service_start(&w->cfg, err, sizeof(err));
    if (!w->svc) {
        fprintf(stderr, "sse_streams: notifications: %s\n", err);
        return -1;
    }
    w->port = notifications_service_port(w->svc);
    w->rk = producer_new(&w->cfg);
    if (!w->rk) return -1;
    w->ep = epoll_create1(EPOLL_CLOEXEC);
    if (w->ep < 0) return -1;
    /* All client state up front and touched, so RSS deltas are the
     * server's. */
    w->cap = cap;
    w->cl = td_calloc(cap, sizeof(*w->cl));
    memset(w->cl, 0, cap * sizeof(*w->cl));
    int64_t deadline = td_mono_ms() + 60000;
    while (!live_cond(w) && td_mono_ms() < deadline) td_sleep_ms(10);
    if (!live_cond(w)) {
        fprintf(stderr, "sse_streams: the live consumer got no partitions in 60 s\n");
        return -1;
    }
    return 0;
}

static void world_stop(world_t *w)
{
    for (size_t i = 0; i < w->cnt; i++) close(w->cl[i].fd);
    if (w->rk) {
        rd_kafka_flush(w->rk, 5000);
        rd_kafka_destroy(w->rk);
    }
    notifications_service_stop(w->svc);
    td_broker_stop(w->broker);
    if (w->ep >= 0) close(w->ep);
    for (int u = 0; u < w->users; u++) free(w->tokens[u]);
    free(w->cl);
    td_config_free(&w->cfg);
    td_config_free(&w->bcfg);
    if (w->dir) bench_rmtree(w->dir);
    free(w->dir);
}

static void print_phase(const phase_t *ph)
{
    char per[24] = "-";
    if (ph->streams >= MIN_PER_STREAM)
        snprintf(per, sizeof(per), "%.1f",
                 (ph->rss_after - ph->rss_before) * 1024.0 / (double)ph->streams);
    printf("  %7zu %5d %8.2f %9.0f %8d %6d %7d %10.1f %8.1f %10s\n", ph->streams, ph->users,
           ph->open_s, (double)ph->streams / ph->open_s, ph->threads_before, ph->threads_after,
           ph->threads_rounds, ph->rss_before, ph->rss_after, per);
}

int main(void)
{
    int rc = 1;
    world_t w;
    memset(&w, 0, sizeof(w));
    w.ep = -1;
    bench_begin();
    long nofile = nofile_raise();
    size_t max_streams = nofile > 2 * RESERVE_FDS ? (size_t)(nofile - RESERVE_FDS) / 2 : 0;
    size_t sizes[TD_ARRAY_SIZE(SIZES)];
    for (size_t i = 0; i < TD_ARRAY_SIZE(SIZES); i++) {
        sizes[i] = SIZES[i] < max_streams ? SIZES[i] : max_streams;
        if (sizes[i] < SIZES[i])
            printf("sse_streams: open-file limit %ld allows %zu streams (two sockets each), not "
                   "%zu\n",
                   nofile, sizes[i], SIZES[i]);
    }
    size_t cap = sizes[TD_ARRAY_SIZE(sizes) - 1];
    phase_t ph[1 + 2 * TD_ARRAY_SIZE(SIZES)];
    size_t nph = 0;

    if (cap < (size_t)USERS) {
        fprintf(stderr, "sse_streams: an open-file limit of %ld is too low to run\n", nofile);
        goto out;
    }
    if (world_start(&w, cap) != 0) goto out;
    printf("sse_streams: notifications service in-process, embedded broker (3); the streams are "
           "raw sockets on one epoll loop in the main thread; open-file limit %ld; load average "
           "at start %.2f\n",
           nofile, bench_load_start);

    if (run_phase(&w, 1, 1, true, &ph[nph++]) != 0) goto out;
    for (size_t i = 0; i < TD_ARRAY_SIZE(sizes); i++) {
        if (run_phase(&w, sizes[i], USERS, false, &ph[nph++]) != 0) goto out;
        if (run_phase(&w, sizes[i], 1, false, &ph[nph++]) != 0) goto out;
    }
    if (dr_failures) {
        fprintf(stderr, "sse_streams: %d events were not delivered\n", dr_failures);
        goto out;
    }

    printf("  %7s %5s %8s %9s %8s %6s %7s %10s %8s %10s\n", "streams", "users", "open s",
           "opened/s", "threads:", "before", "after", "RSS MiB:", "after", "KiB/stream");
    printf("  %7s %5s %8s %9s %8s %6s %7s %10s %8s %10s\n", "", "", "", "", "before", "open",
           "rounds", "before", "open", "");
    for (size_t i = 0; i < nph; i++) print_phase(&ph[i]);
    printf("  latency: UserLoggedInEvent produced -> frame parsed on every stream of the user(s) "
           "(%d rounds)\n",
           ROUNDS);
    bench_stats_header("ms");
    for (size_t i = 0; i < nph; i++) {
        char label[80];
        if (ph[i].users > 1) {
            snprintf(label, sizeof(label), "%zu/%d users: 1 event -> %d", ph[i].streams,
                     ph[i].users, ph[i].one_targets);
            bench_stats_row(label, &ph[i].one);
            snprintf(label, sizeof(label), "%zu/%d users: %d events -> %zu", ph[i].streams,
                     ph[i].users, ph[i].users, ph[i].streams);
            bench_stats_row(label, &ph[i].all);
        } else {
            snprintf(label, sizeof(label), "%zu/1 user: 1 event -> %zu", ph[i].streams,
                     ph[i].streams);
            bench_stats_row(label, &ph[i].one);
        }
    }

    json_t *res = bench_result_new("sse_streams");
    json_object_set_new(res, "nofile_limit", json_integer(nofile));
    json_t *arr = json_array();
    for (size_t i = 0; i < nph; i++) json_array_append_new(arr, phase_json(&ph[i]));
    json_object_set_new(res, "phases", arr);
    json_object_set_new(res, "rounds", json_integer(ROUNDS));
    bench_result_print(res);
    rc = 0;

out:
    world_stop(&w);
    return rc;
}
