/*
 * server/stream.c — streaming calls (perfc/stream.h): the reader and writer a
 * streaming handler gets, reply batching, and a stream's run on its worker.
 *
 * Room: runtime/src/server. Transport-agnostic: messages move through the
 * transport's stream ops (server/transport_internal.h); the decisions
 * (decode and its string check, when a reply may wait for the next one,
 * what status the call ends with) are made here.
 *
 * Reply batching (docs/design.md, "Reply batching on bidi streams"): a
 * reply is sent with PERFC__SEND_MORE (the transport may keep it back and
 * write it with a later one) when the handler said more follow
 * (perfc_stream_send_more), or when it turns messages around fast and its
 * next request is already here, so it sends again in about
 * perfc__stream_hold_ns. Everything held is written before the transport
 * waits for a request, at the client's half-close and before the status.
 *
 * Loop streams (perfc_server_set_stream_callbacks; docs/design.md, "A
 * stream's path on h2 with loop handlers"): no worker. The transport makes
 * the loop_* up-calls on its loop thread and this file turns them into the
 * handler's callbacks: each message decoded into the stream's message
 * arena, the interceptors' message hook, sends that answer PERFC_EFULL
 * instead of blocking, and exactly one finish (the handler's, or ours
 * after on_cancel).
 */
#include "perfc/log.h"
#include "perfc/stream.h"
#include "core/error_internal.h"
#include "server/call_internal.h"
#include "server/server_internal.h"

#include <string.h>

struct perfc_stream {
  perfc_ctx *ctx;
  int ended;   /* the client half-closed */
  int wire_rc; /* perfc_stream_recv()'s answer once a message was refused */
  /* Received messages live here, reset on every receive: a message is valid
   * until the next perfc_stream_recv(), so a long stream does not grow the
   * call arena without bound. */
  perfc_arena *msg_arena;
  /* Reply batching: the last send went out with PERFC__SEND_MORE (the
   * transport holds it), replies kept back since the last plain write,
   * and replies ever held (perfc__stream_replies_held()). */
  int holding;
  unsigned buffered;
  unsigned long held_total;
  int64_t got_ns;  /* when the handler was given its last message */
  int64_t busy_ns; /* its time from one message to asking for the next */
  /* ---- loop streams (loop thread only) ---- */
  int loop;
  int finished;   /* the call layer's finish ran */
  int cancelling; /* on_cancel runs: the handler may no longer send */
  int refused;    /* on_message answered PERFC_EFULL: the next delivery is
                   * the same message again (counted once) */
  int in_cb;      /* handler callbacks running (a resume nests them): the
                   * message arena outlives them */
  void *state;
  ProtobufCMessage *resp; /* a client stream's response */
};

/* A reply is held only while the handler turns a message around in less
 * than perfc__stream_hold_ns (the reply waits for the handler's next
 * message at most), and no more than STREAM_BATCH_MAX replies wait
 * unwritten. */
int64_t perfc__stream_hold_ns = 20000;
#define STREAM_BATCH_MAX 32

/* The stream whose handler runs on this thread: perfc_ctx_cancelled()
 * lets the transport look for a cancel only from there. */
static _Thread_local perfc_stream *tls_stream
    __attribute__((tls_model("initial-exec"))); /* set on every call: no
                                                   __tls_get_addr call */

perfc_stream *perfc__stream_current(void) { return tls_stream; }

unsigned long perfc__stream_replies_held(const perfc_stream *s) {
  return s != NULL ? s->held_total : 0;
}

/* Writes what the transport holds; the batch is over. */
static int flush(perfc_stream *s, int wait) {
  s->holding = 0;
  s->buffered = 0;
  return s->ctx->ops->stream_flush(s->ctx, wait);
}

