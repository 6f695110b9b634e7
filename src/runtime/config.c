/* Configuration of SPEC section 1: the SPEC defaults, then TIDINGS_*
 * environment variables, then command-line flags, each later source
 * overriding the earlier. Every value is checked at startup and a bad one is
 * an error that names the variable or flag, so a typo never turns into a
 * silently different system. Also the shared token key, which every service
 * must agree on: from TIDINGS_SECRET, or generated once into the data dir in
 * a way that is safe when all services start at the same moment. */
#include "tidings/config.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tidings/json.h"
#include "tidings/log.h"

static const char *const service_names[TD_SVC__COUNT] = {
    "users", "products", "orders", "payments", "notifications", "web",
};
static const char *const port_vars[TD_SVC__COUNT] = {
    "TIDINGS_USERS_PORT",    "TIDINGS_PRODUCTS_PORT",      "TIDINGS_ORDERS_PORT",
    "TIDINGS_PAYMENTS_PORT", "TIDINGS_NOTIFICATIONS_PORT", "TIDINGS_WEB_PORT",
};
static const int default_ports[TD_SVC__COUNT] = {8081, 8082, 8083, 8084, 8085, 8080};

#define DEFAULT_DATA_DIR      "./data"
#define DEFAULT_PREFIX        "tidings."
#define DEFAULT_LISTEN        "127.0.0.1"
#define DEFAULT_VAPID_SUBJECT "mailto:admin@tidings.local"
#define DEFAULT_MAX_STREAMS   32
#define SECRET_MIN            32
#define SECRET_GENERATED      48

const char *td_service_name(td_service_t svc)
{
    if ((int)svc < 0 || svc >= TD_SVC__COUNT) return "unknown";
    return service_names[svc];
}

int td_service_from_name(const char *name)
{
    if (!name) return -1;
    for (int i = 0; i < TD_SVC__COUNT; i++)
        if (!strcmp(name, service_names[i])) return i;
    return -1;
}

/* The web service's own origins, from its port and the listen address:
 * the pages it serves are the ones that call the other services. */
static void cors_default(td_config_t *cfg)
{
    int port = cfg->ports[TD_SVC_WEB];
    const char *addr = cfg->listen_addr ? cfg->listen_addr : DEFAULT_LISTEN;
    char *list = td_asprintf("http://127.0.0.1:%d,http://localhost:%d", port, port);
    /* A specific other address is one more name of this host; "0.0.0.0"
     * and "::" say nothing about the names browsers use (set the list). */
    if (strcmp(addr, "127.0.0.1") && strcmp(addr, "localhost") && strcmp(addr, "0.0.0.0") &&
        strcmp(addr, "::")) {
        char *more = strchr(addr, ':') ? td_asprintf("%s,http://[%s]:%d", list, addr, port)
                                       : td_asprintf("%s,http://%s:%d", list, addr, port);
        free(list);
        list = more;
    }
    free(cfg->cors_origins);
    cfg->cors_origins = list;
}

void td_config_defaults(td_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->data_dir = td_strdup(DEFAULT_DATA_DIR);
    cfg->topic_prefix = td_strdup(DEFAULT_PREFIX);
    cfg->partitions = 6;
    cfg->replication = 0; /* not set: min(3, broker count) when topics are created */
    cfg->retention_ms = 604800000;
    cfg->payment_limit = 500000;
    cfg->log_level = TD_LOG_INFO;
    cfg->log_json = true;
    cfg->delivery_max_attempts = 8;
    cfg->delivery_backoff_ms = 1000;
    cfg->fetch_wait_ms = 100;
    cfg->listen_addr = td_strdup(DEFAULT_LISTEN);
    for (int i = 0; i < TD_SVC__COUNT; i++) cfg->ports[i] = default_ports[i];
    cfg->vapid_subject = td_strdup(DEFAULT_VAPID_SUBJECT);
    cfg->max_streams_per_user = DEFAULT_MAX_STREAMS;
    cfg->inbox_retention_ms = 0; /* twice the topics' retention, once that is known */
    cfg->notification_retention_days = 90;
    cors_default(cfg);
}

