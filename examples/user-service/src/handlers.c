/*
 * handlers.c — user.v1.UserService: validation, then the store, then the
 * status the API promises. Transport, metrics, executors and connection
 * handling are the runtime's; caching GetUser and invalidating after
 * UpdateUser and DeleteUser is the generated wiring's (user.proto's
 * (perfc.cache)/(perfc.invalidate), registered in main.c), so those
 * handlers only talk to PostgreSQL.
 *
 * Room: examples/user-service.
 */
#include "handlers.h"

#include "user_cache.h"
#include "user_store.h"

#include "perfc/deferred.h"
#include "perfc/log.h"
#include "perfc/stream.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- validation ---------------------------------------------------------- */

/* Code points of valid UTF-8 (protobuf-c has already refused invalid UTF-8
 * in proto3 strings). */
static size_t utf8_len(const char *s) {
  size_t n = 0;
  for (; *s; s++)
    n += ((unsigned char)*s & 0xC0) != 0x80;
  return n;
}

static perfc_status_code check_name(perfc_ctx *ctx, const char *name) {
  if (name == NULL || name[0] == '\0')
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "name: must not be empty");
  if (utf8_len(name) > USER_NAME_MAX)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "name: longer than %d characters", USER_NAME_MAX);
  return PERFC_STATUS_OK;
}

/* A pragmatic address check: one '@', a non-empty local part, a domain with
 * a dot between non-empty labels, no spaces or control characters, at most
 * 320 bytes (RFC 5321's 64 + 1 + 255). Deliverability is not knowable here. */
static int email_ok(const char *e) {
  const char *at = e ? strchr(e, '@') : NULL;
  size_t len = e ? strlen(e) : 0;
  const char *dot;
  if (at == NULL || at == e || strchr(at + 1, '@') != NULL || len > 320 ||
      (size_t)(at - e) > 64)
    return 0;
  for (const char *p = e; *p; p++)
    if ((unsigned char)*p <= ' ' || *p == 0x7f)
      return 0;
  dot = strrchr(at + 1, '.');
  if (dot == NULL || at[1] == '.' || dot[1] == '\0' || strstr(at, "..") != NULL)
    return 0;
  return 1;
}

static perfc_status_code check_email(perfc_ctx *ctx, const char *email) {
  if (!email_ok(email))
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "email: not a valid address");
  return PERFC_STATUS_OK;
}

/* A failed store call (a PERFC_E* code) as the handler's status,
 * perfc_status_from_error()'s. The client gets a message of ours, not the
 * server's (perfc_ctx_fail would send perfc_last_error(), which names
 * tables and constraints): `what` names the object for NOT_FOUND, and a
 * unique violation is always the e-mail (the only unique column a client
 * writes). Anything unexpected is logged with its SQLSTATE. */
static perfc_status_code store_error(perfc_ctx *ctx, int rc, const char *what) {
  perfc_status_code st = perfc_status_from_error(rc);
  switch (rc) {
  case PERFC_ENOENT:
    return perfc_ctx_error(ctx, st, "%s not found", what);
  case PERFC_EEXIST:
    return perfc_ctx_error(ctx, st, "email: already taken");
  case PERFC_EUNAVAILABLE:
    return perfc_ctx_error(ctx, st, "database unavailable");
  default: {
    perfc_error_detail d = perfc_last_error_detail();
    perfc_log(PERFC_LOG_WARN, "%s: database error %s %s: %s",
              perfc_ctx_method(ctx), perfc_err_name(rc), d.sqlstate, d.message);
    return perfc_ctx_error(ctx, st, "database error");
  }
  }
}

/* ---- page tokens --------------------------------------------------------- */

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* The last id of a page as 8 big-endian bytes in unpadded base64url (11
 * characters): opaque to clients, so the encoding may change later. */
