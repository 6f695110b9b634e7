/* Server-Sent Events without a socket: the exact frame text (ids, events,
 * multi-line data, comments), routing by key, keepalives (a round now and
 * the hub's timer), the replay seam (held live frames, nothing lost and
 * nothing twice), the buffer cap of a client that does not read, and
 * closing the hub; the key index (a publish touches one key's streams,
 * keys go when their last stream does), frames built once and shared by
 * every stream (an idle stream holds nothing), the per-owner cap, the end
 * at token expiry, and the bound of a slow reader next to a fast one on
 * the same shared frames. Streams here are the internal connection-less
 * kind; the socket side is covered by 0010-http and the notifications
 * stream tests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/metrics.h"
#include "tidings/sse.h"

/* Everything the stream has now; *ended when it is over. Caller frees. */
static char *drain(td_sse_stream_t *st, bool *ended)
{
    char *all = td_strdup("");
    size_t len = 0;
    char buf[7]; /* small on purpose: frames span reads */
    long n;
    *ended = false;
    while ((n = td__sse_stream_read(st, buf, sizeof(buf))) > 0) {
        all = td_realloc(all, len + (size_t)n + 1);
        memcpy(all + len, buf, (size_t)n);
        len += (size_t)n;
        all[len] = '\0';
    }
    if (n < 0) *ended = true;
    return all;
}

static void expect(td_sse_stream_t *st, const char *want)
{
    bool ended;
    char *got = drain(st, &ended);
    assert_false(ended);
    assert_string_equal(got, want);
    free(got);
}

static void test_frames(void **state)
{
    (void)state;
    struct {
        const char *event, *id, *data, *want;
    } cases[] = {
        {"notification", "7", "{\"a\":1}", "id: 7\nevent: notification\ndata: {\"a\":1}\n\n"},
        {NULL, NULL, "x", "data: x\n\n"},
        {NULL, NULL, "a\nb\r\nc\rd", "data: a\ndata: b\ndata: c\ndata: d\n\n"},
        {NULL, NULL, "", "data: \n\n"},
        {NULL, NULL, "end\n", "data: end\ndata: \n\n"},
        {"ev\r\nil", "1\n2", "x", "id: 12\nevent: evil\ndata: x\n\n"},
        {"ping", NULL, NULL, "event: ping\n\n"},
    };
    for (size_t i = 0; i < TD_ARRAY_SIZE(cases); i++) {
        char *f = td_sse_frame(cases[i].event, cases[i].id, cases[i].data);
        assert_string_equal(f, cases[i].want);
        free(f);
    }
    char *c = td_sse_comment("keepalive");
    assert_string_equal(c, ": keepalive\n\n");
    free(c);
    c = td_sse_comment("two\nlines");
    assert_string_equal(c, ": two\n: lines\n\n");
    free(c);
}

static void test_streams_get_their_key_only(void **state)
{
    (void)state;
    td_sse_hub_t *hub = td_sse_hub_new(60);
    td_sse_stream_t *a = td__sse_stream_new(hub, "alice", 2500, NULL);
    td_sse_stream_t *a2 = td__sse_stream_new(hub, "alice", 2500, NULL);
    td_sse_stream_t *b = td__sse_stream_new(hub, "bob", 1000, NULL);
    td_sse_stream_t *all = td__sse_stream_new(hub, "*", 1000, NULL);
    assert_int_equal(td_sse_count(hub), 4);
    expect(a, "retry: 2500\n\n");
    expect(a, "");
    expect(b, "retry: 1000\n\n");
    expect(all, "retry: 1000\n\n");

    assert_int_equal(td_sse_publish(hub, "alice", "n", "1", "for alice"), 3);
    assert_int_equal(td_sse_publish(hub, "bob", "n", "1", "for bob"), 2);
    assert_int_equal(td_sse_publish(hub, "carol", "n", "1", "nobody"), 1);
    expect(a, "id: 1\nevent: n\ndata: for alice\n\n");
    expect(a2, "retry: 2500\n\nid: 1\nevent: n\ndata: for alice\n\n");
    expect(b, "id: 1\nevent: n\ndata: for bob\n\n");
    expect(all, "id: 1\nevent: n\ndata: for alice\n\nid: 1\nevent: n\ndata: for bob\n\n"
                "id: 1\nevent: n\ndata: nobody\n\n");

    /* A live stream (no replay) does not filter ids: the web's event-flow
     * page sends whatever comes. */
    td_sse_publish(hub, "bob", NULL, "1", "again");
    expect(b, "id: 1\ndata: again\n\n");

    td__sse_hub_keepalive(hub);
    expect(a, ": keepalive\n\n");
    expect(b, ": keepalive\n\n");

    td__sse_stream_free(a);
    assert_int_equal(td_sse_count(hub), 3);
    assert_int_equal(td_sse_publish(hub, "alice", "n", "2", "x"), 2);
    td__sse_stream_free(a2);
    td__sse_stream_free(b);
    td__sse_stream_free(all);
    assert_int_equal(td_sse_count(hub), 0);
    td_sse_hub_free(hub);
}

