/*
 * perfc/client.h — channels and synchronous unary calls.
 *
 * A perfc_channel holds one or more grpc channels to one target, each made
 * distinct so that N really means N TCP connections; calls pick one
 * round-robin. Generated stubs (`pkg__svc__method__call()`) wrap
 * perfc_channel_unary() with the method's types. A handler on an event loop
 * calls without blocking through perfc_channel_unary_on_loop() (the reply
 * comes back on its loop).
 *
 * Room: runtime public headers. A channel is thread-safe: share one across
 * threads.
 */
#ifndef PERFC_CLIENT_H
#define PERFC_CLIENT_H

#include "perfc/arena.h"
#include "perfc/common.h"
#include "perfc/interceptor.h"
#include "perfc/loop.h"
#include "perfc/server.h"
#include "perfc/service.h"
#include "perfc/status.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_channel perfc_channel;

/** Client keepalive is off by default (grpc's default); keepalive_enabled
 *  turns it on. Its interval then defaults to 30 s: three times perfc's
 *  server minimum (min_ping_interval_ms, 10 s), well under the idle
 *  timeouts of NATs and L4 load balancers (minutes), and a ping every 30 s
 *  costs nothing. A server must permit it: grpc's own servers allow one
 *  ping per 5 min while no data flows. */
#define PERFC_DEFAULT_CLIENT_KEEPALIVE_TIME_MS 30000
/** One connection per channel: what grpc does; more only where one TCP
 *  connection's throughput or one server poller is the limit. */
#define PERFC_DEFAULT_CHANNEL_CONNECTIONS 1
/** Calls without their own timeout get 10 s: a call with no deadline can
 *  hang forever on a dead peer, the most common gRPC production mistake. */
#define PERFC_DEFAULT_CALL_TIMEOUT_MS 10000
/** Reconnect backoff: grpc's defaults (1 s initial, 120 s max) are slow for
 *  services restarting in a cluster; 100 ms to 10 s recovers in seconds
 *  without hammering a dead peer. */
#define PERFC_DEFAULT_MIN_RECONNECT_BACKOFF_MS 100
#define PERFC_DEFAULT_MAX_RECONNECT_BACKOFF_MS 10000
/** Time one connection attempt (TCP, TLS, HTTP/2 SETTINGS) may take: grpc's
 *  MIN_CONNECT_TIMEOUT. Shorter fails real handshakes on a loaded host. */
#define PERFC_DEFAULT_CONNECT_TIMEOUT_MS 20000
/** The largest duration or message size the core accepts: its channel
 *  arguments are ints (milliseconds, bytes). Larger values are refused. */
#define PERFC_CHANNEL_MAX_INT_ARG 2147483647

/** Channel options. Zero in any field means its default (so `= {0}` plus
 *  designated initializers works); features off by default are turned on
 *  by an `_enabled` field, limits on by default turned off by a `no_`
 *  field, never by a magic value. perfc_channel_new() copies the struct,
 *  replaces zeros by the PERFC_DEFAULT_* values and refuses what does not
 *  hold (PERFC_EINVAL, the field named in perfc_last_error()). */
