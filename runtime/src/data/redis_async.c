/*
 * data/redis_async.c — Redis on perfc's event loops (perfc/redis_async.h):
 * hiredis's redisAsyncContext with an adapter for perfc/loop.h.
 *
 * Room: runtime/src/data (libperfc-data). Uses libperfc's public API only
 * (perfc/loop.h for the loops, perfc_error_set for messages).
 *
 * The adapter. hiredis asks for five things (addRead, delRead, addWrite,
 * delWrite, cleanup; see /usr/include/hiredis/adapters/ae.h). Reads map to
 * the connection's watch. Writes are where the pipelining happens: once a
 * connection is up, hiredis's addWrite after a command only marks the
 * connection and defers one flush task to the end of the loop's iteration,
 * so every command issued during the iteration (by every call the loop
 * served) leaves in one write(2). Only a write that did not finish (a full
 * socket buffer) and the connect itself wait for the socket to become
 * writable.
 *
 * Per connection, our own FIFO mirrors hiredis's callback list: the oldest
 * command's deadline arms the connection's one timer. When it passes, that
 * command (and every command behind it, waiting on the same silent
 * server) fails with PERFC_ETIMEDOUT and the connection is closed: a reply
 * that comes late must never be read as the answer to a later command.
 * A connection lost any other way fails its commands with
 * PERFC_EUNAVAILABLE (hiredis runs each pending callback with a NULL
 * reply). The same timer then reopens the connection after the backoff.
 *
 * Per loop, the client's state is a loop-local value (perfc_loop_local_*)
 * created at the loop's first command; its on_exit closes the connections
 * when the loop stops, so commands pending there fail instead of waiting
 * for a loop that will not run again. Threads without a loop hand their
 * commands to the client's own loop thread through a locked queue and one
 * posted task.
 */
#include "perfc/redis_async.h"
#include "perfc/loop.h"
#include "perfc/metrics.h"
#include "perfc/redis.h"
#include "perfc/log.h"
#include "core/error_internal.h"
#include "data/redis_cluster_internal.h"
#include "data/resolve_internal.h"
#include "data/redis_internal.h"
#include "data/redis_sentinel.h"

#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

enum { C_DOWN = 0, C_CONNECTING, C_UP };

typedef struct rcmd rcmd;
typedef struct rconn rconn;
typedef struct lstate lstate;

struct rcmd {
  rcmd *next;   /* the connection's FIFO, or the hand-off queue */
  int64_t deadline_ms;
  int is_get;
  int done;     /* the callback ran (timed out): a late reply is dropped */
  perfc_redis_async_fn fn;
  perfc_redis_async_get_fn get_fn;
  void *ud;
  char *fmt;    /* hand-off only: the formatted command (redisFreeCommand) */
  size_t fmt_len;
};

struct rconn {
  lstate *ls;
  redisAsyncContext *ac;
  perfc_loop_io *io;
  perfc_loop_timer *timer;
  int state;
  int counted;       /* in connects and the "up" gauge: connected and, with
                        a password, authenticated */
  unsigned events;   /* PERFC_LOOP_* registered */
  int dirty;         /* commands appended since the last flush */
  int in_flush;
  int fail_rc;       /* what pending commands get when it closes */
  int64_t backoff_ms;
  rcmd *head, *tail;
  unsigned npending;
  uint64_t epoch; /* sentinel mode: the master's epoch at the last start */
  int fd;         /* sentinel mode: the socket registered, or -1 */
};

struct lstate {
  perfc_redis_async *r;
  perfc_loop *loop;
  rconn *conns;
  unsigned nconns, rr;
  perfc_loop_task *flush;
  lstate *next, *prev; /* r->states, under r->mu */
  /* Written by the loop's thread only; read racily by stats. */
  _Atomic uint64_t commands, writes, replies, timeouts, failed, connects;
  _Atomic unsigned up;
};

struct perfc_redis_async {
  perfc_redis_async_opts o;
  char *host;
  char *name;
  /* Per-thread cells: incremented on the loops without a shared write. */
  perfc_counter *m_commands, *m_writes, *m_timeouts, *m_unavailable,
      *m_shutdown;
  perfc_gauge *m_up;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  lstate *states;
  unsigned nstates;
  perfc_redis_async_stats retired; /* counters of states that ended */
  atomic_int closing;
  /* The client's own loop, for threads without one. */
  perfc_loop *own;
  pthread_t own_thread;
  int own_started;
  perfc_loop_task *submit;
  rcmd *q, *q_tail; /* under mu */
  /* Cluster mode: a router over one client per node (see "cluster" at the
   * end); such a client has no loops, states or metrics of its own. */
  perfc__rc *cl;
  char **seeds;
  atomic_int cl_active; /* callbacks using the node clients now */
  perfc__redis_sentinel *sentinel; /* NULL: one server at host:port */
  perfc__redis_creds creds; /* o.username, o.password, ..., copied */
  /* When a refused AUTH was last logged (CLOCK_MONOTONIC ms), by any
   * loop: at most one line per backoff_max_ms. */
  _Atomic int64_t auth_logged_ms;
};

static void conn_start(rconn *c);
static void conn_close(rconn *c, int rc, int free_ctx);
static int cl_new(perfc_redis_async *r);
static void cl_free(perfc_redis_async *r);
static int cl_issue(perfc_redis_async *r, int argc, const char *const *argv,
                    const size_t *argvlen, int is_get, perfc_redis_async_fn fn,
                    perfc_redis_async_get_fn get_fn, void *ud);

/* ---- options ----------------------------------------------------------------- */

void perfc_redis_async_opts_init(perfc_redis_async_opts *o) {
  memset(o, 0, sizeof *o);
  o->host = PERFC_DEFAULT_REDIS_HOST;
  o->port = PERFC_DEFAULT_REDIS_PORT;
  o->conns_per_loop = PERFC_DEFAULT_REDIS_ASYNC_CONNS_PER_LOOP;
  o->connect_timeout_ms = PERFC_DEFAULT_REDIS_CONNECT_TIMEOUT_MS;
  o->command_timeout_ms = PERFC_DEFAULT_REDIS_COMMAND_TIMEOUT_MS;
  o->backoff_min_ms = PERFC_DEFAULT_REDIS_BACKOFF_MIN_MS;
  o->backoff_max_ms = PERFC_DEFAULT_REDIS_BACKOFF_MAX_MS;
  o->max_pending = PERFC_DEFAULT_REDIS_ASYNC_MAX_PENDING;
}

static int check_ms(const char *name, int64_t *v, int64_t def) {
  if (*v < 0 || *v > PERFC_REDIS_MAX_DURATION_MS)
    return perfc__fail(PERFC_EINVAL,
                       "redis async: %s = %lld ms (0..%lld allowed)", name,
                       (long long)*v, (long long)PERFC_REDIS_MAX_DURATION_MS);
  if (*v == 0)
    *v = def;
  return 0;
}

