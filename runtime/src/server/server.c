/*
 * server.c — the server core: completion queues, pollers, pre-posted
 * requests, call contexts, unary dispatch, graceful shutdown.
 *
 * Room: runtime/src/server. Owns every grpc_server/grpc_call it creates; the only
 * other modules it calls are arena, pool, log and grpc_util.
 *
 * The request flow (docs/design.md draws it):
 *   request matched on queue N -> poller N runs ctx->request_tag
 *   -> re-arm a fresh request for the same method on the same queue
 *   -> inline handler, or submit to the worker pool
 *   -> unpack request into the call arena, run the handler, pack response
 *   -> one batch: SEND_INITIAL_METADATA + SEND_MESSAGE + SEND_STATUS +
 *      RECV_CLOSE_ON_SERVER
 *   -> its completion (always on poller N) drops the last reference and the
 *      context goes back to poller N's free list.
 * Because every completion of a unary call arrives on the queue the call
 * was requested on, its context is released on its own poller thread, so
 * the free lists need no lock.
 *
 * Streaming calls differ (docs/design.md, "Streaming"): their handler is a
 * blocking function on a pool worker, so each streaming context owns a
 * private completion queue that the call is bound to, and the worker waits
 * on that queue itself. An operation that completes at once (a message
 * already received, a write the socket took) costs no thread switch, where
 * a hand-off through the poller cost two per operation. Such a context is
 * released on the worker and handed back to its poller through a lock-free
 * return list.
 */
#include "perfc/interceptor.h"
#include "perfc/log.h"
#include "perfc/pool.h"
#include "perfc/server.h"
#include "perfc/stream.h"
#include "server/server_internal.h"

#include "transport/core/compression_internal.h"
#include "core/pb_wire_internal.h"
#include "transport/core/tls_internal.h"

#include <dlfcn.h>
#include <errno.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Contexts kept per poller for reuse; beyond this they are freed, so a burst
 * does not pin its peak memory forever. */
#define CTX_CACHE_MAX 1024

/* The core's message flags (grpc_call_test_only_get_message_flags): the
 * compressed flag of the gRPC frame, and "was compressed" when the core's
 * own decompression inflated it (off in perfc: see perfc_server_new). */
#define PERFC_WRITE_INTERNAL_COMPRESS 0x80000000u
#define PERFC_WRITE_INTERNAL_WAS_COMPRESSED 0x40000000u

/* Requests each method starts with per queue (see rearm()). */
#define REQUESTS_START 2u

typedef struct poller poller;
typedef struct method_entry method_entry;

/* Response metadata built by the handler; entries point into the arena. */
typedef struct md_list {
  grpc_metadata *items;
  size_t count, cap;
} md_list;

struct perfc_ctx {
  perfc_tag request_tag; /* fires when the core matched a call to us */
  perfc_tag batch_tag;   /* fires when the final batch completed */
  perfc_tag close_tag;   /* pool calls: fires when the client closed */
  atomic_int refs;
  poller *poller;
  method_entry *method; /* NULL: the generic catch-all for unknown methods */
  perfc_arena *arena;
  perfc_ctx *next_free;
  /* Streaming methods only: the private queue the call is bound to, created
   * on first use and kept while the context is recycled. */
  grpc_completion_queue *call_cq;

  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array request_md;
  grpc_call_details details; /* generic requests only */
  grpc_byte_buffer *payload;
  grpc_byte_buffer *response;
  /* A unary response already encoded (perfc_ctx_set_raw_response); sent
   * instead of packing resp. Points into the arena. */
  const uint8_t *raw_response;
  size_t raw_response_len;
  const char *path;
  const char *peer;

  perfc_status_code code;
  const char *message;
  grpc_slice details_slice;
  int has_details;
  int counted;   /* in its poller's running count for method (rearm()) */
  int cancelled; /* written by the core for RECV_CLOSE_ON_SERVER */
  int close_posted; /* RECV_CLOSE_ON_SERVER already in flight */
  /* Set on the poller once the close completed with cancelled != 0, read by
   * the handler's thread: the core's plain int write is published by it. */
  atomic_int cancelled_flag;
  int initial_md_sent;
  md_list initial_md, trailing_md;
  /* perfc_ctx_set_compression(): the algorithm chosen for this call's
   * responses (when comp_set), the slot of its metadata entry in initial_md
   * plus one, and whether later messages go out uncompressed. */
  int comp_set;
  grpc_compression_algorithm comp_algo;
  size_t comp_md_slot;
  int comp_off;
  perfc_stream *stream; /* streaming methods only, in the arena */
  /* Unary: the request and response once decoded / allocated (in the
   * arena), so a call tried on the poller (try_inline) and then handed to
   * the pool is decoded once. */
  ProtobufCMessage *req, *resp;
  int64_t start_ns;
  /* perfc_ctx_set_deadline_ms() lowered `deadline` below the client's: when
   * it passes, the call ends with DEADLINE_EXCEEDED (the client, whose own
   * deadline is later, would not fail it). */
  int deadline_capped;
  /* A request message perfc refused (read_message()): the status the call
   * ends with whatever its handler returns (streams keep running until
   * the handler returns; its receives fail from then on). */
  perfc_status_code wire_code;
  const char *wire_message;
  /* Handed to a worker (pool unary calls and streams): when the shutdown
   * grace ends (perfc_server.grace_over) the call sees itself cancelled
   * and finishes with CANCELLED. */
  int run_listed;
  unsigned ic_entered; /* interceptors whose `before` ran */
  void *ic_call[PERFC_MAX_INTERCEPTORS];
};

/* A streaming handler's reader and writer. One receive and one send may be
 * outstanding at a time, each with its own tag, as the core allows; their
 * completions arrive on ctx->call_cq and are run by the handler's own
 * thread while it waits (call_cq_run), so nothing here needs a lock. */
struct perfc_stream {
  perfc_ctx *ctx;
  perfc_tag recv_tag, send_tag;
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
  /* The core's flags of the message in recv_bb and of the last one given
   * to the handler (perfc_ctx_message_compressed): the call's own flags
   * already describe the message read ahead. */
  uint32_t recv_flags, msg_flags;
  int msg_flags_set;
  int ended;               /* the client half-closed */
  int wire_rc; /* perfc_stream_recv()'s answer once a message was refused */
  /* Received messages live here, reset on every receive: a message is valid
   * until the next perfc_stream_recv(), so a long stream does not grow the
   * call arena without bound. */
  perfc_arena *msg_arena;
  /* Reply batching (perfc_server_opts.stream_flush_every_send says why).
   * `held` is the handler's latest reply, kept back because the next
   * request was already here and the handler is fast; it is started, with
   * the core's buffer hint, when the handler sends again, or without it
   * (which writes everything buffered) at the stream's next wait. */
  grpc_byte_buffer *held;
  uint32_t held_flags;
  unsigned buffered;     /* replies in the core's buffer, not yet written */
  unsigned long held_total; /* for perfc__stream_replies_held() */
  int64_t got_ns;        /* when the handler was given its last message */
  int64_t busy_ns;       /* its time from one message to asking for the next */
};

/* A reply is held only while the handler turns a message around in less
 * than perfc__stream_hold_ns (the reply waits for the handler's next
 * message at most), and no more than STREAM_BATCH_MAX replies wait
 * unwritten. */
int64_t perfc__stream_hold_ns = 20000;
#define STREAM_BATCH_MAX 32

struct method_entry {
  const perfc_method_desc *desc;
  const perfc_service_desc *service;
  const void *handlers;
  void *user_data;
  void *registered; /* grpc_server_register_method handle */
  perfc_executor executor;
  int has_handler;
  void *ic_state[PERFC_MAX_INTERCEPTORS];
};

struct poller {
  perfc_server *srv;
  grpc_completion_queue *cq;
  pthread_t thread;
  unsigned index;
  perfc_ctx *free_list; /* touched only by this poller's thread */
  unsigned free_count;
  /* Contexts released on other threads (streaming calls end on their
   * worker): pushed lock-free, taken all at once when free_list is empty. */
  _Atomic(perfc_ctx *) returned;
  /* Per method (index into srv->methods), see rearm(): requests posted
   * whose match this poller has not yet taken, and how many it keeps
   * posted; calls it matched minus those released on its own thread
   * (these three written by the poller only; atomic so tests and workers
   * may read them); and calls it matched that were released on another
   * thread (a worker), added there. Calls running = running - ended_elsewhere:
   * an inline call, matched and released here, touches no shared counter. */
  _Atomic unsigned *posted, *depth, *running, *ended_elsewhere;
};

enum { SRV_NEW = 0, SRV_STARTED, SRV_STOPPING, SRV_STOPPED };

typedef struct service_entry {
  const perfc_service_desc *desc;
} service_entry;

typedef struct start_hook {
  perfc_server_start_fn fn;
  void *user_data;
} start_hook;

typedef struct shutdown_hook {
  perfc_server_shutdown_fn fn; /* may be NULL: only free_user_data */
  void *user_data;
  void (*free_user_data)(void *);
} shutdown_hook;

struct perfc_server {
  grpc_server *server;
  perfc_server_opts opts;
  unsigned npollers;
  poller *pollers;
  method_entry *methods;
  size_t nmethods;
  service_entry *services;
  size_t nservices;
  start_hook *start_hooks;
  size_t nstart_hooks;
  shutdown_hook *shutdown_hooks;
  size_t nshutdown_hooks;
  perfc_pool *pool;
  int nlisteners;
  int ports[16]; /* the first 16 bound ports, for the connections gauge */
  perfc_pool_observer_fn pool_observer;
  void *pool_observer_ud;
  perfc_server_interceptor ics[PERFC_MAX_INTERCEPTORS];
  unsigned nics;
  atomic_int state;

  pthread_mutex_t mu; /* guards shutdown_done and serialises shutdown() */
  pthread_cond_t cv;
  int shutdown_done;
  int go; /* set once the server started: pollers may post requests */
  perfc_tag shutdown_tag;
  int wake_fd[2]; /* wakes perfc_server_run() when shutdown() is called */
  grpc_compression_algorithm calgo; /* opts.compression, parsed */
  size_t recv_max; /* opts.max_recv_message_bytes as a bound */
  atomic_int grace_over; /* the shutdown grace ended (cancel_running) */
};

static void post_request(poller *p, method_entry *m);

/* grpc_call_test_only_get_message_flags() (see perfc_ctx_message_compressed
 * for why it is looked up at run time). */
typedef uint32_t (*msg_flags_fn)(grpc_call *);
static msg_flags_fn msg_flags;
static pthread_once_t msg_flags_once = PTHREAD_ONCE_INIT;
static void msg_flags_lookup(void) {
  msg_flags = (msg_flags_fn)(uintptr_t)dlsym(
      RTLD_DEFAULT, "_Z37grpc_call_test_only_get_message_flagsP9grpc_call");
}


