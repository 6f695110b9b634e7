/* The outbound-URL guard (see tidings/urlguard.h): URL syntax through
 * libcurl's URL API, the address classifier, the registration check
 * (literal or resolved) and the connect-time check in libcurl's
 * open-socket callback.
 *
 * Why both checks: the registration check gives the user a clear 400 for
 * an endpoint that can never be called, but names resolve again at every
 * connect and may answer differently then (DNS rebinding, or a record
 * changed after registration). Only the connect-time check, on the
 * address the socket is about to connect to, is a guarantee; the
 * registration check is the courtesy.
 *
 * Numeric hosts are judged with inet_aton's rules (every spelling glibc
 * or libcurl reads as a number), and a host whose last label is a number
 * but which is no valid address at all is refused rather than left to a
 * resolver, as browsers do (WHATWG URL "ends in a number"). */
#include "tidings/urlguard.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "tidings/log.h"

#define RESOLVE_MAX 16
/* How long a registration waits for its name lookup; a name that has not
 * answered by then passes, and the connect-time check judges it. */
#define RESOLVE_TIMEOUT_MS 1500

/* ---- classifying addresses --------------------------------------------- */

const char *td_addr_class_name(td_addr_class_t c)
{
    static const char *const names[] = {
        [TD_ADDR_PUBLIC] = "public",           [TD_ADDR_LOOPBACK] = "loopback",
        [TD_ADDR_PRIVATE] = "private",         [TD_ADDR_SHARED] = "shared (carrier-grade NAT)",
        [TD_ADDR_LINK_LOCAL] = "link-local",   [TD_ADDR_UNIQUE_LOCAL] = "unique-local",
        [TD_ADDR_MULTICAST] = "multicast",     [TD_ADDR_BROADCAST] = "broadcast",
        [TD_ADDR_UNSPECIFIED] = "unspecified", [TD_ADDR_RESERVED] = "reserved",
        [TD_ADDR_METADATA] = "cloud metadata",
    };
    if ((unsigned)c >= TD_ARRAY_SIZE(names)) return "reserved";
    return names[c];
}

/* a (host order) in prefix/len (prefix given as four octets). */
static bool in4(uint32_t a, unsigned o1, unsigned o2, unsigned o3, unsigned o4, unsigned len)
{
    uint32_t prefix = (uint32_t)o1 << 24 | (uint32_t)o2 << 16 | (uint32_t)o3 << 8 | (uint32_t)o4;
    uint32_t mask = len == 0 ? 0 : 0xffffffffu << (32 - len);
    return (a & mask) == (prefix & mask);
}

/* IANA IPv4 Special-Purpose Address Registry, the entries that are not
 * globally reachable, plus multicast and 240/4. */
static td_addr_class_t classify4(uint32_t a)
{
    if (in4(a, 169, 254, 169, 254, 32)) return TD_ADDR_METADATA;
    if (in4(a, 255, 255, 255, 255, 32)) return TD_ADDR_BROADCAST;
    if (in4(a, 0, 0, 0, 0, 8)) return TD_ADDR_UNSPECIFIED;
    if (in4(a, 127, 0, 0, 0, 8)) return TD_ADDR_LOOPBACK;
    if (in4(a, 10, 0, 0, 0, 8) || in4(a, 172, 16, 0, 0, 12) || in4(a, 192, 168, 0, 0, 16))
        return TD_ADDR_PRIVATE;
    if (in4(a, 100, 64, 0, 0, 10)) return TD_ADDR_SHARED;
    if (in4(a, 169, 254, 0, 0, 16)) return TD_ADDR_LINK_LOCAL;
    if (in4(a, 224, 0, 0, 0, 4)) return TD_ADDR_MULTICAST;
    if (in4(a, 192, 0, 0, 0, 24) ||    /* IETF protocol assignments */
        in4(a, 192, 0, 2, 0, 24) ||    /* TEST-NET-1 */
        in4(a, 192, 88, 99, 0, 24) ||  /* 6to4 relay anycast (deprecated) */
        in4(a, 198, 18, 0, 0, 15) ||   /* benchmarking */
        in4(a, 198, 51, 100, 0, 24) || /* TEST-NET-2 */
        in4(a, 203, 0, 113, 0, 24) ||  /* TEST-NET-3 */
        in4(a, 240, 0, 0, 0, 4))       /* reserved */
        return TD_ADDR_RESERVED;
    return TD_ADDR_PUBLIC;
}

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* b (16 bytes) starts with the len-bit prefix p (16 bytes). */
static bool in6(const unsigned char *b, const unsigned char *p, unsigned len)
{
    unsigned full = len / 8, rest = len % 8;
    if (memcmp(b, p, full) != 0) return false;
    if (rest == 0) return true;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (b[full] & mask) == (p[full] & mask);
}

