/* Hostile input against the users and products services, in-process on the
 * embedded broker: malformed JSON, wrong types, numbers too big for any
 * type (1e400, 99999999999999999999), negative and fractional quantities,
 * 3-decimal prices, bytes that are not UTF-8, a 1 MiB body, missing or
 * wrong content types, odd paths and query strings. Each gets the SPEC
 * status and error shape, and afterwards the databases and the topics hold
 * exactly what the few valid requests made: nothing else. SQL
 * metacharacters are plain data, stored and returned literally. Requests
 * with exact bytes go through a raw socket, so nothing in between fixes
 * them up. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "products/products_service.h"
#include "tidings/auth.h"
#include "tidings/json.h"
#include "tidings/uuid.h"
#include "tsupport.h"
#include "users/users_service.h"

#define SQL_TITLE "'; DROP TABLE products; --"

typedef struct world {
    td_config_t pcfg, ucfg;
    char *pdir, *udir;
    td_broker_t *broker;
    products_service_t *products;
    users_service_t *users;
    int pport, uport;
    char *admin;
    char product[TD_UUID_LEN + 1];
    char *product_before; /* GET body of the product before the attacks */
} world_t;

static world_t W;

/* ---- helpers ----------------------------------------------------------- */

typedef struct raw_resp {
    int status;
    json_t *json;
} raw_resp_t;

/* Sends exactly these bytes as one HTTP/1.1 request (a Content-Length is
 * added; content_type NULL sends none) and reads the answer. */
static raw_resp_t raw(int port, const char *method, const char *path, const char *token,
                      const char *content_type, const void *body, size_t len)
{
    raw_resp_t out = {0, NULL};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {0};
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);

    char *auth = token ? td_asprintf("Authorization: Bearer %s\r\n", token) : td_strdup("");
    char *ct = content_type ? td_asprintf("Content-Type: %s\r\n", content_type) : td_strdup("");
    char *head = td_asprintf("%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n%s%s"
                             "Content-Length: %zu\r\n\r\n",
                             method, path, auth, ct, len);
    size_t hlen = strlen(head);
    char *msg = td_malloc(hlen + len);
    memcpy(msg, head, hlen);
    if (len) memcpy(msg + hlen, body, len);
    for (size_t off = 0; off < hlen + len;) {
        ssize_t n = send(fd, msg + off, hlen + len - off, MSG_NOSIGNAL);
        if (n <= 0) break; /* the server may answer and close early */
        off += (size_t)n;
    }
    char *resp = NULL;
    size_t rlen = 0;
    for (;;) {
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) break;
        resp = td_realloc(resp, rlen + (size_t)n + 1);
        memcpy(resp + rlen, buf, (size_t)n);
        rlen += (size_t)n;
        resp[rlen] = '\0';
    }
    close(fd);
    if (resp && sscanf(resp, "HTTP/1.%*d %d", &out.status) == 1) {
        char *b = strstr(resp, "\r\n\r\n");
        if (b) out.json = json_loads(b + 4, 0, NULL);
    }
    free(resp);
    free(msg);
    free(head);
    free(ct);
    free(auth);
    return out;
}

static void expect_raw(raw_resp_t r, int status, const char *code, const char *what)
{
    if (r.status != status) fail_msg("%s: status %d, want %d", what, r.status, status);
    const char *got = json_string_value(json_object_get(json_object_get(r.json, "error"), "code"));
    if (!got || strcmp(got, code) != 0)
        fail_msg("%s: error code %s, want %s", what, got ? got : "(none)", code);
    json_decref(r.json);
}

static int64_t count_in(td_db_t *db, const char *sql)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, sql);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(db);
    return n;
}

static char *product_path(void)
{
    return td_asprintf("/products/%s", W.product);
}

static char *get_product_body(void)
{
    char *u = td_asprintf("http://127.0.0.1:%d/products/%s", W.pport, W.product);
    ts_resp_t r = ts_http("GET", u, NULL, NULL, NULL, NULL);
    free(u);
    assert_int_equal(r.status, 200);
    char *body = td_strdup(r.body);
    ts_resp_free(&r);
    return body;
}

