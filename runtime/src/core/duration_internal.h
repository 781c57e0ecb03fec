/*
 * duration_internal.h — the one parser of duration strings, shared by the
 * configuration loader (config/) and protoc-gen-perfc's method options
 * (`(perfc.method).timeout`, `(perfc.cache).ttl`, ...). Never installed.
 *
 * Room: runtime/src private header (core). duration.c is compiled into
 * libperfc, into libperfc-config as a hidden copy (a shared library exports
 * no perfc__ symbol) and into protoc-gen-perfc, which links no runtime.
 */
#ifndef PERFC_DURATION_INTERNAL_H
#define PERFC_DURATION_INTERNAL_H

#include <stdint.h>

/** Parses a duration into milliseconds. The one rule: "0", or one or more
 *  groups of decimal digits followed by a unit `ms`, `s`, `m` or `h`
 *  ("250ms", "2s", "10m", "1h", "1m30s"); groups add up, in any order, as
 *  Go's time.ParseDuration reads them. No sign, fraction, space, other unit
 *  or bare number other than "0"; "" and NULL are not durations (a caller
 *  for which an empty value means "unset" checks that itself). A total above
 *  INT64_MAX milliseconds is refused. Returns 0 with `*ms` set, or -1
 *  leaving `*ms` unchanged. */
int perfc__duration_parse_ms(const char *s, int64_t *ms);

#endif /* PERFC_DURATION_INTERNAL_H */
