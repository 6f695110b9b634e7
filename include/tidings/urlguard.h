/* The outbound-URL guard (SPEC section 5): the one place that decides
 * whether tidings may open a connection to an address a user gave it (a
 * Web Push endpoint, a webhook URL, later an SMTP host), so the service is
 * never a proxy into the network it runs in.
 *
 *  - At registration: the URL is parsed with libcurl's URL API (the parser
 *    that will send the request, so what is checked is what gets used);
 *    only the allowed schemes pass (https for push and webhooks); the host
 *    is refused when it is, or spells, or resolves to an address that is
 *    not public: loopback, private (RFC 1918), shared (RFC 6598),
 *    link-local, unique-local, multicast, broadcast, unspecified, reserved
 *    (240/4, documentation, benchmarking, unassigned IPv6, Teredo),
 *    IPv4-mapped/compatible, NAT64 (64:ff9b::/96) and 6to4 (2002::/16)
 *    forms of those, and the cloud metadata addresses. Numeric hosts are
 *    read with the rules of inet_aton (decimal 2130706433, hex 0x7f000001,
 *    octal 0177.0.0.1, short 127.1) whatever curl would make of them.
 *  - At connect time: td_urlguard_curl arms an easy handle so that every
 *    socket libcurl opens is checked against the address it is about to
 *    connect to (CURLOPT_OPENSOCKETFUNCTION), so a name that resolved to
 *    a public address at registration and to 127.0.0.1 now (DNS
 *    rebinding) gets nowhere; redirects are off and only the URL's own
 *    scheme is allowed.
 *
 * TIDINGS_ALLOW_HTTP_ENDPOINTS=1 (tests only) is TD_URLGUARD_HTTP_LOOPBACK:
 * plain http to a loopback host, and nothing more (https still needs a
 * public address).
 *
 * Test builds (cmake -DTIDINGS_TEST_HOOKS=ON, the default except for
 * Release builds) honour TIDINGS_TEST_RESOLVE="name=addr[,addr...][;...]"
 * for names under the reserved .test domain (RFC 6761) only: each lookup
 * of name, at registration or at connect time, takes the next address of
 * its list, the last one repeating, which is how a rebinding DNS server
 * behaves. The guard itself is the same in every build.
 *
 * Pure functions, any thread (the test resolver has its own lock). */
#ifndef TIDINGS_URLGUARD_H
#define TIDINGS_URLGUARD_H

#include <curl/curl.h>
#include <sys/socket.h>

#include "tidings/common.h"

/* Longest URL accepted (push endpoints are a few hundred bytes). */
#define TD_URLGUARD_URL_MAX 2048

/* What kind of address an IP address is. Only TD_ADDR_PUBLIC may be
 * connected to (and TD_ADDR_LOOPBACK for http under
 * TD_URLGUARD_HTTP_LOOPBACK). */
typedef enum td_addr_class {
    TD_ADDR_PUBLIC = 0,
    TD_ADDR_LOOPBACK,     /* 127/8, ::1 */
    TD_ADDR_PRIVATE,      /* 10/8, 172.16/12, 192.168/16, fec0::/10 */
    TD_ADDR_SHARED,       /* 100.64/10 (RFC 6598, carrier-grade NAT) */
    TD_ADDR_LINK_LOCAL,   /* 169.254/16, fe80::/10 */
    TD_ADDR_UNIQUE_LOCAL, /* fc00::/7 */
    TD_ADDR_MULTICAST,    /* 224/4, ff00::/8 */
    TD_ADDR_BROADCAST,    /* 255.255.255.255 */
    TD_ADDR_UNSPECIFIED,  /* 0/8, :: */
    TD_ADDR_RESERVED,     /* 240/4, IETF, documentation, benchmarking, unassigned IPv6 */
    TD_ADDR_METADATA,     /* 169.254.169.254, fd00:ec2::254 */
} td_addr_class_t;

/* "public", "loopback", "private", ... (static). */
const char *td_addr_class_name(td_addr_class_t c);

/* The class of an IPv4 address (addr: 4 bytes, network order) or IPv6
 * address (16 bytes) of family AF_INET / AF_INET6; an IPv6 address that
 * embeds an IPv4 one (mapped, compatible, NAT64, 6to4) has the class of
 * what it embeds (a compatible one is at best TD_ADDR_RESERVED). Any
 * other family is TD_ADDR_RESERVED. */
