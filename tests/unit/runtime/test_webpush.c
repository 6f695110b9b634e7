/* Web Push against the standards and against an independent
 * implementation: the RFC 8291 Appendix A vector reproduced byte for byte;
 * fresh-key messages decrypted by python's `cryptography`
 * (tests/integration/ece_decrypt.py, written from RFC 8291/8188); VAPID
 * tokens verified by python's ES256 (es256_verify.py) with the claims of
 * RFC 8292; and the subscription checks (points off the curve, wrong
 * lengths, non-https endpoints) refusing what they must. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <jansson.h>
#include <libgen.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "tidings/urlguard.h"
#include "tidings/auth.h"
#include "tidings/webpush.h"

/* RFC 8291 Appendix A. */
#define RFC_PLAINTEXT  "When I grow up, I want to be a watermelon"
#define RFC_AS_PRIVATE "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw"
#define RFC_AS_PUBLIC \
    "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8"
#define RFC_UA_PRIVATE "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94"
#define RFC_UA_PUBLIC \
    "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4"
#define RFC_SALT "DGv6ra1nlYgDCS1FRnbzlw"
#define RFC_AUTH "BTBZMqHH6r4Tts7J_aSIgg"
#define RFC_BODY                                                                                   \
    "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS" \
    "6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_"   \
    "Qulcy4a-fN"

#define SUBJECT "mailto:ops@tidings.local"

static unsigned char *dec(const char *s, size_t want)
{
    size_t n = 0;
    unsigned char *b = td_b64url_decode(s, &n);
    assert_non_null(b);
    assert_int_equal(n, want);
    return b;
}

/* Runs one of the python checkers next to the integration tests; returns
 * its exit status and its first output line in out. */
