/*
 * transport/core/core_stream.c — a streaming call on the C core: the stream
 * ops of perfc__core_transport_ops, run on the handler's worker.
 *
 * Room: runtime/src/transport/core.
 *
 * Why the worker drives the call itself (docs/design.md, "Streaming"): the
 * call is bound to a private completion queue of its context, and the
 * handler's worker waits on that queue. An operation that completes at once
 * (a message already received, a write the socket took) costs no thread
 * switch, where a hand-off through the poller cost two per operation. The
 * queue is non-polling: the server's pollers poll the network for everyone,
 * and a worker waiting here never takes the polling role from them.
 *
 * One receive and one send may be outstanding at a time, each with its own
 * tag, as the core allows; their completions arrive on the call's queue and
 * are run by the handler's own thread while it waits (call_cq_run), so
 * nothing here needs a lock.
 */
#include "perfc/log.h"
#include "transport/core/core_server_internal.h"

#include <grpc/support/time.h>
#include <string.h>

struct core_stream {
  perfc_tag recv_tag, send_tag;
  ccall *c;
  int recv_done, send_done;
  int recv_ok, send_ok;
  /* The message of the send in flight (send_done == 0), destroyed when it
   * completes: a send returns once started, so the handler prepares its
   * next message while the core writes this one. */
  grpc_byte_buffer *send_bb;
  int send_pending;
  /* Read-ahead: once a message is taken, the receive of the next one is
   * started at once, so it is usually complete (taken from the queue
   * without sleeping) when the handler asks for it. One message at most is
   * held beyond what the handler has read. */
  grpc_byte_buffer *recv_bb;
  int recv_pending;
  /* The message given to the handler last: its bytes may be read in
   * place, so it lives until the next receive. */
  grpc_byte_buffer *cur_bb;
  /* The core's flags of the message in recv_bb and of the last one given
   * to the handler (perfc_ctx_message_compressed): the call's own flags
   * already describe the message read ahead. */
  uint32_t recv_flags, msg_flags;
  int msg_flags_set;
  /* A reply sent with PERFC__SEND_MORE, not started yet: it is started
   * with the core's buffer hint (GRPC_WRITE_BUFFER_HINT: it completes at
   * once, into the core's buffer) when the handler sends again, or without
   * it (which writes everything buffered) at the stream's next wait. The
   * core has no "flush" of its own, so the last reply of a burst cannot be
   * started with the hint. */
  grpc_byte_buffer *held;
  uint32_t held_flags;
};

grpc_completion_queue *perfc__core_call_cq_new(void) {
  grpc_completion_queue_attributes attr = {
      .version = 1,
      .cq_completion_type = GRPC_CQ_NEXT,
      .cq_polling_type = GRPC_CQ_NON_POLLING,
      .cq_shutdown_cb = NULL};
  return grpc_completion_queue_create(
      grpc_completion_queue_factory_lookup(&attr), &attr, NULL);
}

static void on_stream_recv(perfc_tag *t, int ok) {
  core_stream *s = PERFC_CONTAINER_OF(t, core_stream, recv_tag);
  s->recv_ok = ok;
  s->recv_done = 1;
  perfc__msg_flags_fn mf = perfc__core_msg_flags();
  if (ok && s->recv_bb != NULL && mf != NULL)
    s->recv_flags = mf(s->c->call);
}

static void on_stream_send(perfc_tag *t, int ok) {
  core_stream *s = PERFC_CONTAINER_OF(t, core_stream, send_tag);
  s->send_ok = ok;
  s->send_done = 1;
}

/* Runs completions of a streaming call's queue: with `block`, exactly one,
 * waiting for it; otherwise those already there. Callers loop on their own
 * condition, so a blocking wait never polls the queue a second time (an
 * empty poll still costs the core a pass through its pollset). */
static void call_cq_run(ccall *c, int block) {
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(
        c->call_cq,
        block ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
              : gpr_inf_past(GPR_CLOCK_MONOTONIC),
        NULL);
    if (ev.type != GRPC_OP_COMPLETE)
      return;
    perfc_tag *t = ev.tag;
    PERFC_HANDOFF_ACQUIRE(t);
    t->run(t, ev.success);
    if (block)
      return;
  }
}

int perfc__core_stream_begin(perfc_ctx *ctx) {
  ccall *c = ccall_of(ctx);
  /* Our own reference keeps c alive until the queue is drained in
   * stream_end, whichever of the final batch and the close completes
   * last. */
  atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  perfc__ccall_watch_close(c);
  perfc__core_msg_flags(); /* looked up once, before any completion */
  core_stream *s = perfc_arena_calloc(ctx->arena, sizeof *s);
  if (s == NULL)
    return PERFC_ENOMEM;
  s->c = c;
  s->recv_tag.run = on_stream_recv;
  s->send_tag.run = on_stream_send;
  c->cs = s;
  return 0;
}

