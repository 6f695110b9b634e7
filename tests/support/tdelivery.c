/* The bodies of the delivery integration tests' helpers (tdelivery.h):
 * the push_receiver.py child process, the service-like database, records
 * to enqueue and the waits. */
#include "tdelivery.h"

static const td_migration_t dt_migs[] = {
    {1, "CREATE TABLE gone_log(seq INTEGER PRIMARY KEY AUTOINCREMENT, channel TEXT NOT NULL,"
        " target_id TEXT NOT NULL);"},
};

void dt_receiver_start(dt_receiver_t *r)
{
    int in[2], out[2];
    assert_int_equal(pipe(in), 0);
    assert_int_equal(pipe(out), 0);
    fcntl(in[1], F_SETFD, FD_CLOEXEC);
    fcntl(out[0], F_SETFD, FD_CLOEXEC);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    char *src = td_strdup(__FILE__);
    char *script = td_asprintf("%s/../integration/push_receiver.py", dirname(src));
    char *argv[] = {"/usr/bin/python3", script, NULL};
    assert_int_equal(posix_spawn(&r->pid, argv[0], &fa, NULL, argv, environ), 0);
    posix_spawn_file_actions_destroy(&fa);
    free(script);
    free(src);
    close(in[0]);
    close(out[1]);
    r->stdin_fd = in[1];

    char line[64] = "";
    size_t n = 0;
    int64_t deadline = td_mono_ms() + 15000;
    while (!strchr(line, '\n') && td_mono_ms() < deadline && n < sizeof(line) - 1) {
        struct pollfd p = {.fd = out[0], .events = POLLIN};
        if (poll(&p, 1, 200) <= 0) continue;
        ssize_t got = read(out[0], line + n, sizeof(line) - 1 - n);
        if (got <= 0) break;
        n += (size_t)got;
        line[n] = '\0';
    }
    close(out[0]);
    assert_int_equal(sscanf(line, "PORT %d", &r->port), 1);
    snprintf(r->base, sizeof(r->base), "http://127.0.0.1:%d", r->port);
}

void dt_receiver_stop(dt_receiver_t *r)
{
    if (r->pid <= 0) return;
    close(r->stdin_fd);
    kill(r->pid, SIGTERM);
    waitpid(r->pid, NULL, 0);
    r->pid = 0;
}

void dt_control(const dt_receiver_t *r, json_t *obj)
{
    char *url = td_asprintf("%s/_control", r->base);
    ts_resp_t resp = ts_http_json("POST", url, NULL, obj);
    assert_int_equal(resp.status, 204);
    ts_resp_free(&resp);
    free(url);
}

json_t *dt_requests(const dt_receiver_t *r, const char *prefix)
{
    char *url = td_asprintf("%s/_log", r->base);
    ts_resp_t resp = ts_http("GET", url, NULL, NULL, NULL, NULL);
    assert_int_equal(resp.status, 200);
    assert_non_null(resp.json);
    json_t *all = json_object_get(resp.json, "requests");
    json_t *out = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(all, i, e)
    {
        const char *path = json_string_value(json_object_get(e, "path"));
        if (!prefix || strncmp(path, prefix, strlen(prefix)) == 0) json_array_append(out, e);
    }
    ts_resp_free(&resp);
    free(url);
    return out;
}

const char *dt_header(const json_t *req, const char *lower_name)
{
    return json_string_value(json_object_get(json_object_get(req, "headers"), lower_name));
}

int dt_status(const json_t *reqs, size_t i)
{
    json_t *s = json_object_get(json_array_get(reqs, i), "status");
    return json_is_integer(s) ? (int)json_integer_value(s) : -1;
}

int64_t dt_t_ms(const json_t *reqs, size_t i)
{
    return json_integer_value(json_object_get(json_array_get(reqs, i), "t_ms"));
}

