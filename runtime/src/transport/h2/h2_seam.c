/*
 * transport/h2/h2_seam.c — the h2 transport under the call layer: the ops
 * of server/transport_internal.h implemented on h2_internal.h's calls, and
 * h2's callbacks turned into the seam's up-calls.
 *
 * Room: runtime/src/transport/h2. Calls the call layer only through the
 * up-calls it is given.
 *
 * A unary call: on_call (loop thread) takes a context from the loop's
 * free list and copies what outlives the callback (metadata, peer) into
 * its arena; on_message copies the request into the arena; on_half_close
 * makes the `arrived` up-call, so an inline handler runs on the loop and
 * its answer leaves in the same iteration's single write. A pool handler's
 * finish (on a worker) goes through h2's posted operations: one
 * allocation holding the copied response, the loop woken once for many
 * results. A context has two holders, the call layer (until finish) and the
 * transport (until on_close); the last one releases the h2 stream and
 * recycles the context.
 *
 * A streaming call runs on a worker (the call layer puts every stream
 * there), which blocks; a loop thread never does. Server streams arrive
 * like unary calls, at the half-close, with their one request. Client and
 * bidi streams arrive at on_start, before any message: the loop then
 * queues each message (a malloc'd copy) for the worker and wakes it
 * through the call's condition variable. The queue is bounded (a message
 * beyond STREAM_RQ_BYTES / STREAM_RQ_MSGS waits in h2 with the stream's
 * window shut: on_message's PERFC_EFULL) and resumed by the worker once
 * it took enough. Sends pack into a buffer of the stream, post to the loop
 * (h2 copies), and block while h2 answers PERFC_EFULL (the stream holds
 * its high-water mark unsent: a slow reader) until on_writable, a cancel
 * or the deadline. Replies sent with PERFC__SEND_MORE post without waking
 * the loop; the next plain send, a flush, a receive that must wait or a
 * send that must wait wakes it once for all.
 */
#include "perfc/http_codec.h"
#include "perfc/log.h"
#include "core/error_internal.h"
#include "server/transport_internal.h"
#include "transport/h2/h2_internal.h"
#include "transport/h2/loop_internal.h"

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct h2t h2t;
typedef struct ctx_cache ctx_cache;

typedef struct h2call {
  perfc_ctx ctx; /* first: the ops get a perfc_ctx * */
  h2t *t;
  perfc__h2_stream *s;
  atomic_int refs; /* the call layer until finish, the transport until on_close */
  struct h2call *next_free;
  perfc_slice *md; /* request metadata: key, value pairs in the arena */
  size_t md_count;
  const char *peer;
  const uint8_t *req;
  size_t req_len;
  int have_req;
  int compressed; /* the request message arrived compressed */
  int handed_up;  /* the `arrived` up-call was made (loop thread) */
  /* ---- streams only ---- */
  int streaming;   /* a streaming method: mu/cv initialised */
  int queued;      /* client or bidi stream: messages go through rq */
  pthread_mutex_t mu; /* rq, half_closed, paused, rx_failed, waiting */
  pthread_cond_t cv;  /* the worker waits here; the loop signals */
  struct rmsg *rq, *rq_tail;
  unsigned rq_n;
  size_t rq_bytes;
  int half_closed, paused, rx_failed, waiting;
  atomic_uint wr_gen;  /* on_writable calls so far */
  struct rmsg *cur;    /* the message the handler reads (worker) */
  int held;            /* a send posted without waking the loop (worker) */
  uint8_t *sbuf;       /* packing buffer for sends (worker, or the loop) */
  size_t scap;
  struct h2call *snext, *sprev; /* t->streams, under t->mu */
  /* ---- HTTP calls only (http != 0: PERFC__H2_PROTO_*) ---- */
  int http;
  const perfc_method_desc *desc; /* the method's (call_fill) */
  void *http_match;     /* the codec's match */
  int http_refuse;      /* an HTTP status answered at the half-close */
  perfc_status_code http_refuse_code;
  const char *http_refuse_msg;
  perfc_arena *http_scratch; /* a stream's JSON lines (worker) */
  int http_get;              /* a GET: the HTTP cache may answer it */
  int http_gzip_ok;          /* Accept-Encoding takes gzip */
  const char *http_inm;      /* If-None-Match (arena) or NULL */
  /* A loop stream (ops->loop_begin): its handler's callbacks run on this
   * loop through the loop_* up-calls; loop_done once the call layer
   * finished it (loop thread only). */
  int loop, loop_done;
  /* The client half-closed a loop stream whose start waited for an
   * interceptor's decision (ctx.ic_hold_msgs): told by h2_loop_resume. */
  int early_half;
  /* ops->post: the call layer's function, run on the loop by a posted
   * record (an interceptor's decision resumed on another thread). */
  struct post_rec *post_rec;
  void (*post_fn)(perfc_ctx *ctx);
  struct h2call *pnext, *pprev; /* t->posts, under t->mu, until it ran */
} h2call;

/* A post of ops->post. Its own allocation, not the call's: a post that
 * lands as the loops stop stays in a loop's queue until the server is
 * freed (which runs what is left), long after the shutdown ran the call's
 * function itself (posts_drain) and the call was recycled. `c` is NULL
 * then (under t->mu). */
typedef struct post_rec {
  perfc__h2_task task;
  struct h2t *t;
  h2call *c;
} post_rec;

/* A request message of a client or bidi stream, queued for the worker. */
typedef struct rmsg {
  struct rmsg *next;
  size_t len;
  int compressed;
  uint8_t data[];
} rmsg;

/* What a stream's queue may hold before h2 keeps further messages (and
 * the stream's window shut): a few messages, so a handler reading in a
 * loop rarely waits for a resume, and a bound on their bytes. One message
 * is always taken however large (max_recv_message_bytes bounds it). */
#define STREAM_RQ_MSGS 32
#define STREAM_RQ_BYTES (256 * 1024)

typedef struct h2_method {
  const perfc_method_desc *desc;
  perfc__method *m;
  size_t path_len; /* strlen(desc->path): a lookup compares lengths first */
} h2_method;

struct h2t {
  perfc__h2_server *h2;
  perfc_server_opts opts;
  const perfc__call_upcalls *up;
  perfc_server *srv;
  h2_method *methods;
  size_t nmethods, cap;
  /* Open addressing over the paths, built at start: a call's lookup is one
   * hash and usually one compare. */
  h2_method **table;
  size_t table_mask;
  ctx_cache *caches; /* every loop thread's, under mu */
  perfc__compress calgo;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  h2call *streams;     /* streams on workers (cancel_all wakes them) */
  /* HTTP/JSON (perfc_server_set_http_codec); has_codec set before start. */
  perfc_http_codec codec;
  void *codec_ud;
  int has_codec;
  atomic_size_t live;  /* contexts not yet released */
  atomic_int waiting;  /* a shutdown waits on cv for live == 0 */
  int shut;
  /* ops->post not yet run (under mu): a post that lands as the loops stop
   * never runs there, so the shutdown runs what is left once they were
   * joined (posts_drain), and later posts run on the poster (loops_gone). */
  h2call *posts;
  int loops_gone;
};

static h2call *ccall_of(const perfc_ctx *ctx) { return (h2call *)(void *)ctx; }

static void http_arrived(h2call *c);
static void http_finish(h2call *c, perfc_status_code code, const char *message);
static int http_stream_send(h2call *c, const ProtobufCMessage *msg, unsigned hf);

/* Contexts are recycled per loop thread (only loop threads take them), in
 * a cache each loop thread registers with its server once; one released on
 * another thread is freed. The caches are freed with the server, after
 * its loops were joined. */
#define CTX_CACHE_MAX 1024
struct ctx_cache {
  h2call *free;
  unsigned count;
  struct ctx_cache *next;
};
static _Thread_local ctx_cache *tls_cache
    __attribute__((tls_model("initial-exec"))); /* as loop.c's current */

/* Eight bytes at a time, then murmur3's finaliser (l1cache.c's hash_key
 * does the same for cache keys). A gRPC path is 20-60 bytes; FNV-1a's
 * byte loop cost the lookup four instructions per byte, on every call. */
