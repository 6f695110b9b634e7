/* What every service process shares around its own start and stop: the
 * main() of a td_service_decl_t (configuration, logging, secret, topics,
 * signals, wait, graceful stop), signal handling that leaves
 * SIGINT/SIGTERM to one sigwait in the main thread, the database in the
 * data dir, and the readiness check behind /readyz. */
#include "tidings/service.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "tidings/log.h"

void td_signals_block(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    /* A client that hangs up must not kill the process mid-write. */
    signal(SIGPIPE, SIG_IGN);
}

int td_signals_wait(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    return sig;
}

/* True while the topics could not be made at start and the retry thread
 * below is still at it: the service is not ready until they exist, even
 * when its clients reach Kafka (a consumer of a topic that does not exist
 * yet consumes nothing). */
static atomic_bool topics_pending;

void td_readiness_add(td_readiness_t *r, td_consumer_t *cons)
{
    r->cons = td_realloc(r->cons, (r->cons_cnt + 1) * sizeof(*r->cons));
    r->cons[r->cons_cnt++] = cons;
}

void td_readiness_clear(td_readiness_t *r)
{
    free(r->cons);
    memset(r, 0, sizeof(*r));
}

bool td_readiness_check(void *arg, char *why, size_t whylen)
{
    const td_readiness_t *r = arg;
    if (atomic_load(&topics_pending)) {
        td_errf(why, whylen, TD_EAGAIN, "the topics are not created yet (Kafka not reachable)");
        return false;
    }
    if (r->db && !td_db_ping(r->db)) {
        td_errf(why, whylen, TD_EIO, "database is not answering");
        return false;
    }
    if (r->relay && !td_relay_connected(r->relay)) {
        td_errf(why, whylen, TD_EAGAIN, "outbox relay cannot reach Kafka");
        return false;
    }
    for (size_t i = 0; i < r->cons_cnt; i++) {
        if (r->cons[i] && !td_consumer_connected(r->cons[i])) {
            td_errf(why, whylen, TD_EAGAIN, "consumer cannot reach Kafka");
            return false;
        }
    }
    return true;
}

/* chmod of everything under dir: directories 0700, files 0600. Symbolic
 * links are left alone (their mode means nothing; their target is not
 * ours to change). */
static int tighten(const char *dir, int depth)
{
    if (chmod(dir, 0700) != 0) return TD_EIO;
    DIR *d = opendir(dir);
    if (!d) return TD_EIO;
    int rc = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char *p = td_asprintf("%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(p, &sb) == 0) {
            if (S_ISDIR(sb.st_mode) && depth < 4)
                rc |= tighten(p, depth + 1);
            else if (S_ISREG(sb.st_mode) && (sb.st_mode & 077) && chmod(p, 0600) != 0)
                rc = TD_EIO;
        }
        free(p);
    }
    closedir(d);
    return rc;
}

int td_data_dir_secure(const td_config_t *cfg, char *errstr, size_t errlen)
{
    umask(077);
    if (td_mkdirs(cfg->data_dir, 0700) != 0)
        return td_errf(errstr, errlen, TD_EIO, "cannot create data directory %s: %s", cfg->data_dir,
                       strerror(errno));
    if (tighten(cfg->data_dir, 0) != 0)
        return td_errf(errstr, errlen, TD_EIO, "cannot make data directory %s private (0700): %s",
                       cfg->data_dir, strerror(errno));
    return 0;
}

td_db_t *td_service_db(const td_config_t *cfg, const td_migration_t *migs, size_t mig_cnt,
                       char *errstr, size_t errlen)
{
    if (td_data_dir_secure(cfg, errstr, errlen) != 0) {
        td_error("%s", errstr ? errstr : "cannot create the data directory");
        return NULL;
    }
    char *file = td_asprintf("%s.db", cfg->service ? cfg->service : "tidings");
    char *path = td_data_path(cfg, file);
    td_db_t *db = td_db_open(path, migs, mig_cnt, errstr, errlen);
    if (!db) td_error("%s", errstr ? errstr : "cannot open the database");
    if (db && cfg->db_sync_normal) td_db_set_full_sync(db, false);
    free(path);
    free(file);
    return db;
}

