/*
 * conn.c — one HTTP/2 server connection: a socket (plain or TLS), an
 * nghttp2 server session, reads fed to nghttp2 and its output coalesced
 * into one write per iteration, and the connection-level limits (preface
 * and header-block timeouts, keepalive, client ping policy, idle and age,
 * rapid reset, output bound, max connections).
 *
 * Room: runtime/src/transport/h2. A connection belongs to one loop for its
 * life and is touched only by that loop's thread: no locks.
 *
 * Listeners: one SO_REUSEPORT socket per loop. The kernel spreads new
 * connections over the loops by hash, no thread hands fds to another, and
 * an accept never wakes a loop that will not own the connection. The cost
 * is a skewed spread with few connections; a single acceptor would pay a
 * cross-thread hand-off per connection and a shared accept queue instead.
 */
#include "transport/h2/conn_internal.h"

#include "core/error_internal.h"
#include "perfc/log.h"
#include "perfc/server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

/* Bytes read from one connection per iteration before the others get a
 * turn (level-triggered epoll reports it again). */
#define READ_SHARE (1 << 20)
/* A client that keeps its keepalive-less connection silent this long
 * without calls allowed to ping more often than every two hours (grpc). */
#define PING_NO_CALLS_MS (2LL * 60 * 60 * 1000)
/* How long an HTTP/1.1 connection closing on unread input keeps reading
 * (and discarding) so its answer is not destroyed by a reset. */
#define LINGER_MS 1000

static void conn_destroy(perfc__h2_conn *c);
static void conn_flush_cb(perfc__h2_loop *l, perfc__h2_deferred *d);
static void conn_timer_cb(perfc__h2_loop *l, perfc__h2_timer *t);
static void conn_io(perfc__h2_loop *l, perfc__h2_io *io, uint32_t events);

#define CONN_OF(ptr, member)                                                   \
  ((perfc__h2_conn *)((char *)(ptr) - offsetof(perfc__h2_conn, member)))

void perfc__h2_conn_defer_flush(perfc__h2_conn *c) {
  perfc__h2_loop_defer(c->lc->loop, &c->flush);
}

/* ---- timers ----------------------------------------------------------------- */

static void timer_at_most(perfc__h2_conn *c, int64_t at) {
  if (!perfc__h2_timer_armed(&c->timer) || c->timer.at_ms > at)
    perfc__h2_timer_arm(c->lc->loop, &c->timer, at);
}

static void goaway(perfc__h2_conn *c, uint32_t code, const char *why) {
  if (c->goaway_sent && code == NGHTTP2_NO_ERROR)
    return;
  c->goaway_sent = true;
  nghttp2_submit_goaway(c->ng, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(c->ng), code,
                        (const uint8_t *)why, why ? strlen(why) : 0);
  perfc__h2_conn_defer_flush(c);
}

void perfc__h2_conn_fatal(perfc__h2_conn *c, uint32_t code, const char *why) {
  if (c->dead || c->closing)
    return;
  goaway(c, code, why);
  c->closing = true;
  perfc__h2_conn_defer_flush(c);
}

void perfc__h2_conn_timer_at_most(perfc__h2_conn *c, int64_t at) {
  if (!c->dead)
    timer_at_most(c, at);
}

void perfc__h2_conn_begin_drain(perfc__h2_conn *c, int64_t grace_ms) {
  if (c->dead || c->closing)
    return;
  goaway(c, NGHTTP2_NO_ERROR, NULL);
  int64_t now = perfc__h2_now_ms();
  if (grace_ms > 0 && (c->grace_deadline_ms == 0 ||
                       c->grace_deadline_ms > now + grace_ms)) {
    c->grace_deadline_ms = now + grace_ms;
    timer_at_most(c, c->grace_deadline_ms);
  }
  if (c->nstreams == 0)
    c->closing = true;
  perfc__h2_conn_defer_flush(c);
}

/* How long the first phase of a drain waits for its PING's ACK at most
 * (keepalive_timeout if shorter): RFC 9113 asks for at least a round
 * trip. grpc's 1.51 client does not ACK a PING that follows a GOAWAY, so
 * with it this is simply the wait before the final GOAWAY. */
#define DRAIN_ACK_WAIT_MS 1000

/* The PING that closes the first phase of an idle/age drain. */
static const uint8_t DRAIN_PING[8] = {'p', 'e', 'r', 'f', 'c', 'd', 'r', 0};

/* An idle or age drain decided on our clock: the client may have a request
 * on the wire already, and a GOAWAY naming the last stream we processed
 * followed by a close would lose it (closed with unread input, the socket
 * even resets, and the client cannot tell the request was never seen).
 * So, as grpc does and RFC 9113 6.8 advises: a shutdown notice (GOAWAY
 * with the largest stream id: no new streams, please) and a PING; the
 * client sends the ACK after anything it sent before reading the notice,
 * so once it arrives every such request has been processed, and the final
 * GOAWAY (begin_drain) names the true last stream. A client that does not
 * ACK within drain_ack_wait gets the final GOAWAY anyway. */
static int64_t drain_ack_wait(const perfc__h2_opts *o) {
  return o->keepalive_timeout_ms < DRAIN_ACK_WAIT_MS ? o->keepalive_timeout_ms
                                                     : DRAIN_ACK_WAIT_MS;
}

