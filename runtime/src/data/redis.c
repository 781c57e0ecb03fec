/*
 * redis.c — the Redis connection pool, batched commands and the pub/sub
 * subscriber thread, over hiredis' blocking API.
 *
 * Room: runtime/src/data (data layer, Redis). Public API in perfc/redis.h,
 * the pipeline primitive the cache uses in redis_internal.h, design in
 * docs/data-layer.md.
 *
 * hiredis does the protocol (command formatting, reply parsing) and the
 * socket I/O with timeouts; this file does pooling, bounds and recovery:
 *
 * - The pool is one mutex and condition variable per pool (never global),
 *   an idle stack, and a count of open connections. Connections are opened
 *   lazily outside the lock, so one slow connect does not stall the others.
 * - A failed connect starts an exponential backoff during which acquires
 *   fail at once: callers fall back (the cache goes to its loader) in
 *   microseconds instead of each paying a connect timeout.
 * - A connection that saw any I/O error or timeout is freed, never reused:
 *   after a timeout its reply may still arrive and would be read as the
 *   answer to the next command.
 * - Idle connections unused for health_check_ms are PINGed before they are
 *   handed out, so a server restart is noticed by a cheap PING rather than
 *   by a caller's command.
 */
#include "perfc/redis.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "core/error_internal.h"
#include "core/thread_internal.h"
#include "data/redis_cluster_internal.h"
#include "data/redis_internal.h"
#include "data/redis_sentinel.h"
#include "perfc/log.h"
#include "perfc/tracing.h"

typedef struct conn {
  redisContext *ctx;
  uint64_t last_used_ms;
  int probe; /* this use is the one probe allowed while suspect */
  uint64_t epoch; /* sentinel mode: the master's epoch at connect */
} conn;

struct perfc_redis_pool {
  perfc_redis_opts o;
  char *host;
  char *name;

  pthread_mutex_t mu;
  pthread_cond_t freed;
  conn **idle; /* stack of idle connections, pool_size slots */
  unsigned nidle;
  unsigned open;   /* connected or connecting, idle or in use */
  unsigned in_use; /* handed out */
  /* backoff_ms != 0 means the server is suspect (a connect failed or a
   * command timed out): until down_until_ms every acquire is refused, then
   * one caller at a time (probing) may try; a command that succeeds clears
   * the suspicion. */
  uint64_t down_until_ms;
  uint32_t backoff_ms;
  int probing;
  uint64_t connects, errors;

  perfc_gauge *g_in_use, *g_idle;
  perfc_histogram *h_wait;
  perfc_counter *c_errors, *c_connects;

  /* Cluster mode (o.n_cluster_nodes > 0): every command goes through the
   * router in redis_cluster.c over one single-node pool per node. */
  perfc__rc *cl;
  char **seeds; /* o.cluster_nodes, copied */
  perfc__redis_sentinel *sentinel; /* NULL: one server at host:port */
  perfc__redis_creds creds; /* o.username, o.password, ..., copied */
};

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct timeval tv_ms(int64_t ms) {
  struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
  return tv;
}

void perfc_redis_opts_init(perfc_redis_opts *o) {
  memset(o, 0, sizeof(*o));
  o->host = PERFC_DEFAULT_REDIS_HOST;
  o->port = PERFC_DEFAULT_REDIS_PORT;
  o->pool_size = PERFC_DEFAULT_REDIS_POOL_SIZE;
  o->connect_timeout_ms = PERFC_DEFAULT_REDIS_CONNECT_TIMEOUT_MS;
  o->command_timeout_ms = PERFC_DEFAULT_REDIS_COMMAND_TIMEOUT_MS;
  o->acquire_timeout_ms = PERFC_DEFAULT_REDIS_ACQUIRE_TIMEOUT_MS;
  o->backoff_min_ms = PERFC_DEFAULT_REDIS_BACKOFF_MIN_MS;
  o->backoff_max_ms = PERFC_DEFAULT_REDIS_BACKOFF_MAX_MS;
  o->health_check_ms = PERFC_DEFAULT_REDIS_HEALTH_CHECK_MS;
  o->del_retries = PERFC_DEFAULT_REDIS_DEL_RETRIES;
  o->batch_keys = PERFC_DEFAULT_REDIS_BATCH_KEYS;
  o->registry = NULL;
  o->name = PERFC_DEFAULT_REDIS_NAME;
}

/* The options as the pool uses them: the caller's struct copied whole (a
 * field added later cannot be dropped by a hand-kept copy list), then each
 * zero replaced by its default ("zero means default", so `= {0}` plus a
 * port works) and every value checked. */
static int resolve_opts(perfc_redis_opts *o, const perfc_redis_opts *in) {
  perfc_redis_opts d;
  perfc_redis_opts_init(&d);
  *o = in ? *in : d;
  const int64_t ms[] = {o->connect_timeout_ms, o->command_timeout_ms,
                        o->acquire_timeout_ms, o->backoff_min_ms,
                        o->backoff_max_ms,     o->health_check_ms};
  for (size_t i = 0; i < sizeof ms / sizeof ms[0]; i++)
    if (ms[i] < 0 || ms[i] > PERFC_REDIS_MAX_DURATION_MS)
      return perfc__fail(PERFC_EINVAL,
                         "redis: a duration option is %lld ms (0 = default, "
                         "at most %d)",
                         (long long)ms[i], PERFC_REDIS_MAX_DURATION_MS);
  if (o->port < 0 || o->port > 65535)
    return perfc__fail(PERFC_EINVAL, "redis: port %d out of range", o->port);
  int rc = perfc__redis_sentinel_check(o);
  if (rc != 0)
    return rc;
  if (o->username && o->username[0] && !(o->password && o->password[0]))
    return perfc__fail(PERFC_EINVAL, "redis: username without password "
                                     "(AUTH needs both)");
  if (!o->host || !o->host[0])
    o->host = d.host;
  if (!o->port)
    o->port = d.port;
  if (!o->pool_size)
    o->pool_size = d.pool_size;
  if (!o->connect_timeout_ms)
    o->connect_timeout_ms = d.connect_timeout_ms;
  if (!o->command_timeout_ms)
    o->command_timeout_ms = d.command_timeout_ms;
  if (!o->acquire_timeout_ms)
    o->acquire_timeout_ms = d.acquire_timeout_ms;
  if (!o->backoff_min_ms)
    o->backoff_min_ms = d.backoff_min_ms;
  if (!o->backoff_max_ms)
    o->backoff_max_ms = d.backoff_max_ms;
  if (!o->health_check_ms)
    o->health_check_ms = d.health_check_ms;
  if (!o->del_retries)
    o->del_retries = d.del_retries;
  if (!o->batch_keys)
    o->batch_keys = d.batch_keys;
  if (!o->name || !o->name[0])
    o->name = d.name;
  if (o->backoff_max_ms < o->backoff_min_ms)
    o->backoff_max_ms = o->backoff_min_ms;
  if (o->cluster_refresh_ms < 0 ||
      o->cluster_refresh_ms > PERFC_REDIS_MAX_DURATION_MS)
    return perfc__fail(PERFC_EINVAL, "redis: cluster_refresh_ms %lld out of "
                                     "range",
                       (long long)o->cluster_refresh_ms);
  if (!o->cluster_refresh_ms)
    o->cluster_refresh_ms = PERFC_DEFAULT_REDIS_CLUSTER_REFRESH_MS;
  if (o->n_cluster_nodes && (o->n_sentinels || (o->master_name && o->master_name[0])))
    return perfc__fail(PERFC_EINVAL, "redis: cluster_nodes and sentinels "
                                     "exclude each other (a Redis Cluster "
                                     "fails over by itself)");
  if (o->n_cluster_nodes && !o->cluster_nodes)
    return perfc__fail(PERFC_EINVAL, "redis: n_cluster_nodes without "
                                     "cluster_nodes");
  return 0;
}