int perfc_stream_recv(perfc_stream *s, ProtobufCMessage **msg) {
  if (s == NULL || msg == NULL)
    return PERFC_EINVAL;
  *msg = NULL;
  if (s->loop)
    return PERFC_ESTATE; /* messages come to on_message */
  perfc_ctx *ctx = s->ctx;
  const perfc_method_desc *d = ctx->method->desc;
  if (d->kind != PERFC_METHOD_CLIENT_STREAM && d->kind != PERFC_METHOD_BIDI_STREAM)
    return PERFC_ESTATE; /* the request of a server stream came with the call */
  if (s->ended)
    return 0;
  if (ctx->wire_code != PERFC_STATUS_OK)
    return s->wire_rc; /* a refused message ended the stream's input */
  int64_t now = perfc__now_ns();
  s->busy_ns = s->got_ns != 0 ? now - s->got_ns : INT64_MAX;
  perfc_arena_reset(s->msg_arena);
  const uint8_t *data = NULL;
  size_t len = 0;
  int64_t t = now;
  int rc = ctx->ops->stream_recv(ctx, s->msg_arena, &data, &len, &t);
  if (t != now) {
    /* The transport waited, and wrote what it held before (its contract). */
    s->holding = 0;
    s->buffered = 0;
  }
  s->got_ns = t;
  if (rc == 0) { /* half-close: the client sent its last message */
    s->ended = 1;
    /* No request follows, so the handler's next step is not a quick reply
     * to one: what is held goes out now, not when it returns. */
    flush(s, 0);
    return 0;
  }
  if (rc == PERFC_ETOOBIG || rc == PERFC_EPARSE) {
    /* Refused on the wire: the call ends with ctx->wire_code whatever the
     * handler returns (stream_body), and no message after this one is
     * read. */
    s->wire_rc = rc;
    return rc;
  }
  if (rc < 0)
    return rc;
  *msg = perfc__call_decode(ctx, s->msg_arena, data, len, "stream message");
  if (*msg == NULL) {
    ctx->code = PERFC_STATUS_INVALID_ARGUMENT;
    return PERFC_EPARSE;
  }
  if (ctx->ic_entered)
    perfc__ic_run_message(ctx, 0);
  return 1;
}

/* Whether the reply being sent may be held back (see the file comment).
 * The first message never waits: the headers go with it, and a client
 * should see them at once. */
static int may_hold(perfc_stream *s, int more) {
  perfc_ctx *ctx = s->ctx;
  if (!ctx->initial_md_sent || s->buffered >= STREAM_BATCH_MAX)
    return 0;
  if (more)
    return 1;
  if (ctx->srv->opts.stream_flush_every_send ||
      s->busy_ns > perfc__stream_hold_ns ||
      perfc__now_ns() - s->got_ns > perfc__stream_hold_ns)
    return 0;
  return ctx->ops->stream_recv_ready(ctx);
}

