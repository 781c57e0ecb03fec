/*
 * perfc/server.h — the gRPC server and the per-call context handlers see.
 *
 * A server owns N completion queues with one poller thread each (N defaults
 * to the number of cores), pre-posts K requests per registered method per
 * queue, and runs each handler inline on its poller or on the bounded worker
 * pool, per method. See docs/design.md for the request flow.
 *
 * Room: runtime public headers. Server functions may be called from any one
 * thread at a time; ctx functions only from the thread running the handler.
 */
#ifndef PERFC_SERVER_H
#define PERFC_SERVER_H

#include "perfc/arena.h"
#include "perfc/common.h"
#include "perfc/service.h"
#include "perfc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_server perfc_server;

/* Defaults, each with its reason (docs/configuration.md repeats these). */
/** Most requests pre-posted per method per queue, so a burst of new calls
 *  finds them posted. Each method starts with 2 and deepens only while its
 *  calls outnumber them: in Debian's core, every posted request of a method
 *  nobody calls makes every completion dearer (docs/design.md). */
#define PERFC_DEFAULT_REQUESTS_PER_METHOD 32
/** Keepalive ping after 2 h idle: grpc's server default; servers rarely need
 *  to probe, clients do. */
#define PERFC_DEFAULT_SERVER_KEEPALIVE_TIME_MS (2 * 60 * 60 * 1000)
/** Drop the connection when a ping gets no ack in 20 s (grpc default). */
#define PERFC_DEFAULT_KEEPALIVE_TIMEOUT_MS 20000
/** Accept client pings as often as every 10 s: grpc-go's smallest allowed
 *  client keepalive time; stricter (grpc's 5 min) makes clients that ping
 *  every 10-60 s get GOAWAY "too_many_pings", a classic outage. */
#define PERFC_DEFAULT_MIN_PING_INTERVAL_MS 10000
/** Concurrent streams per connection. The core's default is unlimited, which
 *  lets one client exhaust the server; 1024 keeps h2load/-m 32 style loads
 *  and large client pools far from the limit. */
#define PERFC_DEFAULT_MAX_CONCURRENT_STREAMS 1024
/** Largest request accepted: 4 MiB, grpc's default everywhere. */
#define PERFC_DEFAULT_MAX_RECV_MESSAGE_BYTES (4 * 1024 * 1024)
/** Largest response sent: 4 MiB, symmetric with receive, so a handler bug
 *  building a huge reply fails loudly instead of flooding the client. */
#define PERFC_DEFAULT_MAX_SEND_MESSAGE_BYTES (4 * 1024 * 1024)
/** Shutdown grace: in-flight calls get 5 s to finish, then are cancelled;
 *  below Kubernetes' default 30 s termination grace period. */
#define PERFC_DEFAULT_SHUTDOWN_GRACE_MS 5000
/** Memory the transport may use for all connections together (the core's
 *  grpc_resource_quota): 1 GiB. Within it the core shrinks its receive
 *  windows under pressure and refuses what it cannot account for; what it
 *  does bound on gRPC 1.51 is measured in docs/reliability.md (#13, 3). */
#define PERFC_DEFAULT_MEMORY_BUDGET_BYTES ((size_t)1 << 30)
/** Largest request header block (GRPC_ARG_MAX_METADATA_SIZE): 8 KiB, the
 *  core's own default, stated here so it is visible and configurable. The
 *  core enforces it only once the client acknowledged the server's
 *  SETTINGS (docs/reliability.md, #13, 4). */
#define PERFC_DEFAULT_MAX_METADATA_BYTES ((size_t)8 * 1024)

/** The largest perfc_server_opts.busy_poll_us (10 ms): beyond it a loop
 *  would spin longer than a scheduler tick for nothing. */
#define PERFC_MAX_BUSY_POLL_US ((int64_t)10000)

/** The transport that carries a server's calls (docs/design.md, "The
 *  seam"). */
