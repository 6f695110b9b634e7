/* Streams of the SSE hub (sse.c): opening one (admission per owner,
 * linking it under its key), the handover of a socket from the HTTP layer
 * (td_resp_takeover), the test-stream API (td__sse_stream_*), and
 * publishing a frame to every stream of a key. */
#include "tidings/sse.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "sse_internal.h"
#include "tidings/log.h"
#include "tidings/metrics.h"

/* ---- streams ---- */

static void stream_link(td_sse_stream_t *st, const char *key, const char *owner)
{
    td_sse_hub_t *hub = st->hub;
    st->key = td__sse_map_get(&hub->keys, key);
    st->knext = st->key->streams;
    if (st->knext) st->knext->kprev = st;
    st->key->streams = st;
    st->key->count++;
    if (owner && *owner) {
        st->owner = td__sse_map_get(&hub->owners, owner);
        st->owner->count++;
    }
    st->anext = hub->all;
    if (hub->all) hub->all->aprev = st;
    hub->all = st;
    hub->count++;
    td_metric_set("tidings_sse_streams_open", NULL, (double)hub->count);
}

void td__sse_stream_unlink(td_sse_stream_t *st)
{
    td_sse_hub_t *hub = st->hub;
    if (!st->key) return;
    if (st->kprev)
        st->kprev->knext = st->knext;
    else
        st->key->streams = st->knext;
    if (st->knext) st->knext->kprev = st->kprev;
    st->key->count--;
    td__sse_map_put(&hub->keys, st->key);
    st->key = NULL;
    if (st->owner) {
        st->owner->count--;
        td__sse_map_put(&hub->owners, st->owner);
        st->owner = NULL;
    }
    if (st->aprev)
        st->aprev->anext = st->anext;
    else
        hub->all = st->anext;
    if (st->anext) st->anext->aprev = st->aprev;
    hub->count--;
    td_metric_set("tidings_sse_streams_open", NULL, (double)hub->count);
}

/* Frees what st holds; hub->mu held, st unlinked and unreferenced. The
 * stream's own callbacks run later, in stream_free_callbacks. */
static void stream_release(td_sse_stream_t *st)
{
    td_sse_hub_t *hub = st->hub;
    td__sse_qlist_free(hub, st->out_head);
    td__sse_qlist_free(hub, st->held_head);
    st->out_head = st->out_tail = st->held_head = st->held_tail = NULL;
    free(st->head);
    st->head = NULL;
}

/* The callbacks and the struct; no lock held (they are the caller's). */
void td__sse_stream_free_callbacks(td_sse_stream_t *st)
{
    if (st->replay.free) st->replay.free(st->replay.arg);
    if (st->filter_free) st->filter_free(st->filter_arg);
    free(st);
}

/* Drops one reference; true when st must now be freed by the caller
 * (with stream_free_callbacks, after unlocking). */
bool td__sse_stream_unref(td_sse_stream_t *st)
{
    assert(td__sse_held(st->hub)); /* refcounted under the lock */
    assert(st->refs > 0);
    if (--st->refs > 0) return false;
    td__sse_stream_unlink(st);
    stream_release(st);
    return true;
}

/* A stream, not yet linked, without its first frame (stream_open queues
 * it under the lock: queue nodes come from the hub's pool). */
static td_sse_stream_t *stream_new(td_sse_hub_t *hub, const td_sse_replay_t *replay)
{
    td_sse_stream_t *st = td_calloc(1, sizeof(*st));
    st->hub = hub;
    st->fd = -1;
    st->refs = 1;
    if (replay) {
        st->replay = *replay;
        st->replay_last = replay->after;
        st->held = true;
        st->ordered = true;
    }
    return st;
}

/* Why a new stream of owner cannot be registered now: 0, 429 or 503
 * (hub->mu held). */
static int admit(td_sse_hub_t *hub, const char *owner, int max_per_owner)
{
    if (hub->closing) return 503;
    if (hub->count >= TD_SSE_MAX_STREAMS) {
        td_metric_inc("tidings_sse_streams_refused_total", "reason=\"hub_full\"");
        return 503;
    }
    if (owner && *owner && max_per_owner > 0) {
        knode_t *n = td__sse_map_find(&hub->owners, owner, td__sse_hash_str(owner));
        if (n && n->count >= (size_t)max_per_owner) {
            td_metric_inc("tidings_sse_streams_refused_total", "reason=\"per_user_cap\"");
            return 429;
        }
    }
    return 0;
}

static void opts_discard(const td_sse_opts_t *o)
{
    if (o->replay && o->replay->free) o->replay->free(o->replay->arg);
    if (o->filter_free) o->filter_free(o->filter_arg);
}

