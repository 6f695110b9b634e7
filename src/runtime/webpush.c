/* Web Push for the notifications service: the VAPID key pair and token
 * (RFC 8292), subscription checks, and message encryption (RFC 8291 with
 * the aes128gcm coding of RFC 8188). Only OpenSSL 3 EVP and the non-
 * deprecated EC_GROUP/EC_POINT arithmetic are used (no EC_KEY). The key
 * schedule below follows RFC 8291 section 3.4 line by line, so that it can
 * be read next to the RFC; the Appendix A vector in tests/unit pins it to
 * the byte. */
#include "tidings/webpush.h"

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "tidings/auth.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/urlguard.h"

#define P256_NAME "prime256v1"

struct td_vapid {
    EVP_PKEY *pkey;
    char *public_b64;
};

/* ---- small helpers ------------------------------------------------------ */

/* td_b64url_decode, tolerating the '=' padding some clients add. */
static unsigned char *b64url_decode_lenient(const char *s, size_t *len)
{
    if (!s) return NULL;
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '=') n--;
    char *trimmed = td_strndup(s, n);
    unsigned char *out = td_b64url_decode(trimmed, len);
    free(trimmed);
    return out;
}

/* An EVP_PKEY from OSSL params of an EC key on P-256. */
static EVP_PKEY *pkey_fromdata(OSSL_PARAM_BLD *bld, int selection)
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM *params = OSSL_PARAM_BLD_to_param(bld);
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
        EVP_PKEY_fromdata(ctx, &pkey, selection, params) != 1)
        pkey = NULL;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    return pkey;
}

/* The public key of a raw uncompressed point, or NULL when it is not a
 * point on P-256 (OpenSSL decodes and checks it; the public check adds the
 * explicit on-curve and not-infinity test an invalid-curve attack would
 * need to get past). */
static EVP_PKEY *pkey_from_public(const unsigned char pub[TD_WEBPUSH_KEY_LEN])
{
    if (pub[0] != 0x04) return NULL;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    if (!bld) td_oom();
    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, P256_NAME, 0);
    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, TD_WEBPUSH_KEY_LEN);
    EVP_PKEY *pkey = pkey_fromdata(bld, EVP_PKEY_PUBLIC_KEY);
    OSSL_PARAM_BLD_free(bld);
    if (!pkey) return NULL;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    bool ok = ctx && EVP_PKEY_public_check(ctx) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        EVP_PKEY_free(pkey);
        return NULL;
    }
    return pkey;
}

/* The key pair of private scalar d (1 <= d < n). The public point d*G is
 * computed here because EVP_PKEY_fromdata does not derive it, and both
 * signing and exporting want it. */
static EVP_PKEY *pkey_from_private(const unsigned char d[TD_WEBPUSH_PRIV_LEN])
{
    EVP_PKEY *pkey = NULL;
    OSSL_PARAM_BLD *bld = NULL;
    EC_POINT *pt = NULL;
    BIGNUM *bn = BN_bin2bn(d, TD_WEBPUSH_PRIV_LEN, NULL);
    EC_GROUP *grp = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    unsigned char pub[TD_WEBPUSH_KEY_LEN];

    if (!bn || !grp) goto fail;
    if (BN_is_zero(bn) || BN_cmp(bn, EC_GROUP_get0_order(grp)) >= 0) goto fail;
    pt = EC_POINT_new(grp);
    if (!pt || EC_POINT_mul(grp, pt, bn, NULL, NULL, NULL) != 1 ||
        EC_POINT_point2oct(grp, pt, POINT_CONVERSION_UNCOMPRESSED, pub, sizeof(pub), NULL) !=
            sizeof(pub))
        goto fail;
    bld = OSSL_PARAM_BLD_new();
    if (!bld) td_oom();
    OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, P256_NAME, 0);
    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, bn);
    OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub));
    pkey = pkey_fromdata(bld, EVP_PKEY_KEYPAIR);

fail:
    OSSL_PARAM_BLD_free(bld);
    EC_POINT_free(pt);
    EC_GROUP_free(grp);
    BN_clear_free(bn);
    return pkey;
}

/* The 65-byte uncompressed public point of pkey. */
static int public_octets(const EVP_PKEY *pkey, unsigned char out[TD_WEBPUSH_KEY_LEN])
{
    size_t n = 0;
    if (EVP_PKEY_get_octet_string_param(pkey, OSSL_PKEY_PARAM_PUB_KEY, out, TD_WEBPUSH_KEY_LEN,
                                        &n) != 1 ||
        n != TD_WEBPUSH_KEY_LEN || out[0] != 0x04)
        return TD_EIO;
    return 0;
}

