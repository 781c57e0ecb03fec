/*
 * cache_stress.c — a criterion-free stress driver for the data layer (L1,
 * Redis pool, cache-aside), meant to run under ThreadSanitizer, which
 * criterion does not survive (see metrics_stress.c). It starts its own
 * redis-server (tests/unit/redis_server.h) and runs, concurrently: readers
 * through perfc_cache_get_or_load and perfc_cache_get_many, writers that
 * invalidate, a second cache instance receiving the invalidations over
 * pub/sub, and one Redis kill and restart in the middle.
 *
 * Room: benchmarks (micro). Not built by CMake. With a TSan build of the
 * runtime (cmake -B build-tsan -DPERFC_SANITIZE=thread -DPERFC_BUILD_BENCH=OFF
 * && cmake --build build-tsan --target perfc_runtime):
 *
 *   cc -O1 -g -fsanitize=thread -pthread -I runtime/include -I tests/unit \
 *      bench/micro/cache_stress.c -L build-tsan/lib -lperfc-data -lperfc \
 *      -Wl,-rpath,$PWD/build-tsan/lib -o build-tsan/cache_stress
 *   TSAN_OPTIONS=halt_on_error=1 ./build-tsan/cache_stress
 *
 * It prints "ok" and exits 0 when every read returned the key's value or
 * "not found" and the loader never saw a wrong key.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perfc/cache.h"
#include "perfc/l1cache.h"
#include "perfc/log.h"
#include "perfc/redis.h"
#include "redis_server.h"

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

#define KEYS 64
static atomic_int g_stop;
static atomic_long g_reads, g_loads;

/* key "k<i>" exists for even i, with value "v<i>". */
static int loader(const char *key, uint8_t **out, size_t *len, void *ud) {
  (void)ud;
  atomic_fetch_add(&g_loads, 1);
  int i = atoi(key + 1);
  if (i % 2)
    return PERFC_ENOENT;
  char v[16];
  *len = (size_t)snprintf(v, sizeof v, "v%d", i);
  *out = (uint8_t *)strdup(v);
  return 0;
}

static int batch_loader(const char *const *keys, size_t n,
                        perfc_cache_value *out, void *ud) {
  for (size_t k = 0; k < n; k++) {
    uint8_t *v;
    size_t len;
    if (loader(keys[k], &v, &len, ud) == 0) {
      out[k].data = v;
      out[k].len = len;
      out[k].found = 1;
    }
  }
  return 0;
}

static void check_value(int i, int rc, const uint8_t *v, size_t n) {
  char want[16];
  snprintf(want, sizeof want, "v%d", i);
  if (i % 2) {
    CHECK(rc == PERFC_ENOENT);
  } else {
    CHECK(rc == 0);
    CHECK(n == strlen(want) && memcmp(v, want, n) == 0);
  }
}

static void *reader(void *arg) {
  perfc_cache *c = arg;
  unsigned seed = (unsigned)(uintptr_t)&seed;
  char key[16];
  while (!atomic_load(&g_stop)) {
    int i = (int)(rand_r(&seed) % KEYS);
    snprintf(key, sizeof key, "k%d", i);
    uint8_t *v = NULL;
    size_t n = 0;
    int rc = perfc_cache_get_or_load(c, key, loader, NULL, &v, &n);
    check_value(i, rc, v, n);
    free(v);
    if (rand_r(&seed) % 8 == 0) {
      char kb[4][16];
      const char *ks[4];
      int idx[4];
      for (int k = 0; k < 4; k++) {
        idx[k] = (int)(rand_r(&seed) % KEYS);
        snprintf(kb[k], sizeof kb[k], "k%d", idx[k]);
        ks[k] = kb[k];
      }
      perfc_cache_value out[4];
      CHECK(perfc_cache_get_many(c, ks, 4, batch_loader, NULL, out) == 0);
      for (int k = 0; k < 4; k++)
        check_value(idx[k], out[k].found ? 0 : PERFC_ENOENT, out[k].data,
                    out[k].len);
      perfc_cache_values_free(out, 4);
    }
    atomic_fetch_add(&g_reads, 1);
  }
  return NULL;
}

