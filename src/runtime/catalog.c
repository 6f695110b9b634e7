/* The event catalogue (tidings/catalog.h): the topics and event types of
 * SPEC section 3 as data. The field bounds are the producers': names 100
 * and titles 200 characters (users, products), emails 254, a login's
 * User-Agent 512 and ip 64, an order's quantity 1..1,000,000 (orders),
 * stock 0..1,000,000,000 (products); whatever a producer writes, every
 * consumer takes. Reasons are the enums the saga produces. */
#include "tidings/catalog.h"

#include <assert.h>
#include <string.h>

#include "tidings/envelope.h"
#include "tidings/json.h"

#define F_UUID(n, d)                               \
    {                                              \
        .name = n, .kind = TD_FIELD_UUID, .doc = d \
    }
#define F_STR(n, mx, d)                                                \
    {                                                                  \
        .name = n, .kind = TD_FIELD_STR, .min = 1, .max = mx, .doc = d \
    }
#define F_OPT_STR(n, mx, d)                                                              \
    {                                                                                    \
        .name = n, .kind = TD_FIELD_STR, .optional = true, .min = 1, .max = mx, .doc = d \
    }
#define F_INT(n, lo, hi, d)                                             \
    {                                                                   \
        .name = n, .kind = TD_FIELD_INT, .min = lo, .max = hi, .doc = d \
    }
#define F_MONEY(n, d)                               \
    {                                               \
        .name = n, .kind = TD_FIELD_MONEY, .doc = d \
    }
#define F_TIME(n, d)                               \
    {                                              \
        .name = n, .kind = TD_FIELD_TIME, .doc = d \
    }
#define F_ENUM(n, v, d)                                         \
    {                                                           \
        .name = n, .kind = TD_FIELD_ENUM, .values = v, .doc = d \
    }
#define F_END        \
    {                \
        .name = NULL \
    }
#define F_ORDER_QTY   F_INT("quantity", 1, 1000000, "items ordered")
#define F_STOCK(n, d) F_INT(n, 0, 1000000000, d)

static const char *const reservation_reasons[] = {"out_of_stock", "unknown_product", NULL};
static const char *const payment_reasons[] = {"limit_exceeded", NULL};
static const char *const rejection_reasons[] = {"out_of_stock", "unknown_product", "limit_exceeded",
                                                NULL};

static const td_field_spec_t user_registered[] = {
    F_UUID("userId", "the new user"), F_STR("email", 254, "the account's address"),
    F_STR("name", 100, "the name the user gave"),
    F_TIME("registeredAt", "when the account was made"), F_END};
static const td_field_spec_t user_logged_in[] = {
    F_UUID("userId", "who signed in"),
    F_STR("email", 254, "the account's address"),
    F_TIME("loggedInAt", "when"),
    F_OPT_STR("userAgent", 512, "the client's User-Agent header"),
    F_OPT_STR("ip", 64, "the client's address"),
    F_END};
static const td_field_spec_t product_created[] = {
    F_UUID("productId", "the new product"), F_STR("title", 200, "its name in the shop"),
    F_MONEY("price", "its price"), F_STOCK("quantity", "items in stock"), F_END};
static const td_field_spec_t product_updated[] = {F_UUID("productId", "the product"),
                                                  F_STR("title", 200, "its name after the change"),
                                                  F_MONEY("price", "its price after the change"),
                                                  F_STOCK("quantity", "stock after the change"),
                                                  F_MONEY("previousPrice", "its price before"),
                                                  F_STOCK("previousQuantity", "stock before"),
                                                  F_END};
static const td_field_spec_t product_deleted[] = {
    F_UUID("productId", "the product"), F_STR("title", 200, "its last name in the shop"), F_END};
static const td_field_spec_t order_created[] = {
    F_UUID("orderId", "the new order"),        F_UUID("userId", "the buyer"),
    F_UUID("productId", "what is bought"),     F_ORDER_QTY,
    F_TIME("createdAt", "when it was placed"), F_END};
static const td_field_spec_t product_reserved[] = {
    F_UUID("orderId", "the order"),
    F_UUID("userId", "the buyer"),
    F_UUID("productId", "the product"),
    F_ORDER_QTY,
    F_MONEY("unitPrice", "the price of one item at reservation"),
    F_END};
static const td_field_spec_t reservation_failed[] = {
    F_UUID("orderId", "the order"),
    F_UUID("userId", "the buyer"),
    F_UUID("productId", "the product"),
    F_ORDER_QTY,
    F_ENUM("reason", reservation_reasons, "why nothing was reserved"),
    F_END};
static const td_field_spec_t reservation_cancelled[] = {
    F_UUID("orderId", "the order"), F_UUID("userId", "the buyer"),
    F_UUID("productId", "the product"), F_ORDER_QTY, F_END};
static const td_field_spec_t payment_processed[] = {
    F_UUID("paymentId", "the payment"), F_UUID("orderId", "the order paid"),
    F_UUID("userId", "the buyer"), F_MONEY("amount", "quantity x unit price"), F_END};
