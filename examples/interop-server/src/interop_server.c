/*
 * interop_server.c — grpc's interop TestService on perfc, for grpc's
 * interop clients (C++, Go, Java, python3-grpcio) and perfc's own
 * interop-client. Behaviour follows grpc's doc/interop-test-descriptions.md
 * ("Server" section); docs/interop.md lists what is and is not covered.
 *
 *   interop-server --port N [--use_tls true|false] [--tls_dir DIR]
 *
 * `--port 0` binds a free port; the port actually bound is printed on
 * stdout ("interop-server: listening on port N ...") so scripts can read it.
 *
 * Room: examples/interop-server.
 */
#include "grpc/testing/test.perfc.h"
#include "interop_flags.h"

#include <perfc.h>
#include <perfc/tls.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- helpers shared by the handlers --------------------------------------- */

/* Echoes the two metadata keys the custom_metadata case sends back: one as
 * response headers, the binary one as trailers. Every method does it, as
 * grpc's own interop servers do. */
static void echo_metadata(perfc_ctx *ctx) {
  size_t len = 0;
  const char *v = perfc_ctx_metadata_get(ctx, "x-grpc-test-echo-initial", &len);
  if (v != NULL && len > 0)
    perfc_ctx_add_initial_metadata(ctx, "x-grpc-test-echo-initial", v, len);
  v = perfc_ctx_metadata_get(ctx, "x-grpc-test-echo-trailing-bin", &len);
  if (v != NULL && len > 0)
    perfc_ctx_add_trailing_metadata(ctx, "x-grpc-test-echo-trailing-bin", v, len);
}

/* Checks a request's expect_compressed against how the message arrived.
 * Returns OK or INVALID_ARGUMENT (with the message set). When this libgrpc
 * cannot tell, the request is accepted: refusing would fail clients that
 * did everything right. */
static perfc_status_code check_compressed(perfc_ctx *ctx,
                                          const Grpc__Testing__BoolValue *expect) {
  if (expect == NULL)
    return PERFC_STATUS_OK;
  int was = perfc_ctx_message_compressed(ctx);
  if (was < 0) {
    static atomic_int warned; /* handlers run on several pool threads */
    if (atomic_exchange(&warned, 1) == 0) {
      fprintf(stderr, "interop-server: this libgrpc cannot tell whether a request "
                      "was compressed; expect_compressed is not checked\n");
    }
    return PERFC_STATUS_OK;
  }
  if (expect->value && !was)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "expected a compressed request, got an uncompressed one");
  if (!expect->value && was)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "expected an uncompressed request, got a compressed one");
  return PERFC_STATUS_OK;
}

/* A COMPRESSABLE payload of `size` zero bytes in the call's arena. */
static Grpc__Testing__Payload *zero_payload(perfc_ctx *ctx, int32_t size) {
  if (size < 0)
    return NULL;
  Grpc__Testing__Payload *p = perfc_ctx_alloc(ctx, sizeof *p);
  uint8_t *body = perfc_ctx_alloc(ctx, size > 0 ? (size_t)size : 1);
  if (p == NULL || body == NULL)
    return NULL;
  grpc__testing__payload__init(p);
  memset(body, 0, (size_t)size);
  p->body.data = body;
  p->body.len = (size_t)size;
  return p;
}

static void sleep_us(int32_t us) {
  if (us <= 0)
    return;
  struct timespec ts = {us / 1000000, (long)(us % 1000000) * 1000L};
  while (nanosleep(&ts, &ts) != 0)
    ;
}

static perfc_status_code echo_status(perfc_ctx *ctx, const Grpc__Testing__EchoStatus *st) {
  return perfc_ctx_error(ctx, (perfc_status_code)st->code, "%s",
                         st->message ? st->message : "");
}

/* The status for a stream receive that failed. A passed deadline is
 * reported as such: the client's own deadline and this answer race, and
 * both must say DEADLINE_EXCEEDED (timeout_on_sleeping_server). */
static perfc_status_code stream_failed(perfc_ctx *ctx, int rc) {
  if (rc == PERFC_EPARSE)
    return PERFC_STATUS_INVALID_ARGUMENT;
  if (perfc_ctx_remaining_ms(ctx) == 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_DEADLINE_EXCEEDED, "deadline passed");
  return perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "stream ended early");
}