static EVP_PKEY *p256_generate(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

/* ---- VAPID key pair ------------------------------------------------------ */

static td_vapid_t *vapid_wrap(EVP_PKEY *pkey, char *errstr, size_t errlen)
{
    unsigned char pub[TD_WEBPUSH_KEY_LEN];
    if (public_octets(pkey, pub) != 0) {
        EVP_PKEY_free(pkey);
        td_errf(errstr, errlen, TD_EIO, "cannot read the VAPID public key");
        return NULL;
    }
    td_vapid_t *vapid = td_calloc(1, sizeof(*vapid));
    vapid->pkey = pkey;
    vapid->public_b64 = td_b64url_encode(pub, sizeof(pub));
    return vapid;
}

td_vapid_t *td_vapid_generate(char *errstr, size_t errlen)
{
    EVP_PKEY *pkey = p256_generate();
    if (!pkey) {
        td_errf(errstr, errlen, TD_EIO, "cannot generate a P-256 key pair");
        return NULL;
    }
    return vapid_wrap(pkey, errstr, errlen);
}

td_vapid_t *td_vapid_from_private(const char *private_b64, char *errstr, size_t errlen)
{
    size_t n = 0;
    unsigned char *d = b64url_decode_lenient(private_b64, &n);
    if (!d || n != TD_WEBPUSH_PRIV_LEN) {
        free(d);
        td_errf(errstr, errlen, TD_EINVAL,
                "VAPID private key must be base64url of a 32-byte P-256 scalar");
        return NULL;
    }
    EVP_PKEY *pkey = pkey_from_private(d);
    OPENSSL_cleanse(d, n);
    free(d);
    if (!pkey) {
        td_errf(errstr, errlen, TD_EINVAL, "VAPID private key is not a valid P-256 scalar");
        return NULL;
    }
    return vapid_wrap(pkey, errstr, errlen);
}

char *td_vapid_private_b64(const td_vapid_t *vapid)
{
    BIGNUM *bn = NULL;
    unsigned char d[TD_WEBPUSH_PRIV_LEN];
    if (EVP_PKEY_get_bn_param(vapid->pkey, OSSL_PKEY_PARAM_PRIV_KEY, &bn) != 1 ||
        BN_bn2binpad(bn, d, sizeof(d)) != (int)sizeof(d)) {
        /* A key pair we made ourselves always has its scalar. */
        td_error("vapid: cannot export the private key");
        abort();
    }
    BN_clear_free(bn);
    char *out = td_b64url_encode(d, sizeof(d));
    OPENSSL_cleanse(d, sizeof(d));
    return out;
}

const char *td_vapid_public_b64(const td_vapid_t *vapid)
{
    return vapid->public_b64;
}

void td_vapid_free(td_vapid_t *vapid)
{
    if (!vapid) return;
    EVP_PKEY_free(vapid->pkey);
    free(vapid->public_b64);
    free(vapid);
}

/* ---- URLs ------------------------------------------------------------- */

int td_webpush_origin(const char *url, char **origin, char *errstr, size_t errlen)
{
    td_url_t u;
    int rc = td_url_parse(url, &u, errstr, errlen);
    if (rc != 0) return rc;
    bool https = !strcmp(u.scheme, "https");
    if (!https && strcmp(u.scheme, "http") != 0) {
        td_url_clear(&u);
        return td_errf(errstr, errlen, TD_EINVAL, "URL must be https");
    }
    if (u.port_given && u.port != (https ? 443 : 80))
        *origin = td_asprintf("%s://%s:%d", u.scheme, u.host, u.port);
    else
        *origin = td_asprintf("%s://%s", u.scheme, u.host);
    td_url_clear(&u);
    return 0;
}

int td_webpush_check_endpoint(const char *endpoint, bool allow_http_loopback, char *errstr,
                              size_t errlen)
{
    return td_urlguard_check_url(
        endpoint, "https", allow_http_loopback ? TD_URLGUARD_HTTP_LOOPBACK : 0, errstr, errlen);
}

int td_webpush_check_keys(const char *p256dh, const char *auth, char *errstr, size_t errlen)
{
    int rc = 0;
    size_t n = 0;
    unsigned char *pub = b64url_decode_lenient(p256dh, &n);
    if (!pub || n != TD_WEBPUSH_KEY_LEN || pub[0] != 0x04) {
        rc = td_errf(errstr, errlen, TD_EINVAL,
                     "keys.p256dh must be base64url of a 65-byte uncompressed P-256 point");
        goto out;
    }
    EVP_PKEY *pkey = pkey_from_public(pub);
    if (!pkey) {
        rc = td_errf(errstr, errlen, TD_EINVAL, "keys.p256dh is not a point on P-256");
        goto out;
    }
    EVP_PKEY_free(pkey);
    free(pub);
    pub = b64url_decode_lenient(auth, &n);
    if (!pub || n != TD_WEBPUSH_AUTH_LEN)
        rc = td_errf(errstr, errlen, TD_EINVAL, "keys.auth must be base64url of 16 bytes");
out:
    free(pub);
    return rc;
}

/* ---- VAPID token ------------------------------------------------------- */

/* ES256 (RFC 7518 section 3.4): ECDSA P-256 over SHA-256, the signature as
 * the raw 64 bytes r || s rather than the DER OpenSSL produces. */
static int es256_sign(EVP_PKEY *pkey, const char *data, size_t len, unsigned char sig[64])
{
    int rc = TD_EIO;
    unsigned char *der = NULL;
    size_t der_len = 0;
    ECDSA_SIG *es = NULL;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md) td_oom();
    if (EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, pkey, NULL) != 1 ||
        EVP_DigestSign(md, NULL, &der_len, (const unsigned char *)data, len) != 1)
        goto out;
    der = td_malloc(der_len);
    if (EVP_DigestSign(md, der, &der_len, (const unsigned char *)data, len) != 1) goto out;
    const unsigned char *p = der;
    es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    if (!es) goto out;
    const BIGNUM *r = NULL, *s = NULL;
    ECDSA_SIG_get0(es, &r, &s);
    if (BN_bn2binpad(r, sig, 32) != 32 || BN_bn2binpad(s, sig + 32, 32) != 32) goto out;
    rc = 0;
