/* Notification emails (see tidings/email.h): building the message and
 * arming a libcurl handle for SMTP. Both body parts are base64 so that any
 * UTF-8 text travels intact and no line is ever too long. */
#include "tidings/email.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "tidings/common.h"
#include "tidings/delivery.h"

char *td_email_html_escape(const char *s)
{
    td_strbuf_t b = {0};
    for (; *s; s++) {
        switch (*s) {
        case '&':
            td_strbuf_str(&b, "&amp;");
            break;
        case '<':
            td_strbuf_str(&b, "&lt;");
            break;
        case '>':
            td_strbuf_str(&b, "&gt;");
            break;
        case '"':
            td_strbuf_str(&b, "&quot;");
            break;
        case '\'':
            td_strbuf_str(&b, "&#39;");
            break;
        default:
            td_strbuf_add(&b, s, 1);
        }
    }
    return td_strbuf_take(&b);
}

/* s with every control character (C0, DEL) as a space. Caller frees. */
static char *decontrol(const char *s)
{
    char *out = td_strdup(s ? s : "");
    for (char *p = out; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = ' ';
    return out;
}

static void b64(td_strbuf_t *b, const unsigned char *s, size_t n)
{
    char *out = td_malloc(4 * ((n + 2) / 3) + 1);
    int len = EVP_EncodeBlock((unsigned char *)out, s, (int)n);
    td_strbuf_add(b, out, (size_t)len);
    free(out);
}

char *td_email_header_text(const char *s)
{
    char *clean = decontrol(s);
    bool plain = true;
    for (const char *p = clean; *p; p++)
        if ((unsigned char)*p >= 0x80 || (p[0] == '=' && p[1] == '?')) plain = false;
    if (plain) return clean;
    /* RFC 2047: words of at most 75 characters, so at most 45 bytes of
     * text each (60 of base64), cut on UTF-8 character boundaries, joined
     * by folding whitespace (which a reader drops between words). */
    td_strbuf_t b = {0};
    size_t len = strlen(clean), at = 0;
    while (at < len) {
        size_t n = len - at > 45 ? 45 : len - at;
        while (n > 0 && at + n < len && ((unsigned char)clean[at + n] & 0xC0) == 0x80) n--;
        if (n == 0) n = 1;
        if (at) td_strbuf_str(&b, "\r\n ");
        td_strbuf_str(&b, "=?UTF-8?B?");
        b64(&b, (const unsigned char *)clean + at, n);
        td_strbuf_str(&b, "?=");
        at += n;
    }
    free(clean);
    return td_strbuf_take(&b);
}

static bool addr_ok(const char *a, size_t n)
{
    if (n == 0 || n > TD_EMAIL_ADDR_MAX) return false;
    const char *at = memchr(a, '@', n);
    if (!at || at == a || at == a + n - 1) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (c <= 0x20 || c >= 0x7f || strchr("<>()[],;:\\\"", c)) return false;
    }
    return true;
}

char *td_email_addr(const char *mailbox)
{
    if (!mailbox) return NULL;
    const char *lt = strrchr(mailbox, '<');
    if (lt) {
        const char *gt = strchr(lt, '>');
        if (!gt || gt[1] != '\0') return NULL;
        for (const char *p = mailbox; p < lt; p++)
            if ((unsigned char)*p < 0x20 || *p == 0x7f) return NULL;
        if (!addr_ok(lt + 1, (size_t)(gt - lt - 1))) return NULL;
        return td_strndup(lt + 1, (size_t)(gt - lt - 1));
    }
    if (!addr_ok(mailbox, strlen(mailbox))) return NULL;
    return td_strdup(mailbox);
}

/* The From header of mailbox: its display name (encoded when it must be,
 * quoted when plain) and its checked address. NULL when it is bad. */
