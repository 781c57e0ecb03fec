/*
 * test_redis_sentinel.c — Redis Sentinel (data/redis_sentinel.c through the
 * pool, the subscriber, the cache and the async client), on real servers:
 * a master, two replicas and three sentinels (redis-server --sentinel) on
 * free loopback ports, started here and killed at the end.
 *
 * The failover test kills the master (SIGKILL) under a bounded writer and
 * checks: calls fail fast while there is no master, recover within a
 * bound of the switch, no write acknowledged as replicated (SET then
 * WAIT 1 said 1) is missing from the new master, and the cache and the
 * async client work against the new master. Writes acknowledged by the
 * master alone (WAIT said 0) may be lost by Redis's asynchronous
 * replication; they are counted and printed, not asserted
 * (docs/data-layer.md, "Redis Sentinel"). The same failover runs again
 * with passwords on every server and sentinel (requirepass, masterauth,
 * auth-pass), a pool writer, an async writer and a subscriber: all reach
 * the new master with AUTH, never see NOAUTH, and every write they sent after
 * the kill and saw acknowledged is on the new master.
 */
#include <criterion/criterion.h>
#include <hiredis/hiredis.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <poll.h>
#include <string.h>
#include <sys/stat.h>

#include "data/redis_internal.h"
#include "data/redis_sentinel.h"
#include "perfc/cache.h"
#include "perfc/config.h"
#include "perfc/config_data.h"
#include "perfc/log.h"
#include "perfc/redis.h"
#include "perfc/redis_async.h"
/* Its port picking, PING and sleep only: the servers here take other
 * arguments (replicaof, sentinel configs). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "redis_server.h"
#pragma GCC diagnostic pop

#define MASTER "mymaster"

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A process on loopback: a redis-server or a sentinel. */
typedef struct proc {
  pid_t pid;
  int port;
} proc;

static char g_dir[64];
/* The servers' and the sentinels' passwords (the failover-with-passwords
 * test sets them before start_all(); NULL: no requirepass). */
static const char *g_pass, *g_spass;

typedef struct set_up {
  proc master, replica[2], sentinel[3];
  char addr[3][32];
  const char *addrs[3];
} set_up;

static set_up g;

static redisReply *cmd(int port, const char *fmt, ...);

/* 1 when the server on `port` is process `pid` (INFO's process_id). */
static int is_pid(int port, pid_t pid) {
  redisReply *r = cmd(port, "INFO server");
  char want[32];
  snprintf(want, sizeof want, "process_id:%d\r", (int)pid);
  int ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, want);
  if (r)
    freeReplyObject(r);
  return ok;
}

static int spawn(proc *p, char *const argv[]) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    char log[128];
    snprintf(log, sizeof log, "%s/%d.log", g_dir, p->port);
    int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0)
      dup2(devnull, 0);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  p->pid = pid;
  for (int i = 0; i < 250; i++) {
    /* Ours, not another test's server that had the port first. */
    if (tr_ping(p->port) && is_pid(p->port, pid))
      return 0;
    if (waitpid(pid, NULL, WNOHANG) == pid) {
      p->pid = 0;
      return -1;
    }
    tr_sleep_ms(20);
  }
  return -1;
}

static void proc_kill(proc *p) {
  if (p->pid > 0) {
    kill(p->pid, SIGKILL);
    waitpid(p->pid, NULL, 0);
    p->pid = 0;
  }
}

static int start_redis(proc *p, int replicaof) {
  char port[16], dir[96], master[16];
  for (int attempt = 0; attempt < 5; attempt++) {
    p->port = tr_free_port();
    snprintf(port, sizeof port, "%d", p->port);
    snprintf(dir, sizeof dir, "%s/r%d", g_dir, p->port);
    mkdir(dir, 0700);
    snprintf(master, sizeof master, "%d", replicaof);
    char *argv[] = {"redis-server",
                    "--port",
                    port,
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    dir,
                    "--protected-mode",
                    "no",
                    "--repl-diskless-sync",
                    "yes",
                    "--repl-diskless-sync-delay",
                    "0",
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL,
                    NULL};
    int argc = 17;
    if (replicaof) {
      argv[argc++] = "--replicaof";
      argv[argc++] = "127.0.0.1";
      argv[argc++] = master;
    }
    if (g_pass) { /* clients and the replicas' link to their master */
      argv[argc++] = "--requirepass";
      argv[argc++] = (char *)g_pass;
      argv[argc++] = "--masterauth";
      argv[argc++] = (char *)g_pass;
    }
    if (spawn(p, argv) == 0)
      return 0;
    proc_kill(p);
  }
  return -1;
}

static int start_sentinel(proc *p, int master_port) {
  for (int attempt = 0; attempt < 5; attempt++) {
    p->port = tr_free_port();
    char conf[128], port[16];
    snprintf(conf, sizeof conf, "%s/s%d.conf", g_dir, p->port);
    snprintf(port, sizeof port, "%d", p->port);
    FILE *f = fopen(conf, "w");
    if (!f)
      return -1;
    fprintf(f,
            "port %d\nbind 127.0.0.1\ndir %s\nprotected-mode no\n"
            "sentinel monitor " MASTER " 127.0.0.1 %d 2\n"
            "sentinel down-after-milliseconds " MASTER " 1000\n"
            "sentinel failover-timeout " MASTER " 4000\n"
            "sentinel parallel-syncs " MASTER " 2\n",
            p->port, g_dir, master_port);
    /* Its own password (also what it sends to the other sentinels) and
     * the servers'. */
    if (g_spass)
      fprintf(f, "requirepass \"%s\"\n", g_spass);
    if (g_pass)
      fprintf(f, "sentinel auth-pass " MASTER " \"%s\"\n", g_pass);
    fclose(f);
    char *argv[] = {"redis-server", conf, "--sentinel", NULL};
    if (spawn(p, argv) == 0)
      return 0;
    proc_kill(p);
  }
  return -1;
}

/* The password of the process on `port` (a sentinel's or a server's). */
static const char *pass_for(int port) {
  for (int i = 0; i < 3; i++)
    if (g.sentinel[i].port == port)
      return g_spass;
  return g_pass;
}

/* A connection to `port`, authenticated when it has a password. */
static redisContext *conn(int port) {
  struct timeval tv = {1, 0};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
  if (!c || c->err) {
    if (c)
      redisFree(c);
    return NULL;
  }
  redisSetTimeout(c, tv);
  const char *pw = pass_for(port);
  if (pw) {
    redisReply *r = redisCommand(c, "AUTH %s", pw);
    int ok = r && r->type == REDIS_REPLY_STATUS;
    if (r)
      freeReplyObject(r);
    if (!ok) {
      redisFree(c);
      return NULL;
    }
  }
  return c;
}

static redisReply *cmd(int port, const char *fmt, ...) {
  redisContext *c = conn(port);
  if (!c)
    return NULL;
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  redisFree(c);
  return r;
}

/* The value of `field` in a flat [k, v, k, v...] reply, or -1. */
static long field(const redisReply *r, const char *name) {
  if (!r || r->type != REDIS_REPLY_ARRAY)
    return -1;
  for (size_t i = 0; i + 1 < r->elements; i += 2)
    if (r->element[i]->type == REDIS_REPLY_STRING &&
        strcmp(r->element[i]->str, name) == 0 &&
        r->element[i + 1]->type == REDIS_REPLY_STRING)
      return atol(r->element[i + 1]->str);
  return -1;
}

/* The port the sentinel at `sport` names as master, or -1. */
static int sentinel_master_port(int sport) {
  redisReply *r = cmd(sport, "SENTINEL get-master-addr-by-name %s", MASTER);
  int port = -1;
  if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2)
    port = atoi(r->element[1]->str);
  if (r)
    freeReplyObject(r);
  return port;
}

static void teardown(void) {
  g_pass = g_spass = NULL;
  for (int i = 0; i < 3; i++)
    proc_kill(&g.sentinel[i]);
  for (int i = 0; i < 2; i++)
    proc_kill(&g.replica[i]);
  proc_kill(&g.master);
  if (g_dir[0]) {
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf '%s'", g_dir);
    if (system(rm) != 0)
      fprintf(stderr, "cannot remove %s\n", g_dir);
    g_dir[0] = 0;
  }
}

