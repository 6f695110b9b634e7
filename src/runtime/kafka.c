/* The edge between tidings and librdkafka: the configuration every client
 * (relay producer, consumers, admin, CLI readers) shares, including the
 * operator's own client settings (TIDINGS_KAFKA_CONFIG, TIDINGS_KAFKA_*),
 * librdkafka's log lines routed into td_log with secrets scrubbed, and the
 * conversion of a consumed message into a plain td_record_t so that
 * everything past this file is Kafka-free. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/bus.h"
#include "tidings/log.h"

extern char **environ;

#define ENV_PREFIX  "TIDINGS_KAFKA_"
#define ENV_CONFIG  "TIDINGS_KAFKA_CONFIG"
#define SECRETS_MAX 16
/* librdkafka 2.6.1 stopped sending the client nonce twice in its SCRAM
 * client-final-message; Kafka 4.0 rejects the doubled one as invalid
 * credentials (librdkafka PR 4895). */
#define SCRAM_FIXED_VERSION 0x020601ff

/* Values of secret properties that were set, scrubbed from every line
 * librdkafka logs (its debug "conf" dump redacts only what it marks
 * sensitive, which is not every secret). Only ever grows. */
static pthread_mutex_t secrets_mu = PTHREAD_MUTEX_INITIALIZER;
static char *secrets[SECRETS_MAX];
static size_t secret_cnt;

static void remember_secret(const char *value)
{
    /* Shorter values would scrub ordinary words from every line. */
    if (strlen(value) < 4) return;
    pthread_mutex_lock(&secrets_mu);
    bool known = false;
    for (size_t i = 0; i < secret_cnt && !known; i++) known = !strcmp(secrets[i], value);
    if (!known && secret_cnt < SECRETS_MAX) secrets[secret_cnt++] = td_strdup(value);
    pthread_mutex_unlock(&secrets_mu);
}

/* Copies src to dst (size n), each remembered secret replaced by "***". */
static void scrub(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src);
    pthread_mutex_lock(&secrets_mu);
    for (size_t i = 0; i < secret_cnt; i++) {
        size_t slen = strlen(secrets[i]);
        char *hit;
        while ((hit = strstr(dst, secrets[i])) != NULL) {
            memmove(hit + 3, hit + slen, strlen(hit + slen) + 1);
            memcpy(hit, "***", 3);
        }
    }
    pthread_mutex_unlock(&secrets_mu);
}

/* librdkafka logs with syslog levels. Its level 3 lines are mostly
 * transient connection trouble it recovers from by itself, so they are
 * warnings here; the error_cb of each client says when it is serious. */
static void kafka_log_cb(const rd_kafka_t *rk, int level, const char *fac, const char *buf)
{
    int lvl = level <= 2 ? TD_LOG_ERROR : level <= 4 ? TD_LOG_WARN : TD_LOG_DEBUG;
    /* The relay asks for enable.gapless.guarantee on purpose (per-key
     * order); librdkafka's note that it is experimental is no news. */
    if (!strcmp(fac, "CONFWARN") && strstr(buf, "enable.gapless.guarantee")) lvl = TD_LOG_DEBUG;
    if (lvl < td_log_level()) return;
    char line[2048], clean[2048];
    snprintf(line, sizeof(line), "kafka %s: %s: %s", rk ? rd_kafka_name(rk) : "-", fac, buf);
    scrub(clean, sizeof(clean), line);
    td_log(lvl, "%s", clean);
}

bool td_kafka_secret_property(const char *name)
{
    static const char *const exact[] = {"ssl.key.pem", "sasl.oauthbearer.config"};
    static const char *const parts[] = {"password", "secret", "private", "token", "credential"};
    for (size_t i = 0; i < TD_ARRAY_SIZE(exact); i++)
        if (!strcmp(name, exact[i])) return true;
    for (size_t i = 0; i < TD_ARRAY_SIZE(parts); i++)
        if (strstr(name, parts[i])) return true;
    return false;
}

int td_kafka_set(rd_kafka_conf_t *conf, const char *name, const char *value, char *errstr,
                 size_t errlen)
{
    char kerr[512];
    if (rd_kafka_conf_set(conf, name, value, kerr, sizeof(kerr)) != RD_KAFKA_CONF_OK)
        return td_errf(errstr, errlen, TD_EINVAL, "kafka setting %s=%s: %s", name, value, kerr);
    return 0;
}

/* One user setting from `where` (a variable, or file:line). A secret value
 * is remembered for scrubbing and never put into errstr. */
