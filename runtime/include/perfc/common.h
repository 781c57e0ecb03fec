/*
 * perfc/common.h — things every perfc module shares: the export macro, the
 * version, and the error table.
 *
 * Room: runtime public headers. Depends on nothing but libc. Every other
 * perfc header includes this one.
 */
#ifndef PERFC_COMMON_H
#define PERFC_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Symbols are hidden by default (-fvisibility=hidden); this exports one. */
#if defined(__GNUC__) || defined(__clang__)
#define PERFC_API __attribute__((visibility("default")))
#else
#define PERFC_API
#endif

#define PERFC_VERSION_MAJOR 0
#define PERFC_VERSION_MINOR 1
#define PERFC_VERSION_PATCH 0
/* One number for compile-time checks: generated code refuses to compile
 * against a runtime older than the generator that wrote it. */
#define PERFC_VERSION_NUMBER                                                   \
  (PERFC_VERSION_MAJOR * 1000000 + PERFC_VERSION_MINOR * 1000 +                \
   PERFC_VERSION_PATCH)
#define PERFC_VERSION_STRING "0.1.0"

/** Runtime version number, for checking a shared library at run time. */
PERFC_API unsigned perfc_version(void);

/*
 * The error table. Functions return 0 on success or one of these negative
 * codes. Codes are never renumbered: append new ones at the end.
 * XX(name, value, message)
 */
#define PERFC_ERRNO_MAP(XX)                                                    \
  XX(EINVAL, -1, "invalid argument")                                           \
  XX(ENOMEM, -2, "out of memory")                                              \
  XX(EGRPC, -3, "gRPC core refused the operation")                             \
  XX(EBIND, -4, "cannot listen on address")                                    \
  XX(ESTATE, -5, "operation not valid in the object's current state")          \
  XX(EFULL, -6, "queue is full")                                               \
  XX(ESHUTDOWN, -7, "object is shutting down")                                 \
  XX(ETIMEDOUT, -8, "timed out")                                               \
  XX(ENOENT, -9, "no such entry")                                              \
  XX(EIO, -10, "input/output error")                                           \
  XX(EPARSE, -11, "cannot parse input")                                        \
  XX(ETOOBIG, -12, "value too large")                                          \
  XX(EEXIST, -13, "entry already exists")                                      \
  XX(ETHREAD, -14, "cannot create thread")                                     \
  XX(ETLS, -15, "TLS configuration error")                                     \
  XX(ECONFIG, -16, "invalid configuration")                                   \
  XX(EUNAVAILABLE, -17, "service unavailable")                                 \
  XX(EABORTED, -18, "aborted by a concurrent operation")                       \
  XX(EPRECONDITION, -19, "failed precondition")                               \
  XX(EINTERNAL, -20, "internal error")

typedef enum perfc_errno {
#define PERFC_ERRNO_XX(name, value, msg) PERFC_##name = (value),
  PERFC_ERRNO_MAP(PERFC_ERRNO_XX)
#undef PERFC_ERRNO_XX
} perfc_errno;

/** Human-readable message for a PERFC_E* code (or "unknown error").
 *  Returns a static string; never NULL. */
PERFC_API const char *perfc_strerror(int err);

/** The code's name without prefix, e.g. "EINVAL"; static, never NULL. */
PERFC_API const char *perfc_err_name(int err);

/*
 * Error details: one place for every module. A perfc function that fails
 * returns its PERFC_E* code and leaves, for the calling thread, a message
 * saying what failed and why (which key, file, address, statement), like
 * errno plus hiredis's errstr. Successful calls do not clear it, so read it
 * right after the failing call. Every module reports this way; there are no
 * per-module last-error functions or error out-structs.
 */

/** The calling thread's last failure, as left by the perfc call that
 *  returned it. The strings are borrowed, valid until that thread's next
 *  failing perfc call. */
typedef struct perfc_error_detail {
  int code;             /**< the PERFC_E* code returned; 0 when none yet */
  const char *message;  /**< what failed and why; never NULL ("" if none) */
  /** Five-character SQLSTATE when a PostgreSQL server refused a statement;
   *  "" otherwise (pool exhausted, connection lost, no rows, not a DB). */
  const char *sqlstate;
  /** In a batch (several statements, keys, items), the index of the one
   *  that failed; -1 otherwise. */
  long index;
} perfc_error_detail;

/** The message of the calling thread's last failure ("" if none); borrowed,
 *  valid until its next failing perfc call. Never NULL. */
PERFC_API const char *perfc_last_error(void);

/** All details of the calling thread's last failure (see the struct). */
PERFC_API perfc_error_detail perfc_last_error_detail(void);

/** Longest message kept by perfc_error_set(); longer ones are cut. Room
 *  for a configuration flag error, which ends with the whole usage text. */
#define PERFC_ERROR_MESSAGE_MAX 1024

/** Records `code` with a printf-style message (NULL: perfc_strerror(code)),
 *  a SQLSTATE (NULL or "" for none) and a batch index (-1 for none) as the
 *  calling thread's last failure, and returns `code`. perfc's modules report
 *  through it; code built on perfc may too, so its callers read one place. */
PERFC_API int perfc_error_set(int code, const char *sqlstate, long index,
                              const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

/** A clock hook for tests: monotonic nanoseconds. The options of the
 *  modules that read time on the request path (rate limit, breaker) take
 *  one; NULL there means CLOCK_MONOTONIC. Must be cheap and thread-safe. */
typedef int64_t (*perfc_clock_fn)(void *user_data);

/** A `{base, len}` byte slice passed by value (h2o style). The bytes are
 *  borrowed unless a function says otherwise. */
typedef struct perfc_slice {
  const uint8_t *base;
  size_t len;
} perfc_slice;

#ifdef __cplusplus
}
#endif
#endif /* PERFC_COMMON_H */
