/* The log view of `tidings run`: every child's output pipe is read in
 * lines; each raw JSON line goes to <data>/logs/<service>.log and, made
 * readable (service and level in colour, the message, then the other
 * fields as key=value), to our stdout. --json-logs passes lines through. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "run_internal.h"
#include "tidings/auth.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/service.h"

/* ---- output ------------------------------------------------------------ */

void run__write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

static const char *svc_color(const char *name)
{
    static const char *const colors[] = {"\033[36m", "\033[35m", "\033[34m",
                                         "\033[33m", "\033[32m", "\033[96m"};
    int s = td_service_from_name(name);
    return s >= 0 ? colors[s % 6] : "\033[37m";
}

static const char *level_color(const char *level)
{
    if (!strcasecmp(level, "error")) return "\033[31;1m";
    if (!strcasecmp(level, "warn")) return "\033[33m";
    if (!strcasecmp(level, "debug")) return "\033[90m";
    return "\033[32m";
}

/* Appends " k=v" for the fields a person wants on the console; ids and
 * request details stay in the raw JSON of the log file. */
static void append_fields(char **line, json_t *obj)
{
    static const char *const skip[] = {
        "time",       "ts",      "level",    "service",        "msg",         "message",
        "request_id", "ip",      "route",    "method",         "path",        "status",
        "trace_id",   "span_id", "event_id", "correlation_id", "duration_ms", NULL};
    const char *key;
    json_t *val;
    json_object_foreach(obj, key, val)
    {
        bool skipped = false;
        for (size_t i = 0; skip[i]; i++)
            if (!strcmp(key, skip[i])) skipped = true;
        if (skipped) continue;
        char *text = json_is_string(val) ? td_strdup(json_string_value(val)) : td_json_dumps(val);
        char *next = td_asprintf("%s %s=%s", *line, key, text);
        free(text);
        free(*line);
        *line = next;
    }
    json_t *ms = json_object_get(obj, "duration_ms");
    if (json_is_number(ms)) {
        char *next = td_asprintf("%s (%.1f ms)", *line, json_number_value(ms));
        free(*line);
        *line = next;
    }
}

/* Shows one log line of name: "users         | INFO  message k=v". A line
 * that is not a JSON object is shown as it is. */
static void show_line(run_t *r, const char *name, const char *line)
{
    if (r->json_logs) {
        char *out = td_asprintf("%s\n", line);
        run__write_all(STDOUT_FILENO, out, strlen(out));
        free(out);
        return;
    }
    json_t *obj = json_loads(line, JSON_REJECT_DUPLICATES, NULL);
    char *text, *out;
    const char *level = "", *time = NULL;
    if (json_is_object(obj)) {
        const char *msg = json_string_value(json_object_get(obj, "msg"));
        if (!msg) msg = json_string_value(json_object_get(obj, "message"));
        level = "info";
        if (json_string_value(json_object_get(obj, "level")))
            level = json_string_value(json_object_get(obj, "level"));
        time = json_string_value(json_object_get(obj, "time"));
        if (!time) time = json_string_value(json_object_get(obj, "ts"));
        text = td_strdup(msg ? msg : "");
        append_fields(&text, obj);
    } else {
        text = td_strdup(line);
    }
    char clock[16] = "";
    if (time && strlen(time) >= 23) snprintf(clock, sizeof(clock), "%.12s", time + 11);
    char lvl[8];
    snprintf(lvl, sizeof(lvl), "%s", level);
    for (char *p = lvl; *p; p++) *p = (char)(*p >= 'a' && *p <= 'z' ? *p - 32 : *p);
    if (r->color)
        out = td_asprintf("\033[90m%s\033[0m %s%-14s\033[0m| %s%-5s\033[0m %s\n", clock,
                          svc_color(name), name, level_color(level), lvl, text);
    else
        out = td_asprintf("%s%s%-14s| %-5s %s\n", clock, *clock ? " " : "", name, lvl, text);
    run__write_all(STDOUT_FILENO, out, strlen(out));
    free(out);
    free(text);
    json_decref(obj);
}

static void handle_line(run_t *r, child_t *c, const char *line, size_t len)
{
    if (!len) return;
    if (c->logfd >= 0) {
        run__write_all(c->logfd, line, len);
        run__write_all(c->logfd, "\n", 1);
    }
    char *copy = td_strndup(line, len);
    show_line(r, c->name, copy);
    free(copy);
}

/* Reads what the pipe of c holds now and handles the complete lines. */
void run__pump(run_t *r, child_t *c)
{
    char chunk[16384];
    for (;;) {
        ssize_t n = read(c->fd, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return;
        if (n <= 0) { /* EOF or error: the writer is gone */
            if (c->len) handle_line(r, c, c->buf, c->len);
            c->len = 0;
            close(c->fd);
            c->fd = -1;
            return;
        }
        c->buf = td_realloc(c->buf, c->len + (size_t)n + 1);
        memcpy(c->buf + c->len, chunk, (size_t)n);
        c->len += (size_t)n;
        size_t start = 0;
        for (size_t i = 0; i < c->len; i++) {
            if (c->buf[i] != '\n') continue;
            handle_line(r, c, c->buf + start, i - start);
            start = i + 1;
        }
        if (c->len - start > LINE_MAX_BYTES) { /* no newline in sight: flush */
            handle_line(r, c, c->buf + start, c->len - start);
            start = c->len;
        }
        memmove(c->buf, c->buf + start, c->len - start);
        c->len -= start;
    }
}
