/* test_grpc_metrics.c — runtime/src/observe/grpc_metrics.c: go-grpc-prometheus
 * names, labels and counts for every method kind, on a real server and
 * channel. The service is built by hand over google.protobuf.Empty so this
 * test needs no generated code. */
#include <criterion/criterion.h>
#include "test_transport.h" /* test_server_new: both transports */
#include <pthread.h>
#include "empty_service.h"

#include <perfc.h>
#include <perfc/grpc_metrics.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *render(perfc_metrics_registry *reg) {
  char *text = NULL;
  size_t len = 0;
  cr_assert_eq(perfc_metrics_registry_render(reg, &text, &len), 0);
  return text;
}

static void expect_line(const char *text, const char *line) {
  char needle[512];
  snprintf(needle, sizeof needle, "\n%s\n", line);
  cr_assert(strstr(text, needle) != NULL, "missing line: %s\n--- scrape:\n%s",
            line, text);
}

/* A scrape that shows both lines, taken within 2 s. A client has its
 * answer once the response is sent, a moment before the worker leaves the
 * handler and the pool's observer lowers its gauges (seen under ASan in
 * make check): gauges that must fall back to 0 are read this way. */
static char *render_until(perfc_metrics_registry *reg, const char *a,
                          const char *b) {
  char na[256], nb[256];
  snprintf(na, sizeof na, "\n%s\n", a);
  snprintf(nb, sizeof nb, "\n%s\n", b);
  char *text = render(reg);
  for (int spin = 0; spin < 400 && (strstr(text, na) == NULL ||
                                    strstr(text, nb) == NULL); spin++) {
    free(text);
    usleep(5000);
    text = render(reg);
  }
  return text;
}

Test(grpc_metrics, server_and_client_series_match_go_grpc_prometheus) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_grpc_metrics *gm;
  perfc_grpc_metrics_opts o = {.registry = reg};
  cr_assert_eq(perfc_grpc_metrics_new(&gm, &o), 0);

  perfc_server *srv;
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &empty_impl, NULL), 0);
  cr_assert_eq(perfc_grpc_metrics_attach(gm, srv), 0);
  cr_assert_eq(perfc_server_start(srv), 0);

  /* Series of every method exist at zero before any call. */
  char *text = render(reg);
  expect_line(text, "grpc_server_started_total{grpc_type=\"bidi_stream\",grpc_service=\"t.v1.Svc\",grpc_method=\"Both\"} 0");
  expect_line(text, "grpc_server_handled_total{grpc_type=\"client_stream\",grpc_service=\"t.v1.Svc\",grpc_method=\"Up\",grpc_code=\"Unauthenticated\"} 0");
  expect_line(text, "grpc_server_msg_sent_total{grpc_type=\"server_stream\",grpc_service=\"t.v1.Svc\",grpc_method=\"Down\"} 0");
  expect_line(text, "# TYPE grpc_server_handling_seconds histogram");
  free(text);

  perfc_channel *ch;
  const perfc_client_interceptor *ics[] = {perfc_grpc_metrics_client_interceptor(gm)};
  perfc_channel_opts co = {.interceptors = ics, .interceptor_count = 1};
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, &co), 0);

  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  for (int i = 0; i < 7; i++) {
    ProtobufCMessage *resp = NULL;
    cr_assert_eq(perfc_channel_unary(ch, &empty_methods[0], &req.base, &resp, NULL, NULL),
                 PERFC_STATUS_OK);
    protobuf_c_message_free_unpacked(resp, NULL);
  }
  perfc_metadata md[] = {{"x-fail", "5", 0}};
  perfc_call_opts fail = {.metadata = md, .metadata_count = 1};
  for (int i = 0; i < 3; i++) {
    ProtobufCMessage *resp = NULL;
    cr_assert_eq(perfc_channel_unary(ch, &empty_methods[0], &req.base, &resp, &fail, NULL),
                 PERFC_STATUS_NOT_FOUND);
  }
  perfc_channel_free(ch);
  perfc_server_shutdown(srv, 1000);

  text = render(reg);
  const char *l = "grpc_type=\"unary\",grpc_service=\"t.v1.Svc\",grpc_method=\"Ping\"";
  char line[512];
  snprintf(line, sizeof line, "grpc_server_started_total{%s} 10", l);
  expect_line(text, line);
  snprintf(line, sizeof line, "grpc_server_handled_total{%s,grpc_code=\"OK\"} 7", l);
  expect_line(text, line);
  snprintf(line, sizeof line, "grpc_server_handled_total{%s,grpc_code=\"NotFound\"} 3", l);
  expect_line(text, line);
  snprintf(line, sizeof line, "grpc_server_handled_total{%s,grpc_code=\"Canceled\"} 0", l);
  expect_line(text, line);
  snprintf(line, sizeof line, "grpc_server_msg_received_total{%s} 10", l);
  expect_line(text, line);
  snprintf(line, sizeof line, "grpc_server_msg_sent_total{%s} 7", l);
  expect_line(text, line);
  snprintf(line, sizeof line, "grpc_server_handling_seconds_count{%s} 10", l);
  expect_line(text, line);
  snprintf(line, sizeof line, "grpc_server_handling_seconds_bucket{%s,le=\"+Inf\"} 10", l);
  expect_line(text, line);
  snprintf(line, sizeof line, "grpc_client_started_total{%s} 10", l);
  expect_line(text, line);
  snprintf(line, sizeof line, "grpc_client_handled_total{%s,grpc_code=\"NotFound\"} 3", l);
  expect_line(text, line);
  snprintf(line, sizeof line, "grpc_client_msg_sent_total{%s} 10", l);
  expect_line(text, line);
  snprintf(line, sizeof line, "grpc_client_msg_received_total{%s} 7", l);
  expect_line(text, line);
  snprintf(line, sizeof line, "grpc_client_handling_seconds_count{%s} 10", l);
  expect_line(text, line);
  free(text);

  perfc_server_free(srv);
  perfc_grpc_metrics_free(gm);
  perfc_metrics_registry_free(reg);
}

