/*
 * server/call.c — a call, whatever carries it: the context API handlers see
 * (perfc_ctx_*), dispatch (inline or on the worker pool), unary calls and
 * their decode, and finishing a call.
 *
 * Room: runtime/src/server. Transport-agnostic: it reaches the transport
 * only through ctx->ops (server/transport_internal.h) and is reached by it
 * only through perfc__call_up.
 *
 * A unary call's path (docs/design.md draws it for both transports):
 *   the transport matched a call -> arrived() -> interceptors' `before`
 *   -> inline: decode into the arena, handler, pack, ops->finish
 *   -> pool: (try_inline on the transport's thread) -> ops->watch_close ->
 *      perfc_pool_submit -> the same on a worker
 *   -> ops->finish: headers, response and status in one go; the transport
 *      recycles the context once it is done with the call.
 */
#include "perfc/log.h"
#include "perfc/pool.h"
#include "perfc/server.h"
#include "perfc/trace_context.h"
#include "core/pb_wire_internal.h"
#include "server/call_internal.h"
#include "server/server_internal.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- client calls made under a call --------------------------------------- */

/* One lock for every server's registry: the registry is touched only by
 * client calls made with a parent (twice each) and by a cancel or finish
 * of a call that has some (ctx->watched), and it outlives any server, so
 * a client call ending after its parent's server was freed still finds a
 * valid lock (its node was detached then). */
static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;

static void watch_unlink(perfc__cancel_watch *w) {
  if (w->prev != NULL)
    w->prev->next = w->next;
  else
    w->srv->watches = w->next;
  if (w->next != NULL)
    w->next->prev = w->prev;
  atomic_fetch_sub(&w->ctx->watched, 1);
  w->ctx = NULL;
}

int perfc__ctx_watch(perfc_ctx *parent, perfc__cancel_watch *w,
                     void (*cancel)(void *arg), void *arg) {
  perfc_server *srv = parent->srv;
  w->ctx = parent;
  w->srv = srv;
  w->cancel = cancel;
  w->arg = arg;
  w->prev = NULL;
  pthread_mutex_lock(&watch_mu);
  w->next = srv->watches;
  if (srv->watches != NULL)
    srv->watches->prev = w;
  srv->watches = w;
  /* Counted before the flag is read, as perfc__call_cancel stores the flag
   * before it reads the count (both sequentially consistent): one of the
   * two sees the other, so no cancel falls between them. */
  atomic_fetch_add(&parent->watched, 1);
  int gone = perfc__call_cancel_seen(parent);
  if (gone)
    watch_unlink(w);
  pthread_mutex_unlock(&watch_mu);
  return gone;
}

void perfc__ctx_unwatch(perfc__cancel_watch *w) {
  pthread_mutex_lock(&watch_mu);
  if (w->ctx != NULL)
    watch_unlink(w);
  pthread_mutex_unlock(&watch_mu);
}

enum { WATCH_CANCEL, WATCH_DETACH };

/* Cancels (or only drops) the watches of `ctx`, or with ctx NULL those of
 * every call a worker runs (the end of the shutdown grace). */
static void watches_end(perfc_server *srv, const perfc_ctx *ctx, int how) {
  pthread_mutex_lock(&watch_mu);
  for (perfc__cancel_watch *w = srv->watches, *next; w != NULL; w = next) {
    next = w->next;
    if (ctx != NULL ? w->ctx != ctx : !w->ctx->run_listed)
      continue;
    watch_unlink(w);
    if (how == WATCH_CANCEL)
      w->cancel(w->arg);
  }
  pthread_mutex_unlock(&watch_mu);
}

void perfc__call_cancel(perfc_ctx *ctx) {
  atomic_store(&ctx->cancelled_flag, 1);
  if (atomic_load(&ctx->watched) != 0)
    watches_end(ctx->srv, ctx, WATCH_CANCEL);
}

/* The call ends: client calls still running under it go on unwatched (an
 * asynchronous call may outlive its handler; the context is recycled). */
