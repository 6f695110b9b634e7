/* The bus: everything between a service and Kafka.
 *
 *  - td_kafka_conf: the librdkafka configuration every client shares.
 *  - The outbox: td_outbox_add writes an event (or any record) into the
 *    outbox table in the caller's transaction. A relay thread publishes the
 *    rows in id order with an idempotent producer (enable.idempotence=true,
 *    acks=all, murmur2_random) and deletes a row only when its delivery
 *    report says persisted. A crash between commit and publish publishes
 *    later; a produce error retries; nothing is lost.
 *  - The consumer with its inbox: a consumer group per service;
 *    enable.auto.offset.store=false. It takes what a poll hands out (up to
 *    TD_CONSUMER_BATCH records) and runs the batch in one unit of the
 *    service's database: each record in a savepoint of its own, its ce_id
 *    inserted into the inbox with its effects, so a redelivered event has
 *    no second effect; the offsets are stored only after the unit commits.
 *    Before any handler it checks each record: a record that is not a
 *    valid CloudEvent, a catalogued type on another topic, or data that
 *    does not have the type's shape (tidings/catalog.h) goes to
 *    <topic>.DLT (through the outbox, in the same unit) with the reason
 *    headers of SPEC section 3; so does an event whose handler reports a
 *    permanent error, alone, its savepoint rolled back. A transient error
 *    rolls the whole batch back and retries it without moving an offset.
 *    Event types without a handler are skipped: topics are shared.
 *  - td_topics_ensure: creates missing topics on a real cluster. */
#ifndef TIDINGS_BUS_H
#define TIDINGS_BUS_H

#include <librdkafka/rdkafka.h>

#include "tidings/catalog.h"
#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/envelope.h"

/* A librdkafka configuration with bootstrap.servers and the settings every
 * tidings client shares: our defaults (client.id = tidings-<service>,
 * reconnect backoff), then the operator's (td_kafka_user_settings), then
 * cfg->brokers; logging through td_log with secret values scrubbed. The
 * caller sets what its own correctness needs after this, so those win.
 * NULL with errstr on a bad setting. Caller owns it. Any thread. */
rd_kafka_conf_t *td_kafka_conf(const td_config_t *cfg, char *errstr, size_t errlen);
/* Applies the operator's client settings to conf (SPEC section 1): the
 * property=value lines of the file TIDINGS_KAFKA_CONFIG names (kcat -F
 * format, # comments), then every TIDINGS_KAFKA_<PROPERTY> variable, the
 * name lower-cased with '_' read as '.' (TIDINGS_KAFKA_SASL_USERNAME is
 * sasl.username). bootstrap.servers (TIDINGS_BROKERS) and
 * transactional.id are refused. TD_EINVAL with errstr naming the variable
 * or file line and the property; a secret value is never in errstr, and is
 * scrubbed from librdkafka's log lines from then on. */
int td_kafka_user_settings(rd_kafka_conf_t *conf, char *errstr, size_t errlen);
/* td_kafka_user_settings on a scratch configuration, for a process that
 * makes no client of its own but must refuse bad settings (`tidings
 * broker`). *plaintext (may be NULL) is set to whether security.protocol
 * stays plaintext, the only protocol the embedded broker speaks. */
int td_kafka_user_settings_check(bool *plaintext, char *errstr, size_t errlen);
/* True for a property whose value is a secret: any name with password,
 * secret, private, token or credential in it, ssl.key.pem and
 * sasl.oauthbearer.config. */
bool td_kafka_secret_property(const char *name);
/* True when cfg's brokers are librdkafka's mock cluster (the embedded
 * broker, or any program's rd_kafka_mock_cluster), told by its cluster id;
 * false when they are not or do not answer within timeout_ms. */
bool td_kafka_is_mock(const td_config_t *cfg, int timeout_ms);
/* Sets one property or returns TD_EINVAL with errstr. */
int td_kafka_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                 size_t errlen);
/* Records a consumer takes into one batch (one unit) at most. Large on
 * purpose: a commit writes every page the batch dirtied, and inserts keyed
 * by user or by a random event id dirty about a page each, so a bigger
 * batch shares more pages (at 512 the notifications service wrote twice
 * the WAL bytes per event that it writes at 4096). A batch is only what a
 * poll already fetched, so at a steady rate batches stay small. */
#define TD_CONSUMER_BATCH 4096

/* The header of a redriven dead letter: its DLT-REF (SPEC section 3). */
#define TD_REDRIVEN_FROM "tidings_redriven_from"

/* The outcome an inbox row remembers. */
#define TD_INBOX_HANDLED       0
#define TD_INBOX_DEAD_LETTERED 1

/* A td_record_t copy of a consumed message (headers included). */
td_record_t *td_record_from_kafka(const rd_kafka_message_t *msg);

/* ---- outbox ------------------------------------------------------------ */

/* Adds ev for topic_short ("orders"; the prefix is added) to the outbox.
 * Must be called inside a td_db_begin transaction; ev stays the caller's.
 * 0 or TD_EIO. */
int td_outbox_add(td_db_t *db, const td_config_t *cfg, const char *topic_short,
                  const td_event_t *ev);
/* Adds a raw record (its topic is the full name). Same rules. */
int td_outbox_add_record(td_db_t *db, const td_record_t *rec);
/* Rows waiting to be published. Takes the lock. */
int64_t td_outbox_backlog(td_db_t *db);

