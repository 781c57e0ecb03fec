/*
 * user_cli.c — a command-line client of user.v1.UserService on the
 * generated stubs.
 *
 *   user-cli [--target TARGET] [--lb POLICY] [--timeout MS] COMMAND ...
 *     create NAME EMAIL
 *     get ID
 *     update ID [--name NAME] [--email EMAIL]   (neither: both, from the
 *                                                current values)
 *     delete ID
 *     list [--page-size N] [--page-token T] [--all]
 *     import FILE.csv|-        rows "name,email"; a "name,email" header
 *                              line is skipped; streamed as read
 *
 * TARGET is anything grpc resolves: HOST:PORT (default 127.0.0.1:50051),
 * dns:///NAME:PORT, or ipv4:A:P1,B:P2 for a fixed list of replicas; with
 * --lb round_robin calls are spread over every address instead of
 * sticking to the first (pick_first, grpc's default).
 *
 * Prints one line per user: id, name, email, create and update time (UTC).
 * Exit status 0 on success, 1 when the call fails (the status is printed as
 * "error: CODE: message"), 2 on a usage error.
 *
 * Room: examples/user-service.
 */
#include "user/v1/user.perfc.h"

#include "perfc.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage[] =
    "usage: user-cli [--target TARGET] [--lb pick_first|round_robin]\n"
    "                [--timeout MS] COMMAND ...\n"
    "  create NAME EMAIL\n"
    "  get ID\n"
    "  update ID [--name NAME] [--email EMAIL]\n"
    "  delete ID\n"
    "  list [--page-size N] [--page-token T] [--all]\n"
    "  import FILE.csv|-    (rows: name,email)\n";

static int usage_error(const char *why) {
  fprintf(stderr, "user-cli: %s\n%s", why, usage);
  return 2;
}

static int parse_id(const char *s, int64_t *id) {
  char *end = NULL;
  errno = 0;
  *id = strtoll(s, &end, 10);
  return errno == 0 && end != s && *end == '\0' ? 0 : -1;
}

