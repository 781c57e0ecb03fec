/*
 * transport/h2/h2_internal.h — perfc's own server transport (gRPC over
 * HTTP/2 on nghttp2 and per-thread epoll loops): what the call layer
 * implements (upward) and calls (downward).
 *
 * Room: runtime/src/transport/h2 private header, for the call layer
 * (server/) and the tests. docs/design.md, "Server transport on nghttp2
 * (transport/h2)", describes the loop, a connection's life and the limits.
 *
 * The contract in one paragraph. The transport owns sockets, HTTP/2 and the
 * gRPC framing. For each request it calls `on_call` on the connection's
 * loop thread with the call's headers; the call layer answers with its
 * per-call pointer. Complete (decompressed) request messages arrive through
 * `on_message`, the client's half-close through `on_half_close`. The call
 * layer answers with perfc__h2_send_headers / perfc__h2_send_message /
 * perfc__h2_finish, from the loop thread (applied at once) or from any
 * other thread (copied and posted to the loop through its lock-free queue;
 * the eventfd wake is shared by everything posted before the loop runs).
 * Whatever ends the stream (the finish was written, the client reset it,
 * its deadline passed, the connection died), `on_close` runs exactly once
 * on the loop, and the call layer then owes one perfc__h2_stream_release().
 */
#ifndef PERFC_TRANSPORT_H2_INTERNAL_H
#define PERFC_TRANSPORT_H2_INTERNAL_H

#include "perfc/status.h"
#include "perfc/tls.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- limits and their defaults (docs/design.md explains each) ---------- */

/* Loops (threads); 0 = the number of online CPUs. */
#define PERFC_DEFAULT_H2_LOOPS 0
/* SETTINGS_MAX_CONCURRENT_STREAMS, as the core transport's default. */
#define PERFC_DEFAULT_H2_MAX_CONCURRENT_STREAMS 1024
/* SETTINGS_INITIAL_WINDOW_SIZE: 1 MiB per stream, so one stream can keep
 * about 1 MiB in flight (a 10 Gb/s link at 1 ms RTT) without waiting for a
 * WINDOW_UPDATE; the 64 KiB default caps a stream at 64 KiB per RTT. */
#define PERFC_DEFAULT_H2_STREAM_WINDOW_BYTES (1 << 20)
/* The connection window: 16 MiB, so 16 streams at full speed share it. */
#define PERFC_DEFAULT_H2_CONN_WINDOW_BYTES (16 << 20)
/* SETTINGS_MAX_FRAME_SIZE we accept (the RFC's minimum and default). */
#define PERFC_DEFAULT_H2_MAX_FRAME_BYTES 16384
/* SETTINGS_MAX_HEADER_LIST_SIZE, enforced on every header block from the
 * first byte whether or not the client ACKed our SETTINGS (size counted
 * as RFC 9113 does: name + value + 32 per field). */
#define PERFC_DEFAULT_H2_MAX_HEADER_LIST_BYTES (16 * 1024)
/* CONTINUATION frames after a HEADERS frame before GOAWAY. */
#define PERFC_DEFAULT_H2_MAX_CONTINUATIONS 8
/* A connection must finish its preface (and any header block it starts)
 * within this, else it is closed. */
#define PERFC_DEFAULT_H2_HANDSHAKE_TIMEOUT_MS 10000
/* Request bytes one connection may hold buffered (partial messages); past
 * it the connection's flow-control window stays shut. At least one
 * maximum-size message plus room for others. */
#define PERFC_DEFAULT_H2_CONN_RECV_BUDGET_BYTES (16 << 20)
/* The same for all connections of the server (split evenly over loops, so
 * the hot path touches no shared counter). */
#define PERFC_DEFAULT_H2_SERVER_RECV_BUDGET_BYTES (128 << 20)
/* Output one connection may hold unsent (a slow reader): past it nothing
 * more is produced for it and its input is not read until it drains. */
#define PERFC_DEFAULT_H2_CONN_SEND_BUDGET_BYTES (4 << 20)
/* Bytes queued on one stream past which a send reports "would block". */
#define PERFC_DEFAULT_H2_STREAM_SEND_HIGH_WATER_BYTES (1 << 20)
/* Client resets the connection may spend: a token bucket that starts and
 * is capped at BURST, refilled by one per completed call and by RATE per
 * second. Empty: GOAWAY ENHANCE_YOUR_CALM and close. */
