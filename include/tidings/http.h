/* The HTTP layer over libmicrohttpd: routing by method and path pattern
 * ("/products/{productId}"), JSON bodies (64 KiB limit, 413; a body with a
 * content type other than application/json, 415; bad JSON or a non-object,
 * 400), the SPEC error shape {"error":{"code","message"}}, bearer-token
 * auth, /healthz /readyz /metrics on every server, per-route metrics and
 * one request log line with status and duration.
 *
 * Handlers run on libmicrohttpd's worker threads (a pool, epoll): they
 * may block briefly on the database, never on Kafka. A write waits for its
 * WAL sync with its thread (~0.5-1 ms), so the pool bounds how many
 * writes can share one sync: services that take writes from many shoppers
 * use TD_HTTP_WRITE_THREADS.
 *
 * Limits: a connection that sends nothing for 30 s is closed while its
 * request is incomplete (and when idle between keep-alive requests); a
 * response handed over with td_resp_takeover (SSE) is the taker's, with
 * its own timeouts. CORS: only the origins of td_http_opts_t.cors_origins
 * get Access-Control-Allow-Origin (their own, with Vary: Origin), "*" only
 * when configured. */
#ifndef TIDINGS_HTTP_H
#define TIDINGS_HTTP_H

#include <jansson.h>

#include "tidings/auth.h"
#include "tidings/common.h"
#include "tidings/db.h"
#include "tidings/trace.h"

struct MHD_Connection;
struct MHD_Response;

#define TD_HTTP_MAX_BODY   (64 * 1024)
#define TD_HTTP_MAX_PARAMS 4

typedef struct td_req {
    const char *method;   /* "GET", ... */
    const char *path;     /* decoded path, no query */
    const char *route;    /* the matched pattern */
    json_t *body;         /* the JSON object sent, or NULL when no body */
    const char *body_raw; /* raw bytes (NUL-terminated), NULL when none */
    size_t body_len;
    char client_ip[64];               /* peer address */
    char request_id[TD_UUID_LEN + 1]; /* X-Request-Id if valid, else new */
    td_trace_t trace;                 /* from the traceparent header (child), or new */
    td_claims_t auth;                 /* valid after td_req_auth succeeded */
    bool authed;
    void *ctx; /* td_http_opts_t.ctx */
    struct MHD_Connection *conn;
    /* internal */
    const char *param_names[TD_HTTP_MAX_PARAMS];
    char *param_values[TD_HTTP_MAX_PARAMS];
    size_t param_cnt;
    const unsigned char *secret;
    size_t secret_len;
} td_req_t;

typedef struct td_resp td_resp_t;

/* A path parameter ("productId"), URL-decoded; NULL when absent. */
const char *td_req_param(const td_req_t *req, const char *name);
/* A query-string argument, decoded; NULL when absent. */
const char *td_req_query(const td_req_t *req, const char *name);
/* A request header (case-insensitive); NULL when absent. */
const char *td_req_header(const td_req_t *req, const char *name);

/* Auth. td_req_auth checks "Authorization: Bearer <jwt>" (and, when
 * allow_query, "?token=" for EventSource): true and req->auth filled, or
 * false with a 401 unauthenticated already set on resp. td_req_admin also
 * needs role admin (403 permission_denied otherwise). */
bool td_req_auth(td_req_t *req, td_resp_t *resp, bool allow_query);
bool td_req_admin(td_req_t *req, td_resp_t *resp);
/* The authenticated caller (user id in sub, role), or NULL when the request
 * carried no token. Set by the router for TD_AUTH_USER and TD_AUTH_ADMIN
 * routes (never NULL there) and for TD_AUTH_OPTIONAL ones with a token.
 * Borrowed from req. The request's thread. */
const td_claims_t *td_req_caller(const td_req_t *req);
/* The body, required: false with 400 "request body is required" when
 * there is none. */
bool td_req_body(td_req_t *req, td_resp_t *resp);
/* List paging (SPEC: lists default to def and allow at most max).
 * td_req_limit reads ?limit=: absent gives def, else a positive decimal
 * 1..max; false with 400 "limit must be an integer from 1 to <max>" set.
 * td_req_after_seq reads a numeric ?after= cursor: absent gives 0, else a
 * positive decimal; false with 400 "after is not a valid cursor" set. */
