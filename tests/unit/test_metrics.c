/*
 * test_metrics.c — unit tests for runtime/src/observe/metrics.c: exact text
 * exposition, name validation, registration rules, and exact sums from many
 * threads (including threads that exit before the scrape).
 *
 * Room: unit tests (metrics module).
 */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "perfc/metrics.h"
#include "core/clock_internal.h"
#include "observe/metrics_internal.h"

#include <time.h>

static char *render(perfc_metrics_registry *reg) {
  char *out = NULL;
  size_t len = 0;
  cr_assert_eq(perfc_metrics_registry_render(reg, &out, &len), 0);
  cr_assert_eq(strlen(out), len);
  return out;
}

static void assert_render(perfc_metrics_registry *reg, const char *want) {
  char *got = render(reg);
  cr_assert_str_eq(got, want);
  free(got);
}

Test(metrics, empty_registry_renders_empty) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  assert_render(reg, "");
  perfc_metrics_registry_free(reg);
  perfc_metrics_registry_free(NULL);
}

Test(metrics, counter_with_labels_and_escaping) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  const char *labels[] = {"method", "code"};
  perfc_metrics_family_opts o;
  perfc_metrics_family_opts_init(&o);
  o.name = "rpc_total";
  o.help = "RPCs handled.\nBack\\slash \"quotes\" kept.";
  o.label_names = labels;
  o.label_count = 2;
  perfc_metrics_family *f;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_COUNTER, &o), 0);

  perfc_counter *a, *b, *c, *a2;
  cr_assert_eq(perfc_counter_get(&b, f, (const char *[]){"b", "OK"}), 0);
  cr_assert_eq(perfc_counter_get(&a, f, (const char *[]){"a\"q\\\n", "OK"}), 0);
  cr_assert_eq(perfc_counter_get(&c, f, (const char *[]){"a", "OK"}), 0);
  cr_assert_eq(perfc_counter_get(&a2, f, (const char *[]){"a\"q\\\n", "OK"}),
               0);
  cr_assert_eq(a, a2, "same label values must give the same handle");
  perfc_counter_inc(a);
  perfc_counter_add(a, 41);
  perfc_counter_add(b, 18446744073709551615ull);
  cr_assert_eq(perfc_counter_value(a), 42);
  assert_render(reg,
                "# HELP rpc_total RPCs handled.\\nBack\\\\slash \"quotes\" "
                "kept.\n"
                "# TYPE rpc_total counter\n"
                "rpc_total{method=\"a\",code=\"OK\"} 0\n"
                "rpc_total{method=\"a\\\"q\\\\\\n\",code=\"OK\"} 42\n"
                "rpc_total{method=\"b\",code=\"OK\"} 18446744073709551615\n");
  perfc_metrics_registry_free(reg);
}

Test(metrics, families_sorted_and_gauges) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_gauge *z, *nan, *pinf, *ninf, *frac, *big;
  cr_assert_eq(perfc_gauge_new(&z, reg, "zeta", "last"), 0);
  cr_assert_eq(perfc_gauge_new(&nan, reg, "g_nan", NULL), 0);
  cr_assert_eq(perfc_gauge_new(&pinf, reg, "g_pinf", ""), 0);
  cr_assert_eq(perfc_gauge_new(&ninf, reg, "g_ninf", ""), 0);
  cr_assert_eq(perfc_gauge_new(&frac, reg, "g_frac", ""), 0);
  cr_assert_eq(perfc_gauge_new(&big, reg, "g_big", ""), 0);
  perfc_gauge_set(z, 3);
  perfc_gauge_inc(z);
  perfc_gauge_dec(z);
  perfc_gauge_dec(z);
  perfc_gauge_add(z, -10.5);
  perfc_gauge_set(nan, NAN);
  perfc_gauge_set(pinf, INFINITY);
  perfc_gauge_set(ninf, -INFINITY);
  perfc_gauge_set(frac, 0.1);
  perfc_gauge_set(big, 1e20);
  cr_assert_float_eq(perfc_gauge_value(z), -8.5, 1e-12);
  assert_render(reg, "# TYPE g_big gauge\n"
                     "g_big 1e+20\n"
                     "# TYPE g_frac gauge\n"
                     "g_frac 0.1\n"
                     "# TYPE g_nan gauge\n"
                     "g_nan NaN\n"
                     "# TYPE g_ninf gauge\n"
                     "g_ninf -Inf\n"
                     "# TYPE g_pinf gauge\n"
                     "g_pinf +Inf\n"
                     "# HELP zeta last\n"
                     "# TYPE zeta gauge\n"
                     "zeta -8.5\n");
  perfc_metrics_registry_free(reg);
}

