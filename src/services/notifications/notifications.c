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
 * job where its last chunk committed. */
#include "notifications/notifications.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifications/channels.h"
#include "notifications/digest.h"
#include "tidings/bus.h"
#include "tidings/delivery.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/metrics.h"

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

const td_migration_t notif_migrations[] = {
    {1, schema_v1}, {2, notif_channels_schema}, /* Web Push and webhooks (channels.c) */
    {3, schema_v3}, {4, schema_v4},
    {5, schema_v5}, {6, notif_digest_schema}, /* digests (digest.c) */
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

/* A field name the catalogue holds as money in some event (price, total,
 * ...): templates print those as money for people. */
static bool is_money_field(const char *name)
{
    for (int e = 0; e < TD_EV__COUNT; e++)
        for (const td_field_spec_t *f = td_catalog((td_ev_t)e)->fields; f->name; f++)
            if (f->kind == TD_FIELD_MONEY && !strcmp(f->name, name)) return true;
    return false;
}

/* ---- templates -------------------------------------------------------------- */

void notif_money_text(int64_t cents, char *buf, size_t len)
{
    /* The JSON form ("2258", "19.9" is 19.90) is for programs; a sentence
     * that says "total 2258." reads like a count, so people get grouped
     * units and both decimals. Event money is never negative (the check
     * refuses it), but a sign costs nothing. */
    const char *sign = cents < 0 ? "-" : "";
    uint64_t abs = cents < 0 ? (uint64_t)0 - (uint64_t)cents : (uint64_t)cents;
    char digits[24], grouped[40];
    int n = snprintf(digits, sizeof(digits), "%" PRIu64, abs / 100);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0) grouped[k++] = ',';
        grouped[k++] = digits[i];
    }
    grouped[k] = '\0';
    snprintf(buf, len, "%s%s.%02u", sign, grouped, (unsigned)(abs % 100));
}

/* The text of vars[name], or NULL when absent (or empty, or not a scalar). */
static char *value_text(const json_t *vars, const char *name)
{
    const json_t *v = json_object_get(vars, name);
    char buf[32];
    if (json_is_string(v)) return json_string_length(v) ? td_strdup(json_string_value(v)) : NULL;
    if (is_money_field(name)) {
        int64_t cents;
        if (!json_is_number(v) || td_json_to_cents(v, name, &cents, NULL, 0) != 0) return NULL;
        notif_money_text(cents, buf, sizeof(buf));
        return td_strdup(buf);
    }
    if (json_is_integer(v)) return td_asprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
    if (json_is_real(v)) return td_asprintf("%g", json_real_value(v));
    return NULL;
}

char *notif_render(const char *tpl, const json_t *vars, char *errstr, size_t errlen)
{
    td_strbuf_t sb = {0};
    const char *p = tpl;
    while (*p) {
        if (*p == '[') {
            const char *end = strchr(p, ']');
            if (!end) goto bad_tpl;
            char *inner = td_strndup(p + 1, (size_t)(end - p - 1));
            char *text = notif_render(inner, vars, NULL, 0);
            if (text) td_strbuf_add(&sb, text, strlen(text));
            free(text);
            free(inner);
            p = end + 1;
        } else if (*p == '{') {
            const char *end = strchr(p, '}');
            if (!end) goto bad_tpl;
            char *name = td_strndup(p + 1, (size_t)(end - p - 1));
            char *text = value_text(vars, name);
            if (!text) {
                td_errf(errstr, errlen, TD_EINVAL, "field '%s' is missing", name);
                free(name);
                goto fail;
            }
            td_strbuf_add(&sb, text, strlen(text));
            free(text);
            free(name);
            p = end + 1;
        } else {
            size_t n = strcspn(p, "[{");
            td_strbuf_add(&sb, p, n);
            p += n;
        }
    }
    return td_strbuf_take(&sb);

bad_tpl:
    td_errf(errstr, errlen, TD_EINVAL, "unbalanced template: %s", tpl);
fail:
    free(sb.p);
    return NULL;
}

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

/* What one notification is made of; the same for every recipient. */
typedef struct notif_draft {
    const char *type;
    const char *title;
    const char *body;
    const char *data;        /* JSON object text */
    const td_event_t *cause; /* for the cause id and NotificationCreatedEvent's lineage */
    /* The same for every recipient, so made once (draft_ready): title and
     * body as JSON strings, quotes and escapes included. */
    char *title_js, *body_js;
    char thread[NOTIF_THREAD_LEN + 1]; /* notif_thread_of data */
} notif_draft_t;

