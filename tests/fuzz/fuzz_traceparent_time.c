/* Fuzzes the parsers of the small strings every event and request
 * carries: traceparent (td_trace_parse), RFC 3339 times (td_time_parse)
 * and UUIDs (td_uuid_valid). The input is one string (up to its first
 * NUL); its first 8 bytes are also a millisecond timestamp. Invariants: a
 * parsed traceparent formats to a string that parses to the same trace
 * (and, for version 00, is the input itself); a parsed time in the
 * printable range formats to 24 characters that parse back to the same
 * instant; any timestamp formats to a time that parses; a valid UUID is
 * 36 characters. */
#include "fuzz.h"
#include "tidings/trace.h"
#include "tidings/uuid.h"

#define MIN_MS (-62167219200000LL) /* 0000-01-01T00:00:00.000Z */
#define MAX_MS 253402300799999LL   /* 9999-12-31T23:59:59.999Z */

static void check_trace(const char *s)
{
    td_trace_t t, back;
    char err[256] = "";
    if (td_trace_parse(s, &t, err, sizeof(err)) != 0) {
        FUZZ_CHECK(err[0] != '\0');
        return;
    }
    char tp[TD_TRACEPARENT_LEN + 1];
    td_trace_format(&t, tp);
    FUZZ_CHECK(strlen(tp) == TD_TRACEPARENT_LEN);
    FUZZ_CHECK(td_trace_parse(tp, &back, err, sizeof(err)) == 0);
    FUZZ_CHECK(memcmp(&t, &back, sizeof(t)) == 0);
    if (s[0] == '0' && s[1] == '0') FUZZ_CHECK(strcmp(tp + 3, s + 3) == 0);
    char id[33];
    td_trace_id_hex(&t, id);
    FUZZ_CHECK(memcmp(id, s + 3, 32) == 0);
    td_trace_t child;
    td_trace_child(&t, &child);
    FUZZ_CHECK(memcmp(child.trace_id, t.trace_id, sizeof(t.trace_id)) == 0);
    FUZZ_CHECK(child.flags == t.flags);
}

static void check_format(int64_t ms)
{
    char text[TD_TIME_LEN + 1];
    int64_t back;
    td_time_format(ms, text);
    FUZZ_CHECK(strlen(text) == TD_TIME_LEN);
    if (td_time_parse(text, &back) != 0) {
        fprintf(stderr, "td_time_format(%lld) = '%s' does not parse\n", (long long)ms, text);
        FUZZ_CHECK(0);
    }
    int64_t want = ms < MIN_MS ? MIN_MS : ms > MAX_MS ? MAX_MS : ms;
    if (back != want) {
        fprintf(stderr, "td_time_format(%lld) = '%s' parses as %lld\n", (long long)ms, text,
                (long long)back);
        FUZZ_CHECK(back == want);
    }
}

static void check_time(const char *s)
{
    int64_t ms;
    if (td_time_parse(s, &ms) != 0) return;
    check_format(ms);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_str(data, size);
    check_trace(s);
    check_time(s);
    if (td_uuid_valid(s)) FUZZ_CHECK(strlen(s) == TD_UUID_LEN);
    free(s);

    fuzz_in_t in = {data, size};
    check_format((int64_t)fuzz_u64(&in));
    return 0;
}
