/*
 * pg.c — the PostgreSQL pool over libpq.
 *
 * Room: runtime/src/data. libpq does the protocol (connecting, the extended query
 * protocol, pipeline mode, COPY); this file adds the pool (bounded, one
 * mutex per pool, a condition variable per target), the per-connection
 * prepared-statement cache, statement timeouts, liveness checks, COPY text
 * escaping, the SQLSTATE → PERFC_E* mapping (details through
 * perfc_error_set(), perfc/common.h) and the metrics.
 *
 * A pool has two targets, the primary and an optional replica; each keeps a
 * LIFO stack of idle connections (the most recently used one is the most
 * likely to be alive and warm) and a count of connections that exist,
 * including ones being opened. Connections are opened and pinged outside the
 * lock, so a slow server never blocks other callers' releases.
 */
#include "perfc/pg.h"
#include "perfc/log.h"
#include "perfc/tracing.h"
#include "data/pg_internal.h"

#include <endian.h>
#include <errno.h>
#include <libpq-fe.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { T_PRIMARY = 0, T_REPLICA = 1, T_COUNT = 2 };
static const char *const target_names[T_COUNT] = {"primary", "replica"};
/* What each target asks libpq for when its DSN does not say: the primary
 * pool must reach the host that takes writes, reads prefer a standby. */
static const char *const target_attrs[T_COUNT] = {"read-write",
                                                  "prefer-standby"};

/* Why a read meant for the replica ran on the primary: the `reason` label
 * of perfc_pg_replica_fallbacks_total. */
enum { R_UNREACHABLE, R_LAGGING, R_RYW, R_COUNT };
static const char *const reason_names[R_COUNT] = {"unreachable", "lagging",
                                                  "read_your_writes"};

/* Error kinds, the `kind` label of perfc_pg_errors_total. */
enum {
  K_ALREADY_EXISTS,
  K_NOT_FOUND,
  K_DEADLINE,
  K_UNAVAILABLE,
  K_INVALID,
  K_ABORTED,
  K_INTERNAL,
  K_ACQUIRE_TIMEOUT,
  K_COUNT
};
static const char *const kind_names[K_COUNT] = {
    "already_exists",   "not_found", "deadline_exceeded", "unavailable",
    "invalid_argument", "aborted",   "internal",          "acquire_timeout"};

/* statement_timeout value a connection has not had set yet, or lost to a
 * rollback (a session SET inside a rolled-back transaction is undone). */
#define TIMEOUT_UNKNOWN INT_MIN
/* COPY rows are buffered and handed to libpq in chunks this big: large
 * enough to amortize the call, small enough to stay in cache. */
#define COPY_CHUNK (64 * 1024)
/* Parameters up to this count are marshalled on the stack. */
#define STACK_PARAMS 16

/* Names of statements prepared on one connection: an open-addressing hash
 * set of strings, never shrunk (names are constants in the program, so the
 * set stays small). */
typedef struct stmt_set {
  char **slots;
  size_t cap, count;
} stmt_set;

/* A copy of the calling thread's error detail (perfc/common.h), for the
 * places that must keep a failure's detail across a later call that may
 * fail too (a ROLLBACK after the real failure, a COPY replaying the row
 * that spoiled it) or add the failing index of a batch to it. */
typedef struct saved_error {
  int code;
  long index;
  char sqlstate[6];
  char message[PERFC_ERROR_MESSAGE_MAX];
} saved_error;

struct perfc_pg_conn {
  PGconn *pg;
  perfc_pg_pool *pool;
  int target;
  struct perfc_pg_conn *next; /* idle stack link */
  stmt_set stmts;
  int cur_timeout_ms;    /* statement_timeout set on the session, or UNKNOWN */
  int timeout_set_in_tx; /* cur_timeout_ms was set inside a transaction */
  unsigned gen;          /* target generation when last known alive */
  int64_t idle_since_ms;
  int broken; /* connection lost: close instead of reuse */
  /* Lent for something other than a read: its release records the
   * primary's WAL position for read-your-writes. */
  int for_write;
  /* Replica connections: the server's replay position last seen (WAL
   * bytes; UINT64_MAX when the server is not a standby, so it has
   * everything it will ever have). Replay only moves forward on one
   * server, so a position once passed stays passed. */
  uint64_t replay_lsn;
  /* COPY FROM STDIN state. */
  int in_copy;
  char *copy_buf;
  size_t copy_len;
  /* A failed row spoils the COPY: its code and detail are returned again
   * by every later row and by perfc_pg_copy_end(). */
  int copy_fail;
  saved_error copy_err;
};

typedef struct target {
  char *dsn;
  /* target_attrs[t], or NULL when the DSN sets target_session_attrs. */
  const char *session_attrs;
  perfc_pg_conn *idle;
  unsigned idle_count, total, max;
  /* Bumped whenever a connection of this target is found dead: idle
   * connections from an older generation are pinged before being lent out,
   * since a server restart kills all of them at once. */
  unsigned gen;
  pthread_cond_t cv;
  perfc_gauge *g_in_use, *g_idle;
  perfc_counter *c_queries;
} target;

struct perfc_pg_pool {
  pthread_mutex_t mu;
  target t[T_COUNT];
  int has_replica;
  /* The read route. replica_down is set when a connect to the replica
   * fails or a replica connection is lost, and cleared when one works
   * again; while set, reads go to the primary except one probe per
   * replica_retry_ms (replica_retry_at_ms, under mu). */
  atomic_int replica_down;
  bool no_fallback;
  int64_t replica_retry_ms;
  int64_t replica_retry_at_ms;
  perfc_pg_replica_fn replica_fn;
  void *replica_ud;
  perfc_counter *c_fallback, *c_fallbacks[R_COUNT];
  perfc_gauge *g_replica_up;
  /* The lag check: at most one per lag_check_ms (lag_check_at_ms, claimed
   * by compare-and-swap); replica_lagging is its last verdict. */
  bool lag_check;
  int64_t max_lag_ms, lag_check_ms;
  _Atomic int64_t lag_check_at_ms;
  atomic_int replica_lagging;
  perfc_gauge *g_lag;
  /* Read-your-writes on; id names the pool (never reused, unlike an
   * address). */
  bool ryw;
  _Atomic uint64_t ryw_lsn; /* see ryw_get() */
  /* &ryw_lsn; an asynchronous client made with this pool shares it
   * (perfc__pg_pool_ryw_slot()). */
  _Atomic uint64_t *ryw_slot;
  uint64_t id;
  char *name;
  int64_t acquire_timeout_ms, idle_check_ms;
  unsigned connect_timeout_s; /* libpq's unit */
  int stmt_timeout_ms; /* 0 = none */
  perfc_histogram *h_wait;
  perfc_counter *c_err[K_COUNT];
};

/* ---- small helpers ---- */

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void error_save(saved_error *e) {
  perfc_error_detail d = perfc_last_error_detail();
  e->code = d.code;
  e->index = d.index;
  snprintf(e->sqlstate, sizeof e->sqlstate, "%s", d.sqlstate);
  snprintf(e->message, sizeof e->message, "%s", d.message);
}

/* Records `e` again as the thread's detail, with batch index `index` (-1:
 * keep the saved one). Returns the saved code. */
static int error_restore(const saved_error *e, long index) {
  return perfc_error_set(e->code, e->sqlstate, index >= 0 ? index : e->index,
                         "%s", e->message);
}

/* The failure just recorded, with the batch index `i` added. */
static int error_at(int code, long i) {
  saved_error e;
  error_save(&e);
  e.code = code;
  return error_restore(&e, i);
}

static int kind_of(int code) {
  switch (code) {
  case PERFC_EEXIST:
    return K_ALREADY_EXISTS;
  case PERFC_ENOENT:
    return K_NOT_FOUND;
  case PERFC_ETIMEDOUT:
    return K_DEADLINE;
  case PERFC_EUNAVAILABLE:
    return K_UNAVAILABLE;
  case PERFC_EINVAL:
    return K_INVALID;
  case PERFC_EABORTED:
    return K_ABORTED;
  case PERFC_EFULL:
    return K_ACQUIRE_TIMEOUT;
  default:
    return K_INTERNAL;
  }
}

/* Records a failure as the calling thread's error detail (message trimmed
 * of libpq's trailing newline, the SQLSTATE when the server sent one) and
 * counts it. Returns `code` so callers can `return fail(...)`. */