static void fmt_ts(const Google__Protobuf__Timestamp *ts, char out[32]) {
  struct tm tm;
  time_t t;
  if (ts == NULL) {
    snprintf(out, 32, "-");
    return;
  }
  t = (time_t)ts->seconds;
  gmtime_r(&t, &tm);
  strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void print_user(const User__V1__User *u) {
  char c[32], m[32];
  fmt_ts(u->create_time, c);
  fmt_ts(u->update_time, m);
  printf("id=%" PRId64 " name=\"%s\" email=%s created=%s updated=%s\n", u->id,
         u->name, u->email, c, m);
}

static int failed(perfc_status *st) {
  fprintf(stderr, "error: %s: %s\n", perfc_status_name((int)st->code),
          st->message ? st->message : "");
  perfc_status_reset(st);
  return 1;
}

static int cmd_create(perfc_channel *ch, const perfc_call_opts *co, int argc,
                      char **argv) {
  User__V1__CreateUserRequest req = USER__V1__CREATE_USER_REQUEST__INIT;
  User__V1__User *u = NULL;
  perfc_status st = {0};
  if (argc != 2)
    return usage_error("create takes NAME EMAIL");
  req.name = argv[0];
  req.email = argv[1];
  if (user__v1__user_service__create_user__call(ch, &req, &u, co, &st) !=
      PERFC_STATUS_OK)
    return failed(&st);
  print_user(u);
  protobuf_c_message_free_unpacked(&u->base, NULL);
  perfc_status_reset(&st);
  return 0;
}

static int cmd_get(perfc_channel *ch, const perfc_call_opts *co, int argc,
                   char **argv) {
  User__V1__GetUserRequest req = USER__V1__GET_USER_REQUEST__INIT;
  User__V1__User *u = NULL;
  perfc_status st = {0};
  if (argc != 1 || parse_id(argv[0], &req.id) != 0)
    return usage_error("get takes one numeric ID");
  if (user__v1__user_service__get_user__call(ch, &req, &u, co, &st) !=
      PERFC_STATUS_OK)
    return failed(&st);
  print_user(u);
  protobuf_c_message_free_unpacked(&u->base, NULL);
  perfc_status_reset(&st);
  return 0;
}

static int cmd_update(perfc_channel *ch, const perfc_call_opts *co, int argc,
                      char **argv) {
  User__V1__UpdateUserRequest req = USER__V1__UPDATE_USER_REQUEST__INIT;
  User__V1__User user = USER__V1__USER__INIT;
  Google__Protobuf__FieldMask mask = GOOGLE__PROTOBUF__FIELD_MASK__INIT;
  char *paths[2];
  User__V1__User *u = NULL;
  perfc_status st = {0};
  if (argc < 1 || parse_id(argv[0], &user.id) != 0)
    return usage_error("update takes a numeric ID");
  for (int i = 1; i < argc; i += 2) {
    if (i + 1 >= argc)
      return usage_error("update: option without a value");
    if (strcmp(argv[i], "--name") == 0) {
      user.name = argv[i + 1];
      paths[mask.n_paths++] = "name";
    } else if (strcmp(argv[i], "--email") == 0) {
      user.email = argv[i + 1];
      paths[mask.n_paths++] = "email";
    } else {
      return usage_error("update: unknown option");
    }
    if (mask.n_paths > 2)
      return usage_error("update: --name and --email at most once each");
  }
  if (mask.n_paths == 0)
    return usage_error("update needs --name and/or --email");
  mask.paths = paths;
  req.user = &user;
  req.update_mask = &mask;
  if (user__v1__user_service__update_user__call(ch, &req, &u, co, &st) !=
      PERFC_STATUS_OK)
    return failed(&st);
  print_user(u);
  protobuf_c_message_free_unpacked(&u->base, NULL);
  perfc_status_reset(&st);
  return 0;
}

static int cmd_delete(perfc_channel *ch, const perfc_call_opts *co, int argc,
                      char **argv) {
  User__V1__DeleteUserRequest req = USER__V1__DELETE_USER_REQUEST__INIT;
  Google__Protobuf__Empty *e = NULL;
  perfc_status st = {0};
  if (argc != 1 || parse_id(argv[0], &req.id) != 0)
    return usage_error("delete takes one numeric ID");
  if (user__v1__user_service__delete_user__call(ch, &req, &e, co, &st) !=
      PERFC_STATUS_OK)
    return failed(&st);
  printf("deleted %" PRId64 "\n", req.id);
  protobuf_c_message_free_unpacked(&e->base, NULL);
  perfc_status_reset(&st);
  return 0;
}

static int cmd_list(perfc_channel *ch, const perfc_call_opts *co, int argc,
                    char **argv) {
  User__V1__ListUsersRequest req = USER__V1__LIST_USERS_REQUEST__INIT;
  char *token = NULL;
  int all = 0, rc = 0;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--all") == 0)
      all = 1;
    else if (strcmp(argv[i], "--page-size") == 0 && i + 1 < argc)
      req.page_size = atoi(argv[++i]);
    else if (strcmp(argv[i], "--page-token") == 0 && i + 1 < argc) {
      free(token);
      token = strdup(argv[++i]);
    } else {
      free(token);
      return usage_error("list: unknown option");
    }
  }
  do {
    User__V1__ListUsersResponse *r = NULL;
    perfc_status st = {0};
    req.page_token = token ? token : "";
    if (user__v1__user_service__list_users__call(ch, &req, &r, co, &st) !=
        PERFC_STATUS_OK) {
      rc = failed(&st);
      break;
    }
    for (size_t i = 0; i < r->n_users; i++)
      print_user(r->users[i]);
    free(token);
    token = r->next_page_token[0] ? strdup(r->next_page_token) : NULL;
    if (!all && token)
      printf("next_page_token=%s\n", token);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    perfc_status_reset(&st);
  } while (all && token != NULL);
  free(token);
  return rc;
}

/* Splits "name,email" in place; a name may be quoted ("Doe, Jane") with ""
 * for a quote inside. Returns 0 or -1 for a malformed line. */
static int split_csv(char *line, char **name, char **email) {
  char *p = line, *w;
  if (*p == '"') {
    *name = w = ++p;
    for (;;) {
      if (*p == '\0')
        return -1;
      if (*p == '"' && p[1] == '"') {
        *w++ = '"';
        p += 2;
      } else if (*p == '"') {
        p++;
        break;
      } else {
        *w++ = *p++;
      }
    }
    *w = '\0';
    if (*p != ',')
      return -1;
    *email = p + 1;
    return 0;
  }
  w = strchr(p, ',');
  if (w == NULL)
    return -1;
  *w = '\0';
  *name = p;
  *email = w + 1;
  return 0;
}

