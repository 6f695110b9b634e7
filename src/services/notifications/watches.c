/* Product watches: a user's list of products to hear about (back in
 * stock, price drops), kept even for a product whose ProductCreatedEvent
 * has not arrived yet (see notifications.h). */
#include "notifications/notifications.h"
#include "tidings/json.h"

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
    *out = notif__page_answer(
        db, "watches",
        "SELECT w.id, w.product_id, w.created_at, p.title, p.price_cents, p.quantity"
        " FROM watches w LEFT JOIN products p ON p.id = w.product_id"
        " WHERE w.user_id = ?1 AND (?2 = 0 OR w.id < ?2) ORDER BY w.id DESC LIMIT ?3",
        user_id, before, limit, watch_json);
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
    return td_db_run_last_one(db, st);
}
