/* The event store of the web service (web.h): a ring of the last N events,
 * each kept as its parsed envelope, for causal chains, and as the compact
 * JSON text the API and the live stream serve, which is smaller than a
 * jansson tree and is made once. Text from Kafka may be anything, so every
 * string that goes into JSON is made valid UTF-8 first. */
#include "web/web.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/causal.h"
#include "tidings/config.h"
#include "tidings/envelope.h"
#include "tidings/json.h"

#define RAW_VALUE_MAX 4096 /* bytes of a non-CloudEvent value shown */

typedef struct entry {
    uint64_t seq;
    td_event_t *ev; /* NULL when the record is not a CloudEvent */
    char *json;     /* what the API serves */
    web_vis_t vis;
} entry_t;

struct web_store {
    pthread_mutex_t lock;
    entry_t *ring;
    size_t cap;
    size_t cnt;    /* entries held: the last cnt sequence numbers */
    uint64_t last; /* newest sequence number */
    char *prefix;
};

web_store_t *web_store_new(size_t capacity, const char *prefix)
{
    web_store_t *st = td_calloc(1, sizeof(*st));
    pthread_mutex_init(&st->lock, NULL);
    st->cap = capacity ? capacity : WEB_STORE_DEFAULT_CAPACITY;
    st->ring = td_calloc(st->cap, sizeof(*st->ring));
    st->prefix = td_strdup(prefix ? prefix : "");
    return st;
}

static void entry_clear(entry_t *e)
{
    td_event_free(e->ev);
    free(e->json);
    memset(e, 0, sizeof(*e));
}

void web_store_free(web_store_t *st)
{
    if (!st) return;
    for (size_t i = 0; i < st->cap; i++) entry_clear(&st->ring[i]);
    free(st->ring);
    free(st->prefix);
    pthread_mutex_destroy(&st->lock);
    free(st);
}

static entry_t *slot(web_store_t *st, uint64_t seq)
{
    return &st->ring[(seq - 1) % st->cap];
}

/* A JSON string of len bytes that are not trusted to be UTF-8: invalid
 * bytes become U+FFFD. */