int dt_gone(void *ctx, td_db_t *db, const char *channel, const char *target_id)
{
    (void)ctx;
    sqlite3_stmt *st = td_db_prepare(db, "INSERT INTO gone_log(channel, target_id) VALUES(?,?)");
    sqlite3_bind_text(st, 1, channel, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, target_id, -1, SQLITE_STATIC);
    return td_db_run(db, st);
}

void dt_open_db(dt_env_t *env)
{
    char err[512];
    env->db = td_db_open(env->db_path, dt_migs, TD_ARRAY_SIZE(dt_migs), err, sizeof(err));
    if (!env->db) fprintf(stderr, "dt_open_db: %s\n", err);
    assert_non_null(env->db);
    assert_int_equal(td_delivery_init(env->db), 0);
}

void dt_setup(dt_env_t *env, const char *name, int max_attempts, bool with_broker)
{
    char err[256];
    memset(env, 0, sizeof(*env));
    td_metrics_reset();
    env->dir = ts_tmpdir(name);
    ts_config(&env->cfg, "notifications", env->dir, NULL);
    env->cfg.delivery_backoff_ms = 20;
    env->cfg.delivery_max_attempts = max_attempts;
    env->cfg.allow_http_endpoints = true;
    free(env->cfg.vapid_subject);
    env->cfg.vapid_subject = td_strdup(DT_SUBJECT);
    if (with_broker) {
        env->broker = ts_broker(&env->cfg);
        free(env->cfg.brokers);
        env->cfg.brokers = td_strdup(td_broker_bootstraps(env->broker));
    }
    env->db_path = td_asprintf("%s/notifications.db", env->dir);
    dt_open_db(env);

    env->vapid = td_vapid_generate(err, sizeof(err));
    env->ua = td_vapid_generate(err, sizeof(err));
    assert_non_null(env->vapid);
    assert_non_null(env->ua);
    env->ua_private = td_vapid_private_b64(env->ua);
    env->p256dh = td_strdup(td_vapid_public_b64(env->ua));
    unsigned char secret[16];
    assert_int_equal(RAND_bytes(secret, sizeof(secret)), 1);
    env->auth = td_b64url_encode(secret, sizeof(secret));

    dt_receiver_start(&env->rcv);
    dt_control(&env->rcv, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "ua_private", env->ua_private,
                                    "ua_public", env->p256dh, "auth", env->auth, "vapid_public",
                                    td_vapid_public_b64(env->vapid), "subject", DT_SUBJECT,
                                    "secret", DT_SECRET));
}

void dt_start_policy(dt_env_t *env, unsigned threads, int timeout_ms,
                     const td_delivery_policy_t *policy)
{
    char err[256];
    static const td_delivery_policy_t no_breaker = {.breaker_failures = 1000000};
    td_delivery_opts_t opts = {
        .policy = policy ? policy : &no_breaker,
        .db = env->db,
        .cfg = &env->cfg,
        .vapid = env->vapid,
        .gone = dt_gone,
        .threads = threads,
        .timeout_ms = timeout_ms,
        .idle_ms = 200,
    };
    env->dlv = td_delivery_start(&opts, err, sizeof(err));
    if (!env->dlv) fprintf(stderr, "td_delivery_start: %s\n", err);
    assert_non_null(env->dlv);
}

void dt_start(dt_env_t *env, unsigned threads, int timeout_ms)
{
    dt_start_policy(env, threads, timeout_ms, NULL);
}

void dt_stop(dt_env_t *env)
{
    td_delivery_stop(env->dlv);
    env->dlv = NULL;
}

void dt_teardown(dt_env_t *env)
{
    if (env->dlv) dt_stop(env);
    dt_receiver_stop(&env->rcv);
    td_db_close(env->db);
    if (env->broker) td_broker_stop(env->broker);
    td_vapid_free(env->vapid);
    td_vapid_free(env->ua);
    free(env->ua_private);
    free(env->p256dh);
    free(env->auth);
    free(env->db_path);
    td_config_free(&env->cfg);
    free(env->dir);
}