static void make_dir(void) {
  snprintf(g_dir, sizeof g_dir, "/tmp/perfc-sentinel-XXXXXX");
  cr_assert_not_null(mkdtemp(g_dir));
}

/* Master, two replicas in sync, three sentinels that see them all and
 * each other (a failover needs both). */
static void start_all(void) {
  memset(&g, 0, sizeof g);
  make_dir();
  cr_assert_eq(start_redis(&g.master, 0), 0, "master did not start");
  for (int i = 0; i < 2; i++)
    cr_assert_eq(start_redis(&g.replica[i], g.master.port), 0,
                 "replica did not start");
  int64_t end = mono_ms() + 15000;
  for (;;) {
    redisReply *r = cmd(g.master.port, "INFO replication");
    int ok = r && r->type == REDIS_REPLY_STRING &&
             strstr(r->str, "connected_slaves:2") != NULL;
    if (r)
      freeReplyObject(r);
    for (int i = 0; ok && i < 2; i++) {
      r = cmd(g.replica[i].port, "INFO replication");
      ok = r && r->type == REDIS_REPLY_STRING &&
           strstr(r->str, "master_link_status:up") != NULL;
      if (r)
        freeReplyObject(r);
    }
    if (ok)
      break;
    cr_assert_lt(mono_ms(), end, "replicas did not sync within 15 s");
    tr_sleep_ms(50);
  }
  for (int i = 0; i < 3; i++) {
    cr_assert_eq(start_sentinel(&g.sentinel[i], g.master.port), 0,
                 "sentinel did not start");
    snprintf(g.addr[i], sizeof g.addr[i], "127.0.0.1:%d", g.sentinel[i].port);
    g.addrs[i] = g.addr[i];
  }
  end = mono_ms() + 20000;
  for (int i = 0; i < 3;) {
    redisReply *r = cmd(g.sentinel[i].port, "SENTINEL master %s", MASTER);
    long slaves = field(r, "num-slaves"),
         others = field(r, "num-other-sentinels");
    if (r)
      freeReplyObject(r);
    if (slaves == 2 && others == 2) {
      i++;
      continue;
    }
    cr_assert_lt(mono_ms(), end,
                 "sentinel %d sees %ld replicas and %ld other sentinels "
                 "after 20 s",
                 i, slaves, others);
    tr_sleep_ms(100);
  }
}

static void sentinel_opts(perfc_redis_opts *o) {
  perfc_redis_opts_init(o);
  o->sentinels = g.addrs;
  o->n_sentinels = 3;
  o->master_name = MASTER;
  o->pool_size = 4;
}

/* ---- the writer ---- */

#define MAX_WRITES 20000

typedef struct writer {
  perfc_redis_pool *pool, *wpool;
  atomic_int stop;
  /* 2: acknowledged as replicated (wait_replicas 1); 1: acknowledged by
   * the master (the plain pool); 0: failed. */
  unsigned char acked[MAX_WRITES];
  int64_t started_ms[MAX_WRITES]; /* when each write was sent */
  atomic_int n, n_waited, n_unwaited, n_failed;
  /* Failures that said NOAUTH or "AUTH failed" (a connection that skipped
   * or botched AUTH). */
  atomic_int n_auth_failed;
  atomic_llong first_fail_ms, recovered_ms, max_fail_call_ms, kill_ms;
} writer;

/* Even writes through the pool with wait_replicas 1 (acknowledged means
 * a replica has it), odd ones through the plain pool (acknowledged by the
 * master alone). */
static void *writer_main(void *arg) {
  writer *w = arg;
  int64_t end = mono_ms() + 60000;
  for (int i = 0; i < MAX_WRITES && !w->stop && mono_ms() < end; i++) {
    char key[32], val[32];
    snprintf(key, sizeof key, "w:%d", i);
    int vl = snprintf(val, sizeof val, "v%d", i);
    int replicated = i % 2 == 0;
    int64_t t0 = mono_ms();
    int rc =
        perfc_redis_set(replicated ? w->wpool : w->pool, key,
                        (perfc_slice){(const uint8_t *)val, (size_t)vl}, 0);
    int64_t t1 = mono_ms();
    int ok = rc == 0;
    w->acked[i] = ok ? (replicated ? 2 : 1) : 0;
    w->started_ms[i] = t0;
    if (!ok && (strstr(perfc_last_error(), "NOAUTH") ||
                strstr(perfc_last_error(), "AUTH failed")))
      atomic_fetch_add(&w->n_auth_failed, 1);
    atomic_store(&w->n, i + 1);
    long long killed = atomic_load(&w->kill_ms);
    if (ok && replicated)
      atomic_fetch_add(&w->n_waited, 1);
    else if (ok)
      atomic_fetch_add(&w->n_unwaited, 1);
    if (!ok) {
      atomic_fetch_add(&w->n_failed, 1);
      if (killed && !w->first_fail_ms)
        atomic_store(&w->first_fail_ms, t1);
      if (t1 - t0 > w->max_fail_call_ms)
        atomic_store(&w->max_fail_call_ms, t1 - t0);
      tr_sleep_ms(5);
    } else if (killed && w->first_fail_ms && !w->recovered_ms) {
      atomic_store(&w->recovered_ms, t1);
    }
    tr_sleep_ms(1);
  }
  return NULL;
}

/* ---- the cache's loader ---- */

static atomic_int loads;

static int loader(const char *key, uint8_t **out, size_t *out_len, void *ud) {
  (void)ud;
  int n = atomic_fetch_add(&loads, 1) + 1;
  char buf[64];
  int len = snprintf(buf, sizeof buf, "%s#%d", key, n);
  *out = malloc((size_t)len);
  memcpy(*out, buf, (size_t)len);
  *out_len = (size_t)len;
  return 0;
}

/* ---- async GET from this thread ---- */

typedef struct aget {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, rc;
  char value[64];
} aget;

static void aget_cb(int rc, const uint8_t *v, size_t len, void *ud) {
  aget *a = ud;
  pthread_mutex_lock(&a->mu);
  a->rc = rc;
  if (rc == 0)
    snprintf(a->value, sizeof a->value, "%.*s", (int)len, (const char *)v);
  a->done = 1;
  pthread_cond_signal(&a->cv);
  pthread_mutex_unlock(&a->mu);
}

/* One GET through the async client; the callback's rc (or the refusal). */
static int async_get(perfc_redis_async *ra, const char *key, char *out,
                     size_t outlen) {
  aget a = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};
  int rc = perfc_redis_async_get(ra, key, aget_cb, &a);
  if (rc != 0)
    return rc;
  pthread_mutex_lock(&a.mu);
  while (!a.done)
    pthread_cond_wait(&a.cv, &a.mu);
  pthread_mutex_unlock(&a.mu);
  if (a.rc == 0 && outlen > 0) {
    /* Cut to fit (memcpy: -Wformat-truncation at -O3 sees a 64-byte value
     * and small buffers; the callers' values are short). */
    size_t n = strnlen(a.value, sizeof a.value);
    if (n >= outlen)
      n = outlen - 1;
    memcpy(out, a.value, n);
    out[n] = '\0';
  }
  return a.rc;
}