static char *token_encode(perfc_ctx *ctx, int64_t id) {
  uint8_t b[9] = {0};
  char *out = perfc_ctx_alloc(ctx, 12);
  uint64_t v = (uint64_t)id;
  if (out == NULL)
    return NULL;
  for (int i = 7; i >= 0; i--, v >>= 8)
    b[i] = (uint8_t)v;
  for (int i = 0, o = 0; i < 9; i += 3) {
    uint32_t w = (uint32_t)b[i] << 16 | (uint32_t)b[i + 1] << 8 | b[i + 2];
    out[o++] = b64[w >> 18 & 63];
    out[o++] = b64[w >> 12 & 63];
    out[o++] = b64[w >> 6 & 63];
    if (o < 11)
      out[o++] = b64[w & 63];
  }
  out[11] = '\0';
  return out;
}

static int token_decode(const char *t, int64_t *id) {
  uint64_t bits = 0;
  if (strlen(t) != 11)
    return -1;
  /* 66 bits of characters for 64 bits of id: the last two must be zero. */
  for (int i = 0; i < 11; i++) {
    const char *p = strchr(b64, t[i]);
    if (p == NULL || t[i] == '\0')
      return -1;
    unsigned d = (unsigned)(p - b64);
    if (i == 10) {
      if (d & 3)
        return -1;
      bits = bits << 4 | d >> 2;
    } else {
      bits = bits << 6 | d;
    }
  }
  *id = (int64_t)bits;
  return *id > 0 ? 0 : -1;
}

/* ---- handlers ------------------------------------------------------------ */

static perfc_status_code create_user(perfc_ctx *ctx,
                                     const User__V1__CreateUserRequest *req,
                                     User__V1__User *resp, void *ud) {
  user_service *svc = ud;
  perfc_status_code st = check_name(ctx, req->name);
  if (st == PERFC_STATUS_OK)
    st = check_email(ctx, req->email);
  if (st != PERFC_STATUS_OK)
    return st;
  int rc = user_store_create(svc->pg, req->name, req->email,
                             perfc_ctx_arena(ctx), resp);
  if (rc != 0)
    return store_error(ctx, rc, "user");
  /* A GetUser for this id before it existed may have cached "not found";
   * the id comes from the database, so no (perfc.invalidate) key can name
   * it. */
  user_cache_invalidate(svc->cache, resp->id);
  return PERFC_STATUS_OK;
}

/* The load behind GetUser's cache: called only on a miss in L1 and Redis
 * (once per key at a time); NOT_FOUND is cached as "not found" for the
 * option's negative_ttl. */
static perfc_status_code get_user(perfc_ctx *ctx,
                                  const User__V1__GetUserRequest *req,
                                  User__V1__User *resp, void *ud) {
  user_service *svc = ud;
  int rc;
  /* Ids are identity values from 1: no query for ids that cannot exist. */
  if (req->id <= 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "user not found");
  if ((rc = user_store_get(svc->pg, req->id, perfc_ctx_arena(ctx), resp)) != 0)
    return store_error(ctx, rc, "user");
  return PERFC_STATUS_OK;
}

static perfc_status_code update_user(perfc_ctx *ctx,
                                     const User__V1__UpdateUserRequest *req,
                                     User__V1__User *resp, void *ud) {
  user_service *svc = ud;
  const User__V1__User *u = req->user;
  const char *name = NULL, *email = NULL;
  perfc_status_code st = PERFC_STATUS_OK;
  size_t npaths = req->update_mask ? req->update_mask->n_paths : 0;
  if (u == NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "user: required");
  if (u->id <= 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "user not found");
  /* An empty mask means every updatable field, as AIP-134 suggests. */
  if (npaths == 0) {
    name = u->name;
    email = u->email;
  }
  for (size_t i = 0; i < npaths; i++) {
    const char *p = req->update_mask->paths[i];
    if (strcmp(p, "name") == 0)
      name = u->name;
    else if (strcmp(p, "email") == 0)
      email = u->email;
    else
      return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                             "update_mask: path '%s' cannot be updated "
                             "(only name, email)",
                             p);
  }
  if (name != NULL)
    st = check_name(ctx, name);
  if (st == PERFC_STATUS_OK && email != NULL)
    st = check_email(ctx, email);
  if (st != PERFC_STATUS_OK)
    return st;
  int rc = user_store_update(svc->pg, u->id, name, email, perfc_ctx_arena(ctx),
                             resp);
  if (rc != 0)
    return store_error(ctx, rc, "user");
  return PERFC_STATUS_OK;
}

