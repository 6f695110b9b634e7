/* The web service's HTTP edge: the pages (static files of the web dir),
 * /config.json that tells the pages where each service's API is, and the
 * event-flow API (recent events, their live stream, causal chains). The
 * pages call the other services directly; those answer CORS, so this
 * service needs no proxy. The base URLs use the host name the browser used
 * to reach us, so the shop also works when opened by a machine name.
 *
 * Events carry personal data (emails, IPs, orders), so the event views
 * show each viewer only what SPEC section 5 allows (web_visible): an
 * anonymous visitor the product events, a signed-in user also the events
 * about them, an admin everything; causal traces are for admins. */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <pthread.h>

#include "tidings/dlt.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "web/web_service.h"

#define STATIC_MAX_BYTES (8 * 1024 * 1024)
#define REPLAY_MAX       2000 /* events a reconnecting stream gets at most */
#define REPLAY_PAGE      100
#define SSE_RETRY_MS     2000

/* Parses a whole decimal string into *out; false for anything else. */
static bool parse_u64(const char *s, uint64_t *out)
{
    if (!s || !*s || strlen(s) > 19) return false;
    uint64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *out = v;
    return true;
}

/* The host part of the request's Host header when it is a plain name or
 * address, else the listen address (0.0.0.0 means this machine). */
static void pick_host(td_req_t *req, const td_config_t *cfg, char *out, size_t len)
{
    const char *h = td_req_header(req, "Host");
    if (h && *h && strlen(h) < 256) {
        size_t n = 0;
        if (h[0] == '[') {
            const char *end = strchr(h, ']');
            n = end ? (size_t)(end - h) + 1 : 0;
        } else {
            const char *colon = strchr(h, ':');
            n = colon ? (size_t)(colon - h) : strlen(h);
        }
        bool ok = n > 0;
        for (size_t i = 0; i < n && ok; i++) {
            char c = h[i];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '-' || c == ':' || c == '[' || c == ']';
        }
        if (ok) {
            snprintf(out, len, "%.*s", (int)n, h);
            return;
        }
    }
    const char *addr = cfg->listen_addr ? cfg->listen_addr : "127.0.0.1";
    if (!strcmp(addr, "0.0.0.0") || !*addr) addr = "127.0.0.1";
    if (strchr(addr, ':'))
        snprintf(out, len, "[%s]", addr);
    else
        snprintf(out, len, "%s", addr);
}

static void get_config(td_req_t *req, td_resp_t *resp)
{
    web_ctx_t *ctx = req->ctx;
    char host[300];
    pick_host(req, ctx->cfg, host, sizeof(host));
    json_t *services = json_object();
    for (int s = 0; s < TD_SVC__COUNT; s++) {
        char *url = td_asprintf("http://%s:%d", host, td_config_port(ctx->cfg, (td_service_t)s));
        json_object_set_new(services, td_service_name((td_service_t)s), json_string(url));
        free(url);
    }
    json_t *body = json_pack("{s:o, s:o, s:s, s:s}", "services", services, "paymentLimit",
                             td_json_money(ctx->cfg->payment_limit), "adminEmail",
                             "admin@tidings.local", "version", TIDINGS_VERSION);
    td_resp_json(resp, 200, body);
    td_resp_header(resp, "Cache-Control", "no-store");
}

/* The viewer of an event view: anonymous without a token; with one (the
 * Authorization header, or ?token= for EventSource) the router checked it
 * (TD_AUTH_OPTIONAL), so an expired session was told so (401) instead of
 * silently seeing less. */
static void viewer_of(const td_req_t *req, web_viewer_t *viewer)
{
    memset(viewer, 0, sizeof(*viewer));
    const td_claims_t *caller = td_req_caller(req);
    if (!caller) return;
    viewer->admin = !strcmp(caller->role, "admin");
    snprintf(viewer->user_id, sizeof(viewer->user_id), "%s", caller->sub);
}

static void get_events(td_req_t *req, td_resp_t *resp)
{
    web_ctx_t *ctx = req->ctx;
    web_viewer_t viewer;
    viewer_of(req, &viewer);
    const char *after_s = td_req_query(req, "after");
    uint64_t after = 0;
    int limit;
    if (after_s && !parse_u64(after_s, &after)) {
        td_resp_error(resp, 400, "after must be an event sequence number");
        return;
    }
    if (!td_req_limit(req, resp, WEB_LIST_DEFAULT_LIMIT, WEB_LIST_MAX_LIMIT, &limit)) return;
    td_resp_json(resp, 200,
                 web_store_list(ctx->store, after_s != NULL, after, (size_t)limit, &viewer));
}