typedef enum perfc_server_transport {
  /** The default: H2 in this release. */
  PERFC_TRANSPORT_DEFAULT = 0,
  /** The gRPC C core: the compatibility path (every feature, every test
   *  suite runs on it too). */
  PERFC_TRANSPORT_CORE = 1,
  /** perfc's own nghttp2 transport (transport/h2): unary and streaming
   *  calls; the default. */
  PERFC_TRANSPORT_H2 = 2
} perfc_server_transport;

typedef struct perfc_server_opts {
  /** Completion queues and poller threads; 0 = number of online cores. */
  unsigned threads;
  /** Most requests pre-posted per method per queue (each method starts
   *  with 2 and deepens under load, see above); 0 = default. */
  unsigned requests_per_method;
  /** Where handlers run when their method says DEFAULT. Zero = INLINE. */
  perfc_executor default_executor;
  /** Worker pool size and queue bound (the concurrency limit for POOL
   *  methods); 0 = perfc_pool defaults. */
  unsigned pool_threads;
  unsigned pool_queue;

  int64_t keepalive_time_ms;       /**< 0 = default */
  int64_t keepalive_timeout_ms;    /**< 0 = default */
  /** Keepalive on connections with no calls: the server pings them too
   *  (and drops those whose ack does not come), and accepts client pings
   *  on them. */
  int keepalive_permit_without_calls;
  int64_t min_ping_interval_ms;    /**< 0 = default */
  unsigned max_concurrent_streams; /**< 0 = default */
  int max_recv_message_bytes;      /**< 0 = default, -1 = unlimited */
  int max_send_message_bytes;      /**< 0 = default, -1 = unlimited */
  /** GOAWAY to a connection that had no call for max_connection_idle_ms;
   *  off by default (grpc's). Enabled needs a positive duration; a
   *  duration without enabled is refused (PERFC_EINVAL), not ignored. */
  int max_connection_idle_enabled;
  int64_t max_connection_idle_ms;
  /** GOAWAY to a connection older than max_connection_age_ms (clients
   *  rebalance onto new replicas); off by default, same rules as idle. */
  int max_connection_age_enabled;
  int64_t max_connection_age_ms;
  /** After the age GOAWAY, calls in flight get this long before the
   *  connection is closed; 0 = the default, which is no limit (grpc's). */
  int64_t max_connection_age_grace_ms;
  int64_t shutdown_grace_ms;       /**< 0 = default */
  /** Memory budget of the transport (a grpc_resource_quota shared by every
   *  connection of this server); 0 = default (1 GiB). */
  size_t memory_budget_bytes;
  /** Largest header block a client may send (GRPC_ARG_MAX_METADATA_SIZE);
   *  larger ones fail the call with RESOURCE_EXHAUSTED. 0 = default
   *  (8 KiB); at most 2^31 - 1. */
  size_t max_metadata_bytes;
  /** Compression for responses: "gzip", "deflate", or NULL/"identity" for
   *  none. Requests are accepted compressed or not, whatever this says.
   *  Borrowed during perfc_server_new() only. */
  const char *compression;
  /** 0 (default): poller threads run under SCHED_BATCH, so data arriving
   *  for a stream does not preempt the worker that is mid-operation on the
   *  same connection; the poller reads when the worker blocks, in larger
   *  batches (one stream: 17-23 % less server CPU per message, see
   *  docs/benchmarks-more.md). Fair CPU sharing is unchanged. 1: pollers keep
   *  the normal policy (wake-up preemption), e.g. when workers run long
   *  CPU-bound handlers and new calls must be picked up at once. */
  int poller_wakeup_preemption;
  /** 0 (default): the worker pool's threads run under SCHED_BATCH too, so
   *  a poller handing calls to workers is not preempted by each worker it
   *  wakes: it hands over what the network brought, then the workers run.
   *  Unary calls on the pool on one core: 0.09 instead of 2.7 context
   *  switches per call, about twice the calls per second (see
   *  docs/benchmarks-more.md). The cost is the same as for pollers: a
   *  worker woken (a call for it, or its database answering) while other
   *  threads run waits for their time slice. 1: workers keep the normal
   *  policy. */
  int worker_wakeup_preemption;
  /** 0 (default): a streaming handler that answers each message of a
   *  bidirectional stream while the next one is already waiting has its
   *  replies written together: a reply is held back while the handler
   *  turns the next message around, if it took less than 20 µs per
   *  message so far, for at most 32 replies (earlier ones wait in the
   *  core's write buffer, GRPC_WRITE_BUFFER_HINT); everything held is
   *  written as soon as the handler sends a reply with no request waiting,
   *  waits for a message, receives the end of the requests, or returns.
   *  One write (a system call, and a read
   *  for the client) then carries several replies, as grpc-go's writer
   *  does. The cost: a reply can wait for the handler's next turn-around,
   *  so a handler that was fast and then blocks outside perfc (sleep, its
   *  own I/O) before its next stream call delays one reply by that long.
   *  1: every perfc_stream_send() is written at once. Messages sent with
   *  perfc_stream_send_more() are held either way: the handler asked. */
  int stream_flush_every_send;
  /** TCP transmit zerocopy (Linux MSG_ZEROCOPY, the core's
   *  GRPC_ARG_TCP_TX_ZEROCOPY_ENABLED) for writes of 16 KiB and more:
   *  0 = off (default), 1 = on. While it is off perfc also tells the core to
   *  keep no zerocopy send records: gRPC 1.51 allocates four per connection
   *  (about 1.3 KiB) whether zerocopy is on or not. */
  int tcp_tx_zerocopy;
  /** The C core's channelz nodes for the server and each connection (read
   *  with grpc_channelz_get_server() and friends; perfc serves no channelz
   *  service): 0 = off (default), 1 = on. Off saves about 0.4 KiB per
   *  connection and the per-call channelz counters. */
  int channelz;
  /** Which transport carries the calls; 0 = PERFC_TRANSPORT_DEFAULT. On h2,
   *  the options that name C core mechanisms (requests_per_method,
   *  tcp_tx_zerocopy, channelz) do nothing; memory_budget_bytes (when not
   *  the default) becomes h2's per-server receive budget and
   *  poller_wakeup_preemption sets its loop threads' policy
   *  (docs/configuration.md). */
  perfc_server_transport transport;
  /** h2 only: busy polling, in microseconds (as Linux's SO_BUSY_POLL). A
   *  loop whose last wait returned events polls for up to this long
   *  before it sleeps, so a client that answers within it (a bidi
   *  stream's next messages) finds the thread awake instead of waking an
   *  idle CPU. It trades CPU for latency: a loop with steady traffic stays
   *  busy up to this long after each burst. 0 (default) = off; at most
   *  PERFC_MAX_BUSY_POLL_US. */
  int64_t busy_poll_us;
} perfc_server_opts;