static int register_metrics(perfc_redis_async *r) {
  perfc_metrics_registry *reg = r->o.registry;
  const char *client[] = {"client"};
  const char *kinds[] = {"client", "kind"};
  perfc_metrics_family_opts mo;
  perfc_metrics_family *fam;
  const char *const who[] = {r->name};
  int rc;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_redis_async_commands_total";
  mo.help = "Commands the asynchronous Redis client accepted.";
  mo.label_names = client;
  mo.label_count = 1;
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_COUNTER, &mo)) != 0 ||
      (rc = perfc_counter_get(&r->m_commands, fam, who)) != 0)
    return rc;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_redis_async_writes_total";
  mo.help = "write(2) calls that sent commands (commands / writes: the "
            "pipelining factor).";
  mo.label_names = client;
  mo.label_count = 1;
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_COUNTER, &mo)) != 0 ||
      (rc = perfc_counter_get(&r->m_writes, fam, who)) != 0)
    return rc;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_redis_async_errors_total";
  mo.help = "Commands that failed: timeout (no reply within "
            "command_timeout_ms), unavailable (connection lost or refused), "
            "shutdown (loop or client stopped).";
  mo.label_names = kinds;
  mo.label_count = 2;
  const char *const t[] = {r->name, "timeout"};
  const char *const u[] = {r->name, "unavailable"};
  const char *const d[] = {r->name, "shutdown"};
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_COUNTER, &mo)) != 0 ||
      (rc = perfc_counter_get(&r->m_timeouts, fam, t)) != 0 ||
      (rc = perfc_counter_get(&r->m_unavailable, fam, u)) != 0 ||
      (rc = perfc_counter_get(&r->m_shutdown, fam, d)) != 0)
    return rc;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_redis_async_connections";
  mo.help = "Connections of the asynchronous Redis client connected now.";
  mo.label_names = client;
  mo.label_count = 1;
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_GAUGE, &mo)) != 0 ||
      (rc = perfc_gauge_get(&r->m_up, fam, who)) != 0)
    return rc;
  return 0;
}

int perfc_redis_async_new(perfc_redis_async **out,
                          const perfc_redis_async_opts *opts) {
  if (out == NULL)
    return perfc__fail(PERFC_EINVAL, "redis async: out is NULL");
  *out = NULL;
  perfc_redis_async_opts o;
  if (opts != NULL)
    o = *opts;
  else
    perfc_redis_async_opts_init(&o);
  if (o.host == NULL || o.host[0] == '\0')
    o.host = PERFC_DEFAULT_REDIS_HOST;
  if (o.port == 0)
    o.port = PERFC_DEFAULT_REDIS_PORT;
  if (o.port < 0 || o.port > 65535)
    return perfc__fail(PERFC_EINVAL, "redis async: port %d", o.port);
  if (o.conns_per_loop == 0)
    o.conns_per_loop = PERFC_DEFAULT_REDIS_ASYNC_CONNS_PER_LOOP;
  if (o.conns_per_loop > 64)
    return perfc__fail(PERFC_EINVAL,
                       "redis async: conns_per_loop %u (at most 64)",
                       o.conns_per_loop);
  if (o.max_pending == 0)
    o.max_pending = PERFC_DEFAULT_REDIS_ASYNC_MAX_PENDING;
  int rc;
  if ((rc = check_ms("connect_timeout_ms", &o.connect_timeout_ms,
                     PERFC_DEFAULT_REDIS_CONNECT_TIMEOUT_MS)) != 0 ||
      (rc = check_ms("command_timeout_ms", &o.command_timeout_ms,
                     PERFC_DEFAULT_REDIS_COMMAND_TIMEOUT_MS)) != 0 ||
      (rc = check_ms("backoff_min_ms", &o.backoff_min_ms,
                     PERFC_DEFAULT_REDIS_BACKOFF_MIN_MS)) != 0 ||
      (rc = check_ms("backoff_max_ms", &o.backoff_max_ms,
                     PERFC_DEFAULT_REDIS_BACKOFF_MAX_MS)) != 0)
    return rc;
  if (o.backoff_max_ms < o.backoff_min_ms)
    o.backoff_max_ms = o.backoff_min_ms;
  if (o.name == NULL || o.name[0] == '\0')
    o.name = PERFC_DEFAULT_REDIS_NAME;
  if (o.n_cluster_nodes && (o.n_sentinels || (o.master_name && o.master_name[0])))
    return perfc__fail(PERFC_EINVAL,
                       "redis async: cluster_nodes and sentinels exclude each "
                       "other (a Redis Cluster fails over by itself)");
  if (o.username && o.username[0] && !(o.password && o.password[0]))
    return perfc__fail(PERFC_EINVAL, "redis async: username without password "
                                     "(AUTH needs both)");
  if (o.sentinel_username && o.sentinel_username[0] &&
      !(o.sentinel_password && o.sentinel_password[0]))
    return perfc__fail(PERFC_EINVAL, "redis async: sentinel_username without "
                                     "sentinel_password (AUTH needs both)");
  /* Sentinel mode: the shared resolver and watcher of these sentinels
   * (data/redis_sentinel.h); messages name the master by its name. */
  perfc__redis_sentinel *sn = NULL;
  if (o.n_sentinels || (o.master_name && o.master_name[0])) {
    perfc_redis_opts so;
    perfc_redis_opts_init(&so);
    so.sentinels = o.sentinels;
    so.n_sentinels = o.n_sentinels;
    so.master_name = o.master_name;
    so.connect_timeout_ms = o.connect_timeout_ms;
    so.command_timeout_ms = o.command_timeout_ms;
    so.username = o.username;
    so.password = o.password;
    so.sentinel_password = o.sentinel_password;
    so.sentinel_username = o.sentinel_username;
    if ((rc = perfc__redis_sentinel_get(&sn, &so)) != 0)
      return rc;
    o.host = perfc__redis_sentinel_name(sn);
    o.port = 0;
    o.sentinels = perfc__redis_sentinel_addrs(sn, &o.n_sentinels);
    o.master_name = perfc__redis_sentinel_name(sn);
  }
  perfc_redis_async *r = calloc(1, sizeof *r);
  perfc_redis_opts co = {0}; /* the AUTH strings, to be copied */
  co.username = o.username;
  co.password = o.password;
  co.sentinel_password = o.sentinel_password;
  co.sentinel_username = o.sentinel_username;
  if (r == NULL || (r->host = strdup(o.host)) == NULL ||
      (r->name = strdup(o.name)) == NULL ||
      perfc__redis_creds_copy(&r->creds, &co) != 0) {
    if (r != NULL) {
      free(r->host);
      free(r->name);
    }
    free(r);
    perfc__redis_sentinel_put(sn);
    return perfc__fail(PERFC_ENOMEM, "redis async: out of memory");
  }
  o.host = r->host;
  o.name = r->name;
  o.username = co.username;
  o.password = co.password;
  o.sentinel_password = co.sentinel_password;
  o.sentinel_username = co.sentinel_username;
  r->o = o;
  r->sentinel = sn;
  if (o.n_cluster_nodes) {
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    if ((rc = cl_new(r)) != 0) {
      cl_free(r);
      return rc;
    }
    *out = r;
    return 0;
  }
  if ((rc = register_metrics(r)) != 0) {
    perfc__redis_sentinel_put(sn);
    perfc__redis_creds_free(&r->creds);
    free(r->name);
    free(r->host);
    free(r);
    return rc == PERFC_EEXIST
               ? perfc__fail(rc, "redis async: its metrics clash with other "
                                 "families of the same names in the registry")
               : rc;
  }
  /* Host names are resolved off the loops (data/resolve_internal.h):
   * hiredis's connect would block the loop in getaddrinfo(). The first
   * answer is waited for here, at start-up, so the first connects find
   * it; a name that does not resolve yet is retried as a refused
   * connect. */
  if ((rc = perfc__resolve_ref()) != 0) {
    perfc__redis_sentinel_put(sn);
    perfc__redis_creds_free(&r->creds);
    free(r->name);
    free(r->host);
    free(r);
    return perfc__fail(rc, "redis async: %s", perfc_strerror(rc));
  }
  if (sn == NULL) {
    char addr[PERFC__RESOLVE_ADDR_LEN];
    perfc__resolve_wait(r->host, addr, o.connect_timeout_ms);
  }
  pthread_mutex_init(&r->mu, NULL);
  pthread_cond_init(&r->cv, NULL);
  *out = r;
  return 0;
}

/* ---- the hiredis adapter ------------------------------------------------------ */

static void set_events(rconn *c, unsigned ev) {
  if (c->io != NULL && ev != c->events) {
    c->events = ev;
    perfc_loop_io_set(c->io, ev);
  }
}