/* A registered stream made from o, or NULL with *status. */
static td_sse_stream_t *stream_open(td_sse_hub_t *hub, const td_sse_opts_t *o, bool socket,
                                    int64_t expires_ms, int *status)
{
    td_sse_stream_t *st = stream_new(hub, o->replay);
    char retry[48];
    int rn = snprintf(retry, sizeof(retry), "retry: %d\n\n", o->retry_ms > 0 ? o->retry_ms : 3000);
    frame_t *first = td__sse_frame_new(hub, retry, (size_t)rn, NULL);
    st->filter = o->filter;
    st->filter_arg = o->filter_arg;
    st->filter_free = o->filter_free;
    st->socket = socket;
    st->expires_ms = expires_ms;
    td__sse_lock(hub);
    *status = admit(hub, o->owner, o->max_per_owner);
    if (*status == 0) {
        stream_link(st, o->key ? o->key : "", o->owner);
        td__sse_out_push(st, first);
    }
    td__sse_unlock(hub);
    td__sse_frame_unref(hub, first);
    if (*status != 0) {
        td__sse_stream_free_callbacks(st);
        return NULL;
    }
    return st;
}

td_sse_stream_t *td__sse_stream_new_opts(td_sse_hub_t *hub, const td_sse_opts_t *opts,
                                         int64_t expires_ms, int *status)
{
    int dummy;
    return stream_open(hub, opts, false, expires_ms, status ? status : &dummy);
}

td_sse_stream_t *td__sse_stream_new(td_sse_hub_t *hub, const char *key, int retry_ms,
                                    const td_sse_replay_t *replay)
{
    td_sse_opts_t o = {.key = key, .retry_ms = retry_ms, .replay = replay};
    int status;
    td_sse_stream_t *st = stream_open(hub, &o, false, 0, &status);
    assert(st); /* tests open a handful */
    return st;
}

void td__sse_stream_free(td_sse_stream_t *st)
{
    if (!st) return;
    td_sse_hub_t *hub = st->hub;
    td__sse_lock(hub);
    assert(!st->socket);
    bool last = td__sse_stream_unref(st);
    td__sse_unlock(hub);
    if (last) td__sse_stream_free_callbacks(st);
}

long td__sse_stream_read(td_sse_stream_t *st, char *buf, size_t max)
{
    td_sse_hub_t *hub = st->hub;
    td__sse_lock(hub);
    for (;;) {
        if (st->out_head) {
            size_t n = 0;
            for (qent_t *q = st->out_head; q && n < max; q = q->next) {
                const frame_t *f = q->f;
                size_t off = q == st->out_head ? st->out_off : 0;
                size_t k = f->len - off;
                if (k > max - n) k = max - n;
                memcpy(buf + n, f->data + f->pre + off, k);
                n += k;
            }
            td__sse_out_consume(st, n, false);
            if (!st->out_bytes) st->stalled_since = 0;
            td__sse_unlock(hub);
            return (long)n;
        }
        if (st->closed) {
            td__sse_unlock(hub);
            return -1;
        }
        if (st->held && st->replay.next) {
            td__sse_replay_step(hub, st);
            continue;
        }
        td__sse_unlock(hub);
        return 0;
    }
}

size_t td__sse_stream_heap(td_sse_stream_t *st)
{
    td__sse_lock(st->hub);
    size_t n = 0;
    for (qent_t *q = st->out_head; q; q = q->next) n += sizeof(*q);
    for (qent_t *q = st->held_head; q; q = q->next) n += sizeof(*q);
    if (st->head) n += st->head_len;
    td__sse_unlock(st->hub);
    return n;
}

size_t td__sse_key_count(td_sse_hub_t *hub, const char *key)
{
    td__sse_lock(hub);
    knode_t *n = td__sse_map_find(&hub->keys, key, td__sse_hash_str(key));
    size_t c = n ? n->count : 0;
    td__sse_unlock(hub);
    return c;
}

size_t td__sse_frames_live(td_sse_hub_t *hub)
{
    return atomic_load(&hub->frames_live);
}

/* ---- the handover from the HTTP layer ---- */

static void set_sockopts(int fd, int64_t stall_ms)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    int on = 1, off = 0;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof(off));
    /* A fixed send buffer: notification frames are small, and a reader
     * that stops reading should reach TD_SSE_MAX_BUFFER soon rather than
     * after megabytes of kernel autotuning. */
    int sndbuf = SNDBUF_BYTES;
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    /* Data unacknowledged for this long (a peer that vanished without a
     * FIN) fails the socket; keepalives make sure there is data. */
    unsigned ut = (unsigned)stall_ms;
    setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
}