/* Response compression for streams: the encoding is chosen with the first
 * message that asks for compression, before the headers go out when that
 * is the first message; later messages switch between it and none. A
 * stream whose first messages went out without an encoding stays
 * uncompressed (the headers already said so). */
static void stream_compression(perfc_ctx *ctx, const Grpc__Testing__BoolValue *c,
                               int *chosen) {
  int want = c != NULL && c->value;
  if (!*chosen) {
    if (!want)
      return;
    *chosen = perfc_ctx_set_compression(ctx, "gzip") == 0;
    return;
  }
  perfc_ctx_set_compression(ctx, want ? "gzip" : "identity");
}

/* Sends the responses one StreamingOutputCallRequest asks for. */
static perfc_status_code send_responses(perfc_ctx *ctx, perfc_stream *s, size_t n,
                                        Grpc__Testing__ResponseParameters *const *params,
                                        int *chosen) {
  for (size_t i = 0; i < n; i++) {
    const Grpc__Testing__ResponseParameters *p = params[i];
    sleep_us(p->interval_us);
    Grpc__Testing__StreamingOutputCallResponse r =
        GRPC__TESTING__STREAMING_OUTPUT_CALL_RESPONSE__INIT;
    r.payload = zero_payload(ctx, p->size);
    if (r.payload == NULL)
      return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                             "response size %d is not usable", p->size);
    stream_compression(ctx, p->compressed, chosen);
    if (perfc_stream_send(s, (const ProtobufCMessage *)&r) != 0)
      return perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "client went away");
  }
  return PERFC_STATUS_OK;
}

/* ---- TestService ----------------------------------------------------------- */

static perfc_status_code empty_call(perfc_ctx *ctx, const Grpc__Testing__Empty *req,
                                    Grpc__Testing__Empty *resp, void *ud) {
  (void)req, (void)resp, (void)ud;
  echo_metadata(ctx);
  return PERFC_STATUS_OK;
}

static perfc_status_code unary_call(perfc_ctx *ctx, const Grpc__Testing__SimpleRequest *req,
                                    Grpc__Testing__SimpleResponse *resp, void *ud) {
  (void)ud;
  echo_metadata(ctx);
  perfc_status_code c = check_compressed(ctx, req->expect_compressed);
  if (c != PERFC_STATUS_OK)
    return c;
  if (req->response_compressed != NULL)
    perfc_ctx_set_compression(ctx, req->response_compressed->value ? "gzip" : "identity");
  if (req->response_status != NULL && req->response_status->code != 0)
    return echo_status(ctx, req->response_status);
  resp->payload = zero_payload(ctx, req->response_size);
  if (resp->payload == NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "response_size %d is not usable", req->response_size);
  return PERFC_STATUS_OK;
}

static perfc_status_code streaming_output_call(perfc_ctx *ctx,
                                               const Grpc__Testing__StreamingOutputCallRequest *req,
                                               perfc_stream *writer, void *ud) {
  (void)ud;
  echo_metadata(ctx);
  int chosen = 0;
  perfc_status_code c = send_responses(ctx, writer, req->n_response_parameters,
                                       req->response_parameters, &chosen);
  if (c != PERFC_STATUS_OK)
    return c;
  if (req->response_status != NULL && req->response_status->code != 0)
    return echo_status(ctx, req->response_status);
  return PERFC_STATUS_OK;
}

static perfc_status_code streaming_input_call(perfc_ctx *ctx, perfc_stream *reader,
                                              Grpc__Testing__StreamingInputCallResponse *resp,
                                              void *ud) {
  (void)ud;
  echo_metadata(ctx);
  int64_t total = 0;
  Grpc__Testing__StreamingInputCallRequest *m;
  int rc;
  while ((rc = grpc__testing__test_service__streaming_input_call__recv(reader, &m)) == 1) {
    perfc_status_code c = check_compressed(ctx, m->expect_compressed);
    if (c != PERFC_STATUS_OK)
      return c;
    if (m->payload != NULL)
      total += (int64_t)m->payload->body.len;
  }
  if (rc < 0)
    return stream_failed(ctx, rc);
  resp->aggregated_payload_size = (int32_t)total;
  return PERFC_STATUS_OK;
}