static const td_field_spec_t payment_failed[] = {
    F_UUID("orderId", "the order"), F_UUID("userId", "the buyer"),
    F_MONEY("amount", "what would have been charged"),
    F_ENUM("reason", payment_reasons, "why it was declined"), F_END};
static const td_field_spec_t order_approved[] = {
    F_UUID("orderId", "the order"),       F_UUID("userId", "the buyer"),
    F_UUID("productId", "the product"),   F_ORDER_QTY,
    F_MONEY("total", "what was charged"), F_END};
static const td_field_spec_t order_rejected[] = {
    F_UUID("orderId", "the order"),
    F_UUID("userId", "the buyer"),
    F_UUID("productId", "the product"),
    F_ORDER_QTY,
    F_ENUM("reason", rejection_reasons, "why it was rejected"),
    F_END};
/* The notification object of SPEC section 2. */
static const td_field_spec_t notification_created[] = {
    F_UUID("id", "the notification"),
    F_INT("seq", 1, INT64_MAX, "per user, from 1 without gaps"),
    F_UUID("userId", "whose inbox it is in"),
    F_STR("type", 100, "the event type that caused it"),
    F_STR("title", 400, "one line for people"),
    F_STR("body", 4000, "the sentence"),
    {.name = "data", .kind = TD_FIELD_OBJECT, .doc = "the ids it is about (orderId, productId)"},
    F_TIME("createdAt", "when it was made"),
    {.name = "readAt", .kind = TD_FIELD_TIME, .nullable = true, .doc = "when it was read, or null"},
    {.name = "thread",
     .kind = TD_FIELD_STR,
     .optional = true,
     .min = 1,
     .max = 100,
     .doc = "what it is about: order:<id>, product:<id> or account"},
    {.name = "replaces",
     .kind = TD_FIELD_UUID,
     .optional = true,
     .nullable = true,
     .doc = "the earlier notification of the thread it supersedes, or null"},
    F_END};

/* Who consumes each topic (as the services' consumer declarations say;
 * the web service and the CLI read every topic without a group). */
static const char *const users_readers[] = {"notifications", NULL};
static const char *const products_readers[] = {"notifications", NULL};
static const char *const reservations_readers[] = {"orders", "payments", NULL};
static const char *const orders_readers[] = {"products", "notifications", NULL};
static const char *const payments_readers[] = {"orders", "products", NULL};
static const char *const notifications_readers[] = {"notifications", NULL};

const td_topic_def_t td_topics[] = {
    {"users", "users", "userId", "accounts: sign-ups and sign-ins", users_readers},
    {"products", "products", "productId", "the catalogue: products created, changed, deleted",
     products_readers},
    {"reservations", "products", "orderId", "stock reserved, refused or returned for an order",
     reservations_readers},
    {"orders", "orders", "orderId", "orders placed and their outcome", orders_readers},
    {"payments", "payments", "orderId", "payments taken or declined for an order",
     payments_readers},
    {"notifications", "notifications", "userId",
     "notifications stored in a user's inbox (read back by the other instances' streams)",
     notifications_readers},
    {NULL, NULL, NULL, NULL, NULL},
};

static const td_event_def_t events[TD_EV__COUNT] = {
    {TD_EV_USER_REGISTERED, "UserRegisteredEvent", "users", "users", "userId", user_registered,
     "A user signed up (POST /users)."},
    {TD_EV_USER_LOGGED_IN, "UserLoggedInEvent", "users", "users", "userId", user_logged_in,
     "A successful POST /login."},
    {TD_EV_PRODUCT_CREATED, "ProductCreatedEvent", "products", "products", "productId",
     product_created, "An admin created a product (POST /products)."},
    {TD_EV_PRODUCT_UPDATED, "ProductUpdatedEvent", "products", "products", "productId",
     product_updated, "A product's title, price or stock changed (PATCH, or the saga's stock)."},
    {TD_EV_PRODUCT_DELETED, "ProductDeletedEvent", "products", "products", "productId",
     product_deleted, "An admin removed a product (DELETE /products/{id})."},
    {TD_EV_ORDER_CREATED, "OrderCreatedEvent", "orders", "orders", "orderId", order_created,
     "A shopper placed an order (POST /orders); the saga starts."},
    {TD_EV_PRODUCT_RESERVED, "ProductReservedEvent", "reservations", "products", "orderId",
     product_reserved, "The stock for an order was set aside."},
    {TD_EV_PRODUCT_RESERVATION_FAILED, "ProductReservationFailedEvent", "reservations", "products",
     "orderId", reservation_failed, "Nothing could be reserved for an order."},
    {TD_EV_PRODUCT_RESERVATION_CANCELLED, "ProductReservationCancelledEvent", "reservations",
     "products", "orderId", reservation_cancelled,
     "A reservation was given back after its payment failed."},
    {TD_EV_PAYMENT_PROCESSED, "PaymentProcessedEvent", "payments", "payments", "orderId",
     payment_processed, "The order's total was charged."},
    {TD_EV_PAYMENT_FAILED, "PaymentFailedEvent", "payments", "payments", "orderId", payment_failed,
     "The charge was declined (above TIDINGS_PAYMENT_LIMIT)."},
    {TD_EV_ORDER_APPROVED, "OrderApprovedEvent", "orders", "orders", "orderId", order_approved,
     "The saga ended well: stock reserved and paid."},
    {TD_EV_ORDER_REJECTED, "OrderRejectedEvent", "orders", "orders", "orderId", order_rejected,
     "The saga ended without a sale."},
    {TD_EV_NOTIFICATION_CREATED, "NotificationCreatedEvent", "notifications", "notifications",
     "userId", notification_created, "A notification was stored in a user's inbox."},
};