static char *json_str(const char *s)
{
    json_t *j = json_string(s);
    char *out = j ? json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT) : NULL;
    json_decref(j);
    if (!out) td_oom(); /* the texts are UTF-8 (checked or made here) */
    return out;
}

static void draft_ready(notif_draft_t *d)
{
    d->title_js = json_str(d->title);
    d->body_js = json_str(d->body);
    json_t *data = json_loads(d->data, 0, NULL);
    notif_thread_of(data, d->thread);
    json_decref(data);
}

static void draft_clear(notif_draft_t *d)
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
static int create_one(notif_t *n, const notif_draft_t *d, const char *user_id, bool *made)
{
    int rc;
    td_event_t *ev = NULL;
    *made = false;

    /* The next seq of this user: inside the write transaction, so no other
     * writer can take it between this read and the insert. */
    sqlite3_stmt *st = td_db_prepare(
        n->db, "SELECT COALESCE(MAX(seq), 0) + 1 FROM notifications WHERE user_id = ?");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    int64_t seq = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    if (seq < 1) return TD_EIO;

    /* The latest of the thread that the user still has: this one
     * supersedes it ("Order confirmed" replaces "Order received"). */
    char replaces[TD_UUID_LEN + 1] = "";
    st = td_db_prepare(n->db, "SELECT id FROM notifications WHERE user_id = ? AND thread = ?"
                              " AND deleted = 0 ORDER BY seq DESC LIMIT 1");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, d->thread, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
        snprintf(replaces, sizeof(replaces), "%s", (const char *)sqlite3_column_text(st, 0));
    td_db_done(st);

    char id[TD_UUID_LEN + 1], now[TD_TIME_LEN + 1];
    td_uuid_v7(id); /* appended to the primary key, not scattered */
    td_time_format(td_now_ms(), now);
    st =
        td_db_prepare(n->db, "INSERT INTO notifications (id, user_id, seq, type, title, body, data,"
                             " created_at, cause_id, thread, replaces)"
                             " VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                             " ON CONFLICT (cause_id, user_id) DO NOTHING");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, seq);
    sqlite3_bind_text(st, 4, d->type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, d->title, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, d->body, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 7, d->data, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 8, now, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, d->cause->id, -1, SQLITE_TRANSIENT);
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

static bool is_muted(td_db_t *db, const char *user_id, const char *type)
{
    sqlite3_stmt *st = td_db_prepare(db, "SELECT 1 FROM mutes WHERE user_id = ? AND type = ?");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, type, -1, SQLITE_TRANSIENT);
    bool muted = sqlite3_step(st) == SQLITE_ROW;
    td_db_done(st);
    return muted;
}

/* Queues d for the audience of rule: the recipients are chosen now, in
 * one statement, with muted users left out. */
static int queue_fanout(notif_t *n, const notif_rule_t *rule, const notif_draft_t *d,
                        const json_t *event_data)
{
    char traceparent[TD_TRACEPARENT_LEN + 1];
    td_trace_format(&d->cause->trace, traceparent);
    sqlite3_stmt *st = td_db_prepare(
        n->db, "INSERT INTO fanout_jobs (cause_id, correlation_id, traceparent, type, title, body,"
               " data, created_ms) VALUES (?,?,?,?,?,?,?,?)");
    sqlite3_bind_text(st, 1, d->cause->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, d->cause->correlationid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, traceparent, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, d->type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, d->title, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, d->body, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 7, d->data, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 8, td_now_ms());
    int rc = td_db_run(n->db, st);
    if (rc) return rc;
    int64_t job = sqlite3_last_insert_rowid(td_db_sqlite(n->db));

    if (rule->to == NOTIF_TO_WATCHERS) {
        st = td_db_prepare(n->db, "INSERT INTO fanout_recipients (job_id, user_id)"
                                  " SELECT ?1, w.user_id FROM watches w WHERE w.product_id = ?2"
                                  " AND NOT EXISTS (SELECT 1 FROM mutes m"
                                  "   WHERE m.user_id = w.user_id AND m.type = ?3)");
        sqlite3_bind_text(st, 2, json_string_value(json_object_get(event_data, "productId")), -1,
                          SQLITE_TRANSIENT);
    } else {
        st = td_db_prepare(n->db, "INSERT INTO fanout_recipients (job_id, user_id)"
                                  " SELECT ?1, p.user_id FROM prefs p WHERE p.new_products = 1"
                                  " AND NOT EXISTS (SELECT 1 FROM mutes m"
                                  "   WHERE m.user_id = p.user_id AND m.type = ?3)");
    }
    sqlite3_bind_int64(st, 1, job);
    sqlite3_bind_text(st, 3, d->type, -1, SQLITE_TRANSIENT);
    if ((rc = td_db_run(n->db, st)) != 0) return rc;
    int recipients = td_db_changes(n->db);
    if (recipients == 0) {
        st = td_db_prepare(n->db, "DELETE FROM fanout_jobs WHERE id = ?");
        sqlite3_bind_int64(st, 1, job);
        return td_db_run(n->db, st);
    }
    td_debug("fan-out job %" PRId64 " for %s: %d recipients", job, d->type, recipients);
    if (n->wake) n->wake(n->wake_arg);
    return 0;
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
        notif_draft_t d = {ev->type, title, body, data, ev, NULL, NULL, ""};
        draft_ready(&d);
        if (rule->to == NOTIF_TO_USER) {
            const char *user_id = json_string_value(json_object_get(ev->data, "userId"));
            bool made;
            if (!is_muted(n->db, user_id, ev->type)) rc = create_one(n, &d, user_id, &made);
        } else {
            rc = queue_fanout(n, rule, &d, ev->data);
        }
        draft_clear(&d);
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

/* ---- fan-out ---------------------------------------------------------------------- */

int notif_fanout_step(notif_t *n, size_t *created)
{
    int chunk = n->fanout_chunk > 0 ? n->fanout_chunk : 250;
    *created = 0;
    int rc = td_db_begin(n->db);
    if (rc) return rc;

    sqlite3_stmt *job = td_db_prepare(
        n->db, "SELECT id, cause_id, correlation_id, traceparent, type, title, body, data"
               " FROM fanout_jobs ORDER BY id LIMIT 1");
    if (sqlite3_step(job) != SQLITE_ROW) {
        td_db_done(job);
        td_db_rollback(n->db);
        return 0;
    }
    int64_t job_id = sqlite3_column_int64(job, 0);
    /* The cause as far as NotificationCreatedEvent's lineage needs it. */
    td_event_t cause;
    memset(&cause, 0, sizeof(cause));
    snprintf(cause.id, sizeof(cause.id), "%s", (const char *)sqlite3_column_text(job, 1));
    cause.correlationid = (char *)sqlite3_column_text(job, 2);
    if (td_trace_parse((const char *)sqlite3_column_text(job, 3), &cause.trace, NULL, 0) != 0)
        td_trace_new(&cause.trace);
    notif_draft_t d = {(const char *)sqlite3_column_text(job, 4),
                       (const char *)sqlite3_column_text(job, 5),
                       (const char *)sqlite3_column_text(job, 6),
                       (const char *)sqlite3_column_text(job, 7),
                       &cause,
                       NULL,
                       NULL,
                       ""};
    draft_ready(&d);

    sqlite3_stmt *rcp = td_db_prepare(n->db, "SELECT user_id FROM fanout_recipients"
                                             " WHERE job_id = ? ORDER BY user_id LIMIT ?");
    sqlite3_bind_int64(rcp, 1, job_id);
    sqlite3_bind_int(rcp, 2, chunk);
    int cnt = 0;
    char last[TD_UUID_LEN + 1] = "";
    while ((rc = sqlite3_step(rcp)) == SQLITE_ROW) {
        const char *user_id = (const char *)sqlite3_column_text(rcp, 0);
        bool made;
        if ((rc = create_one(n, &d, user_id, &made)) != 0) break;
        if (made) (*created)++;
        snprintf(last, sizeof(last), "%s", user_id);
        cnt++;
    }
    td_db_done(rcp);
    if (rc != SQLITE_DONE) {
        rc = rc < 0 ? rc : TD_EIO;
        goto fail;
    }

    sqlite3_stmt *st;
    if (cnt < chunk) {
        st = td_db_prepare(n->db, "DELETE FROM fanout_jobs WHERE id = ?");
        sqlite3_bind_int64(st, 1, job_id);
    } else {
        st =
            td_db_prepare(n->db, "DELETE FROM fanout_recipients WHERE job_id = ? AND user_id <= ?");
        sqlite3_bind_int64(st, 1, job_id);
        sqlite3_bind_text(st, 2, last, -1, SQLITE_TRANSIENT);
    }
    if ((rc = td_db_run(n->db, st)) != 0) goto fail;
    draft_clear(&d);
    td_db_done(job);
    if ((rc = td_db_commit(n->db)) != 0) return rc;
    return 1;

fail:
    draft_clear(&d);
    td_db_done(job);
    td_db_rollback(n->db);
    *created = 0;
    return rc;
}

int64_t notif_fanout_pending(td_db_t *db)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, "SELECT COUNT(*) FROM fanout_recipients");
    int64_t cnt = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(db);
    return cnt;
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
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_TRANSIENT);
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
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_TRANSIENT);
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
    sqlite3_bind_text(st, 2, user_id, -1, SQLITE_TRANSIENT);
    if ((rc = td_db_run(db, st)) != 0) {
        td_db_rollback(db);
        return rc;
    }
    if (td_db_changes(db) == 0) {
        td_db_rollback(db);
        return TD_ENOENT;
    }
    return td_db_commit(db);
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

