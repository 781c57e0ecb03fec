/* test_client.c — runtime/src/client/client.c: option defaults and failures that
 * need no server (calls against a real server are in tests/integration). */
#include <criterion/criterion.h>
#include <perfc/client.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "empty_service.h"

#include <stdbool.h>
#include <string.h>

static void cb_never(perfc_status_code code, const char *message,
                     const ProtobufCMessage *resp, void *ud) {
  (void)code;
  (void)message;
  (void)resp;
  (void)ud;
  cr_assert_fail("a refused call's callback ran");
}

Test(client, option_defaults) {
  perfc_channel_opts o;
  perfc_channel_opts_init(&o);
  cr_assert_eq(o.connections, 1);
  cr_assert_eq(o.keepalive_enabled, false);
  /* Left 0 (= 30 s once enabled) so an interval alone can be refused. */
  cr_assert_eq(o.keepalive_time_ms, 0);
  cr_assert_eq(o.keepalive_timeout_ms, 20000);
  cr_assert_eq(o.keepalive_permit_without_calls, false);
  cr_assert_eq(o.default_timeout_ms, 10000);
  cr_assert_eq(o.no_default_timeout, false);
  cr_assert_eq(o.min_reconnect_backoff_ms, 100);
  cr_assert_eq(o.max_reconnect_backoff_ms, 10000);
  cr_assert_eq(o.connect_timeout_ms, 20000);
  cr_assert_eq(o.max_recv_message_bytes, (size_t)4 * 1024 * 1024);
  cr_assert_eq(o.max_send_message_bytes, (size_t)4 * 1024 * 1024);
  cr_assert_eq(o.no_recv_message_limit, false);
  cr_assert_eq(o.no_send_message_limit, false);
  cr_assert_null(o.lb_policy);
  cr_assert_eq(PERFC_DEFAULT_CLIENT_KEEPALIVE_TIME_MS, 30000);
}

Test(client, bad_arguments) {
  perfc_channel *ch;
  cr_assert_eq(perfc_channel_new(&ch, "", NULL), PERFC_EINVAL);
  cr_assert_str_eq(perfc_last_error(), "channel: no target");
  cr_assert_eq(perfc_channel_new(NULL, "x:1", NULL), PERFC_EINVAL);
  perfc_channel_opts o = {.lb_policy = "random"};
  cr_assert_eq(perfc_channel_new(&ch, "127.0.0.1:1", &o), PERFC_EINVAL);
  cr_assert_str_eq(perfc_last_error(),
                   "channel: lb_policy \"random\" unknown (pick_first, "
                   "round_robin)");
  perfc_channel_free(NULL);
}

/* perfc_channel_new() refuses `o` with PERFC_EINVAL and a message that
 * contains `want` (the field it names); nothing is created. */
static void refused(const perfc_channel_opts *o, const char *want) {
  perfc_channel *ch = (perfc_channel *)1;
  cr_assert_eq(perfc_channel_new(&ch, "127.0.0.1:1", o), PERFC_EINVAL,
               "accepted, expected a refusal naming %s", want);
  cr_assert_eq(ch, (perfc_channel *)1, "*out written on a refusal");
  cr_assert_not_null(strstr(perfc_last_error(), want), "\"%s\" lacks \"%s\"",
                     perfc_last_error(), want);
}

static void accepted(const perfc_channel_opts *o) {
  perfc_channel *ch = NULL;
  cr_assert_eq(perfc_channel_new(&ch, "127.0.0.1:1", o), 0, "%s",
               perfc_last_error());
  perfc_channel_free(ch);
}

/* Issue #14 item 4: no sentinels in the channel options. What used to be
 * "0 = off" or "-1 = none" is refused with a message naming the field and
 * the switch to use instead, so old code fails loudly, not silently. */
