/* What the notifications integration tests share: one notifications service
 * on an embedded broker, tokens minted with the shared secret, domain
 * events produced straight onto their topics (as the users, products and
 * orders services would, so no other service is needed), the inbox read
 * over HTTP, and a raw-socket SSE client (HTTP/1.1, chunked) that reads
 * without threads, so a test can hold a thousand streams. The bodies are in
 * tests/support/tnotif.c. */
#ifndef TIDINGS_TNOTIF_H
#define TIDINGS_TNOTIF_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "notifications/notifications_service.h"
#include "tidings/auth.h"
#include "tidings/envelope.h"
#include "tidings/json.h"
#include "tsupport.h"

#define NT_WAIT_MS 20000

typedef struct nt_world {
    char *dir;
    td_config_t bcfg, cfg;
    td_broker_t *broker;
    const char *brokers;
    notifications_service_t *svc;
    int port;
    char url[64];
} nt_world_t;

void nt_start(nt_world_t *w, const char *name);

void nt_stop(nt_world_t *w);

/* A customer token for user_id (a new id when *user_id is empty). */
char *nt_token(const nt_world_t *w, char *user_id);

/* Produces ev onto topic_short as its service's relay would. */
void nt_produce_event(const nt_world_t *w, const char *topic_short, const td_event_t *ev);

/* Makes and produces one event (data stolen); the event id into id_out
 * when not NULL. */
void nt_produce(const nt_world_t *w, const char *topic_short, const char *type, const char *key,
                json_t *data, char *id_out);

void nt_login(const nt_world_t *w, const char *user_id);

/* GET /notifications of token's user (first page of up to 500). */
json_t *nt_inbox(const nt_world_t *w, const char *token);

size_t nt_inbox_count(const nt_world_t *w, const char *token);

/* Waits until token's inbox holds at least want notifications. */
bool nt_wait_inbox(const nt_world_t *w, const char *token, size_t want);

/* ---- a raw SSE client ---- */

typedef struct nt_sse_event {
    char id[32];
    char event[64];
    char *data;
} nt_sse_event_t;

typedef struct nt_sse {
    int fd;
    long status;
    bool headers_done, chunked, ended;
    char *raw; /* received, not yet de-chunked */
    size_t raw_len;
    size_t chunk_left;
    bool want_crlf; /* the CRLF after a chunk's data */
    char *body;     /* de-chunked, not yet split into lines */
    size_t body_len;
    char cur_id[32], cur_event[64];
    char *cur_data;
    nt_sse_event_t *events;
    size_t cnt, cap;
    int keepalives;
    int retry_ms;
} nt_sse_t;

void nt_buf_add(char **buf, size_t *len, const char *p, size_t n);

void nt_buf_drop(char **buf, size_t *len, size_t n);

/* Opens GET path; token by header when given; last_id as Last-Event-ID
 * when not NULL. The request is sent; nothing is read yet. */
nt_sse_t *nt_sse_open(int port, const char *path, const char *token, const char *last_id);

void nt_sse_line(nt_sse_t *s, char *line);

/* Parses what has arrived. */
void nt_sse_parse(nt_sse_t *s);

/* Reads what is there within wait_ms (0 = only what is ready now). */
void nt_sse_pump(nt_sse_t *s, int wait_ms);

/* Waits until the response headers are in; the status. */
long nt_sse_status(nt_sse_t *s);

/* Waits until at least want events arrived (or timeout_ms). */
bool nt_sse_wait(nt_sse_t *s, size_t want, int timeout_ms);

void nt_sse_close(nt_sse_t *s);

/* The notification of event i (parsed). Caller decrefs. */
json_t *nt_sse_json(const nt_sse_t *s, size_t i);

bool nt_live_cond(void *arg);

/* Opens a stream for token's user once the service says its live path
 * runs, and proves it: logs the user in until a sign-in shows up on the
 * stream. Returns the open stream, its events cleared. */
nt_sse_t *nt_stream_live(const nt_world_t *w, const char *token, const char *user_id);

#endif
