/*
 * data/pg_async.c — PostgreSQL on perfc's event loops (perfc/pg_async.h):
 * libpq non-blocking connections in pipeline mode, driven by perfc/loop.h.
 *
 * Room: runtime/src/data (libperfc-data). Uses libperfc's public API only
 * (perfc/loop.h for the loops, perfc_error_set for messages) and libpq.
 *
 * A query is copied whole into an op (one allocation: SQL, name, libpq's
 * parameter arrays and the parameter bytes) when it is issued, and queued
 * on a connection's `unsent` list; one task deferred to the end of the
 * loop's iteration sends every connection's queue. Copying costs one
 * malloc per query and buys three things: queries issued while the
 * connection is still being opened wait for it, a read PostgreSQL skipped
 * (below) can be sent again, and a thread without a loop can hand its
 * query to the client's own loop.
 *
 * What goes on the wire. Statements between two Syncs are one implicit
 * transaction: when one fails, the server rolls back the others and skips
 * those behind it up to the Sync (libpq reports them
 * PGRES_PIPELINE_ABORTED). libpq 15's PQpipelineSync also flushes, one
 * write(2) per Sync. So reads (PERFC_PG_READ) queued in one iteration
 * share a Sync (one write for all of them), and every other statement is
 * fenced by Syncs of its own, since its effect must not be undone by a
 * neighbour's error. A read skipped by a neighbour's error never ran: it
 * goes back on the queue and is sent in the next group.
 *
 * Matching results. Each connection keeps a ring of what it expects back,
 * in order: a Parse (a named statement's first use there), a query, or a
 * Sync. libpq returns, per Parse or query, one result then NULL, and per
 * Sync one PGRES_PIPELINE_SYNC. An op is referenced by its steps; its
 * callback runs once (`done`), and it is freed when done and no step
 * refers to it any more. Anything out of order is treated as a broken
 * connection: it is closed, never guessed at.
 *
 * Timeouts. The connection's one timer fires at the earliest deadline of
 * its ops (and its connect deadline, and its reconnect time). A query
 * whose deadline passed gets PERFC_ETIMEDOUT; if it was sent, the
 * connection is closed (its other ops get PERFC_EUNAVAILABLE) so nothing
 * can ever answer a later query with its late result, and the server
 * drops the statement at its next client_connection_check_interval.
 *
 * Per loop, the client's state is a loop-local value created at the
 * loop's first query, whose on_exit fails what is pending when the loop
 * stops (as data/redis_async.c).
 */
#include "perfc/pg_async.h"
#include "perfc/log.h"
#include "perfc/loop.h"
#include "perfc/metrics.h"
#include "perfc/tracing.h"
#include "core/error_internal.h"
#include "data/pg_internal.h"
#include "data/resolve_internal.h"

#include <endian.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { C_DOWN = 0, C_CONNECTING, C_UP };
enum { OP_QUERY = 0, OP_BEGIN, OP_COMMIT, OP_ROLLBACK, OP_SETUP, OP_PROBE };
/* S_LSN: the primary's WAL insert position asked right after a write's
 * Sync, for read-your-writes; the step names the write, whose callback
 * waits for it. */
enum { S_PARSE = 0, S_QUERY, S_SYNC, S_LSN };
enum { K_TIMEOUT = 0, K_UNAVAILABLE, K_SHUTDOWN, K_SERVER, K_COUNT };
/* Why a read meant for the replica ran on the primary: pg.c's reasons,
 * the `reason` label of perfc_pg_replica_fallbacks_total. */
enum { R_UNREACHABLE, R_LAGGING, R_RYW, R_COUNT };
static const char *const reason_names[R_COUNT] = {"unreachable", "lagging",
                                                  "read_your_writes"};

typedef struct pop pop;
typedef struct pconn pconn;
typedef struct lstate lstate;

struct pop {
  pop *next; /* unsent list or hand-off queue */
  int kind;
  unsigned flags;
  int64_t deadline_ms; /* 0: none */
  int done;            /* the callback ran */
  int queued;          /* on an unsent list */
  int refs;            /* steps in flight that name it */
  int retries;         /* sent again after 26000 */
  pconn *owner;        /* the connection it is queued or in flight on */
  int probe_lag;       /* OP_PROBE: a lag check (else a replay refresh) */
  int lsn_pending;     /* a write whose S_LSN step is in flight */
  PGresult *held;      /* its result, delivered once S_LSN answers */
  perfc_pg_async_fn fn;
  perfc_pg_async_tx_fn tx_fn;
  void *ud;
  perfc_pg_async_tx *tx; /* BEGIN: handed to tx_fn on success */
  const char *name;      /* NULL: unnamed */
  const char *sql;
  int nparams;
  const char **values;
  int *lengths, *formats;
  Oid *types;
};

typedef struct step {
  int kind;
  int got; /* its result came; the NULL that ends it is next */
  pop *op;
} step;

struct pconn {
  lstate *ls;
  PGconn *pg;
  perfc_loop_io *io;
  perfc_loop_timer *timer;
  int fd;
  int state;
  int is_tx;
  int is_replica; /* a connection to replica_dsn */
  int probing;    /* replica: an OP_PROBE is queued or in flight */
  int resetting;  /* closed by the client's own timeout */
  int in_close;   /* conn_close() is failing its ops: do not reopen */
  /* Replica: the server's replay position at the last probe (WAL bytes;
   * UINT64_MAX when the server is not a standby; 0 unknown, after every
   * (re)connect, since a multi-host DSN may land elsewhere). */
  uint64_t replay_lsn;
  int reserved;          /* tx connection: a transaction holds it */
  perfc_pg_async_tx *tx; /* the transaction handed out on it */
  unsigned epoch;        /* bumped at every close */
  unsigned events;
  int dirty; /* unsent ops wait for the end-of-iteration send */
  int64_t connect_deadline_ms;
  int64_t armed_at_ms; /* the timer's time, INT64_MAX when disarmed */
  int64_t retry_at_ms; /* DOWN after a failure: reopen then */
  int64_t backoff_ms;
  pop *unsent, *unsent_tail;
  step *ring;
  size_t ring_cap, ring_head, ring_n;
  unsigned npending; /* ops queued or in flight, not done */
  char **stmts;      /* statements prepared on this session */
  size_t nstmts, stmts_cap;
};

struct lstate {
  perfc_pg_async *pg;
  perfc_loop *loop;
  pconn *conns, *rconns, *txconns; /* rconns: nr, 0 without a replica */
  unsigned nconns, nr, ntx, rr, rrr;
  perfc_loop_task *flush;
  lstate *next, *prev;
  _Atomic uint64_t queries, syncs, results, resent, timeouts, failed,
      prepares, connects;
  _Atomic unsigned up;
};

struct perfc_pg_async_tx {
  pconn *c; /* NULL once the loop's state ended */
  unsigned epoch;
};

/* A DSN's hosts when some are names and it sets no hostaddr: the loop
 * connects to the addresses data/resolve.c found (libpq would resolve the
 * names itself, blocking the loop in getaddrinfo()). */
typedef struct dsn_hosts {
  size_t n;
  char **host; /* n items, as the DSN lists them */
  char **port; /* n items when the DSN lists one per host, else NULL */
} dsn_hosts;

struct perfc_pg_async {
  perfc_pg_async_opts o;
  dsn_hosts hosts, replica_hosts; /* n 0: libpq connects as the DSN says */
  char *dsn, *name;
  int dsn_sets_attrs; /* the DSN has its own target_session_attrs */
  /* The replica (docs/data-layer.md, "PostgreSQL primary and standbys"):
   * the pool's rules, with the client-wide state in atomics that every
   * loop reads and writes without a lock. */
  char *replica_dsn; /* NULL: no replica */
  int replica_sets_attrs;
  int ryw_on;               /* replica, fallback and read-your-writes on */
  _Atomic uint64_t ryw_own; /* the position when no pool shares one */
  _Atomic uint64_t *ryw;    /* &ryw_own, or the pool's */
  atomic_int replica_down, replica_lagging;
  _Atomic int64_t retry_at_ms, lag_check_at_ms;
  perfc_counter *m_fallback, *m_fallbacks[R_COUNT];
  perfc_counter *m_queries, *m_flushes, *m_err[K_COUNT];
  perfc_gauge *m_up;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  lstate *states;
  unsigned nstates;
  perfc_pg_async_stats retired;
  atomic_int closing;
  perfc_loop *own;
  pthread_t own_thread;
  int own_started;
  perfc_loop_task *submit;
  pop *q, *q_tail; /* under mu */
};

static void conn_start(pconn *c);
static void conn_close(pconn *c, int rc);
static void arm_timer(pconn *c);
static int fallback(lstate *ls, pop *op, int reason, int moved);

/* ---- options ---------------------------------------------------------------- */

void perfc_pg_async_opts_init(perfc_pg_async_opts *o) {
  memset(o, 0, sizeof *o);
  o->conns_per_loop = PERFC_DEFAULT_PG_ASYNC_CONNS_PER_LOOP;
  o->tx_conns_per_loop = PERFC_DEFAULT_PG_ASYNC_TX_CONNS_PER_LOOP;
  o->connect_timeout_ms = PERFC_DEFAULT_PG_CONNECT_TIMEOUT_MS;
  o->statement_timeout_ms = PERFC_DEFAULT_PG_STATEMENT_TIMEOUT_MS;
  o->backoff_min_ms = PERFC_DEFAULT_PG_ASYNC_BACKOFF_MIN_MS;
  o->backoff_max_ms = PERFC_DEFAULT_PG_ASYNC_BACKOFF_MAX_MS;
  o->max_pending = PERFC_DEFAULT_PG_ASYNC_MAX_PENDING;
}

void perfc_pg_async_opts_from_pool(perfc_pg_async_opts *o,
                                   const perfc_pg_pool_opts *po) {
  perfc_pg_async_opts_init(o);
  if (po == NULL)
    return;
  o->dsn = po->dsn;
  o->conns_per_loop = po->async_conns_per_loop;
  o->connect_timeout_ms = po->connect_timeout_ms;
  o->statement_timeout_ms = po->statement_timeout_ms;
  o->no_statement_timeout = po->no_statement_timeout;
  o->name = po->name;
  o->registry = po->registry;
  o->replica_dsn = po->replica_dsn;
  o->max_replica_lag_ms = po->max_replica_lag_ms;
  o->replica_lag_check_ms = po->replica_lag_check_ms;
  o->replica_retry_ms = po->replica_retry_ms;
  o->no_replica_lag_check = po->no_replica_lag_check;
  o->no_read_your_writes = po->no_read_your_writes;
  o->no_replica_fallback = po->no_replica_fallback;
  o->replica_fn = po->replica_fn;
  o->replica_ud = po->replica_ud;
}

static int check_ms(const char *name, int64_t *v, int64_t def) {
  if (*v < 0 || *v > PERFC_PG_ASYNC_MAX_DURATION_MS)
    return perfc__fail(PERFC_EINVAL, "pg async: %s = %lld ms (0..%lld allowed)",
                       name, (long long)*v,
                       (long long)PERFC_PG_ASYNC_MAX_DURATION_MS);
  if (*v == 0)
    *v = def;
  return 0;
}

