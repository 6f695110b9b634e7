/* Server-Sent Events (see tidings/sse.h). Each stream is a libmicrohttpd
 * callback response: the content reader hands out what is queued and,
 * when nothing is, suspends the connection and returns 0; whoever queues
 * the next frame resumes it. Two locks, always taken in this order and
 * never held while calling into libmicrohttpd: hub->mu (the list of
 * streams), then st->mu (one stream's queues and flags). The thread that flips
 * a stream's `suspended` flag back to false owns the one matching
 * MHD_resume_connection call, made after every lock is released; until
 * that call the connection stays suspended, so libmicrohttpd cannot close
 * it and free the stream in between. */
#include "tidings/sse.h"

#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "tidings/log.h"
#include "tidings/metrics.h"

typedef struct frame {
    struct frame *next;
    bool numeric;
    int64_t id;
    char *text;
    size_t len;
} frame_t;

struct td_sse_stream {
    td_sse_hub_t *hub;
    td_sse_stream_t *prev, *next; /* hub->streams, under hub->mu */
    char *key;
    struct MHD_Connection *conn; /* NULL for test streams */

    pthread_mutex_t mu;
    char *out; /* bytes ready to send: out[pos..len) */
    size_t out_len, out_pos, out_cap;
    frame_t *held_head, *held_tail; /* live frames waiting for the replay */
    size_t held_bytes;
    bool held;
    bool ordered; /* numeric ids increase: drop those not above floor */
    bool has_floor;
    int64_t floor;  /* highest numeric id queued */
    bool suspended; /* the reader suspended the connection */
    bool closed;    /* end the response once out is sent */
    td_sse_replay_t replay;
    int64_t replay_last; /* the replay's *last_id between calls */
    td_sse_filter_fn filter;
    void *filter_arg;
    void (*filter_free)(void *arg);
};

struct td_sse_hub {
    pthread_mutex_t mu;
    td_sse_stream_t *streams;
    size_t count;
    bool closing;

    int keepalive_s;
    pthread_t thread;
    pthread_cond_t cv;
    bool stop;
};

/* Connections to resume once the locks are released. */
typedef struct resume_list {
    struct MHD_Connection **conns;
    size_t cnt, cap;
} resume_list_t;

static void resume_add(resume_list_t *rl, struct MHD_Connection *conn)
{
    if (!conn) return;
    if (rl->cnt == rl->cap) {
        rl->cap = rl->cap ? rl->cap * 2 : 16;
        rl->conns = td_realloc(rl->conns, rl->cap * sizeof(*rl->conns));
    }
    rl->conns[rl->cnt++] = conn;
}

static void resume_all(resume_list_t *rl)
{
    for (size_t i = 0; i < rl->cnt; i++) MHD_resume_connection(rl->conns[i]);
    free(rl->conns);
    rl->conns = NULL;
    rl->cnt = rl->cap = 0;
}

/* ---- framing ---- */

static void append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
{
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *buf = td_realloc(*buf, *cap);
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    (*buf)[*len] = '\0';
}

/* "name: value\n" with CR and LF taken out of value. */
static void field_line(char **buf, size_t *len, size_t *cap, const char *name, const char *value)
{
    append(buf, len, cap, name, strlen(name));
    append(buf, len, cap, ": ", 2);
    for (const char *p = value; *p;) {
        size_t n = strcspn(p, "\r\n");
        append(buf, len, cap, p, n);
        p += n;
        while (*p == '\r' || *p == '\n') p++;
    }
    append(buf, len, cap, "\n", 1);
}

/* One prefix line per line of text (LF, CRLF or CR ends a line). */
static void lines(char **buf, size_t *len, size_t *cap, const char *prefix, const char *text)
{
    const char *p = text;
    for (;;) {
        size_t n = strcspn(p, "\r\n");
        append(buf, len, cap, prefix, strlen(prefix));
        append(buf, len, cap, p, n);
        append(buf, len, cap, "\n", 1);
        p += n;
        if (!*p) break;
        if (p[0] == '\r' && p[1] == '\n') p++;
        p++;
    }
}

