/* The one way tidings reads and writes JSON. Output is compact with reals
 * printed to 15 significant digits, which is exactly enough for a money
 * value of at most TD_MONEY_MAX_CENTS to print as its decimal ("19.99").
 * Money never goes through float arithmetic: a JSON number is accepted as
 * money only when printing it with two decimals and reading that back gives
 * the very same double, and the cents are then taken from the printed
 * digits. The strict field readers give the messages HTTP clients see. */
#include "tidings/json.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The largest real whose 15 significant digits do not round up past
 * DBL_MAX: 1.7976931348623157e308 prints as 1.79769313486232e+308, which no
 * JSON reader (jansson included) takes back. */
#define REAL_PRINTABLE_MAX 1.79769313486231e308

static bool has_unprintable_real(const json_t *j)
{
    if (json_is_real(j)) return fabs(json_real_value(j)) > REAL_PRINTABLE_MAX;
    for (size_t i = 0; i < json_array_size(j); i++)
        if (has_unprintable_real(json_array_get(j, i))) return true;
    for (void *it = json_object_iter((json_t *)j); it; it = json_object_iter_next((json_t *)j, it))
        if (has_unprintable_real(json_object_iter_value(it))) return true;
    return false;
}

static void clamp_reals(json_t *j)
{
    if (json_is_real(j) && fabs(json_real_value(j)) > REAL_PRINTABLE_MAX)
        json_real_set(j, json_real_value(j) < 0 ? -REAL_PRINTABLE_MAX : REAL_PRINTABLE_MAX);
    for (size_t i = 0; i < json_array_size(j); i++) clamp_reals(json_array_get(j, i));
    for (void *it = json_object_iter(j); it; it = json_object_iter_next(j, it))
        clamp_reals(json_object_iter_value(it));
}

char *td_json_quote(const char *s)
{
    td_strbuf_t b = {0};
    td_strbuf_add(&b, "\"", 1);
    const char *run = s;
    for (;; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        td_strbuf_add(&b, run, (size_t)(s - run));
        if (!c) break;
        char esc[8];
        switch (c) {
        case '"':
            td_strbuf_add(&b, "\\\"", 2);
            break;
        case '\\':
            td_strbuf_add(&b, "\\\\", 2);
            break;
        case '\b':
            td_strbuf_add(&b, "\\b", 2);
            break;
        case '\f':
            td_strbuf_add(&b, "\\f", 2);
            break;
        case '\n':
            td_strbuf_add(&b, "\\n", 2);
            break;
        case '\r':
            td_strbuf_add(&b, "\\r", 2);
            break;
        case '\t':
            td_strbuf_add(&b, "\\t", 2);
            break;
        default:
            snprintf(esc, sizeof(esc), "\\u%04X", c);
            td_strbuf_add(&b, esc, 6);
        }
        run = s + 1;
    }
    td_strbuf_add(&b, "\"", 1);
    return td_strbuf_take(&b);
}

char *td_json_dumps(const json_t *j)
{
    if (!j) return td_strdup("null");
    const size_t flags = JSON_COMPACT | JSON_REAL_PRECISION(15) | JSON_ENCODE_ANY;
    char *s;
    if (has_unprintable_real(j)) {
        /* Rare (outside input near DBL_MAX): round those toward zero in a
         * copy, as 15 digits round every other real, so the text reads back. */
        json_t *copy = json_deep_copy(j);
        if (!copy) td_oom();
        clamp_reals(copy);
        s = json_dumps(copy, flags);
        json_decref(copy);
    } else {
        s = json_dumps(j, flags);
    }
    if (!s) td_oom(); /* jansson values are always encodable; only memory can fail */
    return s;
}

void td_money_format(int64_t cents, char *buf, size_t len)
{
    const char *sign = cents < 0 ? "-" : "";
    uint64_t abs = cents < 0 ? (uint64_t)0 - (uint64_t)cents : (uint64_t)cents;
    if (abs % 100 == 0)
        snprintf(buf, len, "%s%" PRIu64, sign, abs / 100);
    else
        snprintf(buf, len, "%s%" PRIu64 ".%02u", sign, abs / 100, (unsigned)(abs % 100));
}

json_t *td_json_money(int64_t cents)
{
    if (cents % 100 == 0) return json_integer(cents / 100);
    /* The double nearest the decimal text, which prints back as that text
     * with 15 significant digits. */
    char buf[32];
    td_money_format(cents, buf, sizeof(buf));
    return json_real(strtod(buf, NULL));
}

