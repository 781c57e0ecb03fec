/* test_client_stream.c — runtime/src/client/client_stream.c without a server:
 * argument checks and a call whose server is not there. Calls against a
 * real server are in tests/integration/test_client.c. */
#include "empty_service.h"

#include <criterion/criterion.h>

Test(client_stream, refuses_unary_and_bad_request_arguments) {
  perfc_channel *ch;
  cr_assert_eq(perfc_channel_new(&ch, "127.0.0.1:1", NULL), 0);
  perfc_client_stream *s = NULL;
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  cr_assert_eq(perfc_channel_stream_open(ch, &empty_methods[0], NULL, NULL, &s),
               PERFC_EINVAL, "unary is not a stream");
  cr_assert_eq(perfc_channel_stream_open(ch, &empty_methods[2], NULL, NULL, &s),
               PERFC_EINVAL, "server streaming needs its request");
  cr_assert_eq(perfc_channel_stream_open(ch, &empty_methods[1], &req.base, NULL, &s),
               PERFC_EINVAL, "client streaming sends with send()");
  perfc_metadata md[] = {{"ok-key", "v", 0}, {"Bad Key", "v", 0}};
  perfc_call_opts co = {.metadata = md, .metadata_count = 2};
  cr_assert_eq(perfc_channel_stream_open(ch, &empty_methods[3], NULL, &co, &s),
               PERFC_EINVAL);
  cr_assert_null(s);
  perfc_client_stream_free(NULL);
  perfc_channel_free(ch);
}

Test(client_stream, server_down_fails_fast_with_unavailable) {
  perfc_channel *ch;
  cr_assert_eq(perfc_channel_new(&ch, "127.0.0.1:1", NULL), 0);
  perfc_client_stream *s;
  cr_assert_eq(perfc_channel_stream_open(ch, &empty_methods[3], NULL, NULL, &s), 0);
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  int rc = perfc_client_stream_send(s, &req.base);
  cr_assert(rc == 0 || rc == PERFC_ESHUTDOWN);
  ProtobufCMessage *m;
  cr_assert_eq(perfc_client_stream_recv(s, &m), PERFC_ESHUTDOWN);
  perfc_status st = {0};
  cr_assert_eq(perfc_client_stream_finish(s, NULL, &st), PERFC_STATUS_UNAVAILABLE);
  cr_assert_not_null(st.message);
  cr_assert_eq(perfc_client_stream_finish(s, NULL, NULL), PERFC_STATUS_UNAVAILABLE,
               "finish is idempotent");
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  perfc_channel_free(ch);
}