void td_config_free(td_config_t *cfg)
{
    if (!cfg) return;
    free(cfg->service);
    free(cfg->brokers);
    free(cfg->data_dir);
    if (cfg->secret) sodium_memzero(cfg->secret, cfg->secret_len);
    free(cfg->secret);
    free(cfg->topic_prefix);
    if (cfg->admin_password) sodium_memzero(cfg->admin_password, strlen(cfg->admin_password));
    free(cfg->admin_password);
    free(cfg->listen_addr);
    free(cfg->vapid_subject);
    free(cfg->cors_origins);
    free(cfg->smtp_url);
    free(cfg->smtp_user);
    if (cfg->smtp_password) sodium_memzero(cfg->smtp_password, strlen(cfg->smtp_password));
    free(cfg->smtp_password);
    free(cfg->smtp_from);
    free(cfg->public_notifications_url);
    memset(cfg, 0, sizeof(*cfg));
}

/* ---- value parsers: `what` is the variable or flag named in errors ---- */

static int parse_i64(const char *what, const char *text, int64_t min, int64_t max, int64_t *out,
                     char *errstr, size_t errlen)
{
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    /* strtoll would skip leading blanks and accept "+5"; neither is a number
     * anyone meant to write. */
    if (!*text || isspace((unsigned char)*text) || *text == '+' || *end || errno == ERANGE ||
        v < min || v > max)
        return td_errf(errstr, errlen, TD_EINVAL,
                       "%s: '%.100s' is not an integer from %" PRId64 " to %" PRId64, what, text,
                       min, max);
    *out = v;
    return 0;
}

static int parse_int(const char *what, const char *text, int min, int max, int *out, char *errstr,
                     size_t errlen)
{
    int64_t v;
    int rc = parse_i64(what, text, min, max, &v, errstr, errlen);
    if (rc == 0) *out = (int)v;
    return rc;
}

static int parse_port(const char *what, const char *text, int *out, char *errstr, size_t errlen)
{
    int64_t v;
    if (parse_i64(what, text, 1, 65535, &v, NULL, 0))
        return td_errf(errstr, errlen, TD_EINVAL, "%s: '%.100s' is not a port (1-65535)", what,
                       text);
    *out = (int)v;
    return 0;
}

static int parse_level(const char *what, const char *text, int *out, char *errstr, size_t errlen)
{
    int level = td_log_level_from_name(text);
    if (level < 0)
        return td_errf(errstr, errlen, TD_EINVAL,
                       "%s: '%.100s' is not one of debug, info, warn, error", what, text);
    *out = level;
    return 0;
}

static int parse_format(const char *what, const char *text, bool *json, char *errstr, size_t errlen)
{
    if (!strcmp(text, "json")) {
        *json = true;
    } else if (!strcmp(text, "text")) {
        *json = false;
    } else {
        return td_errf(errstr, errlen, TD_EINVAL, "%s: '%.100s' is not one of json, text", what,
                       text);
    }
    return 0;
}

static int parse_bool(const char *what, const char *text, bool *out, char *errstr, size_t errlen)
{
    if (!strcmp(text, "1") || !strcmp(text, "true")) {
        *out = true;
    } else if (!strcmp(text, "0") || !strcmp(text, "false")) {
        *out = false;
    } else {
        return td_errf(errstr, errlen, TD_EINVAL, "%s: '%.100s' is not 0 or 1", what, text);
    }
    return 0;
}

/* A decimal amount with at most 2 decimals ("5000", "5000.5", "19.99") as
 * cents, read digit by digit so no floating point is involved. */
