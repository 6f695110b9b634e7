/* Unit tests of the catalogue domain without HTTP or Kafka: title, price
 * and quantity validation (money exact: 19.99 stays 19.99), the create and
 * patch body rules, limit and cursor parsing, paging order, and each state
 * change on an in-memory database with exactly one outbox event of the
 * SPEC shape (and none when the change is refused). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "products/products.h"
#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/json.h"
#include "tidings/record.h"

static char errbuf[256];

static json_t *parse(const char *text)
{
    json_error_t jerr;
    json_t *j = json_loads(text, JSON_ALLOW_NUL, &jerr);
    if (!j) fail_msg("bad test JSON %s: %s", text, jerr.text);
    return j;
}

/* Runs products_parse_create (patch=false) or _patch on text and returns
 * the code; the message is in errbuf. */
static int check_body(const char *text, bool patch, products_input_t *in)
{
    json_t *j = parse(text);
    products_input_t tmp;
    int rc = patch ? products_parse_patch(j, in ? in : &tmp, errbuf, sizeof(errbuf))
                   : products_parse_create(j, in ? in : &tmp, errbuf, sizeof(errbuf));
    json_decref(j);
    return rc;
}

static void expect_error(const char *text, bool patch, const char *message)
{
    errbuf[0] = '\0';
    int rc = check_body(text, patch, NULL);
    if (rc != TD_EINVAL) fail_msg("%s: accepted (rc %d)", text, rc);
    if (strcmp(errbuf, message) != 0)
        fail_msg("%s: message '%s', want '%s'", text, errbuf, message);
}

static td_db_t *open_db(void)
{
    char err[256];
    td_db_t *db =
        td_db_open(":memory:", products_migrations, products_migration_cnt, err, sizeof(err));
    if (!db) print_error("td_db_open: %s\n", err);
    assert_non_null(db);
    return db;
}

static int64_t outbox_count(td_db_t *db)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, "SELECT count(*) FROM td_outbox");
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(db);
    return n;
}

/* The newest outbox row: its type header and value text. */
static void last_event(td_db_t *db, char *type, size_t tlen, char **value, char *key, size_t klen)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(
        db, "SELECT topic, key, value, headers FROM td_outbox ORDER BY id DESC LIMIT 1");
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    td_record_t *rec = td_record_new((const char *)sqlite3_column_text(st, 0));
    td_record_set_key(rec, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1));
    td_record_set_value(rec, sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2));
    assert_int_equal(
        td_headers_decode(rec, sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3)), 0);
    td_db_done(st);
    td_db_unlock(db);
    assert_string_equal(rec->topic, "tidings.products");
    assert_string_equal(td_record_header_str(rec, "ce_subject"), (const char *)rec->key);
    assert_string_equal(td_record_header_str(rec, "ce_source"), "/tidings/products");
    snprintf(type, tlen, "%s", td_record_header_str(rec, "ce_type"));
    snprintf(key, klen, "%s", (const char *)rec->key);
    *value = td_strdup((const char *)rec->value);
    td_record_free(rec);
}

/* ---- validation -------------------------------------------------------- */