static void watches_detach(perfc_ctx *ctx) {
  if (atomic_load_explicit(&ctx->watched, memory_order_acquire) != 0)
    watches_end(ctx->srv, ctx, WATCH_DETACH);
}

/* ---- finishing ------------------------------------------------------------ */

void perfc__call_finish(perfc_ctx *ctx) {
  watches_detach(ctx);
  if (ctx->run_listed &&
      atomic_load_explicit(&ctx->srv->grace_over, memory_order_acquire)) {
    ctx->code = PERFC_STATUS_CANCELLED;
    ctx->message = "server shutting down: its grace period ended before this "
                   "call finished";
  }
  if (ctx->ic_entered)
    perfc__ic_run_after(ctx);
  ctx->ops->finish(ctx);
}

/* The status message of a call that perfc ends itself, in the arena. */
static void set_message(perfc_ctx *ctx, const char *fmt, va_list ap) {
  char buf[512];
  vsnprintf(buf, sizeof buf, fmt, ap);
  ctx->message = perfc_arena_strdup(ctx->arena, buf);
}

void perfc__call_finish_with(perfc_ctx *ctx, perfc_status_code code,
                             const char *fmt, ...) {
  ctx->code = code;
  va_list ap;
  va_start(ap, fmt);
  set_message(ctx, fmt, ap);
  va_end(ap);
  perfc__call_finish(ctx);
}

/* finish_with() for a call that may be a stream not yet on its worker: the
 * transport ends those its own way (ops->refuse). */
static void refuse(perfc_ctx *ctx, perfc_status_code code, const char *fmt,
                   ...) __attribute__((format(printf, 3, 4)));

static void refuse(perfc_ctx *ctx, perfc_status_code code, const char *fmt,
                   ...) {
  ctx->code = code;
  if (fmt != NULL) {
    va_list ap;
    va_start(ap, fmt);
    set_message(ctx, fmt, ap);
    va_end(ap);
  }
  if (ctx->message == NULL)
    ctx->message = perfc_status_name(code);
  if (ctx->method != NULL && ctx->method->desc->kind != PERFC_METHOD_UNARY) {
    watches_detach(ctx);
    if (ctx->ic_entered)
      perfc__ic_run_after(ctx);
    ctx->ops->refuse(ctx);
  } else {
    perfc__call_finish(ctx);
  }
}

/* A handler that ran past a deadline the server imposed answers
 * DEADLINE_EXCEEDED whatever it returned: the client asked for no such
 * limit, so it must learn why its call failed, and a late answer was
 * already written off by the limit's purpose. */
void perfc__call_apply_deadline_cap(perfc_ctx *ctx) {
  if (ctx->deadline_capped &&
      perfc__deadline_left_ms(ctx->deadline_ns, perfc__now_ns()) == 0) {
    ctx->code = PERFC_STATUS_DEADLINE_EXCEEDED;
    ctx->message = perfc_arena_sprintf(ctx->arena,
                                       "%s exceeded the server's timeout",
                                       ctx->path);
  }
}

static int expired(const perfc_ctx *ctx) {
  return ctx->deadline_ns != INT64_MAX &&
         perfc__deadline_left_ms(ctx->deadline_ns, perfc__now_ns()) == 0;
}

int perfc__call_cancel_seen(const perfc_ctx *ctx) {
  return atomic_load_explicit(&ctx->cancelled_flag, memory_order_acquire) ||
         expired(ctx) ||
         (ctx->run_listed &&
          atomic_load_explicit(&ctx->srv->grace_over, memory_order_acquire));
}

size_t perfc__cancel_running(perfc_server *srv) {
  /* Why a flag and not the transport's cancel: the cancel closes the
   * connections, and clients then see UNAVAILABLE, which they treat as
   * safe to retry although the handler ran (server.c, wait_shutdown). The
   * calls themselves are not listed anywhere: a flag per call (run_listed)
   * and the pool's own counters are enough, so handing a call to a worker
   * takes no server-wide lock. */
  atomic_store_explicit(&srv->grace_over, 1, memory_order_release);
  /* Client calls those handlers wait for end with them (the registry's
   * lock orders this walk after the flag any later registration reads). */
  watches_end(srv, NULL, WATCH_CANCEL);
  /* Loop streams see the flag when their transport wakes them. */
  size_t loops = atomic_load(&srv->loop_streams);
  if (srv->pool == NULL)
    return loops;
  perfc_pool_stats st;
  perfc_pool_stats_get(srv->pool, &st);
  return (size_t)st.queued + st.busy + loops;
}

