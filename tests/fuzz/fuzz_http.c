/* Fuzzes the HTTP layer as a client would reach it: one td_http server
 * (started once, on a free loopback port, with routes that take path
 * parameters, a rest parameter, JSON bodies, query strings and bearer
 * tokens) gets each input as the raw bytes of a connection, which is then
 * half-closed so the server sees the end of what was sent. The answer is
 * read with a short timeout. Invariants: every answer is an HTTP/1.x
 * status line; no request makes the layer or a well-behaved handler
 * answer 500; and afterwards GET /healthz still answers 200, so no input
 * wedges or kills the server. The request cycle runs on the server's
 * worker threads; ASan and UBSan watch them as well. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fuzz.h"
#include "tidings/http.h"
#include "tidings/json.h"
#include "tidings/log.h"

#define IO_TIMEOUT_MS 2000
#define FIN_DELAY_MS  2
#define IDLE_MS       25
#define ANSWER_MAX    (256 * 1024)

static const unsigned char key[32] = "tidings fuzz key, 32 bytes long";
static td_http_t *server;
static int port;

/* POST /products {title, price, quantity}: the strict body readers. */
static void create_product(td_req_t *req, td_resp_t *resp)
{
    static const char *const allowed[] = {"title", "price", "quantity", NULL};
    char err[256];
    const char *title;
    int64_t cents, quantity;
    if (!td_req_body(req, resp)) return;
    if (td_json_only_fields(req->body, allowed, err, sizeof(err)) != 0 ||
        td_json_req_string(req->body, "title", 200, &title, err, sizeof(err)) != 0 ||
        td_json_to_cents(json_object_get(req->body, "price"), "price", &cents, err, sizeof(err)) !=
            0 ||
        td_json_req_int(req->body, "quantity", 0, 1000000, &quantity, err, sizeof(err)) != 0) {
        td_resp_error(resp, 400, "%s", err);
        return;
    }
    td_resp_json(resp, 201,
                 json_pack("{s:s, s:o, s:I, s:s}", "title", title, "price", td_json_money(cents),
                           "quantity", (json_int_t)quantity, "route", req->route));
}

/* GET /products/{productId}?fields=: a parameter and a query echoed. */
static void get_product(td_req_t *req, td_resp_t *resp)
{
    const char *id = td_req_param(req, "productId");
    const char *fields = td_req_query(req, "fields");
    if (!id) {
        td_resp_error(resp, 500, "no productId parameter");
        return;
    }
    if (!td_uuid_valid(id)) {
        td_resp_error(resp, 400, "productId '%s' is not a UUID", id);
        return;
    }
    td_resp_json(
        resp, 200,
        json_pack("{s:s, s:s?, s:s}", "productId", id, "fields", fields, "path", req->path));
}

/* PATCH /products/{productId}: admin only, body optional. */
static void patch_product(td_req_t *req, td_resp_t *resp)
{
    if (!td_req_admin(req, resp)) return;
    td_resp_json(
        resp, 200,
        json_pack("{s:s, s:s}", "productId", td_req_param(req, "productId"), "by", req->auth.sub));
}

/* POST /orders/{orderId}/items/{itemId}: two parameters, auth, body. */
static void add_item(td_req_t *req, td_resp_t *resp)
{
    if (!td_req_auth(req, resp, false) || !td_req_body(req, resp)) return;
    td_resp_json(resp, 201,
                 json_pack("{s:s, s:s, s:s, s:I}", "orderId", td_req_param(req, "orderId"),
                           "itemId", td_req_param(req, "itemId"), "userId", req->auth.sub, "bytes",
                           (json_int_t)req->body_len));
}

/* GET /stream: a token also from ?token= as EventSource sends it. */
static void stream(td_req_t *req, td_resp_t *resp)
{
    if (!td_req_auth(req, resp, true)) return;
    td_resp_data(resp, 200, "text/plain", "ok\n", 3);
}

/* GET /static/{*path}: the rest of the path, slashes and all. */
static void static_file(td_req_t *req, td_resp_t *resp)
{
    const char *path = td_req_param(req, "path");
    const char *ua = td_req_header(req, "User-Agent");
    if (!path) {
        td_resp_error(resp, 500, "no path parameter");
        return;
    }
    td_resp_header(resp, "X-Path-Bytes", ua ? "ua" : "none");
    td_resp_json(resp, 200, json_pack("{s:s}", "path", path));
}