static int server_accepting(perfc_server *srv);
static void ctx_release(perfc_ctx *ctx);

/* ---- options -------------------------------------------------------------- */

void perfc_server_opts_init(perfc_server_opts *o) {
  memset(o, 0, sizeof *o);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  o->threads = cores > 0 ? (unsigned)cores : 1;
  o->requests_per_method = PERFC_DEFAULT_REQUESTS_PER_METHOD;
  o->default_executor = PERFC_EXEC_INLINE;
  o->keepalive_time_ms = PERFC_DEFAULT_SERVER_KEEPALIVE_TIME_MS;
  o->keepalive_timeout_ms = PERFC_DEFAULT_KEEPALIVE_TIMEOUT_MS;
  o->min_ping_interval_ms = PERFC_DEFAULT_MIN_PING_INTERVAL_MS;
  o->max_concurrent_streams = PERFC_DEFAULT_MAX_CONCURRENT_STREAMS;
  o->max_recv_message_bytes = PERFC_DEFAULT_MAX_RECV_MESSAGE_BYTES;
  o->max_send_message_bytes = PERFC_DEFAULT_MAX_SEND_MESSAGE_BYTES;
  o->shutdown_grace_ms = PERFC_DEFAULT_SHUTDOWN_GRACE_MS;
  o->memory_budget_bytes = PERFC_DEFAULT_MEMORY_BUDGET_BYTES;
  o->max_metadata_bytes = PERFC_DEFAULT_MAX_METADATA_BYTES;
}

/* Zero means default for every field, so `= {0}` plus a few designated
 * initialisers works as well as perfc_server_opts_init(). */
static void opts_resolve(perfc_server_opts *o, const perfc_server_opts *in) {
  perfc_server_opts_init(o);
  if (in == NULL)
    return;
#define TAKE(f)                                                                \
  if (in->f)                                                                   \
  o->f = in->f
  TAKE(threads);
  TAKE(requests_per_method);
  TAKE(default_executor);
  TAKE(pool_threads);
  TAKE(pool_queue);
  TAKE(keepalive_time_ms);
  TAKE(keepalive_timeout_ms);
  TAKE(keepalive_permit_without_calls);
  TAKE(min_ping_interval_ms);
  TAKE(max_concurrent_streams);
  TAKE(max_recv_message_bytes);
  TAKE(max_send_message_bytes);
  TAKE(max_connection_idle_ms);
  TAKE(max_connection_age_ms);
  TAKE(max_connection_age_grace_ms);
  TAKE(shutdown_grace_ms);
  TAKE(memory_budget_bytes);
  TAKE(max_metadata_bytes);
  TAKE(compression);
  TAKE(poller_wakeup_preemption);
  TAKE(worker_wakeup_preemption);
  TAKE(stream_flush_every_send);
  TAKE(tcp_tx_zerocopy);
  TAKE(channelz);
#undef TAKE
}

static int clamp_int(int64_t v) {
  return v > INT32_MAX ? INT32_MAX : (int)v;
}

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

static perfc_ctx *ctx_get(poller *p) {
  if (p->free_list == NULL &&
      atomic_load_explicit(&p->returned, memory_order_relaxed) != NULL) {
    /* Taking the whole list at once is immune to ABA: no node is ever
     * popped alone while others push. */
    perfc_ctx *r =
        atomic_exchange_explicit(&p->returned, NULL, memory_order_acquire);
    while (r != NULL) {
      perfc_ctx *next = r->next_free;
      r->next_free = p->free_list;
      p->free_list = r;
      p->free_count++;
      r = next;
    }
  }
  perfc_ctx *ctx = p->free_list;
  if (ctx != NULL) {
    p->free_list = ctx->next_free;
    p->free_count--;
    perfc_arena_reset(ctx->arena);
  } else {
    ctx = malloc(sizeof *ctx);
    if (ctx == NULL)
      return NULL;
    if (perfc_arena_new(&ctx->arena, 0) != 0) {
      free(ctx);
      return NULL;
    }
    ctx->call_cq = NULL;
  }
  perfc_arena *arena = ctx->arena;
  grpc_completion_queue *call_cq = ctx->call_cq;
  memset(ctx, 0, sizeof *ctx);
  ctx->arena = arena;
  ctx->call_cq = call_cq;
  ctx->poller = p;
  atomic_init(&ctx->refs, 1);
  atomic_init(&ctx->cancelled_flag, 0);
  grpc_metadata_array_init(&ctx->request_md);
  return ctx;
}

/* Frees a context for good. Its queue, if any, is idle: every operation
 * of its last call completed before the context was released. */
static void ctx_destroy(perfc_ctx *ctx) {
  if (ctx->call_cq != NULL) {
    grpc_completion_queue_shutdown(ctx->call_cq);
    while (grpc_completion_queue_next(ctx->call_cq,
                                      gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL)
               .type != GRPC_QUEUE_SHUTDOWN)
      ;
    grpc_completion_queue_destroy(ctx->call_cq);
  }
  perfc_arena_free(ctx->arena);
  free(ctx);
}

static void ctx_put(perfc_ctx *ctx) {
  poller *p = ctx->poller;
  if (p == tls_poller) {
    if (p->free_count < CTX_CACHE_MAX) {
      ctx->next_free = p->free_list;
      p->free_list = ctx;
      p->free_count++;
    } else {
      ctx_destroy(ctx);
    }
    return;
  }
  /* Another thread (a streaming handler's worker). The poller outlives
   * every worker: the pool is joined before the pollers stop. */
  perfc_ctx *head = atomic_load_explicit(&p->returned, memory_order_relaxed);
  do
    ctx->next_free = head;
  while (!atomic_compare_exchange_weak_explicit(
      &p->returned, &head, ctx, memory_order_release, memory_order_relaxed));
}

/* At the end of the shutdown grace: tells every call a worker still runs
 * that it is cancelled (perfc_ctx_cancelled() and stream operations see
 * grace_over), so that its handler returns and finish() ends it with
 * CANCELLED through the normal status write. grpc_server_cancel_all_calls()
 * alone closes the connections, and clients then see UNAVAILABLE
 * ("Cancelling all calls"), which gRPC clients treat as safe to retry
 * although the handler ran. Cancelling the grpc_call with a status is no
 * better: the connection already sent its GOAWAY, and the core closes it
 * the moment its last stream is cancelled, before the status is written
 * (measured: the client saw the socket close). Returns how many calls are
 * queued for or running on workers. The calls themselves are not listed
 * anywhere: a flag per call (run_listed) and the pool's own counters are
 * enough, so handing a call to a worker takes no server-wide lock. */
static size_t cancel_running(perfc_server *srv) {
  atomic_store_explicit(&srv->grace_over, 1, memory_order_release);
  if (srv->pool == NULL)
    return 0;
  perfc_pool_stats st;
  perfc_pool_stats_get(srv->pool, &st);
  return (size_t)st.queued + st.busy;
}

/* Drops everything the call held from the core and recycles the context. */
static void ctx_release(perfc_ctx *ctx) {
  if (atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) != 1)
    return;
  ctx->run_listed = 0;
  if (ctx->counted) {
    poller *p = ctx->poller;
    size_t i = (size_t)(ctx->method - p->srv->methods);
    if (p == tls_poller)
      counter_add(&p->running[i], -1);
    else
      atomic_fetch_add_explicit(&p->ended_elsewhere[i], 1,
                                memory_order_relaxed);
  }
  PERFC_CORE_MEMORY_BEGIN();
  grpc_metadata_array_destroy(&ctx->request_md);
  if (ctx->method == NULL)
    grpc_call_details_destroy(&ctx->details);
  if (ctx->payload != NULL)
    grpc_byte_buffer_destroy(ctx->payload);
  PERFC_CORE_MEMORY_END();
  if (ctx->response != NULL)
    grpc_byte_buffer_destroy(ctx->response);
  if (ctx->has_details)
    grpc_slice_unref(ctx->details_slice);
  if (ctx->stream != NULL)
    perfc_arena_free(ctx->stream->msg_arena);
  if (ctx->call != NULL)
    grpc_call_unref(ctx->call);
  ctx_put(ctx);
}

static void on_final_batch(perfc_tag *t, int ok) {
  (void)ok; /* a failed final batch means the client went away: same cleanup */
  perfc_ctx *ctx = PERFC_CONTAINER_OF(t, perfc_ctx, batch_tag);
  ctx_release(ctx);
}

/* Sends whatever the handler produced and the status, and waits for the
 * close in the same batch, so a unary call costs one completion. Consumes
 * the caller's reference. */