static char *mailbox_header(const char *mailbox)
{
    char *addr = td_email_addr(mailbox);
    if (!addr) return NULL;
    const char *lt = strrchr(mailbox, '<');
    if (!lt) return addr;
    char *name = td_strndup(mailbox, (size_t)(lt - mailbox));
    size_t n = strlen(name);
    while (n && name[n - 1] == ' ') name[--n] = '\0';
    char *start = name;
    while (*start == ' ') start++;
    char *out;
    if (!*start) {
        out = td_asprintf("<%s>", addr);
    } else {
        bool ascii = true;
        for (const char *p = start; *p; p++)
            if ((unsigned char)*p >= 0x80 || *p == '"' || *p == '\\') ascii = false;
        char *shown = ascii ? td_asprintf("\"%s\"", start) : td_email_header_text(start);
        out = td_asprintf("%s <%s>", shown, addr);
        free(shown);
    }
    free(name);
    free(addr);
    return out;
}

void td_email_date(int64_t unix_s, char out[40])
{
    static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)unix_s;
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday], tm.tm_mday,
             months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* A body part: base64 in lines of 76. */
static void part(td_strbuf_t *b, const char *boundary, const char *type, const char *body)
{
    td_strbuf_printf(b, "--%s\r\n", boundary);
    td_strbuf_printf(b, "Content-Type: %s; charset=UTF-8\r\n", type);
    td_strbuf_str(b, "Content-Transfer-Encoding: base64\r\n\r\n");
    td_strbuf_t enc = {0};
    b64(&enc, (const unsigned char *)body, strlen(body));
    for (size_t at = 0; at < enc.len; at += 76) {
        td_strbuf_add(b, enc.p + at, enc.len - at > 76 ? 76 : enc.len - at);
        td_strbuf_str(b, "\r\n");
    }
    free(enc.p);
}

/* A header value that is ASCII from us but may hold caller text: no
 * control characters survive. */
static void header(td_strbuf_t *b, const char *name, const char *value)
{
    char *clean = decontrol(value);
    td_strbuf_str(b, name);
    td_strbuf_str(b, ": ");
    td_strbuf_str(b, clean);
    td_strbuf_str(b, "\r\n");
    free(clean);
}