static perfc_status_code delete_user(perfc_ctx *ctx,
                                     const User__V1__DeleteUserRequest *req,
                                     Google__Protobuf__Empty *resp, void *ud) {
  user_service *svc = ud;
  int rc;
  (void)resp;
  if (req->id <= 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "user not found");
  if ((rc = user_store_delete(svc->pg, req->id)) != 0)
    return store_error(ctx, rc, "user");
  return PERFC_STATUS_OK;
}

/* ListUsers' request as a page: the size and the id after which it
 * starts. */
static perfc_status_code list_args(perfc_ctx *ctx,
                                   const User__V1__ListUsersRequest *req,
                                   int *size, int64_t *after) {
  *size = req->page_size <= 0              ? USER_PAGE_DEFAULT
          : req->page_size > USER_PAGE_MAX ? USER_PAGE_MAX
                                           : req->page_size;
  *after = 0;
  if (req->page_token != NULL && req->page_token[0] != '\0' &&
      token_decode(req->page_token, after) != 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "page_token: not a token from ListUsers");
  return PERFC_STATUS_OK;
}

/* The page from up to size + 1 rows: the extra row only says that another
 * page follows. */
static perfc_status_code list_page(perfc_ctx *ctx, User__V1__User **users,
                                   size_t n, int size,
                                   User__V1__ListUsersResponse *resp) {
  if (n > (size_t)size) {
    n = (size_t)size;
    resp->next_page_token = token_encode(ctx, users[n - 1]->id);
  }
  resp->users = users;
  resp->n_users = n;
  return PERFC_STATUS_OK;
}

static perfc_status_code list_users(perfc_ctx *ctx,
                                    const User__V1__ListUsersRequest *req,
                                    User__V1__ListUsersResponse *resp,
                                    void *ud) {
  user_service *svc = ud;
  int size;
  int64_t after;
  User__V1__User **users = NULL;
  size_t n = 0;
  perfc_status_code st = list_args(ctx, req, &size, &after);
  if (st != PERFC_STATUS_OK)
    return st;
  /* One row more than the page tells whether another page follows. */
  int rc = user_store_list(svc->pg, after, size + 1, perfc_ctx_arena(ctx),
                           &users, &n);
  if (rc != 0)
    return store_error(ctx, rc, "user");
  return list_page(ctx, users, n, size, resp);
}

static perfc_status_code
batch_get_users(perfc_ctx *ctx, const User__V1__BatchGetUsersRequest *req,
                User__V1__BatchGetUsersResponse *resp, void *ud) {
  user_service *svc = ud;
  User__V1__User **found;
  char msg[128];
  size_t n = 0;
  perfc_status_code st;
  if (req->n_ids > USER_BATCH_MAX)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "ids: at most %d per call", USER_BATCH_MAX);
  if (req->n_ids == 0)
    return PERFC_STATUS_OK;
  found = perfc_ctx_alloc(ctx, req->n_ids * sizeof *found);
  if (found == NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                           "out of memory");
  st = user_cache_get_many(svc->cache, svc->pg, req->ids, req->n_ids,
                           perfc_ctx_arena(ctx), found, msg, sizeof msg);
  if (st != PERFC_STATUS_OK)
    return perfc_ctx_error(ctx, st, "%s", msg);
  /* Request order, missing ids left out: compact in place. */
  for (size_t i = 0; i < req->n_ids; i++)
    if (found[i] != NULL)
      found[n++] = found[i];
  resp->users = found;
  resp->n_users = n;
  return PERFC_STATUS_OK;
}

/* Rows per query while streaming: large enough to amortise the round trip,
 * small enough that memory stays flat whatever the table size. */
