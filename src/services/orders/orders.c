/* The orders domain: an order is placed PENDING by POST /orders and ends
 * APPROVED or REJECTED when the saga's answer arrives from the products
 * (reservations topic) or payments service. The state machine is the table
 * `transitions` below and nothing else moves an order; every state change
 * commits with the event that announces it (the outbox), so the rest of
 * the system learns exactly the states this table holds. */
#include "orders/orders.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tidings/catalog.h"
#include "tidings/bus.h"
#include "tidings/json.h"
#include "tidings/log.h"

/* seq orders the list (newest first) and is its cursor; id is what the
 * world sees. */
const td_migration_t orders_migrations[] = {
    {1, "CREATE TABLE orders ("
        "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
        "  id TEXT NOT NULL UNIQUE,"
        "  user_id TEXT NOT NULL,"
        "  product_id TEXT NOT NULL,"
        "  quantity INTEGER NOT NULL CHECK (quantity > 0),"
        "  status TEXT NOT NULL CHECK (status IN ('PENDING','APPROVED','REJECTED')),"
        "  reason TEXT,"
        "  total_cents INTEGER,"
        "  created_at TEXT NOT NULL,"
        "  updated_at TEXT NOT NULL"
        ");"
        "CREATE INDEX orders_by_user ON orders (user_id, seq);"},
};
const size_t orders_migration_cnt = TD_ARRAY_SIZE(orders_migrations);

/* ---- the state machine ------------------------------------------------- */

static const char *const status_names[] = {
    [ORDER_PENDING] = "PENDING",
    [ORDER_APPROVED] = "APPROVED",
    [ORDER_REJECTED] = "REJECTED",
};

/* Every legal move, and only those. A final state has no row, so any
 * input for it is refused; that is what makes a late or repeated answer of
 * the saga harmless. */
static const struct transition {
    order_status_t from;
    order_input_t in;
    order_status_t to;
} transitions[] = {
    {ORDER_PENDING, ORDER_IN_PAYMENT_PROCESSED, ORDER_APPROVED},
    {ORDER_PENDING, ORDER_IN_PAYMENT_FAILED, ORDER_REJECTED},
    {ORDER_PENDING, ORDER_IN_RESERVATION_FAILED, ORDER_REJECTED},
};

const char *order_status_name(order_status_t st)
{
    if ((unsigned)st >= TD_ARRAY_SIZE(status_names)) return "?";
    return status_names[st];
}

int order_status_from_name(const char *name)
{
    for (size_t i = 0; name && i < TD_ARRAY_SIZE(status_names); i++)
        if (!strcmp(name, status_names[i])) return (int)i;
    return -1;
}

bool order_status_final(order_status_t st)
{
    return st == ORDER_APPROVED || st == ORDER_REJECTED;
}

bool order_transition_legal(order_status_t from, order_status_t to)
{
    for (size_t i = 0; i < TD_ARRAY_SIZE(transitions); i++)
        if (transitions[i].from == from && transitions[i].to == to) return true;
    return false;
}

int order_next(order_status_t from, order_input_t in, order_status_t *to)
{
    for (size_t i = 0; i < TD_ARRAY_SIZE(transitions); i++) {
        if (transitions[i].from == from && transitions[i].in == in) {
            *to = transitions[i].to;
            return 0;
        }
    }
    return TD_EPERM;
}

/* ---- storage ----------------------------------------------------------- */

#define ORDER_COLUMNS \
    "seq, id, user_id, product_id, quantity, status, reason, total_cents, created_at, updated_at"

static void copy_text(char *dst, size_t len, sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    snprintf(dst, len, "%s", s ? (const char *)s : "");
}

/* Reads a row selected with ORDER_COLUMNS. */
static void order_from_row(sqlite3_stmt *st, order_t *o)
{
    memset(o, 0, sizeof *o);
    o->seq = sqlite3_column_int64(st, 0);
    copy_text(o->id, sizeof o->id, st, 1);
    copy_text(o->user_id, sizeof o->user_id, st, 2);
    copy_text(o->product_id, sizeof o->product_id, st, 3);
    o->quantity = sqlite3_column_int64(st, 4);
    int status = order_status_from_name((const char *)sqlite3_column_text(st, 5));
    o->status = status < 0 ? ORDER_PENDING : (order_status_t)status;
    copy_text(o->reason, sizeof o->reason, st, 6);
    o->total_cents = sqlite3_column_type(st, 7) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 7);
    copy_text(o->created_at, sizeof o->created_at, st, 8);
    copy_text(o->updated_at, sizeof o->updated_at, st, 9);
}