/* ---- setup ------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    char err[256];
    memset(&W, 0, sizeof(W));
    W.pdir = ts_tmpdir("0022-hostile-products");
    W.udir = ts_tmpdir("0022-hostile-users");
    ts_config(&W.pcfg, "products", W.pdir, NULL);
    W.broker = ts_broker(&W.pcfg);
    W.pcfg.brokers = td_strdup(td_broker_bootstraps(W.broker));
    W.pcfg.ports[TD_SVC_PRODUCTS] = 0;
    ts_config(&W.ucfg, "users", W.udir, td_broker_bootstraps(W.broker));
    W.ucfg.ports[TD_SVC_USERS] = 0;
    W.products = products_service_start(&W.pcfg, err, sizeof(err));
    W.users = users_service_start(&W.ucfg, err, sizeof(err));
    if (!W.products || !W.users) {
        print_error("start: %s\n", err);
        return -1;
    }
    W.pport = td_app_service_port(W.products);
    W.uport = users_service_port(W.users);
    td_claims_t c = {0};
    snprintf(c.sub, sizeof(c.sub), "5d6c2b1a-0f9e-4d8c-b7a6-958473625140");
    snprintf(c.role, sizeof(c.role), "admin");
    c.exp = td_now_ms() / 1000 + 3600;
    W.admin = td_jwt_sign(W.pcfg.secret, W.pcfg.secret_len, &c);

    /* The one valid product and the one valid user the attacks aim at. */
    const char *pbody = "{\"title\":\"Target\",\"price\":12.34,\"quantity\":5}";
    char *u = td_asprintf("http://127.0.0.1:%d/products", W.pport);
    ts_resp_t r = ts_http("POST", u, W.admin, pbody, NULL, NULL);
    free(u);
    if (r.status != 201) return -1;
    snprintf(W.product, sizeof(W.product), "%s",
             json_string_value(json_object_get(r.json, "productId")));
    ts_resp_free(&r);
    W.product_before = get_product_body();
    u = td_asprintf("http://127.0.0.1:%d/users", W.uport);
    r = ts_http("POST", u, NULL,
                "{\"email\":\"victim@example.com\",\"password\":\"victim password\","
                "\"name\":\"Victim\"}",
                NULL, NULL);
    free(u);
    if (r.status != 201) return -1;
    ts_resp_free(&r);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    td_app_service_stop(W.products);
    users_service_stop(W.users);
    td_broker_stop(W.broker);
    td_config_free(&W.pcfg);
    td_config_free(&W.ucfg);
    free(W.admin);
    free(W.product_before);
    free(W.pdir);
    free(W.udir);
    return 0;
}

/* ---- tests ------------------------------------------------------------- */

/* Bodies every JSON route must refuse with 400 whatever it expects. */
static const char *const bad_json[] = {
    "{",
    "{\"title\":",
    "not json",
    "[]",
    "null",
    "\"a string\"",
    "42",
    "{\"title\":\"x\",\"title\":\"y\",\"price\":1,\"quantity\":1}", /* duplicate key */
    "{\"title\":\"x\",\"price\":NaN,\"quantity\":1}",
    "{\"title\":\"x\",\"price\":Infinity,\"quantity\":1}",
    "{\"title\":\"x\",\"price\":1e400,\"quantity\":1}",
    "{\"title\":\"x\",\"price\":99999999999999999999,\"quantity\":1}",
    "{\"title\":\"x\",\"price\":1,\"quantity\":99999999999999999999}",
    "{\"title\":\"x\",\"price\":1,\"quantity\":1e400}",
    "{\"title\":\"x\",\"price\":1,\"quantity\":-1}",
    "{\"title\":\"x\",\"price\":1,\"quantity\":1.5}",
    "{\"title\":\"x\",\"price\":1,\"quantity\":1e-3}",
    "{\"title\":\"x\",\"price\":1,\"quantity\":-0.5}",
    "{\"title\":\"x\",\"price\":19.999,\"quantity\":1}",
    "{\"title\":\"x\",\"price\":0.005,\"quantity\":1}",
    "{\"title\":\"x\",\"price\":-19.99,\"quantity\":1}",
    "{\"title\":\"x\",\"price\":1e-300,\"quantity\":1}",
    "{\"title\":\"x\",\"price\":\"19.99\",\"quantity\":1}",
    "{\"title\":\"x\",\"price\":true,\"quantity\":1}",
    "{\"title\":\"x\",\"price\":{},\"quantity\":1}",
    "{\"title\":\"x\",\"price\":1,\"quantity\":\"1\"}",
    "{\"title\":\"x\",\"price\":1,\"quantity\":[1]}",
    "{\"title\":123,\"price\":1,\"quantity\":1}",
    "{\"title\":{\"$ne\":null},\"price\":1,\"quantity\":1}",
    "{\"title\":[\"x\"],\"price\":1,\"quantity\":1}",
    "{\"title\":\"x\\u0000y\",\"price\":1,\"quantity\":1}",
    "{\"title\":\"\\ud800\",\"price\":1,\"quantity\":1}",
    "{\"title\":\"\\u0007bell\",\"price\":1,\"quantity\":1}",
    "{\"title\":\"x\",\"price\":1,\"quantity\":1,\"__proto__\":{}}",
    "{\"title\":\"x\",\"price\":1,\"quantity\":1,\"deleted\":0}",
    "{\"title\":\"x\",\"price\":1,\"quantity\":1,\"productId\":\"00000000-0000-4000-8000-"
    "000000000000\"}",
};

