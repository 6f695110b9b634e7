/* The users domain: validation of what people type (emails, passwords,
 * names), the accounts table, the login-failure log behind the rate limit,
 * and the two events the service publishes. Each state change runs in one
 * transaction with td_outbox_add, so an account never exists without its
 * UserRegisteredEvent and a login event is never published for a login
 * that did not happen. */
#include "users/users.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/catalog.h"
#include "tidings/bus.h"
#include "tidings/envelope.h"
#include "tidings/json.h"
#include "tidings/log.h"

/* Version 1. login_failures holds one row per failed (or not yet
 * verified) login attempt; rows older than the window are pruned as new
 * attempts come in. */
#define USERS_SCHEMA_V1                                                          \
    "CREATE TABLE users ("                                                       \
    "  id TEXT PRIMARY KEY,"                                                     \
    "  email TEXT NOT NULL UNIQUE,"                                              \
    "  name TEXT NOT NULL,"                                                      \
    "  password_hash TEXT NOT NULL,"                                             \
    "  role TEXT NOT NULL CHECK (role IN ('customer', 'admin')),"                \
    "  created_at TEXT NOT NULL"                                                 \
    ");"                                                                         \
    "CREATE TABLE login_failures (email TEXT NOT NULL, at_ms INTEGER NOT NULL);" \
    "CREATE INDEX login_failures_by_email ON login_failures (email, at_ms);"

/* Version 2: the client address of each attempt, for the per-IP limit
 * (rows from before have none and count for no address). */
#define USERS_SCHEMA_V2                              \
    "ALTER TABLE login_failures ADD COLUMN ip TEXT;" \
    "CREATE INDEX login_failures_by_ip ON login_failures (ip, at_ms);"

const td_migration_t users_migrations[] = {
    {1, USERS_SCHEMA_V1},
    {2, USERS_SCHEMA_V2},
};
const size_t users_migration_cnt = TD_ARRAY_SIZE(users_migrations);

void users_user_clear(users_user_t *user)
{
    if (!user) return;
    free(user->email);
    free(user->name);
    free(user->password_hash);
    memset(user, 0, sizeof(*user));
}

/* ---- validation -------------------------------------------------------- */

static bool is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

static bool is_ctl(unsigned char c)
{
    return c < 0x20 || c == 0x7f;
}

int users_email_normalize(const char *in, char *out, size_t outlen, char *errstr, size_t errlen)
{
    const char *bad = "email must be a valid email address";
    if (!in) return td_errf(errstr, errlen, TD_EINVAL, "email is required");
    const char *b = in, *e = in + strlen(in);
    while (b < e && is_ws((unsigned char)*b)) b++;
    while (e > b && is_ws((unsigned char)e[-1])) e--;
    size_t len = (size_t)(e - b);
    if (len == 0) return td_errf(errstr, errlen, TD_EINVAL, "email is required");
    if (len > USERS_EMAIL_MAX)
        return td_errf(errstr, errlen, TD_EINVAL, "email must be at most %d characters",
                       USERS_EMAIL_MAX);
    if (len + 1 > outlen) return td_errf(errstr, errlen, TD_EINVAL, "%s", bad);

    size_t at = len, ats = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)b[i];
        if (is_ctl(c) || c == ' ') return td_errf(errstr, errlen, TD_EINVAL, "%s", bad);
        if (c == '@') {
            ats++;
            at = i;
        }
        out[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    out[len] = '\0';
    if (ats != 1 || at == 0) return td_errf(errstr, errlen, TD_EINVAL, "%s", bad);

    /* The domain: labels separated by dots, at least two, none empty. */
    const char *dom = out + at + 1;
    size_t dlen = len - at - 1, labels = 1;
    if (dlen == 0 || dom[0] == '.' || dom[dlen - 1] == '.')
        return td_errf(errstr, errlen, TD_EINVAL, "%s", bad);
    for (size_t i = 0; i < dlen; i++) {
        if (dom[i] != '.') continue;
        if (dom[i + 1] == '.') return td_errf(errstr, errlen, TD_EINVAL, "%s", bad);
        labels++;
    }
    if (labels < 2) return td_errf(errstr, errlen, TD_EINVAL, "%s", bad);
    return 0;
}

int users_password_check(const char *password, char *errstr, size_t errlen)
{
    if (!password) return td_errf(errstr, errlen, TD_EINVAL, "password is required");
    size_t n = td_utf8_len(password);
    if (n < USERS_PASSWORD_MIN)
        return td_errf(errstr, errlen, TD_EINVAL, "password must be at least %d characters",
                       USERS_PASSWORD_MIN);
    if (n > USERS_PASSWORD_MAX)
        return td_errf(errstr, errlen, TD_EINVAL, "password must be at most %d characters",
                       USERS_PASSWORD_MAX);
    return 0;
}

