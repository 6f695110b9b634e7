/* Unit tests of the users domain without HTTP or Kafka: the validation of
 * emails, passwords and names, the login rate limit's window arithmetic,
 * and the state changes on an in-memory database with their outbox rows
 * (one event per change, none for a change that did not happen). Password
 * hashes are opaque strings here: hashing is the routes' job. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/json.h"
#include "tidings/record.h"
#include "users/users.h"

/* ---- helpers ----------------------------------------------------------- */

static char errbuf[256];

static bool email_ok(const char *in, const char *want)
{
    char out[USERS_EMAIL_MAX + 1];
    if (users_email_normalize(in, out, sizeof(out), errbuf, sizeof(errbuf)) != 0) return false;
    if (want && strcmp(out, want) != 0) {
        print_error("normalised %s to %s, want %s\n", in, out, want);
        return false;
    }
    return true;
}

static td_db_t *open_db(void)
{
    char err[256];
    td_db_t *db = td_db_open(":memory:", users_migrations, users_migration_cnt, err, sizeof(err));
    if (!db) print_error("td_db_open: %s\n", err);
    assert_non_null(db);
    return db;
}

static int64_t count(td_db_t *db, const char *sql)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, sql);
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(db);
    return n;
}

/* The outbox row number idx (0 = oldest) as a record; NULL if none. */
static td_record_t *outbox_row(td_db_t *db, int idx)
{
    td_record_t *rec = NULL;
    td_db_lock(db);
    sqlite3_stmt *st =
        td_db_prepare(db, "SELECT topic, key, value, headers FROM td_outbox ORDER BY id "
                          "LIMIT 1 OFFSET ?");
    sqlite3_bind_int(st, 1, idx);
    if (sqlite3_step(st) == SQLITE_ROW) {
        rec = td_record_new((const char *)sqlite3_column_text(st, 0));
        td_record_set_key(rec, sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1));
        td_record_set_value(rec, sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2));
        assert_int_equal(
            td_headers_decode(rec, sqlite3_column_blob(st, 3), (size_t)sqlite3_column_bytes(st, 3)),
            0);
    }
    td_db_done(st);
    td_db_unlock(db);
    return rec;
}

static json_t *record_json(const td_record_t *rec)
{
    json_error_t jerr;
    json_t *j = json_loadb(rec->value, rec->value_len, 0, &jerr);
    assert_non_null(j);
    return j;
}

/* ---- validation -------------------------------------------------------- */

static void test_email_normalised(void **state)
{
    (void)state;
    assert_true(email_ok("alice@example.com", "alice@example.com"));
    assert_true(email_ok("  Alice@Example.COM \t\n", "alice@example.com"));
    assert_true(email_ok("a.b+tag@mail.example.co.uk", "a.b+tag@mail.example.co.uk"));
    assert_true(email_ok("x@y.z", "x@y.z"));
    /* Non-ASCII stays as typed; only ASCII letters are folded. */
    assert_true(email_ok("J\xc3\xb6rg@Example.de", "j\xc3\xb6rg@example.de"));
}

static void test_email_rejected(void **state)
{
    (void)state;
    const char *bad[] = {
        "",          "   ",         "plainaddress",   "@example.com",
        "alice@",    "alice@com",   "a@@example.com", "a@b@c.com",
        "a b@c.com", "a@b .com",    "a@.com",         "a@com.",
        "a@b..com",  "a\x01@b.com", "a@b.c\x7f",      "a\tb@c.com",
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++) {
        if (email_ok(bad[i], NULL)) fail_msg("accepted bad email '%s'", bad[i]);
        assert_true(strstr(errbuf, "email") != NULL);
    }
    assert_int_equal(users_email_normalize(NULL, NULL, 0, errbuf, sizeof(errbuf)), TD_EINVAL);
    assert_string_equal(errbuf, "email is required");
}

static void test_email_length(void **state)
{
    (void)state;
    char buf[400];
    /* 254 bytes in all is the limit: local part + "@" + "example.com". */
    size_t local = 254 - 1 - strlen("example.com");
    memset(buf, 'a', local);
    strcpy(buf + local, "@example.com");
    assert_int_equal(strlen(buf), 254);
    assert_true(email_ok(buf, NULL));
    /* Surrounding spaces do not count. */
    char padded[420];
    snprintf(padded, sizeof(padded), "   %s   ", buf);
    assert_true(email_ok(padded, buf));
    memmove(buf + 1, buf, strlen(buf) + 1);
    buf[0] = 'b';
    assert_false(email_ok(buf, NULL));
    assert_string_equal(errbuf, "email must be at most 254 characters");
}

