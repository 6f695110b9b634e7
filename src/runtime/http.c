/* The HTTP layer of every service, over libmicrohttpd (a pool of worker
 * threads, each with its own epoll loop). libmicrohttpd calls us several
 * times per request: once when the headers are in, once per chunk of body
 * and once at the end. A request's state is made in the URI-log callback,
 * the only place that sees the raw URI before libmicrohttpd decodes it, so
 * that "%2F" inside a path parameter stays a parameter instead of turning
 * into a path separator. The body is gathered (at most 64 KiB; a bigger
 * declared Content-Length is refused before it is read), then the route is
 * matched, the body checked as a JSON object and the handler called. The
 * request-completed callback frees the state and writes the one log line
 * and the metrics, so a request that streams (SSE) is logged when it ends.
 *
 * Nothing a client sends may crash this file: every outside string is
 * length-checked and decoded with explicit failure paths. */
#include "tidings/http.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_internal.h"
#include "tidings/idem.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
#include "tidings/uuid.h"

#define DEFAULT_THREADS  4
#define CONNECTION_LIMIT 16000
/* Seconds a connection may send nothing while its request is incomplete
 * (SPEC section 5), or sit idle between keep-alive requests. Handed-over
 * streams (td_resp_takeover) are no longer libmicrohttpd's and keep their
 * own keepalive-based timeout. */
#define CONNECTION_TIMEOUT 30
/* Body bytes we are willing to read and throw away after the limit was
 * passed (chunked uploads have no Content-Length to refuse early), so the
 * client still gets its 413; past this the connection is simply closed. */
#define DISCARD_MAX (8u << 20)

static double elapsed_s(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

static const char *method_label(const char *m)
{
    static const char *const known[] = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"};
    for (size_t i = 0; m && i < TD_ARRAY_SIZE(known); i++)
        if (strcmp(m, known[i]) == 0) return known[i];
    return "OTHER"; /* methods are client text: keep label cardinality bounded */
}

/* Fills the parts of req known once the headers are in. */
static void req_prepare(request_state_t *st, struct MHD_Connection *conn, const char *method)
{
    td_http_t *http = st->http;
    td_req_t *req = &st->req;
    st->method = td_strdup(method);
    req->method = st->method;
    req->conn = conn;
    req->ctx = http->ctx;
    req->secret = http->secret;
    req->secret_len = http->secret_len;

    const char *q = strchr(st->raw_uri, '?');
    size_t plen = q ? (size_t)(q - st->raw_uri) : strlen(st->raw_uri);
    st->path = td__http_url_decode(st->raw_uri, plen);
    if (!st->path) st->path = td_strndup(st->raw_uri, plen); /* refused in dispatch */
    req->path = st->path;

    snprintf(req->client_ip, sizeof(req->client_ip), "unknown");
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (ci && ci->client_addr) {
        const struct sockaddr *sa = ci->client_addr;
        if (sa->sa_family == AF_INET)
            inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr,
                      req->client_ip, sizeof(req->client_ip));
        else if (sa->sa_family == AF_INET6)
            inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr,
                      req->client_ip, sizeof(req->client_ip));
    }

    const char *rid = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "X-Request-Id");
    if (rid && td_uuid_valid(rid))
        snprintf(req->request_id, sizeof(req->request_id), "%s", rid);
    else
        td_uuid_new(req->request_id);

    const char *tp = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "traceparent");
    td_trace_t parent;
    if (tp && td_trace_parse(tp, &parent, NULL, 0) == 0)
        td_trace_child(&parent, &req->trace);
    else
        td_trace_new(&req->trace);
}

static bool is_json_type(const char *ct)
{
    static const char want[] = "application/json";
    if (!ct) return false;
    while (*ct == ' ' || *ct == '\t') ct++;
    if (strncasecmp(ct, want, sizeof(want) - 1) != 0) return false;
    ct += sizeof(want) - 1;
    while (*ct == ' ' || *ct == '\t') ct++;
    return *ct == '\0' || *ct == ';';
}

