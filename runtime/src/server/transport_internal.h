/*
 * server/transport_internal.h — the seam between a call and the transport
 * that carries it.
 *
 * Room: runtime/src/server private header, included by the call layer
 * (server/) and by the transports that carry its calls (transport/core/;
 * transport/h2/ through its adapter). docs/design.md, "The seam", draws a
 * call's path through both sides.
 *
 * The contract in one paragraph. A transport owns sockets, HTTP/2, gRPC
 * framing and the memory of each call: its per-call struct embeds a
 * `perfc_ctx` (first member, so the ops below recover it with a cast) whose
 * fields the call layer owns, and it recycles that memory (with the arena)
 * however it likes. When a call arrives the transport fills the "set by the
 * transport" fields and makes the `arrived` up-call; the call layer runs
 * interceptors, decodes, runs the handler inline or on the pool, and ends
 * the call with `ops->finish` (or `ops->refuse` before a streaming handler
 * ran), after which it never touches the context again. The transport never
 * calls into server/ except through the up-calls given to it at creation
 * (`perfc__call_upcalls`): calls go downward, the transport answers upward
 * through function pointers, as the h2 transport's own callbacks do.
 *
 * Costs: one indirect call per operation; no allocation and no lock is
 * added to a call by the seam itself.
 */
#ifndef PERFC_SERVER_TRANSPORT_INTERNAL_H
#define PERFC_SERVER_TRANSPORT_INTERNAL_H

#include "perfc/arena.h"
#include "perfc/http_codec.h"
#include "perfc/interceptor.h"
#include "perfc/server.h"
#include "perfc/stream.h"
#include "perfc/tls.h"
#include "perfc/trace_context.h"

#include <protobuf-c/protobuf-c.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A method as the call layer registered it (server/call_internal.h); the
 * transport only carries the pointer from add_method to each call. */
typedef struct perfc__method perfc__method;
typedef struct perfc__transport_ops perfc__transport_ops;

/* Response compression, numbered as the C core numbers it (so the core
 * transport converts by cast) and named as grpc-encoding names it. */
typedef enum perfc__compress {
  PERFC__COMPRESS_NONE = 0,
  PERFC__COMPRESS_DEFLATE = 1,
  PERFC__COMPRESS_GZIP = 2
} perfc__compress;

/* "gzip", "deflate", "identity" (and NULL or "" = identity). Returns 0, or
 * -1 for any other name. Stream compression names are not offered: grpcio
 * and grpc-go peers do not speak them. */
static inline int perfc__compress_parse(const char *name, perfc__compress *out) {
  if (name == NULL || name[0] == '\0' || strcmp(name, "identity") == 0)
    *out = PERFC__COMPRESS_NONE;
  else if (strcmp(name, "gzip") == 0)
    *out = PERFC__COMPRESS_GZIP;
  else if (strcmp(name, "deflate") == 0)
    *out = PERFC__COMPRESS_DEFLATE;
  else
    return -1;
  return 0;
}

static inline const char *perfc__compress_name(perfc__compress c) {
  return c == PERFC__COMPRESS_GZIP      ? "gzip"
         : c == PERFC__COMPRESS_DEFLATE ? "deflate"
                                        : "identity";
}

/* Response metadata the handler added; strings in the call's arena. */
typedef struct perfc__md_entry {
  const char *key;
  const char *value;
  size_t len;
} perfc__md_entry;

typedef struct perfc__md_list {
  perfc__md_entry *items;
  size_t count, cap;
} perfc__md_list;

/* One outgoing message: an encoded `bytes` buffer, or `msg` to be packed by
 * the transport straight into its own buffer (no intermediate copy);
 * `len` is the packed size either way. */
typedef struct perfc__payload {
  const ProtobufCMessage *msg;
  const uint8_t *bytes;
  size_t len;
} perfc__payload;

/* Flags of ops->stream_send. */
enum {
  /* More replies follow soon: the transport may keep this one back and
   * write it with a later one (the C core's GRPC_WRITE_BUFFER_HINT; h2's
   * PERFC__H2_SEND_MORE). Written at the latest at stream_flush, before
   * the transport blocks for a receive, and before the status. */
  PERFC__SEND_MORE = 1 << 0,
  /* Send this message uncompressed whatever the call's encoding. */
  PERFC__SEND_NO_COMPRESS = 1 << 1,
  /* A loop stream's send (below): never block; PERFC_EFULL when the
   * stream holds its high-water mark unsent (nothing queued), and the
   * transport makes the loop_writable up-call once it drained. */
  PERFC__SEND_NO_WAIT = 1 << 2
};

