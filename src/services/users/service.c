/* The users service's lifecycle: database, the admin account, outbox relay
 * and HTTP server, started in dependency order and stopped in reverse, so
 * nothing runs against a resource already gone. Shared by users_service_decl
 * and the integration tests. Also the one-shot --create-admin command, which
 * needs only the database: its event is published by the relay of the next
 * service start. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tidings/auth.h"
#include "tidings/log.h"
#include "tidings/app.h"
#include "tidings/pool.h"
#include "tidings/service.h"
#include "users/users.h"
#include "users/users_service.h"

struct users_service {
    users_ctx_t ctx;
    td_app_t app;
};

/* Makes sure email is an admin with password. Hashing happens before the
 * transaction; an account whose password already matches is left alone,
 * so a restart with the same TIDINGS_ADMIN_PASSWORD changes nothing. */
static int ensure_admin(td_db_t *db, const td_config_t *cfg, const char *email,
                        const char *password, users_user_t *out, bool *created, char *errstr,
                        size_t errlen)
{
    char hash[TD_PASSWORD_HASH_MAX];
    *created = false;
    int rc = users_password_check(password, errstr, errlen);
    if (rc) return rc;
    if (users_find_by_email(db, email, out) == 0) {
        bool same = !strcmp(out->role, "admin") && td_password_verify(out->password_hash, password);
        if (same) return 0;
        users_user_clear(out);
    }
    if (td_password_hash(password, hash) != 0)
        return td_errf(errstr, errlen, TD_EIO, "cannot hash the admin password");
    rc = users_ensure_admin(db, cfg, email, hash, td_now_ms(), created, out);
    if (rc) return td_errf(errstr, errlen, rc, "cannot create the admin account %s", email);
    return 0;
}

unsigned users_hash_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN) / 2;
    return n < 1 ? 1 : n > 4 ? 4 : (unsigned)n;
}

void *users_service_start(const td_config_t *cfg, char *errstr, size_t errlen)
{
    users_service_t *svc = td_calloc(1, sizeof *svc);
    td_app_opts_t opts = {
        .service = TD_SVC_USERS,
        .http_threads = TD_HTTP_WRITE_THREADS,
        .migs = users_migrations,
        .mig_cnt = users_migration_cnt,
        .routes = users_routes,
        .route_cnt = users_route_cnt,
        .ctx = &svc->ctx,
    };

    if (td_app_open(&svc->app, cfg, &opts, errstr, errlen) != 0) goto fail;
    svc->ctx.cfg = cfg;
    svc->ctx.db = svc->app.db;

    if (cfg->admin_password) {
        users_user_t admin;
        bool created;
        char err[256];
        if (ensure_admin(svc->app.db, cfg, USERS_ADMIN_EMAIL, cfg->admin_password, &admin, &created,
                         err, sizeof(err)) != 0) {
            td_errf(errstr, errlen, TD_EINVAL, "TIDINGS_ADMIN_PASSWORD: %s", err);
            goto fail;
        }
        td_info("users: admin %s %s (%s)", USERS_ADMIN_EMAIL, created ? "created" : "present",
                admin.id);
        users_user_clear(&admin);
    }

    svc->ctx.hash_pool = td_pool_new("password_hash", users_hash_threads(), USERS_HASH_QUEUE);
    if (!svc->ctx.hash_pool) {
        td_errf(errstr, errlen, TD_EIO, "cannot start the password hashing threads");
        goto fail;
    }
    if (td_app_serve(&svc->app, &opts, errstr, errlen) != 0) goto fail;
    return svc;
fail:
    users_service_stop(svc);
    return NULL;
}

int users_service_port(const users_service_t *svc)
{
    return td_app_port(&svc->app);
}

td_db_t *users_service_db(const users_service_t *svc)
{
    return svc->app.db;
}

void users_service_stop(void *arg)
{
    users_service_t *svc = arg;
    if (!svc) return;
    /* HTTP first (it waits for every deferred login, so the pool is idle
     * when the database closes), then the pool. */
    td_app_close(&svc->app);
    td_pool_free(svc->ctx.hash_pool);
    free(svc);
}