/* hiredis writes with write(2), not send(MSG_NOSIGNAL), so a write to a
 * server that went away raises SIGPIPE, which by default kills the process.
 * A library may not change the process' signal dispositions, so, as curl
 * does, SIGPIPE is blocked in the calling thread around the I/O and a
 * SIGPIPE our write raised is consumed before the mask is restored. */
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

static int register_metrics(perfc_redis_pool *p) {
  perfc_metrics_registry *reg = p->o.registry;
  const char *pool_label[] = {"pool"};
  const char *state_labels[] = {"pool", "state"};
  perfc_metrics_family_opts mo;
  perfc_metrics_family *fam;
  int rc;

  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_redis_pool_connections";
  mo.help = "Redis pool connections by state (in_use, idle).";
  mo.label_names = state_labels;
  mo.label_count = 2;
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_GAUGE, &mo)) != 0)
    return rc;
  const char *in_use[] = {p->name, "in_use"};
  const char *idle[] = {p->name, "idle"};
  if ((rc = perfc_gauge_get(&p->g_in_use, fam, in_use)) != 0 ||
      (rc = perfc_gauge_get(&p->g_idle, fam, idle)) != 0)
    return rc;

  static const double wait_buckets[] = {
      0.00001, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1};
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_redis_pool_wait_seconds";
  mo.help = "Time spent acquiring a Redis connection (including connects).";
  mo.label_names = pool_label;
  mo.label_count = 1;
  mo.buckets = wait_buckets;
  mo.bucket_count = sizeof wait_buckets / sizeof wait_buckets[0];
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_HISTOGRAM,
                                     &mo)) != 0 ||
      (rc = perfc_histogram_get(&p->h_wait, fam,
                                (const char *const *)&p->name)) != 0)
    return rc;

  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_redis_errors_total";
  mo.help = "Redis failures: connects, I/O errors, timeouts, backoff refusals, "
            "error replies.";
  mo.label_names = pool_label;
  mo.label_count = 1;
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_COUNTER, &mo)) !=
          0 ||
      (rc = perfc_counter_get(&p->c_errors, fam,
                              (const char *const *)&p->name)) != 0)
    return rc;

  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_redis_connects_total";
  mo.help = "Successful Redis connects.";
  mo.label_names = pool_label;
  mo.label_count = 1;
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_COUNTER, &mo)) !=
          0 ||
      (rc = perfc_counter_get(&p->c_connects, fam,
                              (const char *const *)&p->name)) != 0)
    return rc;
  return 0;
}

/* A private copy of one AUTH string; NULL for none (NULL or ""). */
static char *dup_or_null(const char *v, int *fail) {
  if (!v || !v[0])
    return NULL;
  char *d = strdup(v);
  if (!d)
    *fail = 1;
  return d;
}

int perfc__redis_creds_copy(perfc__redis_creds *c, perfc_redis_opts *o) {
  int fail = 0;
  c->username = dup_or_null(o->username, &fail);
  c->password = dup_or_null(o->password, &fail);
  c->sentinel_password = dup_or_null(o->sentinel_password, &fail);
  c->sentinel_username = dup_or_null(o->sentinel_username, &fail);
  if (fail) {
    perfc__redis_creds_free(c);
    return perfc__fail(PERFC_ENOMEM, "redis: out of memory");
  }
  o->username = c->username;
  o->password = c->password;
  o->sentinel_password = c->sentinel_password;
  o->sentinel_username = c->sentinel_username;
  return 0;
}

void perfc__redis_creds_free(perfc__redis_creds *c) {
  /* Passwords are cleared before they go back to the allocator. */
  if (c->password)
    explicit_bzero(c->password, strlen(c->password));
  if (c->sentinel_password)
    explicit_bzero(c->sentinel_password, strlen(c->sentinel_password));
  free(c->username);
  free(c->password);
  free(c->sentinel_password);
  free(c->sentinel_username);
  memset(c, 0, sizeof *c);
}

/* Copies the seeds and builds the router (its node pools share this
 * pool's options, name and metrics). */
static int cluster_init(perfc_redis_pool *p) {
  p->seeds = calloc(p->o.n_cluster_nodes, sizeof(char *));
  if (!p->seeds)
    return perfc__fail(PERFC_ENOMEM, "redis: out of memory");
  for (size_t i = 0; i < p->o.n_cluster_nodes; i++)
    if (!p->o.cluster_nodes[i] ||
        !(p->seeds[i] = strdup(p->o.cluster_nodes[i])))
      return perfc__fail(p->o.cluster_nodes[i] ? PERFC_ENOMEM : PERFC_EINVAL,
                         "redis: cluster node %zu is %s", i,
                         p->o.cluster_nodes[i] ? "out of memory" : "NULL");
  p->o.cluster_nodes = (const char *const *)p->seeds;
  return perfc__redis_cluster_new(&p->cl, &p->o);
}

perfc__rc *perfc__redis_pool_cluster(const perfc_redis_pool *p) {
  return p ? p->cl : NULL;
}

static void on_switch(void *ud);

int perfc_redis_pool_new(perfc_redis_pool **out, const perfc_redis_opts *opts) {
  if (!out)
    return perfc__fail(PERFC_EINVAL, "redis: NULL out");
  perfc_redis_opts o;
  int rc = resolve_opts(&o, opts);
  if (rc != 0)
    return rc;
  perfc_redis_pool *p = calloc(1, sizeof(*p));
  if (!p)
    return perfc__fail(PERFC_ENOMEM, "redis: out of memory");
  p->o = o;
  /* Sentinel mode: messages and spans name the master by its name. */
  p->host = strdup(o.n_sentinels ? o.master_name : p->o.host);
  p->name = strdup(p->o.name);
  p->idle = calloc(p->o.pool_size, sizeof(conn *));
  if (!p->host || !p->name || !p->idle) {
    free(p->host);
    free(p->name);
    free(p->idle);
    free(p);
    return perfc__fail(PERFC_ENOMEM, "redis: out of memory");
  }
  p->o.host = p->host;
  p->o.name = p->name;
  rc = perfc__redis_creds_copy(&p->creds, &p->o);
  /* Sentinel mode: the options keep the shared object's copies (the
   * subscriber and the async client are made from them later). */
  if (rc == 0 && o.n_sentinels)
    rc = perfc__redis_sentinel_get(&p->sentinel, &o);
  if (rc == 0 && p->sentinel) {
    p->o.sentinels = perfc__redis_sentinel_addrs(p->sentinel,
                                                 &p->o.n_sentinels);
    p->o.master_name = perfc__redis_sentinel_name(p->sentinel);
  }
  if (rc == 0 && (rc = register_metrics(p)) != 0)
    perfc__fail(rc, "redis pool %s: cannot register metrics: %s", p->name,
                perfc_strerror(rc));
  if (rc != 0) {
    perfc__redis_sentinel_put(p->sentinel);
    perfc__redis_creds_free(&p->creds);
    free(p->host);
    free(p->name);
    free(p->idle);
    free(p);
    return rc;
  }
  pthread_mutex_init(&p->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&p->freed, &ca);
  pthread_condattr_destroy(&ca);
  if (p->o.n_cluster_nodes && (rc = cluster_init(p)) != 0) {
    perfc_redis_pool_free(p);
    return rc;
  }
  if (p->sentinel &&
      perfc__redis_sentinel_listen(p->sentinel, on_switch, p) != 0) {
    perfc_redis_pool_free(p);
    return perfc__fail(PERFC_ENOMEM, "redis: out of memory");
  }
  *out = p;
  return 0;
}

static void ctx_free(perfc__redis_sentinel *sn, redisContext *ctx) {
  if (sn)
    perfc__redis_sentinel_close(sn, ctx);
  else if (ctx)
    redisFree(ctx);
}

static void conn_free(perfc_redis_pool *p, conn *c) {
  if (!c)
    return;
  ctx_free(p->sentinel, c->ctx);
  free(c);
}

/* Sentinel mode: the master changed. Calls stop being refused at once
 * (the backoff was about the old master); connections to the old one
 * were shut down and are replaced at their next acquire. */
