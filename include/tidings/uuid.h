/* UUIDs (lowercase, hyphenated, version 4) and RFC 3339 times. */
#ifndef TIDINGS_UUID_H
#define TIDINGS_UUID_H

#include "tidings/common.h"

#define TD_UUID_LEN 36 /* without the NUL */
#define TD_TIME_LEN 24 /* "2026-11-21T11:19:53.123Z" without the NUL */

/* A new random UUID into out (TD_UUID_LEN + 1 bytes). Any thread. */
void td_uuid_new(char *out);
/* A time-ordered UUID (version 7, RFC 9562): 48 bits of ms since the
 * epoch, then random bits. Rows keyed by it are appended to an index
 * instead of scattered over it. */
void td_uuid_v7(char *out);
/* A version 7 UUID made of ms and a name instead of the clock and
 * random bits: the 74 bits after the timestamp are a hash (BLAKE2b) of name. The
 * same (ms, name) always gives the same id, so a row keyed by it is made
 * once however often it is made again, and ids still sort by ms. */
void td_uuid_v7_named(int64_t ms, const char *name, char *out);
/* The name-based (version 5, SHA-1) UUID of name in namespace ns (a UUID
 * string): the same inputs always give the same id. Into out
 * (TD_UUID_LEN + 1 bytes). Any thread. */
void td_uuid_name(const char *ns, const char *name, char *out);
/* True when s is exactly a lowercase hyphenated UUID. */
bool td_uuid_valid(const char *s);

/* ms since the epoch as RFC 3339 UTC with milliseconds into out
 * (TD_TIME_LEN + 1 bytes). */
void td_time_format(int64_t ms, char *out);
/* Parses RFC 3339 (Z or +hh:mm offset, optional fraction) into ms since the
 * epoch. 0 or TD_EINVAL. */
int td_time_parse(const char *s, int64_t *ms);

#endif
