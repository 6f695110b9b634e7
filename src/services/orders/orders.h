/* The orders domain: the orders table, the order's explicit state machine
 * (PENDING -> APPROVED | REJECTED, nothing else) and the state changes of the
 * saga with their events. No HTTP and no Kafka here: routes.c and events.c
 * call these functions, and the unit tests call them on an in-memory
 * database. All functions may be called from any thread (the database's
 * mutex serialises them). */
#ifndef TIDINGS_ORDERS_H
#define TIDINGS_ORDERS_H

#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/envelope.h"

/* The orders database's schema, for td_service_db / td_db_open. */
extern const td_migration_t orders_migrations[];
extern const size_t orders_migration_cnt;

#define ORDERS_QUANTITY_MAX 1000000
#define ORDERS_REASON_MAX   64

typedef enum order_status {
    ORDER_PENDING,
    ORDER_APPROVED,
    ORDER_REJECTED,
} order_status_t;

/* What the saga tells an order, i.e. the inputs of its state machine. */
typedef enum order_input {
    ORDER_IN_RESERVATION_FAILED, /* ProductReservationFailedEvent */
    ORDER_IN_PAYMENT_PROCESSED,  /* PaymentProcessedEvent */
    ORDER_IN_PAYMENT_FAILED,     /* PaymentFailedEvent */
} order_input_t;

/* "PENDING", "APPROVED", "REJECTED"; and back (-1 when unknown). */
const char *order_status_name(order_status_t st);
int order_status_from_name(const char *name);
/* True for APPROVED and REJECTED, which never change again. */
bool order_status_final(order_status_t st);
/* True when the state machine allows from -> to (only PENDING -> APPROVED
 * and PENDING -> REJECTED). */
bool order_transition_legal(order_status_t from, order_status_t to);
/* The state an order in `from` moves to on `in`: 0 with *to set, or
 * TD_EPERM when the state machine refuses (the order is already final). */
int order_next(order_status_t from, order_input_t in, order_status_t *to);

typedef struct order {
    char id[TD_UUID_LEN + 1];
    char user_id[TD_UUID_LEN + 1];
    char product_id[TD_UUID_LEN + 1];
    int64_t quantity;
    order_status_t status;
    char reason[ORDERS_REASON_MAX + 1]; /* "" unless REJECTED */
    int64_t total_cents;                /* -1 unless APPROVED */
    char created_at[TD_TIME_LEN + 1];
    char updated_at[TD_TIME_LEN + 1];
    int64_t seq; /* insertion order, the list cursor */
} order_t;

/* Places an order: validates product_id (a UUID) and quantity
 * (1..ORDERS_QUANTITY_MAX), inserts it PENDING and adds its
 * OrderCreatedEvent (correlation id = the order id, trace continuing
 * trace when not NULL) to the outbox, in one transaction of its own.
 * 0 with *out filled; TD_EINVAL with a message for people; TD_EIO. */
int orders_create(td_db_t *db, const td_config_t *cfg, const char *user_id, const char *product_id,
                  int64_t quantity, const td_trace_t *trace, order_t *out, char *errstr,
                  size_t errlen);

/* One order by id: 0, TD_ENOENT or TD_EIO. Takes the lock. */
int orders_get(td_db_t *db, const char *order_id, order_t *out);

/* user_id's orders, newest first, those older than cursor before_seq (0 =
 * from the newest), at most limit. *out (caller frees) gets *cnt orders
 * and *more whether older ones exist. 0 or TD_EIO. Takes the lock. */
int orders_list(td_db_t *db, const char *user_id, int64_t before_seq, size_t limit, order_t **out,
                size_t *cnt, bool *more);

/* Applies what the saga says about order_id, inside the caller's (the
 * consumer's) transaction: moves the order as order_next says, records
 * total_cents (PAYMENT_PROCESSED) or reason (the others), and adds
 * OrderApprovedEvent or OrderRejectedEvent as a reaction to cause. An
 * order already final is left alone (logged): 0 and *changed false.
 * TD_EINVAL for an unknown order or a bad reason/total; TD_EIO. changed
 * may be NULL. */
int orders_apply(td_db_t *db, const td_config_t *cfg, const td_event_t *cause, const char *order_id,
                 order_input_t in, int64_t total_cents, const char *reason, bool *changed,
                 char *errstr, size_t errlen);

#endif
