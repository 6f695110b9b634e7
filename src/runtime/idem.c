/* The stored answers behind Idempotency-Key (tidings/idem.h): one table in
 * the service's database, keyed by caller and key, holding a SHA-256 of the
 * first request and its answer. Lookups read a snapshot; the answer is
 * written inside the unit that holds the request's effects, so a crash
 * leaves either both or neither. Expired keys are pruned in one place,
 * td_idem_prune, a retention job of the database (td_db_prune_add). */
#include "tidings/idem.h"

#include <stdlib.h>
#include <string.h>

#include "tidings/log.h"

static const td_migration_t idem_migrations[] = {
    {1, "CREATE TABLE td_idempotency ("
        " caller TEXT NOT NULL,"
        " key TEXT NOT NULL,"
        " hash BLOB NOT NULL,"
        " status INTEGER NOT NULL,"
        " headers TEXT NOT NULL,"
        " body BLOB NOT NULL,"
        " created_ms INTEGER NOT NULL,"
        " PRIMARY KEY(caller, key)) WITHOUT ROWID;"
        "CREATE INDEX td_idempotency_created ON td_idempotency(created_ms);"},
};

/* The retention job: what is older than cutoff goes, in chunks. */
static int prune_job(td_db_t *db, int64_t cutoff_ms, int64_t *deleted)
{
    return td_db_prune_chunks(db,
                              "DELETE FROM td_idempotency WHERE (caller, key) IN"
                              " (SELECT caller, key FROM td_idempotency WHERE created_ms <= ?1"
                              " LIMIT 2000)", /* TD_PRUNE_CHUNK */
                              cutoff_ms, false, deleted);
}

int td_idem_migrate(td_db_t *db, char *errstr, size_t errlen)
{
    int rc = td_db_migrate(db, "idempotency", idem_migrations, TD_ARRAY_SIZE(idem_migrations),
                           errstr, errlen);
    if (rc == 0) td_db_prune_add(db, "td_idempotency", prune_job, TD_IDEM_TTL_MS);
    return rc;
}

bool td_idem_key_valid(const char *key)
{
    size_t n = 0;
    for (const char *p = key; *p; p++, n++)
        if (*p < 0x20 || *p > 0x7e) return false;
    return n >= 1 && n <= TD_IDEM_KEY_MAX;
}

void td_idem_answer_clear(td_idem_answer_t *a)
{
    free(a->headers);
    free(a->body);
    memset(a, 0, sizeof(*a));
}

int td_idem_lookup(td_db_t *db, const char *caller, const char *key, int64_t now_ms,
                   td_idem_answer_t *out)
{
    memset(out, 0, sizeof(*out));
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, "SELECT hash, status, headers, body, created_ms"
                                         " FROM td_idempotency WHERE caller = ? AND key = ?"
                                         " AND created_ms > ?");
    sqlite3_bind_text(st, 1, caller, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_ms - TD_IDEM_TTL_MS);
    int rc = sqlite3_step(st);
    int out_rc = TD_ENOENT;
    if (rc == SQLITE_ROW) {
        const void *h = sqlite3_column_blob(st, 0);
        if (h && sqlite3_column_bytes(st, 0) == TD_IDEM_HASH) memcpy(out->hash, h, TD_IDEM_HASH);
        out->status = sqlite3_column_int(st, 1);
        out->headers = td_strdup((const char *)sqlite3_column_text(st, 2));
        size_t len = (size_t)sqlite3_column_bytes(st, 3);
        out->body = td_malloc(len + 1);
        if (len) memcpy(out->body, sqlite3_column_blob(st, 3), len);
        out->body[len] = '\0';
        out->body_len = len;
        out->created_ms = sqlite3_column_int64(st, 4);
        out_rc = 0;
    } else if (rc != SQLITE_DONE) {
        td_error("idempotency: lookup failed: %s", sqlite3_errmsg(td_db_sqlite(db)));
        out_rc = TD_EIO;
    }
    td_db_done(st);
    td_db_unlock(db);
    return out_rc;
}

int td_idem_prune(td_db_t *db, int64_t now_ms)
{
    int64_t deleted = 0;
    int rc = prune_job(db, now_ms - TD_IDEM_TTL_MS, &deleted);
    if (rc) return rc;
    if (deleted > 0) td_debug("idempotency: pruned %lld expired keys", (long long)deleted);
    return (int)deleted;
}

int td_idem_store(td_db_t *db, const char *caller, const char *key, const td_idem_answer_t *a,
                  int64_t now_ms)
{
    /* An expired row of the same key that the prune has not reached yet
     * gives way; a live one stays and makes the insert fail. */
    sqlite3_stmt *st = td_db_prepare(db, "DELETE FROM td_idempotency WHERE caller = ? AND key = ?"
                                         " AND created_ms <= ?");
    sqlite3_bind_text(st, 1, caller, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, now_ms - TD_IDEM_TTL_MS);
    if (td_db_run(db, st) != 0) return TD_EIO;
    st = td_db_prepare(db, "INSERT INTO td_idempotency(caller, key, hash, status, headers, body,"
                           " created_ms) VALUES(?,?,?,?,?,?,?)");
    sqlite3_bind_text(st, 1, caller, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, a->hash, TD_IDEM_HASH, SQLITE_STATIC);
    sqlite3_bind_int(st, 4, a->status);
    sqlite3_bind_text(st, 5, a->headers ? a->headers : "", -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 6, a->body ? a->body : "", (int)a->body_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, now_ms);
    return td_db_run(db, st);
}
