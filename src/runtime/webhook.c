/* Signing and verifying webhook requests (SPEC section 2) with
 * HMAC-SHA256 over "timestamp.body". The delivery queue signs at each try
 * (a fresh timestamp, so a retry an hour later is not refused as stale by
 * a receiver that checks the clock); the verify side is here for tests and
 * for anyone writing a receiver in C. */
#include "tidings/webhook.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/webpush.h"

static void hmac_hex(const void *secret, size_t secret_len, const char *timestamp, const void *body,
                     size_t len, char hex[65])
{
    size_t tlen = strlen(timestamp);
    unsigned char *msg = td_malloc(tlen + 1 + len + 1);
    memcpy(msg, timestamp, tlen);
    msg[tlen] = '.';
    if (len) memcpy(msg + tlen + 1, body, len);
    /* EVP_Q_mac refuses a NULL key; an empty secret is still a key. */
    static const unsigned char empty[1];
    unsigned char mac[32];
    size_t mac_len = 0;
    if (!EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, secret_len ? secret : empty, secret_len, msg,
                   tlen + 1 + len, mac, sizeof(mac), &mac_len) ||
        mac_len != sizeof(mac)) {
        fprintf(stderr, "webhook: HMAC-SHA256 failed in OpenSSL\n");
        abort();
    }
    free(msg);
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof(mac); i++) {
        hex[2 * i] = digits[mac[i] >> 4];
        hex[2 * i + 1] = digits[mac[i] & 15];
    }
    hex[64] = '\0';
}

char *td_webhook_sign(const void *secret, size_t secret_len, int64_t timestamp_s, const void *body,
                      size_t len)
{
    char ts[24], hex[65];
    snprintf(ts, sizeof(ts), "%" PRId64, timestamp_s);
    hmac_hex(secret, secret_len, ts, body, len, hex);
    return td_asprintf("sha256=%s", hex);
}

int td_webhook_verify(const void *secret, size_t secret_len, const char *timestamp,
                      const void *body, size_t len, const char *signature, int64_t now_s,
                      int64_t tolerance_s)
{
    if (!timestamp || !signature) return TD_EINVAL;
    size_t tlen = strlen(timestamp);
    if (tlen == 0 || tlen > 18) return TD_EINVAL;
    for (size_t i = 0; i < tlen; i++)
        if (timestamp[i] < '0' || timestamp[i] > '9') return TD_EINVAL;
    if (strlen(signature) != TD_WEBHOOK_SIG_LEN || strncmp(signature, "sha256=", 7) != 0)
        return TD_EINVAL;
    char hex[65];
    hmac_hex(secret, secret_len, timestamp, body, len, hex);
    /* Constant time, so a forger learns nothing from how long a wrong
     * guess took to be refused. Hex digits are compared as sent: we only
     * ever send lowercase. */
    if (CRYPTO_memcmp(hex, signature + 7, 64) != 0) return TD_EINVAL;
    if (tolerance_s > 0) {
        int64_t ts = strtoll(timestamp, NULL, 10);
        if (ts < now_s - tolerance_s || ts > now_s + tolerance_s) return TD_EEXPIRED;
    }
    return 0;
}

int td_webhook_check_url(const char *url, bool allow_http_loopback, char *errstr, size_t errlen)
{
    return td_webpush_check_endpoint(url, allow_http_loopback, errstr, errlen);
}
