/* Idempotency-Key of the HTTP layer (SPEC section 2, "Safe retries"):
 * a POST with a key runs its handler once per caller and key; a repeat gets
 * the stored answer byte for byte. http.c calls td__idem_begin before the
 * handler and td__idem_end after it (or after td_deferred_done). */
#include "tidings/http.h"

#include <openssl/evp.h>

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http_internal.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/db.h"

/* ---- Idempotency-Key (SPEC section 2, "Safe retries") ---- */

/* Takes caller+key as running; false when it runs already. */
static bool idem_take(td_http_t *http, idem_t *im)
{
    assert(!im->slot);
    char *slot = td_asprintf("%s\n%s", im->caller, im->key);
    pthread_mutex_lock(&http->idem_mu);
    for (size_t i = 0; i < http->idem_cnt; i++)
        if (!strcmp(http->idem_running[i], slot)) {
            pthread_mutex_unlock(&http->idem_mu);
            free(slot);
            return false;
        }
    http->idem_running =
        td_realloc(http->idem_running, (http->idem_cnt + 1) * sizeof(*http->idem_running));
    http->idem_running[http->idem_cnt++] = slot;
    pthread_mutex_unlock(&http->idem_mu);
    im->slot = slot;
    return true;
}

void td__idem_free(td_http_t *http, idem_t *im)
{
    if (!im) return;
    if (im->slot) {
        pthread_mutex_lock(&http->idem_mu);
        for (size_t i = 0; i < http->idem_cnt; i++)
            if (http->idem_running[i] == im->slot) {
                http->idem_running[i] = http->idem_running[--http->idem_cnt];
                break;
            }
        pthread_mutex_unlock(&http->idem_mu);
        free(im->slot);
    }
    free(im->caller);
    free(im->key);
    free(im);
}

/* The caller a key belongs to: the user of a valid token, else the
 * client's address (anonymous requests). */
static char *idem_caller(const td_req_t *req)
{
    const char *token = td__http_bearer_token(req);
    td_claims_t claims;
    char err[128];
    if (token && *token && req->secret_len &&
        td_jwt_verify(req->secret, req->secret_len, token, td_now_ms() / 1000, &claims, err,
                      sizeof(err)) == 0)
        return td_asprintf("user:%s", claims.sub);
    return td_asprintf("ip:%s", req->client_ip);
}

/* What makes two requests with one key the same request. */
static void idem_hash(const td_req_t *req, unsigned char out[TD_IDEM_HASH])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md) td_oom();
    EVP_DigestInit_ex(md, EVP_sha256(), NULL);
    EVP_DigestUpdate(md, req->method, strlen(req->method) + 1);
    EVP_DigestUpdate(md, req->path, strlen(req->path) + 1);
    if (req->body_raw) EVP_DigestUpdate(md, req->body_raw, req->body_len);
    unsigned int n = 0;
    EVP_DigestFinal_ex(md, out, &n);
    EVP_MD_CTX_free(md);
    assert(n == TD_IDEM_HASH);
}