/* Runs the interceptors' `after` hooks, innermost first. */
static void ic_after(perfc_ctx *ctx) {
  method_entry *m = ctx->method;
  perfc_server *srv = ctx->poller->srv;
  if (ctx->code == PERFC_STATUS_OK && ctx->response != NULL)
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

/* Runs the `before` hooks in order; stops at the first refusal. */
static perfc_status_code ic_before(perfc_ctx *ctx) {
  method_entry *m = ctx->method;
  perfc_server *srv = ctx->poller->srv;
  for (unsigned i = 0; i < srv->nics; i++) {
    ctx->ic_entered = i + 1;
    if (srv->ics[i].before) {
      perfc_status_code c = srv->ics[i].before(srv->ics[i].self, m->ic_state[i],
                                               ctx, &ctx->ic_call[i]);
      if (c != PERFC_STATUS_OK)
        return c;
    }
  }
  return PERFC_STATUS_OK;
}

static void ic_message(perfc_ctx *ctx, int sent) {
  perfc_server *srv = ctx->poller->srv;
  for (unsigned i = 0; i < ctx->ic_entered; i++)
    if (srv->ics[i].on_message)
      srv->ics[i].on_message(srv->ics[i].self, ctx->method->ic_state[i], ctx,
                             ctx->ic_call[i], sent);
}

/* Fills `op` with SEND_INITIAL_METADATA the first time a call sends
 * anything, with whatever response metadata the handler added by then.
 * Returns the number of ops filled (0 or 1). */
static size_t add_initial_md(perfc_ctx *ctx, grpc_op *op) {
  if (ctx->initial_md_sent)
    return 0;
  op->op = GRPC_OP_SEND_INITIAL_METADATA;
  op->data.send_initial_metadata.count = ctx->initial_md.count;
  op->data.send_initial_metadata.metadata = ctx->initial_md.items;
  ctx->initial_md_sent = 1;
  return 1;
}

static void finish(perfc_ctx *ctx) {
  if (ctx->run_listed &&
      atomic_load_explicit(&ctx->poller->srv->grace_over, memory_order_acquire)) {
    ctx->code = PERFC_STATUS_CANCELLED;
    ctx->message = "server shutting down: its grace period ended before this "
                   "call finished";
  }
  if (ctx->ic_entered)
    ic_after(ctx);
  grpc_op ops[4];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  n += add_initial_md(ctx, &ops[n]);
  if (ctx->code == PERFC_STATUS_OK && ctx->response != NULL) {
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = ctx->response;
    ops[n].flags = ctx->comp_off ? GRPC_WRITE_NO_COMPRESS : 0;
    n++;
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = (grpc_status_code)ctx->code;
  ops[n].data.send_status_from_server.trailing_metadata_count =
      ctx->trailing_md.count;
  ops[n].data.send_status_from_server.trailing_metadata = ctx->trailing_md.items;
  if (ctx->message != NULL) {
    /* The core copies the status message into its trailers; the arena copy
     * only needs to live until start_batch returns, but the slice is kept
     * until the call ends to stay independent of that detail. */
    ctx->details_slice = grpc_slice_from_static_string(ctx->message);
    ctx->has_details = 1;
    ops[n].data.send_status_from_server.status_details = &ctx->details_slice;
  }
  n++;
  if (!ctx->close_posted) {
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n].data.recv_close_on_server.cancelled = &ctx->cancelled;
    n++;
  }
  ctx->batch_tag.run = on_final_batch;
  /* Nothing may touch ctx between the hand-off and start_batch: the batch
   * can complete, and the poller recycle ctx, before start_batch returns. */
  grpc_call *call = ctx->call;
  PERFC_HANDOFF_RELEASE(&ctx->batch_tag);
  grpc_call_error err =
      grpc_call_start_batch(call, ops, n, &ctx->batch_tag, NULL);
  if (err != GRPC_CALL_OK) {
    perfc_log(PERFC_LOG_ERROR, "server: final batch for %s refused: %s",
              ctx->path ? ctx->path : "?", grpc_call_error_to_string(err));
    ctx_release(ctx);
  }
}

static void finish_with(perfc_ctx *ctx, perfc_status_code code,
                        const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The status message of a call that perfc ends itself, in the arena. */
static void set_message(perfc_ctx *ctx, const char *fmt, va_list ap) {
  char buf[512];
  vsnprintf(buf, sizeof buf, fmt, ap);
  ctx->message = perfc_arena_strdup(ctx->arena, buf);
}

static void finish_with(perfc_ctx *ctx, perfc_status_code code,
                        const char *fmt, ...) {
  ctx->code = code;
  va_list ap;
  va_start(ap, fmt);
  set_message(ctx, fmt, ap);
  va_end(ap);
  finish(ctx);
}

/* Reads a request message the core handed over into `a`, after the checks
 * the core skips with its per-message decompression off: a message must
 * not carry the compressed flag without an encoding perfc can inflate, and
 * an inflated message must stay within max_recv_message_bytes. `flags` are
 * the core's flags of this message (valid when `flags_known`: the lookup of
 * grpc_call_test_only_get_message_flags succeeded). Returns OK, or the
 * status to end the call with, its message in ctx->wire_message. */
static perfc_status_code read_message(perfc_ctx *ctx, grpc_byte_buffer *bb,
                                      uint32_t flags, int flags_known,
                                      perfc_arena *a, const uint8_t **data,
                                      size_t *len) {
  const char *path = ctx->path;
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
    int rc = perfc__byte_buffer_flatten(bb, ctx->poller->srv->recv_max, a,
                                        data, len);
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
          ctx->poller->srv->recv_max);
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

/* The core's flags of the message last received on ctx's call; 0 and
 * *known = 0 when this libgrpc lacks the lookup. */
static uint32_t call_msg_flags(perfc_ctx *ctx, int *known) {
  pthread_once(&msg_flags_once, msg_flags_lookup);
  *known = msg_flags != NULL;
  return msg_flags != NULL ? msg_flags(ctx->call) : 0;
}

/* ---- unary dispatch --------------------------------------------------------- */

/* A handler that ran past a deadline the server imposed answers
 * DEADLINE_EXCEEDED whatever it returned: the client asked for no such
 * limit, so it must learn why its call failed, and a late answer was
 * already written off by the limit's purpose. */
static void apply_deadline_cap(perfc_ctx *ctx) {
  if (ctx->deadline_capped && perfc__remaining_ms(ctx->deadline) == 0) {
    ctx->code = PERFC_STATUS_DEADLINE_EXCEEDED;
    ctx->message = perfc_arena_sprintf(ctx->arena,
                                       "%s exceeded the server's timeout",
                                       ctx->path);
  }
}

/* Decodes a unary call's request into ctx->req and allocates ctx->resp.
 * Returns 0, or -1 after answering the call itself (expired, malformed). */
static int unary_prepare(perfc_ctx *ctx) {
  const perfc_method_desc *d = ctx->method->desc;
  if (perfc__remaining_ms(ctx->deadline) == 0) {
    finish_with(ctx, PERFC_STATUS_DEADLINE_EXCEEDED,
                "deadline expired before %s started", d->path);
    return -1;
  }
  if (ctx->payload == NULL) {
    /* The core hands over no message both when none came and when the
     * stream ended inside one (a length prefix larger than the bytes
     * that followed): it discards the partial message without a word.
     * Either is the client breaking the protocol, which gRPC answers with
     * INTERNAL (grpc-java's "Half-closed without a request"), not
     * INVALID_ARGUMENT, which is about a request's content. */
    finish_with(ctx, PERFC_STATUS_INTERNAL,
                "%s: no complete request message arrived (none was sent, or "
                "the stream ended before the length its prefix announced)",
                d->path);
    return -1;
  }
  const uint8_t *data;
  size_t len;
  int known;
  uint32_t flags = call_msg_flags(ctx, &known);
  perfc_status_code wc =
      read_message(ctx, ctx->payload, flags, known, ctx->arena, &data, &len);
  if (wc != PERFC_STATUS_OK) {
    finish_with(ctx, wc, "%s", ctx->wire_message);
    return -1;
  }
  ProtobufCAllocator al = perfc_arena_allocator(ctx->arena);
  char why[256];
  ProtobufCMessage *req =
      perfc__pb_unpack(d->input, d->strings, &al, len, data, why, sizeof why);
  if (req == NULL && why[0]) {
    finish_with(ctx, PERFC_STATUS_INVALID_ARGUMENT, "%s: %s", d->path, why);
    return -1;
  }
  if (req == NULL) {
    finish_with(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                "%s: malformed request: %zu bytes do not parse as %s",
                d->path, len, d->input->name);
    return -1;
  }
  if (ctx->ic_entered)
    ic_message(ctx, 0);
  ProtobufCMessage *resp = perfc_arena_alloc(ctx->arena, d->output->sizeof_message);
  if (resp == NULL) {
    finish_with(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return -1;
  }
  d->output->message_init(resp);
  ctx->req = req;
  ctx->resp = resp;
  return 0;
}

/* Sends the response the handler (or try_inline) produced with `code`. */
static void unary_complete(perfc_ctx *ctx, perfc_status_code code) {
  const perfc_method_desc *d = ctx->method->desc;
  ctx->code = code;
  if ((unsigned)ctx->code >= PERFC_STATUS_COUNT) {
    perfc_log(PERFC_LOG_ERROR, "server: %s handler returned invalid status %d",
              d->path, (int)ctx->code);
    ctx->code = PERFC_STATUS_UNKNOWN;
  }
  apply_deadline_cap(ctx);
  if (ctx->code == PERFC_STATUS_OK) {
    size_t n = ctx->raw_response != NULL
                   ? ctx->raw_response_len
                   : protobuf_c_message_get_packed_size(ctx->resp);
    int max = ctx->poller->srv->opts.max_send_message_bytes;
    if (max > 0 && n > (size_t)max) {
      finish_with(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                  "%s: response of %zu bytes exceeds the %d-byte send limit",
                  d->path, n, max);
      return;
    }
    ctx->response = ctx->raw_response != NULL
                        ? perfc__bytes_to_buffer(ctx->raw_response, n)
                        : perfc__pack_sized(ctx->resp, n);
  }
  finish(ctx);
}

static void run_unary(perfc_ctx *ctx) {
  method_entry *m = ctx->method;
  if (ctx->req == NULL) {
    if (unary_prepare(ctx) != 0)
      return;
  } else if (perfc__remaining_ms(ctx->deadline) == 0) {
    /* Decoded on the poller (try_inline missed), then it waited for a
     * worker: the deadline is checked again, as for every pool call. */
    finish_with(ctx, PERFC_STATUS_DEADLINE_EXCEEDED,
                "deadline expired before %s started", m->desc->path);
    return;
  }
  unary_complete(ctx, m->desc->invoke(ctx, m->handlers, m->user_data,
                                      ctx->req, ctx->resp, NULL));
}

static void run_stream(perfc_ctx *ctx);

static void pool_job(void *arg) {
  perfc_ctx *ctx = arg;
  if (ctx->method->desc->kind == PERFC_METHOD_UNARY)
    run_unary(ctx);
  else
    run_stream(ctx);
}

static void on_close(perfc_tag *t, int ok) {
  perfc_ctx *ctx = PERFC_CONTAINER_OF(t, perfc_ctx, close_tag);
  if (!ok || ctx->cancelled)
    atomic_store_explicit(&ctx->cancelled_flag, 1, memory_order_release);
  ctx_release(ctx);
}

/* A handler on the pool may run long; receiving the close early (with its
 * own reference on the context) lets perfc_ctx_cancelled() see a client
 * that went away or a server cancelling calls at shutdown. Inline handlers
 * skip this: they finish before the poller could deliver the close. */
static void watch_close(perfc_ctx *ctx) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &ctx->cancelled;
  ctx->close_tag.run = on_close;
  atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
  /* close_posted is set first: the handler path still holds a reference,
   * so ctx outlives this function whatever the close does. */
  ctx->close_posted = 1;
  grpc_call *call = ctx->call;
  PERFC_HANDOFF_RELEASE(&ctx->close_tag);
  if (grpc_call_start_batch(call, &op, 1, &ctx->close_tag, NULL) !=
      GRPC_CALL_OK) {
    ctx->close_posted = 0;
    atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_relaxed);
  }
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
static void refuse_stream(perfc_ctx *ctx) {
  if (ctx->initial_md.count == 0 && ctx->trailing_md.count == 0) {
    if (ctx->ic_entered)
      ic_after(ctx);
    grpc_call_cancel_with_status(ctx->call, (grpc_status_code)ctx->code,
                                 ctx->message ? ctx->message
                                              : perfc_status_name(ctx->code),
                                 NULL);
    ctx_release(ctx);
    return;
  }
  atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
  finish(ctx); /* consumes the caller's reference */
  gpr_timespec until = perfc__deadline_from_ms(1000);
  while (atomic_load_explicit(&ctx->refs, memory_order_acquire) > 1) {
    grpc_event ev = grpc_completion_queue_next(ctx->call_cq, until, NULL);
    if (ev.type == GRPC_OP_COMPLETE) {
      perfc_tag *t = ev.tag;
      PERFC_HANDOFF_ACQUIRE(t);
      t->run(t, ev.success);
    } else if (ev.type == GRPC_QUEUE_TIMEOUT) {
      grpc_call_cancel(ctx->call, NULL); /* the batch now fails at once */
      until = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    }
  }
  ctx_release(ctx);
}

/* finish_with() for a call that may be a stream not yet on its worker. */
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
  if (ctx->method != NULL && ctx->method->desc->kind != PERFC_METHOD_UNARY)
    refuse_stream(ctx);
  else
    finish(ctx);
}

static void dispatch(perfc_ctx *ctx) {
  method_entry *m = ctx->method;
  if (ctx->poller->srv->nics) {
    perfc_status_code c = ic_before(ctx);
    if (c != PERFC_STATUS_OK) {
      refuse(ctx, c, NULL);
      return;
    }
  }
  if (!m->has_handler) {
    refuse(ctx, PERFC_STATUS_UNIMPLEMENTED,
           "method %s has no handler in this server", m->desc->path);
    return;
  }
  /* Streaming handlers block on the network, so they always run on the
   * pool whatever the method's executor says; they watch for the close
   * themselves, on their own queue (run_stream). */
  if (m->desc->kind != PERFC_METHOD_UNARY) {
    ctx->run_listed = 1;
    int rc = perfc_pool_submit(ctx->poller->srv->pool, pool_job, ctx);
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
      if (m->desc->try_inline(ctx, m->user_data, ctx->req, ctx->resp, &code)) {
        unary_complete(ctx, code);
        return;
      }
    }
    watch_close(ctx);
    ctx->run_listed = 1;
    int rc = perfc_pool_submit(ctx->poller->srv->pool, pool_job, ctx);
    if (rc != 0)
      finish_with(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                  "server busy: %s (worker queue bound reached)",
                  perfc_strerror(rc));
    return;
  }
  run_unary(ctx);
}

