/* The bodies of the bus integration tests' helpers (tbus.h): an embedded
 * broker with a test configuration, the "effects" database and its
 * recording handler, query and wait helpers, and consumer and relay
 * set-ups. */
#include "tbus.h"

static const td_migration_t bt_effects_migs[] = {
    {1, "CREATE TABLE effects(seq INTEGER PRIMARY KEY AUTOINCREMENT, ce_id TEXT NOT NULL,"
        " subject TEXT, n INTEGER, type TEXT, source TEXT, time TEXT, correlationid TEXT,"
        " causationid TEXT, traceparent TEXT, topic TEXT, part INTEGER, off INTEGER);"},
};

void bt_setup(bt_env_t *env, const char *name)
{
    memset(env, 0, sizeof(*env));
    env->dir = ts_tmpdir(name);
    ts_config(&env->cfg, "orders", env->dir, NULL);
    env->broker = ts_broker(&env->cfg);
    env->cfg.brokers = td_strdup(td_broker_bootstraps(env->broker));
}

void bt_teardown(bt_env_t *env)
{
    td_broker_stop(env->broker);
    td_config_free(&env->cfg);
    free(env->dir);
}

td_db_t *bt_db(const bt_env_t *env, const char *file)
{
    char err[512];
    char *path = td_asprintf("%s/%s", env->dir, file);
    td_db_t *db =
        td_db_open(path, bt_effects_migs, TD_ARRAY_SIZE(bt_effects_migs), err, sizeof(err));
    if (!db) fprintf(stderr, "bt_db: %s\n", err);
    assert_non_null(db);
    free(path);
    return db;
}

int bt_record_effect(td_db_t *db, const td_event_t *ev)
{
    char tp[TD_TRACEPARENT_LEN + 1];
    td_trace_format(&ev->trace, tp);
    json_t *n = json_object_get(ev->data, "n");
    sqlite3_stmt *st = td_db_prepare(
        db, "INSERT INTO effects(ce_id, subject, n, type, source, time, correlationid,"
            " causationid, traceparent, topic, part, off) VALUES(?,?,?,?,?,?,?,?,?,?,?,?)");
    sqlite3_bind_text(st, 1, ev->id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, ev->subject, -1, SQLITE_TRANSIENT);
    if (json_is_integer(n))
        sqlite3_bind_int64(st, 3, json_integer_value(n));
    else
        sqlite3_bind_null(st, 3);
    sqlite3_bind_text(st, 4, ev->type, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, ev->source, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, ev->time, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 7, ev->correlationid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 8, ev->causationid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 9, tp, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 10, ev->topic, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 11, ev->partition);
    sqlite3_bind_int64(st, 12, ev->offset);
    return td_db_run(db, st) == 0 ? 0 : TD_EIO;
}

int bt_effect_handler(void *ctx, td_db_t *db, const td_event_t *ev, char *errstr, size_t errlen)
{
    (void)ctx;
    (void)errstr;
    (void)errlen;
    return bt_record_effect(db, ev);
}

int64_t bt_query_int(td_db_t *db, const char *sql)
{
    td_db_lock(db);
    sqlite3_stmt *st = td_db_prepare(db, sql);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(db);
    return v;
}

void bt_publish(td_db_t *db, const td_config_t *cfg, td_event_t **evs, size_t cnt, size_t per_tx)
{
    for (size_t i = 0; i < cnt; i += per_tx) {
        assert_int_equal(td_db_begin(db), 0);
        for (size_t j = i; j < cnt && j < i + per_tx; j++)
            assert_int_equal(td_outbox_add(db, cfg, "orders", evs[j]), 0);
        assert_int_equal(td_db_commit(db), 0);
    }
}

bool bt_count_reached(void *arg)
{
    bt_count_arg_t *a = arg;
    return bt_query_int(a->db, a->sql) >= a->want;
}

bool bt_wait_count(td_db_t *db, const char *sql, int64_t want, int timeout_ms)
{
    bt_count_arg_t a = {db, sql, want};
    return ts_wait_until(bt_count_reached, &a, timeout_ms);
}

bool bt_processed_reached(void *arg)
{
    bt_processed_arg_t *a = arg;
    return td_consumer_processed(a->cons) >= a->want;
}

bool bt_wait_processed(td_consumer_t *cons, int64_t want, int timeout_ms)
{
    bt_processed_arg_t a = {cons, want};
    return ts_wait_until(bt_processed_reached, &a, timeout_ms);
}

td_consumer_t *bt_consumer(const bt_env_t *env, td_db_t *db, const char *group,
                           const td_handler_t *handlers, size_t handler_cnt, void *ctx)
{
    return bt_consumer_batched(env, db, group, handlers, handler_cnt, ctx, 0);
}

td_consumer_t *bt_consumer_batched(const bt_env_t *env, td_db_t *db, const char *group,
                                   const td_handler_t *handlers, size_t handler_cnt, void *ctx,
                                   size_t batch_max)
{
    static const char *const topics[] = {"orders"};
    char err[512];
    td_consumer_opts_t opts = {
        .group = group,
        .topics = topics,
        .topic_cnt = 1,
        .handlers = handlers,
        .handler_cnt = handler_cnt,
        .ctx = ctx,
        .db = db,
        .batch_max = batch_max,
    };
    td_consumer_t *cons = td_consumer_start(&env->cfg, &opts, err, sizeof(err));
    if (!cons) fprintf(stderr, "bt_consumer: %s\n", err);
    assert_non_null(cons);
    return cons;
}

td_relay_t *bt_relay(const bt_env_t *env, td_db_t *db)
{
    char err[512];
    td_relay_t *relay = td_relay_start(&env->cfg, db, err, sizeof(err));
    if (!relay) fprintf(stderr, "bt_relay: %s\n", err);
    assert_non_null(relay);
    return relay;
}

const char *bt_header(const td_record_t *rec, const char *name)
{
    const char *v = td_record_header_str(rec, name);
    return v ? v : "";
}