typedef struct perfc_channel_opts {
  /** Distinct TCP connections; 0 = PERFC_DEFAULT_CHANNEL_CONNECTIONS. */
  unsigned connections;
  /** Client keepalive pings (off by default, grpc's default): a ping after
   *  keepalive_time_ms without reads, the connection dropped when its ack
   *  takes longer than keepalive_timeout_ms. */
  bool keepalive_enabled;
  /** Ping interval with keepalive_enabled; 0 = default (30 s,
   *  PERFC_DEFAULT_CLIENT_KEEPALIVE_TIME_MS). perfc_channel_opts_init()
   *  leaves it 0: an interval without keepalive_enabled (how pings were
   *  turned on before that field existed) is refused, not ignored. */
  int64_t keepalive_time_ms;
  int64_t keepalive_timeout_ms;  /**< 0 = default (20 s) */
  /** Ping idle connections too (no calls running); needs keepalive_enabled
   *  and a server that permits it. */
  bool keepalive_permit_without_calls;
  /** Largest response accepted, also after perfc inflates a compressed
   *  one; 0 = default (4 MiB), at most PERFC_CHANNEL_MAX_INT_ARG. */
  size_t max_recv_message_bytes;
  /** No limit on responses (max_recv_message_bytes is then unused). */
  bool no_recv_message_limit;
  /** Largest request sent; 0 = default (4 MiB), at most
   *  PERFC_CHANNEL_MAX_INT_ARG. */
  size_t max_send_message_bytes;
  /** No limit on requests (max_send_message_bytes is then unused). */
  bool no_send_message_limit;
  /** Deadline of calls that set no timeout_ms and whose method has no
   *  (perfc.method).timeout; 0 = default (10 s). */
  int64_t default_timeout_ms;
  /** Such calls get no deadline at all (default_timeout_ms is then
   *  unused). A parent call's deadline still applies. */
  bool no_default_timeout;
  int64_t min_reconnect_backoff_ms; /**< first reconnect delay; 0 = default */
  int64_t max_reconnect_backoff_ms; /**< 0 = default; not below the min */
  /** "pick_first" (NULL) or "round_robin" (a service config
   *  loadBalancingConfig): round_robin spreads calls over every address the
   *  resolver returns (dns:/// with several A records, a headless
   *  Kubernetes Service, an ipv4: list). An xds: target's policy comes
   *  from the control plane instead. */
  const char *lb_policy;
  const char *service_config_json; /**< extra service config; borrowed/copied */
  /** Interceptors run around every call, in this order (`after` reversed).
   *  The array is copied; each interceptor is borrowed and must outlive the
   *  channel. At most PERFC_MAX_INTERCEPTORS. */
  const perfc_client_interceptor *const *interceptors;
  size_t interceptor_count;
  /** Services whose methods marked `(perfc.method).idempotent` are retried
   *  on UNAVAILABLE with exponential backoff and jitter, within the call's
   *  deadline (grpc's retry policy through the service config). Borrowed
   *  during perfc_channel_new() only. Ignored when service_config_json is
   *  set: then that config decides. */
  const perfc_service_desc *const *retry_services;
  size_t retry_service_count;
  /** Attempts per call for those methods, first included; 0 = default (4),
   *  1 = one attempt, no retry. grpc caps it at 5. */
  unsigned retry_max_attempts;
  /** Default compression for requests: "gzip", "deflate", or NULL/"identity"
   *  for none; a call's own perfc_call_opts.compression wins. Responses are
   *  accepted compressed or not. Borrowed during perfc_channel_new() only. */
  const char *compression;
  /** How long one connection attempt may take before it counts as failed;
   *  0 = default (20 s). */
  int64_t connect_timeout_ms;
} perfc_channel_opts;

/** Default attempts for idempotent methods: the first try plus three
 *  retries rides out a replica restarting without amplifying an outage. */
#define PERFC_DEFAULT_RETRY_MAX_ATTEMPTS 4

/** Fills `o` with the PERFC_DEFAULT_* values (keepalive_time_ms stays 0:
 *  see there). */
PERFC_API void perfc_channel_opts_init(perfc_channel_opts *o);

/** Creates a plaintext channel to `target` ("127.0.0.1:50051",
 *  "dns:///svc:443", "ipv4:10.0.0.1:80,10.0.0.2:80", "xds:///svc";
 *  docs/scaling.md). Connects lazily. `opts` may be NULL; strings in it are
 *  copied. Calls grpc_init. Returns 0, PERFC_EINVAL (a refused option,
 *  named in perfc_last_error(); for an xds: target, no xDS bootstrap: the
 *  message names GRPC_XDS_BOOTSTRAP and GRPC_XDS_BOOTSTRAP_CONFIG, or the
 *  bootstrap file that cannot be read) or PERFC_ENOMEM; free with
 *  perfc_channel_free().
 *  perfc_channel_new_tls() in perfc/tls.h makes an encrypted channel. */
PERFC_API int perfc_channel_new(perfc_channel **out, const char *target,
                                const perfc_channel_opts *opts);

/** Frees the channel; calls in flight on other threads must have returned.
 *  NULL is a no-op. */
PERFC_API void perfc_channel_free(perfc_channel *ch);

