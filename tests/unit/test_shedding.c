/* test_shedding.c — runtime/src/guard/shedding.c under real overload: a handler
 * that sleeps 20 ms on a pool of 4 workers serves at most 200 calls/s; an
 * open-loop driver offers 400/s for 4 s. With the shedder, refusals are
 * immediate and the calls it accepts keep near-normal latency; without it
 * (the control) the worker queue grows and latency climbs into seconds.
 *
 * Not timing-flaky by construction: the driver is open-loop (async calls on
 * a fixed schedule, catching up if the machine stalls it), so the offered
 * load does not fall when the server slows; the bounds are several times
 * the expected values (accepted p90 about 40 ms against a 150 ms bound,
 * refusals under 1 ms against 20 ms), and the first 1.5 s, where the
 * limiter learns, are not judged. */
#include <google/protobuf/empty.pb-c.h>
#include "test_transport.h" /* test_server_new: both transports */
#include <perfc.h>

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ThreadSanitizer slows every instrumented call several-fold, so the
 * latency bounds (and the control, which only proves them meaningful) are
 * checked in normal and ASan builds only; the counting assertions hold in
 * every build. */
#if defined(__SANITIZE_THREAD__)
#define TIMING_CHECKS 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TIMING_CHECKS 0
#endif
#endif
#ifndef TIMING_CHECKS
#define TIMING_CHECKS 1
#endif

#define SLEEP_MS 20
#define WORKERS 4
#define OFFERED_QPS 400 /* twice WORKERS * 1000 / SLEEP_MS */
#define RUN_MS 4000
#define WARMUP_MS 1500
/* Room for the busier second scenario (a pool four times as large). */
#define MAX_CALLS (4 * OFFERED_QPS * RUN_MS / 1000 + 64)

/* The scenario: handler time and pool size; capacity = workers / sleep. */
static int sleep_ms = SLEEP_MS;
static unsigned workers = WORKERS;

static perfc_status_code slow(perfc_ctx *ctx, const void *h, void *ud,
                              const ProtobufCMessage *req,
                              ProtobufCMessage *resp, perfc_stream *s) {
  (void)ctx, (void)h, (void)ud, (void)req, (void)resp, (void)s;
  usleep((useconds_t)sleep_ms * 1000);
  return PERFC_STATUS_OK;
}

#define MSG &google__protobuf__empty__descriptor
static const perfc_method_desc methods[] = {
    {.name = "Slow",
     .path = "/t.v1.S/Slow",
     .kind = PERFC_METHOD_UNARY,
     .input = MSG,
     .output = MSG,
     .invoke = slow,
     .executor = PERFC_EXEC_POOL},
};
static const perfc_service_desc svc = {
    .name = "t.v1.S", .n_methods = 1, .methods = methods};
static const struct { void *slow; } impl = {(void *)1};

static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

typedef struct record {
  int64_t start_ns, latency_ns;
  perfc_status_code code;
} record;

static record recs[MAX_CALLS];

static void done(perfc_status_code code, const char *msg,
                 const ProtobufCMessage *resp, void *ud) {
  (void)msg, (void)resp;
  record *r = ud;
  r->code = code;
  r->latency_ns = now_ns() - r->start_ns;
}

static perfc_metrics_registry *reg;
static perfc_shedding *sh;
static perfc_server *srv;
static perfc_channel *ch;

static void start(int shed) {
  int port;
  perfc_server_opts so;
  perfc_server_opts_init(&so);
  so.threads = 2;
  so.pool_threads = workers;
  cr_assert_eq(test_server_new(&srv, &so), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &svc, &impl, NULL), 0);
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  sh = NULL;
  if (shed) {
    perfc_shedding_opts o;
    perfc_shedding_opts_init(&o);
    o.registry = reg;
    cr_assert_eq(perfc_shedding_new(&sh, &o), 0);
    cr_assert_eq(perfc_shedding_attach(sh, srv), 0);
  }
  cr_assert_eq(perfc_server_start(srv), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  perfc_channel_opts co;
  perfc_channel_opts_init(&co);
  co.default_timeout_ms = 30000; /* the control's queue must not time out */
  cr_assert_eq(perfc_channel_new(&ch, target, &co), 0);
}

static void stop(void) {
  perfc_server_free(srv);
  perfc_shedding_free(sh);
  perfc_metrics_registry_free(reg);
}

/* Offers `qps` for RUN_MS; returns the number of calls made. The
 * channel is freed here, which waits for every callback. */
