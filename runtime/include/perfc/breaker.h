/*
 * perfc/breaker.h — client-side adaptive throttling (the Google SRE book's
 * formula, as go-zero and kratos use it) as a client interceptor: a client
 * refuses calls locally, with a probability, while its backend accepts
 * fewer calls than it is sent. docs/reliability.md#circuit-breaking
 * explains the defaults and the perfc_breaker_* metrics.
 *
 * Room: runtime public headers; implemented by runtime/src/guard/breaker.c
 * on perfc/interceptor.h and perfc/metrics.h. Give one breaker to the
 * channels of one target; free it after those channels.
 */
#ifndef PERFC_BREAKER_H
#define PERFC_BREAKER_H

#include "perfc/common.h"
#include "perfc/interceptor.h"
#include "perfc/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/** K of the SRE book's formula: with 1.5 the client sends up to 1.5 times
 *  what the backend accepts before refusing locally (go-zero and kratos use
 *  1.5; the book's 2 wastes more of a struggling backend's capacity). */
#define PERFC_DEFAULT_BREAKER_K 1.5
/** History: 10 s in 40 buckets, as go-zero: long enough to smooth, short
 *  enough to recover within seconds of a backend healing. */
#define PERFC_DEFAULT_BREAKER_WINDOW_MS 10000
#define PERFC_DEFAULT_BREAKER_BUCKETS 40
/** No refusal while the window holds fewer requests than this: a handful of
 *  failures is not evidence of an outage (kratos waits for 100, go-zero
 *  allows 5 unconditionally). */
#define PERFC_DEFAULT_BREAKER_MIN_REQUESTS 20

typedef struct perfc_breaker_opts {
  /** Registry for the breaker metrics; NULL = default. Borrowed. */
  perfc_metrics_registry *registry;
  /** The `target` label, normally the channel's target; copied. NULL = "". */
  const char *target;
  double k;              /**< 0 = PERFC_DEFAULT_BREAKER_K; must be >= 1 */
  int64_t window_ms;     /**< 0 = PERFC_DEFAULT_BREAKER_WINDOW_MS */
  unsigned buckets;      /**< 0 = PERFC_DEFAULT_BREAKER_BUCKETS; at most 1024 */
  unsigned min_requests; /**< 0 = PERFC_DEFAULT_BREAKER_MIN_REQUESTS */
  /** Clock; NULL = monotonic. `clock_user_data` is borrowed. */
  perfc_clock_fn clock;
  void *clock_user_data;
  /** Random numbers in [0, 1) deciding refusals; NULL = a per-thread
   *  xorshift generator. For deterministic tests. */
  double (*random)(void *user_data);
  void *random_user_data;
} perfc_breaker_opts;

typedef struct perfc_breaker perfc_breaker;

/** Fills `o` with the defaults above. */
PERFC_API void perfc_breaker_opts_init(perfc_breaker_opts *o);

/** Creates a breaker for one target; `opts` may be NULL. Give one breaker
 *  to the channels of one target; each method keeps its own window. The
 *  caller frees it with perfc_breaker_free() after those channels. Returns
 *  0, PERFC_EINVAL (k < 1, too many buckets, window shorter than the bucket
 *  count in ms), PERFC_ENOMEM or an error of perfc_metrics_family_new(). */
PERFC_API int perfc_breaker_new(perfc_breaker **out,
                                const perfc_breaker_opts *opts);

/** The client interceptor, for perfc_channel_opts.interceptors; borrowed
 *  from `b`. A refused call fails at once with UNAVAILABLE. Calls ending
 *  with UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, RESOURCE_EXHAUSTED,
 *  DATA_LOSS or UNIMPLEMENTED count as not accepted by the backend (as
 *  go-zero); every other code counts as accepted. */
PERFC_API const perfc_client_interceptor *
perfc_breaker_interceptor(perfc_breaker *b);

/** Current refusal probability for `m` in [0, 1], for tests and
 *  diagnostics; 0 for a method never called. */
PERFC_API double perfc_breaker_probability(perfc_breaker *b,
                                           const perfc_method_desc *m);

/** Frees the breaker. NULL is a no-op. */
PERFC_API void perfc_breaker_free(perfc_breaker *b);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_BREAKER_H */
