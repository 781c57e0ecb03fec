/*
 * server/server.c — the server's lifecycle (perfc/server.h): options, new,
 * listen, services, start and shutdown hooks, start, graceful shutdown,
 * run, free.
 *
 * Room: runtime/src/server. The calls themselves are call.c's (context,
 * dispatch, unary), stream.c's and interceptor.c's; the transport that
 * carries them (transport/core today) sits behind server/transport_internal.h.
 * This file orders their lifecycles: the worker pool exists before the
 * transport starts and is drained before the transport stops, because a
 * worker may still be finishing a call the transport carries.
 */
#include "perfc/http_codec.h"
#include "perfc/log.h"
#include "perfc/pool.h"
#include "perfc/server.h"
#include "core/error_internal.h"
#include "server/call_internal.h"
#include "server/server_internal.h"
#include "core/thread_internal.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- options -------------------------------------------------------------- */

void perfc_server_opts_init(perfc_server_opts *o) {
  memset(o, 0, sizeof *o);
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  o->threads = cores > 0 ? (unsigned)cores : 1;
  o->requests_per_method = PERFC_DEFAULT_REQUESTS_PER_METHOD;
  o->default_executor = PERFC_EXEC_INLINE;
  o->keepalive_time_ms = PERFC_DEFAULT_SERVER_KEEPALIVE_TIME_MS;
  o->keepalive_timeout_ms = PERFC_DEFAULT_KEEPALIVE_TIMEOUT_MS;
  o->min_ping_interval_ms = PERFC_DEFAULT_MIN_PING_INTERVAL_MS;
  o->max_concurrent_streams = PERFC_DEFAULT_MAX_CONCURRENT_STREAMS;
  o->max_recv_message_bytes = PERFC_DEFAULT_MAX_RECV_MESSAGE_BYTES;
  o->max_send_message_bytes = PERFC_DEFAULT_MAX_SEND_MESSAGE_BYTES;
  o->shutdown_grace_ms = PERFC_DEFAULT_SHUTDOWN_GRACE_MS;
  o->memory_budget_bytes = PERFC_DEFAULT_MEMORY_BUDGET_BYTES;
  o->max_metadata_bytes = PERFC_DEFAULT_MAX_METADATA_BYTES;
}

/* Options are copied whole, then every zero becomes its default, then the
 * values are checked (docs/design.md, "API style"): a field added to the
 * struct later cannot be dropped by a hand-kept list. */
static int opts_resolve(perfc_server_opts *o, const perfc_server_opts *in) {
  perfc_server_opts d;
  perfc_server_opts_init(&d);
  if (in == NULL) {
    *o = d;
    return 0;
  }
  *o = *in;
#define DEFAULT(f)                                                             \
  if (!o->f)                                                                   \
  o->f = d.f
  DEFAULT(threads);
  DEFAULT(requests_per_method);
  DEFAULT(default_executor);
  DEFAULT(keepalive_time_ms);
  DEFAULT(keepalive_timeout_ms);
  DEFAULT(min_ping_interval_ms);
  DEFAULT(max_concurrent_streams);
  DEFAULT(max_recv_message_bytes);
  DEFAULT(max_send_message_bytes);
  DEFAULT(shutdown_grace_ms);
  DEFAULT(memory_budget_bytes);
  DEFAULT(max_metadata_bytes);
#undef DEFAULT
  if (o->default_executor != PERFC_EXEC_INLINE &&
      o->default_executor != PERFC_EXEC_POOL)
    return perfc__fail(PERFC_EINVAL, "server: default_executor %d is neither "
                                     "INLINE nor POOL",
                       (int)o->default_executor);
  if (o->transport == PERFC_TRANSPORT_DEFAULT)
    o->transport = PERFC_TRANSPORT_H2;
  if (o->transport != PERFC_TRANSPORT_CORE && o->transport != PERFC_TRANSPORT_H2)
    return perfc__fail(PERFC_EINVAL, "server: transport %d is neither CORE "
                                     "nor H2",
                       (int)o->transport);
  if (o->keepalive_time_ms < 0 || o->keepalive_timeout_ms < 0 ||
      o->min_ping_interval_ms < 0 || o->max_connection_idle_ms < 0 ||
      o->max_connection_age_ms < 0 || o->max_connection_age_grace_ms < 0 ||
      o->shutdown_grace_ms < 0)
    return perfc__fail(PERFC_EINVAL, "server: a duration option is negative");
  if (o->busy_poll_us < 0 || o->busy_poll_us > PERFC_MAX_BUSY_POLL_US)
    return perfc__fail(PERFC_EINVAL,
                       "server: busy_poll_us %lld is outside 0..%lld",
                       (long long)o->busy_poll_us,
                       (long long)PERFC_MAX_BUSY_POLL_US);
  if (o->max_connection_idle_enabled != (o->max_connection_idle_ms > 0))
    return perfc__fail(PERFC_EINVAL,
                       "server: max_connection_idle_enabled needs a positive "
                       "max_connection_idle_ms, and a duration needs "
                       "max_connection_idle_enabled");
  if (o->max_connection_age_enabled != (o->max_connection_age_ms > 0))
    return perfc__fail(PERFC_EINVAL,
                       "server: max_connection_age_enabled needs a positive "
                       "max_connection_age_ms, and a duration needs "
                       "max_connection_age_enabled");
  return 0;
}

