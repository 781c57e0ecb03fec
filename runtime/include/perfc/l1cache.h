/*
 * perfc/l1cache.h — the in-process cache (L1): string keys, byte values
 * (usually protobuf-encoded messages), sharded, LRU with a TTL per entry,
 * bounded by bytes, with negative ("not found") entries.
 *
 * Room: runtime public headers (data layer). Thread-safe: every function may
 * be called from any thread. Each shard has its own mutex; no call takes a
 * lock covering more than one shard (perfc_l1cache_clear and
 * perfc_l1cache_stats visit the shards one after another).
 *
 * Reads copy the value out while the shard lock is held. Values are small
 * encoded messages, so a memcpy is cheaper than the atomic reference count
 * a shared read would need on every hit and release, and a copy can never
 * be invalidated under the caller. See docs/data-layer.md.
 */
#ifndef PERFC_L1CACHE_H
#define PERFC_L1CACHE_H

#include <stdbool.h>

#include "perfc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** An in-process cache. Opaque. */
typedef struct perfc_l1cache perfc_l1cache;

/** Default shard count: enough that a few dozen threads rarely meet on one
 *  lock. Rounded up to a power of two. */
#define PERFC_DEFAULT_L1_SHARDS 64
/** Default byte bound (keys, values and per-entry overhead): 64 MiB. */
#define PERFC_DEFAULT_L1_MAX_BYTES ((size_t)64 << 20)
/** Default TTL used when a set passes ttl_ms = 0: 60 s. */
#define PERFC_DEFAULT_L1_TTL_MS 60000
/** A hit moves its entry to the LRU head only if the entry was not moved
 *  within this many ms (memcached's rule): hits on hot keys then write
 *  nothing but the shard's counters, and eviction order is LRU to within
 *  this interval. */
#define PERFC_DEFAULT_L1_PROMOTE_MS 1000u

/** Options for perfc_l1cache_new(); fill with perfc_l1cache_opts_init().
 *  A zero field means its PERFC_DEFAULT_L1_* value (what opts_init
 *  writes); the struct is copied whole and checked. */
typedef struct perfc_l1cache_opts {
  /** Number of shards (power of two; rounded up), at most 65536. 0 =
   *  default. */
  unsigned shards;
  /** Upper bound on accounted bytes over all shards; each shard gets an
   *  equal share and evicts least recently used entries past it. 0 = default.
   */
  size_t max_bytes;
  /** TTL for sets that pass 0, in ms (at most UINT32_MAX). 0 = default. */
  int64_t default_ttl_ms;
  /** true: every hit moves its entry to the LRU head (exact LRU). false =
   *  at most once per PERFC_DEFAULT_L1_PROMOTE_MS per entry. */
  bool exact_lru;
} perfc_l1cache_opts;

/** Statistics summed over all shards (a snapshot, not atomic as a whole). */
typedef struct perfc_l1cache_stats {
  uint64_t hits; /**< lookups that found a live entry (incl. negative) */
  uint64_t negative_hits; /**< of those, hits on a "not found" placeholder */
  uint64_t misses;        /**< lookups that found nothing or an expired entry */
  uint64_t evictions;     /**< entries dropped to stay under max_bytes */
  uint64_t expired;       /**< entries dropped because their TTL passed */
  uint64_t stale_sets;    /**< versioned sets refused (key deleted since) */
  uint64_t bytes;         /**< accounted bytes now */
  uint64_t entries;       /**< entries now */
} perfc_l1cache_stats;

/** Fills `o` with the PERFC_DEFAULT_L1_* values. */
PERFC_API void perfc_l1cache_opts_init(perfc_l1cache_opts *o);

/** Creates a cache. `opts` may be NULL (defaults). Returns 0, PERFC_EINVAL
 *  or PERFC_ENOMEM (failures leave a message in perfc_last_error()). The caller
 * frees it with perfc_l1cache_free(). */
PERFC_API int perfc_l1cache_new(perfc_l1cache **out,
                                const perfc_l1cache_opts *opts);

