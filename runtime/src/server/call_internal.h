/*
 * server/call_internal.h — what the call layer's sources share: the server
 * and method structs, dispatch, finishing, interceptor hooks. Transports do
 * not include this (they see server/transport_internal.h only).
 *
 * Room: runtime/src/server private header.
 */
#ifndef PERFC_SERVER_CALL_INTERNAL_H
#define PERFC_SERVER_CALL_INTERNAL_H

#include "perfc/interceptor.h"
#include "perfc/pool.h"
#include "perfc/server.h"
#include "server/transport_internal.h"

#include <pthread.h>
#include <stdatomic.h>

struct perfc__method {
  const perfc_method_desc *desc;
  const perfc_service_desc *service;
  const void *handlers;
  void *user_data;
  size_t index; /* in perfc_server.methods */
  perfc_executor executor;
  int has_handler;
  void *ic_state[PERFC_MAX_INTERCEPTORS];
  /* perfc_server_set_stream_callbacks(): the streams of this method run
   * on the transport's loop with these callbacks (stream.c). */
  int loop;
  perfc_stream_callbacks loop_cb;
  void *loop_ud;
};

enum { SRV_NEW = 0, SRV_STARTED, SRV_STOPPING, SRV_STOPPED };

typedef struct perfc__service_entry {
  const perfc_service_desc *desc;
} perfc__service_entry;

typedef struct perfc__start_hook {
  perfc_server_start_fn fn;
  void *user_data;
} perfc__start_hook;

typedef struct perfc__shutdown_hook {
  perfc_server_shutdown_fn fn; /* may be NULL: only free_user_data */
  void *user_data;
  void (*free_user_data)(void *);
} perfc__shutdown_hook;

struct perfc_server {
  perfc_server_opts opts;
  /* The transport carrying the calls (transport_internal.h). */
  const perfc__transport_ops *tops;
  void *transport;
  perfc__method **methods; /* each its own allocation: never moves */
  size_t nmethods;
  perfc__service_entry *services;
  size_t nservices;
  perfc__start_hook *start_hooks;
  size_t nstart_hooks;
  perfc__shutdown_hook *shutdown_hooks;
  size_t nshutdown_hooks;
  perfc_pool *pool;
  int nlisteners;
  int ports[16]; /* the first 16 bound ports, for the connections gauge */
  perfc_pool_observer_fn pool_observer;
  void *pool_observer_ud;
  perfc_server_interceptor ics[PERFC_MAX_INTERCEPTORS];
  unsigned nics;
  atomic_int state;

  pthread_mutex_t mu; /* serialises shutdown() with perfc_server_run() */
  int wake_fd[2];     /* wakes perfc_server_run() when shutdown() is called */
  perfc__compress calgo; /* opts.compression, parsed */
  size_t recv_max;       /* opts.max_recv_message_bytes as a bound */
  atomic_int grace_over; /* the shutdown grace ended (perfc__cancel_running) */
  /* Client calls made under this server's calls and registered for their
   * cancel (perfc__ctx_watch), under call.c's watch lock. */
  struct perfc__cancel_watch *watches;
  /* Loop streams started and not finished (stream.c): the end of the
   * shutdown grace cancels them on their loops, as it does calls on
   * workers (perfc__cancel_running). */
  atomic_size_t loop_streams;
  /* Deferred calls not finished yet (server/deferred.c): shutdown waits
   * for them, since a transport may consider a call over (the C core, once
   * its client is gone) while its continuation will still finish it. */
  atomic_uint deferred_live;
  pthread_mutex_t deferred_mu;
  pthread_cond_t deferred_cv;
};

/* The up-calls every transport gets (call.c). */
extern const perfc__call_upcalls perfc__call_up;

/* Ends a call: the grace check, interceptors' `after`, then the transport's
 * finish. Consumes the call layer's hold on ctx. */
