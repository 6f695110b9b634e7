/* The notifications domain (see notifications.h). The rule table below is
 * the one place that says which event notifies whom with which words; the
 * rest is the machinery around it: validating event data, keeping the few
 * facts later texts need (product titles, user names), creating a
 * notification exactly once per (cause, user) with the next seq of that
 * user in the same transaction as its NotificationCreatedEvent, and fanning
 * out events that concern many users through a job table. A fan-out job
 * fixes its recipients when the event is consumed (one set-based INSERT ...
 * SELECT, a few milliseconds for 10,000 rows) and a worker creates their
 * notifications a chunk per transaction, so neither the consumer nor the
 * HTTP handlers wait behind one long transaction, and a crash resumes the
 * job where its last chunk committed. This file holds
 * the schema, the rule table, the kept facts and notif_apply; templates.c
 * renders the texts, inbox.c creates and reads notifications, fanout.c
 * works off the jobs, prefs.c and watches.c keep what users chose. */
#include "notifications/notifications.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifications/channels.h"
#include "notifications/digest.h"
#include "notifications/notifications_internal.h"
#include "tidings/json.h"

/* ---- schema ---------------------------------------------------------------- */

static const char schema_v1[] =
    /* What earlier events told us, for texts and for POST /watches. */
    "CREATE TABLE users ("
    "  id TEXT PRIMARY KEY,"
    "  email TEXT NOT NULL,"
    "  name TEXT NOT NULL"
    ");"
    "CREATE TABLE products ("
    "  id TEXT PRIMARY KEY,"
    "  title TEXT NOT NULL,"
    "  price_cents INTEGER NOT NULL,"
    "  quantity INTEGER NOT NULL,"
    "  deleted INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE TABLE prefs ("
    "  user_id TEXT PRIMARY KEY,"
    "  new_products INTEGER NOT NULL DEFAULT 0"
    ");"
    "CREATE INDEX prefs_new_products ON prefs (user_id) WHERE new_products = 1;"
    "CREATE TABLE mutes ("
    "  user_id TEXT NOT NULL,"
    "  type TEXT NOT NULL,"
    "  PRIMARY KEY (user_id, type)"
    ") WITHOUT ROWID;"
    "CREATE TABLE watches ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  user_id TEXT NOT NULL,"
    "  product_id TEXT NOT NULL,"
    "  created_at TEXT NOT NULL,"
    "  UNIQUE (user_id, product_id)"
    ");"
    "CREATE INDEX watches_product ON watches (product_id, user_id);"
    /* The inbox. A deleted notification stays as a tombstone (deleted = 1,
     * texts blanked) so that the (cause, user) uniqueness still holds for
     * it and seq keeps having no gaps. */
    "CREATE TABLE notifications ("
    "  id TEXT PRIMARY KEY,"
    "  user_id TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  type TEXT NOT NULL,"
    "  title TEXT NOT NULL,"
    "  body TEXT NOT NULL,"
    "  data TEXT NOT NULL,"
    "  created_at TEXT NOT NULL,"
    "  read_at TEXT,"
    "  deleted INTEGER NOT NULL DEFAULT 0,"
    "  cause_id TEXT NOT NULL,"
    "  UNIQUE (user_id, seq),"
    "  UNIQUE (cause_id, user_id)"
    ");"
    "CREATE INDEX notifications_unread ON notifications (user_id)"
    "  WHERE read_at IS NULL AND deleted = 0;"
    /* Fan-out: the texts are made once per event; recipients are fixed
     * when the event is consumed and removed as their chunk commits. */
    "CREATE TABLE fanout_jobs ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  cause_id TEXT NOT NULL,"
    "  correlation_id TEXT NOT NULL,"
    "  traceparent TEXT NOT NULL,"
    "  type TEXT NOT NULL,"
    "  title TEXT NOT NULL,"
    "  body TEXT NOT NULL,"
    "  data TEXT NOT NULL,"
    "  created_ms INTEGER NOT NULL"
    ");"
    "CREATE TABLE fanout_recipients ("
    "  job_id INTEGER NOT NULL REFERENCES fanout_jobs (id) ON DELETE CASCADE,"
    "  user_id TEXT NOT NULL,"
    "  PRIMARY KEY (job_id, user_id)"
    ") WITHOUT ROWID;";

/* Threads: what a notification is about and the one of its thread it
 * supersedes. Notifications made before get their thread from their data
 * (what notif_thread_of says) and no replaces. */
