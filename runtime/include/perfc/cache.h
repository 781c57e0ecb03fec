/*
 * perfc/cache.h — cache-aside over two levels: the in-process L1
 * (perfc/l1cache.h) in front of Redis (perfc/redis.h, L2) in front of a
 * loader the caller supplies (usually a database query).
 *
 * perfc_cache_get_or_load() reads L1, then Redis, then runs the loader with
 * one load per key at a time across threads (single flight), then fills
 * both levels with jittered TTLs; "not found" is cached as a placeholder for
 * a short TTL. perfc_cache_invalidate() is the write path: after the
 * caller's database commit it deletes the keys from Redis (retrying in the
 * background), from L1, and tells other processes over Redis pub/sub to drop
 * theirs. A load that started before an invalidation never fills either
 * level after it (generation check in L1, lease token in Redis). Redis being
 * down makes calls go to the loader; it is never an error to the caller.
 * Design and failure behaviour: docs/data-layer.md.
 *
 * Room: runtime public headers (data layer, cache-aside). Thread-safe.
 */
#ifndef PERFC_CACHE_H
#define PERFC_CACHE_H

#include <stdbool.h>

#include "perfc/bloom.h" /* opts.bloom; included so existing users compile */
#include "perfc/common.h"
#include "perfc/l1cache.h"
#include "perfc/metrics.h"
#include "perfc/redis.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A two-level cache-aside cache. Opaque. */
typedef struct perfc_cache perfc_cache;

/** Loads one key from the source of truth. Returns 0 with `*out` a malloc'd
 *  value of `*out_len` bytes that the cache takes over (and frees with
 *  free(); NULL is allowed for an empty value); PERFC_ENOENT when the key
 *  does not exist (cached as a placeholder; a malloc'd `*out` set with it
 *  is a note kept with the placeholder in L1 and Redis and taken over like
 *  a value: perfc_cache_rpc keeps the handler's NOT_FOUND message there;
 *  perfc_cache_get_or_load's callers still get PERFC_ENOENT and no bytes);
 *  any other negative code is a failure, returned to every caller waiting
 *  on this load and not cached.
 *  Runs on a caller's thread, without cache locks held. */
typedef int (*perfc_cache_loader_fn)(const char *key, uint8_t **out,
                                     size_t *out_len, void *user_data);

/** One key's result in a batch. `data` is malloc'd and owned by whoever
 *  holds the array (see perfc_cache_values_free()); NULL when not found. */
typedef struct perfc_cache_value {
  uint8_t *data;
  size_t len;
  int found;
} perfc_cache_value;

/** Loads `n` keys at once. out[] arrives zeroed; for each key that exists
 *  set found = 1 and data/len (malloc'd; the cache takes it over); leave
 *  found = 0 for keys that do not exist. Returns 0, or a negative code that
 *  fails the whole batch (nothing from it is cached; the cache frees any
 *  data already set). */
typedef int (*perfc_cache_batch_loader_fn)(const char *const *keys, size_t n,
                                           perfc_cache_value *out,
                                           void *user_data);

/** L1 TTL. Short because L1 is the level another instance's invalidation
 *  reaches only through pub/sub, which can lose messages. */
#define PERFC_DEFAULT_CACHE_L1_TTL_MS 10000u
/** Redis TTL for values. */
#define PERFC_DEFAULT_CACHE_L2_TTL_MS 600000u
/** TTL for "not found" placeholders (both levels; L1 takes the smaller of
 *  this and its own TTL). Short, so a key created without an invalidation
 *  shows up soon. */
#define PERFC_DEFAULT_CACHE_NEGATIVE_TTL_MS 30000u
/** TTLs are spread by ± this fraction so keys filled together do not
 *  expire together (a stampede on the loader). */
#define PERFC_DEFAULT_CACHE_TTL_JITTER 0.05
/** The largest jitter perfc_cache_new() takes: ± half the TTL. More would
 *  let a TTL shrink towards nothing, so entries would barely be cached. */
#define PERFC_CACHE_MAX_TTL_JITTER 0.5
/** Lifetime of a load's Redis lease: a load slower than this does not
 *  fill Redis. */
