/* Records as plain data: copies, header lookup (last wins, null headers,
 * NUL bytes), and the binary header blob of the outbox, including every
 * way a corrupt blob must be refused without touching the record. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tidings/record.h"

static td_record_t *sample(void)
{
    td_record_t *rec = td_record_new("tidings.orders");
    td_record_set_key(rec, "k1", 2);
    td_record_set_value(rec, "{\"a\":1}", 7);
    td_record_add_header_str(rec, "ce_id", "abc");
    td_record_add_header(rec, "bin", "x\0y", 3);
    td_record_add_header(rec, "null", NULL, 0);
    td_record_add_header_str(rec, "empty", "");
    td_record_add_header_str(rec, "ce_id", "def");
    return rec;
}

static void test_basics(void **state)
{
    (void)state;
    td_record_t *rec = sample();
    assert_string_equal(rec->topic, "tidings.orders");
    assert_int_equal(rec->partition, -1);
    assert_int_equal(rec->offset, -1);
    assert_int_equal(rec->key_len, 2);
    assert_string_equal(rec->key, "k1"); /* NUL appended */
    assert_string_equal(rec->value, "{\"a\":1}");
    assert_int_equal(rec->header_cnt, 5);

    assert_string_equal(td_record_header_str(rec, "ce_id"), "def"); /* last wins */
    assert_null(td_record_header_str(rec, "bin"));                  /* holds a NUL */
    assert_int_equal(td_record_header(rec, "bin")->len, 3);
    assert_null(td_record_header_str(rec, "null"));
    assert_non_null(td_record_header(rec, "null"));
    assert_null(td_record_header(rec, "null")->value);
    assert_string_equal(td_record_header_str(rec, "empty"), "");
    assert_null(td_record_header(rec, "absent"));
    assert_null(td_record_header_str(rec, "absent"));

    td_record_set_value(rec, NULL, 0);
    assert_null(rec->value);
    assert_int_equal(rec->value_len, 0);
    td_record_free(rec);
    td_record_free(NULL);
}

static void assert_same(const td_record_t *a, const td_record_t *b)
{
    assert_int_equal(a->header_cnt, b->header_cnt);
    for (size_t i = 0; i < a->header_cnt; i++) {
        assert_string_equal(a->headers[i].name, b->headers[i].name);
        assert_int_equal(a->headers[i].len, b->headers[i].len);
        if (!a->headers[i].value) {
            assert_null(b->headers[i].value);
        } else {
            assert_non_null(b->headers[i].value);
            assert_memory_equal(a->headers[i].value, b->headers[i].value, a->headers[i].len);
        }
    }
}

static void test_dup(void **state)
{
    (void)state;
    td_record_t *rec = sample();
    rec->partition = 3;
    rec->offset = 77;
    rec->timestamp = 1234;
    td_record_t *d = td_record_dup(rec);
    assert_ptr_not_equal(d->headers, rec->headers);
    assert_string_equal(d->topic, rec->topic);
    assert_int_equal(d->partition, 3);
    assert_int_equal(d->offset, 77);
    assert_int_equal(d->timestamp, 1234);
    assert_memory_equal(d->key, rec->key, rec->key_len);
    assert_memory_equal(d->value, rec->value, rec->value_len);
    assert_same(rec, d);
    td_record_free(rec);
    td_record_free(d);
}

static void test_blob_round_trip(void **state)
{
    (void)state;
    td_record_t *rec = sample();
    size_t len;
    void *blob = td_headers_encode(rec, &len);
    td_record_t *back = td_record_new("t");
    assert_int_equal(td_headers_decode(back, blob, len), 0);
    assert_same(rec, back);
    assert_string_equal(td_record_header_str(back, "ce_id"), "def");
    free(blob);

    /* No headers at all is a valid blob too. */
    td_record_t *empty = td_record_new("t");
    blob = td_headers_encode(empty, &len);
    assert_int_equal(td_headers_decode(empty, blob, len), 0);
    assert_int_equal(empty->header_cnt, 0);
    free(blob);
    td_record_free(empty);
    td_record_free(rec);
    td_record_free(back);
}

static void expect_corrupt(const void *blob, size_t len)
{
    td_record_t *rec = td_record_new("t");
    td_record_add_header_str(rec, "keep", "me");
    assert_int_equal(td_headers_decode(rec, blob, len), TD_EINVAL);
    assert_int_equal(rec->header_cnt, 1); /* untouched */
    assert_string_equal(td_record_header_str(rec, "keep"), "me");
    td_record_free(rec);
}

static void test_blob_corruption(void **state)
{
    (void)state;
    td_record_t *rec = sample();
    size_t len;
    unsigned char *blob = td_headers_encode(rec, &len);

    /* Every truncation is detected. */
    for (size_t n = 0; n < len; n++) expect_corrupt(blob, n);
    /* Trailing garbage. */
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, blob, len);
    longer[len] = 0;
    expect_corrupt(longer, len + 1);
    free(longer);
    expect_corrupt(NULL, 0);

    unsigned char *c = malloc(len);
    /* Wrong version byte. */
    memcpy(c, blob, len);
    c[0] = 99;
    expect_corrupt(c, len);
    /* Header count too big for the blob. */
    memcpy(c, blob, len);
    c[1] = 0xff;
    expect_corrupt(c, len);
    /* Count one more than present. */
    memcpy(c, blob, len);
    c[4]++;
    expect_corrupt(c, len);
    /* First name length pointing past the end. */
    memcpy(c, blob, len);
    c[5] = 0x7f;
    expect_corrupt(c, len);
    /* First value length huge (not the null marker). */
    memcpy(c, blob, len);
    size_t vl = 5 + 4 + strlen("ce_id");
    c[vl] = 0x7f;
    expect_corrupt(c, len);
    /* A NUL inside a header name. */
    memcpy(c, blob, len);
    c[5 + 4 + 1] = 0;
    expect_corrupt(c, len);
    free(c);

    /* Random bit flips never crash; any accepted blob decodes sanely. */
    srand(7);
    for (int i = 0; i < 2000; i++) {
        unsigned char *f = malloc(len);
        memcpy(f, blob, len);
        f[(size_t)rand() % len] ^= (unsigned char)(1u << (rand() % 8));
        td_record_t *r = td_record_new("t");
        if (td_headers_decode(r, f, len) == 0)
            for (size_t h = 0; h < r->header_cnt; h++) assert_non_null(r->headers[h].name);
        td_record_free(r);
        free(f);
    }
    free(blob);
    td_record_free(rec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_basics),
        cmocka_unit_test(test_dup),
        cmocka_unit_test(test_blob_round_trip),
        cmocka_unit_test(test_blob_corruption),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
