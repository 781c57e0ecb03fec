/* empty_service.h — a hand-built service over google.protobuf.Empty with one
 * method of each kind, for unit tests that need a real server but no
 * generated code. Ping answers OK, or the status named by metadata x-fail,
 * after sleeping x-sleep-ms milliseconds when that is set. */
#ifndef PERFC_TEST_EMPTY_SERVICE_H
#define PERFC_TEST_EMPTY_SERVICE_H

#include <google/protobuf/empty.pb-c.h>
#include <perfc.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

typedef struct empty_handlers {
  perfc_status_code (*ping)(perfc_ctx *, void *);
} empty_handlers;

static inline perfc_status_code empty_invoke(perfc_ctx *ctx, const void *h,
                                             void *ud, const ProtobufCMessage *req,
                                             ProtobufCMessage *resp,
                                             perfc_stream *s) {
  (void)req;
  (void)resp;
  (void)s;
  return ((const empty_handlers *)h)->ping(ctx, ud);
}

static inline perfc_status_code empty_ping(perfc_ctx *ctx, void *ud) {
  (void)ud;
  const char *sleep_ms = perfc_ctx_metadata_get(ctx, "x-sleep-ms", NULL);
  if (sleep_ms != NULL) {
    struct timespec ts = {0, atoi(sleep_ms) * 1000000L};
    nanosleep(&ts, NULL);
  }
  const char *fail = perfc_ctx_metadata_get(ctx, "x-fail", NULL);
  if (fail != NULL)
    return perfc_ctx_error(ctx, (perfc_status_code)atoi(fail), "asked to fail");
  return PERFC_STATUS_OK;
}

#define EMPTY_MSG &google__protobuf__empty__descriptor
static const perfc_method_desc empty_methods[] = {
    {.name = "Ping", .path = "/t.v1.Svc/Ping", .kind = PERFC_METHOD_UNARY,
     .input = EMPTY_MSG, .output = EMPTY_MSG, .invoke = empty_invoke},
    {.name = "Up", .path = "/t.v1.Svc/Up", .kind = PERFC_METHOD_CLIENT_STREAM,
     .input = EMPTY_MSG, .output = EMPTY_MSG, .invoke = empty_invoke},
    {.name = "Down", .path = "/t.v1.Svc/Down", .kind = PERFC_METHOD_SERVER_STREAM,
     .input = EMPTY_MSG, .output = EMPTY_MSG, .invoke = empty_invoke},
    {.name = "Both", .path = "/t.v1.Svc/Both", .kind = PERFC_METHOD_BIDI_STREAM,
     .input = EMPTY_MSG, .output = EMPTY_MSG, .invoke = empty_invoke},
};
static const perfc_service_desc empty_svc = {.name = "t.v1.Svc", .n_methods = 4,
                                             .methods = empty_methods};
static const empty_handlers empty_impl = {empty_ping};

/* Calls Ping once; `fail_code` 0 = succeed. Returns the status code. */
static inline perfc_status_code empty_call(perfc_channel *ch, int fail_code) {
  char code[8];
  snprintf(code, sizeof code, "%d", fail_code);
  perfc_metadata md[] = {{"x-fail", code, 0}};
  perfc_call_opts opts = {.metadata = md, .metadata_count = fail_code ? 1 : 0};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status_code c =
      perfc_channel_unary(ch, &empty_methods[0], &req.base, &resp, &opts, NULL);
  if (resp != NULL)
    protobuf_c_message_free_unpacked(resp, NULL);
  return c;
}
#endif
