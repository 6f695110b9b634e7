/* `tidings events`: the events on the topics, decoded, like kcat but aware
 * of the CloudEvents envelope of SPEC section 3: one readable line per
 * event, or one JSON object per line for tools. It reads through kread.c
 * (manual assignment, no group, no commits), so watching the bus never
 * changes what the services see. Any record prints: one that is not a
 * valid CloudEvent is shown as INVALID with the reason. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "kread.h"
#include "tidings/config.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/uuid.h"

#define EVENTS_POLL_MS   200
#define EVENTS_KEY_MAX   200
#define EVENTS_VALUE_MAX 300

/* What the flags set. */
typedef struct events_opts {
    td_strv_t topics;
    bool from_beginning, follow, as_json;
} events_opts_t;

#define AT(field) offsetof(events_opts_t, field)
static const td_flag_t events_flags[] = {
    {"--topic", "-t", "T", TD_FLAG_LIST, AT(topics),
     "only topic T, short name without the prefix (orders,\n"
     "orders.DLT); repeatable; default every topic and its .DLT"},
    {"--from-beginning", NULL, NULL, TD_FLAG_SWITCH, AT(from_beginning),
     "print the history and exit once caught up with the end\n"
     "the topics had at start"},
    {"--follow", "-f", NULL, TD_FLAG_SWITCH, AT(follow),
     "with --from-beginning: print the history, then keep\n"
     "following live"},
    {"--json", NULL, NULL, TD_FLAG_SWITCH, AT(as_json),
     "one JSON object per line: time, topic, partition, offset,\n"
     "key, id, type, source, subject, correlationid,\n"
     "causationid, traceparent, data (and error for a record\n"
     "that is not a valid CloudEvent, dlt for a dead letter)"},
};
#undef AT

static const td_command_t events_cmd = {
    .name = "events",
    .flags = events_flags,
    .flag_cnt = TD_ARRAY_SIZE(events_flags),
    .usage = "usage: tidings events [--topic T]... [--from-beginning] [--follow] [--json]\n"
             "                      [--brokers LIST] [--data DIR]\n\n"
             "Prints the events on the tidings topics, decoded from their CloudEvents\n"
             "envelope, one per line: time, topic, partition@offset, type, key, event id\n"
             "and the data. A record that is not a valid CloudEvent is printed as INVALID\n"
             "with the reason. Reads without joining a consumer group and commits nothing.\n"
             "Without --from-beginning it follows live: only events written from now on,\n"
             "until Ctrl-C.\n",
    .more = "\n"
            "TIDINGS_TOPIC_PREFIX (default tidings.) is added to the topic names.\n\n"
            "Exit status: 0 done or interrupted, 1 no broker, unknown topic or a Kafka\n"
            "error, 2 usage error.\n",
};

/* The time to show: ce_time of an event, else the record's timestamp. */
static void record_time(const td_topic_reader_msg_t *m, char *out)
{
    if (m->ev) {
        snprintf(out, TD_TIME_LEN + 1, "%s", m->ev->time);
    } else if (m->rec->timestamp >= 0) {
        td_time_format(m->rec->timestamp, out);
    } else {
        snprintf(out, TD_TIME_LEN + 1, "-");
    }
}

/* A JSON string of s made printable (headers need not be UTF-8), or null. */
static json_t *str_or_null(const char *s)
{
    if (!s) return json_null();
    char *p = kread_printable(s, strlen(s), 0);
    json_t *j = json_string(p);
    free(p);
    return j;
}

/* A header's value as a JSON string (made printable), or null. */
static json_t *header_json(const td_record_t *rec, const char *name)
{
    const td_header_t *h = td_record_header(rec, name);
    if (!h || !h->value) return json_null();
    char *s = kread_printable(h->value, h->len, 0);
    json_t *j = json_string(s);
    free(s);
    return j;
}

/* The dead-letter headers, if the record has them. */
static json_t *dlt_json(const td_record_t *rec)
{
    if (!td_record_header(rec, "tidings_dlt_reason")) return NULL;
    json_t *d = json_object();
    json_object_set_new(d, "reason", header_json(rec, "tidings_dlt_reason"));
    json_object_set_new(d, "originalTopic", header_json(rec, "tidings_dlt_original_topic"));
    const char *p = td_record_header_str(rec, "tidings_dlt_original_partition");
    const char *o = td_record_header_str(rec, "tidings_dlt_original_offset");
    char *end;
    long long v;
    if (p && *p && (v = strtoll(p, &end, 10), !*end))
        json_object_set_new(d, "originalPartition", json_integer(v));
    else
        json_object_set_new(d, "originalPartition",
                            header_json(rec, "tidings_dlt_original_partition"));
    if (o && *o && (v = strtoll(o, &end, 10), !*end))
        json_object_set_new(d, "originalOffset", json_integer(v));
    else
        json_object_set_new(d, "originalOffset", header_json(rec, "tidings_dlt_original_offset"));
    return d;
}