static void begin_graceful_drain(perfc__h2_conn *c, int64_t grace_ms) {
  if (c->dead || c->closing || c->goaway_sent || c->drain_ping_ms != 0)
    return;
  if (nghttp2_submit_shutdown_notice(c->ng) != 0 ||
      nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, DRAIN_PING) != 0) {
    perfc__h2_conn_begin_drain(c, grace_ms);
    return;
  }
  int64_t now = perfc__h2_now_ms();
  c->drain_ping_ms = now;
  c->drain_grace_ms = grace_ms;
  timer_at_most(c, now + drain_ack_wait(&c->lc->srv->o));
  /* The grace runs from this first GOAWAY, as grpc's does: a client that
   * never ACKs does not stretch the drain. */
  if (grace_ms > 0) {
    c->grace_deadline_ms = now + grace_ms;
    timer_at_most(c, c->grace_deadline_ms);
  }
  perfc__h2_conn_defer_flush(c);
}

static void end_graceful_drain(perfc__h2_conn *c) {
  c->drain_ping_ms = 0;
  perfc__h2_conn_begin_drain(c, c->drain_grace_ms);
}

static void conn_timer_cb(perfc__h2_loop *l, perfc__h2_timer *t) {
  (void)l;
  perfc__h2_conn *c = CONN_OF(t, timer);
  if (c->dead)
    return;
  perfc__h2_server *srv = c->lc->srv;
  const perfc__h2_opts *o = &srv->o;
  int64_t now = perfc__h2_now_ms();
  int64_t next = INT64_MAX;
  /* A client that never finishes its preface or a header block holds a
   * socket and nghttp2's partial-frame buffer: drop it. */
  if (!c->preface_done) {
    int64_t at = c->accepted_ms + o->handshake_timeout_ms;
    if (now >= at) {
      perfc__h2_count(&c->lc->n.closed_handshake_timeout, 1);
      perfc__h2_conn_close_now(c);
      return;
    }
    next = at;
  }
  if (c->in_header_block) {
    int64_t at = c->header_block_ms + o->handshake_timeout_ms;
    if (now >= at) {
      perfc__h2_count(&c->lc->n.closed_handshake_timeout, 1);
      perfc__h2_conn_close_now(c);
      return;
    }
    if (at < next)
      next = at;
  }
  if (c->grace_deadline_ms != 0) {
    if (now >= c->grace_deadline_ms) {
      perfc__h2_conn_close_now(c);
      return;
    }
    if (c->grace_deadline_ms < next)
      next = c->grace_deadline_ms;
  }
  /* Keepalive: ping after keepalive_time of silence, close when the ACK
   * does not come within keepalive_timeout. HTTP/1.1 has no ping: a
   * connection with no request in progress closes after the idle time. */
  if (c->h1 != NULL) {
    if (!perfc__h2_h1_busy(c) && !c->in_header_block) {
      int64_t since = c->last_read_ms > c->idle_since_ms ? c->last_read_ms
                                                         : c->idle_since_ms;
      int64_t at = since + o->http_idle_timeout_ms;
      if (now >= at) {
        perfc__h2_conn_close_now(c);
        return;
      }
      if (at < next)
        next = at;
    } else if (now + o->http_idle_timeout_ms < next) {
      next = now + o->http_idle_timeout_ms;
    }
  } else if (c->ping_sent_ms != 0) {
    int64_t at = c->ping_sent_ms + o->keepalive_timeout_ms;
    if (now >= at) {
      perfc__h2_conn_close_now(c);
      return;
    }
    if (at < next)
      next = at;
  } else if (c->preface_done) {
    int64_t at = c->last_read_ms + o->keepalive_time_ms;
    if (now >= at) {
      uint8_t opaque[8] = {'p', 'e', 'r', 'f', 'c', 'k', 'a', 0};
      nghttp2_submit_ping(c->ng, NGHTTP2_FLAG_NONE, opaque);
      c->ping_sent_ms = now;
      perfc__h2_conn_defer_flush(c);
      at = now + o->keepalive_timeout_ms;
    }
    if (at < next)
      next = at;
  }
  if (c->drain_ping_ms != 0 && !c->goaway_sent) {
    int64_t at = c->drain_ping_ms + drain_ack_wait(o);
    if (now >= at)
      end_graceful_drain(c);
    else if (at < next)
      next = at;
  }
  /* Idle counts from the preface (before it the handshake timeout rules):
   * a client slow to send its first request after connecting is not idle. */
  bool draining = c->goaway_sent || c->drain_ping_ms != 0;
  if (o->max_connection_idle_enabled && !draining && c->preface_done) {
    if (c->nstreams == 0) {
      int64_t at = c->idle_since_ms + o->max_connection_idle_ms;
      if (now >= at)
        begin_graceful_drain(c, o->max_connection_age_grace_ms);
      else if (at < next)
        next = at;
    } else if (now + o->max_connection_idle_ms < next) {
      next = now + o->max_connection_idle_ms;
    }
  }
  if (o->max_connection_age_enabled && !draining) {
    if (now >= c->age_at_ms)
      begin_graceful_drain(c, o->max_connection_age_grace_ms);
    else if (c->age_at_ms < next)
      next = c->age_at_ms;
  }
  if (c->drain_ping_ms != 0 && !c->goaway_sent &&
      c->drain_ping_ms + drain_ack_wait(o) < next)
    next = c->drain_ping_ms + drain_ack_wait(o);
  /* A drain begun above armed its grace; the re-arm below must keep it. */
  if (c->grace_deadline_ms != 0 && c->grace_deadline_ms < next)
    next = c->grace_deadline_ms;
  if (!c->dead && next != INT64_MAX)
    perfc__h2_timer_arm(c->lc->loop, &c->timer, next);
}

