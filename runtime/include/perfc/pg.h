/*
 * perfc/pg.h — a PostgreSQL connection pool over libpq.
 *
 * A bounded pool of connections to a primary and, optionally, a replica that
 * serves calls flagged PERFC_PG_READ. Queries are parameterized only: SQL
 * text is a constant written by the programmer and every value travels as a
 * parameter, so there is no function that builds SQL from values. Named
 * queries are prepared on first use on each connection and re-prepared
 * after a reconnect. Every call returns 0 or a negative PERFC_E* code
 * (unique violation PERFC_EEXIST, no row PERFC_ENOENT, ...; the table is
 * at perfc_pg_conn_exec()) and leaves the server's message, the SQLSTATE
 * and a batch's failing index in perfc_last_error_detail() (perfc/common.h);
 * a handler ends with `return perfc_ctx_fail(ctx, rc);`, which answers
 * perfc_status_from_error(rc). See docs/data-layer.md, "PostgreSQL pool".
 *
 * Room: runtime public headers. libpq stays private: nothing here needs
 * <libpq-fe.h>. A pool is thread-safe; a connection (perfc_pg_conn) and a
 * result belong to one thread at a time.
 */
#ifndef PERFC_PG_H
#define PERFC_PG_H

#include <stdbool.h>

#include "perfc/arena.h"
#include "perfc/common.h"
#include "perfc/metrics.h"
#include "perfc/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The pool. Opaque; thread-safe. */
typedef struct perfc_pg_pool perfc_pg_pool;
/** One connection lent out by the pool. Opaque; one thread at a time. */
typedef struct perfc_pg_conn perfc_pg_conn;
/** A query result (rows in text format). Opaque; one thread at a time. */
typedef struct perfc_pg_result perfc_pg_result;

/** Most connections per target (primary, replica) when opts say 0. Small on
 *  purpose: PostgreSQL serves best with few busy backends. */
#define PERFC_DEFAULT_PG_MAX_CONNS 16
/** How long perfc_pg_acquire() waits for a free connection. */
#define PERFC_DEFAULT_PG_ACQUIRE_TIMEOUT_MS 1000
/** libpq connect_timeout. libpq counts whole seconds (its minimum is 2),
 *  so the pool rounds up. */
#define PERFC_DEFAULT_PG_CONNECT_TIMEOUT_MS 5000
/** Deprecated alias in seconds (perfc/config.h's default still names it);
 *  see docs/design.md, "API style". */
#define PERFC_DEFAULT_PG_CONNECT_TIMEOUT_S                                     \
  (PERFC_DEFAULT_PG_CONNECT_TIMEOUT_MS / 1000)
/** statement_timeout set on every new connection. */
#define PERFC_DEFAULT_PG_STATEMENT_TIMEOUT_MS 30000
/** A connection idle longer than this is pinged before it is lent out. */
#define PERFC_DEFAULT_PG_IDLE_CHECK_MS 30000
/** Value of the `pool` label on the pool's metrics. */
#define PERFC_DEFAULT_PG_POOL_NAME "default"
/** While the replica is unreachable, one read per this period tries it
 *  again; the others go to the primary at once. */
#define PERFC_DEFAULT_PG_REPLICA_RETRY_MS 2000

/** Most replica lag a read accepts: past it, reads go to the primary
 *  (perfc_pg_replica_fallbacks_total{reason="lagging"}). */
#define PERFC_DEFAULT_PG_MAX_REPLICA_LAG_MS 5000
/** How often the pool measures the replica's lag (one query, on a
 *  connection a read borrowed anyway), so no read pays for it but one per
 *  period. */
#define PERFC_DEFAULT_PG_REPLICA_LAG_CHECK_MS 1000

/** Told when reads move off the replica (`usable` 0: it cannot be reached,
 *  reads go to the primary) or back onto it (`usable` 1). Called once per
 *  transition, on the thread that noticed it, without pool locks held; it
 *  may call perfc_health_set() but not free the pool. */