Test(redis_sentinel, master_killed_under_load, .fini = teardown,
     .timeout = 120) {
  start_all();
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_opts o;
  sentinel_opts(&o);
  o.registry = reg;
  perfc_redis_pool *pool;
  cr_assert_eq(perfc_redis_pool_new(&pool, &o), 0, "%s", perfc_last_error());
  cr_assert_eq(perfc_redis_ping(pool), 0, "%s", perfc_last_error());
  /* The same sentinels and master: a second pool that waits for one
   * replica (it shares the first one's watcher). */
  o.wait_replicas = 1;
  o.name = "replicated";
  perfc_redis_pool *wpool;
  cr_assert_eq(perfc_redis_pool_new(&wpool, &o), 0, "%s", perfc_last_error());

  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.redis = wpool;
  co.registry = reg;
  co.name = "sentinel";
  perfc_cache *cache;
  cr_assert_eq(perfc_cache_new(&cache, &co), 0, "%s", perfc_last_error());
  cr_assert_eq(perfc_cache_wait_subscribed(cache, 5000), 0);

  perfc_redis_async_opts ao;
  perfc_redis_async_opts_init(&ao);
  ao.sentinels = g.addrs;
  ao.n_sentinels = 3;
  ao.master_name = MASTER;
  ao.registry = reg;
  ao.name = "sentinel-async";
  perfc_redis_async *ra;
  cr_assert_eq(perfc_redis_async_new(&ra, &ao), 0, "%s", perfc_last_error());

  writer *w = calloc(1, sizeof *w);
  w->pool = pool;
  w->wpool = wpool;
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, writer_main, w), 0);
  int64_t end = mono_ms() + 20000;
  while (atomic_load(&w->n_waited) < 200 && mono_ms() < end)
    tr_sleep_ms(10);
  cr_assert_geq(atomic_load(&w->n_waited), 200,
                "200 replicated writes before the kill (%d failed)",
                atomic_load(&w->n_failed));
  char before[64];
  cr_assert_eq(async_get(ra, "w:10", before, sizeof before), 0, "%s",
               perfc_last_error());
  cr_assert_str_eq(before, "v10");

  int old_port = g.master.port;
  atomic_store(&w->kill_ms, mono_ms());
  proc_kill(&g.master);
  int64_t killed = mono_ms();

  /* The sentinels promote a replica: down-after 1 s, then the vote. */
  int new_port = -1;
  end = killed + 30000;
  while (mono_ms() < end) {
    int p = sentinel_master_port(g.sentinel[0].port);
    if (p > 0 && p != old_port) {
      new_port = p;
      break;
    }
    tr_sleep_ms(20);
  }
  int64_t switched = mono_ms();
  cr_assert_neq(new_port, -1, "no failover within 30 s of the kill");
  cr_assert(new_port == g.replica[0].port || new_port == g.replica[1].port);

  /* The writer recovers, and keeps writing for 200 more replicated
   * writes (the other replica must resync with the new master first). */
  int at_switch = atomic_load(&w->n_waited);
  end = switched + 20000;
  while (atomic_load(&w->n_waited) < at_switch + 200 && mono_ms() < end)
    tr_sleep_ms(10);
  atomic_store(&w->stop, 1);
  pthread_join(th, NULL);
  cr_assert_geq(atomic_load(&w->n_waited), at_switch + 200,
                "200 replicated writes after the switch (%d failed)",
                atomic_load(&w->n_failed));
  long long first_fail = atomic_load(&w->first_fail_ms),
            recovered = atomic_load(&w->recovered_ms);
  cr_assert_gt(first_fail, 0, "some write failed while there was no master");
  cr_assert_gt(recovered, 0);
  /* Calls fail fast while the master is gone: no call waits for the
   * failover (each is bounded by connect/command timeouts and the
   * sentinels' answers: refused connections on loopback). */
  cr_assert_lt(atomic_load(&w->max_fail_call_ms), 1000,
               "a failing call took %lld ms",
               (long long)atomic_load(&w->max_fail_call_ms));
  /* Recovery: within 2 s of the moment this test saw the sentinels name
   * the new master (polled every 20 ms; the client may see it first). */
  cr_assert_lt(recovered, switched + 2000,
               "writes recovered %lld ms after the switch",
               recovered - switched);

  /* Nothing acknowledged as replicated is lost. */
  int n = atomic_load(&w->n), lost_waited = 0, lost_unwaited = 0, waited = 0;
  struct timeval tv = {2, 0};
  redisContext *nm = redisConnectWithTimeout("127.0.0.1", new_port, tv);
  cr_assert(nm && !nm->err);
  for (int i = 0; i < n; i++) {
    if (!w->acked[i])
      continue;
    redisReply *r = redisCommand(nm, "GET w:%d", i);
    cr_assert_not_null(r);
    char want[32];
    snprintf(want, sizeof want, "v%d", i);
    int have = r->type == REDIS_REPLY_STRING && strcmp(r->str, want) == 0;
    freeReplyObject(r);
    if (w->acked[i] == 2) {
      waited++;
      lost_waited += !have;
    } else {
      lost_unwaited += !have;
    }
  }
  redisFree(nm);
  fprintf(stderr,
          "sentinel failover: %d writes, %d acknowledged as replicated "
          "(wait_replicas 1), %d acknowledged by the master only, %d "
          "failed; lost: %d replicated, %d master-only; first failure %lld "
          "ms after the kill, switch seen %lld ms after it, writes "
          "recovered %lld ms after the switch, slowest failing call %lld "
          "ms\n",
          n, waited, atomic_load(&w->n_unwaited), atomic_load(&w->n_failed),
          lost_waited, lost_unwaited, first_fail - w->kill_ms,
          (long long)(switched - killed), recovered - switched,
          (long long)atomic_load(&w->max_fail_call_ms));
  cr_assert_eq(lost_waited, 0, "%d replicated writes lost", lost_waited);
  cr_assert_geq(waited, 400);

  /* The async client follows: a key written after the switch. */
  char key[32], want[32], got[64] = "";
  int last = -1;
  for (int i = n - 1; i >= 0 && last < 0; i--)
    if (w->acked[i] == 2)
      last = i;
  snprintf(key, sizeof key, "w:%d", last);
  snprintf(want, sizeof want, "v%d", last);
  int arc = -1;
  end = mono_ms() + 3000;
  while (mono_ms() < end && (arc = async_get(ra, key, got, sizeof got)) != 0)
    tr_sleep_ms(20);
  cr_assert_eq(arc, 0, "async GET after the switch: %s", perfc_last_error());
  cr_assert_str_eq(got, want);

  /* The cache: subscribed again (on the new master), fills and
   * invalidates there. */
  cr_assert_eq(perfc_cache_wait_subscribed(cache, 5000), 0,
               "the cache's subscriber did not come back");
  uint8_t *v;
  size_t vl;
  atomic_store(&loads, 0);
  cr_assert_eq(perfc_cache_get_or_load(cache, "user:1", loader, NULL, &v, &vl),
               0);
  cr_assert_eq(vl, strlen("user:1#1"));
  cr_assert_eq(memcmp(v, "user:1#1", vl), 0);
  free(v);
  cr_assert_eq(perfc_cache_get_or_load(cache, "user:1", loader, NULL, &v, &vl),
               0);
  cr_assert_eq(memcmp(v, "user:1#1", vl), 0);
  free(v);
  cr_assert_eq(atomic_load(&loads), 1, "the second read was a hit");
  const char *keys[] = {"user:1"};
  cr_assert_eq(perfc_cache_invalidate(cache, keys, 1), 0);
  cr_assert_eq(perfc_cache_pending_invalidations(cache), 0,
               "the DEL reached the new master at once");
  cr_assert_eq(perfc_cache_get_or_load(cache, "user:1", loader, NULL, &v, &vl),
               0);
  cr_assert_eq(memcmp(v, "user:1#2", vl), 0,
               "no stale read after the "
               "invalidation");
  free(v);
  /* The fill went to the new master (L2). */
  redisReply *keysr = cmd(new_port, "DBSIZE");
  cr_assert(keysr && keysr->type == REDIS_REPLY_INTEGER && keysr->integer > 0);
  freeReplyObject(keysr);

  perfc_redis_async_free(ra);
  perfc_cache_free(cache);
  perfc_redis_pool_free(wpool);
  perfc_redis_pool_free(pool);
  perfc_metrics_registry_free(reg);
  free(w);
}

/* ---- failover with passwords everywhere ---- */

#define FO_PASS "fo-m4ster-pw"
#define FO_SPASS "fo-s3ntinel-pw"

/* The log, to show no AUTH was refused or skipped, and no password. */
static pthread_mutex_t fo_log_mu = PTHREAD_MUTEX_INITIALIZER;
static char fo_log[32768];
static size_t fo_log_len;

static void fo_capture(perfc_log_level level, const char *msg, void *ud) {
  (void)level;
  (void)ud;
  pthread_mutex_lock(&fo_log_mu);
  size_t n = strlen(msg);
  if (fo_log_len + n + 2 < sizeof fo_log) {
    memcpy(fo_log + fo_log_len, msg, n);
    fo_log_len += n;
    fo_log[fo_log_len++] = '\n';
    fo_log[fo_log_len] = 0;
  }
  pthread_mutex_unlock(&fo_log_mu);
}

/* The pub/sub subscriber's events. */
static atomic_int fo_subscribed, fo_messages;