static int parse_money(const char *what, const char *text, int64_t *cents, char *errstr,
                       size_t errlen)
{
    const char *p = text;
    int64_t units = 0, frac = 0;
    int nint = 0, nfrac = 0;
    for (; *p >= '0' && *p <= '9'; p++, nint++) {
        units = units * 10 + (*p - '0');
        if (units > TD_MONEY_MAX_CENTS / 100) goto bad;
    }
    if (*p == '.') {
        for (p++; *p >= '0' && *p <= '9'; p++, nfrac++) {
            if (nfrac >= 2) goto bad;
            frac = frac * 10 + (*p - '0');
        }
        if (nfrac == 0) goto bad;
    }
    if (nint == 0 || *p) goto bad;
    if (nfrac == 1) frac *= 10;
    if (units * 100 + frac > TD_MONEY_MAX_CENTS) goto bad;
    *cents = units * 100 + frac;
    return 0;
bad:
    return td_errf(errstr, errlen, TD_EINVAL,
                   "%s: '%.100s' is not an amount >= 0 with at most 2 decimals", what, text);
}

static int parse_listen(const char *what, const char *text, char **out, char *errstr, size_t errlen)
{
    unsigned char buf[sizeof(struct in6_addr)];
    if (strcmp(text, "localhost") && inet_pton(AF_INET, text, buf) != 1 &&
        inet_pton(AF_INET6, text, buf) != 1)
        return td_errf(errstr, errlen, TD_EINVAL, "%s: '%.100s' is not an IP address", what, text);
    free(*out);
    *out = td_strdup(text);
    return 0;
}

/* Kafka topic names allow [a-zA-Z0-9._-]; the prefix is part of them. */
static int parse_prefix(const char *what, const char *text, char **out, char *errstr, size_t errlen)
{
    size_t n = strlen(text);
    if (n > 200 || strspn(text, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                "0123456789._-") != n)
        return td_errf(errstr, errlen, TD_EINVAL,
                       "%s: '%.100s' may only hold letters, digits, '.', '_' and '-'", what, text);
    free(*out);
    *out = td_strdup(text);
    return 0;
}

/* RFC 8292: the VAPID subject is a mailto: or https: URI. */
static int parse_vapid(const char *what, const char *text, char **out, char *errstr, size_t errlen)
{
    if ((strncmp(text, "mailto:", 7) || !text[7]) && (strncmp(text, "https://", 8) || !text[8]))
        return td_errf(errstr, errlen, TD_EINVAL, "%s: '%.100s' is not a mailto: or https:// URI",
                       what, text);
    free(*out);
    *out = td_strdup(text);
    return 0;
}

/* "*" or origins "http(s)://host[:port]" separated by commas, as a browser
 * sends them in Origin (no path); kept trimmed, comma-joined. */
static int parse_origins(const char *what, const char *text, char **out, char *errstr,
                         size_t errlen)
{
    char *list = td_strdup("");
    for (const char *p = text;;) {
        size_t n = strcspn(p, ",");
        const char *a = p, *b = p + n;
        while (a < b && isspace((unsigned char)*a)) a++;
        while (b > a && isspace((unsigned char)b[-1])) b--;
        if (b > a && b[-1] == '/') b--; /* "https://shop.example/" means the origin */
        size_t len = (size_t)(b - a);
        bool ok = len == 1 && *a == '*';
        if (!ok) {
            size_t skip = len > 8 && !strncasecmp(a, "https://", 8)  ? 8
                          : len > 7 && !strncasecmp(a, "http://", 7) ? 7
                                                                     : 0;
            const char *h = a + skip;
            ok = skip > 0;
            bool colon = false;
            for (const char *c = h; ok && c < b; c++) {
                if (*c == '[') { /* an IPv6 literal */
                    const char *e = memchr(c, ']', (size_t)(b - c));
                    ok = c == h && e && e > c + 1;
                    if (ok) c = e;
                } else if (*c == ':') {
                    ok = !colon && c > h && c + 1 < b;
                    colon = true;
                } else if (colon) {
                    ok = *c >= '0' && *c <= '9';
                } else {
                    ok = isalnum((unsigned char)*c) || *c == '.' || *c == '-';
                }
            }
            ok = ok && h < b;
        }
        if (!ok) {
            free(list);
            return td_errf(errstr, errlen, TD_EINVAL,
                           "%s: '%.*s' is not an origin like https://shop.example[:port], or *",
                           what, (int)(len > 100 ? 100 : len), a);
        }
        char *next = td_asprintf("%s%s%.*s", list, *list ? "," : "", (int)len, a);
        free(list);
        list = next;
        p += n;
        if (!*p) break;
        p++;
    }
    free(*out);
    *out = list;
    return 0;
}

