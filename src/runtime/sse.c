/* Server-Sent Events (see tidings/sse.h). A handler registers a stream in
 * the hub's index; when it returns, the HTTP layer hands the socket over
 * (td_resp_takeover) and from then on the hub's I/O thread owns it: one
 * epoll set for every stream, an eventfd to wake it, writev from shared
 * frames. libmicrohttpd keeps nothing of a stream, so an idle one costs
 * its td_sse_stream_t and its key, nothing else.
 *
 * One lock, hub->mu, guards everything here: the key and owner maps, the
 * list of all streams, each stream's queues and flags, the ready list and
 * the replay queue. It is never held across a system call that can block
 * (writev on a non-blocking socket does not) nor across a replay callback.
 *
 * Who touches what: publishers and replays only append to a stream's
 * queues; only the I/O thread (or, for the socket-less test streams, the
 * reading thread) takes frames off the head of the out queue, so it may
 * write the head frames with the lock released. Streams are refcounted
 * under the lock (the hub's own reference, one while on the ready list,
 * one while a replay job holds it); only the I/O thread tears a socket
 * stream down, and a stream is freed when its last reference goes. */
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

#include "tidings/log.h"
#include "tidings/metrics.h"

#define IOV_BATCH      64
#define QENT_POOL_MAX  4096 /* queue nodes kept for reuse */
#define TICK_MS        1000 /* expiry and drain checks */
#define SNDBUF_BYTES   (64 * 1024)
#define RETRY_AFTER_S  "10"
#define MAP_MIN_BUCKET 64

/* A frame shared by every stream it was published to: its text with the
 * chunk framing around it, so a chunked stream writes data[0..wire) and a
 * raw one data[pre..pre+len). Immutable once built. */
typedef struct frame {
    atomic_uint refs;
    bool numeric;
    int64_t id;
    uint32_t len; /* text bytes */
    uint8_t pre;  /* "<hex len>\r\n" */
    char data[];  /* pre + text + "\r\n" + NUL */
} frame_t;

typedef struct qent {
    struct qent *next;
    frame_t *f;
} qent_t;

/* A name in a map: a key with its streams, or an owner with its count. */
typedef struct knode {
    struct knode *next; /* bucket chain */
    uint64_t hash;
    size_t count;
    td_sse_stream_t *streams; /* key map only */
    char name[];
} knode_t;

typedef struct kmap {
    knode_t **b;
    size_t nb, cnt;
} kmap_t;

struct td_sse_stream {
    td_sse_hub_t *hub;
    td_sse_stream_t *kprev, *knext; /* the key's streams */
    td_sse_stream_t *aprev, *anext; /* hub->all */
    td_sse_stream_t *rnext;         /* ready list (or a list of streams to free) */
    td_sse_stream_t *qnext;         /* replay queue */
    knode_t *key;
    knode_t *owner;
    unsigned refs;
    int fd; /* -1: no socket (yet, or a test stream) */

    qent_t *out_head, *out_tail;   /* to send; out_off bytes of the head sent */
    size_t out_off, out_bytes;     /* out_bytes: text bytes queued, not sent */
    qent_t *held_head, *held_tail; /* live frames waiting for the replay */
    size_t held_bytes;
    char *head; /* the response head not yet (fully) written */
    size_t head_len, head_off;

    int64_t floor;         /* highest numeric id queued */
    int64_t replay_last;   /* the replay's *last_id between calls */
    int64_t expires_ms;    /* wall clock; 0: never */
    int64_t drain_by;      /* monotonic: cut when not drained by then */
    int64_t stalled_since; /* monotonic: queued bytes, no progress since */
    td_sse_replay_t replay;
    td_sse_filter_fn filter;
    void *filter_arg;
    void (*filter_free)(void *arg);

    bool socket; /* made for a connection (fd comes with the takeover) */
    bool active; /* the socket was handed over */
    bool chunked;
    bool held;
    bool ordered; /* numeric ids increase: drop those not above floor */
    bool has_floor;
    bool closed; /* takes no more frames; ends once out is sent */
    bool dead;   /* to be torn down by the I/O thread */
    bool torn;   /* torn down: unlinked, socket closed */
    bool in_ready;
    bool replaying; /* a replay job is queued or running */
};

struct td_sse_hub {
    pthread_mutex_t mu;
    kmap_t keys, owners;
    td_sse_stream_t *all;
    size_t count;
    bool closing;
    int keepalive_s;
    int64_t stall_ms;