typedef void (*perfc_pg_replica_fn)(perfc_pg_pool *pool, int usable,
                                    void *user_data);

/** Pool options. Every pointer is borrowed for the duration of
 *  perfc_pg_pool_new(); the pool copies what it keeps. A zero field means
 *  its PERFC_DEFAULT_PG_* value (what perfc_pg_pool_opts_init() writes);
 *  durations are milliseconds; what is on by default is turned off by a
 *  `no_*` field. */
typedef struct perfc_pg_pool_opts {
  /** libpq conninfo of the primary ("host=... dbname=..." or a postgresql://
   *  URI). Required. It may list several hosts ("host=a,b port=5432,5433"
   *  or postgresql://a:5432,b:5433/db): unless it sets
   *  target_session_attrs itself, the pool connects with
   *  target_session_attrs=read-write, so libpq picks whichever listed host
   *  accepts writes, and a reconnect after a failover finds the promoted
   *  standby. A DSN libpq cannot parse is PERFC_EINVAL. */
  const char *dsn;
  /** conninfo of the read replica(s); calls flagged PERFC_PG_READ go there.
   *  NULL = reads go to the primary. It may list several standbys: unless
   *  it sets target_session_attrs, the pool adds prefer-standby (libpq
   *  takes the first listed standby that answers, else any listed host).
   *  While it cannot be reached (connect fails, or a connection to it is
   *  lost), or lags more than `max_replica_lag_ms`, reads go to the
   *  primary instead (perfc_pg_replica_fallback_total, and
   *  perfc_pg_replica_fallbacks_total by reason), and one read per
   *  `replica_retry_ms` tries it again. */
  const char *replica_dsn;
  /** Replica lag past which reads go to the primary. The pool measures it
   *  once per `replica_lag_check_ms` on a replica connection: zero while
   *  the standby has replayed all the WAL it received, else the age of the
   *  last transaction it replayed. 0 = PERFC_DEFAULT_PG_MAX_REPLICA_LAG_MS. */
  int64_t max_replica_lag_ms;
  /** 0 = PERFC_DEFAULT_PG_REPLICA_LAG_CHECK_MS. */
  int64_t replica_lag_check_ms;
  /** true: no lag check (reads use a reachable replica however far
   *  behind). */
  bool no_replica_lag_check;
  /** true: no read-your-writes. By default, after any thread used a
   *  primary connection for anything but a read (perfc_pg_exec without
   *  PERFC_PG_READ, perfc_pg_tx, perfc_pg_acquire(pool, 0, ...)), the pool
   *  records the primary's WAL insert position (the highest), and every
   *  later read, on any thread, goes to the primary until the replica
   *  connection it would use has replayed past it
   *  (perfc_pg_replica_fallbacks_total{reason="read_your_writes"}). Per
   *  pool: see docs/data-layer.md, "PostgreSQL primary and standbys".
   *  Costs one round trip per write, only on a pool with a replica. */
  bool no_read_your_writes;
  /** true: no fallback; a read whose replica cannot be reached fails with
   *  PERFC_EUNAVAILABLE (for applications that must never add read load to
   *  the primary). Reads then always use the replica: no lag check and no
   *  read-your-writes detour either. */
  bool no_replica_fallback;
  /** 0 = PERFC_DEFAULT_PG_REPLICA_RETRY_MS. */
  int64_t replica_retry_ms;
  /** Optional transition callback (see perfc_pg_replica_fn) and its
   *  user data (borrowed; must outlive the pool). */
  perfc_pg_replica_fn replica_fn;
  void *replica_ud;
  /** Connections per target. 0 = PERFC_DEFAULT_PG_MAX_CONNS. */
  unsigned max_conns;
  /** 0 = PERFC_DEFAULT_PG_ACQUIRE_TIMEOUT_MS. */
  int64_t acquire_timeout_ms;
  /** Overrides connect_timeout in the DSN; rounded up to whole seconds,
   *  at least 2 (libpq's unit and minimum). 0 =
   *  PERFC_DEFAULT_PG_CONNECT_TIMEOUT_MS. */
  int64_t connect_timeout_ms;
  /** statement_timeout of every connection. 0 =
   *  PERFC_DEFAULT_PG_STATEMENT_TIMEOUT_MS. */
  int64_t statement_timeout_ms;
  /** true: no statement_timeout at all (statement_timeout_ms ignored). */
  bool no_statement_timeout;
  /** 0 = PERFC_DEFAULT_PG_IDLE_CHECK_MS. */
  int64_t idle_check_ms;
  /** `pool` label value of the metrics. NULL = PERFC_DEFAULT_PG_POOL_NAME. */
  const char *name;
  /** Registry for the pool's metrics; borrowed, must outlive the pool.
   *  NULL = the default registry. */
  perfc_metrics_registry *registry;
  /** For the asynchronous client made from these options
   *  (perfc_pg_async_opts_from_pool(), perfc/pg_async.h): its connections
   *  per event loop, 1..64. The pool itself ignores it. 0 =
   *  PERFC_DEFAULT_PG_ASYNC_CONNS_PER_LOOP. */
  unsigned async_conns_per_loop;
} perfc_pg_pool_opts;

