/*
 * h2.c — the h2 server: options, loops and their threads, listeners, TLS
 * contexts (OpenSSL, ALPN h2, TLS 1.2 minimum), graceful shutdown, stats.
 *
 * Room: runtime/src/transport/h2.
 */
#include "transport/h2/conn_internal.h"

#include "core/error_internal.h"
#include "core/thread_internal.h"
#include "perfc/http_codec.h"
#include "perfc/log.h"
#include "perfc/server.h"

#include <openssl/err.h>
#include <sched.h>
#include <signal.h>
#include <sys/epoll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void perfc__h2_opts_init(perfc__h2_opts *o) {
  memset(o, 0, sizeof *o);
  o->loops = PERFC_DEFAULT_H2_LOOPS;
  o->max_concurrent_streams = PERFC_DEFAULT_H2_MAX_CONCURRENT_STREAMS;
  o->stream_window_bytes = PERFC_DEFAULT_H2_STREAM_WINDOW_BYTES;
  o->conn_window_bytes = PERFC_DEFAULT_H2_CONN_WINDOW_BYTES;
  o->max_header_list_bytes = PERFC_DEFAULT_H2_MAX_HEADER_LIST_BYTES;
  o->max_recv_message_bytes = PERFC_DEFAULT_MAX_RECV_MESSAGE_BYTES;
  o->max_send_message_bytes = PERFC_DEFAULT_MAX_SEND_MESSAGE_BYTES;
  o->handshake_timeout_ms = PERFC_DEFAULT_H2_HANDSHAKE_TIMEOUT_MS;
  o->conn_recv_budget_bytes = PERFC_DEFAULT_H2_CONN_RECV_BUDGET_BYTES;
  o->server_recv_budget_bytes = PERFC_DEFAULT_H2_SERVER_RECV_BUDGET_BYTES;
  o->conn_send_budget_bytes = PERFC_DEFAULT_H2_CONN_SEND_BUDGET_BYTES;
  o->stream_send_high_water_bytes = PERFC_DEFAULT_H2_STREAM_SEND_HIGH_WATER_BYTES;
  o->reset_burst = PERFC_DEFAULT_H2_RESET_BURST;
  o->reset_rate_per_s = PERFC_DEFAULT_H2_RESET_RATE_PER_S;
  o->max_connections = PERFC_DEFAULT_H2_MAX_CONNECTIONS;
  o->keepalive_time_ms = PERFC_DEFAULT_SERVER_KEEPALIVE_TIME_MS;
  o->keepalive_timeout_ms = PERFC_DEFAULT_KEEPALIVE_TIMEOUT_MS;
  o->min_ping_interval_ms = PERFC_DEFAULT_MIN_PING_INTERVAL_MS;
  o->max_ping_strikes = PERFC_DEFAULT_H2_MAX_PING_STRIKES;
}

/* Zero means default, field by field, after a whole-struct copy. */
static void fill_defaults(perfc__h2_opts *o) {
  perfc__h2_opts d;
  perfc__h2_opts_init(&d);
#define DEF(f)                                                                 \
  if (o->f == 0)                                                               \
  o->f = d.f
  DEF(max_concurrent_streams);
  DEF(stream_window_bytes);
  DEF(conn_window_bytes);
  DEF(max_header_list_bytes);
  DEF(max_recv_message_bytes);
  DEF(max_send_message_bytes);
  DEF(handshake_timeout_ms);
  DEF(conn_recv_budget_bytes);
  DEF(server_recv_budget_bytes);
  DEF(conn_send_budget_bytes);
  DEF(stream_send_high_water_bytes);
  DEF(reset_burst);
  DEF(reset_rate_per_s);
  DEF(max_connections);
  DEF(keepalive_time_ms);
  DEF(keepalive_timeout_ms);
  DEF(min_ping_interval_ms);
  DEF(max_ping_strikes);
#undef DEF
  if (o->loops <= 0) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    o->loops = n > 0 ? (int)n : 1;
  }
}

void perfc__h2_server_enable_http(perfc__h2_server *srv, size_t max_body_bytes,
                                  int64_t idle_timeout_ms,
                                  const perfc__h2_cors *cors, int gzip_level) {
  srv->o.http_enabled = true;
  srv->o.http_gzip_level = gzip_level >= 1 && gzip_level <= 9
                               ? gzip_level
                               : PERFC_DEFAULT_HTTP_GZIP_LEVEL;
  if (cors != NULL)
    srv->cors = *cors;
  srv->o.http_max_body_bytes =
      max_body_bytes ? max_body_bytes : PERFC_DEFAULT_HTTP_MAX_BODY_BYTES;
  /* The body is assembled in a buffer indexed by 32-bit counts. */
  if (srv->o.http_max_body_bytes > UINT32_MAX / 2)
    srv->o.http_max_body_bytes = UINT32_MAX / 2;
  srv->o.http_idle_timeout_ms =
      idle_timeout_ms > 0 ? idle_timeout_ms : PERFC_DEFAULT_HTTP_IDLE_TIMEOUT_MS;
}

