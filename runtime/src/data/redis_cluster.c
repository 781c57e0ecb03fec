/*
 * redis_cluster.c — Redis Cluster routing shared by the synchronous pool
 * (redis.c) and the client on the loops (redis_async.c): CRC16 key slots
 * with hash tags, the node table, the slot map read from CLUSTER SLOTS,
 * MOVED/ASK, and the synchronous router.
 *
 * Room: runtime/src/data (data layer, Redis). Internal API in
 * redis_cluster_internal.h; design in docs/data-layer.md, "Redis Cluster".
 *
 * - The node table is append-only (at most PERFC_REDIS_CLUSTER_MAX_NODES):
 *   a node that left keeps its entry and client, so an index read from the
 *   slot map stays valid without a lock. Entries are added under a mutex
 *   and published by a release store of the count.
 * - The slot map is two arrays of 16384 atomic node indices (+1, 0 =
 *   unknown): master and one replica. A command routes with one relaxed
 *   load; a refresh rewrites the arrays in place. A reader racing a refresh
 *   may use the old owner once: the node answers MOVED and the command is
 *   sent again, which is the protocol's own answer to a stale map.
 * - Each node's client is an ordinary single-node client (pool or async),
 *   so connection bounds, backoff after a failure and health checks are
 *   per node: a dead master refuses at once, the others keep serving.
 */
#include "data/redis_cluster_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/error_internal.h"
#include "perfc/log.h"

/* ---- CRC16 and slots ---- */

unsigned perfc__rc_crc16(const void *buf, size_t len) {
  const uint8_t *p = buf;
  uint16_t crc = 0;
  for (size_t i = 0; i < len; i++) {
    crc ^= (uint16_t)((uint16_t)p[i] << 8);
    for (int b = 0; b < 8; b++)
      crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021)
                           : (uint16_t)(crc << 1);
  }
  return crc;
}

unsigned perfc__rc_slot(const char *key, size_t len) {
  const char *open = memchr(key, '{', len);
  if (open != NULL) {
    size_t off = (size_t)(open - key) + 1;
    const char *close = memchr(open + 1, '}', len - off);
    if (close != NULL && close > open + 1)
      return perfc__rc_crc16(open + 1, (size_t)(close - open - 1)) &
             (PERFC__RC_SLOTS - 1);
  }
  return perfc__rc_crc16(key, len) & (PERFC__RC_SLOTS - 1);
}

int perfc__rc_parse_hostport(const char *s, char *host, size_t hcap,
                             int *port) {
  const char *colon = s ? strrchr(s, ':') : NULL;
  if (colon == NULL || colon == s)
    return PERFC_EINVAL;
  const char *h = s;
  size_t hl = (size_t)(colon - s);
  if (h[0] == '[' && hl >= 2 && h[hl - 1] == ']') {
    h++;
    hl -= 2;
  }
  char *end;
  errno = 0;
  long p = strtol(colon + 1, &end, 10);
  if (hl == 0 || hl >= hcap || errno || end == colon + 1 || *end != '\0' ||
      p < 1 || p > 65535)
    return PERFC_EINVAL;
  memcpy(host, h, hl);
  host[hl] = '\0';
  *port = (int)p;
  return 0;
}

int perfc__rc_parse_redirect(const char *s, size_t len,
                             perfc__rc_redirect *out) {
  int ask;
  size_t skip;
  if (len > 6 && memcmp(s, "MOVED ", 6) == 0)
    ask = 0, skip = 6;
  else if (len > 4 && memcmp(s, "ASK ", 4) == 0)
    ask = 1, skip = 4;
  else
    return 0;
  char buf[300];
  size_t n = len - skip < sizeof buf - 1 ? len - skip : sizeof buf - 1;
  memcpy(buf, s + skip, n);
  buf[n] = '\0';
  char *sp = strchr(buf, ' ');
  if (sp == NULL)
    return 0;
  *sp = '\0';
  char *end;
  long slot = strtol(buf, &end, 10);
  if (end == buf || *end || slot < 0 || slot >= (long)PERFC__RC_SLOTS)
    return 0;
  if (perfc__rc_parse_hostport(sp + 1, out->host, sizeof out->host,
                               &out->port) != 0)
    return 0;
  out->ask = ask;
  out->slot = (unsigned)slot;
  return 1;
}

static int is_cmd(const char *cmd, size_t len, const char *name) {
  return strlen(name) == len && strncasecmp(cmd, name, len) == 0;
}

int perfc__rc_key_index(int argc, const char *const *argv,
                        const size_t *argvlen) {
  if (argc < 2)
    return -1;
  const char *c = argv[0];
  size_t l = argvlen ? argvlen[0] : strlen(argv[0]);
  if (is_cmd(c, l, "EVAL") || is_cmd(c, l, "EVALSHA") ||
      is_cmd(c, l, "EVAL_RO") || is_cmd(c, l, "EVALSHA_RO") ||
      is_cmd(c, l, "FCALL") || is_cmd(c, l, "FCALL_RO")) {
    if (argc < 4)
      return -1;
    long nk = strtol(argv[2], NULL, 10);
    return nk > 0 ? 3 : -1;
  }
  static const char *const keyless[] = {
      "PING",   "SCRIPT",  "CLUSTER", "INFO",     "READONLY", "READWRITE",
      "ASKING", "PUBLISH", "CONFIG",  "FLUSHALL", "FLUSHDB",  "DBSIZE",
      "CLIENT", "COMMAND", "TIME",    "ECHO",     "SELECT",   "HELLO"};
  for (size_t i = 0; i < sizeof keyless / sizeof keyless[0]; i++)
    if (is_cmd(c, l, keyless[i]))
      return -1;
  return 1;
}

