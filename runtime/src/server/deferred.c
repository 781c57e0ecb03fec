/*
 * server/deferred.c — deferred unary calls (perfc/deferred.h): a handler
 * hands its call to a continuation and the call ends at
 * perfc_deferred_finish(), on whatever thread that runs.
 *
 * Room: runtime/src/server. Ends calls through call.c's unary completion,
 * so interceptors and the transport see an ordinary finish.
 *
 * Why handles are tokens and not pointers. A finish ends the call, and the
 * transport recycles its context (and arena) as soon as it is done with
 * it, possibly before the finishing function has returned. A second finish
 * through a pointer into that memory would end some later call that reuses
 * it. So a handle is a slot index and a generation: slots live in a
 * process-wide table of chunks that are never freed, each slot's word holds
 * (generation, the finish's status, a state), and every operation is a
 * compare-and-swap on that word. A stale handle finds another generation
 * and is refused without touching any call.
 *
 * States: RUNNING (deferred, the handler has not returned), WAITING (it
 * returned, the call waits for its finish), PENDING (finished while the
 * handler still ran: the handler's return ends the call). A finish in
 * WAITING, or the handler's return in PENDING, frees the slot (generation
 * + 1) and completes the call. Free slots form a Treiber stack whose head
 * carries a tag against ABA; a defer and a finish cost one CAS each on it.
 *
 * An interceptor's deferred decision (perfc_ic_defer, perfc/interceptor.h)
 * uses the same slots and states: RUNNING while its `before` hook runs,
 * WAITING once the hook returned PERFC_STATUS_DEFERRED, PENDING when
 * resumed inside the hook. What differs is the end: the call's chain goes
 * on (perfc__ic_resumed, on the call's loop) instead of the call ending.
 */
#include "perfc/deferred.h"
#include "perfc/interceptor.h"
#include "perfc/log.h"
#include "perfc/trace_context.h"
#include "core/error_internal.h"
#include "server/call_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

_Static_assert(sizeof(void *) == 8, "deferred handles pack 64 bits");

#define CHUNK_SLOTS 1024u
#define MAX_CHUNKS 4096u /* 4 Mi deferred calls at once */

enum { ST_FREE = 0, ST_RUNNING = 1, ST_WAITING = 2, ST_PENDING = 3 };
/* The "status" of a PENDING slot handed back to the server
 * (perfc_deferred_run_handler) instead of finished. */
#define CODE_RUN_HANDLER 0xffu

typedef struct dslot {
  /* generation << 32 | code << 8 | state */
  _Atomic uint64_t word;
  perfc_ctx *ctx;
  _Atomic uint32_t next; /* free stack: index + 1, 0 = end */
} dslot;

static dslot *_Atomic chunks[MAX_CHUNKS];
static _Atomic uint32_t nchunks;
static pthread_mutex_t grow_mu = PTHREAD_MUTEX_INITIALIZER;
/* tag << 32 | (index + 1) */
static _Atomic uint64_t free_head;

static dslot *slot_at(uint32_t idx) {
  dslot *c = atomic_load_explicit(&chunks[idx / CHUNK_SLOTS],
                                  memory_order_acquire);
  return &c[idx % CHUNK_SLOTS];
}

static void push_free(uint32_t idx) {
  dslot *s = slot_at(idx);
  uint64_t head = atomic_load_explicit(&free_head, memory_order_relaxed);
  uint64_t next;
  do {
    atomic_store_explicit(&s->next, (uint32_t)head, memory_order_relaxed);
    next = ((head >> 32) + 1) << 32 | (idx + 1);
  } while (!atomic_compare_exchange_weak_explicit(
      &free_head, &head, next, memory_order_release, memory_order_relaxed));
}

/* A free slot's index, or UINT32_MAX when the table is full or out of
 * memory. */
static uint32_t pop_free(void) {
  for (;;) {
    uint64_t head = atomic_load_explicit(&free_head, memory_order_acquire);
    uint32_t top = (uint32_t)head;
    if (top == 0) {
      /* Empty: one thread adds a chunk; the others retry the stack. */
      pthread_mutex_lock(&grow_mu);
      if ((uint32_t)atomic_load(&free_head) == 0) {
        uint32_t n = atomic_load(&nchunks);
        dslot *c = n < MAX_CHUNKS ? calloc(CHUNK_SLOTS, sizeof *c) : NULL;
        if (c == NULL) {
          pthread_mutex_unlock(&grow_mu);
          return UINT32_MAX;
        }
        atomic_store_explicit(&chunks[n], c, memory_order_release);
        atomic_store(&nchunks, n + 1);
        for (uint32_t i = CHUNK_SLOTS; i-- > 0;)
          push_free(n * CHUNK_SLOTS + i);
      }
      pthread_mutex_unlock(&grow_mu);
      continue;
    }
    uint32_t idx = top - 1;
    uint32_t after = atomic_load_explicit(&slot_at(idx)->next,
                                          memory_order_relaxed);
    uint64_t next = ((head >> 32) + 1) << 32 | after;
    if (atomic_compare_exchange_weak_explicit(&free_head, &head, next,
                                              memory_order_acquire,
                                              memory_order_relaxed))
      return idx;
  }
}