char *td_sse_frame(const char *event, const char *id, const char *data)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    append(&buf, &len, &cap, "", 0);
    if (id) field_line(&buf, &len, &cap, "id", id);
    if (event) field_line(&buf, &len, &cap, "event", event);
    if (data) lines(&buf, &len, &cap, "data: ", data);
    append(&buf, &len, &cap, "\n", 1);
    return buf;
}

char *td_sse_comment(const char *text)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    append(&buf, &len, &cap, "", 0);
    lines(&buf, &len, &cap, ": ", text);
    append(&buf, &len, &cap, "\n", 1);
    return buf;
}

/* ---- queues (st->mu held) ---- */

static bool parse_id(const char *id, int64_t *out)
{
    if (!id || !*id) return false;
    char *end;
    errno = 0;
    long long v = strtoll(id, &end, 10);
    if (errno || *end || end == id) return false;
    *out = v;
    return true;
}

static size_t pending_bytes(const td_sse_stream_t *st)
{
    return st->out_len - st->out_pos + st->held_bytes;
}

/* The frame's bytes go to out, unless the stream drops them as seen. */
static void queue_out(td_sse_stream_t *st, bool numeric, int64_t id, const char *text, size_t len,
                      bool count)
{
    if (st->ordered && numeric && st->has_floor && id <= st->floor) {
        td_metric_inc("tidings_sse_duplicates_dropped_total", NULL);
        return;
    }
    if (pending_bytes(st) + len > TD_SSE_MAX_BUFFER) {
        if (!st->closed)
            td_warn("sse: stream of %s is not reading; ending it (it will replay on reconnect)",
                    st->key);
        st->closed = true;
        return;
    }
    if (numeric && (!st->has_floor || id > st->floor)) {
        st->floor = id;
        st->has_floor = true;
    }
    append(&st->out, &st->out_len, &st->out_cap, text, len);
    if (count) td_metric_inc("tidings_sse_writes_total", NULL);
}

static void queue_frame(td_sse_stream_t *st, bool from_publish, const char *event, const char *id,
                        const char *data, resume_list_t *rl)
{
    if (st->closed) return;
    int64_t num = 0;
    bool numeric = parse_id(id, &num);
    char *text = td_sse_frame(event, id, data);
    size_t len = strlen(text);
    if (from_publish && !st->held && st->replay.contiguous && numeric && st->has_floor &&
        num > st->floor + 1) {
        /* Frames between floor and this one were missed: replay them
         * first; this one waits with the held frames. */
        st->held = true;
        st->replay_last = st->floor;
        td_metric_inc("tidings_sse_gap_fills_total", NULL);
    }
    if (from_publish && st->held) {
        if (pending_bytes(st) + len > TD_SSE_MAX_BUFFER) {
            st->closed = true;
            free(text);
        } else {
            frame_t *f = td_calloc(1, sizeof(*f));
            f->numeric = numeric;
            f->id = num;
            f->text = text;
            f->len = len;
            if (st->held_tail)
                st->held_tail->next = f;
            else
                st->held_head = f;
            st->held_tail = f;
            st->held_bytes += len;
        }
    } else {
        queue_out(st, numeric, num, text, len, true);
        free(text);
    }
    if (st->suspended && (st->out_len > st->out_pos || st->closed || st->held)) {
        st->suspended = false;
        resume_add(rl, st->conn);
    }
}

/* The replay is done: held frames it did not already send go out. */
static void release_held(td_sse_stream_t *st, int64_t last_id)
{
    st->held = false;
    if (!st->has_floor || last_id > st->floor) {
        st->floor = last_id;
        st->has_floor = true;
    }
    frame_t *f = st->held_head;
    st->held_head = st->held_tail = NULL;
    st->held_bytes = 0;
    while (f) {
        frame_t *next = f->next;
        queue_out(st, f->numeric, f->id, f->text, f->len, true);
        free(f->text);
        free(f);
        f = next;
    }
}

/* ---- streams ---- */

