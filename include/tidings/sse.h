/* Server-Sent Events over the HTTP layer without a thread per stream: each
 * stream is a libmicrohttpd response whose content-reader callback suspends
 * the connection when it has nothing to send, and a publisher resumes it
 * when a frame is queued, so thousands of idle streams cost memory, not
 * threads. A hub groups streams by key (the userId, or "*" for streams
 * that want every key's frames) and queues a ": keepalive" comment to
 * every stream every keepalive_s, which is also how a stream whose client
 * went away is noticed (libmicrohttpd does not watch suspended sockets).
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
 * from its last id to fill the gap.
 *
 * A stream whose client does not read gets at most TD_SSE_MAX_BUFFER bytes
 * queued; then it is ended (after what was queued), and the client, which
 * reconnects with Last-Event-ID, gets the rest by replay.
 *
 * Frames are "id: <id>\nevent: <event>\ndata: <line>\n...\n\n". */
#ifndef TIDINGS_SSE_H
#define TIDINGS_SSE_H

#include "tidings/http.h"

#define TD_SSE_MAX_BUFFER (1u << 20)

typedef struct td_sse_hub td_sse_hub_t;
typedef struct td_sse_stream td_sse_stream_t;

/* A hub with its keepalive timer thread (keepalive_s >= 1). */
td_sse_hub_t *td_sse_hub_new(int keepalive_s);
/* Ends every stream (each finishes sending what it has queued) and makes
 * later td_sse_open calls answer 503. Call before td_http_stop: the HTTP
 * layer must not stop while a stream's connection is suspended. */
void td_sse_hub_close(td_sse_hub_t *hub);
/* Stops the keepalive thread and frees the hub. Call after td_http_stop
 * (which destroys the streams' responses, each unlinking itself). */
void td_sse_hub_free(td_sse_hub_t *hub);

/* Turns this request into a live stream held by hub under key (copied):
 * sets resp to a 200 text/event-stream response whose first bytes are
 * "retry: <retry_ms>". From this call on, frames published to key are
 * queued to it. The hub owns the stream; the caller may use the returned
 * pointer only until its handler returns. NULL (with 503 set on resp)
 * when the hub is closing. Handler thread. */
td_sse_stream_t *td_sse_open(td_sse_hub_t *hub, td_req_t *req, td_resp_t *resp, const char *key,
                             int retry_ms);

/* Queues the history of a replay stream. Called on an HTTP worker thread
 * whenever the stream has sent all it had, until it returns 0: queue the
 * next frames (a page) with td_sse_stream_send, set *last_id to the id
 * replayed through (it starts as the value given to td_sse_open_replay),
 * and return 1 while there is more, 0 when done (the stream goes live:
 * held frames with an id <= *last_id are dropped), or < 0 to end the
 * stream. It may block briefly on a database. */
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
 * hub's locks: it must not call back into the hub. */
typedef bool (*td_sse_filter_fn)(void *arg, const void *tag);

typedef struct td_sse_opts {
    const char *key;               /* streams are grouped by it (copied) */
    int retry_ms;                  /* the "retry:" the stream starts with */
    const td_sse_replay_t *replay; /* NULL: live from now on */
    td_sse_filter_fn filter;       /* NULL: every frame published to key */
    void *filter_arg;              /* the stream's from now on, even on NULL */
    void (*filter_free)(void *arg);
} td_sse_opts_t;

/* td_sse_open / td_sse_open_replay with a filter: a published frame that
 * the filter refuses never reaches this stream. The filter is in place
 * before the stream is registered, so no frame slips past it. */
td_sse_stream_t *td_sse_open_opts(td_sse_hub_t *hub, td_req_t *req, td_resp_t *resp,
                                  const td_sse_opts_t *opts);

/* Queues one frame to one stream now, even while it is held (that is how
 * a replay sends). event and id may be NULL. Any thread. */
void td_sse_stream_send(td_sse_stream_t *st, const char *event, const char *id, const char *data);
/* Queues one frame to every stream of key ("*" streams get every key's
 * frames too). Returns the number of streams. Any thread. */
size_t td_sse_publish(td_sse_hub_t *hub, const char *key, const char *event, const char *id,
                      const char *data);
/* td_sse_publish whose frame reaches only the streams whose filter accepts
 * tag (streams without a filter take every frame). tag is borrowed for the
 * call. Returns the number of streams that took it. */
size_t td_sse_publish_tagged(td_sse_hub_t *hub, const char *key, const void *tag, const char *event,
                             const char *id, const char *data);
/* Open streams. */
size_t td_sse_count(td_sse_hub_t *hub);

/* The frame text (caller frees): multi-line data (LF, CRLF or CR) becomes
 * several data: lines; CR/LF in event or id are removed. */
char *td_sse_frame(const char *event, const char *id, const char *data);
/* A comment frame, ": <text>\n\n" (each line of text its own comment
 * line). Caller frees. */
char *td_sse_comment(const char *text);

/* ---- internal, for tests: a stream without an HTTP connection ---------- */

/* A registered stream that is never suspended; replay may be NULL (live). */
td_sse_stream_t *td__sse_stream_new(td_sse_hub_t *hub, const char *key, int retry_ms,
                                    const td_sse_replay_t *replay);
/* What the content reader returns: bytes copied into buf, 0 when nothing
 * is queued now, -1 when the stream has ended. */
long td__sse_stream_read(td_sse_stream_t *st, char *buf, size_t max);
/* What the response's free callback does: unlinks and frees. */
void td__sse_stream_free(td_sse_stream_t *st);
/* Runs one keepalive round now. */
void td__sse_hub_keepalive(td_sse_hub_t *hub);

#endif
