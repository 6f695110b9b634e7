/* The HTTP client of `tidings run` (libcurl, blocking and bounded, on the
 * supervisor's thread): /readyz probes of the children, the first start's
 * seeding of the sample catalogue as the administrator, and the summary
 * printed once everything is up. */
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "run_internal.h"
#include "tidings/auth.h"
#include "tidings/json.h"
#include "tidings/log.h"
#include "tidings/service.h"

static size_t curl_sink(char *p, size_t size, size_t n, void *arg)
{
    char **body = arg;
    size_t len = *body ? strlen(*body) : 0;
    if (len + size * n > 1024 * 1024) return 0;
    *body = td_realloc(*body, len + size * n + 1);
    memcpy(*body + len, p, size * n);
    (*body)[len + size * n] = '\0';
    return size * n;
}

/* One small HTTP request to a child (the supervisor blocks on it, so it is
 * bounded to timeout_ms). Returns the status, or -1 with why. *body gets
 * the response (caller frees) when body is not NULL. */
static long http_call(const char *method, const char *url, const char *token, const char *json,
                      int timeout_ms, char **body, char *why, size_t whylen)
{
    CURL *curl = curl_easy_init();
    struct curl_slist *hdrs = NULL;
    char *resp = NULL;
    long status = -1;
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 1000L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, curl_sink);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &resp);
    if (token) {
        char *h = td_asprintf("Authorization: Bearer %s", token);
        hdrs = curl_slist_append(hdrs, h);
        free(h);
    }
    if (json) {
        hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, json);
    }
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    CURLcode rc = curl_easy_perform(curl);
    if (rc != CURLE_OK)
        snprintf(why, whylen, "%s", *errbuf ? errbuf : curl_easy_strerror(rc));
    else
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    if (status >= 0 && why) snprintf(why, whylen, "HTTP %ld %s", status, resp ? resp : "");
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(curl);
    if (body)
        *body = resp;
    else
        free(resp);
    return status;
}

static char *child_url(const run_t *r, td_service_t svc, const char *path)
{
    return td_asprintf("http://%s:%d%s", r->host, r->cfg.ports[svc], path);
}

/* Probes /readyz of c if it is due; true when c is ready (now or before). */
bool run__probe(run_t *r, child_t *c)
{
    if (c->ready) return true;
    if (!c->pid || td_mono_ms() < c->next_probe) return false;
    char *url = child_url(r, c->svc, "/readyz");
    long status =
        http_call("GET", url, NULL, NULL, 1000, NULL, c->last_probe, sizeof(c->last_probe));
    free(url);
    c->next_probe = td_mono_ms() + PROBE_INTERVAL_MS;
    c->ready = status == 200;
    return c->ready;
}

/* ---- first start ------------------------------------------------------- */

typedef struct sample {
    const char *title;
    const char *price; /* JSON number text: money is never a double here */
    int quantity;
} sample_t;

static const sample_t samples[] = {
    {"iPhone 15", "1129", 19},
    {"MacBook Air 13\" M3", "1299", 8},
    {"AirPods Pro (2nd generation)", "249", 40},
    {"Galaxy S24", "899", 15},
    {"Kindle Paperwhite", "149.99", 30},
    {"Sony WH-1000XM5 Headphones", "399", 12},
    {"Mechanical Keyboard", "89.50", 25},
    {"Steam Deck OLED", "549", 0},
};

/* Creates the sample catalogue through the products API as the admin, so
 * ProductCreatedEvents flow, and leaves the marker that prevents a second
 * seeding. */
void run__seed(run_t *r)
{
    char why[512];
    char *body = NULL, *token = NULL;
    json_t *login = json_pack("{s:s, s:s}", "email", ADMIN_EMAIL, "password", r->admin_password);
    char *login_json = td_json_dumps(login);
    json_decref(login);
    char *url = child_url(r, TD_SVC_USERS, "/login");
    long status = http_call("POST", url, NULL, login_json, 15000, &body, why, sizeof(why));
    free(url);
    free(login_json);
    json_t *resp = body ? json_loads(body, 0, NULL) : NULL;
    if (status == 200) token = td_strdup(json_string_value(json_object_get(resp, "token")));
    json_decref(resp);
    free(body);
    if (!token) {
        say_warn("could not log in as %s to create the sample catalogue: %s", ADMIN_EMAIL, why);
        return;
    }
    size_t made = 0;
    for (size_t i = 0; i < TD_ARRAY_SIZE(samples); i++) {
        json_t *title = json_string(samples[i].title);
        char *title_json = json_dumps(title, JSON_ENCODE_ANY);
        json_decref(title);
        char *product = td_asprintf("{\"title\":%s,\"price\":%s,\"quantity\":%d}", title_json,
                                    samples[i].price, samples[i].quantity);
        free(title_json);
        url = child_url(r, TD_SVC_PRODUCTS, "/products");
        status = http_call("POST", url, token, product, 10000, NULL, why, sizeof(why));
        free(url);
        free(product);
        if (status == 201)
            made++;
        else
            say_warn("could not create sample product '%s': %s", samples[i].title, why);
        run__turn(r, 0);
    }
    free(token);
    if (made == TD_ARRAY_SIZE(samples)) {
        char *marker = td_asprintf("%s/" SEED_MARKER, r->data_dir);
        const char *text =
            "the sample catalogue was created; delete this file to create it again\n";
        td_write_file(marker, text, strlen(text), 0600);
        free(marker);
    }
    say("sample catalogue: %zu products created", made);
}

void run__summary(run_t *r)
{
    run__turn(r, 20); /* let the last log lines out first */
    const char *b = r->color ? "\033[1m" : "", *g = r->color ? "\033[32;1m" : "",
               *d = r->color ? "\033[0m" : "";
    char *shop = child_url(r, TD_SVC_WEB, "/");
    char admin[256];
    if (r->admin_generated)
        snprintf(admin, sizeof(admin), "%s / %s   (generated; shown only this once)", ADMIN_EMAIL,
                 r->admin_password);
    else if (r->admin_password)
        snprintf(admin, sizeof(admin), "%s / (the password in TIDINGS_ADMIN_PASSWORD)",
                 ADMIN_EMAIL);
    else
        snprintf(admin, sizeof(admin),
                 "%s (password printed on the first start; set TIDINGS_ADMIN_PASSWORD to reset it)",
                 ADMIN_EMAIL);
    char *text = td_asprintf(
        "\n%s  tidings is running%s\n\n"
        "  shop:        %s%s%s\n"
        "  event flow:  %sflow.html\n"
        "  admin:       %s\n"
        "  APIs:        users :%d  products :%d  orders :%d  payments :%d  notifications :%d\n"
        "  brokers:     %s%s\n"
        "  data:        %s\n"
        "  logs:        %s/<service>.log\n\n"
        "  %sCtrl-C to stop%s\n\n",
        g, d, b, shop, d, shop, admin, r->cfg.ports[TD_SVC_USERS], r->cfg.ports[TD_SVC_PRODUCTS],
        r->cfg.ports[TD_SVC_ORDERS], r->cfg.ports[TD_SVC_PAYMENTS],
        r->cfg.ports[TD_SVC_NOTIFICATIONS], r->brokers, r->broker ? " (embedded, in memory)" : "",
        r->data_dir, r->logs_dir, b, d);
    run__write_all(STDOUT_FILENO, text, strlen(text));
    free(text);
    free(shop);
}

/* The supervision loop, until a stop signal. */
