/* The payments domain: the charge of a reserved order (quantity x unit
 * price in integer cents, approved when at most the payment limit), the
 * payments table (one payment per order) and PaymentProcessedEvent /
 * PaymentFailedEvent through the outbox. No HTTP and no Kafka here. Any
 * thread (the database's mutex serialises access). */
#ifndef TIDINGS_PAYMENTS_H
#define TIDINGS_PAYMENTS_H

#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/envelope.h"

/* The payments database's schema, for td_service_db / td_db_open. */
extern const td_migration_t payments_migrations[];
extern const size_t payments_migration_cnt;

typedef enum payment_status {
    PAYMENT_PROCESSED,
    PAYMENT_FAILED,
} payment_status_t;

/* "PROCESSED" | "FAILED". */
const char *payment_status_name(payment_status_t st);

/* quantity x unit_price_cents into *amount_cents. TD_EINVAL for a
 * quantity < 1 or a negative price; a product beyond TD_MONEY_MAX_CENTS
 * (no limit can approve it) is capped there. */
int payments_amount(int64_t quantity, int64_t unit_price_cents, int64_t *amount_cents);
/* The decision: true when amount_cents is at most limit_cents. */
bool payments_approves(int64_t amount_cents, int64_t limit_cents);

typedef struct payment {
    char id[TD_UUID_LEN + 1];
    char order_id[TD_UUID_LEN + 1];
    char user_id[TD_UUID_LEN + 1];
    int64_t amount_cents;
    payment_status_t status;
    char created_at[TD_TIME_LEN + 1];
} payment_t;

/* What a ProductReservedEvent asks to charge. Strings are borrowed. */
typedef struct payment_request {
    const char *order_id;
    const char *user_id;
    int64_t quantity;
    int64_t unit_price_cents;
} payment_request_t;

/* Charges req against cfg->payment_limit inside the caller's (the
 * consumer's) transaction: records the payment and adds
 * PaymentProcessedEvent or PaymentFailedEvent (limit_exceeded) as a
 * reaction to cause (may be NULL in tests). An order already charged is
 * left alone (logged): 0 with *out the existing payment and *created
 * false. TD_EINVAL for a bad request; TD_EIO. out and created may be
 * NULL. */
int payments_charge(td_db_t *db, const td_config_t *cfg, const td_event_t *cause,
                    const payment_request_t *req, payment_t *out, bool *created, char *errstr,
                    size_t errlen);

/* The payment of order_id: 0, TD_ENOENT (also for a malformed id) or
 * TD_EIO. Takes the lock. */
int payments_get(td_db_t *db, const char *order_id, payment_t *out);

#endif
