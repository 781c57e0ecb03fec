/*
 * cache_internal.h — the allocation-free L1 reads behind a cache hit
 * answered on the poller (cache_rpc.c's try_hit): the value is copied once,
 * under the shard's lock, into the call's arena. Never installed.
 *
 * Room: runtime/src/data private header (l1cache.c, cache.c, cache_rpc.c).
 */
#ifndef PERFC_CACHE_INTERNAL_H
#define PERFC_CACHE_INTERNAL_H

#include "perfc/arena.h"
#include "perfc/cache.h"
#include "perfc/l1cache.h"

/* perfc_l1cache_get() into `a` instead of malloc: `*out` points into the
 * arena (NULL for an empty value; for a negative entry its note, the
 * bytes the loader gave with PERFC_ENOENT, or NULL). Counts one hit or
 * miss, as perfc_l1cache_get() does. */
int perfc__l1cache_get_arena(perfc_l1cache *c, const char *key, perfc_arena *a,
                             uint8_t **out, size_t *out_len, int *out_negative,
                             int *out_plain);

/* A negative entry's note (see perfc_cache_loader_fn), without counting a
 * hit or miss or moving the entry: 0 with `*out` in `a` (NULL, 0: the entry
 * has none), PERFC_ENOENT when the key has no negative entry in L1. */
int perfc__l1cache_note(perfc_l1cache *c, const char *key, perfc_arena *a,
                        uint8_t **out, size_t *out_len);

/* perfc__l1cache_note() of the cache's L1; PERFC_ENOENT also when L1 is
 * off or not trusted now. */
int perfc__cache_negative_note(perfc_cache *c, const char *key,
                               perfc_arena *a, uint8_t **out, size_t *out_len);

/* perfc_cache_peek() into `a`: same results and counters, no malloc; a hit's
 * bytes live until the arena is reset. PERFC_ENOENT from L1 sets `*out`
 * and `*out_len` to the negative entry's note (NULL, 0 when it has none or
 * the answer is not L1's). */
int perfc__cache_peek_arena(perfc_cache *c, const char *key, perfc_arena *a,
                            uint8_t **out, size_t *out_len, int *out_plain);

/* The declarative hit path's second level, on an event loop (cache_rpc.c's
 * try_hit): a plain GET of `key` through the cache's asynchronous client.
 * Returns 0 when the read started: `fn` then runs once on this loop with
 * 0 and the stored value (borrowed for the callback; L1 was filled with it,
 * fenced by the key's generation read before the GET, for min(`ttl_ms` or
 * the cache's, L1's) like an L2 hit of perfc_cache_get_or_load_ttl), with
 * PERFC_ENOENT and the entry's note (NULL, 0: none; borrowed as a value
 * is) for a cached "not found" (L1 filled negatively, with the note, for
 * `negative_ttl_ms`, PERFC_CACHE_TTL_NONE: not filled), or with 1 when the
 * full path must run (Redis has no entry, or failed, or holds something
 * that is not ours). Returns nonzero (nothing started, `fn` never runs)
 * when the async read does not apply: no Redis or async client, not on a
 * loop, invalidations pending (Redis may hold old values), or the client
 * refused the command. Counters as the synchronous path's for the same
 * outcome: a hit counts an L1 miss (or bypass) and an L2 hit; a fallback
 * counts nothing, since the full path counts its own. */
/* Whether perfc__cache_l2_get_async() may apply now (an async client, no
 * invalidation pending); a cheap check before deferring a call. */
int perfc__cache_l2_async_usable(perfc_cache *c);
typedef void (*perfc__cache_l2_fn)(int rc, const uint8_t *val, size_t len,
                                   void *user_data);
int perfc__cache_l2_get_async(perfc_cache *c, const char *key, int64_t ttl_ms,
                              int64_t negative_ttl_ms, perfc__cache_l2_fn fn,
                              void *user_data);

/* perfc_cache_get_or_load_async() after the caller already read Redis
 * with a plain GET and found no entry (cache_rpc.c's try_hit, after
 * perfc__cache_l2_get_async() answered 1): `l2_missed` skips that GET and
 * goes straight to the flight (whose lease read sees Redis again). */
int perfc__cache_get_or_load_async(perfc_cache *c, const char *key,
                                   int64_t ttl_ms, int64_t negative_ttl_ms,
                                   perfc_cache_async_loader_fn loader,
                                   void *loader_ud, perfc_cache_result_fn done,
                                   void *done_ud, int l2_missed);

#endif /* PERFC_CACHE_INTERNAL_H */