static void set_str(char **dst, const char *text)
{
    free(*dst);
    *dst = td_strdup(text);
}

/* getenv, with an empty value counting as unset (VAR= in a shell script
 * usually means "no value"). */
static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

static int load_env(td_config_t *cfg, bool *fetch_wait_set, bool *cors_set, char *errstr,
                    size_t errlen)
{
    const char *v;
    int64_t n;
    int rc = 0;

    if ((v = env("TIDINGS_BROKERS"))) set_str(&cfg->brokers, v);
    if ((v = env("TIDINGS_DATA_DIR"))) set_str(&cfg->data_dir, v);
    /* An empty prefix is meaningful (bare topic names), so it is not unset. */
    if ((v = getenv("TIDINGS_TOPIC_PREFIX")) &&
        (rc = parse_prefix("TIDINGS_TOPIC_PREFIX", v, &cfg->topic_prefix, errstr, errlen)))
        return rc;
    if ((v = env("TIDINGS_PARTITIONS")) &&
        (rc = parse_int("TIDINGS_PARTITIONS", v, 1, 10000, &cfg->partitions, errstr, errlen)))
        return rc;
    if ((v = env("TIDINGS_REPLICATION")) &&
        (rc = parse_int("TIDINGS_REPLICATION", v, 1, 32767, &cfg->replication, errstr, errlen)))
        return rc;
    if ((v = env("TIDINGS_RETENTION_MS"))) {
        /* -1 is Kafka's "keep forever". */
        n = -1;
        if (strcmp(v, "-1") &&
            (rc = parse_i64("TIDINGS_RETENTION_MS", v, 1, INT64_MAX, &n, errstr, errlen)))
            return rc;
        cfg->retention_ms = n;
    }
    if ((v = env("TIDINGS_INBOX_RETENTION_MS")) &&
        (rc = parse_i64("TIDINGS_INBOX_RETENTION_MS", v, 1, INT64_MAX, &cfg->inbox_retention_ms,
                        errstr, errlen)))
        return rc;
    if ((v = env("TIDINGS_NOTIFICATION_RETENTION_DAYS")) &&
        (rc = parse_int("TIDINGS_NOTIFICATION_RETENTION_DAYS", v, 0, 1000000,
                        &cfg->notification_retention_days, errstr, errlen)))
        return rc;
    if ((v = env("TIDINGS_PAYMENT_LIMIT")) &&
        (rc = parse_money("TIDINGS_PAYMENT_LIMIT", v, &cfg->payment_limit, errstr, errlen)))
        return rc;
    if ((v = env("TIDINGS_LOG_LEVEL")) &&
        (rc = parse_level("TIDINGS_LOG_LEVEL", v, &cfg->log_level, errstr, errlen)))
        return rc;
    if ((v = env("TIDINGS_LOG_FORMAT")) &&
        (rc = parse_format("TIDINGS_LOG_FORMAT", v, &cfg->log_json, errstr, errlen)))
        return rc;
    if ((v = env("TIDINGS_ADMIN_PASSWORD"))) set_str(&cfg->admin_password, v);
    if ((v = env("TIDINGS_ALLOW_HTTP_ENDPOINTS")) &&
        (rc = parse_bool("TIDINGS_ALLOW_HTTP_ENDPOINTS", v, &cfg->allow_http_endpoints, errstr,
                         errlen)))
        return rc;
    if ((v = env("TIDINGS_DELIVERY_MAX_ATTEMPTS")) &&
        (rc = parse_int("TIDINGS_DELIVERY_MAX_ATTEMPTS", v, 1, 1000, &cfg->delivery_max_attempts,
                        errstr, errlen)))
        return rc;
    if ((v = env("TIDINGS_DELIVERY_BACKOFF_MS")) &&
        (rc = parse_i64("TIDINGS_DELIVERY_BACKOFF_MS", v, 1, 300000, &cfg->delivery_backoff_ms,
                        errstr, errlen)))
        return rc;
    if ((v = env("TIDINGS_FETCH_WAIT_MS"))) {
        rc = parse_int("TIDINGS_FETCH_WAIT_MS", v, 0, 300000, &cfg->fetch_wait_ms, errstr, errlen);
        if (rc) return rc;
        *fetch_wait_set = true;
    }
    if ((v = env("TIDINGS_LISTEN_ADDR")) &&
        (rc = parse_listen("TIDINGS_LISTEN_ADDR", v, &cfg->listen_addr, errstr, errlen)))
        return rc;
    if ((v = env("TIDINGS_DB_SYNC"))) {
        if (strcmp(v, "full") && strcmp(v, "normal"))
            return td_errf(errstr, errlen, TD_EINVAL,
                           "TIDINGS_DB_SYNC: '%.100s' is not one of full, normal", v);
        cfg->db_sync_normal = !strcmp(v, "normal");
    }
    if ((v = env("TIDINGS_VAPID_SUBJECT")) &&
        (rc = parse_vapid("TIDINGS_VAPID_SUBJECT", v, &cfg->vapid_subject, errstr, errlen)))
        return rc;
    for (int i = 0; i < TD_SVC__COUNT; i++)
        if ((v = env(port_vars[i])) &&
            (rc = parse_port(port_vars[i], v, &cfg->ports[i], errstr, errlen)))
            return rc;
    if ((v = env("TIDINGS_CORS_ORIGINS"))) {
        rc = parse_origins("TIDINGS_CORS_ORIGINS", v, &cfg->cors_origins, errstr, errlen);
        if (rc) return rc;
        *cors_set = true;
    }
    if ((v = env("TIDINGS_SMTP_URL")) && *v) {
        if (strncasecmp(v, "smtp://", 7) && strncasecmp(v, "smtps://", 8))
            return td_errf(errstr, errlen, TD_EINVAL,
                           "TIDINGS_SMTP_URL is not an smtp:// or smtps:// URL");
        set_str(&cfg->smtp_url, v);
    }
    if ((v = env("TIDINGS_SMTP_USER")) && *v) set_str(&cfg->smtp_user, v);
    if ((v = env("TIDINGS_SMTP_PASSWORD")) && *v) set_str(&cfg->smtp_password, v);
    if ((v = env("TIDINGS_SMTP_FROM")) && *v) set_str(&cfg->smtp_from, v);
    if ((v = env("TIDINGS_PUBLIC_NOTIFICATIONS_URL")) && *v) {
        if (strncmp(v, "https://", 8) && strncmp(v, "http://", 7))
            return td_errf(errstr, errlen, TD_EINVAL,
                           "TIDINGS_PUBLIC_NOTIFICATIONS_URL: '%.100s' is not an http(s):// URL",
                           v);
        set_str(&cfg->public_notifications_url, v);
        size_t ulen = strlen(cfg->public_notifications_url);
        while (ulen > 8 && cfg->public_notifications_url[ulen - 1] == '/')
            cfg->public_notifications_url[--ulen] = '\0';
    }
    if ((v = env("TIDINGS_MAX_STREAMS_PER_USER")) &&
        (rc = parse_int("TIDINGS_MAX_STREAMS_PER_USER", v, 1, 10000, &cfg->max_streams_per_user,
                        errstr, errlen)))
        return rc;
    return 0;
}

