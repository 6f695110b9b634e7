/* The CloudEvents 1.0 binary-mode envelope of SPEC section 3. Building an
 * event fills every attribute the contract requires (fresh UUID, time now,
 * a trace, the correlation id); turning a record back into an event
 * validates every attribute and the JSON data and says precisely what is
 * wrong, because that reason is what a dead-letter record carries. Nothing
 * here trusts the record: headers may be missing, null, hold NUL bytes or
 * invalid UTF-8, and the value may be anything. */
#include "tidings/envelope.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tidings/json.h"

td_event_t *td_event_new(const char *service, const char *type, const char *subject, json_t *data)
{
    td_event_t *ev = td_calloc(1, sizeof(*ev));
    td_uuid_new(ev->id);
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
    char *c = td_strdup(correlationid ? correlationid : ev->id);
    free(ev->correlationid);
    ev->correlationid = c;
}

void td_event_set_cause(td_event_t *ev, const td_event_t *cause)
{
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
    free(ev->source);
    free(ev->type);
    free(ev->subject);
    free(ev->correlationid);
    free(ev->causationid);
    json_decref(ev->data);
    free(ev->topic);
    free(ev);
}

td_record_t *td_event_to_record(const td_event_t *ev, const char *topic)
{
    td_record_t *rec = td_record_new(topic);
    if (ev->subject) td_record_set_key(rec, ev->subject, strlen(ev->subject));
    char *value = td_json_dumps(ev->data);
    td_record_set_value(rec, value, strlen(value));
    free(value);

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

/* The text of header name: NULL with the reason when it is absent, null,
 * empty (if required), holds a NUL byte or is not UTF-8. *bad tells an
 * absent optional header (NULL, *bad false) from a bad one. */
static const char *header_text(const td_record_t *rec, const char *name, bool required, bool *bad,
                               char *errstr, size_t errlen)
{
    const td_header_t *h = td_record_header(rec, name);
    *bad = false;
    if (!h || !h->value || (h->len == 0 && required)) {
        if (required) {
            *bad = true;
            td_errf(errstr, errlen, TD_EINVAL, "missing header '%s'", name);
        }
        return NULL;
    }
    if (memchr(h->value, '\0', h->len)) {
        *bad = true;
        td_errf(errstr, errlen, TD_EINVAL, "header '%s' contains a NUL byte", name);
        return NULL;
    }
    if (!utf8_valid(h->value, h->len)) {
        *bad = true;
        td_errf(errstr, errlen, TD_EINVAL, "header '%s' is not valid UTF-8", name);
        return NULL;
    }
    return h->value;
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

td_event_t *td_event_from_record(const td_record_t *rec, char *errstr, size_t errlen)
{
    td_event_t *ev = td_calloc(1, sizeof(*ev));
    ev->partition = -1;
    ev->offset = -1;
    bool bad;
    const char *s;

    s = header_text(rec, "ce_specversion", true, &bad, errstr, errlen);
    if (!s) goto fail;
    if (strcmp(s, "1.0")) {
        td_errf(errstr, errlen, TD_EINVAL, "ce_specversion must be '1.0', not '%s'", s);
        goto fail;
    }

    s = header_text(rec, "ce_id", true, &bad, errstr, errlen);
    if (!s) goto fail;
    if (strlen(s) > TD_EVENT_ID_MAX) {
        td_errf(errstr, errlen, TD_EINVAL, "ce_id is longer than %d bytes", TD_EVENT_ID_MAX);
        goto fail;
    }
    strcpy(ev->id, s);

    s = header_text(rec, "ce_source", true, &bad, errstr, errlen);
    if (!s) goto fail;
    ev->source = td_strdup(s);

    s = header_text(rec, "ce_type", true, &bad, errstr, errlen);
    if (!s) goto fail;
    ev->type = td_strdup(s);

    s = header_text(rec, "ce_time", true, &bad, errstr, errlen);
    if (!s) goto fail;
    int64_t ms;
    if (td_time_parse(s, &ms) != 0) {
        td_errf(errstr, errlen, TD_EINVAL, "ce_time '%.64s' is not an RFC 3339 time", s);
        goto fail;
    }
    td_time_format(ms, ev->time);

    s = header_text(rec, "content-type", false, &bad, errstr, errlen);
    if (bad) goto fail;
    if (s && !is_json_content_type(s)) {
        td_errf(errstr, errlen, TD_EINVAL, "content-type must be application/json, not '%.64s'", s);
        goto fail;
    }

    s = header_text(rec, "ce_subject", false, &bad, errstr, errlen);
    if (bad) goto fail;
    if (s && *s) {
        ev->subject = td_strdup(s);
    } else if (rec->key && rec->key_len && !memchr(rec->key, '\0', rec->key_len) &&
               utf8_valid(rec->key, rec->key_len)) {
        ev->subject = td_strdup(rec->key);
    }

    s = header_text(rec, "ce_correlationid", false, &bad, errstr, errlen);
    if (bad) goto fail;
    ev->correlationid = td_strdup(s && *s ? s : ev->subject ? ev->subject : ev->id);

    s = header_text(rec, "ce_causationid", false, &bad, errstr, errlen);
    if (bad) goto fail;
    if (s && *s) ev->causationid = td_strdup(s);

    s = header_text(rec, "traceparent", false, &bad, errstr, errlen);
    if (bad) goto fail;
    if (s) {
        char why[128];
        if (td_trace_parse(s, &ev->trace, why, sizeof(why)) != 0) {
            td_errf(errstr, errlen, TD_EINVAL, "bad traceparent: %s", why);
            goto fail;
        }
    } else {
        td_trace_new(&ev->trace);
    }

    if (!rec->value || rec->value_len == 0) {
        td_errf(errstr, errlen, TD_EINVAL, "value is empty, not a JSON object");
        goto fail;
    }
    if (!utf8_valid(rec->value, rec->value_len)) {
        td_errf(errstr, errlen, TD_EINVAL, "value is not valid UTF-8");
        goto fail;
    }
    json_error_t jerr;
    ev->data =
        json_loadb(rec->value, rec->value_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!ev->data) {
        td_errf(errstr, errlen, TD_EINVAL, "value is not JSON: %s", jerr.text);
        goto fail;
    }
    if (!json_is_object(ev->data)) {
        td_errf(errstr, errlen, TD_EINVAL, "value is not a JSON object");
        goto fail;
    }

    ev->topic = td_strdup(rec->topic);
    ev->partition = rec->partition;
    ev->offset = rec->offset;
    return ev;

fail:
    td_event_free(ev);
    return NULL;
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
    const char *s;
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
