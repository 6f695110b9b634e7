/* Kafka records as plain data, so the envelope, the outbox and the
 * dead-letter path can be built and tested without librdkafka. Also the
 * compact binary form of a record's headers that the outbox table stores:
 * a version byte, a big-endian u32 header count, then per header a u32 name
 * length, the name, a u32 value length (0xffffffff for a null header) and
 * the value. Decoding trusts nothing: the blob comes from a database file. */
#include "tidings/record.h"

#include <stdlib.h>
#include <string.h>

#define BLOB_VERSION 1
#define NULL_LEN     0xffffffffu

/* A copy of len bytes plus a NUL, so text values can be used as C strings. */
static void *copy_bytes(const void *p, size_t len)
{
    char *d = td_malloc(len + 1);
    if (len) memcpy(d, p, len);
    d[len] = '\0';
    return d;
}

td_record_t *td_record_new(const char *topic)
{
    td_record_t *rec = td_calloc(1, sizeof(*rec));
    rec->topic = td_strdup(topic);
    rec->partition = -1;
    rec->offset = -1;
    rec->timestamp = -1;
    return rec;
}

static void free_headers(td_header_t *hdrs, size_t cnt)
{
    for (size_t i = 0; i < cnt; i++) {
        free(hdrs[i].name);
        free(hdrs[i].value);
    }
    free(hdrs);
}

void td_record_free(td_record_t *rec)
{
    if (!rec) return;
    free(rec->topic);
    free(rec->key);
    free(rec->value);
    free_headers(rec->headers, rec->header_cnt);
    free(rec);
}

td_record_t *td_record_dup(const td_record_t *rec)
{
    td_record_t *d = td_record_new(rec->topic);
    d->partition = rec->partition;
    d->offset = rec->offset;
    d->timestamp = rec->timestamp;
    if (rec->key) td_record_set_key(d, rec->key, rec->key_len);
    if (rec->value) td_record_set_value(d, rec->value, rec->value_len);
    for (size_t i = 0; i < rec->header_cnt; i++)
        td_record_add_header(d, rec->headers[i].name, rec->headers[i].value, rec->headers[i].len);
    return d;
}

void td_record_set_key(td_record_t *rec, const void *key, size_t len)
{
    free(rec->key);
    rec->key = key ? copy_bytes(key, len) : NULL;
    rec->key_len = key ? len : 0;
}

void td_record_set_value(td_record_t *rec, const void *value, size_t len)
{
    free(rec->value);
    rec->value = value ? copy_bytes(value, len) : NULL;
    rec->value_len = value ? len : 0;
}

/* A header array of cnt entries has room for header_cap(cnt): 0, then
 * powers of two from 8, so adding a record's ten headers reallocates
 * twice instead of ten times. */
static size_t header_cap(size_t cnt)
{
    size_t cap = cnt ? 8 : 0;
    while (cap < cnt) cap *= 2;
    return cap;
}

static void push_header(td_header_t **hdrs, size_t *cnt, char *name, void *value, size_t len)
{
    if (*cnt == header_cap(*cnt)) *hdrs = td_realloc(*hdrs, header_cap(*cnt + 1) * sizeof(**hdrs));
    (*hdrs)[*cnt] = (td_header_t){.name = name, .value = value, .len = value ? len : 0};
    (*cnt)++;
}

void td_record_add_header(td_record_t *rec, const char *name, const void *value, size_t len)
{
    push_header(&rec->headers, &rec->header_cnt, td_strdup(name),
                value ? copy_bytes(value, len) : NULL, len);
}

void td_record_add_header_str(td_record_t *rec, const char *name, const char *value)
{
    td_record_add_header(rec, name, value, value ? strlen(value) : 0);
}

const td_header_t *td_record_header(const td_record_t *rec, const char *name)
{
    for (size_t i = rec->header_cnt; i > 0; i--)
        if (!strcmp(rec->headers[i - 1].name, name)) return &rec->headers[i - 1];
    return NULL;
}

