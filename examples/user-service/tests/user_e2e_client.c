/*
 * user_e2e_client.c — checks every user.v1.UserService method and error
 * through perfc's generated C stubs against a running user-service.
 *
 *   user-e2e-client HOST:PORT
 *
 * Prints one line per failed check and exits 1 if any failed. Run by
 * test_user_service.py (which starts the servers); e-mails carry the pid
 * so repeated runs against one database do not collide.
 *
 * Room: examples/user-service/tests.
 */
#include "user/v1/user.perfc.h"

#include "perfc.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failures;
static perfc_channel *ch;
static perfc_call_opts co = {.timeout_ms = 10000};

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      failures++;                                                              \
      printf("FAIL %s:%d: ", __FILE__, __LINE__);                              \
      printf(__VA_ARGS__);                                                     \
      printf("\n");                                                            \
    }                                                                          \
  } while (0)

static char *email(const char *who) {
  static char buf[8][96];
  static int i;
  char *b = buf[i++ % 8];
  snprintf(b, 96, "%s.%d@example.com", who, (int)getpid());
  return b;
}

/* CreateUser; returns the new id or 0, and the code in *code. */
static int64_t create(const char *name, const char *mail,
                      perfc_status_code *code, char **msg) {
  User__V1__CreateUserRequest req = USER__V1__CREATE_USER_REQUEST__INIT;
  User__V1__User *u = NULL;
  perfc_status st = {0};
  int64_t id = 0;
  req.name = (char *)name;
  req.email = (char *)mail;
  *code = user__v1__user_service__create_user__call(ch, &req, &u, &co, &st);
  if (u != NULL) {
    id = u->id;
    protobuf_c_message_free_unpacked(&u->base, NULL);
  }
  if (msg != NULL)
    *msg = st.message ? strdup(st.message) : strdup("");
  perfc_status_reset(&st);
  return id;
}

static perfc_status_code get(int64_t id, User__V1__User **u) {
  User__V1__GetUserRequest req = USER__V1__GET_USER_REQUEST__INIT;
  perfc_status st = {0};
  perfc_status_code c;
  req.id = id;
  c = user__v1__user_service__get_user__call(ch, &req, u, &co, &st);
  perfc_status_reset(&st);
  return c;
}

static void check_errors(void) {
  perfc_status_code c;
  char *msg = NULL;
  char longname[102];
  memset(longname, 'x', 101);
  longname[101] = '\0';
  create("", email("e1"), &c, &msg);
  CHECK(c == PERFC_STATUS_INVALID_ARGUMENT && strncmp(msg, "name", 4) == 0,
        "empty name: %s %s", perfc_status_name((int)c), msg);
  free(msg);
  create(longname, email("e2"), &c, &msg);
  CHECK(c == PERFC_STATUS_INVALID_ARGUMENT && strncmp(msg, "name", 4) == 0,
        "long name: %s %s", perfc_status_name((int)c), msg);
  free(msg);
  create("N", "no-at-sign", &c, &msg);
  CHECK(c == PERFC_STATUS_INVALID_ARGUMENT && strncmp(msg, "email", 5) == 0,
        "bad email: %s %s", perfc_status_name((int)c), msg);
  free(msg);
  create("First", email("dup"), &c, NULL);
  CHECK(c == PERFC_STATUS_OK, "create: %s", perfc_status_name((int)c));
  create("Second", email("dup"), &c, NULL);
  CHECK(c == PERFC_STATUS_ALREADY_EXISTS, "duplicate: %s",
        perfc_status_name((int)c));
  {
    User__V1__User *u = NULL;
    c = get(INT64_MAX, &u);
    CHECK(c == PERFC_STATUS_NOT_FOUND && u == NULL, "unknown id: %s",
          perfc_status_name((int)c));
  }
}

static void check_crud_and_batch(void) {
  perfc_status_code c;
  int64_t a = create("Alpha", email("alpha"), &c, NULL);
  int64_t b = create("Beta", email("beta"), &c, NULL);
  User__V1__User *u = NULL;
  CHECK(a > 0 && b > a, "ids %" PRId64 " %" PRId64, a, b);
  c = get(a, &u);
  CHECK(c == PERFC_STATUS_OK && u && strcmp(u->name, "Alpha") == 0 &&
            u->create_time && u->create_time->seconds > 1600000000,
        "get: %s", perfc_status_name((int)c));
  if (u)
    protobuf_c_message_free_unpacked(&u->base, NULL);
  {
    User__V1__UpdateUserRequest req = USER__V1__UPDATE_USER_REQUEST__INIT;
    User__V1__User user = USER__V1__USER__INIT;
    Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
    char *paths[1] = {"name"};
    perfc_status st = {0};
    user.id = a;
    user.name = "Alpha 2";
    user.email = "ignored@example.com";
    mask.paths = paths;
    mask.n_paths = 1;
    req.user = &user;
    req.update_mask = &mask;
    u = NULL;
    c = user__v1__user_service__update_user__call(ch, &req, &u, &co, &st);
    CHECK(c == PERFC_STATUS_OK && u && strcmp(u->name, "Alpha 2") == 0 &&
              strcmp(u->email, email("alpha")) == 0,
          "update: %s", perfc_status_name((int)c));
    if (u)
      protobuf_c_message_free_unpacked(&u->base, NULL);
    perfc_status_reset(&st);
    u = NULL;
    c = get(a, &u);
    CHECK(c == PERFC_STATUS_OK && u && strcmp(u->name, "Alpha 2") == 0,
          "get after update (invalidated)");
    if (u)
      protobuf_c_message_free_unpacked(&u->base, NULL);
  }
  {
    User__V1__BatchGetUsersRequest req =
        USER__V1__BATCH_GET_USERS_REQUEST__INIT;
    User__V1__BatchGetUsersResponse *r = NULL;
    int64_t ids[3] = {b, INT64_MAX, a};
    perfc_status st = {0};
    req.ids = ids;
    req.n_ids = 3;
    c = user__v1__user_service__batch_get_users__call(ch, &req, &r, &co, &st);
    CHECK(c == PERFC_STATUS_OK && r && r->n_users == 2 &&
              r->users[0]->id == b && r->users[1]->id == a,
          "batch get order");
    if (r)
      protobuf_c_message_free_unpacked(&r->base, NULL);
    perfc_status_reset(&st);
  }
  {
    User__V1__DeleteUserRequest req = USER__V1__DELETE_USER_REQUEST__INIT;
    Google__Protobuf__Empty *e = NULL;
    perfc_status st = {0};
    req.id = b;
    c = user__v1__user_service__delete_user__call(ch, &req, &e, &co, &st);
    CHECK(c == PERFC_STATUS_OK, "delete: %s", perfc_status_name((int)c));
    if (e)
      protobuf_c_message_free_unpacked(&e->base, NULL);
    perfc_status_reset(&st);
    c = user__v1__user_service__delete_user__call(ch, &req, &e, &co, &st);
    CHECK(c == PERFC_STATUS_NOT_FOUND, "delete twice: %s",
          perfc_status_name((int)c));
    perfc_status_reset(&st);
    u = NULL;
    c = get(b, &u);
    CHECK(c == PERFC_STATUS_NOT_FOUND, "get after delete: %s",
          perfc_status_name((int)c));
  }
}