/* Bytes that are not UTF-8, inside otherwise fine JSON. */
static const char *const bad_utf8[] = {
    "{\"title\":\"\xff\xfe\",\"price\":1,\"quantity\":1}",
    "{\"title\":\"\xc0\xaf\",\"price\":1,\"quantity\":1}",         /* overlong '/' */
    "{\"title\":\"\xed\xa0\x80\",\"price\":1,\"quantity\":1}",     /* UTF-16 surrogate */
    "{\"title\":\"caf\xc3\",\"price\":1,\"quantity\":1}",          /* cut short */
    "{\"title\":\"\xf4\x90\x80\x80\",\"price\":1,\"quantity\":1}", /* > U+10FFFF */
};

static void test_products_bodies(void **state)
{
    (void)state;
    char *item = product_path();
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad_json); i++) {
        const char *b = bad_json[i];
        expect_raw(raw(W.pport, "POST", "/products", W.admin, "application/json", b, strlen(b)),
                   400, "invalid_argument", b);
        expect_raw(raw(W.pport, "PATCH", item, W.admin, "application/json", b, strlen(b)), 400,
                   "invalid_argument", b);
    }
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad_utf8); i++) {
        const char *b = bad_utf8[i];
        expect_raw(raw(W.pport, "POST", "/products", W.admin, "application/json", b, strlen(b)),
                   400, "invalid_argument", "non-UTF-8 title");
        expect_raw(raw(W.pport, "PATCH", item, W.admin, "application/json", b, strlen(b)), 400,
                   "invalid_argument", "non-UTF-8 title");
    }

    /* Nesting deeper than any parser should follow. */
    size_t depth = 100000;
    char *deep = td_malloc(2 * depth + 1);
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[2 * depth] = '\0';
    /* 200 KB is over the size limit too; a small deep one tests the depth. */
    expect_raw(raw(W.pport, "POST", "/products", W.admin, "application/json", deep, 2 * depth), 413,
               "payload_too_large", "deep and big");
    char *small = td_asprintf("{\"title\":%.*s1%.*s,\"price\":1,\"quantity\":1}", 5000, deep, 5000,
                              deep + depth);
    expect_raw(raw(W.pport, "POST", "/products", W.admin, "application/json", small, strlen(small)),
               400, "invalid_argument", "deep");
    free(small);
    free(deep);
    free(item);
}

