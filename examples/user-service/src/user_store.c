/*
 * user_store.c — the users table through the perfc/pg.h pool.
 *
 * Room: examples/user-service. Every statement is a constant with $n
 * parameters and, where it is run more than once per connection, a name so
 * the pool prepares it once per connection.
 */
#include "user_store.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Timestamps travel as microseconds since the epoch: exact (numeric
 * arithmetic in PostgreSQL 14+) and independent of the session's DateStyle
 * and time zone, unlike the text form of timestamptz. */
#define USER_COLS                                                              \
  "id, name, email, (extract(epoch FROM create_time) * 1000000)::int8, "       \
  "(extract(epoch FROM update_time) * 1000000)::int8"

static void set_ts(Google__Protobuf__Timestamp *ts, int64_t us) {
  /* Floor division, so instants before 1970 get a non-negative nanos as
   * the Timestamp contract demands. */
  int64_t s = us / 1000000, rem = us % 1000000;
  if (rem < 0) {
    s -= 1;
    rem += 1000000;
  }
  ts->seconds = s;
  ts->nanos = (int32_t)(rem * 1000);
}

/* Row `row` of `r` (columns USER_COLS) into `u`, strings and timestamps in
 * `arena`. */
int user_store_row_to_user(const perfc_pg_result *r, size_t row,
                           perfc_arena *arena, User__V1__User *u) {
  int64_t id = 0, c_us = 0, u_us = 0;
  Google__Protobuf__Timestamp *ct, *ut;
  user__v1__user__init(u);
  ct = perfc_arena_alloc(arena, sizeof *ct);
  ut = perfc_arena_alloc(arena, sizeof *ut);
  if (ct == NULL || ut == NULL)
    goto oom;
  google__protobuf__timestamp__init(ct);
  google__protobuf__timestamp__init(ut);
  if (perfc_pg_result_int64(r, row, 0, &id) != 0 ||
      perfc_pg_result_int64(r, row, 3, &c_us) != 0 ||
      perfc_pg_result_int64(r, row, 4, &u_us) != 0) {
    return perfc_error_set(PERFC_EINTERNAL, NULL, -1, "unexpected users row");
  }
  u->id = id;
  u->name = perfc_pg_result_strdup(r, row, 1, arena);
  u->email = perfc_pg_result_strdup(r, row, 2, arena);
  if (u->name == NULL || u->email == NULL)
    goto oom;
  set_ts(ct, c_us);
  set_ts(ut, u_us);
  u->create_time = ct;
  u->update_time = ut;
  return 0;
oom:
  return perfc_error_set(PERFC_ENOMEM, NULL, -1, "out of memory");
}

/* Row `row` packed into a malloc'd buffer, through a scratch arena. */
int user_store_row_to_packed(const perfc_pg_result *r, size_t row,
                             uint8_t **out, size_t *out_len) {
  perfc_arena *arena = NULL;
  User__V1__User u;
  int st;
  if (perfc_arena_new(&arena, 512) != 0)
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "out of memory");
  st = user_store_row_to_user(r, row, arena, &u);
  if (st == 0) {
    size_t n = user__v1__user__get_packed_size(&u);
    /* One spare byte: malloc(0) may return NULL for an empty message. */
    *out = malloc(n + 1);
    if (*out == NULL) {
      st = perfc_error_set(PERFC_ENOMEM, NULL, -1, "out of memory");
    } else {
      *out_len = user__v1__user__pack(&u, *out);
    }
  }
  perfc_arena_free(arena);
  return st;
}