int users_name_check(const char *name, char *errstr, size_t errlen)
{
    if (!name || !*name) return td_errf(errstr, errlen, TD_EINVAL, "name is required");
    if (td_utf8_len(name) > USERS_NAME_MAX)
        return td_errf(errstr, errlen, TD_EINVAL, "name must be at most %d characters",
                       USERS_NAME_MAX);
    bool blank = true;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        if (is_ctl(*p))
            return td_errf(errstr, errlen, TD_EINVAL, "name must not contain control characters");
        if (!is_ws(*p)) blank = false;
    }
    if (blank) return td_errf(errstr, errlen, TD_EINVAL, "name must not be blank");
    return 0;
}

int64_t users_login_blocked_ms(const int64_t *recent_ms, size_t n, int64_t now_ms)
{
    if (n < USERS_LOGIN_MAX_FAILS) return 0;
    /* The window of the newest MAX failures passes when the oldest of them
     * is older than the window: from then on fewer than MAX remain in it. */
    int64_t until = recent_ms[USERS_LOGIN_MAX_FAILS - 1] + USERS_LOGIN_WINDOW_MS;
    if (until <= now_ms) return 0;
    int64_t left = until - now_ms;
    /* A clock that stepped back must not lock an account for longer. */
    return left > USERS_LOGIN_WINDOW_MS ? USERS_LOGIN_WINDOW_MS : left;
}

int64_t users_retry_after_s(int64_t blocked_ms)
{
    if (blocked_ms <= 0) return 1;
    int64_t s = (blocked_ms + 999) / 1000;
    return s < 1 ? 1 : s;
}

/* ---- state ------------------------------------------------------------- */

static int emit(td_db_t *db, const td_config_t *cfg, const char *type, const char *user_id,
                json_t *data, const users_origin_t *origin)
{
    td_event_t *ev = td_event_new("users", type, user_id, data);
    if (origin && origin->trace) td_event_set_trace_parent(ev, origin->trace);
    if (origin && origin->request_id && *origin->request_id)
        td_event_set_correlation(ev, origin->request_id);
    int rc = td_outbox_add(db, cfg, "users", ev);
    td_event_free(ev);
    return rc;
}

static char *col_text(sqlite3_stmt *st, int col)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    return td_strdup(s ? (const char *)s : "");
}

static void copy_col(sqlite3_stmt *st, int col, char *out, size_t len)
{
    const unsigned char *s = sqlite3_column_text(st, col);
    snprintf(out, len, "%s", s ? (const char *)s : "");
}

/* Fills out from a row of (id, email, name, role, created_at, password_hash). */
static void row_to_user(sqlite3_stmt *st, users_user_t *out, bool with_hash)
{
    copy_col(st, 0, out->id, sizeof(out->id));
    out->email = col_text(st, 1);
    out->name = col_text(st, 2);
    copy_col(st, 3, out->role, sizeof(out->role));
    copy_col(st, 4, out->created_at, sizeof(out->created_at));
    out->password_hash = with_hash ? col_text(st, 5) : NULL;
}

#define USER_COLS "id, email, name, role, created_at, password_hash"

/* The lookup itself; the caller holds the lock. */
static int find_locked(td_db_t *db, const char *where, const char *arg, users_user_t *out,
                       bool with_hash)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT " USER_COLS " FROM users WHERE %s = ?", where);
    sqlite3_stmt *st = td_db_prepare(db, sql);
    sqlite3_bind_text(st, 1, arg, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    int ret = TD_ENOENT;
    if (rc == SQLITE_ROW) {
        memset(out, 0, sizeof(*out));
        row_to_user(st, out, with_hash);
        ret = 0;
    } else if (rc != SQLITE_DONE) {
        td_error("users: lookup failed: %s", sqlite3_errmsg(td_db_sqlite(db)));
        ret = TD_EIO;
    }
    td_db_done(st);
    return ret;
}

static int insert_user(td_db_t *db, const char *id, const char *email, const char *name,
                       const char *hash, const char *role, const char *created_at)
{
    sqlite3_stmt *st = td_db_prepare(db, "INSERT INTO users (id, email, name, password_hash, "
                                         "role, created_at) VALUES (?, ?, ?, ?, ?, ?)");
    sqlite3_bind_text(st, 1, id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, email, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, hash, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, role, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, created_at, -1, SQLITE_TRANSIENT);
    return td_db_run(db, st);
}