/* ---- new, listen, services ------------------------------------------------ */

int perfc_server_new(perfc_server **out, const perfc_server_opts *opts) {
  if (out == NULL)
    return PERFC_EINVAL;
  perfc_server *srv = calloc(1, sizeof *srv);
  if (srv == NULL)
    return PERFC_ENOMEM;
  int rc = opts_resolve(&srv->opts, opts);
  if (rc == 0 && perfc__compress_parse(srv->opts.compression, &srv->calgo) != 0) {
    perfc_log(PERFC_LOG_ERROR,
              "server: unknown compression \"%s\" (gzip, deflate, identity)",
              srv->opts.compression);
    rc = perfc__fail(PERFC_EINVAL, "server: unknown compression \"%s\"",
                     srv->opts.compression);
  }
  if (rc != 0) {
    free(srv);
    return rc;
  }
  srv->recv_max = srv->opts.max_recv_message_bytes < 0
                      ? SIZE_MAX
                      : (size_t)srv->opts.max_recv_message_bytes;
  /* Threads the transport (or the gRPC core under it) starts from this
   * thread inherit its mask: SIGINT/SIGTERM blocked, as perfc's own. */
  sigset_t sigs;
  perfc__stop_signals_block(&sigs);
  if (srv->opts.transport == PERFC_TRANSPORT_H2) {
    srv->tops = &perfc__h2_transport_ops;
    rc = perfc__h2_transport_new(&srv->transport, &srv->opts, &perfc__call_up,
                                 srv);
  } else {
    srv->tops = &perfc__core_transport_ops;
    rc = perfc__core_transport_new(&srv->transport, &srv->opts,
                                   &perfc__call_up, srv);
  }
  perfc__stop_signals_restore(&sigs);
  srv->opts.compression = NULL; /* borrowed only during this call */
  if (rc != 0) {
    free(srv);
    return rc;
  }
  pthread_mutex_init(&srv->mu, NULL);
  pthread_mutex_init(&srv->deferred_mu, NULL);
  pthread_cond_init(&srv->deferred_cv, NULL);
  srv->wake_fd[0] = srv->wake_fd[1] = -1;
  atomic_init(&srv->state, SRV_NEW);
  *out = srv;
  return 0;
}

int perfc__server_listen(perfc_server *srv, const char *addr,
                         const perfc_tls_opts *tls, int *bound_port) {
  if (atomic_load(&srv->state) != SRV_NEW)
    return PERFC_ESTATE;
  int port = 0;
  sigset_t sigs; /* as in perfc_server_new() */
  perfc__stop_signals_block(&sigs);
  int rc = srv->tops->listen(srv->transport, addr, tls, &port);
  perfc__stop_signals_restore(&sigs);
  if (rc != 0)
    return rc;
  if (srv->nlisteners < (int)(sizeof srv->ports / sizeof *srv->ports))
    srv->ports[srv->nlisteners] = port;
  srv->nlisteners++;
  if (bound_port != NULL)
    *bound_port = port;
  return 0;
}

int perfc_server_listen(perfc_server *srv, const char *addr, int *bound_port) {
  if (srv == NULL || addr == NULL)
    return PERFC_EINVAL;
  return perfc__server_listen(srv, addr, NULL, bound_port);
}

