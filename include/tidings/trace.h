/* W3C Trace Context: the traceparent header that lets `tidings trace` and
 * any tracing system follow an event from source to destination. */
#ifndef TIDINGS_TRACE_H
#define TIDINGS_TRACE_H

#include "tidings/common.h"

#define TD_TRACEPARENT_LEN 55 /* "00-<32 hex>-<16 hex>-<2 hex>" without the NUL */

typedef struct td_trace {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    uint8_t flags;
} td_trace_t;

/* A new trace (random trace id and span id, sampled flag set). */
void td_trace_new(td_trace_t *out);
/* A child span of parent: same trace id and flags, a new span id. */
void td_trace_child(const td_trace_t *parent, td_trace_t *out);
/* Parses version 00 exactly as W3C says: lowercase hex, all-zero trace or
 * span id invalid, version ff invalid. 0 or TD_EINVAL (reason in errstr). */
int td_trace_parse(const char *s, td_trace_t *out, char *errstr, size_t errlen);
/* Writes the traceparent (TD_TRACEPARENT_LEN + 1 bytes). */
void td_trace_format(const td_trace_t *t, char *out);
/* The 32 hex digits of the trace id (33 bytes). */
void td_trace_id_hex(const td_trace_t *t, char *out);

#endif
