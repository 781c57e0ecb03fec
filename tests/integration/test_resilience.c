/* test_resilience.c — the reliability interceptors together on the
 * generated TestService, in the order docs/reliability.md recommends
 * (metrics, timeouts, rate limit, shedding), with the generated client
 * stubs: a server timeout from the override table ends Slow early and the
 * metrics interceptor counts it as DeadlineExceeded; Echo's handler sees
 * the service-wide timeout; a rate-limit refusal is counted by the metrics
 * interceptor registered before it; and a breaker on the client fails fast
 * once Fail keeps answering UNAVAILABLE. */
#include "test_service.h"

#include <perfc/grpc_metrics.h>
#include <perfc/metrics.h>
#include <perfc/resilience.h>

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SVC perfc__test__v1__test_service__perfc_desc
#define M(name)                                                                \
  (&SVC.methods[PERFC__TEST__V1__TEST_SERVICE__PERFC_METHOD_##name])

static perfc_metrics_registry *reg;
static perfc_grpc_metrics *gm;
static perfc_timeouts *tm;
static perfc_ratelimit *rl;
static perfc_shedding *sh;
static perfc_server *srv;
static char target[64];

static int64_t frozen_clock(void *ud) {
  (void)ud;
  return 1000000000000LL;
}

static void setup(void) {
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_grpc_metrics_opts go;
  perfc_grpc_metrics_opts_init(&go);
  go.registry = reg;
  cr_assert_eq(perfc_grpc_metrics_new(&gm, &go), 0);

  perfc_timeouts_rule tr[] = {
      {.method = "/perfc.test.v1.TestService/Slow", .timeout_ms = 100},
      {.method = "/perfc.test.v1.TestService/", .timeout_ms = 3000},
  };
  perfc_timeouts_opts to;
  perfc_timeouts_opts_init(&to);
  to.rules = tr;
  to.rule_count = 2;
  cr_assert_eq(perfc_timeouts_new(&tm, &to), 0);

  perfc_ratelimit_rule rr[] = {
      {.method = "/perfc.test.v1.TestService/Meta", .rate = 1, .burst = 2}};
  perfc_ratelimit_opts ro;
  perfc_ratelimit_opts_init(&ro);
  ro.registry = reg;
  ro.rules = rr;
  ro.rule_count = 1;
  ro.clock = frozen_clock; /* exact counts however slow the machine */
  cr_assert_eq(perfc_ratelimit_new(&rl, &ro), 0);

  perfc_shedding_opts so;
  perfc_shedding_opts_init(&so);
  so.registry = reg;
  cr_assert_eq(perfc_shedding_new(&sh, &so), 0);

  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc__test__v1__test_service__perfc_register(
                   srv, &test_service_handlers, NULL),
               0);
  cr_assert_eq(perfc_grpc_metrics_attach(gm, srv), 0);
  cr_assert_eq(perfc_timeouts_attach(tm, srv), 0);
  cr_assert_eq(perfc_ratelimit_attach(rl, srv), 0);
  cr_assert_eq(perfc_shedding_attach(sh, srv), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
}

static void teardown(void) {
  perfc_server_free(srv);
  perfc_shedding_free(sh);
  perfc_ratelimit_free(rl);
  perfc_timeouts_free(tm);
  perfc_grpc_metrics_free(gm);
  perfc_metrics_registry_free(reg);
}

TestSuite(resilience, .init = setup, .fini = teardown);

/* The value of the first sample line containing every string in `parts`. */
static double sample(const char *const *parts, size_t n) {
  char *text;
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  double v = -1;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    size_t i = 0;
    while (i < n && strstr(line, parts[i]) != NULL)
      i++;
    if (i == n && line[0] != '#') {
      v = strtod(strrchr(line, ' ') + 1, NULL);
      break;
    }
  }
  free(text);
  return v;
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

Test(resilience, server_timeout_ends_slow_and_metrics_count_it) {
  perfc_channel *ch;
  perfc_channel_opts co;
  perfc_channel_opts_init(&co);
  co.no_default_timeout = true; /* the client sets no deadline */
  cr_assert_eq(perfc_channel_new(&ch, target, &co), 0);
  /* wait_for_ready: a slow first connect (TSan) is not the outcome tested. */
  perfc_call_opts ready = {.wait_for_ready = 1};
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.sleep_ms = 5000;
  Perfc__Test__V1__EchoResponse *resp = NULL;
  perfc_status st = {0};
  int64_t t0 = now_ms();
  cr_assert_eq(
      perfc__test__v1__test_service__slow__call(ch, &req, &resp, &ready, &st),
      PERFC_STATUS_DEADLINE_EXCEEDED);
  int64_t took = now_ms() - t0;
  cr_assert(took >= 90 && took < 5000, "took %lld ms", (long long)took);
  perfc_status_reset(&st);

  /* Echo reports the remaining time its handler saw: the service-wide 3 s. */
  cr_assert_eq(
      perfc__test__v1__test_service__echo__call(ch, &req, &resp, NULL, &st),
      PERFC_STATUS_OK);
  cr_assert(resp->remaining_ms > 2000 && resp->remaining_ms <= 3000,
            "Echo saw %lld ms", (long long)resp->remaining_ms);
  protobuf_c_message_free_unpacked(&resp->base, NULL);
  perfc_channel_free(ch);

  const char *const slow[] = {"grpc_server_handled_total{",
                              "grpc_method=\"Slow\"",
                              "grpc_code=\"DeadlineExceeded\""};
  cr_assert_eq(sample(slow, 3), 1);
}

Test(resilience, rate_limit_refusal_is_counted_by_earlier_metrics) {
  perfc_channel *ch;
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  perfc_metadata md[] = {{"x-in", "v", 0}};
  perfc_call_opts co = {
      .metadata = md, .metadata_count = 1, .wait_for_ready = 1};
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  int ok = 0, refused = 0;
  for (int i = 0; i < 5; i++) {
    Perfc__Test__V1__EchoResponse *resp = NULL;
    perfc_status_code c =
        perfc__test__v1__test_service__meta__call(ch, &req, &resp, &co, NULL);
    if (resp != NULL)
      protobuf_c_message_free_unpacked(&resp->base, NULL);
    ok += c == PERFC_STATUS_OK;
    refused += c == PERFC_STATUS_RESOURCE_EXHAUSTED;
  }
  perfc_channel_free(ch);
  cr_assert_eq(ok, 2, "the burst of 2; the frozen clock never refills");
  cr_assert_eq(refused, 3);
  const char *const handled[] = {"grpc_server_handled_total{",
                                 "grpc_method=\"Meta\"",
                                 "grpc_code=\"ResourceExhausted\""};
  cr_assert_eq(sample(handled, 3), 3);
  const char *const rejected[] = {"perfc_ratelimit_rejected_total{",
                                  "grpc_method=\"Meta\"", "scope=\"method\""};
  cr_assert_eq(sample(rejected, 3), 3);
  const char *const shed[] = {"perfc_shedding_rejected_total{",
                              "grpc_method=\"Meta\""};
  cr_assert_eq(sample(shed, 2), 0, "the shedder never saw the refusals");
}

Test(resilience, breaker_fails_fast_on_a_failing_method) {
  perfc_breaker_opts bo;
  perfc_breaker_opts_init(&bo);
  bo.registry = reg;
  bo.target = target;
  perfc_breaker *br;
  cr_assert_eq(perfc_breaker_new(&br, &bo), 0);
  const perfc_client_interceptor *ics[] = {
      perfc_grpc_metrics_client_interceptor(gm), perfc_breaker_interceptor(br)};
  perfc_channel_opts co;
  perfc_channel_opts_init(&co);
  co.interceptors = ics;
  co.interceptor_count = 2;
  perfc_channel *ch;
  cr_assert_eq(perfc_channel_new(&ch, target, &co), 0);
  Perfc__Test__V1__EchoRequest req = PERFC__TEST__V1__ECHO_REQUEST__INIT;
  req.code = PERFC_STATUS_UNAVAILABLE;
  perfc_call_opts ready = {.wait_for_ready = 1};
  req.message = "dependency down";
  for (int i = 0; i < 200; i++) {
    Perfc__Test__V1__EchoResponse *resp = NULL;
    cr_assert_eq(perfc__test__v1__test_service__fail__call(ch, &req, &resp,
                                                           &ready, NULL),
                 PERFC_STATUS_UNAVAILABLE);
  }
  perfc_channel_free(ch);
  /* p climbs towards 1 after 20 requests; with p >= 20/21 from then on,
   * well over half of the remaining 180 calls never left the client. */
  const char *const rej[] = {"perfc_breaker_rejected_total{",
                             "grpc_method=\"Fail\""};
  double refused = sample(rej, 2);
  const char *const reached[] = {"grpc_server_handled_total{",
                                 "grpc_method=\"Fail\"",
                                 "grpc_code=\"Unavailable\""};
  double served = sample(reached, 3);
  const char *const seen[] = {"grpc_client_handled_total{",
                              "grpc_method=\"Fail\"",
                              "grpc_code=\"Unavailable\""};
  cr_assert(refused >= 90 && refused <= 180, "refused %g", refused);
  cr_assert_eq(served + refused, 200, "served %g + refused %g", served,
               refused);
  cr_assert_eq(sample(seen, 3), 200, "the client metrics see every call");
  perfc_breaker_free(br);
}
