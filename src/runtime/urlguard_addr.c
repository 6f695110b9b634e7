/* The address classifier of the outbound-URL guard (see
 * tidings/urlguard.h): which IANA special-purpose block an IPv4 or IPv6
 * address is in (IPv4-mapped, NAT64 and 6to4 forms judged by the IPv4
 * address they carry), and td_ipv4_parse, which reads a numeric host with
 * inet_aton's rules (decimal, hex, octal, short forms) whatever the
 * resolver or libcurl would make of it. Pure functions, any thread. */
#include "tidings/urlguard.h"

#include <netinet/in.h>
#include <string.h>

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