static void on_switch(void *ud) {
  perfc_redis_pool *p = ud;
  pthread_mutex_lock(&p->mu);
  p->backoff_ms = 0;
  p->down_until_ms = 0;
  pthread_mutex_unlock(&p->mu);
}

void perfc_redis_pool_free(perfc_redis_pool *p) {
  if (!p)
    return;
  perfc__rc_free(p->cl);
  if (p->seeds)
    for (size_t i = 0; i < p->o.n_cluster_nodes; i++)
      free(p->seeds[i]);
  free(p->seeds);
  if (p->sentinel)
    perfc__redis_sentinel_unlisten(p->sentinel, on_switch, p);
  for (unsigned i = 0; i < p->nidle; i++)
    conn_free(p, p->idle[i]);
  perfc_gauge_add(p->g_idle, -(double)p->nidle);
  pthread_cond_destroy(&p->freed);
  pthread_mutex_destroy(&p->mu);
  free(p->idle);
  free(p->host);
  free(p->name);
  perfc__redis_sentinel_put(p->sentinel);
  perfc__redis_creds_free(&p->creds);
  free(p);
}

static void count_error(perfc_redis_pool *p) {
  perfc_counter_inc(p->c_errors);
  pthread_mutex_lock(&p->mu);
  p->errors++;
  pthread_mutex_unlock(&p->mu);
}

/* Called with p->mu held when the server looks down: a failed connect,
 * a timed-out command, a failed probe. */
static void start_backoff_locked(perfc_redis_pool *p, int auth_failed) {
  int first = p->backoff_ms == 0;
  if (p->backoff_ms == 0)
    p->backoff_ms = p->o.backoff_min_ms;
  else if (p->backoff_ms < p->o.backoff_max_ms / 2)
    p->backoff_ms *= 2;
  else
    p->backoff_ms = p->o.backoff_max_ms;
  p->down_until_ms = now_ms() + p->backoff_ms;
  /* Log the transition to suspect once, not every refused call. A refused
   * AUTH is not a server that is down: the caller logs that (once per
   * failed probe, so once per backoff period). */
  if (first && !auth_failed)
    perfc_log(PERFC_LOG_WARN,
              "redis pool %s: %s:%d not answering, refusing calls for up to "
              "%u ms at a time",
              p->name, p->host, p->o.port, (unsigned)p->o.backoff_max_ms);
}

/* A cluster replica's node pool: reads on this connection may be served by
 * the replica (without it a replica answers MOVED to its master). */
static int ping_readonly(redisContext *ctx) {
  sigpipe_guard g;
  sigpipe_block(&g);
  redisReply *r = redisCommand(ctx, "READONLY");
  sigpipe_restore(&g);
  int ok = r && r->type == REDIS_REPLY_STATUS;
  if (r)
    freeReplyObject(r);
  return ok ? 0 : -1;
}

/* Maps a failed hiredis call to a perfc code; errno is still the one the
 * failing read or write left (a socket timeout reads as EAGAIN). */
static int io_error(const redisContext *ctx, int saved_errno) {
  if (ctx && ctx->err == REDIS_ERR_IO &&
      (saved_errno == EAGAIN || saved_errno == EWOULDBLOCK ||
       saved_errno == ETIMEDOUT))
    return PERFC_ETIMEDOUT;
  if (ctx && ctx->err == REDIS_ERR_OOM)
    return PERFC_ENOMEM;
  return PERFC_EIO;
}

int perfc__redis_auth(redisContext *ctx, const char *username,
                      const char *password, char *err, size_t errlen) {
  if (!password || !password[0])
    return 0;
  /* argv form: a password may hold spaces or quotes. */
  const char *argv[3] = {"AUTH"};
  size_t len[3] = {4};
  int argc = 1;
  if (username && username[0]) {
    argv[argc] = username;
    len[argc++] = strlen(username);
  }
  argv[argc] = password;
  len[argc++] = strlen(password);
  sigpipe_guard g;
  sigpipe_block(&g);
  redisReply *r = redisCommandArgv(ctx, argc, argv, len);
  int saved = errno;
  sigpipe_restore(&g);
  if (!r) {
    snprintf(err, errlen, "no answer to AUTH: %s",
             ctx->errstr[0] ? ctx->errstr : "connection lost");
    return io_error(ctx, saved);
  }
  int rc = 0;
  if (r->type == REDIS_REPLY_ERROR) {
    /* The server's words (WRONGPASS ..., ERR invalid password, ERR AUTH
     * <password> called without any password configured): none of them
     * repeats the password. */
    snprintf(err, errlen, "AUTH failed%s%s: %.200s",
             username && username[0] ? " for user " : "",
             username && username[0] ? username : "", r->str);
    rc = PERFC_ECONFIG;
  } else if (r->type != REDIS_REPLY_STATUS) {
    snprintf(err, errlen, "AUTH failed: unexpected reply type %d", r->type);
    rc = PERFC_EIO;
  }
  freeReplyObject(r);
  return rc;
}

/* A connection to the server of `o` (or, with `sn`, to the master the
 * sentinels name), authenticated when o->password is set. NULL on failure
 * with the reason in `err` and the code in `*rc`: PERFC_ECONFIG for a
 * refused AUTH, else PERFC_EIO (or PERFC_ETIMEDOUT, PERFC_ENOMEM). */
static redisContext *connect_ctx(perfc__redis_sentinel *sn,
                                 const perfc_redis_opts *o, uint64_t *epoch,
                                 char *err, size_t errlen, int *rc) {
  *rc = PERFC_EIO;
  /* Sentinel mode: the master the sentinels name, confirmed by ROLE. */
  if (sn)
    return perfc__redis_sentinel_connect(sn, o->connect_timeout_ms,
                                         o->command_timeout_ms, epoch, err,
                                         errlen, rc);
  redisContext *ctx =
      redisConnectWithTimeout(o->host, o->port, tv_ms(o->connect_timeout_ms));
  if (!ctx) {
    snprintf(err, errlen, "out of memory");
    *rc = PERFC_ENOMEM;
    return NULL;
  }
  if (ctx->err) {
    snprintf(err, errlen, "%s", ctx->errstr);
    redisFree(ctx);
    return NULL;
  }
  if (redisSetTimeout(ctx, tv_ms(o->command_timeout_ms)) != REDIS_OK) {
    snprintf(err, errlen, "cannot set socket timeout");
    redisFree(ctx);
    return NULL;
  }
  int arc = perfc__redis_auth(ctx, o->username, o->password, err, errlen);
  if (arc != 0) {
    *rc = arc == PERFC_ECONFIG ? PERFC_ECONFIG : PERFC_EIO;
    redisFree(ctx);
    return NULL;
  }
  if (o->cluster_read_replicas && !o->n_cluster_nodes && ping_readonly(ctx)) {
    snprintf(err, errlen, "READONLY refused");
    redisFree(ctx);
    return NULL;
  }
  return ctx;
}

/* How a use of a connection ended. */
typedef enum outcome {
  OUT_OK,      /* a reply came back: the server works */
  OUT_BROKEN,  /* I/O error (reset, EOF): drop the connection */
  OUT_TIMEOUT, /* no reply in time: drop it and suspect the server */
} outcome;

