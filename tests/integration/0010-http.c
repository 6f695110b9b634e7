/* The HTTP layer from outside: a td_http server on a free port with sample
 * routes, driven with libcurl (ts_http) and raw sockets. Covers routing,
 * parameters and decoding, every error status of SPEC section 2 and its
 * error shape, body limits and checks, the built-in endpoints, bearer
 * auth, CORS, request ids and trace context, the request log line, and
 * hostile bytes that must never take the server down. And the handover
 * of a connection to an SSE hub (td_resp_takeover): the head the layer
 * writes for HTTP/1.1 (chunked) and HTTP/1.0, HEAD, the per-user cap
 * (429 with Retry-After), the end at token expiry, a client that hangs up
 * (dropped at once), and a reader that stops reading (cut after its bound,
 * what it got before is whole frames in order). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tidings/http.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tidings/sse.h"
#include "tsupport.h"

static const unsigned char secret[] = "http-test-secret-0123456789abcde"; /* 32 bytes */
#define SECRET_LEN 32
#define USER_ID    "0b7c7c2e-5f1a-4e2b-9a61-3f7d2c9e8a10"

static td_http_t *srv;
static td_sse_hub_t *hub;
#define SSE_CAP 2
static char base[64];
static int log_fd = -1;
static char *log_dir;
static char *log_path;
static atomic_bool ready_flag = true;

/* ---- sample routes ---- */

static void get_item(td_req_t *req, td_resp_t *resp)
{
    const char *q = td_req_query(req, "q");
    const char *flag = td_req_query(req, "flag");
    td_resp_json(resp, 200,
                 json_pack("{s:s, s:s*, s:s*, s:s, s:s}", "id", td_req_param(req, "id"), "q", q,
                           "flag", flag, "path", req->path, "route", req->route));
}

static void get_file(td_req_t *req, td_resp_t *resp)
{
    td_resp_json(resp, 200, json_pack("{s:s}", "path", td_req_param(req, "path")));
}

static void get_pair(td_req_t *req, td_resp_t *resp)
{
    td_resp_json(resp, 200,
                 json_pack("{s:s, s:s}", "a", td_req_param(req, "a"), "b", td_req_param(req, "b")));
}

static void post_item(td_req_t *req, td_resp_t *resp)
{
    if (!td_req_body(req, resp)) return;
    td_resp_json(resp, 201,
                 json_pack("{s:O, s:I}", "got", req->body, "raw_len", (json_int_t)req->body_len));
}

static void put_item(td_req_t *req, td_resp_t *resp)
{
    td_resp_json(
        resp, 200,
        json_pack("{s:s, s:b}", "id", td_req_param(req, "id"), "has_body", req->body != NULL));
}

static void delete_item(td_req_t *req, td_resp_t *resp)
{
    (void)req;
    td_resp_empty(resp, 204);
}

static void get_me(td_req_t *req, td_resp_t *resp)
{
    if (!td_req_auth(req, resp, false)) return;
    td_resp_json(resp, 200, json_pack("{s:s, s:s}", "sub", req->auth.sub, "role", req->auth.role));
}

static void get_admin(td_req_t *req, td_resp_t *resp)
{
    if (!td_req_admin(req, resp)) return;
    td_resp_json(resp, 200, json_pack("{s:b}", "admin", 1));
}

/* The routes that declare their auth: the handler only reads the caller. */
static void get_declared(td_req_t *req, td_resp_t *resp)
{
    const td_claims_t *caller = td_req_caller(req);
    assert_non_null(caller);
    td_resp_json(resp, 200, json_pack("{s:s, s:s}", "sub", caller->sub, "role", caller->role));
}

static void get_optional(td_req_t *req, td_resp_t *resp)
{
    const td_claims_t *caller = td_req_caller(req);
    td_resp_json(resp, 200, json_pack("{s:s?}", "sub", caller ? caller->sub : NULL));
}

static void post_declared(td_req_t *req, td_resp_t *resp)
{
    assert_non_null(td_req_caller(req));
    assert_non_null(req->body);
    td_resp_empty(resp, 204);
}

static void get_stream(td_req_t *req, td_resp_t *resp)
{
    if (!td_req_auth(req, resp, true)) return;
    td_resp_data(resp, 200, "text/event-stream", "data: hi\n\n", 10);
}

static void get_nothing(td_req_t *req, td_resp_t *resp)
{
    (void)req;
    (void)resp; /* a bug: sets no response */
}

static void get_null_body(td_req_t *req, td_resp_t *resp)
{
    (void)req;
    td_resp_json(resp, 200, json_pack("{s:s}", "bad", "\xff")); /* json_pack fails: NULL */
}

static void get_bad_message(td_req_t *req, td_resp_t *resp)
{
    (void)req;
    td_resp_error(resp, 400, "bad value '%s'", "a\xff"); /* quoting client bytes */
}

static void get_conflict(td_req_t *req, td_resp_t *resp)
{
    (void)req;
    td_resp_header(resp, "X-Extra", "yes");
    td_resp_errno(resp, TD_EEXIST, "email already taken");
}

static void get_ctx(td_req_t *req, td_resp_t *resp)
{
    td_resp_json(resp, 200, json_pack("{s:s}", "ctx", (const char *)req->ctx));
}

/* A live stream of the caller (anonymous: key "anon"), at most SSE_CAP
 * per user. */
static void get_sse(td_req_t *req, td_resp_t *resp)
{
    const char *tok = td_req_query(req, "token");
    if ((td_req_header(req, "Authorization") || (tok && *tok)) && !td_req_auth(req, resp, true))
        return;
    td_sse_opts_t o = {
        .key = req->authed ? req->auth.sub : "anon",
        .retry_ms = 1000,
        .owner = req->authed ? req->auth.sub : NULL,
        .max_per_owner = SSE_CAP,
    };
    td_sse_open_opts(hub, req, resp, &o);
}