/** Fills `o` with the defaults above. */
PERFC_API void perfc_server_opts_init(perfc_server_opts *o);

/** Creates a server (not yet listening). `opts` may be NULL. Calls grpc_init.
 *  The caller frees it with perfc_server_free(). Returns 0, PERFC_EINVAL
 *  (bad executor or compression name), PERFC_ENOMEM or PERFC_EGRPC. */
PERFC_API int perfc_server_new(perfc_server **out,
                               const perfc_server_opts *opts);

/** Adds a plaintext listening address (perfc_server_listen_tls() in
 *  perfc/tls.h adds an encrypted one) ("127.0.0.1:0", "[::]:50051"). When
 *  `bound_port` is not NULL it receives the port actually bound (useful with
 *  port 0). Before perfc_server_start() only. Returns 0, PERFC_EBIND or
 *  PERFC_ESTATE. */
PERFC_API int perfc_server_listen(perfc_server *srv, const char *addr,
                                  int *bound_port);

/** Registers a service. `desc` and `handlers` are borrowed and must outlive
 *  the server (generated code passes static tables); `user_data` is passed to
 *  every handler. Methods whose handler pointer is NULL answer UNIMPLEMENTED
 *  and are logged once here. Before perfc_server_start() only. Returns 0,
 *  PERFC_EEXIST (service already added), PERFC_ESTATE or PERFC_EINVAL. */