/* The call context: a handler's `perfc_ctx`. */
struct perfc_ctx {
  /* Set by the transport when the call arrives. */
  const perfc__transport_ops *ops;
  perfc_server *srv;
  perfc__method *method; /* NULL: a method nobody registered */
  perfc_arena *arena;    /* reset by the transport for every call */
  const char *path;
  int64_t start_ns;    /* CLOCK_MONOTONIC, when the transport matched it */
  int64_t deadline_ns; /* CLOCK_MONOTONIC; INT64_MAX: none */
  perfc_protocol protocol; /* 0 (gRPC) unless the transport says HTTP/JSON */
  /* Set (release) by the transport once it knows the client went away or
   * the call was cancelled; read by perfc_ctx_cancelled(). */
  atomic_int cancelled_flag;

  /* Owned by the call layer; read by the transport's finish/sends. */
  perfc_status_code code;
  const char *message;
  /* A request message refused on the wire (a transport's request/recv op
   * sets both): the status the call ends with whatever the handler says. */
  perfc_status_code wire_code;
  const char *wire_message;
  /* The unary (or client-stream) response when code is OK: sent by
   * ops->finish. `response.msg` or `.bytes` set, `.len` its size. */
  int has_response;
  perfc__payload response;
  ProtobufCMessage *req, *resp; /* unary: decoded once, in the arena */
  const uint8_t *raw_response;  /* perfc_ctx_set_raw_response() */
  size_t raw_response_len;
  perfc__md_list initial_md, trailing_md;
  /* Set by the transport when the response headers went out. */
  int initial_md_sent;
  /* perfc_ctx_set_compression(): the encoding chosen for this call's
   * responses (when comp_set), and whether later messages go out
   * uncompressed. Read by the transport with the headers / each send. */
  int comp_set;
  perfc__compress comp_algo;
  int comp_off;
  /* perfc_ctx_set_deadline_ms() lowered deadline_ns below the client's. */
  int deadline_capped;
  /* Handed to a worker: the shutdown grace's end cancels it. */
  int run_listed;
  /* Client calls a handler made under this call (perfc_call_opts.parent)
   * still registered for its cancel (server/call.c, perfc__ctx_watch): 0
   * lets a cancel or a finish skip the registry's lock. */
  atomic_uint watched;
  /* perfc_call_defer() (server/deferred.c): the handle's token, 0 while
   * the call is not deferred; in_handler while a unary handler runs. */
  uint64_t deferred;
  /* The trace context current when the call was deferred (the server
   * span's): carried to the worker perfc_deferred_run_handler() hands the
   * call to, whose thread otherwise works for no span. */
  perfc_trace_current defer_tc;
  int in_handler;
  int close_watched; /* perfc_call_defer() asked for watch_close */
  /* perfc_ic_defer() (server/deferred.c): `deferred` holds an
   * interceptor's pending decision, not a handler's; ic_code is the status
   * its resume gave, carried to the call's loop (ops->post). */
  int ic_deferred;
  /* perfc_ic_defer() on a client or bidi stream with loop callbacks: the
   * transport holds the messages (and the half-close) that come before
   * the stream starts; perfc__stream_loop_start asks ops->loop_resume for
   * them once on_start ran. */
  int ic_hold_msgs;
  perfc_status_code ic_code;
  perfc_stream *stream; /* streaming methods only, in the arena */
  unsigned ic_entered;  /* interceptors whose `before` ran */
  void *ic_call[PERFC_MAX_INTERCEPTORS];
};

/* What the call layer asks of a transport. Per-call ops take the context
 * the transport created; unless said otherwise they run on the thread that
 * runs the call's handler (a transport thread for inline calls, a worker
 * for pool calls and streams). */
struct perfc__transport_ops {
  const char *name; /* "core", "h2" */