static uint64_t path_hash(const char *p, size_t n) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ n;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 29;
  }
  if (n > 0) {
    /* The last 1-7 bytes: two overlapping reads, or first, middle and last
     * byte; the length is in h already, so no two tails collide. */
    uint64_t w;
    if (n >= 4) {
      uint32_t a, b;
      memcpy(&a, p, 4);
      memcpy(&b, p + n - 4, 4);
      w = (uint64_t)a << 32 | b;
    } else {
      w = (uint64_t)(uint8_t)p[0] << 16 | (uint64_t)(uint8_t)p[n / 2] << 8 |
          (uint8_t)p[n - 1];
    }
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

/* always_inline: on_call (gRPC's path) kept these inline before HTTP calls
 * became their second caller (callgrind: +70 instructions per call). */
#define HOT static inline __attribute__((always_inline))

HOT h2_method *lookup(h2t *t, const char *path, size_t len) {
  if (t->table == NULL)
    return NULL;
  for (size_t i = path_hash(path, len) & t->table_mask;; i = (i + 1) & t->table_mask) {
    h2_method *m = t->table[i];
    if (m == NULL)
      return NULL;
    if (m->path_len == len && memcmp(m->desc->path, path, len) == 0)
      return m;
  }
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

HOT h2call *call_get(h2t *t) {
  ctx_cache *cc = tls_cache;
  if (cc == NULL) {
    cc = calloc(1, sizeof *cc);
    if (cc == NULL)
      return NULL;
    pthread_mutex_lock(&t->mu);
    cc->next = t->caches;
    t->caches = cc;
    pthread_mutex_unlock(&t->mu);
    tls_cache = cc;
  }
  h2call *c = cc->free;
  if (c != NULL) {
    cc->free = c->next_free;
    cc->count--;
    perfc_arena_reset(c->ctx.arena);
  } else {
    c = malloc(sizeof *c);
    if (c == NULL)
      return NULL;
    if (perfc_arena_new(&c->ctx.arena, 0) != 0) {
      free(c);
      return NULL;
    }
  }
  perfc_arena *a = c->ctx.arena;
  memset(c, 0, sizeof *c);
  c->ctx.arena = a;
  c->ctx.ops = &perfc__h2_transport_ops;
  c->ctx.srv = t->srv;
  atomic_init(&c->ctx.cancelled_flag, 0);
  atomic_init(&c->refs, 2);
  c->t = t;
  atomic_fetch_add_explicit(&t->live, 1, memory_order_relaxed);
  return c;
}

static void call_free(h2call *c) {
  perfc_arena_free(c->ctx.arena);
  free(c);
}

static void call_unref(h2call *c) {
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) != 1)
    return;
  h2t *t = c->t;
  if (c->streaming) {
    /* No callback runs for it any more (on_close was the last), and the
     * handler is gone: what the queue still holds is dropped. */
    for (rmsg *m = c->rq, *n; m != NULL; m = n) {
      n = m->next;
      free(m);
    }
    free(c->cur);
    free(c->sbuf);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    c->streaming = 0;
  }
  if (c->http_scratch != NULL) {
    perfc_arena_free(c->http_scratch);
    c->http_scratch = NULL;
  }
  int on_loop = perfc__h2_stream_on_loop(c->s);
  perfc__h2_stream_release(c->s);
  ctx_cache *cc = tls_cache;
  if (on_loop && cc != NULL && cc->count < CTX_CACHE_MAX) {
    c->next_free = cc->free;
    cc->free = c;
    cc->count++;
  } else {
    call_free(c);
  }
  /* A shutdown waiting for the last calls is woken; otherwise this is one
   * atomic decrement, no lock. */
  if (atomic_fetch_sub_explicit(&t->live, 1, memory_order_acq_rel) == 1 &&
      atomic_load_explicit(&t->waiting, memory_order_acquire)) {
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
  }
}

/* ---- h2's callbacks (loop thread) ------------------------------------------ */

static perfc_status_code on_http_call(h2t *t, perfc__h2_stream *s,
                                      const perfc__h2_call_info *info,
                                      void **call, unsigned *flags,
                                      const char **refuse_msg);

/* A context for a call of method `m` on stream `s` (loop thread): what
 * outlives on_call (metadata, peer) is copied into its arena. */
