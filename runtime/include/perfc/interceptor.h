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
 * call (a poller or a worker) and must not block.
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
   *  `*call_state` is a per-call slot for this interceptor, NULL at first.
   *  Optional. */
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