/* ---- nghttp2 callbacks (connection side) ------------------------------------ */

static int cb_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd,
                          void *user) {
  (void)ng;
  perfc__h2_conn *c = user;
  if (hd->type == NGHTTP2_HEADERS && !c->in_header_block) {
    c->in_header_block = true;
    c->header_block_ms = c->last_read_ms;
  }
  return 0;
}

static int cb_begin_headers(nghttp2_session *ng, const nghttp2_frame *f,
                            void *user) {
  (void)ng;
  return perfc__h2_grpc_begin_headers(user, f);
}

static int cb_header(nghttp2_session *ng, const nghttp2_frame *f,
                     const uint8_t *name, size_t namelen, const uint8_t *value,
                     size_t valuelen, uint8_t flags, void *user) {
  (void)ng;
  (void)flags;
  return perfc__h2_grpc_header(user, f, name, namelen, value, valuelen);
}

static void refill_resets(perfc__h2_conn *c, int64_t now, double add) {
  const perfc__h2_opts *o = &c->lc->srv->o;
  double t = c->reset_tokens + add +
             (double)(now - c->reset_refill_ms) * o->reset_rate_per_s / 1000.0;
  c->reset_refill_ms = now;
  c->reset_tokens = t > o->reset_burst ? o->reset_burst : t;
}

static int cb_frame_recv(nghttp2_session *ng, const nghttp2_frame *f,
                         void *user) {
  (void)ng;
  perfc__h2_conn *c = user;
  const perfc__h2_opts *o = &c->lc->srv->o;
  switch (f->hd.type) {
  case NGHTTP2_SETTINGS:
    if (!c->preface_done && !(f->hd.flags & NGHTTP2_FLAG_ACK)) {
      c->preface_done = true;
      c->idle_since_ms = c->last_read_ms; /* idle counts from here */
      if (o->max_connection_idle_enabled && c->nstreams == 0)
        timer_at_most(c, c->idle_since_ms + o->max_connection_idle_ms);
    }
    break;
  case NGHTTP2_HEADERS:
    c->in_header_block = false;
    break;
  case NGHTTP2_PING:
    if (f->hd.flags & NGHTTP2_FLAG_ACK) {
      c->ping_sent_ms = 0;
      if (c->drain_ping_ms != 0 && !c->goaway_sent &&
          memcmp(f->ping.opaque_data, DRAIN_PING, 8) == 0)
        end_graceful_drain(c);
      break;
    }
    {
      /* grpc's ping policy: a ping sooner than the allowed interval after
       * the previous one, with no HEADERS or DATA sent between, is a
       * strike; too many strikes end the connection. */
      int64_t now = c->last_read_ms;
      int64_t min = (c->nstreams == 0 && !o->keepalive_permit_without_calls)
                        ? PING_NO_CALLS_MS
                        : o->min_ping_interval_ms;
      if (c->last_ping_recv_ms != 0 && now - c->last_ping_recv_ms < min &&
          ++c->ping_strikes > o->max_ping_strikes) {
        perfc__h2_count(&c->lc->n.goaway_ping_abuse, 1);
        perfc__h2_conn_fatal(c, NGHTTP2_ENHANCE_YOUR_CALM, "too_many_pings");
        return 0;
      }
      c->last_ping_recv_ms = now;
    }
    break;
  case NGHTTP2_RST_STREAM: {
    perfc__h2_stream *s = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (s != NULL && !s->end_stream_sent) {
      /* A reset of a call we had not finished: it spends a token. */
      perfc__h2_count(&c->lc->n.streams_reset_by_client, 1);
      refill_resets(c, c->last_read_ms, -1.0);
      if (c->reset_tokens < 0) {
        perfc__h2_count(&c->lc->n.goaway_rapid_reset, 1);
        perfc__h2_conn_fatal(c, NGHTTP2_ENHANCE_YOUR_CALM, "too_many_resets");
        return 0;
      }
    }
    break;
  }
  default:
    break;
  }
  return perfc__h2_grpc_frame_recv(c, f);
}

static int cb_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t sid,
                         const uint8_t *data, size_t len, void *user) {
  (void)ng;
  (void)flags;
  return perfc__h2_grpc_data(user, sid, data, len);
}

static int cb_frame_send(nghttp2_session *ng, const nghttp2_frame *f,
                         void *user) {
  (void)ng;
  perfc__h2_conn *c = user;
  if (f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) {
    /* grpc resets the ping policy whenever it sends HEADERS or DATA. */
    c->ping_strikes = 0;
    c->last_ping_recv_ms = 0;
  }
  perfc__h2_grpc_frame_sent(c, f);
  return 0;
}

static int cb_stream_close(nghttp2_session *ng, int32_t sid,
                           uint32_t error_code, void *user) {
  (void)ng;
  perfc__h2_conn *c = user;
  perfc__h2_stream *s = nghttp2_session_get_stream_user_data(ng, sid);
  /* A completed call. The time is the connection's last read (as for the
   * resets themselves), not a clock read per call: the refill is linear in
   * time, so crediting it at the next read gives the same tokens. */
  if (s != NULL && s->end_stream_sent)
    refill_resets(c, c->last_read_ms, 1.0);
  perfc__h2_grpc_stream_closed(c, sid, error_code);
  return 0;
}