static int run_py(const char *script, const char *args, char *out, size_t outlen)
{
    char *src = td_strdup(__FILE__);
    char *cmd =
        td_asprintf("/usr/bin/python3 %s/../../integration/%s %s 2>&1", dirname(src), script, args);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    out[0] = '\0';
    if (!fgets(out, (int)outlen, p)) out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    char drain[256];
    while (fgets(drain, sizeof(drain), p)) {
    }
    int st = pclose(p);
    free(cmd);
    free(src);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_rfc8291_vector(void **state)
{
    (void)state;
    unsigned char *ua_public = dec(RFC_UA_PUBLIC, 65);
    unsigned char *auth = dec(RFC_AUTH, 16);
    unsigned char *as_private = dec(RFC_AS_PRIVATE, 32);
    unsigned char *salt = dec(RFC_SALT, 16);
    unsigned char *body = NULL;
    size_t body_len = 0;
    char err[256];

    assert_int_equal(td_webpush_encrypt_raw(ua_public, auth, as_private, salt, RFC_PLAINTEXT,
                                            strlen(RFC_PLAINTEXT), &body, &body_len, err,
                                            sizeof(err)),
                     0);
    char *got = td_b64url_encode(body, body_len);
    assert_string_equal(got, RFC_BODY);
    assert_int_equal(body_len, TD_WEBPUSH_HEADER_LEN + strlen(RFC_PLAINTEXT) + 1 + 16);

    /* The sender's public key in the header is derived from its private
     * scalar the same way a stored VAPID key is. */
    td_vapid_t *as = td_vapid_from_private(RFC_AS_PRIVATE, err, sizeof(err));
    assert_non_null(as);
    assert_string_equal(td_vapid_public_b64(as), RFC_AS_PUBLIC);
    td_vapid_free(as);

    /* And the independent decrypter agrees with the RFC on its own vector,
     * so the round trips below test us, not it. */
    char out[8192];
    char *args = td_asprintf("%s %s %s %s", RFC_UA_PRIVATE, RFC_UA_PUBLIC, RFC_AUTH, RFC_BODY);
    assert_int_equal(run_py("ece_decrypt.py", args, out, sizeof(out)), 0);
    char *want = td_b64url_encode(RFC_PLAINTEXT, strlen(RFC_PLAINTEXT));
    assert_string_equal(out, want);

    free(want);
    free(args);
    free(got);
    free(body);
    free(salt);
    free(as_private);
    free(auth);
    free(ua_public);
}

/* A fresh subscription key pair and auth secret, as a browser makes them. */
typedef struct sub {
    td_vapid_t *ua; /* any P-256 key pair will do */
    char *ua_private, *p256dh, *auth;
} sub_t;

static void sub_new(sub_t *s)
{
    char err[256];
    unsigned char secret[16];
    s->ua = td_vapid_generate(err, sizeof(err));
    assert_non_null(s->ua);
    s->ua_private = td_vapid_private_b64(s->ua);
    s->p256dh = td_strdup(td_vapid_public_b64(s->ua));
    assert_int_equal(RAND_bytes(secret, sizeof(secret)), 1);
    s->auth = td_b64url_encode(secret, sizeof(secret));
}

static void sub_free(sub_t *s)
{
    td_vapid_free(s->ua);
    free(s->ua_private);
    free(s->p256dh);
    free(s->auth);
}

/* Encrypts payload for s and has python decrypt it: its exit status, and
 * the plaintext it found in plain (base64url). tamper flips one byte of
 * the body first. */
static int python_decrypt(const sub_t *s, const void *payload, size_t len, bool tamper, char *plain,
                          size_t plain_len)
{
    char err[256];
    unsigned char *body = NULL;
    size_t body_len = 0;
    assert_int_equal(
        td_webpush_encrypt(s->p256dh, s->auth, payload, len, &body, &body_len, err, sizeof(err)),
        0);
    assert_int_equal(body_len, TD_WEBPUSH_HEADER_LEN + len + 1 + 16);
    if (tamper) body[body_len - 20] ^= 0x01;
    char *b64 = td_b64url_encode(body, body_len);
    char *args = td_asprintf("%s %s %s %s", s->ua_private, s->p256dh, s->auth, b64);
    int rc = run_py("ece_decrypt.py", args, plain, plain_len);
    free(args);
    free(b64);
    free(body);
    return rc;
}

static void test_round_trip_python(void **state)
{
    (void)state;
    sub_t s;
    sub_new(&s);
    static const char msg[] = "{\"title\":\"Order confirmed\",\"body\":\"2 x Lamp, 39.98\"}";
    char out[8192];

    assert_int_equal(python_decrypt(&s, msg, strlen(msg), false, out, sizeof(out)), 0);
    char *want = td_b64url_encode(msg, strlen(msg));
    assert_string_equal(out, want);
    free(want);

    /* Two encryptions of one message differ (fresh salt and key). */
    unsigned char *b1 = NULL, *b2 = NULL;
    size_t l1 = 0, l2 = 0;
    char err[256];
    assert_int_equal(td_webpush_encrypt(s.p256dh, s.auth, msg, strlen(msg), &b1, &l1, err, 256), 0);
    assert_int_equal(td_webpush_encrypt(s.p256dh, s.auth, msg, strlen(msg), &b2, &l2, err, 256), 0);
    assert_int_equal(l1, l2);
    assert_true(memcmp(b1, b2, l1) != 0);
    free(b1);
    free(b2);

    /* A changed byte fails authentication on the other side. */
    assert_int_equal(python_decrypt(&s, msg, strlen(msg), true, out, sizeof(out)), 1);

    /* The largest payload that fits the 4096-byte record, and one more. */
    char *big = td_malloc(TD_WEBPUSH_MAX_PAYLOAD + 1);
    for (size_t i = 0; i <= TD_WEBPUSH_MAX_PAYLOAD; i++) big[i] = (char)('a' + i % 26);
    assert_int_equal(python_decrypt(&s, big, TD_WEBPUSH_MAX_PAYLOAD, false, out, sizeof(out)), 0);
    want = td_b64url_encode(big, TD_WEBPUSH_MAX_PAYLOAD);
    assert_string_equal(out, want);
    free(want);
    unsigned char *body = NULL;
    size_t body_len = 0;
    assert_int_equal(td_webpush_encrypt(s.p256dh, s.auth, big, TD_WEBPUSH_MAX_PAYLOAD + 1, &body,
                                        &body_len, err, sizeof(err)),
                     TD_EINVAL);
    assert_null(body);
    free(big);

    /* An empty payload is a valid message too. */
    assert_int_equal(python_decrypt(&s, "", 0, false, out, sizeof(out)), 0);
    assert_string_equal(out, "");
    sub_free(&s);
}

static void split_header(const char *value, char **jwt, char **k)
{
    assert_true(strncmp(value, "vapid t=", 8) == 0);
    const char *comma = strstr(value, ", k=");
    assert_non_null(comma);
    *jwt = td_strndup(value + 8, (size_t)(comma - value - 8));
    *k = td_strdup(comma + 4);
}

static void test_vapid_python(void **state)
{
    (void)state;
    char err[256], out[4096];
    td_vapid_t *v = td_vapid_generate(err, sizeof(err));
    assert_non_null(v);
    int64_t now = td_now_ms() / 1000;
    char *value = td_vapid_header(v, "https://Push.Example.NET:443/wpush/v2/gAAAA?x=1", SUBJECT,
                                  now, err, sizeof(err));
    assert_non_null(value);
    char *jwt, *k;
    split_header(value, &jwt, &k);
    assert_string_equal(k, td_vapid_public_b64(v));

    char *args = td_asprintf("%s %s https://push.example.net %s", jwt, k, SUBJECT);
    assert_int_equal(run_py("es256_verify.py", args, out, sizeof(out)), 0);
    json_t *claims = json_loads(out, 0, NULL);
    assert_non_null(claims);
    assert_int_equal(json_integer_value(json_object_get(claims, "exp")), now + TD_VAPID_TTL_S);
    json_decref(claims);
    free(args);

    /* The wrong audience, a changed claim, or another key: refused. */
    args = td_asprintf("%s %s https://push.example.org %s", jwt, k, SUBJECT);
    assert_int_equal(run_py("es256_verify.py", args, out, sizeof(out)), 1);
    free(args);
    char *dot = strchr(jwt, '.');
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    args = td_asprintf("%s %s https://push.example.net %s", jwt, k, SUBJECT);
    assert_int_equal(run_py("es256_verify.py", args, out, sizeof(out)), 1);
    free(args);
    dot[3] = dot[3] == 'A' ? 'B' : 'A';
    td_vapid_t *other = td_vapid_generate(err, sizeof(err));
    args =
        td_asprintf("%s %s https://push.example.net %s", jwt, td_vapid_public_b64(other), SUBJECT);
    assert_int_equal(run_py("es256_verify.py", args, out, sizeof(out)), 1);
    free(args);
    td_vapid_free(other);

    /* An exp beyond 24 h is what the standard forbids, and the checker
     * sees it, so it would see ours. */
    char *late =
        td_vapid_jwt(v, "https://push.example.net/x", SUBJECT, now + 25 * 3600, err, sizeof(err));
    args = td_asprintf("%s %s https://push.example.net %s", late, k, SUBJECT);
    assert_int_equal(run_py("es256_verify.py", args, out, sizeof(out)), 1);
    free(args);
    free(late);

    /* A loopback endpoint with a port keeps the port in aud. */
    char *local =
        td_vapid_jwt(v, "http://127.0.0.1:8085/push/1", SUBJECT, now + 60, err, sizeof(err));
    args = td_asprintf("%s %s http://127.0.0.1:8085 %s", local, k, SUBJECT);
    assert_int_equal(run_py("es256_verify.py", args, out, sizeof(out)), 0);
    free(args);
    free(local);

    assert_null(td_vapid_jwt(v, "not a url", SUBJECT, now + 60, err, sizeof(err)));
    free(jwt);
    free(k);
    free(value);
    td_vapid_free(v);
}

static void test_vapid_export_import(void **state)
{
    (void)state;
    char err[256];
    td_vapid_t *v = td_vapid_generate(err, sizeof(err));
    char *priv = td_vapid_private_b64(v);
    assert_int_equal(strlen(priv), 43);
    td_vapid_t *back = td_vapid_from_private(priv, err, sizeof(err));
    assert_non_null(back);
    assert_string_equal(td_vapid_public_b64(back), td_vapid_public_b64(v));
    assert_int_equal(strlen(td_vapid_public_b64(v)), 87);
    unsigned char *pub = dec(td_vapid_public_b64(v), 65);
    assert_int_equal(pub[0], 0x04);
    free(pub);

    /* Zero, the group order n, too short, not base64url. */
    unsigned char zero[32] = {0};
    static const unsigned char order[32] = {0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00,
                                            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                            0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84,
                                            0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};
    char *z = td_b64url_encode(zero, sizeof(zero));
    char *n = td_b64url_encode(order, sizeof(order));
    char *shortk = td_b64url_encode(zero, 31);
    const char *bad[] = {z, n, shortk, "!!!!", "", NULL};
    for (const char **b = bad; *b; b++) {
        err[0] = '\0';
        assert_null(td_vapid_from_private(*b, err, sizeof(err)));
        assert_true(err[0] != '\0');
    }
    free(z);
    free(n);
    free(shortk);
    td_vapid_free(back);
    free(priv);
    td_vapid_free(v);
}

static void test_check_keys(void **state)
{
    (void)state;
    char err[256];
    assert_int_equal(td_webpush_check_keys(RFC_UA_PUBLIC, RFC_AUTH, err, sizeof(err)), 0);
    /* Padding as some clients send it. */
    assert_int_equal(td_webpush_check_keys(RFC_UA_PUBLIC "=", RFC_AUTH "==", err, sizeof(err)), 0);

    unsigned char *pt = dec(RFC_UA_PUBLIC, 65);
    /* Off the curve: the same X with another Y. */
    pt[64] ^= 0x01;
    char *off = td_b64url_encode(pt, 65);
    pt[64] ^= 0x01;
    /* The compressed form (33 bytes) and an uncompressed prefix missing. */
    unsigned char comp[33];
    comp[0] = (unsigned char)(0x02 | (pt[64] & 1));
    memcpy(comp + 1, pt + 1, 32);
    char *compressed = td_b64url_encode(comp, sizeof(comp));
    pt[0] = 0x05;
    char *prefix = td_b64url_encode(pt, 65);
    unsigned char zeros[65] = {0x04};
    char *origin = td_b64url_encode(zeros, sizeof(zeros));

    const char *bad_points[] = {off, compressed, prefix, origin, "", "not*base64", NULL};
    for (const char **b = bad_points; *b; b++) {
        err[0] = '\0';
        assert_int_equal(td_webpush_check_keys(*b, RFC_AUTH, err, sizeof(err)), TD_EINVAL);
        assert_non_null(strstr(err, "p256dh"));
    }
    unsigned char a[17] = {0};
    char *a15 = td_b64url_encode(a, 15), *a17 = td_b64url_encode(a, 17);
    const char *bad_auth[] = {a15, a17, "", "%%%", NULL};
    for (const char **b = bad_auth; *b; b++) {
        err[0] = '\0';
        assert_int_equal(td_webpush_check_keys(RFC_UA_PUBLIC, *b, err, sizeof(err)), TD_EINVAL);
        assert_non_null(strstr(err, "auth"));
    }
    assert_int_equal(td_webpush_check_keys(NULL, NULL, err, sizeof(err)), TD_EINVAL);

    /* Encryption refuses an off-curve key too (no invalid-curve ECDH). */
    unsigned char *body = NULL;
    size_t len = 0;
    assert_int_equal(td_webpush_encrypt(off, RFC_AUTH, "x", 1, &body, &len, err, sizeof(err)),
                     TD_EINVAL);
    assert_null(body);

    free(a15);
    free(a17);
    free(origin);
    free(prefix);
    free(compressed);
    free(off);
    free(pt);
}

static void test_check_endpoint(void **state)
{
    (void)state;
    char err[256];
    const char *https_ok[] = {"https://fcm.googleapis.com/fcm/send/abc:def",
                              "https://updates.push.services.mozilla.com/wpush/v2/gAAAAABc",
                              "https://web.push.apple.com/QGuQ?x=1", NULL};
    for (const char **u = https_ok; *u; u++) {
        assert_int_equal(td_webpush_check_endpoint(*u, false, err, sizeof(err)), 0);
        assert_int_equal(td_webpush_check_endpoint(*u, true, err, sizeof(err)), 0);
    }
    const char *loopback[] = {"http://127.0.0.1:9000/push", "http://localhost:1/x",
                              "http://127.1.2.3/x", "http://[::1]:8080/x", NULL};
    for (const char **u = loopback; *u; u++) {
        assert_int_equal(td_webpush_check_endpoint(*u, false, err, sizeof(err)), TD_EINVAL);
        assert_int_equal(td_webpush_check_endpoint(*u, true, err, sizeof(err)), 0);
    }
    char *longurl = td_malloc(TD_WEBPUSH_URL_MAX + 20);
    strcpy(longurl, "https://a.example/");
    memset(longurl + 18, 'x', TD_WEBPUSH_URL_MAX);
    longurl[TD_WEBPUSH_URL_MAX + 18] = '\0';
    const char *bad[] = {"http://push.example.net/x",
                         "http://10.0.0.1/x",
                         "http://128.0.0.1/x",
                         "ftp://127.0.0.1/x",
                         "file:///etc/passwd",
                         "https://",
                         "not a url",
                         "",
                         "https://user:pw@push.example.net/x",
                         "https://push.example.net/a b",
                         "/relative/path",
                         longurl,
                         NULL};
    for (const char **u = bad; *u; u++) {
        err[0] = '\0';
        assert_int_equal(td_webpush_check_endpoint(*u, true, err, sizeof(err)), TD_EINVAL);
        assert_true(err[0] != '\0');
    }
    assert_int_equal(td_webpush_check_endpoint(NULL, true, err, sizeof(err)), TD_EINVAL);
    free(longurl);

    /* Found by fuzzing: libcurl percent-decodes the host, which then put
     * a byte that is not UTF-8 into the origin and the VAPID token. */
    char *o = NULL;
    assert_int_equal(
        td_webpush_check_endpoint("https://fcm.goog%eapis.com/x", false, err, sizeof(err)),
        TD_EINVAL);
    assert_int_equal(td_webpush_origin("https://push%25.example.net/x", &o, err, sizeof(err)),
                     TD_EINVAL);
    assert_null(o);
}

static void test_origin(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"https://Push.Example.NET/wpush/v2/x", "https://push.example.net"},
        {"https://push.example.net:443/x", "https://push.example.net"},
        {"https://push.example.net:8443/x", "https://push.example.net:8443"},
        {"http://127.0.0.1:8085/a?b#c", "http://127.0.0.1:8085"},
        {"http://localhost:80/", "http://localhost"},
        {"HTTPS://h.example", "https://h.example"},
    };
    char err[256];
    for (size_t i = 0; i < TD_ARRAY_SIZE(cases); i++) {
        char *o = NULL;
        assert_int_equal(td_webpush_origin(cases[i][0], &o, err, sizeof(err)), 0);
        assert_string_equal(o, cases[i][1]);
        free(o);
    }
    char *o = NULL;
    assert_int_equal(td_webpush_origin("mailto:x@y", &o, err, sizeof(err)), TD_EINVAL);
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
        cmocka_unit_test(test_rfc8291_vector), cmocka_unit_test(test_round_trip_python),
        cmocka_unit_test(test_vapid_python),   cmocka_unit_test(test_vapid_export_import),
        cmocka_unit_test(test_check_keys),     cmocka_unit_test(test_check_endpoint),
        cmocka_unit_test(test_origin),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
