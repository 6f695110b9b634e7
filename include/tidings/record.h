/* A Kafka record as plain data: topic, partition, offset, key, value and
 * headers, independent of librdkafka so that the envelope, the outbox and
 * the dead-letter path are testable without Kafka. The bus converts to and
 * from rd_kafka messages at the edge. */
#ifndef TIDINGS_RECORD_H
#define TIDINGS_RECORD_H

#include "tidings/common.h"

typedef struct td_header {
    char *name;
    void *value; /* NULL for a null header; otherwise len bytes + a NUL */
    size_t len;
} td_header_t;

typedef struct td_record {
    char *topic;       /* full topic name, with the prefix */
    int32_t partition; /* -1 when not (yet) known */
    int64_t offset;    /* -1 when not (yet) known */
    int64_t timestamp; /* ms since the epoch, -1 when unknown */
    void *key;         /* NULL or key_len bytes + a NUL */
    size_t key_len;
    void *value; /* NULL or value_len bytes + a NUL */
    size_t value_len;
    td_header_t *headers;
    size_t header_cnt;
} td_record_t;

/* A new empty record for topic (copied). Free with td_record_free. */
td_record_t *td_record_new(const char *topic);
/* Frees rec and everything it holds. NULL is fine. */
void td_record_free(td_record_t *rec);
/* A deep copy. */
td_record_t *td_record_dup(const td_record_t *rec);
/* Copies key/value in (a NUL is always appended; len excludes it). */
void td_record_set_key(td_record_t *rec, const void *key, size_t len);
void td_record_set_value(td_record_t *rec, const void *value, size_t len);
/* Appends a header (copied). value NULL makes a null header. */
void td_record_add_header(td_record_t *rec, const char *name, const void *value, size_t len);
void td_record_add_header_str(td_record_t *rec, const char *name, const char *value);
/* The last header called name, or NULL. */
const td_header_t *td_record_header(const td_record_t *rec, const char *name);
/* The last header's value as a C string (NULL if absent, null, or if it
 * holds a NUL byte). Borrowed from rec. */
const char *td_record_header_str(const td_record_t *rec, const char *name);

/* Serialises the headers to a compact binary blob (for the outbox table)
 * and back. Decoding checks every length: TD_EINVAL for a corrupt blob. */
void *td_headers_encode(const td_record_t *rec, size_t *len);
/* Calls fn for each header of an encoded blob, in order, without copying
 * (name is name_len bytes, value NULL for a null header), once the whole
 * blob is known good: TD_EINVAL for a corrupt blob, and then fn was never
 * called. fn NULL only checks. */
typedef void (*td_header_fn)(void *arg, const char *name, size_t name_len, const void *value,
                             size_t len);
int td_headers_walk(const void *blob, size_t len, td_header_fn fn, void *arg);
int td_headers_decode(td_record_t *rec, const void *blob, size_t len);

#endif