static double answer(void *ud) { return *(double *)ud; }
static int freed;
static void count_free(void *ud) {
  (void)ud;
  freed++;
}

Test(metrics, gauge_and_counter_funcs) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  double depth = 7, cpu = 1.25;
  cr_assert_eq(
      perfc_gauge_func_new(reg, "pool_depth", "Queued jobs.", answer, &depth),
      0);
  const char *ln[] = {"pool"};
  perfc_metrics_family_opts o;
  perfc_metrics_family_opts_init(&o);
  o.name = "pool_cpu_seconds_total";
  o.label_names = ln;
  o.label_count = 1;
  perfc_metrics_family *f;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_COUNTER, &o), 0);
  freed = 0;
  cr_assert_eq(perfc_metrics_family_add_func(f, (const char *[]){"w"}, answer,
                                             &cpu, count_free),
               0);
  /* Same values again: EEXIST, and its free_fn is not called. */
  cr_assert_eq(perfc_metrics_family_add_func(f, (const char *[]){"w"}, answer,
                                             &cpu, count_free),
               PERFC_EEXIST);
  perfc_counter *c;
  cr_assert_eq(perfc_counter_get(&c, f, (const char *[]){"w"}), PERFC_EINVAL);
  cr_assert_eq(perfc_counter_get(&c, f, (const char *[]){"x"}), 0);
  perfc_counter_inc(c);
  depth = 9;
  assert_render(reg, "# TYPE pool_cpu_seconds_total counter\n"
                     "pool_cpu_seconds_total{pool=\"w\"} 1.25\n"
                     "pool_cpu_seconds_total{pool=\"x\"} 1\n"
                     "# HELP pool_depth Queued jobs.\n"
                     "# TYPE pool_depth gauge\n"
                     "pool_depth 9\n");
  perfc_metrics_registry_free(reg);
  cr_assert_eq(freed, 1);
}

Test(metrics, histogram_custom_buckets_with_labels) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  const double bounds[] = {0.1, 1, 2.5, INFINITY};
  const char *ln[] = {"path"};
  perfc_metrics_family_opts o;
  perfc_metrics_family_opts_init(&o);
  o.name = "req_seconds";
  o.help = "Latency.";
  o.label_names = ln;
  o.label_count = 1;
  o.buckets = bounds;
  o.bucket_count = 4;
  perfc_metrics_family *f;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_HISTOGRAM, &o),
               0);
  perfc_histogram *h;
  cr_assert_eq(perfc_histogram_get(&h, f, (const char *[]){"/x"}), 0);
  perfc_histogram_observe(h, 0.05);
  perfc_histogram_observe(h, 0.1); /* le is inclusive */
  perfc_histogram_observe(h, 2);
  perfc_histogram_observe(h, 100);
  uint64_t n;
  double sum;
  perfc_histogram_value(h, &n, &sum);
  cr_assert_eq(n, 4);
  cr_assert_float_eq(sum, 102.15, 1e-9);
  assert_render(reg, "# HELP req_seconds Latency.\n"
                     "# TYPE req_seconds histogram\n"
                     "req_seconds_bucket{path=\"/x\",le=\"0.1\"} 2\n"
                     "req_seconds_bucket{path=\"/x\",le=\"1\"} 2\n"
                     "req_seconds_bucket{path=\"/x\",le=\"2.5\"} 3\n"
                     "req_seconds_bucket{path=\"/x\",le=\"+Inf\"} 4\n"
                     "req_seconds_sum{path=\"/x\"} 102.15\n"
                     "req_seconds_count{path=\"/x\"} 4\n");
  perfc_metrics_registry_free(reg);
}

