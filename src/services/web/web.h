/* The web service's domain: a bounded in-memory store of the most recent
 * events seen on every topic (the event-flow view's data), numbered by a
 * sequence that only grows, so that a browser can ask for "everything after
 * N" and resume a live stream where it left off. Each event is kept as its
 * parsed envelope (for causal chains) and as the JSON the API serves.
 *
 * No HTTP, no Kafka: records come in as td_record_t. Thread-safe: one mutex
 * guards the store; the callbacks below run under it, so that events are
 * handed on in sequence order. */
#ifndef TIDINGS_WEB_H
#define TIDINGS_WEB_H

#include <jansson.h>

#include "tidings/record.h"
#include "tidings/uuid.h"

typedef struct web_store web_store_t;

/* Who may see a stored event (SPEC section 5): admins see everything,
 * anyone sees the product events of the products topic, and a user sees
 * the events about them (data.userId, or the key of the users topic).
 * Records that are not valid CloudEvents and dead letters are for admins
 * only. It is the tag of the event's live frame. */
typedef struct web_vis {
    bool public;
    char owner[TD_UUID_LEN + 1]; /* "" when the event is about no user */
} web_vis_t;

/* Who is looking: an admin, a signed-in user, or an anonymous visitor
 * (admin false, user_id ""). */
typedef struct web_viewer {
    bool admin;
    char user_id[TD_UUID_LEN + 1];
} web_viewer_t;

/* True when viewer may see an event of visibility vis. viewer NULL is the
 * store's own view: everything. */
bool web_visible(const web_vis_t *vis, const web_viewer_t *viewer);

#define WEB_STORE_DEFAULT_CAPACITY 20000
#define WEB_LIST_DEFAULT_LIMIT     50
#define WEB_LIST_MAX_LIMIT         500

/* A store of the last capacity events. prefix is the topic prefix (copied)
 * that is cut off topic names ("tidings.orders" -> "orders"). */
web_store_t *web_store_new(size_t capacity, const char *prefix);
void web_store_free(web_store_t *st);

/* Called with one stored event's sequence number, JSON text and visibility
 * (borrowed for the call). Runs under the store lock: must not call back
 * into the store. */
typedef void (*web_emit_fn)(void *arg, uint64_t seq, const char *json, const web_vis_t *vis);

/* Stores a copy of a consumed record (rec stays the caller's). A record
 * that is not a valid CloudEvent is kept too, with the reason. The oldest
 * event goes when the store is full. emit (may be NULL) gets the new event.
 * Returns its sequence number (1, 2, ...). */
uint64_t web_store_add(web_store_t *st, const td_record_t *rec, web_emit_fn emit, void *arg);

/* Under the lock: emit for each stored event after seq `after` that viewer
 * may see, oldest first, at most max of them. Returns the last sequence
 * number looked at (`after` when none; the oldest held minus one when
 * `after` is older), so the next call goes on from there. */
uint64_t web_store_each(web_store_t *st, uint64_t after, size_t max, const web_viewer_t *viewer,
                        web_emit_fn emit, void *arg);

/* A page of the events viewer may see as {"events":[...],
 * "next":"<seq>"|null, "last":<seq>}: with has_after, those after seq
 * `after`, oldest first, up to limit (next leads on while there are more);
 * without, the latest limit events. New reference. */
json_t *web_store_list(web_store_t *st, bool has_after, uint64_t after, size_t limit,
                       const web_viewer_t *viewer);

/* The causal chain of id (order id, correlation id, ce_id, key) among the
 * stored events (tidings/causal.h) as {"id", "events":[event + parent,
 * depth, delayMs, group, deadLettered], "spanMs"}; NULL when no stored
 * event matches. New reference. */
json_t *web_store_trace(web_store_t *st, const char *id);

/* The newest sequence number (0 when empty) and the number stored. */
uint64_t web_store_last(web_store_t *st);
size_t web_store_count(web_store_t *st);

/* The JSON object the API serves for one record (seq included). Exposed
 * for tests. New reference. */
json_t *web_event_json(const td_record_t *rec, const char *prefix, uint64_t seq);

#endif
