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

enum builtin { BUILTIN_NONE, BUILTIN_HEALTHZ, BUILTIN_READYZ, BUILTIN_METRICS };

/* A route with its pattern split into segments. */
typedef struct route {
    char *method;
    char *pattern;
    td_route_fn fn;
    bool form; /* td_http_opts_t.form_routes */
    enum builtin builtin;
    char **segs;    /* literal text, or the parameter name */
    bool *is_param; /* "{name}" */
    bool rest;      /* the last segment is "{*name}" */
    size_t seg_cnt;
} route_t;

struct td_http {
    struct MHD_Daemon *daemon;
    char *service;
    route_t *routes;
    size_t route_cnt;
    void *ctx;
    unsigned char *secret;
    size_t secret_len;
    td_ready_fn ready;
    void *ready_arg;
    bool cors;        /* CORS is on: cors_any or cors_list */
    bool cors_any;    /* "*" */
    char **cors_list; /* allowed origins */
    size_t cors_cnt;
    int port;
    atomic_int inflight; /* requests received and not yet answered */
    atomic_int deferred; /* suspended by td_req_defer and not yet answered */
    /* Idempotency-Key: the database of the stored answers (NULL: off) and
     * the keys whose first request runs now, "caller\nkey" each. */
    td_db_t *idem_db;
    pthread_mutex_t idem_mu;
    char **idem_running;
    size_t idem_cnt;
};

/* The Idempotency-Key of a request that runs its handler. */
typedef struct idem {
    char *caller; /* "user:<id>" or "ip:<addr>" */
    char *key;
    char *slot; /* its entry in idem_running */
    unsigned char hash[TD_IDEM_HASH];
} idem_t;

typedef struct header {
    char *name;
    char *value;
} header_t;

struct td_resp {
    int status;
    char *data; /* owned body */
    size_t len;
    char *ctype;
    struct MHD_Response *mhd;
    header_t *hdrs;
    size_t hdr_cnt;
    td_takeover_t takeover; /* set by td_resp_takeover until handed over */
    bool has_takeover;
};

/* One request, from the URI-log callback to the completed callback. */
typedef struct request_state {
    td_http_t *http;
    char *raw_uri; /* as sent, with the query */
    char *path;    /* decoded path, for req->path and the log */
    char *method;
    struct timespec start;
    bool started;              /* the access handler has seen the headers */
    bool responded;            /* a response was queued */
    bool counted;              /* holds one http->inflight */
    bool deferred;             /* td_req_defer suspended it; holds one http->deferred */
    atomic_bool deferred_done; /* td_deferred_done: the response is set */
    bool too_large;
    bool http10; /* the request line said HTTP/1.0 */
    size_t discarded;
    char *body;
    size_t body_len;
    int status; /* the status sent */
    const char *route_label;
    idem_t *idem; /* set while a keyed first request runs */
    td_req_t req;
    td_resp_t resp;
} request_state_t;

/* ---- small helpers ---- */

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into a new string. NULL when an escape is
 * broken or decodes to a NUL byte (which no C consumer could see). */
static char *url_decode(const char *s, size_t n)
{
    char *out = td_malloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            out[o++] = (char)(hi * 16 + lo);
            i += 2;
        } else if (s[i] == '\0') {
            free(out);
            return NULL;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

/* Strict UTF-8 (no overlong forms, no surrogates, at most U+10FFFF):
 * decoded paths and query values reach JSON, which accepts nothing else. */
static bool utf8_valid(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s) {
        unsigned c = *s;
        size_t n;
        unsigned min;
        if (c < 0x80) {
            s++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1;
            min = 0x80;
            c &= 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2;
            min = 0x800;
            c &= 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3;
            min = 0x10000;
            c &= 0x07;
        } else {
            return false;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((s[i] & 0xc0) != 0x80) return false;
            c = (c << 6) | (s[i] & 0x3f);
        }
        if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff)) return false;
        s += n + 1;
    }
    return true;
}

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

/* ---- responses ---- */

/* Client text as a JSON string: jansson refuses invalid UTF-8, so such
 * bytes are logged as '?' rather than dropping the field. */
static json_t *text_field(const char *s)
{
    json_t *j = json_string(s);
    if (j) return j;
    char *copy = td_strdup(s);
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80) *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static void resp_error_msg(td_resp_t *resp, int status, const char *message);

static void resp_clear_body(td_resp_t *resp)
{
    if (resp->has_takeover) {
        resp->has_takeover = false;
        if (resp->takeover.cancel) resp->takeover.cancel(resp->takeover.arg);
    }
    free(resp->data);
    resp->data = NULL;
    resp->len = 0;
    free(resp->ctype);
    resp->ctype = NULL;
    if (resp->mhd) {
        MHD_destroy_response(resp->mhd);
        resp->mhd = NULL;
    }
}

