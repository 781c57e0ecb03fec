/*
 * metrics_inc.c — microbenchmark: nanoseconds per metrics update with 1 and
 * 2 threads updating the SAME series, against a shared atomic counter as
 * the naive baseline (what per-thread cells avoid).
 *
 * Room: benchmarks (micro). Not built by CMake (bench/CMakeLists.txt belongs
 * to the benchmark suite); build by hand after building the runtime:
 *
 *   cc -O2 -pthread -I runtime/include bench/micro/metrics_inc.c \
 *      -L build/lib -lperfc -Wl,-rpath,$PWD/build/lib -o build/metrics_inc
 *   ./build/metrics_inc [iterations-per-thread]
 *
 * Each thread runs N updates. "wall ns/op" is wall time divided by the
 * updates one thread did, i.e. the cost a caller sees per update while the
 * other threads hammer the same series; "cpu ns/op" is each thread's own
 * CPU time per update (mean over threads), which stays meaningful when
 * other processes compete for the cores.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "perfc/metrics.h"
#include "perfc/process_metrics.h"

enum op { OP_COUNTER, OP_HISTOGRAM, OP_GAUGE, OP_GAUGE_SET, OP_SHARED_ATOMIC };
static const char *op_names[] = {"perfc_counter_inc", "perfc_histogram_observe",
                                 "perfc_gauge_inc", "perfc_gauge_set",
                                 "shared atomic_fetch_add"};

static perfc_counter *g_counter;
static perfc_histogram *g_hist;
static perfc_gauge *g_gauge;
static _Atomic uint64_t g_shared;
static long g_iters;
static enum op g_op;
static pthread_barrier_t g_start;

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static double thread_cpu_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void *run(void *arg) {
  double *cpu = arg;
  pthread_barrier_wait(&g_start);
  double c0 = thread_cpu_ns();
  long n = g_iters;
  switch (g_op) {
  case OP_COUNTER:
    for (long i = 0; i < n; i++)
      perfc_counter_inc(g_counter);
    break;
  case OP_HISTOGRAM:
    for (long i = 0; i < n; i++)
      perfc_histogram_observe(g_hist, (double)(i & 1023) * 1e-4);
    break;
  case OP_GAUGE:
    for (long i = 0; i < n; i++)
      perfc_gauge_inc(g_gauge);
    break;
  case OP_GAUGE_SET:
    for (long i = 0; i < n; i++)
      perfc_gauge_set(g_gauge, (double)i);
    break;
  case OP_SHARED_ATOMIC:
    for (long i = 0; i < n; i++)
      atomic_fetch_add_explicit(&g_shared, 1, memory_order_relaxed);
    break;
  }
  *cpu = thread_cpu_ns() - c0;
  return NULL;
}

/* Returns wall ns per op; *cpu_ns gets the threads' mean CPU ns per op,
 * which stays meaningful when other processes share the cores. */
static double measure(enum op op, int threads, double *cpu_ns) {
  pthread_t t[16];
  double cpu[16] = {0};
  g_op = op;
  pthread_barrier_init(&g_start, NULL, (unsigned)threads + 1);
  for (int i = 0; i < threads; i++)
    pthread_create(&t[i], NULL, run, &cpu[i]);
  double t0 = now_ns();
  pthread_barrier_wait(&g_start);
  for (int i = 0; i < threads; i++)
    pthread_join(t[i], NULL);
  double dt = now_ns() - t0;
  pthread_barrier_destroy(&g_start);
  double sum = 0;
  for (int i = 0; i < threads; i++)
    sum += cpu[i];
  *cpu_ns = sum / threads / (double)g_iters;
  return dt / (double)g_iters;
}

/* ---- scrape cost: a go-grpc-prometheus-sized registry, 8 live threads ---- */

#define METHODS 20
#define CODES 17
#define PARKED 8
static perfc_counter *g_handled[METHODS * CODES];
static perfc_histogram *g_lat[METHODS];
static pthread_barrier_t g_touched, g_release;

static void *parked(void *arg) {
  (void)arg;
  for (int i = 0; i < METHODS * CODES; i++)
    perfc_counter_inc(g_handled[i]);
  for (int i = 0; i < METHODS; i++)
    perfc_histogram_observe(g_lat[i], 0.003);
  pthread_barrier_wait(&g_touched);
  pthread_barrier_wait(&g_release); /* stay alive: cells stay per-thread */
  return NULL;
}

