/* Notification emails (tidings/email.h): the message is multipart/
 * alternative with a text and an HTML part of one text (HTML-escaped in
 * the HTML part), its headers are the ones RFC 5322, RFC 2047 and RFC 8058
 * ask for, CR/LF in any caller text never adds a header, bad addresses are
 * refused, and the unsubscribe signature binds the user id. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/email.h"

/* The header block of msg (up to the first empty line). Caller frees. */
static char *headers_of(const char *msg)
{
    const char *end = strstr(msg, "\r\n\r\n");
    assert_non_null(end);
    size_t n = (size_t)(end - msg) + 2;
    char *h = malloc(n + 1);
    memcpy(h, msg, n);
    h[n] = '\0';
    return h;
}

/* How many header fields (lines that do not start with white space). */
static int header_count(const char *h)
{
    int n = 0;
    for (const char *line = h; *line;) {
        if (*line != ' ' && *line != '\t') n++;
        const char *nl = strstr(line, "\r\n");
        assert_non_null(nl);
        line = nl + 2;
    }
    return n;
}

/* Decodes the base64 lines of one part that starts after marker. */
static char *part_text(const char *msg, const char *content_type)
{
    const char *p = strstr(msg, content_type);
    assert_non_null(p);
    p = strstr(p, "\r\n\r\n");
    assert_non_null(p);
    p += 4;
    const char *end = strstr(p, "\r\n--");
    assert_non_null(end);
    char *b64 = calloc(1, (size_t)(end - p) + 1);
    size_t n = 0;
    for (const char *q = p; q < end; q++)
        if (*q != '\r' && *q != '\n') b64[n++] = *q;
    unsigned char *out = calloc(1, n + 1);
    int len = EVP_DecodeBlock(out, (unsigned char *)b64, (int)n);
    assert_true(len >= 0);
    while (n > 0 && b64[n - 1] == '=') { /* EVP_DecodeBlock counts padding */
        len--;
        n--;
    }
    out[len] = '\0';
    free(b64);
    return (char *)out;
}

static td_email_t sample(void)
{
    return (td_email_t){
        .from = "tidings <no-reply@tidings.local>",
        .to = "ada@example.com",
        .subject = "Order confirmed",
        .text = "Your order <b>42</b> & more is confirmed.",
        .message_id = "6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b.email@tidings.local",
        .unsubscribe_url = "https://shop.example/unsubscribe?u=1&s=2",
        .date_s = 1796242260, /* 2026-12-02T20:11:00Z */
    };
}

static void test_structure(void **state)
{
    (void)state;
    td_email_t e = sample();
    size_t len = 0;
    char *msg = td_email_build(&e, &len);
    assert_non_null(msg);
    assert_int_equal(strlen(msg), len);
    char *h = headers_of(msg);
    assert_non_null(strstr(h, "From: \"tidings\" <no-reply@tidings.local>\r\n"));
    assert_non_null(strstr(h, "To: ada@example.com\r\n"));
    assert_non_null(strstr(h, "Subject: Order confirmed\r\n"));
    assert_non_null(strstr(h, "Date: Wed, 02 Dec 2026 20:11:00 +0000\r\n"));
    assert_non_null(
        strstr(h, "Message-ID: <6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b.email@tidings.local>\r\n"));
    assert_non_null(strstr(h, "MIME-Version: 1.0\r\n"));
    assert_non_null(strstr(h, "List-Unsubscribe: <https://shop.example/unsubscribe?u=1&s=2>\r\n"));
    assert_non_null(strstr(h, "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"));
    const char *ct = strstr(h, "Content-Type: multipart/alternative; boundary=\"");
    assert_non_null(ct);
    char boundary[80];
    assert_int_equal(
        sscanf(ct, "Content-Type: multipart/alternative; boundary=\"%79[^\"]\"", boundary), 1);
    char *open = NULL, *close = NULL;
    assert_true(asprintf(&open, "\r\n--%s\r\n", boundary) > 0);
    assert_true(asprintf(&close, "\r\n--%s--\r\n", boundary) > 0);
    const char *first = strstr(msg, open);
    assert_non_null(first);
    assert_non_null(strstr(first + 1, open)); /* two parts */
    assert_non_null(strstr(msg, close));
    assert_non_null(strstr(msg, "Content-Type: text/plain; charset=UTF-8"));
    assert_non_null(strstr(msg, "Content-Type: text/html; charset=UTF-8"));

    char *text = part_text(msg, "text/plain");
    assert_string_equal(text, "Your order <b>42</b> & more is confirmed.\n");
    char *html = part_text(msg, "text/html");
    assert_non_null(
        strstr(html, "<p>Your order &lt;b&gt;42&lt;/b&gt; &amp; more is confirmed.</p>"));
    assert_null(strstr(html, "<b>42"));
    /* Every line within 998 characters, CRLF only. */
    for (const char *p = msg; *p; p++)
        if (*p == '\n') assert_true(p > msg && p[-1] == '\r');
    free(text);
    free(html);
    free(open);
    free(close);
    free(h);
    free(msg);
}

