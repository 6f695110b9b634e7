/* Local time in IANA zones from the system's zone database (tzdata, the
 * TZif files under TD_TZ_DIR), for what users set in their own zone
 * (notification quiet hours). The C library does the zone arithmetic:
 * nothing here knows a rule of any zone. Its only per-process zone is the
 * TZ environment variable, so every call here swaps TZ under one mutex
 * and puts it back; the logger's local time takes the same mutex
 * (td_tz_localtime), so no thread ever reads a swapped zone. Any thread. */
#ifndef TIDINGS_TZ_H
#define TIDINGS_TZ_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#define TD_TZ_DIR      "/usr/share/zoneinfo"
#define TD_TZ_NAME_MAX 64

/* True when zone is an IANA zone name ("Europe/Berlin", "UTC") whose TZif
 * file the system has. Names with "..", a leading '/', or characters other
 * than letters, digits, '/', '_', '-' and '+' are false. */
bool td_tz_valid(const char *zone);

/* The wall-clock time in zone at the Unix time t: *out (tm_gmtoff and
 * tm_isdst as the zone has them). 0, or TD_EINVAL for a zone that is not
 * td_tz_valid. */
int td_tz_local(const char *zone, time_t t, struct tm *out);

/* The first Unix time at or after not_before at which the wall clock in
 * zone shows the date and time of wall (tm_year, tm_mon, tm_mday,
 * tm_hour, tm_min, tm_sec; the rest ignored). A time the clocks skip
 * (spring forward) is reached when the clocks jump past it, at the
 * transition; a time shown twice (fall back) is its first showing not
 * before not_before. 0 and *out, or TD_EINVAL (bad zone), TD_ENOENT (no
 * such time at or after not_before). */
int td_tz_wall_to_utc(const char *zone, const struct tm *wall, time_t not_before, time_t *out);

/* localtime_r in the process's own zone, under the same mutex. */
void td_tz_localtime(time_t t, struct tm *out);

#endif
