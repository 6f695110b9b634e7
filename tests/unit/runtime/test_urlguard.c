/* The outbound-URL guard (tidings/urlguard.h): the address classifier on
 * every special-purpose range it knows and on public addresses; inet_aton
 * spellings of IPv4; the registration check on every way curl lets a URL
 * spell a private, loopback or metadata host (refused) and on public ones
 * (accepted), with names resolved by a test resolver; and the connect-time
 * check, which refuses the socket before any connection is made. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tidings/urlguard.h"

static td_addr_class_t classify_text(const char *text)
{
    unsigned char b[16];
    if (inet_pton(AF_INET, text, b) == 1) return td_addr_classify(AF_INET, b);
    if (inet_pton(AF_INET6, text, b) == 1) return td_addr_classify(AF_INET6, b);
    fail_msg("not an address: %s", text);
    return TD_ADDR_PUBLIC;
}

static void test_classify(void **state)
{
    (void)state;
    static const struct {
        const char *addr;
        td_addr_class_t cls;
    } cases[] = {
        {"0.0.0.0", TD_ADDR_UNSPECIFIED},
        {"0.1.2.3", TD_ADDR_UNSPECIFIED},
        {"10.1.2.3", TD_ADDR_PRIVATE},
        {"100.64.0.1", TD_ADDR_SHARED},
        {"100.127.255.255", TD_ADDR_SHARED},
        {"100.128.0.1", TD_ADDR_PUBLIC},
        {"127.0.0.1", TD_ADDR_LOOPBACK},
        {"127.255.255.254", TD_ADDR_LOOPBACK},
        {"169.254.169.254", TD_ADDR_METADATA},
        {"169.254.1.1", TD_ADDR_LINK_LOCAL},
        {"172.16.0.1", TD_ADDR_PRIVATE},
        {"172.31.255.255", TD_ADDR_PRIVATE},
        {"172.32.0.1", TD_ADDR_PUBLIC},
        {"192.0.0.8", TD_ADDR_RESERVED},
        {"192.0.2.1", TD_ADDR_RESERVED},
        {"192.88.99.1", TD_ADDR_RESERVED},
        {"192.168.1.1", TD_ADDR_PRIVATE},
        {"198.18.0.1", TD_ADDR_RESERVED},
        {"198.19.255.255", TD_ADDR_RESERVED},
        {"198.20.0.1", TD_ADDR_PUBLIC},
        {"198.51.100.7", TD_ADDR_RESERVED},
        {"203.0.113.9", TD_ADDR_RESERVED},
        {"224.0.0.1", TD_ADDR_MULTICAST},
        {"239.255.255.250", TD_ADDR_MULTICAST},
        {"240.0.0.1", TD_ADDR_RESERVED},
        {"255.255.255.254", TD_ADDR_RESERVED},
        {"255.255.255.255", TD_ADDR_BROADCAST},
        {"8.8.8.8", TD_ADDR_PUBLIC},
        {"1.1.1.1", TD_ADDR_PUBLIC},
        {"93.184.216.34", TD_ADDR_PUBLIC},
        {"9.255.255.255", TD_ADDR_PUBLIC},
        {"11.0.0.1", TD_ADDR_PUBLIC},
        {"223.255.255.255", TD_ADDR_PUBLIC},
        {"::", TD_ADDR_UNSPECIFIED},
        {"::1", TD_ADDR_LOOPBACK},
        {"::ffff:127.0.0.1", TD_ADDR_LOOPBACK},
        {"::ffff:7f00:1", TD_ADDR_LOOPBACK},
        {"::ffff:10.0.0.1", TD_ADDR_PRIVATE},
        {"::ffff:169.254.169.254", TD_ADDR_METADATA},
        {"::ffff:8.8.8.8", TD_ADDR_PUBLIC},
        {"::127.0.0.1", TD_ADDR_LOOPBACK},
        {"::8.8.8.8", TD_ADDR_RESERVED},
        {"64:ff9b::127.0.0.1", TD_ADDR_LOOPBACK},
        {"64:ff9b::a9fe:a9fe", TD_ADDR_METADATA},
        {"64:ff9b::192.168.0.1", TD_ADDR_PRIVATE},
        {"64:ff9b::8.8.8.8", TD_ADDR_PUBLIC},
        {"64:ff9b:1::1", TD_ADDR_RESERVED},
        {"2002:7f00:1::", TD_ADDR_LOOPBACK},
        {"2002:c0a8:101::1", TD_ADDR_PRIVATE},
        {"2002:a9fe:a9fe::", TD_ADDR_METADATA},
        {"2002:808:808::1", TD_ADDR_PUBLIC},
        {"2001::1", TD_ADDR_RESERVED},
        {"2001:db8::1", TD_ADDR_RESERVED},
        {"2001:10::1", TD_ADDR_RESERVED},
        {"2001:2f::1", TD_ADDR_RESERVED},
        {"2001:30::1", TD_ADDR_PUBLIC},
        {"3fff::1", TD_ADDR_RESERVED},
        {"fd00:ec2::254", TD_ADDR_METADATA},
        {"fd00::1", TD_ADDR_UNIQUE_LOCAL},
        {"fc00::1", TD_ADDR_UNIQUE_LOCAL},
        {"fe80::1", TD_ADDR_LINK_LOCAL},
        {"febf::1", TD_ADDR_LINK_LOCAL},
        {"fec0::1", TD_ADDR_PRIVATE},
        {"ff02::1", TD_ADDR_MULTICAST},
        {"100::1", TD_ADDR_RESERVED},
        {"4000::1", TD_ADDR_RESERVED},
        {"2606:4700:4700::1111", TD_ADDR_PUBLIC},
        {"2a00:1450:4001:80b::200e", TD_ADDR_PUBLIC},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(cases); i++) {
        td_addr_class_t got = classify_text(cases[i].addr);
        if (got != cases[i].cls)
            fail_msg("%s: %s, want %s", cases[i].addr, td_addr_class_name(got),
                     td_addr_class_name(cases[i].cls));
    }
    assert_int_equal(td_addr_classify(AF_UNIX, "x"), TD_ADDR_RESERVED);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    assert_int_equal(td_addr_classify_sa((struct sockaddr *)&sin, sizeof(sin)), TD_ADDR_LOOPBACK);
    assert_int_equal(td_addr_classify_sa((struct sockaddr *)&sin, 4), TD_ADDR_RESERVED);
}

static void test_ipv4_spellings(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        uint32_t want;
    } ok[] = {
        {"127.0.0.1", 0x7f000001},
        {"2130706433", 0x7f000001},
        {"0x7f000001", 0x7f000001},
        {"0X7F000001", 0x7f000001},
        {"0177.0.0.1", 0x7f000001},
        {"0177.0.0.01", 0x7f000001},
        {"127.1", 0x7f000001},
        {"0x7f.1", 0x7f000001},
        {"127.0.1", 0x7f000001},
        {"017700000001", 0x7f000001},
        {"127.0.0.1.", 0x7f000001},
        {"0", 0},
        {"0x0", 0},
        {"4294967295", 0xffffffff},
        {"1.2.3.4", 0x01020304},
        {"0x1.0x2.0x3.0x4", 0x01020304},
        {"00000000000177.0.0.1", 0x7f000001},
        {"10.0xffffff", 0x0affffff},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(ok); i++) {
        uint32_t a = 0;
        if (!td_ipv4_parse(ok[i].text, &a)) fail_msg("%s: not parsed", ok[i].text);
        if (a != ok[i].want) fail_msg("%s: %08x, want %08x", ok[i].text, a, ok[i].want);
    }
    static const char *const bad[] = {
        "",
        "4294967296",
        "1.2.3.4.5",
        "256.1.1.1",
        "1.256.1.1",
        "1.2.65536",
        "08.0.0.1",
        "0x",
        "0xg",
        "1..2",
        ".1.2.3",
        "1.2.3.4..",
        "-1",
        "+1",
        " 1",
        "1 ",
        "1.2.3.4a",
        "example.com",
        "0x100000000",
        "1.0x1000000",
        "99999999999999999999",
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++)
        if (td_ipv4_parse(bad[i], NULL)) fail_msg("'%s' parsed as an address", bad[i]);
}

/* The test resolver: names with fixed answers. */
static int fake_resolver(const char *host, int port, struct sockaddr_storage *out, int max)
{
    static const struct {
        const char *name;
        const char *addrs[3];
    } zone[] = {
        {"public.example", {"8.8.8.8", "2606:4700:4700::1111"}},
        {"private.example", {"10.0.0.7"}},
        {"mixed.example", {"8.8.8.8", "127.0.0.1"}},
        {"metadata.example", {"169.254.169.254"}},
        {"v6local.example", {"fd00::1"}},
        {"mapped.example", {"::ffff:127.0.0.1"}},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(zone); i++) {
        if (strcmp(zone[i].name, host) != 0) continue;
        int n = 0;
        for (size_t k = 0; k < 3 && zone[i].addrs[k] && n < max; k++, n++) {
            memset(&out[n], 0, sizeof(out[n]));
            struct sockaddr_in *sin = (struct sockaddr_in *)&out[n];
            struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out[n];
            if (inet_pton(AF_INET, zone[i].addrs[k], &sin->sin_addr) == 1) {
                sin->sin_family = AF_INET;
                sin->sin_port = htons((uint16_t)port);
            } else {
                assert_int_equal(inet_pton(AF_INET6, zone[i].addrs[k], &sin6->sin6_addr), 1);
                sin6->sin6_family = AF_INET6;
                sin6->sin6_port = htons((uint16_t)port);
            }
        }
        return n;
    }
    return 0; /* NXDOMAIN */
}

