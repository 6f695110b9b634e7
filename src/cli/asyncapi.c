/* `tidings asyncapi`: the event catalogue (tidings/catalog.h) as an
 * AsyncAPI 3.1 document, in YAML, on stdout. One channel per topic (its
 * address after TIDINGS_TOPIC_PREFIX, its partitions, replication and
 * retention as the Kafka binding), one send operation per topic for its
 * producer and one receive operation per reading service, one message per
 * event type: the CloudEvents binary-mode headers as message headers, the
 * data as payload, the key as the Kafka message binding. docs/asyncapi.yaml
 * is this output with the default settings (a test keeps it so, and
 * validates it with @asyncapi/parser).
 *
 * The document is built as JSON (jansson) and written as block YAML: every
 * string double-quoted with JSON escapes, which YAML reads the same. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli.h"
#include "tidings/catalog.h"
#include "tidings/config.h"
#include "tidings/log.h"

/* ---- the document -------------------------------------------------------- */

static json_t *field_schema(const td_field_spec_t *f)
{
    json_t *s = json_object();
    const char *type = "string";
    switch (f->kind) {
    case TD_FIELD_STR:
        json_object_set_new(s, "minLength", json_integer(f->min));
        json_object_set_new(s, "maxLength", json_integer(f->max));
        break;
    case TD_FIELD_UUID:
        json_object_set_new(s, "format", json_string("uuid"));
        break;
    case TD_FIELD_INT:
        type = "integer";
        json_object_set_new(s, "minimum", json_integer(f->min));
        /* Beyond 2^53 a JSON reader may not keep the bound exactly. */
        if (f->max < (INT64_C(1) << 53)) json_object_set_new(s, "maximum", json_integer(f->max));
        break;
    case TD_FIELD_MONEY:
        type = "number";
        json_object_set_new(s, "minimum", json_integer(0));
        json_object_set_new(s, "multipleOf", json_real(0.01));
        break;
    case TD_FIELD_TIME:
        json_object_set_new(s, "format", json_string("date-time"));
        break;
    case TD_FIELD_ENUM: {
        json_t *values = json_array();
        for (const char *const *v = f->values; *v; v++)
            json_array_append_new(values, json_string(*v));
        json_object_set_new(s, "enum", values);
        break;
    }
    case TD_FIELD_OBJECT:
        type = "object";
        break;
    }
    if (f->nullable)
        json_object_set_new(s, "type", json_pack("[s, s]", type, "null"));
    else
        json_object_set_new(s, "type", json_string(type));
    if (f->doc) json_object_set_new(s, "description", json_string(f->doc));
    return s;
}

static json_t *payload_schema(const td_event_def_t *e)
{
    json_t *props = json_object(), *required = json_array();
    for (const td_field_spec_t *f = e->fields; f->name; f++) {
        json_object_set_new(props, f->name, field_schema(f));
        if (!f->optional) json_array_append_new(required, json_string(f->name));
    }
    return json_pack("{s:s, s:o, s:o}", "type", "object", "required", required, "properties",
                     props);
}

static json_t *str_schema(const char *desc, const char *format, const char *constant)
{
    json_t *s = json_pack("{s:s, s:s}", "type", "string", "description", desc);
    if (format) json_object_set_new(s, "format", json_string(format));
    if (constant) json_object_set_new(s, "const", json_string(constant));
    return s;
}

/* SPEC section 3: the CloudEvents 1.0 binary content mode headers. */
static json_t *headers_schema(const td_event_def_t *e)
{
    char source[64];
    snprintf(source, sizeof(source), "/tidings/%s", e->producer);
    json_t *props = json_object();
    json_object_set_new(props, "ce_specversion", str_schema("CloudEvents version", NULL, "1.0"));
    json_object_set_new(
        props, "ce_id",
        str_schema("a new UUID per event; consumers deduplicate on it", "uuid", NULL));
    json_object_set_new(props, "ce_source", str_schema("the service that wrote it", NULL, source));
    json_object_set_new(props, "ce_type", str_schema("the event type", NULL, e->type));
    json_object_set_new(props, "ce_time",
                        str_schema("RFC 3339 UTC with milliseconds", "date-time", NULL));
    json_object_set_new(props, "ce_subject", str_schema("the record key", NULL, NULL));
    json_object_set_new(props, "content-type",
                        str_schema("of the value", NULL, "application/json"));
    json_object_set_new(
        props, "ce_correlationid",
        str_schema("the request or saga it belongs to (the orderId for an order's saga)", NULL,
                   NULL));
    json_object_set_new(props, "ce_causationid",
                        str_schema("the ce_id of the event that caused it (absent when an HTTP "
                                   "request did)",
                                   NULL, NULL));
    json_object_set_new(props, "traceparent", str_schema("W3C trace context", NULL, NULL));
    return json_pack("{s:s, s:[s,s,s,s,s,s,s,s,s], s:o}", "type", "object", "required",
                     "ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject",
                     "content-type", "ce_correlationid", "traceparent", "properties", props);
}

