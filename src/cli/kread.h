/* What the CLI's topic views (`tidings events`, `trace`, `dlt`) share
 * besides the runtime's topic reader (tidings/topicread.h, which they read
 * with): printable copies of record bytes and a Ctrl-C flag. */
#ifndef TIDINGS_CLI_KREAD_H
#define TIDINGS_CLI_KREAD_H

#include <stdbool.h>
#include <stddef.h>

#include "tidings/topicread.h"

/* A printable copy of len bytes: valid UTF-8 is kept, invalid bytes and
 * control characters become \xNN (or \n, \t), so that any record prints on
 * one line and is valid JSON string content. max (0 = no limit) truncates
 * with "...". Caller frees. */
char *kread_printable(const void *p, size_t len, size_t max);

/* Installs SIGINT/SIGTERM handlers that set a flag (no SA_RESTART), and
 * reads it. For the read loops of events and trace. */
void kread_catch_signals(void);
bool kread_interrupted(void);

#endif
