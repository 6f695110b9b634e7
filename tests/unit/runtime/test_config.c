/* Configuration: SPEC defaults, every environment variable, flags over the
 * environment in both "--flag value" and "--flag=value" forms, the exact
 * error messages for bad values, the embedded-broker file, and the token
 * secret (from the environment, or generated once into the data dir even
 * when several processes race to create it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "tidings/config.h"
#include "tsupport.h"

static const char *const vars[] = {
    "TIDINGS_BROKERS",
    "TIDINGS_DATA_DIR",
    "TIDINGS_SECRET",
    "TIDINGS_TOPIC_PREFIX",
    "TIDINGS_PARTITIONS",
    "TIDINGS_REPLICATION",
    "TIDINGS_RETENTION_MS",
    "TIDINGS_PAYMENT_LIMIT",
    "TIDINGS_LOG_LEVEL",
    "TIDINGS_LOG_FORMAT",
    "TIDINGS_ADMIN_PASSWORD",
    "TIDINGS_ALLOW_HTTP_ENDPOINTS",
    "TIDINGS_DELIVERY_MAX_ATTEMPTS",
    "TIDINGS_DELIVERY_BACKOFF_MS",
    "TIDINGS_FETCH_WAIT_MS",
    "TIDINGS_LISTEN_ADDR",
    "TIDINGS_VAPID_SUBJECT",
    "TIDINGS_USERS_PORT",
    "TIDINGS_PRODUCTS_PORT",
    "TIDINGS_ORDERS_PORT",
    "TIDINGS_PAYMENTS_PORT",
    "TIDINGS_NOTIFICATIONS_PORT",
    "TIDINGS_WEB_PORT",
};

static char *dir; /* a fresh data dir per test */

static int setup(void **state)
{
    (void)state;
    for (size_t i = 0; i < TD_ARRAY_SIZE(vars); i++) unsetenv(vars[i]);
    dir = ts_tmpdir("test_config");
    setenv("TIDINGS_DATA_DIR", dir, 1); /* never read ./data of the caller */
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < TD_ARRAY_SIZE(vars); i++) unsetenv(vars[i]);
    char *cmd = td_asprintf("rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(dir);
    return 0;
}

/* td_config_load with a NULL-terminated list of flags. */
static int load(td_config_t *cfg, const char *service, char *err, size_t errlen, ...)
{
    char *argv[32] = {"tidings"};
    int argc = 1;
    va_list ap;
    va_start(ap, errlen);
    for (const char *a; (a = va_arg(ap, const char *));) argv[argc++] = (char *)a;
    va_end(ap);
    err[0] = '\0';
    return td_config_load(cfg, service, argc, argv, NULL, err, errlen);
}

static void expect_error(const char *service, const char *want, ...)
{
    char *argv[32] = {"tidings"};
    int argc = 1;
    va_list ap;
    va_start(ap, want);
    for (const char *a; (a = va_arg(ap, const char *));) argv[argc++] = (char *)a;
    va_end(ap);
    td_config_t cfg;
    char err[256] = "";
    assert_int_equal(td_config_load(&cfg, service, argc, argv, NULL, err, sizeof(err)), TD_EINVAL);
    assert_string_equal(err, want);
    td_config_free(&cfg); /* harmless after a failed load */
}

static void expect_env_error(const char *var, const char *value, const char *want)
{
    setenv(var, value, 1);
    expect_error("orders", want, NULL);
    unsetenv(var);
}

