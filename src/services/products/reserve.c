/* Stock reservations for the order saga. The stock check and the take are
 * one statement (UPDATE ... WHERE quantity >= ?), so no interleaving of
 * concurrent orders can drive stock below zero, and each order has one
 * reservation row whose status makes the release happen at most once:
 * stock is conserved however often the saga's events are delivered. */
#include "products/reserve.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "tidings/catalog.h"
#include "tidings/bus.h"
#include "tidings/json.h"
#include "tidings/log.h"

static void copy_text(char *dst, size_t len, sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    snprintf(dst, len, "%s", s ? (const char *)s : "");
}

/* The lock must be held. */
static int reservation_load(td_db_t *db, const char *order_id, reservation_t *out)
{
    sqlite3_stmt *st =
        td_db_prepare(db, "SELECT order_id, product_id, user_id, quantity, unit_price_cents, "
                          "status, created_at, updated_at FROM reservations WHERE order_id = ?");
    sqlite3_bind_text(st, 1, order_id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    int err = 0;
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof *out);
        copy_text(out->order_id, sizeof out->order_id, st, 0);
        copy_text(out->product_id, sizeof out->product_id, st, 1);
        copy_text(out->user_id, sizeof out->user_id, st, 2);
        out->quantity = sqlite3_column_int64(st, 3);
        out->unit_price_cents = sqlite3_column_int64(st, 4);
        copy_text(out->status, sizeof out->status, st, 5);
        copy_text(out->created_at, sizeof out->created_at, st, 6);
        copy_text(out->updated_at, sizeof out->updated_at, st, 7);
    } else if (rc == SQLITE_DONE) {
        err = TD_ENOENT;
    } else {
        td_error("products: reading the reservation of %s: %s", order_id,
                 sqlite3_errmsg(td_db_sqlite(db)));
        err = TD_EIO;
    }
    td_db_done(st);
    return err;
}

/* The product's price and whether it can be ordered: 0, TD_ENOENT for an
 * unknown or deleted product, TD_EIO. */