static perfc_status_code full_duplex_call(perfc_ctx *ctx, perfc_stream *s, void *ud) {
  (void)ud;
  echo_metadata(ctx);
  int chosen = 0;
  Grpc__Testing__StreamingOutputCallRequest *m;
  int rc;
  while ((rc = grpc__testing__test_service__full_duplex_call__recv(s, &m)) == 1) {
    if (m->response_status != NULL && m->response_status->code != 0)
      return echo_status(ctx, m->response_status);
    perfc_status_code c =
        send_responses(ctx, s, m->n_response_parameters, m->response_parameters, &chosen);
    if (c != PERFC_STATUS_OK)
      return c;
  }
  if (rc < 0)
    return stream_failed(ctx, rc);
  return PERFC_STATUS_OK;
}

/* Buffers every request's response parameters until the client
 * half-closes, then answers them in order. A received message lives only
 * until the next receive, so the parameters are copied into the call's
 * arena. */
static perfc_status_code half_duplex_call(perfc_ctx *ctx, perfc_stream *s, void *ud) {
  (void)ud;
  echo_metadata(ctx);
  Grpc__Testing__ResponseParameters **all = NULL;
  size_t n = 0, cap = 0;
  Grpc__Testing__EchoStatus *status = NULL;
  Grpc__Testing__StreamingOutputCallRequest *m;
  int rc;
  while ((rc = grpc__testing__test_service__half_duplex_call__recv(s, &m)) == 1) {
    if (m->response_status != NULL && m->response_status->code != 0 && status == NULL) {
      status = perfc_ctx_alloc(ctx, sizeof *status);
      if (status == NULL)
        return PERFC_STATUS_RESOURCE_EXHAUSTED;
      *status = *m->response_status;
      status->message = perfc_arena_strdup(perfc_ctx_arena(ctx),
                                           m->response_status->message ? m->response_status->message : "");
    }
    for (size_t i = 0; i < m->n_response_parameters; i++) {
      if (n == cap) {
        size_t ncap = cap ? cap * 2 : 8;
        Grpc__Testing__ResponseParameters **na = perfc_ctx_alloc(ctx, ncap * sizeof *na);
        if (na == NULL)
          return PERFC_STATUS_RESOURCE_EXHAUSTED;
        if (n)
          memcpy(na, all, n * sizeof *na);
        all = na;
        cap = ncap;
      }
      Grpc__Testing__ResponseParameters *p = perfc_ctx_alloc(ctx, sizeof *p);
      Grpc__Testing__BoolValue *b = perfc_ctx_alloc(ctx, sizeof *b);
      if (p == NULL || b == NULL)
        return PERFC_STATUS_RESOURCE_EXHAUSTED;
      *p = *m->response_parameters[i];
      if (p->compressed != NULL) {
        *b = *p->compressed;
        p->compressed = b;
      }
      all[n++] = p;
    }
  }
  if (rc < 0)
    return stream_failed(ctx, rc);
  int chosen = 0;
  perfc_status_code c = send_responses(ctx, s, n, all, &chosen);
  if (c != PERFC_STATUS_OK)
    return c;
  if (status != NULL)
    return echo_status(ctx, status);
  return PERFC_STATUS_OK;
}

/* UnimplementedCall is left NULL on purpose: the runtime answers it with
 * UNIMPLEMENTED, which is what the unimplemented_method case checks.
 * UnimplementedService is not registered at all (unimplemented_service). */
static const Grpc__Testing__TestService_Handlers handlers = {
    .empty_call = empty_call,
    .unary_call = unary_call,
    .cacheable_unary_call = unary_call,
    .streaming_output_call = streaming_output_call,
    .streaming_input_call = streaming_input_call,
    .full_duplex_call = full_duplex_call,
    .half_duplex_call = half_duplex_call,
};

/* ---- main ------------------------------------------------------------------- */