static const char schema_v3[] =
    "ALTER TABLE notifications ADD COLUMN thread TEXT NOT NULL DEFAULT 'account';"
    "ALTER TABLE notifications ADD COLUMN replaces TEXT;"
    "UPDATE notifications SET thread = CASE"
    "  WHEN json_valid(data) AND json_extract(data, '$.orderId') IS NOT NULL"
    "    THEN 'order:' || json_extract(data, '$.orderId')"
    "  WHEN json_valid(data) AND json_extract(data, '$.productId') IS NOT NULL"
    "    THEN 'product:' || json_extract(data, '$.productId')"
    "  ELSE 'account' END;"
    "CREATE INDEX notifications_thread ON notifications (user_id, thread, seq);";

/* Per-channel preferences: a row only where the user changed the
 * default (notif_channels[]), and the types muted on one channel. */
static const char schema_v4[] = "CREATE TABLE channel_prefs ("
                                "  user_id TEXT NOT NULL,"
                                "  channel TEXT NOT NULL,"
                                "  enabled INTEGER NOT NULL,"
                                "  PRIMARY KEY (user_id, channel)"
                                ") WITHOUT ROWID;"
                                "CREATE TABLE channel_mutes ("
                                "  user_id TEXT NOT NULL,"
                                "  channel TEXT NOT NULL,"
                                "  type TEXT NOT NULL,"
                                "  PRIMARY KEY (user_id, channel, type)"
                                ") WITHOUT ROWID;";

/* Quiet hours: seconds into the local day and the IANA zone, all NULL
 * when the user has none. */
static const char schema_v5[] = "ALTER TABLE prefs ADD COLUMN quiet_start INTEGER;"
                                "ALTER TABLE prefs ADD COLUMN quiet_end INTEGER;"
                                "ALTER TABLE prefs ADD COLUMN quiet_zone TEXT;";

/* A notification's id is made from its cause and its user (notif__create_one),
 * so the primary key alone makes it once: the (cause, user) index, one
 * more scattered insert per notification, goes. SQLite drops a UNIQUE
 * constraint only with the table, hence the rebuild (rowid order, so the
 * order retention reads rows in stays). Ids made before stay as they are. */
static const char schema_v7[] =
    "CREATE TABLE notifications_v7 ("
    "  id TEXT PRIMARY KEY,"
    "  user_id TEXT NOT NULL,"
    "  seq INTEGER NOT NULL,"
    "  type TEXT NOT NULL,"
    "  title TEXT NOT NULL,"
    "  body TEXT NOT NULL,"
    "  data TEXT NOT NULL,"
    "  created_at TEXT NOT NULL,"
    "  read_at TEXT,"
    "  deleted INTEGER NOT NULL DEFAULT 0,"
    "  cause_id TEXT NOT NULL,"
    "  thread TEXT NOT NULL DEFAULT 'account',"
    "  replaces TEXT,"
    "  UNIQUE (user_id, seq)"
    ");"
    "INSERT INTO notifications_v7 (rowid, id, user_id, seq, type, title, body, data, created_at,"
    "  read_at, deleted, cause_id, thread, replaces)"
    " SELECT rowid, id, user_id, seq, type, title, body, data, created_at, read_at, deleted,"
    "  cause_id, thread, replaces FROM notifications ORDER BY rowid;"
    "DROP TABLE notifications;"
    "ALTER TABLE notifications_v7 RENAME TO notifications;"
    "CREATE INDEX notifications_unread ON notifications (user_id)"
    "  WHERE read_at IS NULL AND deleted = 0;"
    "CREATE INDEX notifications_thread ON notifications (user_id, thread, seq);"
    /* A fan-out's recipients get ids from the cause's time too. */
    "ALTER TABLE fanout_jobs ADD COLUMN cause_time TEXT;";

const td_migration_t notif_migrations[] = {
    {1, schema_v1}, {2, notif_channels_schema}, /* Web Push and webhooks (channels.c) */
    {3, schema_v3}, {4, schema_v4},
    {5, schema_v5}, {6, notif_digest_schema}, /* digests (digest.c) */
    {7, schema_v7},
};

const notif_channel_t notif_channels[] = {
    {NOTIF_CHANNEL_PUSH, true},
    {NOTIF_CHANNEL_WEBHOOK, true},
    {NOTIF_CHANNEL_EMAIL, false},
};
const size_t notif_channel_cnt = TD_ARRAY_SIZE(notif_channels);
const size_t notif_migration_cnt = TD_ARRAY_SIZE(notif_migrations);

