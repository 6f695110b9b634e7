/* Responses of the HTTP layer (http.c runs the request cycle): the
 * td_resp_* setters a handler calls, the JSON error bodies, CORS headers,
 * and sending a response to libmicrohttpd, or handing its socket over to a
 * stream (td_resp_takeover) with a head written here. */
#include "tidings/http.h"

#include <fcntl.h>
#include <unistd.h>

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_internal.h"
#include "tidings/json.h"
#include "tidings/log.h"

/* ---- responses ---- */

/* Client text as a JSON string: jansson refuses invalid UTF-8, so such
 * bytes are logged as '?' rather than dropping the field. */
json_t *td__http_text_field(const char *s)
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

void td__resp_free(td_resp_t *resp)
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
void td__resp_take(td_resp_t *resp, int status, const char *content_type, char *data, size_t len)
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
            td__resp_error_msg(resp, 500, "internal error");
        } else {
            td_resp_empty(resp, status);
        }
        return;
    }
    char *text = td_json_dumps(body);
    json_decref(body);
    td__resp_take(resp, status, "application/json; charset=utf-8", text, strlen(text));
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
    td__resp_take(resp, status, content_type, copy, len);
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

void td__resp_error_msg(td_resp_t *resp, int status, const char *message)
{
    /* message can quote client text, so it goes through td__http_text_field. */
    json_t *body = json_pack("{s:{s:s, s:o}}", "error", "code", td_http_error_code(status),
                             "message", td__http_text_field(message ? message : ""));
    td_resp_json(resp, status, body);
}

void td_resp_error(td_resp_t *resp, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *msg = td_vasprintf(fmt, ap);
    va_end(ap);
    td__resp_error_msg(resp, status, msg);
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
    td__resp_error_msg(resp, status, message ? message : td_strerror(err));
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

/* ---- the request cycle ---- */

static void add_header(struct MHD_Response *r, const char *name, const char *value)
{
    /* Refused for CR/LF in a value: never let a handler split headers. */
    if (MHD_add_response_header(r, name, value) != MHD_YES)
        td_warn("http: dropped response header %s (invalid value)", name);
}

/* ---- CORS ---- */

/* The request's Origin when this server allows it, else NULL. */
const char *td__cors_allowed(const request_state_t *st)
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
    const char *origin = td__cors_allowed(st);
    if (!st->http->cors_any) add_header(r, "Vary", "Origin");
    if (!origin) return;
    add_header(r, "Access-Control-Allow-Origin", st->http->cors_any ? "*" : origin);
    add_header(r, "Access-Control-Expose-Headers",
               "X-Request-Id, Retry-After, traceparent, Idempotent-Replayed");
}

/* Parses a TIDINGS_CORS_ORIGINS list into http. */
void td__cors_parse(td_http_t *http, const char *list)
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

static enum MHD_Result head_header(void *cls, enum MHD_ValueKind kind, const char *key,
                                   const char *value)
{
    td_strbuf_t *hb = cls;
    (void)kind;
    /* libmicrohttpd refused CR/LF when the header was added; be as
     * strict here, where nothing else would. */
    if (!key || !value || strpbrk(key, "\r\n:") || strpbrk(value, "\r\n")) return MHD_YES;
    td_strbuf_add(hb, key, strlen(key));
    td_strbuf_add(hb, ": ", 2);
    td_strbuf_add(hb, value, strlen(value));
    td_strbuf_add(hb, "\r\n", 2);
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

    td_strbuf_t hb = {0};
    char line[128];
    const char *reason = MHD_get_reason_phrase_for((unsigned)resp->status);
    int n = snprintf(line, sizeof(line), "HTTP/1.1 %d %s\r\n", resp->status,
                     reason && *reason ? reason : "Unknown");
    td_strbuf_add(&hb, line, (size_t)n);
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    n = (int)strftime(line, sizeof(line), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    td_strbuf_add(&hb, line, (size_t)n);
    MHD_get_response_headers(r, head_header, &hb);
    MHD_destroy_response(r);
    bool chunked = !st->http10;
    if (chunked)
        td_strbuf_add(&hb, "Transfer-Encoding: chunked\r\n", 28);
    else
        td_strbuf_add(&hb, "Connection: close\r\n", 19);
    td_strbuf_add(&hb, "\r\n", 2);

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

enum MHD_Result td__http_send(request_state_t *st)
{
    assert(!st->responded); /* one response per request */
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

enum MHD_Result td__http_send_error(request_state_t *st, int status, const char *message)
{
    td__resp_error_msg(&st->resp, status, message);
    return td__http_send(st);
}