static td_addr_class_t classify6(const unsigned char *b)
{
    static const unsigned char zero[16];
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b};
    static const unsigned char nat64_local[16] = {0, 0x64, 0xff, 0x9b, 0, 1};
    static const unsigned char sixtofour[16] = {0x20, 0x02};
    static const unsigned char teredo[16] = {0x20, 0x01};
    static const unsigned char doc[16] = {0x20, 0x01, 0x0d, 0xb8};
    static const unsigned char doc2[16] = {0x3f, 0xff};
    static const unsigned char orchid[16] = {0x20, 0x01, 0x00, 0x10};
    static const unsigned char orchid2[16] = {0x20, 0x01, 0x00, 0x20};
    static const unsigned char bench[16] = {0x20, 0x01, 0x00, 0x02};
    static const unsigned char discard[16] = {0x01, 0x00};
    static const unsigned char metadata[16] = {0xfd, 0x00, 0x0e, 0xc2, [14] = 0x02, [15] = 0x54};
    static const unsigned char global[16] = {0x20};

    if (memcmp(b, zero, 16) == 0) return TD_ADDR_UNSPECIFIED;
    if (memcmp(b, zero, 15) == 0 && b[15] == 1) return TD_ADDR_LOOPBACK;
    /* The forms that carry an IPv4 address and reach it. */
    if (memcmp(b, mapped, 12) == 0) return classify4(be32(b + 12));
    if (memcmp(b, nat64, 12) == 0) return classify4(be32(b + 12));
    if (in6(b, sixtofour, 16)) return classify4(be32(b + 2));
    if (memcmp(b, zero, 12) == 0) {
        /* IPv4-compatible (deprecated, RFC 4291): never a valid
         * destination, whatever it embeds. */
        td_addr_class_t c = classify4(be32(b + 12));
        return c == TD_ADDR_PUBLIC ? TD_ADDR_RESERVED : c;
    }
    if (in6(b, nat64_local, 48)) return TD_ADDR_RESERVED; /* RFC 8215: maps to anything */
    if (in6(b, teredo, 32) || in6(b, doc, 32) || in6(b, doc2, 20) || in6(b, orchid, 28) ||
        in6(b, orchid2, 28) || in6(b, bench, 48) || in6(b, discard, 64))
        return TD_ADDR_RESERVED;
    if (memcmp(b, metadata, 16) == 0) return TD_ADDR_METADATA;
    if ((b[0] & 0xfe) == 0xfc) return TD_ADDR_UNIQUE_LOCAL;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return TD_ADDR_LINK_LOCAL;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return TD_ADDR_PRIVATE; /* site-local */
    if (b[0] == 0xff) return TD_ADDR_MULTICAST;
    /* Everything else outside global unicast is unassigned. */
    if (!in6(b, global, 3)) return TD_ADDR_RESERVED;
    return TD_ADDR_PUBLIC;
}

td_addr_class_t td_addr_classify(int family, const void *addr)
{
    if (family == AF_INET) return classify4(be32(addr));
    if (family == AF_INET6) return classify6(addr);
    return TD_ADDR_RESERVED;
}

td_addr_class_t td_addr_classify_sa(const struct sockaddr *sa, socklen_t len)
{
    if (sa->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in))
        return td_addr_classify(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr);
    if (sa->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6))
        return td_addr_classify(AF_INET6,
                                &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr);
    return TD_ADDR_RESERVED;
}

/* ---- numeric hosts ----------------------------------------------------- */