static void test_products_transport(void **state)
{
    (void)state;
    const char *good = "{\"title\":\"Fine\",\"price\":1,\"quantity\":1}";
    char *item = product_path();
    /* Content types. */
    expect_raw(raw(W.pport, "POST", "/products", W.admin, NULL, good, strlen(good)), 415,
               "unsupported_media_type", "no content type");
    expect_raw(raw(W.pport, "POST", "/products", W.admin, "text/plain", good, strlen(good)), 415,
               "unsupported_media_type", "text/plain");
    expect_raw(raw(W.pport, "POST", "/products", W.admin, "application/x-www-form-urlencoded",
                   "title=x&price=1&quantity=1", 26),
               415, "unsupported_media_type", "form");
    expect_raw(raw(W.pport, "PATCH", item, W.admin, "application/jsonx", "{\"price\":1}", 11), 415,
               "unsupported_media_type", "application/jsonx");
    /* No body at all. */
    expect_raw(raw(W.pport, "POST", "/products", W.admin, "application/json", "", 0), 400,
               "invalid_argument", "empty body");

    /* 1 MiB: 413, through curl too (which keeps sending). */
    size_t big = 1 << 20;
    char *body = td_malloc(big + 1);
    memset(body, ' ', big);
    memcpy(body, "{\"title\":\"", 10);
    memset(body + 10, 'x', big - 50);
    strcpy(body + big - 40, "\",\"price\":1,\"quantity\":1}");
    char *u = td_asprintf("http://127.0.0.1:%d/products", W.pport);
    ts_resp_t r = ts_http("POST", u, W.admin, body, NULL, NULL);
    assert_int_equal(r.status, 413);
    assert_string_equal(ts_error_code(&r), "payload_too_large");
    ts_resp_free(&r);
    free(u);
    /* Just over 64 KiB. */
    expect_raw(raw(W.pport, "POST", "/products", W.admin, "application/json", body, 64 * 1024 + 1),
               413, "payload_too_large", "64 KiB + 1");
    free(body);

    /* Paths and queries. */
    const char *paths[] = {
        "/products/%00",
        "/products/..%2F..%2Fetc%2Fpasswd",
        "/products/%27%3B%20DROP%20TABLE%20products%3B%20--",
        "/products/00000000-0000-4000-8000-000000000000%00",
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(paths); i++) {
        raw_resp_t rr = raw(W.pport, "GET", paths[i], NULL, NULL, NULL, 0);
        if (rr.status != 404 && rr.status != 400) fail_msg("%s: %d", paths[i], rr.status);
        expect_raw(rr, rr.status, rr.status == 404 ? "not_found" : "invalid_argument", paths[i]);
    }
    char longpath[9000];
    memcpy(longpath, "/products/", 10);
    memset(longpath + 10, 'a', 8000);
    longpath[8010] = '\0';
    raw_resp_t rr = raw(W.pport, "GET", longpath, NULL, NULL, NULL, 0);
    assert_true(rr.status >= 400 && rr.status < 500);
    json_decref(rr.json);
    const char *queries[] = {
        "/products?limit=1e400",      "/products?limit=99999999999999999999",
        "/products?limit=0x10",       "/products?limit=-0",
        "/products?after=cDE6LTE",    "/products?limit=+5",
        "/products?after=" SQL_TITLE,
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(queries); i++) {
        char *q = td_strdup(queries[i]);
        for (char *p = q; *p; p++)
            if (*p == ' ') *p = '+';
        expect_raw(raw(W.pport, "GET", q, NULL, NULL, NULL, 0), 400, "invalid_argument", q);
        free(q);
    }
    /* The HTTP layer reads a query value hiding a NUL or not UTF-8 as
     * absent (td_req_query), so these get the defaults: a whole first
     * page, never a crash or a partial answer. */
    const char *absent[] = {"/products?limit=%00", "/products?after=%00", "/products?after=%ff%fe"};
    for (size_t i = 0; i < TD_ARRAY_SIZE(absent); i++) {
        char *au = td_asprintf("http://127.0.0.1:%d%s", W.pport, absent[i]);
        ts_resp_t ar = ts_http("GET", au, NULL, NULL, NULL, NULL);
        if (ar.status != 200) fail_msg("%s: %ld", absent[i], ar.status);
        assert_int_equal(json_array_size(json_object_get(ar.json, "products")), 1);
        assert_true(json_is_null(json_object_get(ar.json, "next")));
        ts_resp_free(&ar);
        free(au);
    }
    free(item);
}

