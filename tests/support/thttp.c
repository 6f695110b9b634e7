/* The tests' HTTP client: one blocking libcurl request per call, returning
 * status, body, parsed JSON and the raw headers of the final response, so
 * integration tests can check the SPEC's HTTP contract from outside. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tidings/json.h"
#include "tsupport.h"

typedef struct buf {
    char *p;
    size_t len;
} buf_t;

static void buf_add(buf_t *b, const char *data, size_t n)
{
    b->p = td_realloc(b->p, b->len + n + 1);
    memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static size_t on_body(char *data, size_t size, size_t nmemb, void *arg)
{
    buf_add(arg, data, size * nmemb);
    return size * nmemb;
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
    buf_t *b = arg;
    size_t n = size * nmemb;
    /* A new status line ("HTTP/1.1 100 Continue" then the real one):
     * keep only the last response's headers. */
    if (n >= 5 && strncmp(data, "HTTP/", 5) == 0) b->len = 0;
    buf_add(b, data, n);
    return n;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_setup(void)
{
    curl_global_init(CURL_GLOBAL_ALL);
}

ts_resp_t ts_http(const char *method, const char *url, const char *token, const char *body,
                  const char *content_type, const char *const *extra_headers)
{
    ts_resp_t r;
    memset(&r, 0, sizeof(r));
    buf_t bbody = {NULL, 0}, bhdr = {NULL, 0};
    buf_add(&bbody, "", 0);
    buf_add(&bhdr, "", 0);
    pthread_once(&curl_once, curl_setup);

    CURL *c = curl_easy_init();
    struct curl_slist *hl = NULL;
    char *auth = NULL, *ct = NULL;
    if (!c) goto done;
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &bbody);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &bhdr);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    else
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    if (body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(body));
        ct = td_asprintf("Content-Type: %s", content_type ? content_type : "application/json");
        hl = curl_slist_append(hl, ct);
    } else if (content_type) {
        ct = td_asprintf("Content-Type: %s", content_type);
        hl = curl_slist_append(hl, ct);
    }
    if (token) {
        auth = td_asprintf("Authorization: Bearer %s", token);
        hl = curl_slist_append(hl, auth);
    }
    for (size_t i = 0; extra_headers && extra_headers[i]; i++)
        hl = curl_slist_append(hl, extra_headers[i]);
    if (hl) curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);

    CURLcode rc = curl_easy_perform(c);
    if (rc == CURLE_OK) {
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.status);
    } else {
        r.status = 0;
        bbody.len = 0;
        buf_add(&bbody, curl_easy_strerror(rc), strlen(curl_easy_strerror(rc)));
    }

done:
    if (c) curl_easy_cleanup(c);
    curl_slist_free_all(hl);
    free(auth);
    free(ct);
    r.body = bbody.p;
    r.body_len = bbody.len;
    r.headers = bhdr.p;
    if (r.status && r.body_len) r.json = json_loadb(r.body, r.body_len, 0, NULL);
    return r;
}

ts_resp_t ts_http_json(const char *method, const char *url, const char *token, json_t *body)
{
    /* Takes body (callers pass json_pack(...) straight in). */
    char *text = body ? td_json_dumps(body) : NULL;
    json_decref(body);
    ts_resp_t r = ts_http(method, url, token, text, NULL, NULL);
    free(text);
    return r;
}

const char *ts_resp_header(const ts_resp_t *r, const char *name, char *buf, size_t len)
{
    size_t nlen = strlen(name);
    if (!r->headers || !len) return NULL;
    for (const char *line = r->headers; *line;) {
        const char *eol = strchr(line, '\n');
        size_t llen = eol ? (size_t)(eol - line) : strlen(line);
        if (llen > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            const char *end = line + llen;
            while (v < end && (*v == ' ' || *v == '\t')) v++;
            while (end > v && (end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t')) end--;
            size_t vlen = (size_t)(end - v);
            if (vlen >= len) vlen = len - 1;
            memcpy(buf, v, vlen);
            buf[vlen] = '\0';
            return buf;
        }
        if (!eol) break;
        line = eol + 1;
    }
    return NULL;
}

void ts_resp_free(ts_resp_t *r)
{
    free(r->body);
    free(r->headers);
    json_decref(r->json);
    memset(r, 0, sizeof(*r));
}

const char *ts_error_code(const ts_resp_t *r)
{
    const char *code =
        json_string_value(json_object_get(json_object_get(r->json, "error"), "code"));
    return code ? code : "";
}