static void test_unique_boundary_and_no_unsubscribe(void **state)
{
    (void)state;
    td_email_t e = sample();
    e.unsubscribe_url = NULL;
    char *a = td_email_build(&e, NULL), *b = td_email_build(&e, NULL);
    assert_null(strstr(a, "List-Unsubscribe"));
    char *ha = headers_of(a), *hb = headers_of(b);
    assert_string_not_equal(ha, hb); /* the boundary is random */
    free(ha);
    free(hb);
    free(a);
    free(b);
}

static void test_crlf_injection(void **state)
{
    (void)state;
    td_email_t e = sample();
    e.subject = "Welcome, Eve\r\nBcc: victim@example.com\r\n\r\nhello";
    e.from = "Eve\r\nBcc: x@example.com <no-reply@tidings.local>";
    char *msg = td_email_build(&e, NULL);
    /* A display name with a line break is refused outright. */
    assert_null(msg);

    e.from = "tidings <no-reply@tidings.local>";
    msg = td_email_build(&e, NULL);
    assert_non_null(msg);
    char *h = headers_of(msg);
    assert_null(strstr(h, "\r\nBcc:"));
    assert_null(strstr(h, "\nBcc:"));
    assert_non_null(strstr(h, "Subject: Welcome, Eve  Bcc: victim@example.com    hello\r\n"));
    /* From To Subject Date Message-ID MIME-Version List-Unsubscribe
     * List-Unsubscribe-Post Auto-Submitted Content-Type */
    assert_int_equal(header_count(h), 10);
    free(h);
    free(msg);

    /* A recipient with a line break or a second address is refused. */
    e.to = "ada@example.com\r\nBcc: x@example.com";
    assert_null(td_email_build(&e, NULL));
    e.to = "ada@example.com, eve@example.com";
    assert_null(td_email_build(&e, NULL));
    e.to = "Ada <ada@example.com>";
    assert_null(td_email_build(&e, NULL));
}

static void test_header_encoding(void **state)
{
    (void)state;
    char *s = td_email_header_text("Price drop: Kaffeemühle");
    /* "Price drop: Kaffeemühle" in base64 */
    assert_string_equal(s, "=?UTF-8?B?UHJpY2UgZHJvcDogS2FmZmVlbcO8aGxl?=");
    free(s);
    s = td_email_header_text("plain ascii");
    assert_string_equal(s, "plain ascii");
    free(s);
    s = td_email_header_text("tab\there\x7f");
    assert_string_equal(s, "tab here ");
    free(s);
    /* Something that looks like an encoded word is encoded itself. */
    s = td_email_header_text("=?UTF-8?B?eA==?=");
    assert_true(strncmp(s, "=?UTF-8?B?", 10) == 0);
    assert_string_not_equal(s, "=?UTF-8?B?eA==?=");
    free(s);
    /* Long text: several words of at most 75 characters, folded, never
     * cutting a UTF-8 character. */
    char long_title[400] = "";
    for (int i = 0; i < 40; i++) strcat(long_title, "Grüße ");
    s = td_email_header_text(long_title);
    int words = 0;
    for (char *w = strstr(s, "=?UTF-8?B?"); w; w = strstr(w + 1, "=?UTF-8?B?")) {
        char *end = strstr(w, "?=");
        assert_non_null(end);
        assert_true(end + 2 - w <= 75);
        words++;
    }
    assert_true(words > 3);
    assert_non_null(strstr(s, "?=\r\n =?UTF-8?B?"));
    free(s);

    /* A non-ASCII subject in a message. */
    td_email_t e = sample();
    e.subject = "Bestätigt";
    char *msg = td_email_build(&e, NULL);
    assert_non_null(strstr(msg, "Subject: =?UTF-8?B?QmVzdMOkdGlndA==?=\r\n"));
    free(msg);
    /* A non-ASCII display name is encoded, the address left alone. */
    e.from = "Bäckerei <shop@example.com>";
    msg = td_email_build(&e, NULL);
    assert_non_null(strstr(msg, "From: =?UTF-8?B?QsOkY2tlcmVp?= <shop@example.com>\r\n"));
    free(msg);
}