static int server_accepting(perfc_server *srv) {
  return atomic_load_explicit(&srv->state, memory_order_acquire) == SRV_STARTED;
}

/* Replaces the request of method `m` (NULL: generic) that was just matched
 * (ctx), and deepens the method's posted requests when its calls outgrow
 * them.
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
static void rearm(poller *p, perfc_ctx *ctx) {
  method_entry *m = ctx->method;
  if (m == NULL) {
    post_request(p, NULL);
    return;
  }
  size_t i = (size_t)(m - p->srv->methods);
  ctx->counted = 1;
  counter_add(&p->running[i], 1);
  unsigned running =
      atomic_load_explicit(&p->running[i], memory_order_relaxed) -
      atomic_load_explicit(&p->ended_elsewhere[i], memory_order_relaxed);
  unsigned depth = atomic_load_explicit(&p->depth[i], memory_order_relaxed);
  unsigned max = p->srv->opts.requests_per_method, want = 1;
  if (running > 2 * depth && depth < max) {
    unsigned d = depth * 2 < max ? depth * 2 : max;
    want += d - depth;
    atomic_store_explicit(&p->depth[i], d, memory_order_relaxed);
  }
  while (want-- > 0)
    post_request(p, m);
}

static void on_request(perfc_tag *t, int ok) {
  perfc_ctx *ctx = PERFC_CONTAINER_OF(t, perfc_ctx, request_tag);
  poller *p = ctx->poller;
  if (ctx->method != NULL)
    counter_add(&p->posted[ctx->method - p->srv->methods], -1);
  if (!ok) {
    /* The server is shutting down and failed the posted request. */
    ctx_release(ctx);
    return;
  }
  ctx->start_ns = perfc__now_ns();
  /* Re-arm first so a new call on this method never waits for us. */
  if (server_accepting(p->srv))
    rearm(p, ctx);
  if (ctx->method == NULL) {
    ctx->path = perfc_arena_strndup(ctx->arena,
                                    (const char *)GRPC_SLICE_START_PTR(ctx->details.method),
                                    GRPC_SLICE_LENGTH(ctx->details.method));
    ctx->deadline = ctx->details.deadline;
    finish_with(ctx, PERFC_STATUS_UNIMPLEMENTED, "unknown method %s",
                ctx->path ? ctx->path : "?");
    return;
  }
  ctx->path = ctx->method->desc->path;
  dispatch(ctx);
}

/* A streaming call's private queue. Non-polling: the pollers poll the
 * network for everyone, and a worker waiting here never takes the polling
 * role from them (trading it back and forth cost more wake-ups than the
 * handler saved). */
static grpc_completion_queue *call_cq_new(void) {
  grpc_completion_queue_attributes attr = {
      .version = 1,
      .cq_completion_type = GRPC_CQ_NEXT,
      .cq_polling_type = GRPC_CQ_NON_POLLING,
      .cq_shutdown_cb = NULL};
  return grpc_completion_queue_create(
      grpc_completion_queue_factory_lookup(&attr), &attr, NULL);
}

/* Posts one request for method `m` (NULL: the generic catch-all). */
static void post_request(poller *p, method_entry *m) {
  perfc_ctx *ctx = ctx_get(p);
  if (ctx != NULL && m != NULL)
    counter_add(&p->posted[m - p->srv->methods], 1);
  if (ctx == NULL) {
    perfc_log(PERFC_LOG_ERROR, "server: out of memory re-arming a request");
    return;
  }
  ctx->method = m;
  ctx->request_tag.run = on_request;
  grpc_call_error err;
  if (m == NULL)
    grpc_call_details_init(&ctx->details);
  PERFC_HANDOFF_RELEASE(&ctx->request_tag);
  if (m != NULL) {
    int with_payload = m->desc->kind == PERFC_METHOD_UNARY ||
                       m->desc->kind == PERFC_METHOD_SERVER_STREAM;
    grpc_completion_queue *bound = p->cq;
    if (m->desc->kind != PERFC_METHOD_UNARY) {
      if (ctx->call_cq == NULL)
        ctx->call_cq = call_cq_new();
      if (ctx->call_cq == NULL) {
        perfc_log(PERFC_LOG_ERROR, "server: cannot create a call queue");
        ctx_release(ctx);
        return;
      }
      bound = ctx->call_cq;
    }
    /* The match is announced on the poller's queue either way; only the
     * call's own operations complete on `bound`. */
    err = grpc_server_request_registered_call(
        p->srv->server, m->registered, &ctx->call, &ctx->deadline,
        &ctx->request_md, with_payload ? &ctx->payload : NULL, bound, p->cq,
        &ctx->request_tag);
  } else {
    err = grpc_server_request_call(p->srv->server, &ctx->call, &ctx->details,
                                   &ctx->request_md, p->cq, p->cq,
                                   &ctx->request_tag);
  }
  if (err != GRPC_CALL_OK) {
    /* Refusals are expected once shutdown began; only log real failures. */
    if (server_accepting(p->srv))
      perfc_log(PERFC_LOG_ERROR, "server: cannot post request: %s",
                grpc_call_error_to_string(err));
    if (m != NULL)
      counter_add(&p->posted[m - p->srv->methods], -1);
    ctx_release(ctx);
  }
}

/* ---- streaming ---------------------------------------------------------------- */

/* perfc_ctx_cancelled() without polling the call's queue: a stream
 * operation learns of a cancel from its own completion anyway. */
static int cancel_seen(const perfc_ctx *ctx) {
  return atomic_load_explicit(&ctx->cancelled_flag, memory_order_acquire) ||
         perfc__remaining_ms(ctx->deadline) == 0 ||
         (ctx->run_listed &&
          atomic_load_explicit(&ctx->poller->srv->grace_over,
                               memory_order_acquire));
}

/* The stream whose handler runs on this thread: perfc_ctx_cancelled()
 * drains the call's queue only from there, its single consumer. */
static _Thread_local perfc_stream *tls_stream;


static void on_stream_recv(perfc_tag *t, int ok) {
  perfc_stream *s = PERFC_CONTAINER_OF(t, perfc_stream, recv_tag);
  s->recv_ok = ok;
  s->recv_done = 1;
  if (ok && s->recv_bb != NULL && msg_flags != NULL)
    s->recv_flags = msg_flags(s->ctx->call);
}

static void on_stream_send(perfc_tag *t, int ok) {
  perfc_stream *s = PERFC_CONTAINER_OF(t, perfc_stream, send_tag);
  s->send_ok = ok;
  s->send_done = 1;
}

/* Runs completions of a streaming call's queue: with `block`, exactly one,
 * waiting for it; otherwise those already there. Callers loop on their own
 * condition, so a blocking wait never polls the queue a second time (an
 * empty poll still costs the core a pass through its pollset). */