Test(metrics, histogram_default_buckets) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_histogram *h;
  cr_assert_eq(perfc_histogram_new(&h, reg, "lat_seconds", NULL, NULL, 0), 0);
  perfc_histogram_observe(h, 0.003);
  perfc_histogram_observe(h, 0.3);
  perfc_histogram_observe(h, NAN);
  char *got = render(reg);
  cr_assert_str_eq(got, "# TYPE lat_seconds histogram\n"
                        "lat_seconds_bucket{le=\"0.005\"} 1\n"
                        "lat_seconds_bucket{le=\"0.01\"} 1\n"
                        "lat_seconds_bucket{le=\"0.025\"} 1\n"
                        "lat_seconds_bucket{le=\"0.05\"} 1\n"
                        "lat_seconds_bucket{le=\"0.1\"} 1\n"
                        "lat_seconds_bucket{le=\"0.25\"} 1\n"
                        "lat_seconds_bucket{le=\"0.5\"} 2\n"
                        "lat_seconds_bucket{le=\"1\"} 2\n"
                        "lat_seconds_bucket{le=\"2.5\"} 2\n"
                        "lat_seconds_bucket{le=\"5\"} 2\n"
                        "lat_seconds_bucket{le=\"10\"} 2\n"
                        "lat_seconds_bucket{le=\"+Inf\"} 3\n"
                        "lat_seconds_sum NaN\n"
                        "lat_seconds_count 3\n");
  free(got);
  perfc_metrics_registry_free(reg);
}

Test(metrics, name_validation) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_counter *c;
  const char *bad_names[] = {"", "1abc", "a-b", "a b", "é", "a.b", NULL};
  for (int i = 0; bad_names[i]; i++)
    cr_assert_eq(perfc_counter_new(&c, reg, bad_names[i], ""), PERFC_EINVAL,
                 "name '%s'", bad_names[i]);
  cr_assert_eq(perfc_counter_new(&c, reg, NULL, ""), PERFC_EINVAL);
  cr_assert_eq(perfc_counter_new(&c, reg, "ns:sub_total", ""), 0);
  cr_assert_eq(perfc_counter_new(&c, reg, "_x9", ""), 0);

  perfc_metrics_family *f;
  perfc_metrics_family_opts o;
  perfc_metrics_family_opts_init(&o);
  o.name = "lbl";
  o.label_count = 1;
  const char *bad_labels[] = {"", "__name", "a:b", "9a", "a-b", NULL};
  for (int i = 0; bad_labels[i]; i++) {
    o.label_names = &bad_labels[i];
    cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_GAUGE, &o),
                 PERFC_EINVAL, "label '%s'", bad_labels[i]);
  }
  const char *dup[] = {"a", "a"};
  o.label_names = dup;
  o.label_count = 2;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_GAUGE, &o),
               PERFC_EINVAL);
  const char *le[] = {"le"};
  o.label_names = le;
  o.label_count = 1;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_HISTOGRAM, &o),
               PERFC_EINVAL);
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_GAUGE, &o), 0,
               "le is fine outside histograms");
  o.label_names = NULL;
  o.label_count = 1;
  o.name = "lbl2";
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_GAUGE, &o),
               PERFC_EINVAL);

  /* Label values and HELP must be valid UTF-8 (Prometheus rejects the
   * whole scrape otherwise); multi-byte characters are fine. */
  o.name = "utf";
  o.label_names = (const char *[]){"k"};
  o.label_count = 1;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_GAUGE, &o), 0);
  perfc_gauge *g;
  cr_assert_eq(
      perfc_gauge_get(&g, f, (const char *[]){"h\xc3\xa9 \xe2\x82\xac"}), 0);
  const char *bad_utf8[] = {
      "\xff", "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", NULL};
  for (int i = 0; bad_utf8[i]; i++)
    cr_assert_eq(perfc_gauge_get(&g, f, &bad_utf8[i]), PERFC_EINVAL, "%d", i);
  cr_assert_eq(perfc_gauge_new(&g, reg, "bad_help", "\xff"), PERFC_EINVAL);

  perfc_histogram *h;
  const double unsorted[] = {1, 0.5};
  const double dupb[] = {1, 1};
  const double nanb[] = {NAN};
  const double ninf[] = {-INFINITY, 1};
  cr_assert_eq(perfc_histogram_new(&h, reg, "h1", "", unsorted, 2),
               PERFC_EINVAL);
  cr_assert_eq(perfc_histogram_new(&h, reg, "h2", "", dupb, 2), PERFC_EINVAL);
  cr_assert_eq(perfc_histogram_new(&h, reg, "h3", "", nanb, 1), PERFC_EINVAL);
  cr_assert_eq(perfc_histogram_new(&h, reg, "h4", "", ninf, 2), PERFC_EINVAL);
  perfc_metrics_registry_free(reg);
}

