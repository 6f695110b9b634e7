/* `tidings trace ID`: the causal tree of the events about one order, user,
 * product or event. The choice of events and the tree are td_causal_build's
 * (tidings/causal.h), so that this command and the web service's event-flow
 * view answer alike; this file reads the topics and prints.
 *
 * Reading keeps only candidates, not the whole bus: events that match ID (or
 * the correlation id of the event ID names) and every event sharing a
 * correlation id with one of those, since causes and reactions carry the
 * correlation id along (td_event_set_cause). Whenever that filter grows
 * after a record was passed over, the read starts again from the beginning
 * with the larger filter, which ends after two or three reads because the
 * filter only grows. */
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

#define TRACE_POLL_MS    200
#define TRACE_MAX_PASSES 5

/* A dead letter seen for an event: where and why. */
typedef struct dead_letter {
    char *id;
    char *topic; /* short name */
    char *reason;
} dead_letter_t;

typedef struct trace_read {
    const char *query;
    char *query_corr; /* correlation id of the event whose ce_id is the query */
    char **corrs;     /* correlation ids of the candidates so far */
    size_t corr_cnt;
    bool grew;        /* the filter grew after a record was passed over */
    bool passed_over; /* some record was passed over in this read */
    td_event_t **evs; /* candidates, owned; .DLT copies included */
    size_t cnt, cap;
    dead_letter_t *dlts;
    size_t dlt_cnt;
} trace_read_t;

static void trace_usage(FILE *out)
{
    fprintf(out, "usage: tidings trace ID [--json] [--brokers LIST] [--data DIR]\n\n"
                 "Prints the causal tree of the events about ID: an order id, a user id, a\n"
                 "product id, any event key, or an event id (which stands for the whole chain\n"
                 "it belongs to). An event is about ID when ID is its ce_id, ce_correlationid,\n"
                 "ce_subject (the key) or its data's orderId, userId or productId; the events\n"
                 "that caused those and the reactions to them belong too. Each event hangs\n"
                 "under its cause (ce_causationid), siblings in time order, one line each:\n"
                 "time, service, type, topic partition@offset, delay from its cause, event id.\n"
                 "A header per correlation id gives the number of events and the total span.\n"
                 "Reads every topic from the beginning up to its end at the start; commits\n"
                 "nothing.\n\n"
                 "options:\n"
                 "  --json            one JSON object: per correlation id the events in tree\n"
                 "                    order, each with its depth and parent\n"
                 "  --brokers LIST    Kafka bootstrap servers (TIDINGS_BROKERS; default: the\n"
                 "                    list in <data dir>/brokers)\n"
                 "  --data DIR        data directory (TIDINGS_DATA_DIR, default ./data)\n"
                 "  --log-level L     debug, info, warn or error (TIDINGS_LOG_LEVEL)\n"
                 "TIDINGS_TOPIC_PREFIX (default tidings.) names the topics.\n\n"
                 "Exit status: 0 events found, 1 no events match ID (or no broker, or a Kafka\n"
                 "error), 2 usage error.\n");
}

static bool streq(const char *a, const char *b)
{
    return a && b && !strcmp(a, b);
}

static bool is_dlt(const char *topic)
{
    size_t n = strlen(topic);
    return n > 4 && !strcmp(topic + n - 4, ".DLT");
}

static bool known_corr(const trace_read_t *tr, const char *corr)
{
    if (streq(corr, tr->query) || streq(corr, tr->query_corr)) return true;
    for (size_t i = 0; i < tr->corr_cnt; i++)
        if (!strcmp(tr->corrs[i], corr)) return true;
    return false;
}

static void filter_grew(trace_read_t *tr)
{
    if (tr->passed_over) tr->grew = true;
}