/** Fills `o` with the defaults (dsn NULL: set it). */
PERFC_API void perfc_pg_pool_opts_init(perfc_pg_pool_opts *o);

/** Creates a pool. It does not connect yet: connections are opened on
 *  demand, so a service may start before its database (use
 *  perfc_pg_ping() as a readiness check). Returns 0, PERFC_EINVAL (no dsn,
 *  a negative duration), PERFC_ENOMEM, or an error from registering the
 *  metrics. The caller frees
 *  the pool with perfc_pg_pool_free(). */
PERFC_API int perfc_pg_pool_new(perfc_pg_pool **out,
                                const perfc_pg_pool_opts *opts);

/** Closes every connection and frees the pool. Every connection must have
 *  been released. NULL is a no-op. */
PERFC_API void perfc_pg_pool_free(perfc_pg_pool *pool);

/** Call flags. */
enum {
  /** Read-only: run on the replica when one is configured. */
  PERFC_PG_READ = 1u << 0,
  /** Exactly one row is required: no rows is PERFC_ENOENT. */
  PERFC_PG_ONE = 1u << 1
};

/** Kinds of parameter. */
typedef enum perfc_pg_param_kind {
  PERFC_PG_PARAM_NULL = 0, /**< SQL NULL */
  PERFC_PG_PARAM_TEXT,   /**< NUL-terminated text; the server infers the type */
  PERFC_PG_PARAM_BINARY, /**< bytes in the binary format of `type_oid` */
  PERFC_PG_PARAM_INT64,  /**< `i64`, sent as binary int8 */
  PERFC_PG_PARAM_BOOL    /**< `i64 != 0`, sent as binary bool */
} perfc_pg_param_kind;

/** One query parameter ($1, $2, ...). Build it with the perfc_pg_* helpers
 *  below. `data` is borrowed until the call that uses it returns. */
typedef struct perfc_pg_param {
  perfc_pg_param_kind kind;
  /** PostgreSQL type OID; 0 lets the server infer it (TEXT only). */
  uint32_t type_oid;
  const void *data;
  size_t len;
  int64_t i64;
} perfc_pg_param;

/** SQL NULL. */
static inline perfc_pg_param perfc_pg_null(void) {
  perfc_pg_param p = {PERFC_PG_PARAM_NULL, 0, NULL, 0, 0};
  return p;
}
/** Text (borrowed, NUL-terminated; NULL gives SQL NULL). Its type is
 *  inferred from the statement, as for an untyped literal. */