  /* ---- server lifecycle (the application's thread) ---- */
  /* Listens on `addr`; `tls` NULL: plaintext. Before start. Returns 0,
   * PERFC_EBIND, PERFC_ETLS, ... with the reason logged/recorded. */
  int (*listen)(void *t, const char *addr, const perfc_tls_opts *tls,
                int *bound_port);
  /* Registers method `index` (dense from 0) before start; `m` is what the
   * transport puts in ctx->method for its calls. */
  int (*add_method)(void *t, size_t index, const perfc_method_desc *d,
                    perfc__method *m);
  /* Starts serving. Returns 0, PERFC_ETHREAD, PERFC_ENOMEM. */
  int (*start)(void *t);
  /* Stops accepting calls; those in flight go on. */
  void (*shutdown_begin)(void *t);
  /* Waits up to `timeout_ms` (< 0: without end) for every call to end.
   * Returns 1 when they did. */
  int (*wait_calls)(void *t, int64_t timeout_ms);
  /* Cancels every call still running (the end of the grace). */
  void (*cancel_all)(void *t);
  /* After every call ended and the worker pool is gone: stops the
   * transport's threads. */
  void (*stop)(void *t);
  void (*free)(void *t);
  /* Optional (NULL: the transport serves gRPC only): serve HTTP/JSON
   * through `codec` (perfc/http_codec.h; copied, user_data borrowed).
   * Before start. 0, PERFC_ESTATE (set already), PERFC_ENOMEM. */
  int (*set_http_codec)(void *t, const perfc_http_codec *codec,
                        void *user_data);

  /* ---- per call ---- */
  /* Ends the call: the headers (with ctx->initial_md) unless sent, the
   * response when code is OK and has_response, then ctx->code,
   * ctx->message and ctx->trailing_md. Consumes the call layer's hold on
   * ctx: the context may be recycled before this returns. */
  void (*finish)(perfc_ctx *ctx);
  /* finish() for a streaming call whose handler never ran (refused by an
   * interceptor, no worker, no handler), on the thread that dispatched it. */
  void (*refuse)(perfc_ctx *ctx);
  /* The call is about to be handed to a worker: the transport watches for
   * the client going away from now on (sets cancelled_flag). */
  void (*watch_close)(perfc_ctx *ctx);
  /* The single request message (unary, server streaming), made contiguous
   * (and inflated) in the call's arena or borrowed from the transport
   * until the call ends. Returns OK, INTERNAL when no complete message
   * arrived, or the status a refused message ends the call with (then
   * ctx->wire_code/wire_message are set). */
  perfc_status_code (*request)(perfc_ctx *ctx, const uint8_t **data,
                               size_t *len);
  /* 1 if the message last handed to the handler arrived compressed, 0 if
   * not, PERFC_ENOENT when the transport cannot tell. */
  int (*message_compressed)(const perfc_ctx *ctx);
  /* "ipv4:127.0.0.1:5000"; in the arena. */
  const char *(*peer)(perfc_ctx *ctx);
  /* Request metadata, borrowed from the call. */
  size_t (*md_count)(const perfc_ctx *ctx);
  void (*md_at)(const perfc_ctx *ctx, size_t i, perfc_slice *key,
                perfc_slice *value);

  /* ---- streams, on the handler's worker ---- */
  /* Before the handler: the transport's per-stream state. 0 or PERFC_ENOMEM. */
  int (*stream_begin)(perfc_ctx *ctx);
  /* The next client message into `a` (or borrowed until the next call).
   * Blocks; writes anything held (PERFC__SEND_MORE) before it blocks, and
   * then updates *now_ns. Returns 1 (a message), 0 (the client
   * half-closed), PERFC_ESHUTDOWN (cancelled), or PERFC_ETOOBIG /
   * PERFC_EPARSE with ctx->wire_code/wire_message set. */
  int (*stream_recv)(perfc_ctx *ctx, perfc_arena *a, const uint8_t **data,
                     size_t *len, int64_t *now_ns);
  /* Non-blocking: 1 when the next client message (not the half-close) is
   * already here, so the handler will send again at once. */
  int (*stream_recv_ready)(perfc_ctx *ctx);
  /* Sends one message (PERFC__SEND_*). Blocks while the transport holds
   * as much as it may for this stream (flow control). 0 or
   * PERFC_ESHUTDOWN. */
  int (*stream_send)(perfc_ctx *ctx, const perfc__payload *p, unsigned flags);
  /* Writes whatever is held; with `wait`, returns once every send
   * completed. 0 or PERFC_ESHUTDOWN. */
  int (*stream_flush)(perfc_ctx *ctx, int wait);
  /* Lets the transport learn of a cancel while the handler is between
   * operations (perfc_ctx_cancelled on the handler's thread). */
  void (*stream_poll)(perfc_ctx *ctx);
  /* After finish(), on the same worker: waits for the transport to be done
   * with the call and releases it. */
  void (*stream_end)(perfc_ctx *ctx);

