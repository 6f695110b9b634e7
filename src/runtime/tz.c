/* IANA zones through the C library (see tidings/tz.h). A zone is applied
 * by setting TZ to ":<zone>" and calling tzset(), under zone_mu, and TZ is
 * put back before the mutex is released. The zone database's rules are
 * the C library's: this file only checks names, and turns a wall time
 * into an instant by asking mktime for both readings of DST and checking
 * each against localtime_r, so gaps and repeated hours come out as the
 * header says without knowing when any zone changes its clocks. */
#include "tidings/tz.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/common.h"

static pthread_mutex_t zone_mu = PTHREAD_MUTEX_INITIALIZER;

bool td_tz_valid(const char *zone)
{
    size_t len = zone ? strlen(zone) : 0;
    if (len == 0 || len > TD_TZ_NAME_MAX || zone[0] == '/' || strstr(zone, "..")) return false;
    if (strspn(zone, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789/_-+") != len)
        return false;
    char path[sizeof(TD_TZ_DIR) + TD_TZ_NAME_MAX + 2];
    snprintf(path, sizeof(path), "%s/%s", TD_TZ_DIR, zone);
    FILE *f = fopen(path, "rb");
    if (!f) return false;
    char magic[4];
    bool ok = fread(magic, 1, 4, f) == 4 && memcmp(magic, "TZif", 4) == 0;
    fclose(f);
    return ok;
}

/* Holds zone_mu with TZ set to zone; zone_leave puts TZ back. */
typedef struct zone_saved {
    char *tz; /* the previous TZ, NULL when it was unset */
} zone_saved_t;

static void zone_enter(const char *zone, zone_saved_t *saved)
{
    pthread_mutex_lock(&zone_mu);
    const char *old = getenv("TZ");
    saved->tz = old ? td_strdup(old) : NULL;
    char tz[TD_TZ_NAME_MAX + 2];
    snprintf(tz, sizeof(tz), ":%s", zone);
    setenv("TZ", tz, 1);
    tzset();
}

static void zone_leave(zone_saved_t *saved)
{
    if (saved->tz)
        setenv("TZ", saved->tz, 1);
    else
        unsetenv("TZ");
    tzset();
    free(saved->tz);
    pthread_mutex_unlock(&zone_mu);
}

int td_tz_local(const char *zone, time_t t, struct tm *out)
{
    if (!td_tz_valid(zone)) return TD_EINVAL;
    zone_saved_t saved;
    zone_enter(zone, &saved);
    localtime_r(&t, out);
    zone_leave(&saved);
    return 0;
}

void td_tz_localtime(time_t t, struct tm *out)
{
    pthread_mutex_lock(&zone_mu);
    localtime_r(&t, out);
    pthread_mutex_unlock(&zone_mu);
}

/* wall's fields compared as one number: <0, 0, >0. */
static int wall_cmp(const struct tm *a, const struct tm *b)
{
    const int fa[] = {a->tm_year, a->tm_mon, a->tm_mday, a->tm_hour, a->tm_min, a->tm_sec};
    const int fb[] = {b->tm_year, b->tm_mon, b->tm_mday, b->tm_hour, b->tm_min, b->tm_sec};
    for (size_t i = 0; i < TD_ARRAY_SIZE(fa); i++)
        if (fa[i] != fb[i]) return fa[i] < fb[i] ? -1 : 1;
    return 0;
}

/* mktime of wall read with DST isdst (0 or 1), caller in the zone. */
static time_t make(const struct tm *wall, int isdst)
{
    struct tm tm = {0};
    tm.tm_year = wall->tm_year;
    tm.tm_mon = wall->tm_mon;
    tm.tm_mday = wall->tm_mday;
    tm.tm_hour = wall->tm_hour;
    tm.tm_min = wall->tm_min;
    tm.tm_sec = wall->tm_sec;
    tm.tm_isdst = isdst;
    return mktime(&tm);
}

int td_tz_wall_to_utc(const char *zone, const struct tm *wall, time_t not_before, time_t *out)
{
    if (!td_tz_valid(zone)) return TD_EINVAL;
    zone_saved_t saved;
    zone_enter(zone, &saved);
    /* The two readings of DST; those the clock really shows are
     * candidates (both when the hour repeats, one on an ordinary day). */
    time_t cand[2] = {make(wall, 0), make(wall, 1)};
    bool found = false;
    time_t best = 0;
    for (int i = 0; i < 2; i++) {
        struct tm back;
        if (cand[i] == (time_t)-1) continue;
        localtime_r(&cand[i], &back);
        if (wall_cmp(&back, wall) == 0 && cand[i] >= not_before && (!found || cand[i] < best)) {
            best = cand[i];
            found = true;
        }
    }
    if (!found && cand[0] != (time_t)-1 && cand[1] != (time_t)-1) {
        /* Not shown at all: a gap. The clocks jump past it at the first
         * second whose wall time is later; between the two readings the
         * wall time only grows, so a bisection finds it. */
        time_t lo = cand[0] < cand[1] ? cand[0] : cand[1],
               hi = cand[0] < cand[1] ? cand[1] : cand[0];
        struct tm at;
        localtime_r(&hi, &at);
        if (wall_cmp(&at, wall) > 0) {
            while (hi - lo > 1) {
                time_t mid = lo + (hi - lo) / 2;
                localtime_r(&mid, &at);
                if (wall_cmp(&at, wall) > 0)
                    hi = mid;
                else
                    lo = mid;
            }
            if (hi >= not_before) {
                best = hi;
                found = true;
            }
        }
    }
    zone_leave(&saved);
    if (!found) return TD_ENOENT;
    *out = best;
    return 0;
}