Test(metrics, reregistration) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_counter *a, *b;
  cr_assert_eq(perfc_counter_new(&a, reg, "x_total", "help"), 0);
  cr_assert_eq(perfc_counter_new(&b, reg, "x_total", "help"), 0);
  cr_assert_eq(a, b);
  perfc_gauge *g;
  cr_assert_eq(perfc_gauge_new(&g, reg, "x_total", "help"), PERFC_EEXIST);
  cr_assert_eq(perfc_counter_new(&b, reg, "x_total", "other help"),
               PERFC_EEXIST);
  /* Histogram sample names are taken, either way round. */
  perfc_histogram *h;
  cr_assert_eq(perfc_histogram_new(&h, reg, "lat", "", NULL, 0), 0);
  cr_assert_eq(perfc_counter_new(&b, reg, "lat_count", ""), PERFC_EEXIST);
  cr_assert_eq(perfc_gauge_new(&g, reg, "lat_bucket", ""), PERFC_EEXIST);
  cr_assert_eq(perfc_gauge_new(&g, reg, "lat_sum", ""), PERFC_EEXIST);
  cr_assert_eq(perfc_gauge_new(&g, reg, "lat_total", ""), 0);
  cr_assert_eq(perfc_histogram_new(&h, reg, "x", "", NULL, 0), 0,
               "x_total is not one of a histogram's sample names");
  cr_assert_eq(perfc_gauge_new(&g, reg, "q_count", ""), 0);
  cr_assert_eq(perfc_histogram_new(&h, reg, "q", "", NULL, 0), PERFC_EEXIST);
  /* Wrong accessor for the family type. */
  perfc_metrics_family *f;
  perfc_metrics_family_opts o;
  perfc_metrics_family_opts_init(&o);
  o.name = "x_total";
  o.help = "help";
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_COUNTER, &o), 0);
  cr_assert_eq(perfc_gauge_get(&g, f, NULL), PERFC_EINVAL);
  /* Missing label values. */
  const char *ln[] = {"k"};
  o.name = "y";
  o.label_names = ln;
  o.label_count = 1;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_GAUGE, &o), 0);
  cr_assert_eq(perfc_gauge_get(&g, f, NULL), PERFC_EINVAL);
  cr_assert_eq(perfc_gauge_get(&g, f, (const char *[]){NULL}), PERFC_EINVAL);
  perfc_metrics_registry_free(reg);
}

Test(metrics, cells_reused_after_registry_free_start_at_zero) {
  for (int round = 0; round < 3; round++) {
    perfc_metrics_registry *reg;
    cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
    perfc_counter *c;
    perfc_histogram *h;
    cr_assert_eq(perfc_counter_new(&c, reg, "c_total", ""), 0);
    cr_assert_eq(perfc_histogram_new(&h, reg, "h", "", NULL, 0), 0);
    cr_assert_eq(perfc_counter_value(c), 0, "round %d", round);
    uint64_t n;
    double s;
    perfc_histogram_value(h, &n, &s);
    cr_assert_eq(n, 0);
    cr_assert_eq(s, 0.0);
    perfc_counter_add(c, 5);
    perfc_histogram_observe(h, 1);
    perfc_metrics_registry_free(reg);
  }
}

Test(metrics, default_registry) {
  perfc_metrics_registry *d = perfc_metrics_registry_default();
  cr_assert_not_null(d);
  cr_assert_eq(d, perfc_metrics_registry_default());
  perfc_counter *c;
  cr_assert_eq(perfc_counter_new(&c, NULL, "default_test_total", "t"), 0);
  perfc_counter_inc(c);
  char *out;
  cr_assert_eq(perfc_metrics_registry_render(NULL, &out, NULL), 0);
  cr_assert_not_null(strstr(out, "default_test_total 1\n"));
  free(out);
  perfc_metrics_registry_free(d); /* documented misuse, must be harmless */
}

/* ---- threads ------------------------------------------------------------ */

#define THREADS 8
#define PER_THREAD 1000000

typedef struct shared {
  perfc_metrics_registry *reg;
  perfc_counter *c;
  perfc_histogram *h;
  pthread_barrier_t created, done_inc, scraped;
  int exit_early; /* threads with odd index exit before the scrape */
  perfc_counter *late;
} shared;

typedef struct targ {
  shared *sh;
  int idx;
} targ;

