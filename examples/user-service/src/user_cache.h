/*
 * user_cache.h — GetUser's read-through cache and the invalidation that
 * UpdateUser and DeleteUser need, on the runtime's perfc/cache.h.
 *
 * Room: examples/user-service. This file is the only place that knows the
 * cache key ("user:{id}", as GetUser's (perfc.cache) option in user.proto
 * says), the TTLs and the value format (a packed user.v1.User). Once the
 * generator wires (perfc.cache)/(perfc.invalidate) itself, the handlers'
 * three calls below are replaced by the generated wiring and this file goes.
 */
#ifndef USER_SERVICE_USER_CACHE_H
#define USER_SERVICE_USER_CACHE_H

#include "perfc/cache.h"
#include "perfc/config.h"
#include "perfc/pg.h"
#include "user/v1/user.pb-c.h"

typedef struct user_cache user_cache;

/** A cache in front of `pg` (borrowed), with Redis `redis` (borrowed; NULL
 *  = L1 only) and the sizes and TTLs of the `cache:` section. Returns 0 or
 *  a PERFC_E* code. */
int user_cache_new(user_cache **out, perfc_pg_pool *pg, perfc_redis_pool *redis,
                   const perfc_config_cache *cfg);

/** NULL is a no-op. */
void user_cache_free(user_cache *c);

/** User `id` through L1, Redis, then one single-flight SELECT; the message
 *  is unpacked into `arena`. Returns OK, NOT_FOUND, or the database's
 *  status (UNAVAILABLE when it cannot be reached), with a message in
 *  `msg` (NUL-terminated, `msg_len` bytes at most). */
perfc_status_code user_cache_get(user_cache *c, int64_t id, perfc_arena *arena,
                                 User__V1__User **out, char *msg,
                                 size_t msg_len);

/** Users `ids[0..n)` with one L1 pass, one MGET and one SELECT for the
 *  rest. `out[i]` is ids[i]'s user or NULL when it does not exist; `out`
 *  holds n pointers, messages unpacked into `arena`. */
perfc_status_code user_cache_get_many(user_cache *c, const int64_t *ids,
                                      size_t n, perfc_arena *arena,
                                      User__V1__User **out, char *msg,
                                      size_t msg_len);

/** Drops user `id` from both levels and from other replicas' L1. Call it
 *  after the database commit. */
void user_cache_invalidate(user_cache *c, int64_t id);

#endif
