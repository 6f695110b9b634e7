/* Configuration of SPEC section 1: the SPEC defaults, then TIDINGS_*
 * environment variables, then command-line flags, each later source
 * overriding the earlier. Every value is checked at startup and a bad one is
 * an error that names the variable or flag, so a typo never turns into a
 * silently different system. One table (settings[] below) says each
 * setting once: its variable and flag, its kind and bounds, its default and
 * its help line; parsing, validation, the defaults and --help come from it.
 * A command's own flags (td_command_t) are parsed and listed beside it.
 * The token key is secret.c's. */
#include "tidings/config.h"

#include <arpa/inet.h>
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "config_internal.h"
#include "tidings/json.h"
#include "tidings/log.h"

static const char *const service_names[TD_SVC__COUNT] = {
    "users", "products", "orders", "payments", "notifications", "web",
};
#define DEFAULT_DATA_DIR "./data"
#define DEFAULT_LISTEN   "127.0.0.1"

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

static void set_str(char **dst, const char *text)
{
    free(*dst);
    *dst = td_strdup(text);
}

/* ---- the settings table ---- */

/* How a setting's text becomes its value. */
typedef enum set_kind {
    SET_DOC,      /* read elsewhere (the secret, librdkafka's own); listed only */
    SET_STR,      /* any text */
    SET_INT,      /* an int from min to max */
    SET_I64,      /* an int64 from min to max */
    SET_BOOL,     /* 0/1/true/false */
    SET_PORT,     /* 1..65535 */
    SET_OWN_PORT, /* --port: the port of the running service */
    SET_LEVEL,    /* a log level */
    SET_FORMAT,   /* json or text, into a bool "json" */
    SET_MONEY,    /* an amount, in cents */
    SET_LISTEN,   /* an IP address or localhost */
    SET_PREFIX,   /* a topic name prefix */
    SET_VAPID,    /* a mailto: or https: URI */
    SET_ORIGINS,  /* CORS origins */
    SET_DB_SYNC,  /* full or normal, into a bool "normal" */
    SET_SMTP_URL, /* an smtp:// or smtps:// URL */
    SET_HTTP_URL, /* an http:// or https:// URL, kept without trailing '/' */
} set_kind_t;

enum {
    SET_EMPTY_OK = 1 << 0, /* an empty value is a value (not "unset") */
    SET_MINUS1 = 1 << 1,   /* -1 is allowed besides min..max */
};

/* One row: where it comes from (variable, flag), what it takes, its
 * default (parsed like a given value, so it is written once) and the
 * words --help shows. Parsing, validation, defaults and the usage text all
 * come from here. */
typedef struct setting {
    const char *env;     /* TIDINGS_..., or NULL for a flag only */
    const char *flag;    /* --name taking a value, or NULL */
    const char *metavar; /* the flag's value in --help */
    set_kind_t kind;
    size_t off; /* where in td_config_t */
    int64_t min, max;
    const char *def;   /* default text; NULL: none or computed (see shown) */
    const char *shown; /* the default as --help says it, when def is not it */
    const char *help;  /* the flag's line in --help */
    unsigned opts;
} setting_t;

#define AT(field) offsetof(td_config_t, field)
#define PORT_ROW(svc, var, def)                                                                  \
    {                                                                                            \
        var, NULL, NULL, SET_PORT, offsetof(td_config_t, ports) + (svc) * sizeof(int), 1, 65535, \
            def, NULL, NULL, 0                                                                   \
    }

