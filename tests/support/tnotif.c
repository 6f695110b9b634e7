/* The bodies of the notifications integration tests' helpers (tnotif.h):
 * the service on an embedded broker, tokens, events produced onto their
 * topics, the inbox over HTTP and the raw-socket SSE client. */
#include "tnotif.h"

void nt_start(nt_world_t *w, const char *name)
{
    char err[512] = "";
    memset(w, 0, sizeof(*w));
    w->dir = ts_tmpdir(name);
    ts_config(&w->bcfg, "broker", w->dir, NULL);
    w->broker = ts_broker(&w->bcfg);
    w->brokers = td_broker_bootstraps(w->broker);
    ts_config(&w->cfg, "notifications", w->dir, w->brokers);
    w->cfg.ports[TD_SVC_NOTIFICATIONS] = 0;
    /* Tests here hold up to a thousand streams of one user; the per-user
     * cap has tests of its own (test_sse, tests/security). */
    w->cfg.max_streams_per_user = 2000;
    w->svc = notifications_service_start(&w->cfg, err, sizeof(err));
    if (!w->svc) {
        fprintf(stderr, "notifications: %s\n", err);
        abort();
    }
    w->port = notifications_service_port(w->svc);
    snprintf(w->url, sizeof(w->url), "http://127.0.0.1:%d", w->port);
}

void nt_stop(nt_world_t *w)
{
    notifications_service_stop(w->svc);
    td_broker_stop(w->broker);
    td_config_free(&w->cfg);
    td_config_free(&w->bcfg);
    free(w->dir);
}

char *nt_token(const nt_world_t *w, char *user_id)
{
    td_claims_t c;
    memset(&c, 0, sizeof(c));
    if (!*user_id) td_uuid_new(user_id);
    snprintf(c.sub, sizeof(c.sub), "%s", user_id);
    snprintf(c.role, sizeof(c.role), "customer");
    c.iat = td_now_ms() / 1000;
    c.exp = c.iat + 3600;
    return td_jwt_sign(w->cfg.secret, w->cfg.secret_len, &c);
}

void nt_produce_event(const nt_world_t *w, const char *topic_short, const td_event_t *ev)
{
    char *topic = td_topic_name(&w->cfg, topic_short);
    td_record_t *rec = td_event_to_record(ev, topic);
    if (ts_produce(w->brokers, rec) != 0) abort();
    td_record_free(rec);
    free(topic);
}

void nt_produce(const nt_world_t *w, const char *topic_short, const char *type, const char *key,
                json_t *data, char *id_out)
{
    td_event_t *ev = td_event_new(topic_short, type, key, data);
    if (id_out) memcpy(id_out, ev->id, TD_UUID_LEN + 1); /* ours are UUIDs */
    nt_produce_event(w, topic_short, ev);
    td_event_free(ev);
}

void nt_login(const nt_world_t *w, const char *user_id)
{
    nt_produce(w, "users", "UserLoggedInEvent", user_id,
               json_pack("{s:s, s:s, s:s}", "userId", user_id, "email", "someone@example.com",
                         "loggedInAt", "2026-01-01T00:00:00.000Z"),
               NULL);
}

json_t *nt_inbox(const nt_world_t *w, const char *token)
{
    char url[128];
    snprintf(url, sizeof(url), "%s/notifications?limit=500", w->url);
    ts_resp_t r = ts_http("GET", url, token, NULL, NULL, NULL);
    if (r.status != 200 || !r.json) {
        fprintf(stderr, "GET /notifications: %ld %s\n", r.status, r.body ? r.body : "");
        abort();
    }
    json_t *j = json_incref(r.json);
    ts_resp_free(&r);
    return j;
}

size_t nt_inbox_count(const nt_world_t *w, const char *token)
{
    json_t *j = nt_inbox(w, token);
    size_t n = json_array_size(json_object_get(j, "notifications"));
    json_decref(j);
    return n;
}