Test(client, channel_options_refused_with_the_field_named) {
  /* The old way to turn pings on: an interval alone. */
  refused(&(perfc_channel_opts){.keepalive_time_ms = 10000},
          "keepalive_time_ms 10000 without keepalive_enabled");
  refused(&(perfc_channel_opts){.keepalive_permit_without_calls = true},
          "keepalive_permit_without_calls without keepalive_enabled");
  refused(&(perfc_channel_opts){.keepalive_enabled = true,
                                .keepalive_time_ms = -5},
          "keepalive_time_ms -5 out of range");
  refused(&(perfc_channel_opts){.keepalive_enabled = true,
                                .keepalive_time_ms = 2147483648LL},
          "keepalive_time_ms 2147483648 out of range");
  refused(&(perfc_channel_opts){.keepalive_timeout_ms = -1},
          "keepalive_timeout_ms -1 out of range");
  refused(&(perfc_channel_opts){.connect_timeout_ms = 1LL << 40},
          "connect_timeout_ms");
  refused(&(perfc_channel_opts){.min_reconnect_backoff_ms = -1},
          "min_reconnect_backoff_ms -1");
  refused(&(perfc_channel_opts){.min_reconnect_backoff_ms = 20000},
          "min_reconnect_backoff_ms 20000 above max_reconnect_backoff_ms "
          "10000");
  /* The old "-1 = unlimited", as a size_t. */
  refused(&(perfc_channel_opts){.max_recv_message_bytes = (size_t)-1},
          "max_recv_message_bytes");
  refused(&(perfc_channel_opts){.max_recv_message_bytes = (size_t)-1},
          "no_recv_message_limit = true for no limit");
  refused(&(perfc_channel_opts){.max_send_message_bytes = (size_t)1 << 31},
          "max_send_message_bytes 2147483648 above 2147483647");
  refused(&(perfc_channel_opts){.default_timeout_ms = -1},
          "default_timeout_ms -1 is negative (no_default_timeout = true");
  refused(&(perfc_channel_opts){.compression = "br"},
          "compression \"br\" unknown");
  const perfc_client_interceptor *none[1] = {NULL};
  refused(&(perfc_channel_opts){.interceptors = none, .interceptor_count = 1},
          "interceptors[0] is NULL");
  refused(&(perfc_channel_opts){.interceptor_count = PERFC_MAX_INTERCEPTORS + 1},
          "interceptor_count");
  refused(&(perfc_channel_opts){.retry_service_count = 1},
          "retry_services[0] is NULL");
}

Test(client, channel_switches_accepted) {
  accepted(&(perfc_channel_opts){.keepalive_enabled = true});
  accepted(&(perfc_channel_opts){.keepalive_enabled = true,
                                 .keepalive_time_ms = 15000,
                                 .keepalive_permit_without_calls = true});
  accepted(&(perfc_channel_opts){.no_recv_message_limit = true,
                                 .no_send_message_limit = true});
  accepted(&(perfc_channel_opts){.no_default_timeout = true});
  accepted(&(perfc_channel_opts){.max_recv_message_bytes = 2147483647});
  perfc_channel_opts o;
  perfc_channel_opts_init(&o); /* what init writes passes its own checks */
  accepted(&o);
}

/* A call's options: negative timeouts and a timeout beside no_timeout are
 * refused before anything is sent, through each call path's own channel
 * for errors (a status for the synchronous call, PERFC_EINVAL plus
 * perfc_last_error() for the others). */