static void test_keepalive_timer(void **state)
{
    (void)state;
    td_sse_hub_t *hub = td_sse_hub_new(1);
    td_sse_stream_t *st = td__sse_stream_new(hub, "k", 1000, NULL);
    expect(st, "retry: 1000\n\n");
    /* Bounded wait for the timer's round (due after 1 s). */
    char *got = NULL;
    bool ended;
    int64_t deadline = td_mono_ms() + 5000;
    while (td_mono_ms() < deadline) {
        got = drain(st, &ended);
        if (*got) break;
        free(got);
        got = NULL;
        td_sleep_ms(20);
    }
    assert_non_null(got);
    assert_string_equal(got, ": keepalive\n\n");
    free(got);
    td__sse_stream_free(st);
    td_sse_hub_free(hub);
}

/* A replay over a fake history 1..history, pages of page_size. */
typedef struct fake_history {
    int history;
    int page_size;
    int calls;
    td_sse_hub_t *hub;
    bool publish_during; /* live frames arrive while the replay runs */
    bool freed;
} fake_history_t;

static int fake_next(void *arg, td_sse_stream_t *st, int64_t *last_id)
{
    fake_history_t *h = arg;
    h->calls++;
    if (h->publish_during && h->calls == 1) {
        /* Committed and published while the replay reads: 5 is also in
         * the history, 6 is not. */
        td_sse_publish(h->hub, "u", "n", "5", "five");
        td_sse_publish(h->hub, "u", "n", "6", "six");
    }
    int sent = 0;
    for (int64_t id = *last_id + 1; id <= h->history && sent < h->page_size; id++, sent++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", (long long)id);
        td_sse_stream_send(st, "n", buf, "old");
        *last_id = id;
    }
    return *last_id < h->history ? 1 : 0;
}

static void fake_free(void *arg)
{
    ((fake_history_t *)arg)->freed = true;
}

static void test_replay_seam_has_no_gap_and_no_duplicate(void **state)
{
    (void)state;
    td_sse_hub_t *hub = td_sse_hub_new(60);
    fake_history_t h = {.history = 5, .page_size = 2, .hub = hub, .publish_during = true};
    td_sse_replay_t replay = {fake_next, &h, fake_free, 2, false};
    td_sse_stream_t *st = td__sse_stream_new(hub, "u", 1000, &replay);
    /* Live frames before the replay even starts: held. */
    td_sse_publish(hub, "u", "n", "4", "four");
    bool ended;
    char *got = drain(st, &ended);
    assert_false(ended);
    assert_string_equal(got, "retry: 1000\n\n"
                             "id: 3\nevent: n\ndata: old\n\n"
                             "id: 4\nevent: n\ndata: old\n\n"
                             "id: 5\nevent: n\ndata: old\n\n"
                             "id: 6\nevent: n\ndata: six\n\n");
    free(got);
    assert_int_equal(h.calls, 2);

    /* Live now: a redelivered frame is dropped, the next one passes. */
    td_sse_publish(hub, "u", "n", "6", "six again");
    td_sse_publish(hub, "u", "n", "7", "seven");
    expect(st, "id: 7\nevent: n\ndata: seven\n\n");
    td__sse_stream_free(st);
    assert_true(h.freed);
    td_sse_hub_free(hub);
}

