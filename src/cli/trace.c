/* `tidings trace ID`: the causal tree of the events about one order, user,
 * product or event. Which events belong and how they hang together is
 * td_causal_build's (tidings/causal.h), so that this command and the web
 * service's event-flow view answer alike; this file reads the topics and
 * prints.
 *
 * Reading keeps only candidates, not the whole bus: the events that match ID
 * and, once the event whose ce_id is ID has been seen, the events of its
 * correlation group. Group members read before that event were passed over,
 * so then the topics are read once more from the beginning with the group
 * known: two reads at most, and memory bounded by the answer. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "kread.h"
#include "tidings/causal.h"
#include "tidings/config.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/uuid.h"

#define TRACE_POLL_MS 200

/* A dead letter seen for an event: where and why. */
typedef struct dead_letter {
    char *id;
    char *topic; /* short name */
    char *reason;
} dead_letter_t;

typedef struct trace_read {
    const char *query;
    char *query_corr; /* correlation id of the event whose ce_id is the query */
    bool missed;      /* query_corr was found after a record was passed over */
    bool passed_over; /* some record was passed over in this read */
    td_event_t **evs; /* candidates, owned; .DLT copies included */
    size_t cnt, cap;
    dead_letter_t *dlts;
    size_t dlt_cnt;
} trace_read_t;

typedef struct trace_opts {
    bool as_json;
} trace_opts_t;

static const td_flag_t trace_flags[] = {
    {"--json", NULL, NULL, TD_FLAG_SWITCH, offsetof(trace_opts_t, as_json),
     "one JSON object: per correlation id the events in tree\n"
     "order, each with its depth and parent"},
};

static const td_command_t trace_cmd = {
    .name = "trace",
    .flags = trace_flags,
    .flag_cnt = TD_ARRAY_SIZE(trace_flags),
    .operands = true,
    .usage = "usage: tidings trace ID [--json] [--brokers LIST] [--data DIR]\n\n"
             "Prints the causal tree of the events about ID: an order id, a user id, a\n"
             "product id (any event key), a correlation id or an event id. An event is\n"
             "about ID when ID is its ce_id, its ce_correlationid or its ce_subject (the\n"
             "key); for an event id, the whole correlation group of that event (the saga it\n"
             "is part of) belongs too. Each event hangs under the event that caused it\n"
             "(ce_causationid), siblings in time order, one line each: time, service, type,\n"
             "topic partition@offset, delay from its cause, event id. A header per\n"
             "correlation id gives the number of events and the total span. Dead letters\n"
             "and repeated publications of an event are noted on its line.\n"
             "Reads every topic and its .DLT from the beginning up to its end at the start;\n"
             "commits nothing.\n",
    .more = "\n"
            "TIDINGS_TOPIC_PREFIX (default tidings.) names the topics.\n\n"
            "Exit status: 0 events found, 1 no events match ID (or no broker, or a Kafka\n"
            "error), 2 usage error.\n",
};

static bool streq(const char *a, const char *b)
{
    return a && b && !strcmp(a, b);
}

static bool is_dlt(const char *topic)
{
    size_t n = strlen(topic);
    return n > 4 && !strcmp(topic + n - 4, ".DLT");
}

/* Keeps m's event if it is a candidate (see the top of the file). */
static void consider(trace_read_t *tr, td_topic_reader_msg_t *m)
{
    td_event_t *ev = m->ev;
    if (!ev) return; /* not a CloudEvent: nothing to link it by */
    if (!tr->query_corr && !strcmp(ev->id, tr->query) && ev->correlationid) {
        tr->query_corr = td_strdup(ev->correlationid);
        tr->missed = tr->passed_over;
    }
    if (!td_causal_matches(ev, tr->query) && !streq(ev->correlationid, tr->query_corr)) {
        tr->passed_over = true;
        return;
    }
    if (is_dlt(m->topic)) {
        const char *reason = td_record_header_str(m->rec, "tidings_dlt_reason");
        tr->dlts = td_realloc(tr->dlts, (tr->dlt_cnt + 1) * sizeof(*tr->dlts));
        dead_letter_t *d = &tr->dlts[tr->dlt_cnt++];
        d->id = td_strdup(ev->id);
        d->topic = td_strdup(m->topic);
        d->reason = reason ? kread_printable(reason, strlen(reason), 300) : td_strdup("?");
    }
    if (tr->cnt == tr->cap) {
        tr->cap = tr->cap ? tr->cap * 2 : 64;
        tr->evs = td_realloc(tr->evs, tr->cap * sizeof(*tr->evs));
    }
    tr->evs[tr->cnt++] = ev;
    m->ev = NULL;
}

static void clear_candidates(trace_read_t *tr)
{
    for (size_t i = 0; i < tr->cnt; i++) td_event_free(tr->evs[i]);
    tr->cnt = 0;
    for (size_t i = 0; i < tr->dlt_cnt; i++) {
        free(tr->dlts[i].id);
        free(tr->dlts[i].topic);
        free(tr->dlts[i].reason);
    }
    tr->dlt_cnt = 0;
}