/* ---- unary ---------------------------------------------------------------- */

ProtobufCMessage *perfc__call_decode(perfc_ctx *ctx, perfc_arena *a,
                                     const uint8_t *data, size_t len,
                                     const char *what) {
  const perfc_method_desc *d = ctx->method->desc;
  ProtobufCAllocator al = perfc_arena_allocator(a);
  char why[256];
  ProtobufCMessage *req =
      perfc__pb_unpack(d->input, d->strings, &al, len, data, why, sizeof why);
  if (req != NULL)
    return req;
  if (why[0])
    ctx->message = perfc_arena_sprintf(ctx->arena, "%s: %s", d->path, why);
  else
    ctx->message = perfc_arena_sprintf(
        ctx->arena, "%s: malformed %s: %zu bytes do not parse as %s", d->path,
        what, len, d->input->name);
  return NULL;
}

/* Decodes a unary call's request into ctx->req and allocates ctx->resp.
 * Returns 0, or -1 after answering the call itself (expired, malformed). */
static int unary_prepare(perfc_ctx *ctx) {
  const perfc_method_desc *d = ctx->method->desc;
  if (expired(ctx)) {
    perfc__call_finish_with(ctx, PERFC_STATUS_DEADLINE_EXCEEDED,
                            "deadline expired before %s started", d->path);
    return -1;
  }
  const uint8_t *data;
  size_t len;
  perfc_status_code wc = ctx->ops->request(ctx, &data, &len);
  if (wc != PERFC_STATUS_OK) {
    perfc__call_finish_with(ctx, wc, "%s", ctx->wire_message);
    return -1;
  }
  ProtobufCMessage *req =
      perfc__call_decode(ctx, ctx->arena, data, len, "request");
  if (req == NULL) {
    ctx->code = PERFC_STATUS_INVALID_ARGUMENT;
    perfc__call_finish(ctx);
    return -1;
  }
  if (ctx->ic_entered)
    perfc__ic_run_message(ctx, 0);
  ProtobufCMessage *resp =
      perfc_arena_alloc(ctx->arena, d->output->sizeof_message);
  if (resp == NULL) {
    perfc__call_finish_with(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                            "out of memory");
    return -1;
  }
  d->output->message_init(resp);
  ctx->req = req;
  ctx->resp = resp;
  return 0;
}

/* Sends the response the handler (or try_inline, or a deferred call's
 * finish) produced with `code`. */
void perfc__call_unary_complete(perfc_ctx *ctx, perfc_status_code code) {
  const perfc_method_desc *d = ctx->method->desc;
  ctx->code = code;
  if ((unsigned)ctx->code >= PERFC_STATUS_COUNT) {
    perfc_log(PERFC_LOG_ERROR, "server: %s handler returned invalid status %d",
              d->path, (int)ctx->code);
    ctx->code = PERFC_STATUS_UNKNOWN;
  }
  perfc__call_apply_deadline_cap(ctx);
  if (ctx->code == PERFC_STATUS_OK) {
    size_t n = ctx->raw_response != NULL
                   ? ctx->raw_response_len
                   : protobuf_c_message_get_packed_size(ctx->resp);
    int max = ctx->srv->opts.max_send_message_bytes;
    if (max > 0 && n > (size_t)max) {
      perfc__call_finish_with(
          ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
          "%s: response of %zu bytes exceeds the %d-byte send limit", d->path,
          n, max);
      return;
    }
    ctx->has_response = 1;
    ctx->response.len = n;
    if (ctx->raw_response != NULL)
      ctx->response.bytes = ctx->raw_response;
    else
      ctx->response.msg = ctx->resp;
  }
  perfc__call_finish(ctx);
}