static void takeover_start(void *arg, int fd, char *head, size_t head_len, bool chunked)
{
    td_sse_stream_t *st = arg;
    td_sse_hub_t *hub = st->hub;
    set_sockopts(fd, hub->stall_ms);
    td__sse_lock(hub);
    st->fd = fd;
    st->head = head;
    st->head_len = head_len;
    st->chunked = chunked;
    st->active = true;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = st};
    if (epoll_ctl(hub->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        td_warn("sse: cannot watch a stream's socket: %s", strerror(errno));
        st->dead = true; /* the I/O thread tears it down */
    }
    /* Whatever was published since the handler registered it, and the
     * first replay page, go out from the I/O thread. */
    st->in_ready = true;
    st->refs++;
    st->rnext = hub->ready;
    hub->ready = st;
    td__sse_wake(hub);
    td__sse_unlock(hub);
}

static void takeover_cancel(void *arg)
{
    td_sse_stream_t *st = arg;
    td_sse_hub_t *hub = st->hub;
    td__sse_lock(hub);
    st->dead = st->torn = true;
    bool last = td__sse_stream_unref(st);
    td__sse_unlock(hub);
    if (last) td__sse_stream_free_callbacks(st);
}

static td_sse_stream_t *open_stream(td_sse_hub_t *hub, td_req_t *req, td_resp_t *resp,
                                    const td_sse_opts_t *o)
{
    if (req->method && !strcmp(req->method, "HEAD")) {
        opts_discard(o);
        td_resp_empty(resp, 200);
        td_resp_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
        td_resp_header(resp, "Cache-Control", "no-cache");
        return NULL;
    }
    int64_t expires_ms = req->authed && req->auth.exp > 0 ? req->auth.exp * 1000 : 0;
    int status;
    td_sse_stream_t *st = stream_open(hub, o, true, expires_ms, &status);
    if (!st) {
        if (status == 429) {
            td_resp_error(resp, 429, "too many streams for this user (at most %d)",
                          o->max_per_owner);
            td_resp_header(resp, "Retry-After", RETRY_AFTER_S);
        } else {
            td_resp_error(resp, 503, "%s",
                          hub->closing ? "the service is shutting down" : "too many streams");
            td_resp_header(resp, "Retry-After", RETRY_AFTER_S);
        }
        return NULL;
    }
    td_takeover_t to = {.start = takeover_start, .cancel = takeover_cancel, .arg = st};
    td_resp_takeover(resp, 200, &to);
    td_resp_header(resp, "Content-Type", "text/event-stream; charset=utf-8");
    td_resp_header(resp, "Cache-Control", "no-cache");
    td_resp_header(resp, "X-Accel-Buffering", "no");
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

/* ---- publishing ---- */

void td_sse_stream_send(td_sse_stream_t *st, const char *event, const char *id, const char *data)
{
    td_sse_hub_t *hub = st->hub;
    frame_t *f = td__sse_frame_build(hub, event, id, data);
    td__sse_lock(hub);
    td__sse_queue_frame(st, false, f);
    td__sse_unlock(hub);
    td__sse_frame_unref(hub, f);
}

/* Queues f (built on first use) to the streams of node that accept tag. */
static size_t publish_to(td_sse_hub_t *hub, knode_t *node, const void *tag, frame_t **f,
                         const char *event, const char *id, const char *data)
{
    size_t n = 0;
    for (td_sse_stream_t *st = node ? node->streams : NULL; st; st = st->knext) {
        if (st->filter && !st->filter(st->filter_arg, tag)) continue;
        if (!*f) *f = td__sse_frame_build(hub, event, id, data);
        td__sse_queue_frame(st, true, *f);
        n++;
    }
    return n;
}

size_t td_sse_publish(td_sse_hub_t *hub, const char *key, const char *event, const char *id,
                      const char *data)
{
    return td_sse_publish_tagged(hub, key, NULL, event, id, data);
}

size_t td_sse_publish_tagged(td_sse_hub_t *hub, const char *key, const void *tag, const char *event,
                             const char *id, const char *data)
{
    frame_t *f = NULL;
    td__sse_lock(hub);
    size_t n = publish_to(hub, td__sse_map_find(&hub->keys, key, td__sse_hash_str(key)), tag, &f,
                          event, id, data);
    if (strcmp(key, "*") != 0)
        n += publish_to(hub, td__sse_map_find(&hub->keys, "*", td__sse_hash_str("*")), tag, &f,
                        event, id, data);
    td__sse_unlock(hub);
    if (f) td__sse_frame_unref(hub, f);
    return n;
}

size_t td_sse_count(td_sse_hub_t *hub)
{
    td__sse_lock(hub);
    size_t n = hub->count;
    td__sse_unlock(hub);
    return n;
}
