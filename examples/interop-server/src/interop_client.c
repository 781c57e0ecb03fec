/*
 * interop_client.c — grpc's interop test cases (doc/interop-test-descriptions.md)
 * driven through perfc's generated client stubs, against any interop
 * server: perfc's interop-server or grpc's own.
 *
 *   interop-client --server_host H --server_port P --test_case NAME
 *                  [--use_tls true|false] [--use_test_ca true|false]
 *                  [--server_host_override NAME] [--tls_dir DIR]
 *
 * Exit status 0 when the case passed; otherwise 1 with the reason on
 * stderr. `--test_case all` runs every case in order.
 *
 * Room: examples/interop-server.
 */
#include "grpc/testing/test.perfc.h"
#include "interop_flags.h"

#include <perfc.h>
#include <perfc/tls.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *current_case = "?";

/* Prints the reason a case failed and returns 1, so a case can
 * `return fail("...")`. */
static int fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static int fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "interop-client: %s: FAIL: ", current_case);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return 1;
}

#define MSG(st) ((st).message ? (st).message : "")

/* Request and response sizes are the interop descriptions' own numbers. */
static const int32_t in_sizes[] = {27182, 8, 1828, 45904};
static const int32_t out_sizes[] = {31415, 9, 2653, 58979};
#define LARGE_REQ 271828
#define LARGE_RESP 314159

static uint8_t zeros[LARGE_RESP + 1];

static void set_payload(Grpc__Testing__Payload *p, size_t n) {
  grpc__testing__payload__init(p);
  p->body.data = zeros;
  p->body.len = n;
}

static int check_payload(const char *what, const Grpc__Testing__Payload *p, size_t n) {
  if (n == 0 && p == NULL)
    return 0;
  if (p == NULL)
    return fail("%s: response has no payload (expected %zu bytes)", what, n);
  if (p->body.len != n)
    return fail("%s: payload of %zu bytes, expected %zu", what, p->body.len, n);
  for (size_t i = 0; i < n; i++)
    if (p->body.data[i] != 0)
      return fail("%s: payload byte %zu is %u, expected 0", what, i, p->body.data[i]);
  return 0;
}

static int expect_code(const char *what, perfc_status_code got, const perfc_status *st,
                       perfc_status_code want) {
  if (got == want)
    return 0;
  return fail("%s: status %s (%s), expected %s", what, perfc_status_name((int)got),
              MSG(*st), perfc_status_name((int)want));
}

/* ---- unary ------------------------------------------------------------------ */

typedef struct async_wait {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done;
  perfc_status_code code;
} async_wait;

static void on_async(perfc_status_code code, const char *message,
                     const ProtobufCMessage *resp, void *ud) {
  (void)message, (void)resp;
  async_wait *w = ud;
  pthread_mutex_lock(&w->mu);
  w->code = code;
  w->done = 1;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->mu);
}

static int empty_unary(perfc_channel *ch) {
  Grpc__Testing__Empty req = GRPC__TESTING__EMPTY__INIT, *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c = grpc__testing__test_service__empty_call__call(ch, &req, &resp, NULL, &st);
  int rc = expect_code("EmptyCall", c, &st, PERFC_STATUS_OK);
  perfc_status_reset(&st);
  if (resp != NULL)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  if (rc)
    return rc;
  /* The same call through the asynchronous stub. */
  async_wait w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, PERFC_STATUS_UNKNOWN};
  if (grpc__testing__test_service__empty_call__call_async(ch, &req, NULL, on_async, &w) != 0)
    return fail("EmptyCall (async): could not start");
  pthread_mutex_lock(&w.mu);
  while (!w.done)
    pthread_cond_wait(&w.cv, &w.mu);
  pthread_mutex_unlock(&w.mu);
  if (w.code != PERFC_STATUS_OK)
    return fail("EmptyCall (async): status %s", perfc_status_name((int)w.code));
  return 0;
}

