/*
 * main.c — the user-service process: configuration, PostgreSQL pool and
 * migrations, Redis pool and cache, the gRPC server with health,
 * reflection, metrics and access log, HTTP/JSON, gRPC-Web and the web
 * console on the gRPC port (http.enabled), and a graceful stop on
 * SIGTERM/SIGINT.
 *
 *   user-service [--config FILE] [--listen HOST:PORT] [--metrics-listen ADDR]
 *                [--postgres DSN] [--redis HOST:PORT] [--transport core|h2]
 *
 * Settings: the YAML file, then PERFC_<SECTION>_<KEY> environment
 * variables, then flags (docs/configuration.md). Once serving it logs
 * "serving user.v1.UserService on ADDR (port N)".
 *
 * Room: examples/user-service. Structure follows templates/main.c.tmpl (the
 * generated main) plus the data layer.
 */
#include "console.h"
#include "handlers.h"
#include "migrate.h"
#include "user_cache.h"

#include "perfc.h"
#include "perfc/gateway.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* How long start-up waits for PostgreSQL to accept the migrations before
 * giving up (an orchestrator then restarts the process): databases and
 * services often start together. */
#define MIGRATE_WAIT_S 60
/* After the server has drained its calls, pending Redis deletes get this
 * long (at most the configured shutdown grace) to be delivered before the
 * cache saves what is left: the Deployment's terminationGracePeriodSeconds
 * (30 s) leaves 10 s after the 20 s shutdown_grace. */
#define CACHE_DRAIN_MAX_MS 5000
/* The health name that says whether reads use the replica (SERVING) or
 * fall back to the primary (NOT_SERVING). The service itself stays
 * SERVING either way: reads still work. */
#define REPLICA_HEALTH_NAME "user.v1.UserService/replica"

static int run_migrations(const char *dsn) {
  char err[512];
  for (int waited = 0;; waited++) {
    struct timespec one = {1, 0};
    if (user_migrate(dsn, err, sizeof err) == 0)
      return 0;
    /* Only an unreachable server is worth waiting for; a failing or edited
     * migration will fail the same way next time. */
    if (strstr(err, "cannot connect") == NULL || waited >= MIGRATE_WAIT_S) {
      perfc_log(PERFC_LOG_ERROR, "%s", err);
      return -1;
    }
    if (waited == 0)
      perfc_log(PERFC_LOG_WARN, "%s; retrying for up to %d s", err,
                MIGRATE_WAIT_S);
    nanosleep(&one, NULL);
  }
}

/* perfc_pg_replica_fn: the replica's state as a health status of its own
 * (the pool, or the loops' client, has already logged the transition and
 * counts the fallback). Both call it: `pool` is the pool either way. */
static void on_replica(perfc_pg_pool *pool, int usable, void *ud) {
  (void)pool;
  perfc_health_set(ud, REPLICA_HEALTH_NAME,
                   usable ? PERFC_HEALTH_SERVING : PERFC_HEALTH_NOT_SERVING);
}

/* The pool (blocking queries, on workers) and, with `pga` set, the client
 * of the event loops (perfc/pg_async.h) from the same postgres: section,
 * replica included: both send reads to the replica with the same rules,
 * report its transitions to the same health name, and share
 * read-your-writes, so a read on the loops after a write on a worker
 * (UpdateUser, then GetUser's miss) never reads the row from before the
 * write. */
static int pg_from_config(perfc_pg_pool **out, perfc_pg_async **pga,
                          const perfc_config *cfg, perfc_health *health) {
  perfc_pg_pool_opts o;
  perfc_pg_pool_opts_init(&o);
  o.name = "users";
  /* Reads fall back to the primary while the replica cannot be reached
   * (the pool's default), and the health name below says so. */
  o.replica_fn = on_replica;
  o.replica_ud = health;
  int rc = perfc_config_apply_pg(cfg, &o);
  if (rc == 0)
    rc = perfc_pg_pool_new(out, &o);
  if (rc == 0 && pga != NULL) {
    perfc_pg_async_opts ao;
    perfc_pg_async_opts_from_pool(&ao, &o);
    ao.pool = *out; /* freed after the client (main's end) */
    rc = perfc_pg_async_new(pga, &ao);
  }
  return rc;
}

/* Whether the cache: section leaves the cache's Redis client on the loops
 * (cache.async_redis, on by default). */
static int cache_reads_on_loops(const perfc_config *cfg) {
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  return perfc_config_apply_cache(cfg, &co) == 0 && !co.no_async_l2;
}

static int redis_pool_from_config(perfc_redis_pool **out,
                                  const perfc_config *cfg) {
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.name = "users";
  perfc_config_apply_redis(cfg, &o);
  return perfc_redis_pool_new(out, &o);
}