static void ev_add_read(void *p) {
  rconn *c = p;
  set_events(c, c->events | PERFC_LOOP_READ);
}

static void ev_del_read(void *p) {
  rconn *c = p;
  set_events(c, c->events & ~PERFC_LOOP_READ);
}

static void ev_add_write(void *p) {
  rconn *c = p;
  /* Connected and not inside a flush: the end of the iteration writes
   * this with everything else issued meanwhile (auto-pipelining). */
  if (c->state == C_UP && !c->in_flush) {
    c->dirty = 1;
    perfc_loop_task_defer(c->ls->flush);
    return;
  }
  set_events(c, c->events | PERFC_LOOP_WRITE);
}

static void ev_del_write(void *p) {
  rconn *c = p;
  set_events(c, c->events & ~PERFC_LOOP_WRITE);
}

static void ev_cleanup(void *p) {
  rconn *c = p;
  /* hiredis is freeing the context (its pending callbacks ran); the
   * socket closes after this, so it leaves the sentinel's list now. */
  if (c->fd >= 0 && c->ls->r->sentinel != NULL)
    perfc__redis_sentinel_untrack(c->ls->r->sentinel, c->fd);
  c->fd = -1;
  perfc_loop_io_free(c->io);
  c->io = NULL;
  c->events = 0;
  c->ac = NULL;
  c->dirty = 0;
}

/* hiredis writes with write(2): a server that went away raises SIGPIPE,
 * which kills the process by default. perfc's loop threads (h2's, the
 * client's own) block every signal, so this costs them one check per
 * thread. A thread of the application running its own loop with SIGPIPE
 * unblocked gets the synchronous pool's treatment around each write (data/
 * redis.c): blocked, and a SIGPIPE our write raised consumed. */
static _Thread_local int sigpipe_state; /* 0 unknown, 1 blocked, 2 not */

static void write_guarded(redisAsyncContext *ac) {
  if (sigpipe_state == 0) {
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    sigpipe_state = sigismember(&cur, SIGPIPE) ? 1 : 2;
  }
  if (sigpipe_state == 1) {
    redisAsyncHandleWrite(ac);
    return;
  }
  sigset_t block, old, pending;
  sigemptyset(&pending);
  sigpending(&pending);
  int was_pending = sigismember(&pending, SIGPIPE);
  sigemptyset(&block);
  sigaddset(&block, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  redisAsyncHandleWrite(ac);
  if (!was_pending) {
    sigemptyset(&pending);
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE)) {
      struct timespec zero = {0, 0};
      while (sigtimedwait(&block, NULL, &zero) == -1 && errno == EINTR)
        ;
    }
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* One write(2) of what hiredis buffered, counted when there was any. */
static void handle_write(rconn *c) {
  int had = sdslen(c->ac->c.obuf) > 0;
  int connected = (c->ac->c.flags & REDIS_CONNECTED) != 0;
  c->in_flush = 1;
  write_guarded(c->ac); /* may connect first, or free the context */
  c->in_flush = 0;
  if (had && (connected ||
              (c->ac != NULL && (c->ac->c.flags & REDIS_CONNECTED)))) {
    atomic_fetch_add_explicit(&c->ls->writes, 1, memory_order_relaxed);
    perfc_counter_inc(c->ls->r->m_writes);
  }
}

static void on_io(perfc_loop_io *io, unsigned events, void *ud) {
  (void)io;
  rconn *c = ud;
  if (c->ac != NULL && (events & (PERFC_LOOP_WRITE | PERFC_LOOP_ERROR)) &&
      (c->events & PERFC_LOOP_WRITE))
    handle_write(c);
  if (c->ac != NULL &&
      (events & (PERFC_LOOP_READ | PERFC_LOOP_ERROR)))
    redisAsyncHandleRead(c->ac);
}

/* End of the iteration: every connection with new commands writes once. */
static void flush_task(void *ud) {
  lstate *ls = ud;
  for (unsigned i = 0; i < ls->nconns; i++) {
    rconn *c = &ls->conns[i];
    if (c->dirty && c->ac != NULL) {
      c->dirty = 0;
      handle_write(c);
    }
  }
}

/* ---- commands and their replies ------------------------------------------------ */

static void fifo_push(rconn *c, rcmd *m) {
  m->next = NULL;
  if (c->tail != NULL)
    c->tail->next = m;
  else
    c->head = m;
  c->tail = m;
  c->npending++;
}

static void fifo_remove(rconn *c, rcmd *m) {
  rcmd **p = &c->head, *prev = NULL;
  while (*p != NULL && *p != m) {
    prev = *p;
    p = &(*p)->next;
  }
  if (*p == NULL)
    return;
  *p = m->next;
  if (c->tail == m)
    c->tail = prev;
  c->npending--;
}

static void convert(const redisReply *in, perfc_redis_reply *out) {
  memset(out, 0, sizeof *out);
  out->type = (perfc_redis_reply_type)in->type;
  out->integer = in->integer;
  out->str = in->str;
  out->len = in->len;
  if (in->type == REDIS_REPLY_ARRAY && in->elements > 0) {
    perfc_redis_reply *el = calloc(in->elements, sizeof *el);
    if (el == NULL)
      return; /* seen as an empty array; the caller reports ENOMEM */
    for (size_t i = 0; i < in->elements; i++)
      convert(in->element[i], &el[i]);
    out->elements = in->elements;
    out->element = el;
  }
}

static void release_converted(perfc_redis_reply *r) {
  for (size_t i = 0; i < r->elements; i++)
    release_converted((perfc_redis_reply *)&r->element[i]);
  free((void *)r->element);
}

/* Runs a command's callback with an error. */
static void deliver_error(lstate *ls, rcmd *m, int rc) {
  if (m->done)
    return;
  m->done = 1;
  atomic_fetch_add_explicit(rc == PERFC_ETIMEDOUT ? &ls->timeouts : &ls->failed,
                            1, memory_order_relaxed);
  perfc_redis_async *r = ls->r;
  perfc_counter_inc(rc == PERFC_ETIMEDOUT    ? r->m_timeouts
                    : rc == PERFC_ESHUTDOWN ? r->m_shutdown
                                            : r->m_unavailable);
  /* Other codes (a refusal on the own loop) carry their message already. */
  if (rc == PERFC_ETIMEDOUT || rc == PERFC_ESHUTDOWN ||
      rc == PERFC_EUNAVAILABLE)
    perfc_error_set(rc, NULL, -1, "redis async %s:%d: %s", ls->r->o.host,
                    ls->r->o.port,
                    rc == PERFC_ETIMEDOUT ? "no reply within command_timeout_ms"
                    : rc == PERFC_ESHUTDOWN ? "the client or its loop stopped"
                                            : "connection lost or refused");
  if (m->is_get)
    m->get_fn(rc, NULL, 0, m->ud);
  else
    m->fn(rc, NULL, m->ud);
}

static void deliver_reply(lstate *ls, rcmd *m, redisReply *reply) {
  if (m->done)
    return;
  m->done = 1;
  atomic_fetch_add_explicit(&ls->replies, 1, memory_order_relaxed);
  if (m->is_get) {
    if (reply->type == REDIS_REPLY_STRING) {
      m->get_fn(0, (const uint8_t *)reply->str, reply->len, m->ud);
    } else if (reply->type == REDIS_REPLY_NIL) {
      m->get_fn(PERFC_ENOENT, NULL, 0, m->ud);
    } else {
      perfc_error_set(PERFC_EIO, NULL, -1, "redis async: GET: %.*s",
                      reply->type == REDIS_REPLY_ERROR ? (int)reply->len : 21,
                      reply->type == REDIS_REPLY_ERROR ? reply->str
                                                       : "unexpected reply type");
      m->get_fn(PERFC_EIO, NULL, 0, m->ud);
    }
    return;
  }
  perfc_redis_reply out;
  convert(reply, &out);
  if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0 &&
      out.element == NULL) {
    perfc_error_set(PERFC_ENOMEM, NULL, -1, "redis async: out of memory");
    m->fn(PERFC_ENOMEM, NULL, m->ud);
    return;
  }
  m->fn(0, &out, m->ud);
  release_converted(&out);
}

