/*
 * transport/h2/conn_internal.h — the structures shared by the connection
 * layer (conn.c), the gRPC layer (grpc.c) and the server (h2.c).
 *
 * Room: runtime/src/transport/h2 private header. Never used outside this
 * folder; the call layer sees h2_internal.h only.
 */
#ifndef PERFC_TRANSPORT_H2_CONN_INTERNAL_H
#define PERFC_TRANSPORT_H2_CONN_INTERNAL_H

#include "transport/h2/h2_internal.h"
#include "transport/h2/loop_internal.h"
#include "transport/h2/mem_internal.h"

#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <zlib.h>

typedef struct perfc__h2_conn perfc__h2_conn;
typedef struct perfc__h2_lctx perfc__h2_lctx;

/* Per-loop counters, written by their loop only and read from any thread
 * by perfc__h2_server_stats. Relaxed atomics (perfc__h2_count): one writer
 * needs no locked read-modify-write, and the reader only needs values that
 * are not torn; plain integers read from another thread were a data race
 * (TSan in make check, conn_destroy against perfc__h2_server_stats). */
typedef struct perfc__h2_counters {
  _Atomic uint64_t conns_accepted, conns_refused, conns_open;
  _Atomic uint64_t streams_started, streams_reset_by_client;
  _Atomic uint64_t goaway_rapid_reset, goaway_ping_abuse, closed_handshake_timeout;
} perfc__h2_counters;

/* Adds `d` to a counter of the calling loop (single writer). */
static inline void perfc__h2_count(_Atomic uint64_t *c, int64_t d) {
  atomic_store_explicit(
      c, atomic_load_explicit(c, memory_order_relaxed) + (uint64_t)d,
      memory_order_relaxed);
}

typedef struct perfc__h2_listener {
  perfc__h2_io io;
  perfc__h2_lctx *lc;
  SSL_CTX *tls; /* borrowed from the server */
} perfc__h2_listener;

/* One loop's share of the server. */
struct perfc__h2_lctx {
  perfc__h2_loop *loop;
  perfc__h2_server *srv;
  pthread_t thread;
  bool thread_started;
  perfc__h2_listener *listeners;
  size_t nlisteners;
  perfc__h2_conn *conns; /* doubly linked through conn->next/prev */
  /* Written by this loop only (hold/unhold), read by
   * perfc__h2_server_stats from any thread: relaxed loads and stores. */
  _Atomic size_t recv_held;
  size_t recv_budget;
  z_stream zgzip, zdeflate; /* response compressors, reused (deflateReset) */
  bool zgzip_ready, zdeflate_ready;
  z_stream zhttp;   /* HTTP/JSON bodies (gzip, srv->o.http_gzip_level) */
  bool zhttp_ready;
  perfc__h2_counters n;
  /* nghttp2's allocations for every session of this loop (mem.c). */
  perfc__h2_mem *mem;
  bool draining;
  int64_t drain_deadline_ms;
  perfc__h2_timer drain_timer;
  perfc__h2_task shutdown_task;
  perfc__h2_task drain_task; /* perfc__h2_server_drain */
};

struct perfc__h2_server {
  perfc__h2_opts o;
  perfc__h2_callbacks cb;
  void *data;
  perfc__h2_lctx *lcs;
  int nloops;
  SSL_CTX **tls_ctxs;
  size_t ntls;
  atomic_uint conns_open;
  bool started, stopped, drained;
  /* perfc__h2_server_drain() waits until every loop has run its drain
   * task, so no stream can begin once it returns. */
  pthread_mutex_t drain_mu;
  pthread_cond_t drain_cv;
  int drains_pending;
  perfc__h2_cors cors; /* HTTP requests' CORS; n 0 = off */
  nghttp2_session_callbacks *ngcb;
  nghttp2_option *ngopt;
};