static const char *const refused[] = {
    "https://127.0.0.1/hook",
    "https://127.0.0.1:8443/hook",
    "https://2130706433/",
    "https://0x7f000001/",
    "https://0X7F000001/",
    "https://0177.0.0.1/",
    "https://127.1/",
    "https://0x7f.1/",
    "https://017700000001/",
    "https://127.0.0.1./",
    "https://%31%32%37.0.0.1/",
    "https://[::1]/",
    "https://[0:0:0:0:0:0:0:1]/",
    "https://[::]/",
    "https://[fd00::1]/",
    "https://[fc00::5]/",
    "https://[::ffff:7f00:1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:10.1.2.3]/",
    "https://[::127.0.0.1]/",
    "https://[64:ff9b::7f00:1]/",
    "https://[64:ff9b::169.254.169.254]/",
    "https://[2002:7f00:1::1]/",
    "https://[2002:a00:1::]/",
    "https://[fe80::1]/",
    "https://[fe80::1%25eth0]/",
    "https://[fd00:ec2::254]/latest/meta-data/",
    "https://169.254.169.254/latest/meta-data/",
    "https://2852039166/",
    "https://10.0.0.1/",
    "https://10.255.255.255/",
    "https://012.0.0.1/",
    "https://172.16.5.4/",
    "https://192.168.0.1/",
    "https://0xc0a80001/",
    "https://100.64.0.1/",
    "https://169.254.0.1/",
    "https://224.0.0.1/",
    "https://[ff02::1]/",
    "https://255.255.255.255/",
    "https://0.0.0.0/",
    "https://0/",
    "https://240.0.0.1/",
    "https://192.0.2.10/",
    "https://localhost/",
    "https://LOCALHOST./",
    "https://api.localhost/",
    "https://4294967296/",
    "https://1.2.3.4.5/",
    "https://256.1.1.1/",
    "https://0x100000000/",
    "https://private.example/",
    "https://mixed.example/",
    "https://metadata.example/",
    "https://v6local.example/",
    "https://mapped.example/",
    "http://8.8.8.8/",
    "http://public.example/",
    "ftp://8.8.8.8/",
    "file:///etc/passwd",
    "gopher://8.8.8.8/",
    "https://user:pw@8.8.8.8/",
    "https://user@8.8.8.8/",
    "https://",
    "not a url",
    "",
    NULL,
};