static void call_cq_run(perfc_ctx *ctx, int block) {
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(
        ctx->call_cq,
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

/* Waits for the send in flight, if any, and frees its message. Returns 0,
 * or PERFC_ESHUTDOWN when it failed (the call was cancelled). */
static int stream_send_wait(perfc_stream *s) {
  if (!s->send_pending)
    return 0;
  while (!s->send_done)
    call_cq_run(s->ctx, 1);
  s->send_pending = 0;
  grpc_byte_buffer_destroy(s->send_bb);
  s->send_bb = NULL;
  return s->send_ok ? 0 : PERFC_ESHUTDOWN;
}

/* Starts sending `bb` (owned from here on), with the initial metadata if
 * it is not out yet. Returns 0, or PERFC_ESHUTDOWN when the core refused
 * (call ended). One send at most is in flight: callers wait first. */
static int stream_send_start(perfc_stream *s, grpc_byte_buffer *bb,
                             uint32_t flags) {
  perfc_ctx *ctx = s->ctx;
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  n += add_initial_md(ctx, &ops[n]);
  ops[n].op = GRPC_OP_SEND_MESSAGE;
  ops[n].data.send_message.send_message = bb;
  ops[n].flags = flags;
  n++;
  s->send_done = 0;
  s->send_bb = bb;
  s->send_pending = 1;
  PERFC_HANDOFF_RELEASE(&s->send_tag);
  if (grpc_call_start_batch(ctx->call, ops, n, &s->send_tag, NULL) !=
      GRPC_CALL_OK) {
    s->send_pending = 0;
    s->send_bb = NULL;
    grpc_byte_buffer_destroy(bb);
    return PERFC_ESHUTDOWN;
  }
  return 0;
}

/* Writes the held reply and every buffered one before the stream waits or
 * ends. Returns 0 or PERFC_ESHUTDOWN. */
static int stream_flush(perfc_stream *s) {
  grpc_byte_buffer *bb = s->held;
  if (bb == NULL)
    return 0;
  s->held = NULL;
  s->buffered = 0;
  if (stream_send_wait(s) != 0) {
    grpc_byte_buffer_destroy(bb);
    return PERFC_ESHUTDOWN;
  }
  return stream_send_start(s, bb, s->held_flags);
}

/* Whether the reply being sent may be held back (see perfc_stream): the
 * handler said more follow (`more`), or it is turning messages around fast
 * and its next request is already here, so it sends again (and everything
 * goes out together) in about perfc__stream_hold_ns. The initial metadata
 * never waits: a hinted batch that carries it would not complete until
 * something else is written. */
static int stream_may_hold(perfc_stream *s, int more) {
  perfc_ctx *ctx = s->ctx;
  if (!ctx->initial_md_sent || s->buffered >= STREAM_BATCH_MAX)
    return 0;
  if (more)
    return 1;
  if (ctx->poller->srv->opts.stream_flush_every_send || !s->recv_pending ||
      s->busy_ns > perfc__stream_hold_ns ||
      perfc__now_ns() - s->got_ns > perfc__stream_hold_ns)
    return 0;
  if (!s->recv_done)
    call_cq_run(ctx, 0);
  return s->recv_done && s->recv_ok && s->recv_bb != NULL;
}

/* Starts receiving the next message; its completion sets recv_done.
 * Returns 0, or PERFC_ESHUTDOWN when the core refused (call ended). */
static int stream_recv_start(perfc_stream *s) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &s->recv_bb;
  s->recv_bb = NULL;
  s->recv_done = 0;
  s->recv_pending = 1;
  grpc_call *call = s->ctx->call;
  PERFC_HANDOFF_RELEASE(&s->recv_tag);
  if (grpc_call_start_batch(call, &op, 1, &s->recv_tag, NULL) != GRPC_CALL_OK) {
    s->recv_pending = 0;
    return PERFC_ESHUTDOWN;
  }
  return 0;
}

int perfc_stream_recv(perfc_stream *s, ProtobufCMessage **msg) {
  if (s == NULL || msg == NULL)
    return PERFC_EINVAL;
  *msg = NULL;
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
  if (!s->recv_pending) {
    if (cancel_seen(ctx) || stream_recv_start(s) != 0)
      return PERFC_ESHUTDOWN;
  }
  if (!s->recv_done) {
    /* Nothing written may wait while we do. */
    stream_flush(s);
    while (!s->recv_done)
      call_cq_run(ctx, 1);
    now = perfc__now_ns();
  }
  s->got_ns = now;
  s->recv_pending = 0;
  grpc_byte_buffer *bb = s->recv_bb;
  s->recv_bb = NULL;
  if (!s->recv_ok) {
    if (bb != NULL)
      grpc_byte_buffer_destroy(bb);
    return PERFC_ESHUTDOWN;
  }
  if (bb == NULL) { /* half-close: the client sent its last message */
    s->ended = 1;
    /* No request follows, so the handler's next step is not a quick reply
     * to one: what it holds goes out now, not when it returns. */
    stream_flush(s);
    return 0;
  }
  s->msg_flags = s->recv_flags;
  s->msg_flags_set = msg_flags != NULL;
  /* A failure here shows in the next receive, which starts it again. */
  stream_recv_start(s);
  perfc_arena_reset(s->msg_arena);
  const uint8_t *data;
  size_t len;
  char why[256] = "";
  int rc = 0;
  perfc_status_code wc = read_message(ctx, bb, s->msg_flags, s->msg_flags_set,
                                      s->msg_arena, &data, &len);
  if (wc != PERFC_STATUS_OK) {
    /* The call ends with this status whatever the handler returns
     * (stream_body), and no message after this one is read. */
    rc = wc == PERFC_STATUS_RESOURCE_EXHAUSTED ? PERFC_ETOOBIG : PERFC_EPARSE;
    s->wire_rc = rc;
  }
  if (rc == 0) {
    ProtobufCAllocator al = perfc_arena_allocator(s->msg_arena);
    *msg = perfc__pb_unpack(d->input, d->strings, &al, len, data, why,
                            sizeof why);
    if (*msg == NULL)
      rc = PERFC_EPARSE;
  }
  grpc_byte_buffer_destroy(bb);
  if (rc == 0 && ctx->ic_entered)
    ic_message(ctx, 0);
  if (rc == PERFC_EPARSE && why[0])
    perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT, "%s: %s", d->path, why);
  else if (rc == PERFC_EPARSE)
    perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                    "%s: malformed stream message: %zu bytes do not parse as %s",
                    d->path, len, d->input->name);
  return rc == 0 ? 1 : rc;
}

static int stream_send(perfc_stream *s, const ProtobufCMessage *msg, int more) {
  if (s == NULL || msg == NULL)
    return PERFC_EINVAL;
  perfc_ctx *ctx = s->ctx;
  const perfc_method_desc *d = ctx->method->desc;
  if (d->kind != PERFC_METHOD_SERVER_STREAM && d->kind != PERFC_METHOD_BIDI_STREAM)
    return PERFC_ESTATE; /* a client stream answers with one response */
  if (msg->descriptor != d->output)
    return PERFC_EINVAL;
  if (cancel_seen(ctx))
    return PERFC_ESHUTDOWN;
  int max = ctx->poller->srv->opts.max_send_message_bytes;
  size_t size = protobuf_c_message_get_packed_size(msg);
  if (max > 0 && size > (size_t)max)
    return PERFC_ETOOBIG;
  /* Flow control: the core completes a send once the transport took it, and
   * only one may be in flight, so waiting for the previous one here bounds
   * what a slow reader makes us hold to one message (a buffered reply
   * completes at once, but the core writes its buffer once it passes
   * 64 KiB, and STREAM_BATCH_MAX bounds it before that). */
  if (stream_send_wait(s) != 0)
    return PERFC_ESHUTDOWN;
  grpc_byte_buffer *bb = perfc__pack_sized(msg, size);
  uint32_t flags = ctx->comp_off ? GRPC_WRITE_NO_COMPRESS : 0;
  if (s->held != NULL) {
    /* The held reply goes first, into the core's buffer: this one follows
     * at once, and writes it unless it is held in turn. */
    grpc_byte_buffer *prev = s->held;
    s->held = NULL;
    s->buffered++;
    if (stream_send_start(s, prev, s->held_flags | GRPC_WRITE_BUFFER_HINT) != 0 ||
        stream_send_wait(s) != 0) {
      grpc_byte_buffer_destroy(bb);
      return PERFC_ESHUTDOWN;
    }
  }
  if (stream_may_hold(s, more)) {
    s->held = bb;
    s->held_flags = flags;
    s->held_total++;
  } else {
    s->buffered = 0;
    if (stream_send_start(s, bb, flags) != 0)
      return PERFC_ESHUTDOWN;
  }
  if (ctx->ic_entered)
    ic_message(ctx, 1);
  return 0;
}

int perfc_stream_send(perfc_stream *s, const ProtobufCMessage *msg) {
  return stream_send(s, msg, 0);
}

int perfc_stream_send_more(perfc_stream *s, const ProtobufCMessage *msg) {
  return stream_send(s, msg, 1);
}

static void stream_body(perfc_ctx *ctx);

/* A streaming call on its worker, from the first operation to the release
 * of its context: every completion of the call arrives on ctx->call_cq and
 * is run here, so the context is released here too. */
static void run_stream(perfc_ctx *ctx) {
  /* Our own reference keeps ctx alive until the queue is drained below,
   * whichever of the final batch and the close completes last. */
  atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
  watch_close(ctx);
  stream_body(ctx); /* ends with finish(): consumes the handler's reference */
  while (atomic_load_explicit(&ctx->refs, memory_order_acquire) > 1)
    call_cq_run(ctx, 1);
  perfc_stream *s = ctx->stream;
  if (s != NULL && s->recv_pending) {
    /* The receive read ahead outlived the handler. The status is out, so
     * cancelling only ends that receive, which must complete before the
     * queue can serve another call. */
    grpc_call_cancel(ctx->call, NULL);
    while (!s->recv_done)
      call_cq_run(ctx, 1);
    s->recv_pending = 0;
    if (s->recv_bb != NULL)
      grpc_byte_buffer_destroy(s->recv_bb);
    s->recv_bb = NULL;
  }
  tls_stream = NULL;
  ctx_release(ctx);
}

