/* Fuzzes the outbound-URL guard (tidings/urlguard.h). The input is a flag
 * byte (bit 0: TIDINGS_ALLOW_HTTP_ENDPOINTS, bit 1: no name lookups, bit
 * 2: the test resolver answers with an IPv6 address), 16 bytes that the
 * test resolver answers every name with (the first 4 for IPv4), then the
 * URL. Invariants:
 *  - the check never crashes and answers 0, or TD_EINVAL with a message;
 *  - a URL it accepts parses, is https (or http under the test flag), and
 *    its host, as libcurl itself reads it and as inet_aton reads it, is a
 *    public address (http: a loopback one), never a private literal;
 *  - a name it accepts (with lookups) resolved to a public address;
 *  - an accepted URL can be armed for connecting (td_urlguard_curl);
 *  - td_ipv4_parse agrees with glibc's inet_aton on the URL text, and
 *    IPv4-mapped and NAT64 forms classify like the address they embed.
 * No network: names are answered by the resolver below. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <strings.h>

#include "fuzz.h"
#include "tidings/urlguard.h"

static unsigned char answer[16];
static bool answer_v6;

static int fuzz_resolver(const char *host, int port, struct sockaddr_storage *out, int max)
{
    (void)host;
    if (max < 1) return 0;
    memset(out, 0, sizeof(*out));
    if (answer_v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        memcpy(&sin6->sin6_addr, answer, 16);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        memcpy(&sin->sin_addr, answer, 4);
    }
    return 1;
}

static CURL *easy;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    curl_global_init(CURL_GLOBAL_DEFAULT);
    easy = curl_easy_init();
    if (!easy) abort();
    td_urlguard_set_resolver(fuzz_resolver);
    return 0;
}

/* The class of what a host is as an address, or -1 when it is a name:
 * libcurl's reading (the URL API) and glibc's (inet_aton, inet_pton). */
static int host_class(const char *host)
{
    size_t n = strlen(host);
    unsigned char b[16];
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        char *inner = fuzz_str((const uint8_t *)host + 1, n - 2);
        int ok = inet_pton(AF_INET6, inner, b);
        free(inner);
        FUZZ_CHECK(ok == 1); /* brackets hold an IPv6 address, nothing else */
        return (int)td_addr_classify(AF_INET6, b);
    }
    struct in_addr a;
    if (inet_aton(host, &a)) return (int)td_addr_classify(AF_INET, &a);
    return -1;
}

/* localhost, *.localhost, with or without the trailing dot. */
static bool is_localhost(const char *host)
{
    size_t n = strlen(host);
    if (n && host[n - 1] == '.') n--;
    return n >= 9 && strncasecmp(host + n - 9, "localhost", 9) == 0 &&
           (n == 9 || host[n - 10] == '.');
}

static void check_accepted(const char *url, unsigned flags)
{
    td_url_t u;
    char err[256];
    FUZZ_CHECK(td_url_parse(url, &u, err, sizeof(err)) == 0);
    bool http = !strcmp(u.scheme, "http");
    FUZZ_CHECK(!strcmp(u.scheme, "https") || (http && (flags & TD_URLGUARD_HTTP_LOOPBACK)));
    FUZZ_CHECK(strchr(u.host, '@') == NULL);

    int cls = host_class(u.host);
    /* The host as libcurl hands it to the resolver, and with one dot cut
     * (a resolver may take "127.0.0.1." as the number). */
    char *cut = strdup(u.host);
    size_t n = strlen(cut);
    if (n && cut[n - 1] == '.') cut[n - 1] = '\0';
    int cut_cls = host_class(cut);
    free(cut);
    if (http) {
        FUZZ_CHECK(cls == -1 || cls == TD_ADDR_LOOPBACK);
        FUZZ_CHECK(cut_cls == -1 || cut_cls == TD_ADDR_LOOPBACK);
        if (cls == -1 && cut_cls == -1) FUZZ_CHECK(is_localhost(u.host));
    } else {
        FUZZ_CHECK(cls == -1 || cls == TD_ADDR_PUBLIC);
        FUZZ_CHECK(cut_cls == -1 || cut_cls == TD_ADDR_PUBLIC);
        /* A name (not a number even without its dot) was looked up. */
        if (cls == -1 && cut_cls == -1 && !(flags & TD_URLGUARD_NO_RESOLVE))
            FUZZ_CHECK(td_addr_classify(answer_v6 ? AF_INET6 : AF_INET, answer) == TD_ADDR_PUBLIC);
    }
    td_url_clear(&u);

    td_urlguard_conn_t g;
    curl_easy_reset(easy);
    FUZZ_CHECK(td_urlguard_curl(easy, url, "https", flags, &g) == 0);
    FUZZ_CHECK(!g.blocked);
    td_urlguard_conn_clear(&g);
}

/* td_ipv4_parse reads what inet_aton reads (which also takes trailing
 * whitespace and whatever follows it; td_ipv4_parse takes one trailing
 * dot instead). */
static void check_ipv4_parse(const char *s)
{
    uint32_t mine = 0;
    bool ok = td_ipv4_parse(s, &mine);
    struct in_addr a;
    bool glibc = inet_aton(s, &a) != 0;
    bool has_space = strpbrk(s, " \t\n\v\f\r") != NULL;
    size_t n = strlen(s);
    if (glibc && !has_space) FUZZ_CHECK(ok && mine == ntohl(a.s_addr));
    if (ok && !(n && s[n - 1] == '.')) FUZZ_CHECK(glibc && mine == ntohl(a.s_addr));
}

static void check_embedded(const unsigned char *b)
{
    unsigned char v6[16] = {0};
    td_addr_class_t c4 = td_addr_classify(AF_INET, b);
    v6[10] = v6[11] = 0xff;
    memcpy(v6 + 12, b, 4);
    FUZZ_CHECK(td_addr_classify(AF_INET6, v6) == c4);
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b};
    memcpy(v6, nat64, 12);
    FUZZ_CHECK(td_addr_classify(AF_INET6, v6) == c4);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    uint8_t f = fuzz_u8(&in);
    unsigned flags = (f & 1 ? TD_URLGUARD_HTTP_LOOPBACK : 0) | (f & 2 ? TD_URLGUARD_NO_RESOLVE : 0);
    answer_v6 = f & 4;
    size_t got;
    const uint8_t *ans = fuzz_bytes(&in, sizeof(answer), &got);
    memset(answer, 0, sizeof(answer));
    memcpy(answer, ans, got);
    char *url = fuzz_str(in.p, in.left);

    char err[256] = "";
    int rc = td_urlguard_check_url(url, "https", flags, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || (rc == TD_EINVAL && err[0]));
    if (rc == 0) check_accepted(url, flags);
    check_ipv4_parse(url);
    check_embedded(answer);

    free(url);
    return 0;
}