static void *worker(void *p) {
  targ *a = p;
  shared *sh = a->sh;
  for (int i = 0; i < PER_THREAD; i++)
    perfc_counter_inc(sh->c);
  for (int i = 0; i < 1000; i++)
    perfc_histogram_observe(sh->h, (double)(i % 4) * 0.5);
  /* The main thread creates a series only now, after this thread has its
   * cell table. */
  pthread_barrier_wait(&sh->created);
  for (int i = 0; i < 1000; i++)
    perfc_counter_inc(sh->late);
  if (sh->exit_early && (a->idx & 1))
    return NULL; /* exits before the scrape: its counts must be folded in */
  pthread_barrier_wait(&sh->done_inc);
  pthread_barrier_wait(&sh->scraped);
  return NULL;
}

Test(metrics, threads_sum_exactly_including_exited) {
  shared sh = {0};
  cr_assert_eq(perfc_metrics_registry_new(&sh.reg), 0);
  cr_assert_eq(perfc_counter_new(&sh.c, sh.reg, "hits_total", ""), 0);
  const double b[] = {0.25, 0.75};
  cr_assert_eq(perfc_histogram_new(&sh.h, sh.reg, "obs", "", b, 2), 0);
  sh.exit_early = 1;
  pthread_barrier_init(&sh.created, NULL, THREADS + 1);
  pthread_barrier_init(&sh.done_inc, NULL, THREADS / 2 + 1);
  pthread_barrier_init(&sh.scraped, NULL, THREADS / 2 + 1);
  pthread_t t[THREADS];
  targ args[THREADS];
  for (int i = 0; i < THREADS; i++) {
    args[i] = (targ){&sh, i};
    cr_assert_eq(pthread_create(&t[i], NULL, worker, &args[i]), 0);
  }
  /* A series created while the threads run. */
  perfc_counter *late;
  cr_assert_eq(perfc_counter_new(&late, sh.reg, "late_total", ""), 0);
  sh.late = late;
  pthread_barrier_wait(&sh.created);
  /* Odd threads exit; wait for them, while even threads stay alive. */
  for (int i = 1; i < THREADS; i += 2)
    pthread_join(t[i], NULL);
  pthread_barrier_wait(&sh.done_inc);
  /* Half the counts live in exited threads' folded totals, half in live
   * threads' cells. */
  cr_assert_eq(perfc_counter_value(sh.c), (uint64_t)THREADS * PER_THREAD);
  cr_assert_eq(perfc_counter_value(late), (uint64_t)THREADS * 1000);
  char *out = render(sh.reg);
  cr_assert_str_eq(out, "# TYPE hits_total counter\n"
                        "hits_total 8000000\n"
                        "# TYPE late_total counter\n"
                        "late_total 8000\n"
                        "# TYPE obs histogram\n"
                        "obs_bucket{le=\"0.25\"} 2000\n"
                        "obs_bucket{le=\"0.75\"} 4000\n"
                        "obs_bucket{le=\"+Inf\"} 8000\n"
                        "obs_sum 6000\n"
                        "obs_count 8000\n");
  free(out);
  pthread_barrier_wait(&sh.scraped);
  for (int i = 0; i < THREADS; i += 2)
    pthread_join(t[i], NULL);
  /* After every thread exited, everything is in the folded totals. */
  cr_assert_eq(perfc_counter_value(sh.c), (uint64_t)THREADS * PER_THREAD);
  pthread_barrier_destroy(&sh.created);
  pthread_barrier_destroy(&sh.done_inc);
  pthread_barrier_destroy(&sh.scraped);
  perfc_metrics_registry_free(sh.reg);
}

static void *scraper(void *p) {
  shared *sh = p;
  uint64_t last = 0;
  /* Criterion asserts belong on the test's thread: report through the
   * return value instead. */
  for (int i = 0; i < 200; i++) {
    uint64_t v = perfc_counter_value(sh->c);
    if (v < last)
      return (void *)"counter went backwards";
    last = v;
    char *out;
    if (perfc_metrics_registry_render(sh->reg, &out, NULL) != 0)
      return (void *)"render failed";
    free(out);
  }
  return NULL;
}

static void *short_worker(void *p) {
  shared *sh = p;
  for (int i = 0; i < 10000; i++)
    perfc_counter_inc(sh->c);
  return NULL;
}

/* Threads come and go while another thread scrapes: the total never goes
 * backwards and ends exact (exercises the fold-on-exit under TSan). */