/* Creating the topics, in the background: the first attempt at start,
 * then again every few seconds while Kafka cannot be reached (or refuses
 * the credentials). The service runs meanwhile, /readyz answering 503, and
 * makes the topics as soon as Kafka lets it. */
typedef struct topics_retry {
    const td_config_t *cfg;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop;
    bool first_done;    /* the first attempt has an answer (under mu) */
    int last_rc;        /* the failure logged last, so each is logged once */
    char last_err[512]; /* its message */
} topics_retry_t;

#define TOPICS_RETRY_MS 5000
/* How long the start waits for the first attempt's answer before it goes
 * on without it: a reachable Kafka answers well within it, so a bad
 * setting still stops the service at start; an unreachable one does not
 * keep /healthz from answering (SPEC section 5: at once). */
#define TOPICS_FIRST_WAIT_MS 500

/* Waits until ms have passed or stop is asked; false on stop. */
static bool retry_sleep(topics_retry_t *tr, int ms)
{
    pthread_mutex_lock(&tr->mu);
    struct timespec ts = td_mono_deadline(ms);
    while (!tr->stop && pthread_cond_timedwait(&tr->cv, &tr->mu, &ts) == 0) continue;
    bool stop = tr->stop;
    pthread_mutex_unlock(&tr->mu);
    return !stop;
}

static void *topics_retry_main(void *arg)
{
    topics_retry_t *tr = arg;
    char err[512];
    for (bool first = true;; first = false) {
        if (!first && !retry_sleep(tr, TOPICS_RETRY_MS)) break;
        int rc = td_topics_ensure(tr->cfg, err, sizeof(err));
        if (rc == 0) atomic_store(&topics_pending, false);
        pthread_mutex_lock(&tr->mu);
        bool late = tr->first_done; /* the start stopped waiting for it */
        if (first) {
            tr->first_done = true;
            tr->last_rc = rc;
            snprintf(tr->last_err, sizeof(tr->last_err), "%s", err);
            pthread_cond_broadcast(&tr->cv);
        }
        pthread_mutex_unlock(&tr->mu);
        if (rc == 0) {
            if (!first || late) td_info("Kafka is reachable now: the topics exist");
            break;
        }
        if (rc == TD_EINVAL || rc == TD_EIO) {
            /* Kafka answers but refuses the topics (ACLs, a policy): that
             * is for the operator, and retrying will not change it. At
             * start the main thread says it and stops the service. */
            if (!first || late) td_error("%s; the service stays unready", err);
            break;
        }
        /* Once per failure kind, not every attempt: the clients' own
         * lines say the rest. */
        if (first && late)
            td_error("%s; /readyz answers 503 until Kafka is reachable, and the topics are "
                     "created then",
                     err);
        else if (!first && (rc != tr->last_rc || strcmp(err, tr->last_err)))
            td_warn("still waiting for Kafka: %s", err);
        tr->last_rc = rc;
        snprintf(tr->last_err, sizeof(tr->last_err), "%s", err);
    }
    return NULL;
}

static topics_retry_t *topics_retry_start(const td_config_t *cfg)
{
    topics_retry_t *tr = td_calloc(1, sizeof(*tr));
    tr->cfg = cfg;
    atomic_store(&topics_pending, true);
    pthread_mutex_init(&tr->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&tr->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&tr->thread, NULL, topics_retry_main, tr) != 0) {
        td_error("cannot start the thread that creates the topics");
        pthread_cond_destroy(&tr->cv);
        pthread_mutex_destroy(&tr->mu);
        free(tr);
        return NULL;
    }
    return tr;
}

/* The first attempt's answer if it came within ms: 0, or its failure with
 * err filled; TD_EAGAIN with err empty when it has not answered yet. */
static int topics_first_wait(topics_retry_t *tr, int ms, char *err, size_t errlen)
{
    struct timespec ts = td_mono_deadline(ms);
    pthread_mutex_lock(&tr->mu);
    while (!tr->first_done && pthread_cond_timedwait(&tr->cv, &tr->mu, &ts) == 0) continue;
    int rc = TD_EAGAIN;
    err[0] = '\0';
    if (tr->first_done) {
        rc = tr->last_rc;
        snprintf(err, errlen, "%s", tr->last_err);
    } else {
        tr->first_done = true; /* the thread logs its own answer */
    }
    pthread_mutex_unlock(&tr->mu);
    return rc;
}