static int live_from_10(void *arg, td_sse_stream_t *st, int64_t *last_id)
{
    (void)arg;
    (void)st;
    *last_id = 10; /* nothing to replay: start after what exists */
    return 0;
}

static void test_live_stream_starts_after_a_floor(void **state)
{
    (void)state;
    td_sse_hub_t *hub = td_sse_hub_new(60);
    td_sse_replay_t replay = {live_from_10, NULL, NULL, -1, false};
    td_sse_stream_t *st = td__sse_stream_new(hub, "u", 1000, &replay);
    td_sse_publish(hub, "u", "n", "9", "old, published late");
    td_sse_publish(hub, "u", "n", "11", "new");
    expect(st, "retry: 1000\n\nid: 11\nevent: n\ndata: new\n\n");
    td__sse_stream_free(st);
    td_sse_hub_free(hub);
}

/* The "database" of a gap-filling stream: ids 1..have. */
typedef struct fill_history {
    int have;
    int calls;
} fill_history_t;

static int fill_next(void *arg, td_sse_stream_t *st, int64_t *last_id)
{
    fill_history_t *h = arg;
    h->calls++;
    for (int64_t id = *last_id + 1; id <= h->have; id++) {
        char buf[32];
        snprintf(buf, sizeof(buf), "%lld", (long long)id);
        td_sse_stream_send(st, "n", buf, "from db");
        *last_id = id;
    }
    return 0;
}

static void test_a_gap_in_contiguous_ids_is_filled_by_replay(void **state)
{
    (void)state;
    td_sse_hub_t *hub = td_sse_hub_new(60);
    fill_history_t h = {.have = 2};
    td_sse_replay_t replay = {fill_next, &h, NULL, 0, true};
    td_sse_stream_t *st = td__sse_stream_new(hub, "u", 1000, &replay);
    expect(st, "retry: 1000\n\nid: 1\nevent: n\ndata: from db\n\n"
               "id: 2\nevent: n\ndata: from db\n\n");
    assert_int_equal(h.calls, 1);
    td_sse_publish(hub, "u", "n", "3", "live");
    expect(st, "id: 3\nevent: n\ndata: live\n\n");
    assert_int_equal(h.calls, 1);

    /* 4 and 5 were made elsewhere and 5's frame comes first: the stream
     * fills 4 (and 5) from the database, then drops the late frames. */
    h.have = 5;
    td_sse_publish(hub, "u", "n", "5", "live five");
    expect(st, "id: 4\nevent: n\ndata: from db\n\nid: 5\nevent: n\ndata: from db\n\n");
    assert_int_equal(h.calls, 2);
    td_sse_publish(hub, "u", "n", "4", "late four");
    td_sse_publish(hub, "u", "n", "5", "late five");
    td_sse_publish(hub, "u", "n", "6", "live six");
    expect(st, "id: 6\nevent: n\ndata: live six\n\n");
    assert_int_equal(h.calls, 2);
    td__sse_stream_free(st);
    td_sse_hub_free(hub);
}

static void test_a_client_that_does_not_read_is_ended(void **state)
{
    (void)state;
    td_sse_hub_t *hub = td_sse_hub_new(60);
    td_sse_stream_t *st = td__sse_stream_new(hub, "slow", 1000, NULL);
    char *big = td_malloc(64 * 1024);
    memset(big, 'x', 64 * 1024 - 1);
    big[64 * 1024 - 1] = '\0';
    for (int i = 0; i < 40; i++) td_sse_publish(hub, "slow", NULL, NULL, big);
    free(big);
    bool ended;
    char *got = drain(st, &ended);
    assert_true(ended);
    /* What was queued before the cap goes out whole, frame by frame. */
    size_t len = strlen(got);
    assert_true(len <= TD_SSE_MAX_BUFFER);
    assert_true(len > TD_SSE_MAX_BUFFER / 2);
    assert_string_equal(got + len - 2, "\n\n");
    free(got);
    td__sse_stream_free(st);
    td_sse_hub_free(hub);
}

