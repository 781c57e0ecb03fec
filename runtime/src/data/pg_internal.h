/*
 * pg_internal.h — what the PostgreSQL pool (pg.c) shares with the client on
 * the loops (pg_async.c). Room: runtime/src/data; not installed.
 */
#ifndef PERFC_DATA_PG_INTERNAL_H
#define PERFC_DATA_PG_INTERNAL_H

/* Whether libpq conninfo `dsn` (keyword/value or URI) sets keyword `kw`:
 * 1 it does, 0 it does not, PERFC_EINVAL when libpq cannot parse it (the
 * reason is recorded with perfc_error_set(), libpq's words). The clients
 * add target_session_attrs only where the DSN does not choose its own. */
int perfc__pg_dsn_sets(const char *dsn, const char *kw);

#endif /* PERFC_DATA_PG_INTERNAL_H */
