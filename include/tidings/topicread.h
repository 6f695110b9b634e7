/* Reading tidings topics from the outside, the one reader behind `tidings
 * events`, `tidings trace` and `tidings dlt` and the web service's event
 * store: a consumer with manual partition assignment (no consumer group
 * membership, no commits, so reading never disturbs the services), and
 * every record decoded as a CloudEvent or flagged with the reason it is not
 * one. Two ways to read:
 *  - at open (follow false): the topics are resolved against the cluster at
 *    once (a named topic that does not exist is an error), the high
 *    watermarks taken then are "now" for a live view and the end of history
 *    for a reader that stops when caught up;
 *  - following (follow true): open needs no cluster; td_topic_reader_refresh,
 *    called every few seconds, assigns from the beginning every partition of
 *    a wanted topic that appeared since (a topic a service creates later).
 * Single-threaded: one reader belongs to the thread that uses it (it may be
 * opened on another before that thread starts). */
#ifndef TIDINGS_TOPICREAD_H
#define TIDINGS_TOPICREAD_H

#include <stdbool.h>
#include <stddef.h>

#include "tidings/config.h"
#include "tidings/envelope.h"
#include "tidings/record.h"

typedef struct td_topic_reader td_topic_reader_t;

typedef struct td_topic_reader_opts {
    /* Short topic names ("orders", "orders.DLT"); the prefix is added. NULL
     * (cnt 0) = every SPEC topic and its .DLT (that exists on the cluster,
     * when not following). */
    const char *const *topics;
    size_t topic_cnt;
    bool from_beginning;  /* start at the oldest record; else at the end as of open */
    bool until_caught_up; /* td_topic_reader_next says TD_TOPIC_READER_DONE at the
                             watermarks taken at open (not with follow) */
    bool follow;          /* see the header's paragraph; implies from_beginning */
    const char *client;   /* "cli", "web": in the throwaway group id and the log lines */
    int fetch_wait_ms;    /* fetch.wait.max.ms unless cfg->fetch_wait_ms is set */
} td_topic_reader_opts_t;

/* One record as read: the record itself and, when it is a valid CloudEvent,
 * the parsed event; otherwise reason says why not. Both owned by the msg;
 * td_topic_reader_msg_clear frees them. */
typedef struct td_topic_reader_msg {
    td_record_t *rec;
    td_event_t *ev;    /* NULL when rec is not a valid CloudEvent */
    char reason[256];  /* why ev is NULL */
    const char *topic; /* short name (borrowed from the reader) */
} td_topic_reader_msg_t;

#define TD_TOPIC_READER_DONE 1 /* every partition reached its start watermark */

/* Makes the consumer and, when not following, checks the topics, takes the
 * watermarks and assigns every partition. NULL with errstr (broker
 * unreachable, unknown topic). cfg must outlive the reader. */
td_topic_reader_t *td_topic_reader_open(const td_config_t *cfg, const td_topic_reader_opts_t *opts,
                                        char *errstr, size_t errlen);
/* Following readers: reads the metadata and assigns, from the beginning,
 * the partitions of wanted topics not assigned yet. 0, or TD_EAGAIN with
 * errstr (metadata not read, or the assignment failed). */
int td_topic_reader_refresh(td_topic_reader_t *tr, char *errstr, size_t errlen);
/* Waits up to timeout_ms for the next record. 0 with *msg filled (clear it
 * with td_topic_reader_msg_clear), TD_EAGAIN when nothing came in time,
 * TD_TOPIC_READER_DONE when caught up (until_caught_up only), another
 * negative code with errstr on a fatal error (never when following: a
 * following reader logs errors and goes on). */
int td_topic_reader_next(td_topic_reader_t *tr, int timeout_ms, td_topic_reader_msg_t *msg,
                         char *errstr, size_t errlen);
/* Frees what msg holds (it may be reused afterwards). */
void td_topic_reader_msg_clear(td_topic_reader_msg_t *msg);
/* Number of partitions assigned and of topics read (wanted, when following). */
size_t td_topic_reader_partition_count(const td_topic_reader_t *tr);
size_t td_topic_reader_topic_count(const td_topic_reader_t *tr);
/* The short name of a full topic name: the prefix removed if it has it.
 * Borrowed from full. */
const char *td_topic_short(const td_config_t *cfg, const char *full);
/* The reader's consumer alone, for readers of their own (tidings/dlt.h):
 * a fresh group id "tidings-<client>-<uuid>", no commits, no offset store,
 * partition EOF events when eof, and the given fetch.wait.max.ms. Assign
 * partitions by hand. NULL with errstr. Any thread. */
struct rd_kafka_s;
struct rd_kafka_s *td__topic_reader_consumer(const td_config_t *cfg, const char *client,
                                             int fetch_wait_ms, bool eof, char *errstr,
                                             size_t errlen);
/* Closes the consumer and frees tr (NULL is fine). */
void td_topic_reader_close(td_topic_reader_t *tr);

#endif