static void test_password_rules(void **state)
{
    (void)state;
    assert_int_equal(users_password_check("1234567", errbuf, sizeof(errbuf)), TD_EINVAL);
    assert_string_equal(errbuf, "password must be at least 8 characters");
    assert_int_equal(users_password_check("12345678", errbuf, sizeof(errbuf)), 0);
    assert_int_equal(users_password_check("", errbuf, sizeof(errbuf)), TD_EINVAL);
    assert_int_equal(users_password_check(NULL, errbuf, sizeof(errbuf)), TD_EINVAL);
    /* Characters, not bytes: seven 2-byte characters are too short,
     * eight are enough. */
    assert_int_equal(
        users_password_check("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9", errbuf,
                             sizeof(errbuf)),
        TD_EINVAL);
    assert_int_equal(
        users_password_check("\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9",
                             errbuf, sizeof(errbuf)),
        0);
    char *big = malloc(USERS_PASSWORD_MAX + 2);
    memset(big, 'p', USERS_PASSWORD_MAX);
    big[USERS_PASSWORD_MAX] = '\0';
    assert_int_equal(users_password_check(big, errbuf, sizeof(errbuf)), 0);
    big[USERS_PASSWORD_MAX] = 'p';
    big[USERS_PASSWORD_MAX + 1] = '\0';
    assert_int_equal(users_password_check(big, errbuf, sizeof(errbuf)), TD_EINVAL);
    assert_string_equal(errbuf, "password must be at most 1024 characters");
    free(big);
}

static void test_name_rules(void **state)
{
    (void)state;
    assert_int_equal(users_name_check("Alice", errbuf, sizeof(errbuf)), 0);
    assert_int_equal(users_name_check("O'Brien; DROP TABLE users; --", errbuf, sizeof(errbuf)), 0);
    assert_int_equal(users_name_check("", errbuf, sizeof(errbuf)), TD_EINVAL);
    assert_string_equal(errbuf, "name is required");
    assert_int_equal(users_name_check("   ", errbuf, sizeof(errbuf)), TD_EINVAL);
    assert_string_equal(errbuf, "name must not be blank");
    assert_int_equal(users_name_check("a\nb", errbuf, sizeof(errbuf)), TD_EINVAL);
    assert_string_equal(errbuf, "name must not contain control characters");

    char name[512] = {0};
    memset(name, 'n', USERS_NAME_MAX);
    assert_int_equal(users_name_check(name, errbuf, sizeof(errbuf)), 0);
    name[USERS_NAME_MAX] = 'n';
    assert_int_equal(users_name_check(name, errbuf, sizeof(errbuf)), TD_EINVAL);
    assert_string_equal(errbuf, "name must be at most 100 characters");
    /* 100 three-byte characters are 100 characters. */
    memset(name, 0, sizeof(name));
    for (int i = 0; i < USERS_NAME_MAX; i++) memcpy(name + 3 * i, "\xe2\x82\xac", 3);
    assert_int_equal(users_name_check(name, errbuf, sizeof(errbuf)), 0);
}

/* ---- rate limit arithmetic --------------------------------------------- */

static void test_rate_limit_window(void **state)
{
    (void)state;
    const int64_t now = 1700000000000LL, min = 60 * 1000;
    /* Newest first. */
    int64_t four[] = {now - 1 * min, now - 2 * min, now - 3 * min, now - 4 * min};
    assert_int_equal(users_login_blocked_ms(four, 4, now), 0);

    int64_t five[] = {now - 1 * min, now - 2 * min, now - 3 * min, now - 4 * min, now - 10 * min};
    /* Blocked until the oldest of the five is 15 minutes old. */
    assert_int_equal(users_login_blocked_ms(five, 5, now), 5 * min);
    assert_int_equal(users_login_blocked_ms(five, 5, now + 5 * min - 1), 1);
    assert_int_equal(users_login_blocked_ms(five, 5, now + 5 * min), 0);
    assert_int_equal(users_login_blocked_ms(five, 5, now + 6 * min), 0);

    /* Five failures in the same millisecond: the whole window. */
    int64_t burst[] = {now, now, now, now, now};
    assert_int_equal(users_login_blocked_ms(burst, 5, now), USERS_LOGIN_WINDOW_MS);

    /* A clock that went back never extends the lock beyond one window. */
    int64_t future[] = {now + 60 * min, now + 60 * min, now + 60 * min, now + 60 * min,
                        now + 60 * min};
    assert_int_equal(users_login_blocked_ms(future, 5, now), USERS_LOGIN_WINDOW_MS);

    assert_int_equal(users_retry_after_s(1), 1);
    assert_int_equal(users_retry_after_s(1000), 1);
    assert_int_equal(users_retry_after_s(1001), 2);
    assert_int_equal(users_retry_after_s(USERS_LOGIN_WINDOW_MS), 900);
    assert_int_equal(users_retry_after_s(0), 1);
}