static void fo_on_sub(perfc_redis_sub_event ev, const char *ch, perfc_slice m,
                      void *ud) {
  (void)ch;
  (void)ud;
  if (ev == PERFC_REDIS_SUB_SUBSCRIBED)
    atomic_fetch_add(&fo_subscribed, 1);
  else if (ev == PERFC_REDIS_SUB_MESSAGE && m.len == 5 &&
           memcmp(m.base, "after", 5) == 0)
    atomic_fetch_add(&fo_messages, 1);
}

static void fo_teardown(void) {
  perfc_log_set_sink(NULL, NULL);
  teardown();
}

/* One async SET, waited for with a bound (the callback may run later:
 * the op is then left to it and counted as a hang). */
typedef struct aset {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, rc, noauth, ok;
} aset;

static void aset_cb(int rc, const perfc_redis_reply *r, void *ud) {
  aset *a = ud;
  pthread_mutex_lock(&a->mu);
  a->rc = rc;
  if (rc == 0) {
    a->ok = r->type == PERFC_REDIS_REPLY_STATUS && r->len == 2 &&
            memcmp(r->str, "OK", 2) == 0;
    a->noauth = r->type == PERFC_REDIS_REPLY_ERROR && r->len >= 6 &&
                memcmp(r->str, "NOAUTH", 6) == 0;
  }
  a->done = 1;
  pthread_cond_signal(&a->cv);
  pthread_mutex_unlock(&a->mu);
}

typedef struct awriter {
  perfc_redis_async *ra;
  atomic_int stop;
  unsigned char acked[MAX_WRITES];
  int64_t started_ms[MAX_WRITES];
  atomic_int n, n_ok, n_failed, n_noauth, n_error_replies, n_hung;
  atomic_llong first_fail_ms, recovered_ms, kill_ms;
} awriter;

/* Async SETs of "a:<i>" from this thread (the client's own loop runs
 * them), one at a time, each bounded by 5 s (command timeout 2 s). */
static void *awriter_main(void *arg) {
  awriter *w = arg;
  int64_t end = mono_ms() + 60000;
  for (int i = 0; i < MAX_WRITES && !w->stop && mono_ms() < end; i++) {
    char key[32], val[32];
    snprintf(key, sizeof key, "a:%d", i);
    snprintf(val, sizeof val, "av%d", i);
    const char *argv[] = {"SET", key, val};
    aset *a = calloc(1, sizeof *a);
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    int64_t t0 = mono_ms();
    w->started_ms[i] = t0;
    int rc = perfc_redis_async_command(w->ra, 3, argv, NULL, aset_cb, a);
    int ok = 0, hung = 0;
    if (rc == 0) {
      struct timespec dl;
      clock_gettime(CLOCK_REALTIME, &dl);
      dl.tv_sec += 5;
      pthread_mutex_lock(&a->mu);
      while (!a->done &&
             pthread_cond_timedwait(&a->cv, &a->mu, &dl) != ETIMEDOUT)
        ;
      hung = !a->done;
      ok = a->done && a->rc == 0 && a->ok;
      if (a->done && a->rc == 0 && !a->ok)
        atomic_fetch_add(&w->n_error_replies, 1);
      if (a->noauth)
        atomic_fetch_add(&w->n_noauth, 1);
      pthread_mutex_unlock(&a->mu);
    }
    int64_t t1 = mono_ms();
    if (hung) { /* the callback still owns `a`: stop here */
      atomic_fetch_add(&w->n_hung, 1);
      atomic_store(&w->n, i + 1);
      break;
    }
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
    free(a);
    w->acked[i] = (unsigned char)ok;
    atomic_store(&w->n, i + 1);
    long long killed = atomic_load(&w->kill_ms);
    if (ok) {
      atomic_fetch_add(&w->n_ok, 1);
      if (killed && w->first_fail_ms && !w->recovered_ms)
        atomic_store(&w->recovered_ms, t1);
    } else {
      atomic_fetch_add(&w->n_failed, 1);
      if (killed && !w->first_fail_ms)
        atomic_store(&w->first_fail_ms, t1);
      tr_sleep_ms(5);
    }
    tr_sleep_ms(1);
  }
  return NULL;
}

/* A fresh value of "GET <prefix><i>" on `c`: 1 when it is `want`. */
static int has_value(redisContext *c, const char *prefix, int i,
                     const char *vprefix) {
  redisReply *r = redisCommand(c, "GET %s%d", prefix, i);
  cr_assert_not_null(r, "GET on the new master: %s", c->errstr);
  char want[32];
  snprintf(want, sizeof want, "%s%d", vprefix, i);
  int have = r->type == REDIS_REPLY_STRING && strcmp(r->str, want) == 0;
  freeReplyObject(r);
  return have;
}

/* The master and both replicas with requirepass and masterauth, three
 * sentinels with requirepass of their own and auth-pass for the master.
 * The master is killed (SIGKILL) under a bounded synchronous writer (the
 * pool through the sentinel-named master, plain and wait_replicas 1) and
 * a bounded async writer (perfc_redis_async through the same sentinels),
 * with a pub/sub subscriber made from the pool's options. Both writers
 * reach the new master with AUTH within 2 s of the switch, the
 * subscriber subscribes there again and hears a message; no call
 * ever fails with NOAUTH or "AUTH failed" and nothing in the log says
 * so; no write acknowledged as replicated is lost (master_killed_under_
 * load's rule), and every write sent after the kill that was
 * acknowledged is on the new master (only the new master can have
 * acknowledged it); no async command waits past its bound. */
