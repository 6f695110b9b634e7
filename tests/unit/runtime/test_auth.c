/* Tokens and passwords: HS256 round trips, and every way a token can be
 * wrong (expired, tampered, wrong key, alg none, malformed) being refused;
 * argon2id hashes; base64url. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/auth.h"

static const unsigned char key[] = "0123456789abcdef0123456789abcdef";
#define KEY_LEN 32
#define NOW     1800000000LL
#define USER_ID "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"

static td_claims_t claims(const char *role, int64_t exp)
{
    td_claims_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "%s", USER_ID);
    snprintf(c.role, sizeof(c.role), "%s", role);
    c.iat = NOW - 10;
    c.exp = exp;
    return c;
}

static int verify(const char *token, td_claims_t *out)
{
    char err[128] = "";
    td_claims_t tmp;
    int rc = td_jwt_verify(key, KEY_LEN, token, NOW, out ? out : &tmp, err, sizeof(err));
    if (rc != 0) assert_true(err[0] != '\0'); /* every refusal says why */
    return rc;
}

/* A token signed with key over arbitrary header and payload JSON. */
static char *forge(const char *header, const char *payload, const unsigned char *k, size_t klen)
{
    char *h = td_b64url_encode(header, strlen(header));
    char *p = td_b64url_encode(payload, strlen(payload));
    char *input = td_asprintf("%s.%s", h, p);
    unsigned char mac[32];
    unsigned int mlen = sizeof(mac);
    HMAC(EVP_sha256(), k, (int)klen, (const unsigned char *)input, strlen(input), mac, &mlen);
    char *s = td_b64url_encode(mac, mlen);
    char *tok = td_asprintf("%s.%s", input, s);
    free(h);
    free(p);
    free(input);
    free(s);
    return tok;
}

static void test_round_trip(void **state)
{
    (void)state;
    td_claims_t c = claims("admin", NOW + TD_TOKEN_TTL_S);
    char *tok = td_jwt_sign(key, KEY_LEN, &c);
    assert_non_null(tok);

    /* The header is exactly the one HS256 header. */
    char *dot = strchr(tok, '.');
    assert_non_null(dot);
    char *h = td_strndup(tok, (size_t)(dot - tok));
    size_t n;
    unsigned char *hdr = td_b64url_decode(h, &n);
    assert_non_null(hdr);
    assert_int_equal(n, strlen("{\"alg\":\"HS256\",\"typ\":\"JWT\"}"));
    assert_memory_equal(hdr, "{\"alg\":\"HS256\",\"typ\":\"JWT\"}", n);
    free(hdr);
    free(h);

    td_claims_t out;
    assert_int_equal(verify(tok, &out), 0);
    assert_string_equal(out.sub, USER_ID);
    assert_string_equal(out.role, "admin");
    assert_int_equal(out.exp, NOW + TD_TOKEN_TTL_S);
    assert_int_equal(out.iat, NOW - 10);
    free(tok);

    c = claims("customer", NOW + 1);
    tok = td_jwt_sign(key, KEY_LEN, &c);
    assert_int_equal(verify(tok, &out), 0);
    assert_string_equal(out.role, "customer");
    free(tok);
}

static void test_expired(void **state)
{
    (void)state;
    td_claims_t c = claims("customer", NOW);
    char *tok = td_jwt_sign(key, KEY_LEN, &c);
    assert_int_equal(verify(tok, NULL), TD_EEXPIRED); /* exp == now is expired */
    free(tok);
    c = claims("customer", NOW - 3600);
    tok = td_jwt_sign(key, KEY_LEN, &c);
    assert_int_equal(verify(tok, NULL), TD_EEXPIRED);
    free(tok);
}

static void test_tampered_payload(void **state)
{
    (void)state;
    td_claims_t c = claims("customer", NOW + 60);
    char *tok = td_jwt_sign(key, KEY_LEN, &c);
    /* Swap in a payload that claims admin, keeping the old signature. */
    char *d1 = strchr(tok, '.'), *d2 = strrchr(tok, '.');
    const char *evil = "{\"sub\":\"" USER_ID "\",\"role\":\"admin\",\"iat\":1,\"exp\":9999999999}";
    char *p = td_b64url_encode(evil, strlen(evil));
    char *bad = td_asprintf("%.*s.%s%s", (int)(d1 - tok), tok, p, d2);
    assert_int_equal(verify(bad, NULL), TD_EINVAL);
    free(bad);
    free(p);

    /* Flipping one payload character is refused too. */
    char *flip = td_strdup(tok);
    char *q = strchr(flip, '.') + 3;
    *q = *q == 'A' ? 'B' : 'A';
    assert_int_equal(verify(flip, NULL), TD_EINVAL);
    free(flip);
    free(tok);
}

