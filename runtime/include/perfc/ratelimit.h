/*
 * perfc/ratelimit.h — token-bucket rate limiting as a server interceptor:
 * global, per service, per method, and per client key (a metadata value
 * such as x-api-key). docs/reliability.md explains the buckets, the
 * defaults and perfc_ratelimit_rejected_total.
 *
 * Room: runtime public headers; implemented by runtime/src/guard/ratelimit.c
 * on perfc/interceptor.h and perfc/metrics.h. A limiter is created once,
 * attached to servers before they start, and freed after every server
 * using it is freed. The per-call hook takes no global lock.
 */
#ifndef PERFC_RATELIMIT_H
#define PERFC_RATELIMIT_H

#include "perfc/common.h"
#include "perfc/interceptor.h"
#include "perfc/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

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
   *  calls without the key share the bucket of the empty value.
   *  PERFC_RATELIMIT_KEY_PEER (":peer"): one bucket per client address
   *  (perfc_ctx_peer() without its port). */
  const char *key_metadata;
  /** 1: the bucket lives in the limiter's `store` (Redis: one bucket for
   *  every replica of the service, perfc/ratelimit_redis.h) with `rate`
   *  and `burst` as the total of all replicas; the local bucket below is
   *  only the fallback used while the store fails. 0: local only. */
  int shared;
  /** Shared rules: what this replica admits alone while the store is
   *  unreachable, slow (its timeout) or failing: calls per second and
   *  burst of the local fallback bucket. 0 = `rate` and `burst` (go-zero's
   *  token limiter rescues with the full rate too); with N replicas,
   *  rate / N keeps the total. */
  double local_rate;
  double local_burst;
} perfc_ratelimit_rule;

/** key_metadata value that keys buckets by the client's address. */
#define PERFC_RATELIMIT_KEY_PEER ":peer"

/**
 * A store that keeps shared buckets (GCRA state) for every replica. `take`
 * takes one token from bucket `key` (`len` bytes, binary) whose emission
 * interval is `interval_us` and tolerance (burst * interval) `tau_us`,
 * both in microseconds, on the store's clock. Returns 1 admitted, 0
 * refused, or a negative PERFC_E* when the store could not decide (then
 * the limiter uses the rule's local fallback bucket). Called on the
 * threads that run interceptors where `take_async` cannot be used (a C
 * core poller, a streaming call, a store without it), from many at once;
 * it blocks for at most its own timeout.
 *
 * `take_async` (optional, NULL: never) is the same decision without
 * blocking, for a call whose interceptors run on a perfc loop (the h2
 * transport's; perfc/loop.h): the limiter defers its decision
 * (perfc_ic_defer, perfc/interceptor.h) and the loop serves other calls
 * meanwhile. It returns 0 when `done(rc, arg)` will run exactly once,
 * later (never inside take_async), on the calling thread's loop, with
 * `rc` as take() returns it; or, with `done` never called, PERFC_ESTATE
 * (not here: the limiter calls take() instead) or another negative
 * PERFC_E* (the store cannot decide now, e.g. it backs off after a
 * failure: the limiter falls back to the local bucket at once). `key` is
 * borrowed for the call only.
 */
typedef void (*perfc_ratelimit_store_done_fn)(int rc, void *arg);
typedef struct perfc_ratelimit_store {
  void *self;
  int (*take)(void *self, const char *key, size_t len, int64_t interval_us,
              int64_t tau_us);
  int (*take_async)(void *self, const char *key, size_t len,
                    int64_t interval_us, int64_t tau_us,
                    perfc_ratelimit_store_done_fn done, void *arg);
} perfc_ratelimit_store;

/** Most rules a limiter takes: the admission path keeps the tokens it took
 *  on the stack, to give them back if a later rule refuses. */
#define PERFC_RATELIMIT_MAX_RULES 16

typedef struct perfc_ratelimit_opts {
  /** Registry for perfc_ratelimit_rejected_total; NULL = default. Borrowed;
   *  must outlive the limiter. */
  perfc_metrics_registry *registry;
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
  /** Where shared rules keep their buckets (copied; `store->self`
   *  borrowed, must outlive the limiter). Required when a rule is shared.
   *  Shared rules are checked after the local ones, so a call a local rule
   *  refuses never spends a shared token (a shared token is not given
   *  back: when two shared rules apply and the second refuses, the first
   *  one's token is spent). */
  const perfc_ratelimit_store *store;
} perfc_ratelimit_opts;

typedef struct perfc_ratelimit perfc_ratelimit;

/** Fills `o` with the defaults (no rules, default registry and clock). */
PERFC_API void perfc_ratelimit_opts_init(perfc_ratelimit_opts *o);

/** Creates a limiter from `opts` (required). The caller frees it with
 *  perfc_ratelimit_free() after every server it is attached to is freed.
 *  Returns 0, PERFC_EINVAL (no or too many rules, rate <= 0 or above 1e9,
 *  burst neither 0 nor >= 1, method not starting with '/', empty or
 *  upper-case key, a shared rule without a store, local_rate or
 *  local_burst out of those bounds), PERFC_ENOMEM, or an error of
 *  perfc_metrics_family_new().
 *
 *  Metrics: perfc_ratelimit_rejected_total{grpc_service,grpc_method,scope}
 *  counts every refusal; shared rules also count each decision in
 *  perfc_ratelimit_shared_decisions_total{grpc_service,grpc_method,path,
 *  decision} with path "global" (the store decided) or "local" (the
 *  fallback bucket did) and decision "admitted" or "refused", and the
 *  store's failures in perfc_ratelimit_store_errors_total{grpc_service,
 *  grpc_method}. */
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

#ifdef __cplusplus
}
#endif
#endif /* PERFC_RATELIMIT_H */