/* ---- --create-admin ---------------------------------------------------- */

typedef struct create_admin_opts {
    const char *email;
} create_admin_opts_t;

/* The users command's own flag: what users_service_decl lists in --help
 * and users_create_admin_main parses. */
static const td_flag_t users_flags[] = {
    {"--create-admin", NULL, "EMAIL", TD_FLAG_STR, offsetof(create_admin_opts_t, email),
     "create (or promote) an admin account with the password\n"
     "from TIDINGS_ADMIN_PASSWORD or one line on stdin,\n"
     "print its userId and exit"},
};

static const td_command_t create_admin_cmd = {
    .name = "users",
    .flags = users_flags,
    .flag_cnt = TD_ARRAY_SIZE(users_flags),
};

/* One line from stdin without its line end; NULL at EOF. Caller frees. */
static char *read_password_line(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n = getline(&line, &cap, stdin);
    if (n < 0) {
        free(line);
        return NULL;
    }
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    return line;
}

int users_create_admin_main(int argc, char **argv)
{
    td_config_t cfg;
    char err[512], email[USERS_EMAIL_MAX + 1];
    create_admin_opts_t o = {0};
    const char *raw_email = NULL;
    char *password = NULL;
    td_db_t *db = NULL;
    int rc = 1;
    memset(&cfg, 0, sizeof(cfg));

    td_log_init("users", TD_LOG_WARN, false);
    if (td_config_load_cmd(&cfg, &create_admin_cmd, &o, argc, argv, NULL, err, sizeof(err)) != 0) {
        fprintf(stderr, "tidings users: %s\n", err);
        goto out;
    }
    raw_email = o.email;
    td_log_init("users", cfg.log_level > TD_LOG_WARN ? cfg.log_level : TD_LOG_WARN, false);
    if (!raw_email || !*raw_email) {
        fprintf(stderr, "tidings users: --create-admin needs an EMAIL\n");
        goto out;
    }
    if (users_email_normalize(raw_email, email, sizeof(email), err, sizeof(err)) != 0) {
        fprintf(stderr, "tidings users: %s\n", err);
        goto out;
    }
    password = cfg.admin_password ? td_strdup(cfg.admin_password) : read_password_line();
    if (!password) {
        fprintf(stderr, "tidings users: no password: set TIDINGS_ADMIN_PASSWORD or give it "
                        "as one line on stdin\n");
        goto out;
    }
    db = td_service_db(&cfg, users_migrations, users_migration_cnt, err, sizeof(err));
    if (!db) {
        fprintf(stderr, "tidings users: %s\n", err);
        goto out;
    }
    users_user_t admin;
    bool created;
    if (ensure_admin(db, &cfg, email, password, &admin, &created, err, sizeof(err)) != 0) {
        fprintf(stderr, "tidings users: %s\n", err);
        goto out;
    }
    printf("%s\n", admin.id);
    fflush(stdout);
    fprintf(stderr, "tidings users: %s is %s admin\n", email, created ? "a new" : "now an");
    users_user_clear(&admin);
    rc = 0;
out:
    if (db) td_db_close(db);
    if (password) {
        memset(password, 0, strlen(password));
        free(password);
    }
    td_config_free(&cfg);
    return rc;
}

/* users_service_decl's pre_main: `--create-admin EMAIL` runs instead of the
 * service. */
static int users_pre_main(int argc, char **argv)
{
    return td_config_has_flag(argc, argv, &users_flags[0]) ? users_create_admin_main(argc, argv)
                                                           : TD_SERVICE_RUN;
}

const td_service_decl_t users_service_decl = {
    .id = TD_SVC_USERS,
    .summary = "the users service",
    .flags = users_flags,
    .flag_cnt = TD_ARRAY_SIZE(users_flags),
    .pre_main = users_pre_main,
    .start = users_service_start,
    .stop = users_service_stop,
};