json_t *dt_notification(const char *title)
{
    char id[TD_UUID_LEN + 1], order[TD_UUID_LEN + 1];
    td_uuid_new(id);
    td_uuid_new(order);
    return json_pack("{s:s, s:i, s:s, s:s, s:s, s:s, s:{s:s}, s:s, s:n}", "id", id, "seq", 1,
                     "userId", DT_USER, "type", "OrderApprovedEvent", "title", title, "body",
                     "Your order is confirmed.", "data", "orderId", order, "createdAt",
                     "2026-01-02T03:04:05.678Z", "readAt");
}

td_record_t *dt_origin(const dt_env_t *env, const json_t *n)
{
    td_event_t *ev =
        td_event_new("notifications", "NotificationCreatedEvent", DT_USER, json_deep_copy(n));
    char *topic = td_topic_name(&env->cfg, "notifications");
    td_record_t *rec = td_event_to_record(ev, topic);
    free(topic);
    td_event_free(ev);
    return rec;
}

void dt_push(dt_env_t *env, const char *sub_id, const char *path, const json_t *n)
{
    char err[256];
    char *url = td_asprintf("%s%s", env->rcv.base, path);
    char *payload = td_json_dumps(n);
    td_record_t *origin = dt_origin(env, n);
    assert_int_equal(td_db_begin(env->db), 0);
    int rc = td_delivery_enqueue_webpush(env->db, DT_USER, sub_id, url, env->p256dh, env->auth,
                                         json_string_value(json_object_get(n, "id")), payload,
                                         strlen(payload), NULL, 0, origin, err, sizeof(err));
    if (rc != 0) fprintf(stderr, "enqueue webpush: %s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(td_db_commit(env->db), 0);
    td_record_free(origin);
    free(payload);
    free(url);
}

void dt_hook(dt_env_t *env, const char *hook_id, const char *path, const json_t *n)
{
    char err[256];
    char *url = td_asprintf("%s%s", env->rcv.base, path);
    char *body = td_json_dumps(n);
    td_record_t *origin = dt_origin(env, n);
    assert_int_equal(td_db_begin(env->db), 0);
    int rc = td_delivery_enqueue_webhook(env->db, DT_USER, hook_id, url, DT_SECRET,
                                         json_string_value(json_object_get(n, "id")), body,
                                         strlen(body), origin, err, sizeof(err));
    if (rc != 0) fprintf(stderr, "enqueue webhook: %s\n", err);
    assert_int_equal(rc, 0);
    assert_int_equal(td_db_commit(env->db), 0);
    td_record_free(origin);
    free(body);
    free(url);
}

bool dt_queue_empty_cond(void *arg)
{
    return td_delivery_count(((dt_env_t *)arg)->db, "pending") == 0;
}

bool dt_wait_drained(dt_env_t *env, int timeout_ms)
{
    return ts_wait_until(dt_queue_empty_cond, env, timeout_ms);
}

int64_t dt_sql_int(dt_env_t *env, const char *sql)
{
    td_db_lock(env->db);
    sqlite3_stmt *st = td_db_prepare(env->db, sql);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    td_db_done(st);
    td_db_unlock(env->db);
    return v;
}

double dt_metric(const char *channel, const char *result)
{
    char labels[128];
    td_metric_labels(labels, sizeof(labels), "channel", channel, "result", result, NULL);
    return td_metric_value("tidings_deliveries_total", labels);
}

bool dt_metric_is(const char *channel, const char *result, double want)
{
    for (int64_t end = td_mono_ms() + 5000; td_mono_ms() < end; td_sleep_ms(5))
        if (dt_metric(channel, result) == want) return true;
    fprintf(stderr, "metric %s/%s is %g, want %g\n", channel, result, dt_metric(channel, result),
            want);
    return false;
}
