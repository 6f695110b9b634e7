/* The users service as a whole: its database, outbox relay and HTTP server,
 * started and stopped in-process by td_service_main (users_service_decl) and
 * by the integration tests, plus the one-shot `tidings users --create-admin
 * EMAIL` command. The service consumes no topic, so it has no consumer.
 * Start and stop from one thread; the service runs on its own threads in
 * between. */
#ifndef TIDINGS_USERS_SERVICE_H
#define TIDINGS_USERS_SERVICE_H

#include "tidings/bus.h"
#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/http.h"
#include "tidings/service.h"

typedef struct users_service users_service_t;

/* Opens <data>/users.db, makes sure the admin account exists when
 * cfg->admin_password is set (admin@tidings.local), starts the relay and
 * the HTTP server on td_config_port(cfg, TD_SVC_USERS) (0 = any free
 * port). cfg is borrowed and must outlive the service. NULL with errstr on
 * failure. */
void *users_service_start(const td_config_t *cfg, char *errstr, size_t errlen);
/* The HTTP port actually bound. */
int users_service_port(const users_service_t *svc);
/* The service's database (tests inspect it). Borrowed. */
td_db_t *users_service_db(const users_service_t *svc);
/* Graceful stop: HTTP (finishing requests in flight), relay (flushing the
 * outbox), database. NULL is fine. */
void users_service_stop(void *svc);
/* `tidings users`: the service as a process (td_service_main), with
 * the two functions above as its start and stop (hence their void *:
 * the service is a users_service_t). */
extern const td_service_decl_t users_service_decl;

/* `tidings users --create-admin EMAIL [flags]`: creates the account or
 * promotes it to admin, with the password from TIDINGS_ADMIN_PASSWORD or
 * one line on stdin, prints its userId and returns the exit code. Only
 * the database is touched: its UserRegisteredEvent waits in the outbox for
 * the service's next start. argv[0] is the subcommand name. What
 * users_service_decl runs instead of the service when argv asks for
 * --create-admin. */
int users_create_admin_main(int argc, char **argv);

/* The password-hashing pool (SPEC section 5): argon2id runs on these
 * threads, never on HTTP threads; at most USERS_HASH_THREADS hash at once
 * (64 MiB each) and USERS_HASH_QUEUE wait, and one more login or
 * registration gets 503 with Retry-After: USERS_HASH_RETRY_AFTER_S. */
#define USERS_HASH_QUEUE         16
#define USERS_HASH_RETRY_AFTER_S "1"
/* Threads: half the processors, 1 to 4 (hashing is CPU and memory bound;
 * the other half keeps serving). */
unsigned users_hash_threads(void);

/* What routes.c gets as req->ctx: borrowed, alive while the service runs. */
typedef struct td_pool td_pool_t;
typedef struct users_ctx {
    const td_config_t *cfg;
    td_db_t *db;
    td_pool_t *hash_pool;
} users_ctx_t;

/* routes.c: the HTTP API of SPEC section 2. */
extern const td_route_t users_routes[];
extern const size_t users_route_cnt;

#endif