Test(grpc_metrics, histogram_can_be_turned_off) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_grpc_metrics *gm;
  perfc_grpc_metrics_opts o = {.registry = reg,
                               .disable_handling_time_histogram = true};
  cr_assert_eq(perfc_grpc_metrics_new(&gm, &o), 0);
  perfc_server *srv;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", NULL), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &empty_impl, NULL), 0);
  cr_assert_eq(perfc_grpc_metrics_attach(gm, srv), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  char *text = render(reg);
  cr_assert_null(strstr(text, "handling_seconds"));
  cr_assert_not_null(strstr(text, "# TYPE grpc_server_handled_total counter"));
  free(text);
  perfc_server_free(srv);
  perfc_grpc_metrics_free(gm);
  perfc_metrics_registry_free(reg);
}

static perfc_status_code deny(void *self, void *state, perfc_ctx *ctx, void **cs) {
  (void)self;
  (void)state;
  (void)cs;
  return perfc_ctx_error(ctx, PERFC_STATUS_PERMISSION_DENIED, "denied by test");
}

Test(grpc_metrics, interceptor_refusal_is_counted_and_skips_handler) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_grpc_metrics *gm;
  perfc_grpc_metrics_opts o = {.registry = reg};
  cr_assert_eq(perfc_grpc_metrics_new(&gm, &o), 0);
  perfc_server *srv;
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &empty_impl, NULL), 0);
  /* metrics first (outermost), then the refusing one: metrics sees the
   * refusal as the call's status. */
  cr_assert_eq(perfc_grpc_metrics_attach(gm, srv), 0);
  perfc_server_interceptor d = {.name = "deny", .before = deny};
  cr_assert_eq(perfc_server_add_interceptor(srv, &d), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  cr_assert_eq(perfc_server_add_interceptor(srv, &d), PERFC_ESTATE);

  perfc_channel *ch;
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status st = {0};
  cr_assert_eq(perfc_channel_unary(ch, &empty_methods[0], &req.base, &resp, NULL, &st),
               PERFC_STATUS_PERMISSION_DENIED);
  cr_assert_str_eq(st.message, "denied by test");
  perfc_status_reset(&st);
  perfc_channel_free(ch);
  perfc_server_shutdown(srv, 1000);
  char *text = render(reg);
  expect_line(text, "grpc_server_handled_total{grpc_type=\"unary\",grpc_service=\"t.v1.Svc\",grpc_method=\"Ping\",grpc_code=\"PermissionDenied\"} 1");
  free(text);
  perfc_server_free(srv);
  perfc_grpc_metrics_free(gm);
  perfc_metrics_registry_free(reg);
}

static void *sleepy_call(void *arg) {
  perfc_channel *ch = arg;
  perfc_metadata md[] = {{"x-sleep-ms", "300", 0}};
  perfc_call_opts opts = {.metadata = md, .metadata_count = 1};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_channel_unary(ch, &empty_methods[0], &req.base, &resp, &opts, NULL);
  if (resp != NULL)
    protobuf_c_message_free_unpacked(resp, NULL);
  return NULL;
}