#define PERFC_DEFAULT_CACHE_LEASE_TTL_MS 10000u
/** First delay before retrying a failed Redis delete; doubles per attempt
 *  up to PERFC_DEFAULT_CACHE_RETRY_MAX_MS. */
#define PERFC_DEFAULT_CACHE_RETRY_MS 50u
#define PERFC_DEFAULT_CACHE_RETRY_MAX_MS 2000u
/** Most keys waiting for a retried delete; past it the oldest are dropped
 *  (and logged) since their Redis TTL bounds the damage anyway. */
#define PERFC_DEFAULT_CACHE_RETRY_QUEUE 100000u
/** How long perfc_cache_free() keeps retrying pending Redis deletes before
 *  giving up on them (saving them to `pending_file` when one is set). */
#define PERFC_DEFAULT_CACHE_DRAIN_MS 1000u
/** Label value and channel suffix. */
#define PERFC_DEFAULT_CACHE_NAME "default"
/** The longest duration a cache option or per-call TTL takes (49 days: the
 *  cache keeps them in 32-bit milliseconds, as L1 does). */
#define PERFC_CACHE_MAX_TTL_MS ((int64_t)UINT32_MAX)

/** Options for perfc_cache_new(); fill with perfc_cache_opts_init(). A
 *  zero field means its PERFC_DEFAULT_CACHE_* value (what opts_init
 *  writes), so `= {0}` works; a feature on by default is turned off by a
 *  `no_*` field. The struct is copied whole and checked: durations are
 *  milliseconds, 0 to PERFC_CACHE_MAX_TTL_MS (negative is PERFC_EINVAL). */
typedef struct perfc_cache_opts {
  /** `cache` label of the metrics and suffix of the default channel;
   *  copied. NULL = PERFC_DEFAULT_CACHE_NAME. */
  const char *name;
  /** L2. Borrowed; must outlive the cache. NULL = L1 only (no invalidation
   *  of other processes). */
  perfc_redis_pool *redis;
  /** Pub/sub channel for invalidations; copied. NULL =
   *  "perfc:cache:invalidate:<name>". All instances sharing the data must
   *  use the same one. */
  const char *channel;
  /** true: do not subscribe to `channel`. By default (false) a cache with
   *  `redis` runs a subscriber thread that drops the L1 entries other
   *  processes invalidate, and L1 is used only while that subscription is
   *  live (while it is down or not yet established, reads bypass L1 and
   *  nothing is put into it; L1 is cleared when it comes back). With
   *  no_subscribe L1 is always used: only for a single instance, or data
   *  that tolerates staleness up to the L1 TTL. */
  bool no_subscribe;
  /** true: no in-process level. Reads go to Redis (or the loader) and
   *  nothing is stored in process memory; single flight, the stale-fill
   *  fences and invalidation work as with L1 (L1's generations are kept,
   *  they are not entries). l1_shards and l1_max_bytes are then unused. */
  bool no_l1;
  /** L1 shape; shards/max_bytes 0 = the l1cache defaults. */
  unsigned l1_shards;
  size_t l1_max_bytes;
  int64_t l1_ttl_ms;       /**< 0 = default */
  int64_t l2_ttl_ms;       /**< 0 = default */
  int64_t negative_ttl_ms; /**< 0 = default */
  /** ± fraction of each TTL, 0 to PERFC_CACHE_MAX_TTL_JITTER (0.5).
   *  0 = default (PERFC_DEFAULT_CACHE_TTL_JITTER). */
  double ttl_jitter;
  /** true: TTLs are not jittered (ttl_jitter ignored). */
  bool no_ttl_jitter;
  int64_t lease_ttl_ms;     /**< 0 = default */
  int64_t retry_ms;         /**< 0 = default */
  int64_t retry_max_ms;     /**< 0 = default; raised to retry_ms */
  unsigned retry_queue_max; /**< 0 = default */
  /** perfc_cache_free()'s budget for retrying pending Redis deletes. 0 =
   *  default. */
  int64_t drain_ms;
  /** Optional file (copied path; needs `redis`) where perfc_cache_free()
   *  saves the keys whose Redis delete still failed after `drain_ms`, and
   *  from which perfc_cache_new() queues them again (reads skip Redis
   *  until they are deleted). The file is removed by a free that leaves
   *  nothing pending. NULL = none: undelivered deletes are logged and the
   *  keys' Redis TTL bounds them. One file per instance. */
  const char *pending_file;
  /** Optional; borrowed, must outlive the cache. Keys it says cannot exist
   *  are answered PERFC_ENOENT without touching L1, Redis or the loader. */
  perfc_bloom *bloom;
  /** Registry for the metrics; borrowed. NULL = default registry. */
  perfc_metrics_registry *registry;
  /** false (default): with `redis`, the cache also keeps an asynchronous
   *  client to the same server (perfc/redis_async.h, from the pool's
   *  host, port and timeouts; it connects only when used), and a
   *  declarative cached method whose L1 misses on an event loop reads
   *  Redis with a plain GET on that loop, answering a hit from the loop
   *  without a worker (perfc_cache_rpc_try_hit_ttl). true: every L1 miss
   *  takes the synchronous path on the worker pool. */
  bool no_async_l2;
} perfc_cache_opts;

