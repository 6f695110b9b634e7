/* The inbox: creating a notification exactly once per (cause, user) with
 * the next seq of that user, in the same transaction as its
 * NotificationCreatedEvent, its deliveries and its push to this
 * instance's streams; and reading, marking and deleting them for the
 * user (see notifications.h). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifications/notifications.h"
#include "notifications/notifications_internal.h"
#include "tidings/bus.h"
#include "tidings/delivery.h"
#include "tidings/json.h"
#include "tidings/metrics.h"

/* ---- creating notifications ------------------------------------------------------ */

static json_t *row_json(sqlite3_stmt *st)
{
    /* Columns: id, seq, user_id, type, title, body, data, created_at, read_at,
     * thread, replaces. */
    const char *data_text = (const char *)sqlite3_column_text(st, 6);
    json_t *data = data_text ? json_loads(data_text, 0, NULL) : NULL;
    if (!json_is_object(data)) {
        json_decref(data);
        data = json_object();
    }
    json_t *read_at = sqlite3_column_type(st, 8) == SQLITE_NULL
                          ? json_null()
                          : json_string((const char *)sqlite3_column_text(st, 8));
    json_t *replaces = sqlite3_column_type(st, 10) == SQLITE_NULL
                           ? json_null()
                           : json_string((const char *)sqlite3_column_text(st, 10));
    return json_pack(
        "{s:s, s:I, s:s, s:s, s:s, s:s, s:o, s:s, s:o, s:s, s:o}", "id",
        (const char *)sqlite3_column_text(st, 0), "seq", (json_int_t)sqlite3_column_int64(st, 1),
        "userId", (const char *)sqlite3_column_text(st, 2), "type",
        (const char *)sqlite3_column_text(st, 3), "title", (const char *)sqlite3_column_text(st, 4),
        "body", (const char *)sqlite3_column_text(st, 5), "data", data, "createdAt",
        (const char *)sqlite3_column_text(st, 7), "readAt", read_at, "thread",
        (const char *)sqlite3_column_text(st, 9), "replaces", replaces);
}

#define NOTIF_COLUMNS \
    "id, seq, user_id, type, title, body, data, created_at, read_at, thread, replaces"

void notif__draft_ready(notif_draft_t *d, const json_t *event_data)
{
    /* The texts are UTF-8 (checked on the way in, or made here). */
    d->title_js = td_json_quote(d->title);
    d->body_js = td_json_quote(d->body);
    if (td_time_parse(d->cause->time, &d->cause_ms) != 0) d->cause_ms = 0;
    if (event_data) {
        notif_thread_of(event_data, d->thread);
        return;
    }
    json_t *data = json_loads(d->data, 0, NULL);
    notif_thread_of(data, d->thread);
    json_decref(data);
}

void notif__draft_clear(notif_draft_t *d)
{
    free(d->title_js);
    free(d->body_js);
}

/* A committed notification on its way to this instance's streams. */
typedef struct local_push {
    notif_t *n;
    char user_id[TD_UUID_LEN + 1];
    int64_t seq;
    char json[];
} local_push_t;

static void local_push(void *arg, bool committed)
{
    local_push_t *lp = arg;
    if (committed) lp->n->local(lp->n->local_arg, lp->user_id, lp->seq, lp->json);
    free(lp);
}

/* Creates d's notification for user_id inside the caller's transaction,
 * unless it exists already. *made says whether it did. */