static const setting_t settings[] = {
    {"TIDINGS_BROKERS", "--brokers", "LIST", SET_STR, AT(brokers), 0, 0, NULL,
     "(embedded: <data>/brokers)", "Kafka bootstrap servers", 0},
    {"TIDINGS_DATA_DIR", "--data", "DIR", SET_STR, AT(data_dir), 0, 0, "./data", NULL,
     "data directory", 0},
    {NULL, "--port", "N", SET_OWN_PORT, 0, 1, 65535, NULL, NULL,
     "HTTP port of this service (TIDINGS_<SERVICE>_PORT)", 0},
    {"TIDINGS_LISTEN_ADDR", "--listen", "ADDR", SET_LISTEN, AT(listen_addr), 0, 0, "127.0.0.1",
     NULL, "address to listen on", 0},
    {"TIDINGS_LOG_LEVEL", "--log-level", "L", SET_LEVEL, AT(log_level), 0, 0, "info", NULL,
     "debug, info, warn or error", 0},
    {"TIDINGS_SECRET", NULL, NULL, SET_DOC, 0, 0, 0, NULL,
     "(generated once into <data>/secret; >= 32 bytes)", NULL, 0},
    {"TIDINGS_TOPIC_PREFIX", NULL, NULL, SET_PREFIX, AT(topic_prefix), 0, 0, "tidings.", NULL, NULL,
     SET_EMPTY_OK},
    {"TIDINGS_PARTITIONS", NULL, NULL, SET_INT, AT(partitions), 1, 10000, "6", NULL, NULL, 0},
    {"TIDINGS_REPLICATION", NULL, NULL, SET_INT, AT(replication), 1, 32767, NULL,
     "3, or the broker count if smaller", NULL, 0},
    {"TIDINGS_RETENTION_MS", NULL, NULL, SET_I64, AT(retention_ms), 1, INT64_MAX, "604800000",
     "604800000 (7 days; -1 keeps records forever)", NULL, SET_MINUS1},
    {"TIDINGS_INBOX_RETENTION_MS", NULL, NULL, SET_I64, AT(inbox_retention_ms), 1, INT64_MAX, NULL,
     "twice TIDINGS_RETENTION_MS", NULL, 0},
    {"TIDINGS_NOTIFICATION_RETENTION_DAYS", NULL, NULL, SET_INT, AT(notification_retention_days), 0,
     1000000, "90", "90 (0 keeps them forever)", NULL, 0},
    {"TIDINGS_PAYMENT_LIMIT", NULL, NULL, SET_MONEY, AT(payment_limit), 0, 0, "5000.00", NULL, NULL,
     0},
    {"TIDINGS_LOG_FORMAT", NULL, NULL, SET_FORMAT, AT(log_json), 0, 0, "json", "json (or text)",
     NULL, 0},
    {"TIDINGS_ADMIN_PASSWORD", NULL, NULL, SET_STR, AT(admin_password), 0, 0, NULL, NULL, NULL, 0},
    {"TIDINGS_ALLOW_HTTP_ENDPOINTS", NULL, NULL, SET_BOOL, AT(allow_http_endpoints), 0, 0, "0",
     NULL, NULL, 0},
    {"TIDINGS_DELIVERY_MAX_ATTEMPTS", NULL, NULL, SET_INT, AT(delivery_max_attempts), 1, 1000, "8",
     NULL, NULL, 0},
    {"TIDINGS_DELIVERY_BACKOFF_MS", NULL, NULL, SET_I64, AT(delivery_backoff_ms), 1, 300000, "1000",
     NULL, NULL, 0},
    {"TIDINGS_FETCH_WAIT_MS", NULL, NULL, SET_INT, AT(fetch_wait_ms), 0, 300000, "100",
     "1 on a mock (embedded) broker, else 100", NULL, 0},
    {"TIDINGS_DB_SYNC", NULL, NULL, SET_DB_SYNC, AT(db_sync_normal), 0, 0, "full",
     "full (or normal: safe from crashes, not power cuts)", NULL, 0},
    {"TIDINGS_VAPID_SUBJECT", NULL, NULL, SET_VAPID, AT(vapid_subject), 0, 0,
     "mailto:admin@tidings.local", NULL, NULL, 0},
    {"TIDINGS_VAPID_PRIVATE_KEY", NULL, NULL, SET_DOC, 0, 0, 0, NULL,
     "(notifications: generated once into its db)", NULL, 0},
    {"TIDINGS_CORS_ORIGINS", NULL, NULL, SET_ORIGINS, AT(cors_origins), 0, 0, NULL,
     "http://127.0.0.1:<web port>,http://localhost:<web port>", NULL, 0},
    {"TIDINGS_MAX_STREAMS_PER_USER", NULL, NULL, SET_INT, AT(max_streams_per_user), 1, 10000, "32",
     NULL, NULL, 0},
    {"TIDINGS_SMTP_URL", NULL, NULL, SET_SMTP_URL, AT(smtp_url), 0, 0, NULL,
     "(none: no email; smtp://host:port or smtps://...)", NULL, 0},
    {"TIDINGS_SMTP_USER", NULL, NULL, SET_STR, AT(smtp_user), 0, 0, NULL,
     "(none, or the URL's user)", NULL, 0},
    {"TIDINGS_SMTP_PASSWORD", NULL, NULL, SET_STR, AT(smtp_password), 0, 0, NULL,
     "(none, or the URL's password)", NULL, 0},
    {"TIDINGS_SMTP_FROM", NULL, NULL, SET_STR, AT(smtp_from), 0, 0, NULL,
     "tidings <no-reply@tidings.local>", NULL, 0},
    {"TIDINGS_PUBLIC_NOTIFICATIONS_URL", NULL, NULL, SET_HTTP_URL, AT(public_notifications_url), 0,
     0, NULL, "http://<listen addr>:<notifications port> (email unsubscribe links)", NULL, 0},
    {"TIDINGS_KAFKA_CONFIG", NULL, NULL, SET_DOC, 0, 0, 0, NULL,
     "(none; a librdkafka properties file, kcat -F format)", NULL, 0},
    {"TIDINGS_KAFKA_<PROPERTY>", NULL, NULL, SET_DOC, 0, 0, 0, NULL,
     "(none; e.g. TIDINGS_KAFKA_SECURITY_PROTOCOL=sasl_ssl)", NULL, 0},
    {"TIDINGS_KAFKA_DEBUG", NULL, NULL, SET_DOC, 0, 0, 0, NULL,
     "(none; librdkafka debug contexts, e.g. cgrp)", NULL, 0},
    PORT_ROW(TD_SVC_USERS, "TIDINGS_USERS_PORT", "8081"),
    PORT_ROW(TD_SVC_PRODUCTS, "TIDINGS_PRODUCTS_PORT", "8082"),
    PORT_ROW(TD_SVC_ORDERS, "TIDINGS_ORDERS_PORT", "8083"),
    PORT_ROW(TD_SVC_PAYMENTS, "TIDINGS_PAYMENTS_PORT", "8084"),
    PORT_ROW(TD_SVC_NOTIFICATIONS, "TIDINGS_NOTIFICATIONS_PORT", "8085"),
    PORT_ROW(TD_SVC_WEB, "TIDINGS_WEB_PORT", "8080"),
};

