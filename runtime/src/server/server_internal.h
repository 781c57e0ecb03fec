/*
 * server_internal.h — pieces of the server shared with other rooms (observe,
 * guard, client) and the tests, and the C core helpers (grpc_util.c) the
 * client and the core transport share. Never installed. The call layer's
 * own structures are in call_internal.h; the seam to the transports is
 * transport_internal.h.
 *
 * Room: runtime/src/server private header.
 */
#ifndef PERFC_SERVER_INTERNAL_H
#define PERFC_SERVER_INTERNAL_H

#include "perfc/pool.h"
#include "perfc/server.h"

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>

/* A completion-queue tag is a functor: the poller calls t->run(t, ok) with
 * no lookup. Structs that own tags embed them and recover themselves with
 * PERFC_CONTAINER_OF. */
typedef struct perfc_tag perfc_tag;
struct perfc_tag {
  void (*run)(perfc_tag *t, int ok);
};

/* libgrpc is not built with ThreadSanitizer, so TSan cannot see that the
 * completion queue orders "start batch on thread A" before "tag delivered on
 * thread B". These annotations state that edge at exactly those two points;
 * they compile to nothing in normal builds. */
#if defined(__SANITIZE_THREAD__)
#define PERFC_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PERFC_TSAN 1
#endif
#endif
#ifdef PERFC_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
void AnnotateIgnoreWritesBegin(const char *file, int line);
void AnnotateIgnoreWritesEnd(const char *file, int line);
#define PERFC_HANDOFF_RELEASE(tag) __tsan_release(tag)
#define PERFC_HANDOFF_ACQUIRE(tag) __tsan_acquire(tag)
/* Around giving back memory the core allocated and filled (a call's request
 * metadata, details, payload). The core may fill it on any thread that
 * polled the connection (in the tests, a client thread of the same
 * process: epoll1 polls every fd from every poller) and hands it over
 * through its own locks, which TSan cannot see; the hand-off to perfc is
 * the request tag above. The free is then not a race, so TSan is told to
 * ignore it (and only it). */
#define PERFC_CORE_MEMORY_BEGIN() AnnotateIgnoreWritesBegin(__FILE__, __LINE__)
#define PERFC_CORE_MEMORY_END() AnnotateIgnoreWritesEnd(__FILE__, __LINE__)
#else
#define PERFC_HANDOFF_RELEASE(tag) ((void)(tag))
#define PERFC_HANDOFF_ACQUIRE(tag) ((void)(tag))
#define PERFC_CORE_MEMORY_BEGIN() ((void)0)
#define PERFC_CORE_MEMORY_END() ((void)0)
#endif

#define PERFC_CONTAINER_OF(ptr, type, member)                                  \
  ((type *)(void *)((char *)(ptr)-offsetof(type, member)))

/* Makes a received message contiguous in `a` (a single-slice message is
 * not copied: *data points into `bb`, which must outlive its use). A
 * message that arrived compressed (gzip or deflate; perfc turns the core's
 * own decompression off, see GRPC_ARG_ENABLE_PER_MESSAGE_DECOMPRESSION in
 * transport/core/core_server.c) is inflated here, and inflation stops as soon as the output
 * passes `max` bytes (SIZE_MAX: no limit), having allocated at most that.
 * Returns 0, PERFC_ETOOBIG (larger than `max`), PERFC_EPARSE (corrupt
 * compressed data), PERFC_EINVAL (an encoding perfc cannot inflate) or
 * PERFC_ENOMEM. */
int perfc__byte_buffer_flatten(grpc_byte_buffer *bb, size_t max,
                               perfc_arena *a, const uint8_t **data,
                               size_t *len);

/* A max_recv_message_bytes option (-1 = unlimited) as a byte bound. */
size_t perfc__recv_limit(int max_recv_message_bytes);

/* Packs `msg` into a new byte buffer the caller destroys. NULL on OOM. */
grpc_byte_buffer *perfc__pack(const ProtobufCMessage *msg);

/* perfc__pack() when the caller already has the packed size `n` (computing
 * it walks the whole message again). */
grpc_byte_buffer *perfc__pack_sized(const ProtobufCMessage *msg, size_t n);

/* A new byte buffer holding a copy of `len` bytes (borrowed). */
grpc_byte_buffer *perfc__bytes_to_buffer(const uint8_t *data, size_t len);

/* Monotonic milliseconds until `deadline`; INT64_MAX for infinite. */
int64_t perfc__remaining_ms(gpr_timespec deadline);

/* Deadline `ms` from now on the monotonic clock; infinite for ms < 0. */
gpr_timespec perfc__deadline_from_ms(int64_t ms);

/* Checks a metadata key/value pair before handing it to the core, which
 * would otherwise fail the whole call. Returns 0 or PERFC_EINVAL. */
int perfc__check_metadata(const char *key, const char *value, size_t len);