/** Fills `o` with the PERFC_DEFAULT_CACHE_* values (a zeroed struct means
 *  the same). */
PERFC_API void perfc_cache_opts_init(perfc_cache_opts *o);

/** Creates a cache; with a subscriber, starts its thread, and starts the
 *  retry thread. Registers the perfc_cache_* metrics (docs/data-layer.md)
 *  under `cache=<name>`: two caches with one name in one registry are
 *  PERFC_EEXIST. Returns 0, PERFC_EINVAL, PERFC_EEXIST, PERFC_ENOMEM or
 *  PERFC_ETHREAD. Free with perfc_cache_free(). */
PERFC_API int perfc_cache_new(perfc_cache **out, const perfc_cache_opts *opts);

/** Stops the threads, retries pending Redis deletes for `drain_ms` (and
 *  saves what is left to `pending_file`, if set), frees L1 and the cache.
 *  No other call may be running on it. NULL is a no-op. */
PERFC_API void perfc_cache_free(perfc_cache *c);

/** Reads `key` (NUL-terminated, borrowed) through L1, Redis and, on a miss
 *  in both, `loader` (single flight per key). On 0, `*out` is a malloc'd
 *  copy of `*out_len` bytes the caller frees with free() (non-NULL even
 *  when empty). Returns PERFC_ENOENT when the key does not exist (loader
 *  said so now or earlier, or the bloom filter rules it out), the
 *  loader's error code when the load failed, PERFC_EINVAL or PERFC_ENOMEM.
 *  Redis errors are never returned: they are counted and the loader
 *  answers instead. PERFC_ENOENT is an answer and leaves no message; the
 *  cache's own failures do (perfc_last_error()), a loader's error carries
 *  whatever the loader recorded. */
PERFC_API int perfc_cache_get_or_load(perfc_cache *c, const char *key,
                                      perfc_cache_loader_fn loader,
                                      void *loader_ud, uint8_t **out,
                                      size_t *out_len);

/** The L1 part of perfc_cache_get_or_load() alone: never blocks (no Redis,
 *  no load, no single-flight wait), for callers that answer hits on a
 *  thread that must not block. Returns 0 with `*out` (free()) and
 *  `*out_len` on an L1 hit, PERFC_ENOENT for a cached "not found" or a key
 *  the bloom filter rules out (both counted as get_or_load counts them),
 *  1 when L1 does not have it (nothing counted: the full lookup that
 *  follows counts the miss), PERFC_EINVAL or PERFC_ENOMEM. */
PERFC_API int perfc_cache_peek(perfc_cache *c, const char *key, uint8_t **out,
                               size_t *out_len);

/** perfc_cache_get_or_load_ttl()'s `negative_ttl_ms` for "do not cache
 *  not found": the loader's PERFC_ENOENT is returned and nothing is
 *  filled. A named value of its own, the only negative one taken. */
#define PERFC_CACHE_TTL_NONE ((int64_t)-1)