static const td_route_t routes[] = {
    {"GET", "/sse", get_sse, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/items/{id}", get_item, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"PUT", "/items/{id}", put_item, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"DELETE", "/items/{id}", delete_item, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"POST", "/items", post_item, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/files/{*path}", get_file, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/pairs/{a}/x/{b}", get_pair, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/me", get_me, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/admin", get_admin, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/stream", get_stream, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/nothing", get_nothing, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/conflict", get_conflict, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/nullbody", get_null_body, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/badmsg", get_bad_message, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/ctx", get_ctx, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0},
    {"GET", "/declared/user", get_declared, TD_AUTH_USER, TD_BODY_NONE, 0},
    {"GET", "/declared/admin", get_declared, TD_AUTH_ADMIN, TD_BODY_NONE, 0},
    {"GET", "/declared/admin-query", get_declared, TD_AUTH_ADMIN, TD_BODY_NONE,
     TD_ROUTE_QUERY_TOKEN},
    {"GET", "/declared/optional", get_optional, TD_AUTH_OPTIONAL, TD_BODY_NONE,
     TD_ROUTE_QUERY_TOKEN},
    {"GET", "/declared/public", get_optional, TD_AUTH_PUBLIC, TD_BODY_NONE, 0},
    {"POST", "/declared/body", post_declared, TD_AUTH_USER, TD_BODY_JSON, 0},
};

static bool ready(void *arg, char *why, size_t whylen)
{
    (void)arg;
    if (atomic_load(&ready_flag)) return true;
    snprintf(why, whylen, "kafka is unreachable");
    return false;
}

static int group_setup(void **state)
{
    (void)state;
    log_dir = ts_tmpdir("0010-http");
    log_path = td_asprintf("%s/log", log_dir);
    log_fd = open(log_path, O_CREAT | O_TRUNC | O_WRONLY | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) return -1;
    td_log_init("http-test", TD_LOG_INFO, true);
    td_log_set_fd(log_fd);

    hub = td_sse_hub_new(60);
    td_http_opts_t opts = {
        .service = "http-test",
        .addr = "127.0.0.1",
        .port = 0,
        .routes = routes,
        .route_cnt = TD_ARRAY_SIZE(routes),
        .ctx = "the-context",
        .secret = secret,
        .secret_len = SECRET_LEN,
        .ready = ready,
        .threads = 2,
        .cors_origins = "http://shop.example",
    };
    char err[256];
    srv = td_http_start(&opts, err, sizeof(err));
    if (!srv) {
        fprintf(stderr, "td_http_start: %s\n", err);
        return -1;
    }
    snprintf(base, sizeof(base), "http://127.0.0.1:%d", td_http_port(srv));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    td_sse_hub_close(hub);
    td_http_stop(srv);
    td_sse_hub_free(hub);
    td_log_set_fd(2);
    close(log_fd);
    unlink(log_path);
    rmdir(log_dir);
    free(log_path);
    free(log_dir);
    return 0;
}

/* ---- helpers ---- */

static ts_resp_t req(const char *method, const char *path, const char *token, const char *body,
                     const char *ctype, const char *const *hdrs)
{
    char *url = td_asprintf("%s%s", base, path);
    ts_resp_t r = ts_http(method, url, token, body, ctype, hdrs);
    free(url);
    return r;
}

static ts_resp_t get(const char *path)
{
    return req("GET", path, NULL, NULL, NULL, NULL);
}

/* The SPEC error shape, exactly: {"error":{"code":C,"message":M}}. */
static void assert_error(const ts_resp_t *r, long status, const char *code)
{
    if (r->status != status) fprintf(stderr, "status %ld body %s\n", r->status, r->body);
    assert_int_equal(r->status, status);
    assert_non_null(r->json);
    assert_int_equal(json_object_size(r->json), 1);
    json_t *e = json_object_get(r->json, "error");
    assert_true(json_is_object(e));
    assert_int_equal(json_object_size(e), 2);
    assert_string_equal(ts_error_code(r), code);
    assert_true(json_is_string(json_object_get(e, "message")));
    char ct[128];
    assert_non_null(ts_resp_header(r, "Content-Type", ct, sizeof(ct)));
    assert_string_equal(ct, "application/json; charset=utf-8");
}

static const char *error_message(const ts_resp_t *r)
{
    return json_string_value(json_object_get(json_object_get(r->json, "error"), "message"));
}

static char *token(const char *role, int64_t exp)
{
    td_claims_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "%s", USER_ID);
    snprintf(c.role, sizeof(c.role), "%s", role);
    c.iat = td_now_ms() / 1000;
    c.exp = exp;
    return td_jwt_sign(secret, SECRET_LEN, &c);
}

/* Sends raw bytes on a new connection and returns what comes back until
 * the server closes or wait_ms pass (NULL-terminated, caller frees). */
static char *raw_exchange(const void *data, size_t len, bool shut_write, int wait_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)td_http_port(srv))};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, (const char *)data + off, len - off, MSG_NOSIGNAL);
        if (n <= 0) break; /* the server may close early: fine */
        off += (size_t)n;
    }
    if (shut_write) shutdown(fd, SHUT_WR);
    char *out = td_malloc(1);
    size_t olen = 0;
    int64_t deadline = td_mono_ms() + wait_ms;
    for (;;) {
        int64_t left = deadline - td_mono_ms();
        if (left <= 0) break;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)left) <= 0) break;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) break;
        out = td_realloc(out, olen + (size_t)n + 1);
        memcpy(out + olen, buf, (size_t)n);
        olen += (size_t)n;
    }
    out[olen] = '\0';
    close(fd);
    return out;
}

static void assert_alive(void)
{
    ts_resp_t r = get("/healthz");
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);
}

/* ---- tests ---- */

static void test_routing_and_params(void **state)
{
    (void)state;
    ts_resp_t r = get("/items/abc%20d%C3%A9f%2Fx?q=hello%20world+again&flag");
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "id")), "abc d\xc3\xa9"
                                                                          "f/x");
    assert_string_equal(json_string_value(json_object_get(r.json, "q")), "hello world again");
    assert_string_equal(json_string_value(json_object_get(r.json, "flag")), "");
    assert_string_equal(json_string_value(json_object_get(r.json, "route")), "/items/{id}");
    assert_string_equal(json_string_value(json_object_get(r.json, "path")), "/items/abc d\xc3\xa9"
                                                                            "f/x");
    char ct[128];
    assert_string_equal(ts_resp_header(&r, "Content-Type", ct, sizeof(ct)),
                        "application/json; charset=utf-8");
    ts_resp_free(&r);

    r = get("/items/plain");
    assert_int_equal(r.status, 200);
    assert_null(json_object_get(r.json, "q")); /* absent query arg -> NULL */
    assert_null(json_object_get(r.json, "flag"));
    ts_resp_free(&r);

    r = get("/files/a/b%2Fc/d.txt");
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "path")), "a/b/c/d.txt");
    ts_resp_free(&r);

    r = get("/pairs/one/x/two");
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "a")), "one");
    assert_string_equal(json_string_value(json_object_get(r.json, "b")), "two");
    ts_resp_free(&r);

    r = get("/ctx");
    assert_string_equal(json_string_value(json_object_get(r.json, "ctx")), "the-context");
    ts_resp_free(&r);

    r = req("PUT", "/items/7", NULL, "{\"x\":1}", NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_true(json_is_true(json_object_get(r.json, "has_body")));
    ts_resp_free(&r);

    r = req("DELETE", "/items/7", NULL, NULL, NULL, NULL);
    assert_int_equal(r.status, 204);
    assert_int_equal(r.body_len, 0);
    ts_resp_free(&r);

    /* HEAD is answered like GET, without a body. */
    r = req("HEAD", "/items/7", NULL, NULL, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, 0);
    ts_resp_free(&r);
}