/* ---- the rule table ---------------------------------------------------------- */

static bool price_dropped(const json_t *data)
{
    int64_t price, previous;
    return td_data_cents(data, "price", &price, NULL, 0) == 0 &&
           td_data_cents(data, "previousPrice", &previous, NULL, 0) == 0 && price < previous;
}

static bool back_in_stock(const json_t *data)
{
    int64_t quantity, previous;
    return td_data_int(data, "quantity", &quantity, NULL, 0) == 0 &&
           td_data_int(data, "previousQuantity", &previous, NULL, 0) == 0 && previous == 0 &&
           quantity > 0;
}

#define HOUR_S 3600
#define DAY_S  (24 * HOUR_S)

/* SPEC section 2. A new rule is one more entry. "Order received" keeps an
 * hour only: by then "Order confirmed" has replaced it (same thread, so
 * the same Web Push Topic). When an update both
 * restocks and lowers the price, "Back in stock" wins (its body still
 * names the new price): one event, one notification per user. */
const notif_rule_t notif_rules[] = {
    {TD_EV_USER_REGISTERED, NULL, NOTIF_TO_USER, "Welcome, {name}",
     "Your account {email} is ready. Happy shopping!", "low", 7 * DAY_S},
    {TD_EV_USER_LOGGED_IN, NULL, NOTIF_TO_USER, "New sign-in to your account",
     "Someone signed in as {email}[ from {ip}][ using {userAgent}]. If this was not you, "
     "change your password.",
     "high", DAY_S},
    {TD_EV_ORDER_CREATED, NULL, NOTIF_TO_USER, "Order received",
     "We received your order of {quantity} × {product}.", "normal", HOUR_S},
    {TD_EV_ORDER_APPROVED, NULL, NOTIF_TO_USER, "Order confirmed",
     "Your order of {quantity} × {product} is confirmed: total {total}.", "high", DAY_S},
    {TD_EV_ORDER_REJECTED, NULL, NOTIF_TO_USER, "Order rejected ({reason})",
     "Your order of {quantity} × {product} was rejected: {reasonText}.", "high", DAY_S},
    {TD_EV_PRODUCT_CREATED, NULL, NOTIF_TO_NEW_PRODUCTS, "New in the shop: {title}",
     "{title} is now available for {price}.", "low", DAY_S},
    {TD_EV_PRODUCT_UPDATED, back_in_stock, NOTIF_TO_WATCHERS, "Back in stock: {title}",
     "{title} is back in stock: {quantity} available at {price}.", "normal", 12 * HOUR_S},
    {TD_EV_PRODUCT_UPDATED, price_dropped, NOTIF_TO_WATCHERS, "Price drop: {title}",
     "{title} now costs {price} instead of {previousPrice}.", "normal", 12 * HOUR_S},
    {TD_EV_PRODUCT_DELETED, NULL, NOTIF_TO_WATCHERS, "No longer available: {title}",
     "{title} has been removed from the shop.", "low", DAY_S},
};
const size_t notif_rule_cnt = TD_ARRAY_SIZE(notif_rules);

/* The facts kept from events, beside the rules: a keeper runs after the
 * event's rule (so a deleted product's watchers are found first). */
typedef int (*keeper_fn)(td_db_t *db, const json_t *data);

static int keep_user(td_db_t *db, const json_t *data);
static int keep_product(td_db_t *db, const json_t *data);
static int keep_product_deleted(td_db_t *db, const json_t *data);

static const struct keeper {
    td_ev_t ev;
    keeper_fn fn;
} keepers[] = {
    {TD_EV_USER_REGISTERED, keep_user},
    {TD_EV_PRODUCT_CREATED, keep_product},
    {TD_EV_PRODUCT_UPDATED, keep_product},
    {TD_EV_PRODUCT_DELETED, keep_product_deleted},
};

const notif_rule_t *notif_rule_match(const char *type, const json_t *data)
{
    for (size_t i = 0; i < notif_rule_cnt; i++) {
        const notif_rule_t *r = &notif_rules[i];
        if (strcmp(TD_EV_NAME(r->ev), type) == 0 && (!r->when || r->when(data))) return r;
    }
    return NULL;
}