static perfc_deferred *handle_of(uint32_t idx, uint32_t gen) {
  return (perfc_deferred *)(uintptr_t)((uint64_t)gen << 32 | (idx + 1));
}

/* The slot a handle names (NULL for a handle that never was one), its
 * index and the handle's generation. */
static dslot *slot_of(const perfc_deferred *d, uint32_t *idx, uint32_t *gen) {
  uint64_t v = (uint64_t)(uintptr_t)d;
  uint32_t idx1 = (uint32_t)v;
  *idx = 0; /* set on every path: gcc -O3 cannot see the NULL return */
  *gen = 0;
  if (idx1 == 0 || (idx1 - 1) / CHUNK_SLOTS >= atomic_load(&nchunks))
    return NULL;
  *idx = idx1 - 1;
  *gen = (uint32_t)(v >> 32);
  return slot_at(idx1 - 1);
}

static uint64_t word(uint32_t gen, unsigned code, unsigned state) {
  return (uint64_t)gen << 32 | (uint64_t)code << 8 | state;
}

static void release(dslot *s, uint32_t idx, uint32_t gen) {
  s->ctx = NULL;
  atomic_store_explicit(&s->word, word(gen + 1, 0, ST_FREE),
                        memory_order_release);
  push_free(idx);
}

/* A deferred call ended (finished or handed to the pool): the shutdown
 * waiting in perfc__deferred_wait() may go on. `srv` was read before the
 * call ended; the server outlives this because shutdown waits for it. */
static void deferred_done(perfc_server *srv) {
  if (atomic_fetch_sub_explicit(&srv->deferred_live, 1,
                                memory_order_acq_rel) == 1) {
    pthread_mutex_lock(&srv->deferred_mu);
    pthread_cond_broadcast(&srv->deferred_cv);
    pthread_mutex_unlock(&srv->deferred_mu);
  }
}

void perfc__deferred_wait(perfc_server *srv) {
  pthread_mutex_lock(&srv->deferred_mu);
  while (atomic_load_explicit(&srv->deferred_live, memory_order_acquire) > 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 5;
    if (pthread_cond_timedwait(&srv->deferred_cv, &srv->deferred_mu, &ts) ==
        ETIMEDOUT)
      perfc_log(PERFC_LOG_WARN,
                "server: still waiting for %u deferred call(s) to be finished",
                atomic_load(&srv->deferred_live));
  }
  pthread_mutex_unlock(&srv->deferred_mu);
}

/* The call's end as its client saw it: a call cancelled or past its
 * deadline while deferred was already answered by the transport, so the
 * interceptors are told that, not what the continuation said later. */
static void complete(perfc_ctx *ctx, perfc_status_code code) {
  if (ctx->ic_deferred) {
    /* An interceptor's decision: the chain goes on, on the call's loop. */
    ctx->ic_code = code;
    if (ctx->ops->post != NULL && !ctx->ops->loop_here(ctx))
      ctx->ops->post(ctx, perfc__ic_resumed);
    else
      perfc__ic_resumed(ctx);
    return;
  }
  if (perfc__call_cancel_seen(ctx)) {
    /* Past its deadline the transport answered DEADLINE_EXCEEDED (and
     * also flagged the call cancelled); otherwise the client went away or
     * the shutdown grace ended. */
    int late = ctx->deadline_ns != INT64_MAX &&
               perfc__deadline_left_ms(ctx->deadline_ns, perfc__now_ns()) == 0;
    code = late ? PERFC_STATUS_DEADLINE_EXCEEDED : PERFC_STATUS_CANCELLED;
    ctx->message = late ? "deadline exceeded while the call was deferred"
                        : "the call was cancelled while deferred";
  }
  perfc__call_unary_complete(ctx, code);
}