struct perfc__h2_conn {
  perfc__h2_io io;
  perfc__h2_lctx *lc;
  perfc__h2_conn *next, *prev;
  nghttp2_session *ng;
  SSL *ssl;
  bool tls_done;
  perfc__h2_deferred flush;
  /* Output that the socket did not take yet (NULL when none). */
  uint8_t *out;
  size_t out_off, out_len, out_cap;
  char peer[64];
  char *peer_subject;
  perfc__h2_stream *streams; /* ours, doubly linked */
  uint32_t nstreams;
  perfc__h2_timer timer;
  int64_t accepted_ms, last_read_ms, idle_since_ms, age_at_ms;
  int64_t header_block_ms; /* a header block began and has not ended */
  int64_t ping_sent_ms;    /* our keepalive ping awaiting its ACK */
  int64_t last_ping_recv_ms;
  uint32_t ping_strikes;
  double reset_tokens;
  int64_t reset_refill_ms;
  size_t recv_held;
  uint32_t nowed; /* streams whose window consumption waits for budget */
  bool preface_done, goaway_sent, closing, dead, in_header_block;
  int64_t grace_deadline_ms; /* after GOAWAY for age/shutdown; 0 = none */
  /* HTTP (http1.c): until the first bytes arrive a connection of a server
   * serving HTTP does not know its protocol (`sniffing`); an HTTP/1.1 one
   * keeps its nghttp2 session unused (GOAWAY calls on it stay harmless)
   * and parses with `h1`. */
  bool sniffing;
  bool lingering; /* HTTP/1.1: answer sent, write side shut, input discarded */
  struct perfc__h1 *h1;
  /* Idle/age drain, first phase: the shutdown notice (GOAWAY with the
   * largest stream id) and a PING went at this time; the final GOAWAY
   * waits for the ACK (or keepalive_timeout). 0 = not in that phase. */
  int64_t drain_ping_ms;
  int64_t drain_grace_ms; /* the grace the final GOAWAY will get */
};

/* A stream's state (grpc.c). */
/* The inline buffers' sizes (struct perfc__h2_stream's end): a gRPC
 * client's 8-10 request headers with their lengths, a unary answer of up
 * to ~140 bytes framed, and the nv entries and bytes of a grpc-status
 * trailer (and a short grpc-message). */
#define PERFC__H2_HINL 352
#define PERFC__H2_QINL 144
#define PERFC__H2_TINL 128

struct perfc__h2_stream {
  int32_t id;
  atomic_int refs;
  atomic_bool closed; /* on_close delivered or the stream never started */
  atomic_bool want_writable;
  atomic_size_t pending; /* bytes queued in q, not yet given to nghttp2 */
  atomic_size_t posted;  /* message bytes posted by other threads, not applied */
  perfc__h2_deferred writable_d; /* on_writable, after the flush */
  perfc__h2_conn *conn; /* NULL once nghttp2 closed the stream */
  perfc__h2_stream *next, *prev;
  perfc__h2_lctx *lc;
  void *call;
  unsigned flags;
  bool started, headers_sent, finish_queued, end_stream_sent, recv_done,
      remote_closed, paused, data_deferred, trailers_only, too_big, bad,
      reason_set, owing;
  bool msg_compressed; /* the message on_message is handed came compressed */
  perfc__h2_close_reason reason;
  /* request headers, copied into hbuf: per field its name's and value's
   * lengths (two uint32_t), then name NUL value NUL (perfc__h2_hdr_next) */
  char *hbuf;
  uint32_t hlen, hcap, hsize, nhdr;
  perfc__h2_timer deadline;
  /* request message assembly */
  uint8_t pfx[5];
  uint8_t pfx_got;
  uint32_t msg_len, msg_got;
  uint8_t *msg;
  uint32_t nmsgs;
  struct pmsg *held_msgs, *held_tail; /* complete, waiting while paused */
  size_t held;  /* bytes buffered for this stream */
  size_t owed;  /* received bytes whose WINDOW_UPDATE waits for budget */
  int req_enc, send_enc, accept_mask;
  /* response */
  uint8_t *q;
  size_t qoff, qlen, qcap;
  char *trailer_buf; /* the finish, as nghttp2_nv entries + bytes */
  nghttp2_nv *trailer_nv;
  size_t trailer_n;
  /* HTTP calls: PERFC__H2_PROTO_*; the body arrives in msg (msg_got bytes
   * of msg_len allocated) and leaves raw through q. */
  uint8_t http;
  bool h1;            /* carried by an HTTP/1.1 connection (http1.c) */
  uint8_t web;        /* gRPC-Web: 1 binary, 2 text (base64) */
  uint8_t b64_pend[4], b64_npend; /* gRPC-Web text: an unfinished quad */
  size_t web_body;    /* gRPC-Web on HTTP/1.1: request bytes so far */
  bool http_head_req; /* HEAD: the response has no body */
  size_t http_head_body_len; /* HEAD: the body GET would send (Content-Length) */
  bool http_gzip;     /* the body is gzipped here (PERFC__H2_HTTP_GZIP) */
  bool h1_chunked;    /* HTTP/1.1: the body goes out chunked */
  bool h1_close;      /* HTTP/1.1: close the connection after this answer */
  bool h1_head_ready; /* HTTP/1.1: h1_head is complete and goes out first */
  uint16_t http_status; /* the head's status (204 has no length) */
  char *cors_origin;    /* an allowed Origin: CORS headers on the answer */
  char *h1_head;      /* HTTP/1.1: the status line and headers */
  size_t h1_head_len, h1_head_off, h1_head_cap;
  /* Inline room for a usual call's request headers, response bytes and
   * trailers: hbuf, q and trailer_buf point here until they outgrow it, so
   * such a call allocates none of them (glibc's malloc and free were 5 %
   * of an echo call's instructions). Last in the struct, which stays
   * within glibc's per-thread cache (1,032 bytes): perfc__h2_stream_new
   * zeroes only what comes before. */
  char hinl[PERFC__H2_HINL];
  uint8_t qinl[PERFC__H2_QINL];
  _Alignas(nghttp2_nv) char tinl[PERFC__H2_TINL];
};