int perfc__h2_server_new(perfc__h2_server **out, const perfc__h2_opts *o,
                         const perfc__h2_callbacks *cb, void *server_data) {
  *out = NULL;
  if (cb == NULL || cb->on_call == NULL || cb->on_message == NULL ||
      cb->on_half_close == NULL || cb->on_close == NULL ||
      cb->on_writable == NULL)
    return perfc__fail(PERFC_EINVAL, "h2 server: every callback is required");
  perfc__h2_server *srv = calloc(1, sizeof *srv);
  if (srv == NULL)
    return perfc__fail(PERFC_ENOMEM, "h2 server: out of memory");
  if (o != NULL)
    srv->o = *o;
  else
    perfc__h2_opts_init(&srv->o);
  fill_defaults(&srv->o);
  if (srv->o.stream_window_bytes > NGHTTP2_MAX_WINDOW_SIZE ||
      srv->o.conn_window_bytes > NGHTTP2_MAX_WINDOW_SIZE ||
      srv->o.max_recv_message_bytes > UINT32_MAX ||
      srv->o.conn_recv_budget_bytes < srv->o.max_recv_message_bytes) {
    free(srv);
    return perfc__fail(PERFC_EINVAL,
                       "h2 server: windows must be at most 2^31-1 bytes and "
                       "the connection receive budget at least the max "
                       "receive message size");
  }
  srv->cb = *cb;
  srv->data = server_data;
  pthread_mutex_init(&srv->drain_mu, NULL);
  pthread_cond_init(&srv->drain_cv, NULL);
  int rc = perfc__h2_callbacks_new(&srv->ngcb);
  if (rc == 0 && nghttp2_option_new(&srv->ngopt) != 0)
    rc = perfc__fail(PERFC_ENOMEM, "h2 server: out of memory");
  if (rc == 0) {
    /* Window updates are ours: bytes are consumed when the receive
     * budgets allow (a server-wide bound enforced by flow control). */
    nghttp2_option_set_no_auto_window_update(srv->ngopt, 1);
    nghttp2_option_set_no_closed_streams(srv->ngopt, 1);
    nghttp2_option_set_max_continuations(srv->ngopt,
                                         PERFC_DEFAULT_H2_MAX_CONTINUATIONS);
    nghttp2_option_set_peer_max_concurrent_streams(srv->ngopt, 100);
    /* RFC 9113 makes a value with leading or trailing white space
     * malformed and nghttp2 resets such a stream; the C core, grpc-go and
     * grpc's clients accept it, so a call carrying " 00-..." as its
     * traceparent would fail only on h2. Values still cannot hold NUL,
     * CR or LF (nghttp2 checks those either way). */
    nghttp2_option_set_no_rfc9113_leading_and_trailing_ws_validation(
        srv->ngopt, 1);
    srv->lcs = calloc((size_t)srv->o.loops, sizeof *srv->lcs);
    if (srv->lcs == NULL)
      rc = perfc__fail(PERFC_ENOMEM, "h2 server: out of memory");
  }
  for (int i = 0; rc == 0 && i < srv->o.loops; i++) {
    perfc__h2_lctx *lc = &srv->lcs[i];
    lc->srv = srv;
    lc->recv_budget = srv->o.server_recv_budget_bytes / (size_t)srv->o.loops;
    rc = perfc__h2_loop_new(&lc->loop);
    if (rc == 0 && perfc__h2_mem_new(&lc->mem, 0) != 0)
      rc = perfc__fail(PERFC_ENOMEM, "h2 server: out of memory");
    if (rc == 0)
      perfc__h2_loop_set_busy_poll(lc->loop, srv->o.busy_poll_ns);
    srv->nloops = i + 1;
    if (rc == 0)
      perfc__h2_loop_set_user(lc->loop, lc);
  }
  if (rc != 0) {
    perfc__h2_server_free(srv);
    return rc;
  }
  *out = srv;
  return 0;
}

