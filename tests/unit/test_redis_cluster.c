/* test_redis_cluster.c — Redis Cluster support (data/redis_cluster.c and the
 * cluster mode of data/redis.c and cache.c) against a real six-node
 * redis-server 7 cluster on loopback (redis_cluster_server.h): CRC16 and
 * hash tags against the spec's vectors, MOVED and ASK forced with
 * CLUSTER SETSLOT / MIGRATE, MGET across slots reassembled in order, slots
 * resharded under load with redis-cli, a master killed under load (its
 * replica promoted by the automatic failover) with every acknowledged
 * write read back, and two cache instances with L1 on through a manual
 * failover of the invalidation channel's master: no stale read. */
#include <criterion/criterion.h>
#include <perfc/cache.h>
#include <perfc/loop.h>
#include <perfc/metrics.h>
#include <perfc/ratelimit_redis.h>
#include <perfc/redis.h>
#include <perfc/redis_async.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "data/redis_cluster_internal.h"
#include "redis_cluster_server.h"

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- pure: slots, hash tags, redirections, key positions ---- */

Test(cluster_slots, crc16_and_hash_tags) {
  cr_assert_eq(perfc__rc_crc16("123456789", 9), 0x31C3);
  cr_assert_eq(perfc__rc_slot("foo", 3), 12182);
  const char *a = "{user1000}.following", *b = "{user1000}.followers";
  cr_assert_eq(perfc__rc_slot(a, strlen(a)), perfc__rc_slot(b, strlen(b)));
  cr_assert_eq(perfc__rc_slot(a, strlen(a)), perfc__rc_slot("user1000", 8));
  /* The spec's edge cases: an empty tag hashes the whole key, only the
   * first '{' ... first '}' counts. */
  cr_assert_eq(perfc__rc_slot("foo{}{bar}", 10),
               perfc__rc_crc16("foo{}{bar}", 10) & 16383);
  cr_assert_eq(perfc__rc_slot("foo{{bar}}zap", 13), perfc__rc_slot("{bar", 4));
  cr_assert_eq(perfc__rc_slot("foo{bar}{zap}", 13), perfc__rc_slot("bar", 3));
  cr_assert_eq(perfc__rc_slot("foo{bar", 7),
               perfc__rc_crc16("foo{bar", 7) & 16383);
}

Test(cluster_slots, redirections_and_key_positions) {
  perfc__rc_redirect rd;
  const char *m = "MOVED 3999 127.0.0.1:6381";
  cr_assert_eq(perfc__rc_parse_redirect(m, strlen(m), &rd), 1);
  cr_assert_eq(rd.ask, 0);
  cr_assert_eq(rd.slot, 3999);
  cr_assert_str_eq(rd.host, "127.0.0.1");
  cr_assert_eq(rd.port, 6381);
  const char *k = "ASK 12182 ::1:7000";
  cr_assert_eq(perfc__rc_parse_redirect(k, strlen(k), &rd), 1);
  cr_assert_eq(rd.ask, 1);
  cr_assert_str_eq(rd.host, "::1");
  cr_assert_eq(rd.port, 7000);
  const char *bad[] = {"ERR unknown", "MOVED x 1.2.3.4:5", "MOVED 20000 a:1",
                       "ASK 1 host:0", "MOVED 1 hostnoport"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    cr_assert_eq(perfc__rc_parse_redirect(bad[i], strlen(bad[i]), &rd), 0, "%s",
                 bad[i]);
  const char *ev[] = {"EVALSHA", "abc", "1", "rl:key", "x"};
  cr_assert_eq(perfc__rc_key_index(5, ev, NULL), 3);
  const char *ev0[] = {"EVAL", "return 1", "0"};
  cr_assert_eq(perfc__rc_key_index(3, ev0, NULL), -1);
  const char *get[] = {"get", "k"};
  cr_assert_eq(perfc__rc_key_index(2, get, NULL), 1);
  const char *ping[] = {"PING", "x"};
  cr_assert_eq(perfc__rc_key_index(2, ping, NULL), -1);
  cr_assert_eq(perfc__rc_split_kind("mget", 4), 1);
  cr_assert_eq(perfc__rc_split_kind("DEL", 3), 2);
  cr_assert_eq(perfc__rc_split_kind("SET", 3), 0);
}

Test(cluster_slots, bad_seeds_are_einval) {
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  const char *seeds[] = {"127.0.0.1"};
  o.cluster_nodes = seeds;
  o.n_cluster_nodes = 1;
  perfc_redis_pool *p = NULL;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), PERFC_EINVAL);
  const char *seeds2[] = {"127.0.0.1:70000"};
  o.cluster_nodes = seeds2;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), PERFC_EINVAL);
  cr_assert_null(p);
}

/* ---- a live cluster ---- */

static test_cluster tc;
static perfc_metrics_registry *reg;

static void up(void) {
  cr_assert_eq(tc_start(&tc), 0, "six redis-server 7 nodes in a cluster");
  cr_assert_eq(perfc_metrics_registry_new(&reg), 0);
}
static void down(void) {
  tc_stop(&tc);
  perfc_metrics_registry_free(reg);
}

TestSuite(cluster, .init = up, .fini = down, .timeout = 90);

static perfc_redis_pool *cluster_pool(size_t nseeds, const char *name) {
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.cluster_nodes = tc.seed_ptrs;
  o.n_cluster_nodes = nseeds;
  o.registry = reg;
  o.name = name;
  o.command_timeout_ms = 1000;
  perfc_redis_pool *p = NULL;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0, "%s", perfc_last_error());
  return p;
}

static int get_str(perfc_redis_pool *p, const char *key, char *buf,
                   size_t cap) {
  uint8_t *v;
  size_t n;
  int rc = perfc_redis_get(p, key, &v, &n);
  if (rc != 0)
    return rc;
  snprintf(buf, cap, "%.*s", (int)n, (const char *)v);
  free(v);
  return 0;
}