int perfc_server_add_service(perfc_server *srv, const perfc_service_desc *desc,
                             const void *handlers, void *user_data) {
  if (srv == NULL || desc == NULL || handlers == NULL)
    return PERFC_EINVAL;
  if (atomic_load(&srv->state) != SRV_NEW)
    return PERFC_ESTATE;
  for (size_t i = 0; i < srv->nservices; i++)
    if (strcmp(srv->services[i].desc->name, desc->name) == 0)
      return PERFC_EEXIST;
  perfc__service_entry *sv =
      realloc(srv->services, (srv->nservices + 1) * sizeof *sv);
  if (sv == NULL)
    return PERFC_ENOMEM;
  srv->services = sv;
  /* Each entry is its own allocation: the transport keeps its pointer for
   * every call, so it must not move when more services are added. */
  perfc__method **me =
      realloc(srv->methods, (srv->nmethods + desc->n_methods) * sizeof *me);
  if (me == NULL)
    return PERFC_ENOMEM;
  srv->methods = me;
  srv->services[srv->nservices++].desc = desc;

  for (size_t i = 0; i < desc->n_methods; i++) {
    const perfc_method_desc *d = &desc->methods[i];
    perfc__method *m = calloc(1, sizeof *m);
    if (m == NULL)
      return PERFC_ENOMEM;
    m->desc = d;
    m->service = desc;
    m->handlers = handlers;
    m->user_data = user_data;
    m->index = srv->nmethods;
    /* Read the handler slot as a function pointer (not as void *): the
     * generated struct holds function pointers only. */
    void (*fn)(void);
    memcpy(&fn, (const char *)handlers + d->handler_offset, sizeof fn);
    m->has_handler = fn != NULL && d->invoke != NULL;
    if (!m->has_handler)
      perfc_log(PERFC_LOG_WARN,
                "server: %s has no handler; it will answer UNIMPLEMENTED",
                d->path);
    m->executor = d->executor != PERFC_EXEC_DEFAULT ? d->executor
                                                    : srv->opts.default_executor;
    int rc = srv->tops->add_method(srv->transport, m->index, d, m);
    if (rc != 0) {
      free(m);
      return rc;
    }
    srv->methods[srv->nmethods++] = m;
  }
  return 0;
}

/* ---- start ------------------------------------------------------------------ */

int perfc_server_start(perfc_server *srv) {
  if (srv == NULL)
    return PERFC_EINVAL;
  if (atomic_load(&srv->state) != SRV_NEW || srv->nlisteners == 0)
    return PERFC_ESTATE;
  /* From here a SIGINT/SIGTERM waits for perfc_server_run() instead of
   * killing the process: a program that prints its address after the start
   * and then runs (the documented way) is told to stop, not killed, by one
   * sent as soon as it printed. */
  int hrc = perfc_server_hold_signals();
  if (hrc != 0)
    return hrc;
  for (size_t i = 0; i < srv->nstart_hooks; i++) {
    int rc = srv->start_hooks[i].fn(srv, srv->start_hooks[i].user_data);
    if (rc != 0)
      return rc;
  }
  int needs_pool = 0;
  /* Blocking streaming handlers always run on the pool (call.c,
   * arrived()), whatever their executor says; loop callbacks never do. */
  for (size_t i = 0; i < srv->nmethods; i++)
    needs_pool |= srv->methods[i]->executor == PERFC_EXEC_POOL ||
                  (srv->methods[i]->desc->kind != PERFC_METHOD_UNARY &&
                   !srv->methods[i]->loop);
  if (needs_pool && srv->pool == NULL) {
    perfc_pool_opts po;
    perfc_pool_opts_init(&po);
    if (srv->opts.pool_threads)
      po.threads = srv->opts.pool_threads;
    if (srv->opts.pool_queue)
      po.queue_max = srv->opts.pool_queue;
    po.observer = srv->pool_observer;
    po.observer_user_data = srv->pool_observer_ud;
    po.sched_batch = !srv->opts.worker_wakeup_preemption;
    int rc = perfc_pool_new(&srv->pool, &po);
    if (rc != 0)
      return rc;
  }
  perfc__ic_methods_init(srv);
  sigset_t sigs; /* as in perfc_server_new() */
  perfc__stop_signals_block(&sigs);
  int rc = srv->tops->start(srv->transport);
  perfc__stop_signals_restore(&sigs);
  if (rc != 0) {
    perfc__ic_methods_free(srv);
    perfc_pool_free(srv->pool);
    srv->pool = NULL;
    return rc;
  }
  atomic_store(&srv->state, SRV_STARTED);
  return 0;
}

/* ---- shutdown --------------------------------------------------------------- */

