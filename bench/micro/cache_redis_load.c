/*
 * cache_redis_load.c — benchmark: perfc_cache_get_or_load() answered from
 * Redis (L2) against redis-benchmark's GET at the same concurrency, in the
 * same run, on the same redis-server.
 *
 * Room: benchmarks (micro). Not built by CMake (bench/CMakeLists.txt belongs
 * to the benchmark suite); build by hand after building the runtime:
 *
 *   cc -O2 -pthread -I runtime/include bench/micro/cache_redis_load.c \
 *      -L build/lib -lperfc-data -lperfc -Wl,-rpath,$PWD/build/lib \
 *      -o build/cache_redis_load
 *   d=$(mktemp -d); (cd $d && redis-server --port 6390 --save '' \
 *       --appendonly no --daemonize yes)
 *   ./build/cache_redis_load 6390 [threads=16] [seconds=10] [rounds=3]
 *   redis-cli -p 6390 shutdown nosave
 *
 * What runs, in order:
 *   1. Fill: 10 000 keys "key:%012d" (redis-benchmark's own key names for
 *      -r 10000) with 64-byte values through get_or_load, so Redis holds
 *      them as the cache stores them.
 *   2. `redis-benchmark -p PORT -t get -c THREADS -n N -r 10000 -q`: the
 *      peer, GET on the same keys over THREADS connections, with N sized
 *      to run about SECONDS.
 *   3. THREADS threads each loop over get_or_load on random keys for
 *      SECONDS. L1 is off (no_l1), so every call is a single-flight slot
 *      and one Redis round trip (the get-or-lease script, EVAL); the
 *      loader is never called (counted and printed: it must be 0).
 * Steps 2 and 3 repeat ROUNDS times, alternating which goes first; it
 * prints both rates, their ratio and the medians. Client and server share
 * the machine, so the ratio is the result, not the absolute rate.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "perfc/cache.h"
#include "perfc/redis.h"

#define N_KEYS 10000
#define VALUE_LEN 64

static perfc_cache *g_cache;
static atomic_long g_loads;
static atomic_int g_stop;
static int g_port;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int loader(const char *key, uint8_t **out, size_t *out_len,
                  void *user_data) {
  (void)key, (void)user_data;
  atomic_fetch_add(&g_loads, 1);
  uint8_t *v = malloc(VALUE_LEN);
  if (!v)
    return PERFC_ENOMEM;
  memset(v, 'v', VALUE_LEN);
  *out = v;
  *out_len = VALUE_LEN;
  return 0;
}

typedef struct worker {
  unsigned seed;
  long calls, errors;
} worker;

static void *run(void *arg) {
  worker *w = arg;
  char key[32];
  while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
    w->seed ^= w->seed << 13, w->seed ^= w->seed >> 17, w->seed ^= w->seed << 5;
    snprintf(key, sizeof key, "key:%012u", w->seed % N_KEYS);
    uint8_t *v = NULL;
    size_t n = 0;
    if (perfc_cache_get_or_load(g_cache, key, loader, NULL, &v, &n) != 0)
      w->errors++;
    free(v);
    w->calls++;
  }
  return NULL;
}

static double perfc_round(int threads, int seconds, long *errors) {
  pthread_t th[64];
  worker w[64];
  atomic_store(&g_stop, 0);
  for (int i = 0; i < threads; i++) {
    w[i] = (worker){(unsigned)(i * 2654435761u + 1u), 0, 0};
    pthread_create(&th[i], NULL, run, &w[i]);
  }
  double t0 = now_s();
  struct timespec d = {seconds, 0};
  nanosleep(&d, NULL);
  atomic_store(&g_stop, 1);
  long calls = 0;
  *errors = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(th[i], NULL);
    calls += w[i].calls;
    *errors += w[i].errors;
  }
  return (double)calls / (now_s() - t0);
}

/* Runs redis-benchmark for about `seconds` (N from the last rate seen). */
static double peer_round(int threads, long n) {
  char cmd[256];
  snprintf(cmd, sizeof cmd,
           "redis-benchmark -p %d -t get -c %d -n %ld -r %d -q 2>/dev/null",
           g_port, threads, n, N_KEYS);
  FILE *p = popen(cmd, "r");
  if (!p)
    return -1;
  char line[512];
  double rps = -1;
  while (fgets(line, sizeof line, p)) {
    /* redis-benchmark -q prints progress with '\r' then "GET: X requests
     * per second..." */
    char *s = strstr(line, "GET: ");
    char *last = NULL;
    while (s) {
      last = s;
      s = strstr(s + 1, "GET: ");
    }
    if (last)
      rps = strtod(last + 5, NULL);
  }
  pclose(p);
  return rps;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PORT [threads=16] [seconds=10] [rounds=3]\n",
            argv[0]);
    return 2;
  }
  g_port = atoi(argv[1]);
  int threads = argc > 2 ? atoi(argv[2]) : 16;
  int seconds = argc > 3 ? atoi(argv[3]) : 10;
  int rounds = argc > 4 ? atoi(argv[4]) : 3;
  if (threads < 1 || threads > 64 || seconds < 1 || rounds < 1 || rounds > 9)
    return 2;

  perfc_redis_pool *pool;
  perfc_redis_opts ro;
  perfc_redis_opts_init(&ro);
  ro.port = g_port;
  ro.pool_size = (unsigned)threads;
  if (perfc_redis_pool_new(&pool, &ro) != 0)
    return 1;
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.redis = pool;
  co.no_subscribe = 1;
  co.l1_shards = 1;
  co.no_l1 = true; /* every read goes to Redis */
  if (perfc_cache_new(&g_cache, &co) != 0)
    return 1;

  char key[32];
  for (int i = 0; i < N_KEYS; i++) {
    uint8_t *v = NULL;
    size_t n = 0;
    snprintf(key, sizeof key, "key:%012d", i);
    if (perfc_cache_get_or_load(g_cache, key, loader, NULL, &v, &n) != 0) {
      fprintf(stderr, "fill failed at %s\n", key);
      return 1;
    }
    free(v);
  }
  long filled = atomic_load(&g_loads);
  atomic_store(&g_loads, 0);
  printf("fill: %d keys, %ld loaded (the rest were already in Redis); %d "
         "threads, %d s per side, %d rounds\n",
         N_KEYS, filled, threads, seconds, rounds);

  double pr[9], rr[9], ratio[9];
  long n_peer = 200000;
  for (int r = 0; r < rounds; r++) {
    long errors = 0;
    double peer, ours;
    if (r % 2 == 0) {
      peer = peer_round(threads, n_peer);
      ours = perfc_round(threads, seconds, &errors);
    } else {
      ours = perfc_round(threads, seconds, &errors);
      peer = peer_round(threads, n_peer);
    }
    if (peer > 0)
      n_peer = (long)(peer * seconds);
    pr[r] = ours, rr[r] = peer, ratio[r] = peer > 0 ? ours / peer : 0;
    printf("round %d: redis-benchmark GET %.0f req/s, perfc get_or_load "
           "(L2) %.0f calls/s, ratio %.2f, errors %ld\n",
           r + 1, peer, ours, ratio[r], errors);
    fflush(stdout);
  }
  perfc_cache_stats st;
  perfc_cache_stats_get(g_cache, &st);
  printf("loader calls during the rounds: %ld; l1_hits %llu, l2_hits %llu, "
         "l2_errors %llu\n",
         atomic_load(&g_loads), (unsigned long long)st.l1_hits,
         (unsigned long long)st.l2_hits, (unsigned long long)st.l2_errors);
  qsort(pr, (size_t)rounds, sizeof pr[0], cmp_d);
  qsort(rr, (size_t)rounds, sizeof rr[0], cmp_d);
  qsort(ratio, (size_t)rounds, sizeof ratio[0], cmp_d);
  printf("median: redis-benchmark %.0f, perfc %.0f, ratio of medians %.2f, "
         "median ratio %.2f\n",
         rr[rounds / 2], pr[rounds / 2], pr[rounds / 2] / rr[rounds / 2],
         ratio[rounds / 2]);
  perfc_cache_free(g_cache);
  perfc_redis_pool_free(pool);
  return 0;
}