Test(cluster, mget_across_slots_in_order_and_split_del) {
  /* One seed: the rest of the cluster is learned from CLUSTER SLOTS. */
  perfc_redis_pool *p = cluster_pool(1, "mget");
  enum { N = 300 };
  char keys[N][24], vals[N][24];
  const char *kp[N];
  perfc_redis_item items[N / 2];
  for (int i = 0; i < N; i++) {
    snprintf(keys[i], sizeof keys[i], "mk:%d", i);
    snprintf(vals[i], sizeof vals[i], "value-%d", i);
    kp[i] = keys[i];
  }
  /* Only the even keys exist. */
  for (int i = 0; i < N / 2; i++)
    items[i] =
        (perfc_redis_item){keys[2 * i],
                           {(const uint8_t *)vals[2 * i], strlen(vals[2 * i])},
                           60000};
  cr_assert_eq(perfc_redis_set_many(p, items, N / 2), 0, "%s",
               perfc_last_error());
  /* The keys really live on all three masters. */
  int on[TC_NODES] = {0};
  for (int i = 0; i < N; i++) {
    int m = tc_master_of(&tc, perfc__rc_slot(keys[i], strlen(keys[i])));
    cr_assert_geq(m, 0);
    on[m]++;
  }
  int masters = 0;
  for (int i = 0; i < TC_NODES; i++)
    masters += on[i] > 0;
  cr_assert_eq(masters, 3);

  perfc_redis_value out[N];
  cr_assert_eq(perfc_redis_mget(p, kp, N, out), 0, "%s", perfc_last_error());
  for (int i = 0; i < N; i++) {
    if (i % 2) {
      cr_assert_eq(out[i].found, 0, "key %d", i);
      continue;
    }
    cr_assert_eq(out[i].found, 1, "key %d", i);
    cr_assert_eq(out[i].len, strlen(vals[i]));
    cr_assert_eq(memcmp(out[i].data, vals[i], out[i].len), 0, "key %d", i);
  }
  perfc_redis_values_free(out, N);

  /* DEL across slots: split per slot, the counts summed. */
  const char **argv = calloc(N + 1, sizeof *argv);
  size_t *len = calloc(N + 1, sizeof *len);
  argv[0] = "DEL";
  len[0] = 3;
  for (int i = 0; i < N; i++) {
    argv[i + 1] = keys[i];
    len[i + 1] = strlen(keys[i]);
  }
  perfc__redis_cmd cmd = {N + 1, argv, len};
  redisReply *r = NULL;
  cr_assert_eq(perfc__redis_pipeline(p, &cmd, 1, &r), 0);
  cr_assert_eq(r->type, REDIS_REPLY_INTEGER);
  cr_assert_eq(r->integer, N / 2);
  freeReplyObject(r);
  free(argv);
  free(len);
  cr_assert_eq(perfc_redis_mget(p, kp, N, out), 0);
  for (int i = 0; i < N; i++)
    cr_assert_eq(out[i].found, 0);
  cr_assert_eq(perfc_redis_ping(p), 0);
  perfc_redis_pool_free(p);
}

/* Moves `slot` from node `from` to node `to` by hand (the cluster spec's
 * resharding steps), leaving it half-way (MIGRATING/IMPORTING with the
 * keys moved) when `finish` is 0. */
static void move_slot(int from, int to, unsigned slot, const char *key,
                      int finish) {
  char idf[41], idt[41];
  cr_assert_eq(tc_id(&tc, from, idf), 0);
  cr_assert_eq(tc_id(&tc, to, idt), 0);
  redisReply *r;
  r = tc_cmd(tc.n[to].port, "CLUSTER SETSLOT %u IMPORTING %s", slot, idf);
  cr_assert(r && r->type == REDIS_REPLY_STATUS);
  freeReplyObject(r);
  r = tc_cmd(tc.n[from].port, "CLUSTER SETSLOT %u MIGRATING %s", slot, idt);
  cr_assert(r && r->type == REDIS_REPLY_STATUS);
  freeReplyObject(r);
  r = tc_cmd(tc.n[from].port, "MIGRATE 127.0.0.1 %d %s 0 5000", tc.n[to].port,
             key);
  cr_assert(r && r->type == REDIS_REPLY_STATUS, "MIGRATE: %s",
            r ? r->str : "no reply");
  freeReplyObject(r);
  if (!finish)
    return;
  for (int i = 0; i < TC_NODES; i++) {
    r = tc_cmd(tc.n[i].port, "CLUSTER SETSLOT %u NODE %s", slot, idt);
    if (r)
      freeReplyObject(r);
  }
}

Test(cluster, ask_then_moved_followed) {
  perfc_redis_pool *p = cluster_pool(TC_NODES, "redir");
  const char *key = "redirect-me";
  unsigned slot = perfc__rc_slot(key, strlen(key));
  perfc_slice v = {(const uint8_t *)"v1", 2};
  cr_assert_eq(perfc_redis_set(p, key, v, 0), 0);
  int from = tc_master_of(&tc, slot);
  int to = -1;
  for (int i = 0; i < TC_NODES && to < 0; i++)
    if (i != from && tc_replica_of(&tc, from) != i) {
      redisReply *r = tc_cmd(tc.n[i].port, "ROLE");
      if (r && r->type == REDIS_REPLY_ARRAY &&
          strcmp(r->element[0]->str, "master") == 0)
        to = i;
      if (r)
        freeReplyObject(r);
    }
  cr_assert_geq(to, 0);
  perfc__rc *rc = perfc__redis_pool_cluster(p);
  cr_assert_eq(perfc__rc_port(rc, perfc__rc_route(rc, slot, 0)),
               tc.n[from].port);

  /* Half-way: the key is on `to`, the slot still owned by `from`, which
   * answers ASK: the client sends ASKING + GET to `to`. */
  move_slot(from, to, slot, key, 0);
  char buf[32];
  cr_assert_eq(get_str(p, key, buf, sizeof buf), 0, "%s", perfc_last_error());
  cr_assert_str_eq(buf, "v1");
  /* ASK does not change the map. */
  cr_assert_eq(perfc__rc_port(rc, perfc__rc_route(rc, slot, 0)),
               tc.n[from].port);

  /* Finished: `from` answers MOVED; the map learns the new owner. */
  move_slot(from, to, slot, key, 1);
  cr_assert_eq(get_str(p, key, buf, sizeof buf), 0, "%s", perfc_last_error());
  cr_assert_str_eq(buf, "v1");
  cr_assert_eq(perfc__rc_port(rc, perfc__rc_route(rc, slot, 0)), tc.n[to].port);
  perfc_slice v2 = {(const uint8_t *)"v2", 2};
  cr_assert_eq(perfc_redis_set(p, key, v2, 0), 0);
  redisReply *r = tc_cmd(tc.n[to].port, "GET %s", key);
  cr_assert(r && r->type == REDIS_REPLY_STRING);
  cr_assert_str_eq(r->str, "v2");
  freeReplyObject(r);
  perfc_redis_pool_free(p);
}

