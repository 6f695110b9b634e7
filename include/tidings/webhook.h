/* Webhook signatures (SPEC section 2): each webhook POST carries
 * X-Tidings-Event-Id (the notification id, the same on every retry, for
 * the receiver to deduplicate), X-Tidings-Timestamp (Unix seconds when the
 * try was sent) and X-Tidings-Signature: sha256=<lowercase hex of
 * HMAC-SHA256(secret, timestamp + "." + body)>. The timestamp is inside
 * the signature so a receiver that rejects old timestamps cannot be fed a
 * replayed request. Pure functions, any thread. */
#ifndef TIDINGS_WEBHOOK_H
#define TIDINGS_WEBHOOK_H

#include "tidings/common.h"

#define TD_WEBHOOK_HDR_EVENT_ID  "X-Tidings-Event-Id"
#define TD_WEBHOOK_HDR_TIMESTAMP "X-Tidings-Timestamp"
#define TD_WEBHOOK_HDR_SIGNATURE "X-Tidings-Signature"
/* "sha256=" and 64 hex digits. */
#define TD_WEBHOOK_SIG_LEN (7 + 64)
/* How far a receiver's clock may be from the timestamp, by default. */
#define TD_WEBHOOK_TOLERANCE_S 300

/* "sha256=<hex>" for body sent at timestamp_s with secret (its bytes as
 * they are). Caller frees. */
char *td_webhook_sign(const void *secret, size_t secret_len, int64_t timestamp_s, const void *body,
                      size_t len);

/* Checks a received webhook: timestamp is the X-Tidings-Timestamp header
 * text (decimal digits), signature the X-Tidings-Signature header. 0 when
 * the signature is right (compared in constant time); TD_EINVAL when it is
 * missing, malformed or wrong (a changed body, timestamp or secret);
 * TD_EEXPIRED when it is right but the timestamp is more than tolerance_s
 * away from now_s (tolerance_s <= 0: no time check). */
int td_webhook_verify(const void *secret, size_t secret_len, const char *timestamp,
                      const void *body, size_t len, const char *signature, int64_t now_s,
                      int64_t tolerance_s);

/* A webhook URL we may POST to: the rules of td_webpush_check_endpoint
 * (https to a public address, or http on loopback when
 * allow_http_loopback; tidings/urlguard.h). 0 or TD_EINVAL with errstr. */
int td_webhook_check_url(const char *url, bool allow_http_loopback, char *errstr, size_t errlen);

#endif
