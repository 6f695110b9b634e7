/* What the pieces of the HTTP layer share (http.c the server and the
 * request cycle, http_req.c requests, auth and routes, http_resp.c responses,
 * CORS and sending, http_idem.c the Idempotency-Key). Not a public header:
 * nothing outside src/runtime/http*.c includes it. */
#ifndef TIDINGS_HTTP_INTERNAL_H
#define TIDINGS_HTTP_INTERNAL_H

#include <microhttpd.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "tidings/http.h"
#include "tidings/idem.h"

enum builtin { BUILTIN_NONE, BUILTIN_HEALTHZ, BUILTIN_READYZ, BUILTIN_METRICS };

/* A route with its pattern split into segments. */
typedef struct route {
    char *method;
    char *pattern;
    td_route_fn fn;
    td_route_auth_t auth; /* as declared in the table */
    td_route_body_t body;
    unsigned flags;
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

/* Decoded segments of a raw path ("/a/b%2Fc" -> "a", "b/c"). */
typedef struct path_segs {
    char **v;
    size_t cnt;
} path_segs_t;

/* http_req.c: decoding, auth and routes. */
/* Percent-decodes s[0..n) into a new string. NULL when an escape is
 * broken or decodes to a NUL byte (which no C consumer could see). */
char *td__http_url_decode(const char *s, size_t n);
/* The token of "Authorization: Bearer <token>", or NULL. */
const char *td__http_bearer_token(const td_req_t *req);
void td__route_free(route_t *r);
/* Splits pattern into r. TD_EINVAL for a malformed one. */
int td__route_compile(route_t *r, const char *method, const char *pattern, char *errstr,
                      size_t errlen);
/* Splits and decodes raw[0..len); false for a malformed path. */
bool td__path_split(const char *raw, size_t len, path_segs_t *ps);
void td__path_free(path_segs_t *ps);
/* True when r matches ps; with req, also fills req's parameters. */
bool td__route_match(const route_t *r, const path_segs_t *ps, td_req_t *req);
/* HEAD is answered by a GET route. */
bool td__route_method_matches(const char *route_method, const char *method);
/* What the table declares of r, checked where a handler used to check
 * it: false with the 401, 403 or 400 set on resp. */
bool td__route_admit(const route_t *r, td_req_t *req, td_resp_t *resp);
void td__http_builtin_run(td_http_t *http, enum builtin b, td_req_t *req, td_resp_t *resp);

/* http_resp.c: responses, CORS and sending. */
/* Client text as a JSON string ('?' for bytes that are not UTF-8). */
json_t *td__http_text_field(const char *s);
void td__resp_error_msg(td_resp_t *resp, int status, const char *message);
void td__resp_free(td_resp_t *resp);
/* Takes data (malloc'd) as the body. */
void td__resp_take(td_resp_t *resp, int status, const char *content_type, char *data, size_t len);
/* The request's Origin when this server allows it, else NULL. */
const char *td__cors_allowed(const request_state_t *st);
/* Parses a TIDINGS_CORS_ORIGINS list into http. */
void td__cors_parse(td_http_t *http, const char *list);
/* Queues st->resp (or hands the connection over); the request is then
 * answered and no longer counted in flight. */
enum MHD_Result td__http_send(request_state_t *st);
enum MHD_Result td__http_send_error(request_state_t *st, int status, const char *message);

/* http_idem.c: the Idempotency-Key (SPEC section 2, "Safe retries"). */
/* Before the handler of a POST: true when the request is answered already. */
bool td__idem_begin(request_state_t *st);
/* After the handler, on its thread: stores or drops the answer. */
void td__idem_end(request_state_t *st);
void td__idem_free(td_http_t *http, idem_t *im);

#endif