static inline perfc_pg_param perfc_pg_text(const char *s) {
  perfc_pg_param p = {s ? PERFC_PG_PARAM_TEXT : PERFC_PG_PARAM_NULL, 0, s, 0,
                      0};
  return p;
}
/** `n` bytes of text (borrowed; need not be NUL-terminated), typed text. */
static inline perfc_pg_param perfc_pg_textn(const char *s, size_t n) {
  perfc_pg_param p = {PERFC_PG_PARAM_BINARY, 25 /* text */, s, n, 0};
  return p;
}
/** An int8 (bigint). */
static inline perfc_pg_param perfc_pg_int64(int64_t v) {
  perfc_pg_param p = {PERFC_PG_PARAM_INT64, 20 /* int8 */, NULL, 0, v};
  return p;
}
/** A boolean. */
static inline perfc_pg_param perfc_pg_bool(int v) {
  perfc_pg_param p = {PERFC_PG_PARAM_BOOL, 16 /* bool */, NULL, 0, v != 0};
  return p;
}
/** A bytea (borrowed bytes). */
static inline perfc_pg_param perfc_pg_bytea(const void *b, size_t n) {
  perfc_pg_param p = {PERFC_PG_PARAM_BINARY, 17 /* bytea */, b, n, 0};
  return p;
}
/** Any type in its binary wire format (borrowed bytes). */
static inline perfc_pg_param perfc_pg_binary(uint32_t type_oid, const void *b,
                                             size_t n) {
  perfc_pg_param p = {PERFC_PG_PARAM_BINARY, type_oid, b, n, 0};
  return p;
}

/** One statement to run. Every pointer is borrowed for the call. */
typedef struct perfc_pg_query {
  /** Prepared-statement name: prepared on first use on each connection and
   *  reused after. One name must always mean the same SQL and parameter
   *  types. NULL = unnamed: parsed by the server on every call. */
  const char *name;
  /** The SQL, with $1, $2, ... placeholders. Required. */
  const char *sql;
  const perfc_pg_param *params;
  size_t nparams;
  /** PERFC_PG_READ, PERFC_PG_ONE. */
  unsigned flags;
  /** statement_timeout for this call in ms: 0 = the pool's. Negative is
   *  PERFC_EINVAL. */
  int64_t timeout_ms;
  /** true: no statement_timeout for this call (timeout_ms ignored). */
  bool no_timeout;
} perfc_pg_query;

/* ---- The pool ---- */

/** Borrows a connection: a primary one, or a replica one when `flags` has
 *  PERFC_PG_READ and a replica is configured. Waits up to the acquire
 *  timeout for a free one, opening a new connection when under max_conns.
 *  Returns 0 and `*out` (give it back with perfc_pg_release()), or
 *  PERFC_EFULL (pool exhausted: no connection in time; a handler answers
 *  RESOURCE_EXHAUSTED), PERFC_EUNAVAILABLE (cannot connect) or
 *  PERFC_EINVAL. */
PERFC_API int perfc_pg_acquire(perfc_pg_pool *pool, unsigned flags,
                               perfc_pg_conn **out);

/** Gives a connection back. A connection that broke, or is left inside a
 *  transaction or COPY, is closed instead of reused. NULL is a no-op. */
PERFC_API void perfc_pg_release(perfc_pg_conn *conn);

/** Acquires a connection (honouring q->flags), runs `q`, releases. As
 *  perfc_pg_conn_exec(), plus perfc_pg_acquire()'s errors. */
PERFC_API int perfc_pg_exec(perfc_pg_pool *pool, const perfc_pg_query *q,
                            perfc_pg_result **res);

/** Health check: runs an empty statement on a connection of the primary
 *  (or of the replica with PERFC_PG_READ: the replica itself, never the
 *  fallback; its answer also updates the read route). OK when the server
 *  answers, else PERFC_EUNAVAILABLE (or another code of the table at
 *  perfc_pg_conn_exec()). */
PERFC_API int perfc_pg_ping(perfc_pg_pool *pool, unsigned flags);