static void stream_body(perfc_ctx *ctx) {
  method_entry *m = ctx->method;
  const perfc_method_desc *d = m->desc;
  perfc_stream *s = perfc_arena_calloc(ctx->arena, sizeof *s);
  if (s == NULL || perfc_arena_new(&s->msg_arena, 0) != 0) {
    finish_with(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  s->ctx = ctx;
  pthread_once(&msg_flags_once, msg_flags_lookup);
  s->recv_tag.run = on_stream_recv;
  s->send_tag.run = on_stream_send;
  ctx->stream = s;
  tls_stream = s;

  ProtobufCMessage *req = NULL, *resp = NULL;
  if (d->kind == PERFC_METHOD_SERVER_STREAM) {
    const uint8_t *data;
    size_t len;
    if (ctx->payload == NULL) {
      finish_with(ctx, PERFC_STATUS_INTERNAL,
                  "%s: no complete request message arrived (none was sent, "
                  "or the stream ended before the length its prefix "
                  "announced)",
                  d->path);
      return;
    }
    int known;
    uint32_t flags = call_msg_flags(ctx, &known);
    perfc_status_code wc =
        read_message(ctx, ctx->payload, flags, known, ctx->arena, &data, &len);
    if (wc != PERFC_STATUS_OK) {
      finish_with(ctx, wc, "%s", ctx->wire_message);
      return;
    }
    ProtobufCAllocator al = perfc_arena_allocator(ctx->arena);
    char why[256];
    req = perfc__pb_unpack(d->input, d->strings, &al, len, data, why,
                           sizeof why);
    if (req == NULL && why[0]) {
      finish_with(ctx, PERFC_STATUS_INVALID_ARGUMENT, "%s: %s", d->path, why);
      return;
    }
    if (req == NULL) {
      finish_with(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                  "%s: malformed request: %zu bytes do not parse as %s",
                  d->path, len, d->input->name);
      return;
    }
    if (ctx->ic_entered)
      ic_message(ctx, 0);
  }
  if (d->kind == PERFC_METHOD_CLIENT_STREAM) {
    resp = perfc_arena_alloc(ctx->arena, d->output->sizeof_message);
    if (resp == NULL) {
      finish_with(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      return;
    }
    d->output->message_init(resp);
  }
  ctx->code = d->invoke(ctx, m->handlers, m->user_data, req, resp, s);
  /* The status goes after the last message: a failed last send means the
   * call is already cancelled, and the final batch fails the same way. */
  stream_flush(s);
  stream_send_wait(s);
  if ((unsigned)ctx->code >= PERFC_STATUS_COUNT)
    ctx->code = PERFC_STATUS_UNKNOWN;
  apply_deadline_cap(ctx);
  if (ctx->wire_code != PERFC_STATUS_OK) {
    ctx->code = ctx->wire_code;
    ctx->message = ctx->wire_message;
  }
  if (ctx->code == PERFC_STATUS_OK && resp != NULL)
    ctx->response = perfc__pack(resp);
  finish(ctx);
}

/* ---- pollers ---------------------------------------------------------------- */

/* perfc_server_opts.poller_wakeup_preemption says why. Failure leaves the
 * normal policy, which is only slower. */
static void poller_sched(const perfc_server *srv) {
  if (srv->opts.poller_wakeup_preemption)
    return;
  struct sched_param sp = {.sched_priority = 0};
  int rc = pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
  if (rc != 0)
    perfc_log(PERFC_LOG_DEBUG, "server: SCHED_BATCH for a poller: %s",
              strerror(rc));
}

static void *poller_main(void *arg) {
  poller *p = arg;
  perfc_server *srv = p->srv;
  tls_poller = p;
  poller_sched(srv);
  pthread_mutex_lock(&srv->mu);
  while (!srv->go)
    pthread_cond_wait(&srv->cv, &srv->mu);
  pthread_mutex_unlock(&srv->mu);
  for (size_t m = 0; m < srv->nmethods; m++) {
    unsigned d = REQUESTS_START < srv->opts.requests_per_method
                     ? REQUESTS_START
                     : srv->opts.requests_per_method;
    atomic_store_explicit(&p->depth[m], d, memory_order_relaxed);
    for (unsigned k = 0; k < d; k++)
      post_request(p, &srv->methods[m]);
  }
  /* Unknown methods wait for a generic request; without one they would hang
   * until their deadline instead of failing with UNIMPLEMENTED. */
  for (unsigned k = 0; k < 2; k++)
    post_request(p, NULL);
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
  perfc_ctx *r = atomic_exchange(&p->returned, NULL);
  while (r != NULL) {
    perfc_ctx *c = r;
    r = c->next_free;
    ctx_destroy(c);
  }
  while (p->free_list != NULL) {
    perfc_ctx *c = p->free_list;
    p->free_list = c->next_free;
    ctx_destroy(c);
  }
  p->free_count = 0;
  return NULL;
}

static void on_shutdown_done(perfc_tag *t, int ok) {
  (void)ok;
  perfc_server *srv = PERFC_CONTAINER_OF(t, perfc_server, shutdown_tag);
  pthread_mutex_lock(&srv->mu);
  srv->shutdown_done = 1;
  pthread_cond_broadcast(&srv->cv);
  pthread_mutex_unlock(&srv->mu);
}

/* ---- public API ------------------------------------------------------------- */

int perfc_server_new(perfc_server **out, const perfc_server_opts *opts) {
  if (out == NULL)
    return PERFC_EINVAL;
  perfc_server *srv = calloc(1, sizeof *srv);
  if (srv == NULL)
    return PERFC_ENOMEM;
  opts_resolve(&srv->opts, opts);
  const perfc_server_opts *o = &srv->opts;
  if (o->default_executor != PERFC_EXEC_INLINE &&
      o->default_executor != PERFC_EXEC_POOL) {
    free(srv);
    return PERFC_EINVAL;
  }
  grpc_compression_algorithm calgo;
  if (perfc__compression_parse(o->compression, &calgo) != 0) {
    perfc_log(PERFC_LOG_ERROR,
              "server: unknown compression \"%s\" (gzip, deflate, identity)",
              o->compression);
    free(srv);
    return PERFC_EINVAL;
  }
  srv->opts.compression = NULL; /* borrowed only during this call */
  srv->calgo = calgo;
  srv->recv_max = perfc__recv_limit(o->max_recv_message_bytes);
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
  if (o->max_connection_idle_ms > 0) {
    INT_ARG(GRPC_ARG_MAX_CONNECTION_IDLE_MS, clamp_int(o->max_connection_idle_ms));
  }
  if (o->max_connection_age_ms > 0) {
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
  INT_ARG(GRPC_ARG_MAX_METADATA_SIZE, clamp_int((int64_t)(
      o->max_metadata_bytes > INT32_MAX ? INT32_MAX : o->max_metadata_bytes)));
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
  srv->server = grpc_server_create(&ca, NULL);
  grpc_resource_quota_unref(quota);
  if (srv->server == NULL) {
    free(srv);
    grpc_shutdown();
    return PERFC_EGRPC;
  }
  pthread_mutex_init(&srv->mu, NULL);
  pthread_cond_init(&srv->cv, NULL);
  srv->wake_fd[0] = srv->wake_fd[1] = -1;
  atomic_init(&srv->state, SRV_NEW);
  *out = srv;
  return 0;
}

/* One listening port with the given credentials; plaintext and TLS differ
 * only in those. Takes ownership of `creds`. */
static int add_port(perfc_server *srv, const char *addr,
                    grpc_server_credentials *creds, int *bound_port) {
  /* The core's own error for a failed port is a 600-byte status dump at
   * error level; it goes to debug, and the reason is said once below. */
  perfc__grpc_log_quiet(1);
  int port = grpc_server_add_http2_port(srv->server, addr, creds);
  perfc__grpc_log_quiet(0);
  grpc_server_credentials_release(creds);
  if (port <= 0) {
    char why[160];
    perfc__listen_failure(addr, why, sizeof why);
    perfc_log(PERFC_LOG_ERROR, "server: cannot listen on %s: %s", addr, why);
    return PERFC_EBIND;
  }
  if (srv->nlisteners < (int)(sizeof srv->ports / sizeof *srv->ports))
    srv->ports[srv->nlisteners] = port;
  srv->nlisteners++;
  if (bound_port != NULL)
    *bound_port = port;
  return 0;
}

void perfc__server_set_pool_observer(perfc_server *srv,
                                     perfc_pool_observer_fn fn, void *ud) {
  srv->pool_observer = fn;
  srv->pool_observer_ud = ud;
}

size_t perfc__server_ports(const perfc_server *srv, const int **ports) {
  *ports = srv->ports;
  size_t cap = sizeof srv->ports / sizeof *srv->ports;
  return (size_t)srv->nlisteners < cap ? (size_t)srv->nlisteners : cap;
}

int perfc__server_pool_stats(perfc_server *srv, perfc_pool_stats *out) {
  if (srv == NULL || out == NULL || srv->pool == NULL)
    return PERFC_ESTATE;
  perfc_pool_stats_get(srv->pool, out);
  return 0;
}

unsigned long perfc__stream_replies_held(const perfc_stream *s) {
  return s != NULL ? s->held_total : 0;
}

int perfc__server_posted_requests(const perfc_server *srv, const char *path,
                                  unsigned poller_index, unsigned *posted,
                                  unsigned *depth) {
  if (atomic_load(&srv->state) != SRV_STARTED || poller_index >= srv->npollers)
    return PERFC_ESTATE;
  const poller *p = &srv->pollers[poller_index];
  for (size_t i = 0; i < srv->nmethods; i++)
    if (strcmp(srv->methods[i].desc->path, path) == 0) {
      *posted = atomic_load_explicit(&p->posted[i], memory_order_relaxed);
      *depth = atomic_load_explicit(&p->depth[i], memory_order_relaxed);
      return 0;
    }
  return PERFC_ENOENT;
}

int perfc_server_listen(perfc_server *srv, const char *addr, int *bound_port) {
  if (srv == NULL || addr == NULL)
    return PERFC_EINVAL;
  if (atomic_load(&srv->state) != SRV_NEW)
    return PERFC_ESTATE;
  return add_port(srv, addr, grpc_insecure_server_credentials_create(),
                  bound_port);
}

int perfc_server_listen_tls(perfc_server *srv, const char *addr,
                            const perfc_tls_opts *tls, int *bound_port) {
  if (srv == NULL || addr == NULL || tls == NULL)
    return PERFC_EINVAL;
  if (atomic_load(&srv->state) != SRV_NEW)
    return PERFC_ESTATE;
  grpc_server_credentials *creds;
  int rc = perfc__tls_server_creds(tls, &creds);
  if (rc != 0)
    return rc;
  return add_port(srv, addr, creds, bound_port);
}

int perfc_server_add_service(perfc_server *srv, const perfc_service_desc *desc,
                             const void *handlers, void *user_data) {
  if (srv == NULL || desc == NULL || handlers == NULL)
    return PERFC_EINVAL;
  if (atomic_load(&srv->state) != SRV_NEW)
    return PERFC_ESTATE;
  for (size_t i = 0; i < srv->nservices; i++)
    if (strcmp(srv->services[i].desc->name, desc->name) == 0)
      return PERFC_EEXIST;
  service_entry *sv =
      realloc(srv->services, (srv->nservices + 1) * sizeof *sv);
  if (sv == NULL)
    return PERFC_ENOMEM;
  srv->services = sv;
  method_entry *me =
      realloc(srv->methods, (srv->nmethods + desc->n_methods) * sizeof *me);
  if (me == NULL)
    return PERFC_ENOMEM;
  srv->methods = me;
  srv->services[srv->nservices++].desc = desc;

  for (size_t i = 0; i < desc->n_methods; i++) {
    const perfc_method_desc *d = &desc->methods[i];
    method_entry *m = &srv->methods[srv->nmethods++];
    memset(m, 0, sizeof *m);
    m->desc = d;
    m->service = desc;
    m->handlers = handlers;
    m->user_data = user_data;
    /* Read the handler slot as a function pointer (not as void *): the
     * generated struct holds function pointers only. */
    void (*fn)(void);
    memcpy(&fn, (const char *)handlers + d->handler_offset, sizeof fn);
    m->has_handler = fn != NULL && d->invoke != NULL;
    if (!m->has_handler)
      perfc_log(PERFC_LOG_WARN,
                "server: %s has no handler; it will answer UNIMPLEMENTED",
                d->path);
    m->executor = d->executor != PERFC_EXEC_DEFAULT ? d->executor
                                                    : srv->opts.default_executor;
    int with_payload = d->kind == PERFC_METHOD_UNARY ||
                       d->kind == PERFC_METHOD_SERVER_STREAM;
    m->registered = grpc_server_register_method(
        srv->server, d->path, NULL,
        with_payload ? GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER
                     : GRPC_SRM_PAYLOAD_NONE,
        0);
    if (m->registered == NULL) {
      srv->nmethods--;
      perfc_log(PERFC_LOG_ERROR, "server: cannot register %s (duplicate?)",
                d->path);
      return PERFC_EGRPC;
    }
  }
  return 0;
}

int perfc_server_start(perfc_server *srv) {
  if (srv == NULL)
    return PERFC_EINVAL;
  if (atomic_load(&srv->state) != SRV_NEW || srv->nlisteners == 0)
    return PERFC_ESTATE;
  for (size_t i = 0; i < srv->nstart_hooks; i++) {
    int rc = srv->start_hooks[i].fn(srv, srv->start_hooks[i].user_data);
    if (rc != 0)
      return rc;
  }
  int needs_pool = 0;
  /* Streaming handlers always run on the pool (see dispatch()), whatever
   * their executor says. */
  for (size_t i = 0; i < srv->nmethods; i++)
    needs_pool |= srv->methods[i].executor == PERFC_EXEC_POOL ||
                  srv->methods[i].desc->kind != PERFC_METHOD_UNARY;
  if (needs_pool) {
    perfc_pool_opts po;
    perfc_pool_opts_init(&po);
    if (srv->opts.pool_threads)
      po.threads = srv->opts.pool_threads;
    if (srv->opts.pool_queue)
      po.queue_max = srv->opts.pool_queue;
    po.observer = srv->pool_observer;
    po.observer_user_data = srv->pool_observer_ud;
    po.sched_batch = !srv->opts.worker_wakeup_preemption;
    int rc = perfc_pool_new(&srv->pool, &po);
    if (rc != 0)
      return rc;
  }
  for (size_t i = 0; i < srv->nmethods; i++) {
    method_entry *m = &srv->methods[i];
    for (unsigned k = 0; k < srv->nics; k++)
      if (srv->ics[k].method_init)
        m->ic_state[k] =
            srv->ics[k].method_init(srv->ics[k].self, m->service, m->desc);
  }
  srv->pollers = calloc(srv->opts.threads, sizeof *srv->pollers);
  if (srv->pollers == NULL)
    return PERFC_ENOMEM;
  /* Threads first: each waits for `go`, then posts its own requests, so a
   * poller's free list is only ever touched by its own thread. A poller
   * whose thread cannot be created is simply not used. */
  for (unsigned i = 0; i < srv->opts.threads; i++) {
    poller *p = &srv->pollers[i];
    p->srv = srv;
    p->index = i;
    p->posted = calloc(4 * (srv->nmethods + 1), sizeof *p->posted);
    if (p->posted == NULL) {
      perfc_log(PERFC_LOG_WARN, "server: no memory for poller %u", i);
      break;
    }
    p->depth = p->posted + srv->nmethods + 1;
    p->running = p->depth + srv->nmethods + 1;
    p->ended_elsewhere = p->running + srv->nmethods + 1;
    p->cq = grpc_completion_queue_create_for_next(NULL);
    if (pthread_create(&p->thread, NULL, poller_main, p) != 0) {
      grpc_completion_queue_shutdown(p->cq);
      grpc_completion_queue_destroy(p->cq);
      free((void *)p->posted);
      perfc_log(PERFC_LOG_WARN, "server: cannot start poller thread %u", i);
      break;
    }
    char name[16];
    snprintf(name, sizeof name, "perfc-cq%u", i % 10000u);
    pthread_setname_np(p->thread, name);
    srv->npollers = i + 1;
  }
  if (srv->npollers == 0) {
    perfc_pool_free(srv->pool);
    srv->pool = NULL;
    return PERFC_ETHREAD;
  }
  /* Every queue is registered before grpc_server_start, as the core
   * requires. */
  for (unsigned i = 0; i < srv->npollers; i++)
    grpc_server_register_completion_queue(srv->server, srv->pollers[i].cq,
                                          NULL);
  grpc_server_start(srv->server);
  atomic_store(&srv->state, SRV_STARTED);
  pthread_mutex_lock(&srv->mu);
  srv->go = 1;
  pthread_cond_broadcast(&srv->cv);
  pthread_mutex_unlock(&srv->mu);
  return 0;
}

static void wait_shutdown(perfc_server *srv, int64_t grace_ms) {
  gpr_timespec until = perfc__deadline_from_ms(grace_ms);
  struct timespec ts;
  gpr_timespec rt = gpr_convert_clock_type(until, GPR_CLOCK_REALTIME);
  ts.tv_sec = rt.tv_sec;
  ts.tv_nsec = rt.tv_nsec;
  pthread_mutex_lock(&srv->mu);
  while (!srv->shutdown_done) {
    if (pthread_cond_timedwait(&srv->cv, &srv->mu, &ts) == ETIMEDOUT)
      break;
  }
  int done = srv->shutdown_done;
  pthread_mutex_unlock(&srv->mu);
  if (done)
    return;
  perfc_log(PERFC_LOG_WARN,
            "server: grace period of %lld ms over; cancelling in-flight calls",
            (long long)grace_ms);
  /* Calls on workers first, with CANCELLED and a reason (cancel_running);
   * their handlers see perfc_ctx_cancelled() and their clients get the
   * status before the connections close. A second at most is given to
   * that; whatever remains (an inline handler still running) is then cut
   * off with the connections. */
  if (cancel_running(srv) > 0) {
    gpr_timespec t = gpr_convert_clock_type(perfc__deadline_from_ms(1000),
                                            GPR_CLOCK_REALTIME);
    struct timespec ts1 = {.tv_sec = t.tv_sec, .tv_nsec = t.tv_nsec};
    pthread_mutex_lock(&srv->mu);
    while (!srv->shutdown_done)
      if (pthread_cond_timedwait(&srv->cv, &srv->mu, &ts1) == ETIMEDOUT)
        break;
    done = srv->shutdown_done;
    pthread_mutex_unlock(&srv->mu);
    if (done)
      return;
  }
  grpc_server_cancel_all_calls(srv->server);
  pthread_mutex_lock(&srv->mu);
  while (!srv->shutdown_done) {
    /* Cancelled calls end quickly unless a handler ignores cancellation;
     * say so periodically rather than hanging silently. */
    gpr_timespec t = gpr_convert_clock_type(perfc__deadline_from_ms(5000),
                                            GPR_CLOCK_REALTIME);
    ts.tv_sec = t.tv_sec;
    ts.tv_nsec = t.tv_nsec;
    if (pthread_cond_timedwait(&srv->cv, &srv->mu, &ts) == ETIMEDOUT)
      perfc_log(PERFC_LOG_WARN,
                "server: still waiting for handlers to return after cancel");
  }
  pthread_mutex_unlock(&srv->mu);
}

void perfc_server_shutdown(perfc_server *srv, int64_t grace_ms) {
  if (srv == NULL)
    return;
  int expected = SRV_STARTED;
  if (!atomic_compare_exchange_strong(&srv->state, &expected, SRV_STOPPING)) {
    if (expected == SRV_NEW)
      atomic_store(&srv->state, SRV_STOPPED);
    return;
  }
  if (grace_ms < 0)
    grace_ms = srv->opts.shutdown_grace_ms;
  /* Before the core stops accepting: health checkers and watchers learn of
   * the shutdown while they can still be answered. */
  for (size_t i = 0; i < srv->nshutdown_hooks; i++)
    if (srv->shutdown_hooks[i].fn != NULL)
      srv->shutdown_hooks[i].fn(srv, srv->shutdown_hooks[i].user_data);
  srv->shutdown_tag.run = on_shutdown_done;
  PERFC_HANDOFF_RELEASE(&srv->shutdown_tag);
  grpc_server_shutdown_and_notify(srv->server, srv->pollers[0].cq,
                                  &srv->shutdown_tag);
  wait_shutdown(srv, grace_ms);
  /* All calls have ended, so no pool job can still touch a call. */
  perfc_pool_free(srv->pool);
  srv->pool = NULL;
  for (unsigned i = 0; i < srv->npollers; i++)
    grpc_completion_queue_shutdown(srv->pollers[i].cq);
  for (unsigned i = 0; i < srv->npollers; i++)
    pthread_join(srv->pollers[i].thread, NULL);
  grpc_server_destroy(srv->server);
  srv->server = NULL;
  for (unsigned i = 0; i < srv->npollers; i++)
    grpc_completion_queue_destroy(srv->pollers[i].cq);
  atomic_store(&srv->state, SRV_STOPPED);
  pthread_mutex_lock(&srv->mu);
  if (srv->wake_fd[1] >= 0) {
    char b = 0;
    ssize_t w = write(srv->wake_fd[1], &b, 1);
    (void)w;
  }
  pthread_mutex_unlock(&srv->mu);
}

/* Signal handlers cannot carry user data, so the pipe of the one
 * perfc_server_run() in progress is process-wide. */
static volatile sig_atomic_t g_sig_fd = -1;
static volatile sig_atomic_t g_sig_seen;

static void on_signal(int sig) {
  int saved = errno;
  g_sig_seen = sig;
  if (g_sig_fd >= 0) {
    unsigned char b = (unsigned char)sig;
    ssize_t w = write(g_sig_fd, &b, 1);
    (void)w;
  }
  errno = saved;
}

int perfc_server_run(perfc_server *srv) {
  if (srv == NULL || atomic_load(&srv->state) != SRV_STARTED)
    return PERFC_ESTATE;
  int fds[2];
  if (pipe(fds) != 0)
    return PERFC_EIO;
  pthread_mutex_lock(&srv->mu);
  srv->wake_fd[0] = fds[0];
  srv->wake_fd[1] = fds[1];
  pthread_mutex_unlock(&srv->mu);
  g_sig_fd = fds[1];
  struct sigaction sa, old_int, old_term;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);

  /* The pipe wakes us at once; the flag and the timeout are a second path
   * for the rare case where the handler ran but its write was lost (seen
   * under valgrind, which emulates signal delivery). */
  g_sig_seen = 0;
  int sig = 0;
  for (;;) {
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    int r = poll(&pfd, 1, 500);
    if (r > 0) {
      unsigned char b = 0;
      if (read(fds[0], &b, 1) == 1)
        sig = b;
      break;
    }
    if (g_sig_seen) {
      sig = g_sig_seen;
      break;
    }
    if (atomic_load(&srv->state) != SRV_STARTED)
      break; /* stopped by perfc_server_shutdown() */
  }
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
  g_sig_fd = -1;
  if (sig != 0) {
    perfc_log(PERFC_LOG_INFO, "server: signal %d, shutting down gracefully",
              sig);
    perfc_server_shutdown(srv, -1);
  }
  pthread_mutex_lock(&srv->mu);
  srv->wake_fd[0] = srv->wake_fd[1] = -1;
  pthread_mutex_unlock(&srv->mu);
  close(fds[0]);
  close(fds[1]);
  return sig;
}

void perfc_server_free(perfc_server *srv) {
  if (srv == NULL)
    return;
  perfc_server_shutdown(srv, -1);
  if (srv->server != NULL) {
    /* Never started. The core still insists on a shutdown before destroy
     * once listeners were added; with nothing in flight it completes at
     * once on a private queue. */
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    perfc_tag done = {NULL};
    grpc_server_shutdown_and_notify(srv->server, cq, &done);
    grpc_event ev;
    do {
      ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                      NULL);
    } while (ev.type == GRPC_OP_COMPLETE && ev.tag != &done);
    grpc_server_destroy(srv->server);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC),
                                      NULL)
               .type != GRPC_QUEUE_SHUTDOWN)
      ;
    grpc_completion_queue_destroy(cq);
  }
  for (size_t i = 0; i < srv->nmethods; i++)
    for (unsigned k = 0; k < srv->nics; k++)
      if (srv->ics[k].method_free && srv->methods[i].ic_state[k] != NULL)
        srv->ics[k].method_free(srv->ics[k].self, srv->methods[i].ic_state[k]);
  for (size_t i = 0; i < srv->nshutdown_hooks; i++) {
    shutdown_hook *h = &srv->shutdown_hooks[i];
    if (h->free_user_data != NULL)
      h->free_user_data(h->user_data);
  }
  free(srv->shutdown_hooks);
  free(srv->start_hooks);
  for (unsigned i = 0; srv->pollers != NULL && i < srv->npollers; i++) {
    free((void *)srv->pollers[i].posted);
  }
  free(srv->pollers);
  free(srv->methods);
  free(srv->services);
  pthread_cond_destroy(&srv->cv);
  pthread_mutex_destroy(&srv->mu);
  free(srv);
  grpc_shutdown();
}

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

