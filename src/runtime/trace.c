/* W3C Trace Context (traceparent) for events and HTTP requests: every event
 * carries one so a chain of events can be followed across services. Ids
 * come from libsodium's CSPRNG. Parsing follows the W3C rules to the letter
 * because the header arrives from outside (Kafka records, HTTP requests):
 * lowercase hex only, version ff and all-zero ids rejected, version 00
 * exactly 55 characters; a later version may append "-..." fields, which are
 * ignored. */
#include "tidings/trace.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;

static void sodium_setup(void)
{
    if (sodium_init() < 0) {
        static const char msg[] = "tidings: libsodium failed to initialise\n";
        ssize_t n = write(2, msg, sizeof(msg) - 1);
        (void)n;
        abort();
    }
}

static void random_bytes(void *buf, size_t len)
{
    pthread_once(&sodium_once, sodium_setup);
    randombytes_buf(buf, len);
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i]) return false;
    return true;
}

/* Random non-zero bytes: an all-zero id is invalid, however unlikely. */
static void random_id(uint8_t *p, size_t n)
{
    do random_bytes(p, n);
    while (all_zero(p, n));
}

void td_trace_new(td_trace_t *out)
{
    random_id(out->trace_id, sizeof(out->trace_id));
    random_id(out->span_id, sizeof(out->span_id));
    out->flags = 0x01; /* sampled */
}

void td_trace_child(const td_trace_t *parent, td_trace_t *out)
{
    td_trace_t t = *parent;
    random_id(t.span_id, sizeof(t.span_id));
    *out = t;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1; /* uppercase is invalid per W3C */
}

/* n bytes from 2n lowercase hex digits; false on any other character. */
static bool unhex(const char *s, uint8_t *out, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hi < 0 ? -1 : hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return true;
}

int td_trace_parse(const char *s, td_trace_t *out, char *errstr, size_t errlen)
{
    td_trace_t t;
    uint8_t version;

    if (!s) return td_errf(errstr, errlen, TD_EINVAL, "traceparent is missing");
    size_t len = strlen(s);
    if (len < TD_TRACEPARENT_LEN)
        return td_errf(errstr, errlen, TD_EINVAL, "traceparent must be %d characters, not %zu",
                       TD_TRACEPARENT_LEN, len);
    if (!unhex(s, &version, 1))
        return td_errf(errstr, errlen, TD_EINVAL, "traceparent version must be 2 lowercase hex");
    if (version == 0xff)
        return td_errf(errstr, errlen, TD_EINVAL, "traceparent version ff is invalid");
    if (version == 0x00 && len != TD_TRACEPARENT_LEN)
        return td_errf(errstr, errlen, TD_EINVAL, "traceparent must be %d characters, not %zu",
                       TD_TRACEPARENT_LEN, len);
    if (version != 0x00 && len > TD_TRACEPARENT_LEN && s[TD_TRACEPARENT_LEN] != '-')
        return td_errf(errstr, errlen, TD_EINVAL, "traceparent has trailing garbage");
    if (s[2] != '-' || s[35] != '-' || s[52] != '-')
        return td_errf(errstr, errlen, TD_EINVAL,
                       "traceparent must be 00-<32 hex>-<16 hex>-<2 hex>");
    if (!unhex(s + 3, t.trace_id, sizeof(t.trace_id)))
        return td_errf(errstr, errlen, TD_EINVAL, "traceparent trace-id must be lowercase hex");
    if (!unhex(s + 36, t.span_id, sizeof(t.span_id)))
        return td_errf(errstr, errlen, TD_EINVAL, "traceparent parent-id must be lowercase hex");
    if (!unhex(s + 53, &t.flags, 1))
        return td_errf(errstr, errlen, TD_EINVAL, "traceparent flags must be lowercase hex");
    if (all_zero(t.trace_id, sizeof(t.trace_id)))
        return td_errf(errstr, errlen, TD_EINVAL, "traceparent trace-id is all zeros");
    if (all_zero(t.span_id, sizeof(t.span_id)))
        return td_errf(errstr, errlen, TD_EINVAL, "traceparent parent-id is all zeros");
    *out = t;
    return 0;
}

static void tohex(const uint8_t *p, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[p[i] >> 4];
        out[2 * i + 1] = hex[p[i] & 0x0f];
    }
    out[2 * n] = '\0';
}

void td_trace_format(const td_trace_t *t, char *out)
{
    memcpy(out, "00-", 3);
    tohex(t->trace_id, sizeof(t->trace_id), out + 3);
    out[35] = '-';
    tohex(t->span_id, sizeof(t->span_id), out + 36);
    out[52] = '-';
    tohex(&t->flags, 1, out + 53);
}

void td_trace_id_hex(const td_trace_t *t, char *out)
{
    tohex(t->trace_id, sizeof(t->trace_id), out);
}