static void test_not_found_and_method(void **state)
{
    (void)state;
    const char *missing[] = {"/nope", "/items/", "/items/1/2", "/pairs/a/y/b",
                             "/",     "/files",  "/ITEMS/1"};
    for (size_t i = 0; i < TD_ARRAY_SIZE(missing); i++) {
        ts_resp_t r = get(missing[i]);
        assert_error(&r, 404, "not_found");
        ts_resp_free(&r);
    }

    ts_resp_t r = req("PATCH", "/items/1", NULL, "{}", NULL, NULL);
    assert_error(&r, 405, "method_not_allowed");
    char allow[128];
    assert_non_null(ts_resp_header(&r, "Allow", allow, sizeof(allow)));
    assert_string_equal(allow, "GET, HEAD, PUT, DELETE");
    ts_resp_free(&r);

    r = req("GET", "/items", NULL, NULL, NULL, NULL);
    assert_error(&r, 405, "method_not_allowed");
    assert_string_equal(ts_resp_header(&r, "Allow", allow, sizeof(allow)), "POST");
    ts_resp_free(&r);

    r = req("POST", "/healthz", NULL, NULL, NULL, NULL);
    assert_error(&r, 405, "method_not_allowed");
    assert_string_equal(ts_resp_header(&r, "Allow", allow, sizeof(allow)), "GET, HEAD");
    ts_resp_free(&r);

    r = req("BREW", "/items/1", NULL, NULL, NULL, NULL);
    assert_error(&r, 405, "method_not_allowed");
    ts_resp_free(&r);

    /* A broken escape or an encoded NUL in the path is a client error. */
    r = get("/items/%zz");
    assert_error(&r, 400, "invalid_argument");
    ts_resp_free(&r);
    r = get("/items/a%00b");
    assert_error(&r, 400, "invalid_argument");
    ts_resp_free(&r);
    r = get("/items/a%2");
    assert_error(&r, 400, "invalid_argument");
    ts_resp_free(&r);
}

static char *json_body_of_size(size_t n)
{
    /* {"pad":"xxxx..."} exactly n bytes */
    char *b = td_malloc(n + 1);
    memset(b, 'x', n);
    memcpy(b, "{\"pad\":\"", 8);
    b[n - 2] = '"';
    b[n - 1] = '}';
    b[n] = '\0';
    return b;
}

static void test_body_limits(void **state)
{
    (void)state;
    static const char *const no_expect[] = {"Expect:", NULL};

    /* Exactly the limit is fine. */
    char *b = json_body_of_size(TD_HTTP_MAX_BODY);
    ts_resp_t r = req("POST", "/items", NULL, b, NULL, NULL);
    assert_int_equal(r.status, 201);
    assert_int_equal(json_integer_value(json_object_get(r.json, "raw_len")), TD_HTTP_MAX_BODY);
    ts_resp_free(&r);
    free(b);

    /* One byte more is refused, with and without Expect: 100-continue. */
    b = json_body_of_size(TD_HTTP_MAX_BODY + 1);
    r = req("POST", "/items", NULL, b, NULL, NULL);
    assert_error(&r, 413, "payload_too_large");
    ts_resp_free(&r);
    r = req("POST", "/items", NULL, b, NULL, no_expect);
    assert_error(&r, 413, "payload_too_large");
    ts_resp_free(&r);
    free(b);

    b = json_body_of_size(1 << 20);
    r = req("POST", "/items", NULL, b, NULL, NULL);
    assert_error(&r, 413, "payload_too_large");
    ts_resp_free(&r);
    r = req("POST", "/items", NULL, b, NULL, no_expect);
    assert_error(&r, 413, "payload_too_large");
    ts_resp_free(&r);
    free(b);

    /* Chunked (no Content-Length): read, then refused. */
    size_t n = TD_HTTP_MAX_BODY + 100;
    char *chunk = td_malloc(n);
    memset(chunk, ' ', n);
    char *head = td_asprintf("POST /items HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n%zx\r\n",
                             n);
    size_t total = strlen(head) + n + 7;
    char *msg = td_malloc(total + 1);
    memcpy(msg, head, strlen(head));
    memcpy(msg + strlen(head), chunk, n);
    memcpy(msg + strlen(head) + n, "\r\n0\r\n\r\n", 7);
    char *resp = raw_exchange(msg, total, false, 3000);
    assert_non_null(strstr(resp, "HTTP/1.1 413"));
    assert_non_null(strstr(resp, "payload_too_large"));
    free(resp);
    free(msg);
    free(head);
    free(chunk);
    assert_alive();
}

static void test_body_checks(void **state)
{
    (void)state;
    ts_resp_t r = req("POST", "/items", NULL, "{\"a\":1}", "text/plain", NULL);
    assert_error(&r, 415, "unsupported_media_type");
    ts_resp_free(&r);
    r = req("POST", "/items", NULL, "a=1", "application/x-www-form-urlencoded", NULL);
    assert_error(&r, 415, "unsupported_media_type");
    ts_resp_free(&r);
    r = req("POST", "/items", NULL, "{\"a\":1}", "application/jsonx", NULL);
    assert_error(&r, 415, "unsupported_media_type");
    ts_resp_free(&r);

    const char *ok_types[] = {"application/json", "application/json; charset=utf-8",
                              "Application/JSON;charset=UTF-8"};
    for (size_t i = 0; i < TD_ARRAY_SIZE(ok_types); i++) {
        r = req("POST", "/items", NULL, "{\"a\":1}", ok_types[i], NULL);
        assert_int_equal(r.status, 201);
        assert_int_equal(json_integer_value(json_object_get(json_object_get(r.json, "got"), "a")),
                         1);
        ts_resp_free(&r);
    }

    r = req("POST", "/items", NULL, "{\"a\":", NULL, NULL);
    assert_error(&r, 400, "invalid_argument");
    assert_true(strncmp(error_message(&r), "request body is not valid JSON: ", 32) == 0);
    ts_resp_free(&r);

    const char *not_objects[] = {"[1,2]", "\"str\"", "42", "null"};
    for (size_t i = 0; i < TD_ARRAY_SIZE(not_objects); i++) {
        r = req("POST", "/items", NULL, not_objects[i], NULL, NULL);
        assert_error(&r, 400, "invalid_argument");
        assert_string_equal(error_message(&r), "request body must be a JSON object");
        ts_resp_free(&r);
    }

    /* Not UTF-8, inside a string and outside. */
    r = req("POST", "/items", NULL, "{\"a\":\"\xff\xfe\"}", NULL, NULL);
    assert_error(&r, 400, "invalid_argument");
    assert_true(strncmp(error_message(&r), "request body is not valid JSON: ", 32) == 0);
    ts_resp_free(&r);
    r = req("POST", "/items", NULL, "{\"a\":\"\xc3\x28\"}", NULL, NULL);
    assert_error(&r, 400, "invalid_argument");
    ts_resp_free(&r);

    /* A body is required by this handler. */
    r = req("POST", "/items", NULL, NULL, NULL, NULL);
    assert_error(&r, 400, "invalid_argument");
    assert_string_equal(error_message(&r), "request body is required");
    ts_resp_free(&r);

    /* No body: no content-type check, and req->body is NULL. */
    r = req("PUT", "/items/1", NULL, NULL, "text/plain", NULL);
    assert_int_equal(r.status, 200);
    assert_true(json_is_false(json_object_get(r.json, "has_body")));
    ts_resp_free(&r);
}