    frame_t *keepalive; /* shared by every keepalive */
    frame_t *expired;   /* ": token expired" */
    qent_t *qpool;
    size_t qpool_cnt;
    atomic_size_t frames_live;

    int ep, wake_fd;
    td_sse_stream_t *ready; /* streams the I/O thread should look at */
    bool wake_pending;
    pthread_t io_thread;
    bool stop;

    td_sse_stream_t *rq_head, *rq_tail; /* replay jobs */
    pthread_cond_t rq_cv;
    pthread_t replay_thread;
    bool rq_stop;
};

static int64_t wall_ms(void)
{
    return td_now_ms();
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

/* A shared frame of text[0..len) (copied), with one reference. */
static frame_t *frame_new(td_sse_hub_t *hub, const char *text, size_t len, const char *id)
{
    assert(len < UINT32_MAX);
    char pre[16];
    int pn = snprintf(pre, sizeof(pre), "%zx\r\n", len);
    frame_t *f = td_malloc(sizeof(*f) + (size_t)pn + len + 3);
    atomic_init(&f->refs, 1);
    f->numeric = parse_id(id, &f->id);
    if (!f->numeric) f->id = 0;
    f->len = (uint32_t)len;
    f->pre = (uint8_t)pn;
    memcpy(f->data, pre, (size_t)pn);
    memcpy(f->data + pn, text, len);
    memcpy(f->data + pn + len, "\r\n", 3);
    atomic_fetch_add(&hub->frames_live, 1);
    return f;
}

static frame_t *frame_build(td_sse_hub_t *hub, const char *event, const char *id, const char *data)
{
    char *text = td_sse_frame(event, id, data);
    frame_t *f = frame_new(hub, text, strlen(text), id);
    free(text);
    return f;
}

static void frame_ref(frame_t *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
}

static void frame_unref(td_sse_hub_t *hub, frame_t *f)
{
    if (f && atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) {
        atomic_fetch_sub(&hub->frames_live, 1);
        free(f);
    }
}

static size_t frame_wire(const frame_t *f)
{
    return (size_t)f->pre + f->len + 2;
}

/* ---- maps (hub->mu held) ---- */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static knode_t *map_find(const kmap_t *m, const char *name, uint64_t h)
{
    if (!m->nb) return NULL;
    for (knode_t *n = m->b[h & (m->nb - 1)]; n; n = n->next)
        if (n->hash == h && !strcmp(n->name, name)) return n;
    return NULL;
}

static void map_grow(kmap_t *m)
{
    size_t nb = m->nb ? m->nb * 2 : MAP_MIN_BUCKET;
    knode_t **b = td_calloc(nb, sizeof(*b));
    for (size_t i = 0; i < m->nb; i++) {
        for (knode_t *n = m->b[i], *next; n; n = next) {
            next = n->next;
            n->next = b[n->hash & (nb - 1)];
            b[n->hash & (nb - 1)] = n;
        }
    }
    free(m->b);
    m->b = b;
    m->nb = nb;
}

static knode_t *map_get(kmap_t *m, const char *name)
{
    uint64_t h = hash_str(name);
    knode_t *n = map_find(m, name, h);
    if (n) return n;
    if (m->cnt + 1 > m->nb) map_grow(m);
    size_t len = strlen(name);
    n = td_calloc(1, sizeof(*n) + len + 1);
    memcpy(n->name, name, len + 1);
    n->hash = h;
    n->next = m->b[h & (m->nb - 1)];
    m->b[h & (m->nb - 1)] = n;
    m->cnt++;
    return n;
}

/* Drops n when nothing counts on it any more. */
static void map_put(kmap_t *m, knode_t *n)
{
    if (n->count > 0 || n->streams) return;
    knode_t **pp = &m->b[n->hash & (m->nb - 1)];
    while (*pp != n) pp = &(*pp)->next;
    *pp = n->next;
    m->cnt--;
    free(n);
}

static void map_free(kmap_t *m)
{
    for (size_t i = 0; i < m->nb; i++) {
        for (knode_t *n = m->b[i], *next; n; n = next) {
            next = n->next;
            free(n);
        }
    }
    free(m->b);
    memset(m, 0, sizeof(*m));
}

/* ---- queues (hub->mu held) ---- */

static qent_t *qent_get(td_sse_hub_t *hub, frame_t *f)
{
    qent_t *q = hub->qpool;
    if (q) {
        hub->qpool = q->next;
        hub->qpool_cnt--;
    } else {
        q = td_malloc(sizeof(*q));
    }
    q->next = NULL;
    q->f = f;
    frame_ref(f);
    return q;
}

static void qent_put(td_sse_hub_t *hub, qent_t *q)
{
    frame_unref(hub, q->f);
    if (hub->qpool_cnt < QENT_POOL_MAX) {
        q->next = hub->qpool;
        hub->qpool = q;
        hub->qpool_cnt++;
    } else {
        free(q);
    }
}

static void qlist_free(td_sse_hub_t *hub, qent_t *q)
{
    while (q) {
        qent_t *next = q->next;
        qent_put(hub, q);
        q = next;
    }
}

static size_t pending_bytes(const td_sse_stream_t *st)
{
    return st->out_bytes + st->held_bytes;
}

static void wake(td_sse_hub_t *hub)
{
    if (hub->wake_pending) return;
    hub->wake_pending = true;
    uint64_t one = 1;
    ssize_t n = write(hub->wake_fd, &one, sizeof(one));
    (void)n; /* EAGAIN: the counter is full, so a wake-up is pending anyway */
}

/* The I/O thread should look at st (write, replay, end). */
static void mark_ready(td_sse_stream_t *st)
{
    if (!st->active || st->torn || st->in_ready) return;
    st->in_ready = true;
    st->refs++;
    st->rnext = st->hub->ready;
    st->hub->ready = st;
    wake(st->hub);
}

static void stream_close(td_sse_stream_t *st)
{
    if (st->closed) return;
    st->closed = true;
    st->drain_by = td_mono_ms() + TD_SSE_DRAIN_MS;
}

static void out_push(td_sse_stream_t *st, frame_t *f)
{
    qent_t *q = qent_get(st->hub, f);
    if (st->out_tail)
        st->out_tail->next = q;
    else
        st->out_head = q;
    st->out_tail = q;
    if (!st->out_bytes && !st->stalled_since) st->stalled_since = td_mono_ms();
    st->out_bytes += f->len;
}

/* The frame goes to out, unless the stream drops it as seen. */
static void queue_out(td_sse_stream_t *st, frame_t *f)
{
    if (st->ordered && f->numeric && st->has_floor && f->id <= st->floor) {
        td_metric_inc("tidings_sse_duplicates_dropped_total", NULL);
        return;
    }
    if (pending_bytes(st) + f->len > TD_SSE_MAX_BUFFER) {
        td_warn("sse: stream of %s is not reading; ending it (it will replay on reconnect)",
                st->key ? st->key->name : "?");
        td_metric_inc("tidings_sse_slow_readers_total", NULL);
        stream_close(st);
        return;
    }
    if (f->numeric && (!st->has_floor || f->id > st->floor)) {
        st->floor = f->id;
        st->has_floor = true;
    }
    out_push(st, f);
    td_metric_inc("tidings_sse_writes_total", NULL);
}

static void queue_frame(td_sse_stream_t *st, bool from_publish, frame_t *f)
{
    if (st->closed) return;
    if (from_publish && !st->held && st->replay.contiguous && f->numeric && st->has_floor &&
        f->id > st->floor + 1) {
        /* Frames between floor and this one were missed: replay them
         * first; this one waits with the held frames. */
        st->held = true;
        st->replay_last = st->floor;
        td_metric_inc("tidings_sse_gap_fills_total", NULL);
    }
    if (from_publish && st->held) {
        if (pending_bytes(st) + f->len > TD_SSE_MAX_BUFFER) {
            td_warn("sse: stream of %s is not reading; ending it (it will replay on reconnect)",
                    st->key ? st->key->name : "?");
            td_metric_inc("tidings_sse_slow_readers_total", NULL);
            stream_close(st);
        } else {
            qent_t *q = qent_get(st->hub, f);
            if (st->held_tail)
                st->held_tail->next = q;
            else
                st->held_head = q;
            st->held_tail = q;
            st->held_bytes += f->len;
        }
    } else {
        queue_out(st, f);
    }
    mark_ready(st);
}

/* The replay is done: held frames it did not already send go out. */
static void release_held(td_sse_stream_t *st, int64_t last_id)
{
    st->held = false;
    if (!st->has_floor || last_id > st->floor) {
        st->floor = last_id;
        st->has_floor = true;
    }
    qent_t *q = st->held_head;
    st->held_head = st->held_tail = NULL;
    st->held_bytes = 0;
    while (q) {
        qent_t *next = q->next;
        queue_out(st, q->f);
        qent_put(st->hub, q);
        q = next;
    }
}

/* Takes n sent bytes off the head of out (wire bytes when chunked, else
 * text bytes). */
static void out_consume(td_sse_stream_t *st, size_t n, bool wire)
{
    while (n > 0 && st->out_head) {
        frame_t *f = st->out_head->f;
        size_t size = wire ? frame_wire(f) : f->len;
        size_t left = size - st->out_off;
        if (n < left) {
            st->out_off += n;
            return;
        }
        n -= left;
        st->out_off = 0;
        st->out_bytes -= f->len;
        qent_t *q = st->out_head;
        st->out_head = q->next;
        if (!st->out_head) st->out_tail = NULL;
        qent_put(st->hub, q);
    }
}

/* ---- streams ---- */

static void stream_link(td_sse_stream_t *st, const char *key, const char *owner)
{
    td_sse_hub_t *hub = st->hub;
    st->key = map_get(&hub->keys, key);
    st->knext = st->key->streams;
    if (st->knext) st->knext->kprev = st;
    st->key->streams = st;
    st->key->count++;
    if (owner && *owner) {
        st->owner = map_get(&hub->owners, owner);
        st->owner->count++;
    }
    st->anext = hub->all;
    if (hub->all) hub->all->aprev = st;
    hub->all = st;
    hub->count++;
    td_metric_set("tidings_sse_streams_open", NULL, (double)hub->count);
}

static void stream_unlink(td_sse_stream_t *st)
{
    td_sse_hub_t *hub = st->hub;
    if (!st->key) return;
    if (st->kprev)
        st->kprev->knext = st->knext;
    else
        st->key->streams = st->knext;
    if (st->knext) st->knext->kprev = st->kprev;
    st->key->count--;
    map_put(&hub->keys, st->key);
    st->key = NULL;
    if (st->owner) {
        st->owner->count--;
        map_put(&hub->owners, st->owner);
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
    qlist_free(hub, st->out_head);
    qlist_free(hub, st->held_head);
    st->out_head = st->out_tail = st->held_head = st->held_tail = NULL;
    free(st->head);
    st->head = NULL;
}

/* The callbacks and the struct; no lock held (they are the caller's). */
static void stream_free_callbacks(td_sse_stream_t *st)
{
    if (st->replay.free) st->replay.free(st->replay.arg);
    if (st->filter_free) st->filter_free(st->filter_arg);
    free(st);
}

/* Drops one reference; true when st must now be freed by the caller
 * (with stream_free_callbacks, after unlocking). */
static bool stream_unref(td_sse_stream_t *st)
{
    assert(st->refs > 0);
    if (--st->refs > 0) return false;
    stream_unlink(st);
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
        knode_t *n = map_find(&hub->owners, owner, hash_str(owner));
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
    frame_t *first = frame_new(hub, retry, (size_t)rn, NULL);
    st->filter = o->filter;
    st->filter_arg = o->filter_arg;
    st->filter_free = o->filter_free;
    st->socket = socket;
    st->expires_ms = expires_ms;
    pthread_mutex_lock(&hub->mu);
    *status = admit(hub, o->owner, o->max_per_owner);
    if (*status == 0) {
        stream_link(st, o->key ? o->key : "", o->owner);
        out_push(st, first);
    }
    pthread_mutex_unlock(&hub->mu);
    frame_unref(hub, first);
    if (*status != 0) {
        stream_free_callbacks(st);
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
    pthread_mutex_lock(&hub->mu);
    assert(!st->socket);
    bool last = stream_unref(st);
    pthread_mutex_unlock(&hub->mu);
    if (last) stream_free_callbacks(st);
}

long td__sse_stream_read(td_sse_stream_t *st, char *buf, size_t max)
{
    td_sse_hub_t *hub = st->hub;
    pthread_mutex_lock(&hub->mu);
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
            out_consume(st, n, false);
            if (!st->out_bytes) st->stalled_since = 0;
            pthread_mutex_unlock(&hub->mu);
            return (long)n;
        }
        if (st->closed) {
            pthread_mutex_unlock(&hub->mu);
            return -1;
        }
        if (st->held && st->replay.next) {
            /* The replay sends through td_sse_stream_send, which locks. */
            int64_t last = st->replay_last;
            pthread_mutex_unlock(&hub->mu);
            int rc = st->replay.next(st->replay.arg, st, &last);
            pthread_mutex_lock(&hub->mu);
            st->replay_last = last;
            if (rc < 0)
                stream_close(st);
            else if (rc == 0)
                release_held(st, last);
            continue;
        }
        pthread_mutex_unlock(&hub->mu);
        return 0;
    }
}

size_t td__sse_stream_heap(td_sse_stream_t *st)
{
    pthread_mutex_lock(&st->hub->mu);
    size_t n = 0;
    for (qent_t *q = st->out_head; q; q = q->next) n += sizeof(*q);
    for (qent_t *q = st->held_head; q; q = q->next) n += sizeof(*q);
    if (st->head) n += st->head_len;
    pthread_mutex_unlock(&st->hub->mu);
    return n;
}

size_t td__sse_key_count(td_sse_hub_t *hub, const char *key)
{
    pthread_mutex_lock(&hub->mu);
    knode_t *n = map_find(&hub->keys, key, hash_str(key));
    size_t c = n ? n->count : 0;
    pthread_mutex_unlock(&hub->mu);
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
    pthread_mutex_lock(&hub->mu);
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
    wake(hub);
    pthread_mutex_unlock(&hub->mu);
}

static void takeover_cancel(void *arg)
{
    td_sse_stream_t *st = arg;
    td_sse_hub_t *hub = st->hub;
    pthread_mutex_lock(&hub->mu);
    st->dead = st->torn = true;
    bool last = stream_unref(st);
    pthread_mutex_unlock(&hub->mu);
    if (last) stream_free_callbacks(st);
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
    frame_t *f = frame_build(hub, event, id, data);
    pthread_mutex_lock(&hub->mu);
    queue_frame(st, false, f);
    pthread_mutex_unlock(&hub->mu);
    frame_unref(hub, f);
}

/* Queues f (built on first use) to the streams of node that accept tag. */
static size_t publish_to(td_sse_hub_t *hub, knode_t *node, const void *tag, frame_t **f,
                         const char *event, const char *id, const char *data)
{
    size_t n = 0;
    for (td_sse_stream_t *st = node ? node->streams : NULL; st; st = st->knext) {
        if (st->filter && !st->filter(st->filter_arg, tag)) continue;
        if (!*f) *f = frame_build(hub, event, id, data);
        queue_frame(st, true, *f);
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
    pthread_mutex_lock(&hub->mu);
    size_t n = publish_to(hub, map_find(&hub->keys, key, hash_str(key)), tag, &f, event, id, data);
    if (strcmp(key, "*") != 0)
        n += publish_to(hub, map_find(&hub->keys, "*", hash_str("*")), tag, &f, event, id, data);
    pthread_mutex_unlock(&hub->mu);
    if (f) frame_unref(hub, f);
    return n;
}

size_t td_sse_count(td_sse_hub_t *hub)
{
    pthread_mutex_lock(&hub->mu);
    size_t n = hub->count;
    pthread_mutex_unlock(&hub->mu);
    return n;
}

/* ---- the I/O thread ---- */

/* Closes st's socket and drops the hub's reference (hub->mu held). The
 * caller frees st when this returns true. */
static bool teardown(td_sse_stream_t *st)
{
    td_sse_hub_t *hub = st->hub;
    if (st->fd >= 0) {
        epoll_ctl(hub->ep, EPOLL_CTL_DEL, st->fd, NULL);
        /* What the client sent after its request is unread: drain it, so
         * close() sends a FIN after the queued bytes rather than a reset
         * that would throw them away. */
        char junk[512];
        while (recv(st->fd, junk, sizeof(junk), MSG_DONTWAIT) > 0) {
        }
        shutdown(st->fd, SHUT_WR);
        close(st->fd);
        st->fd = -1;
    }
    st->dead = true;
    if (st->torn) return false;
    st->torn = true;
    stream_unlink(st);
    return stream_unref(st);
}

/* Queues a replay job for st (hub->mu held). */
static void replay_queue(td_sse_stream_t *st)
{
    td_sse_hub_t *hub = st->hub;
    st->replaying = true;
    st->refs++;
    st->qnext = NULL;
    if (hub->rq_tail)
        hub->rq_tail->qnext = st;
    else
        hub->rq_head = st;
    hub->rq_tail = st;
    pthread_cond_signal(&hub->rq_cv);
}

/* Writes what st has, as far as the socket takes it, then starts its
 * replay or ends it when that is due. hub->mu held (released around
 * writev). True when st must be freed. */
static bool service(td_sse_stream_t *st)
{
    td_sse_hub_t *hub = st->hub;
    static const char trailer[] = "0\r\n\r\n";
    for (;;) {
        if (st->dead) return teardown(st);
        struct iovec iov[IOV_BATCH];
        int cnt = 0;
        size_t head_left = 0;
        if (st->head) {
            head_left = st->head_len - st->head_off;
            iov[cnt++] = (struct iovec){st->head + st->head_off, head_left};
        }
        for (qent_t *q = st->out_head; q && cnt < IOV_BATCH; q = q->next) {
            const frame_t *f = q->f;
            size_t off = q == st->out_head ? st->out_off : 0;
            const char *p = st->chunked ? f->data : f->data + f->pre;
            size_t len = st->chunked ? frame_wire(f) : f->len;
            iov[cnt++] = (struct iovec){(void *)(p + off), len - off};
        }
        if (cnt == 0) {
            st->stalled_since = 0;
            if (st->closed) {
                if (st->chunked) {
                    ssize_t w = send(st->fd, trailer, sizeof(trailer) - 1, MSG_NOSIGNAL);
                    (void)w; /* best effort: the connection ends either way */
                }
                return teardown(st);
            }
            if (st->held && st->replay.next && !st->replaying) replay_queue(st);
            return false;
        }
        pthread_mutex_unlock(&hub->mu);
        ssize_t n = writev(st->fd, iov, cnt);
        int err = errno;
        pthread_mutex_lock(&hub->mu);
        if (n < 0) {
            if (err == EINTR) continue;
            if (err == EAGAIN || err == EWOULDBLOCK) return false; /* EPOLLOUT comes */
            return teardown(st);
        }
        size_t w = (size_t)n;
        if (head_left) {
            size_t k = w < head_left ? w : head_left;
            st->head_off += k;
            w -= k;
            if (st->head_off == st->head_len) {
                free(st->head);
                st->head = NULL;
                st->head_len = st->head_off = 0;
            }
        }
        out_consume(st, w, st->chunked);
        st->stalled_since = st->out_head ? td_mono_ms() : 0;
    }
}

static void free_list_add(td_sse_stream_t ***tail, td_sse_stream_t *st)
{
    st->rnext = NULL;
    **tail = st;
    *tail = &st->rnext;
}

static void free_list_run(td_sse_stream_t *list)
{
    while (list) {
        td_sse_stream_t *next = list->rnext;
        stream_free_callbacks(list);
        list = next;
    }
}

/* The ready list, until it stays empty (hub->mu held). */
static void run_ready(td_sse_hub_t *hub, td_sse_stream_t ***free_tail)
{
    while (hub->ready) {
        td_sse_stream_t *list = hub->ready;
        hub->ready = NULL;
        while (list) {
            td_sse_stream_t *st = list;
            list = st->rnext;
            st->in_ready = false;
            if (service(st)) {
                free_list_add(free_tail, st);
                continue;
            }
            if (stream_unref(st)) free_list_add(free_tail, st);
        }
    }
}

void td__sse_hub_keepalive(td_sse_hub_t *hub)
{
    pthread_mutex_lock(&hub->mu);
    for (td_sse_stream_t *st = hub->all; st; st = st->anext) {
        /* A stream with bytes still queued is not idle and would only
         * grow; the keepalive is for the quiet ones. */
        if (st->closed || st->dead || st->out_head || st->head) continue;
        out_push(st, hub->keepalive);
        mark_ready(st);
    }
    pthread_mutex_unlock(&hub->mu);
}

void td__sse_hub_tick(td_sse_hub_t *hub, int64_t now_ms)
{
    int64_t mono = td_mono_ms();
    pthread_mutex_lock(&hub->mu);
    for (td_sse_stream_t *st = hub->all; st; st = st->anext) {
        if (st->dead) continue;
        if (st->expires_ms && now_ms >= st->expires_ms && !st->closed) {
            /* The token that opened it no longer entitles anyone to it. */
            out_push(st, hub->expired);
            stream_close(st);
            td_metric_inc("tidings_sse_streams_expired_total", NULL);
            mark_ready(st);
        }
        if (!st->active) continue;
        if ((st->closed && mono >= st->drain_by) ||
            (st->stalled_since && mono - st->stalled_since >= hub->stall_ms)) {
            /* It takes nothing: cut it, whatever is still queued. */
            st->dead = true;
            mark_ready(st);
        }
    }
    pthread_mutex_unlock(&hub->mu);
}

static void *io_main(void *arg)
{
    td_sse_hub_t *hub = arg;
    struct epoll_event evs[256];
    int64_t next_tick = td_mono_ms() + TICK_MS;
    int64_t next_keepalive = td_mono_ms() + (int64_t)hub->keepalive_s * 1000;
    for (;;) {
        int64_t now = td_mono_ms();
        int64_t due = next_tick < next_keepalive ? next_tick : next_keepalive;
        int timeout = due > now ? (int)(due - now) : 0;
        int n = epoll_wait(hub->ep, evs, (int)TD_ARRAY_SIZE(evs), timeout);
        if (n < 0 && errno != EINTR) {
            td_error("sse: epoll_wait: %s", strerror(errno));
            td_sleep_ms(10);
        }
        td_sse_stream_t *to_free = NULL, **free_tail = &to_free;
        pthread_mutex_lock(&hub->mu);
        if (hub->stop) {
            pthread_mutex_unlock(&hub->mu);
            break;
        }
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == NULL) {
                uint64_t v;
                ssize_t r = read(hub->wake_fd, &v, sizeof(v));
                (void)r;
                hub->wake_pending = false;
                continue;
            }
            td_sse_stream_t *st = evs[i].data.ptr;
            if (evs[i].events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) st->dead = true;
            if (evs[i].events & EPOLLIN) {
                /* A stream's client has nothing more to say: its end, or
                 * junk after the request, read and dropped. */
                char junk[512];
                ssize_t r;
                while ((r = recv(st->fd, junk, sizeof(junk), MSG_DONTWAIT)) > 0) {
                }
                if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                    st->dead = true;
            }
            mark_ready(st);
        }
        run_ready(hub, &free_tail);
        pthread_mutex_unlock(&hub->mu);
        free_list_run(to_free);

        now = td_mono_ms();
        if (now >= next_keepalive) {
            td__sse_hub_keepalive(hub);
            next_keepalive = now + (int64_t)hub->keepalive_s * 1000;
        }
        if (now >= next_tick) {
            td__sse_hub_tick(hub, wall_ms());
            next_tick = now + TICK_MS;
        }
    }
    return NULL;
}