Test(client, call_options_refused_with_the_field_named) {
  perfc_channel *ch;
  cr_assert_eq(perfc_channel_new(&ch, "127.0.0.1:1", NULL), 0);
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  static const struct {
    perfc_call_opts o;
    const char *want;
  } bad[] = {
      {{.timeout_ms = -1}, "timeout_ms -1 is negative (no_timeout = true"},
      {{.no_timeout = true, .timeout_ms = 500},
       "no_timeout with timeout_ms 500"},
      {{.metadata_count = 2}, "metadata is NULL with metadata_count 2"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    perfc_status st = {0};
    ProtobufCMessage *resp = NULL;
    cr_assert_eq(perfc_channel_unary(ch, &empty_methods[0], &req.base, &resp,
                                     &bad[i].o, &st),
                 PERFC_STATUS_INVALID_ARGUMENT);
    cr_assert_not_null(st.message);
    cr_assert_not_null(strstr(st.message, bad[i].want), "%s", st.message);
    perfc_status_reset(&st);
    cr_assert_eq(perfc_channel_unary_async(ch, &empty_methods[0], &req.base,
                                           &bad[i].o, cb_never, NULL),
                 PERFC_EINVAL);
    cr_assert_not_null(strstr(perfc_last_error(), bad[i].want), "%s",
                       perfc_last_error());
    cr_assert_not_null(strstr(perfc_last_error(), empty_methods[0].path));
    perfc_client_stream *s = (perfc_client_stream *)1;
    cr_assert_eq(perfc_channel_stream_open(ch, &empty_methods[1], NULL,
                                           &bad[i].o, &s),
                 PERFC_EINVAL);
    cr_assert_not_null(strstr(perfc_last_error(), bad[i].want), "%s",
                       perfc_last_error());
    cr_assert_eq(s, (perfc_client_stream *)1);
  }
  /* The switch alone is fine: the call starts (and fails on the dead
   * target, as a call does). */
  perfc_call_opts ok = {.no_timeout = true};
  perfc_status st = {0};
  ProtobufCMessage *resp = NULL;
  cr_assert_eq(perfc_channel_unary(ch, &empty_methods[0], &req.base, &resp,
                                   &ok, &st),
               PERFC_STATUS_UNAVAILABLE, "%s", st.message ? st.message : "");
  perfc_status_reset(&st);
  perfc_channel_free(ch);
}

Test(client, null_call_arguments_are_invalid_argument) {
  perfc_channel *ch;
  cr_assert_eq(perfc_channel_new(&ch, "127.0.0.1:1", NULL), 0);
  perfc_status st = {0};
  ProtobufCMessage *resp = (ProtobufCMessage *)1;
  cr_assert_eq(perfc_channel_unary(ch, NULL, NULL, &resp, NULL, &st),
               PERFC_STATUS_INVALID_ARGUMENT);
  cr_assert_null(resp);
  cr_assert_not_null(st.message);
  perfc_status_reset(&st);
  perfc_channel_free(ch);
}

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int callbacks;
static perfc_status_code last_code;

static void cb(perfc_status_code code, const char *message,
               const ProtobufCMessage *resp, void *ud) {
  (void)message;
  (void)ud;
  pthread_mutex_lock(&mu);
  callbacks++;
  last_code = code;
  cr_assert_null(resp);
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
}

Test(client, async_to_a_dead_server_calls_back_once_with_unavailable) {
  perfc_channel *ch;
  cr_assert_eq(perfc_channel_new(&ch, "127.0.0.1:1", NULL), 0);
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  cr_assert_eq(perfc_channel_unary_async(ch, &empty_methods[0], &req.base, NULL, cb, NULL), 0);
  cr_assert_eq(perfc_channel_unary_async(ch, NULL, &req.base, NULL, cb, NULL), PERFC_EINVAL);
  cr_assert_eq(perfc_channel_unary_async(ch, &empty_methods[0], &req.base, NULL, NULL, NULL),
               PERFC_EINVAL);
  pthread_mutex_lock(&mu);
  while (callbacks == 0)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
  perfc_channel_free(ch);
  cr_assert_eq(callbacks, 1);
  cr_assert_eq(last_code, PERFC_STATUS_UNAVAILABLE);
}

/* xds: targets: the C core reads its bootstrap only when the resolver
 * starts, and says "Failed to load file" for a bootstrap it cannot read;
 * perfc_channel_new() checks first and names the variables and the file. */
Test(client, xds_target_without_bootstrap_is_refused_clearly) {
  unsetenv("GRPC_XDS_BOOTSTRAP");
  unsetenv("GRPC_XDS_BOOTSTRAP_CONFIG");
  perfc_channel *ch = NULL;
  cr_assert_eq(perfc_channel_new(&ch, "xds:///user-service", NULL),
               PERFC_EINVAL);
  cr_assert_str_eq(perfc_last_error(),
                   "channel: target \"xds:///user-service\" needs an xDS "
                   "bootstrap: set GRPC_XDS_BOOTSTRAP to the bootstrap file's "
                   "path or GRPC_XDS_BOOTSTRAP_CONFIG to its JSON (neither is "
                   "set)");
  cr_assert_null(ch);
  setenv("GRPC_XDS_BOOTSTRAP", "/nonexistent/perfc-xds-bootstrap.json", 1);
  cr_assert_eq(perfc_channel_new(&ch, "xds:///user-service", NULL),
               PERFC_EINVAL);
  cr_assert_str_eq(perfc_last_error(),
                   "channel: target \"xds:///user-service\": the xDS "
                   "bootstrap file "
                   "GRPC_XDS_BOOTSTRAP=/nonexistent/perfc-xds-bootstrap.json "
                   "cannot be read: No such file or directory");
  /* Other schemes are not the check's business. */
  cr_assert_eq(perfc_channel_new(&ch, "dns:///localhost:1", NULL), 0);
  perfc_channel_free(ch);
  unsetenv("GRPC_XDS_BOOTSTRAP");
}

/* With a readable bootstrap whose control plane does not answer, the
 * channel is made and a call fails UNAVAILABLE with the core's message
 * naming the xDS server (what a user sees when the control plane is
 * down). */
Test(client, xds_target_with_unreachable_control_plane_names_it) {
  char path[] = "/tmp/perfc-xds-XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  const char *boot =
      "{\"xds_servers\":[{\"server_uri\":\"127.0.0.1:1\","
      "\"channel_creds\":[{\"type\":\"insecure\"}]}],"
      "\"node\":{\"id\":\"perfc-test\"}}";
  cr_assert_eq(write(fd, boot, strlen(boot)), (ssize_t)strlen(boot));
  close(fd);
  setenv("GRPC_XDS_BOOTSTRAP", path, 1);
  perfc_channel *ch = NULL;
  cr_assert_eq(perfc_channel_new(&ch, "xds:///user-service", NULL), 0, "%s",
               perfc_last_error());
  perfc_status st = {0};
  perfc_call_opts co = {.timeout_ms = 5000};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status_code c =
      perfc_channel_unary(ch, &empty_methods[0], &req.base, &resp, &co, &st);
  cr_assert_null(resp);
  cr_assert_eq(c, PERFC_STATUS_UNAVAILABLE, "%s", perfc_status_name(c));
  cr_assert(st.message && strstr(st.message, "xDS channel for server "
                                             "127.0.0.1:1"),
            "%s", st.message ? st.message : "(none)");
  perfc_status_reset(&st);
  perfc_channel_free(ch);
  unsetenv("GRPC_XDS_BOOTSTRAP");
  unlink(path);
}