static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned inlen, void *arg) {
  (void)ssl;
  perfc__h2_server *srv = arg;
  const unsigned char *h1 = NULL;
  for (unsigned i = 0; i < inlen;) {
    unsigned l = in[i];
    if (i + 1 + l > inlen)
      break;
    if (l == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
      *out = in + i + 1;
      *outlen = 2;
      return SSL_TLSEXT_ERR_OK;
    }
    if (l == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0)
      h1 = in + i + 1;
    i += 1 + l;
  }
  /* A server serving HTTP takes HTTP/1.1 when h2 is not offered (h2 is
   * preferred: gRPC and HTTP/JSON both ride it). */
  if (h1 != NULL && srv != NULL && srv->o.http_enabled) {
    *out = h1;
    *outlen = 8;
    return SSL_TLSEXT_ERR_OK;
  }
  /* gRPC needs HTTP/2: a client that cannot speak it is refused in the
   * handshake rather than later. */
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int tls_ctx(perfc__h2_server *srv, const perfc_tls_opts *t,
                   SSL_CTX **out) {
  int rc = perfc_tls_check(t);
  if (rc != 0)
    return rc;
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (ctx == NULL)
    return perfc__fail(PERFC_ENOMEM, "h2 TLS: out of memory");
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, srv);
  if (SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, t->key_file, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1)
    goto bad;
  if (t->client_auth != PERFC_TLS_CLIENT_AUTH_NONE) {
    if (SSL_CTX_load_verify_locations(ctx, t->client_ca_file, NULL) != 1)
      goto bad;
    SSL_CTX_set_verify(ctx,
                       SSL_VERIFY_PEER |
                           (t->client_auth == PERFC_TLS_CLIENT_AUTH_REQUIRE
                                ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT
                                : 0),
                       NULL);
  }
  *out = ctx;
  return 0;
bad: {
  char err[256];
  ERR_error_string_n(ERR_get_error(), err, sizeof err);
  SSL_CTX_free(ctx);
  return perfc__fail(PERFC_ETLS, "h2 TLS: %s", err);
}
}

int perfc__h2_server_listen(perfc__h2_server *srv, const char *addr,
                            const perfc_tls_opts *tls, int *bound_port) {
  if (srv == NULL || addr == NULL)
    return perfc__fail(PERFC_EINVAL, "h2 listen: NULL argument");
  if (srv->started)
    return perfc__fail(PERFC_ESTATE, "h2 listen: server already started");
  const char *colon = strrchr(addr, ':');
  char *end = NULL;
  long port = colon ? strtol(colon + 1, &end, 10) : -1;
  if (colon == NULL || end == colon + 1 || *end != '\0' || port < 0 ||
      port > 65535)
    return perfc__fail(PERFC_EINVAL, "h2 listen: '%s' is not HOST:PORT", addr);
  char host[256];
  size_t hl = (size_t)(colon - addr);
  if (hl >= sizeof host)
    return perfc__fail(PERFC_EINVAL, "h2 listen: host too long");
  memcpy(host, addr, hl);
  host[hl] = '\0';
  if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
    memmove(host, host + 1, hl - 2);
    host[hl - 2] = '\0';
  }
  SSL_CTX *ctx = NULL;
  if (tls != NULL) {
    int rc = tls_ctx(srv, tls, &ctx);
    if (rc != 0)
      return rc;
    SSL_CTX **v = realloc(srv->tls_ctxs, (srv->ntls + 1) * sizeof *v);
    if (v == NULL) {
      SSL_CTX_free(ctx);
      return perfc__fail(PERFC_ENOMEM, "h2 listen: out of memory");
    }
    srv->tls_ctxs = v;
    v[srv->ntls++] = ctx;
  }
  /* One socket per loop on the same port (SO_REUSEPORT); port 0 is
   * resolved by the first bind and reused by the others. */
  int p = (int)port;
  if (p != 0) {
    int rc = perfc__h2_port_exclusive(host, p);
    if (rc != 0)
      return rc;
  }
  for (int i = 0; i < srv->nloops; i++) {
    int bp = 0;
    int rc = perfc__h2_listener_open(&srv->lcs[i], host, p, ctx, &bp);
    if (rc != 0)
      return rc;
    p = bp;
  }
  if (bound_port)
    *bound_port = p;
  return 0;
}

static void *loop_main(void *arg) {
  perfc__h2_lctx *lc = arg;
  /* Signals belong to the process's main thread (perfc_server_run). */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  if (lc->srv->o.loop_batch_sched) {
    /* Failure leaves the normal policy, which is only slower. */
    struct sched_param sp = {.sched_priority = 0};
    int rc = pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    if (rc != 0)
      perfc_log(PERFC_LOG_DEBUG, "h2: SCHED_BATCH for a loop: %s",
                strerror(rc));
  }
  perfc__h2_loop_run(lc->loop);
  return NULL;
}