static void run_unary(perfc_ctx *ctx) {
  perfc__method *m = ctx->method;
  if (ctx->req == NULL) {
    if (unary_prepare(ctx) != 0)
      return;
  } else if (expired(ctx)) {
    /* Decoded on the transport's thread (try_inline missed), then it
     * waited for a worker: the deadline is checked again, as for every
     * pool call. */
    perfc__call_finish_with(ctx, PERFC_STATUS_DEADLINE_EXCEEDED,
                            "deadline expired before %s started",
                            m->desc->path);
    return;
  }
  ctx->in_handler = 1;
  perfc_status_code code = m->desc->invoke(ctx, m->handlers, m->user_data,
                                           ctx->req, ctx->resp, NULL);
  ctx->in_handler = 0;
  /* A deferred call ends at its finish (server/deferred.c), which may
   * already have come while the handler ran. */
  if (ctx->deferred != 0) {
    perfc__deferred_handler_returned(ctx);
    return;
  }
  perfc__call_unary_complete(ctx, code);
}

static void pool_job(void *arg) {
  perfc_ctx *ctx = arg;
  if (ctx->method->desc->kind == PERFC_METHOD_UNARY)
    run_unary(ctx);
  else
    perfc__stream_run(ctx);
}

void perfc__call_to_pool(perfc_ctx *ctx) {
  ctx->deferred = 0;
  if (!ctx->run_listed && !ctx->close_watched)
    ctx->ops->watch_close(ctx);
  ctx->run_listed = 1;
  /* perfc_pool_submit() hands the job the submitting thread's trace
   * context; this thread (a loop, or whoever finished the deferred call)
   * may work for no call or for another one: the call's own goes. */
  perfc_trace_current mine;
  int had = perfc_trace_current_get(&mine);
  perfc_trace_current_set(&ctx->defer_tc);
  int rc = ctx->srv->pool != NULL
               ? perfc_pool_submit(ctx->srv->pool, pool_job, ctx)
               : PERFC_ESTATE;
  perfc_trace_current_set(had ? &mine : NULL);
  if (rc != 0)
    perfc__call_finish_with(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                            "server busy: %s (worker queue bound reached)",
                            perfc_strerror(rc));
}

/* ---- dispatch --------------------------------------------------------------- */

/* A `before` hook did not say OK: a refusal, or a deferred decision
 * (perfc_ic_defer), which holds the call until perfc_ic_resume(). Off the
 * hot path: a chain that says OK never comes here. */
static void before_refused(perfc_ctx *ctx, perfc_status_code c) {
  if (ctx->ic_deferred) {
    if (c != PERFC_STATUS_DEFERRED)
      perfc_log(PERFC_LOG_ERROR,
                "server: %s: interceptor %s deferred its decision but "
                "returned %s; the decision is the resume's",
                ctx->path, ctx->srv->ics[ctx->ic_entered - 1].name
                               ? ctx->srv->ics[ctx->ic_entered - 1].name
                               : "?",
                perfc_status_name(c));
    perfc__deferred_handler_returned(ctx);
    return;
  }
  if (c == PERFC_STATUS_DEFERRED)
    refuse(ctx, PERFC_STATUS_INTERNAL,
           "%s: interceptor %s returned PERFC_STATUS_DEFERRED without "
           "perfc_ic_defer()",
           ctx->path, ctx->srv->ics[ctx->ic_entered - 1].name
                          ? ctx->srv->ics[ctx->ic_entered - 1].name
                          : "?");
  else
    refuse(ctx, c, NULL);
}

/* After the interceptors said OK (at once, or resumed). always_inline: on
 * the hot path it stays what arrived() was before deferral existed. */