static void test_money_exact(void **state)
{
    (void)state;
    struct {
        const char *text;
        int64_t cents;
        const char *printed;
    } ok[] = {
        {"19.99", 1999, "19.99"},
        {"1129", 112900, "1129"},
        {"0", 0, "0"},
        {"0.01", 1, "0.01"},
        {"0.1", 10, "0.1"},
        {"1.10", 110, "1.1"},
        {"10000000", 1000000000, "10000000"},
        {"9999999.99", 999999999, "9999999.99"},
        {"1129.0", 112900, "1129"},
        {"-0.0", 0, "0"},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(ok); i++) {
        json_t *v = json_loads(ok[i].text, JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        int64_t cents = -1;
        if (products_price_parse(v, &cents, errbuf, sizeof(errbuf)) != 0)
            fail_msg("%s refused: %s", ok[i].text, errbuf);
        assert_int_equal(cents, ok[i].cents);
        json_t *m = td_json_money(cents);
        char *s = td_json_dumps(m);
        assert_string_equal(s, ok[i].printed);
        free(s);
        json_decref(m);
        json_decref(v);
    }

    struct {
        const char *text, *message;
    } bad[] = {
        {"19.999", "price must have at most 2 decimals"},
        {"0.001", "price must have at most 2 decimals"},
        {"-1", "price must be >= 0"},
        {"-0.01", "price must be >= 0"},
        {"10000000.01", "price must be at most 10000000"},
        {"1e12", "price must be at most 10000000"},
        {"\"19.99\"", "price must be a number"},
        {"true", "price must be a number"},
        {"null", "price must be a number"},
        {"[1]", "price must be a number"},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++) {
        json_t *v = json_loads(bad[i].text, JSON_DECODE_ANY, NULL);
        assert_non_null(v);
        int64_t cents = -1;
        assert_int_equal(products_price_parse(v, &cents, errbuf, sizeof(errbuf)), TD_EINVAL);
        if (strcmp(errbuf, bad[i].message) != 0)
            fail_msg("%s: '%s', want '%s'", bad[i].text, errbuf, bad[i].message);
        json_decref(v);
    }
}

static void test_title_rules(void **state)
{
    (void)state;
    assert_int_equal(products_title_check("iPhone 15", errbuf, sizeof(errbuf)), 0);
    assert_int_equal(products_title_check("  padded  ", errbuf, sizeof(errbuf)), 0);
    assert_int_equal(products_title_check("'; DROP TABLE products; --", errbuf, sizeof(errbuf)), 0);
    assert_int_equal(products_title_check("", errbuf, sizeof(errbuf)), TD_EINVAL);
    assert_int_equal(products_title_check("    ", errbuf, sizeof(errbuf)), TD_EINVAL);
    assert_string_equal(errbuf, "title must not be blank");
    assert_int_equal(products_title_check("tab\there", errbuf, sizeof(errbuf)), TD_EINVAL);
    assert_string_equal(errbuf, "title must not contain control characters");

    char t[1024] = {0};
    for (int i = 0; i < PRODUCTS_TITLE_MAX; i++) memcpy(t + 2 * i, "\xc3\xbc", 2);
    assert_int_equal(products_title_check(t, errbuf, sizeof(errbuf)), 0);
    memcpy(t + 2 * PRODUCTS_TITLE_MAX, "x", 1);
    assert_int_equal(products_title_check(t, errbuf, sizeof(errbuf)), TD_EINVAL);
    assert_string_equal(errbuf, "title must be at most 200 characters");
}

static void test_create_body(void **state)
{
    (void)state;
    products_input_t in;
    assert_int_equal(
        check_body("{\"title\":\"iPhone 15\",\"price\":1129,\"quantity\":19}", false, &in), 0);
    assert_true(in.has_title && in.has_price && in.has_quantity);
    assert_int_equal(in.price_cents, 112900);
    assert_int_equal(in.quantity, 19);

    expect_error("{\"price\":1,\"quantity\":1}", false, "title is required");
    expect_error("{\"title\":\"x\",\"quantity\":1}", false, "price is required");
    expect_error("{\"title\":\"x\",\"price\":1}", false, "quantity is required");
    expect_error("{\"title\":\"x\",\"price\":1,\"quantity\":1,\"colour\":\"red\"}", false,
                 "unknown field 'colour'");
    expect_error("{\"title\":5,\"price\":1,\"quantity\":1}", false, "title must be a string");
    expect_error("{\"title\":null,\"price\":1,\"quantity\":1}", false, "title must be a string");
    expect_error("{\"title\":\"\",\"price\":1,\"quantity\":1}", false, "title must not be empty");
    expect_error("{\"title\":\"\"}", true, "title must not be empty"); /* a PATCH too */
    expect_error("{\"title\":\"x\\u0000y\",\"price\":1,\"quantity\":1}", false,
                 "title must not contain NUL characters");
    expect_error("{\"title\":\"x\",\"price\":1,\"quantity\":-1}", false, "quantity must be >= 0");
    expect_error("{\"title\":\"x\",\"price\":1,\"quantity\":1.5}", false,
                 "quantity must be an integer");
    expect_error("{\"title\":\"x\",\"price\":1,\"quantity\":\"3\"}", false,
                 "quantity must be an integer");
    expect_error("{\"title\":\"x\",\"price\":1,\"quantity\":true}", false,
                 "quantity must be an integer");
    expect_error("{\"title\":\"x\",\"price\":1,\"quantity\":null}", false,
                 "quantity must be an integer");
    expect_error("{\"title\":\"x\",\"price\":1,\"quantity\":1000000001}", false,
                 "quantity must be <= 1000000000");
    expect_error("{\"title\":\"x\",\"price\":1,\"quantity\":1e300}", false,
                 "quantity must be an integer");
    expect_error("{\"title\":\"x\",\"price\":19.999,\"quantity\":1}", false,
                 "price must have at most 2 decimals");

    /* Quantity bounds themselves are fine; 3.0 is an integer. */
    assert_int_equal(check_body("{\"title\":\"x\",\"price\":0,\"quantity\":0}", false, &in), 0);
    assert_int_equal(
        check_body("{\"title\":\"x\",\"price\":0,\"quantity\":1000000000}", false, &in), 0);
    assert_int_equal(in.quantity, 1000000000);
    assert_int_equal(check_body("{\"title\":\"x\",\"price\":0,\"quantity\":3.0}", false, &in), 0);
    assert_int_equal(in.quantity, 3);
}

static void test_patch_body(void **state)
{
    (void)state;
    products_input_t in;
    assert_int_equal(check_body("{\"price\":19.99}", true, &in), 0);
    assert_false(in.has_title);
    assert_true(in.has_price);
    assert_false(in.has_quantity);
    assert_int_equal(in.price_cents, 1999);
    expect_error("{}", true, "at least one of title, price, quantity is required");
    expect_error("{\"stock\":1}", true, "unknown field 'stock'");
    expect_error("{\"title\":\"  \"}", true, "title must not be blank");
    expect_error("{\"quantity\":-5}", true, "quantity must be >= 0");
    expect_error("{\"price\":null}", true, "price must be a number");
}

static void test_limit_and_cursor(void **state)
{
    (void)state;
    int limit;
    assert_int_equal(products_limit_parse(NULL, &limit, errbuf, sizeof(errbuf)), 0);
    assert_int_equal(limit, 50);
    assert_int_equal(products_limit_parse("1", &limit, errbuf, sizeof(errbuf)), 0);
    assert_int_equal(limit, 1);
    assert_int_equal(products_limit_parse("500", &limit, errbuf, sizeof(errbuf)), 0);
    assert_int_equal(limit, 500);
    const char *bad[] = {
        "0", "501", "-1", "", "abc", "10x", " 5", "1.5", "99999999999999999999999"};
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++) {
        if (products_limit_parse(bad[i], &limit, errbuf, sizeof(errbuf)) != TD_EINVAL)
            fail_msg("limit '%s' accepted", bad[i]);
        assert_string_equal(errbuf, "limit must be an integer from 1 to 500");
    }

    char cur[PRODUCTS_CURSOR_MAX];
    int64_t seq;
    int64_t seqs[] = {0, 1, 42, 9007199254740993LL, INT64_MAX};
    for (size_t i = 0; i < TD_ARRAY_SIZE(seqs); i++) {
        products_cursor_encode(seqs[i], cur);
        assert_int_equal(products_cursor_decode(cur, &seq, errbuf, sizeof(errbuf)), 0);
        assert_int_equal(seq, seqs[i]);
        /* Opaque: the number does not show. */
        if (seqs[i] == 42) assert_null(strstr(cur, "42"));
    }
    assert_int_equal(products_cursor_decode(NULL, &seq, errbuf, sizeof(errbuf)), 0);
    assert_int_equal(seq, 0);
    const char *badcur[] = {"",     "42",       "cDE6",    "cDE6LTE",
                            "!!!!", "cDE6NDI=", "cDI6NDI", "cDE6OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk"};
    for (size_t i = 0; i < TD_ARRAY_SIZE(badcur); i++) {
        if (products_cursor_decode(badcur[i], &seq, errbuf, sizeof(errbuf)) != TD_EINVAL)
            fail_msg("cursor '%s' accepted", badcur[i]);
        assert_string_equal(errbuf, "after is not a valid cursor");
    }
    char huge[4096];
    memset(huge, 'A', sizeof(huge) - 1);
    huge[sizeof(huge) - 1] = '\0';
    assert_int_equal(products_cursor_decode(huge, &seq, errbuf, sizeof(errbuf)), TD_EINVAL);
}