size_t perfc_server_service_count(const perfc_server *srv) {
  return srv != NULL ? srv->nservices : 0;
}

const perfc_service_desc *perfc_server_service_at(const perfc_server *srv,
                                                  size_t i) {
  return srv != NULL && i < srv->nservices ? srv->services[i].desc : NULL;
}

int perfc_server_add_start_hook(perfc_server *srv, perfc_server_start_fn fn,
                                void *user_data) {
  if (srv == NULL || fn == NULL)
    return PERFC_EINVAL;
  if (atomic_load(&srv->state) != SRV_NEW)
    return PERFC_ESTATE;
  start_hook *h =
      realloc(srv->start_hooks, (srv->nstart_hooks + 1) * sizeof *h);
  if (h == NULL)
    return PERFC_ENOMEM;
  srv->start_hooks = h;
  srv->start_hooks[srv->nstart_hooks++] =
      (start_hook){.fn = fn, .user_data = user_data};
  return 0;
}

int perfc_server_add_shutdown_hook(perfc_server *srv, perfc_server_shutdown_fn fn,
                                   void *user_data,
                                   void (*free_user_data)(void *)) {
  if (srv == NULL || (fn == NULL && free_user_data == NULL))
    return PERFC_EINVAL;
  if (atomic_load(&srv->state) != SRV_NEW)
    return PERFC_ESTATE;
  shutdown_hook *h =
      realloc(srv->shutdown_hooks, (srv->nshutdown_hooks + 1) * sizeof *h);
  if (h == NULL)
    return PERFC_ENOMEM;
  srv->shutdown_hooks = h;
  srv->shutdown_hooks[srv->nshutdown_hooks++] =
      (shutdown_hook){.fn = fn, .user_data = user_data,
                      .free_user_data = free_user_data};
  return 0;
}