static void test_closing_the_hub_ends_streams(void **state)
{
    (void)state;
    td_sse_hub_t *hub = td_sse_hub_new(60);
    td_sse_stream_t *st = td__sse_stream_new(hub, "u", 1000, NULL);
    td_sse_publish(hub, "u", NULL, NULL, "last words");
    td_sse_hub_close(hub);
    td_sse_publish(hub, "u", NULL, NULL, "too late");
    bool ended;
    char *got = drain(st, &ended);
    assert_true(ended);
    assert_string_equal(got, "retry: 1000\n\ndata: last words\n\n");
    free(got);
    td__sse_stream_free(st);
    td_sse_hub_free(hub);
}

static bool never(void *arg, const void *tag)
{
    (void)arg;
    (void)tag;
    return false;
}

static void test_the_index_finds_only_the_key(void **state)
{
    (void)state;
    enum { KEYS = 2000 };
    td_sse_hub_t *hub = td_sse_hub_new(60);
    td_sse_stream_t **st = td_calloc(KEYS, sizeof(*st));
    char key[32];
    for (int i = 0; i < KEYS; i++) {
        snprintf(key, sizeof(key), "user-%d", i);
        st[i] = td__sse_stream_new(hub, key, 1000, NULL);
        expect(st[i], "retry: 1000\n\n");
    }
    td_sse_stream_t *again = td__sse_stream_new(hub, "user-7", 1000, NULL);
    expect(again, "retry: 1000\n\n");
    /* A "*" stream whose filter refuses everything: looked at, takes none. */
    td_sse_opts_t o = {.key = "*", .retry_ms = 1000, .filter = never};
    td_sse_stream_t *none = td__sse_stream_new_opts(hub, &o, 0, NULL);
    expect(none, "retry: 1000\n\n");
    assert_int_equal(td__sse_key_count(hub, "user-7"), 2);
    assert_int_equal(td__sse_key_count(hub, "user-8"), 1);
    assert_int_equal(td__sse_key_count(hub, "nobody"), 0);

    assert_int_equal(td_sse_publish(hub, "user-7", "n", "1", "seven"), 2);
    assert_int_equal(td_sse_publish(hub, "nobody", "n", "1", "lost"), 0);
    for (int i = 0; i < KEYS; i++) {
        if (i == 7) continue;
        expect(st[i], "");
    }
    expect(st[7], "id: 1\nevent: n\ndata: seven\n\n");
    expect(again, "id: 1\nevent: n\ndata: seven\n\n");
    expect(none, "");

    /* A key goes from the index with its last stream. */
    td__sse_stream_free(again);
    assert_int_equal(td__sse_key_count(hub, "user-7"), 1);
    td__sse_stream_free(st[7]);
    st[7] = NULL;
    assert_int_equal(td__sse_key_count(hub, "user-7"), 0);
    assert_int_equal(td_sse_publish(hub, "user-7", "n", "2", "gone"), 0);
    for (int i = 0; i < KEYS; i++) td__sse_stream_free(st[i]);
    td__sse_stream_free(none);
    assert_int_equal(td_sse_count(hub), 0);
    free(st);
    td_sse_hub_free(hub);
}