/** One request metadata entry. `value_len` 0 means strlen(value). Keys are
 *  lower-case ASCII; binary values need a "-bin" key suffix. */
typedef struct perfc_metadata {
  const char *key;
  const char *value;
  size_t value_len;
} perfc_metadata;

/** One call's options; zero in every field is the default, so `= {0}` or
 *  NULL works. A call refuses options that do not hold: the synchronous
 *  call with INVALID_ARGUMENT naming the field, the others with
 *  PERFC_EINVAL and the same text in perfc_last_error(). */
typedef struct perfc_call_opts {
  /** Deadline relative to now; 0 = the method's (perfc.method).timeout
   *  when it has one, else the channel default. Negative is refused. */
  int64_t timeout_ms;
  /** No deadline of this call's own (neither the method's nor the
   *  channel's); a parent's deadline still applies. With a timeout_ms it is
   *  refused. */
  bool no_timeout;
  const perfc_metadata *metadata; /**< borrowed for the call */
  size_t metadata_count;
  /** Where the response is unpacked. NULL: with protobuf-c's default
   *  allocator; free it with protobuf_c_message_free_unpacked(resp, NULL). */
  perfc_arena *arena;
  /** Wait for the channel to become ready instead of failing fast with
   *  UNAVAILABLE while it connects. */
  bool wait_for_ready;
  /** The server call this call is made on behalf of (a handler's ctx), or
   *  NULL. The call inherits its deadline (the earlier of the two wins) and
   *  is cancelled when the parent is. Only valid while the handler runs. */
  perfc_ctx *parent;
  /** This call's request compression: "gzip", "deflate", "identity" (none,
   *  overriding a channel default), or NULL = the channel's default. An
   *  unknown name fails the call with INVALID_ARGUMENT. Borrowed. */
  const char *compression;
} perfc_call_opts;

/**
 * Calls a unary method and blocks until it ends.
 * `req` is borrowed. On OK, `*resp` receives the response (see
 * perfc_call_opts.arena for who frees it); otherwise `*resp` is NULL.
 * `status` (may be NULL) receives code and message; release it with
 * perfc_status_reset(). Local failures are reported as statuses too
 * (INTERNAL for a response that does not parse, INVALID_ARGUMENT for bad
 * metadata). `opts` may be NULL.
 */
PERFC_API perfc_status_code perfc_channel_unary(perfc_channel *ch,
                                                const perfc_method_desc *m,
                                                const ProtobufCMessage *req,
                                                ProtobufCMessage **resp,
                                                const perfc_call_opts *opts,
                                                perfc_status *status);

/* ---- asynchronous unary calls ---------------------------------------------- */

/** Completion of an asynchronous unary call. `resp` is the response on OK
 *  (NULL otherwise), valid only during the callback: copy what you keep.
 *  `message` is the status message or NULL, also valid during the callback.
 *  Runs on one of the channel's completion-queue threads; must not block. */
typedef void (*perfc_unary_cb)(perfc_status_code code, const char *message,
                               const ProtobufCMessage *resp, void *user_data);

/**
 * Starts a unary call and returns at once; `cb` runs exactly once when it
 * ends. `req` and `opts` are borrowed only for the duration of this call
 * (the request is serialised before it returns; opts.arena is ignored).
 * Returns 0, or PERFC_EINVAL / PERFC_ENOMEM / PERFC_ESHUTDOWN (channel being
 * freed), in which case `cb` is never called. The channel must not be freed
 * from inside a callback; perfc_channel_free() waits for outstanding calls.
 */
PERFC_API int perfc_channel_unary_async(perfc_channel *ch,
                                        const perfc_method_desc *m,
                                        const ProtobufCMessage *req,
                                        const perfc_call_opts *opts,
                                        perfc_unary_cb cb, void *user_data);

/* ---- unary calls completed on an event loop --------------------------------- */

/** What a unary call ended with, handed to a perfc_call_done_fn. Borrowed
 *  for the callback: `message`, `headers` and `trailers` (and `response`,
 *  unless the call's perfc_call_opts.arena holds it) are gone when it
 *  returns; copy what you keep. */
