/* The products service's catalogue API in-process against the embedded
 * broker: create, read, list with paging, patch and delete, each route's
 * errors, the admin-only writes (missing, expired, tampered and customer
 * tokens), and the events on tidings.products: exactly one per change,
 * with the right type, key (= ce_subject), CloudEvents headers and the
 * SPEC data (ProductCreatedEvent exactly {productId, title, price,
 * quantity}, money printed exactly). Tokens are minted with the shared
 * secret, as the users service would. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "products/products_service.h"
#include "tidings/auth.h"
#include "tidings/json.h"
#include "tidings/uuid.h"
#include "tsupport.h"

#define ADMIN_ID    "5d6c2b1a-0f9e-4d8c-b7a6-958473625140"
#define CUSTOMER_ID "6e7d3c2b-1a0f-4e9d-a8b7-a69584736251"

typedef struct world {
    td_config_t cfg;
    char *dir;
    td_broker_t *broker;
    products_service_t *svc;
    char base[64];
    char *admin, *customer, *expired, *tampered;
    char iphone[TD_UUID_LEN + 1];
} world_t;

static world_t W;

/* ---- helpers ----------------------------------------------------------- */

static char *token_for(const char *sub, const char *role, int64_t exp_s)
{
    td_claims_t c = {0};
    snprintf(c.sub, sizeof(c.sub), "%s", sub);
    snprintf(c.role, sizeof(c.role), "%s", role);
    c.iat = td_now_ms() / 1000 - 10;
    c.exp = exp_s;
    return td_jwt_sign(W.cfg.secret, W.cfg.secret_len, &c);
}

static ts_resp_t call(const char *method, const char *path, const char *token, const char *body)
{
    char *u = td_asprintf("%s%s", W.base, path);
    ts_resp_t r = ts_http(method, u, token, body, NULL, NULL);
    free(u);
    return r;
}

static const char *jstr(const json_t *j, const char *key)
{
    return json_string_value(json_object_get(j, key));
}

static void expect(ts_resp_t *r, long status, const char *code, const char *message)
{
    if (r->status != status)
        fail_msg("status %ld, want %ld: %s", r->status, status, r->body ? r->body : "");
    if (code) assert_string_equal(ts_error_code(r), code);
    if (message) {
        const char *m = jstr(json_object_get(r->json, "error"), "message");
        assert_non_null(m);
        if (strcmp(m, message) != 0) fail_msg("message '%s', want '%s'", m, message);
    }
}

static int64_t db_count(const char *sql)
{
    td_db_t *db = td_app_service_db(W.svc);
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, sql);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(db);
    return n;
}

/* POSTs a product as admin and returns its id (201 asserted). */
static void create_product(const char *body, char *id)
{
    ts_resp_t r = call("POST", "/products", W.admin, body);
    expect(&r, 201, NULL, NULL);
    snprintf(id, TD_UUID_LEN + 1, "%s", jstr(r.json, "productId"));
    ts_resp_free(&r);
}

static ts_records_t product_events(size_t want)
{
    return ts_read_topic(td_broker_bootstraps(W.broker), "tidings.products", want, 300, 20000);
}

static size_t count_events(const ts_records_t *all, const char *key, const char *type)
{
    size_t n = 0;
    for (size_t i = 0; i < all->cnt; i++) {
        const td_record_t *rec = all->recs[i];
        if (rec->key && !strcmp(rec->key, key) &&
            (!type || !strcmp(td_record_header_str(rec, "ce_type"), type)))
            n++;
    }
    return n;
}

static const td_record_t *find_event(const ts_records_t *all, const char *key, const char *type)
{
    for (size_t i = 0; i < all->cnt; i++) {
        const td_record_t *rec = all->recs[i];
        if (rec->key && !strcmp(rec->key, key) &&
            !strcmp(td_record_header_str(rec, "ce_type"), type))
            return rec;
    }
    return NULL;
}

