/* The products service's tables, shared by its catalog side (products.c)
 * and its reservation side (reserve.c). Money is integer cents. */
#ifndef TIDINGS_PRODUCTS_SCHEMA_H
#define TIDINGS_PRODUCTS_SCHEMA_H

/* Version 1: the catalogue. A deleted product keeps its row (deleted = 1)
 * so late events about it still find its title; it is gone from the API. */
#define PRODUCTS_SCHEMA_V1                                     \
    "CREATE TABLE products ("                                  \
    "  id TEXT PRIMARY KEY,"                                   \
    "  title TEXT NOT NULL,"                                   \
    "  price_cents INTEGER NOT NULL CHECK (price_cents >= 0)," \
    "  quantity INTEGER NOT NULL CHECK (quantity >= 0),"       \
    "  created_at TEXT NOT NULL,"                              \
    "  updated_at TEXT NOT NULL,"                              \
    "  deleted INTEGER NOT NULL DEFAULT 0,"                    \
    "  seq INTEGER NOT NULL UNIQUE"                            \
    ");"

/* Version 2: stock reservations for orders (one per order), so a
 * PaymentFailedEvent returns exactly what was reserved, once. status is
 * RESERVED, FAILED (nothing reserved) or CANCELLED (stock returned). */
#define PRODUCTS_SCHEMA_V2                 \
    "CREATE TABLE reservations ("          \
    "  order_id TEXT PRIMARY KEY,"         \
    "  product_id TEXT NOT NULL,"          \
    "  user_id TEXT NOT NULL,"             \
    "  quantity INTEGER NOT NULL,"         \
    "  unit_price_cents INTEGER NOT NULL," \
    "  status TEXT NOT NULL,"              \
    "  created_at TEXT NOT NULL,"          \
    "  updated_at TEXT NOT NULL"           \
    ");"

#endif