/* Stops the retries; waits for an attempt under way (at most the metadata
 * wait of td_topics_ensure). */
static void topics_retry_stop(topics_retry_t *tr)
{
    if (!tr) return;
    pthread_mutex_lock(&tr->mu);
    tr->stop = true;
    pthread_cond_broadcast(&tr->cv);
    pthread_mutex_unlock(&tr->mu);
    pthread_join(tr->thread, NULL);
    pthread_cond_destroy(&tr->cv);
    pthread_mutex_destroy(&tr->mu);
    free(tr);
}

int td_service_main(const td_service_decl_t *decl, int argc, char **argv)
{
    topics_retry_t *retry = NULL;
    td_config_t cfg;
    char err[512];
    int rc = 1;
    void *svc = NULL;
    const char *service = td_service_name(decl->id);
    memset(&cfg, 0, sizeof(cfg));

    if (td_config_wants_help(argc, argv)) {
        td_command_t cmd = {
            .name = service,
            .flags = decl->flags,
            .flag_cnt = decl->flag_cnt,
            .more = decl->help,
            .env_help = true,
        };
        td_config_usage_cmd(stdout, &cmd);
        return 0;
    }
    if (decl->pre_main) {
        int prc = decl->pre_main(argc, argv);
        if (prc != TD_SERVICE_RUN) return prc;
    }
    td_log_init(service, TD_LOG_INFO, true);
    if (td_config_load(&cfg, service, argc, argv, NULL, err, sizeof(err)) != 0) {
        td_error("%s", err);
        return 1;
    }
    td_log_init(service, cfg.log_level, cfg.log_json);
    if (td_config_load_secret(&cfg, err, sizeof(err)) != 0) {
        td_error("%s", err);
        goto out;
    }
    if (!cfg.brokers || !*cfg.brokers) {
        td_error("no Kafka brokers: set TIDINGS_BROKERS or --brokers, or start `tidings broker` "
                 "/ `tidings run`");
        goto out;
    }
    /* Before any thread exists, so that every thread inherits the mask and
     * only the sigwait below sees SIGINT/SIGTERM. */
    td_signals_block();
    /* A bad setting or a topic Kafka will not create stops the service; a
     * Kafka it cannot reach (or that refuses its credentials) does not
     * (SPEC section 5): the HTTP server starts at once with /readyz 503,
     * as after losing Kafka later, and the thread creates the topics once
     * Kafka lets it. */
    retry = topics_retry_start(&cfg);
    if (!retry) goto out;
    int trc = topics_first_wait(retry, TOPICS_FIRST_WAIT_MS, err, sizeof(err));
    if (trc == TD_EINVAL || trc == TD_EIO) {
        td_error("%s", err);
        goto out;
    }
    if (trc == TD_EAGAIN && !err[0])
        td_warn("Kafka (%s) has not answered yet; starting anyway: /readyz answers 503 until "
                "the topics exist",
                cfg.brokers);
    else if (trc != 0)
        td_error("%s; starting anyway: /readyz answers 503 until Kafka is reachable, and the "
                 "topics are created then",
                 err);
    /* A mock cluster holds an empty fetch for the whole fetch.wait.max.ms
     * instead of answering when data arrives, as Kafka does: there only a
     * short wait keeps a hop short. Asked only of brokers that answered
     * just now (the retry thread is done then and reads cfg no more). */
    if (trc == 0 && !cfg.fetch_wait_set && !cfg.brokers_embedded && td_kafka_is_mock(&cfg, 2000)) {
        cfg.fetch_wait_ms = 1;
        td_info("brokers %s are a mock cluster: fetch wait 1 ms", cfg.brokers);
    }
    svc = decl->start(&cfg, err, sizeof(err));
    if (!svc) {
        td_error("cannot start: %s", err);
        goto out;
    }
    td_info("ready (port %d, brokers %s)", td_config_port(&cfg, decl->id), cfg.brokers);
    int sig = td_signals_wait();
    td_info("stopping (%s)", sig == SIGINT ? "SIGINT" : "SIGTERM");
    topics_retry_stop(retry);
    retry = NULL;
    decl->stop(svc);
    td_info("stopped");
    rc = 0;

out:
    topics_retry_stop(retry);
    td_config_free(&cfg);
    return rc;
}