#define PERFC_DEFAULT_H2_RESET_BURST 200
#define PERFC_DEFAULT_H2_RESET_RATE_PER_S 100
/* Connections the whole server accepts; more are refused with GOAWAY
 * REFUSED_STREAM "max_connections" and closed. */
#define PERFC_DEFAULT_H2_MAX_CONNECTIONS 10000
/* Pings that came too early before GOAWAY "too_many_pings" (grpc's). */
#define PERFC_DEFAULT_H2_MAX_PING_STRIKES 2

typedef struct perfc__h2_opts {
  int loops;                        /**< 0 = online CPUs */
  uint32_t max_concurrent_streams;  /**< 0 = default */
  uint32_t stream_window_bytes;     /**< 0 = default */
  uint32_t conn_window_bytes;       /**< 0 = default */
  uint32_t max_header_list_bytes;   /**< 0 = default */
  size_t max_recv_message_bytes;    /**< 0 = PERFC_DEFAULT_MAX_RECV_MESSAGE_BYTES */
  size_t max_send_message_bytes;    /**< 0 = PERFC_DEFAULT_MAX_SEND_MESSAGE_BYTES */
  int64_t handshake_timeout_ms;     /**< 0 = default */
  size_t conn_recv_budget_bytes;    /**< 0 = default */
  size_t server_recv_budget_bytes;  /**< 0 = default */
  size_t conn_send_budget_bytes;    /**< 0 = default */
  size_t stream_send_high_water_bytes; /**< 0 = default */
  uint32_t reset_burst;             /**< 0 = default */
  uint32_t reset_rate_per_s;        /**< 0 = default */
  uint32_t max_connections;         /**< 0 = default */
  /* Keepalive, as perfc_server_opts: server pings after this much silence
   * and closes when the ACK does not come within the timeout. */
  int64_t keepalive_time_ms;        /**< 0 = PERFC_DEFAULT_SERVER_KEEPALIVE_TIME_MS */
  int64_t keepalive_timeout_ms;     /**< 0 = PERFC_DEFAULT_KEEPALIVE_TIMEOUT_MS */
  /* Client ping policy: a ping sooner than this after the previous one
   * (with no HEADERS or DATA sent between) is a strike; with no call open
   * and !permit_without_calls, any second ping is early. */
  int64_t min_ping_interval_ms;     /**< 0 = PERFC_DEFAULT_MIN_PING_INTERVAL_MS */
  bool keepalive_permit_without_calls;
  uint32_t max_ping_strikes;        /**< 0 = default */
  /* GOAWAY after this long with no open stream / after this age (±10 %
   * jitter), then close once the streams finish or the grace passed. As in
   * perfc_server_opts, the enabled flags say "off" explicitly. */
  bool max_connection_idle_enabled;
  int64_t max_connection_idle_ms;
  bool max_connection_age_enabled;
  int64_t max_connection_age_ms;
  int64_t max_connection_age_grace_ms; /**< 0 = unlimited grace */
  /* The loop threads run under SCHED_BATCH (the server's pollers when
   * perfc_server_opts.poller_wakeup_preemption is off): a loop woken by a
   * worker's posted result or by the network does not preempt the thread
   * running, and takes what piled up in one iteration. Off here (the raw
   * transport's tests); the seam sets it from the server's option. */
  bool loop_batch_sched;
  /* Busy polling (perfc_server_opts.busy_poll_us): a loop whose last wait
   * returned events polls without sleeping for up to this long before it
   * blocks. 0 = off. */
  int64_t busy_poll_ns;
  /* HTTP (issue #18): requests that are not gRPC (an HTTP/2 stream whose
   * content-type is not application/grpc*, or an HTTP/1.1 connection on
   * the same port) become calls with perfc__h2_call_info.http set, instead
   * of the 415 a gRPC server answers. Off unless the call layer has a
   * codec (perfc__h2_server_enable_http). */
  bool http_enabled;
  size_t http_max_body_bytes;     /**< request bodies past it: 413 */
  int http_gzip_level;            /**< zlib level of gzipped HTTP bodies */
  int64_t http_idle_timeout_ms;   /**< HTTP/1.1 keep-alive idle close */
} perfc__h2_opts;