static int digit_value(char c, int base)
{
    int v;
    if (c >= '0' && c <= '9')
        v = c - '0';
    else if (c >= 'a' && c <= 'f')
        v = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
        v = c - 'A' + 10;
    else
        return -1;
    return v < base ? v : -1;
}

bool td_ipv4_parse(const char *s, uint32_t *out)
{
    uint64_t parts[4];
    int n = 0;
    const char *p = s;
    if (!s || !*s) return false;
    for (;;) {
        /* inet_aton: each part starts with a digit; 0x is hex, a leading
         * 0 octal, else decimal; strtoul's reading, so "0x" with no hex
         * digit after it is no number. */
        if (*p < '0' || *p > '9' || n == 4) return false;
        int base = 10;
        if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
            base = 16;
            p += 2;
        } else if (p[0] == '0') {
            base = 8;
        }
        const char *start = p;
        uint64_t v = 0;
        int d;
        while ((d = digit_value(*p, base)) >= 0) {
            v = v * (uint64_t)base + (uint64_t)d;
            if (v > 0xffffffffu) return false;
            p++;
        }
        if (p == start) return false;
        parts[n++] = v;
        if (*p == '\0') break;
        if (*p != '.') return false;
        p++;
        if (*p == '\0') break; /* one trailing dot: "127.0.0.1." */
    }
    uint64_t a;
    switch (n) {
    case 1:
        a = parts[0];
        break;
    case 2:
        if (parts[0] > 0xff || parts[1] > 0xffffff) return false;
        a = parts[0] << 24 | parts[1];
        break;
    case 3:
        if (parts[0] > 0xff || parts[1] > 0xff || parts[2] > 0xffff) return false;
        a = parts[0] << 24 | parts[1] << 16 | parts[2];
        break;
    default:
        for (int i = 0; i < 4; i++)
            if (parts[i] > 0xff) return false;
        a = parts[0] << 24 | parts[1] << 16 | parts[2] << 8 | parts[3];
        break;
    }
    if (out) *out = (uint32_t)a;
    return true;
}

/* The last label of host (one trailing dot ignored) is a number: decimal
 * digits, or 0x and hex digits. Such a host is an IPv4 address or
 * nothing. */
static bool ends_in_number(const char *host)
{
    size_t len = strlen(host);
    if (len && host[len - 1] == '.') len--;
    size_t start = len;
    while (start > 0 && host[start - 1] != '.') start--;
    const char *l = host + start;
    size_t n = len - start;
    if (n == 0) return false;
    size_t i = 0;
    if (n >= 2 && l[0] == '0' && (l[1] == 'x' || l[1] == 'X')) {
        for (i = 2; i < n; i++)
            if (!isxdigit((unsigned char)l[i])) return false;
        return true;
    }
    for (i = 0; i < n; i++)
        if (!isdigit((unsigned char)l[i])) return false;
    return true;
}

/* ---- URLs --------------------------------------------------------------- */

void td_url_clear(td_url_t *u)
{
    free(u->scheme);
    free(u->host);
    memset(u, 0, sizeof(*u));
}

static char *take(char *curl_str)
{
    char *s = td_strdup(curl_str);
    curl_free(curl_str);
    return s;
}