static void check_headers(const td_record_t *rec, const char *type)
{
    assert_non_null(rec);
    assert_string_equal(td_record_header_str(rec, "ce_specversion"), "1.0");
    assert_true(td_uuid_valid(td_record_header_str(rec, "ce_id")));
    assert_string_equal(td_record_header_str(rec, "ce_source"), "/tidings/products");
    assert_string_equal(td_record_header_str(rec, "ce_type"), type);
    assert_string_equal(td_record_header_str(rec, "ce_subject"), (const char *)rec->key);
    assert_string_equal(td_record_header_str(rec, "content-type"), "application/json");
    int64_t ms;
    assert_int_equal(td_time_parse(td_record_header_str(rec, "ce_time"), &ms), 0);
    assert_non_null(td_record_header_str(rec, "ce_correlationid"));
    assert_null(td_record_header(rec, "ce_causationid"));
    assert_non_null(td_record_header_str(rec, "traceparent"));
}

/* ---- setup ------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    memset(&W, 0, sizeof(W));
    W.dir = ts_tmpdir("0021-products");
    ts_config(&W.cfg, "products", W.dir, NULL);
    W.broker = ts_broker(&W.cfg);
    W.cfg.brokers = td_strdup(td_broker_bootstraps(W.broker));
    W.cfg.ports[TD_SVC_PRODUCTS] = 0;
    char err[256];
    W.svc = products_service_start(&W.cfg, err, sizeof(err));
    if (!W.svc) {
        print_error("products_service_start: %s\n", err);
        return -1;
    }
    snprintf(W.base, sizeof(W.base), "http://127.0.0.1:%d", td_app_service_port(W.svc));
    int64_t later = td_now_ms() / 1000 + 3600;
    W.admin = token_for(ADMIN_ID, "admin", later);
    W.customer = token_for(CUSTOMER_ID, "customer", later);
    W.expired = token_for(ADMIN_ID, "admin", td_now_ms() / 1000 - 1);
    /* An admin token whose signature was made for another payload. */
    char *cust = token_for(ADMIN_ID, "customer", later);
    const char *a1 = strchr(W.admin, '.'), *a2 = strrchr(W.admin, '.');
    const char *c2 = strrchr(cust, '.');
    W.tampered = td_asprintf("%.*s%s", (int)(a2 - W.admin), W.admin, c2);
    (void)a1;
    free(cust);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    td_app_service_stop(W.svc);
    td_broker_stop(W.broker);
    td_config_free(&W.cfg);
    free(W.admin);
    free(W.customer);
    free(W.expired);
    free(W.tampered);
    free(W.dir);
    return 0;
}

/* ---- tests ------------------------------------------------------------- */

static void test_create_and_get(void **state)
{
    (void)state;
    ts_resp_t r = call("POST", "/products", W.admin,
                       "{\"title\":\"iPhone 15\",\"price\":1129,\"quantity\":19}");
    expect(&r, 201, NULL, NULL);
    assert_int_equal(json_object_size(r.json), 5);
    assert_true(td_uuid_valid(jstr(r.json, "productId")));
    assert_string_equal(jstr(r.json, "title"), "iPhone 15");
    assert_int_equal(json_integer_value(json_object_get(r.json, "price")), 1129);
    assert_int_equal(json_integer_value(json_object_get(r.json, "quantity")), 19);
    int64_t ms;
    assert_int_equal(td_time_parse(jstr(r.json, "createdAt"), &ms), 0);
    snprintf(W.iphone, sizeof(W.iphone), "%s", jstr(r.json, "productId"));
    ts_resp_free(&r);

    /* Money comes back exactly as sent. */
    r = call("POST", "/products", W.admin, "{\"title\":\"Case\",\"price\":19.99,\"quantity\":0}");
    expect(&r, 201, NULL, NULL);
    assert_non_null(strstr(r.body, "\"price\":19.99,"));
    char id[TD_UUID_LEN + 1];
    snprintf(id, sizeof(id), "%s", jstr(r.json, "productId"));
    ts_resp_free(&r);
    char *path = td_asprintf("/products/%s", id);
    r = call("GET", path, NULL, NULL);
    expect(&r, 200, NULL, NULL);
    assert_non_null(strstr(r.body, "\"price\":19.99,"));
    assert_string_equal(jstr(r.json, "productId"), id);
    assert_string_equal(jstr(r.json, "title"), "Case");
    ts_resp_free(&r);
    free(path);

    /* Public read; unknown, malformed: 404. */
    r = call("GET", "/products/00000000-0000-4000-8000-000000000000", NULL, NULL);
    expect(&r, 404, "not_found", "product not found");
    ts_resp_free(&r);
    r = call("GET", "/products/not-a-uuid", NULL, NULL);
    expect(&r, 404, "not_found", NULL);
    ts_resp_free(&r);
    r = call("GET", "/products/5D6C2B1A-0F9E-4D8C-B7A6-958473625140", NULL, NULL);
    expect(&r, 404, "not_found", NULL);
    ts_resp_free(&r);
}

