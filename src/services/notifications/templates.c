/* Notification texts (see notif_render in notifications.h): a rule's
 * title and body are templates over the event's data, and money fields
 * (the catalogue says which) read as money for people. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "notifications/notifications.h"
#include "tidings/json.h"

/* ---- templates -------------------------------------------------------------- */

/* A field name the catalogue holds as money in some event (price, total,
 * ...): templates print those as money for people. */
static bool is_money_field(const char *name)
{
    for (int e = 0; e < TD_EV__COUNT; e++)
        for (const td_field_spec_t *f = td_catalog((td_ev_t)e)->fields; f->name; f++)
            if (f->kind == TD_FIELD_MONEY && !strcmp(f->name, name)) return true;
    return false;
}

void notif_money_text(int64_t cents, char *buf, size_t len)
{
    /* The JSON form ("2258", "19.9" is 19.90) is for programs; a sentence
     * that says "total 2258." reads like a count, so people get grouped
     * units and both decimals. Event money is never negative (the check
     * refuses it), but a sign costs nothing. */
    const char *sign = cents < 0 ? "-" : "";
    uint64_t abs = cents < 0 ? (uint64_t)0 - (uint64_t)cents : (uint64_t)cents;
    char digits[24], grouped[40];
    int n = snprintf(digits, sizeof(digits), "%" PRIu64, abs / 100);
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        if (i > 0 && (n - i) % 3 == 0) grouped[k++] = ',';
        grouped[k++] = digits[i];
    }
    grouped[k] = '\0';
    snprintf(buf, len, "%s%s.%02u", sign, grouped, (unsigned)(abs % 100));
}

/* The text of vars[name], or NULL when absent (or empty, or not a scalar). */
static char *value_text(const json_t *vars, const char *name)
{
    const json_t *v = json_object_get(vars, name);
    char buf[32];
    if (json_is_string(v)) return json_string_length(v) ? td_strdup(json_string_value(v)) : NULL;
    if (is_money_field(name)) {
        int64_t cents;
        if (!json_is_number(v) || td_json_to_cents(v, name, &cents, NULL, 0) != 0) return NULL;
        notif_money_text(cents, buf, sizeof(buf));
        return td_strdup(buf);
    }
    if (json_is_integer(v)) return td_asprintf("%" JSON_INTEGER_FORMAT, json_integer_value(v));
    if (json_is_real(v)) return td_asprintf("%g", json_real_value(v));
    return NULL;
}

char *notif_render(const char *tpl, const json_t *vars, char *errstr, size_t errlen)
{
    td_strbuf_t sb = {0};
    const char *p = tpl;
    while (*p) {
        if (*p == '[') {
            const char *end = strchr(p, ']');
            if (!end) goto bad_tpl;
            char *inner = td_strndup(p + 1, (size_t)(end - p - 1));
            char *text = notif_render(inner, vars, NULL, 0);
            if (text) td_strbuf_add(&sb, text, strlen(text));
            free(text);
            free(inner);
            p = end + 1;
        } else if (*p == '{') {
            const char *end = strchr(p, '}');
            if (!end) goto bad_tpl;
            char *name = td_strndup(p + 1, (size_t)(end - p - 1));
            char *text = value_text(vars, name);
            if (!text) {
                td_errf(errstr, errlen, TD_EINVAL, "field '%s' is missing", name);
                free(name);
                goto fail;
            }
            td_strbuf_add(&sb, text, strlen(text));
            free(text);
            free(name);
            p = end + 1;
        } else {
            size_t n = strcspn(p, "[{");
            td_strbuf_add(&sb, p, n);
            p += n;
        }
    }
    return td_strbuf_take(&sb);

bad_tpl:
    td_errf(errstr, errlen, TD_EINVAL, "unbalanced template: %s", tpl);
fail:
    free(sb.p);
    return NULL;
}