static void test_defaults(void **state)
{
    (void)state;
    unsetenv("TIDINGS_DATA_DIR");
    td_config_t cfg;
    td_config_defaults(&cfg);
    assert_null(cfg.brokers);
    assert_false(cfg.brokers_embedded);
    assert_string_equal(cfg.data_dir, "./data");
    assert_string_equal(cfg.topic_prefix, "tidings.");
    assert_int_equal(cfg.partitions, 6);
    assert_int_equal(cfg.replication, 0);
    assert_int_equal(cfg.retention_ms, 604800000);
    assert_int_equal(cfg.payment_limit, 500000);
    assert_int_equal(cfg.log_level, TD_LOG_INFO);
    assert_true(cfg.log_json);
    assert_null(cfg.admin_password);
    assert_false(cfg.allow_http_endpoints);
    assert_int_equal(cfg.delivery_max_attempts, 8);
    assert_int_equal(cfg.delivery_backoff_ms, 1000);
    assert_string_equal(cfg.listen_addr, "127.0.0.1");
    assert_string_equal(cfg.vapid_subject, "mailto:admin@tidings.local");
    assert_int_equal(td_config_port(&cfg, TD_SVC_WEB), 8080);
    assert_int_equal(td_config_port(&cfg, TD_SVC_USERS), 8081);
    assert_int_equal(td_config_port(&cfg, TD_SVC_PRODUCTS), 8082);
    assert_int_equal(td_config_port(&cfg, TD_SVC_ORDERS), 8083);
    assert_int_equal(td_config_port(&cfg, TD_SVC_PAYMENTS), 8084);
    assert_int_equal(td_config_port(&cfg, TD_SVC_NOTIFICATIONS), 8085);
    td_config_free(&cfg);

    /* A load with nothing set gives the same, and the not-embedded fetch wait. */
    setenv("TIDINGS_DATA_DIR", dir, 1);
    char err[256];
    assert_int_equal(load(&cfg, "orders", err, sizeof(err), NULL), 0);
    assert_string_equal(cfg.service, "orders");
    assert_string_equal(cfg.data_dir, dir);
    assert_null(cfg.brokers);
    assert_int_equal(cfg.fetch_wait_ms, 100);
    assert_int_equal(cfg.partitions, 6);
    td_config_free(&cfg);
}

static void test_env(void **state)
{
    (void)state;
    setenv("TIDINGS_BROKERS", "k1:9092,k2:9092", 1);
    setenv("TIDINGS_TOPIC_PREFIX", "shop-", 1);
    setenv("TIDINGS_PARTITIONS", "12", 1);
    setenv("TIDINGS_REPLICATION", "2", 1);
    setenv("TIDINGS_RETENTION_MS", "-1", 1);
    setenv("TIDINGS_PAYMENT_LIMIT", "1234.5", 1);
    setenv("TIDINGS_LOG_LEVEL", "debug", 1);
    setenv("TIDINGS_LOG_FORMAT", "text", 1);
    setenv("TIDINGS_ADMIN_PASSWORD", "hunter2hunter2", 1);
    setenv("TIDINGS_ALLOW_HTTP_ENDPOINTS", "1", 1);
    setenv("TIDINGS_DELIVERY_MAX_ATTEMPTS", "3", 1);
    setenv("TIDINGS_DELIVERY_BACKOFF_MS", "10", 1);
    setenv("TIDINGS_FETCH_WAIT_MS", "7", 1);
    setenv("TIDINGS_LISTEN_ADDR", "0.0.0.0", 1);
    setenv("TIDINGS_VAPID_SUBJECT", "https://shop.example", 1);
    setenv("TIDINGS_ORDERS_PORT", "9083", 1);
    setenv("TIDINGS_WEB_PORT", "9080", 1);
    td_config_t cfg;
    char err[256];
    assert_int_equal(load(&cfg, "orders", err, sizeof(err), NULL), 0);
    assert_string_equal(cfg.brokers, "k1:9092,k2:9092");
    assert_false(cfg.brokers_embedded);
    assert_string_equal(cfg.topic_prefix, "shop-");
    assert_int_equal(cfg.partitions, 12);
    assert_int_equal(cfg.replication, 2);
    assert_int_equal(cfg.retention_ms, -1);
    assert_int_equal(cfg.payment_limit, 123450);
    assert_int_equal(cfg.log_level, TD_LOG_DEBUG);
    assert_false(cfg.log_json);
    assert_string_equal(cfg.admin_password, "hunter2hunter2");
    assert_true(cfg.allow_http_endpoints);
    assert_int_equal(cfg.delivery_max_attempts, 3);
    assert_int_equal(cfg.delivery_backoff_ms, 10);
    assert_int_equal(cfg.fetch_wait_ms, 7);
    assert_string_equal(cfg.listen_addr, "0.0.0.0");
    assert_string_equal(cfg.vapid_subject, "https://shop.example");
    assert_int_equal(td_config_port(&cfg, TD_SVC_ORDERS), 9083);
    assert_int_equal(td_config_port(&cfg, TD_SVC_WEB), 9080);
    assert_int_equal(td_config_port(&cfg, TD_SVC_USERS), 8081);
    char *t = td_topic_name(&cfg, "orders");
    assert_string_equal(t, "shop-orders");
    free(t);
    td_config_free(&cfg);

    /* An empty prefix is allowed; other empty values count as unset. */
    setenv("TIDINGS_TOPIC_PREFIX", "", 1);
    setenv("TIDINGS_PARTITIONS", "", 1);
    assert_int_equal(load(&cfg, "orders", err, sizeof(err), NULL), 0);
    assert_string_equal(cfg.topic_prefix, "");
    assert_int_equal(cfg.partitions, 6);
    td_config_free(&cfg);
}

