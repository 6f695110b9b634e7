/* The CloudEvents 1.0 binary-mode envelope of SPEC section 3. Building an
 * event fills every attribute the contract requires (fresh UUID, time now,
 * a trace, the correlation id); turning a record back into an event
 * validates every attribute and the JSON data and says precisely what is
 * wrong, because that reason is what a dead-letter record carries. Nothing
 * here trusts the record: headers may be missing, null, hold NUL bytes or
 * invalid UTF-8, and the value may be anything. */
#include "tidings/envelope.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tidings/json.h"

td_event_t *td_event_new(const char *service, const char *type, const char *subject, json_t *data)
{
    td_event_t *ev = td_calloc(1, sizeof(*ev));
    td_uuid_v7(ev->id); /* time-ordered: the inboxes append instead of scatter */
    ev->source = td_asprintf("/tidings/%s", service);
    ev->type = td_strdup(type);
    td_time_format(td_now_ms(), ev->time);
    ev->subject = td_strdup(subject);
    ev->correlationid = td_strdup(subject ? subject : ev->id);
    td_trace_new(&ev->trace);
    ev->data = data ? data : json_object();
    ev->partition = -1;
    ev->offset = -1;
    return ev;
}

void td_event_set_correlation(td_event_t *ev, const char *correlationid)
{
    assert(!ev->borrowed);
    char *c = td_strdup(correlationid ? correlationid : ev->id);
    free(ev->correlationid);
    ev->correlationid = c;
}

void td_event_set_cause(td_event_t *ev, const td_event_t *cause)
{
    assert(!ev->borrowed);
    td_event_set_correlation(ev, cause->correlationid);
    free(ev->causationid);
    ev->causationid = td_strdup(cause->id);
    td_trace_child(&cause->trace, &ev->trace);
}

void td_event_set_trace_parent(td_event_t *ev, const td_trace_t *parent)
{
    td_trace_child(parent, &ev->trace);
}

void td_event_free(td_event_t *ev)
{
    if (!ev) return;
    td_event_clear(ev);
    free(ev);
}

td_record_t *td_event_to_record(const td_event_t *ev, const char *topic)
{
    char *value = td_json_dumps(ev->data);
    td_record_t *rec = td_event_to_record_json(ev, topic, value, strlen(value));
    free(value);
    return rec;
}

td_record_t *td_event_to_record_json(const td_event_t *ev, const char *topic, const char *json,
                                     size_t len)
{
    td_record_t *rec = td_record_new(topic);
    if (ev->subject) td_record_set_key(rec, ev->subject, strlen(ev->subject));
    td_record_set_value(rec, json, len);

    char tp[TD_TRACEPARENT_LEN + 1];
    td_trace_format(&ev->trace, tp);
    td_record_add_header_str(rec, "ce_specversion", "1.0");
    td_record_add_header_str(rec, "ce_id", ev->id);
    td_record_add_header_str(rec, "ce_source", ev->source);
    td_record_add_header_str(rec, "ce_type", ev->type);
    td_record_add_header_str(rec, "ce_time", ev->time);
    if (ev->subject) td_record_add_header_str(rec, "ce_subject", ev->subject);
    td_record_add_header_str(rec, "content-type", "application/json");
    td_record_add_header_str(rec, "ce_correlationid", ev->correlationid);
    if (ev->causationid) td_record_add_header_str(rec, "ce_causationid", ev->causationid);
    td_record_add_header_str(rec, "traceparent", tp);
    return rec;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const unsigned char *p, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned c = p[i];
        size_t n;
        unsigned lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else {
            return false;
        }
        if (len - i - 1 < n) return false;
        if (p[i + 1] < lo || p[i + 1] > hi) return false;
        for (size_t k = 2; k <= n; k++)
            if ((p[i + k] & 0xc0) != 0x80) return false;
        i += n + 1;
    }
    return true;
}

/* Where the attributes of an event are read from: a td_record_t, or the
 * headers of a consumed librdkafka message (whose values librdkafka keeps
 * NUL-terminated, so they can be lent out as C strings). */
typedef struct src {
    const td_record_t *rec;
    rd_kafka_headers_t *hdrs;
} src_t;

/* The last header called name: its value (NULL for a null header) and
 * length. false when there is none. */
static bool src_header(const src_t *src, const char *name, const void **value, size_t *len)
{
    if (src->rec) {
        const td_header_t *h = td_record_header(src->rec, name);
        if (!h) return false;
        *value = h->value;
        *len = h->len;
        return true;
    }
    if (!src->hdrs ||
        rd_kafka_header_get_last(src->hdrs, name, value, len) != RD_KAFKA_RESP_ERR_NO_ERROR)
        return false;
    return true;
}

/* The text of header name: NULL with the reason when it is absent, null,
 * empty (if required), holds a NUL byte or is not UTF-8. *bad tells an
 * absent optional header (NULL, *bad false) from a bad one. */