/** perfc_cache_get_or_load() with this call's TTLs: a value it loads lives
 *  `ttl_ms` in Redis and min(`ttl_ms`, L1 TTL) in L1; a "not found" lives
 *  `negative_ttl_ms` in both (min with the L1 TTL), or is not cached when
 *  it is PERFC_CACHE_TTL_NONE. 0 means the cache's own TTL. Both are
 *  jittered like the defaults. Entries already cached keep theirs. Used by
 *  generated code for (perfc.cache) ttl / negative_ttl. Returns what
 *  perfc_cache_get_or_load() returns; a TTL outside 0 to
 *  PERFC_CACHE_MAX_TTL_MS (other than a negative_ttl_ms of
 *  PERFC_CACHE_TTL_NONE) is PERFC_EINVAL. */
PERFC_API int perfc_cache_get_or_load_ttl(perfc_cache *c, const char *key,
                                          int64_t ttl_ms,
                                          int64_t negative_ttl_ms,
                                          perfc_cache_loader_fn loader,
                                          void *loader_ud, uint8_t **out,
                                          size_t *out_len);

/** A load started by perfc_cache_get_or_load_async(), finished by its
 *  asynchronous loader with perfc_cache_load_done(). Opaque. */
typedef struct perfc_cache_load perfc_cache_load;

/** An asynchronous loader: starts loading `key` (borrowed for this call)
 *  without blocking, typically a perfc/pg_async.h query whose callback
 *  calls perfc_cache_load_done(). Runs on the event loop of the caller
 *  that leads the load, without cache locks held. Returns 0 when the load
 *  was started (or already done): perfc_cache_load_done() must then be
 *  called exactly once, from any thread, even before this returns.
 *  Any other return is the load's failure, as a synchronous loader's
 *  error (PERFC_ENOENT: not found); then perfc_cache_load_done() must
 *  not be called. */
typedef int (*perfc_cache_async_loader_fn)(const char *key,
                                           perfc_cache_load *load,
                                           void *user_data);

/** Ends `load`: `rc` 0 with `val` (malloc'd, `len` bytes; the cache takes
 *  it over and frees it with free(); NULL only with `len` 0), PERFC_ENOENT
 *  (the key does not exist: cached as "not found"), or another negative
 *  code (the load failed: returned to every caller sharing it, not
 *  cached; `val` is freed if set). Any thread; the rest of the miss (the
 *  fills, the answers) continues on the leader's loop. `load` is spent. */
PERFC_API void perfc_cache_load_done(perfc_cache_load *load, int rc,
                                     uint8_t *val, size_t len);

/** The answer of perfc_cache_get_or_load_async(): `rc` 0 with the value
 *  (`val`, `len`, borrowed for the callback: copy what you keep),
 *  PERFC_ENOENT, the loader's error, or PERFC_ENOMEM. */
typedef void (*perfc_cache_result_fn)(int rc, const uint8_t *val, size_t len,
                                      void *user_data);

/** perfc_cache_get_or_load_ttl() for code running on an event loop
 *  (perfc/loop.h: an inline handler or a continuation on an h2 server's
 *  loop, or a loop of your own), holding no thread while it waits: L1,
 *  then Redis read on the loop (a plain GET; on a miss one EVAL takes the
 *  load's lease), then on a miss in both `loader` (single flight per key
 *  across the process: callers on loops and blocking callers of
 *  perfc_cache_get_or_load() share one load), then the fills on the loop
 *  (Redis through its asynchronous client, fenced by the lease; L1 fenced
 *  by the key's generation), with jittered TTLs and negative caching as
 *  the blocking path. `done` runs exactly once, on this loop: from inside
 *  this call when L1 (or the bloom filter) answers, else later. Needs the
 *  cache's asynchronous Redis client when it has Redis
 *  (perfc_cache_opts.no_async_l2 off). Returns 0 (`done` runs),
 *  PERFC_ESTATE (not on a loop, or Redis without the async client: use
 *  the blocking call on a worker), PERFC_EINVAL or PERFC_ENOMEM; then
 *  `done` never runs. */