Test(redis_sentinel, master_killed_under_load_with_passwords,
     .fini = fo_teardown, .timeout = 120) {
  g_pass = FO_PASS;
  g_spass = FO_SPASS;
  start_all();
  /* The servers do want the password (else the test could not fail). */
  struct timeval tv = {1, 0};
  redisContext *plain = redisConnectWithTimeout("127.0.0.1", g.master.port, tv);
  cr_assert(plain && !plain->err);
  redisReply *noauth = redisCommand(plain, "GET x");
  cr_assert(noauth && noauth->type == REDIS_REPLY_ERROR &&
                strncmp(noauth->str, "NOAUTH", 6) == 0,
            "the master must require a password");
  freeReplyObject(noauth);
  redisFree(plain);
  fo_log_len = 0;
  fo_log[0] = 0;
  perfc_log_set_sink(fo_capture, NULL);

  perfc_redis_opts o;
  sentinel_opts(&o);
  o.password = FO_PASS;
  o.sentinel_password = FO_SPASS;
  perfc_redis_pool *pool;
  cr_assert_eq(perfc_redis_pool_new(&pool, &o), 0, "%s", perfc_last_error());
  cr_assert_eq(perfc_redis_ping(pool), 0, "%s", perfc_last_error());
  o.wait_replicas = 1;
  o.name = "replicated";
  perfc_redis_pool *wpool;
  cr_assert_eq(perfc_redis_pool_new(&wpool, &o), 0, "%s", perfc_last_error());
  /* The subscriber (the cache's invalidations use one) with the same
   * options. */
  atomic_store(&fo_subscribed, 0);
  atomic_store(&fo_messages, 0);
  o.wait_replicas = 0;
  perfc_redis_subscriber *sub;
  cr_assert_eq(perfc_redis_subscriber_new(&sub, &o, "fo-chan", fo_on_sub, NULL),
               0, "%s", perfc_last_error());
  cr_assert_eq(perfc_redis_subscriber_wait_ready(sub, 5000), 0, "%s",
               perfc_last_error());

  perfc_redis_async_opts ao;
  perfc_redis_async_opts_init(&ao);
  ao.sentinels = g.addrs;
  ao.n_sentinels = 3;
  ao.master_name = MASTER;
  ao.password = FO_PASS;
  ao.sentinel_password = FO_SPASS;
  ao.command_timeout_ms = 2000;
  ao.backoff_min_ms = 20;
  ao.backoff_max_ms = 200;
  perfc_redis_async *ra;
  cr_assert_eq(perfc_redis_async_new(&ra, &ao), 0, "%s", perfc_last_error());

  writer *w = calloc(1, sizeof *w);
  w->pool = pool;
  w->wpool = wpool;
  awriter *aw = calloc(1, sizeof *aw);
  aw->ra = ra;
  pthread_t th, ath;
  cr_assert_eq(pthread_create(&th, NULL, writer_main, w), 0);
  cr_assert_eq(pthread_create(&ath, NULL, awriter_main, aw), 0);
  int64_t end = mono_ms() + 20000;
  while ((atomic_load(&w->n_waited) < 200 || atomic_load(&aw->n_ok) < 200) &&
         mono_ms() < end)
    tr_sleep_ms(10);
  cr_assert_geq(atomic_load(&w->n_waited), 200,
                "200 replicated writes before the kill (%d failed: %s)",
                atomic_load(&w->n_failed), perfc_last_error());
  cr_assert_geq(atomic_load(&aw->n_ok), 200,
                "200 async writes before the kill (%d failed)",
                atomic_load(&aw->n_failed));

  int old_port = g.master.port;
  atomic_store(&w->kill_ms, mono_ms());
  atomic_store(&aw->kill_ms, mono_ms());
  proc_kill(&g.master);
  int64_t killed = mono_ms(); /* the old master is gone from here on */

  int new_port = -1;
  end = killed + 30000;
  while (mono_ms() < end) {
    int p = sentinel_master_port(g.sentinel[0].port);
    if (p > 0 && p != old_port) {
      new_port = p;
      break;
    }
    tr_sleep_ms(20);
  }
  int64_t switched = mono_ms();
  cr_assert_neq(new_port, -1, "no failover within 30 s of the kill");
  cr_assert(new_port == g.replica[0].port || new_port == g.replica[1].port);

  int at_switch = atomic_load(&w->n_waited),
      a_at_switch = atomic_load(&aw->n_ok);
  end = switched + 20000;
  while ((atomic_load(&w->n_waited) < at_switch + 200 ||
          atomic_load(&aw->n_ok) < a_at_switch + 200) &&
         mono_ms() < end)
    tr_sleep_ms(10);
  atomic_store(&w->stop, 1);
  atomic_store(&aw->stop, 1);
  pthread_join(th, NULL);
  pthread_join(ath, NULL);
  /* The subscriber subscribed again (on the new master, with AUTH) and
   * hears what is published there. */
  end = mono_ms() + 5000;
  while (atomic_load(&fo_subscribed) < 2 && mono_ms() < end)
    tr_sleep_ms(10);
  cr_assert_geq(atomic_load(&fo_subscribed), 2,
                "the subscriber did not subscribe again after the switch");
  cr_assert_eq(perfc_redis_publish(pool, "fo-chan",
                                   (perfc_slice){(const uint8_t *)"after", 5}),
               0, "%s", perfc_last_error());
  end = mono_ms() + 5000;
  while (atomic_load(&fo_messages) < 1 && mono_ms() < end)
    tr_sleep_ms(10);
  cr_assert_eq(atomic_load(&fo_messages), 1,
               "the subscriber did not hear the new master");
  perfc_redis_subscriber_free(sub);
  perfc_log_set_sink(NULL, NULL);

  /* No hang, no AUTH trouble. */
  cr_assert_eq(atomic_load(&aw->n_hung), 0,
               "an async SET got no callback within 5 s");
  cr_assert_eq(atomic_load(&w->n_auth_failed), 0,
               "%d pool calls failed with NOAUTH / AUTH failed",
               atomic_load(&w->n_auth_failed));
  cr_assert_eq(atomic_load(&aw->n_noauth), 0,
               "%d async commands answered NOAUTH", atomic_load(&aw->n_noauth));
  pthread_mutex_lock(&fo_log_mu);
  cr_assert_null(strstr(fo_log, "AUTH failed"), "%s", fo_log);
  cr_assert_null(strstr(fo_log, "NOAUTH"), "%s", fo_log);
  cr_assert_null(strstr(fo_log, FO_PASS), "%s", fo_log);
  cr_assert_null(strstr(fo_log, FO_SPASS), "%s", fo_log);
  pthread_mutex_unlock(&fo_log_mu);

  /* Both recovered, within 2 s of the switch the test saw. */
  cr_assert_geq(atomic_load(&w->n_waited), at_switch + 200,
                "200 replicated writes after the switch (%d failed)",
                atomic_load(&w->n_failed));
  cr_assert_geq(atomic_load(&aw->n_ok), a_at_switch + 200,
                "200 async writes after the switch (%d failed)",
                atomic_load(&aw->n_failed));
  long long first_fail = atomic_load(&w->first_fail_ms),
            recovered = atomic_load(&w->recovered_ms),
            a_first_fail = atomic_load(&aw->first_fail_ms),
            a_recovered = atomic_load(&aw->recovered_ms);
  cr_assert_gt(first_fail, 0, "some write failed while there was no master");
  cr_assert_gt(a_first_fail, 0, "some async write failed meanwhile");
  cr_assert_gt(recovered, 0);
  cr_assert_gt(a_recovered, 0);
  cr_assert_lt(recovered, switched + 2000,
               "writes recovered %lld ms after the switch",
               recovered - switched);
  cr_assert_lt(a_recovered, switched + 2000,
               "async writes recovered %lld ms after the switch",
               a_recovered - switched);
  cr_assert_lt(atomic_load(&w->max_fail_call_ms), 1000,
               "a failing call took %lld ms",
               (long long)atomic_load(&w->max_fail_call_ms));

  /* The values on the new master (read with its password). */
  redisContext *nm = conn(new_port);
  cr_assert_not_null(nm, "cannot AUTH to the new master");
  int n = atomic_load(&w->n), waited = 0, lost_waited = 0, lost_unwaited = 0,
      after = 0, lost_after = 0;
  for (int i = 0; i < n; i++) {
    if (!w->acked[i])
      continue;
    int have = has_value(nm, "w:", i, "v");
    if (w->acked[i] == 2) {
      waited++;
      lost_waited += !have;
    } else {
      lost_unwaited += !have;
    }
    if (w->started_ms[i] > killed) {
      after++;
      lost_after += !have;
    }
  }
  int an = atomic_load(&aw->n), a_acked = 0, a_lost = 0, a_after = 0,
      a_lost_after = 0;
  for (int i = 0; i < an; i++) {
    if (!aw->acked[i])
      continue;
    int have = has_value(nm, "a:", i, "av");
    a_acked++;
    a_lost += !have;
    if (aw->started_ms[i] > killed) {
      a_after++;
      a_lost_after += !have;
    }
  }
  redisFree(nm);
  fprintf(stderr,
          "sentinel failover with passwords: pool %d writes (%d replicated, "
          "%d master-only acknowledged, %d failed; lost %d replicated, %d "
          "master-only), async %d writes (%d acknowledged, %d failed, %d "
          "error replies; lost %d); sent after the kill and acknowledged: "
          "pool %d, async %d; switch seen %lld ms after the kill, pool "
          "recovered %lld ms and async %lld ms after the switch\n",
          n, waited, atomic_load(&w->n_unwaited), atomic_load(&w->n_failed),
          lost_waited, lost_unwaited, an, a_acked, atomic_load(&aw->n_failed),
          atomic_load(&aw->n_error_replies), a_lost, after, a_after,
          (long long)(switched - killed), recovered - switched,
          a_recovered - switched);
  cr_assert_eq(lost_waited, 0, "%d replicated writes lost", lost_waited);
  cr_assert_geq(waited, 400);
  cr_assert_geq(after, 200);
  cr_assert_geq(a_after, 200);
  cr_assert_eq(lost_after, 0,
               "%d pool writes sent after the kill and acknowledged are not "
               "on the new master",
               lost_after);
  cr_assert_eq(a_lost_after, 0,
               "%d async writes sent after the kill and acknowledged are not "
               "on the new master",
               a_lost_after);

  perfc_redis_async_free(ra);
  perfc_redis_pool_free(wpool);
  perfc_redis_pool_free(pool);
  free(aw);
  free(w);
}

/* ---- a frozen master: commands in flight end at the switch ---- */

typedef struct blocked_get {
  perfc_redis_pool *pool;
  atomic_int done;
  int rc;
  atomic_llong done_ms;
} blocked_get;

static void *blocked_get_main(void *arg) {
  blocked_get *b = arg;
  uint8_t *v = NULL;
  size_t len;
  b->rc = perfc_redis_get(b->pool, "frozen", &v, &len);
  free(v);
  atomic_store(&b->done_ms, mono_ms());
  atomic_store(&b->done, 1);
  return NULL;
}

typedef struct async_wait {
  atomic_int done, rc;
  atomic_llong done_ms;
} async_wait;