int perfc__rc_split_kind(const char *cmd, size_t len) {
  if (is_cmd(cmd, len, "MGET"))
    return 1;
  if (is_cmd(cmd, len, "DEL") || is_cmd(cmd, len, "UNLINK") ||
      is_cmd(cmd, len, "EXISTS") || is_cmd(cmd, len, "TOUCH"))
    return 2;
  return 0;
}

int perfc__rc_is_read(const char *cmd, size_t len) {
  static const char *const reads[] = {"GET",   "MGET",     "EXISTS", "STRLEN",
                                      "TTL",   "PTTL",     "HGET",   "HGETALL",
                                      "HMGET", "GETRANGE", "TYPE"};
  for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++)
    if (is_cmd(cmd, len, reads[i]))
      return 1;
  return 0;
}

/* ---- node table and slot map ---- */

typedef struct rc_node {
  char *host;
  int port;
  void *client;
} rc_node;

struct perfc__rc {
  perfc__rc_opts o;
  pthread_mutex_t mu; /* node additions, refresh bookkeeping */
  rc_node nodes[PERFC_REDIS_CLUSTER_MAX_NODES];
  _Atomic unsigned nnodes;
  unsigned nseeds; /* nodes[0..nseeds) are the seeds */
  _Atomic uint16_t master[PERFC__RC_SLOTS];
  _Atomic uint16_t replica[PERFC__RC_SLOTS];
  _Atomic unsigned rr;
  _Atomic int want;                         /* a refresh was asked for */
  _Atomic int refreshing;                   /* someone is refreshing */
  _Atomic uint64_t last_ms;                 /* last refresh attempt */
  _Atomic int mapped;                       /* a slot map was applied once */
  int mlist[PERFC_REDIS_CLUSTER_MAX_NODES]; /* masters of the map, under mu */
  size_t nmlist;
};

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int perfc__rc_new(perfc__rc **out, const perfc__rc_opts *o) {
  if (o->n_seeds == 0 || o->seeds == NULL)
    return perfc__fail(PERFC_EINVAL, "redis cluster: no seed nodes");
  if (o->n_seeds > PERFC_REDIS_CLUSTER_MAX_NODES)
    return perfc__fail(PERFC_EINVAL,
                       "redis cluster: %zu seed nodes, at most %u", o->n_seeds,
                       PERFC_REDIS_CLUSTER_MAX_NODES);
  for (size_t i = 0; i < o->n_seeds; i++) {
    char h[256];
    int port;
    if (perfc__rc_parse_hostport(o->seeds[i], h, sizeof h, &port) != 0)
      return perfc__fail(PERFC_EINVAL,
                         "redis cluster: seed node '%s' is not host:port "
                         "(port 1..65535)",
                         o->seeds[i] ? o->seeds[i] : "(null)");
  }
  perfc__rc *rc = calloc(1, sizeof *rc);
  if (rc == NULL)
    return perfc__fail(PERFC_ENOMEM, "redis cluster: out of memory");
  rc->o = *o;
  rc->o.seeds = NULL;
  pthread_mutex_init(&rc->mu, NULL);
  for (size_t i = 0; i < o->n_seeds; i++) {
    char h[256];
    int port;
    perfc__rc_parse_hostport(o->seeds[i], h, sizeof h, &port);
    int idx = perfc__rc_node(rc, h, port, 0);
    if (idx < 0) {
      perfc__rc_free(rc);
      return idx;
    }
  }
  rc->nseeds = atomic_load(&rc->nnodes);
  atomic_store(&rc->want, 1);
  *out = rc;
  return 0;
}

void perfc__rc_free(perfc__rc *rc) {
  if (rc == NULL)
    return;
  unsigned n = atomic_load(&rc->nnodes);
  for (unsigned i = 0; i < n; i++) {
    if (rc->nodes[i].client)
      rc->o.node_free(rc->o.ud, rc->nodes[i].client);
    free(rc->nodes[i].host);
  }
  pthread_mutex_destroy(&rc->mu);
  free(rc);
}