/* ---- load: writers counting acknowledged writes ---- */

#define LOAD_KEYS 4000

typedef struct load {
  perfc_redis_pool *p;
  atomic_int stop;
  atomic_int paused, pause;
  /* acked[i] = the last value number acknowledged for key i (0: none). */
  int acked[LOAD_KEYS];
  atomic_long writes, write_errors, reads, read_errors, mismatches;
  int64_t max_fail_ms; /* longest run of failed writes */
} load;

static void *load_main(void *arg) {
  load *l = arg;
  unsigned seq = 1;
  int64_t fail_since = 0;
  for (long it = 0; it < 2000000 && !atomic_load(&l->stop); it++) {
    if (atomic_load(&l->pause)) {
      atomic_store(&l->paused, 1);
      tr_sleep_ms(1);
      continue;
    }
    atomic_store(&l->paused, 0);
    int i = (int)(it % LOAD_KEYS);
    char key[24], val[24], got[24];
    snprintf(key, sizeof key, "load:%d", i);
    snprintf(val, sizeof val, "%u", seq);
    perfc_slice v = {(const uint8_t *)val, strlen(val)};
    if (perfc_redis_set(l->p, key, v, 0) == 0) {
      l->acked[i] = (int)seq;
      atomic_fetch_add(&l->writes, 1);
      if (fail_since) {
        int64_t d = mono_ms() - fail_since;
        if (d > l->max_fail_ms)
          l->max_fail_ms = d;
        fail_since = 0;
      }
    } else {
      atomic_fetch_add(&l->write_errors, 1);
      if (!fail_since)
        fail_since = mono_ms();
      tr_sleep_ms(1);
    }
    seq++;
    /* Read back one acknowledged key. */
    int j = (int)((it * 7919) % LOAD_KEYS);
    if (l->acked[j]) {
      snprintf(key, sizeof key, "load:%d", j);
      int rc = get_str(l->p, key, got, sizeof got);
      if (rc == 0) {
        atomic_fetch_add(&l->reads, 1);
        if (atoi(got) != l->acked[j])
          atomic_fetch_add(&l->mismatches, 1);
      } else {
        atomic_fetch_add(&l->read_errors, 1);
      }
    }
  }
  return NULL;
}

/* Every acknowledged write is there: reads each key back. */
static long verify_all(load *l, long *checked) {
  long lost = 0;
  *checked = 0;
  for (int i = 0; i < LOAD_KEYS; i++) {
    if (!l->acked[i])
      continue;
    char key[24], got[24] = "";
    snprintf(key, sizeof key, "load:%d", i);
    int rc = -1;
    for (int t = 0; t < 50 && rc != 0; t++)
      if ((rc = get_str(l->p, key, got, sizeof got)) != 0)
        tr_sleep_ms(20);
    (*checked)++;
    if (rc != 0 || atoi(got) != l->acked[i])
      lost++;
  }
  return lost;
}

Test(cluster, resharded_under_load) {
  load *l = calloc(1, sizeof *l);
  l->p = cluster_pool(TC_NODES, "reshard");
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, load_main, l), 0);
  tr_sleep_ms(300);
  /* Move 2000 slots (with their keys) from one master to another with
   * redis-cli, the operator's tool, while the load runs. */
  unsigned probe = perfc__rc_slot("load:0", 6);
  int from = tc_master_of(&tc, probe), to = -1;
  for (int i = 0; i < TC_NODES && to < 0; i++) {
    redisReply *r = tc_cmd(tc.n[i].port, "ROLE");
    if (i != from && r && r->type == REDIS_REPLY_ARRAY &&
        strcmp(r->element[0]->str, "master") == 0)
      to = i;
    if (r)
      freeReplyObject(r);
  }
  cr_assert_geq(to, 0);
  char idf[41], idt[41];
  cr_assert_eq(tc_id(&tc, from, idf), 0);
  cr_assert_eq(tc_id(&tc, to, idt), 0);
  long w0 = atomic_load(&l->writes);
  char *argv[] = {"redis-cli",
                  "--cluster",
                  "reshard",
                  tc.seeds[from],
                  "--cluster-from",
                  idf,
                  "--cluster-to",
                  idt,
                  "--cluster-slots",
                  "2000",
                  "--cluster-yes",
                  "--cluster-pipeline",
                  "50",
                  NULL};
  int st = tc_run(argv, 45000);
  cr_assert_eq(st, 0, "redis-cli --cluster reshard exited %d", st);
  long during = atomic_load(&l->writes) - w0;
  tr_sleep_ms(300);
  atomic_store(&l->stop, 1);
  pthread_join(t, NULL);
  cr_assert_eq(tc_wait_ok(&tc, 5000), 0);
  /* The slots did move, and the load kept going while they did. */
  cr_assert_eq(tc_master_of(&tc, probe), to, "slot %u did not move", probe);
  cr_assert_gt(during, 100, "only %ld writes during the reshard", during);
  long checked, lost = verify_all(l, &checked);
  cr_log_info("reshard: %ld writes (%ld during), %ld write errors, %ld reads, "
              "%ld read errors, %ld checked",
              atomic_load(&l->writes), during, atomic_load(&l->write_errors),
              atomic_load(&l->reads), atomic_load(&l->read_errors), checked);
  cr_assert_gt(checked, LOAD_KEYS / 2);
  cr_assert_eq(lost, 0, "%ld acknowledged writes lost", lost);
  cr_assert_eq(atomic_load(&l->mismatches), 0);
  /* Redirections are followed: no call failed. */
  cr_assert_eq(atomic_load(&l->write_errors), 0);
  cr_assert_eq(atomic_load(&l->read_errors), 0);
  perfc__rc *rc = perfc__redis_pool_cluster(l->p);
  cr_assert_eq(perfc__rc_port(rc, perfc__rc_route(rc, probe, 0)),
               tc.n[to].port);
  perfc_redis_pool_free(l->p);
  free(l);
}