static void replay_send(void *arg, uint64_t seq, const char *json, const web_vis_t *vis)
{
    TD_UNUSED(vis); /* web_store_each filtered already */
    char id[32];
    snprintf(id, sizeof(id), "%llu", (unsigned long long)seq);
    td_sse_stream_send(arg, "event", id, json);
}

/* A stream's state: who watches it, for the replay and the live filter. */
typedef struct stream_view {
    web_ctx_t *ctx;
    web_viewer_t viewer;
} stream_view_t;

/* One page of a reconnecting stream's history (td_sse_replay_fn). */
static int replay_next(void *arg, td_sse_stream_t *st, int64_t *last_id)
{
    stream_view_t *sv = arg;
    uint64_t last = web_store_each(sv->ctx->store, (uint64_t)*last_id, REPLAY_PAGE, &sv->viewer,
                                   replay_send, st);
    *last_id = (int64_t)last;
    return last < web_store_last(sv->ctx->store) ? 1 : 0;
}

/* The live filter (td_sse_filter_fn): tag is the event's web_vis_t. */
static bool stream_accepts(void *arg, const void *tag)
{
    const stream_view_t *sv = arg;
    return tag && web_visible(tag, &sv->viewer);
}

/* Live events as SSE (id = the event's sequence number). A reconnect
 * (Last-Event-ID, or ?after=) first gets what it missed, at most the last
 * REPLAY_MAX; a new stream starts live. */
static void get_stream(td_req_t *req, td_resp_t *resp)
{
    web_ctx_t *ctx = req->ctx;
    web_viewer_t viewer;
    viewer_of(req, &viewer);
    const char *from = td_req_header(req, "Last-Event-ID");
    if (!from || !*from) from = td_req_query(req, "after");
    uint64_t after = 0;
    if (from && (!parse_u64(from, &after) || after > INT64_MAX)) {
        td_resp_error(resp, 400, "Last-Event-ID / after must be an event sequence number");
        return;
    }
    /* One state for the filter and the replay: the filter frees it. */
    stream_view_t *sv = td_calloc(1, sizeof(*sv));
    sv->ctx = ctx;
    sv->viewer = viewer;
    td_sse_opts_t o = {
        .key = "*",
        .retry_ms = SSE_RETRY_MS,
        .filter = stream_accepts,
        .filter_arg = sv,
        .filter_free = free,
        /* A signed-in viewer's streams count against their cap; they end
         * when the token expires (the hub reads req->auth). */
        .owner = viewer.user_id[0] ? viewer.user_id : NULL,
        .max_per_owner = ctx->cfg->max_streams_per_user,
    };
    td_sse_replay_t replay;
    if (from) {
        uint64_t last = web_store_last(ctx->store);
        if (last > REPLAY_MAX && after < last - REPLAY_MAX) after = last - REPLAY_MAX;
        replay = (td_sse_replay_t){
            .next = replay_next,
            .arg = sv,
            .after = (int64_t)after,
            /* Only an admin sees every seq; a filtered stream skips ids. */
            .contiguous = viewer.admin,
        };
        o.replay = &replay;
    }
    td_sse_open_opts(ctx->hub, req, resp, &o);
}

static void get_trace(td_req_t *req, td_resp_t *resp)
{
    web_ctx_t *ctx = req->ctx;
    const char *id = td_req_param(req, "id");
    if (!id || !*id || strlen(id) > 200) {
        td_resp_error(resp, 400, "id must be 1 to 200 characters");
        return;
    }
    json_t *chain = web_store_trace(ctx->store, id);
    if (!chain) {
        td_resp_error(resp, 404, "no event among the last %zu matches this id",
                      web_store_count(ctx->store));
        return;
    }
    td_resp_json(resp, 200, chain);
}