/* ---- preferences ------------------------------------------------------------------------ */

static const notif_channel_t *channel_find(const char *name)
{
    for (size_t i = 0; i < notif_channel_cnt; i++)
        if (strcmp(notif_channels[i].name, name) == 0) return &notif_channels[i];
    return NULL;
}

bool notif_channel_wants(td_db_t *db, const char *user_id, const char *channel, const char *type)
{
    const notif_channel_t *c = channel_find(channel);
    assert(c && "a channel of notif_channels");
    sqlite3_stmt *st = td_db_prepare(
        db, "SELECT COALESCE((SELECT enabled FROM channel_prefs WHERE user_id = ?1"
            "   AND channel = ?2), ?3)"
            " AND NOT EXISTS (SELECT 1 FROM channel_mutes WHERE user_id = ?1 AND channel = ?2"
            "   AND type = ?4)");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, channel, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 3, c->enabled_by_default);
    sqlite3_bind_text(st, 4, type, -1, SQLITE_TRANSIENT);
    bool wants = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
    td_db_done(st);
    return wants;
}

static json_t *channels_json(td_db_t *db, const char *user_id)
{
    json_t *out = json_object();
    for (size_t i = 0; i < notif_channel_cnt; i++) {
        const notif_channel_t *c = &notif_channels[i];
        sqlite3_stmt *st = td_db_prepare(
            db, "SELECT enabled FROM channel_prefs WHERE user_id = ? AND channel = ?");
        sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, c->name, -1, SQLITE_STATIC);
        bool enabled =
            sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int(st, 0) != 0 : c->enabled_by_default;
        td_db_done(st);
        json_t *muted = json_array();
        st = td_db_prepare(db, "SELECT type FROM channel_mutes WHERE user_id = ? AND channel = ?"
                               " ORDER BY type");
        sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, c->name, -1, SQLITE_STATIC);
        while (sqlite3_step(st) == SQLITE_ROW)
            json_array_append_new(muted, json_string((const char *)sqlite3_column_text(st, 0)));
        td_db_done(st);
        json_object_set_new(out, c->name,
                            json_pack("{s:b, s:o}", "enabled", enabled, "muted", muted));
    }
    return out;
}