int user_store_get_many_packed(perfc_pg_pool *pg, const int64_t *ids, size_t n,
                               perfc_cache_value *out) {
  /* The ids travel as one int8[] parameter in its text form ("{1,2,3}"):
   * one prepared statement for any batch size. */
  size_t cap = 3 + n * 21;
  char *arr = malloc(cap);
  size_t len = 0;
  perfc_pg_result *r = NULL;
  int st;
  if (arr == NULL)
    return perfc_error_set(PERFC_ENOMEM, NULL, -1, "out of memory");
  arr[len++] = '{';
  for (size_t i = 0; i < n; i++)
    len += (size_t)snprintf(arr + len, cap - len, "%s%" PRId64, i ? "," : "",
                            ids[i]);
  arr[len++] = '}';
  arr[len] = '\0';
  {
    perfc_pg_param p[1] = {perfc_pg_text(arr)};
    perfc_pg_query q = {.name = "user_get_many",
                        .sql = "SELECT " USER_COLS
                               " FROM users WHERE id = ANY($1::int8[])",
                        .params = p,
                        .nparams = 1,
                        .flags = PERFC_PG_READ};
    st = perfc_pg_exec(pg, &q, &r);
  }
  free(arr);
  for (size_t row = 0; st == 0 && row < perfc_pg_result_rows(r); row++) {
    int64_t id = 0;
    perfc_pg_result_int64(r, row, 0, &id);
    for (size_t i = 0; i < n && st == 0; i++) {
      /* A repeated id gets the row in each of its slots. */
      if (ids[i] != id || out[i].found)
        continue;
      st = user_store_row_to_packed(r, row, &out[i].data, &out[i].len);
      out[i].found = st == 0;
    }
  }
  perfc_pg_result_free(r);
  return st;
}

/* Runs a statement that returns exactly one users row into `out`. */
static int one_user(perfc_pg_pool *pg, const perfc_pg_query *q,
                    perfc_arena *arena, User__V1__User *out) {
  perfc_pg_result *r = NULL;
  int st = perfc_pg_exec(pg, q, &r);
  if (st == 0)
    st = user_store_row_to_user(r, 0, arena, out);
  perfc_pg_result_free(r);
  return st;
}

void user_store_get_query(perfc_pg_query *q, perfc_pg_param p[1], int64_t id) {
  p[0] = perfc_pg_int64(id);
  *q = (perfc_pg_query){.name = "user_get",
                        .sql = "SELECT " USER_COLS " FROM users WHERE id = $1",
                        .params = p,
                        .nparams = 1,
                        .flags = PERFC_PG_READ | PERFC_PG_ONE};
}

int user_store_get(perfc_pg_pool *pg, int64_t id, perfc_arena *arena,
                   User__V1__User *out) {
  perfc_pg_param p[1];
  perfc_pg_query q;
  user_store_get_query(&q, p, id);
  return one_user(pg, &q, arena, out);
}

int user_store_create(perfc_pg_pool *pg, const char *name, const char *email,
                      perfc_arena *arena, User__V1__User *out) {
  perfc_pg_param p[2] = {perfc_pg_textn(name, strlen(name)),
                         perfc_pg_textn(email, strlen(email))};
  perfc_pg_query q = {.name = "user_create",
                      .sql = "INSERT INTO users (name, email) VALUES ($1, $2) "
                             "RETURNING " USER_COLS,
                      .params = p,
                      .nparams = 2,
                      .flags = PERFC_PG_ONE};
  return one_user(pg, &q, arena, out);
}

int user_store_update(perfc_pg_pool *pg, int64_t id, const char *name,
                      const char *email, perfc_arena *arena,
                      User__V1__User *out) {
  perfc_pg_param p[3] = {
      perfc_pg_int64(id),
      name ? perfc_pg_textn(name, strlen(name)) : perfc_pg_null(),
      email ? perfc_pg_textn(email, strlen(email)) : perfc_pg_null()};
  /* NULL keeps a column, so one prepared statement serves every mask. */
  perfc_pg_query q = {.name = "user_update",
                      .sql =
                          "UPDATE users SET name = COALESCE($2::text, name), "
                          "email = COALESCE($3::text, email) WHERE id = $1 "
                          "RETURNING " USER_COLS,
                      .params = p,
                      .nparams = 3,
                      .flags = PERFC_PG_ONE};
  return one_user(pg, &q, arena, out);
}

int user_store_delete(perfc_pg_pool *pg, int64_t id) {
  perfc_pg_param p[1] = {perfc_pg_int64(id)};
  perfc_pg_query q = {.name = "user_delete",
                      .sql = "DELETE FROM users WHERE id = $1 RETURNING id",
                      .params = p,
                      .nparams = 1,
                      .flags = PERFC_PG_ONE};
  return perfc_pg_exec(pg, &q, NULL);
}

void user_store_list_query(perfc_pg_query *q, perfc_pg_param p[2],
                           int64_t after_id, int limit) {
  p[0] = perfc_pg_int64(after_id);
  p[1] = perfc_pg_int64(limit);
  *q = (perfc_pg_query){.name = "user_list",
                        .sql = "SELECT " USER_COLS " FROM users WHERE id > $1 "
                               "ORDER BY id LIMIT $2",
                        .params = p,
                        .nparams = 2,
                        .flags = PERFC_PG_READ};
}