out:
    ECDSA_SIG_free(es);
    free(der);
    EVP_MD_CTX_free(md);
    return rc;
}

char *td_vapid_jwt(const td_vapid_t *vapid, const char *endpoint, const char *subject,
                   int64_t exp_s, char *errstr, size_t errlen)
{
    static const char header[] = "{\"typ\":\"JWT\",\"alg\":\"ES256\"}";
    char *origin = NULL;
    if (td_webpush_origin(endpoint, &origin, errstr, errlen) != 0) return NULL;
    json_t *claims =
        json_pack("{s:s, s:I, s:s}", "aud", origin, "exp", (json_int_t)exp_s, "sub", subject);
    char *claims_json = td_json_dumps(claims);
    json_decref(claims);
    free(origin);

    char *h64 = td_b64url_encode(header, strlen(header));
    char *c64 = td_b64url_encode(claims_json, strlen(claims_json));
    char *signing_input = td_asprintf("%s.%s", h64, c64);
    char *jwt = NULL;
    unsigned char sig[64];
    if (es256_sign(vapid->pkey, signing_input, strlen(signing_input), sig) != 0) {
        td_errf(errstr, errlen, TD_EIO, "ES256 signing failed");
    } else {
        char *s64 = td_b64url_encode(sig, sizeof(sig));
        jwt = td_asprintf("%s.%s", signing_input, s64);
        free(s64);
    }
    free(signing_input);
    free(c64);
    free(h64);
    free(claims_json);
    return jwt;
}

char *td_vapid_header(const td_vapid_t *vapid, const char *endpoint, const char *subject,
                      int64_t now_s, char *errstr, size_t errlen)
{
    char *jwt = td_vapid_jwt(vapid, endpoint, subject, now_s + TD_VAPID_TTL_S, errstr, errlen);
    if (!jwt) return NULL;
    char *value = td_asprintf("vapid t=%s, k=%s", jwt, vapid->public_b64);
    free(jwt);
    return value;
}

/* ---- encryption -------------------------------------------------------- */