static int fail(perfc_pg_pool *pool, int code, const char *sqlstate,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(perfc_pg_pool *pool, int code, const char *sqlstate,
                const char *fmt, ...) {
  if (pool)
    perfc_counter_inc(pool->c_err[kind_of(code)]);
  char msg[PERFC_ERROR_MESSAGE_MAX];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  size_t n = strlen(msg);
  while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
    msg[--n] = '\0';
  return perfc_error_set(code, sqlstate, -1, "%s", msg);
}

/* libpq messages end in a newline and may span lines; the logger wants one
 * line. Copies `msg` into `buf` with each run of whitespace made one space. */
static const char *one_line(char *buf, size_t n, const char *msg) {
  size_t k = 0;
  int space = 0;
  for (; *msg && k + 1 < n; msg++) {
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

/* Server notices (NOTICE, WARNING sent to the client) would go to stderr
 * through libpq's default processor; the library never prints, so they go
 * to the logger at debug level. */
static void notice_to_log(void *arg, const char *message) {
  (void)arg;
  char line[512];
  perfc_log(PERFC_LOG_DEBUG, "pg: server notice: %s",
            one_line(line, sizeof line, message));
}

int perfc_pg_error_from_sqlstate(const char *s) {
  if (!s || strlen(s) != 5)
    return PERFC_EINTERNAL;
  if (strcmp(s, "23505") == 0)
    return PERFC_EEXIST;
  if (strcmp(s, "57014") == 0)
    return PERFC_ETIMEDOUT;
  if (strncmp(s, "22", 2) == 0)
    return PERFC_EINVAL;
  /* Serialization failures and deadlocks are worth retrying: ABORTED is
   * the code gRPC reserves for that. */
  if (strcmp(s, "40001") == 0 || strcmp(s, "40P01") == 0)
    return PERFC_EABORTED;
  if (strncmp(s, "08", 2) == 0 || strcmp(s, "57P01") == 0 ||
      strcmp(s, "57P02") == 0 || strcmp(s, "57P03") == 0)
    return PERFC_EUNAVAILABLE;
  return PERFC_EINTERNAL;
}

/* Maps a failed PGresult (or none) on `c` to a status. A connection libpq
 * reports as bad is UNAVAILABLE whatever the SQLSTATE (a shutting-down
 * server sends 57P01 before closing, a vanished one sends nothing), and is
 * marked broken so release closes it. */
static int fail_result(perfc_pg_conn *c, const PGresult *r) {
  const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
  const char *msg = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
  if (!msg)
    msg = PQerrorMessage(c->pg);
  int code = perfc_pg_error_from_sqlstate(state);
  if (PQstatus(c->pg) == CONNECTION_BAD) {
    code = PERFC_EUNAVAILABLE;
    if (!c->broken) {
      char line[512];
      perfc_log(PERFC_LOG_WARN, "pg: lost connection to %s: %s",
                target_names[c->target], one_line(line, sizeof line, msg));
    }
    c->broken = 1;
  }
  return fail(c->pool, code, state, "%s", msg);
}

/* ---- the prepared-statement set ---- */

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h;
}

static int stmt_has(const stmt_set *s, const char *name) {
  if (!s->cap)
    return 0;
  for (size_t i = hash_str(name) & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
    if (!s->slots[i])
      return 0;
    if (strcmp(s->slots[i], name) == 0)
      return 1;
  }
}

static int stmt_insert_slot(char **slots, size_t cap, char *name) {
  for (size_t i = hash_str(name) & (cap - 1);; i = (i + 1) & (cap - 1))
    if (!slots[i]) {
      slots[i] = name;
      return 0;
    }
}

static int stmt_add(stmt_set *s, const char *name) {
  if ((s->count + 1) * 2 > s->cap) { /* keep the load factor under 1/2 */
    size_t ncap = s->cap ? s->cap * 2 : 16;
    char **ns = calloc(ncap, sizeof *ns);
    if (!ns)
      return PERFC_ENOMEM;
    for (size_t i = 0; i < s->cap; i++)
      if (s->slots[i])
        stmt_insert_slot(ns, ncap, s->slots[i]);
    free(s->slots);
    s->slots = ns;
    s->cap = ncap;
  }
  char *dup = strdup(name);
  if (!dup)
    return PERFC_ENOMEM;
  stmt_insert_slot(s->slots, s->cap, dup);
  s->count++;
  return 0;
}

static void stmt_clear(stmt_set *s) {
  for (size_t i = 0; i < s->cap; i++)
    free(s->slots[i]);
  free(s->slots);
  s->slots = NULL;
  s->cap = s->count = 0;
}

/* ---- parameters ---- */

typedef struct params {
  const char **values;
  int *lengths, *formats;
  Oid *types;
  uint64_t *scratch; /* big-endian int8 / bool bytes */
  const char *sv[STACK_PARAMS];
  int sl[STACK_PARAMS], sf[STACK_PARAMS];
  Oid st[STACK_PARAMS];
  uint64_t ss[STACK_PARAMS];
  void *heap;
} params;

static int params_build(params *p, const perfc_pg_param *in, size_t n) {
  p->heap = NULL;
  if (n > 65535)
    return PERFC_EINVAL; /* the protocol's limit */
  if (n <= STACK_PARAMS) {
    p->values = p->sv, p->lengths = p->sl, p->formats = p->sf;
    p->types = p->st, p->scratch = p->ss;
  } else {
    size_t per =
        sizeof(char *) + 2 * sizeof(int) + sizeof(Oid) + sizeof(uint64_t);
    char *h = malloc(per * n);
    if (!h)
      return PERFC_ENOMEM;
    p->heap = h;
    p->scratch = (uint64_t *)h;
    p->values = (const char **)(h + n * sizeof(uint64_t));
    p->lengths = (int *)(h + n * (sizeof(uint64_t) + sizeof(char *)));
    p->formats = p->lengths + n;
    p->types = (Oid *)(p->formats + n);
  }
  for (size_t i = 0; i < n; i++) {
    const perfc_pg_param *q = &in[i];
    p->types[i] = q->type_oid;
    p->lengths[i] = 0;
    p->formats[i] = 0;
    switch (q->kind) {
    case PERFC_PG_PARAM_NULL:
      p->values[i] = NULL;
      break;
    case PERFC_PG_PARAM_TEXT:
      p->values[i] = q->data;
      break;
    case PERFC_PG_PARAM_BINARY:
      if (q->len > INT_MAX || (!q->data && q->len)) {
        free(p->heap);
        return PERFC_EINVAL;
      }
      /* libpq treats a NULL value as SQL NULL even in binary format. */
      p->values[i] = q->data ? q->data : "";
      p->lengths[i] = (int)q->len;
      p->formats[i] = 1;
      break;
    case PERFC_PG_PARAM_INT64:
      p->scratch[i] = htobe64((uint64_t)q->i64);
      p->values[i] = (const char *)&p->scratch[i];
      p->lengths[i] = 8;
      p->formats[i] = 1;
      break;
    case PERFC_PG_PARAM_BOOL:
      p->scratch[i] = q->i64 ? 1 : 0; /* byte 0 holds the value */
      p->values[i] = (const char *)&p->scratch[i];
      p->lengths[i] = 1;
      p->formats[i] = 1;
      break;
    default:
      free(p->heap);
      return PERFC_EINVAL;
    }
  }
  return 0;
}

/* ---- running statements ---- */

/* The statement_timeout a query wants, in the session's unit (ms, 0 =
 * none). check_query() has refused negative and too large values. */
static int want_timeout(const perfc_pg_conn *c, const perfc_pg_query *q) {
  if (q->no_timeout)
    return 0;
  if (q->timeout_ms > 0)
    return (int)q->timeout_ms;
  return c->pool->stmt_timeout_ms;
}

/* Makes the session's statement_timeout `ms` (0 = none). Only talks to the
 * server when the value changes, so the pool default costs nothing per call
 * and an override costs one round trip (plus one to restore later). The
 * value goes as a parameter of set_config, never spliced into SQL. */
static int set_timeout(perfc_pg_conn *c, int ms) {
  if (c->cur_timeout_ms == ms)
    return 0;
  char v[16];
  snprintf(v, sizeof v, "%d", ms);
  const char *vals[1] = {v};
  PGresult *r = PQexecParams(
      c->pg, "SELECT pg_catalog.set_config('statement_timeout', $1, false)", 1,
      NULL, vals, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    int st = fail_result(c, r);
    PQclear(r);
    c->cur_timeout_ms = TIMEOUT_UNKNOWN;
    return st;
  }
  PQclear(r);
  c->cur_timeout_ms = ms;
  /* Set inside a transaction block, the value lasts only if it commits:
   * remember to forget it once the transaction ends (see timeout_after). */
  c->timeout_set_in_tx = PQtransactionStatus(c->pg) != PQTRANS_IDLE;
  return 0;
}

/* After a statement: if the transaction that set the timeout has ended
 * (committed or rolled back, by the caller's own COMMIT/ROLLBACK too), the
 * session value is no longer known. */
static void timeout_after(perfc_pg_conn *c) {
  if (c->timeout_set_in_tx && PQtransactionStatus(c->pg) == PQTRANS_IDLE) {
    c->cur_timeout_ms = TIMEOUT_UNKNOWN;
    c->timeout_set_in_tx = 0;
  }
}

/* Prepares q->name on `c` unless it already is. */
static int ensure_prepared(perfc_pg_conn *c, const perfc_pg_query *q,
                           const params *p) {
  if (stmt_has(&c->stmts, q->name))
    return 0;
  PGresult *r = PQprepare(c->pg, q->name, q->sql, (int)q->nparams, p->types);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) {
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    /* 42P05: the server has it already (prepared outside this cache, e.g.
     * by an earlier failed call whose reply we lost); use it. */
    if (!(state && strcmp(state, "42P05") == 0)) {
      int st = fail_result(c, r);
      PQclear(r);
      return st;
    }
  }
  PQclear(r);
  if (stmt_add(&c->stmts, q->name) != 0)
    return fail(c->pool, PERFC_ENOMEM, NULL, "pg: out of memory");
  return 0;
}

static int check_query(perfc_pg_pool *pool, const perfc_pg_query *q) {
  if (!q || !q->sql || (q->nparams && !q->params))
    return fail(pool, PERFC_EINVAL, NULL,
                "pg: query without SQL or with NULL params");
  if (q->name && q->name[0] == '\0')
    return fail(pool, PERFC_EINVAL, NULL,
                "pg: empty statement name (use NULL for unnamed)");
  /* PostgreSQL keeps statement_timeout in a 32-bit int of ms. */
  if (q->timeout_ms < 0 || q->timeout_ms > INT_MAX)
    return fail(pool, PERFC_EINVAL, NULL,
                "pg: timeout_ms %lld out of range (0 = the pool's; "
                "no_timeout for none)",
                (long long)q->timeout_ms);
  return 0;
}

/* The SQL keyword a statement starts with (SELECT, INSERT, WITH, ...),
 * upper-cased into `out`: db.operation, which says what kind of statement
 * ran without any of its text past the first word. */
static void sql_keyword(const char *sql, char *out, size_t cap) {
  size_t n = 0;
  while (sql != NULL && *sql) {
    if (*sql == ' ' || *sql == '\t' || *sql == '\n' || *sql == '\r' ||
        *sql == '(') {
      sql++;
    } else if (sql[0] == '-' && sql[1] == '-') {
      while (*sql && *sql != '\n')
        sql++;
    } else {
      break;
    }
  }
  while (sql != NULL && n + 1 < cap &&
         ((*sql >= 'a' && *sql <= 'z') || (*sql >= 'A' && *sql <= 'Z'))) {
    out[n++] = *sql >= 'a' ? (char)(*sql - 32) : *sql;
    sql++;
  }
  out[n] = '\0';
}

/* A CLIENT span for one statement (or a batch of `n`) inside a traced
 * call, by OpenTelemetry's database conventions: db.system, db.operation
 * and, as db.statement, only the prepared statement's name: parameters are
 * never recorded and neither is the SQL text. NULL outside a traced call. */
static perfc_span *stmt_span(const perfc_pg_query *q, size_t n) {
  char op[24];
  sql_keyword(q->sql, op, sizeof op);
  const char *name = n > 1 ? "BATCH" : q->name ? q->name : op[0] ? op : "SQL";
  perfc_span *sp = perfc_tracing_span_start_current(name, PERFC_SPAN_CLIENT);
  if (sp == NULL)
    return NULL;
  perfc_span_set_attr_str(sp, "db.system", "postgresql");
  if (op[0])
    perfc_span_set_attr_str(sp, "db.operation", n > 1 ? "BATCH" : op);
  if (q->name && n == 1)
    perfc_span_set_attr_str(sp, "db.statement", q->name);
  if (n > 1)
    perfc_span_set_attr_int(sp, "db.operation.batch.size", (int64_t)n);
  return sp;
}

static void stmt_span_end(perfc_span *sp, int rc) {
  if (sp == NULL)
    return;
  /* "No rows" for a PERFC_PG_ONE lookup is an answer, not a failure. */
  if (rc != 0 && rc != PERFC_ENOENT)
    perfc_span_set_status(sp, PERFC_SPAN_STATUS_ERROR, perfc_err_name(rc));
  perfc_span_end(sp);
}

static int conn_exec(perfc_pg_conn *c, const perfc_pg_query *q,
                     perfc_pg_result **res);

int perfc_pg_conn_exec(perfc_pg_conn *c, const perfc_pg_query *q,
                       perfc_pg_result **res) {
  perfc_span *sp = c != NULL && q != NULL ? stmt_span(q, 1) : NULL;
  int rc = conn_exec(c, q, res);
  stmt_span_end(sp, rc);
  return rc;
}

static int conn_exec(perfc_pg_conn *c, const perfc_pg_query *q,
                     perfc_pg_result **res) {
  if (res)
    *res = NULL;
  if (!c)
    return fail(NULL, PERFC_EINVAL, NULL, "pg: NULL connection");
  int st = check_query(c->pool, q);
  if (st != 0)
    return st;
  if (c->in_copy)
    return fail(c->pool, PERFC_EPRECONDITION, NULL,
                "pg: connection is in COPY; call perfc_pg_copy_end() first");
  st = set_timeout(c, want_timeout(c, q));
  if (st != 0)
    return st;
  params p;
  if (params_build(&p, q->params, q->nparams) != 0)
    return fail(c->pool, PERFC_EINVAL, NULL,
                "pg: bad parameter (kind, length or count)");
  PGresult *r;
  if (q->name) {
    st = ensure_prepared(c, q, &p);
    if (st != 0) {
      free(p.heap);
      return st;
    }
    r = PQexecPrepared(c->pg, q->name, (int)q->nparams, p.values, p.lengths,
                       p.formats, 0);
  } else {
    r = PQexecParams(c->pg, q->sql, (int)q->nparams, p.types, p.values,
                     p.lengths, p.formats, 0);
  }
  free(p.heap);
  perfc_counter_inc(c->pool->t[c->target].c_queries);
  timeout_after(c);
  ExecStatusType es = PQresultStatus(r);
  if (es != PGRES_TUPLES_OK && es != PGRES_COMMAND_OK) {
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    /* 26000: the server no longer has a statement the cache lists (the
     * session ran DISCARD ALL or DEALLOCATE). Forget the cache so the next
     * call prepares again instead of failing forever. */
    if (q->name && state && strcmp(state, "26000") == 0)
      stmt_clear(&c->stmts);
    st = fail_result(c, r);
    PQclear(r);
    return st;
  }
  if ((q->flags & PERFC_PG_ONE) && PQntuples(r) == 0) {
    PQclear(r);
    return fail(c->pool, PERFC_ENOENT, NULL, "pg: no rows");
  }
  if (res)
    *res = (perfc_pg_result *)r; /* the handle is the PGresult itself */
  else
    PQclear(r);
  return 0;
}

/* A fixed command (BEGIN, COMMIT, ROLLBACK) on the simple path. */
static int run_fixed(perfc_pg_conn *c, const char *sql, PGresult **keep) {
  PGresult *r = PQexec(c->pg, sql);
  if (PQresultStatus(r) != PGRES_COMMAND_OK) {
    int st = fail_result(c, r);
    PQclear(r);
    return st;
  }
  if (keep)
    *keep = r;
  else
    PQclear(r);
  return 0;
}

/* Liveness: an empty query is the cheapest full round trip. */
static int conn_alive(perfc_pg_conn *c) {
  if (PQstatus(c->pg) != CONNECTION_OK)
    return 0;
  PGresult *r = PQexec(c->pg, "");
  int ok = PQresultStatus(r) == PGRES_EMPTY_QUERY;
  PQclear(r);
  return ok && PQstatus(c->pg) == CONNECTION_OK;
}

/* ---- the pool ---- */

void perfc_pg_pool_opts_init(perfc_pg_pool_opts *o) {
  memset(o, 0, sizeof *o);
  o->max_conns = PERFC_DEFAULT_PG_MAX_CONNS;
  o->acquire_timeout_ms = PERFC_DEFAULT_PG_ACQUIRE_TIMEOUT_MS;
  o->connect_timeout_ms = PERFC_DEFAULT_PG_CONNECT_TIMEOUT_MS;
  o->statement_timeout_ms = PERFC_DEFAULT_PG_STATEMENT_TIMEOUT_MS;
  o->idle_check_ms = PERFC_DEFAULT_PG_IDLE_CHECK_MS;
  o->name = PERFC_DEFAULT_PG_POOL_NAME;
  o->replica_retry_ms = PERFC_DEFAULT_PG_REPLICA_RETRY_MS;
  o->max_replica_lag_ms = PERFC_DEFAULT_PG_MAX_REPLICA_LAG_MS;
  o->replica_lag_check_ms = PERFC_DEFAULT_PG_REPLICA_LAG_CHECK_MS;
}

static int register_metrics(perfc_pg_pool *pool, perfc_metrics_registry *reg,
                            const char *name) {
  static const char *const pool_target[] = {"pool", "target"};
  static const char *const pool_kind[] = {"pool", "kind"};
  static const char *const pool_only[] = {"pool"};
  static const double wait_buckets[] = {0.0001, 0.0005, 0.001, 0.005, 0.01,
                                        0.05,   0.1,    0.5,   1,     5};
  perfc_metrics_family_opts o;
  perfc_metrics_family *in_use, *idle, *queries, *errors, *wait;
  int rc;

  perfc_metrics_family_opts_init(&o);
  o.label_names = pool_target;
  o.label_count = 2;
  o.name = "perfc_pg_connections_in_use";
  o.help = "PostgreSQL connections lent out or being opened.";
  if ((rc = perfc_metrics_family_new(&in_use, reg, PERFC_METRICS_GAUGE, &o)) !=
      0)
    return rc;
  o.name = "perfc_pg_connections_idle";
  o.help = "PostgreSQL connections idle in the pool.";
  if ((rc = perfc_metrics_family_new(&idle, reg, PERFC_METRICS_GAUGE, &o)) != 0)
    return rc;
  o.name = "perfc_pg_queries_total";
  o.help = "Statements sent to PostgreSQL (batched ones count once each).";
  if ((rc = perfc_metrics_family_new(&queries, reg, PERFC_METRICS_COUNTER,
                                     &o)) != 0)
    return rc;
  o.label_names = pool_kind;
  o.name = "perfc_pg_errors_total";
  o.help = "PostgreSQL pool failures by kind.";
  if ((rc = perfc_metrics_family_new(&errors, reg, PERFC_METRICS_COUNTER,
                                     &o)) != 0)
    return rc;
  o.label_names = pool_only;
  o.label_count = 1;
  o.name = "perfc_pg_acquire_wait_seconds";
  o.help = "Time to obtain a PostgreSQL connection from the pool, including "
           "opening one.";
  o.buckets = wait_buckets;
  o.bucket_count = sizeof wait_buckets / sizeof wait_buckets[0];
  if ((rc = perfc_metrics_family_new(&wait, reg, PERFC_METRICS_HISTOGRAM,
                                     &o)) != 0)
    return rc;

  for (int t = 0; t < T_COUNT; t++) {
    const char *lv[] = {name, target_names[t]};
    if ((rc = perfc_gauge_get(&pool->t[t].g_in_use, in_use, lv)) != 0 ||
        (rc = perfc_gauge_get(&pool->t[t].g_idle, idle, lv)) != 0 ||
        (rc = perfc_counter_get(&pool->t[t].c_queries, queries, lv)) != 0)
      return rc;
  }
  for (int k = 0; k < K_COUNT; k++) {
    const char *lv[] = {name, kind_names[k]};
    if ((rc = perfc_counter_get(&pool->c_err[k], errors, lv)) != 0)
      return rc;
  }
  const char *lv[] = {name};
  if ((rc = perfc_histogram_get(&pool->h_wait, wait, lv)) != 0)
    return rc;
  if (!pool->has_replica)
    return 0;
  perfc_metrics_family *fallback, *up;
  o.buckets = NULL;
  o.bucket_count = 0;
  o.name = "perfc_pg_replica_fallback_total";
  o.help = PERFC__PG_HELP_FALLBACK;
  if ((rc = perfc_metrics_family_new(&fallback, reg, PERFC_METRICS_COUNTER,
                                     &o)) != 0 ||
      (rc = perfc_counter_get(&pool->c_fallback, fallback, lv)) != 0)
    return rc;
  o.name = "perfc_pg_replica_up";
  o.help = "1 while reads go to the replica, 0 while they fall back to the "
           "primary.";
  if ((rc = perfc_metrics_family_new(&up, reg, PERFC_METRICS_GAUGE, &o)) != 0 ||
      (rc = perfc_gauge_get(&pool->g_replica_up, up, lv)) != 0)
    return rc;
  perfc_gauge_set(pool->g_replica_up, 1);
  static const char *const pool_reason[] = {"pool", "reason"};
  perfc_metrics_family *fallbacks, *lag;
  o.label_names = pool_reason;
  o.label_count = 2;
  o.name = "perfc_pg_replica_fallbacks_total";
  o.help = PERFC__PG_HELP_FALLBACKS;
  if ((rc = perfc_metrics_family_new(&fallbacks, reg, PERFC_METRICS_COUNTER,
                                     &o)) != 0)
    return rc;
  for (int r = 0; r < R_COUNT; r++) {
    const char *lr[] = {name, reason_names[r]};
    if ((rc = perfc_counter_get(&pool->c_fallbacks[r], fallbacks, lr)) != 0)
      return rc;
  }
  o.label_names = pool_only;
  o.label_count = 1;
  o.name = "perfc_pg_replica_lag_seconds";
  o.help = "The replica's lag at the pool's last check (0 while it has "
           "replayed all it received).";
  if ((rc = perfc_metrics_family_new(&lag, reg, PERFC_METRICS_GAUGE, &o)) !=
          0 ||
      (rc = perfc_gauge_get(&pool->g_lag, lag, lv)) != 0)
    return rc;
  return 0;
}

int perfc__pg_dsn_sets(const char *dsn, const char *kw) {
  char *err = NULL;
  PQconninfoOption *opts = PQconninfoParse(dsn, &err);
  if (opts == NULL) {
    char line[256];
    int rc = perfc_error_set(
        PERFC_EINVAL, NULL, -1, "pg: bad DSN: %s",
        one_line(line, sizeof line, err ? err : "out of memory"));
    PQfreemem(err);
    return rc;
  }
  int sets = 0;
  for (PQconninfoOption *o = opts; o->keyword != NULL; o++)
    if (strcmp(o->keyword, kw) == 0 && o->val != NULL && o->val[0])
      sets = 1;
  PQconninfoFree(opts);
  return sets;
}

/* The options as the pool uses them: the caller's struct copied whole (a
 * field added later cannot be dropped by a hand-kept copy list), then each
 * zero replaced by its default and every value checked. */
static int resolve_opts(perfc_pg_pool_opts *o, const perfc_pg_pool_opts *in) {
  perfc_pg_pool_opts d;
  perfc_pg_pool_opts_init(&d);
  *o = *in;
  if (!o->dsn || !o->dsn[0])
    return fail(NULL, PERFC_EINVAL, NULL, "pg: opts.dsn is required");
  if (o->replica_retry_ms < 0 || o->acquire_timeout_ms < 0 ||
      o->connect_timeout_ms < 0 || o->statement_timeout_ms < 0 ||
      o->idle_check_ms < 0 || o->max_replica_lag_ms < 0 ||
      o->replica_lag_check_ms < 0)
    return fail(NULL, PERFC_EINVAL, NULL,
                "pg: negative duration in pool options (0 = default; "
                "no_statement_timeout turns the statement timeout off)");
  /* statement_timeout is a 32-bit int of ms in PostgreSQL; libpq's
   * connect_timeout an int of seconds. */
  if (o->statement_timeout_ms > INT_MAX ||
      o->connect_timeout_ms > (int64_t)INT_MAX * 1000)
    return fail(NULL, PERFC_EINVAL, NULL,
                "pg: statement_timeout_ms or connect_timeout_ms too large");
  if (!o->max_conns)
    o->max_conns = d.max_conns;
  if (!o->replica_retry_ms)
    o->replica_retry_ms = d.replica_retry_ms;
  if (!o->max_replica_lag_ms)
    o->max_replica_lag_ms = d.max_replica_lag_ms;
  if (!o->replica_lag_check_ms)
    o->replica_lag_check_ms = d.replica_lag_check_ms;
  if (!o->acquire_timeout_ms)
    o->acquire_timeout_ms = d.acquire_timeout_ms;
  if (!o->connect_timeout_ms)
    o->connect_timeout_ms = d.connect_timeout_ms;
  if (!o->statement_timeout_ms)
    o->statement_timeout_ms = d.statement_timeout_ms;
  if (!o->idle_check_ms)
    o->idle_check_ms = d.idle_check_ms;
  if (!o->name || !o->name[0])
    o->name = d.name;
  return 0;
}

int perfc_pg_pool_new(perfc_pg_pool **out, const perfc_pg_pool_opts *opts) {
  if (!out || !opts)
    return fail(NULL, PERFC_EINVAL, NULL, "pg: NULL out or opts");
  *out = NULL;
  perfc_pg_pool_opts o;
  int rc = resolve_opts(&o, opts);
  if (rc != 0)
    return rc;
  perfc_pg_pool *pool = calloc(1, sizeof *pool);
  if (!pool)
    return fail(NULL, PERFC_ENOMEM, NULL, "pg: out of memory");
  unsigned max = o.max_conns;
  pool->acquire_timeout_ms = o.acquire_timeout_ms;
  /* libpq counts whole seconds: round up, so a bound is never shortened. */
  pool->connect_timeout_s = (unsigned)((o.connect_timeout_ms + 999) / 1000);
  pool->stmt_timeout_ms =
      o.no_statement_timeout ? 0 : (int)o.statement_timeout_ms;
  pool->idle_check_ms = o.idle_check_ms;
  pool->has_replica = o.replica_dsn && o.replica_dsn[0];
  pool->no_fallback = o.no_replica_fallback;
  pool->replica_retry_ms = o.replica_retry_ms;
  pool->replica_fn = o.replica_fn;
  pool->replica_ud = o.replica_ud;
  pool->lag_check = !o.no_replica_lag_check;
  pool->max_lag_ms = o.max_replica_lag_ms;
  pool->lag_check_ms = o.replica_lag_check_ms;
  pool->ryw = !o.no_read_your_writes;
  pool->ryw_slot = &pool->ryw_lsn;
  static atomic_uint_fast64_t next_id = 1;
  pool->id = atomic_fetch_add(&next_id, 1);

  pthread_mutex_init(&pool->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  /* Acquire deadlines are monotonic: a wall-clock jump must not stretch or
   * cut a wait. */
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  for (int t = 0; t < T_COUNT; t++) {
    pthread_cond_init(&pool->t[t].cv, &ca);
    pool->t[t].max = max;
  }
  pthread_condattr_destroy(&ca);

  /* A DSN libpq cannot parse is refused now rather than at every connect;
   * the one that sets target_session_attrs keeps its choice. */
  for (int t = 0; t < T_COUNT; t++) {
    const char *dsn = t == T_PRIMARY ? o.dsn : o.replica_dsn;
    if (t == T_REPLICA && !pool->has_replica)
      break;
    rc = perfc__pg_dsn_sets(dsn, "target_session_attrs");
    if (rc < 0) {
      fail(NULL, rc, NULL, "pg: %s DSN: %s", target_names[t],
           perfc_last_error());
      goto fail;
    }
    pool->t[t].session_attrs = rc ? NULL : target_attrs[t];
  }
  rc = fail(NULL, PERFC_ENOMEM, NULL, "pg: out of memory");
  pool->t[T_PRIMARY].dsn = strdup(o.dsn);
  if (!pool->t[T_PRIMARY].dsn)
    goto fail;
  if (pool->has_replica && !(pool->t[T_REPLICA].dsn = strdup(o.replica_dsn)))
    goto fail;
  if (!(pool->name = strdup(o.name)))
    goto fail;
  rc = register_metrics(pool, o.registry, pool->name);
  if (rc != 0) {
    fail(NULL, rc, NULL, "pg pool %s: cannot register metrics: %s", o.name,
         perfc_strerror(rc));
    goto fail;
  }
  *out = pool;
  return 0;
fail:
  perfc_pg_pool_free(pool);
  return rc;
}

static void conn_close(perfc_pg_conn *c) {
  PQfinish(c->pg);
  stmt_clear(&c->stmts);
  free(c->copy_buf);
  free(c);
}

void perfc_pg_pool_free(perfc_pg_pool *pool) {
  if (!pool)
    return;
  for (int t = 0; t < T_COUNT; t++) {
    target *tg = &pool->t[t];
    if (tg->total != tg->idle_count)
      perfc_log(PERFC_LOG_ERROR,
                "pg: pool freed with %u %s connection(s) still lent out",
                tg->total - tg->idle_count, target_names[t]);
    while (tg->idle) {
      perfc_pg_conn *c = tg->idle;
      tg->idle = c->next;
      conn_close(c);
    }
    if (tg->g_in_use) {
      perfc_gauge_set(tg->g_in_use, 0);
      perfc_gauge_set(tg->g_idle, 0);
    }
    pthread_cond_destroy(&tg->cv);
    free(tg->dsn);
  }
  pthread_mutex_destroy(&pool->mu);
  free(pool->name);
  free(pool);
}

/* Call with the pool lock held. */
static void publish_counts(target *tg) {
  perfc_gauge_set(tg->g_in_use, (double)(tg->total - tg->idle_count));
  perfc_gauge_set(tg->g_idle, (double)tg->idle_count);
}

/* Opens a connection for target `ti`; the caller already counted it in
 * `total`. */
static int conn_open(perfc_pg_pool *pool, int ti, unsigned gen,
                     perfc_pg_conn **out) {
  perfc_pg_conn *c = calloc(1, sizeof *c);
  if (!c)
    return fail(pool, PERFC_ENOMEM, NULL, "pg: out of memory");
  char ct[16];
  snprintf(ct, sizeof ct, "%u", pool->connect_timeout_s);
  /* expand_dbname=1 expands the DSN in place of "dbname"; keywords after it
   * override what the DSN says, fallback_application_name does not. */
  const char *kw[] = {"dbname", "connect_timeout", "fallback_application_name",
                      "target_session_attrs", NULL};
  const char *val[] = {pool->t[ti].dsn, ct, "perfc", pool->t[ti].session_attrs,
                       NULL};
  if (val[3] == NULL)
    kw[3] = NULL; /* the DSN chose its own */
  c->pg = PQconnectdbParams(kw, val, 1);
  c->pool = pool;
  c->target = ti;
  c->gen = gen;
  c->cur_timeout_ms = TIMEOUT_UNKNOWN;
  if (!c->pg || PQstatus(c->pg) != CONNECTION_OK) {
    char line[512];
    one_line(line, sizeof line,
             c->pg ? PQerrorMessage(c->pg) : "out of memory");
    int st = fail(pool, PERFC_EUNAVAILABLE, NULL,
                  "pg: cannot connect to %s: %s", target_names[ti], line);
    /* While the replica is known to be down, its failed probes are not
     * news: the transition was logged once (replica_mark). A primary that
     * is down (a failover in progress) fails every call's connect: the
     * site is rate limited (10, then one a second, with the count of the
     * dropped ones), or a busy service would log one line per call. */
    perfc_log_ratelimited(ti == T_REPLICA && atomic_load(&pool->replica_down)
                              ? PERFC_LOG_DEBUG
                              : PERFC_LOG_WARN,
                          PERFC_LOG_SITE, "pg: cannot connect to %s: %s",
                          target_names[ti], line);
    conn_close(c);
    return st;
  }
  PQsetNoticeProcessor(c->pg, notice_to_log, NULL);
  /* The pool's statement_timeout is set now, once, so ordinary calls never
   * pay for it. */
  int st = set_timeout(c, pool->stmt_timeout_ms);
  if (st != 0) {
    conn_close(c);
    return st;
  }
  *out = c;
  return 0;
}

/* Gives up a connection slot: closes `c` (if any) outside the lock. */
static void slot_drop(perfc_pg_pool *pool, target *tg, perfc_pg_conn *c,
                      int dead) {
  pthread_mutex_lock(&pool->mu);
  tg->total--;
  if (dead)
    tg->gen++;
  publish_counts(tg);
  pthread_cond_signal(&tg->cv);
  pthread_mutex_unlock(&pool->mu);
  if (c)
    conn_close(c);
}

/* Records what a use of the replica showed; logs and reports transitions
 * only, so a dead replica costs one line going down and one coming back. */
static void replica_mark(perfc_pg_pool *pool, int usable, const char *why) {
  pthread_mutex_lock(&pool->mu);
  int was_down = atomic_load(&pool->replica_down);
  atomic_store(&pool->replica_down, !usable);
  if (!usable)
    pool->replica_retry_at_ms = now_ms() + pool->replica_retry_ms;
  pthread_mutex_unlock(&pool->mu);
  if (was_down == !usable)
    return;
  perfc_gauge_set(pool->g_replica_up, usable ? 1 : 0);
  if (usable)
    perfc_log(PERFC_LOG_INFO,
              "pg pool %s: replica answering again, reads go back to it",
              pool->name);
  else
    perfc_log(PERFC_LOG_WARN,
              "pg pool %s: replica unreachable (%s); %s", pool->name, why,
              pool->no_fallback ? "reads fail with UNAVAILABLE until it "
                                  "answers"
                                : "reads go to the primary until it answers");
  if (pool->replica_fn)
    pool->replica_fn(pool, usable, pool->replica_ud);
}

/* The target a read uses now: the replica unless it is down; while it is
 * down, the first read after each retry period probes it. */
static int read_target(perfc_pg_pool *pool) {
  if (!atomic_load(&pool->replica_down))
    return T_REPLICA;
  int ti = T_PRIMARY;
  pthread_mutex_lock(&pool->mu);
  int64_t now = now_ms();
  if (now >= pool->replica_retry_at_ms) {
    pool->replica_retry_at_ms = now + pool->replica_retry_ms;
    ti = T_REPLICA;
  }
  pthread_mutex_unlock(&pool->mu);
  return ti;
}

static int acquire_on(perfc_pg_pool *pool, int ti, perfc_pg_conn **out);

int perfc_pg_replica_usable(perfc_pg_pool *pool) {
  if (!pool)
    return PERFC_EINVAL;
  if (!pool->has_replica)
    return PERFC_ESTATE;
  return !atomic_load(&pool->replica_down) &&
         !atomic_load(&pool->replica_lagging);
}

/* ---- read-your-writes and the lag check ---- */

/* The primary's WAL insert position after the last write acknowledged
 * through this pool, by any thread: a read may use a replica only once
 * it has replayed that far, so every caller of this pool (every client of
 * this process, whichever thread serves its next call) reads its writes.
 * One atomic maximum: no lock, no per-thread table to outgrow. */
static uint64_t ryw_get(perfc_pg_pool *pool) {
  return atomic_load_explicit(pool->ryw_slot, memory_order_acquire);
}

void perfc__pg_ryw_put(_Atomic uint64_t *slot, uint64_t lsn) {
  uint64_t cur = atomic_load_explicit(slot, memory_order_relaxed);
  while (lsn > cur &&
         !atomic_compare_exchange_weak_explicit(
             slot, &cur, lsn, memory_order_release, memory_order_relaxed))
    ;
}

static void ryw_put(perfc_pg_pool *pool, uint64_t lsn) {
  perfc__pg_ryw_put(pool->ryw_slot, lsn);
}

_Atomic uint64_t *perfc__pg_pool_ryw_slot(perfc_pg_pool *pool) {
  return pool->ryw_slot;
}

/* Runs one of the pool's own fixed queries, answering one row of `n` int8
 * columns (SQL NULL reads as -1). Neither counted as the caller's
 * statement nor recorded as its error: the caller's detail is left as it
 * was. A lost connection is marked broken. Returns 0 or -1. */
static int own_query(perfc_pg_conn *c, const char *sql, int64_t *v, int n) {
  PGresult *r = PQexec(c->pg, sql);
  int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1 &&
           PQnfields(r) == n;
  for (int i = 0; ok && i < n; i++)
    v[i] = PQgetisnull(r, 0, i) ? -1 : strtoll(PQgetvalue(r, 0, i), NULL, 10);
  PQclear(r);
  if (PQstatus(c->pg) != CONNECTION_OK)
    c->broken = 1;
  return ok ? 0 : -1;
}

/* Asks a replica connection's server where it stands: its replay position
 * (kept on the connection) and its lag in ms, or -1 when it has WAL it has
 * not replayed and no transaction replayed to date it by. Lag is zero while
 * the standby has replayed everything it received, else the age of the
 * last transaction it replayed: the standard recipe, which needs no
 * primary round trip; it overstates the lag for a moment when WAL arrives
 * after the primary was idle, and cannot see a standby cut off from its
 * primary (it has replayed all it received). A server not in recovery
 * (an independent server, or a standby since promoted) has nothing to
 * wait for. Returns 0, or -1 when the query failed. */
static int replica_probe(perfc_pg_conn *c, int64_t *lag_ms) {
  static const char sql[] = PERFC__PG_SQL_REPLICA_PROBE;
  int64_t v[2];
  if (own_query(c, sql, v, 2) != 0)
    return -1;
  c->replay_lsn = v[0] < 0 ? UINT64_MAX : (uint64_t)v[0];
  *lag_ms = v[1];
  return 0;
}

/* After a write: the primary's WAL insert position, which is at or past
 * the end of every record the write made, committed or not yet flushed
 * (synchronous_commit = off leaves a commit in the WAL buffers for a
 * while; pg_current_wal_lsn() may not cover it yet). */
static void ryw_record(perfc_pg_conn *c) {
  int64_t lsn;
  if (own_query(c, PERFC__PG_SQL_INSERT_LSN, &lsn, 1) == 0 && lsn > 0)
    ryw_put(c->pool, (uint64_t)lsn);
}

/* Whether this read is the one that checks the lag now: at most one per
 * lag_check_ms in the pool, claimed without a lock. */
static int lag_check_claim(perfc_pg_pool *pool) {
  if (!pool->lag_check)
    return 0;
  int64_t now = now_ms();
  int64_t at = atomic_load(&pool->lag_check_at_ms);
  return now >= at &&
         atomic_compare_exchange_strong(&pool->lag_check_at_ms, &at,
                                        now + pool->lag_check_ms);
}

static void lag_mark(perfc_pg_pool *pool, int64_t lag_ms) {
  int lagging = lag_ms < 0 || lag_ms > pool->max_lag_ms;
  perfc_gauge_set(pool->g_lag, lag_ms < 0 ? -1 : (double)lag_ms / 1000.0);
  if (atomic_exchange(&pool->replica_lagging, lagging) == lagging)
    return;
  if (lagging)
    perfc_log(PERFC_LOG_WARN,
              "pg pool %s: replica lags %s%lld ms (max_replica_lag_ms %lld); "
              "reads go to the primary until it catches up",
              pool->name, lag_ms < 0 ? "an unknown time, over " : "",
              (long long)(lag_ms < 0 ? pool->max_lag_ms : lag_ms),
              (long long)pool->max_lag_ms);
  else
    perfc_log(PERFC_LOG_INFO,
              "pg pool %s: replica caught up (%lld ms behind), reads go back "
              "to it",
              pool->name, (long long)lag_ms);
}

static int fallback(perfc_pg_pool *pool, int reason, perfc_pg_conn **out) {
  perfc_counter_inc(pool->c_fallback);
  perfc_counter_inc(pool->c_fallbacks[reason]);
  return acquire_on(pool, T_PRIMARY, out);
}

/* A read on a pool with a replica and fallback. In order: a replica known
 * to lag (between checks) or to be down (between probes) sends the read
 * to the primary at once; else a replica connection is borrowed, the lag
 * is measured on it when a check is due, and a thread whose last write
 * this connection's server has not yet replayed (as far as the pool knows;
 * else one probe asks) reads from the primary. */
static int acquire_read(perfc_pg_pool *pool, perfc_pg_conn **out) {
  int check = lag_check_claim(pool);
  if (!check && atomic_load(&pool->replica_lagging))
    return fallback(pool, R_LAGGING, out);
  if (read_target(pool) == T_PRIMARY)
    return fallback(pool, R_UNREACHABLE, out);
  perfc_pg_conn *c;
  int st = acquire_on(pool, T_REPLICA, &c);
  if (st != 0) {
    if (st != PERFC_EUNAVAILABLE)
      return st; /* exhausted (or out of memory): the replica is there, busy */
    replica_mark(pool, 0, perfc_last_error());
    return fallback(pool, R_UNREACHABLE, out);
  }
  replica_mark(pool, 1, "");
  uint64_t want = pool->ryw ? ryw_get(pool) : 0;
  int reason = -1;
  int64_t lag = 0;
  if (check || (want != 0 && c->replay_lsn < want)) {
    if (replica_probe(c, &lag) != 0) {
      reason = R_UNREACHABLE;
      if (c->broken)
        replica_mark(pool, 0, "connection lost");
    } else if (check) {
      lag_mark(pool, lag);
      if (atomic_load(&pool->replica_lagging))
        reason = R_LAGGING;
    }
  }
  if (reason < 0 && want != 0 && c->replay_lsn < want)
    reason = R_RYW;
  if (reason < 0) {
    *out = c;
    return 0;
  }
  perfc_pg_release(c);
  return fallback(pool, reason, out);
}

int perfc_pg_acquire(perfc_pg_pool *pool, unsigned flags, perfc_pg_conn **out) {
  if (!pool || !out)
    return fail(pool, PERFC_EINVAL, NULL, "pg: NULL pool or out");
  *out = NULL;
  if (!(flags & PERFC_PG_READ) || !pool->has_replica) {
    int st = acquire_on(pool, T_PRIMARY, out);
    if (st == 0)
      (*out)->for_write = !(flags & PERFC_PG_READ);
    return st;
  }
  if (pool->no_fallback) {
    int st = acquire_on(pool, T_REPLICA, out);
    if (st == 0 || st == PERFC_EUNAVAILABLE)
      replica_mark(pool, st == 0, st == 0 ? "" : perfc_last_error());
    return st;
  }
  return acquire_read(pool, out);
}

static int acquire_on(perfc_pg_pool *pool, int ti, perfc_pg_conn **out) {
  target *tg = &pool->t[ti];
  double t0 = now_s();
  struct timespec deadline;
  clock_gettime(CLOCK_MONOTONIC, &deadline);
  deadline.tv_sec += pool->acquire_timeout_ms / 1000;
  deadline.tv_nsec += (long)(pool->acquire_timeout_ms % 1000) * 1000000;
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000;
  }

  pthread_mutex_lock(&pool->mu);
  for (;;) {
    if (tg->idle) {
      perfc_pg_conn *c = tg->idle;
      tg->idle = c->next;
      tg->idle_count--;
      publish_counts(tg);
      unsigned gen = tg->gen;
      pthread_mutex_unlock(&pool->mu);
      /* Check a connection that sat idle long, or that predates a failure
       * seen on a sibling: both are the cases where it may be dead without
       * libpq knowing yet. */
      int check =
          c->gen != gen || now_ms() - c->idle_since_ms >= pool->idle_check_ms;
      if (check && !conn_alive(c)) {
        slot_drop(pool, tg, c, 1);
        pthread_mutex_lock(&pool->mu);
        continue;
      }
      c->gen = gen;
      c->next = NULL;
      perfc_histogram_observe(pool->h_wait, now_s() - t0);
      *out = c;
      return 0;
    }
    if (tg->total < tg->max) {
      tg->total++;
      publish_counts(tg);
      unsigned gen = tg->gen;
      pthread_mutex_unlock(&pool->mu);
      perfc_pg_conn *c = NULL;
      int st = conn_open(pool, ti, gen, &c);
      if (st != 0) {
        slot_drop(pool, tg, NULL, 0);
        return st;
      }
      perfc_histogram_observe(pool->h_wait, now_s() - t0);
      *out = c;
      return 0;
    }
    int rc = pthread_cond_timedwait(&tg->cv, &pool->mu, &deadline);
    if (rc == ETIMEDOUT && !tg->idle && tg->total >= tg->max) {
      pthread_mutex_unlock(&pool->mu);
      perfc_histogram_observe(pool->h_wait, now_s() - t0);
      return fail(pool, PERFC_EFULL, NULL,
                  "pg: pool exhausted: no %s connection free within %lld "
                  "ms (max_conns %u)",
                  target_names[ti], (long long)pool->acquire_timeout_ms,
                  tg->max);
    }
  }
}

void perfc_pg_release(perfc_pg_conn *c) {
  if (!c)
    return;
  perfc_pg_pool *pool = c->pool;
  target *tg = &pool->t[c->target];
  if (!c->broken && (c->in_copy || PQstatus(c->pg) != CONNECTION_OK))
    c->broken = 1;
  if (!c->broken && PQtransactionStatus(c->pg) != PQTRANS_IDLE) {
    /* Left inside a transaction: roll it back so the next borrower starts
     * clean, or close the connection if even that fails. The caller's
     * thread keeps the detail of the failure that brought it here. */
    saved_error e;
    error_save(&e);
    if (run_fixed(c, "ROLLBACK", NULL) != 0 ||
        PQtransactionStatus(c->pg) != PQTRANS_IDLE)
      c->broken = 1;
    if (e.code != 0)
      error_restore(&e, -1);
    c->cur_timeout_ms = TIMEOUT_UNKNOWN;
  }
  /* Read-your-writes: where the primary's WAL stands once this thread's
   * write is done (committed or rolled back: either way no later read of
   * this thread may see less). */
  if (!c->broken && c->for_write && pool->ryw && pool->has_replica)
    ryw_record(c);
  c->for_write = 0;
  if (c->broken) {
    slot_drop(pool, tg, c, PQstatus(c->pg) != CONNECTION_OK);
    return;
  }
  c->idle_since_ms = now_ms();
  pthread_mutex_lock(&pool->mu);
  c->next = tg->idle;
  tg->idle = c;
  tg->idle_count++;
  publish_counts(tg);
  pthread_cond_signal(&tg->cv);
  pthread_mutex_unlock(&pool->mu);
}

int perfc_pg_exec(perfc_pg_pool *pool, const perfc_pg_query *q,
                  perfc_pg_result **res) {
  if (res)
    *res = NULL;
  int st = check_query(pool, q);
  if (st != 0)
    return st;
  perfc_pg_conn *c;
  st = perfc_pg_acquire(pool, q->flags, &c);
  if (st != 0)
    return st;
  st = perfc_pg_conn_exec(c, q, res);
  int lost_replica = st == PERFC_EUNAVAILABLE && c->target == T_REPLICA &&
                     PQstatus(c->pg) != CONNECTION_OK;
  perfc_pg_release(c);
  if (lost_replica && !pool->no_fallback) {
    /* The replica went away under a read. The statement is read-only
     * (PERFC_PG_READ says so), so running it again on the primary is safe,
     * and the caller gets an answer instead of UNAVAILABLE. */
    replica_mark(pool, 0, "connection lost");
    st = fallback(pool, R_UNREACHABLE, &c);
    if (st != 0)
      return st;
    st = perfc_pg_conn_exec(c, q, res);
    perfc_pg_release(c);
  } else if (lost_replica) {
    replica_mark(pool, 0, "connection lost");
  }
  return st;
}

int perfc_pg_ping(perfc_pg_pool *pool, unsigned flags) {
  if (!pool)
    return fail(pool, PERFC_EINVAL, NULL, "pg: NULL pool");
  /* A check of the replica must reach the replica, not its fallback. */
  int replica = (flags & PERFC_PG_READ) && pool->has_replica;
  perfc_pg_conn *c;
  int st = acquire_on(pool, replica ? T_REPLICA : T_PRIMARY, &c);
  if (st == 0) {
    if (!conn_alive(c))
      st = fail_result(c, NULL);
    perfc_pg_release(c);
  }
  if (replica && (st == 0 || st == PERFC_EUNAVAILABLE))
    replica_mark(pool, st == 0, st == 0 ? "" : perfc_last_error());
  return st;
}

/* ---- transactions ---- */

int perfc_pg_tx(perfc_pg_pool *pool, perfc_pg_tx_fn fn, void *user_data) {
  if (!fn)
    return fail(pool, PERFC_EINVAL, NULL, "pg: NULL transaction function");
  perfc_pg_conn *c;
  int st = perfc_pg_acquire(pool, 0, &c);
  if (st != 0)
    return st;
  st = run_fixed(c, "BEGIN", NULL);
  if (st != 0) {
    perfc_pg_release(c);
    return st;
  }
  st = fn(c, user_data);
  if (st == 0) {
    PGresult *r = NULL;
    st = run_fixed(c, "COMMIT", &r);
    /* COMMIT of a transaction that already failed succeeds with the tag
     * ROLLBACK: the body swallowed an error. Report it, do not pretend. */
    if (st == 0 && strcmp(PQcmdStatus(r), "ROLLBACK") == 0)
      st = fail(pool, PERFC_EABORTED, NULL,
                "pg: transaction rolled back: a statement in it failed");
    PQclear(r);
  } else if (!c->broken) {
    /* The body's failure is what the caller reads, not the ROLLBACK's. */
    saved_error e;
    error_save(&e);
    run_fixed(c, "ROLLBACK", NULL);
    error_restore(&e, -1);
  }
  /* A session SET inside the transaction is undone by a rollback; forget
   * what we believe the timeout is rather than track it. */
  c->cur_timeout_ms = TIMEOUT_UNKNOWN;
  perfc_pg_release(c);
  return st;
}

/* ---- pipeline batches ---- */

static int batch(perfc_pg_conn *c, const perfc_pg_query *qs, size_t n);

int perfc_pg_batch(perfc_pg_conn *c, const perfc_pg_query *qs, size_t n) {
  perfc_span *sp = c != NULL && qs != NULL && n > 0 ? stmt_span(qs, n) : NULL;
  int rc = batch(c, qs, n);
  stmt_span_end(sp, rc);
  return rc;
}

static int batch(perfc_pg_conn *c, const perfc_pg_query *qs, size_t n) {
  if (!c || (n && !qs))
    return fail(c ? c->pool : NULL, PERFC_EINVAL, NULL,
                "pg: NULL connection or queries");
  if (n == 0)
    return 0;
  if (c->in_copy)
    return fail(c->pool, PERFC_EPRECONDITION, NULL,
                "pg: connection is in COPY");
  int st;
  for (size_t i = 0; i < n; i++)
    if ((st = check_query(c->pool, &qs[i])) != 0)
      return error_at(st, (long)i);
  st = set_timeout(c, want_timeout(c, &qs[0]));
  if (st != 0)
    return st;
  /* Prepare named statements first, outside the pipeline: a Parse inside
   * it would be undone with the rest if a later statement fails, leaving
   * the cache believing in a statement the server does not have. */
  for (size_t i = 0; i < n; i++) {
    if (!qs[i].name || stmt_has(&c->stmts, qs[i].name))
      continue;
    params p;
    if (params_build(&p, qs[i].params, qs[i].nparams) != 0) {
      st = fail(c->pool, PERFC_EINVAL, NULL,
                "pg: bad parameter (kind, length or count)");
      return error_at(st, (long)i);
    }
    st = ensure_prepared(c, &qs[i], &p);
    free(p.heap);
    if (st != 0)
      return error_at(st, (long)i);
  }

  if (!PQenterPipelineMode(c->pg))
    return fail_result(c, NULL);
  /* Send everything, then one Sync: the whole batch is one round trip and
   * one implicit transaction. libpq's blocking sends read incoming data
   * while the socket is full, so a large batch cannot deadlock. */
  size_t sent = 0;
  long bad_index = -1;
  st = 0;
  for (; sent < n; sent++) {
    const perfc_pg_query *q = &qs[sent];
    params p;
    if (params_build(&p, q->params, q->nparams) != 0) {
      st = fail(c->pool, PERFC_EINVAL, NULL,
                "pg: bad parameter (kind, length or count)");
      bad_index = (long)sent;
      break;
    }
    int ok = q->name
                 ? PQsendQueryPrepared(c->pg, q->name, (int)q->nparams,
                                       p.values, p.lengths, p.formats, 0)
                 : PQsendQueryParams(c->pg, q->sql, (int)q->nparams, p.types,
                                     p.values, p.lengths, p.formats, 0);
    free(p.heap);
    if (!ok) {
      st = fail_result(c, NULL);
      bad_index = (long)sent;
      break;
    }
  }
  if (c->broken) {
    PQexitPipelineMode(c->pg);
    return error_at(st, bad_index);
  }
  /* A parameter error after some queries were queued must not commit
   * them: sending Sync would, so the batch is abandoned with the
   * connection (it cannot leave pipeline mode with queries in flight). */
  if (st != 0) {
    c->broken = 1;
    return error_at(st, bad_index);
  }
  if (!PQpipelineSync(c->pg)) {
    st = fail_result(c, NULL);
    PQexitPipelineMode(c->pg);
    return st;
  }
  perfc_counter_add(c->pool->t[c->target].c_queries, n);

  /* Each query yields its result(s) then NULL; the Sync yields
   * PGRES_PIPELINE_SYNC. The first failure is the one reported; later
   * queries come back PIPELINE_ABORTED. */
  for (size_t i = 0; i < n; i++) {
    PGresult *r;
    while ((r = PQgetResult(c->pg)) != NULL) {
      ExecStatusType es = PQresultStatus(r);
      if (st == 0 && es != PGRES_TUPLES_OK && es != PGRES_COMMAND_OK &&
          es != PGRES_PIPELINE_ABORTED) {
        st = fail_result(c, r);
        bad_index = (long)i;
      } else if (st == 0 && (qs[i].flags & PERFC_PG_ONE) &&
                 es == PGRES_TUPLES_OK && PQntuples(r) == 0) {
        /* Too late to undo: the rest of the batch has run. Report it. */
        st = fail(c->pool, PERFC_ENOENT, NULL, "pg: no rows");
        bad_index = (long)i;
      }
      PQclear(r);
      if (c->broken)
        break;
    }
    if (c->broken)
      break;
  }
  if (!c->broken) {
    PGresult *r = PQgetResult(c->pg);
    if (PQresultStatus(r) != PGRES_PIPELINE_SYNC && st == 0)
      st = fail_result(c, r);
    PQclear(r);
    if (!PQexitPipelineMode(c->pg))
      c->broken = 1;
  }
  return st != 0 ? error_at(st, bad_index) : 0;
}

/* ---- COPY FROM STDIN ---- */

int perfc_pg_copy_begin(perfc_pg_conn *c, const char *sql) {
  if (!c || !sql)
    return fail(c ? c->pool : NULL, PERFC_EINVAL, NULL,
                "pg: NULL connection or SQL");
  if (c->in_copy)
    return fail(c->pool, PERFC_EPRECONDITION, NULL,
                "pg: COPY already in progress");
  int st = set_timeout(c, c->pool->stmt_timeout_ms);
  if (st != 0)
    return st;
  if (!c->copy_buf && !(c->copy_buf = malloc(COPY_CHUNK + 64)))
    return fail(c->pool, PERFC_ENOMEM, NULL, "pg: out of memory");
  PGresult *r = PQexec(c->pg, sql);
  if (PQresultStatus(r) != PGRES_COPY_IN) {
    st = PQresultStatus(r) == PGRES_FATAL_ERROR
             ? fail_result(c, r)
             : fail(c->pool, PERFC_EINVAL, NULL,
                    "pg: not a COPY ... FROM STDIN statement");
    PQclear(r);
    /* Anything but COPY IN that still runs (COPY TO STDOUT) is drained. */
    while ((r = PQgetResult(c->pg)) != NULL)
      PQclear(r);
    return st;
  }
  PQclear(r);
  perfc_counter_inc(c->pool->t[c->target].c_queries);
  c->in_copy = 1;
  c->copy_len = 0;
  c->copy_fail = 0;
  return 0;
}

static int copy_flush(perfc_pg_conn *c) {
  if (c->copy_len == 0)
    return 0;
  if (PQputCopyData(c->pg, c->copy_buf, (int)c->copy_len) != 1)
    return fail_result(c, NULL);
  c->copy_len = 0;
  return 0;
}

/* Appends to the COPY buffer, flushing whole chunks as they fill. */
static int copy_put(perfc_pg_conn *c, const char *s, size_t n) {
  while (n) {
    size_t room = COPY_CHUNK - c->copy_len;
    size_t k = n < room ? n : room;
    memcpy(c->copy_buf + c->copy_len, s, k);
    c->copy_len += k;
    s += k;
    n -= k;
    if (c->copy_len == COPY_CHUNK) {
      int st = copy_flush(c);
      if (st != 0)
        return st;
    }
  }
  return 0;
}

int perfc_pg_copy_row(perfc_pg_conn *c, const perfc_slice *f, size_t n) {
  if (!c || !c->in_copy)
    return fail(c ? c->pool : NULL, PERFC_EPRECONDITION, NULL,
                "pg: no COPY in progress");
  if (c->copy_fail != 0)
    return error_restore(&c->copy_err, -1);
  if (n && !f)
    return fail(c->pool, PERFC_EINVAL, NULL, "pg: NULL fields");
  int st = 0;
  for (size_t i = 0; i < n && st == 0; i++) {
    if (i)
      st = copy_put(c, "\t", 1);
    if (st != 0)
      break;
    if (!f[i].base) {
      st = copy_put(c, "\\N", 2);
      continue;
    }
    /* COPY text format: backslash starts an escape, tab separates fields,
     * newline and carriage return end rows. Those four are escaped; every
     * other byte (UTF-8 included) passes unchanged. Runs without special
     * bytes are copied in one piece. */
    const char *s = (const char *)f[i].base;
    size_t start = 0;
    for (size_t j = 0; j < f[i].len && st == 0; j++) {
      const char *esc;
      switch (s[j]) {
      case '\\':
        esc = "\\\\";
        break;
      case '\t':
        esc = "\\t";
        break;
      case '\n':
        esc = "\\n";
        break;
      case '\r':
        esc = "\\r";
        break;
      case '\0':
        st = fail(c->pool, PERFC_EINVAL, NULL,
                  "pg: COPY field %zu contains a NUL byte", i);
        continue;
      default:
        continue;
      }
      if ((st = copy_put(c, s + start, j - start)) == 0)
        st = copy_put(c, esc, 2);
      start = j + 1;
    }
    if (st == 0)
      st = copy_put(c, s + start, f[i].len - start);
  }
  if (st == 0)
    st = copy_put(c, "\n", 1);
  if (st != 0) {
    /* A half-written row cannot be taken back: the COPY is spoiled and
     * perfc_pg_copy_end() will abort it. */
    c->copy_fail = st;
    error_save(&c->copy_err);
  }
  return st;
}

int perfc_pg_copy_end(perfc_pg_conn *c, uint64_t *rows) {
  if (rows)
    *rows = 0;
  if (!c || !c->in_copy)
    return fail(c ? c->pool : NULL, PERFC_EPRECONDITION, NULL,
                "pg: no COPY in progress");
  int st = c->copy_fail;
  if (st == 0)
    st = copy_flush(c);
  else
    error_restore(&c->copy_err, -1);
  c->in_copy = 0;
  c->copy_len = 0;
  if (c->broken)
    return st;
  const char *abort_msg =
      st == 0 ? NULL : "aborted by the client (perfc_pg_copy_row failed)";
  if (PQputCopyEnd(c->pg, abort_msg) != 1) {
    int st2 = fail_result(c, NULL);
    return st == 0 ? st2 : error_restore(&c->copy_err, -1);
  }
  PGresult *r;
  int first = 1;
  while ((r = PQgetResult(c->pg)) != NULL) {
    if (first && st == 0) {
      if (PQresultStatus(r) == PGRES_COMMAND_OK) {
        if (rows)
          *rows = strtoull(PQcmdTuples(r), NULL, 10);
      } else {
        st = fail_result(c, r);
      }
    }
    first = 0;
    PQclear(r);
  }
  return st;
}

/* ---- results ---- */

/* A perfc_pg_result * is a PGresult *: no wrapper, no extra allocation. */
#define PGR(r) ((const PGresult *)(r))

size_t perfc_pg_result_rows(const perfc_pg_result *r) {
  return r ? (size_t)PQntuples(PGR(r)) : 0;
}

size_t perfc_pg_result_cols(const perfc_pg_result *r) {
  return r ? (size_t)PQnfields(PGR(r)) : 0;
}

uint64_t perfc_pg_result_affected(const perfc_pg_result *r) {
  if (!r)
    return 0;
  const char *s = PQcmdTuples((PGresult *)PGR(r));
  return s && *s ? strtoull(s, NULL, 10) : 0;
}

int perfc_pg_result_col(const perfc_pg_result *r, const char *name) {
  return r && name ? PQfnumber(PGR(r), name) : -1;
}

static int in_range(const perfc_pg_result *r, size_t row, size_t col) {
  return r && row < (size_t)PQntuples(PGR(r)) &&
         col < (size_t)PQnfields(PGR(r));
}

int perfc_pg_result_is_null(const perfc_pg_result *r, size_t row, size_t col) {
  return !in_range(r, row, col) || PQgetisnull(PGR(r), (int)row, (int)col);
}

const char *perfc_pg_result_text(const perfc_pg_result *r, size_t row,
                                 size_t col) {
  if (perfc_pg_result_is_null(r, row, col))
    return NULL;
  return PQgetvalue(PGR(r), (int)row, (int)col);
}

size_t perfc_pg_result_len(const perfc_pg_result *r, size_t row, size_t col) {
  if (perfc_pg_result_is_null(r, row, col))
    return 0;
  return (size_t)PQgetlength(PGR(r), (int)row, (int)col);
}

int perfc_pg_result_int64(const perfc_pg_result *r, size_t row, size_t col,
                          int64_t *out) {
  const char *s = perfc_pg_result_text(r, row, col);
  if (!s)
    return PERFC_ENOENT;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end)
    return PERFC_EPARSE;
  *out = v;
  return 0;
}