static void *writer(void *arg) {
  perfc_cache *c = arg;
  unsigned seed = 7;
  char key[16];
  while (!atomic_load(&g_stop)) {
    snprintf(key, sizeof key, "k%d", (int)(rand_r(&seed) % KEYS));
    const char *k[] = {key};
    CHECK(perfc_cache_invalidate(c, k, 1) == 0);
    tr_sleep_ms(1);
  }
  return NULL;
}

static void *stats_reader(void *arg) {
  perfc_cache *c = arg;
  while (!atomic_load(&g_stop)) {
    perfc_cache_stats st;
    perfc_cache_stats_get(c, &st);
    perfc_l1cache_stats ls;
    perfc_l1cache_stats_get(perfc_cache_l1(c), &ls);
    char *text;
    size_t len;
    CHECK(perfc_metrics_registry_render(NULL, &text, &len) == 0);
    free(text);
    tr_sleep_ms(5);
  }
  return NULL;
}

int main(void) {
  perfc_log_set_level(PERFC_LOG_ERROR);
  test_redis srv;
  CHECK(tr_start(&srv) == 0);
  perfc_redis_opts ro;
  perfc_redis_opts_init(&ro);
  ro.port = srv.port;
  ro.command_timeout_ms = 100;
  ro.backoff_min_ms = 10;
  ro.backoff_max_ms = 50;
  ro.pool_size = 4;
  perfc_redis_pool *pa, *pb;
  ro.name = "a";
  CHECK(perfc_redis_pool_new(&pa, &ro) == 0);
  ro.name = "b";
  CHECK(perfc_redis_pool_new(&pb, &ro) == 0);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.retry_ms = 10;
  co.retry_max_ms = 50;
  co.l1_max_bytes = 16 * 1024; /* small: evictions under contention */
  co.name = "a";
  co.redis = pa;
  co.channel = "stress";
  perfc_cache *ca, *cb;
  CHECK(perfc_cache_new(&ca, &co) == 0);
  co.name = "b";
  co.redis = pb;
  CHECK(perfc_cache_new(&cb, &co) == 0);
  CHECK(perfc_cache_wait_subscribed(ca, 5000) == 0);
  CHECK(perfc_cache_wait_subscribed(cb, 5000) == 0);

  pthread_t t[8];
  int nt = 0;
  pthread_create(&t[nt++], NULL, reader, ca);
  pthread_create(&t[nt++], NULL, reader, ca);
  pthread_create(&t[nt++], NULL, reader, cb);
  pthread_create(&t[nt++], NULL, reader, cb);
  pthread_create(&t[nt++], NULL, writer, ca);
  pthread_create(&t[nt++], NULL, writer, cb);
  pthread_create(&t[nt++], NULL, stats_reader, ca);
  tr_sleep_ms(1500);
  tr_kill(&srv);
  tr_sleep_ms(500);
  CHECK(tr_restart(&srv) == 0);
  tr_sleep_ms(1500);
  atomic_store(&g_stop, 1);
  for (int i = 0; i < nt; i++)
    pthread_join(t[i], NULL);
  perfc_cache_stats sa, sb;
  perfc_cache_stats_get(ca, &sa);
  perfc_cache_stats_get(cb, &sb);
  printf("reads %ld loads %ld | a: l1 %llu/%llu l2 %llu/%llu shared %llu "
         "l2err %llu stale %llu remote %llu retries %llu | b: remote %llu\n",
         atomic_load(&g_reads), atomic_load(&g_loads),
         (unsigned long long)sa.l1_hits, (unsigned long long)sa.l1_misses,
         (unsigned long long)sa.l2_hits, (unsigned long long)sa.l2_misses,
         (unsigned long long)sa.singleflight_shared,
         (unsigned long long)sa.l2_errors,
         (unsigned long long)sa.stale_fills_refused,
         (unsigned long long)sa.remote_invalidations,
         (unsigned long long)sa.delete_retries,
         (unsigned long long)sb.remote_invalidations);
  CHECK(sa.l2_errors > 0); /* the kill was noticed */
  CHECK(sa.remote_invalidations > 0 && sb.remote_invalidations > 0);
  perfc_cache_free(cb);
  perfc_cache_free(ca);
  perfc_redis_pool_free(pb);
  perfc_redis_pool_free(pa);
  tr_stop(&srv);
  printf("ok\n");
  return 0;
}
