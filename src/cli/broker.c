/* `tidings broker`: the embedded development broker (librdkafka's mock
 * cluster, see tidings/broker.h) as a process of its own. It prints the
 * bootstrap list as one line on stdout, for scripts, and writes it to
 * <data dir>/brokers so that services and `tidings events`/`trace` started
 * later with the same data dir find it without flags. The signals that stop
 * it are blocked before the broker's threads start and taken with
 * sigwait, so that no librdkafka thread is interrupted by them. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "tidings/broker.h"
#include "tidings/bus.h"
#include "tidings/service.h"
#include "tidings/config.h"
#include "tidings/log.h"

#define BROKER_MAX_COUNT 16

static void broker_usage(FILE *out)
{
    fprintf(out,
            "usage: tidings broker [--count N] [--data DIR]\n\n"
            "Starts the embedded development broker: N Kafka brokers (default 3, at most %d)\n"
            "on loopback, in memory only, with every tidings topic and its .DLT created\n"
            "(TIDINGS_PARTITIONS partitions each). Prints the bootstrap list as one line on\n"
            "stdout and writes it to <data dir>/brokers, where `tidings users`, `tidings\n"
            "events` and the others started with the same data dir find it. Runs until\n"
            "SIGINT or SIGTERM, then removes that file and exits 0. Nothing survives a\n"
            "restart.\n\n"
            "options:\n"
            "  --count N       number of brokers, 1..%d (default 3)\n"
            "  --data DIR      data directory for the brokers file (TIDINGS_DATA_DIR,\n"
            "                  default ./data)\n"
            "  --log-level L   debug, info, warn or error (TIDINGS_LOG_LEVEL)\n"
            "TIDINGS_PARTITIONS (default 6) and TIDINGS_TOPIC_PREFIX (default tidings.)\n"
            "shape the topics.\n\n"
            "Exit status: 0 after SIGINT/SIGTERM, 1 the broker could not start, 2 usage\n"
            "error.\n",
            BROKER_MAX_COUNT, BROKER_MAX_COUNT);
}

/* Parses a whole decimal number in [min, max]. */
static bool parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) return false;
    *out = (int)v;
    return true;
}

/* Removes the brokers file only if it still names this broker: another
 * broker started later with the same data dir owns it then. */
static void remove_brokers_file(const char *path, const char *bootstraps)
{
    size_t len = 0;
    char *text = td_read_file(path, &len);
    if (!text) return;
    size_t n = strlen(bootstraps);
    if (len >= n && !strncmp(text, bootstraps, n) && strspn(text + n, " \t\r\n") == len - n)
        unlink(path);
    free(text);
}

int cli_broker_main(int argc, char **argv)
{
    td_config_t cfg;
    char err[512];
    int rc = 2, count = 3;
    td_broker_t *broker = NULL;
    char *path = NULL;
    bool wrote = false;
    char **rest = td_calloc((size_t)argc + 1, sizeof(*rest));
    int rest_cnt = 0;
    memset(&cfg, 0, sizeof(cfg));

    if (td_config_wants_help(argc, argv)) {
        broker_usage(stdout);
        free(rest);
        return 0;
    }
    /* Our own flags out, the common ones (--data, --log-level) to config. */
    rest[rest_cnt++] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *val = NULL;
        if (!strcmp(argv[i], "--count")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tidings broker: --count needs a value\n");
                goto out;
            }
            val = argv[++i];
        } else if (!strncmp(argv[i], "--count=", 8)) {
            val = argv[i] + 8;
        } else {
            rest[rest_cnt++] = argv[i];
            continue;
        }
        if (!parse_int(val, 1, BROKER_MAX_COUNT, &count)) {
            fprintf(stderr, "tidings broker: --count must be a number from 1 to %d, not '%s'\n",
                    BROKER_MAX_COUNT, val);
            goto out;
        }
    }
    if (td_config_load(&cfg, "broker", rest_cnt, rest, NULL, err, sizeof(err))) {
        fprintf(stderr, "tidings broker: %s\n", err);
        goto out;
    }
    td_log_init("broker", cfg.log_level, cfg.log_json);
    bool plaintext = true;
    if (td_kafka_user_settings_check(&plaintext, err, sizeof(err)) != 0) {
        fprintf(stderr, "tidings broker: %s\n", err);
        goto out;
    }
    if (!plaintext)
        td_warn("the embedded broker speaks PLAINTEXT only: clients started with this "
                "TIDINGS_KAFKA_SECURITY_PROTOCOL (or TIDINGS_KAFKA_CONFIG) will not reach it");

    sigset_t stop;
    sigemptyset(&stop);
    sigaddset(&stop, SIGINT);
    sigaddset(&stop, SIGTERM);
    sigaddset(&stop, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &stop, NULL);

    rc = 1;
    broker = td_broker_start(&cfg, count, err, sizeof(err));
    if (!broker) {
        fprintf(stderr, "tidings broker: cannot start the embedded broker: %s\n", err);
        goto out;
    }
    const char *bootstraps = td_broker_bootstraps(broker);

    char derr[512];
    int r = td_data_dir_secure(&cfg, derr, sizeof(derr));
    if (r) fprintf(stderr, "tidings broker: %s\n", derr);
    path = td_data_path(&cfg, "brokers");
    char *line = td_asprintf("%s\n", bootstraps);
    if (!r) r = td_write_file(path, line, strlen(line), 0600);
    free(line);
    if (r) {
        fprintf(stderr, "tidings broker: cannot write %s: %s\n", path, strerror(errno));
        goto out;
    }
    wrote = true;

    printf("%s\n", bootstraps);
    fflush(stdout);
    td_info("embedded broker ready: %d broker%s at %s, %d partitions per topic, topic prefix "
            "'%s', bootstrap list in %s",
            count, count == 1 ? "" : "s", bootstraps, cfg.partitions, cfg.topic_prefix, path);

    int sig = 0;
    while (sigwait(&stop, &sig) != 0) continue;
    td_info("embedded broker stopping (%s)", strsignal(sig));
    rc = 0;

out:
    if (wrote) remove_brokers_file(path, td_broker_bootstraps(broker));
    if (broker) td_broker_stop(broker);
    free(path);
    free(rest);
    td_config_free(&cfg);
    return rc;
}