/* ---- state ------------------------------------------------------------- */

static products_input_t input(const char *title, int64_t cents, int64_t quantity)
{
    products_input_t in = {true, true, true, title, cents, quantity};
    return in;
}

static void test_create_get_event(void **state)
{
    (void)state;
    td_config_t cfg;
    td_config_defaults(&cfg);
    td_db_t *db = open_db();
    products_input_t in = input("iPhone 15", 112900, 19);
    products_product_t p, got;
    td_trace_t trace;
    td_trace_new(&trace);
    products_origin_t origin = {&trace, "0d5c2a8e-3f1b-4a7c-9e6d-1b2c3d4e5f60"};

    assert_int_equal(products_create(db, &cfg, &in, &origin, 1000, &p), 0);
    assert_true(td_uuid_valid(p.id));
    assert_int_equal(p.seq, 1);
    assert_int_equal(outbox_count(db), 1);

    char type[64], key[64], *value;
    last_event(db, type, sizeof(type), &value, key, sizeof(key));
    assert_string_equal(type, "ProductCreatedEvent");
    assert_string_equal(key, p.id);
    char want[256];
    snprintf(want, sizeof(want),
             "{\"productId\":\"%s\",\"title\":\"iPhone 15\",\"price\":1129,\"quantity\":19}", p.id);
    assert_string_equal(value, want);
    free(value);

    assert_int_equal(products_get(db, p.id, &got), 0);
    assert_string_equal(got.title, "iPhone 15");
    assert_int_equal(got.price_cents, 112900);
    json_t *j = products_to_json(&got);
    char *s = td_json_dumps(j);
    snprintf(want, sizeof(want),
             "{\"productId\":\"%s\",\"title\":\"iPhone 15\",\"price\":1129,\"quantity\":19,"
             "\"createdAt\":\"1970-01-01T00:00:01.000Z\"}",
             p.id);
    assert_string_equal(s, want);
    free(s);
    json_decref(j);
    products_clear(&got);

    assert_int_equal(products_get(db, "not-a-uuid", &got), TD_ENOENT);
    assert_int_equal(products_get(db, "00000000-0000-4000-8000-000000000000", &got), TD_ENOENT);
    assert_int_equal(products_get(db, "'; DROP TABLE products; --", &got), TD_ENOENT);

    /* SQL metacharacters are data. */
    products_product_t q;
    in = input("'; DROP TABLE products; --", 1999, 1);
    assert_int_equal(products_create(db, &cfg, &in, NULL, 2000, &q), 0);
    assert_int_equal(products_get(db, q.id, &got), 0);
    assert_string_equal(got.title, "'; DROP TABLE products; --");
    assert_int_equal(got.price_cents, 1999);
    products_clear(&got);
    last_event(db, type, sizeof(type), &value, key, sizeof(key));
    assert_non_null(strstr(value, "\"price\":19.99,"));
    free(value);

    products_clear(&p);
    products_clear(&q);
    td_db_close(db);
    td_config_free(&cfg);
}