PERFC_API int perfc_cache_get_or_load_async(
    perfc_cache *c, const char *key, int64_t ttl_ms, int64_t negative_ttl_ms,
    perfc_cache_async_loader_fn loader, void *loader_ud,
    perfc_cache_result_fn done, void *done_ud);

/** Whether perfc_cache_get_or_load_async() can run on the calling thread
 *  now (1) or the caller must take the blocking path on a worker (0). */
PERFC_API int perfc_cache_async_usable(perfc_cache *c);

/** Batch read of `n` keys (borrowed): L1 for each, one MGET for those L1
 *  lacks, one `loader` call for the rest, then fills as
 *  perfc_cache_get_or_load() does. Batch loads are not single-flighted.
 *  On 0, out[i] is keys[i]'s result; the caller frees with
 *  perfc_cache_values_free(out, n). On error out[] owns nothing. Returns
 *  0, the loader's error, PERFC_EINVAL or PERFC_ENOMEM. */
PERFC_API int perfc_cache_get_many(perfc_cache *c, const char *const *keys,
                                   size_t n, perfc_cache_batch_loader_fn loader,
                                   void *loader_ud, perfc_cache_value *out);

/** Frees out[i].data for i < n and marks them not found. */
PERFC_API void perfc_cache_values_free(perfc_cache_value *out, size_t n);

/** The write path; call after the database commit. Deletes the `n` keys
 *  (borrowed) and their leases from Redis in one DEL (failures are queued
 *  and retried in the background with backoff), deletes them from L1
 *  (which also fences loads in flight), and publishes them on the
 *  invalidation channel so other processes drop their L1 copies. Returns 0
 *  (Redis failures are not errors: they are retried and counted),
 *  PERFC_EINVAL or PERFC_ENOMEM. */
PERFC_API int perfc_cache_invalidate(perfc_cache *c, const char *const *keys,
                                     size_t n);

/** Retries pending Redis deletes on the calling thread until none is left
 *  or `timeout_ms` has passed (a pause of `retry_ms` after each failure;
 *  one attempt may overrun the deadline by the pool's connect or command
 *  timeout). For a graceful stop, before perfc_cache_free(). Returns 0
 *  when nothing is pending, PERFC_ETIMEDOUT when keys are left, or
 *  PERFC_EINVAL. */
PERFC_API int perfc_cache_drain(perfc_cache *c, int64_t timeout_ms);

/** Keys waiting for a retried Redis delete (for tests and health checks). */
PERFC_API size_t perfc_cache_pending_invalidations(perfc_cache *c);

/** Waits until the invalidation subscriber is subscribed (and L1 is in
 *  use). Returns 0, PERFC_ETIMEDOUT, or PERFC_ESTATE when the cache has no
 *  subscriber. */
PERFC_API int perfc_cache_wait_subscribed(perfc_cache *c, int64_t timeout_ms);

/** The cache's L1, borrowed (valid until perfc_cache_free()): for stats,
 *  tests, or direct use. */
PERFC_API perfc_l1cache *perfc_cache_l1(perfc_cache *c);

/** Counters of one cache, also exported as metrics. */
typedef struct perfc_cache_stats {
  uint64_t l1_hits, l1_misses;
  uint64_t l2_hits, l2_misses;
  uint64_t negative_hits;        /**< placeholder found in L1 or L2 */
  uint64_t loads, load_errors;   /**< loader calls (batch = 1) and failures */
  uint64_t singleflight_shared;  /**< callers served by another's load */
  uint64_t l2_errors;            /**< Redis failures met (each degraded call) */
  uint64_t stale_fills_refused;  /**< fills fenced by an invalidation, L1+L2 */
  uint64_t invalidations;        /**< keys invalidated locally */
  uint64_t remote_invalidations; /**< keys dropped on another's message */
  uint64_t delete_retries;       /**< background delete attempts */
  uint64_t bloom_rejects;
  uint64_t l1_bypassed; /**< lookups that skipped L1: subscription down */
} perfc_cache_stats;

/** Fills `*out` (slow: sums per-thread metric cells). */
PERFC_API void perfc_cache_stats_get(perfc_cache *c, perfc_cache_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_CACHE_H */