/** Frees the cache and every entry. No other call may be running on it.
 *  NULL is a no-op. */
PERFC_API void perfc_l1cache_free(perfc_l1cache *c);

/** Looks `key` up (NUL-terminated, borrowed). On a hit returns 0 and:
 *  for a value, `*out` is a malloc'd copy of `*out_len` bytes that the
 *  caller frees with free() (a zero-length value gives a non-NULL 1-byte
 *  allocation) and `*out_negative` = 0; for a negative entry `*out` = NULL,
 *  `*out_len` = 0, `*out_negative` = 1. `out_negative` may be NULL when the
 *  caller stores no negative entries. Returns PERFC_ENOENT on a miss
 *  (absent or expired; an answer, not a failure: it leaves no message, so
 *  a miss costs no formatting), PERFC_EINVAL or PERFC_ENOMEM. */
PERFC_API int perfc_l1cache_get(perfc_l1cache *c, const char *key,
                                uint8_t **out, size_t *out_len,
                                int *out_negative);

/** As perfc_l1cache_get() without allocating: copies the value into `buf`
 *  (`cap` bytes, borrowed). `*out_len` is always set to the value's length
 *  on a hit; if it exceeds `cap` nothing is copied and the result is
 *  PERFC_ETOOBIG (the entry still counts as a hit). */
PERFC_API int perfc_l1cache_get_into(perfc_l1cache *c, const char *key,
                                     uint8_t *buf, size_t cap, size_t *out_len,
                                     int *out_negative);

/** Stores a copy of `value` under `key` (both borrowed) for `ttl_ms`
 *  (0 = the default TTL; negative or above UINT32_MAX is PERFC_EINVAL),
 *  replacing any entry, and makes it most recently used. Returns 0,
 *  PERFC_EINVAL, PERFC_ETOOBIG (entry larger than a shard's byte share;
 *  nothing stored, an old entry is removed) or PERFC_ENOMEM. */
PERFC_API int perfc_l1cache_set(perfc_l1cache *c, const char *key,
                                perfc_slice value, int64_t ttl_ms);

/** Stores a "not found" placeholder under `key` for `ttl_ms`. Errors as
 *  perfc_l1cache_set(). */
PERFC_API int perfc_l1cache_set_negative(perfc_l1cache *c, const char *key,
                                         int64_t ttl_ms);

/** The key's generation: a counter every perfc_l1cache_delete() (and
 *  clear) of the key advances. Counters live in a fixed table of slots per
 *  shard, so keys that share a slot share a counter: a delete of one may
 *  make a versioned set of another be refused, which only costs a fill. */
PERFC_API uint64_t perfc_l1cache_version(perfc_l1cache *c, const char *key);

/** As perfc_l1cache_set() (or set_negative when `negative` is nonzero,
 *  `value` ignored), but only if the key's generation still equals
 *  `version` (read with perfc_l1cache_version() before the value was
 *  loaded). This is how a load that started before a delete is kept from
 *  filling the cache after it. Returns 0, PERFC_ESTATE when the generation
 *  moved (nothing stored; counted in stale_sets; an answer, it leaves no
 *  message), or as perfc_l1cache_set(). */
PERFC_API int perfc_l1cache_set_versioned(perfc_l1cache *c, const char *key,
                                          perfc_slice value, int negative,
                                          int64_t ttl_ms, uint64_t version);

/** Removes `key` if present and advances its generation. Returns 0 if an
 *  entry was removed, PERFC_ENOENT if there was none (the generation still
 *  advances), PERFC_EINVAL. */
PERFC_API int perfc_l1cache_delete(perfc_l1cache *c, const char *key);

/** Removes every entry and advances every generation. */
PERFC_API void perfc_l1cache_clear(perfc_l1cache *c);

/** Fills `*out` with counters summed over the shards. */
PERFC_API void perfc_l1cache_stats_get(perfc_l1cache *c,
                                       perfc_l1cache_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_L1CACHE_H */
