/* Access tokens and password hashes. A token is an HS256 JWT whose header is
 * always exactly {"alg":"HS256","typ":"JWT"}; verification accepts nothing
 * else (no "none", no algorithm switching), compares the MAC in constant
 * time before it looks at the claims, and only then checks their shape and
 * expiry. Passwords are argon2id strings from libsodium, which carry their
 * own salt and cost parameters so old hashes stay verifiable if the costs
 * are raised later. */
#include "tidings/auth.h"

#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tidings/json.h"

/* Longest token accepted: real ones are ~250 bytes; the cap keeps a hostile
 * header from costing more than a few microseconds to reject. */
#define JWT_MAX_LEN 4096

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static bool sodium_ok;

static void sodium_setup(void)
{
    sodium_ok = sodium_init() >= 0;
}

static bool sodium_ready(void)
{
    pthread_once(&sodium_once, sodium_setup);
    return sodium_ok;
}

char *td_b64url_encode(const void *data, size_t len)
{
    const int variant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
    size_t cap = sodium_base64_encoded_len(len, variant);
    char *out = td_malloc(cap);
    sodium_bin2base64(out, cap, data, len, variant);
    return out;
}

unsigned char *td_b64url_decode(const char *s, size_t *len)
{
    if (!s) return NULL;
    size_t slen = strlen(s);
    /* libsodium 1.0.18 (Debian 12) decodes every byte >= 0x80 as '_' (it
     * compares a plain char), so "ab\xff" would decode like "ab_" and a
     * token could be altered and still verify: only the alphabet passes. */
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    if (strspn(s, alphabet) != slen) return NULL;
    /* Every 4 characters give at most 3 bytes. */
    size_t cap = slen / 4 * 3 + 3;
    unsigned char *out = td_malloc(cap + 1);
    size_t n = 0;
    const char *end = NULL;
    if (sodium_base642bin(out, cap, s, slen, NULL, &n, &end,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        end != s + slen) {
        free(out);
        return NULL;
    }
    out[n] = '\0'; /* convenient for decoded JSON; not counted in *len */
    if (len) *len = n;
    return out;
}

static const char jwt_header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";

/* HMAC-SHA256 through libsodium: OpenSSL's one-shot HMAC() fetches the
 * digest and sets up a context on every call, some 30,000 instructions per
 * token verified against about 3,000 here. Any key length (RFC 2104). */
static void hs256(const unsigned char *key, size_t key_len, const char *data, size_t len,
                  unsigned char mac[32])
{
    crypto_auth_hmacsha256_state st;
    crypto_auth_hmacsha256_init(&st, key, key_len);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)data, len);
    crypto_auth_hmacsha256_final(&st, mac);
    sodium_memzero(&st, sizeof(st));
}

char *td_jwt_sign(const unsigned char *key, size_t key_len, const td_claims_t *claims)
{
    json_t *payload = json_pack("{s:s, s:s, s:I, s:I}", "sub", claims->sub, "role", claims->role,
                                "iat", (json_int_t)claims->iat, "exp", (json_int_t)claims->exp);
    if (!payload) td_oom();
    char *payload_json = td_json_dumps(payload);
    json_decref(payload);

    char *h64 = td_b64url_encode(jwt_header, strlen(jwt_header));
    char *p64 = td_b64url_encode(payload_json, strlen(payload_json));
    char *signing_input = td_asprintf("%s.%s", h64, p64);
    unsigned char mac[32];
    hs256(key, key_len, signing_input, strlen(signing_input), mac);
    char *s64 = td_b64url_encode(mac, sizeof(mac));
    char *token = td_asprintf("%s.%s", signing_input, s64);

    free(s64);
    free(signing_input);
    free(p64);
    free(h64);
    free(payload_json);
    return token;
}