int perfc__rc_node(perfc__rc *rc, const char *host, int port, int readonly) {
  unsigned n = atomic_load_explicit(&rc->nnodes, memory_order_acquire);
  for (unsigned i = 0; i < n; i++)
    if (rc->nodes[i].port == port && strcmp(rc->nodes[i].host, host) == 0)
      return (int)i;
  pthread_mutex_lock(&rc->mu);
  n = atomic_load(&rc->nnodes);
  for (unsigned i = 0; i < n; i++)
    if (rc->nodes[i].port == port && strcmp(rc->nodes[i].host, host) == 0) {
      pthread_mutex_unlock(&rc->mu);
      return (int)i;
    }
  if (n >= PERFC_REDIS_CLUSTER_MAX_NODES) {
    pthread_mutex_unlock(&rc->mu);
    return perfc__fail(PERFC_EFULL, "redis cluster: more than %u nodes",
                       PERFC_REDIS_CLUSTER_MAX_NODES);
  }
  rc_node *nd = &rc->nodes[n];
  nd->host = strdup(host);
  nd->port = port;
  /* With replica reads every node reads READONLY: a node first met as a
   * seed or a master may be a replica later (failover), and READONLY on a
   * master changes nothing. */
  nd->client = nd->host ? rc->o.node_new(rc->o.ud, host, port,
                                         readonly || rc->o.read_replicas)
                        : NULL;
  if (nd->client == NULL) {
    free(nd->host);
    nd->host = NULL;
    pthread_mutex_unlock(&rc->mu);
    return perfc__fail(PERFC_ENOMEM,
                       "redis cluster: cannot make the client "
                       "of %s:%d",
                       host, port);
  }
  atomic_store_explicit(&rc->nnodes, n + 1, memory_order_release);
  pthread_mutex_unlock(&rc->mu);
  return (int)n;
}

unsigned perfc__rc_nnodes(perfc__rc *rc) {
  return atomic_load_explicit(&rc->nnodes, memory_order_acquire);
}
void *perfc__rc_client(perfc__rc *rc, int idx) { return rc->nodes[idx].client; }
const char *perfc__rc_host(perfc__rc *rc, int idx) {
  return rc->nodes[idx].host;
}
int perfc__rc_port(perfc__rc *rc, int idx) { return rc->nodes[idx].port; }
int perfc__rc_read_replicas(perfc__rc *rc) { return rc->o.read_replicas; }

int perfc__rc_any(perfc__rc *rc) {
  int m[PERFC_REDIS_CLUSTER_MAX_NODES];
  size_t n = perfc__rc_masters(rc, m, PERFC_REDIS_CLUSTER_MAX_NODES);
  unsigned r = atomic_fetch_add_explicit(&rc->rr, 1, memory_order_relaxed);
  return n ? m[r % n] : 0;
}

int perfc__rc_route(perfc__rc *rc, unsigned slot, int replica) {
  slot &= PERFC__RC_SLOTS - 1;
  if (replica && rc->o.read_replicas) {
    unsigned r = atomic_load_explicit(&rc->replica[slot], memory_order_relaxed);
    if (r)
      return (int)r - 1;
  }
  unsigned m = atomic_load_explicit(&rc->master[slot], memory_order_relaxed);
  if (m)
    return (int)m - 1;
  unsigned r = atomic_fetch_add_explicit(&rc->rr, 1, memory_order_relaxed);
  return (int)(r % rc->nseeds);
}

size_t perfc__rc_masters(perfc__rc *rc, int *idx, size_t cap) {
  size_t n = 0;
  pthread_mutex_lock(&rc->mu);
  if (rc->nmlist == 0) {
    for (unsigned i = 0; i < rc->nseeds && n < cap; i++)
      idx[n++] = (int)i;
  } else {
    for (size_t i = 0; i < rc->nmlist && n < cap; i++)
      idx[n++] = rc->mlist[i];
  }
  pthread_mutex_unlock(&rc->mu);
  return n;
}

void perfc__rc_moved(perfc__rc *rc, unsigned slot, int idx) {
  atomic_store_explicit(&rc->master[slot & (PERFC__RC_SLOTS - 1)],
                        (uint16_t)(idx + 1), memory_order_relaxed);
  /* The replica known for the slot belongs to the old owner. */
  atomic_store_explicit(&rc->replica[slot & (PERFC__RC_SLOTS - 1)], 0,
                        memory_order_relaxed);
  perfc__rc_want_refresh(rc);
}

void perfc__rc_want_refresh(perfc__rc *rc) { atomic_store(&rc->want, 1); }

int perfc__rc_refresh_claim(perfc__rc *rc) {
  uint64_t now = now_ms(), last = atomic_load(&rc->last_ms);
  int due = atomic_load(&rc->want)
                ? now - last >= (uint64_t)rc->o.refresh_gap_ms || last == 0
                : now - last >= (uint64_t)rc->o.refresh_ms;
  if (!due)
    return 0;
  int expect = 0;
  if (!atomic_compare_exchange_strong(&rc->refreshing, &expect, 1))
    return 0;
  atomic_store(&rc->last_ms, now);
  atomic_store(&rc->want, 0);
  return 1;
}

void perfc__rc_refresh_done(perfc__rc *rc, int ok) {
  if (!ok)
    atomic_store(&rc->want, 1);
  atomic_store(&rc->refreshing, 0);
}

/* One "host, port" pair of a CLUSTER SLOTS entry. */
static int slots_node(perfc__rc *rc, const perfc_redis_reply *e, int readonly) {
  if (e->type != PERFC_REDIS_REPLY_ARRAY || e->elements < 2 ||
      e->element[0].type != PERFC_REDIS_REPLY_STRING ||
      e->element[1].type != PERFC_REDIS_REPLY_INTEGER)
    return PERFC_EIO;
  char host[256];
  size_t hl = e->element[0].len;
  if (hl == 0 || hl >= sizeof host)
    return PERFC_EIO; /* "" or "?": the node's address is unknown */
  memcpy(host, e->element[0].str, hl);
  host[hl] = '\0';
  if (e->element[1].integer < 1 || e->element[1].integer > 65535)
    return PERFC_EIO;
  return perfc__rc_node(rc, host, (int)e->element[1].integer, readonly);
}

