/* The products service's catalogue domain: validation of product input,
 * the opaque paging cursor, and the catalogue's state changes on the
 * service's database, each in one transaction with its outbox event
 * (ProductCreatedEvent, ProductUpdatedEvent, ProductDeletedEvent on topic
 * "products", key productId). The reservation side of the same database
 * lives in reserve.c. No HTTP and no Kafka here: routes.c parses requests
 * and calls these, unit tests call them on a temporary database. Any
 * thread (the td_db_t serialises access). Money is integer cents. */
#ifndef TIDINGS_PRODUCTS_H
#define TIDINGS_PRODUCTS_H

#include <jansson.h>

#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/trace.h"
#include "tidings/uuid.h"

#define PRODUCTS_TITLE_MAX       200          /* characters */
#define PRODUCTS_PRICE_MAX_CENTS 1000000000LL /* 10,000,000.00 */
#define PRODUCTS_QUANTITY_MAX    1000000000LL
#define PRODUCTS_LIMIT_DEFAULT   50
#define PRODUCTS_LIMIT_MAX       500
#define PRODUCTS_CURSOR_MAX      64 /* bytes of an encoded cursor, with the NUL */

/* The schema: products/schema.h versions 1 (catalogue) and 2
 * (reservations), for td_service_db. */
extern const td_migration_t products_migrations[];
extern const size_t products_migration_cnt;

/* A product as the API shows it. title is owned: products_clear frees it. */
typedef struct products_product {
    char id[TD_UUID_LEN + 1];
    char *title;
    int64_t price_cents;
    int64_t quantity;
    char created_at[TD_TIME_LEN + 1];
    char updated_at[TD_TIME_LEN + 1];
    int64_t seq; /* creation order, for paging */
} products_product_t;

void products_clear(products_product_t *p);
/* {productId, title, price, quantity, createdAt} (new reference). */
json_t *products_to_json(const products_product_t *p);

/* What a request asks for: the fields present are flagged. title is
 * borrowed from the JSON it was read from. */
typedef struct products_input {
    bool has_title, has_price, has_quantity;
    const char *title;
    int64_t price_cents;
    int64_t quantity;
} products_input_t;

/* Where a state change came from: the HTTP request's trace (NULL = a new
 * trace) and request id (the events' correlation id; NULL = productId). */
typedef struct products_origin {
    const td_trace_t *trace;
    const char *request_id;
} products_origin_t;

/* ---- validation (pure) ------------------------------------------------- */

/* 1..PRODUCTS_TITLE_MAX characters, not only whitespace, no control
 * characters. Kept as given (not trimmed). */
int products_title_check(const char *title, char *errstr, size_t errlen);
/* A JSON number >= 0 with at most 2 decimals, at most 10,000,000.00. */
int products_price_parse(const json_t *v, int64_t *cents, char *errstr, size_t errlen);
/* body's "quantity": a JSON integer 0..PRODUCTS_QUANTITY_MAX. */
int products_quantity_parse(const json_t *body, int64_t *quantity, char *errstr, size_t errlen);
/* A POST body: exactly title, price, quantity, all required. */
int products_parse_create(const json_t *body, products_input_t *in, char *errstr, size_t errlen);
/* A PATCH body: any of title, price, quantity, at least one. */
int products_parse_patch(const json_t *body, products_input_t *in, char *errstr, size_t errlen);

/* ?limit=: NULL gives the default; else a decimal 1..PRODUCTS_LIMIT_MAX. */
int products_limit_parse(const char *s, int *limit, char *errstr, size_t errlen);
/* The opaque cursor of a page that ended at seq, into out
 * (PRODUCTS_CURSOR_MAX bytes). */
void products_cursor_encode(int64_t seq, char *out);
/* ?after=: NULL gives 0 (from the start); else a cursor made by
 * products_cursor_encode, or TD_EINVAL. */
int products_cursor_decode(const char *s, int64_t *seq, char *errstr, size_t errlen);

/* ---- state ------------------------------------------------------------- */

/* Creates a product from a checked input (all fields present) and its
 * ProductCreatedEvent in one transaction. out is filled. */
int products_create(td_db_t *db, const td_config_t *cfg, const products_input_t *in,
                    const products_origin_t *origin, int64_t now_ms, products_product_t *out);
/* A product that exists and is not deleted: 0, TD_ENOENT (also for a
 * malformed id), TD_EIO. */
int products_get(td_db_t *db, const char *id, products_product_t *out);
/* Up to limit products with seq > after_seq in creation order; *cnt of
 * them in a new array (free each with products_clear, then the array);
 * *more tells whether any follow. */
int products_list(td_db_t *db, int64_t after_seq, int limit, products_product_t **out, size_t *cnt,
                  bool *more);
/* Applies the fields present in a checked patch and adds
 * ProductUpdatedEvent (with the previous price and quantity) in one
 * transaction; the event is emitted on every successful update. TD_ENOENT
 * for an unknown or deleted product. out gets the product after. */
int products_update(td_db_t *db, const td_config_t *cfg, const char *id,
                    const products_input_t *patch, const products_origin_t *origin, int64_t now_ms,
                    products_product_t *out);
/* Marks the product deleted and adds ProductDeletedEvent. TD_ENOENT for
 * an unknown or already deleted product. */
int products_delete(td_db_t *db, const td_config_t *cfg, const char *id,
                    const products_origin_t *origin, int64_t now_ms);

#endif