HOT void call_fill(h2call *c, h2_method *m, perfc__h2_stream *s,
               const perfc__h2_call_info *info) {
  perfc_ctx *ctx = &c->ctx;
  perfc_method_kind kind = m->desc->kind;
  if (kind != PERFC_METHOD_UNARY) {
    /* The waits use CLOCK_MONOTONIC, the clock of ctx->deadline_ns. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    c->streaming = 1;
    c->queued = !info->http && (kind == PERFC_METHOD_CLIENT_STREAM ||
                                kind == PERFC_METHOD_BIDI_STREAM);
  }
  c->s = s;
  c->desc = m->desc;
  /* PERFC__H2_PROTO_* numbers HTTP/1.1 and HTTP/2 the other way round. */
  ctx->protocol = info->http == PERFC__H2_PROTO_HTTP1   ? PERFC_PROTOCOL_HTTP1_JSON
                  : info->http == PERFC__H2_PROTO_HTTP2 ? PERFC_PROTOCOL_HTTP2_JSON
                  : info->web                           ? PERFC_PROTOCOL_GRPC_WEB
                                                        : PERFC_PROTOCOL_GRPC;
  ctx->method = m->m;
  ctx->path = m->desc->path;
  ctx->start_ns = now_ns();
  /* h2's own deadline, to the nanosecond: the call layer's waits and
   * h2_finish's check look at the same instant the transport's timer
   * fires at (or just after), not a rounded copy of it. */
  ctx->deadline_ns = info->deadline_ns;
  c->peer = perfc_arena_strdup(ctx->arena, info->peer);
  if (info->md_count > 0) {
    c->md = perfc_arena_alloc(ctx->arena, 2 * info->md_count * sizeof *c->md);
    if (c->md != NULL) {
      for (size_t i = 0; i < info->md_count; i++) {
        const perfc__h2_md *e = &info->md[i];
        char *k = perfc_arena_strndup(ctx->arena, e->key, e->key_len);
        char *v = perfc_arena_strndup(ctx->arena, e->value, e->value_len);
        if (k == NULL || v == NULL)
          break;
        c->md[2 * i] = (perfc_slice){(const uint8_t *)k, e->key_len};
        c->md[2 * i + 1] = (perfc_slice){(const uint8_t *)v, e->value_len};
        c->md_count = i + 1;
      }
    }
  }
}

static perfc_status_code on_call(void *server_data, perfc__h2_stream *s,
                                 const perfc__h2_call_info *info, void **call,
                                 unsigned *flags, const char **refuse_msg) {
  h2t *t = server_data;
  if (info->http)
    return on_http_call(t, s, info, call, flags, refuse_msg);
  h2_method *m = lookup(t, info->path, info->path_len);
  if (m == NULL) {
    static _Thread_local char msg[256];
    snprintf(msg, sizeof msg, "unknown method %s", info->path);
    *refuse_msg = msg;
    return PERFC_STATUS_UNIMPLEMENTED;
  }
  h2call *c = call_get(t);
  if (c == NULL) {
    *refuse_msg = "out of memory";
    return PERFC_STATUS_RESOURCE_EXHAUSTED;
  }
  call_fill(c, m, s, info);
  *call = c;
  *flags = c->queued ? 0 : PERFC__H2_CALL_SINGLE_REQUEST;
  return PERFC_STATUS_OK;
}

/* An HTTP request (loop thread): matched against the codec's routes now;
 * a refusal (no route, a client stream) is answered once the request is
 * read whole (on_half_close), so an HTTP/1.1 connection stays in step. */
static perfc_status_code on_http_call(h2t *t, perfc__h2_stream *s,
                                      const perfc__h2_call_info *info,
                                      void **call, unsigned *flags,
                                      const char **refuse_msg) {
  h2call *c = call_get(t);
  if (c == NULL) {
    *refuse_msg = "out of memory";
    return PERFC_STATUS_RESOURCE_EXHAUSTED;
  }
  c->http = info->http;
  c->s = s;
  *call = c;
  *flags = PERFC__H2_CALL_SINGLE_REQUEST;
  perfc_arena *a = c->ctx.arena;
  /* Negotiation and the conditional request, read now: h2's copy of the
   * headers is gone after this callback. */
  /* HEAD is a GET without the body (RFC 9110 9.3.2): the same validators
   * and the same 304. */
  c->http_get = strcmp(info->http_method, "GET") == 0 ||
                strcmp(info->http_method, "HEAD") == 0;
  c->http_gzip_ok = t->codec.gzip_level != PERFC_HTTP_GZIP_OFF &&
                    perfc__h2_accepts_gzip(info->http_accept_encoding);
  if (c->http_get && info->http_if_none_match != NULL &&
      t->codec.http_cache != PERFC_HTTP_CACHE_OFF)
    c->http_inm = perfc_arena_strdup(a, info->http_if_none_match);
  const perfc_method_desc *d = NULL;
  /* The match borrows the target (its query is bound at the half-close),
   * and h2's copy of the headers is gone after this callback. */
  char *target = perfc_arena_strndup(a, info->path, info->path_len);
  int st = target == NULL ? 503
           : t->has_codec ? t->codec.match(t->codec_ud, info->http_method,
                                           target, info->path_len, a, &d,
                                           &c->http_match)
                          : 404;
  h2_method *m = st == 0 && d != NULL ? lookup(t, d->path, strlen(d->path))
                                      : NULL;
  if (st == 0 && m == NULL)
    st = 404;
  if (st != 0) {
    c->http_refuse = st;
    c->http_refuse_code = st == 405   ? PERFC_STATUS_UNIMPLEMENTED
                          : st == 400 ? PERFC_STATUS_INVALID_ARGUMENT
                          : st == 503 ? PERFC_STATUS_RESOURCE_EXHAUSTED
                          : st == 500 ? PERFC_STATUS_INTERNAL
                                      : PERFC_STATUS_NOT_FOUND;
    c->http_refuse_msg =
        target == NULL ? "out of memory"
        : t->has_codec ? perfc_arena_strdup(a, perfc_last_error())
                     : perfc_arena_sprintf(a, "no HTTP route for %s %s",
                                           info->http_method, info->path);
    c->ctx.path = "";
    c->peer = perfc_arena_strdup(a, info->peer);
    return PERFC_STATUS_OK;
  }
  call_fill(c, m, s, info);
  if (m->desc->kind == PERFC_METHOD_CLIENT_STREAM ||
      m->desc->kind == PERFC_METHOD_BIDI_STREAM) {
    c->http_refuse = 501;
    c->http_refuse_code = PERFC_STATUS_UNIMPLEMENTED;
    c->http_refuse_msg = perfc_arena_sprintf(
        a, "%s is a %s-streaming method: HTTP/JSON carries unary and "
           "server-streaming methods only (call it over gRPC or gRPC-Web)",
        m->desc->path,
        m->desc->kind == PERFC_METHOD_CLIENT_STREAM ? "client" : "bidi");
  }
  return PERFC_STATUS_OK;
}

static void on_start(void *call, perfc__h2_stream *s) {
  (void)s;
  h2call *c = call;
  /* A client or bidi stream's handler runs before its first message: the
   * client may wait for the server to speak first. */
  if (c->queued) {
    c->handed_up = 1;
    c->t->up->arrived(&c->ctx);
  }
}

/* A queued stream's message, for its worker (loop thread). */
static int queue_message(h2call *c, const uint8_t *bytes, size_t len) {
  pthread_mutex_lock(&c->mu);
  int full = c->rq_n > 0 && (c->rq_n >= STREAM_RQ_MSGS ||
                             c->rq_bytes + len > STREAM_RQ_BYTES);
  if (full)
    c->paused = 1;
  pthread_mutex_unlock(&c->mu);
  if (full)
    return PERFC_EFULL; /* h2 keeps it until perfc__h2_resume_recv */
  rmsg *m = malloc(sizeof *m + len);
  pthread_mutex_lock(&c->mu);
  if (m == NULL) {
    c->rx_failed = 1;
  } else {
    m->next = NULL;
    m->len = len;
    m->compressed = perfc__h2_message_compressed(c->s);
    if (len > 0)
      memcpy(m->data, bytes, len);
    if (c->rq_tail != NULL)
      c->rq_tail->next = m;
    else
      c->rq = m;
    c->rq_tail = m;
    c->rq_n++;
    c->rq_bytes += len;
  }
  if (c->waiting)
    pthread_cond_signal(&c->cv);
  pthread_mutex_unlock(&c->mu);
  return 0;
}

/* Wakes the stream's worker, whatever it waits for. */
static void stream_wake(h2call *c) {
  pthread_mutex_lock(&c->mu);
  if (c->waiting)
    pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
}

static int on_message(void *call, perfc__h2_stream *s, const uint8_t *bytes,
                      size_t len) {
  h2call *c = call;
  if (c->loop) {
    /* A finished loop stream ignores what the client still sends (h2
     * resets it once the status is out). */
    if (c->loop_done)
      return 0;
    c->compressed = perfc__h2_message_compressed(s);
    return c->t->up->loop_message(&c->ctx, bytes, len);
  }
  /* A loop stream waiting for an interceptor's decision: h2 holds the
   * message (and what follows) until the stream starts (loop_resume). */
  if (c->ctx.ic_hold_msgs)
    return PERFC_EFULL;
  if (c->queued)
    return queue_message(c, bytes, len);
  c->compressed = perfc__h2_message_compressed(s);
  /* h2 allows one message on a single-request method; the bytes are
   * borrowed for this callback, so they go to the arena. */
  uint8_t *p = perfc_arena_alloc(c->ctx.arena, len ? len : 1);
  if (p == NULL)
    return 0; /* on_half_close answers RESOURCE_EXHAUSTED (have_req 0) */
  memcpy(p, bytes, len);
  c->req = p;
  c->req_len = len;
  c->have_req = 1;
  return 0;
}

static void on_half_close(void *call, perfc__h2_stream *s) {
  (void)s;
  h2call *c = call;
  if (c->loop) {
    if (!c->loop_done)
      c->t->up->loop_half_close(&c->ctx);
    return;
  }
  if (c->ctx.ic_hold_msgs) {
    c->early_half = 1; /* told at the stream's start (h2_loop_resume) */
    return;
  }
  if (c->queued) {
    pthread_mutex_lock(&c->mu);
    c->half_closed = 1;
    if (c->waiting)
      pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return;
  }
  if (c->http) {
    http_arrived(c);
    return;
  }
  c->handed_up = 1;
  c->t->up->arrived(&c->ctx);
}

static void on_writable(void *call, perfc__h2_stream *s) {
  (void)s;
  h2call *c = call;
  if (c->loop) {
    if (!c->loop_done)
      c->t->up->loop_writable(&c->ctx);
    return;
  }
  /* Only a stream's send waits for this (a unary response never does). */
  if (c->streaming) {
    atomic_fetch_add_explicit(&c->wr_gen, 1, memory_order_release);
    stream_wake(c);
  }
}

static void on_close(void *call, perfc__h2_stream *s,
                     perfc__h2_close_reason why) {
  (void)s;
  h2call *c = call;
  /* The handler sees it, and client calls it made under this call are
   * cancelled (the call layer's registry: h2 has no parent call of the C
   * core to propagate through). */
  if (why != PERFC__H2_CLOSE_DONE)
    c->t->up->cancel(&c->ctx);
  /* A loop stream's handler learns of it here, and the call layer ends
   * the call (its finish comes back through h2_finish, loop_done). */
  if (c->loop && !c->loop_done)
    c->t->up->loop_cancel(&c->ctx, why == PERFC__H2_CLOSE_DEADLINE
                                       ? PERFC_STATUS_DEADLINE_EXCEEDED
                                       : PERFC_STATUS_CANCELLED);
  if (c->streaming) {
    /* A worker blocked in a receive or a send learns of it now; "done"
     * wakes it too (a stream whose status went out has nothing to wait
     * for). */
    pthread_mutex_lock(&c->mu);
    c->half_closed = 1;
    if (c->waiting)
      pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
  }
  /* A call h2 ended before it was complete (a refused message, a reset,
   * its deadline) never reached the call layer: its hold goes too. */
  if (!c->handed_up)
    atomic_fetch_sub_explicit(&c->refs, 1, memory_order_relaxed);
  call_unref(c);
}

/* ---- per-call ops ------------------------------------------------------------ */

/* A `-bin` value as the wire carries it: base64 without padding (what
 * grpc sends; readers accept either), in the arena. NULL on OOM. */
static char *base64(perfc_arena *a, const uint8_t *in, size_t n, size_t *out_len) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  char *out = perfc_arena_alloc(a, (n + 2) / 3 * 4 + 1);
  if (out == NULL)
    return NULL;
  size_t o = 0, i = 0;
  for (; i + 2 < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
    out[o++] = tab[v >> 18];
    out[o++] = tab[(v >> 12) & 63];
    out[o++] = tab[(v >> 6) & 63];
    out[o++] = tab[v & 63];
  }
  if (i < n) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0);
    out[o++] = tab[v >> 18];
    out[o++] = tab[(v >> 12) & 63];
    if (i + 1 < n)
      out[o++] = tab[(v >> 6) & 63];
  }
  out[o] = '\0';
  *out_len = o;
  return out;
}

/* The call layer's metadata as h2's entries, in the arena. h2 sends values
 * as given, so binary (`-bin`) values are base64-encoded here, as request
 * values arrive decoded. */
static perfc__h2_md *md_array(perfc_ctx *ctx, const perfc__md_list *l) {
  if (l->count == 0)
    return NULL;
  perfc__h2_md *md = perfc_arena_alloc(ctx->arena, l->count * sizeof *md);
  if (md == NULL)
    return NULL;
  for (size_t i = 0; i < l->count; i++) {
    const perfc__md_entry *e = &l->items[i];
    size_t kl = strlen(e->key);
    md[i] = (perfc__h2_md){
        .key = e->key, .key_len = kl, .value = e->value, .value_len = e->len};
    if (kl > 4 && strcmp(e->key + kl - 4, "-bin") == 0) {
      md[i].value = base64(ctx->arena, (const uint8_t *)e->value, e->len,
                           &md[i].value_len);
      if (md[i].value == NULL)
        return NULL;
    }
  }
  return md;
}

