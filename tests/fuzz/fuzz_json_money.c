/* Fuzzes the strict readers of request bodies and the money conversion.
 * The input is parsed as JSON (any value) and fed to td_json_to_cents,
 * td_json_only_fields, td_json_req_string and td_json_req_int as a handler
 * would; its first 8 bytes are also taken as a double, an int64 and a
 * cents amount, to reach number edge cases that JSON text rarely spells.
 * Invariants: cents accepted are within [0, TD_MONEY_MAX_CENTS];
 * td_json_money(cents) prints as the exact decimal amount and reads back
 * to the same cents; accepted strings and integers are within the limits
 * asked for. */
#include <jansson.h>
#include <math.h>

#include "fuzz.h"
#include "tidings/json.h"

/* The cents a printed JSON number spells, read as a decimal (no float):
 * -1 unless it is digits with at most 2 decimals. */
static int64_t decimal_cents(const char *s)
{
    int64_t units = 0;
    const char *p = s;
    if (*p < '0' || *p > '9') return -1;
    for (; *p >= '0' && *p <= '9'; p++) {
        if (units > TD_MONEY_MAX_CENTS) return -1;
        units = units * 10 + (*p - '0');
    }
    int64_t frac = 0;
    if (*p == '.') {
        p++;
        int digits = 0;
        for (; *p >= '0' && *p <= '9'; p++, digits++) frac = frac * 10 + (*p - '0');
        if (digits < 1 || digits > 2) return -1;
        if (digits == 1) frac *= 10;
    }
    return *p ? -1 : units * 100 + frac;
}

/* td_json_money(cents) must print exactly and read back to cents. */
static void check_money(int64_t cents)
{
    char err[256];
    json_t *m = td_json_money(cents);
    FUZZ_CHECK(m != NULL);
    char *text = td_json_dumps(m);
    if (decimal_cents(text) != cents) {
        fprintf(stderr, "td_json_money(%lld) prints '%s'\n", (long long)cents, text);
        FUZZ_CHECK(decimal_cents(text) == cents);
    }
    char fmt[32];
    td_money_format(cents, fmt, sizeof(fmt));
    FUZZ_CHECK(decimal_cents(fmt) == cents);

    json_t *back = json_loads(text, JSON_DECODE_ANY, NULL);
    FUZZ_CHECK(back != NULL);
    int64_t again = -1;
    int rc = td_json_to_cents(back, "price", &again, err, sizeof(err));
    if (rc != 0 || again != cents) {
        fprintf(stderr, "'%s' reads back as %lld (rc %d: %s), not %lld\n", text, (long long)again,
                rc, rc ? err : "", (long long)cents);
        FUZZ_CHECK(rc == 0 && again == cents);
    }
    json_decref(back);
    free(text);
    json_decref(m);
}

static void try_cents(const json_t *v)
{
    char err[256] = "";
    int64_t cents = -1;
    if (td_json_to_cents(v, "price", &cents, err, sizeof(err)) == 0) {
        FUZZ_CHECK(cents >= 0 && cents <= TD_MONEY_MAX_CENTS);
        check_money(cents);
    } else {
        FUZZ_CHECK(strncmp(err, "price ", 6) == 0);
    }
}

static void try_fields(const json_t *obj)
{
    static const char *const allowed[] = {"title", "price", "quantity", NULL};
    char err[256];
    const char *s;
    int64_t n;

    if (td_json_only_fields(obj, allowed, err, sizeof(err)) == 0) {
        const char *key;
        json_t *val;
        json_object_foreach((json_t *)obj, key, val)
        {
            (void)val;
            FUZZ_CHECK(!strcmp(key, "title") || !strcmp(key, "price") || !strcmp(key, "quantity"));
        }
    }
    if (td_json_req_string(obj, "title", 20, &s, err, sizeof(err)) == 0) {
        FUZZ_CHECK(*s && td_utf8_len(s) <= 20);
        FUZZ_CHECK(strlen(s) == json_string_length(json_object_get(obj, "title")));
    }
    if (td_json_req_int(obj, "quantity", -5, 1000000, &n, err, sizeof(err)) == 0)
        FUZZ_CHECK(n >= -5 && n <= 1000000);
    if (td_json_req_int(obj, "quantity", INT64_MIN, INT64_MAX, &n, err, sizeof(err)) == 0 &&
        json_is_real(json_object_get(obj, "quantity")))
        FUZZ_CHECK((double)n == json_real_value(json_object_get(obj, "quantity")));
    json_t *price = json_object_get(obj, "price");
    if (price) try_cents(price);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *j =
        json_loadb((const char *)data, size, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, NULL);
    if (j) {
        try_cents(j);
        if (json_is_object(j)) try_fields(j);
        if (json_is_array(j)) {
            size_t i;
            json_t *v;
            json_array_foreach(j, i, v)
            {
                try_cents(v);
                if (json_is_object(v)) try_fields(v);
            }
        }
        /* Printing is the one way out: it must read back as JSON. */
        char *text = td_json_dumps(j);
        json_t *back = json_loads(text, JSON_DECODE_ANY, NULL);
        FUZZ_CHECK(back != NULL);
        json_decref(back);
        free(text);
        json_decref(j);
    }

    /* The same bytes as binary numbers. */
    fuzz_in_t in = {data, size};
    uint64_t bits = fuzz_u64(&in);
    double d;
    memcpy(&d, &bits, sizeof(d));
    if (isfinite(d)) {
        json_t *r = json_real(d);
        try_cents(r);
        json_decref(r);
    }
    json_t *i = json_integer((json_int_t)bits);
    try_cents(i);
    json_decref(i);
    check_money((int64_t)(bits % (uint64_t)(TD_MONEY_MAX_CENTS + 1)));
    return 0;
}
