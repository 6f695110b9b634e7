/* The CloudEvents 1.0 binary-mode envelope of SPEC section 3: every event on
 * Kafka is one record whose value is the JSON data and whose headers carry
 * the attributes (ce_specversion, ce_id, ce_source, ce_type, ce_time,
 * ce_subject, content-type, ce_correlationid, ce_causationid, traceparent).
 * Building and parsing live here; sending lives in the bus. */
#ifndef TIDINGS_ENVELOPE_H
#define TIDINGS_ENVELOPE_H

#include <jansson.h>
#include <librdkafka/rdkafka.h>

#include "tidings/catalog.h"
#include "tidings/record.h"
#include "tidings/trace.h"
#include "tidings/uuid.h"

/* Longest ce_id accepted from outside; ours are UUIDs (TD_UUID_LEN). */
#define TD_EVENT_ID_MAX 200

typedef struct td_event {
    char id[TD_EVENT_ID_MAX + 1]; /* ce_id: a UUID when we made it */
    char *source;                 /* ce_source: "/tidings/<service>" */
    char *type;                   /* ce_type: "OrderCreatedEvent" */
    char time[TD_TIME_LEN + 1];   /* ce_time */
    char *subject;                /* ce_subject = the record key */
    char *correlationid;          /* ce_correlationid, never NULL */
    char *causationid;            /* ce_causationid, NULL when a request caused it */
    td_trace_t trace;             /* traceparent */
    json_t *data;                 /* the value: a JSON object, owned */

    /* Where it was read from (parsed events only; else NULL/-1). */
    char *topic;
    int32_t partition;
    int64_t offset;

    /* A borrowed event (td_event_parse_message): source, type, subject,
     * correlationid, causationid and topic point into the message it was
     * parsed from and live as long as that message. data is its own. */
    bool borrowed;
    char *scratch;            /* storage of a subject taken from the key */
    rd_kafka_headers_t *hdrs; /* the message's headers (borrowed events) */
} td_event_t;

/* A new event: fresh id, ce_time now, new trace, correlation id = subject
 * until set otherwise. service is the short name ("orders"); data (a JSON
 * object) is stolen. Free with td_event_free. */
td_event_t *td_event_new(const char *service, const char *type, const char *subject, json_t *data);
/* Makes ev a reaction to cause: same correlation id, causation id =
 * cause->id, traceparent a child of cause's. */
void td_event_set_cause(td_event_t *ev, const td_event_t *cause);
/* Sets the correlation id (copied), e.g. the request id or the order id. */
void td_event_set_correlation(td_event_t *ev, const char *correlationid);
/* Continues a trace from an incoming HTTP traceparent (child span). */
void td_event_set_trace_parent(td_event_t *ev, const td_trace_t *parent);
void td_event_free(td_event_t *ev);

/* The record for ev on topic (full name): key = subject, value = data as
 * compact JSON, every header of SPEC section 3. Caller frees. */
td_record_t *td_event_to_record(const td_event_t *ev, const char *topic);

/* td_event_to_record with json (len bytes, a JSON object's text that the
 * caller made) as the value instead of ev->data. */
td_record_t *td_event_to_record_json(const td_event_t *ev, const char *topic, const char *json,
                                     size_t len);

/* Parses a record into an event, validating as SPEC section 3 says:
 * ce_specversion "1.0"; ce_id, ce_source, ce_type, ce_time present and
 * well-formed (ce_id any non-empty string of at most 200 bytes, as
 * CloudEvents allows; ce_time RFC 3339); content-type application/json if
 * present; a
 * traceparent that parses (a missing one gets a new trace); the value a
 * UTF-8 JSON object. NULL with the reason in errstr, never a crash.
 * A missing ce_correlationid defaults to the subject, then the id. */
td_event_t *td_event_from_record(const td_record_t *rec, char *errstr, size_t errlen);

/* Parses a consumed message into *ev without copying its attributes: the
 * strings are lent from msg (valid while msg is), the JSON value is parsed
 * once into ev->data. Validates as td_event_from_record. 0, or TD_EINVAL
 * with the reason (ev then holds what was parsed so far). Either way the
 * caller ends it with td_event_clear. */
int td_event_parse_message(const rd_kafka_message_t *msg, td_event_t *ev, char *errstr,
                           size_t errlen);
/* A header of a borrowed event's message as a C string (NULL when absent,
 * null, or holding a NUL byte). */
const char *td_event_header(const td_event_t *ev, const char *name);
/* Frees what ev holds (not ev itself) and zeroes it. */
void td_event_clear(td_event_t *ev);

/* Typed getters for event data, for handlers. Each returns TD_EINVAL with
 * "field 'quantity' is missing" / "... must be an integer" in errstr. */
int td_data_str(const json_t *data, const char *field, const char **out, char *errstr,
                size_t errlen);
int td_data_uuid(const json_t *data, const char *field, const char **out, char *errstr,
                 size_t errlen);
int td_data_int(const json_t *data, const char *field, int64_t *out, char *errstr, size_t errlen);
/* Money: a JSON number with at most 2 decimals -> integer cents. */
int td_data_cents(const json_t *data, const char *field, int64_t *out, char *errstr, size_t errlen);

#endif
