/* Quiet hours (SPEC section 2 `quietHours`): a daily window of the user's
 * wall clock in their IANA zone, inside which push (and email) deliveries
 * are held until it ends. The window may cross midnight (22:00 to 07:00);
 * the zone's clock changes are the C library's business (tidings/tz.h),
 * so a window keeps its wall-clock times on the days the clocks move. No
 * HTTP, no Kafka, no database: the unit tests call it with fixed
 * instants. Any thread. */
#ifndef TIDINGS_NOTIFICATIONS_QUIET_H
#define TIDINGS_NOTIFICATIONS_QUIET_H

#include <jansson.h>
#include <stdint.h>
#include <time.h>

#include "tidings/tz.h"

typedef struct notif_quiet {
    int start_s, end_s;            /* seconds into the local day, different */
    char zone[TD_TZ_NAME_MAX + 1]; /* an IANA zone, td_tz_valid */
} notif_quiet_t;

/* Reads {start, end, timeZone}: times "HH:MM" (or "HH:MM:SS"), 00:00 to
 * 23:59:59, start different from end; timeZone a zone the system has. 0
 * and *q, or TD_EINVAL with the reason. */
int notif_quiet_parse(const json_t *v, notif_quiet_t *q, char *errstr, size_t errlen);

/* q as the API shows it: {start, end, timeZone} with times "HH:MM" (and
 * ":SS" when not 0). Caller owns it. */
json_t *notif_quiet_json(const notif_quiet_t *q);

/* When the Unix time now lies inside q's window (start included, end
 * not), the Unix time at which that window ends; else 0. */
int64_t notif_quiet_until(const notif_quiet_t *q, time_t now);

#endif
