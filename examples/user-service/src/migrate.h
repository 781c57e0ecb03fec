/*
 * migrate.h — the user-service's schema migrations: sql/NNNN_*.sql, compiled
 * into the binary, applied in name order at start-up and recorded in
 * schema_migrations (design in sql/README.md).
 *
 * Room: examples/user-service (start-up only; no handler calls this).
 */
#ifndef USER_SERVICE_MIGRATE_H
#define USER_SERVICE_MIGRATE_H

#include <stddef.h>

/** One migration file: its name without ".sql" and its bytes. */
typedef struct user_migration {
  const char *version;
  const unsigned char *sql;
  size_t len;
} user_migration;

/** Every file of sql/, sorted by name (migrations_embedded.c, generated). */
extern const user_migration user_migrations[];
extern const size_t user_migrations_count;

/** Connects to `dsn`, takes the migrations advisory lock, checks the
 *  checksum of every applied file and applies the missing ones in order,
 *  each in its own transaction together with its schema_migrations row.
 *  Returns 0, or -1 with a message in `err` (NUL-terminated). */
int user_migrate(const char *dsn, char *err, size_t err_len);

#endif
