/* test_redis_auth.c — Redis AUTH (perfc_redis_opts.username, .password,
 * .sentinel_password) against real redis-servers on loopback started with
 * --requirepass (redis_server.h): the synchronous pool and its subscriber,
 * the asynchronous client on a loop of the test's own, a Redis 6 ACL user
 * whose password holds spaces, Sentinel with a password on the master
 * and another on the sentinel, and the cache (its subscriber and async
 * client made from the pool's options) and the shared rate limiter's
 * store.
 *
 * Checked with values: SET/GET round trips with the password; without it
 * the server's NOAUTH comes back as PERFC_EIO; a wrong password makes the
 * first call PERFC_ECONFIG with "AUTH failed" and the server's address in
 * the message, the log says so, and neither ever holds the password; the
 * async client fails its commands (PERFC_EUNAVAILABLE) within a bound,
 * logs at most once per backoff_max_ms and reconnects at the backoff's
 * pace, not in a hot loop (the server's own connection count). */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "data/redis_internal.h"
#include "perfc/cache.h"
#include "perfc/log.h"
#include "perfc/loop.h"
#include "perfc/ratelimit_redis.h"
#include "perfc/redis.h"
#include "perfc/redis_async.h"
#include "redis_server.h"

#define PASS "s3cret"
#define WRONG "wr0ng-pa55"
/* The ACL user's password has spaces: only the argv form sends it whole. */
#define ALICE_PASS "al ice's pw"

static test_redis srv;
/* redis_server.h's; not needed here. */
static void unused_helpers(void) {
  (void)tr_start;
  (void)tr_restart;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static perfc_slice S(const char *s) {
  perfc_slice v = {(const uint8_t *)s, strlen(s)};
  return v;
}

/* ---- captured log ---- */

static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;
static char log_buf[16384];
static size_t log_len;
static int log_auth_lines; /* records that say "AUTH failed" */

static void capture(perfc_log_level level, const char *msg, void *ud) {
  (void)level;
  (void)ud;
  pthread_mutex_lock(&log_mu);
  size_t n = strlen(msg);
  if (log_len + n + 2 < sizeof log_buf) {
    memcpy(log_buf + log_len, msg, n);
    log_len += n;
    log_buf[log_len++] = '\n';
    log_buf[log_len] = 0;
  }
  if (strstr(msg, "AUTH failed"))
    log_auth_lines++;
  pthread_mutex_unlock(&log_mu);
}

static void log_start(void) {
  pthread_mutex_lock(&log_mu);
  log_len = 0;
  log_buf[0] = 0;
  log_auth_lines = 0;
  pthread_mutex_unlock(&log_mu);
  perfc_log_set_sink(capture, NULL);
}

static void log_end(void) { perfc_log_set_sink(NULL, NULL); }

static void up(void) {
  unused_helpers();
  const char *extra[] = {"--requirepass", PASS, NULL};
  cr_assert_eq(tr_start_args(&srv, extra), 0, "redis-server start");
}
static void down(void) {
  log_end();
  tr_stop(&srv);
}

static perfc_redis_opts opts(const char *user, const char *pass) {
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.port = srv.port;
  o.pool_size = 2;
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 200;
  o.username = user;
  o.password = pass;
  return o;
}

static perfc_redis_pool *pool(const char *user, const char *pass) {
  perfc_redis_opts o = opts(user, pass);
  perfc_redis_pool *p = NULL;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0, "%s", perfc_last_error());
  return p;
}

static void get_is(perfc_redis_pool *p, const char *key, const char *want) {
  uint8_t *v = NULL;
  size_t n = 0;
  cr_assert_eq(perfc_redis_get(p, key, &v, &n), 0, "%s", perfc_last_error());
  cr_assert_eq(n, strlen(want));
  cr_assert_eq(memcmp(v, want, n), 0);
  free(v);
}

TestSuite(redis_auth, .init = up, .fini = down, .timeout = 60);

Test(redis_auth, pool_with_password_sets_and_gets) {
  perfc_redis_pool *p = pool(NULL, PASS);
  cr_assert_eq(perfc_redis_set(p, "k", S("v1"), 0), 0, "%s",
               perfc_last_error());
  get_is(p, "k", "v1");
  perfc_redis_pool_stats st;
  perfc_redis_pool_stats_get(p, &st);
  cr_assert_eq(st.errors, 0);
  cr_assert_geq(st.connects, 1);
  /* The caller's string may go: the pool has its own copy. */
  char pw[16];
  snprintf(pw, sizeof pw, "%s", PASS);
  perfc_redis_opts o = opts(NULL, pw);
  o.pool_size = 1;
  perfc_redis_pool *q = NULL;
  cr_assert_eq(perfc_redis_pool_new(&q, &o), 0);
  memset(pw, 'x', sizeof pw - 1);
  get_is(q, "k", "v1");
  perfc_redis_pool_free(q);
  perfc_redis_pool_free(p);
}