/* Keeps m's event if it is a candidate (see the top of the file). */
static void consider(trace_read_t *tr, kread_msg_t *m)
{
    td_event_t *ev = m->ev;
    if (!ev) return; /* not a CloudEvent: nothing to link it by */
    if (!tr->query_corr && !strcmp(ev->id, tr->query) && ev->correlationid) {
        tr->query_corr = td_strdup(ev->correlationid);
        filter_grew(tr);
    }
    bool seed = td_causal_matches(ev, tr->query) ||
                (tr->query_corr && td_causal_matches(ev, tr->query_corr));
    if (!seed && !(ev->correlationid && known_corr(tr, ev->correlationid))) {
        tr->passed_over = true;
        return;
    }
    if (ev->correlationid && !known_corr(tr, ev->correlationid)) {
        tr->corrs = td_realloc(tr->corrs, (tr->corr_cnt + 1) * sizeof(*tr->corrs));
        tr->corrs[tr->corr_cnt++] = td_strdup(ev->correlationid);
        filter_grew(tr);
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
    for (size_t i = 0; i < tr->corr_cnt; i++) free(tr->corrs[i]);
    free(tr->corrs);
    free(tr->query_corr);
}

/* One read of every topic up to the watermarks at its start. */
static int read_pass(const td_config_t *cfg, trace_read_t *tr, char *errstr, size_t errlen)
{
    kread_opts_t opts = {.from_beginning = true, .until_caught_up = true};
    kread_t *kr = kread_open(cfg, &opts, errstr, errlen);
    if (!kr) return TD_EIO;
    int rc = 0;
    clear_candidates(tr);
    tr->grew = tr->passed_over = false;
    for (;;) {
        if (kread_interrupted()) {
            rc = td_errf(errstr, errlen, TD_EAGAIN, "interrupted");
            break;
        }
        kread_msg_t m;
        int r = kread_next(kr, TRACE_POLL_MS, &m, errstr, errlen);
        if (r == KREAD_DONE) break;
        if (r == TD_EAGAIN) continue;
        if (r) {
            rc = r;
            break;
        }
        consider(tr, &m);
        kread_msg_clear(&m);
    }
    kread_close(kr);
    return rc;
}

static const char *service_of(const td_event_t *ev)
{
    static const char prefix[] = "/tidings/";
    if (!strncmp(ev->source, prefix, sizeof(prefix) - 1) && ev->source[sizeof(prefix) - 1])
        return ev->source + sizeof(prefix) - 1;
    return ev->source;
}

static const char *corr_of(const td_event_t *ev)
{
    return ev->correlationid ? ev->correlationid : ev->id;
}

/* The print order of a chain: its nodes grouped by the correlation id of
 * their root, groups in order of their first event, the tree order kept
 * inside each group. */
typedef struct layout {
    size_t *order;      /* chain indices in print order */
    const char **group; /* per chain index: its group's correlation id */
} layout_t;

static layout_t layout_new(const td_causal_t *chain)
{
    size_t n = chain->cnt;
    layout_t lay = {td_calloc(n + 1, sizeof(size_t)), td_calloc(n + 1, sizeof(char *))};
    bool *taken = td_calloc(n + 1, sizeof(*taken));
    /* A parent always comes before its children in the chain. */
    for (size_t i = 0; i < n; i++)
        lay.group[i] = chain->nodes[i].parent < 0 ? corr_of(chain->nodes[i].ev)
                                                  : lay.group[chain->nodes[i].parent];
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (taken[i]) continue;
        for (size_t j = i; j < n; j++)
            if (!taken[j] && !strcmp(lay.group[j], lay.group[i])) {
                taken[j] = true;
                lay.order[o++] = j;
            }
    }
    free(taken);
    return lay;
}

static void layout_free(layout_t *lay)
{
    free(lay->order);
    free(lay->group);
}

static const char *group_at(const layout_t *lay, size_t k)
{
    return lay->group[lay->order[k]];
}

static bool new_group(const layout_t *lay, size_t k)
{
    return k == 0 || strcmp(group_at(lay, k - 1), group_at(lay, k));
}