/* An array of rule-table event types, or TD_EINVAL naming what (field). */
static int check_types(const json_t *arr, const char *field, char *errstr, size_t errlen)
{
    if (!json_is_array(arr))
        return td_errf(errstr, errlen, TD_EINVAL, "%s must be an array of event types", field);
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (!json_is_string(v))
            return td_errf(errstr, errlen, TD_EINVAL, "%s must be an array of event types", field);
        if (!notif_type_known(json_string_value(v)))
            return td_errf(errstr, errlen, TD_EINVAL, "unknown event type '%.100s' in %s",
                           json_string_value(v), field);
    }
    return 0;
}

static int check_channels(const json_t *channels, char *errstr, size_t errlen)
{
    static const char *const fields[] = {"enabled", "muted", NULL};
    if (!json_is_object(channels))
        return td_errf(errstr, errlen, TD_EINVAL,
                       "channels must be an object of push, webhook and email");
    const char *name;
    json_t *c;
    json_object_foreach((json_t *)channels, name, c)
    {
        if (!channel_find(name))
            return td_errf(errstr, errlen, TD_EINVAL,
                           "unknown channel '%.40s' (push, webhook or email)", name);
        if (!json_is_object(c))
            return td_errf(errstr, errlen, TD_EINVAL,
                           "channels.%s must be an object {enabled, muted}", name);
        int rc = td_json_only_fields(c, fields, errstr, errlen);
        if (rc) return rc;
        const json_t *enabled = json_object_get(c, "enabled");
        if (enabled && !json_is_boolean(enabled))
            return td_errf(errstr, errlen, TD_EINVAL, "channels.%s.enabled must be true or false",
                           name);
        const json_t *muted = json_object_get(c, "muted");
        char field[64];
        snprintf(field, sizeof(field), "channels.%s.muted", name);
        if (muted && (rc = check_types(muted, field, errstr, errlen)) != 0) return rc;
    }
    return 0;
}