/* Decodes one base64url segment [p, p+len) into parsed JSON. */
static json_t *segment_json(const char *p, size_t len)
{
    char *seg = td_strndup(p, len);
    size_t n = 0;
    unsigned char *raw = td_b64url_decode(seg, &n);
    free(seg);
    if (!raw) return NULL;
    json_t *j = json_loadb((const char *)raw, n, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (j && !json_is_object(j)) {
        json_decref(j);
        j = NULL;
    }
    return j;
}

static bool json_int_field(const json_t *obj, const char *name, int64_t *out)
{
    const json_t *v = json_object_get(obj, name);
    if (!json_is_integer(v)) return false;
    *out = json_integer_value(v);
    return true;
}

int td_jwt_verify(const unsigned char *key, size_t key_len, const char *token, int64_t now_s,
                  td_claims_t *out, char *errstr, size_t errlen)
{
    json_t *header = NULL, *payload = NULL;
    unsigned char *sig = NULL;
    int err = TD_EINVAL;

    if (!token || !*token) {
        td_errf(errstr, errlen, TD_EINVAL, "empty token");
        goto fail;
    }
    size_t tlen = strnlen(token, JWT_MAX_LEN + 1);
    if (tlen > JWT_MAX_LEN) {
        td_errf(errstr, errlen, TD_EINVAL, "token too long");
        goto fail;
    }
    const char *dot1 = memchr(token, '.', tlen);
    const char *dot2 = dot1 ? memchr(dot1 + 1, '.', tlen - (size_t)(dot1 + 1 - token)) : NULL;
    if (!dot1 || !dot2 || memchr(dot2 + 1, '.', tlen - (size_t)(dot2 + 1 - token))) {
        td_errf(errstr, errlen, TD_EINVAL, "token must have 3 segments");
        goto fail;
    }

    header = segment_json(token, (size_t)(dot1 - token));
    if (!header) {
        td_errf(errstr, errlen, TD_EINVAL, "bad token header");
        goto fail;
    }
    const char *alg = json_string_value(json_object_get(header, "alg"));
    if (!alg || strcmp(alg, "HS256") != 0) {
        td_errf(errstr, errlen, TD_EINVAL, "unsupported token algorithm");
        goto fail;
    }
    const json_t *typ = json_object_get(header, "typ");
    if (typ && (!json_is_string(typ) || strcasecmp(json_string_value(typ), "JWT") != 0)) {
        td_errf(errstr, errlen, TD_EINVAL, "unsupported token type");
        goto fail;
    }

    size_t sig_len = 0;
    sig = td_b64url_decode(dot2 + 1, &sig_len);
    unsigned char mac[32];
    hs256(key, key_len, token, (size_t)(dot2 - token), mac);
    if (!sig || sig_len != sizeof(mac) || sodium_memcmp(sig, mac, sizeof(mac)) != 0) {
        td_errf(errstr, errlen, TD_EINVAL, "bad token signature");
        goto fail;
    }

    /* Signed by us from here on, but still checked: a key shared with a
     * buggy or older signer must not crash or confuse the verifier. */
    payload = segment_json(dot1 + 1, (size_t)(dot2 - dot1 - 1));
    if (!payload) {
        td_errf(errstr, errlen, TD_EINVAL, "bad token payload");
        goto fail;
    }
    td_claims_t c;
    memset(&c, 0, sizeof(c));
    const char *sub = json_string_value(json_object_get(payload, "sub"));
    if (!sub || !td_uuid_valid(sub)) {
        td_errf(errstr, errlen, TD_EINVAL, "token sub must be a user id");
        goto fail;
    }
    const char *role = json_string_value(json_object_get(payload, "role"));
    if (!role || (strcmp(role, "customer") != 0 && strcmp(role, "admin") != 0)) {
        td_errf(errstr, errlen, TD_EINVAL, "token role must be customer or admin");
        goto fail;
    }
    if (!json_int_field(payload, "exp", &c.exp)) {
        td_errf(errstr, errlen, TD_EINVAL, "token exp must be an integer");
        goto fail;
    }
    if (json_object_get(payload, "iat") && !json_int_field(payload, "iat", &c.iat)) {
        td_errf(errstr, errlen, TD_EINVAL, "token iat must be an integer");
        goto fail;
    }
    snprintf(c.sub, sizeof(c.sub), "%s", sub);
    snprintf(c.role, sizeof(c.role), "%s", role);
    if (c.exp <= now_s) {
        err = td_errf(errstr, errlen, TD_EEXPIRED, "token expired");
        goto fail;
    }
    if (out) *out = c;
    err = 0;

fail:
    free(sig);
    json_decref(payload);
    json_decref(header);
    return err;
}

int td_password_hash(const char *password, char *out)
{
    if (!password || !sodium_ready()) return TD_EIO;
    if (crypto_pwhash_str_alg(out, password, strlen(password), crypto_pwhash_OPSLIMIT_INTERACTIVE,
                              crypto_pwhash_MEMLIMIT_INTERACTIVE,
                              crypto_pwhash_ALG_ARGON2ID13) != 0)
        return TD_EIO;
    return 0;
}

bool td_password_verify(const char *hash, const char *password)
{
    if (!hash || !password || !sodium_ready()) return false;
    /* libsodium reads the hash as a crypto_pwhash_STRBYTES string. */
    if (strnlen(hash, crypto_pwhash_STRBYTES) >= crypto_pwhash_STRBYTES) return false;
    char buf[crypto_pwhash_STRBYTES];
    memset(buf, 0, sizeof(buf));
    memcpy(buf, hash, strlen(hash));
    return crypto_pwhash_str_verify(buf, password, strlen(password)) == 0;
}