int perfc__h2_callbacks_new(nghttp2_session_callbacks **out) {
  nghttp2_session_callbacks *cb;
  if (nghttp2_session_callbacks_new(&cb) != 0)
    return perfc__fail(PERFC_ENOMEM, "h2: out of memory");
  nghttp2_session_callbacks_set_on_begin_frame_callback(cb, cb_begin_frame);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, cb_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, cb_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, cb_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, cb_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, cb_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, cb_stream_close);
  *out = cb;
  return 0;
}

/* ---- output ----------------------------------------------------------------- */

/* Writes `len` bytes to the socket; 0 or more were taken. Returns the count
 * taken, or -1 when the connection is broken. */
static ssize_t sock_write(perfc__h2_conn *c, const uint8_t *p, size_t len) {
  if (c->ssl != NULL) {
    ERR_clear_error();
    int n = SSL_write(c->ssl, p, len > INT32_MAX ? INT32_MAX : (int)len);
    if (n > 0)
      return n;
    int e = SSL_get_error(c->ssl, n);
    return (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) ? 0 : -1;
  }
  for (;;) {
    ssize_t n = send(c->io.fd, p, len, MSG_NOSIGNAL);
    if (n >= 0)
      return n;
    if (errno == EINTR)
      continue;
    return (errno == EAGAIN || errno == EWOULDBLOCK) ? 0 : -1;
  }
}

static bool out_append(perfc__h2_conn *c, const uint8_t *p, size_t len) {
  if (c->out_off > 0 && c->out_off == c->out_len)
    c->out_off = c->out_len = 0;
  if (c->out_len + len > c->out_cap) {
    if (c->out_off > 0) {
      memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
      c->out_len -= c->out_off;
      c->out_off = 0;
    }
    if (c->out_len + len > c->out_cap) {
      size_t cap = c->out_cap ? c->out_cap : 16384;
      while (cap < c->out_len + len)
        cap *= 2;
      uint8_t *n = realloc(c->out, cap);
      if (n == NULL)
        return false;
      c->out = n;
      c->out_cap = cap;
    }
  }
  memcpy(c->out + c->out_len, p, len);
  c->out_len += len;
  return true;
}

/* Emits bytes in order: straight to the socket when nothing waits, the rest
 * kept. Returns false when the connection broke. */
static bool emit(perfc__h2_conn *c, const uint8_t *p, size_t len) {
  if (c->out_len == c->out_off) {
    ssize_t n = sock_write(c, p, len);
    if (n < 0)
      return false;
    p += n;
    len -= (size_t)n;
    if (len == 0)
      return true;
  }
  return out_append(c, p, len);
}

/* Writes what the cork gathered for `c` (emit: to the socket, the part it
 * does not take kept in c->out). */
static bool cork_out(perfc__h2_conn *c, perfc__h2_cork *k) {
  size_t n = k->len;
  k->len = 0;
  return n == 0 || emit(c, k->buf, n);
}

/* HTTP/1.1 output (http1.c). During the connection's flush it is corked:
 * a 200's head and body, and the answers of the requests pipelined behind
 * it, leave in one send() at the flush's end (measured: two sends per
 * keep-alive GET before, one TCP segment for the client to wake up to
 * now). Outside the flush (100 Continue) it goes straight out. */
bool perfc__h2_conn_emit(perfc__h2_conn *c, const uint8_t *p, size_t len) {
  perfc__h2_cork *k = perfc__h2_loop_cork(c->lc->loop);
  if (k->owner != c)
    return emit(c, p, len);
  if (k->len + len > sizeof k->buf) {
    if (!cork_out(c, k))
      return false;
    if (len > sizeof k->buf)
      return emit(c, p, len);
  }
  memcpy(k->buf + k->len, p, len);
  k->len += len;
  return true;
}

/* Writes what waits in c->out. Returns false when the connection broke. */
static bool drain_out(perfc__h2_conn *c) {
  while (c->out_off < c->out_len) {
    ssize_t n = sock_write(c, c->out + c->out_off, c->out_len - c->out_off);
    if (n < 0)
      return false;
    if (n == 0)
      break;
    c->out_off += (size_t)n;
  }
  if (c->out_off == c->out_len) {
    /* An idle connection keeps no output buffer. */
    free(c->out);
    c->out = NULL;
    c->out_off = c->out_len = c->out_cap = 0;
  }
  return true;
}

static void update_events(perfc__h2_conn *c) {
  size_t waiting = c->out_len - c->out_off;
  uint32_t ev = 0;
  /* A slow reader: past its output budget we stop reading its input too,
   * so it cannot make us produce more; TCP pushes back on it. */
  if (waiting < c->lc->srv->o.conn_send_budget_bytes &&
      (c->h1 == NULL || !perfc__h2_h1_busy(c)))
    ev |= EPOLLIN; /* HTTP/1.1: not while a request is being answered */
  if (waiting > 0)
    ev |= EPOLLOUT;
  if (c->ssl != NULL && !c->tls_done)
    ev |= EPOLLIN;
  perfc__h2_loop_mod(c->lc->loop, &c->io, ev);
}

