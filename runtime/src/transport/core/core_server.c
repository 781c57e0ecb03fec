/*
 * transport/core/core_server.c — the C core as a server transport: the
 * grpc_server, its completion queues and pollers, pre-posted requests and
 * their re-arming, call contexts and their free lists, unary batches.
 *
 * Room: runtime/src/transport/core. Implements perfc__core_transport_ops
 * (server/transport_internal.h); reaches the call layer only through the
 * up-calls it was given. Owns every grpc_server/grpc_call it creates.
 *
 * A unary call (docs/design.md draws it):
 *   request matched on queue N -> poller N runs ccall->request_tag
 *   -> re-arm a fresh request for the same method on the same queue
 *   -> up->arrived(ctx): the call layer decodes, runs the handler (here or
 *      on a worker) and calls ops->finish
 *   -> one batch: SEND_INITIAL_METADATA + SEND_MESSAGE + SEND_STATUS +
 *      RECV_CLOSE_ON_SERVER
 *   -> its completion (always on poller N) drops the last reference and the
 *      context goes back to poller N's free list.
 * Because every completion of a unary call arrives on the queue the call
 * was requested on, its context is released on its own poller thread, so
 * the free lists need no lock. Streaming calls (core_stream.c) end on their
 * worker and return their context through a lock-free list.
 */
#include "perfc/log.h"
#include "perfc/server.h"
#include "core/thread_internal.h"
#include "transport/core/compression_internal.h"
#include "transport/core/core_server_internal.h"
#include "transport/core/tls_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Contexts kept per poller for reuse; beyond this they are freed, so a burst
 * does not pin its peak memory forever. */
#define CTX_CACHE_MAX 1024

/* Requests each method starts with per queue (see rearm()). */
#define REQUESTS_START 2u

static void post_request(poller *p, size_t midx);

/* grpc_call_test_only_get_message_flags() is the core's only way to tell
 * whether a received message was compressed. It is an internal C++ symbol,
 * not part of the C API, so it is looked up at run time and its absence
 * reported rather than linked against. */
static perfc__msg_flags_fn msg_flags;
static pthread_once_t msg_flags_once = PTHREAD_ONCE_INIT;
static void msg_flags_lookup(void) {
  msg_flags = (perfc__msg_flags_fn)(uintptr_t)dlsym(
      RTLD_DEFAULT, "_Z37grpc_call_test_only_get_message_flagsP9grpc_call");
}

perfc__msg_flags_fn perfc__core_msg_flags(void) {
  pthread_once(&msg_flags_once, msg_flags_lookup);
  return msg_flags;
}

static int clamp_int(int64_t v) { return v > INT32_MAX ? INT32_MAX : (int)v; }

/* ---- call contexts ---------------------------------------------------------- */

/* The poller running on this thread, so a context released elsewhere (only
 * on error paths) is freed instead of touching another thread's list. */
static _Thread_local poller *tls_poller;

/* One writer (the poller), so a plain load and store, not a locked
 * read-modify-write. */
static void counter_add(_Atomic unsigned *c, int d) {
  atomic_store_explicit(
      c, atomic_load_explicit(c, memory_order_relaxed) + (unsigned)d,
      memory_order_relaxed);
}

static ccall *ctx_get(poller *p) {
  if (p->free_list == NULL &&
      atomic_load_explicit(&p->returned, memory_order_relaxed) != NULL) {
    /* Taking the whole list at once is immune to ABA: no node is ever
     * popped alone while others push. */
    ccall *r = atomic_exchange_explicit(&p->returned, NULL, memory_order_acquire);
    while (r != NULL) {
      ccall *next = r->next_free;
      r->next_free = p->free_list;
      p->free_list = r;
      p->free_count++;
      r = next;
    }
  }
  ccall *c = p->free_list;
  if (c != NULL) {
    p->free_list = c->next_free;
    p->free_count--;
    perfc_arena_reset(c->ctx.arena);
  } else {
    c = malloc(sizeof *c);
    if (c == NULL)
      return NULL;
    if (perfc_arena_new(&c->ctx.arena, 0) != 0) {
      free(c);
      return NULL;
    }
    c->call_cq = NULL;
  }
  counter_add(&p->out, 1);
  perfc_arena *arena = c->ctx.arena;
  grpc_completion_queue *call_cq = c->call_cq;
  memset(c, 0, sizeof *c);
  c->ctx.arena = arena;
  c->ctx.ops = &perfc__core_transport_ops;
  c->ctx.srv = p->cs->srv;
  c->call_cq = call_cq;
  c->poller = p;
  atomic_init(&c->refs, 1);
  atomic_init(&c->ctx.cancelled_flag, 0);
  grpc_metadata_array_init(&c->request_md);
  return c;
}

/* Frees a context for good. Its queue, if any, is idle: every operation
 * of its last call completed before the context was released. */
static void ctx_destroy(ccall *c) {
  if (c->call_cq != NULL) {
    grpc_completion_queue_shutdown(c->call_cq);
    while (grpc_completion_queue_next(c->call_cq,
                                      gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL)
               .type != GRPC_QUEUE_SHUTDOWN)
      ;
    grpc_completion_queue_destroy(c->call_cq);
  }
  perfc_arena_free(c->ctx.arena);
  free(c);
}

