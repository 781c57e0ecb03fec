/*
 * perfc/ratelimit_redis.h — the store that makes perfc/ratelimit.h's
 * shared rules global: one GCRA bucket per rule, method and key in Redis,
 * shared by every replica of a service.
 *
 * Each decision is one EVALSHA of a Lua script (loaded with SCRIPT LOAD
 * at the first decision and again whenever Redis answers NOSCRIPT, e.g.
 * after a restart) that reads the bucket, takes a token on Redis's own
 * clock (`redis.call('TIME')`, so the replicas' clocks do not matter) and
 * writes it back with an expiry, atomically. On a perfc loop (the h2
 * transport's, unary calls) the limiter asks through the store's
 * take_async: the EVALSHA goes out on that loop's asynchronous client
 * (perfc/redis_async.h) and the interceptor's decision is deferred
 * meanwhile (perfc_ic_defer), so the loop serves other calls. Elsewhere (the
 * C core's pollers, streaming calls, a Redis Cluster) take() uses a
 * blocking perfc_redis_pool on the thread that runs interceptors
 * (docs/scaling.md, "Where it runs, and what it costs"). Both have the
 * short timeout below. When Redis is down, slow or failing, a decision
 * fails at once or within the timeout (after a failure the store refuses
 * at once while it backs off, one probe per backoff period) and the
 * limiter's local fallback bucket decides: Redis never fails a call.
 *
 * Room: runtime public headers; implemented in libperfc-data
 * (data/ratelimit_redis.c). Redis 5 or later (scripts replicated by
 * effects, so TIME before a write is allowed).
 */
#ifndef PERFC_RATELIMIT_REDIS_H
#define PERFC_RATELIMIT_REDIS_H

#include "perfc/ratelimit.h"
#include "perfc/redis.h"

#ifdef __cplusplus
extern "C" {
#endif

/** How long a decision may wait for Redis (connect, a free connection,
 *  the reply): 50 ms. A rate limit runs before every limited call, so this
 *  is latency every call may pay while Redis is slow; after one timeout
 *  the pool backs off (50 ms doubling to 1 s) and the local fallback
 *  decides at once meanwhile. */
#define PERFC_DEFAULT_RATELIMIT_REDIS_TIMEOUT_MS 50
/** Prefix of the bucket keys: "perfc:rl:/pkg.Svc/M|x-api-key|VALUE". */
#define PERFC_DEFAULT_RATELIMIT_REDIS_PREFIX "perfc:rl:"

typedef struct perfc_ratelimit_redis_opts {
  /** Redis address, pool size, backoff, metrics registry and name
   *  (perfc/redis.h); copied. NULL = perfc_redis_opts_init()'s. Its
   *  connect, command and acquire timeouts are replaced by `timeout_ms`.
   *  Name the pool (e.g. "ratelimit") to tell its metrics from the
   *  cache's. */
  const perfc_redis_opts *redis;
  /** 0 = PERFC_DEFAULT_RATELIMIT_REDIS_TIMEOUT_MS; 1 to 60 000. */
  int64_t timeout_ms;
  /** Key prefix; copied; at most 128 bytes. NULL =
   *  PERFC_DEFAULT_RATELIMIT_REDIS_PREFIX. */
  const char *key_prefix;
} perfc_ratelimit_redis_opts;

typedef struct perfc_ratelimit_redis perfc_ratelimit_redis;

/** Fills `o` with the defaults. */
PERFC_API void perfc_ratelimit_redis_opts_init(perfc_ratelimit_redis_opts *o);

/** Creates the store, its own Redis pool and (unless the pool is a
 *  Redis Cluster) its asynchronous client for the loops (both connect
 *  lazily: a Redis that is down does not fail this). Free it with
 *  perfc_ratelimit_redis_free() after every limiter using it. Returns 0,
 *  PERFC_EINVAL (bad timeout or prefix, or what perfc_redis_pool_new()
 *  refuses) or PERFC_ENOMEM. */
PERFC_API int perfc_ratelimit_redis_new(perfc_ratelimit_redis **out,
                                        const perfc_ratelimit_redis_opts *opts);

/** The store to put in perfc_ratelimit_opts.store; borrowed, valid until
 *  perfc_ratelimit_redis_free(). */
PERFC_API const perfc_ratelimit_store *
perfc_ratelimit_redis_store(perfc_ratelimit_redis *r);

/** Counters since creation (racy reads). */
typedef struct perfc_ratelimit_redis_stats {
  uint64_t decisions;    /**< answered by Redis (admitted or refused) */
  uint64_t errors;       /**< not answered: unreachable, timeout, error */
  uint64_t script_loads; /**< SCRIPT LOADs: the first, then one per NOSCRIPT */
  uint64_t pending;      /**< decisions waiting for Redis on a loop now */
} perfc_ratelimit_redis_stats;

PERFC_API void perfc_ratelimit_redis_stats_get(perfc_ratelimit_redis *r,
                                               perfc_ratelimit_redis_stats *out);

/** Frees the store, its pool and its asynchronous client (decisions
 *  still in flight get their answer, PERFC_ESHUTDOWN, on their loops
 *  first: free it after the servers using it stopped). NULL is a no-op. */
PERFC_API void perfc_ratelimit_redis_free(perfc_ratelimit_redis *r);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_RATELIMIT_REDIS_H */