/* Waits until `m`'s replica caught up with it (same replication offset),
 * so a crash of `m` loses no acknowledged write: Redis replicates
 * asynchronously, and a write acknowledged in the last instant before a
 * crash may be lost by Redis itself (docs/data-layer.md). */
static void wait_replica_synced(int m, int rep) {
  for (int t = 0; t < 200; t++) {
    long mo = -1, ro = -2;
    redisReply *r = tc_cmd(tc.n[m].port, "INFO replication");
    if (r && r->type == REDIS_REPLY_STRING) {
      const char *s = strstr(r->str, "master_repl_offset:");
      if (s)
        mo = atol(s + 19);
    }
    if (r)
      freeReplyObject(r);
    r = tc_cmd(tc.n[rep].port, "INFO replication");
    if (r && r->type == REDIS_REPLY_STRING) {
      const char *s = strstr(r->str, "slave_repl_offset:");
      if (s)
        ro = atol(s + 18);
    }
    if (r)
      freeReplyObject(r);
    if (mo == ro)
      return;
    tr_sleep_ms(10);
  }
  cr_assert_fail("replica of node %d did not catch up", m);
}

Test(cluster, master_killed_replica_promoted_no_acked_write_lost) {
  load *l = calloc(1, sizeof *l);
  l->p = cluster_pool(TC_NODES, "failover");
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, load_main, l), 0);
  tr_sleep_ms(500);
  unsigned probe = perfc__rc_slot("load:0", 6);
  int m = tc_master_of(&tc, probe);
  int rep = tc_replica_of(&tc, m);
  cr_assert_geq(rep, 0);
  /* Pause the writers, let the replica catch up, kill the master, resume:
   * the kill happens under load, with nothing unreplicated. */
  atomic_store(&l->pause, 1);
  for (int i = 0; i < 500 && !atomic_load(&l->paused); i++)
    tr_sleep_ms(1);
  wait_replica_synced(m, rep);
  long before = atomic_load(&l->writes);
  int64_t t_kill = mono_ms();
  tr_kill(&tc.n[m]);
  atomic_store(&l->pause, 0);
  /* Automatic failover: node timeout 1 s, then the election. */
  int promoted = 0;
  for (int i = 0; i < 300 && !promoted; i++) {
    redisReply *r = tc_cmd(tc.n[rep].port, "ROLE");
    promoted = r && r->type == REDIS_REPLY_ARRAY &&
               strcmp(r->element[0]->str, "master") == 0;
    if (r)
      freeReplyObject(r);
    if (!promoted)
      tr_sleep_ms(50);
  }
  cr_assert(promoted, "replica not promoted within 15 s");
  int64_t t_promoted = mono_ms();
  /* Calls recover: writes to the lost master's slots succeed again. */
  char key[24];
  int recovered = 0;
  int64_t t_rec = 0;
  for (int i = 0; i < 500 && !recovered; i++) {
    snprintf(key, sizeof key, "load:0");
    perfc_slice v = {(const uint8_t *)"probe", 5};
    recovered = perfc_redis_set(l->p, "{load:0}probe", v, 0) == 0;
    if (!recovered)
      tr_sleep_ms(10);
  }
  cr_assert(recovered, "writes to the failed-over slots still fail");
  t_rec = mono_ms();
  tr_sleep_ms(500);
  atomic_store(&l->stop, 1);
  pthread_join(t, NULL);
  cr_assert_gt(atomic_load(&l->writes), before + 100,
               "the load did not go on after the failover");
  long checked, lost = verify_all(l, &checked);
  cr_log_info("failover: promoted %lld ms after the kill, client writing "
              "again %lld ms after; %ld writes, %ld failed (longest failing "
              "run %lld ms), %ld checked",
              (long long)(t_promoted - t_kill), (long long)(t_rec - t_kill),
              atomic_load(&l->writes), atomic_load(&l->write_errors),
              (long long)l->max_fail_ms, checked);
  cr_assert_gt(checked, LOAD_KEYS / 2);
  cr_assert_eq(lost, 0, "%ld acknowledged writes lost", lost);
  cr_assert_eq(atomic_load(&l->mismatches), 0);
  /* The map names the promoted replica. */
  perfc__rc *rc = perfc__redis_pool_cluster(l->p);
  cr_assert_eq(perfc__rc_port(rc, perfc__rc_route(rc, probe, 0)),
               tc.n[rep].port);
  perfc_redis_pool_free(l->p);
  free(l);
}

/* ---- two cache instances, L1 on, invalidation over SPUBLISH ---- */

typedef struct vdb {
  pthread_mutex_t mu;
  int version;
} vdb;

static int vloader(const char *key, uint8_t **out, size_t *out_len, void *ud) {
  (void)key;
  vdb *db = ud;
  char v[24];
  pthread_mutex_lock(&db->mu);
  snprintf(v, sizeof v, "%d", db->version);
  pthread_mutex_unlock(&db->mu);
  *out = (uint8_t *)strdup(v);
  *out_len = strlen(v);
  return 0;
}

static int cache_read(perfc_cache *c, vdb *db, const char *key) {
  uint8_t *v;
  size_t n;
  if (perfc_cache_get_or_load(c, key, vloader, db, &v, &n) != 0)
    return -1;
  char buf[24];
  snprintf(buf, sizeof buf, "%.*s", (int)n, (const char *)v);
  free(v);
  return atoi(buf);
}