int perfc_pg_result_bool(const perfc_pg_result *r, size_t row, size_t col,
                         int *out) {
  const char *s = perfc_pg_result_text(r, row, col);
  if (!s)
    return PERFC_ENOENT;
  if (strcmp(s, "t") == 0)
    *out = 1;
  else if (strcmp(s, "f") == 0)
    *out = 0;
  else
    return PERFC_EPARSE;
  return 0;
}

static int hexval(char ch) {
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  if (ch >= 'a' && ch <= 'f')
    return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F')
    return ch - 'A' + 10;
  return -1;
}

int perfc_pg_result_bytea(const perfc_pg_result *r, size_t row, size_t col,
                          perfc_arena *arena, perfc_slice *out) {
  const char *s = perfc_pg_result_text(r, row, col);
  if (!s)
    return PERFC_ENOENT;
  if (!arena || !out)
    return PERFC_EINVAL;
  size_t n = perfc_pg_result_len(r, row, col);
  if (n >= 2 && s[0] == '\\' && s[1] == 'x') {
    /* The hex format (the server default since 9.0), decoded straight
     * into the arena. */
    if ((n - 2) % 2)
      return PERFC_EPARSE;
    uint8_t *b = perfc_arena_alloc(arena, (n - 2) / 2);
    if (!b)
      return PERFC_ENOMEM;
    for (size_t i = 2, k = 0; i < n; i += 2, k++) {
      int hi = hexval(s[i]), lo = hexval(s[i + 1]);
      if (hi < 0 || lo < 0)
        return PERFC_EPARSE;
      b[k] = (uint8_t)(hi << 4 | lo);
    }
    out->base = b;
    out->len = (n - 2) / 2;
    return 0;
  }
  /* bytea_output = 'escape': let libpq decode, then move into the arena. */
  size_t len;
  unsigned char *u = PQunescapeBytea((const unsigned char *)s, &len);
  if (!u)
    return PERFC_ENOMEM;
  uint8_t *b = perfc_arena_alloc(arena, len);
  if (b)
    memcpy(b, u, len);
  PQfreemem(u);
  if (!b)
    return PERFC_ENOMEM;
  out->base = b;
  out->len = len;
  return 0;
}

char *perfc_pg_result_strdup(const perfc_pg_result *r, size_t row, size_t col,
                             perfc_arena *arena) {
  const char *s = perfc_pg_result_text(r, row, col);
  if (!s || !arena)
    return NULL;
  return perfc_arena_strndup(arena, s, perfc_pg_result_len(r, row, col));
}

void perfc_pg_result_free(perfc_pg_result *r) {
  if (r)
    PQclear((PGresult *)r);
}
