/*
 * apply_data.c — the configuration's redis, postgres and cache sections
 * into the data layer's options (perfc/config_data.h).
 *
 * Room: runtime/src/config, but compiled into libperfc-data
 * (runtime/CMakeLists.txt): these functions need the data modules' types,
 * and a service that calls them links the data unit anyway, while
 * libperfc-config stays free of hiredis and libpq. Being in another shared
 * library than the loader, this file calls none of its hidden functions:
 * it reads the plain struct perfc_config (config/config_internal.h) with
 * the inline readers there, and reports errors with perfc_error_set().
 */
#include "config/config_internal.h"
#include "perfc/config_data.h"

int perfc_config_apply_redis(const perfc_config *cfg, perfc_redis_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  cfg_apply_rows(cfg, T_REDIS, o);
  /* One key, two fields: the loader split it when it checked it. */
  size_t i = cfg_find(cfg, "redis", "address");
  if (i < cfg->nkeys && cfg->set[i]) {
    o->host = cfg->raw[i].host;
    o->port = cfg->raw[i].port;
  }
  /* A list of HOST:PORT seeds (the loader checked each): cluster mode. */
  i = cfg_find(cfg, "redis", "cluster_nodes");
  if (i < cfg->nkeys && cfg->set[i]) {
    o->cluster_nodes = (const char *const *)cfg->raw[i].items;
    o->n_cluster_nodes = cfg->raw[i].items_count;
  }
  /* Redis Sentinel: the list as the loader checked it (HOST:PORT each). */
  i = cfg_find(cfg, "redis", "sentinels");
  if (i < cfg->nkeys && cfg->set[i]) {
    o->sentinels = (const char *const *)cfg->raw[i].items;
    o->n_sentinels = cfg->raw[i].items_count;
  }
  return 0;
}

int perfc_config_apply_pg(const perfc_config *cfg, perfc_pg_pool_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  cfg_apply_rows(cfg, T_PG, o);
  const cfg_value *v;
  /* An empty replica DSN (PERFC_POSTGRES_REPLICA_DSN= ) means "no
   * replica", so a file that names one can be overridden for a
   * single-server setup. */
  if ((v = cfg_get(cfg, "postgres", "replica_dsn")) != NULL)
    o->replica_dsn = v->s[0] ? v->s : NULL;
  /* 0 in the file is "no statement timeout", the pool's explicit field
   * (its 0 means its default). */
  if ((v = cfg_get(cfg, "postgres", "statement_timeout")) != NULL) {
    o->no_statement_timeout = v->i == 0;
    if (v->i != 0)
      o->statement_timeout_ms = v->i;
  }
  /* 0 in the file is "no lag check"; true is the default of
   * read_your_writes, whose pool field says "off". */
  if ((v = cfg_get(cfg, "postgres", "max_replica_lag")) != NULL) {
    o->no_replica_lag_check = v->i == 0;
    if (v->i != 0)
      o->max_replica_lag_ms = v->i;
  }
  if ((v = cfg_get(cfg, "postgres", "read_your_writes")) != NULL)
    o->no_read_your_writes = v->i == 0;
  if (o->dsn == NULL || o->dsn[0] == '\0')
    return perfc_error_set(PERFC_ECONFIG, NULL, -1,
                           "config: postgres.dsn is not set: set it in the "
                           "file, PERFC_POSTGRES_DSN or --postgres");
  return 0;
}

int perfc_config_apply_cache(const perfc_config *cfg, perfc_cache_opts *o) {
  if (!cfg || !o)
    return PERFC_EINVAL;
  cfg_apply_rows(cfg, T_CACHE, o);
  const cfg_value *v;
  if ((v = cfg_get(cfg, "cache", "l1_max_bytes")) != NULL) {
    o->no_l1 = v->u == 0;
    if (v->u != 0)
      o->l1_max_bytes = (size_t)v->u;
  }
  /* Percent in the file, a fraction in the cache; 0 in the file is "no
   * jitter", the cache's explicit field (its 0 fraction means its
   * default). */
  if ((v = cfg_get(cfg, "cache", "jitter_percent")) != NULL) {
    o->no_ttl_jitter = v->u == 0;
    if (v->u != 0)
      o->ttl_jitter = (double)v->u / 100.0;
  }
  /* true in the file is the default; the cache's field says "off". */
  if ((v = cfg_get(cfg, "cache", "async_redis")) != NULL)
    o->no_async_l2 = v->i == 0;
  if ((v = cfg_get(cfg, "cache", "pending_file")) != NULL && v->s[0]) {
    if (o->redis == NULL)
      return perfc_error_set(PERFC_ECONFIG, NULL, -1,
                             "config: cache.pending_file needs Redis: set "
                             "perfc_cache_opts.redis before "
                             "perfc_config_apply_cache()");
    o->pending_file = v->s;
  }
  return 0;
}

int perfc_config_ratelimit_redis_new(const perfc_config *cfg,
                                     perfc_ratelimit_redis **out) {
  if (!cfg || !out)
    return PERFC_EINVAL;
  perfc_redis_opts ro;
  perfc_redis_opts_init(&ro);
  perfc_config_apply_redis(cfg, &ro);
  ro.name = "ratelimit";
  perfc_ratelimit_redis_opts o;
  perfc_ratelimit_redis_opts_init(&o);
  o.redis = &ro;
  const cfg_value *v = cfg_get(cfg, "resilience", "rate_limit_redis_timeout");
  if (v != NULL)
    o.timeout_ms = v->i;
  return perfc_ratelimit_redis_new(out, &o);
}
