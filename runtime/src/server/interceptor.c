/*
 * server/interceptor.c — the server's interceptor chain (perfc/interceptor.h):
 * registration, per-method state, and the hooks around every call.
 *
 * Room: runtime/src/server. Observe and guard hook in here (metrics, access
 * log, tracing, auth, rate limit, shedding, timeouts); the chain knows none
 * of them.
 */
#include "perfc/interceptor.h"
#include "server/call_internal.h"
#include "server/server_internal.h"
#include "perfc/log.h"

int perfc_server_add_interceptor(perfc_server *srv,
                                 const perfc_server_interceptor *ic) {
  if (srv == NULL || ic == NULL)
    return PERFC_EINVAL;
  if (atomic_load(&srv->state) != SRV_NEW)
    return PERFC_ESTATE;
  if (srv->nics == PERFC_MAX_INTERCEPTORS)
    return PERFC_EFULL;
  srv->ics[srv->nics++] = *ic;
  return 0;
}

/* Per-method state is resolved once at start, so a call pays no lookup. */
void perfc__ic_methods_init(perfc_server *srv) {
  for (size_t i = 0; i < srv->nmethods; i++) {
    perfc__method *m = srv->methods[i];
    for (unsigned k = 0; k < srv->nics; k++)
      if (srv->ics[k].method_init)
        m->ic_state[k] =
            srv->ics[k].method_init(srv->ics[k].self, m->service, m->desc);
  }
}

void perfc__ic_methods_free(perfc_server *srv) {
  for (size_t i = 0; i < srv->nmethods; i++)
    for (unsigned k = 0; k < srv->nics; k++)
      if (srv->ics[k].method_free && srv->methods[i]->ic_state[k] != NULL) {
        srv->ics[k].method_free(srv->ics[k].self, srv->methods[i]->ic_state[k]);
        srv->methods[i]->ic_state[k] = NULL;
      }
}

/* Runs the interceptors' `after` hooks, innermost first; the response
 * counts as a message sent when the call succeeded with one. */
void perfc__ic_run_after(perfc_ctx *ctx) {
  perfc__method *m = ctx->method;
  perfc_server *srv = ctx->srv;
  if (ctx->code == PERFC_STATUS_OK && ctx->has_response)
    for (unsigned i = 0; i < ctx->ic_entered; i++)
      if (srv->ics[i].on_message)
        srv->ics[i].on_message(srv->ics[i].self, m->ic_state[i], ctx,
                               ctx->ic_call[i], 1);
  for (unsigned i = ctx->ic_entered; i-- > 0;)
    if (srv->ics[i].after)
      srv->ics[i].after(srv->ics[i].self, m->ic_state[i], ctx, ctx->ic_call[i],
                        ctx->code);
  ctx->ic_entered = 0;
}

/* A hook that deferred its decision (perfc_ic_defer) but returned OK: the
 * decision is the resume's, as for any other status it could return, so
 * the chain waits for it. Going on would run the rest of the chain and
 * the handler now and again at the resume, or never end the handle and
 * hold the server's shutdown. Cold: logged once per such call. */
static __attribute__((noinline, cold)) perfc_status_code
defer_then_ok(perfc_ctx *ctx, unsigned i) {
  perfc_log(PERFC_LOG_ERROR,
            "server: %s: interceptor %s called perfc_ic_defer() but returned "
            "OK; the call waits for its perfc_ic_resume()",
            ctx->path, ctx->srv->ics[i].name ? ctx->srv->ics[i].name : "?");
  return PERFC_STATUS_DEFERRED;
}

/* Runs the `before` hooks in order; stops at the first refusal (or
 * PERFC_STATUS_DEFERRED: call.c tells the two apart on its refusal branch,
 * so a chain that says OK pays one flag test per hook for deferral). */
perfc_status_code perfc__ic_run_before(perfc_ctx *ctx) {
  perfc__method *m = ctx->method;
  perfc_server *srv = ctx->srv;
  for (unsigned i = 0; i < srv->nics; i++) {
    ctx->ic_entered = i + 1;
    if (srv->ics[i].before) {
      perfc_status_code c = srv->ics[i].before(srv->ics[i].self, m->ic_state[i],
                                               ctx, &ctx->ic_call[i]);
      if (c != PERFC_STATUS_OK)
        return c;
      if (ctx->ic_deferred)
        return defer_then_ok(ctx, i);
    }
  }
  return PERFC_STATUS_OK;
}

/* The same from interceptor `from` on, for a chain resumed after a
 * deferred decision. A copy rather than a parameter of the above: every
 * call runs that one, and a start index costs it instructions per hook. */
perfc_status_code perfc__ic_run_before_from(perfc_ctx *ctx, unsigned from) {
  perfc__method *m = ctx->method;
  perfc_server *srv = ctx->srv;
  for (unsigned i = from; i < srv->nics; i++) {
    ctx->ic_entered = i + 1;
    if (srv->ics[i].before) {
      perfc_status_code c = srv->ics[i].before(srv->ics[i].self, m->ic_state[i],
                                               ctx, &ctx->ic_call[i]);
      if (c != PERFC_STATUS_OK)
        return c;
      if (ctx->ic_deferred)
        return defer_then_ok(ctx, i);
    }
  }
  return PERFC_STATUS_OK;
}

void perfc__ic_run_message(perfc_ctx *ctx, int sent) {
  perfc_server *srv = ctx->srv;
  for (unsigned i = 0; i < ctx->ic_entered; i++)
    if (srv->ics[i].on_message)
      srv->ics[i].on_message(srv->ics[i].self, ctx->method->ic_state[i], ctx,
                             ctx->ic_call[i], sent);
}

void *perfc__ctx_call_state(const perfc_ctx *ctx, perfc__ic_before_fn before) {
  if (ctx == NULL || ctx->srv == NULL)
    return NULL;
  const perfc_server *srv = ctx->srv;
  for (unsigned i = 0; i < ctx->ic_entered; i++)
    if (srv->ics[i].before == before)
      return ctx->ic_call[i];
  return NULL;
}
