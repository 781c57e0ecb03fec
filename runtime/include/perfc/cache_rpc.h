/*
 * perfc/cache_rpc.h — declarative cache-aside for generated services: what
 * the trampolines of methods with (perfc.cache) and (perfc.invalidate) call.
 *
 * A cached unary method's handler holds only the database load; these
 * functions put perfc_cache (perfc/cache.h) around it: the response is
 * packed into the cache on a miss and sent as stored on a hit, NOT_FOUND
 * is cached as a negative entry, and a write method's
 * keys are invalidated after its handler returned OK (after the commit).
 * Applications normally never call these directly: the generated
 * `pkg__svc__perfc_register_cached()` wires them (docs/generator.md,
 * "Declarative caching").
 *
 * Unlike the rest of the data layer these return a gRPC status, not a
 * PERFC_E* code: each one *is* the end of a handler (the generated
 * trampoline returns it as the call's status, with its message already set
 * on the call), so there is nothing left for a caller to map.
 *
 * Room: runtime public headers (data layer, generated-code contract).
 */
#ifndef PERFC_CACHE_RPC_H
#define PERFC_CACHE_RPC_H

#include "perfc/cache.h"
#include "perfc/server.h"
#include "perfc/service.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Runs the method's own handler (the load) for one call: fill `resp` and
 *  return OK, NOT_FOUND (cached negatively), or another code (returned, not
 *  cached). Generated per cached method; `load_ud` is the generated
 *  binding. */
typedef perfc_status_code (*perfc_cache_rpc_load_fn)(
    perfc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage *resp,
    void *load_ud);

/** One cached unary call: reads `key` (borrowed) through `cache` with
 *  perfc_cache_get_or_load_ttl(`ttl_ms`, `negative_ttl_ms`); on a miss
 *  runs `load` (single flight: concurrent calls for one key share one
 *  load), packs its response into the cache, and answers the others with
 *  the stored bytes: when `resp` is the call's own response (the message
 *  the server passed the handler), the server sends the stored encoding as
 *  it is, without a decode and re-encode, and `resp` stays unset, so
 *  nothing between this call and the server may read or change it (the
 *  generated trampolines do not). Otherwise (another message, or bytes that
 *  are not plain fields) they are decoded into `resp`. Keys must not be shared
 *  by methods with different response types. NOT_FOUND from the
 *  load is cached as "not found" (unless `negative_ttl_ms` is
 *  PERFC_CACHE_TTL_NONE) and answered NOT_FOUND; any other error is
 *  returned unchanged and not cached (calls that shared the failed load
 *  get the same code). A cache failure other than Redis (which the cache
 *  absorbs) runs `load` directly. Returns the call's status. */
PERFC_API perfc_status_code perfc_cache_rpc_unary(
    perfc_ctx *ctx, perfc_cache *cache, const char *key, int64_t ttl_ms,
    int64_t negative_ttl_ms, const ProtobufCMessage *req,
    ProtobufCMessage *resp, perfc_cache_rpc_load_fn load, void *load_ud);

/** The part of perfc_cache_rpc_unary() that never blocks, for the server's
 *  try_inline hook (generated): answers from L1 alone (perfc_cache_peek()).
 *  Returns 1 with `*code` set and `resp` filled as perfc_cache_rpc_unary()
 *  fills it on a hit (or NOT_FOUND for a cached "not found"), or 0 when L1
 *  does not have the key and the call must take the full path. */
PERFC_API int perfc_cache_rpc_try_hit(perfc_ctx *ctx, perfc_cache *cache,
                                      const char *key, ProtobufCMessage *resp,
                                      perfc_status_code *code);

/** perfc_cache_rpc_try_hit() with the method's TTLs (as
 *  perfc_cache_rpc_unary() takes them; 0 = the cache's), which generated
 *  code calls. Beyond L1: when L1 does not have the key and the calling
 *  thread is an event loop (an h2 server's), and the cache has its
 *  asynchronous Redis client (perfc_cache_opts.no_async_l2 off), the call
 *  is deferred (perfc/deferred.h) and Redis is read with a plain GET on
 *  the loop: a hit is answered from the loop (stored bytes sent as they
 *  are, L1 filled as perfc_cache_rpc_unary() fills it from Redis), a
 *  cached "not found" is NOT_FOUND, and anything else (no entry, Redis
 *  failing) hands the call to the worker pool, where the method's
 *  trampoline takes the full path (perfc_cache_rpc_unary: the lease, the
 *  load, the fills). Returns 1 (answered, or deferred: `*code` is then
 *  ignored) or 0 (the full path on the pool, as before). */
PERFC_API int perfc_cache_rpc_try_hit_ttl(perfc_ctx *ctx, perfc_cache *cache,
                                          const char *key, int64_t ttl_ms,
                                          int64_t negative_ttl_ms,
                                          ProtobufCMessage *resp,
                                          perfc_status_code *code);

/** A cached call's asynchronous load in progress: what its async load
 *  finishes with perfc_cache_rpc_load_done(). Opaque; lives in the call. */
