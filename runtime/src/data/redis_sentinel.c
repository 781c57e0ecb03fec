/*
 * data/redis_sentinel.c — the Redis master found through Redis Sentinel
 * and followed across failovers (data/redis_sentinel.h).
 *
 * Room: runtime/src/data (libperfc-data). Used by redis.c (the pool and the
 * pub/sub subscriber connect through perfc__redis_sentinel_connect) and by
 * redis_async.c (the loops read the address with perfc__redis_sentinel_peek
 * and register their sockets). docs/data-layer.md, "Redis Sentinel", has
 * the failure table.
 *
 * The client side of Sentinel follows the Redis documentation's "Sentinel
 * clients" guidelines: ask the sentinels in turn (starting from the one
 * that answered last), take the first address one gives, confirm it with
 * ROLE on that node (a sentinel can name a master that was just demoted),
 * and resolve again after a connection failure or a `+switch-master`
 * message. What perfc adds is what happens to connections already open:
 * on a switch every socket opened under the old master is shut down at
 * once, so a command blocked on it (a partitioned old master keeps the
 * connection silent) fails now with PERFC_EIO / PERFC_EUNAVAILABLE instead
 * of after its command timeout, and nothing is ever again written to the
 * old master through a pooled connection.
 *
 * Locks, always taken in this order: rmu (one resolution at a time), mu
 * (the address and the watcher's flags), fmu (registered sockets and
 * listeners; the listeners run under it and take their pool's lock). No
 * caller holds its own pool lock while calling in here.
 */
#include "data/redis_sentinel.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "core/error_internal.h"
#include "core/thread_internal.h"
#include "data/redis_internal.h"
#include "perfc/log.h"

/* A failed resolution is not repeated sooner than this: every pool thread
 * and loop that fails during a failover reports it, and the sentinels
 * would otherwise be asked once per failed command. */
#define RESOLVE_RETRY_MS 50
/* The watcher's backoff between attempts to subscribe on a sentinel. */
#define WATCH_BACKOFF_MIN_MS 50
#define WATCH_BACKOFF_MAX_MS 1000
/* A sentinel connection that is only quiet may be dead: PING it this
 * often and move to the next sentinel when a PING goes unanswered for
 * twice the command timeout. */
#define WATCH_HEARTBEAT_MS 1000
/* Bound on each connect and reply while resolving, whatever the users'
 * timeouts: sentinels and ROLE answer at once, and a resolution may
 * visit every sentinel (a user's long command timeout would otherwise
 * hold every caller behind one frozen node). */
#define RESOLVE_TIMEOUT_MAX_MS 1000
#define HOST_MAX 256
#define ERR_MAX 512

typedef struct tracked {
  int fd;
  uint64_t epoch;
} tracked;

typedef struct listener {
  perfc__redis_sentinel_fn fn;
  void *ud;
} listener;

struct perfc__redis_sentinel {
  perfc__redis_sentinel *next; /* the registry, under g_mu */
  unsigned refs;               /* under g_mu */
  char *key;

  char *name;
  char **addrs; /* "HOST:PORT", as given */
  char **hosts;
  int *ports;
  size_t n;
  int64_t connect_timeout_ms, command_timeout_ms;
  /* AUTH of the master and replicas (username, password) and of the
   * sentinels (sentinel_username, sentinel_password): copies, part of
   * the key. */
  perfc__redis_creds creds;

  pthread_mutex_t rmu;

  pthread_mutex_t mu;
  char host[HOST_MAX];
  int port;
  int known; /* an address was confirmed once */
  int stale; /* a connection to it failed since */
  _Atomic uint64_t epoch;
  size_t good;           /* the sentinel that answered last */
  uint64_t resolutions;  /* finished resolutions */
  uint64_t failed_at_ms; /* the last failed resolution, or 0 */
  int last_rc;
  char last_err[ERR_MAX];
  int want_resolve;
  int stop;
  /* The address a +switch-master announced, tried first by the next
   * resolution (the other sentinels may still name the old master). */
  char hint_host[HOST_MAX];
  int hint_port;

  pthread_mutex_t fmu;
  tracked *fds;
  size_t nfds, capfds;
  listener *ls;
  size_t nls, capls;

