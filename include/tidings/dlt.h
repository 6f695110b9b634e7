/* Dead letters from the outside (SPEC sections 1 and 3): list them, read
 * one whole, and redrive it, the work behind `tidings dlt` and the web
 * service's admin endpoint. A DLT-REF is "<dlt topic>:<partition>:<offset>"
 * with the full topic name ("tidings.orders.DLT:2:17"); the short name
 * ("orders.DLT:2:17") is accepted too. Reading assigns partitions by hand
 * (no group, no commits), so it never disturbs the services.
 *
 * A redrive republishes the original record (key, value, headers without
 * the tidings_dlt_* ones) to its original topic and partition with
 * tidings_redriven_from = the DLT-REF, through an idempotent producer, and
 * counts tidings_dlt_redriven_total{topic}. "At most once" is known from the
 * bus itself: before publishing, the original topic is scanned for a record
 * whose tidings_redriven_from is this DLT-REF; if there is one the redrive
 * is refused with its time. Two redrives racing each other, or one after
 * the first copy left the topic by retention, may publish twice; the
 * consumers' inbox still turns the second copy into a duplicate (one
 * effect). Blocking; any thread; nothing is shared between calls. */
#ifndef TIDINGS_DLT_H
#define TIDINGS_DLT_H

#include <jansson.h>

#include "tidings/config.h"
#include "tidings/record.h"

#define TD_DLT_REF_MAX 320

/* One dead letter as read. Owns rec; the strings point into it. */
typedef struct td_dlt {
    td_record_t *rec;         /* the DLT record: topic, partition, offset, timestamp */
    char ref[TD_DLT_REF_MAX]; /* its DLT-REF */
    const char *reason;       /* tidings_dlt_reason, or "" */
    const char *orig_topic;   /* tidings_dlt_original_topic (full), or "" */
    int32_t orig_partition;   /* -1 when missing or not a number */
    int64_t orig_offset;      /* -1 likewise */
    const char *type;         /* ce_type, or NULL */
    const char *id;           /* ce_id, or NULL */
} td_dlt_t;

void td_dlt_clear(td_dlt_t *d);
void td_dlt_list_free(td_dlt_t *list, size_t cnt);

/* Every dead letter of topic_short's DLT ("orders": tidings.orders.DLT), or
 * of every SPEC topic's DLT that exists when topic_short is NULL, oldest
 * first per partition. 0 with *list (free with td_dlt_list_free), or an
 * error with errstr (broker unreachable, unknown topic). */
int td_dlt_list(const td_config_t *cfg, const char *topic_short, td_dlt_t **list, size_t *cnt,
                char *errstr, size_t errlen);

/* The dead letter at ref. 0 with *out, TD_EINVAL for a malformed ref,
 * TD_ENOENT when there is no such record or it is not a dead letter, else
 * an error; errstr says which. */
int td_dlt_get(const td_config_t *cfg, const char *ref, td_dlt_t *out, char *errstr, size_t errlen);

/* What a redrive did or would do. */
typedef struct td_dlt_redrive {
    char topic[256];   /* where it went (or goes): the original topic */
    int32_t partition; /* and partition */
    int64_t offset;    /* of the new record; -1 on a dry run */
    /* When refused (TD_EEXIST): the earlier redriven copy. */
    int64_t prior_ms;
    int32_t prior_partition;
    int64_t prior_offset;
} td_dlt_redrive_t;

/* Redrives d (see above); dry_run checks everything and publishes nothing.
 * 0 with *out, TD_EEXIST when it was redriven before (errstr says when),
 * TD_EINVAL when d names no original topic, else an error with errstr. */
int td_dlt_redrive(const td_config_t *cfg, const td_dlt_t *d, bool dry_run, td_dlt_redrive_t *out,
                   char *errstr, size_t errlen);

/* d as JSON: ref, dltTopic, partition, offset, time, reason, originalTopic,
 * originalPartition, originalOffset, type, id, key; whole adds headers and
 * value (made printable). New reference. */
json_t *td_dlt_json(const td_dlt_t *d, bool whole);

#endif