int user_store_users_from_result(const perfc_pg_result *r, perfc_arena *arena,
                                 User__V1__User ***users, size_t *n) {
  size_t rows = perfc_pg_result_rows(r);
  int st = 0;
  *users = NULL;
  *n = 0;
  if (rows > 0) {
    User__V1__User **arr = perfc_arena_alloc(arena, rows * sizeof *arr);
    User__V1__User *us = perfc_arena_alloc(arena, rows * sizeof *us);
    if (arr == NULL || us == NULL)
      return perfc_error_set(PERFC_ENOMEM, NULL, -1, "out of memory");
    for (size_t i = 0; st == 0 && i < rows; i++) {
      st = user_store_row_to_user(r, i, arena, &us[i]);
      arr[i] = &us[i];
    }
    if (st == 0) {
      *users = arr;
      *n = rows;
    }
  }
  return st;
}

int user_store_list(perfc_pg_pool *pg, int64_t after_id, int limit,
                    perfc_arena *arena, User__V1__User ***users, size_t *n) {
  perfc_pg_param p[2];
  perfc_pg_query q;
  perfc_pg_result *r = NULL;
  user_store_list_query(&q, p, after_id, limit);
  int st = perfc_pg_exec(pg, &q, &r);
  *users = NULL;
  *n = 0;
  if (st == 0)
    st = user_store_users_from_result(r, arena, users, n);
  perfc_pg_result_free(r);
  return st;
}

typedef struct import_tx {
  user_store_row_fn next;
  void *user_data;
  int64_t created;
} import_tx;

static int import_body(perfc_pg_conn *conn, void *ud) {
  import_tx *t = ud;
  perfc_pg_query create = {
      .sql = "CREATE TEMP TABLE user_import (ord int8, name text, email text) "
             "ON COMMIT DROP"};
  /* COPY stops at the first constraint violation, so the rows land in a
   * constraint-free temporary table first; the INSERT then keeps the first
   * row of each e-mail (any case) and skips e-mails already taken. Both are
   * unnamed statements: the temporary table is new in every transaction. */
  perfc_pg_query insert = {
      .sql = "INSERT INTO users (name, email) "
             "SELECT name, email FROM (SELECT DISTINCT ON (lower(email)) "
             "ord, name, email FROM user_import ORDER BY lower(email), ord) d "
             "ORDER BY ord ON CONFLICT DO NOTHING"};
  perfc_pg_result *r = NULL;
  int st = perfc_pg_conn_exec(conn, &create, NULL);
  uint64_t copied = 0;
  int64_t ord = 0;
  if (st != 0)
    return st;
  st = perfc_pg_copy_begin(conn,
                           "COPY user_import (ord, name, email) FROM STDIN");
  while (st == 0) {
    const char *name = NULL, *email = NULL;
    char ordbuf[24];
    int rc = t->next(t->user_data, &name, &email);
    if (rc == 0)
      break;
    if (rc < 0) {
      /* End the COPY and fail: perfc_pg_tx() rolls back. */
      perfc_pg_copy_end(conn, NULL);
      return perfc_error_set(PERFC_EABORTED, NULL, -1,
                             "import aborted by the row source");
    }
    snprintf(ordbuf, sizeof ordbuf, "%" PRId64, ord++);
    perfc_slice f[3] = {{(const uint8_t *)ordbuf, strlen(ordbuf)},
                        {(const uint8_t *)name, strlen(name)},
                        {(const uint8_t *)email, strlen(email)}};
    st = perfc_pg_copy_row(conn, f, 3);
  }
  if (st == 0)
    st = perfc_pg_copy_end(conn, &copied);
  if (st == 0 && copied > 0)
    st = perfc_pg_conn_exec(conn, &insert, &r);
  if (st == 0 && r != NULL)
    t->created = (int64_t)perfc_pg_result_affected(r);
  perfc_pg_result_free(r);
  return st;
}

int user_store_import(perfc_pg_pool *pg, user_store_row_fn next,
                      void *user_data, int64_t *created) {
  import_tx t = {next, user_data, 0};
  int st = perfc_pg_tx(pg, import_body, &t);
  *created = st == 0 ? t.created : 0;
  return st;
}
