/* Structured logging: one JSON object per line (time, level, service, msg
 * and any fields, notably the event and trace ids so a log line can be
 * joined with `tidings trace`), or a short text line for people. Lines are
 * assembled in memory and written with a single write(2), so lines from
 * several threads or processes sharing stderr never interleave. Messages
 * may quote outside input (a bad header, a body), so they are escaped by
 * jansson and invalid UTF-8 is replaced rather than dropped. */
#include "tidings/log.h"

#include "tidings/tz.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tidings/envelope.h"
#include "tidings/json.h"
#include "tidings/uuid.h"

static const char *const level_names[] = {"debug", "info", "warn", "error"};
static const char *const level_upper[] = {"DEBUG", "INFO", "WARN", "ERROR"};

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_service[64] = "tidings"; /* guarded by log_lock */
static atomic_int log_min = TD_LOG_INFO;
static atomic_bool log_json = true;
static atomic_int log_fd = 2;

void td_log_init(const char *service, int level, bool json)
{
    pthread_mutex_lock(&log_lock);
    snprintf(log_service, sizeof(log_service), "%s", service ? service : "tidings");
    pthread_mutex_unlock(&log_lock);
    if (level < TD_LOG_DEBUG) level = TD_LOG_DEBUG;
    if (level > TD_LOG_ERROR) level = TD_LOG_ERROR;
    atomic_store(&log_min, level);
    atomic_store(&log_json, json);
}

int td_log_level(void)
{
    return atomic_load(&log_min);
}

int td_log_level_from_name(const char *name)
{
    if (!name) return -1;
    for (size_t i = 0; i < TD_ARRAY_SIZE(level_names); i++)
        if (!strcmp(name, level_names[i])) return (int)i;
    return -1;
}

void td_log_set_fd(int fd)
{
    atomic_store(&log_fd, fd);
}

/* s with every invalid UTF-8 sequence replaced by U+FFFD, so jansson
 * accepts it and the line stays valid JSON. Caller frees. */
static char *utf8_clean(const char *s)
{
    size_t n = strlen(s);
    char *out = td_malloc(n * 3 + 1);
    size_t o = 0;
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        unsigned c = *p;
        size_t len = c < 0x80             ? 1
                     : (c & 0xe0) == 0xc0 ? 2
                     : (c & 0xf0) == 0xe0 ? 3
                     : (c & 0xf8) == 0xf0 ? 4
                                          : 0;
        bool ok = len > 0;
        for (size_t i = 1; ok && i < len; i++) ok = (p[i] & 0xc0) == 0x80;
        if (ok && len == 2) ok = c >= 0xc2; /* overlong */
        if (ok && len == 3) ok = !(c == 0xe0 && p[1] < 0xa0) && !(c == 0xed && p[1] >= 0xa0);
        if (ok && len == 4)
            ok = !(c == 0xf0 && p[1] < 0x90) && !(c == 0xf4 && p[1] >= 0x90) && c <= 0xf4;
        if (ok) {
            memcpy(out + o, p, len);
            o += len;
            p += len;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            p++;
        }
    }
    out[o] = '\0';
    return out;
}

static void write_line(const char *line, size_t len)
{
    int fd = atomic_load(&log_fd);
    while (len > 0) {
        ssize_t w = write(fd, line, len);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* nowhere left to report it */
        line += w;
        len -= (size_t)w;
    }
}

/* A field value for the text format: plain strings bare unless they need
 * quoting, everything else as compact JSON. */
static void append_text_field(char **line, const char *key, json_t *val)
{
    char *v;
    const char *s = json_string_value(val);
    if (s && *s && !strpbrk(s, " \t\n\r\"=")) {
        v = td_strdup(s);
    } else {
        v = td_json_dumps(val);
    }
    char *next = td_asprintf("%s %s=%s", *line, key, v);
    free(v);
    free(*line);
    *line = next;
}

static void emit(int level, json_t *fields, const char *fmt, va_list ap)
{
    char *raw = td_vasprintf(fmt, ap);
    char *msg = utf8_clean(raw);
    free(raw);
    char service[sizeof(log_service)];
    pthread_mutex_lock(&log_lock);
    memcpy(service, log_service, sizeof(service));
    pthread_mutex_unlock(&log_lock);

    int64_t now = td_now_ms();
    char *line;
    if (atomic_load(&log_json)) {
        char ts[TD_TIME_LEN + 1];
        td_time_format(now, ts);
        json_t *obj = json_object();
        json_object_set_new(obj, "time", json_string(ts));
        json_object_set_new(obj, "level", json_string(level_names[level]));
        json_object_set_new(obj, "service", json_string(service));
        json_object_set_new(obj, "msg", json_string(msg));
        /* The fixed keys win over fields of the same name. */
        if (fields) json_object_update_missing(obj, fields);
        char *body = td_json_dumps(obj);
        json_decref(obj);
        line = td_asprintf("%s\n", body);
        free(body);
    } else {
        time_t secs = (time_t)(now / 1000);
        struct tm tm;
        td_tz_localtime(secs, &tm); /* not while tz.c has TZ swapped */
        line = td_asprintf("%02d:%02d:%02d.%03d %s %s %s", tm.tm_hour, tm.tm_min, tm.tm_sec,
                           (int)(now % 1000), level_upper[level], service, msg);
        const char *key;
        json_t *val;
        if (fields) json_object_foreach(fields, key, val) append_text_field(&line, key, val);
        char *full = td_asprintf("%s\n", line);
        free(line);
        line = full;
    }
    write_line(line, strlen(line));
    free(line);
    free(msg);
}

static bool enabled(int level)
{
    return level >= atomic_load(&log_min) && level >= TD_LOG_DEBUG && level <= TD_LOG_ERROR;
}

void td_log(int level, const char *fmt, ...)
{
    if (!enabled(level)) return;
    va_list ap;
    va_start(ap, fmt);
    emit(level, NULL, fmt, ap);
    va_end(ap);
}

void td_log_event(int level, const struct td_event *ev, const char *fmt, ...)
{
    if (!enabled(level)) return;
    json_t *fields = json_object();
    if (ev) {
        char trace_id[33];
        td_trace_id_hex(&ev->trace, trace_id);
        char *cleaned = utf8_clean(ev->id);
        json_object_set_new(fields, "event_id", json_string(cleaned));
        free(cleaned);
        cleaned = utf8_clean(ev->type ? ev->type : "");
        json_object_set_new(fields, "event_type", json_string(cleaned));
        free(cleaned);
        cleaned = utf8_clean(ev->correlationid ? ev->correlationid : "");
        json_object_set_new(fields, "correlation_id", json_string(cleaned));
        free(cleaned);
        json_object_set_new(fields, "trace_id", json_string(trace_id));
    }
    va_list ap;
    va_start(ap, fmt);
    emit(level, fields, fmt, ap);
    va_end(ap);
    json_decref(fields);
}

void td_log_fields(int level, json_t *fields, const char *fmt, ...)
{
    if (!enabled(level)) {
        json_decref(fields);
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    emit(level, json_is_object(fields) ? fields : NULL, fmt, ap);
    va_end(ap);
    json_decref(fields);
}