static void conn_flush_cb(perfc__h2_loop *l, perfc__h2_deferred *d) {
  perfc__h2_conn *c = CONN_OF(d, flush);
  if (c->dead) {
    conn_destroy(c);
    return;
  }
  if (c->ssl != NULL && !c->tls_done)
    return;
  if (c->h1 != NULL) {
    /* HTTP/1.1: the answer of the request being served, then the next
     * pipelined request (http1.c). */
    if (!drain_out(c)) {
      perfc__h2_conn_close_now(c);
      return;
    }
    perfc__h2_cork *k = perfc__h2_loop_cork(l);
    bool cork = k->owner == NULL;
    if (cork)
      k->owner = c;
    perfc__h2_h1_flush(c);
    if (cork) {
      k->owner = NULL;
      if (c->dead)
        k->len = 0; /* the connection broke: nothing more is written */
      else if (!cork_out(c, k))
        perfc__h2_conn_close_now(c);
    }
    if (c->dead)
      return;
    bool idle = c->out_len == c->out_off;
    if (c->goaway_sent && c->nstreams == 0)
      c->closing = true;
    if (c->closing && idle && c->lingering)
      return; /* the peer's FIN, or the timer, ends it */
    if (c->closing && idle && perfc__h2_h1_unread(c) && c->ssl == NULL) {
      /* A close with the client still sending (its request was refused
       * unread) would reset the connection, and a reset can destroy the
       * answer in the client's receive buffer: shut our side, discard what
       * comes, close on the client's FIN or after a second (nginx's
       * lingering close). */
      shutdown(c->io.fd, SHUT_WR);
      c->lingering = true;
      c->grace_deadline_ms = perfc__h2_now_ms() + LINGER_MS;
      timer_at_most(c, c->grace_deadline_ms);
      perfc__h2_loop_mod(c->lc->loop, &c->io, EPOLLIN);
      return;
    }
    if (c->closing && idle) {
      perfc__h2_conn_close_now(c);
      return;
    }
    if (c->closing && c->grace_deadline_ms == 0) {
      c->grace_deadline_ms =
          perfc__h2_now_ms() + c->lc->srv->o.handshake_timeout_ms;
      timer_at_most(c, c->grace_deadline_ms);
    }
    update_events(c);
    return;
  }
  size_t budget = c->lc->srv->o.conn_send_budget_bytes;
  bool ok = drain_out(c);
  /* Gather every frame nghttp2 has for this connection into the loop's
   * scratch buffer and write it with one call; nghttp2's pointer is only
   * valid until its next call, hence the copy. */
  uint8_t *buf = perfc__h2_loop_scratch(l);
  size_t len = 0;
  while (ok && c->out_len - c->out_off < budget) {
    const uint8_t *p;
    ssize_t n = nghttp2_session_mem_send(c->ng, &p);
    if (n < 0) {
      ok = false;
      break;
    }
    if (n == 0)
      break;
    if (len + (size_t)n > PERFC__H2_LOOP_SCRATCH) {
      ok = emit(c, buf, len);
      len = 0;
      if (ok && (size_t)n > PERFC__H2_LOOP_SCRATCH) {
        ok = emit(c, p, (size_t)n);
        continue;
      }
    }
    memcpy(buf + len, p, (size_t)n);
    len += (size_t)n;
  }
  if (ok && len > 0)
    ok = emit(c, buf, len);
  if (!ok) {
    perfc__h2_conn_close_now(c);
    return;
  }
  bool idle_out = c->out_len == c->out_off;
  if (c->goaway_sent && c->nstreams == 0 && idle_out &&
      !nghttp2_session_want_write(c->ng))
    c->closing = true; /* drained after GOAWAY */
  if ((c->closing && idle_out) ||
      (!nghttp2_session_want_read(c->ng) && !nghttp2_session_want_write(c->ng) &&
       idle_out)) {
    perfc__h2_conn_close_now(c);
    return;
  }
  if (c->closing) {
    /* The GOAWAY is stuck behind a reader that does not read: give it the
     * handshake timeout, then close. */
    if (c->grace_deadline_ms == 0) {
      c->grace_deadline_ms = perfc__h2_now_ms() + c->lc->srv->o.handshake_timeout_ms;
      timer_at_most(c, c->grace_deadline_ms);
    }
  }
  update_events(c);
}

/* ---- input ------------------------------------------------------------------ */

static bool feed(perfc__h2_conn *c, const uint8_t *p, size_t n) {
  /* A server that serves HTTP tells HTTP/1.1 from HTTP/2 by the first
   * bytes: the HTTP/2 preface or anything else (http1.c). */
  if (c->sniffing)
    perfc__h2_h1_sniff(c, p, n);
  if (c->h1 != NULL)
    return perfc__h2_h1_feed(c, p, n);
  if (c->dead)
    return false;
  ssize_t r = nghttp2_session_mem_recv(c->ng, p, n);
  if (r < 0) {
    /* A bad preface (HTTP/1.1, garbage) or a callback that gave up: tell
     * the client why if the session still can, then close. */
    nghttp2_session_terminate_session(
        c->ng, r == NGHTTP2_ERR_BAD_CLIENT_MAGIC ? NGHTTP2_PROTOCOL_ERROR
                                                 : NGHTTP2_INTERNAL_ERROR);
    c->closing = true;
    return false;
  }
  return true;
}