static inline __attribute__((always_inline)) void
dispatch(perfc_ctx *ctx, perfc__method *m, perfc_server *srv) {
  if (!m->has_handler) {
    refuse(ctx, PERFC_STATUS_UNIMPLEMENTED,
           "method %s has no handler in this server", m->desc->path);
    return;
  }
  /* Loop callbacks (perfc_server_set_stream_callbacks) run here, on the
   * transport's thread, and never block. */
  if (m->loop) {
    perfc__stream_loop_start(ctx);
    return;
  }
  /* Blocking streaming handlers block on the network, so they always run
   * on the pool whatever the method's executor says; they watch for the
   * close themselves (perfc__stream_run). */
  if (m->desc->kind != PERFC_METHOD_UNARY) {
    ctx->run_listed = 1;
    int rc = perfc_pool_submit(srv->pool, pool_job, ctx);
    if (rc != 0)
      refuse(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
             "server busy: %s (worker queue bound reached)", perfc_strerror(rc));
    return;
  }
  if (m->executor == PERFC_EXEC_POOL) {
    /* A method that can sometimes answer without blocking (a cached
     * method's L1 hit) tries here first: the hand-off to a worker and back
     * costs more than such an answer. */
    if (m->desc->try_inline != NULL) {
      if (unary_prepare(ctx) != 0)
        return;
      perfc_status_code code;
      ctx->in_handler = 1;
      int answered =
          m->desc->try_inline(ctx, m->user_data, ctx->req, ctx->resp, &code);
      ctx->in_handler = 0;
      /* It may defer the call (the declarative cache's Redis read on the
       * loop), to finish it or hand it to the pool later. */
      if (ctx->deferred != 0) {
        perfc__deferred_handler_returned(ctx);
        return;
      }
      if (answered) {
        perfc__call_unary_complete(ctx, code);
        return;
      }
    }
    ctx->ops->watch_close(ctx);
    ctx->run_listed = 1;
    int rc = perfc_pool_submit(srv->pool, pool_job, ctx);
    if (rc != 0)
      perfc__call_finish_with(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                              "server busy: %s (worker queue bound reached)",
                              perfc_strerror(rc));
    return;
  }
  run_unary(ctx);
}

static void arrived(perfc_ctx *ctx) {
  perfc__method *m = ctx->method;
  if (m == NULL) {
    perfc__call_finish_with(ctx, PERFC_STATUS_UNIMPLEMENTED,
                            "unknown method %s", ctx->path ? ctx->path : "?");
    return;
  }
  perfc_server *srv = ctx->srv;
  if (srv->nics) {
    perfc_status_code c = perfc__ic_run_before(ctx);
    if (c != PERFC_STATUS_OK) {
      before_refused(ctx, c);
      return;
    }
  }
  dispatch(ctx, m, srv);
}

void perfc__ic_resumed(perfc_ctx *ctx) {
  perfc_status_code code = ctx->ic_code;
  ctx->deferred = 0;
  ctx->ic_deferred = 0;
  /* This thread (a loop, in some continuation) works for the call now:
   * its span is the current one while the chain and an inline handler
   * run, as it was when the hook deferred. */
  perfc_trace_current mine;
  int had = perfc_trace_current_get(&mine);
  perfc_trace_current_set(&ctx->defer_tc);
  if (perfc__call_cancel_seen(ctx)) {
    /* The transport answered the client already (a reset, the deadline,
     * the shutdown): the call only ends, and `after` hooks see why. */
    int late = expired(ctx);
    refuse(ctx,
           late ? PERFC_STATUS_DEADLINE_EXCEEDED : PERFC_STATUS_CANCELLED,
           "%s while an interceptor's decision was pending",
           late ? "deadline exceeded" : "the call was cancelled");
  } else if (code != PERFC_STATUS_OK) {
    refuse(ctx, code, NULL);
  } else {
    perfc_status_code c = perfc__ic_run_before_from(ctx, ctx->ic_entered);
    if (c == PERFC_STATUS_OK)
      dispatch(ctx, ctx->method, ctx->srv);
    else
      before_refused(ctx, c);
  }
  perfc_trace_current_set(had ? &mine : NULL);
}

const perfc__call_upcalls perfc__call_up = {
    .arrived = arrived,
    .cancelled = perfc__call_cancel_seen,
    .cancel = perfc__call_cancel,
    .loop_message = perfc__stream_loop_message,
    .loop_half_close = perfc__stream_loop_half_close,
    .loop_writable = perfc__stream_loop_writable,
    .loop_cancel = perfc__stream_loop_cancel,
};