static void h2_send_headers(h2call *c) {
  perfc_ctx *ctx = &c->ctx;
  if (ctx->initial_md_sent)
    return;
  perfc__compress algo = ctx->comp_set ? ctx->comp_algo : c->t->calgo;
  if (algo != PERFC__COMPRESS_NONE)
    perfc__h2_set_send_encoding(c->s, perfc__compress_name(algo));
  /* Without metadata the headers go with the first message or the finish
   * (a failed call is then trailers-only). */
  if (ctx->initial_md.count > 0) {
    perfc__h2_md *md = md_array(ctx, &ctx->initial_md);
    perfc__h2_send_headers(c->s, md, md ? ctx->initial_md.count : 0,
                           PERFC__H2_SEND_MORE);
  }
  ctx->initial_md_sent = 1;
}

static void loop_unlist(h2call *c);

static void h2_finish(perfc_ctx *ctx) {
  h2call *c = ccall_of(ctx);
  if (c->loop && !c->loop_done) {
    c->loop_done = 1;
    loop_unlist(c);
  }
  if (!c->http)
    h2_send_headers(c);
  perfc_status_code code = ctx->code;
  const char *message = ctx->message;
  /* A call failing once its deadline passed failed because of it (a
   * stream's receive woke at the deadline and the handler answered
   * CANCELLED): the client is told DEADLINE_EXCEEDED, as h2's own deadline
   * timer would have said had it run first, and as the C core says. */
  if (code != PERFC_STATUS_OK && code != PERFC_STATUS_DEADLINE_EXCEEDED &&
      ctx->deadline_ns != INT64_MAX &&
      /* the call layer's rule: under 1 ms left counts as passed */
      perfc__deadline_left_ms(ctx->deadline_ns, now_ns()) == 0) {
    message = perfc_arena_sprintf(ctx->arena, "deadline exceeded (the handler "
                                  "then ended with %s: %s)",
                                  perfc_status_name(code),
                                  message ? message : "");
    code = PERFC_STATUS_DEADLINE_EXCEEDED;
  }
  if (c->http) {
    http_finish(c, code, message);
    call_unref(c);
    return;
  }
  if (code == PERFC_STATUS_OK && ctx->has_response) {
    const uint8_t *bytes = ctx->response.bytes;
    size_t len = ctx->response.len;
    uint8_t *buf = NULL;
    if (ctx->response.msg != NULL) {
      buf = perfc_arena_alloc(ctx->arena, len ? len : 1);
      if (buf != NULL)
        protobuf_c_message_pack(ctx->response.msg, buf);
      bytes = buf;
    }
    int rc = bytes != NULL
                 ? perfc__h2_send_message(c->s, bytes, len,
                                          ctx->comp_off ? PERFC__H2_SEND_NO_COMPRESS
                                                        : 0)
                 : PERFC_ENOMEM;
    if (rc == PERFC_ENOMEM || rc == PERFC_ETOOBIG) {
      code = PERFC_STATUS_RESOURCE_EXHAUSTED;
      message = rc == PERFC_ENOMEM ? "out of memory sending the response"
                                   : "response over max_send_message_bytes";
    }
  }
  perfc__h2_md *md = md_array(ctx, &ctx->trailing_md);
  perfc__h2_finish(c->s, code, message, md, md ? ctx->trailing_md.count : 0, 0);
  call_unref(c);
}

static void h2_refuse(perfc_ctx *ctx) { h2_finish(ctx); }

static void h2_watch_close(perfc_ctx *ctx) {
  (void)ctx; /* h2 reports every close (on_close) */
}

static perfc_status_code h2_request(perfc_ctx *ctx, const uint8_t **data,
                                    size_t *len) {
  h2call *c = ccall_of(ctx);
  if (!c->have_req) {
    ctx->wire_message = perfc_arena_sprintf(
        ctx->arena, "%s: out of memory reading the request message",
        ctx->path);
    return PERFC_STATUS_RESOURCE_EXHAUSTED;
  }
  *data = c->req;
  *len = c->req_len;
  return PERFC_STATUS_OK;
}

static int h2_message_compressed(const perfc_ctx *ctx) {
  const h2call *c = ccall_of(ctx);
  /* A queued stream's: the message the handler was given last. */
  if (c->queued && !c->loop)
    return c->cur != NULL && c->cur->compressed;
  return c->compressed;
}

static const char *h2_peer(perfc_ctx *ctx) {
  const char *p = ccall_of(ctx)->peer;
  return p != NULL ? p : "unknown";
}

static size_t h2_md_count(const perfc_ctx *ctx) {
  return ccall_of(ctx)->md_count;
}

static void h2_md_at(const perfc_ctx *ctx, size_t i, perfc_slice *key,
                     perfc_slice *value) {
  const h2call *c = ccall_of(ctx);
  *key = c->md[2 * i];
  *value = c->md[2 * i + 1];
}

/* ---- streams, on the handler's worker -------------------------------------- */

/* Posts held back without a wake (PERFC__H2_SEND_MORE) go out now. */
static void flush_held(h2call *c) {
  if (c->held) {
    c->held = 0;
    perfc__h2_flush(c->s);
  }
}

/* Waits on c->cv (c->mu held) until the loop signals, or until the call's
 * deadline: nobody signals when a deadline the server lowered passes. */
static void wait_locked(h2call *c) {
  c->waiting = 1;
  int64_t d = c->ctx.deadline_ns;
  if (d == INT64_MAX) {
    pthread_cond_wait(&c->cv, &c->mu);
  } else {
    struct timespec ts = {.tv_sec = d / 1000000000, .tv_nsec = d % 1000000000};
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
  }
  c->waiting = 0;
}

static int stream_cancelled(h2call *c) {
  return c->t->up->cancelled(&c->ctx);
}

/* ---- HTTP calls -------------------------------------------------------------- */

/* Response metadata as HTTP headers, grpc-gateway's way: header metadata
 * as `grpc-metadata-KEY`, trailing metadata (with no trailers on a plain
 * HTTP answer) as `grpc-trailer-KEY`. In the arena; *n entries. */
static perfc__h2_md *http_md(perfc_ctx *ctx, int trailing, size_t *n) {
  size_t total = ctx->initial_md.count + (trailing ? ctx->trailing_md.count : 0);
  *n = 0;
  if (total == 0)
    return NULL;
  perfc__h2_md *md = perfc_arena_alloc(ctx->arena, total * sizeof *md);
  if (md == NULL)
    return NULL;
  for (int pass = 0; pass < 1 + (trailing != 0); pass++) {
    const perfc__md_list *l = pass ? &ctx->trailing_md : &ctx->initial_md;
    for (size_t i = 0; i < l->count; i++) {
      const perfc__md_entry *e = &l->items[i];
      size_t kl = strlen(e->key);
      if (kl > 4 && strcmp(e->key + kl - 4, "-bin") == 0)
        continue; /* binary values have no HTTP/JSON form here */
      char *k = perfc_arena_sprintf(ctx->arena, "%s%s",
                                    pass ? "grpc-trailer-" : "grpc-metadata-",
                                    e->key);
      if (k == NULL)
        return NULL;
      md[(*n)++] = (perfc__h2_md){k, strlen(k), e->value, e->len};
    }
  }
  return md;
}

/* An error answer with the codec's body: `status` 0 takes the codec's
 * HTTP status for `code`. Loop thread or worker. */
static void http_error(h2call *c, int status, perfc_status_code code,
                       const char *msg) {
  h2t *t = c->t;
  char *body = NULL;
  size_t len = 0;
  int st = t->codec.error(t->codec_ud, code, msg ? msg : "", c->ctx.arena,
                          &body, &len);
  if (st < 0) {
    /* No body could be made: h2 answers 500 with its own. */
    perfc__h2_finish(c->s, code, msg, NULL, 0, 0);
    return;
  }
  if (status == 0)
    status = st;
  perfc__h2_http_head(c->s, status, t->codec.content_type, NULL, 0,
                      PERFC__H2_SEND_MORE);
  perfc__h2_send_message(c->s, (const uint8_t *)body, len, PERFC__H2_SEND_MORE);
  perfc__h2_finish(c->s, code, msg, NULL, 0, 0);
}

/* The request was read whole (loop thread): a refusal is answered now;
 * otherwise the body becomes the method's request message, packed, so
 * the call layer decodes it (and checks its strings) as a gRPC one. */
static void http_arrived(h2call *c) {
  h2t *t = c->t;
  perfc_arena *a = c->ctx.arena;
  if (c->http_refuse) {
    http_error(c, c->http_refuse, c->http_refuse_code, c->http_refuse_msg);
    return;
  }
  ProtobufCMessage *req = NULL;
  const char *body = c->have_req ? (const char *)c->req : "";
  size_t blen = c->have_req ? c->req_len : 0;
  if (t->codec.decode(t->codec_ud, c->http_match, body, blen, a, &req) != 0) {
    http_error(c, 400, PERFC_STATUS_INVALID_ARGUMENT,
               perfc_arena_strdup(a, perfc_last_error()));
    return;
  }
  size_t n = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = perfc_arena_alloc(a, n ? n : 1);
  if (buf == NULL) {
    http_error(c, 503, PERFC_STATUS_RESOURCE_EXHAUSTED,
               "out of memory decoding the request");
    return;
  }
  protobuf_c_message_pack(req, buf);
  c->req = buf;
  c->req_len = n;
  c->have_req = 1;
  c->handed_up = 1;
  t->up->arrived(&c->ctx);
}

