/* Shared by the libFuzzer harnesses: the entry points libFuzzer calls
 * (declared so -Wmissing-prototypes is satisfied), a check that aborts
 * with a message (an invariant broken is a finding, as a crash is), and a
 * reader that splits the fuzzer's bytes into length-prefixed pieces. */
#ifndef TIDINGS_FUZZ_H
#define TIDINGS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* An invariant of the code under test: when it does not hold, print where
 * and abort, which libFuzzer reports as a crash and saves the input. */
#define FUZZ_CHECK(cond)                                                                 \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

/* The fuzzer's input, consumed from the front. Running out is not an
 * error: every read then gives zeros or empty pieces. */
typedef struct fuzz_in {
    const uint8_t *p;
    size_t left;
} fuzz_in_t;

static inline uint8_t fuzz_u8(fuzz_in_t *in)
{
    if (!in->left) return 0;
    in->left--;
    return *in->p++;
}

static inline uint16_t fuzz_u16(fuzz_in_t *in)
{
    uint16_t hi = fuzz_u8(in);
    return (uint16_t)(hi << 8 | fuzz_u8(in));
}

static inline uint64_t fuzz_u64(fuzz_in_t *in)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = v << 8 | fuzz_u8(in);
    return v;
}

/* The next n bytes (fewer when the input ends), borrowed. */
static inline const uint8_t *fuzz_bytes(fuzz_in_t *in, size_t n, size_t *got)
{
    const uint8_t *p = in->p;
    *got = n < in->left ? n : in->left;
    in->p += *got;
    in->left -= *got;
    return p;
}

/* A malloc'd NUL-terminated copy of p[0..n): embedded NULs just cut the
 * string short, as they would for any C caller. */
static inline char *fuzz_str(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (!s) abort();
    if (n) memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

#endif
