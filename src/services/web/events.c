/* The web service's Kafka edge: one thread reading every SPEC topic and its
 * .DLT from the beginning into the event store, and publishing each event to
 * the live streams. It assigns partitions by hand instead of joining a
 * consumer group, so it never takes partitions from anyone, commits
 * nothing, and starts over from the beginning after a restart (the store
 * is memory only). Topics and partitions that appear later (a real cluster
 * where a service creates its topic after we started) are picked up by a
 * metadata check every few seconds, which doubles as the readiness probe. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/bus.h"
#include "tidings/log.h"
#include "tidings/topicread.h"
#include "web/web_service.h"

#define META_INTERVAL_MS 5000
#define META_RETRY_MS    1000
#define META_FRESH_MS    15000 /* readiness: metadata at most this old */
#define POLL_MS          100

struct web_reader {
    const td_config_t *cfg;
    web_ctx_t *ctx;
    td_topic_reader_t *tr; /* used by the reader thread only */
    pthread_t thread;
    bool started;
    atomic_bool stop;
    pthread_mutex_t lock; /* guards the readiness fields below */
    int64_t meta_ok_ms;   /* monotonic time of the last good metadata, 0 = never */
    char why[256];
};

/* Assigns, from the beginning, every partition of a wanted topic that is
 * not assigned yet. 0 when the metadata was read. */
static int refresh(web_reader_t *rd)
{
    char why[256] = "";
    int rc = td_topic_reader_refresh(rd->tr, why, sizeof(why));
    pthread_mutex_lock(&rd->lock);
    if (!rc) {
        rd->meta_ok_ms = td_mono_ms();
        rd->why[0] = '\0';
    } else {
        snprintf(rd->why, sizeof(rd->why), "%s", why);
    }
    pthread_mutex_unlock(&rd->lock);
    return rc;
}

/* Runs under the store lock: hands the event to every live stream. */
static void publish(void *arg, uint64_t seq, const char *json, const web_vis_t *vis)
{
    web_ctx_t *ctx = arg;
    char id[32];
    snprintf(id, sizeof(id), "%llu", (unsigned long long)seq);
    /* Each stream's filter (routes.c) lets through what its viewer may see. */
    td_sse_publish_tagged(ctx->hub, "*", vis, "event", id, json);
}

static void *reader_main(void *arg)
{
    web_reader_t *rd = arg;
    int64_t next_meta = 0;
    while (!atomic_load(&rd->stop)) {
        int64_t now = td_mono_ms();
        if (now >= next_meta)
            next_meta = now + (refresh(rd) == 0 ? META_INTERVAL_MS : META_RETRY_MS);
        td_topic_reader_msg_t msg;
        char err[256];
        if (td_topic_reader_next(rd->tr, POLL_MS, &msg, err, sizeof(err)) != 0) continue;
        web_store_add(rd->ctx->store, msg.rec, publish, rd->ctx);
        td_topic_reader_msg_clear(&msg);
    }
    return NULL;
}

web_reader_t *web_reader_start(const td_config_t *cfg, web_ctx_t *ctx, char *errstr, size_t errlen)
{
    web_reader_t *rd = td_calloc(1, sizeof(*rd));
    rd->cfg = cfg;
    rd->ctx = ctx;
    pthread_mutex_init(&rd->lock, NULL);
    snprintf(rd->why, sizeof(rd->why), "no Kafka metadata yet");
    /* fetch.wait.max.ms 1 unless configured: the page shows events as they come. */
    td_topic_reader_opts_t opts = {
        .from_beginning = true, .follow = true, .client = "web", .fetch_wait_ms = 1};
    rd->tr = td_topic_reader_open(cfg, &opts, errstr, errlen);
    if (!rd->tr) goto fail;
    if (pthread_create(&rd->thread, NULL, reader_main, rd) != 0) {
        td_errf(errstr, errlen, TD_EIO, "cannot start the topic reader thread");
        goto fail;
    }
    rd->started = true;
    return rd;
fail:
    web_reader_stop(rd);
    return NULL;
}

bool web_reader_ready(void *arg, char *why, size_t whylen)
{
    web_reader_t *rd = arg;
    pthread_mutex_lock(&rd->lock);
    bool ok = rd->meta_ok_ms && td_mono_ms() - rd->meta_ok_ms <= META_FRESH_MS;
    if (!ok) snprintf(why, whylen, "%s", rd->why[0] ? rd->why : "Kafka metadata is stale");
    pthread_mutex_unlock(&rd->lock);
    return ok;
}

void web_reader_stop(web_reader_t *rd)
{
    if (!rd) return;
    atomic_store(&rd->stop, true);
    if (rd->started) pthread_join(rd->thread, NULL);
    td_topic_reader_close(rd->tr);
    pthread_mutex_destroy(&rd->lock);
    free(rd);
}