static int stream_send(perfc_stream *s, const ProtobufCMessage *msg, int more) {
  if (s == NULL || msg == NULL)
    return PERFC_EINVAL;
  perfc_ctx *ctx = s->ctx;
  if (s->loop) {
    if (s->finished || s->cancelling)
      return PERFC_ESHUTDOWN;
    if (!ctx->ops->loop_here(ctx))
      return PERFC_ESTATE;
  }
  const perfc_method_desc *d = ctx->method->desc;
  if (d->kind != PERFC_METHOD_SERVER_STREAM && d->kind != PERFC_METHOD_BIDI_STREAM)
    return PERFC_ESTATE; /* a client stream answers with one response */
  if (msg->descriptor != d->output)
    return PERFC_EINVAL;
  if (perfc__call_cancel_seen(ctx))
    return PERFC_ESHUTDOWN;
  int max = ctx->srv->opts.max_send_message_bytes;
  size_t size = protobuf_c_message_get_packed_size(msg);
  if (max > 0 && size > (size_t)max)
    return PERFC_ETOOBIG;
  if (s->loop) {
    /* On the loop everything sent in an iteration leaves in its one write:
     * no batching decision to make, and no waiting. */
    perfc__payload lp = {.msg = msg, .bytes = NULL, .len = size};
    int rc = ctx->ops->stream_send(
        ctx, &lp,
        PERFC__SEND_NO_WAIT | (ctx->comp_off ? PERFC__SEND_NO_COMPRESS : 0));
    if (rc == PERFC_EFULL)
      return PERFC_EFULL;
    if (rc != 0)
      return PERFC_ESHUTDOWN;
    if (ctx->ic_entered)
      perfc__ic_run_message(ctx, 1);
    return 0;
  }
  /* The reply held last time is written now, ahead of this one. */
  if (s->holding)
    s->buffered++;
  int hold = may_hold(s, more);
  perfc__payload p = {.msg = msg, .bytes = NULL, .len = size};
  unsigned flags = (hold ? PERFC__SEND_MORE : 0) |
                   (ctx->comp_off ? PERFC__SEND_NO_COMPRESS : 0);
  if (ctx->ops->stream_send(ctx, &p, flags) != 0)
    return PERFC_ESHUTDOWN;
  if (hold) {
    s->holding = 1;
    s->held_total++;
  } else {
    s->holding = 0;
    s->buffered = 0;
  }
  if (ctx->ic_entered)
    perfc__ic_run_message(ctx, 1);
  return 0;
}

int perfc_stream_send(perfc_stream *s, const ProtobufCMessage *msg) {
  return stream_send(s, msg, 0);
}

int perfc_stream_send_more(perfc_stream *s, const ProtobufCMessage *msg) {
  return stream_send(s, msg, 1);
}

/* The handler's part of a stream; ends with the call's finish. */
static void stream_body(perfc_ctx *ctx) {
  perfc__method *m = ctx->method;
  const perfc_method_desc *d = m->desc;
  /* First, whatever else fails: stream_end() pairs with it. */
  int rc = ctx->ops->stream_begin(ctx);
  perfc_stream *s =
      rc == 0 ? perfc_arena_calloc(ctx->arena, sizeof *s) : NULL;
  if (s == NULL || perfc_arena_new(&s->msg_arena, 0) != 0) {
    perfc__call_finish_with(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                            "out of memory");
    return;
  }
  s->ctx = ctx;
  ctx->stream = s;
  tls_stream = s;

  ProtobufCMessage *req = NULL, *resp = NULL;
  if (d->kind == PERFC_METHOD_SERVER_STREAM) {
    const uint8_t *data;
    size_t len;
    perfc_status_code wc = ctx->ops->request(ctx, &data, &len);
    if (wc != PERFC_STATUS_OK) {
      perfc__call_finish_with(ctx, wc, "%s", ctx->wire_message);
      return;
    }
    req = perfc__call_decode(ctx, ctx->arena, data, len, "request");
    if (req == NULL) {
      ctx->code = PERFC_STATUS_INVALID_ARGUMENT;
      perfc__call_finish(ctx);
      return;
    }
    if (ctx->ic_entered)
      perfc__ic_run_message(ctx, 0);
  }
  if (d->kind == PERFC_METHOD_CLIENT_STREAM) {
    resp = perfc_arena_alloc(ctx->arena, d->output->sizeof_message);
    if (resp == NULL) {
      perfc__call_finish_with(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                              "out of memory");
      return;
    }
    d->output->message_init(resp);
  }
  ctx->code = d->invoke(ctx, m->handlers, m->user_data, req, resp, s);
  /* The status goes after the last message: a failed last send means the
   * call is already cancelled, and the finish fails the same way. */
  flush(s, 1);
  if ((unsigned)ctx->code >= PERFC_STATUS_COUNT)
    ctx->code = PERFC_STATUS_UNKNOWN;
  perfc__call_apply_deadline_cap(ctx);
  if (ctx->wire_code != PERFC_STATUS_OK) {
    ctx->code = ctx->wire_code;
    ctx->message = ctx->wire_message;
  }
  if (ctx->code == PERFC_STATUS_OK && resp != NULL) {
    ctx->has_response = 1;
    ctx->response.msg = resp;
    ctx->response.len = protobuf_c_message_get_packed_size(resp);
  }
  perfc__call_finish(ctx);
}