Test(redis_auth, pool_without_password_gets_noauth) {
  perfc_redis_pool *p = pool(NULL, NULL);
  uint8_t *v = NULL;
  size_t n = 0;
  cr_assert_eq(perfc_redis_get(p, "k", &v, &n), PERFC_EIO);
  cr_assert_not_null(strstr(perfc_last_error(), "NOAUTH"), "%s",
                     perfc_last_error());
  cr_assert_eq(perfc_redis_set(p, "k", S("v"), 0), PERFC_EIO);
  /* An empty password is none too (PERFC_REDIS_PASSWORD= ). */
  perfc_redis_pool *q = pool(NULL, "");
  cr_assert_eq(perfc_redis_ping(q), PERFC_EIO);
  cr_assert_not_null(strstr(perfc_last_error(), "NOAUTH"), "%s",
                     perfc_last_error());
  perfc_redis_pool_free(q);
  perfc_redis_pool_free(p);
}

Test(redis_auth, pool_wrong_password_is_a_clear_error) {
  log_start();
  perfc_redis_opts o = opts(NULL, WRONG);
  /* Long enough that the second call surely falls in it, even under
   * valgrind or a sanitizer. */
  o.backoff_min_ms = 10000;
  o.backoff_max_ms = 10000;
  perfc_redis_pool *p = NULL;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0, "%s", perfc_last_error());
  cr_assert_eq(perfc_redis_set(p, "k", S("v"), 0), PERFC_ECONFIG);
  const char *e = perfc_last_error();
  char addr[64];
  snprintf(addr, sizeof addr, "127.0.0.1:%d", srv.port);
  cr_assert_not_null(strstr(e, "AUTH failed"), "%s", e);
  cr_assert_not_null(strstr(e, addr), "%s", e);
  cr_assert_not_null(strstr(e, "WRONGPASS"), "%s", e);
  cr_assert_null(strstr(e, WRONG), "%s", e);
  /* Then refused at once while backing off, like a server that is down. */
  uint8_t *v = NULL;
  size_t n = 0;
  cr_assert_eq(perfc_redis_get(p, "k", &v, &n), PERFC_EIO);
  cr_assert_not_null(strstr(perfc_last_error(), "backoff"), "%s",
                     perfc_last_error());
  perfc_redis_pool_stats st;
  perfc_redis_pool_stats_get(p, &st);
  cr_assert_eq(st.connects, 0);
  cr_assert_eq(st.backing_off, 1);
  log_end();
  pthread_mutex_lock(&log_mu);
  cr_assert_eq(log_auth_lines, 1, "%s", log_buf);
  cr_assert_null(strstr(log_buf, WRONG), "%s", log_buf);
  cr_assert_null(strstr(log_buf, "not answering"), "%s", log_buf);
  pthread_mutex_unlock(&log_mu);
  perfc_redis_pool_free(p);
}

Test(redis_auth, username_without_password_is_refused) {
  perfc_redis_opts o = opts("alice", NULL);
  perfc_redis_pool *p = NULL;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), PERFC_EINVAL);
  cr_assert_null(p);
  perfc_redis_async_opts ao;
  perfc_redis_async_opts_init(&ao);
  ao.port = srv.port;
  ao.username = "alice";
  perfc_redis_async *ra = NULL;
  cr_assert_eq(perfc_redis_async_new(&ra, &ao), PERFC_EINVAL);
  cr_assert_null(ra);
  /* The same rule for the sentinels' ACL user. */
  o = opts(NULL, PASS);
  o.sentinel_username = "sentinel-app";
  cr_assert_eq(perfc_redis_pool_new(&p, &o), PERFC_EINVAL);
  cr_assert_null(p);
  cr_assert_not_null(strstr(perfc_last_error(), "sentinel_username without "
                                                "sentinel_password"),
                     "%s", perfc_last_error());
  o.sentinel_password = "";
  cr_assert_eq(perfc_redis_pool_new(&p, &o), PERFC_EINVAL);
  cr_assert_null(p);
  perfc_redis_async_opts_init(&ao);
  ao.port = srv.port;
  ao.sentinel_username = "sentinel-app";
  cr_assert_eq(perfc_redis_async_new(&ra, &ao), PERFC_EINVAL);
  cr_assert_null(ra);
}

/* ACL SETUSER through a pool logged in as the default user. */
static void add_alice(void) {
  perfc_redis_pool *admin = pool(NULL, PASS);
  const char *argv[] = {"ACL", "SETUSER", "alice", "on", ">" ALICE_PASS,
                        "~*",  "+@all"};
  size_t len[7];
  for (int i = 0; i < 7; i++)
    len[i] = strlen(argv[i]);
  perfc__redis_cmd cmd = {7, argv, len};
  redisReply *r = NULL;
  cr_assert_eq(perfc__redis_pipeline(admin, &cmd, 1, &r), 0);
  cr_assert_eq(r->type, REDIS_REPLY_STATUS, "%s", r->str);
  freeReplyObject(r);
  perfc_redis_pool_free(admin);
}