static int product_price(td_db_t *db, const char *product_id, int64_t *price_cents)
{
    sqlite3_stmt *st =
        td_db_prepare(db, "SELECT price_cents FROM products WHERE id = ? AND deleted = 0");
    sqlite3_bind_text(st, 1, product_id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    int err = 0;
    if (rc == SQLITE_ROW)
        *price_cents = sqlite3_column_int64(st, 0);
    else if (rc == SQLITE_DONE)
        err = TD_ENOENT;
    else {
        td_error("products: reading product %s: %s", product_id, sqlite3_errmsg(td_db_sqlite(db)));
        err = TD_EIO;
    }
    td_db_done(st);
    return err;
}

/* Adds an event of the reservations topic reacting to cause. */
static int emit(td_db_t *db, const td_config_t *cfg, const td_event_t *cause, const char *type,
                const char *order_id, json_t *data, char *errstr, size_t errlen)
{
    td_event_t *ev = td_event_new("products", type, order_id, data);
    if (cause) td_event_set_cause(ev, cause);
    td_event_set_correlation(ev, order_id);
    int err = td_outbox_add(db, cfg, "reservations", ev);
    if (err)
        td_errf(errstr, errlen, err, "queueing %s failed", type);
    else
        td_log_event(TD_LOG_INFO, ev, "order %s: %s", order_id, type);
    td_event_free(ev);
    return err;
}

int reserve_stock(td_db_t *db, const td_config_t *cfg, const td_event_t *cause,
                  const reserve_request_t *req, reserve_outcome_t *outcome, char *errstr,
                  size_t errlen)
{
    if (!req->order_id || !td_uuid_valid(req->order_id))
        return td_errf(errstr, errlen, TD_EINVAL, "orderId must be a UUID");
    if (!req->user_id || !td_uuid_valid(req->user_id))
        return td_errf(errstr, errlen, TD_EINVAL, "userId must be a UUID");
    if (!req->product_id || !req->product_id[0] || strlen(req->product_id) > TD_UUID_LEN)
        return td_errf(errstr, errlen, TD_EINVAL, "productId must be a UUID");
    if (req->quantity < 1) return td_errf(errstr, errlen, TD_EINVAL, "quantity must be >= 1");

    reservation_t r;
    int err = reservation_load(db, req->order_id, &r);
    if (!err) {
        /* The inbox catches a redelivered event; this catches the same
         * order announced twice under different ids. */
        td_log_event(TD_LOG_WARN, cause, "order %s already has a reservation (%s): ignored",
                     req->order_id, r.status);
        if (outcome) *outcome = RESERVE_DUPLICATE;
        return 0;
    }
    if (err != TD_ENOENT) return td_errf(errstr, errlen, err, "reading the reservation failed");

    int64_t price = 0;
    reserve_outcome_t res;
    err = product_price(db, req->product_id, &price);
    if (err == TD_ENOENT) {
        res = RESERVE_UNKNOWN_PRODUCT;
    } else if (err) {
        return td_errf(errstr, errlen, err, "reading the product failed");
    } else {
        /* The check and the take in one statement: never below zero. */
        sqlite3_stmt *st = td_db_prepare(db, "UPDATE products SET quantity = quantity - ? "
                                             "WHERE id = ? AND deleted = 0 AND quantity >= ?");
        sqlite3_bind_int64(st, 1, req->quantity);
        sqlite3_bind_text(st, 2, req->product_id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, 3, req->quantity);
        err = td_db_run(db, st);
        if (err) return td_errf(errstr, errlen, err, "taking stock failed");
        res = td_db_changes(db) == 1 ? RESERVE_RESERVED : RESERVE_OUT_OF_STOCK;
    }

    char now[TD_TIME_LEN + 1];
    td_time_format(td_now_ms(), now);
    sqlite3_stmt *st = td_db_prepare(db, "INSERT INTO reservations (order_id, product_id, "
                                         "user_id, quantity, unit_price_cents, status, "
                                         "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    sqlite3_bind_text(st, 1, req->order_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, req->product_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, req->user_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 4, req->quantity);
    sqlite3_bind_int64(st, 5, price);
    sqlite3_bind_text(st, 6, res == RESERVE_RESERVED ? "RESERVED" : "FAILED", -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, now, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 8, now, -1, SQLITE_STATIC);
    err = td_db_run(db, st);
    if (err) return td_errf(errstr, errlen, err, "recording the reservation failed");

    json_t *data =
        json_pack("{s:s, s:s, s:s, s:I}", "orderId", req->order_id, "userId", req->user_id,
                  "productId", req->product_id, "quantity", (json_int_t)req->quantity);
    const char *type;
    if (res == RESERVE_RESERVED) {
        type = TD_EV_NAME(TD_EV_PRODUCT_RESERVED);
        json_object_set_new(data, "unitPrice", td_json_money(price));
    } else {
        type = TD_EV_NAME(TD_EV_PRODUCT_RESERVATION_FAILED);
        json_object_set_new(
            data, "reason",
            json_string(res == RESERVE_OUT_OF_STOCK ? "out_of_stock" : "unknown_product"));
    }
    err = emit(db, cfg, cause, type, req->order_id, data, errstr, errlen);
    if (err) return err;
    if (outcome) *outcome = res;
    return 0;
}

int reserve_release(td_db_t *db, const td_config_t *cfg, const td_event_t *cause,
                    const char *order_id, bool *released, char *errstr, size_t errlen)
{
    if (released) *released = false;
    if (!order_id || !td_uuid_valid(order_id))
        return td_errf(errstr, errlen, TD_EINVAL, "orderId must be a UUID");

    reservation_t r;
    int err = reservation_load(db, order_id, &r);
    if (err == TD_ENOENT)
        return td_errf(errstr, errlen, TD_EINVAL, "order %s has no reservation", order_id);
    if (err) return td_errf(errstr, errlen, err, "reading the reservation failed");
    if (strcmp(r.status, "RESERVED")) {
        td_log_event(TD_LOG_INFO, cause, "order %s: reservation is %s, nothing to return", order_id,
                     r.status);
        return 0;
    }

    /* A product deleted since keeps its row, so the stock still goes back
     * where it came from. */
    sqlite3_stmt *st = td_db_prepare(db, "UPDATE products SET quantity = quantity + ? "
                                         "WHERE id = ?");
    sqlite3_bind_int64(st, 1, r.quantity);
    sqlite3_bind_text(st, 2, r.product_id, -1, SQLITE_STATIC);
    err = td_db_run(db, st);
    if (err) return td_errf(errstr, errlen, err, "returning stock failed");
    if (td_db_changes(db) != 1)
        td_log_event(TD_LOG_WARN, cause, "order %s: product %s is gone, stock not returned",
                     order_id, r.product_id);

    char now[TD_TIME_LEN + 1];
    td_time_format(td_now_ms(), now);
    st = td_db_prepare(db, "UPDATE reservations SET status = 'CANCELLED', updated_at = ? "
                           "WHERE order_id = ? AND status = 'RESERVED'");
    sqlite3_bind_text(st, 1, now, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r.order_id, -1, SQLITE_STATIC);
    err = td_db_run(db, st);
    if (err) return td_errf(errstr, errlen, err, "cancelling the reservation failed");

    json_t *data = json_pack("{s:s, s:s, s:s, s:I}", "orderId", r.order_id, "userId", r.user_id,
                             "productId", r.product_id, "quantity", (json_int_t)r.quantity);
    err = emit(db, cfg, cause, TD_EV_NAME(TD_EV_PRODUCT_RESERVATION_CANCELLED), r.order_id, data,
               errstr, errlen);
    if (err) return err;
    if (released) *released = true;
    return 0;
}

int reserve_get(td_db_t *db, const char *order_id, reservation_t *out)
{
    if (!order_id || !td_uuid_valid(order_id)) return TD_ENOENT;
    td_db_lock(db);
    int err = reservation_load(db, order_id, out);
    td_db_unlock(db);
    return err;
}