static void test_env_errors(void **state)
{
    (void)state;
    expect_env_error("TIDINGS_ORDERS_PORT", "abc",
                     "TIDINGS_ORDERS_PORT: 'abc' is not a port (1-65535)");
    expect_env_error("TIDINGS_ORDERS_PORT", "0",
                     "TIDINGS_ORDERS_PORT: '0' is not a port (1-65535)");
    expect_env_error("TIDINGS_USERS_PORT", "65536",
                     "TIDINGS_USERS_PORT: '65536' is not a port (1-65535)");
    expect_env_error("TIDINGS_WEB_PORT", "80x", "TIDINGS_WEB_PORT: '80x' is not a port (1-65535)");
    expect_env_error("TIDINGS_LOG_LEVEL", "loud",
                     "TIDINGS_LOG_LEVEL: 'loud' is not one of debug, info, warn, error");
    expect_env_error("TIDINGS_LOG_FORMAT", "xml",
                     "TIDINGS_LOG_FORMAT: 'xml' is not one of json, text");
    expect_env_error("TIDINGS_PARTITIONS", "0",
                     "TIDINGS_PARTITIONS: '0' is not an integer from 1 to 10000");
    expect_env_error("TIDINGS_PARTITIONS", " 6",
                     "TIDINGS_PARTITIONS: ' 6' is not an integer from 1 to 10000");
    expect_env_error("TIDINGS_REPLICATION", "three",
                     "TIDINGS_REPLICATION: 'three' is not an integer from 1 to 32767");
    expect_env_error("TIDINGS_RETENTION_MS", "99999999999999999999",
                     "TIDINGS_RETENTION_MS: '99999999999999999999' is not an integer from 1 to "
                     "9223372036854775807");
    expect_env_error("TIDINGS_PAYMENT_LIMIT", "12.345",
                     "TIDINGS_PAYMENT_LIMIT: '12.345' is not an amount >= 0 with at most 2 "
                     "decimals");
    expect_env_error("TIDINGS_PAYMENT_LIMIT", "-5",
                     "TIDINGS_PAYMENT_LIMIT: '-5' is not an amount "
                     ">= 0 with at most 2 decimals");
    expect_env_error("TIDINGS_PAYMENT_LIMIT", "1e3",
                     "TIDINGS_PAYMENT_LIMIT: '1e3' is not an "
                     "amount >= 0 with at most 2 decimals");
    expect_env_error("TIDINGS_PAYMENT_LIMIT", "5.",
                     "TIDINGS_PAYMENT_LIMIT: '5.' is not an amount "
                     ">= 0 with at most 2 decimals");
    expect_env_error("TIDINGS_ALLOW_HTTP_ENDPOINTS", "yes",
                     "TIDINGS_ALLOW_HTTP_ENDPOINTS: 'yes' is not 0 or 1");
    expect_env_error("TIDINGS_DELIVERY_MAX_ATTEMPTS", "0",
                     "TIDINGS_DELIVERY_MAX_ATTEMPTS: '0' is not an integer from 1 to 1000");
    expect_env_error("TIDINGS_FETCH_WAIT_MS", "-1",
                     "TIDINGS_FETCH_WAIT_MS: '-1' is not an integer from 0 to 300000");
    expect_env_error("TIDINGS_LISTEN_ADDR", "my host",
                     "TIDINGS_LISTEN_ADDR: 'my host' is not an IP address");
    expect_env_error("TIDINGS_TOPIC_PREFIX", "a b",
                     "TIDINGS_TOPIC_PREFIX: 'a b' may only hold letters, digits, '.', '_' and '-'");
    expect_env_error("TIDINGS_VAPID_SUBJECT", "admin@x",
                     "TIDINGS_VAPID_SUBJECT: 'admin@x' is not a mailto: or https:// URI");
}