  /* ---- loop streams: handlers on the transport's own thread ---- */
  /* NULL when the transport has no loop that may run handlers (core):
   * perfc_server_set_stream_callbacks() then refuses. */
  /* In `arrived`, for a streaming call whose handler runs on the
   * transport's thread (perfc/stream.h's loop callbacks): from now on the
   * transport makes the loop_* up-calls instead of queueing messages for
   * a worker, and applies ctx->deadline_ns (loop_deadline). 0 or
   * PERFC_ENOMEM. */
  int (*loop_begin)(perfc_ctx *ctx);
  /* ctx->deadline_ns was lowered (perfc_ctx_set_deadline_ms on a loop
   * stream): the transport ends the call at it (loop_cancel up-call). */
  void (*loop_deadline)(perfc_ctx *ctx);
  /* Delivers again the message loop_message refused with PERFC_EFULL
   * (at once, from this call) and reopens the stream's window. */
  void (*loop_resume)(perfc_ctx *ctx);
  /* 1 on the thread that makes the call's loop up-calls. */
  int (*loop_here)(const perfc_ctx *ctx);

  /* ---- interceptors' deferred decisions ---- */
  /* NULL when the transport has no loop that owns the call (core): the
   * call layer then goes on on the thread that resumed. Runs fn(ctx) on
   * the loop that owns the call, soon (any thread; the call layer holds
   * ctx, and may post once at a time). No allocation: the task lives in
   * the transport's per-call struct. */
  void (*post)(perfc_ctx *ctx, void (*fn)(perfc_ctx *ctx));
};

/* What a transport calls in the call layer (given at creation). */
typedef struct perfc__call_upcalls {
  /* A call arrived (ctx filled as above); the call layer now holds it until
   * ops->finish/refuse. On the transport's thread. */
  void (*arrived)(perfc_ctx *ctx);
  /* perfc_ctx_cancelled() without polling the transport: the client went
   * away, the deadline passed, or the shutdown grace ended for a call on
   * a worker. */
  int (*cancelled)(const perfc_ctx *ctx);
  /* The transport learned the call is over for its client (a reset, the
   * connection lost, its deadline) while the call layer may still hold it:
   * marks it cancelled (what `cancelled` then reports) and cancels the
   * client calls its handler made under it (perfc_call_opts.parent). Any
   * thread; ctx must still be held by the transport. */
  void (*cancel)(perfc_ctx *ctx);

  /* Loop streams (after ops->loop_begin), all on the transport's thread,
   * until the call layer's finish; none after it. */
  /* A complete (inflated) request message, borrowed for the call. 0, or
   * PERFC_EFULL: not taken, the transport keeps it (window shut) until
   * ops->loop_resume. */
  int (*loop_message)(perfc_ctx *ctx, const uint8_t *data, size_t len);
  /* The client half-closed after its last message. */
  void (*loop_half_close)(perfc_ctx *ctx);
  /* A send that answered PERFC_EFULL may be made again. */
  void (*loop_writable)(perfc_ctx *ctx);
  /* The call is over for its client before the call layer finished it (a
   * reset, the connection, `code` DEADLINE_EXCEEDED for a deadline,
   * CANCELLED otherwise), or the shutdown grace ended (`cancelled` says
   * so): the call layer tells the handler and finishes the call. */
  void (*loop_cancel)(perfc_ctx *ctx, perfc_status_code code);
} perfc__call_upcalls;

/* The C core transport (transport/core/core_server.c). `opts` are the
 * server's (already resolved); `srv` is put in every ctx. Returns 0,
 * PERFC_EINVAL, PERFC_ENOMEM or PERFC_EGRPC. */
int perfc__core_transport_new(void **out, const perfc_server_opts *opts,
                              const perfc__call_upcalls *up, perfc_server *srv);
extern const perfc__transport_ops perfc__core_transport_ops;

/* perfc's own nghttp2 transport under the seam (transport/h2/h2_seam.c):
 * unary calls and the three streaming kinds. */
int perfc__h2_transport_new(void **out, const perfc_server_opts *opts,
                            const perfc__call_upcalls *up, perfc_server *srv);
extern const perfc__transport_ops perfc__h2_transport_ops;

/* Core transport test hook behind perfc__server_posted_requests(). */
int perfc__core_posted_requests(void *t, size_t method_index,
                                unsigned poller_index, unsigned *posted,
                                unsigned *depth);

/* CLOCK_MONOTONIC nanoseconds until `deadline_ns`, as whole ms (rounded
 * down, 0 when passed); INT64_MAX for none. */
static inline int64_t perfc__deadline_left_ms(int64_t deadline_ns,
                                              int64_t now_ns) {
  if (deadline_ns == INT64_MAX)
    return INT64_MAX;
  int64_t left = deadline_ns - now_ns;
  return left <= 0 ? 0 : left / 1000000;
}

#endif