int perfc__rc_apply_slots(perfc__rc *rc, const perfc_redis_reply *r) {
  if (r == NULL || r->type != PERFC_REDIS_REPLY_ARRAY || r->elements == 0)
    return perfc__fail(PERFC_EIO, "redis cluster: CLUSTER SLOTS gave no map");
  /* Checked whole before anything changes: a half-applied bad reply would
   * route some slots nowhere. */
  for (size_t i = 0; i < r->elements; i++) {
    const perfc_redis_reply *e = &r->element[i];
    if (e->type != PERFC_REDIS_REPLY_ARRAY || e->elements < 3 ||
        e->element[0].type != PERFC_REDIS_REPLY_INTEGER ||
        e->element[1].type != PERFC_REDIS_REPLY_INTEGER ||
        e->element[0].integer < 0 || e->element[1].integer >= PERFC__RC_SLOTS ||
        e->element[0].integer > e->element[1].integer)
      return perfc__fail(PERFC_EIO, "redis cluster: bad CLUSTER SLOTS entry");
  }
  uint16_t *m = calloc(PERFC__RC_SLOTS, sizeof *m);
  uint16_t *rp = calloc(PERFC__RC_SLOTS, sizeof *rp);
  if (m == NULL || rp == NULL) {
    free(m);
    free(rp);
    return PERFC_ENOMEM;
  }
  int rc_ = 0;
  for (size_t i = 0; i < r->elements && rc_ == 0; i++) {
    const perfc_redis_reply *e = &r->element[i];
    int mi = slots_node(rc, &e->element[2], 0);
    if (mi < 0) {
      rc_ = mi == PERFC_EIO ? perfc__fail(PERFC_EIO, "redis cluster: CLUSTER "
                                                     "SLOTS names a master "
                                                     "without an address")
                            : mi;
      break;
    }
    int ri = -1;
    /* The first replica with an address serves the range's reads. */
    for (size_t k = 3; k < e->elements && ri < 0 && rc->o.read_replicas; k++)
      ri = slots_node(rc, &e->element[k], 1);
    for (int64_t s = e->element[0].integer; s <= e->element[1].integer; s++) {
      m[s] = (uint16_t)(mi + 1);
      rp[s] = ri >= 0 ? (uint16_t)(ri + 1) : 0;
    }
  }
  if (rc_ == 0) {
    for (unsigned s = 0; s < PERFC__RC_SLOTS; s++) {
      /* A slot no entry names (a cluster with uncovered slots) keeps its
       * last owner: a command there gets CLUSTERDOWN or MOVED. */
      if (m[s] == 0)
        continue;
      atomic_store_explicit(&rc->master[s], m[s], memory_order_relaxed);
      atomic_store_explicit(&rc->replica[s], rp[s], memory_order_relaxed);
    }
    atomic_store(&rc->mapped, 1);
    uint8_t seen[PERFC_REDIS_CLUSTER_MAX_NODES] = {0};
    pthread_mutex_lock(&rc->mu);
    rc->nmlist = 0;
    for (unsigned s = 0; s < PERFC__RC_SLOTS; s++) {
      unsigned mi = atomic_load_explicit(&rc->master[s], memory_order_relaxed);
      if (mi && !seen[mi - 1]) {
        seen[mi - 1] = 1;
        rc->mlist[rc->nmlist++] = (int)mi - 1;
      }
    }
    pthread_mutex_unlock(&rc->mu);
  }
  free(m);
  free(rp);
  return rc_;
}

int perfc__rc_reply_convert(const redisReply *in, perfc_redis_reply *out) {
  memset(out, 0, sizeof *out);
  out->type = (perfc_redis_reply_type)in->type;
  out->integer = in->integer;
  out->str = in->str;
  out->len = in->len;
  if (in->type == REDIS_REPLY_ARRAY && in->elements > 0) {
    perfc_redis_reply *el = calloc(in->elements, sizeof *el);
    if (el == NULL)
      return PERFC_ENOMEM;
    out->elements = in->elements;
    out->element = el;
    for (size_t i = 0; i < in->elements; i++)
      if (perfc__rc_reply_convert(in->element[i], &el[i]) != 0)
        return PERFC_ENOMEM;
  }
  return 0;
}

void perfc__rc_reply_release(perfc_redis_reply *r) {
  for (size_t i = 0; i < r->elements; i++)
    perfc__rc_reply_release((perfc_redis_reply *)&r->element[i]);
  free((void *)r->element);
  r->element = NULL;
  r->elements = 0;
}

/* ---- the synchronous router ---- */

/* A sub-command to send again (redirected, TRYAGAIN): not an error code. */
#define RC_AGAIN 1