static void do_read(perfc__h2_conn *c) {
  uint8_t *buf = perfc__h2_loop_scratch(c->lc->loop);
  size_t total = 0;
  c->last_read_ms = perfc__h2_now_ms();
  if (c->lingering) {
    /* Discarded (bounded per turn like any read); the client's FIN or
     * the linger timer closes. */
    while (total < READ_SHARE) {
      ssize_t n = recv(c->io.fd, buf, PERFC__H2_LOOP_SCRATCH, 0);
      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return;
      if (n <= 0) {
        perfc__h2_conn_close_now(c);
        return;
      }
      total += (size_t)n;
    }
    return;
  }
  while (total < READ_SHARE && !c->closing && !c->dead &&
         (c->h1 == NULL || !perfc__h2_h1_busy(c))) {
    ssize_t n;
    if (c->ssl != NULL) {
      ERR_clear_error();
      int r = SSL_read(c->ssl, buf, PERFC__H2_LOOP_SCRATCH);
      if (r <= 0) {
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
          break;
        perfc__h2_conn_close_now(c);
        return;
      }
      n = r;
    } else {
      n = recv(c->io.fd, buf, PERFC__H2_LOOP_SCRATCH, 0);
      if (n < 0) {
        if (errno == EINTR)
          continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          break;
        perfc__h2_conn_close_now(c);
        return;
      }
      if (n == 0) {
        if (c->h1 != NULL && perfc__h2_h1_eof(c))
          break; /* answers still owed: the flush closes after them */
        perfc__h2_conn_close_now(c);
        return;
      }
    }
    total += (size_t)n;
    if (!feed(c, buf, (size_t)n))
      break;
    /* A short read emptied the socket (plaintext): skip the EAGAIN call;
     * level-triggered epoll reports anything that arrives later. */
    if (c->ssl == NULL && (size_t)n < PERFC__H2_LOOP_SCRATCH)
      break;
  }
  if (c->in_header_block && !c->dead)
    timer_at_most(c, c->header_block_ms + c->lc->srv->o.handshake_timeout_ms);
  perfc__h2_conn_defer_flush(c);
}

static void tls_handshake(perfc__h2_conn *c) {
  ERR_clear_error();
  int r = SSL_do_handshake(c->ssl);
  if (r == 1) {
    const unsigned char *alpn = NULL;
    unsigned alen = 0;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
    bool http = c->lc->srv->o.http_enabled;
    if (alen == 8 && http && memcmp(alpn, "http/1.1", 8) == 0) {
      if (!perfc__h2_h1_begin(c))
        return;
    } else if (alen == 0 && http) {
      c->sniffing = true; /* no ALPN: the first bytes tell, as in plaintext */
    } else if (alen != 2 || memcmp(alpn, "h2", 2) != 0) {
      perfc__h2_conn_close_now(c);
      return;
    }
    c->tls_done = true;
    X509 *peer = SSL_get1_peer_certificate(c->ssl);
    if (peer != NULL) {
      char name[256];
      X509_NAME_oneline(X509_get_subject_name(peer), name, sizeof name);
      c->peer_subject = strdup(name);
      X509_free(peer);
    }
    perfc__h2_conn_defer_flush(c); /* our SETTINGS */
    do_read(c);                    /* the client may have sent its preface */
    return;
  }
  int e = SSL_get_error(c->ssl, r);
  if (e == SSL_ERROR_WANT_READ) {
    perfc__h2_loop_mod(c->lc->loop, &c->io, EPOLLIN);
  } else if (e == SSL_ERROR_WANT_WRITE) {
    perfc__h2_loop_mod(c->lc->loop, &c->io, EPOLLIN | EPOLLOUT);
  } else {
    perfc__h2_conn_close_now(c);
  }
}

static void conn_io(perfc__h2_loop *l, perfc__h2_io *io, uint32_t events) {
  (void)l;
  perfc__h2_conn *c = (perfc__h2_conn *)io;
  if (c->dead)
    return;
  if (c->ssl != NULL && !c->tls_done) {
    tls_handshake(c);
    return;
  }
  if (events & EPOLLOUT) {
    if (!drain_out(c)) {
      perfc__h2_conn_close_now(c);
      return;
    }
    perfc__h2_conn_defer_flush(c);
  }
  /* epoll reports an error or hang-up whatever the mask: an HTTP/1.1
   * connection that is not being read (busy: a request in progress whose
   * handler is behind or answering) would be woken again at once, for
   * ever. The peer reset it or is gone both ways; nothing more can be
   * delivered: close (the call sees the cancel). */
  if ((events & (EPOLLHUP | EPOLLERR)) && c->h1 != NULL && !c->lingering &&
      perfc__h2_h1_busy(c)) {
    perfc__h2_conn_close_now(c);
    return;
  }
  if (events & (EPOLLIN | EPOLLHUP | EPOLLERR))
    do_read(c);
}

/* ---- life ------------------------------------------------------------------- */

void perfc__h2_conn_close_now(perfc__h2_conn *c) {
  if (c->dead)
    return;
  c->dead = true;
  /* Streams end now (on_close CONN), the socket and session at the end of
   * the iteration, when no nghttp2 callback can still be on the stack. */
  perfc__h2_grpc_conn_gone(c);
  perfc__h2_timer_disarm(c->lc->loop, &c->timer);
  perfc__h2_loop_del(c->lc->loop, &c->io);
  perfc__h2_conn_defer_flush(c);
}

