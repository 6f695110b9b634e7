/* The notifications domain: the rule table that turns domain events into
 * notifications (one entry per event type: who is notified, title, body),
 * the state kept from earlier events so texts are human sentences
 * (product titles, user names), the inbox (exactly one notification per
 * causing ce_id and user, seq per user from 1 without gaps), preferences
 * (muted types, newProducts) and product watches. Events that concern many
 * users fan out through a job table worked off in chunks, so a product
 * with 10,000 watchers never holds the consumer or the database for long.
 * No HTTP and no Kafka here: routes.c, events.c and stream.c call these
 * functions, and the unit tests call them on an in-memory database. Every
 * function may be called from any thread (the database's mutex serialises
 * them). */
#ifndef TIDINGS_NOTIFICATIONS_H
#define TIDINGS_NOTIFICATIONS_H

#include <jansson.h>

#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/envelope.h"
#include "notifications/quiet.h"

/* The notifications database's schema, for td_service_db / td_db_open. */
extern const td_migration_t notif_migrations[];
extern const size_t notif_migration_cnt;

/* ---- the rule table ------------------------------------------------------ */

/* Who a rule notifies. */
typedef enum notif_audience {
    NOTIF_TO_USER,         /* the user named by data.userId */
    NOTIF_TO_NEW_PRODUCTS, /* every user with newProducts on */
    NOTIF_TO_WATCHERS,     /* every user watching data.productId */
} notif_audience_t;

/* One row of SPEC section 2's table. Templates take {field} from the
 * event data (money fields printed by notif_money_text: "2,258.00"), plus
 * {product} (the title of data.productId as last seen on the products
 * topic) and {reasonText} (data.reason for people); a [bracketed part] is
 * left out when a field inside it is absent (optional event fields). */
typedef struct notif_rule {
    td_ev_t ev;                       /* the event type (tidings/catalog.h) */
    bool (*when)(const json_t *data); /* NULL = always; the first entry of a
                                        type that holds wins, so an event
                                        makes at most one notification per user */
    notif_audience_t to;
    /* The {fields} the templates name are required fields of the type in
     * the catalogue (tidings/catalog.h), which the consumer checked. */
    const char *title;
    const char *body;
    /* How a Web Push of it is sent (RFC 8030 sections 5.2 and 5.3): its
     * Urgency ("very-low", "low", "normal", "high") and how long the push
     * service keeps it for an offline device, in seconds: a security
     * alert or an order's outcome is worth waking a phone for and keeping
     * a day; a new product is not urgent. */
    const char *urgency;
    int ttl_s;
} notif_rule_t;

extern const notif_rule_t notif_rules[];
extern const size_t notif_rule_cnt;

/* The rule an event of type with data triggers, or NULL (none applies,
 * e.g. an update that neither lowers the price nor restocks). */
const notif_rule_t *notif_rule_match(const char *type, const json_t *data);
/* True when type has an entry in the rule table (what may be muted). */
bool notif_type_known(const char *type);
/* The event types the service consumes (the rule table's and those whose
 * facts it keeps), each once, into out (at most max); returns the count. */
size_t notif_handled_types(const char **out, size_t max);
/* The Web Push Urgency and TTL of notifications of type (the first rule of
 * the type; "normal" and a day for a type without one). */
void notif_push_hints(const char *type, const char **urgency, int *ttl_s);

/* ---- threads ----------------------------------------------------------- */

/* The longest thread name: "product:" and a UUID. */
#define NOTIF_THREAD_LEN 44

/* The thread of a notification whose data (the ids it is about, as in
 * the notification object) is data: "order:<orderId>" when it names an
 * order, else "product:<productId>" when it names a product, else
 * "account". buf holds NOTIF_THREAD_LEN + 1. */
const char *notif_thread_of(const json_t *data, char *buf);

/* Fills tpl from vars (see notif_rule_t). Caller frees. NULL with errstr
 * when a required field is missing (a bug in a template or the check). */
char *notif_render(const char *tpl, const json_t *vars, char *errstr, size_t errlen);
/* Money as people read it in a sentence, one format in every notification
 * text: thousands grouped by commas and always two decimals (225800 ->
 * "2,258.00", 1999 -> "19.99", 0 -> "0.00"). buf >= 32. */
void notif_money_text(int64_t cents, char *buf, size_t len);

/* ---- applying events ------------------------------------------------------ */