Test(cluster, two_caches_no_stale_read_across_failover) {
  vdb db = {PTHREAD_MUTEX_INITIALIZER, 1};
  perfc_redis_pool *pa = cluster_pool(TC_NODES, "ca");
  perfc_redis_pool *pb = cluster_pool(TC_NODES, "cb");
  perfc_cache *a, *b;
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = "users";
  co.registry = reg;
  co.l1_ttl_ms = 60000;
  co.redis = pa;
  cr_assert_eq(perfc_cache_new(&a, &co), 0, "%s", perfc_last_error());
  /* The other instance: its own metrics, as another process has. */
  perfc_metrics_registry *reg_b;
  cr_assert_eq(perfc_metrics_registry_new(&reg_b), 0);
  co.redis = pb;
  co.registry = reg_b;
  cr_assert_eq(perfc_cache_new(&b, &co), 0, "%s", perfc_last_error());
  cr_assert_eq(perfc_cache_wait_subscribed(a, 5000), 0);
  cr_assert_eq(perfc_cache_wait_subscribed(b, 5000), 0);
  const char *key = "user:42";
  const char *keys[] = {key};
  /* The channel's master, for the failover half-way. */
  const char *ch = "perfc:cache:invalidate:users";
  int chm = tc_master_of(&tc, perfc__rc_slot(ch, strlen(ch)));
  int chr = tc_replica_of(&tc, chm);
  cr_assert_geq(chr, 0);
  int stale_after_ack = 0, l1_hits_checked = 0, failed_over = 0;
  int64_t t_end = mono_ms() + 30000;
  for (int round = 0; round < 200 && mono_ms() < t_end; round++) {
    /* B holds the current version in L1. */
    int cur = cache_read(b, &db, key);
    cr_assert_eq(cur, db.version, "round %d", round);
    /* A writes: database first, then the invalidation. */
    pthread_mutex_lock(&db.mu);
    db.version++;
    pthread_mutex_unlock(&db.mu);
    cr_assert_eq(perfc_cache_invalidate(a, keys, 1), 0);
    /* B must see the new version: its L1 copy is dropped by the sharded
     * pub/sub message (or L1 is bypassed while B is not subscribed).
     * Delivery is asynchronous: the read is retried for at most 1 s. */
    int got = -1;
    int64_t until = mono_ms() + 1000;
    while ((got = cache_read(b, &db, key)) != db.version && mono_ms() < until)
      tr_sleep_ms(1);
    if (got != db.version)
      stale_after_ack++;
    l1_hits_checked++;
    if (round == 60) {
      /* Manual failover of the channel's master: the subscribers there
       * are dropped (sunsubscribe) and must follow to the new master. */
      redisReply *r = tc_cmd(tc.n[chr].port, "CLUSTER FAILOVER");
      cr_assert(r && r->type == REDIS_REPLY_STATUS);
      freeReplyObject(r);
      for (int i = 0; i < 200 && !failed_over; i++) {
        r = tc_cmd(tc.n[chr].port, "ROLE");
        failed_over = r && r->type == REDIS_REPLY_ARRAY &&
                      strcmp(r->element[0]->str, "master") == 0;
        if (r)
          freeReplyObject(r);
        tr_sleep_ms(25);
      }
      cr_assert(failed_over, "manual failover did not complete");
    }
  }
  cr_assert(failed_over);
  cr_assert_gt(l1_hits_checked, 100);
  cr_assert_eq(stale_after_ack, 0,
               "%d stale reads after an acknowledged "
               "update",
               stale_after_ack);
  /* Both subscribers follow the channel to its new master. */
  cr_assert_eq(perfc_cache_wait_subscribed(a, 5000), 0);
  cr_assert_eq(perfc_cache_wait_subscribed(b, 5000), 0);
  /* And after it an update is still seen through L1: */
  cr_assert_eq(cache_read(b, &db, key), db.version);
  cr_assert_eq(cache_read(b, &db, key), db.version); /* L1 hit */
  pthread_mutex_lock(&db.mu);
  db.version++;
  pthread_mutex_unlock(&db.mu);
  cr_assert_eq(perfc_cache_invalidate(a, keys, 1), 0);
  int got = -1;
  for (int i = 0; i < 1000 && got != db.version; i++) {
    got = cache_read(b, &db, key);
    if (got != db.version)
      tr_sleep_ms(1);
  }
  cr_assert_eq(got, db.version);
  perfc_cache_free(a);
  perfc_cache_free(b);
  perfc_redis_pool_free(pa);
  perfc_redis_pool_free(pb);
  perfc_metrics_registry_free(reg_b);
}

/* ---- the client on the loops ---- */

typedef struct ares {
  atomic_int done;
  int rc;
  char val[32];
} ares;

static void aget_done(int rc, const uint8_t *v, size_t n, void *ud) {
  ares *a = ud;
  a->rc = rc;
  if (rc == 0)
    snprintf(a->val, sizeof a->val, "%.*s", (int)n, (const char *)v);
  atomic_store(&a->done, 1);
}

static void acmd_done(int rc, const perfc_redis_reply *rep, void *ud) {
  ares *a = ud;
  a->rc = rc != 0 ? rc : rep->type == PERFC_REDIS_REPLY_ERROR ? PERFC_EIO : 0;
  atomic_store(&a->done, 1);
}

typedef struct aload {
  perfc_redis_async *ra;
  int n;
  ares *res;
  const char *prefix;
  int set; /* 1: SET key value, 0: GET */
  int issue_errors;
} aload;

static void aload_run(void *arg) {
  aload *l = arg;
  for (int i = 0; i < l->n; i++) {
    char key[32], val[32];
    snprintf(key, sizeof key, "%s%d", l->prefix, i);
    snprintf(val, sizeof val, "av-%d", i);
    int rc;
    if (l->set) {
      const char *argv[] = {"SET", key, val};
      rc = perfc_redis_async_command(l->ra, 3, argv, NULL, acmd_done,
                                     &l->res[i]);
    } else {
      rc = perfc_redis_async_get(l->ra, key, aget_done, &l->res[i]);
    }
    if (rc != 0) {
      l->issue_errors++;
      l->res[i].rc = rc;
      atomic_store(&l->res[i].done, 1);
    }
  }
}