void perfc__stream_run(perfc_ctx *ctx) {
  stream_body(ctx);
  perfc_stream *s = ctx->stream;
  perfc_arena *msgs = s != NULL ? s->msg_arena : NULL;
  /* ctx is the transport's again once this returns. */
  ctx->ops->stream_end(ctx);
  perfc_arena_free(msgs);
  tls_stream = NULL;
}

/* ---- loop streams ----------------------------------------------------------- */

int perfc__stream_is_loop(const perfc_stream *s) { return s->loop; }

perfc_ctx *perfc_stream_ctx(perfc_stream *s) {
  return s != NULL ? s->ctx : NULL;
}

/* After the handler's callbacks returned: a finished stream's message
 * arena goes (a message it was handed may be in use until then). */
static void loop_after(perfc_stream *s) {
  if (s->finished && s->in_cb == 0 && s->msg_arena != NULL) {
    perfc_arena_free(s->msg_arena);
    s->msg_arena = NULL;
  }
}

/* The call layer's one finish of a loop stream, as stream_body ends a
 * blocking one. `s` stays valid afterwards: the transport holds the call
 * until its close, which never comes from inside this. */
static void loop_finish(perfc_stream *s, perfc_status_code code) {
  perfc_ctx *ctx = s->ctx;
  s->finished = 1;
  atomic_fetch_sub(&ctx->srv->loop_streams, 1);
  ctx->code = (unsigned)code >= PERFC_STATUS_COUNT ? PERFC_STATUS_UNKNOWN : code;
  perfc__call_apply_deadline_cap(ctx);
  if (ctx->wire_code != PERFC_STATUS_OK) {
    ctx->code = ctx->wire_code;
    ctx->message = ctx->wire_message;
  }
  if (ctx->code == PERFC_STATUS_OK && s->resp != NULL) {
    ctx->has_response = 1;
    ctx->response.msg = s->resp;
    ctx->response.len = protobuf_c_message_get_packed_size(s->resp);
  }
  /* Packs the response (which may point into the message arena) and
   * writes the status; the arena goes after. */
  perfc__call_finish(ctx);
  loop_after(s);
}

/* The stream ends without the handler's finish: it is told (on_cancel),
 * then the call ends with `code`. */
static void loop_abort(perfc_stream *s, perfc_status_code code,
                       const char *message) {
  perfc_ctx *ctx = s->ctx;
  perfc__method *m = ctx->method;
  s->cancelling = 1;
  if (m->loop_cb.on_cancel != NULL) {
    s->in_cb++;
    m->loop_cb.on_cancel(s, s->state);
    s->in_cb--;
  }
  if (message != NULL)
    ctx->message = message;
  loop_finish(s, code);
}