static void test_tampered_signature(void **state)
{
    (void)state;
    td_claims_t c = claims("customer", NOW + 60);
    char *tok = td_jwt_sign(key, KEY_LEN, &c);
    char *t = td_strdup(tok);
    char *s = strrchr(t, '.') + 1;
    s[0] = s[0] == 'A' ? 'B' : 'A';
    assert_int_equal(verify(t, NULL), TD_EINVAL);
    free(t);

    /* Signature cut short, or removed. */
    t = td_strdup(tok);
    t[strlen(t) - 4] = '\0';
    assert_int_equal(verify(t, NULL), TD_EINVAL);
    strrchr(t, '.')[1] = '\0';
    assert_int_equal(verify(t, NULL), TD_EINVAL);
    free(t);
    free(tok);
}

/* Found by fuzzing: a signature with a '_' replaced by a byte >= 0x80
 * decoded to the same MAC, so an altered token still verified. */
static void test_signature_with_non_ascii(void **state)
{
    (void)state;
    td_claims_t c = claims("customer", NOW + 60);
    char *tok = NULL, *under = NULL;
    /* Sign until the signature has a '_' to replace (half the tokens do). */
    for (int i = 0; i < 1000 && !under; i++) {
        free(tok);
        c.iat = NOW + i;
        tok = td_jwt_sign(key, KEY_LEN, &c);
        under = strchr(strrchr(tok, '.'), '_');
    }
    assert_non_null(under);
    assert_int_equal(td_jwt_verify(key, KEY_LEN, tok, NOW, NULL, NULL, 0), 0);
    for (int b = 0x80; b <= 0xff; b++) {
        *under = (char)b;
        assert_int_equal(td_jwt_verify(key, KEY_LEN, tok, NOW, NULL, NULL, 0), TD_EINVAL);
    }
    free(tok);
}

static void test_wrong_key(void **state)
{
    (void)state;
    static const unsigned char other[] = "ffffffffffffffffffffffffffffffff";
    td_claims_t c = claims("admin", NOW + 60);
    char *tok = td_jwt_sign(other, KEY_LEN, &c);
    assert_int_equal(verify(tok, NULL), TD_EINVAL);
    free(tok);
    /* Same key bytes but a different length is a different key. */
    tok = td_jwt_sign(key, KEY_LEN - 1, &c);
    assert_int_equal(verify(tok, NULL), TD_EINVAL);
    free(tok);
}

static void test_alg_none_and_other_algs(void **state)
{
    (void)state;
    const char *payload =
        "{\"sub\":\"" USER_ID "\",\"role\":\"admin\",\"iat\":1,\"exp\":9999999999}";
    /* alg none with an empty signature. */
    const char *none = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
    char *h = td_b64url_encode(none, strlen(none));
    char *p = td_b64url_encode(payload, strlen(payload));
    char *tok = td_asprintf("%s.%s.", h, p);
    assert_int_equal(verify(tok, NULL), TD_EINVAL);
    free(tok);
    free(h);
    free(p);

    /* Correctly MACed but claiming another algorithm: still refused. */
    tok = forge("{\"alg\":\"HS512\",\"typ\":\"JWT\"}", payload, key, KEY_LEN);
    assert_int_equal(verify(tok, NULL), TD_EINVAL);
    free(tok);
    tok = forge("{\"typ\":\"JWT\"}", payload, key, KEY_LEN);
    assert_int_equal(verify(tok, NULL), TD_EINVAL);
    free(tok);

    /* The forging helper itself makes tokens we accept: the refusals above
     * are about the header, not the helper. */
    tok = forge("{\"alg\":\"HS256\",\"typ\":\"JWT\"}", payload, key, KEY_LEN);
    assert_int_equal(verify(tok, NULL), 0);
    free(tok);
}