static void trace_read_free(trace_read_t *tr)
{
    clear_candidates(tr);
    free(tr->evs);
    free(tr->dlts);
    free(tr->query_corr);
}

/* One read of every topic up to the watermarks at its start. */
static int read_pass(const td_config_t *cfg, trace_read_t *tr, char *errstr, size_t errlen)
{
    td_topic_reader_opts_t opts = {
        .from_beginning = true, .until_caught_up = true, .client = "cli"};
    td_topic_reader_t *kr = td_topic_reader_open(cfg, &opts, errstr, errlen);
    if (!kr) return TD_EIO;
    int rc = 0;
    clear_candidates(tr);
    tr->missed = tr->passed_over = false;
    for (;;) {
        if (kread_interrupted()) {
            rc = td_errf(errstr, errlen, TD_EAGAIN, "interrupted");
            break;
        }
        td_topic_reader_msg_t m;
        int r = td_topic_reader_next(kr, TRACE_POLL_MS, &m, errstr, errlen);
        if (r == TD_TOPIC_READER_DONE) break;
        if (r == TD_EAGAIN) continue;
        if (r) {
            rc = r;
            break;
        }
        consider(tr, &m);
        td_topic_reader_msg_clear(&m);
    }
    td_topic_reader_close(kr);
    return rc;
}

static const char *service_of(const td_event_t *ev)
{
    static const char prefix[] = "/tidings/";
    if (!strncmp(ev->source, prefix, sizeof(prefix) - 1) && ev->source[sizeof(prefix) - 1])
        return ev->source + sizeof(prefix) - 1;
    return ev->source;
}

static bool new_group(const td_causal_t *chain, size_t k)
{
    return k == 0 || strcmp(chain->nodes[k - 1].group, chain->nodes[k].group);
}

/* Events of the group starting at node k (groups are contiguous): count
 * and time span. */
static size_t group_extent(const td_causal_t *chain, size_t k, int64_t *span)
{
    int64_t lo = chain->nodes[k].time_ms, hi = lo;
    size_t j = k;
    for (; j < chain->cnt && !strcmp(chain->nodes[j].group, chain->nodes[k].group); j++) {
        int64_t t = chain->nodes[j].time_ms;
        if (t < lo) lo = t;
        if (t > hi) hi = t;
    }
    *span = hi - lo;
    return j - k;
}

static const dead_letter_t *dead_letter_of(const trace_read_t *tr, const td_event_t *ev)
{
    for (size_t i = 0; i < tr->dlt_cnt; i++)
        if (!strcmp(tr->dlts[i].id, ev->id)) return &tr->dlts[i];
    return NULL;
}

/* How often the event was published (same ce_id outside the .DLT topics). */
static int copies_of(const trace_read_t *tr, const td_event_t *ev)
{
    int n = 0;
    for (size_t i = 0; i < tr->cnt; i++)
        if (!strcmp(tr->evs[i]->id, ev->id) && !is_dlt(tr->evs[i]->topic)) n++;
    return n;
}

static char *printable(const char *s)
{
    return kread_printable(s, strlen(s), 200);
}

static void print_text(const td_config_t *cfg, const trace_read_t *tr, const td_causal_t *chain)
{
    for (size_t k = 0; k < chain->cnt; k++) {
        const td_causal_node_t *n = &chain->nodes[k];
        if (new_group(chain, k)) {
            int64_t span;
            size_t cnt = group_extent(chain, k, &span);
            char *g = printable(n->group);
            printf("%scorrelation %s: %zu event%s, span %lld ms\n", k ? "\n" : "", g, cnt,
                   cnt == 1 ? "" : "s", (long long)span);
            free(g);
        }
        char *svc = printable(service_of(n->ev)), *type = printable(n->ev->type);
        char *id = printable(n->ev->id);
        printf("%*s%s  %s  %s  %s %d@%lld", n->depth * 2, "", n->ev->time, svc, type,
               td_topic_short(cfg, n->ev->topic), (int)n->ev->partition, (long long)n->ev->offset);
        if (n->parent >= 0) printf("  %+lld ms", (long long)n->delay_ms);
        printf("  id=%s", id);
        if (n->parent < 0 && n->ev->causationid) {
            char *c = printable(n->ev->causationid);
            printf("  (cause %s not found)", c);
            free(c);
        }
        int copies = copies_of(tr, n->ev);
        if (copies > 1) printf("  (published %dx)", copies);
        printf("\n");
        const dead_letter_t *d = dead_letter_of(tr, n->ev);
        if (d) printf("%*s! dead-lettered to %s: %s\n", n->depth * 2 + 2, "", d->topic, d->reason);
        free(svc);
        free(type);
        free(id);
    }
}