bool td_req_limit(td_req_t *req, td_resp_t *resp, int def, int max, int *limit);
bool td_req_after_seq(td_req_t *req, td_resp_t *resp, int64_t *after);

/* Responses. Each replaces what was set before. JSON is stolen. */
void td_resp_json(td_resp_t *resp, int status, json_t *body);
void td_resp_empty(td_resp_t *resp, int status);
void td_resp_data(td_resp_t *resp, int status, const char *content_type, const void *data,
                  size_t len);
/* The SPEC error shape; the code follows from status (400
 * invalid_argument, 401 unauthenticated, ...). */
void td_resp_error(td_resp_t *resp, int status, const char *fmt, ...) TD_PRINTF(3, 4);
/* Maps a TD_E* code to status (TD_EINVAL 400, TD_ENOENT 404, TD_EEXIST
 * 409, TD_EPERM 403, TD_ELIMIT 429, TD_EAGAIN 503, else 500) and errors. */
void td_resp_errno(td_resp_t *resp, int err, const char *message);
void td_resp_header(td_resp_t *resp, const char *name, const char *value);
/* Takes a ready libmicrohttpd response (streams, files); it is destroyed
 * by the layer. */
void td_resp_mhd(td_resp_t *resp, int status, struct MHD_Response *r);
/* Hands the connection over instead of answering through libmicrohttpd
 * (SSE streams, tidings/sse.h). When the handler has returned, the layer
 * builds the response head (status line, Date, the headers set on resp
 * and its own: request id, trace context, CORS; then "Transfer-Encoding:
 * chunked" for HTTP/1.1, "Connection: close" for HTTP/1.0) and calls
 * start on the handler's thread with a new non-blocking descriptor of the
 * socket (start's to close), the head (start's to free; nothing of it is
 * sent yet) and whether the body must be chunked. libmicrohttpd then
 * forgets the connection and never writes to it again. If resp is
 * replaced first (any td_resp_* that sets a response), or the socket
 * cannot be handed over, cancel is called instead. The request is logged
 * when it is handed over. to is copied. Handler thread. */
typedef struct td_takeover {
    void (*start)(void *arg, int fd, char *head, size_t head_len, bool chunked);
    void (*cancel)(void *arg);
    void *arg;
} td_takeover_t;
void td_resp_takeover(td_resp_t *resp, int status, const td_takeover_t *to);
/* Status set so far (0 if none). */
int td_resp_status(const td_resp_t *resp);

/* Deferred responses: a handler whose answer needs slow work (password
 * hashing) hands it to another thread instead of holding an HTTP thread.
 * It calls td_req_defer, which suspends the connection
 * (MHD_suspend_connection: the request keeps no thread and no timeout
 * runs), passes the handle on and returns without setting a response.
 * The other thread fills td_deferred_resp (and may read td_deferred_req:
 * both stay valid until td_deferred_done) and calls td_deferred_done once,
 * which resumes the connection; the HTTP layer then sends that response,
 * logs and counts the request as for any other. Exactly one
 * td_deferred_done follows every td_req_defer, and soon: td_http_stop
 * waits for every deferred request to be answered. td_req_defer only on
 * the handler's thread, inside the handler; td_deferred_done on any
 * thread. */
typedef struct td_deferred td_deferred_t;
td_deferred_t *td_req_defer(td_req_t *req);
/* On the thread that does a deferred request's work, before its first
 * database unit: that work is held with the request's stored answer when
 * it has an Idempotency-Key (see td_http_opts_t.idem_db), and committed by
 * td_deferred_done, which must then come from this thread. */
void td_deferred_begin(td_deferred_t *d);
td_req_t *td_deferred_req(td_deferred_t *d);
td_resp_t *td_deferred_resp(td_deferred_t *d);
void td_deferred_done(td_deferred_t *d);

/* The stable code of a status: 400 -> "invalid_argument", ... */
const char *td_http_error_code(int status);

typedef void (*td_route_fn)(td_req_t *req, td_resp_t *resp);

/* Who may call a route; the router checks it after the body was parsed and
 * right before the handler (where a handler's own check used to be), so the
 * answers are those of td_req_auth and td_req_admin: 401 unauthenticated
 * (with WWW-Authenticate) without a valid token, 403 permission_denied for
 * a non-admin on an admin route. The handler then finds the caller in
 * req->auth (td_req_caller). */