static void test_update_and_delete(void **state)
{
    (void)state;
    td_config_t cfg;
    td_config_defaults(&cfg);
    td_db_t *db = open_db();
    products_input_t in = input("Mug", 1250, 0);
    products_product_t p, after;
    assert_int_equal(products_create(db, &cfg, &in, NULL, 1000, &p), 0);

    products_input_t patch = {0};
    patch.has_quantity = true;
    patch.quantity = 7;
    patch.has_price = true;
    patch.price_cents = 999;
    assert_int_equal(products_update(db, &cfg, p.id, &patch, NULL, 2000, &after), 0);
    assert_string_equal(after.title, "Mug");
    assert_int_equal(after.quantity, 7);
    assert_int_equal(after.price_cents, 999);
    assert_string_equal(after.created_at, p.created_at);
    products_clear(&after);
    assert_int_equal(outbox_count(db), 2);
    char type[64], key[64], *value, want[512];
    last_event(db, type, sizeof(type), &value, key, sizeof(key));
    assert_string_equal(type, "ProductUpdatedEvent");
    assert_string_equal(key, p.id);
    snprintf(want, sizeof(want),
             "{\"productId\":\"%s\",\"title\":\"Mug\",\"price\":9.99,\"quantity\":7,"
             "\"previousPrice\":12.5,\"previousQuantity\":0}",
             p.id);
    assert_string_equal(value, want);
    free(value);

    /* Unknown and malformed ids change nothing and emit nothing. */
    assert_int_equal(products_update(db, &cfg, "00000000-0000-4000-8000-000000000000", &patch, NULL,
                                     3000, &after),
                     TD_ENOENT);
    assert_int_equal(products_update(db, &cfg, "x", &patch, NULL, 3000, &after), TD_ENOENT);
    assert_int_equal(products_delete(db, &cfg, "x", NULL, 3000), TD_ENOENT);
    assert_int_equal(outbox_count(db), 2);

    assert_int_equal(products_delete(db, &cfg, p.id, NULL, 4000), 0);
    last_event(db, type, sizeof(type), &value, key, sizeof(key));
    assert_string_equal(type, "ProductDeletedEvent");
    snprintf(want, sizeof(want), "{\"productId\":\"%s\",\"title\":\"Mug\"}", p.id);
    assert_string_equal(value, want);
    free(value);
    assert_int_equal(outbox_count(db), 3);

    /* Gone from the API, twice deleting is not found, patching too. */
    products_product_t got;
    assert_int_equal(products_get(db, p.id, &got), TD_ENOENT);
    assert_int_equal(products_delete(db, &cfg, p.id, NULL, 5000), TD_ENOENT);
    assert_int_equal(products_update(db, &cfg, p.id, &patch, NULL, 5000, &after), TD_ENOENT);
    assert_int_equal(outbox_count(db), 3);

    products_clear(&p);
    td_db_close(db);
    td_config_free(&cfg);
}