/* One request header in s->hbuf at `p`: its name and value (both NUL
 * terminated) and their lengths; returns the next one's position. */
static inline char *perfc__h2_hdr_next(char *p, char **k, size_t *kl, char **v,
                                       size_t *vl) {
  uint32_t l[2];
  memcpy(l, p, sizeof l);
  *k = p + sizeof l;
  *kl = l[0];
  *v = *k + l[0] + 1;
  *vl = l[1];
  return *v + l[1] + 1;
}

/* conn.c */
void perfc__h2_conn_defer_flush(perfc__h2_conn *c);
/* Bytes to the socket in order (what it does not take is kept); false
 * when the connection broke. */
bool perfc__h2_conn_emit(perfc__h2_conn *c, const uint8_t *p, size_t len);
void perfc__h2_conn_fatal(perfc__h2_conn *c, uint32_t code, const char *why);
/* Makes the connection's timer fire at `at` (ms) at the latest. */
void perfc__h2_conn_timer_at_most(perfc__h2_conn *c, int64_t at);
void perfc__h2_conn_close_now(perfc__h2_conn *c);
void perfc__h2_conn_begin_drain(perfc__h2_conn *c, int64_t grace_ms);
int perfc__h2_listener_open(perfc__h2_lctx *lc, const char *host, int port,
                            SSL_CTX *tls, int *bound_port);
/* Before a server's SO_REUSEPORT listeners bind a given port: 0 when no
 * socket listens there, else PERFC_EBIND ("address already in use"). The
 * listeners share their port with each other, and SO_REUSEPORT would let
 * a second server (of this process or of the same user) share it too:
 * this keeps the core transport's rule that a busy port fails. */
int perfc__h2_port_exclusive(const char *host, int port);
void perfc__h2_listener_close(perfc__h2_listener *li);
int perfc__h2_callbacks_new(nghttp2_session_callbacks **out);
void perfc__h2_conn_recv_released(perfc__h2_conn *c);

/* grpc.c: the stream side of nghttp2's callbacks */
int perfc__h2_grpc_begin_headers(perfc__h2_conn *c, const nghttp2_frame *f);
int perfc__h2_grpc_header(perfc__h2_conn *c, const nghttp2_frame *f,
                          const uint8_t *name, size_t namelen,
                          const uint8_t *value, size_t valuelen);
