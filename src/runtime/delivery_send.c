/* One try of a delivery (see delivery_internal.h): the request of a Web
 * Push, a webhook or an email, signed for this try where the channel wants
 * it (VAPID, X-Tidings-Signature), sent on the worker's curl handle through
 * its multi handle so that td_delivery_stop can cut it short, and its
 * answer classified into an outcome: sent, gone, retry or failed, with an
 * error class that never quotes the endpoint. Runs without the database
 * lock and touches no table. */
#include <curl/curl.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "delivery_internal.h"
#include "tidings/email.h"
#include "tidings/log.h"
#include "tidings/urlguard.h"
#include "tidings/webhook.h"

#define CONNECT_TIMEOUT_MS 5000

/* ---- one try ------------------------------------------------------------ */

typedef struct response {
    int64_t retry_after_ms;
} response_t;

/* Retry-After (RFC 9110 section 10.2.3): delay-seconds or an HTTP-date. */
static int64_t parse_retry_after(const char *v)
{
    while (*v == ' ' || *v == '\t') v++;
    if (*v >= '0' && *v <= '9') {
        char *end = NULL;
        long long s = strtoll(v, &end, 10);
        while (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n') end++;
        if (*end || s < 0) return -1;
        if (s > TD_DELIVERY_RETRY_AFTER_MAX_MS / 1000) return TD_DELIVERY_RETRY_AFTER_MAX_MS;
        return (int64_t)s * 1000;
    }
    time_t t = curl_getdate(v, NULL);
    if (t == (time_t)-1) return -1;
    int64_t ms = (int64_t)t * 1000 - td_now_ms();
    if (ms < 0) ms = 0;
    return ms > TD_DELIVERY_RETRY_AFTER_MAX_MS ? TD_DELIVERY_RETRY_AFTER_MAX_MS : ms;
}

static size_t on_header(char *buf, size_t size, size_t n, void *arg)
{
    response_t *resp = arg;
    size_t len = size * n;
    static const char name[] = "retry-after:";
    if (len >= 5 && !strncmp(buf, "HTTP/", 5)) {
        resp->retry_after_ms = -1; /* a new response (after a 1xx) starts */
    } else if (len > sizeof(name) - 1 && !strncasecmp(buf, name, sizeof(name) - 1)) {
        char *v = td_strndup(buf + sizeof(name) - 1, len - (sizeof(name) - 1));
        resp->retry_after_ms = parse_retry_after(v);
        free(v);
    }
    return len;
}

/* The body of an answer is read and dropped: nothing of it is kept. */
static size_t on_body(char *buf, size_t size, size_t n, void *arg)
{
    (void)buf;
    (void)arg;
    return size * n;
}

static enum verdict classify_status(const job_t *job, long status)
{
    if (status >= 200 && status < 300) return V_SUCCESS;
    /* RFC 8030 section 7.3: the subscription has expired or never was.
     * Only push services say so; a webhook URL answering 404 is more
     * likely a misconfigured receiver, which its owner should hear about
     * through the dead-letter topic rather than lose the webhook. */
    if (!strcmp(job->channel, TD_DELIVERY_WEBPUSH) && (status == 404 || status == 410))
        return V_GONE;
    if (status == 408 || status == 429 || status >= 500) return V_RETRY;
    return V_FAIL;
}

/* The error class of a failed transfer. blocked: the guard refused a
 * socket (an address that is not public). */
static const char *curl_error_class(CURLcode cc, long os_errno, bool blocked)
{
    switch (cc) {
    case CURLE_COULDNT_CONNECT:
        if (blocked) return "blocked_address";
        return os_errno == ECONNREFUSED ? "connect_refused" : "connect_error";
    case CURLE_OPERATION_TIMEDOUT:
        return "timeout";
    case CURLE_COULDNT_RESOLVE_HOST:
        return "dns_error";
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_USE_SSL_FAILED:
        return "tls_error";
    case CURLE_SEND_ERROR:
        return "send_error";
    case CURLE_RECV_ERROR:
        return "recv_error";
    case CURLE_GOT_NOTHING:
        return "empty_reply";
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
        return "protocol_error";
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return "bad_url";
    default:
        return "network_error";
    }
}

static bool permanent_curl_error(CURLcode cc, bool blocked)
{
    /* A refused address is a policy, not a condition that passes. */
    return cc == CURLE_UNSUPPORTED_PROTOCOL || cc == CURLE_URL_MALFORMAT ||
           (cc == CURLE_COULDNT_CONNECT && blocked);
}

/* Runs the transfer armed on w's handle; false when stopped (out says so). */
static bool perform(worker_t *w, CURLcode *cc, outcome_t *out)
{
    CURL *c = w->easy;
    *cc = CURLE_OK;
    curl_multi_add_handle(w->multi, c);
    for (;;) {
        int running = 0;
        if (curl_multi_perform(w->multi, &running) != CURLM_OK) {
            *cc = CURLE_FAILED_INIT;
            break;
        }
        if (!running) {
            int left = 0;
            CURLMsg *m;
            while ((m = curl_multi_info_read(w->multi, &left)))
                if (m->msg == CURLMSG_DONE) *cc = m->data.result;
            break;
        }
        if (atomic_load(&w->dlv->stopping)) {
            out->verdict = V_ABORTED;
            break;
        }
        curl_multi_poll(w->multi, NULL, 0, 1000, NULL);
    }
    curl_multi_remove_handle(w->multi, c);
    if (out->verdict == V_ABORTED) {
        snprintf(out->error, sizeof(out->error), "stopped");
        return false;
    }
    return true;
}

/* The recipient an email row carries in its headers ("Rcpt: addr"). */
static char *email_rcpt(const job_t *job)
{
    static const char name[] = "Rcpt: ";
    for (const char *line = job->headers; *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (len > sizeof(name) - 1 && !strncmp(line, name, sizeof(name) - 1))
            return td_strndup(line + sizeof(name) - 1, len - (sizeof(name) - 1));
        if (!nl) break;
        line = nl + 1;
    }
    return NULL;
}

/* One SMTP try of an email row: its message as queued, to the server of
 * TIDINGS_SMTP_URL (the guard checks its address at connect time too).
 * Error classes: "smtp_<reply code>" (4xx retried, 5xx permanent), the
 * transfer classes above, "smtp_off" when no server is configured. */
static void send_email(worker_t *w, const job_t *job, outcome_t *out)
{
    struct td_delivery *dlv = w->dlv;
    td_urlguard_conn_t guard = {0};
    struct curl_slist *rcpts = NULL;
    char *rcpt = email_rcpt(job);
    CURL *c = w->easy;
    curl_easy_reset(c);
    if (!dlv->smtp.url || !rcpt) {
        out->verdict = V_FAIL;
        snprintf(out->error, sizeof(out->error), "%s", rcpt ? "smtp_off" : "bad_message");
        goto out;
    }
    if (td_urlguard_curl(c, dlv->smtp.url, "smtp,smtps",
                         dlv->cfg->allow_http_endpoints ? TD_URLGUARD_LOOPBACK : 0, &guard) != 0) {
        out->verdict = V_FAIL;
        snprintf(out->error, sizeof(out->error), "blocked_url");
        goto out;
    }
    td__email_upload_t up = {.data = job->body, .len = job->body_len};
    td__email_arm(c, &dlv->smtp, dlv->smtp.from_addr, rcpt, &up, &rcpts);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)dlv->timeout_ms);
    curl_easy_setopt(
        c, CURLOPT_CONNECTTIMEOUT_MS,
        (long)(dlv->timeout_ms < CONNECT_TIMEOUT_MS ? dlv->timeout_ms : CONNECT_TIMEOUT_MS));
    CURLcode cc;
    if (!perform(w, &cc, out)) goto out;
    long code = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
    out->status = code;
    if (cc == CURLE_OK) {
        out->verdict = V_SUCCESS;
        out->health = 1;
    } else if (code >= 400 && code < 600) {
        /* The server answered: 4xx is "try again later" (RFC 5321
         * section 4.2.1), 5xx a refusal that a retry does not change. */
        out->verdict = code < 500 ? V_RETRY : V_FAIL;
        out->health = code < 500 ? -1 : 1;
        snprintf(out->error, sizeof(out->error), "smtp_%ld", code);
    } else {
        long os_errno = 0;
        curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno);
        out->verdict = permanent_curl_error(cc, guard.blocked) ? V_FAIL : V_RETRY;
        out->health = -1;
        snprintf(out->error, sizeof(out->error), "%s",
                 cc == CURLE_LOGIN_DENIED ? "smtp_auth"
                                          : curl_error_class(cc, os_errno, guard.blocked));
        if (guard.blocked)
            td_warn("delivery %" PRId64 " by email: refused to connect to a %s address", job->id,
                    td_addr_class_name(guard.blocked_class));
    }