static void async_wait_cb(int rc, const uint8_t *v, size_t len, void *ud) {
  (void)v;
  (void)len;
  async_wait *a = ud;
  atomic_store(&a->rc, rc);
  atomic_store(&a->done_ms, mono_ms());
  atomic_store(&a->done, 1);
}

/* The master stops answering (SIGSTOP: connections stay open, silent)
 * while a pool GET and an async GET wait on it with a 30 s command
 * timeout. The sentinels fail over; at the switch both end at once
 * (PERFC_EIO, PERFC_EUNAVAILABLE), not at their timeout, and the next
 * calls go to the new master. */
Test(redis_sentinel, frozen_master_in_flight_commands_end_at_switch,
     .fini = teardown, .timeout = 120) {
  start_all();
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_opts o;
  sentinel_opts(&o);
  o.registry = reg;
  o.command_timeout_ms = 30000;
  perfc_redis_pool *pool;
  cr_assert_eq(perfc_redis_pool_new(&pool, &o), 0, "%s", perfc_last_error());
  cr_assert_eq(perfc_redis_ping(pool), 0, "%s", perfc_last_error());
  perfc_redis_async_opts ao;
  perfc_redis_async_opts_init(&ao);
  ao.sentinels = g.addrs;
  ao.n_sentinels = 3;
  ao.master_name = MASTER;
  ao.registry = reg;
  ao.command_timeout_ms = 30000;
  perfc_redis_async *ra;
  cr_assert_eq(perfc_redis_async_new(&ra, &ao), 0, "%s", perfc_last_error());
  char got[16];
  cr_assert_eq(async_get(ra, "frozen", got, sizeof got), PERFC_ENOENT, "%s",
               perfc_last_error());

  int old_port = g.master.port;
  cr_assert_eq(kill(g.master.pid, SIGSTOP), 0);
  int64_t stopped = mono_ms();
  blocked_get b = {.pool = pool};
  pthread_t th;
  cr_assert_eq(pthread_create(&th, NULL, blocked_get_main, &b), 0);
  async_wait a = {0};
  cr_assert_eq(perfc_redis_async_get(ra, "frozen", async_wait_cb, &a), 0);

  int new_port = -1;
  int64_t end = stopped + 30000;
  while (mono_ms() < end) {
    int p = sentinel_master_port(g.sentinel[0].port);
    if (p > 0 && p != old_port) {
      new_port = p;
      break;
    }
    tr_sleep_ms(20);
  }
  int64_t switched = mono_ms();
  cr_assert_neq(new_port, -1, "no failover within 30 s");
  end = switched + 10000;
  while ((!atomic_load(&b.done) || !atomic_load(&a.done)) && mono_ms() < end)
    tr_sleep_ms(10);
  cr_assert(atomic_load(&b.done), "the pool GET still waits 10 s after the "
                                  "switch");
  pthread_join(th, NULL);
  cr_assert(atomic_load(&a.done), "the async GET still waits");
  long long bt = atomic_load(&b.done_ms), at = atomic_load(&a.done_ms);
  fprintf(stderr,
          "frozen master: switch seen %lld ms after SIGSTOP; pool GET ended "
          "%lld ms, async GET %lld ms after SIGSTOP\n",
          (long long)(switched - stopped), bt - stopped, at - stopped);
  cr_assert_eq(b.rc, PERFC_EIO, "pool GET: %d", b.rc);
  cr_assert_eq(atomic_load(&a.rc), PERFC_EUNAVAILABLE, "async GET: %d",
               atomic_load(&a.rc));
  /* Ended by the switch: not before the sentinels could act (down-after
   * is 1 s), and soon after the test saw it (its 30 s timeout is far). */
  cr_assert_gt(bt, stopped + 900);
  cr_assert_lt(bt, switched + 2000, "pool GET ended %lld ms after the switch",
               bt - switched);
  cr_assert_gt(at, stopped + 900);
  cr_assert_lt(at, switched + 2000, "async GET ended %lld ms after the switch",
               at - switched);

  /* Later calls go to the new master. */
  int rc = -1;
  end = mono_ms() + 3000;
  while (mono_ms() < end &&
         (rc = perfc_redis_set(pool, "after",
                               (perfc_slice){(const uint8_t *)"1", 1}, 0)) != 0)
    tr_sleep_ms(20);
  cr_assert_eq(rc, 0, "%s", perfc_last_error());
  redisReply *r = cmd(new_port, "GET after");
  cr_assert(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "1") == 0);
  freeReplyObject(r);
  rc = -1;
  end = mono_ms() + 3000;
  while (mono_ms() < end && (rc = async_get(ra, "after", got, sizeof got)) != 0)
    tr_sleep_ms(20);
  cr_assert_eq(rc, 0, "%s", perfc_last_error());
  cr_assert_str_eq(got, "1");

  perfc_redis_async_free(ra);
  perfc_redis_pool_free(pool);
  perfc_metrics_registry_free(reg);
}

/* A master name the sentinels do not monitor: a clear error, at once. */
Test(redis_sentinel, unknown_master_name, .fini = teardown, .timeout = 60) {
  memset(&g, 0, sizeof g);
  make_dir();
  cr_assert_eq(start_redis(&g.master, 0), 0);
  cr_assert_eq(start_sentinel(&g.sentinel[0], g.master.port), 0);
  snprintf(g.addr[0], sizeof g.addr[0], "127.0.0.1:%d", g.sentinel[0].port);
  g.addrs[0] = g.addr[0];
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.sentinels = g.addrs;
  o.n_sentinels = 1;
  o.master_name = "nosuchmaster";
  o.registry = reg;
  perfc_redis_pool *pool;
  cr_assert_eq(perfc_redis_pool_new(&pool, &o), 0);
  int64_t t0 = mono_ms();
  cr_assert_eq(perfc_redis_ping(pool), PERFC_EIO);
  int64_t took = mono_ms() - t0;
  const char *msg = perfc_last_error();
  cr_assert_not_null(strstr(msg, "no sentinel knows a master named "
                                 "'nosuchmaster'"),
                     "message: %s", msg);
  cr_assert_not_null(strstr(msg, g.addr[0]), "message: %s", msg);
  cr_assert_lt(took, 1000, "took %lld ms", (long long)took);

  /* The right name works through the same sentinel. */
  o.master_name = MASTER;
  perfc_redis_pool *good;
  cr_assert_eq(perfc_redis_pool_new(&good, &o), 0);
  cr_assert_eq(perfc_redis_ping(good), 0, "%s", perfc_last_error());
  perfc_redis_pool_free(good);
  perfc_redis_pool_free(pool);
  perfc_metrics_registry_free(reg);
}

/* No sentinel reachable: PERFC_EIO naming each, quickly, every time. */
Test(redis_sentinel, all_sentinels_down, .fini = teardown, .timeout = 60) {
  memset(&g, 0, sizeof g);
  make_dir();
  for (int i = 0; i < 3; i++) {
    snprintf(g.addr[i], sizeof g.addr[i], "127.0.0.1:%d", tr_free_port());
    g.addrs[i] = g.addr[i];
  }
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_opts o;
  sentinel_opts(&o);
  o.registry = reg;
  perfc_redis_pool *pool;
  cr_assert_eq(perfc_redis_pool_new(&pool, &o), 0);
  for (int k = 0; k < 3; k++) {
    int64_t t0 = mono_ms();
    int rc = perfc_redis_ping(pool);
    int64_t took = mono_ms() - t0;
    cr_assert_eq(rc, PERFC_EIO, "attempt %d: %d", k, rc);
    const char *msg = perfc_last_error();
    cr_assert_lt(took, 1000, "attempt %d took %lld ms", k, (long long)took);
    if (k == 0) {
      cr_assert_not_null(strstr(msg, "no sentinel answered"), "message: %s",
                         msg);
      for (int i = 0; i < 3; i++)
        cr_assert_not_null(strstr(msg, g.addr[i]), "message: %s", msg);
    }
    tr_sleep_ms(60);
  }
  /* The async client refuses at once too, instead of waiting. */
  perfc_redis_async_opts ao;
  perfc_redis_async_opts_init(&ao);
  ao.sentinels = g.addrs;
  ao.n_sentinels = 3;
  ao.master_name = MASTER;
  ao.registry = reg;
  perfc_redis_async *ra;
  cr_assert_eq(perfc_redis_async_new(&ra, &ao), 0);
  char got[16];
  int64_t t0 = mono_ms();
  int rc = async_get(ra, "k", got, sizeof got);
  cr_assert_eq(rc, PERFC_EUNAVAILABLE, "rc %d", rc);
  cr_assert_lt(mono_ms() - t0, 1000);
  perfc_redis_async_free(ra);
  perfc_redis_pool_free(pool);
  perfc_metrics_registry_free(reg);
}