typedef struct perfc_call_result {
  perfc_status_code code;
  /** The status message, or NULL. Local failures have one too (a response
   *  that does not parse: INTERNAL; a refusal by a client interceptor; the
   *  loop stopping before the reply: CANCELLED). */
  const char *message;
  /** The response on OK (cast it to the method's output type), else NULL.
   *  Unpacked on the loop into perfc_call_opts.arena when the call set one
   *  (then it lives as long as that arena), else into memory valid during
   *  the callback only. */
  const ProtobufCMessage *response;
  /** Response headers and trailers as the server sent them (without the
   *  grpc-status/grpc-message entries): NUL-terminated keys, values of
   *  `value_len` bytes (NUL-terminated too, binary values may hold NULs). */
  const perfc_metadata *headers;
  size_t header_count;
  const perfc_metadata *trailers;
  size_t trailer_count;
} perfc_call_result;

/** Completion of perfc_channel_unary_on_loop(); runs on the call's loop
 *  thread, exactly once. It may start more calls, finish a deferred call
 *  (perfc/deferred.h) and must not block. */
typedef void (*perfc_call_done_fn)(const perfc_call_result *r, void *user_data);

/**
 * Starts a unary call from a loop thread and returns at once; `cb` runs
 * later on that same loop with the result: no thread waits for the reply.
 * Made for handlers on the h2 transport's loops (an INLINE handler that
 * deferred its call, perfc/deferred.h) and for their continuations; code
 * on the worker pool uses perfc_channel_unary() or
 * perfc_channel_unary_async().
 *
 * `loop` must be the calling thread's loop (perfc_loop_current(); NULL
 * means that one). `req` and `opts` are borrowed for this call only, except
 * opts.arena, which is used on the loop when the reply comes and must live
 * until `cb` returned (a deferred call's perfc_ctx_arena() does when the
 * call is finished from `cb`). Deadlines, metadata, opts.parent (deadline
 * propagation and cancellation with the parent call), compression and the
 * channel's client interceptors (tracing context, metrics) work as for
 * perfc_channel_unary(); an interceptor's refusal is reported through
 * `cb`, on the loop, never from inside this function.
 *
 * The reply crosses threads once: the channel's completion-queue thread
 * queues it for the loop and wakes it (one eventfd write for all the
 * replies that arrive before the loop runs); the response is unpacked and
 * `cb` runs on the loop.
 *
 * If the loop stops before the reply (perfc_loop_run() returns; an h2
 * server's loop when the server stops), the call is cancelled and `cb`
 * runs during the loop's stop, on its thread, with CANCELLED: a callback
 * never runs on a loop that is gone, nor twice. Calls started from such a
 * callback are refused (PERFC_ESHUTDOWN).
 *
 * Returns 0 (`cb` will run exactly once), PERFC_EINVAL (no loop on this
 * thread, `loop` not this thread's, a NULL argument, a request of another
 * type, bad options or metadata), PERFC_ENOMEM, PERFC_EIO (no eventfd),
 * PERFC_ETHREAD or PERFC_ESHUTDOWN (channel being freed, loop stopping);
 * then `cb` never runs; perfc_last_error() says why. The channel waits for
 * these calls in perfc_channel_free(): free it after the loops that use it
 * stopped, or once no call is outstanding, never from one of its loops
 * while calls are.
 */
PERFC_API int perfc_channel_unary_on_loop(perfc_channel *ch,
                                          const perfc_method_desc *m,
                                          const ProtobufCMessage *req,
                                          const perfc_call_opts *opts,
                                          perfc_loop *loop,
                                          perfc_call_done_fn cb,
                                          void *user_data);

/* ---- streaming calls -------------------------------------------------------- */

typedef struct perfc_client_stream perfc_client_stream;

/**
 * Opens a streaming call (client, server or bidi streaming). For a
 * server-streaming method `req` is the single request, sent and half-closed
 * at once; for the other kinds pass NULL and use perfc_client_stream_send().
 * A unary method may be opened too, when the caller needs the response
 * metadata (perfc_client_stream_metadata()): it behaves as a server stream
 * whose one response perfc_client_stream_recv() returns.
 * `opts` is borrowed for this call only (opts.arena is ignored: received
 * messages live in the stream's own memory). Returns 0 with `*out` set, or
 * PERFC_EINVAL / PERFC_ENOMEM. Even when the call then fails (server down,
 * deadline), the stream exists: perfc_client_stream_finish() tells why.
 * Free it with perfc_client_stream_free().
 */