static const char *const value_flags[] = {"--brokers", "--data", "--port", "--listen",
                                          "--log-level"};

static int apply_flag(td_config_t *cfg, const char *flag, const char *val, char *errstr,
                      size_t errlen)
{
    if (!*val) return td_errf(errstr, errlen, TD_EINVAL, "%s: the value is empty", flag);
    if (!strcmp(flag, "--brokers")) {
        set_str(&cfg->brokers, val);
        return 0;
    }
    if (!strcmp(flag, "--data")) {
        set_str(&cfg->data_dir, val);
        return 0;
    }
    if (!strcmp(flag, "--port")) {
        int svc = td_service_from_name(cfg->service);
        if (svc < 0)
            return td_errf(errstr, errlen, TD_EINVAL, "--port: %s%s%s has no HTTP port",
                           cfg->service ? "'" : "", cfg->service ? cfg->service : "this command",
                           cfg->service ? "'" : "");
        return parse_port("--port", val, &cfg->ports[svc], errstr, errlen);
    }
    if (!strcmp(flag, "--listen"))
        return parse_listen("--listen", val, &cfg->listen_addr, errstr, errlen);
    return parse_level("--log-level", val, &cfg->log_level, errstr, errlen);
}

/* Flags up to the first positional argument (or "--"), POSIX style. */
static int load_flags(td_config_t *cfg, int argc, char **argv, int *argi, char *errstr,
                      size_t errlen)
{
    int i = 1;
    for (; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--")) {
            i++;
            break;
        }
        if (arg[0] != '-' || !arg[1]) break; /* positional ("-" is one too) */

        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        const char *flag = NULL;
        for (size_t k = 0; k < TD_ARRAY_SIZE(value_flags); k++)
            if (strlen(value_flags[k]) == nlen && !strncmp(value_flags[k], arg, nlen))
                flag = value_flags[k];
        if (!flag)
            return td_errf(errstr, errlen, TD_EINVAL, "unknown option '%.*s'", (int)nlen, arg);
        const char *val = eq ? eq + 1 : NULL;
        if (!val) {
            if (i + 1 >= argc) return td_errf(errstr, errlen, TD_EINVAL, "%s needs a value", flag);
            val = argv[++i];
        }
        int rc = apply_flag(cfg, flag, val, errstr, errlen);
        if (rc) return rc;
    }
    if (argi) {
        *argi = i;
    } else if (i < argc) {
        return td_errf(errstr, errlen, TD_EINVAL, "unexpected argument '%.100s'", argv[i]);
    }
    return 0;
}

