/* test_breaker.c — runtime/src/guard/breaker.c against a real server whose Ping
 * fails on request (empty_service.h's x-fail), with a controllable clock and
 * random source so every count is exact: the breaker lets calls through
 * until it has evidence, then refuses locally with UNAVAILABLE as the
 * dependency keeps failing, recovers through successes once the dependency
 * heals (and forgets failures older than its window), counts only overload
 * and failure codes against the backend, and keeps methods apart. */
#include "empty_service.h"
#include "test_transport.h" /* test_server_new: both transports */

#include <criterion/criterion.h>
#include <stdatomic.h>
#include <string.h>

static _Atomic int64_t fake_now = 1000000000000LL;
static int64_t clock_fn(void *ud) {
  (void)ud;
  return atomic_load(&fake_now);
}
static double fake_random = 0.5;
static double random_fn(void *ud) {
  (void)ud;
  return fake_random;
}

/* Ping under another descriptor: the breaker keys windows by descriptor. */
static const perfc_method_desc ping2 = {.name = "Ping2",
                                        .path = "/t.v1.Svc/Ping",
                                        .kind = PERFC_METHOD_UNARY,
                                        .input = EMPTY_MSG,
                                        .output = EMPTY_MSG,
                                        .invoke = empty_invoke};

/* empty_call() with wait_for_ready, so a slow first connect (under TSan)
 * is never mistaken for a failing dependency. */
static perfc_status_code bcall(perfc_channel *c, int fail_code) {
  char code[8];
  snprintf(code, sizeof code, "%d", fail_code);
  perfc_metadata md[] = {{"x-fail", code, 0}};
  perfc_call_opts opts = {
      .metadata = md, .metadata_count = fail_code ? 1 : 0, .wait_for_ready = 1};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status_code st =
      perfc_channel_unary(c, &empty_methods[0], &req.base, &resp, &opts, NULL);
  if (resp != NULL)
    protobuf_c_message_free_unpacked(resp, NULL);
  return st;
}

static perfc_metrics_registry *reg;
static perfc_breaker *br;
static perfc_server *srv;
static perfc_channel *ch;

static void start(void) {
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &empty_impl, NULL), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_breaker_opts bo;
  perfc_breaker_opts_init(&bo);
  bo.registry = reg;
  bo.target = target;
  bo.clock = clock_fn;
  bo.random = random_fn;
  cr_assert_eq(perfc_breaker_new(&br, &bo), 0);
  const perfc_client_interceptor *ics[] = {perfc_breaker_interceptor(br)};
  perfc_channel_opts co;
  perfc_channel_opts_init(&co);
  co.interceptors = ics;
  co.interceptor_count = 1;
  cr_assert_eq(perfc_channel_new(&ch, target, &co), 0);
  fake_random = 0.5;
}

static void stop(void) {
  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_breaker_free(br);
  perfc_metrics_registry_free(reg);
}

static double metric(const char *name, const char *method) {
  char *text, line[256];
  size_t len;
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  snprintf(line, sizeof line, "%s{target=\"", name);
  double v = -1;
  for (char *p = strstr(text, line); p; p = strstr(p + 1, line)) {
    char want[64];
    snprintf(want, sizeof want, "grpc_method=\"%s\"} ", method);
    char *eol = strchr(p, '\n');
    char *m = strstr(p, want);
    if (m && (!eol || m < eol)) {
      v = strtod(m + strlen(want), NULL);
      break;
    }
  }
  free(text);
  return v;
}

Test(breaker, opens_on_failing_dependency_and_recovers_through_successes) {
  start();
  /* Below min_requests (20) nothing is refused, whatever fails. */
  for (int i = 0; i < 20; i++)
    cr_assert_eq(bcall(ch, PERFC_STATUS_UNAVAILABLE), PERFC_STATUS_UNAVAILABLE);
  cr_assert_float_eq(perfc_breaker_probability(br, &empty_methods[0]),
                     20.0 / 21.0, 1e-9);
  cr_assert_eq(metric("perfc_breaker_state", "Ping"), 0,
               "the gauge moves on the next call");
  /* Now p = 20/21 > 0.5: refused locally, the server never sees them. */
  perfc_status st = {0};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  cr_assert_eq(
      perfc_channel_unary(ch, &empty_methods[0], &req.base, &resp, NULL, &st),
      PERFC_STATUS_UNAVAILABLE);
  cr_assert_str_eq(st.message, "refused by a client interceptor");
  perfc_status_reset(&st);
  for (int i = 0; i < 9; i++)
    cr_assert_eq(bcall(ch, 0), PERFC_STATUS_UNAVAILABLE);
  cr_assert_eq(metric("perfc_breaker_rejected_total", "Ping"), 10);
  cr_assert_eq(metric("perfc_breaker_state", "Ping"), 1);
  cr_assert_float_eq(perfc_breaker_probability(br, &empty_methods[0]),
                     30.0 / 31.0, 1e-9, "refused calls count as requests");
  cr_assert_float_eq(perfc_breaker_probability(br, &ping2), 0, 1e-9,
                     "another method keeps its own window");

  /* The dependency heals; draws above p let calls through, and each
   * success lowers p: (30 + n - 1.5 n) / (31 + n) reaches 0 at n = 60. */
  fake_random = 0.999;
  for (int n = 1; n <= 60; n++) {
    cr_assert_eq(bcall(ch, 0), PERFC_STATUS_OK, "call %d", n);
    double p = perfc_breaker_probability(br, &empty_methods[0]);
    if (n < 60)
      cr_assert(p > 0, "after %d successes p = %g", n, p);
    else
      cr_assert_float_eq(p, 0, 1e-9);
  }
  fake_random = 0;
  cr_assert_eq(bcall(ch, 0), PERFC_STATUS_OK, "p = 0 refuses nothing");
  cr_assert_eq(metric("perfc_breaker_state", "Ping"), 0);
  cr_assert_eq(metric("perfc_breaker_rejected_total", "Ping"), 10);
  stop();
}