bool nt_wait_inbox(const nt_world_t *w, const char *token, size_t want)
{
    int64_t deadline = td_mono_ms() + NT_WAIT_MS;
    while (td_mono_ms() < deadline) {
        if (nt_inbox_count(w, token) >= want) return true;
        td_sleep_ms(20);
    }
    return false;
}

void nt_buf_add(char **buf, size_t *len, const char *p, size_t n)
{
    *buf = td_realloc(*buf, *len + n + 1);
    memcpy(*buf + *len, p, n);
    *len += n;
    (*buf)[*len] = '\0';
}

void nt_buf_drop(char **buf, size_t *len, size_t n)
{
    memmove(*buf, *buf + n, *len - n);
    *len -= n;
    (*buf)[*len] = '\0';
}

nt_sse_t *nt_sse_open(int port, const char *path, const char *token, const char *last_id)
{
    nt_sse_t *s = td_calloc(1, sizeof(*s));
    s->raw = td_strdup("");
    s->body = td_strdup("");
    s->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s->fd < 0 || connect(s->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        fprintf(stderr, "nt_sse_open: connect: %s\n", strerror(errno));
        abort();
    }
    char req[2048];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: text/event-stream\r\n"
                     "%s%s%s%s%s%s\r\n",
                     path, port, token ? "Authorization: Bearer " : "", token ? token : "",
                     token ? "\r\n" : "", last_id ? "Last-Event-ID: " : "", last_id ? last_id : "",
                     last_id ? "\r\n" : "");
    if (write(s->fd, req, (size_t)n) != n) abort();
    return s;
}

void nt_sse_line(nt_sse_t *s, char *line)
{
    if (!*line) { /* dispatch */
        if (s->cur_data) {
            if (s->cnt == s->cap) {
                s->cap = s->cap ? s->cap * 2 : 16;
                s->events = td_realloc(s->events, s->cap * sizeof(*s->events));
            }
            nt_sse_event_t *e = &s->events[s->cnt++];
            snprintf(e->id, sizeof(e->id), "%s", s->cur_id);
            snprintf(e->event, sizeof(e->event), "%s", s->cur_event);
            e->data = s->cur_data;
            s->cur_data = NULL;
        }
        s->cur_event[0] = '\0';
        return;
    }
    if (line[0] == ':') {
        if (strcmp(line, ": keepalive") == 0) s->keepalives++;
        return;
    }
    char *colon = strchr(line, ':');
    const char *value = "";
    if (colon) {
        *colon = '\0';
        value = colon + 1;
        if (*value == ' ') value++;
    }
    if (strcmp(line, "id") == 0) {
        snprintf(s->cur_id, sizeof(s->cur_id), "%s", value); /* sticky, as in EventSource */
    } else if (strcmp(line, "event") == 0) {
        snprintf(s->cur_event, sizeof(s->cur_event), "%s", value);
    } else if (strcmp(line, "retry") == 0) {
        s->retry_ms = atoi(value);
    } else if (strcmp(line, "data") == 0) {
        if (s->cur_data) {
            char *joined = td_asprintf("%s\n%s", s->cur_data, value);
            free(s->cur_data);
            s->cur_data = joined;
        } else {
            s->cur_data = td_strdup(value);
        }
    }
}