Test(redis_auth, acl_user_with_spaces_in_password) {
  add_alice();
  perfc_redis_pool *p = pool("alice", ALICE_PASS);
  cr_assert_eq(perfc_redis_set(p, "ka", S("alice's"), 0), 0, "%s",
               perfc_last_error());
  get_is(p, "ka", "alice's");
  perfc_redis_pool_free(p);
  /* Whoami: the commands ran as alice, not as the default user. */
  p = pool("alice", ALICE_PASS);
  const char *argv[] = {"ACL", "WHOAMI"};
  size_t len[] = {3, 6};
  perfc__redis_cmd cmd = {2, argv, len};
  redisReply *r = NULL;
  cr_assert_eq(perfc__redis_pipeline(p, &cmd, 1, &r), 0);
  cr_assert_eq(r->type, REDIS_REPLY_STRING);
  cr_assert_str_eq(r->str, "alice");
  freeReplyObject(r);
  perfc_redis_pool_free(p);
  /* The right password for the wrong user is refused, naming the user. */
  p = pool("alice", PASS);
  cr_assert_eq(perfc_redis_ping(p), PERFC_ECONFIG);
  cr_assert_not_null(strstr(perfc_last_error(), "AUTH failed for user alice"),
                     "%s", perfc_last_error());
  perfc_redis_pool_free(p);
}

/* ---- subscriber ---- */

static atomic_int sub_messages;
static void on_msg(perfc_redis_sub_event ev, const char *ch, perfc_slice m,
                   void *ud) {
  (void)ch;
  (void)m;
  (void)ud;
  if (ev == PERFC_REDIS_SUB_MESSAGE)
    atomic_fetch_add(&sub_messages, 1);
}

Test(redis_auth, subscriber_with_password) {
  perfc_redis_opts o = opts(NULL, PASS);
  perfc_redis_subscriber *s = NULL;
  atomic_store(&sub_messages, 0);
  cr_assert_eq(perfc_redis_subscriber_new(&s, &o, "chan", on_msg, NULL), 0);
  cr_assert_eq(perfc_redis_subscriber_wait_ready(s, 5000), 0, "%s",
               perfc_last_error());
  perfc_redis_pool *p = pool(NULL, PASS);
  cr_assert_eq(perfc_redis_publish(p, "chan", S("hi")), 0);
  int64_t end = mono_ms() + 5000;
  while (atomic_load(&sub_messages) == 0 && mono_ms() < end)
    tr_sleep_ms(5);
  cr_assert_eq(atomic_load(&sub_messages), 1);
  perfc_redis_subscriber_free(s);
  /* A wrong password never subscribes. */
  o.password = WRONG;
  cr_assert_eq(perfc_redis_subscriber_new(&s, &o, "chan", on_msg, NULL), 0);
  cr_assert_eq(perfc_redis_subscriber_wait_ready(s, 300), PERFC_ETIMEDOUT);
  perfc_redis_subscriber_free(s);
  perfc_redis_pool_free(p);
}

/* ---- the async client ---- */

static perfc_loop *loop;
static pthread_t loop_thread;

static void *loop_main(void *ud) {
  (void)ud;
  perfc_loop_run(loop);
  return NULL;
}

static void loop_up(void) {
  cr_assert_eq(perfc_loop_new(&loop), 0);
  cr_assert_eq(pthread_create(&loop_thread, NULL, loop_main, NULL), 0);
}

static void loop_down(void) {
  perfc_loop_stop(loop);
  pthread_join(loop_thread, NULL);
  perfc_loop_free(loop);
  loop = NULL;
}

typedef struct res {
  atomic_int done;
  int rc;
  char value[64];
  size_t len;
} res;

static void cmd_cb(int rc, const perfc_redis_reply *reply, void *ud) {
  res *r = ud;
  r->rc = rc;
  if (rc == 0 && reply->str != NULL && reply->len < sizeof r->value) {
    memcpy(r->value, reply->str, reply->len);
    r->len = reply->len;
  }
  atomic_store(&r->done, 1);
}

static void get_cb(int rc, const uint8_t *v, size_t len, void *ud) {
  res *r = ud;
  r->rc = rc;
  if (v != NULL && len < sizeof r->value) {
    memcpy(r->value, v, len);
    r->len = len;
  }
  atomic_store(&r->done, 1);
}

typedef struct job {
  perfc_redis_async *ra;
  res set, get;
  int set_rc, get_rc;
  atomic_int ran;
} job;

/* SET then GET, issued in one loop iteration (one write): the AUTH must
 * leave first for either to work. */
static void issue(void *ud) {
  job *j = ud;
  const char *argv[] = {"SET", "ak", "async-v"};
  j->set_rc = perfc_redis_async_command(j->ra, 3, argv, NULL, cmd_cb, &j->set);
  j->get_rc = perfc_redis_async_get(j->ra, "ak", get_cb, &j->get);
  atomic_store(&j->ran, 1);
}

static void run_on_loop(job *j) {
  perfc_loop_task *t;
  cr_assert_eq(perfc_loop_task_new(&t, loop, issue, j), 0);
  perfc_loop_task_post(t);
  int64_t end = mono_ms() + 5000;
  while (!atomic_load(&j->ran) && mono_ms() < end)
    tr_sleep_ms(1);
  cr_assert(atomic_load(&j->ran));
  perfc_loop_task_free(t);
}