/* The pool knows nothing of metrics (core may not call observe): the
 * metrics interceptor follows it through perfc_pool_opts.observer. While a
 * call runs on the only worker and a second waits, the gauges say 1 and 1;
 * afterwards 0 and 0. */
Test(grpc_metrics, pool_gauges_follow_the_pool_while_calls_run) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_grpc_metrics *gm;
  perfc_grpc_metrics_opts o = {.registry = reg};
  cr_assert_eq(perfc_grpc_metrics_new(&gm, &o), 0);
  perfc_server *srv;
  int port;
  perfc_server_opts so = {
      .default_executor = PERFC_EXEC_POOL, .pool_threads = 1, .pool_queue = 4};
  cr_assert_eq(test_server_new(&srv, &so), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &empty_impl, NULL), 0);
  cr_assert_eq(perfc_grpc_metrics_attach(gm, srv), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  perfc_channel *ch;
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  cr_assert_eq(empty_call(ch, 0), PERFC_STATUS_OK); /* connects */

  char busy1[128], queued1[128], busy0[128], queued0[128];
  snprintf(busy1, sizeof busy1, "perfc_server_pool_busy_workers{port=\"%d\"} 1",
           port);
  snprintf(queued1, sizeof queued1, "perfc_server_pool_queued{port=\"%d\"} 1",
           port);
  snprintf(busy0, sizeof busy0, "perfc_server_pool_busy_workers{port=\"%d\"} 0",
           port);
  snprintf(queued0, sizeof queued0, "perfc_server_pool_queued{port=\"%d\"} 0",
           port);
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    pthread_create(&th[i], NULL, sleepy_call, ch);
  /* Each call sleeps 300 ms: both states are seen well inside 2 s. */
  int seen = 0;
  for (int spin = 0; spin < 400 && !seen; spin++) {
    char *text = render(reg);
    seen = strstr(text, busy1) != NULL && strstr(text, queued1) != NULL;
    free(text);
    if (!seen)
      usleep(5000);
  }
  cr_assert(seen, "never saw one call running and one waiting");
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  char *text = render_until(reg, busy0, queued0);
  expect_line(text, busy0);
  expect_line(text, queued0);
  free(text);
  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_grpc_metrics_free(gm);
  perfc_metrics_registry_free(reg);
}

Test(grpc_metrics, pool_and_connection_metrics) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_grpc_metrics *gm;
  perfc_grpc_metrics_opts o = {.registry = reg};
  cr_assert_eq(perfc_grpc_metrics_new(&gm, &o), 0);
  perfc_server *srv;
  int port;
  /* One worker, one queue slot: of five concurrent sleepy calls at most two
   * are admitted, the rest refused and counted. */
  perfc_server_opts so = {.default_executor = PERFC_EXEC_POOL, .pool_threads = 1,
                          .pool_queue = 1};
  cr_assert_eq(test_server_new(&srv, &so), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &empty_impl, NULL), 0);
  cr_assert_eq(perfc_grpc_metrics_attach(gm, srv), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  perfc_channel *ch;
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  cr_assert_eq(empty_call(ch, 0), PERFC_STATUS_OK); /* connects */

  pthread_t th[5];
  for (int i = 0; i < 5; i++)
    pthread_create(&th[i], NULL, sleepy_call, ch);
  for (int i = 0; i < 5; i++)
    pthread_join(th[i], NULL);

  char queued0[128], busy0[128];
  snprintf(queued0, sizeof queued0, "perfc_server_pool_queued{port=\"%d\"} 0", port);
  snprintf(busy0, sizeof busy0, "perfc_server_pool_busy_workers{port=\"%d\"} 0", port);
  char *text = render_until(reg, queued0, busy0);
  char line[256];
  snprintf(line, sizeof line, "perfc_server_open_connections{port=\"%d\"} 1", port);
  expect_line(text, line);
  expect_line(text, queued0);
  expect_line(text, busy0);
  char needle[128];
  snprintf(needle, sizeof needle, "\nperfc_server_pool_rejected_total{port=\"%d\"} ", port);
  const char *at = strstr(text, needle);
  cr_assert_not_null(at, "%s", text);
  int rejected = atoi(at + strlen(needle));
  cr_assert(rejected >= 3 && rejected <= 4, "rejected %d", rejected);
  free(text);

  perfc_channel_free(ch);
  perfc_server_free(srv);
  /* The connection series outlives the server and reads 0, not freed memory. */
  text = render(reg);
  snprintf(line, sizeof line, "perfc_server_open_connections{port=\"%d\"} 0", port);
  expect_line(text, line);
  free(text);
  perfc_grpc_metrics_free(gm);
  perfc_metrics_registry_free(reg);
}