static void test_a_frame_is_built_once_and_shared(void **state)
{
    (void)state;
    enum { STREAMS = 100 };
    td_sse_hub_t *hub = td_sse_hub_new(60);
    size_t base = td__sse_frames_live(hub); /* the hub's keepalive and expiry frames */
    td_sse_stream_t *st[STREAMS];
    for (int i = 0; i < STREAMS; i++) {
        st[i] = td__sse_stream_new(hub, "u", 1000, NULL);
        expect(st[i], "retry: 1000\n\n");
        /* An idle stream holds no frame, no buffer. */
        assert_int_equal(td__sse_stream_heap(st[i]), 0);
    }
    assert_int_equal(td__sse_frames_live(hub), base);

    assert_int_equal(td_sse_publish(hub, "u", "n", "1", "one"), STREAMS);
    assert_int_equal(td_sse_publish(hub, "u", "n", "2", "two"), STREAMS);
    /* Two frames for a hundred streams, not two hundred copies. */
    assert_int_equal(td__sse_frames_live(hub), base + 2);
    for (int i = 0; i < STREAMS; i++) assert_true(td__sse_stream_heap(st[i]) > 0);
    for (int i = 0; i < STREAMS / 2; i++)
        expect(st[i], "id: 1\nevent: n\ndata: one\n\nid: 2\nevent: n\ndata: two\n\n");
    /* Still referenced by the streams that have not read. */
    assert_int_equal(td__sse_frames_live(hub), base + 2);
    for (int i = STREAMS / 2; i < STREAMS; i++)
        expect(st[i], "id: 1\nevent: n\ndata: one\n\nid: 2\nevent: n\ndata: two\n\n");
    assert_int_equal(td__sse_frames_live(hub), base);
    for (int i = 0; i < STREAMS; i++) assert_int_equal(td__sse_stream_heap(st[i]), 0);

    /* The keepalive is one frame for every quiet stream too. */
    td__sse_hub_keepalive(hub);
    assert_int_equal(td__sse_frames_live(hub), base);
    for (int i = 0; i < STREAMS; i++) {
        expect(st[i], ": keepalive\n\n");
        td__sse_stream_free(st[i]);
    }
    td_sse_hub_free(hub);
}

static void test_an_owner_holds_at_most_max_streams(void **state)
{
    (void)state;
    td_sse_hub_t *hub = td_sse_hub_new(60);
    td_sse_opts_t mine = {.key = "alice", .retry_ms = 1000, .owner = "alice", .max_per_owner = 3};
    td_sse_stream_t *st[3];
    int status = 0;
    for (int i = 0; i < 3; i++) {
        st[i] = td__sse_stream_new_opts(hub, &mine, 0, &status);
        assert_non_null(st[i]);
    }
    /* One more of the same owner is refused, whatever its key ("*" too). */
    assert_null(td__sse_stream_new_opts(hub, &mine, 0, &status));
    assert_int_equal(status, 429);
    td_sse_opts_t all = {.key = "*", .retry_ms = 1000, .owner = "alice", .max_per_owner = 3};
    assert_null(td__sse_stream_new_opts(hub, &all, 0, &status));
    assert_int_equal(status, 429);
    assert_int_equal(td_sse_count(hub), 3);
    /* Another owner, and streams of nobody, are not affected. */
    td_sse_opts_t bob = {.key = "bob", .retry_ms = 1000, .owner = "bob", .max_per_owner = 3};
    td_sse_stream_t *b = td__sse_stream_new_opts(hub, &bob, 0, &status);
    assert_non_null(b);
    td_sse_opts_t anon = {.key = "*", .retry_ms = 1000};
    td_sse_stream_t *a = td__sse_stream_new_opts(hub, &anon, 0, &status);
    assert_non_null(a);
    /* A stream that ends frees its place. */
    td__sse_stream_free(st[1]);
    st[1] = td__sse_stream_new_opts(hub, &mine, 0, &status);
    assert_non_null(st[1]);
    for (int i = 0; i < 3; i++) td__sse_stream_free(st[i]);
    td__sse_stream_free(b);
    td__sse_stream_free(a);
    /* A closing hub refuses with 503. */
    td_sse_hub_close(hub);
    assert_null(td__sse_stream_new_opts(hub, &mine, 0, &status));
    assert_int_equal(status, 503);
    td_sse_hub_free(hub);
}