/* The bootstrap list `tidings run`/`tidings broker` left in the data dir. */
static void load_brokers_file(td_config_t *cfg)
{
    char *path = td_data_path(cfg, "brokers");
    char *text = td_read_file(path, NULL);
    free(path);
    if (!text) return;
    char *start = text;
    while (isspace((unsigned char)*start)) start++;
    size_t n = strlen(start);
    while (n > 0 && isspace((unsigned char)start[n - 1])) n--;
    if (n > 0) {
        cfg->brokers = td_strndup(start, n);
        cfg->brokers_embedded = true;
    }
    free(text);
}

int td_config_load(td_config_t *cfg, const char *service, int argc, char **argv, int *argi,
                   char *errstr, size_t errlen)
{
    bool fetch_wait_set = false, cors_set = false;
    int rc;

    td_config_defaults(cfg);
    cfg->service = td_strdup(service);
    if ((rc = load_env(cfg, &fetch_wait_set, &cors_set, errstr, errlen))) goto fail;
    if ((rc = load_flags(cfg, argc, argv, argi, errstr, errlen))) goto fail;
    /* The web port and listen address may have changed since the defaults. */
    if (!cors_set) cors_default(cfg);
    if (!cfg->brokers) load_brokers_file(cfg);
    /* The embedded broker is in-process memory: waiting for a fetch to fill
     * only adds latency there. */
    if (!fetch_wait_set) cfg->fetch_wait_ms = cfg->brokers_embedded ? 1 : 100;
    cfg->fetch_wait_set = fetch_wait_set;
    /* Longer than Kafka keeps a record, so a redelivery is always known
     * (-1: Kafka keeps it forever, and so does the inbox). */
    if (!cfg->inbox_retention_ms)
        cfg->inbox_retention_ms =
            cfg->retention_ms < 0 || cfg->retention_ms > INT64_MAX / 2 ? -1 : cfg->retention_ms * 2;
    return 0;

fail:
    td_config_free(cfg);
    return rc;
}

bool td_config_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) return false;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return true;
    }
    return false;
}