/* ---- the replay thread ---- */

static void *replay_main(void *arg)
{
    td_sse_hub_t *hub = arg;
    pthread_mutex_lock(&hub->mu);
    for (;;) {
        while (!hub->rq_stop && !hub->rq_head) pthread_cond_wait(&hub->rq_cv, &hub->mu);
        if (hub->rq_stop) break;
        td_sse_stream_t *st = hub->rq_head;
        hub->rq_head = st->qnext;
        if (!hub->rq_head) hub->rq_tail = NULL;
        if (!st->dead && !st->closed && st->held) {
            int64_t last = st->replay_last;
            pthread_mutex_unlock(&hub->mu);
            int rc = st->replay.next(st->replay.arg, st, &last);
            pthread_mutex_lock(&hub->mu);
            st->replay_last = last;
            if (rc < 0)
                stream_close(st);
            else if (rc == 0)
                release_held(st, last);
        }
        st->replaying = false;
        mark_ready(st); /* the next page, or what the replay released */
        if (stream_unref(st)) {
            pthread_mutex_unlock(&hub->mu);
            stream_free_callbacks(st);
            pthread_mutex_lock(&hub->mu);
        }
    }
    /* Jobs left: their streams are torn down by td_sse_hub_free. */
    while (hub->rq_head) {
        td_sse_stream_t *st = hub->rq_head;
        hub->rq_head = st->qnext;
        st->replaying = false;
        st->refs--;
    }
    hub->rq_tail = NULL;
    pthread_mutex_unlock(&hub->mu);
    return NULL;
}