/* Both callbacks ran (refused calls count as done), within `ms`. */
static void wait_job(job *j, int64_t ms) {
  if (j->set_rc != 0)
    atomic_store(&j->set.done, 1);
  if (j->get_rc != 0)
    atomic_store(&j->get.done, 1);
  int64_t end = mono_ms() + ms;
  while ((!atomic_load(&j->set.done) || !atomic_load(&j->get.done)) &&
         mono_ms() < end)
    tr_sleep_ms(1);
  cr_assert(atomic_load(&j->set.done) && atomic_load(&j->get.done),
            "a command's callback did not run within %lld ms", (long long)ms);
}

static perfc_redis_async *async_client(const char *user, const char *pass) {
  perfc_redis_async_opts o;
  perfc_redis_async_opts_init(&o);
  o.port = srv.port;
  o.username = user;
  o.password = pass;
  o.backoff_min_ms = 20;
  o.backoff_max_ms = 200;
  o.command_timeout_ms = 2000;
  perfc_redis_async *ra = NULL;
  cr_assert_eq(perfc_redis_async_new(&ra, &o), 0, "%s", perfc_last_error());
  return ra;
}

Test(redis_auth, async_with_password_sets_and_gets) {
  loop_up();
  job *j = calloc(1, sizeof *j);
  j->ra = async_client(NULL, PASS);
  run_on_loop(j);
  cr_assert_eq(j->set_rc, 0, "%s", perfc_last_error());
  cr_assert_eq(j->get_rc, 0);
  wait_job(j, 5000);
  cr_assert_eq(j->set.rc, 0);
  cr_assert_eq(j->set.len, 2);
  cr_assert_eq(memcmp(j->set.value, "OK", 2), 0);
  cr_assert_eq(j->get.rc, 0);
  cr_assert_eq(j->get.len, 7);
  cr_assert_eq(memcmp(j->get.value, "async-v", 7), 0);
  /* Counted up once AUTH succeeded (the replies above came after it). */
  perfc_redis_async_stats st;
  perfc_redis_async_stats_get(j->ra, &st);
  cr_assert_geq(st.connects, 1);
  cr_assert_geq(st.conns_up, 1);
  loop_down();
  perfc_redis_async_free(j->ra);
  free(j);
}

Test(redis_auth, async_acl_user) {
  add_alice();
  loop_up();
  job *j = calloc(1, sizeof *j);
  j->ra = async_client("alice", ALICE_PASS);
  run_on_loop(j);
  wait_job(j, 5000);
  cr_assert_eq(j->set.rc, 0);
  cr_assert_eq(j->get.rc, 0);
  cr_assert_eq(j->get.len, 7);
  cr_assert_eq(memcmp(j->get.value, "async-v", 7), 0);
  loop_down();
  perfc_redis_async_free(j->ra);
  free(j);
}

/* The server's count of accepted connections (INFO stats). */
static long connections_received(void) {
  perfc_redis_pool *admin = pool(NULL, PASS);
  const char *argv[] = {"INFO", "stats"};
  size_t len[] = {4, 5};
  perfc__redis_cmd cmd = {2, argv, len};
  redisReply *r = NULL;
  cr_assert_eq(perfc__redis_pipeline(admin, &cmd, 1, &r), 0);
  const char *f = strstr(r->str, "total_connections_received:");
  cr_assert_not_null(f);
  long n = atol(f + strlen("total_connections_received:"));
  freeReplyObject(r);
  perfc_redis_pool_free(admin);
  return n;
}

Test(redis_auth, async_wrong_password_fails_commands_and_backs_off) {
  log_start();
  loop_up();
  job *j = calloc(1, sizeof *j);
  j->ra = async_client(NULL, WRONG);
  int64_t t0 = mono_ms();
  run_on_loop(j);
  /* Not a hang: both fail well before the 2 s command timeout would. */
  wait_job(j, 1500);
  cr_assert_eq(j->set_rc == 0 ? j->set.rc : j->set_rc, PERFC_EUNAVAILABLE);
  cr_assert_eq(j->get_rc == 0 ? j->get.rc : j->get_rc, PERFC_EUNAVAILABLE);
  cr_assert_lt(mono_ms() - t0, 1500);
  /* Keep it reconnecting for a second: the backoff (20 ms doubling to
   * 200 ms) paces it, about 6 attempts; a backoff reset at each TCP
   * connect would make about 50, a hot loop thousands. */
  long c0 = connections_received();
  int64_t t1 = mono_ms();
  tr_sleep_ms(1000);
  long c1 = connections_received();
  int64_t elapsed = mono_ms() - t1;
  /* Not reset by the TCP connect: doubling, then at most 5 a second. */
  cr_assert_leq(c1 - c0 - 1, 2 + elapsed / 100, "%ld connects in %lld ms",
                c1 - c0 - 1, (long long)elapsed);
  cr_assert_geq(c1 - c0 - 1, 1, "it stopped retrying");
  /* Refused every time: never counted as a connection, never "up" (the
   * TCP connects alone must not show it up). */
  perfc_redis_async_stats st;
  perfc_redis_async_stats_get(j->ra, &st);
  cr_assert_eq(st.connects, 0, "%llu connects counted",
               (unsigned long long)st.connects);
  cr_assert_eq(st.conns_up, 0);
  /* Later commands are refused at once or fail the same way. */
  job *k = calloc(1, sizeof *k);
  k->ra = j->ra;
  run_on_loop(k);
  wait_job(k, 1500);
  cr_assert_neq(k->get_rc == 0 ? k->get.rc : k->get_rc, 0);
  loop_down();
  int64_t total = mono_ms() - t0;
  perfc_redis_async_free(j->ra);
  log_end();
  pthread_mutex_lock(&log_mu);
  cr_assert_geq(log_auth_lines, 1, "%s", log_buf);
  /* At most one line per backoff_max_ms (200 ms), plus the first. */
  cr_assert_leq(log_auth_lines, 1 + total / 200, "%d lines in %lld ms:\n%s",
                log_auth_lines, (long long)total, log_buf);
  cr_assert_not_null(strstr(log_buf, "WRONGPASS"), "%s", log_buf);
  cr_assert_null(strstr(log_buf, WRONG), "%s", log_buf);
  pthread_mutex_unlock(&log_mu);
  free(k);
  free(j);
}