static void wait_shutdown(perfc_server *srv, int64_t grace_ms) {
  void *t = srv->transport;
  if (srv->tops->wait_calls(t, grace_ms))
    return;
  perfc_log(PERFC_LOG_WARN,
            "server: grace period of %lld ms over; cancelling in-flight calls",
            (long long)grace_ms);
  /* Calls on workers first, with CANCELLED and a reason
   * (perfc__cancel_running); their handlers see perfc_ctx_cancelled() and
   * their clients get the status before the connections close. The
   * transport's own cancel alone closes the connections, and clients then
   * see UNAVAILABLE ("Cancelling all calls"), which gRPC clients treat as
   * safe to retry although the handler ran. A second at most is given to
   * that; whatever remains (an inline handler still running) is then cut
   * off with the connections. */
  if (perfc__cancel_running(srv) > 0 && srv->tops->wait_calls(t, 1000))
    return;
  srv->tops->cancel_all(t);
  /* Cancelled calls end quickly unless a handler ignores cancellation;
   * say so periodically rather than hanging silently. */
  while (!srv->tops->wait_calls(t, 5000))
    perfc_log(PERFC_LOG_WARN,
              "server: still waiting for handlers to return after cancel");
}

static void signals_after_shutdown(void);

void perfc_server_shutdown(perfc_server *srv, int64_t grace_ms) {
  if (srv == NULL)
    return;
  int expected = SRV_STARTED;
  if (!atomic_compare_exchange_strong(&srv->state, &expected, SRV_STOPPING)) {
    if (expected == SRV_NEW)
      atomic_store(&srv->state, SRV_STOPPED);
    return;
  }
  if (grace_ms < 0)
    grace_ms = srv->opts.shutdown_grace_ms;
  /* Before the transport stops accepting: health checkers and watchers
   * learn of the shutdown while they can still be answered. */
  for (size_t i = 0; i < srv->nshutdown_hooks; i++)
    if (srv->shutdown_hooks[i].fn != NULL)
      srv->shutdown_hooks[i].fn(srv, srv->shutdown_hooks[i].user_data);
  srv->tops->shutdown_begin(srv->transport);
  wait_shutdown(srv, grace_ms);
  /* Deferred calls end at their finish, which may come after the
   * transport considers them over (their clients were answered). Before
   * the pool goes: a finish may hand its call to the pool. */
  perfc__deferred_wait(srv);
  /* All calls have ended, so no pool job can still touch a call. */
  perfc_pool_free(srv->pool);
  srv->pool = NULL;
  srv->tops->stop(srv->transport);
  atomic_store(&srv->state, SRV_STOPPED);
  pthread_mutex_lock(&srv->mu);
  if (srv->wake_fd[1] >= 0) {
    char b = 0;
    ssize_t w = write(srv->wake_fd[1], &b, 1);
    (void)w;
  }
  pthread_mutex_unlock(&srv->mu);
  signals_after_shutdown();
}

/* Signal handlers cannot carry user data, so the pipe of the one
 * perfc_server_run() in progress is process-wide. g_sig_seen is the
 * signal caught and not yet handed to a perfc_server_run(): one held since
 * perfc_server_hold_signals() (or perfc_server_start()) waits there for
 * the run that follows. */
static volatile sig_atomic_t g_sig_fd = -1;
static volatile sig_atomic_t g_sig_seen;
/* The signals whose handler perfc_server_hold_signals() installed (their
 * disposition was the default): perfc_server_run() gives them the default
 * back when it returns, not the holding handler. Under g_sig_mu. */
static pthread_mutex_t g_sig_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_held_int, g_held_term;

static void on_signal(int sig) {
  int saved = errno;
  g_sig_seen = sig;
  if (g_sig_fd >= 0) {
    unsigned char b = (unsigned char)sig;
    ssize_t w = write(g_sig_fd, &b, 1);
    (void)w;
  }
  errno = saved;
}

/* Installs the holding handler for `sig` if its disposition is the
 * default. SA_RESETHAND: one signal is held, the default is back at once,
 * so a second one kills the process as before (a start-up that hangs can
 * still be interrupted). */
static int hold_one(int sig, int *held) {
  struct sigaction cur;
  if (sigaction(sig, NULL, &cur) != 0)
    return PERFC_EIO;
  if ((cur.sa_flags & SA_SIGINFO) || cur.sa_handler != SIG_DFL)
    return 0; /* the application's handler, SIG_IGN, or ours already */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sa.sa_flags = SA_RESETHAND;
  sigemptyset(&sa.sa_mask);
  if (sigaction(sig, &sa, NULL) != 0)
    return PERFC_EIO;
  *held = 1;
  return 0;
}