static const char *header_text(const src_t *src, const char *name, bool required, bool *bad,
                               char *errstr, size_t errlen)
{
    const void *value = NULL;
    size_t len = 0;
    bool found = src_header(src, name, &value, &len);
    *bad = false;
    if (!found || !value || (len == 0 && required)) {
        if (required) {
            *bad = true;
            td_errf(errstr, errlen, TD_EINVAL, "missing header '%s'", name);
        }
        return NULL;
    }
    if (memchr(value, '\0', len)) {
        *bad = true;
        td_errf(errstr, errlen, TD_EINVAL, "header '%s' contains a NUL byte", name);
        return NULL;
    }
    if (!utf8_valid(value, len)) {
        *bad = true;
        td_errf(errstr, errlen, TD_EINVAL, "header '%s' is not valid UTF-8", name);
        return NULL;
    }
    return value;
}

/* "application/json", any case, optionally with parameters
 * ("; charset=utf-8"). */
static bool is_json_content_type(const char *ct)
{
    static const char want[] = "application/json";
    if (strncasecmp(ct, want, sizeof(want) - 1)) return false;
    const char *rest = ct + sizeof(want) - 1;
    while (*rest == ' ' || *rest == '\t') rest++;
    return *rest == '\0' || *rest == ';';
}

/* A string attribute: lent from the source, or a copy. */
static char *attr(const char *s, bool borrow)
{
    return borrow ? (char *)s : td_strdup(s);
}

/* Fills ev (zeroed by the caller, partition/offset set) from src, key and
 * value as SPEC section 3 says. 0 or TD_EINVAL with the reason. */
static int parse(const src_t *src, const void *key, size_t key_len, const void *value,
                 size_t value_len, td_event_t *ev, char *errstr, size_t errlen)
{
    bool bad, borrow = ev->borrowed;
    const char *s;

    s = header_text(src, "ce_specversion", true, &bad, errstr, errlen);
    if (!s) return TD_EINVAL;
    if (strcmp(s, "1.0"))
        return td_errf(errstr, errlen, TD_EINVAL, "ce_specversion must be '1.0', not '%s'", s);

    s = header_text(src, "ce_id", true, &bad, errstr, errlen);
    if (!s) return TD_EINVAL;
    if (strlen(s) > TD_EVENT_ID_MAX)
        return td_errf(errstr, errlen, TD_EINVAL, "ce_id is longer than %d bytes", TD_EVENT_ID_MAX);
    strcpy(ev->id, s);

    s = header_text(src, "ce_source", true, &bad, errstr, errlen);
    if (!s) return TD_EINVAL;
    ev->source = attr(s, borrow);

    s = header_text(src, "ce_type", true, &bad, errstr, errlen);
    if (!s) return TD_EINVAL;
    ev->type = attr(s, borrow);

    s = header_text(src, "ce_time", true, &bad, errstr, errlen);
    if (!s) return TD_EINVAL;
    int64_t ms;
    if (td_time_parse(s, &ms) != 0)
        return td_errf(errstr, errlen, TD_EINVAL, "ce_time '%.64s' is not an RFC 3339 time", s);
    td_time_format(ms, ev->time);

    s = header_text(src, "content-type", false, &bad, errstr, errlen);
    if (bad) return TD_EINVAL;
    if (s && !is_json_content_type(s))
        return td_errf(errstr, errlen, TD_EINVAL,
                       "content-type must be application/json, not '%.64s'", s);

    s = header_text(src, "ce_subject", false, &bad, errstr, errlen);
    if (bad) return TD_EINVAL;
    if (s && *s) {
        ev->subject = attr(s, borrow);
    } else if (key && key_len && !memchr(key, '\0', key_len) && utf8_valid(key, key_len)) {
        /* The key holds no NUL: copy it (a message's key is not a string). */
        ev->scratch = td_strndup(key, key_len);
        ev->subject = borrow ? ev->scratch : td_strdup(ev->scratch);
    }

    s = header_text(src, "ce_correlationid", false, &bad, errstr, errlen);
    if (bad) return TD_EINVAL;
    const char *corr = s && *s ? s : ev->subject ? ev->subject : ev->id;
    ev->correlationid = attr(corr, borrow);

    s = header_text(src, "ce_causationid", false, &bad, errstr, errlen);
    if (bad) return TD_EINVAL;
    if (s && *s) ev->causationid = attr(s, borrow);

    s = header_text(src, "traceparent", false, &bad, errstr, errlen);
    if (bad) return TD_EINVAL;
    if (s) {
        char why[128];
        if (td_trace_parse(s, &ev->trace, why, sizeof(why)) != 0)
            return td_errf(errstr, errlen, TD_EINVAL, "bad traceparent: %s", why);
    } else {
        td_trace_new(&ev->trace);
    }

    if (!value || value_len == 0)
        return td_errf(errstr, errlen, TD_EINVAL, "value is empty, not a JSON object");
    if (!utf8_valid(value, value_len))
        return td_errf(errstr, errlen, TD_EINVAL, "value is not valid UTF-8");
    json_error_t jerr;
    ev->data = json_loadb(value, value_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!ev->data) return td_errf(errstr, errlen, TD_EINVAL, "value is not JSON: %s", jerr.text);
    if (!json_is_object(ev->data))
        return td_errf(errstr, errlen, TD_EINVAL, "value is not a JSON object");
    return 0;
}