static int register_metrics(perfc_pg_async *pg) {
  perfc_metrics_registry *reg = pg->o.registry;
  const char *client[] = {"client"};
  const char *kinds[] = {"client", "kind"};
  const char *const who[] = {pg->name};
  perfc_metrics_family_opts mo;
  perfc_metrics_family *fam;
  int rc;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_pg_async_queries_total";
  mo.help = "Queries the asynchronous PostgreSQL client accepted.";
  mo.label_names = client;
  mo.label_count = 1;
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_COUNTER, &mo)) != 0 ||
      (rc = perfc_counter_get(&pg->m_queries, fam, who)) != 0)
    return rc;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_pg_async_flushes_total";
  mo.help = "Sync messages sent, each one write by libpq (queries / flushes: "
            "the pipelining factor).";
  mo.label_names = client;
  mo.label_count = 1;
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_COUNTER, &mo)) != 0 ||
      (rc = perfc_counter_get(&pg->m_flushes, fam, who)) != 0)
    return rc;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_pg_async_errors_total";
  mo.help = "Queries that failed: timeout (client deadline), unavailable "
            "(connection lost or reset), shutdown (loop or client stopped), "
            "server (an error PostgreSQL answered).";
  mo.label_names = kinds;
  mo.label_count = 2;
  static const char *const kn[K_COUNT] = {"timeout", "unavailable", "shutdown",
                                          "server"};
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_COUNTER, &mo)) != 0)
    return rc;
  for (int k = 0; k < K_COUNT; k++) {
    const char *const v[] = {pg->name, kn[k]};
    if ((rc = perfc_counter_get(&pg->m_err[k], fam, v)) != 0)
      return rc;
  }
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_pg_async_connections";
  mo.help = "Connections of the asynchronous PostgreSQL client connected now.";
  mo.label_names = client;
  mo.label_count = 1;
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_GAUGE, &mo)) != 0 ||
      (rc = perfc_gauge_get(&pg->m_up, fam, who)) != 0)
    return rc;
  if (pg->replica_dsn == NULL)
    return 0;
  /* The pool's families, same names, labels and help (pg_internal.h): a
   * pool and a client of one name count into the same series. */
  const char *pool[] = {"pool"};
  const char *reasons[] = {"pool", "reason"};
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_pg_replica_fallback_total";
  mo.help = PERFC__PG_HELP_FALLBACK;
  mo.label_names = pool;
  mo.label_count = 1;
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_COUNTER, &mo)) !=
          0 ||
      (rc = perfc_counter_get(&pg->m_fallback, fam, who)) != 0)
    return rc;
  perfc_metrics_family_opts_init(&mo);
  mo.name = "perfc_pg_replica_fallbacks_total";
  mo.help = PERFC__PG_HELP_FALLBACKS;
  mo.label_names = reasons;
  mo.label_count = 2;
  if ((rc = perfc_metrics_family_new(&fam, reg, PERFC_METRICS_COUNTER, &mo)) !=
      0)
    return rc;
  for (int r = 0; r < R_COUNT; r++) {
    const char *const v[] = {pg->name, reason_names[r]};
    if ((rc = perfc_counter_get(&pg->m_fallbacks[r], fam, v)) != 0)
      return rc;
  }
  return 0;
}

static void hosts_free(dsn_hosts *h) {
  for (size_t i = 0; i < h->n; i++) {
    free(h->host[i]);
    if (h->port != NULL)
      free(h->port[i]);
  }
  free(h->host);
  free(h->port);
  memset(h, 0, sizeof *h);
}

/* Splits a comma-separated libpq list into `n` items (malloc'd). */
static char **split_list(const char *s, size_t *n) {
  size_t k = 1;
  for (const char *p = s; *p; p++)
    k += *p == ',';
  char **v = calloc(k, sizeof *v);
  if (v == NULL)
    return NULL;
  const char *p = s;
  for (size_t i = 0; i < k; i++) {
    const char *e = strchr(p, ',');
    size_t len = e != NULL ? (size_t)(e - p) : strlen(p);
    if ((v[i] = strndup(p, len)) == NULL) {
      while (i-- > 0)
        free(v[i]);
      free(v);
      return NULL;
    }
    p += len + (e != NULL);
  }
  *n = k;
  return v;
}

/* The DSN's hosts, when the loop must resolve them (dsn_hosts). 0 (h->n
 * stays 0 when libpq can connect by itself without a lookup), or
 * PERFC_ENOMEM. The DSN was parsed once already, so it parses. */
static int hosts_of(const char *dsn, dsn_hosts *h) {
  memset(h, 0, sizeof *h);
  PQconninfoOption *opts = PQconninfoParse(dsn, NULL);
  if (opts == NULL)
    return PERFC_ENOMEM;
  const char *host = NULL, *hostaddr = NULL, *port = NULL;
  for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
    if (o->val == NULL || o->val[0] == '\0')
      continue;
    if (strcmp(o->keyword, "host") == 0)
      host = o->val;
    else if (strcmp(o->keyword, "hostaddr") == 0)
      hostaddr = o->val;
    else if (strcmp(o->keyword, "port") == 0)
      port = o->val;
  }
  int rc = 0;
  size_t np = 0;
  char **hv = NULL, **pv = NULL;
  if (host == NULL || hostaddr != NULL)
    goto out; /* the default socket, or addresses the user chose */
  if ((hv = split_list(host, &h->n)) == NULL) {
    rc = PERFC_ENOMEM;
    goto out;
  }
  int names = 0;
  for (size_t i = 0; i < h->n; i++)
    names |= perfc__resolve_is_name(hv[i]);
  if (port != NULL && strchr(port, ',') != NULL &&
      ((pv = split_list(port, &np)) == NULL || np != h->n)) {
    rc = pv == NULL ? PERFC_ENOMEM : 0; /* a mismatch: libpq refuses it */
    names = 0;
  }
  if (!names) {
    for (size_t i = 0; i < h->n; i++)
      free(hv[i]);
    for (size_t i = 0; pv != NULL && i < np; i++)
      free(pv[i]);
    free(hv);
    free(pv);
    h->n = 0;
    goto out;
  }
  h->host = hv;
  h->port = pv;
out:
  PQconninfoFree(opts);
  return rc;
}

/* The host, hostaddr and port lists of one connect: the hosts whose
 * address is known (a name the resolver answered, or a literal or socket
 * directory with an empty hostaddr item). Returns the number of hosts
 * kept; 0 when none resolves. The lists are written into buf. */
static size_t hosts_now(const dsn_hosts *h, char *buf, size_t cap,
                        const char **host, const char **hostaddr,
                        const char **port) {
  size_t kept = 0;
  size_t lens[3] = {0, 0, 0};
  char *lists[3];
  /* Three lists side by side in buf, each at most cap / 3. */
  size_t each = cap / 3;
  for (int l = 0; l < 3; l++) {
    lists[l] = buf + (size_t)l * each;
    lists[l][0] = '\0';
  }
  for (size_t i = 0; i < h->n; i++) {
    char addr[PERFC__RESOLVE_ADDR_LEN] = "";
    if (perfc__resolve_is_name(h->host[i]) &&
        perfc__resolve_peek(h->host[i], addr) != 0)
      continue; /* not resolved (yet): the next connect tries it again */
    const char *items[3] = {h->host[i], addr,
                            h->port != NULL ? h->port[i] : ""};
    size_t need[3];
    int fits = 1;
    for (int l = 0; l < 3; l++) {
      need[l] = strlen(items[l]) + (kept > 0);
      fits &= lens[l] + need[l] + 1 <= each;
    }
    if (!fits)
      break;
    for (int l = 0; l < 3; l++) {
      if (kept > 0)
        lists[l][lens[l]++] = ',';
      memcpy(lists[l] + lens[l], items[l], strlen(items[l]) + 1);
      lens[l] += strlen(items[l]);
    }
    kept++;
  }
  *host = lists[0];
  *hostaddr = lists[1];
  *port = h->port != NULL ? lists[2] : NULL;
  return kept;
}

int perfc_pg_async_new(perfc_pg_async **out, const perfc_pg_async_opts *opts) {
  if (out == NULL)
    return perfc__fail(PERFC_EINVAL, "pg async: out is NULL");
  *out = NULL;
  perfc_pg_async_opts o;
  if (opts != NULL)
    o = *opts;
  else
    perfc_pg_async_opts_init(&o);
  if (o.dsn == NULL || o.dsn[0] == '\0')
    return perfc__fail(PERFC_EINVAL, "pg async: no dsn");
  int sets_attrs = perfc__pg_dsn_sets(o.dsn, "target_session_attrs");
  if (sets_attrs < 0)
    return perfc__fail(PERFC_EINVAL, "pg async: %s", perfc_last_error());
  int has_replica = o.replica_dsn != NULL && o.replica_dsn[0] != '\0';
  int replica_sets_attrs =
      has_replica ? perfc__pg_dsn_sets(o.replica_dsn, "target_session_attrs")
                  : 0;
  if (replica_sets_attrs < 0)
    return perfc__fail(PERFC_EINVAL, "pg async: replica DSN: %s",
                       perfc_last_error());
  if (o.conns_per_loop == 0)
    o.conns_per_loop = PERFC_DEFAULT_PG_ASYNC_CONNS_PER_LOOP;
  if (o.tx_conns_per_loop == 0)
    o.tx_conns_per_loop = PERFC_DEFAULT_PG_ASYNC_TX_CONNS_PER_LOOP;
  if (o.conns_per_loop > 64 || o.tx_conns_per_loop > 64)
    return perfc__fail(PERFC_EINVAL,
                       "pg async: conns_per_loop %u, tx_conns_per_loop %u "
                       "(at most 64 each)",
                       o.conns_per_loop, o.tx_conns_per_loop);
  if (o.max_pending == 0)
    o.max_pending = PERFC_DEFAULT_PG_ASYNC_MAX_PENDING;
  int rc;
  if ((rc = check_ms("connect_timeout_ms", &o.connect_timeout_ms,
                     PERFC_DEFAULT_PG_CONNECT_TIMEOUT_MS)) != 0 ||
      (rc = check_ms("statement_timeout_ms", &o.statement_timeout_ms,
                     PERFC_DEFAULT_PG_STATEMENT_TIMEOUT_MS)) != 0 ||
      (rc = check_ms("backoff_min_ms", &o.backoff_min_ms,
                     PERFC_DEFAULT_PG_ASYNC_BACKOFF_MIN_MS)) != 0 ||
      (rc = check_ms("backoff_max_ms", &o.backoff_max_ms,
                     PERFC_DEFAULT_PG_ASYNC_BACKOFF_MAX_MS)) != 0 ||
      (rc = check_ms("max_replica_lag_ms", &o.max_replica_lag_ms,
                     PERFC_DEFAULT_PG_MAX_REPLICA_LAG_MS)) != 0 ||
      (rc = check_ms("replica_lag_check_ms", &o.replica_lag_check_ms,
                     PERFC_DEFAULT_PG_REPLICA_LAG_CHECK_MS)) != 0 ||
      (rc = check_ms("replica_retry_ms", &o.replica_retry_ms,
                     PERFC_DEFAULT_PG_REPLICA_RETRY_MS)) != 0)
    return rc;
  if (o.backoff_max_ms < o.backoff_min_ms)
    o.backoff_max_ms = o.backoff_min_ms;
  if (o.name == NULL || o.name[0] == '\0')
    o.name = PERFC_DEFAULT_PG_POOL_NAME;
  perfc_pg_async *pg = calloc(1, sizeof *pg);
  if (pg == NULL || (pg->dsn = strdup(o.dsn)) == NULL ||
      (pg->name = strdup(o.name)) == NULL ||
      (has_replica && (pg->replica_dsn = strdup(o.replica_dsn)) == NULL)) {
    if (pg != NULL) {
      free(pg->dsn);
      free(pg->name);
    }
    free(pg);
    return perfc__fail(PERFC_ENOMEM, "pg async: out of memory");
  }
  o.dsn = pg->dsn;
  o.name = pg->name;
  o.replica_dsn = pg->replica_dsn;
  pg->o = o;
  pg->dsn_sets_attrs = sets_attrs;
  pg->replica_sets_attrs = replica_sets_attrs;
  pg->ryw_on = has_replica && !o.no_replica_fallback && !o.no_read_your_writes;
  pg->ryw = o.pool != NULL ? perfc__pg_pool_ryw_slot(o.pool) : &pg->ryw_own;
  if ((rc = register_metrics(pg)) != 0) {
    free(pg->replica_dsn);
    free(pg->name);
    free(pg->dsn);
    free(pg);
    return rc == PERFC_EEXIST
               ? perfc__fail(rc, "pg async: its metrics clash with other "
                                 "families of the same names in the registry")
               : rc;
  }
  /* Host names are resolved off the loops (data/resolve_internal.h); the
   * first answers are waited for here, at start-up. */
  if ((rc = hosts_of(pg->dsn, &pg->hosts)) != 0 ||
      (has_replica && (rc = hosts_of(pg->replica_dsn, &pg->replica_hosts)) != 0) ||
      (rc = perfc__resolve_ref()) != 0) {
    hosts_free(&pg->hosts);
    hosts_free(&pg->replica_hosts);
    free(pg->replica_dsn);
    free(pg->name);
    free(pg->dsn);
    free(pg);
    return perfc__fail(rc, "pg async: %s", perfc_strerror(rc));
  }
  /* Every name asked first, then one deadline for all the answers. */
  char addr[PERFC__RESOLVE_ADDR_LEN];
  for (int pass = 0; pass < 2; pass++) {
    int64_t end = perfc_loop_now_ms() + o.connect_timeout_ms;
    for (int r = 0; r < 2; r++) {
      const dsn_hosts *h = r ? &pg->replica_hosts : &pg->hosts;
      for (size_t i = 0; i < h->n; i++) {
        if (pass == 0) {
          perfc__resolve_peek(h->host[i], addr);
          continue;
        }
        int64_t left = end - perfc_loop_now_ms();
        perfc__resolve_wait(h->host[i], addr, left > 0 ? left : 0);
      }
    }
  }
  pthread_mutex_init(&pg->mu, NULL);
  pthread_cond_init(&pg->cv, NULL);
  *out = pg;
  return 0;
}