static void test_paging(void **state)
{
    (void)state;
    td_config_t cfg;
    td_config_defaults(&cfg);
    td_db_t *db = open_db();
    char ids[7][TD_UUID_LEN + 1];
    for (int i = 0; i < 7; i++) {
        char title[16];
        snprintf(title, sizeof(title), "p%d", i);
        products_input_t in = input(title, 100 * i, i);
        products_product_t p;
        /* Same timestamp for all: the order must not depend on it. */
        assert_int_equal(products_create(db, &cfg, &in, NULL, 1000, &p), 0);
        memcpy(ids[i], p.id, sizeof(ids[i]));
        products_clear(&p);
    }
    assert_int_equal(products_delete(db, &cfg, ids[3], NULL, 2000), 0);

    /* Pages of 2 walk p0 p1 | p2 p4 | p5 p6 | p7, skipping the deleted p3;
     * p7 is created after the first page (with an older timestamp, which
     * must not matter) and shows up once, at the end. */
    const char *want[] = {"p0", "p1", "p2", "p4", "p5", "p6", "p7"};
    size_t seen = 0;
    int64_t after = 0;
    int pages = 0;
    for (;;) {
        products_product_t *items;
        size_t cnt;
        bool more;
        assert_int_equal(products_list(db, after, 2, &items, &cnt, &more), 0);
        pages++;
        for (size_t i = 0; i < cnt; i++) {
            assert_true(seen < TD_ARRAY_SIZE(want));
            assert_string_equal(items[i].title, want[seen++]);
        }
        int64_t last = cnt ? items[cnt - 1].seq : 0;
        for (size_t i = 0; i < cnt; i++) products_clear(&items[i]);
        free(items);
        if (!more) break;
        if (pages == 1) {
            products_input_t in = input("p7", 1, 1);
            products_product_t p;
            assert_int_equal(products_create(db, &cfg, &in, NULL, 500, &p), 0);
            products_clear(&p);
        }
        after = last;
    }
    assert_int_equal(seen, TD_ARRAY_SIZE(want));
    assert_int_equal(pages, 4);

    /* A page that ends exactly at the last item says there is no more. */
    products_product_t *items;
    size_t cnt;
    bool more;
    assert_int_equal(products_list(db, 0, 7, &items, &cnt, &more), 0);
    assert_int_equal(cnt, 7);
    assert_false(more);
    for (size_t i = 0; i < cnt; i++) products_clear(&items[i]);
    free(items);
    td_db_close(db);
    td_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_money_exact),       cmocka_unit_test(test_title_rules),
        cmocka_unit_test(test_create_body),       cmocka_unit_test(test_patch_body),
        cmocka_unit_test(test_limit_and_cursor),  cmocka_unit_test(test_create_get_event),
        cmocka_unit_test(test_update_and_delete), cmocka_unit_test(test_paging),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
