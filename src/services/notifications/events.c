/* The notifications service's Kafka handlers. The rule consumer hands every
 * event type the domain knows (the rule table's and the kept facts') to
 * notif_apply, so a new rule needs no handler of its own. The live
 * consumer turns each NotificationCreatedEvent, whichever instance made it,
 * into a frame on this instance's streams of that user. */
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
        out[i] = (td_handler_t){.type = types[i], .fn = on_domain_event};
    }
    return cnt;
}

/* The live consumer: stateless (no inbox, no transaction). A stream's seq
 * makes a redelivered frame harmless (the hub drops ids it sent), and what
 * this instance committed reached its streams by the local path already,
 * so its own records are skipped. */
static int on_notification_created(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr,
                                   size_t errlen)
{
    notif_ctx_t *c = ctx;
    (void)db;
    (void)errstr;
    (void)errlen;
    const char *origin = td_event_header(ev, NOTIF_INSTANCE_HEADER);
    if (origin && c->notif.instance && !strcmp(origin, c->notif.instance)) return 0;
    /* The consumer checked the notification's shape (the catalogue). */
    const char *user_id = json_string_value(json_object_get(ev->data, "userId"));
    int64_t seq = json_integer_value(json_object_get(ev->data, "seq"));
    c->live_seen++;
    char *json = td_json_dumps(ev->data);
    notif_stream_push(c, user_id, seq, json);
    free(json);
    return 0;
}

const td_handler_t notif_live_handlers[] = {
    {.ev = TD_EV_NOTIFICATION_CREATED, .fn = on_notification_created},
};
const size_t notif_live_handler_cnt = TD_ARRAY_SIZE(notif_live_handlers);
