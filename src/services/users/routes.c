/* The users service's HTTP API (SPEC section 2): registration, login with
 * its rate limit, and the caller's own account. Handlers parse and check
 * the body, do the slow argon2id work with no lock held, then call the
 * domain, which changes state and adds the event in one transaction.
 *
 * Login answers an unknown email exactly like a wrong password, with the
 * same message and about the same time: it verifies against a dummy hash
 * so the response time does not tell which emails have accounts. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "tidings/auth.h"
#include "tidings/json.h"
#include "tidings/log.h"
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

static users_origin_t origin_of(const td_req_t *req)
{
    users_origin_t o = {&req->trace, req->request_id};
    return o;
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

static void register_user(td_req_t *req, td_resp_t *resp)
{
    users_ctx_t *ctx = req->ctx;
    char err[160], email[USERS_EMAIL_MAX + 1], hash[TD_PASSWORD_HASH_MAX];
    const char *password, *name;

    if (!td_req_body(req, resp)) return;
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
    if (td_password_hash(password, hash) != 0) {
        td_resp_error(resp, 500, "cannot hash the password");
        return;
    }
    users_origin_t origin = origin_of(req);
    users_user_t u;
    int rc =
        users_register(ctx->db, ctx->cfg, email, name, hash, "customer", &origin, td_now_ms(), &u);
    if (rc == TD_EEXIST) {
        td_resp_error(resp, 409, "email is already registered");
        return;
    }
    if (rc) {
        td_resp_error(resp, 500, "cannot register the user");
        return;
    }
    td_info("users: registered %s", u.id);
    td_resp_json(resp, 201, user_json(&u, false));
    users_user_clear(&u);
}

static void login(td_req_t *req, td_resp_t *resp)
{
    users_ctx_t *ctx = req->ctx;
    char err[160], email[USERS_EMAIL_MAX + 1];
    const char *password;

    if (!td_req_body(req, resp)) return;
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

    bool found;
    int64_t retry_after;
    users_user_t u;
    int rc = users_login_begin(ctx->db, email, td_now_ms(), &found, &u, &retry_after);
    if (rc == TD_ELIMIT) {
        char secs[24];
        snprintf(secs, sizeof(secs), "%lld", (long long)retry_after);
        td_resp_error(resp, 429, "too many failed logins; try again in %s seconds", secs);
        td_resp_header(resp, "Retry-After", secs);
        return;
    }
    if (rc) {
        td_resp_error(resp, 500, "cannot check the login");
        return;
    }

    bool ok;
    if (found) {
        ok = td_password_verify(u.password_hash, password);
    } else {
        pthread_once(&dummy_once, make_dummy_hash);
        td_password_verify(dummy_hash, password);
        ok = false;
    }
    if (!ok) {
        users_user_clear(&u);
        td_resp_error(resp, 401, BAD_LOGIN);
        return;
    }

    users_origin_t origin = origin_of(req);
    int64_t now = td_now_ms();
    rc = users_login_succeed(ctx->db, ctx->cfg, &u, td_req_header(req, "User-Agent"),
                             req->client_ip, &origin, now);
    if (rc) {
        users_user_clear(&u);
        td_resp_error(resp, 500, "cannot record the login");
        return;
    }
    td_claims_t claims = {0};
    snprintf(claims.sub, sizeof(claims.sub), "%s", u.id);
    snprintf(claims.role, sizeof(claims.role), "%s", u.role);
    claims.iat = now / 1000;
    claims.exp = claims.iat + TD_TOKEN_TTL_S;
    char *token = td_jwt_sign(ctx->cfg->secret, ctx->cfg->secret_len, &claims);
    char expires[TD_TIME_LEN + 1];
    td_time_format(claims.exp * 1000, expires);
    td_resp_json(resp, 200,
                 json_pack("{s:s, s:s, s:s, s:s}", "token", token, "userId", u.id, "role", u.role,
                           "expiresAt", expires));
    free(token);
    users_user_clear(&u);
}

static void me(td_req_t *req, td_resp_t *resp)
{
    users_ctx_t *ctx = req->ctx;
    if (!td_req_auth(req, resp, false)) return;
    users_user_t u;
    int rc = users_find_by_id(ctx->db, req->auth.sub, &u);
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
    {"POST", "/users", register_user},
    {"POST", "/login", login},
    {"GET", "/users/me", me},
};
const size_t users_route_cnt = TD_ARRAY_SIZE(users_routes);