void td_config_usage(FILE *out, const char *command)
{
    fprintf(out,
            "usage: tidings %s [options]\n\n"
            "options (they override the environment):\n"
            "  --brokers LIST     Kafka bootstrap servers (TIDINGS_BROKERS)\n"
            "  --data DIR         data directory (TIDINGS_DATA_DIR)\n"
            "  --port N           HTTP port of this service (TIDINGS_<SERVICE>_PORT)\n"
            "  --listen ADDR      address to listen on (TIDINGS_LISTEN_ADDR)\n"
            "  --log-level L      debug, info, warn or error (TIDINGS_LOG_LEVEL)\n"
            "  --help, -h         this text\n"
            "Each option also takes the form --option=value.\n\n"
            "environment (default):\n"
            "  TIDINGS_BROKERS               (embedded: <data>/brokers)\n"
            "  TIDINGS_DATA_DIR              " DEFAULT_DATA_DIR "\n"
            "  TIDINGS_SECRET                (generated once into <data>/secret; >= 32 bytes)\n"
            "  TIDINGS_TOPIC_PREFIX          " DEFAULT_PREFIX "\n"
            "  TIDINGS_PARTITIONS            6\n"
            "  TIDINGS_REPLICATION           3, or the broker count if smaller\n"
            "  TIDINGS_RETENTION_MS          604800000 (7 days)\n"
            "  TIDINGS_INBOX_RETENTION_MS    twice TIDINGS_RETENTION_MS\n"
            "  TIDINGS_NOTIFICATION_RETENTION_DAYS 90 (0 keeps them forever)\n"
            "  TIDINGS_PAYMENT_LIMIT         5000.00\n"
            "  TIDINGS_LOG_LEVEL             info\n"
            "  TIDINGS_LOG_FORMAT            json (or text)\n"
            "  TIDINGS_ADMIN_PASSWORD        (none)\n"
            "  TIDINGS_ALLOW_HTTP_ENDPOINTS  0\n"
            "  TIDINGS_DELIVERY_MAX_ATTEMPTS 8\n"
            "  TIDINGS_DELIVERY_BACKOFF_MS   1000\n"
            "  TIDINGS_FETCH_WAIT_MS         1 on a mock (embedded) broker, else 100\n"
            "  TIDINGS_LISTEN_ADDR           " DEFAULT_LISTEN "\n"
            "  TIDINGS_DB_SYNC               full (or normal: safe from crashes, not power cuts)\n"
            "  TIDINGS_VAPID_SUBJECT         " DEFAULT_VAPID_SUBJECT "\n"
            "  TIDINGS_VAPID_PRIVATE_KEY     (notifications: generated once into its db)\n"
            "  TIDINGS_CORS_ORIGINS          http://127.0.0.1:<web port>,http://localhost:<web "
            "port>\n"
            "  TIDINGS_MAX_STREAMS_PER_USER  32\n"
            "  TIDINGS_SMTP_URL              (none: no email; smtp://host:port or smtps://...)\n"
            "  TIDINGS_SMTP_USER             (none, or the URL's user)\n"
            "  TIDINGS_SMTP_PASSWORD         (none, or the URL's password)\n"
            "  TIDINGS_SMTP_FROM             tidings <no-reply@tidings.local>\n"
            "  TIDINGS_PUBLIC_NOTIFICATIONS_URL http://<listen addr>:<notifications port>"
            " (email unsubscribe links)\n"
            "  TIDINGS_KAFKA_DEBUG           (none; librdkafka debug contexts, e.g. cgrp)\n",
            command ? command : "<command>");
    for (int i = 0; i < TD_SVC__COUNT; i++)
        fprintf(out, "  %-29s %d\n", port_vars[i], default_ports[i]);
}

/* 48 characters from the url-safe base64 alphabet: 288 bits of key. */
static void random_secret(char *out, size_t n)
{
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                   "0123456789-_";
    for (size_t i = 0; i < n; i++) out[i] = alphabet[randombytes_uniform(64)];
}