static const char *content_type(const char *path)
{
    static const struct {
        const char *ext, *type;
    } types[] = {
        {".html", "text/html; charset=utf-8"},
        {".css", "text/css; charset=utf-8"},
        {".js", "text/javascript; charset=utf-8"},
        {".mjs", "text/javascript; charset=utf-8"},
        {".json", "application/json; charset=utf-8"},
        {".webmanifest", "application/manifest+json"},
        {".svg", "image/svg+xml"},
        {".png", "image/png"},
        {".ico", "image/x-icon"},
        {".txt", "text/plain; charset=utf-8"},
    };
    const char *dot = strrchr(path, '.');
    for (size_t i = 0; dot && i < TD_ARRAY_SIZE(types); i++)
        if (!strcmp(dot, types[i].ext)) return types[i].type;
    return "application/octet-stream";
}

/* A request path that names a file inside the web dir: no "..", no hidden
 * files, no backslashes or control characters. */
static bool safe_rel_path(const char *rel)
{
    if (strlen(rel) > 512) return false;
    const char *seg = rel;
    for (const char *p = rel;; p++) {
        if (*p == '/' || !*p) {
            if (p == seg && *p) return false; /* empty segment: "//" */
            if (seg[0] == '.') return false;  /* ".", "..", hidden files */
            if (!*p) break;
            seg = p + 1;
            continue;
        }
        if ((unsigned char)*p < 0x20 || *p == '\\' || *p == 0x7f) return false;
    }
    return true;
}

static void get_static(td_req_t *req, td_resp_t *resp)
{
    web_ctx_t *ctx = req->ctx;
    if (!ctx->web_dir) {
        td_resp_error(resp, 404,
                      "the web pages are not installed here (set TIDINGS_WEB_DIR to the web/ "
                      "directory)");
        return;
    }
    const char *path = req->path && req->path[0] == '/' ? req->path + 1 : "";
    char *rel = (!*path || path[strlen(path) - 1] == '/') ? td_asprintf("%sindex.html", path)
                                                          : td_strdup(path);
    char *full = NULL, *data = NULL;
    char real[PATH_MAX];
    struct stat sb;
    if (!safe_rel_path(rel)) {
        td_resp_error(resp, 404, "no such page");
        goto out;
    }
    full = td_asprintf("%s/%s", ctx->web_dir, rel);
    size_t dl = strlen(ctx->web_dir);
    if (!realpath(full, real) || strncmp(real, ctx->web_dir, dl) || real[dl] != '/' ||
        stat(real, &sb) < 0 || !S_ISREG(sb.st_mode) || sb.st_size > STATIC_MAX_BYTES) {
        td_resp_error(resp, 404, "no such page");
        goto out;
    }
    size_t len = 0;
    data = td_read_file(real, &len);
    if (!data) {
        td_resp_error(resp, 500, "cannot read %s: %s", rel, strerror(errno));
        goto out;
    }
    td_resp_data(resp, 200, content_type(real), data, len);
    td_resp_header(resp, "Cache-Control", "no-cache");
    td_resp_header(resp, "X-Content-Type-Options", "nosniff");
out:
    free(data);
    free(full);
    free(rel);
}

/* ---- dead letters (admins): what `tidings dlt` does ---- */

/* The work of one dead-letter request, on a thread of its own: it reads
 * and writes Kafka, which never happens on an HTTP thread. */
typedef struct dlt_job {
    td_deferred_t *d;
    const td_config_t *cfg;
    char *topic; /* list: the short topic, or NULL */
    char *ref;   /* redrive: the DLT-REF */
    bool dry_run;
} dlt_job_t;

static void *dlt_list_job(void *arg)
{
    dlt_job_t *job = arg;
    td_resp_t *resp = td_deferred_resp(job->d);
    td_dlt_t *list = NULL;
    size_t cnt = 0;
    char err[600];
    int rc = td_dlt_list(job->cfg, job->topic, &list, &cnt, err, sizeof(err));
    if (rc == TD_ENOENT) {
        td_resp_error(resp, 404, "%s", err);
    } else if (rc) {
        td_resp_error(resp, 503, "%s", err);
    } else {
        json_t *arr = json_array();
        for (size_t i = 0; i < cnt; i++) json_array_append_new(arr, td_dlt_json(&list[i], true));
        td_resp_json(resp, 200, json_pack("{s:o, s:n}", "deadLetters", arr, "next"));
    }
    td_dlt_list_free(list, cnt);
    td_deferred_done(job->d);
    free(job->topic);
    free(job);
    return NULL;
}