static int user_set(rd_kafka_conf_t *conf, const char *where, const char *name, const char *value,
                    char *errstr, size_t errlen)
{
    char kerr[512], clean[512];
    if (!strcmp(name, "bootstrap.servers") || !strcmp(name, "metadata.broker.list"))
        return td_errf(errstr, errlen, TD_EINVAL,
                       "%s: %s: the brokers are given by TIDINGS_BROKERS or --brokers", where,
                       name);
    /* The outbox publishes with an idempotent producer and the inbox makes
     * redelivery harmless; a transactional producer would fail every
     * send, since nobody begins a transaction. */
    if (!strcmp(name, "transactional.id"))
        return td_errf(errstr, errlen, TD_EINVAL,
                       "%s: %s: tidings does not use Kafka transactions (the outbox and the "
                       "inbox carry correctness)",
                       where, name);
    bool secret = td_kafka_secret_property(name);
    if (secret) remember_secret(value);
    rd_kafka_conf_res_t res = rd_kafka_conf_set(conf, name, value, kerr, sizeof(kerr));
    if (res == RD_KAFKA_CONF_OK) return 0;
    scrub(clean, sizeof(clean), kerr);
    if (secret) return td_errf(errstr, errlen, TD_EINVAL, "%s: %s: %s", where, name, clean);
    return td_errf(errstr, errlen, TD_EINVAL, "%s: %s=%s: %s", where, name, value, clean);
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

/* The TIDINGS_KAFKA_CONFIG file: property=value lines as kcat -F reads
 * them; blank lines and lines starting with # are skipped. Errors name the
 * line, never its content (it may hold a password). */
static int apply_file(rd_kafka_conf_t *conf, const char *path, char *errstr, size_t errlen)
{
    size_t len;
    char *text = td_read_file(path, &len);
    if (!text)
        return td_errf(errstr, errlen, TD_EINVAL, ENV_CONFIG ": cannot read %s: %s", path,
                       strerror(errno));
    int rc = 0, lineno = 0;
    for (char *line = text, *next; line && rc == 0; line = next) {
        next = strchr(line, '\n');
        if (next) *next++ = '\0';
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        char where[300];
        snprintf(where, sizeof(where), ENV_CONFIG " %.200s line %d", path, lineno);
        char *eq = strchr(s, '=');
        if (!eq) {
            rc = td_errf(errstr, errlen, TD_EINVAL, "%s: not a property=value line", where);
            break;
        }
        *eq = '\0';
        char *name = trim(s), *value = trim(eq + 1);
        if (!*name) {
            rc = td_errf(errstr, errlen, TD_EINVAL, "%s: no property name before '='", where);
            break;
        }
        rc = user_set(conf, where, name, value, errstr, errlen);
    }
    memset(text, 0, len); /* it may hold a password */
    free(text);
    return rc;
}
int td_kafka_user_settings(rd_kafka_conf_t *conf, char *errstr, size_t errlen)
{
    const char *path = getenv(ENV_CONFIG);
    int rc;
    if (path && *path && (rc = apply_file(conf, path, errstr, errlen)) != 0) return rc;
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, ENV_PREFIX, strlen(ENV_PREFIX))) continue;
        const char *eq = strchr(*e, '=');
        if (!eq) continue;
        size_t vlen = (size_t)(eq - *e);
        if (vlen == strlen(ENV_CONFIG) && !strncmp(*e, ENV_CONFIG, vlen)) continue;
        const char *value = eq + 1;
        if (!*value) continue; /* VAR= is unset, as for every TIDINGS_ variable */
        char var[256], name[256];
        snprintf(var, sizeof(var), "%.*s", (int)(vlen < 200 ? vlen : 200), *e);
        const char *prop = var + strlen(ENV_PREFIX);
        if (!*prop) return td_errf(errstr, errlen, TD_EINVAL, "%s: no property name", var);
        size_t i = 0;
        for (; prop[i] && i + 1 < sizeof(name); i++)
            name[i] = prop[i] == '_' ? '.' : (char)tolower((unsigned char)prop[i]);
        name[i] = '\0';
        /* A few librdkafka names have underscores themselves (log_level):
         * when the dotted name is unknown and the underscored one is not,
         * that one is meant. */
        size_t sz = 0;
        if (rd_kafka_conf_get(conf, name, NULL, &sz) == RD_KAFKA_CONF_UNKNOWN) {
            char under[256];
            snprintf(under, sizeof(under), "%s", name);
            for (size_t k = 0; under[k]; k++)
                if (under[k] == '.') under[k] = '_';
            if (rd_kafka_conf_get(conf, under, NULL, &sz) != RD_KAFKA_CONF_UNKNOWN)
                memcpy(name, under, strlen(under) + 1);
        }
        if ((rc = user_set(conf, var, name, value, errstr, errlen)) != 0) return rc;
    }
    return 0;
}

int td_kafka_user_settings_check(bool *plaintext, char *errstr, size_t errlen)
{
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    int rc = td_kafka_user_settings(conf, errstr, errlen);
    char proto[64] = "plaintext";
    size_t sz = sizeof(proto);
    if (rc == 0 && plaintext)
        *plaintext = rd_kafka_conf_get(conf, "security.protocol", proto, &sz) != RD_KAFKA_CONF_OK ||
                     !strcmp(proto, "plaintext");
    rd_kafka_conf_destroy(conf);
    return rc;
}