static void print_json(const td_topic_reader_msg_t *m)
{
    const td_record_t *rec = m->rec;
    const td_event_t *ev = m->ev;
    char time[TD_TIME_LEN + 1];
    json_t *o = json_object();

    record_time(m, time);
    json_object_set_new(o, "time", strcmp(time, "-") ? json_string(time) : json_null());
    json_object_set_new(o, "topic", json_string(m->topic));
    json_object_set_new(o, "partition", json_integer(rec->partition));
    json_object_set_new(o, "offset", json_integer(rec->offset));
    if (rec->key) {
        char *key = kread_printable(rec->key, rec->key_len, 0);
        json_object_set_new(o, "key", json_string(key));
        free(key);
    } else {
        json_object_set_new(o, "key", json_null());
    }
    if (ev) {
        json_object_set_new(o, "id", str_or_null(ev->id));
        json_object_set_new(o, "type", str_or_null(ev->type));
        json_object_set_new(o, "source", str_or_null(ev->source));
        json_object_set_new(o, "subject", str_or_null(ev->subject));
        json_object_set_new(o, "correlationid", str_or_null(ev->correlationid));
        json_object_set_new(o, "causationid", str_or_null(ev->causationid));
        json_object_set_new(o, "traceparent", header_json(rec, "traceparent"));
        json_object_set_new(o, "data", json_incref(ev->data));
    } else {
        /* Whatever the headers say, for finding where the bad record came from. */
        json_object_set_new(o, "id", header_json(rec, "ce_id"));
        json_object_set_new(o, "type", header_json(rec, "ce_type"));
        json_object_set_new(o, "source", header_json(rec, "ce_source"));
        json_object_set_new(o, "subject", header_json(rec, "ce_subject"));
        json_object_set_new(o, "correlationid", header_json(rec, "ce_correlationid"));
        json_object_set_new(o, "causationid", header_json(rec, "ce_causationid"));
        json_object_set_new(o, "traceparent", header_json(rec, "traceparent"));
        json_t *data = rec->value ? json_loadb(rec->value, rec->value_len, 0, NULL) : NULL;
        json_object_set_new(o, "data", data ? data : json_null());
        if (!data && rec->value) {
            char *v = kread_printable(rec->value, rec->value_len, 0);
            json_object_set_new(o, "value", json_string(v));
            free(v);
        }
        json_object_set_new(o, "error", json_string(m->reason));
    }
    json_t *dlt = dlt_json(rec);
    if (dlt) json_object_set_new(o, "dlt", dlt);
    char *line = td_json_dumps(o);
    printf("%s\n", line);
    free(line);
    json_decref(o);
}

static void print_line(const td_topic_reader_msg_t *m)
{
    const td_record_t *rec = m->rec;
    char time[TD_TIME_LEN + 1];
    record_time(m, time);
    char *key = rec->key ? kread_printable(rec->key, rec->key_len, EVENTS_KEY_MAX) : td_strdup("-");
    printf("%s %s %d@%lld ", time, m->topic, (int)rec->partition, (long long)rec->offset);
    if (m->ev) {
        char *data = td_json_dumps(m->ev->data);
        char *type = kread_printable(m->ev->type, strlen(m->ev->type), EVENTS_KEY_MAX);
        char *id = kread_printable(m->ev->id, strlen(m->ev->id), EVENTS_KEY_MAX);
        printf("%s key=%s id=%s", type, key, id);
        free(type);
        free(id);
        const char *reason = td_record_header_str(rec, "tidings_dlt_reason");
        if (reason) {
            char *r = kread_printable(reason, strlen(reason), EVENTS_VALUE_MAX);
            printf(" dlt=\"%s\"", r);
            free(r);
        }
        printf(" %s\n", data);
        free(data);
    } else {
        char *value = rec->value ? kread_printable(rec->value, rec->value_len, EVENTS_VALUE_MAX)
                                 : td_strdup("(null)");
        printf("INVALID key=%s error=\"%s\" value=%s\n", key, m->reason, value);
        free(value);
    }
    free(key);
}

int cli_events_main(int argc, char **argv)
{
    td_config_t cfg;
    char err[512];
    int rc = 2;
    events_opts_t o = {0};
    td_topic_reader_t *kr = NULL;
    memset(&cfg, 0, sizeof(cfg));

    if (td_config_wants_help(argc, argv)) {
        td_config_usage_cmd(stdout, &events_cmd);
        rc = 0;
        goto out;
    }
    if (td_config_load_cmd(&cfg, &events_cmd, &o, argc, argv, NULL, err, sizeof(err))) {
        fprintf(stderr, "tidings events: %s\n", err);
        fprintf(stderr, "'tidings events --help' shows the options\n");
        goto out;
    }
    td_log_init("events", cfg.log_level, cfg.log_json);
    kread_catch_signals();
    /* Lines reach a pipe (grep, jq) as they come, not when a buffer fills. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    rc = 1;
    td_topic_reader_opts_t opts = {
        .topics = o.topics.v,
        .topic_cnt = o.topics.cnt,
        .from_beginning = o.from_beginning,
        .until_caught_up = o.from_beginning && !o.follow,
        .client = "cli",
    };
    kr = td_topic_reader_open(&cfg, &opts, err, sizeof(err));
    if (!kr) {
        fprintf(stderr, "tidings events: %s\n", err);
        goto out;
    }
    td_info("reading %zu topic%s (%zu partitions) at %s%s", td_topic_reader_topic_count(kr),
            td_topic_reader_topic_count(kr) == 1 ? "" : "s", td_topic_reader_partition_count(kr),
            cfg.brokers,
            opts.until_caught_up ? " from the beginning until caught up"
            : o.from_beginning   ? " from the beginning, then following live"
                                 : ", following live from now");

    while (!kread_interrupted()) {
        td_topic_reader_msg_t m;
        int r = td_topic_reader_next(kr, EVENTS_POLL_MS, &m, err, sizeof(err));
        if (r == TD_TOPIC_READER_DONE) break;
        if (r == TD_EAGAIN) continue;
        if (r) {
            fprintf(stderr, "tidings events: %s\n", err);
            goto out;
        }
        if (o.as_json)
            print_json(&m);
        else
            print_line(&m);
        td_topic_reader_msg_clear(&m);
    }
    rc = 0;

out:
    fflush(stdout);
    td_topic_reader_close(kr);
    td_config_free(&cfg);
    td_command_free(&events_cmd, &o, NULL);
    return rc;
}