static void measure_scrape(void) {
  perfc_metrics_registry *reg;
  perfc_metrics_family *fh, *fl;
  const char *ln[] = {"grpc_method", "grpc_code"};
  perfc_metrics_family_opts o;
  perfc_metrics_family_opts_init(&o);
  o.name = "grpc_server_handled_total";
  o.help = "Handled.";
  o.label_names = ln;
  o.label_count = 2;
  if (perfc_metrics_registry_new(&reg) ||
      perfc_metrics_family_new(&fh, reg, PERFC_METRICS_COUNTER, &o))
    exit(1);
  o.name = "grpc_server_handling_seconds";
  o.label_count = 1;
  if (perfc_metrics_family_new(&fl, reg, PERFC_METRICS_HISTOGRAM, &o))
    exit(1);
  for (int m = 0; m < METHODS; m++) {
    char mn[16], cn[16];
    snprintf(mn, sizeof mn, "Method%02d", m);
    for (int c = 0; c < CODES; c++) {
      snprintf(cn, sizeof cn, "Code%02d", c);
      if (perfc_counter_get(&g_handled[m * CODES + c], fh,
                            (const char *const[]){mn, cn}))
        exit(1);
    }
    if (perfc_histogram_get(&g_lat[m], fl, (const char *const[]){mn}))
      exit(1);
  }
  perfc_process_metrics_register(reg);
  pthread_t t[PARKED];
  pthread_barrier_init(&g_touched, NULL, PARKED + 1);
  pthread_barrier_init(&g_release, NULL, PARKED + 1);
  for (int i = 0; i < PARKED; i++)
    pthread_create(&t[i], NULL, parked, NULL);
  pthread_barrier_wait(&g_touched);
  int reps = 200;
  size_t len = 0;
  double t0 = now_ns();
  for (int i = 0; i < reps; i++) {
    char *out;
    if (perfc_metrics_registry_render(reg, &out, &len))
      exit(1);
    free(out);
  }
  double us = (now_ns() - t0) / reps / 1e3;
  pthread_barrier_wait(&g_release);
  for (int i = 0; i < PARKED; i++)
    pthread_join(t[i], NULL);
  printf("render: %d counter + %d histogram series (+process), %d live "
         "threads: %.1f us per scrape, %zu bytes\n",
         METHODS * CODES, METHODS, PARKED, us, len);
  pthread_barrier_destroy(&g_touched);
  pthread_barrier_destroy(&g_release);
  perfc_metrics_registry_free(reg);
}

int main(int argc, char **argv) {
  g_iters = argc > 1 ? atol(argv[1]) : 100000000L;
  perfc_metrics_registry *reg;
  if (perfc_metrics_registry_new(&reg) ||
      perfc_counter_new(&g_counter, reg, "c_total", "") ||
      perfc_histogram_new(&g_hist, reg, "h_seconds", "", NULL, 0) ||
      perfc_gauge_new(&g_gauge, reg, "g", "")) {
    fprintf(stderr, "registration failed\n");
    return 1;
  }
  printf("%-26s %8s %12s %12s\n", "operation", "threads", "wall ns/op",
         "cpu ns/op");
  uint64_t expect = 0;
  for (int op = 0; op <= OP_SHARED_ATOMIC; op++) {
    for (int threads = 1; threads <= 2; threads++) {
      double cpu;
      double ns = measure((enum op)op, threads, &cpu);
      printf("%-26s %8d %12.2f %12.2f\n", op_names[op], threads, ns, cpu);
      if (op == OP_COUNTER)
        expect += (uint64_t)threads * (uint64_t)g_iters;
    }
  }
  /* The point of the exercise is exactness without locks: check it. */
  uint64_t got = perfc_counter_value(g_counter);
  printf("counter total %llu (expected %llu): %s\n", (unsigned long long)got,
         (unsigned long long)expect, got == expect ? "exact" : "WRONG");
  perfc_metrics_registry_free(reg);
  measure_scrape();
  return got == expect ? 0 : 1;
}