static void test_writes_need_admin(void **state)
{
    (void)state;
    int64_t rows = db_count("SELECT count(*) FROM products");
    const char *body = "{\"title\":\"Nope\",\"price\":1,\"quantity\":1}";
    char *item = td_asprintf("/products/%s", W.iphone);
    struct {
        const char *method, *path, *body;
    } writes[] = {
        {"POST", "/products", body},
        {"PATCH", item, "{\"price\":1}"},
        {"DELETE", item, NULL},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(writes); i++) {
        ts_resp_t r = call(writes[i].method, writes[i].path, NULL, writes[i].body);
        expect(&r, 401, "unauthenticated", NULL);
        ts_resp_free(&r);
        r = call(writes[i].method, writes[i].path, W.expired, writes[i].body);
        expect(&r, 401, "unauthenticated", NULL);
        ts_resp_free(&r);
        r = call(writes[i].method, writes[i].path, W.tampered, writes[i].body);
        expect(&r, 401, "unauthenticated", NULL);
        ts_resp_free(&r);
        r = call(writes[i].method, writes[i].path, "garbage", writes[i].body);
        expect(&r, 401, "unauthenticated", NULL);
        ts_resp_free(&r);
        r = call(writes[i].method, writes[i].path, W.customer, writes[i].body);
        expect(&r, 403, "permission_denied", NULL);
        ts_resp_free(&r);
    }
    free(item);
    /* Nothing changed. */
    assert_int_equal(db_count("SELECT count(*) FROM products"), rows);
    char *sql = td_asprintf("SELECT count(*) FROM products WHERE id = '%s' AND price_cents = "
                            "112900 AND deleted = 0",
                            W.iphone);
    assert_int_equal(db_count(sql), 1);
    free(sql);
}

static void test_create_validation(void **state)
{
    (void)state;
    int64_t rows = db_count("SELECT count(*) FROM products");
    struct {
        const char *body, *message;
    } cases[] = {
        {"{\"price\":1,\"quantity\":1}", "title is required"},
        {"{\"title\":\"x\",\"quantity\":1}", "price is required"},
        {"{\"title\":\"x\",\"price\":1}", "quantity is required"},
        {"{\"title\":\"x\",\"price\":1,\"quantity\":1,\"colour\":\"red\"}",
         "unknown field 'colour'"},
        {"{\"title\":\"\",\"price\":1,\"quantity\":1}", "title must not be empty"},
        {"{\"title\":\"   \",\"price\":1,\"quantity\":1}", "title must not be blank"},
        {"{\"title\":\"x\",\"price\":-1,\"quantity\":1}", "price must be >= 0"},
        {"{\"title\":\"x\",\"price\":19.999,\"quantity\":1}", "price must have at most 2 decimals"},
        {"{\"title\":\"x\",\"price\":10000000.01,\"quantity\":1}",
         "price must be at most 10000000"},
        {"{\"title\":\"x\",\"price\":\"5\",\"quantity\":1}", "price must be a number"},
        {"{\"title\":\"x\",\"price\":1,\"quantity\":-1}", "quantity must be >= 0"},
        {"{\"title\":\"x\",\"price\":1,\"quantity\":2.5}", "quantity must be an integer"},
        {"{\"title\":\"x\",\"price\":1,\"quantity\":1000000001}", "quantity must be <= 1000000000"},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(cases); i++) {
        ts_resp_t r = call("POST", "/products", W.admin, cases[i].body);
        expect(&r, 400, "invalid_argument", cases[i].message);
        ts_resp_free(&r);
    }
    char title[260] = {0};
    memset(title, 't', 201);
    char *body = td_asprintf("{\"title\":\"%s\",\"price\":1,\"quantity\":1}", title);
    ts_resp_t r = call("POST", "/products", W.admin, body);
    expect(&r, 400, "invalid_argument", "title must be at most 200 characters");
    ts_resp_free(&r);
    free(body);
    title[200] = '\0';
    body = td_asprintf("{\"title\":\"%s\",\"price\":10000000,\"quantity\":1000000000}", title);
    r = call("POST", "/products", W.admin, body);
    expect(&r, 201, NULL, NULL);
    assert_int_equal(json_integer_value(json_object_get(r.json, "price")), 10000000);
    ts_resp_free(&r);
    free(body);
    r = call("POST", "/products", W.admin, NULL);
    expect(&r, 400, "invalid_argument", "request body is required");
    ts_resp_free(&r);
    assert_int_equal(db_count("SELECT count(*) FROM products"), rows + 1);
}