static void test_users_bodies(void **state)
{
    (void)state;
    const char *reg[] = {
        "{",
        "[]",
        "{\"email\":\"a@example.com\",\"password\":\"12345678\",\"name\":1e400}",
        "{\"email\":99999999999999999999,\"password\":\"12345678\",\"name\":\"A\"}",
        "{\"email\":\"a@example.com\",\"password\":\"12345678\",\"name\":\"\xff\"}",
        "{\"email\":\"\xc0\xaf@example.com\",\"password\":\"12345678\",\"name\":\"A\"}",
        "{\"email\":\"a@example.com\",\"password\":\"1234567\\u0000x\",\"name\":\"A\"}",
        "{\"email\":\"a@example.com\",\"password\":null,\"name\":\"A\"}",
        "{\"email\":\"'; DROP TABLE users; --\",\"password\":\"12345678\",\"name\":\"A\"}",
        "{\"email\":\"a@example.com\",\"password\":\"12345678\",\"name\":\"A\",\"role\":"
        "\"admin\"}",
        "{\"email\":\"victim@example.com\\u000a\",\"password\":\"12345678\",\"name\":\"A\\u0000\"}",
        "{\"email\":\"a@example.com\",\"email\":\"b@example.com\",\"password\":\"12345678\","
        "\"name\":\"A\"}",
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(reg); i++)
        expect_raw(raw(W.uport, "POST", "/users", NULL, "application/json", reg[i], strlen(reg[i])),
                   400, "invalid_argument", reg[i]);
    const char *good = "{\"email\":\"new@example.com\",\"password\":\"12345678\",\"name\":\"N\"}";
    expect_raw(raw(W.uport, "POST", "/users", NULL, NULL, good, strlen(good)), 415,
               "unsupported_media_type", "users without content type");
    expect_raw(raw(W.uport, "POST", "/users", NULL, "text/json", good, strlen(good)), 415,
               "unsupported_media_type", "users text/json");

    const char *logins[] = {
        "{",
        "{\"email\":\"victim@example.com\"}",
        "{\"email\":\"victim@example.com\",\"password\":7}",
        "{\"email\":[\"victim@example.com\"],\"password\":\"victim password\"}",
        "{\"email\":\"victim@example.com\",\"password\":\"victim password\",\"admin\":true}",
        "{\"email\":\"victim@example.com\\u0000\",\"password\":\"victim password\"}",
        "{\"email\":\"' OR '1'='1\",\"password\":\"' OR '1'='1\"}",
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(logins); i++)
        expect_raw(
            raw(W.uport, "POST", "/login", NULL, "application/json", logins[i], strlen(logins[i])),
            400, "invalid_argument", logins[i]);
    /* An SQL injection in a well-formed email is just a wrong login. */
    const char *inj = "{\"email\":\"victim@example.com'--\",\"password\":\"x' OR '1'='1\"}";
    raw_resp_t rr = raw(W.uport, "POST", "/login", NULL, "application/json", inj, strlen(inj));
    expect_raw(rr, 401, "unauthenticated", "sql login");

    size_t big = 1 << 20;
    char *body = td_malloc(big + 1);
    memset(body, 'a', big);
    body[big] = '\0';
    char *u = td_asprintf("http://127.0.0.1:%d/users", W.uport);
    ts_resp_t r = ts_http("POST", u, NULL, body, NULL, NULL);
    assert_int_equal(r.status, 413);
    assert_string_equal(ts_error_code(&r), "payload_too_large");
    ts_resp_free(&r);
    free(u);
    free(body);
}

static void test_no_trace_left(void **state)
{
    (void)state;
    /* The databases: the one product, unchanged; the one user; and only
     * the single well-formed wrong login recorded as a failure. */
    td_db_t *pdb = td_app_service_db(W.products);
    td_db_t *udb = users_service_db(W.users);
    assert_int_equal(count_in(pdb, "SELECT count(*) FROM products"), 1);
    char *now = get_product_body();
    assert_string_equal(now, W.product_before);
    free(now);
    assert_int_equal(count_in(udb, "SELECT count(*) FROM users"), 1);
    assert_int_equal(count_in(udb, "SELECT count(*) FROM login_failures"), 1);

    /* Kafka: the product's creation and the user's registration only. */
    ts_records_t pe =
        ts_read_topic(td_broker_bootstraps(W.broker), "tidings.products", 1, 500, 20000);
    assert_int_equal(pe.cnt, 1);
    assert_string_equal(td_record_header_str(pe.recs[0], "ce_type"), "ProductCreatedEvent");
    ts_records_free(&pe);
    ts_records_t ue = ts_read_topic(td_broker_bootstraps(W.broker), "tidings.users", 1, 500, 20000);
    assert_int_equal(ue.cnt, 1);
    assert_string_equal(td_record_header_str(ue.recs[0], "ce_type"), "UserRegisteredEvent");
    ts_records_free(&ue);
}