int perfc_server_hold_signals(void) {
  pthread_mutex_lock(&g_sig_mu);
  int rc = hold_one(SIGINT, &g_held_int);
  if (rc == 0)
    rc = hold_one(SIGTERM, &g_held_term);
  pthread_mutex_unlock(&g_sig_mu);
  if (rc != 0)
    return perfc__fail(rc, "server: cannot install the SIGINT/SIGTERM "
                           "handler: %s", strerror(errno));
  return 0;
}

/* What `sig` gets back when a run ends: the default where the holding
 * handler had been installed over it, else what the run found (`old`;
 * NULL: leave it as it is). */
static void restore_one(int sig, int *held, const struct sigaction *old) {
  if (*held) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    *held = 0;
  } else if (old != NULL) {
    sigaction(sig, old, NULL);
  }
}

/* A server stopped without a perfc_server_run() in progress (the
 * program waited some other way, or its start-up failed after the start):
 * the holding handlers give the default back, and a signal held for a run
 * that never came is delivered now with it, so the program ends as it
 * would have without perfc, only after the graceful shutdown. */
static void signals_after_shutdown(void) {
  pthread_mutex_lock(&g_sig_mu);
  int sig = 0;
  if (g_sig_fd < 0) {
    restore_one(SIGINT, &g_held_int, NULL);
    restore_one(SIGTERM, &g_held_term, NULL);
    sig = g_sig_seen;
    g_sig_seen = 0;
  }
  pthread_mutex_unlock(&g_sig_mu);
  if (sig != 0)
    raise(sig);
}

int perfc_server_run(perfc_server *srv) {
  if (srv == NULL || atomic_load(&srv->state) != SRV_STARTED)
    return PERFC_ESTATE;
  int fds[2];
  if (pipe(fds) != 0)
    return PERFC_EIO;
  pthread_mutex_lock(&srv->mu);
  srv->wake_fd[0] = fds[0];
  srv->wake_fd[1] = fds[1];
  pthread_mutex_unlock(&srv->mu);
  g_sig_fd = fds[1];
  struct sigaction sa, old_int, old_term;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  pthread_mutex_lock(&g_sig_mu);
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  pthread_mutex_unlock(&g_sig_mu);

  /* The pipe wakes us at once; the flag and the timeout are a second path
   * for the rare case where the handler ran but its write was lost (seen
   * under valgrind, which emulates signal delivery). The flag is not
   * cleared here: a signal held since perfc_server_start() (or
   * perfc_server_hold_signals()) is this run's to handle, at once. */
  int sig = 0;
  for (;;) {
    if (g_sig_seen) {
      sig = g_sig_seen;
      break;
    }
    struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
    int r = poll(&pfd, 1, 500);
    if (r > 0) {
      unsigned char b = 0;
      if (read(fds[0], &b, 1) == 1)
        sig = b;
      break;
    }
    if (atomic_load(&srv->state) != SRV_STARTED)
      break; /* stopped by perfc_server_shutdown() */
  }
  pthread_mutex_lock(&g_sig_mu);
  restore_one(SIGINT, &g_held_int, &old_int);
  restore_one(SIGTERM, &g_held_term, &old_term);
  g_sig_fd = -1;
  if (sig != 0)
    g_sig_seen = 0; /* handled: the next run does not see it again */
  pthread_mutex_unlock(&g_sig_mu);
  if (sig != 0) {
    perfc_log(PERFC_LOG_INFO, "server: signal %d, shutting down gracefully",
              sig);
    perfc_server_shutdown(srv, -1);
  }
  pthread_mutex_lock(&srv->mu);
  srv->wake_fd[0] = srv->wake_fd[1] = -1;
  pthread_mutex_unlock(&srv->mu);
  close(fds[0]);
  close(fds[1]);
  return sig;
}

void perfc_server_free(perfc_server *srv) {
  if (srv == NULL)
    return;
  perfc_server_shutdown(srv, -1);
  srv->tops->free(srv->transport);
  perfc__ic_methods_free(srv);
  for (size_t i = 0; i < srv->nshutdown_hooks; i++) {
    perfc__shutdown_hook *h = &srv->shutdown_hooks[i];
    if (h->free_user_data != NULL)
      h->free_user_data(h->user_data);
  }
  free(srv->shutdown_hooks);
  free(srv->start_hooks);
  for (size_t i = 0; i < srv->nmethods; i++)
    free(srv->methods[i]);
  free(srv->methods);
  free(srv->services);
  pthread_mutex_destroy(&srv->mu);
  pthread_cond_destroy(&srv->deferred_cv);
  pthread_mutex_destroy(&srv->deferred_mu);
  free(srv);
}

