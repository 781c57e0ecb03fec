/*
 * client_internal.h — the channel's insides, shared by client.c (channels,
 * synchronous and asynchronous unary calls) and client_stream.c. Never
 * installed.
 *
 * Room: runtime/src/client private header.
 */
#ifndef PERFC_CLIENT_INTERNAL_H
#define PERFC_CLIENT_INTERNAL_H

#include "perfc/client.h"
#include "core/clock_internal.h"
#include "core/tag_internal.h"
#include "transport/core/grpc_internal.h"
#include "server/call_watch_internal.h" /* the parent call's cancel registry */

#include <pthread.h>
#include <stdatomic.h>

struct perfc_channel {
  unsigned n;
  grpc_channel **chans;
  atomic_uint next;
  int64_t default_timeout_ms;
  char *target;
  const perfc_client_interceptor *ics[PERFC_MAX_INTERCEPTORS];
  size_t nics;
  /* max_recv_message_bytes as a bound for perfc's own inflation of
   * compressed responses (perfc__byte_buffer_flatten). */
  size_t recv_max;

  /* Asynchronous calls: one next-type queue and poller thread per core,
   * created on the first async call so purely synchronous users pay
   * nothing. Calls pick a poller round-robin. */
  pthread_mutex_t async_mu;
  pthread_cond_t async_cv; /* signalled when outstanding drops to zero */
  struct perfc__async_poller *pollers;
  unsigned npollers;
  atomic_uint next_poller;
  unsigned outstanding; /* async calls started and not yet called back */
  int closing;
};

/* One async completion queue, its thread, and the arena its completions
 * unpack responses into (reset per completion: only this thread uses it). */
typedef struct perfc__async_poller {
  perfc_channel *ch;
  grpc_completion_queue *cq;
  pthread_t thread;
  perfc_arena *arena;
} perfc__async_poller;

/* Builds core metadata from the call options (plus the per-call
 * compression override, so *count may exceed opts->metadata_count) into `stack` (or a malloc'd
 * array when larger, returned in *out). With `copy`, values are copied into
 * refcounted slices, for batches that outlive the caller's strings. Release
 * with perfc__call_metadata_free(). On PERFC_EINVAL `err` says which key. */
int perfc__call_metadata(const perfc_call_opts *opts, grpc_metadata *stack,
                         size_t stack_len, int copy, grpc_metadata **out,
                         size_t *count, char *err, size_t errlen);
void perfc__call_metadata_free(grpc_metadata *md, size_t n,
                               grpc_metadata *stack);

/* Creates a call on the next connection of the pool: deadline from the
 * options (or the channel default), parent for propagation. */
/* A channel over `creds` (borrowed); `name_override` is the TLS host name
 * to check, or NULL. client.c; perfc_channel_new_tls() uses it too. */
int perfc__channel_new(perfc_channel **out, const char *target,
                       const perfc_channel_opts *opts,
                       grpc_channel_credentials *creds,
                       const char *name_override);

/* With opts->parent, `watch` (the caller's, living as long as the call) is
 * registered for the parent's cancel: perfc__ctx_unwatch(watch) before the
 * call is unreffed (a no-op without a parent). */
grpc_call *perfc__create_call(perfc_channel *ch, const perfc_method_desc *m,
                              grpc_completion_queue *cq,
                              const perfc_call_opts *opts,
                              perfc__cancel_watch *watch);

/* SEND_INITIAL_METADATA flags for the options (wait-for-ready). */
uint32_t perfc__initial_md_flags(const perfc_call_opts *opts);

/* Client interceptors: `before` in order, stopping at a refusal (returned);
 * `*entered` tells how many ran. `after` in reverse for those. */
perfc_status_code perfc__ic_before(perfc_channel *ch, const perfc_method_desc *m,
                                   void **state, size_t *entered);
void perfc__ic_message(perfc_channel *ch, const perfc_method_desc *m,
                       void **state, size_t entered, int sent);
void perfc__ic_after(perfc_channel *ch, const perfc_method_desc *m,
                     void **state, size_t entered, perfc_status_code code,
                     int64_t elapsed_ns);

/* Client interceptors' outgoing metadata (perfc_client_interceptor.
 * outgoing_metadata) after the caller's: returns `opts` when none adds any,
 * else `tmp`, a copy of *opts whose metadata array is `buf` (`buflen`
 * entries) or a malloc'd one; release with perfc__ic_outgoing_free(). */
const perfc_call_opts *perfc__ic_outgoing(perfc_channel *ch,
                                          const perfc_method_desc *m,
                                          const perfc_call_opts *opts,
                                          void **state, size_t entered,
                                          perfc_call_opts *tmp,
                                          perfc_metadata *buf, size_t buflen);
void perfc__ic_outgoing_free(const perfc_call_opts *eff,
                             const perfc_call_opts *opts, perfc_metadata *buf);
/* The same for calls whose core metadata (*md, *nmd, built with copies
 * from `opts` over `stack`) exists already: rebuilt with the additions. */
void perfc__ic_outgoing_md(perfc_channel *ch, const perfc_method_desc *m,
                           const perfc_call_opts *opts, void **state,
                           size_t entered, grpc_metadata **md, size_t *nmd,
                           grpc_metadata *stack);

#endif
