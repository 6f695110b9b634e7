/* Server-Sent Events over the HTTP layer without a thread per stream: each
 * stream is a libmicrohttpd response whose content-reader callback suspends
 * the connection when it has nothing to send, and a publisher resumes it
 * when a frame is queued. A hub groups streams by key (the userId, or "*")
 * and sends a ": keepalive" comment to every stream every keepalive_s.
 * Frames are "id: <id>\nevent: <event>\ndata: <line>\n...\n\n". */
#ifndef TIDINGS_SSE_H
#define TIDINGS_SSE_H

#include "tidings/http.h"

typedef struct td_sse_hub td_sse_hub_t;
typedef struct td_sse_stream td_sse_stream_t;

/* A hub with its keepalive timer thread. */
td_sse_hub_t *td_sse_hub_new(int keepalive_s);
/* Closes every stream and frees the hub. Call after td_http_stop. */
void td_sse_hub_free(td_sse_hub_t *hub);

/* Turns this request into a stream held by hub under key (copied): sets
 * resp to a 200 text/event-stream response that first sends
 * "retry: <retry_ms>". The stream lives until the client goes away or the
 * hub is freed; the hub owns it. Returned so the caller can queue a replay
 * before live frames flow (see td_sse_stream_send). */
td_sse_stream_t *td_sse_open(td_sse_hub_t *hub, td_req_t *req, td_resp_t *resp, const char *key,
                             int retry_ms);
/* Queues one frame to one stream. event and id may be NULL. Any thread. */
void td_sse_stream_send(td_sse_stream_t *st, const char *event, const char *id,
                        const char *data);
/* Queues one frame to every stream of key ("*" streams get every key's
 * frames too). Returns the number of streams. Any thread. */
size_t td_sse_publish(td_sse_hub_t *hub, const char *key, const char *event, const char *id,
                      const char *data);
/* Open streams. */
size_t td_sse_count(td_sse_hub_t *hub);

/* The frame text (caller frees): multi-line data becomes several data:
 * lines; CR/LF in event or id are removed. */
char *td_sse_frame(const char *event, const char *id, const char *data);

#endif