static void *dlt_redrive_job(void *arg)
{
    dlt_job_t *job = arg;
    td_resp_t *resp = td_deferred_resp(job->d);
    char err[600];
    td_dlt_t d;
    td_dlt_redrive_t r;
    int rc = td_dlt_get(job->cfg, job->ref, &d, err, sizeof(err));
    if (rc == 0) {
        rc = td_dlt_redrive(job->cfg, &d, job->dry_run, &r, err, sizeof(err));
        td_dlt_clear(&d);
    }
    if (rc == 0) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:i}", "ref", job->ref, "result",
                              job->dry_run ? "would_redrive" : "redriven", "topic", r.topic,
                              "partition", (int)r.partition);
        json_object_set_new(o, "offset", r.offset >= 0 ? json_integer(r.offset) : json_null());
        td_resp_json(resp, 200, o);
    } else if (rc == TD_EEXIST) {
        td_resp_error(resp, 409, "%s", err);
    } else if (rc == TD_EINVAL) {
        td_resp_error(resp, 400, "%s", err);
    } else if (rc == TD_ENOENT) {
        td_resp_error(resp, 404, "%s", err);
    } else {
        td_resp_error(resp, 503, "%s", err);
    }
    td_deferred_done(job->d);
    free(job->ref);
    free(job);
    return NULL;
}

static void dlt_start(td_req_t *req, td_resp_t *resp, dlt_job_t *job, void *(*fn)(void *))
{
    job->d = td_req_defer(req);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, fn, job) != 0) {
        td_resp_error(td_deferred_resp(job->d), 503, "cannot start the work");
        td_deferred_done(job->d);
        free(job->topic);
        free(job->ref);
        free(job);
    }
    pthread_attr_destroy(&attr);
    (void)resp;
}

/* GET /api/dlt[?topic=orders]: every dead letter, whole (admins). */
static void get_dlt(td_req_t *req, td_resp_t *resp)
{
    web_ctx_t *ctx = req->ctx;
    const char *topic = td_req_query(req, "topic");
    dlt_job_t *job = td_calloc(1, sizeof(*job));
    job->cfg = ctx->cfg;
    job->topic = topic && *topic ? td_strdup(topic) : NULL;
    dlt_start(req, resp, job, dlt_list_job);
}

/* POST /api/dlt/redrive {ref, dryRun?} (admins): `tidings dlt redrive`. */
static void post_dlt_redrive(td_req_t *req, td_resp_t *resp)
{
    web_ctx_t *ctx = req->ctx;
    static const char *const allowed[] = {"ref", "dryRun", NULL};
    char err[256];
    const char *ref;
    if (td_json_only_fields(req->body, allowed, err, sizeof err) ||
        td_json_req_string(req->body, "ref", TD_DLT_REF_MAX - 1, &ref, err, sizeof err)) {
        td_resp_error(resp, 400, "%s", err);
        return;
    }
    json_t *dry = json_object_get(req->body, "dryRun");
    if (dry && !json_is_boolean(dry)) {
        td_resp_error(resp, 400, "dryRun must be a boolean");
        return;
    }
    dlt_job_t *job = td_calloc(1, sizeof(*job));
    job->cfg = ctx->cfg;
    job->ref = td_strdup(ref);
    job->dry_run = json_is_true(dry);
    dlt_start(req, resp, job, dlt_redrive_job);
}

const td_route_t web_routes[] = {
    {"GET", "/config.json", get_config, TD_AUTH_PUBLIC, TD_BODY_NONE, 0},
    {"GET", "/api/events", get_events, TD_AUTH_OPTIONAL, TD_BODY_NONE, TD_ROUTE_QUERY_TOKEN},
    {"GET", "/api/events/stream", get_stream, TD_AUTH_OPTIONAL, TD_BODY_NONE, TD_ROUTE_QUERY_TOKEN},
    {"GET", "/api/trace/{id}", get_trace, TD_AUTH_ADMIN, TD_BODY_NONE, TD_ROUTE_QUERY_TOKEN},
    {"GET", "/api/dlt", get_dlt, TD_AUTH_ADMIN, TD_BODY_NONE, 0},
    {"POST", "/api/dlt/redrive", post_dlt_redrive, TD_AUTH_ADMIN, TD_BODY_JSON, 0},
    {"GET", "/", get_static, TD_AUTH_PUBLIC, TD_BODY_NONE, 0},
    {"GET", "/{*path}", get_static, TD_AUTH_PUBLIC, TD_BODY_NONE, 0},
};
const size_t web_route_cnt = TD_ARRAY_SIZE(web_routes);