static void release(perfc_redis_pool *p, conn *c, outcome out) {
  pthread_mutex_lock(&p->mu);
  p->in_use--;
  perfc_gauge_dec(p->g_in_use);
  if (c->probe)
    p->probing = 0;
  if (out == OUT_OK) {
    if (p->backoff_ms)
      perfc_log(PERFC_LOG_INFO, "redis pool %s: %s:%d answering again", p->name,
                p->host, p->o.port);
    p->backoff_ms = 0;
    p->down_until_ms = 0;
  } else if (out == OUT_TIMEOUT || c->probe) {
    /* A hung server would otherwise cost every caller a full command
     * timeout (connects to a stopped process still succeed); a failed
     * probe extends the backoff. */
    start_backoff_locked(p, 0);
  }
  c->probe = 0;
  if (out != OUT_OK) {
    p->open--;
    pthread_mutex_unlock(&p->mu);
    if (p->sentinel) /* ask the sentinels again before the next connect */
      perfc__redis_sentinel_suspect(p->sentinel, c->epoch);
    conn_free(p, c);
    pthread_mutex_lock(&p->mu);
  } else {
    c->last_used_ms = now_ms();
    p->idle[p->nidle++] = c;
    perfc_gauge_inc(p->g_idle);
  }
  pthread_cond_signal(&p->freed);
  pthread_mutex_unlock(&p->mu);
}

static int ping_ctx(redisContext *ctx) {
  sigpipe_guard g;
  sigpipe_block(&g);
  redisReply *r = redisCommand(ctx, "PING");
  sigpipe_restore(&g);
  int ok = r && r->type == REDIS_REPLY_STATUS;
  if (r)
    freeReplyObject(r);
  return ok ? 0 : PERFC_EIO;
}

/* Hands out a healthy connection or fails within acquire_timeout_ms plus
 * at most one connect_timeout_ms (a connect is never retried in here).
 * While the server is suspect, refuses at once except for one probe. */