/* ---- the hub ---- */

static frame_t *static_frame(td_sse_hub_t *hub, const char *text)
{
    return frame_new(hub, text, strlen(text), NULL);
}

td_sse_hub_t *td_sse_hub_new(int keepalive_s)
{
    td_sse_hub_t *hub = td_calloc(1, sizeof(*hub));
    pthread_mutex_init(&hub->mu, NULL);
    pthread_cond_init(&hub->rq_cv, NULL);
    atomic_init(&hub->frames_live, 0);
    hub->keepalive_s = keepalive_s > 0 ? keepalive_s : 15;
    /* A stream that takes nothing for a few keepalive periods is gone. */
    hub->stall_ms = (int64_t)(hub->keepalive_s * 3 > 30 ? hub->keepalive_s * 3 : 30) * 1000;
    hub->keepalive = static_frame(hub, ": keepalive\n\n");
    hub->expired = static_frame(hub, ": token expired\n\n");
    td_metric_describe("tidings_sse_streams_open", "gauge", "Server-sent event streams open.");
    td_metric_describe("tidings_sse_writes_total", "counter",
                       "Frames queued to server-sent event streams (keepalives not counted).");
    td_metric_describe("tidings_sse_duplicates_dropped_total", "counter",
                       "Frames a stream had already sent (replay seam, redelivery), dropped.");
    td_metric_describe("tidings_sse_gap_fills_total", "counter",
                       "Replays run again because a live frame skipped ids.");
    td_metric_describe("tidings_sse_slow_readers_total", "counter",
                       "Streams ended because their client did not take its frames.");
    td_metric_describe("tidings_sse_streams_expired_total", "counter",
                       "Streams ended because the token that opened them expired.");
    td_metric_describe("tidings_sse_streams_refused_total", "counter",
                       "Streams refused, by reason (per_user_cap, hub_full).");
    td_metric_set("tidings_sse_streams_open", NULL, 0);

    hub->ep = epoll_create1(EPOLL_CLOEXEC);
    hub->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (hub->ep < 0 || hub->wake_fd < 0 || epoll_ctl(hub->ep, EPOLL_CTL_ADD, hub->wake_fd, &ev)) {
        td_error("sse: cannot make the hub's epoll set: %s", strerror(errno));
        td_oom();
    }
    /* Threads are a resource like memory: without them there is no hub. */
    if (pthread_create(&hub->io_thread, NULL, io_main, hub) != 0 ||
        pthread_create(&hub->replay_thread, NULL, replay_main, hub) != 0) {
        td_error("sse: cannot start the hub's threads");
        td_oom();
    }
    return hub;
}