/* Events of the group starting at print position k: count and time span. */
static size_t group_extent(const td_causal_t *chain, const layout_t *lay, size_t k, int64_t *span)
{
    int64_t lo = chain->nodes[lay->order[k]].time_ms, hi = lo;
    size_t j = k;
    for (; j < chain->cnt && !strcmp(group_at(lay, j), group_at(lay, k)); j++) {
        int64_t t = chain->nodes[lay->order[j]].time_ms;
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

static void print_text(const td_config_t *cfg, const trace_read_t *tr, const td_causal_t *chain,
                       const layout_t *lay)
{
    for (size_t k = 0; k < chain->cnt; k++) {
        const td_causal_node_t *n = &chain->nodes[lay->order[k]];
        if (new_group(lay, k)) {
            int64_t span;
            size_t cnt = group_extent(chain, lay, k, &span);
            char *g = printable(group_at(lay, k));
            printf("%scorrelation %s: %zu event%s, span %lld ms\n", k ? "\n" : "", g, cnt,
                   cnt == 1 ? "" : "s", (long long)span);
            free(g);
        }
        char *svc = printable(service_of(n->ev)), *type = printable(n->ev->type);
        char *id = printable(n->ev->id);
        printf("%*s%s  %s  %s  %s %d@%lld", n->depth * 2, "", n->ev->time, svc, type,
               kread_short_topic(cfg, n->ev->topic), (int)n->ev->partition,
               (long long)n->ev->offset);
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

static void print_json(const td_config_t *cfg, const trace_read_t *tr, const td_causal_t *chain,
                       const layout_t *lay)
{
    json_t *out = json_object(), *groups = json_array(), *events = NULL;
    json_object_set_new(out, "query", jstr(tr->query));
    json_object_set_new(out, "count", json_integer((json_int_t)chain->cnt));
    for (size_t k = 0; k < chain->cnt; k++) {
        const td_causal_node_t *n = &chain->nodes[lay->order[k]];
        if (new_group(lay, k)) {
            int64_t span;
            size_t cnt = group_extent(chain, lay, k, &span);
            json_t *g = json_object();
            events = json_array();
            json_object_set_new(g, "correlationid", jstr(group_at(lay, k)));
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
        json_object_set_new(e, "topic", jstr(kread_short_topic(cfg, ev->topic)));
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

/* Flags of td_config_load that take a value as the next argument, so that
 * the ID can stand anywhere on the command line. */
static bool config_flag_takes_value(const char *arg)
{
    static const char *const flags[] = {"--brokers", "--data", "--port", "--listen", "--log-level"};
    for (size_t i = 0; i < TD_ARRAY_SIZE(flags); i++)
        if (!strcmp(arg, flags[i])) return true;
    return false;
}

int cli_trace_main(int argc, char **argv)
{
    td_config_t cfg;
    char err[512];
    int rc = 2;
    bool as_json = false;
    char **rest = td_calloc((size_t)argc + 1, sizeof(*rest));
    int rest_cnt = 0;
    const char *id = NULL;
    trace_read_t tr = {0};
    td_causal_t chain = {0};
    layout_t lay = {0};
    memset(&cfg, 0, sizeof(cfg));

    if (td_config_wants_help(argc, argv)) {
        trace_usage(stdout);
        rc = 0;
        goto out;
    }
    rest[rest_cnt++] = argv[0];
    bool flags_done = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!flags_done && !strcmp(arg, "--")) {
            flags_done = true;
        } else if (!flags_done && !strcmp(arg, "--json")) {
            as_json = true;
        } else if (!flags_done && arg[0] == '-' && arg[1]) {
            rest[rest_cnt++] = argv[i];
            if (config_flag_takes_value(arg) && i + 1 < argc) rest[rest_cnt++] = argv[++i];
        } else if (!id) {
            id = arg;
        } else {
            fprintf(stderr, "tidings trace: give one ID, not '%s' and '%s'\n", id, arg);
            goto out;
        }
    }
    if (td_config_load(&cfg, "trace", rest_cnt, rest, NULL, err, sizeof(err))) {
        fprintf(stderr, "tidings trace: %s\n'tidings trace --help' shows the options\n", err);
        goto out;
    }
    if (!id || !id[0]) {
        fprintf(stderr, "tidings trace: give an ID (an order, user, product or event id)\n"
                        "usage: tidings trace ID [--json]\n");
        goto out;
    }
    tr.query = id;
    td_log_init("trace", cfg.log_level, cfg.log_json);
    kread_catch_signals();

    rc = 1;
    for (int pass = 0;; pass++) {
        if (read_pass(&cfg, &tr, err, sizeof(err))) {
            fprintf(stderr, "tidings trace: %s\n", err);
            goto out;
        }
        if (!tr.grew) break;
        if (pass + 1 == TRACE_MAX_PASSES) {
            td_warn("the set of events kept growing; showing what %d reads found", pass + 1);
            break;
        }
    }
    if (!td_causal_build((const td_event_t *const *)tr.evs, tr.cnt, id, &chain)) {
        char *q = printable(id);
        fprintf(stderr, "tidings trace: no events match %s\n", q);
        free(q);
        goto out;
    }
    lay = layout_new(&chain);
    if (as_json)
        print_json(&cfg, &tr, &chain, &lay);
    else
        print_text(&cfg, &tr, &chain, &lay);
    rc = 0;

out:
    fflush(stdout);
    layout_free(&lay);
    td_causal_free(&chain);
    trace_read_free(&tr);
    td_config_free(&cfg);
    free(rest);
    return rc;
}