  int efd; /* wakes the watcher */
  pthread_t thread;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static perfc__redis_sentinel *g_list;

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct timeval tv_ms(int64_t ms) {
  struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
  return tv;
}

/* As in redis.c: hiredis writes with write(2), so a write to a sentinel or
 * master that went away raises SIGPIPE. The pool's threads are the
 * application's; SIGPIPE is blocked around the I/O and a SIGPIPE our write
 * raised is consumed before the mask is restored. */
typedef struct sigpipe_guard {
  sigset_t old;
  int was_pending;
} sigpipe_guard;

static void sigpipe_block(sigpipe_guard *g) {
  sigset_t pending, block;
  sigemptyset(&pending);
  sigpending(&pending);
  g->was_pending = sigismember(&pending, SIGPIPE);
  sigemptyset(&block);
  sigaddset(&block, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &block, &g->old);
}

static void sigpipe_restore(sigpipe_guard *g) {
  if (!g->was_pending) {
    sigset_t pending, block;
    sigemptyset(&pending);
    sigpending(&pending);
    if (sigismember(&pending, SIGPIPE)) {
      struct timespec zero = {0, 0};
      sigemptyset(&block);
      sigaddset(&block, SIGPIPE);
      while (sigtimedwait(&block, NULL, &zero) == -1 && errno == EINTR)
        ;
    }
  }
  pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

/* "HOST:PORT" or "[V6]:PORT" into its parts. */
static int parse_addr(const char *a, char *host, size_t hostlen, int *port) {
  const char *colon, *h = a;
  size_t hl;
  if (!a || !*a)
    return -1;
  if (a[0] == '[') {
    const char *rb = strchr(a, ']');
    if (!rb || rb[1] != ':')
      return -1;
    h = a + 1;
    hl = (size_t)(rb - h);
    colon = rb + 1;
  } else {
    colon = strrchr(a, ':');
    if (!colon)
      return -1;
    hl = (size_t)(colon - a);
  }
  if (hl == 0 || hl >= hostlen)
    return -1;
  char *end;
  errno = 0;
  long p = strtol(colon + 1, &end, 10);
  if (colon[1] == '\0' || *end || errno || p < 1 || p > 65535)
    return -1;
  memcpy(host, h, hl);
  host[hl] = '\0';
  *port = (int)p;
  return 0;
}

int perfc__redis_sentinel_check(const perfc_redis_opts *o) {
  int named = o->master_name && o->master_name[0];
  if (o->sentinel_username && o->sentinel_username[0] &&
      !(o->sentinel_password && o->sentinel_password[0]))
    return perfc__fail(PERFC_EINVAL,
                       "redis: sentinel_username without sentinel_password "
                       "(AUTH needs both)");
  if (o->n_sentinels == 0)
    return named ? perfc__fail(PERFC_EINVAL,
                               "redis: master_name '%s' is set but no "
                               "sentinels are (redis.sentinels)",
                               o->master_name)
                 : 0;
  if (!o->sentinels)
    return perfc__fail(PERFC_EINVAL,
                       "redis: n_sentinels is %zu but sentinels is NULL",
                       o->n_sentinels);
  if (!named)
    return perfc__fail(PERFC_EINVAL,
                       "redis: sentinels are set but master_name is not "
                       "(redis.master_name: the name the sentinels monitor)");
  for (size_t i = 0; i < o->n_sentinels; i++) {
    char h[HOST_MAX];
    int p;
    if (parse_addr(o->sentinels[i], h, sizeof h, &p) != 0)
      return perfc__fail(PERFC_EINVAL,
                         "redis: sentinel %zu is '%s': expected HOST:PORT", i,
                         o->sentinels[i] ? o->sentinels[i] : "(null)");
  }
  return 0;
}

static void obj_free(perfc__redis_sentinel *s) {
  if (!s)
    return;
  for (size_t i = 0; s->addrs && i < s->n; i++) {
    free(s->addrs[i]);
    free(s->hosts[i]);
  }
  free(s->addrs);
  free(s->hosts);
  free(s->ports);
  free(s->name);
  if (s->key)
    explicit_bzero(s->key, strlen(s->key));
  free(s->key);
  free(s->fds);
  free(s->ls);
  perfc__redis_creds_free(&s->creds);
  free(s);
}

/* ---- resolution ---- */

/* A connection authenticated with `user`/`pass` (no AUTH without `pass`):
 * the master's credentials for masters, the sentinel password for
 * sentinels. A refused AUTH's reason starts with "AUTH failed". */
static redisContext *dial(const char *host, int port, int64_t cto,
                          int64_t cmdto, const char *user, const char *pass,
                          char *err, size_t errlen) {
  redisContext *c = redisConnectWithTimeout(host, port, tv_ms(cto));
  if (!c) {
    snprintf(err, errlen, "out of memory");
    return NULL;
  }
  if (c->err || redisSetTimeout(c, tv_ms(cmdto)) != REDIS_OK) {
    snprintf(err, errlen, "%s", c->err ? c->errstr : "cannot set timeout");
    redisFree(c);
    return NULL;
  }
  if (perfc__redis_auth(c, user, pass, err, errlen) != 0) {
    redisFree(c);
    return NULL;
  }
  return c;
}

#define MASTER_AUTH(s) (s)->creds.username, (s)->creds.password
#define SENTINEL_AUTH(s)                                                       \
  (s)->creds.sentinel_username, (s)->creds.sentinel_password

static redisReply *command(redisContext *c, const char *fmt, const char *arg) {
  sigpipe_guard g;
  sigpipe_block(&g);
  redisReply *r = arg ? redisCommand(c, fmt, arg) : redisCommand(c, fmt);
  sigpipe_restore(&g);
  return r;
}

/* ROLE on `c`: 0 when the node says master; else -1 with the reason. */
static int role_is_master(redisContext *c, char *why, size_t whylen) {
  redisReply *r = command(c, "ROLE", NULL);
  if (!r) {
    snprintf(why, whylen, "no answer to ROLE: %s",
             c->errstr[0] ? c->errstr : "connection lost");
    return -1;
  }
  int ok = r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
           r->element[0]->type == REDIS_REPLY_STRING &&
           strcmp(r->element[0]->str, "master") == 0;
  if (!ok)
    snprintf(why, whylen, "ROLE says %.40s",
             r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
                     r->element[0]->type == REDIS_REPLY_STRING
                 ? r->element[0]->str
             : r->type == REDIS_REPLY_ERROR ? r->str
                                            : "something unexpected");
  freeReplyObject(r);
  return ok ? 0 : -1;
}

/* Appends "; " and a formatted part to `buf`, keeping what fits. */
static void add_err(char *buf, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void add_err(char *buf, size_t len, const char *fmt, ...) {
  size_t used = strlen(buf);
  if (used + 3 >= len)
    return;
  if (used) {
    memcpy(buf + used, "; ", 3);
    used += 2;
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + used, len - used, fmt, ap);
  va_end(ap);
}

/* Runs the switch: sockets of older epochs shut down, listeners told.
 * Called with rmu held, mu not. */
static void switched(perfc__redis_sentinel *s, uint64_t epoch) {
  pthread_mutex_lock(&s->fmu);
  for (size_t i = 0; i < s->nfds; i++)
    if (s->fds[i].epoch < epoch)
      shutdown(s->fds[i].fd, SHUT_RDWR);
  for (size_t i = 0; i < s->nls; i++)
    s->ls[i].fn(s->ls[i].ud);
  pthread_mutex_unlock(&s->fmu);
}

static void adopt(perfc__redis_sentinel *s, const char *mh, int mp, size_t good,
                  const char *from);
static int resolve_failed(perfc__redis_sentinel *s, const char *why,
                          size_t unknown, size_t answered, char *err,
                          size_t errlen);

/* Asks the sentinels (rmu held). Returns 0 with the address set, or
 * PERFC_EIO with the reason in s->last_err (and `err`). */
static int resolve(perfc__redis_sentinel *s, char *err, size_t errlen) {
  char why[ERR_MAX] = "";
  size_t unknown = 0, answered = 0;
  /* A master already found wrong in this round is not checked again when
   * the next sentinel names it too (a frozen one would cost a timeout per
   * sentinel). */
  char bad_host[HOST_MAX] = "";
  int bad_port = 0;
  pthread_mutex_lock(&s->mu);
  size_t start = s->good;
  char hh[HOST_MAX];
  int hp = s->hint_port;
  snprintf(hh, sizeof hh, "%s", s->hint_host);
  s->hint_port = 0;
  pthread_mutex_unlock(&s->mu);
  if (hp) {
    char e[256];
    redisContext *m =
        dial(hh, hp, s->connect_timeout_ms, s->command_timeout_ms,
             MASTER_AUTH(s), e, sizeof e);
    int ok = m ? role_is_master(m, e, sizeof e) : -1;
    if (m)
      redisFree(m);
    if (ok == 0) {
      adopt(s, hh, hp, start, "+switch-master");
      return 0;
    }
  }
  for (size_t k = 0; k < s->n; k++) {
    size_t i = (start + k) % s->n;
    char e[256];
    redisContext *c = dial(s->hosts[i], s->ports[i], s->connect_timeout_ms,
                           s->command_timeout_ms, SENTINEL_AUTH(s), e,
                           sizeof e);
    if (!c) {
      add_err(why, sizeof why, "sentinel %s: %s", s->addrs[i], e);
      continue;
    }
    redisReply *r = command(c, "SENTINEL get-master-addr-by-name %s", s->name);
    if (!r) {
      add_err(why, sizeof why, "sentinel %s: %s", s->addrs[i],
              c->errstr[0] ? c->errstr : "no reply");
      redisFree(c);
      continue;
    }
    redisFree(c);
    answered++;
    if (r->type == REDIS_REPLY_NIL) {
      unknown++;
      add_err(why, sizeof why, "sentinel %s does not know '%s'", s->addrs[i],
              s->name);
      freeReplyObject(r);
      continue;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        r->element[1]->type != REDIS_REPLY_STRING) {
      add_err(why, sizeof why, "sentinel %s: unexpected reply%s%.80s",
              s->addrs[i], r->type == REDIS_REPLY_ERROR ? ": " : "",
              r->type == REDIS_REPLY_ERROR ? r->str : "");
      freeReplyObject(r);
      continue;
    }
    char mh[HOST_MAX];
    int mp = atoi(r->element[1]->str);
    snprintf(mh, sizeof mh, "%s", r->element[0]->str);
    freeReplyObject(r);
    if (mp == bad_port && strcmp(mh, bad_host) == 0) {
      add_err(why, sizeof why, "sentinel %s names it too", s->addrs[i]);
      continue;
    }
    redisContext *m =
        dial(mh, mp, s->connect_timeout_ms, s->command_timeout_ms,
             MASTER_AUTH(s), e, sizeof e);
    int ok = m ? role_is_master(m, e, sizeof e) : -1;
    if (m)
      redisFree(m);
    if (ok != 0) {
      add_err(why, sizeof why, "sentinel %s names %s:%d, but %s%s", s->addrs[i],
              mh, mp,
              m || strncmp(e, "AUTH failed", 11) == 0 ? ""
                                                      : "it is unreachable: ",
              e);
      snprintf(bad_host, sizeof bad_host, "%s", mh);
      bad_port = mp;
      continue;
    }
    char from[HOST_MAX + 16];
    snprintf(from, sizeof from, "sentinel %s", s->addrs[i]);
    adopt(s, mh, mp, i, from);
    return 0;
  }
  return resolve_failed(s, why, unknown, answered, err, errlen);
}

/* The confirmed master is mh:mp (rmu held): a switch when it changed. */
static void adopt(perfc__redis_sentinel *s, const char *mh, int mp, size_t good,
                  const char *from) {
  pthread_mutex_lock(&s->mu);
  int changed = !s->known || s->port != mp || strcmp(s->host, mh) != 0;
  char old[HOST_MAX + 8];
  snprintf(old, sizeof old, "%s:%d", s->known ? s->host : "none",
           s->known ? s->port : 0);
  uint64_t ep = atomic_load(&s->epoch);
  if (changed) {
    snprintf(s->host, sizeof s->host, "%s", mh);
    s->port = mp;
    ep = atomic_fetch_add(&s->epoch, 1) + 1;
  }
  s->known = 1;
  s->stale = 0;
  s->good = good;
  s->resolutions++;
  s->failed_at_ms = 0;
  s->last_rc = 0;
  s->last_err[0] = '\0';
  pthread_mutex_unlock(&s->mu);
  if (changed) {
    perfc_log(PERFC_LOG_INFO,
              "redis sentinel %s: master is %s:%d (was %s; from %s, ROLE "
              "master)",
              s->name, mh, mp, old, from);
    switched(s, ep);
  }
}

static int resolve_failed(perfc__redis_sentinel *s, const char *why,
                          size_t unknown, size_t answered, char *err,
                          size_t errlen) {
  pthread_mutex_lock(&s->mu);
  if (answered == 0)
    snprintf(s->last_err, sizeof s->last_err,
             "redis sentinel %s: no sentinel answered (%s)", s->name, why);
  else if (unknown == answered)
    snprintf(s->last_err, sizeof s->last_err,
             "redis sentinel: no sentinel knows a master named '%s' (check "
             "redis.master_name): %s",
             s->name, why);
  else
    snprintf(s->last_err, sizeof s->last_err,
             "redis sentinel %s: no master confirmed (failover in progress?): "
             "%s",
             s->name, why);
  s->last_rc = PERFC_EIO;
  s->failed_at_ms = now_ms();
  s->resolutions++;
  snprintf(err, errlen, "%s", s->last_err);
  pthread_mutex_unlock(&s->mu);
  return PERFC_EIO;
}

/* resolve(), one at a time and not again within RESOLVE_RETRY_MS of a
 * failure: a caller that waited for someone else's resolution takes its
 * result. */
static int resolve_limited(perfc__redis_sentinel *s, char *err, size_t errlen) {
  pthread_mutex_lock(&s->mu);
  uint64_t seen = s->resolutions;
  pthread_mutex_unlock(&s->mu);
  pthread_mutex_lock(&s->rmu);
  pthread_mutex_lock(&s->mu);
  int rc = 0, cached = s->resolutions != seen ||
                       (s->failed_at_ms &&
                        now_ms() - s->failed_at_ms < RESOLVE_RETRY_MS);
  if (cached) {
    rc = s->last_rc;
    snprintf(err, errlen, "%s", s->last_err);
  }
  pthread_mutex_unlock(&s->mu);
  if (!cached)
    rc = resolve(s, err, errlen);
  pthread_mutex_unlock(&s->rmu);
  return rc;
}

/* ---- the users' calls ---- */

void perfc__redis_sentinel_track(perfc__redis_sentinel *s, int fd,
                                 uint64_t epoch) {
  pthread_mutex_lock(&s->fmu);
  if (s->nfds == s->capfds) {
    size_t cap = s->capfds ? s->capfds * 2 : 16;
    tracked *f = realloc(s->fds, cap * sizeof *f);
    if (!f) {
      /* Untracked, the socket is still replaced at its next use (the
       * users compare epochs); only the immediate shutdown is lost. */
      pthread_mutex_unlock(&s->fmu);
      return;
    }
    s->fds = f;
    s->capfds = cap;
  }
  s->fds[s->nfds++] = (tracked){fd, epoch};
  pthread_mutex_unlock(&s->fmu);
}

void perfc__redis_sentinel_untrack(perfc__redis_sentinel *s, int fd) {
  pthread_mutex_lock(&s->fmu);
  for (size_t i = 0; i < s->nfds; i++)
    if (s->fds[i].fd == fd) {
      s->fds[i] = s->fds[--s->nfds];
      break;
    }
  pthread_mutex_unlock(&s->fmu);
}

static void wake(perfc__redis_sentinel *s) {
  uint64_t one = 1;
  ssize_t w = write(s->efd, &one, sizeof one);
  (void)w; /* a full counter already wakes it */
}

void perfc__redis_sentinel_suspect(perfc__redis_sentinel *s, uint64_t epoch) {
  pthread_mutex_lock(&s->mu);
  int ask = epoch == atomic_load(&s->epoch) && !s->stale;
  if (ask) {
    s->stale = 1;
    s->want_resolve = 1;
  }
  pthread_mutex_unlock(&s->mu);
  if (ask)
    wake(s);
}

uint64_t perfc__redis_sentinel_epoch(const perfc__redis_sentinel *s) {
  return atomic_load_explicit(&((perfc__redis_sentinel *)s)->epoch,
                              memory_order_acquire);
}

int perfc__redis_sentinel_peek(perfc__redis_sentinel *s, char *host,
                               size_t hostlen, int *port, uint64_t *epoch) {
  pthread_mutex_lock(&s->mu);
  int known = s->known, ask = !s->known || s->stale;
  if (known) {
    snprintf(host, hostlen, "%s", s->host);
    *port = s->port;
  }
  *epoch = atomic_load(&s->epoch);
  if (ask)
    s->want_resolve = 1;
  char msg[ERR_MAX];
  snprintf(msg, sizeof msg, "%s", s->last_err);
  pthread_mutex_unlock(&s->mu);
  if (ask)
    wake(s);
  if (known)
    return 0;
  return perfc__fail(PERFC_EUNAVAILABLE, "%s",
                     msg[0] ? msg
                            : "redis sentinel: the master is not known yet "
                              "(asking the sentinels)");
}

redisContext *perfc__redis_sentinel_connect(perfc__redis_sentinel *s,
                                            int64_t connect_timeout_ms,
                                            int64_t command_timeout_ms,
                                            uint64_t *epoch, char *err,
                                            size_t errlen, int *rc) {
  char rerr[ERR_MAX] = "";
  *rc = PERFC_EIO;
  pthread_mutex_lock(&s->mu);
  int need = !s->known || s->stale;
  pthread_mutex_unlock(&s->mu);
  if (need)
    resolve_limited(s, rerr, sizeof rerr);
  char host[HOST_MAX];
  int port;
  pthread_mutex_lock(&s->mu);
  if (!s->known) {
    snprintf(err, errlen, "%s", rerr[0] ? rerr : s->last_err);
    pthread_mutex_unlock(&s->mu);
    /* dial() words every refused AUTH (a sentinel's or a master's) so. */
    if (strstr(err, "AUTH failed"))
      *rc = PERFC_ECONFIG;
    return NULL;
  }
  snprintf(host, sizeof host, "%s", s->host);
  port = s->port;
  uint64_t ep = atomic_load(&s->epoch);
  pthread_mutex_unlock(&s->mu);
  char e[256];
  redisContext *c =
      dial(host, port, connect_timeout_ms, command_timeout_ms, MASTER_AUTH(s),
           e, sizeof e);
  /* Registered before ROLE: a switch while ROLE waits on a frozen master
   * cuts it short. */
  if (c)
    perfc__redis_sentinel_track(s, c->fd, ep);
  if (c && role_is_master(c, e, sizeof e) != 0) {
    perfc__redis_sentinel_close(s, c);
    c = NULL;
  }
  /* A switch between reading the address and registering the socket
   * would not have shut it down: a connection to the old master. */
  if (c && perfc__redis_sentinel_epoch(s) != ep) {
    perfc__redis_sentinel_close(s, c);
    snprintf(err, errlen,
             "master %s:%d (sentinel '%s'): replaced by a failover while "
             "connecting",
             host, port, s->name);
    return NULL;
  }
  if (!c) {
    snprintf(err, errlen, "master %s:%d (sentinel '%s'): %s%s%s", host, port,
             s->name, e, rerr[0] ? "; " : "", rerr);
    if (strncmp(e, "AUTH failed", 11) == 0)
      *rc = PERFC_ECONFIG;
    perfc__redis_sentinel_suspect(s, ep);
    return NULL;
  }
  *epoch = ep;
  return c;
}

void perfc__redis_sentinel_close(perfc__redis_sentinel *s, redisContext *ctx) {
  if (!ctx)
    return;
  perfc__redis_sentinel_untrack(s, ctx->fd);
  redisFree(ctx);
}

int perfc__redis_sentinel_listen(perfc__redis_sentinel *s,
                                 perfc__redis_sentinel_fn fn, void *ud) {
  pthread_mutex_lock(&s->fmu);
  if (s->nls == s->capls) {
    size_t cap = s->capls ? s->capls * 2 : 4;
    listener *l = realloc(s->ls, cap * sizeof *l);
    if (!l) {
      pthread_mutex_unlock(&s->fmu);
      return PERFC_ENOMEM;
    }
    s->ls = l;
    s->capls = cap;
  }
  s->ls[s->nls++] = (listener){fn, ud};
  pthread_mutex_unlock(&s->fmu);
  return 0;
}

void perfc__redis_sentinel_unlisten(perfc__redis_sentinel *s,
                                    perfc__redis_sentinel_fn fn, void *ud) {
  pthread_mutex_lock(&s->fmu);
  for (size_t i = 0; i < s->nls; i++)
    if (s->ls[i].fn == fn && s->ls[i].ud == ud) {
      memmove(&s->ls[i], &s->ls[i + 1], (s->nls - i - 1) * sizeof *s->ls);
      s->nls--;
      break;
    }
  pthread_mutex_unlock(&s->fmu);
}

const char *const *perfc__redis_sentinel_addrs(const perfc__redis_sentinel *s,
                                               size_t *n) {
  *n = s->n;
  return (const char *const *)s->addrs;
}

const char *perfc__redis_sentinel_name(const perfc__redis_sentinel *s) {
  return s->name;
}

/* ---- the watcher ---- */

static int stopping(perfc__redis_sentinel *s) {
  pthread_mutex_lock(&s->mu);
  int st = s->stop;
  pthread_mutex_unlock(&s->mu);
  return st;
}

static int take_want(perfc__redis_sentinel *s) {
  pthread_mutex_lock(&s->mu);
  int w = s->want_resolve;
  s->want_resolve = 0;
  pthread_mutex_unlock(&s->mu);
  return w;
}

static void want(perfc__redis_sentinel *s) {
  pthread_mutex_lock(&s->mu);
  s->want_resolve = 1;
  pthread_mutex_unlock(&s->mu);
}

static int send_all(redisContext *c, int argc, const char **argv) {
  if (redisAppendCommandArgv(c, argc, argv, NULL) != REDIS_OK)
    return -1;
  int done = 0;
  while (!done)
    if (redisBufferWrite(c, &done) != REDIS_OK)
      return -1;
  return 0;
}

/* One subscribed message or reply. Returns 1 for a pong. */
static int watch_handle(perfc__redis_sentinel *s, redisReply *r,
                        size_t sentinel, int *subscribed) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
      r->element[0]->type != REDIS_REPLY_STRING)
    return 0;
  const char *kind = r->element[0]->str;
  if (strcmp(kind, "pong") == 0)
    return 1;
  if (strcmp(kind, "subscribe") == 0) {
    /* A switch may have happened while no sentinel was watched. */
    *subscribed = 1;
    want(s);
    perfc_log(PERFC_LOG_DEBUG, "redis sentinel %s: watching sentinel %s",
              s->name, s->addrs[sentinel]);
    return 0;
  }
  if (strcmp(kind, "message") == 0 && r->elements >= 3 &&
      r->element[2]->type == REDIS_REPLY_STRING) {
    /* "<name> <old-ip> <old-port> <new-ip> <new-port>" */
    const char *m = r->element[2]->str;
    size_t nl = strlen(s->name);
    char oh[HOST_MAX], nh[HOST_MAX];
    int op, np;
    if (strncmp(m, s->name, nl) == 0 && m[nl] == ' ') {
      perfc_log(PERFC_LOG_WARN, "redis sentinel %s: +switch-master %s", s->name,
                m + nl + 1);
      pthread_mutex_lock(&s->mu);
      if (sscanf(m + nl + 1, "%255s %d %255s %d", oh, &op, nh, &np) == 4 &&
          np > 0 && np <= 65535) {
        snprintf(s->hint_host, sizeof s->hint_host, "%s", nh);
        s->hint_port = np;
      }
      s->want_resolve = 1;
      pthread_mutex_unlock(&s->mu);
    }
  }
  return 0;
}

/* One sentinel as the watcher sees it. */
typedef struct watched {
  redisContext *c;
  int subscribed;
  uint32_t backoff;
  uint64_t retry_at, ping_sent, next_ping;
} watched;

/* Grows `w`'s backoff and schedules its next attempt. */
static void watch_backoff(watched *w, uint64_t now) {
  w->backoff = w->backoff == 0                         ? WATCH_BACKOFF_MIN_MS
               : w->backoff * 2 > WATCH_BACKOFF_MAX_MS ? WATCH_BACKOFF_MAX_MS
                                                       : w->backoff * 2;
  w->retry_at = now + w->backoff;
}

static void watch_drop(perfc__redis_sentinel *s, watched *w, size_t i,
                       uint64_t now) {
  perfc_log(PERFC_LOG_DEBUG, "redis sentinel %s: lost sentinel %s (%s)",
            s->name, s->addrs[i], w->c->errstr[0] ? w->c->errstr : "silent");
  redisFree(w->c);
  w->c = NULL;
  /* A connection that worked is retried at once; one that never got as
   * far as SUBSCRIBE's answer (something that accepts and hangs up) backs
   * off like a refused connect, or the watcher would spin. */
  if (w->subscribed) {
    w->backoff = 0;
    w->retry_at = now;
  } else {
    watch_backoff(w, now);
  }
  w->subscribed = 0;
}

static void watch_open(perfc__redis_sentinel *s, watched *w, size_t i,
                       uint64_t now) {
  char e[256];
  w->c = dial(s->hosts[i], s->ports[i], s->connect_timeout_ms,
              s->command_timeout_ms, SENTINEL_AUTH(s), e, sizeof e);
  const char *sub[] = {"SUBSCRIBE", "+switch-master"};
  if (w->c && send_all(w->c, 2, sub) != 0) {
    snprintf(e, sizeof e, "%s", w->c->errstr);
    redisFree(w->c);
    w->c = NULL;
  }
  if (!w->c) {
    perfc_log(PERFC_LOG_DEBUG, "redis sentinel %s: cannot watch %s: %s",
              s->name, s->addrs[i], e);
    watch_backoff(w, now);
    return;
  }
  w->subscribed = 0;
  w->ping_sent = 0;
  w->next_ping = now + WATCH_HEARTBEAT_MS;
}

/* The watcher subscribes on every sentinel at once: the one that led the
 * failover announces the switch first, the others only after their next
 * hello exchange (up to 2 s later), and a sentinel cut off from the rest
 * may never announce it. */
static void *watch_main(void *arg) {
  perfc__redis_sentinel *s = arg;
  sigset_t block;
  sigemptyset(&block);
  sigaddset(&block, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &block, NULL);
  watched *w = calloc(s->n, sizeof *w);
  struct pollfd *pfd = calloc(s->n + 1, sizeof *pfd);
  if (!w || !pfd) {
    /* Without a watcher, switches are still found through the users'
     * connection failures (each resolves again). */
    perfc_log(PERFC_LOG_ERROR,
              "redis sentinel %s: out of memory: not watching for "
              "+switch-master",
              s->name);
    free(w);
    free(pfd);
    return NULL;
  }
  uint64_t ping_limit = 2 * (uint64_t)s->command_timeout_ms;
  uint64_t resolve_at = 0; /* retry of a failed resolution, or 0 */
  while (!stopping(s)) {
    if (take_want(s) || (resolve_at && now_ms() >= resolve_at)) {
      char e[ERR_MAX];
      resolve_at = 0;
      if (resolve_limited(s, e, sizeof e) != 0) {
        perfc_log(PERFC_LOG_DEBUG, "%s", e);
        /* Keep asking while the master is suspect: a failover ends with
         * a switch message, but that message can be missed. */
        pthread_mutex_lock(&s->mu);
        int again = s->stale || !s->known;
        pthread_mutex_unlock(&s->mu);
        if (again)
          resolve_at = now_ms() + RESOLVE_RETRY_MS;
      }
    }
    uint64_t now = now_ms();
    int timeout = 100;
    for (size_t i = 0; i < s->n; i++) {
      if (!w[i].c && now >= w[i].retry_at)
        watch_open(s, &w[i], i, now);
      if (!w[i].c && w[i].retry_at > now &&
          w[i].retry_at - now < (uint64_t)timeout)
        timeout = (int)(w[i].retry_at - now);
      pfd[i + 1] = (struct pollfd){w[i].c ? w[i].c->fd : -1, POLLIN, 0};
    }
    if (resolve_at && resolve_at - now < (uint64_t)timeout)
      timeout = resolve_at > now ? (int)(resolve_at - now) : 0;
    pfd[0] = (struct pollfd){s->efd, POLLIN, 0};
    int pr = poll(pfd, s->n + 1, timeout);
    if (pr > 0 && (pfd[0].revents & POLLIN)) {
      uint64_t v;
      ssize_t rd = read(s->efd, &v, sizeof v);
      (void)rd;
    }
    now = now_ms();
    for (size_t i = 0; i < s->n; i++) {
      watched *x = &w[i];
      if (!x->c)
        continue;
      int drop =
          pr > 0 && pfd[i + 1].revents && redisBufferRead(x->c) != REDIS_OK;
      for (void *reply = NULL; !drop;) {
        if (redisGetReplyFromReader(x->c, &reply) != REDIS_OK) {
          drop = 1;
          break;
        }
        if (!reply)
          break;
        if (watch_handle(s, reply, i, &x->subscribed))
          x->ping_sent = 0;
        freeReplyObject(reply);
        reply = NULL;
      }
      if (!drop && x->ping_sent && now - x->ping_sent > ping_limit)
        drop = 1;
      if (!drop && x->subscribed && !x->ping_sent && now >= x->next_ping) {
        const char *ping[] = {"PING"};
        if (send_all(x->c, 1, ping) != 0)
          drop = 1;
        x->ping_sent = now;
        x->next_ping = now + WATCH_HEARTBEAT_MS;
      }
      if (drop)
        watch_drop(s, x, i, now);
    }
  }
  for (size_t i = 0; i < s->n; i++)
    if (w[i].c)
      redisFree(w[i].c);
  free(w);
  free(pfd);
  return NULL;
}

/* ---- the registry ---- */

int perfc__redis_sentinel_get(perfc__redis_sentinel **out,
                              const perfc_redis_opts *o) {
  int rc = perfc__redis_sentinel_check(o);
  if (rc != 0)
    return rc;
  if (o->n_sentinels == 0)
    return perfc__fail(PERFC_EINVAL, "redis: no sentinels");
  /* Users with other credentials get their own object: its connections
   * authenticate as theirs. The key is compared, never logged. */
  const char *cred[4] = {o->username, o->password, o->sentinel_password,
                         o->sentinel_username};
  size_t klen = strlen(o->master_name) + 2;
  for (size_t i = 0; i < o->n_sentinels; i++)
    klen += strlen(o->sentinels[i]) + 1;
  for (size_t i = 0; i < 4; i++)
    klen += (cred[i] ? strlen(cred[i]) : 0) + 24; /* "LEN:" and the bytes */
  char *key = malloc(klen);
  if (!key)
    return perfc__fail(PERFC_ENOMEM, "redis sentinel: out of memory");
  size_t at = (size_t)sprintf(key, "%s\n", o->master_name);
  for (size_t i = 0; i < o->n_sentinels; i++)
    at += (size_t)sprintf(key + at, "%s\n", o->sentinels[i]);
  /* Length-prefixed: any byte may be in a password. */
  for (size_t i = 0; i < 4; i++)
    at += (size_t)sprintf(key + at, "%zu:%s", cred[i] ? strlen(cred[i]) : 0,
                          cred[i] ? cred[i] : "");
  pthread_mutex_lock(&g_mu);
  for (perfc__redis_sentinel *s = g_list; s; s = s->next)
    if (strcmp(s->key, key) == 0) {
      s->refs++;
      pthread_mutex_unlock(&g_mu);
      explicit_bzero(key, strlen(key)); /* it holds the passwords */
      free(key);
      *out = s;
      return 0;
    }
  perfc__redis_sentinel *s = calloc(1, sizeof *s);
  if (!s) {
    pthread_mutex_unlock(&g_mu);
    free(key);
    return perfc__fail(PERFC_ENOMEM, "redis sentinel: out of memory");
  }
  s->key = key;
  s->n = o->n_sentinels;
  s->name = strdup(o->master_name);
  s->addrs = calloc(s->n, sizeof *s->addrs);
  s->hosts = calloc(s->n, sizeof *s->hosts);
  s->ports = calloc(s->n, sizeof *s->ports);
  int ok = s->name && s->addrs && s->hosts && s->ports;
  for (size_t i = 0; ok && i < s->n; i++) {
    char h[HOST_MAX];
    parse_addr(o->sentinels[i], h, sizeof h, &s->ports[i]);
    s->addrs[i] = strdup(o->sentinels[i]);
    s->hosts[i] = strdup(h);
    ok = s->addrs[i] && s->hosts[i];
  }
  perfc_redis_opts co = *o;
  if (ok && perfc__redis_creds_copy(&s->creds, &co) != 0)
    ok = 0;
  s->connect_timeout_ms = o->connect_timeout_ms > 0
                              ? o->connect_timeout_ms
                              : PERFC_DEFAULT_REDIS_CONNECT_TIMEOUT_MS;
  s->command_timeout_ms = o->command_timeout_ms > 0
                              ? o->command_timeout_ms
                              : PERFC_DEFAULT_REDIS_COMMAND_TIMEOUT_MS;
  if (s->connect_timeout_ms > RESOLVE_TIMEOUT_MAX_MS)
    s->connect_timeout_ms = RESOLVE_TIMEOUT_MAX_MS;
  if (s->command_timeout_ms > RESOLVE_TIMEOUT_MAX_MS)
    s->command_timeout_ms = RESOLVE_TIMEOUT_MAX_MS;
  s->efd = ok ? eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK) : -1;
  if (!ok || s->efd < 0) {
    pthread_mutex_unlock(&g_mu);
    if (s->efd >= 0)
      close(s->efd);
    obj_free(s);
    return perfc__fail(PERFC_ENOMEM, "redis sentinel: out of memory");
  }
  pthread_mutex_init(&s->rmu, NULL);
  pthread_mutex_init(&s->mu, NULL);
  pthread_mutex_init(&s->fmu, NULL);
  s->want_resolve = 1; /* the watcher finds the master at once */
  if (perfc__thread_create(&s->thread, watch_main, s) != 0) {
    pthread_mutex_unlock(&g_mu);
    pthread_mutex_destroy(&s->rmu);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->fmu);
    close(s->efd);
    obj_free(s);
    return perfc__fail(PERFC_ETHREAD, "redis sentinel: cannot start its "
                                      "watcher thread");
  }
  s->refs = 1;
  s->next = g_list;
  g_list = s;
  pthread_mutex_unlock(&g_mu);
  *out = s;
  return 0;
}

void perfc__redis_sentinel_put(perfc__redis_sentinel *s) {
  if (!s)
    return;
  pthread_mutex_lock(&g_mu);
  if (--s->refs > 0) {
    pthread_mutex_unlock(&g_mu);
    return;
  }
  for (perfc__redis_sentinel **p = &g_list; *p; p = &(*p)->next)
    if (*p == s) {
      *p = s->next;
      break;
    }
  pthread_mutex_unlock(&g_mu);
  pthread_mutex_lock(&s->mu);
  s->stop = 1;
  pthread_mutex_unlock(&s->mu);
  wake(s);
  pthread_join(s->thread, NULL);
  close(s->efd);
  pthread_mutex_destroy(&s->rmu);
  pthread_mutex_destroy(&s->mu);
  pthread_mutex_destroy(&s->fmu);
  obj_free(s);
}
