/*
 * user_store.h — the users table: every SQL statement of the service, all
 * parameterized and prepared, through a perfc/pg.h pool.
 *
 * Room: examples/user-service. Functions return 0 or perfc/pg.h's PERFC_E*
 * code (unique_violation PERFC_EEXIST, no row PERFC_ENOENT, a lost or
 * unreachable server PERFC_EUNAVAILABLE, ...) with the detail in
 * perfc_last_error_detail(); perfc_status_from_error() is the status a
 * handler answers.
 * Users built into an arena live as long as that arena.
 */
#ifndef USER_SERVICE_USER_STORE_H
#define USER_SERVICE_USER_STORE_H

#include "perfc/arena.h"
#include "perfc/cache.h"
#include "perfc/pg.h"
#include "user/v1/user.pb-c.h"

/* The statements the blocking functions below run, for the handlers that
 * run them on the event loop instead (perfc/pg_async.h, handlers.c): the
 * same SQL and prepared-statement names. `p` holds the parameters and
 * must live until the query is issued (perfc_pg_async_query() copies). */
void user_store_get_query(perfc_pg_query *q, perfc_pg_param p[1], int64_t id);
void user_store_list_query(perfc_pg_query *q, perfc_pg_param p[2],
                           int64_t after_id, int limit);

/** Row `row` of a users result (either statement above) into `u`, strings
 *  and timestamps in `arena`. */
int user_store_row_to_user(const perfc_pg_result *r, size_t row,
                           perfc_arena *arena, User__V1__User *u);
/** Row `row` packed as a user.v1.User (the value the cache stores) into a
 *  malloc'd buffer. */
int user_store_row_to_packed(const perfc_pg_result *r, size_t row,
                             uint8_t **out, size_t *out_len);
/** Every row of `r` into the arena: `*users` gets `*n` pointers. */
int user_store_users_from_result(const perfc_pg_result *r, perfc_arena *arena,
                                 User__V1__User ***users, size_t *n);

/** One user by id into `*out` (strings and timestamps in `arena`):
 *  GetUser's load. PERFC_ENOENT when there is no such user. */
int user_store_get(perfc_pg_pool *pg, int64_t id, perfc_arena *arena,
                   User__V1__User *out);

/** Several users in one query: out[i] is ids[i]'s user packed as a
 *  user.v1.User message (found = 1; the value the cache stores) or left
 *  not found. out[] arrives zeroed (perfc_cache_batch_loader_fn's
 *  contract); data is malloc'd. */
int user_store_get_many_packed(perfc_pg_pool *pg, const int64_t *ids, size_t n,
                               perfc_cache_value *out);

/** INSERT; `*out` is the new row (arena). */
int user_store_create(perfc_pg_pool *pg, const char *name, const char *email,
                      perfc_arena *arena, User__V1__User *out);

/** Sets name and/or email (NULL = keep) of `id`; `*out` is the new row. */
int user_store_update(perfc_pg_pool *pg, int64_t id, const char *name,
                      const char *email, perfc_arena *arena,
                      User__V1__User *out);

/** DELETE; PERFC_ENOENT when absent. */
int user_store_delete(perfc_pg_pool *pg, int64_t id);

/** Up to `limit` users with id > after_id, in id order, into the arena:
 *  `*users` gets an array of `*n` pointers. */
int user_store_list(perfc_pg_pool *pg, int64_t after_id, int limit,
                    perfc_arena *arena, User__V1__User ***users, size_t *n);

/** Gives the next valid row to import: returns 1 with name/email set
 *  (borrowed until the next call), 0 at the end, or -1 to abort the import
 *  (rolled back; user_store_import() then returns PERFC_EABORTED). */
typedef int (*user_store_row_fn)(void *user_data, const char **name,
                                 const char **email);

/** Imports rows as they come: COPY into a temporary table, then one INSERT
 *  that keeps the first row of each e-mail and skips e-mails already
 *  taken, in one transaction. `*created` is the number of rows inserted. */
int user_store_import(perfc_pg_pool *pg, user_store_row_fn next,
                      void *user_data, int64_t *created);

#endif