/** Where reads go now: 1 the replica, 0 the primary because the replica
 *  cannot be reached or lagged past max_replica_lag_ms at the last check,
 *  PERFC_ESTATE when the pool has no replica, PERFC_EINVAL for NULL.
 *  Before the first read the replica is assumed reachable and current.
 *  (Read-your-writes detours are per read and not shown.) */
PERFC_API int perfc_pg_replica_usable(perfc_pg_pool *pool);

/* ---- One connection ---- */

/** Runs `q` on `conn`. `res` may be NULL (rows dropped); else on 0 `*res`
 *  is a result the caller frees with perfc_pg_result_free(), and on failure
 *  `*res` is NULL. Errors (and the status perfc_status_from_error() gives a
 *  handler): unique_violation (23505) PERFC_EEXIST (ALREADY_EXISTS);
 *  PERFC_PG_ONE and no rows PERFC_ENOENT (NOT_FOUND); query_canceled
 *  (57014, the statement timeout) PERFC_ETIMEDOUT (DEADLINE_EXCEEDED);
 *  class 22 (data exception) and bad parameters PERFC_EINVAL
 *  (INVALID_ARGUMENT); 40001/40P01 (serialization failure, deadlock)
 *  PERFC_EABORTED (ABORTED: retry); connection lost, class 08 and
 *  57P01-57P03 (server shutting down or starting) PERFC_EUNAVAILABLE
 *  (UNAVAILABLE); the connection inside a COPY PERFC_EPRECONDITION
 *  (FAILED_PRECONDITION); anything else PERFC_EINTERNAL (INTERNAL). The
 *  message, the SQLSTATE ("" when the server sent none) and, for batches,
 *  the failing index are in perfc_last_error_detail(). */
PERFC_API int perfc_pg_conn_exec(perfc_pg_conn *conn, const perfc_pg_query *q,
                                 perfc_pg_result **res);

/** Runs `n` queries in one round trip (libpq pipeline mode) as one implicit
 *  transaction: either all take effect or none. Rows are dropped.
 *  On failure perfc_last_error_detail().index names the first failing
 *  query. A batch inside perfc_pg_tx() is part of that transaction. The
 *  statement timeout is qs[0]'s. PERFC_PG_ONE is checked only after the
 *  batch ran, so a PERFC_ENOENT from a batch does not undo it (wrap it in
 *  perfc_pg_tx()). Errors as perfc_pg_conn_exec(). */
PERFC_API int perfc_pg_batch(perfc_pg_conn *conn, const perfc_pg_query *qs,
                             size_t n);

/** Transaction body: runs on `conn` between BEGIN and COMMIT. Return 0 to
 *  commit; anything else (a PERFC_E* code, ideally recorded with
 *  perfc_error_set() when it is the body's own) rolls back and becomes
 *  perfc_pg_tx()'s result. */
typedef int (*perfc_pg_tx_fn)(perfc_pg_conn *conn, void *user_data);

/** Acquires a primary connection, BEGIN, `fn`, then COMMIT if fn returned
 *  0, else ROLLBACK. `fn` is called exactly once if BEGIN succeeded and
 *  never otherwise. Returns fn's result, or the failure of
 *  acquire/BEGIN/COMMIT; a COMMIT that the server answered with ROLLBACK
 *  (the body swallowed a failed statement) is PERFC_EABORTED. The detail
 *  of fn's failure survives the ROLLBACK. */
PERFC_API int perfc_pg_tx(perfc_pg_pool *pool, perfc_pg_tx_fn fn,
                          void *user_data);

/** Starts COPY ... FROM STDIN (text format). `sql` is the complete COPY
 *  statement, e.g. "COPY t (a, b) FROM STDIN"; a constant, never built from
 *  values. Then send rows with perfc_pg_copy_row() and finish with
 *  perfc_pg_copy_end(). */
PERFC_API int perfc_pg_copy_begin(perfc_pg_conn *conn, const char *sql);