/* What carries a call. */
enum {
  PERFC__H2_PROTO_GRPC = 0,  /* gRPC over HTTP/2 */
  PERFC__H2_PROTO_HTTP2 = 1, /* an HTTP request on an HTTP/2 stream */
  PERFC__H2_PROTO_HTTP1 = 2  /* an HTTP/1.1 request */
};

/* Fills `o` with the defaults above (zero fields mean default anyway). */
void perfc__h2_opts_init(perfc__h2_opts *o);

/* ---- what the call layer sees --------------------------------------------- */

typedef struct perfc__h2_server perfc__h2_server;
/* One gRPC call's stream. Valid from on_call until the call layer's
 * perfc__h2_stream_release() (which may come after on_close). */
typedef struct perfc__h2_stream perfc__h2_stream;

/* A metadata entry. Request metadata is borrowed for the duration of
 * on_call; binary values (`-bin` keys) arrive base64-decoded. */
typedef struct perfc__h2_md {
  const char *key;
  size_t key_len;
  const char *value;
  size_t value_len;
} perfc__h2_md;

typedef struct perfc__h2_call_info {
  const char *path; /* "/pkg.Service/Method", NUL-terminated */
  size_t path_len;
  const char *authority; /* "" when absent */
  /* Application metadata (no pseudo headers, no content-type, te,
   * grpc-timeout, grpc-encoding, grpc-accept-encoding, user-agent is kept). */
  const perfc__h2_md *md;
  size_t md_count;
  /* From grpc-timeout: CLOCK_MONOTONIC ns, the request's arrival plus
   * the timeout (never before the client's own deadline), or INT64_MAX
   * without one (or past what int64 ns can hold). The transport ends the
   * call with DEADLINE_EXCEEDED once it passed, not before. */
  int64_t deadline_ns;
  const char *peer;   /* "ipv4:127.0.0.1:5000", "ipv6:[::1]:5000" */
  const char *request_encoding; /* "identity", "gzip" or "deflate" */
  const char *accept_encoding;  /* the client's grpc-accept-encoding or "" */
  bool tls;
  /* mTLS: the verified client certificate's subject, or NULL. */
  const char *peer_subject;
  /* PERFC__H2_PROTO_*. For HTTP requests `path` is the request target
   * (path and query), `http_method` the method ("GET"), and `md` holds
   * only `authorization`, the trace context headers (traceparent,
   * tracestate, baggage) and `grpc-metadata-X` headers as `X`; a
   * grpc-timeout header still sets `deadline_ms`. */
  int http;
  const char *http_method;
  /* A gRPC-Web call (a gRPC call; http is 0): 1 binary, 2 text. */
  int web;
  /* HTTP requests: the Accept-Encoding and If-None-Match headers (several
   * lines of one joined with ", "), NULL when absent; borrowed for the
   * duration of on_call. */
  const char *http_accept_encoding;
  const char *http_if_none_match;
} perfc__h2_call_info;

/* Why a stream ended (on_close). */
typedef enum perfc__h2_close_reason {
  PERFC__H2_CLOSE_DONE = 0,     /* the finish was handed to the socket */
  PERFC__H2_CLOSE_CANCELLED,    /* the client reset the stream */
  PERFC__H2_CLOSE_DEADLINE,     /* grpc-timeout passed: DEADLINE_EXCEEDED sent */
  PERFC__H2_CLOSE_ERROR,        /* the transport answered a protocol error */
  PERFC__H2_CLOSE_CONN          /* the connection closed or the server stopped */
} perfc__h2_close_reason;

/* on_call's answer: which request shape the method takes. */
enum {
  /* The method takes exactly one request message (unary, server
   * streaming): a second message or none at half-close is INTERNAL. */
  PERFC__H2_CALL_SINGLE_REQUEST = 1 << 0
};