/* HKDF (RFC 5869) with SHA-256, one step at a time as RFC 8291 writes it. */
static int hkdf(int mode, const unsigned char *salt, size_t salt_len, const unsigned char *key,
                size_t key_len, const unsigned char *info, size_t info_len, unsigned char *out,
                size_t out_len)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[5], *p = params;
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
    *p++ = OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, key_len);
    if (mode == EVP_KDF_HKDF_MODE_EXTRACT_ONLY)
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
    else
        *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
    *p = OSSL_PARAM_construct_end();
    int rc = ctx && EVP_KDF_derive(ctx, out, out_len, params) == 1 ? 0 : TD_EIO;
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    return rc;
}

static int hkdf_extract(const unsigned char *salt, size_t salt_len, const unsigned char *ikm,
                        size_t ikm_len, unsigned char prk[32])
{
    return hkdf(EVP_KDF_HKDF_MODE_EXTRACT_ONLY, salt, salt_len, ikm, ikm_len, NULL, 0, prk, 32);
}

static int hkdf_expand(const unsigned char prk[32], const void *info, size_t info_len,
                       unsigned char *out, size_t out_len)
{
    return hkdf(EVP_KDF_HKDF_MODE_EXPAND_ONLY, NULL, 0, prk, 32, info, info_len, out, out_len);
}

static int ecdh(EVP_PKEY *priv, EVP_PKEY *peer, unsigned char secret[32])
{
    size_t n = 32;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, priv, NULL);
    int rc = ctx && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, peer) == 1 &&
                     EVP_PKEY_derive(ctx, secret, &n) == 1 && n == 32
                 ? 0
                 : TD_EIO;
    EVP_PKEY_CTX_free(ctx);
    return rc;
}

/* AES-128-GCM of in into out (same length) and the 16-byte tag. */
static int aes128gcm(const unsigned char key[16], const unsigned char nonce[12],
                     const unsigned char *in, size_t len, unsigned char *out, unsigned char tag[16])
{
    int n = 0, fin = 0, rc = TD_EIO;
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    if (!ctx) td_oom();
    if (EVP_EncryptInit_ex2(ctx, EVP_aes_128_gcm(), key, nonce, NULL) == 1 &&
        EVP_EncryptUpdate(ctx, out, &n, in, (int)len) == 1 &&
        EVP_EncryptFinal_ex(ctx, out + n, &fin) == 1 && (size_t)(n + fin) == len &&
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag) == 1)
        rc = 0;
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