perfc_deferred *perfc_call_defer(perfc_ctx *ctx) {
  if (ctx == NULL || !ctx->in_handler || ctx->deferred != 0 ||
      ctx->method == NULL || ctx->method->desc->kind != PERFC_METHOD_UNARY) {
    perfc__fail(PERFC_ESTATE, "perfc_call_defer: %s",
                ctx != NULL && ctx->deferred != 0
                    ? "the call is deferred already"
                    : "not called from a running unary handler");
    return NULL;
  }
  uint32_t idx = pop_free();
  if (idx == UINT32_MAX) {
    perfc__fail(PERFC_ENOMEM, "perfc_call_defer: no handle free");
    return NULL;
  }
  dslot *s = slot_at(idx);
  uint32_t gen = (uint32_t)(atomic_load_explicit(&s->word,
                                                 memory_order_relaxed) >> 32);
  s->ctx = ctx;
  perfc_trace_current_get(&ctx->defer_tc);
  atomic_store_explicit(&s->word, word(gen, 0, ST_RUNNING),
                        memory_order_release);
  perfc_deferred *d = handle_of(idx, gen);
  ctx->deferred = (uint64_t)(uintptr_t)d;
  atomic_fetch_add_explicit(&ctx->srv->deferred_live, 1, memory_order_relaxed);
  /* The C core learns of a client's cancel only through a posted close;
   * a call that may wait long asks for it, as a pool call does. */
  if (!ctx->run_listed) {
    ctx->ops->watch_close(ctx);
    ctx->close_watched = 1;
  }
  return d;
}

/* Whether a streaming call can wait for a decision. On a transport with
 * loops (h2: ops->post) the chain's resume runs on the call's loop and a
 * stream's messages wait meanwhile: a worker's stream in the transport's
 * queue, a server stream's single request with the call, a loop-callback
 * stream's messages held by the transport (ic_hold_msgs) until its
 * on_start ran. The C core has no loop to resume on: its streams decide
 * blocking. */
static int stream_can_defer(const perfc_ctx *ctx) {
  return ctx->ops->post != NULL;
}

perfc_ic_pending *perfc_ic_defer(perfc_ctx *ctx) {
  /* In a `before` hook: interceptors entered, no handler yet (the request
   * is decoded after the chain), not deferred. */
  int stream_refused = ctx != NULL && ctx->method != NULL &&
                       ctx->method->desc->kind != PERFC_METHOD_UNARY &&
                       !stream_can_defer(ctx);
  if (ctx == NULL || ctx->ic_entered == 0 || ctx->in_handler ||
      ctx->deferred != 0 || ctx->resp != NULL || ctx->method == NULL ||
      stream_refused) {
    perfc__fail(PERFC_ESTATE, "perfc_ic_defer: %s",
                ctx != NULL && ctx->deferred != 0
                    ? "the call is deferred already"
                : stream_refused
                    ? "a streaming call on the C core transport (streams "
                      "defer on h2 only)"
                    : "not called from a `before` hook");
    return NULL;
  }
  uint32_t idx = pop_free();
  if (idx == UINT32_MAX) {
    perfc__fail(PERFC_ENOMEM, "perfc_ic_defer: no handle free");
    return NULL;
  }
  dslot *s = slot_at(idx);
  uint32_t gen = (uint32_t)(atomic_load_explicit(&s->word,
                                                 memory_order_relaxed) >> 32);
  s->ctx = ctx;
  perfc_trace_current_get(&ctx->defer_tc);
  ctx->ic_deferred = 1;
  perfc_method_kind k = ctx->method->desc->kind;
  if (ctx->method->loop &&
      (k == PERFC_METHOD_CLIENT_STREAM || k == PERFC_METHOD_BIDI_STREAM))
    ctx->ic_hold_msgs = 1;
  atomic_store_explicit(&s->word, word(gen, 0, ST_RUNNING),
                        memory_order_release);
  perfc_deferred *d = handle_of(idx, gen);
  ctx->deferred = (uint64_t)(uintptr_t)d;
  atomic_fetch_add_explicit(&ctx->srv->deferred_live, 1, memory_order_relaxed);
  /* The C core learns of a client's cancel only through a posted close. */
  if (!ctx->run_listed && !ctx->close_watched) {
    ctx->ops->watch_close(ctx);
    ctx->close_watched = 1;
  }
  return (perfc_ic_pending *)d;
}

