/*
 * perfc/pg_async.h — PostgreSQL on perfc's event loops: queries with
 * callbacks, no thread blocked, pipelined (libpq 15 pipeline mode).
 *
 * A client holds `conns_per_loop` connections per loop that uses it, opened
 * without blocking (PQconnectStart/PQconnectPoll) at the loop's first
 * query. A query issued on a loop thread (an inline handler on the h2
 * transport, or a continuation) goes out on that loop's connections and
 * its callback runs on that loop. Queries issued during one loop
 * iteration are sent at the end of the iteration; results come back in
 * order and are matched to their callbacks first in, first out. A query
 * issued from a thread without a loop (a pool worker, the C core
 * transport's pollers) is handed to the client's own loop thread, started
 * at the first such query, and its callback runs there.
 *
 * Sync groups, and why PERFC_PG_READ matters. Statements PostgreSQL
 * receives between two Sync messages form one implicit transaction: an
 * error in one rolls back the others. So a statement that may write gets
 * a Sync of its own, and libpq 15 writes to the socket at every Sync
 * (PQpipelineSync flushes). Queries flagged PERFC_PG_READ share one Sync
 * per iteration and connection: the reads of every call a loop served in
 * one iteration leave in one write(2). When one read of a group fails,
 * PostgreSQL skips the reads behind it (PGRES_PIPELINE_ABORTED, never
 * executed); they are sent again in the next group, so a failing query
 * fails only its own call. Flag a query READ only when running it twice
 * is harmless and it does not need to see another query of the same
 * group rolled back.
 *
 * Every query that was accepted (the function returned 0) gets its
 * callback exactly once: with its result, with the error PostgreSQL
 * answered (mapped as perfc/pg.h maps it: 23505 PERFC_EEXIST, 57014
 * PERFC_ETIMEDOUT, class 22 PERFC_EINVAL, 40001/40P01 PERFC_EABORTED,
 * class 08 and 57P01-57P03 PERFC_EUNAVAILABLE, others PERFC_EINTERNAL;
 * PERFC_PG_ONE with no row PERFC_ENOENT), with PERFC_ETIMEDOUT when no
 * result came within its statement timeout, PERFC_EUNAVAILABLE when the
 * connection was lost (or reset after another query's timeout) with it in
 * flight, or PERFC_ESHUTDOWN when the loop or the client stopped. The
 * message and SQLSTATE are in perfc_last_error_detail() during the
 * callback.
 *
 * Statement timeouts are the client's: each query's deadline is armed on
 * the loop's timer (q->timeout_ms, else the client's statement_timeout_ms;
 * q->no_timeout: none). When it passes, the query's callback runs with
 * PERFC_ETIMEDOUT at once and its connection is closed: every other query
 * in flight on it fails with PERFC_EUNAVAILABLE (whether PostgreSQL ran
 * them cannot be known), and no result can ever reach a later query. The
 * server notices the closed socket within client_connection_check_interval
 * (set to PERFC_DEFAULT_PG_ASYNC_CHECK_INTERVAL_MS on each connection) and
 * stops the statement. Lost connections are opened again after
 * `backoff_min_ms`, doubling to `backoff_max_ms`; while a loop has no
 * usable connection its queries are refused at once with
 * PERFC_EUNAVAILABLE.
 *
 * Replica. With `replica_dsn` set, queries flagged PERFC_PG_READ go to
 * `conns_per_loop` connections per loop to the replica, with the rules of
 * the pool (perfc/pg.h) and its option names, metrics
 * (perfc_pg_replica_fallback_total, perfc_pg_replica_fallbacks_total by
 * reason, `pool` label = the client's name) and callback. A read goes to
 * the primary instead when: the replica cannot be reached (a connect
 * failed or a replica connection was lost; one read per
 * `replica_retry_ms` tries it again), reason "unreachable"; the last lag
 * check found it more than `max_replica_lag_ms` behind (one check per
 * `replica_lag_check_ms`, a pipelined query on a replica connection, on
 * the loop: it never blocks, and its verdict applies from the next read
 * on), "lagging"; or the replica connection has not replayed the last
 * write (read-your-writes, below), "read_your_writes". Reads in flight on
 * a replica connection that is lost (or answers a connection-level error,
 * class 08 or 57P01-57P03) run again on the primary, once each, and
 * answer from there; if the primary refuses them too they fail with the
 * primary's code (PERFC_EUNAVAILABLE while it has no connection,
 * PERFC_EFULL), as the pool's perfc_pg_exec() returns the primary
 * acquire's failure. With `no_replica_fallback` reads use the replica
 * only: PERFC_EUNAVAILABLE while it cannot be reached.
 *
 * Read-your-writes. After each statement sent to the primary without
 * PERFC_PG_READ (outside a transaction) and after each COMMIT, the client
 * asks that session for pg_current_wal_insert_lsn() (behind the
 * statement's Sync, so its commit record is covered; no round trip of its
 * own, one more Sync) and raises one atomic maximum; the statement's
 * callback runs once that answer is in. A read then uses a replica
 * connection only if its server's replay position (as its last probe
 * showed) is past that maximum; otherwise the read runs on the primary
 * while a probe asks the replica again. The maximum is the client's own,
 * or, with `pool` set, the pool's: then writes through either hold back
 * the reads of both.
 *
 * Prepared statements: a query with a name is prepared on each connection
 * at its first use there (the Parse travels in the same pipeline as the
 * query: no extra round trip) and reused after; a reconnect prepares again.
 *
 * Transactions: perfc_pg_async_begin() reserves a connection of its own
 * (one of `tx_conns_per_loop`, opened on demand and kept for later
 * transactions) for the transaction's length: its statements go only
 * there, perfc_pg_async_commit()/_rollback() end it and free the
 * connection for the next one.
 *
 * Threads: queries may be issued from any thread; transactions only from a
 * loop thread, and all calls on one transaction from that loop. Callbacks
 * run on the loop that issued (or the client's own loop). A callback may
 * issue more queries; it must not free the client.
 *
 * With a deferred call (perfc/deferred.h) a handler queries PostgreSQL
 * without holding a thread: docs/data-layer.md, "PostgreSQL on the loops",
 * has a worked example.
 *
 * Room: runtime public headers; implemented in libperfc-data
 * (data/pg_async.c). Results are perfc/pg.h's perfc_pg_result.
 */