void td_sse_hub_close(td_sse_hub_t *hub)
{
    if (!hub) return;
    pthread_mutex_lock(&hub->mu);
    hub->closing = true;
    for (td_sse_stream_t *st = hub->all; st; st = st->anext) {
        stream_close(st);
        mark_ready(st);
    }
    pthread_mutex_unlock(&hub->mu);
}

void td_sse_hub_free(td_sse_hub_t *hub)
{
    if (!hub) return;
    pthread_mutex_lock(&hub->mu);
    hub->stop = true;
    hub->rq_stop = true;
    pthread_cond_signal(&hub->rq_cv);
    uint64_t one = 1;
    ssize_t w = write(hub->wake_fd, &one, sizeof(one));
    (void)w;
    pthread_mutex_unlock(&hub->mu);
    pthread_join(hub->io_thread, NULL);
    pthread_join(hub->replay_thread, NULL);

    /* Every stream left: sockets closed, test streams too (a test that
     * forgot one leaks nothing). */
    td_sse_stream_t *to_free = NULL, **free_tail = &to_free;
    pthread_mutex_lock(&hub->mu);
    while (hub->ready) {
        td_sse_stream_t *st = hub->ready;
        hub->ready = st->rnext;
        st->in_ready = false;
        st->refs--;
    }
    while (hub->all) {
        td_sse_stream_t *st = hub->all;
        st->refs = 1;
        if (teardown(st)) free_list_add(&free_tail, st);
    }
    frame_unref(hub, hub->keepalive);
    frame_unref(hub, hub->expired);
    while (hub->qpool) {
        qent_t *q = hub->qpool;
        hub->qpool = q->next;
        free(q);
    }
    map_free(&hub->keys);
    map_free(&hub->owners);
    pthread_mutex_unlock(&hub->mu);
    free_list_run(to_free);
    close(hub->ep);
    close(hub->wake_fd);
    pthread_cond_destroy(&hub->rq_cv);
    pthread_mutex_destroy(&hub->mu);
    free(hub);
}