int notif__create_one(notif_t *n, const notif_draft_t *d, const char *user_id, bool *made)
{
    int rc;
    td_event_t *ev = NULL;
    *made = false;

    /* The next seq of this user (inside the write transaction, so no
     * other writer can take it between this read and the insert) and the
     * latest of the thread that the user still has: this one supersedes
     * it ("Order confirmed" replaces "Order received"). One statement. */
    sqlite3_stmt *st = td_db_prepare(
        n->db, "SELECT (SELECT COALESCE(MAX(seq), 0) + 1 FROM notifications WHERE user_id = ?1),"
               " (SELECT id FROM notifications WHERE user_id = ?1 AND thread = ?2"
               "  AND deleted = 0 ORDER BY seq DESC LIMIT 1)");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, d->thread, -1, SQLITE_STATIC);
    int64_t seq = -1;
    char replaces[TD_UUID_LEN + 1] = "";
    if (sqlite3_step(st) == SQLITE_ROW) {
        seq = sqlite3_column_int64(st, 0);
        if (sqlite3_column_type(st, 1) == SQLITE_TEXT)
            snprintf(replaces, sizeof(replaces), "%s", (const char *)sqlite3_column_text(st, 1));
    }
    td_db_done(st);
    if (seq < 1) return TD_EIO;

    /* The id is the cause's time and a hash of (cause, user): ids of one
     * burst are appended to the primary key, and making it again for the
     * same pair (a replay) finds it there. */
    char id[TD_UUID_LEN + 1], now[TD_TIME_LEN + 1];
    char *name = td_asprintf("%s:%s", d->cause->id, user_id);
    td_uuid_v7_named(d->cause_ms, name, id);
    free(name);
    td_time_format(td_now_ms(), now);
    st =
        td_db_prepare(n->db, "INSERT INTO notifications (id, user_id, seq, type, title, body, data,"
                             " created_at, cause_id, thread, replaces)"
                             " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                             " ON CONFLICT (id) DO NOTHING");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, seq);
    sqlite3_bind_text(st, 4, d->type, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, d->title, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, d->body, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, d->data, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, now, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, d->cause->id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 10, d->thread, -1, SQLITE_STATIC);
    if (*replaces)
        sqlite3_bind_text(st, 11, replaces, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 11);
    if ((rc = td_db_run(n->db, st)) != 0) goto out;
    if (td_db_changes(n->db) == 0) goto out; /* made before: exactly once */

    /* The notification object of SPEC section 2, as text, once: it is the
     * NotificationCreatedEvent's value, the stream's frame and the webhook
     * body. The variable parts need no escaping (ids, numbers, times,
     * catalogue names, threads made of those); title and body were
     * escaped with the draft. */
    char replaces_js[TD_UUID_LEN + 3];
    snprintf(replaces_js, sizeof(replaces_js), *replaces ? "\"%s\"" : "null", replaces);
    char *json = td_asprintf("{\"id\":\"%s\",\"seq\":%" PRId64 ",\"userId\":\"%s\","
                             "\"type\":\"%s\",\"title\":%s,\"body\":%s,\"data\":%s,"
                             "\"createdAt\":\"%s\",\"readAt\":null,\"thread\":\"%s\","
                             "\"replaces\":%s}",
                             id, seq, user_id, d->type, d->title_js, d->body_js, d->data, now,
                             d->thread, replaces_js);
    ev = td_event_new("notifications", TD_EV_NAME(TD_EV_NOTIFICATION_CREATED), user_id, NULL);
    td_event_set_cause(ev, d->cause);
    char *topic = td_topic_name(n->cfg, "notifications");
    td_record_t *rec = td_event_to_record_json(ev, topic, json, strlen(json));
    free(topic);
    if (n->instance) td_record_add_header_str(rec, NOTIF_INSTANCE_HEADER, n->instance);
    rc = td_outbox_add_record(n->db, rec);
    if (rc == 0 && n->local) {
        local_push_t *lp = td_malloc(sizeof(*lp) + rec->value_len + 1);
        lp->n = n;
        snprintf(lp->user_id, sizeof(lp->user_id), "%s", user_id);
        lp->seq = seq;
        memcpy(lp->json, rec->value, rec->value_len + 1);
        td_db_after_commit(n->db, local_push, lp);
    }
    notif_made_t made_n = {.id = id,
                           .user_id = user_id,
                           .type = d->type,
                           .seq = seq,
                           .thread = d->thread,
                           .replaces = *replaces ? replaces : NULL,
                           .json = json,
                           .rec = rec};
    if (rc == 0 && n->deliver) rc = n->deliver(n->deliver_arg, n->db, &made_n);
    td_record_free(rec);
    free(json);
    if (rc != 0) goto out;

    char labels[128];
    td_metric_inc("tidings_notifications_created_total",
                  td_metric_labels(labels, sizeof(labels), "type", d->type, NULL));
    *made = true;
out:
    td_event_free(ev);
    return rc;
}