typedef struct perfc__h2_callbacks {
  /* A call starts (loop thread). Return 0 to take it, with `*call` the
   * pointer later callbacks receive and `*flags` PERFC__H2_CALL_*; or a
   * non-OK perfc_status_code to refuse it: the transport answers
   * trailers-only with that code and `*refuse_msg` (borrowed, may be
   * NULL), and nothing else is called for this stream (no release owed).
   * UNIMPLEMENTED for unknown methods is the call layer's answer. */
  perfc_status_code (*on_call)(void *server_data, perfc__h2_stream *s,
                               const perfc__h2_call_info *info, void **call,
                               unsigned *flags, const char **refuse_msg);
  /* A complete request message (decompressed; loop thread). `bytes` are
   * borrowed for the callback. Return 0, or PERFC_EFULL to stop delivery:
   * the message stays buffered (the stream's window stays shut) until
   * perfc__h2_resume_recv(). */
  int (*on_message)(void *call, perfc__h2_stream *s, const uint8_t *bytes,
                    size_t len);
  /* The client half-closed after its last message (loop thread). */
  void (*on_half_close)(void *call, perfc__h2_stream *s);
  /* A send that returned PERFC_EFULL may go on: the stream's queue fell
   * below half its high-water mark (loop thread; may be spurious). */
  void (*on_writable)(void *call, perfc__h2_stream *s);
  /* Exactly once per taken call, last (loop thread). Sends after it fail
   * with PERFC_ESHUTDOWN. The call layer owes perfc__h2_stream_release(). */
  void (*on_close)(void *call, perfc__h2_stream *s,
                   perfc__h2_close_reason why);
  /* Optional (NULL: not called; last, so positional initializers need
   * not name it). The call was taken and its stream may be answered
   * (loop thread, right after on_call, before any on_message): where a
   * call layer starts calls that do not wait for their request (client
   * and bidi streams). */
  void (*on_start)(void *call, perfc__h2_stream *s);
  /* Optional (NULL: not called). perfc__h2_stream_wake() reached the loop and the stream is
   * still open (loop thread): the call layer looks at the call again (the
   * shutdown grace ended for a handler that runs on the loop). */
  void (*on_wake)(void *call, perfc__h2_stream *s);
} perfc__h2_callbacks;

/* ---- the server ------------------------------------------------------------- */

/* A server with `o` (copied; NULL = defaults) and the call layer's
 * callbacks (copied) and data. Returns 0, PERFC_EINVAL or PERFC_ENOMEM. */
int perfc__h2_server_new(perfc__h2_server **out, const perfc__h2_opts *o,
                         const perfc__h2_callbacks *cb, void *server_data);
/* Listens on "host:port" (port 0: any; `*bound_port` gets the port; may
 * be NULL), one SO_REUSEPORT socket per loop. `tls` NULL: plaintext; else
 * TLS 1.2+ with ALPN h2 (files checked by perfc_tls_check()). Before
 * start. Returns 0, PERFC_EINVAL, PERFC_EBIND, PERFC_ETLS, PERFC_ESTATE. */
int perfc__h2_server_listen(perfc__h2_server *srv, const char *addr,
                            const perfc_tls_opts *tls, int *bound_port);
/* Starts one thread per loop. Returns 0, PERFC_ETHREAD or PERFC_ESTATE. */
int perfc__h2_server_start(perfc__h2_server *srv);
/* The first half of a graceful stop (any thread but a loop's; returns
 * once every loop has run it, so no stream begins after it returns):
 * listeners close and every connection gets GOAWAY with its last
 * stream id; calls in flight go on without a deadline, a connection closes
 * once its last stream ended, and the loops keep running (answers posted
 * by workers still go out) until perfc__h2_server_shutdown(). Idempotent. */
void perfc__h2_server_drain(perfc__h2_server *srv);
/* Graceful stop (any thread but a loop's): listeners close, every
 * connection gets GOAWAY with its last stream id, calls in flight may
 * finish within `grace_ms`, then the rest are closed (on_close CONN) and
 * the loops' threads joined. Idempotent. */
void perfc__h2_server_shutdown(perfc__h2_server *srv, int64_t grace_ms);
/* Shuts down (grace 0) if needed, then frees. NULL is a no-op. */
void perfc__h2_server_free(perfc__h2_server *srv);

/* Counters for tests and metrics (summed over loops; racy reads). */
typedef struct perfc__h2_stats {
  uint64_t conns_accepted, conns_refused, conns_open;
  uint64_t streams_started, streams_reset_by_client;
  uint64_t goaway_rapid_reset, goaway_ping_abuse, closed_handshake_timeout;
  uint64_t recv_buffered_bytes; /* request bytes held in partial messages */
} perfc__h2_stats;
void perfc__h2_server_stats(perfc__h2_server *srv, perfc__h2_stats *out);