static void test_handler_errors(void **state)
{
    (void)state;
    ts_resp_t r = get("/nothing");
    assert_error(&r, 500, "internal");
    ts_resp_free(&r);

    r = get("/nullbody");
    assert_error(&r, 500, "internal");
    ts_resp_free(&r);

    r = get("/badmsg");
    assert_error(&r, 400, "invalid_argument");
    assert_string_equal(error_message(&r), "bad value 'a?'");
    ts_resp_free(&r);

    r = get("/conflict");
    assert_error(&r, 409, "conflict");
    assert_string_equal(error_message(&r), "email already taken");
    char v[32];
    assert_string_equal(ts_resp_header(&r, "X-Extra", v, sizeof(v)), "yes");
    ts_resp_free(&r);

    assert_string_equal(td_http_error_code(400), "invalid_argument");
    assert_string_equal(td_http_error_code(401), "unauthenticated");
    assert_string_equal(td_http_error_code(403), "permission_denied");
    assert_string_equal(td_http_error_code(404), "not_found");
    assert_string_equal(td_http_error_code(405), "method_not_allowed");
    assert_string_equal(td_http_error_code(409), "conflict");
    assert_string_equal(td_http_error_code(413), "payload_too_large");
    assert_string_equal(td_http_error_code(415), "unsupported_media_type");
    assert_string_equal(td_http_error_code(429), "rate_limited");
    assert_string_equal(td_http_error_code(500), "internal");
    assert_string_equal(td_http_error_code(503), "unavailable");
}

static void test_builtins(void **state)
{
    (void)state;
    ts_resp_t r = get("/healthz");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ok\"}");
    ts_resp_free(&r);

    r = get("/readyz");
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ready\"}");
    ts_resp_free(&r);

    atomic_store(&ready_flag, false);
    r = get("/readyz");
    assert_error(&r, 503, "unavailable");
    assert_string_equal(error_message(&r), "kafka is unreachable");
    ts_resp_free(&r);
    atomic_store(&ready_flag, true);
    r = get("/readyz");
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);

    /* Make sure a counted request exists, then scrape. Metrics are
     * written when a request completes, which can be just after the
     * client has its response: poll briefly. */
    r = get("/items/for-metrics");
    ts_resp_free(&r);
    const char *want = "tidings_http_requests_total{method=\"GET\",route=\"/items/{id}\","
                       "status=\"200\"} ";
    bool found = false;
    for (int i = 0; i < 200 && !found; i++) {
        r = get("/metrics");
        assert_int_equal(r.status, 200);
        char ct[128];
        assert_string_equal(ts_resp_header(&r, "Content-Type", ct, sizeof(ct)),
                            "text/plain; version=0.0.4; charset=utf-8");
        found = strstr(r.body, want) != NULL;
        if (found) {
            assert_non_null(strstr(r.body, "# TYPE tidings_http_requests_total counter\n"));
            assert_non_null(
                strstr(r.body, "# TYPE tidings_http_request_duration_seconds histogram\n"));
            assert_non_null(strstr(r.body, "tidings_http_request_duration_seconds_bucket{"
                                           "method=\"GET\",route=\"/items/{id}\",le=\"+Inf\"}"));
            assert_non_null(strstr(r.body, "route=\"unmatched\",status=\"404\"} "));
        }
        ts_resp_free(&r);
        if (!found) td_sleep_ms(5);
    }
    assert_true(found);
}

static void test_auth(void **state)
{
    (void)state;
    char www[128];
    ts_resp_t r = get("/me");
    assert_error(&r, 401, "unauthenticated");
    assert_string_equal(error_message(&r), "missing bearer token");
    assert_non_null(ts_resp_header(&r, "WWW-Authenticate", www, sizeof(www)));
    assert_true(strncmp(www, "Bearer", 6) == 0);
    ts_resp_free(&r);

    static const char *const basic[] = {"Authorization: Basic dXNlcjpwYXNz", NULL};
    r = req("GET", "/me", NULL, NULL, NULL, basic);
    assert_error(&r, 401, "unauthenticated");
    ts_resp_free(&r);

    int64_t now = td_now_ms() / 1000;
    char *expired = token("customer", now - 5);
    r = req("GET", "/me", expired, NULL, NULL, NULL);
    assert_error(&r, 401, "unauthenticated");
    assert_string_equal(error_message(&r), "token expired");
    assert_non_null(ts_resp_header(&r, "WWW-Authenticate", www, sizeof(www)));
    ts_resp_free(&r);
    free(expired);

    char *cust = token("customer", now + 3600);
    char *tampered = td_strdup(cust);
    char *sig = strrchr(tampered, '.') + 1;
    sig[0] = sig[0] == 'A' ? 'B' : 'A';
    r = req("GET", "/me", tampered, NULL, NULL, NULL);
    assert_error(&r, 401, "unauthenticated");
    assert_string_equal(error_message(&r), "invalid token");
    ts_resp_free(&r);
    free(tampered);

    r = req("GET", "/me", "garbage", NULL, NULL, NULL);
    assert_error(&r, 401, "unauthenticated");
    assert_string_equal(error_message(&r), "invalid token");
    ts_resp_free(&r);

    /* A token signed with another key. */
    td_claims_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "%s", USER_ID);
    snprintf(c.role, sizeof(c.role), "admin");
    c.exp = now + 3600;
    char *foreign = td_jwt_sign((const unsigned char *)"another-key-another-key-another!", 32, &c);
    r = req("GET", "/admin", foreign, NULL, NULL, NULL);
    assert_error(&r, 401, "unauthenticated");
    ts_resp_free(&r);
    free(foreign);

    r = req("GET", "/me", cust, NULL, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "sub")), USER_ID);
    assert_string_equal(json_string_value(json_object_get(r.json, "role")), "customer");
    ts_resp_free(&r);

    r = req("GET", "/admin", cust, NULL, NULL, NULL);
    assert_error(&r, 403, "permission_denied");
    assert_string_equal(error_message(&r), "admin role required");
    ts_resp_free(&r);
    r = get("/admin");
    assert_error(&r, 401, "unauthenticated");
    ts_resp_free(&r);

    char *adm = token("admin", now + 3600);
    r = req("GET", "/admin", adm, NULL, NULL, NULL);
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);

    /* ?token= only where the route allows it. */
    char path[1024];
    snprintf(path, sizeof(path), "/stream?token=%s", cust);
    r = get(path);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "data: hi\n\n");
    ts_resp_free(&r);
    snprintf(path, sizeof(path), "/me?token=%s", cust);
    r = get(path);
    assert_error(&r, 401, "unauthenticated");
    ts_resp_free(&r);
    r = get("/stream?token=bad");
    assert_error(&r, 401, "unauthenticated");
    ts_resp_free(&r);
    r = get("/stream");
    assert_error(&r, 401, "unauthenticated");
    ts_resp_free(&r);

    free(adm);
    free(cust);
}

/* Routes that declare their auth in the table: the router answers exactly
 * as the handlers' own checks did (test_auth), before the handler runs. */
