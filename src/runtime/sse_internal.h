/* What the pieces of the SSE hub share (sse.c the I/O and replay threads
 * and the hub, sse_frame.c frames, maps and queues, sse_stream.c streams,
 * the handover from the HTTP layer and publishing). Not a public header:
 * only src/runtime/sse*.c include it. The locking rules of sse.c's first
 * paragraph hold for everything declared here. */
#ifndef TIDINGS_SSE_INTERNAL_H
#define TIDINGS_SSE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "tidings/sse.h"

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
    pthread_mutex_t mu; /* taken with td__sse_lock, so debug builds know the holder */
#ifndef NDEBUG
    _Atomic pthread_t mu_holder;
    atomic_bool mu_held;
#endif
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

/* sse.c */
bool td__sse_service(td_sse_stream_t *st);

/* sse_frame.c */
void td__sse_append(char **buf, size_t *len, size_t *cap, const char *s, size_t n);
frame_t *td__sse_frame_new(td_sse_hub_t *hub, const char *text, size_t len, const char *id);
frame_t *td__sse_frame_build(td_sse_hub_t *hub, const char *event, const char *id,
                             const char *data);
void td__sse_frame_unref(td_sse_hub_t *hub, frame_t *f);
size_t td__sse_frame_wire(const frame_t *f);
uint64_t td__sse_hash_str(const char *s);
knode_t *td__sse_map_find(const kmap_t *m, const char *name, uint64_t h);
knode_t *td__sse_map_get(kmap_t *m, const char *name);
void td__sse_map_put(kmap_t *m, knode_t *n);
void td__sse_map_free(kmap_t *m);
void td__sse_qlist_free(td_sse_hub_t *hub, qent_t *q);
void td__sse_wake(td_sse_hub_t *hub);
void td__sse_mark_ready(td_sse_stream_t *st);
void td__sse_stream_close(td_sse_stream_t *st);
/* st's client does not take its frames (what: how that showed): one
 * warning and one count of tidings_sse_slow_readers_total. The caller
 * ends the stream. */
void td__sse_slow_reader(const td_sse_stream_t *st, const char *what);
void td__sse_out_push(td_sse_stream_t *st, frame_t *f);
void td__sse_queue_frame(td_sse_stream_t *st, bool from_publish, frame_t *f);
void td__sse_release_held(td_sse_stream_t *st, int64_t last_id);
/* One step of st's replay: runs it without the hub lock (a replay sends
 * through td_sse_stream_send, which locks), then closes st (the replay
 * failed) or releases what was held (it is done). Hub lock held on entry
 * and on return. */
void td__sse_replay_step(td_sse_hub_t *hub, td_sse_stream_t *st);
void td__sse_out_consume(td_sse_stream_t *st, size_t n, bool wire);

/* sse_stream.c */
void td__sse_stream_unlink(td_sse_stream_t *st);
void td__sse_stream_free_callbacks(td_sse_stream_t *st);
bool td__sse_stream_unref(td_sse_stream_t *st);

/* hub->mu. Debug builds remember who holds it, for the asserts of what
 * must run with it held ("hub->mu held"): td__sse_held. */
static inline void td__sse_lock(td_sse_hub_t *hub)
{
    pthread_mutex_lock(&hub->mu);
#ifndef NDEBUG
    atomic_store_explicit(&hub->mu_holder, pthread_self(), memory_order_relaxed);
    atomic_store_explicit(&hub->mu_held, true, memory_order_relaxed);
#endif
}

static inline void td__sse_unlock(td_sse_hub_t *hub)
{
#ifndef NDEBUG
    atomic_store_explicit(&hub->mu_held, false, memory_order_relaxed);
#endif
    pthread_mutex_unlock(&hub->mu);
}

#ifndef NDEBUG
/* True when the calling thread holds hub->mu (debug builds only). */
static inline bool td__sse_held(td_sse_hub_t *hub)
{
    return atomic_load_explicit(&hub->mu_held, memory_order_relaxed) &&
           pthread_equal(atomic_load_explicit(&hub->mu_holder, memory_order_relaxed),
                         pthread_self());
}
#endif

#endif
