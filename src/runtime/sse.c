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

#include "sse_internal.h"
#include "tidings/log.h"
#include "tidings/metrics.h"
static int64_t wall_ms(void)
{
    return td_now_ms();
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
    td__sse_stream_unlink(st);
    return td__sse_stream_unref(st);
}

/* The socket of st failed with err (hub->mu held). ETIMEDOUT is the
 * stall cut made by the kernel: TCP_USER_TIMEOUT (stall_ms) ends a
 * connection whose data went unacknowledged, or whose receive window
 * stayed shut, that long. The window of a client that stopped reading
 * shuts while the send buffer still takes frames, so the kernel often
 * comes before the tick: count it as the tick would. */
static void socket_failed(td_sse_stream_t *st, int err)
{
    if (err != ETIMEDOUT || st->closed || st->dead) return;
    char what[64];
    snprintf(what, sizeof(what), "took nothing for %lld s (the connection timed out)",
             (long long)(st->hub->stall_ms / 1000));
    td__sse_slow_reader(st, what);
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
bool td__sse_service(td_sse_stream_t *st)
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
            size_t len = st->chunked ? td__sse_frame_wire(f) : f->len;
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
        td__sse_unlock(hub);
        ssize_t n = writev(st->fd, iov, cnt);
        int err = errno;
        td__sse_lock(hub);
        if (n < 0) {
            if (err == EINTR) continue;
            if (err == EAGAIN || err == EWOULDBLOCK) return false; /* EPOLLOUT comes */
            socket_failed(st, err);
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
        td__sse_out_consume(st, w, st->chunked);
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
        td__sse_stream_free_callbacks(list);
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
            if (td__sse_service(st)) {
                free_list_add(free_tail, st);
                continue;
            }
            if (td__sse_stream_unref(st)) free_list_add(free_tail, st);
        }
    }
}

void td__sse_hub_keepalive(td_sse_hub_t *hub)
{
    td__sse_lock(hub);
    for (td_sse_stream_t *st = hub->all; st; st = st->anext) {
        /* A stream with bytes still queued is not idle and would only
         * grow; the keepalive is for the quiet ones. */
        if (st->closed || st->dead || st->out_head || st->head) continue;
        td__sse_out_push(st, hub->keepalive);
        td__sse_mark_ready(st);
    }
    td__sse_unlock(hub);
}

void td__sse_hub_tick(td_sse_hub_t *hub, int64_t now_ms)
{
    int64_t mono = td_mono_ms();
    td__sse_lock(hub);
    for (td_sse_stream_t *st = hub->all; st; st = st->anext) {
        if (st->dead) continue;
        if (st->expires_ms && now_ms >= st->expires_ms && !st->closed) {
            /* The token that opened it no longer entitles anyone to it. */
            td__sse_out_push(st, hub->expired);
            td__sse_stream_close(st);
            td_metric_inc("tidings_sse_streams_expired_total", NULL);
            td__sse_mark_ready(st);
        }
        if (!st->active) continue;
        if ((st->closed && mono >= st->drain_by) ||
            (st->stalled_since && mono - st->stalled_since >= hub->stall_ms)) {
            /* It takes nothing: cut it, whatever is still queued. A stream
             * not ended already (a full buffer counted itself) is a slow
             * reader too: a trickle of frames that never fills the buffer
             * while the client takes none. */
            if (!st->closed) {
                char what[48];
                snprintf(what, sizeof(what), "took nothing for %lld s",
                         (long long)(hub->stall_ms / 1000));
                td__sse_slow_reader(st, what);
            }
            st->dead = true;
            td__sse_mark_ready(st);
        }
    }
    td__sse_unlock(hub);
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
        td__sse_lock(hub);
        if (hub->stop) {
            td__sse_unlock(hub);
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
            if (evs[i].events & EPOLLERR) {
                int err = 0;
                socklen_t len = sizeof(err);
                if (getsockopt(st->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0)
                    socket_failed(st, err);
            }
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
            td__sse_mark_ready(st);
        }
        run_ready(hub, &free_tail);
        td__sse_unlock(hub);
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
    td__sse_lock(hub);
    for (;;) {
        while (!hub->rq_stop && !hub->rq_head) {
#ifndef NDEBUG
            atomic_store_explicit(&hub->mu_held, false, memory_order_relaxed);
#endif
            pthread_cond_wait(&hub->rq_cv, &hub->mu);
#ifndef NDEBUG
            atomic_store_explicit(&hub->mu_holder, pthread_self(), memory_order_relaxed);
            atomic_store_explicit(&hub->mu_held, true, memory_order_relaxed);
#endif
        }
        if (hub->rq_stop) break;
        td_sse_stream_t *st = hub->rq_head;
        hub->rq_head = st->qnext;
        if (!hub->rq_head) hub->rq_tail = NULL;
        if (!st->dead && !st->closed && st->held) td__sse_replay_step(hub, st);
        st->replaying = false;
        td__sse_mark_ready(st); /* the next page, or what the replay released */
        if (td__sse_stream_unref(st)) {
            td__sse_unlock(hub);
            td__sse_stream_free_callbacks(st);
            td__sse_lock(hub);
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
    td__sse_unlock(hub);
    return NULL;
}

/* ---- the hub ---- */

static frame_t *static_frame(td_sse_hub_t *hub, const char *text)
{
    return td__sse_frame_new(hub, text, strlen(text), NULL);
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
    td__sse_lock(hub);
    hub->closing = true;
    for (td_sse_stream_t *st = hub->all; st; st = st->anext) {
        td__sse_stream_close(st);
        td__sse_mark_ready(st);
    }
    td__sse_unlock(hub);
}

void td_sse_hub_free(td_sse_hub_t *hub)
{
    if (!hub) return;
    td__sse_lock(hub);
    hub->stop = true;
    hub->rq_stop = true;
    pthread_cond_signal(&hub->rq_cv);
    uint64_t one = 1;
    ssize_t w = write(hub->wake_fd, &one, sizeof(one));
    (void)w;
    td__sse_unlock(hub);
    pthread_join(hub->io_thread, NULL);
    pthread_join(hub->replay_thread, NULL);

    /* Every stream left: sockets closed, test streams too (a test that
     * forgot one leaks nothing). */
    td_sse_stream_t *to_free = NULL, **free_tail = &to_free;
    td__sse_lock(hub);
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
    td__sse_frame_unref(hub, hub->keepalive);
    td__sse_frame_unref(hub, hub->expired);
    while (hub->qpool) {
        qent_t *q = hub->qpool;
        hub->qpool = q->next;
        free(q);
    }
    td__sse_map_free(&hub->keys);
    td__sse_map_free(&hub->owners);
    td__sse_unlock(hub);
    free_list_run(to_free);
    close(hub->ep);
    close(hub->wake_fd);
    pthread_cond_destroy(&hub->rq_cv);
    pthread_mutex_destroy(&hub->mu);
    free(hub);
}