static td_sse_stream_t *stream_new(td_sse_hub_t *hub, const char *key, int retry_ms,
                                   const td_sse_replay_t *replay, struct MHD_Connection *conn)
{
    td_sse_stream_t *st = td_calloc(1, sizeof(*st));
    pthread_mutex_init(&st->mu, NULL);
    st->hub = hub;
    st->key = td_strdup(key);
    st->conn = conn;
    char retry[48];
    int n = snprintf(retry, sizeof(retry), "retry: %d\n\n", retry_ms > 0 ? retry_ms : 3000);
    append(&st->out, &st->out_len, &st->out_cap, retry, (size_t)n);
    if (replay) {
        st->replay = *replay;
        st->replay_last = replay->after;
        st->held = true;
        st->ordered = true;
    }
    return st;
}

static void stream_link(td_sse_stream_t *st)
{
    td_sse_hub_t *hub = st->hub;
    pthread_mutex_lock(&hub->mu);
    /* Opened while td_sse_hub_close ran: it ends at once instead of
     * suspending under a server that is stopping. */
    if (hub->closing) st->closed = true;
    st->next = hub->streams;
    if (hub->streams) hub->streams->prev = st;
    hub->streams = st;
    hub->count++;
    td_metric_set("tidings_sse_streams_open", NULL, (double)hub->count);
    pthread_mutex_unlock(&hub->mu);
}

void td__sse_stream_free(td_sse_stream_t *st)
{
    if (!st) return;
    td_sse_hub_t *hub = st->hub;
    if (hub) {
        pthread_mutex_lock(&hub->mu);
        if (st->prev)
            st->prev->next = st->next;
        else if (hub->streams == st)
            hub->streams = st->next;
        if (st->next) st->next->prev = st->prev;
        hub->count--;
        td_metric_set("tidings_sse_streams_open", NULL, (double)hub->count);
        pthread_mutex_unlock(&hub->mu);
    }
    if (st->replay.free) st->replay.free(st->replay.arg);
    if (st->filter_free) st->filter_free(st->filter_arg);
    frame_t *f = st->held_head;
    while (f) {
        frame_t *next = f->next;
        free(f->text);
        free(f);
        f = next;
    }
    pthread_mutex_destroy(&st->mu);
    free(st->out);
    free(st->key);
    free(st);
}

td_sse_stream_t *td__sse_stream_new(td_sse_hub_t *hub, const char *key, int retry_ms,
                                    const td_sse_replay_t *replay)
{
    td_sse_stream_t *st = stream_new(hub, key, retry_ms, replay, NULL);
    stream_link(st);
    return st;
}

static bool peer_closed(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return false;
    char c;
    ssize_t n = recv(ci->connect_fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
}

long td__sse_stream_read(td_sse_stream_t *st, char *buf, size_t max)
{
    pthread_mutex_lock(&st->mu);
    for (;;) {
        if (st->out_pos < st->out_len) {
            size_t n = st->out_len - st->out_pos;
            if (n > max) n = max;
            memcpy(buf, st->out + st->out_pos, n);
            st->out_pos += n;
            if (st->out_pos == st->out_len) st->out_pos = st->out_len = 0;
            pthread_mutex_unlock(&st->mu);
            return (long)n;
        }
        if (st->closed) {
            pthread_mutex_unlock(&st->mu);
            return -1;
        }
        if (st->held && st->replay.next) {
            /* The replay sends through td_sse_stream_send, which locks. */
            int64_t last = st->replay_last;
            pthread_mutex_unlock(&st->mu);
            int rc = st->replay.next(st->replay.arg, st, &last);
            pthread_mutex_lock(&st->mu);
            st->replay_last = last;
            if (rc < 0)
                st->closed = true;
            else if (rc == 0)
                release_held(st, last);
            continue;
        }
        /* A client that went away has sent its FIN by now; libmicrohttpd
         * does not watch a suspended socket, so look before suspending
         * (else it is noticed only when a later write fails). */
        if (st->conn && peer_closed(st->conn)) {
            st->closed = true;
            pthread_mutex_unlock(&st->mu);
            return -1;
        }
        /* Nothing now: step out of the event loop until a frame comes. */
        st->suspended = true;
        if (st->conn) MHD_suspend_connection(st->conn);
        pthread_mutex_unlock(&st->mu);
        return 0;
    }
}

static ssize_t content_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    (void)pos;
    long n = td__sse_stream_read(cls, buf, max);
    return n < 0 ? MHD_CONTENT_READER_END_OF_STREAM : (ssize_t)n;
}