/* Waits for the send in flight, if any, and frees its message. Returns 0,
 * or PERFC_ESHUTDOWN when it failed (the call was cancelled). */
static int send_wait(core_stream *s) {
  if (!s->send_pending)
    return 0;
  while (!s->send_done)
    call_cq_run(s->c, 1);
  s->send_pending = 0;
  grpc_byte_buffer_destroy(s->send_bb);
  s->send_bb = NULL;
  return s->send_ok ? 0 : PERFC_ESHUTDOWN;
}

/* Starts sending `bb` (owned from here on), with the initial metadata if
 * it is not out yet. Returns 0, or PERFC_ESHUTDOWN when the core refused
 * (call ended). One send at most is in flight: callers wait first. */
static int send_start(core_stream *s, grpc_byte_buffer *bb, uint32_t flags) {
  ccall *c = s->c;
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  n += perfc__ccall_initial_md(c, &ops[n]);
  ops[n].op = GRPC_OP_SEND_MESSAGE;
  ops[n].data.send_message.send_message = bb;
  ops[n].flags = flags;
  n++;
  s->send_done = 0;
  s->send_bb = bb;
  s->send_pending = 1;
  PERFC_HANDOFF_RELEASE(&s->send_tag);
  if (grpc_call_start_batch(c->call, ops, n, &s->send_tag, NULL) !=
      GRPC_CALL_OK) {
    s->send_pending = 0;
    s->send_bb = NULL;
    grpc_byte_buffer_destroy(bb);
    return PERFC_ESHUTDOWN;
  }
  return 0;
}

/* Starts the held reply plainly, which writes it and everything the core
 * buffered. Returns 0 or PERFC_ESHUTDOWN. */
static int flush_held(core_stream *s) {
  grpc_byte_buffer *bb = s->held;
  if (bb == NULL)
    return 0;
  s->held = NULL;
  if (send_wait(s) != 0) {
    grpc_byte_buffer_destroy(bb);
    return PERFC_ESHUTDOWN;
  }
  return send_start(s, bb, s->held_flags);
}

/* Starts receiving the next message; its completion sets recv_done.
 * Returns 0, or PERFC_ESHUTDOWN when the core refused (call ended). */
static int recv_start(core_stream *s) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &s->recv_bb;
  s->recv_bb = NULL;
  s->recv_done = 0;
  s->recv_pending = 1;
  grpc_call *call = s->c->call;
  PERFC_HANDOFF_RELEASE(&s->recv_tag);
  if (grpc_call_start_batch(call, &op, 1, &s->recv_tag, NULL) != GRPC_CALL_OK) {
    s->recv_pending = 0;
    return PERFC_ESHUTDOWN;
  }
  return 0;
}

int perfc__core_stream_recv(perfc_ctx *ctx, perfc_arena *a,
                            const uint8_t **data, size_t *len,
                            int64_t *now_ns) {
  ccall *c = ccall_of(ctx);
  core_stream *s = c->cs;
  if (s->cur_bb != NULL) {
    grpc_byte_buffer_destroy(s->cur_bb);
    s->cur_bb = NULL;
  }
  if (!s->recv_pending) {
    if (c->poller->cs->up->cancelled(ctx) || recv_start(s) != 0)
      return PERFC_ESHUTDOWN;
  }
  if (!s->recv_done) {
    /* Nothing written may wait while we do. */
    flush_held(s);
    while (!s->recv_done)
      call_cq_run(c, 1);
    *now_ns = perfc__now_ns();
  }
  s->recv_pending = 0;
  grpc_byte_buffer *bb = s->recv_bb;
  s->recv_bb = NULL;
  if (!s->recv_ok) {
    if (bb != NULL)
      grpc_byte_buffer_destroy(bb);
    return PERFC_ESHUTDOWN;
  }
  if (bb == NULL)
    return 0; /* half-close: the client sent its last message */
  s->msg_flags = s->recv_flags;
  s->msg_flags_set = perfc__core_msg_flags() != NULL;
  /* A failure here shows in the next receive, which starts it again. */
  recv_start(s);
  perfc_status_code wc = perfc__ccall_read_message(
      c, bb, s->msg_flags, s->msg_flags_set, a, data, len);
  if (wc != PERFC_STATUS_OK) {
    grpc_byte_buffer_destroy(bb);
    return wc == PERFC_STATUS_RESOURCE_EXHAUSTED ? PERFC_ETOOBIG : PERFC_EPARSE;
  }
  s->cur_bb = bb;
  return 1;
}

int perfc__core_stream_recv_ready(perfc_ctx *ctx) {
  ccall *c = ccall_of(ctx);
  core_stream *s = c->cs;
  if (!s->recv_pending)
    return 0;
  if (!s->recv_done)
    call_cq_run(c, 0);
  return s->recv_done && s->recv_ok && s->recv_bb != NULL;
}