typedef struct loop_job {
  void (*fn)(void *);
  void *arg;
  atomic_int done;
} loop_job;

static void loop_job_run(void *ud) {
  loop_job *j = ud;
  j->fn(j->arg);
  atomic_store(&j->done, 1);
}

static void *loop_main(void *ud) {
  perfc_loop_run(ud);
  return NULL;
}

static void run_on(perfc_loop *loop, void (*fn)(void *), void *arg) {
  loop_job j = {.fn = fn, .arg = arg};
  perfc_loop_task *t;
  cr_assert_eq(perfc_loop_task_new(&t, loop, loop_job_run, &j), 0);
  perfc_loop_task_post(t);
  for (int i = 0; i < 5000 && !atomic_load(&j.done); i++)
    tr_sleep_ms(1);
  cr_assert(atomic_load(&j.done));
  perfc_loop_task_free(t);
}

static void wait_all(ares *r, int n) {
  for (int i = 0; i < n; i++)
    for (int t = 0; t < 5000 && !atomic_load(&r[i].done); t++)
      tr_sleep_ms(1);
  for (int i = 0; i < n; i++)
    cr_assert(atomic_load(&r[i].done), "command %d got no callback", i);
}

typedef struct get1_arg {
  perfc_redis_async *ra;
  ares *a;
  const char *key;
} get1_arg;

static void get1(void *arg) {
  get1_arg *g = arg;
  if (perfc_redis_async_get(g->ra, g->key, aget_done, g->a) != 0) {
    g->a->rc = -1;
    atomic_store(&g->a->done, 1);
  }
}

Test(cluster, async_client_routes_by_slot_and_follows_ask_moved) {
  perfc_redis_async_opts o;
  perfc_redis_async_opts_init(&o);
  o.cluster_nodes = tc.seed_ptrs;
  o.n_cluster_nodes = 1; /* the rest is learned */
  o.command_timeout_ms = 2000;
  o.registry = reg;
  o.name = "async";
  perfc_redis_async *ra;
  cr_assert_eq(perfc_redis_async_new(&ra, &o), 0, "%s", perfc_last_error());
  perfc_loop *loop;
  cr_assert_eq(perfc_loop_new(&loop), 0);
  pthread_t lt;
  cr_assert_eq(pthread_create(&lt, NULL, loop_main, loop), 0);

  enum { N = 300 };
  ares *res = calloc(N, sizeof *res);
  aload l = {ra, N, res, "ak:", 1, 0};
  run_on(loop, aload_run, &l); /* SETs issued on the loop */
  wait_all(res, N);
  cr_assert_eq(l.issue_errors, 0);
  for (int i = 0; i < N; i++)
    cr_assert_eq(res[i].rc, 0, "SET %d: %d", i, res[i].rc);
  /* Written where the slot lives: read back through the sync pool. */
  perfc_redis_pool *p = cluster_pool(TC_NODES, "async-check");
  char buf[32];
  cr_assert_eq(get_str(p, "ak:7", buf, sizeof buf), 0);
  cr_assert_str_eq(buf, "av-7");
  /* GETs from a thread without a loop (the client's own loop). */
  memset(res, 0, N * sizeof *res);
  l.set = 0;
  aload_run(&l);
  wait_all(res, N);
  for (int i = 0; i < N; i++) {
    char want[32];
    snprintf(want, sizeof want, "av-%d", i);
    cr_assert_eq(res[i].rc, 0, "GET %d: %d", i, res[i].rc);
    cr_assert_str_eq(res[i].val, want);
  }

  /* ASK, then MOVED, on the loop. */
  const char *key = "ak:5";
  unsigned slot = perfc__rc_slot(key, strlen(key));
  int from = tc_master_of(&tc, slot), to = -1;
  for (int i = 0; i < TC_NODES && to < 0; i++) {
    redisReply *r = tc_cmd(tc.n[i].port, "ROLE");
    if (i != from && r && r->type == REDIS_REPLY_ARRAY &&
        strcmp(r->element[0]->str, "master") == 0)
      to = i;
    if (r)
      freeReplyObject(r);
  }
  cr_assert_geq(to, 0);
  /* Every key of that slot moves with it (MIGRATE of each). */
  move_slot(from, to, slot, key, 0);
  memset(res, 0, sizeof *res);
  get1_arg g = {ra, &res[0], key};
  run_on(loop, get1, &g);
  wait_all(res, 1);
  cr_assert_eq(res[0].rc, 0, "GET under ASK: %d (%s)", res[0].rc,
               perfc_last_error());
  cr_assert_str_eq(res[0].val, "av-5");
  move_slot(from, to, slot, key, 1);
  memset(res, 0, sizeof *res);
  run_on(loop, get1, &g);
  wait_all(res, 1);
  cr_assert_eq(res[0].rc, 0, "GET after MOVED: %d", res[0].rc);
  cr_assert_str_eq(res[0].val, "av-5");

  perfc_redis_async_stats st;
  perfc_redis_async_stats_get(ra, &st);
  cr_assert_geq(st.replies, 2 * N + 2);
  perfc_loop_stop(loop);
  pthread_join(lt, NULL);
  perfc_redis_async_free(ra);
  perfc_loop_free(loop);
  perfc_redis_pool_free(p);
  free(res);
}

/* ---- the shared rate limiter's EVALSHA on a cluster ---- */