/* Once per process: the SCRAM of librdkafka before 2.6.1 fails on Kafka 4. */
static void warn_old_scram(rd_kafka_conf_t *conf)
{
    static atomic_bool warned;
    char mech[64];
    size_t sz = sizeof(mech);
    if (rd_kafka_version() >= SCRAM_FIXED_VERSION ||
        rd_kafka_conf_get(conf, "sasl.mechanisms", mech, &sz) != RD_KAFKA_CONF_OK ||
        strncmp(mech, "SCRAM", 5) || atomic_exchange(&warned, true))
        return;
    td_warn("librdkafka %s sends a SCRAM nonce that Kafka 4.0 and later reject as invalid "
            "credentials (fixed in librdkafka 2.6.1); with such brokers use "
            "sasl.mechanism=PLAIN over SASL_SSL, or a newer librdkafka",
            rd_kafka_version_str());
}

rd_kafka_conf_t *td_kafka_conf(const td_config_t *cfg, char *errstr, size_t errlen)
{
    if (!cfg->brokers || !*cfg->brokers) {
        td_errf(errstr, errlen, TD_EINVAL,
                "no Kafka brokers: set TIDINGS_BROKERS or --brokers, or start `tidings broker` / "
                "`tidings run`");
        return NULL;
    }
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    char *client_id = td_asprintf("tidings-%s", cfg->service ? cfg->service : "cli");
    /* Defaults the operator's settings may change. A lost broker is
     * noticed and reconnected within about a second or two, which is what
     * /readyz and the relay's wake-up rely on; the librdkafka default backs
     * off up to 10 s. */
    if (td_kafka_set(conf, "client.id", client_id, errstr, errlen) != 0 ||
        td_kafka_set(conf, "reconnect.backoff.ms", "100", errstr, errlen) != 0 ||
        td_kafka_set(conf, "reconnect.backoff.max.ms", "2000", errstr, errlen) != 0 ||
        td_kafka_set(conf, "socket.keepalive.enable", "true", errstr, errlen) != 0 ||
        /* A service that started before Kafka let it create the topics
         * has consumers subscribed to topics that did not exist; they see
         * them at the next metadata refresh (librdkafka's default: 5 min). */
        td_kafka_set(conf, "topic.metadata.refresh.interval.ms", "10000", errstr, errlen) != 0)
        goto fail;
    /* The operator's: security, SASL, TLS, tuning, librdkafka's `debug`
     * (TIDINGS_KAFKA_DEBUG; its lines are logged at debug level). Each
     * client sets what its correctness depends on after this. */
    if (td_kafka_user_settings(conf, errstr, errlen) != 0) goto fail;
    if (td_kafka_set(conf, "bootstrap.servers", cfg->brokers, errstr, errlen) != 0) goto fail;
    warn_old_scram(conf);
    free(client_id);
    rd_kafka_conf_set_log_cb(conf, kafka_log_cb);
    return conf;

fail:
    free(client_id);
    rd_kafka_conf_destroy(conf);
    return NULL;
}

td_record_t *td_record_from_kafka(const rd_kafka_message_t *msg)
{
    td_record_t *rec = td_record_new(msg->rkt ? rd_kafka_topic_name(msg->rkt) : "");
    rec->partition = msg->partition;
    rec->offset = msg->offset;
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(msg, &tstype);
    rec->timestamp = tstype == RD_KAFKA_TIMESTAMP_NOT_AVAILABLE ? -1 : ts;
    if (msg->key) td_record_set_key(rec, msg->key, msg->key_len);
    if (msg->payload) td_record_set_value(rec, msg->payload, msg->len);

    rd_kafka_headers_t *hdrs = NULL;
    /* rd_kafka_message_headers parses lazily into the message, hence the
     * cast: the message is not changed in any way the caller could see. */
    if (rd_kafka_message_headers((rd_kafka_message_t *)msg, &hdrs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char *name;
        const void *value;
        size_t size;
        for (size_t i = 0;
             rd_kafka_header_get_all(hdrs, i, &name, &value, &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
             i++)
            td_record_add_header(rec, name, value, value ? size : 0);
    }
    return rec;
}

bool td_kafka_is_mock(const td_config_t *cfg, int timeout_ms)
{
    char err[512];
    rd_kafka_conf_t *conf = td_kafka_conf(cfg, err, sizeof(err));
    if (!conf) return false;
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return false;
    }
    char *id = rd_kafka_clusterid(rk, timeout_ms);
    /* rdkafka_mock.c names its clusters "mockCluster<hex>". */
    bool mock = id && !strncmp(id, "mockCluster", 11);
    if (id) rd_kafka_mem_free(rk, id);
    rd_kafka_destroy(rk);
    return mock;
}
