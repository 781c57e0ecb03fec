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

/* ---- bounded records and rate-limited call sites ----
 *
 * Every record is bounded, whoever logs it: the message is cut after
 * PERFC_LOG_MAX_MSG_BYTES bytes of output, each field value after
 * PERFC_LOG_MAX_VALUE_BYTES, both ending in "…(+N bytes)" (N = input bytes
 * left out, never inside a UTF-8 sequence), and the whole line stays within
 * PERFC_LOG_MAX_LINE_BYTES (fields that do not fit are dropped and counted
 * in a `fields_dropped` field), so logfmt and JSON lines stay well formed.
 *
 * Messages a client can cause at will (a malformed header, a bad token, the
 * gRPC core's "Error parsing metadata") go through perfc_log_ratelimited():
 * per call site at most `burst` records at once and then one per
 * `interval_ms` (a GCRA token bucket, one atomic compare-and-swap per
 * record, no lock). The next record a site may write carries
 * `suppressed=K`, the number it dropped since its previous record; every
 * drop also counts in perfc_log_suppressed_total(), exported as the
 * counter perfc_log_suppressed_total{level} by
 * perfc_process_metrics_register(). */

/** Output bytes of a record's message before it is cut. */
#define PERFC_LOG_MAX_MSG_BYTES 512
/** Output bytes of one field value before it is cut: values often carry
 *  what a client sent. */
#define PERFC_LOG_MAX_VALUE_BYTES 128
/** Bytes of a whole record (line), without the newline. */
#define PERFC_LOG_MAX_LINE_BYTES 1024
/** Default records a call site may write at once (perfc_log_set_ratelimit). */
#define PERFC_DEFAULT_LOG_RATELIMIT_BURST 10
/** Default time one more record of a call site is allowed after the burst. */
#define PERFC_DEFAULT_LOG_RATELIMIT_INTERVAL_MS 1000

/** Like perfc_log(), limited per `site`: a string naming the call site,
 *  compared by content (PERFC_LOG_SITE gives "file:line"); borrowed. Sites
 *  beyond the limiter's table (hundreds) share slots, which can only
 *  suppress more, never less. Thread-safe and lock-free. */
PERFC_API void perfc_log_ratelimited(perfc_log_level level, const char *site,
                                     const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/** perfc_log_fields(), limited per `site` as perfc_log_ratelimited(). */
PERFC_API void perfc_log_fields_ratelimited(perfc_log_level level,
                                            const char *site,
                                            const perfc_log_field *fields,
                                            size_t n, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

#define PERFC_LOG_STR_(x) #x
#define PERFC_LOG_STR(x) PERFC_LOG_STR_(x)
/** The current source location as a site name for the calls above. */
#define PERFC_LOG_SITE __FILE__ ":" PERFC_LOG_STR(__LINE__)

/** Sets the limit of every rate-limited site: `burst` records at once
 *  (1..1000000), then one per `interval_ms` (1 ms..24 h). `enabled` 0 lets
 *  every record through (counting nothing). Defaults: enabled,
 *  PERFC_DEFAULT_LOG_RATELIMIT_BURST, PERFC_DEFAULT_LOG_RATELIMIT_INTERVAL_MS.
 *  Returns 0 or PERFC_EINVAL. Takes effect for records from now on; also
 *  forgets every site's history. */
PERFC_API int perfc_log_set_ratelimit(int enabled, unsigned burst,
                                      int64_t interval_ms);

/** Records of `level` dropped by the rate limit since the process started
 *  (never reset). */
PERFC_API uint64_t perfc_log_suppressed_total(perfc_log_level level);

/** Parses "logfmt", "json"; -1 when unknown. */
PERFC_API int perfc_log_format_parse(const char *s);

/** Parses "debug", "info", "warn", "error", "off"; -1 when unknown. */
PERFC_API int perfc_log_level_parse(const char *s);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_LOG_H */