static void check_streams(void) {
  perfc_client_stream *s = NULL;
  perfc_status st = {0};
  perfc_status_code c;
  User__V1__ImportUsersResponse *ir = NULL;
  int64_t last = 0, n = 0;
  /* ImportUsers: 3 new, one duplicate of an earlier row, one invalid. */
  const char *rows[5][2] = {{"I1", email("imp1")},
                            {"I2", email("imp2")},
                            {"I1 again", email("imp1")},
                            {"", email("imp4")},
                            {"I3", email("imp3")}};
  int rc = user__v1__user_service__import_users__open(ch, &co, &s);
  CHECK(rc == 0, "import open: %d", rc);
  for (int i = 0; rc == 0 && i < 5; i++) {
    User__V1__CreateUserRequest req = USER__V1__CREATE_USER_REQUEST__INIT;
    req.name = (char *)rows[i][0];
    req.email = (char *)rows[i][1];
    rc = user__v1__user_service__import_users__write(s, &req);
  }
  c = user__v1__user_service__import_users__finish(s, &ir, &st);
  CHECK(c == PERFC_STATUS_OK && ir && ir->created == 3 && ir->failed == 2,
        "import: %s created=%" PRId64 " failed=%" PRId64,
        perfc_status_name((int)c), ir ? ir->created : -1, ir ? ir->failed : -1);
  perfc_client_stream_free(s);
  perfc_status_reset(&st);

  /* StreamUsers: strictly increasing ids, as many as ListUsers pages. */
  {
    User__V1__ListUsersRequest req = USER__V1__LIST_USERS_REQUEST__INIT;
    User__V1__User *u = NULL;
    s = NULL;
    rc = user__v1__user_service__stream_users__open(ch, &req, &co, &s);
    while (rc == 0 && user__v1__user_service__stream_users__read(s, &u) == 1) {
      CHECK(u->id > last, "stream order %" PRId64 " after %" PRId64, u->id,
            last);
      last = u->id;
      n++;
    }
    c = user__v1__user_service__stream_users__finish(s, &st);
    CHECK(c == PERFC_STATUS_OK && n >= 3, "stream: %s n=%" PRId64,
          perfc_status_name((int)c), n);
    perfc_client_stream_free(s);
    perfc_status_reset(&st);
  }

  /* SyncUsers: the last streamed id, an unknown one (skipped), again. */
  {
    int64_t ids[3] = {last, INT64_MAX, last};
    User__V1__User *u = NULL;
    int got = 0;
    s = NULL;
    rc = user__v1__user_service__sync_users__open(ch, &co, &s);
    for (int i = 0; rc == 0 && i < 3; i++) {
      User__V1__GetUserRequest req = USER__V1__GET_USER_REQUEST__INIT;
      req.id = ids[i];
      rc = user__v1__user_service__sync_users__write(s, &req);
    }
    perfc_client_stream_close_send(s);
    while (user__v1__user_service__sync_users__read(s, &u) == 1) {
      CHECK(u->id == last, "sync id %" PRId64, u->id);
      got++;
    }
    c = user__v1__user_service__sync_users__finish(s, &st);
    CHECK(c == PERFC_STATUS_OK && got == 2, "sync: %s got=%d",
          perfc_status_name((int)c), got);
    perfc_client_stream_free(s);
    perfc_status_reset(&st);
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: user-e2e-client HOST:PORT\n");
    return 2;
  }
  if (perfc_channel_new(&ch, argv[1], NULL) != 0) {
    fprintf(stderr, "cannot make a channel to %s\n", argv[1]);
    return 2;
  }
  check_errors();
  check_crud_and_batch();
  check_streams();
  perfc_channel_free(ch);
  printf("%s: %d failure(s)\n", argv[0], failures);
  return failures ? 1 : 0;
}
