/*
 * pg_point_select.c — benchmark: pgbench's select-only transaction through
 * the perfc PostgreSQL pool, against pgbench itself at the same
 * concurrency, in the same run, on the same server.
 *
 * Room: benchmarks (micro). Not built by CMake (bench/CMakeLists.txt belongs
 * to the benchmark suite); build by hand after building the runtime:
 *
 *   cc -O2 -pthread -I runtime/include bench/micro/pg_point_select.c \
 *      -L build/lib -lperfc-data -lperfc -Wl,-rpath,$PWD/build/lib \
 *      -o build/pg_point_select
 *   d=$(mktemp -d); dsn=$(scripts/pg-up $d bench | tail -n1)
 *   ./build/pg_point_select "$dsn" [threads=16] [seconds=10] [pgbench-jobs=2]
 * [rounds=3] scripts/pg-down --rm $d
 *
 * What runs, in order:
 *   1. `pgbench -i -s 1` if pgbench_accounts is missing (100 000 rows).
 *   2. `pgbench -n -S -M prepared -c THREADS -j JOBS -T SECONDS DSN`: pgbench
 *      is the peer, written in C on the same libpq, prepared statements.
 *   3. THREADS threads, each looping over perfc_pg_exec() of pgbench's own
 *      statement, `SELECT abalance FROM pgbench_accounts WHERE aid = $1`,
 *      with aid uniform in [1, 100000 * scale] and PERFC_PG_ONE, through one
 *      pool of THREADS connections, for SECONDS after a warm-up in which
 *      every thread opens its connection and prepares the statement (pgbench
 *      too excludes connection time from its tps).
 * Steps 2 and 3 repeat ROUNDS times, alternating which goes first. It
 * prints both rates per round, their ratio, and the medians. Client and server
 * share the machine, so both numbers are bounded by the same CPUs: the ratio is
 * the result, not the absolute rate.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "perfc/pg.h"

#define MAX_ROUNDS 9
#define MAX_US 100000 /* latency histogram range, 1 µs buckets; beyond: last  \
                       */

typedef struct worker {
  pthread_t th;
  perfc_pg_pool *pool;
  uint64_t seed;
  uint64_t done, failed;
  uint32_t *hist;
} worker;

static int64_t g_rows = 100000;
static atomic_int g_stop;
static pthread_barrier_t g_ready, g_go;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

static int point_select(worker *w) {
  perfc_pg_param aid =
      perfc_pg_int64(1 + (int64_t)(xorshift(&w->seed) % (uint64_t)g_rows));
  perfc_pg_query q = {
      .name = "pgbench_select",
      .sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
      .params = &aid,
      .nparams = 1,
      .flags = PERFC_PG_ONE};
  perfc_pg_result *r;
  int st = perfc_pg_exec(w->pool, &q, &r);
  if (st == 0) {
    int64_t balance;
    if (perfc_pg_result_int64(r, 0, 0, &balance) != 0)
      st = PERFC_EPARSE;
    perfc_pg_result_free(r);
  }
  return st;
}

static void *run(void *arg) {
  worker *w = arg;
  /* Warm-up: hold a connection until every thread has one, so the pool
   * really opens THREADS connections, then prepare on each. */
  perfc_pg_conn *c;
  if (perfc_pg_acquire(w->pool, 0, &c) == 0) {
    pthread_barrier_wait(&g_ready);
    perfc_pg_release(c);
  } else {
    pthread_barrier_wait(&g_ready);
  }
  for (int i = 0; i < 50; i++)
    point_select(w);
  pthread_barrier_wait(&g_go);
  while (!atomic_load_explicit(&g_stop, memory_order_relaxed)) {
    double t0 = now_s();
    if (point_select(w) != 0) {
      w->failed++;
      continue;
    }
    double us = (now_s() - t0) * 1e6;
    w->hist[us >= MAX_US ? MAX_US - 1 : (int)us]++;
    w->done++;
  }
  return NULL;
}

