/* What every service process shares: its declaration and main(), signal
 * handling, readiness over the database, relay and consumers, and the
 * data directory. */
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
    td_consumer_t **cons; /* td_readiness_add; freed by td_readiness_clear */
    size_t cons_cnt;
} td_readiness_t;

/* Adds a consumer whose connection /readyz checks. Before serving. */
void td_readiness_add(td_readiness_t *r, td_consumer_t *cons);
/* Frees what td_readiness_add kept (not the consumers) and empties r. */
void td_readiness_clear(td_readiness_t *r);

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

/* A service's lifecycle: start makes the service (cfg is borrowed and
 * outlives it) and returns it, or NULL with errstr; stop stops what start
 * returned (NULL is fine). */
typedef void *(*td_service_start_fn)(const td_config_t *cfg, char *errstr, size_t errlen);
typedef void (*td_service_stop_fn)(void *svc);

/* What td_service_main returns from a pre_main hook to run the service. */
#define TD_SERVICE_RUN (-1)

/* A service as the `tidings` binary runs it: declared once, as a const
 * object in the service's service.c (orders_service_decl, ...), and
 * listed in the command table of src/cli/main.c. */
typedef struct td_service_decl {
    td_service_t id;        /* its name, port and configuration come from it */
    const char *summary;    /* its line in `tidings help`, before the port */
    const td_flag_t *flags; /* its own flags (a pre_main's), listed by --help */
    size_t flag_cnt;
    const char *help; /* printed at the end of --help, or NULL */
    /* Optional: runs first (after --help) with the command's argv; returns
     * TD_SERVICE_RUN to go on and run the service, or the exit code of a
     * one-shot command it ran instead (users: --create-admin). */
    int (*pre_main)(int argc, char **argv);
    td_service_start_fn start;
    td_service_stop_fn stop;
} td_service_decl_t;

/* The whole main() of the service svc declares: --help, the pre_main
 * hook, configuration, logging, the token secret, a clear error when no
 * brokers are known, signals blocked, td_topics_ensure on a thread of its
 * own (waited for 0.5 s at most, so an unreachable Kafka delays nothing
 * and only a refusal Kafka gives at once stops the start), start(cfg), a
 * "ready" log line, wait for SIGINT/SIGTERM, "stopping", stop(svc).
 * argv[0] is the command name. Returns the exit code: 0 after a clean
 * stop (or --help), 1 on a startup error (bad flags or environment
 * included), whose message is logged on stderr. Main thread only. */
int td_service_main(const td_service_decl_t *svc, int argc, char **argv);

#endif