typedef struct td_relay td_relay_t;

/* Starts the relay thread for db with its own idempotent producer. It
 * publishes whatever the outbox holds now and wakes on every commit that
 * added rows. NULL with errstr if the producer cannot be made. */
td_relay_t *td_relay_start(const td_config_t *cfg, td_db_t *db, char *errstr, size_t errlen);
/* Stops the relay: publishes what is in the outbox, waiting up to
 * timeout_ms for delivery, then destroys the producer. Rows not confirmed
 * stay in the outbox for the next start. */
void td_relay_stop(td_relay_t *relay, int timeout_ms);
/* True while the producer has a connection to at least one broker. */
bool td_relay_connected(td_relay_t *relay);
/* Wakes the relay now (tests; commits wake it anyway). */
void td_relay_kick(td_relay_t *relay);
/* Blocks until the outbox is empty or timeout_ms passes. 0 or TD_ETIMEDOUT. */
int td_relay_drain(td_relay_t *relay, int timeout_ms);

/* ---- consumer + inbox -------------------------------------------------- */

/* A handler runs inside the consumer's unit on db (it may read and write
 * the service's tables and call td_outbox_add); ev is borrowed for the
 * call, its data already checked against the catalogue. Return:
 *   0           done; the inbox row, the effects and the outbox rows commit
 *   TD_EINVAL   permanent: the event is bad (missing field, ...): rolled
 *               back, then written to <topic>.DLT with errstr as the reason
 *   TD_EAGAIN   transient (or any other error): rolled back, retried after
 *               a pause without moving the offset. */
typedef int (*td_handler_fn)(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr,
                             size_t errlen);

/* A handler of one event type: a catalogue type by ev, or any ce_type by
 * type (which wins when set; tests use types outside the catalogue). */
typedef struct td_handler {
    td_ev_t ev;
    td_handler_fn fn;
    const char *type;
} td_handler_t;

typedef struct td_consumer_opts {
    const char *group;         /* consumer group id, e.g. "tidings-orders" */
    const char *const *topics; /* short names, e.g. {"reservations","payments"} */
    size_t topic_cnt;
    const td_handler_t *handlers;
    size_t handler_cnt;
    void *ctx;                /* passed to the handlers */
    td_db_t *db;              /* the service's db: inbox and transactions */
    const char *offset_reset; /* NULL = "earliest" */
    /* No inbox and no unit: handlers run with db NULL and must be
     * idempotent by themselves (a redelivered record runs again); records
     * that are not valid CloudEvents are still dead-lettered through db
     * (which may then not be NULL), once. */
    bool stateless;
    /* Records whose header skip_header holds exactly skip_value are skipped
     * before they are parsed (an instance's own records on a topic it also
     * reads). NULL = none. Copied. */
    const char *skip_header;
    const char *skip_value;
    /* Records in one batch at most: 0 (or more) = TD_CONSUMER_BATCH. */
    size_t batch_max;
} td_consumer_opts_t;

typedef struct td_consumer td_consumer_t;

/* Subscribes and starts the consumer thread. NULL with errstr on failure. */
/* Retention of the inbox (a td_prune_fn; a consumer with a database
 * registers it with TIDINGS_INBOX_RETENTION_MS). */
int td_inbox_prune(td_db_t *db, int64_t cutoff_ms, int64_t *deleted);
td_consumer_t *td_consumer_start(const td_config_t *cfg, const td_consumer_opts_t *opts,
                                 char *errstr, size_t errlen);
/* Stops the thread after the batch in hand (or in the middle of retrying
 * it, with its offsets not stored), commits stored offsets and closes the
 * consumer (leaving the group). */
void td_consumer_stop(td_consumer_t *cons);
/* True while the consumer has a connection to at least one broker. */
bool td_consumer_connected(td_consumer_t *cons);
/* Records fully processed (handled, skipped or dead-lettered) so far. */
int64_t td_consumer_processed(td_consumer_t *cons);
/* Total lag over assigned partitions (high watermark - position), -1 if
 * unknown. */
int64_t td_consumer_lag(td_consumer_t *cons);
/* True while the group has assigned this consumer at least one partition
 * (false before the first assignment and during an eager rebalance):
 * from then on records produced reach it. Any thread. */
bool td_consumer_assigned(td_consumer_t *cons);

/* ---- topics ------------------------------------------------------------ */

/* Creates each SPEC topic and its .DLT that does not exist yet (Admin
 * CreateTopics with cfg->partitions, replication min(cfg->replication or 3,
 * brokers), retention.ms, min.insync.replicas=2 from replication 3 on) and
 * waits until they are in the metadata. Existing topics are left alone; one
 * with fewer partitions or another retention.ms than configured is logged
 * as a warning naming both. A broker that does not support CreateTopics
 * (the embedded one, whose topics `tidings broker` made) is not an error.
 * 0; TD_EINVAL (a bad setting), TD_EIO (Kafka refused to create a topic),
 * TD_EAGAIN (Kafka refused the credentials) or TD_ETIMEDOUT (unreachable,
 * or a transient error such as a controller moving), each with errstr.
 * Any thread. */
int td_topics_ensure(const td_config_t *cfg, char *errstr, size_t errlen);
/* How long td_topics_ensure waits for a first answer from Kafka before it
 * returns TD_ETIMEDOUT (or TD_EAGAIN for refused credentials). */
#define TD_TOPICS_CONNECT_WAIT_MS 3000

#endif