static void *pool_node_new(void *ud, const char *host, int port, int readonly) {
  const perfc_redis_opts *base = ud;
  perfc_redis_opts o = *base;
  o.host = host;
  o.port = port;
  o.cluster_nodes = NULL;
  o.n_cluster_nodes = 0;
  o.cluster_read_replicas = readonly;
  perfc_redis_pool *p = NULL;
  if (perfc_redis_pool_new(&p, &o) != 0)
    return NULL;
  return p;
}

static void pool_node_free(void *ud, void *client) {
  (void)ud;
  perfc_redis_pool_free(client);
}

int perfc__redis_cluster_new(perfc__rc **out, const perfc_redis_opts *o) {
  perfc__rc_opts ro = {0};
  ro.seeds = o->cluster_nodes;
  ro.n_seeds = o->n_cluster_nodes;
  ro.read_replicas = o->cluster_read_replicas;
  ro.refresh_ms = o->cluster_refresh_ms;
  ro.refresh_gap_ms = o->backoff_min_ms;
  ro.node_new = pool_node_new;
  ro.node_free = pool_node_free;
  ro.ud = (void *)o; /* the owning pool's resolved options: outlive rc */
  return perfc__rc_new(out, &ro);
}

/* CLUSTER SLOTS through one node's pool. */
static int refresh_from(perfc__rc *rc, int idx) {
  const char *argv[] = {"CLUSTER", "SLOTS"};
  size_t len[] = {7, 5};
  perfc__redis_cmd cmd = {2, argv, len};
  redisReply *r = NULL;
  int e = perfc__redis_pipeline(perfc__rc_client(rc, idx), &cmd, 1, &r);
  if (e != 0)
    return e;
  perfc_redis_reply pr;
  e = perfc__rc_reply_convert(r, &pr);
  if (e == 0)
    e = r->type == REDIS_REPLY_ERROR
            ? perfc__fail(PERFC_EIO, "redis cluster: %s:%d: CLUSTER SLOTS: %s",
                          perfc__rc_host(rc, idx), perfc__rc_port(rc, idx),
                          r->str)
            : perfc__rc_apply_slots(rc, &pr);
  perfc__rc_reply_release(&pr);
  freeReplyObject(r);
  return e;
}

int perfc__redis_cluster_refresh(perfc__rc *rc) {
  /* Known masters first (they are the likeliest to answer), then every
   * other node: seeds and replicas. A node in backoff refuses at once. */
  int order[PERFC_REDIS_CLUSTER_MAX_NODES];
  size_t n = perfc__rc_masters(rc, order, PERFC_REDIS_CLUSTER_MAX_NODES);
  unsigned all = perfc__rc_nnodes(rc);
  for (unsigned i = 0; i < all && n < PERFC_REDIS_CLUSTER_MAX_NODES; i++) {
    int dup = 0;
    for (size_t k = 0; k < n && !dup; k++)
      dup = order[k] == (int)i;
    if (!dup)
      order[n++] = (int)i;
  }
  unsigned start = atomic_fetch_add(&rc->rr, 1);
  int e = PERFC_EIO;
  for (size_t k = 0; k < n; k++) {
    int idx = order[(start + k) % n];
    perfc_redis_pool_stats st;
    perfc_redis_pool_stats_get(perfc__rc_client(rc, idx), &st);
    if (st.backing_off && k + 1 < n)
      continue;
    if ((e = refresh_from(rc, idx)) == 0)
      return 0;
  }
  return perfc__fail(e, "redis cluster: no node answered CLUSTER SLOTS");
}

static void maybe_refresh(perfc__rc *rc) {
  if (perfc__rc_refresh_claim(rc)) {
    int e = perfc__redis_cluster_refresh(rc);
    perfc__rc_refresh_done(rc, e == 0);
    if (e != 0)
      perfc_log(PERFC_LOG_DEBUG, "redis cluster: slot map refresh failed: %s",
                perfc_last_error());
  }
}

void perfc__redis_cluster_stats(perfc__rc *rc, perfc_redis_pool_stats *out) {
  unsigned n = perfc__rc_nnodes(rc);
  for (unsigned i = 0; i < n; i++) {
    perfc_redis_pool_stats st;
    perfc_redis_pool_stats_get(perfc__rc_client(rc, (int)i), &st);
    out->in_use += st.in_use;
    out->idle += st.idle;
    out->connects += st.connects;
    out->errors += st.errors;
    out->backing_off |= st.backing_off;
  }
}

/* One command as sent to one node: a whole command of the caller, the
 * keys of one slot of a split command, or a broadcast copy (SCRIPT). */
typedef struct sub {
  size_t parent;
  int argc;
  const char **argv;
  const size_t *argvlen;
  unsigned slot;
  int keyless;
  int fixed;   /* node for a broadcast copy, else -1 */
  int ask;     /* node an ASK sent it to, for its next round, else -1 */
  int read;    /* may go to a replica */
  size_t *pos; /* split: the parent's key positions of argv[1..] */
  redisReply *reply;
  int rc; /* last transport error of this sub */
} sub;

static redisReply *new_reply(int type) {
  redisReply *r = calloc(1, sizeof *r);
  if (r)
    r->type = type;
  return r;
}