/* One UnaryCall with the large_unary sizes; `tweak` adjusts the request. */
static int large_call(perfc_channel *ch, const char *what, const perfc_call_opts *opts,
                      const Grpc__Testing__BoolValue *expect_compressed,
                      const Grpc__Testing__BoolValue *response_compressed,
                      perfc_status_code want) {
  Grpc__Testing__SimpleRequest req = GRPC__TESTING__SIMPLE_REQUEST__INIT;
  Grpc__Testing__Payload payload;
  set_payload(&payload, LARGE_REQ);
  req.response_size = LARGE_RESP;
  req.payload = &payload;
  req.expect_compressed = (Grpc__Testing__BoolValue *)expect_compressed;
  req.response_compressed = (Grpc__Testing__BoolValue *)response_compressed;
  Grpc__Testing__SimpleResponse *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c = grpc__testing__test_service__unary_call__call(ch, &req, &resp, opts, &st);
  int rc = expect_code(what, c, &st, want);
  if (rc == 0 && want == PERFC_STATUS_OK)
    rc = check_payload(what, resp->payload, LARGE_RESP);
  perfc_status_reset(&st);
  if (resp != NULL)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

static int large_unary(perfc_channel *ch) {
  return large_call(ch, "UnaryCall", NULL, NULL, NULL, PERFC_STATUS_OK);
}

static int client_compressed_unary(perfc_channel *ch) {
  Grpc__Testing__BoolValue yes = GRPC__TESTING__BOOL_VALUE__INIT, no = yes;
  yes.value = 1;
  perfc_call_opts plain = {0}, gzip = {0};
  plain.compression = "identity";
  gzip.compression = "gzip";
  /* The probe: an uncompressed request that claims to be compressed must
   * be refused, or the server cannot check compression at all. */
  if (large_call(ch, "probe (uncompressed, expect_compressed=true)", &plain, &yes, NULL,
                 PERFC_STATUS_INVALID_ARGUMENT))
    return 1;
  if (large_call(ch, "compressed request", &gzip, &yes, NULL, PERFC_STATUS_OK))
    return 1;
  return large_call(ch, "uncompressed request", &plain, &no, NULL, PERFC_STATUS_OK);
}

static int server_compressed_unary(perfc_channel *ch) {
  Grpc__Testing__BoolValue yes = GRPC__TESTING__BOOL_VALUE__INIT, no = yes;
  yes.value = 1;
  if (large_call(ch, "compressed response", NULL, NULL, &yes, PERFC_STATUS_OK))
    return 1;
  return large_call(ch, "uncompressed response", NULL, NULL, &no, PERFC_STATUS_OK);
}

/* ---- streams ---------------------------------------------------------------- */

static int client_streaming(perfc_channel *ch) {
  perfc_client_stream *s = NULL;
  if (grpc__testing__test_service__streaming_input_call__open(ch, NULL, &s) != 0)
    return fail("StreamingInputCall: open failed");
  int32_t total = 0;
  for (size_t i = 0; i < 4; i++) {
    Grpc__Testing__StreamingInputCallRequest m = GRPC__TESTING__STREAMING_INPUT_CALL_REQUEST__INIT;
    Grpc__Testing__Payload p;
    set_payload(&p, (size_t)in_sizes[i]);
    m.payload = &p;
    total += in_sizes[i];
    if (grpc__testing__test_service__streaming_input_call__write(s, &m) != 0)
      break; /* finish() says why */
  }
  Grpc__Testing__StreamingInputCallResponse *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c = grpc__testing__test_service__streaming_input_call__finish(s, &resp, &st);
  int rc = expect_code("StreamingInputCall", c, &st, PERFC_STATUS_OK);
  if (rc == 0 && resp->aggregated_payload_size != total)
    rc = fail("aggregated_payload_size %d, expected %d", resp->aggregated_payload_size, total);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  return rc;
}

static int client_compressed_streaming(perfc_channel *ch) {
  Grpc__Testing__BoolValue yes = GRPC__TESTING__BOOL_VALUE__INIT, no = yes;
  yes.value = 1;
  perfc_call_opts gzip = {0};
  gzip.compression = "gzip";
  perfc_status st = {0};
  int rc;

  /* Probe: an uncompressed message that claims compression is refused. */
  perfc_client_stream *s = NULL;
  if (grpc__testing__test_service__streaming_input_call__open(ch, NULL, &s) != 0)
    return fail("probe: open failed");
  Grpc__Testing__StreamingInputCallRequest m = GRPC__TESTING__STREAMING_INPUT_CALL_REQUEST__INIT;
  Grpc__Testing__Payload p;
  set_payload(&p, 27182);
  m.payload = &p;
  m.expect_compressed = &yes;
  grpc__testing__test_service__streaming_input_call__write(s, &m);
  perfc_status_code c = grpc__testing__test_service__streaming_input_call__finish(s, NULL, &st);
  rc = expect_code("probe (uncompressed, expect_compressed=true)", c, &st,
                   PERFC_STATUS_INVALID_ARGUMENT);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  if (rc)
    return rc;

  /* A gzip call: the first message compressed, the second sent plain. */
  s = NULL;
  if (grpc__testing__test_service__streaming_input_call__open(ch, &gzip, &s) != 0)
    return fail("open failed");
  grpc__testing__test_service__streaming_input_call__write(s, &m);
  set_payload(&p, 45904);
  m.expect_compressed = &no;
  perfc_client_stream_compress(s, 0);
  grpc__testing__test_service__streaming_input_call__write(s, &m);
  Grpc__Testing__StreamingInputCallResponse *resp = NULL;
  c = grpc__testing__test_service__streaming_input_call__finish(s, &resp, &st);
  rc = expect_code("StreamingInputCall", c, &st, PERFC_STATUS_OK);
  if (rc == 0 && resp->aggregated_payload_size != 73086)
    rc = fail("aggregated_payload_size %d, expected 73086", resp->aggregated_payload_size);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  return rc;
}

/* Reads StreamingOutputCall responses of the given sizes, then the status. */
static int read_output_stream(perfc_client_stream *s, const int32_t *sizes, size_t n) {
  int rc = 0;
  for (size_t i = 0; i < n && rc == 0; i++) {
    Grpc__Testing__StreamingOutputCallResponse *r = NULL;
    int got = grpc__testing__test_service__streaming_output_call__read(s, &r);
    char what[48];
    snprintf(what, sizeof what, "response %zu", i + 1);
    if (got != 1)
      rc = fail("%s missing (read returned %d)", what, got);
    else
      rc = check_payload(what, r->payload, (size_t)sizes[i]);
  }
  perfc_status st = {0};
  Grpc__Testing__StreamingOutputCallResponse *extra = NULL;
  if (rc == 0 && grpc__testing__test_service__streaming_output_call__read(s, &extra) != 0)
    rc = fail("more responses than the %zu asked for", n);
  perfc_status_code c = grpc__testing__test_service__streaming_output_call__finish(s, &st);
  if (rc == 0)
    rc = expect_code("StreamingOutputCall", c, &st, PERFC_STATUS_OK);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  return rc;
}

static int output_call(perfc_channel *ch, const int32_t *sizes, size_t n,
                       const Grpc__Testing__BoolValue *const *compressed) {
  Grpc__Testing__ResponseParameters params[4], *pp[4];
  for (size_t i = 0; i < n; i++) {
    grpc__testing__response_parameters__init(&params[i]);
    params[i].size = sizes[i];
    params[i].compressed = compressed ? (Grpc__Testing__BoolValue *)compressed[i] : NULL;
    pp[i] = &params[i];
  }
  Grpc__Testing__StreamingOutputCallRequest req = GRPC__TESTING__STREAMING_OUTPUT_CALL_REQUEST__INIT;
  req.n_response_parameters = n;
  req.response_parameters = pp;
  perfc_client_stream *s = NULL;
  if (grpc__testing__test_service__streaming_output_call__open(ch, &req, NULL, &s) != 0)
    return fail("StreamingOutputCall: open failed");
  return read_output_stream(s, sizes, n);
}

static int server_streaming(perfc_channel *ch) {
  return output_call(ch, out_sizes, 4, NULL);
}

static int server_compressed_streaming(perfc_channel *ch) {
  static const int32_t sizes[] = {31415, 92653};
  Grpc__Testing__BoolValue yes = GRPC__TESTING__BOOL_VALUE__INIT, no = yes;
  yes.value = 1;
  const Grpc__Testing__BoolValue *compressed[] = {&yes, &no};
  return output_call(ch, sizes, 2, compressed);
}

/* One FullDuplexCall request asking for one response of `out` bytes. */
static int duplex_write(perfc_client_stream *s, int32_t in, int32_t out,
                        const Grpc__Testing__EchoStatus *status) {
  Grpc__Testing__ResponseParameters rp = GRPC__TESTING__RESPONSE_PARAMETERS__INIT, *pp = &rp;
  rp.size = out;
  Grpc__Testing__Payload p;
  set_payload(&p, (size_t)in);
  Grpc__Testing__StreamingOutputCallRequest m = GRPC__TESTING__STREAMING_OUTPUT_CALL_REQUEST__INIT;
  m.payload = &p;
  m.n_response_parameters = out >= 0 ? 1 : 0;
  m.response_parameters = &pp;
  m.response_status = (Grpc__Testing__EchoStatus *)status;
  return grpc__testing__test_service__full_duplex_call__write(s, &m);
}

static int ping_pong(perfc_channel *ch) {
  perfc_client_stream *s = NULL;
  if (grpc__testing__test_service__full_duplex_call__open(ch, NULL, &s) != 0)
    return fail("FullDuplexCall: open failed");
  int rc = 0;
  for (size_t i = 0; i < 4 && rc == 0; i++) {
    if (duplex_write(s, in_sizes[i], out_sizes[i], NULL) != 0) {
      rc = fail("write %zu failed", i + 1);
      break;
    }
    Grpc__Testing__StreamingOutputCallResponse *r = NULL;
    if (grpc__testing__test_service__full_duplex_call__read(s, &r) != 1)
      rc = fail("no response to request %zu", i + 1);
    else
      rc = check_payload("response", r->payload, (size_t)out_sizes[i]);
  }
  perfc_client_stream_close_send(s);
  perfc_status st = {0};
  perfc_status_code c = grpc__testing__test_service__full_duplex_call__finish(s, &st);
  if (rc == 0)
    rc = expect_code("FullDuplexCall", c, &st, PERFC_STATUS_OK);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  return rc;
}

static int empty_stream(perfc_channel *ch) {
  perfc_client_stream *s = NULL;
  if (grpc__testing__test_service__full_duplex_call__open(ch, NULL, &s) != 0)
    return fail("FullDuplexCall: open failed");
  perfc_client_stream_close_send(s);
  Grpc__Testing__StreamingOutputCallResponse *r = NULL;
  int got = grpc__testing__test_service__full_duplex_call__read(s, &r);
  perfc_status st = {0};
  perfc_status_code c = grpc__testing__test_service__full_duplex_call__finish(s, &st);
  int rc = got != 0 ? fail("read returned %d, expected end of stream", got)
                    : expect_code("FullDuplexCall", c, &st, PERFC_STATUS_OK);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  return rc;
}

static int cancel_after_begin(perfc_channel *ch) {
  perfc_client_stream *s = NULL;
  if (grpc__testing__test_service__streaming_input_call__open(ch, NULL, &s) != 0)
    return fail("StreamingInputCall: open failed");
  perfc_client_stream_cancel(s);
  perfc_status st = {0};
  perfc_status_code c = grpc__testing__test_service__streaming_input_call__finish(s, NULL, &st);
  int rc = expect_code("StreamingInputCall", c, &st, PERFC_STATUS_CANCELLED);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  return rc;
}

static int cancel_after_first_response(perfc_channel *ch) {
  perfc_client_stream *s = NULL;
  if (grpc__testing__test_service__full_duplex_call__open(ch, NULL, &s) != 0)
    return fail("FullDuplexCall: open failed");
  int rc = 0;
  Grpc__Testing__StreamingOutputCallResponse *r = NULL;
  if (duplex_write(s, 27182, 31415, NULL) != 0)
    rc = fail("write failed");
  else if (grpc__testing__test_service__full_duplex_call__read(s, &r) != 1)
    rc = fail("no first response");
  else
    rc = check_payload("first response", r->payload, 31415);
  perfc_client_stream_cancel(s);
  perfc_status st = {0};
  perfc_status_code c = grpc__testing__test_service__full_duplex_call__finish(s, &st);
  if (rc == 0)
    rc = expect_code("FullDuplexCall", c, &st, PERFC_STATUS_CANCELLED);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  return rc;
}

static int timeout_on_sleeping_server(perfc_channel *ch) {
  perfc_call_opts o = {0};
  o.timeout_ms = 1;
  perfc_client_stream *s = NULL;
  if (grpc__testing__test_service__full_duplex_call__open(ch, &o, &s) != 0)
    return fail("FullDuplexCall: open failed");
  /* The write may already fail: the deadline can pass before it. The call
   * stays open (no half-close), so only the deadline can end it. */
  duplex_write(s, 27182, -1, NULL);
  Grpc__Testing__StreamingOutputCallResponse *r = NULL;
  int got = grpc__testing__test_service__full_duplex_call__read(s, &r);
  perfc_status st = {0};
  perfc_status_code c = grpc__testing__test_service__full_duplex_call__finish(s, &st);
  int rc = got == 1 ? fail("FullDuplexCall: got a response, expected none")
                    : expect_code("FullDuplexCall", c, &st, PERFC_STATUS_DEADLINE_EXCEEDED);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  return rc;
}

/* ---- metadata and status ------------------------------------------------------ */

static const char echo_initial[] = "test_initial_metadata_value";
static const char echo_trailing[] = "\xab\xab\xab";

static int check_echoed(const char *what, perfc_client_stream *s) {
  size_t len = 0;
  const char *v = perfc_client_stream_metadata(s, "x-grpc-test-echo-initial", &len);
  if (v == NULL || len != strlen(echo_initial) || memcmp(v, echo_initial, len) != 0)
    return fail("%s: initial metadata x-grpc-test-echo-initial %s", what,
                v ? "has the wrong value" : "missing");
  v = perfc_client_stream_metadata(s, "x-grpc-test-echo-trailing-bin", &len);
  if (v == NULL || len != 3 || memcmp(v, echo_trailing, 3) != 0)
    return fail("%s: trailing metadata x-grpc-test-echo-trailing-bin %s", what,
                v ? "has the wrong value" : "missing");
  return 0;
}

static int custom_metadata(perfc_channel *ch) {
  perfc_metadata md[] = {{"x-grpc-test-echo-initial", echo_initial, 0},
                         {"x-grpc-test-echo-trailing-bin", echo_trailing, 3}};
  perfc_call_opts o = {0};
  o.metadata = md;
  o.metadata_count = 2;

  /* UnaryCall opened as a one-response stream: the sync stub does not hand
   * back response metadata. */
  Grpc__Testing__SimpleRequest req = GRPC__TESTING__SIMPLE_REQUEST__INIT;
  Grpc__Testing__Payload payload;
  set_payload(&payload, LARGE_REQ);
  req.response_size = LARGE_RESP;
  req.payload = &payload;
  perfc_client_stream *s = NULL;
  if (perfc_channel_stream_open(ch,
                                &grpc__testing__test_service__perfc_desc
                                     .methods[GRPC__TESTING__TEST_SERVICE__PERFC_METHOD_UNARY_CALL],
                                &req.base, &o, &s) != 0)
    return fail("UnaryCall: open failed");
  ProtobufCMessage *msg = NULL;
  int rc = 0;
  if (perfc_client_stream_recv(s, &msg) != 1)
    rc = fail("UnaryCall: no response");
  else
    rc = check_payload("UnaryCall", ((Grpc__Testing__SimpleResponse *)msg)->payload, LARGE_RESP);
  perfc_status st = {0};
  perfc_status_code c = perfc_client_stream_finish(s, NULL, &st);
  if (rc == 0)
    rc = expect_code("UnaryCall", c, &st, PERFC_STATUS_OK);
  if (rc == 0)
    rc = check_echoed("UnaryCall", s);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  if (rc)
    return rc;

  s = NULL;
  if (grpc__testing__test_service__full_duplex_call__open(ch, &o, &s) != 0)
    return fail("FullDuplexCall: open failed");
  Grpc__Testing__StreamingOutputCallResponse *r = NULL;
  if (duplex_write(s, LARGE_REQ, LARGE_RESP, NULL) != 0)
    rc = fail("FullDuplexCall: write failed");
  else if (grpc__testing__test_service__full_duplex_call__read(s, &r) != 1)
    rc = fail("FullDuplexCall: no response");
  else
    rc = check_payload("FullDuplexCall", r->payload, LARGE_RESP);
  perfc_client_stream_close_send(s);
  c = grpc__testing__test_service__full_duplex_call__finish(s, &st);
  if (rc == 0)
    rc = expect_code("FullDuplexCall", c, &st, PERFC_STATUS_OK);
  if (rc == 0)
    rc = check_echoed("FullDuplexCall", s);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  return rc;
}

static int check_status(const char *what, perfc_status_code c, const perfc_status *st,
                        const char *message) {
  if (c != PERFC_STATUS_UNKNOWN)
    return fail("%s: status %s, expected UNKNOWN", what, perfc_status_name((int)c));
  if (strcmp(MSG(*st), message) != 0)
    return fail("%s: status message \"%s\", expected \"%s\"", what, MSG(*st), message);
  return 0;
}

static int unary_status(perfc_channel *ch, const char *message) {
  Grpc__Testing__EchoStatus es = GRPC__TESTING__ECHO_STATUS__INIT;
  es.code = PERFC_STATUS_UNKNOWN;
  es.message = (char *)message;
  Grpc__Testing__SimpleRequest req = GRPC__TESTING__SIMPLE_REQUEST__INIT;
  req.response_status = &es;
  Grpc__Testing__SimpleResponse *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c = grpc__testing__test_service__unary_call__call(ch, &req, &resp, NULL, &st);
  int rc = check_status("UnaryCall", c, &st, message);
  perfc_status_reset(&st);
  if (resp != NULL)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

static int status_code_and_message(perfc_channel *ch) {
  static const char message[] = "test status message";
  if (unary_status(ch, message))
    return 1;
  Grpc__Testing__EchoStatus es = GRPC__TESTING__ECHO_STATUS__INIT;
  es.code = PERFC_STATUS_UNKNOWN;
  es.message = (char *)message;
  perfc_client_stream *s = NULL;
  if (grpc__testing__test_service__full_duplex_call__open(ch, NULL, &s) != 0)
    return fail("FullDuplexCall: open failed");
  duplex_write(s, 1, -1, &es);
  perfc_client_stream_close_send(s);
  perfc_status st = {0};
  perfc_status_code c = grpc__testing__test_service__full_duplex_call__finish(s, &st);
  int rc = check_status("FullDuplexCall", c, &st, message);
  perfc_status_reset(&st);
  perfc_client_stream_free(s);
  return rc;
}

static int special_status_message(perfc_channel *ch) {
  return unary_status(ch, "\t\ntest with whitespace\r\nand Unicode BMP \xe2\x98\xba "
                          "and non-BMP \xf0\x9f\x98\x88\t\n");
}

static int unimplemented_method(perfc_channel *ch) {
  Grpc__Testing__Empty req = GRPC__TESTING__EMPTY__INIT, *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c =
      grpc__testing__test_service__unimplemented_call__call(ch, &req, &resp, NULL, &st);
  int rc = expect_code("TestService/UnimplementedCall", c, &st, PERFC_STATUS_UNIMPLEMENTED);
  perfc_status_reset(&st);
  if (resp != NULL)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

static int unimplemented_service(perfc_channel *ch) {
  Grpc__Testing__Empty req = GRPC__TESTING__EMPTY__INIT, *resp = NULL;
  perfc_status st = {0};
  perfc_status_code c =
      grpc__testing__unimplemented_service__unimplemented_call__call(ch, &req, &resp, NULL, &st);
  int rc = expect_code("UnimplementedService/UnimplementedCall", c, &st,
                       PERFC_STATUS_UNIMPLEMENTED);
  perfc_status_reset(&st);
  if (resp != NULL)
    protobuf_c_message_free_unpacked(&resp->base, NULL);
  return rc;
}

/* ---- main ------------------------------------------------------------------- */

static const struct {
  const char *name;
  int (*run)(perfc_channel *ch);
} cases[] = {
    {"empty_unary", empty_unary},
    {"large_unary", large_unary},
    {"client_streaming", client_streaming},
    {"server_streaming", server_streaming},
    {"ping_pong", ping_pong},
    {"empty_stream", empty_stream},
    {"cancel_after_begin", cancel_after_begin},
    {"cancel_after_first_response", cancel_after_first_response},
    {"timeout_on_sleeping_server", timeout_on_sleeping_server},
    {"custom_metadata", custom_metadata},
    {"status_code_and_message", status_code_and_message},
    {"special_status_message", special_status_message},
    {"unimplemented_method", unimplemented_method},
    {"unimplemented_service", unimplemented_service},
    {"client_compressed_unary", client_compressed_unary},
    {"server_compressed_unary", server_compressed_unary},
    {"client_compressed_streaming", client_compressed_streaming},
    {"server_compressed_streaming", server_compressed_streaming},
};
#define NCASES (sizeof cases / sizeof cases[0])

static int usage(void) {
  fprintf(stderr,
          "usage: interop-client --server_host H --server_port P --test_case NAME\n"
          "         [--use_tls true|false] [--use_test_ca true|false]\n"
          "         [--server_host_override NAME] [--tls_dir DIR]\n"
          "  --use_test_ca (default true with TLS) trusts DIR/ca.crt, DIR defaulting to\n"
          "  %s; false trusts the system roots.\n"
          "test cases (or \"all\"):",
          PERFC_INTEROP_CERT_DIR);
  for (size_t i = 0; i < NCASES; i++)
    fprintf(stderr, " %s", cases[i].name);
  fputc('\n', stderr);
  return 2;
}

int main(int argc, char **argv) {
  const char *host = "localhost", *port = NULL, *test_case = NULL, *tls_s = "false",
             *test_ca_s = "true", *override = NULL, *tls_dir = PERFC_INTEROP_CERT_DIR;
  perfc_interop_flag flags[] = {
      {"server_host", &host},     {"server_port", &port},
      {"test_case", &test_case},  {"use_tls", &tls_s},
      {"use_test_ca", &test_ca_s}, {"server_host_override", &override},
      {"tls_dir", &tls_dir}};
  if (perfc_interop_parse_flags(argc, argv, flags, 7) != 0 || port == NULL ||
      test_case == NULL)
    return usage();
  int use_tls = perfc_interop_bool(tls_s), test_ca = perfc_interop_bool(test_ca_s);
  if (use_tls < 0 || test_ca < 0)
    return usage();
  int all = strcmp(test_case, "all") == 0;
  size_t which = NCASES;
  for (size_t i = 0; i < NCASES && !all; i++)
    if (strcmp(cases[i].name, test_case) == 0)
      which = i;
  if (!all && which == NCASES) {
    fprintf(stderr, "interop-client: unknown test case '%s'\n", test_case);
    return usage();
  }

  char target[512];
  snprintf(target, sizeof target, strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, port);
  perfc_channel_opts o;
  perfc_channel_opts_init(&o);
  /* Every case finishes in well under a second against a healthy server;
   * 20 s only bounds a hang. */
  o.default_timeout_ms = 20000;
  perfc_channel *ch = NULL;
  int rc;
  if (use_tls) {
    char ca[1024];
    snprintf(ca, sizeof ca, "%s/ca.crt", tls_dir);
    perfc_tls_channel_opts t;
    perfc_tls_channel_opts_init(&t);
    t.root_ca_file = test_ca ? ca : NULL;
    t.server_name_override = override;
    rc = perfc_channel_new_tls(&ch, target, &o, &t);
    if (rc == PERFC_ETLS)
      fprintf(stderr, "interop-client: %s\n", perfc_tls_last_error());
  } else {
    rc = perfc_channel_new(&ch, target, &o);
  }
  if (rc != 0) {
    fprintf(stderr, "interop-client: cannot create a channel to %s: %s\n", target,
            perfc_strerror(rc));
    return 1;
  }

  int failed = 0;
  for (size_t i = 0; i < NCASES; i++) {
    if (!all && i != which)
      continue;
    current_case = cases[i].name;
    if (cases[i].run(ch) != 0) {
      failed++;
    } else {
      printf("interop-client: %s: PASS\n", cases[i].name);
      fflush(stdout);
    }
  }
  perfc_channel_free(ch);
  return failed ? 1 : 0;
}
