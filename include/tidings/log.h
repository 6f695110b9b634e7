/* Structured logs: one JSON object per line on stderr with time, level,
 * service and message, plus the event and trace ids when there are some,
 * so that logs can be grepped by event id and joined with `tidings trace`.
 * TIDINGS_LOG_FORMAT=text gives "time level service message k=v" lines for
 * people. Thread-safe: a line is written with one write(2). */
#ifndef TIDINGS_LOG_H
#define TIDINGS_LOG_H

#include <jansson.h>

#include "tidings/common.h"
#include "tidings/config.h"

struct td_event;

/* Sets the service name, the minimum level and the format. */
void td_log_init(const char *service, int level, bool json);
int td_log_level(void);
/* Parses "debug".."error" (-1 when unknown). */
int td_log_level_from_name(const char *name);
/* Redirects log output to fd (tests); default 2. */
void td_log_set_fd(int fd);

void td_log(int level, const char *fmt, ...) TD_PRINTF(2, 3);
/* With event_id, event_type, correlation_id, trace_id of ev. */
void td_log_event(int level, const struct td_event *ev, const char *fmt, ...) TD_PRINTF(3, 4);
/* With extra fields (an object, stolen; may be NULL). */
void td_log_fields(int level, json_t *fields, const char *fmt, ...) TD_PRINTF(3, 4);

#define td_debug(...) td_log(TD_LOG_DEBUG, __VA_ARGS__)
#define td_info(...)  td_log(TD_LOG_INFO, __VA_ARGS__)
#define td_warn(...)  td_log(TD_LOG_WARN, __VA_ARGS__)
#define td_error(...) td_log(TD_LOG_ERROR, __VA_ARGS__)

#endif