static int read_secret_file(td_config_t *cfg, const char *path, char *errstr, size_t errlen)
{
    size_t len;
    char *text = td_read_file(path, &len);
    if (!text) return td_errf(errstr, errlen, TD_EIO, "%s: cannot read: %s", path, strerror(errno));
    /* Tolerate the newline an editor or `echo` adds. */
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r')) len--;
    if (len < SECRET_MIN) {
        sodium_memzero(text, len);
        free(text);
        return td_errf(errstr, errlen, TD_EINVAL, "%s: the secret must be at least %d bytes", path,
                       SECRET_MIN);
    }
    cfg->secret = (unsigned char *)text;
    cfg->secret_len = len;
    return 0;
}

/* Creates path with a fresh secret. The file appears complete or not at all:
 * it is written under a unique temporary name and hard-linked into place,
 * and link(2), unlike rename(2), fails with EEXIST when another service won
 * the race, in which case its secret is the one everyone uses. */
static int create_secret_file(const char *path, char *errstr, size_t errlen)
{
    char secret[SECRET_GENERATED];
    char rnd[8];
    random_secret(rnd, sizeof(rnd));
    char *tmp = td_asprintf("%s.tmp.%ld.%.8s", path, (long)getpid(), rnd);
    int rc = 0;

    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        rc = td_errf(errstr, errlen, TD_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        goto out;
    }
    random_secret(secret, sizeof(secret));
    ssize_t w = write(fd, secret, sizeof(secret));
    sodium_memzero(secret, sizeof(secret));
    if (w != (ssize_t)sizeof(secret) || fsync(fd) != 0) {
        rc = td_errf(errstr, errlen, TD_EIO, "%s: cannot write: %s", tmp, strerror(errno));
        close(fd);
        goto out_unlink;
    }
    if (close(fd) != 0) {
        rc = td_errf(errstr, errlen, TD_EIO, "%s: cannot write: %s", tmp, strerror(errno));
        goto out_unlink;
    }
    if (link(tmp, path) != 0 && errno != EEXIST)
        rc = td_errf(errstr, errlen, TD_EIO, "%s: cannot create: %s", path, strerror(errno));
out_unlink:
    unlink(tmp);
out:
    free(tmp);
    return rc;
}

int td_config_load_secret(td_config_t *cfg, char *errstr, size_t errlen)
{
    char *path = NULL;
    int rc = 0;

    if (sodium_init() < 0) return td_errf(errstr, errlen, TD_EIO, "libsodium failed to start");
    if (cfg->secret) sodium_memzero(cfg->secret, cfg->secret_len);
    free(cfg->secret);
    cfg->secret = NULL;
    cfg->secret_len = 0;

    const char *v = getenv("TIDINGS_SECRET");
    if (v && *v) {
        size_t n = strlen(v);
        if (n < SECRET_MIN)
            return td_errf(errstr, errlen, TD_EINVAL,
                           "TIDINGS_SECRET: must be at least %d bytes, not %zu", SECRET_MIN, n);
        cfg->secret = td_malloc(n + 1);
        memcpy(cfg->secret, v, n + 1);
        cfg->secret_len = n;
        return 0;
    }

    if (td_mkdirs(cfg->data_dir, 0700) != 0) {
        rc = td_errf(errstr, errlen, TD_EIO, "%s: cannot create the data directory: %s",
                     cfg->data_dir, strerror(errno));
        goto fail;
    }
    path = td_data_path(cfg, "secret");
    if (access(path, F_OK) != 0 && (rc = create_secret_file(path, errstr, errlen))) goto fail;
    rc = read_secret_file(cfg, path, errstr, errlen);
fail:
    free(path);
    return rc;
}

int td_config_port(const td_config_t *cfg, td_service_t svc)
{
    if ((int)svc < 0 || svc >= TD_SVC__COUNT) return -1;
    return cfg->ports[svc];
}

char *td_topic_name(const td_config_t *cfg, const char *short_name)
{
    return td_asprintf("%s%s", cfg->topic_prefix ? cfg->topic_prefix : "", short_name);
}

char *td_data_path(const td_config_t *cfg, const char *file)
{
    const char *dir = cfg->data_dir ? cfg->data_dir : DEFAULT_DATA_DIR;
    size_t n = strlen(dir);
    return td_asprintf("%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", file);
}
