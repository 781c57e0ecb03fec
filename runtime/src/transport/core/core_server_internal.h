/*
 * transport/core/core_server_internal.h — the C core server transport's
 * structures, shared by core_server.c (queues, pollers, requests, unary
 * batches) and core_stream.c (a streaming call's own queue). Private to
 * this folder.
 *
 * Room: runtime/src/transport/core private header.
 */
#ifndef PERFC_TRANSPORT_CORE_SERVER_INTERNAL_H
#define PERFC_TRANSPORT_CORE_SERVER_INTERNAL_H

#include "server/server_internal.h"
#include "server/transport_internal.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <pthread.h>
#include <stdatomic.h>

typedef struct poller poller;
typedef struct core_stream core_stream;
typedef struct core_server core_server;

/* One call on the C core: the call layer's context first (the ops get a
 * perfc_ctx * and cast back), then what the core needs. */
typedef struct ccall {
  perfc_ctx ctx;
  perfc_tag request_tag; /* fires when the core matched a call to us */
  perfc_tag batch_tag;   /* fires when the final batch completed */
  perfc_tag close_tag;   /* pool calls and streams: the client closed */
  atomic_int refs;
  poller *poller;
  size_t midx; /* method index; SIZE_MAX: the generic catch-all */
  struct ccall *next_free;
  /* Streaming methods only: the private queue the call is bound to,
   * created on first use and kept while the context is recycled. */
  grpc_completion_queue *call_cq;

  grpc_call *call;
  gpr_timespec deadline;
  grpc_metadata_array request_md;
  grpc_call_details details; /* generic requests only */
  grpc_byte_buffer *payload;
  grpc_byte_buffer *response;
  grpc_slice details_slice;
  int has_details;
  const char *peer; /* grpc_call_get_peer(), copied into the arena once */
  int counted;      /* in its poller's running count for method (rearm()) */
  int cancelled;    /* written by the core for RECV_CLOSE_ON_SERVER */
  int close_posted; /* RECV_CLOSE_ON_SERVER already in flight */
  core_stream *cs;  /* streaming calls on their worker, in the arena */
} ccall;

static inline ccall *ccall_of(const perfc_ctx *ctx) {
  return (ccall *)(void *)ctx;
}

/* A registered method as the core knows it. */
typedef struct core_method {
  const perfc_method_desc *desc;
  perfc__method *m; /* the call layer's, put in ctx->method */
  void *registered; /* grpc_server_register_method handle */
} core_method;

struct poller {
  core_server *cs;
  grpc_completion_queue *cq;
  pthread_t thread;
  unsigned index;
  ccall *free_list; /* touched only by this poller's thread */
  unsigned free_count;
  /* Contexts released on other threads (streaming calls end on their
   * worker): pushed lock-free, taken all at once when free_list is empty. */
  _Atomic(ccall *) returned;
  /* Per method, see rearm(): requests posted whose match this poller has
   * not yet taken, and how many it keeps posted; calls it matched minus
   * those released on its own thread (these three written by the poller
   * only; atomic so tests and workers may read them); and calls it matched
   * that were released on another thread (a worker), added there. Calls
   * running = running - ended_elsewhere: an inline call, matched and
   * released here, touches no shared counter. */
  _Atomic unsigned *posted, *depth, *running, *ended_elsewhere;
  /* Contexts handed out (a request posted, a call running) minus those
   * put back on this poller's thread (written by the poller only), and
   * those put back on another thread (added there). core_stop waits for
   * out - back_elsewhere == 0 before it shuts the queues down. */
  _Atomic unsigned out, back_elsewhere;
};

struct core_server {
  grpc_server *server;
  perfc_server_opts opts;
  const perfc__call_upcalls *up;
  perfc_server *srv;
  unsigned npollers;
  poller *pollers;
  core_method *methods;
  size_t nmethods, methods_cap;
  grpc_compression_algorithm calgo;
  size_t recv_max;
  atomic_int accepting;
  pthread_mutex_t mu; /* guards shutdown_done and go */
  pthread_cond_t cv;
  int shutdown_done;
  int go; /* set once the server started: pollers may post requests */
  /* Pollers that posted their first requests; core_start returns once all
   * did, so no shutdown can overlap those posts (under cs->mu). */
  unsigned nready;
  int started, stopped;
  perfc_tag shutdown_tag;
};

/* Drops the caller's reference; the last one gives everything back to the
 * core and recycles the context. */
void perfc__ccall_release(ccall *c);
/* Posts RECV_CLOSE_ON_SERVER with its own reference (cancelled_flag). */
void perfc__ccall_watch_close(ccall *c);
/* ops->finish (core_server.c). */
void perfc__core_finish(perfc_ctx *ctx);
/* Reads a request message the core handed over into `a` after the checks
 * the core skips with its decompression off (core_server.c). */
perfc_status_code perfc__ccall_read_message(ccall *c, grpc_byte_buffer *bb,
                                            uint32_t flags, int flags_known,
                                            perfc_arena *a,
                                            const uint8_t **data, size_t *len);
/* grpc_call_test_only_get_message_flags(), looked up at run time; NULL
 * when this libgrpc lacks it. */
typedef uint32_t (*perfc__msg_flags_fn)(grpc_call *);
perfc__msg_flags_fn perfc__core_msg_flags(void);
/* Fills `op` with SEND_INITIAL_METADATA the first time a call sends
 * anything. Returns the number of ops filled (0 or 1). */
size_t perfc__ccall_initial_md(ccall *c, grpc_op *op);
/* The core's compressed-message flags (grpc's internal write flags). */
#define PERFC_WRITE_INTERNAL_COMPRESS 0x80000000u
#define PERFC_WRITE_INTERNAL_WAS_COMPRESSED 0x40000000u

/* The stream ops (core_stream.c). */
int perfc__core_stream_begin(perfc_ctx *ctx);
int perfc__core_stream_recv(perfc_ctx *ctx, perfc_arena *a,
                            const uint8_t **data, size_t *len,
                            int64_t *now_ns);
int perfc__core_stream_recv_ready(perfc_ctx *ctx);
int perfc__core_stream_send(perfc_ctx *ctx, const perfc__payload *p,
                            unsigned flags);
int perfc__core_stream_flush(perfc_ctx *ctx, int wait);
void perfc__core_stream_poll(perfc_ctx *ctx);
void perfc__core_stream_end(perfc_ctx *ctx);
/* The flags of the message last given to a stream's handler; *known = 0
 * when no message was received on the stream yet. */
uint32_t perfc__core_stream_msg_flags(const ccall *c, int *known);
/* A streaming call's private queue (non-polling). */
grpc_completion_queue *perfc__core_call_cq_new(void);
/* Ends a streaming call refused before its handler (ops->refuse). */
void perfc__core_refuse_stream(perfc_ctx *ctx);

/* A byte buffer of `p` (packed straight into a core slice). */
grpc_byte_buffer *perfc__core_payload_buffer(const perfc__payload *p);

#endif