static json_t *registered_data(const users_user_t *u)
{
    return json_pack("{s:s, s:s, s:s, s:s}", "userId", u->id, "email", u->email, "name", u->name,
                     "registeredAt", u->created_at);
}

/* Inserts the account and its event; the caller holds the transaction. */
static int register_locked(td_db_t *db, const td_config_t *cfg, const char *email, const char *name,
                           const char *password_hash, const char *role,
                           const users_origin_t *origin, int64_t now_ms, users_user_t *out)
{
    users_user_t u = {0};
    td_uuid_new(u.id);
    u.email = td_strdup(email);
    u.name = td_strdup(name);
    snprintf(u.role, sizeof(u.role), "%s", role);
    td_time_format(now_ms, u.created_at);
    int rc = insert_user(db, u.id, email, name, password_hash, role, u.created_at);
    if (rc == 0)
        rc = emit(db, cfg, TD_EV_NAME(TD_EV_USER_REGISTERED), u.id, registered_data(&u), origin);
    if (rc == 0)
        *out = u;
    else
        users_user_clear(&u);
    return rc;
}

int users_register(td_db_t *db, const td_config_t *cfg, const char *email, const char *name,
                   const char *password_hash, const char *role, const users_origin_t *origin,
                   int64_t now_ms, users_user_t *out)
{
    memset(out, 0, sizeof(*out));
    int rc = td_db_begin(db);
    if (rc) return rc;
    rc = register_locked(db, cfg, email, name, password_hash, role, origin, now_ms, out);
    if (rc) {
        td_db_rollback(db);
        return rc;
    }
    rc = td_db_commit(db);
    if (rc) users_user_clear(out);
    return rc;
}

int users_find_by_id(td_db_t *db, const char *id, users_user_t *out)
{
    td_db_lock(db);
    int rc = find_locked(db, "id", id, out, false);
    td_db_unlock(db);
    return rc;
}

int users_find_by_email(td_db_t *db, const char *email, users_user_t *out)
{
    td_db_lock(db);
    int rc = find_locked(db, "email", email, out, true);
    td_db_unlock(db);
    return rc;
}

bool users_email_taken(td_db_t *db, const char *email)
{
    users_user_t u;
    bool taken = users_find_by_email(db, email, &u) == 0;
    if (taken) users_user_clear(&u);
    return taken;
}

/* The per-IP limit: when ip has USERS_LOGIN_IP_MAX_FAILS failures within
 * the window, how long until the oldest of the newest that many leaves it
 * (0: not blocked). The lock is held. */
static int64_t ip_blocked_ms(td_db_t *db, const char *ip, int64_t now_ms)
{
    if (!ip || !*ip) return 0;
    sqlite3_stmt *st = td_db_prepare(db, "SELECT at_ms FROM login_failures WHERE ip = ?"
                                         " ORDER BY at_ms DESC LIMIT 1 OFFSET ?");
    sqlite3_bind_text(st, 1, ip, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, USERS_LOGIN_IP_MAX_FAILS - 1);
    int64_t blocked = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        int64_t until = sqlite3_column_int64(st, 0) + USERS_LOGIN_WINDOW_MS;
        if (until > now_ms) blocked = until - now_ms;
        if (blocked > USERS_LOGIN_WINDOW_MS) blocked = USERS_LOGIN_WINDOW_MS;
    }
    td_db_done(st);
    return blocked;
}

