/* test_auth.c — runtime/src/guard/auth.c's interceptor on a real server: missing,
 * malformed and bad tokens get UNAUTHENTICATED, a valid token without the
 * method's claim PERMISSION_DENIED, public methods need nothing, rule
 * precedence, the handler sees the verified claims, and no token or secret
 * reaches the log sink (captured at debug level). */
#include "empty_service.h"
#include "test_transport.h" /* test_server_new: both transports */
#include "jwt_tokens.h"

#include <criterion/criterion.h>
#include <pthread.h>
#include <string.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static char log_text[65536];
static size_t log_len;
static char seen_sub[128];
static char seen_name[128];

static void sink(perfc_log_level level, const char *msg, void *ud) {
  (void)level;
  (void)ud;
  pthread_mutex_lock(&mu);
  size_t n = strlen(msg);
  if (log_len + n + 2 < sizeof log_text) {
    memcpy(log_text + log_len, msg, n);
    log_len += n;
    log_text[log_len++] = '\n';
    log_text[log_len] = '\0';
  }
  pthread_mutex_unlock(&mu);
}

/* Records what the handler saw of the claims. */
static perfc_status_code who(perfc_ctx *ctx, void *ud) {
  (void)ud;
  const perfc_jwt_claims *c = perfc_auth_claims(ctx);
  pthread_mutex_lock(&mu);
  snprintf(seen_sub, sizeof seen_sub, "%s", c && c->sub ? c->sub : "(none)");
  const char *name = perfc_jwt_claim_str(c, "name");
  snprintf(seen_name, sizeof seen_name, "%s", name ? name : "(none)");
  pthread_mutex_unlock(&mu);
  return PERFC_STATUS_OK;
}

/* What the handler recorded, read under the same lock it wrote with: the
 * handler runs on a server thread. */
static const char *seen(const char *which) {
  static char copy[128];
  pthread_mutex_lock(&mu);
  snprintf(copy, sizeof copy, "%s", which[0] == 's' ? seen_sub : seen_name);
  pthread_mutex_unlock(&mu);
  return copy;
}

static const perfc_method_desc auth_methods[] = {
    {.name = "Open",
     .path = "/t.v1.Auth/Open",
     .kind = PERFC_METHOD_UNARY,
     .input = EMPTY_MSG,
     .output = EMPTY_MSG,
     .invoke = empty_invoke},
    {.name = "Read",
     .path = "/t.v1.Auth/Read",
     .kind = PERFC_METHOD_UNARY,
     .input = EMPTY_MSG,
     .output = EMPTY_MSG,
     .invoke = empty_invoke},
    {.name = "Admin",
     .path = "/t.v1.Auth/Admin",
     .kind = PERFC_METHOD_UNARY,
     .input = EMPTY_MSG,
     .output = EMPTY_MSG,
     .invoke = empty_invoke},
    {.name = "Write",
     .path = "/t.v1.Auth/Write",
     .kind = PERFC_METHOD_UNARY,
     .input = EMPTY_MSG,
     .output = EMPTY_MSG,
     .invoke = empty_invoke},
};
static const perfc_service_desc auth_svc = {
    .name = "t.v1.Auth", .n_methods = 4, .methods = auth_methods};
static const empty_handlers who_impl = {who};

static perfc_server *srv;
static perfc_channel *ch;
static perfc_auth *auth;
static EVP_PKEY *rsa_key;

