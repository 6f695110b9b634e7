/* The transactional outbox and its relay. A service writes its events into
 * the td_outbox table in the same SQLite transaction as the state change
 * that caused them; the relay thread reads the table in id order, produces
 * each row with an idempotent producer, and deletes a row only after its
 * delivery report says the broker persisted it. So a crash between commit
 * and publish publishes on the next start, a produce error is retried, and
 * the worst case is an event published twice with the same ce_id, which
 * the consumers' inbox makes a no-op (SPEC section 4).
 *
 * The relay that publishes the table is relay.c. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/bus.h"
#include "tidings/fault.h"
#include "tidings/log.h"
#include "tidings/metrics.h"

/* ---- outbox ------------------------------------------------------------ */

int td_outbox_add_record(td_db_t *db, const td_record_t *rec)
{
    size_t hlen = 0;
    void *hblob = td_headers_encode(rec, &hlen);
    sqlite3_stmt *st = td_db_prepare(
        db, "INSERT INTO td_outbox(topic, key, value, headers, created_ms) VALUES(?,?,?,?,?)");
    sqlite3_bind_text(st, 1, rec->topic, -1, SQLITE_STATIC);
    if (rec->key)
        sqlite3_bind_blob(st, 2, rec->key, (int)rec->key_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 2);
    if (rec->value)
        sqlite3_bind_blob(st, 3, rec->value, (int)rec->value_len, SQLITE_STATIC);
    else
        sqlite3_bind_null(st, 3);
    sqlite3_bind_blob(st, 4, hblob, (int)hlen, SQLITE_STATIC);
    sqlite3_bind_int64(st, 5, td_now_ms());
    int rc = td_db_run(db, st);
    free(hblob);
    if (rc != 0) return TD_EIO;
    td__db_mark_dirty(db);
    if (td__fault("outbox.after_insert")) return TD_EIO;
    return 0;
}

int td_outbox_add(td_db_t *db, const td_config_t *cfg, const char *topic_short,
                  const td_event_t *ev)
{
    char *topic = td_topic_name(cfg, topic_short);
    td_record_t *rec = td_event_to_record(ev, topic);
    int rc = td_outbox_add_record(db, rec);
    td_record_free(rec);
    free(topic);
    return rc;
}

int64_t td_outbox_backlog(td_db_t *db)
{
    return td_db_read_int(db, "SELECT count(*) FROM td_outbox");
}