/* google.api.HttpBody (google/api/httpbody.proto) answers as itself:
 * `data` is the body and `content_type` its media type (grpc-gateway's
 * rule), so a method can serve a page or a file beside the JSON routes.
 * Told by the descriptor's name and fields, so libperfc needs no generated
 * code of it. Returns 1 when `resp` is one and the answer was sent. */
static int http_send_body_msg(h2call *c, const ProtobufCMessage *resp,
                              perfc__h2_md *md, size_t nmd) {
  const ProtobufCMessageDescriptor *d = resp->descriptor;
  if (strcmp(d->name, "google.api.HttpBody") != 0)
    return 0;
  const ProtobufCFieldDescriptor *ct =
      protobuf_c_message_descriptor_get_field(d, 1);
  const ProtobufCFieldDescriptor *data =
      protobuf_c_message_descriptor_get_field(d, 2);
  if (!ct || ct->type != PROTOBUF_C_TYPE_STRING || !data ||
      data->type != PROTOBUF_C_TYPE_BYTES ||
      data->label == PROTOBUF_C_LABEL_REPEATED)
    return 0;
  const char *type = *(char *const *)((const char *)resp + ct->offset);
  const ProtobufCBinaryData *b =
      (const ProtobufCBinaryData *)((const char *)resp + data->offset);
  perfc__h2_http_head(c->s, 200,
                      type && *type ? type : "application/octet-stream", md,
                      nmd, PERFC__H2_SEND_MORE);
  perfc__h2_send_message(c->s, b->data ? b->data : (const uint8_t *)"", b->len,
                         PERFC__H2_SEND_MORE);
  perfc__h2_finish(c->s, PERFC_STATUS_OK, NULL, NULL, 0, 0);
  return 1;
}

/* Media types worth gzipping: text and JSON or XML in any flavour. */
static int compressible(const char *ct) {
  if (ct == NULL)
    return 0;
  if (strncmp(ct, "text/", 5) == 0)
    return 1;
  if (strncmp(ct, "application/", 12) != 0)
    return 0;
  const char *sub = ct + 12;
  size_t n = strcspn(sub, "; ");
  static const char *const types[] = {"json", "x-ndjson", "xml", "javascript",
                                      "ecmascript"};
  for (size_t i = 0; i < sizeof types / sizeof *types; i++)
    if (strlen(types[i]) == n && strncmp(sub, types[i], n) == 0)
      return 1;
  return n > 5 && (strncmp(sub + n - 5, "+json", 5) == 0 ||
                   strncmp(sub + n - 4, "+xml", 4) == 0);
}

/* 64x64 -> 128-bit multiply, folded: the mixing step of wyhash/rapidhash. */
static inline uint64_t etag_mix(uint64_t a, uint64_t b) {
  __uint128_t r = (__uint128_t)a * b;
  return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t etag_word(const unsigned char *p) {
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

/* The entity tag of a body: a 128-bit hash of the bytes, base64url (22
 * characters). A strong validator: the same bytes give the same tag on
 * every replica (the seeds are constants), and a changed body changes it
 * short of a 2^-64 accident. It is a multiply-fold hash in the style of
 * wyhash, not SHA-256: OpenSSL 3's one-shot SHA256() cost 14,000
 * instructions per answer (about a third of a JSON GetUser), this costs
 * about 10 per 16 bytes. It is not collision resistant against someone who
 * crafts bodies; an ETag is no security boundary (the worst a collision
 * does is a 304 to a client that holds the other body of the same URL). */
static void etag_of(const char *body, size_t len, char out[23]) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  static const uint64_t k0 = 0x2d358dccaa6c78a5ull, k1 = 0x8bb84b93962eacc9ull,
                        k2 = 0x4b33a62ed433d4a3ull, k3 = 0x9e3779b97f4a7c15ull;
  const unsigned char *p = (const unsigned char *)body;
  uint64_t a = k0 ^ etag_mix(len ^ k1, k2), b = k3 ^ len;
  size_t n = len;
  for (; n >= 16; p += 16, n -= 16) {
    uint64_t x = etag_word(p), y = etag_word(p + 8);
    a = etag_mix(x ^ k1 ^ a, y ^ k2);
    b = etag_mix(y ^ k3 ^ b, x ^ k0) + a;
  }
  unsigned char tail[16] = {0};
  if (n > 0)
    memcpy(tail, p, n);
  uint64_t x = etag_word(tail), y = etag_word(tail + 8);
  a = etag_mix(x ^ k1 ^ a, y ^ k2 ^ n);
  b = etag_mix(y ^ k3 ^ b, x ^ k0 ^ len) + a;
  uint64_t h[2] = {etag_mix(a ^ k2, b ^ k3), 0};
  h[1] = etag_mix(b ^ k0, h[0] ^ k1);
  unsigned char d[16];
  memcpy(d, h, 16);
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < 16; i++) {
    acc = (acc << 8) | d[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out[o++] = tab[(acc >> bits) & 63];
    }
  }
  out[o++] = tab[(acc << (6 - bits)) & 63]; /* 128 = 21 * 6 + 2 */
  out[o] = '\0';
}

/* A unary answer's head and body: gzip when the client takes it and the
 * body is worth it; for a GET of a (perfc.cache) method an ETag and
 * Cache-Control, and 304 with no body when If-None-Match names the ETag. */
static void http_answer(h2call *c, perfc__h2_md *md, size_t nmd,
                        const char *body, size_t len) {
  h2t *t = c->t;
  perfc_ctx *ctx = &c->ctx;
  const perfc_http_codec *k = &t->codec;
  perfc__h2_md *all = perfc_arena_alloc(ctx->arena, (nmd + 4) * sizeof *all);
  if (all == NULL) {
    http_error(c, 503, PERFC_STATUS_RESOURCE_EXHAUSTED,
               "out of memory writing the answer");
    return;
  }
  if (nmd > 0)
    memcpy(all, md, nmd * sizeof *md);
  size_t n = nmd;
  size_t min = k->gzip_min_bytes ? k->gzip_min_bytes
                                 : PERFC_DEFAULT_HTTP_GZIP_MIN_BYTES;
  /* Whether the body depends on Accept-Encoding: then caches must know. */
  int varies = k->gzip_level != PERFC_HTTP_GZIP_OFF && len >= min &&
               compressible(k->content_type);
  int gz = varies && c->http_gzip_ok;
  if (varies)
    all[n++] = (perfc__h2_md){"vary", 4, "accept-encoding", 15};
  if (c->http_get && c->desc != NULL && c->desc->cached &&
      k->http_cache != PERFC_HTTP_CACHE_OFF) {
    char tag[23];
    etag_of(body, len, tag);
    char *et = perfc_arena_sprintf(ctx->arena, "\"%s%s\"", tag,
                                   gz ? "-gzip" : "");
    int64_t ttl_s = c->desc->cache_ttl_ms / 1000;
    char *cc = k->http_cache == PERFC_HTTP_CACHE_MAX_AGE && ttl_s > 0
                   ? perfc_arena_sprintf(ctx->arena, "private, max-age=%lld",
                                         (long long)ttl_s)
                   : "private, no-cache";
    if (et == NULL || cc == NULL) {
      http_error(c, 503, PERFC_STATUS_RESOURCE_EXHAUSTED,
                 "out of memory writing the answer");
      return;
    }
    all[n++] = (perfc__h2_md){"etag", 4, et, strlen(et)};
    all[n++] = (perfc__h2_md){"cache-control", 13, cc, strlen(cc)};
    if (c->http_inm != NULL && perfc__h2_etag_matches(c->http_inm, tag)) {
      /* The client has these bytes: the validators and no body. */
      perfc__h2_http_head(c->s, 304, NULL, all, n, PERFC__H2_SEND_MORE);
      perfc__h2_finish(c->s, PERFC_STATUS_OK, NULL, NULL, 0, 0);
      return;
    }
  }
  unsigned hf = PERFC__H2_SEND_MORE;
  if (gz) {
    all[n++] = (perfc__h2_md){"content-encoding", 16, "gzip", 4};
    hf |= PERFC__H2_HTTP_GZIP;
  }
  perfc__h2_http_head(c->s, 200, k->content_type, all, n, hf);
  perfc__h2_send_message(c->s, (const uint8_t *)body, len, PERFC__H2_SEND_MORE);
  perfc__h2_finish(c->s, PERFC_STATUS_OK, NULL, NULL, 0, 0);
}