/* ---- ops ---------------------------------------------------------------------- */

static size_t align8(size_t n) { return (n + 7) & ~(size_t)7; }

/* Copies `q` into one allocation shaped for libpq's send functions. */
static int op_new(pop **out, const perfc_pg_query *q, int kind) {
  *out = NULL;
  size_t n = q->nparams;
  size_t nlen = q->name ? strlen(q->name) + 1 : 0;
  size_t slen = strlen(q->sql) + 1;
  size_t bytes = 0;
  for (size_t i = 0; i < n; i++) {
    const perfc_pg_param *p = &q->params[i];
    switch (p->kind) {
    case PERFC_PG_PARAM_NULL:
      break;
    case PERFC_PG_PARAM_TEXT:
      bytes += strlen(p->data) + 1;
      break;
    case PERFC_PG_PARAM_BINARY:
      if (p->len > INT_MAX || (p->data == NULL && p->len != 0))
        return perfc__fail(PERFC_EINVAL, "pg async: parameter %zu: bad length",
                           i + 1);
      bytes += p->len;
      break;
    case PERFC_PG_PARAM_INT64:
    case PERFC_PG_PARAM_BOOL:
      bytes += 8;
      break;
    default:
      return perfc__fail(PERFC_EINVAL, "pg async: parameter %zu: bad kind",
                         i + 1);
    }
  }
  size_t size = align8(sizeof(pop)) + n * sizeof(char *) +
                align8(n * 2 * sizeof(int)) + align8(n * sizeof(Oid)) + nlen +
                slen + bytes;
  char *mem = malloc(size);
  if (mem == NULL)
    return perfc__fail(PERFC_ENOMEM, "pg async: out of memory");
  pop *op = (pop *)mem;
  memset(op, 0, sizeof *op);
  char *at = mem + align8(sizeof(pop));
  op->values = (const char **)at;
  at += n * sizeof(char *);
  op->lengths = (int *)at;
  op->formats = op->lengths + n;
  at += align8(n * 2 * sizeof(int));
  op->types = (Oid *)at;
  at += align8(n * sizeof(Oid));
  if (nlen) {
    memcpy(at, q->name, nlen);
    op->name = at;
    at += nlen;
  }
  memcpy(at, q->sql, slen);
  op->sql = at;
  at += slen;
  for (size_t i = 0; i < n; i++) {
    const perfc_pg_param *p = &q->params[i];
    op->types[i] = p->type_oid;
    op->lengths[i] = 0;
    op->formats[i] = 0;
    op->values[i] = NULL;
    switch (p->kind) {
    case PERFC_PG_PARAM_NULL:
      break;
    case PERFC_PG_PARAM_TEXT: {
      size_t l = strlen(p->data) + 1;
      memcpy(at, p->data, l);
      op->values[i] = at;
      at += l;
      break;
    }
    case PERFC_PG_PARAM_BINARY:
      if (p->len)
        memcpy(at, p->data, p->len);
      op->values[i] = at; /* never NULL: NULL would be SQL NULL */
      op->lengths[i] = (int)p->len;
      op->formats[i] = 1;
      at += p->len;
      break;
    case PERFC_PG_PARAM_INT64: {
      uint64_t be = htobe64((uint64_t)p->i64);
      memcpy(at, &be, 8);
      op->values[i] = at;
      op->lengths[i] = 8;
      op->formats[i] = 1;
      at += 8;
      break;
    }
    case PERFC_PG_PARAM_BOOL:
      at[0] = p->i64 ? 1 : 0;
      op->values[i] = at;
      op->lengths[i] = 1;
      op->formats[i] = 1;
      at += 8;
      break;
    }
  }
  op->kind = kind;
  op->flags = q->flags;
  op->nparams = (int)n;
  *out = op;
  return 0;
}

static int op_fixed(pop **out, const char *sql, int kind) {
  perfc_pg_query q = {.sql = sql};
  return op_new(out, &q, kind);
}

static void op_release(pop *op) {
  if (op->done && op->refs == 0 && !op->queued) {
    if (op->held != NULL)
      PQclear(op->held);
    free(op);
  }
}

static int check_query(const perfc_pg_query *q) {
  if (q == NULL || q->sql == NULL || (q->nparams && q->params == NULL))
    return perfc__fail(PERFC_EINVAL,
                       "pg async: query without SQL or with NULL params");
  if (q->name != NULL && q->name[0] == '\0')
    return perfc__fail(PERFC_EINVAL,
                       "pg async: empty statement name (use NULL for unnamed)");
  if (q->nparams > 65535)
    return perfc__fail(PERFC_EINVAL, "pg async: %zu parameters (at most 65535)",
                       q->nparams);
  if (q->timeout_ms < 0 || q->timeout_ms > PERFC_PG_ASYNC_MAX_DURATION_MS)
    return perfc__fail(PERFC_EINVAL,
                       "pg async: timeout_ms %lld out of range (0 = the "
                       "client's; no_timeout for none)",
                       (long long)q->timeout_ms);
  return 0;
}

static int64_t query_timeout(perfc_pg_async *pg, const perfc_pg_query *q) {
  if (q != NULL && q->no_timeout)
    return 0;
  if (q != NULL && q->timeout_ms > 0)
    return q->timeout_ms;
  return pg->o.no_statement_timeout ? 0 : pg->o.statement_timeout_ms;
}

/* ---- the replica's state ---------------------------------------- */

/* The pool's rules (pg.c), kept per client in atomics every loop shares:
 * replica_down (a connect to the replica failed or a replica connection
 * was lost; one read per replica_retry_ms, claimed by compare-and-swap on
 * retry_at_ms, tries again), replica_lagging (the last lag check's
 * verdict; one check per replica_lag_check_ms, claimed the same way), and
 * the read-your-writes position `ryw` (an atomic maximum, the pool's own
 * word when the options name a pool). No lock, no allocation. */

/* Shared connections reopen on their timer after a failure; transaction
 * connections on demand; so do replica connections while reads fall back
 * to the primary: the replica is tried again by one read per
 * replica_retry_ms, as by the pool, not by a timer on every loop. */
static int auto_reopen(const pconn *c) {
  return !c->is_tx && (!c->is_replica || c->ls->pg->o.no_replica_fallback);
}

static void replica_mark(perfc_pg_async *pg, int usable, const char *why) {
  if (!usable)
    atomic_store(&pg->retry_at_ms,
                 perfc_loop_now_ms() + pg->o.replica_retry_ms);
  if (atomic_exchange(&pg->replica_down, !usable) == !usable)
    return;
  if (usable)
    perfc_log(PERFC_LOG_INFO,
              "pg async %s: replica answering again, reads go back to it",
              pg->name);
  else
    perfc_log(PERFC_LOG_WARN, "pg async %s: replica unreachable (%s); %s",
              pg->name, why,
              pg->o.no_replica_fallback
                  ? "reads fail with UNAVAILABLE until it answers"
                  : "reads go to the primary until it answers");
  if (pg->o.replica_fn != NULL)
    pg->o.replica_fn(pg->o.pool, usable, pg->o.replica_ud);
}

static int claim(_Atomic int64_t *at_ms, int64_t period_ms) {
  int64_t now = perfc_loop_now_ms();
  int64_t at = atomic_load(at_ms);
  return now >= at &&
         atomic_compare_exchange_strong(at_ms, &at, now + period_ms);
}

static void lag_mark(perfc_pg_async *pg, int64_t lag_ms) {
  int lagging = lag_ms < 0 || lag_ms > pg->o.max_replica_lag_ms;
  if (atomic_exchange(&pg->replica_lagging, lagging) == lagging)
    return;
  if (lagging)
    perfc_log(PERFC_LOG_WARN,
              "pg async %s: replica lags %s%lld ms (max_replica_lag_ms "
              "%lld); reads go to the primary until it catches up",
              pg->name, lag_ms < 0 ? "an unknown time, over " : "",
              (long long)(lag_ms < 0 ? pg->o.max_replica_lag_ms : lag_ms),
              (long long)pg->o.max_replica_lag_ms);
  else
    perfc_log(PERFC_LOG_INFO,
              "pg async %s: replica caught up (%lld ms behind), reads go "
              "back to it",
              pg->name, (long long)lag_ms);
}

static int64_t int8_at(const PGresult *r, int col) {
  return PQgetisnull(r, 0, col) ? -1 : strtoll(PQgetvalue(r, 0, col), NULL, 10);
}

/* A probe's answer (PERFC__PG_SQL_REPLICA_PROBE): the connection's replay
 * position, and, for a lag check, the client's verdict. A failed probe
 * changes nothing (a lost connection is marked by its close). */