static json_t *message(const td_event_def_t *e)
{
    char key[160];
    snprintf(key, sizeof(key), "the %s (also ce_subject)", e->key);
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:{s:{s:{s:s, s:s, s:s}, s:s}}}", "name",
                     e->type, "title", e->type, "summary", e->doc, "contentType",
                     "application/json", "headers", headers_schema(e), "payload", payload_schema(e),
                     "bindings", "kafka", "key", "type", "string", "format", "uuid", "description",
                     key, "bindingVersion", "0.5.0");
}

/* "notifications" -> "Notifications", for operation ids. */
static void capitalized(const char *s, char *out, size_t len)
{
    snprintf(out, len, "%s", s);
    if (out[0]) out[0] = (char)toupper((unsigned char)out[0]);
}

static json_t *message_refs(const td_topic_def_t *t)
{
    json_t *refs = json_array();
    for (int ev = 0; ev < TD_EV__COUNT; ev++) {
        const td_event_def_t *e = td_catalog((td_ev_t)ev);
        if (strcmp(e->topic, t->name)) continue;
        char ref[256];
        snprintf(ref, sizeof(ref), "#/channels/%s/messages/%s", t->name, e->type);
        json_array_append_new(refs, json_pack("{s:s}", "$ref", ref));
    }
    return refs;
}

static json_t *document(const td_config_t *cfg)
{
    json_t *channels = json_object(), *operations = json_object(), *messages = json_object();
    int replicas = cfg->replication > 0 ? cfg->replication : 3;

    for (const td_topic_def_t *t = td_topics; t->name; t++) {
        char address[256], ref[256], id[160], name[64], reader[64];
        snprintf(address, sizeof(address), "%s%s", cfg->topic_prefix, t->name);
        snprintf(ref, sizeof(ref), "#/channels/%s", t->name);
        json_t *chan_msgs = json_object();
        for (int ev = 0; ev < TD_EV__COUNT; ev++) {
            const td_event_def_t *e = td_catalog((td_ev_t)ev);
            if (strcmp(e->topic, t->name)) continue;
            char mref[256];
            snprintf(mref, sizeof(mref), "#/components/messages/%s", e->type);
            json_object_set_new(chan_msgs, e->type, json_pack("{s:s}", "$ref", mref));
            json_object_set_new(messages, e->type, message(e));
        }
        json_object_set_new(channels, t->name,
                            json_pack("{s:s, s:s, s:o, s:{s:{s:s, s:i, s:i, s:{s:I}, s:s}}}",
                                      "address", address, "description", t->doc, "messages",
                                      chan_msgs, "bindings", "kafka", "topic", address,
                                      "partitions", cfg->partitions, "replicas", replicas,
                                      "topicConfiguration", "retention.ms",
                                      (json_int_t)cfg->retention_ms, "bindingVersion", "0.5.0"));

        capitalized(t->name, name, sizeof(name));
        char summary[256];
        snprintf(id, sizeof(id), "publish%s", name);
        snprintf(summary, sizeof(summary), "The %s service writes every event of %s, keyed by %s.",
                 t->producer, t->name, t->key);
        json_object_set_new(operations, id,
                            json_pack("{s:s, s:s, s:{s:s}, s:o}", "action", "send", "summary",
                                      summary, "channel", "$ref", ref, "messages",
                                      message_refs(t)));
        for (const char *const *r = t->readers; *r; r++) {
            capitalized(*r, reader, sizeof(reader));
            snprintf(id, sizeof(id), "%sReceives%s", *r, name);
            snprintf(summary, sizeof(summary),
                     "The %s service consumes %s (a consumer group; each event at most once in "
                     "effect, by its ce_id).",
                     *r, t->name);
            json_object_set_new(operations, id,
                                json_pack("{s:s, s:s, s:{s:s}, s:o}", "action", "receive",
                                          "summary", summary, "channel", "$ref", ref, "messages",
                                          message_refs(t)));
        }
    }
    return json_pack(
        "{s:s, s:{s:s, s:s, s:s}, s:s, s:{s:{s:s, s:s, s:s}}, s:o, s:o, s:{s:o}}", "asyncapi",
        "3.1.0", "info", "title", "tidings", "version", TIDINGS_VERSION, "description",
        "The events of the tidings shop on Apache Kafka (SPEC section 3). Each event is one record "
        "in CloudEvents 1.0 binary content mode: the data as a JSON value, the attributes as ce_* "
        "headers, the aggregate id as the key. A consumer that cannot process a record writes it, "
        "with the reason, to <topic>.DLT.",
        "defaultContentType", "application/json", "servers", "local", "host", "127.0.0.1:9092",
        "protocol", "kafka", "description",
        "a Kafka cluster (TIDINGS_BROKERS; `make kafka` starts one on loopback)", "channels",
        channels, "operations", operations, "components", "messages", messages);
}