/* The lock must be held. */
static int order_load(td_db_t *db, const char *order_id, order_t *out)
{
    sqlite3_stmt *st = td_db_prepare(db, "SELECT " ORDER_COLUMNS " FROM orders WHERE id = ?");
    sqlite3_bind_text(st, 1, order_id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    int err = 0;
    if (rc == SQLITE_ROW)
        order_from_row(st, out);
    else if (rc == SQLITE_DONE)
        err = TD_ENOENT;
    else {
        td_error("orders: reading order %s: %s", order_id, sqlite3_errmsg(td_db_sqlite(db)));
        err = TD_EIO;
    }
    td_db_done(st);
    return err;
}

/* now_ms, or the newest order's createdAt when that is later. The lock
 * is held. */
static int64_t order_created_ms(td_db_t *db, int64_t now_ms)
{
    sqlite3_stmt *st = td_db_prepare(db, "SELECT created_at FROM orders ORDER BY seq DESC LIMIT 1");
    int64_t last = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        if (!t || td_time_parse(t, &last) != 0) last = 0;
    }
    td_db_done(st);
    return last > now_ms ? last : now_ms;
}

int orders_create(td_db_t *db, const td_config_t *cfg, const char *user_id, const char *product_id,
                  int64_t quantity, const td_trace_t *trace, order_t *out, char *errstr,
                  size_t errlen)
{
    if (!user_id || !td_uuid_valid(user_id))
        return td_errf(errstr, errlen, TD_EINVAL, "userId must be a UUID");
    if (!product_id || !td_uuid_valid(product_id))
        return td_errf(errstr, errlen, TD_EINVAL, "productId must be a UUID");
    if (quantity < 1 || quantity > ORDERS_QUANTITY_MAX)
        return td_errf(errstr, errlen, TD_EINVAL, "quantity must be between 1 and %d",
                       ORDERS_QUANTITY_MAX);

    order_t o;
    memset(&o, 0, sizeof o);
    td_uuid_v7(o.id); /* time-ordered: appended to every index keyed by it */
    snprintf(o.user_id, sizeof o.user_id, "%s", user_id);
    snprintf(o.product_id, sizeof o.product_id, "%s", product_id);
    o.quantity = quantity;
    o.status = ORDER_PENDING;
    o.total_cents = -1;

    td_event_t *ev = NULL;
    int err = td_db_begin(db);
    if (err) goto done;
    /* The time is taken under the lock that also orders the rows (seq),
     * and never before the newest order's: so createdAt never increases
     * down the newest-first list (SPEC section 2), even for orders placed
     * at the same instant or across a step back of the clock. */
    td_time_format(order_created_ms(db, td_now_ms()), o.created_at);
    memcpy(o.updated_at, o.created_at, sizeof o.updated_at);

    json_t *data =
        json_pack("{s:s, s:s, s:s, s:I, s:s}", "orderId", o.id, "userId", o.user_id, "productId",
                  o.product_id, "quantity", (json_int_t)o.quantity, "createdAt", o.created_at);
    ev = td_event_new("orders", TD_EV_NAME(TD_EV_ORDER_CREATED), o.id, data);
    td_event_set_correlation(ev, o.id);
    if (trace) td_event_set_trace_parent(ev, trace);

    sqlite3_stmt *st = td_db_prepare(
        db, "INSERT INTO orders (id, user_id, product_id, quantity, status, created_at, "
            "updated_at) VALUES (?, ?, ?, ?, 'PENDING', ?, ?)");
    sqlite3_bind_text(st, 1, o.id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, o.user_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, o.product_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, o.quantity);
    sqlite3_bind_text(st, 5, o.created_at, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, o.updated_at, -1, SQLITE_STATIC);
    err = td_db_run(db, st);
    if (!err) {
        o.seq = sqlite3_last_insert_rowid(td_db_sqlite(db));
        err = td_outbox_add(db, cfg, "orders", ev);
    }
    if (err) {
        td_db_rollback(db);
        goto done;
    }
    err = td_db_commit(db);
    if (!err) {
        td_log_event(TD_LOG_INFO, ev, "order %s placed: %" PRId64 " x %s", o.id, o.quantity,
                     o.product_id);
        if (out) *out = o;
    }
done:
    if (err) td_errf(errstr, errlen, err, "the order could not be stored");
    td_event_free(ev);
    return err;
}

int orders_get(td_db_t *db, const char *order_id, order_t *out)
{
    if (!order_id || !td_uuid_valid(order_id)) return TD_ENOENT;
    td_db_lock(db);
    int err = order_load(db, order_id, out);
    td_db_unlock(db);
    return err;
}

