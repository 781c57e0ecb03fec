/*
 * duration.c — duration strings ("250ms", "1m30s") to milliseconds.
 *
 * Room: runtime/src (core). One implementation for every place a person
 * writes a duration: the configuration loader and the generator's method
 * options used to parse them twice with different rules (the generator
 * refused "0", the loader accepted it). Plain C, no allocation, nothing
 * else of the runtime, so protoc-gen-perfc compiles this file as it is.
 */
#include "core/duration_internal.h"

#include <string.h>

int perfc__duration_parse_ms(const char *s, int64_t *ms) {
  if (s == NULL || s[0] == '\0')
    return -1;
  /* Go writes a zero duration as "0s" but reads a bare "0" too; so do we. */
  if (strcmp(s, "0") == 0) {
    *ms = 0;
    return 0;
  }
  int64_t total = 0;
  const char *p = s;
  while (*p != '\0') {
    /* Digits by value, not isdigit(): the locale must not widen the rule. */
    if (*p < '0' || *p > '9')
      return -1;
    int64_t n = 0;
    while (*p >= '0' && *p <= '9') {
      int d = *p++ - '0';
      if (n > (INT64_MAX - d) / 10)
        return -1;
      n = n * 10 + d;
    }
    int64_t unit;
    if (p[0] == 'm' && p[1] == 's') {
      unit = 1;
      p += 2;
    } else if (*p == 's') {
      unit = 1000;
      p++;
    } else if (*p == 'm') {
      unit = 60 * 1000;
      p++;
    } else if (*p == 'h') {
      unit = 60 * 60 * 1000;
      p++;
    } else {
      return -1;
    }
    if (n > (INT64_MAX - total) / unit)
      return -1;
    total += n * unit;
  }
  *ms = total;
  return 0;
}