#undef AT
#undef PORT_ROW

static const setting_t *setting_by_env(const char *name)
{
    for (size_t i = 0; i < TD_ARRAY_SIZE(settings); i++)
        if (settings[i].env && !strcmp(settings[i].env, name)) return &settings[i];
    return NULL;
}

/* Parses text for row s into cfg; what names the source in errors. */
static int set_value(td_config_t *cfg, const setting_t *s, const char *what, const char *text,
                     char *errstr, size_t errlen)
{
    void *at = (char *)cfg + s->off;
    int64_t n;
    int rc = 0;
    switch (s->kind) {
    case SET_DOC:
        break;
    case SET_STR:
        set_str(at, text);
        break;
    case SET_INT:
        rc = td__cfg_parse_int(what, text, (int)s->min, (int)s->max, at, errstr, errlen);
        break;
    case SET_I64:
        if ((s->opts & SET_MINUS1) && !strcmp(text, "-1")) {
            *(int64_t *)at = -1;
            break;
        }
        rc = td__cfg_parse_i64(what, text, s->min, s->max, &n, errstr, errlen);
        if (rc == 0) *(int64_t *)at = n;
        break;
    case SET_BOOL:
        rc = td__cfg_parse_bool(what, text, at, errstr, errlen);
        break;
    case SET_PORT:
        rc = td__cfg_parse_port(what, text, at, errstr, errlen);
        break;
    case SET_OWN_PORT: {
        int svc = td_service_from_name(cfg->service);
        if (svc < 0)
            return td_errf(errstr, errlen, TD_EINVAL, "%s: %s%s%s has no HTTP port", what,
                           cfg->service ? "'" : "", cfg->service ? cfg->service : "this command",
                           cfg->service ? "'" : "");
        rc = td__cfg_parse_port(what, text, &cfg->ports[svc], errstr, errlen);
        break;
    }
    case SET_LEVEL:
        rc = td__cfg_parse_level(what, text, at, errstr, errlen);
        break;
    case SET_FORMAT:
        rc = td__cfg_parse_format(what, text, at, errstr, errlen);
        break;
    case SET_MONEY:
        rc = td__cfg_parse_money(what, text, at, errstr, errlen);
        break;
    case SET_LISTEN:
        rc = td__cfg_parse_listen(what, text, at, errstr, errlen);
        break;
    case SET_PREFIX:
        rc = td__cfg_parse_prefix(what, text, at, errstr, errlen);
        break;
    case SET_VAPID:
        rc = td__cfg_parse_vapid(what, text, at, errstr, errlen);
        break;
    case SET_ORIGINS:
        rc = td__cfg_parse_origins(what, text, at, errstr, errlen);
        break;
    case SET_DB_SYNC:
        if (strcmp(text, "full") && strcmp(text, "normal"))
            return td_errf(errstr, errlen, TD_EINVAL, "%s: '%.100s' is not one of full, normal",
                           what, text);
        *(bool *)at = !strcmp(text, "normal");
        break;
    case SET_SMTP_URL:
        /* The whole URL may hold a password: never echoed. */
        if (strncasecmp(text, "smtp://", 7) && strncasecmp(text, "smtps://", 8))
            return td_errf(errstr, errlen, TD_EINVAL, "%s is not an smtp:// or smtps:// URL", what);
        set_str(at, text);
        break;
    case SET_HTTP_URL: {
        if (strncmp(text, "https://", 8) && strncmp(text, "http://", 7))
            return td_errf(errstr, errlen, TD_EINVAL, "%s: '%.100s' is not an http(s):// URL", what,
                           text);
        set_str(at, text);
        char *u = *(char **)at;
        size_t len = strlen(u);
        while (len > 8 && u[len - 1] == '/') u[--len] = '\0';
        break;
    }
    }
    return rc;
}

