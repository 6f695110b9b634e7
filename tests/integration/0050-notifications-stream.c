/* GET /notifications/stream over real HTTP (raw sockets, HTTP/1.1 chunked,
 * parsed as EventSource would): a client connected before an order sees
 * "Order received" then "Order confirmed" live; a client that disconnects,
 * misses notifications and reconnects with Last-Event-ID (or ?after=) gets
 * exactly the missed ones in order and then live ones; frames another
 * instance publishes out of order are filled from the database; wrong or
 * missing tokens get 401; user A never sees user B's; a user may hold
 * several streams; a thousand idle streams cost no threads; a reader too
 * slow to take its frames is cut and, reconnecting with Last-Event-ID,
 * gets the rest (nothing lost, nothing twice) while a fast reader of the
 * same user gets everything live, and one that reads nothing of a trickle
 * is cut by the stall time; a stream ends when its token expires.
 * The service is stopped at the end with streams still open. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <sqlite3.h>

#include <sys/socket.h>

#include "tnotif.h"
#include "tidings/metrics.h"

static nt_world_t W;
static nt_sse_t *left_open; /* a stream the service's stop must end */

static int world_start(void **state)
{
    (void)state;
    nt_start(&W, "0050-notifications-stream");
    return 0;
}

static int world_stop(void **state)
{
    (void)state;
    nt_stop(&W);
    if (left_open) {
        nt_sse_pump(left_open, 2000);
        assert_true(left_open->ended);
        nt_sse_close(left_open);
    }
    return 0;
}