/* ---- YAML ------------------------------------------------------------------ */

static void indent(FILE *out, int n)
{
    for (int i = 0; i < n; i++) fputs("  ", out);
}

static void scalar(FILE *out, const json_t *v)
{
    if (json_is_string(v)) {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_ENSURE_ASCII);
        fputs(s, out);
        free(s);
    } else {
        char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_REAL_PRECISION(6));
        fputs(s, out);
        free(s);
    }
}

static bool is_empty_container(const json_t *v)
{
    return (json_is_object(v) && json_object_size(v) == 0) ||
           (json_is_array(v) && json_array_size(v) == 0);
}

/* A key of letters, digits, _ . - and $ (first a letter or $) is written
 * plain; any other is quoted. */
static void key_out(FILE *out, const char *k)
{
    bool plain = isalpha((unsigned char)k[0]) || k[0] == '$';
    for (const char *p = k; *p && plain; p++)
        plain = isalnum((unsigned char)*p) || strchr("_.-$", *p);
    if (plain) {
        fputs(k, out);
        return;
    }
    json_t *s = json_string(k);
    scalar(out, s);
    json_decref(s);
}

static void yaml(FILE *out, const json_t *v, int depth);

static void yaml_value_after_key(FILE *out, const json_t *v, int depth)
{
    if ((json_is_object(v) || json_is_array(v)) && !is_empty_container(v)) {
        fputc('\n', out);
        yaml(out, v, depth + 1);
    } else if (is_empty_container(v)) {
        fputs(json_is_object(v) ? " {}\n" : " []\n", out);
    } else {
        fputc(' ', out);
        scalar(out, v);
        fputc('\n', out);
    }
}

static void yaml(FILE *out, const json_t *v, int depth)
{
    const char *k;
    json_t *m, *mv;
    size_t i;
    if (json_is_object(v)) {
        json_object_foreach((json_t *)v, k, m)
        {
            indent(out, depth);
            key_out(out, k);
            fputc(':', out);
            yaml_value_after_key(out, m, depth);
        }
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, m)
        {
            indent(out, depth);
            fputc('-', out);
            if (json_is_object(m) && json_object_size(m) > 0) {
                /* The first member on the dash's line, the rest under it. */
                bool first = true;
                json_object_foreach(m, k, mv)
                {
                    if (!first)
                        indent(out, depth + 1);
                    else
                        fputc(' ', out);
                    first = false;
                    key_out(out, k);
                    fputc(':', out);
                    yaml_value_after_key(out, mv, depth + 1);
                }
            } else if (json_is_array(m) && json_array_size(m) > 0) {
                fputc('\n', out);
                yaml(out, m, depth + 1);
            } else {
                yaml_value_after_key(out, m, depth);
            }
        }
    }
}

int cli_asyncapi_main(int argc, char **argv)
{
    td_config_t cfg;
    char err[512];
    memset(&cfg, 0, sizeof(cfg));
    if (td_config_wants_help(argc, argv)) {
        printf("usage: tidings asyncapi [--json]\n\n"
               "Prints the AsyncAPI 3.1 document of every topic and event type (from the\n"
               "event catalogue), with the topic names, partitions, replication and retention\n"
               "of the current settings (TIDINGS_TOPIC_PREFIX, TIDINGS_PARTITIONS, ...).\n"
               "YAML by default; --json prints it as JSON. docs/asyncapi.yaml is its output\n"
               "with the defaults.\n");
        return 0;
    }
    bool as_json = false;
    int kept = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            as_json = true;
        else
            argv[kept++] = argv[i];
    }
    td_log_init("asyncapi", TD_LOG_WARN, false);
    if (td_config_load(&cfg, "asyncapi", kept, argv, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "tidings asyncapi: %s\n", err);
        return 2;
    }
    json_t *doc = document(&cfg);
    if (as_json) {
        json_dumpf(doc, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
    } else {
        fputs("# AsyncAPI 3.1 document of tidings, made by `tidings asyncapi` from the event\n"
              "# catalogue (src/runtime/catalog.c). Do not edit: regenerate it.\n",
              stdout);
        yaml(stdout, doc, 0);
    }
    json_decref(doc);
    td_config_free(&cfg);
    return fflush(stdout) == 0 ? 0 : 1;
}