/* The observer given to the server's worker pool (perfc_pool_opts); before
 * the pool exists (a start hook). Used by the metrics interceptor. */
void perfc__server_set_pool_observer(perfc_server *srv,
                                     perfc_pool_observer_fn fn, void *ud);

/* The ports the server listens on (bound, so never 0); borrowed. */
size_t perfc__server_ports(const perfc_server *srv, const int **ports);

/* Reply batching on bidirectional streams (stream.c, perfc_stream): how
 * many replies of stream `s` were held back to be written with a later
 * one or at the stream's next wait, and the turn-around under which a
 * handler's reply may be held (20 µs; the tests raise it so that sanitizer
 * builds batch too). Exported for the integration tests only. */
unsigned long perfc__stream_replies_held(const perfc_stream *s);
extern int64_t perfc__stream_hold_ns;

/* The worker pool's counters (perfc_pool_stats_get), so a test can wait
 * for a call to be queued instead of guessing a delay. 0, or PERFC_ESTATE
 * when the server has no pool (not started). Exported for the integration
 * tests only. */
int perfc__server_pool_stats(perfc_server *srv,
                                       perfc_pool_stats *out);

/* For tests: how many requests poller `poller_index` has posted for the
 * method at `path` and not yet seen matched, and how many it keeps posted
 * (starts at 2 and doubles, up to requests_per_method, once the method has
 * more than twice that many calls running; transport/core/core_server.c,
 * rearm()). 0,
 * PERFC_ENOENT (no such method) or PERFC_ESTATE (not started, or no such
 * poller). Exported for the integration tests only; no installed header
 * declares it. */
int perfc__server_posted_requests(const perfc_server *srv,
                                            const char *path,
                                            unsigned poller_index,
                                            unsigned *posted, unsigned *depth);

/* The core call behind a server context (for deadline and cancel
 * propagation into client calls); NULL when another transport carries it
 * (transport/core/core_server.c). */
grpc_call *perfc__ctx_call(perfc_ctx *ctx);

/* A client call made under a server call (perfc_call_opts.parent),
 * registered for the parent's cancel whatever transport carries it: the
 * client reset or lost the parent, the parent's deadline passed on the
 * server (h2 ends such a call itself), or the shutdown grace ended while
 * the parent ran on a worker. The node lives in the client's call; the
 * fields are the registry's (server/call.c). */
typedef struct perfc__cancel_watch {
  struct perfc__cancel_watch *next, *prev;
  perfc_ctx *ctx; /* the parent; NULL once fired, detached or unwatched */
  perfc_server *srv;
  void (*cancel)(void *arg);
  void *arg;
} perfc__cancel_watch;

/* Registers `w`: `cancel(arg)` runs once (on the thread that learned of
 * the parent's cancel, under the registry's lock, so it must not block
 * nor call back into perfc) if the parent is cancelled before it finishes
 * or the watch is removed. Call on the parent's handler thread before its
 * handler returns. Returns 0, or 1 when the parent is already cancelled
 * (then `w` is not registered and the caller cancels its call itself).
 * When the parent finishes its watches are dropped, so a client call that
 * outlives the handler (an asynchronous one) is not cancelled later. */
int perfc__ctx_watch(perfc_ctx *parent, perfc__cancel_watch *w,
                     void (*cancel)(void *arg), void *arg);
/* Removes `w` if still registered; any thread, also after the parent
 * finished. After it returns `cancel` is not running and will not run. */
void perfc__ctx_unwatch(perfc__cancel_watch *w);

/* The per-call slot of the first interceptor on ctx's server whose `before`
 * hook is `before`, when that hook ran for this call; else NULL. Lets a
 * module hand its per-call state to handlers (perfc_auth_claims) without
 * knowing which interceptor index it got. */
typedef perfc_status_code (*perfc__ic_before_fn)(void *self, void *method_state,
                                                 perfc_ctx *ctx,
                                                 void **call_state);
void *perfc__ctx_call_state(const perfc_ctx *ctx, perfc__ic_before_fn before);

/* CLOCK_MONOTONIC in nanoseconds (vDSO: no system call). */
int64_t perfc__now_ns(void);

/* grpc_init() plus, once per process, routing the core's own log lines
 * through perfc_log(). Pair with grpc_shutdown(). */
void perfc__grpc_init(void);

/* While `quiet` is set on this thread, the core's error lines go to the
 * debug level: for a call whose failure perfc reports itself, better. */
void perfc__grpc_log_quiet(int quiet);

/* Why listening on `addr` ("host:port", "[v6]:port") fails, found by
 * binding it the way the core does: strerror's text in lower case, such as
 * "address already in use", or a fixed sentence when the address does not
 * resolve or binds now. Writes a NUL-terminated string into buf. */
void perfc__listen_failure(const char *addr, char *buf, size_t len);

#endif
