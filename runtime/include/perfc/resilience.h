/*
 * perfc/resilience.h — interceptors that keep a service up under load and
 * keep callers off a failing dependency: token-bucket rate limiting,
 * adaptive load shedding and per-method default timeouts (server side), and
 * Google SRE adaptive throttling (client side). docs/reliability.md explains
 * each mechanism, its defaults and its metrics.
 *
 * Room: runtime public headers. Each mechanism is its own module
 * (runtime/src/guard/ratelimit.c, shedding.c, timeouts.c, breaker.c) built on
 * perfc/interceptor.h and perfc/metrics.h. Every object here is created
 * once, attached to servers (or given to channels) before they start, and
 * freed after every server and channel using it is freed. The per-call
 * hooks take no global lock.
 */
#ifndef PERFC_RESILIENCE_H
#define PERFC_RESILIENCE_H

#include "perfc/interceptor.h"
#include "perfc/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A clock for tests: monotonic nanoseconds. NULL in the options below
 *  means CLOCK_MONOTONIC. Called on the request path: must be cheap and
 *  thread-safe. */
typedef int64_t (*perfc_clock_fn)(void *user_data);

/* ---- rate limiting (ratelimit.c) -------------------------------------- */

/** Keys remembered per keyed rule: 10 000 API keys is far more than the
 *  clients of one service usually hold, at ~100 bytes each (1 MB). The
 *  least recently used key is forgotten first; a forgotten key comes back
 *  with a full bucket, so the bound must exceed the keys active at once. */
#define PERFC_DEFAULT_RATELIMIT_MAX_KEYS 10000

/** One token bucket: `rate` calls per second with bursts of up to `burst`
 *  calls. All strings are borrowed during perfc_ratelimit_new() only. */
typedef struct perfc_ratelimit_rule {
  /** "/pkg.Svc/Method" limits that method; "/pkg.Svc/" (a trailing slash)
   *  each method of the service, with a bucket per method; NULL or "" is
   *  global: one bucket shared by every method of every server the limiter
   *  is attached to. */
  const char *method;
  /** Sustained calls per second; must be > 0. */
  double rate;
  /** Bucket capacity in calls, 0 or at least 1; 0 = max(1, rate), one
   *  second's worth. */
  double burst;
  /** NULL: one bucket for the rule. A metadata key ("x-api-key",
   *  lower-case): one bucket per value of it, so each client gets the rate;
   *  calls without the key share the bucket of the empty value. */
  const char *key_metadata;
} perfc_ratelimit_rule;

/** Most rules a limiter takes: the admission path keeps the tokens it took
 *  on the stack, to give them back if a later rule refuses. */
#define PERFC_RATELIMIT_MAX_RULES 16

typedef struct perfc_ratelimit_opts {
  /** Registry for perfc_ratelimit_rejected_total; NULL = default. Borrowed;
   *  must outlive the limiter. */
  perfc_registry *registry;
  /** The rules (1 to PERFC_RATELIMIT_MAX_RULES); copied. A call must pass
   *  every rule that applies to it, in the order given; the first that
   *  refuses decides the message, and tokens taken from earlier rules are
   *  given back. */
  const perfc_ratelimit_rule *rules;
  size_t rule_count;
  /** Keys per keyed rule; 0 = PERFC_DEFAULT_RATELIMIT_MAX_KEYS. */
  unsigned max_keys;
  /** Clock; NULL = monotonic. `clock_user_data` is borrowed. */
  perfc_clock_fn clock;
  void *clock_user_data;
} perfc_ratelimit_opts;

typedef struct perfc_ratelimit perfc_ratelimit;

/** Fills `o` with the defaults (no rules, default registry and clock). */
PERFC_API void perfc_ratelimit_opts_init(perfc_ratelimit_opts *o);

/** Creates a limiter from `opts` (required). The caller frees it with
 *  perfc_ratelimit_free() after every server it is attached to is freed.
 *  Returns 0, PERFC_EINVAL (no or too many rules, rate <= 0 or above 1e9,
 *  burst neither 0 nor >= 1, method not starting with '/', empty or
 *  upper-case key), PERFC_ENOMEM, or an error of perfc_family_new(). */
PERFC_API int perfc_ratelimit_new(perfc_ratelimit **out,
                                  const perfc_ratelimit_opts *opts);

/** Adds the limiter to `srv` as a server interceptor (before
 *  perfc_server_start()). A refused call ends with RESOURCE_EXHAUSTED and a
 *  message naming the rule, e.g. "rate limit of 100/s (burst 100) per
 *  x-api-key exceeded for /pkg.Svc/M". Returns what
 *  perfc_server_add_interceptor() returns, or PERFC_EINVAL. */
PERFC_API int perfc_ratelimit_attach(perfc_ratelimit *rl, perfc_server *srv);

/** Frees the limiter. NULL is a no-op. */
PERFC_API void perfc_ratelimit_free(perfc_ratelimit *rl);

/* ---- adaptive load shedding (shedding.c) ------------------------------ */

/** Length of one measurement window: half a second reacts to a load step
 *  within a second or two yet holds enough calls to average (brpc's auto
 *  limiter uses 1 s). */
#define PERFC_DEFAULT_SHEDDING_WINDOW_MS 500
/** Fewer completed calls than this in a window is too little evidence (brpc
 *  uses 100 at 1 s): the window stays open, up to ten window lengths, and
 *  then updates the limit only if it holds at least 8 calls. */
#define PERFC_DEFAULT_SHEDDING_MIN_SAMPLES 50
/** The limit never goes below this many calls in flight, so an idle server
 *  never refuses a small burst because its measured throughput was low. */
