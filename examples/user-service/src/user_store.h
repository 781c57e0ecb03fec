/*
 * user_store.h — the users table: every SQL statement of the service, all
 * parameterized and prepared, through a perfc/pg.h pool.
 *
 * Room: examples/user-service. Functions return the status a handler
 * answers with (unique_violation is ALREADY_EXISTS, no row NOT_FOUND, a lost
 * or unreachable server UNAVAILABLE, see perfc/pg.h) and fill `err`.
 * Users built into an arena live as long as that arena.
 */
#ifndef USER_SERVICE_USER_STORE_H
#define USER_SERVICE_USER_STORE_H

#include "perfc/arena.h"
#include "perfc/cache.h"
#include "perfc/pg.h"
#include "user/v1/user.pb-c.h"

/** One user by id into `*out` (strings and timestamps in `arena`):
 *  GetUser's load. NOT_FOUND when there is no such user. */
perfc_status_code user_store_get(perfc_pg_pool *pg, int64_t id,
                                 perfc_arena *arena, User__V1__User *out,
                                 perfc_pg_error *err);

/** Several users in one query: out[i] is ids[i]'s user packed as a
 *  user.v1.User message (found = 1; the value the cache stores) or left
 *  not found. out[] arrives zeroed (perfc_cache_batch_loader_fn's
 *  contract); data is malloc'd. */
perfc_status_code user_store_get_many_packed(perfc_pg_pool *pg,
                                             const int64_t *ids, size_t n,
                                             perfc_cache_value *out,
                                             perfc_pg_error *err);

/** INSERT; `*out` is the new row (arena). */
perfc_status_code user_store_create(perfc_pg_pool *pg, const char *name,
                                    const char *email, perfc_arena *arena,
                                    User__V1__User *out, perfc_pg_error *err);

/** Sets name and/or email (NULL = keep) of `id`; `*out` is the new row. */
perfc_status_code user_store_update(perfc_pg_pool *pg, int64_t id,
                                    const char *name, const char *email,
                                    perfc_arena *arena, User__V1__User *out,
                                    perfc_pg_error *err);

/** DELETE; NOT_FOUND when absent. */
perfc_status_code user_store_delete(perfc_pg_pool *pg, int64_t id,
                                    perfc_pg_error *err);

/** Up to `limit` users with id > after_id, in id order, into the arena:
 *  `*users` gets an array of `*n` pointers. */
perfc_status_code user_store_list(perfc_pg_pool *pg, int64_t after_id,
                                  int limit, perfc_arena *arena,
                                  User__V1__User ***users, size_t *n,
                                  perfc_pg_error *err);

/** Gives the next valid row to import: returns 1 with name/email set
 *  (borrowed until the next call), 0 at the end, or -1 to abort the import
 *  (rolled back; user_store_import() then answers CANCELLED). */
typedef int (*user_store_row_fn)(void *user_data, const char **name,
                                 const char **email);

/** Imports rows as they come: COPY into a temporary table, then one INSERT
 *  that keeps the first row of each e-mail and skips e-mails already
 *  taken, in one transaction. `*created` is the number of rows inserted. */
perfc_status_code user_store_import(perfc_pg_pool *pg, user_store_row_fn next,
                                    void *user_data, int64_t *created,
                                    perfc_pg_error *err);

#endif