/* CORS for HTTP requests: NULL origins (n 0) is off. Strings borrowed
 * for the server's life. */
typedef struct perfc__h2_cors {
  const char *const *origins;
  size_t n;
  const char *methods, *headers, *expose; /* headers NULL: echo the request's */
  int64_t max_age_s;
  bool credentials;
} perfc__h2_cors;

/* Serve HTTP requests (perfc__h2_opts.http_enabled) with these limits
 * (0 = PERFC_DEFAULT_HTTP_*, perfc/http_codec.h) and CORS (copied; NULL
 * off), gzipping bodies sent with PERFC__H2_HTTP_GZIP at `gzip_level`
 * (1..9; else PERFC_DEFAULT_HTTP_GZIP_LEVEL). Before start. */
void perfc__h2_server_enable_http(perfc__h2_server *srv, size_t max_body_bytes,
                                  int64_t idle_timeout_ms,
                                  const perfc__h2_cors *cors, int gzip_level);

/* ---- downward: answering a call (any thread) ------------------------------ */

/* Send flags. */
enum {
  /* More sends follow at once from this thread: do not wake the loop for
   * this one (the next send without it wakes once for all). On the loop
   * thread output is written at the end of the iteration anyway. */
  PERFC__H2_SEND_MORE = 1 << 0,
  /* Do not compress this message even with a send encoding set. */
  PERFC__H2_SEND_NO_COMPRESS = 1 << 1
};

/* Response headers: ":status 200", content-type application/grpc, the
 * send encoding if set, then `md` (copied). Sent before the first message
 * or the finish if not called. Returns 0, PERFC_ESTATE (already sent or
 * finished), PERFC_ESHUTDOWN (closed), PERFC_ENOMEM. */
int perfc__h2_send_headers(perfc__h2_stream *s, const perfc__h2_md *md,
                           size_t n, unsigned flags);
/* Compress later messages with "gzip" or "deflate" (or "identity"), if the
 * client accepts it (else identity). Before the headers; any thread. */
int perfc__h2_set_send_encoding(perfc__h2_stream *s, const char *name);
/* One response message of `len` bytes (copied, framed, compressed if
 * asked). Returns 0; PERFC_EFULL when the stream already holds more than
 * its high-water mark unsent (nothing queued: wait for on_writable, then
 * send again; a loop-thread caller must not block); PERFC_ETOOBIG over
 * max_send_message_bytes; PERFC_ESTATE after finish; PERFC_ESHUTDOWN once
 * closed; PERFC_ENOMEM. */
int perfc__h2_send_message(perfc__h2_stream *s, const uint8_t *bytes,
                           size_t len, unsigned flags);
/* Ends the call: trailers grpc-status, percent-encoded grpc-message and
 * `md` (copied) after the queued messages; trailers-only when nothing was
 * sent. Returns 0, PERFC_ESTATE (finished already), PERFC_ESHUTDOWN,
 * PERFC_ENOMEM. */
int perfc__h2_finish(perfc__h2_stream *s, perfc_status_code code,
                     const char *message, const perfc__h2_md *md, size_t n,
                     unsigned flags);
/* An HTTP call's response head: `status`, content type and headers
 * (copied). With PERFC__H2_HTTP_STREAM the body follows in pieces
 * (chunked on HTTP/1.1), else it is whatever perfc__h2_send_message
 * queued by the finish (HTTP/1.1: one Content-Length). On an HTTP call,
 * perfc__h2_send_message queues body bytes as they are (no gRPC framing,
 * nothing for a HEAD request) and perfc__h2_finish ends the body (its
 * code and message answer only a call whose head was not sent: a JSON
 * error with HTTP 500). Returns as perfc__h2_send_headers. */
enum { PERFC__H2_HTTP_STREAM = 1 << 2 };
/* PERFC__H2_HTTP_GZIP: the body (one perfc__h2_send_message) is gzipped
 * on the loop with the server's http_gzip_level; the caller puts
 * content-encoding: gzip among the headers. A NULL content_type sends
 * none (a 304). */