static void ctx_put(ccall *c) {
  poller *p = c->poller;
  if (p == tls_poller) {
    counter_add(&p->out, -1);
    if (p->free_count < CTX_CACHE_MAX) {
      c->next_free = p->free_list;
      p->free_list = c;
      p->free_count++;
    } else {
      ctx_destroy(c);
    }
    return;
  }
  /* Another thread (a streaming handler's worker). The poller outlives
   * every worker: the pool is joined before the pollers stop. */
  atomic_fetch_add_explicit(&p->back_elsewhere, 1, memory_order_release);
  ccall *head = atomic_load_explicit(&p->returned, memory_order_relaxed);
  do
    c->next_free = head;
  while (!atomic_compare_exchange_weak_explicit(
      &p->returned, &head, c, memory_order_release, memory_order_relaxed));
}

void perfc__ccall_release(ccall *c) {
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return;
  if (c->counted) {
    poller *p = c->poller;
    if (p == tls_poller)
      counter_add(&p->running[c->midx], -1);
    else
      atomic_fetch_add_explicit(&p->ended_elsewhere[c->midx], 1,
                                memory_order_relaxed);
  }
  PERFC_CORE_MEMORY_BEGIN();
  grpc_metadata_array_destroy(&c->request_md);
  if (c->midx == SIZE_MAX)
    grpc_call_details_destroy(&c->details);
  if (c->payload != NULL)
    grpc_byte_buffer_destroy(c->payload);
  PERFC_CORE_MEMORY_END();
  if (c->response != NULL)
    grpc_byte_buffer_destroy(c->response);
  if (c->has_details)
    grpc_slice_unref(c->details_slice);
  if (c->call != NULL)
    grpc_call_unref(c->call);
  ctx_put(c);
}

/* ---- sending ------------------------------------------------------------------ */

/* The call layer's metadata as the core's array, in the arena; the arena
 * outlives the call's batches, so static slices over its strings are safe
 * and cost no refcounting. `extra` slots are left for the caller. */
static grpc_metadata *md_array(ccall *c, const perfc__md_list *l,
                               size_t extra) {
  size_t n = l->count + extra;
  if (n == 0)
    return NULL;
  grpc_metadata *md = perfc_arena_alloc(c->ctx.arena, n * sizeof *md);
  if (md == NULL)
    return NULL;
  memset(md, 0, n * sizeof *md);
  for (size_t i = 0; i < l->count; i++) {
    md[i].key = grpc_slice_from_static_string(l->items[i].key);
    md[i].value = grpc_slice_from_static_buffer(l->items[i].value,
                                                l->items[i].len);
  }
  return md;
}

size_t perfc__ccall_initial_md(ccall *c, grpc_op *op) {
  perfc_ctx *ctx = &c->ctx;
  if (ctx->initial_md_sent)
    return 0;
  op->op = GRPC_OP_SEND_INITIAL_METADATA;
  size_t n = ctx->initial_md.count;
  grpc_metadata *md = NULL;
  if (n > 0 || ctx->comp_set) {
    md = md_array(c, &ctx->initial_md, ctx->comp_set ? 1 : 0);
    if (md == NULL) {
      n = 0; /* out of memory: the headers go without the handler's entries */
    } else if (ctx->comp_set) {
      /* The core's compression filter takes this key off the outgoing
       * headers and compresses with it instead of the channel default (the
       * server side of what perfc_call_opts.compression does on the
       * client); it never reaches the wire. */
      md[n].key = grpc_slice_from_static_string("grpc-internal-encoding-request");
      md[n].value =
          grpc_slice_from_static_string(perfc__compress_name(ctx->comp_algo));
      n++;
    }
  }
  op->data.send_initial_metadata.count = n;
  op->data.send_initial_metadata.metadata = md;
  ctx->initial_md_sent = 1;
  return 1;
}

grpc_byte_buffer *perfc__core_payload_buffer(const perfc__payload *p) {
  return p->msg != NULL ? perfc__pack_sized(p->msg, p->len)
                        : perfc__bytes_to_buffer(p->bytes, p->len);
}

static void on_final_batch(perfc_tag *t, int ok) {
  (void)ok; /* a failed final batch means the client went away: same cleanup */
  ccall *c = PERFC_CONTAINER_OF(t, ccall, batch_tag);
  perfc__ccall_release(c);
}

/* Sends whatever the handler produced and the status, and waits for the
 * close in the same batch, so a unary call costs one completion. Consumes
 * the caller's reference. */