static void test_bad_claims(void **state)
{
    (void)state;
    const char *hdr = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    const char *bad_payloads[] = {
        "{\"role\":\"admin\",\"exp\":9999999999}",                        /* no sub */
        "{\"sub\":\"not-a-uuid\",\"role\":\"admin\",\"exp\":9999999999}", /* sub not a UUID */
        "{\"sub\":7,\"role\":\"admin\",\"exp\":9999999999}",              /* sub not a string */
        "{\"sub\":\"" USER_ID "\",\"exp\":9999999999}",                   /* no role */
        "{\"sub\":\"" USER_ID "\",\"role\":\"root\",\"exp\":9999999999}", /* unknown role */
        "{\"sub\":\"" USER_ID "\",\"role\":\"admin\"}",                   /* no exp */
        "{\"sub\":\"" USER_ID "\",\"role\":\"admin\",\"exp\":\"9999999999\"}", /* exp string */
        "{\"sub\":\"" USER_ID "\",\"role\":\"admin\",\"exp\":9999999999.5}",   /* exp real */
        "[1,2,3]",                                                             /* not an object */
        "not json",
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad_payloads); i++) {
        char *tok = forge(hdr, bad_payloads[i], key, KEY_LEN);
        assert_int_equal(verify(tok, NULL), TD_EINVAL);
        free(tok);
    }
}

static void test_garbage_tokens(void **state)
{
    (void)state;
    char err[128];
    td_claims_t out;
    assert_int_equal(td_jwt_verify(key, KEY_LEN, NULL, NOW, &out, err, sizeof(err)), TD_EINVAL);
    assert_int_equal(verify("", NULL), TD_EINVAL);
    assert_int_equal(verify(".", NULL), TD_EINVAL);
    assert_int_equal(verify("..", NULL), TD_EINVAL);
    assert_int_equal(verify("abc.def", NULL), TD_EINVAL);
    assert_int_equal(verify("a.b.c.d", NULL), TD_EINVAL);
    assert_int_equal(verify("!!!.@@@.###", NULL), TD_EINVAL);
    assert_int_equal(verify("eyJhbGciOiJIUzI1NiJ9=.e30=.AAAA", NULL), TD_EINVAL); /* padding */

    /* A valid token with a fourth segment or a trailing dot. */
    td_claims_t c = claims("admin", NOW + 60);
    char *tok = td_jwt_sign(key, KEY_LEN, &c);
    char *t = td_asprintf("%s.", tok);
    assert_int_equal(verify(t, NULL), TD_EINVAL);
    free(t);
    t = td_asprintf("%s.%s", tok, "x");
    assert_int_equal(verify(t, NULL), TD_EINVAL);
    free(t);
    t = td_asprintf(" %s", tok);
    assert_int_equal(verify(t, NULL), TD_EINVAL);
    free(t);
    free(tok);

    /* Huge input: refused quickly without trouble. */
    size_t big = 1 << 20;
    char *huge = td_malloc(big + 1);
    memset(huge, 'A', big);
    huge[big] = '\0';
    huge[1000] = '.';
    huge[2000] = '.';
    assert_int_equal(verify(huge, NULL), TD_EINVAL);
    free(huge);
}

static void test_password_hash(void **state)
{
    (void)state;
    char hash[TD_PASSWORD_HASH_MAX];
    assert_int_equal(td_password_hash("correct horse battery", hash), 0);
    assert_non_null(strstr(hash, "$argon2id$"));
    assert_true(strlen(hash) < TD_PASSWORD_HASH_MAX);
    assert_true(td_password_verify(hash, "correct horse battery"));
    assert_false(td_password_verify(hash, "correct horse batterz"));
    assert_false(td_password_verify(hash, ""));
    assert_false(td_password_verify("", "correct horse battery"));
    assert_false(td_password_verify("$argon2id$garbage", "correct horse battery"));
    assert_false(td_password_verify(NULL, "x"));

    /* Salted: the same password hashes differently each time. */
    char hash2[TD_PASSWORD_HASH_MAX];
    assert_int_equal(td_password_hash("correct horse battery", hash2), 0);
    assert_string_not_equal(hash, hash2);
    assert_true(td_password_verify(hash2, "correct horse battery"));
}