/* The call layer's finish of an HTTP call (loop thread or worker). */
static void http_finish(h2call *c, perfc_status_code code, const char *message) {
  perfc_ctx *ctx = &c->ctx;
  h2t *t = c->t;
  if (ctx->stream != NULL && ctx->initial_md_sent) {
    /* A server stream's NDJSON body began: a failure is its last line. */
    if (code != PERFC_STATUS_OK) {
      char *body = NULL;
      size_t len = 0;
      if (t->codec.error(t->codec_ud, code, message ? message : "", ctx->arena,
                         &body, &len) >= 0) {
        char *line = perfc_arena_sprintf(ctx->arena, "{\"error\":%.*s}\n",
                                         (int)len, body);
        if (line != NULL)
          perfc__h2_send_message(c->s, (const uint8_t *)line, strlen(line),
                                 PERFC__H2_SEND_MORE);
      }
    }
    perfc__h2_finish(c->s, code, message, NULL, 0, 0);
    return;
  }
  if (code != PERFC_STATUS_OK) {
    http_error(c, 0, code, message);
    return;
  }
  size_t nmd;
  perfc__h2_md *md = http_md(ctx, 1, &nmd);
  if (ctx->stream != NULL) {
    /* A server stream that sent nothing: an empty NDJSON body. */
    perfc__h2_http_head(c->s, 200, t->codec.stream_content_type, md, nmd,
                        PERFC__H2_SEND_MORE | PERFC__H2_HTTP_STREAM);
    perfc__h2_finish(c->s, code, NULL, NULL, 0, 0);
    return;
  }
  const ProtobufCMessage *resp = ctx->response.msg;
  if (resp == NULL && ctx->has_response && t->codec.encode_bytes != NULL &&
      strcmp(c->desc->output->name, "google.api.HttpBody") != 0) {
    /* A raw response (a cache hit's stored bytes): the codec writes them
     * straight (the gateway remembers recent ones). On failure the path
     * below unpacks them and reports what is wrong. */
    char *body = NULL;
    size_t len = 0;
    if (t->codec.encode_bytes(t->codec_ud, c->http_match, c->desc->output,
                              ctx->response.bytes, ctx->response.len,
                              ctx->arena, &body, &len) == 0) {
      http_answer(c, md, nmd, body, len);
      return;
    }
  }
  if (resp == NULL && ctx->has_response) {
    /* A raw response (perfc_ctx_set_raw_response): JSON needs the message. */
    ProtobufCAllocator al = perfc_arena_allocator(ctx->arena);
    resp = protobuf_c_message_unpack(c->desc->output, &al,
                                     ctx->response.len, ctx->response.bytes);
  }
  if (resp != NULL && http_send_body_msg(c, resp, md, nmd))
    return;
  char *body = NULL;
  size_t len = 0;
  if (resp == NULL ||
      t->codec.encode(t->codec_ud, c->http_match, resp, ctx->arena, &body,
                      &len) != 0) {
    http_error(c, 500, PERFC_STATUS_INTERNAL,
               perfc_arena_sprintf(ctx->arena, "%s: the response cannot be "
                                   "written as JSON: %s",
                                   ctx->path, perfc_last_error()));
    return;
  }
  http_answer(c, md, nmd, body, len);
}

/* One server-stream message as an NDJSON line (the handler's worker). */
static int http_stream_send(h2call *c, const ProtobufCMessage *msg,
                            unsigned hf) {
  perfc_ctx *ctx = &c->ctx;
  h2t *t = c->t;
  if (!ctx->initial_md_sent) {
    size_t nmd;
    perfc__h2_md *md = http_md(ctx, 0, &nmd);
    perfc__h2_http_head(c->s, 200, t->codec.stream_content_type, md, nmd,
                        PERFC__H2_SEND_MORE | PERFC__H2_HTTP_STREAM);
    ctx->initial_md_sent = 1;
  }
  /* Each line in a scratch arena of the stream, reset per message: a long
   * stream does not grow the call's arena. */
  if (c->http_scratch == NULL && perfc_arena_new(&c->http_scratch, 0) != 0)
    return PERFC_ESHUTDOWN;
  perfc_arena_reset(c->http_scratch);
  char *json = NULL;
  size_t len = 0;
  if (t->codec.encode(t->codec_ud, c->http_match, msg, c->http_scratch, &json,
                      &len) != 0)
    return PERFC_ESHUTDOWN;
  char *line = perfc_arena_alloc(c->http_scratch, len + 1);
  if (line == NULL)
    return PERFC_ESHUTDOWN;
  memcpy(line, json, len);
  line[len] = '\n';
  for (;;) {
    unsigned gen = atomic_load_explicit(&c->wr_gen, memory_order_acquire);
    int rc = perfc__h2_send_message(c->s, (const uint8_t *)line, len + 1, hf);
    if (rc == 0)
      break;
    if (rc != PERFC_EFULL)
      return PERFC_ESHUTDOWN;
    flush_held(c);
    pthread_mutex_lock(&c->mu);
    while (atomic_load_explicit(&c->wr_gen, memory_order_acquire) == gen &&
           !stream_cancelled(c))
      wait_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (stream_cancelled(c))
      return PERFC_ESHUTDOWN;
  }
  c->held = (hf & PERFC__H2_SEND_MORE) != 0;
  return 0;
}

static int h2_stream_begin(perfc_ctx *ctx) {
  h2call *c = ccall_of(ctx);
  h2t *t = c->t;
  /* stream_end's hold: the context outlives the finish on this worker. */
  atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
  pthread_mutex_lock(&t->mu);
  c->sprev = NULL;
  c->snext = t->streams;
  if (t->streams != NULL)
    t->streams->sprev = c;
  t->streams = c;
  pthread_mutex_unlock(&t->mu);
  return 0;
}

static int h2_stream_recv(perfc_ctx *ctx, perfc_arena *a, const uint8_t **data,
                          size_t *len, int64_t *now) {
  (void)a; /* the message is borrowed from the queue until the next receive */
  h2call *c = ccall_of(ctx);
  free(c->cur);
  c->cur = NULL;
  pthread_mutex_lock(&c->mu);
#define RECV_READY() \
  (c->rq != NULL || c->half_closed || c->rx_failed || stream_cancelled(c))
  if (!RECV_READY()) {
    /* Nothing written may wait while we do. */
    pthread_mutex_unlock(&c->mu);
    flush_held(c);
    pthread_mutex_lock(&c->mu);
    while (!RECV_READY())
      wait_locked(c);
    *now = now_ns();
  }
#undef RECV_READY
  int rc;
  if (stream_cancelled(c)) {
    rc = PERFC_ESHUTDOWN;
  } else if (c->rq != NULL) {
    rmsg *m = c->rq;
    c->rq = m->next;
    if (c->rq == NULL)
      c->rq_tail = NULL;
    c->rq_n--;
    c->rq_bytes -= m->len;
    c->cur = m;
    *data = m->data;
    *len = m->len;
    rc = 1;
  } else if (c->rx_failed) {
    rc = PERFC_ETOOBIG;
  } else {
    rc = 0; /* the client half-closed */
  }
  /* Half drained: h2 delivers what it kept, so the queue refills while the
   * handler works on what is here. */
  int resume = c->paused && c->rq_n <= STREAM_RQ_MSGS / 2 &&
               c->rq_bytes <= STREAM_RQ_BYTES / 2;
  if (resume)
    c->paused = 0;
  pthread_mutex_unlock(&c->mu);
  if (resume)
    perfc__h2_resume_recv(c->s);
  if (rc == PERFC_ETOOBIG) {
    ctx->wire_code = PERFC_STATUS_RESOURCE_EXHAUSTED;
    ctx->wire_message = perfc_arena_sprintf(
        ctx->arena, "%s: out of memory receiving a stream message", ctx->path);
  }
  return rc;
}

static int h2_stream_recv_ready(perfc_ctx *ctx) {
  h2call *c = ccall_of(ctx);
  pthread_mutex_lock(&c->mu);
  int r = c->rq != NULL;
  pthread_mutex_unlock(&c->mu);
  return r;
}

static int h2_stream_send(perfc_ctx *ctx, const perfc__payload *p,
                          unsigned flags) {
  h2call *c = ccall_of(ctx);
  if (c->http)
    return http_stream_send(c, p->msg, flags & PERFC__SEND_MORE
                                           ? PERFC__H2_SEND_MORE
                                           : 0);
  h2_send_headers(c);
  const uint8_t *bytes = p->bytes;
  size_t len = p->len;
  if (p->msg != NULL) {
    if (len > c->scap) {
      size_t cap = c->scap ? c->scap : 256;
      while (cap < len)
        cap *= 2;
      uint8_t *nb = realloc(c->sbuf, cap);
      if (nb == NULL)
        return PERFC_ESHUTDOWN;
      c->sbuf = nb;
      c->scap = cap;
    }
    protobuf_c_message_pack(p->msg, c->sbuf);
    bytes = c->sbuf;
  }
  unsigned hf = ((flags & PERFC__SEND_MORE) ? PERFC__H2_SEND_MORE : 0) |
                ((flags & PERFC__SEND_NO_COMPRESS) || ctx->comp_off
                     ? PERFC__H2_SEND_NO_COMPRESS
                     : 0);
  for (;;) {
    unsigned gen = atomic_load_explicit(&c->wr_gen, memory_order_acquire);
    int rc = perfc__h2_send_message(c->s, bytes, len, hf);
    if (rc == 0)
      break;
    if (rc != PERFC_EFULL)
      return PERFC_ESHUTDOWN;
    /* A loop stream never waits: h2 calls on_writable once it drained. */
    if (flags & PERFC__SEND_NO_WAIT)
      return PERFC_EFULL;
    /* Flow control: the stream holds its high-water mark unsent (a slow
     * reader). What was posted without a wake must reach the loop, or it
     * would never drain; then wait for on_writable (or the end). */
    flush_held(c);
    pthread_mutex_lock(&c->mu);
    while (atomic_load_explicit(&c->wr_gen, memory_order_acquire) == gen &&
           !stream_cancelled(c))
      wait_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (stream_cancelled(c))
      return PERFC_ESHUTDOWN;
  }
  c->held = (hf & PERFC__H2_SEND_MORE) != 0;
  return 0;
}