static void conn_destroy(perfc__h2_conn *c) {
  perfc__h2_lctx *lc = c->lc;
  if (c->prev)
    c->prev->next = c->next;
  else
    lc->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  perfc__h2_mem_direct(lc->mem, 1);
  nghttp2_session_del(c->ng);
  perfc__h2_mem_direct(lc->mem, 0);
  perfc__h2_h1_free(c);
  if (c->ssl != NULL)
    SSL_free(c->ssl);
  close(c->io.fd);
  free(c->out);
  free(c->peer_subject);
  perfc__h2_count(&lc->n.conns_open, -1);
  atomic_fetch_sub(&lc->srv->conns_open, 1);
  free(c);
  if (lc->conns == NULL) {
    if (lc->draining)
      perfc__h2_loop_stop(lc->loop);
    /* The last connection of this loop left: give glibc's freed heap back
     * (a burst of closed connections otherwise stays resident), at most
     * once a second. Not under a sanitizer, whose allocator owns the heap:
     * there glibc's malloc is unused until this call initialises it on a
     * loop thread, which then owns glibc's main arena, and a later thread
     * exit aborted in __malloc_arena_thread_freeres ("a->attached_threads
     * > 0"; seen twice in make check's ASan runs, on h2 servers only, and
     * not since this was left out). */
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
    static _Thread_local int64_t last_trim_ms;
    int64_t now = perfc__h2_now_ms();
    if (now - last_trim_ms >= 1000) {
      last_trim_ms = now;
      perfc__h2_mem_release(lc->mem);
      malloc_trim(0);
    }
#endif
  }
}

static void peer_name(const struct sockaddr_storage *ss, char *out, size_t cap) {
  char host[INET6_ADDRSTRLEN] = "?";
  int port = 0;
  if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)ss;
    inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    port = ntohs(a->sin_port);
    snprintf(out, cap, "ipv4:%s:%d", host, port);
  } else if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const void *)ss;
    inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    port = ntohs(a->sin6_port);
    snprintf(out, cap, "ipv6:[%s]:%d", host, port);
  } else {
    snprintf(out, cap, "unknown");
  }
}

/* The refusal past max_connections: our SETTINGS (empty) and GOAWAY
 * REFUSED_STREAM "max_connections", written on the fresh socket (its
 * buffer is empty, so a small send does not block), then close. */
static void refuse(int fd) {
  static const uint8_t msg[] = {
      0, 0, 0, NGHTTP2_SETTINGS, 0, 0, 0, 0, 0,
      0, 0, 8 + 15, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0,
      0, 0, 0, 0, 0, 0, 0, NGHTTP2_REFUSED_STREAM,
      'm', 'a', 'x', '_', 'c', 'o', 'n', 'n', 'e', 'c', 't', 'i', 'o', 'n', 's'};
  ssize_t n = send(fd, msg, sizeof msg, MSG_NOSIGNAL | MSG_DONTWAIT);
  (void)n;
  close(fd);
}

static void conn_new(perfc__h2_listener *li, int fd,
                     const struct sockaddr_storage *ss) {
  perfc__h2_lctx *lc = li->lc;
  perfc__h2_server *srv = lc->srv;
  const perfc__h2_opts *o = &srv->o;
  if (lc->draining || atomic_fetch_add(&srv->conns_open, 1) >= o->max_connections) {
    if (!lc->draining)
      atomic_fetch_sub(&srv->conns_open, 1);
    perfc__h2_count(&lc->n.conns_refused, 1);
    if (li->tls == NULL)
      refuse(fd);
    else
      close(fd);
    return;
  }
  perfc__h2_conn *c = calloc(1, sizeof *c);
  if (c == NULL) {
    atomic_fetch_sub(&srv->conns_open, 1);
    close(fd);
    return;
  }
  c->io.fd = fd;
  c->io.cb = conn_io;
  c->lc = lc;
  c->flush.cb = conn_flush_cb;
  c->timer.cb = conn_timer_cb;
  peer_name(ss, c->peer, sizeof c->peer);
  int64_t now = perfc__h2_now_ms();
  c->accepted_ms = c->last_read_ms = c->idle_since_ms = now;
  c->reset_tokens = o->reset_burst;
  c->reset_refill_ms = now;
  if (o->max_connection_age_enabled) {
    /* ±10 % jitter, so connections made together do not all leave
     * together (grpc's rule). */
    int64_t j = o->max_connection_age_ms / 10;
    c->age_at_ms = now + o->max_connection_age_ms +
                   (j > 0 ? (int64_t)(random() % (2 * j + 1)) - j : 0);
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  /* The session's own structures live as long as the connection: exact
   * sizes, not the per-call size classes (mem_internal.h). */
  perfc__h2_mem_direct(lc->mem, 1);
  int ng_rc = nghttp2_session_server_new3(&c->ng, srv->ngcb, c, srv->ngopt,
                                          perfc__h2_mem_ng(lc->mem));
  perfc__h2_mem_direct(lc->mem, 0);
  if (ng_rc != 0)
    goto fail;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, o->max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, o->stream_window_bytes},
      {NGHTTP2_SETTINGS_MAX_FRAME_SIZE, PERFC_DEFAULT_H2_MAX_FRAME_BYTES},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, o->max_header_list_bytes},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  };
  if (nghttp2_submit_settings(c->ng, NGHTTP2_FLAG_NONE, iv,
                              sizeof iv / sizeof iv[0]) != 0 ||
      nghttp2_session_set_local_window_size(c->ng, NGHTTP2_FLAG_NONE, 0,
                                            (int32_t)o->conn_window_bytes) != 0)
    goto fail;
  if (li->tls != NULL) {
    c->ssl = SSL_new(li->tls);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1)
      goto fail;
    SSL_set_accept_state(c->ssl);
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE |
                             SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                             SSL_MODE_RELEASE_BUFFERS);
  }
  if (perfc__h2_loop_add(lc->loop, &c->io, EPOLLIN) != 0)
    goto fail;
  c->next = lc->conns;
  if (lc->conns)
    lc->conns->prev = c;
  lc->conns = c;
  perfc__h2_count(&lc->n.conns_accepted, 1);
  perfc__h2_count(&lc->n.conns_open, 1);
  /* The earliest of every check the timer makes; it recomputes the next
   * one each time it fires. */
  int64_t first = now + o->handshake_timeout_ms;
  if (now + o->keepalive_time_ms < first)
    first = now + o->keepalive_time_ms;
  if (o->max_connection_idle_enabled && now + o->max_connection_idle_ms < first)
    first = now + o->max_connection_idle_ms;
  if (o->max_connection_age_enabled && c->age_at_ms < first)
    first = c->age_at_ms;
  perfc__h2_timer_arm(lc->loop, &c->timer, first);
  /* Our SETTINGS go out at once, unless the server serves HTTP too: then
   * the client's first bytes say whether it speaks HTTP/2 (an HTTP/1.1
   * client must not read a SETTINGS frame). TLS offers h2 only (ALPN). */
  c->sniffing = srv->o.http_enabled && c->ssl == NULL;
  if (c->ssl == NULL && !c->sniffing)
    perfc__h2_conn_defer_flush(c);
  return;
