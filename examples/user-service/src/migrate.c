/*
 * migrate.c — applies the embedded sql/NNNN_*.sql files at start-up.
 *
 * Room: examples/user-service. libpq is used directly here, not through
 * perfc/pg.h, because a migration file is a script of many statements with
 * its own BEGIN/COMMIT, which only the simple-query protocol runs; the
 * service's queries all go through the pool.
 */
#include "migrate.h"

#include <libpq-fe.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Any constant shared by every replica: concurrent starters queue on it and
 * the later ones then find nothing to apply. */
static const char lock_sql[] =
    "SELECT pg_advisory_lock(hashtext('user-service migrations'))";
static const char unlock_sql[] =
    "SELECT pg_advisory_unlock(hashtext('user-service migrations'))";

static int fail(char *err, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, len, fmt, ap);
  va_end(ap);
  return -1;
}

static void sha256_hex(const unsigned char *p, size_t n, char out[65]) {
  unsigned char md[32];
  unsigned int mdlen = 0;
  EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL);
  for (unsigned i = 0; i < 32; i++)
    snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* The files use psql's :'checksum' variable for their own record (so they
 * also run by hand, see sql/README.md); the runner substitutes it the way
 * psql -v does. The value is hex digits computed here, never outside input. */
static char *expand_checksum(const user_migration *m, const char *hex) {
  static const char var[] = ":'checksum'";
  size_t cap = m->len + 1, n = 0;
  const char *s = (const char *)m->sql, *end = s + m->len;
  char *out;
  for (const char *p = s;
       (p = memmem(p, (size_t)(end - p), var, sizeof var - 1)) != NULL;
       p += sizeof var - 1)
    cap += 64 + 2;
  out = malloc(cap);
  if (out == NULL)
    return NULL;
  while (s < end) {
    const char *hit = memmem(s, (size_t)(end - s), var, sizeof var - 1);
    size_t chunk = hit ? (size_t)(hit - s) : (size_t)(end - s);
    memcpy(out + n, s, chunk);
    n += chunk;
    s += chunk;
    if (hit) {
      n += (size_t)sprintf(out + n, "'%s'", hex);
      s += sizeof var - 1;
    }
  }
  out[n] = '\0';
  return out;
}

/* The recorded checksum of `version`, or "" when it is not applied yet. */
static int applied_checksum(PGconn *pg, const char *version, char out[65],
                            char *err, size_t err_len) {
  const char *params[1] = {version};
  PGresult *r;
  out[0] = '\0';
  r = PQexec(pg, "SELECT to_regclass('schema_migrations') IS NOT NULL");
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    fail(err, err_len, "migrations: %s", PQerrorMessage(pg));
    PQclear(r);
    return -1;
  }
  if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) {
    PQclear(r);
    return 0;
  }
  PQclear(r);
  r = PQexecParams(pg,
                   "SELECT checksum FROM schema_migrations WHERE version = $1",
                   1, NULL, params, NULL, NULL, 0);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    fail(err, err_len, "migrations: %s", PQerrorMessage(pg));
    PQclear(r);
    return -1;
  }
  if (PQntuples(r) == 1)
    snprintf(out, 65, "%s", PQgetvalue(r, 0, 0));
  PQclear(r);
  return 0;
}

static int apply_all(PGconn *pg, char *err, size_t err_len) {
  for (size_t i = 0; i < user_migrations_count; i++) {
    const user_migration *m = &user_migrations[i];
    char want[65], have[65];
    char *script;
    PGresult *r;
    sha256_hex(m->sql, m->len, want);
    if (applied_checksum(pg, m->version, have, err, err_len) != 0)
      return -1;
    if (have[0] != '\0') {
      /* A shipped file must never change: the databases that ran the old
       * text would differ from those that run the new one. */
      if (strcmp(have, want) != 0)
        return fail(err, err_len,
                    "migrations: %s.sql was edited after it was applied "
                    "(recorded sha256 %s, file %s); write a new file instead",
                    m->version, have, want);
      continue;
    }
    script = expand_checksum(m, want);
    if (script == NULL)
      return fail(err, err_len, "migrations: out of memory");
    r = PQexec(pg, script);
    free(script);
    if (PQresultStatus(r) != PGRES_COMMAND_OK &&
        PQresultStatus(r) != PGRES_TUPLES_OK) {
      fail(err, err_len, "migrations: %s.sql failed: %s", m->version,
           PQerrorMessage(pg));
      PQclear(r);
      /* The file's transaction is aborted; end it so nothing of it stays. */
      PQclear(PQexec(pg, "ROLLBACK"));
      return -1;
    }
    PQclear(r);
    if (PQtransactionStatus(pg) != PQTRANS_IDLE) {
      PQclear(PQexec(pg, "ROLLBACK"));
      return fail(err, err_len,
                  "migrations: %s.sql left a transaction open (missing "
                  "COMMIT); rolled back",
                  m->version);
    }
    /* The file records itself; check that it did, so a file without its
     * INSERT is found now rather than re-run at the next start. */
    if (applied_checksum(pg, m->version, have, err, err_len) != 0)
      return -1;
    if (strcmp(have, want) != 0)
      return fail(err, err_len,
                  "migrations: %s.sql did not record itself in "
                  "schema_migrations",
                  m->version);
  }
  return 0;
}

int user_migrate(const char *dsn, char *err, size_t err_len) {
  PGconn *pg = PQconnectdb(dsn);
  PGresult *r;
  int rc;
  err[0] = '\0';
  if (PQstatus(pg) != CONNECTION_OK) {
    fail(err, err_len, "migrations: cannot connect: %s", PQerrorMessage(pg));
    PQfinish(pg);
    return -1;
  }
  PQclear(PQexec(pg, "SET client_min_messages = warning"));
  r = PQexec(pg, lock_sql);
  if (PQresultStatus(r) != PGRES_TUPLES_OK) {
    fail(err, err_len, "migrations: cannot take the lock: %s",
         PQerrorMessage(pg));
    PQclear(r);
    PQfinish(pg);
    return -1;
  }
  PQclear(r);
  rc = apply_all(pg, err, err_len);
  PQclear(PQexec(pg, unlock_sql));
  PQfinish(pg);
  return rc;
}
