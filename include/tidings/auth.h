/* Access tokens and passwords. Tokens are HS256 JWTs (RFC 7519) signed
 * with the shared TIDINGS_SECRET, claims sub (userId), role, iat, exp;
 * verification is constant-time and checks alg, signature and exp.
 * Passwords are hashed with argon2id (libsodium crypto_pwhash_str). */
#ifndef TIDINGS_AUTH_H
#define TIDINGS_AUTH_H

#include "tidings/common.h"
#include "tidings/uuid.h"

typedef struct td_claims {
    char sub[TD_UUID_LEN + 1]; /* userId */
    char role[16];             /* "customer" | "admin" */
    int64_t iat;               /* seconds since the epoch */
    int64_t exp;
} td_claims_t;

#define TD_TOKEN_TTL_S (24 * 3600)

/* A signed token for claims. Caller frees. */
char *td_jwt_sign(const unsigned char *key, size_t key_len, const td_claims_t *claims);
/* Verifies token at time now_s: 0 and *out filled; TD_EINVAL for a
 * malformed or tampered token or wrong key (reason in errstr);
 * TD_EEXPIRED when exp <= now_s. */
int td_jwt_verify(const unsigned char *key, size_t key_len, const char *token, int64_t now_s,
                  td_claims_t *out, char *errstr, size_t errlen);

/* argon2id hash of password into out (TD_PASSWORD_HASH_MAX bytes,
 * NUL-terminated encoded string). 0 or TD_EIO. Slow on purpose: call it
 * without holding the database lock. */
#define TD_PASSWORD_HASH_MAX 128
int td_password_hash(const char *password, char *out);
/* True when password matches hash. Constant-time in the password. */
bool td_password_verify(const char *hash, const char *password);

/* Base64url without padding (libsodium). Caller frees. decode returns
 * NULL on bad input. */
char *td_b64url_encode(const void *data, size_t len);
unsigned char *td_b64url_decode(const char *s, size_t *len);

#endif