static void probe_done(pconn *c, pop *op, int rc, const PGresult *r) {
  if (c->probing > 0)
    c->probing--;
  if (rc != 0 || r == NULL || PQntuples(r) != 1 || PQnfields(r) != 2)
    return;
  int64_t replay = int8_at(r, 0);
  c->replay_lsn = replay < 0 ? UINT64_MAX : (uint64_t)replay;
  if (op->probe_lag)
    lag_mark(c->ls->pg, int8_at(r, 1));
}

/* ---- delivering outcomes ---------------------------------------------------------- */

static void unreserve(pconn *c) {
  c->reserved = 0;
  c->tx = NULL;
}

static void count_error(lstate *ls, int rc, int server) {
  perfc_pg_async *pg = ls->pg;
  int k = server                  ? K_SERVER
          : rc == PERFC_ETIMEDOUT ? K_TIMEOUT
          : rc == PERFC_ESHUTDOWN ? K_SHUTDOWN
                                  : K_UNAVAILABLE;
  perfc_counter_inc(pg->m_err[k]);
  if (server)
    atomic_fetch_add_explicit(&ls->results, 1, memory_order_relaxed);
  else if (k == K_TIMEOUT)
    atomic_fetch_add_explicit(&ls->timeouts, 1, memory_order_relaxed);
  else
    atomic_fetch_add_explicit(&ls->failed, 1, memory_order_relaxed);
}

/* Runs op's callback once: `rc` 0 with `res`, or an error whose detail is
 * set already. The op stays allocated while steps name it. */
static void deliver(pconn *c, pop *op, int rc, const PGresult *res) {
  if (op->done)
    return;
  op->done = 1;
  if (c->npending > 0)
    c->npending--;
  switch (op->kind) {
  case OP_SETUP:
    break;
  case OP_PROBE:
    probe_done(c, op, rc, res);
    break;
  case OP_BEGIN:
    if (rc == 0) {
      op->tx->c = c;
      op->tx->epoch = c->epoch;
      c->tx = op->tx;
      op->tx_fn(0, op->tx, op->ud);
    } else {
      free(op->tx);
      unreserve(c);
      op->tx_fn(rc, NULL, op->ud);
    }
    op->tx = NULL;
    break;
  case OP_COMMIT:
  case OP_ROLLBACK:
    unreserve(c); /* the callback may begin the next transaction */
    if (op->fn != NULL)
      op->fn(rc, (const perfc_pg_result *)res, op->ud);
    break;
  default:
    op->fn(rc, rc == 0 ? (const perfc_pg_result *)res : NULL, op->ud);
    break;
  }
}

static void deliver_ok(pconn *c, pop *op, const PGresult *r);

static void deliver_error(pconn *c, pop *op, int rc) {
  if (op->done)
    return;
  if (op->held != NULL) {
    /* A write that PostgreSQL acknowledged, waiting for its WAL position
     * (read-your-writes): it did happen; only its position is lost, as
     * when the pool's own query after a write fails. */
    PGresult *h = op->held;
    op->held = NULL;
    op->lsn_pending = 0;
    deliver_ok(c, op, h);
    PQclear(h);
    return;
  }
  if (op->kind != OP_PROBE)
    count_error(c->ls, rc, 0);
  perfc_error_set(rc, NULL, -1, "pg async: %s",
                  rc == PERFC_ETIMEDOUT ? "no result within the statement timeout"
                  : rc == PERFC_ESHUTDOWN
                      ? "the client or its loop stopped"
                      : "connection lost or reset with the query in flight");
  deliver(c, op, rc, NULL);
}

/* ---- the prepared-statement list of a session --------------------------------------- */

static int stmt_has(pconn *c, const char *name) {
  for (size_t i = 0; i < c->nstmts; i++)
    if (strcmp(c->stmts[i], name) == 0)
      return 1;
  return 0;
}

static int stmt_add(pconn *c, const char *name) {
  if (c->nstmts == c->stmts_cap) {
    size_t cap = c->stmts_cap ? c->stmts_cap * 2 : 8;
    char **s = realloc(c->stmts, cap * sizeof *s);
    if (s == NULL)
      return PERFC_ENOMEM;
    c->stmts = s;
    c->stmts_cap = cap;
  }
  if ((c->stmts[c->nstmts] = strdup(name)) == NULL)
    return PERFC_ENOMEM;
  c->nstmts++;
  return 0;
}

static void stmt_del(pconn *c, const char *name) {
  for (size_t i = 0; i < c->nstmts; i++)
    if (strcmp(c->stmts[i], name) == 0) {
      free(c->stmts[i]);
      c->stmts[i] = c->stmts[--c->nstmts];
      return;
    }
}

static void stmt_clear(pconn *c) {
  for (size_t i = 0; i < c->nstmts; i++)
    free(c->stmts[i]);
  c->nstmts = 0;
}

/* ---- the ring of expected results -------------------------------------------------- */

static int ring_push(pconn *c, int kind, pop *op) {
  if (c->ring_n == c->ring_cap) {
    size_t cap = c->ring_cap ? c->ring_cap * 2 : 64;
    step *r = malloc(cap * sizeof *r);
    if (r == NULL)
      return PERFC_ENOMEM;
    for (size_t i = 0; i < c->ring_n; i++)
      r[i] = c->ring[(c->ring_head + i) % c->ring_cap];
    free(c->ring);
    c->ring = r;
    c->ring_cap = cap;
    c->ring_head = 0;
  }
  step *s = &c->ring[(c->ring_head + c->ring_n) % c->ring_cap];
  s->kind = kind;
  s->got = 0;
  s->op = op;
  c->ring_n++;
  if (op != NULL)
    op->refs++;
  return 0;
}

static step *ring_front(pconn *c) {
  return c->ring_n ? &c->ring[c->ring_head] : NULL;
}

static void ring_pop(pconn *c) {
  step s = c->ring[c->ring_head];
  c->ring_head = (c->ring_head + 1) % c->ring_cap;
  c->ring_n--;
  if (s.op != NULL) {
    s.op->refs--;
    op_release(s.op);
  }
}

/* ---- unsent queue --------------------------------------------------------------- */

static void unsent_push(pconn *c, pop *op) {
  op->next = NULL;
  op->queued = 1;
  op->owner = c;
  if (c->unsent_tail != NULL)
    c->unsent_tail->next = op;
  else
    c->unsent = op;
  c->unsent_tail = op;
}

static void unsent_push_front(pconn *c, pop *op) {
  op->queued = 1;
  op->owner = c;
  op->next = c->unsent;
  c->unsent = op;
  if (c->unsent_tail == NULL)
    c->unsent_tail = op;
}

static pop *unsent_pop(pconn *c) {
  pop *op = c->unsent;
  if (op != NULL) {
    c->unsent = op->next;
    if (c->unsent == NULL)
      c->unsent_tail = NULL;
    op->next = NULL;
    op->queued = 0;
  }
  return op;
}

static void mark_dirty(pconn *c) {
  c->dirty = 1;
  perfc_loop_task_defer(c->ls->flush);
}

/* libpq's messages end in a newline and may span lines; the logger wants
 * one line. */
static const char *one_line(char *buf, size_t n, const char *msg) {
  size_t k = 0;
  int space = 0;
  for (; msg != NULL && *msg && k + 1 < n; msg++) {
    if (*msg == '\n' || *msg == '\t' || *msg == '\r' || *msg == ' ') {
      space = k > 0;
      continue;
    }
    if (space && k + 2 < n)
      buf[k++] = ' ';
    space = 0;
    buf[k++] = *msg;
  }
  buf[k] = '\0';
  return buf;
}

/* ---- sending ------------------------------------------------------------------ */

static void set_events(pconn *c, unsigned ev) {
  if (c->io != NULL && ev != c->events) {
    c->events = ev;
    perfc_loop_io_set(c->io, ev);
  }
}

/* Hands libpq's buffer to the socket; waits for writability when the
 * socket did not take it all. 0, or -1 when the connection broke. */
static int flush_out(pconn *c) {
  int r = PQflush(c->pg);
  if (r < 0)
    return -1;
  set_events(c, PERFC_LOOP_READ | (r == 1 ? PERFC_LOOP_WRITE : 0));
  return 0;
}

static int send_sync(pconn *c) {
  if (ring_push(c, S_SYNC, NULL) != 0)
    return -1;
  if (!PQpipelineSync(c->pg))
    return -1;
  atomic_fetch_add_explicit(&c->ls->syncs, 1, memory_order_relaxed);
  perfc_counter_inc(c->ls->pg->m_flushes);
  return 0;
}

static int send_op(pconn *c, pop *op) {
  PGconn *pg = c->pg;
  if (op->name != NULL && !stmt_has(c, op->name)) {
    if (ring_push(c, S_PARSE, op) != 0)
      return -1;
    if (!PQsendPrepare(pg, op->name, op->sql, op->nparams, op->types))
      return -1;
    /* Listed now, so the queries behind it use it; a Parse that fails or
     * is skipped takes the name off again. */
    if (stmt_add(c, op->name) != 0)
      return -1;
  }
  if (ring_push(c, S_QUERY, op) != 0)
    return -1;
  int ok = op->name != NULL
               ? PQsendQueryPrepared(pg, op->name, op->nparams, op->values,
                                     op->lengths, op->formats, 0)
               : PQsendQueryParams(pg, op->sql, op->nparams,
                                   op->nparams ? op->types : NULL, op->values,
                                   op->lengths, op->formats, 0);
  return ok ? 0 : -1;
}

static int groupable(const pconn *c, const pop *op) {
  return !c->is_tx && (op->kind == OP_QUERY || op->kind == OP_PROBE) &&
         (op->flags & PERFC_PG_READ);
}

/* Read-your-writes: whether `op`, just sent on `c`, is a write whose WAL
 * position the reads must wait for. A statement on a shared primary
 * connection without PERFC_PG_READ, or a COMMIT (statements inside a
 * transaction are seen by nobody before it). */
static int wants_lsn(const pconn *c, const pop *op) {
  if (!c->ls->pg->ryw_on || c->is_replica)
    return 0;
  return op->kind == OP_COMMIT ||
         (op->kind == OP_QUERY && !c->is_tx && !(op->flags & PERFC_PG_READ));
}

/* Asks for the primary's WAL insert position right after the write's
 * Sync, so its implicit transaction (its commit record) is behind it; the
 * write's callback waits for the answer (op->held). No round trip of its
 * own: it opens the next group, which the reads of the iteration join. */
static int send_lsn(pconn *c, pop *op) {
  if (ring_push(c, S_LSN, op) != 0)
    return -1;
  op->lsn_pending = 1;
  return PQsendQueryParams(c->pg, PERFC__PG_SQL_INSERT_LSN, 0, NULL, NULL, NULL,
                           NULL, 0)
             ? 0
             : -1;
}

/* Sends everything queued on an open connection: reads in one Sync group,
 * every other statement fenced by Syncs of its own. */
static void conn_send(pconn *c) {
  int open = 0;
  pop *op;
  while ((op = unsent_pop(c)) != NULL) {
    if (op->done) { /* timed out while queued */
      op_release(op);
      continue;
    }
    int g = groupable(c, op);
    if (!g && open) {
      if (send_sync(c) != 0)
        goto broken;
      open = 0;
    }
    if (send_op(c, op) != 0) {
      if (op->refs == 0)
        unsent_push_front(c, op); /* failed with the others by the close */
      goto broken;
    }
    if (g) {
      open = 1;
    } else {
      if (send_sync(c) != 0)
        goto broken;
      if (wants_lsn(c, op)) {
        if (send_lsn(c, op) != 0)
          goto broken;
        if (c->is_tx) {
          if (send_sync(c) != 0)
            goto broken;
        } else {
          open = 1;
        }
      }
    }
  }
  if (open && send_sync(c) != 0)
    goto broken;
  if (flush_out(c) != 0)
    goto broken;
  return;
broken:
  char line[256];
  perfc_log(PERFC_LOG_WARN, "pg async: send failed: %s",
            one_line(line, sizeof line, PQerrorMessage(c->pg)));
  conn_close(c, PERFC_EUNAVAILABLE);
}