#define STREAM_PAGE 500

static perfc_status_code stream_users(perfc_ctx *ctx,
                                      const User__V1__ListUsersRequest *req,
                                      perfc_stream *writer, void *ud) {
  user_service *svc = ud;
  perfc_arena *page = NULL;
  int64_t after = 0;
  perfc_status_code st = PERFC_STATUS_OK;
  (void)req;
  if (perfc_arena_new(&page, 64 * 1024) != 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                           "out of memory");
  for (;;) {
    User__V1__User **users = NULL;
    size_t n = 0;
    perfc_arena_reset(page);
    int rc = user_store_list(svc->pg, after, STREAM_PAGE, page, &users, &n);
    if (rc != 0) {
      st = store_error(ctx, rc, "user");
      break;
    }
    for (size_t i = 0; i < n; i++)
      if (user__v1__user_service__stream_users__send(writer, users[i]) != 0) {
        st = perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "stream ended");
        break;
      }
    if (st != PERFC_STATUS_OK || n < STREAM_PAGE)
      break;
    after = users[n - 1]->id;
  }
  perfc_arena_free(page);
  return st;
}

typedef struct import_state {
  perfc_ctx *ctx;
  perfc_stream *reader;
  int64_t received;
  int64_t invalid;
  int stream_failed; /* the client's stream broke: report that, not SQL */
} import_state;

/* Feeds the COPY: skips (and counts) invalid rows, stops at the end of the
 * client's stream. */
static int import_next(void *ud, const char **name, const char **email) {
  import_state *s = ud;
  for (;;) {
    User__V1__CreateUserRequest *r = NULL;
    int rc = user__v1__user_service__import_users__recv(s->reader, &r);
    if (rc < 0) {
      s->stream_failed = 1;
      return -1;
    }
    if (rc == 0 || r == NULL) /* 1 always comes with a message */
      return 0;
    s->received++;
    if (r->name[0] == '\0' || utf8_len(r->name) > USER_NAME_MAX ||
        !email_ok(r->email)) {
      s->invalid++;
      continue;
    }
    *name = r->name;
    *email = r->email;
    return 1;
  }
}

static perfc_status_code import_users(perfc_ctx *ctx, perfc_stream *reader,
                                      User__V1__ImportUsersResponse *resp,
                                      void *ud) {
  user_service *svc = ud;
  import_state s = {ctx, reader, 0, 0, 0};
  int64_t created = 0;
  int rc = user_store_import(svc->pg, import_next, &s, &created);
  /* The row source aborted because the client's stream broke: that is the
   * call's outcome (CANCELLED), whatever the rollback said. */
  if (s.stream_failed)
    return perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED,
                           "import stream ended early: nothing "
                           "was imported");
  if (rc != 0)
    return store_error(ctx, rc, "user");
  /* Every row received and not created was invalid or a duplicate (of an
   * earlier row or of an existing user). */
  resp->created = created;
  resp->failed = s.received - created;
  return PERFC_STATUS_OK;
}

static perfc_status_code sync_users(perfc_ctx *ctx, perfc_stream *stream,
                                    void *ud) {
  user_service *svc = ud;
  perfc_arena *scratch = NULL;
  perfc_status_code st = PERFC_STATUS_OK;
  if (perfc_arena_new(&scratch, 4096) != 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                           "out of memory");
  for (;;) {
    User__V1__GetUserRequest *r = NULL;
    User__V1__User *u = NULL;
    char msg[128];
    int rc = user__v1__user_service__sync_users__recv(stream, &r);
    if (rc < 0) {
      st = perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "stream ended");
      break;
    }
    if (rc == 0 || r == NULL) /* 1 always comes with a message */
      break;
    if (r->id <= 0)
      continue;
    /* The same entries as GetUser; the scratch arena keeps a long stream
     * from growing the call's arena. */
    perfc_arena_reset(scratch);
    st = user_cache_get_many(svc->cache, svc->pg, &r->id, 1, scratch, &u, msg,
                             sizeof msg);
    if (st != PERFC_STATUS_OK) {
      st = perfc_ctx_error(ctx, st, "%s", msg);
      break;
    }
    if (u == NULL)
      continue; /* unknown ids are skipped, as documented */
    if (user__v1__user_service__sync_users__send(stream, u) != 0) {
      st = perfc_ctx_error(ctx, PERFC_STATUS_CANCELLED, "stream ended");
      break;
    }
  }
  perfc_arena_free(scratch);
  return st;
}