static void test_list_paging(void **state)
{
    (void)state;
    /* The catalogue so far: iPhone, Case, the 200-character one; add 4. */
    char ids[4][TD_UUID_LEN + 1];
    for (int i = 0; i < 4; i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"title\":\"Item %d\",\"price\":%d.5,\"quantity\":%d}", i, i,
                 i);
        create_product(body, ids[i]);
    }
    char *del = td_asprintf("/products/%s", ids[1]);
    ts_resp_t r = call("DELETE", del, W.admin, NULL);
    expect(&r, 204, NULL, NULL);
    ts_resp_free(&r);
    free(del);

    /* Whole list: creation order, no deleted product. */
    r = call("GET", "/products", NULL, NULL);
    expect(&r, 200, NULL, NULL);
    assert_int_equal(json_object_size(r.json), 2);
    json_t *arr = json_object_get(r.json, "products");
    assert_int_equal(json_array_size(arr), 6);
    assert_true(json_is_null(json_object_get(r.json, "next")));
    assert_string_equal(jstr(json_array_get(arr, 0), "productId"), W.iphone);
    assert_string_equal(jstr(json_array_get(arr, 3), "productId"), ids[0]);
    assert_string_equal(jstr(json_array_get(arr, 4), "productId"), ids[2]);
    assert_string_equal(jstr(json_array_get(arr, 5), "productId"), ids[3]);
    assert_int_equal(json_object_size(json_array_get(arr, 0)), 5);
    ts_resp_free(&r);

    /* Pages of 4 then 2, following next. */
    r = call("GET", "/products?limit=4", NULL, NULL);
    expect(&r, 200, NULL, NULL);
    assert_int_equal(json_array_size(json_object_get(r.json, "products")), 4);
    const char *next = jstr(r.json, "next");
    assert_non_null(next);
    char *path = td_asprintf("/products?after=%s&limit=4", next);
    ts_resp_free(&r);
    r = call("GET", path, NULL, NULL);
    free(path);
    expect(&r, 200, NULL, NULL);
    arr = json_object_get(r.json, "products");
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(jstr(json_array_get(arr, 0), "productId"), ids[2]);
    assert_string_equal(jstr(json_array_get(arr, 1), "productId"), ids[3]);
    assert_true(json_is_null(json_object_get(r.json, "next")));
    ts_resp_free(&r);

    const char *bad[] = {
        "/products?limit=0",     "/products?limit=501",
        "/products?limit=-1",    "/products?limit=abc",
        "/products?limit=",      "/products?limit=1e2",
        "/products?after=bogus", "/products?after=%27%3B%20DROP%20TABLE%20products"};
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++) {
        r = call("GET", bad[i], NULL, NULL);
        expect(&r, 400, "invalid_argument", NULL);
        ts_resp_free(&r);
    }
    r = call("GET", "/products?limit=500", NULL, NULL);
    expect(&r, 200, NULL, NULL);
    ts_resp_free(&r);
}

