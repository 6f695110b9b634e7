/* The operator's Kafka client settings (SPEC section 1) in td_kafka_conf:
 * TIDINGS_KAFKA_<PROPERTY> variables and the TIDINGS_KAFKA_CONFIG file
 * (kcat -F format), the file read first and the variables over it, our
 * defaults under both, the brokers always from TIDINGS_BROKERS, errors that
 * name the variable or line and the property but never a secret value, and
 * secret values scrubbed even from librdkafka's own debug dump of its
 * configuration. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "tidings/bus.h"
#include "tidings/log.h"
#include "tsupport.h"

extern char **environ;

static char *dir;
static td_config_t cfg;
static char err[512];

/* Removes every TIDINGS_KAFKA_* variable the caller's environment has. */
static void clear_kafka_env(void)
{
    for (;;) {
        char name[256] = "";
        for (char **e = environ; *e; e++) {
            if (!strncmp(*e, "TIDINGS_KAFKA_", 14)) {
                snprintf(name, sizeof(name), "%.*s", (int)(strchr(*e, '=') - *e), *e);
                break;
            }
        }
        if (!*name) return;
        unsetenv(name);
    }
}

static int setup(void **state)
{
    (void)state;
    clear_kafka_env();
    dir = ts_tmpdir("test_kafka_conf");
    ts_config(&cfg, "orders", dir, "127.0.0.1:1");
    err[0] = '\0';
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    clear_kafka_env();
    td_config_free(&cfg);
    free(dir);
    return 0;
}

/* The value of name in conf ("" when unset). */
static const char *get(rd_kafka_conf_t *conf, const char *name)
{
    static char buf[512];
    size_t sz = sizeof(buf);
    if (rd_kafka_conf_get(conf, name, buf, &sz) != RD_KAFKA_CONF_OK) return "";
    return buf;
}

static char *write_conf_file(const char *text)
{
    char *path = td_asprintf("%s/client.properties", dir);
    assert_int_equal(td_write_file(path, text, strlen(text), 0600), 0);
    return path;
}

static void env_vars_reach_every_client(void **state)
{
    (void)state;
    setenv("TIDINGS_KAFKA_SECURITY_PROTOCOL", "SASL_SSL", 1);
    setenv("TIDINGS_KAFKA_SASL_MECHANISM", "PLAIN", 1);
    setenv("TIDINGS_KAFKA_SASL_USERNAME", "svc-orders", 1);
    setenv("TIDINGS_KAFKA_SASL_PASSWORD", "s3cret-pass", 1);
    setenv("TIDINGS_KAFKA_SOCKET_TIMEOUT_MS", "12345", 1);
    setenv("TIDINGS_KAFKA_RECONNECT_BACKOFF_MAX_MS", "4000", 1); /* over our default */
    setenv("TIDINGS_KAFKA_LOG_LEVEL", "6", 1);                   /* librdkafka's log_level */
    setenv("TIDINGS_KAFKA_CLIENT_RACK", "", 1);                  /* empty = unset */
    rd_kafka_conf_t *conf = td_kafka_conf(&cfg, err, sizeof(err));
    assert_non_null(conf);
    assert_string_equal(get(conf, "security.protocol"), "sasl_ssl");
    assert_string_equal(get(conf, "sasl.mechanisms"), "PLAIN");
    assert_string_equal(get(conf, "sasl.username"), "svc-orders");
    assert_string_equal(get(conf, "sasl.password"), "s3cret-pass");
    assert_string_equal(get(conf, "socket.timeout.ms"), "12345");
    assert_string_equal(get(conf, "reconnect.backoff.max.ms"), "4000");
    assert_string_equal(get(conf, "reconnect.backoff.ms"), "100"); /* ours, not overridden */
    assert_string_equal(get(conf, "log_level"), "6");
    assert_string_equal(get(conf, "client.id"), "tidings-orders");
    assert_string_equal(get(conf, "bootstrap.servers"), "127.0.0.1:1");
    rd_kafka_conf_destroy(conf);
}

static void debug_is_a_property_like_any_other(void **state)
{
    (void)state;
    setenv("TIDINGS_KAFKA_DEBUG", "cgrp,fetch", 1);
    rd_kafka_conf_t *conf = td_kafka_conf(&cfg, err, sizeof(err));
    assert_non_null(conf);
    assert_string_equal(get(conf, "debug"), "cgrp,fetch");
    rd_kafka_conf_destroy(conf);
    setenv("TIDINGS_KAFKA_DEBUG", "cgrp,nosuchcontext", 1);
    assert_null(td_kafka_conf(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "TIDINGS_KAFKA_DEBUG: debug=cgrp,nosuchcontext: "));
}