/* End of the iteration: every connection with queued ops sends them.
 * ls->conns is one array: the shared connections, the replica ones, the
 * transaction ones. */
static void flush_task(void *ud) {
  lstate *ls = ud;
  for (unsigned i = 0; i < ls->nconns + ls->nr + ls->ntx; i++) {
    pconn *c = &ls->conns[i];
    if (c->dirty && c->state == C_UP) {
      c->dirty = 0;
      conn_send(c);
    }
  }
}

/* ---- results ---------------------------------------------------------------------- */

static int map_error(pconn *c, const PGresult *r, char *state_out) {
  const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
  if (msg == NULL)
    msg = PQerrorMessage(c->pg);
  int code = perfc_pg_error_from_sqlstate(state);
  if (PQstatus(c->pg) == CONNECTION_BAD)
    code = PERFC_EUNAVAILABLE;
  snprintf(state_out, 6, "%s", state ? state : "");
  char line[PERFC_ERROR_MESSAGE_MAX];
  snprintf(line, sizeof line, "%s", msg);
  size_t n = strlen(line);
  while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' '))
    line[--n] = '\0';
  return perfc_error_set(code, state, -1, "%s", line);
}

/* A success handed to its callback: COMMIT answered ROLLBACK and
 * PERFC_PG_ONE without a row are failures. */
static void deliver_ok(pconn *c, pop *op, const PGresult *r) {
  if (op->kind == OP_COMMIT &&
      strcmp(PQcmdStatus((PGresult *)r), "ROLLBACK") == 0) {
    perfc_error_set(PERFC_EABORTED, NULL, -1,
                    "pg async: COMMIT rolled back (a statement of the "
                    "transaction failed)");
    deliver(c, op, PERFC_EABORTED, NULL);
    return;
  }
  if ((op->flags & PERFC_PG_ONE) && PQntuples(r) == 0) {
    perfc_error_set(PERFC_ENOENT, NULL, -1, "pg async: no rows");
    deliver(c, op, PERFC_ENOENT, NULL);
    return;
  }
  deliver(c, op, 0, r);
}

/* A read the replica answered with a connection-level error (class 08,
 * 57P01-57P03: shutting down, connection failure): it is read-only, so it
 * runs again on the primary, as the pool's perfc_pg_exec() does (the
 * connection's close marks the replica). Returns 1 when the read was
 * moved or failed with the primary's refusal, 0 when `rc` is its own. */
static int move_read(pconn *c, pop *op, int rc) {
  if (rc != PERFC_EUNAVAILABLE || !c->is_replica || op->kind != OP_QUERY ||
      c->ls->pg->o.no_replica_fallback)
    return 0;
  int frc = fallback(c->ls, op, R_UNREACHABLE, 1);
  if (frc == 0) {
    if (c->npending > 0)
      c->npending--;
    return 1;
  }
  count_error(c->ls, frc, 0); /* the primary path's refusal */
  deliver(c, op, frc, NULL);
  return 1;
}

/* A Parse's or a query's result; `s` is a copy of its step. Returns 1
 * when `r` was kept (a write waiting for its WAL position), else 0: the
 * caller clears it. */
static int on_result(pconn *c, const step *s, const PGresult *r) {
  pop *op = s->op;
  ExecStatusType es = PQresultStatus(r);
  char state[6];
  if (s->kind == S_LSN) {
    if (es == PGRES_TUPLES_OK && PQntuples(r) == 1 && PQnfields(r) == 1) {
      int64_t lsn = int8_at(r, 0);
      if (lsn > 0)
        perfc__pg_ryw_put(c->ls->pg->ryw, (uint64_t)lsn);
    }
    op->lsn_pending = 0;
    if (op->held != NULL) {
      PGresult *h = op->held;
      op->held = NULL;
      deliver_ok(c, op, h);
      PQclear(h);
    }
    return 0;
  }
  if (s->kind == S_PARSE) {
    if (es == PGRES_COMMAND_OK) {
      atomic_fetch_add_explicit(&c->ls->prepares, 1, memory_order_relaxed);
      return 0;
    }
    if (es == PGRES_PIPELINE_ABORTED) {
      stmt_del(c, op->name); /* never ran: prepared again when resent */
      return 0;
    }
    const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (st != NULL && strcmp(st, "42P05") == 0)
      return 0; /* the session has it already */
    stmt_del(c, op->name);
    if (!op->done && op->owner == c) {
      int rc = map_error(c, r, state);
      if (!move_read(c, op, rc)) {
        count_error(c->ls, rc, 1);
        deliver(c, op, rc, NULL);
      }
    }
    return 0;
  }
  if (op->done || op->owner != c)
    return 0; /* its Parse failed, it timed out, or it moved meanwhile */
  if (es == PGRES_PIPELINE_ABORTED) {
    /* Skipped after a neighbour's error, never executed: next group. */
    atomic_fetch_add_explicit(&c->ls->resent, 1, memory_order_relaxed);
    unsent_push(c, op);
    mark_dirty(c);
    return 0;
  }
  if (es == PGRES_TUPLES_OK || es == PGRES_COMMAND_OK) {
    atomic_fetch_add_explicit(&c->ls->results, 1, memory_order_relaxed);
    if (op->lsn_pending) {
      op->held = (PGresult *)r; /* answered with its WAL position */
      return 1;
    }
    deliver_ok(c, op, r);
    return 0;
  }
  const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
  /* 26000: the session lost a statement this list has (DISCARD ALL,
   * DEALLOCATE). The query did not run: prepare again and resend once. */
  if (op->name != NULL && st != NULL && strcmp(st, "26000") == 0 &&
      op->retries < 1 && PQstatus(c->pg) == CONNECTION_OK) {
    op->retries++;
    stmt_clear(c);
    unsent_push(c, op);
    mark_dirty(c);
    return 0;
  }
  int rc = map_error(c, r, state);
  if (!move_read(c, op, rc)) {
    count_error(c->ls, rc, 1);
    deliver(c, op, rc, NULL);
  }
  return 0;
}

/* Reads what arrived and hands out every complete result, in order. */
static void conn_read(pconn *c) {
  if (!PQconsumeInput(c->pg)) {
    conn_close(c, PERFC_EUNAVAILABLE);
    return;
  }
  unsigned epoch = c->epoch;
  while (c->state == C_UP && c->epoch == epoch && c->ring_n > 0 &&
         !PQisBusy(c->pg)) {
    PGresult *r = PQgetResult(c->pg);
    step *s = ring_front(c);
    if (r == NULL) {
      if (s->kind != S_SYNC && s->got) {
        ring_pop(c);
        continue;
      }
      break; /* nothing complete yet */
    }
    ExecStatusType es = PQresultStatus(r);
    if (s->kind == S_SYNC || es == PGRES_PIPELINE_SYNC) {
      PQclear(r);
      if (s->kind == S_SYNC && es == PGRES_PIPELINE_SYNC) {
        ring_pop(c);
        continue;
      }
      /* Results out of step with what was sent: never guess. */
      perfc_log(PERFC_LOG_WARN, "pg async: results out of order; closing");
      conn_close(c, PERFC_EUNAVAILABLE);
      return;
    }
    if (s->got) { /* a second result for one statement: dropped */
      PQclear(r);
      continue;
    }
    s->got = 1;
    step copy = *s;
    /* Callbacks may queue more; the ring stays. */
    if (!on_result(c, &copy, r))
      PQclear(r);
  }
  if (c->state == C_UP && c->epoch == epoch &&
      PQstatus(c->pg) == CONNECTION_BAD)
    conn_close(c, PERFC_EUNAVAILABLE);
}

/* ---- connections ----------------------------------------------------------------- */

static void notice_to_log(void *arg, const char *message) {
  (void)arg;
  char line[256];
  perfc_log(PERFC_LOG_DEBUG, "pg async: server notice: %s",
            one_line(line, sizeof line, message));
}

static void conn_up(pconn *c) {
  if (PQsetnonblocking(c->pg, 1) != 0 || !PQenterPipelineMode(c->pg)) {
    conn_close(c, PERFC_EUNAVAILABLE);
    return;
  }
  c->state = C_UP;
  c->backoff_ms = 0;
  if (c->is_replica)
    replica_mark(c->ls->pg, 1, "");
  atomic_fetch_add_explicit(&c->ls->connects, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&c->ls->up, 1, memory_order_relaxed);
  perfc_gauge_inc(c->ls->pg->m_up);
  /* The server stops a statement whose client went away (a timeout's
   * reset) only when it checks: make it check. First on the wire, in a
   * Sync group of its own (a rolled-back SET would be undone). */
  pop *setup;
  char sql[128];
  snprintf(sql, sizeof sql,
           "SELECT pg_catalog.set_config('client_connection_check_interval', "
           "'%d', false)",
           PERFC_DEFAULT_PG_ASYNC_CHECK_INTERVAL_MS);
  if (op_fixed(&setup, sql, OP_SETUP) == 0) {
    c->npending++;
    unsent_push_front(c, setup);
  }
  set_events(c, PERFC_LOOP_READ);
  arm_timer(c);
  conn_send(c);
}

static void on_io(perfc_loop_io *io, unsigned events, void *ud) {
  (void)io;
  pconn *c = ud;
  if (c->state == C_CONNECTING) {
    PostgresPollingStatusType st = PQconnectPoll(c->pg);
    if (st == PGRES_POLLING_FAILED) {
      char line[256];
      perfc_log(PERFC_LOG_DEBUG, "pg async: connect failed: %s",
                one_line(line, sizeof line, PQerrorMessage(c->pg)));
      conn_close(c, PERFC_EUNAVAILABLE);
      return;
    }
    /* libpq may move to another socket: another address of the host, or
     * the next host of a multi-host DSN when one refuses or is not
     * read-write. It closes the old socket first, so the new one often
     * gets the same number, which epoll no longer watches (closing it
     * dropped the registration): the socket is registered again after
     * every step of the connect, not only when its number changes. A few
     * epoll_ctl calls per connect, never per query. */
    int fd = PQsocket(c->pg);
    perfc_loop_io_free(c->io);
    c->io = NULL;
    c->events = 0;
    c->fd = fd;
    if (fd < 0 || perfc_loop_io_new(&c->io, c->ls->loop, fd, on_io, c) != 0) {
      conn_close(c, PERFC_EUNAVAILABLE);
      return;
    }
    if (st == PGRES_POLLING_OK)
      conn_up(c);
    else
      set_events(c, st == PGRES_POLLING_READING ? PERFC_LOOP_READ
                                                : PERFC_LOOP_WRITE);
    return;
  }
  if (c->state != C_UP)
    return;
  if ((events & (PERFC_LOOP_WRITE | PERFC_LOOP_ERROR)) &&
      (c->events & PERFC_LOOP_WRITE) && flush_out(c) != 0) {
    conn_close(c, PERFC_EUNAVAILABLE);
    return;
  }
  if (events & (PERFC_LOOP_READ | PERFC_LOOP_ERROR))
    conn_read(c);
}