static const td_route_t routes[] = {
    {"POST", "/products", create_product, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/products/{productId}", get_product, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"PATCH", "/products/{productId}", patch_product, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"POST", "/orders/{orderId}/items/{itemId}", add_item, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/stream", stream, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/static/{*path}", static_file, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* Every log line is written (the request log quotes client text),
     * to nowhere: the fuzzer's output stays readable. */
    td_log_init("fuzz", TD_LOG_DEBUG, true);
    int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    FUZZ_CHECK(devnull >= 0);
    td_log_set_fd(devnull);
    char err[256];
    td_http_opts_t opts = {
        .service = "fuzz",
        .addr = "127.0.0.1",
        .port = 0,
        .routes = routes,
        .route_cnt = TD_ARRAY_SIZE(routes),
        .secret = key,
        .secret_len = sizeof(key),
        .threads = 2,
        .cors_origins = "http://shop.example",
    };
    server = td_http_start(&opts, err, sizeof(err));
    if (!server) {
        fprintf(stderr, "fuzz_http: cannot start the server: %s\n", err);
        abort();
    }
    port = td_http_port(server);
    return 0;
}

/* Waits up to the deadline for fd to be ready for events. */
static bool wait_fd(int fd, short events, int64_t deadline)
{
    int64_t left = deadline - td_mono_ms();
    if (left <= 0) return false;
    struct pollfd pfd = {.fd = fd, .events = events};
    int rc;
    do rc = poll(&pfd, 1, (int)left);
    while (rc < 0 && errno == EINTR);
    return rc > 0;
}

static int connect_server(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int err = 0;
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        err = errno;
        /* libFuzzer's timers interrupt: the connect goes on regardless. */
        if (err == EINTR && wait_fd(fd, POLLOUT, td_mono_ms() + IO_TIMEOUT_MS)) {
            socklen_t len = sizeof(err);
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
        }
    }
    if (err) {
        fprintf(stderr, "fuzz_http: connect: %s\n", strerror(err));
        abort();
    }
    return fd;
}

/* Sends req (the server may close early: that is an answer too), half-
 * closes, and reads the answer until the server closes or the time is up.
 * Returns the bytes read (NUL-terminated, caller frees). */
static char *exchange(const void *req, size_t len, size_t *got)
{
    int fd = connect_server();
    int64_t deadline = td_mono_ms() + IO_TIMEOUT_MS;
    const char *p = req;
    while (len > 0 && wait_fd(fd, POLLOUT, deadline)) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (n <= 0) break;
        p += n;
        len -= (size_t)n;
    }
    /* The end of input (FIN) must not arrive with the last bytes: the
     * server (edge-triggered epoll) would read both at once, miss the end
     * and keep the connection until its timeout. A moment's wait, cut
     * short by the first byte of an answer, lets it read the data first. */
    wait_fd(fd, POLLIN, td_mono_ms() + FIN_DELAY_MS);
    shutdown(fd, SHUT_WR);
    char *buf = malloc(ANSWER_MAX + 1);
    FUZZ_CHECK(buf != NULL);
    size_t have = 0;
    /* The server may still miss the end now and then (when it arrives as
     * the answer goes out) and keep the connection open: once an answer
     * has come, a short silence ends it too. */
    int64_t until = deadline;
    while (have < ANSWER_MAX && wait_fd(fd, POLLIN, until)) {
        ssize_t n = recv(fd, buf + have, ANSWER_MAX - have, MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
        if (n <= 0) break;
        have += (size_t)n;
        until = td_mono_ms() + IDLE_MS;
        if (until > deadline) until = deadline;
    }
    buf[have] = '\0';
    /* FUZZ_HTTP_DEBUG=1 shows each exchange, to see where time goes. */
    if (getenv("FUZZ_HTTP_DEBUG"))
        fprintf(stderr, "exchange: %zu bytes in %lld ms: %.80s\n", have,
                (long long)(td_mono_ms() - deadline + IO_TIMEOUT_MS), buf);
    close(fd);
    *got = have;
    return buf;
}

/* Every status line in the answer (pipelined requests get several). */
static void check_answer(const char *buf, size_t len)
{
    if (len == 0) return; /* closed without an answer: an incomplete request */
    FUZZ_CHECK(len >= 12 && memcmp(buf, "HTTP/1.", 7) == 0);
    for (const char *p = buf; (p = memmem(p, len - (size_t)(p - buf), "HTTP/1.", 7)) != NULL;
         p += 7) {
        if ((size_t)(p - buf) + 12 > len) break;
        if (p != buf && p[-1] != '\n') continue; /* inside a body */
        if (memcmp(p + 8, " 500", 4) == 0) {
            fprintf(stderr, "fuzz_http: answered 500:\n%.2000s\n", buf);
            FUZZ_CHECK(0);
        }
    }
}

static void check_alive(void)
{
    static const char probe[] = "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    size_t len;
    char *buf = exchange(probe, sizeof(probe) - 1, &len);
    if (len < 12 || memcmp(buf, "HTTP/1.1 200", 12) != 0) {
        fprintf(stderr, "fuzz_http: /healthz after the input answered:\n%.500s\n", buf);
        FUZZ_CHECK(0);
    }
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t len;
    char *buf = exchange(data, size, &len);
    check_answer(buf, len);
    free(buf);
    check_alive();
    return 0;
}
