/*
 * perfc/client.h — channels and synchronous unary calls.
 *
 * A perfc_channel holds one or more grpc channels to one target, each made
 * distinct so that N really means N TCP connections; calls pick one
 * round-robin. Generated stubs (`pkg__svc__method_call()`) wrap
 * perfc_channel_unary() with the method's types.
 *
 * Room: runtime public headers. A channel is thread-safe: share one across
 * threads.
 */
#ifndef PERFC_CLIENT_H
#define PERFC_CLIENT_H

#include "perfc/arena.h"
#include "perfc/common.h"
#include "perfc/interceptor.h"
#include "perfc/service.h"
#include "perfc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_channel perfc_channel;

/** Client keepalive is off by default (grpc default): a ping every N seconds
 *  must be agreed with the server's minimum ping interval. */
#define PERFC_DEFAULT_CLIENT_KEEPALIVE_TIME_MS 0
/** Calls without their own timeout get 10 s: a call with no deadline can
 *  hang forever on a dead peer, the most common gRPC production mistake. */
#define PERFC_DEFAULT_CALL_TIMEOUT_MS 10000
/** Reconnect backoff: grpc's defaults (1 s initial, 120 s max) are slow for
 *  services restarting in a cluster; 100 ms to 10 s recovers in seconds
 *  without hammering a dead peer. */
#define PERFC_DEFAULT_MIN_RECONNECT_BACKOFF_MS 100
#define PERFC_DEFAULT_MAX_RECONNECT_BACKOFF_MS 10000

typedef struct perfc_channel_opts {
  unsigned connections;          /**< distinct TCP connections; 0 = 1 */
  int64_t keepalive_time_ms;     /**< 0 = no client keepalive pings */
  int64_t keepalive_timeout_ms;  /**< 0 = default (20 s) */
  int keepalive_permit_without_calls;
  int max_recv_message_bytes;    /**< 0 = default (4 MiB), -1 = unlimited */
  int max_send_message_bytes;    /**< 0 = default (4 MiB), -1 = unlimited */
  int64_t default_timeout_ms;    /**< 0 = default; -1 = no deadline */
  int64_t min_reconnect_backoff_ms; /**< 0 = default */
  int64_t max_reconnect_backoff_ms; /**< 0 = default */
  const char *lb_policy;         /**< "pick_first" (NULL) or "round_robin" */
  const char *service_config_json; /**< extra service config; borrowed/copied */
  /** Interceptors run around every call, in this order (`after` reversed).
   *  The array is copied; each interceptor is borrowed and must outlive the
   *  channel. At most PERFC_MAX_INTERCEPTORS. */
  const perfc_client_interceptor *const *interceptors;
  size_t interceptor_count;
  /** Default compression for requests: "gzip", "deflate", or NULL/"identity"
   *  for none; a call's own perfc_call_opts.compression wins. Responses are
   *  accepted compressed or not. Borrowed during perfc_channel_new() only. */
  const char *compression;
} perfc_channel_opts;

PERFC_API void perfc_channel_opts_init(perfc_channel_opts *o);

/** Creates a plaintext channel to `target` ("127.0.0.1:50051",
 *  "dns:///svc:443", "ipv4:10.0.0.1:80,10.0.0.2:80"). Connects lazily.
 *  `opts` may be NULL; strings in it are copied. Calls grpc_init. Returns 0,
 *  PERFC_EINVAL or PERFC_ENOMEM; free with perfc_channel_free().
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

typedef struct perfc_call_opts {
  /** Deadline relative to now; 0 = channel default, -1 = none. */
  int64_t timeout_ms;
  const perfc_metadata *metadata; /**< borrowed for the call */
  size_t metadata_count;
  /** Where the response is unpacked. NULL: with protobuf-c's default
   *  allocator; free it with protobuf_c_message_free_unpacked(resp, NULL). */
  perfc_arena *arena;
  /** Wait for the channel to become ready instead of failing fast with
   *  UNAVAILABLE while it connects. */
  int wait_for_ready;
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

#ifdef __cplusplus
}
#endif
#endif /* PERFC_CLIENT_H */
