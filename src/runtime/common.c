/* Allocation that aborts on out-of-memory, error strings, clocks and small
 * file helpers used throughout the runtime. */
#include "tidings/common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void td_oom(void)
{
    static const char msg[] = "tidings: out of memory\n";
    ssize_t n = write(2, msg, sizeof(msg) - 1);
    (void)n;
    abort();
}

void *td_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) td_oom();
    return p;
}

void *td_calloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (!p) td_oom();
    return p;
}

void *td_realloc(void *p, size_t n)
{
    void *q = realloc(p, n ? n : 1);
    if (!q) td_oom();
    return q;
}

char *td_strdup(const char *s)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) td_oom();
    return d;
}

char *td_strndup(const char *s, size_t n)
{
    if (!s) return NULL;
    char *d = strndup(s, n);
    if (!d) td_oom();
    return d;
}

char *td_vasprintf(const char *fmt, va_list ap)
{
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0) td_oom();
    return s;
}

char *td_asprintf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = td_vasprintf(fmt, ap);
    va_end(ap);
    return s;
}

void td_strbuf_add(td_strbuf_t *b, const char *s, size_t n)
{
    if (n >= SIZE_MAX / 2 - b->len) td_oom();
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        b->p = td_realloc(b->p, cap);
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void td_strbuf_str(td_strbuf_t *b, const char *s)
{
    td_strbuf_add(b, s, strlen(s));
}

void td_strbuf_printf(td_strbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = td_vasprintf(fmt, ap);
    va_end(ap);
    td_strbuf_str(b, s);
    free(s);
}

char *td_strbuf_take(td_strbuf_t *b)
{
    if (!b->p) td_strbuf_add(b, "", 0);
    char *p = b->p;
    *b = (td_strbuf_t){0};
    return p;
}

int td_errf(char *errstr, size_t errlen, int err, const char *fmt, ...)
{
    if (errstr && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errstr, errlen, fmt, ap);
        va_end(ap);
    }
    return err;
}

int td_parse_positive(const char *s, int64_t max, int64_t *out)
{
    if (!s || !*s) return TD_EINVAL;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return TD_EINVAL;
        if (v > (max - (*p - '0')) / 10) return TD_EINVAL;
        v = v * 10 + (*p - '0');
    }
    if (v < 1) return TD_EINVAL;
    *out = v;
    return 0;
}

const char *td_strerror(int err)
{
    switch (err) {
    case TD_OK:
        return "ok";
    case TD_EINVAL:
        return "invalid argument";
    case TD_ENOENT:
        return "not found";
    case TD_EEXIST:
        return "already exists";
    case TD_EPERM:
        return "not permitted";
    case TD_EAGAIN:
        return "temporarily unavailable";
    case TD_EIO:
        return "i/o error";
    case TD_ETIMEDOUT:
        return "timed out";
    case TD_EEXPIRED:
        return "expired";
    case TD_ELIMIT:
        return "limit exceeded";
    default:
        return "unknown error";
    }
}

int64_t td_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t td_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct timespec td_mono_timespec(int64_t at_ms)
{
    return (struct timespec){.tv_sec = at_ms / 1000, .tv_nsec = (at_ms % 1000) * 1000000};
}

struct timespec td_mono_deadline(int64_t ms_from_now)
{
    return td_mono_timespec(td_mono_ms() + ms_from_now);
}

void td_sleep_ms(int64_t ms)
{
    if (ms <= 0) return;
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

char *td_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = td_malloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = td_realloc(buf, cap *= 2);
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[n] = '\0';
    if (len) *len = n;
    return buf;
}

int td_write_file(const char *path, const void *data, size_t len, int mode)
{
    char *tmp = td_asprintf("%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        free(tmp);
        return TD_EIO;
    }
    const char *p = data;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            close(fd);
            unlink(tmp);
            free(tmp);
            return TD_EIO;
        }
        p += w;
        left -= (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        unlink(tmp);
        free(tmp);
        return TD_EIO;
    }
    free(tmp);
    return 0;
}

int td_mkdirs(const char *path, int mode)
{
    char *p = td_strdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/') continue;
        *s = '\0';
        if (mkdir(p, (mode_t)mode) != 0 && errno != EEXIST) {
            free(p);
            return TD_EIO;
        }
        *s = '/';
    }
    int rc = (mkdir(p, (mode_t)mode) != 0 && errno != EEXIST) ? TD_EIO : 0;
    free(p);
    return rc;
}