/* ---- state ------------------------------------------------------------- */

static void test_register_and_event(void **state)
{
    (void)state;
    td_config_t cfg;
    td_config_defaults(&cfg);
    td_db_t *db = open_db();
    users_user_t u;
    td_trace_t trace;
    td_trace_new(&trace);
    users_origin_t origin = {&trace, "9b2f6a51-0d3b-4c1e-8f5a-2f1f0a3b4c5d"};
    int64_t now = 1763723993123LL; /* 2025-11-21T11:19:53.123Z */

    assert_int_equal(users_register(db, &cfg, "alice@example.com", "Alice", "HASH", "customer",
                                    &origin, now, &u),
                     0);
    assert_true(td_uuid_valid(u.id));
    assert_string_equal(u.email, "alice@example.com");
    assert_string_equal(u.role, "customer");
    assert_string_equal(u.created_at, "2025-11-21T11:19:53.123Z");
    assert_int_equal(count(db, "SELECT count(*) FROM td_outbox"), 1);

    td_record_t *rec = outbox_row(db, 0);
    assert_string_equal(rec->topic, "tidings.users");
    assert_string_equal((const char *)rec->key, u.id);
    assert_string_equal(td_record_header_str(rec, "ce_type"), "UserRegisteredEvent");
    assert_string_equal(td_record_header_str(rec, "ce_subject"), u.id);
    assert_string_equal(td_record_header_str(rec, "ce_source"), "/tidings/users");
    assert_string_equal(td_record_header_str(rec, "ce_correlationid"), origin.request_id);
    assert_null(td_record_header_str(rec, "ce_causationid"));
    json_t *data = record_json(rec);
    assert_int_equal(json_object_size(data), 4);
    assert_string_equal(json_string_value(json_object_get(data, "userId")), u.id);
    assert_string_equal(json_string_value(json_object_get(data, "email")), "alice@example.com");
    assert_string_equal(json_string_value(json_object_get(data, "name")), "Alice");
    assert_string_equal(json_string_value(json_object_get(data, "registeredAt")), u.created_at);
    json_decref(data);
    td_record_free(rec);

    /* Taken email: conflict, and neither a row nor an event. */
    users_user_t dup;
    assert_int_equal(users_register(db, &cfg, "alice@example.com", "Other", "HASH2", "customer",
                                    &origin, now, &dup),
                     TD_EEXIST);
    assert_true(users_email_taken(db, "alice@example.com"));
    assert_false(users_email_taken(db, "bob@example.com"));
    assert_int_equal(count(db, "SELECT count(*) FROM users"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM td_outbox"), 1);

    users_user_t got;
    assert_int_equal(users_find_by_id(db, u.id, &got), 0);
    assert_string_equal(got.name, "Alice");
    assert_null(got.password_hash);
    users_user_clear(&got);
    assert_int_equal(users_find_by_email(db, "alice@example.com", &got), 0);
    assert_string_equal(got.password_hash, "HASH");
    users_user_clear(&got);
    assert_int_equal(users_find_by_id(db, "00000000-0000-4000-8000-000000000000", &got), TD_ENOENT);

    users_user_clear(&u);
    td_db_close(db);
    td_config_free(&cfg);
}

static void test_login_rate_limit_in_db(void **state)
{
    (void)state;
    td_config_t cfg;
    td_config_defaults(&cfg);
    td_db_t *db = open_db();
    users_user_t u, cred;
    bool found;
    int64_t retry, now = 1700000000000LL;
    assert_int_equal(
        users_register(db, &cfg, "bob@example.com", "Bob", "H", "customer", NULL, now, &u), 0);

    /* Five failed attempts a second apart are recorded... */
    for (int i = 0; i < USERS_LOGIN_MAX_FAILS; i++) {
        assert_int_equal(
            users_login_begin(db, "bob@example.com", NULL, now + i * 1000, &found, &cred, &retry),
            0);
        assert_true(found);
        assert_string_equal(cred.password_hash, "H");
        users_user_clear(&cred);
    }
    /* ...and the sixth, even one that would succeed, is refused until the
     * first is 15 minutes old. */
    int64_t t6 = now + 10 * 1000;
    assert_int_equal(users_login_begin(db, "bob@example.com", NULL, t6, &found, &cred, &retry),
                     TD_ELIMIT);
    assert_int_equal(retry, (USERS_LOGIN_WINDOW_MS - 10 * 1000) / 1000);
    assert_int_equal(count(db, "SELECT count(*) FROM login_failures"), 5);
    /* Another email is not affected. */
    assert_int_equal(users_login_begin(db, "carol@example.com", NULL, t6, &found, &cred, &retry),
                     0);
    assert_false(found);

    /* Once the window has passed for the oldest failure, one try is allowed. */
    int64_t later = now + USERS_LOGIN_WINDOW_MS;
    assert_int_equal(users_login_begin(db, "bob@example.com", NULL, later, &found, &cred, &retry),
                     0);
    assert_true(found);
    /* A success clears the failures and emits the login event. */
    int64_t before = count(db, "SELECT count(*) FROM td_outbox");
    assert_int_equal(users_login_succeed(db, &cfg, &cred, "curl/8.0", "127.0.0.1", NULL, later), 0);
    users_user_clear(&cred);
    assert_int_equal(count(db, "SELECT count(*) FROM login_failures WHERE email = "
                               "'bob@example.com'"),
                     0);
    assert_int_equal(count(db, "SELECT count(*) FROM td_outbox"), before + 1);
    td_record_t *rec = outbox_row(db, (int)before);
    assert_string_equal(td_record_header_str(rec, "ce_type"), "UserLoggedInEvent");
    json_t *data = record_json(rec);
    assert_int_equal(json_object_size(data), 5);
    assert_string_equal(json_string_value(json_object_get(data, "userId")), u.id);
    assert_string_equal(json_string_value(json_object_get(data, "userAgent")), "curl/8.0");
    assert_string_equal(json_string_value(json_object_get(data, "ip")), "127.0.0.1");
    json_decref(data);
    td_record_free(rec);

    users_user_clear(&u);
    td_db_close(db);
    td_config_free(&cfg);
}

static void test_login_event_optional_fields(void **state)
{
    (void)state;
    td_config_t cfg;
    td_config_defaults(&cfg);
    td_db_t *db = open_db();
    users_user_t u;
    assert_int_equal(
        users_register(db, &cfg, "dan@example.com", "Dan", "H", "customer", NULL, 1000, &u), 0);

    /* No User-Agent, no address: the optional fields are absent. */
    assert_int_equal(users_login_succeed(db, &cfg, &u, NULL, "", NULL, 2000), 0);
    td_record_t *rec = outbox_row(db, 1);
    json_t *data = record_json(rec);
    assert_int_equal(json_object_size(data), 3);
    assert_null(json_object_get(data, "userAgent"));
    assert_null(json_object_get(data, "ip"));
    json_decref(data);
    td_record_free(rec);

    /* A User-Agent that is not UTF-8 is left out; a long one is cut. */
    assert_int_equal(users_login_succeed(db, &cfg, &u, "bad\xff\xfe", "::1", NULL, 3000), 0);
    rec = outbox_row(db, 2);
    data = record_json(rec);
    assert_null(json_object_get(data, "userAgent"));
    assert_string_equal(json_string_value(json_object_get(data, "ip")), "::1");
    json_decref(data);
    td_record_free(rec);

    char ua[2000];
    memset(ua, 'u', sizeof(ua) - 1);
    ua[sizeof(ua) - 1] = '\0';
    memcpy(ua + USERS_USER_AGENT_MAX - 1, "\xc3\xa9", 2); /* a character across the cut */
    assert_int_equal(users_login_succeed(db, &cfg, &u, ua, NULL, NULL, 4000), 0);
    rec = outbox_row(db, 3);
    data = record_json(rec);
    const char *got = json_string_value(json_object_get(data, "userAgent"));
    assert_non_null(got);
    assert_int_equal(strlen(got), USERS_USER_AGENT_MAX - 1);
    json_decref(data);
    td_record_free(rec);

    users_user_clear(&u);
    td_db_close(db);
    td_config_free(&cfg);
}

static void test_ensure_admin(void **state)
{
    (void)state;
    td_config_t cfg;
    td_config_defaults(&cfg);
    td_db_t *db = open_db();
    users_user_t a, b, c;
    bool created;

    assert_int_equal(users_ensure_admin(db, &cfg, USERS_ADMIN_EMAIL, "H1", 1000, &created, &a), 0);
    assert_true(created);
    assert_string_equal(a.role, "admin");
    assert_string_equal(a.name, USERS_ADMIN_NAME);
    assert_int_equal(count(db, "SELECT count(*) FROM td_outbox"), 1);

    /* Again: the same account, the new password, no second event. */
    assert_int_equal(users_ensure_admin(db, &cfg, USERS_ADMIN_EMAIL, "H2", 2000, &created, &b), 0);
    assert_false(created);
    assert_string_equal(a.id, b.id);
    assert_int_equal(count(db, "SELECT count(*) FROM td_outbox"), 1);
    assert_int_equal(count(db, "SELECT count(*) FROM users WHERE password_hash = 'H2'"), 1);

    /* Promoting a customer keeps the account. */
    assert_int_equal(
        users_register(db, &cfg, "eve@example.com", "Eve", "H", "customer", NULL, 3000, &c), 0);
    users_user_t p;
    assert_int_equal(users_ensure_admin(db, &cfg, "eve@example.com", "H3", 4000, &created, &p), 0);
    assert_false(created);
    assert_string_equal(p.id, c.id);
    assert_string_equal(p.role, "admin");
    assert_int_equal(count(db, "SELECT count(*) FROM users WHERE role = 'admin'"), 2);

    users_user_clear(&a);
    users_user_clear(&b);
    users_user_clear(&c);
    users_user_clear(&p);
    td_db_close(db);
    td_config_free(&cfg);
}

/* SPEC section 5: more than 100 failed logins from one address within
 * 15 minutes get 429, whatever emails they try; other addresses do not. */
static void test_login_ip_limit_in_db(void **state)
{
    (void)state;
    td_db_t *db = open_db();
    users_user_t cred;
    bool found;
    int64_t retry, now = 1700000000000LL;
    char email[64];
    for (int i = 0; i < USERS_LOGIN_IP_MAX_FAILS; i++) {
        snprintf(email, sizeof(email), "guess%d@example.com", i);
        assert_int_equal(
            users_login_begin(db, email, "203.0.113.7", now + i * 10, &found, &cred, &retry), 0);
        assert_false(found);
    }
    assert_int_equal(
        users_login_begin(db, "new@example.com", "203.0.113.7", now + 2000, &found, &cred, &retry),
        TD_ELIMIT);
    assert_int_equal(retry, (USERS_LOGIN_WINDOW_MS - 2000) / 1000);
    /* Another address, and no address, are not affected. */
    assert_int_equal(
        users_login_begin(db, "new@example.com", "198.51.100.1", now + 2000, &found, &cred, &retry),
        0);
    assert_int_equal(
        users_login_begin(db, "new2@example.com", NULL, now + 2000, &found, &cred, &retry), 0);
    /* When the oldest of the hundred leaves the window, one more try. */
    assert_int_equal(users_login_begin(db, "new@example.com", "203.0.113.7",
                                       now + USERS_LOGIN_WINDOW_MS, &found, &cred, &retry),
                     0);
    assert_int_equal(users_login_begin(db, "new3@example.com", "203.0.113.7",
                                       now + USERS_LOGIN_WINDOW_MS + 1, &found, &cred, &retry),
                     TD_ELIMIT);
    td_db_close(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_email_normalised),
        cmocka_unit_test(test_email_rejected),
        cmocka_unit_test(test_email_length),
        cmocka_unit_test(test_password_rules),
        cmocka_unit_test(test_name_rules),
        cmocka_unit_test(test_rate_limit_window),
        cmocka_unit_test(test_register_and_event),
        cmocka_unit_test(test_login_rate_limit_in_db),
        cmocka_unit_test(test_login_ip_limit_in_db),
        cmocka_unit_test(test_login_event_optional_fields),
        cmocka_unit_test(test_ensure_admin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