static int acquire(perfc_redis_pool *p, conn **out) {
  double t0 = now_s();
  uint64_t deadline = now_ms() + p->o.acquire_timeout_ms;
  pthread_mutex_lock(&p->mu);
  for (;;) {
    int suspect = p->backoff_ms != 0;
    if (suspect && (now_ms() < p->down_until_ms || p->probing)) {
      /* Refuse at once: the caller has a fallback (the loader). */
      p->errors++;
      pthread_mutex_unlock(&p->mu);
      perfc_counter_inc(p->c_errors);
      return perfc__fail(PERFC_EIO,
                         "redis pool %s: %s:%d is in reconnect backoff "
                         "(a connect or command failed)",
                         p->name, p->host, p->o.port);
    }
    if (p->nidle > 0) {
      conn *c = p->idle[--p->nidle];
      p->in_use++;
      if (suspect)
        p->probing = c->probe = 1;
      perfc_gauge_dec(p->g_idle);
      perfc_gauge_inc(p->g_in_use);
      pthread_mutex_unlock(&p->mu);
      /* Sentinel mode: a connection to an old master is replaced too. */
      int old = p->sentinel && c->epoch != perfc__redis_sentinel_epoch(
                                               p->sentinel);
      if (old || (now_ms() - c->last_used_ms >=
                      (uint64_t)p->o.health_check_ms &&
                  ping_ctx(c->ctx) != 0)) {
        /* A stale connection is not the caller's problem: replace it. */
        perfc_log(PERFC_LOG_DEBUG, "redis pool %s: %s, reconnecting", p->name,
                  old ? "idle connection to an old master"
                      : "idle connection failed PING");
        char err[512];
        uint64_t epoch = 0;
        int crc;
        redisContext *ctx =
            connect_ctx(p->sentinel, &p->o, &epoch, err, sizeof err, &crc);
        if (!ctx) {
          perfc_log(crc == PERFC_ECONFIG ? PERFC_LOG_WARN : PERFC_LOG_DEBUG,
                    "redis pool %s: cannot connect to %s:%d: %s", p->name,
                    p->host, p->o.port, err);
          c->probe = 1; /* a failed connect means backoff */
          pthread_mutex_lock(&p->mu);
          p->probing = 1;
          p->errors++;
          pthread_mutex_unlock(&p->mu);
          release(p, c, OUT_BROKEN);
          perfc_counter_inc(p->c_errors);
          return perfc__fail(crc == PERFC_ECONFIG ? PERFC_ECONFIG : PERFC_EIO,
                             "redis pool %s: cannot connect to "
                             "%s:%d: %s",
                             p->name, p->host, p->o.port, err);
        }
        ctx_free(p->sentinel, c->ctx);
        c->ctx = ctx;
        c->epoch = epoch;
        perfc_counter_inc(p->c_connects);
        pthread_mutex_lock(&p->mu);
        p->connects++;
        pthread_mutex_unlock(&p->mu);
      }
      perfc_histogram_observe(p->h_wait, now_s() - t0);
      *out = c;
      return 0;
    }
    if (p->open < p->o.pool_size) {
      p->open++;
      p->in_use++;
      if (suspect)
        p->probing = 1;
      perfc_gauge_inc(p->g_in_use);
      pthread_mutex_unlock(&p->mu);
      char err[512];
      conn *c = calloc(1, sizeof(*c));
      uint64_t epoch = 0;
      int crc = PERFC_ENOMEM;
      redisContext *ctx =
          c ? connect_ctx(p->sentinel, &p->o, &epoch, err, sizeof err, &crc)
            : NULL;
      pthread_mutex_lock(&p->mu);
      if (!ctx) {
        free(c);
        p->open--;
        p->in_use--;
        if (suspect)
          p->probing = 0;
        perfc_gauge_dec(p->g_in_use);
        if (c)
          start_backoff_locked(p, crc == PERFC_ECONFIG);
        p->errors++;
        pthread_cond_signal(&p->freed);
        pthread_mutex_unlock(&p->mu);
        perfc_counter_inc(p->c_errors);
        if (!c)
          return perfc__fail(PERFC_ENOMEM, "redis pool %s: out of memory",
                             p->name);
        /* A refused AUTH is a configuration error, not a server down: say
         * it where operators look (once per failed probe, so at most once
         * per backoff period). */
        perfc_log(crc == PERFC_ECONFIG ? PERFC_LOG_WARN : PERFC_LOG_DEBUG,
                  "redis pool %s: cannot connect to %s:%d: %s", p->name,
                  p->host, p->o.port, err);
        return perfc__fail(crc == PERFC_ECONFIG ? PERFC_ECONFIG : PERFC_EIO,
                           "redis pool %s: cannot connect to %s:%d: "
                           "%s",
                           p->name, p->host, p->o.port, err);
      }
      p->connects++;
      pthread_mutex_unlock(&p->mu);
      perfc_counter_inc(p->c_connects);
      c->ctx = ctx;
      c->epoch = epoch;
      c->probe = suspect;
      c->last_used_ms = now_ms();
      perfc_histogram_observe(p->h_wait, now_s() - t0);
      *out = c;
      return 0;
    }
    uint64_t now = now_ms();
    if (now >= deadline) {
      p->errors++;
      pthread_mutex_unlock(&p->mu);
      perfc_counter_inc(p->c_errors);
      perfc_histogram_observe(p->h_wait, now_s() - t0);
      return perfc__fail(PERFC_ETIMEDOUT,
                         "redis pool %s: no connection free within %lld ms "
                         "(pool_size %u)",
                         p->name, (long long)p->o.acquire_timeout_ms,
                         p->o.pool_size);
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t wait_ns = (deadline - now) * 1000000ull + (uint64_t)ts.tv_nsec;
    ts.tv_sec += (time_t)(wait_ns / 1000000000ull);
    ts.tv_nsec = (long)(wait_ns % 1000000000ull);
    pthread_cond_timedwait(&p->freed, &p->mu, &ts);
  }
}

static int pipeline(perfc_redis_pool *p, const perfc__redis_cmd *cmds,
                    size_t n, redisReply **replies);

/* Every command goes through here: one CLIENT span per round trip inside a
 * traced call (OpenTelemetry's database conventions: db.system, the
 * command as db.operation; never keys or values). */
int perfc__redis_pipeline(perfc_redis_pool *p, const perfc__redis_cmd *cmds,
                          size_t n, redisReply **replies) {
  if (!p || (n && (!cmds || !replies)))
    return PERFC_EINVAL;
  if (p->cl)
    return perfc__redis_cluster_pipeline(p->cl, cmds, n, replies);
  if (n == 0)
    return pipeline(p, cmds, n, replies);
  char op[32];
  size_t ol = cmds[0].argvlen[0] < sizeof op - 1 ? cmds[0].argvlen[0]
                                                 : sizeof op - 1;
  for (size_t i = 0; i < ol; i++) {
    char ch = cmds[0].argv[0][i];
    op[i] = ch >= 'a' && ch <= 'z' ? (char)(ch - 32) : ch;
  }
  op[ol] = '\0';
  perfc_span *sp = perfc_tracing_span_start_current(op, PERFC_SPAN_CLIENT);
  if (sp != NULL) {
    perfc_span_set_attr_str(sp, "db.system", "redis");
    perfc_span_set_attr_str(sp, "db.operation", op);
    perfc_span_set_attr_str(sp, "server.address", p->host);
    perfc_span_set_attr_int(sp, "server.port", p->o.port);
    if (n > 1)
      perfc_span_set_attr_int(sp, "db.operation.batch.size", (int64_t)n);
  }
  int rc = pipeline(p, cmds, n, replies);
  if (rc != 0)
    perfc_span_set_status(sp, PERFC_SPAN_STATUS_ERROR, perfc_err_name(rc));
  perfc_span_end(sp);
  return rc;
}

static int pipeline(perfc_redis_pool *p, const perfc__redis_cmd *cmds,
                    size_t n, redisReply **replies) {
  for (size_t i = 0; i < n; i++)
    replies[i] = NULL;
  if (n == 0)
    return 0;
  conn *c = NULL;
  int rc = acquire(p, &c);
  if (rc != 0)
    return rc;
  for (size_t i = 0; i < n; i++) {
    if (redisAppendCommandArgv(c->ctx, cmds[i].argc, cmds[i].argv,
                               cmds[i].argvlen) != REDIS_OK) {
      /* Only formatting can fail here (out of memory); nothing was sent,
       * but the output buffer holds part of the batch: drop the
       * connection. */
      release(p, c, OUT_BROKEN);
      count_error(p);
      return perfc__fail(PERFC_ENOMEM, "redis pool %s: out of memory", p->name);
    }
  }
  sigpipe_guard g;
  sigpipe_block(&g);
  size_t got = 0;
  int saved_errno = 0;
  for (; got < n; got++) {
    void *r = NULL;
    errno = 0;
    if (redisGetReply(c->ctx, &r) != REDIS_OK || !r) {
      saved_errno = errno;
      break;
    }
    replies[got] = r;
  }
  sigpipe_restore(&g);
  if (got < n) {
    rc = io_error(c->ctx, saved_errno);
    perfc__fail(rc, "redis pool %s: %s:%d: %s", p->name, p->host, p->o.port,
                rc == PERFC_ETIMEDOUT ? "no reply within command_timeout_ms"
                : c->ctx->errstr[0]   ? c->ctx->errstr
                                      : "no reply");
    perfc_log(PERFC_LOG_DEBUG, "redis pool %s: %s (%s)", p->name,
              c->ctx->errstr[0] ? c->ctx->errstr : "no reply",
              perfc_err_name(rc));
    for (size_t i = 0; i < got; i++) {
      freeReplyObject(replies[i]);
      replies[i] = NULL;
    }
    release(p, c, rc == PERFC_ETIMEDOUT ? OUT_TIMEOUT : OUT_BROKEN);
    count_error(p);
    return rc;
  }
  /* Sentinel mode: READONLY means this is a demoted master; drop the
   * connection and ask the sentinels (the caller sees the error reply). */
  outcome out = OUT_OK;
  for (size_t i = 0; p->sentinel && i < n; i++)
    if (replies[i]->type == REDIS_REPLY_ERROR &&
        strncmp(replies[i]->str, "READONLY", 8) == 0)
      out = OUT_BROKEN;
  release(p, c, out);
  return 0;
}

int perfc__redis_pipeline_replicated(perfc_redis_pool *p,
                                     const perfc__redis_cmd *cmds, size_t n,
                                     redisReply **replies) {
  if (!p || !p->o.wait_replicas || n == 0)
    return perfc__redis_pipeline(p, cmds, n, replies);
  /* WAIT in the same round trip: the server answers once that many
   * replicas acknowledged everything this connection wrote, or after
   * half the command timeout (the other half is the reply's margin). */
  perfc__redis_cmd *all = calloc(n + 1, sizeof *all);
  redisReply **rs = calloc(n + 1, sizeof *rs);
  if (!all || !rs) {
    free(all);
    free(rs);
    return perfc__fail(PERFC_ENOMEM, "redis pool %s: out of memory", p->name);
  }
  char want[16], ms[24];
  int64_t wait_ms = p->o.command_timeout_ms / 2 ? p->o.command_timeout_ms / 2 : 1;
  const char *wargv[] = {"WAIT", want, ms};
  size_t wlen[] = {4, (size_t)snprintf(want, sizeof want, "%u",
                                       p->o.wait_replicas),
                   (size_t)snprintf(ms, sizeof ms, "%lld", (long long)wait_ms)};
  memcpy(all, cmds, n * sizeof *all);
  all[n] = (perfc__redis_cmd){3, wargv, wlen};
  int rc = perfc__redis_pipeline(p, all, n + 1, rs);
  if (rc == 0 && (rs[n]->type != REDIS_REPLY_INTEGER ||
                  rs[n]->integer < (long long)p->o.wait_replicas)) {
    rc = perfc__fail(PERFC_EIO,
                     "redis pool %s: written on the master but acknowledged "
                     "by %lld of %u replicas within %lld ms "
                     "(redis.wait_replicas): a failover may lose it",
                     p->name,
                     rs[n]->type == REDIS_REPLY_INTEGER ? rs[n]->integer : 0,
                     p->o.wait_replicas, (long long)wait_ms);
    count_error(p);
  }
  for (size_t i = 0; i <= n; i++) {
    if (rc == 0 && i < n)
      replies[i] = rs[i];
    else if (rs[i])
      freeReplyObject(rs[i]);
    if (rc != 0 && i < n)
      replies[i] = NULL;
  }
  free(rs);
  free(all);
  return rc;
}

static int one_ex(perfc_redis_pool *p, int argc, const char **argv,
                  const size_t *argvlen, redisReply **reply, int replicated) {
  perfc__redis_cmd cmd = {argc, argv, argvlen};
  int rc = replicated ? perfc__redis_pipeline_replicated(p, &cmd, 1, reply)
                      : perfc__redis_pipeline(p, &cmd, 1, reply);
  if (rc == 0 && (*reply)->type == REDIS_REPLY_ERROR) {
    perfc_log(PERFC_LOG_DEBUG, "redis pool %s: %s: %.*s", p->name, argv[0],
              (int)(*reply)->len, (*reply)->str);
    perfc__fail(PERFC_EIO, "redis pool %s: %s: %.*s", p->name, argv[0],
                (int)(*reply)->len, (*reply)->str);
    freeReplyObject(*reply);
    *reply = NULL;
    count_error(p);
    return PERFC_EIO;
  }
  return rc;
}

static int one(perfc_redis_pool *p, int argc, const char **argv,
               const size_t *argvlen, redisReply **reply) {
  return one_ex(p, argc, argv, argvlen, reply, 0);
}

int perfc_redis_ping(perfc_redis_pool *p) {
  const char *argv[] = {"PING"};
  size_t len[] = {4};
  redisReply *r;
  int rc = one(p, 1, argv, len, &r);
  if (rc == 0)
    freeReplyObject(r);
  return rc;
}

static int copy_string(const redisReply *r, uint8_t **out, size_t *out_len) {
  uint8_t *d = malloc(r->len ? r->len : 1);
  if (!d)
    return PERFC_ENOMEM;
  memcpy(d, r->str, r->len);
  *out = d;
  *out_len = r->len;
  return 0;
}

int perfc_redis_get(perfc_redis_pool *p, const char *key, uint8_t **out,
                    size_t *out_len) {
  if (!key || !out || !out_len)
    return PERFC_EINVAL;
  const char *argv[] = {"GET", key};
  size_t len[] = {3, strlen(key)};
  redisReply *r;
  int rc = one(p, 2, argv, len, &r);
  if (rc != 0)
    return rc;
  if (r->type == REDIS_REPLY_NIL)
    rc = PERFC_ENOENT;
  else if (r->type == REDIS_REPLY_STRING)
    rc = copy_string(r, out, out_len);
  else
    rc = PERFC_EIO;
  freeReplyObject(r);
  return rc;
}

void perfc_redis_values_free(perfc_redis_value *out, size_t n) {
  if (!out)
    return;
  for (size_t i = 0; i < n; i++) {
    free(out[i].data);
    out[i].data = NULL;
    out[i].len = 0;
    out[i].found = 0;
  }
}

int perfc_redis_mget(perfc_redis_pool *p, const char *const *keys, size_t n,
                     perfc_redis_value *out) {
  if (!p || (n && (!keys || !out)))
    return PERFC_EINVAL;
  for (size_t i = 0; i < n; i++)
    out[i] = (perfc_redis_value){NULL, 0, 0};
  if (n == 0)
    return 0;
  size_t per = p->o.batch_keys;
  size_t ncmds = (n + per - 1) / per;
  perfc__redis_cmd *cmds = calloc(ncmds, sizeof(*cmds));
  const char **argv = calloc(n + ncmds, sizeof(char *));
  size_t *argvlen = calloc(n + ncmds, sizeof(size_t));
  redisReply **replies = calloc(ncmds, sizeof(*replies));
  int rc = PERFC_ENOMEM;
  if (!cmds || !argv || !argvlen || !replies)
    goto done;
  size_t a = 0;
  for (size_t ci = 0; ci < ncmds; ci++) {
    size_t first = ci * per, cnt = n - first < per ? n - first : per;
    cmds[ci].argc = (int)(cnt + 1);
    cmds[ci].argv = &argv[a];
    cmds[ci].argvlen = &argvlen[a];
    argv[a] = "MGET";
    argvlen[a++] = 4;
    for (size_t k = 0; k < cnt; k++) {
      if (!keys[first + k]) {
        rc = PERFC_EINVAL;
        goto done;
      }
      argv[a] = keys[first + k];
      argvlen[a++] = strlen(keys[first + k]);
    }
  }
  rc = perfc__redis_pipeline(p, cmds, ncmds, replies);
  if (rc != 0)
    goto done;
  for (size_t ci = 0; ci < ncmds && rc == 0; ci++) {
    redisReply *r = replies[ci];
    size_t first = ci * per;
    if (r->type != REDIS_REPLY_ARRAY ||
        r->elements != (size_t)cmds[ci].argc - 1) {
      rc = PERFC_EIO;
      break;
    }
    for (size_t k = 0; k < r->elements; k++) {
      redisReply *e = r->element[k];
      if (e->type == REDIS_REPLY_STRING) {
        if ((rc = copy_string(e, &out[first + k].data, &out[first + k].len)) !=
            0)
          break;
        out[first + k].found = 1;
      }
    }
  }
  if (rc != 0) {
    perfc_redis_values_free(out, n);
    count_error(p);
  }
done:
  if (replies)
    for (size_t ci = 0; ci < ncmds; ci++)
      if (replies[ci])
        freeReplyObject(replies[ci]);
  free(replies);
  free(argvlen);
  free(argv);
  free(cmds);
  return rc;
}

int perfc_redis_set_many(perfc_redis_pool *p, const perfc_redis_item *items,
                         size_t n) {
  if (!p || (n && !items))
    return PERFC_EINVAL;
  if (n == 0)
    return 0;
  perfc__redis_cmd *cmds = calloc(n, sizeof(*cmds));
  const char **argv = calloc(n * 5, sizeof(char *));
  size_t *argvlen = calloc(n * 5, sizeof(size_t));
  char(*ttl)[24] = calloc(n, sizeof(*ttl));
  redisReply **replies = calloc(n, sizeof(*replies));
  int rc = PERFC_ENOMEM;
  if (!cmds || !argv || !argvlen || !ttl || !replies)
    goto done;
  for (size_t i = 0; i < n; i++) {
    const perfc_redis_item *it = &items[i];
    if (!it->key || (it->value.len && !it->value.base) || it->ttl_ms < 0) {
      rc = perfc__fail(PERFC_EINVAL,
                       "redis: item %zu has no key, no value bytes or a "
                       "negative ttl_ms",
                       i);
      goto done;
    }
    const char **av = &argv[i * 5];
    size_t *al = &argvlen[i * 5];
    av[0] = "SET";
    al[0] = 3;
    av[1] = it->key;
    al[1] = strlen(it->key);
    /* hiredis sends argv entries by length, so an empty value needs a
     * non-NULL pointer only. */
    av[2] = it->value.len ? (const char *)it->value.base : "";
    al[2] = it->value.len;
    cmds[i].argc = 3;
    if (it->ttl_ms) {
      av[3] = "PX";
      al[3] = 2;
      int w = snprintf(ttl[i], sizeof ttl[i], "%lld", (long long)it->ttl_ms);
      av[4] = ttl[i];
      al[4] = (size_t)w;
      cmds[i].argc = 5;
    }
    cmds[i].argv = av;
    cmds[i].argvlen = al;
  }
  rc = perfc__redis_pipeline_replicated(p, cmds, n, replies);
  if (rc == 0) {
    for (size_t i = 0; i < n && rc == 0; i++)
      if (replies[i]->type == REDIS_REPLY_ERROR)
        rc = perfc__fail(PERFC_EIO, "redis pool %s: SET: %.*s", p->name,
                         (int)replies[i]->len, replies[i]->str);
    if (rc)
      count_error(p);
  }
done:
  if (replies)
    for (size_t i = 0; i < n; i++)
      if (replies[i])
        freeReplyObject(replies[i]);
  free(replies);
  free(ttl);
  free(argvlen);
  free(argv);
  free(cmds);
  return rc;
}

int perfc_redis_set(perfc_redis_pool *p, const char *key, perfc_slice value,
                    int64_t ttl_ms) {
  perfc_redis_item it = {key, value, ttl_ms};
  return perfc_redis_set_many(p, &it, 1);
}

/* Before retry number `attempt`+1: backoff_min_ms doubling per attempt,
 * and at least until the pool stops refusing (a retry inside the backoff
 * would be refused without trying), each pause at most backoff_max_ms. */
static void retry_pause(perfc_redis_pool *p, unsigned attempt) {
  uint64_t delay = (uint64_t)p->o.backoff_min_ms
                   << (attempt < 16 ? attempt : 16);
  pthread_mutex_lock(&p->mu);
  uint64_t now = now_ms();
  if (p->backoff_ms && p->down_until_ms > now + delay)
    delay = p->down_until_ms - now + 1;
  pthread_mutex_unlock(&p->mu);
  if (delay > (uint64_t)p->o.backoff_max_ms)
    delay = p->o.backoff_max_ms;
  struct timespec ts = {(time_t)(delay / 1000),
                        (long)(delay % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
    ;
}

int perfc_redis_del(perfc_redis_pool *p, const char *const *keys, size_t n) {
  if (!p || (n && !keys))
    return PERFC_EINVAL;
  if (n == 0)
    return 0;
  const char **argv = calloc(n + 1, sizeof(char *));
  size_t *argvlen = calloc(n + 1, sizeof(size_t));
  if (!argv || !argvlen) {
    free(argv);
    free(argvlen);
    return PERFC_ENOMEM;
  }
  argv[0] = "DEL";
  argvlen[0] = 3;
  int rc = 0;
  for (size_t i = 0; i < n; i++) {
    if (!keys[i])
      rc = PERFC_EINVAL;
    else {
      argv[i + 1] = keys[i];
      argvlen[i + 1] = strlen(keys[i]);
    }
  }
  /* DEL is idempotent, so retrying after a failure whose outcome is
   * unknown (a timeout after the server executed it) is safe. */
  for (unsigned attempt = 0; rc == 0; attempt++) {
    redisReply *r;
    rc = one_ex(p, (int)n + 1, argv, argvlen, &r, 1);
    if (rc == 0) {
      freeReplyObject(r);
      break;
    }
    if ((rc != PERFC_EIO && rc != PERFC_ETIMEDOUT) ||
        attempt >= p->o.del_retries)
      break;
    retry_pause(p, attempt);
    rc = 0;
  }
  free(argv);
  free(argvlen);
  return rc;
}

int perfc_redis_publish(perfc_redis_pool *p, const char *channel,
                        perfc_slice message) {
  if (!channel || (message.len && !message.base))
    return PERFC_EINVAL;
  /* A cluster: sharded pub/sub, to the node that owns the channel's slot
   * (classic PUBLISH would be broadcast over the cluster bus to every
   * node; the subscriber SSUBSCRIBEs there). */
  const char *argv[] = {p && p->cl ? "SPUBLISH" : "PUBLISH", channel,
                        message.len ? (const char *)message.base : ""};
  size_t len[] = {p && p->cl ? 8u : 7u, strlen(channel), message.len};
  redisReply *r;
  int rc = one(p, 3, argv, len, &r);
  if (rc == 0)
    freeReplyObject(r);
  return rc;
}

const perfc_redis_opts *perfc__redis_pool_opts(const perfc_redis_pool *p) {
  return &p->o;
}

void perfc_redis_pool_stats_get(perfc_redis_pool *p,
                                perfc_redis_pool_stats *out) {
  memset(out, 0, sizeof(*out));
  if (!p)
    return;
  if (p->cl) {
    perfc__redis_cluster_stats(p->cl, out);
    return;
  }
  pthread_mutex_lock(&p->mu);
  out->in_use = p->in_use;
  out->idle = p->nidle;
  out->connects = p->connects;
  out->errors = p->errors;
  out->backing_off = p->backoff_ms != 0;
  pthread_mutex_unlock(&p->mu);
}

/* ---- subscriber ---- */

struct perfc_redis_subscriber {
  perfc_redis_opts o;
  char *host;
  char *channel;
  perfc_redis_message_fn fn;
  void *user_data;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* ready changes, stop requested */
  int ready;
  int stop;
  /* Cluster mode: a cluster pool for the slot map; the subscription is
   * sharded (SSUBSCRIBE) on the master of the channel's slot. */
  perfc_redis_pool *cp;
  char node_host[256];
  perfc__redis_sentinel *sentinel; /* NULL: one server at host:port */
  perfc__redis_creds creds; /* o.username, o.password, ..., copied */
};

/* How often the reading loop wakes to look at the stop flag. */
#define SUB_POLL_MS 50
/* A subscribed connection to a server that stopped answering (a frozen
 * process, a dropped network path) shows no error: it is only quiet. The
 * subscriber PINGs every SUB_HEARTBEAT_MS and gives the connection up when
 * a PING is unanswered after twice the command timeout, so receivers that
 * trust their caches only while subscribed learn within
 * SUB_HEARTBEAT_MS + 2 * command_timeout_ms (500 ms by default). */
#define SUB_HEARTBEAT_MS 100

static int sub_stopping(perfc_redis_subscriber *s) {
  pthread_mutex_lock(&s->mu);
  int st = s->stop;
  pthread_mutex_unlock(&s->mu);
  return st;
}

static void sub_set_ready(perfc_redis_subscriber *s, int ready) {
  pthread_mutex_lock(&s->mu);
  s->ready = ready;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

/* Sleeps `ms` unless asked to stop first. Returns nonzero when stopping. */
static int sub_sleep(perfc_redis_subscriber *s, uint32_t ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)ms * 1000000ull;
  ts.tv_sec += (time_t)(ns / 1000000000ull);
  ts.tv_nsec = (long)(ns % 1000000000ull);
  pthread_mutex_lock(&s->mu);
  while (!s->stop)
    if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
      break;
  int st = s->stop;
  pthread_mutex_unlock(&s->mu);
  return st;
}

static void sub_handle(perfc_redis_subscriber *s, redisReply *r) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 ||
      r->element[0]->type != REDIS_REPLY_STRING)
    return;
  const char *kind = r->element[0]->str;
  /* Sharded pub/sub says ssubscribe/smessage; the rest is the same. */
  if (s->cp && kind[0] == 's')
    kind++;
  const char *ch = r->element[1]->type == REDIS_REPLY_STRING
                       ? r->element[1]->str
                       : s->channel;
  if (strcmp(kind, "subscribe") == 0) {
    perfc_slice none = {(const uint8_t *)"", 0};
    /* The callback first: a waiter released by "ready" may rely on what
     * the receiver does on this event (a cache starts trusting L1). */
    s->fn(PERFC_REDIS_SUB_SUBSCRIBED, ch, none, s->user_data);
    sub_set_ready(s, 1);
  } else if (strcmp(kind, "message") == 0 &&
             r->element[2]->type == REDIS_REPLY_STRING) {
    perfc_slice m = {(const uint8_t *)r->element[2]->str, r->element[2]->len};
    s->fn(PERFC_REDIS_SUB_MESSAGE, ch, m, s->user_data);
  }
}

/* One connection's life: connect, SUBSCRIBE, read until error or stop.
 * Returns nonzero if it ever got subscribed (resets the backoff). */
static int sub_session(perfc_redis_subscriber *s) {
  char err[512];
  uint64_t epoch = 0;
  if (s->cp) {
    /* The master of the channel's slot, from a fresh map: this runs after
     * every lost subscription (failover, slot moved, MOVED answer). */
    perfc__rc *rc = perfc__redis_pool_cluster(s->cp);
    if (perfc__redis_cluster_refresh(rc) != 0)
      perfc_log(PERFC_LOG_DEBUG, "redis subscriber %s: %s", s->channel,
                perfc_last_error());
    int idx = perfc__rc_route(
        rc, perfc__rc_slot(s->channel, strlen(s->channel)), 0);
    snprintf(s->node_host, sizeof s->node_host, "%s", perfc__rc_host(rc, idx));
    s->o.host = s->node_host;
    s->o.port = perfc__rc_port(rc, idx);
  }
  int crc;
  redisContext *ctx =
      connect_ctx(s->sentinel, &s->o, &epoch, err, sizeof err, &crc);
  if (!ctx) {
    /* A refused AUTH is logged where operators look; the retries are
     * spaced by the subscriber's backoff. */
    perfc_log(crc == PERFC_ECONFIG ? PERFC_LOG_WARN : PERFC_LOG_DEBUG,
              "redis subscriber %s: cannot connect to %s:%d: %s", s->channel,
              s->o.host, s->o.port, err);
    return 0;
  }
  int subscribed = 0;
  const char *argv[] = {s->cp ? "SSUBSCRIBE" : "SUBSCRIBE", s->channel};
  size_t len[] = {s->cp ? 10u : 9u, strlen(s->channel)};
  int done = 0;
  if (redisAppendCommandArgv(ctx, 2, argv, len) != REDIS_OK)
    goto out;
  while (!done) {
    if (redisBufferWrite(ctx, &done) != REDIS_OK)
      goto out;
  }
  uint64_t ping_sent = 0, next_ping = now_ms() + SUB_HEARTBEAT_MS;
  uint64_t ping_limit = 2 * (uint64_t)s->o.command_timeout_ms;
  while (!sub_stopping(s)) {
    void *reply = NULL;
    /* Sentinel mode: the master changed; subscribe on the new one. */
    if (s->sentinel && epoch != perfc__redis_sentinel_epoch(s->sentinel))
      goto out;
    if (redisGetReplyFromReader(ctx, &reply) != REDIS_OK)
      goto out;
    if (reply) {
      redisReply *r = reply;
      if (r->type == REDIS_REPLY_ERROR ||
          (s->cp && r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
           r->element[0]->type == REDIS_REPLY_STRING &&
           strcmp(r->element[0]->str, "sunsubscribe") == 0)) {
        /* Cluster: MOVED (the map was stale) or the node gave the slot
         * away (resharded, or it became a replica in a failover) and
         * dropped the subscription: subscribe again where it lives now. */
        perfc_log(PERFC_LOG_DEBUG, "redis subscriber %s: %s on %s:%d, "
                  "subscribing again",
                  s->channel,
                  r->type == REDIS_REPLY_ERROR ? r->str : "sunsubscribe",
                  s->o.host, s->o.port);
        freeReplyObject(r);
        goto out;
      }
      if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
          r->element[0]->type == REDIS_REPLY_STRING) {
        const char *k0 = r->element[0]->str;
        if (s->cp && k0[0] == 's')
          k0++;
        if (strcmp(k0, "subscribe") == 0)
          subscribed = 1;
        else if (strcmp(k0, "pong") == 0)
          ping_sent = 0;
      }
      sub_handle(s, r);
      freeReplyObject(r);
      continue;
    }
    uint64_t now = now_ms();
    if (ping_sent && now - ping_sent > ping_limit) {
      perfc_log(PERFC_LOG_WARN,
                "redis subscriber %s: no answer to PING in %llu ms, "
                "reconnecting",
                s->channel, (unsigned long long)(now - ping_sent));
      goto out;
    }
    if (subscribed && !ping_sent && now >= next_ping) {
      const char *ping[] = {"PING"};
      size_t ping_len[] = {4};
      if (redisAppendCommandArgv(ctx, 1, ping, ping_len) != REDIS_OK)
        goto out;
      done = 0;
      while (!done)
        if (redisBufferWrite(ctx, &done) != REDIS_OK)
          goto out;
      ping_sent = now;
      next_ping = now + SUB_HEARTBEAT_MS;
    }
    /* Poll rather than block in read: a socket read timeout would mark the
     * hiredis context as failed, and a blocking read could not notice the
     * stop flag. */
    struct pollfd pfd = {ctx->fd, POLLIN, 0};
    int pr = poll(&pfd, 1, SUB_POLL_MS);
    if (pr < 0 && errno != EINTR)
      goto out;
    if (pr > 0 && redisBufferRead(ctx) != REDIS_OK)
      goto out;
  }
out:
  if (ctx->err && !sub_stopping(s))
    perfc_log(PERFC_LOG_DEBUG, "redis subscriber %s: connection lost: %s",
              s->channel, ctx->errstr);
  sub_set_ready(s, 0);
  if (subscribed && !sub_stopping(s)) {
    perfc_slice none = {(const uint8_t *)"", 0};
    s->fn(PERFC_REDIS_SUB_UNSUBSCRIBED, s->channel, none, s->user_data);
  }
  if (s->sentinel && ctx->err)
    perfc__redis_sentinel_suspect(s->sentinel, epoch);
  ctx_free(s->sentinel, ctx);
  return subscribed;
}

