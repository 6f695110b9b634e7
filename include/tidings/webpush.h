/* The sending side of Web Push (RFC 8030): the application server's VAPID
 * key pair and its signed Authorization header (RFC 8292), checks of a
 * browser's PushSubscription (endpoint, p256dh, auth), and the encryption
 * of a message for one subscription (RFC 8291 over the aes128gcm content
 * coding of RFC 8188: one record, ECDH P-256 with a fresh key per
 * message). Everything is OpenSSL 3 EVP; keys travel as base64url without
 * padding, as browsers give and take them. Sending the request is the
 * delivery queue's job (tidings/delivery.h). */
#ifndef TIDINGS_WEBPUSH_H
#define TIDINGS_WEBPUSH_H

#include "tidings/common.h"

#define TD_WEBPUSH_KEY_LEN    65 /* uncompressed P-256 point: 0x04 || X || Y */
#define TD_WEBPUSH_AUTH_LEN   16 /* the subscription's auth secret */
#define TD_WEBPUSH_SALT_LEN   16
#define TD_WEBPUSH_PRIV_LEN   32   /* a P-256 private scalar */
#define TD_WEBPUSH_RS         4096 /* the record size we write */
#define TD_WEBPUSH_HEADER_LEN (TD_WEBPUSH_SALT_LEN + 4 + 1 + TD_WEBPUSH_KEY_LEN) /* 86 */
/* RFC 8291 section 4: 4096 - 86 (header) - 16 (tag) - 1 (delimiter). */
#define TD_WEBPUSH_MAX_PAYLOAD 3993
/* Longest endpoint or webhook URL accepted. */
#define TD_WEBPUSH_URL_MAX 2048
/* The exp of our VAPID tokens, from now (RFC 8292 allows up to 24 h). */
#define TD_VAPID_TTL_S (12 * 3600)

/* ---- VAPID key pair ------------------------------------------------------ */

/* A P-256 key pair. Immutable after creation, so one may be shared by any
 * number of threads (signing uses a context per call). */
typedef struct td_vapid td_vapid_t;

/* A new random key pair. NULL with errstr if OpenSSL fails. */
td_vapid_t *td_vapid_generate(char *errstr, size_t errlen);
/* The key pair whose private scalar is private_b64 (base64url of 32 bytes,
 * as td_vapid_private_b64 writes it; the public key is derived). NULL with
 * errstr for a malformed or out-of-range scalar. */
td_vapid_t *td_vapid_from_private(const char *private_b64, char *errstr, size_t errlen);
/* The private scalar as base64url (43 characters), for the service's
 * database. Caller frees (it is a secret: don't log it). */
char *td_vapid_private_b64(const td_vapid_t *vapid);
/* The public key, base64url of the 65-byte uncompressed point: what
 * GET /webpush/vapid-public-key returns and a browser passes as
 * applicationServerKey. Borrowed from vapid. */
const char *td_vapid_public_b64(const td_vapid_t *vapid);
void td_vapid_free(td_vapid_t *vapid);

/* The origin of an http(s) URL as RFC 6454 serialises it:
 * "https://push.example.net" or "http://127.0.0.1:8080" (scheme and host
 * lowercase, the port only when it is not the scheme's default). Caller
 * frees *origin. TD_EINVAL with errstr for what is not an absolute http(s)
 * URL. */
int td_webpush_origin(const char *url, char **origin, char *errstr, size_t errlen);

/* The VAPID token for endpoint (RFC 8292 section 2): an ES256 JWT with
 * header {"typ":"JWT","alg":"ES256"} and claims aud = the endpoint's
 * origin, exp = exp_s, sub = subject (a mailto: or https: URI). NULL with
 * errstr for a bad endpoint. Caller frees. Any thread. */
char *td_vapid_jwt(const td_vapid_t *vapid, const char *endpoint, const char *subject,
                   int64_t exp_s, char *errstr, size_t errlen);
/* The Authorization header value for a push to endpoint at time now_s:
 * "vapid t=<jwt with exp now_s + TD_VAPID_TTL_S>, k=<public key>".
 * NULL with errstr. Caller frees. Any thread. */
char *td_vapid_header(const td_vapid_t *vapid, const char *endpoint, const char *subject,
                      int64_t now_s, char *errstr, size_t errlen);

/* ---- subscriptions -------------------------------------------------------- */

/* An endpoint (or webhook URL) we may POST to, as the outbound-URL guard
 * judges it (tidings/urlguard.h): an absolute https URL of at most
 * TD_WEBPUSH_URL_MAX bytes, no user:password, whose host is a public
 * address or a name that resolves only to public addresses; or, when
 * allow_http_loopback (TIDINGS_ALLOW_HTTP_ENDPOINTS, tests only), an http
 * URL whose host is localhost, 127.0.0.0/8 or [::1]. 0 or TD_EINVAL with a
 * message for people in errstr. May wait up to 1.5 s for DNS. */
int td_webpush_check_endpoint(const char *endpoint, bool allow_http_loopback, char *errstr,
                              size_t errlen);
/* The keys of a PushSubscription: p256dh is base64url of a 65-byte
 * uncompressed point that lies on P-256, auth base64url of exactly 16
 * bytes (trailing '=' padding is tolerated in both). 0 or TD_EINVAL with
 * errstr. */
int td_webpush_check_keys(const char *p256dh, const char *auth, char *errstr, size_t errlen);

/* ---- message encryption (RFC 8291) ---------------------------------------- */

/* Encrypts payload (at most TD_WEBPUSH_MAX_PAYLOAD bytes) for the
 * subscription keys p256dh and auth (base64url) with a fresh ephemeral key
 * and salt. *body gets the aes128gcm body to POST (header salt || rs ||
 * idlen || keyid, then the one record); caller frees it. 0 or TD_EINVAL
 * (bad keys, payload too long) with errstr, TD_EIO if OpenSSL fails. Any
 * thread; about a tenth of a millisecond. */
int td_webpush_encrypt(const char *p256dh, const char *auth, const void *payload, size_t len,
                       unsigned char **body, size_t *body_len, char *errstr, size_t errlen);
/* The same with raw keys and, for reproducible output (the RFC 8291
 * Appendix A vector), the sender's ephemeral private scalar as_private and
 * the salt given; either may be NULL for a fresh random one. */
int td_webpush_encrypt_raw(const unsigned char ua_public[TD_WEBPUSH_KEY_LEN],
                           const unsigned char auth[TD_WEBPUSH_AUTH_LEN],
                           const unsigned char *as_private, const unsigned char *salt,
                           const void *payload, size_t len, unsigned char **body, size_t *body_len,
                           char *errstr, size_t errlen);

#endif