static void resp_free(td_resp_t *resp)
{
    resp_clear_body(resp);
    for (size_t i = 0; i < resp->hdr_cnt; i++) {
        free(resp->hdrs[i].name);
        free(resp->hdrs[i].value);
    }
    free(resp->hdrs);
    memset(resp, 0, sizeof(*resp));
}

/* Takes data (malloc'd) as the body. */
static void resp_take(td_resp_t *resp, int status, const char *content_type, char *data, size_t len)
{
    resp_clear_body(resp);
    resp->status = status;
    resp->data = data;
    resp->len = len;
    resp->ctype = td_strdup(content_type);
}

void td_resp_json(td_resp_t *resp, int status, json_t *body)
{
    if (!body) {
        /* Usually a json_pack that failed on a value that is not UTF-8:
         * a bug to fix, but the client must not get an empty success. */
        if (status != 204) {
            td_error("http: bug: JSON response body for status %d is NULL", status);
            resp_error_msg(resp, 500, "internal error");
        } else {
            td_resp_empty(resp, status);
        }
        return;
    }
    char *text = td_json_dumps(body);
    json_decref(body);
    resp_take(resp, status, "application/json; charset=utf-8", text, strlen(text));
}

void td_resp_empty(td_resp_t *resp, int status)
{
    resp_clear_body(resp);
    resp->status = status;
}

void td_resp_data(td_resp_t *resp, int status, const char *content_type, const void *data,
                  size_t len)
{
    char *copy = td_malloc(len + 1);
    if (len) memcpy(copy, data, len);
    copy[len] = '\0';
    resp_take(resp, status, content_type, copy, len);
}

const char *td_http_error_code(int status)
{
    switch (status) {
    case 400:
        return "invalid_argument";
    case 401:
        return "unauthenticated";
    case 403:
        return "permission_denied";
    case 404:
        return "not_found";
    case 405:
        return "method_not_allowed";
    case 409:
        return "conflict";
    case 413:
        return "payload_too_large";
    case 415:
        return "unsupported_media_type";
    case 422:
        return "idempotency_key_mismatch";
    case 429:
        return "rate_limited";
    case 502:
    case 503:
    case 504:
        return "unavailable";
    default:
        return status >= 500 ? "internal" : "invalid_argument";
    }
}

static void resp_error_msg(td_resp_t *resp, int status, const char *message)
{
    /* message can quote client text, so it goes through text_field. */
    json_t *body = json_pack("{s:{s:s, s:o}}", "error", "code", td_http_error_code(status),
                             "message", text_field(message ? message : ""));
    td_resp_json(resp, status, body);
}

void td_resp_error(td_resp_t *resp, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = td_vasprintf(fmt, ap);
    va_end(ap);
    resp_error_msg(resp, status, msg);
    free(msg);
}

void td_resp_errno(td_resp_t *resp, int err, const char *message)
{
    int status;
    switch (err) {
    case TD_EINVAL:
        status = 400;
        break;
    case TD_ENOENT:
        status = 404;
        break;
    case TD_EEXIST:
        status = 409;
        break;
    case TD_EPERM:
        status = 403;
        break;
    case TD_ELIMIT:
        status = 429;
        break;
    case TD_EAGAIN:
        status = 503;
        break;
    default:
        status = 500;
        break;
    }
    resp_error_msg(resp, status, message ? message : td_strerror(err));
}

void td_resp_header(td_resp_t *resp, const char *name, const char *value)
{
    for (size_t i = 0; i < resp->hdr_cnt; i++) {
        if (strcasecmp(resp->hdrs[i].name, name) == 0) {
            free(resp->hdrs[i].value);
            resp->hdrs[i].value = td_strdup(value);
            return;
        }
    }
    resp->hdrs = td_realloc(resp->hdrs, (resp->hdr_cnt + 1) * sizeof(*resp->hdrs));
    resp->hdrs[resp->hdr_cnt].name = td_strdup(name);
    resp->hdrs[resp->hdr_cnt].value = td_strdup(value);
    resp->hdr_cnt++;
}

void td_resp_mhd(td_resp_t *resp, int status, struct MHD_Response *r)
{
    resp_clear_body(resp);
    resp->status = status;
    resp->mhd = r;
}

void td_resp_takeover(td_resp_t *resp, int status, const td_takeover_t *to)
{
    resp_clear_body(resp);
    resp->status = status;
    resp->takeover = *to;
    resp->has_takeover = true;
}

int td_resp_status(const td_resp_t *resp)
{
    return resp->status;
}

static bool resp_has_header(const td_resp_t *resp, const char *name)
{
    for (size_t i = 0; i < resp->hdr_cnt; i++)
        if (strcasecmp(resp->hdrs[i].name, name) == 0) return true;
    return false;
}

/* ---- requests ---- */

const char *td_req_param(const td_req_t *req, const char *name)
{
    for (size_t i = 0; i < req->param_cnt; i++)
        if (strcmp(req->param_names[i], name) == 0) return req->param_values[i];
    return NULL;
}