static void test_declared_auth(void **state)
{
    (void)state;
    char www[128];
    int64_t now = td_now_ms() / 1000;
    char *cust = token("customer", now + 3600);
    char *adm = token("admin", now + 3600);
    char *expired = token("customer", now - 5);

    ts_resp_t r = get("/declared/user");
    assert_error(&r, 401, "unauthenticated");
    assert_string_equal(error_message(&r), "missing bearer token");
    assert_non_null(ts_resp_header(&r, "WWW-Authenticate", www, sizeof(www)));
    assert_string_equal(www, "Bearer");
    ts_resp_free(&r);

    r = req("GET", "/declared/user", expired, NULL, NULL, NULL);
    assert_error(&r, 401, "unauthenticated");
    assert_string_equal(error_message(&r), "token expired");
    assert_non_null(ts_resp_header(&r, "WWW-Authenticate", www, sizeof(www)));
    assert_string_equal(www, "Bearer error=\"invalid_token\"");
    ts_resp_free(&r);

    r = req("GET", "/declared/user", "garbage", NULL, NULL, NULL);
    assert_error(&r, 401, "unauthenticated");
    assert_string_equal(error_message(&r), "invalid token");
    ts_resp_free(&r);

    r = req("GET", "/declared/user", cust, NULL, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "sub")), USER_ID);
    assert_string_equal(json_string_value(json_object_get(r.json, "role")), "customer");
    ts_resp_free(&r);

    r = get("/declared/admin");
    assert_error(&r, 401, "unauthenticated");
    ts_resp_free(&r);
    r = req("GET", "/declared/admin", cust, NULL, NULL, NULL);
    assert_error(&r, 403, "permission_denied");
    assert_string_equal(error_message(&r), "admin role required");
    ts_resp_free(&r);
    r = req("GET", "/declared/admin", adm, NULL, NULL, NULL);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "role")), "admin");
    ts_resp_free(&r);

    /* ?token= only where the table allows it. */
    char path[1024];
    snprintf(path, sizeof(path), "/declared/admin?token=%s", adm);
    r = get(path);
    assert_error(&r, 401, "unauthenticated");
    ts_resp_free(&r);
    snprintf(path, sizeof(path), "/declared/admin-query?token=%s", adm);
    r = get(path);
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);
    snprintf(path, sizeof(path), "/declared/admin-query?token=%s", cust);
    r = get(path);
    assert_error(&r, 403, "permission_denied");
    ts_resp_free(&r);

    /* Optional: anonymous without a token, 401 for a bad one. */
    r = get("/declared/optional");
    assert_int_equal(r.status, 200);
    assert_true(json_is_null(json_object_get(r.json, "sub")));
    ts_resp_free(&r);
    r = req("GET", "/declared/optional", expired, NULL, NULL, NULL);
    assert_error(&r, 401, "unauthenticated");
    assert_string_equal(error_message(&r), "token expired");
    ts_resp_free(&r);
    snprintf(path, sizeof(path), "/declared/optional?token=%s", cust);
    r = get(path);
    assert_int_equal(r.status, 200);
    assert_string_equal(json_string_value(json_object_get(r.json, "sub")), USER_ID);
    ts_resp_free(&r);
    /* Public: a token is not even looked at. */
    r = req("GET", "/declared/public", "garbage", NULL, NULL, NULL);
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);

    /* A required body is checked after the auth, as the handlers did. */
    r = req("POST", "/declared/body", NULL, NULL, NULL, NULL);
    assert_error(&r, 401, "unauthenticated");
    ts_resp_free(&r);
    r = req("POST", "/declared/body", cust, NULL, NULL, NULL);
    assert_error(&r, 400, "invalid_argument");
    assert_string_equal(error_message(&r), "request body is required");
    ts_resp_free(&r);
    r = req("POST", "/declared/body", cust, "{\"a\":1}", NULL, NULL);
    assert_int_equal(r.status, 204);
    ts_resp_free(&r);

    free(cust);
    free(adm);
    free(expired);
}

static void test_cors(void **state)
{
    (void)state;
    static const char *const pre[] = {
        "Origin: http://shop.example", "Access-Control-Request-Method: POST",
        "Access-Control-Request-Headers: authorization, content-type", NULL};
    ts_resp_t r = req("OPTIONS", "/items", NULL, NULL, NULL, pre);
    assert_int_equal(r.status, 204);
    char v[256];
    /* The allowed origin gets its own origin back, never "*". */
    assert_string_equal(ts_resp_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)),
                        "http://shop.example");
    assert_string_equal(ts_resp_header(&r, "Vary", v, sizeof(v)), "Origin");
    assert_non_null(ts_resp_header(&r, "Access-Control-Allow-Headers", v, sizeof(v)));
    assert_non_null(strstr(v, "Authorization"));
    assert_non_null(strstr(v, "Content-Type"));
    assert_non_null(strstr(v, "Last-Event-ID"));
    assert_non_null(strstr(v, "Idempotency-Key"));
    assert_non_null(ts_resp_header(&r, "Access-Control-Allow-Methods", v, sizeof(v)));
    assert_non_null(strstr(v, "POST"));
    assert_non_null(strstr(v, "DELETE"));
    ts_resp_free(&r);

    static const char *const shop[] = {"Origin: http://SHOP.example", NULL};
    r = req("GET", "/items/1", NULL, NULL, NULL, shop);
    assert_int_equal(r.status, 200);
    assert_string_equal(ts_resp_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)),
                        "http://SHOP.example");
    assert_non_null(ts_resp_header(&r, "Access-Control-Expose-Headers", v, sizeof(v)));
    assert_string_equal(ts_resp_header(&r, "Vary", v, sizeof(v)), "Origin");
    ts_resp_free(&r);

    /* Any other origin: no allow header on the preflight or the answer. */
    static const char *const evil_pre[] = {"Origin: https://evil.example",
                                           "Access-Control-Request-Method: DELETE", NULL};
    r = req("OPTIONS", "/items/1", NULL, NULL, NULL, evil_pre);
    assert_int_equal(r.status, 204);
    assert_null(ts_resp_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)));
    assert_null(ts_resp_header(&r, "Access-Control-Allow-Methods", v, sizeof(v)));
    assert_null(ts_resp_header(&r, "Access-Control-Allow-Headers", v, sizeof(v)));
    ts_resp_free(&r);
    static const char *const evil[] = {"Origin: http://shop.example.evil.example", NULL};
    r = req("GET", "/items/1", NULL, NULL, NULL, evil);
    assert_int_equal(r.status, 200);
    assert_null(ts_resp_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)));
    assert_string_equal(ts_resp_header(&r, "Vary", v, sizeof(v)), "Origin");
    ts_resp_free(&r);
    r = get("/items/1"); /* no Origin: not a cross-origin call */
    assert_null(ts_resp_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)));
    ts_resp_free(&r);

    /* "*" only when configured, and then literally. */
    td_http_opts_t opts = {.service = "anycors",
                           .addr = "127.0.0.1",
                           .routes = routes,
                           .route_cnt = TD_ARRAY_SIZE(routes),
                           .cors_origins = " http://a.example , * "};
    char err[256];
    td_http_t *any = td_http_start(&opts, err, sizeof(err));
    assert_non_null(any);
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/items", td_http_port(any));
    r = ts_http("OPTIONS", url, NULL, NULL, NULL, evil_pre);
    assert_int_equal(r.status, 204);
    assert_string_equal(ts_resp_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)), "*");
    assert_non_null(ts_resp_header(&r, "Access-Control-Allow-Methods", v, sizeof(v)));
    ts_resp_free(&r);
    td_http_stop(any);

    /* A server without CORS neither answers preflights nor adds the header. */
    opts = (td_http_opts_t){.service = "nocors",
                            .addr = "127.0.0.1",
                            .routes = routes,
                            .route_cnt = TD_ARRAY_SIZE(routes)};
    td_http_t *plain = td_http_start(&opts, err, sizeof(err));
    assert_non_null(plain);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/items", td_http_port(plain));
    r = ts_http("OPTIONS", url, NULL, NULL, NULL, pre);
    assert_error(&r, 405, "method_not_allowed");
    assert_null(ts_resp_header(&r, "Access-Control-Allow-Origin", v, sizeof(v)));
    ts_resp_free(&r);
    td_http_stop(plain);
}

