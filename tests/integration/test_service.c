/* test_service.c — TestService handlers: each method exercises one piece of
 * the runtime the tests check (see proto/perfc/test/v1/test.proto). */
#include "test_service.h"
#include "server/server_internal.h" /* perfc__stream_replies_held */

#include <stdatomic.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static perfc_status_code echo(perfc_ctx *ctx,
                              const Perfc__Test__V1__EchoRequest *req,
                              Perfc__Test__V1__EchoResponse *resp, void *ud) {
  resp->payload = req->payload; /* the request lives until the call ends */
  if (ud != NULL && req->payload.len == 6 && memcmp(req->payload.data, "whoami", 6) == 0) {
    resp->payload.data = (uint8_t *)ud;
    resp->payload.len = strlen(ud);
  }
  resp->peer = (char *)perfc_ctx_peer(ctx);
  int64_t left = perfc_ctx_remaining_ms(ctx);
  resp->remaining_ms = left == INT64_MAX ? -1 : left;
  return PERFC_STATUS_OK;
}

atomic_int test_slow_started;
atomic_int test_slow_running_max;
atomic_int test_slow_cancelled;
static atomic_int slow_running;

static perfc_status_code slow(perfc_ctx *ctx,
                              const Perfc__Test__V1__EchoRequest *req,
                              Perfc__Test__V1__EchoResponse *resp, void *ud) {
  (void)ud;
  atomic_fetch_add(&test_slow_started, 1);
  int now = atomic_fetch_add(&slow_running, 1) + 1;
  for (int max = atomic_load(&test_slow_running_max);
       now > max && !atomic_compare_exchange_weak(&test_slow_running_max, &max, now);)
    ;
  perfc_status_code code = PERFC_STATUS_OK;
  for (int waited = 0; waited < req->sleep_ms; waited += 5) {
    if (perfc_ctx_cancelled(ctx)) {
      resp->cancelled = 1;
      atomic_fetch_add(&test_slow_cancelled, 1);
      if (perfc_ctx_remaining_ms(ctx) == 0)
        code = perfc_ctx_error(ctx, PERFC_STATUS_DEADLINE_EXCEEDED,
                               "deadline passed after %d ms", waited);
      else
        code = perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED,
                               "cancelled after %d ms", waited);
      break;
    }
    struct timespec ts = {0, 5 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  atomic_fetch_sub(&slow_running, 1);
  if (code == PERFC_STATUS_OK)
    resp->payload = req->payload;
  return code;
}

static perfc_status_code fail(perfc_ctx *ctx,
                              const Perfc__Test__V1__EchoRequest *req,
                              Perfc__Test__V1__EchoResponse *resp, void *ud) {
  (void)resp;
  (void)ud;
  return perfc_ctx_error(ctx, (perfc_status_code)req->code, "%s", req->message);
}

static perfc_status_code meta(perfc_ctx *ctx,
                              const Perfc__Test__V1__EchoRequest *req,
                              Perfc__Test__V1__EchoResponse *resp, void *ud) {
  (void)req;
  (void)ud;
  size_t len = 0;
  const char *in = perfc_ctx_metadata_get(ctx, "x-in", &len);
  if (in == NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "metadata x-in missing");
  resp->payload.data = (uint8_t *)in;
  resp->payload.len = len;
  if (perfc_ctx_add_initial_metadata(ctx, "x-initial", "first", 0) != 0 ||
      perfc_ctx_add_trailing_metadata(ctx, "x-trailing", in, len) != 0 ||
      perfc_ctx_add_trailing_metadata(ctx, "x-raw-bin", "\x00\x01\x02", 3) != 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_INTERNAL, "cannot add metadata");
  /* Bad keys are refused, not passed to the core. */
  if (perfc_ctx_add_trailing_metadata(ctx, "Bad Key", "v", 0) != PERFC_EINVAL ||
      perfc_ctx_add_trailing_metadata(ctx, "grpc-status", "0", 0) != PERFC_EINVAL)
    return perfc_ctx_error(ctx, PERFC_STATUS_INTERNAL, "bad key accepted");
  return PERFC_STATUS_OK;
}

static perfc_status_code big(perfc_ctx *ctx,
                             const Perfc__Test__V1__EchoRequest *req,
                             Perfc__Test__V1__EchoResponse *resp, void *ud) {
  (void)ud;
  size_t n = req->response_bytes > 0 ? (size_t)req->response_bytes : 0;
  uint8_t *buf = perfc_ctx_alloc(ctx, n);
  if (buf == NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED, "no memory");
  for (size_t i = 0; i < n; i++)
    buf[i] = (uint8_t)(i * 7);
  resp->payload.data = buf;
  resp->payload.len = n;
  return PERFC_STATUS_OK;
}

static perfc_status_code collect(perfc_ctx *ctx, perfc_stream *reader,
                                 Perfc__Test__V1__EchoResponse *resp, void *ud) {
  (void)ud;
  size_t total = 0, cap = 0;
  uint8_t *buf = NULL;
  int64_t count = 0;
  Perfc__Test__V1__EchoRequest *msg;
  int rc;
  while ((rc = perfc__test__v1__test_service__collect__recv(reader, &msg)) == 1) {
    count++;
    if (msg->code != 0)
      return perfc_ctx_error(ctx, (perfc_status_code)msg->code, "stopped at message %lld",
                             (long long)count);
    /* Messages are only valid until the next receive: copy what we keep. */
    if (total + msg->payload.len > cap) {
      size_t ncap = (total + msg->payload.len) * 2;
      uint8_t *nb = perfc_ctx_alloc(ctx, ncap);
      if (nb == NULL)
        return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED, "no memory");
      if (total)
        memcpy(nb, buf, total);
      buf = nb;
      cap = ncap;
    }
    if (msg->payload.len)
      memcpy(buf + total, msg->payload.data, msg->payload.len);
    total += msg->payload.len;
  }
  if (rc < 0)
    return rc == PERFC_EPARSE ? PERFC_STATUS_INVALID_ARGUMENT : PERFC_STATUS_CANCELLED;
  resp->payload.data = buf;
  resp->payload.len = total;
  resp->remaining_ms = count;
  return PERFC_STATUS_OK;
}