static void test_payment_limit_values(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int64_t cents;
    } cases[] = {{"5000.00", 500000}, {"0", 0}, {"0.01", 1}, {"19.9", 1990}, {"1129", 112900}};
    for (size_t i = 0; i < TD_ARRAY_SIZE(cases); i++) {
        setenv("TIDINGS_PAYMENT_LIMIT", cases[i].text, 1);
        td_config_t cfg;
        char err[256];
        assert_int_equal(load(&cfg, NULL, err, sizeof(err), NULL), 0);
        assert_int_equal(cfg.payment_limit, cases[i].cents);
        td_config_free(&cfg);
    }
}

static void test_flags(void **state)
{
    (void)state;
    char *other = td_asprintf("%s/other", dir);
    setenv("TIDINGS_BROKERS", "env:1", 1);
    setenv("TIDINGS_ORDERS_PORT", "9000", 1);
    setenv("TIDINGS_LOG_LEVEL", "error", 1);
    setenv("TIDINGS_LISTEN_ADDR", "127.0.0.1", 1);
    td_config_t cfg;
    char err[256];
    assert_int_equal(load(&cfg, "orders", err, sizeof(err), "--brokers", "flag:2", "--data", other,
                          "--port=9100", "--log-level", "warn", "--listen=::1", NULL),
                     0);
    assert_string_equal(cfg.brokers, "flag:2");
    assert_string_equal(cfg.data_dir, other);
    assert_int_equal(td_config_port(&cfg, TD_SVC_ORDERS), 9100);
    assert_int_equal(td_config_port(&cfg, TD_SVC_PAYMENTS), 8084);
    assert_int_equal(cfg.log_level, TD_LOG_WARN);
    assert_string_equal(cfg.listen_addr, "::1");
    char *p = td_data_path(&cfg, "orders.db");
    char *want = td_asprintf("%s/orders.db", other);
    assert_string_equal(p, want);
    free(p);
    free(want);
    td_config_free(&cfg);

    assert_int_equal(load(&cfg, "orders", err, sizeof(err), "--brokers=eq:3", NULL), 0);
    assert_string_equal(cfg.brokers, "eq:3");
    assert_int_equal(td_config_port(&cfg, TD_SVC_ORDERS), 9000); /* env, no flag */
    td_config_free(&cfg);
    free(other);
}

static void test_flag_errors(void **state)
{
    (void)state;
    expect_error("orders", "unknown option '--frob'", "--frob", NULL);
    expect_error("orders", "unknown option '--frob'", "--frob=1", NULL);
    expect_error("orders", "unknown option '-x'", "-x", NULL);
    expect_error("orders", "--brokers needs a value", "--brokers", NULL);
    expect_error("orders", "--port: 'abc' is not a port (1-65535)", "--port", "abc", NULL);
    expect_error("orders", "--port: '70000' is not a port (1-65535)", "--port=70000", NULL);
    expect_error("orders", "--log-level: 'loud' is not one of debug, info, warn, error",
                 "--log-level=loud", NULL);
    expect_error("orders", "--data: the value is empty", "--data=", NULL);
    expect_error("orders", "--listen: 'nowhere' is not an IP address", "--listen", "nowhere", NULL);
    expect_error(NULL, "--port: this command has no HTTP port", "--port", "1", NULL);
    expect_error("run", "--port: 'run' has no HTTP port", "--port", "1", NULL);
    expect_error("orders", "unexpected argument 'extra'", "extra", NULL);
    /* A bad env value is reported even when a flag would override it. */
    setenv("TIDINGS_ORDERS_PORT", "abc", 1);
    expect_error("orders", "TIDINGS_ORDERS_PORT: 'abc' is not a port (1-65535)", "--port", "1",
                 NULL);
}