void perfc__call_finish(perfc_ctx *ctx);
void perfc__call_finish_with(perfc_ctx *ctx, perfc_status_code code,
                             const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Ends a unary call with `code` and the response in ctx->resp (or the raw
 * response): the send-size check, then perfc__call_finish(). */
void perfc__call_unary_complete(perfc_ctx *ctx, perfc_status_code code);
/* A unary handler that deferred its call returned (server/deferred.c):
 * the call ends now if its finish came meanwhile, else at the finish. */
void perfc__deferred_handler_returned(perfc_ctx *ctx);
/* A deferred call goes to the worker pool after all
 * (perfc_deferred_run_handler): the method's handler runs there and its
 * return ends the call; a full queue ends it RESOURCE_EXHAUSTED. */
void perfc__call_to_pool(perfc_ctx *ctx);
/* Shutdown: waits until every deferred call of `srv` was finished, saying
 * so every 5 s (a handle nobody finishes holds the shutdown, as a handler
 * that never returns does). */
void perfc__deferred_wait(perfc_server *srv);
/* A handler that ran past a server-imposed deadline answers
 * DEADLINE_EXCEEDED. */
void perfc__call_apply_deadline_cap(perfc_ctx *ctx);
/* Decodes `len` bytes at `data` as the method's request into the arena
 * `a`. NULL after setting *code and ctx->message (INVALID_ARGUMENT). */
ProtobufCMessage *perfc__call_decode(perfc_ctx *ctx, perfc_arena *a,
                                     const uint8_t *data, size_t len,
                                     const char *what);
/* cancel_seen: the client went away, the deadline passed, or the grace
 * ended for a call on a worker. */
int perfc__call_cancel_seen(const perfc_ctx *ctx);
/* At the end of the shutdown grace: every call a worker still runs sees
 * itself cancelled. Returns how many calls are queued for or on workers. */
size_t perfc__cancel_running(perfc_server *srv);
/* The `cancel` up-call: the transport saw the call cancelled. */
void perfc__call_cancel(perfc_ctx *ctx);

/* Interceptors (interceptor.c). Runs the `before` hooks (from index
 * `from` on: a chain resumed after a deferred decision);
 * PERFC_STATUS_DEFERRED when one deferred. */
perfc_status_code perfc__ic_run_before(perfc_ctx *ctx);
perfc_status_code perfc__ic_run_before_from(perfc_ctx *ctx, unsigned from);
/* An interceptor's pending decision was resumed with ctx->ic_code (call.c),
 * on the call's loop: the chain goes on, or the call ends. */
void perfc__ic_resumed(perfc_ctx *ctx);
void perfc__ic_run_after(perfc_ctx *ctx);
void perfc__ic_run_message(perfc_ctx *ctx, int sent);
void perfc__ic_methods_init(perfc_server *srv);
void perfc__ic_methods_free(perfc_server *srv);

/* perfc_server_listen() and perfc_server_listen_tls() (server_tls.c). */
int perfc__server_listen(perfc_server *srv, const char *addr,
                         const perfc_tls_opts *tls, int *bound_port);

/* Streams (stream.c): a streaming call on its worker, from the first
 * operation to the release of its context. */
void perfc__stream_run(perfc_ctx *ctx);
/* The stream whose handler runs on this thread, if any. */
perfc_stream *perfc__stream_current(void);
/* A loop stream's start, in `arrived` on the transport's thread (the
 * interceptors' `before` ran): ops->loop_begin, the handler's on_start. */
void perfc__stream_loop_start(perfc_ctx *ctx);
/* Whether `s` is a loop stream (perfc_ctx_set_deadline_ms tells its
 * transport). */
int perfc__stream_is_loop(const perfc_stream *s);
/* The loop_* up-calls (server/transport_internal.h). */
int perfc__stream_loop_message(perfc_ctx *ctx, const uint8_t *data, size_t len);
void perfc__stream_loop_half_close(perfc_ctx *ctx);
void perfc__stream_loop_writable(perfc_ctx *ctx);
void perfc__stream_loop_cancel(perfc_ctx *ctx, perfc_status_code code);

/* CLOCK_MONOTONIC in nanoseconds. */
int64_t perfc__now_ns(void);

#endif
