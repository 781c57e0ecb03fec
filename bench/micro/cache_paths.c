/*
 * cache_paths.c — microbenchmark: latency of each perfc_cache_get_or_load
 * path, one thread, against a private redis-server on loopback:
 *   L1 hit; L2 hit (L1 cleared: one Lua round trip + L1 fill); miss (lease
 *   script, loader, fill script: two round trips); Redis killed (loader
 *   only: the pool refuses during its backoff); Redis frozen (SIGSTOP: each
 *   call that reaches Redis pays command_timeout_ms, then backoff refuses).
 *
 * Room: benchmarks (micro). Not built by CMake. After building the runtime:
 *
 *   cc -O2 -pthread -I runtime/include -I tests/unit \
 *      bench/micro/cache_paths.c -L build/lib -lperfc-data -lperfc \
 *      -Wl,-rpath,$PWD/build/lib -o build/cache_paths
 *   ./build/cache_paths [calls-per-path]
 *
 * Prints mean and max microseconds per call for each path.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perfc/cache.h"
#include "perfc/log.h"
#include "perfc/redis.h"
#include "redis_server.h"

static int loader(const char *key, uint8_t **out, size_t *len, void *ud) {
  (void)key;
  (void)ud;
  static const char v[] = "a-small-encoded-message-of-about-48-bytes-xxxxx";
  *len = sizeof v - 1;
  *out = malloc(*len);
  memcpy(*out, v, *len);
  return 0;
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

typedef enum { KEEP, CLEAR_L1, NEW_KEY } prep;

static void run(const char *name, perfc_cache *c, int calls, prep p) {
  double total = 0, worst = 0;
  char key[32];
  for (int i = 0; i < calls; i++) {
    if (p == CLEAR_L1)
      perfc_l1cache_clear(perfc_cache_l1(c));
    snprintf(key, sizeof key, p == NEW_KEY ? "%s:%d" : "%s", name, i);
    uint8_t *v;
    size_t n;
    double t0 = now_us();
    int rc = perfc_cache_get_or_load(c, key, loader, NULL, &v, &n);
    double dt = now_us() - t0;
    if (rc != 0) {
      fprintf(stderr, "%s: %s\n", name, perfc_strerror(rc));
      exit(1);
    }
    free(v);
    total += dt;
    if (dt > worst)
      worst = dt;
  }
  printf("%-34s calls=%-6d mean %9.2f us   max %9.2f us\n", name, calls,
         total / calls, worst);
}

int main(int argc, char **argv) {
  int calls = argc > 1 ? atoi(argv[1]) : 2000;
  perfc_log_set_level(PERFC_LOG_ERROR);
  test_redis srv;
  if (tr_start(&srv) != 0) {
    fprintf(stderr, "cannot start redis-server\n");
    return 1;
  }
  perfc_redis_opts ro;
  perfc_redis_opts_init(&ro);
  ro.port = srv.port;
  perfc_redis_pool *pool;
  perfc_cache *c;
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  if (perfc_redis_pool_new(&pool, &ro) != 0)
    return 1;
  co.redis = pool;
  co.no_subscribe = 1;
  if (perfc_cache_new(&c, &co) != 0)
    return 1;
  printf("defaults: command_timeout %u ms, connect_timeout %u ms, backoff "
         "%u..%u ms\n",
         PERFC_DEFAULT_REDIS_COMMAND_TIMEOUT_MS,
         PERFC_DEFAULT_REDIS_CONNECT_TIMEOUT_MS,
         PERFC_DEFAULT_REDIS_BACKOFF_MIN_MS,
         PERFC_DEFAULT_REDIS_BACKOFF_MAX_MS);
  run("warm", c, 1, KEEP);
  run("L1 hit", c, calls * 100, KEEP);
  run("L2 hit (Redis GET via Lua)", c, calls, CLEAR_L1);
  run("miss: lease + load + fill", c, calls, NEW_KEY);
  tr_kill(&srv);
  run("Redis killed: loader only", c, calls, NEW_KEY);
  if (tr_restart(&srv) != 0)
    return 1;
  tr_sleep_ms(PERFC_DEFAULT_REDIS_BACKOFF_MAX_MS + 100);
  run("restarted: miss path again", c, calls, NEW_KEY);
  kill(srv.pid, SIGSTOP);
  run("Redis frozen (SIGSTOP)", c, calls / 10, NEW_KEY);
  kill(srv.pid, SIGCONT);
  perfc_cache_stats st;
  perfc_cache_stats_get(c, &st);
  printf("loads %llu l2_hits %llu l2_errors %llu\n",
         (unsigned long long)st.loads, (unsigned long long)st.l2_hits,
         (unsigned long long)st.l2_errors);
  perfc_cache_free(c);
  perfc_redis_pool_free(pool);
  tr_stop(&srv);
  return 0;
}
