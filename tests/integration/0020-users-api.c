/* The users service's HTTP API in-process against the embedded broker:
 * registration (normalised email, validation, conflict), login (tokens
 * with the SPEC claims, one message for unknown email and wrong password,
 * the rate limit with Retry-After and its window), GET /users/me with
 * missing, expired, tampered and foreign tokens, the admin account from
 * TIDINGS_ADMIN_PASSWORD and from --create-admin, and the events on
 * tidings.users: exactly one per state change, with the right type, key,
 * CloudEvents headers and data. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tidings/auth.h"
#include "tidings/json.h"
#include "tidings/uuid.h"
#include "tsupport.h"
#include "users/users.h"
#include "users/users_service.h"

typedef struct world {
    td_config_t cfg;
    char *dir;
    td_broker_t *broker;
    users_service_t *svc;
    char base[64];
    char alice_id[TD_UUID_LEN + 1];
    char alice_token[1024];
} world_t;

static world_t W;

/* ---- helpers ----------------------------------------------------------- */

static char *url(const char *path)
{
    return td_asprintf("%s%s", W.base, path);
}

static ts_resp_t post(const char *path, const char *body, const char *const *headers)
{
    char *u = url(path);
    ts_resp_t r = ts_http("POST", u, NULL, body, NULL, headers);
    free(u);
    return r;
}

static ts_resp_t get_me(const char *token)
{
    char *u = url("/users/me");
    ts_resp_t r = ts_http("GET", u, token, NULL, NULL, NULL);
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

static int64_t db_count(td_db_t *db, const char *sql)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, sql);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(db);
    return n;
}

static int64_t users_rows(void)
{
    return db_count(users_service_db(W.svc), "SELECT count(*) FROM users");
}

static char *token_for(const char *sub, const char *role, int64_t exp_s)
{
    td_claims_t c = {0};
    snprintf(c.sub, sizeof(c.sub), "%s", sub);
    snprintf(c.role, sizeof(c.role), "%s", role);
    c.iat = td_now_ms() / 1000 - 10;
    c.exp = exp_s;
    return td_jwt_sign(W.cfg.secret, W.cfg.secret_len, &c);
}

/* Registers and returns the response (caller frees). */
static ts_resp_t register_user(const char *email, const char *password, const char *name)
{
    json_t *b = json_pack("{s:s, s:s, s:s}", "email", email, "password", password, "name", name);
    char *text = td_json_dumps(b);
    json_decref(b);
    ts_resp_t r = post("/users", text, NULL);
    free(text);
    return r;
}

static ts_resp_t login(const char *email, const char *password)
{
    json_t *b = json_pack("{s:s, s:s}", "email", email, "password", password);
    char *text = td_json_dumps(b);
    json_decref(b);
    static const char *const ua[] = {"User-Agent: tidings-test/1.0", NULL};
    ts_resp_t r = post("/login", text, ua);
    free(text);
    return r;
}

/* Every record on tidings.users whose key is key, once the relay is done. */
static ts_records_t user_events(size_t want)
{
    char *topic = td_topic_name(&W.cfg, "users");
    ts_records_t all = ts_read_topic(td_broker_bootstraps(W.broker), topic, want, 300, 20000);
    free(topic);
    return all;
}

