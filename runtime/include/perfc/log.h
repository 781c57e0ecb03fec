/*
 * perfc/log.h — the runtime's logger. Library code never prints except
 * through here. Output goes to a sink the application may replace; the
 * default writes one logfmt line per record to stderr.
 *
 * Room: runtime public headers. Thread-safe.
 */
#ifndef PERFC_LOG_H
#define PERFC_LOG_H

#include "perfc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum perfc_log_level {
  PERFC_LOG_DEBUG = 0,
  PERFC_LOG_INFO = 1,
  PERFC_LOG_WARN = 2,
  PERFC_LOG_ERROR = 3,
  PERFC_LOG_OFF = 4
} perfc_log_level;

/** A sink receives each record already formatted (no trailing newline).
 *  `msg` is borrowed for the duration of the call. It may be called from
 *  several threads at once: a sink with shared state locks it itself. */
typedef void (*perfc_log_sink)(perfc_log_level level, const char *msg,
                               void *user_data);

/** Records below `level` are dropped cheaply. Default PERFC_LOG_INFO, or the
 *  PERFC_LOG_LEVEL environment variable (debug|info|warn|error|off). */
PERFC_API void perfc_log_set_level(perfc_log_level level);
PERFC_API perfc_log_level perfc_log_get_level(void);

/** Replaces the sink; NULL restores the stderr default. */
PERFC_API void perfc_log_set_sink(perfc_log_sink sink, void *user_data);

/** Logs `msg` formatted printf-style as `level=... msg="..."`. */
PERFC_API void perfc_log(perfc_log_level level, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/** Record format. LOGFMT (default): `ts=... level=info msg="..." k=v`;
 *  JSON: one object per line, `{"ts":...,"level":...,"msg":...,"k":"v"}`. */
typedef enum perfc_log_format {
  PERFC_LOG_LOGFMT = 0,
  PERFC_LOG_JSON = 1
} perfc_log_format;

/** Selects the format; the default comes from PERFC_LOG_FORMAT
 *  (logfmt|json), else LOGFMT. */
PERFC_API void perfc_log_set_format(perfc_log_format format);
PERFC_API perfc_log_format perfc_log_get_format(void);

/** One structured field; both strings borrowed for the call. */
typedef struct perfc_log_field {
  const char *key;
  const char *value;
} perfc_log_field;

/** Logs a message plus `n` structured fields, rendered in the current
 *  format with each value quoted/escaped as the format requires. */
PERFC_API void perfc_log_fields(perfc_log_level level,
                                const perfc_log_field *fields, size_t n,
                                const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/** Parses "logfmt", "json"; -1 when unknown. */
PERFC_API int perfc_log_format_parse(const char *s);

/** Parses "debug", "info", "warn", "error", "off"; -1 when unknown. */
PERFC_API int perfc_log_level_parse(const char *s);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_LOG_H */