void td_config_defaults(td_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    for (size_t i = 0; i < TD_ARRAY_SIZE(settings); i++) {
        if (!settings[i].def) continue;
        int rc = set_value(cfg, &settings[i], settings[i].env, settings[i].def, NULL, 0);
        assert(rc == 0 && "a default in the settings table does not parse");
        (void)rc;
    }
    /* Not set: replication min(3, broker count) when topics are created;
     * the inbox keeps twice the topics' retention once that is known. */
    cors_default(cfg);
}

/* The environment over the defaults; given[i] says which rows were set
 * (getenv's empty value counts as unset, VAR= in a shell script usually
 * meaning "no value", unless the row takes an empty value). */
static int load_env(td_config_t *cfg, bool *given, char *errstr, size_t errlen)
{
    for (size_t i = 0; i < TD_ARRAY_SIZE(settings); i++) {
        const setting_t *s = &settings[i];
        if (!s->env || s->kind == SET_DOC) continue;
        const char *v = getenv(s->env);
        if (!v || (!*v && !(s->opts & SET_EMPTY_OK))) continue;
        int rc = set_value(cfg, s, s->env, v, errstr, errlen);
        if (rc) return rc;
        given[i] = true;
    }
    return 0;
}

/* The row of cmd's own flags that arg (name, or name=value) names. */
static const td_flag_t *cmd_flag(const td_command_t *cmd, const char *arg, size_t nlen)
{
    for (size_t k = 0; cmd && k < cmd->flag_cnt; k++) {
        const td_flag_t *f = &cmd->flags[k];
        if ((strlen(f->flag) == nlen && !strncmp(f->flag, arg, nlen)) ||
            (f->alias && strlen(f->alias) == nlen && !strncmp(f->alias, arg, nlen)))
            return f;
    }
    return NULL;
}

static void strv_add(td_strv_t *sv, const char *s)
{
    sv->v = td_realloc(sv->v, (sv->cnt + 1) * sizeof(*sv->v));
    sv->v[sv->cnt++] = s;
}

/* Sets cmd's flag f in opts; what names it in errors (as given). */
static int set_cmd_flag(void *opts, const td_flag_t *f, const char *what, const char *val,
                        char *errstr, size_t errlen)
{
    void *at = (char *)opts + f->off;
    if (f->kind == TD_FLAG_SWITCH) {
        if (val) return td_errf(errstr, errlen, TD_EINVAL, "%s takes no value", what);
        *(bool *)at = true;
        return 0;
    }
    if (!*val) return td_errf(errstr, errlen, TD_EINVAL, "%s: the value is empty", what);
    if (f->kind == TD_FLAG_STR)
        *(const char **)at = val;
    else
        strv_add(at, val);
    return 0;
}