/* Adds method to the comma-separated Allow list unless it is there. */
static void append_allow(char *allow, size_t len, const char *method)
{
    size_t ml = strlen(method);
    for (const char *p = allow; (p = strstr(p, method)) != NULL; p += ml)
        if ((p == allow || p[-1] == ' ') && (p[ml] == ',' || p[ml] == '\0')) return;
    size_t n = strlen(allow);
    snprintf(allow + n, len - n, "%s%s", n ? ", " : "", method);
}

static enum MHD_Result dispatch(request_state_t *st)
{
    td_http_t *http = st->http;
    td_req_t *req = &st->req;
    td_resp_t *resp = &st->resp;
    enum MHD_Result ret;

    if (http->cors && strcmp(req->method, "OPTIONS") == 0) {
        /* A preflight: the allow headers for an allowed origin only, so a
         * page of any other origin is refused by its browser. */
        td_resp_empty(resp, 204);
        if (td__cors_allowed(st)) {
            td_resp_header(resp, "Access-Control-Allow-Methods",
                           "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
            td_resp_header(resp, "Access-Control-Allow-Headers",
                           "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, "
                           "X-Request-Id, traceparent");
            td_resp_header(resp, "Access-Control-Max-Age", "600");
        }
        return td__http_send(st);
    }
    if (st->too_large)
        return td__http_send_error(st, 413, "request body is larger than 65536 bytes");

    const char *q = strchr(st->raw_uri, '?');
    size_t plen = q ? (size_t)(q - st->raw_uri) : strlen(st->raw_uri);
    path_segs_t ps;
    if (!td__path_split(st->raw_uri, plen, &ps)) {
        if (plen == 0 || st->raw_uri[0] != '/')
            return td__http_send_error(st, 404, "no such resource");
        return td__http_send_error(st, 400, "malformed URL path");
    }

    const route_t *found = NULL;
    char allow[128] = "";
    for (size_t i = 0; i < http->route_cnt; i++) {
        const route_t *r = &http->routes[i];
        if (!td__route_match(r, &ps, NULL)) continue;
        if (td__route_method_matches(r->method, req->method)) {
            found = r;
            break;
        }
        append_allow(allow, sizeof(allow), r->method);
        if (strcmp(r->method, "GET") == 0) append_allow(allow, sizeof(allow), "HEAD");
    }
    if (!found && allow[0]) {
        td__path_free(&ps);
        td_resp_header(resp, "Allow", allow);
        char msg[200];
        snprintf(msg, sizeof(msg), "method %.16s not allowed here (allowed: %s)", req->method,
                 allow);
        return td__http_send_error(st, 405, msg);
    }
    if (!found) {
        td__path_free(&ps);
        return td__http_send_error(st, 404, "no such resource");
    }
    td__route_match(found, &ps, req);
    td__path_free(&ps);
    req->route = found->pattern;
    st->route_label = found->pattern;

    if (st->body_len > 0 && found->body == TD_BODY_RAW) {
        req->body_raw = st->body;
        req->body_len = st->body_len;
    } else if (st->body_len > 0) {
        if (!is_json_type(td_req_header(req, "Content-Type")))
            return td__http_send_error(st, 415, "request body must be application/json");
        json_error_t jerr;
        json_t *j =
            json_loadb(st->body, st->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (!j) {
            char msg[300];
            snprintf(msg, sizeof(msg), "request body is not valid JSON: %s", jerr.text);
            return td__http_send_error(st, 400, msg);
        }
        if (!json_is_object(j)) {
            json_decref(j);
            return td__http_send_error(st, 400, "request body must be a JSON object");
        }
        req->body = j;
        req->body_raw = st->body;
        req->body_len = st->body_len;
    }

    if (found->builtin != BUILTIN_NONE) {
        td__http_builtin_run(http, found->builtin, req, resp);
    } else if (!td__idem_begin(st)) {
        if (td__route_admit(found, req, resp)) found->fn(req, resp);
        if (st->deferred) return MHD_YES; /* answered by td_deferred_done */
        td__idem_end(st);
    }

    if (resp->status == 0) {
        td_error("http: bug: handler for %s %s set no response", req->method, found->pattern);
        return td__http_send_error(st, 500, "internal error");
    }
    ret = td__http_send(st);
    return ret;
}

/* ---- deferred responses ---- */

static request_state_t *state_of(td_req_t *req)
{
    return (request_state_t *)(void *)((char *)req - offsetof(request_state_t, req));
}

td_deferred_t *td_req_defer(td_req_t *req)
{
    request_state_t *st = state_of(req);
    assert(!st->deferred && !st->responded);
    st->deferred = true;
    /* The work goes to another thread, which holds its units with
     * td_deferred_begin. Nothing of it may run on this one. */
    if (st->idem) {
        assert(!td__db_in_unit(st->http->idem_db));
        td__db_hold(NULL);
    }
    atomic_init(&st->deferred_done, false);
    atomic_fetch_add(&st->http->deferred, 1);
    MHD_suspend_connection(req->conn);
    return (td_deferred_t *)st;
}

td_req_t *td_deferred_req(td_deferred_t *d)
{
    return &((request_state_t *)(void *)d)->req;
}

td_resp_t *td_deferred_resp(td_deferred_t *d)
{
    return &((request_state_t *)(void *)d)->resp;
}

void td_deferred_begin(td_deferred_t *d)
{
    request_state_t *st = (request_state_t *)(void *)d;
    if (st->idem) td__db_hold(st->http->idem_db);
}

void td_deferred_done(td_deferred_t *d)
{
    request_state_t *st = (request_state_t *)(void *)d;
    td__idem_end(st);
    struct MHD_Connection *conn = st->req.conn;
    atomic_store(&st->deferred_done, true);
    /* From here on libmicrohttpd owns st again (it may answer and free it
     * on its own thread before this call returns): conn was read first. */
    MHD_resume_connection(conn);
}

/* libmicrohttpd calls the handler again once a deferred request is
 * resumed: send what td_deferred_done left. */
static enum MHD_Result deferred_answer(request_state_t *st)
{
    if (!atomic_load(&st->deferred_done)) return MHD_YES;
    st->deferred = false;
    atomic_fetch_sub(&st->http->deferred, 1);
    if (st->resp.status == 0) {
        td_error("http: bug: deferred %s %s set no response", st->req.method, st->route_label);
        return td__http_send_error(st, 500, "internal error");
    }
    return td__http_send(st);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    td_http_t *http = cls;
    request_state_t *st = *con_cls;
    if (!st) {
        /* Not made by the URI-log callback: cannot happen with the
         * options we pass, but cost nothing to survive. */
        st = td_calloc(1, sizeof(*st));
        st->http = http;
        st->raw_uri = td_strdup(url);
        clock_gettime(CLOCK_MONOTONIC, &st->start);
        st->route_label = "unmatched";
        st->counted = true;
        atomic_fetch_add(&http->inflight, 1);
        *con_cls = st;
    }
    if (st->responded) {
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (!st->started) {
        st->started = true;
        st->http10 = version && strcmp(version, MHD_HTTP_VERSION_1_0) == 0;
        req_prepare(st, conn, method);
        /* Refuse a declared oversize body before reading any of it. */
        const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, "Content-Length");
        if (cl) {
            char *end;
            errno = 0;
            unsigned long long n = strtoull(cl, &end, 10);
            if (errno == ERANGE || n > TD_HTTP_MAX_BODY) {
                st->too_large = true;
                return td__http_send_error(st, 413, "request body is larger than 65536 bytes");
            }
        }
        return MHD_YES;
    }
    if (*upload_data_size > 0) {
        size_t n = *upload_data_size;
        *upload_data_size = 0;
        if (st->too_large) {
            st->discarded += n;
            return st->discarded > DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        if (st->body_len + n > TD_HTTP_MAX_BODY) {
            st->too_large = true;
            free(st->body);
            st->body = NULL;
            st->body_len = 0;
            st->discarded = n;
            return MHD_YES;
        }
        st->body = td_realloc(st->body, st->body_len + n + 1);
        memcpy(st->body + st->body_len, upload_data, n);
        st->body_len += n;
        st->body[st->body_len] = '\0';
        return MHD_YES;
    }
    if (st->deferred) return deferred_answer(st);
    return dispatch(st);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    td_http_t *http = cls;
    (void)conn;
    request_state_t *st = td_calloc(1, sizeof(*st));
    st->http = http;
    st->raw_uri = td_strdup(uri ? uri : "");
    clock_gettime(CLOCK_MONOTONIC, &st->start);
    st->route_label = "unmatched";
    st->counted = true;
    atomic_fetch_add(&http->inflight, 1);
    return st;
}

static void state_free(request_state_t *st)
{
    td_req_t *req = &st->req;
    td__idem_free(st->http, st->idem);
    for (size_t i = 0; i < req->param_cnt; i++) free(req->param_values[i]);
    json_decref(req->body);
    td__resp_free(&st->resp);
    free(st->body);
    free(st->method);
    free(st->path);
    free(st->raw_uri);
    free(st);
}

static void log_request(request_state_t *st, double seconds)
{
    const char *mlabel = method_label(st->method);
    char status[8];
    snprintf(status, sizeof(status), "%d", st->status);
    char labels[512];
    td_metric_labels(labels, sizeof(labels), "method", mlabel, "route", st->route_label, "status",
                     status, NULL);
    td_metric_inc("tidings_http_requests_total", labels);
    td_metric_labels(labels, sizeof(labels), "method", mlabel, "route", st->route_label, NULL);
    td_metric_observe("tidings_http_request_duration_seconds", labels, seconds);

    const char *path = st->path ? st->path : "";
    /* Probes come every few seconds: at info they would drown the log, and
     * a 503 from /readyz is an answer, not a server fault. */
    int level = TD_LOG_INFO;
    if (strcmp(path, "/healthz") == 0 || strcmp(path, "/readyz") == 0 ||
        strcmp(path, "/metrics") == 0)
        level = TD_LOG_DEBUG;
    else if (st->status >= 500)
        level = TD_LOG_WARN;
    if (level < td_log_level()) return;

    char trace_id[33];
    td_trace_id_hex(&st->req.trace, trace_id);
    double ms = round(seconds * 1e6) / 1e3;
    json_t *fields = json_object();
    json_object_set_new(fields, "method", td__http_text_field(st->method ? st->method : ""));
    json_object_set_new(fields, "path", td__http_text_field(path));
    json_object_set_new(fields, "route", json_string(st->route_label));
    json_object_set_new(fields, "status", json_integer(st->status));
    json_object_set_new(fields, "duration_ms", json_real(ms));
    json_object_set_new(fields, "request_id", json_string(st->req.request_id));
    json_object_set_new(fields, "ip", json_string(st->req.client_ip));
    json_object_set_new(fields, "trace_id", json_string(trace_id));
    td_log_fields(level, fields, "%s %s %d", mlabel, path, st->status);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    td_http_t *http = cls;
    request_state_t *st = *con_cls;
    (void)conn;
    if (!st) return;
    *con_cls = NULL;
    if (st->responded) {
        log_request(st, elapsed_s(&st->start));
    } else if (st->started) {
        td_debug("http: %s request ended before a response (code %d)",
                 st->method ? st->method : "?", (int)toe);
    }
    if (st->counted) atomic_fetch_sub(&http->inflight, 1);
    if (st->deferred) atomic_fetch_sub(&http->deferred, 1); /* the client left meanwhile */
    state_free(st);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char buf[512];
    vsnprintf(buf, sizeof(buf), fmt, ap);
    size_t n = strlen(buf);
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
    /* libmicrohttpd reports every client that hangs up mid-request; that
     * is normal traffic, not something an operator must act on. */
    td_debug("http: libmicrohttpd: %s", buf);
}

/* ---- start and stop ---- */

static pthread_once_t nofile_once = PTHREAD_ONCE_INIT;

static void raise_nofile(void)
{
    /* Each SSE client holds a socket for as long as it listens. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            td_warn("http: cannot raise the open-file limit: %s", strerror(errno));
    }
}

/* Why binding addr failed, found by trying it the way libmicrohttpd does
 * (which only says "failed" on stderr). */
static void bind_failure(const struct sockaddr *sa, socklen_t salen, int port, const char *addr,
                         char *errstr, size_t errlen)
{
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int on = 1, err = 0;
    if (fd < 0) {
        err = errno;
    } else {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        if (bind(fd, sa, salen) != 0) err = errno;
        close(fd);
    }
    if (err == EADDRINUSE)
        td_errf(errstr, errlen, TD_EIO, "port %d is in use", port);
    else if (err == EACCES)
        td_errf(errstr, errlen, TD_EIO, "port %d needs privileges", port);
    else if (err == EADDRNOTAVAIL)
        td_errf(errstr, errlen, TD_EIO, "address %s is not available on this host", addr);
    else if (err)
        td_errf(errstr, errlen, TD_EIO, "cannot listen on %s:%d: %s", addr, port, strerror(err));
    else
        td_errf(errstr, errlen, TD_EIO, "cannot start the HTTP server on %s:%d", addr, port);
}

static void http_free(td_http_t *http)
{
    for (size_t i = 0; i < http->route_cnt; i++) td__route_free(&http->routes[i]);
    free(http->routes);
    for (size_t i = 0; i < http->cors_cnt; i++) free(http->cors_list[i]);
    free(http->cors_list);
    free(http->service);
    for (size_t i = 0; i < http->idem_cnt; i++) free(http->idem_running[i]);
    free(http->idem_running);
    pthread_mutex_destroy(&http->idem_mu);
    if (http->secret) OPENSSL_cleanse(http->secret, http->secret_len);
    free(http->secret);
    free(http);
}

td_http_t *td_http_start(const td_http_opts_t *opts, char *errstr, size_t errlen)
{
    td_http_t *http = td_calloc(1, sizeof(*http));
    const char *addr = opts->addr && opts->addr[0] ? opts->addr : "127.0.0.1";
    http->service = td_strdup(opts->service ? opts->service : "http");
    http->ctx = opts->ctx;
    http->idem_db = opts->idem_db;
    pthread_mutex_init(&http->idem_mu, NULL);
    http->ready = opts->ready;
    http->ready_arg = opts->ready_arg;
    td__cors_parse(http, opts->cors_origins);
    if (opts->secret && opts->secret_len) {
        http->secret = td_malloc(opts->secret_len);
        memcpy(http->secret, opts->secret, opts->secret_len);
        http->secret_len = opts->secret_len;
    }
    atomic_init(&http->inflight, 0);
    atomic_init(&http->deferred, 0);

    if (opts->port < 0 || opts->port > 65535) {
        td_errf(errstr, errlen, TD_EINVAL, "port %d is out of range", opts->port);
        goto fail;
    }

    static const struct {
        const char *path;
        enum builtin b;
    } builtins[] = {
        {"/healthz", BUILTIN_HEALTHZ},
        {"/readyz", BUILTIN_READYZ},
        {"/metrics", BUILTIN_METRICS},
    };
    size_t cnt = TD_ARRAY_SIZE(builtins) + opts->route_cnt;
    http->routes = td_calloc(cnt, sizeof(*http->routes));
    for (size_t i = 0; i < TD_ARRAY_SIZE(builtins); i++) {
        route_t *r = &http->routes[http->route_cnt++];
        td__route_compile(r, "GET", builtins[i].path, NULL, 0);
        r->builtin = builtins[i].b;
    }
    for (size_t i = 0; i < opts->route_cnt; i++) {
        const td_route_t *src = &opts->routes[i];
        route_t *r = &http->routes[http->route_cnt++];
        if (td__route_compile(r, src->method, src->pattern, errstr, errlen) != 0) goto fail;
        if (!src->fn) {
            td_errf(errstr, errlen, TD_EINVAL, "route %s %s has no handler", src->method,
                    src->pattern);
            goto fail;
        }
        r->fn = src->fn;
        r->auth = src->auth;
        r->body = src->body;
        r->flags = src->flags;
    }

    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    const struct sockaddr *sa;
    socklen_t salen;
    /* MHD_USE_TURBO: among its effects, no shutdown() before a close,
     * which a handed-over socket (td_resp_takeover) must not get. */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
                     MHD_USE_ITC | MHD_USE_ERROR_LOG | MHD_USE_TURBO;
    memset(&sin, 0, sizeof(sin));
    memset(&sin6, 0, sizeof(sin6));
    if (inet_pton(AF_INET, addr, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons((uint16_t)opts->port);
        sa = (const struct sockaddr *)&sin;
        salen = sizeof(sin);
    } else if (inet_pton(AF_INET6, addr, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons((uint16_t)opts->port);
        sa = (const struct sockaddr *)&sin6;
        salen = sizeof(sin6);
        flags |= MHD_USE_IPv6;
    } else {
        td_errf(errstr, errlen, TD_EINVAL, "listen address %s is not an IP address", addr);
        goto fail;
    }

    pthread_once(&nofile_once, raise_nofile);
    td_metric_describe("tidings_http_requests_total", "counter",
                       "HTTP requests answered, by method, route and status.");
    td_metric_describe("tidings_http_request_duration_seconds", "histogram",
                       "Time from request line to the end of the response, by method and route.");

    unsigned threads = opts->threads ? opts->threads : DEFAULT_THREADS;
    http->daemon = MHD_start_daemon(
        flags, (uint16_t)opts->port, NULL, NULL, on_request, http, MHD_OPTION_SOCK_ADDR, sa,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, http, MHD_OPTION_NOTIFY_COMPLETED, on_completed, http,
        MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, http, MHD_OPTION_THREAD_POOL_SIZE, threads,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTION_LIMIT, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)CONNECTION_TIMEOUT, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (!http->daemon) {
        bind_failure(sa, salen, opts->port, addr, errstr, errlen);
        goto fail;
    }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_BIND_PORT);
    http->port = di ? di->port : opts->port;
    td_info("%s: HTTP listening on %s:%d", http->service, addr, http->port);
    return http;

fail:
    http_free(http);
    return NULL;
}

int td_http_port(const td_http_t *http)
{
    return http->port;
}

void td_http_stop(td_http_t *http)
{
    if (!http) return;
    /* Stop accepting first, then give requests in flight a moment to be
     * answered; streams are not counted (they end when the daemon stops). */
    MHD_socket lfd = MHD_quiesce_daemon(http->daemon);
    int64_t deadline = td_mono_ms() + 5000;
    while (atomic_load(&http->inflight) > 0 && td_mono_ms() < deadline) td_sleep_ms(5);
    /* A suspended connection must be resumed before the daemon stops, and
     * each deferred request is answered by work already under way. */
    while (atomic_load(&http->deferred) > 0) td_sleep_ms(5);
    MHD_stop_daemon(http->daemon);
    if (lfd != MHD_INVALID_SOCKET) close(lfd);
    http_free(http);
}