/* ---- the reads on the event loop (h2) ------------------------------------
 *
 * The same reads, written for the loop: a handler defers its call
 * (perfc/deferred.h), sends its query through perfc/pg_async.h (pipelined
 * with the other calls' queries of the loop iteration) and returns; the
 * query's callback, on the same loop, fills the response and finishes the
 * call. No worker thread is involved and none waits. */

/* GetUser's load on a miss in L1 and Redis, for the call that leads the
 * key's load (the others share its result). */
typedef struct get_op {
  perfc_ctx *ctx;
  User__V1__User *resp;
  perfc_cache_rpc_load *load;
} get_op;

static void get_user_loaded(int rc, const perfc_pg_result *r, void *arg) {
  get_op *op = arg;
  if (rc == 0)
    rc = user_store_row_to_user(r, 0, perfc_ctx_arena(op->ctx), op->resp);
  perfc_cache_rpc_load_done(op->load, rc == 0
                                          ? PERFC_STATUS_OK
                                          : store_error(op->ctx, rc, "user"));
}

static perfc_status_code get_user_load(perfc_ctx *ctx,
                                       const User__V1__GetUserRequest *req,
                                       User__V1__User *resp,
                                       perfc_cache_rpc_load *load, void *ud) {
  user_service *svc = ud;
  perfc_pg_param p[1];
  perfc_pg_query q;
  if (req->id <= 0)
    return perfc_ctx_error(ctx, PERFC_STATUS_NOT_FOUND, "user not found");
  get_op *op = perfc_ctx_alloc(ctx, sizeof *op);
  if (op == NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                           "out of memory");
  *op = (get_op){ctx, resp, load};
  user_store_get_query(&q, p, req->id);
  int rc = perfc_pg_async_query(svc->pga, &q, get_user_loaded, op);
  return rc == 0 ? PERFC_STATUS_OK : store_error(ctx, rc, "user");
}

typedef struct list_op {
  perfc_deferred *d;
  int size;
  User__V1__ListUsersResponse *resp;
} list_op;

static void list_users_loaded(int rc, const perfc_pg_result *r, void *arg) {
  list_op *op = arg;
  perfc_ctx *ctx = perfc_deferred_ctx(op->d);
  User__V1__User **users = NULL;
  size_t n = 0;
  if (rc == 0)
    rc = user_store_users_from_result(r, perfc_ctx_arena(ctx), &users, &n);
  perfc_deferred_finish(op->d, rc != 0 ? store_error(ctx, rc, "user")
                                       : list_page(ctx, users, n, op->size,
                                                   op->resp));
}

static perfc_status_code list_users_on_loop(
    perfc_ctx *ctx, const User__V1__ListUsersRequest *req,
    User__V1__ListUsersResponse *resp, void *ud) {
  user_service *svc = ud;
  int64_t after;
  perfc_pg_param p[2];
  perfc_pg_query q;
  list_op *op = perfc_ctx_alloc(ctx, sizeof *op);
  if (op == NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                           "out of memory");
  perfc_status_code st = list_args(ctx, req, &op->size, &after);
  if (st != PERFC_STATUS_OK)
    return st;
  if ((op->d = perfc_call_defer(ctx)) == NULL)
    return perfc_ctx_fail(ctx, perfc_last_error_detail().code);
  op->resp = resp;
  user_store_list_query(&q, p, after, op->size + 1);
  int rc = perfc_pg_async_query(svc->pga, &q, list_users_loaded, op);
  if (rc != 0)
    perfc_deferred_finish(op->d, store_error(ctx, rc, "user"));
  return PERFC_STATUS_OK; /* ignored: the call is deferred */
}