Test(metrics, concurrent_scrape_with_thread_churn) {
  shared sh = {0};
  cr_assert_eq(perfc_metrics_registry_new(&sh.reg), 0);
  cr_assert_eq(perfc_counter_new(&sh.c, sh.reg, "churn_total", ""), 0);
  pthread_t s;
  cr_assert_eq(pthread_create(&s, NULL, scraper, &sh), 0);
  for (int round = 0; round < 20; round++) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
      cr_assert_eq(pthread_create(&t[i], NULL, short_worker, &sh), 0);
    for (int i = 0; i < 4; i++)
      pthread_join(t[i], NULL);
  }
  void *err;
  pthread_join(s, &err);
  cr_assert_null(err, "%s", err ? (const char *)err : "");
  cr_assert_eq(perfc_counter_value(sh.c), 20ull * 4 * 10000);
  perfc_metrics_registry_free(sh.reg);
}

/* More than 16 bounds takes the binary-search path: it must place every
 * value (on a bound, between bounds, beyond, NaN) where the linear rule
 * "first bound >= v" does. */
Test(metrics, histogram_many_buckets_binary_search) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  double b[40];
  for (int i = 0; i < 40; i++)
    b[i] = 0.001 * (1 << (i / 2)) * (i % 2 ? 1.5 : 1.0);
  perfc_histogram *h;
  cr_assert_eq(perfc_histogram_new(&h, reg, "wide", "", b, 40), 0);
  uint64_t want[41] = {0};
  double vals[200];
  int nv = 0;
  for (int i = 0; i < 40; i++) {
    vals[nv++] = b[i];
    vals[nv++] = b[i] * 0.99;
    vals[nv++] = b[i] * 1.01;
  }
  vals[nv++] = -5;
  vals[nv++] = 1e12;
  vals[nv++] = NAN;
  for (int k = 0; k < nv; k++) {
    int i = 0;
    while (i < 40 && !(vals[k] <= b[i]))
      i++;
    want[i]++;
    perfc_histogram_observe(h, vals[k]);
  }
  char *out = render(reg);
  uint64_t cum = 0;
  const char *p = out;
  for (int i = 0; i <= 40; i++) {
    cum += want[i];
    p = strstr(p, "wide_bucket{le=\"");
    cr_assert_not_null(p);
    p = strchr(p, '}') + 2;
    cr_assert_eq(strtoull(p, NULL, 10), cum, "bucket %d", i);
  }
  free(out);
  perfc_metrics_registry_free(reg);
}

/* ---- gauges from many threads ------------------------------------------- */

typedef struct gshared {
  perfc_gauge *g;
  pthread_barrier_t added, set_done, added2;
  int exit_early;
} gshared;

typedef struct gtarg {
  gshared *sh;
  int idx;
} gtarg;

static void *gauge_worker(void *p) {
  gtarg *a = p;
  gshared *sh = a->sh;
  for (int i = 0; i < 100000; i++)
    perfc_gauge_inc(sh->g);
  for (int i = 0; i < 99000; i++)
    perfc_gauge_dec(sh->g);
  pthread_barrier_wait(&sh->added); /* main reads, then sets 100 */
  pthread_barrier_wait(&sh->set_done);
  perfc_gauge_add(sh->g, 0.5); /* lands after the set */
  if (sh->exit_early && (a->idx & 1))
    return NULL;
  pthread_barrier_wait(&sh->added2);
  return NULL;
}

/* Per-thread gauge deltas sum exactly, a set() voids every earlier delta
 * (of live and of exited threads), and later adds count on top of it. */
Test(metrics, gauge_threads_set_and_exit) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  gshared sh = {0};
  cr_assert_eq(perfc_gauge_new(&sh.g, reg, "inflight", ""), 0);
  sh.exit_early = 1;
  pthread_barrier_init(&sh.added, NULL, THREADS + 1);
  pthread_barrier_init(&sh.set_done, NULL, THREADS + 1);
  pthread_barrier_init(&sh.added2, NULL, THREADS / 2 + 1);
  pthread_t t[THREADS];
  gtarg args[THREADS];
  for (int i = 0; i < THREADS; i++) {
    args[i] = (gtarg){&sh, i};
    cr_assert_eq(pthread_create(&t[i], NULL, gauge_worker, &args[i]), 0);
  }
  pthread_barrier_wait(&sh.added);
  cr_assert_eq(perfc_gauge_value(sh.g), THREADS * 1000.0);
  perfc_gauge_set(sh.g, 100);
  cr_assert_eq(perfc_gauge_value(sh.g), 100.0);
  pthread_barrier_wait(&sh.set_done);
  for (int i = 1; i < THREADS; i += 2)
    pthread_join(t[i], NULL); /* odd threads exit with a 0.5 delta each */
  pthread_barrier_wait(&sh.added2);
  cr_assert_eq(perfc_gauge_value(sh.g), 100 + THREADS * 0.5);
  char *out = render(reg);
  cr_assert_str_eq(out, "# TYPE inflight gauge\ninflight 104\n");
  free(out);
  for (int i = 0; i < THREADS; i += 2)
    pthread_join(t[i], NULL);
  cr_assert_eq(perfc_gauge_value(sh.g), 100 + THREADS * 0.5,
               "folded deltas of exited threads still count");
  perfc_gauge_set(sh.g, 5);
  cr_assert_eq(perfc_gauge_value(sh.g), 5.0, "set voids folded deltas too");
  perfc_gauge_dec(sh.g);
  cr_assert_eq(perfc_gauge_value(sh.g), 4.0);
  pthread_barrier_destroy(&sh.added);
  pthread_barrier_destroy(&sh.set_done);
  pthread_barrier_destroy(&sh.added2);
  perfc_metrics_registry_free(reg);
}