int notif__channel_set_enabled(td_db_t *db, const char *user_id, const char *channel, bool enabled)
{
    assert(channel_find(channel));
    sqlite3_stmt *st = td_db_prepare(
        db, "INSERT INTO channel_prefs (user_id, channel, enabled) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id, channel) DO UPDATE SET enabled = excluded.enabled");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, channel, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 3, enabled);
    return td_db_run(db, st);
}

static int save_channels(td_db_t *db, const char *user_id, const json_t *channels)
{
    const char *name;
    json_t *c;
    int rc;
    json_object_foreach((json_t *)channels, name, c)
    {
        const json_t *enabled = json_object_get(c, "enabled");
        if (enabled && (rc = notif__channel_set_enabled(db, user_id, name, json_is_true(enabled))))
            return rc;
        const json_t *muted = json_object_get(c, "muted");
        if (!muted) continue;
        sqlite3_stmt *st =
            td_db_prepare(db, "DELETE FROM channel_mutes WHERE user_id = ? AND channel = ?");
        sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
        if ((rc = td_db_run(db, st)) != 0) return rc;
        size_t i;
        json_t *v;
        json_array_foreach(muted, i, v)
        {
            st = td_db_prepare(db, "INSERT OR IGNORE INTO channel_mutes (user_id, channel, type)"
                                   " VALUES (?, ?, ?)");
            sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 2, name, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 3, json_string_value(v), -1, SQLITE_TRANSIENT);
            if ((rc = td_db_run(db, st)) != 0) return rc;
        }
    }
    return 0;
}

bool notif_quiet_of(td_db_t *db, const char *user_id, notif_quiet_t *q)
{
    sqlite3_stmt *st = td_db_prepare(db, "SELECT quiet_start, quiet_end, quiet_zone FROM prefs"
                                         " WHERE user_id = ? AND quiet_zone IS NOT NULL");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    bool has = sqlite3_step(st) == SQLITE_ROW;
    if (has) {
        q->start_s = sqlite3_column_int(st, 0);
        q->end_s = sqlite3_column_int(st, 1);
        snprintf(q->zone, sizeof(q->zone), "%s", (const char *)sqlite3_column_text(st, 2));
    }
    td_db_done(st);
    return has;
}