static perfc_status_code expand(perfc_ctx *ctx,
                                const Perfc__Test__V1__EchoRequest *req,
                                perfc_stream *writer, void *ud) {
  (void)ud;
  if (perfc_ctx_add_initial_metadata(ctx, "x-initial", "stream", 0) != 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_INTERNAL, "metadata");
  for (int i = 0; i < req->response_bytes; i++) {
    char num[16];
    int len = snprintf(num, sizeof num, "%d", i);
    Perfc__Test__V1__EchoResponse m = PERFC__TEST__V1__ECHO_RESPONSE__INIT;
    m.payload.data = (uint8_t *)num;
    m.payload.len = (size_t)len;
    if (req->payload.len > 0) /* bulk mode: every message carries the payload */
      m.payload = req->payload;
    /* code 1: one burst, every message but the last with send_more */
    int more = req->code == 1 && i + 1 < req->response_bytes;
    if ((more ? perfc__test__v1__test_service__expand__send_more(writer, &m)
              : perfc__test__v1__test_service__expand__send(writer, &m)) != 0)
      return perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "client went away at %d", i);
    if (req->sleep_ms > 0) {
      struct timespec ts = {req->sleep_ms / 1000, (req->sleep_ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    }
  }
  atomic_store(&test_stream_held, perfc__stream_replies_held(writer));
  return PERFC_STATUS_OK;
}

atomic_ulong test_stream_held;

static perfc_status_code chat(perfc_ctx *ctx, perfc_stream *stream, void *ud) {
  (void)ud;
  Perfc__Test__V1__EchoRequest *msg;
  int rc;
  perfc_status_code code = PERFC_STATUS_OK;
  int linger_ms = 0;
  while ((rc = perfc__test__v1__test_service__chat__recv(stream, &msg)) == 1) {
    if (msg->payload.len == 4 && memcmp(msg->payload.data, "skip", 4) == 0) {
      linger_ms = msg->sleep_ms;
      if (perfc_ctx_cancelled(ctx)) /* as a handler between messages does */
        break;
      continue;
    }
    if (msg->sleep_ms > 0) {
      struct timespec ts = {msg->sleep_ms / 1000, (msg->sleep_ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    }
    Perfc__Test__V1__EchoResponse m = PERFC__TEST__V1__ECHO_RESPONSE__INIT;
    m.payload = msg->payload;
    if (perfc__test__v1__test_service__chat__send(stream, &m) != 0) {
      code = perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "client went away");
      break;
    }
    if (msg->code != 0)
      break; /* answered; ends with OK, whatever is still coming */
  }
  if (rc < 0)
    code = perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "recv failed");
  if (rc == 0 && linger_ms > 0) {
    struct timespec ts = {linger_ms / 1000, (linger_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  atomic_store(&test_stream_held, perfc__stream_replies_held(stream));
  return code;
}

static perfc_status_code quit(perfc_ctx *ctx, perfc_stream *stream, void *ud) {
  (void)ctx;
  (void)stream;
  (void)ud;
  return PERFC_STATUS_OK;
}

/* The channel Relay uses to call back into the last server started; set
 * by test_server_start() (atomic: a test may start a second server, the
 * nested calls' target, while the first one's handlers run). */
static perfc_channel *_Atomic relay_channel;

static perfc_status_code relay(perfc_ctx *ctx,
                               const Perfc__Test__V1__EchoRequest *req,
                               Perfc__Test__V1__EchoResponse *resp, void *ud) {
  (void)ud;
  if (relay_channel == NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_FAILED_PRECONDITION,
                           "this server was started without a relay channel");
  Perfc__Test__V1__EchoResponse *inner = NULL;
  perfc_status st = {0};
  perfc_call_opts co = {.parent = ctx, .arena = perfc_ctx_arena(ctx),
                        .no_timeout = true};
  perfc_status_code c = perfc__test__v1__test_service__slow__call(
      relay_channel, req, &inner, &co, &st);
  resp->remaining_ms = perfc_ctx_remaining_ms(ctx);
  if (c == PERFC_STATUS_OK)
    resp->payload = inner->payload;
  perfc_status_code r =
      c == PERFC_STATUS_OK ? c : perfc_ctx_error(ctx, c, "nested: %s", st.message ? st.message : "");
  perfc_status_reset(&st);
  return r;
}

atomic_int test_strings_calls;

static perfc_status_code strings(perfc_ctx *ctx,
                                 const Perfc__Test__V1__EchoRequest *req,
                                 Perfc__Test__V1__EchoResponse *resp, void *ud) {
  (void)ctx;
  (void)ud;
  atomic_fetch_add(&test_strings_calls, 1);
  resp->peer = req->code == 1 ? "caf\xe9" : req->message;
  resp->remaining_ms = (int64_t)strlen(req->message);
  return PERFC_STATUS_OK;
}

static perfc_status_code nested(perfc_ctx *ctx, const Perfc__Test__V1__Node *req,
                                Perfc__Test__V1__EchoResponse *resp, void *ud) {
  (void)ctx;
  (void)ud;
  int64_t depth = 0;
  for (const Perfc__Test__V1__Node *n = req->child; n != NULL; n = n->child)
    depth++;
  resp->remaining_ms = depth;
  return PERFC_STATUS_OK;
}

const Perfc__Test__V1__TestService_Handlers test_service_handlers = {
    .echo = echo,
    .slow = slow,
    .fail = fail,
    .meta = meta,
    .big = big,
    .collect = collect,
    .expand = expand,
    .chat = chat,
    .relay = relay,
    .quit = quit,
    .strings = strings,
    .raw_strings = strings,
    .nested = nested,
    /* .missing left NULL on purpose */
};

/* ---- the streams again, as loop callbacks (perfc_server_set_stream_callbacks)
 * with the same answers, so the python3-grpcio suite runs its streaming
 * tests against both styles (perfc-test-server --loop-streams 1). A loop
 * handler never sleeps: Expand's and Chat's sleep_ms and Chat's linger are
 * not honoured here (the tests that use them only need the answers). */

atomic_int test_loop_cancels;
atomic_int test_loop_efull;

typedef struct loop_collect {
  Perfc__Test__V1__EchoResponse *resp;
  uint8_t *buf;
  size_t total, cap;
  int64_t count;
} loop_collect;

static perfc_status_code collect_start(perfc_ctx *ctx, perfc_stream *s,
                                       const ProtobufCMessage *req,
                                       ProtobufCMessage *resp, void **state) {
  (void)s;
  (void)req;
  loop_collect *c = perfc_ctx_alloc(ctx, sizeof *c);
  if (c == NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED, "no memory");
  memset(c, 0, sizeof *c);
  c->resp = (Perfc__Test__V1__EchoResponse *)resp;
  *state = c;
  return PERFC_STATUS_OK;
}

static int collect_message(perfc_stream *s, const ProtobufCMessage *m,
                           void *state) {
  loop_collect *c = state;
  perfc_ctx *ctx = perfc_stream_ctx(s);
  const Perfc__Test__V1__EchoRequest *msg = (const void *)m;
  c->count++;
  if (msg->code != 0) {
    perfc_stream_finish(s, perfc_ctx_error(ctx, (perfc_status_code)msg->code,
                                           "stopped at message %lld",
                                           (long long)c->count));
    return 0;
  }
  /* The message lives until this callback returns: copy what we keep. */
  if (c->total + msg->payload.len > c->cap) {
    size_t ncap = (c->total + msg->payload.len) * 2;
    uint8_t *nb = perfc_ctx_alloc(ctx, ncap);
    if (nb == NULL) {
      perfc_stream_finish(s, perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                                             "no memory"));
      return 0;
    }
    if (c->total)
      memcpy(nb, c->buf, c->total);
    c->buf = nb;
    c->cap = ncap;
  }
  if (msg->payload.len)
    memcpy(c->buf + c->total, msg->payload.data, msg->payload.len);
  c->total += msg->payload.len;
  return 0;
}

static void collect_half_close(perfc_stream *s, void *state) {
  loop_collect *c = state;
  c->resp->payload.data = c->buf;
  c->resp->payload.len = c->total;
  c->resp->remaining_ms = c->count;
  perfc_stream_finish(s, PERFC_STATUS_OK);
}

static void count_cancel(perfc_stream *s, void *state) {
  (void)s;
  (void)state;
  atomic_fetch_add(&test_loop_cancels, 1);
}

typedef struct loop_expand {
  const Perfc__Test__V1__EchoRequest *req;
  int i;
} loop_expand;

/* Sends until done or the stream is full; on_writable comes back here. */
static void expand_pump(perfc_stream *s, void *state) {
  loop_expand *e = state;
  perfc_ctx *ctx = perfc_stream_ctx(s);
  for (; e->i < e->req->response_bytes; e->i++) {
    char num[16];
    int len = snprintf(num, sizeof num, "%d", e->i);
    Perfc__Test__V1__EchoResponse m = PERFC__TEST__V1__ECHO_RESPONSE__INIT;
    m.payload.data = (uint8_t *)num;
    m.payload.len = (size_t)len;
    if (e->req->payload.len > 0)
      m.payload = e->req->payload;
    int rc = perfc__test__v1__test_service__expand__send(s, &m);
    if (rc == PERFC_EFULL) {
      atomic_fetch_add(&test_loop_efull, 1);
      return;
    }
    if (rc != 0) {
      perfc_stream_finish(s, perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED,
                                             "client went away at %d", e->i));
      return;
    }
  }
  perfc_stream_finish(s, PERFC_STATUS_OK);
}

static perfc_status_code expand_start(perfc_ctx *ctx, perfc_stream *s,
                                      const ProtobufCMessage *req,
                                      ProtobufCMessage *resp, void **state) {
  (void)resp;
  if (perfc_ctx_add_initial_metadata(ctx, "x-initial", "stream", 0) != 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_INTERNAL, "metadata");
  loop_expand *e = perfc_ctx_alloc(ctx, sizeof *e);
  if (e == NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED, "no memory");
  e->req = (const Perfc__Test__V1__EchoRequest *)req;
  e->i = 0;
  *state = e;
  expand_pump(s, e);
  return PERFC_STATUS_OK;
}

static perfc_status_code chat_start(perfc_ctx *ctx, perfc_stream *s,
                                    const ProtobufCMessage *req,
                                    ProtobufCMessage *resp, void **state) {
  (void)ctx;
  (void)s;
  (void)req;
  (void)resp;
  (void)state;
  return PERFC_STATUS_OK;
}

static int chat_message(perfc_stream *s, const ProtobufCMessage *m,
                        void *state) {
  (void)state;
  const Perfc__Test__V1__EchoRequest *msg = (const void *)m;
  if (msg->payload.len == 4 && memcmp(msg->payload.data, "skip", 4) == 0)
    return 0;
  Perfc__Test__V1__EchoResponse r = PERFC__TEST__V1__ECHO_RESPONSE__INIT;
  r.payload = msg->payload;
  int rc = perfc__test__v1__test_service__chat__send(s, &r);
  if (rc == PERFC_EFULL) {
    /* Kept by perfc and delivered again once the stream drained. */
    atomic_fetch_add(&test_loop_efull, 1);
    return PERFC_EFULL;
  }
  if (rc != 0)
    perfc_stream_finish(s, perfc_ctx_error(perfc_stream_ctx(s),
                                           PERFC_STATUS_CANCELLED,
                                           "client went away"));
  else if (msg->code != 0)
    perfc_stream_finish(s, PERFC_STATUS_OK);
  return 0;
}

static perfc_status_code quit_start(perfc_ctx *ctx, perfc_stream *s,
                                    const ProtobufCMessage *req,
                                    ProtobufCMessage *resp, void **state) {
  (void)ctx;
  (void)req;
  (void)resp;
  (void)state;
  perfc_stream_finish(s, PERFC_STATUS_OK);
  return PERFC_STATUS_OK;
}

static const struct {
  const char *name;
  perfc_stream_callbacks cb;
} loop_streams[] = {
    {"Collect", {.on_start = collect_start, .on_message = collect_message,
                 .on_half_close = collect_half_close, .on_cancel = count_cancel}},
    {"Expand", {.on_start = expand_start, .on_writable = expand_pump,
                .on_cancel = count_cancel}},
    {"Chat", {.on_start = chat_start, .on_message = chat_message,
              .on_cancel = count_cancel}},
    {"Quit", {.on_start = quit_start, .on_cancel = count_cancel}},
};

int test_service_loop_streams(perfc_server *srv) {
  for (size_t i = 0; i < sizeof loop_streams / sizeof loop_streams[0]; i++) {
    int rc = perfc_server_set_stream_callbacks(srv, loop_streams[i].name,
                                               &loop_streams[i].cb, NULL);
    if (rc != 0)
      return rc;
  }
  return 0;
}

int test_loop_streams;

/* Names for up to 8 servers in one process ("server-PORT"), so a client can
 * tell which one answered Echo("whoami"). */
static char server_names[8][32];
static int nnames;

perfc_server *test_server_start(const perfc_server_opts *opts, int *port) {
  perfc_server *srv;
  int local_port;
  if (port == NULL)
    port = &local_port;
  if (test_server_new(&srv, opts) != 0)
    return NULL;
  char *name = server_names[nnames++ % 8];
  if (perfc_server_listen(srv, "127.0.0.1:0", port) != 0 ||
      snprintf(name, sizeof server_names[0], "server-%d", *port) < 0 ||
      perfc__test__v1__test_service__perfc_register(srv, &test_service_handlers,
                                                    name) != 0 ||
      (test_loop_streams && test_service_loop_streams(srv) != 0)) {
    perfc_server_free(srv);
    return NULL;
  }
  /* The relay channel is set before the server starts, so handler threads
   * (created by the start) see it without a race. */
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", *port);
  perfc_channel *relay_new = NULL;
  perfc_channel_free(relay_channel);
  relay_channel = NULL;
  int rc = perfc_channel_new(&relay_new, target, NULL);
  relay_channel = relay_new;
  if (rc != 0 || perfc_server_start(srv) != 0) {
    perfc_server_free(srv);
    return NULL;
  }
  return srv;
}

void test_server_stop(perfc_server *srv) {
  perfc_server_free(srv);
  perfc_channel_free(relay_channel);
  relay_channel = NULL;
}
