/* JSON helpers over jansson: the one way tidings prints JSON (compact,
 * money exact), money as integer cents, and strict reading of request
 * bodies (unknown fields rejected, types checked, messages for people). */
#ifndef TIDINGS_JSON_H
#define TIDINGS_JSON_H

#include <jansson.h>

#include "tidings/common.h"

/* Compact JSON with reals printed to 15 significant digits, so a money
 * value made by td_json_money prints exactly ("19.99"). Caller frees.
 * Every JSON tidings writes (HTTP, Kafka, logs) goes through this. */
char *td_json_dumps(const json_t *j);

/* The JSON string literal of UTF-8 text s, quotes included, escaped as
 * td_json_dumps escapes a string (", \\, the C0 controls). For hot paths
 * that splice text into JSON without building a json_t. Caller frees. */
char *td_json_quote(const char *s);

/* Largest amount of money accepted anywhere, in cents (< 10^13 dollars
 * keeps every value exact in a double with 15 digits). */
#define TD_MONEY_MAX_CENTS 99999999999900LL

/* cents -> JSON number: 112900 -> 1129, 1999 -> 19.99. New reference. */
json_t *td_json_money(int64_t cents);
/* JSON number with at most 2 decimals, 0 <= v <= TD_MONEY_MAX_CENTS/100,
 * -> cents. TD_EINVAL otherwise (not a number, 3 decimals, NaN, huge,
 * negative); the message names field: "price must have at most 2
 * decimals". */
int td_json_to_cents(const json_t *v, const char *field, int64_t *cents, char *errstr,
                     size_t errlen);
/* Cents as text without JSON: 1999 -> "19.99", 112900 -> "1129". buf >= 24. */
void td_money_format(int64_t cents, char *buf, size_t len);

/* TD_EINVAL ("unknown field 'colour'") if obj has a key not in allowed
 * (NULL-terminated list). */
int td_json_only_fields(const json_t *obj, const char *const *allowed, char *errstr, size_t errlen);
/* A required string field: present, a string, 1..max_len characters
 * (UTF-8 code points) after no trimming. TD_EINVAL with "title is
 * required" / "title must be a string" / "title must be at most 200
 * characters". */
int td_json_req_string(const json_t *obj, const char *field, size_t max_len, const char **out,
                       char *errstr, size_t errlen);
/* A required integer field within [min, max]; a real with a fraction, a
 * string or a bool is TD_EINVAL ("quantity must be an integer"). */
int td_json_req_int(const json_t *obj, const char *field, int64_t min, int64_t max, int64_t *out,
                    char *errstr, size_t errlen);
/* Number of UTF-8 code points in s. */
size_t td_utf8_len(const char *s);

#endif