/* core/thread.c starts the loop threads (perfc__threads_start); marked
 * started before creation so shutdown joins exactly the ones that run. */
static void *loop_thread_setup(void *ud, unsigned i, pthread_t **thread) {
  perfc__h2_lctx *lc = &((perfc__h2_server *)ud)->lcs[i];
  lc->thread_started = true;
  *thread = &lc->thread;
  return lc;
}

static void loop_thread_undo(void *ud, unsigned i) {
  ((perfc__h2_server *)ud)->lcs[i].thread_started = false;
}

int perfc__h2_server_start(perfc__h2_server *srv) {
  if (srv->started)
    return perfc__fail(PERFC_ESTATE, "h2 server: already started");
  srv->started = true;
  for (int i = 0; i < srv->nloops; i++) {
    perfc__h2_lctx *lc = &srv->lcs[i];
    for (size_t k = 0; k < lc->nlisteners; k++)
      if (perfc__h2_loop_add(lc->loop, &lc->listeners[k].io, EPOLLIN) != 0)
        return PERFC_EIO;
  }
  perfc__thread_spec spec = {.name = "perfc-h2-",
                             .main = loop_main,
                             .setup = loop_thread_setup,
                             .undo = loop_thread_undo,
                             .user_data = srv};
  if (perfc__threads_start(&spec, (unsigned)srv->nloops) <
      (unsigned)srv->nloops)
    return perfc__fail(PERFC_ETHREAD, "h2 server: cannot start loop thread");
  return 0;
}

static void drain_timer_cb(perfc__h2_loop *l, perfc__h2_timer *t) {
  perfc__h2_lctx *lc =
      (perfc__h2_lctx *)((char *)t - offsetof(perfc__h2_lctx, drain_timer));
  /* The grace is over: whatever is still open closes now. */
  for (perfc__h2_conn *c = lc->conns; c != NULL; c = c->next)
    perfc__h2_conn_close_now(c);
  if (lc->conns == NULL)
    perfc__h2_loop_stop(l);
}

static void shutdown_run(perfc__h2_loop *l, perfc__h2_task *t) {
  perfc__h2_lctx *lc =
      (perfc__h2_lctx *)((char *)t - offsetof(perfc__h2_lctx, shutdown_task));
  lc->draining = true;
  for (size_t k = 0; k < lc->nlisteners; k++)
    perfc__h2_listener_close(&lc->listeners[k]);
  if (lc->conns == NULL) {
    perfc__h2_loop_stop(l);
    return;
  }
  int64_t grace = lc->drain_deadline_ms - perfc__h2_now_ms();
  for (perfc__h2_conn *c = lc->conns; c != NULL; c = c->next)
    perfc__h2_conn_begin_drain(c, grace > 0 ? grace : 1);
  lc->drain_timer.cb = drain_timer_cb;
  perfc__h2_timer_arm(l, &lc->drain_timer, lc->drain_deadline_ms);
}

static void drain_done(perfc__h2_server *srv) {
  pthread_mutex_lock(&srv->drain_mu);
  if (--srv->drains_pending == 0)
    pthread_cond_broadcast(&srv->drain_cv);
  pthread_mutex_unlock(&srv->drain_mu);
}

static void drain_run(perfc__h2_loop *l, perfc__h2_task *t) {
  perfc__h2_lctx *lc =
      (perfc__h2_lctx *)((char *)t - offsetof(perfc__h2_lctx, drain_task));
  lc->draining = true;
  for (size_t k = 0; k < lc->nlisteners; k++)
    perfc__h2_listener_close(&lc->listeners[k]);
  if (lc->conns == NULL) {
    perfc__h2_loop_stop(l);
  } else {
    /* No deadline: a connection closes once its last stream ended. The
     * GOAWAY names the last stream nghttp2 has seen; a later one is
     * refused (h2_grpc no_stream_begins_once_the_drain_returned). */
    for (perfc__h2_conn *c = lc->conns; c != NULL; c = c->next)
      perfc__h2_conn_begin_drain(c, 0);
  }
  drain_done(lc->srv);
}