Test(redis_sentinel, options_are_checked) {
  perfc_redis_opts o;
  perfc_redis_pool *p = NULL;
  const char *one[] = {"127.0.0.1:26379"};
  const char *bad[] = {"127.0.0.1:26379", "nohostport"};

  perfc_redis_opts_init(&o);
  o.master_name = MASTER;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), PERFC_EINVAL);
  cr_assert_not_null(strstr(perfc_last_error(), "no sentinels"));

  perfc_redis_opts_init(&o);
  o.sentinels = one;
  o.n_sentinels = 1;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), PERFC_EINVAL);
  cr_assert_not_null(strstr(perfc_last_error(), "master_name"));

  o.master_name = MASTER;
  o.sentinels = bad;
  o.n_sentinels = 2;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), PERFC_EINVAL);
  cr_assert_not_null(strstr(perfc_last_error(), "nohostport"));
  cr_assert_null(p);

  perfc_redis_async_opts ao;
  perfc_redis_async_opts_init(&ao);
  ao.sentinels = bad;
  ao.n_sentinels = 2;
  ao.master_name = MASTER;
  perfc_redis_async *ra = NULL;
  cr_assert_eq(perfc_redis_async_new(&ra, &ao), PERFC_EINVAL);
  cr_assert_null(ra);
}

Test(redis_sentinel, config_keys) {
  const char *yaml = "redis:\n"
                     "  sentinels: [\"10.0.0.1:26379\", \"[::1]:26380\"]\n"
                     "  master_name: cachemaster\n"
                     "  wait_replicas: 1\n";
  perfc_config *cfg;
  cr_assert_eq(perfc_config_load_string(&cfg, yaml, strlen(yaml), "t.yaml"), 0,
               "%s", perfc_last_error());
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  cr_assert_eq(perfc_config_apply_redis(cfg, &o), 0);
  cr_assert_eq(o.n_sentinels, 2);
  cr_assert_str_eq(o.sentinels[0], "10.0.0.1:26379");
  cr_assert_str_eq(o.sentinels[1], "[::1]:26380");
  cr_assert_str_eq(o.master_name, "cachemaster");
  cr_assert_eq(o.wait_replicas, 1);
  perfc_config_free(cfg);

  /* The sample service's Sentinel section loads and applies. */
  cr_assert_eq(perfc_config_load(&cfg, PERFC_SOURCE_DIR
                                 "/examples/user-service/config/"
                                 "redis-sentinel.yaml"),
               0, "%s", perfc_last_error());
  perfc_redis_opts_init(&o);
  cr_assert_eq(perfc_config_apply_redis(cfg, &o), 0);
  cr_assert_eq(o.n_sentinels, 3);
  cr_assert_str_eq(o.sentinels[2], "sentinel-2:26379");
  cr_assert_str_eq(o.master_name, "mymaster");
  cr_assert_eq(o.wait_replicas, 1);
  cr_assert_eq(o.command_timeout_ms, 200);
  perfc_config_free(cfg);

  /* The environment, comma-separated, replaces the file's list. */
  setenv("PERFC_REDIS_SENTINELS", "127.0.0.1:1, 127.0.0.1:2,127.0.0.1:3", 1);
  setenv("PERFC_REDIS_MASTER_NAME", "envmaster", 1);
  cr_assert_eq(perfc_config_load_string(&cfg, yaml, strlen(yaml), "t.yaml"), 0,
               "%s", perfc_last_error());
  perfc_redis_opts_init(&o);
  cr_assert_eq(perfc_config_apply_redis(cfg, &o), 0);
  cr_assert_eq(o.n_sentinels, 3);
  cr_assert_str_eq(o.sentinels[1], "127.0.0.1:2");
  cr_assert_str_eq(o.master_name, "envmaster");
  perfc_config_free(cfg);

  /* A bad entry is refused when loading, naming it. */
  setenv("PERFC_REDIS_SENTINELS", "127.0.0.1:1,nope", 1);
  cr_assert_eq(perfc_config_load_string(&cfg, yaml, strlen(yaml), "t.yaml"),
               PERFC_ECONFIG);
  cr_assert_not_null(strstr(perfc_last_error(), "nope"), "%s",
                     perfc_last_error());
  unsetenv("PERFC_REDIS_SENTINELS");
  unsetenv("PERFC_REDIS_MASTER_NAME");
}

/* wait_replicas with no replica to acknowledge: the write happens on the
 * master, the call says it is not replicated, and the cache keeps its
 * invalidation DEL pending (retried) instead of calling it done. */
Test(redis_sentinel, wait_replicas_unreplicated_write_is_an_error,
     .fini = teardown, .timeout = 60) {
  memset(&g, 0, sizeof g);
  make_dir();
  cr_assert_eq(start_redis(&g.master, 0), 0);
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.port = g.master.port;
  o.registry = reg;
  o.wait_replicas = 1;
  /* WAIT waits half of it: 500 ms, far from the reply's own bound even
   * on a loaded machine (with 200 ms, a late reply under ASan was a
   * timeout instead). */
  o.command_timeout_ms = 1000;
  perfc_redis_pool *pool;
  cr_assert_eq(perfc_redis_pool_new(&pool, &o), 0);
  int64_t t0 = mono_ms();
  int rc =
      perfc_redis_set(pool, "k", (perfc_slice){(const uint8_t *)"v", 1}, 0);
  int64_t took = mono_ms() - t0;
  cr_assert_eq(rc, PERFC_EIO, "rc %d: %s", rc, perfc_last_error());
  cr_assert_not_null(strstr(perfc_last_error(), "acknowledged by 0 of 1 "
                                                "replicas within 500 ms"),
                     "%s", perfc_last_error());
  cr_assert_geq(took, 450, "WAIT waited %lld ms", (long long)took);
  cr_assert_lt(took, 1000);
  redisReply *r = cmd(g.master.port, "GET k");
  cr_assert(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "v") == 0,
            "the master has the write");
  freeReplyObject(r);
  const char *keys[] = {"k"};
  rc = perfc_redis_del(pool, keys, 1);
  cr_assert_eq(rc, PERFC_EIO, "rc %d: %s", rc, perfc_last_error());
  /* Reads still work (no WAIT on them). */
  uint8_t *v;
  size_t vl;
  cr_assert_eq(perfc_redis_get(pool, "nope", &v, &vl), PERFC_ENOENT);

  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.redis = pool;
  co.registry = reg;
  co.no_subscribe = true;
  co.no_async_l2 = true;
  co.drain_ms = 1;
  perfc_cache *cache;
  cr_assert_eq(perfc_cache_new(&cache, &co), 0, "%s", perfc_last_error());
  cr_assert_eq(perfc_cache_invalidate(cache, keys, 1), 0);
  cr_assert_eq(perfc_cache_pending_invalidations(cache), 1,
               "an unreplicated DEL stays pending");
  perfc_cache_free(cache);

  o.wait_replicas = 0;
  o.name = "plain";
  perfc_redis_pool *plain;
  cr_assert_eq(perfc_redis_pool_new(&plain, &o), 0);
  cr_assert_eq(
      perfc_redis_set(plain, "k", (perfc_slice){(const uint8_t *)"w", 1}, 0), 0,
      "without wait_replicas the master's OK is enough");
  perfc_redis_pool_free(plain);
  perfc_redis_pool_free(pool);
  perfc_metrics_registry_free(reg);
}

/* A dead sentinel first in the list is skipped; with every sentinel gone
 * the master already found keeps being used, also for new connections. */