int td_json_to_cents(const json_t *v, const char *field, int64_t *cents, char *errstr,
                     size_t errlen)
{
    const int64_t max_units = TD_MONEY_MAX_CENTS / 100;

    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n < 0) return td_errf(errstr, errlen, TD_EINVAL, "%s must be >= 0", field);
        if (n > max_units)
            return td_errf(errstr, errlen, TD_EINVAL, "%s must be at most %" PRId64, field,
                           max_units);
        *cents = (int64_t)n * 100;
        return 0;
    }
    if (!json_is_real(v)) return td_errf(errstr, errlen, TD_EINVAL, "%s must be a number", field);

    double d = json_real_value(v);
    if (!isfinite(d)) return td_errf(errstr, errlen, TD_EINVAL, "%s must be a number", field);
    if (d < 0) return td_errf(errstr, errlen, TD_EINVAL, "%s must be >= 0", field);
    if (d > (double)max_units)
        return td_errf(errstr, errlen, TD_EINVAL, "%s must be at most %" PRId64, field, max_units);
    if (d == 0) { /* also -0.0 */
        *cents = 0;
        return 0;
    }

    /* d <= max_units, so this fits with room to spare. */
    char buf[64];
    snprintf(buf, sizeof(buf), "%.2f", d);
    if (strtod(buf, NULL) != d)
        return td_errf(errstr, errlen, TD_EINVAL, "%s must have at most 2 decimals", field);

    int64_t c = 0;
    const char *p = buf;
    for (; *p >= '0' && *p <= '9'; p++) c = c * 10 + (*p - '0');
    if (p[0] != '.' || p[1] < '0' || p[1] > '9' || p[2] < '0' || p[2] > '9' || p[3])
        return td_errf(errstr, errlen, TD_EINVAL, "%s must be a number", field);
    c = c * 100 + (p[1] - '0') * 10 + (p[2] - '0');
    if (c > TD_MONEY_MAX_CENTS)
        return td_errf(errstr, errlen, TD_EINVAL, "%s must be at most %" PRId64, field, max_units);
    *cents = c;
    return 0;
}

int td_json_only_fields(const json_t *obj, const char *const *allowed, char *errstr, size_t errlen)
{
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)obj, key, val)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a && !ok; a++) ok = !strcmp(*a, key);
        if (!ok) return td_errf(errstr, errlen, TD_EINVAL, "unknown field '%s'", key);
    }
    return 0;
}

size_t td_utf8_len(const char *s)
{
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if ((*p & 0xc0) != 0x80) n++;
    return n;
}

int td_json_req_string(const json_t *obj, const char *field, size_t max_len, const char **out,
                       char *errstr, size_t errlen)
{
    json_t *v = json_object_get(obj, field);
    if (!v || json_is_null(v)) return td_errf(errstr, errlen, TD_EINVAL, "%s is required", field);
    if (!json_is_string(v)) return td_errf(errstr, errlen, TD_EINVAL, "%s must be a string", field);
    const char *s = json_string_value(v);
    /* jansson strings may hold \u0000; such a string cannot be a C string. */
    if (strlen(s) != json_string_length(v))
        return td_errf(errstr, errlen, TD_EINVAL, "%s must not contain NUL characters", field);
    if (!*s) return td_errf(errstr, errlen, TD_EINVAL, "%s is required", field);
    if (td_utf8_len(s) > max_len)
        return td_errf(errstr, errlen, TD_EINVAL, "%s must be at most %zu characters", field,
                       max_len);
    *out = s;
    return 0;
}

int td_json_req_int(const json_t *obj, const char *field, int64_t min, int64_t max, int64_t *out,
                    char *errstr, size_t errlen)
{
    json_t *v = json_object_get(obj, field);
    int64_t n;

    if (!v || json_is_null(v)) return td_errf(errstr, errlen, TD_EINVAL, "%s is required", field);
    if (json_is_integer(v)) {
        n = json_integer_value(v);
    } else if (json_is_real(v)) {
        /* 3.0 is an integer written as a real; 2^63 and beyond are not
         * representable as int64. */
        double d = json_real_value(v);
        if (d != floor(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0)
            return td_errf(errstr, errlen, TD_EINVAL, "%s must be an integer", field);
        n = (int64_t)d;
    } else {
        return td_errf(errstr, errlen, TD_EINVAL, "%s must be an integer", field);
    }
    if (n < min) return td_errf(errstr, errlen, TD_EINVAL, "%s must be >= %" PRId64, field, min);
    if (n > max) return td_errf(errstr, errlen, TD_EINVAL, "%s must be <= %" PRId64, field, max);
    *out = n;
    return 0;
}
