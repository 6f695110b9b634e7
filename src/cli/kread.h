/* Reading tidings topics from the outside, for `tidings events` and
 * `tidings trace`: a consumer with manual partition assignment (no consumer
 * group membership, no commits, so reading never disturbs the services),
 * high watermarks taken at the start (to know when history is caught up, or
 * where "now" is), and every record decoded as a CloudEvent or flagged with
 * the reason it is not one. Single-threaded: one reader belongs to the
 * thread that opened it. */
#ifndef TIDINGS_CLI_KREAD_H
#define TIDINGS_CLI_KREAD_H

#include "tidings/config.h"
#include "tidings/envelope.h"
#include "tidings/record.h"

typedef struct kread kread_t;

typedef struct kread_opts {
    /* Short topic names ("orders", "orders.DLT"); the prefix is added. NULL
     * (cnt 0) = every SPEC topic and its .DLT that exists on the cluster. A
     * named topic that does not exist is an error. */
    const char *const *topics;
    size_t topic_cnt;
    bool from_beginning;  /* start at the oldest record; else at the end as of open */
    bool until_caught_up; /* kread_next says KREAD_DONE at the watermarks taken at open */
} kread_opts_t;

/* One record as read: the record itself and, when it is a valid CloudEvent,
 * the parsed event; otherwise reason says why not. Both owned by the msg;
 * kread_msg_clear frees them. */
typedef struct kread_msg {
    td_record_t *rec;
    td_event_t *ev;    /* NULL when rec is not a valid CloudEvent */
    char reason[256];  /* why ev is NULL */
    const char *topic; /* short name (borrowed from the reader) */
} kread_msg_t;

#define KREAD_DONE 1 /* kread_next: every partition reached its start watermark */

/* Connects, checks the topics, takes the watermarks and assigns every
 * partition. NULL with errstr (broker unreachable, unknown topic). cfg must
 * outlive the reader. */
kread_t *kread_open(const td_config_t *cfg, const kread_opts_t *opts, char *errstr, size_t errlen);
/* Waits up to timeout_ms for the next record. 0 with *msg filled (clear it
 * with kread_msg_clear), TD_EAGAIN when nothing came in time, KREAD_DONE
 * when caught up (until_caught_up only), another negative code with errstr
 * on a fatal error. */
int kread_next(kread_t *kr, int timeout_ms, kread_msg_t *msg, char *errstr, size_t errlen);
/* Frees what msg holds (it may be reused afterwards). */
void kread_msg_clear(kread_msg_t *msg);
/* Number of partitions assigned and of topics read. */
size_t kread_partition_count(const kread_t *kr);
size_t kread_topic_count(const kread_t *kr);
/* The short name of a full topic name: the prefix removed if it has it.
 * Borrowed from full. */
const char *kread_short_topic(const td_config_t *cfg, const char *full);
void kread_close(kread_t *kr);

/* A printable copy of len bytes: valid UTF-8 is kept, invalid bytes and
 * control characters become \xNN (or \n, \t), so that any record prints on
 * one line and is valid JSON string content. max (0 = no limit) truncates
 * with "...". Caller frees. */
char *kread_printable(const void *p, size_t len, size_t max);

/* Installs SIGINT/SIGTERM handlers that set a flag (no SA_RESTART), and
 * reads it. For the read loops of events and trace. */
void kread_catch_signals(void);
bool kread_interrupted(void);

#endif
