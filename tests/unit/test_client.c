/* test_client.c — runtime/src/client/client.c: option defaults and failures that
 * need no server (calls against a real server are in tests/integration). */
#include <criterion/criterion.h>
#include <perfc/client.h>
#include <pthread.h>

#include "empty_service.h"

Test(client, option_defaults) {
  perfc_channel_opts o;
  perfc_channel_opts_init(&o);
  cr_assert_eq(o.connections, 1);
  cr_assert_eq(o.keepalive_time_ms, 0);
  cr_assert_eq(o.default_timeout_ms, 10000);
  cr_assert_eq(o.min_reconnect_backoff_ms, 100);
  cr_assert_eq(o.max_reconnect_backoff_ms, 10000);
  cr_assert_eq(o.connect_timeout_ms, 20000);
  cr_assert_eq(o.max_recv_message_bytes, 4 * 1024 * 1024);
  cr_assert_null(o.lb_policy);
}

Test(client, bad_arguments) {
  perfc_channel *ch;
  cr_assert_eq(perfc_channel_new(&ch, "", NULL), PERFC_EINVAL);
  cr_assert_eq(perfc_channel_new(NULL, "x:1", NULL), PERFC_EINVAL);
  perfc_channel_opts o = {.lb_policy = "random"};
  cr_assert_eq(perfc_channel_new(&ch, "127.0.0.1:1", &o), PERFC_EINVAL);
  perfc_channel_free(NULL);
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