/* ---- hooks and descriptions --------------------------------------------------- */

size_t perfc_server_service_count(const perfc_server *srv) {
  return srv != NULL ? srv->nservices : 0;
}

const perfc_service_desc *perfc_server_service_at(const perfc_server *srv,
                                                  size_t i) {
  return srv != NULL && i < srv->nservices ? srv->services[i].desc : NULL;
}

int perfc_server_add_start_hook(perfc_server *srv, perfc_server_start_fn fn,
                                void *user_data) {
  if (srv == NULL || fn == NULL)
    return PERFC_EINVAL;
  if (atomic_load(&srv->state) != SRV_NEW)
    return PERFC_ESTATE;
  perfc__start_hook *h =
      realloc(srv->start_hooks, (srv->nstart_hooks + 1) * sizeof *h);
  if (h == NULL)
    return PERFC_ENOMEM;
  srv->start_hooks = h;
  srv->start_hooks[srv->nstart_hooks++] =
      (perfc__start_hook){.fn = fn, .user_data = user_data};
  return 0;
}

int perfc_server_add_shutdown_hook(perfc_server *srv, perfc_server_shutdown_fn fn,
                                   void *user_data,
                                   void (*free_user_data)(void *)) {
  if (srv == NULL || (fn == NULL && free_user_data == NULL))
    return PERFC_EINVAL;
  if (atomic_load(&srv->state) != SRV_NEW)
    return PERFC_ESTATE;
  perfc__shutdown_hook *h =
      realloc(srv->shutdown_hooks, (srv->nshutdown_hooks + 1) * sizeof *h);
  if (h == NULL)
    return PERFC_ENOMEM;
  srv->shutdown_hooks = h;
  srv->shutdown_hooks[srv->nshutdown_hooks++] = (perfc__shutdown_hook){
      .fn = fn, .user_data = user_data, .free_user_data = free_user_data};
  return 0;
}

/* ---- for other rooms and the tests ------------------------------------------- */

void perfc__server_set_pool_observer(perfc_server *srv,
                                     perfc_pool_observer_fn fn, void *ud) {
  srv->pool_observer = fn;
  srv->pool_observer_ud = ud;
}

size_t perfc__server_ports(const perfc_server *srv, const int **ports) {
  *ports = srv->ports;
  size_t cap = sizeof srv->ports / sizeof *srv->ports;
  return (size_t)srv->nlisteners < cap ? (size_t)srv->nlisteners : cap;
}

int perfc__server_pool_stats(perfc_server *srv, perfc_pool_stats *out) {
  if (srv == NULL || out == NULL || srv->pool == NULL)
    return PERFC_ESTATE;
  perfc_pool_stats_get(srv->pool, out);
  return 0;
}

int perfc__server_posted_requests(const perfc_server *srv, const char *path,
                                  unsigned poller_index, unsigned *posted,
                                  unsigned *depth) {
  if (atomic_load(&srv->state) != SRV_STARTED ||
      srv->tops != &perfc__core_transport_ops)
    return PERFC_ESTATE;
  for (size_t i = 0; i < srv->nmethods; i++)
    if (strcmp(srv->methods[i]->desc->path, path) == 0)
      return perfc__core_posted_requests(srv->transport, i, poller_index,
                                         posted, depth);
  return PERFC_ENOENT;
}

/* HTTP/JSON through the server's listener (perfc/http_codec.h): the codec
 * goes to the transport, which owns the listener; the call layer serves
 * those calls as any other. */
int perfc_server_set_http_codec(perfc_server *srv, const perfc_http_codec *codec,
                                void *user_data) {
  if (srv == NULL || codec == NULL || codec->match == NULL ||
      codec->decode == NULL || codec->encode == NULL || codec->error == NULL ||
      codec->content_type == NULL || codec->stream_content_type == NULL)
    return perfc__fail(PERFC_EINVAL, "server: an HTTP codec needs every "
                                     "function and both content types");
  if (atomic_load(&srv->state) != SRV_NEW)
    return PERFC_ESTATE;
  if (srv->tops->set_http_codec == NULL)
    return perfc__fail(PERFC_EINVAL,
                       "server: transport '%s' cannot serve HTTP/JSON "
                       "(server.transport: h2 can)",
                       srv->tops->name);
  return srv->tops->set_http_codec(srv->transport, codec, user_data);
}