td_event_t *td_event_from_record(const td_record_t *rec, char *errstr, size_t errlen)
{
    td_event_t *ev = td_calloc(1, sizeof(*ev));
    ev->partition = -1;
    ev->offset = -1;
    src_t src = {.rec = rec};
    if (parse(&src, rec->key, rec->key_len, rec->value, rec->value_len, ev, errstr, errlen) != 0) {
        td_event_free(ev);
        return NULL;
    }
    ev->topic = td_strdup(rec->topic);
    ev->partition = rec->partition;
    ev->offset = rec->offset;
    return ev;
}

int td_event_parse_message(const rd_kafka_message_t *msg, td_event_t *ev, char *errstr,
                           size_t errlen)
{
    memset(ev, 0, sizeof(*ev));
    ev->borrowed = true;
    ev->partition = msg->partition;
    ev->offset = msg->offset;
    ev->topic = msg->rkt ? (char *)rd_kafka_topic_name(msg->rkt) : (char *)"";
    rd_kafka_headers_t *hdrs = NULL;
    /* rd_kafka_message_headers parses lazily into the message, hence the
     * cast: nothing the caller could see changes. */
    if (rd_kafka_message_headers((rd_kafka_message_t *)msg, &hdrs) != RD_KAFKA_RESP_ERR_NO_ERROR)
        hdrs = NULL;
    ev->hdrs = hdrs;
    src_t src = {.hdrs = hdrs};
    return parse(&src, msg->key, msg->key_len, msg->payload, msg->len, ev, errstr, errlen);
}

const char *td_event_header(const td_event_t *ev, const char *name)
{
    const void *value = NULL;
    size_t len = 0;
    if (!ev->hdrs ||
        rd_kafka_header_get_last(ev->hdrs, name, &value, &len) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        !value || memchr(value, '\0', len))
        return NULL;
    return value;
}

void td_event_clear(td_event_t *ev)
{
    if (!ev) return;
    if (!ev->borrowed) {
        free(ev->source);
        free(ev->type);
        free(ev->subject);
        free(ev->correlationid);
        free(ev->causationid);
        free(ev->topic);
    }
    free(ev->scratch);
    json_decref(ev->data);
    memset(ev, 0, sizeof(*ev));
}

int td_data_str(const json_t *data, const char *field, const char **out, char *errstr,
                size_t errlen)
{
    json_t *v = json_object_get(data, field);
    if (!v || json_is_null(v))
        return td_errf(errstr, errlen, TD_EINVAL, "field '%s' is missing", field);
    if (!json_is_string(v))
        return td_errf(errstr, errlen, TD_EINVAL, "field '%s' must be a string", field);
    if (strlen(json_string_value(v)) != json_string_length(v))
        return td_errf(errstr, errlen, TD_EINVAL, "field '%s' contains a NUL character", field);
    *out = json_string_value(v);
    return 0;
}

int td_data_uuid(const json_t *data, const char *field, const char **out, char *errstr,
                 size_t errlen)
{
    const char *s = NULL; /* td_data_str sets it on success (GCC -O2 cannot tell) */
    int rc = td_data_str(data, field, &s, errstr, errlen);
    if (rc) return rc;
    if (!td_uuid_valid(s))
        return td_errf(errstr, errlen, TD_EINVAL, "field '%s' must be a UUID", field);
    *out = s;
    return 0;
}

int td_data_int(const json_t *data, const char *field, int64_t *out, char *errstr, size_t errlen)
{
    json_t *v = json_object_get(data, field);
    if (!v || json_is_null(v))
        return td_errf(errstr, errlen, TD_EINVAL, "field '%s' is missing", field);
    if (!json_is_integer(v))
        return td_errf(errstr, errlen, TD_EINVAL, "field '%s' must be an integer", field);
    *out = json_integer_value(v);
    return 0;
}

int td_data_cents(const json_t *data, const char *field, int64_t *out, char *errstr, size_t errlen)
{
    json_t *v = json_object_get(data, field);
    if (!v || json_is_null(v))
        return td_errf(errstr, errlen, TD_EINVAL, "field '%s' is missing", field);
    char name[128];
    snprintf(name, sizeof(name), "field '%s'", field);
    return td_json_to_cents(v, name, out, errstr, errlen);
}