static void test_positional(void **state)
{
    (void)state;
    char *argv[] = {"trace", "--brokers", "b:1", "abc-id", "--not-a-flag", NULL};
    td_config_t cfg;
    char err[256];
    int argi = -1;
    assert_int_equal(td_config_load(&cfg, NULL, 5, argv, &argi, err, sizeof(err)), 0);
    assert_int_equal(argi, 3);
    assert_string_equal(cfg.brokers, "b:1");
    td_config_free(&cfg);

    char *argv2[] = {"trace", "--", "--brokers", NULL};
    assert_int_equal(td_config_load(&cfg, NULL, 3, argv2, &argi, err, sizeof(err)), 0);
    assert_int_equal(argi, 2);
    assert_null(cfg.brokers);
    td_config_free(&cfg);

    char *argv3[] = {"run", NULL};
    assert_int_equal(td_config_load(&cfg, NULL, 1, argv3, &argi, err, sizeof(err)), 0);
    assert_int_equal(argi, 1);
    td_config_free(&cfg);
}

static void test_brokers_file(void **state)
{
    (void)state;
    char *path = td_asprintf("%s/brokers", dir);
    static const char list[] = "127.0.0.1:39001,127.0.0.1:39002\n";
    assert_int_equal(td_write_file(path, list, strlen(list), 0644), 0);
    td_config_t cfg;
    char err[256];
    assert_int_equal(load(&cfg, "users", err, sizeof(err), NULL), 0);
    assert_string_equal(cfg.brokers, "127.0.0.1:39001,127.0.0.1:39002");
    assert_true(cfg.brokers_embedded);
    assert_int_equal(cfg.fetch_wait_ms, 1);
    td_config_free(&cfg);

    setenv("TIDINGS_FETCH_WAIT_MS", "50", 1);
    assert_int_equal(load(&cfg, "users", err, sizeof(err), NULL), 0);
    assert_true(cfg.brokers_embedded);
    assert_int_equal(cfg.fetch_wait_ms, 50);
    td_config_free(&cfg);
    unsetenv("TIDINGS_FETCH_WAIT_MS");

    /* Brokers given explicitly win over the file. */
    assert_int_equal(load(&cfg, "users", err, sizeof(err), "--brokers", "real:9092", NULL), 0);
    assert_string_equal(cfg.brokers, "real:9092");
    assert_false(cfg.brokers_embedded);
    assert_int_equal(cfg.fetch_wait_ms, 100);
    td_config_free(&cfg);
    free(path);
}

static void test_secret_generated_once(void **state)
{
    (void)state;
    char *data = td_asprintf("%s/nested/data", dir); /* does not exist yet */
    td_config_t cfg;
    char err[256];
    assert_int_equal(load(&cfg, "users", err, sizeof(err), "--data", data, NULL), 0);
    assert_int_equal(td_config_load_secret(&cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.secret_len, 48);
    for (size_t i = 0; i < cfg.secret_len; i++)
        assert_non_null(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                               cfg.secret[i]));
    char *path = td_asprintf("%s/secret", data);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 48);

    /* Loaded again (another service, a restart): the same key. */
    td_config_t again;
    assert_int_equal(load(&again, "orders", err, sizeof(err), "--data", data, NULL), 0);
    assert_int_equal(td_config_load_secret(&again, err, sizeof(err)), 0);
    assert_int_equal(again.secret_len, cfg.secret_len);
    assert_memory_equal(again.secret, cfg.secret, cfg.secret_len);
    td_config_free(&again);
    td_config_free(&cfg);

    /* No temporary files are left behind. */
    char *cmd = td_asprintf("test $(ls -A '%s' | wc -l) -eq 1", data);
    assert_int_equal(system(cmd), 0);
    free(cmd);
    free(path);
    free(data);
}