#ifndef PERFC_PG_ASYNC_H
#define PERFC_PG_ASYNC_H

#include "perfc/common.h"
#include "perfc/metrics.h"
#include "perfc/pg.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_pg_async perfc_pg_async;
/** A transaction in progress (see perfc_pg_async_begin()). */
typedef struct perfc_pg_async_tx perfc_pg_async_tx;

/** One connection per loop: a loop already gathers the reads of an
 *  iteration into one write, and one backend serves a pipeline of point
 *  reads near its limit. More spread a slow statement's wait. */
#define PERFC_DEFAULT_PG_ASYNC_CONNS_PER_LOOP 1u
/** Transactions open at once per loop (each holds a connection). */
#define PERFC_DEFAULT_PG_ASYNC_TX_CONNS_PER_LOOP 4u
/** Queries in flight on one connection before it refuses more
 *  (PERFC_EFULL): bounds the memory a stalled server makes a loop hold. */
#define PERFC_DEFAULT_PG_ASYNC_MAX_PENDING 65536u
/** Reconnect backoff, as the Redis clients'. */
#define PERFC_DEFAULT_PG_ASYNC_BACKOFF_MIN_MS 50
#define PERFC_DEFAULT_PG_ASYNC_BACKOFF_MAX_MS 1000
/** client_connection_check_interval set on every connection: how soon the
 *  server stops a statement whose connection the client closed (a timeout
 *  reset). */
#define PERFC_DEFAULT_PG_ASYNC_CHECK_INTERVAL_MS 1000
/** The longest duration the options and per-query timeouts take. */
#define PERFC_PG_ASYNC_MAX_DURATION_MS INT32_MAX
/* connect_timeout_ms and statement_timeout_ms default as the pool's
 * (perfc/pg.h): PERFC_DEFAULT_PG_CONNECT_TIMEOUT_MS (5 s) and
 * PERFC_DEFAULT_PG_STATEMENT_TIMEOUT_MS (30 s). */