int td_webpush_encrypt_raw(const unsigned char ua_public[TD_WEBPUSH_KEY_LEN],
                           const unsigned char auth[TD_WEBPUSH_AUTH_LEN],
                           const unsigned char *as_private, const unsigned char *salt,
                           const void *payload, size_t len, unsigned char **body, size_t *body_len,
                           char *errstr, size_t errlen)
{
    int rc = TD_EIO;
    EVP_PKEY *ua_key = NULL, *as_key = NULL;
    unsigned char *plain = NULL, *out = NULL;
    unsigned char as_public[TD_WEBPUSH_KEY_LEN], salt_buf[TD_WEBPUSH_SALT_LEN];
    unsigned char ecdh_secret[32], prk_key[32], ikm[32], prk[32], cek[16], nonce[12];

    *body = NULL;
    *body_len = 0;
    if (len > TD_WEBPUSH_MAX_PAYLOAD) {
        rc = td_errf(errstr, errlen, TD_EINVAL, "push payload of %zu bytes is over %d", len,
                     TD_WEBPUSH_MAX_PAYLOAD);
        goto out;
    }
    ua_key = pkey_from_public(ua_public);
    if (!ua_key) {
        rc = td_errf(errstr, errlen, TD_EINVAL, "subscription key is not a point on P-256");
        goto out;
    }
    as_key = as_private ? pkey_from_private(as_private) : p256_generate();
    if (!as_key) {
        rc = td_errf(errstr, errlen, as_private ? TD_EINVAL : TD_EIO,
                     "cannot make the ephemeral key pair");
        goto out;
    }
    if (!salt) {
        if (RAND_bytes(salt_buf, sizeof(salt_buf)) != 1) goto crypto_fail;
        salt = salt_buf;
    }
    if (public_octets(as_key, as_public) != 0 || ecdh(as_key, ua_key, ecdh_secret) != 0)
        goto crypto_fail;

    /* RFC 8291 section 3.4:
     *   PRK_key = HKDF-Extract(salt=auth_secret, IKM=ecdh_secret)
     *   key_info = "WebPush: info" || 0x00 || ua_public || as_public
     *   IKM = HKDF-Expand(PRK_key, key_info, 32)
     * then RFC 8188 section 2.2/2.3 with the message's salt:
     *   PRK = HKDF-Extract(salt, IKM)
     *   CEK = HKDF-Expand(PRK, "Content-Encoding: aes128gcm" || 0x00, 16)
     *   NONCE = HKDF-Expand(PRK, "Content-Encoding: nonce" || 0x00, 12)
     * (the nonce XOR the record sequence number 0 is the nonce itself). */
    static const char key_label[] = "WebPush: info"; /* sizeof includes the 0x00 */
    unsigned char key_info[sizeof(key_label) + 2 * TD_WEBPUSH_KEY_LEN];
    memcpy(key_info, key_label, sizeof(key_label));
    memcpy(key_info + sizeof(key_label), ua_public, TD_WEBPUSH_KEY_LEN);
    memcpy(key_info + sizeof(key_label) + TD_WEBPUSH_KEY_LEN, as_public, TD_WEBPUSH_KEY_LEN);
    static const char cek_info[] = "Content-Encoding: aes128gcm";
    static const char nonce_info[] = "Content-Encoding: nonce";
    if (hkdf_extract(auth, TD_WEBPUSH_AUTH_LEN, ecdh_secret, sizeof(ecdh_secret), prk_key) != 0 ||
        hkdf_expand(prk_key, key_info, sizeof(key_info), ikm, sizeof(ikm)) != 0 ||
        hkdf_extract(salt, TD_WEBPUSH_SALT_LEN, ikm, sizeof(ikm), prk) != 0 ||
        hkdf_expand(prk, cek_info, sizeof(cek_info), cek, sizeof(cek)) != 0 ||
        hkdf_expand(prk, nonce_info, sizeof(nonce_info), nonce, sizeof(nonce)) != 0)
        goto crypto_fail;

    /* One record, so it is the last: the padding delimiter is 0x02 and no
     * padding follows (RFC 8188 section 2). */
    plain = td_malloc(len + 1);
    if (len) memcpy(plain, payload, len);
    plain[len] = 0x02;
    size_t total = TD_WEBPUSH_HEADER_LEN + len + 1 + 16;
    out = td_malloc(total);
    unsigned char *h = out;
    memcpy(h, salt, TD_WEBPUSH_SALT_LEN);
    h += TD_WEBPUSH_SALT_LEN;
    *h++ = (unsigned char)(TD_WEBPUSH_RS >> 24);
    *h++ = (unsigned char)(TD_WEBPUSH_RS >> 16);
    *h++ = (unsigned char)(TD_WEBPUSH_RS >> 8);
    *h++ = (unsigned char)(TD_WEBPUSH_RS & 0xff);
    *h++ = TD_WEBPUSH_KEY_LEN; /* idlen: the keyid is the sender's public key */
    memcpy(h, as_public, TD_WEBPUSH_KEY_LEN);
    h += TD_WEBPUSH_KEY_LEN;
    if (aes128gcm(cek, nonce, plain, len + 1, h, h + len + 1) != 0) goto crypto_fail;
    *body = out;
    *body_len = total;
    out = NULL;
    rc = 0;
    goto out;

crypto_fail:
    rc = td_errf(errstr, errlen, TD_EIO, "push message encryption failed (OpenSSL)");
out:
    OPENSSL_cleanse(ecdh_secret, sizeof(ecdh_secret));
    OPENSSL_cleanse(prk_key, sizeof(prk_key));
    OPENSSL_cleanse(ikm, sizeof(ikm));
    OPENSSL_cleanse(prk, sizeof(prk));
    OPENSSL_cleanse(cek, sizeof(cek));
    free(out);
    free(plain);
    EVP_PKEY_free(as_key);
    EVP_PKEY_free(ua_key);
    return rc;
}

int td_webpush_encrypt(const char *p256dh, const char *auth, const void *payload, size_t len,
                       unsigned char **body, size_t *body_len, char *errstr, size_t errlen)
{
    *body = NULL;
    *body_len = 0;
    int rc = td_webpush_check_keys(p256dh, auth, errstr, errlen);
    if (rc != 0) return rc;
    size_t n = 0, m = 0;
    unsigned char *pub = b64url_decode_lenient(p256dh, &n);
    unsigned char *secret = b64url_decode_lenient(auth, &m);
    rc = td_webpush_encrypt_raw(pub, secret, NULL, NULL, payload, len, body, body_len, errstr,
                                errlen);
    free(secret);
    free(pub);
    return rc;
}