static json_t *jstr(const char *s)
{
    if (!s) return json_null();
    char *p = kread_printable(s, strlen(s), 0);
    json_t *j = json_string(p);
    free(p);
    return j;
}

static void print_json(const td_config_t *cfg, const trace_read_t *tr, const td_causal_t *chain)
{
    json_t *out = json_object(), *groups = json_array(), *events = NULL;
    json_object_set_new(out, "query", jstr(tr->query));
    json_object_set_new(out, "count", json_integer((json_int_t)chain->cnt));
    for (size_t k = 0; k < chain->cnt; k++) {
        const td_causal_node_t *n = &chain->nodes[k];
        if (new_group(chain, k)) {
            int64_t span;
            size_t cnt = group_extent(chain, k, &span);
            json_t *g = json_object();
            events = json_array();
            json_object_set_new(g, "correlationid", jstr(n->group));
            json_object_set_new(g, "count", json_integer((json_int_t)cnt));
            json_object_set_new(g, "spanMs", json_integer(span));
            json_object_set_new(g, "events", events);
            json_array_append_new(groups, g);
        }
        const td_event_t *ev = n->ev;
        json_t *e = json_object();
        json_object_set_new(e, "depth", json_integer(n->depth));
        json_object_set_new(e, "id", jstr(ev->id));
        json_object_set_new(e, "time", jstr(ev->time));
        json_object_set_new(e, "service", jstr(service_of(ev)));
        json_object_set_new(e, "source", jstr(ev->source));
        json_object_set_new(e, "type", jstr(ev->type));
        json_object_set_new(e, "subject", jstr(ev->subject));
        json_object_set_new(e, "topic", jstr(td_topic_short(cfg, ev->topic)));
        json_object_set_new(e, "partition", json_integer(ev->partition));
        json_object_set_new(e, "offset", json_integer(ev->offset));
        json_object_set_new(e, "correlationid", jstr(ev->correlationid));
        json_object_set_new(e, "causationid", jstr(ev->causationid));
        json_object_set_new(e, "parent",
                            n->parent >= 0 ? jstr(chain->nodes[n->parent].ev->id) : json_null());
        json_object_set_new(e, "delayMs", n->parent >= 0 ? json_integer(n->delay_ms) : json_null());
        json_object_set_new(e, "copies", json_integer(copies_of(tr, ev)));
        const dead_letter_t *d = dead_letter_of(tr, ev);
        if (d)
            json_object_set_new(
                e, "dlt",
                json_pack("{s:o,s:o}", "topic", jstr(d->topic), "reason", jstr(d->reason)));
        json_object_set_new(e, "data", json_incref(ev->data));
        json_array_append_new(events, e);
    }
    json_object_set_new(out, "groups", groups);
    char *text = td_json_dumps(out);
    printf("%s\n", text);
    free(text);
    json_decref(out);
}

int cli_trace_main(int argc, char **argv)
{
    td_config_t cfg;
    char err[512];
    int rc = 2;
    trace_opts_t o = {0};
    td_strv_t ids = {0};
    const char *id = NULL;
    trace_read_t tr = {0};
    td_causal_t chain = {0};
    memset(&cfg, 0, sizeof(cfg));

    if (td_config_wants_help(argc, argv)) {
        td_config_usage_cmd(stdout, &trace_cmd);
        rc = 0;
        goto out;
    }
    if (td_config_load_cmd(&cfg, &trace_cmd, &o, argc, argv, &ids, err, sizeof(err))) {
        fprintf(stderr, "tidings trace: %s\n'tidings trace --help' shows the options\n", err);
        goto out;
    }
    if (ids.cnt > 1) {
        fprintf(stderr, "tidings trace: give one ID, not '%s' and '%s'\n", ids.v[0], ids.v[1]);
        goto out;
    }
    id = ids.cnt ? ids.v[0] : NULL;
    if (!id || !id[0]) {
        fprintf(stderr, "tidings trace: give an ID (an order, user, product or event id)\n"
                        "usage: tidings trace ID [--json]\n");
        goto out;
    }
    tr.query = id;
    td_log_init("trace", cfg.log_level, cfg.log_json);
    kread_catch_signals();

    rc = 1;
    if (read_pass(&cfg, &tr, err, sizeof(err)) ||
        (tr.missed && read_pass(&cfg, &tr, err, sizeof(err)))) {
        fprintf(stderr, "tidings trace: %s\n", err);
        goto out;
    }
    if (!td_causal_build((const td_event_t *const *)tr.evs, tr.cnt, id, &chain)) {
        char *q = printable(id);
        fprintf(stderr, "tidings trace: no events match %s\n", q);
        free(q);
        goto out;
    }
    if (o.as_json)
        print_json(&cfg, &tr, &chain);
    else
        print_text(&cfg, &tr, &chain);
    rc = 0;

out:
    fflush(stdout);
    td_causal_free(&chain);
    trace_read_free(&tr);
    td_config_free(&cfg);
    td_command_free(&trace_cmd, &o, &ids);
    return rc;
}
