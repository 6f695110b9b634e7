/* The catalogue: validation of product input, the paging cursor, and the
 * products table with its events. A product is never removed: DELETE marks
 * it deleted so the reservation side and late events still find its title,
 * and the API stops showing it. seq numbers products in creation order,
 * which gives a paging order that stays stable while products are added
 * and deleted. Each change and its outbox event commit together. */
#include "products/products.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "products/schema.h"
#include "tidings/catalog.h"
#include "tidings/auth.h"
#include "tidings/bus.h"
#include "tidings/envelope.h"
#include "tidings/json.h"
#include "tidings/log.h"

const td_migration_t products_migrations[] = {
    {1, PRODUCTS_SCHEMA_V1},
    {2, PRODUCTS_SCHEMA_V2},
};
const size_t products_migration_cnt = TD_ARRAY_SIZE(products_migrations);

void products_clear(products_product_t *p)
{
    if (!p) return;
    free(p->title);
    memset(p, 0, sizeof(*p));
}

json_t *products_to_json(const products_product_t *p)
{
    return json_pack("{s:s, s:s, s:o, s:I, s:s}", "productId", p->id, "title", p->title, "price",
                     td_json_money(p->price_cents), "quantity", (json_int_t)p->quantity,
                     "createdAt", p->created_at);
}

/* ---- validation -------------------------------------------------------- */

int products_title_check(const char *title, char *errstr, size_t errlen)
{
    if (!title || !*title) return td_errf(errstr, errlen, TD_EINVAL, "title is required");
    if (td_utf8_len(title) > PRODUCTS_TITLE_MAX)
        return td_errf(errstr, errlen, TD_EINVAL, "title must be at most %d characters",
                       PRODUCTS_TITLE_MAX);
    bool blank = true;
    for (const unsigned char *p = (const unsigned char *)title; *p; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return td_errf(errstr, errlen, TD_EINVAL, "title must not contain control characters");
        if (*p != ' ') blank = false;
    }
    if (blank) return td_errf(errstr, errlen, TD_EINVAL, "title must not be blank");
    return 0;
}

int products_price_parse(const json_t *v, int64_t *cents, char *errstr, size_t errlen)
{
    /* The catalogue's own cap first, so any larger number gets its message
     * (not the runtime's wider one). */
    bool over = json_is_number(v) && json_number_value(v) > PRODUCTS_PRICE_MAX_CENTS / 100;
    int rc = over ? 0 : td_json_to_cents(v, "price", cents, errstr, errlen);
    if (rc) return rc;
    if (over || *cents > PRODUCTS_PRICE_MAX_CENTS)
        return td_errf(errstr, errlen, TD_EINVAL, "price must be at most %lld",
                       PRODUCTS_PRICE_MAX_CENTS / 100);
    return 0;
}

int products_quantity_parse(const json_t *body, int64_t *quantity, char *errstr, size_t errlen)
{
    return td_json_req_int(body, "quantity", 0, PRODUCTS_QUANTITY_MAX, quantity, errstr, errlen);
}

static const char *const product_fields[] = {"title", "price", "quantity", NULL};

/* Reads the fields present in body into in. */
static int parse_fields(const json_t *body, products_input_t *in, char *errstr, size_t errlen)
{
    memset(in, 0, sizeof(*in));
    if (!json_is_object(body))
        return td_errf(errstr, errlen, TD_EINVAL, "request body must be a JSON object");
    int rc = td_json_only_fields(body, product_fields, errstr, errlen);
    if (rc) return rc;
    const json_t *title = json_object_get(body, "title");
    if (json_is_null(title)) return td_errf(errstr, errlen, TD_EINVAL, "title must be a string");
    /* "" is there but empty: "required" would puzzle a PATCH that sent it. */
    if (json_is_string(title) && json_string_length(title) == 0)
        return td_errf(errstr, errlen, TD_EINVAL, "title must not be empty");
    if (title) {
        rc = td_json_req_string(body, "title", PRODUCTS_TITLE_MAX, &in->title, errstr, errlen);
        if (rc == 0) rc = products_title_check(in->title, errstr, errlen);
        if (rc) return rc;
        in->has_title = true;
    }
    const json_t *price = json_object_get(body, "price");
    if (price) {
        if ((rc = products_price_parse(price, &in->price_cents, errstr, errlen))) return rc;
        in->has_price = true;
    }
    const json_t *quantity = json_object_get(body, "quantity");
    if (json_is_null(quantity))
        return td_errf(errstr, errlen, TD_EINVAL, "quantity must be an integer");
    if (quantity) {
        if ((rc = products_quantity_parse(body, &in->quantity, errstr, errlen))) return rc;
        in->has_quantity = true;
    }
    return 0;
}