static void test_check_url(void **state)
{
    (void)state;
    char err[256];
    td_urlguard_set_resolver(fake_resolver);
    for (size_t i = 0; refused[i]; i++) {
        for (unsigned flags = 0; flags <= TD_URLGUARD_HTTP_LOOPBACK; flags++) {
            err[0] = '\0';
            int rc = td_urlguard_check_url(refused[i], "https", flags, err, sizeof(err));
            if (rc != TD_EINVAL) fail_msg("%s (flags %u) accepted", refused[i], flags);
            assert_true(err[0] != '\0');
        }
    }
    assert_int_equal(td_urlguard_check_url(NULL, "https", 0, err, sizeof(err)), TD_EINVAL);

    static const char *const accepted[] = {
        "https://8.8.8.8/hook",
        "https://93.184.216.34:8443/hook?x=1",
        "https://134744072/",
        "https://[2606:4700:4700::1111]/",
        "https://[::ffff:8.8.8.8]/",
        "https://[64:ff9b::8.8.8.8]/",
        "https://public.example/wpush/v2/x",
        "https://Public.Example:8443/",
        "https://nowhere.example/", /* no answer now: the connect-time check decides */
        "https://fcm.googleapis.com/fcm/send/abc:def",
        NULL,
    };
    for (size_t i = 0; accepted[i]; i++)
        for (unsigned flags = 0; flags <= TD_URLGUARD_HTTP_LOOPBACK; flags++)
            if (td_urlguard_check_url(accepted[i], "https", flags, err, sizeof(err)) != 0)
                fail_msg("%s (flags %u) refused: %s", accepted[i], flags, err);

    /* Test mode: plain http to loopback, and only there. */
    static const char *const http_loopback[] = {
        "http://127.0.0.1:9000/push", "http://localhost/x", "http://2130706433:81/",
        "http://[::1]:8080/x",        "http://127.1/",      NULL};
    for (size_t i = 0; http_loopback[i]; i++) {
        assert_int_equal(td_urlguard_check_url(http_loopback[i], "https", 0, err, sizeof(err)),
                         TD_EINVAL);
        if (td_urlguard_check_url(http_loopback[i], "https", TD_URLGUARD_HTTP_LOOPBACK, err,
                                  sizeof(err)) != 0)
            fail_msg("%s refused in test mode: %s", http_loopback[i], err);
    }
    static const char *const http_not_loopback[] = {
        "http://10.0.0.1/", "http://[fd00::1]/", "http://public.example/", "http://0.0.0.0/", NULL};
    for (size_t i = 0; http_not_loopback[i]; i++)
        assert_int_equal(td_urlguard_check_url(http_not_loopback[i], "https",
                                               TD_URLGUARD_HTTP_LOOPBACK, err, sizeof(err)),
                         TD_EINVAL);

    /* Without lookups a name is judged by its spelling only. */
    assert_int_equal(td_urlguard_check_url("https://private.example/", "https",
                                           TD_URLGUARD_NO_RESOLVE, err, sizeof(err)),
                     0);
    assert_int_equal(td_urlguard_check_url("https://localhost/", "https", TD_URLGUARD_NO_RESOLVE,
                                           err, sizeof(err)),
                     TD_EINVAL);
    /* A resolved address is never named in the message. */
    assert_int_equal(
        td_urlguard_check_url("https://private.example/", "https", 0, err, sizeof(err)), TD_EINVAL);
    assert_null(strstr(err, "10.0.0.7"));
    assert_null(strstr(err, "private address"));
    td_urlguard_set_resolver(NULL);
}