/* ---- call context API ------------------------------------------------------- */

int64_t perfc_ctx_start_ns(const perfc_ctx *ctx) { return ctx->start_ns; }

void *perfc__ctx_call_state(const perfc_ctx *ctx, perfc__ic_before_fn before) {
  if (ctx == NULL || ctx->poller == NULL)
    return NULL;
  const perfc_server *srv = ctx->poller->srv;
  for (unsigned i = 0; i < ctx->ic_entered; i++)
    if (srv->ics[i].before == before)
      return ctx->ic_call[i];
  return NULL;
}

int perfc_ctx_set_raw_response(perfc_ctx *ctx, const ProtobufCMessage *resp,
                                const uint8_t *data, size_t len) {
  if (ctx->method == NULL || ctx->method->desc->kind != PERFC_METHOD_UNARY ||
      resp != ctx->resp)
    return PERFC_ESTATE;
  ctx->raw_response = data;
  ctx->raw_response_len = len;
  return 0;
}

grpc_call *perfc__ctx_call(perfc_ctx *ctx) { return ctx->call; }

perfc_arena *perfc_ctx_arena(perfc_ctx *ctx) { return ctx->arena; }

void *perfc_ctx_alloc(perfc_ctx *ctx, size_t n) {
  return perfc_arena_alloc(ctx->arena, n);
}

const char *perfc_ctx_method(const perfc_ctx *ctx) { return ctx->path; }

const perfc_method_desc *perfc_ctx_method_desc(const perfc_ctx *ctx) {
  return ctx->method ? ctx->method->desc : NULL;
}

const char *perfc_ctx_peer(perfc_ctx *ctx) {
  if (ctx->peer == NULL) {
    char *p = grpc_call_get_peer(ctx->call);
    ctx->peer = perfc_arena_strdup(ctx->arena, p ? p : "unknown");
    gpr_free(p);
  }
  return ctx->peer;
}

int64_t perfc_ctx_remaining_ms(const perfc_ctx *ctx) {
  return perfc__remaining_ms(ctx->deadline);
}

int perfc_ctx_set_deadline_ms(perfc_ctx *ctx, int64_t ms) {
  if (ctx == NULL || ms < 0)
    return PERFC_EINVAL;
  if (perfc__remaining_ms(ctx->deadline) <= ms)
    return 0;
  ctx->deadline = perfc__deadline_from_ms(ms);
  ctx->deadline_capped = 1;
  return 1;
}

int perfc_ctx_cancelled(const perfc_ctx *ctx) {
  /* A streaming call learns of its close on its own queue; a handler that
   * is between operations polls it here. */
  if (ctx->stream != NULL && ctx->stream == tls_stream)
    call_cq_run((perfc_ctx *)ctx, 0);
  return cancel_seen(ctx);
}

size_t perfc_ctx_metadata_count(const perfc_ctx *ctx) {
  return ctx->request_md.count;
}

int perfc_ctx_metadata_at(const perfc_ctx *ctx, size_t i, perfc_slice *key,
                          perfc_slice *value) {
  if (i >= ctx->request_md.count)
    return PERFC_EINVAL;
  const grpc_metadata *md = &ctx->request_md.metadata[i];
  if (key != NULL)
    *key = (perfc_slice){GRPC_SLICE_START_PTR(md->key),
                         GRPC_SLICE_LENGTH(md->key)};
  if (value != NULL)
    *value = (perfc_slice){GRPC_SLICE_START_PTR(md->value),
                           GRPC_SLICE_LENGTH(md->value)};
  return 0;
}

const char *perfc_ctx_metadata_get(perfc_ctx *ctx, const char *key,
                                   size_t *len) {
  size_t klen = strlen(key);
  for (size_t i = 0; i < ctx->request_md.count; i++) {
    const grpc_metadata *md = &ctx->request_md.metadata[i];
    if (GRPC_SLICE_LENGTH(md->key) == klen &&
        memcmp(GRPC_SLICE_START_PTR(md->key), key, klen) == 0) {
      size_t vlen = GRPC_SLICE_LENGTH(md->value);
      if (len != NULL)
        *len = vlen;
      return perfc_arena_strndup(
          ctx->arena, (const char *)GRPC_SLICE_START_PTR(md->value), vlen);
    }
  }
  return NULL;
}

static int md_push(perfc_ctx *ctx, md_list *l, const char *key,
                   const char *value, size_t len);

static int md_add(perfc_ctx *ctx, md_list *l, const char *key,
                  const char *value, size_t len) {
  if (value != NULL && len == 0)
    len = strlen(value);
  int rc = perfc__check_metadata(key, value, len);
  if (rc != 0)
    return rc;
  return md_push(ctx, l, key, value, len);
}

/* Appends without checking the key: only for entries perfc itself adds. */
static int md_push(perfc_ctx *ctx, md_list *l, const char *key,
                   const char *value, size_t len) {
  if (l->count == l->cap) {
    size_t cap = l->cap ? l->cap * 2 : 4;
    grpc_metadata *items = perfc_arena_alloc(ctx->arena, cap * sizeof *items);
    if (items == NULL)
      return PERFC_ENOMEM;
    if (l->count)
      memcpy(items, l->items, l->count * sizeof *items);
    l->items = items;
    l->cap = cap;
  }
  /* The arena outlives the call's batches, so static slices over arena
   * copies are safe and cost no refcounting. */
  char *k = perfc_arena_strdup(ctx->arena, key);
  char *v = perfc_arena_strndup(ctx->arena, value, len);
  if (k == NULL || v == NULL)
    return PERFC_ENOMEM;
  grpc_metadata *md = &l->items[l->count++];
  memset(md, 0, sizeof *md);
  md->key = grpc_slice_from_static_string(k);
  md->value = grpc_slice_from_static_buffer(v, len);
  return 0;
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
  grpc_compression_algorithm algo;
  if (ctx == NULL || name == NULL || perfc__compression_parse(name, &algo) != 0)
    return PERFC_EINVAL;
  if (ctx->initial_md_sent) {
    /* The encoding went out with the headers; what is left per message is
     * the core's GRPC_WRITE_NO_COMPRESS flag, i.e. on or off. */
    grpc_compression_algorithm sent = ctx->comp_set ? ctx->comp_algo
                                                    : ctx->poller->srv->calgo;
    if (algo == GRPC_COMPRESS_NONE)
      ctx->comp_off = 1;
    else if (algo == sent)
      ctx->comp_off = 0;
    else
      return PERFC_ESTATE;
    return 0;
  }
  /* The core's compression filter takes this key off the outgoing headers
   * and compresses with it instead of the channel default (the server side
   * of what perfc_call_opts.compression does on the client); it never
   * reaches the wire. The reserved grpc- prefix is why md_add() is not used. */
  const char *wire = NULL;
  grpc_compression_algorithm_name(algo, &wire);
  if (ctx->comp_md_slot != 0) {
    grpc_metadata *md = &ctx->initial_md.items[ctx->comp_md_slot - 1];
    md->value = grpc_slice_from_static_string(wire);
  } else {
    int rc = md_push(ctx, &ctx->initial_md, "grpc-internal-encoding-request",
                     wire, strlen(wire));
    if (rc != 0)
      return rc;
    ctx->comp_md_slot = ctx->initial_md.count;
  }
  ctx->comp_set = 1;
  ctx->comp_algo = algo;
  ctx->comp_off = algo == GRPC_COMPRESS_NONE;
  return 0;
}

/* grpc_call_test_only_get_message_flags() is the core's only way to tell
 * whether a received message was compressed (its compression filter
 * inflates the message and records that in the call's flags). It is an
 * internal C++ symbol, not part of the C API, so it is looked up at run time
 * and its absence reported rather than linked against. */
int perfc_ctx_message_compressed(const perfc_ctx *ctx) {
  if (ctx == NULL || ctx->call == NULL)
    return PERFC_EINVAL;
  pthread_once(&msg_flags_once, msg_flags_lookup);
  if (msg_flags == NULL)
    return PERFC_ENOENT;
  uint32_t f = ctx->stream != NULL && ctx->stream->msg_flags_set
                   ? ctx->stream->msg_flags
                   : msg_flags(ctx->call);
  return (f & (PERFC_WRITE_INTERNAL_COMPRESS | PERFC_WRITE_INTERNAL_WAS_COMPRESSED)) != 0;
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

perfc_status_code perfc_ctx_fail(perfc_ctx *ctx, int err) {
  perfc_status_code code = perfc_status_from_error(err);
  if (code != PERFC_STATUS_OK)
    perfc_ctx_error(ctx, code, "%s", perfc_last_error());
  return code;
}
