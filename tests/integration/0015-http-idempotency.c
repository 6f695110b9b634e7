/* Safe retries at the HTTP layer (td_http_opts_t.idem_db, tidings/idem.h):
 * a POST with an Idempotency-Key runs once; a repeat gets the first answer
 * byte for byte, also after the server and its database were closed and
 * opened again; another body with the key gets 422; a repeat while the
 * first runs gets 409; a 5xx is not kept and its effect is rolled back; a
 * no-store answer is not kept; the handler's units, nested ones and reads
 * included, commit with the answer; keys are per caller; expired keys are
 * pruned. Each fails without the feature (the handler would run twice). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/auth.h"
#include "tidings/http.h"
#include "tidings/idem.h"
#include "tsupport.h"

static const td_migration_t migs[] = {
    {1, "CREATE TABLE things (id INTEGER PRIMARY KEY, what TEXT NOT NULL);"},
};

static td_db_t *db;
static td_http_t *http;
static char url[128];
static char *path;
static atomic_int block; /* 1: the handler waits until it is 0 */
static atomic_int inside;

static const unsigned char secret[] = "0123456789abcdef0123456789abcdef";

static int64_t things(void)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, "SELECT count(*) FROM things");
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(db);
    return n;
}

/* Creates a thing in two units and a read between (as a domain function
 * does), answers 201 with its id, or with the status asked for. */
static void post_thing(td_req_t *req, td_resp_t *resp)
{
    if (!td_req_body(req, resp)) return;
    atomic_fetch_add(&inside, 1);
    while (atomic_load(&block)) td_sleep_ms(5);
    const char *what = json_string_value(json_object_get(req->body, "what"));
    int fail = (int)json_integer_value(json_object_get(req->body, "fail"));
    assert_int_equal(td_db_begin(db), 0);
    sqlite3_stmt *st = td_db_prepare(db, "INSERT INTO things(what) VALUES(?)");
    sqlite3_bind_text(st, 1, what ? what : "", -1, SQLITE_TRANSIENT);
    assert_int_equal(td_db_run(db, st), 0);
    int64_t id = sqlite3_last_insert_rowid(td_db_sqlite(db));
    assert_int_equal(td_db_commit(db), 0);
    /* A unit rolled back inside: undoes only itself. */
    assert_int_equal(td_db_begin(db), 0);
    st = td_db_prepare(db, "INSERT INTO things(what) VALUES('undone')");
    assert_int_equal(td_db_run(db, st), 0);
    td_db_rollback(db);
    int64_t n = things();
    if (fail) {
        td_resp_error(resp, fail, "failed as asked");
        return;
    }
    td_resp_json(
        resp, 201,
        json_pack("{s:I, s:I, s:s}", "id", (json_int_t)id, "seen", (json_int_t)n, "now", "x"));
    td_resp_header(resp, "Location", "/things/1");
    if (json_is_true(json_object_get(req->body, "secret")))
        td_resp_header(resp, "Cache-Control", "no-store");
}

static const td_route_t routes[] = {
    {"POST", "/things", post_thing, TD_AUTH_UNDECLARED, TD_BODY_NONE, 0}};

static void open_all(void)
{
    char err[256];
    db = td_db_open(path, migs, TD_ARRAY_SIZE(migs), err, sizeof(err));
    assert_non_null(db);
    assert_int_equal(td_idem_migrate(db, err, sizeof(err)), 0);
    td_http_opts_t o = {.service = "idem",
                        .routes = routes,
                        .route_cnt = TD_ARRAY_SIZE(routes),
                        .secret = secret,
                        .secret_len = 32,
                        .idem_db = db};
    http = td_http_start(&o, err, sizeof(err));
    assert_non_null(http);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/things", td_http_port(http));
}

static void close_all(void)
{
    td_http_stop(http);
    td_db_close(db);
}

static ts_resp_t post(const char *key, const char *body, const char *token)
{
    char h[400] = "";
    if (key) snprintf(h, sizeof(h), "Idempotency-Key: %s", key);
    const char *hdrs[] = {h, NULL};
    return ts_http("POST", url, token, body, NULL, key ? hdrs : NULL);
}