static json_t *safe_string(const char *p, size_t len)
{
    if (!p) return json_null();
    json_t *s = json_stringn(p, len);
    if (s) return s;
    char *buf = td_malloc(len * 3 + 1);
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = (unsigned char)p[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        json_t *probe = n && i + n <= len && c ? json_stringn(p + i, n) : NULL;
        if (probe) {
            memcpy(buf + o, p + i, n);
            o += n;
            i += n;
            json_decref(probe);
        } else {
            memcpy(buf + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    s = json_stringn(buf, o);
    free(buf);
    return s ? s : json_string("");
}

static json_t *safe_cstr(const char *s)
{
    return s ? safe_string(s, strlen(s)) : json_null();
}

static const char *short_topic(const char *topic, const char *prefix)
{
    size_t n = strlen(prefix);
    return n && !strncmp(topic, prefix, n) ? topic + n : topic;
}

static const char *service_of(const char *source)
{
    static const char pre[] = "/tidings/";
    if (source && !strncmp(source, pre, sizeof(pre) - 1) && source[sizeof(pre) - 1])
        return source + sizeof(pre) - 1;
    return source;
}

/* The API's shape of one record, ev its parsed envelope or NULL (then
 * reason says why it is not one). */
static json_t *event_json(const td_record_t *rec, const td_event_t *ev, const char *reason,
                          const char *prefix, uint64_t seq)
{
    json_t *o = json_object();
    json_object_set_new(o, "seq", json_integer((json_int_t)seq));
    json_object_set_new(o, "topic", safe_cstr(short_topic(rec->topic, prefix)));
    json_object_set_new(o, "partition", json_integer(rec->partition));
    json_object_set_new(o, "offset", json_integer(rec->offset));
    json_object_set_new(o, "key", rec->key ? safe_string(rec->key, rec->key_len) : json_null());
    if (ev) {
        json_object_set_new(o, "time", json_string(ev->time));
        json_object_set_new(o, "type", safe_cstr(ev->type));
        json_object_set_new(o, "id", safe_cstr(ev->id));
        json_object_set_new(o, "source", safe_cstr(ev->source));
        json_object_set_new(o, "service", safe_cstr(service_of(ev->source)));
        json_object_set_new(o, "correlationid", safe_cstr(ev->correlationid));
        json_object_set_new(o, "causationid", safe_cstr(ev->causationid));
        json_object_set_new(o, "data", json_incref(ev->data));
    } else {
        char time[TD_TIME_LEN + 1];
        td_time_format(rec->timestamp >= 0 ? rec->timestamp : td_now_ms(), time);
        json_object_set_new(o, "time", json_string(time));
        json_object_set_new(o, "type", json_null());
        json_object_set_new(o, "error", safe_cstr(reason));
        size_t len = rec->value_len > RAW_VALUE_MAX ? RAW_VALUE_MAX : rec->value_len;
        json_object_set_new(o, "data", rec->value ? safe_string(rec->value, len) : json_null());
    }
    const char *dlt_reason = td_record_header_str(rec, "tidings_dlt_reason");
    if (dlt_reason) {
        const char *orig = td_record_header_str(rec, "tidings_dlt_original_topic");
        json_object_set_new(o, "dlt",
                            json_pack("{s:o, s:o}", "reason", safe_cstr(dlt_reason),
                                      "originalTopic", safe_cstr(orig)));
    }
    return o;
}

bool web_visible(const web_vis_t *vis, const web_viewer_t *viewer)
{
    if (!viewer || viewer->admin || vis->public) return true;
    return viewer->user_id[0] && vis->owner[0] && !strcmp(vis->owner, viewer->user_id);
}

/* Public: a product event on its own topic. Owned: the user the event is
 * about. Anything else (invalid records, dead letters, events about no
 * user) is for admins. */
static web_vis_t visibility(const td_record_t *rec, const td_event_t *ev, const char *prefix)
{
    web_vis_t vis = {0};
    if (!ev || td_record_header(rec, "tidings_dlt_reason")) return vis;
    const char *topic = short_topic(rec->topic, prefix);
    const char *home = td_topic_of(ev->type);
    vis.public = home && !strcmp(home, "products") && !strcmp(topic, home);
    const char *uid = json_string_value(json_object_get(ev->data, "userId"));
    if (!uid && !strcmp(topic, "users")) uid = ev->subject;
    if (uid && td_uuid_valid(uid)) snprintf(vis.owner, sizeof(vis.owner), "%s", uid);
    return vis;
}

json_t *web_event_json(const td_record_t *rec, const char *prefix, uint64_t seq)
{
    char reason[256] = "";
    td_event_t *ev = td_event_from_record(rec, reason, sizeof(reason));
    json_t *o = event_json(rec, ev, reason, prefix ? prefix : "", seq);
    td_event_free(ev);
    return o;
}

uint64_t web_store_add(web_store_t *st, const td_record_t *rec, web_emit_fn emit, void *arg)
{
    char reason[256] = "";
    td_event_t *ev = td_event_from_record(rec, reason, sizeof(reason));
    pthread_mutex_lock(&st->lock);
    uint64_t seq = st->last + 1;
    json_t *o = event_json(rec, ev, reason, st->prefix, seq);
    entry_t *e = slot(st, seq);
    entry_clear(e);
    e->seq = seq;
    e->ev = ev;
    e->vis = visibility(rec, ev, st->prefix);
    e->json = td_json_dumps(o);
    json_decref(o);
    /* The data tree is in the JSON text now; the envelope is kept for its
     * ids only, which halves what an entry costs. */
    if (ev) {
        json_decref(ev->data);
        ev->data = NULL;
    }
    st->last = seq;
    if (st->cnt < st->cap) st->cnt++;
    if (emit) emit(arg, seq, e->json, &e->vis);
    pthread_mutex_unlock(&st->lock);
    return seq;
}

/* The oldest sequence number held (last + 1 when empty). */
static uint64_t first_seq(const web_store_t *st)
{
    return st->last - st->cnt + 1;
}

uint64_t web_store_each(web_store_t *st, uint64_t after, size_t max, const web_viewer_t *viewer,
                        web_emit_fn emit, void *arg)
{
    pthread_mutex_lock(&st->lock);
    uint64_t s = after + 1 > first_seq(st) ? after + 1 : first_seq(st), done = s - 1;
    for (size_t n = 0; s <= st->last && n < max; s++) {
        const entry_t *e = slot(st, s);
        done = s;
        if (!web_visible(&e->vis, viewer)) continue;
        emit(arg, s, e->json, &e->vis);
        n++;
    }
    pthread_mutex_unlock(&st->lock);
    return done;
}

static void append_entry(json_t *arr, const entry_t *e)
{
    json_t *o = json_loads(e->json, 0, NULL);
    if (o) json_array_append_new(arr, o);
}

json_t *web_store_list(web_store_t *st, bool has_after, uint64_t after, size_t limit,
                       const web_viewer_t *viewer)
{
    if (!limit) limit = WEB_LIST_DEFAULT_LIMIT;
    if (limit > WEB_LIST_MAX_LIMIT) limit = WEB_LIST_MAX_LIMIT;
    json_t *events = json_array();
    json_t *next = json_null();
    pthread_mutex_lock(&st->lock);
    uint64_t first = first_seq(st);
    if (has_after) {
        /* Oldest first from after; next is the last one looked at while
         * more follow, so paging never skips and never repeats. */
        uint64_t s = after + 1 > first ? after + 1 : first, looked = 0;
        size_t n = 0;
        for (; s <= st->last && st->cnt && n < limit; s++) {
            const entry_t *e = slot(st, s);
            looked = s;
            if (!web_visible(&e->vis, viewer)) continue;
            append_entry(events, e);
            n++;
        }
        if (looked && looked < st->last) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%llu", (unsigned long long)looked);
            json_decref(next);
            next = json_string(buf);
        }
    } else {
        /* The latest limit that viewer may see, still oldest first. */
        uint64_t from = st->last + 1;
        size_t n = 0;
        for (uint64_t s = st->last; st->cnt && s >= first && s > 0 && n < limit; s--) {
            if (!web_visible(&slot(st, s)->vis, viewer)) continue;
            from = s;
            n++;
        }
        for (uint64_t s = from; s <= st->last && n > 0; s++) {
            const entry_t *e = slot(st, s);
            if (!web_visible(&e->vis, viewer)) continue;
            append_entry(events, e);
            n--;
        }
    }
    uint64_t last = st->last;
    pthread_mutex_unlock(&st->lock);
    return json_pack("{s:o, s:o, s:I}", "events", events, "next", next, "last", (json_int_t)last);
}

json_t *web_store_trace(web_store_t *st, const char *id)
{
    json_t *out = NULL;
    pthread_mutex_lock(&st->lock);
    const td_event_t **evs = td_calloc(st->cnt ? st->cnt : 1, sizeof(*evs));
    const entry_t **ents = td_calloc(st->cnt ? st->cnt : 1, sizeof(*ents));
    size_t n = 0;
    for (uint64_t s = first_seq(st); s <= st->last && st->cnt; s++) {
        const entry_t *e = slot(st, s);
        if (!e->ev) continue;
        evs[n] = e->ev;
        ents[n++] = e;
    }
    td_causal_t chain;
    if (td_causal_build(evs, n, id, &chain) > 0) {
        json_t *arr = json_array();
        int64_t lo = chain.nodes[0].time_ms, hi = lo;
        for (size_t i = 0; i < chain.cnt; i++) {
            const td_causal_node_t *node = &chain.nodes[i];
            json_t *o = json_loads(ents[node->index]->json, 0, NULL);
            if (!o) continue;
            json_object_set_new(o, "parent",
                                node->parent >= 0 ? safe_cstr(chain.nodes[node->parent].ev->id)
                                                  : json_null());
            json_object_set_new(o, "depth", json_integer(node->depth));
            json_object_set_new(o, "delayMs",
                                node->parent >= 0 ? json_integer(node->delay_ms) : json_null());
            json_object_set_new(o, "group", safe_cstr(node->group));
            json_object_set_new(o, "deadLettered", json_boolean(node->dead_lettered));
            json_array_append_new(arr, o);
            if (node->time_ms < lo) lo = node->time_ms;
            if (node->time_ms > hi) hi = node->time_ms;
        }
        out = json_pack("{s:o, s:o, s:I}", "id", safe_cstr(id), "events", arr, "spanMs",
                        (json_int_t)(hi - lo));
    }
    td_causal_free(&chain);
    pthread_mutex_unlock(&st->lock);
    free(evs);
    free(ents);
    return out;
}

uint64_t web_store_last(web_store_t *st)
{
    pthread_mutex_lock(&st->lock);
    uint64_t last = st->last;
    pthread_mutex_unlock(&st->lock);
    return last;
}

size_t web_store_count(web_store_t *st)
{
    pthread_mutex_lock(&st->lock);
    size_t cnt = st->cnt;
    pthread_mutex_unlock(&st->lock);
    return cnt;
}