static int cmd_import(perfc_channel *ch, const perfc_call_opts *co, int argc,
                      char **argv) {
  FILE *f;
  perfc_client_stream *s = NULL;
  User__V1__ImportUsersResponse *r = NULL;
  perfc_status st = {0};
  char *line = NULL;
  size_t cap = 0;
  long lineno = 0, skipped = 0;
  ssize_t len;
  int rc;
  if (argc != 1)
    return usage_error("import takes one CSV file (or -)");
  f = strcmp(argv[0], "-") == 0 ? stdin : fopen(argv[0], "r");
  if (f == NULL) {
    fprintf(stderr, "user-cli: cannot open %s: %s\n", argv[0], strerror(errno));
    return 1;
  }
  rc = user__v1__user_service__import_users__open(ch, co, &s);
  /* Each row is sent as it is read, so a large file never sits in memory;
   * a write that fails means the call ended, and finish says why. */
  while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
    User__V1__CreateUserRequest req = USER__V1__CREATE_USER_REQUEST__INIT;
    char *name, *email;
    lineno++;
    while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      line[--len] = '\0';
    if (len == 0)
      continue;
    if (lineno == 1 && strcmp(line, "name,email") == 0)
      continue;
    if (split_csv(line, &name, &email) != 0) {
      /* Still sent, as an empty row, so the server counts it as failed
       * and the totals add up to the rows of the file. */
      fprintf(stderr, "user-cli: line %ld: not name,email\n", lineno);
      name = email = "";
      skipped++;
    }
    req.name = name;
    req.email = email;
    rc = user__v1__user_service__import_users__write(s, &req);
  }
  free(line);
  if (f != stdin)
    fclose(f);
  if (s == NULL) {
    fprintf(stderr, "user-cli: cannot open the stream: %s\n",
            perfc_strerror(rc));
    return 1;
  }
  if (user__v1__user_service__import_users__finish(s, &r, &st) !=
      PERFC_STATUS_OK) {
    perfc_client_stream_free(s);
    return failed(&st);
  }
  printf("imported: created=%" PRId64 " failed=%" PRId64 "\n", r->created,
         r->failed);
  (void)skipped;
  perfc_client_stream_free(s);
  perfc_status_reset(&st);
  return 0;
}

int main(int argc, char **argv) {
  const char *target = "127.0.0.1:50051";
  perfc_call_opts co = {0};
  perfc_channel_opts chopts;
  perfc_channel *ch = NULL;
  int i = 1, rc;
  co.timeout_ms = 10000;
  perfc_channel_opts_init(&chopts);
  for (; i < argc && strncmp(argv[i], "--", 2) == 0; i++) {
    if (strcmp(argv[i], "--help") == 0) {
      fputs(usage, stdout);
      return 0;
    }
    if (i + 1 >= argc)
      return usage_error("option without a value");
    if (strcmp(argv[i], "--target") == 0)
      target = argv[++i];
    else if (strcmp(argv[i], "--lb") == 0)
      chopts.lb_policy = argv[++i];
    else if (strcmp(argv[i], "--timeout") == 0)
      co.timeout_ms = atoi(argv[++i]);
    else
      return usage_error("unknown option");
  }
  if (i >= argc)
    return usage_error("no command");
  rc = perfc_channel_new(&ch, target, &chopts);
  if (rc != 0) {
    fprintf(stderr, "user-cli: cannot make a channel to %s: %s\n", target,
            perfc_strerror(rc));
    return 1;
  }
  {
    const char *cmd = argv[i];
    int n = argc - i - 1;
    char **args = argv + i + 1;
    if (strcmp(cmd, "create") == 0)
      rc = cmd_create(ch, &co, n, args);
    else if (strcmp(cmd, "get") == 0)
      rc = cmd_get(ch, &co, n, args);
    else if (strcmp(cmd, "update") == 0)
      rc = cmd_update(ch, &co, n, args);
    else if (strcmp(cmd, "delete") == 0)
      rc = cmd_delete(ch, &co, n, args);
    else if (strcmp(cmd, "list") == 0)
      rc = cmd_list(ch, &co, n, args);
    else if (strcmp(cmd, "import") == 0)
      rc = cmd_import(ch, &co, n, args);
    else
      rc = usage_error("unknown command");
  }
  perfc_channel_free(ch);
  return rc;
}
