/*
 * perfc/interceptor.h — hooks that run around every call: metrics, access
 * logs, authentication, rate limiting, load shedding.
 *
 * Server interceptors are registered on a server before it starts and run
 * in registration order on the way in (`before`) and in reverse order on the
 * way out (`after`), like nested middleware: the first registered sees the
 * call first and last. Per-method state is resolved once at start
 * (`method_init`), so the per-call hooks do no lookups.
 *
 * Room: runtime public headers. Hooks run on the thread that handles the
 * call (a poller or a worker) and must not block. A `before` hook that
 * must wait for something (a Redis round trip) defers its decision
 * instead: perfc_ic_defer() below.
 */
#ifndef PERFC_INTERCEPTOR_H
#define PERFC_INTERCEPTOR_H

#include "perfc/common.h"
#include "perfc/service.h"
#include "perfc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_server perfc_server;
typedef struct perfc_channel perfc_channel;
typedef struct perfc_metadata perfc_metadata; /* perfc/client.h */

/** Most interceptors a server takes. */
#define PERFC_MAX_INTERCEPTORS 8

typedef struct perfc_server_interceptor {
  const char *name; /**< for logs; borrowed, must outlive the server */
  void *self;       /**< passed to every hook */
  /** Once per registered method at perfc_server_start(); returns the
   *  method's state (may be NULL). Optional. */
  void *(*method_init)(void *self, const perfc_service_desc *svc,
                       const perfc_method_desc *m);
  /** Frees what method_init returned, at perfc_server_free(). Optional. */
  void (*method_free)(void *self, void *method_state);
  /** When the call is dispatched, before the request is decoded and before
   *  it waits for a worker. Return PERFC_STATUS_OK to go on, or a status to
   *  refuse the call (the message via perfc_ctx_error()); the handler then
   *  never runs but `after` still runs for this and earlier interceptors.
   *  Or, after perfc_ic_defer(), return PERFC_STATUS_DEFERRED: the decision
   *  comes later with perfc_ic_resume(). `*call_state` is a per-call slot
   *  for this interceptor, NULL at first. Optional. */
  perfc_status_code (*before)(void *self, void *method_state, perfc_ctx *ctx,
                              void **call_state);
  /** A message was received (`sent` = 0) or sent (`sent` = 1). Optional. */
  void (*on_message)(void *self, void *method_state, perfc_ctx *ctx,
                     void *call_state, int sent);
  /** With the call's final status, just before it is sent. Optional. */
  void (*after)(void *self, void *method_state, perfc_ctx *ctx,
                void *call_state, perfc_status_code code);
} perfc_server_interceptor;

/** Adds an interceptor; `ic` is copied, `ic->self` borrowed. Before
 *  perfc_server_start() only. Returns 0, PERFC_EINVAL, PERFC_ESTATE or
 *  PERFC_EFULL (more than PERFC_MAX_INTERCEPTORS). */
PERFC_API int perfc_server_add_interceptor(perfc_server *srv,
                                           const perfc_server_interceptor *ic);

/** What a client interceptor's `outgoing_metadata` hook knows of a call. */
typedef struct perfc_client_call_info {
  const perfc_method_desc *method;
  /** perfc_call_opts.parent: the server call this call is made for, or
   *  NULL. Valid during the hook. */
  perfc_ctx *parent;
  const char *target; /**< the channel's target; borrowed */
} perfc_client_call_info;

/**
 * Deferred decisions: a `before` hook that needs a round trip (a shared
 * rate limit asking Redis, perfc/ratelimit_redis.h) takes a handle, starts
 * its asynchronous work, returns PERFC_STATUS_DEFERRED, and decides later:
 *
 *   static void on_reply(int rc, void *arg) {       // on the same loop
 *     struct op *op = arg;                          // in the call's arena
 *     perfc_ic_resume(op->p, rc == 0 ? PERFC_STATUS_OK
 *         : perfc_ctx_error(perfc_ic_pending_ctx(op->p),
 *                           PERFC_STATUS_PERMISSION_DENIED, "refused"));
 *   }
 *   static perfc_status_code before(void *self, void *ms, perfc_ctx *ctx,
 *                                   void **cs) {
 *     struct op *op = perfc_ctx_alloc(ctx, sizeof *op);
 *     if (op == NULL || (op->p = perfc_ic_defer(ctx)) == NULL)
 *       return decide_blocking(ctx);                // C core stream, no memory
 *     if (start_async(on_reply, op) != 0)
 *       perfc_ic_resume(op->p, PERFC_STATUS_OK);    // fail open, say
 *     return PERFC_STATUS_DEFERRED;
 *   }
 *
 * Rules (docs/design.md, "Interceptors"; the deferred-call API,
 * perfc/deferred.h, works the same way):
 * - Unary calls on both transports, streaming calls on h2 (a stream's
 *   messages wait in the transport until its handler runs).
 *   A stream with loop callbacks (perfc/stream.h) gets the messages and
 *   half-close sent meanwhile after its on_start, in order.
 *   perfc_ic_defer() refuses (PERFC_ESTATE; the hook then decides as it
 *   would without deferring) a streaming call on the C core transport.
 * - After perfc_ic_defer() the hook returns PERFC_STATUS_DEFERRED. Any
 *   other status it returns, OK included, is logged as an error and
 *   ignored: the decision is the resume's. The chain stops there; the
 *   interceptors after it, the decode and the handler wait, holding no
 *   thread.
 * - Every handle is resumed exactly once, also when the call was
 *   cancelled meanwhile (its client reset it, its deadline passed, the
 *   server shut down): the transport has then already answered the
 *   client (CANCELLED, DEADLINE_EXCEEDED); the resume only ends the call
 *   with that status, its `after` hooks see it, and the handler never
 *   runs. perfc_ic_pending_cancelled() tells a continuation to skip work.
 * - perfc_ic_resume(OK): the chain goes on with the next interceptor,
 *   then the handler. Any other status ends the call with it (message via
 *   perfc_ctx_error() on perfc_ic_pending_ctx()), and the `after` hooks
 *   of this and every earlier interceptor run, as for a refusal returned
 *   at once.
 * - Threads. The resume may come from any thread, and even from inside
 *   the hook before it returns (the chain then goes on when the hook
 *   returns). On the h2 transport the chain always goes on on the loop
 *   that owns the call: at once when resumed there (a perfc/redis_async.h
 *   callback, a perfc/loop.h timer), else posted to it (no allocation). On
 *   the C core transport there is no such loop: the chain goes on on the
 *   resuming thread, so an INLINE handler runs there.
 * - Until the resume the call's context and arena stay valid; after it,
 *   the interceptor must not touch them (the call may already be over).
 * - The server's shutdown waits for every pending decision (as for
 *   deferred calls): a continuation waiting on a loop must still resume
 *   when that loop stops (perfc/loop.h's loop-local on_exit).
 * - A handle is a generation-checked token (perfc/deferred.h's table): a
 *   second resume, or any use after the resume, is refused with
 *   PERFC_ESTATE and touches nothing.
 * - Cost: nothing for hooks that never defer (the chain checks for the
 *   sentinel only on its refusal branch); a deferral costs a few
 *   compare-and-swaps on the handle table, and a post when resumed off
 *   the loop.
 */

