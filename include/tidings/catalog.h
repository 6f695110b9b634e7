/* The event catalogue of SPEC section 3: one table of every event type
 * tidings knows, with the topic it is written to, the service that writes
 * it, the data field that is its key, and the fields of its data (name,
 * JSON type, required or not, format and bounds, enum values). It is the
 * one place where a type's name is written in src/: the consumer's shape
 * and topic checks, td_data_check, the notifications rules, the web UI
 * (through /config.json), docs/events.md and `tidings asyncapi` read it.
 * Static data: any thread. */
#ifndef TIDINGS_CATALOG_H
#define TIDINGS_CATALOG_H

#include <jansson.h>

#include "tidings/common.h"

/* Every event type, in the order of SPEC section 3's data table. */
typedef enum td_ev {
    TD_EV_USER_REGISTERED,
    TD_EV_USER_LOGGED_IN,
    TD_EV_PRODUCT_CREATED,
    TD_EV_PRODUCT_UPDATED,
    TD_EV_PRODUCT_DELETED,
    TD_EV_ORDER_CREATED,
    TD_EV_PRODUCT_RESERVED,
    TD_EV_PRODUCT_RESERVATION_FAILED,
    TD_EV_PRODUCT_RESERVATION_CANCELLED,
    TD_EV_PAYMENT_PROCESSED,
    TD_EV_PAYMENT_FAILED,
    TD_EV_ORDER_APPROVED,
    TD_EV_ORDER_REJECTED,
    TD_EV_NOTIFICATION_CREATED,
    TD_EV__COUNT
} td_ev_t;

/* How td_data_check reads one field of event data. */
typedef enum td_field_kind {
    TD_FIELD_STR,    /* a string of min..max characters (code points), no NUL */
    TD_FIELD_UUID,   /* a lowercase UUID (td_uuid_valid) */
    TD_FIELD_INT,    /* a JSON integer in min..max */
    TD_FIELD_MONEY,  /* money as td_data_cents reads it: >= 0, at most 2 decimals */
    TD_FIELD_TIME,   /* an RFC 3339 timestamp (td_time_parse) */
    TD_FIELD_ENUM,   /* a string, one of values */
    TD_FIELD_OBJECT, /* a JSON object (its members are not checked) */
} td_field_kind_t;

/* One field of an event's data. Lists end with an entry whose name is
 * NULL. An optional field may be absent; when present it must be right
 * (null only where nullable), because a consumer that uses it trusts it. */
typedef struct td_field_spec {
    const char *name;
    td_field_kind_t kind;
    bool optional;
    int64_t min, max;          /* TD_FIELD_INT: the value; TD_FIELD_STR: the length */
    const char *const *values; /* TD_FIELD_ENUM: NULL-terminated */
    bool nullable;             /* JSON null is a value (readAt before it is read) */
    const char *doc;           /* one line for docs/events.md and AsyncAPI */
} td_field_spec_t;

/* A topic of SPEC section 3 (short name, without TIDINGS_TOPIC_PREFIX). */
typedef struct td_topic_def {
    const char *name;     /* "orders" */
    const char *producer; /* the one service that writes it */
    const char *key;      /* what its records are keyed by ("orderId") */
    const char *doc;
    const char *const *readers; /* the services that consume it, NULL-terminated */
} td_topic_def_t;

typedef struct td_event_def {
    td_ev_t ev;
    const char *type;     /* ce_type, "OrderCreatedEvent" */
    const char *topic;    /* short name of its one topic */
    const char *producer; /* the service that writes it */
    const char *key;      /* the data field that is the record key */
    const td_field_spec_t *fields;
    const char *doc; /* when it happens, one sentence */
} td_event_def_t;

/* The topics, NULL-name terminated, in SPEC order. */
extern const td_topic_def_t td_topics[];
/* The definition of ev (never NULL for a valid td_ev_t). */
const td_event_def_t *td_catalog(td_ev_t ev);
/* The definition of the type called type, or NULL when tidings does not
 * know it (outside input: any string). */
const td_event_def_t *td_catalog_find(const char *type);
/* The name of ev ("OrderCreatedEvent"). */
#define TD_EV_NAME(ev) (td_catalog(ev)->type)
/* The short topic a known type is written to ("OrderCreatedEvent" ->
 * "orders"), or NULL for a type outside the catalogue. */
const char *td_topic_of(const char *type);
/* The data fields of a known type, or NULL for a type outside it. */
const td_field_spec_t *td_event_fields(const char *type);
/* The topic definition called name ("orders"), or NULL. */
const td_topic_def_t *td_topic_find(const char *name);

/* Checks every field of spec in data (a JSON object; other keys are
 * allowed): 0, or TD_EINVAL with the first problem in errstr, naming the
 * field ("field 'quantity' must be 1 to 1000000"). */
int td_data_check(const json_t *data, const td_field_spec_t *spec, char *errstr, size_t errlen);

#endif