/* Pauses before a round after TRYAGAIN/CLUSTERDOWN (a migration or an
 * election in progress). */
static void pause_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
    ;
}

static int has_prefix(const redisReply *r, const char *p) {
  size_t l = strlen(p);
  return r->type == REDIS_REPLY_ERROR && r->len >= l &&
         memcmp(r->str, p, l) == 0;
}

/* Builds subs[] for the caller's commands. */
static int expand(perfc__rc *rc, const perfc__redis_cmd *cmds, size_t n,
                  sub **out, size_t *nout, const char ***argv_pool,
                  size_t **len_pool) {
  size_t cap = 0, nargs = 0;
  int masters[PERFC_REDIS_CLUSTER_MAX_NODES];
  size_t nm = 0;
  for (size_t i = 0; i < n && nm == 0; i++)
    if (is_cmd(cmds[i].argv[0], cmds[i].argvlen[0], "SCRIPT"))
      nm = perfc__rc_masters(rc, masters, PERFC_REDIS_CLUSTER_MAX_NODES);
  for (size_t i = 0; i < n; i++) {
    const char *c = cmds[i].argv[0];
    size_t l = cmds[i].argvlen[0];
    if (perfc__rc_split_kind(c, l) && cmds[i].argc > 2) {
      cap += (size_t)cmds[i].argc - 1;
      nargs += 2 * ((size_t)cmds[i].argc - 1);
    } else if (is_cmd(c, l, "SCRIPT")) {
      cap += nm;
    } else {
      cap++;
    }
  }
  sub *s = calloc(cap ? cap : 1, sizeof *s);
  const char **av = calloc(nargs ? nargs : 1, sizeof *av);
  size_t *al = calloc(nargs ? nargs : 1, sizeof *al);
  size_t *pos = calloc(nargs ? nargs : 1, sizeof *pos);
  unsigned *slots = NULL;
  if (!s || !av || !al || !pos) {
    free(s), free(av), free(al), free(pos);
    return PERFC_ENOMEM;
  }
  size_t ns = 0, a = 0;
  for (size_t i = 0; i < n; i++) {
    const perfc__redis_cmd *cm = &cmds[i];
    const char *c = cm->argv[0];
    size_t l = cm->argvlen[0];
    int read = perfc__rc_is_read(c, l);
    if (perfc__rc_split_kind(c, l) && cm->argc > 2) {
      /* Group the keys by slot, keeping their order within a slot. */
      size_t nk = (size_t)cm->argc - 1;
      free(slots);
      slots = malloc(nk * sizeof *slots);
      if (!slots) {
        free(s), free(av), free(al), free(pos);
        return PERFC_ENOMEM;
      }
      for (size_t k = 0; k < nk; k++)
        slots[k] = perfc__rc_slot(cm->argv[k + 1], cm->argvlen[k + 1]);
      uint8_t *used = calloc(nk, 1);
      if (!used) {
        free(slots), free(s), free(av), free(al), free(pos);
        return PERFC_ENOMEM;
      }
      for (size_t k = 0; k < nk; k++) {
        if (used[k])
          continue;
        sub *u = &s[ns++];
        u->parent = i;
        u->fixed = u->ask = -1;
        u->read = read;
        u->slot = slots[k];
        u->argv = &av[a];
        u->argvlen = &al[a];
        u->pos = &pos[a];
        av[a] = c;
        al[a++] = l;
        u->argc = 1;
        for (size_t j = k; j < nk; j++)
          if (!used[j] && slots[j] == slots[k]) {
            used[j] = 1;
            av[a] = cm->argv[j + 1];
            al[a] = cm->argvlen[j + 1];
            pos[a++ - 0] = j;
            u->argc++;
          }
      }
      free(used);
      /* pos[] is indexed like argv: u->pos[1..] are the key positions. */
    } else if (is_cmd(c, l, "SCRIPT")) {
      for (size_t k = 0; k < nm; k++) {
        sub *u = &s[ns++];
        u->parent = i;
        u->argc = cm->argc;
        u->argv = cm->argv;
        u->argvlen = cm->argvlen;
        u->keyless = 1;
        u->fixed = masters[k];
        u->ask = -1;
      }
    } else {
      sub *u = &s[ns++];
      u->parent = i;
      u->argc = cm->argc;
      u->argv = cm->argv;
      u->argvlen = cm->argvlen;
      u->fixed = u->ask = -1;
      u->read = read;
      int ki = perfc__rc_key_index(cm->argc, cm->argv, cm->argvlen);
      if (ki < 0 || ki >= cm->argc)
        u->keyless = 1;
      else
        u->slot = perfc__rc_slot(cm->argv[ki], cm->argvlen[ki]);
    }
  }
  free(slots);
  *out = s;
  *nout = ns;
  *argv_pool = av;
  *len_pool = al;
  /* pos is reachable through the subs; the caller frees s[0].pos' block:
   * keep it as the first split's pointer or free it when unused. */
  if (a == 0)
    free(pos);
  return 0;
}

