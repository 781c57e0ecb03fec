/*
 * pg_async_point_select.c — micro-benchmark: point selects through the
 * asynchronous client on one loop (perfc/pg_async.h) against the blocking
 * pool (perfc/pg.h), same statement, same server, same run: the client's
 * CPU per query and the pipelining factor.
 *
 * Room: benchmarks (micro). Not built by CMake; build by hand after
 * building the runtime:
 *
 *   cc -O2 -pthread -I runtime/include bench/micro/pg_async_point_select.c \
 *      -L build/lib -lperfc-data -lperfc -Wl,-rpath,$PWD/build/lib \
 *      -o build/pg_async_point_select
 *   d=$(mktemp -d); dsn=$(scripts/pg-up $d bench | tail -n1)
 *   ./build/pg_async_point_select "$dsn" [in_flight=64] [seconds=3]
 *   scripts/pg-down --rm $d
 *
 * The async side keeps `in_flight` queries outstanding on one loop thread
 * (each callback issues the next, so every iteration's results come back
 * and the next reads leave in one Sync); the pool side runs `in_flight`
 * threads (capped at 16, the pool's default size) each looping over
 * perfc_pg_exec(). Both select `SELECT $1::bigint * 2` as a prepared
 * statement (no table: the server's work is minimal, so the client's share
 * shows). CPU is the process's (getrusage), divided by queries. Client and
 * server share the machine: read the CPU per query, not the rate.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "perfc/loop.h"
#include "perfc/pg.h"
#include "perfc/pg_async.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double cpu_s(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec / 1e6;
}

static perfc_pg_async *pga;
static perfc_loop *loop;
static atomic_int stop_issuing;
static uint64_t done_q, failed_q, outstanding;

static void issue(void);

static void on_row(int rc, const perfc_pg_result *r, void *ud) {
  (void)ud;
  int64_t v;
  if (rc == 0 && perfc_pg_result_int64(r, 0, 0, &v) == 0)
    done_q++;
  else
    failed_q++;
  outstanding--;
  if (!atomic_load(&stop_issuing))
    issue();
  else if (outstanding == 0)
    perfc_loop_stop(loop);
}

static void issue(void) {
  static int64_t n;
  perfc_pg_param p[] = {perfc_pg_int64(++n)};
  perfc_pg_query q = {.name = "bench_dbl", .sql = "SELECT $1::bigint * 2",
                      .params = p, .nparams = 1,
                      .flags = PERFC_PG_READ | PERFC_PG_ONE};
  if (perfc_pg_async_query(pga, &q, on_row, NULL) == 0)
    outstanding++;
  else
    failed_q++;
}

static int window;

static void start_task(void *ud) {
  (void)ud;
  for (int i = 0; i < window; i++)
    issue();
}

static void *loop_main(void *ud) {
  (void)ud;
  perfc_loop_run(loop);
  return NULL;
}

typedef struct worker {
  pthread_t th;
  perfc_pg_pool *pool;
  uint64_t done;
} worker;

static atomic_int pool_stop;

static void *pool_main(void *ud) {
  worker *w = ud;
  int64_t n = 0;
  while (!atomic_load(&pool_stop)) {
    perfc_pg_param p[] = {perfc_pg_int64(++n)};
    perfc_pg_query q = {.name = "bench_dbl", .sql = "SELECT $1::bigint * 2",
                        .params = p, .nparams = 1, .flags = PERFC_PG_ONE};
    perfc_pg_result *r;
    if (perfc_pg_exec(w->pool, &q, &r) == 0) {
      w->done++;
      perfc_pg_result_free(r);
    }
  }
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s DSN [in_flight=64] [seconds=3]\n", argv[0]);
    return 2;
  }
  window = argc > 2 ? atoi(argv[2]) : 64;
  double secs = argc > 3 ? atof(argv[3]) : 3;
  if (window < 1)
    window = 1;

  /* The async client on one loop. */
  perfc_pg_async_opts o;
  perfc_pg_async_opts_init(&o);
  o.dsn = argv[1];
  if (perfc_pg_async_new(&pga, &o) != 0 || perfc_loop_new(&loop) != 0) {
    fprintf(stderr, "setup: %s\n", perfc_last_error());
    return 1;
  }
  pthread_t lt;
  perfc_loop_task *t;
  perfc_loop_task_new(&t, loop, start_task, NULL);
  double c0 = cpu_s(), t0 = now_s();
  pthread_create(&lt, NULL, loop_main, NULL);
  perfc_loop_task_post(t);
  struct timespec d = {(time_t)secs, (long)((secs - (time_t)secs) * 1e9)};
  nanosleep(&d, NULL);
  atomic_store(&stop_issuing, 1);
  pthread_join(lt, NULL);
  double a_wall = now_s() - t0, a_cpu = cpu_s() - c0;
  perfc_pg_async_stats st;
  perfc_pg_async_stats_get(pga, &st);
  perfc_loop_task_free(t);
  perfc_loop_free(loop);
  perfc_pg_async_free(pga);
  printf("async, %d in flight on 1 loop: %llu queries (%llu failed) in "
         "%.2f s: %.0f q/s, client CPU %.2f us/query, %.1f queries per Sync\n",
         window, (unsigned long long)done_q, (unsigned long long)failed_q,
         a_wall, done_q / a_wall, a_cpu * 1e6 / (done_q ? done_q : 1),
         (double)st.queries / (st.syncs ? st.syncs : 1));

  /* The blocking pool. */
  int threads = window > 16 ? 16 : window;
  perfc_pg_pool_opts po;
  perfc_pg_pool_opts_init(&po);
  po.dsn = argv[1];
  po.max_conns = (unsigned)threads;
  perfc_pg_pool *pool;
  if (perfc_pg_pool_new(&pool, &po) != 0) {
    fprintf(stderr, "pool: %s\n", perfc_last_error());
    return 1;
  }
  worker *w = calloc((size_t)threads, sizeof *w);
  c0 = cpu_s();
  t0 = now_s();
  for (int i = 0; i < threads; i++) {
    w[i].pool = pool;
    pthread_create(&w[i].th, NULL, pool_main, &w[i]);
  }
  nanosleep(&d, NULL);
  atomic_store(&pool_stop, 1);
  uint64_t total = 0;
  for (int i = 0; i < threads; i++) {
    pthread_join(w[i].th, NULL);
    total += w[i].done;
  }
  double p_wall = now_s() - t0, p_cpu = cpu_s() - c0;
  printf("pool, %d threads: %llu queries in %.2f s: %.0f q/s, client CPU "
         "%.2f us/query\n",
         threads, (unsigned long long)total, p_wall, total / p_wall,
         p_cpu * 1e6 / (total ? total : 1));
  free(w);
  perfc_pg_pool_free(pool);
  return 0;
}
