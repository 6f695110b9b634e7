/* The users service's HTTP API (SPEC section 2): registration, login with
 * its rate limits, and the caller's own account. Handlers parse and check
 * the body on the HTTP thread; the slow argon2id work (64 MiB, tens of
 * milliseconds) never runs there (SPEC section 5): the handler takes a
 * place in the service's hashing pool, defers the response (the
 * connection is suspended and holds no thread) and the pool thread hashes
 * or verifies, calls the domain (state and event in one transaction),
 * sets the response and resumes the connection. A full pool answers 503
 * unavailable with Retry-After at once, before anything is recorded, so
 * a flood of logins slows nobody's /healthz or other requests.
 *
 * Login answers an unknown email exactly like a wrong password, with the
 * same message and about the same time: it verifies against a dummy hash
 * so the response time does not tell which emails have accounts. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/auth.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/pool.h"
#include "users/users.h"
#include "users/users_service.h"

#define BAD_LOGIN "invalid email or password"

/* How much raw email text is read before normalising (whitespace around
 * an address is allowed, megabytes of it are not). */
#define EMAIL_RAW_MAX 1024

static const char *const register_fields[] = {"email", "password", "name", NULL};
static const char *const login_fields[] = {"email", "password", NULL};

static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;
static char dummy_hash[TD_PASSWORD_HASH_MAX];

static void make_dummy_hash(void)
{
    char pw[TD_UUID_LEN + 1];
    td_uuid_new(pw);
    if (td_password_hash(pw, dummy_hash) != 0) dummy_hash[0] = '\0';
}

/* What a pool thread needs of a request: copies, because the request's
 * own strings are only borrowed from the suspended connection. */
typedef struct hash_job {
    users_ctx_t *ctx;
    td_deferred_t *d;
    char email[USERS_EMAIL_MAX + 1];
    char *password; /* wiped before it is freed */
    char *name;
    char *user_agent;
    char ip[64];
    td_trace_t trace;
    char request_id[TD_UUID_LEN + 1];
    bool found; /* login: the account exists (then user is filled) */
    users_user_t user;
} hash_job_t;

static hash_job_t *job_new(td_req_t *req, const char *email, const char *password)
{
    hash_job_t *job = td_calloc(1, sizeof(*job));
    job->ctx = req->ctx;
    snprintf(job->email, sizeof(job->email), "%s", email);
    job->password = td_strdup(password);
    snprintf(job->ip, sizeof(job->ip), "%s", req->client_ip);
    job->trace = req->trace;
    snprintf(job->request_id, sizeof(job->request_id), "%s", req->request_id);
    return job;
}

static void job_free(hash_job_t *job)
{
    if (job->password) {
        memset(job->password, 0, strlen(job->password));
        free(job->password);
    }
    free(job->name);
    free(job->user_agent);
    users_user_clear(&job->user);
    free(job);
}

/* Takes a place in the hashing pool: false with 503 and Retry-After set
 * when it is full. */
static bool hash_place(td_req_t *req, td_resp_t *resp)
{
    users_ctx_t *ctx = req->ctx;
    if (td_pool_reserve(ctx->hash_pool) == 0) return true;
    td_resp_error(resp, 503, "too many sign-ins and registrations at once; try again shortly");
    td_resp_header(resp, "Retry-After", USERS_HASH_RETRY_AFTER_S);
    return false;
}

/* Reads and normalises the body's email; false with a 400 set. */
static bool read_email(td_req_t *req, td_resp_t *resp, char *email, size_t len)
{
    char err[160];
    const char *raw;
    if (td_json_req_string(req->body, "email", EMAIL_RAW_MAX, &raw, err, sizeof(err)) != 0 ||
        users_email_normalize(raw, email, len, err, sizeof(err)) != 0) {
        td_resp_error(resp, 400, "%s", err);
        return false;
    }
    return true;
}

static json_t *user_json(const users_user_t *u, bool with_role)
{
    json_t *j = json_pack("{s:s, s:s, s:s}", "userId", u->id, "email", u->email, "name", u->name);
    if (with_role) json_object_set_new(j, "role", json_string(u->role));
    json_object_set_new(j, "createdAt", json_string(u->created_at));
    return j;
}

/* On a pool thread: hash, store, answer. */
static void register_job(void *arg)
{
    hash_job_t *job = arg;
    users_ctx_t *ctx = job->ctx;
    td_resp_t *resp = td_deferred_resp(job->d);
    char hash[TD_PASSWORD_HASH_MAX];
    users_user_t u;
    if (td_password_hash(job->password, hash) != 0) {
        td_resp_error(resp, 500, "cannot hash the password");
        goto out;
    }
    users_origin_t origin = {&job->trace, job->request_id};
    td_deferred_begin(job->d);
    int rc = users_register(ctx->db, ctx->cfg, job->email, job->name, hash, "customer", &origin,
                            td_now_ms(), &u);
    if (rc == TD_EEXIST) {
        td_resp_error(resp, 409, "email is already registered");
        goto out;
    }
    if (rc) {
        td_resp_error(resp, 500, "cannot register the user");
        goto out;
    }
    td_info("users: registered %s", u.id);
    td_resp_json(resp, 201, user_json(&u, false));
    users_user_clear(&u);
out:
    td_deferred_done(job->d);
    job_free(job);
}