void perfc__core_finish(perfc_ctx *ctx) {
  ccall *c = ccall_of(ctx);
  grpc_op ops[4];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  n += perfc__ccall_initial_md(c, &ops[n]);
  if (ctx->code == PERFC_STATUS_OK && ctx->has_response) {
    c->response = perfc__core_payload_buffer(&ctx->response);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = c->response;
    ops[n].flags = ctx->comp_off ? GRPC_WRITE_NO_COMPRESS : 0;
    n++;
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = (grpc_status_code)ctx->code;
  if (ctx->trailing_md.count > 0) {
    grpc_metadata *md = md_array(c, &ctx->trailing_md, 0);
    if (md != NULL) {
      ops[n].data.send_status_from_server.trailing_metadata_count =
          ctx->trailing_md.count;
      ops[n].data.send_status_from_server.trailing_metadata = md;
    }
  }
  if (ctx->message != NULL) {
    /* The core copies the status message into its trailers; the arena copy
     * only needs to live until start_batch returns, but the slice is kept
     * until the call ends to stay independent of that detail. */
    c->details_slice = grpc_slice_from_static_string(ctx->message);
    c->has_details = 1;
    ops[n].data.send_status_from_server.status_details = &c->details_slice;
  }
  n++;
  if (!c->close_posted) {
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &c->cancelled;
    n++;
  }
  c->batch_tag.run = on_final_batch;
  /* Nothing may touch c between the hand-off and start_batch: the batch
   * can complete, and the poller recycle c, before start_batch returns. */
  grpc_call *call = c->call;
  PERFC_HANDOFF_RELEASE(&c->batch_tag);
  grpc_call_error err = grpc_call_start_batch(call, ops, n, &c->batch_tag, NULL);
  if (err != GRPC_CALL_OK) {
    perfc_log(PERFC_LOG_ERROR, "server: final batch for %s refused: %s",
              ctx->path ? ctx->path : "?", grpc_call_error_to_string(err));
    perfc__ccall_release(c);
  }
}

static void core_refuse(perfc_ctx *ctx) {
  ccall *c = ccall_of(ctx);
  if (c->midx != SIZE_MAX &&
      c->poller->cs->methods[c->midx].desc->kind != PERFC_METHOD_UNARY)
    perfc__core_refuse_stream(ctx);
  else
    perfc__core_finish(ctx);
}

static void on_close(perfc_tag *t, int ok) {
  ccall *c = PERFC_CONTAINER_OF(t, ccall, close_tag);
  /* The core cancels client calls made under this one itself (their
   * parent is this grpc_call); the up-call also ends those registered
   * with the call layer. */
  if (!ok || c->cancelled)
    c->poller->cs->up->cancel(&c->ctx);
  perfc__ccall_release(c);
}

/* A handler on the pool may run long; receiving the close early (with its
 * own reference on the context) lets perfc_ctx_cancelled() see a client
 * that went away or a server cancelling calls at shutdown. Inline handlers
 * skip this: they finish before the poller could deliver the close. */
void perfc__ccall_watch_close(ccall *c) {
  /* Asked already (an interceptor's deferred decision watched for the
   * close before the call went to the pool): the core takes one
   * RECV_CLOSE_ON_SERVER per call. */
  if (c->close_posted)
    return;
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &c->cancelled;
  c->close_tag.run = on_close;
  atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  /* close_posted is set first: the handler path still holds a reference,
   * so c outlives this function whatever the close does. */
  c->close_posted = 1;
  grpc_call *call = c->call;
  PERFC_HANDOFF_RELEASE(&c->close_tag);
  if (grpc_call_start_batch(call, &op, 1, &c->close_tag, NULL) !=
      GRPC_CALL_OK) {
    c->close_posted = 0;
    atomic_fetch_sub_explicit(&c->refs, 1, memory_order_relaxed);
  }
}

static void core_watch_close(perfc_ctx *ctx) {
  perfc__ccall_watch_close(ccall_of(ctx));
}

/* ---- receiving ----------------------------------------------------------------- */

perfc_status_code perfc__ccall_read_message(ccall *c, grpc_byte_buffer *bb,
                                            uint32_t flags, int flags_known,
                                            perfc_arena *a,
                                            const uint8_t **data, size_t *len) {
  perfc_ctx *ctx = &c->ctx;
  const char *path = ctx->path;
  size_t recv_max = c->poller->cs->recv_max;
  perfc_status_code code;
  if (flags_known && (flags & PERFC_WRITE_INTERNAL_COMPRESS) &&
      bb->data.raw.compression == GRPC_COMPRESS_NONE) {
    /* The core 1.51 drops a grpc-encoding it does not know (logging
     * "Error parsing metadata") before perfc sees the headers, so an
     * absent, an "identity" and an unsupported encoding look the same
     * here: the gRPC spec's INTERNAL for the first two is answered, with a
     * message that names the third. */
    code = PERFC_STATUS_INTERNAL;
    ctx->wire_message = perfc_arena_sprintf(
        ctx->arena,
        "%s: message has the compressed flag set but the call declares no "
        "grpc-encoding this server inflates (absent, identity, or unknown; "
        "gzip and deflate are supported)",
        path);
  } else {
    int rc = perfc__byte_buffer_flatten(bb, recv_max, a, data, len);
    if (rc == 0)
      return PERFC_STATUS_OK;
    if (rc == PERFC_ETOOBIG) {
      code = PERFC_STATUS_RESOURCE_EXHAUSTED;
      ctx->wire_message = perfc_arena_sprintf(
          ctx->arena,
          "%s: request message %s past the %zu-byte max_recv_message_bytes "
          "limit",
          path,
          bb->data.raw.compression != GRPC_COMPRESS_NONE ? "inflates" : "is",
          recv_max);
    } else if (rc == PERFC_ENOMEM) {
      code = PERFC_STATUS_RESOURCE_EXHAUSTED;
      ctx->wire_message =
          perfc_arena_sprintf(ctx->arena, "%s: out of memory reading the "
                                          "request message", path);
    } else if (rc == PERFC_EINVAL) {
      code = PERFC_STATUS_UNIMPLEMENTED;
      ctx->wire_message = perfc_arena_sprintf(
          ctx->arena, "%s: request compressed with an encoding this server "
                      "does not inflate (gzip and deflate are supported)",
          path);
    } else {
      code = PERFC_STATUS_INTERNAL;
      ctx->wire_message = perfc_arena_sprintf(
          ctx->arena, "%s: compressed request message is corrupt (%s data "
                      "does not inflate)",
          path, bb->data.raw.compression == GRPC_COMPRESS_GZIP ? "gzip"
                                                                : "deflate");
    }
  }
  ctx->wire_code = code;
  return code;
}

static perfc_status_code core_request(perfc_ctx *ctx, const uint8_t **data,
                                      size_t *len) {
  ccall *c = ccall_of(ctx);
  if (c->payload == NULL) {
    /* The core hands over no message both when none came and when the
     * stream ended inside one (a length prefix larger than the bytes
     * that followed): it discards the partial message without a word.
     * Either is the client breaking the protocol, which gRPC answers with
     * INTERNAL (grpc-java's "Half-closed without a request"), not
     * INVALID_ARGUMENT, which is about a request's content. */
    ctx->wire_message = perfc_arena_sprintf(
        ctx->arena,
        "%s: no complete request message arrived (none was sent, or the "
        "stream ended before the length its prefix announced)",
        ctx->path);
    return PERFC_STATUS_INTERNAL;
  }
  perfc__msg_flags_fn mf = perfc__core_msg_flags();
  return perfc__ccall_read_message(c, c->payload, mf ? mf(c->call) : 0,
                                   mf != NULL, ctx->arena, data, len);
}

static int core_message_compressed(const perfc_ctx *ctx) {
  const ccall *c = ccall_of(ctx);
  if (c->call == NULL)
    return PERFC_EINVAL;
  perfc__msg_flags_fn mf = perfc__core_msg_flags();
  if (mf == NULL)
    return PERFC_ENOENT;
  int known = 0;
  uint32_t f = c->cs != NULL ? perfc__core_stream_msg_flags(c, &known) : 0;
  if (!known)
    f = mf(c->call);
  return (f & (PERFC_WRITE_INTERNAL_COMPRESS |
               PERFC_WRITE_INTERNAL_WAS_COMPRESSED)) != 0;
}

static const char *core_peer(perfc_ctx *ctx) {
  ccall *c = ccall_of(ctx);
  if (c->peer == NULL) {
    char *p = grpc_call_get_peer(c->call);
    c->peer = perfc_arena_strdup(ctx->arena, p ? p : "unknown");
    gpr_free(p);
  }
  return c->peer;
}

static size_t core_md_count(const perfc_ctx *ctx) {
  return ccall_of(ctx)->request_md.count;
}

static void core_md_at(const perfc_ctx *ctx, size_t i, perfc_slice *key,
                       perfc_slice *value) {
  const grpc_metadata *md = &ccall_of(ctx)->request_md.metadata[i];
  *key = (perfc_slice){GRPC_SLICE_START_PTR(md->key), GRPC_SLICE_LENGTH(md->key)};
  *value = (perfc_slice){GRPC_SLICE_START_PTR(md->value),
                         GRPC_SLICE_LENGTH(md->value)};
}

grpc_call *perfc__ctx_call(perfc_ctx *ctx) {
  return ctx != NULL && ctx->ops == &perfc__core_transport_ops
             ? ccall_of(ctx)->call
             : NULL;
}

/* ---- requests ----------------------------------------------------------------- */

static int accepting(core_server *cs) {
  return atomic_load_explicit(&cs->accepting, memory_order_acquire);
}

/* Replaces the request of method `midx` that was just matched (c), and
 * deepens the method's posted requests when its calls outgrow them.
 *
 * Why not requests_per_method for every method from the start: Debian
 * builds the core without NDEBUG, and then every completion searches the
 * queue's array of outstanding operations linearly (cq_check_tag, under
 * the queue's mutex). Requests for methods nobody calls are never removed,
 * so they stay at the front of that array and every search walks over
 * them: 32 for each of a dozen cold methods cost each call of the hot one
 * ~4,600 instructions (8 % of a GetUser from L1). So a method starts with
 * REQUESTS_START, and doubles (up to requests_per_method, and stays there)
 * whenever this poller has more than twice its depth of its calls running.
 * Calls that find nothing posted wait in the core until the poller posts
 * the next request; none is refused for it. */
static void rearm(poller *p, ccall *c) {
  size_t i = c->midx;
  if (i == SIZE_MAX) {
    post_request(p, SIZE_MAX);
    return;
  }
  c->counted = 1;
  counter_add(&p->running[i], 1);
  unsigned running =
      atomic_load_explicit(&p->running[i], memory_order_relaxed) -
      atomic_load_explicit(&p->ended_elsewhere[i], memory_order_relaxed);
  unsigned depth = atomic_load_explicit(&p->depth[i], memory_order_relaxed);
  unsigned max = p->cs->opts.requests_per_method, want = 1;
  if (running > 2 * depth && depth < max) {
    unsigned d = depth * 2 < max ? depth * 2 : max;
    want += d - depth;
    atomic_store_explicit(&p->depth[i], d, memory_order_relaxed);
  }
  while (want-- > 0)
    post_request(p, i);
}

/* The core's deadline as CLOCK_MONOTONIC ns from `now_ns`. */
static int64_t deadline_ns(gpr_timespec d, int64_t now_ns) {
  if (gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0)
    return INT64_MAX;
  gpr_timespec left = gpr_time_sub(gpr_convert_clock_type(d, GPR_CLOCK_MONOTONIC),
                                   gpr_now(GPR_CLOCK_MONOTONIC));
  int64_t ns = (int64_t)left.tv_sec * 1000000000 + left.tv_nsec;
  return ns < 0 ? now_ns : now_ns + ns;
}

static void on_request(perfc_tag *t, int ok) {
  ccall *c = PERFC_CONTAINER_OF(t, ccall, request_tag);
  poller *p = c->poller;
  core_server *cs = p->cs;
  if (c->midx != SIZE_MAX)
    counter_add(&p->posted[c->midx], -1);
  if (!ok) {
    /* The server is shutting down and failed the posted request. */
    perfc__ccall_release(c);
    return;
  }
  perfc_ctx *ctx = &c->ctx;
  ctx->start_ns = perfc__now_ns();
  /* Re-arm first so a new call on this method never waits for us. */
  if (accepting(cs))
    rearm(p, c);
  if (c->midx == SIZE_MAX) {
    ctx->path = perfc_arena_strndup(
        ctx->arena, (const char *)GRPC_SLICE_START_PTR(c->details.method),
        GRPC_SLICE_LENGTH(c->details.method));
    ctx->deadline_ns = deadline_ns(c->details.deadline, ctx->start_ns);
  } else {
    const core_method *m = &cs->methods[c->midx];
    ctx->method = m->m;
    ctx->path = m->desc->path;
    ctx->deadline_ns = deadline_ns(c->deadline, ctx->start_ns);
  }
  cs->up->arrived(ctx);
}

/* Posts one request for method `midx` (SIZE_MAX: the generic catch-all). */
static void post_request(poller *p, size_t midx) {
  core_server *cs = p->cs;
  ccall *c = ctx_get(p);
  if (c == NULL) {
    perfc_log(PERFC_LOG_ERROR, "server: out of memory re-arming a request");
    return;
  }
  c->midx = midx;
  c->request_tag.run = on_request;
  grpc_call_error err;
  if (midx != SIZE_MAX) {
    counter_add(&p->posted[midx], 1);
    const core_method *m = &cs->methods[midx];
    perfc_method_kind kind = m->desc->kind;
    int with_payload =
        kind == PERFC_METHOD_UNARY || kind == PERFC_METHOD_SERVER_STREAM;
    grpc_completion_queue *bound = p->cq;
    if (kind != PERFC_METHOD_UNARY) {
      if (c->call_cq == NULL)
        c->call_cq = perfc__core_call_cq_new();
      if (c->call_cq == NULL) {
        perfc_log(PERFC_LOG_ERROR, "server: cannot create a call queue");
        counter_add(&p->posted[midx], -1);
        perfc__ccall_release(c);
        return;
      }
      bound = c->call_cq;
    }
    PERFC_HANDOFF_RELEASE(&c->request_tag);
    /* The match is announced on the poller's queue either way; only the
     * call's own operations complete on `bound`. */
    err = grpc_server_request_registered_call(
        cs->server, m->registered, &c->call, &c->deadline, &c->request_md,
        with_payload ? &c->payload : NULL, bound, p->cq, &c->request_tag);
  } else {
    grpc_call_details_init(&c->details);
    PERFC_HANDOFF_RELEASE(&c->request_tag);
    err = grpc_server_request_call(cs->server, &c->call, &c->details,
                                   &c->request_md, p->cq, p->cq,
                                   &c->request_tag);
  }
  if (err != GRPC_CALL_OK) {
    /* Refusals are expected once shutdown began; only log real failures. */
    if (accepting(cs))
      perfc_log(PERFC_LOG_ERROR, "server: cannot post request: %s",
                grpc_call_error_to_string(err));
    if (midx != SIZE_MAX)
      counter_add(&p->posted[midx], -1);
    perfc__ccall_release(c);
  }
}

/* ---- pollers ------------------------------------------------------------------ */

/* perfc_server_opts.poller_wakeup_preemption says why. Failure leaves the
 * normal policy, which is only slower. */
static void poller_sched(const core_server *cs) {
  if (cs->opts.poller_wakeup_preemption)
    return;
  struct sched_param sp = {.sched_priority = 0};
  int rc = pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
  if (rc != 0)
    perfc_log(PERFC_LOG_DEBUG, "server: SCHED_BATCH for a poller: %s",
              strerror(rc));
}

static void *poller_main(void *arg) {
  poller *p = arg;
  core_server *cs = p->cs;
  tls_poller = p;
  poller_sched(cs);
  pthread_mutex_lock(&cs->mu);
  while (!cs->go)
    pthread_cond_wait(&cs->cv, &cs->mu);
  pthread_mutex_unlock(&cs->mu);
  for (size_t m = 0; m < cs->nmethods; m++) {
    unsigned d = REQUESTS_START < cs->opts.requests_per_method
                     ? REQUESTS_START
                     : cs->opts.requests_per_method;
    atomic_store_explicit(&p->depth[m], d, memory_order_relaxed);
    for (unsigned k = 0; k < d; k++)
      post_request(p, m);
  }
  /* Unknown methods wait for a generic request; without one they would hang
   * until their deadline instead of failing with UNIMPLEMENTED. */
  for (unsigned k = 0; k < 2; k++)
    post_request(p, SIZE_MAX);
  pthread_mutex_lock(&cs->mu);
  cs->nready++;
  pthread_cond_broadcast(&cs->cv);
  pthread_mutex_unlock(&cs->mu);
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(
        p->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    if (ev.type == GRPC_OP_COMPLETE) {
      perfc_tag *t = ev.tag;
      PERFC_HANDOFF_ACQUIRE(t);
      t->run(t, ev.success);
    }
  }
  /* The queue is drained: nothing can complete on this poller any more, and
   * the workers that return contexts were joined before it was shut down. */
  ccall *r = atomic_exchange(&p->returned, NULL);
  while (r != NULL) {
    ccall *c = r;
    r = c->next_free;
    ctx_destroy(c);
  }
  while (p->free_list != NULL) {
    ccall *c = p->free_list;
    p->free_list = c->next_free;
    ctx_destroy(c);
  }
  p->free_count = 0;
  return NULL;
}

static void on_shutdown_done(perfc_tag *t, int ok) {
  (void)ok;
  core_server *cs = PERFC_CONTAINER_OF(t, core_server, shutdown_tag);
  pthread_mutex_lock(&cs->mu);
  cs->shutdown_done = 1;
  pthread_cond_broadcast(&cs->cv);
  pthread_mutex_unlock(&cs->mu);
}

/* ---- lifecycle ---------------------------------------------------------------- */

int perfc__core_transport_new(void **out, const perfc_server_opts *o,
                              const perfc__call_upcalls *up, perfc_server *srv) {
  grpc_compression_algorithm calgo;
  if (perfc__compression_parse(o->compression, &calgo) != 0)
    return PERFC_EINVAL;
  core_server *cs = calloc(1, sizeof *cs);
  if (cs == NULL)
    return PERFC_ENOMEM;
  cs->opts = *o;
  cs->opts.compression = NULL; /* borrowed only during this call */
  cs->up = up;
  cs->srv = srv;
  cs->calgo = calgo;
  cs->recv_max = perfc__recv_limit(o->max_recv_message_bytes);
  perfc__grpc_init();

  grpc_arg args[24];
  size_t n = 0;
#define INT_ARG(k, v)                                                          \
  args[n].type = GRPC_ARG_INTEGER;                                             \
  args[n].key = (char *)(k);                                                   \
  args[n].value.integer = (v);                                                 \
  n++
  INT_ARG(GRPC_ARG_KEEPALIVE_TIME_MS, clamp_int(o->keepalive_time_ms));
  INT_ARG(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, clamp_int(o->keepalive_timeout_ms));
  INT_ARG(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS,
          o->keepalive_permit_without_calls ? 1 : 0);
  INT_ARG(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
          clamp_int(o->min_ping_interval_ms));
  INT_ARG(GRPC_ARG_MAX_CONCURRENT_STREAMS, (int)o->max_concurrent_streams);
  INT_ARG(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, o->max_recv_message_bytes);
  INT_ARG(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, o->max_send_message_bytes);
  if (o->max_connection_idle_enabled) {
    INT_ARG(GRPC_ARG_MAX_CONNECTION_IDLE_MS, clamp_int(o->max_connection_idle_ms));
  }
  if (o->max_connection_age_enabled) {
    INT_ARG(GRPC_ARG_MAX_CONNECTION_AGE_MS, clamp_int(o->max_connection_age_ms));
  }
  if (o->max_connection_age_grace_ms > 0) {
    INT_ARG(GRPC_ARG_MAX_CONNECTION_AGE_GRACE_MS,
            clamp_int(o->max_connection_age_grace_ms));
  }
  /* The core turns SO_REUSEPORT on by default, which lets a second server
   * silently share a busy port; a clear bind error is what users expect. */
  INT_ARG(GRPC_ARG_ALLOW_REUSEPORT, 0);
  /* The core compresses every response message with this; requests in any
   * enabled encoding are accepted whatever the default. */
  if (calgo != GRPC_COMPRESS_NONE) {
    INT_ARG(GRPC_COMPRESSION_CHANNEL_DEFAULT_ALGORITHM, (int)calgo);
  }
  /* Memory per idle connection (docs/benchmarks-more.md, section 2). Every
   * accepted socket gets zerocopy send records, 4 by default (~1.3 KiB),
   * even with zerocopy off; with none the core marks zerocopy unavailable
   * for the socket (and logs that at INFO), which is what off means. */
  if (o->tcp_tx_zerocopy) {
    INT_ARG(GRPC_ARG_TCP_TX_ZEROCOPY_ENABLED, 1);
  } else {
    INT_ARG(GRPC_ARG_TCP_TX_ZEROCOPY_MAX_SIMULT_SENDS, 0);
  }
  /* channelz, on in the core by default, keeps a node per connection
   * (~0.4 KiB) and counts every call; perfc exposes none of it. */
  INT_ARG(GRPC_ARG_ENABLE_CHANNELZ, o->channelz ? 1 : 0);
  /* The core inflates a compressed message whole before it checks the
   * inflated size (a 1 MiB gzip bomb cost 1.13 GB of RSS and 3 s of CPU);
   * perfc inflates it itself, bounded by max_recv_message_bytes
   * (perfc__byte_buffer_flatten). */
  INT_ARG(GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION, 0);
  INT_ARG(GRPC_ARG_MAX_METADATA_SIZE,
          clamp_int((int64_t)(o->max_metadata_bytes > INT32_MAX
                                  ? INT32_MAX
                                  : o->max_metadata_bytes)));
#undef INT_ARG
  /* One memory quota for every connection: without one the core's is
   * unlimited. The channel args take their own reference. */
  grpc_resource_quota *quota = grpc_resource_quota_create("perfc-server");
  grpc_resource_quota_resize(quota, o->memory_budget_bytes);
  args[n].type = GRPC_ARG_POINTER;
  args[n].key = (char *)GRPC_ARG_RESOURCE_QUOTA;
  args[n].value.pointer.p = quota;
  args[n].value.pointer.vtable = grpc_resource_quota_arg_vtable();
  n++;
  grpc_channel_args ca = {.num_args = n, .args = args};
  cs->server = grpc_server_create(&ca, NULL);
  grpc_resource_quota_unref(quota);
  if (cs->server == NULL) {
    free(cs);
    grpc_shutdown();
    return PERFC_EGRPC;
  }
  pthread_mutex_init(&cs->mu, NULL);
  pthread_cond_init(&cs->cv, NULL);
  *out = cs;
  return 0;
}

/* One listening port; plaintext and TLS differ only in the credentials. */
static int core_listen(void *t, const char *addr, const perfc_tls_opts *tls,
                       int *bound_port) {
  core_server *cs = t;
  grpc_server_credentials *creds;
  if (tls != NULL) {
    int rc = perfc__tls_server_creds(tls, &creds);
    if (rc != 0)
      return rc;
  } else {
    creds = grpc_insecure_server_credentials_create();
  }
  /* The core's own error for a failed port is a 600-byte status dump at
   * error level; it goes to debug, and the reason is said once below. */
  perfc__grpc_log_quiet(1);
  int port = grpc_server_add_http2_port(cs->server, addr, creds);
  perfc__grpc_log_quiet(0);
  grpc_server_credentials_release(creds);
  if (port <= 0) {
    char why[160];
    perfc__listen_failure(addr, why, sizeof why);
    perfc_log(PERFC_LOG_ERROR, "server: cannot listen on %s: %s", addr, why);
    return PERFC_EBIND;
  }
  *bound_port = port;
  return 0;
}

static int core_add_method(void *t, size_t index, const perfc_method_desc *d,
                           perfc__method *m) {
  core_server *cs = t;
  if (index != cs->nmethods)
    return PERFC_EINVAL;
  if (cs->nmethods == cs->methods_cap) {
    size_t cap = cs->methods_cap ? cs->methods_cap * 2 : 8;
    core_method *nm = realloc(cs->methods, cap * sizeof *nm);
    if (nm == NULL)
      return PERFC_ENOMEM;
    cs->methods = nm;
    cs->methods_cap = cap;
  }
  int with_payload =
      d->kind == PERFC_METHOD_UNARY || d->kind == PERFC_METHOD_SERVER_STREAM;
  void *reg = grpc_server_register_method(
      cs->server, d->path, NULL,
      with_payload ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER
                   : GRPC_SRM_PAYLOAD_NONE,
      0);
  if (reg == NULL) {
    perfc_log(PERFC_LOG_ERROR, "server: cannot register %s (duplicate?)",
              d->path);
    return PERFC_EGRPC;
  }
  cs->methods[cs->nmethods++] =
      (core_method){.desc = d, .m = m, .registered = reg};
  return 0;
}

static void *poller_setup(void *ud, unsigned i, pthread_t **thread) {
  core_server *cs = ud;
  poller *p = &cs->pollers[i];
  p->cs = cs;
  p->index = i;
  p->posted = calloc(4 * (cs->nmethods + 1), sizeof *p->posted);
  if (p->posted == NULL) {
    perfc_log(PERFC_LOG_WARN, "server: no memory for poller %u", i);
    return NULL;
  }
  p->depth = p->posted + cs->nmethods + 1;
  p->running = p->depth + cs->nmethods + 1;
  p->ended_elsewhere = p->running + cs->nmethods + 1;
  p->cq = grpc_completion_queue_create_for_next(NULL);
  *thread = &p->thread;
  return p;
}

static void poller_undo(void *ud, unsigned i) {
  core_server *cs = ud;
  poller *p = &cs->pollers[i];
  grpc_completion_queue_shutdown(p->cq);
  grpc_completion_queue_destroy(p->cq);
  free((void *)p->posted);
  p->posted = NULL;
  perfc_log(PERFC_LOG_WARN, "server: cannot start poller thread %u", i);
}

static int core_start(void *t) {
  core_server *cs = t;
  cs->pollers = calloc(cs->opts.threads, sizeof *cs->pollers);
  if (cs->pollers == NULL)
    return PERFC_ENOMEM;
  /* Threads first: each waits for `go`, then posts its own requests, so a
   * poller's free list is only ever touched by its own thread. A poller
   * whose thread cannot be created is simply not used. */
  perfc__thread_spec spec = {.name = "perfc-cq",
                             .main = poller_main,
                             .setup = poller_setup,
                             .undo = poller_undo,
                             .user_data = cs};
  cs->npollers = perfc__threads_start(&spec, cs->opts.threads);
  if (cs->npollers == 0)
    return PERFC_ETHREAD;
  /* Every queue is registered before grpc_server_start, as the core
   * requires. */
  for (unsigned i = 0; i < cs->npollers; i++)
    grpc_server_register_completion_queue(cs->server, cs->pollers[i].cq, NULL);
  grpc_server_start(cs->server);
  cs->started = 1;
  atomic_store(&cs->accepting, 1);
  pthread_mutex_lock(&cs->mu);
  cs->go = 1;
  pthread_cond_broadcast(&cs->cv);
  /* Back only once every poller posted its first requests: a shutdown
   * right after the start (a SIGTERM held since start-up) then never
   * overlaps them. One racing the core's shutdown could be queued after
   * the core failed the pending ones, stay pending for ever, and keep its
   * poller's queue from draining (core_stop's join hung: 1 run in 820 of
   * a start followed at once by SIGTERM, under load). It also makes
   * "started" mean "every poller serves". */
  while (cs->nready < cs->npollers)
    pthread_cond_wait(&cs->cv, &cs->mu);
  pthread_mutex_unlock(&cs->mu);
  return 0;
}

static void core_shutdown_begin(void *t) {
  core_server *cs = t;
  atomic_store(&cs->accepting, 0);
  cs->shutdown_tag.run = on_shutdown_done;
  PERFC_HANDOFF_RELEASE(&cs->shutdown_tag);
  grpc_server_shutdown_and_notify(cs->server, cs->pollers[0].cq,
                                  &cs->shutdown_tag);
}

static int core_wait_calls(void *t, int64_t timeout_ms) {
  core_server *cs = t;
  pthread_mutex_lock(&cs->mu);
  if (timeout_ms < 0) {
    while (!cs->shutdown_done)
      pthread_cond_wait(&cs->cv, &cs->mu);
  } else {
    gpr_timespec rt = gpr_convert_clock_type(perfc__deadline_from_ms(timeout_ms),
                                             GPR_CLOCK_REALTIME);
    struct timespec ts = {.tv_sec = rt.tv_sec, .tv_nsec = rt.tv_nsec};
    while (!cs->shutdown_done)
      if (pthread_cond_timedwait(&cs->cv, &cs->mu, &ts) == ETIMEDOUT)
        break;
  }
  int done = cs->shutdown_done;
  pthread_mutex_unlock(&cs->mu);
  return done;
}

static void core_cancel_all(void *t) {
  core_server *cs = t;
  grpc_server_cancel_all_calls(cs->server);
}

/* Contexts of poller `p` still out: posted requests the core has not
 * failed yet, calls not yet released. */
static unsigned contexts_out(poller *p) {
  return atomic_load_explicit(&p->out, memory_order_acquire) -
         atomic_load_explicit(&p->back_elsewhere, memory_order_acquire);
}

static void core_stop(void *t) {
  core_server *cs = t;
  /* A poller may still be inside a call the shutdown cancelled: an inline
   * handler, or an interceptor's blocking decision (the shared rate
   * limit's Redis round trip on this transport) that has not returned.
   * Its answer starts a batch on the call, and the core aborts the
   * process (an assertion in grpc_call_start_batch) when the call's queue
   * is shut down by then. So the queues shut down once every context is
   * back: the answers sent, their batches completed. The pollers keep
   * polling meanwhile, and the pool was joined before this. */
  int64_t t0 = perfc__now_ns(), next_log = 5000;
  for (unsigned i = 0; i < cs->npollers; i++) {
    while (contexts_out(&cs->pollers[i]) != 0) {
      struct timespec ts = {0, 1000000};
      nanosleep(&ts, NULL);
      int64_t waited = (perfc__now_ns() - t0) / 1000000;
      if (waited >= next_log) {
        perfc_log(PERFC_LOG_WARN,
                  "server: still waiting for %u call(s) on poller %u to "
                  "return (%lld ms)",
                  contexts_out(&cs->pollers[i]), i, (long long)waited);
        next_log += 5000;
      }
    }
  }
  for (unsigned i = 0; i < cs->npollers; i++)
    grpc_completion_queue_shutdown(cs->pollers[i].cq);
  for (unsigned i = 0; i < cs->npollers; i++)
    pthread_join(cs->pollers[i].thread, NULL);
  grpc_server_destroy(cs->server);
  cs->server = NULL;
  for (unsigned i = 0; i < cs->npollers; i++)
    grpc_completion_queue_destroy(cs->pollers[i].cq);
  cs->stopped = 1;
}

static void core_free(void *t) {
  core_server *cs = t;
  if (cs == NULL)
    return;
  if (cs->server != NULL) {
    /* Never started. The core still insists on a shutdown before destroy
     * once listeners were added; with nothing in flight it completes at
     * once on a private queue. */
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    perfc_tag done = {NULL};
    grpc_server_shutdown_and_notify(cs->server, cq, &done);
    grpc_event ev;
    do {
      ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                      NULL);
    } while (ev.type == GRPC_OP_COMPLETE && ev.tag != &done);
    grpc_server_destroy(cs->server);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                      NULL)
               .type != GRPC_QUEUE_SHUTDOWN)
      ;
    grpc_completion_queue_destroy(cq);
  }
  for (unsigned i = 0; cs->pollers != NULL && i < cs->npollers; i++)
    free((void *)cs->pollers[i].posted);
  free(cs->pollers);
  free(cs->methods);
  pthread_cond_destroy(&cs->cv);
  pthread_mutex_destroy(&cs->mu);
  free(cs);
  grpc_shutdown();
}