Test(cluster, ratelimit_evalsha_routed_by_key_script_on_every_master) {
  perfc_redis_opts ro;
  perfc_redis_opts_init(&ro);
  ro.cluster_nodes = tc.seed_ptrs;
  ro.n_cluster_nodes = TC_NODES;
  ro.registry = reg;
  ro.name = "rl";
  perfc_ratelimit_redis_opts o;
  perfc_ratelimit_redis_opts_init(&o);
  o.redis = &ro;
  o.timeout_ms = 1000;
  perfc_ratelimit_redis *rl;
  cr_assert_eq(perfc_ratelimit_redis_new(&rl, &o), 0, "%s", perfc_last_error());
  const perfc_ratelimit_store *st = perfc_ratelimit_redis_store(rl);
  /* 30 buckets over the three masters: one token each per second, burst
   * 1 (tau = one interval): the first take admits, the second refuses. */
  int on[TC_NODES] = {0};
  for (int i = 0; i < 30; i++) {
    char key[32], full[48];
    int n = snprintf(key, sizeof key, "/pkg.S/M|k|%d", i);
    snprintf(full, sizeof full, "perfc:rl:%s", key);
    on[tc_master_of(&tc, perfc__rc_slot(full, strlen(full)))]++;
    cr_assert_eq(st->take(st->self, key, (size_t)n, 1000000, 1000000), 1,
                 "key %d: %s", i, perfc_last_error());
    cr_assert_eq(st->take(st->self, key, (size_t)n, 1000000, 1000000), 0,
                 "key %d", i);
  }
  int masters = 0;
  for (int i = 0; i < TC_NODES; i++)
    masters += on[i] > 0;
  cr_assert_eq(masters, 3, "the buckets live on every master");
  perfc_ratelimit_redis_stats s;
  perfc_ratelimit_redis_stats_get(rl, &s);
  cr_assert_eq(s.decisions, 60);
  cr_assert_eq(s.errors, 0);
  cr_assert_eq(s.script_loads, 1, "one SCRIPT LOAD reached every master");
  /* A new master without the script (as after a failover): NOSCRIPT, one
   * reload (again on every master), the decision. */
  for (int i = 0; i < TC_NODES; i++) {
    redisReply *r = tc_cmd(tc.n[i].port, "SCRIPT FLUSH");
    if (r)
      freeReplyObject(r);
  }
  cr_assert_eq(st->take(st->self, "/x|y|z", 6, 1000000, 1000000), 1, "%s",
               perfc_last_error());
  cr_assert_eq(st->take(st->self, "/x|y|q", 6, 1000000, 1000000), 1);
  perfc_ratelimit_redis_stats_get(rl, &s);
  cr_assert_eq(s.script_loads, 2);
  cr_assert_eq(s.errors, 0);
  perfc_ratelimit_redis_free(rl);
}

/* ---- replica reads (READONLY) ---- */

static long cmdstat_get_calls(int port) {
  redisReply *r = tc_cmd(port, "INFO commandstats");
  long calls = 0;
  if (r && r->type == REDIS_REPLY_STRING) {
    const char *s = strstr(r->str, "cmdstat_get:calls=");
    if (s)
      calls = atol(s + 18);
  }
  if (r)
    freeReplyObject(r);
  return calls;
}

Test(cluster, replica_reads_go_to_the_replica) {
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.cluster_nodes = tc.seed_ptrs;
  o.n_cluster_nodes = TC_NODES;
  o.cluster_read_replicas = 1;
  o.registry = reg;
  o.name = "replica-reads";
  perfc_redis_pool *p;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0);
  const char *key = "rr:1";
  perfc_slice v = {(const uint8_t *)"x", 1};
  cr_assert_eq(perfc_redis_set(p, key, v, 0), 0, "writes go to the master");
  unsigned slot = perfc__rc_slot(key, strlen(key));
  int m = tc_master_of(&tc, slot), rep = tc_replica_of(&tc, m);
  cr_assert_geq(rep, 0);
  perfc__rc *rc = perfc__redis_pool_cluster(p);
  cr_assert_eq(perfc__rc_port(rc, perfc__rc_route(rc, slot, 1)), tc.n[rep].port,
               "route %d (master %d, replica %d)",
               perfc__rc_port(rc, perfc__rc_route(rc, slot, 1)), tc.n[m].port,
               tc.n[rep].port);
  long before = cmdstat_get_calls(tc.n[rep].port);
  /* Replication is asynchronous: the replica has it within a bound. */
  char buf[8] = "";
  int got = -1;
  for (int i = 0; i < 100 && got != 0; i++)
    if ((got = get_str(p, key, buf, sizeof buf)) != 0)
      tr_sleep_ms(10);
  cr_assert_eq(got, 0, "%s", perfc_last_error());
  cr_assert_str_eq(buf, "x");
  cr_assert_gt(cmdstat_get_calls(tc.n[rep].port), before,
               "the GET was served by the replica");
  perfc_redis_pool_free(p);
}

/* ---- the cache's batch read (BatchGet) on a cluster ---- */

static atomic_int batch_loaded;

static int bloader(const char *const *keys, size_t n, perfc_cache_value *out,
                   void *ud) {
  (void)ud;
  atomic_fetch_add(&batch_loaded, (int)n);
  for (size_t i = 0; i < n; i++) {
    int id = -1;
    if (sscanf(keys[i], "bu:%d", &id) != 1 || id % 5 == 4)
      continue; /* every fifth does not exist */
    char v[32];
    snprintf(v, sizeof v, "user-%d", id);
    out[i].found = 1;
    out[i].len = strlen(v);
    out[i].data = (uint8_t *)strdup(v);
  }
  return 0;
}