/* ---- the call context API ------------------------------------------------- */

int64_t perfc_ctx_start_ns(const perfc_ctx *ctx) { return ctx->start_ns; }

int perfc_ctx_set_raw_response(perfc_ctx *ctx, const ProtobufCMessage *resp,
                               const uint8_t *data, size_t len) {
  if (ctx->method == NULL || ctx->method->desc->kind != PERFC_METHOD_UNARY ||
      resp != ctx->resp)
    return PERFC_ESTATE;
  ctx->raw_response = data;
  ctx->raw_response_len = len;
  return 0;
}

perfc_arena *perfc_ctx_arena(perfc_ctx *ctx) { return ctx->arena; }

void *perfc_ctx_alloc(perfc_ctx *ctx, size_t n) {
  return perfc_arena_alloc(ctx->arena, n);
}

const char *perfc_ctx_method(const perfc_ctx *ctx) { return ctx->path; }

const perfc_method_desc *perfc_ctx_method_desc(const perfc_ctx *ctx) {
  return ctx->method ? ctx->method->desc : NULL;
}

const char *perfc_ctx_peer(perfc_ctx *ctx) { return ctx->ops->peer(ctx); }

perfc_protocol perfc_ctx_protocol(const perfc_ctx *ctx) { return ctx->protocol; }

const char *perfc_protocol_name(perfc_protocol p) {
  return p == PERFC_PROTOCOL_HTTP1_JSON   ? "http1.1+json"
         : p == PERFC_PROTOCOL_HTTP2_JSON ? "h2+json"
         : p == PERFC_PROTOCOL_GRPC_WEB   ? "grpc-web"
                                          : "grpc";
}

int64_t perfc_ctx_remaining_ms(const perfc_ctx *ctx) {
  if (ctx->deadline_ns == INT64_MAX)
    return INT64_MAX;
  return perfc__deadline_left_ms(ctx->deadline_ns, perfc__now_ns());
}

int perfc_ctx_set_deadline_ms(perfc_ctx *ctx, int64_t ms) {
  if (ctx == NULL || ms < 0)
    return PERFC_EINVAL;
  int64_t now = perfc__now_ns();
  if (perfc__deadline_left_ms(ctx->deadline_ns, now) <= ms)
    return 0;
  /* INT64_MAX - 1: later than any real time, yet not "none". */
  ctx->deadline_ns = ms >= (INT64_MAX - 1 - now) / 1000000 ? INT64_MAX - 1
                                                         : now + ms * 1000000;
  ctx->deadline_capped = 1;
  /* A loop stream has no worker waiting with a timeout: its transport's
   * timer ends it at the new deadline. */
  if (ctx->stream != NULL && perfc__stream_is_loop(ctx->stream))
    ctx->ops->loop_deadline(ctx);
  return 1;
}

int perfc_ctx_cancelled(const perfc_ctx *ctx) {
  /* A streaming call learns of its close through its transport; a handler
   * that is between operations lets it look here. */
  if (ctx->stream != NULL && ctx->stream == perfc__stream_current())
    ctx->ops->stream_poll((perfc_ctx *)ctx);
  return perfc__call_cancel_seen(ctx);
}

size_t perfc_ctx_metadata_count(const perfc_ctx *ctx) {
  return ctx->ops->md_count(ctx);
}

int perfc_ctx_metadata_at(const perfc_ctx *ctx, size_t i, perfc_slice *key,
                          perfc_slice *value) {
  if (i >= ctx->ops->md_count(ctx))
    return PERFC_EINVAL;
  perfc_slice k, v;
  ctx->ops->md_at(ctx, i, &k, &v);
  if (key != NULL)
    *key = k;
  if (value != NULL)
    *value = v;
  return 0;
}