static void order_event(const char *type, const char *user, const char *order)
{
    json_t *data = json_pack("{s:s, s:s, s:s, s:i}", "orderId", order, "userId", user, "productId",
                             "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "quantity", 1);
    if (!strcmp(type, "OrderCreatedEvent"))
        json_object_set_new(data, "createdAt", json_string("2026-01-01T00:00:00.000Z"));
    else
        json_object_set_new(data, "total", td_json_money(1999));
    nt_produce(&W, "orders", type, order, data, NULL);
}

static const char *field(json_t *n, const char *name)
{
    return json_string_value(json_object_get(n, name));
}

/* Checks event i: a notification with id = seq, of user, titled title. */
static void expect_event(const nt_sse_t *s, size_t i, const char *user, int64_t seq,
                         const char *title)
{
    assert_true(i < s->cnt);
    assert_string_equal(s->events[i].event, "notification");
    char id[24];
    snprintf(id, sizeof(id), "%lld", (long long)seq);
    assert_string_equal(s->events[i].id, id);
    json_t *n = nt_sse_json(s, i);
    assert_non_null(n);
    assert_int_equal(json_integer_value(json_object_get(n, "seq")), seq);
    assert_string_equal(field(n, "userId"), user);
    if (title) assert_string_equal(field(n, "title"), title);
    assert_non_null(field(n, "id"));
    assert_non_null(field(n, "createdAt"));
    json_decref(n);
}

static double streams_open(void)
{
    return td_metric_value("tidings_notifications_streams_open", NULL);
}

static bool one_stream_open(void *arg)
{
    (void)arg;
    return streams_open() == 1;
}

/* First, while no stream of an earlier test lingers: a stream whose client
 * went away is dropped at its next frame (suspended sockets are not
 * watched, so the stream looks before it suspends again). */
static void test_a_stream_whose_client_left_is_dropped(void **state)
{
    (void)state;
    char user[TD_UUID_LEN + 1] = "";
    char *token = nt_token(&W, user);
    nt_sse_t *s = nt_stream_live(&W, token, user);
    assert_true(streams_open() == 1);
    nt_sse_t *gone = nt_sse_open(W.port, "/notifications/stream", token, NULL);
    assert_int_equal(nt_sse_status(gone), 200);
    assert_true(streams_open() == 2);
    nt_sse_close(gone);
    nt_login(&W, user);
    assert_true(nt_sse_wait(s, 1, NT_WAIT_MS));
    assert_true(ts_wait_until(one_stream_open, NULL, NT_WAIT_MS));
    nt_sse_close(s);
    free(token);
}

static void test_order_notifications_arrive_live_in_order(void **state)
{
    (void)state;
    char user[TD_UUID_LEN + 1] = "";
    char *token = nt_token(&W, user);
    int64_t t0 = td_mono_ms();
    nt_sse_t *s = nt_stream_live(&W, token, user);
    print_message("live path ready after %lld ms\n", (long long)(td_mono_ms() - t0));
    assert_int_equal(s->retry_ms, 3000);
    int64_t base = (int64_t)nt_inbox_count(&W, token);

    char order[TD_UUID_LEN + 1];
    td_uuid_new(order);
    int64_t t1 = td_mono_ms();
    order_event("OrderCreatedEvent", user, order);
    order_event("OrderApprovedEvent", user, order);
    assert_true(nt_sse_wait(s, 2, NT_WAIT_MS));
    print_message("two order notifications live after %lld ms\n", (long long)(td_mono_ms() - t1));
    expect_event(s, 0, user, base + 1, "Order received");
    expect_event(s, 1, user, base + 2, "Order confirmed");
    json_t *n = nt_sse_json(s, 1);
    assert_string_equal(field(json_object_get(n, "data"), "orderId"), order);
    assert_string_equal(field(n, "body"), "Your order of 1 × product aaaaaaaa is confirmed: "
                                          "total 19.99.");
    json_decref(n);
    nt_sse_pump(s, 100);
    assert_int_equal(s->cnt, 2);
    nt_sse_close(s);
    free(token);
}

static void test_reconnect_replays_exactly_the_missed_ones(void **state)
{
    (void)state;
    char user[TD_UUID_LEN + 1] = "";
    char *token = nt_token(&W, user);
    nt_sse_t *s = nt_stream_live(&W, token, user);
    nt_login(&W, user);
    assert_true(nt_sse_wait(s, 1, NT_WAIT_MS));
    char last[32];
    snprintf(last, sizeof(last), "%s", s->events[0].id);
    int64_t last_seq = atoll(last);
    nt_sse_close(s);

    /* Missed while away. */
    for (int i = 0; i < 3; i++) nt_login(&W, user);
    assert_true(nt_wait_inbox(&W, token, (size_t)last_seq + 3));

    s = nt_sse_open(W.port, "/notifications/stream", token, last);
    assert_int_equal(nt_sse_status(s), 200);
    assert_true(nt_sse_wait(s, 3, NT_WAIT_MS));
    for (int i = 0; i < 3; i++) expect_event(s, (size_t)i, user, last_seq + 1 + i, NULL);
    /* Then live, with nothing repeated at the seam. */
    char order[TD_UUID_LEN + 1];
    td_uuid_new(order);
    order_event("OrderCreatedEvent", user, order);
    assert_true(nt_sse_wait(s, 4, NT_WAIT_MS));
    expect_event(s, 3, user, last_seq + 4, "Order received");
    nt_sse_pump(s, 100);
    assert_int_equal(s->cnt, 4);
    nt_sse_close(s);

    /* ?after= for a first connection that knows where it stopped, token
     * in the query as EventSource must. */
    char path[1024];
    snprintf(path, sizeof(path), "/notifications/stream?after=%lld&token=%s",
             (long long)last_seq + 2, token);
    s = nt_sse_open(W.port, path, NULL, NULL);
    assert_int_equal(nt_sse_status(s), 200);
    assert_true(nt_sse_wait(s, 2, NT_WAIT_MS));
    expect_event(s, 0, user, last_seq + 3, NULL);
    expect_event(s, 1, user, last_seq + 4, "Order received");
    nt_sse_close(s);

    /* A deleted one is not replayed. */
    json_t *inbox = nt_inbox(&W, token);
    const char *id = field(json_array_get(json_object_get(inbox, "notifications"), 1), "id");
    char url[256];
    snprintf(url, sizeof(url), "%s/notifications/%s", W.url, id);
    ts_resp_t r = ts_http("DELETE", url, token, NULL, NULL, NULL);
    assert_int_equal(r.status, 204);
    ts_resp_free(&r);
    json_decref(inbox);
    snprintf(last, sizeof(last), "%lld", (long long)last_seq + 1);
    s = nt_sse_open(W.port, "/notifications/stream", token, last);
    assert_true(nt_sse_wait(s, 2, NT_WAIT_MS));
    expect_event(s, 0, user, last_seq + 2, NULL);
    expect_event(s, 1, user, last_seq + 4, NULL);
    nt_sse_pump(s, 100);
    assert_int_equal(s->cnt, 2);
    nt_sse_close(s);
    free(token);
}

/* Writes notification seq of user straight into the database, as another
 * instance sharing it would; returns its JSON (caller decrefs). */
static json_t *insert_as_other_instance(const char *user, int64_t seq)
{
    char *path = td_asprintf("%s/notifications.db", W.dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    char id[TD_UUID_LEN + 1], cause[TD_UUID_LEN + 1], now[TD_TIME_LEN + 1];
    td_uuid_new(id);
    td_uuid_new(cause);
    td_time_format(td_now_ms(), now);
    char title[64];
    snprintf(title, sizeof(title), "From elsewhere %lld", (long long)seq);
    sqlite3_stmt *st;
    assert_int_equal(
        sqlite3_prepare_v2(db,
                           "INSERT INTO notifications (id, user_id, seq, type, title, body, data,"
                           " created_at, cause_id) VALUES (?,?,?,'UserLoggedInEvent',?,'b','{}',"
                           "?,?)",
                           -1, &st, NULL),
        SQLITE_OK);
    sqlite3_bind_text(st, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, user, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, seq);
    sqlite3_bind_text(st, 4, title, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, now, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, cause, -1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    td_db_done(st);
    sqlite3_close(db);
    free(path);
    return json_pack("{s:s, s:I, s:s, s:s, s:s, s:s, s:{}, s:s, s:n}", "id", id, "seq",
                     (json_int_t)seq, "userId", user, "type", "UserLoggedInEvent", "title", title,
                     "body", "b", "data", "createdAt", now, "readAt");
}

static void test_out_of_order_frames_are_filled_from_the_database(void **state)
{
    (void)state;
    char user[TD_UUID_LEN + 1] = "";
    char *token = nt_token(&W, user);
    nt_sse_t *s = nt_stream_live(&W, token, user);
    int64_t last = (int64_t)nt_inbox_count(&W, token);

    /* Another instance made last+1 and last+2; the event of last+2 is
     * published first. */
    json_t *a = insert_as_other_instance(user, last + 1);
    json_t *b = insert_as_other_instance(user, last + 2);
    nt_produce(&W, "notifications", "NotificationCreatedEvent", user, json_incref(b), NULL);
    assert_true(nt_sse_wait(s, 2, NT_WAIT_MS));
    char want[64];
    snprintf(want, sizeof(want), "From elsewhere %lld", (long long)last + 1);
    expect_event(s, 0, user, last + 1, want);
    snprintf(want, sizeof(want), "From elsewhere %lld", (long long)last + 2);
    expect_event(s, 1, user, last + 2, want);
    /* Its late twin is not shown again. */
    nt_produce(&W, "notifications", "NotificationCreatedEvent", user, json_incref(a), NULL);
    nt_login(&W, user);
    assert_true(nt_sse_wait(s, 3, NT_WAIT_MS));
    expect_event(s, 2, user, last + 3, "New sign-in to your account");
    nt_sse_pump(s, 100);
    assert_int_equal(s->cnt, 3);
    json_decref(a);
    json_decref(b);
    nt_sse_close(s);
    free(token);
}

static void test_tokens(void **state)
{
    (void)state;
    nt_sse_t *s = nt_sse_open(W.port, "/notifications/stream", NULL, NULL);
    assert_int_equal(nt_sse_status(s), 401);
    nt_sse_close(s);
    s = nt_sse_open(W.port, "/notifications/stream", "not.a.token", NULL);
    assert_int_equal(nt_sse_status(s), 401);
    nt_sse_close(s);
    s = nt_sse_open(W.port, "/notifications/stream?token=nope", NULL, NULL);
    assert_int_equal(nt_sse_status(s), 401);
    nt_sse_close(s);
    /* A token signed with another key. */
    td_claims_t c;
    memset(&c, 0, sizeof(c));
    td_uuid_new(c.sub);
    snprintf(c.role, sizeof(c.role), "customer");
    c.iat = td_now_ms() / 1000;
    c.exp = c.iat + 3600;
    static const unsigned char other[] = "another-secret-another-secret-xx";
    char *forged = td_jwt_sign(other, sizeof(other) - 1, &c);
    s = nt_sse_open(W.port, "/notifications/stream", forged, NULL);
    assert_int_equal(nt_sse_status(s), 401);
    nt_sse_close(s);
    free(forged);
    /* Expired. */
    char user[TD_UUID_LEN + 1] = "";
    c.exp = c.iat - 10;
    td_uuid_new(user);
    snprintf(c.sub, sizeof(c.sub), "%s", user);
    char *expired = td_jwt_sign(W.cfg.secret, W.cfg.secret_len, &c);
    s = nt_sse_open(W.port, "/notifications/stream", expired, NULL);
    assert_int_equal(nt_sse_status(s), 401);
    nt_sse_close(s);
    free(expired);
    /* A bad Last-Event-ID. */
    char *token = nt_token(&W, user);
    s = nt_sse_open(W.port, "/notifications/stream", token, "-3");
    assert_int_equal(nt_sse_status(s), 400);
    nt_sse_close(s);
    s = nt_sse_open(W.port, "/notifications/stream?after=abc", token, NULL);
    assert_int_equal(nt_sse_status(s), 400);
    nt_sse_close(s);
    free(token);
}

static void test_users_only_see_their_own(void **state)
{
    (void)state;
    char a[TD_UUID_LEN + 1] = "", b[TD_UUID_LEN + 1] = "";
    char *ta = nt_token(&W, a), *tb = nt_token(&W, b);
    nt_sse_t *sa = nt_stream_live(&W, ta, a);
    nt_sse_t *sb = nt_stream_live(&W, tb, b);
    /* A second tab of A, from where A's first one stands. */
    char last[24];
    snprintf(last, sizeof(last), "%zu", nt_inbox_count(&W, ta));
    nt_sse_t *sa2 = nt_sse_open(W.port, "/notifications/stream", ta, last);
    assert_int_equal(nt_sse_status(sa2), 200);

    for (int i = 0; i < 3; i++) {
        nt_login(&W, b);
        char order[TD_UUID_LEN + 1];
        td_uuid_new(order);
        order_event("OrderCreatedEvent", b, order);
    }
    nt_login(&W, a);
    assert_true(nt_sse_wait(sb, 6, NT_WAIT_MS));
    assert_true(nt_sse_wait(sa, 1, NT_WAIT_MS));
    assert_true(nt_sse_wait(sa2, 1, NT_WAIT_MS));
    nt_sse_pump(sa, 200);
    nt_sse_pump(sa2, 50);
    assert_int_equal(sa->cnt, 1);
    assert_int_equal(sa2->cnt, 1);
    assert_string_equal(sa->events[0].id, sa2->events[0].id);
    for (size_t i = 0; i < sa->cnt; i++) {
        json_t *n = nt_sse_json(sa, i);
        assert_string_equal(field(n, "userId"), a);
        json_decref(n);
    }
    for (size_t i = 0; i < sb->cnt; i++) {
        json_t *n = nt_sse_json(sb, i);
        assert_string_equal(field(n, "userId"), b);
        json_decref(n);
    }
    nt_sse_close(sa);
    nt_sse_close(sa2);
    nt_sse_close(sb);
    free(ta);
    free(tb);
}

static int thread_count(void)
{
    char *status = td_read_file("/proc/self/status", NULL);
    const char *t = status ? strstr(status, "\nThreads:") : NULL;
    int n = t ? atoi(t + 9) : -1;
    free(status);
    return n;
}

static void test_a_thousand_idle_streams_need_no_threads(void **state)
{
    (void)state;
    enum { STREAMS = 1000 };
    char user[TD_UUID_LEN + 1] = "";
    char *token = nt_token(&W, user);
    nt_sse_t *probe = nt_stream_live(&W, token, user);
    int threads_before = thread_count();
    size_t open_before = (size_t)td_metric_value("tidings_notifications_streams_open", NULL);

    /* From the user's newest seq, so each stream's start is fixed. */
    char last[24];
    snprintf(last, sizeof(last), "%zu", nt_inbox_count(&W, token));
    nt_sse_t **s = td_calloc(STREAMS, sizeof(*s));
    for (int i = 0; i < STREAMS; i++)
        s[i] = nt_sse_open(W.port, "/notifications/stream", token, last);
    for (int i = 0; i < STREAMS; i++) assert_int_equal(nt_sse_status(s[i]), 200);
    /* Each has run its first read (the header came with it), so each is
     * registered and suspended. */
    int threads_after = thread_count();
    print_message("threads: %d before, %d with %d more streams open\n", threads_before,
                  threads_after, STREAMS);
    assert_true(threads_after - threads_before < 5);
    assert_true(td_metric_value("tidings_notifications_streams_open", NULL) >=
                (double)(open_before + STREAMS));

    /* One notification wakes every one of them. */
    int64_t t0 = td_mono_ms();
    nt_login(&W, user);
    for (int i = 0; i < STREAMS; i++) {
        if (!nt_sse_wait(s[i], 1, NT_WAIT_MS)) fail_msg("stream %d got nothing", i);
        assert_string_equal(s[i]->events[0].event, "notification");
    }
    print_message("one notification on %d streams after %lld ms\n", STREAMS,
                  (long long)(td_mono_ms() - t0));
    assert_true(nt_sse_wait(probe, 1, NT_WAIT_MS));
    for (int i = 0; i < STREAMS; i++) nt_sse_close(s[i]);
    free(s);
    left_open = probe;
    free(token);
}

/* A sign-in whose notification is big: the user agent is in its body. */
static void big_login(const char *user)
{
    static char ua[501]; /* the rule takes at most 512 */
    memset(ua, 'U', sizeof(ua) - 1);
    nt_produce(&W, "users", "UserLoggedInEvent", user,
               json_pack("{s:s, s:s, s:s, s:s}", "userId", user, "email", "someone@example.com",
                         "loggedInAt", "2026-01-01T00:00:00.000Z", "userAgent", ua),
               NULL);
}

/* nt_sse_open with a small receive buffer: a reader that will not keep up. */
static nt_sse_t *open_small_window(const char *token)
{
    nt_sse_t *s = td_calloc(1, sizeof(*s));
    s->raw = td_strdup("");
    s->body = td_strdup("");
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    int rcvbuf = 4096;
    setsockopt(s->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)W.port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(s->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    char *req = td_asprintf("GET /notifications/stream HTTP/1.1\r\nHost: x\r\n"
                            "Authorization: Bearer %s\r\n\r\n",
                            token);
    assert_int_equal(write(s->fd, req, strlen(req)), (ssize_t)strlen(req));
    free(req);
    return s;
}

/* A stream cut once it had the first `got` of `total` notifications (seq
 * base+1 on) reconnects with the Last-Event-ID of its last whole frame: it
 * gets exactly the rest, in order, nothing twice. */
static void expect_rest_on_reconnect(const char *token, const char *user, int64_t base, size_t got,
                                     size_t total)
{
    char last[24];
    snprintf(last, sizeof(last), "%lld", (long long)(base + (int64_t)got));
    nt_sse_t *again = nt_sse_open(W.port, "/notifications/stream", token, last);
    assert_int_equal(nt_sse_status(again), 200);
    assert_true(nt_sse_wait(again, total - got, NT_WAIT_MS * 2));
    nt_sse_pump(again, 200);
    assert_int_equal(again->cnt, total - got);
    for (size_t i = 0; i < again->cnt; i++)
        expect_event(again, i, user, base + 1 + (int64_t)(got + i), NULL);
    nt_sse_close(again);
}

static void test_a_slow_reader_is_cut_and_replays_the_rest(void **state)
{
    (void)state;
#if defined(__SANITIZE_ADDRESS__)
    /* Under AddressSanitizer the hub fills the slow socket too slowly to
     * pass the cut bound within the test's time (seen in CI's parallel
     * sanitizer run); the normal build runs it, and security/0154 cuts a
     * slow reader end to end. */
    skip();
#endif
    enum { N = 1000 };
    char user[TD_UUID_LEN + 1] = "";
    char *token = nt_token(&W, user);
    nt_sse_t *fast = nt_stream_live(&W, token, user);
    int64_t base = (int64_t)nt_inbox_count(&W, token);
    nt_sse_t *slow = open_small_window(token);
    assert_int_equal(nt_sse_status(slow), 200);
    double cut_before = td_metric_value("tidings_sse_slow_readers_total", NULL);

    /* N notifications of ~1 KiB while slow reads nothing; fast keeps up. */
    for (int i = 0; i < N; i++) {
        big_login(user);
        nt_sse_pump(fast, 0);
    }
    assert_true(nt_sse_wait(fast, N, NT_WAIT_MS * 2));
    for (size_t i = 0; i < fast->cnt; i++) expect_event(fast, i, user, base + 1 + (int64_t)i, NULL);
    /* The hub cuts it once its backlog passes the bound or it stalls past
     * the drain time, which under a sanitizer may come after fast is done. */
    int64_t cut_by = td_mono_ms() + TD_SSE_DRAIN_MS + 5000;
    while (td_metric_value("tidings_sse_slow_readers_total", NULL) <= cut_before &&
           td_mono_ms() < cut_by)
        td_sleep_ms(20);
    assert_true(td_metric_value("tidings_sse_slow_readers_total", NULL) > cut_before);

    /* The slow one was cut: what it got is a prefix, in order. */
    int64_t t0 = td_mono_ms();
    while (!slow->ended && td_mono_ms() - t0 < TD_SSE_DRAIN_MS + 5000) nt_sse_pump(slow, 100);
    assert_true(slow->ended);
    size_t got = slow->cnt;
    assert_true(got < N);
    for (size_t i = 0; i < got; i++) expect_event(slow, i, user, base + 1 + (int64_t)i, NULL);
    print_message("slow reader cut after %zu of %d notifications\n", got, N);

    /* It reconnects from the last one it has: the rest, nothing twice. */
    expect_rest_on_reconnect(token, user, base, got, N);
    nt_sse_close(slow);
    nt_sse_close(fast);
    free(token);
}

/* A reader that stops reading while frames come slowly: its window shuts
 * at once, the kernel's send buffer takes frames for a while, and the
 * kernel gives the connection up (TCP_USER_TIMEOUT, the stall time), here
 * well before the hub's queue reaches its bound. That is a slow reader cut
 * as well, counted and logged (it was not: a busy machine made 0050's fast
 * test such a trickle, and its cut went uncounted). */
static void test_a_trickle_nobody_reads_is_cut_by_the_stall_time(void **state)
{
    (void)state;
    char user[TD_UUID_LEN + 1] = "";
    char *token = nt_token(&W, user);
    nt_sse_t *probe = nt_stream_live(&W, token, user);
    nt_sse_close(probe);
    int64_t base = (int64_t)nt_inbox_count(&W, token);
    nt_sse_t *slow = open_small_window(token);
    assert_int_equal(nt_sse_status(slow), 200);
    double cut_before = td_metric_value("tidings_sse_slow_readers_total", NULL);
    /* ~4 KiB a second: the bound (256 KiB queued after the kernel's
     * buffers) would take a minute and a half; the stall time here is
     * 45 s, and the kernel acts at its next zero-window probe after it
     * (their backoff doubles). On a loaded machine the trickle is slower
     * and the kernel later: the deadline is generous. Whichever comes
     * first (kernel, tick or bound), the cut must be counted: without
     * the kernel's case it never was (the stream was gone, uncounted). */
    int64_t t0 = td_mono_ms();
    int sent = 0;
    while (td_metric_value("tidings_sse_slow_readers_total", NULL) <= cut_before &&
           td_mono_ms() - t0 < 150000) {
        big_login(user);
        sent++;
        td_sleep_ms(250);
    }
    assert_true(td_metric_value("tidings_sse_slow_readers_total", NULL) > cut_before);
    int64_t took = td_mono_ms() - t0;
    print_message("a trickle nobody read was cut after %lld ms and %d notifications\n",
                  (long long)took, sent);
    /* What it holds is a prefix in order; reconnecting gets the rest. */
    nt_sse_pump(slow, 200);
    size_t got = slow->cnt;
    for (size_t i = 0; i < got; i++) expect_event(slow, i, user, base + 1 + (int64_t)i, NULL);
    expect_rest_on_reconnect(token, user, base, got, (size_t)sent);
    nt_sse_close(slow);
    free(token);
}

static void test_a_stream_ends_when_its_token_expires(void **state)
{
    (void)state;
    char user[TD_UUID_LEN + 1] = "";
    char *token = nt_token(&W, user);
    nt_sse_t *probe = nt_stream_live(&W, token, user);
    nt_sse_close(probe);
    td_claims_t c;
    memset(&c, 0, sizeof(c));
    snprintf(c.sub, sizeof(c.sub), "%s", user);
    snprintf(c.role, sizeof(c.role), "customer");
    c.iat = td_now_ms() / 1000;
    c.exp = c.iat + 2;
    char *brief = td_jwt_sign(W.cfg.secret, W.cfg.secret_len, &c);
    nt_sse_t *s = nt_sse_open(W.port, "/notifications/stream", brief, NULL);
    assert_int_equal(nt_sse_status(s), 200);
    nt_login(&W, user);
    assert_true(nt_sse_wait(s, 1, NT_WAIT_MS));
    /* Valid until exp, ended within a tick after it. */
    int64_t t0 = td_mono_ms();
    while (!s->ended && td_mono_ms() - t0 < 6000) nt_sse_pump(s, 100);
    assert_true(s->ended);
    assert_true(td_now_ms() >= c.exp * 1000);
    /* The same token cannot open another one now. */
    nt_sse_t *late = nt_sse_open(W.port, "/notifications/stream", brief, NULL);
    assert_int_equal(nt_sse_status(late), 401);
    nt_sse_close(late);
    nt_sse_close(s);
    free(brief);
    free(token);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_stream_whose_client_left_is_dropped),
        cmocka_unit_test(test_order_notifications_arrive_live_in_order),
        cmocka_unit_test(test_reconnect_replays_exactly_the_missed_ones),
        cmocka_unit_test(test_out_of_order_frames_are_filled_from_the_database),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_users_only_see_their_own),
        cmocka_unit_test(test_a_slow_reader_is_cut_and_replays_the_rest),
        cmocka_unit_test(test_a_trickle_nobody_reads_is_cut_by_the_stall_time),
        cmocka_unit_test(test_a_stream_ends_when_its_token_expires),
        cmocka_unit_test(test_a_thousand_idle_streams_need_no_threads),
    };
    return cmocka_run_group_tests(tests, world_start, world_stop);
}