int perfc__core_stream_send(perfc_ctx *ctx, const perfc__payload *p,
                            unsigned flags) {
  core_stream *s = ccall_of(ctx)->cs;
  /* Flow control: the core completes a send once the transport took it, and
   * only one may be in flight, so waiting for the previous one here bounds
   * what a slow reader makes us hold to one message (a buffered reply
   * completes at once, but the core writes its buffer once it passes
   * 64 KiB, and the call layer bounds a batch before that). */
  if (send_wait(s) != 0)
    return PERFC_ESHUTDOWN;
  grpc_byte_buffer *bb = perfc__core_payload_buffer(p);
  uint32_t gflags = (flags & PERFC__SEND_NO_COMPRESS) ? GRPC_WRITE_NO_COMPRESS : 0;
  if (s->held != NULL) {
    /* The held reply goes first, into the core's buffer: this one follows
     * at once, and writes it unless it is held in turn. */
    grpc_byte_buffer *prev = s->held;
    s->held = NULL;
    if (send_start(s, prev, s->held_flags | GRPC_WRITE_BUFFER_HINT) != 0 ||
        send_wait(s) != 0) {
      grpc_byte_buffer_destroy(bb);
      return PERFC_ESHUTDOWN;
    }
  }
  if (flags & PERFC__SEND_MORE) {
    s->held = bb;
    s->held_flags = gflags;
    return 0;
  }
  return send_start(s, bb, gflags);
}

int perfc__core_stream_flush(perfc_ctx *ctx, int wait) {
  core_stream *s = ccall_of(ctx)->cs;
  int rc = flush_held(s);
  if (wait) {
    int w = send_wait(s);
    if (rc == 0)
      rc = w;
  }
  return rc;
}

void perfc__core_stream_poll(perfc_ctx *ctx) { call_cq_run(ccall_of(ctx), 0); }

uint32_t perfc__core_stream_msg_flags(const ccall *c, int *known) {
  *known = c->cs->msg_flags_set;
  return c->cs->msg_flags;
}

void perfc__core_stream_end(perfc_ctx *ctx) {
  ccall *c = ccall_of(ctx);
  core_stream *s = c->cs;
  /* Every completion of the call arrives here, so the context is released
   * here too, once the final batch and the close completed. */
  while (atomic_load_explicit(&c->refs, memory_order_acquire) > 1)
    call_cq_run(c, 1);
  if (s != NULL) {
    if (s->recv_pending) {
      /* The receive read ahead outlived the handler. The status is out, so
       * cancelling only ends that receive, which must complete before the
       * queue can serve another call. */
      grpc_call_cancel(c->call, NULL);
      while (!s->recv_done)
        call_cq_run(c, 1);
      s->recv_pending = 0;
      if (s->recv_bb != NULL)
        grpc_byte_buffer_destroy(s->recv_bb);
      s->recv_bb = NULL;
    }
    if (s->cur_bb != NULL)
      grpc_byte_buffer_destroy(s->cur_bb);
    if (s->held != NULL)
      grpc_byte_buffer_destroy(s->held);
    s->cur_bb = s->held = NULL;
  }
  perfc__ccall_release(c);
}

/* Ends a streaming call that never reached its handler. Its operations
 * complete on the call's private queue, which only a handler's worker
 * drains, so this poller drains it here. Without metadata to send, no
 * operation is needed at all: the core sends the status itself when the
 * call is cancelled with it. Metadata an interceptor added (a refusal's
 * reason, say) needs the normal final batch; that completes as soon as the
 * status is written, and a client that stopped reading gets a second to
 * take it before the call is cancelled, so the poller is never held
 * longer. Consumes the caller's reference. */
void perfc__core_refuse_stream(perfc_ctx *ctx) {
  ccall *c = ccall_of(ctx);
  if (ctx->initial_md.count == 0 && ctx->trailing_md.count == 0) {
    grpc_call_cancel_with_status(c->call, (grpc_status_code)ctx->code,
                                 ctx->message ? ctx->message
                                              : perfc_status_name(ctx->code),
                                 NULL);
    perfc__ccall_release(c);
    return;
  }
  atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  perfc__core_finish(ctx); /* consumes the caller's reference */
  gpr_timespec until = perfc__deadline_from_ms(1000);
  while (atomic_load_explicit(&c->refs, memory_order_acquire) > 1) {
    grpc_event ev = grpc_completion_queue_next(c->call_cq, until, NULL);
    if (ev.type == GRPC_OP_COMPLETE) {
      perfc_tag *t = ev.tag;
      PERFC_HANDOFF_ACQUIRE(t);
      t->run(t, ev.success);
    } else if (ev.type == GRPC_QUEUE_TIMEOUT) {
      grpc_call_cancel(c->call, NULL); /* the batch now fails at once */
      until = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    }
  }
  perfc__ccall_release(c);
}
