/* What every service's main.c shares: signal handling, readiness over the
 * database, relay and consumers, and the broker connection string check. */
#ifndef TIDINGS_SERVICE_H
#define TIDINGS_SERVICE_H

#include "tidings/bus.h"
#include "tidings/config.h"
#include "tidings/db.h"

/* Blocks SIGINT, SIGTERM (and ignores SIGPIPE) in the calling thread;
 * call before starting any thread so that all inherit the mask. */
void td_signals_block(void);
/* Waits for SIGINT or SIGTERM; returns the signal number. */
int td_signals_wait(void);

typedef struct td_readiness {
    td_db_t *db;
    td_relay_t *relay;
    td_consumer_t *cons[8];
    size_t cons_cnt;
} td_readiness_t;

/* A td_ready_fn over a td_readiness_t: the database answers, the relay's
 * producer and every consumer is connected to a broker. */
bool td_readiness_check(void *arg, char *why, size_t whylen);

/* The data dir holds password hashes, keys and secrets (SPEC section 5):
 * it is made 0700 (mkdir -p), and an existing one is tightened to 0700
 * with every file in it 0600 (and its subdirectories 0700). Also sets the
 * process umask to 077, so that files made later (SQLite's -wal and -shm,
 * logs) follow. 0 or TD_EIO with errstr. */
int td_data_dir_secure(const td_config_t *cfg, char *errstr, size_t errlen);

/* Opens <data>/<service>.db with migs (making the data dir). Logs and
 * returns NULL on failure. */
td_db_t *td_service_db(const td_config_t *cfg, const td_migration_t *migs, size_t mig_cnt,
                       char *errstr, size_t errlen);

/* What td_service_main runs: start makes the service (cfg is borrowed and
 * outlives it) and returns it, or NULL with errstr; stop stops it. */
typedef void *(*td_service_start_fn)(const td_config_t *cfg, char *errstr, size_t errlen);
typedef void (*td_service_stop_fn)(void *svc);

/* The whole main() of a service: --help, configuration (service is the
 * short name), logging, the token secret, a clear error when no brokers
 * are known, signals blocked, td_topics_ensure on a thread of its own
 * (waited for 0.5 s at most, so an unreachable Kafka delays nothing and
 * only a refusal Kafka gives at once stops the start), start(cfg), a
 * "ready" log line, wait for SIGINT/SIGTERM, "stopping", stop(svc). Returns the exit
 * code: 0 after a clean stop (or --help), 1 on a startup error (bad flags
 * or environment included), whose message is logged on stderr. Main
 * thread only. */
int td_service_main(const char *service, int argc, char **argv, td_service_start_fn start,
                    td_service_stop_fn stop);

#endif
