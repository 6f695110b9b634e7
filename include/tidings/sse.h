/* Server-Sent Events without a thread or an HTTP connection's memory per
 * stream. A handler turns its request into a stream (td_sse_open...); once
 * the handler returns, the HTTP layer writes nothing itself but hands the
 * socket over (td_resp_takeover in tidings/http.h), and the hub's one I/O
 * thread writes the response head and every frame from then on, with its
 * own epoll set. An idle stream is a few hundred bytes: libmicrohttpd has
 * forgotten the connection, and a stream holds no buffer while it has
 * nothing to send.
 *
 * A hub indexes its streams by key (the userId, or "*" for streams that
 * want every key's frames) in a hash map, so publishing to one key touches
 * only that key's streams and the "*" ones. A published frame is built
 * once, with its chunk framing, and shared (refcounted) by every stream it
 * goes to; a stream's queue is a list of references to such frames, and
 * the I/O thread writes them with writev straight from the shared bytes.
 * The I/O thread also queues a ": keepalive" comment to every quiet stream
 * every keepalive_s, ends streams whose token expired, drops those whose
 * client went away (it sees the hang-up at once) or that make no progress.
 *
 * Replay without a gap or a duplicate at the seam: td_sse_open_replay
 * registers the stream first and holds back the live frames published to
 * it while a replay callback queues the history; when the history is done,
 * held frames the replay already sent (numeric id <= the last replayed)
 * are dropped and the rest go out in order. Such a stream keeps dropping
 * any frame whose numeric id is not above the highest it sent, so a
 * redelivered live frame is never shown twice. When ids are also
 * contiguous (seq per user), a live frame past the next expected id means
 * frames were missed (published out of order by several instances, or
 * before this one listened): the stream holds again and reruns the replay
 * from its last id to fill the gap. Replays run on the hub's replay
 * thread, never on the I/O thread, so a slow database delays no one else.
 *
 * Limits (SPEC section 5): a stream of an authenticated request ends when
 * its token expires; an owner (a user) may hold at most max_per_owner
 * streams of one hub (one more gets 429 with Retry-After), a hub at most
 * TD_SSE_MAX_STREAMS (503). A stream whose client does not read gets at
 * most TD_SSE_MAX_BUFFER bytes queued (counted per stream, though the bytes
 * are shared); then it takes no more frames, gets TD_SSE_DRAIN_MS to take
 * what was queued, and is ended; the client, which reconnects with
 * Last-Event-ID, gets the rest by replay. One that takes nothing for the
 * stall time (three keepalive periods, at least 30 s) is ended too, by
 * the hub's tick or by the kernel (TCP_USER_TIMEOUT), whichever comes
 * first: a trickle of frames may never fill the bound. Each such end is
 * logged and counted in tidings_sse_slow_readers_total.
 *
 * Frames are "id: <id>\nevent: <event>\ndata: <line>\n...\n\n". */
#ifndef TIDINGS_SSE_H
#define TIDINGS_SSE_H

#include "tidings/http.h"

/* Bytes one stream may have queued and not yet written (live frames held
 * for a replay included): a replay page fits, a reader that stopped
 * reading for long does not. */
#define TD_SSE_MAX_BUFFER (256u * 1024)
/* How long a stream that passed TD_SSE_MAX_BUFFER (or whose hub closed)
 * gets to take what was queued before it is cut. */
#define TD_SSE_DRAIN_MS 5000
/* Streams one hub holds at most (each is a socket). */
#define TD_SSE_MAX_STREAMS 16000

typedef struct td_sse_hub td_sse_hub_t;
typedef struct td_sse_stream td_sse_stream_t;

/* A hub with its I/O thread (sockets, keepalives every keepalive_s >= 1,
 * token expiry) and its replay thread. Any thread; NULL never (a thread or
 * an epoll set that cannot be made aborts, like memory). */
td_sse_hub_t *td_sse_hub_new(int keepalive_s);
/* Ends every stream (each gets TD_SSE_DRAIN_MS to take what it has
 * queued) and makes later td_sse_open calls answer 503. Any thread. */
void td_sse_hub_close(td_sse_hub_t *hub);
/* Stops the threads, closes every socket left and frees the hub and its
 * streams. Call after td_http_stop (no handler may open a stream any more)
 * and after the last publisher stopped. */
void td_sse_hub_free(td_sse_hub_t *hub);

/* Turns this request into a live stream held by hub under key (copied):
 * sets resp to a 200 text/event-stream response whose first bytes are
 * "retry: <retry_ms>", and the HTTP layer hands the socket to the hub when
 * the handler returns. From this call on, frames published to key are
 * queued to it. The hub owns the stream; the caller may use the returned
 * pointer only until its handler returns. NULL (with 503 set on resp)
 * when the hub is closing or full. A stream of an authenticated request
 * (req->authed) ends at req->auth.exp. A HEAD request gets the head of
 * the 200 and no stream (NULL). Handler thread. */
td_sse_stream_t *td_sse_open(td_sse_hub_t *hub, td_req_t *req, td_resp_t *resp, const char *key,
                             int retry_ms);

/* Queues the history of a replay stream. Called on the hub's replay
 * thread (on the reading thread for the internal test streams) whenever
 * the stream has sent all it had, until it returns 0: queue the next
 * frames (a page) with td_sse_stream_send, set *last_id to the id
 * replayed through (it starts as the value given to td_sse_open_replay),
 * and return 1 while there is more, 0 when done (the stream goes live:
 * held frames with an id <= *last_id are dropped), or < 0 to end the
 * stream. It may block briefly on a database. Never called before the
 * handler that opened the stream has returned. */