/* ---- the inbox ----------------------------------------------------------------------- */

static int64_t unread_count(td_db_t *db, const char *user_id)
{
    sqlite3_stmt *st = td_db_prepare(db, "SELECT COUNT(*) FROM notifications"
                                         " WHERE user_id = ? AND read_at IS NULL AND deleted = 0");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    int64_t cnt = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    td_db_done(st);
    return cnt;
}

json_t *notif__page(td_db_t *db, const char *sql, const char *user_id, int64_t before, int limit,
                    int cursor_col, notif_item_fn item, int first, json_t **next)
{
    if (limit <= 0) limit = NOTIF_PAGE_DEFAULT;
    if (limit > NOTIF_PAGE_MAX) limit = NOTIF_PAGE_MAX;
    json_t *items = json_array();
    int64_t last = 0;
    bool more = false;
    sqlite3_stmt *st = td_db_prepare(db, sql);
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, before);
    sqlite3_bind_int(st, 3, limit + 1); /* one more tells whether a next page exists */
    while (sqlite3_step(st) == SQLITE_ROW) {
        if ((int)json_array_size(items) == limit) {
            more = true;
            break;
        }
        last = sqlite3_column_int64(st, cursor_col);
        json_array_append_new(items, item(st, first));
    }
    td_db_done(st);
    *next = more ? json_sprintf("%" PRId64, last) : json_null();
    return items;
}

json_t *notif__page_answer(td_db_t *db, const char *key, const char *sql, const char *user_id,
                           int64_t before, int limit, notif_item_fn item)
{
    json_t *next;
    td_db_lock(db);
    json_t *items = notif__page(db, sql, user_id, before, limit, 0, item, 1, &next);
    td_db_unlock(db);
    return json_pack("{s:o, s:o}", key, items, "next", next);
}

/* row_json as a notif_item_fn: a notification row starts at column 0. */
static json_t *notification_item(sqlite3_stmt *st, int first)
{
    TD_UNUSED(first);
    return row_json(st);
}

/* The latest notification of its thread that the user still has (the
 * notification row is n). */
#define LATEST_OF_THREAD                                                               \
    " AND n.seq = (SELECT MAX(t.seq) FROM notifications t WHERE t.user_id = n.user_id" \
    " AND t.thread = n.thread AND t.deleted = 0)"

static int64_t unread_latest_count(td_db_t *db, const char *user_id)
{
    sqlite3_stmt *st =
        td_db_prepare(db, "SELECT COUNT(*) FROM notifications n WHERE n.user_id = ?"
                          " AND n.read_at IS NULL AND n.deleted = 0" LATEST_OF_THREAD);
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    int64_t cnt = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    td_db_done(st);
    return cnt;
}

int notif_list(td_db_t *db, const char *user_id, int64_t before_seq, int limit, bool collapse,
               json_t **out)
{
    json_t *next;
    td_db_lock(db);
    json_t *items =
        collapse
            ? notif__page(db,
                          "SELECT " NOTIF_COLUMNS " FROM notifications n WHERE n.user_id = ?1"
                          " AND n.deleted = 0 AND (?2 = 0 OR n.seq < ?2)" LATEST_OF_THREAD
                          " ORDER BY n.seq DESC LIMIT ?3",
                          user_id, before_seq, limit, 1, notification_item, 0, &next)
            : notif__page(db,
                          "SELECT " NOTIF_COLUMNS " FROM notifications WHERE user_id = ?1"
                          " AND deleted = 0 AND (?2 = 0 OR seq < ?2) ORDER BY seq DESC LIMIT ?3",
                          user_id, before_seq, limit, 1, notification_item, 0, &next);
    int64_t unread = collapse ? unread_latest_count(db, user_id) : unread_count(db, user_id);
    td_db_unlock(db);

    *out = json_pack("{s:o, s:I, s:o}", "notifications", items, "unread", (json_int_t)unread,
                     "next", next);
    return 0;
}

static json_t *get_one(td_db_t *db, const char *user_id, const char *id)
{
    sqlite3_stmt *st = td_db_prepare(db, "SELECT " NOTIF_COLUMNS " FROM notifications"
                                         " WHERE id = ? AND user_id = ? AND deleted = 0");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_STATIC);
    json_t *o = sqlite3_step(st) == SQLITE_ROW ? row_json(st) : NULL;
    td_db_done(st);
    return o;
}