static void test_check_host(void **state)
{
    (void)state;
    char err[256];
    td_urlguard_set_resolver(fake_resolver);
    assert_int_equal(
        td_urlguard_check_host("smtps", "8.8.8.8", 465, "smtp,smtps", 0, err, sizeof(err)), 0);
    assert_int_equal(
        td_urlguard_check_host("smtp", "public.example", 25, "smtp,smtps", 0, err, sizeof(err)), 0);
    assert_int_equal(td_urlguard_check_host("smtp", "::1", 25, "smtp,smtps", 0, err, sizeof(err)),
                     TD_EINVAL);
    assert_int_equal(td_urlguard_check_host("smtp", "[::1]", 25, "smtp,smtps", 0, err, sizeof(err)),
                     TD_EINVAL);
    assert_int_equal(
        td_urlguard_check_host("smtp", "0x7f.1", 25, "smtp,smtps", 0, err, sizeof(err)), TD_EINVAL);
    assert_int_equal(
        td_urlguard_check_host("smtp", "private.example", 25, "smtp,smtps", 0, err, sizeof(err)),
        TD_EINVAL);
    assert_int_equal(
        td_urlguard_check_host("https", "8.8.8.8", 443, "smtp,smtps", 0, err, sizeof(err)),
        TD_EINVAL);
    assert_non_null(strstr(err, "one of smtp,smtps"));
    assert_int_equal(td_urlguard_check_host("smtp", "8.8.8.8", 0, "smtp", 0, err, sizeof(err)),
                     TD_EINVAL);
    assert_int_equal(td_urlguard_check_host("smtp", "8.8.8.8", 65536, "smtp", 0, err, sizeof(err)),
                     TD_EINVAL);
    td_urlguard_set_resolver(NULL);
}