void notif_push_hints(const char *type, const char **urgency, int *ttl_s)
{
    *urgency = "normal";
    *ttl_s = DAY_S;
    for (size_t i = 0; i < notif_rule_cnt; i++)
        if (strcmp(TD_EV_NAME(notif_rules[i].ev), type) == 0) {
            *urgency = notif_rules[i].urgency;
            *ttl_s = notif_rules[i].ttl_s;
            return;
        }
}

const char *notif_thread_of(const json_t *data, char *buf)
{
    const char *order = json_string_value(json_object_get(data, "orderId"));
    const char *product = json_string_value(json_object_get(data, "productId"));
    if (order && td_uuid_valid(order))
        snprintf(buf, NOTIF_THREAD_LEN + 1, "order:%s", order);
    else if (product && td_uuid_valid(product))
        snprintf(buf, NOTIF_THREAD_LEN + 1, "product:%s", product);
    else
        snprintf(buf, NOTIF_THREAD_LEN + 1, "account");
    return buf;
}

bool notif_type_known(const char *type)
{
    for (size_t i = 0; i < notif_rule_cnt; i++)
        if (strcmp(TD_EV_NAME(notif_rules[i].ev), type) == 0) return true;
    return false;
}

size_t notif_handled_types(const char **out, size_t max)
{
    size_t cnt = 0;
    for (size_t i = 0; i < notif_rule_cnt + TD_ARRAY_SIZE(keepers); i++) {
        const char *t =
            TD_EV_NAME(i < notif_rule_cnt ? notif_rules[i].ev : keepers[i - notif_rule_cnt].ev);
        bool seen = false;
        for (size_t j = 0; j < cnt && !seen; j++) seen = strcmp(out[j], t) == 0;
        if (!seen && cnt < max) out[cnt++] = t;
    }
    return cnt;
}

/* ---- template variables --------------------------------------------------- */

static const char *reason_text(const char *reason)
{
    static const struct {
        const char *reason, *text;
    } reasons[] = {
        {"out_of_stock", "there is not enough stock"},
        {"unknown_product", "the product does not exist"},
        {"limit_exceeded", "the total is above the payment limit"},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(reasons); i++)
        if (strcmp(reasons[i].reason, reason) == 0) return reasons[i].text;
    return reason;
}

/* The template variables of an event: its data plus {product} and
 * {reasonText}. Inside the caller's lock. */
static json_t *event_vars(td_db_t *db, const json_t *data)
{
    json_t *vars = json_copy((json_t *)data); /* shallow: members are only added */
    const char *pid = json_string_value(json_object_get(data, "productId"));
    if (pid && !json_object_get(vars, "product")) {
        sqlite3_stmt *st = td_db_prepare(db, "SELECT title FROM products WHERE id = ?");
        sqlite3_bind_text(st, 1, pid, -1, SQLITE_TRANSIENT);
        json_t *title = NULL;
        if (sqlite3_step(st) == SQLITE_ROW)
            title = json_string((const char *)sqlite3_column_text(st, 0));
        td_db_done(st);
        /* A product we never heard of (older than the topic's retention):
         * name it by a short id rather than make no sentence. */
        if (!title) title = json_sprintf("product %.8s", pid);
        json_object_set_new(vars, "product", title);
    }
    const char *reason = json_string_value(json_object_get(data, "reason"));
    if (reason) json_object_set_new(vars, "reasonText", json_string(reason_text(reason)));
    return vars;
}

/* ---- keepers ------------------------------------------------------------------- */

static int keep_user(td_db_t *db, const json_t *data)
{
    sqlite3_stmt *st = td_db_prepare(db, "INSERT INTO users (id, email, name) VALUES (?, ?, ?)"
                                         " ON CONFLICT (id) DO UPDATE SET email = excluded.email,"
                                         " name = excluded.name");
    sqlite3_bind_text(st, 1, json_string_value(json_object_get(data, "userId")), -1,
                      SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, json_string_value(json_object_get(data, "email")), -1,
                      SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, json_string_value(json_object_get(data, "name")), -1,
                      SQLITE_TRANSIENT);
    return td_db_run(db, st);
}