static void test_request_id_and_trace(void **state)
{
    (void)state;
    static const char *const with_id[] = {"X-Request-Id: 3f2b8c1e-9d4a-4b7e-8f60-1a2b3c4d5e6f",
                                          "traceparent: "
                                          "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                          NULL};
    ts_resp_t r = req("GET", "/items/1", NULL, NULL, NULL, with_id);
    char v[128];
    assert_string_equal(ts_resp_header(&r, "X-Request-Id", v, sizeof(v)),
                        "3f2b8c1e-9d4a-4b7e-8f60-1a2b3c4d5e6f");
    assert_non_null(ts_resp_header(&r, "traceparent", v, sizeof(v)));
    assert_int_equal(strlen(v), TD_TRACEPARENT_LEN);
    assert_true(strncmp(v, "00-4bf92f3577b34da6a3ce929d0e0e4736-", 36) == 0);
    assert_true(strncmp(v + 36, "00f067aa0ba902b7", 16) != 0); /* a child span */
    ts_resp_free(&r);

    static const char *const bad_id[] = {"X-Request-Id: <script>", "traceparent: 00-zz", NULL};
    r = req("GET", "/items/1", NULL, NULL, NULL, bad_id);
    assert_non_null(ts_resp_header(&r, "X-Request-Id", v, sizeof(v)));
    assert_true(td_uuid_valid(v));
    assert_non_null(ts_resp_header(&r, "traceparent", v, sizeof(v)));
    td_trace_t t;
    assert_int_equal(td_trace_parse(v, &t, NULL, 0), 0);
    ts_resp_free(&r);

    /* Errors carry them too. */
    r = get("/nope");
    assert_non_null(ts_resp_header(&r, "X-Request-Id", v, sizeof(v)));
    assert_true(td_uuid_valid(v));
    ts_resp_free(&r);
}

static bool log_has(void *arg)
{
    const char *needle = arg;
    char *text = td_read_file(log_path, NULL);
    bool found = text && strstr(text, needle);
    free(text);
    return found;
}

static void test_request_log(void **state)
{
    (void)state;
    static const char *const hdr[] = {"X-Request-Id: 11111111-2222-4333-8444-555555555555", NULL};
    ts_resp_t r = req("GET", "/items/logged", NULL, NULL, NULL, hdr);
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);
    assert_true(ts_wait_until(log_has, "11111111-2222-4333-8444-555555555555", 5000));

    char *text = td_read_file(log_path, NULL);
    assert_non_null(text);
    char *hit = strstr(text, "11111111-2222-4333-8444-555555555555");
    char *start = hit;
    while (start > text && start[-1] != '\n') start--;
    char *end = strchr(hit, '\n');
    assert_non_null(end);
    json_t *line = json_loadb(start, (size_t)(end - start), 0, NULL);
    assert_non_null(line);
    assert_string_equal(json_string_value(json_object_get(line, "method")), "GET");
    assert_string_equal(json_string_value(json_object_get(line, "path")), "/items/logged");
    assert_string_equal(json_string_value(json_object_get(line, "route")), "/items/{id}");
    assert_int_equal(json_integer_value(json_object_get(line, "status")), 200);
    assert_true(json_is_number(json_object_get(line, "duration_ms")));
    assert_string_equal(json_string_value(json_object_get(line, "ip")), "127.0.0.1");
    assert_string_equal(json_string_value(json_object_get(line, "level")), "info");
    json_decref(line);
    free(text);

    /* Exactly one line for that request. */
    text = td_read_file(log_path, NULL);
    hit = strstr(text, "11111111-2222-4333-8444-555555555555");
    assert_null(strstr(hit + 1, "11111111-2222-4333-8444-555555555555"));
    free(text);

    /* Probes are logged at debug level: not at info. */
    static const char *const probe[] = {"X-Request-Id: 99999999-2222-4333-8444-555555555555", NULL};
    r = req("GET", "/healthz", NULL, NULL, NULL, probe);
    ts_resp_free(&r);
    /* and a 500 is a warning */
    static const char *const bug[] = {"X-Request-Id: 77777777-2222-4333-8444-555555555555", NULL};
    r = req("GET", "/nothing", NULL, NULL, NULL, bug);
    ts_resp_free(&r);
    assert_true(ts_wait_until(log_has, "77777777-2222-4333-8444-555555555555", 5000));
    assert_false(log_has("99999999-2222-4333-8444-555555555555"));
    text = td_read_file(log_path, NULL);
    hit = strstr(text, "77777777-2222-4333-8444-555555555555");
    start = hit;
    while (start > text && start[-1] != '\n') start--;
    assert_true(strstr(start, "\"level\":\"warn\"") < strchr(hit, '\n'));
    assert_non_null(strstr(start, "\"level\":\"warn\""));
    free(text);
}

static void test_hostile_requests(void **state)
{
    (void)state;
    const char *raw[] = {
        "\x00\x01\x02\x03\r\n\r\n",
        "GET\r\n\r\n",
        "GET / HTTP/9.9\r\n\r\n",
        "GET * HTTP/1.1\r\nHost: x\r\n\r\n",
        "CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET http://evil/items/1 HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /items/1 HTTP/1.1\r\nno colon here\r\n\r\n",
        "POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        "POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        "POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
        "POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n{\"a\"",
        "POST /items HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "GET /items/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /items/%ff%fe HTTP/1.1\r\nHost: x\r\nX-Request-Id: \xff\r\n\r\n",
        "GET /items/1?%00=%00&q=%zz&&==& HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n\r\n",
        "GET /me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer a.b.c\r\n\r\n",
        "GET /me HTTP/1.1\r\nHost: x\r\nAuthorization: \r\n\r\n",
        "GET /me HTTP/1.1\r\nHost: x\r\ntraceparent: 00-00000000000000000000000000000000-"
        "0000000000000000-01\r\n\r\n",
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(raw); i++) {
        size_t len = i == 0 ? 8 : strlen(raw[i]);
        /* Some are incomplete on purpose and get no answer: short wait. */
        char *out = raw_exchange(raw[i], len, true, 300);
        free(out);
    }

    /* The oversize declared body is refused before it is sent. */
    const char *oversize = "POST /items HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
    char *out = raw_exchange(oversize, strlen(oversize), false, 3000);
    assert_non_null(strstr(out, " 413 "));
    free(out);

    /* A path that is not UTF-8, raw or escaped, is a clean 400. */
    const char *bad_paths[] = {"/items/\xff\xfe", "/items/%ff%fe", "/items/%C0%AF",
                               "/items/%ED%A0%80"};
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad_paths); i++) {
        char *rq =
            td_asprintf("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", bad_paths[i]);
        out = raw_exchange(rq, strlen(rq), false, 3000);
        assert_non_null(strstr(out, " 400 "));
        assert_non_null(strstr(out, "invalid_argument"));
        free(out);
        free(rq);
    }

    /* Query values that are not UTF-8 read as absent. */
    ts_resp_t r = get("/items/1?q=%ff");
    assert_int_equal(r.status, 200);
    assert_null(json_object_get(r.json, "q"));
    ts_resp_free(&r);

    /* A huge header and a huge URL. */
    size_t big = 200000;
    char *huge = td_malloc(big + 64);
    int n = snprintf(huge, 64, "GET /items/");
    memset(huge + n, 'a', big);
    memcpy(huge + n + big, " HTTP/1.1\r\nHost: x\r\n\r\n", 23);
    out = raw_exchange(huge, (size_t)n + big + 22, false, 3000);
    free(out);
    n = snprintf(huge, 64, "GET / HTTP/1.1\r\nX-Big: ");
    memset(huge + n, 'b', big);
    memcpy(huge + n + big, "\r\n\r\n", 5);
    out = raw_exchange(huge, (size_t)n + big + 4, false, 3000);
    free(out);
    free(huge);

    /* Random bytes, seeded for repeatability. */
    srand(10);
    for (int round = 0; round < 100; round++) {
        char buf[512];
        size_t len = (size_t)(rand() % (int)sizeof(buf)) + 1;
        for (size_t i = 0; i < len; i++) buf[i] = (char)(rand() & 0xff);
        if (round % 2 == 0) memcpy(buf, "POST /items HTTP/1.1\r\n", len < 22 ? len : 22);
        out = raw_exchange(buf, len, true, 20);
        free(out);
    }

    /* Many requests on one keep-alive connection, pipelined. */
    char *pipe = td_malloc(100 * 64);
    size_t off = 0;
    for (int i = 0; i < 100; i++)
        off += (size_t)sprintf(pipe + off, "GET /items/%d HTTP/1.1\r\nHost: x\r\n%s\r\n", i,
                               i == 99 ? "Connection: close\r\n" : "");
    out = raw_exchange(pipe, off, true, 5000);
    assert_non_null(strstr(out, "\"id\":\"99\""));
    free(out);
    free(pipe);

    assert_alive();
}