/* A notification just made, as channels see it (all borrowed). */
typedef struct notif_made {
    const char *id;
    const char *user_id;
    const char *type;
    int64_t seq;
    const char *thread;     /* notif_thread_of its data */
    const char *replaces;   /* the id of the notification of the thread it supersedes, or NULL */
    const char *json;       /* the notification object (SPEC section 2) as text */
    const td_record_t *rec; /* its NotificationCreatedEvent, what a failed delivery
                               dead-letters */
} notif_made_t;

/* A channel beyond the inbox and the live stream (Web Push, webhooks):
 * called for every new notification inside the transaction that creates
 * it, so a channel can queue its deliveries atomically with it. 0, or an
 * error that rolls the whole transaction back (and the event or chunk is
 * retried). */
typedef int (*notif_deliver_fn)(void *arg, td_db_t *db, const notif_made_t *m);

typedef struct notif {
    td_db_t *db;
    const td_config_t *cfg;   /* topic prefix for the outbox */
    int fanout_chunk;         /* recipients per fan-out transaction, 0 = 250 */
    notif_deliver_fn deliver; /* NULL = inbox and stream only */
    void *deliver_arg;
    /* Called inside the transaction that queued fan-out work; the worker
     * it wakes then waits on the database lock until that commits. */
    void (*wake)(void *arg);
    void *wake_arg;
    /* The local path: called once a new notification is committed, on the
     * committing thread, with its user, seq and JSON text (borrowed for
     * the call): this instance's live streams get it at once, without the
     * round trip through Kafka. NULL = none. */
    void (*local)(void *arg, const char *user_id, int64_t seq, const char *json);
    void *local_arg;
    /* This instance, on the tidings_instance header of every
     * NotificationCreatedEvent it writes, so that its own live consumer
     * skips what the local path delivered already. */
    const char *instance;
} notif_t;

/* The header naming the instance that wrote a NotificationCreatedEvent. */
#define NOTIF_INSTANCE_HEADER "tidings_instance"

/* Applies one consumed event inside the caller's transaction (the
 * consumer's): keeps the state it needs (users, products), and creates the
 * notification of the matching rule for one user, or queues a fan-out job
 * whose recipients are fixed now (watchers / newProducts users, muted ones
 * left out). 0; TD_EINVAL with the reason for bad event data; TD_EIO. */
int notif_apply(notif_t *n, const td_event_t *ev, char *errstr, size_t errlen);

/* Works off one chunk of the oldest fan-out job in its own transaction.
 * *created gets the notifications made. 1 when work remains, 0 when none,
 * or a negative error. Any thread; the service runs it on a worker. */
int notif_fanout_step(notif_t *n, size_t *created);
/* Recipients still waiting in fan-out jobs. */
int64_t notif_fanout_pending(td_db_t *db);

/* ---- the inbox ------------------------------------------------------------ */

#define NOTIF_PAGE_DEFAULT 50
#define NOTIF_PAGE_MAX     500

/* Makes one list item from the row st, its columns starting at first. */
typedef json_t *(*notif_item_fn)(sqlite3_stmt *st, int first);

/* One page of one user's rows, newest first, for every list of this
 * service (inbox, watches, webhooks). sql binds ?1 = user_id, ?2 = before
 * (0 = from the newest) and ?3 = the row limit, and orders by the column
 * cursor_col, descending; item makes each entry from the columns from
 * first on. limit <= 0 is the default, more than NOTIF_PAGE_MAX is the
 * maximum. Returns the items; *next gets the cursor of the last one as
 * text when more rows exist, else JSON null. The caller holds the lock. */
json_t *notif__page(td_db_t *db, const char *sql, const char *user_id, int64_t before, int limit,
                    int cursor_col, notif_item_fn item, int first, json_t **next);
/* The same under td_db_lock, as the answer {"<key>": [items], "next": ...}. */
json_t *notif__page_answer(td_db_t *db, const char *key, const char *sql, const char *user_id,
                           int64_t before, int limit, notif_item_fn item);

/* One page of user's notifications, newest first, older than cursor
 * before_seq (0 = from the newest): *out = {notifications:[...], unread,
 * next} (next = the seq to pass on as text, or null). With collapse only
 * the latest notification of each thread is listed, and unread counts
 * those of them that are unread (what the user sees). Caller owns *out. */
int notif_list(td_db_t *db, const char *user_id, int64_t before_seq, int limit, bool collapse,
               json_t **out);