/* ---- Sentinel: the master's password and the sentinel's own ---- */

#define SPASS "sentinel pw"
#define MASTER "authmaster"

typedef struct sentinel_proc {
  pid_t pid;
  int port;
  char dir[64];
} sentinel_proc;

static sentinel_proc sp;

/* One sentinel watching srv (quorum 1; it knows the master's password
 * through auth-pass), its own AUTH set by `auth_conf` (config lines). */
static void sentinel_up_conf(const char *auth_conf) {
  snprintf(sp.dir, sizeof sp.dir, "/tmp/perfc-sauth-XXXXXX");
  cr_assert_not_null(mkdtemp(sp.dir));
  for (int attempt = 0; attempt < 5 && sp.pid == 0; attempt++) {
    sp.port = tr_free_port();
    char conf[128];
    snprintf(conf, sizeof conf, "%s/s%d.conf", sp.dir, sp.port);
    FILE *f = fopen(conf, "w");
    cr_assert_not_null(f);
    fprintf(f,
            "port %d\nbind 127.0.0.1\ndir %s\nprotected-mode no\n%s"
            "sentinel monitor " MASTER " 127.0.0.1 %d 1\n"
            "sentinel auth-pass " MASTER " " PASS "\n",
            sp.port, sp.dir, auth_conf, srv.port);
    fclose(f);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent)
        _exit(127);
      int devnull = open("/dev/null", O_RDWR);
      if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
        dup2(devnull, 2);
      }
      execlp("redis-server", "redis-server", conf, "--sentinel", (char *)NULL);
      _exit(127);
    }
    for (int i = 0; i < 250; i++) {
      if (tr_ping(sp.port)) { /* -NOAUTH: it is up and wants a password */
        sp.pid = pid;
        break;
      }
      if (waitpid(pid, NULL, WNOHANG) == pid)
        break;
      tr_sleep_ms(20);
    }
    if (sp.pid == 0) {
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
    }
  }
  cr_assert_neq(sp.pid, 0, "redis sentinel did not start");
}

/* One sentinel with `requirepass SPASS` (the default user's password). */
static void sentinel_up(void) {
  sentinel_up_conf("requirepass \"" SPASS "\"\n");
}

static void sentinel_down(void) {
  if (sp.pid > 0) {
    kill(sp.pid, SIGKILL);
    waitpid(sp.pid, NULL, 0);
  }
  if (sp.dir[0]) {
    char rm[128];
    snprintf(rm, sizeof rm, "rm -rf '%s'", sp.dir);
    if (system(rm) != 0)
      fprintf(stderr, "cannot remove %s\n", sp.dir);
  }
  memset(&sp, 0, sizeof sp);
  down();
}

static char sp_addr[32];
static const char *sp_addrs[1];

static perfc_redis_opts sentinel_opts(const char *pass, const char *spass) {
  perfc_redis_opts o = opts(NULL, pass);
  snprintf(sp_addr, sizeof sp_addr, "127.0.0.1:%d", sp.port);
  sp_addrs[0] = sp_addr;
  o.sentinels = sp_addrs;
  o.n_sentinels = 1;
  o.master_name = MASTER;
  o.sentinel_password = spass;
  return o;
}

Test(redis_auth, sentinel_with_passwords, .fini = sentinel_down) {
  sentinel_up();
  perfc_redis_opts o = sentinel_opts(PASS, SPASS);
  perfc_redis_pool *p = NULL;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0, "%s", perfc_last_error());
  cr_assert_eq(perfc_redis_set(p, "sk", S("via-sentinel"), 0), 0, "%s",
               perfc_last_error());
  get_is(p, "sk", "via-sentinel");
  perfc_redis_pool_free(p);

  /* The async client through the same sentinel, with the same passwords. */
  loop_up();
  perfc_redis_async_opts ao;
  perfc_redis_async_opts_init(&ao);
  ao.sentinels = sp_addrs;
  ao.n_sentinels = 1;
  ao.master_name = MASTER;
  ao.password = PASS;
  ao.sentinel_password = SPASS;
  ao.command_timeout_ms = 2000;
  job *j = calloc(1, sizeof *j);
  cr_assert_eq(perfc_redis_async_new(&j->ra, &ao), 0, "%s",
               perfc_last_error());
  /* Its first commands may be refused while the watcher asks the
   * sentinel: retried for a bounded time. */
  int64_t end = mono_ms() + 5000;
  for (;;) {
    perfc_redis_async *ra = j->ra;
    memset(j, 0, sizeof *j);
    j->ra = ra;
    run_on_loop(j);
    wait_job(j, 5000);
    if ((j->get_rc == 0 && j->get.rc == 0) || mono_ms() >= end)
      break;
    tr_sleep_ms(20);
  }
  cr_assert_eq(j->get_rc, 0, "%s", perfc_last_error());
  cr_assert_eq(j->get.rc, 0);
  cr_assert_eq(j->get.len, 7);
  cr_assert_eq(memcmp(j->get.value, "async-v", 7), 0);
  loop_down();
  perfc_redis_async_free(j->ra);
  free(j);
}

