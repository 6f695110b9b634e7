/* Fuzzes the checks of a browser's PushSubscription and of webhook URLs:
 * td_webpush_check_endpoint, td_webpush_origin and td_webpush_check_keys.
 * The input is a flag byte (bit 0: allow http on loopback) and then the
 * endpoint, p256dh and auth separated by newlines. Invariants: an
 * endpoint that passes has an origin that is https (or http on loopback
 * when allowed), no user info, and gets a VAPID token; keys that pass can
 * be encrypted to. */
#include "fuzz.h"
#include "tidings/urlguard.h"
#include "tidings/webpush.h"

static td_vapid_t *vapid;

/* No network while fuzzing: names never resolve (the guard's resolved-
 * address rules are fuzz_urlguard's). */
static int no_answers(const char *host, int port, struct sockaddr_storage *out, int max)
{
    (void)host;
    (void)port;
    (void)out;
    (void)max;
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[256];
    td_urlguard_set_resolver(no_answers);
    vapid = td_vapid_generate(err, sizeof(err));
    if (!vapid) {
        fprintf(stderr, "fuzz_webpush_sub: %s\n", err);
        abort();
    }
    return 0;
}

/* The next newline-terminated piece of the input (the rest for the last). */
static char *next_field(fuzz_in_t *in)
{
    const uint8_t *nl = memchr(in->p, '\n', in->left);
    size_t n = nl ? (size_t)(nl - in->p) : in->left;
    char *s = fuzz_str(in->p, n);
    in->p += nl ? n + 1 : n;
    in->left -= nl ? n + 1 : n;
    return s;
}

static void check_endpoint(const char *endpoint, bool allow_http)
{
    char err[256] = "";
    char *origin = NULL;
    int rc = td_webpush_check_endpoint(endpoint, allow_http, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || (rc == TD_EINVAL && err[0]));
    int orc = td_webpush_origin(endpoint, &origin, err, sizeof(err));
    FUZZ_CHECK(orc == 0 || (orc == TD_EINVAL && err[0]));
    if (rc != 0) goto out;

    FUZZ_CHECK(orc == 0);
    FUZZ_CHECK(strlen(endpoint) <= TD_WEBPUSH_URL_MAX);
    FUZZ_CHECK(!strncmp(origin, "https://", 8) || (allow_http && !strncmp(origin, "http://", 7)));
    FUZZ_CHECK(strchr(origin, '@') == NULL);
    for (const char *p = origin; *p; p++) FUZZ_CHECK(*p > 0x20 && *p < 0x7f);
    char *jwt =
        td_vapid_jwt(vapid, endpoint, "mailto:ops@tidings.local", 1800000000, err, sizeof(err));
    if (!jwt) fprintf(stderr, "no VAPID token for '%s': %s\n", endpoint, err);
    FUZZ_CHECK(jwt != NULL);
    free(jwt);
out:
    free(origin);
}

static void check_keys(const char *p256dh, const char *auth)
{
    char err[256] = "";
    int rc = td_webpush_check_keys(p256dh, auth, err, sizeof(err));
    FUZZ_CHECK(rc == 0 || (rc == TD_EINVAL && err[0]));
    if (rc != 0) return;
    unsigned char *body = NULL;
    size_t body_len = 0;
    static const char msg[] = "{\"title\":\"Order approved\"}";
    rc = td_webpush_encrypt(p256dh, auth, msg, sizeof(msg) - 1, &body, &body_len, err, sizeof(err));
    if (rc != 0) fprintf(stderr, "keys pass the check but encrypt fails: %s\n", err);
    FUZZ_CHECK(rc == 0);
    FUZZ_CHECK(body_len == TD_WEBPUSH_HEADER_LEN + sizeof(msg) - 1 + 1 + 16);
    free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    bool allow_http = fuzz_u8(&in) & 1;
    char *endpoint = next_field(&in);
    char *p256dh = next_field(&in);
    char *auth = next_field(&in);

    check_endpoint(endpoint, allow_http);
    check_keys(p256dh, auth);

    free(auth);
    free(p256dh);
    free(endpoint);
    return 0;
}