static void arm_command_timer(rconn *c) {
  if (c->state == C_UP && c->head != NULL)
    perfc_loop_timer_arm(c->timer, c->head->deadline_ms);
}

/* hiredis's callback for every command. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
  (void)ac;
  rcmd *m = privdata;
  rconn *c = ac->data;
  lstate *ls = c->ls;
  fifo_remove(c, m);
  if (reply == NULL) {
    /* The connection is going (hiredis frees it after these callbacks):
     * nothing may be issued on it any more. */
    if (c->state != C_DOWN)
      conn_close(c, PERFC_EUNAVAILABLE, 0);
    deliver_error(ls, m, c->fail_rc ? c->fail_rc : PERFC_EUNAVAILABLE);
  } else {
    deliver_reply(ls, m, reply);
  }
  free(m);
}

/* ---- connections --------------------------------------------------------------- */

/* The connection counts as up (connects, the "up" gauge) once the server
 * takes us: at connect, or with a password when AUTH succeeds, so a
 * refused password never shows a connection up. */
static void count_up(rconn *c) {
  c->counted = 1;
  atomic_fetch_add_explicit(&c->ls->connects, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&c->ls->up, 1, memory_order_relaxed);
  perfc_gauge_inc(c->ls->r->m_up);
}

static void count_down(rconn *c) {
  if (!c->counted)
    return;
  c->counted = 0;
  atomic_fetch_sub_explicit(&c->ls->up, 1, memory_order_relaxed);
  perfc_gauge_dec(c->ls->r->m_up);
}