void nt_sse_parse(nt_sse_t *s)
{
    if (!s->headers_done) {
        char *end = strstr(s->raw, "\r\n\r\n");
        if (!end) return;
        *end = '\0';
        sscanf(s->raw, "HTTP/1.%*d %ld", &s->status);
        for (char *p = s->raw; (p = strchr(p, '\n')); p++)
            if (strncasecmp(p + 1, "transfer-encoding: chunked", 26) == 0) s->chunked = true;
        s->headers_done = true;
        nt_buf_drop(&s->raw, &s->raw_len, (size_t)(end + 4 - s->raw));
    }
    for (;;) {
        if (!s->chunked) {
            nt_buf_add(&s->body, &s->body_len, s->raw, s->raw_len);
            nt_buf_drop(&s->raw, &s->raw_len, s->raw_len);
            break;
        }
        if (s->want_crlf) {
            if (s->raw_len < 2) break;
            nt_buf_drop(&s->raw, &s->raw_len, 2);
            s->want_crlf = false;
        }
        if (s->chunk_left == 0) {
            char *eol = strstr(s->raw, "\r\n");
            if (!eol) break;
            size_t size = strtoul(s->raw, NULL, 16);
            nt_buf_drop(&s->raw, &s->raw_len, (size_t)(eol + 2 - s->raw));
            if (size == 0) {
                s->ended = true;
                break;
            }
            s->chunk_left = size;
        }
        size_t n = s->raw_len < s->chunk_left ? s->raw_len : s->chunk_left;
        if (n == 0) break;
        nt_buf_add(&s->body, &s->body_len, s->raw, n);
        nt_buf_drop(&s->raw, &s->raw_len, n);
        s->chunk_left -= n;
        if (s->chunk_left == 0) s->want_crlf = true;
    }
    char *nl;
    while ((nl = memchr(s->body, '\n', s->body_len))) {
        *nl = '\0';
        char *line = td_strdup(s->body);
        nt_buf_drop(&s->body, &s->body_len, (size_t)(nl + 1 - s->body));
        nt_sse_line(s, line);
        free(line);
    }
}

void nt_sse_pump(nt_sse_t *s, int wait_ms)
{
    struct pollfd pfd = {.fd = s->fd, .events = POLLIN};
    while (!s->ended && poll(&pfd, 1, wait_ms) > 0) {
        char buf[8192];
        ssize_t n = read(s->fd, buf, sizeof(buf));
        if (n <= 0) {
            s->ended = true;
            break;
        }
        nt_buf_add(&s->raw, &s->raw_len, buf, (size_t)n);
        nt_sse_parse(s);
        wait_ms = 0;
    }
}

long nt_sse_status(nt_sse_t *s)
{
    int64_t deadline = td_mono_ms() + NT_WAIT_MS;
    while (!s->headers_done && !s->ended && td_mono_ms() < deadline) nt_sse_pump(s, 50);
    return s->status;
}

bool nt_sse_wait(nt_sse_t *s, size_t want, int timeout_ms)
{
    int64_t deadline = td_mono_ms() + timeout_ms;
    while (s->cnt < want && !s->ended && td_mono_ms() < deadline) nt_sse_pump(s, 20);
    return s->cnt >= want;
}

void nt_sse_close(nt_sse_t *s)
{
    if (!s) return;
    close(s->fd);
    for (size_t i = 0; i < s->cnt; i++) free(s->events[i].data);
    free(s->events);
    free(s->cur_data);
    free(s->raw);
    free(s->body);
    free(s);
}

json_t *nt_sse_json(const nt_sse_t *s, size_t i)
{
    return json_loads(s->events[i].data, 0, NULL);
}

bool nt_live_cond(void *arg)
{
    return notifications_service_live(arg);
}

nt_sse_t *nt_stream_live(const nt_world_t *w, const char *token, const char *user_id)
{
    if (!ts_wait_until(nt_live_cond, w->svc, NT_WAIT_MS)) abort();
    nt_sse_t *s = nt_sse_open(w->port, "/notifications/stream", token, NULL);
    if (nt_sse_status(s) != 200) abort();
    int64_t deadline = td_mono_ms() + NT_WAIT_MS;
    while (s->cnt == 0 && td_mono_ms() < deadline) {
        nt_login(w, user_id);
        nt_sse_wait(s, 1, 500);
    }
    if (s->cnt == 0) abort();
    /* Later sign-ins (if the first waited) may still come: let them. */
    size_t seen = s->cnt;
    do {
        seen = s->cnt;
        nt_sse_pump(s, 300);
    } while (s->cnt != seen);
    for (size_t i = 0; i < s->cnt; i++) free(s->events[i].data);
    s->cnt = 0;
    return s;
}