#define PERFC_DEFAULT_SHEDDING_MIN_LIMIT 8
/** Limit before the first full window, as brpc's initial auto limit: high
 *  enough not to refuse a cold start, low enough to bound the first queue. */
#define PERFC_DEFAULT_SHEDDING_INITIAL_LIMIT 40
/** Headroom over the no-queue concurrency (brpc's auto_cl_alpha, 0.3):
 *  tolerates 30% latency noise before shrinking the limit. */
#define PERFC_DEFAULT_SHEDDING_ALPHA 0.3

typedef struct perfc_shedding_opts {
  /** Registry for the shedding metrics; NULL = default. Borrowed. */
  perfc_registry *registry;
  int64_t window_ms;      /**< 0 = PERFC_DEFAULT_SHEDDING_WINDOW_MS */
  unsigned min_samples;   /**< 0 = PERFC_DEFAULT_SHEDDING_MIN_SAMPLES */
  unsigned min_limit;     /**< 0 = PERFC_DEFAULT_SHEDDING_MIN_LIMIT */
  unsigned initial_limit; /**< 0 = PERFC_DEFAULT_SHEDDING_INITIAL_LIMIT */
  /** Most calls in flight ever allowed; 0 = no ceiling. */
  unsigned max_limit;
  double alpha; /**< 0 = PERFC_DEFAULT_SHEDDING_ALPHA */
} perfc_shedding_opts;

typedef struct perfc_shedding perfc_shedding;

/** Fills `o` with the defaults above. */
PERFC_API void perfc_shedding_opts_init(perfc_shedding_opts *o);

/** Creates a shedder; `opts` may be NULL. The caller frees it with
 *  perfc_shedding_free() after every server it is attached to is freed.
 *  Returns 0, PERFC_EINVAL (min_limit or initial_limit above max_limit,
 *  alpha outside (0, 1], window_ms < 0), PERFC_ENOMEM or an error of
 *  perfc_family_new(). */
PERFC_API int perfc_shedding_new(perfc_shedding **out,
                                 const perfc_shedding_opts *opts);

/** Adds the shedder to `srv` (before perfc_server_start()). Each unary
 *  method gets its own concurrency limit (brpc's "auto" limiter: maximum
 *  throughput times no-load latency, shrunk as latency rises above it); a
 *  call over the limit ends at once with RESOURCE_EXHAUSTED. Streaming
 *  methods are not shed (their duration says nothing about load), and
 *  INLINE methods in effect neither: the pollers bound their concurrency
 *  and their excess waits in the core, unseen. Attach it
 *  after interceptors that refuse cheaply (auth, rate limits) so that their
 *  refusals do not count as served calls. Returns what
 *  perfc_server_add_interceptor() returns, or PERFC_EINVAL. */
PERFC_API int perfc_shedding_attach(perfc_shedding *sh, perfc_server *srv);

/** Frees the shedder. NULL is a no-op. */
PERFC_API void perfc_shedding_free(perfc_shedding *sh);

/* ---- per-method default timeouts (timeouts.c) ------------------------- */

/** One override: `method` is "/pkg.Svc/Method", or "/pkg.Svc/" (a trailing
 *  slash) for every method of the service; the string is borrowed during
 *  perfc_timeouts_new() only. */
typedef struct perfc_timeout_rule {
  const char *method;
  /** Milliseconds; 0 = no server-side timeout for the method, whatever its
   *  proto option says. */
  int64_t timeout_ms;
} perfc_timeout_rule;

typedef struct perfc_timeouts_opts {
  /** Overrides of (perfc.method).timeout, first match wins; copied. */
  const perfc_timeout_rule *rules;
  size_t rule_count;
  /** Timeout of methods with neither an override nor a proto option;
   *  0 = none (the default: only what the proto or config asks). */
  int64_t default_timeout_ms;
} perfc_timeouts_opts;

typedef struct perfc_timeouts perfc_timeouts;

/** Fills `o` with the defaults (no overrides, no default timeout). */
PERFC_API void perfc_timeouts_opts_init(perfc_timeouts_opts *o);

/** Creates the timeout interceptor; `opts` may be NULL (then only proto
 *  options apply). Freed with perfc_timeouts_free() after the servers.
 *  Returns 0, PERFC_EINVAL (NULL or relative method, negative timeout) or
 *  PERFC_ENOMEM. */
PERFC_API int perfc_timeouts_new(perfc_timeouts **out,
                                 const perfc_timeouts_opts *opts);

/** Adds it to `srv` (before perfc_server_start()): a call to a method with
 *  a timeout gets its deadline lowered to that timeout from the moment the
 *  call arrived, unless the client's deadline is earlier (see
 *  perfc_ctx_set_deadline_ms()). Returns what perfc_server_add_interceptor()
 *  returns, or PERFC_EINVAL. */
PERFC_API int perfc_timeouts_attach(perfc_timeouts *t, perfc_server *srv);

/** The timeout the interceptor applies to `m` of `svc`, in ms (0 = none),
 *  for tests and diagnostics. */
PERFC_API int64_t perfc_timeouts_for(const perfc_timeouts *t,
                                     const perfc_service_desc *svc,
                                     const perfc_method_desc *m);

/** Frees it. NULL is a no-op. */
PERFC_API void perfc_timeouts_free(perfc_timeouts *t);

/* ---- client-side adaptive throttling (breaker.c) ---------------------- */

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
  perfc_registry *registry;
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
 *  count in ms), PERFC_ENOMEM or an error of perfc_family_new(). */
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
#endif /* PERFC_RESILIENCE_H */