/* A read that was on a lost replica connection runs on the primary (it is
 * read-only); every other op, or a read the primary refuses, fails with
 * `rc` (the primary's refusal). Each op once: one moved already, or
 * delivered, is skipped. */
static void fail_or_move(pconn *c, pop *op, int rc, int move) {
  if (op->done || op->owner != c)
    return;
  if (move && op->kind == OP_QUERY && op->held == NULL) {
    int frc = fallback(c->ls, op, R_UNREACHABLE, 1);
    if (frc == 0)
      return;
    rc = frc;
  }
  deliver_error(c, op, rc);
}

/* The connection stops being used: every op queued or in flight on it
 * gets `rc` (a transaction on it is broken), or, on a lost replica
 * connection, reads move to the primary; a shared connection is reopened
 * after the backoff. Safe from inside callbacks: the lists are detached
 * before any callback runs. */
static void conn_close(pconn *c, int rc) {
  lstate *ls = c->ls;
  perfc_pg_async *pg = ls->pg;
  int was_up = c->state == C_UP;
  /* A replica connection lost (not reset by the client's own timeout):
   * reads go to the primary, and those on it are moved there. */
  int lost = c->is_replica && rc == PERFC_EUNAVAILABLE && !c->resetting;
  int move = c->is_replica && rc == PERFC_EUNAVAILABLE &&
             !pg->o.no_replica_fallback && !pg->closing;
  c->resetting = 0;
  c->replay_lsn = 0;
  c->in_close = 1;
  c->state = C_DOWN;
  c->epoch++;
  c->dirty = 0;
  if (was_up) {
    atomic_fetch_sub_explicit(&ls->up, 1, memory_order_relaxed);
    perfc_gauge_dec(pg->m_up);
  }
  perfc_loop_io_free(c->io);
  c->io = NULL;
  c->events = 0;
  c->fd = -1;
  if (c->pg != NULL) {
    PQfinish(c->pg);
    c->pg = NULL;
  }
  stmt_clear(c);
  c->backoff_ms = c->backoff_ms == 0 ? pg->o.backoff_min_ms
                  : c->backoff_ms * 2 > pg->o.backoff_max_ms
                      ? pg->o.backoff_max_ms
                      : c->backoff_ms * 2;
  c->retry_at_ms = perfc_loop_now_ms() + c->backoff_ms;
  /* Detach what is pending, then fail it. */
  step *ring = c->ring;
  size_t cap = c->ring_cap, head = c->ring_head, n = c->ring_n;
  c->ring = NULL;
  c->ring_cap = c->ring_head = c->ring_n = 0;
  pop *unsent = c->unsent;
  c->unsent = c->unsent_tail = NULL;
  if (lost)
    replica_mark(pg, 0, was_up ? "connection lost" : "cannot connect");
  /* An op both in the ring and requeued (aborted) is on `unsent` too:
   * taking it off the list first keeps it alive until its last step. */
  for (pop *op = unsent; op != NULL; op = op->next)
    op->queued = 0;
  /* The queue first, each op's link read before it is handled (a moved
   * op is linked into the primary's queue). Queued ops no step names are
   * freed now; the others (a read queued again while its aborted step was
   * still in the ring) at their last step, below, so each is freed
   * exactly once. */
  for (pop *op = unsent, *next; op != NULL; op = next) {
    next = op->next;
    fail_or_move(c, op, rc, move);
    op_release(op);
  }
  for (size_t i = 0; i < n; i++) {
    pop *op = ring[(head + i) % cap].op;
    if (op != NULL)
      fail_or_move(c, op, rc, move);
  }
  for (size_t i = 0; i < n; i++) {
    pop *op = ring[(head + i) % cap].op;
    if (op != NULL) {
      op->refs--;
      op_release(op);
    }
  }
  free(ring);
  c->npending = 0;
  c->probing = 0;
  c->in_close = 0;
  if (c->reserved && c->tx == NULL && rc != PERFC_ESHUTDOWN)
    unreserve(c); /* BEGIN had not answered: its callback freed it */
  if (c->state == C_DOWN && !pg->closing && auto_reopen(c))
    arm_timer(c);
}

static void conn_start(pconn *c) {
  perfc_pg_async *pg = c->ls->pg;
  /* Writes go here too: with several hosts listed, libpq picks the one
   * that accepts them (the DSN's own target_session_attrs wins). Replica
   * connections prefer a standby, as the pool's. */
  int sets = c->is_replica ? pg->replica_sets_attrs : pg->dsn_sets_attrs;
  const char *kw[6] = {"dbname"}, *vals[6] = {
      c->is_replica ? pg->replica_dsn : pg->dsn};
  int k = 1;
  if (!sets) {
    kw[k] = "target_session_attrs";
    vals[k++] = c->is_replica ? "prefer-standby" : "read-write";
  }
  /* Host names: the resolver's addresses (hostaddr), so that libpq does
   * no lookup on the loop; `host` stays the name (TLS, pg_hba). */
  const dsn_hosts *h = c->is_replica ? &pg->replica_hosts : &pg->hosts;
  char lists[1536];
  if (h->n > 0) {
    const char *hl, *al, *pl;
    if (hosts_now(h, lists, sizeof lists, &hl, &al, &pl) == 0) {
      perfc_log(PERFC_LOG_DEBUG, "pg async: no host of the %s DSN resolves "
                "(yet)", c->is_replica ? "replica" : "primary");
      conn_close(c, PERFC_EUNAVAILABLE);
      return;
    }
    kw[k] = "host";
    vals[k++] = hl;
    kw[k] = "hostaddr";
    vals[k++] = al;
    if (pl != NULL) {
      kw[k] = "port";
      vals[k++] = pl;
    }
  }
  kw[k] = NULL;
  vals[k] = NULL;
  c->pg = PQconnectStartParams(kw, vals, 1);
  if (c->pg == NULL || PQstatus(c->pg) == CONNECTION_BAD) {
    char line[256];
    perfc_log(PERFC_LOG_DEBUG, "pg async: cannot start a connection: %s",
              c->pg ? one_line(line, sizeof line, PQerrorMessage(c->pg))
                    : "out of memory");
    conn_close(c, PERFC_EUNAVAILABLE);
    return;
  }
  PQsetNoticeProcessor(c->pg, notice_to_log, NULL);
  c->fd = PQsocket(c->pg);
  if (c->fd < 0 ||
      perfc_loop_io_new(&c->io, c->ls->loop, c->fd, on_io, c) != 0) {
    conn_close(c, PERFC_EUNAVAILABLE);
    return;
  }
  c->events = 0;
  c->state = C_CONNECTING;
  set_events(c, PERFC_LOOP_WRITE);
  c->connect_deadline_ms = perfc_loop_now_ms() + pg->o.connect_timeout_ms;
  arm_timer(c);
}

/* The connection's timer: the earliest of its deadlines. */
static void arm_timer(pconn *c) {
  int64_t at = INT64_MAX;
  if (c->state == C_DOWN) {
    if (auto_reopen(c) && c->retry_at_ms > 0)
      at = c->retry_at_ms;
  } else {
    if (c->state == C_CONNECTING)
      at = c->connect_deadline_ms;
    for (pop *op = c->unsent; op != NULL; op = op->next)
      if (!op->done && op->deadline_ms > 0 && op->deadline_ms < at)
        at = op->deadline_ms;
    for (size_t i = 0; i < c->ring_n; i++) {
      pop *op = c->ring[(c->ring_head + i) % c->ring_cap].op;
      if (op != NULL && !op->done && op->owner == c && op->deadline_ms > 0 &&
          op->deadline_ms < at)
        at = op->deadline_ms;
    }
  }
  c->armed_at_ms = at;
  if (at == INT64_MAX)
    perfc_loop_timer_disarm(c->timer);
  else
    perfc_loop_timer_arm(c->timer, at);
}

static void on_timer(void *ud) {
  pconn *c = ud;
  perfc_pg_async *pg = c->ls->pg;
  int64_t now = perfc_loop_now_ms();
  c->armed_at_ms = INT64_MAX;
  if (c->state == C_DOWN) {
    if (!pg->closing && auto_reopen(c) && c->retry_at_ms <= now)
      conn_start(c);
    else
      arm_timer(c);
    return;
  }
  /* Queries still queued (the connection is opening) just fail. */
  for (pop *op = c->unsent; op != NULL; op = op->next)
    if (!op->done && op->deadline_ms > 0 && op->deadline_ms <= now)
      deliver_error(c, op, PERFC_ETIMEDOUT);
  if (c->state == C_CONNECTING && c->connect_deadline_ms <= now) {
    conn_close(c, PERFC_EUNAVAILABLE);
    return;
  }
  /* A sent query past its deadline: it fails, and the connection with it,
   * so its late result can never be read as another query's. */
  int expired = 0;
  for (size_t i = 0; i < c->ring_n; i++) {
    pop *op = c->ring[(c->ring_head + i) % c->ring_cap].op;
    if (op != NULL && !op->done && op->owner == c && op->deadline_ms > 0 &&
        op->deadline_ms <= now) {
      deliver_error(c, op, PERFC_ETIMEDOUT);
      expired = 1;
    }
  }
  if (expired && c->state != C_DOWN) {
    c->resetting = 1; /* the replica is not unreachable for that */
    conn_close(c, PERFC_EUNAVAILABLE);
    return;
  }
  arm_timer(c);
}

/* ---- per-loop state ------------------------------------------------------------- */

static void state_end(void *ud);

static void retire_counts(perfc_pg_async *pg, lstate *ls) {
#define RETIRE(f) pg->retired.f += atomic_load(&ls->f)
  RETIRE(queries);
  RETIRE(syncs);
  RETIRE(results);
  RETIRE(resent);
  RETIRE(timeouts);
  RETIRE(failed);
  RETIRE(prepares);
  RETIRE(connects);
#undef RETIRE
}

static lstate *state_get(perfc_pg_async *pg, perfc_loop *loop) {
  lstate *ls = perfc_loop_local_get(loop, pg);
  if (ls != NULL)
    return ls;
  ls = calloc(1, sizeof *ls);
  if (ls == NULL)
    return NULL;
  ls->pg = pg;
  ls->loop = loop;
  ls->nconns = pg->o.conns_per_loop;
  ls->nr = pg->replica_dsn != NULL ? pg->o.conns_per_loop : 0;
  ls->ntx = pg->o.tx_conns_per_loop;
  unsigned n = ls->nconns + ls->nr + ls->ntx;
  ls->conns = calloc(n, sizeof *ls->conns);
  if (ls->conns == NULL ||
      perfc_loop_task_new(&ls->flush, loop, flush_task, ls) != 0)
    goto fail;
  ls->rconns = ls->conns + ls->nconns;
  ls->txconns = ls->rconns + ls->nr;
  for (unsigned i = 0; i < n; i++) {
    pconn *c = &ls->conns[i];
    c->ls = ls;
    c->fd = -1;
    c->armed_at_ms = INT64_MAX;
    c->is_replica = i >= ls->nconns && i < ls->nconns + ls->nr;
    c->is_tx = i >= ls->nconns + ls->nr;
    if (perfc_loop_timer_new(&c->timer, loop, on_timer, c) != 0)
      goto fail;
  }
  pthread_mutex_lock(&pg->mu);
  if (pg->closing) {
    pthread_mutex_unlock(&pg->mu);
    goto fail;
  }
  ls->next = pg->states;
  if (pg->states != NULL)
    pg->states->prev = ls;
  pg->states = ls;
  pg->nstates++;
  pthread_mutex_unlock(&pg->mu);
  if (perfc_loop_local_set(loop, pg, ls, state_end) != 0) {
    state_end(ls);
    return NULL;
  }
  return ls;
fail:
  for (unsigned i = 0; i < n && ls->conns != NULL; i++)
    perfc_loop_timer_free(ls->conns[i].timer);
  perfc_loop_task_free(ls->flush);
  free(ls->conns);
  free(ls);
  return NULL;
}