static void test_addresses(void **state)
{
    (void)state;
    char *a = td_email_addr("tidings <no-reply@tidings.local>");
    assert_string_equal(a, "no-reply@tidings.local");
    free(a);
    a = td_email_addr("ada@example.com");
    assert_string_equal(a, "ada@example.com");
    free(a);
    assert_null(td_email_addr(""));
    assert_null(td_email_addr("no-at-sign"));
    assert_null(td_email_addr("a b@example.com"));
    assert_null(td_email_addr("<a@example.com> trailing"));
    assert_null(td_email_addr("a@example.com\r\n"));
    assert_null(td_email_addr("x <a@b\r\n.com>"));
}

static void test_unsubscribe_sig(void **state)
{
    (void)state;
    static const char key[] = "0123456789abcdef0123456789abcdef";
    char sig[65];
    td_email_unsubscribe_sig(key, sizeof(key) - 1, "user-1", sig);
    assert_int_equal(strlen(sig), 64);
    assert_true(td_email_unsubscribe_ok(key, sizeof(key) - 1, "user-1", sig));
    assert_false(td_email_unsubscribe_ok(key, sizeof(key) - 1, "user-2", sig));
    assert_false(td_email_unsubscribe_ok("another key of 32 bytes at least", 32, "user-1", sig));
    sig[0] = sig[0] == 'a' ? 'b' : 'a';
    assert_false(td_email_unsubscribe_ok(key, sizeof(key) - 1, "user-1", sig));
    assert_false(td_email_unsubscribe_ok(key, sizeof(key) - 1, "user-1", ""));
    assert_false(td_email_unsubscribe_ok(key, sizeof(key) - 1, "user-1", NULL));
}

static void test_server_load(void **state)
{
    (void)state;
    td_config_t cfg;
    td_config_defaults(&cfg);
    td_email_server_t srv;
    char err[256];
    assert_int_equal(td_email_server_load(&cfg, &srv, err, sizeof(err)), 1); /* off */
    cfg.smtp_url = strdup("smtp://bob:s%40cret@mail.example:2525");
    assert_int_equal(td_email_server_load(&cfg, &srv, err, sizeof(err)), 0);
    assert_string_equal(srv.url, "smtp://mail.example:2525");
    assert_string_equal(srv.user, "bob");
    assert_string_equal(srv.password, "s@cret");
    assert_string_equal(srv.from_addr, "no-reply@tidings.local");
    assert_string_equal(srv.host, "tidings.local");
    td_email_server_clear(&srv);
    free(cfg.smtp_url);
    cfg.smtp_url = strdup("smtps://mail.example");
    cfg.smtp_user = strdup("u");
    cfg.smtp_password = strdup("p");
    cfg.smtp_from = strdup("Shop <shop@example.com>");
    assert_int_equal(td_email_server_load(&cfg, &srv, err, sizeof(err)), 0);
    assert_string_equal(srv.user, "u");
    assert_string_equal(srv.password, "p");
    assert_string_equal(srv.host, "example.com");
    td_email_server_clear(&srv);
    free(cfg.smtp_from);
    cfg.smtp_from = strdup("Shop <bad\r\n@example.com>");
    assert_int_equal(td_email_server_load(&cfg, &srv, err, sizeof(err)), TD_EINVAL);
    free(cfg.smtp_url);
    cfg.smtp_url = strdup("http://mail.example");
    assert_int_equal(td_email_server_load(&cfg, &srv, err, sizeof(err)), TD_EINVAL);
    td_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structure),
        cmocka_unit_test(test_unique_boundary_and_no_unsubscribe),
        cmocka_unit_test(test_crlf_injection),
        cmocka_unit_test(test_header_encoding),
        cmocka_unit_test(test_addresses),
        cmocka_unit_test(test_unsubscribe_sig),
        cmocka_unit_test(test_server_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
