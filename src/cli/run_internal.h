/* What the pieces of `tidings run` share (run.c the supervisor and its
 * loop, run_log.c the log view, run_http.c the HTTP client: readiness
 * probes, seeding, the summary). Not a public header. Everything here runs
 * on the supervisor's main thread. */
#ifndef TIDINGS_RUN_INTERNAL_H
#define TIDINGS_RUN_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "tidings/broker.h"
#include "tidings/config.h"
#include "tidings/service.h"

#define READY_TIMEOUT_MS  60000 /* per service at startup */
#define STOP_TIMEOUT_MS   10000 /* per service at shutdown, then SIGKILL */
#define BACKOFF_FIRST_MS  1000
#define BACKOFF_MAX_MS    30000
#define HEALTHY_RESET_MS  60000 /* a child up this long starts over at the first backoff */
#define PROBE_INTERVAL_MS 200
#define LINE_MAX_BYTES    (64 * 1024)
#define ADMIN_EMAIL       "admin@tidings.local"
#define SEED_MARKER       "seeded"
#ifdef TIDINGS_WEB_DIR
#define WEB_DIR_DEFAULT TIDINGS_WEB_DIR
#else
#define WEB_DIR_DEFAULT "none compiled in"
#endif

typedef struct child {
    const char *name;
    td_service_t svc; /* -1 for the in-process log source */
    pid_t pid;        /* 0 when not running */
    int fd;           /* read end of its output pipe, -1 when closed */
    char *buf;        /* an incomplete line */
    size_t len;
    int logfd;          /* <data>/logs/<name>.log */
    int64_t started_ms; /* monotonic time of the last start */
    int64_t restart_at; /* monotonic time of a pending restart, 0 = none */
    int64_t backoff_ms; /* the next restart delay */
    int64_t next_probe; /* monotonic time of the next /readyz probe */
    int restarts;
    bool ready;           /* /readyz said 200 since the last start */
    char last_probe[256]; /* why the last probe failed */
    int last_status;      /* wait status of the last exit */
} child_t;

typedef enum phase { PHASE_STARTING, PHASE_UP, PHASE_STOPPING } phase_t;

typedef struct run {
    td_config_t cfg;
    bool json_logs;
    bool color;
    phase_t phase;
    td_broker_t *broker;
    char *brokers;  /* the bootstrap list the children get */
    char *data_dir; /* absolute */
    char *logs_dir;
    char *host;           /* where the children's ports are reached */
    char *admin_password; /* given or generated; NULL when neither */
    bool admin_generated;
    bool first_start;
    child_t kids[TD_SVC__COUNT];
    child_t self; /* the in-process log source ("run") */
    int sigfd;
    int stop_signals; /* SIGINT/SIGTERM seen */
} run_t;

/* The supervisor's own messages go through td_log, whose output is the
 * "run" pipe: shown and filed like any child's. */
#define say(...)      td_info(__VA_ARGS__)
#define say_warn(...) td_warn(__VA_ARGS__)

/* run.c */
void run__turn(run_t *r, int timeout_ms);

/* run_log.c */
void run__write_all(int fd, const char *p, size_t n);
void run__pump(run_t *r, child_t *c);

/* run_http.c */
bool run__probe(run_t *r, child_t *c);
void run__seed(run_t *r);
void run__summary(run_t *r);

#endif