/* The loop stops or the client goes (on the loop's thread): everything
 * pending fails with PERFC_ESHUTDOWN, the connections close. */
static void state_end(void *ud) {
  lstate *ls = ud;
  perfc_pg_async *pg = ls->pg;
  for (unsigned i = 0; i < ls->nconns + ls->nr + ls->ntx; i++) {
    pconn *c = &ls->conns[i];
    perfc_loop_timer_disarm(c->timer);
    if (c->tx != NULL)
      c->tx->c = NULL; /* its commit/rollback now answer PERFC_ESHUTDOWN */
    c->tx = NULL;
    c->is_tx = 1; /* no reopen */
    conn_close(c, PERFC_ESHUTDOWN);
    perfc_loop_timer_free(c->timer);
    free(c->stmts);
  }
  perfc_loop_task_free(ls->flush);
  pthread_mutex_lock(&pg->mu);
  if (ls->prev != NULL)
    ls->prev->next = ls->next;
  else
    pg->states = ls->next;
  if (ls->next != NULL)
    ls->next->prev = ls->prev;
  pg->nstates--;
  retire_counts(pg, ls);
  pthread_cond_broadcast(&pg->cv);
  pthread_mutex_unlock(&pg->mu);
  free(ls->conns);
  free(ls);
}

/* A connection of `set` (n of them, round robin from *rr) for one more
 * query: one up or opening with room; a never-opened one opens now, and
 * with `start_any` one down after a failure too (replica connections,
 * which have no reopen timer while reads fall back). */
static pconn *pick_in(lstate *ls, pconn *set, unsigned n, unsigned *rr,
                      int start_any, int *rc) {
  int full = 0;
  for (unsigned k = 0; k < n; k++) {
    pconn *c = &set[(*rr + k) % n];
    if (c->state == C_DOWN && (start_any || c->retry_at_ms == 0) &&
        !c->in_close && !ls->pg->closing)
      conn_start(c);
    if (c->state == C_DOWN)
      continue;
    if (c->npending >= ls->pg->o.max_pending) {
      full = 1;
      continue;
    }
    *rr = (*rr + k + 1) % n;
    return c;
  }
  *rc = full ? perfc__fail(PERFC_EFULL,
                           "pg async: max_pending queries in flight on every "
                           "connection of this loop")
             : perfc__fail(PERFC_EUNAVAILABLE,
                           "pg async: no connection (reconnecting)");
  return NULL;
}

static pconn *pick(lstate *ls, int *rc) {
  return pick_in(ls, ls->conns, ls->nconns, &ls->rr, 0, rc);
}

/* Queues `op` on `c`; it leaves at the end of this iteration (or when the
 * connection is up). enqueue() counts a query accepted; enqueue_raw()
 * queues one counted already (a read moved off the replica) or the
 * client's own probe. */
static void enqueue_raw(pconn *c, pop *op) {
  c->npending++;
  unsent_push(c, op);
  if (c->state == C_UP)
    mark_dirty(c);
  /* Deadlines mostly grow: only an earlier one moves the timer (a full
   * scan per query would cost O(n) at every issue). */
  if (op->deadline_ms > 0 && op->deadline_ms < c->armed_at_ms) {
    c->armed_at_ms = op->deadline_ms;
    perfc_loop_timer_arm(c->timer, op->deadline_ms);
  }
}

static void enqueue(pconn *c, pop *op) {
  atomic_fetch_add_explicit(&c->ls->queries, 1, memory_order_relaxed);
  perfc_counter_inc(c->ls->pg->m_queries);
  enqueue_raw(c, op);
}

/* ---- where a read goes ------------------------------------------ */

/* The read runs on the primary, counted by reason (as the pool counts:
 * even when the primary then refuses it). `moved`: counted as a query
 * already, when it was first accepted. */
static int fallback(lstate *ls, pop *op, int reason, int moved) {
  perfc_pg_async *pg = ls->pg;
  perfc_counter_inc(pg->m_fallback);
  perfc_counter_inc(pg->m_fallbacks[reason]);
  int rc;
  pconn *c = pick(ls, &rc);
  if (c == NULL)
    return rc;
  if (moved)
    enqueue_raw(c, op);
  else
    enqueue(c, op);
  return 0;
}

/* Asks a replica connection where its server stands (pg.c's
 * replica_probe, as a pipelined read): `lag` 1 for the lag check, 0 to
 * refresh the replay position read-your-writes compares (at most one of
 * those queued or in flight per connection). Best effort: out of memory
 * skips it. */
static void send_probe(pconn *c, int lag) {
  if (!lag && c->probing > 0)
    return;
  pop *op;
  if (op_fixed(&op, PERFC__PG_SQL_REPLICA_PROBE, OP_PROBE) != 0)
    return;
  op->flags = PERFC_PG_READ; /* it joins the reads' group */
  op->probe_lag = lag;
  int64_t t = query_timeout(c->ls->pg, NULL);
  op->deadline_ms = t > 0 ? perfc_loop_now_ms() + t : 0;
  c->probing++;
  enqueue_raw(c, op);
}

/* A read on a client with a replica: pg.c's acquire_read() on the loop.
 * In order: a replica known to lag (between checks) or to be down
 * (between retries) sends the read to the primary at once; else a replica
 * connection is picked (opened now if it is down: a connect that fails
 * marks the replica down and moves the reads queued on it to the
 * primary); the lag check, when due, is queued on it ahead of the read;
 * and a read whose connection's server has not replayed the last write
 * (as far as its last probe showed) runs on the primary while a probe
 * asks again. What differs from the pool: nothing here waits, so the lag
 * check's verdict applies from the next read on, and a read-your-writes
 * detour is decided on the position the connection last reported. */
static int route_read(lstate *ls, pop *op) {
  perfc_pg_async *pg = ls->pg;
  int rc;
  pconn *c;
  if (pg->o.no_replica_fallback) {
    c = pick_in(ls, ls->rconns, ls->nr, &ls->rrr, 0, &rc);
    if (c == NULL)
      return rc;
    enqueue(c, op);
    return 0;
  }
  int check = !pg->o.no_replica_lag_check &&
              claim(&pg->lag_check_at_ms, pg->o.replica_lag_check_ms);
  if (!check && atomic_load(&pg->replica_lagging))
    return fallback(ls, op, R_LAGGING, 0);
  if (atomic_load(&pg->replica_down) &&
      !claim(&pg->retry_at_ms, pg->o.replica_retry_ms))
    return fallback(ls, op, R_UNREACHABLE, 0);
  c = pick_in(ls, ls->rconns, ls->nr, &ls->rrr, 1, &rc);
  if (c == NULL) {
    if (rc == PERFC_EFULL)
      return rc; /* the replica is there, busy: as the pool's exhaustion */
    replica_mark(pg, 0, "cannot connect");
    return fallback(ls, op, R_UNREACHABLE, 0);
  }
  if (check)
    send_probe(c, 1);
  if (atomic_load(&pg->replica_lagging))
    return fallback(ls, op, R_LAGGING, 0);
  uint64_t want =
      pg->ryw_on ? atomic_load_explicit(pg->ryw, memory_order_acquire) : 0;
  if (want != 0 && c->replay_lsn < want) {
    send_probe(c, 0);
    return fallback(ls, op, R_RYW, 0);
  }
  enqueue(c, op);
  return 0;
}

static int submit_here(perfc_pg_async *pg, perfc_loop *loop, pop *op) {
  lstate *ls = state_get(pg, loop);
  if (ls == NULL)
    return perfc__fail(pg->closing ? PERFC_ESHUTDOWN : PERFC_ENOMEM,
                       "pg async: %s",
                       pg->closing ? "client closing" : "out of memory");
  if (ls->nr != 0 && (op->flags & PERFC_PG_READ))
    return route_read(ls, op);
  int rc;
  pconn *c = pick(ls, &rc);
  if (c == NULL)
    return rc;
  enqueue(c, op);
  return 0;
}

/* ---- threads without a loop: the client's own loop -------------------------------- */

static void submit_task(void *ud) {
  perfc_pg_async *pg = ud;
  pthread_mutex_lock(&pg->mu);
  pop *op = pg->q;
  pg->q = pg->q_tail = NULL;
  pthread_mutex_unlock(&pg->mu);
  perfc_loop *loop = perfc_loop_current();
  while (op != NULL) {
    pop *next = op->next;
    op->next = NULL;
    int rc = submit_here(pg, loop, op);
    if (rc != 0) {
      op->done = 1;
      op->fn(rc, NULL, op->ud); /* the caller was told 0: tell it now */
      free(op);
    }
    op = next;
  }
}

static void *own_main(void *ud) {
  perfc_pg_async *pg = ud;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  perfc_loop_run(pg->own);
  return NULL;
}

static int own_start(perfc_pg_async *pg) { /* under mu */
  if (pg->own_started)
    return 0;
  int rc = perfc_loop_new(&pg->own);
  if (rc != 0)
    return rc;
  if ((rc = perfc_loop_task_new(&pg->submit, pg->own, submit_task, pg)) != 0) {
    perfc_loop_free(pg->own);
    pg->own = NULL;
    return rc;
  }
  if (pthread_create(&pg->own_thread, NULL, own_main, pg) != 0) {
    perfc_loop_task_free(pg->submit);
    perfc_loop_free(pg->own);
    pg->own = NULL;
    pg->submit = NULL;
    return perfc__fail(PERFC_ETHREAD, "pg async: cannot start its loop");
  }
  pg->own_started = 1;
  return 0;
}

static int hand_over(perfc_pg_async *pg, pop *op) {
  op->next = NULL;
  pthread_mutex_lock(&pg->mu);
  int rc = pg->closing ? perfc__fail(PERFC_ESHUTDOWN, "pg async: closing")
                       : own_start(pg);
  if (rc == 0) {
    if (pg->q_tail != NULL)
      pg->q_tail->next = op;
    else
      pg->q = op;
    pg->q_tail = op;
  }
  pthread_mutex_unlock(&pg->mu);
  if (rc == 0)
    perfc_loop_task_post(pg->submit);
  return rc;
}

/* ---- the public calls ----------------------------------------------------------- */

/* A query issued inside a traced call gets a CLIENT span, as the pool's
 * statements do (pg.c's stmt_span: db.system, and as db.statement only
 * the prepared statement's name, never parameters or SQL), ended when its
 * callback runs. The callback is wrapped for it. */
typedef struct traced_query {
  perfc_pg_async_fn fn;
  void *ud;
  perfc_span *span;
} traced_query;

static void traced_query_done(int rc, const perfc_pg_result *res, void *ud) {
  traced_query *t = ud;
  if (rc != 0 && rc != PERFC_ENOENT)
    perfc_span_set_status(t->span, PERFC_SPAN_STATUS_ERROR, perfc_err_name(rc));
  perfc_span_end(t->span);
  t->fn(rc, res, t->ud);
  free(t);
}