out:
    td_urlguard_conn_clear(&guard);
    curl_slist_free_all(rcpts);
    free(rcpt);
}

/* Sends job once. Runs without the database lock. */
void td__delivery_send(worker_t *w, const job_t *job, outcome_t *out)
{
    struct td_delivery *dlv = w->dlv;
    char err[256];
    struct curl_slist *hdrs = NULL;
    response_t resp = {.retry_after_ms = -1};
    char *auth = NULL;
    td_urlguard_conn_t guard = {0};

    memset(out, 0, sizeof(*out));
    out->retry_after_ms = -1;

    /* The stored headers, then the per-try ones. */
    for (char *line = job->headers, *nl; *line; line = nl + 1) {
        nl = strchr(line, '\n');
        if (!nl) break;
        *nl = '\0';
        hdrs = curl_slist_append(hdrs, line);
        *nl = '\n';
    }
    int64_t now_s = td_now_ms() / 1000;
    if (!strcmp(job->channel, TD_DELIVERY_EMAIL)) {
        send_email(w, job, out);
        goto out;
    }
    if (!strcmp(job->channel, TD_DELIVERY_WEBPUSH)) {
        char *value = dlv->vapid ? td_vapid_header(dlv->vapid, job->url, dlv->cfg->vapid_subject,
                                                   now_s, err, sizeof(err))
                                 : NULL;
        if (!value) {
            out->verdict = V_FAIL;
            td_warn("delivery %" PRId64 ": cannot sign the VAPID header: %s", job->id,
                    dlv->vapid ? err : "no VAPID key");
            snprintf(out->error, sizeof(out->error), "vapid_error");
            goto out;
        }
        auth = td_asprintf("Authorization: %s", value);
        free(value);
        hdrs = curl_slist_append(hdrs, auth);
    } else {
        char *sig = td_webhook_sign(job->secret, job->secret_len, now_s, job->body, job->body_len);
        char *h = td_asprintf(TD_WEBHOOK_HDR_EVENT_ID ": %s", job->event_id);
        hdrs = curl_slist_append(hdrs, h);
        free(h);
        h = td_asprintf(TD_WEBHOOK_HDR_TIMESTAMP ": %" PRId64, now_s);
        hdrs = curl_slist_append(hdrs, h);
        free(h);
        h = td_asprintf(TD_WEBHOOK_HDR_SIGNATURE ": %s", sig);
        hdrs = curl_slist_append(hdrs, h);
        free(h);
        free(sig);
    }
    /* No "Expect: 100-continue" round trip for bodies over 1 KiB. */
    hdrs = curl_slist_append(hdrs, "Expect:");

    CURL *c = w->easy;
    curl_easy_reset(c);
    /* Endpoints come from users: the guard checks the address of every
     * socket at connect time (so DNS rebinding gets nowhere), allows no
     * redirect (a 3xx is an answer, not a hop), no proxy, and the URL's
     * scheme only. */
    if (td_urlguard_curl(c, job->url, "https",
                         dlv->cfg->allow_http_endpoints ? TD_URLGUARD_HTTP_LOOPBACK : 0,
                         &guard) != 0) {
        out->verdict = V_FAIL;
        out->health = 0;
        snprintf(out->error, sizeof(out->error), "blocked_url");
        goto out;
    }
    curl_easy_setopt(c, CURLOPT_URL, job->url);
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, (const char *)job->body);
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)job->body_len);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "tidings/" TIDINGS_VERSION);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)dlv->timeout_ms);
    curl_easy_setopt(
        c, CURLOPT_CONNECTTIMEOUT_MS,
        (long)(dlv->timeout_ms < CONNECT_TIMEOUT_MS ? dlv->timeout_ms : CONNECT_TIMEOUT_MS));
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &resp);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &resp);

    CURLcode cc = CURLE_OK;
    if (!perform(w, &cc, out)) goto out;

    if (cc != CURLE_OK) {
        long os_errno = 0;
        curl_easy_getinfo(c, CURLINFO_OS_ERRNO, &os_errno);
        out->verdict = permanent_curl_error(cc, guard.blocked) ? V_FAIL : V_RETRY;
        out->health = -1;
        snprintf(out->error, sizeof(out->error), "%s",
                 curl_error_class(cc, os_errno, guard.blocked));
        if (guard.blocked)
            td_warn("delivery %" PRId64 " to %s %s: refused to connect to a %s address", job->id,
                    job->channel, job->target_id, td_addr_class_name(guard.blocked_class));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    out->verdict = classify_status(job, out->status);
    out->retry_after_ms = resp.retry_after_ms;
    /* 408, 429 and 5xx say the host is in trouble; any other answer, even
     * a refusal of this one request, says it is there. */
    out->health = out->status == 408 || out->status == 429 || out->status >= 500 ? -1 : 1;
    if (out->verdict != V_SUCCESS)
        snprintf(out->error, sizeof(out->error), "http_%ld", out->status);

out:
    td_urlguard_conn_clear(&guard);
    free(auth);
    curl_slist_free_all(hdrs);
}