static void test_a_stream_ends_when_its_token_expires(void **state)
{
    (void)state;
    td_sse_hub_t *hub = td_sse_hub_new(60);
    int64_t now = td_now_ms();
    td_sse_opts_t o = {.key = "u", .retry_ms = 1000};
    td_sse_stream_t *st = td__sse_stream_new_opts(hub, &o, now + 60000, NULL);
    td_sse_stream_t *forever = td__sse_stream_new_opts(hub, &o, 0, NULL);
    expect(st, "retry: 1000\n\n");
    expect(forever, "retry: 1000\n\n");
    td__sse_hub_tick(hub, now + 59999);
    td_sse_publish(hub, "u", "n", "1", "still valid");
    expect(st, "id: 1\nevent: n\ndata: still valid\n\n");
    td__sse_hub_tick(hub, now + 60000);
    td_sse_publish(hub, "u", "n", "2", "after expiry");
    bool ended;
    char *got = drain(st, &ended);
    assert_true(ended);
    assert_string_equal(got, ": token expired\n\n");
    free(got);
    /* The stream without an expiry goes on. */
    expect(forever,
           "id: 1\nevent: n\ndata: still valid\n\nid: 2\nevent: n\ndata: after expiry\n\n");
    td__sse_stream_free(st);
    td__sse_stream_free(forever);
    td_sse_hub_free(hub);
}

static void test_a_slow_reader_is_cut_while_a_fast_one_goes_on(void **state)
{
    (void)state;
    td_sse_hub_t *hub = td_sse_hub_new(60);
    size_t base = td__sse_frames_live(hub);
    td_sse_stream_t *fast = td__sse_stream_new(hub, "u", 1000, NULL);
    td_sse_stream_t *slow = td__sse_stream_new(hub, "u", 1000, NULL);
    expect(fast, "retry: 1000\n\n");
    expect(slow, "retry: 1000\n\n");
    char *big = td_malloc(16 * 1024);
    memset(big, 'y', 16 * 1024 - 1);
    big[16 * 1024 - 1] = '\0';
    size_t fast_bytes = 0, cut_after = 0;
    double slow_before = td_metric_value("tidings_sse_slow_readers_total", NULL);
    for (int i = 1; i <= 60; i++) {
        char id[16];
        snprintf(id, sizeof(id), "%d", i);
        td_sse_publish(hub, "u", "n", id, big);
        bool ended;
        char *got = drain(fast, &ended);
        assert_false(ended);
        fast_bytes += strlen(got);
        free(got);
        /* The slow one pins at most the bound, though the bytes are shared. */
        assert_true(td__sse_stream_heap(slow) <= TD_SSE_MAX_BUFFER / (16 * 1024) * 32);
        if (!cut_after && td_metric_value("tidings_sse_slow_readers_total", NULL) > slow_before)
            cut_after = (size_t)i;
    }
    free(big);
    /* 60 frames of 16 KiB: the fast reader has every one. */
    assert_true(fast_bytes > 60 * 16 * 1024);
    assert_true(cut_after > 0 && cut_after <= TD_SSE_MAX_BUFFER / (16 * 1024) + 1);
    /* The slow one gets what was queued before the cut, whole frames, then
     * its end; its frames are released as it takes them. */
    bool ended;
    char *got = drain(slow, &ended);
    assert_true(ended);
    size_t len = strlen(got);
    assert_true(len <= TD_SSE_MAX_BUFFER);
    assert_true(len > TD_SSE_MAX_BUFFER / 2);
    assert_string_equal(got + len - 2, "\n\n");
    free(got);
    assert_int_equal(td__sse_frames_live(hub), base);
    td__sse_stream_free(fast);
    td__sse_stream_free(slow);
    td_sse_hub_free(hub);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frames),
        cmocka_unit_test(test_streams_get_their_key_only),
        cmocka_unit_test(test_keepalive_timer),
        cmocka_unit_test(test_replay_seam_has_no_gap_and_no_duplicate),
        cmocka_unit_test(test_live_stream_starts_after_a_floor),
        cmocka_unit_test(test_a_gap_in_contiguous_ids_is_filled_by_replay),
        cmocka_unit_test(test_a_client_that_does_not_read_is_ended),
        cmocka_unit_test(test_closing_the_hub_ends_streams),
        cmocka_unit_test(test_the_index_finds_only_the_key),
        cmocka_unit_test(test_a_frame_is_built_once_and_shared),
        cmocka_unit_test(test_an_owner_holds_at_most_max_streams),
        cmocka_unit_test(test_a_stream_ends_when_its_token_expires),
        cmocka_unit_test(test_a_slow_reader_is_cut_while_a_fast_one_goes_on),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