char *td_email_build(const td_email_t *e, size_t *len)
{
    char *from = mailbox_header(e->from ? e->from : TD_EMAIL_DEFAULT_FROM);
    char *to = td_email_addr(e->to);
    if (!from || !to || strchr(e->to, '<')) {
        free(from);
        free(to);
        return NULL;
    }
    unsigned char rnd[12];
    if (RAND_bytes(rnd, sizeof(rnd)) != 1) memset(rnd, 0x5a, sizeof(rnd));
    char boundary[64] = "=_tidings_";
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(boundary + strlen(boundary), 3, "%02x", rnd[i]);

    td_strbuf_t b = {0};
    char date[40];
    td_email_date(e->date_s, date);
    header(&b, "From", from);
    header(&b, "To", to);
    char *subject = td_email_header_text(e->subject);
    td_strbuf_str(&b, "Subject: ");
    td_strbuf_str(&b, subject); /* cleaned and encoded: may fold with CRLF SP only */
    td_strbuf_str(&b, "\r\n");
    free(subject);
    header(&b, "Date", date);
    char *mid = td_asprintf("<%s>", e->message_id ? e->message_id : "unknown@tidings.local");
    header(&b, "Message-ID", mid);
    free(mid);
    header(&b, "MIME-Version", "1.0");
    if (e->unsubscribe_url) {
        char *lu = td_asprintf("<%s>", e->unsubscribe_url);
        header(&b, "List-Unsubscribe", lu);
        free(lu);
        header(&b, "List-Unsubscribe-Post", "List-Unsubscribe=One-Click");
    }
    header(&b, "Auto-Submitted", "auto-generated");
    char *ct = td_asprintf("multipart/alternative; boundary=\"%s\"", boundary);
    header(&b, "Content-Type", ct);
    free(ct);
    td_strbuf_str(&b, "\r\n");

    /* One text, two forms. */
    const char *text = e->text ? e->text : "";
    char *plain = e->link ? td_asprintf("%s\n\n%s\n", text, e->link) : td_asprintf("%s\n", text);
    td_strbuf_t html = {0};
    td_strbuf_str(&html, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head><body>\n");
    char *title = td_email_html_escape(e->subject ? e->subject : "");
    td_strbuf_printf(&html, "<h1 style=\"font-size:18px\">%s</h1>\n", title);
    free(title);
    /* Each line of the text is a paragraph. */
    char *copy = td_strdup(text);
    for (char *line = copy, *nl; line; line = nl) {
        nl = strchr(line, '\n');
        if (nl) *nl++ = '\0';
        if (!*line) continue;
        char *esc = td_email_html_escape(line);
        td_strbuf_printf(&html, "<p>%s</p>\n", esc);
        free(esc);
    }
    free(copy);
    if (e->link) {
        char *esc = td_email_html_escape(e->link);
        char *a = td_asprintf("<p><a href=\"%s\">", esc);
        td_strbuf_str(&html, a);
        td_strbuf_printf(&html, "%s</a></p>\n", esc);
        free(a);
        free(esc);
    }
    if (e->unsubscribe_url) {
        char *esc = td_email_html_escape(e->unsubscribe_url);
        td_strbuf_printf(
            &html,
            "<p style=\"font-size:12px;color:#666\"><a href=\"%s\">Stop these emails</a>"
            "</p>\n",
            esc);
        free(esc);
    }
    td_strbuf_str(&html, "</body></html>\n");
    part(&b, boundary, "text/plain", plain);
    part(&b, boundary, "text/html", html.p);
    td_strbuf_printf(&b, "--%s--\r\n", boundary);
    free(html.p);
    free(plain);
    free(from);
    free(to);
    if (len) *len = b.len;
    return td_strbuf_take(&b);
}

/* ---- the server --------------------------------------------------------- */

static char *url_part(CURLU *u, CURLUPart what)
{
    char *v = NULL;
    if (curl_url_get(u, what, &v, CURLU_URLDECODE) != CURLUE_OK) return NULL;
    char *out = td_strdup(v);
    curl_free(v);
    return out;
}

int td_email_server_load(const td_config_t *cfg, td_email_server_t *srv, char *errstr,
                         size_t errlen)
{
    memset(srv, 0, sizeof(*srv));
    if (!cfg->smtp_url || !*cfg->smtp_url) return 1;
    CURLU *u = curl_url();
    int rc = 0;
    if (curl_url_set(u, CURLUPART_URL, cfg->smtp_url, 0) != CURLUE_OK) {
        rc = td_errf(errstr, errlen, TD_EINVAL, "TIDINGS_SMTP_URL is not a URL");
        goto out;
    }
    char *scheme = url_part(u, CURLUPART_SCHEME);
    bool ok = scheme && (!strcasecmp(scheme, "smtp") || !strcasecmp(scheme, "smtps"));
    free(scheme);
    if (!ok) {
        rc = td_errf(errstr, errlen, TD_EINVAL,
                     "TIDINGS_SMTP_URL must be smtp://host[:port] or smtps://host[:port]");
        goto out;
    }
    srv->user = url_part(u, CURLUPART_USER);
    srv->password = url_part(u, CURLUPART_PASSWORD);
    if (!srv->user && cfg->smtp_user) srv->user = td_strdup(cfg->smtp_user);
    if (!srv->password && cfg->smtp_password) srv->password = td_strdup(cfg->smtp_password);
    curl_url_set(u, CURLUPART_USER, NULL, 0);
    curl_url_set(u, CURLUPART_PASSWORD, NULL, 0);
    char *clean = NULL;
    if (curl_url_get(u, CURLUPART_URL, &clean, 0) != CURLUE_OK) {
        rc = td_errf(errstr, errlen, TD_EINVAL, "TIDINGS_SMTP_URL is not a URL");
        goto out;
    }
    srv->url = td_strdup(clean);
    curl_free(clean);
    /* No path: curl would send it as the EHLO name. */
    char *slash = strchr(strstr(srv->url, "://") + 3, '/');
    if (slash) *slash = '\0';
    const char *from = cfg->smtp_from && *cfg->smtp_from ? cfg->smtp_from : TD_EMAIL_DEFAULT_FROM;
    srv->from_addr = td_email_addr(from);
    char *hdr = srv->from_addr ? mailbox_header(from) : NULL;
    if (!hdr) {
        rc = td_errf(errstr, errlen, TD_EINVAL,
                     "TIDINGS_SMTP_FROM: '%.100s' is not \"Name <address>\" or an address", from);
        goto out;
    }
    free(hdr);
    srv->from = td_strdup(from);
    srv->host = td_strdup(strchr(srv->from_addr, '@') + 1);
out:
    curl_url_cleanup(u);
    if (rc) td_email_server_clear(srv);
    return rc;
}

void td_email_server_clear(td_email_server_t *srv)
{
    free(srv->url);
    free(srv->user);
    if (srv->password) memset(srv->password, 0, strlen(srv->password));
    free(srv->password);
    free(srv->from);
    free(srv->from_addr);
    free(srv->host);
    memset(srv, 0, sizeof(*srv));
}

static size_t on_read(char *buf, size_t size, size_t n, void *arg)
{
    td__email_upload_t *up = arg;
    size_t room = size * n, left = up->len - up->off;
    if (room > left) room = left;
    memcpy(buf, up->data + up->off, room);
    up->off += room;
    return room;
}

void td__email_arm(CURL *c, const td_email_server_t *srv, const char *mail_from, const char *rcpt,
                   td__email_upload_t *up, struct curl_slist **rcpts)
{
    char *from = td_asprintf("<%s>", mail_from);
    char *to = td_asprintf("<%s>", rcpt);
    *rcpts = curl_slist_append(NULL, to);
    curl_easy_setopt(c, CURLOPT_URL, srv->url);
    curl_easy_setopt(c, CURLOPT_MAIL_FROM, from);
    curl_easy_setopt(c, CURLOPT_MAIL_RCPT, *rcpts);
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(c, CURLOPT_READDATA, up);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, (curl_off_t)up->len);
    /* smtp://: STARTTLS when the server offers it; smtps:// is TLS from
     * the start anyway. */
    curl_easy_setopt(c, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
    if (srv->user) curl_easy_setopt(c, CURLOPT_USERNAME, srv->user);
    if (srv->password) curl_easy_setopt(c, CURLOPT_PASSWORD, srv->password);
    free(from); /* curl copies string options */
    free(to);
}

void td_email_unsubscribe_sig(const void *key, size_t key_len, const char *user_id, char out[65])
{
    unsigned char mac[32];
    unsigned int mac_len = 0;
    char *msg = td_asprintf("unsubscribe:%s", user_id);
    if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)msg, strlen(msg), mac,
              &mac_len))
        memset(mac, 0, sizeof(mac));
    free(msg);
    for (size_t i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", mac[i]);
}