td_addr_class_t td_addr_classify(int family, const void *addr);
/* The same for a socket address (AF_INET / AF_INET6; else RESERVED). */
td_addr_class_t td_addr_classify_sa(const struct sockaddr *sa, socklen_t len);

/* Reads s as an IPv4 address with the rules of inet_aton(3): one to four
 * parts separated by dots, each decimal, octal (leading 0) or hex (0x),
 * the last part filling the remaining bytes ("127.1" is 127.0.0.1,
 * "2130706433" too). One trailing dot is allowed (a fully qualified
 * form). True and *out (host byte order) when s is such an address. */
bool td_ipv4_parse(const char *s, uint32_t *out);

/* A URL taken apart by libcurl. Strings are malloc'd; td_url_clear. */
typedef struct td_url {
    char *scheme; /* lowercase */
    char *host;   /* lowercase; an IPv6 literal in brackets, as in the URL */
    int port;     /* the URL's, or the scheme's default (443, 80, 25, 465) */
    bool port_given;
} td_url_t;

/* Parses an absolute URL of at most TD_URLGUARD_URL_MAX bytes with no
 * spaces, controls or non-ASCII bytes, no user:password and no IPv6 zone
 * id, whose host is made of letters, digits, '-', '.', ':' and brackets.
 * Any scheme. 0 or TD_EINVAL with a message for people in errstr. */
int td_url_parse(const char *url, td_url_t *out, char *errstr, size_t errlen);
void td_url_clear(td_url_t *u);

/* Flags of the checks. */
#define TD_URLGUARD_HTTP_LOOPBACK 1u /* TIDINGS_ALLOW_HTTP_ENDPOINTS: http to loopback too */
#define TD_URLGUARD_NO_RESOLVE    2u /* judge names without looking them up (fuzzers) */
/* TIDINGS_ALLOW_HTTP_ENDPOINTS for a scheme that is not http (the SMTP
 * server in tests): the listed schemes to loopback only. */
#define TD_URLGUARD_LOOPBACK 4u

/* May url be called? schemes is the comma-separated list of schemes
 * allowed to public hosts ("https" for push and webhooks). A literal host
 * must be a public address; a name must not be localhost and every
 * address it resolves to now must be public (a name that does not resolve
 * now passes: the connect-time check judges what it resolves to later).
 * With TD_URLGUARD_HTTP_LOOPBACK, "http" to localhost or a loopback
 * literal passes as well. 0 or TD_EINVAL with a message for people in
 * errstr (which never says what a name resolved to). Waits at most 1.5 s
 * for a name lookup (one that takes longer passes, like no answer). */
int td_urlguard_check_url(const char *url, const char *schemes, unsigned flags, char *errstr,
                          size_t errlen);
/* The same for a scheme, host (a name, an IPv4 literal or an IPv6 literal
 * with or without brackets) and port given apart, as an SMTP server is. */
int td_urlguard_check_host(const char *scheme, const char *host, int port, const char *schemes,
                           unsigned flags, char *errstr, size_t errlen);

/* The connect-time state of one transfer: owned by the caller, alive
 * until the transfer is over, then td_urlguard_conn_clear. */
typedef struct td_urlguard_conn {
    bool loopback_only; /* http under TD_URLGUARD_HTTP_LOOPBACK */
    bool blocked;       /* a socket was refused (see blocked_class) */
    td_addr_class_t blocked_class;
    struct curl_slist *resolve; /* test resolver's CURLOPT_RESOLVE entry */
} td_urlguard_conn_t;

/* Arms easy handle c for a transfer to url (already set as CURLOPT_URL by
 * the caller or not): every socket is checked at connect time against
 * its address (public only; loopback only for http under
 * TD_URLGUARD_HTTP_LOOPBACK), no redirects, no proxy, the URL's scheme as
 * the only protocol. Call after curl_easy_reset and before the transfer.
 * 0, or TD_EINVAL when url is not one td_urlguard_check_url's syntax and
 * scheme rules accept (nothing is set then). */
int td_urlguard_curl(CURL *c, const char *url, const char *schemes, unsigned flags,
                     td_urlguard_conn_t *g);
void td_urlguard_conn_clear(td_urlguard_conn_t *g);

/* Replaces the name lookup of the registration checks (getaddrinfo):
 * fills out with at most max addresses of host and returns how many (0:
 * no answer). For unit tests and fuzzers; NULL restores getaddrinfo. */
typedef int (*td_urlguard_resolver_fn)(const char *host, int port, struct sockaddr_storage *out,
                                       int max);
void td_urlguard_set_resolver(td_urlguard_resolver_fn fn);

#endif