/* The stored answer as this request's response, byte for byte. */
static void idem_replay(td_resp_t *resp, const td_idem_answer_t *a)
{
    const char *ctype = NULL;
    char *hdrs = td_strdup(a->headers ? a->headers : "");
    char *save = NULL;
    header_t extra[16];
    size_t extra_cnt = 0;
    for (char *line = strtok_r(hdrs, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *colon = strstr(line, ": ");
        if (!colon) continue;
        *colon = '\0';
        if (!strcasecmp(line, "Content-Type"))
            ctype = colon + 2;
        else if (extra_cnt < TD_ARRAY_SIZE(extra))
            extra[extra_cnt++] = (header_t){line, colon + 2};
    }
    td_resp_data(resp, a->status, ctype ? ctype : "application/json; charset=utf-8", a->body,
                 a->body_len);
    for (size_t i = 0; i < extra_cnt; i++) td_resp_header(resp, extra[i].name, extra[i].value);
    td_resp_header(resp, "Idempotent-Replayed", "true");
    free(hdrs);
}

/* Before the handler of a POST: true when the request is answered already
 * (a bad key 400, a repeat of a running request 409, another body with a
 * used key 422, or the stored answer), false to run the handler, which
 * then runs with its units held (td__db_hold) when the request has a key. */
bool td__idem_begin(request_state_t *st)
{
    td_http_t *http = st->http;
    td_req_t *req = &st->req;
    td_resp_t *resp = &st->resp;
    if (!http->idem_db || strcmp(req->method, "POST")) return false;
    const char *key = td_req_header(req, "Idempotency-Key");
    if (!key) return false;
    if (!td_idem_key_valid(key)) {
        td__resp_error_msg(resp, 400,
                           "Idempotency-Key must be 1 to 255 printable ASCII characters");
        return true;
    }
    idem_t *im = td_calloc(1, sizeof(*im));
    im->caller = idem_caller(req);
    im->key = td_strdup(key);
    idem_hash(req, im->hash);
    if (!idem_take(http, im)) {
        td__idem_free(http, im);
        td__resp_error_msg(resp, 409, "a request with this Idempotency-Key is still in progress");
        return true;
    }
    td_idem_answer_t a;
    int rc = td_idem_lookup(http->idem_db, im->caller, im->key, td_now_ms(), &a);
    if (rc == 0) {
        if (memcmp(a.hash, im->hash, TD_IDEM_HASH))
            td__resp_error_msg(resp, 422, "this Idempotency-Key was used for another request");
        else
            idem_replay(resp, &a);
        td_idem_answer_clear(&a);
        td__idem_free(http, im);
        return true;
    }
    if (rc != TD_ENOENT) {
        td__idem_free(http, im);
        td__resp_error_msg(resp, 500, "the Idempotency-Key could not be checked");
        return true;
    }
    st->idem = im;
    td__db_hold(http->idem_db);
    return false;
}

/* Answers worth keeping: a retry of a server error, an authentication
 * failure or a rate limit must run again, not get the same refusal; an
 * answer marked no-store (a token) is never written down. */
static bool idem_keeps(const td_resp_t *resp)
{
    for (size_t i = 0; i < resp->hdr_cnt; i++)
        if (!strcasecmp(resp->hdrs[i].name, "Cache-Control") &&
            strstr(resp->hdrs[i].value, "no-store"))
            return false;
    return resp->status > 0 && resp->status < 500 && resp->status != 401 && resp->status != 429 &&
           !resp->mhd && !resp->has_takeover;
}

/* After the handler, on its thread: stores the answer in the unit that
 * holds the handler's effects and commits both, or rolls the effects back
 * with an answer that is not kept. The response becomes 409 when another
 * instance stored this key first, 500 when the commit failed. */
void td__idem_end(request_state_t *st)
{
    idem_t *im = st->idem;
    if (!im) return;
    st->idem = NULL;
    td_http_t *http = st->http;
    td_db_t *db = http->idem_db;
    td_resp_t *resp = &st->resp;
    td__db_hold(NULL);
    bool held = td__db_in_unit(db);
    if (!idem_keeps(resp)) {
        /* A server error answers for no effect; other answers not kept
         * keep their effects. */
        if (held && (resp->status >= 500 || resp->status == 0))
            td_db_rollback(db);
        else if (held && td_db_commit(db) != 0)
            td__resp_error_msg(resp, 500, "the request could not be committed");
        td__idem_free(http, im);
        return;
    }
    td_idem_answer_t a = {.status = resp->status, .body = resp->data, .body_len = resp->len};
    memcpy(a.hash, im->hash, TD_IDEM_HASH);
    size_t hlen = 0, hcap = 256;
    char *hdrs = td_malloc(hcap);
    hdrs[0] = '\0';
    for (size_t i = 0; i <= resp->hdr_cnt; i++) {
        const char *name = i == 0 ? "Content-Type" : resp->hdrs[i - 1].name;
        const char *value = i == 0 ? resp->ctype : resp->hdrs[i - 1].value;
        if (!value || (i > 0 && !strcasecmp(name, "Content-Type"))) continue;
        size_t n = strlen(name) + strlen(value) + 4;
        if (hlen + n > hcap) hdrs = td_realloc(hdrs, hcap = 2 * (hlen + n));
        hlen += (size_t)snprintf(hdrs + hlen, hcap - hlen, "%s: %s\n", name, value);
    }
    a.headers = hdrs;
    int rc = held ? 0 : td_db_begin(db);
    if (rc == 0) {
        rc = td_idem_store(db, im->caller, im->key, &a, td_now_ms());
        if (rc == 0)
            rc = td_db_commit(db);
        else
            td_db_rollback(db);
    }
    free(hdrs);
    if (rc == TD_EEXIST)
        td__resp_error_msg(resp, 409,
                           "another request with this Idempotency-Key was answered first");
    else if (rc != 0)
        td__resp_error_msg(resp, 500, "the request could not be committed");
    td__idem_free(http, im);
}