PERFC_API int perfc_channel_stream_open(perfc_channel *ch,
                                        const perfc_method_desc *m,
                                        const ProtobufCMessage *req,
                                        const perfc_call_opts *opts,
                                        perfc_client_stream **out);

/** Sends one message; blocks until the transport accepted it (flow
 *  control). Returns 0, PERFC_ESTATE (wrong kind or already half-closed) or
 *  PERFC_ESHUTDOWN (the call ended; perfc_client_stream_finish() says why).
 *  One sender thread at a time; may run concurrently with a receiver. */
PERFC_API int perfc_client_stream_send(perfc_client_stream *s,
                                       const ProtobufCMessage *msg);

/** Like perfc_client_stream_send(), for a message that more follow at
 *  once (a burst): it may stay in the connection's write buffer (the core's
 *  GRPC_WRITE_BUFFER_HINT, up to 64 KiB) until this stream's next
 *  perfc_client_stream_send(), perfc_client_stream_close_send() or
 *  perfc_client_stream_finish() writes it with everything before it, one
 *  system call for the burst instead of one per message. It returns at
 *  once unless the buffer is full (then it waits as a send does). The
 *  promise is the caller's: a receive does not write the buffer, so end
 *  each burst with one of those three before waiting for the replies it
 *  asks for. Same returns and threading as perfc_client_stream_send(). */
PERFC_API int perfc_client_stream_send_more(perfc_client_stream *s,
                                            const ProtobufCMessage *msg);

/** Whether later perfc_client_stream_send() messages are compressed with
 *  the call's encoding (perfc_call_opts.compression or the channel's
 *  default): 1, the default, or 0 to send them uncompressed. The encoding
 *  is fixed when the call starts; this switches single messages off and on
 *  (grpc's per-message GRPC_WRITE_NO_COMPRESS). Returns 0 or PERFC_EINVAL. */
PERFC_API int perfc_client_stream_compress(perfc_client_stream *s, int enable);

/** Half-closes: tells the server no more messages follow. Idempotent. */
PERFC_API int perfc_client_stream_close_send(perfc_client_stream *s);

/** Receives the next message. Returns 1 with `*msg` set (valid until the
 *  next receive on this stream or its free), 0 when the server finished
 *  sending, or PERFC_ESHUTDOWN / PERFC_EPARSE / PERFC_ETOOBIG (a compressed
 *  message inflating past max_recv_message_bytes: the call is then
 *  cancelled with RESOURCE_EXHAUSTED). One receiver thread at a time. */
PERFC_API int perfc_client_stream_recv(perfc_client_stream *s,
                                       ProtobufCMessage **msg);

/** Waits for the call's status (half-closing first if still open) and
 *  returns it; `status` may be NULL. Unread messages are discarded. Call
 *  once; the stream stays valid for metadata lookups until freed. For a
 *  client-streaming method, `*resp` (may be NULL) receives the single
 *  response on OK, valid until the stream is freed. */
PERFC_API perfc_status_code perfc_client_stream_finish(perfc_client_stream *s,
                                                       ProtobufCMessage **resp,
                                                       perfc_status *status);

/** Cancels the call; pending and later operations fail with
 *  PERFC_ESHUTDOWN and finish reports CANCELLED. Thread-safe. */
PERFC_API void perfc_client_stream_cancel(perfc_client_stream *s);

/** Response metadata by key (lower-case): initial metadata once a message
 *  or the status arrived, trailing metadata after finish. Returns the first
 *  value (borrowed, valid until free) and its length, or NULL. */
PERFC_API const char *perfc_client_stream_metadata(perfc_client_stream *s,
                                                   const char *key,
                                                   size_t *len);

/** Cancels the call if it has not finished and frees everything. NULL is a
 *  no-op. */
PERFC_API void perfc_client_stream_free(perfc_client_stream *s);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_CLIENT_H */
