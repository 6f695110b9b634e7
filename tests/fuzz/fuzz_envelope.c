/* Fuzzes what a consumer does with a Kafka record it did not write: the
 * outbox's header blob decoder and the CloudEvents parser. The input is
 *   u16 key length (0xffff = no key), key,
 *   u16 value length (0xffff = no value), value,
 *   the rest: a header blob as td_headers_encode writes it,
 * so the fuzzer reaches the envelope through the blob decoder, whose
 * length checks it also exercises. Invariants: a blob that decodes
 * re-encodes to the same bytes, a refused one leaves the record as it
 * was; an event that parses becomes a record that parses back to the same
 * event (the second time byte for byte, since parsing normalises ce_time
 * and JSON numbers once); data that passes td_data_check for its type has
 * every SPEC field right. */
#include <jansson.h>

#include "fuzz.h"
#include "tidings/envelope.h"
#include "tidings/json.h"

#define NONE 0xffff

static bool str_eq(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static void check_same_event(const td_event_t *a, const td_event_t *b)
{
    FUZZ_CHECK(strcmp(a->id, b->id) == 0);
    FUZZ_CHECK(str_eq(a->source, b->source));
    FUZZ_CHECK(str_eq(a->type, b->type));
    FUZZ_CHECK(strcmp(a->time, b->time) == 0);
    FUZZ_CHECK(str_eq(a->subject, b->subject));
    FUZZ_CHECK(str_eq(a->correlationid, b->correlationid));
    FUZZ_CHECK(str_eq(a->causationid, b->causationid));
    FUZZ_CHECK(memcmp(&a->trace, &b->trace, sizeof(a->trace)) == 0);
    char *da = td_json_dumps(a->data), *db = td_json_dumps(b->data);
    FUZZ_CHECK(strcmp(da, db) == 0);
    free(da);
    free(db);
}

static bool same_record_bytes(const td_record_t *a, const td_record_t *b)
{
    size_t la, lb;
    void *ba = td_headers_encode(a, &la), *bb = td_headers_encode(b, &lb);
    bool same = la == lb && memcmp(ba, bb, la) == 0;
    free(ba);
    free(bb);
    return same && a->key_len == b->key_len && a->value_len == b->value_len &&
           (!a->key) == (!b->key) && (!a->value) == (!b->value) &&
           (!a->key || memcmp(a->key, b->key, a->key_len) == 0) &&
           (!a->value || memcmp(a->value, b->value, a->value_len) == 0);
}

/* What a handler would read: every typed getter on a few field names. */
static void read_data(const json_t *data)
{
    static const char *const fields[] = {"orderId", "productId", "quantity",
                                         "total",   "price",     "userId"};
    char err[256];
    for (size_t i = 0; i < TD_ARRAY_SIZE(fields); i++) {
        const char *s;
        int64_t n;
        if (td_data_str(data, fields[i], &s, err, sizeof(err)) == 0)
            FUZZ_CHECK(strlen(s) == json_string_length(json_object_get(data, fields[i])));
        if (td_data_uuid(data, fields[i], &s, err, sizeof(err)) == 0) FUZZ_CHECK(td_uuid_valid(s));
        td_data_int(data, fields[i], &n, err, sizeof(err));
        if (td_data_cents(data, fields[i], &n, err, sizeof(err)) == 0)
            FUZZ_CHECK(n >= 0 && n <= TD_MONEY_MAX_CENTS);
    }
}

/* What a consumer checks before any effect: td_data_check against the
 * SPEC fields of the event's type. When it passes, every field must be
 * there with its type and bounds, checked here without it. */
static void check_fields(const td_event_t *ev)
{
    const td_field_spec_t *spec = td_event_fields(ev->type);
    char err[256] = "";
    if (!spec) return;
    int rc = td_data_check(ev->data, spec, err, sizeof(err));
    if (rc != 0) {
        FUZZ_CHECK(rc == TD_EINVAL && err[0] != '\0');
        return;
    }
    for (const td_field_spec_t *f = spec; f->name; f++) {
        const json_t *v = json_object_get(ev->data, f->name);
        int64_t n, ms;
        if (f->optional && !v) continue;
        FUZZ_CHECK(v);
        if (json_is_null(v)) {
            FUZZ_CHECK(f->nullable);
            continue;
        }
        switch (f->kind) {
        case TD_FIELD_STR:
            FUZZ_CHECK(json_is_string(v));
            FUZZ_CHECK(strlen(json_string_value(v)) == json_string_length(v));
            n = (int64_t)td_utf8_len(json_string_value(v));
            FUZZ_CHECK(n >= f->min && n <= f->max);
            break;
        case TD_FIELD_UUID:
            FUZZ_CHECK(json_is_string(v) && td_uuid_valid(json_string_value(v)));
            break;
        case TD_FIELD_INT:
            FUZZ_CHECK(json_is_integer(v));
            FUZZ_CHECK(json_integer_value(v) >= f->min && json_integer_value(v) <= f->max);
            break;
        case TD_FIELD_MONEY:
            FUZZ_CHECK(td_json_to_cents(v, f->name, &n, err, sizeof(err)) == 0);
            break;
        case TD_FIELD_TIME:
            FUZZ_CHECK(json_is_string(v) && td_time_parse(json_string_value(v), &ms) == 0);
            break;
        case TD_FIELD_ENUM: {
            bool known = false;
            FUZZ_CHECK(json_is_string(v));
            for (const char *const *e = f->values; *e; e++)
                if (strcmp(*e, json_string_value(v)) == 0) known = true;
            FUZZ_CHECK(known);
            break;
        }
        case TD_FIELD_OBJECT:
            FUZZ_CHECK(json_is_object(v));
            break;
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    td_record_t *rec = td_record_new("tidings.fuzz");
    rec->partition = 3;
    rec->offset = 42;
    size_t n;
    const uint8_t *p;

    uint16_t klen = fuzz_u16(&in);
    if (klen != NONE) {
        p = fuzz_bytes(&in, klen, &n);
        td_record_set_key(rec, p, n);
    }
    uint16_t vlen = fuzz_u16(&in);
    if (vlen != NONE) {
        p = fuzz_bytes(&in, vlen, &n);
        td_record_set_value(rec, p, n);
    }

    /* The blob: decoded into a record that already has a header, which a
     * refused blob must leave alone and a good one must append after. */
    td_record_add_header_str(rec, "x-before", "1");
    if (td_headers_decode(rec, in.p, in.left) == 0) {
        td_record_t *only = td_record_new("t");
        FUZZ_CHECK(td_headers_decode(only, in.p, in.left) == 0);
        size_t blen;
        void *blob = td_headers_encode(only, &blen);
        FUZZ_CHECK(blen == in.left && memcmp(blob, in.p, blen) == 0);
        free(blob);
        FUZZ_CHECK(rec->header_cnt == only->header_cnt + 1);
        td_record_free(only);
    } else {
        FUZZ_CHECK(rec->header_cnt == 1);
    }

    td_record_t *copy = td_record_dup(rec);
    FUZZ_CHECK(same_record_bytes(rec, copy));
    td_record_free(copy);

    char err[512];
    td_event_t *ev = td_event_from_record(rec, err, sizeof(err));
    if (!ev) {
        FUZZ_CHECK(err[0] != '\0');
        goto out;
    }
    FUZZ_CHECK(ev->correlationid && json_is_object(ev->data));
    FUZZ_CHECK(strlen(ev->time) == TD_TIME_LEN);
    FUZZ_CHECK(ev->partition == 3 && ev->offset == 42);
    read_data(ev->data);
    check_fields(ev);

    td_record_t *rec2 = td_event_to_record(ev, "tidings.fuzz");
    td_event_t *ev2 = td_event_from_record(rec2, err, sizeof(err));
    if (!ev2) {
        fprintf(stderr, "re-parse refused: %s\n", err);
        FUZZ_CHECK(ev2 != NULL);
    }
    check_same_event(ev, ev2);
    td_record_t *rec3 = td_event_to_record(ev2, "tidings.fuzz");
    FUZZ_CHECK(same_record_bytes(rec2, rec3));
    td_record_free(rec3);
    td_event_free(ev2);
    td_record_free(rec2);
    td_event_free(ev);
out:
    td_record_free(rec);
    return 0;
}
