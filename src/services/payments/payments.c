/* The payments domain. A ProductReservedEvent asks for quantity x unit
 * price; the amount is computed in integer cents (no floating point touches
 * money) and approved when it is at most TIDINGS_PAYMENT_LIMIT. One payment
 * per order (order_id is unique), recorded in the same transaction as its
 * event, so a redelivered request neither charges twice nor announces
 * twice. */
#include "payments/payments.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tidings/catalog.h"
#include "tidings/bus.h"
#include "tidings/json.h"
#include "tidings/log.h"

const td_migration_t payments_migrations[] = {
    {1, "CREATE TABLE payments ("
        "  id TEXT PRIMARY KEY,"
        "  order_id TEXT NOT NULL UNIQUE,"
        "  user_id TEXT NOT NULL,"
        "  amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),"
        "  status TEXT NOT NULL CHECK (status IN ('PROCESSED','FAILED')),"
        "  reason TEXT,"
        "  created_at TEXT NOT NULL"
        ");"},
};
const size_t payments_migration_cnt = TD_ARRAY_SIZE(payments_migrations);

const char *payment_status_name(payment_status_t st)
{
    return st == PAYMENT_PROCESSED ? "PROCESSED" : "FAILED";
}

int payments_amount(int64_t quantity, int64_t unit_price_cents, int64_t *amount_cents)
{
    if (quantity < 1 || unit_price_cents < 0) return TD_EINVAL;
    int64_t amount;
    /* A total past what money can hold is declined anyway (every limit is
     * a money value); capping keeps the events' amount a valid number. */
    if (__builtin_mul_overflow(quantity, unit_price_cents, &amount) || amount > TD_MONEY_MAX_CENTS)
        amount = TD_MONEY_MAX_CENTS;
    *amount_cents = amount;
    return 0;
}

bool payments_approves(int64_t amount_cents, int64_t limit_cents)
{
    return amount_cents <= limit_cents;
}

static void copy_text(char *dst, size_t len, sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    snprintf(dst, len, "%s", s ? (const char *)s : "");
}

/* The lock must be held. */
static int payment_load(td_db_t *db, const char *order_id, payment_t *out)
{
    sqlite3_stmt *st = td_db_prepare(db, "SELECT id, order_id, user_id, amount_cents, status, "
                                         "created_at FROM payments WHERE order_id = ?");
    sqlite3_bind_text(st, 1, order_id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    int err = 0;
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof *out);
        copy_text(out->id, sizeof out->id, st, 0);
        copy_text(out->order_id, sizeof out->order_id, st, 1);
        copy_text(out->user_id, sizeof out->user_id, st, 2);
        out->amount_cents = sqlite3_column_int64(st, 3);
        const char *status = (const char *)sqlite3_column_text(st, 4);
        out->status = status && !strcmp(status, "PROCESSED") ? PAYMENT_PROCESSED : PAYMENT_FAILED;
        copy_text(out->created_at, sizeof out->created_at, st, 5);
    } else if (rc == SQLITE_DONE) {
        err = TD_ENOENT;
    } else {
        td_error("payments: reading the payment of %s: %s", order_id,
                 sqlite3_errmsg(td_db_sqlite(db)));
        err = TD_EIO;
    }
    td_db_done(st);
    return err;
}

int payments_charge(td_db_t *db, const td_config_t *cfg, const td_event_t *cause,
                    const payment_request_t *req, payment_t *out, bool *created, char *errstr,
                    size_t errlen)
{
    if (created) *created = false;
    if (!req->order_id || !td_uuid_valid(req->order_id))
        return td_errf(errstr, errlen, TD_EINVAL, "orderId must be a UUID");
    if (!req->user_id || !td_uuid_valid(req->user_id))
        return td_errf(errstr, errlen, TD_EINVAL, "userId must be a UUID");
    payment_t p;
    if (payments_amount(req->quantity, req->unit_price_cents, &p.amount_cents))
        return td_errf(errstr, errlen, TD_EINVAL,
                       "quantity must be >= 1 and unitPrice >= 0 (got %" PRId64 ", %" PRId64 ")",
                       req->quantity, req->unit_price_cents);

    int err = payment_load(db, req->order_id, &p);
    if (!err) {
        /* The inbox catches a redelivered event; this catches the same
         * reservation announced twice under different ids. */
        td_log_event(TD_LOG_WARN, cause, "order %s was already charged (%s): ignored",
                     req->order_id, payment_status_name(p.status));
        if (out) *out = p;
        return 0;
    }
    if (err != TD_ENOENT) return td_errf(errstr, errlen, err, "reading the payment failed");

    td_uuid_v7(p.id);
    snprintf(p.order_id, sizeof p.order_id, "%s", req->order_id);
    snprintf(p.user_id, sizeof p.user_id, "%s", req->user_id);
    p.status =
        payments_approves(p.amount_cents, cfg->payment_limit) ? PAYMENT_PROCESSED : PAYMENT_FAILED;
    const char *reason = p.status == PAYMENT_FAILED ? "limit_exceeded" : NULL;
    td_time_format(td_now_ms(), p.created_at);

    sqlite3_stmt *st = td_db_prepare(db, "INSERT INTO payments (id, order_id, user_id, "
                                         "amount_cents, status, reason, created_at) "
                                         "VALUES (?, ?, ?, ?, ?, ?, ?)");
    sqlite3_bind_text(st, 1, p.id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, p.order_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, p.user_id, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, p.amount_cents);
    sqlite3_bind_text(st, 5, payment_status_name(p.status), -1, SQLITE_STATIC);
    if (reason)
        sqlite3_bind_text(st, 6, reason, -1, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 6);
    sqlite3_bind_text(st, 7, p.created_at, -1, SQLITE_STATIC);
    err = td_db_run(db, st);
    if (err) return td_errf(errstr, errlen, err, "recording the payment failed");

    json_t *data;
    const char *type;
    if (p.status == PAYMENT_PROCESSED) {
        type = TD_EV_NAME(TD_EV_PAYMENT_PROCESSED);
        data = json_pack("{s:s, s:s, s:s, s:o}", "paymentId", p.id, "orderId", p.order_id, "userId",
                         p.user_id, "amount", td_json_money(p.amount_cents));
    } else {
        type = TD_EV_NAME(TD_EV_PAYMENT_FAILED);
        data = json_pack("{s:s, s:s, s:o, s:s}", "orderId", p.order_id, "userId", p.user_id,
                         "amount", td_json_money(p.amount_cents), "reason", reason);
    }
    td_event_t *ev = td_event_new("payments", type, p.order_id, data);
    if (cause) td_event_set_cause(ev, cause);
    td_event_set_correlation(ev, p.order_id);
    err = td_outbox_add(db, cfg, "payments", ev);
    if (err) {
        td_event_free(ev);
        return td_errf(errstr, errlen, err, "queueing %s failed", type);
    }
    char amount[24], limit[24];
    td_money_format(p.amount_cents, amount, sizeof amount);
    td_money_format(cfg->payment_limit, limit, sizeof limit);
    td_log_event(TD_LOG_INFO, ev, "order %s: payment of %s %s (limit %s)", p.order_id, amount,
                 p.status == PAYMENT_PROCESSED ? "processed" : "declined", limit);
    td_event_free(ev);
    if (out) *out = p;
    if (created) *created = true;
    return 0;
}

int payments_get(td_db_t *db, const char *order_id, payment_t *out)
{
    if (!order_id || !td_uuid_valid(order_id)) return TD_ENOENT;
    td_db_lock(db);
    int err = payment_load(db, order_id, out);
    td_db_unlock(db);
    return err;
}