static int usage(void) {
  fprintf(stderr, "usage: interop-server --port N [--use_tls true|false] [--tls_dir DIR]\n"
                  "                      [--transport core|h2]\n"
                  "  --tls_dir defaults to %s (made at build time by tests/tls/make-certs.sh)\n",
          PERFC_INTEROP_CERT_DIR);
  return 2;
}

int main(int argc, char **argv) {
  /* A SIGINT/SIGTERM during the start-up waits for perfc_server_run(),
   * which then stops gracefully (docs/design.md, "Signals"). */
  if (perfc_server_hold_signals() != 0) {
    fprintf(stderr, "interop-server: %s\n", perfc_last_error());
    return 1;
  }
  const char *port_s = NULL, *tls_s = "false", *tls_dir = PERFC_INTEROP_CERT_DIR;
  const char *transport = NULL; /* the library's default */
  perfc_interop_flag flags[] = {{"port", &port_s},
                                {"use_tls", &tls_s},
                                {"tls_dir", &tls_dir},
                                {"transport", &transport}};
  if (perfc_interop_parse_flags(argc, argv, flags, 4) != 0 || port_s == NULL)
    return usage();
  if (transport != NULL && strcmp(transport, "core") != 0 &&
      strcmp(transport, "h2") != 0)
    return usage();
  char *end;
  long port = strtol(port_s, &end, 10);
  int use_tls = perfc_interop_bool(tls_s);
  if (*end != '\0' || port < 0 || port > 65535 || use_tls < 0)
    return usage();

  perfc_server_opts o;
  perfc_server_opts_init(&o);
  /* Streaming handlers block (interval_us sleeps, reading the stream), so
   * every handler runs on the worker pool, never on a poller. */
  o.default_executor = PERFC_EXEC_POOL;
  o.transport = transport == NULL              ? PERFC_TRANSPORT_DEFAULT
                : strcmp(transport, "h2") == 0 ? PERFC_TRANSPORT_H2
                                               : PERFC_TRANSPORT_CORE;
  /* large_unary and friends stay well below 4 MiB; grpc's interop servers
   * use the same default. */
  perfc_server *srv = NULL;
  if (perfc_server_new(&srv, &o) != 0) {
    fprintf(stderr, "interop-server: cannot create the server\n");
    return 1;
  }
  if (grpc__testing__test_service__perfc_register(srv, &handlers, NULL) != 0) {
    fprintf(stderr, "interop-server: cannot register TestService\n");
    return 1;
  }

  char cert[1024], key[1024];
  perfc_tls_opts tls;
  perfc_tls_opts_init(&tls);
  snprintf(cert, sizeof cert, "%s/server.crt", tls_dir);
  snprintf(key, sizeof key, "%s/server.key", tls_dir);
  tls.cert_file = cert;
  tls.key_file = key;

  /* [::] takes IPv4 too where the host has IPv6; a host without it still
   * gets an IPv4 listener. */
  static const char *const hosts[] = {"[::]", "0.0.0.0"};
  int bound = -1, rc = -1;
  for (size_t i = 0; i < 2 && rc != 0; i++) {
    char addr[64];
    snprintf(addr, sizeof addr, "%s:%ld", hosts[i], port);
    rc = use_tls ? perfc_server_listen_tls(srv, addr, &tls, &bound)
                 : perfc_server_listen(srv, addr, &bound);
    if (rc == PERFC_ETLS) {
      fprintf(stderr, "interop-server: %s\n", perfc_tls_last_error());
      return 1;
    }
  }
  if (rc != 0) {
    fprintf(stderr, "interop-server: cannot listen on port %ld: %s\n", port,
            perfc_strerror(rc));
    return 1;
  }
  if (perfc_server_start(srv) != 0) {
    fprintf(stderr, "interop-server: cannot start\n");
    return 1;
  }
  if (use_tls)
    printf("interop-server: listening on port %d (TLS; certificate %s, CA %s/ca.crt, "
           "host name localhost)\n", bound, cert, tls_dir);
  else
    printf("interop-server: listening on port %d (plaintext)\n", bound);
  fflush(stdout);
  perfc_server_run(srv);
  perfc_server_free(srv);
  return 0;
}