static void content_free(void *cls)
{
    td__sse_stream_free(cls);
}

static td_sse_stream_t *open_stream(td_sse_hub_t *hub, td_req_t *req, td_resp_t *resp,
                                    const td_sse_opts_t *o)
{
    const char *key = o->key;
    int retry_ms = o->retry_ms;
    const td_sse_replay_t *replay = o->replay;
    pthread_mutex_lock(&hub->mu);
    bool closing = hub->closing;
    pthread_mutex_unlock(&hub->mu);
    if (closing) {
        if (replay && replay->free) replay->free(replay->arg);
        if (o->filter_free) o->filter_free(o->filter_arg);
        td_resp_error(resp, 503, "the service is shutting down");
        return NULL;
    }
    td_sse_stream_t *st = stream_new(hub, key, retry_ms, replay, req->conn);
    st->filter = o->filter;
    st->filter_arg = o->filter_arg;
    st->filter_free = o->filter_free;
    struct MHD_Response *r =
        MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, content_reader, st, content_free);
    if (!r) {
        st->hub = NULL;
        td__sse_stream_free(st);
        td_resp_error(resp, 500, "cannot create the stream");
        return NULL;
    }
    MHD_add_response_header(r, "Content-Type", "text/event-stream; charset=utf-8");
    MHD_add_response_header(r, "Cache-Control", "no-cache");
    MHD_add_response_header(r, "X-Accel-Buffering", "no");
    /* Suspended connections do not time out; a resumed one that makes no
     * progress (a client that stopped reading) is dropped after a few
     * keepalive periods. */
    if (req->conn) {
        unsigned timeout = (unsigned)(hub->keepalive_s * 3 > 30 ? hub->keepalive_s * 3 : 30);
        MHD_set_connection_option(req->conn, MHD_CONNECTION_OPTION_TIMEOUT, timeout);
    }
    td_resp_mhd(resp, 200, r);
    stream_link(st);
    return st;
}

td_sse_stream_t *td_sse_open(td_sse_hub_t *hub, td_req_t *req, td_resp_t *resp, const char *key,
                             int retry_ms)
{
    td_sse_opts_t o = {.key = key, .retry_ms = retry_ms};
    return open_stream(hub, req, resp, &o);
}

td_sse_stream_t *td_sse_open_replay(td_sse_hub_t *hub, td_req_t *req, td_resp_t *resp,
                                    const char *key, int retry_ms, const td_sse_replay_t *replay)
{
    td_sse_opts_t o = {.key = key, .retry_ms = retry_ms, .replay = replay};
    return open_stream(hub, req, resp, &o);
}

td_sse_stream_t *td_sse_open_opts(td_sse_hub_t *hub, td_req_t *req, td_resp_t *resp,
                                  const td_sse_opts_t *opts)
{
    return open_stream(hub, req, resp, opts);
}

void td_sse_stream_send(td_sse_stream_t *st, const char *event, const char *id, const char *data)
{
    resume_list_t rl = {0};
    pthread_mutex_lock(&st->mu);
    queue_frame(st, false, event, id, data, &rl);
    pthread_mutex_unlock(&st->mu);
    resume_all(&rl);
}

size_t td_sse_publish(td_sse_hub_t *hub, const char *key, const char *event, const char *id,
                      const char *data)
{
    return td_sse_publish_tagged(hub, key, NULL, event, id, data);
}

size_t td_sse_publish_tagged(td_sse_hub_t *hub, const char *key, const void *tag, const char *event,
                             const char *id, const char *data)
{
    resume_list_t rl = {0};
    size_t n = 0;
    pthread_mutex_lock(&hub->mu);
    for (td_sse_stream_t *st = hub->streams; st; st = st->next) {
        if (strcmp(st->key, key) != 0 && strcmp(st->key, "*") != 0) continue;
        if (st->filter && !st->filter(st->filter_arg, tag)) continue;
        pthread_mutex_lock(&st->mu);
        queue_frame(st, true, event, id, data, &rl);
        pthread_mutex_unlock(&st->mu);
        n++;
    }
    pthread_mutex_unlock(&hub->mu);
    resume_all(&rl);
    return n;
}