typedef struct perfc_pg_async_opts {
  /** libpq conninfo ("host=... dbname=..." or a postgresql:// URI);
   *  copied. Required; one libpq cannot parse is PERFC_EINVAL. It may list
   *  several hosts: unless it sets target_session_attrs, connections ask
   *  for read-write, so libpq picks the primary among them, and the
   *  reconnects after a failover find the promoted standby. Prefer
   *  addresses to host names: libpq resolves names at each connect, on the
   *  loop, blocking it. */
  const char *dsn;
  unsigned conns_per_loop;      /**< 1..64; 0 = default */
  unsigned tx_conns_per_loop;   /**< 1..64; 0 = default */
  int64_t connect_timeout_ms;   /**< 0 = default */
  int64_t statement_timeout_ms; /**< 0 = default */
  /** true: queries without their own timeout_ms have no deadline. */
  bool no_statement_timeout;
  int64_t backoff_min_ms;       /**< 0 = default */
  int64_t backoff_max_ms;       /**< 0 = default; raised to backoff_min_ms */
  unsigned max_pending;         /**< per connection; 0 = default */
  /** Value of the metrics' `client` label; copied. NULL =
   *  PERFC_DEFAULT_PG_POOL_NAME. */
  const char *name;
  /** Registry for the metrics; borrowed, must outlive the client. NULL =
   *  the default registry. */
  perfc_metrics_registry *registry;
  /** The read replica, as perfc_pg_pool_opts.replica_dsn (copied; NULL or
   *  "" = reads go to `dsn`): queries flagged PERFC_PG_READ go to
   *  `conns_per_loop` connections per loop to it (opened at the loop's
   *  first read, libpq's prefer-standby unless the DSN sets
   *  target_session_attrs), with the pool's rules: see "Replica" in the
   *  header comment. */
  const char *replica_dsn;
  /** As perfc_pg_pool_opts: 0 = PERFC_DEFAULT_PG_MAX_REPLICA_LAG_MS,
   *  PERFC_DEFAULT_PG_REPLICA_LAG_CHECK_MS and
   *  PERFC_DEFAULT_PG_REPLICA_RETRY_MS. */
  int64_t max_replica_lag_ms;
  int64_t replica_lag_check_ms;
  int64_t replica_retry_ms;
  bool no_replica_lag_check; /**< true: no lag check */
  bool no_read_your_writes;  /**< true: no read-your-writes detour */
  /** true: reads use the replica only, and fail with PERFC_EUNAVAILABLE
   *  while it cannot be reached (no lag check, no read-your-writes). */
  bool no_replica_fallback;
  /** Told once per transition when reads move off the replica (`usable`
   *  0) or back (1), on the loop thread that noticed it, with `pool`
   *  below as its pool argument (NULL when none). It may call
   *  perfc_health_set() but not free the client. `replica_ud` is
   *  borrowed and must outlive the client. */
  perfc_pg_replica_fn replica_fn;
  void *replica_ud;
  /** Optional: the pool made from the same configuration (borrowed; it
   *  must outlive the client). Read-your-writes then spans both: a write
   *  acknowledged through the pool or through this client holds back the
   *  reads of both until the replica has replayed it. NULL: the client
   *  keeps its own position (its writes hold back its reads only). */
  perfc_pg_pool *pool;
} perfc_pg_async_opts;

/** Fills `o` with the defaults (dsn NULL: set it). */
PERFC_API void perfc_pg_async_opts_init(perfc_pg_async_opts *o);

/** Fills `o` from a pool's options (dsn and replica_dsn borrowed from
 *  `po`, connect and statement timeouts, async_conns_per_loop, name,
 *  registry, and every replica option: lag bound and check period, retry
 *  period, read_your_writes, fallback, replica_fn/replica_ud), so one
 *  configuration (perfc_config_apply_pg()) serves the pool and the loops.
 *  `pool` stays NULL: set it to the pool made from `po` to share
 *  read-your-writes with it. */
PERFC_API void perfc_pg_async_opts_from_pool(perfc_pg_async_opts *o,
                                             const perfc_pg_pool_opts *po);

/** A client (`opts` copied). Connects lazily, per loop, at its first query
 *  there: a server that is down does not fail this. Returns 0,
 *  PERFC_EINVAL (no dsn, durations out of range, with a message),
 *  PERFC_EEXIST (metric names clash) or PERFC_ENOMEM. */
PERFC_API int perfc_pg_async_new(perfc_pg_async **out,
                                 const perfc_pg_async_opts *opts);

/** Closes every connection (queries in flight get PERFC_ESHUTDOWN, on
 *  their loops) and frees the client. Call it when no thread issues
 *  queries any more, after the servers whose handlers use it stopped (or
 *  while their loops still run: each loop's connections are closed on
 *  that loop, and this waits for it); never from one of its callbacks.
 *  Open transactions must have ended. NULL is a no-op. */
PERFC_API void perfc_pg_async_free(perfc_pg_async *pg);

/** A query's callback: `rc` 0 with `res` (borrowed for the callback; copy
 *  what you keep, e.g. perfc_pg_result_strdup() into the call's arena),
 *  or an error (see the header comment) with `res` NULL. */
typedef void (*perfc_pg_async_fn)(int rc, const perfc_pg_result *res,
                                  void *user_data);