/** What a `before` hook returns after perfc_ic_defer(). Not a status a
 *  call can end with (outside 0..PERFC_STATUS_COUNT - 1). */
#define PERFC_STATUS_DEFERRED ((perfc_status_code)0x100)

/** A pending interceptor decision (an opaque token). */
typedef struct perfc_ic_pending perfc_ic_pending;

/** From a `before` hook, on the thread running it: the decision comes
 *  later, at perfc_ic_resume(). Returns the handle, or NULL with
 *  perfc_last_error() set (PERFC_ESTATE: a stream that cannot defer (see
 *  the rules above), not in a `before` hook, or deferred already;
 *  PERFC_ENOMEM). */
PERFC_API perfc_ic_pending *perfc_ic_defer(perfc_ctx *ctx);

/** The pending call's context (its arena, metadata, perfc_ctx_error()), or
 *  NULL once `p` was resumed. */
PERFC_API perfc_ctx *perfc_ic_pending_ctx(perfc_ic_pending *p);

/** 1 when the call is over for its client (reset, deadline, shutdown):
 *  the resume only ends it. 0 while it is live; PERFC_ESTATE once `p` was
 *  resumed. */
PERFC_API int perfc_ic_pending_cancelled(perfc_ic_pending *p);

/** The decision: PERFC_STATUS_OK goes on with the chain, anything else
 *  refuses the call with that status. Exactly once per handle; any thread.
 *  Returns 0, or PERFC_ESTATE when `p` was resumed already (nothing
 *  happens). */
PERFC_API int perfc_ic_resume(perfc_ic_pending *p, perfc_status_code code);

/** Most request metadata entries one client interceptor may add. */
#define PERFC_CLIENT_IC_MAX_METADATA 4

/**
 * Client interceptors run around every call a channel makes, in the order
 * given in perfc_channel_opts.interceptors (`after` in reverse). The method
 * is known only per call, so per-method state is the interceptor's business
 * (perfc's metrics interceptor caches it lock-free by descriptor address).
 */
typedef struct perfc_client_interceptor {
  const char *name;
  void *self;
  /** Before the call starts. Return PERFC_STATUS_OK, or a status to fail the
   *  call locally without sending it. Optional. */
  perfc_status_code (*before)(void *self, const perfc_method_desc *m,
                              void **call_state);
  /** A message was sent (`sent` = 1) or received (0). Optional. */
  void (*on_message)(void *self, const perfc_method_desc *m, void *call_state,
                     int sent);
  /** With the final status and the call's duration. Optional. */
  void (*after)(void *self, const perfc_method_desc *m, void *call_state,
                perfc_status_code code, int64_t elapsed_ns);
  /** Once every interceptor's `before` let the call go on, on the calling
   *  thread, as the request metadata is built: may write up to `cap`
   *  (PERFC_CLIENT_IC_MAX_METADATA) request metadata entries into `md`
   *  and returns how many (propagation headers such as `traceparent`).
   *  Keys and values must be valid metadata and stay valid until `after`
   *  (keep them in `*call_state`, the slot `before` saw). If memory runs
   *  out the call goes on without them. Optional. */
  size_t (*outgoing_metadata)(void *self, const perfc_client_call_info *info,
                              void **call_state, perfc_metadata *md,
                              size_t cap);
} perfc_client_interceptor;

/** Monotonic nanoseconds at which the server matched the call; interceptors
 *  use it to time calls without storing a start time of their own. */
PERFC_API int64_t perfc_ctx_start_ns(const perfc_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_INTERCEPTOR_H */