size_t td_sse_count(td_sse_hub_t *hub)
{
    pthread_mutex_lock(&hub->mu);
    size_t n = hub->count;
    pthread_mutex_unlock(&hub->mu);
    return n;
}

/* ---- the hub ---- */

void td__sse_hub_keepalive(td_sse_hub_t *hub)
{
    static const char keepalive[] = ": keepalive\n\n";
    resume_list_t rl = {0};
    pthread_mutex_lock(&hub->mu);
    for (td_sse_stream_t *st = hub->streams; st; st = st->next) {
        pthread_mutex_lock(&st->mu);
        /* A stream with bytes still queued is not idle and would only
         * grow; the keepalive is for the quiet ones. */
        if (!st->closed && st->out_len == st->out_pos) {
            append(&st->out, &st->out_len, &st->out_cap, keepalive, sizeof(keepalive) - 1);
            if (st->suspended) {
                st->suspended = false;
                resume_add(&rl, st->conn);
            }
        }
        pthread_mutex_unlock(&st->mu);
    }
    pthread_mutex_unlock(&hub->mu);
    resume_all(&rl);
}

static void *keepalive_main(void *arg)
{
    td_sse_hub_t *hub = arg;
    pthread_mutex_lock(&hub->mu);
    while (!hub->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += hub->keepalive_s;
        while (!hub->stop && pthread_cond_timedwait(&hub->cv, &hub->mu, &ts) != ETIMEDOUT) {
        }
        if (hub->stop) break;
        pthread_mutex_unlock(&hub->mu);
        td__sse_hub_keepalive(hub);
        pthread_mutex_lock(&hub->mu);
    }
    pthread_mutex_unlock(&hub->mu);
    return NULL;
}

td_sse_hub_t *td_sse_hub_new(int keepalive_s)
{
    td_sse_hub_t *hub = td_calloc(1, sizeof(*hub));
    pthread_mutex_init(&hub->mu, NULL);
    pthread_cond_init(&hub->cv, NULL);
    hub->keepalive_s = keepalive_s > 0 ? keepalive_s : 15;
    td_metric_describe("tidings_sse_streams_open", "gauge", "Server-sent event streams open.");
    td_metric_describe("tidings_sse_writes_total", "counter",
                       "Frames queued to server-sent event streams (keepalives not counted).");
    td_metric_describe("tidings_sse_duplicates_dropped_total", "counter",
                       "Frames a stream had already sent (replay seam, redelivery), dropped.");
    td_metric_describe("tidings_sse_gap_fills_total", "counter",
                       "Replays run again because a live frame skipped ids.");
    td_metric_set("tidings_sse_streams_open", NULL, 0);
    if (pthread_create(&hub->thread, NULL, keepalive_main, hub) != 0) {
        /* A thread is a resource like memory: without it there is no hub. */
        td_error("sse: cannot start the keepalive thread");
        td_oom();
    }
    return hub;
}

void td_sse_hub_close(td_sse_hub_t *hub)
{
    if (!hub) return;
    resume_list_t rl = {0};
    pthread_mutex_lock(&hub->mu);
    hub->closing = true;
    for (td_sse_stream_t *st = hub->streams; st; st = st->next) {
        pthread_mutex_lock(&st->mu);
        st->closed = true;
        if (st->suspended) {
            st->suspended = false;
            resume_add(&rl, st->conn);
        }
        pthread_mutex_unlock(&st->mu);
    }
    pthread_mutex_unlock(&hub->mu);
    resume_all(&rl);
}

void td_sse_hub_free(td_sse_hub_t *hub)
{
    if (!hub) return;
    pthread_mutex_lock(&hub->mu);
    hub->stop = true;
    pthread_cond_signal(&hub->cv);
    pthread_mutex_unlock(&hub->mu);
    pthread_join(hub->thread, NULL);
    /* Streams still listed belong to responses that outlive the hub
     * (only when the HTTP layer was not stopped first): detach them. */
    for (td_sse_stream_t *st = hub->streams; st; st = st->next) st->hub = NULL;
    pthread_cond_destroy(&hub->cv);
    pthread_mutex_destroy(&hub->mu);
    free(hub);
}