int products_parse_create(const json_t *body, products_input_t *in, char *errstr, size_t errlen)
{
    int rc = parse_fields(body, in, errstr, errlen);
    if (rc) return rc;
    if (!in->has_title) return td_errf(errstr, errlen, TD_EINVAL, "title is required");
    if (!in->has_price) return td_errf(errstr, errlen, TD_EINVAL, "price is required");
    if (!in->has_quantity) return td_errf(errstr, errlen, TD_EINVAL, "quantity is required");
    return 0;
}

int products_parse_patch(const json_t *body, products_input_t *in, char *errstr, size_t errlen)
{
    int rc = parse_fields(body, in, errstr, errlen);
    if (rc) return rc;
    if (!in->has_title && !in->has_price && !in->has_quantity)
        return td_errf(errstr, errlen, TD_EINVAL,
                       "at least one of title, price, quantity is required");
    return 0;
}

/* A decimal made of digits only (no sign, no spaces), at most max; false
 * on anything else, including overflow. */
static bool parse_decimal(const char *s, int64_t max, int64_t *out)
{
    if (!s || !*s) return false;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return false;
        if (v > (max - (*p - '0')) / 10) return false;
        v = v * 10 + (*p - '0');
    }
    *out = v;
    return true;
}

int products_limit_parse(const char *s, int *limit, char *errstr, size_t errlen)
{
    int64_t v;
    if (!s) {
        *limit = PRODUCTS_LIMIT_DEFAULT;
        return 0;
    }
    if (td_parse_positive(s, PRODUCTS_LIMIT_MAX, &v) != 0)
        return td_errf(errstr, errlen, TD_EINVAL, "limit must be an integer from 1 to %d",
                       PRODUCTS_LIMIT_MAX);
    *limit = (int)v;
    return 0;
}

/* The cursor is base64url("p1:<seq>"): opaque to clients, versioned so
 * the paging key can change without breaking old links silently. */
void products_cursor_encode(int64_t seq, char *out)
{
    char plain[32];
    int n = snprintf(plain, sizeof(plain), "p1:%lld", (long long)seq);
    char *enc = td_b64url_encode(plain, (size_t)n);
    snprintf(out, PRODUCTS_CURSOR_MAX, "%s", enc);
    free(enc);
}

int products_cursor_decode(const char *s, int64_t *seq, char *errstr, size_t errlen)
{
    *seq = 0;
    if (!s) return 0;
    size_t len = 0;
    unsigned char *raw = strlen(s) < PRODUCTS_CURSOR_MAX ? td_b64url_decode(s, &len) : NULL;
    char plain[32];
    bool ok = raw && len > 3 && len < sizeof(plain) && !memcmp(raw, "p1:", 3);
    if (ok) {
        memcpy(plain, raw + 3, len - 3);
        plain[len - 3] = '\0';
        ok = parse_decimal(plain, INT64_MAX, seq);
    }
    /* Only the exact text this service printed is a cursor. */
    if (ok) {
        char again[PRODUCTS_CURSOR_MAX];
        products_cursor_encode(*seq, again);
        ok = !strcmp(again, s);
    }
    free(raw);
    if (!ok) {
        *seq = 0;
        return td_errf(errstr, errlen, TD_EINVAL, "after is not a valid cursor");
    }
    return 0;
}

/* ---- state ------------------------------------------------------------- */

#define PRODUCT_COLS "id, title, price_cents, quantity, created_at, updated_at, seq"

static void copy_col(sqlite3_stmt *st, int col, char *out, size_t len)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    snprintf(out, len, "%s", s ? (const char *)s : "");
}