/* Flags up to the first positional argument (or "--"), POSIX style; with a
 * command that takes operands, flags and operands in any order up to "--"
 * and operands after it. cmd's own flags (into opts) come before the
 * settings table's. */
static int load_flags(td_config_t *cfg, const td_command_t *cmd, void *opts, int argc, char **argv,
                      int *argi, td_strv_t *operands, char *errstr, size_t errlen)
{
    bool anywhere = cmd && cmd->operands && operands;
    int i = 1;
    for (; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--")) {
            i++;
            if (anywhere)
                for (; i < argc; i++) strv_add(operands, argv[i]);
            break;
        }
        if (arg[0] != '-' || !arg[1]) { /* positional ("-" is one too) */
            if (!anywhere) break;
            strv_add(operands, arg);
            continue;
        }

        const char *eq = strchr(arg, '=');
        size_t nlen = eq ? (size_t)(eq - arg) : strlen(arg);
        const char *val = eq ? eq + 1 : NULL;
        const td_flag_t *f = cmd_flag(cmd, arg, nlen);
        if (f) {
            if (f->kind != TD_FLAG_SWITCH && !val) {
                if (i + 1 >= argc)
                    return td_errf(errstr, errlen, TD_EINVAL, "%.*s needs a value", (int)nlen, arg);
                val = argv[++i];
            }
            char what[64];
            snprintf(what, sizeof(what), "%.*s", (int)nlen, arg);
            int rc = set_cmd_flag(opts, f, what, val, errstr, errlen);
            if (rc) return rc;
            continue;
        }
        const setting_t *s = NULL;
        for (size_t k = 0; k < TD_ARRAY_SIZE(settings); k++)
            if (settings[k].flag && strlen(settings[k].flag) == nlen &&
                !strncmp(settings[k].flag, arg, nlen))
                s = &settings[k];
        if (!s) return td_errf(errstr, errlen, TD_EINVAL, "unknown option '%.*s'", (int)nlen, arg);
        if (!val) {
            if (i + 1 >= argc)
                return td_errf(errstr, errlen, TD_EINVAL, "%s needs a value", s->flag);
            val = argv[++i];
        }
        if (!*val) return td_errf(errstr, errlen, TD_EINVAL, "%s: the value is empty", s->flag);
        int rc = set_value(cfg, s, s->flag, val, errstr, errlen);
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

/* td_config_load and td_config_load_cmd: cmd, opts and operands may be
 * NULL. */
static int load(td_config_t *cfg, const char *service, const td_command_t *cmd, void *opts,
                int argc, char **argv, int *argi, td_strv_t *operands, char *errstr, size_t errlen)
{
    bool given[TD_ARRAY_SIZE(settings)] = {0};
    int rc;

    td_config_defaults(cfg);
    cfg->service = td_strdup(service);
    if ((rc = load_env(cfg, given, errstr, errlen))) goto fail;
    if ((rc = load_flags(cfg, cmd, opts, argc, argv, argi, operands, errstr, errlen))) goto fail;
    /* The web port and listen address may have changed since the defaults. */
    if (!given[setting_by_env("TIDINGS_CORS_ORIGINS") - settings]) cors_default(cfg);
    if (!cfg->brokers) load_brokers_file(cfg);
    /* The embedded broker is in-process memory: waiting for a fetch to fill
     * only adds latency there. */
    cfg->fetch_wait_set = given[setting_by_env("TIDINGS_FETCH_WAIT_MS") - settings];
    if (!cfg->fetch_wait_set) cfg->fetch_wait_ms = cfg->brokers_embedded ? 1 : 100;
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

int td_config_load(td_config_t *cfg, const char *service, int argc, char **argv, int *argi,
                   char *errstr, size_t errlen)
{
    return load(cfg, service, NULL, NULL, argc, argv, argi, NULL, errstr, errlen);
}

int td_config_load_cmd(td_config_t *cfg, const td_command_t *cmd, void *opts, int argc, char **argv,
                       td_strv_t *operands, char *errstr, size_t errlen)
{
    return load(cfg, cmd->name, cmd, opts, argc, argv, NULL, operands, errstr, errlen);
}

bool td_config_has_flag(int argc, char **argv, const td_flag_t *f)
{
    td_command_t one = {.flags = f, .flag_cnt = 1};
    for (int i = 1; i < argc && strcmp(argv[i], "--"); i++) {
        const char *eq = strchr(argv[i], '=');
        if (cmd_flag(&one, argv[i], eq ? (size_t)(eq - argv[i]) : strlen(argv[i]))) return true;
    }
    return false;
}

void td_command_free(const td_command_t *cmd, void *opts, td_strv_t *operands)
{
    for (size_t k = 0; opts && k < cmd->flag_cnt; k++) {
        if (cmd->flags[k].kind != TD_FLAG_LIST) continue;
        td_strv_t *sv = (td_strv_t *)((char *)opts + cmd->flags[k].off);
        free(sv->v);
        memset(sv, 0, sizeof(*sv));
    }
    if (operands) {
        free(operands->v);
        memset(operands, 0, sizeof(*operands));
    }
}

bool td_config_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--")) return false;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return true;
    }
    return false;
}

