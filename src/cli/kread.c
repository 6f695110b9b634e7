/* What the CLI's topic views (events, trace, dlt) share besides the runtime's
 * topic reader (tidings/topicread.h): printable copies of record bytes and a
 * Ctrl-C flag for their read loops. */
#include "kread.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tidings/common.h"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
    (void)sig;
    interrupted = 1;
}

void kread_catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
}

bool kread_interrupted(void)
{
    return interrupted != 0;
}

/* Length of the valid UTF-8 sequence at p (at most avail bytes), 0 when the
 * bytes there are not one (overlong forms and surrogates included). */
static size_t utf8_seq(const unsigned char *p, size_t avail)
{
    unsigned c = p[0];
    size_t n;
    unsigned cp;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (avail < n) return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff))) return 0;
    if (cp >= 0xd800 && cp <= 0xdfff) return 0;
    return n;
}

char *kread_printable(const void *data, size_t len, size_t max)
{
    const unsigned char *p = data;
    size_t cap = len * 4 + 8, o = 0;
    char *out = td_malloc(cap);
    for (size_t i = 0; i < len;) {
        if (max && o >= max) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        size_t n = utf8_seq(p + i, len - i);
        if (n == 1 && p[i] >= 0x20 && p[i] != 0x7f) {
            out[o++] = (char)p[i];
        } else if (n > 1) {
            memcpy(out + o, p + i, n);
            o += n;
        } else if (p[i] == '\n') {
            memcpy(out + o, "\\n", 2);
            o += 2;
        } else if (p[i] == '\t') {
            memcpy(out + o, "\\t", 2);
            o += 2;
        } else {
            o += (size_t)snprintf(out + o, cap - o, "\\x%02x", p[i]);
            n = 1;
        }
        i += n ? n : 1;
    }
    out[o] = '\0';
    return out;
}
