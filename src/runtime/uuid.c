/* Identifiers and timestamps as the contract spells them: random (v4)
 * UUIDs in lowercase hyphenated form, and RFC 3339 times in UTC with
 * milliseconds. Parsing is strict about the shape and the calendar because
 * the input comes from Kafka headers and HTTP bodies. The calendar maths is
 * done by hand (days from civil) so neither the process time zone nor
 * timegm's range matters. */
#include "tidings/uuid.h"

#include <errno.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "tidings/log.h"

/* Random bytes from the kernel's CSPRNG, fetched 4 KiB at a time per
 * thread: one getrandom(2) serves 256 UUIDs, where libuuid made a system
 * call for each. A fork() child starts with an empty buffer (so it never
 * repeats its parent's ids). */
#define RAND_BUF 4096
static __thread unsigned char rand_buf[RAND_BUF];
static __thread size_t rand_pos = RAND_BUF;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void rand_reset(void)
{
    rand_pos = RAND_BUF;
}

static void atfork_init(void)
{
    pthread_atfork(NULL, NULL, rand_reset);
}

static void random_bytes(unsigned char *out, size_t n)
{
    pthread_once(&atfork_once, atfork_init);
    if (rand_pos + n > RAND_BUF) {
        size_t got = 0;
        while (got < RAND_BUF) {
            ssize_t r = getrandom(rand_buf + got, RAND_BUF - got, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r < 0) {
                td_error("getrandom failed: %s", strerror(errno));
                td_oom();
            }
            got += (size_t)r;
        }
        rand_pos = 0;
    }
    memcpy(out, rand_buf + rand_pos, n);
    /* Used bytes never stay in memory. */
    memset(rand_buf + rand_pos, 0, n);
    rand_pos += n;
}

static void unparse(const unsigned char *u, char *out)
{
    static const char hex[] = "0123456789abcdef";
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) *p++ = '-';
        *p++ = hex[u[i] >> 4];
        *p++ = hex[u[i] & 15];
    }
    *p = '\0';
}

void td_uuid_new(char *out)
{
    unsigned char u[16];
    random_bytes(u, sizeof(u));
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x40); /* version 4 */
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    unparse(u, out);
}

void td_uuid_v7(char *out)
{
    unsigned char u[16];
    random_bytes(u + 6, 10);
    uint64_t ms = (uint64_t)td_now_ms();
    for (int i = 0; i < 6; i++) u[i] = (unsigned char)(ms >> (40 - 8 * i));
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x70); /* version 7 */
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80); /* RFC 9562 variant */
    unparse(u, out);
}

void td_uuid_v7_named(int64_t ms, const char *name, char *out)
{
    /* BLAKE2b (libsodium): a few hundred instructions for a short name,
     * where an OpenSSL EVP digest costs thousands in its set-up. */
    unsigned char u[16], h[16];
    crypto_generichash(h, sizeof(h), (const unsigned char *)name, strlen(name), NULL, 0);
    memcpy(u + 6, h, 10);
    uint64_t t = ms > 0 ? (uint64_t)ms : 0;
    for (int i = 0; i < 6; i++) u[i] = (unsigned char)(t >> (40 - 8 * i));
    u[6] = (unsigned char)((u[6] & 0x0f) | 0x70); /* version 7 */
    u[8] = (unsigned char)((u[8] & 0x3f) | 0x80); /* RFC 9562 variant */
    unparse(u, out);
}

void td_uuid_name(const char *ns, const char *name, char *out)
{
    /* RFC 4122 version 5: SHA-1 over the namespace's bytes and the name. */
    unsigned char nsb[16] = {0}, md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    for (int i = 0, k = 0; ns[i] && k < 32; i++) {
        char c = ns[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v < 0) continue;
        nsb[k / 2] = (unsigned char)(nsb[k / 2] | (k % 2 ? v : v << 4));
        k++;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1 ||
        EVP_DigestUpdate(ctx, nsb, sizeof(nsb)) != 1 ||
        EVP_DigestUpdate(ctx, name, strlen(name)) != 1 ||
        EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen < 16)
        td_oom(); /* SHA-1 does not fail but for memory */
    EVP_MD_CTX_free(ctx);
    md[6] = (unsigned char)((md[6] & 0x0f) | 0x50);
    md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);
    unparse(md, out);
}

bool td_uuid_valid(const char *s)
{
    if (!s) return false;
    for (int i = 0; i < TD_UUID_LEN; i++) {
        char c = s[i];
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (c != '-') return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return s[TD_UUID_LEN] == '\0';
}

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

/* The printable range: years 0000..9999 keep the text TD_TIME_LEN long. */
#define MIN_MS (-62167219200000LL) /* 0000-01-01T00:00:00.000Z */
#define MAX_MS 253402300799999LL   /* 9999-12-31T23:59:59.999Z */

void td_time_format(int64_t ms, char *out)
{
    if (ms < MIN_MS) ms = MIN_MS;
    if (ms > MAX_MS) ms = MAX_MS;
    int64_t days = ms >= 0 ? ms / 86400000 : -((-ms + 86399999) / 86400000);
    int64_t rem = ms - days * 86400000;
    int y, m, d;
    civil_from_days(days, &y, &m, &d);
    int h = (int)(rem / 3600000), mi = (int)(rem / 60000 % 60), s = (int)(rem / 1000 % 60);
    int frac = (int)(rem % 1000);
    /* Written digit by digit: every field is in range, so the text is
     * always exactly TD_TIME_LEN characters. */
    const int fields[] = {y, m, d, h, mi, s, frac};
    const int widths[] = {4, 2, 2, 2, 2, 2, 3};
    const char seps[] = "--T::.Z";
    char *p = out;
    for (int i = 0; i < 7; i++) {
        for (int k = widths[i] - 1, v = fields[i]; k >= 0; k--, v /= 10)
            p[k] = (char)('0' + v % 10);
        p += widths[i];
        *p++ = seps[i];
    }
    *p = '\0';
}

/* n decimal digits at s into *v; false if any is not a digit. */
static bool digits(const char *s, int n, int *v)
{
    int r = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        r = r * 10 + (s[i] - '0');
    }
    *v = r;
    return true;
}

static bool leap(int y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int td_time_parse(const char *s, int64_t *ms)
{
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec, frac = 0;

    if (!s || strlen(s) < 20) return TD_EINVAL;
    if (!digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
        !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't') || !digits(s + 11, 2, &h) ||
        s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec))
        return TD_EINVAL;
    if (mo < 1 || mo > 12 || d < 1) return TD_EINVAL;
    if (d > mdays[mo - 1] + (mo == 2 && leap(y))) return TD_EINVAL;
    /* 60 is a leap second, which RFC 3339 allows; it counts as the next one. */
    if (h > 23 || mi > 59 || sec > 60) return TD_EINVAL;

    const char *p = s + 19;
    if (*p == '.') {
        p++;
        int n = 0;
        while (*p >= '0' && *p <= '9') {
            if (n < 3) frac = frac * 10 + (*p - '0');
            n++;
            p++;
        }
        if (n == 0) return TD_EINVAL;
        for (int i = n; i < 3; i++) frac *= 10;
    }

    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om)) return TD_EINVAL;
        if (oh > 23 || om > 59) return TD_EINVAL;
        offset_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return TD_EINVAL;
    }
    if (*p != '\0') return TD_EINVAL;

    int64_t secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec;
    secs -= (int64_t)offset_min * 60;
    *ms = secs * 1000 + frac;
    return 0;
}