static void *sub_main(void *arg) {
  perfc_redis_subscriber *s = arg;
  uint32_t backoff = 0;
  int warned = 0;
  while (!sub_stopping(s)) {
    if (sub_session(s)) {
      backoff = 0;
      warned = 0;
    }
    if (sub_stopping(s))
      break;
    if (!warned) {
      perfc_log(PERFC_LOG_WARN,
                "redis subscriber %s: disconnected from %s:%d, retrying",
                s->channel, s->o.host, s->o.port);
      warned = 1;
    }
    backoff = backoff == 0                        ? s->o.backoff_min_ms
              : backoff < s->o.backoff_max_ms / 2 ? backoff * 2
                                                  : s->o.backoff_max_ms;
    if (sub_sleep(s, backoff))
      break;
  }
  return NULL;
}

int perfc_redis_subscriber_new(perfc_redis_subscriber **out,
                               const perfc_redis_opts *opts,
                               const char *channel, perfc_redis_message_fn fn,
                               void *user_data) {
  if (!out || !channel || !*channel || !fn)
    return perfc__fail(PERFC_EINVAL, "redis subscriber: need out, a channel "
                                     "and a callback");
  perfc_redis_opts o;
  int rc = resolve_opts(&o, opts);
  if (rc != 0)
    return rc;
  perfc_redis_subscriber *s = calloc(1, sizeof(*s));
  if (!s)
    return perfc__fail(PERFC_ENOMEM, "redis subscriber: out of memory");
  s->o = o;
  s->host = strdup(s->o.host);
  s->channel = strdup(channel);
  if (o.n_cluster_nodes) {
    /* One connection per node is plenty for the map reads. */
    perfc_redis_opts co = o;
    co.pool_size = 1;
    co.cluster_read_replicas = 0;
    if ((rc = perfc_redis_pool_new(&s->cp, &co)) != 0) {
      free(s->host);
      free(s->channel);
      free(s);
      return rc;
    }
    s->o.cluster_nodes = NULL;
    s->o.n_cluster_nodes = 0;
  }
  s->o.cluster_read_replicas = 0;
  if (!s->host || !s->channel ||
      perfc__redis_creds_copy(&s->creds, &s->o) != 0) {
    perfc_redis_pool_free(s->cp);
    free(s->host);
    free(s->channel);
    free(s);
    return PERFC_ENOMEM;
  }
  s->o.host = s->host;
  s->o.name = NULL;
  s->o.registry = NULL;
  if (o.n_sentinels &&
      (rc = perfc__redis_sentinel_get(&s->sentinel, &o)) != 0) {
    perfc__redis_creds_free(&s->creds);
    free(s->host);
    free(s->channel);
    free(s);
    return rc;
  }
  s->o.sentinels = NULL; /* the caller's; the shared object has copies */
  s->o.master_name = NULL;
  s->fn = fn;
  s->user_data = user_data;
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cv, &ca);
  pthread_condattr_destroy(&ca);
  /* The thread is ours: it starts with SIGPIPE blocked for good (see
   * sigpipe_block), and SIGINT/SIGTERM too, as every perfc thread
   * (core/thread_internal.h), inherited from the mask set around its
   * creation. */
  sigset_t block, old;
  perfc__stop_signals(&block);
  sigaddset(&block, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &block, &old);
  int prc = pthread_create(&s->thread, NULL, sub_main, s);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (prc != 0) {
    perfc__redis_sentinel_put(s->sentinel);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    perfc_redis_pool_free(s->cp);
    perfc__redis_creds_free(&s->creds);
    free(s->host);
    free(s->channel);
    free(s);
    return PERFC_ETHREAD;
  }
  *out = s;
  return 0;
}