/* BatchGetUsers: one cache lookup per id on the loop
 * (perfc_cache_get_or_load_async: L1, a pipelined GET, and for misses a
 * single-flight load through user_get), the call finished by the last
 * answer. */
typedef struct batch_op {
  perfc_deferred *d;
  User__V1__BatchGetUsersResponse *resp;
  User__V1__User **found; /* request order, NULL: no such user */
  size_t n, pending;
  int rc; /* the first failure */
} batch_op;

typedef struct batch_slot {
  batch_op *op;
  size_t i;
} batch_slot;

static void batch_end(batch_op *op) {
  perfc_ctx *ctx = perfc_deferred_ctx(op->d);
  size_t n = 0;
  if (op->rc != 0) {
    perfc_deferred_finish(op->d, store_error(ctx, op->rc, "user"));
    return;
  }
  /* Request order, missing ids left out: compact in place. */
  for (size_t i = 0; i < op->n; i++)
    if (op->found[i] != NULL)
      op->found[n++] = op->found[i];
  op->resp->users = op->found;
  op->resp->n_users = n;
  perfc_deferred_finish(op->d, PERFC_STATUS_OK);
}

static void batch_got(int rc, const uint8_t *val, size_t len, void *arg) {
  batch_slot *slot = arg;
  batch_op *op = slot->op;
  if (rc == 0) {
    ProtobufCAllocator a = perfc_arena_allocator(
        perfc_ctx_arena(perfc_deferred_ctx(op->d)));
    op->found[slot->i] = user__v1__user__unpack(&a, len, val);
    if (op->found[slot->i] == NULL && op->rc == 0)
      op->rc = PERFC_EPARSE;
  } else if (rc != PERFC_ENOENT && op->rc == 0) {
    op->rc = rc;
  }
  if (--op->pending == 0)
    batch_end(op);
}

/* perfc_pg_async_fn for one id's load: the packed row into the cache. */
static void batch_row_loaded(int rc, const perfc_pg_result *r, void *arg) {
  uint8_t *v = NULL;
  size_t len = 0;
  if (rc == 0)
    rc = user_store_row_to_packed(r, 0, &v, &len);
  perfc_cache_load_done(arg, rc, v, len);
}

/* perfc_cache_async_loader_fn: "user:<id>" through user_get. */
static int batch_load(const char *key, perfc_cache_load *load, void *ud) {
  user_service *svc = ud;
  perfc_pg_param p[1];
  perfc_pg_query q;
  char *end = NULL;
  long long id = strtoll(key + 5, &end, 10);
  if (strncmp(key, "user:", 5) != 0 || end == NULL || *end != '\0')
    return PERFC_EINVAL;
  user_store_get_query(&q, p, id);
  return perfc_pg_async_query(svc->pga, &q, batch_row_loaded, load);
}