PERFC_API int perfc_server_add_service(perfc_server *srv,
                                       const perfc_service_desc *desc,
                                       const void *handlers, void *user_data);

/** Number of services added with perfc_server_add_service(), for modules
 *  that describe the server (reflection). */
PERFC_API size_t perfc_server_service_count(const perfc_server *srv);

/** The `i`-th service added (in the order added), borrowed; NULL when `i`
 *  is out of range. */
PERFC_API const perfc_service_desc *
perfc_server_service_at(const perfc_server *srv, size_t i);

/** A start hook; see perfc_server_add_start_hook(). */
typedef int (*perfc_server_start_fn)(perfc_server *srv, void *user_data);

/** Adds a hook called at perfc_server_start(), in registration order,
 *  after every service was added and before any call is served: modules
 *  that describe the whole server (reflection) build their tables there, so
 *  they may be registered before or after the services they describe. A
 *  hook returns 0, or a negative PERFC_E* code that makes
 *  perfc_server_start() fail with it (later hooks are not called; the
 *  server stays unstarted, and a retried start calls every hook again).
 *  `user_data` is borrowed. Before perfc_server_start() only. Returns 0,
 *  PERFC_EINVAL, PERFC_ENOMEM or PERFC_ESTATE. */
PERFC_API int perfc_server_add_start_hook(perfc_server *srv,
                                          perfc_server_start_fn fn,
                                          void *user_data);

/** A shutdown hook; see perfc_server_add_shutdown_hook(). */
typedef void (*perfc_server_shutdown_fn)(perfc_server *srv, void *user_data);

/** Adds a hook called once when a graceful shutdown begins
 *  (perfc_server_shutdown(), a signal in perfc_server_run(), or
 *  perfc_server_free() of a running server): on the thread shutting down,
 *  in registration order, before the server stops accepting calls, while
 *  in-flight calls still run. Health uses it to report NOT_SERVING and end
 *  its Watch streams. The hook must not block and must not call
 *  perfc_server_shutdown(). A server that never started calls no hook.
 *  `fn` may be NULL when only the destructor is wanted. When
 *  `free_user_data` is not NULL the server owns `user_data` and calls
 *  `free_user_data(user_data)` in perfc_server_free(), after every call
 *  ended; otherwise `user_data` is borrowed and must outlive the server.
 *  Before perfc_server_start() only. Returns 0, PERFC_EINVAL,
 *  PERFC_ENOMEM or PERFC_ESTATE; on error nothing is called and the caller
 *  keeps `user_data`. */
PERFC_API int perfc_server_add_shutdown_hook(perfc_server *srv,
                                             perfc_server_shutdown_fn fn,
                                             void *user_data,
                                             void (*free_user_data)(void *));

/** Runs the start hooks, starts the pollers and begins serving. Returns 0,
 *  PERFC_ESTATE (already started / no address), PERFC_ETHREAD,
 *  PERFC_EGRPC, PERFC_EIO (see perfc_server_hold_signals(), which it
 *  calls first), or the error of a start hook. */
PERFC_API int perfc_server_start(perfc_server *srv);

/** Holds SIGINT and SIGTERM for perfc_server_run(): from this call on, one
 *  that arrives before perfc_server_run() does not kill the process but
 *  waits, and perfc_server_run() then shuts down gracefully at once and
 *  returns it (a program written as documented exits 0). Only a signal
 *  whose disposition is the default is taken (the application's own
 *  handlers and ignored signals are left alone), and only one: the
 *  default is back as soon as one was held, so a second one before
 *  perfc_server_run() kills as before (a start-up that hangs can still be
 *  interrupted). perfc_server_start() calls it; call it first in main() to
 *  cover the whole start-up (generated mains do). Should no
 *  perfc_server_run() come, perfc_server_shutdown() puts the default back
 *  and delivers a held signal then. Every thread perfc starts blocks
 *  SIGINT and SIGTERM, so they reach the application's threads.
 *  Process-wide, idempotent. Returns 0 or PERFC_EIO. */
PERFC_API int perfc_server_hold_signals(void);