/** Sends one row: `n` fields, each a byte slice (borrowed; base NULL = SQL
 *  NULL). Fields are escaped for COPY's text format here (backslash, tab,
 *  newline, carriage return, ...), so any text without a NUL byte, in the
 *  database encoding, arrives exactly. Rows are buffered and flushed in
 *  large chunks. A field with a NUL byte is PERFC_EINVAL and spoils the
 *  COPY: later rows and perfc_pg_copy_end() return the same error. */
PERFC_API int perfc_pg_copy_row(perfc_pg_conn *conn, const perfc_slice *fields,
                                size_t n);

/** Ends the COPY: flushes, then waits for the server's verdict. `rows` (may
 *  be NULL) gets the number of rows copied. If a row failed earlier this
 *  aborts the COPY and returns that failure. */
PERFC_API int perfc_pg_copy_end(perfc_pg_conn *conn, uint64_t *rows);

/* ---- Results ---- */

/** Number of rows. */
PERFC_API size_t perfc_pg_result_rows(const perfc_pg_result *r);
/** Number of columns. */
PERFC_API size_t perfc_pg_result_cols(const perfc_pg_result *r);
/** Rows affected by INSERT/UPDATE/DELETE/... (0 for other statements). */
PERFC_API uint64_t perfc_pg_result_affected(const perfc_pg_result *r);
/** Column index by name, or -1. */
PERFC_API int perfc_pg_result_col(const perfc_pg_result *r, const char *name);
/** Nonzero when the value is SQL NULL (or row/col is out of range). */
PERFC_API int perfc_pg_result_is_null(const perfc_pg_result *r, size_t row,
                                      size_t col);
/** The value as text, borrowed from the result (valid until
 *  perfc_pg_result_free()); NULL for SQL NULL or out of range. */
PERFC_API const char *perfc_pg_result_text(const perfc_pg_result *r, size_t row,
                                           size_t col);
/** Length in bytes of the text value (0 for NULL). */
PERFC_API size_t perfc_pg_result_len(const perfc_pg_result *r, size_t row,
                                     size_t col);
/** Parses an integer column. Returns 0, PERFC_ENOENT (NULL or out of range)
 *  or PERFC_EPARSE (not an integer, or out of int64 range). */
PERFC_API int perfc_pg_result_int64(const perfc_pg_result *r, size_t row,
                                    size_t col, int64_t *out);
/** Parses a boolean column into 0/1. Errors as perfc_pg_result_int64(). */
PERFC_API int perfc_pg_result_bool(const perfc_pg_result *r, size_t row,
                                   size_t col, int *out);
/** Decodes a bytea column into `arena` (`out->base` lives as long as the
 *  arena). Errors as perfc_pg_result_int64(), or PERFC_ENOMEM. */
PERFC_API int perfc_pg_result_bytea(const perfc_pg_result *r, size_t row,
                                    size_t col, perfc_arena *arena,
                                    perfc_slice *out);
/** Copies the text value into `arena` (NUL-terminated), so it can outlive
 *  the result; NULL for SQL NULL, out of range, or out of memory. */
PERFC_API char *perfc_pg_result_strdup(const perfc_pg_result *r, size_t row,
                                       size_t col, perfc_arena *arena);
/** Frees the result. NULL is a no-op. */
PERFC_API void perfc_pg_result_free(perfc_pg_result *r);

/** The SQLSTATE → PERFC_E* mapping every call uses (the table at
 *  perfc_pg_conn_exec()), for callers that get a SQLSTATE elsewhere. NULL
 *  or "" is PERFC_EINTERNAL. Never 0. */
PERFC_API int perfc_pg_error_from_sqlstate(const char *sqlstate);

/** Deprecated alias, kept because docs/data-layer.md promised it (see
 *  docs/design.md, "API style"): the gRPC status a handler answers for a
 *  SQLSTATE. */
static inline perfc_status_code
perfc_pg_status_from_sqlstate(const char *sqlstate) {
  return perfc_status_from_error(perfc_pg_error_from_sqlstate(sqlstate));
}

#ifdef __cplusplus
}
#endif
#endif /* PERFC_PG_H */
