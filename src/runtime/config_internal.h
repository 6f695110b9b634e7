/* What config.c and config_parse.c share: the parsers of setting
 * values. `what` is the variable or flag an error names; each returns 0 or
 * TD_EINVAL with errstr. Nothing outside src/runtime/config*.c includes it. */
#ifndef TIDINGS_CONFIG_INTERNAL_H
#define TIDINGS_CONFIG_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int td__cfg_parse_i64(const char *what, const char *text, int64_t min, int64_t max, int64_t *out,
                      char *errstr, size_t errlen);
int td__cfg_parse_int(const char *what, const char *text, int min, int max, int *out, char *errstr,
                      size_t errlen);
int td__cfg_parse_port(const char *what, const char *text, int *out, char *errstr, size_t errlen);
int td__cfg_parse_level(const char *what, const char *text, int *out, char *errstr, size_t errlen);
int td__cfg_parse_format(const char *what, const char *text, bool *json, char *errstr,
                         size_t errlen);
int td__cfg_parse_bool(const char *what, const char *text, bool *out, char *errstr, size_t errlen);
int td__cfg_parse_money(const char *what, const char *text, int64_t *cents, char *errstr,
                        size_t errlen);
int td__cfg_parse_listen(const char *what, const char *text, char **out, char *errstr,
                         size_t errlen);
int td__cfg_parse_prefix(const char *what, const char *text, char **out, char *errstr,
                         size_t errlen);
int td__cfg_parse_vapid(const char *what, const char *text, char **out, char *errstr,
                        size_t errlen);
int td__cfg_parse_origins(const char *what, const char *text, char **out, char *errstr,
                          size_t errlen);

#endif
