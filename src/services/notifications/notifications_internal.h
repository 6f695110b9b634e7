/* What the files of the notifications domain share and nothing else
 * uses: a notification's draft, creating one notification (inbox.c) and
 * queueing a fan-out job (fanout.c). The contract for the rest of the
 * service is notifications.h. */
#ifndef TIDINGS_NOTIFICATIONS_INTERNAL_H
#define TIDINGS_NOTIFICATIONS_INTERNAL_H

#include <stdbool.h>

#include "notifications/notifications.h"

/* What one notification is made of; the same for every recipient. */
typedef struct notif_draft {
    const char *type;
    const char *title;
    const char *body;
    const char *data;        /* JSON object text */
    const td_event_t *cause; /* for the cause id and NotificationCreatedEvent's lineage */
    /* The same for every recipient, so made once (draft_ready): title and
     * body as JSON strings, quotes and escapes included. */
    char *title_js, *body_js;
    char thread[NOTIF_THREAD_LEN + 1]; /* notif_thread_of data */
    int64_t cause_ms;                  /* the cause's time (0 if it has none): the ids' */
} notif_draft_t;

/* Makes d's title_js, body_js, thread and cause_ms from its fields;
 * notif__draft_clear frees them. event_data, when not NULL, is the
 * object d->data was made from (draft_data): the thread is read from it
 * instead of parsing d->data again. */
void notif__draft_ready(notif_draft_t *d, const json_t *event_data);
void notif__draft_clear(notif_draft_t *d);

/* Creates d's notification for user_id inside the caller's transaction,
 * unless it exists already. *made says whether it did. */
int notif__create_one(notif_t *n, const notif_draft_t *d, const char *user_id, bool *made);

/* Queues d for the audience of rule: the recipients are chosen now, in
 * one statement, with muted users left out. */
int notif__queue_fanout(notif_t *n, const notif_rule_t *rule, const notif_draft_t *d,
                        const json_t *event_data);

#endif