static void test_patch(void **state)
{
    (void)state;
    char *path = td_asprintf("/products/%s", W.iphone);
    ts_resp_t r = call("PATCH", path, W.admin, "{\"price\":999.99}");
    expect(&r, 200, NULL, NULL);
    assert_int_equal(json_object_size(r.json), 5);
    assert_string_equal(jstr(r.json, "title"), "iPhone 15");
    assert_non_null(strstr(r.body, "\"price\":999.99,"));
    assert_int_equal(json_integer_value(json_object_get(r.json, "quantity")), 19);
    ts_resp_free(&r);

    r = call("PATCH", path, W.admin, "{\"title\":\"iPhone 15 Pro\",\"quantity\":0}");
    expect(&r, 200, NULL, NULL);
    assert_string_equal(jstr(r.json, "title"), "iPhone 15 Pro");
    assert_int_equal(json_integer_value(json_object_get(r.json, "quantity")), 0);
    ts_resp_free(&r);

    r = call("GET", path, NULL, NULL);
    expect(&r, 200, NULL, NULL);
    assert_string_equal(jstr(r.json, "title"), "iPhone 15 Pro");
    assert_non_null(strstr(r.body, "\"price\":999.99,"));
    ts_resp_free(&r);

    struct {
        const char *body, *message;
    } cases[] = {
        {"{}", "at least one of title, price, quantity is required"},
        {"{\"stock\":3}", "unknown field 'stock'"},
        {"{\"price\":1,\"productId\":\"x\"}", "unknown field 'productId'"},
        {"{\"price\":0.001}", "price must have at most 2 decimals"},
        {"{\"quantity\":-1}", "quantity must be >= 0"},
        {"{\"title\":null}", "title must be a string"},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(cases); i++) {
        r = call("PATCH", path, W.admin, cases[i].body);
        expect(&r, 400, "invalid_argument", cases[i].message);
        ts_resp_free(&r);
    }
    r = call("PATCH", path, W.admin, NULL);
    expect(&r, 400, "invalid_argument", "request body is required");
    ts_resp_free(&r);
    r = call("PATCH", "/products/00000000-0000-4000-8000-000000000000", W.admin, "{\"price\":1}");
    expect(&r, 404, "not_found", NULL);
    ts_resp_free(&r);
    r = call("PATCH", "/products/x", W.admin, "{\"price\":1}");
    expect(&r, 404, "not_found", NULL);
    ts_resp_free(&r);
    free(path);
}

static void test_delete(void **state)
{
    (void)state;
    char id[TD_UUID_LEN + 1];
    create_product("{\"title\":\"Doomed\",\"price\":5,\"quantity\":5}", id);
    char *path = td_asprintf("/products/%s", id);
    ts_resp_t r = call("DELETE", path, W.admin, NULL);
    expect(&r, 204, NULL, NULL);
    assert_int_equal(r.body_len, 0);
    ts_resp_free(&r);
    r = call("GET", path, NULL, NULL);
    expect(&r, 404, "not_found", NULL);
    ts_resp_free(&r);
    r = call("DELETE", path, W.admin, NULL);
    expect(&r, 404, "not_found", NULL);
    ts_resp_free(&r);
    r = call("PATCH", path, W.admin, "{\"price\":1}");
    expect(&r, 404, "not_found", NULL);
    ts_resp_free(&r);
    r = call("DELETE", "/products/nope", W.admin, NULL);
    expect(&r, 404, "not_found", NULL);
    ts_resp_free(&r);
    /* The row stays (soft delete) for the reservation side. */
    char *sql = td_asprintf("SELECT count(*) FROM products WHERE id = '%s' AND deleted = 1", id);
    assert_int_equal(db_count(sql), 1);
    free(sql);
    free(path);

    /* Method and route errors. */
    r = call("PUT", "/products", W.admin, "{}");
    expect(&r, 405, "method_not_allowed", NULL);
    ts_resp_free(&r);
    r = call("GET", "/products/a/b", NULL, NULL);
    expect(&r, 404, "not_found", NULL);
    ts_resp_free(&r);
}