static void row_to_product(sqlite3_stmt *st, products_product_t *p)
{
    memset(p, 0, sizeof(*p));
    copy_col(st, 0, p->id, sizeof(p->id));
    const unsigned char *t = sqlite3_column_text(st, 1);
    p->title = td_strdup(t ? (const char *)t : "");
    p->price_cents = sqlite3_column_int64(st, 2);
    p->quantity = sqlite3_column_int64(st, 3);
    copy_col(st, 4, p->created_at, sizeof(p->created_at));
    copy_col(st, 5, p->updated_at, sizeof(p->updated_at));
    p->seq = sqlite3_column_int64(st, 6);
}

/* The live product id; the caller holds the lock. */
static int get_locked(td_db_t *db, const char *id, products_product_t *out)
{
    sqlite3_stmt *st =
        td_db_prepare(db, "SELECT " PRODUCT_COLS " FROM products WHERE id = ? AND deleted = 0");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st), ret = TD_ENOENT;
    if (rc == SQLITE_ROW) {
        row_to_product(st, out);
        ret = 0;
    } else if (rc != SQLITE_DONE) {
        td_error("products: lookup failed: %s", sqlite3_errmsg(td_db_sqlite(db)));
        ret = TD_EIO;
    }
    td_db_done(st);
    return ret;
}

static int emit(td_db_t *db, const td_config_t *cfg, const char *type, const char *product_id,
                json_t *data, const products_origin_t *origin)
{
    td_event_t *ev = td_event_new("products", type, product_id, data);
    if (origin && origin->trace) td_event_set_trace_parent(ev, origin->trace);
    if (origin && origin->request_id && *origin->request_id)
        td_event_set_correlation(ev, origin->request_id);
    int rc = td_outbox_add(db, cfg, "products", ev);
    td_event_free(ev);
    return rc;
}

int products_create(td_db_t *db, const td_config_t *cfg, const products_input_t *in,
                    const products_origin_t *origin, int64_t now_ms, products_product_t *out)
{
    products_product_t p = {0};
    td_uuid_new(p.id);
    p.title = td_strdup(in->title);
    p.price_cents = in->price_cents;
    p.quantity = in->quantity;
    td_time_format(now_ms, p.created_at);
    memcpy(p.updated_at, p.created_at, sizeof(p.updated_at));

    int rc = td_db_begin(db);
    if (rc) goto out;
    sqlite3_stmt *st = td_db_prepare(db, "SELECT COALESCE(MAX(seq), 0) + 1 FROM products");
    p.seq = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    td_db_done(st);
    if (p.seq <= 0) {
        rc = TD_EIO;
        goto fail;
    }
    st = td_db_prepare(db, "INSERT INTO products (" PRODUCT_COLS ") VALUES (?, ?, ?, ?, ?, ?, ?)");
    sqlite3_bind_text(st, 1, p.id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, p.title, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 3, p.price_cents);
    sqlite3_bind_int64(st, 4, p.quantity);
    sqlite3_bind_text(st, 5, p.created_at, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, p.updated_at, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 7, p.seq);
    if ((rc = td_db_run(db, st))) goto fail;
    json_t *data = json_pack("{s:s, s:s, s:o, s:I}", "productId", p.id, "title", p.title, "price",
                             td_json_money(p.price_cents), "quantity", (json_int_t)p.quantity);
    if ((rc = emit(db, cfg, TD_EV_NAME(TD_EV_PRODUCT_CREATED), p.id, data, origin))) goto fail;
    rc = td_db_commit(db);
    goto out;
fail:
    td_db_rollback(db);
out:
    if (rc == 0)
        *out = p;
    else
        products_clear(&p);
    return rc;
}

int products_get(td_db_t *db, const char *id, products_product_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!td_uuid_valid(id)) return TD_ENOENT;
    td_db_lock(db);
    int rc = get_locked(db, id, out);
    td_db_unlock(db);
    return rc;
}