/** Runs `q` (every pointer in it, SQL, name and parameter bytes, is copied
 *  before this returns). Flags: PERFC_PG_ONE (no row is PERFC_ENOENT),
 *  PERFC_PG_READ (may share a Sync group, and goes to the replica when
 *  one is configured: see the header comment). Returns 0 (`fn` will run
 *  exactly once), PERFC_EINVAL, PERFC_EUNAVAILABLE (no connection of this
 *  loop is usable now: reconnecting after a failure; for a read that falls
 *  back, the primary's), PERFC_EFULL (max_pending on every connection of
 *  this loop), PERFC_ESHUTDOWN or PERFC_ENOMEM; then `fn` never runs. */
PERFC_API int perfc_pg_async_query(perfc_pg_async *pg, const perfc_pg_query *q,
                                   perfc_pg_async_fn fn, void *user_data);

/** BEGIN's callback: `rc` 0 with `tx` (yours until you pass it to
 *  perfc_pg_async_commit() or _rollback()), or an error with `tx` NULL. */
typedef void (*perfc_pg_async_tx_fn)(int rc, perfc_pg_async_tx *tx,
                                     void *user_data);

/** Loop thread only. Reserves a transaction connection of this loop and
 *  sends BEGIN on it. Returns 0 (`fn` will run exactly once),
 *  PERFC_ESTATE (no loop on this thread), PERFC_EFULL (tx_conns_per_loop
 *  transactions open), PERFC_EUNAVAILABLE, PERFC_ESHUTDOWN or
 *  PERFC_ENOMEM. */
PERFC_API int perfc_pg_async_begin(perfc_pg_async *pg, perfc_pg_async_tx_fn fn,
                                   void *user_data);

/** Runs `q` inside `tx` (as perfc_pg_async_query(); PERFC_PG_READ gives no
 *  grouping there: each statement has its own Sync). After a statement of
 *  the transaction failed, PostgreSQL refuses the others until the
 *  rollback (25P02, PERFC_EINTERNAL). Returns as perfc_pg_async_query(),
 *  PERFC_EUNAVAILABLE once the transaction's connection was lost (the
 *  transaction is gone: roll it back to free the handle), PERFC_ESHUTDOWN
 *  once its loop stopped, PERFC_ESTATE from another thread than the
 *  transaction's loop. */
PERFC_API int perfc_pg_async_tx_query(perfc_pg_async_tx *tx,
                                      const perfc_pg_query *q,
                                      perfc_pg_async_fn fn, void *user_data);

/** COMMIT (or ROLLBACK) and end the transaction, on the transaction's
 *  loop: `tx` is spent whatever this returns, except PERFC_ESTATE (called
 *  from another thread: nothing happened, the handle is still yours). `fn`
 *  (may be NULL) runs once with COMMIT's outcome: 0,
 *  PERFC_EABORTED when PostgreSQL rolled back instead (a statement of the
 *  transaction had failed), or an error as for a query. Returns 0 (`fn`
 *  will run), or PERFC_EUNAVAILABLE (the connection was lost meanwhile:
 *  nothing was committed), PERFC_ESHUTDOWN (the loop stopped),
 *  PERFC_ENOMEM, PERFC_EINVAL; then `fn` never runs. */
PERFC_API int perfc_pg_async_commit(perfc_pg_async_tx *tx, perfc_pg_async_fn fn,
                                    void *user_data);
/** ROLLBACK and end the transaction; as perfc_pg_async_commit(). */
PERFC_API int perfc_pg_async_rollback(perfc_pg_async_tx *tx,
                                      perfc_pg_async_fn fn, void *user_data);

/* Metrics (registry and `client` label from the options):
 * perfc_pg_async_queries_total, perfc_pg_async_flushes_total (Sync
 * messages sent, each one libpq write: queries / flushes is the
 * pipelining factor), perfc_pg_async_errors_total{kind="timeout"|
 * "unavailable"|"shutdown"|"server"} and the gauge
 * perfc_pg_async_connections (connected now). */

/** Counters summed over every loop's connections (racy reads). */
typedef struct perfc_pg_async_stats {
  uint64_t queries;  /**< accepted (BEGIN/COMMIT/ROLLBACK included) */
  uint64_t syncs;    /**< Sync messages sent (each a write by libpq) */
  uint64_t results;  /**< callbacks run with a server answer */
  uint64_t resent;   /**< reads sent again after a group was aborted */
  uint64_t timeouts; /**< callbacks run with the client's PERFC_ETIMEDOUT */
  uint64_t failed;   /**< callbacks run with UNAVAILABLE or SHUTDOWN */
  uint64_t prepares; /**< statements prepared */
  uint64_t connects; /**< connections established */
  unsigned conns_up; /**< connected now */
} perfc_pg_async_stats;

PERFC_API void perfc_pg_async_stats_get(perfc_pg_async *pg,
                                        perfc_pg_async_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* PERFC_PG_ASYNC_H */