Test(redis_auth, sentinel_wrong_passwords, .fini = sentinel_down) {
  sentinel_up();
  /* The sentinel's password wrong: the sentinel refuses AUTH. */
  perfc_redis_opts o = sentinel_opts(PASS, "not it");
  perfc_redis_pool *p = NULL;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0);
  cr_assert_eq(perfc_redis_ping(p), PERFC_ECONFIG, "%s", perfc_last_error());
  cr_assert_not_null(strstr(perfc_last_error(), "AUTH failed"), "%s",
                     perfc_last_error());
  cr_assert_null(strstr(perfc_last_error(), "not it"), "%s",
                 perfc_last_error());
  perfc_redis_pool_free(p);
  /* None: the sentinel answers NOAUTH. */
  o = sentinel_opts(PASS, NULL);
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0);
  cr_assert_eq(perfc_redis_ping(p), PERFC_EIO);
  cr_assert_not_null(strstr(perfc_last_error(), "NOAUTH"), "%s",
                     perfc_last_error());
  perfc_redis_pool_free(p);
  /* The master's password wrong: the named master refuses AUTH. */
  o = sentinel_opts(WRONG, SPASS);
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0);
  cr_assert_eq(perfc_redis_ping(p), PERFC_ECONFIG, "%s", perfc_last_error());
  cr_assert_not_null(strstr(perfc_last_error(), "AUTH failed"), "%s",
                     perfc_last_error());
  cr_assert_null(strstr(perfc_last_error(), WRONG), "%s", perfc_last_error());
  perfc_redis_pool_free(p);
}

/* ---- Sentinel: an ACL user on the sentinel (Redis 6.2+) ---- */

/* Below, with the cache tests. */
static atomic_int cache_loads;
static void cache_get_on_loop(perfc_cache *c, const char *want);

#define SUSER "perfc-app"
/* With a space: only the argv form sends it whole. */
#define SUSER_PASS "sent acl pw"

#define SADMIN_PASS "sentinel-admin-pw"

/* The default user is off; SUSER may run only what a sentinel client
 * needs (PING, SENTINEL get-master-addr-by-name, SUBSCRIBE to
 * +switch-master): AUTH as SUSER is the only way in for perfc. The
 * test looks at the sentinel's clients as "admin". */
static void acl_sentinel_up(void) {
  sentinel_up_conf("user default off\n"
                   "user " SUSER " on \">" SUSER_PASS "\" resetchannels "
                   "&+switch-master -@all +ping +subscribe "
                   "+sentinel|get-master-addr-by-name\n"
                   "user admin on >" SADMIN_PASS " allchannels +@all\n");
}

/* How many of the sentinel's clients are logged in as SUSER and
 * subscribed to one channel (CLIENT LIST's user= and sub=), or -1. */
static int suser_subscribers(void) {
  struct timeval tv = {1, 0};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", sp.port, tv);
  if (!c || c->err) {
    if (c)
      redisFree(c);
    return -1;
  }
  int n = -1;
  redisReply *r = redisCommand(c, "AUTH admin %s", SADMIN_PASS);
  if (r && r->type == REDIS_REPLY_STATUS) {
    freeReplyObject(r);
    r = redisCommand(c, "CLIENT LIST");
    if (r && r->type == REDIS_REPLY_STRING) {
      n = 0;
      for (char *line = r->str; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
          *nl = 0;
        if (strstr(line, " user=" SUSER) && strstr(line, " sub=1 "))
          n++;
        line = nl ? nl + 1 : NULL;
      }
    }
  }
  if (r)
    freeReplyObject(r);
  redisFree(c);
  return n;
}

/* The sentinel's own view: SUSER's login works, the default user's does
 * not (else the test could pass without perfc sending the username). */
static void acl_sentinel_check(void) {
  struct timeval tv = {1, 0};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", sp.port, tv);
  cr_assert(c && !c->err);
  redisReply *r = redisCommand(c, "AUTH %s", SUSER_PASS);
  cr_assert(r && r->type == REDIS_REPLY_ERROR, "the default user is off");
  freeReplyObject(r);
  r = redisCommand(c, "AUTH %s %s", SUSER, SUSER_PASS);
  cr_assert(r && r->type == REDIS_REPLY_STATUS, "%s", r ? r->str : "");
  freeReplyObject(r);
  r = redisCommand(c, "SENTINEL get-master-addr-by-name %s", MASTER);
  cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2,
            "SUSER may ask for the master: %s",
            r && r->type == REDIS_REPLY_ERROR ? r->str : "");
  freeReplyObject(r);
  redisFree(c);
}

