/* test_access_log.c — runtime/src/observe/access_log.c: one record per call with
 * method, code, duration and peer; errors raised to warn; nothing from
 * metadata. */
#include "empty_service.h"
#include "test_transport.h" /* test_server_new: both transports */

#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char lines[16][1024];
static perfc_log_level levels[16];
static int nlines;

static void sink(perfc_log_level level, const char *msg, void *ud) {
  (void)ud;
  if (strstr(msg, "access") == NULL)
    return;
  pthread_mutex_lock(&mu);
  if (nlines < 16) {
    levels[nlines] = level;
    snprintf(lines[nlines++], sizeof lines[0], "%s", msg);
  }
  pthread_mutex_unlock(&mu);
}

Test(access_log, one_record_per_call_with_fields) {
  perfc_log_set_sink(sink, NULL);
  perfc_log_set_format(PERFC_LOG_LOGFMT);
  perfc_server *srv;
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &empty_impl, NULL), 0);
  cr_assert_eq(perfc_access_log_attach(PERFC_LOG_INFO, srv), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  perfc_channel *ch;
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  cr_assert_eq(empty_call(ch, 0), PERFC_STATUS_OK);
  cr_assert_eq(empty_call(ch, PERFC_STATUS_INTERNAL), PERFC_STATUS_INTERNAL);
  cr_assert_eq(empty_call(ch, PERFC_STATUS_NOT_FOUND), PERFC_STATUS_NOT_FOUND);
  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_log_set_sink(NULL, NULL);

  cr_assert_eq(nlines, 3);
  cr_assert(strstr(lines[0], "msg=\"access\" method=/t.v1.Svc/Ping code=OK duration_ms=") != NULL,
            "%s", lines[0]);
  cr_assert(strstr(lines[0], " peer=ipv4:127.0.0.1:") != NULL, "%s", lines[0]);
  cr_assert_eq(levels[0], PERFC_LOG_INFO);
  cr_assert(strstr(lines[1], "code=INTERNAL") != NULL, "%s", lines[1]);
  cr_assert_eq(levels[1], PERFC_LOG_WARN, "server errors are raised to warn");
  cr_assert_eq(levels[2], PERFC_LOG_INFO, "NOT_FOUND is the client's business");
  for (int i = 0; i < 3; i++)
    cr_assert_null(strstr(lines[i], "x-fail"), "metadata must never be logged");
}

Test(access_log, trace_and_span_ids_with_a_tracer) {
  nlines = 0;
  perfc_log_set_sink(sink, NULL);
  perfc_log_set_format(PERFC_LOG_LOGFMT);
  perfc_tracing_opts to;
  perfc_tracing_opts_init(&to);
  to.ignore_env = true;
  to.endpoint = "http://127.0.0.1:9/v1/traces";
  to.no_retry = true;
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  to.registry = reg;
  perfc_tracer *tr;
  cr_assert_eq(perfc_tracing_new(&tr, &to), 0);
  perfc_server *srv;
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &empty_svc, &empty_impl, NULL), 0);
  cr_assert_eq(perfc_tracing_attach(tr, srv), 0);
  cr_assert_eq(perfc_access_log_attach(PERFC_LOG_INFO, srv), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  perfc_channel *ch;
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
  perfc_metadata md[] = {
      {"traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 0}};
  perfc_call_opts opts = {.metadata = md, .metadata_count = 1};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  cr_assert_eq(perfc_channel_unary(ch, &empty_methods[0], &req.base, &resp, &opts, NULL),
               PERFC_STATUS_OK);
  protobuf_c_message_free_unpacked(resp, NULL);
  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_tracing_free(tr);
  perfc_metrics_registry_free(reg);
  perfc_log_set_sink(NULL, NULL);
  cr_assert_eq(nlines, 1);
  cr_assert(strstr(lines[0], " trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=") != NULL,
            "%s", lines[0]);
  const char *sp = strstr(lines[0], "span_id=") + 8;
  cr_assert_eq(strspn(sp, "0123456789abcdef"), 16, "%s", lines[0]);
  cr_assert_neq(strncmp(sp, "00f067aa0ba902b7", 16), 0, "the server span's own id");
}

Test(access_log, bad_level_refused) {
  perfc_server *srv;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_access_log_attach((perfc_log_level)9, srv), PERFC_EINVAL);
  perfc_server_free(srv);
}