fail:
  if (c->ssl != NULL)
    SSL_free(c->ssl);
  perfc__h2_mem_direct(lc->mem, 1);
  nghttp2_session_del(c->ng);
  perfc__h2_mem_direct(lc->mem, 0);
  free(c);
  close(fd);
  atomic_fetch_sub(&srv->conns_open, 1);
}

static void listener_io(perfc__h2_loop *l, perfc__h2_io *io, uint32_t events) {
  (void)l;
  (void)events;
  perfc__h2_listener *li = (perfc__h2_listener *)io;
  for (int i = 0; i < 64; i++) {
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int fd = accept4(io->fd, (struct sockaddr *)&ss, &sl,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      if (errno == EMFILE || errno == ENFILE)
        perfc_log_ratelimited(PERFC_LOG_WARN, PERFC_LOG_SITE,
                              "h2: accept: %s", strerror(errno));
      return;
    }
    conn_new(li, fd, &ss);
  }
}

int perfc__h2_port_exclusive(const char *host, int port) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  char ports[16];
  snprintf(ports, sizeof ports, "%d", port);
  if (getaddrinfo(host[0] ? host : NULL, ports, &hints, &res) != 0)
    return 0; /* listener_open reports it */
  int err = 0;
  for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
    int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0)
      continue;
    /* SO_REUSEADDR as the listeners set it (a port in TIME_WAIT is free),
     * but not SO_REUSEPORT: any socket listening there refuses the bind. */
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    int rc = bind(fd, a->ai_addr, a->ai_addrlen);
    err = rc == 0 ? 0 : errno;
    close(fd);
    if (rc == 0 || err == EADDRINUSE)
      break;
  }
  freeaddrinfo(res);
  if (err == EADDRINUSE)
    return perfc__fail(PERFC_EBIND, "address already in use");
  return 0;
}

int perfc__h2_listener_open(perfc__h2_lctx *lc, const char *host, int port,
                            SSL_CTX *tls, int *bound_port) {
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
  struct addrinfo *res = NULL;
  char ports[16];
  snprintf(ports, sizeof ports, "%d", port);
  int gai = getaddrinfo(host[0] ? host : NULL, ports, &hints, &res);
  if (gai != 0)
    return perfc__fail(PERFC_EBIND, "h2: cannot resolve '%s': %s", host,
                       gai_strerror(gai));
  int fd = -1, err = 0;
  for (struct addrinfo *a = res; a != NULL; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
      continue;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, a->ai_addr, a->ai_addrlen) == 0 && listen(fd, 1024) == 0)
      break;
    err = errno;
    close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0)
    return perfc__fail(PERFC_EBIND, "h2: cannot listen on %s:%d: %s", host,
                       port, strerror(err));
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  getsockname(fd, (struct sockaddr *)&ss, &sl);
  *bound_port = ntohs(ss.ss_family == AF_INET6
                          ? ((struct sockaddr_in6 *)&ss)->sin6_port
                          : ((struct sockaddr_in *)&ss)->sin_port);
  perfc__h2_listener *ls =
      realloc(lc->listeners, (lc->nlisteners + 1) * sizeof *ls);
  if (ls == NULL) {
    close(fd);
    return perfc__fail(PERFC_ENOMEM, "h2: out of memory");
  }
  lc->listeners = ls;
  perfc__h2_listener *li = &ls[lc->nlisteners++];
  memset(li, 0, sizeof *li);
  li->io.fd = fd;
  li->io.cb = listener_io;
  li->lc = lc;
  li->tls = tls;
  return 0;
}

void perfc__h2_listener_close(perfc__h2_listener *li) {
  if (li->io.fd < 0)
    return;
  if (li->io.events)
    perfc__h2_loop_del(li->lc->loop, &li->io);
  close(li->io.fd);
  li->io.fd = -1;
}

void perfc__h2_conn_recv_released(perfc__h2_conn *c) {
  if (c->nowed > 0)
    perfc__h2_grpc_repay(c);
}
