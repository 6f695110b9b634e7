/* Fuzzes the Server-Sent Events framing that carries notification text to
 * browsers (td_sse_frame, td_sse_comment). The input is a flag byte (which
 * of id, event, data are given) and then id, event and data separated by
 * NUL bytes. The frame is read back the way a browser's EventSource does
 * (WHATWG HTML, "event stream interpretation"), and must give back exactly
 * one event with the id and event name minus CR/LF and the data with every
 * line ending made LF: no text can end a frame early or forge a field. */
#include "fuzz.h"
#include "tidings/sse.h"

typedef struct parsed {
    char *id, *event, *data;
    size_t events; /* dispatched by blank lines */
    size_t comments;
} parsed_t;

static char *append_text(char *s, const char *p, size_t n)
{
    size_t have = s ? strlen(s) : 0;
    s = realloc(s, have + n + 1);
    FUZZ_CHECK(s != NULL);
    memcpy(s + have, p, n);
    s[have + n] = '\0';
    return s;
}

/* The EventSource parser, for one stream that holds the given text. */
static void parse(const char *text, parsed_t *out)
{
    memset(out, 0, sizeof(*out));
    const char *p = text;
    while (*p) {
        size_t n = strcspn(p, "\r\n");
        const char *line = p;
        p += n;
        FUZZ_CHECK(*p); /* every line is terminated */
        if (p[0] == '\r' && p[1] == '\n') p++;
        p++;
        if (n == 0) {
            out->events++;
            continue;
        }
        if (line[0] == ':') {
            out->comments++;
            continue;
        }
        const char *colon = memchr(line, ':', n);
        size_t name_len = colon ? (size_t)(colon - line) : n;
        const char *value = colon ? colon + 1 : line + n;
        if (colon && value < line + n && *value == ' ') value++;
        size_t value_len = (size_t)(line + n - value);
        FUZZ_CHECK(out->events == 0); /* nothing after the frame's end */
        if (name_len == 2 && !memcmp(line, "id", 2)) {
            free(out->id);
            out->id = append_text(NULL, value, value_len);
        } else if (name_len == 5 && !memcmp(line, "event", 5)) {
            free(out->event);
            out->event = append_text(NULL, value, value_len);
        } else if (name_len == 4 && !memcmp(line, "data", 4)) {
            if (out->data) out->data = append_text(out->data, "\n", 1);
            out->data = append_text(out->data, value, value_len);
        } else {
            FUZZ_CHECK(!"a field the frame did not mean to have");
        }
    }
}

static char *without_crlf(const char *s)
{
    char *out = append_text(NULL, "", 0);
    for (const char *p = s; *p; p++)
        if (*p != '\r' && *p != '\n') out = append_text(out, p, 1);
    return out;
}

static char *lf_endings(const char *s)
{
    char *out = append_text(NULL, "", 0);
    for (const char *p = s; *p; p++) {
        if (*p == '\r') {
            if (p[1] == '\n') p++;
            out = append_text(out, "\n", 1);
        } else {
            out = append_text(out, p, 1);
        }
    }
    return out;
}

static char *next_part(fuzz_in_t *in)
{
    const uint8_t *nul = memchr(in->p, '\0', in->left);
    size_t n = nul ? (size_t)(nul - in->p) : in->left;
    char *s = fuzz_str(in->p, n);
    in->p += nul ? n + 1 : n;
    in->left -= nul ? n + 1 : n;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_in_t in = {data, size};
    uint8_t flags = fuzz_u8(&in);
    char *id = next_part(&in), *event = next_part(&in), *text = next_part(&in);
    const char *id_in = flags & 1 ? id : NULL, *event_in = flags & 2 ? event : NULL;
    const char *data_in = flags & 4 ? text : NULL;

    char *frame = td_sse_frame(event_in, id_in, data_in);
    size_t len = strlen(frame);
    FUZZ_CHECK(len >= 1 && frame[len - 1] == '\n');
    parsed_t got;
    parse(frame, &got);
    FUZZ_CHECK(got.events == 1 && got.comments == 0);
    if (id_in) {
        char *want = without_crlf(id_in);
        FUZZ_CHECK(got.id && strcmp(got.id, want) == 0);
        free(want);
    } else {
        FUZZ_CHECK(!got.id);
    }
    if (event_in) {
        char *want = without_crlf(event_in);
        FUZZ_CHECK(got.event && strcmp(got.event, want) == 0);
        free(want);
    } else {
        FUZZ_CHECK(!got.event);
    }
    if (data_in) {
        char *want = lf_endings(data_in);
        FUZZ_CHECK(got.data && strcmp(got.data, want) == 0);
        free(want);
    } else {
        FUZZ_CHECK(!got.data);
    }
    free(got.id);
    free(got.event);
    free(got.data);
    free(frame);

    char *comment = td_sse_comment(text);
    parse(comment, &got);
    FUZZ_CHECK(got.events == 1 && !got.id && !got.event && !got.data);
    FUZZ_CHECK(got.comments >= 1);
    free(comment);

    free(text);
    free(event);
    free(id);
    return 0;
}