Test(redis_sentinel, sentinels_down_master_still_used, .fini = teardown,
     .timeout = 60) {
  memset(&g, 0, sizeof g);
  make_dir();
  cr_assert_eq(start_redis(&g.master, 0), 0);
  cr_assert_eq(start_sentinel(&g.sentinel[0], g.master.port), 0);
  snprintf(g.addr[0], sizeof g.addr[0], "127.0.0.1:%d", tr_free_port());
  snprintf(g.addr[1], sizeof g.addr[1], "127.0.0.1:%d", g.sentinel[0].port);
  g.addrs[0] = g.addr[0];
  g.addrs[1] = g.addr[1];
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.sentinels = g.addrs;
  o.n_sentinels = 2;
  o.master_name = MASTER;
  o.registry = reg;
  perfc_redis_pool *pool;
  cr_assert_eq(perfc_redis_pool_new(&pool, &o), 0);
  cr_assert_eq(perfc_redis_ping(pool), 0, "%s", perfc_last_error());

  proc_kill(&g.sentinel[0]);
  cr_assert_eq(perfc_redis_ping(pool), 0, "%s", perfc_last_error());
  /* The master drops every client: the pool reconnects, asks the (dead)
   * sentinels, and falls back on the address it knows. */
  redisReply *r = cmd(g.master.port, "CLIENT KILL TYPE normal");
  cr_assert_not_null(r);
  freeReplyObject(r);
  int rc = -1, failures = 0;
  int64_t end = mono_ms() + 3000;
  while (mono_ms() < end && (rc = perfc_redis_ping(pool)) != 0) {
    failures++;
    tr_sleep_ms(20);
  }
  cr_assert_eq(rc, 0, "%s", perfc_last_error());
  cr_assert_leq(failures, 3, "%d failed pings", failures);
  perfc_redis_pool_stats st;
  perfc_redis_pool_stats_get(pool, &st);
  cr_assert_geq(st.connects, 2, "a new connection was made");
  perfc_redis_pool_free(pool);
  perfc_metrics_registry_free(reg);
}

/* The master is demoted behind the client's back (REPLICAOF, as a
 * reconfigured old master would be): the next write gets READONLY, the
 * connection is dropped, and the next connect refuses the node because
 * its ROLE is no longer master, even though the sentinel still names it. */
Test(redis_sentinel, demoted_master_readonly_then_role_refused,
     .fini = teardown, .timeout = 60) {
  memset(&g, 0, sizeof g);
  make_dir();
  cr_assert_eq(start_redis(&g.master, 0), 0);
  cr_assert_eq(start_redis(&g.replica[0], 0), 0);
  cr_assert_eq(start_sentinel(&g.sentinel[0], g.master.port), 0);
  snprintf(g.addr[0], sizeof g.addr[0], "127.0.0.1:%d", g.sentinel[0].port);
  g.addrs[0] = g.addr[0];
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.sentinels = g.addrs;
  o.n_sentinels = 1;
  o.master_name = MASTER;
  o.registry = reg;
  o.pool_size = 1;
  perfc_redis_pool *pool;
  cr_assert_eq(perfc_redis_pool_new(&pool, &o), 0);
  perfc_slice v = {(const uint8_t *)"v", 1};
  cr_assert_eq(perfc_redis_set(pool, "k", v, 0), 0, "%s", perfc_last_error());

  redisReply *r = cmd(g.master.port, "REPLICAOF 127.0.0.1 %d",
                      g.replica[0].port);
  cr_assert(r && r->type == REDIS_REPLY_STATUS);
  freeReplyObject(r);
  cr_assert_eq(perfc_redis_set(pool, "k", v, 0), PERFC_EIO);
  cr_assert_not_null(strstr(perfc_last_error(), "READONLY"), "%s",
                     perfc_last_error());
  perfc_redis_pool_stats st;
  perfc_redis_pool_stats_get(pool, &st);
  cr_assert_eq(st.idle, 0, "the connection to the demoted node was dropped");
  cr_assert_eq(perfc_redis_set(pool, "k", v, 0), PERFC_EIO);
  cr_assert_not_null(strstr(perfc_last_error(), "ROLE says slave"), "%s",
                     perfc_last_error());
  perfc_redis_pool_free(pool);
  perfc_metrics_registry_free(reg);
}

/* A "sentinel" that accepts and hangs up at once, counting connections. */
typedef struct fake_sentinel {
  int fd, port;
  atomic_int accepts, stop;
  pthread_t th;
} fake_sentinel;

static void *fake_main(void *arg) {
  fake_sentinel *f = arg;
  while (!atomic_load(&f->stop)) {
    struct pollfd p = {f->fd, POLLIN, 0};
    if (poll(&p, 1, 20) > 0) {
      int c = accept(f->fd, NULL, NULL);
      if (c >= 0) {
        atomic_fetch_add(&f->accepts, 1);
        close(c);
      }
    }
  }
  return NULL;
}

static void fake_start(fake_sentinel *f) {
  f->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  cr_assert_eq(bind(f->fd, (struct sockaddr *)&a, sizeof a), 0);
  cr_assert_eq(listen(f->fd, 128), 0);
  getsockname(f->fd, (struct sockaddr *)&a, &len);
  f->port = ntohs(a.sin_port);
  cr_assert_eq(pthread_create(&f->th, NULL, fake_main, f), 0);
}

static void fake_stop(fake_sentinel *f) {
  atomic_store(&f->stop, 1);
  pthread_join(f->th, NULL);
  close(f->fd);
}

/* Regression: the watcher redialled at once a sentinel that accepted and
 * hung up before answering SUBSCRIBE (8000-12000 connections in 0.5 s
 * while async commands were refused); it now backs off as after a
 * refused connect. */
Test(redis_sentinel, sentinel_that_hangs_up_is_not_redialled_in_a_loop) {
  fake_sentinel f = {0};
  fake_start(&f);
  char addr[32];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", f.port);
  const char *addrs[] = {addr};
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_async_opts ao;
  perfc_redis_async_opts_init(&ao);
  ao.sentinels = addrs;
  ao.n_sentinels = 1;
  ao.master_name = MASTER;
  ao.registry = reg;
  perfc_redis_async *ra;
  cr_assert_eq(perfc_redis_async_new(&ra, &ao), 0);
  char got[8];
  int64_t t0 = mono_ms();
  int n = 0;
  while (mono_ms() - t0 < 500) {
    cr_assert_eq(async_get(ra, "k", got, sizeof got), PERFC_EUNAVAILABLE);
    n++;
    tr_sleep_ms(1);
  }
  int64_t took = mono_ms() - t0;
  perfc_redis_async_free(ra);
  int accepts = atomic_load(&f.accepts);
  fake_stop(&f);
  perfc_metrics_registry_free(reg);
  /* Resolutions: one per 50 ms at most (~10 in 500 ms); the watcher's
   * subscribe attempts back off from 50 ms to 1 s (~5). Measured: 14. */
  fprintf(stderr, "%d commands in %lld ms: %d sentinel connections\n", n,
          (long long)took, accepts);
  cr_assert_gt(n, 100);
  cr_assert_leq(accepts, 30, "%d sentinel connections for %d commands",
                accepts, n);
}

/* Regression: a failed resolution's cached result (a negative code) was
 * read as "nothing cached", so every blocking connect asked the sentinels
 * again instead of taking the last answer for 50 ms. */
Test(redis_sentinel, failed_resolution_is_not_repeated_within_50ms) {
  fake_sentinel f = {0};
  fake_start(&f);
  char addr[32];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", f.port);
  const char *addrs[] = {addr};
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.sentinels = addrs;
  o.n_sentinels = 1;
  o.master_name = MASTER;
  perfc__redis_sentinel *sn;
  cr_assert_eq(perfc__redis_sentinel_get(&sn, &o), 0);
  char err[512];
  uint64_t epoch;
  int calls = 0, crc = 0;
  int64_t t0 = mono_ms();
  while (mono_ms() - t0 < 100) {
    cr_assert_null(perfc__redis_sentinel_connect(sn, 200, 200, &epoch, err,
                                                 sizeof err, &crc));
    cr_assert_eq(crc, PERFC_EIO);
    cr_assert_not_null(strstr(err, "no sentinel answered"), "%s", err);
    calls++;
  }
  int accepts = atomic_load(&f.accepts);
  perfc__redis_sentinel_put(sn);
  fake_stop(&f);
  fprintf(stderr, "%d connects in 100 ms: %d sentinel connections\n", calls,
          accepts);
  cr_assert_gt(calls, 20);
  /* Resolutions at 0, 50 and 100 ms, plus the watcher's own. */
  cr_assert_leq(accepts, 8, "%d sentinel connections for %d connects",
                accepts, calls);
}