static traced_query *traced_query_new(const perfc_pg_query *q) {
  perfc_trace_current tc;
  int had = perfc_trace_current_get(&tc);
  perfc_span *sp = perfc_tracing_span_start_current(
      q->name != NULL ? q->name : "SQL", PERFC_SPAN_CLIENT);
  if (sp == NULL)
    return NULL;
  perfc_trace_current_set(had ? &tc : NULL); /* the caller goes on */
  traced_query *t = malloc(sizeof *t);
  if (t == NULL) {
    perfc_span_end(sp);
    return NULL;
  }
  perfc_span_set_attr_str(sp, "db.system", "postgresql");
  if (q->name != NULL)
    perfc_span_set_attr_str(sp, "db.statement", q->name);
  t->span = sp;
  return t;
}

int perfc_pg_async_query(perfc_pg_async *pg, const perfc_pg_query *q,
                         perfc_pg_async_fn fn, void *user_data) {
  if (pg == NULL || fn == NULL)
    return perfc__fail(PERFC_EINVAL, "pg async: NULL client or callback");
  int rc = check_query(q);
  if (rc != 0)
    return rc;
  pop *op;
  if ((rc = op_new(&op, q, OP_QUERY)) != 0)
    return rc;
  traced_query *tq = traced_query_new(q);
  if (tq != NULL) {
    tq->fn = fn;
    tq->ud = user_data;
    fn = traced_query_done;
    user_data = tq;
  }
  op->fn = fn;
  op->ud = user_data;
  int64_t t = query_timeout(pg, q);
  op->deadline_ms = t > 0 ? perfc_loop_now_ms() + t : 0;
  perfc_loop *loop = perfc_loop_current();
  rc = loop != NULL && !pg->closing ? submit_here(pg, loop, op)
                                    : hand_over(pg, op);
  if (rc != 0) {
    free(op);
    if (tq != NULL) {
      perfc_span_set_status(tq->span, PERFC_SPAN_STATUS_ERROR,
                            perfc_err_name(rc));
      perfc_span_end(tq->span);
      free(tq);
    }
  }
  return rc;
}

int perfc_pg_async_begin(perfc_pg_async *pg, perfc_pg_async_tx_fn fn,
                         void *user_data) {
  if (pg == NULL || fn == NULL)
    return perfc__fail(PERFC_EINVAL, "pg async: NULL client or callback");
  perfc_loop *loop = perfc_loop_current();
  if (loop == NULL)
    return perfc__fail(PERFC_ESTATE,
                       "pg async: transactions start on a loop thread");
  if (pg->closing)
    return perfc__fail(PERFC_ESHUTDOWN, "pg async: client closing");
  lstate *ls = state_get(pg, loop);
  if (ls == NULL)
    return perfc__fail(PERFC_ENOMEM, "pg async: out of memory");
  /* A free transaction connection: one up first, else one to open. */
  pconn *c = NULL;
  int64_t now = perfc_loop_now_ms();
  for (int pass = 0; pass < 2 && c == NULL; pass++)
    for (unsigned i = 0; i < ls->ntx && c == NULL; i++) {
      pconn *t = &ls->txconns[i];
      if (t->reserved)
        continue;
      if (pass == 0 ? t->state != C_DOWN : t->retry_at_ms <= now)
        c = t;
    }
  if (c == NULL) {
    for (unsigned i = 0; i < ls->ntx; i++)
      if (!ls->txconns[i].reserved)
        return perfc__fail(PERFC_EUNAVAILABLE,
                           "pg async: no transaction connection "
                           "(reconnecting)");
    return perfc__fail(PERFC_EFULL,
                       "pg async: tx_conns_per_loop transactions open on "
                       "this loop");
  }
  pop *op;
  int rc = op_fixed(&op, "BEGIN", OP_BEGIN);
  if (rc != 0)
    return rc;
  if ((op->tx = calloc(1, sizeof *op->tx)) == NULL) {
    free(op);
    return perfc__fail(PERFC_ENOMEM, "pg async: out of memory");
  }
  op->tx_fn = fn;
  op->ud = user_data;
  int64_t t = query_timeout(pg, NULL);
  op->deadline_ms = t > 0 ? now + t : 0;
  if (c->state == C_DOWN) {
    conn_start(c);
    if (c->state == C_DOWN) {
      free(op->tx);
      free(op);
      return perfc__fail(PERFC_EUNAVAILABLE,
                         "pg async: cannot open a transaction connection");
    }
  }
  c->reserved = 1;
  enqueue(c, op);
  return 0;
}

int perfc_pg_async_tx_query(perfc_pg_async_tx *tx, const perfc_pg_query *q,
                            perfc_pg_async_fn fn, void *user_data) {
  if (tx == NULL || fn == NULL)
    return perfc__fail(PERFC_EINVAL, "pg async: NULL transaction or callback");
  if (tx->c == NULL)
    return perfc__fail(PERFC_ESHUTDOWN, "pg async: the loop stopped");
  pconn *c = tx->c;
  if (perfc_loop_current() != c->ls->loop)
    return perfc__fail(PERFC_ESTATE,
                       "pg async: a transaction is used on its own loop only");
  if (c->epoch != tx->epoch || c->state != C_UP)
    return perfc__fail(PERFC_EUNAVAILABLE,
                       "pg async: the transaction's connection was lost");
  int rc = check_query(q);
  if (rc != 0)
    return rc;
  if (c->npending >= c->ls->pg->o.max_pending)
    return perfc__fail(PERFC_EFULL, "pg async: max_pending on the "
                                    "transaction's connection");
  pop *op;
  if ((rc = op_new(&op, q, OP_QUERY)) != 0)
    return rc;
  op->fn = fn;
  op->ud = user_data;
  int64_t t = query_timeout(c->ls->pg, q);
  op->deadline_ms = t > 0 ? perfc_loop_now_ms() + t : 0;
  enqueue(c, op);
  return 0;
}

static int tx_end(perfc_pg_async_tx *tx, int kind, perfc_pg_async_fn fn,
                  void *ud) {
  if (tx == NULL)
    return perfc__fail(PERFC_EINVAL, "pg async: NULL transaction");
  /* From another thread the connection's state cannot be touched: refused,
   * and the handle stays the caller's. */
  if (tx->c != NULL && perfc_loop_current() != tx->c->ls->loop)
    return perfc__fail(PERFC_ESTATE,
                       "pg async: a transaction ends on its own loop only");
  pconn *c = tx->c;
  unsigned epoch = tx->epoch;
  free(tx);
  if (c == NULL)
    return perfc__fail(PERFC_ESHUTDOWN, "pg async: the loop stopped");
  c->tx = NULL;
  if (c->epoch != epoch || c->state != C_UP) {
    unreserve(c);
    return perfc__fail(PERFC_EUNAVAILABLE,
                       "pg async: the transaction's connection was lost");
  }
  pop *op;
  int rc = op_fixed(&op, kind == OP_COMMIT ? "COMMIT" : "ROLLBACK", kind);
  if (rc != 0) {
    /* The connection is left inside the transaction: reset it. */
    conn_close(c, PERFC_EUNAVAILABLE);
    unreserve(c);
    return rc;
  }
  op->fn = fn;
  op->ud = ud;
  int64_t t = query_timeout(c->ls->pg, NULL);
  op->deadline_ms = t > 0 ? perfc_loop_now_ms() + t : 0;
  enqueue(c, op);
  return 0;
}

int perfc_pg_async_commit(perfc_pg_async_tx *tx, perfc_pg_async_fn fn,
                          void *user_data) {
  return tx_end(tx, OP_COMMIT, fn, user_data);
}

int perfc_pg_async_rollback(perfc_pg_async_tx *tx, perfc_pg_async_fn fn,
                            void *user_data) {
  return tx_end(tx, OP_ROLLBACK, fn, user_data);
}

void perfc_pg_async_stats_get(perfc_pg_async *pg, perfc_pg_async_stats *out) {
  pthread_mutex_lock(&pg->mu);
  *out = pg->retired;
  out->conns_up = 0;
  for (lstate *ls = pg->states; ls != NULL; ls = ls->next) {
#define SUM(f) out->f += atomic_load_explicit(&ls->f, memory_order_relaxed)
    SUM(queries);
    SUM(syncs);
    SUM(results);
    SUM(resent);
    SUM(timeouts);
    SUM(failed);
    SUM(prepares);
    SUM(connects);
#undef SUM
    out->conns_up += atomic_load_explicit(&ls->up, memory_order_relaxed);
  }
  pthread_mutex_unlock(&pg->mu);
}

/* Posted to a loop by perfc_pg_async_free(): ends the client's state
 * there unless the loop ended it already (looked up by key and compared,
 * so a late run touches nothing of a freed client). */
typedef struct end_req {
  perfc_loop_task *task;
  perfc_pg_async *pg;
  lstate *ls;
} end_req;

static void end_task(void *ud) {
  end_req *e = ud;
  perfc_loop *loop = perfc_loop_current();
  lstate *ls = loop != NULL ? perfc_loop_local_get(loop, e->pg) : NULL;
  if (ls != NULL && ls == e->ls) {
    perfc_loop_local_del(loop, e->pg);
    state_end(ls);
  }
  perfc_loop_task_free(e->task);
  free(e);
}

void perfc_pg_async_free(perfc_pg_async *pg) {
  if (pg == NULL)
    return;
  pthread_mutex_lock(&pg->mu);
  pg->closing = 1;
  int own = pg->own_started;
  pthread_mutex_unlock(&pg->mu);
  if (own) {
    perfc_loop_stop(pg->own);
    pthread_join(pg->own_thread, NULL);
  }
  pthread_mutex_lock(&pg->mu);
  pop *q = pg->q;
  pg->q = pg->q_tail = NULL;
  pthread_mutex_unlock(&pg->mu);
  while (q != NULL) {
    pop *next = q->next;
    perfc_error_set(PERFC_ESHUTDOWN, NULL, -1, "pg async: client freed");
    q->fn(PERFC_ESHUTDOWN, NULL, q->ud);
    free(q);
    q = next;
  }
  perfc_loop *here = perfc_loop_current();
  pthread_mutex_lock(&pg->mu);
  for (lstate *ls = pg->states, *next; ls != NULL; ls = next) {
    next = ls->next;
    if (ls->loop == here) {
      pthread_mutex_unlock(&pg->mu);
      perfc_loop_local_del(here, pg);
      state_end(ls);
      pthread_mutex_lock(&pg->mu);
      next = pg->states;
      continue;
    }
    end_req *e = calloc(1, sizeof *e);
    if (e != NULL && perfc_loop_task_new(&e->task, ls->loop, end_task, e) == 0) {
      e->pg = pg;
      e->ls = ls;
      perfc_loop_task_post(e->task);
    } else {
      free(e);
    }
  }
  while (pg->nstates > 0)
    pthread_cond_wait(&pg->cv, &pg->mu);
  pthread_mutex_unlock(&pg->mu);
  if (own) {
    perfc_loop_task_free(pg->submit);
    perfc_loop_free(pg->own);
  }
  pthread_cond_destroy(&pg->cv);
  pthread_mutex_destroy(&pg->mu);
  perfc__resolve_unref();
  hosts_free(&pg->hosts);
  hosts_free(&pg->replica_hosts);
  free(pg->replica_dsn);
  free(pg->name);
  free(pg->dsn);
  free(pg);
}