static void on_connect(const redisAsyncContext *ac, int status) {
  rconn *c = ac->data;
  if (status != REDIS_OK && c->ls->r->sentinel != NULL)
    perfc__redis_sentinel_suspect(c->ls->r->sentinel, c->epoch);
  if (status != REDIS_OK) {
    /* hiredis frees the context after this: its commands fail. */
    if (c->state != C_DOWN)
      conn_close(c, PERFC_EUNAVAILABLE, 0);
    return;
  }
  c->state = C_UP;
  /* With AUTH, the server is known to accept us only when AUTH succeeds
   * (on_auth): a refused password must keep doubling the backoff. */
  if (c->ls->r->o.password == NULL) {
    c->backoff_ms = 0;
    count_up(c);
  }
  perfc_loop_timer_disarm(c->timer);
  arm_command_timer(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
  (void)status;
  rconn *c = ac->data;
  if (c->ls->r->sentinel != NULL && status != REDIS_OK)
    perfc__redis_sentinel_suspect(c->ls->r->sentinel, c->epoch);
  /* An idle connection the server closed: reopen it after the backoff. */
  if (c->state != C_DOWN)
    conn_close(c, PERFC_EUNAVAILABLE, 0);
}

/* The connection stops being used: pending commands will fail with `rc`,
 * and the timer reopens it after the backoff. With `free_ctx` (a close we
 * decide: a timeout) the context is freed here and its pending callbacks
 * run now; without it hiredis is freeing the context itself (a lost
 * connection, a failed connect: called from its callbacks, where freeing
 * it again would free it twice). */
static void conn_close(rconn *c, int rc, int free_ctx) {
  c->state = C_DOWN;
  c->fail_rc = rc;
  count_down(c);
  perfc_redis_async *r = c->ls->r;
  c->backoff_ms = c->backoff_ms == 0 ? r->o.backoff_min_ms
                  : c->backoff_ms * 2 > r->o.backoff_max_ms
                      ? r->o.backoff_max_ms
                      : c->backoff_ms * 2;
  perfc_loop_timer_arm(c->timer, perfc_loop_now_ms() + c->backoff_ms);
  if (free_ctx && c->ac != NULL)
    redisAsyncFree(c->ac); /* runs on_reply(NULL) for each, then cleanup */
}

static void on_timer(void *ud) {
  rconn *c = ud;
  int64_t now = perfc_loop_now_ms();
  /* Sentinel mode: open to an old master (pick() saw the switch). */
  if (c->state != C_DOWN && c->ls->r->sentinel != NULL &&
      c->epoch != perfc__redis_sentinel_epoch(c->ls->r->sentinel)) {
    conn_close(c, PERFC_EUNAVAILABLE, 1);
    return;
  }
  switch (c->state) {
  case C_DOWN:
    if (!c->ls->r->closing)
      conn_start(c);
    break;
  case C_CONNECTING:
    conn_close(c, PERFC_EUNAVAILABLE, 1); /* connect_timeout_ms passed */
    break;
  case C_UP:
    if (c->head == NULL)
      break;
    if (c->head->deadline_ms > now) {
      perfc_loop_timer_arm(c->timer, c->head->deadline_ms);
      break;
    }
    /* The oldest command got no reply in time: the server is stuck or the
     * reply lost. Everything behind it waits on the same connection, and
     * a late reply must not be read as another command's: close. */
    conn_close(c, PERFC_ETIMEDOUT, 1);
    break;
  }
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The reply to the AUTH queued first on a new connection (not in our FIFO:
 * it has no caller and no deadline of its own; a command behind it has). */
static void on_auth(redisAsyncContext *ac, void *reply, void *privdata) {
  (void)ac;
  rconn *c = privdata;
  if (reply == NULL)
    return; /* the connection is going: its commands fail as usual */
  const redisReply *rp = reply;
  if (rp->type == REDIS_REPLY_STATUS) {
    c->backoff_ms = 0; /* authenticated: the server takes us */
    if (c->state == C_UP && !c->counted)
      count_up(c);
    return;
  }
  perfc_redis_async *r = c->ls->r;
  int64_t now = mono_ms(), last = atomic_load(&r->auth_logged_ms);
  if ((last == 0 || now - last >= r->o.backoff_max_ms) &&
      atomic_compare_exchange_strong(&r->auth_logged_ms, &last, now))
    perfc_log(PERFC_LOG_WARN,
              "redis async %s: %s:%d: AUTH failed%s%s: %.*s; closing the "
              "connection, retrying after the backoff",
              r->name, r->o.host, r->o.port,
              r->o.username ? " for user " : "",
              r->o.username ? r->o.username : "",
              rp->type == REDIS_REPLY_ERROR ? (int)rp->len : 21,
              rp->type == REDIS_REPLY_ERROR ? rp->str : "unexpected reply type");
  /* Every command queued behind it would be answered NOAUTH: close now
   * (freed by hiredis after this callback), so they fail with
   * PERFC_EUNAVAILABLE, and reopen after the backoff, which doubles
   * because on_connect did not reset it. */
  if (c->state != C_DOWN)
    conn_close(c, PERFC_EUNAVAILABLE, 1);
}

/* Queues AUTH as the connection's first command: hiredis sends its output
 * buffer in order once connected, so no command can go before it. */
static int queue_auth(rconn *c) {
  const perfc_redis_async_opts *o = &c->ls->r->o;
  if (o->password == NULL)
    return REDIS_OK;
  const char *argv[3] = {"AUTH"};
  size_t len[3] = {4};
  int argc = 1;
  if (o->username != NULL) {
    argv[argc] = o->username;
    len[argc++] = strlen(o->username);
  }
  argv[argc] = o->password;
  len[argc++] = strlen(o->password);
  return redisAsyncCommandArgv(c->ac, on_auth, c, argc, argv, len);
}

static void conn_start(rconn *c) {
  perfc_redis_async *r = c->ls->r;
  const char *host = r->o.host;
  int port = r->o.port;
  char mhost[256];
  /* Sentinel mode: the confirmed master, read without blocking the loop
   * (the sentinel's watcher thread does the asking). */
  if (r->sentinel != NULL &&
      perfc__redis_sentinel_peek(r->sentinel, mhost, sizeof mhost, &port,
                                 &c->epoch) != 0) {
    conn_close(c, PERFC_EUNAVAILABLE, 0);
    return;
  }
  if (r->sentinel != NULL)
    host = mhost;
  char addr[PERFC__RESOLVE_ADDR_LEN];
  if (perfc__resolve_is_name(host)) {
    int rc = perfc__resolve_peek(host, addr);
    if (rc != 0) {
      perfc_log(PERFC_LOG_DEBUG, "redis async: %s: %s", host,
                rc == PERFC_EUNAVAILABLE ? "not resolved yet" : "does not resolve");
      conn_close(c, PERFC_EUNAVAILABLE, 0);
      return;
    }
    host = addr;
  }
  redisAsyncContext *ac = redisAsyncConnect(host, port);
  if (ac == NULL || ac->err) {
    if (ac != NULL)
      redisAsyncFree(ac);
    conn_close(c, PERFC_EUNAVAILABLE, 0);
    return;
  }
  c->ac = ac;
  ac->data = c;
  if (perfc_loop_io_new(&c->io, c->ls->loop, ac->c.fd, on_io, c) != 0) {
    c->ac = NULL;
    redisAsyncFree(ac);
    conn_close(c, PERFC_EUNAVAILABLE, 0);
    return;
  }
  c->events = 0;
  c->state = C_CONNECTING;
  c->fail_rc = 0;
  ac->ev.data = c;
  ac->ev.addRead = ev_add_read;
  ac->ev.delRead = ev_del_read;
  ac->ev.addWrite = ev_add_write;
  ac->ev.delWrite = ev_del_write;
  ac->ev.cleanup = ev_cleanup;
  redisAsyncSetConnectCallback(ac, on_connect); /* waits for writable */
  redisAsyncSetDisconnectCallback(ac, on_disconnect);
  if (queue_auth(c) != REDIS_OK) {
    /* Out of memory formatting it: no command may go unauthenticated. */
    c->state = C_DOWN;
    redisAsyncFree(ac); /* nothing pending; ev_cleanup clears c->ac */
    conn_close(c, PERFC_EUNAVAILABLE, 0);
    return;
  }
  /* Shut down on a switch: its commands fail at once, not at their
   * deadline (untracked in ev_cleanup, before hiredis closes it). */
  if (r->sentinel != NULL) {
    c->fd = ac->c.fd;
    perfc__redis_sentinel_track(r->sentinel, c->fd, c->epoch);
  }
  perfc_loop_timer_arm(c->timer,
                       perfc_loop_now_ms() + r->o.connect_timeout_ms);
}

/* ---- per-loop state ------------------------------------------------------------- */

static void state_end(void *ud);

static void retire_counts(perfc_redis_async *r, lstate *ls) {
#define RETIRE(f) r->retired.f += atomic_load(&ls->f)
  RETIRE(commands);
  RETIRE(writes);
  RETIRE(replies);
  RETIRE(timeouts);
  RETIRE(failed);
  RETIRE(connects);
#undef RETIRE
}

static lstate *state_get(perfc_redis_async *r, perfc_loop *loop) {
  lstate *ls = perfc_loop_local_get(loop, r);
  if (ls != NULL)
    return ls;
  ls = calloc(1, sizeof *ls);
  if (ls == NULL)
    return NULL;
  ls->r = r;
  ls->loop = loop;
  ls->nconns = r->o.conns_per_loop;
  ls->conns = calloc(ls->nconns, sizeof *ls->conns);
  if (ls->conns == NULL ||
      perfc_loop_task_new(&ls->flush, loop, flush_task, ls) != 0)
    goto fail;
  for (unsigned i = 0; i < ls->nconns; i++) {
    ls->conns[i].ls = ls;
    ls->conns[i].fd = -1;
    if (perfc_loop_timer_new(&ls->conns[i].timer, loop, on_timer,
                             &ls->conns[i]) != 0)
      goto fail;
  }
  pthread_mutex_lock(&r->mu);
  if (r->closing) {
    pthread_mutex_unlock(&r->mu);
    goto fail;
  }
  ls->next = r->states;
  if (r->states != NULL)
    r->states->prev = ls;
  r->states = ls;
  r->nstates++;
  pthread_mutex_unlock(&r->mu);
  if (perfc_loop_local_set(loop, r, ls, state_end) != 0) {
    state_end(ls);
    return NULL;
  }
  return ls;
fail:
  if (ls->conns != NULL)
    for (unsigned i = 0; i < ls->nconns; i++)
      perfc_loop_timer_free(ls->conns[i].timer);
  perfc_loop_task_free(ls->flush);
  free(ls->conns);
  free(ls);
  return NULL;
}

/* The loop stops or the client goes (on the loop's thread): every command
 * still pending fails, the connections close, the state is gone. */
static void state_end(void *ud) {
  lstate *ls = ud;
  perfc_redis_async *r = ls->r;
  for (unsigned i = 0; i < ls->nconns; i++) {
    rconn *c = &ls->conns[i];
    perfc_loop_timer_disarm(c->timer);
    if (c->ac != NULL) {
      count_down(c);
      c->state = C_DOWN;
      c->fail_rc = PERFC_ESHUTDOWN;
      redisAsyncFree(c->ac); /* runs the pending callbacks */
    }
    /* Anything left (a context hiredis was freeing) has had its callback. */
    perfc_loop_timer_free(c->timer);
  }
  perfc_loop_task_free(ls->flush);
  pthread_mutex_lock(&r->mu);
  if (ls->prev != NULL)
    ls->prev->next = ls->next;
  else
    r->states = ls->next;
  if (ls->next != NULL)
    ls->next->prev = ls->prev;
  r->nstates--;
  retire_counts(r, ls);
  pthread_cond_broadcast(&r->cv);
  pthread_mutex_unlock(&r->mu);
  free(ls->conns);
  free(ls);
}

/* A connection for one more command: round robin over those connected or
 * connecting with room; a closed one is opened when its backoff passed
 * (its timer does that too). NULL with *rc set when none is usable. */
static rconn *pick(lstate *ls, int *rc) {
  int full = 0;
  for (unsigned k = 0; k < ls->nconns; k++) {
    rconn *c = &ls->conns[(ls->rr + k) % ls->nconns];
    /* Sentinel mode: the master changed since this connection was
     * opened (or last failed). Closed, it reopens at once, to the new
     * master, without waiting its backoff; still open (its socket was
     * shut down on the switch), it takes no command and its timer closes
     * it now, failing its commands in flight (not here: callbacks do not
     * run inside the call that issues a command). */
    if (ls->r->sentinel != NULL && !ls->r->closing &&
        c->epoch != perfc__redis_sentinel_epoch(ls->r->sentinel)) {
      if (c->state == C_DOWN && c->ac == NULL) {
        c->backoff_ms = 0;
        conn_start(c);
      } else if (c->state != C_DOWN) {
        perfc_loop_timer_arm(c->timer, perfc_loop_now_ms());
        continue;
      }
    }
    /* Never opened (or up until the last close): open it now. After a
     * failure its timer reopens it once the backoff passed. */
    if (c->state == C_DOWN && c->ac == NULL && c->backoff_ms == 0 &&
        !ls->r->closing)
      conn_start(c);
    if (c->state == C_DOWN)
      continue;
    if (c->npending >= ls->r->o.max_pending) {
      full = 1;
      continue;
    }
    ls->rr = (ls->rr + k + 1) % ls->nconns;
    return c;
  }
  *rc = full ? perfc__fail(PERFC_EFULL,
                           "redis async %s:%d: max_pending commands in flight "
                           "on every connection of this loop",
                           ls->r->o.host, ls->r->o.port)
             : perfc__fail(PERFC_EUNAVAILABLE,
                           "redis async %s:%d: no connection (reconnecting)",
                           ls->r->o.host, ls->r->o.port);
  return NULL;
}

static int submit_on(perfc_redis_async *r, lstate *ls, rconn *c, rcmd *m,
                     int argc, const char *const *argv, const size_t *argvlen);

/* Issues `m` on this loop (formatted or from argv). */
static int submit_here(perfc_redis_async *r, perfc_loop *loop, rcmd *m,
                       int argc, const char *const *argv,
                       const size_t *argvlen) {
  lstate *ls = state_get(r, loop);
  if (ls == NULL)
    return perfc__fail(r->closing ? PERFC_ESHUTDOWN : PERFC_ENOMEM,
                       "redis async: %s",
                       r->closing ? "client closing" : "out of memory");
  int rc;
  rconn *c = pick(ls, &rc);
  if (c == NULL)
    return rc;
  return submit_on(r, ls, c, m, argc, argv, argvlen);
}

static int submit_on(perfc_redis_async *r, lstate *ls, rconn *c, rcmd *m,
                     int argc, const char *const *argv,
                     const size_t *argvlen) {
  int ok = m->fmt != NULL
               ? redisAsyncFormattedCommand(c->ac, on_reply, m, m->fmt,
                                            m->fmt_len)
               : redisAsyncCommandArgv(c->ac, on_reply, m, argc,
                                       (const char **)argv, argvlen);
  if (ok != REDIS_OK)
    return perfc__fail(PERFC_ENOMEM, "redis async: cannot queue the command");
  m->deadline_ms = perfc_loop_now_ms() + r->o.command_timeout_ms;
  fifo_push(c, m);
  if (c->head == m)
    arm_command_timer(c);
  atomic_fetch_add_explicit(&ls->commands, 1, memory_order_relaxed);
  perfc_counter_inc(r->m_commands);
  return 0;
}

/* ---- threads without a loop: the client's own loop ------------------------------- */

/* Own loop: takes what other threads handed over and issues it here. A
 * command that cannot be issued gets its callback now (the caller was
 * told 0). */
static void submit_task(void *ud) {
  perfc_redis_async *r = ud;
  pthread_mutex_lock(&r->mu);
  rcmd *m = r->q;
  r->q = r->q_tail = NULL;
  pthread_mutex_unlock(&r->mu);
  perfc_loop *loop = perfc_loop_current();
  while (m != NULL) {
    rcmd *next = m->next;
    int rc = submit_here(r, loop, m, 0, NULL, NULL);
    redisFreeCommand(m->fmt);
    m->fmt = NULL;
    if (rc != 0) {
      lstate *ls = perfc_loop_local_get(loop, r);
      if (ls != NULL) {
        deliver_error(ls, m, rc);
      } else {
        m->done = 1;
        if (m->is_get)
          m->get_fn(rc, NULL, 0, m->ud);
        else
          m->fn(rc, NULL, m->ud);
      }
      free(m);
    }
    m = next;
  }
}

static void *own_main(void *ud) {
  perfc_redis_async *r = ud;
  /* hiredis writes with write(2): a closed socket raises SIGPIPE, which
   * must not reach the process's handlers from this thread. Signals
   * belong to the application's threads, as on the h2 loops. */
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  perfc_loop_run(r->own);
  return NULL;
}

/* Under r->mu. */
static int own_start(perfc_redis_async *r) {
  if (r->own_started)
    return 0;
  int rc = perfc_loop_new(&r->own);
  if (rc != 0)
    return rc;
  if ((rc = perfc_loop_task_new(&r->submit, r->own, submit_task, r)) != 0) {
    perfc_loop_free(r->own);
    r->own = NULL;
    return rc;
  }
  if (pthread_create(&r->own_thread, NULL, own_main, r) != 0) {
    perfc_loop_task_free(r->submit);
    perfc_loop_free(r->own);
    r->own = NULL;
    r->submit = NULL;
    return perfc__fail(PERFC_ETHREAD, "redis async: cannot start its loop");
  }
  r->own_started = 1;
  return 0;
}

static int hand_over(perfc_redis_async *r, rcmd *m, int argc,
                     const char *const *argv, const size_t *argvlen) {
  char *fmt = NULL;
  int len = redisFormatCommandArgv(&fmt, argc, (const char **)argv, argvlen);
  if (len < 0 || fmt == NULL)
    return perfc__fail(PERFC_ENOMEM, "redis async: out of memory");
  m->fmt = fmt;
  m->fmt_len = (size_t)len;
  m->next = NULL;
  pthread_mutex_lock(&r->mu);
  int rc = r->closing ? perfc__fail(PERFC_ESHUTDOWN, "redis async: closing")
                      : own_start(r);
  if (rc == 0) {
    if (r->q_tail != NULL)
      r->q_tail->next = m;
    else
      r->q = m;
    r->q_tail = m;
  }
  pthread_mutex_unlock(&r->mu);
  if (rc != 0) {
    redisFreeCommand(fmt);
    m->fmt = NULL;
    return rc;
  }
  perfc_loop_task_post(r->submit);
  return 0;
}

/* ---- the public calls ------------------------------------------------------------- */

static int issue(perfc_redis_async *r, int argc, const char *const *argv,
                 const size_t *argvlen, int is_get, perfc_redis_async_fn fn,
                 perfc_redis_async_get_fn get_fn, void *ud) {
  rcmd *m = calloc(1, sizeof *m);
  if (m == NULL)
    return perfc__fail(PERFC_ENOMEM, "redis async: out of memory");
  m->is_get = is_get;
  m->fn = fn;
  m->get_fn = get_fn;
  m->ud = ud;
  perfc_loop *loop = perfc_loop_current();
  int rc = loop != NULL && !r->closing
               ? submit_here(r, loop, m, argc, argv, argvlen)
               : hand_over(r, m, argc, argv, argvlen);
  if (rc != 0)
    free(m);
  return rc;
}

int perfc_redis_async_command(perfc_redis_async *r, int argc,
                              const char *const *argv, const size_t *argvlen,
                              perfc_redis_async_fn fn, void *user_data) {
  if (r == NULL || argc <= 0 || argv == NULL || fn == NULL)
    return perfc__fail(PERFC_EINVAL, "redis async: bad command arguments");
  for (int i = 0; i < argc; i++)
    if (argv[i] == NULL)
      return perfc__fail(PERFC_EINVAL, "redis async: argv[%d] is NULL", i);
  if (r->cl)
    return cl_issue(r, argc, argv, argvlen, 0, fn, NULL, user_data);
  return issue(r, argc, argv, argvlen, 0, fn, NULL, user_data);
}

int perfc_redis_async_get(perfc_redis_async *r, const char *key,
                          perfc_redis_async_get_fn fn, void *user_data) {
  if (r == NULL || key == NULL || fn == NULL)
    return perfc__fail(PERFC_EINVAL, "redis async: GET: bad argument");
  const char *argv[2] = {"GET", key};
  if (r->cl)
    return cl_issue(r, 2, argv, NULL, 1, NULL, fn, user_data);
  return issue(r, 2, argv, NULL, 1, NULL, fn, user_data);
}

void perfc_redis_async_stats_get(perfc_redis_async *r,
                                 perfc_redis_async_stats *out) {
  if (r->cl) {
    memset(out, 0, sizeof *out);
    unsigned n = perfc__rc_nnodes(r->cl);
    for (unsigned i = 0; i < n; i++) {
      perfc_redis_async_stats st;
      perfc_redis_async_stats_get(perfc__rc_client(r->cl, (int)i), &st);
      out->commands += st.commands;
      out->writes += st.writes;
      out->replies += st.replies;
      out->timeouts += st.timeouts;
      out->failed += st.failed;
      out->connects += st.connects;
      out->conns_up += st.conns_up;
    }
    return;
  }
  pthread_mutex_lock(&r->mu);
  *out = r->retired;
  out->conns_up = 0;
  for (lstate *ls = r->states; ls != NULL; ls = ls->next) {
#define SUM(f) out->f += atomic_load_explicit(&ls->f, memory_order_relaxed)
    SUM(commands);
    SUM(writes);
    SUM(replies);
    SUM(timeouts);
    SUM(failed);
    SUM(connects);
#undef SUM
    out->conns_up += atomic_load_explicit(&ls->up, memory_order_relaxed);
  }
  pthread_mutex_unlock(&r->mu);
}

/* Posted to a loop by perfc_redis_async_free(): ends the client's state
 * there, if the loop has not ended it already (its on_exit). The task
 * frees itself; it looks the state up by key and compares, so a loop that
 * runs it after the client was freed touches nothing of the client. */
typedef struct end_req {
  perfc_loop_task *task;
  perfc_redis_async *r; /* the key only, until the state is found */
  lstate *ls;
} end_req;

static void end_task(void *ud) {
  end_req *e = ud;
  perfc_loop *loop = perfc_loop_current();
  lstate *ls = loop != NULL ? perfc_loop_local_get(loop, e->r) : NULL;
  if (ls != NULL && ls == e->ls) {
    perfc_loop_local_del(loop, e->r);
    state_end(ls);
  }
  perfc_loop_task_free(e->task);
  free(e);
}

void perfc_redis_async_free(perfc_redis_async *r) {
  if (r == NULL)
    return;
  if (r->cl) {
    cl_free(r);
    return;
  }
  pthread_mutex_lock(&r->mu);
  r->closing = 1;
  /* The own loop ends its state itself when it stops (on_exit). */
  int own = r->own_started;
  pthread_mutex_unlock(&r->mu);
  if (own) {
    perfc_loop_stop(r->own);
    pthread_join(r->own_thread, NULL);
  }
  /* Commands handed over but never taken by the own loop. */
  pthread_mutex_lock(&r->mu);
  rcmd *q = r->q;
  r->q = r->q_tail = NULL;
  pthread_mutex_unlock(&r->mu);
  while (q != NULL) {
    rcmd *next = q->next;
    perfc_error_set(PERFC_ESHUTDOWN, NULL, -1, "redis async: client freed");
    if (q->is_get)
      q->get_fn(PERFC_ESHUTDOWN, NULL, 0, q->ud);
    else
      q->fn(PERFC_ESHUTDOWN, NULL, q->ud);
    redisFreeCommand(q->fmt);
    free(q);
    q = next;
  }
  /* Every other loop's state ends on that loop's thread. */
  perfc_loop *here = perfc_loop_current();
  pthread_mutex_lock(&r->mu);
  for (lstate *ls = r->states, *next; ls != NULL; ls = next) {
    next = ls->next;
    if (ls->loop == here) {
      pthread_mutex_unlock(&r->mu);
      perfc_loop_local_del(here, r);
      state_end(ls);
      pthread_mutex_lock(&r->mu);
      next = r->states; /* the list changed */
      continue;
    }
    end_req *e = calloc(1, sizeof *e);
    if (e != NULL && perfc_loop_task_new(&e->task, ls->loop, end_task, e) == 0) {
      e->r = r;
      e->ls = ls;
      perfc_loop_task_post(e->task);
    } else {
      free(e);
    }
  }
  while (r->nstates > 0)
    pthread_cond_wait(&r->cv, &r->mu);
  pthread_mutex_unlock(&r->mu);
  if (own) {
    perfc_loop_task_free(r->submit);
    perfc_loop_free(r->own);
  }
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->mu);
  perfc__resolve_unref();
  perfc__redis_sentinel_put(r->sentinel);
  perfc__redis_creds_free(&r->creds);
  free(r->name);
  free(r->host);
  free(r);
}

/* ---- cluster ----------------------------------------------------------------- */

/* A cluster client routes each command to the client of one node
 * (data/redis_cluster.c keeps the node table and slot map, shared with
 * the synchronous pool's router). The command's arguments are copied once,
 * so a redirection can send it again from the reply's callback, which runs
 * on a loop: the command's own, or the node client's own loop for a
 * command issued off the loops. */

#define CL_MAX_REDIRECTS PERFC__RC_MAX_REDIRECTS

typedef struct ccmd {
  perfc_redis_async *r;
  int argc;
  const char **argv;
  size_t *argvlen;
  unsigned slot;
  int keyless;
  int redirects;
  int is_get;
  perfc_redis_async_fn fn;
  perfc_redis_async_get_fn get_fn;
  void *ud;
} ccmd;

static void *cl_node_new(void *ud, const char *host, int port, int readonly) {
  (void)readonly; /* replica reads are the synchronous pool's only */
  perfc_redis_async_opts o = *(const perfc_redis_async_opts *)ud;
  o.host = host;
  o.port = port;
  o.cluster_nodes = NULL;
  o.n_cluster_nodes = 0;
  perfc_redis_async *c = NULL;
  return perfc_redis_async_new(&c, &o) == 0 ? c : NULL;
}

static void cl_node_free(void *ud, void *client) {
  (void)ud;
  perfc_redis_async_free(client);
}

static int cl_new(perfc_redis_async *r) {
  r->seeds = calloc(r->o.n_cluster_nodes, sizeof(char *));
  if (r->seeds == NULL)
    return perfc__fail(PERFC_ENOMEM, "redis async: out of memory");
  for (size_t i = 0; i < r->o.n_cluster_nodes; i++)
    if (r->o.cluster_nodes == NULL || r->o.cluster_nodes[i] == NULL ||
        (r->seeds[i] = strdup(r->o.cluster_nodes[i])) == NULL)
      return perfc__fail(PERFC_EINVAL, "redis async: cluster node %zu is "
                                       "NULL or out of memory",
                         i);
  r->o.cluster_nodes = (const char *const *)r->seeds;
  if (r->o.cluster_refresh_ms < 0 ||
      r->o.cluster_refresh_ms > PERFC_REDIS_MAX_DURATION_MS)
    return perfc__fail(PERFC_EINVAL, "redis async: cluster_refresh_ms %lld",
                       (long long)r->o.cluster_refresh_ms);
  perfc__rc_opts ro = {0};
  ro.seeds = r->o.cluster_nodes;
  ro.n_seeds = r->o.n_cluster_nodes;
  ro.refresh_ms = r->o.cluster_refresh_ms
                      ? r->o.cluster_refresh_ms
                      : (int64_t)PERFC_DEFAULT_REDIS_CLUSTER_REFRESH_MS;
  ro.refresh_gap_ms = r->o.backoff_min_ms;
  ro.node_new = cl_node_new;
  ro.node_free = cl_node_free;
  ro.ud = &r->o;
  return perfc__rc_new(&r->cl, &ro);
}

static void cl_free(perfc_redis_async *r) {
  atomic_store(&r->closing, 1);
  /* A callback that entered before `closing` may still send to a node
   * client: wait for it, so none is freed under it. Callbacks are short
   * (no I/O), so this waits microseconds. */
  while (atomic_load(&r->cl_active) > 0) {
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
  }
  /* Commands in flight get PERFC_ESHUTDOWN from their node client here;
   * their callbacks see `closing` and send nothing more. */
  perfc__rc_free(r->cl);
  if (r->seeds != NULL)
    for (size_t i = 0; i < r->o.n_cluster_nodes; i++)
      free(r->seeds[i]);
  free(r->seeds);
  pthread_cond_destroy(&r->cv);
  pthread_mutex_destroy(&r->mu);
  perfc__redis_creds_free(&r->creds);
  free(r->name);
  free(r->host);
  free(r);
}

/* 1 when the node clients may be used (and must be left with cl_leave). */
static int cl_enter(perfc_redis_async *r) {
  atomic_fetch_add(&r->cl_active, 1);
  if (atomic_load(&r->closing)) {
    atomic_fetch_sub(&r->cl_active, 1);
    return 0;
  }
  return 1;
}

static void cl_leave(perfc_redis_async *r) {
  atomic_fetch_sub(&r->cl_active, 1);
}

static void cl_refresh_done(int rc, const perfc_redis_reply *rep, void *ud) {
  perfc_redis_async *r = ud;
  int ok = 0;
  if (rc == 0 && cl_enter(r)) {
    ok = perfc__rc_apply_slots(r->cl, rep) == 0;
    cl_leave(r);
  }
  perfc__rc_refresh_done(r->cl, ok);
}

/* Starts a CLUSTER SLOTS on a master when a refresh is due. Under
 * cl_enter. */
static void cl_maybe_refresh(perfc_redis_async *r) {
  if (!perfc__rc_refresh_claim(r->cl))
    return;
  static const char *const argv[] = {"CLUSTER", "SLOTS"};
  void *c = perfc__rc_client(r->cl, perfc__rc_any(r->cl));
  if (perfc_redis_async_command(c, 2, argv, NULL, cl_refresh_done, r) != 0)
    perfc__rc_refresh_done(r->cl, 0);
}

static void asking_done(int rc, const perfc_redis_reply *rep, void *ud) {
  (void)rc, (void)rep, (void)ud;
}

static void cl_done(int rc, const perfc_redis_reply *rep, void *ud);

/* Sends `cc` to node `node`; with `asking`, ASKING first on the same
 * connection (an ASK holds for the next command of that connection). */
static int cl_send(ccmd *cc, int node, int asking) {
  perfc_redis_async *c = perfc__rc_client(cc->r->cl, node);
  if (!asking)
    return perfc_redis_async_command(c, cc->argc, cc->argv, cc->argvlen,
                                     cl_done, cc);
  perfc_loop *loop = perfc_loop_current();
  if (loop == NULL || c->closing)
    return perfc__fail(PERFC_EUNAVAILABLE, "redis async: ASK outside a loop");
  lstate *ls = state_get(c, loop);
  if (ls == NULL)
    return perfc__fail(PERFC_ENOMEM, "redis async: out of memory");
  int rc;
  rconn *conn = pick(ls, &rc);
  if (conn == NULL)
    return rc;
  rcmd *a = calloc(1, sizeof *a), *m = calloc(1, sizeof *m);
  if (a == NULL || m == NULL) {
    free(a);
    free(m);
    return perfc__fail(PERFC_ENOMEM, "redis async: out of memory");
  }
  a->fn = asking_done;
  m->fn = cl_done;
  m->ud = cc;
  static const char *const asking_argv[] = {"ASKING"};
  if ((rc = submit_on(c, ls, conn, a, 1, asking_argv, NULL)) != 0) {
    free(a);
    free(m);
    return rc;
  }
  if ((rc = submit_on(c, ls, conn, m, cc->argc, cc->argv, cc->argvlen)) != 0)
    free(m);
  return rc;
}

static void cl_deliver(ccmd *cc, int rc, const perfc_redis_reply *rep) {
  if (!cc->is_get) {
    cc->fn(rc, rc == 0 ? rep : NULL, cc->ud);
  } else if (rc != 0) {
    cc->get_fn(rc, NULL, 0, cc->ud);
  } else if (rep->type == PERFC_REDIS_REPLY_STRING) {
    cc->get_fn(0, (const uint8_t *)rep->str, rep->len, cc->ud);
  } else if (rep->type == PERFC_REDIS_REPLY_NIL) {
    cc->get_fn(PERFC_ENOENT, NULL, 0, cc->ud);
  } else {
    perfc_error_set(PERFC_EIO, NULL, -1, "redis async: GET: %.*s",
                    rep->type == PERFC_REDIS_REPLY_ERROR ? (int)rep->len : 21,
                    rep->type == PERFC_REDIS_REPLY_ERROR
                        ? rep->str
                        : "unexpected reply type");
    cc->get_fn(PERFC_EIO, NULL, 0, cc->ud);
  }
  free(cc);
}

static void cl_done(int rc, const perfc_redis_reply *rep, void *ud) {
  ccmd *cc = ud;
  perfc_redis_async *r = cc->r;
  perfc__rc_redirect rd;
  if (rc == 0 && rep->type == PERFC_REDIS_REPLY_ERROR &&
      perfc__rc_parse_redirect(rep->str, rep->len, &rd) &&
      cc->redirects < CL_MAX_REDIRECTS && cl_enter(r)) {
    int to = perfc__rc_node(r->cl, rd.host, rd.port, 0);
    if (to >= 0) {
      if (!rd.ask)
        perfc__rc_moved(r->cl, rd.slot, to);
      cc->redirects++;
      int e = cl_send(cc, to, rd.ask);
      cl_maybe_refresh(r);
      cl_leave(r);
      if (e == 0)
        return; /* cl_done runs again with the new node's answer */
      cl_deliver(cc, e, NULL);
      return;
    }
    cl_leave(r);
  }
  if (rc == 0 && rep->type == PERFC_REDIS_REPLY_ERROR && rep->len >= 11 &&
      memcmp(rep->str, "CLUSTERDOWN", 11) == 0)
    perfc__rc_want_refresh(r->cl);
  else if (rc != 0 && rc != PERFC_ESHUTDOWN)
    perfc__rc_want_refresh(r->cl); /* the node failed: a failover? */
  cl_deliver(cc, rc, rep);
}

static int cl_issue(perfc_redis_async *r, int argc, const char *const *argv,
                    const size_t *argvlen, int is_get, perfc_redis_async_fn fn,
                    perfc_redis_async_get_fn get_fn, void *ud) {
  size_t bytes = 0;
  for (int i = 0; i < argc; i++)
    bytes += (argvlen ? argvlen[i] : strlen(argv[i])) + 1;
  ccmd *cc = calloc(1, sizeof *cc + (size_t)argc * (sizeof(char *) +
                                                    sizeof(size_t)) +
                           bytes);
  if (cc == NULL)
    return perfc__fail(PERFC_ENOMEM, "redis async: out of memory");
  cc->argvlen = (size_t *)(cc + 1);
  cc->argv = (const char **)(cc->argvlen + argc);
  char *p = (char *)(cc->argv + argc);
  for (int i = 0; i < argc; i++) {
    size_t l = argvlen ? argvlen[i] : strlen(argv[i]);
    memcpy(p, argv[i], l);
    p[l] = '\0';
    cc->argv[i] = p;
    cc->argvlen[i] = l;
    p += l + 1;
  }
  cc->r = r;
  cc->argc = argc;
  cc->is_get = is_get;
  cc->fn = fn;
  cc->get_fn = get_fn;
  cc->ud = ud;
  int ki = perfc__rc_key_index(argc, cc->argv, cc->argvlen);
  cc->keyless = ki < 0;
  if (ki >= 0)
    cc->slot = perfc__rc_slot(cc->argv[ki], cc->argvlen[ki]);
  if (!cl_enter(r)) {
    free(cc);
    return perfc__fail(PERFC_ESHUTDOWN, "redis async: closing");
  }
  cl_maybe_refresh(r);
  int node = cc->keyless ? perfc__rc_any(r->cl)
                         : perfc__rc_route(r->cl, cc->slot, 0);
  int rc = cl_send(cc, node, 0);
  cl_leave(r);
  if (rc != 0) {
    perfc__rc_want_refresh(r->cl);
    free(cc);
  }
  return rc;
}
