/* Frames, maps and queues of the SSE hub (sse.c): the wire text of an
 * event built once and shared by reference between the streams it goes
 * to, the key and owner maps, and the per-stream out and held queues.
 * Everything but the framing itself runs with hub->mu held. */
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

/* ---- framing ---- */

void td__sse_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n)
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
    td__sse_append(buf, len, cap, name, strlen(name));
    td__sse_append(buf, len, cap, ": ", 2);
    for (const char *p = value; *p;) {
        size_t n = strcspn(p, "\r\n");
        td__sse_append(buf, len, cap, p, n);
        p += n;
        while (*p == '\r' || *p == '\n') p++;
    }
    td__sse_append(buf, len, cap, "\n", 1);
}

/* One prefix line per line of text (LF, CRLF or CR ends a line). */
static void lines(char **buf, size_t *len, size_t *cap, const char *prefix, const char *text)
{
    const char *p = text;
    for (;;) {
        size_t n = strcspn(p, "\r\n");
        td__sse_append(buf, len, cap, prefix, strlen(prefix));
        td__sse_append(buf, len, cap, p, n);
        td__sse_append(buf, len, cap, "\n", 1);
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
    td__sse_append(&buf, &len, &cap, "", 0);
    if (id) field_line(&buf, &len, &cap, "id", id);
    if (event) field_line(&buf, &len, &cap, "event", event);
    if (data) lines(&buf, &len, &cap, "data: ", data);
    td__sse_append(&buf, &len, &cap, "\n", 1);
    return buf;
}

char *td_sse_comment(const char *text)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    td__sse_append(&buf, &len, &cap, "", 0);
    lines(&buf, &len, &cap, ": ", text);
    td__sse_append(&buf, &len, &cap, "\n", 1);
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
frame_t *td__sse_frame_new(td_sse_hub_t *hub, const char *text, size_t len, const char *id)
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

frame_t *td__sse_frame_build(td_sse_hub_t *hub, const char *event, const char *id, const char *data)
{
    char *text = td_sse_frame(event, id, data);
    frame_t *f = td__sse_frame_new(hub, text, strlen(text), id);
    free(text);
    return f;
}

static void frame_ref(frame_t *f)
{
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
}

void td__sse_frame_unref(td_sse_hub_t *hub, frame_t *f)
{
    assert(!f || atomic_load_explicit(&f->refs, memory_order_relaxed) > 0);
    if (f && atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1) {
        atomic_fetch_sub(&hub->frames_live, 1);
        free(f);
    }
}

size_t td__sse_frame_wire(const frame_t *f)
{
    return (size_t)f->pre + f->len + 2;
}

/* ---- maps (hub->mu held) ---- */

uint64_t td__sse_hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

knode_t *td__sse_map_find(const kmap_t *m, const char *name, uint64_t h)
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

knode_t *td__sse_map_get(kmap_t *m, const char *name)
{
    uint64_t h = td__sse_hash_str(name);
    knode_t *n = td__sse_map_find(m, name, h);
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
void td__sse_map_put(kmap_t *m, knode_t *n)
{
    if (n->count > 0 || n->streams) return;
    knode_t **pp = &m->b[n->hash & (m->nb - 1)];
    while (*pp != n) pp = &(*pp)->next;
    *pp = n->next;
    m->cnt--;
    free(n);
}

void td__sse_map_free(kmap_t *m)
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
    td__sse_frame_unref(hub, q->f);
    if (hub->qpool_cnt < QENT_POOL_MAX) {
        q->next = hub->qpool;
        hub->qpool = q;
        hub->qpool_cnt++;
    } else {
        free(q);
    }
}

void td__sse_qlist_free(td_sse_hub_t *hub, qent_t *q)
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

void td__sse_wake(td_sse_hub_t *hub)
{
    assert(td__sse_held(hub));
    if (hub->wake_pending) return;
    hub->wake_pending = true;
    uint64_t one = 1;
    ssize_t n = write(hub->wake_fd, &one, sizeof(one));
    (void)n; /* EAGAIN: the counter is full, so a wake-up is pending anyway */
}

/* The I/O thread should look at st (write, replay, end). */
void td__sse_mark_ready(td_sse_stream_t *st)
{
    assert(td__sse_held(st->hub));
    if (!st->active || st->torn || st->in_ready) return;
    st->in_ready = true;
    st->refs++;
    st->rnext = st->hub->ready;
    st->hub->ready = st;
    td__sse_wake(st->hub);
}

void td__sse_stream_close(td_sse_stream_t *st)
{
    if (st->closed) return;
    st->closed = true;
    st->drain_by = td_mono_ms() + TD_SSE_DRAIN_MS;
}

void td__sse_slow_reader(const td_sse_stream_t *st, const char *what)
{
    td_warn("sse: stream of %s %s; ending it (it will replay on reconnect)",
            st->key ? st->key->name : "?", what);
    td_metric_inc("tidings_sse_slow_readers_total", NULL);
}

void td__sse_out_push(td_sse_stream_t *st, frame_t *f)
{
    assert(td__sse_held(st->hub));
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
        td__sse_slow_reader(st, "is not reading");
        td__sse_stream_close(st);
        return;
    }
    if (f->numeric && (!st->has_floor || f->id > st->floor)) {
        st->floor = f->id;
        st->has_floor = true;
    }
    td__sse_out_push(st, f);
    td_metric_inc("tidings_sse_writes_total", NULL);
}

void td__sse_queue_frame(td_sse_stream_t *st, bool from_publish, frame_t *f)
{
    assert(td__sse_held(st->hub));
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
            td__sse_slow_reader(st, "is not reading");
            td__sse_stream_close(st);
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
    td__sse_mark_ready(st);
}

/* The replay is done: held frames it did not already send go out. */
void td__sse_release_held(td_sse_stream_t *st, int64_t last_id)
{
    assert(td__sse_held(st->hub));
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

void td__sse_replay_step(td_sse_hub_t *hub, td_sse_stream_t *st)
{
    int64_t last = st->replay_last;
    td__sse_unlock(hub);
    int rc = st->replay.next(st->replay.arg, st, &last);
    td__sse_lock(hub);
    st->replay_last = last;
    if (rc < 0)
        td__sse_stream_close(st);
    else if (rc == 0)
        td__sse_release_held(st, last);
}

/* Takes n sent bytes off the head of out (wire bytes when chunked, else
 * text bytes). */
void td__sse_out_consume(td_sse_stream_t *st, size_t n, bool wire)
{
    while (n > 0 && st->out_head) {
        frame_t *f = st->out_head->f;
        size_t size = wire ? td__sse_frame_wire(f) : f->len;
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