void perfc__stream_loop_start(perfc_ctx *ctx) {
  perfc__method *m = ctx->method;
  const perfc_method_desc *d = m->desc;
  /* The shutdown grace reaches it as it reaches a worker's call
   * (perfc__call_cancel_seen, perfc__call_finish). */
  ctx->run_listed = 1;
  perfc_stream *s = perfc_arena_calloc(ctx->arena, sizeof *s);
  if (s == NULL || perfc_arena_new(&s->msg_arena, 0) != 0) {
    perfc__call_finish_with(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                            "out of memory");
    return;
  }
  s->ctx = ctx;
  s->loop = 1;
  s->state = m->loop_ud;
  ctx->stream = s;
  atomic_fetch_add(&ctx->srv->loop_streams, 1); /* loop_finish's */
  if (ctx->ops->loop_begin(ctx) != 0) {
    atomic_fetch_sub(&ctx->srv->loop_streams, 1);
    perfc_arena_free(s->msg_arena);
    ctx->stream = NULL;
    perfc__call_finish_with(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                            "out of memory");
    return;
  }
  ProtobufCMessage *req = NULL;
  if (d->kind == PERFC_METHOD_SERVER_STREAM) {
    const uint8_t *data;
    size_t len;
    perfc_status_code wc = ctx->ops->request(ctx, &data, &len);
    if (wc != PERFC_STATUS_OK) {
      ctx->message = ctx->wire_message;
      loop_finish(s, wc);
      return;
    }
    req = perfc__call_decode(ctx, ctx->arena, data, len, "request");
    if (req == NULL) {
      loop_finish(s, PERFC_STATUS_INVALID_ARGUMENT);
      return;
    }
    if (ctx->ic_entered)
      perfc__ic_run_message(ctx, 0);
  } else if (d->kind == PERFC_METHOD_CLIENT_STREAM) {
    s->resp = perfc_arena_alloc(ctx->arena, d->output->sizeof_message);
    if (s->resp == NULL) {
      s->finished = 1;
      atomic_fetch_sub(&ctx->srv->loop_streams, 1);
      perfc__call_finish_with(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                              "out of memory");
      loop_after(s);
      return;
    }
    d->output->message_init(s->resp);
  }
  s->in_cb++;
  perfc_status_code code = m->loop_cb.on_start(ctx, s, req, s->resp, &s->state);
  s->in_cb--;
  if (!s->finished && code != PERFC_STATUS_OK)
    loop_finish(s, code);
  loop_after(s);
  /* Started after an interceptor's deferred decision: what the client
   * sent meanwhile was held by the transport, and comes now. */
  if (ctx->ic_hold_msgs) {
    ctx->ic_hold_msgs = 0;
    if (!s->finished)
      ctx->ops->loop_resume(ctx);
  }
}

int perfc__stream_loop_message(perfc_ctx *ctx, const uint8_t *data,
                               size_t len) {
  perfc_stream *s = ctx->stream;
  if (s == NULL || s->finished)
    return 0;
  perfc__method *m = ctx->method;
  perfc_arena_reset(s->msg_arena);
  ProtobufCMessage *msg =
      perfc__call_decode(ctx, s->msg_arena, data, len, "stream message");
  if (msg == NULL) {
    /* As a blocking handler's receive answers PERFC_EPARSE: the call ends
     * INVALID_ARGUMENT (ctx->message names the field). */
    loop_abort(s, PERFC_STATUS_INVALID_ARGUMENT, NULL);
    return 0;
  }
  /* Counted when first handed over, as perfc_stream_recv counts: a
   * message refused with PERFC_EFULL comes again and is not counted
   * twice. */
  if (ctx->ic_entered && !s->refused)
    perfc__ic_run_message(ctx, 0);
  if (m->loop_cb.on_message == NULL)
    return 0;
  s->in_cb++;
  int rc = m->loop_cb.on_message(s, msg, s->state);
  s->in_cb--;
  s->refused = rc == PERFC_EFULL && !s->finished;
  loop_after(s);
  return s->refused ? PERFC_EFULL : 0;
}

void perfc__stream_loop_half_close(perfc_ctx *ctx) {
  perfc_stream *s = ctx->stream;
  if (s == NULL || s->finished)
    return;
  perfc__method *m = ctx->method;
  if (m->loop_cb.on_half_close == NULL) {
    loop_finish(s, PERFC_STATUS_OK);
    return;
  }
  s->in_cb++;
  m->loop_cb.on_half_close(s, s->state);
  s->in_cb--;
  loop_after(s);
}

