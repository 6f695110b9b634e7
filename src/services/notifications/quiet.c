/* Quiet hours (see quiet.h). Which day's window holds now is decided on
 * the local wall clock; its end is that local date and time turned back
 * into an instant by td_tz_wall_to_utc, which knows what to do when the
 * clocks skip or repeat that time. Dates move by a civil-day step done in
 * UTC arithmetic (timegm), which no zone affects. */
#include "notifications/quiet.h"

#include <stdio.h>
#include <string.h>

#include "tidings/common.h"

static int parse_time(const char *s, int *out)
{
    unsigned h, m, sec = 0;
    char tail;
    size_t len = strlen(s);
    if (len != 5 && len != 8) return TD_EINVAL;
    if (s[2] != ':' || (len == 8 && s[5] != ':')) return TD_EINVAL;
    for (size_t i = 0; i < len; i++)
        if (i != 2 && i != 5 && (s[i] < '0' || s[i] > '9')) return TD_EINVAL;
    int n = len == 5 ? sscanf(s, "%2u:%2u%c", &h, &m, &tail)
                     : sscanf(s, "%2u:%2u:%2u%c", &h, &m, &sec, &tail);
    if (n != (len == 5 ? 2 : 3) || h > 23 || m > 59 || sec > 59) return TD_EINVAL;
    *out = (int)(h * 3600 + m * 60 + sec);
    return 0;
}

int notif_quiet_parse(const json_t *v, notif_quiet_t *q, char *errstr, size_t errlen)
{
    if (!json_is_object(v))
        return td_errf(errstr, errlen, TD_EINVAL,
                       "quietHours must be {start, end, timeZone} or null");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        if (strcmp(key, "start") && strcmp(key, "end") && strcmp(key, "timeZone"))
            return td_errf(errstr, errlen, TD_EINVAL, "unknown field '%.40s' in quietHours", key);
    }
    const char *start = json_string_value(json_object_get(v, "start"));
    const char *end = json_string_value(json_object_get(v, "end"));
    const char *zone = json_string_value(json_object_get(v, "timeZone"));
    if (!start || parse_time(start, &q->start_s) != 0)
        return td_errf(errstr, errlen, TD_EINVAL, "quietHours.start must be a time \"HH:MM\"");
    if (!end || parse_time(end, &q->end_s) != 0)
        return td_errf(errstr, errlen, TD_EINVAL, "quietHours.end must be a time \"HH:MM\"");
    if (q->start_s == q->end_s)
        return td_errf(errstr, errlen, TD_EINVAL, "quietHours.start and end must differ");
    if (!zone || !td_tz_valid(zone))
        return td_errf(errstr, errlen, TD_EINVAL,
                       "quietHours.timeZone must be an IANA time zone such as Europe/Berlin");
    snprintf(q->zone, sizeof(q->zone), "%s", zone);
    return 0;
}

static json_t *time_json(int s)
{
    return s % 60 ? json_sprintf("%02d:%02d:%02d", s / 3600, s / 60 % 60, s % 60)
                  : json_sprintf("%02d:%02d", s / 3600, s / 60 % 60);
}

json_t *notif_quiet_json(const notif_quiet_t *q)
{
    return json_pack("{s:o, s:o, s:s}", "start", time_json(q->start_s), "end", time_json(q->end_s),
                     "timeZone", q->zone);
}

int64_t notif_quiet_until(const notif_quiet_t *q, time_t now)
{
    struct tm local;
    if (td_tz_local(q->zone, now, &local) != 0) return 0;
    int m = local.tm_hour * 3600 + local.tm_min * 60 + local.tm_sec;
    bool crosses = q->start_s > q->end_s;
    bool inside = crosses ? (m >= q->start_s || m < q->end_s) : (m >= q->start_s && m < q->end_s);
    if (!inside) return 0;

    /* The window that holds now ends today, or tomorrow when it began
     * this evening and crosses midnight. */
    struct tm day = {0};
    day.tm_year = local.tm_year;
    day.tm_mon = local.tm_mon;
    day.tm_mday = local.tm_mday + (crosses && m >= q->start_s ? 1 : 0);
    day.tm_hour = 12;
    time_t noon = timegm(&day);
    gmtime_r(&noon, &day);
    day.tm_hour = q->end_s / 3600;
    day.tm_min = q->end_s / 60 % 60;
    day.tm_sec = q->end_s % 60;
    time_t end;
    if (td_tz_wall_to_utc(q->zone, &day, now + 1, &end) != 0) return 0;
    return (int64_t)end;
}