static json_t *prefs_json(td_db_t *db, const char *user_id)
{
    sqlite3_stmt *st = td_db_prepare(db, "SELECT new_products FROM prefs WHERE user_id = ?");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    bool new_products = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
    td_db_done(st);
    json_t *muted = json_array();
    st = td_db_prepare(db, "SELECT type FROM mutes WHERE user_id = ? ORDER BY type");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    while (sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(muted, json_string((const char *)sqlite3_column_text(st, 0)));
    td_db_done(st);
    notif_quiet_t q;
    json_t *quiet = notif_quiet_of(db, user_id, &q) ? notif_quiet_json(&q) : json_null();
    return json_pack("{s:o, s:b, s:o, s:o, s:i}", "muted", muted, "newProducts", new_products,
                     "channels", channels_json(db, user_id), "quietHours", quiet, "digestMinutes",
                     notif_digest_minutes(db, user_id));
}

int notif_prefs_get(td_db_t *db, const char *user_id, json_t **out)
{
    td_db_lock(db);
    *out = prefs_json(db, user_id);
    td_db_unlock(db);
    return 0;
}

int notif_prefs_put(td_db_t *db, const char *user_id, const json_t *body, json_t **out,
                    char *errstr, size_t errlen)
{
    static const char *const allowed[] = {"muted",      "newProducts",   "channels",
                                          "quietHours", "digestMinutes", NULL};
    if (!json_is_object(body))
        return td_errf(errstr, errlen, TD_EINVAL, "the preferences must be an object");
    int rc = td_json_only_fields(body, allowed, errstr, errlen);
    if (rc) return rc;
    json_t *muted = json_object_get(body, "muted");
    json_t *new_products = json_object_get(body, "newProducts");
    json_t *channels = json_object_get(body, "channels");
    if (muted && (rc = check_types(muted, "muted", errstr, errlen)) != 0) return rc;
    if (new_products && !json_is_boolean(new_products))
        return td_errf(errstr, errlen, TD_EINVAL, "newProducts must be true or false");
    if (channels && (rc = check_channels(channels, errstr, errlen)) != 0) return rc;
    json_t *digest = json_object_get(body, "digestMinutes");
    if (digest && (!json_is_integer(digest) || json_integer_value(digest) < 0 ||
                   json_integer_value(digest) > NOTIF_DIGEST_MAX_MINUTES))
        return td_errf(errstr, errlen, TD_EINVAL, "digestMinutes must be an integer from 0 to %d",
                       NOTIF_DIGEST_MAX_MINUTES);
    json_t *quiet_v = json_object_get(body, "quietHours");
    notif_quiet_t quiet;
    if (quiet_v && !json_is_null(quiet_v) &&
        (rc = notif_quiet_parse(quiet_v, &quiet, errstr, errlen)) != 0)
        return rc;

    if ((rc = td_db_begin(db)) != 0) return rc;
    sqlite3_stmt *st = td_db_prepare(db, "INSERT INTO prefs (user_id, new_products) VALUES (?1, ?2)"
                                         " ON CONFLICT (user_id) DO UPDATE SET new_products ="
                                         " CASE WHEN ?3 THEN ?2 ELSE new_products END");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, json_is_true(new_products));
    sqlite3_bind_int(st, 3, new_products != NULL);
    if ((rc = td_db_run(db, st)) != 0) goto fail;
    if (muted) {
        st = td_db_prepare(db, "DELETE FROM mutes WHERE user_id = ?");
        sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
        if ((rc = td_db_run(db, st)) != 0) goto fail;
        size_t i;
        json_t *v;
        json_array_foreach(muted, i, v)
        {
            st = td_db_prepare(db, "INSERT OR IGNORE INTO mutes (user_id, type) VALUES (?, ?)");
            sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(st, 2, json_string_value(v), -1, SQLITE_TRANSIENT);
            if ((rc = td_db_run(db, st)) != 0) goto fail;
        }
    }
    if (channels && (rc = save_channels(db, user_id, channels)) != 0) goto fail;
    if (digest) {
        st = td_db_prepare(db, "UPDATE prefs SET digest_minutes = ? WHERE user_id = ?");
        sqlite3_bind_int(st, 1, (int)json_integer_value(digest));
        sqlite3_bind_text(st, 2, user_id, -1, SQLITE_TRANSIENT);
        if ((rc = td_db_run(db, st)) != 0) goto fail;
    }
    if (quiet_v) {
        bool none = json_is_null(quiet_v);
        st = td_db_prepare(db, "UPDATE prefs SET quiet_start = ?, quiet_end = ?, quiet_zone = ?"
                               " WHERE user_id = ?");
        if (none) {
            sqlite3_bind_null(st, 1);
            sqlite3_bind_null(st, 2);
            sqlite3_bind_null(st, 3);
        } else {
            sqlite3_bind_int(st, 1, quiet.start_s);
            sqlite3_bind_int(st, 2, quiet.end_s);
            sqlite3_bind_text(st, 3, quiet.zone, -1, SQLITE_TRANSIENT);
        }
        sqlite3_bind_text(st, 4, user_id, -1, SQLITE_TRANSIENT);
        if ((rc = td_db_run(db, st)) != 0) goto fail;
    }
    *out = prefs_json(db, user_id);
    if ((rc = td_db_commit(db)) != 0) {
        json_decref(*out);
        *out = NULL;
    }
    return rc;

fail:
    td_db_rollback(db);
    return rc;
}