static void test_retry_gets_first_answer(void **state)
{
    (void)state;
    ts_resp_t a = post("k-1", "{\"what\":\"a\"}", NULL);
    assert_int_equal(a.status, 201);
    assert_int_equal(things(), 1);
    ts_resp_t b = post("k-1", "{\"what\":\"a\"}", NULL);
    assert_int_equal(b.status, 201);
    assert_int_equal(b.body_len, a.body_len);
    assert_memory_equal(b.body, a.body, a.body_len);
    char v[64];
    assert_string_equal(ts_resp_header(&b, "Location", v, sizeof(v)), "/things/1");
    assert_string_equal(ts_resp_header(&b, "Idempotent-Replayed", v, sizeof(v)), "true");
    assert_int_equal(things(), 1);

    /* Another body: 422, nothing done. */
    ts_resp_t c = post("k-1", "{\"what\":\"b\"}", NULL);
    assert_int_equal(c.status, 422);
    assert_string_equal(ts_error_code(&c), "idempotency_key_mismatch");
    assert_int_equal(things(), 1);

    /* Without a key every request runs. */
    ts_resp_t d = post(NULL, "{\"what\":\"a\"}", NULL);
    assert_int_equal(d.status, 201);
    assert_int_equal(things(), 2);

    /* A restart: the answer is in the database with the effect. */
    close_all();
    open_all();
    ts_resp_t e = post("k-1", "{\"what\":\"a\"}", NULL);
    assert_int_equal(e.status, 201);
    assert_int_equal(e.body_len, a.body_len);
    assert_memory_equal(e.body, a.body, a.body_len);
    assert_int_equal(things(), 2);

    ts_resp_free(&a);
    ts_resp_free(&b);
    ts_resp_free(&c);
    ts_resp_free(&d);
    ts_resp_free(&e);
}

static void test_bad_key(void **state)
{
    (void)state;
    char longkey[300];
    memset(longkey, 'x', 256);
    longkey[256] = '\0';
    ts_resp_t a = post(longkey, "{\"what\":\"a\"}", NULL);
    assert_int_equal(a.status, 400);
    ts_resp_free(&a);
}

typedef struct call {
    ts_resp_t r;
} call_t;

static void *post_thread(void *arg)
{
    call_t *c = arg;
    c->r = post("k-concurrent", "{\"what\":\"c\"}", NULL);
    return NULL;
}

static void test_concurrent_repeat_conflicts(void **state)
{
    (void)state;
    int64_t before = things();
    atomic_store(&inside, 0);
    atomic_store(&block, 1);
    call_t first;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, post_thread, &first), 0);
    while (atomic_load(&inside) == 0) td_sleep_ms(5);
    ts_resp_t second = post("k-concurrent", "{\"what\":\"c\"}", NULL);
    assert_int_equal(second.status, 409);
    assert_string_equal(ts_error_code(&second), "conflict");
    atomic_store(&block, 0);
    pthread_join(t, NULL);
    assert_int_equal(first.r.status, 201);
    assert_int_equal(things(), before + 1);
    ts_resp_t third = post("k-concurrent", "{\"what\":\"c\"}", NULL);
    assert_int_equal(third.status, 201);
    assert_string_equal(third.body, first.r.body);
    assert_int_equal(things(), before + 1);
    ts_resp_free(&first.r);
    ts_resp_free(&second);
    ts_resp_free(&third);
}

