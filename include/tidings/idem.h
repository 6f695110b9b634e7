/* Safe retries (SPEC section 2, "Safe retries"): the stored answers of
 * POSTs sent with an Idempotency-Key, in the service's own database. The
 * HTTP layer (tidings/http.h) is their only user: it looks a key up before
 * the handler runs and stores the answer in the unit that holds the
 * handler's effects (td__db_hold), so the effect and the answer commit
 * together or not at all. A key is per caller ("user:<id>" or "ip:<addr>")
 * and kept TD_IDEM_TTL_MS; td_idem_prune, a retention job of the database
 * (td_db_prune_add, registered by td_idem_migrate), deletes older ones. */
#ifndef TIDINGS_IDEM_H
#define TIDINGS_IDEM_H

#include "tidings/db.h"

#define TD_IDEM_TTL_MS  (24LL * 3600 * 1000)
#define TD_IDEM_KEY_MAX 255
#define TD_IDEM_HASH    32 /* SHA-256 */

/* The table (a component migration) and its retention job. Right after
 * td_db_open, from the opening thread. 0 or TD_EIO with errstr. */
int td_idem_migrate(td_db_t *db, char *errstr, size_t errlen);

/* True when key is 1..255 printable ASCII characters. */
bool td_idem_key_valid(const char *key);

/* A stored answer: status, its headers as "Name: value\n" lines (content
 * type first), and the body. Owned by whoever filled it; td_idem_answer_clear
 * frees it. */
typedef struct td_idem_answer {
    unsigned char hash[TD_IDEM_HASH]; /* of the first request */
    int status;
    char *headers;
    char *body;
    size_t body_len;
    int64_t created_ms;
} td_idem_answer_t;
void td_idem_answer_clear(td_idem_answer_t *a);

/* The answer stored for (caller, key) within TD_IDEM_TTL_MS of now: 0 and
 * *out filled, TD_ENOENT, or TD_EIO. Outside a unit (takes a read). */
int td_idem_lookup(td_db_t *db, const char *caller, const char *key, int64_t now_ms,
                   td_idem_answer_t *out);

/* Inside a unit: stores a's answer for (caller, key), replacing an expired
 * row; TD_EEXIST when a live one is there already (another instance got
 * there first), TD_EIO. */
int td_idem_store(td_db_t *db, const char *caller, const char *key, const td_idem_answer_t *a,
                  int64_t now_ms);

/* Deletes every key older than TD_IDEM_TTL_MS before now_ms (what the
 * retention job runs), in units of its own. The number deleted, or TD_EIO.
 * Not inside a unit. */
int td_idem_prune(td_db_t *db, int64_t now_ms);

#endif