static void unknown_property_names_variable_and_property(void **state)
{
    (void)state;
    setenv("TIDINGS_KAFKA_SASL_MECHANISMZ", "PLAIN", 1);
    assert_null(td_kafka_conf(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "TIDINGS_KAFKA_SASL_MECHANISMZ: sasl.mechanismz=PLAIN: "));
    assert_non_null(strstr(err, "No such configuration property"));
}

static void bad_value_names_it(void **state)
{
    (void)state;
    setenv("TIDINGS_KAFKA_SECURITY_PROTOCOL", "SASL_TLS", 1);
    assert_null(td_kafka_conf(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "TIDINGS_KAFKA_SECURITY_PROTOCOL: security.protocol=SASL_TLS: "));
    assert_non_null(strstr(err, "Invalid value"));
    unsetenv("TIDINGS_KAFKA_SECURITY_PROTOCOL");
    setenv("TIDINGS_KAFKA_SOCKET_TIMEOUT_MS", "soon", 1);
    assert_null(td_kafka_conf(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "TIDINGS_KAFKA_SOCKET_TIMEOUT_MS: socket.timeout.ms=soon: "));
}

static void secret_value_never_in_an_error(void **state)
{
    (void)state;
    /* Unknown, but named like a secret: the error has the name only. */
    setenv("TIDINGS_KAFKA_SSL_KEYSTORE_PASSWORDS", "hunter2-hunter2", 1);
    assert_null(td_kafka_conf(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "TIDINGS_KAFKA_SSL_KEYSTORE_PASSWORDS: ssl.keystore.passwords: "));
    assert_null(strstr(err, "hunter2"));
    assert_true(td_kafka_secret_property("sasl.password"));
    assert_true(td_kafka_secret_property("ssl.key.password"));
    assert_true(td_kafka_secret_property("ssl.keystore.password"));
    assert_true(td_kafka_secret_property("sasl.oauthbearer.client.secret"));
    assert_true(td_kafka_secret_property("ssl.key.pem"));
    assert_true(td_kafka_secret_property("sasl.oauthbearer.config"));
    assert_false(td_kafka_secret_property("sasl.username"));
    assert_false(td_kafka_secret_property("ssl.ca.location"));
}

static void brokers_and_transactions_are_not_settings(void **state)
{
    (void)state;
    setenv("TIDINGS_KAFKA_BOOTSTRAP_SERVERS", "elsewhere:9092", 1);
    assert_null(td_kafka_conf(&cfg, err, sizeof(err)));
    assert_string_equal(err, "TIDINGS_KAFKA_BOOTSTRAP_SERVERS: bootstrap.servers: the brokers are "
                             "given by TIDINGS_BROKERS or --brokers");
    unsetenv("TIDINGS_KAFKA_BOOTSTRAP_SERVERS");
    setenv("TIDINGS_KAFKA_TRANSACTIONAL_ID", "tx-1", 1);
    assert_null(td_kafka_conf(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "TIDINGS_KAFKA_TRANSACTIONAL_ID: transactional.id: tidings does "
                                "not use Kafka transactions"));
}

static void file_first_then_variables(void **state)
{
    (void)state;
    char *path = write_conf_file("# a kcat -F file\n"
                                 "\n"
                                 "security.protocol = SASL_SSL\r\n"
                                 "  sasl.mechanism=SCRAM-SHA-512\n"
                                 "sasl.username=from-file\n"
                                 "sasl.password=pass=with=equals\n"
                                 "   # indented comment\n"
                                 "socket.timeout.ms=20000\n");
    setenv("TIDINGS_KAFKA_CONFIG", path, 1);
    setenv("TIDINGS_KAFKA_SASL_USERNAME", "from-env", 1);
    rd_kafka_conf_t *conf = td_kafka_conf(&cfg, err, sizeof(err));
    assert_non_null(conf);
    assert_string_equal(get(conf, "security.protocol"), "sasl_ssl");
    assert_string_equal(get(conf, "sasl.mechanisms"), "SCRAM-SHA-512");
    assert_string_equal(get(conf, "sasl.username"), "from-env");
    assert_string_equal(get(conf, "sasl.password"), "pass=with=equals");
    assert_string_equal(get(conf, "socket.timeout.ms"), "20000");
    rd_kafka_conf_destroy(conf);
    free(path);
}