static void test_events(void **state)
{
    (void)state;
    /* Created: iPhone, Case, long title, 4 items, Doomed = 8; updated:
     * iPhone twice; deleted: item 1 and Doomed. 12 events in all. */
    ts_records_t all = product_events(12);
    assert_int_equal(all.cnt, 12);
    assert_int_equal(count_events(&all, W.iphone, NULL), 3);
    assert_int_equal(count_events(&all, W.iphone, "ProductCreatedEvent"), 1);
    assert_int_equal(count_events(&all, W.iphone, "ProductUpdatedEvent"), 2);

    const td_record_t *c = find_event(&all, W.iphone, "ProductCreatedEvent");
    check_headers(c, "ProductCreatedEvent");
    char want[512];
    snprintf(want, sizeof(want),
             "{\"productId\":\"%s\",\"title\":\"iPhone 15\",\"price\":1129,\"quantity\":19}",
             W.iphone);
    assert_string_equal((const char *)c->value, want);

    /* The updates in order, with what came before. */
    const td_record_t *u[2];
    size_t n = 0;
    for (size_t i = 0; i < all.cnt && n < 2; i++)
        if (!strcmp(all.recs[i]->key, W.iphone) &&
            !strcmp(td_record_header_str(all.recs[i], "ce_type"), "ProductUpdatedEvent"))
            u[n++] = all.recs[i];
    check_headers(u[0], "ProductUpdatedEvent");
    snprintf(want, sizeof(want),
             "{\"productId\":\"%s\",\"title\":\"iPhone 15\",\"price\":999.99,\"quantity\":19,"
             "\"previousPrice\":1129,\"previousQuantity\":19}",
             W.iphone);
    assert_string_equal((const char *)u[0]->value, want);
    snprintf(want, sizeof(want),
             "{\"productId\":\"%s\",\"title\":\"iPhone 15 Pro\",\"price\":999.99,\"quantity\":0,"
             "\"previousPrice\":999.99,\"previousQuantity\":19}",
             W.iphone);
    assert_string_equal((const char *)u[1]->value, want);

    size_t deleted = 0;
    for (size_t i = 0; i < all.cnt; i++) {
        const td_record_t *rec = all.recs[i];
        if (strcmp(td_record_header_str(rec, "ce_type"), "ProductDeletedEvent")) continue;
        deleted++;
        check_headers(rec, "ProductDeletedEvent");
        json_t *d = json_loadb(rec->value, rec->value_len, 0, NULL);
        assert_int_equal(json_object_size(d), 2);
        assert_string_equal(jstr(d, "productId"), rec->key);
        assert_non_null(jstr(d, "title"));
        json_decref(d);
        assert_int_equal(count_events(&all, rec->key, "ProductDeletedEvent"), 1);
    }
    assert_int_equal(deleted, 2);
    ts_records_free(&all);
}

static void test_health(void **state)
{
    (void)state;
    ts_resp_t r = call("GET", "/healthz", NULL, NULL);
    expect(&r, 200, NULL, NULL);
    ts_resp_free(&r);
    /* Ready once the consumer and the relay have reached the broker. */
    int64_t deadline = td_mono_ms() + 20000;
    long status = 0;
    while (td_mono_ms() < deadline) {
        r = call("GET", "/readyz", NULL, NULL);
        status = r.status;
        ts_resp_free(&r);
        if (status == 200) break;
        td_sleep_ms(50);
    }
    assert_int_equal(status, 200);
    r = call("GET", "/metrics", NULL, NULL);
    expect(&r, 200, NULL, NULL);
    ts_resp_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_and_get),
        cmocka_unit_test(test_writes_need_admin),
        cmocka_unit_test(test_create_validation),
        cmocka_unit_test(test_list_paging),
        cmocka_unit_test(test_patch),
        cmocka_unit_test(test_delete),
        cmocka_unit_test(test_events),
        cmocka_unit_test(test_health),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