void perfc__deferred_handler_returned(perfc_ctx *ctx) {
  uint32_t idx, gen;
  dslot *s = slot_of((perfc_deferred *)(uintptr_t)ctx->deferred, &idx, &gen);
  uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
  /* The handler's thread no longer runs this call: a loop's current span
   * must not stay the deferred call's. */
  perfc_trace_current_set(NULL);
  for (;;) {
    if ((w & 0xff) == ST_RUNNING) {
      if (atomic_compare_exchange_weak_explicit(
              &s->word, &w, word(gen, 0, ST_WAITING), memory_order_acq_rel,
              memory_order_acquire))
        return;
      continue;
    }
    /* PENDING: the finish came while the handler ran; nobody else can
     * touch the slot now. */
    unsigned code = (unsigned)((w >> 8) & 0xff);
    perfc_server *srv = ctx->srv;
    release(s, idx, gen);
    if (code == CODE_RUN_HANDLER)
      perfc__call_to_pool(ctx);
    else
      complete(ctx, (perfc_status_code)code);
    deferred_done(srv);
    return;
  }
}

static int stale(void) {
  return perfc__fail(PERFC_ESTATE,
                     "deferred call: finished already (stale handle)");
}

perfc_ctx *perfc_deferred_ctx(perfc_deferred *d) {
  uint32_t idx, gen;
  dslot *s = slot_of(d, &idx, &gen);
  if (s == NULL)
    return NULL;
  uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
  if ((uint32_t)(w >> 32) != gen || (w & 0xff) == ST_FREE)
    return NULL;
  return s->ctx;
}

int perfc_deferred_cancelled(perfc_deferred *d) {
  perfc_ctx *ctx = perfc_deferred_ctx(d);
  if (ctx == NULL)
    return stale();
  return perfc__call_cancel_seen(ctx) ? 1 : 0;
}

/* A finish (`code` a status) or a hand-back (CODE_RUN_HANDLER). */
static int end(perfc_deferred *d, unsigned code) {
  uint32_t idx, gen;
  dslot *s = slot_of(d, &idx, &gen);
  if (s == NULL)
    return stale();
  uint64_t w = atomic_load_explicit(&s->word, memory_order_acquire);
  for (;;) {
    unsigned st = (unsigned)(w & 0xff);
    if ((uint32_t)(w >> 32) != gen || st == ST_FREE || st == ST_PENDING)
      return stale();
    if (st == ST_RUNNING) {
      if (atomic_compare_exchange_weak_explicit(
              &s->word, &w, word(gen, code, ST_PENDING),
              memory_order_acq_rel, memory_order_acquire))
        return 0;
      continue;
    }
    /* WAITING: this finish ends the call. The slot is freed first: the
     * call's context may be recycled before complete() returns. */
    if (atomic_compare_exchange_weak_explicit(
            &s->word, &w, word(gen, code, ST_PENDING),
            memory_order_acq_rel, memory_order_acquire)) {
      perfc_ctx *ctx = s->ctx;
      perfc_server *srv = ctx->srv;
      release(s, idx, gen);
      if (code == CODE_RUN_HANDLER)
        perfc__call_to_pool(ctx);
      else
        complete(ctx, (perfc_status_code)code);
      deferred_done(srv);
      return 0;
    }
  }
}

perfc_ctx *perfc_ic_pending_ctx(perfc_ic_pending *p) {
  return perfc_deferred_ctx((perfc_deferred *)p);
}

int perfc_ic_pending_cancelled(perfc_ic_pending *p) {
  return perfc_deferred_cancelled((perfc_deferred *)p);
}

int perfc_ic_resume(perfc_ic_pending *p, perfc_status_code code) {
  if ((unsigned)code >= PERFC_STATUS_COUNT)
    code = PERFC_STATUS_UNKNOWN;
  return end((perfc_deferred *)p, (unsigned)code);
}

int perfc_deferred_finish(perfc_deferred *d, perfc_status_code code) {
  if ((unsigned)code >= PERFC_STATUS_COUNT)
    code = PERFC_STATUS_UNKNOWN;
  return end(d, (unsigned)code);
}

int perfc_deferred_run_handler(perfc_deferred *d) {
  perfc_ctx *ctx = perfc_deferred_ctx(d);
  if (ctx == NULL)
    return stale();
  if (ctx->ic_deferred)
    return perfc__fail(PERFC_ESTATE, "perfc_deferred_run_handler: %s: an "
                       "interceptor's pending decision, not a deferred call",
                       ctx->path);
  if (ctx->srv->pool == NULL)
    return perfc__fail(PERFC_ESTATE,
                       "perfc_deferred_run_handler: %s: the server has no "
                       "worker pool (no POOL method)",
                       ctx->path);
  return end(d, CODE_RUN_HANDLER);
}