static void file_errors_name_the_line_not_its_content(void **state)
{
    (void)state;
    char *path = write_conf_file("security.protocol=SASL_SSL\n"
                                 "# comment\n"
                                 "sasl.password hunter2-hunter2\n");
    setenv("TIDINGS_KAFKA_CONFIG", path, 1);
    assert_null(td_kafka_conf(&cfg, err, sizeof(err)));
    char *want = td_asprintf("TIDINGS_KAFKA_CONFIG %s line 3: not a property=value line", path);
    assert_string_equal(err, want);
    free(want);
    free(path);

    path = write_conf_file("socket.timeout.ms=1000\nno.such.property=1\n");
    setenv("TIDINGS_KAFKA_CONFIG", path, 1);
    assert_null(td_kafka_conf(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "line 2: no.such.property=1: No such configuration property"));
    free(path);

    path = write_conf_file("=value\n");
    setenv("TIDINGS_KAFKA_CONFIG", path, 1);
    assert_null(td_kafka_conf(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "line 1: no property name before '='"));
    free(path);

    /* A kcat file with the brokers in it is not taken silently. */
    path = write_conf_file("bootstrap.servers=kafka:9092\n");
    setenv("TIDINGS_KAFKA_CONFIG", path, 1);
    assert_null(td_kafka_conf(&cfg, err, sizeof(err)));
    assert_non_null(strstr(err, "line 1: bootstrap.servers: the brokers are given by"));
    free(path);

    setenv("TIDINGS_KAFKA_CONFIG", "/nonexistent/client.properties", 1);
    assert_null(td_kafka_conf(&cfg, err, sizeof(err)));
    assert_string_equal(err, "TIDINGS_KAFKA_CONFIG: cannot read /nonexistent/client.properties: "
                             "No such file or directory");
}

/* librdkafka's debug=conf dump of a client's configuration, and every
 * other line it logs, never holds a secret value: librdkafka redacts what
 * it marks sensitive (sasl.password), and td_kafka_conf scrubs the values
 * of every secret property from each line besides (not all of them are
 * marked: sasl.oauthbearer.client.secret is not in librdkafka 2.x). */
static void secrets_scrubbed_from_librdkafka_logs(void **state)
{
    (void)state;
    char *path = td_asprintf("%s/log", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0600);
    assert_true(fd >= 0);
    td_log_init("orders", TD_LOG_DEBUG, true);
    td_log_set_fd(fd);
    setenv("TIDINGS_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT", 1);
    setenv("TIDINGS_KAFKA_SASL_MECHANISM", "PLAIN", 1);
    setenv("TIDINGS_KAFKA_SASL_USERNAME", "svc", 1);
    setenv("TIDINGS_KAFKA_SASL_PASSWORD", "pw-0123456789-pw", 1);
    setenv("TIDINGS_KAFKA_SSL_KEY_PASSWORD", "kp-9876543210-kp", 1);
    setenv("TIDINGS_KAFKA_DEBUG", "conf,generic", 1);
    /* A secret that also turns up where librdkafka does not redact: the
     * dump shows client.id as it is, so only the scrub can hide it. */
    setenv("TIDINGS_KAFKA_CLIENT_ID", "kp-9876543210-kp", 1);
    rd_kafka_conf_t *conf = td_kafka_conf(&cfg, err, sizeof(err));
    assert_non_null(conf);
    char kerr[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, kerr, sizeof(kerr));
    assert_non_null(rk);
    rd_kafka_destroy(rk);
    td_log_set_fd(2);
    close(fd);
    char *logs = td_read_file(path, NULL);
    assert_non_null(logs);
    assert_non_null(strstr(logs, "sasl.mechanisms = PLAIN")); /* the dump is there */
    assert_null(strstr(logs, "pw-0123456789-pw"));
    assert_null(strstr(logs, "kp-9876543210-kp"));
    assert_non_null(strstr(logs, "client.id = ***"));
    free(logs);
    unlink(path);
    free(path);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(env_vars_reach_every_client),
        T(debug_is_a_property_like_any_other),
        T(unknown_property_names_variable_and_property),
        T(bad_value_names_it),
        T(secret_value_never_in_an_error),
        T(brokers_and_transactions_are_not_settings),
        T(file_first_then_variables),
        T(file_errors_name_the_line_not_its_content),
        T(secrets_scrubbed_from_librdkafka_logs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