Test(breaker, failures_older_than_the_window_are_forgotten) {
  start();
  for (int i = 0; i < 30; i++)
    bcall(ch, PERFC_STATUS_INTERNAL);
  cr_assert(perfc_breaker_probability(br, &empty_methods[0]) > 0.9);
  atomic_fetch_add(&fake_now, 5000LL * 1000000); /* half the window */
  cr_assert(perfc_breaker_probability(br, &empty_methods[0]) > 0.9);
  atomic_fetch_add(&fake_now, 5000LL * 1000000);
  cr_assert_float_eq(perfc_breaker_probability(br, &empty_methods[0]), 0, 1e-9);
  fake_random = 0;
  cr_assert_eq(bcall(ch, 0), PERFC_STATUS_OK);
  stop();
}

Test(breaker, application_errors_count_as_accepted) {
  start();
  static const int codes[] = {
      PERFC_STATUS_NOT_FOUND, PERFC_STATUS_INVALID_ARGUMENT,
      PERFC_STATUS_PERMISSION_DENIED, PERFC_STATUS_FAILED_PRECONDITION};
  for (int i = 0; i < 40; i++)
    cr_assert_eq(bcall(ch, codes[i % 4]), (perfc_status_code)codes[i % 4]);
  cr_assert_float_eq(perfc_breaker_probability(br, &empty_methods[0]), 0, 1e-9);
  /* K = 1.5: a third of calls failing is tolerated, more is not. */
  for (int i = 0; i < 20; i++)
    bcall(ch, PERFC_STATUS_RESOURCE_EXHAUSTED);
  cr_assert_float_eq(perfc_breaker_probability(br, &empty_methods[0]), 0, 1e-9,
                     "60 requests, 40 accepted: 60 - 1.5 * 40 = 0");
  bcall(ch, PERFC_STATUS_DEADLINE_EXCEEDED);
  cr_assert_float_eq(perfc_breaker_probability(br, &empty_methods[0]),
                     1.0 / 62.0, 1e-9);
  cr_assert_eq(metric("perfc_breaker_rejected_total", "Ping"), 0);
  stop();
}

Test(breaker, bad_options_refused) {
  perfc_breaker *b;
  perfc_breaker_opts o;
  perfc_breaker_opts_init(&o);
  o.k = 0.5;
  cr_assert_eq(perfc_breaker_new(&b, &o), PERFC_EINVAL);
  perfc_breaker_opts_init(&o);
  o.buckets = 2000;
  cr_assert_eq(perfc_breaker_new(&b, &o), PERFC_EINVAL);
  perfc_breaker_opts_init(&o);
  o.window_ms = 10;
  cr_assert_eq(perfc_breaker_new(&b, &o), PERFC_EINVAL);
  cr_assert_eq(perfc_breaker_new(NULL, NULL), PERFC_EINVAL);
  cr_assert_null(perfc_breaker_interceptor(NULL));
  cr_assert_float_eq(perfc_breaker_probability(NULL, NULL), 0, 1e-9);
  perfc_breaker_free(NULL);
}

/* Ping, counting the attempts that reach the server. */
static atomic_int attempts;
static perfc_status_code counting_ping(perfc_ctx *ctx, void *ud) {
  atomic_fetch_add(&attempts, 1);
  return empty_ping(ctx, ud);
}
static const empty_handlers counting_impl = {counting_ping};

Test(breaker, counts_one_request_per_call_across_core_retries) {
  /* The client's view of the service: Ping is idempotent, so the core
   * retries it on UNAVAILABLE (4 attempts by default). */
  perfc_method_desc retry_methods[1] = {empty_methods[0]};
  retry_methods[0].idempotent = 1;
  perfc_service_desc retry_svc = empty_svc;
  retry_svc.n_methods = 1;
  retry_svc.methods = retry_methods;

  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &counting_impl, NULL),
               0);
  cr_assert_eq(perfc_server_start(srv), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_breaker_opts bo;
  perfc_breaker_opts_init(&bo);
  bo.registry = reg;
  bo.min_requests = 1;
  bo.clock = clock_fn;
  cr_assert_eq(perfc_breaker_new(&br, &bo), 0);
  const perfc_client_interceptor *ics[] = {perfc_breaker_interceptor(br)};
  const perfc_service_desc *retry[] = {&retry_svc};
  perfc_channel_opts co;
  perfc_channel_opts_init(&co);
  co.interceptors = ics;
  co.interceptor_count = 1;
  co.retry_services = retry;
  co.retry_service_count = 1;
  cr_assert_eq(perfc_channel_new(&ch, target, &co), 0);

  atomic_store(&attempts, 0);
  cr_assert_eq(bcall(ch, PERFC_STATUS_UNAVAILABLE), PERFC_STATUS_UNAVAILABLE);
  cr_assert_eq(atomic_load(&attempts), PERFC_DEFAULT_RETRY_MAX_ATTEMPTS,
               "the core retried below the interceptor");
  cr_assert_float_eq(perfc_breaker_probability(br, &empty_methods[0]), 0.5,
                     1e-9, "one request, not accepted: (1 - 0) / (1 + 1)");
  stop();
}