static void test_b64url(void **state)
{
    (void)state;
    unsigned char bytes[256];
    for (size_t i = 0; i < sizeof(bytes); i++) bytes[i] = (unsigned char)i;
    for (size_t len = 0; len <= sizeof(bytes); len += 1) {
        char *enc = td_b64url_encode(bytes, len);
        assert_null(strpbrk(enc, "+/="));
        size_t n = 99999;
        unsigned char *dec = td_b64url_decode(enc, &n);
        assert_non_null(dec);
        assert_int_equal(n, len);
        if (len) assert_memory_equal(dec, bytes, len);
        free(dec);
        free(enc);
    }
    char *enc = td_b64url_encode("\xfb\xff", 2);
    assert_string_equal(enc, "-_8");
    free(enc);

    size_t n;
    unsigned char *d;
    assert_null(td_b64url_decode("ab+/", &n)); /* standard alphabet */
    assert_null(td_b64url_decode("YQ==", &n)); /* padding */
    assert_null(td_b64url_decode("Y", &n));    /* impossible length */
    assert_null(td_b64url_decode("YR", &n));   /* non-zero trailing bits */
    assert_null(td_b64url_decode("Y Q", &n));  /* whitespace */
    /* Found by fuzzing: libsodium 1.0.18 read any byte >= 0x80 as '_'. */
    assert_non_null(d = td_b64url_decode("__8", &n));
    free(d);
    assert_null(td_b64url_decode("\xff_8", &n));
    assert_null(td_b64url_decode("YWJ\x80", &n));
    assert_null(td_b64url_decode(NULL, &n));
    d = td_b64url_decode("YQ", &n);
    assert_non_null(d);
    assert_int_equal(n, 1);
    assert_int_equal(d[0], 'a');
    free(d);
}

/* Tokens signed elsewhere (Python's hmac module) verify: the HMAC is
 * RFC 2104's, for a short key and for one longer than SHA-256's block,
 * which HMAC hashes first; one changed key byte fails. */
static void test_tokens_signed_elsewhere(void **state)
{
    (void)state;
    static const char payload[] =
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI2ZjFjMmEzYi00ZDVlLTRmNjAtOGE3Yi05YzBkMWUy"
        "ZjNhNGIiLCJyb2xlIjoiY3VzdG9tZXIiLCJpYXQiOjE3MDAwMDAwMDAsImV4cCI6OTk5OTk5OTk5OX0.";
    unsigned char short_key[] = "a secret of twenty-nine bytes", long_key[100];
    memset(long_key, 'k', sizeof(long_key));
    const struct {
        unsigned char *key;
        size_t len;
        const char *sig;
    } cases[] = {
        {short_key, sizeof(short_key) - 1, "pY5ZYRvVQDAFmirds9JeW1821n58MlXp32fdNfnPdMk"},
        {long_key, sizeof(long_key), "FFiGxHkV0Mo_Q9Q983JqXryy8MMZQPeIRphwrdDQlrg"},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(cases); i++) {
        char *token = td_asprintf("%s%s", payload, cases[i].sig);
        char err[128] = "";
        td_claims_t c;
        assert_int_equal(
            td_jwt_verify(cases[i].key, cases[i].len, token, NOW, &c, err, sizeof(err)), 0);
        assert_string_equal(c.sub, USER_ID);
        assert_string_equal(c.role, "customer");
        assert_int_equal(c.iat, 1700000000);
        cases[i].key[cases[i].len - 1] ^= 1;
        assert_int_equal(
            td_jwt_verify(cases[i].key, cases[i].len, token, NOW, &c, err, sizeof(err)), TD_EINVAL);
        free(token);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_expired),
        cmocka_unit_test(test_tampered_payload),
        cmocka_unit_test(test_tampered_signature),
        cmocka_unit_test(test_wrong_key),
        cmocka_unit_test(test_alg_none_and_other_algs),
        cmocka_unit_test(test_bad_claims),
        cmocka_unit_test(test_garbage_tokens),
        cmocka_unit_test(test_password_hash),
        cmocka_unit_test(test_b64url),
        cmocka_unit_test(test_signature_with_non_ascii),
        cmocka_unit_test(test_tokens_signed_elsewhere),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