typedef struct perfc_cache_rpc_load perfc_cache_rpc_load;

/** A cached method's asynchronous load (generated per cached method from
 *  the application's `{Service}_AsyncHandlers` entry; `load_ud` is the
 *  generated binding). Runs on the call's event loop, for the call that
 *  leads the key's single flight, and must not block: start the work
 *  (a perfc/pg_async.h query) and return PERFC_STATUS_OK, then fill `resp`
 *  and call perfc_cache_rpc_load_done() from its continuation, exactly
 *  once. Returning another status ends the load at once (NOT_FOUND cached
 *  as "not found", other codes returned, not cached), and then
 *  perfc_cache_rpc_load_done() must not be called. */
typedef perfc_status_code (*perfc_cache_rpc_async_load_fn)(
    perfc_ctx *ctx, const ProtobufCMessage *req, ProtobufCMessage *resp,
    perfc_cache_rpc_load *load, void *load_ud);

/** Ends an asynchronous load with `code`: OK (the response the load got
 *  is filled: it is packed into the cache and answers every call sharing
 *  the load), NOT_FOUND (cached as "not found" unless the method's
 *  negative_ttl is off), or another code (set its message with
 *  perfc_ctx_error() first; returned to the calls sharing the load, not
 *  cached). Any thread (the rest continues on the call's loop); `load` is
 *  spent. */
PERFC_API void perfc_cache_rpc_load_done(perfc_cache_rpc_load *load,
                                         perfc_status_code code);

/** perfc_cache_rpc_try_hit_ttl() with an asynchronous load (generated
 *  code calls it for a cached method whose `{Service}_AsyncHandlers`
 *  entry is set; `load` NULL is exactly perfc_cache_rpc_try_hit_ttl()).
 *  On an event loop (h2 server) a miss in L1 never leaves the loop: Redis
 *  is read with a plain GET, and on a miss there the call joins or leads
 *  the key's single flight through perfc_cache_get_or_load_async(), whose
 *  load is `load` (Redis lease, fills on the loop, as the blocking path).
 *  Off a loop (the C core transport), or with no_async_l2, it returns 0
 *  after L1 and the call takes the blocking path on the worker pool,
 *  where the method's handler loads. `cache` NULL (the service runs
 *  without a cache) with `load` set: on a loop the load is the whole
 *  handler (the call is deferred, `load` runs at once, its
 *  perfc_cache_rpc_load_done() ends the call with the filled response);
 *  off a loop it returns 0. Returns 1 (answered, or deferred) or 0 (the
 *  pool's full path). */
PERFC_API int perfc_cache_rpc_try_hit_async(
    perfc_ctx *ctx, perfc_cache *cache, const char *key, int64_t ttl_ms,
    int64_t negative_ttl_ms, const ProtobufCMessage *req,
    ProtobufCMessage *resp, perfc_cache_rpc_async_load_fn load, void *load_ud,
    perfc_status_code *code);

/** Invalidates `n` keys (borrowed) after a write's handler returned OK:
 *  perfc_cache_invalidate(). A failure (PERFC_ENOMEM) is logged, not
 *  returned: the write is committed, so the call stays OK and the keys'
 *  TTL bounds the staleness. */
PERFC_API void perfc_cache_rpc_invalidate(perfc_ctx *ctx, perfc_cache *cache,
                                          const char *const *keys, size_t n);

/* ---- cache keys ------------------------------------------------------------
 * The generated code builds a method's key ("user:{id}") with these, by
 * copying the template's literal text and writing each field in place: the
 * same bytes printf's "%lld", "%llu" and "%s" give (keys are shared with
 * Redis, other replicas and older perfc versions), without a format string
 * parsed on every call of a hot read (docs/generator.md, "Declarative
 * caching"). */

/** Bytes an integer field may take in a key: "-9223372036854775808" and
 *  UINT64_MAX's "18446744073709551615" are 20. */
#define PERFC_CACHE_KEY_INT_MAX 20

/** Writes `v` in decimal at `p` (at most PERFC_CACHE_KEY_INT_MAX bytes, no
 *  NUL) and returns the end: "%llu"'s text. */
static inline char *perfc_cache_key_put_u64(char *p, unsigned long long v) {
  unsigned n = 1;
  for (unsigned long long t = v; t >= 10; t /= 10)
    n++;
  char *end = p + n;
  do {
    *--end = (char)('0' + (int)(v % 10));
    v /= 10;
  } while (v != 0);
  return p + n;
}

/** Writes `v` in decimal at `p` (at most PERFC_CACHE_KEY_INT_MAX bytes, no
 *  NUL) and returns the end: "%lld"'s text. */
static inline char *perfc_cache_key_put_i64(char *p, long long v) {
  if (v < 0) {
    *p++ = '-';
    /* In unsigned arithmetic, so LLONG_MIN has a magnitude too. */
    return perfc_cache_key_put_u64(p, 0ULL - (unsigned long long)v);
  }
  return perfc_cache_key_put_u64(p, (unsigned long long)v);
}

#ifdef __cplusplus
}
#endif
#endif /* PERFC_CACHE_RPC_H */