/* The SPEC's channel names for the delivery queue's. */
static const char *channel_name(const char *queued)
{
    return strcmp(queued, TD_DELIVERY_WEBPUSH) == 0 ? NOTIF_CHANNEL_PUSH : queued;
}

int notif_get(td_db_t *db, const char *user_id, const char *id, json_t **out)
{
    td_db_lock(db);
    *out = get_one(db, user_id, id);
    json_t *deliveries = *out ? td_delivery_status(db, id) : NULL;
    td_db_unlock(db);
    if (!*out) return TD_ENOENT;
    size_t i;
    json_t *d;
    json_array_foreach(deliveries, i, d)
    {
        const char *c = json_string_value(json_object_get(d, "channel"));
        json_object_set_new(d, "channel", json_string(channel_name(c)));
    }
    json_object_set_new(*out, "deliveries", deliveries);
    return 0;
}

int notif_mark_read(td_db_t *db, const char *user_id, const char *id, json_t **out)
{
    char now[TD_TIME_LEN + 1];
    td_time_format(td_now_ms(), now);
    int rc = td_db_begin(db);
    if (rc) return rc;
    sqlite3_stmt *st = td_db_prepare(db, "UPDATE notifications SET read_at = COALESCE(read_at, ?)"
                                         " WHERE id = ? AND user_id = ? AND deleted = 0");
    sqlite3_bind_text(st, 1, now, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, user_id, -1, SQLITE_TRANSIENT);
    if ((rc = td_db_run(db, st)) != 0) goto fail;
    if (!(*out = get_one(db, user_id, id))) {
        rc = TD_ENOENT;
        goto fail;
    }
    return td_db_commit(db);

fail:
    td_db_rollback(db);
    return rc;
}

int notif_mark_all_read(td_db_t *db, const char *user_id, int64_t *count)
{
    char now[TD_TIME_LEN + 1];
    td_time_format(td_now_ms(), now);
    int rc = td_db_begin(db);
    if (rc) return rc;
    sqlite3_stmt *st = td_db_prepare(db, "UPDATE notifications SET read_at = ?"
                                         " WHERE user_id = ? AND read_at IS NULL AND deleted = 0");
    sqlite3_bind_text(st, 1, now, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_STATIC);
    if ((rc = td_db_run(db, st)) != 0) {
        td_db_rollback(db);
        return rc;
    }
    *count = td_db_changes(db);
    return td_db_commit(db);
}

int notif_delete(td_db_t *db, const char *user_id, const char *id)
{
    int rc = td_db_begin(db);
    if (rc) return rc;
    sqlite3_stmt *st = td_db_prepare(db, "UPDATE notifications SET deleted = 1, title = '',"
                                         " body = '', data = '{}'"
                                         " WHERE id = ? AND user_id = ? AND deleted = 0");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_STATIC);
    return td_db_run_last_one(db, st);
}

int notif_after(td_db_t *db, const char *user_id, int64_t after_seq, int limit, json_t **out)
{
    json_t *items = json_array();
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, "SELECT " NOTIF_COLUMNS " FROM notifications"
                                         " WHERE user_id = ? AND seq > ? AND deleted = 0"
                                         " ORDER BY seq LIMIT ?");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, after_seq);
    sqlite3_bind_int(st, 3, limit);
    while (sqlite3_step(st) == SQLITE_ROW) json_array_append_new(items, row_json(st));
    td_db_done(st);
    td_db_unlock(db);
    *out = items;
    return 0;
}

int notif_last_seq(td_db_t *db, const char *user_id, int64_t *out)
{
    td_db_lock(db);
    sqlite3_stmt *st =
        td_db_prepare(db, "SELECT COALESCE(MAX(seq), 0) FROM notifications WHERE user_id = ?");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st) == SQLITE_ROW ? 0 : TD_EIO;
    *out = rc == 0 ? sqlite3_column_int64(st, 0) : 0;
    td_db_done(st);
    td_db_unlock(db);
    return rc;
}