static void test_url_parse(void **state)
{
    (void)state;
    char err[256];
    td_url_t u;
    assert_int_equal(td_url_parse("HTTPS://Push.Example.NET/x", &u, err, sizeof(err)), 0);
    assert_string_equal(u.scheme, "https");
    assert_string_equal(u.host, "push.example.net");
    assert_int_equal(u.port, 443);
    assert_false(u.port_given);
    td_url_clear(&u);
    assert_int_equal(td_url_parse("http://[::1]:8080/", &u, err, sizeof(err)), 0);
    assert_string_equal(u.host, "[::1]");
    assert_int_equal(u.port, 8080);
    assert_true(u.port_given);
    td_url_clear(&u);
    assert_int_equal(td_url_parse("https://2130706433/", &u, err, sizeof(err)), 0);
    assert_string_equal(u.host, "127.0.0.1"); /* libcurl normalises it */
    td_url_clear(&u);
    assert_int_equal(td_url_parse("https://a.example:0/", &u, err, sizeof(err)), TD_EINVAL);
    assert_int_equal(td_url_parse("https://a.example/\x7f", &u, err, sizeof(err)), TD_EINVAL);
    assert_int_equal(td_url_parse("https://fcm.goog%eapis.com/x", &u, err, sizeof(err)), TD_EINVAL);
}

/* A listening socket on 127.0.0.1 that never accepts: a connection to it
 * would complete in the kernel's backlog, which accept() then shows. */
static int listener(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
    *port = ntohs(a.sin_port);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

static bool was_connected(int fd)
{
    int c = accept(fd, NULL, NULL);
    if (c >= 0) {
        close(c);
        return true;
    }
    assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
    return false;
}

/* One transfer of url through the guard; the curl result. */
static CURLcode transfer(const char *url, unsigned flags, td_urlguard_conn_t *g)
{
    CURL *c = curl_easy_init();
    assert_non_null(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 500L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    assert_int_equal(td_urlguard_curl(c, url, "https", flags, g), 0);
    CURLcode cc = curl_easy_perform(c);
    curl_easy_cleanup(c);
    return cc;
}

static void test_connect_time(void **state)
{
    (void)state;
    int port;
    int fd = listener(&port);
    td_urlguard_conn_t g;

    /* https to loopback: the socket is refused before it connects. */
    char *url = td_asprintf("https://127.0.0.1:%d/hook", port);
    CURLcode cc = transfer(url, TD_URLGUARD_HTTP_LOOPBACK, &g);
    assert_int_equal(cc, CURLE_COULDNT_CONNECT);
    assert_true(g.blocked);
    assert_int_equal(g.blocked_class, TD_ADDR_LOOPBACK);
    td_urlguard_conn_clear(&g);
    assert_false(was_connected(fd));
    free(url);

    /* Test mode: http to loopback connects (and then times out). */
    url = td_asprintf("http://127.0.0.1:%d/hook", port);
    cc = transfer(url, TD_URLGUARD_HTTP_LOOPBACK, &g);
    assert_int_not_equal(cc, CURLE_COULDNT_CONNECT);
    assert_false(g.blocked);
    td_urlguard_conn_clear(&g);
    assert_true(was_connected(fd));

    /* Not in test mode, http is not even armed. */
    CURL *c = curl_easy_init();
    assert_int_equal(td_urlguard_curl(c, url, "https", 0, &g), TD_EINVAL);
    assert_int_equal(td_urlguard_curl(c, "ftp://8.8.8.8/", "https", 0, &g), TD_EINVAL);
    curl_easy_cleanup(c);
    free(url);

#ifdef TIDINGS_TEST_HOOKS
    /* DNS rebinding through the test resolver (set in main): the name is
     * public at registration and loopback when connecting. */
    url = td_asprintf("https://rebind.test:%d/hook", port);
    char err[256];
    assert_int_equal(td_urlguard_check_url(url, "https", 0, err, sizeof(err)), 0);
    cc = transfer(url, 0, &g);
    assert_int_equal(cc, CURLE_COULDNT_CONNECT);
    assert_true(g.blocked);
    assert_int_equal(g.blocked_class, TD_ADDR_LOOPBACK);
    td_urlguard_conn_clear(&g);
    assert_false(was_connected(fd));
    /* Names outside .test are never the test resolver's. */
    assert_int_equal(td_urlguard_check_url("https://rebind.example/", "https", 0, err, sizeof(err)),
                     0);
    free(url);
#endif
    close(fd);
}

int main(void)
{
    setenv("TIDINGS_TEST_RESOLVE", "rebind.test=8.8.8.8,127.0.0.1;rebind.example=127.0.0.1", 1);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classify),  cmocka_unit_test(test_ipv4_spellings),
        cmocka_unit_test(test_check_url), cmocka_unit_test(test_check_host),
        cmocka_unit_test(test_url_parse), cmocka_unit_test(test_connect_time),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