static size_t count_events(const ts_records_t *all, const char *key, const char *type)
{
    size_t n = 0;
    for (size_t i = 0; i < all->cnt; i++) {
        const td_record_t *rec = all->recs[i];
        if (rec->key && !strcmp(rec->key, key) &&
            !strcmp(td_record_header_str(rec, "ce_type"), type))
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

/* The CloudEvents headers every event of the users service carries. */
static void check_headers(const td_record_t *rec, const char *type)
{
    assert_string_equal(td_record_header_str(rec, "ce_specversion"), "1.0");
    assert_true(td_uuid_valid(td_record_header_str(rec, "ce_id")));
    assert_string_equal(td_record_header_str(rec, "ce_source"), "/tidings/users");
    assert_string_equal(td_record_header_str(rec, "ce_type"), type);
    assert_string_equal(td_record_header_str(rec, "ce_subject"), (const char *)rec->key);
    assert_string_equal(td_record_header_str(rec, "content-type"), "application/json");
    int64_t ms;
    assert_int_equal(td_time_parse(td_record_header_str(rec, "ce_time"), &ms), 0);
    assert_true(llabs(ms - td_now_ms()) < 120000);
    assert_non_null(td_record_header_str(rec, "ce_correlationid"));
    assert_null(td_record_header(rec, "ce_causationid"));
    assert_non_null(td_record_header_str(rec, "traceparent"));
}

static json_t *record_data(const td_record_t *rec)
{
    json_t *j = json_loadb(rec->value, rec->value_len, 0, NULL);
    assert_non_null(j);
    return j;
}

/* ---- setup ------------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    memset(&W, 0, sizeof(W));
    W.dir = ts_tmpdir("0020-users");
    ts_config(&W.cfg, "users", W.dir, NULL);
    W.broker = ts_broker(&W.cfg);
    W.cfg.brokers = td_strdup(td_broker_bootstraps(W.broker));
    W.cfg.ports[TD_SVC_USERS] = 0;
    char err[256];
    W.svc = users_service_start(&W.cfg, err, sizeof(err));
    if (!W.svc) {
        print_error("users_service_start: %s\n", err);
        return -1;
    }
    snprintf(W.base, sizeof(W.base), "http://127.0.0.1:%d", users_service_port(W.svc));
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    users_service_stop(W.svc);
    td_broker_stop(W.broker);
    td_config_free(&W.cfg);
    free(W.dir);
    return 0;
}

/* ---- tests ------------------------------------------------------------- */

static void test_register(void **state)
{
    (void)state;
    static const char *const hdrs[] = {
        "X-Request-Id: 4f1c6a2e-8b3d-4e5f-9a0b-1c2d3e4f5a6b",
        "traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", NULL};
    ts_resp_t r = post("/users",
                       "{\"email\":\"  Alice@Example.COM \",\"password\":\"correct horse\","
                       "\"name\":\"Alice\"}",
                       hdrs);
    expect(&r, 201, NULL, NULL);
    assert_int_equal(json_object_size(r.json), 4);
    assert_true(td_uuid_valid(jstr(r.json, "userId")));
    assert_string_equal(jstr(r.json, "email"), "alice@example.com");
    assert_string_equal(jstr(r.json, "name"), "Alice");
    int64_t ms;
    assert_int_equal(td_time_parse(jstr(r.json, "createdAt"), &ms), 0);
    snprintf(W.alice_id, sizeof(W.alice_id), "%s", jstr(r.json, "userId"));
    ts_resp_free(&r);

    /* The stored hash is argon2id, not the password. */
    td_db_t *db = users_service_db(W.svc);
    assert_int_equal(db_count(db, "SELECT count(*) FROM users WHERE password_hash LIKE "
                                  "'$argon2id$%' AND password_hash NOT LIKE '%correct horse%'"),
                     1);

    /* The same email in another spelling is taken; nothing is added. */
    r = register_user("ALICE@example.com", "another password", "Alice Two");
    expect(&r, 409, "conflict", "email is already registered");
    ts_resp_free(&r);
    assert_int_equal(users_rows(), 1);
}

static void test_register_validation(void **state)
{
    (void)state;
    char longname[300] = {0};
    memset(longname, 'n', 101);
    char *long_name_body = td_asprintf(
        "{\"email\":\"n@example.com\",\"password\":\"12345678\",\"name\":\"%s\"}", longname);
    char longpw[1100] = {0};
    memset(longpw, 'p', 1025);
    char *long_pw_body =
        td_asprintf("{\"email\":\"p@example.com\",\"password\":\"%s\",\"name\":\"P\"}", longpw);
    struct {
        const char *body, *message;
    } cases[] = {
        {"{\"password\":\"12345678\",\"name\":\"A\"}", "email is required"},
        {"{\"email\":\"a@example.com\",\"name\":\"A\"}", "password is required"},
        {"{\"email\":\"a@example.com\",\"password\":\"12345678\"}", "name is required"},
        {"{\"email\":\"not-an-email\",\"password\":\"12345678\",\"name\":\"A\"}",
         "email must be a valid email address"},
        {"{\"email\":\"a@b\",\"password\":\"12345678\",\"name\":\"A\"}",
         "email must be a valid email address"},
        {"{\"email\":\"a b@example.com\",\"password\":\"12345678\",\"name\":\"A\"}",
         "email must be a valid email address"},
        {"{\"email\":\"   \",\"password\":\"12345678\",\"name\":\"A\"}", "email is required"},
        {"{\"email\":\"a@example.com\",\"password\":\"1234567\",\"name\":\"A\"}",
         "password must be at least 8 characters"},
        {long_pw_body, "password must be at most 1024 characters"},
        {"{\"email\":\"a@example.com\",\"password\":\"12345678\",\"name\":\"\"}",
         "name is required"},
        {"{\"email\":\"a@example.com\",\"password\":\"12345678\",\"name\":\"  \"}",
         "name must not be blank"},
        {long_name_body, "name must be at most 100 characters"},
        {"{\"email\":5,\"password\":\"12345678\",\"name\":\"A\"}", "email must be a string"},
        {"{\"email\":\"a@example.com\",\"password\":12345678,\"name\":\"A\"}",
         "password must be a string"},
        {"{\"email\":\"a@example.com\",\"password\":\"12345678\",\"name\":[\"A\"]}",
         "name must be a string"},
        {"{\"email\":\"a@example.com\",\"password\":\"12345678\",\"name\":\"A\",\"role\":"
         "\"admin\"}",
         "unknown field 'role'"},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(cases); i++) {
        ts_resp_t r = post("/users", cases[i].body, NULL);
        expect(&r, 400, "invalid_argument", cases[i].message);
        ts_resp_free(&r);
    }
    ts_resp_t r = post("/users", NULL, NULL);
    expect(&r, 400, "invalid_argument", "request body is required");
    ts_resp_free(&r);
    free(long_name_body);
    free(long_pw_body);
    assert_int_equal(users_rows(), 1);
}

static void test_login(void **state)
{
    (void)state;
    ts_resp_t r = login(" ALICE@example.com", "correct horse");
    expect(&r, 200, NULL, NULL);
    assert_int_equal(json_object_size(r.json), 4);
    assert_string_equal(jstr(r.json, "userId"), W.alice_id);
    assert_string_equal(jstr(r.json, "role"), "customer");
    const char *token = jstr(r.json, "token");
    assert_non_null(token);
    snprintf(W.alice_token, sizeof(W.alice_token), "%s", token);

    /* The token: HS256 with the shared secret, sub, role, exp = expiresAt. */
    td_claims_t c;
    char err[128];
    assert_int_equal(td_jwt_verify(W.cfg.secret, W.cfg.secret_len, token, td_now_ms() / 1000, &c,
                                   err, sizeof(err)),
                     0);
    assert_string_equal(c.sub, W.alice_id);
    assert_string_equal(c.role, "customer");
    int64_t exp_ms;
    assert_int_equal(td_time_parse(jstr(r.json, "expiresAt"), &exp_ms), 0);
    assert_int_equal(exp_ms / 1000, c.exp);
    assert_true(c.exp > td_now_ms() / 1000 + 3600);
    ts_resp_free(&r);

    /* Unknown email and wrong password: the same 401. */
    r = login("nobody@example.com", "correct horse");
    expect(&r, 401, "unauthenticated", "invalid email or password");
    char unknown_body[512];
    snprintf(unknown_body, sizeof(unknown_body), "%s", r.body);
    ts_resp_free(&r);
    r = login("alice@example.com", "wrong horse!");
    expect(&r, 401, "unauthenticated", "invalid email or password");
    assert_string_equal(r.body, unknown_body);
    ts_resp_free(&r);

    /* Malformed login requests. */
    r = post("/login", "{\"email\":\"alice@example.com\"}", NULL);
    expect(&r, 400, "invalid_argument", "password is required");
    ts_resp_free(&r);
    r = post("/login", "{\"email\":\"alice@example.com\",\"password\":\"x\",\"remember\":true}",
             NULL);
    expect(&r, 400, "invalid_argument", "unknown field 'remember'");
    ts_resp_free(&r);

    /* A good login clears the failure recorded above. */
    r = login("alice@example.com", "correct horse");
    expect(&r, 200, NULL, NULL);
    ts_resp_free(&r);
    assert_int_equal(db_count(users_service_db(W.svc), "SELECT count(*) FROM login_failures "
                                                       "WHERE email = 'alice@example.com'"),
                     0);
}

static void test_me(void **state)
{
    (void)state;
    ts_resp_t r = get_me(W.alice_token);
    expect(&r, 200, NULL, NULL);
    assert_int_equal(json_object_size(r.json), 5);
    assert_string_equal(jstr(r.json, "userId"), W.alice_id);
    assert_string_equal(jstr(r.json, "email"), "alice@example.com");
    assert_string_equal(jstr(r.json, "name"), "Alice");
    assert_string_equal(jstr(r.json, "role"), "customer");
    assert_non_null(jstr(r.json, "createdAt"));
    ts_resp_free(&r);

    r = get_me(NULL);
    expect(&r, 401, "unauthenticated", NULL);
    ts_resp_free(&r);

    char *expired = token_for(W.alice_id, "customer", td_now_ms() / 1000 - 5);
    r = get_me(expired);
    expect(&r, 401, "unauthenticated", NULL);
    ts_resp_free(&r);
    free(expired);

    /* Tampered: the payload changed (role admin), the signature kept. */
    char *forged = token_for(W.alice_id, "admin", td_now_ms() / 1000 + 600);
    char tampered[1024];
    const char *p1 = strchr(W.alice_token, '.'), *p2 = strrchr(W.alice_token, '.');
    const char *f1 = strchr(forged, '.'), *f2 = strrchr(forged, '.');
    snprintf(tampered, sizeof(tampered), "%.*s%.*s%s", (int)(p1 - W.alice_token), W.alice_token,
             (int)(f2 - f1), f1, p2);
    r = get_me(tampered);
    expect(&r, 401, "unauthenticated", NULL);
    ts_resp_free(&r);
    free(forged);

    /* Signed with another key. */
    td_claims_t c = {0};
    snprintf(c.sub, sizeof(c.sub), "%s", W.alice_id);
    snprintf(c.role, sizeof(c.role), "customer");
    c.exp = td_now_ms() / 1000 + 600;
    char *other = td_jwt_sign((const unsigned char *)"another-secret-of-32-bytes-long!", 32, &c);
    r = get_me(other);
    expect(&r, 401, "unauthenticated", NULL);
    ts_resp_free(&r);
    free(other);

    /* A valid token for an account that does not exist. */
    char *ghost =
        token_for("00000000-0000-4000-8000-000000000000", "customer", td_now_ms() / 1000 + 600);
    r = get_me(ghost);
    expect(&r, 404, "not_found", NULL);
    ts_resp_free(&r);
    free(ghost);
}

static void test_rate_limit(void **state)
{
    (void)state;
    ts_resp_t r = register_user("bob@example.com", "bob's password", "Bob");
    expect(&r, 201, NULL, NULL);
    ts_resp_free(&r);

    for (int i = 0; i < 5; i++) {
        r = login("bob@example.com", "not bob's password");
        expect(&r, 401, "unauthenticated", "invalid email or password");
        ts_resp_free(&r);
    }
    /* Now even the right password is refused, with Retry-After. */
    r = login("Bob@Example.com", "bob's password");
    expect(&r, 429, "rate_limited", NULL);
    char ra[32];
    assert_non_null(ts_resp_header(&r, "Retry-After", ra, sizeof(ra)));
    long secs = atol(ra);
    assert_true(secs > 850 && secs <= 900);
    ts_resp_free(&r);
    /* Refused attempts do not extend the lock or add failures. */
    td_db_t *db = users_service_db(W.svc);
    assert_int_equal(
        db_count(db, "SELECT count(*) FROM login_failures WHERE email = 'bob@example.com'"), 5);

    /* Another email is not affected. */
    r = login("alice@example.com", "correct horse");
    expect(&r, 200, NULL, NULL);
    ts_resp_free(&r);

    /* An unknown email is limited the same way (it reveals nothing). */
    for (int i = 0; i < 5; i++) {
        r = login("ghost@example.com", "whatever1");
        expect(&r, 401, NULL, NULL);
        ts_resp_free(&r);
    }
    r = login("ghost@example.com", "whatever1");
    expect(&r, 429, "rate_limited", NULL);
    ts_resp_free(&r);

    /* When the window has passed (moved back in the database rather than
     * waited for), the right password works and clears the failures. */
    assert_int_equal(td_db_begin(db), 0);
    sqlite3_exec(td_db_sqlite(db),
                 "UPDATE login_failures SET at_ms = at_ms - 15 * 60 * 1000 - 1000 "
                 "WHERE email = 'bob@example.com'",
                 NULL, NULL, NULL);
    assert_int_equal(td_db_commit(db), 0);
    r = login("bob@example.com", "bob's password");
    expect(&r, 200, NULL, NULL);
    ts_resp_free(&r);
    assert_int_equal(
        db_count(db, "SELECT count(*) FROM login_failures WHERE email = 'bob@example.com'"), 0);
}

static void test_events(void **state)
{
    (void)state;
    /* alice: registered once, logged in 3 times; bob: registered, 1 login. */
    ts_records_t all = user_events(6);
    assert_true(all.cnt >= 6);
    assert_int_equal(count_events(&all, W.alice_id, "UserRegisteredEvent"), 1);
    assert_int_equal(count_events(&all, W.alice_id, "UserLoggedInEvent"), 3);
    for (size_t i = 0; i < all.cnt; i++) assert_string_equal(all.recs[i]->topic, "tidings.users");

    const td_record_t *reg = find_event(&all, W.alice_id, "UserRegisteredEvent");
    check_headers(reg, "UserRegisteredEvent");
    /* The request's id is the correlation id, its trace continues. */
    assert_string_equal(td_record_header_str(reg, "ce_correlationid"),
                        "4f1c6a2e-8b3d-4e5f-9a0b-1c2d3e4f5a6b");
    assert_memory_equal(td_record_header_str(reg, "traceparent"),
                        "00-0af7651916cd43dd8448eb211c80319c-", 36);
    json_t *d = record_data(reg);
    assert_int_equal(json_object_size(d), 4);
    assert_string_equal(jstr(d, "userId"), W.alice_id);
    assert_string_equal(jstr(d, "email"), "alice@example.com");
    assert_string_equal(jstr(d, "name"), "Alice");
    int64_t ms;
    assert_int_equal(td_time_parse(jstr(d, "registeredAt"), &ms), 0);
    json_decref(d);

    const td_record_t *in = find_event(&all, W.alice_id, "UserLoggedInEvent");
    check_headers(in, "UserLoggedInEvent");
    d = record_data(in);
    assert_int_equal(json_object_size(d), 5);
    assert_string_equal(jstr(d, "userId"), W.alice_id);
    assert_string_equal(jstr(d, "email"), "alice@example.com");
    assert_int_equal(td_time_parse(jstr(d, "loggedInAt"), &ms), 0);
    assert_string_equal(jstr(d, "userAgent"), "tidings-test/1.0");
    assert_string_equal(jstr(d, "ip"), "127.0.0.1");
    json_decref(d);

    /* Refused registrations and failed logins published nothing: every
     * event belongs to alice or bob. */
    for (size_t i = 0; i < all.cnt; i++) {
        json_t *data = record_data(all.recs[i]);
        const char *email = jstr(data, "email");
        assert_true(!strcmp(email, "alice@example.com") || !strcmp(email, "bob@example.com"));
        json_decref(data);
    }
    assert_int_equal(all.cnt, 6);
    ts_records_free(&all);
}

static void test_admin_from_env(void **state)
{
    (void)state;
    /* A second users service (own data dir, same broker) with
     * TIDINGS_ADMIN_PASSWORD: the admin exists at start. */
    td_config_t cfg;
    char *dir = ts_tmpdir("0020-users-admin");
    ts_config(&cfg, "users", dir, td_broker_bootstraps(W.broker));
    cfg.ports[TD_SVC_USERS] = 0;
    cfg.admin_password = td_strdup("admin password 1");
    char err[256];
    users_service_t *svc = users_service_start(&cfg, err, sizeof(err));
    assert_non_null(svc);
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/login", users_service_port(svc));
    ts_resp_t r = ts_http("POST", base, NULL,
                          "{\"email\":\"admin@tidings.local\",\"password\":\"admin password 1\"}",
                          NULL, NULL);
    expect(&r, 200, NULL, NULL);
    assert_string_equal(jstr(r.json, "role"), "admin");
    char admin_id[TD_UUID_LEN + 1];
    snprintf(admin_id, sizeof(admin_id), "%s", jstr(r.json, "userId"));
    td_claims_t c;
    assert_int_equal(td_jwt_verify(cfg.secret, cfg.secret_len, jstr(r.json, "token"),
                                   td_now_ms() / 1000, &c, err, sizeof(err)),
                     0);
    assert_string_equal(c.role, "admin");
    ts_resp_free(&r);
    users_service_stop(svc);

    /* A restart with another password changes it, with no new account. */
    free(cfg.admin_password);
    cfg.admin_password = td_strdup("admin password 2");
    svc = users_service_start(&cfg, err, sizeof(err));
    assert_non_null(svc);
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/login", users_service_port(svc));
    r = ts_http("POST", base, NULL,
                "{\"email\":\"admin@tidings.local\",\"password\":\"admin password 1\"}", NULL,
                NULL);
    expect(&r, 401, NULL, NULL);
    ts_resp_free(&r);
    r = ts_http("POST", base, NULL,
                "{\"email\":\"admin@tidings.local\",\"password\":\"admin password 2\"}", NULL,
                NULL);
    expect(&r, 200, NULL, NULL);
    assert_string_equal(jstr(r.json, "userId"), admin_id);
    ts_resp_free(&r);
    assert_int_equal(db_count(users_service_db(svc), "SELECT count(*) FROM users"), 1);
    users_service_stop(svc);

    /* One UserRegisteredEvent for the admin, none for the restart. */
    ts_records_t all =
        ts_read_topic(td_broker_bootstraps(W.broker), "tidings.users", 9, 300, 20000);
    assert_int_equal(count_events(&all, admin_id, "UserRegisteredEvent"), 1);
    assert_int_equal(count_events(&all, admin_id, "UserLoggedInEvent"), 2);
    ts_records_free(&all);

    /* A password too short for an account refuses to start. */
    free(cfg.admin_password);
    cfg.admin_password = td_strdup("short");
    assert_null(users_service_start(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "TIDINGS_ADMIN_PASSWORD"));
    td_config_free(&cfg);
    free(dir);
}

/* Runs `tidings users --create-admin ...` in-process with stdin_text on
 * its stdin; returns the exit code and the first stdout line in out. */
static int create_admin(char **argv, int argc, const char *stdin_text, char *out, size_t outlen)
{
    int in_pipe[2], out_pipe[2];
    assert_int_equal(pipe(in_pipe), 0);
    assert_int_equal(pipe(out_pipe), 0);
    if (stdin_text) assert_true(write(in_pipe[1], stdin_text, strlen(stdin_text)) >= 0);
    close(in_pipe[1]);
    int saved_in = dup(0), saved_out = dup(1);
    fflush(stdout);
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    clearerr(stdin);
    int rc = users_create_admin_main(argc, argv);
    fflush(stdout);
    dup2(saved_in, 0);
    dup2(saved_out, 1);
    clearerr(stdin);
    close(saved_in);
    close(saved_out);
    close(in_pipe[0]);
    close(out_pipe[1]);
    ssize_t n = read(out_pipe[0], out, outlen - 1);
    out[n > 0 ? n : 0] = '\0';
    char *nl = strchr(out, '\n');
    if (nl) *nl = '\0';
    close(out_pipe[0]);
    return rc;
}

static void test_create_admin_command(void **state)
{
    (void)state;
    char *dir = ts_tmpdir("0020-users-cli");
    char out[256];
    unsetenv("TIDINGS_ADMIN_PASSWORD");

    /* Password from stdin; a new account. */
    char *argv1[] = {"users", "--create-admin", "Root@Example.org", "--data", dir};
    assert_int_equal(create_admin(argv1, 5, "root password\n", out, sizeof(out)), 0);
    assert_true(td_uuid_valid(out));
    char root_id[TD_UUID_LEN + 1];
    snprintf(root_id, sizeof(root_id), "%.36s", out);

    /* Password from the environment; --create-admin=EMAIL; the same
     * account again (promote = no-op), same id. */
    setenv("TIDINGS_ADMIN_PASSWORD", "root password 2", 1);
    char *flag = td_asprintf("--create-admin=%s", "root@example.org");
    char *argv2[] = {"users", "--data", dir, flag};
    assert_int_equal(create_admin(argv2, 4, NULL, out, sizeof(out)), 0);
    assert_string_equal(out, root_id);
    free(flag);
    unsetenv("TIDINGS_ADMIN_PASSWORD");

    /* Bad input: exit code 1, nothing printed. */
    char *argv3[] = {"users", "--create-admin", "not an email", "--data", dir};
    assert_int_equal(create_admin(argv3, 5, "root password\n", out, sizeof(out)), 1);
    assert_string_equal(out, "");
    char *argv4[] = {"users", "--create-admin", "x@example.org", "--data", dir};
    assert_int_equal(create_admin(argv4, 5, "short\n", out, sizeof(out)), 1);
    assert_int_equal(create_admin(argv4, 5, "", out, sizeof(out)), 1);
    char *argv5[] = {"users", "--create-admin"};
    assert_int_equal(create_admin(argv5, 2, "root password\n", out, sizeof(out)), 1);

    /* The service on that data dir: the admin logs in with the password
     * given last, and the account's one event is published from the
     * outbox the command left. */
    td_config_t cfg;
    ts_config(&cfg, "users", dir, td_broker_bootstraps(W.broker));
    cfg.ports[TD_SVC_USERS] = 0;
    char err[256];
    users_service_t *svc = users_service_start(&cfg, err, sizeof(err));
    assert_non_null(svc);
    assert_int_equal(db_count(users_service_db(svc), "SELECT count(*) FROM users"), 1);
    char u[80];
    snprintf(u, sizeof(u), "http://127.0.0.1:%d/login", users_service_port(svc));
    ts_resp_t r =
        ts_http("POST", u, NULL,
                "{\"email\":\"root@example.org\",\"password\":\"root password 2\"}", NULL, NULL);
    expect(&r, 200, NULL, NULL);
    assert_string_equal(jstr(r.json, "role"), "admin");
    assert_string_equal(jstr(r.json, "userId"), root_id);
    ts_resp_free(&r);
    users_service_stop(svc);
    ts_records_t all =
        ts_read_topic(td_broker_bootstraps(W.broker), "tidings.users", 11, 300, 20000);
    assert_int_equal(count_events(&all, root_id, "UserRegisteredEvent"), 1);
    ts_records_free(&all);
    td_config_free(&cfg);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register),       cmocka_unit_test(test_register_validation),
        cmocka_unit_test(test_login),          cmocka_unit_test(test_me),
        cmocka_unit_test(test_rate_limit),     cmocka_unit_test(test_events),
        cmocka_unit_test(test_admin_from_env), cmocka_unit_test(test_create_admin_command),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