Test(redis_auth, sentinel_acl_user, .fini = sentinel_down) {
  acl_sentinel_up();
  acl_sentinel_check();
  perfc_redis_opts o = sentinel_opts(PASS, SUSER_PASS);
  o.sentinel_username = SUSER;
  perfc_redis_pool *p = NULL;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0, "%s", perfc_last_error());
  cr_assert_eq(perfc_redis_set(p, "acl", S("via-acl-sentinel"), 0), 0, "%s",
               perfc_last_error());
  get_is(p, "acl", "via-acl-sentinel");
  /* The watcher subscribed to +switch-master as SUSER (the channel is
   * allowed to it): it would hear a failover. */
  int subs = 0;
  int64_t until = mono_ms() + 5000;
  while ((subs = suser_subscribers()) < 1 && mono_ms() < until)
    tr_sleep_ms(20);
  cr_assert_eq(subs, 1, "the watcher is not subscribed as " SUSER " (%d)",
               subs);

  /* A cache on that pool: its own async client (the loop's Redis reads)
   * resolves the master as SUSER too. */
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.redis = p;
  co.no_l1 = true; /* every read goes to Redis */
  perfc_cache *c = NULL;
  cr_assert_eq(perfc_cache_new(&c, &co), 0, "%s", perfc_last_error());
  loop_up();
  atomic_store(&cache_loads, 0);
  cache_get_on_loop(c, "loaded:ck"); /* miss: loaded, filled on the loop */
  cache_get_on_loop(c, "loaded:ck"); /* from Redis, on the loop */
  cr_assert_eq(atomic_load(&cache_loads), 1);
  perfc_cache_stats st;
  perfc_cache_stats_get(c, &st);
  cr_assert_eq(st.l2_errors, 0, "the loop's reads were refused");
  cr_assert_eq(st.l2_hits, 1);
  loop_down();
  perfc_cache_free(c);
  perfc_redis_pool_free(p);

  /* The async client: its master comes from the watcher thread, which
   * logs in as SUSER too. */
  loop_up();
  perfc_redis_async_opts ao;
  perfc_redis_async_opts_init(&ao);
  ao.sentinels = sp_addrs;
  ao.n_sentinels = 1;
  ao.master_name = MASTER;
  ao.password = PASS;
  ao.sentinel_username = SUSER;
  ao.sentinel_password = SUSER_PASS;
  ao.command_timeout_ms = 2000;
  job *j = calloc(1, sizeof *j);
  cr_assert_eq(perfc_redis_async_new(&j->ra, &ao), 0, "%s", perfc_last_error());
  int64_t end = mono_ms() + 5000;
  for (;;) {
    perfc_redis_async *ra = j->ra;
    memset(j, 0, sizeof *j);
    j->ra = ra;
    run_on_loop(j);
    wait_job(j, 5000);
    if ((j->get_rc == 0 && j->get.rc == 0) || mono_ms() >= end)
      break;
    tr_sleep_ms(20);
  }
  cr_assert_eq(j->get_rc, 0, "%s", perfc_last_error());
  cr_assert_eq(j->get.rc, 0);
  cr_assert_eq(j->get.len, 7);
  cr_assert_eq(memcmp(j->get.value, "async-v", 7), 0);
  loop_down();
  perfc_redis_async_free(j->ra);
  free(j);
}

Test(redis_auth, sentinel_acl_user_wrong, .fini = sentinel_down) {
  acl_sentinel_up();
  log_start();
  char addr[64];
  snprintf(addr, sizeof addr, "sentinel 127.0.0.1:%d", sp.port);
  /* A user the sentinel does not have, with SUSER's password; SUSER with
   * a wrong password; no username (the default user, which is off). */
  const char *users[] = {"mallory", SUSER, NULL};
  const char *passes[] = {SUSER_PASS, WRONG, SUSER_PASS};
  for (int i = 0; i < 3; i++) {
    perfc_redis_opts o = sentinel_opts(PASS, passes[i]);
    o.sentinel_username = users[i];
    perfc_redis_pool *p = NULL;
    cr_assert_eq(perfc_redis_pool_new(&p, &o), 0, "%s", perfc_last_error());
    int64_t t0 = mono_ms();
    cr_assert_eq(perfc_redis_ping(p), PERFC_ECONFIG, "case %d: %s", i,
                 perfc_last_error());
    cr_assert_lt(mono_ms() - t0, 3000, "case %d: not a hang", i);
    const char *e = perfc_last_error();
    cr_assert_not_null(strstr(e, "AUTH failed"), "case %d: %s", i, e);
    cr_assert_not_null(strstr(e, addr), "case %d: names the sentinel: %s", i,
                       e);
    if (users[i])
      cr_assert_not_null(strstr(e, users[i]), "case %d: names the user: %s", i,
                         e);
    cr_assert_null(strstr(e, passes[i]), "case %d: %s", i, e);
    cr_assert_null(strstr(e, PASS), "case %d: %s", i, e);
    perfc_redis_pool_free(p);
  }
  log_end();
  pthread_mutex_lock(&log_mu);
  cr_assert_null(strstr(log_buf, SUSER_PASS), "%s", log_buf);
  cr_assert_null(strstr(log_buf, WRONG), "%s", log_buf);
  pthread_mutex_unlock(&log_mu);
}