void perfc__h2_server_drain(perfc__h2_server *srv) {
  if (srv == NULL || srv->stopped || srv->drained)
    return;
  srv->drained = true;
  perfc__h2_loop *self = perfc__h2_loop_current();
  bool on_own_loop = false;
  pthread_mutex_lock(&srv->drain_mu);
  for (int i = 0; i < srv->nloops; i++) {
    perfc__h2_lctx *lc = &srv->lcs[i];
    if (!lc->thread_started)
      continue;
    if (lc->loop == self)
      on_own_loop = true;
    srv->drains_pending++;
    lc->drain_task.run = drain_run;
    perfc__h2_loop_post(lc->loop, &lc->drain_task, true);
  }
  /* The caller next waits for the calls in flight to end: a stream that
   * began after that count reached zero would meet a pool already freed.
   * So the drain is not begun until every loop has sent its GOAWAY and
   * refuses new streams. A loop cannot wait for itself (its task runs
   * after this returns): from a loop thread the drain stays asynchronous. */
  while (!on_own_loop && srv->drains_pending > 0)
    pthread_cond_wait(&srv->drain_cv, &srv->drain_mu);
  pthread_mutex_unlock(&srv->drain_mu);
}

void perfc__h2_server_shutdown(perfc__h2_server *srv, int64_t grace_ms) {
  if (srv == NULL || srv->stopped)
    return;
  srv->stopped = true;
  int64_t deadline = perfc__h2_now_ms() + (grace_ms > 0 ? grace_ms : 0);
  for (int i = 0; i < srv->nloops; i++) {
    perfc__h2_lctx *lc = &srv->lcs[i];
    if (!lc->thread_started)
      continue;
    lc->drain_deadline_ms = deadline;
    lc->shutdown_task.run = shutdown_run;
    perfc__h2_loop_post(lc->loop, &lc->shutdown_task, true);
  }
  for (int i = 0; i < srv->nloops; i++) {
    perfc__h2_lctx *lc = &srv->lcs[i];
    if (lc->thread_started) {
      pthread_join(lc->thread, NULL);
      lc->thread_started = false;
    }
  }
}

void perfc__h2_server_free(perfc__h2_server *srv) {
  if (srv == NULL)
    return;
  perfc__h2_server_shutdown(srv, 0);
  for (int i = 0; i < srv->nloops; i++) {
    perfc__h2_lctx *lc = &srv->lcs[i];
    /* A loop that never ran (or stopped with connections left, which the
     * drain timer prevents) still owns them: close them here. */
    perfc__h2_loop_set_current(lc->loop);
    while (lc->conns != NULL) {
      perfc__h2_conn_close_now(lc->conns);
      lc->draining = false;
      perfc__h2_loop_run_once(lc->loop, 0);
    }
    perfc__h2_loop_run_once(lc->loop, 0); /* posted tasks, deferred frees */
    perfc__h2_loop_set_current(NULL);
    for (size_t k = 0; k < lc->nlisteners; k++)
      perfc__h2_listener_close(&lc->listeners[k]);
    free(lc->listeners);
    perfc__h2_grpc_loop_free(lc);
    perfc__h2_loop_free(lc->loop);
    /* After every session of the loop (conn_destroy above). */
    perfc__h2_mem_free(lc->mem);
  }
  for (size_t i = 0; i < srv->ntls; i++)
    SSL_CTX_free(srv->tls_ctxs[i]);
  free(srv->tls_ctxs);
  free(srv->lcs);
  nghttp2_session_callbacks_del(srv->ngcb);
  nghttp2_option_del(srv->ngopt);
  pthread_cond_destroy(&srv->drain_cv);
  pthread_mutex_destroy(&srv->drain_mu);
  free(srv);
}

void perfc__h2_server_stats(perfc__h2_server *srv, perfc__h2_stats *out) {
  memset(out, 0, sizeof *out);
  for (int i = 0; i < srv->nloops; i++) {
    const perfc__h2_lctx *lc = &srv->lcs[i];
    const perfc__h2_counters *n = &lc->n;
#define PERFC__H2_READ(f) atomic_load_explicit(&n->f, memory_order_relaxed)
    out->conns_accepted += PERFC__H2_READ(conns_accepted);
    out->conns_refused += PERFC__H2_READ(conns_refused);
    out->conns_open += PERFC__H2_READ(conns_open);
    out->streams_started += PERFC__H2_READ(streams_started);
    out->streams_reset_by_client += PERFC__H2_READ(streams_reset_by_client);
    out->goaway_rapid_reset += PERFC__H2_READ(goaway_rapid_reset);
    out->goaway_ping_abuse += PERFC__H2_READ(goaway_ping_abuse);
    out->closed_handshake_timeout += PERFC__H2_READ(closed_handshake_timeout);
#undef PERFC__H2_READ
    out->recv_buffered_bytes +=
        atomic_load_explicit(&lc->recv_held, memory_order_relaxed);
  }
}
