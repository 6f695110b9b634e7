/* The value parsers of the settings table (config.c): numbers within
 * bounds, ports, log levels and formats, booleans, money, addresses, the
 * topic prefix, VAPID keys and CORS origins. Each error names the variable
 * or flag it came from. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_internal.h"
#include "tidings/common.h"
#include "tidings/json.h"
#include "tidings/log.h"

int td__cfg_parse_i64(const char *what, const char *text, int64_t min, int64_t max, int64_t *out,
                      char *errstr, size_t errlen)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    /* strtoll would skip leading blanks and accept "+5"; neither is a number
     * anyone meant to write. */
    if (!*text || isspace((unsigned char)*text) || *text == '+' || *end || errno == ERANGE ||
        v < min || v > max)
        return td_errf(errstr, errlen, TD_EINVAL,
                       "%s: '%.100s' is not an integer from %" PRId64 " to %" PRId64, what, text,
                       min, max);
    *out = v;
    return 0;
}

int td__cfg_parse_int(const char *what, const char *text, int min, int max, int *out, char *errstr,
                      size_t errlen)
{
    int64_t v;
    int rc = td__cfg_parse_i64(what, text, min, max, &v, errstr, errlen);
    if (rc == 0) *out = (int)v;
    return rc;
}

int td__cfg_parse_port(const char *what, const char *text, int *out, char *errstr, size_t errlen)
{
    int64_t v;
    if (td__cfg_parse_i64(what, text, 1, 65535, &v, NULL, 0))
        return td_errf(errstr, errlen, TD_EINVAL, "%s: '%.100s' is not a port (1-65535)", what,
                       text);
    *out = (int)v;
    return 0;
}

int td__cfg_parse_level(const char *what, const char *text, int *out, char *errstr, size_t errlen)
{
    int level = td_log_level_from_name(text);
    if (level < 0)
        return td_errf(errstr, errlen, TD_EINVAL,
                       "%s: '%.100s' is not one of debug, info, warn, error", what, text);
    *out = level;
    return 0;
}

int td__cfg_parse_format(const char *what, const char *text, bool *json, char *errstr,
                         size_t errlen)
{
    if (!strcmp(text, "json")) {
        *json = true;
    } else if (!strcmp(text, "text")) {
        *json = false;
    } else {
        return td_errf(errstr, errlen, TD_EINVAL, "%s: '%.100s' is not one of json, text", what,
                       text);
    }
    return 0;
}

int td__cfg_parse_bool(const char *what, const char *text, bool *out, char *errstr, size_t errlen)
{
    if (!strcmp(text, "1") || !strcmp(text, "true")) {
        *out = true;
    } else if (!strcmp(text, "0") || !strcmp(text, "false")) {
        *out = false;
    } else {
        return td_errf(errstr, errlen, TD_EINVAL, "%s: '%.100s' is not 0 or 1", what, text);
    }
    return 0;
}

/* A decimal amount with at most 2 decimals ("5000", "5000.5", "19.99") as
 * cents, read digit by digit so no floating point is involved. */
int td__cfg_parse_money(const char *what, const char *text, int64_t *cents, char *errstr,
                        size_t errlen)
{
    const char *p = text;
    int64_t units = 0, frac = 0;
    int nint = 0, nfrac = 0;
    for (; *p >= '0' && *p <= '9'; p++, nint++) {
        units = units * 10 + (*p - '0');
        if (units > TD_MONEY_MAX_CENTS / 100) goto bad;
    }
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, nfrac++) {
            if (nfrac >= 2) goto bad;
            frac = frac * 10 + (*p - '0');
        }
        if (nfrac == 0) goto bad;
    }
    if (nint == 0 || *p) goto bad;
    if (nfrac == 1) frac *= 10;
    if (units * 100 + frac > TD_MONEY_MAX_CENTS) goto bad;
    *cents = units * 100 + frac;
    return 0;
bad:
    return td_errf(errstr, errlen, TD_EINVAL,
                   "%s: '%.100s' is not an amount >= 0 with at most 2 decimals", what, text);
}

int td__cfg_parse_listen(const char *what, const char *text, char **out, char *errstr,
                         size_t errlen)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (strcmp(text, "localhost") && inet_pton(AF_INET, text, buf) != 1 &&
        inet_pton(AF_INET6, text, buf) != 1)
        return td_errf(errstr, errlen, TD_EINVAL, "%s: '%.100s' is not an IP address", what, text);
    free(*out);
    *out = td_strdup(text);
    return 0;
}

/* Kafka topic names allow [a-zA-Z0-9._-]; the prefix is part of them. */
int td__cfg_parse_prefix(const char *what, const char *text, char **out, char *errstr,
                         size_t errlen)
{
    size_t n = strlen(text);
    if (n > 200 || strspn(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "0123456789._-") != n)
        return td_errf(errstr, errlen, TD_EINVAL,
                       "%s: '%.100s' may only hold letters, digits, '.', '_' and '-'", what, text);
    free(*out);
    *out = td_strdup(text);
    return 0;
}

/* RFC 8292: the VAPID subject is a mailto: or https: URI. */
int td__cfg_parse_vapid(const char *what, const char *text, char **out, char *errstr, size_t errlen)
{
    if ((strncmp(text, "mailto:", 7) || !text[7]) && (strncmp(text, "https://", 8) || !text[8]))
        return td_errf(errstr, errlen, TD_EINVAL, "%s: '%.100s' is not a mailto: or https:// URI",
                       what, text);
    free(*out);
    *out = td_strdup(text);
    return 0;
}

/* "*" or origins "http(s)://host[:port]" separated by commas, as a browser
 * sends them in Origin (no path); kept trimmed, comma-joined. */
int td__cfg_parse_origins(const char *what, const char *text, char **out, char *errstr,
                          size_t errlen)
{
    char *list = td_strdup("");
    for (const char *p = text;;) {
        size_t n = strcspn(p, ",");
        const char *a = p, *b = p + n;
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        if (b > a && b[-1] == '/') b--; /* "https://shop.example/" means the origin */
        size_t len = (size_t)(b - a);
        bool ok = len == 1 && *a == '*';
        if (!ok) {
            size_t skip = len > 8 && !strncasecmp(a, "https://", 8)  ? 8
                          : len > 7 && !strncasecmp(a, "http://", 7) ? 7
                                                                     : 0;
            const char *h = a + skip;
            ok = skip > 0;
            bool colon = false;
            for (const char *c = h; ok && c < b; c++) {
                if (*c == '[') { /* an IPv6 literal */
                    const char *e = memchr(c, ']', (size_t)(b - c));
                    ok = c == h && e && e > c + 1;
                    if (ok) c = e;
                } else if (*c == ':') {
                    ok = !colon && c > h && c + 1 < b;
                    colon = true;
                } else if (colon) {
                    ok = *c >= '0' && *c <= '9';
                } else {
                    ok = isalnum((unsigned char)*c) || *c == '.' || *c == '-';
                }
            }
            ok = ok && h < b;
        }
        if (!ok) {
            free(list);
            return td_errf(errstr, errlen, TD_EINVAL,
                           "%s: '%.*s' is not an origin like https://shop.example[:port], or *",
                           what, (int)(len > 100 ? 100 : len), a);
        }
        char *next = td_asprintf("%s%s%.*s", list, *list ? "," : "", (int)len, a);
        free(list);
        list = next;
        p += n;
        if (!*p) break;
        p++;
    }
    free(*out);
    *out = list;
    return 0;
}