static _Atomic int hammer_stop;

static void *pair_worker(void *p) {
  perfc_gauge *g = p;
  while (!hammer_stop) {
    perfc_gauge_inc(g);
    perfc_gauge_dec(g);
  }
  return NULL;
}

/* set() racing with inc/dec pairs: since the last set each thread's delta
 * is -1, 0 or +1, so every read lies within 42 +- threads; a torn read
 * (one epoch's base with another's deltas) would fall far outside. */
Test(metrics, gauge_set_races_with_adds) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_gauge *g;
  cr_assert_eq(perfc_gauge_new(&g, reg, "racy", ""), 0);
  perfc_gauge_set(g, 42);
  enum { N = 4 };
  pthread_t t[N];
  hammer_stop = 0;
  for (int i = 0; i < N; i++)
    cr_assert_eq(pthread_create(&t[i], NULL, pair_worker, g), 0);
  for (int i = 0; i < 20000; i++) {
    if (i % 2 == 0)
      perfc_gauge_set(g, 42);
    double v = perfc_gauge_value(g);
    cr_assert(v >= 42 - N && v <= 42 + N, "read %f at %d", v, i);
  }
  hammer_stop = 1;
  for (int i = 0; i < N; i++)
    pthread_join(t[i], NULL);
  /* A thread whose +1 came before the last set and -1 after it leaves -1. */
  double v = perfc_gauge_value(g);
  cr_assert(v >= 42 - N && v <= 42 && v == (double)(long)v, "final %f", v);
  perfc_gauge_set(g, 42);
  cr_assert_eq(perfc_gauge_value(g), 42.0);
  perfc_metrics_registry_free(reg);
}

/* Registration failures say what was wrong in the one error-detail place
 * (perfc_last_error()), naming the metric and, for a label, its index. */
Test(metrics, failures_leave_their_detail) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_metrics_family_opts o;
  perfc_metrics_family_opts_init(&o);
  perfc_metrics_family *f;
  o.name = "9bad";
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_COUNTER, &o),
               PERFC_EINVAL);
  cr_assert_not_null(
      strstr(perfc_last_error(), "\"9bad\" is not a metric name"), "%s",
      perfc_last_error());
  const char *labels[] = {"ok", "le"};
  o.name = "h";
  o.label_names = labels;
  o.label_count = 2;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_HISTOGRAM, &o),
               PERFC_EINVAL);
  cr_assert_eq(perfc_last_error_detail().index, 1);
  o.label_count = 1;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_HISTOGRAM, &o),
               0);
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_COUNTER, &o),
               PERFC_EEXIST);
  cr_assert_not_null(strstr(perfc_last_error(), "h is already registered"),
                     "%s", perfc_last_error());
  perfc_metrics_registry_free(reg);
}

/* OpenMetrics: counter TYPE without _total, samples with it (added when the
 * name lacks it), the latest exemplar per bucket with its ids, # EOF; the
 * 0.0.4 text has no exemplar. */