/* Sends the pending subs of one node in one pipeline. */
static void send_node(perfc__rc *rc, int node, sub *s, size_t ns,
                      const int *target) {
  size_t cnt = 0;
  for (size_t k = 0; k < ns; k++)
    if (target[k] == node)
      cnt += s[k].ask >= 0 ? 2 : 1;
  perfc__redis_cmd *cmds = calloc(cnt, sizeof *cmds);
  redisReply **rep = calloc(cnt, sizeof *rep);
  size_t *which = calloc(cnt, sizeof *which);
  static const char *asking[] = {"ASKING"};
  static const size_t asking_len[] = {6};
  if (!cmds || !rep || !which) {
    for (size_t k = 0; k < ns; k++)
      if (target[k] == node)
        s[k].rc = PERFC_ENOMEM;
    free(cmds), free(rep), free(which);
    return;
  }
  size_t c = 0;
  for (size_t k = 0; k < ns; k++) {
    if (target[k] != node)
      continue;
    if (s[k].ask >= 0) {
      cmds[c] = (perfc__redis_cmd){1, asking, asking_len};
      which[c++] = SIZE_MAX;
    }
    cmds[c] = (perfc__redis_cmd){s[k].argc, s[k].argv, s[k].argvlen};
    which[c++] = k;
  }
  int e = perfc__redis_pipeline(perfc__rc_client(rc, node), cmds, cnt, rep);
  if (e != 0) {
    /* The node failed (down, refusing in backoff, timed out): its slots
     * may have a new master by now. */
    perfc__rc_want_refresh(rc);
    for (size_t k = 0; k < ns; k++)
      if (target[k] == node) {
        s[k].rc = e;
        s[k].ask = -1;
      }
  } else {
    for (size_t j = 0; j < cnt; j++) {
      if (which[j] == SIZE_MAX) {
        freeReplyObject(rep[j]);
        continue;
      }
      sub *u = &s[which[j]];
      redisReply *r = rep[j];
      perfc__rc_redirect rd;
      u->ask = -1;
      u->rc = 0;
      if (r->type == REDIS_REPLY_ERROR &&
          perfc__rc_parse_redirect(r->str, r->len, &rd)) {
        int to = perfc__rc_node(rc, rd.host, rd.port, 0);
        freeReplyObject(r);
        if (to < 0) {
          u->rc = to;
          continue;
        }
        if (rd.ask)
          u->ask = to;
        else
          perfc__rc_moved(rc, rd.slot, to);
        u->rc = RC_AGAIN; /* send again */
        continue;
      }
      if (has_prefix(r, "TRYAGAIN") || has_prefix(r, "CLUSTERDOWN")) {
        /* A multi-key command during a migration, or no majority: try
         * again after a pause, with a fresh map. */
        perfc__rc_want_refresh(rc);
        u->rc = RC_AGAIN;
        u->reply = NULL;
        if (has_prefix(r, "CLUSTERDOWN"))
          u->rc = PERFC_EUNAVAILABLE;
        /* Keep the error reply for the last round. */
        u->reply = r;
        continue;
      }
      u->reply = r;
    }
  }
  free(cmds), free(rep), free(which);
}

