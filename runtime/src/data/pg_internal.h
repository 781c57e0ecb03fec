/*
 * pg_internal.h — what the PostgreSQL pool (pg.c) shares with the client on
 * the loops (pg_async.c). Room: runtime/src/data; not installed.
 */
#ifndef PERFC_DATA_PG_INTERNAL_H
#define PERFC_DATA_PG_INTERNAL_H

#include "perfc/pg.h"

#include <stdint.h>

/* Whether libpq conninfo `dsn` (keyword/value or URI) sets keyword `kw`:
 * 1 it does, 0 it does not, PERFC_EINVAL when libpq cannot parse it (the
 * reason is recorded with perfc_error_set(), libpq's words). The clients
 * add target_session_attrs only where the DSN does not choose its own. */
int perfc__pg_dsn_sets(const char *dsn, const char *kw);

/* The pool's read-your-writes position (pg.c's ryw_lsn: the primary's WAL
 * insert position after the last write through the pool, an atomic
 * maximum). An asynchronous client given the pool (perfc_pg_async_opts.
 * pool) raises and reads this same word, so a write through either is
 * waited for by reads through both. Valid while the pool lives. */
_Atomic uint64_t *perfc__pg_pool_ryw_slot(perfc_pg_pool *pool);

/* Raises `*slot` to `lsn` (never lowers it): a lock-free maximum. */
void perfc__pg_ryw_put(_Atomic uint64_t *slot, uint64_t lsn);

/* The SQL both clients use, so the rules are the same on both. */
/* After a write: the primary's WAL insert position, which is at or past
 * the end of every record the write made (the commit record included
 * once the statement's implicit transaction has ended). */
#define PERFC__PG_SQL_INSERT_LSN                                               \
  "SELECT (pg_catalog.pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8"
/* A replica's replay position (-1 when not in recovery) and lag in ms
 * (-1 when unknown): see pg.c's replica_probe(). */
#define PERFC__PG_SQL_REPLICA_PROBE                                            \
  "SELECT CASE WHEN pg_catalog.pg_is_in_recovery() THEN "                      \
  "COALESCE((pg_catalog.pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8, "     \
  "0) ELSE -1 END, "                                                           \
  "CASE WHEN NOT pg_catalog.pg_is_in_recovery() THEN 0 "                       \
  "WHEN pg_catalog.pg_last_wal_receive_lsn() = "                               \
  "pg_catalog.pg_last_wal_replay_lsn() THEN 0 "                                \
  "ELSE (EXTRACT(EPOCH FROM pg_catalog.clock_timestamp() - "                   \
  "pg_catalog.pg_last_xact_replay_timestamp()) * 1000)::int8 END"

/* Metric help texts shared by the pool and the asynchronous client: a
 * family registered twice must say the same, and then both count into the
 * same series when their names (the `pool` label) match. */
#define PERFC__PG_HELP_FALLBACK                                                \
  "Reads meant for the replica that the primary served because the "           \
  "replica could not be reached."
#define PERFC__PG_HELP_FALLBACKS                                               \
  "Reads meant for the replica that the primary served, by reason: "           \
  "unreachable, lagging (past max_replica_lag_ms), read_your_writes "          \
  "(the pool's last write not yet replayed there)."

#endif /* PERFC_DATA_PG_INTERNAL_H */