/** Graceful stop: stop accepting, let in-flight calls finish for up to
 *  `grace_ms` (negative = the opts' shutdown grace), then cancel the rest and
 *  join every thread. Idempotent. Safe to call while perfc_server_run()
 *  waits in another thread: it then returns. */
PERFC_API void perfc_server_shutdown(perfc_server *srv, int64_t grace_ms);

/** Blocks until SIGINT or SIGTERM arrives (or perfc_server_shutdown() is
 *  called from another thread), then shuts down gracefully. Installs signal
 *  handlers for SIGINT and SIGTERM for its duration. A signal held since
 *  perfc_server_start() or perfc_server_hold_signals() ends it at once.
 *  Returns the signal number, or 0 when stopped by perfc_server_shutdown(). */
PERFC_API int perfc_server_run(perfc_server *srv);

/** Shuts down (if still running) and frees. NULL is a no-op. */
PERFC_API void perfc_server_free(perfc_server *srv);

/* ---- call context: what a handler sees --------------------------------- */

/** The call's arena: memory from it lives until the call ends. Borrowed. */
PERFC_API perfc_arena *perfc_ctx_arena(perfc_ctx *ctx);
/** Shorthand for perfc_arena_alloc(perfc_ctx_arena(ctx), n). */
PERFC_API void *perfc_ctx_alloc(perfc_ctx *ctx, size_t n);

/** Makes a unary call send `len` already-encoded bytes at `data` as its
 * response instead of packing `resp` (which is then ignored): a cache hit
 * answered with the stored encoding, or a proxy passing bytes through.
 * `data` is borrowed and must live until the call ends (allocate it from
 * perfc_ctx_arena()); the bytes must be a valid encoding of the method's
 * response type, which perfc does not check. Returns 0, or PERFC_ESTATE when
 * ctx is not a unary call or `resp` is not the response the server will send
 * (a handler's own message): the caller then fills `resp` instead. */
PERFC_API int perfc_ctx_set_raw_response(perfc_ctx *ctx, const ProtobufCMessage *resp,
                                         const uint8_t *data, size_t len);
/** Method path ("/pkg.Svc/Method"); borrowed, valid during the call. */
PERFC_API const char *perfc_ctx_method(const perfc_ctx *ctx);
/** Method descriptor; NULL for an unregistered method. */
PERFC_API const perfc_method_desc *perfc_ctx_method_desc(const perfc_ctx *ctx);
/** Peer address ("ipv4:127.0.0.1:5432"), in the call's arena. */
PERFC_API const char *perfc_ctx_peer(perfc_ctx *ctx);

/** What carried a call: gRPC, HTTP/JSON (perfc_gateway_attach) over
 *  HTTP/1.1 or HTTP/2, or gRPC-Web (with HTTP serving on). */
typedef enum perfc_protocol {
  PERFC_PROTOCOL_GRPC = 0,
  PERFC_PROTOCOL_HTTP1_JSON = 1,
  PERFC_PROTOCOL_HTTP2_JSON = 2,
  PERFC_PROTOCOL_GRPC_WEB = 3
} perfc_protocol;
/** The call's protocol (interceptors label by it). */
PERFC_API perfc_protocol perfc_ctx_protocol(const perfc_ctx *ctx);
/** "grpc", "http1.1+json", "h2+json", "grpc-web"; static. */
PERFC_API const char *perfc_protocol_name(perfc_protocol p);

/** Milliseconds until the call's deadline (0 when passed): the client's, or
 *  the earlier one set by perfc_ctx_set_deadline_ms(); INT64_MAX when there
 *  is none. */
PERFC_API int64_t perfc_ctx_remaining_ms(const perfc_ctx *ctx);
/** Non-zero once the deadline passed or the call was cancelled. */
PERFC_API int perfc_ctx_cancelled(const perfc_ctx *ctx);