const char *td_req_query(const td_req_t *req, const char *name)
{
    const char *val = NULL;
    size_t vlen = 0;
    if (!req->conn || !name) return NULL;
    if (MHD_lookup_connection_value_n(req->conn, MHD_GET_ARGUMENT_KIND, name, strlen(name), &val,
                                      &vlen) != MHD_YES)
        return NULL;
    if (!val) return ""; /* "?flag" has no value but is present */
    /* Handlers put query values into JSON and SQL: one that is not UTF-8
     * (or hides a NUL) cannot be meant, so it reads as absent. */
    if (strlen(val) != vlen || !utf8_valid(val)) return NULL;
    return val;
}

const char *td_req_header(const td_req_t *req, const char *name)
{
    if (!req->conn || !name) return NULL;
    return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

static bool unauthenticated(td_resp_t *resp, const char *message, bool bad_token)
{
    td_resp_error(resp, 401, "%s", message);
    td_resp_header(resp, "WWW-Authenticate",
                   bad_token ? "Bearer error=\"invalid_token\"" : "Bearer");
    return false;
}

/* The token of "Authorization: Bearer <token>", or NULL. */
static const char *bearer_token(const td_req_t *req)
{
    const char *token = NULL;
    const char *h = td_req_header(req, "Authorization");
    if (h) {
        while (*h == ' ' || *h == '\t') h++;
        if (strncasecmp(h, "Bearer", 6) == 0 && (h[6] == ' ' || h[6] == '\t')) {
            token = h + 6;
            while (*token == ' ' || *token == '\t') token++;
        }
    }
    return token;
}

bool td_req_auth(td_req_t *req, td_resp_t *resp, bool allow_query)
{
    if (req->authed) return true;
    const char *token = bearer_token(req);
    if ((!token || !*token) && allow_query) token = td_req_query(req, "token");
    if (!token || !*token) return unauthenticated(resp, "missing bearer token", false);
    if (!req->secret || !req->secret_len) {
        td_error("http: no token key configured, refusing %s %s", req->method, req->path);
        return unauthenticated(resp, "invalid token", true);
    }
    char err[128] = "";
    td_claims_t claims;
    int rc = td_jwt_verify(req->secret, req->secret_len, token, td_now_ms() / 1000, &claims, err,
                           sizeof(err));
    if (rc == TD_EEXPIRED) return unauthenticated(resp, "token expired", true);
    if (rc != 0) {
        td_debug("http: refused token for %s %s: %s", req->method, req->path, err);
        return unauthenticated(resp, "invalid token", true);
    }
    req->auth = claims;
    req->authed = true;
    return true;
}

bool td_req_admin(td_req_t *req, td_resp_t *resp)
{
    if (!td_req_auth(req, resp, false)) return false;
    if (strcmp(req->auth.role, "admin") != 0) {
        td_resp_error(resp, 403, "admin role required");
        return false;
    }
    return true;
}

bool td_req_body(td_req_t *req, td_resp_t *resp)
{
    if (req->body) return true;
    td_resp_error(resp, 400, "request body is required");
    return false;
}

bool td_req_limit(td_req_t *req, td_resp_t *resp, int def, int max, int *limit)
{
    const char *q = td_req_query(req, "limit");
    int64_t v = def;
    if (q && td_parse_positive(q, max, &v) != 0) {
        td_resp_error(resp, 400, "limit must be an integer from 1 to %d", max);
        return false;
    }
    *limit = (int)v;
    return true;
}

bool td_req_after_seq(td_req_t *req, td_resp_t *resp, int64_t *after)
{
    const char *q = td_req_query(req, "after");
    *after = 0;
    if (q && td_parse_positive(q, INT64_MAX, after) != 0) {
        td_resp_error(resp, 400, "after is not a valid cursor");
        return false;
    }
    return true;
}

/* ---- routes ---- */

static void route_free(route_t *r)
{
    for (size_t i = 0; i < r->seg_cnt; i++) free(r->segs[i]);
    free(r->segs);
    free(r->is_param);
    free(r->method);
    free(r->pattern);
}

/* Splits pattern into r. TD_EINVAL for a malformed one (a bug in the
 * service, reported at start rather than at the first request). */
static int route_compile(route_t *r, const char *method, const char *pattern, char *errstr,
                         size_t errlen)
{
    memset(r, 0, sizeof(*r));
    r->method = td_strdup(method);
    r->pattern = td_strdup(pattern);
    if (!method || !pattern || pattern[0] != '/')
        return td_errf(errstr, errlen, TD_EINVAL, "route pattern must start with '/': %s",
                       pattern ? pattern : "(null)");
    size_t cap = 1;
    for (const char *p = pattern; *p; p++) cap += *p == '/';
    r->segs = td_calloc(cap, sizeof(*r->segs));
    r->is_param = td_calloc(cap, sizeof(*r->is_param));
    size_t params = 0;
    const char *p = pattern + 1;
    for (;;) {
        const char *end = strchr(p, '/');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (r->rest)
            return td_errf(errstr, errlen, TD_EINVAL, "{*name} must be last in %s", pattern);
        if (n >= 2 && p[0] == '{' && p[n - 1] == '}') {
            bool rest = p[1] == '*';
            size_t off = rest ? 2 : 1;
            if (n - off - 1 == 0)
                return td_errf(errstr, errlen, TD_EINVAL, "empty parameter name in %s", pattern);
            if (++params > TD_HTTP_MAX_PARAMS)
                return td_errf(errstr, errlen, TD_EINVAL, "too many parameters in %s", pattern);
            r->segs[r->seg_cnt] = td_strndup(p + off, n - off - 1);
            r->is_param[r->seg_cnt] = true;
            r->rest = rest;
        } else {
            r->segs[r->seg_cnt] = td_strndup(p, n);
        }
        r->seg_cnt++;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

/* Decoded segments of a raw path ("/a/b%2Fc" -> "a", "b/c"). */
typedef struct path_segs {
    char **v;
    size_t cnt;
} path_segs_t;

static void segs_free(path_segs_t *ps)
{
    for (size_t i = 0; i < ps->cnt; i++) free(ps->v[i]);
    free(ps->v);
    ps->v = NULL;
    ps->cnt = 0;
}

static bool segs_split(const char *raw, size_t len, path_segs_t *ps)
{
    memset(ps, 0, sizeof(*ps));
    if (len == 0 || raw[0] != '/') return false;
    size_t cap = 1;
    for (size_t i = 0; i < len; i++) cap += raw[i] == '/';
    ps->v = td_calloc(cap, sizeof(*ps->v));
    size_t start = 1;
    for (size_t i = 1; i <= len; i++) {
        if (i == len || raw[i] == '/') {
            char *seg = url_decode(raw + start, i - start);
            if (seg && !utf8_valid(seg)) {
                free(seg);
                seg = NULL;
            }
            if (!seg) {
                segs_free(ps);
                return false;
            }
            ps->v[ps->cnt++] = seg;
            start = i + 1;
        }
    }
    return true;
}

static bool route_match(const route_t *r, const path_segs_t *ps, td_req_t *req)
{
    if (r->rest ? ps->cnt < r->seg_cnt : ps->cnt != r->seg_cnt) return false;
    for (size_t i = 0; i < r->seg_cnt; i++) {
        if (r->is_param[i]) {
            if (ps->v[i][0] == '\0' && !(r->rest && i + 1 == r->seg_cnt)) return false;
        } else if (strcmp(r->segs[i], ps->v[i]) != 0) {
            return false;
        }
    }
    if (!req) return true;
    for (size_t i = 0; i < req->param_cnt; i++) free(req->param_values[i]);
    req->param_cnt = 0;
    for (size_t i = 0; i < r->seg_cnt; i++) {
        if (!r->is_param[i]) continue;
        char *val;
        if (r->rest && i + 1 == r->seg_cnt) {
            size_t n = 0;
            for (size_t k = i; k < ps->cnt; k++) n += strlen(ps->v[k]) + 1;
            val = td_malloc(n + 1);
            val[0] = '\0';
            size_t o = 0;
            for (size_t k = i; k < ps->cnt; k++) {
                if (k > i) val[o++] = '/';
                size_t l = strlen(ps->v[k]);
                memcpy(val + o, ps->v[k], l);
                o += l;
            }
            val[o] = '\0';
        } else {
            val = td_strdup(ps->v[i]);
        }
        req->param_names[req->param_cnt] = r->segs[i];
        req->param_values[req->param_cnt++] = val;
    }
    return true;
}

static bool method_matches(const char *route_method, const char *method)
{
    if (strcmp(route_method, method) == 0) return true;
    return strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0;
}

/* ---- built-in routes ---- */

static void builtin_run(td_http_t *http, enum builtin b, td_req_t *req, td_resp_t *resp)
{
    (void)req;
    switch (b) {
    case BUILTIN_HEALTHZ:
        td_resp_json(resp, 200, json_pack("{s:s}", "status", "ok"));
        break;
    case BUILTIN_READYZ: {
        char why[256] = "";
        if (!http->ready || http->ready(http->ready_arg, why, sizeof(why)))
            td_resp_json(resp, 200, json_pack("{s:s}", "status", "ready"));
        else
            td_resp_error(resp, 503, "%s", why[0] ? why : "not ready");
        break;
    }
    case BUILTIN_METRICS: {
        char *text = td_metrics_render();
        resp_take(resp, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
        break;
    }
    case BUILTIN_NONE:
        break;
    }
}

/* ---- the request cycle ---- */

static void add_header(struct MHD_Response *r, const char *name, const char *value)
{
    /* Refused for CR/LF in a value: never let a handler split headers. */
    if (MHD_add_response_header(r, name, value) != MHD_YES)
        td_warn("http: dropped response header %s (invalid value)", name);
}

/* ---- CORS ---- */

/* The request's Origin when this server allows it, else NULL. */
static const char *cors_allowed(const request_state_t *st)
{
    const td_http_t *http = st->http;
    const char *origin = td_req_header(&st->req, "Origin");
    if (!http->cors || !origin || !*origin) return NULL;
    if (http->cors_any) return origin;
    for (size_t i = 0; i < http->cors_cnt; i++)
        if (strcasecmp(http->cors_list[i], origin) == 0) return origin;
    return NULL;
}

/* Access-Control-Allow-Origin for an allowed origin only: its own, never
 * "*" unless "*" is configured; Vary: Origin whenever the answer depends
 * on it, so no cache hands one origin's answer to another. */
static void cors_headers(request_state_t *st, struct MHD_Response *r)
{
    const char *origin = cors_allowed(st);
    if (!st->http->cors_any) add_header(r, "Vary", "Origin");
    if (!origin) return;
    add_header(r, "Access-Control-Allow-Origin", st->http->cors_any ? "*" : origin);
    add_header(r, "Access-Control-Expose-Headers",
               "X-Request-Id, Retry-After, traceparent, Idempotent-Replayed");
}

/* Parses a TIDINGS_CORS_ORIGINS list into http. */
static void cors_parse(td_http_t *http, const char *list)
{
    if (!list) return;
    for (const char *p = list; *p;) {
        size_t n = strcspn(p, ",");
        const char *a = p, *b = p + n;
        while (a < b && (*a == ' ' || *a == '\t')) a++;
        while (b > a && (b[-1] == ' ' || b[-1] == '\t' || b[-1] == '/')) b--;
        if (b - a == 1 && *a == '*') {
            http->cors_any = true;
        } else if (b > a) {
            http->cors_list =
                td_realloc(http->cors_list, (http->cors_cnt + 1) * sizeof(*http->cors_list));
            http->cors_list[http->cors_cnt++] = td_strndup(a, (size_t)(b - a));
        }
        p += n;
        if (*p == ',') p++;
    }
    http->cors = http->cors_any || http->cors_cnt > 0;
}

/* ---- handing a connection over (td_resp_takeover) ---- */

typedef struct head_buf {
    char *p;
    size_t len, cap;
} head_buf_t;

static void head_add(head_buf_t *hb, const char *s, size_t n)
{
    if (hb->len + n + 1 > hb->cap) {
        hb->cap = (hb->len + n + 1) * 2;
        hb->p = td_realloc(hb->p, hb->cap);
    }
    memcpy(hb->p + hb->len, s, n);
    hb->len += n;
    hb->p[hb->len] = '\0';
}

static enum MHD_Result head_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    head_buf_t *hb = cls;
    (void)kind;
    /* libmicrohttpd refused CR/LF when the header was added; be as
     * strict here, where nothing else would. */
    if (!key || !value || strpbrk(key, "\r\n:") || strpbrk(value, "\r\n")) return MHD_YES;
    head_add(hb, key, strlen(key));
    head_add(hb, ": ", 2);
    head_add(hb, value, strlen(value));
    head_add(hb, "\r\n", 2);
    return MHD_YES;
}

/* Writes r's status and headers into a head of our own and gives the
 * socket to the takeover; libmicrohttpd, answered MHD_NO, then closes its
 * side of the connection without a byte more (MHD_USE_TURBO: no
 * shutdown() that would end the stream too). */
static enum MHD_Result send_takeover(request_state_t *st, struct MHD_Response *r)
{
    td_http_t *http = st->http;
    td_resp_t *resp = &st->resp;
    td_takeover_t to = resp->takeover;
    resp->has_takeover = false;

    head_buf_t hb = {0};
    char line[128];
    const char *reason = MHD_get_reason_phrase_for((unsigned)resp->status);
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", resp->status,
                     reason && *reason ? reason : "Unknown");
    head_add(&hb, line, (size_t)n);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    n = (int)strftime(line, sizeof(line), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    head_add(&hb, line, (size_t)n);
    MHD_get_response_headers(r, head_header, &hb);
    MHD_destroy_response(r);
    bool chunked = !st->http10;
    if (chunked)
        head_add(&hb, "Transfer-Encoding: chunked\r\n", 28);
    else
        head_add(&hb, "Connection: close\r\n", 19);
    head_add(&hb, "\r\n", 2);

    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(st->req.conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    int fd = ci ? fcntl(ci->connect_fd, F_DUPFD_CLOEXEC, 0) : -1;
    st->responded = true;
    st->status = resp->status;
    if (fd < 0) {
        td_warn("http: cannot hand a connection over: %s", ci ? strerror(errno) : "no socket");
        free(hb.p);
        if (to.cancel) to.cancel(to.arg);
        st->status = 503;
    } else {
        to.start(to.arg, fd, hb.p, hb.len, chunked);
    }
    if (st->counted) {
        atomic_fetch_sub(&http->inflight, 1);
        st->counted = false;
    }
    return MHD_NO;
}

static enum MHD_Result send_response(request_state_t *st)
{
    td_http_t *http = st->http;
    td_resp_t *resp = &st->resp;
    struct MHD_Response *r;
    if (resp->mhd) {
        r = resp->mhd;
        resp->mhd = NULL;
    } else if (resp->data) {
        r = MHD_create_response_from_buffer_with_free_callback(resp->len, resp->data, free);
        if (r) resp->data = NULL;
    } else {
        r = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    }
    if (!r) return MHD_NO;

    if (resp->ctype && !resp_has_header(resp, "Content-Type"))
        add_header(r, "Content-Type", resp->ctype);
    add_header(r, "X-Request-Id", st->req.request_id);
    char tp[TD_TRACEPARENT_LEN + 1];
    td_trace_format(&st->req.trace, tp);
    add_header(r, "traceparent", tp);
    if (http->cors) cors_headers(st, r);
    for (size_t i = 0; i < resp->hdr_cnt; i++)
        add_header(r, resp->hdrs[i].name, resp->hdrs[i].value);
    if (resp->has_takeover) return send_takeover(st, r);

    enum MHD_Result ret = MHD_queue_response(st->req.conn, (unsigned)resp->status, r);
    MHD_destroy_response(r);
    st->responded = true;
    st->status = resp->status;
    if (st->counted) {
        atomic_fetch_sub(&http->inflight, 1);
        st->counted = false;
    }
    return ret;
}

static enum MHD_Result send_error(request_state_t *st, int status, const char *message)
{
    resp_error_msg(&st->resp, status, message);
    return send_response(st);
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
    st->path = url_decode(st->raw_uri, plen);
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

/* ---- Idempotency-Key (SPEC section 2, "Safe retries") ---- */

/* Takes caller+key as running; false when it runs already. */
static bool idem_take(td_http_t *http, idem_t *im)
{
    char *slot = td_asprintf("%s\n%s", im->caller, im->key);
    pthread_mutex_lock(&http->idem_mu);
    for (size_t i = 0; i < http->idem_cnt; i++)
        if (!strcmp(http->idem_running[i], slot)) {
            pthread_mutex_unlock(&http->idem_mu);
            free(slot);
            return false;
        }
    http->idem_running =
        td_realloc(http->idem_running, (http->idem_cnt + 1) * sizeof(*http->idem_running));
    http->idem_running[http->idem_cnt++] = slot;
    pthread_mutex_unlock(&http->idem_mu);
    im->slot = slot;
    return true;
}

static void idem_free(td_http_t *http, idem_t *im)
{
    if (!im) return;
    if (im->slot) {
        pthread_mutex_lock(&http->idem_mu);
        for (size_t i = 0; i < http->idem_cnt; i++)
            if (http->idem_running[i] == im->slot) {
                http->idem_running[i] = http->idem_running[--http->idem_cnt];
                break;
            }
        pthread_mutex_unlock(&http->idem_mu);
        free(im->slot);
    }
    free(im->caller);
    free(im->key);
    free(im);
}

/* The caller a key belongs to: the user of a valid token, else the
 * client's address (anonymous requests). */
static char *idem_caller(const td_req_t *req)
{
    const char *token = bearer_token(req);
    td_claims_t claims;
    char err[128];
    if (token && *token && req->secret_len &&
        td_jwt_verify(req->secret, req->secret_len, token, td_now_ms() / 1000, &claims, err,
                      sizeof(err)) == 0)
        return td_asprintf("user:%s", claims.sub);
    return td_asprintf("ip:%s", req->client_ip);
}

/* What makes two requests with one key the same request. */
static void idem_hash(const td_req_t *req, unsigned char out[TD_IDEM_HASH])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md) td_oom();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, req->method, strlen(req->method) + 1);
    EVP_DigestUpdate(md, req->path, strlen(req->path) + 1);
    if (req->body_raw) EVP_DigestUpdate(md, req->body_raw, req->body_len);
    unsigned int n = 0;
    EVP_DigestFinal_ex(md, out, &n);
    EVP_MD_CTX_free(md);
    assert(n == TD_IDEM_HASH);
}

/* The stored answer as this request's response, byte for byte. */
static void idem_replay(td_resp_t *resp, const td_idem_answer_t *a)
{
    const char *ctype = NULL;
    char *hdrs = td_strdup(a->headers ? a->headers : "");
    char *save = NULL;
    header_t extra[16];
    size_t extra_cnt = 0;
    for (char *line = strtok_r(hdrs, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *colon = strstr(line, ": ");
        if (!colon) continue;
        *colon = '\0';
        if (!strcasecmp(line, "Content-Type"))
            ctype = colon + 2;
        else if (extra_cnt < TD_ARRAY_SIZE(extra))
            extra[extra_cnt++] = (header_t){line, colon + 2};
    }
    td_resp_data(resp, a->status, ctype ? ctype : "application/json; charset=utf-8", a->body,
                 a->body_len);
    for (size_t i = 0; i < extra_cnt; i++) td_resp_header(resp, extra[i].name, extra[i].value);
    td_resp_header(resp, "Idempotent-Replayed", "true");
    free(hdrs);
}

/* Before the handler of a POST: true when the request is answered already
 * (a bad key 400, a repeat of a running request 409, another body with a
 * used key 422, or the stored answer), false to run the handler, which
 * then runs with its units held (td__db_hold) when the request has a key. */
static bool idem_begin(request_state_t *st)
{
    td_http_t *http = st->http;
    td_req_t *req = &st->req;
    td_resp_t *resp = &st->resp;
    if (!http->idem_db || strcmp(req->method, "POST")) return false;
    const char *key = td_req_header(req, "Idempotency-Key");
    if (!key) return false;
    if (!td_idem_key_valid(key)) {
        resp_error_msg(resp, 400, "Idempotency-Key must be 1 to 255 printable ASCII characters");
        return true;
    }
    idem_t *im = td_calloc(1, sizeof(*im));
    im->caller = idem_caller(req);
    im->key = td_strdup(key);
    idem_hash(req, im->hash);
    if (!idem_take(http, im)) {
        idem_free(http, im);
        resp_error_msg(resp, 409, "a request with this Idempotency-Key is still in progress");
        return true;
    }
    td_idem_answer_t a;
    int rc = td_idem_lookup(http->idem_db, im->caller, im->key, td_now_ms(), &a);
    if (rc == 0) {
        if (memcmp(a.hash, im->hash, TD_IDEM_HASH))
            resp_error_msg(resp, 422, "this Idempotency-Key was used for another request");
        else
            idem_replay(resp, &a);
        td_idem_answer_clear(&a);
        idem_free(http, im);
        return true;
    }
    if (rc != TD_ENOENT) {
        idem_free(http, im);
        resp_error_msg(resp, 500, "the Idempotency-Key could not be checked");
        return true;
    }
    st->idem = im;
    td__db_hold(http->idem_db);
    return false;
}

/* Answers worth keeping: a retry of a server error, an authentication
 * failure or a rate limit must run again, not get the same refusal; an
 * answer marked no-store (a token) is never written down. */
static bool idem_keeps(const td_resp_t *resp)
{
    for (size_t i = 0; i < resp->hdr_cnt; i++)
        if (!strcasecmp(resp->hdrs[i].name, "Cache-Control") &&
            strstr(resp->hdrs[i].value, "no-store"))
            return false;
    return resp->status > 0 && resp->status < 500 && resp->status != 401 && resp->status != 429 &&
           !resp->mhd && !resp->has_takeover;
}

/* After the handler, on its thread: stores the answer in the unit that
 * holds the handler's effects and commits both, or rolls the effects back
 * with an answer that is not kept. The response becomes 409 when another
 * instance stored this key first, 500 when the commit failed. */
static void idem_end(request_state_t *st)
{
    idem_t *im = st->idem;
    if (!im) return;
    st->idem = NULL;
    td_http_t *http = st->http;
    td_db_t *db = http->idem_db;
    td_resp_t *resp = &st->resp;
    td__db_hold(NULL);
    bool held = td__db_in_unit(db);
    if (!idem_keeps(resp)) {
        /* A server error answers for no effect; other answers not kept
         * keep their effects. */
        if (held && (resp->status >= 500 || resp->status == 0))
            td_db_rollback(db);
        else if (held && td_db_commit(db) != 0)
            resp_error_msg(resp, 500, "the request could not be committed");
        idem_free(http, im);
        return;
    }
    td_idem_answer_t a = {.status = resp->status, .body = resp->data, .body_len = resp->len};
    memcpy(a.hash, im->hash, TD_IDEM_HASH);
    size_t hlen = 0, hcap = 256;
    char *hdrs = td_malloc(hcap);
    hdrs[0] = '\0';
    for (size_t i = 0; i <= resp->hdr_cnt; i++) {
        const char *name = i == 0 ? "Content-Type" : resp->hdrs[i - 1].name;
        const char *value = i == 0 ? resp->ctype : resp->hdrs[i - 1].value;
        if (!value || (i > 0 && !strcasecmp(name, "Content-Type"))) continue;
        size_t n = strlen(name) + strlen(value) + 4;
        if (hlen + n > hcap) hdrs = td_realloc(hdrs, hcap = 2 * (hlen + n));
        hlen += (size_t)snprintf(hdrs + hlen, hcap - hlen, "%s: %s\n", name, value);
    }
    a.headers = hdrs;
    int rc = held ? 0 : td_db_begin(db);
    if (rc == 0) {
        rc = td_idem_store(db, im->caller, im->key, &a, td_now_ms());
        if (rc == 0)
            rc = td_db_commit(db);
        else
            td_db_rollback(db);
    }
    free(hdrs);
    if (rc == TD_EEXIST)
        resp_error_msg(resp, 409, "another request with this Idempotency-Key was answered first");
    else if (rc != 0)
        resp_error_msg(resp, 500, "the request could not be committed");
    idem_free(http, im);
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
        if (cors_allowed(st)) {
            td_resp_header(resp, "Access-Control-Allow-Methods",
                           "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS");
            td_resp_header(resp, "Access-Control-Allow-Headers",
                           "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, "
                           "X-Request-Id, traceparent");
            td_resp_header(resp, "Access-Control-Max-Age", "600");
        }
        return send_response(st);
    }
    if (st->too_large) return send_error(st, 413, "request body is larger than 65536 bytes");

    const char *q = strchr(st->raw_uri, '?');
    size_t plen = q ? (size_t)(q - st->raw_uri) : strlen(st->raw_uri);
    path_segs_t ps;
    if (!segs_split(st->raw_uri, plen, &ps)) {
        if (plen == 0 || st->raw_uri[0] != '/') return send_error(st, 404, "no such resource");
        return send_error(st, 400, "malformed URL path");
    }

    const route_t *found = NULL;
    char allow[128] = "";
    for (size_t i = 0; i < http->route_cnt; i++) {
        const route_t *r = &http->routes[i];
        if (!route_match(r, &ps, NULL)) continue;
        if (method_matches(r->method, req->method)) {
            found = r;
            break;
        }
        append_allow(allow, sizeof(allow), r->method);
        if (strcmp(r->method, "GET") == 0) append_allow(allow, sizeof(allow), "HEAD");
    }
    if (!found && allow[0]) {
        segs_free(&ps);
        td_resp_header(resp, "Allow", allow);
        char msg[200];
        snprintf(msg, sizeof(msg), "method %.16s not allowed here (allowed: %s)", req->method,
                 allow);
        return send_error(st, 405, msg);
    }
    if (!found) {
        segs_free(&ps);
        return send_error(st, 404, "no such resource");
    }
    route_match(found, &ps, req);
    segs_free(&ps);
    req->route = found->pattern;
    st->route_label = found->pattern;

    if (st->body_len > 0 && found->form) {
        req->body_raw = st->body;
        req->body_len = st->body_len;
    } else if (st->body_len > 0) {
        if (!is_json_type(td_req_header(req, "Content-Type")))
            return send_error(st, 415, "request body must be application/json");
        json_error_t jerr;
        json_t *j =
            json_loadb(st->body, st->body_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
        if (!j) {
            char msg[300];
            snprintf(msg, sizeof(msg), "request body is not valid JSON: %s", jerr.text);
            return send_error(st, 400, msg);
        }
        if (!json_is_object(j)) {
            json_decref(j);
            return send_error(st, 400, "request body must be a JSON object");
        }
        req->body = j;
        req->body_raw = st->body;
        req->body_len = st->body_len;
    }

    if (found->builtin != BUILTIN_NONE) {
        builtin_run(http, found->builtin, req, resp);
    } else if (!idem_begin(st)) {
        found->fn(req, resp);
        if (st->deferred) return MHD_YES; /* answered by td_deferred_done */
        idem_end(st);
    }

    if (resp->status == 0) {
        td_error("http: bug: handler for %s %s set no response", req->method, found->pattern);
        return send_error(st, 500, "internal error");
    }
    ret = send_response(st);
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
    idem_end(st);
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
        return send_error(st, 500, "internal error");
    }
    return send_response(st);
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
                return send_error(st, 413, "request body is larger than 65536 bytes");
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
    idem_free(st->http, st->idem);
    for (size_t i = 0; i < req->param_cnt; i++) free(req->param_values[i]);
    json_decref(req->body);
    resp_free(&st->resp);
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
    json_object_set_new(fields, "method", text_field(st->method ? st->method : ""));
    json_object_set_new(fields, "path", text_field(path));
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
    for (size_t i = 0; i < http->route_cnt; i++) route_free(&http->routes[i]);
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
    cors_parse(http, opts->cors_origins);
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
        route_compile(r, "GET", builtins[i].path, NULL, 0);
        r->builtin = builtins[i].b;
    }
    for (size_t i = 0; i < opts->route_cnt; i++) {
        const td_route_t *src = &opts->routes[i];
        route_t *r = &http->routes[http->route_cnt++];
        if (route_compile(r, src->method, src->pattern, errstr, errlen) != 0) goto fail;
        if (!src->fn) {
            td_errf(errstr, errlen, TD_EINVAL, "route %s %s has no handler", src->method,
                    src->pattern);
            goto fail;
        }
        r->fn = src->fn;
        for (const char *const *f = opts->form_routes; f && *f; f++)
            if (!strcmp(*f, src->pattern)) r->form = true;
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