/* ---- the cache (its pool, subscriber and async client) and the shared
 * rate limiter, built from options with the password ---- */

static atomic_int cache_loads;

static int async_loader(const char *key, perfc_cache_load *load, void *ud) {
  (void)ud;
  atomic_fetch_add(&cache_loads, 1);
  char v[64];
  int n = snprintf(v, sizeof v, "loaded:%s", key);
  uint8_t *val = malloc((size_t)n);
  memcpy(val, v, (size_t)n);
  perfc_cache_load_done(load, 0, val, (size_t)n);
  return 0;
}

typedef struct cache_job {
  perfc_cache *c;
  int started;
  res r;
  atomic_int ran;
} cache_job;

static void cache_result(int rc, const uint8_t *val, size_t len, void *ud) {
  res *r = ud;
  r->rc = rc;
  if (rc == 0 && len < sizeof r->value) {
    memcpy(r->value, val, len);
    r->len = len;
  }
  atomic_store(&r->done, 1);
}

static void cache_get_run(void *ud) {
  cache_job *j = ud;
  j->started = perfc_cache_get_or_load_async(j->c, "ck", 0, 0, async_loader,
                                             NULL, cache_result, &j->r);
  atomic_store(&j->ran, 1);
}

/* perfc_cache_get_or_load_async of "ck" on the loop: L2 is read and filled
 * through the cache's async client. */
static void cache_get_on_loop(perfc_cache *c, const char *want) {
  cache_job j = {.c = c};
  perfc_loop_task *t;
  cr_assert_eq(perfc_loop_task_new(&t, loop, cache_get_run, &j), 0);
  perfc_loop_task_post(t);
  int64_t end = mono_ms() + 5000;
  while ((!atomic_load(&j.ran) || !atomic_load(&j.r.done)) && mono_ms() < end)
    tr_sleep_ms(1);
  perfc_loop_task_free(t);
  cr_assert_eq(j.started, 0);
  cr_assert(atomic_load(&j.r.done));
  cr_assert_eq(j.r.rc, 0);
  cr_assert_eq(j.r.len, strlen(want));
  cr_assert_eq(memcmp(j.r.value, want, j.r.len), 0);
}

Test(redis_auth, cache_and_ratelimit_store_with_password) {
  perfc_metrics_registry *reg;
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
  perfc_redis_opts o = opts(NULL, PASS);
  o.registry = reg;
  perfc_redis_pool *p = NULL;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.redis = p;
  co.registry = reg;
  co.no_l1 = true; /* every read goes to Redis */
  perfc_cache *c = NULL;
  cr_assert_eq(perfc_cache_new(&c, &co), 0, "%s", perfc_last_error());
  /* Its invalidation subscriber got in. */
  cr_assert_eq(perfc_cache_wait_subscribed(c, 5000), 0, "%s",
               perfc_last_error());
  loop_up();
  atomic_store(&cache_loads, 0);
  cache_get_on_loop(c, "loaded:ck"); /* miss: loaded, filled on the loop */
  cache_get_on_loop(c, "loaded:ck"); /* from Redis, on the loop */
  cr_assert_eq(atomic_load(&cache_loads), 1);
  perfc_cache_stats st;
  perfc_cache_stats_get(c, &st);
  cr_assert_eq(st.l2_errors, 0);
  cr_assert_eq(st.l2_hits, 1);
  loop_down();
  perfc_cache_free(c);
  perfc_redis_pool_free(p);
  perfc_metrics_registry_free(reg);

  /* The shared rate limiter's store: its own pool, the same AUTH. */
  perfc_ratelimit_redis_opts ro;
  perfc_ratelimit_redis_opts_init(&ro);
  perfc_redis_opts rpo = opts(NULL, PASS);
  ro.redis = &rpo;
  perfc_ratelimit_redis *rl = NULL;
  cr_assert_eq(perfc_ratelimit_redis_new(&rl, &ro), 0);
  const perfc_ratelimit_store *store = perfc_ratelimit_redis_store(rl);
  /* A bucket of 2: admitted, admitted, refused. */
  cr_assert_eq(store->take(store->self, "b", 1, 1000000, 2000000), 1);
  cr_assert_eq(store->take(store->self, "b", 1, 1000000, 2000000), 1);
  cr_assert_eq(store->take(store->self, "b", 1, 1000000, 2000000), 0);
  perfc_ratelimit_redis_free(rl);
  rpo.password = NULL; /* no AUTH: the store cannot decide */
  cr_assert_eq(perfc_ratelimit_redis_new(&rl, &ro), 0);
  store = perfc_ratelimit_redis_store(rl);
  cr_assert_lt(store->take(store->self, "b", 1, 1000000, 2000000), 0);
  perfc_ratelimit_redis_free(rl);
}
