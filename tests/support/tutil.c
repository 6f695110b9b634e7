/* Small helpers every test program uses: a fresh directory per test, a
 * configuration fit for tests (fixed secret, 1 ms fetch wait, quiet logs)
 * and a bounded poll for asynchronous results, so no test sleeps for a
 * fixed time and hopes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/log.h"
#include "tsupport.h"

char *ts_tmpdir(const char *name)
{
    const char *base = getenv("TIDINGS_TEST_TMP");
    if (!base || !*base) base = "/tmp";
    if (td_mkdirs(base, 0755) != 0) {
        fprintf(stderr, "ts_tmpdir: cannot create %s\n", base);
        abort();
    }
    /* mkdtemp gives a new empty directory even when tests run in parallel
     * or an earlier run left its directory behind. */
    char *path = td_asprintf("%s/%s.XXXXXX", base, name);
    if (!mkdtemp(path)) {
        fprintf(stderr, "ts_tmpdir: cannot create %s\n", path);
        abort();
    }
    return path;
}

void ts_config(td_config_t *cfg, const char *service, const char *data_dir, const char *brokers)
{
    static const char secret[] = "tidings-test-secret-0123456789ab"; /* 32 bytes */

    td_config_defaults(cfg);
    cfg->service = td_strdup(service);
    if (data_dir) {
        free(cfg->data_dir);
        cfg->data_dir = td_strdup(data_dir);
    }
    cfg->brokers = td_strdup(brokers);
    cfg->fetch_wait_ms = 1;
    cfg->secret_len = sizeof(secret) - 1;
    cfg->secret = td_malloc(sizeof(secret));
    memcpy(cfg->secret, secret, sizeof(secret));
    int level = td_log_level_from_name(getenv("TIDINGS_LOG_LEVEL"));
    cfg->log_level = level >= 0 ? level : TD_LOG_WARN;
    td_log_init(service ? service : "test", cfg->log_level, cfg->log_json);
}

bool ts_wait_until(bool (*cond)(void *arg), void *arg, int timeout_ms)
{
    int64_t deadline = td_mono_ms() + timeout_ms;
    for (;;) {
        if (cond(arg)) return true;
        if (td_mono_ms() >= deadline) return false;
        td_sleep_ms(5);
    }
}