/* One of user's notifications (not deleted) with its deliveries: what
 * became of each push, webhook and email queued for it (td_delivery_status,
 * channel named as in the preferences: push, webhook, email). The
 * delivery queue's table must exist (td_delivery_init). TD_ENOENT when it
 * is not user's. Caller owns *out. */
int notif_get(td_db_t *db, const char *user_id, const char *id, json_t **out);
/* Marks one read (keeps the first readAt). *out = the notification.
 * TD_ENOENT if it is not user's (or not at all). */
int notif_mark_read(td_db_t *db, const char *user_id, const char *id, json_t **out);
/* Marks every unread one of user's read; *count gets how many. */
int notif_mark_all_read(td_db_t *db, const char *user_id, int64_t *count);
/* Deletes one (a tombstone stays so the event can never recreate it and
 * seq keeps its meaning). TD_ENOENT if it is not user's. */
int notif_delete(td_db_t *db, const char *user_id, const char *id);
/* user's notifications with seq > after_seq in seq order (deleted ones
 * left out), at most limit: a JSON array, caller owns it. For replay. */
int notif_after(td_db_t *db, const char *user_id, int64_t after_seq, int limit, json_t **out);
/* The highest seq user has (0 when none). */
int notif_last_seq(td_db_t *db, const char *user_id, int64_t *out);
/* Retention (a td_prune_fn): deletes notifications made before cutoff_ms,
 * keeping each user's latest as a tombstone (retention.c). */
int notif_prune(td_db_t *db, int64_t cutoff_ms, int64_t *deleted);

/* ---- preferences and watches --------------------------------------------- */

/* The outbound channels a user can switch and mute types on (SPEC
 * section 2 `channels`), with their defaults. The inbox and the stream
 * are not among them: they always get every notification made. */
#define NOTIF_CHANNEL_PUSH    "push"
#define NOTIF_CHANNEL_WEBHOOK "webhook"
#define NOTIF_CHANNEL_EMAIL   "email"

typedef struct notif_channel {
    const char *name;
    bool enabled_by_default;
} notif_channel_t;

extern const notif_channel_t notif_channels[];
extern const size_t notif_channel_cnt;

/* True when user wants notifications of type on channel (one of
 * notif_channels): the channel is enabled and type not muted on it. The
 * caller holds the lock or is inside a transaction. */
bool notif_channel_wants(td_db_t *db, const char *user_id, const char *channel, const char *type);
/* Switches channel on or off for user, inside the caller's transaction
 * (the email unsubscribe link). 0 or TD_EIO. */
int notif__channel_set_enabled(td_db_t *db, const char *user_id, const char *channel, bool enabled);

/* user's quiet hours into *q: false when they have none. The caller
 * holds the lock or is inside a transaction. */
bool notif_quiet_of(td_db_t *db, const char *user_id, notif_quiet_t *q);

/* {muted:[...], newProducts, channels:{push:{enabled, muted:[...]},
 * webhook:{...}, email:{...}}, quietHours} of user (defaults: nothing
 * muted, newProducts off, push and webhook enabled, email disabled,
 * quietHours null). */
int notif_prefs_get(td_db_t *db, const char *user_id, json_t **out);
/* Applies a PUT body: muted (an array of rule-table event types, replaced
 * as a whole), newProducts (a bool) and/or channels (an object of
 * notif_channels names, each {enabled: bool, muted: [type...]}, every
 * part optional) and/or quietHours (notif_quiet_parse, or null for none);
 * whatever is left out keeps its value. TD_EINVAL with
 * the reason for anything else, and then nothing changes; *out = the
 * result. */
int notif_prefs_put(td_db_t *db, const char *user_id, const json_t *body, json_t **out,
                    char *errstr, size_t errlen);

/* Watches product_id for user. *created is false when it was watched
 * already (nothing changes). TD_ENOENT for a product never seen on the
 * products topic or deleted. *out = {productId, title, price, quantity,
 * createdAt}. */
int notif_watch_add(td_db_t *db, const char *user_id, const char *product_id, bool *created,
                    json_t **out);
/* {watches:[...], next}, newest first, paged by the cursor before (0 =
 * from the newest). */
int notif_watch_list(td_db_t *db, const char *user_id, int64_t before, int limit, json_t **out);
/* TD_ENOENT when user did not watch it. */
int notif_watch_remove(td_db_t *db, const char *user_id, const char *product_id);

#endif