static perfc_status_code batch_get_users_on_loop(
    perfc_ctx *ctx, const User__V1__BatchGetUsersRequest *req,
    User__V1__BatchGetUsersResponse *resp, void *ud) {
  user_service *svc = ud;
  batch_op *op;
  batch_slot *slots;
  if (req->n_ids > USER_BATCH_MAX)
    return perfc_ctx_error(ctx, PERFC_STATUS_INVALID_ARGUMENT,
                           "ids: at most %d per call", USER_BATCH_MAX);
  if (req->n_ids == 0)
    return PERFC_STATUS_OK;
  op = perfc_ctx_alloc(ctx, sizeof *op);
  slots = perfc_ctx_alloc(ctx, req->n_ids * sizeof *slots);
  if (op == NULL || slots == NULL ||
      (op->found = perfc_ctx_alloc(ctx, req->n_ids * sizeof *op->found)) ==
          NULL)
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                           "out of memory");
  if ((op->d = perfc_call_defer(ctx)) == NULL)
    return perfc_ctx_fail(ctx, perfc_last_error_detail().code);
  /* A cache whose Redis has no client on the loops: the blocking handler,
   * on the pool. */
  if (svc->cache == NULL || !perfc_cache_async_usable(svc->cache)) {
    if (perfc_deferred_run_handler(op->d) != 0)
      perfc_deferred_finish(op->d, perfc_ctx_fail(ctx, PERFC_ESTATE));
    return PERFC_STATUS_OK;
  }
  op->resp = resp;
  op->n = req->n_ids;
  op->rc = 0;
  /* One more than the lookups: answers that come at once (L1 hits) must
   * not end the call before every lookup started. */
  op->pending = req->n_ids + 1;
  for (size_t i = 0; i < req->n_ids; i++) {
    char *key = perfc_arena_sprintf(perfc_ctx_arena(ctx), "user:%lld",
                                    (long long)req->ids[i]);
    op->found[i] = NULL;
    slots[i] = (batch_slot){op, i};
    int rc = key == NULL ? PERFC_ENOMEM
                         : perfc_cache_get_or_load_async(svc->cache, key, 0, 0,
                                                         batch_load, svc,
                                                         batch_got, &slots[i]);
    if (rc != 0) {
      if (op->rc == 0)
        op->rc = rc;
      op->pending--;
    }
  }
  if (--op->pending == 0)
    batch_end(op);
  return PERFC_STATUS_OK; /* ignored: the call is deferred */
}

/* SyncUsers as loop callbacks (perfc/stream.h): each id is one cache
 * lookup on the loop, answered in order. While a lookup (or a send the
 * stream's flow control held back) is pending, the next message is refused
 * with PERFC_EFULL and delivered again by perfc_stream_resume() once it is
 * done. The state is malloc'd: a lookup may still be running when the
 * client cancels the stream and the call's arena is gone. */
typedef struct sync_state {
  user_service *svc;
  perfc_stream *s;
  perfc_arena *scratch;      /* the user being sent */
  User__V1__User *unsent;    /* held back by flow control */
  unsigned lookups;          /* running: each will call sync_got() */
  unsigned depth;            /* callbacks of ours on the stack */
  int busy, refused, half_closed;
  int over; /* finished or cancelled: the stream is not ours any more */
} sync_state;

/* Every entry (a stream callback, a lookup's answer) begins with
 * sync_enter() and ends with sync_leave(), which frees the state once the
 * stream is over and no lookup will answer any more; never while a
 * callback of ours (perfc_stream_resume() re-enters on_message) still
 * runs. */
static void sync_enter(sync_state *st) { st->depth++; }

static void sync_leave(sync_state *st) {
  if (--st->depth == 0 && st->over && st->lookups == 0) {
    perfc_arena_free(st->scratch);
    free(st);
  }
}

static void sync_end(sync_state *st, perfc_status_code code) {
  st->over = 1;
  perfc_stream_finish(st->s, code);
}

/* After a lookup or a send: the next message, or the end. */
static void sync_next(sync_state *st) {
  if (st->over || st->busy || st->unsent != NULL)
    return;
  if (st->refused) {
    st->refused = 0;
    perfc_stream_resume(st->s); /* delivers the kept message again */
    return;
  }
  if (st->half_closed)
    sync_end(st, PERFC_STATUS_OK);
}

static void sync_send(sync_state *st, User__V1__User *u) {
  int rc = user__v1__user_service__sync_users__send(st->s, u);
  st->unsent = rc == PERFC_EFULL ? u : NULL; /* on_writable sends it */
  if (rc != 0 && rc != PERFC_EFULL)
    sync_end(st, perfc_ctx_error(perfc_stream_ctx(st->s),
                                 PERFC_STATUS_CANCELLED, "stream ended"));
}

