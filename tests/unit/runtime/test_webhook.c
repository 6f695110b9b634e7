/* Webhook signatures of SPEC section 2: the value matches HMAC-SHA256 as
 * computed by another implementation (the openssl command line, recorded
 * here), the timestamp is part of what is signed, and verification refuses
 * a changed body, a changed timestamp, another secret, a malformed header
 * and (when asked) a stale timestamp. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/urlguard.h"
#include "tidings/webhook.h"

#define SECRET "whsec-0123456789"
#define TS     1700000000LL
#define BODY   "{\"id\":\"6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b\",\"title\":\"Order confirmed\"}"
/* printf '%s' '1700000000.<BODY>' | openssl dgst -sha256 -hmac 'whsec-0123456789' */
#define WANT "sha256=5e4cb8f0d5ea506111d68988b7611183c728361c079a85f914a62346fd56fb4b"

static int verify(const char *secret, const char *ts, const char *body, const char *sig,
                  int64_t now, int64_t tolerance)
{
    return td_webhook_verify(secret, strlen(secret), ts, body, strlen(body), sig, now, tolerance);
}

static void test_sign_known_value(void **state)
{
    (void)state;
    char *sig = td_webhook_sign(SECRET, strlen(SECRET), TS, BODY, strlen(BODY));
    assert_string_equal(sig, WANT);
    assert_int_equal(strlen(sig), TD_WEBHOOK_SIG_LEN);
    free(sig);

    /* An empty body still signs "timestamp." */
    sig = td_webhook_sign("k", 1, TS, "", 0);
    assert_string_equal(sig,
                        "sha256=5c2999a43333a6877f49c8003f235c4f6de40f85b1b7414b70bd470a8db53d97");
    free(sig);
}

static void test_verify(void **state)
{
    (void)state;
    assert_int_equal(verify(SECRET, "1700000000", BODY, WANT, TS, 300), 0);
    assert_int_equal(verify(SECRET, "1700000000", BODY, WANT, TS + 299, 300), 0);
    assert_int_equal(verify(SECRET, "1700000000", BODY, WANT, TS + 10 * 365 * 86400LL, 0), 0);

    /* A tampered body: one character changed, one added, one removed. */
    char *body = strdup(BODY);
    body[10] = body[10] == '1' ? '2' : '1';
    assert_int_equal(verify(SECRET, "1700000000", body, WANT, TS, 300), TD_EINVAL);
    free(body);
    assert_int_equal(verify(SECRET, "1700000000", BODY " ", WANT, TS, 300), TD_EINVAL);
    body = strndup(BODY, strlen(BODY) - 1);
    assert_int_equal(verify(SECRET, "1700000000", body, WANT, TS, 300), TD_EINVAL);
    free(body);

    /* The timestamp is signed: moving it breaks the signature (a replay
     * cannot just refresh the header). */
    assert_int_equal(verify(SECRET, "1700000001", BODY, WANT, TS, 300), TD_EINVAL);
    /* Another secret. */
    assert_int_equal(verify("whsec-0123456788", "1700000000", BODY, WANT, TS, 300), TD_EINVAL);
    /* Stale and future timestamps, when the receiver checks the clock. */
    assert_int_equal(verify(SECRET, "1700000000", BODY, WANT, TS + 301, 300), TD_EEXPIRED);
    assert_int_equal(verify(SECRET, "1700000000", BODY, WANT, TS - 301, 300), TD_EEXPIRED);

    /* Malformed headers. */
    const char *bad_sigs[] = {
        "",
        "sha256=",
        "5e4cb8f0d5ea506111d68988b7611183c728361c079a85f914a62346fd56fb4b",
        "sha1=5e4cb8f0d5ea506111d68988b7611183c728361c079a85f914a62346fd56fb4b",
        WANT "0",
        "sha256=5E4CB8F0D5EA506111D68988B7611183C728361C079A85F914A62346FD56FB4B",
        NULL};
    for (const char **s = bad_sigs; *s; s++)
        assert_int_equal(verify(SECRET, "1700000000", BODY, *s, TS, 300), TD_EINVAL);
    const char *bad_ts[] = {
        "", "17e8", "-1700000000", " 1700000000", "1700000000.0", "99999999999999999999", NULL};
    for (const char **t = bad_ts; *t; t++)
        assert_int_equal(verify(SECRET, *t, BODY, WANT, TS, 300), TD_EINVAL);
    assert_int_equal(
        td_webhook_verify(SECRET, strlen(SECRET), NULL, BODY, strlen(BODY), WANT, TS, 300),
        TD_EINVAL);
    assert_int_equal(
        td_webhook_verify(SECRET, strlen(SECRET), "1700000000", BODY, strlen(BODY), NULL, TS, 300),
        TD_EINVAL);
}

static void test_round_trip_now(void **state)
{
    (void)state;
    int64_t now = td_now_ms() / 1000;
    static const unsigned char bin[] = {0, 1, 2, 0xff, '.', 0};
    char *sig = td_webhook_sign(bin, sizeof(bin), now, bin, sizeof(bin));
    char ts[32];
    snprintf(ts, sizeof(ts), "%lld", (long long)now);
    assert_int_equal(
        td_webhook_verify(bin, sizeof(bin), ts, bin, sizeof(bin), sig, now, TD_WEBHOOK_TOLERANCE_S),
        0);
    free(sig);
}

static void test_check_url(void **state)
{
    (void)state;
    char err[128];
    assert_int_equal(td_webhook_check_url("https://hooks.example.com/t", false, err, 128), 0);
    assert_int_equal(td_webhook_check_url("http://127.0.0.1:9/t", false, err, 128), TD_EINVAL);
    assert_int_equal(td_webhook_check_url("http://127.0.0.1:9/t", true, err, 128), 0);
    assert_int_equal(td_webhook_check_url("http://hooks.example.com/t", true, err, 128), TD_EINVAL);
}

/* No name resolves in these tests: names are judged by their spelling,
 * without waiting on DNS (what resolved addresses do is test_urlguard's). */
static int no_answers(const char *host, int port, struct sockaddr_storage *out, int max)
{
    (void)host;
    (void)port;
    (void)out;
    (void)max;
    return 0;
}

int main(void)
{
    td_urlguard_set_resolver(no_answers);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sign_known_value),
        cmocka_unit_test(test_verify),
        cmocka_unit_test(test_round_trip_now),
        cmocka_unit_test(test_check_url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