typedef enum td_route_auth {
    TD_AUTH_UNDECLARED = 0, /* the handler checks for itself (routes not yet converted) */
    TD_AUTH_PUBLIC,         /* anyone; a token is not even looked at */
    TD_AUTH_OPTIONAL,       /* anyone, but a token that is sent must be valid (401) */
    TD_AUTH_USER,           /* a valid token */
    TD_AUTH_ADMIN,          /* a valid token with role admin */
} td_route_auth_t;

/* What body a route takes. Every route may get one (a JSON object of at
 * most TD_HTTP_MAX_BODY bytes, refused with 413/415/400 before any auth);
 * TD_BODY_JSON routes need one: 400 "request body is required" after the
 * auth check. */
typedef enum td_route_body {
    TD_BODY_NONE = 0, /* none needed (one sent is still parsed) */
    TD_BODY_JSON,     /* a JSON object is required */
    /* Any content type, taken as is (req->body_raw; req->body stays NULL):
     * the RFC 8058 one-click unsubscribe, which mail clients POST as a
     * form. */
    TD_BODY_RAW,
} td_route_body_t;

/* td_route_t.flags */
#define TD_ROUTE_QUERY_TOKEN 0x1 /* "?token=" counts as the bearer token (EventSource) */

/* One entry of a service's route table, in the manner of Redis's command
 * table: what it matches, who may call it and what body it takes. */
typedef struct td_route {
    const char *method;  /* "GET", "POST", "PUT", "PATCH", "DELETE" */
    const char *pattern; /* "/orders/{orderId}"; "/static/{*path}" matches the rest */
    td_route_fn fn;
    td_route_auth_t auth;
    td_route_body_t body;
    unsigned flags; /* TD_ROUTE_* */
} td_route_t;

/* Readiness for /readyz: true when ready, else false with why. */
typedef bool (*td_ready_fn)(void *arg, char *why, size_t whylen);

/* The pool of a service whose clients write (orders, products, payments,
 * users): 32 writes in flight share each sync (bench_saga: 4 threads
 * placed ~1,600 orders/s, 32 ~3,300/s). An idle thread costs its stack
 * and allocator pages, ~0.5 MiB once used. */
#define TD_HTTP_WRITE_THREADS 32

typedef struct td_http_opts {
    const char *service; /* for logs and metrics */
    const char *addr;    /* "127.0.0.1" */
    int port;            /* 0 = any free port (see td_http_port) */
    const td_route_t *routes;
    size_t route_cnt;
    void *ctx;                   /* req->ctx */
    const unsigned char *secret; /* token key */
    size_t secret_len;
    td_ready_fn ready; /* NULL = always ready */
    void *ready_arg;
    unsigned threads; /* worker threads, 0 = 4 */
    /* Origins whose pages may call this API (TIDINGS_CORS_ORIGINS: comma-
     * separated "scheme://host[:port]", or "*" for any). A request whose
     * Origin is listed gets Access-Control-Allow-Origin with that origin
     * (and Vary: Origin), its preflight the allowed methods and headers;
     * any other origin gets no allow header. NULL or "": no CORS at all
     * (OPTIONS is then a route like any other). Copied. */
    const char *cors_origins;
    /* Safe retries (SPEC section 2): with a database (migrated with
     * td_idem_migrate), every POST route honours an Idempotency-Key header. The first request with
     * a key (per caller: the token's user, else the client address) runs its handler with its units
     * held (td__db_hold): whatever units the handler's thread begins are one unit with the stored
     * answer (status, headers, body) and commit with it, so a crash keeps both or neither. A repeat
     * with the same method, path and body gets that answer byte for byte
     * (plus Idempotent-Replayed: true) for TD_IDEM_TTL_MS; another body
     * gets 422 idempotency_key_mismatch; a repeat while the first runs in
     * this process gets 409. Answers of 5xx, 401 and 429 are not kept (and
     * the handler's units are rolled back with a 5xx), nor those sent with
     * "Cache-Control: no-store" (a login's token is never stored; the
     * login runs again). NULL: off. */
    td_db_t *idem_db;
} td_http_opts_t;

typedef struct td_http td_http_t;

/* Starts listening. NULL with errstr (e.g. "port 8081 is in use"). */
td_http_t *td_http_start(const td_http_opts_t *opts, char *errstr, size_t errlen);
/* The port actually bound. */
int td_http_port(const td_http_t *http);
/* Stops accepting, waits for requests in flight, closes. */
void td_http_stop(td_http_t *http);

#endif
