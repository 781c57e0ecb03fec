/*
 * redis_cluster_server.h — starts a real Redis Cluster on loopback for the
 * cluster tests: six `redis-server --cluster-enabled yes` on free ports,
 * joined by `redis-cli --cluster create ... --cluster-replicas 1` into
 * three masters with one replica each; stops (kills) every process.
 *
 * Room: unit test helpers. Header-only, like redis_server.h (whose port
 * picking and PING probe it reuses). Every server runs with
 * PR_SET_PDEATHSIG, persistence off, its own temporary directory, and a
 * short cluster-node-timeout (TC_NODE_TIMEOUT_MS) so an automatic
 * failover completes within a few seconds. Every wait is bounded.
 */
#ifndef PERFC_TEST_REDIS_CLUSTER_SERVER_H
#define PERFC_TEST_REDIS_CLUSTER_SERVER_H

#include <hiredis/hiredis.h>
#include <stdarg.h>

/* Only part of redis_server.h is used here; its other helpers would warn
 * at the end of the translation unit. */
#pragma GCC diagnostic ignored "-Wunused-function"
#include "redis_server.h"

#define TC_NODES 6
#define TC_NODE_TIMEOUT_MS 1000

typedef struct test_cluster {
  test_redis n[TC_NODES];
  char seeds[TC_NODES][32]; /* "127.0.0.1:<port>" */
  const char *seed_ptrs[TC_NODES];
} test_cluster;

/* Set before tc_start(): every node runs with --requirepass and
 * --masterauth this, and tc_cmd() and redis-cli authenticate with it.
 * NULL = no password. */
static const char *tc_password;

/* Runs a command on node port `port` (hiredis, 1 s timeout). NULL on
 * failure. */
static redisReply *tc_cmd(int port, const char *fmt, ...) {
  struct timeval tv = {1, 0};
  redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
  if (!c || c->err) {
    if (c)
      redisFree(c);
    return NULL;
  }
  redisSetTimeout(c, tv);
  if (tc_password) {
    redisReply *a = redisCommand(c, "AUTH %s", tc_password);
    if (a)
      freeReplyObject(a);
  }
  va_list ap;
  va_start(ap, fmt);
  redisReply *r = redisvCommand(c, fmt, ap);
  va_end(ap);
  redisFree(c);
  return r;
}

static int tc_node_start(test_redis *tr) {
  char port[16], cfg[96], bus[16];
  snprintf(port, sizeof port, "%d", tr->port);
  /* The cluster bus port defaults to port + 10000, which may be taken or
   * above 65535 (redis-server then refuses to start): pick it too. */
  int bus_port = tr_free_port();
  if (bus_port <= 0 || bus_port == tr->port)
    return -1;
  snprintf(bus, sizeof bus, "%d", bus_port);
  snprintf(cfg, sizeof cfg, "nodes-%d.conf", tr->port);
  char nto[16];
  snprintf(nto, sizeof nto, "%d", TC_NODE_TIMEOUT_MS);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0)
    return -1;
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
    const char *argv[] = {
        "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", tr->dir, "--daemonize", "no",
        "--protected-mode", "no", "--cluster-enabled", "yes",
        "--cluster-config-file", cfg, "--cluster-node-timeout", nto,
        /* A replica's first sync starts at once, not after the default
         * 5 s wait for more replicas; CLUSTER SLOTS lists a replica once
         * its replication offset is not 0, which on an idle master takes
         * the first replication PING (10 s by default). */
        "--repl-diskless-sync-delay", "0", "--repl-ping-replica-period", "1",
        "--cluster-port", bus,
        tc_password ? "--requirepass" : NULL, tc_password, "--masterauth",
        tc_password, NULL};
    execvp("redis-server", (char *const *)argv);
    _exit(127);
  }
  tr->pid = pid;
  for (int i = 0; i < 250; i++) {
    if (tr_ping(tr->port))
      return 0;
    if (waitpid(pid, NULL, WNOHANG) == pid) {
      tr->pid = 0;
      return -1;
    }
    tr_sleep_ms(20);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  tr->pid = 0;
  return -1;
}

static void tc_stop(test_cluster *tc) {
  for (int i = 0; i < TC_NODES; i++) {
    tr_kill(&tc->n[i]);
    tr_stop(&tc->n[i]);
  }
}

/* Runs a program to completion (stdout/stderr to /dev/null), at most
 * `timeout_ms`. Returns its exit status, or -1. */
static int tc_run(char *const argv[], long timeout_ms) {
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0)
    return -1;
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
    execvp(argv[0], argv);
    _exit(127);
  }
  for (long waited = 0; waited <= timeout_ms; waited += 20) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid)
      return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    tr_sleep_ms(20);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return -1;
}

/* 1 when every live node says cluster_state:ok and knows all 16384 slots
 * as assigned and ok. */
static int tc_all_ok(test_cluster *tc) {
  for (int i = 0; i < TC_NODES; i++) {
    if (tc->n[i].pid <= 0)
      continue;
    redisReply *r = tc_cmd(tc->n[i].port, "CLUSTER INFO");
    int ok = r && r->type == REDIS_REPLY_STRING &&
             strstr(r->str, "cluster_state:ok") &&
             strstr(r->str, "cluster_slots_ok:16384");
    if (r)
      freeReplyObject(r);
    if (!ok)
      return 0;
  }
  return 1;
}