int td_url_parse(const char *url, td_url_t *out, char *errstr, size_t errlen)
{
    memset(out, 0, sizeof(*out));
    if (!url || !*url) return td_errf(errstr, errlen, TD_EINVAL, "URL is required");
    if (strlen(url) > TD_URLGUARD_URL_MAX)
        return td_errf(errstr, errlen, TD_EINVAL, "URL must be at most %d bytes",
                       TD_URLGUARD_URL_MAX);
    for (const char *p = url; *p; p++)
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f)
            return td_errf(errstr, errlen, TD_EINVAL, "URL must not contain spaces or controls");

    CURLU *cu = curl_url();
    if (!cu) td_oom();
    int rc = 0;
    char *scheme = NULL, *host = NULL, *port = NULL, *part = NULL;
    if (curl_url_set(cu, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(cu, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(cu, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        rc = td_errf(errstr, errlen, TD_EINVAL, "URL is not a valid absolute URL");
        goto out;
    }
    static const CURLUPart userinfo[] = {CURLUPART_USER, CURLUPART_PASSWORD, CURLUPART_OPTIONS};
    for (size_t i = 0; i < TD_ARRAY_SIZE(userinfo); i++) {
        if (curl_url_get(cu, userinfo[i], &part, 0) == CURLUE_OK) {
            rc = td_errf(errstr, errlen, TD_EINVAL, "URL must not contain a user or password");
            goto out;
        }
        curl_free(part);
        part = NULL;
    }
    if (curl_url_get(cu, CURLUPART_ZONEID, &part, 0) == CURLUE_OK) {
        rc = td_errf(errstr, errlen, TD_EINVAL, "URL must not have an IPv6 zone id");
        goto out;
    }
    curl_free(part);
    part = NULL;
    if (!*host) {
        rc = td_errf(errstr, errlen, TD_EINVAL, "URL has no host");
        goto out;
    }
    /* libcurl percent-decodes the host ("a%EAb" -> "a\xeab"). A host name
     * is ASCII (IDNs come as punycode), and the origin goes into JSON
     * (the VAPID token), which takes no invalid UTF-8. */
    for (char *p = host; *p; p++) {
        *p = (char)tolower((unsigned char)*p);
        if (!isalnum((unsigned char)*p) && !strchr("-._:[]", *p)) {
            rc = td_errf(errstr, errlen, TD_EINVAL, "URL host has characters not allowed");
            goto out;
        }
    }
    for (char *p = scheme; *p; p++) *p = (char)tolower((unsigned char)*p);
    out->port_given = curl_url_get(cu, CURLUPART_PORT, &port, 0) == CURLUE_OK;
    curl_free(port);
    port = NULL;
    if (curl_url_get(cu, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
        (out->port = atoi(port)) <= 0 || out->port > 65535) {
        rc = td_errf(errstr, errlen, TD_EINVAL, "URL has no valid port");
        goto out;
    }
    out->scheme = take(scheme);
    out->host = take(host);
    scheme = host = NULL;
out:
    curl_free(port);
    curl_free(part);
    curl_free(host);
    curl_free(scheme);
    curl_url_cleanup(cu);
    return rc;
}

/* ---- the test resolver (test builds only) ------------------------------- */

typedef struct fake_name {
    char name[256];
    char addrs[8][INET6_ADDRSTRLEN];
    int cnt;
    int next;
} fake_name_t;

static pthread_mutex_t fake_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t fake_once = PTHREAD_ONCE_INIT;
static fake_name_t fake_names[8];
static int fake_cnt;

static __attribute__((unused)) bool is_test_name(const char *name)
{
    size_t n = strlen(name);
    if (n && name[n - 1] == '.') n--;
    return n > 5 && strncasecmp(name + n - 5, ".test", 5) == 0;
}

/* TIDINGS_TEST_RESOLVE="name=addr[,addr...][;name=...]", names under
 * .test only; anything malformed is ignored with a warning. */
static void fake_load(void)
{
#ifdef TIDINGS_TEST_HOOKS
    const char *env = getenv("TIDINGS_TEST_RESOLVE");
    if (!env || !*env) return;
    char *copy = td_strdup(env), *save = NULL;
    for (char *ent = strtok_r(copy, ";", &save); ent && fake_cnt < (int)TD_ARRAY_SIZE(fake_names);
         ent = strtok_r(NULL, ";", &save)) {
        char *eq = strchr(ent, '=');
        if (!eq || eq == ent || (size_t)(eq - ent) >= sizeof(fake_names[0].name)) continue;
        *eq = '\0';
        if (!is_test_name(ent)) {
            td_warn("TIDINGS_TEST_RESOLVE: %s is not under .test, ignored", ent);
            continue;
        }
        fake_name_t *f = &fake_names[fake_cnt];
        memset(f, 0, sizeof(*f));
        snprintf(f->name, sizeof(f->name), "%s", ent);
        char *s2 = NULL;
        for (char *a = strtok_r(eq + 1, ",", &s2); a && f->cnt < (int)TD_ARRAY_SIZE(f->addrs);
             a = strtok_r(NULL, ",", &s2)) {
            unsigned char buf[16];
            if (inet_pton(AF_INET, a, buf) == 1 || inet_pton(AF_INET6, a, buf) == 1)
                snprintf(f->addrs[f->cnt++], sizeof(f->addrs[0]), "%s", a);
        }
        if (f->cnt > 0) {
            td_warn("TIDINGS_TEST_RESOLVE: test resolver answers for %s", f->name);
            fake_cnt++;
        }
    }
    free(copy);
#endif
}

/* The next test answer for name into addr; false when the test resolver
 * does not know name (always, outside test builds). */
static bool fake_next(const char *name, char addr[INET6_ADDRSTRLEN])
{
    pthread_once(&fake_once, fake_load);
    bool found = false;
    pthread_mutex_lock(&fake_mu);
    for (int i = 0; i < fake_cnt && !found; i++) {
        fake_name_t *f = &fake_names[i];
        if (strcasecmp(f->name, name) != 0) continue;
        snprintf(addr, INET6_ADDRSTRLEN, "%s", f->addrs[f->next]);
        if (f->next + 1 < f->cnt) f->next++;
        found = true;
    }
    pthread_mutex_unlock(&fake_mu);
    return found;
}

/* ---- resolving at registration ------------------------------------------ */

static td_urlguard_resolver_fn resolver_override;

void td_urlguard_set_resolver(td_urlguard_resolver_fn fn)
{
    resolver_override = fn;
}

static bool text_to_sa(const char *text, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, text, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        return true;
    }
    if (inet_pton(AF_INET6, text, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        return true;
    }
    return false;
}

/* One getaddrinfo on a thread of its own, so that the caller can stop
 * waiting (a registration must not hold an HTTP thread for as long as a
 * slow or hostile name server likes). Whoever drops the last reference,
 * the waiter or the lookup thread, frees it. */
typedef struct lookup {
    atomic_int refs;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    bool done;
    int rc;
    struct addrinfo *res;
    char host[256];
    char service[8];
} lookup_t;

static void lookup_unref(lookup_t *l)
{
    if (atomic_fetch_sub(&l->refs, 1) != 1) return;
    if (l->res) freeaddrinfo(l->res);
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

static void *lookup_main(void *arg)
{
    lookup_t *l = arg;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(l->host, l->service, &hints, &res);
    pthread_mutex_lock(&l->mu);
    l->rc = rc;
    l->res = rc == 0 ? res : NULL;
    l->done = true;
    pthread_cond_signal(&l->cv);
    pthread_mutex_unlock(&l->mu);
    lookup_unref(l);
    return NULL;
}

static int resolve(const char *host, int port, struct sockaddr_storage *out, int max)
{
    if (resolver_override) return resolver_override(host, port, out, max);
    char fake[INET6_ADDRSTRLEN];
    if (fake_next(host, fake)) return text_to_sa(fake, port, out) ? 1 : 0;
    if (strlen(host) >= sizeof(((lookup_t *)0)->host)) return 0;

    lookup_t *l = td_calloc(1, sizeof(*l));
    atomic_init(&l->refs, 2);
    pthread_mutex_init(&l->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&l->cv, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(l->host, sizeof(l->host), "%s", host);
    snprintf(l->service, sizeof(l->service), "%d", port);
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&t, &attr, lookup_main, l) != 0) {
        pthread_attr_destroy(&attr);
        atomic_store(&l->refs, 1);
        lookup_unref(l);
        return 0;
    }
    pthread_attr_destroy(&attr);

    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += RESOLVE_TIMEOUT_MS / 1000;
    ts.tv_nsec += (long)(RESOLVE_TIMEOUT_MS % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    int n = 0;
    pthread_mutex_lock(&l->mu);
    while (!l->done)
        if (pthread_cond_timedwait(&l->cv, &l->mu, &ts) != 0) break;
    if (!l->done)
        td_debug("urlguard: looking up %s took longer than %d ms: judged at connect time", host,
                 RESOLVE_TIMEOUT_MS);
    for (struct addrinfo *ai = l->done ? l->res : NULL; ai && n < max; ai = ai->ai_next) {
        if (ai->ai_addrlen > sizeof(out[n])) continue;
        memset(&out[n], 0, sizeof(out[n]));
        memcpy(&out[n], ai->ai_addr, ai->ai_addrlen);
        n++;
    }
    pthread_mutex_unlock(&l->mu);
    lookup_unref(l);
    return n;
}

/* ---- the registration check --------------------------------------------- */

static bool scheme_listed(const char *scheme, const char *schemes)
{
    size_t n = strlen(scheme);
    for (const char *p = schemes; p && *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == n && strncasecmp(p, scheme, n) == 0) return true;
        if (!comma) break;
        p = comma + 1;
    }
    return false;
}

/* The policy for scheme: 0 (public hosts), 1 (loopback only) or -1
 * (refused, with errstr). */
static int scheme_policy(const char *scheme, const char *schemes, unsigned flags, char *errstr,
                         size_t errlen)
{
    if (!schemes) schemes = "https";
    if (scheme_listed(scheme, schemes)) return flags & TD_URLGUARD_LOOPBACK ? 1 : 0;
    bool http_ok = flags & TD_URLGUARD_HTTP_LOOPBACK;
    if (http_ok && strcasecmp(scheme, "http") == 0) return 1;
    td_errf(errstr, errlen, TD_EINVAL, "URL must be %s%s", strchr(schemes, ',') ? "one of " : "",
            schemes);
    if (http_ok && errstr && errlen) {
        size_t used = strlen(errstr);
        snprintf(errstr + used, errlen - used, " (or http on loopback)");
    }
    return -1;
}

static bool is_localhost(const char *name)
{
    size_t n = strlen(name);
    if (n && name[n - 1] == '.') n--;
    static const char lh[] = "localhost";
    size_t l = sizeof(lh) - 1;
    if (n == l) return strncasecmp(name, lh, l) == 0;
    return n > l && name[n - l - 1] == '.' && strncasecmp(name + n - l, lh, l) == 0;
}

/* What a literal or numeric host is: 0 and *cls when it is an address,
 * 1 when it is a name, TD_EINVAL (errstr) when it is neither. */
static int literal_class(const char *host, td_addr_class_t *cls, char *errstr, size_t errlen)
{
    size_t n = strlen(host);
    unsigned char b6[16];
    if (host[0] == '[' || strchr(host, ':')) {
        char *inner = host[0] == '[' && n >= 2 && host[n - 1] == ']' ? td_strndup(host + 1, n - 2)
                                                                     : td_strdup(host);
        int ok = inet_pton(AF_INET6, inner, b6);
        free(inner);
        if (ok != 1) return td_errf(errstr, errlen, TD_EINVAL, "URL host is not a valid address");
        *cls = td_addr_classify(AF_INET6, b6);
        return 0;
    }
    uint32_t a;
    if (td_ipv4_parse(host, &a)) {
        unsigned char b4[4] = {(unsigned char)(a >> 24), (unsigned char)(a >> 16),
                               (unsigned char)(a >> 8), (unsigned char)a};
        *cls = td_addr_classify(AF_INET, b4);
        return 0;
    }
    if (ends_in_number(host))
        return td_errf(errstr, errlen, TD_EINVAL, "URL host is not a valid IPv4 address");
    return 1;
}

int td_urlguard_check_host(const char *scheme, const char *host, int port, const char *schemes,
                           unsigned flags, char *errstr, size_t errlen)
{
    if (!scheme || !host || !*host) return td_errf(errstr, errlen, TD_EINVAL, "URL has no host");
    if (port <= 0 || port > 65535)
        return td_errf(errstr, errlen, TD_EINVAL, "URL has no valid port");
    int policy = scheme_policy(scheme, schemes, flags, errstr, errlen);
    if (policy < 0) return TD_EINVAL;
    bool loopback_only = policy == 1;

    td_addr_class_t cls = TD_ADDR_RESERVED;
    int kind = literal_class(host, &cls, errstr, errlen);
    if (kind < 0) return kind;
    if (kind == 0) {
        if (loopback_only && cls != TD_ADDR_LOOPBACK)
            return td_errf(errstr, errlen, TD_EINVAL,
                           "http is allowed only to loopback (localhost, 127.0.0.0/8, [::1])");
        if (!loopback_only && cls != TD_ADDR_PUBLIC)
            return td_errf(errstr, errlen, TD_EINVAL,
                           "URL host %.64s is a %s address: only public addresses may be called",
                           host, td_addr_class_name(cls));
        return 0;
    }

    /* A name. */
    if (is_localhost(host))
        return loopback_only ? 0
                             : td_errf(errstr, errlen, TD_EINVAL,
                                       "URL host %.64s is loopback: only public addresses may be "
                                       "called",
                                       host);
    if (loopback_only)
        return td_errf(errstr, errlen, TD_EINVAL,
                       "http is allowed only to loopback (localhost, 127.0.0.0/8, [::1])");
    if (flags & TD_URLGUARD_NO_RESOLVE) return 0;
    struct sockaddr_storage addrs[RESOLVE_MAX];
    int cnt = resolve(host, port, addrs, RESOLVE_MAX);
    for (int i = 0; i < cnt; i++) {
        td_addr_class_t c =
            td_addr_classify_sa((const struct sockaddr *)&addrs[i], sizeof(addrs[i]));
        if (c != TD_ADDR_PUBLIC) {
            /* Which address, or even which class, would tell a caller
             * about the network we are in: the message says neither. */
            td_debug("urlguard: %s resolves to a %s address: refused", host, td_addr_class_name(c));
            return td_errf(errstr, errlen, TD_EINVAL,
                           "URL host %.64s must resolve to public addresses only", host);
        }
    }
    return 0;
}

int td_urlguard_check_url(const char *url, const char *schemes, unsigned flags, char *errstr,
                          size_t errlen)
{
    td_url_t u;
    int rc = td_url_parse(url, &u, errstr, errlen);
    if (rc != 0) return rc;
    rc = td_urlguard_check_host(u.scheme, u.host, u.port, schemes, flags, errstr, errlen);
    td_url_clear(&u);
    return rc;
}

/* ---- the connect-time check --------------------------------------------- */

static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    td_urlguard_conn_t *g = clientp;
    (void)purpose;
    td_addr_class_t c = td_addr_classify_sa(&a->addr, a->addrlen);
    bool ok = g->loopback_only ? c == TD_ADDR_LOOPBACK : c == TD_ADDR_PUBLIC;
    if (!ok) {
        g->blocked = true;
        g->blocked_class = c;
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

int td_urlguard_curl(CURL *c, const char *url, const char *schemes, unsigned flags,
                     td_urlguard_conn_t *g)
{
    memset(g, 0, sizeof(*g));
    td_url_t u;
    int rc = td_url_parse(url, &u, NULL, 0);
    if (rc != 0) return rc;
    int policy = scheme_policy(u.scheme, schemes, flags, NULL, 0);
    if (policy < 0) {
        td_url_clear(&u);
        return TD_EINVAL;
    }
    g->loopback_only = policy == 1;

    /* A test build's resolver answers for its .test names here too, so a
     * test can make a name rebind between registration and connect. */
    char fake[INET6_ADDRSTRLEN];
    if (u.host[0] != '[' && fake_next(u.host, fake)) {
        char *entry = td_asprintf("%s:%d:%s%s%s", u.host, u.port, strchr(fake, ':') ? "[" : "",
                                  fake, strchr(fake, ':') ? "]" : "");
        g->resolve = curl_slist_append(NULL, entry);
        free(entry);
        curl_easy_setopt(c, CURLOPT_RESOLVE, g->resolve);
    }
    curl_easy_setopt(c, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(c, CURLOPT_OPENSOCKETDATA, g);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, u.scheme);
    curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, u.scheme);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 0L);
    /* Endpoints come from users: no proxy from the environment, whose
     * address the guard could not see. */
    curl_easy_setopt(c, CURLOPT_PROXY, "");
    td_url_clear(&u);
    return 0;
}

void td_urlguard_conn_clear(td_urlguard_conn_t *g)
{
    curl_slist_free_all(g->resolve);
    memset(g, 0, sizeof(*g));
}
