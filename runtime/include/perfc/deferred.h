/*
 * perfc/deferred.h — finishing a unary call later, from a continuation.
 *
 * A handler that waits for something with a callback API (an asynchronous
 * Redis command, perfc/redis_async.h; an outgoing gRPC call completed on
 * the handler's loop, perfc_channel_unary_on_loop() in perfc/client.h)
 * defers its call instead of blocking a thread, returns at once, and
 * finishes the call from the callback:
 *
 *   static void on_value(int rc, const perfc_slice *v, void *arg) {
 *     struct get_op *op = arg;                  // in the call's arena
 *     perfc_ctx *ctx = perfc_deferred_ctx(op->d);
 *     if (rc == 0) {
 *       op->resp->name = perfc_arena_strndup(perfc_ctx_arena(ctx),
 *                                            (const char *)v->base, v->len);
 *       perfc_deferred_finish(op->d, PERFC_STATUS_OK);
 *     } else {
 *       perfc_deferred_finish(op->d, perfc_ctx_fail(ctx, rc));
 *     }
 *   }
 *
 *   perfc_status_code get(perfc_ctx *ctx, const Req *req, Resp *resp, void *app) {
 *     struct get_op *op = perfc_ctx_alloc(ctx, sizeof *op);
 *     if (op == NULL || (op->d = perfc_call_defer(ctx)) == NULL)
 *       return PERFC_STATUS_RESOURCE_EXHAUSTED;
 *     op->resp = resp;
 *     int rc = perfc_redis_async_get(app->redis, req->key, on_value, op);
 *     if (rc != 0)
 *       perfc_deferred_finish(op->d, perfc_ctx_fail(ctx, rc));
 *     return PERFC_STATUS_OK;     // ignored: the call is deferred
 *   }
 *
 * Rules (docs/data-layer.md, "Deferred calls", and docs/design.md, "Where
 * continuations run"):
 * - Unary methods only (and a method's try_inline hook, perfc/service.h).
 *   Once perfc_call_defer() returned a handle, the
 *   handler's return value is ignored and the call ends at
 *   perfc_deferred_finish(): its response, status, trailing metadata and
 *   its arena live until then, and the interceptors (metrics, access log,
 *   tracing) see the call end then, with its real duration.
 * - Every handle must be finished exactly once, also when the call was
 *   cancelled meanwhile (the client reset it, its deadline passed, the
 *   server's shutdown grace ended): the transport has then already told
 *   the client; the finish only releases the call and reports it to the
 *   interceptors as CANCELLED or DEADLINE_EXCEEDED. A continuation can ask
 *   perfc_deferred_cancelled() first to skip useless work.
 * - Once the handler started something whose continuation may run on
 *   another thread (a pool handler's Redis command runs its callback on
 *   the client's loop thread), it must not touch the call any more (its
 *   context, arena, request or response) and should just return: the
 *   continuation may be using them already. A continuation on the
 *   handler's own loop (an inline handler on h2) cannot overlap it.
 * - The finish may come from any thread (a loop's continuation, a worker,
 *   another library's thread), and even from inside the handler before it
 *   returns (then the call ends when the handler returns). On the h2
 *   transport a finish on the call's own loop is written in that loop
 *   iteration's single write; from elsewhere it is posted to the loop. On
 *   the C core transport the finish starts the call's final batch from the
 *   calling thread.
 * - The server's shutdown waits until every deferred call was finished
 *   (after its grace the calls are cancelled, so continuations see it). A
 *   continuation that waits on something of a loop (a timer, a socket)
 *   must still finish its call when that loop stops: perfc/loop.h's
 *   loop-local values run their on_exit then, which is how the Redis
 *   client fails its pending commands.
 * - A handle is a generation-checked token, not a pointer to the call: a
 *   second finish, or any use after the finish, is refused with
 *   PERFC_ESTATE and touches nothing.
 */
#ifndef PERFC_DEFERRED_H
#define PERFC_DEFERRED_H

#include "perfc/common.h"
#include "perfc/server.h"
#include "perfc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A deferred call's handle (an opaque token; see the header comment). */
typedef struct perfc_deferred perfc_deferred;

/** From a unary handler, on the thread running it: the call does not end
 *  when the handler returns but at perfc_deferred_finish(). Returns the
 *  handle, or NULL with perfc_last_error() set (PERFC_ESTATE: not a unary
 *  handler running now, or deferred already; PERFC_ENOMEM). On the C core
 *  transport an inline call starts watching for its client's cancel here,
 *  as a pool call does. */
PERFC_API perfc_deferred *perfc_call_defer(perfc_ctx *ctx);

/** The deferred call's context (arena, metadata, perfc_ctx_error()...), or
 *  NULL when `d` was finished already. Valid until the finish. */
PERFC_API perfc_ctx *perfc_deferred_ctx(perfc_deferred *d);

/** 1 when the call is over for its client (reset, deadline, shutdown
 *  grace): finishing it sends nothing. 0 while it is live;
 *  PERFC_ESTATE when `d` was finished already. */
PERFC_API int perfc_deferred_cancelled(perfc_deferred *d);

/** Ends the deferred call with `code` (a message set before with
 *  perfc_ctx_error() on perfc_deferred_ctx(d); the response the handler
 *  got, filled in meanwhile, is sent when `code` is OK). Any thread.
 *  Returns 0 (the call ended, or ends when its handler returns), or
 *  PERFC_ESTATE when `d` was finished already (nothing happens). */
PERFC_API int perfc_deferred_finish(perfc_deferred *d, perfc_status_code code);

/** Hands the deferred call back to its server instead of finishing it:
 *  the method's handler runs on the server's worker pool, as for a POOL
 *  method, and its return ends the call. For a fast path that found it
 *  must block after all (the declarative cache's Redis read on the loop,
 *  when Redis does not have the key). Spends the handle as a finish does.
 *  Any thread. Returns 0, or PERFC_ESTATE when `d` was finished already or
 *  the server has no worker pool (then `d` is still yours to finish). */
PERFC_API int perfc_deferred_run_handler(perfc_deferred *d);

#ifdef __cplusplus
}
#endif

#endif /* PERFC_DEFERRED_H */