int users_login_begin(td_db_t *db, const char *email, const char *ip, int64_t now_ms, bool *found,
                      users_user_t *user, int64_t *retry_after_s)
{
    int64_t recent[USERS_LOGIN_MAX_FAILS];
    size_t n = 0;
    *found = false;
    *retry_after_s = 0;
    memset(user, 0, sizeof(*user));

    int rc = td_db_begin(db);
    if (rc) return rc;
    sqlite3_stmt *st = td_db_prepare(db, "DELETE FROM login_failures WHERE at_ms <= ?");
    sqlite3_bind_int64(st, 1, now_ms - USERS_LOGIN_WINDOW_MS);
    if ((rc = td_db_run(db, st))) goto fail;

    st = td_db_prepare(db, "SELECT at_ms FROM login_failures WHERE email = ? "
                           "ORDER BY at_ms DESC LIMIT ?");
    sqlite3_bind_text(st, 1, email, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 2, USERS_LOGIN_MAX_FAILS);
    while (sqlite3_step(st) == SQLITE_ROW) recent[n++] = sqlite3_column_int64(st, 0);
    td_db_done(st);

    int64_t blocked = users_login_blocked_ms(recent, n, now_ms);
    int64_t ip_blocked = ip_blocked_ms(db, ip, now_ms);
    if (ip_blocked > blocked) blocked = ip_blocked;
    if (blocked > 0) {
        *retry_after_s = users_retry_after_s(blocked);
        rc = TD_ELIMIT;
        goto fail;
    }

    st = td_db_prepare(db, "INSERT INTO login_failures (email, at_ms, ip) VALUES (?, ?, ?)");
    sqlite3_bind_text(st, 1, email, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, 2, now_ms);
    if (ip && *ip)
        sqlite3_bind_text(st, 3, ip, -1, SQLITE_TRANSIENT);
    else
        sqlite3_bind_null(st, 3);
    if ((rc = td_db_run(db, st))) goto fail;

    rc = find_locked(db, "email", email, user, true);
    if (rc && rc != TD_ENOENT) goto fail;
    *found = rc == 0;
    rc = td_db_commit(db);
    if (rc) users_user_clear(user);
    if (rc) *found = false;
    return rc;
fail:
    td_db_rollback(db);
    return rc;
}

/* A copy of s cut to at most max bytes on a UTF-8 character boundary, or
 * NULL when s is not valid UTF-8 (JSON strings must be). */
static json_t *header_string(const char *s, size_t max)
{
    if (!s || !*s) return NULL;
    size_t len = strlen(s);
    if (len > max) {
        len = max;
        while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80) len--;
    }
    return json_stringn(s, len);
}

int users_login_succeed(td_db_t *db, const td_config_t *cfg, const users_user_t *user,
                        const char *user_agent, const char *ip, const users_origin_t *origin,
                        int64_t now_ms)
{
    char at[TD_TIME_LEN + 1];
    td_time_format(now_ms, at);
    json_t *data =
        json_pack("{s:s, s:s, s:s}", "userId", user->id, "email", user->email, "loggedInAt", at);
    json_t *ua = header_string(user_agent, USERS_USER_AGENT_MAX);
    if (ua) json_object_set_new(data, "userAgent", ua);
    json_t *jip = header_string(ip, 64);
    if (jip) json_object_set_new(data, "ip", jip);

    int rc = td_db_begin(db);
    if (rc) {
        json_decref(data);
        return rc;
    }
    sqlite3_stmt *st = td_db_prepare(db, "DELETE FROM login_failures WHERE email = ?");
    sqlite3_bind_text(st, 1, user->email, -1, SQLITE_TRANSIENT);
    rc = td_db_run(db, st);
    if (rc == 0)
        rc = emit(db, cfg, TD_EV_NAME(TD_EV_USER_LOGGED_IN), user->id, data, origin);
    else
        json_decref(data);
    if (rc) {
        td_db_rollback(db);
        return rc;
    }
    return td_db_commit(db);
}

int users_ensure_admin(td_db_t *db, const td_config_t *cfg, const char *email,
                       const char *password_hash, int64_t now_ms, bool *created, users_user_t *out)
{
    *created = false;
    memset(out, 0, sizeof(*out));
    int rc = td_db_begin(db);
    if (rc) return rc;
    rc = find_locked(db, "email", email, out, false);
    if (rc == TD_ENOENT) {
        rc = register_locked(db, cfg, email, USERS_ADMIN_NAME, password_hash, "admin", NULL, now_ms,
                             out);
        if (rc) goto fail;
        *created = true;
    } else if (rc == 0) {
        sqlite3_stmt *st =
            td_db_prepare(db, "UPDATE users SET role = 'admin', password_hash = ? WHERE id = ?");
        sqlite3_bind_text(st, 1, password_hash, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 2, out->id, -1, SQLITE_TRANSIENT);
        if ((rc = td_db_run(db, st))) goto fail;
        snprintf(out->role, sizeof(out->role), "admin");
        /* A new password invalidates a lockout built on the old one. */
        st = td_db_prepare(db, "DELETE FROM login_failures WHERE email = ?");
        sqlite3_bind_text(st, 1, email, -1, SQLITE_TRANSIENT);
        if ((rc = td_db_run(db, st))) goto fail;
    } else {
        goto fail;
    }
    rc = td_db_commit(db);
    if (rc) users_user_clear(out);
    return rc;
fail:
    td_db_rollback(db);
    users_user_clear(out);
    *created = false;
    return rc;
}
