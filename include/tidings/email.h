/* Notification emails: the message (RFC 5322 + MIME, multipart/alternative
 * with a text/plain and a text/html part made from one text) and the SMTP
 * settings of SPEC section 1 (TIDINGS_SMTP_URL, TIDINGS_SMTP_USER,
 * TIDINGS_SMTP_PASSWORD, TIDINGS_SMTP_FROM). The delivery queue
 * (tidings/delivery.h, channel TD_DELIVERY_EMAIL) sends what
 * td_email_build makes through libcurl's SMTP (td__email_arm).
 *
 * Header injection is impossible by construction: every header value is
 * cleaned here (CR, LF and other control characters become spaces), the
 * Subject and display names are RFC 2047 encoded-words when they are not
 * plain printable ASCII, and addresses with anything outside a
 * conservative set are refused. Pure functions, any thread. */
#ifndef TIDINGS_EMAIL_H
#define TIDINGS_EMAIL_H

#include <curl/curl.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/record.h"

#define TD_EMAIL_DEFAULT_FROM "tidings <no-reply@tidings.local>"
/* Longest address accepted (RFC 5321 section 4.5.3.1.3). */
#define TD_EMAIL_ADDR_MAX 254

/* One message. Strings are UTF-8 and stay the caller's. */
typedef struct td_email {
    const char *from;            /* "Name <addr>" or "addr" */
    const char *to;              /* an address */
    const char *subject;         /* any text; cleaned and encoded here */
    const char *text;            /* the body as plain text (lines end in \n) */
    const char *link;            /* a URL shown in both parts, or NULL */
    const char *message_id;      /* without the angle brackets */
    const char *unsubscribe_url; /* List-Unsubscribe one-click (RFC 8058), or NULL */
    int64_t date_s;              /* Unix seconds, for Date */
} td_email_t;

/* The whole message, CRLF line ends, ready for SMTP DATA. NULL when from
 * or to is not an acceptable address. Caller frees. */
char *td_email_build(const td_email_t *e, size_t *len);

/* s with & < > " ' as HTML entities. Caller frees. */
char *td_email_html_escape(const char *s);
/* s as a header value: control characters (CR, LF, ...) become spaces;
 * printable ASCII as is, else one or more RFC 2047 "=?UTF-8?B?...?="
 * words. Caller frees. */
char *td_email_header_text(const char *s);
/* The address of "Name <addr>" or "addr", checked: NULL when it is
 * empty, too long, or holds a control character, a space, or one of
 * <>()[],;:\" outside the angle brackets. Caller frees. */
char *td_email_addr(const char *mailbox);
/* Date in RFC 5322 form ("Wed, 02 Dec 2026 20:11:00 +0000") into out. */
void td_email_date(int64_t unix_s, char out[40]);

/* The SMTP server of cfg, taken apart: url without user:password, the
 * credentials from the URL or TIDINGS_SMTP_USER/PASSWORD (NULL when
 * none), and the sender. td_email_server_clear frees. */
typedef struct td_email_server {
    char *url;       /* smtp://host:port or smtps://host:port */
    char *user;      /* or NULL */
    char *password;  /* or NULL */
    char *from;      /* the From header */
    char *from_addr; /* its address, for MAIL FROM */
    char *host;      /* the domain of from_addr, for Message-IDs */
} td_email_server_t;

/* 0 (server filled), 1 when cfg has no TIDINGS_SMTP_URL (email is off),
 * or TD_EINVAL with errstr (a bad URL, scheme or sender). */
int td_email_server_load(const td_config_t *cfg, td_email_server_t *srv, char *errstr,
                         size_t errlen);
void td_email_server_clear(td_email_server_t *srv);

/* Queues message (td_email_build) for rcpt through the delivery queue of db
 * (channel TD_DELIVERY_EMAIL, tidings/delivery.h): in the caller's
 * transaction, owner's queue, held until hold_until_ms (0: due now), the
 * status naming rcpt as its target. Same returns as td_delivery_enqueue. */
int td_email_enqueue(td_db_t *db, const td_email_server_t *srv, const char *owner, const char *rcpt,
                     const char *event_id, const char *message, size_t len, int64_t hold_until_ms,
                     const td_record_t *origin, char *errstr, size_t errlen);

/* The signature of a one-click unsubscribe link for user_id: lowercase
 * hex of HMAC-SHA256(key, "unsubscribe:" + user_id), into out (65 bytes). */
void td_email_unsubscribe_sig(const void *key, size_t key_len, const char *user_id, char out[65]);
/* True when sig is that signature (compared in constant time). */
bool td_email_unsubscribe_ok(const void *key, size_t key_len, const char *user_id, const char *sig);

/* ---- internal: the delivery queue's SMTP try ------------------------- */

/* The reader of a message body for CURLOPT_READFUNCTION. */
typedef struct td__email_upload {
    const unsigned char *data;
    size_t len, off;
} td__email_upload_t;

/* Arms easy handle c (after curl_easy_reset and the URL guard) to send
 * the message up to srv from mail_from to rcpt. *rcpts gets the list the
 * caller frees after the transfer (curl_slist_free_all). */
void td__email_arm(CURL *c, const td_email_server_t *srv, const char *mail_from, const char *rcpt,
                   td__email_upload_t *up, struct curl_slist **rcpts);

#endif