int orders_list(td_db_t *db, const char *user_id, int64_t before_seq, size_t limit, order_t **out,
                size_t *cnt, bool *more)
{
    *out = NULL;
    *cnt = 0;
    *more = false;
    if (before_seq <= 0) before_seq = INT64_MAX;
    order_t *list = td_calloc(limit + 1, sizeof *list);
    size_t n = 0;
    int err = 0;

    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, "SELECT " ORDER_COLUMNS " FROM orders WHERE user_id = ? "
                                         "AND seq < ? ORDER BY seq DESC LIMIT ?");
    sqlite3_bind_text(st, 1, user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, before_seq);
    /* One more than asked tells whether another page exists. */
    sqlite3_bind_int64(st, 3, (sqlite3_int64)limit + 1);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) order_from_row(st, &list[n++]);
    if (rc != SQLITE_DONE) {
        td_error("orders: listing orders: %s", sqlite3_errmsg(td_db_sqlite(db)));
        err = TD_EIO;
    }
    td_db_done(st);
    td_db_unlock(db);

    if (err) {
        free(list);
        return err;
    }
    if (n > limit) {
        n = limit;
        *more = true;
    }
    *out = list;
    *cnt = n;
    return 0;
}

int orders_apply(td_db_t *db, const td_config_t *cfg, const td_event_t *cause, const char *order_id,
                 order_input_t in, int64_t total_cents, const char *reason, bool *changed,
                 char *errstr, size_t errlen)
{
    if (changed) *changed = false;
    if (in == ORDER_IN_PAYMENT_PROCESSED) {
        if (total_cents < 0 || total_cents > TD_MONEY_MAX_CENTS)
            return td_errf(errstr, errlen, TD_EINVAL, "amount is out of range");
        reason = NULL;
    } else {
        if (!reason || !reason[0] || strlen(reason) > ORDERS_REASON_MAX)
            return td_errf(errstr, errlen, TD_EINVAL, "reason must be 1..%d bytes",
                           ORDERS_REASON_MAX);
        total_cents = -1;
    }

    order_t o;
    int err = order_load(db, order_id, &o);
    if (err == TD_ENOENT) return td_errf(errstr, errlen, TD_EINVAL, "unknown order %s", order_id);
    if (err) return td_errf(errstr, errlen, err, "reading order %s failed", order_id);

    order_status_t to;
    if (order_next(o.status, in, &to)) {
        td_log_event(TD_LOG_INFO, cause, "order %s is already %s: %s ignored", o.id,
                     order_status_name(o.status), cause ? cause->type : "event");
        return 0;
    }

    char now[TD_TIME_LEN + 1];
    td_time_format(td_now_ms(), now);
    sqlite3_stmt *st = td_db_prepare(db, "UPDATE orders SET status = ?, reason = ?, "
                                         "total_cents = ?, updated_at = ? WHERE id = ? "
                                         "AND status = ?");
    sqlite3_bind_text(st, 1, order_status_name(to), -1, SQLITE_STATIC);
    if (reason)
        sqlite3_bind_text(st, 2, reason, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 2);
    if (total_cents >= 0)
        sqlite3_bind_int64(st, 3, total_cents);
    else
        sqlite3_bind_null(st, 3);
    sqlite3_bind_text(st, 4, now, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, o.id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, order_status_name(o.status), -1, SQLITE_STATIC);
    err = td_db_run(db, st);
    if (err) return td_errf(errstr, errlen, err, "updating order %s failed", o.id);
    if (td_db_changes(db) != 1)
        return td_errf(errstr, errlen, TD_EIO, "order %s changed under us", o.id);

    json_t *data;
    const char *type;
    if (to == ORDER_APPROVED) {
        type = TD_EV_NAME(TD_EV_ORDER_APPROVED);
        data = json_pack("{s:s, s:s, s:s, s:I, s:o}", "orderId", o.id, "userId", o.user_id,
                         "productId", o.product_id, "quantity", (json_int_t)o.quantity, "total",
                         td_json_money(total_cents));
    } else {
        type = TD_EV_NAME(TD_EV_ORDER_REJECTED);
        data = json_pack("{s:s, s:s, s:s, s:I, s:s}", "orderId", o.id, "userId", o.user_id,
                         "productId", o.product_id, "quantity", (json_int_t)o.quantity, "reason",
                         reason);
    }
    td_event_t *ev = td_event_new("orders", type, o.id, data);
    if (cause) td_event_set_cause(ev, cause);
    td_event_set_correlation(ev, o.id);
    err = td_outbox_add(db, cfg, "orders", ev);
    if (err) {
        td_event_free(ev);
        return td_errf(errstr, errlen, err, "queueing %s failed", type);
    }
    td_log_event(TD_LOG_INFO, ev, "order %s %s -> %s%s%s", o.id, order_status_name(o.status),
                 order_status_name(to), reason ? ": " : "", reason ? reason : "");
    td_event_free(ev);
    if (changed) *changed = true;
    return 0;
}
