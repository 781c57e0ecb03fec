/*
 * core/str_internal.h — small string helpers every unit shares.
 *
 * Room: runtime/src/core. Static inline, not perfc__ functions of
 * libperfc: the other link units (libperfc-data, libperfc-config) cannot
 * call libperfc's hidden symbols, and these are too small to export.
 */
#ifndef PERFC_CORE_STR_INTERNAL_H
#define PERFC_CORE_STR_INTERNAL_H

#include <stdlib.h>
#include <string.h>

/* strdup() by the C standard's means (C11 has none; POSIX's needs a
 * feature macro in every includer): a malloc'd copy of `s` the caller
 * frees, or NULL when out of memory. */
static inline char *perfc__strdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *d = (char *)malloc(n);
  if (d)
    memcpy(d, s, n);
  return d;
}

#endif /* PERFC_CORE_STR_INTERNAL_H */