int perfc__h2_grpc_frame_recv(perfc__h2_conn *c, const nghttp2_frame *f);
int perfc__h2_grpc_data(perfc__h2_conn *c, int32_t sid, const uint8_t *data,
                        size_t len);
void perfc__h2_grpc_frame_sent(perfc__h2_conn *c, const nghttp2_frame *f);
void perfc__h2_grpc_stream_closed(perfc__h2_conn *c, int32_t sid,
                                  uint32_t error_code);
/* The connection is going away: every stream ends with on_close(CONN). */
void perfc__h2_grpc_conn_gone(perfc__h2_conn *c);
/* Starts the call of a stream whose request headers are in s->hbuf
 * (an HTTP/2 HEADERS frame, or an HTTP/1.1 request head). */
void perfc__h2_grpc_start(perfc__h2_conn *c, perfc__h2_stream *s);
/* A new stream on `c` (id `sid`; HTTP/1.1 numbers its requests). */
perfc__h2_stream *perfc__h2_stream_new(perfc__h2_conn *c, int32_t sid);
/* Appends one request header (name, value) to s->hbuf, counting it
 * against max_header_list_bytes (past it: s->too_big). 0 or
 * PERFC_ENOMEM. */
/* Frees the response queue's memory (q); the queue is empty or dead. */
void perfc__h2_q_drop(perfc__h2_stream *s);
int perfc__h2_stream_add_header(perfc__h2_stream *s, const char *name,
                                size_t namelen, const char *value,
                                size_t valuelen);
/* HTTP calls: request body bytes, and the end of the request. */
void perfc__h2_http_body(perfc__h2_stream *s, const uint8_t *data, size_t len);
/* gRPC-Web request bytes on HTTP/1.1 (base64 for the text mode). */
void perfc__h2_web_body(perfc__h2_stream *s, const uint8_t *data, size_t len);
/* An HTTP/1.1 gRPC-Web request with a Content-Length past the body limit:
 * answered RESOURCE_EXHAUSTED as gRPC-Web; false if it is not gRPC-Web. */
bool perfc__h2_web_refuse_body(perfc__h2_stream *s, const char *msg);
void perfc__h2_http_request_done(perfc__h2_stream *s);
/* The transport's own HTTP error answer (a JSON google.rpc.Status, or an
 * error line when a streamed body already began). */
void perfc__h2_http_fail(perfc__h2_stream *s, int status,
                         perfc_status_code code, const char *msg);
/* The transport's side of a stream ends: on_close upward, buffers freed. */
void perfc__h2_grpc_stream_end(perfc__h2_conn *c, perfc__h2_stream *s,
                               perfc__h2_close_reason why);
/* HTTP/1.1 (http1.c). */
bool perfc__h2_h1_sniff(perfc__h2_conn *c, const uint8_t *p, size_t n);
/* The connection speaks HTTP/1.1 from now (sniffed, or ALPN http/1.1);
 * false (and the connection closing) when out of memory. */
bool perfc__h2_h1_begin(perfc__h2_conn *c);
bool perfc__h2_h1_feed(perfc__h2_conn *c, const uint8_t *p, size_t n);
void perfc__h2_h1_flush(perfc__h2_conn *c);
bool perfc__h2_h1_busy(const perfc__h2_conn *c);
/* The client shut its side: true when answers are still owed (the
 * connection stays until they left), false to close now. */
bool perfc__h2_h1_eof(perfc__h2_conn *c);
/* The connection stopped reading a request it will not finish (413,
 * malformed): its close lingers (conn.c). */
bool perfc__h2_h1_unread(const perfc__h2_conn *c);
void perfc__h2_h1_free(perfc__h2_conn *c);
/* An HTTP/1.1 stream's output grew or its finish was queued. */
void perfc__h2_h1_kick(perfc__h2_stream *s);
/* Consumes owed window bytes while the budgets allow. */
void perfc__h2_grpc_repay(perfc__h2_conn *c);
void perfc__h2_grpc_loop_free(perfc__h2_lctx *lc);

#endif /* PERFC_TRANSPORT_H2_CONN_INTERNAL_H */