int perfc_redis_subscriber_wait_ready(perfc_redis_subscriber *s,
                                      int64_t timeout_ms) {
  if (!s || timeout_ms < 0)
    return perfc__fail(PERFC_EINVAL,
                       "redis subscriber: NULL or negative timeout_ms");
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)timeout_ms * 1000000ull;
  ts.tv_sec += (time_t)(ns / 1000000000ull);
  ts.tv_nsec = (long)(ns % 1000000000ull);
  pthread_mutex_lock(&s->mu);
  while (!s->ready)
    if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
      break;
  int ready = s->ready;
  pthread_mutex_unlock(&s->mu);
  return ready ? 0
               : perfc__fail(PERFC_ETIMEDOUT,
                             "redis subscriber %s: not subscribed within %lld "
                             "ms",
                             s->channel, (long long)timeout_ms);
}

void perfc_redis_subscriber_free(perfc_redis_subscriber *s) {
  if (!s)
    return;
  pthread_mutex_lock(&s->mu);
  s->stop = 1;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
  pthread_join(s->thread, NULL);
  perfc__redis_sentinel_put(s->sentinel);
  pthread_cond_destroy(&s->cv);
  pthread_mutex_destroy(&s->mu);
  perfc_redis_pool_free(s->cp);
  perfc__redis_creds_free(&s->creds);
  free(s->host);
  free(s->channel);
  free(s);
}