static void start(void) {
  perfc_log_set_sink(sink, NULL);
  perfc_log_set_level(PERFC_LOG_DEBUG);
  perfc_log_set_format(PERFC_LOG_LOGFMT);
  rsa_key = EVP_RSA_gen(2048);
  char *pem = pubkey_pem(rsa_key);
  perfc_auth_rule rules[] = {
      {.method = "/t.v1.Auth/Open", .is_public = 1},
      {.method = "/t.v1.Auth/Admin", .claim = "roles", .value = "admin"},
      {.method = "/t.v1.Auth/*", .claim = "scope", .value = "read"},
      {.method = "*", .claim = "scope", .value = "never"},
      /* Read falls to the service wildcard; Write has its own rule. */
      {.method = "/t.v1.Auth/Write", .claim = "scope", .value = "write"},
  };
  perfc_auth_opts o;
  perfc_auth_opts_init(&o);
  o.hs256_secret = (const uint8_t *)test_secret;
  o.hs256_secret_len = strlen(test_secret);
  o.rs256_public_key_pem = pem;
  o.issuer = "perfc-test";
  o.audience = "t.v1.Auth";
  o.rules = rules;
  o.rule_count = sizeof rules / sizeof *rules;
  cr_assert_eq(perfc_auth_new(&auth, &o), 0);
  free(pem);
  int port;
  cr_assert_eq(test_server_new(&srv, NULL), 0);
  cr_assert_eq(perfc_server_listen(srv, "127.0.0.1:0", &port), 0);
  cr_assert_eq(perfc_server_add_service(srv, &auth_svc, &who_impl, NULL), 0);
  cr_assert_eq(perfc_access_log_attach(PERFC_LOG_INFO, srv), 0);
  cr_assert_eq(perfc_auth_attach(auth, srv), 0);
  cr_assert_eq(perfc_server_start(srv), 0);
  char target[64];
  snprintf(target, sizeof target, "127.0.0.1:%d", port);
  cr_assert_eq(perfc_channel_new(&ch, target, NULL), 0);
}

static void stop(void) {
  perfc_channel_free(ch);
  perfc_server_free(srv);
  perfc_auth_free(auth);
  EVP_PKEY_free(rsa_key);
  perfc_log_set_sink(NULL, NULL);
  perfc_log_set_level(PERFC_LOG_INFO);
}

/* Calls method `i` with `authorization` (NULL: none). */
static perfc_status_code call(int i, const char *authorization) {
  perfc_metadata md[] = {{"authorization", authorization, 0}};
  perfc_call_opts opts = {.metadata = md,
                          .metadata_count = authorization ? 1 : 0};
  Google__Protobuf__Empty req = GOOGLE__PROTOBUF__EMPTY__INIT;
  ProtobufCMessage *resp = NULL;
  perfc_status_code c =
      perfc_channel_unary(ch, &auth_methods[i], &req.base, &resp, &opts, NULL);
  if (resp != NULL)
    protobuf_c_message_free_unpacked(resp, NULL);
  return c;
}

static char *bearer(const char *tok) {
  char *b = malloc(strlen(tok) + 8);
  sprintf(b, "Bearer %s", tok);
  return b;
}

#define GOOD ",\"iss\":\"perfc-test\",\"aud\":[\"x\",\"t.v1.Auth\"]"

enum { OPEN, READ, ADMIN, WRITE };

Test(auth, missing_and_bad_tokens_unauthenticated, .init = start,
     .fini = stop) {
  cr_assert_eq(call(READ, NULL), PERFC_STATUS_UNAUTHENTICATED);
  cr_assert_eq(call(READ, "Basic dXNlcjpwYXNz"), PERFC_STATUS_UNAUTHENTICATED);
  cr_assert_eq(call(READ, "Bearer"), PERFC_STATUS_UNAUTHENTICATED);
  cr_assert_eq(call(READ, "Bearer not.a.jwt"), PERFC_STATUS_UNAUTHENTICATED);
  char *t = jwt_hs256(claims_now(GOOD ",\"scope\":\"read\""));
  char *b = bearer(t);
  b[strlen(b) - 3] ^= 1; /* break the signature */
  cr_assert_eq(call(READ, b), PERFC_STATUS_UNAUTHENTICATED);
  free(b);
  free(t);
  t = jwt_hs256(claims_now(",\"iss\":\"perfc-test\",\"scope\":\"read\""));
  b = bearer(t);
  cr_assert_eq(call(READ, b), PERFC_STATUS_UNAUTHENTICATED, "no audience");
  free(b);
  free(t);
  t = jwt_hs256("{\"exp\":1000,\"iss\":\"perfc-test\",\"aud\":\"t.v1.Auth\"}");
  b = bearer(t);
  cr_assert_eq(call(READ, b), PERFC_STATUS_UNAUTHENTICATED, "expired");
  free(b);
  free(t);
}

