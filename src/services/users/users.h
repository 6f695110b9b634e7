/* The users service's domain: accounts, their validation rules, the login
 * rate limit, and the state changes on its own database, each in one
 * transaction together with its outbox event (UserRegisteredEvent,
 * UserLoggedInEvent on topic "users", key userId). No HTTP and no Kafka
 * here: routes.c parses requests and calls these, unit tests call them on a
 * temporary database.
 *
 * Password hashing (argon2id) is slow, so it never happens inside these
 * functions: callers hash or verify with tidings/auth.h outside the
 * database lock and pass the result in. Every function may be called from
 * any thread (the td_db_t serialises access). */
#ifndef TIDINGS_USERS_H
#define TIDINGS_USERS_H

#include "tidings/config.h"
#include "tidings/db.h"
#include "tidings/trace.h"
#include "tidings/uuid.h"

#define USERS_EMAIL_MAX       254  /* bytes, after trimming (RFC 5321 path limit) */
#define USERS_PASSWORD_MIN    8    /* characters */
#define USERS_PASSWORD_MAX    1024 /* characters: bounds the hashing work */
#define USERS_NAME_MAX        100  /* characters */
#define USERS_LOGIN_MAX_FAILS 5
#define USERS_LOGIN_WINDOW_MS (15 * 60 * 1000)
/* Failed logins from one client address within the window after which
 * every login from it gets 429 (SPEC section 5: more than 100). */
#define USERS_LOGIN_IP_MAX_FAILS 100
#define USERS_USER_AGENT_MAX     512 /* bytes of User-Agent kept in a login event */
#define USERS_ADMIN_EMAIL        "admin@tidings.local"
#define USERS_ADMIN_NAME         "Administrator"

/* The schema, migrations 1.. for td_db_open / td_service_db. */
extern const td_migration_t users_migrations[];
extern const size_t users_migration_cnt;

/* An account as the API shows it (the hash stays in the database unless
 * asked for). Strings are owned; free with users_user_clear. */
typedef struct users_user {
    char id[TD_UUID_LEN + 1];
    char *email;
    char *name;
    char role[16]; /* "customer" | "admin" */
    char created_at[TD_TIME_LEN + 1];
    char *password_hash; /* only filled by users_find_by_email */
} users_user_t;

void users_user_clear(users_user_t *user);

/* Where a state change came from: the HTTP request's trace (NULL = a new
 * trace) and its request id, the events' correlation id (NULL = userId). */
typedef struct users_origin {
    const td_trace_t *trace;
    const char *request_id;
} users_origin_t;

/* ---- validation (pure) ------------------------------------------------- */

/* Trims ASCII whitespace, lowercases ASCII letters and validates: one '@',
 * a non-empty local part, a domain with a dot and no empty labels, at most
 * USERS_EMAIL_MAX bytes, no spaces or control characters. The normal form
 * goes to out (at least USERS_EMAIL_MAX + 1 bytes). TD_EINVAL with a
 * message otherwise. */
int users_email_normalize(const char *in, char *out, size_t outlen, char *errstr, size_t errlen);
/* USERS_PASSWORD_MIN..USERS_PASSWORD_MAX characters. */
int users_password_check(const char *password, char *errstr, size_t errlen);
/* 1..USERS_NAME_MAX characters, not only whitespace, no control chars. */
int users_name_check(const char *name, char *errstr, size_t errlen);

/* The login rate limit's arithmetic. recent_ms holds the times of the most
 * recent failures for one email, newest first (n of them). Returns 0 when a
 * login may be tried at now_ms, else the milliseconds until the window of
 * the USERS_LOGIN_MAX_FAILS newest failures has passed. */
int64_t users_login_blocked_ms(const int64_t *recent_ms, size_t n, int64_t now_ms);
/* Milliseconds -> a Retry-After value in whole seconds, rounded up, >= 1. */
int64_t users_retry_after_s(int64_t blocked_ms);

/* ---- state ------------------------------------------------------------- */

/* Creates a customer (or an admin when role is "admin") with the given
 * normalised email, checked name and argon2id hash, and its
 * UserRegisteredEvent, in one transaction. TD_EEXIST when the email is
 * taken, TD_EIO on database failure. out is filled on success. */
int users_register(td_db_t *db, const td_config_t *cfg, const char *email, const char *name,
                   const char *password_hash, const char *role, const users_origin_t *origin,
                   int64_t now_ms, users_user_t *out);

/* Reads an account by id / normalised email. TD_ENOENT when there is none.
 * find_by_email also fills password_hash. */
int users_find_by_id(td_db_t *db, const char *id, users_user_t *out);
int users_find_by_email(td_db_t *db, const char *email, users_user_t *out);
/* True when some account has this normalised email. */
bool users_email_taken(td_db_t *db, const char *email);

/* The first half of a login, in one transaction: when the email has
 * USERS_LOGIN_MAX_FAILS failures within the window, or the client address
 * ip (NULL or empty: none) USERS_LOGIN_IP_MAX_FAILS, TD_ELIMIT and
 * *retry_after_s set (nothing recorded). Otherwise the attempt is recorded
 * as a failure of email from ip up front (so concurrent guesses count
 * too; a success clears the email's), *found tells whether the account
 * exists and user is filled (with its hash) when it does. Old failures
 * are pruned. */
int users_login_begin(td_db_t *db, const char *email, const char *ip, int64_t now_ms, bool *found,
                      users_user_t *user, int64_t *retry_after_s);
/* The second half after the password verified: clears the email's
 * failures and adds UserLoggedInEvent (user_agent and ip optional: NULL or
 * empty leaves them out; a User-Agent that is not UTF-8 is left out, a long
 * one cut) in one transaction. */
int users_login_succeed(td_db_t *db, const td_config_t *cfg, const users_user_t *user,
                        const char *user_agent, const char *ip, const users_origin_t *origin,
                        int64_t now_ms);

/* Makes sure an admin with this normalised email exists with this
 * password: a new account (name USERS_ADMIN_NAME, UserRegisteredEvent) or
 * an existing one promoted to admin and given password_hash. *created
 * tells which. out gets the account. */
int users_ensure_admin(td_db_t *db, const td_config_t *cfg, const char *email,
                       const char *password_hash, int64_t now_ms, bool *created, users_user_t *out);

#endif