static void register_user(td_req_t *req, td_resp_t *resp)
{
    users_ctx_t *ctx = req->ctx;
    char err[160], email[USERS_EMAIL_MAX + 1];
    const char *password, *name;

    if (td_json_only_fields(req->body, register_fields, err, sizeof(err)) != 0) {
        td_resp_error(resp, 400, "%s", err);
        return;
    }
    if (!read_email(req, resp, email, sizeof(email))) return;
    if (td_json_req_string(req->body, "password", USERS_PASSWORD_MAX, &password, err,
                           sizeof(err)) != 0 ||
        users_password_check(password, err, sizeof(err)) != 0 ||
        td_json_req_string(req->body, "name", USERS_NAME_MAX, &name, err, sizeof(err)) != 0 ||
        users_name_check(name, err, sizeof(err)) != 0) {
        td_resp_error(resp, 400, "%s", err);
        return;
    }
    /* Cheap check first so a taken email costs no hashing; the unique
     * index still decides a race. */
    if (users_email_taken(ctx->db, email)) {
        td_resp_error(resp, 409, "email is already registered");
        return;
    }
    if (!hash_place(req, resp)) return;
    hash_job_t *job = job_new(req, email, password);
    job->name = td_strdup(name);
    job->d = td_req_defer(req);
    td_pool_run(ctx->hash_pool, register_job, job);
}

/* On a pool thread: verify, record, answer. */
static void login_job(void *arg)
{
    hash_job_t *job = arg;
    users_ctx_t *ctx = job->ctx;
    td_resp_t *resp = td_deferred_resp(job->d);
    bool ok;
    if (job->found) {
        ok = td_password_verify(job->user.password_hash, job->password);
    } else {
        pthread_once(&dummy_once, make_dummy_hash);
        td_password_verify(dummy_hash, job->password);
        ok = false;
    }
    if (!ok) {
        td_resp_error(resp, 401, BAD_LOGIN);
        goto out;
    }

    users_origin_t origin = {&job->trace, job->request_id};
    int64_t now = td_now_ms();
    int rc =
        users_login_succeed(ctx->db, ctx->cfg, &job->user, job->user_agent, job->ip, &origin, now);
    if (rc) {
        td_resp_error(resp, 500, "cannot record the login");
        goto out;
    }
    users_user_t *u = &job->user;
    td_claims_t claims = {0};
    snprintf(claims.sub, sizeof(claims.sub), "%s", u->id);
    snprintf(claims.role, sizeof(claims.role), "%s", u->role);
    claims.iat = now / 1000;
    claims.exp = claims.iat + TD_TOKEN_TTL_S;
    char *token = td_jwt_sign(ctx->cfg->secret, ctx->cfg->secret_len, &claims);
    char expires[TD_TIME_LEN + 1];
    td_time_format(claims.exp * 1000, expires);
    td_resp_json(resp, 200,
                 json_pack("{s:s, s:s, s:s, s:s}", "token", token, "userId", u->id, "role", u->role,
                           "expiresAt", expires));
    /* A token is never cached, and never kept as an Idempotency-Key's
     * answer (RFC 6749 section 5.1). */
    td_resp_header(resp, "Cache-Control", "no-store");
    free(token);
out:
    td_deferred_done(job->d);
    job_free(job);
}

static void login(td_req_t *req, td_resp_t *resp)
{
    users_ctx_t *ctx = req->ctx;
    char err[160], email[USERS_EMAIL_MAX + 1];
    const char *password;

    if (td_json_only_fields(req->body, login_fields, err, sizeof(err)) != 0) {
        td_resp_error(resp, 400, "%s", err);
        return;
    }
    if (!read_email(req, resp, email, sizeof(email))) return;
    if (td_json_req_string(req->body, "password", USERS_PASSWORD_MAX, &password, err,
                           sizeof(err)) != 0) {
        td_resp_error(resp, 400, "%s", err);
        return;
    }

    /* The place first: a login refused for a full pool records nothing,
     * so it costs the account no step towards its rate limit. */
    if (!hash_place(req, resp)) return;
    hash_job_t *job = job_new(req, email, password);
    int64_t retry_after;
    int rc = users_login_begin(ctx->db, email, req->client_ip, td_now_ms(), &job->found, &job->user,
                               &retry_after);
    if (rc) {
        td_pool_release(ctx->hash_pool);
        job_free(job);
        if (rc == TD_ELIMIT) {
            char secs[24];
            snprintf(secs, sizeof(secs), "%lld", (long long)retry_after);
            td_resp_error(resp, 429, "too many failed logins; try again in %s seconds", secs);
            td_resp_header(resp, "Retry-After", secs);
        } else {
            td_resp_error(resp, 500, "cannot check the login");
        }
        return;
    }
    const char *ua = td_req_header(req, "User-Agent");
    job->user_agent = ua ? td_strdup(ua) : NULL;
    job->d = td_req_defer(req);
    td_pool_run(ctx->hash_pool, login_job, job);
}

static void me(td_req_t *req, td_resp_t *resp)
{
    users_ctx_t *ctx = req->ctx;
    users_user_t u;
    int rc = users_find_by_id(ctx->db, td_req_caller(req)->sub, &u);
    if (rc == TD_ENOENT) {
        td_resp_error(resp, 404, "user not found");
        return;
    }
    if (rc) {
        td_resp_error(resp, 500, "cannot read the user");
        return;
    }
    td_resp_json(resp, 200, user_json(&u, true));
    users_user_clear(&u);
}

const td_route_t users_routes[] = {
    {"POST", "/users", register_user, TD_AUTH_PUBLIC, TD_BODY_JSON, 0},
    {"POST", "/login", login, TD_AUTH_PUBLIC, TD_BODY_JSON, 0},
    {"GET", "/users/me", me, TD_AUTH_USER, TD_BODY_NONE, 0},
};
const size_t users_route_cnt = TD_ARRAY_SIZE(users_routes);