const char *perfc_ctx_metadata_get(perfc_ctx *ctx, const char *key,
                                   size_t *len) {
  size_t klen = strlen(key);
  size_t n = ctx->ops->md_count(ctx);
  for (size_t i = 0; i < n; i++) {
    perfc_slice k, v;
    ctx->ops->md_at(ctx, i, &k, &v);
    if (k.len == klen && memcmp(k.base, key, klen) == 0) {
      if (len != NULL)
        *len = v.len;
      return perfc_arena_strndup(ctx->arena, (const char *)v.base, v.len);
    }
  }
  return NULL;
}

/* Appends without checking the key: only for entries perfc itself adds. */
static int md_push(perfc_ctx *ctx, perfc__md_list *l, const char *key,
                   const char *value, size_t len) {
  if (l->count == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 4;
    perfc__md_entry *items = perfc_arena_alloc(ctx->arena, cap * sizeof *items);
    if (items == NULL)
      return PERFC_ENOMEM;
    if (l->count)
      memcpy(items, l->items, l->count * sizeof *items);
    l->items = items;
    l->cap = cap;
  }
  /* Copies in the arena outlive everything the transport does with them. */
  char *k = perfc_arena_strdup(ctx->arena, key);
  char *v = perfc_arena_strndup(ctx->arena, value, len);
  if (k == NULL || v == NULL)
    return PERFC_ENOMEM;
  l->items[l->count++] = (perfc__md_entry){.key = k, .value = v, .len = len};
  return 0;
}

static int md_add(perfc_ctx *ctx, perfc__md_list *l, const char *key,
                  const char *value, size_t len) {
  if (value != NULL && len == 0)
    len = strlen(value);
  int rc = perfc__check_metadata(key, value, len);
  if (rc != 0)
    return rc;
  return md_push(ctx, l, key, value, len);
}

int perfc_ctx_add_initial_metadata(perfc_ctx *ctx, const char *key,
                                   const char *value, size_t len) {
  if (ctx->initial_md_sent)
    return PERFC_ESTATE;
  return md_add(ctx, &ctx->initial_md, key, value, len);
}

int perfc_ctx_add_trailing_metadata(perfc_ctx *ctx, const char *key,
                                    const char *value, size_t len) {
  return md_add(ctx, &ctx->trailing_md, key, value, len);
}

int perfc_ctx_set_compression(perfc_ctx *ctx, const char *name) {
  perfc__compress algo;
  if (ctx == NULL || name == NULL || perfc__compress_parse(name, &algo) != 0)
    return PERFC_EINVAL;
  if (ctx->initial_md_sent) {
    /* The encoding went out with the headers; what is left per message is
     * on or off. */
    perfc__compress sent = ctx->comp_set ? ctx->comp_algo : ctx->srv->calgo;
    if (algo == PERFC__COMPRESS_NONE)
      ctx->comp_off = 1;
    else if (algo == sent)
      ctx->comp_off = 0;
    else
      return PERFC_ESTATE;
    return 0;
  }
  /* The transport sends the encoding with the headers (transport_internal.h). */
  ctx->comp_set = 1;
  ctx->comp_algo = algo;
  ctx->comp_off = algo == PERFC__COMPRESS_NONE;
  return 0;
}

int perfc_ctx_message_compressed(const perfc_ctx *ctx) {
  if (ctx == NULL || ctx->ops == NULL)
    return PERFC_EINVAL;
  return ctx->ops->message_compressed(ctx);
}

perfc_status_code perfc_ctx_error(perfc_ctx *ctx, perfc_status_code code,
                                  const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n >= 0) {
    char *msg = perfc_arena_alloc(ctx->arena, (size_t)n + 1);
    if (msg != NULL) {
      va_start(ap, fmt);
      vsnprintf(msg, (size_t)n + 1, fmt, ap);
      va_end(ap);
      ctx->message = msg;
    }
  }
  return code;
}

const char *perfc_ctx_error_message(const perfc_ctx *ctx) {
  return ctx != NULL ? ctx->message : NULL;
}

perfc_status_code perfc_ctx_fail(perfc_ctx *ctx, int err) {
  perfc_status_code code = perfc_status_from_error(err);
  if (code != PERFC_STATUS_OK)
    perfc_ctx_error(ctx, code, "%s", perfc_last_error());
  return code;
}