static size_t drive(int qps) {
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  perfc_call_opts o = {.wait_for_ready =
                           1}; /* a slow first connect is no refusal */
  int64_t t0 = now_ns(), step = 1000000000 / qps;
  size_t n = 0;
  while (n < MAX_CALLS) {
    int64_t due = t0 + (int64_t)n * step;
    if (due - t0 >= (int64_t)RUN_MS * 1000000)
      break;
    int64_t wait = due - now_ns();
    if (wait > 0) {
      struct timespec ts = {wait / 1000000000, wait % 1000000000};
      nanosleep(&ts, NULL);
    }
    recs[n].start_ns = now_ns();
    recs[n].code = -1;
    cr_assert_eq(perfc_channel_unary_async(ch, &methods[0], &req.base, &o, done,
                                           &recs[n]),
                 0);
    n++;
  }
  perfc_channel_free(ch); /* waits for the outstanding calls */
  for (size_t i = 0; i < n; i++)
    recs[i].start_ns -= t0;
  return n;
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

typedef struct summary {
  size_t ok, refused, refused_fast, other;
  int64_t ok_p50_ms, ok_p90_ms;
} summary;

static summary summarise(size_t n, int from_ms) {
  summary s = {0};
  int64_t *lat = calloc(n, sizeof *lat);
  for (size_t i = 0; i < n; i++) {
    if (recs[i].start_ns < (int64_t)from_ms * 1000000)
      continue;
    if (recs[i].code == PERFC_STATUS_OK) {
      lat[s.ok++] = recs[i].latency_ns;
    } else if (recs[i].code == PERFC_STATUS_RESOURCE_EXHAUSTED) {
      s.refused++;
      s.refused_fast += recs[i].latency_ns < 20 * 1000000;
    } else {
      s.other++;
    }
  }
  qsort(lat, s.ok, sizeof *lat, cmp64);
  if (s.ok) {
    s.ok_p50_ms = lat[s.ok / 2] / 1000000;
    s.ok_p90_ms = lat[s.ok * 9 / 10] / 1000000;
  }
  free(lat);
  return s;
}

static perfc_counter *rejected_counter(void) {
  perfc_metrics_family *f;
  static const char *const names[] = {"grpc_service", "grpc_method"};
  perfc_metrics_family_opts mo;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_shedding_rejected_total";
  mo.help = "Calls refused with RESOURCE_EXHAUSTED by the adaptive "
            "concurrency limit.";
  mo.label_names = names;
  mo.label_count = 2;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_COUNTER, &mo),
               0);
  perfc_counter *c;
  const char *v[] = {"t.v1.S", "Slow"};
  cr_assert_eq(perfc_counter_get(&c, f, v), 0);
  return c;
}

Test(shedding, twice_the_capacity_keeps_accepted_latency_near_normal) {
  start(1);
  size_t n = drive(OFFERED_QPS);
  summary s = summarise(n, WARMUP_MS);
  summary all = summarise(n, 0);
  char *text;
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  fprintf(stderr,
          "shedding: %zu calls, judged after %d ms: ok %zu (p50 %lld ms, p90 "
          "%lld ms), refused %zu (%zu under 20 ms), other %zu\n%s",
          n, WARMUP_MS, s.ok, (long long)s.ok_p50_ms, (long long)s.ok_p90_ms,
          s.refused, s.refused_fast, s.other, text);
  free(text);
  cr_assert_eq(s.other, 0, "every call ends OK or RESOURCE_EXHAUSTED");
  cr_assert_eq(all.other, 0);
  cr_assert(s.refused > 0, "at twice the capacity some calls are refused");
  if (TIMING_CHECKS) {
    cr_assert(s.refused_fast * 10 >= s.refused * 8,
              "refusals are immediate: %zu of %zu under 20 ms", s.refused_fast,
              s.refused);
    cr_assert(s.ok_p90_ms < 150, "accepted p90 %lld ms",
              (long long)s.ok_p90_ms);
    /* The server keeps doing useful work: at least half its capacity over
     * the judged 2.5 s (about 500 calls at full capacity). */
    cr_assert(s.ok >= 250, "only %zu calls served", s.ok);
  }
  cr_assert_eq(perfc_counter_value(rejected_counter()), all.refused,
               "every refusal the client saw was counted once");
  stop();
}