Test(metrics, openmetrics_counters_exemplars_and_eof) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_counter *c1, *c2;
  cr_assert_eq(perfc_counter_new(&c1, reg, "reqs_total", "requests"), 0);
  cr_assert_eq(perfc_counter_new(&c2, reg, "errs", "errors"), 0);
  perfc_counter_add(c1, 3);
  static const double b[] = {0.1, 1};
  perfc_histogram *h;
  cr_assert_eq(perfc_histogram_new(&h, reg, "lat_seconds", "latency", b, 2), 0);
  perfc_span_context sc = {.trace_flags = 1};
  memset(sc.trace_id, 0xab, 16);
  memset(sc.span_id, 0x01, 8);
  perfc_histogram_observe_exemplar(h, 0.05, &sc);
  sc.trace_id[0] = 0xcd;
  perfc_histogram_observe_exemplar(h, 0.07, &sc); /* replaces the first */
  perfc_histogram_observe_exemplar(h, 5, NULL);   /* no exemplar */
  char *out;
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render_openmetrics(reg, &out, &len), 0);
  cr_assert_not_null(strstr(out, "# TYPE reqs counter\nreqs_total 3\n"), "%s", out);
  cr_assert_not_null(strstr(out, "# TYPE errs counter\nerrs_total 0\n"), "%s", out);
  cr_assert_not_null(strstr(out,
      "lat_seconds_bucket{le=\"0.1\"} 2 # {trace_id=\"cdababababababababababababababab\","
      "span_id=\"0101010101010101\"} 0.07 "), "%s", out);
  cr_assert_not_null(strstr(out, "lat_seconds_bucket{le=\"1\"} 2\n"), "%s", out);
  cr_assert_not_null(strstr(out, "lat_seconds_bucket{le=\"+Inf\"} 3\n"), "%s", out);
  cr_assert_eq(strcmp(out + len - 6, "# EOF\n"), 0, "%s", out);
  free(out);
  cr_assert_eq(perfc_metrics_registry_render(reg, &out, &len), 0);
  cr_assert_null(strstr(out, "trace_id"));
  cr_assert_not_null(strstr(out, "# TYPE reqs_total counter\n"));
  free(out);
  perfc_metrics_registry_free(reg);
}

/* ---- latencies that end with a loop's batch (perfc__histogram_observe_since) */

static uint64_t hist_count(perfc_histogram *h, double *sum) {
  uint64_t n = 0;
  perfc_histogram_value(h, &n, sum);
  return n;
}

Test(metrics, observe_since_outside_a_batch_is_immediate) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_histogram *h;
  cr_assert_eq(perfc_histogram_new(&h, reg, "lat_seconds", NULL, NULL, 0), 0);
  int64_t start = perfc__now_ns() - 2000000000; /* two seconds ago */
  perfc__histogram_observe_since(h, start);
  double sum = 0;
  cr_assert_eq(hist_count(h, &sum), 1);
  cr_assert(sum >= 2.0 && sum < 3.0, "sum %f", sum);
  perfc_metrics_registry_free(reg);
}

Test(metrics, observe_since_in_a_batch_ends_with_the_batch) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_histogram *h;
  cr_assert_eq(perfc_histogram_new(&h, reg, "lat_seconds", NULL, NULL, 0), 0);
  int64_t start = perfc__now_ns();
  perfc__batch_begin();
  /* More than the pending buffer holds: the 257th observes the first 256
   * at once, and none is lost. */
  for (int i = 0; i < 300; i++)
    perfc__histogram_observe_since(h, start);
  int64_t flushed = perfc__now_ns();
  double sum = 0;
  cr_assert_eq(hist_count(h, &sum), 256,
               "the first 256 should be observed when the buffer filled");
  struct timespec ts = {0, 30 * 1000 * 1000};
  nanosleep(&ts, NULL);
  int64_t before_end = perfc__now_ns();
  perfc__batch_end();
  int64_t after_end = perfc__now_ns();
  cr_assert_eq(hist_count(h, &sum), 300);
  /* The last 44 end at the batch's end, 30 ms after their start; the
   * first 256 ended before the sleep. */
  double lo = 44 * (double)(before_end - start) / 1e9;
  double hi = 44 * (double)(after_end - start) / 1e9 +
              256 * (double)(flushed - start) / 1e9;
  cr_assert(lo >= 44 * 0.03, "the sleep was shorter than 30 ms");
  cr_assert(sum >= lo && sum <= hi, "sum %f not in [%f, %f]", sum, lo, hi);
  /* The next batch starts empty; outside one, an observation is at once. */
  perfc__batch_begin();
  perfc__batch_end();
  cr_assert_eq(hist_count(h, &sum), 300);
  perfc__histogram_observe_since(h, perfc__now_ns());
  cr_assert_eq(hist_count(h, &sum), 301);
  perfc_metrics_registry_free(reg);
}