static int h2_stream_flush(perfc_ctx *ctx, int wait) {
  /* h2 writes a stream's posts in order and the status after them, so
   * nothing needs to complete before the finish: `wait` asks no more. */
  (void)wait;
  h2call *c = ccall_of(ctx);
  flush_held(c);
  return stream_cancelled(c) ? PERFC_ESHUTDOWN : 0;
}

static void h2_stream_poll(perfc_ctx *ctx) {
  (void)ctx; /* on_close sets cancelled_flag itself */
}

static void h2_stream_end(perfc_ctx *ctx) {
  h2call *c = ccall_of(ctx);
  h2t *t = c->t;
  pthread_mutex_lock(&t->mu);
  if (c->sprev != NULL)
    c->sprev->snext = c->snext;
  else
    t->streams = c->snext;
  if (c->snext != NULL)
    c->snext->sprev = c->sprev;
  pthread_mutex_unlock(&t->mu);
  free(c->cur);
  c->cur = NULL;
  call_unref(c);
}

/* Wakes every stream's worker, so each looks at its cancellation again
 * (the shutdown grace ended: perfc__cancel_running's flag); a loop
 * stream's loop is asked to look (on_wake). */
static void wake_streams(h2t *t) {
  pthread_mutex_lock(&t->mu);
  for (h2call *c = t->streams; c != NULL; c = c->snext) {
    if (c->loop)
      perfc__h2_stream_wake(c->s);
    else
      stream_wake(c);
  }
  pthread_mutex_unlock(&t->mu);
}

/* ---- loop streams: handlers on this loop ------------------------------------ */

static void stream_list(h2call *c) {
  h2t *t = c->t;
  pthread_mutex_lock(&t->mu);
  c->sprev = NULL;
  c->snext = t->streams;
  if (t->streams != NULL)
    t->streams->sprev = c;
  t->streams = c;
  pthread_mutex_unlock(&t->mu);
}

static void stream_unlist(h2call *c) {
  h2t *t = c->t;
  pthread_mutex_lock(&t->mu);
  if (c->sprev != NULL)
    c->sprev->snext = c->snext;
  else
    t->streams = c->snext;
  if (c->snext != NULL)
    c->snext->sprev = c->sprev;
  pthread_mutex_unlock(&t->mu);
}

static void loop_unlist(h2call *c) { stream_unlist(c); }

static void h2_loop_deadline(perfc_ctx *ctx) {
  h2call *c = ccall_of(ctx);
  int64_t d = ctx->deadline_ns;
  /* INT64_MAX: none; INT64_MAX - 1 ("later than any real time") and its
   * neighbours would overflow the rounding. */
  if (d >= INT64_MAX - 1000000)
    return;
  perfc__h2_set_deadline(c->s, (d + 999999) / 1000000);
}

static int h2_loop_begin(perfc_ctx *ctx) {
  h2call *c = ccall_of(ctx);
  c->loop = 1;
  /* Listed so the end of the shutdown grace reaches it (wake_streams). */
  stream_list(c);
  h2_loop_deadline(ctx);
  return 0;
}

static void h2_loop_resume(perfc_ctx *ctx) {
  h2call *c = ccall_of(ctx);
  if (c->loop_done)
    return;
  /* The half-close that came while the start waited for a decision
   * (with no message before it: h2 tells it after held ones). */
  if (c->early_half) {
    c->early_half = 0;
    c->t->up->loop_half_close(ctx);
    return;
  }
  perfc__h2_resume_recv(c->s);
}

static int h2_loop_here(const perfc_ctx *ctx) {
  return perfc__h2_stream_on_loop(ccall_of(ctx)->s);
}

static void post_unlist(h2t *t, h2call *c) {
  if (c->pprev != NULL)
    c->pprev->pnext = c->pnext;
  else
    t->posts = c->pnext;
  if (c->pnext != NULL)
    c->pnext->pprev = c->pprev;
  c->pnext = c->pprev = NULL;
}

static void posted_run(perfc__h2_loop *l, perfc__h2_task *task) {
  (void)l;
  post_rec *r = (post_rec *)(void *)((char *)task - offsetof(post_rec, task));
  pthread_mutex_lock(&r->t->mu);
  h2call *c = r->c;
  if (c != NULL) {
    post_unlist(r->t, c);
    c->post_rec = NULL;
  }
  pthread_mutex_unlock(&r->t->mu);
  free(r);
  if (c != NULL)
    c->post_fn(&c->ctx);
}

/* The call layer holds the context (so the stream) until it finishes the
 * call, which happens after fn at the earliest. Off the hot path: only an
 * interceptor's decision resumed off its loop comes here (one allocation,
 * one lock). */
static void h2_post(perfc_ctx *ctx, void (*fn)(perfc_ctx *ctx)) {
  h2call *c = ccall_of(ctx);
  h2t *t = c->t;
  post_rec *r = malloc(sizeof *r);
  pthread_mutex_lock(&t->mu);
  if (t->loops_gone || r == NULL) {
    pthread_mutex_unlock(&t->mu);
    free(r);
    if (r == NULL && !t->loops_gone)
      perfc_log(PERFC_LOG_WARN, "h2: %s: out of memory posting an "
                "interceptor's decision to its loop; it goes on here",
                ctx->path);
    fn(ctx); /* no loop left to race with (or no memory to post) */
    return;
  }
  r->task.run = posted_run;
  r->t = t;
  r->c = c;
  c->post_rec = r;
  c->post_fn = fn;
  c->pprev = NULL;
  c->pnext = t->posts;
  if (t->posts != NULL)
    t->posts->pprev = c;
  t->posts = c;
  /* Posted under the lock: once it is released, posts_drain (shutdown,
   * loops joined) may run fn, which ends the call, recycles c and lets the
   * server be freed, so neither c->s nor the loop may be read after it
   * (TSan, test_interceptor_defer shutdown_waits_for_a_held_decision). A
   * post is a lock-free push and an eventfd write; it takes no lock. */
  perfc__h2_stream_post(c->s, &r->task);
  pthread_mutex_unlock(&t->mu);
}

/* After the loops were joined: what was posted to them and never ran runs
 * here (its record, still queued, is freed when the server's free runs
 * the loops' leftovers), and later posts run on their posters. */
static void posts_drain(h2t *t) {
  pthread_mutex_lock(&t->mu);
  t->loops_gone = 1;
  h2call *c = t->posts;
  t->posts = NULL;
  for (h2call *k = c; k != NULL; k = k->pnext) {
    k->post_rec->c = NULL;
    k->post_rec = NULL;
  }
  pthread_mutex_unlock(&t->mu);
  while (c != NULL) {
    h2call *next = c->pnext; /* fn may end the call and recycle c */
    c->pnext = c->pprev = NULL;
    c->post_fn(&c->ctx);
    c = next;
  }
}

static void on_wake(void *call, perfc__h2_stream *s) {
  (void)s;
  h2call *c = call;
  /* The grace ended (perfc__cancel_running): the handler is told and the
   * call ends CANCELLED through this loop, as a worker's would. */
  if (c->loop && !c->loop_done && c->t->up->cancelled(&c->ctx))
    c->t->up->loop_cancel(&c->ctx, PERFC_STATUS_CANCELLED);
}

/* ---- lifecycle ------------------------------------------------------------- */

static const perfc__h2_callbacks callbacks = {
    .on_call = on_call,
    .on_message = on_message,
    .on_half_close = on_half_close,
    .on_writable = on_writable,
    .on_close = on_close,
    .on_start = on_start,
    .on_wake = on_wake,
};