void perfc__stream_loop_writable(perfc_ctx *ctx) {
  perfc_stream *s = ctx->stream;
  if (s == NULL || s->finished)
    return;
  perfc__method *m = ctx->method;
  s->in_cb++;
  if (m->loop_cb.on_writable != NULL)
    m->loop_cb.on_writable(s, s->state);
  else if (s->refused)
    ctx->ops->loop_resume(ctx);
  s->in_cb--;
  loop_after(s);
}

void perfc__stream_loop_cancel(perfc_ctx *ctx, perfc_status_code code) {
  perfc_stream *s = ctx->stream;
  if (s == NULL || s->finished)
    return;
  /* A client gives up at its deadline too (RST_STREAM), maybe before
   * h2's own timer fires: a call ended once its deadline passed ended
   * because of it, as h2_finish answers a worker's call. */
  if (ctx->deadline_ns != INT64_MAX &&
      perfc__deadline_left_ms(ctx->deadline_ns, perfc__now_ns()) == 0)
    code = PERFC_STATUS_DEADLINE_EXCEEDED;
  loop_abort(s, code,
             code == PERFC_STATUS_DEADLINE_EXCEEDED
                 ? "deadline exceeded"
                 : "cancelled: the client or the server ended the call");
}

int perfc_stream_finish(perfc_stream *s, perfc_status_code code) {
  if (s == NULL)
    return PERFC_EINVAL;
  if (!s->loop || s->finished || s->cancelling ||
      !s->ctx->ops->loop_here(s->ctx))
    return PERFC_ESTATE;
  loop_finish(s, code);
  return 0;
}

int perfc_stream_resume(perfc_stream *s) {
  if (s == NULL)
    return PERFC_EINVAL;
  if (!s->loop || s->finished || s->cancelling ||
      !s->ctx->ops->loop_here(s->ctx))
    return PERFC_ESTATE;
  if (s->refused) {
    s->in_cb++;
    s->ctx->ops->loop_resume(s->ctx);
    s->in_cb--;
    loop_after(s);
  }
  return 0;
}

int perfc_server_set_stream_callbacks(perfc_server *srv, const char *path,
                                      const perfc_stream_callbacks *cb,
                                      void *user_data) {
  if (srv == NULL || path == NULL || cb == NULL || cb->on_start == NULL)
    return perfc__fail(PERFC_EINVAL,
                       "server: stream callbacks need a server, a method "
                       "path and on_start");
  if (atomic_load(&srv->state) != SRV_NEW)
    return perfc__fail(PERFC_ESTATE,
                       "server: stream callbacks for %s: the server already "
                       "started",
                       path);
  perfc__method *m = NULL;
  int by_name = path[0] != '/';
  for (size_t i = 0; i < srv->nmethods; i++) {
    const perfc_method_desc *d = srv->methods[i]->desc;
    if (strcmp(by_name ? d->name : d->path, path) != 0)
      continue;
    if (m != NULL)
      return perfc__fail(PERFC_EINVAL,
                         "server: method name %s is ambiguous (%s, %s): give "
                         "its path",
                         path, m->desc->path, d->path);
    m = srv->methods[i];
  }
  if (m == NULL)
    return perfc__fail(PERFC_ENOENT,
                       "server: stream callbacks for %s: no such method "
                       "(register its service first)",
                       path);
  if (m->desc->kind == PERFC_METHOD_UNARY)
    return perfc__fail(PERFC_EINVAL,
                       "server: %s is unary: loop callbacks are for streaming "
                       "methods (a unary handler runs inline with "
                       "executor INLINE)",
                       m->desc->path);
  if (srv->tops->loop_begin == NULL)
    return perfc__fail(PERFC_ESTATE,
                       "server: %s: streaming handlers on the loop need the "
                       "h2 transport (server.transport: h2); the %s transport "
                       "runs streaming handlers on the worker pool only "
                       "(register a blocking handler)",
                       m->desc->path, srv->tops->name);
  m->loop = 1;
  m->loop_cb = *cb;
  m->loop_ud = user_data;
  m->has_handler = 1;
  return 0;
}