bool td_email_unsubscribe_ok(const void *key, size_t key_len, const char *user_id, const char *sig)
{
    if (!user_id || !sig || strlen(sig) != 64) return false;
    char want[65];
    td_email_unsubscribe_sig(key, key_len, user_id, want);
    return CRYPTO_memcmp(want, sig, 64) == 0;
}

int td_email_enqueue(td_db_t *db, const td_email_server_t *srv, const char *owner, const char *rcpt,
                     const char *event_id, const char *message, size_t len, int64_t hold_until_ms,
                     const td_record_t *origin, char *errstr, size_t errlen)
{
    char *addr = td_email_addr(rcpt);
    if (!addr || strchr(rcpt, '<')) {
        free(addr);
        return td_errf(errstr, errlen, TD_EINVAL, "not an email address");
    }
    char *line = td_asprintf("Rcpt: %s", addr);
    const char *headers[] = {line, NULL};
    td_delivery_msg_t msg = {
        .channel = TD_DELIVERY_EMAIL,
        .owner = owner,
        .target_id = owner ? owner : addr,
        .event_id = event_id,
        .url = srv->url,
        .headers = headers,
        .body = message,
        .body_len = len,
        .origin = origin,
        .target = addr,
        .hold_until_ms = hold_until_ms,
    };
    int rc = td_delivery_enqueue(db, &msg, errstr, errlen);
    free(line);
    free(addr);
    return rc;
}