/* ---- watches ------------------------------------------------------------------------------- */

static json_t *watch_json(sqlite3_stmt *st, int first)
{
    /* Columns from first: product_id, created_at, title, price_cents, quantity. */
    const char *title = (const char *)sqlite3_column_text(st, first + 2);
    return json_pack("{s:s, s:s?, s:o, s:o, s:s}", "productId",
                     (const char *)sqlite3_column_text(st, first), "title", title, "price",
                     title ? td_json_money(sqlite3_column_int64(st, first + 3)) : json_null(),
                     "quantity",
                     title ? json_integer(sqlite3_column_int64(st, first + 4)) : json_null(),
                     "createdAt", (const char *)sqlite3_column_text(st, first + 1));
}

int notif_watch_add(td_db_t *db, const char *user_id, const char *product_id, bool *created,
                    json_t **out)
{
    char now[TD_TIME_LEN + 1];
    td_time_format(td_now_ms(), now);
    int rc = td_db_begin(db);
    if (rc) return rc;
    /* A product not seen yet may have been created a moment ago, before
     * its ProductCreatedEvent got here: the watch is kept (title null
     * until the event arrives). A deleted one can never fire. */
    sqlite3_stmt *st = td_db_prepare(db, "SELECT 1 FROM products WHERE id = ? AND deleted = 1");
    sqlite3_bind_text(st, 1, product_id, -1, SQLITE_TRANSIENT);
    bool deleted = sqlite3_step(st) == SQLITE_ROW;
    td_db_done(st);
    if (deleted) {
        rc = TD_ENOENT;
        goto fail;
    }
    st = td_db_prepare(db, "INSERT INTO watches (user_id, product_id, created_at) VALUES (?,?,?)"
                           " ON CONFLICT (user_id, product_id) DO NOTHING");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, product_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, now, -1, SQLITE_STATIC);
    if ((rc = td_db_run(db, st)) != 0) goto fail;
    *created = td_db_changes(db) == 1;
    st = td_db_prepare(db, "SELECT w.product_id, w.created_at, p.title, p.price_cents, p.quantity"
                           " FROM watches w LEFT JOIN products p ON p.id = w.product_id"
                           " WHERE w.user_id = ? AND w.product_id = ?");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, product_id, -1, SQLITE_TRANSIENT);
    *out = sqlite3_step(st) == SQLITE_ROW ? watch_json(st, 0) : NULL;
    td_db_done(st);
    if (!*out) {
        rc = TD_EIO;
        goto fail;
    }
    return td_db_commit(db);

fail:
    td_db_rollback(db);
    return rc;
}

int notif_watch_list(td_db_t *db, const char *user_id, int64_t before, int limit, json_t **out)
{
    json_t *next;
    td_db_lock(db);
    json_t *items =
        notif__page(db,
                    "SELECT w.id, w.product_id, w.created_at, p.title, p.price_cents, p.quantity"
                    " FROM watches w LEFT JOIN products p ON p.id = w.product_id"
                    " WHERE w.user_id = ?1 AND (?2 = 0 OR w.id < ?2) ORDER BY w.id DESC LIMIT ?3",
                    user_id, before, limit, 0, watch_json, 1, &next);
    td_db_unlock(db);
    *out = json_pack("{s:o, s:o}", "watches", items, "next", next);
    return 0;
}

int notif_watch_remove(td_db_t *db, const char *user_id, const char *product_id)
{
    int rc = td_db_begin(db);
    if (rc) return rc;
    sqlite3_stmt *st =
        td_db_prepare(db, "DELETE FROM watches WHERE user_id = ? AND product_id = ?");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, product_id, -1, SQLITE_TRANSIENT);
    if ((rc = td_db_run(db, st)) != 0) {
        td_db_rollback(db);
        return rc;
    }
    if (td_db_changes(db) == 0) {
        td_db_rollback(db);
        return TD_ENOENT;
    }
    return td_db_commit(db);
}
