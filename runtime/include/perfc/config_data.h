/*
 * perfc/config_data.h — the configuration's `redis:`, `postgres:` and
 * `cache:` sections into the data layer's options.
 *
 * These functions are in libperfc-data (perfc::data, pkg-config
 * perfc-data), not in libperfc-config: a service that calls them links the
 * data unit (hiredis, libpq) anyway, and one that does not (a generated
 * main without cached methods) links neither. Like perfc/config.h's apply
 * functions, each fills only the fields the configuration sets and leaves
 * the others as the caller put them (call the module's *_opts_init()
 * first); strings are borrowed from the perfc_config and live until
 * perfc_config_free().
 *
 * Room: runtime public headers (config and data layer).
 */
#ifndef PERFC_CONFIG_DATA_H
#define PERFC_CONFIG_DATA_H

#include "perfc/cache.h"
#include "perfc/config.h"
#include "perfc/pg.h"
#include "perfc/ratelimit_redis.h"
#include "perfc/redis.h"

#ifdef __cplusplus
extern "C" {
#endif

/** cache.jitter_percent's upper bound, the cache's own limit
 *  (PERFC_CACHE_MAX_TTL_JITTER) in percent: loading the file refuses more,
 *  so a value that loads is one perfc_cache_new() takes. */
#define PERFC_CACHE_MAX_JITTER_PERCENT                                         \
  ((unsigned)(PERFC_CACHE_MAX_TTL_JITTER * 100 + 0.5))

/** From `redis:`: host and port (redis.address, "HOST:PORT", an IPv6 host
 *  in brackets), pool_size, connect_timeout_ms, command_timeout_ms,
 *  sentinels/n_sentinels and master_name (Redis Sentinel; strings borrowed
 *  from `cfg`), wait_replicas, username, password, sentinel_password and
 *  sentinel_username (Redis AUTH; borrowed from `cfg`, an empty value
 *  means none). Unset keys keep `o`'s values
 *  (perfc_redis_opts_init(): 127.0.0.1:6379).
 *  Returns 0 or PERFC_EINVAL (NULL argument). */
PERFC_API int perfc_config_apply_redis(const perfc_config *cfg,
                                       perfc_redis_opts *o);

/** From `postgres:`: dsn, replica_dsn (empty = no replica), max_conns
 *  (pool_size), connect_timeout_s (connect_timeout, rounded up to whole
 *  seconds as libpq takes it), statement_timeout_ms (0 in the file = no
 *  timeout), acquire_timeout_ms. Returns 0, PERFC_EINVAL (NULL argument) or
 *  PERFC_ECONFIG when no DSN is set at all (neither postgres.dsn nor
 *  `o->dsn`), with a message in perfc_last_error() naming the key, its
 *  variable and its flag. */
PERFC_API int perfc_config_apply_pg(const perfc_config *cfg,
                                    perfc_pg_pool_opts *o);

/** From `cache:`: l1_max_bytes (0 = no L1: `no_l1`), default_ttl
 *  (`l2_ttl_ms`), negative_ttl, jitter_percent (`ttl_jitter`; 0 = none),
 *  pending_file (empty = none). Set `o->redis` first: a pending file needs
 *  Redis. Whether to build a cache at all is perfc_config_cache_enabled().
 *  Returns 0, PERFC_EINVAL (NULL argument) or PERFC_ECONFIG
 *  (cache.pending_file without `o->redis`; message in perfc_last_error()).
 */
PERFC_API int perfc_config_apply_cache(const perfc_config *cfg,
                                       perfc_cache_opts *o);

/** The Redis store for shared rate limits (perfc/ratelimit_redis.h), from
 *  `redis:` (address, pool_size; pool name "ratelimit") and
 *  resilience.rate_limit_redis_timeout. Pass perfc_ratelimit_redis_store()
 *  of it to perfc_config_apply_resilience_store(); free it with
 *  perfc_ratelimit_redis_free() after the guards. Returns 0, PERFC_EINVAL
 *  or what perfc_ratelimit_redis_new() returns. */
PERFC_API int perfc_config_ratelimit_redis_new(const perfc_config *cfg,
                                               perfc_ratelimit_redis **out);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_CONFIG_DATA_H */