static int tc_wait_ok(test_cluster *tc, long timeout_ms) {
  for (long waited = 0; waited <= timeout_ms; waited += 50) {
    if (tc_all_ok(tc))
      return 0;
    tr_sleep_ms(50);
  }
  return -1;
}

/* Starts six nodes and creates the cluster. 0 or -1. */
static int tc_start(test_cluster *tc) {
  memset(tc, 0, sizeof *tc);
  for (int i = 0; i < TC_NODES; i++) {
    test_redis *tr = &tc->n[i];
    snprintf(tr->dir, sizeof tr->dir, "/tmp/perfc-rcluster-XXXXXX");
    if (!mkdtemp(tr->dir))
      goto fail;
    int started = 0;
    for (int attempt = 0; attempt < 5 && !started; attempt++) {
      tr->port = tr_free_port();
      started = tr->port > 0 && tc_node_start(tr) == 0;
    }
    if (!started)
      goto fail;
    snprintf(tc->seeds[i], sizeof tc->seeds[i], "127.0.0.1:%d", tr->port);
    tc->seed_ptrs[i] = tc->seeds[i];
  }
  {
    char *argv[24];
    int a = 0;
    argv[a++] = "redis-cli";
    if (tc_password) {
      argv[a++] = "-a";
      argv[a++] = (char *)tc_password;
      argv[a++] = "--no-auth-warning";
    }
    argv[a++] = "--cluster";
    argv[a++] = "create";
    for (int i = 0; i < TC_NODES; i++)
      argv[a++] = tc->seeds[i];
    argv[a++] = "--cluster-replicas";
    argv[a++] = "1";
    argv[a++] = "--cluster-yes";
    argv[a] = NULL;
    if (tc_run(argv, 20000) != 0)
      goto fail;
  }
  if (tc_wait_ok(tc, 15000) != 0)
    goto fail;
  /* Every replica attached (its master link up), so a failover has
   * someone to promote. */
  for (long waited = 0; waited <= 10000; waited += 50) {
    int replicas = 0;
    for (int i = 0; i < TC_NODES; i++) {
      redisReply *r = tc_cmd(tc->n[i].port, "INFO replication");
      if (r && r->type == REDIS_REPLY_STRING && strstr(r->str, "role:slave") &&
          strstr(r->str, "master_link_status:up"))
        replicas++;
      if (r)
        freeReplyObject(r);
    }
    /* ... and every node's CLUSTER SLOTS names the replica of each range
     * (the masters learn their replicas by gossip, a moment later). */
    for (int i = 0; i < TC_NODES && replicas == TC_NODES / 2; i++) {
      redisReply *r = tc_cmd(tc->n[i].port, "CLUSTER SLOTS");
      if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3)
        replicas = 0;
      for (size_t k = 0; r && k < r->elements; k++)
        if (r->element[k]->elements < 4)
          replicas = 0;
      if (r)
        freeReplyObject(r);
    }
    if (replicas == TC_NODES / 2)
      return 0;
    tr_sleep_ms(50);
  }
fail:
  tc_stop(tc);
  return -1;
}

/* The node index (into tc->n) whose port is `port`, or -1. */
static int tc_index_of_port(test_cluster *tc, int port) {
  for (int i = 0; i < TC_NODES; i++)
    if (tc->n[i].port == port)
      return i;
  return -1;
}

/* The node index serving `slot` as master, asked of a live node. */
static int tc_master_of(test_cluster *tc, unsigned slot) {
  for (int i = 0; i < TC_NODES; i++) {
    if (tc->n[i].pid <= 0)
      continue;
    redisReply *r = tc_cmd(tc->n[i].port, "CLUSTER SLOTS");
    int found = -1;
    if (r && r->type == REDIS_REPLY_ARRAY)
      for (size_t k = 0; k < r->elements && found < 0; k++) {
        redisReply *e = r->element[k];
        if (e->elements >= 3 && (unsigned)e->element[0]->integer <= slot &&
            slot <= (unsigned)e->element[1]->integer)
          found = tc_index_of_port(tc, (int)e->element[2]->element[1]->integer);
      }
    if (r)
      freeReplyObject(r);
    if (found >= 0)
      return found;
  }
  return -1;
}

/* The node id of node i ("CLUSTER MYID"), into id[41]. */
static int tc_id(test_cluster *tc, int i, char id[41]) {
  redisReply *r = tc_cmd(tc->n[i].port, "CLUSTER MYID");
  int ok = r && r->type == REDIS_REPLY_STRING && r->len == 40;
  if (ok)
    memcpy(id, r->str, 41);
  if (r)
    freeReplyObject(r);
  return ok ? 0 : -1;
}

/* The replica of master node m (by its INFO replication), or -1. */
static int tc_replica_of(test_cluster *tc, int m) {
  for (int i = 0; i < TC_NODES; i++) {
    if (i == m || tc->n[i].pid <= 0)
      continue;
    redisReply *r = tc_cmd(tc->n[i].port, "INFO replication");
    char want[48];
    snprintf(want, sizeof want, "master_port:%d\r", tc->n[m].port);
    int yes = r && r->type == REDIS_REPLY_STRING && strstr(r->str, want);
    if (r)
      freeReplyObject(r);
    if (yes)
      return i;
  }
  return -1;
}

#endif /* PERFC_TEST_REDIS_CLUSTER_SERVER_H */