int perfc__h2_transport_new(void **out, const perfc_server_opts *o,
                            const perfc__call_upcalls *up, perfc_server *srv) {
  h2t *t = calloc(1, sizeof *t);
  if (t == NULL)
    return PERFC_ENOMEM;
  t->opts = *o;
  t->opts.compression = NULL;
  t->up = up;
  t->srv = srv;
  if (perfc__compress_parse(o->compression, &t->calgo) != 0) {
    free(t);
    return PERFC_EINVAL;
  }
  perfc__h2_opts h;
  perfc__h2_opts_init(&h);
  h.loops = (int)o->threads;
  h.max_concurrent_streams = o->max_concurrent_streams;
  h.max_recv_message_bytes = o->max_recv_message_bytes < 0
                                 ? SIZE_MAX
                                 : (size_t)o->max_recv_message_bytes;
  h.max_send_message_bytes = o->max_send_message_bytes < 0
                                 ? SIZE_MAX
                                 : (size_t)o->max_send_message_bytes;
  h.keepalive_time_ms = o->keepalive_time_ms;
  h.keepalive_timeout_ms = o->keepalive_timeout_ms;
  h.min_ping_interval_ms = o->min_ping_interval_ms;
  h.keepalive_permit_without_calls = o->keepalive_permit_without_calls != 0;
  h.max_connection_idle_enabled = o->max_connection_idle_enabled != 0;
  h.max_connection_idle_ms = o->max_connection_idle_ms;
  h.max_connection_age_enabled = o->max_connection_age_enabled != 0;
  h.max_connection_age_ms = o->max_connection_age_ms;
  h.max_connection_age_grace_ms = o->max_connection_age_grace_ms;
  /* h2's loops are this server's pollers: the option means the same. */
  h.loop_batch_sched = o->poller_wakeup_preemption == 0;
  h.busy_poll_ns = o->busy_poll_us * 1000;
  /* The C core's resource quota has no twin on h2; the nearest is the
   * bound on request bytes all connections may hold buffered. A budget
   * the application chose becomes it; the core's 1 GiB default keeps h2's
   * own (PERFC_DEFAULT_H2_SERVER_RECV_BUDGET_BYTES). */
  if (o->memory_budget_bytes != PERFC_DEFAULT_MEMORY_BUDGET_BYTES)
    h.server_recv_budget_bytes = o->memory_budget_bytes;
  if (o->max_metadata_bytes < UINT32_MAX)
    h.max_header_list_bytes = (uint32_t)o->max_metadata_bytes;
  int rc = perfc__h2_server_new(&t->h2, &h, &callbacks, t);
  if (rc != 0) {
    free(t);
    return rc;
  }
  pthread_mutex_init(&t->mu, NULL);
  pthread_cond_init(&t->cv, NULL);
  *out = t;
  return 0;
}

static int h2_listen(void *tp, const char *addr, const perfc_tls_opts *tls,
                     int *bound_port) {
  h2t *t = tp;
  int rc = perfc__h2_server_listen(t->h2, addr, tls, bound_port);
  if (rc == PERFC_EBIND)
    perfc_log(PERFC_LOG_ERROR, "server: cannot listen on %s: %s", addr,
              perfc_last_error());
  return rc;
}

static int h2_add_method(void *tp, size_t index, const perfc_method_desc *d,
                         perfc__method *m) {
  h2t *t = tp;
  if (index != t->nmethods)
    return PERFC_EINVAL;
  for (size_t i = 0; i < t->nmethods; i++)
    if (strcmp(t->methods[i].desc->path, d->path) == 0)
      return perfc__fail(PERFC_EEXIST, "server: %s registered twice", d->path);
  if (t->nmethods == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 8;
    h2_method *nm = realloc(t->methods, cap * sizeof *nm);
    if (nm == NULL)
      return PERFC_ENOMEM;
    t->methods = nm;
    t->cap = cap;
  }
  t->methods[t->nmethods++] =
      (h2_method){.desc = d, .m = m, .path_len = strlen(d->path)};
  return 0;
}

static int h2_start(void *tp) {
  h2t *t = tp;
  size_t size = 16;
  while (size < 2 * t->nmethods)
    size *= 2;
  t->table = calloc(size, sizeof *t->table);
  if (t->table == NULL)
    return PERFC_ENOMEM;
  t->table_mask = size - 1;
  for (size_t i = 0; i < t->nmethods; i++) {
    size_t k = path_hash(t->methods[i].desc->path, t->methods[i].path_len) &
               t->table_mask;
    while (t->table[k] != NULL)
      k = (k + 1) & t->table_mask;
    t->table[k] = &t->methods[i];
  }
  return perfc__h2_server_start(t->h2);
}

/* Shutdown on h2, as on core (server.c, wait_shutdown): GOAWAY with the
 * last stream id to every connection while the loops keep serving the
 * calls in flight (shutdown_begin); the grace (wait_calls); then calls
 * still on workers end with CANCELLED, which their loops still deliver
 * (perfc__cancel_running, then wait_calls again); only then are the
 * connections closed (cancel_all) and the loops joined (stop). */
static void h2_shutdown_begin(void *tp) {
  h2t *t = tp;
  perfc__h2_server_drain(t->h2);
}

static int h2_wait_calls(void *tp, int64_t timeout_ms) {
  h2t *t = tp;
  atomic_store(&t->waiting, 1);
  wake_streams(t);
  pthread_mutex_lock(&t->mu);
  if (timeout_ms < 0) {
    while (atomic_load(&t->live) > 0)
      pthread_cond_wait(&t->cv, &t->mu);
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (timeout_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    while (atomic_load(&t->live) > 0)
      if (pthread_cond_timedwait(&t->cv, &t->mu, &ts) != 0)
        break;
  }
  int done = atomic_load(&t->live) == 0;
  pthread_mutex_unlock(&t->mu);
  return done;
}

static void h2_cancel_all(void *tp) {
  h2t *t = tp;
  /* Whatever is still open is cut off: every call's on_close runs (its
   * handler sees the cancel), the loops are joined. */
  if (!t->shut) {
    t->shut = 1;
    perfc__h2_server_shutdown(t->h2, 0);
  }
  posts_drain(t);
  wake_streams(t);
}

static void h2_stop(void *tp) {
  h2t *t = tp;
  if (!t->shut) {
    t->shut = 1;
    perfc__h2_server_shutdown(t->h2, 0);
  }
  posts_drain(t);
}

static void h2_free(void *tp) {
  h2t *t = tp;
  if (t == NULL)
    return;
  perfc__h2_server_free(t->h2);
  /* The loops are joined: their caches are ours to free. */
  while (t->caches != NULL) {
    ctx_cache *cc = t->caches;
    t->caches = cc->next;
    while (cc->free != NULL) {
      h2call *c = cc->free;
      cc->free = c->next_free;
      call_free(c);
    }
    free(cc);
  }
  free(t->table);
  free(t->methods);
  pthread_cond_destroy(&t->cv);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

static int h2_set_http_codec(void *tp, const perfc_http_codec *codec,
                             void *user_data) {
  h2t *t = tp;
  if (t->has_codec)
    return perfc__fail(PERFC_ESTATE, "server: an HTTP codec is set already");
  t->codec = *codec;
  t->codec_ud = user_data;
  t->has_codec = 1;
  perfc__h2_cors cors = {
      .origins = codec->cors_origins,
      .n = codec->cors_origin_count,
      .methods = codec->cors_methods ? codec->cors_methods
                                     : PERFC_DEFAULT_CORS_METHODS,
      .headers = codec->cors_headers,
      .expose = codec->cors_expose_headers ? codec->cors_expose_headers
                                           : PERFC_DEFAULT_CORS_EXPOSE_HEADERS,
      .max_age_s = (codec->cors_max_age_ms > 0 ? codec->cors_max_age_ms
                                               : PERFC_DEFAULT_CORS_MAX_AGE_MS) /
                   1000,
      .credentials = codec->cors_allow_credentials,
  };
  perfc__h2_server_enable_http(t->h2, codec->max_body_bytes,
                               codec->idle_timeout_ms,
                               cors.origins != NULL && cors.n > 0 ? &cors : NULL,
                               codec->gzip_level);
  return 0;
}

const perfc__transport_ops perfc__h2_transport_ops = {
    .set_http_codec = h2_set_http_codec,
    .name = "h2",
    .listen = h2_listen,
    .add_method = h2_add_method,
    .start = h2_start,
    .shutdown_begin = h2_shutdown_begin,
    .wait_calls = h2_wait_calls,
    .cancel_all = h2_cancel_all,
    .stop = h2_stop,
    .free = h2_free,
    .finish = h2_finish,
    .refuse = h2_refuse,
    .watch_close = h2_watch_close,
    .request = h2_request,
    .message_compressed = h2_message_compressed,
    .peer = h2_peer,
    .md_count = h2_md_count,
    .md_at = h2_md_at,
    .stream_begin = h2_stream_begin,
    .stream_recv = h2_stream_recv,
    .stream_recv_ready = h2_stream_recv_ready,
    .stream_send = h2_stream_send,
    .stream_flush = h2_stream_flush,
    .stream_poll = h2_stream_poll,
    .stream_end = h2_stream_end,
    .loop_begin = h2_loop_begin,
    .loop_deadline = h2_loop_deadline,
    .loop_resume = h2_loop_resume,
    .loop_here = h2_loop_here,
    .post = h2_post,
};
