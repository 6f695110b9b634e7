/* GET /notifications/stream: a user's notifications as Server-Sent Events.
 * The stream is registered with the hub before anything is read from the
 * database, so a notification committed at any moment reaches it either by
 * the replay or live, and the hub drops the frames the replay already sent
 * (see tidings/sse.h). With Last-Event-ID (or ?after=) the replay is every
 * notification after that seq, read a page at a time as the client takes
 * them; without, the stream starts after the user's newest notification.
 * seq has no gaps, so a live frame past the last one sent means frames
 * were missed (another instance published first, or this one was not
 * listening yet) and the hub runs the replay again to fill the gap.
 * A user holds at most TIDINGS_MAX_STREAMS_PER_USER streams of this
 * instance (one more gets 429), and each ends when its token expires. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "notifications/notifications_service.h"
#include "tidings/json.h"
#include "tidings/metrics.h"

#define STREAM_RETRY_MS 3000
#define REPLAY_PAGE     200

typedef struct replay_state {
    notif_ctx_t *ctx;
    char user_id[TD_UUID_LEN + 1];
    bool live_only;     /* opened without Last-Event-ID: nothing to replay */
    int64_t live_floor; /* then: the user's newest seq when the stream opened */
} replay_state_t;

static int replay_next(void *arg, td_sse_stream_t *st, int64_t *last_id)
{
    replay_state_t *rs = arg;
    if (rs->live_only) {
        rs->live_only = false; /* a later gap fill does replay */
        *last_id = rs->live_floor;
        return 0;
    }
    json_t *page;
    if (notif_after(rs->ctx->db, rs->user_id, *last_id, REPLAY_PAGE, &page) != 0) return -1;
    size_t i;
    json_t *n;
    json_array_foreach(page, i, n)
    {
        int64_t seq = json_integer_value(json_object_get(n, "seq"));
        char id[24];
        snprintf(id, sizeof(id), "%" PRId64, seq);
        char *text = td_json_dumps(n);
        td_sse_stream_send(st, "notification", id, text);
        free(text);
        *last_id = seq;
    }
    size_t cnt = json_array_size(page);
    json_decref(page);
    td_metric_add("tidings_notifications_replayed_total", NULL, (double)cnt);
    td_metric_add("tidings_notifications_stream_writes_total", NULL, (double)cnt);
    return cnt == REPLAY_PAGE ? 1 : 0;
}

/* A seq as sent by a client: a non-negative decimal integer. */
static bool parse_seq(const char *s, int64_t *out)
{
    if (!*s || *s == '-' || *s == '+' || *s == ' ') return false;
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || *end) return false;
    *out = v;
    return true;
}

void notif_stream_get(td_req_t *req, td_resp_t *resp)
{
    notif_ctx_t *ctx = req->ctx;
    /* TD_AUTH_USER with ?token= (routes.c): req->auth is the caller. */

    /* EventSource sends Last-Event-ID on its reconnects; ?after= is for a
     * first connection that already knows where it stopped. */
    const char *from = td_req_header(req, "Last-Event-ID");
    if (!from || !*from) from = td_req_query(req, "after");
    int64_t after = -1;
    if (from && *from && !parse_seq(from, &after)) {
        td_resp_error(resp, 400, "Last-Event-ID and after must be a notification seq");
        return;
    }

    replay_state_t *rs = td_calloc(1, sizeof(*rs));
    rs->ctx = ctx;
    snprintf(rs->user_id, sizeof(rs->user_id), "%s", req->auth.sub);
    rs->live_only = after < 0;
    td_sse_replay_t replay = {
        .next = replay_next,
        .arg = rs,
        .free = free,
        .after = after < 0 ? 0 : after,
        .contiguous = true,
    };
    /* At most TIDINGS_MAX_STREAMS_PER_USER per user (429), and the stream
     * ends when the token expires (the hub reads req->auth.exp). */
    td_sse_opts_t o = {
        .key = req->auth.sub,
        .retry_ms = STREAM_RETRY_MS,
        .replay = &replay,
        .owner = req->auth.sub,
        .max_per_owner = ctx->cfg->max_streams_per_user,
    };
    if (!td_sse_open_opts(ctx->hub, req, resp, &o)) return;
    /* Registered first, then the newest seq: whatever commits from here on
     * is above it and reaches the stream live. Read here rather than at
     * the first read of the stream so that a client holding the 200 knows
     * every later notification will come. (The stream is not read before
     * this handler returns, and both run on this connection's thread.) */
    if (rs->live_only && notif_last_seq(ctx->db, rs->user_id, &rs->live_floor) != 0)
        rs->live_floor = 0;
}

void notif_stream_push(notif_ctx_t *ctx, const char *user_id, int64_t seq, const char *json)
{
    char id[24];
    snprintf(id, sizeof(id), "%" PRId64, seq);
    size_t n = td_sse_publish(ctx->hub, user_id, "notification", id, json);
    if (n) td_metric_add("tidings_notifications_stream_writes_total", NULL, (double)n);
}
