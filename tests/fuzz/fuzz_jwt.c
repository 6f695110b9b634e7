/* Fuzzes access-token verification, both ways. The input as a token must
 * never be accepted unless its signature really is HMAC-SHA256 under the
 * key (checked here independently, with OpenSSL and libsodium directly),
 * and never under another key. The input as claims (16 bytes of user id,
 * a role bit, iat, exp) is signed with td_jwt_sign: verify must accept it
 * with exactly those claims (or say expired), and must refuse it after any
 * one byte of the token is changed. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>

#include "fuzz.h"
#include "tidings/auth.h"

#define NOW 1800000000LL

static const unsigned char key[32] = "tidings fuzz key, 32 bytes long";
static const unsigned char other_key[32] = "some other key of just 32 bytes";

/* Is token [signing input].[base64url of its HMAC under key]? */
static bool really_signed(const char *token)
{
    const char *dot = strrchr(token, '.');
    if (!dot) return false;
    unsigned char want[32], got[32];
    unsigned int len = sizeof(want);
    HMAC(EVP_sha256(), key, sizeof(key), (const unsigned char *)token, (size_t)(dot - token), want,
         &len);
    size_t n = 0;
    const char *end = NULL;
    if (sodium_base642bin(got, sizeof(got), dot + 1, strlen(dot + 1), NULL, &n, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        *end || n != sizeof(got))
        return false;
    return CRYPTO_memcmp(want, got, sizeof(want)) == 0;
}

static void verify_input(const uint8_t *data, size_t size)
{
    char *token = fuzz_str(data, size);
    char err[256] = "";
    td_claims_t c;
    int rc = td_jwt_verify(key, sizeof(key), token, NOW, &c, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || rc == TD_EINVAL || rc == TD_EEXPIRED);
    if (rc == 0 || rc == TD_EEXPIRED) {
        FUZZ_CHECK(really_signed(token));
        FUZZ_CHECK(td_jwt_verify(other_key, sizeof(other_key), token, NOW, &c, err, sizeof(err)) ==
                   TD_EINVAL);
    } else {
        FUZZ_CHECK(err[0] != '\0');
    }
    if (rc == 0) {
        FUZZ_CHECK(td_uuid_valid(c.sub));
        FUZZ_CHECK(!strcmp(c.role, "customer") || !strcmp(c.role, "admin"));
        FUZZ_CHECK(c.exp > NOW);
    }
    free(token);
}

static void sign_input(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    static const char hex[] = "0123456789abcdef";
    td_claims_t want;
    memset(&want, 0, sizeof(want));
    for (int i = 0, o = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) want.sub[o++] = '-';
        uint8_t b = fuzz_u8(&in);
        want.sub[o++] = hex[b >> 4];
        want.sub[o++] = hex[b & 15];
    }
    uint8_t flags = fuzz_u8(&in);
    snprintf(want.role, sizeof(want.role), "%s", flags & 1 ? "admin" : "customer");
    want.iat = (int64_t)fuzz_u64(&in);
    want.exp = (int64_t)fuzz_u64(&in);
    uint16_t where = fuzz_u16(&in);
    uint8_t flip = fuzz_u8(&in);

    char *token = td_jwt_sign(key, sizeof(key), &want);
    char err[256] = "";
    td_claims_t got;
    memset(&got, 0, sizeof(got));
    int rc = td_jwt_verify(key, sizeof(key), token, NOW, &got, err, sizeof(err));
    if (want.exp > NOW) {
        if (rc != 0) fprintf(stderr, "refused own token %s: %s\n", token, err);
        FUZZ_CHECK(rc == 0);
        FUZZ_CHECK(!strcmp(got.sub, want.sub) && !strcmp(got.role, want.role));
        FUZZ_CHECK(got.iat == want.iat && got.exp == want.exp);
    } else {
        FUZZ_CHECK(rc == TD_EEXPIRED);
    }
    FUZZ_CHECK(td_jwt_verify(other_key, sizeof(other_key), token, NOW, &got, err, sizeof(err)) ==
               TD_EINVAL);

    /* Any one byte changed (to anything but NUL, which would only make it
     * shorter) and the token is no longer ours. */
    size_t len = strlen(token);
    size_t at = where % len;
    char was = token[at];
    token[at] = (char)(token[at] ^ (flip ? flip : 1));
    if (token[at] != '\0') {
        rc = td_jwt_verify(key, sizeof(key), token, NOW, &got, err, sizeof(err));
        if (rc != TD_EINVAL)
            fprintf(stderr, "accepted tampered token %s (byte %zu was '%c', rc %d)\n", token, at,
                    was, rc);
        FUZZ_CHECK(rc == TD_EINVAL);
    }
    free(token);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    verify_input(data, size);
    sign_input(data, size);
    return 0;
}