static void sync_got(int rc, const uint8_t *val, size_t len, void *arg) {
  sync_state *st = arg;
  sync_enter(st);
  st->lookups--;
  st->busy = 0;
  if (!st->over) {
    if (rc == 0) {
      ProtobufCAllocator a;
      perfc_arena_reset(st->scratch);
      a = perfc_arena_allocator(st->scratch);
      User__V1__User *u = user__v1__user__unpack(&a, len, val);
      if (u == NULL)
        sync_end(st, store_error(perfc_stream_ctx(st->s), PERFC_EPARSE, "user"));
      else
        sync_send(st, u);
    } else if (rc != PERFC_ENOENT) { /* unknown ids are skipped */
      sync_end(st, store_error(perfc_stream_ctx(st->s), rc, "user"));
    }
  }
  sync_next(st);
  sync_leave(st);
}

static perfc_status_code sync_start(perfc_ctx *ctx, perfc_stream *s,
                                    const ProtobufCMessage *req,
                                    ProtobufCMessage *resp, void **state) {
  sync_state *st = calloc(1, sizeof *st);
  (void)req;
  (void)resp;
  if (st == NULL || perfc_arena_new(&st->scratch, 4096) != 0) {
    free(st);
    return perfc_ctx_error(ctx, PERFC_STATUS_RESOURCE_EXHAUSTED,
                           "out of memory");
  }
  st->svc = *state; /* the registration's user_data */
  st->s = s;
  *state = st;
  return PERFC_STATUS_OK;
}

static int sync_message(perfc_stream *s, const ProtobufCMessage *m,
                        void *state) {
  sync_state *st = state;
  const User__V1__GetUserRequest *r = (const User__V1__GetUserRequest *)m;
  char key[32];
  int taken = 0;
  (void)s;
  sync_enter(st);
  if (!st->over && (st->busy || st->unsent != NULL)) {
    st->refused = 1; /* kept; sync_next() resumes */
    taken = PERFC_EFULL;
  } else if (!st->over && r->id > 0) {
    snprintf(key, sizeof key, "user:%lld", (long long)r->id);
    st->busy = 1;
    st->lookups++;
    int rc = perfc_cache_get_or_load_async(st->svc->cache, key, 0, 0,
                                           batch_load, st->svc, sync_got, st);
    if (rc != 0) {
      st->busy = 0;
      st->lookups--;
      sync_end(st, store_error(perfc_stream_ctx(st->s), rc, "user"));
    }
  }
  sync_leave(st);
  return taken;
}

static void sync_half_close(perfc_stream *s, void *state) {
  sync_state *st = state;
  (void)s;
  sync_enter(st);
  st->half_closed = 1;
  sync_next(st);
  sync_leave(st);
}

static void sync_writable(perfc_stream *s, void *state) {
  sync_state *st = state;
  (void)s;
  sync_enter(st);
  if (st->unsent != NULL)
    sync_send(st, st->unsent);
  sync_next(st);
  sync_leave(st);
}

static void sync_cancel(perfc_stream *s, void *state) {
  sync_state *st = state;
  (void)s;
  sync_enter(st);
  st->over = 1;
  sync_leave(st);
}

int user_service_sync_users_on_loop(perfc_server *srv, user_service *svc) {
  static const perfc_stream_callbacks cb = {
      .on_start = sync_start,
      .on_message = sync_message,
      .on_half_close = sync_half_close,
      .on_writable = sync_writable,
      .on_cancel = sync_cancel,
  };
  return perfc_server_set_stream_callbacks(
      srv, "/user.v1.UserService/SyncUsers", &cb, svc);
}

const User__V1__UserService_AsyncHandlers user_service_async_handlers = {
    .get_user = get_user_load,
    .list_users = list_users_on_loop,
    .batch_get_users = batch_get_users_on_loop,
};

const User__V1__UserService_Handlers user_service_handlers = {
    .create_user = create_user,
    .get_user = get_user,
    .update_user = update_user,
    .delete_user = delete_user,
    .list_users = list_users,
    .batch_get_users = batch_get_users,
    .stream_users = stream_users,
    .import_users = import_users,
    .sync_users = sync_users,
};
