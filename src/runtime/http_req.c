/* Requests, auth and routes of the HTTP layer (http.c runs the request
 * cycle): percent-decoding and UTF-8 checks of what a client sends, the
 * td_req_* accessors, bearer-token auth, and the route table's patterns
 * compiled into segments and matched against a decoded path. Nothing a
 * client sends may crash this file: every outside string is length-checked
 * and decoded with explicit failure paths. */
#include "tidings/http.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_internal.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/metrics.h"

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
char *td__http_url_decode(const char *s, size_t n)
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
const char *td__http_bearer_token(const td_req_t *req)
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
    const char *token = td__http_bearer_token(req);
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

static bool need_admin(td_req_t *req, td_resp_t *resp, bool allow_query)
{
    if (!td_req_auth(req, resp, allow_query)) return false;
    if (strcmp(req->auth.role, "admin") != 0) {
        td_resp_error(resp, 403, "admin role required");
        return false;
    }
    return true;
}

bool td_req_admin(td_req_t *req, td_resp_t *resp)
{
    return need_admin(req, resp, false);
}

const td_claims_t *td_req_caller(const td_req_t *req)
{
    return req->authed ? &req->auth : NULL;
}

bool td__route_admit(const route_t *r, td_req_t *req, td_resp_t *resp)
{
    bool query = r->flags & TD_ROUTE_QUERY_TOKEN;
    bool ok = true;
    switch (r->auth) {
    case TD_AUTH_UNDECLARED:
    case TD_AUTH_PUBLIC:
        break;
    case TD_AUTH_OPTIONAL: {
        /* Anonymous without a token; with one it must be valid, so an
         * expired session is told so (401) instead of silently seeing less. */
        const char *token = query ? td_req_query(req, "token") : NULL;
        if (td_req_header(req, "Authorization") || (token && *token))
            ok = td_req_auth(req, resp, query);
        break;
    }
    case TD_AUTH_USER:
        ok = td_req_auth(req, resp, query);
        break;
    case TD_AUTH_ADMIN:
        ok = need_admin(req, resp, query);
        break;
    }
    assert(!ok || r->auth < TD_AUTH_USER || req->authed);
    if (ok && r->body == TD_BODY_JSON) ok = td_req_body(req, resp);
    return ok;
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

void td__route_free(route_t *r)
{
    for (size_t i = 0; i < r->seg_cnt; i++) free(r->segs[i]);
    free(r->segs);
    free(r->is_param);
    free(r->method);
    free(r->pattern);
}

/* Splits pattern into r. TD_EINVAL for a malformed one (a bug in the
 * service, reported at start rather than at the first request). */
int td__route_compile(route_t *r, const char *method, const char *pattern, char *errstr,
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

void td__path_free(path_segs_t *ps)
{
    for (size_t i = 0; i < ps->cnt; i++) free(ps->v[i]);
    free(ps->v);
    ps->v = NULL;
    ps->cnt = 0;
}

bool td__path_split(const char *raw, size_t len, path_segs_t *ps)
{
    memset(ps, 0, sizeof(*ps));
    if (len == 0 || raw[0] != '/') return false;
    size_t cap = 1;
    for (size_t i = 0; i < len; i++) cap += raw[i] == '/';
    ps->v = td_calloc(cap, sizeof(*ps->v));
    size_t start = 1;
    for (size_t i = 1; i <= len; i++) {
        if (i == len || raw[i] == '/') {
            char *seg = td__http_url_decode(raw + start, i - start);
            if (seg && !utf8_valid(seg)) {
                free(seg);
                seg = NULL;
            }
            if (!seg) {
                td__path_free(ps);
                return false;
            }
            ps->v[ps->cnt++] = seg;
            start = i + 1;
        }
    }
    return true;
}

bool td__route_match(const route_t *r, const path_segs_t *ps, td_req_t *req)
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

bool td__route_method_matches(const char *route_method, const char *method)
{
    if (strcmp(route_method, method) == 0) return true;
    return strcmp(method, "HEAD") == 0 && strcmp(route_method, "GET") == 0;
}

/* ---- built-in routes ---- */

void td__http_builtin_run(td_http_t *http, enum builtin b, td_req_t *req, td_resp_t *resp)
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
        td__resp_take(resp, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text));
        break;
    }
    case BUILTIN_NONE:
        break;
    }
}