static void test_server_error_not_kept(void **state)
{
    (void)state;
    int64_t before = things();
    ts_resp_t a = post("k-500", "{\"what\":\"e\",\"fail\":500}", NULL);
    assert_int_equal(a.status, 500);
    assert_int_equal(things(), before); /* rolled back with its answer */
    ts_resp_t b = post("k-500", "{\"what\":\"e\",\"fail\":500}", NULL);
    assert_int_equal(b.status, 500);
    assert_int_equal(things(), before);
    /* A 4xx is an answer like any other: kept, the effect with it. */
    ts_resp_t c = post("k-409", "{\"what\":\"e\",\"fail\":409}", NULL);
    assert_int_equal(c.status, 409);
    assert_int_equal(things(), before + 1);
    ts_resp_t d = post("k-409", "{\"what\":\"e\",\"fail\":409}", NULL);
    assert_int_equal(d.status, 409);
    assert_string_equal(d.body, c.body);
    assert_int_equal(things(), before + 1);
    /* no-store: runs again. */
    ts_resp_t e = post("k-secret", "{\"what\":\"s\",\"secret\":true}", NULL);
    ts_resp_t f = post("k-secret", "{\"what\":\"s\",\"secret\":true}", NULL);
    assert_int_equal(e.status, 201);
    assert_int_equal(f.status, 201);
    assert_int_equal(things(), before + 3);
    ts_resp_free(&a);
    ts_resp_free(&b);
    ts_resp_free(&c);
    ts_resp_free(&d);
    ts_resp_free(&e);
    ts_resp_free(&f);
}

static void test_keys_per_caller(void **state)
{
    (void)state;
    td_claims_t claims = {.iat = td_now_ms() / 1000, .exp = td_now_ms() / 1000 + 600};
    snprintf(claims.sub, sizeof(claims.sub), "11111111-1111-4111-8111-111111111111");
    snprintf(claims.role, sizeof(claims.role), "customer");
    char *token = td_jwt_sign(secret, 32, &claims);
    int64_t before = things();
    ts_resp_t a = post("k-shared", "{\"what\":\"u\"}", NULL);
    ts_resp_t b = post("k-shared", "{\"what\":\"u\"}", token);
    assert_int_equal(a.status, 201);
    assert_int_equal(b.status, 201);
    assert_int_equal(things(), before + 2);
    ts_resp_t c = post("k-shared", "{\"what\":\"u\"}", token);
    assert_string_equal(c.body, b.body);
    assert_int_equal(things(), before + 2);
    free(token);
    ts_resp_free(&a);
    ts_resp_free(&b);
    ts_resp_free(&c);
}

static void test_prune(void **state)
{
    (void)state;
    int64_t now = td_now_ms();
    ts_resp_t a = post("k-old", "{\"what\":\"o\"}", NULL);
    assert_int_equal(a.status, 201);
    int64_t before = things();
    /* Nothing is young enough to go yet. */
    assert_int_equal(td_idem_prune(db, now), 0);
    td_idem_answer_t ans;
    assert_int_equal(td_idem_lookup(db, "ip:127.0.0.1", "k-old", now, &ans), 0);
    td_idem_answer_clear(&ans);
    /* A day later the key is gone: lookups ignore it, the prune deletes it,
     * and the same key runs again. */
    int64_t later = now + TD_IDEM_TTL_MS + 1000;
    assert_int_equal(td_idem_lookup(db, "ip:127.0.0.1", "k-old", later, &ans), TD_ENOENT);
    assert_true(td_idem_prune(db, later) >= 1);
    assert_int_equal(td_idem_lookup(db, "ip:127.0.0.1", "k-old", now, &ans), TD_ENOENT);
    ts_resp_t b = post("k-old", "{\"what\":\"o\"}", NULL);
    assert_int_equal(b.status, 201);
    assert_int_equal(things(), before + 1);
    ts_resp_free(&a);
    ts_resp_free(&b);
}

int main(void)
{
    char *dir = ts_tmpdir("idem");
    path = td_asprintf("%s/idem.db", dir);
    open_all();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_retry_gets_first_answer),
        cmocka_unit_test(test_bad_key),
        cmocka_unit_test(test_concurrent_repeat_conflicts),
        cmocka_unit_test(test_server_error_not_kept),
        cmocka_unit_test(test_keys_per_caller),
        cmocka_unit_test(test_prune),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    close_all();
    free(path);
    free(dir);
    return rc;
}
