/* The outbound-URL guard (see tidings/urlguard.h): URL syntax through
 * libcurl's URL API, the registration check (literal or resolved) and the
 * connect-time check in libcurl's open-socket callback; the address
 * classifier and the numeric-host reader are in urlguard_addr.c.
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

    struct timespec ts = td_mono_deadline(RESOLVE_TIMEOUT_MS);
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