/* Runs a shell command and returns its stdout (malloc'd), or NULL. */
static char *capture(const char *cmd) {
  FILE *f = popen(cmd, "r");
  if (!f)
    return NULL;
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  size_t n;
  while (buf && (n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len < 1024) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) {
        free(buf);
        buf = NULL;
      }
      buf = nb;
    }
  }
  if (buf)
    buf[len] = '\0';
  if (pclose(f) != 0) {
    if (buf)
      fputs(buf, stderr);
    free(buf);
    return NULL;
  }
  return buf;
}

/* CPU seconds (user + system) of this process, or of its waited-for
 * descendants (pgbench under popen's shell). */
static double cpu_s(int who) {
  struct rusage ru;
  getrusage(who, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

static int run_pgbench(const char *dsn, int threads, int jobs, int seconds,
                       double *tps, double *lat, double *cpu_us) {
  char cmd[2048];
  double c0 = cpu_s(RUSAGE_CHILDREN);
  snprintf(cmd, sizeof cmd,
           "pgbench -n -S -M prepared -c %d -j %d -T %d '%s' 2>&1", threads,
           jobs, seconds, dsn);
  char *out = capture(cmd);
  if (!out) {
    fprintf(stderr, "pgbench failed: %s\n", cmd);
    return -1;
  }
  char *p = strstr(out, "latency average = ");
  *lat = p ? atof(p + strlen("latency average = ")) : 0;
  p = strstr(out, "tps = ");
  *tps = p ? atof(p + strlen("tps = ")) : 0;
  p = strstr(out, "number of transactions actually processed: ");
  double n =
      p ? atof(p + strlen("number of transactions actually processed: ")) : 0;
  /* pgbench's CPU includes its connection set-up; small against 10 s. */
  *cpu_us = n > 0 ? (cpu_s(RUSAGE_CHILDREN) - c0) / n * 1e6 : 0;
  free(out);
  return *tps > 0 ? 0 : -1;
}

/* One timed run through the pool; prints a line, returns failed calls. */
static uint64_t run_perfc(perfc_pg_pool *pool, int threads, int seconds,
                          double *tps) {
  worker *w = calloc((size_t)threads, sizeof *w);
  atomic_store(&g_stop, 0);
  pthread_barrier_init(&g_ready, NULL, (unsigned)threads);
  pthread_barrier_init(&g_go, NULL, (unsigned)threads + 1);
  for (int i = 0; i < threads; i++) {
    w[i].pool = pool;
    w[i].seed =
        0x9E3779B97F4A7C15ull * (uint64_t)(i + 1) + (uint64_t)time(NULL);
    w[i].hist = calloc(MAX_US, sizeof *w[i].hist);
    pthread_create(&w[i].th, NULL, run, &w[i]);
  }
  pthread_barrier_wait(&g_go);
  double t0 = now_s();
  double c0 = cpu_s(RUSAGE_SELF);
  struct timespec dur = {seconds, 0};
  nanosleep(&dur, NULL);
  atomic_store(&g_stop, 1);
  uint64_t done = 0, failed = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(w[i].th, NULL);
    done += w[i].done;
    failed += w[i].failed;
  }
  double elapsed = now_s() - t0;
  double cpu_us = done ? (cpu_s(RUSAGE_SELF) - c0) / done * 1e6 : 0;
  uint64_t p50 = 0, p99 = 0, seen = 0;
  for (int us = 0; us < MAX_US; us++) {
    uint64_t n = 0;
    for (int i = 0; i < threads; i++)
      n += w[i].hist[us];
    seen += n;
    if (!p50 && seen * 2 >= done)
      p50 = (uint64_t)us + 1;
    if (!p99 && seen * 100 >= done * 99)
      p99 = (uint64_t)us + 1;
  }
  *tps = done / elapsed;
  printf(
      "         perfc pg pool, %d threads      : %8.0f tps  latency avg %.3f "
      "ms  "
      "client CPU %.1f us/query  p50 <%llu us  p99 <%llu us  (%llu failed)\n",
      threads, *tps, done ? elapsed * threads / done * 1e3 : 0.0, cpu_us,
      (unsigned long long)p50, (unsigned long long)p99,
      (unsigned long long)failed);
  for (int i = 0; i < threads; i++)
    free(w[i].hist);
  free(w);
  pthread_barrier_destroy(&g_ready);
  pthread_barrier_destroy(&g_go);
  return failed;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

static double median(double *v, int n) {
  double s[MAX_ROUNDS];
  memcpy(s, v, sizeof(double) * (size_t)n);
  qsort(s, (size_t)n, sizeof s[0], cmp_double);
  return n % 2 ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(
        stderr,
        "usage: %s DSN [threads=16] [seconds=10] [pgbench-jobs=2] [rounds=3]\n",
        argv[0]);
    return 2;
  }
  const char *dsn = argv[1];
  int threads = argc > 2 ? atoi(argv[2]) : 16;
  int seconds = argc > 3 ? atoi(argv[3]) : 10;
  int jobs = argc > 4 ? atoi(argv[4]) : 2;
  int rounds = argc > 5 ? atoi(argv[5]) : 3;
  if (threads < 1 || seconds < 1 || jobs < 1 || jobs > threads || rounds < 1 ||
      rounds > MAX_ROUNDS) {
    fprintf(stderr, "bad threads/seconds/jobs\n");
    return 2;
  }

  perfc_pg_pool_opts o;
  perfc_pg_pool_opts_init(&o);
  o.dsn = dsn;
  o.max_conns = (unsigned)threads;
  o.name = "bench";
  perfc_pg_pool *pool;
  if (perfc_pg_pool_new(&pool, &o) != 0)
    return 1;

  /* 1. Data. */
  perfc_pg_query has = {
      .sql = "SELECT count(*) FROM pg_class WHERE relname = 'pgbench_accounts'",
      .flags = PERFC_PG_ONE};
  perfc_pg_result *r;
  if (perfc_pg_exec(pool, &has, &r) != 0) {
    fprintf(stderr, "cannot query: %s\n", perfc_last_error());
    return 1;
  }
  int exists = strcmp(perfc_pg_result_text(r, 0, 0), "0") != 0;
  perfc_pg_result_free(r);
  char cmd[2048];
  if (!exists) {
    snprintf(cmd, sizeof cmd, "pgbench -i -q -s 1 '%s' 2>&1", dsn);
    char *out = capture(cmd);
    if (!out) {
      fprintf(stderr, "pgbench -i failed\n");
      return 1;
    }
    free(out);
  }
  perfc_pg_query cnt = {.sql = "SELECT count(*) FROM pgbench_accounts",
                        .flags = PERFC_PG_ONE};
  if (perfc_pg_exec(pool, &cnt, &r) != 0 ||
      perfc_pg_result_int64(r, 0, 0, &g_rows) != 0 || g_rows < 1) {
    fprintf(stderr, "cannot count pgbench_accounts: %s\n",
            perfc_last_error());
    return 1;
  }
  perfc_pg_result_free(r);

  /* 2 and 3, ROUNDS times, alternating which goes first: the machine is
   * shared and noisy, so one pair of numbers proves little. */
  double pg_tps[MAX_ROUNDS] = {0}, pf_tps[MAX_ROUNDS] = {0};
  uint64_t failed = 0;
  for (int round = 0; round < rounds; round++) {
    for (int k = 0; k < 2; k++) {
      int peer_turn = (k == 0) == (round % 2 == 0);
      if (peer_turn) {
        double lat, cpu;
        if (run_pgbench(dsn, threads, jobs, seconds, &pg_tps[round], &lat,
                        &cpu) != 0)
          return 1;
        printf("round %d  pgbench -S -M prepared -c %d -j %d: %8.0f tps  "
               "latency avg %.3f ms  "
               "client CPU %.1f us/query\n",
               round + 1, threads, jobs, pg_tps[round], lat, cpu);
      } else {
        failed += run_perfc(pool, threads, seconds, &pf_tps[round]);
      }
      fflush(stdout);
    }
    printf("round %d  ratio perfc/pgbench: %.3f\n", round + 1,
           pf_tps[round] / pg_tps[round]);
  }
  double mp = median(pg_tps, rounds), mf = median(pf_tps, rounds);
  printf(
      "median over %d rounds: pgbench %.0f tps, perfc %.0f tps, ratio %.3f\n",
      rounds, mp, mf, mf / mp);
  perfc_pg_pool_free(pool);
  return failed ? 1 : 0;
}