const char *td_record_header_str(const td_record_t *rec, const char *name)
{
    const td_header_t *h = td_record_header(rec, name);
    if (!h || !h->value) return NULL;
    if (memchr(h->value, '\0', h->len)) return NULL;
    return h->value;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

void *td_headers_encode(const td_record_t *rec, size_t *len)
{
    size_t total = 1 + 4;
    for (size_t i = 0; i < rec->header_cnt; i++)
        total += 8 + strlen(rec->headers[i].name) + rec->headers[i].len;
    unsigned char *blob = td_malloc(total);
    unsigned char *p = blob;
    *p++ = BLOB_VERSION;
    put_u32(p, (uint32_t)rec->header_cnt);
    p += 4;
    for (size_t i = 0; i < rec->header_cnt; i++) {
        const td_header_t *h = &rec->headers[i];
        size_t nlen = strlen(h->name);
        put_u32(p, (uint32_t)nlen);
        p += 4;
        memcpy(p, h->name, nlen);
        p += nlen;
        put_u32(p, h->value ? (uint32_t)h->len : NULL_LEN);
        p += 4;
        if (h->value && h->len) memcpy(p, h->value, h->len);
        p += h->value ? h->len : 0;
    }
    *len = total;
    return blob;
}

int td_headers_walk(const void *blob, size_t len, td_header_fn fn, void *arg)
{
    /* Twice: the first pass only checks, so fn never sees part of a
     * corrupt blob. */
    for (int pass = 0; pass < 2; pass++) {
        const unsigned char *p = blob, *end = p + len;
        if (!blob || len < 5 || p[0] != BLOB_VERSION) return TD_EINVAL;
        uint32_t want = get_u32(p + 1);
        p += 5;
        if (want > (size_t)(end - p) / 8) return TD_EINVAL;
        for (uint32_t i = 0; i < want; i++) {
            if (end - p < 4) return TD_EINVAL;
            uint32_t nlen = get_u32(p);
            p += 4;
            if ((size_t)(end - p) < nlen || memchr(p, '\0', nlen)) return TD_EINVAL;
            const char *name = (const char *)p;
            p += nlen;
            if (end - p < 4) return TD_EINVAL;
            uint32_t vlen = get_u32(p);
            p += 4;
            if (vlen != NULL_LEN && (size_t)(end - p) < vlen) return TD_EINVAL;
            if (pass == 1 && fn)
                fn(arg, name, nlen, vlen == NULL_LEN ? NULL : p, vlen == NULL_LEN ? 0 : vlen);
            p += vlen == NULL_LEN ? 0 : vlen;
        }
        if (p != end) return TD_EINVAL;
        if (!fn) return 0;
    }
    return 0;
}

/* Headers are decoded into a scratch list and appended only when the whole
 * blob is good, so a corrupt blob leaves rec as it was. */
int td_headers_decode(td_record_t *rec, const void *blob, size_t len)
{
    const unsigned char *p = blob, *end = p + len;
    td_header_t *hdrs = NULL;
    size_t cnt = 0;

    if (!blob || len < 5 || p[0] != BLOB_VERSION) goto fail;
    uint32_t want = get_u32(p + 1);
    p += 5;
    /* Each header takes at least 8 bytes: a huge count is corruption. */
    if (want > (size_t)(end - p) / 8) goto fail;
    for (uint32_t i = 0; i < want; i++) {
        if (end - p < 4) goto fail;
        uint32_t nlen = get_u32(p);
        p += 4;
        if ((size_t)(end - p) < nlen || memchr(p, '\0', nlen)) goto fail;
        const unsigned char *name = p;
        p += nlen;
        if (end - p < 4) goto fail;
        uint32_t vlen = get_u32(p);
        p += 4;
        if (vlen != NULL_LEN && (size_t)(end - p) < vlen) goto fail;
        void *value = vlen == NULL_LEN ? NULL : copy_bytes(p, vlen);
        push_header(&hdrs, &cnt, td_strndup((const char *)name, nlen), value, vlen);
        p += vlen == NULL_LEN ? 0 : vlen;
    }
    if (p != end) goto fail;

    rec->headers = td_realloc(rec->headers, header_cap(rec->header_cnt + cnt) * sizeof(*hdrs));
    if (cnt) memcpy(rec->headers + rec->header_cnt, hdrs, cnt * sizeof(*hdrs));
    rec->header_cnt += cnt;
    free(hdrs);
    return 0;

fail:
    free_headers(hdrs, cnt);
    return TD_EINVAL;
}