const td_event_def_t *td_catalog(td_ev_t ev)
{
    assert((unsigned)ev < TD_EV__COUNT && events[ev].ev == ev);
    return &events[ev];
}

const td_event_def_t *td_catalog_find(const char *type)
{
    if (!type) return NULL;
    for (size_t i = 0; i < TD_EV__COUNT; i++)
        if (!strcmp(events[i].type, type)) return &events[i];
    return NULL;
}

const char *td_topic_of(const char *type)
{
    const td_event_def_t *def = td_catalog_find(type);
    return def ? def->topic : NULL;
}

const td_field_spec_t *td_event_fields(const char *type)
{
    const td_event_def_t *def = td_catalog_find(type);
    return def ? def->fields : NULL;
}

const td_topic_def_t *td_topic_find(const char *name)
{
    for (const td_topic_def_t *t = td_topics; name && t->name; t++)
        if (!strcmp(t->name, name)) return t;
    return NULL;
}

int td_data_check(const json_t *data, const td_field_spec_t *spec, char *errstr, size_t errlen)
{
    if (!json_is_object(data))
        return td_errf(errstr, errlen, TD_EINVAL, "event data must be a JSON object");
    for (const td_field_spec_t *f = spec; f && f->name; f++) {
        const json_t *jv = json_object_get(data, f->name);
        const char *s;
        int64_t v, ms;
        int rc = 0;
        if (f->optional && !jv) continue;
        if (json_is_null(jv)) {
            if (f->nullable) continue;
            if (f->optional)
                return td_errf(errstr, errlen, TD_EINVAL, "field '%s' must not be null", f->name);
        }
        switch (f->kind) {
        case TD_FIELD_STR:
            if ((rc = td_data_str(data, f->name, &s, errstr, errlen)) != 0) return rc;
            v = (int64_t)td_utf8_len(s);
            if (v < f->min)
                return f->min == 1
                           ? td_errf(errstr, errlen, TD_EINVAL, "field '%s' is empty", f->name)
                           : td_errf(errstr, errlen, TD_EINVAL,
                                     "field '%s' is shorter than %lld characters", f->name,
                                     (long long)f->min);
            if (v > f->max)
                return td_errf(errstr, errlen, TD_EINVAL,
                               "field '%s' is longer than %lld characters", f->name,
                               (long long)f->max);
            break;
        case TD_FIELD_UUID:
            rc = td_data_uuid(data, f->name, &s, errstr, errlen);
            break;
        case TD_FIELD_INT:
            if ((rc = td_data_int(data, f->name, &v, errstr, errlen)) != 0) return rc;
            if (v < f->min || v > f->max)
                return td_errf(errstr, errlen, TD_EINVAL, "field '%s' must be %lld to %lld",
                               f->name, (long long)f->min, (long long)f->max);
            break;
        case TD_FIELD_MONEY:
            rc = td_data_cents(data, f->name, &v, errstr, errlen);
            break;
        case TD_FIELD_TIME:
            if ((rc = td_data_str(data, f->name, &s, errstr, errlen)) != 0) return rc;
            if (td_time_parse(s, &ms) != 0)
                return td_errf(errstr, errlen, TD_EINVAL, "field '%s' must be an RFC 3339 time",
                               f->name);
            break;
        case TD_FIELD_ENUM: {
            if ((rc = td_data_str(data, f->name, &s, errstr, errlen)) != 0) return rc;
            bool known = false;
            for (const char *const *e = f->values; e && *e && !known; e++) known = !strcmp(*e, s);
            if (!known) {
                char list[256] = "";
                size_t n = 0;
                for (const char *const *e = f->values; e && *e; e++) {
                    int w = snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "", *e);
                    if (w < 0 || (size_t)w >= sizeof(list) - n) break;
                    n += (size_t)w;
                }
                return td_errf(errstr, errlen, TD_EINVAL, "field '%s' must be one of %s", f->name,
                               list);
            }
            break;
        }
        case TD_FIELD_OBJECT:
            if (!jv) return td_errf(errstr, errlen, TD_EINVAL, "field '%s' is missing", f->name);
            if (!json_is_object(jv))
                return td_errf(errstr, errlen, TD_EINVAL, "field '%s' must be an object", f->name);
            break;
        }
        if (rc) return rc;
    }
    return 0;
}