int main(int argc, char **argv) {
  perfc_flags flags;
  perfc_config *cfg = NULL;
  perfc_server_opts opts;
  perfc_grpc_metrics_opts gm_opts;
  perfc_metrics_http_opts http_opts;
  perfc_tracing_opts tr_opts;
  perfc_tracer *tracer = NULL;
  perfc_server *srv = NULL;
  perfc_health *health = NULL;
  perfc_grpc_metrics *gm = NULL;
  perfc_metrics_http *http = NULL;
  perfc_pg_pool *pg = NULL;
  perfc_pg_async *pga = NULL;
  perfc_redis_pool *redis = NULL;
  perfc_cache *cache = NULL;
  user_service svc;
  int port = 0;
  /* First: a SIGINT/SIGTERM during the start-up (config, connections,
   * listening) waits for perfc_server_run(), which then shuts down
   * gracefully (exit 0), instead of killing the process. */
  int rc = perfc_server_hold_signals();
  if (rc == 0)
    rc = perfc_flags_parse(&flags, argc, argv);
  if (rc == 0 && flags.help) {
    fputs(perfc_flags_usage(), stdout);
    return 0;
  }
  if (rc == 0)
    rc = perfc_config_load(&cfg, flags.config_file);
  if (rc == 0)
    rc = perfc_config_apply_flags(cfg, &flags);
  /* The database is required: perfc_config_apply_pg() says which key is
   * missing. */
  perfc_pg_pool_opts pg_check;
  perfc_pg_pool_opts_init(&pg_check);
  if (rc == 0)
    rc = perfc_config_apply_pg(cfg, &pg_check);
  if (rc != 0) {
    fprintf(stderr, "%s\n",
            perfc_last_error_detail().code == rc ? perfc_last_error()
                                                 : perfc_strerror(rc));
    perfc_config_free(cfg);
    return 2;
  }
  perfc_config_apply_logging(cfg);
  perfc_server_opts_init(&opts);
  perfc_config_apply_server(cfg, &opts);
  perfc_grpc_metrics_opts_init(&gm_opts);
  perfc_config_apply_grpc_metrics(cfg, &gm_opts);

  /* The schema first: a replica that cannot migrate must not serve. */
  if (run_migrations(pg_check.dsn) != 0) {
    perfc_config_free(cfg);
    return 1;
  }
  /* Health first: the PostgreSQL pool reports the replica's state to it. */
  rc = perfc_health_new(&health, NULL);
  /* Neither pool connects here: PostgreSQL or Redis going away later is
   * handled per call (UNAVAILABLE, or the cache degrading to PostgreSQL). */
  /* On the h2 transport (the default) the reads run on its event loops
   * and query through pga; the C core transport has no loops of perfc's,
   * so there every call runs on the worker pool with the pool. */
  if (rc == 0)
    rc = pg_from_config(&pg, opts.transport == PERFC_TRANSPORT_CORE ? NULL
                                                                    : &pga,
                        cfg, health);
  /* With a replica, one check now sets its health name (SERVING, or
   * NOT_SERVING with one log line when it cannot be reached); reads work
   * either way. */
  if (rc == 0 && perfc_pg_replica_usable(pg) >= 0 &&
      (rc = perfc_health_set(health, REPLICA_HEALTH_NAME,
                             PERFC_HEALTH_SERVING)) == 0)
    (void)perfc_pg_ping(pg, PERFC_PG_READ);
  /* One cache for the whole service: the generated wiring (GetUser,
   * UpdateUser, DeleteUser) and the handlers that read or drop entries
   * themselves (BatchGetUsers, SyncUsers, CreateUser) share it. Redis is
   * only the cache's second level, so without a cache there is no pool. */
  if (rc == 0 && perfc_config_cache_enabled(cfg)) {
    rc = redis_pool_from_config(&redis, cfg);
    if (rc == 0)
      rc = user_cache_new(&cache, redis, cfg);
  }
  svc.pg = pg;
  svc.pga = pga;
  svc.cache = cache;

  if (rc == 0)
    rc = perfc_server_new(&srv, &opts);
  /* Tracing when tracing.enabled or OTEL_* variables say (as generated
   * mains do): a span per call, with the cache, Redis and PostgreSQL spans
   * under it, and /debug/traces with tracing.debug_traces. */
  perfc_tracing_opts_init(&tr_opts);
  if (rc == 0 && perfc_config_tracing_enabled(cfg)) {
    perfc_config_apply_tracing(cfg, &tr_opts);
    rc = perfc_tracing_new(&tracer, &tr_opts);
    if (rc == 0)
      rc = perfc_tracing_attach(tracer, srv);
  }
  if (rc == 0)
    rc = perfc_grpc_metrics_new(&gm, &gm_opts);
  if (rc == 0)
    rc = perfc_grpc_metrics_attach(gm, srv);
  if (rc == 0 && perfc_config_access_log(cfg))
    rc = perfc_access_log_attach(PERFC_LOG_INFO, srv);
  /* GetUser's (perfc.cache) and the writes' (perfc.invalidate) options
   * put `cache` around the handlers; a NULL cache serves every call from
   * PostgreSQL. With pga, GetUser's misses, ListUsers and BatchGetUsers
   * run on the event loops (user_service_async_handlers). */
  if (rc == 0)
    rc = user__v1__user_service__perfc_register_cached_async(
        srv, &user_service_handlers,
        pga != NULL ? &user_service_async_handlers : NULL, &svc, cache);
  /* SyncUsers on the loops too, when its lookups can stay there: a cache
   * whose Redis is read from the loops (cache.async_redis, the default). */
  if (rc == 0 && pga != NULL && cache != NULL && cache_reads_on_loops(cfg))
    rc = user_service_sync_users_on_loop(srv, &svc);
  /* HTTP/JSON (the google.api.http routes of user.proto), gRPC-Web and
   * the console page at GET /, on the gRPC port: one listener, the same
   * handlers and interceptors. The gRPC C core transport cannot carry
   * them, so there the service stays gRPC only and says so. */
  if (rc == 0 && perfc_config_http_enabled(cfg)) {
    if (opts.transport == PERFC_TRANSPORT_CORE) {
      perfc_log(PERFC_LOG_WARN, "http.enabled: HTTP/JSON needs "
                                "server.transport h2; serving gRPC only");
    } else {
      perfc_gateway_opts go;
      perfc_gateway_opts_init(&go);
      perfc_config_apply_http(cfg, &go);
      rc = user_console_register(srv);
      if (rc == 0)
        rc = perfc_gateway_attach(&go, srv);
    }
  }
  if (rc == 0)
    rc = perfc_health_register(health, srv);
  if (rc == 0)
    rc = perfc_health_set(health, "user.v1.UserService", PERFC_HEALTH_SERVING);
  if (rc == 0)
    rc = perfc_reflection_register(srv);
  if (rc == 0)
    rc = perfc_config_listen(cfg, srv, &port);
  if (rc == 0)
    rc = perfc_server_start(srv);
  if (rc == 0 && perfc_config_metrics_enabled(cfg)) {
    rc = perfc_process_metrics_register(NULL);
    perfc_metrics_http_opts_init(&http_opts);
    perfc_config_apply_metrics_http(cfg, &http_opts);
    if (tr_opts.debug_traces)
      http_opts.tracer = tracer;
    if (rc == 0)
      rc = perfc_metrics_http_start(&http, &http_opts);
    if (rc == 0)
      perfc_log(PERFC_LOG_INFO, "metrics on port %d",
                perfc_metrics_http_port(http));
  }
  if (rc != 0) {
    /* PERFC_EBIND was logged once, naming the address, where it happened. */
    if (rc != PERFC_EBIND)
      fprintf(stderr, "cannot serve: %s\n",
              perfc_last_error_detail().code == rc ? perfc_last_error()
                                                   : perfc_strerror(rc));
  } else {
    perfc_log(PERFC_LOG_INFO, "serving user.v1.UserService on %s (port %d)%s",
              perfc_config_listen_at(cfg, 0), port,
              perfc_config_tls_enabled(cfg) ? " with TLS" : "");
    perfc_server_run(srv);
  }
  perfc_metrics_http_stop(http);
  perfc_server_free(srv); /* first: its handlers use everything below */
  if (cache != NULL) {
    /* Invalidations still pending would let the other replicas read old
     * values from Redis: deliver them now, within the grace; what Redis
     * still refuses after that goes to cache.pending_file (if set) when
     * the cache is freed. */
    uint32_t drain_ms = CACHE_DRAIN_MAX_MS;
    if (opts.shutdown_grace_ms > 0 && opts.shutdown_grace_ms < drain_ms)
      drain_ms = (uint32_t)opts.shutdown_grace_ms;
    if (perfc_cache_drain(cache, drain_ms) == 0)
      perfc_log(PERFC_LOG_INFO, "cache: no Redis deletes pending at shutdown");
  }
  perfc_grpc_metrics_free(gm);
  perfc_cache_free(cache);
  perfc_redis_pool_free(redis);
  perfc_pg_async_free(pga); /* after the server, whose loops query it */
  perfc_pg_pool_free(pg);
  perfc_health_free(health); /* after the pool, which reports to it */
  perfc_tracing_free(tracer); /* last: sends the spans still queued */
  perfc_config_free(cfg);
  return rc == 0 ? 0 : 1;
}
