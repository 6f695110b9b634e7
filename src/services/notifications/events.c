/* The notifications service's Kafka handlers. The rule consumer hands every
 * event type the domain knows (the rule table's and the kept facts') to
 * notif_apply, so a new rule needs no handler of its own. The live
 * consumer turns each NotificationCreatedEvent, whichever instance made it,
 * into a frame on this instance's streams of that user. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "notifications/notifications_service.h"
#include "tidings/json.h"
#include "tidings/log.h"

static int on_domain_event(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr,
                           size_t errlen)
{
    notif_ctx_t *c = ctx;
    (void)db; /* the same as c->notif.db, in the consumer's transaction */
    return notif_apply(&c->notif, ev, errstr, errlen);
}

size_t notif_handlers(td_handler_t *out, size_t max)
{
    const char *types[64];
    size_t cnt = notif_handled_types(types, TD_ARRAY_SIZE(types));
    if (cnt > max) cnt = max;
    for (size_t i = 0; i < cnt; i++) {
        out[i].type = types[i];
        out[i].fn = on_domain_event;
    }
    return cnt;
}

/* The live inbox only needs to absorb redeliveries of the last minutes:
 * prune it now and then so an instance that runs for months does not
 * grow it without bound. Its rows share td_inbox with the rule consumer's,
 * which must stay: only this topic's rows go. */
#define LIVE_PRUNE_EVERY 1000
#define LIVE_KEEP_MS     (10 * 60 * 1000)

static void prune_live_inbox(td_db_t *db, const char *topic)
{
    sqlite3_stmt *st =
        td_db_prepare(db, "DELETE FROM td_inbox WHERE topic = ? AND processed_ms < ?");
    sqlite3_bind_text(st, 1, topic, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, td_now_ms() - LIVE_KEEP_MS);
    td_db_run(db, st);
}

static int on_notification_created(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr,
                                   size_t errlen)
{
    notif_ctx_t *c = ctx;
    const char *user_id;
    int64_t seq;
    if (++c->live_seen % LIVE_PRUNE_EVERY == 0) prune_live_inbox(db, ev->topic);
    /* Never TD_EINVAL: every instance reads this topic, so a bad record
     * would be dead-lettered once per instance. (A record that is no
     * CloudEvent at all never gets here: the consumer dead-letters it.) */
    if (td_data_uuid(ev->data, "userId", &user_id, errstr, errlen) != 0 ||
        td_data_int(ev->data, "seq", &seq, errstr, errlen) != 0 || seq < 1) {
        td_log_event(TD_LOG_WARN, ev, "live: skipping a bad NotificationCreatedEvent: %s", errstr);
        return 0;
    }
    char *json = td_json_dumps(ev->data);
    notif_stream_push(c, user_id, seq, json);
    free(json);
    return 0;
}

const td_handler_t notif_live_handlers[] = {
    {"NotificationCreatedEvent", on_notification_created},
};
const size_t notif_live_handler_cnt = TD_ARRAY_SIZE(notif_live_handlers);