static void test_sql_is_data(void **state)
{
    (void)state;
    /* SQL metacharacters are stored and returned literally, everywhere. */
    const char *b = "{\"title\":\"" SQL_TITLE "\",\"price\":0.01,\"quantity\":0}";
    char *u = td_asprintf("http://127.0.0.1:%d/products", W.pport);
    ts_resp_t r = ts_http("POST", u, W.admin, b, NULL, NULL);
    assert_int_equal(r.status, 201);
    assert_string_equal(json_string_value(json_object_get(r.json, "title")), SQL_TITLE);
    char id[TD_UUID_LEN + 1];
    snprintf(id, sizeof(id), "%s", json_string_value(json_object_get(r.json, "productId")));
    ts_resp_free(&r);

    char *patch = td_asprintf("http://127.0.0.1:%d/products/%s", W.pport, id);
    r = ts_http("PATCH", patch, W.admin, "{\"title\":\"Robert'); DELETE FROM products;--\"}", NULL,
                NULL);
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);
    r = ts_http("GET", u, NULL, NULL, NULL, NULL);
    assert_int_equal(r.status, 200);
    json_t *arr = json_object_get(r.json, "products");
    assert_int_equal(json_array_size(arr), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 1), "title")),
                        "Robert'); DELETE FROM products;--");
    ts_resp_free(&r);
    free(patch);
    free(u);

    u = td_asprintf("http://127.0.0.1:%d/users", W.uport);
    r = ts_http("POST", u, NULL,
                "{\"email\":\"o'brien+x@example.com\",\"password\":\"'; DROP TABLE users; --\","
                "\"name\":\"" SQL_TITLE "\"}",
                NULL, NULL);
    assert_int_equal(r.status, 201);
    assert_string_equal(json_string_value(json_object_get(r.json, "name")), SQL_TITLE);
    assert_string_equal(json_string_value(json_object_get(r.json, "email")),
                        "o'brien+x@example.com");
    ts_resp_free(&r);
    free(u);
    u = td_asprintf("http://127.0.0.1:%d/login", W.uport);
    r = ts_http("POST", u, NULL,
                "{\"email\":\"o'brien+x@example.com\",\"password\":\"'; DROP TABLE users; --\"}",
                NULL, NULL);
    assert_int_equal(r.status, 200);
    ts_resp_free(&r);
    free(u);
    assert_int_equal(count_in(users_service_db(W.users), "SELECT count(*) FROM users"), 2);

    /* The event carries the text as it was given. */
    ts_records_t pe =
        ts_read_topic(td_broker_bootstraps(W.broker), "tidings.products", 3, 300, 20000);
    assert_int_equal(pe.cnt, 3);
    bool seen = false;
    for (size_t i = 0; i < pe.cnt; i++) {
        if (strcmp(pe.recs[i]->key, id) ||
            strcmp(td_record_header_str(pe.recs[i], "ce_type"), "ProductCreatedEvent"))
            continue;
        json_t *d = json_loadb(pe.recs[i]->value, pe.recs[i]->value_len, 0, NULL);
        assert_string_equal(json_string_value(json_object_get(d, "title")), SQL_TITLE);
        assert_non_null(strstr(pe.recs[i]->value, "\"price\":0.01,"));
        json_decref(d);
        seen = true;
    }
    assert_true(seen);
    ts_records_free(&pe);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_products_bodies), cmocka_unit_test(test_products_transport),
        cmocka_unit_test(test_users_bodies),    cmocka_unit_test(test_no_trace_left),
        cmocka_unit_test(test_sql_is_data),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