typedef int (*td_sse_replay_fn)(void *arg, td_sse_stream_t *st, int64_t *last_id);

typedef struct td_sse_replay {
    td_sse_replay_fn next;
    void *arg;
    void (*free)(void *arg); /* called when the stream goes away; may be NULL */
    int64_t after;           /* the first *last_id */
    bool contiguous;         /* ids go up by exactly 1: fill gaps by replay */
} td_sse_replay_t;

/* Like td_sse_open, for a stream whose frames have increasing numeric ids
 * (per key): starts held, runs replay as described above, then live.
 * replay is copied; its arg belongs to the stream from now on (freed with
 * replay->free even when NULL is returned). */
td_sse_stream_t *td_sse_open_replay(td_sse_hub_t *hub, td_req_t *req, td_resp_t *resp,
                                    const char *key, int retry_ms, const td_sse_replay_t *replay);

/* Whether a stream shows a frame published with tag (td_sse_publish_tagged;
 * NULL for td_sse_publish). arg is the stream's filter_arg. Runs under the
 * hub's lock: it must not call back into the hub. */
typedef bool (*td_sse_filter_fn)(void *arg, const void *tag);

typedef struct td_sse_opts {
    const char *key;               /* streams are grouped by it (copied) */
    int retry_ms;                  /* the "retry:" the stream starts with */
    const td_sse_replay_t *replay; /* NULL: live from now on */
    td_sse_filter_fn filter;       /* NULL: every frame published to key */
    void *filter_arg;              /* the stream's from now on, even on NULL */
    void (*filter_free)(void *arg);
    /* The user the stream counts against (copied; NULL: nobody), and how
     * many streams of this hub one owner may hold (0: no cap). One more
     * gets 429 rate_limited with Retry-After. */
    const char *owner;
    int max_per_owner;
} td_sse_opts_t;

/* td_sse_open / td_sse_open_replay with every option: a published frame
 * that the filter refuses never reaches this stream (the filter is in
 * place before the stream is registered, so no frame slips past it), and
 * the owner cap is checked and the stream registered in one step. */
td_sse_stream_t *td_sse_open_opts(td_sse_hub_t *hub, td_req_t *req, td_resp_t *resp,
                                  const td_sse_opts_t *opts);

/* Queues one frame to one stream now, even while it is held (that is how
 * a replay sends). event and id may be NULL. Any thread. */
void td_sse_stream_send(td_sse_stream_t *st, const char *event, const char *id, const char *data);
/* Queues one frame to every stream of key ("*" streams get every key's
 * frames too): the frame is built once and shared, and only the streams
 * of key and of "*" are looked at. Returns the number of streams. Any
 * thread; never blocks on a socket. */
size_t td_sse_publish(td_sse_hub_t *hub, const char *key, const char *event, const char *id,
                      const char *data);
/* td_sse_publish whose frame reaches only the streams whose filter accepts
 * tag (streams without a filter take every frame). tag is borrowed for the
 * call. Returns the number of streams that took it. */
size_t td_sse_publish_tagged(td_sse_hub_t *hub, const char *key, const void *tag, const char *event,
                             const char *id, const char *data);
/* Open streams (handed over or about to be). Any thread. */
size_t td_sse_count(td_sse_hub_t *hub);

/* The frame text (caller frees): multi-line data (LF, CRLF or CR) becomes
 * several data: lines; CR/LF in event or id are removed. */
char *td_sse_frame(const char *event, const char *id, const char *data);
/* A comment frame, ": <text>\n\n" (each line of text its own comment
 * line). Caller frees. */
char *td_sse_comment(const char *text);

/* ---- internal, for tests: a stream without an HTTP connection ---------- */

/* A registered stream without a socket; replay may be NULL (live). Its
 * frames are taken with td__sse_stream_read, which also runs the replay. */
td_sse_stream_t *td__sse_stream_new(td_sse_hub_t *hub, const char *key, int retry_ms,
                                    const td_sse_replay_t *replay);
/* Like td__sse_stream_new with every option; NULL with the error status
 * in *status (429, 503) when refused. */
td_sse_stream_t *td__sse_stream_new_opts(td_sse_hub_t *hub, const td_sse_opts_t *opts,
                                         int64_t expires_ms, int *status);
/* The bytes a socket would get (without chunk framing) copied into buf,
 * 0 when nothing is queued now, -1 when the stream has ended. */
long td__sse_stream_read(td_sse_stream_t *st, char *buf, size_t max);
/* Unlinks and frees a stream made by td__sse_stream_new. */
void td__sse_stream_free(td_sse_stream_t *st);
/* Runs one keepalive round now. */
void td__sse_hub_keepalive(td_sse_hub_t *hub);
/* Runs one round of the periodic checks now, as if the wall clock read
 * now_ms: token expiry and the drain deadline of closing streams. */
void td__sse_hub_tick(td_sse_hub_t *hub, int64_t now_ms);
/* Heap bytes a stream holds beyond its fixed part (queued frame
 * references, a pending response head): 0 for an idle stream. */
size_t td__sse_stream_heap(td_sse_stream_t *st);
/* Streams of key in the index (0 when the key has none). */
size_t td__sse_key_count(td_sse_hub_t *hub, const char *key);
/* Live frames of the hub (built and not yet released by every stream). */
size_t td__sse_frames_live(td_sse_hub_t *hub);

#endif