/* One option line of --help: left, then help, its further lines ("\n")
 * indented under the first (all of them under a long left). */
static void usage_line(FILE *out, const char *left, const char *help, const char *env)
{
    if (strlen(left) > 18) /* the help goes under it */
        fprintf(out, "  %s\n  %-18s ", left, "");
    else
        fprintf(out, "  %-18s ", left);
    for (const char *p = help;;) {
        size_t n = strcspn(p, "\n");
        fprintf(out, "%.*s", (int)n, p);
        if (!p[n]) break;
        p += n + 1;
        fprintf(out, "\n  %-18s ", "");
    }
    if (env) fprintf(out, " (%s)", env);
    fputc('\n', out);
}

/* The options and, with env, the environment: cmd's own flags (NULL:
 * none), the settings table's (--port only for a service), --help. */
static void usage_options(FILE *out, const td_command_t *cmd, const char *command, bool env)
{
    char left[64];
    for (size_t i = 0; cmd && i < cmd->flag_cnt; i++) {
        const td_flag_t *f = &cmd->flags[i];
        const char *mv = f->metavar ? f->metavar : "";
        if (f->alias)
            snprintf(left, sizeof(left), "%s%s%s, %s%s%s", f->flag, *mv ? " " : "", mv, f->alias,
                     *mv ? " " : "", mv);
        else
            snprintf(left, sizeof(left), "%s%s%s", f->flag, *mv ? " " : "", mv);
        usage_line(out, left, f->help, NULL);
    }
    bool port = td_service_from_name(command) >= 0 || !cmd;
    for (size_t i = 0; i < TD_ARRAY_SIZE(settings); i++) {
        const setting_t *s = &settings[i];
        if (!s->flag || (s->kind == SET_OWN_PORT && !port)) continue;
        snprintf(left, sizeof(left), "%s %s", s->flag, s->metavar);
        /* Without the environment's list below, the line says the default. */
        char env_def[96];
        if (!env && s->env && s->def)
            snprintf(env_def, sizeof(env_def), "%s, default %s", s->env, s->def);
        usage_line(out, left, s->help, !env && s->env && s->def ? env_def : s->env);
    }
    fprintf(out,
            "  %-18s this text\n"
            "Each option also takes the form --option=value.\n",
            "--help, -h");
    if (!env) {
        fputs("Without --brokers or TIDINGS_BROKERS, the brokers are the list in\n"
              "<data dir>/brokers, written by `tidings run` and `tidings broker`.\n",
              out);
        return;
    }
    fprintf(out, "\nenvironment (default):\n");
    for (size_t i = 0; i < TD_ARRAY_SIZE(settings); i++) {
        const setting_t *s = &settings[i];
        if (!s->env) continue;
        const char *shown = s->shown ? s->shown : s->def ? s->def : "(none)";
        fprintf(out, "  %-29s %s\n", s->env, shown);
    }
}

void td_config_usage(FILE *out, const char *command)
{
    fprintf(out, "usage: tidings %s [options]\n\noptions (they override the environment):\n",
            command ? command : "<command>");
    usage_options(out, NULL, command, true);
}

void td_config_usage_cmd(FILE *out, const td_command_t *cmd)
{
    if (cmd->usage)
        fputs(cmd->usage, out);
    else
        fprintf(out, "usage: tidings %s [options]\n", cmd->name);
    fprintf(out, "\noptions%s:\n", cmd->env_help ? " (they override the environment)" : "");
    usage_options(out, cmd, cmd->name, cmd->env_help);
    if (cmd->more) fputs(cmd->more, out);
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