Test(cluster, cache_batch_get_across_slots) {
  perfc_redis_pool *pa = cluster_pool(TC_NODES, "ba");
  perfc_metrics_registry *rb;
  cr_assert_eq(perfc_metrics_registry_new(&rb), 0);
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.cluster_nodes = tc.seed_ptrs;
  o.n_cluster_nodes = TC_NODES;
  o.registry = rb;
  perfc_redis_pool *pb;
  cr_assert_eq(perfc_redis_pool_new(&pb, &o), 0);
  perfc_cache_opts co;
  perfc_cache_opts_init(&co);
  co.name = "batch";
  co.registry = reg;
  co.redis = pa;
  perfc_cache *a, *b;
  cr_assert_eq(perfc_cache_new(&a, &co), 0, "%s", perfc_last_error());
  co.redis = pb;
  co.registry = rb;
  cr_assert_eq(perfc_cache_new(&b, &co), 0, "%s", perfc_last_error());
  enum { N = 100 };
  char keys[N][16];
  const char *kp[N];
  for (int i = 0; i < N; i++) {
    snprintf(keys[i], sizeof keys[i], "bu:%d", i);
    kp[i] = keys[i];
  }
  perfc_cache_value out[N];
  /* A: all loaded (one batch), filled into Redis over three masters. */
  cr_assert_eq(perfc_cache_get_many(a, kp, N, bloader, NULL, out), 0, "%s",
               perfc_last_error());
  cr_assert_eq(atomic_load(&batch_loaded), N);
  for (int i = 0; i < N; i++) {
    char want[32];
    snprintf(want, sizeof want, "user-%d", i);
    cr_assert_eq(out[i].found, i % 5 != 4, "key %d", i);
    if (out[i].found)
      cr_assert_eq(memcmp(out[i].data, want, out[i].len), 0, "key %d", i);
  }
  perfc_cache_values_free(out, N);
  /* B (empty L1): every key from Redis, in order, nothing loaded. */
  cr_assert_eq(perfc_cache_get_many(b, kp, N, bloader, NULL, out), 0);
  cr_assert_eq(atomic_load(&batch_loaded), N, "B loaded instead of MGET");
  for (int i = 0; i < N; i++) {
    char want[32];
    snprintf(want, sizeof want, "user-%d", i);
    cr_assert_eq(out[i].found, i % 5 != 4, "key %d", i);
    if (out[i].found)
      cr_assert_eq(memcmp(out[i].data, want, out[i].len), 0, "key %d", i);
  }
  perfc_cache_values_free(out, N);
  perfc_cache_stats st;
  perfc_cache_stats_get(b, &st);
  /* l2_hits counts the cached "not found" entries too. */
  cr_assert_eq(st.negative_hits, N / 5);
  cr_assert_eq(st.l2_hits, N, "l2 %llu neg %llu",
               (unsigned long long)st.l2_hits,
               (unsigned long long)st.negative_hits);
  cr_assert_eq(st.l2_errors, 0);
  perfc_cache_free(a);
  perfc_cache_free(b);
  perfc_redis_pool_free(pa);
  perfc_redis_pool_free(pb);
  perfc_metrics_registry_free(rb);
}

/* ---- a cluster whose nodes want a password ---- */

#define CLUSTER_PASS "cl s3cret"

static void auth_up(void) {
  tc_password = CLUSTER_PASS; /* --requirepass and --masterauth on each */
  up();
}
static void auth_down(void) {
  down();
  tc_password = NULL;
}

TestSuite(cluster_auth, .init = auth_up, .fini = auth_down, .timeout = 90);

/* Every node connection (the seed's CLUSTER SLOTS, each master's pool, the
 * async client's node clients) authenticates: keys on all three masters
 * are written and read back, synchronously and on a loop. */
Test(cluster_auth, pool_and_async_client_with_password) {
  perfc_redis_opts o;
  perfc_redis_opts_init(&o);
  o.cluster_nodes = tc.seed_ptrs;
  o.n_cluster_nodes = 1;
  o.registry = reg;
  o.name = "auth";
  o.command_timeout_ms = 1000;
  o.password = CLUSTER_PASS;
  perfc_redis_pool *p = NULL;
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0, "%s", perfc_last_error());
  enum { N = 60 };
  int on[TC_NODES] = {0};
  for (int i = 0; i < N; i++) {
    char key[24], val[24];
    snprintf(key, sizeof key, "auk:%d", i);
    snprintf(val, sizeof val, "auv-%d", i);
    perfc_slice v = {(const uint8_t *)val, strlen(val)};
    cr_assert_eq(perfc_redis_set(p, key, v, 0), 0, "%s", perfc_last_error());
    on[tc_master_of(&tc, perfc__rc_slot(key, strlen(key)))]++;
  }
  int masters = 0;
  for (int i = 0; i < TC_NODES; i++)
    masters += on[i] > 0;
  cr_assert_eq(masters, 3);
  char buf[32];
  cr_assert_eq(get_str(p, "auk:17", buf, sizeof buf), 0);
  cr_assert_str_eq(buf, "auv-17");

  perfc_redis_async_opts ao;
  perfc_redis_async_opts_init(&ao);
  ao.cluster_nodes = tc.seed_ptrs;
  ao.n_cluster_nodes = 1;
  ao.command_timeout_ms = 2000;
  ao.registry = reg;
  ao.name = "async-auth";
  ao.password = CLUSTER_PASS;
  perfc_redis_async *ra;
  cr_assert_eq(perfc_redis_async_new(&ra, &ao), 0, "%s", perfc_last_error());
  perfc_loop *loop;
  cr_assert_eq(perfc_loop_new(&loop), 0);
  pthread_t lt;
  cr_assert_eq(pthread_create(&lt, NULL, loop_main, loop), 0);
  ares *res = calloc(N, sizeof *res);
  aload l = {ra, N, res, "auk:", 0, 0};
  /* The first commands may find no slot map yet: retried, bounded. */
  for (int attempt = 0; attempt < 100; attempt++) {
    memset(res, 0, N * sizeof *res);
    l.issue_errors = 0;
    run_on(loop, aload_run, &l);
    wait_all(res, N);
    int bad = 0;
    for (int i = 0; i < N; i++)
      bad += res[i].rc != 0;
    if (bad == 0)
      break;
    tr_sleep_ms(20);
  }
  for (int i = 0; i < N; i++) {
    char want[32];
    snprintf(want, sizeof want, "auv-%d", i);
    cr_assert_eq(res[i].rc, 0, "GET %d: %d", i, res[i].rc);
    cr_assert_str_eq(res[i].val, want);
  }
  perfc_loop_stop(loop);
  pthread_join(lt, NULL);
  perfc_redis_async_free(ra);
  perfc_loop_free(loop);
  perfc_redis_pool_free(p);
  free(res);

  /* Without the password the slot map cannot even be read. */
  o.password = NULL;
  o.name = "noauth";
  cr_assert_eq(perfc_redis_pool_new(&p, &o), 0);
  cr_assert_neq(perfc_redis_ping(p), 0);
  cr_assert_not_null(strstr(perfc_last_error(), "NOAUTH"), "%s",
                     perfc_last_error());
  perfc_redis_pool_free(p);
}