static void *hammer(void *arg)
{
    (void)arg;
    for (int i = 0; i < 50; i++) {
        char path[64];
        snprintf(path, sizeof(path), "/items/%d", i);
        ts_resp_t r = get(path);
        if (r.status != 200) {
            ts_resp_free(&r);
            return (void *)1;
        }
        ts_resp_free(&r);
    }
    return NULL;
}

/* ---- SSE handover ---- */

/* A connection with request sent; rcvbuf > 0 sets a small receive buffer
 * first (a reader that will not keep up). */
static int sse_connect(const char *request, int rcvbuf)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    if (rcvbuf > 0) setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)td_http_port(srv))};
    inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    size_t len = strlen(request);
    assert_int_equal(send(fd, request, len, MSG_NOSIGNAL), (ssize_t)len);
    return fd;
}

typedef struct rbuf {
    char *p;
    size_t len;
    bool eof;
} rbuf_t;

/* Reads into b until needle is in it, the peer closes, or ms pass. */
static bool read_until(int fd, rbuf_t *b, const char *needle, int ms)
{
    int64_t deadline = td_mono_ms() + ms;
    for (;;) {
        if (needle && b->p && strstr(b->p, needle)) return true;
        if (b->eof) return needle == NULL;
        int64_t left = deadline - td_mono_ms();
        if (left <= 0) return false;
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        if (poll(&pfd, 1, (int)left) <= 0) continue;
        char buf[16384];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) {
            b->eof = true;
            continue;
        }
        b->p = td_realloc(b->p, b->len + (size_t)n + 1);
        memcpy(b->p + b->len, buf, (size_t)n);
        b->len += (size_t)n;
        b->p[b->len] = '\0';
    }
}

static bool no_streams(void *arg)
{
    (void)arg;
    return td_sse_count(hub) == 0;
}