int perfc__core_posted_requests(void *t, size_t method_index,
                                unsigned poller_index, unsigned *posted,
                                unsigned *depth) {
  core_server *cs = t;
  if (!cs->started || cs->stopped || poller_index >= cs->npollers ||
      method_index >= cs->nmethods)
    return PERFC_ESTATE;
  const poller *p = &cs->pollers[poller_index];
  *posted = atomic_load_explicit(&p->posted[method_index], memory_order_relaxed);
  *depth = atomic_load_explicit(&p->depth[method_index], memory_order_relaxed);
  return 0;
}

const perfc__transport_ops perfc__core_transport_ops = {
    .name = "core",
    .listen = core_listen,
    .add_method = core_add_method,
    .start = core_start,
    .shutdown_begin = core_shutdown_begin,
    .wait_calls = core_wait_calls,
    .cancel_all = core_cancel_all,
    .stop = core_stop,
    .free = core_free,
    .finish = perfc__core_finish,
    .refuse = core_refuse,
    .watch_close = core_watch_close,
    .request = core_request,
    .message_compressed = core_message_compressed,
    .peer = core_peer,
    .md_count = core_md_count,
    .md_at = core_md_at,
    .stream_begin = perfc__core_stream_begin,
    .stream_recv = perfc__core_stream_recv,
    .stream_recv_ready = perfc__core_stream_recv_ready,
    .stream_send = perfc__core_stream_send,
    .stream_flush = perfc__core_stream_flush,
    .stream_poll = perfc__core_stream_poll,
    .stream_end = perfc__core_stream_end,
};