Test(auth, rules_and_claims_in_handler, .init = start, .fini = stop) {
  cr_assert_eq(call(OPEN, NULL), PERFC_STATUS_OK, "public method");
  cr_assert_str_eq(seen("sub"), "(none)");
  cr_assert_eq(call(OPEN, "Bearer garbage"), PERFC_STATUS_OK,
               "a public method does not read the token");

  char *t = jwt_hs256(claims_now(GOOD ",\"scope\":\"read\",\"name\":\"Ann\""));
  char *b = bearer(t);
  cr_assert_eq(call(READ, b), PERFC_STATUS_OK);
  cr_assert_str_eq(seen("sub"), "user-42");
  cr_assert_str_eq(seen("name"), "Ann");
  cr_assert_eq(call(ADMIN, b), PERFC_STATUS_PERMISSION_DENIED, "no role");
  cr_assert_eq(call(WRITE, b), PERFC_STATUS_PERMISSION_DENIED,
               "exact rule beats the wildcard");
  free(b);
  free(t);

  t = jwt_rs("{\"alg\":\"RS256\",\"typ\":\"JWT\"}",
             claims_now(GOOD ",\"roles\":[\"ops\",\"admin\"],"
                             "\"scope\":\"write\""),
             rsa_key);
  b = bearer(t);
  cr_assert_eq(call(ADMIN, b), PERFC_STATUS_OK, "RS256 token with the role");
  cr_assert_eq(call(WRITE, b), PERFC_STATUS_OK);
  cr_assert_eq(call(READ, b), PERFC_STATUS_PERMISSION_DENIED);
  free(b);
  /* The scheme name is case-insensitive (RFC 7235). */
  b = malloc(strlen(t) + 8);
  sprintf(b, "bearer %s", t);
  cr_assert_eq(call(ADMIN, b), PERFC_STATUS_OK);
  free(b);
  free(t);
}

Test(auth, tokens_and_secrets_never_logged, .init = start, .fini = stop) {
  char *good = jwt_hs256(claims_now(GOOD ",\"scope\":\"read\""));
  char *bad = jwt_hs256(claims_now(GOOD ",\"scope\":\"read\""));
  /* Another valid base64url character in the signature, so the token is
   * well formed and fails only its signature check. (Flipping a bit could
   * yield '@', '`' or ',', which made the reason "malformed token" about
   * one run in five.) */
  char *c = &bad[strlen(bad) - 2];
  *c = *c == 'A' ? 'B' : 'A';
  char *b1 = bearer(good), *b2 = bearer(bad);
  cr_assert_eq(call(READ, b1), PERFC_STATUS_OK);
  cr_assert_eq(call(ADMIN, b1), PERFC_STATUS_PERMISSION_DENIED);
  cr_assert_eq(call(READ, b2), PERFC_STATUS_UNAUTHENTICATED);
  cr_assert_eq(call(READ, NULL), PERFC_STATUS_UNAUTHENTICATED);
  perfc_channel_free(ch);
  ch = NULL;
  perfc_server_free(srv);
  srv = NULL;

  pthread_mutex_lock(&mu);
  cr_assert(strstr(log_text, "auth: unauthenticated") != NULL, "%s", log_text);
  cr_assert(strstr(log_text, "reason=\"bad signature\"") != NULL, "%s",
            log_text);
  cr_assert(strstr(log_text, "auth: permission denied") != NULL, "%s",
            log_text);
  cr_assert_null(strstr(log_text, test_secret));
  /* Not the token, nor any of its three parts on its own. */
  const char *toks[] = {good, bad};
  for (int i = 0; i < 2; i++) {
    char part[4096];
    const char *p = toks[i];
    while (*p) {
      size_t n = strcspn(p, ".");
      snprintf(part, sizeof part, "%.*s", (int)n, p);
      cr_assert_null(strstr(log_text, part), "token part %s logged", part);
      p += n + (p[n] == '.');
    }
  }
  cr_assert_null(strstr(log_text, "user-42"), "claim values stay out too");
  pthread_mutex_unlock(&mu);
  free(b1);
  free(b2);
  free(good);
  free(bad);
}

Test(auth, claims_outside_a_call_and_bad_args) {
  cr_assert_null(perfc_auth_claims(NULL));
  cr_assert_eq(perfc_auth_attach(NULL, NULL), PERFC_EINVAL);
  cr_assert_null(perfc_jwt_claim_str(NULL, "sub"));
  cr_assert_eq(perfc_jwt_claim_has(NULL, "a", "b"), 0);
}