int perfc__redis_cluster_pipeline(perfc__rc *rc, const perfc__redis_cmd *cmds,
                                  size_t n, redisReply **replies) {
  for (size_t i = 0; i < n; i++)
    replies[i] = NULL;
  if (n == 0)
    return 0;
  maybe_refresh(rc);
  sub *s = NULL;
  size_t ns = 0;
  const char **av = NULL;
  size_t *al = NULL;
  int e = expand(rc, cmds, n, &s, &ns, &av, &al);
  if (e != 0)
    return perfc__fail(e, "redis cluster: out of memory");
  size_t *pos_block = NULL;
  for (size_t k = 0; k < ns && !pos_block; k++)
    if (s[k].pos)
      pos_block = s[k].pos;
  int *target = malloc((ns ? ns : 1) * sizeof *target);
  if (!target) {
    free(s), free(av), free(al), free(pos_block);
    return perfc__fail(PERFC_ENOMEM, "redis cluster: out of memory");
  }
  for (size_t k = 0; k < ns; k++)
    s[k].rc = RC_AGAIN;
  for (int round = 0; round <= PERFC__RC_MAX_REDIRECTS; round++) {
    size_t pending = 0;
    int backoff = 0;
    for (size_t k = 0; k < ns; k++) {
      target[k] = -1;
      if (s[k].rc == 0)
        continue;
      if (s[k].rc == PERFC_EUNAVAILABLE || (s[k].reply && s[k].rc))
        backoff = 1;
      if (s[k].reply) {
        freeReplyObject(s[k].reply);
        s[k].reply = NULL;
      }
      pending++;
    }
    if (pending == 0)
      break;
    if (round > 0) {
      if (backoff)
        pause_ms(20);
      maybe_refresh(rc);
    }
    for (size_t k = 0; k < ns; k++) {
      if (s[k].rc == 0)
        continue;
      target[k] = s[k].ask >= 0     ? s[k].ask
                  : s[k].fixed >= 0 ? s[k].fixed
                  : s[k].keyless    ? perfc__rc_any(rc)
                                    : perfc__rc_route(rc, s[k].slot, s[k].read);
    }
    /* One pipeline per node, in the order the nodes first appear. */
    uint8_t sent[PERFC_REDIS_CLUSTER_MAX_NODES] = {0};
    for (size_t k = 0; k < ns; k++) {
      int node = target[k];
      if (node < 0 || sent[node])
        continue;
      sent[node] = 1;
      send_node(rc, node, s, ns, target);
    }
    /* A node that failed outright is not asked again this call unless a
     * refresh moved its slots: the caller falls back quickly. */
    int moved_on = 0;
    for (size_t k = 0; k < ns; k++)
      if (s[k].rc != 0 && s[k].rc != RC_AGAIN &&
          s[k].rc != PERFC_EUNAVAILABLE && !s[k].reply) {
        maybe_refresh(rc);
        int now = s[k].fixed >= 0 ? s[k].fixed
                  : s[k].keyless  ? -1
                                  : perfc__rc_route(rc, s[k].slot, s[k].read);
        if (now >= 0 && now != target[k]) {
          s[k].rc = RC_AGAIN;
          moved_on = 1;
        }
      }
    int stuck = 0;
    for (size_t k = 0; k < ns; k++)
      if (s[k].rc != 0 && s[k].rc != RC_AGAIN &&
          s[k].rc != PERFC_EUNAVAILABLE && !s[k].reply)
        stuck = 1;
    if (stuck && !moved_on)
      break;
  }
  /* Results: a transport error anywhere fails the whole pipeline (the
   * single-node contract); a redirection still pending after the last
   * round answers with its error reply. */
  int fail = 0;
  for (size_t k = 0; k < ns && !fail; k++)
    if (s[k].rc != 0 && !s[k].reply)
      fail = s[k].rc == RC_AGAIN ? PERFC_EIO : s[k].rc;
  if (!fail) {
    for (size_t k = 0; k < ns; k++) {
      sub *u = &s[k];
      size_t i = u->parent;
      const perfc__redis_cmd *cm = &cmds[i];
      int kind = perfc__rc_split_kind(cm->argv[0], cm->argvlen[0]);
      if (u->pos == NULL || kind == 0) {
        /* Whole command or broadcast copy: the first non-error reply. */
        if (replies[i] == NULL)
          replies[i] = u->reply, u->reply = NULL;
        else if (replies[i]->type == REDIS_REPLY_ERROR &&
                 u->reply->type != REDIS_REPLY_ERROR) {
          freeReplyObject(replies[i]);
          replies[i] = u->reply, u->reply = NULL;
        }
        continue;
      }
      /* A split command: reassemble. */
      size_t nk = (size_t)cm->argc - 1;
      if (replies[i] == NULL) {
        replies[i] =
            new_reply(kind == 1 ? REDIS_REPLY_ARRAY : REDIS_REPLY_INTEGER);
        if (replies[i] && kind == 1) {
          replies[i]->element = calloc(nk, sizeof(redisReply *));
          if (replies[i]->element)
            replies[i]->elements = nk;
        }
        if (!replies[i] || (kind == 1 && !replies[i]->element)) {
          fail = PERFC_ENOMEM;
          break;
        }
      }
      redisReply *dst = replies[i];
      redisReply *r = u->reply;
      if (dst->type == REDIS_REPLY_ERROR)
        continue;
      if (r->type == REDIS_REPLY_ERROR) {
        /* The command's answer is the first error. */
        freeReplyObject(dst);
        replies[i] = r, u->reply = NULL;
        continue;
      }
      if (kind == 2) {
        if (r->type != REDIS_REPLY_INTEGER) {
          fail = PERFC_EIO;
          break;
        }
        dst->integer += r->integer;
        continue;
      }
      if (r->type != REDIS_REPLY_ARRAY || r->elements != (size_t)u->argc - 1) {
        fail = perfc__fail(PERFC_EIO,
                           "redis cluster: MGET answered %zu "
                           "values for %d keys",
                           r->elements, u->argc - 1);
        break;
      }
      for (size_t j = 0; j < r->elements; j++) {
        dst->element[u->pos[j + 1]] = r->element[j];
        r->element[j] = NULL;
      }
    }
  }
  for (size_t k = 0; k < ns; k++)
    if (s[k].reply) {
      if (s[k].reply->type == REDIS_REPLY_ARRAY)
        for (size_t j = 0; j < s[k].reply->elements; j++)
          if (s[k].reply->element[j] == NULL)
            s[k].reply->element[j] = new_reply(REDIS_REPLY_NIL);
      freeReplyObject(s[k].reply);
    }
  if (!fail)
    for (size_t i = 0; i < n && !fail; i++)
      if (replies[i] == NULL)
        fail = PERFC_EIO;
  if (fail) {
    for (size_t i = 0; i < n; i++) {
      if (replies[i]) {
        if (replies[i]->type == REDIS_REPLY_ARRAY)
          for (size_t j = 0; j < replies[i]->elements; j++)
            if (replies[i]->element[j] == NULL)
              replies[i]->element[j] = new_reply(REDIS_REPLY_NIL);
        freeReplyObject(replies[i]);
      }
      replies[i] = NULL;
    }
    if (fail == PERFC_EUNAVAILABLE)
      fail = PERFC_EIO;
  }
  free(target);
  free(s);
  free(av);
  free(al);
  free(pos_block);
  return fail;
}