int products_list(td_db_t *db, int64_t after_seq, int limit, products_product_t **out, size_t *cnt,
                  bool *more)
{
    *out = NULL;
    *cnt = 0;
    *more = false;
    if (limit < 1) limit = 1;
    products_product_t *items = td_calloc((size_t)limit, sizeof(*items));
    size_t n = 0;
    int rc = 0;

    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, "SELECT " PRODUCT_COLS " FROM products "
                                         "WHERE deleted = 0 AND seq > ? ORDER BY seq LIMIT ?");
    sqlite3_bind_int64(st, 1, after_seq);
    sqlite3_bind_int(st, 2, limit + 1); /* one more tells whether a next page exists */
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == (size_t)limit) {
            *more = true;
            break;
        }
        row_to_product(st, &items[n++]);
    }
    if (step != SQLITE_ROW && step != SQLITE_DONE) {
        td_error("products: list failed: %s", sqlite3_errmsg(td_db_sqlite(db)));
        rc = TD_EIO;
    }
    td_db_done(st);
    td_db_unlock(db);

    if (rc) {
        for (size_t i = 0; i < n; i++) products_clear(&items[i]);
        free(items);
        *more = false;
        return rc;
    }
    *out = items;
    *cnt = n;
    return 0;
}

int products_update(td_db_t *db, const td_config_t *cfg, const char *id,
                    const products_input_t *patch, const products_origin_t *origin, int64_t now_ms,
                    products_product_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!td_uuid_valid(id)) return TD_ENOENT;
    products_product_t p = {0};
    int rc = td_db_begin(db);
    if (rc) return rc;
    if ((rc = get_locked(db, id, &p))) goto fail;

    int64_t prev_price = p.price_cents, prev_quantity = p.quantity;
    if (patch->has_title) {
        free(p.title);
        p.title = td_strdup(patch->title);
    }
    if (patch->has_price) p.price_cents = patch->price_cents;
    if (patch->has_quantity) p.quantity = patch->quantity;
    td_time_format(now_ms, p.updated_at);

    sqlite3_stmt *st = td_db_prepare(db, "UPDATE products SET title = ?, price_cents = ?, "
                                         "quantity = ?, updated_at = ? WHERE id = ?");
    sqlite3_bind_text(st, 1, p.title, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, p.price_cents);
    sqlite3_bind_int64(st, 3, p.quantity);
    sqlite3_bind_text(st, 4, p.updated_at, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, p.id, -1, SQLITE_TRANSIENT);
    if ((rc = td_db_run(db, st))) goto fail;

    json_t *data =
        json_pack("{s:s, s:s, s:o, s:I, s:o, s:I}", "productId", p.id, "title", p.title, "price",
                  td_json_money(p.price_cents), "quantity", (json_int_t)p.quantity, "previousPrice",
                  td_json_money(prev_price), "previousQuantity", (json_int_t)prev_quantity);
    if ((rc = emit(db, cfg, TD_EV_NAME(TD_EV_PRODUCT_UPDATED), p.id, data, origin))) goto fail;
    if ((rc = td_db_commit(db))) goto out;
    *out = p;
    return 0;
fail:
    td_db_rollback(db);
out:
    products_clear(&p);
    return rc;
}

int products_delete(td_db_t *db, const td_config_t *cfg, const char *id,
                    const products_origin_t *origin, int64_t now_ms)
{
    if (!td_uuid_valid(id)) return TD_ENOENT;
    products_product_t p = {0};
    int rc = td_db_begin(db);
    if (rc) return rc;
    if ((rc = get_locked(db, id, &p))) goto fail;

    char at[TD_TIME_LEN + 1];
    td_time_format(now_ms, at);
    sqlite3_stmt *st =
        td_db_prepare(db, "UPDATE products SET deleted = 1, updated_at = ? WHERE id = ?");
    sqlite3_bind_text(st, 1, at, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, p.id, -1, SQLITE_TRANSIENT);
    if ((rc = td_db_run(db, st))) goto fail;
    json_t *data = json_pack("{s:s, s:s}", "productId", p.id, "title", p.title);
    if ((rc = emit(db, cfg, TD_EV_NAME(TD_EV_PRODUCT_DELETED), p.id, data, origin))) goto fail;
    rc = td_db_commit(db);
    products_clear(&p);
    return rc;
fail:
    td_db_rollback(db);
    products_clear(&p);
    return rc;
}