Test(shedding, control_without_shedder_queues_into_seconds) {
  if (!TIMING_CHECKS)
    return;
  start(0);
  size_t n = drive(OFFERED_QPS);
  summary s = summarise(n, WARMUP_MS);
  fprintf(stderr, "control: ok %zu (p50 %lld ms, p90 %lld ms), refused %zu\n",
          s.ok, (long long)s.ok_p50_ms, (long long)s.ok_p90_ms, s.refused);
  cr_assert_eq(s.refused, 0, "the 4096-deep worker queue never fills");
  cr_assert(s.ok_p90_ms > 500, "without shedding the queue grows (p90 %lld ms)",
            (long long)s.ok_p90_ms);
  stop();
}

static double limit_value(void) {
  perfc_metrics_family *f;
  static const char *const names[] = {"grpc_service", "grpc_method"};
  perfc_metrics_family_opts mo;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_shedding_limit";
  mo.help = "Current adaptive limit of calls in flight.";
  mo.label_names = names;
  mo.label_count = 2;
  cr_assert_eq(perfc_metrics_family_new(&f, reg, PERFC_METRICS_GAUGE, &mo), 0);
  perfc_gauge *g;
  const char *v[] = {"t.v1.S", "Slow"};
  cr_assert_eq(perfc_gauge_get(&g, f, v), 0);
  return perfc_gauge_value(g);
}

/* The limit is learned, not fixed: 16 workers at 40 ms serve 400 calls/s
 * and need about 16 in flight, so under twice that load the limit settles
 * near 1.15 x 16 (the formula's fixed point), well above the floor of 8
 * the 4-worker scenario sits at and below the initial 40. */
Test(shedding, limit_follows_the_capacity) {
  if (!TIMING_CHECKS)
    return;
  sleep_ms = 40;
  workers = 16;
  start(1);
  size_t n = drive(800);
  summary s = summarise(n, WARMUP_MS);
  double limit = limit_value();
  fprintf(stderr,
          "16 workers x 40 ms at 800/s: limit %g, ok %zu (p50 %lld ms, p90 "
          "%lld ms), refused %zu (%zu under 20 ms)\n",
          limit, s.ok, (long long)s.ok_p50_ms, (long long)s.ok_p90_ms,
          s.refused, s.refused_fast);
  cr_assert(limit >= 12 && limit <= 32, "limit %g", limit);
  cr_assert(s.ok_p90_ms < 200, "accepted p90 %lld ms", (long long)s.ok_p90_ms);
  cr_assert(s.refused > 0);
  stop();
  sleep_ms = SLEEP_MS;
  workers = WORKERS;
}

Test(shedding, idle_server_takes_a_burst) {
  start(1);
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  perfc_call_opts o = {.wait_for_ready = 1};
  for (int i = 0; i < 16; i++) {
    recs[i].start_ns = now_ns();
    recs[i].code = -1;
    cr_assert_eq(perfc_channel_unary_async(ch, &methods[0], &req.base, &o, done,
                                           &recs[i]),
                 0);
  }
  perfc_channel_free(ch);
  for (int i = 0; i < 16; i++)
    cr_assert_eq(recs[i].code, PERFC_STATUS_OK, "call %d", i);
  cr_assert_eq(perfc_counter_value(rejected_counter()), 0);
  stop();
}

Test(shedding, bad_options_refused) {
  perfc_shedding *x;
  perfc_shedding_opts o;
  perfc_shedding_opts_init(&o);
  o.alpha = 2;
  cr_assert_eq(perfc_shedding_new(&x, &o), PERFC_EINVAL);
  perfc_shedding_opts_init(&o);
  o.min_limit = 10;
  o.max_limit = 5;
  cr_assert_eq(perfc_shedding_new(&x, &o), PERFC_EINVAL);
  cr_assert_not_null(strstr(perfc_last_error(), "max_limit 5"), "%s",
                     perfc_last_error());
  /* No ceiling is a number, not a zero: the default is the largest. */
  perfc_shedding_opts_init(&o);
  cr_assert_eq(o.max_limit, PERFC_DEFAULT_SHEDDING_MAX_LIMIT);
  o.max_limit = PERFC_DEFAULT_SHEDDING_MAX_LIMIT + 1;
  cr_assert_eq(perfc_shedding_new(&x, &o), PERFC_EINVAL);
  perfc_shedding_opts z = {0}; /* zero is the default everywhere */
  cr_assert_eq(perfc_shedding_new(&x, &z), 0);
  perfc_shedding_free(x);
  cr_assert_eq(perfc_shedding_new(NULL, NULL), PERFC_EINVAL);
  cr_assert_eq(perfc_shedding_attach(NULL, NULL), PERFC_EINVAL);
  perfc_shedding_free(NULL);
}