static void test_secret_race(void **state)
{
    (void)state;
    char *data = td_asprintf("%s/race", dir);
    enum { N = 8 };
    int fds[N][2];
    pid_t pids[N];
    for (int i = 0; i < N; i++) {
        assert_int_equal(pipe(fds[i]), 0);
        pids[i] = fork();
        assert_true(pids[i] >= 0);
        if (pids[i] == 0) {
            td_config_t cfg;
            char err[256];
            char *argv[] = {"x", "--data", data, NULL};
            if (td_config_load(&cfg, NULL, 3, argv, NULL, err, sizeof(err)) ||
                td_config_load_secret(&cfg, err, sizeof(err)))
                _exit(1);
            ssize_t w = write(fds[i][1], cfg.secret, cfg.secret_len);
            _exit(w == (ssize_t)cfg.secret_len ? 0 : 1);
        }
        close(fds[i][1]);
    }
    char first[64] = "", got[64];
    for (int i = 0; i < N; i++) {
        int status;
        assert_int_equal(waitpid(pids[i], &status, 0), pids[i]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        memset(got, 0, sizeof(got));
        assert_int_equal(read(fds[i][0], got, sizeof(got) - 1), 48);
        close(fds[i][0]);
        if (i == 0) memcpy(first, got, sizeof(first));
        assert_string_equal(got, first); /* every process got the same key */
    }
    free(data);
}

static void test_secret_env(void **state)
{
    (void)state;
    td_config_t cfg;
    char err[256];
    assert_int_equal(load(&cfg, "users", err, sizeof(err), NULL), 0);
    setenv("TIDINGS_SECRET", "too-short", 1);
    assert_int_equal(td_config_load_secret(&cfg, err, sizeof(err)), TD_EINVAL);
    assert_string_equal(err, "TIDINGS_SECRET: must be at least 32 bytes, not 9");
    assert_null(cfg.secret);

    setenv("TIDINGS_SECRET", "0123456789abcdef0123456789abcdef", 1);
    assert_int_equal(td_config_load_secret(&cfg, err, sizeof(err)), 0);
    assert_int_equal(cfg.secret_len, 32);
    assert_memory_equal(cfg.secret, "0123456789abcdef0123456789abcdef", 32);
    td_config_free(&cfg);
    /* The env secret is used as is: no file is written. */
    char *path = td_asprintf("%s/secret", dir);
    assert_int_not_equal(access(path, F_OK), 0);
    free(path);
}

static void test_secret_file_too_short(void **state)
{
    (void)state;
    char *path = td_asprintf("%s/secret", dir);
    assert_int_equal(td_write_file(path, "short\n", 6, 0600), 0);
    td_config_t cfg;
    char err[256];
    assert_int_equal(load(&cfg, "users", err, sizeof(err), NULL), 0);
    assert_int_equal(td_config_load_secret(&cfg, err, sizeof(err)), TD_EINVAL);
    assert_non_null(strstr(err, "at least 32 bytes"));
    td_config_free(&cfg);
    free(path);
}

static void test_names_help_usage(void **state)
{
    (void)state;
    assert_string_equal(td_service_name(TD_SVC_NOTIFICATIONS), "notifications");
    assert_int_equal(td_service_from_name("payments"), TD_SVC_PAYMENTS);
    assert_int_equal(td_service_from_name("nope"), -1);
    assert_int_equal(td_service_from_name(NULL), -1);
    static const char *const want[] = {
        "users", "products", "reservations", "orders", "payments", "notifications", NULL};
    for (size_t i = 0; i < TD_ARRAY_SIZE(want); i++) {
        if (!want[i]) {
            assert_null(td_topics[i].name);
            break;
        }
        assert_string_equal(td_topics[i].name, want[i]);
    }

    char *a1[] = {"orders", "--port", "1", "--help", NULL};
    char *a2[] = {"orders", "-h", NULL};
    char *a3[] = {"orders", "--", "--help", NULL};
    char *a4[] = {"orders", "--port", "1", NULL};
    assert_true(td_config_wants_help(4, a1));
    assert_true(td_config_wants_help(2, a2));
    assert_false(td_config_wants_help(3, a3));
    assert_false(td_config_wants_help(3, a4));

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    td_config_usage(f, "orders");
    fclose(f);
    assert_non_null(strstr(text, "tidings orders"));
    assert_non_null(strstr(text, "--brokers"));
    assert_non_null(strstr(text, "--log-level"));
    assert_non_null(strstr(text, "TIDINGS_PAYMENT_LIMIT"));
    assert_non_null(strstr(text, "TIDINGS_NOTIFICATIONS_PORT    8085"));
    /* Every variable of SPEC section 1 has its line, with a default. */
    static const char *const spec[] = {
        "TIDINGS_BROKERS",
        "TIDINGS_DATA_DIR",
        "TIDINGS_SECRET",
        "TIDINGS_TOPIC_PREFIX",
        "TIDINGS_PARTITIONS",
        "TIDINGS_REPLICATION",
        "TIDINGS_RETENTION_MS",
        "TIDINGS_PAYMENT_LIMIT",
        "TIDINGS_LOG_LEVEL",
        "TIDINGS_ADMIN_PASSWORD",
        "TIDINGS_ALLOW_HTTP_ENDPOINTS",
        "TIDINGS_DELIVERY_MAX_ATTEMPTS",
        "TIDINGS_DELIVERY_BACKOFF_MS",
        "TIDINGS_KAFKA_CONFIG",
        "TIDINGS_DB_SYNC",
        "TIDINGS_CORS_ORIGINS",
        "TIDINGS_MAX_STREAMS_PER_USER",
        "TIDINGS_INBOX_RETENTION_MS",
        "TIDINGS_NOTIFICATION_RETENTION_DAYS",
        "TIDINGS_SMTP_URL",
        "TIDINGS_SMTP_FROM",
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(spec); i++) {
        char *line = td_asprintf("\n  %s ", spec[i]);
        const char *at = strstr(text, line);
        if (!at) {
            fail_msg("--help does not list %s", spec[i]);
        } else {
            const char *eol = strchr(at + 1, '\n');
            assert_non_null(eol);
            assert_true(eol - at > (ptrdiff_t)strlen(line)); /* a default follows */
        }
        free(line);
    }
    free(text);
}

/* The defaults come from the settings table's texts: each one is what the
 * variable set to that text gives. */
static void test_defaults_are_table_texts(void **state)
{
    (void)state;
    td_config_t a, b;
    char err[256];
    td_config_defaults(&a);
    setenv("TIDINGS_PAYMENT_LIMIT", "5000.00", 1);
    setenv("TIDINGS_RETENTION_MS", "604800000", 1);
    setenv("TIDINGS_MAX_STREAMS_PER_USER", "32", 1);
    assert_int_equal(
        td_config_load(&b, "orders", 1, (char *[]){"orders", NULL}, NULL, err, sizeof(err)), 0);
    assert_int_equal(a.payment_limit, b.payment_limit);
    assert_int_equal(a.retention_ms, b.retention_ms);
    assert_int_equal(a.max_streams_per_user, b.max_streams_per_user);
    assert_int_equal(a.partitions, 6);
    assert_int_equal(a.log_level, TD_LOG_INFO);
    assert_true(a.log_json);
    assert_false(a.db_sync_normal);
    assert_string_equal(a.topic_prefix, "tidings.");
    unsetenv("TIDINGS_PAYMENT_LIMIT");
    unsetenv("TIDINGS_RETENTION_MS");
    unsetenv("TIDINGS_MAX_STREAMS_PER_USER");
    td_config_free(&a);
    td_config_free(&b);
}

/* A command's own flags (td_command_t): switches, a value, a repeatable
 * value, short forms, --flag=value, operands anywhere and after "--",
 * the errors, and the --help lines of both tables. */
typedef struct cmd_opts {
    bool json, all;
    const char *topic;
    td_strv_t tags;
} cmd_opts_t;

static const td_flag_t cmd_flags[] = {
    {"--json", NULL, NULL, TD_FLAG_SWITCH, offsetof(cmd_opts_t, json), "as JSON"},
    {"--all", "-a", NULL, TD_FLAG_SWITCH, offsetof(cmd_opts_t, all), "every one"},
    {"--topic", "-t", "T", TD_FLAG_STR, offsetof(cmd_opts_t, topic), "one topic\nonly"},
    {"--tag", NULL, "X", TD_FLAG_LIST, offsetof(cmd_opts_t, tags), "a tag; repeatable"},
};

static void test_command_flags(void **state)
{
    (void)state;
    td_command_t cmd = {.name = "tool", .flags = cmd_flags, .flag_cnt = 4, .operands = true};
    td_config_t cfg;
    char err[256];
    cmd_opts_t o = {0};
    td_strv_t ops = {0};
    char *argv[] = {"tool", "one",   "--json", "--brokers", "b:1", "-t", "orders", "--tag=x",
                    "two",  "--tag", "y",      "-a",        "--",  "-n", NULL};
    assert_int_equal(td_config_load_cmd(&cfg, &cmd, &o, 14, argv, &ops, err, sizeof(err)), 0);
    assert_string_equal(cfg.service, "tool");
    assert_string_equal(cfg.brokers, "b:1");
    assert_true(o.json && o.all);
    assert_string_equal(o.topic, "orders");
    assert_int_equal(o.tags.cnt, 2);
    assert_string_equal(o.tags.v[0], "x");
    assert_string_equal(o.tags.v[1], "y");
    assert_int_equal(ops.cnt, 3);
    assert_string_equal(ops.v[0], "one");
    assert_string_equal(ops.v[1], "two");
    assert_string_equal(ops.v[2], "-n");
    td_config_free(&cfg);
    td_command_free(&cmd, &o, &ops);
    assert_null(o.tags.v);
    assert_null(ops.v);

    struct {
        const char *want;
        char *args[3];
    } bad[] = {
        {"--topic needs a value", {"--topic", NULL}},
        {"-t: the value is empty", {"-t=", NULL}},
        {"--json takes no value", {"--json=1", NULL}},
        {"unknown option '--frob'", {"--frob", NULL}},
        {"--port: 'tool' has no HTTP port", {"--port", "1", NULL}},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(bad); i++) {
        char *a[4] = {"tool", bad[i].args[0], bad[i].args[1], NULL};
        int n = a[2] ? 3 : 2;
        memset(&o, 0, sizeof(o));
        assert_int_equal(td_config_load_cmd(&cfg, &cmd, &o, n, a, &ops, err, sizeof(err)),
                         TD_EINVAL);
        assert_string_equal(err, bad[i].want);
        td_command_free(&cmd, &o, &ops);
    }
    /* Without operands, the first one is an error. */
    cmd.operands = false;
    char *argv2[] = {"tool", "--json", "extra", NULL};
    memset(&o, 0, sizeof(o));
    assert_int_equal(td_config_load_cmd(&cfg, &cmd, &o, 3, argv2, NULL, err, sizeof(err)),
                     TD_EINVAL);
    assert_string_equal(err, "unexpected argument 'extra'");

    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    cmd.usage = "usage: tidings tool\n";
    cmd.more = "the end\n";
    td_config_usage_cmd(f, &cmd);
    fclose(f);
    assert_non_null(strstr(text, "usage: tidings tool\n"));
    assert_non_null(strstr(text, "  --topic T, -t T    one topic\n                     only\n"));
    assert_non_null(strstr(text, "  --all, -a          every one\n"));
    assert_non_null(strstr(text, "  --tag X            a tag; repeatable\n"));
    assert_non_null(strstr(text, "--brokers LIST"));
    assert_non_null(strstr(text, "(TIDINGS_DATA_DIR, default ./data)"));
    assert_null(strstr(text, "--port"));                /* not a service */
    assert_null(strstr(text, "TIDINGS_PAYMENT_LIMIT")); /* no env_help */
    assert_non_null(strstr(text, "the end\n"));
    free(text);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_defaults),
        T(test_defaults_are_table_texts),
        T(test_env),
        T(test_env_errors),
        T(test_payment_limit_values),
        T(test_flags),
        T(test_flag_errors),
        T(test_positional),
        T(test_brokers_file),
        T(test_secret_generated_once),
        T(test_secret_race),
        T(test_secret_env),
        T(test_secret_file_too_short),
        T(test_names_help_usage),
        T(test_command_flags),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