/** Lowers the call's deadline to `ms` from now when that is earlier than
 *  the current one (the client's, or an earlier lowering); never raises it.
 *  For interceptors' `before` (perfc_timeouts_attach() uses it) or a handler.
 *  From then on perfc_ctx_remaining_ms() and perfc_ctx_cancelled() report
 *  the lowered deadline, calls made with this ctx as perfc_call_opts.parent
 *  inherit it, a unary call still waiting for a worker when it passes never
 *  runs, and a handler that returns after it ends the call with
 *  DEADLINE_EXCEEDED whatever it returned. Returns 1 when lowered, 0 when
 *  the deadline was already as early, PERFC_EINVAL for ms < 0. */
PERFC_API int perfc_ctx_set_deadline_ms(perfc_ctx *ctx, int64_t ms);

/** Number of request metadata entries. */
PERFC_API size_t perfc_ctx_metadata_count(const perfc_ctx *ctx);
/** Entry `i`: key and value slices borrowed from the call. Returns 0 or
 *  PERFC_EINVAL when i is out of range. */
PERFC_API int perfc_ctx_metadata_at(const perfc_ctx *ctx, size_t i,
                                    perfc_slice *key, perfc_slice *value);
/** First value of `key` (lower-case) or NULL; the value is NUL-terminated in
 *  the call's arena, its length in `*len` when not NULL. */
PERFC_API const char *perfc_ctx_metadata_get(perfc_ctx *ctx, const char *key,
                                             size_t *len);

/** Adds response metadata sent with the response headers (initial) or with
 *  the status (trailing). Key and value are copied; `len` 0 means
 *  strlen(value). Keys must be lower-case; binary values need a "-bin"
 *  suffix. Returns 0, PERFC_EINVAL (bad key) or PERFC_ESTATE (headers
 *  already sent). */
PERFC_API int perfc_ctx_add_initial_metadata(perfc_ctx *ctx, const char *key,
                                             const char *value, size_t len);
PERFC_API int perfc_ctx_add_trailing_metadata(perfc_ctx *ctx, const char *key,
                                              const char *value, size_t len);

/** Compresses this call's responses with `name` ("gzip", "deflate"), or
 *  sends them uncompressed ("identity"), whatever perfc_server_opts.compression
 *  says. Before the first response message (or the status) any choice can
 *  be made; after a stream sent one, the encoding is fixed and this only
 *  switches later messages between uncompressed ("identity") and the
 *  encoding chosen first; another algorithm then returns PERFC_ESTATE. The
 *  client must accept the encoding (every gRPC client accepts gzip and
 *  deflate by default). Returns 0, PERFC_EINVAL (unknown name) or
 *  PERFC_ESTATE. */
PERFC_API int perfc_ctx_set_compression(perfc_ctx *ctx, const char *name);

/** Whether the last request message received on this call (a unary
 *  request, or the latest perfc_stream_recv()) arrived compressed: 1 or 0.
 *  The C core only tells this through an internal symbol, looked up at run
 *  time; PERFC_ENOENT when this libgrpc lacks it. For tests and
 *  conformance checks (grpc's interop expect_compressed), not for
 *  production logic. */
PERFC_API int perfc_ctx_message_compressed(const perfc_ctx *ctx);

/** Sets the status message printf-style and returns `code`, so a handler
 *  can `return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "user %d", id);` */
PERFC_API perfc_status_code perfc_ctx_error(perfc_ctx *ctx,
                                            perfc_status_code code,
                                            const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/** The status message set on this call so far (perfc_ctx_error(),
 *  perfc_ctx_fail()), or NULL. Borrowed: it lives in the call's arena.
 *  perfc_cache_rpc keeps a handler's NOT_FOUND message with the cached
 *  "not found" through it. */
PERFC_API const char *perfc_ctx_error_message(const perfc_ctx *ctx);

/** Ends the call after a perfc call the handler made failed with `err`
 *  (a PERFC_E* code): sets the status message to perfc_last_error() and
 *  returns perfc_status_from_error(err), so a handler's error path reads
 *  `if ((rc = perfc_pg_exec(...)) != 0) return perfc_ctx_fail(ctx, rc);`.
 *  Call it on the thread that made the failing call (the detail is per
 *  thread). */
PERFC_API perfc_status_code perfc_ctx_fail(perfc_ctx *ctx, int err);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_SERVER_H */
