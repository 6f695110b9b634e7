/* Shared basics of the tidings runtime: error codes, allocation that aborts
 * on out-of-memory, borrowed slices and clocks. Every other header includes
 * this one. */
#ifndef TIDINGS_COMMON_H
#define TIDINGS_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Functions that can fail return 0 or one of these negative codes. */
#define TD_OK        0
#define TD_EINVAL    (-22)  /* bad input from outside: permanent */
#define TD_ENOENT    (-2)   /* no such thing */
#define TD_EEXIST    (-17)  /* already exists / conflict */
#define TD_EPERM     (-1)   /* not allowed */
#define TD_EAGAIN    (-11)  /* transient: try again later */
#define TD_EIO       (-5)   /* database or I/O failure */
#define TD_ETIMEDOUT (-110) /* gave up waiting */
#define TD_EEXPIRED  (-127) /* a token or a window has expired */
#define TD_ELIMIT    (-75)  /* a limit was hit (rate, size) */

/* A static English name of err ("invalid argument"). */
const char *td_strerror(int err);

#define TD_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define TD_UNUSED(x)     ((void)(x))

#if defined(__GNUC__)
#define TD_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define TD_NORETURN     __attribute__((noreturn))
#else
#define TD_PRINTF(f, a)
#define TD_NORETURN
#endif

/* Allocation never returns NULL: out of memory prints a message and aborts
 * (a service is restarted by its supervisor; outbox and inbox make the
 * restart lose nothing). Free with free(). */
void *td_malloc(size_t n);
void *td_calloc(size_t count, size_t n);
void *td_realloc(void *p, size_t n);
char *td_strdup(const char *s); /* NULL in, NULL out */
char *td_strndup(const char *s, size_t n);
char *td_asprintf(const char *fmt, ...) TD_PRINTF(1, 2);
char *td_vasprintf(const char *fmt, va_list ap);
TD_NORETURN void td_oom(void);

/* A growable NUL-terminated string: {0} is empty; p is NULL until the
 * first append (td_strbuf_take never returns NULL). Free p with free(). */
typedef struct td_strbuf {
    char *p;
    size_t len, cap;
} td_strbuf_t;

void td_strbuf_add(td_strbuf_t *b, const char *s, size_t n);
void td_strbuf_str(td_strbuf_t *b, const char *s);
void td_strbuf_printf(td_strbuf_t *b, const char *fmt, ...) TD_PRINTF(2, 3);
/* Hands the string over (an empty one if nothing was added) and resets b. */
char *td_strbuf_take(td_strbuf_t *b);

/* A borrowed slice: must not outlive its owner. */
typedef struct td_iovec {
    const char *p;
    size_t len;
} td_iovec_t;

/* Writes a formatted message into errstr (if not NULL) and returns err:
 * `return td_errf(errstr, errlen, TD_EINVAL, "price must be >= 0");` */
int td_errf(char *errstr, size_t errlen, int err, const char *fmt, ...) TD_PRINTF(4, 5);

/* Parses a positive decimal integer made of digits only (no sign, no
 * spaces) that is at most max: 0 and *out set, else TD_EINVAL with *out
 * untouched (also on overflow). */
int td_parse_positive(const char *s, int64_t max, int64_t *out);

/* Wall-clock milliseconds since the Unix epoch, and a monotonic clock. */
int64_t td_now_ms(void);
int64_t td_mono_ms(void);
void td_sleep_ms(int64_t ms);
/* The CLOCK_MONOTONIC time of td_mono_ms() value at_ms, and the one
 * ms_from_now from now: deadlines for pthread_cond_timedwait on a
 * condition variable whose clock is CLOCK_MONOTONIC. Any thread. */
struct timespec td_mono_timespec(int64_t at_ms);
struct timespec td_mono_deadline(int64_t ms_from_now);

/* Reads a whole file (NUL-terminated; *len gets the size without the NUL).
 * NULL with errno set when it cannot be read. Caller frees. */
char *td_read_file(const char *path, size_t *len);
/* Writes data to path atomically (temp file + rename), mode as given. */
int td_write_file(const char *path, const void *data, size_t len, int mode);
/* mkdir -p. */
int td_mkdirs(const char *path, int mode);

#endif