static void test_sse_handover(void **state)
{
    (void)state;
    /* HTTP/1.1: the layer's head (its headers and CORS included), then
     * chunks written by the hub. */
    int fd = sse_connect("GET /sse HTTP/1.1\r\nHost: x\r\nOrigin: http://shop.example\r\n"
                         "X-Request-Id: 3f2b8c1e-9d4a-4b7e-8f60-1a2b3c4d5e6f\r\n\r\n",
                         0);
    rbuf_t b = {0};
    assert_true(read_until(fd, &b, "\r\n\r\nd\r\nretry: 1000\n\n\r\n", 5000));
    assert_true(strncmp(b.p, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_non_null(strstr(b.p, "\r\nContent-Type: text/event-stream; charset=utf-8\r\n"));
    assert_non_null(strstr(b.p, "\r\nTransfer-Encoding: chunked\r\n"));
    assert_non_null(strstr(b.p, "\r\nCache-Control: no-cache\r\n"));
    assert_non_null(strstr(b.p, "\r\nDate: "));
    assert_non_null(strstr(b.p, "\r\nX-Request-Id: 3f2b8c1e-9d4a-4b7e-8f60-1a2b3c4d5e6f\r\n"));
    assert_non_null(strstr(b.p, "\r\ntraceparent: 00-"));
    assert_non_null(strstr(b.p, "\r\nAccess-Control-Allow-Origin: http://shop.example\r\n"));
    assert_null(strstr(b.p, "Content-Length"));
    assert_int_equal(td_sse_count(hub), 1);
    assert_int_equal(td_sse_publish(hub, "anon", "n", "1", "hello"), 1);
    assert_true(read_until(fd, &b, "1c\r\nid: 1\nevent: n\ndata: hello\n\n\r\n", 5000));
    /* The server is fine meanwhile: libmicrohttpd forgot the socket. */
    assert_alive();
    /* The client hangs up: the hub sees it at once, without a frame. */
    close(fd);
    assert_true(ts_wait_until(no_streams, NULL, 5000));
    free(b.p);

    /* HTTP/1.0: no chunks, the body runs until the connection closes. */
    fd = sse_connect("GET /sse HTTP/1.0\r\n\r\n", 0);
    memset(&b, 0, sizeof(b));
    assert_true(read_until(fd, &b, "\r\n\r\nretry: 1000\n\n", 5000));
    assert_non_null(strstr(b.p, "\r\nConnection: close\r\n"));
    assert_null(strstr(b.p, "Transfer-Encoding"));
    td_sse_publish(hub, "anon", NULL, NULL, "raw");
    assert_true(read_until(fd, &b, "retry: 1000\n\ndata: raw\n\n", 5000));
    close(fd);
    assert_true(ts_wait_until(no_streams, NULL, 5000));
    free(b.p);

    /* HEAD: the head of the 200, no stream. */
    static const char head_req[] = "HEAD /sse HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    char *out = raw_exchange(head_req, sizeof(head_req) - 1, false, 2000);
    assert_true(strncmp(out, "HTTP/1.1 200", 12) == 0);
    assert_non_null(strstr(out, "text/event-stream"));
    assert_null(strstr(out, "retry:"));
    free(out);
    assert_int_equal(td_sse_count(hub), 0);
}

static void test_sse_cap_per_user(void **state)
{
    (void)state;
    char *tok = token("customer", td_now_ms() / 1000 + 3600);
    char *request = td_asprintf("GET /sse?token=%s HTTP/1.1\r\nHost: x\r\n\r\n", tok);
    int fds[SSE_CAP];
    for (int i = 0; i < SSE_CAP; i++) {
        fds[i] = sse_connect(request, 0);
        rbuf_t b = {0};
        assert_true(read_until(fds[i], &b, "retry: 1000", 5000));
        free(b.p);
    }
    /* One more of the same user: 429 rate_limited, with Retry-After. */
    ts_resp_t r = req("GET", "/sse", tok, NULL, NULL, NULL);
    assert_error(&r, 429, "rate_limited");
    char v[64];
    assert_non_null(ts_resp_header(&r, "Retry-After", v, sizeof(v)));
    assert_true(atoi(v) > 0);
    ts_resp_free(&r);
    /* Anonymous streams are not that user's. */
    int anon = sse_connect("GET /sse HTTP/1.1\r\nHost: x\r\n\r\n", 0);
    rbuf_t b = {0};
    assert_true(read_until(anon, &b, "retry: 1000", 5000));
    free(b.p);
    close(anon);
    /* One closes: its place is free again. */
    close(fds[0]);
    int64_t deadline = td_mono_ms() + 5000;
    long status = 0;
    while (td_mono_ms() < deadline) {
        fds[0] = sse_connect(request, 0);
        memset(&b, 0, sizeof(b));
        assert_true(read_until(fds[0], &b, "\r\n\r\n", 5000));
        status = strtol(b.p + 9, NULL, 10);
        free(b.p);
        if (status == 200) break;
        close(fds[0]);
        td_sleep_ms(50);
    }
    assert_int_equal(status, 200);
    for (int i = 0; i < SSE_CAP; i++) close(fds[i]);
    assert_true(ts_wait_until(no_streams, NULL, 5000));
    free(request);
    free(tok);
}

static void test_sse_ends_at_token_expiry(void **state)
{
    (void)state;
    int64_t exp = td_now_ms() / 1000 + 2;
    char *tok = token("customer", exp);
    char *request =
        td_asprintf("GET /sse HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tok);
    int fd = sse_connect(request, 0);
    rbuf_t b = {0};
    assert_true(read_until(fd, &b, "retry: 1000", 5000));
    td_sse_publish(hub, USER_ID, "n", "1", "before");
    assert_true(read_until(fd, &b, "data: before", 5000));
    /* Ends within a tick of exp: the comment, the last chunk, the close. */
    assert_true(read_until(fd, &b, "0\r\n\r\n", 6000));
    assert_true(td_now_ms() >= exp * 1000);
    assert_non_null(strstr(b.p, ": token expired\n\n"));
    assert_true(read_until(fd, &b, NULL, 3000)); /* and the close */
    close(fd);
    assert_true(ts_wait_until(no_streams, NULL, 5000));
    free(b.p);
    free(request);
    free(tok);
}

static void test_sse_slow_reader_is_cut(void **state)
{
    (void)state;
    int fd = sse_connect("GET /sse HTTP/1.1\r\nHost: x\r\n\r\n", 4096);
    rbuf_t b = {0};
    assert_true(read_until(fd, &b, "retry: 1000", 5000));
    free(b.p);
    memset(&b, 0, sizeof(b));
    double cut_before = td_metric_value("tidings_sse_slow_readers_total", NULL);
    char *big = td_malloc(32 * 1024);
    memset(big, 'z', 32 * 1024 - 1);
    big[32 * 1024 - 1] = '\0';
    /* The client reads nothing: the kernel's buffers fill, then the
     * stream's queue, then it is cut. */
    int sent = 0;
    while (sent < 1000 && td_metric_value("tidings_sse_slow_readers_total", NULL) == cut_before) {
        char id[16];
        snprintf(id, sizeof(id), "%d", ++sent);
        td_sse_publish(hub, "anon", "n", id, big);
        td_sleep_ms(2);
    }
    free(big);
    assert_true(td_metric_value("tidings_sse_slow_readers_total", NULL) > cut_before);
    print_message("slow reader cut after %d frames of 32 KiB\n", sent);
    /* Dropped within its drain time even though it still reads nothing. */
    assert_true(ts_wait_until(no_streams, NULL, TD_SSE_DRAIN_MS + 3000));
    /* What reached the client is whole frames 1..k in order (the last one
     * may be cut short), never a gap. */
    assert_true(read_until(fd, &b, NULL, 10000));
    int next = 1;
    for (const char *p = b.p; (p = strstr(p, "id: ")); p += 4) {
        int id = atoi(p + 4);
        assert_int_equal(id, next);
        next++;
    }
    assert_true(next > 1 && next <= sent + 1);
    print_message("the client got frames 1..%d of %d before the cut\n", next - 1, sent);
    close(fd);
    free(b.p);
}

static void test_concurrent_clients(void **state)
{
    (void)state;
    pthread_t th[8];
    for (int i = 0; i < 8; i++) assert_int_equal(pthread_create(&th[i], NULL, hammer, NULL), 0);
    for (int i = 0; i < 8; i++) {
        void *rv;
        pthread_join(th[i], &rv);
        assert_null(rv);
    }
}

static void test_start_errors(void **state)
{
    (void)state;
    char err[256] = "";
    td_http_opts_t opts = {.service = "dup", .addr = "127.0.0.1", .port = td_http_port(srv)};
    assert_null(td_http_start(&opts, err, sizeof(err)));
    assert_non_null(strstr(err, "in use"));

    static const td_route_t bad[] = {
        {"GET", "no-slash", get_item, TD_AUTH_PUBLIC, TD_BODY_NONE, 0}};
    opts.port = 0;
    opts.routes = bad;
    opts.route_cnt = 1;
    err[0] = '\0';
    assert_null(td_http_start(&opts, err, sizeof(err)));
    assert_true(err[0] != '\0');

    static const td_route_t too_many[] = {
        {"GET", "/{a}/{b}/{c}/{d}/{e}", get_item, TD_AUTH_PUBLIC, TD_BODY_NONE, 0}};
    opts.routes = too_many;
    err[0] = '\0';
    assert_null(td_http_start(&opts, err, sizeof(err)));
    assert_true(err[0] != '\0');

    opts.routes = NULL;
    opts.route_cnt = 0;
    opts.addr = "not-an-address";
    err[0] = '\0';
    assert_null(td_http_start(&opts, err, sizeof(err)));
    assert_true(err[0] != '\0');
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routing_and_params),
        cmocka_unit_test(test_not_found_and_method),
        cmocka_unit_test(test_body_limits),
        cmocka_unit_test(test_body_checks),
        cmocka_unit_test(test_handler_errors),
        cmocka_unit_test(test_builtins),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_declared_auth),
        cmocka_unit_test(test_cors),
        cmocka_unit_test(test_request_id_and_trace),
        cmocka_unit_test(test_request_log),
        cmocka_unit_test(test_hostile_requests),
        cmocka_unit_test(test_sse_handover),
        cmocka_unit_test(test_sse_cap_per_user),
        cmocka_unit_test(test_sse_ends_at_token_expiry),
        cmocka_unit_test(test_sse_slow_reader_is_cut),
        cmocka_unit_test(test_concurrent_clients),
        cmocka_unit_test(test_start_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
