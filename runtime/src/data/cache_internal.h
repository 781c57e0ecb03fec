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
 * arena (NULL for a negative entry or an empty value). Counts one hit or
 * miss, as perfc_l1cache_get() does. */
int perfc__l1cache_get_arena(perfc_l1cache *c, const char *key, perfc_arena *a,
                             uint8_t **out, size_t *out_len, int *out_negative);

/* perfc_cache_peek() into `a`: same results and counters, no malloc; a hit's
 * bytes live until the arena is reset. */
int perfc__cache_peek_arena(perfc_cache *c, const char *key, perfc_arena *a,
                            uint8_t **out, size_t *out_len);

#endif /* PERFC_CACHE_INTERNAL_H */