static int keep_product(td_db_t *db, const json_t *data)
{
    int64_t price = 0, quantity = 0;
    td_data_cents(data, "price", &price, NULL, 0);
    td_data_int(data, "quantity", &quantity, NULL, 0);
    sqlite3_stmt *st =
        td_db_prepare(db, "INSERT INTO products (id, title, price_cents, quantity) VALUES (?,?,?,?)"
                          " ON CONFLICT (id) DO UPDATE SET title = excluded.title,"
                          " price_cents = excluded.price_cents, quantity = excluded.quantity");
    sqlite3_bind_text(st, 1, json_string_value(json_object_get(data, "productId")), -1,
                      SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, json_string_value(json_object_get(data, "title")), -1,
                      SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, price);
    sqlite3_bind_int64(st, 4, quantity);
    return td_db_run(db, st);
}

static int keep_product_deleted(td_db_t *db, const json_t *data)
{
    const char *pid = json_string_value(json_object_get(data, "productId"));
    /* Kept (deleted = 1) so late order events still find its title. */
    sqlite3_stmt *st = td_db_prepare(
        db, "INSERT INTO products (id, title, price_cents, quantity, deleted) VALUES (?,?,0,0,1)"
            " ON CONFLICT (id) DO UPDATE SET title = excluded.title, deleted = 1");
    sqlite3_bind_text(st, 1, pid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, json_string_value(json_object_get(data, "title")), -1,
                      SQLITE_TRANSIENT);
    int rc = td_db_run(db, st);
    if (rc) return rc;
    /* The watchers were notified (this runs after the rule): nothing is
     * left to watch. */
    st = td_db_prepare(db, "DELETE FROM watches WHERE product_id = ?");
    sqlite3_bind_text(st, 1, pid, -1, SQLITE_TRANSIENT);
    return td_db_run(db, st);
}

/* ---- applying an event ------------------------------------------------------ */

static bool is_muted(td_db_t *db, const char *user_id, const char *type)
{
    sqlite3_stmt *st = td_db_prepare(db, "SELECT 1 FROM mutes WHERE user_id = ? AND type = ?");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, type, -1, SQLITE_TRANSIENT);
    bool muted = sqlite3_step(st) == SQLITE_ROW;
    td_db_done(st);
    return muted;
}

/* The ids a notification is about, for clients to link to. */
static char *draft_data(const json_t *event_data)
{
    /* UUIDs (the catalogue's format of both) need no escaping. */
    static const char *const ids[] = {"orderId", "productId"};
    char buf[128] = "{";
    size_t len = 1;
    for (size_t i = 0; i < TD_ARRAY_SIZE(ids); i++) {
        const char *v = json_string_value(json_object_get(event_data, ids[i]));
        if (!v || !td_uuid_valid(v)) continue;
        len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s\"%s\":\"%s\"", len > 1 ? "," : "",
                                ids[i], v);
    }
    snprintf(buf + len, sizeof(buf) - len, "}");
    return td_strdup(buf);
}

int notif_apply(notif_t *n, const td_event_t *ev, char *errstr, size_t errlen)
{
    int rc = 0;
    char *title = NULL, *body = NULL, *data = NULL;
    json_t *vars = NULL;
    const struct keeper *keeper = NULL;

    /* ev->data has its type's whole shape: the consumer checked it
     * against the catalogue before calling us. */
    for (size_t i = 0; i < TD_ARRAY_SIZE(keepers); i++)
        if (strcmp(TD_EV_NAME(keepers[i].ev), ev->type) == 0) keeper = &keepers[i];

    const notif_rule_t *rule = notif_rule_match(ev->type, ev->data);
    if (rule) {
        vars = event_vars(n->db, ev->data);
        if (!(title = notif_render(rule->title, vars, errstr, errlen)) ||
            !(body = notif_render(rule->body, vars, errstr, errlen))) {
            rc = TD_EINVAL;
            goto out;
        }
        data = draft_data(ev->data);
        notif_draft_t d = {ev->type, title, body, data, ev, NULL, NULL, "", 0};
        notif__draft_ready(&d, ev->data);
        if (rule->to == NOTIF_TO_USER) {
            const char *user_id = json_string_value(json_object_get(ev->data, "userId"));
            bool made;
            if (!is_muted(n->db, user_id, ev->type)) rc = notif__create_one(n, &d, user_id, &made);
        } else {
            rc = notif__queue_fanout(n, rule, &d, ev->data);
        }
        notif__draft_clear(&d);
        if (rc) goto out;
    }
    if (keeper && (rc = keeper->fn(n->db, ev->data)) != 0) goto out;

out:
    if (rc && rc != TD_EINVAL) td_errf(errstr, errlen, rc, "database error");
    free(title);
    free(body);
    free(data);
    json_decref(vars);
    return rc;
}
