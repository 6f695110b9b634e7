/* Digests (SPEC section 2, digestMinutes): with N > 0 minutes, the first
 * push or email of a burst goes out at once and opens a window of N
 * minutes for that channel and target; what comes inside the window is
 * held and combined into one delivery at its end ("3 new notifications:
 * Order confirmed, Price drop: Kettle, ..."), linking to the inbox. The
 * combined delivery is one held row of the delivery queue (due at the
 * window's end, or at the end of quiet hours when that is later), whose
 * body is rewritten as members join, so it survives restarts. Inbox,
 * stream and webhooks are never digested. */
#ifndef TIDINGS_NOTIFICATIONS_DIGEST_H
#define TIDINGS_NOTIFICATIONS_DIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tidings/db.h"

#define NOTIF_DIGEST_MAX_MINUTES 1440
/* Titles listed in a digest's body; the rest are counted ("and 3 more"). */
#define NOTIF_DIGEST_LIST_MAX 10

extern const char notif_digest_schema[];

/* ---- pure --------------------------------------------------------------- */

/* What a push/email at now_ms does, given the end of the open window of
 * its channel and target (0 when none): false = send at once and open a
 * new window ending at *window_end_ms = now + minute_ms * minutes; true =
 * join the open window (*window_end_ms unchanged). minutes 0: never held. */
bool notif_digest_hold(int64_t now_ms, int64_t open_end_ms, int minutes, int64_t minute_ms,
                       int64_t *window_end_ms);
/* The title ("3 new notifications", "1 new notification") and body
 * ("Order confirmed, Price drop: Kettle, ... and 2 more") of a digest of
 * n titles, in the order given. Caller frees both. */
void notif_digest_text(const char *const *titles, size_t n, char **title, char **body);

/* ---- storage (inside the caller's transaction) ------------------------- */

/* The user's digestMinutes (0 when none). */
int notif_digest_minutes(td_db_t *db, const char *user_id);
/* The length of a digest "minute" in ms: 60000, or under
 * TIDINGS_TEST_HOOKS TIDINGS_TEST_DIGEST_MINUTE_MS. */
int64_t notif_digest_minute_ms(void);

typedef struct notif_digest {
    bool hold;             /* join the window (else send at once) */
    int64_t window_end_ms; /* the window's end */
    int64_t delivery_id;   /* the held digest row, 0 when none yet */
    char **titles;         /* hold: every member's title, this one last */
    size_t title_cnt;
} notif_digest_t;

/* Decides for one notification (title) to channel/target of user_id with
 * minutes > 0 and records it: a new window (members forgotten), or one
 * more member. 0 or TD_EIO. notif_digest_clear frees. */
int notif_digest_step(td_db_t *db, const char *user_id, const char *channel, const char *target_id,
                      const char *title, int minutes, notif_digest_t *d);
/* Records the held row that carries the window's digest. */
int notif_digest_set_delivery(td_db_t *db, const char *user_id, const char *channel,
                              const char *target_id, int64_t delivery_id);
void notif_digest_clear(notif_digest_t *d);

#endif
