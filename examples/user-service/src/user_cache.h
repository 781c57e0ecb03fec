/*
 * user_cache.h — the service's one cache-aside cache ("users": in-process
 * L1 + Redis) and the reads and writes that user.proto's options cannot
 * express.
 *
 * Room: examples/user-service. GetUser, UpdateUser and DeleteUser are
 * cached and invalidated by the generated wiring
 * (user__v1__user_service__perfc_register_cached(), from GetUser's
 * (perfc.cache) and the writes' (perfc.invalidate) options). BatchGetUsers
 * and SyncUsers read the same entries through user_cache_get_many() on the
 * worker pool (on the event loops, handlers.c looks each id up with
 * perfc_cache_get_or_load_async() under the same key and value), and
 * CreateUser drops a "not found" cached for its new id. To share entries
 * with the generated wiring this file keeps the option's key ("user:{id}")
 * and value (a packed user.v1.User, what the wiring stores from GetUser's
 * response); examples/user-service/tests checks that they agree.
 */
#ifndef USER_SERVICE_USER_CACHE_H
#define USER_SERVICE_USER_CACHE_H

#include "perfc/cache.h"
#include "perfc/config_data.h"
#include "perfc/pg.h"
#include "user/v1/user.pb-c.h"

/** GetUser's (perfc.cache) ttl ("10m") and negative_ttl ("30s"). They
 *  become the cache's own TTLs, which perfc_cache_get_many() fills with, so
 *  an entry lives as long whichever RPC loaded it. */
#define USER_CACHE_TTL_MS 600000u
#define USER_CACHE_NEGATIVE_TTL_MS 30000u

/** Creates the cache named "users" with Redis `redis` (borrowed; NULL = L1
 *  only) and the `cache:` section of `cfg` (NULL = the defaults here):
 *  perfc_config_apply_cache() (perfc/config_data.h). The caller checks
 *  perfc_config_cache_enabled() first; with it off the service runs
 *  without a cache. Returns 0 or a PERFC_E* code; free with
 *  perfc_cache_free(). */
int user_cache_new(perfc_cache **out, perfc_redis_pool *redis,
                   const perfc_config *cfg);

/** Users `ids[0..n)` with one L1 pass, one Redis MGET and one SELECT for
 *  the rest (perfc_cache_get_many()); with `c` NULL, the SELECT alone.
 *  `out[i]` is ids[i]'s user or NULL when it does not exist; `out` holds n
 *  pointers, messages unpacked into `arena`. Returns OK, or the database's
 *  status (UNAVAILABLE when it cannot be reached) with a message in `msg`
 *  (NUL-terminated, `msg_len` bytes at most). */
perfc_status_code user_cache_get_many(perfc_cache *c, perfc_pg_pool *pg,
                                      const int64_t *ids, size_t n,
                                      perfc_arena *arena, User__V1__User **out,
                                      char *msg, size_t msg_len);

/** Drops user `id` from both levels and from other replicas' L1, after the
 *  database commit. For writes whose key the options cannot name
 *  (CreateUser's id comes from the database). NULL `c` is a no-op. */
void user_cache_invalidate(perfc_cache *c, int64_t id);

#endif
