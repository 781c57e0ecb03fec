/*
 * l1_hits.c — microbenchmark: L1 cache hits per second with 1 and 2 threads
 * reading random keys out of one million entries (copy-out into a stack
 * buffer with perfc_l1cache_get_into, and with perfc_l1cache_get, which
 * mallocs the copy the caller then frees).
 *
 * Room: benchmarks (micro). Not built by CMake (bench/CMakeLists.txt belongs
 * to the benchmark suite); build by hand after building the runtime:
 *
 *   cc -O2 -pthread -I runtime/include bench/micro/l1_hits.c \
 *      -L build/lib -lperfc-data -lperfc -Wl,-rpath,$PWD/build/lib \
 *      -o build/l1_hits
 *   ./build/l1_hits [entries] [lookups-per-thread]
 *
 * Values are 64 bytes (a small encoded message); keys "user:<n>", formatted
 * once up front (snprintf costs more than a hit). Keys are drawn with a
 * per-thread xorshift generator, so lookups spread over all shards and most
 * of them miss the CPU caches, as a big cache does. The "baseline" line is
 * the same loop reading the key's bytes without a lookup: the cost of the
 * loop and of fetching a random key, to subtract.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "perfc/l1cache.h"

static perfc_l1cache *g_cache;
static long g_entries;
static long g_lookups;
static int g_mode; /* 0 get_into, 1 get (malloc), 2 baseline */
static char (*g_keys)[32];

typedef struct {
  unsigned seed;
  long hits;
  double cpu_s; /* this thread's CPU time in the loop */
} worker;

static double thread_cpu_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *run(void *arg) {
  worker *w = arg;
  uint64_t x = 0x9e3779b97f4a7c15ull ^ w->seed;
  uint8_t buf[128];
  size_t n;
  double c0 = thread_cpu_s();
  for (long i = 0; i < g_lookups; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const char *key = g_keys[x % (uint64_t)g_entries];
    if (g_mode == 2) {
      size_t len = 0;
      while (key[len])
        len++;
      w->hits += len > 0;
    } else if (g_mode == 1) {
      uint8_t *v;
      if (perfc_l1cache_get(g_cache, key, &v, &n, NULL) == 0) {
        w->hits++;
        free(v);
      }
    } else if (perfc_l1cache_get_into(g_cache, key, buf, sizeof buf, &n,
                                      NULL) == 0) {
      w->hits++;
    }
  }
  w->cpu_s = thread_cpu_s() - c0;
  return NULL;
}

static void measure(int threads, int mode) {
  static const char *const names[] = {
      "perfc_l1cache_get_into", "perfc_l1cache_get", "baseline (no lookup)"};
  pthread_t t[2];
  worker w[2];
  g_mode = mode;
  double t0 = now_s();
  for (int i = 0; i < threads; i++) {
    w[i].seed = (unsigned)(i + 1) * 7919u;
    w[i].hits = 0;
    pthread_create(&t[i], NULL, run, &w[i]);
  }
  long hits = 0;
  double cpu = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(t[i], NULL);
    hits += w[i].hits;
    cpu += w[i].cpu_s;
  }
  double dt = now_s() - t0;
  /* Wall-clock rate is what a caller sees; CPU ns per hit is steadier when
   * other processes share the cores. */
  printf("%-22s threads=%d hits=%ld  %6.2f Mhits/s wall  %5.0f ns/hit wall "
         "per thread  %5.0f ns CPU/hit\n",
         names[mode], threads, hits, (double)hits / dt / 1e6,
         dt * 1e9 / (double)g_lookups, cpu * 1e9 / (double)hits);
}

int main(int argc, char **argv) {
  g_entries = argc > 1 ? atol(argv[1]) : 1000000;
  g_lookups = argc > 2 ? atol(argv[2]) : 5000000;
  perfc_l1cache_opts o;
  perfc_l1cache_opts_init(&o);
  o.max_bytes = (size_t)1 << 30; /* room for every entry: measure hits */
  o.default_ttl_ms = 3600 * 1000;
  if (perfc_l1cache_new(&g_cache, &o) != 0)
    return 1;
  uint8_t val[64];
  memset(val, 0x5a, sizeof val);
  perfc_slice v = {val, sizeof val};
  g_keys = malloc((size_t)g_entries * sizeof *g_keys);
  if (!g_keys)
    return 1;
  for (long i = 0; i < g_entries; i++)
    snprintf(g_keys[i], sizeof g_keys[i], "user:%ld", i);
  double t0 = now_s();
  for (long i = 0; i < g_entries; i++)
    if (perfc_l1cache_set(g_cache, g_keys[i], v, 0) != 0)
      return 1;
  double dt = now_s() - t0;
  perfc_l1cache_stats st;
  perfc_l1cache_stats_get(g_cache, &st);
  printf("filled %llu entries, %.1f MiB accounted, %.2f Msets/s (1 thread)\n",
         (unsigned long long)st.entries, (double)st.bytes / 1048576.0,
         (double)g_entries / dt / 1e6);
  for (int threads = 1; threads <= 2; threads++) {
    measure(threads, 2);
    measure(threads, 0);
    measure(threads, 1);
  }
  perfc_l1cache_free(g_cache);
  free(g_keys);
  return 0;
}