enum { PERFC__H2_HTTP_GZIP = 1 << 3 };
int perfc__h2_http_head(perfc__h2_stream *s, int status, const char *content_type,
                        const perfc__h2_md *md, size_t n, unsigned flags);
/* Sends posted with PERFC__H2_SEND_MORE go out now: wakes the stream's
 * loop (nothing to do on the loop thread, which writes at the end of its
 * iteration anyway). Any thread. */
void perfc__h2_flush(perfc__h2_stream *s);
/* Moves the stream's deadline to `deadline_ms` (CLOCK_MONOTONIC ms) when
 * that is earlier than the one it has (grpc-timeout's, or none): when it
 * passes the transport answers DEADLINE_EXCEEDED and calls
 * on_close(DEADLINE), as for grpc-timeout. Loop thread only (a handler on
 * the loop whose server lowered its deadline); elsewhere a no-op. */
void perfc__h2_set_deadline(perfc__h2_stream *s, int64_t deadline_ms);
/* Calls on_wake on the stream's loop if it is still open then (any
 * thread; posted, so the caller's locks are not held there). */
void perfc__h2_stream_wake(perfc__h2_stream *s);
/* After on_message returned PERFC_EFULL: deliver again (any thread). */
void perfc__h2_resume_recv(perfc__h2_stream *s);
/* The call layer's reference, dropped once after on_close or instead of
 * waiting for it when abandoning (then the stream is reset with CANCEL).
 * Any thread. */
void perfc__h2_stream_release(perfc__h2_stream *s);
/* During on_message: whether the message arrived compressed (the
 * gRPC frame's flag; the bytes on_message gets are inflated already). */
bool perfc__h2_message_compressed(const perfc__h2_stream *s);
/* The call pointer on_call returned. */
void *perfc__h2_stream_call(const perfc__h2_stream *s);
/* True on the stream's loop thread (sends apply at once). */
bool perfc__h2_stream_on_loop(const perfc__h2_stream *s);
/* Any thread: runs `t` on the stream's loop (waking it), closed or not;
 * the caller keeps the stream (its reference) until `t` ran. */
struct perfc__h2_task;
void perfc__h2_stream_post(perfc__h2_stream *s, struct perfc__h2_task *t);

/* ---- gRPC helpers (grpc.c; exposed for tests and the fuzz target) ------- */

/* Parses a grpc-timeout value ("1..8 digits" + H M S m u n) into ms,
 * rounding up; returns 0 or PERFC_EPARSE. */
int perfc__h2_parse_timeout(const char *v, size_t len, int64_t *ms);
/* Percent-encodes `msg` as grpc-message wants (bytes outside 0x20-0x7E
 * and '%' become %XX) into `out` of `cap` bytes; returns the length
 * needed (output cut when it does not fit). */
size_t perfc__h2_percent_encode(const char *msg, size_t len, char *out,
                                size_t cap);
/* Inflates a gzip ("gzip") or zlib ("deflate") message, refusing output
 * beyond `limit`: 0 with *out malloc'd (free()) and *out_len; PERFC_ETOOBIG
 * once the output would pass `limit` (no more than `limit` produced);
 * PERFC_EPARSE for corrupt input; PERFC_ENOMEM. */
int perfc__h2_inflate(const char *encoding, const uint8_t *in, size_t len,
                      size_t limit, uint8_t **out, size_t *out_len);
/* Whether an HTTP Accept-Encoding value takes gzip (RFC 9110 12.5.3):
 * "gzip" or "x-gzip" with a q-value above 0, or "*" above 0 when gzip is
 * not named. NULL (no header) is false: identity is always acceptable and
 * the cheapest. Malformed members are skipped. */
bool perfc__h2_accepts_gzip(const char *v);
/* Whether an If-None-Match value matches the entity tag `tag` (its
 * opaque part, without quotes or a "-gzip" suffix): "*", or any listed
 * tag, weak or strong, whose opaque part is `tag` or `tag`-gzip (weak
 * comparison, RFC 9110 13.1.2). Malformed lists match nothing. */
bool perfc__h2_etag_matches(const char *inm, const char *tag);

#endif /* PERFC_TRANSPORT_H2_INTERNAL_H */
