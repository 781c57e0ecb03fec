/* test_jwt.c — runtime/src/guard/jwt.c and perfc_auth_verify() without a server:
 * base64url and the JSON reader's strictness, HS256 and RS256 signatures,
 * alg none and algorithm confusion, exp/nbf/iat with leeway, iss and aud,
 * claim getters. Tokens are minted here (jwt_tokens.h); jwt.c is compiled
 * into this test so its internal functions can be called. */
#include "guard/auth_internal.h"
#include "jwt_tokens.h"
#include "perfc/log.h"

#include <criterion/criterion.h>
#include <unistd.h>

static perfc_arena *arena;
static EVP_PKEY *rsa_key;   /* signs RS256 tokens */
static EVP_PKEY *other_key; /* a key the verifier does not know */
static char *rsa_pem;

static void setup(void) { cr_assert_eq(perfc_arena_new(&arena, 0), 0); }
static void teardown(void) { perfc_arena_free(arena); }

static void keys(void) {
  setup();
  if (rsa_key == NULL) {
    rsa_key = EVP_RSA_gen(2048);
    other_key = EVP_RSA_gen(2048);
    cr_assert(rsa_key && other_key);
    rsa_pem = pubkey_pem(rsa_key);
  }
}

static perfc_auth *hs_verifier(const char *iss, const char *aud,
                               int64_t leeway_ms) {
  perfc_auth_opts o;
  perfc_auth_opts_init(&o);
  o.hs256_secret = (const uint8_t *)test_secret;
  o.hs256_secret_len = strlen(test_secret);
  o.issuer = iss;
  o.audience = aud;
  o.leeway_ms = leeway_ms;
  perfc_auth *a = NULL;
  cr_assert_eq(perfc_auth_new(&a, &o), 0);
  return a;
}

static perfc_jwt_status verify(perfc_auth *a, const char *tok,
                               const perfc_jwt_claims **c) {
  const perfc_jwt_claims *tmp;
  return perfc_auth_verify(a, tok, strlen(tok), arena, c ? c : &tmp);
}

/* ---- base64url --------------------------------------------------------- */

Test(b64url, decodes_and_is_canonical, .init = setup, .fini = teardown) {
  uint8_t *o;
  size_t n;
  cr_assert_eq(perfc__b64url_decode(arena, "aGVsbG8", 7, &o, &n), 0);
  cr_assert_eq(n, 5);
  cr_assert_str_eq((char *)o, "hello");
  cr_assert_eq(perfc__b64url_decode(arena, "", 0, &o, &n), 0);
  cr_assert_eq(n, 0);
  cr_assert_eq(perfc__b64url_decode(arena, "-_8", 3, &o, &n), 0);
  cr_assert_eq(o[0], 0xfb);
  cr_assert_eq(o[1], 0xff);
  /* padding, the standard alphabet, 4k+1 characters, non-zero tail bits */
  cr_assert_eq(perfc__b64url_decode(arena, "aGVsbG8=", 8, &o, &n), -1);
  cr_assert_eq(perfc__b64url_decode(arena, "+/8", 3, &o, &n), -1);
  cr_assert_eq(perfc__b64url_decode(arena, "aGVsb", 5, &o, &n), -1);
  cr_assert_eq(perfc__b64url_decode(arena, "aGVsbG9", 7, &o, &n), -1);
}

/* ---- JSON -------------------------------------------------------------- */

static perfc_jwt_status js(const char *s, perfc__jobject *o) {
  return perfc__json_object(arena, s, strlen(s), o);
}

Test(json, reads_members, .init = setup, .fini = teardown) {
  perfc__jobject o;
  cr_assert_eq(js(" {\"a\" : \"x\\u00e9\\ud83d\\ude00\\n\", \"n\":-12.5e0,"
                  "\"b\":true,\"z\":null,\"arr\":[\"p\",\"q\"],"
                  "\"obj\":{\"k\":[1,{\"x\":[]}]},\"mix\":[\"s\",1]} ",
                  &o),
               PERFC_JWT_OK);
  cr_assert_eq(o.n, 7);
  const perfc__jmember *m = perfc__json_get(&o, "a");
  cr_assert_str_eq(m->str, "x\xc3\xa9\xf0\x9f\x98\x80\n");
  m = perfc__json_get(&o, "n");
  cr_assert_eq(m->kind, JV_NUMBER);
  cr_assert_eq(m->num_ok, 0); /* an exponent: not a usable date */
  cr_assert_eq(perfc__json_get(&o, "b")->num, 1);
  cr_assert_eq(perfc__json_get(&o, "z")->kind, JV_NULL);
  m = perfc__json_get(&o, "arr");
  cr_assert_eq(m->kind, JV_STR_ARRAY);
  cr_assert_eq(m->n_items, 2);
  cr_assert_str_eq(m->items[1], "q");
  cr_assert_eq(perfc__json_get(&o, "obj")->kind, JV_OTHER);
  cr_assert_eq(perfc__json_get(&o, "mix")->kind, JV_OTHER);
  cr_assert_eq(js("{}", &o), PERFC_JWT_OK);
  cr_assert_eq(o.n, 0);
}

Test(json, is_strict, .init = setup, .fini = teardown) {
  static const char *bad[] = {
      "",
      "[]",
      "{",
      "{\"a\":1,}",
      "{\"a\":1}x",
      "{\"a\":1}{}",
      "{'a':1}",
      "{\"a\":01}",
      "{\"a\":1.}",
      "{\"a\":-}",
      "{\"a\":1e}",
      "{\"a\":tru}",
      "{\"a\":\"\\x\"}",
      "{\"a\":\"\\u12\"}",
      "{\"a\":\"\\u0000\"}",      /* NUL would cut the C string */
      "{\"a\":\"\\udc00\"}",      /* lone low surrogate */
      "{\"a\":\"\\ud800x\"}",     /* high surrogate without its pair */
      "{\"a\":\"\x01\"}",         /* raw control character */
      "{\"a\":\"\xc0\xaf\"}",     /* overlong UTF-8 */
      "{\"a\":\"\xed\xa0\x80\"}", /* UTF-8 encoded surrogate */
      "{\"a\":\"\xff\"}",
      "{\"a\":1,\"a\":2}", /* duplicate names are ambiguous */
      "{\"a\" 1}",
      "{\"a\":[1,]}",
      "{\"a\":{\"b\"}}",
      "{\"a\":\"unterminated}",
      "{a:1}",
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    perfc__jobject o;
    cr_expect_neq(js(bad[i], &o), PERFC_JWT_OK, "accepted: %s", bad[i]);
  }
}

Test(json, limits, .init = setup, .fini = teardown) {
  char deep[256] = "{\"a\":";
  for (int i = 0; i < 40; i++)
    strcat(deep, "[");
  for (int i = 0; i < 40; i++)
    strcat(deep, "]");
  strcat(deep, "}");
  perfc__jobject o;
  cr_assert_eq(js(deep, &o), PERFC_JWT_TOO_LARGE);
  char many[4096] = "{";
  for (int i = 0; i < PERFC_JWT_MAX_CLAIMS + 1; i++)
    sprintf(many + strlen(many), "%s\"k%d\":%d", i ? "," : "", i, i);
  strcat(many, "}");
  cr_assert_eq(js(many, &o), PERFC_JWT_TOO_LARGE);
}

/* ---- HS256 ------------------------------------------------------------- */

Test(hs256, valid_token_and_claims, .init = setup, .fini = teardown) {
  perfc_auth *a = hs_verifier(NULL, NULL, 0);
  char *t = jwt_hs256(claims_now(",\"scope\":\"read write\",\"roles\":"
                                 "[\"admin\",\"ops\"],\"name\":\"Ann\""));
  const perfc_jwt_claims *c = NULL;
  cr_assert_eq(verify(a, t, &c), PERFC_JWT_OK);
  cr_assert_str_eq(c->sub, "user-42");
  cr_assert_str_eq(c->alg, "HS256");
  cr_assert_null(c->kid);
  cr_assert_gt(c->exp, c->iat);
  cr_assert_str_eq(perfc_jwt_claim_str(c, "name"), "Ann");
  cr_assert_null(perfc_jwt_claim_str(c, "roles"));
  cr_assert_null(perfc_jwt_claim_str(c, "missing"));
  cr_assert(perfc_jwt_claim_has(c, "scope", "write"));
  cr_assert(perfc_jwt_claim_has(c, "scope", "read"));
  cr_assert_not(perfc_jwt_claim_has(c, "scope", "rea"));
  cr_assert(perfc_jwt_claim_has(c, "roles", "ops"));
  cr_assert_not(perfc_jwt_claim_has(c, "roles", "root"));
  free(t);
  perfc_auth_free(a);
}

Test(hs256, tampering_and_wrong_key, .init = setup, .fini = teardown) {
  perfc_auth *a = hs_verifier(NULL, NULL, 0);
  char *t = jwt_hs256(claims_now(""));
  /* Flip one signature character. */
  size_t n = strlen(t);
  t[n - 2] = t[n - 2] == 'A' ? 'B' : 'A';
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_BAD_SIGNATURE);
  free(t);
  const char other[] = "another-secret-that-is-32-bytes-long!!";
  t = jwt_hs("{\"alg\":\"HS256\"}", claims_now(""), other, strlen(other));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_BAD_SIGNATURE);
  free(t);
  /* Claims swapped between two validly signed tokens. */
  char *t1 = jwt_hs256(claims_now(""));
  char *t2 = jwt_hs256(claims_now(",\"role\":\"admin\""));
  char mix[8192];
  const char *p1 = strchr(t1, '.'), *s1 = strrchr(t1, '.');
  const char *p2 = strchr(t2, '.'), *s2 = strrchr(t2, '.');
  snprintf(mix, sizeof mix, "%.*s%.*s%s", (int)(p1 - t1), t1, (int)(s2 - p2),
           p2, s1);
  cr_assert_eq(verify(a, mix, NULL), PERFC_JWT_BAD_SIGNATURE);
  (void)s2;
  free(t1);
  free(t2);
  perfc_auth_free(a);
}

Test(hs256, alg_none_and_others_refused, .init = setup, .fini = teardown) {
  perfc_auth *a = hs_verifier(NULL, NULL, 0);
  char buf[4096];
  size_t n = jwt_signing_input(buf, "{\"alg\":\"none\"}", claims_now(""));
  strcpy(buf + n, ".");
  cr_assert_eq(verify(a, buf, NULL), PERFC_JWT_BAD_ALG);
  n = jwt_signing_input(buf, "{\"alg\":\"None\",\"typ\":\"JWT\"}",
                        claims_now(""));
  strcpy(buf + n, ".");
  cr_assert_eq(verify(a, buf, NULL), PERFC_JWT_BAD_ALG);
  char *t = jwt_hs("{\"alg\":\"HS384\"}", claims_now(""), test_secret,
                   strlen(test_secret));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_BAD_ALG);
  free(t);
  t = jwt_hs("{\"typ\":\"JWT\"}", claims_now(""), test_secret,
             strlen(test_secret));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_MALFORMED);
  free(t);
  t = jwt_hs("{\"alg\":\"HS256\",\"crit\":[\"exp\"]}", claims_now(""),
             test_secret, strlen(test_secret));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_MALFORMED);
  free(t);
  t = jwt_hs("{\"alg\":\"HS256\",\"typ\":\"JWE\"}", claims_now(""), test_secret,
             strlen(test_secret));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_MALFORMED);
  free(t);
  t = jwt_hs("{\"alg\":\"HS256\",\"kid\":\"k1\"}", claims_now(""), test_secret,
             strlen(test_secret));
  const perfc_jwt_claims *c;
  cr_assert_eq(verify(a, t, &c), PERFC_JWT_OK);
  cr_assert_str_eq(c->kid, "k1");
  free(t);
  perfc_auth_free(a);
}

Test(hs256, shape_and_size, .init = setup, .fini = teardown) {
  perfc_auth *a = hs_verifier(NULL, NULL, 0);
  cr_assert_eq(verify(a, "", NULL), PERFC_JWT_MALFORMED);
  cr_assert_eq(verify(a, "a.b", NULL), PERFC_JWT_MALFORMED);
  cr_assert_eq(verify(a, "a.b.c.d.e", NULL), PERFC_JWT_MALFORMED);
  cr_assert_eq(verify(a, "..", NULL), PERFC_JWT_MALFORMED);
  char *big = malloc(PERFC_DEFAULT_AUTH_MAX_TOKEN + 2);
  memset(big, 'a', PERFC_DEFAULT_AUTH_MAX_TOKEN + 1);
  big[PERFC_DEFAULT_AUTH_MAX_TOKEN + 1] = '\0';
  cr_assert_eq(verify(a, big, NULL), PERFC_JWT_TOO_LARGE);
  free(big);
  /* Claims that are not JSON, under a valid signature. */
  char *t = jwt_hs("{\"alg\":\"HS256\"}", "{\"exp\":1,}", test_secret,
                   strlen(test_secret));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_MALFORMED);
  free(t);
  t = jwt_hs("{\"alg\":\"HS256\"}", "{\"sub\":1,\"exp\":99999999999}",
             test_secret, strlen(test_secret));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_MALFORMED);
  free(t);
  t = jwt_hs("{\"alg\":\"HS256\"}", "{\"exp\":\"soon\"}", test_secret,
             strlen(test_secret));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_MALFORMED);
  free(t);
  perfc_auth_free(a);
}

/* ---- time claims ------------------------------------------------------- */

static int64_t fixed_now(void *ud) { return *(int64_t *)ud; }

Test(claims, exp_nbf_iat_with_leeway, .init = setup, .fini = teardown) {
  int64_t now = 1700000000;
  perfc_auth_opts o;
  perfc_auth_opts_init(&o);
  o.hs256_secret = (const uint8_t *)test_secret;
  o.hs256_secret_len = strlen(test_secret);
  o.leeway_ms = 30000;
  o.now = fixed_now;
  o.now_user_data = &now;
  perfc_auth *a;
  cr_assert_eq(perfc_auth_new(&a, &o), 0);
  char c[256];
  snprintf(c, sizeof c, "{\"exp\":%lld}", (long long)(now - 10));
  char *t = jwt_hs256(c);
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_OK, "within leeway");
  now += 25;
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_EXPIRED);
  free(t);
  snprintf(c, sizeof c, "{\"exp\":%lld,\"nbf\":%lld}", (long long)(now + 999),
           (long long)(now + 20));
  t = jwt_hs256(c);
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_OK, "nbf within leeway");
  free(t);
  snprintf(c, sizeof c, "{\"exp\":%lld,\"nbf\":%lld}", (long long)(now + 999),
           (long long)(now + 60));
  t = jwt_hs256(c);
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_NOT_YET_VALID);
  free(t);
  snprintf(c, sizeof c, "{\"exp\":%lld,\"iat\":%lld}", (long long)(now + 999),
           (long long)(now + 600));
  t = jwt_hs256(c);
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_NOT_YET_VALID);
  free(t);
  t = jwt_hs256("{\"sub\":\"x\"}");
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_MISSING_CLAIM);
  free(t);
  perfc_auth_free(a);

  o.allow_missing_exp = true;
  o.disable_leeway = true; /* none */
  /* "None" and a number at once is refused, not silently resolved. */
  cr_assert_eq(perfc_auth_new(&a, &o), PERFC_EINVAL);
  cr_assert_not_null(strstr(perfc_last_error(), "leeway_ms 30000"), "%s",
                     perfc_last_error());
  o.leeway_ms = 0;
  cr_assert_eq(perfc_auth_new(&a, &o), 0);
  t = jwt_hs256("{\"sub\":\"x\"}");
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_OK);
  free(t);
  snprintf(c, sizeof c, "{\"exp\":%lld}", (long long)now);
  t = jwt_hs256(c);
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_EXPIRED, "no leeway");
  free(t);
  perfc_auth_free(a);
}

Test(claims, issuer_and_audience, .init = setup, .fini = teardown) {
  perfc_auth *a = hs_verifier("https://issuer.example", "svc-a", 0);
  char *t = jwt_hs256(
      claims_now(",\"iss\":\"https://issuer.example\",\"aud\":\"svc-a\""));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_OK);
  free(t);
  t = jwt_hs256(claims_now(
      ",\"iss\":\"https://issuer.example\",\"aud\":[\"svc-b\",\"svc-a\"]"));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_OK);
  free(t);
  t = jwt_hs256(
      claims_now(",\"iss\":\"https://issuer.example\",\"aud\":[\"svc-b\"]"));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_BAD_AUDIENCE);
  free(t);
  t = jwt_hs256(claims_now(",\"iss\":\"https://issuer.example\""));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_BAD_AUDIENCE);
  free(t);
  t = jwt_hs256(claims_now(",\"iss\":\"https://evil.example\",\"aud\":"
                           "\"svc-a\""));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_BAD_ISSUER);
  free(t);
  t = jwt_hs256(claims_now(",\"aud\":\"svc-a\""));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_BAD_ISSUER);
  free(t);
  perfc_auth_free(a);
}

/* ---- RS256 ------------------------------------------------------------- */

Test(rs256, valid_and_wrong_key, .init = keys, .fini = teardown) {
  perfc_auth_opts o;
  perfc_auth_opts_init(&o);
  o.rs256_public_key_pem = rsa_pem;
  perfc_auth *a;
  cr_assert_eq(perfc_auth_new(&a, &o), 0);
  char *t = jwt_rs("{\"alg\":\"RS256\",\"typ\":\"JWT\",\"kid\":\"k\"}",
                   claims_now(""), rsa_key);
  const perfc_jwt_claims *c;
  cr_assert_eq(verify(a, t, &c), PERFC_JWT_OK);
  cr_assert_str_eq(c->alg, "RS256");
  cr_assert_str_eq(c->sub, "user-42");
  free(t);
  t = jwt_rs("{\"alg\":\"RS256\"}", claims_now(""), other_key);
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_BAD_SIGNATURE);
  free(t);
  /* HS256 is not configured: an HS256 token is refused outright. */
  t = jwt_hs256(claims_now(""));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_BAD_ALG);
  free(t);
  perfc_auth_free(a);
}

/* The classic confusion: the attacker knows the RSA public key (it is
 * public) and signs an HS256 token using its PEM text as the HMAC secret. */
Test(rs256, public_key_as_hmac_secret_refused, .init = keys, .fini = teardown) {
  perfc_auth_opts o;
  perfc_auth_opts_init(&o);
  o.rs256_public_key_pem = rsa_pem;
  perfc_auth *a;
  cr_assert_eq(perfc_auth_new(&a, &o), 0);
  char *t =
      jwt_hs("{\"alg\":\"HS256\"}", claims_now(""), rsa_pem, strlen(rsa_pem));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_BAD_ALG);
  free(t);
  perfc_auth_free(a);
  /* Even with both algorithms configured, HS256 uses only the secret. */
  o.hs256_secret = (const uint8_t *)test_secret;
  o.hs256_secret_len = strlen(test_secret);
  cr_assert_eq(perfc_auth_new(&a, &o), 0);
  t = jwt_hs("{\"alg\":\"HS256\"}", claims_now(""), rsa_pem, strlen(rsa_pem));
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_BAD_SIGNATURE);
  free(t);
  t = jwt_rs("{\"alg\":\"RS256\"}", claims_now(""), rsa_key);
  cr_assert_eq(verify(a, t, NULL), PERFC_JWT_OK);
  free(t);
  perfc_auth_free(a);
}

Test(rs256, key_loading, .init = keys, .fini = teardown) {
  perfc_auth_opts o;
  perfc_auth_opts_init(&o);
  perfc_auth *a = NULL;
  perfc_log_set_level(PERFC_LOG_OFF);
  cr_assert_eq(perfc_auth_new(&a, &o), PERFC_EINVAL, "no key at all");
  o.hs256_secret = (const uint8_t *)"short";
  o.hs256_secret_len = 5;
  cr_assert_eq(perfc_auth_new(&a, &o), PERFC_EINVAL);
  perfc_auth_opts_init(&o);
  o.rs256_public_key_pem = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END "
                           "PUBLIC KEY-----\n";
  cr_assert_eq(perfc_auth_new(&a, &o), PERFC_ETLS);
  EVP_PKEY *small = EVP_RSA_gen(1024);
  char *small_pem = pubkey_pem(small);
  o.rs256_public_key_pem = small_pem;
  cr_assert_eq(perfc_auth_new(&a, &o), PERFC_ETLS, "1024-bit key");
  free(small_pem);
  EVP_PKEY_free(small);
  EVP_PKEY *ec = EVP_EC_gen("P-256");
  char *ec_pem = pubkey_pem(ec);
  o.rs256_public_key_pem = ec_pem;
  cr_assert_eq(perfc_auth_new(&a, &o), PERFC_ETLS, "EC key for RS256");
  free(ec_pem);
  EVP_PKEY_free(ec);
  /* From a file, in PKCS#1 form as `openssl rsa -RSAPublicKey_out` writes. */
  char path[] = "/tmp/perfc-jwt-key-XXXXXX";
  int fd = mkstemp(path);
  cr_assert_geq(fd, 0);
  FILE *f = fdopen(fd, "w");
  BIO *b = BIO_new_fp(f, BIO_NOCLOSE);
  cr_assert_eq(PEM_write_bio_PUBKEY(b, rsa_key), 1);
  BIO_free(b);
  fclose(f);
  perfc_auth_opts_init(&o);
  o.rs256_public_key_file = path;
  cr_assert_eq(perfc_auth_new(&a, &o), 0);
  perfc_auth_free(a);
  char cmd[256];
  snprintf(cmd, sizeof cmd,
           "openssl rsa -pubin -in %s -RSAPublicKey_out -out %s.p1 "
           "2>/dev/null",
           path, path);
  if (system(cmd) == 0) {
    char p1[64];
    snprintf(p1, sizeof p1, "%s.p1", path);
    o.rs256_public_key_file = p1;
    cr_assert_eq(perfc_auth_new(&a, &o), 0, "PKCS#1 PEM");
    perfc_auth_free(a);
    unlink(p1);
  }
  unlink(path);
  o.rs256_public_key_file = "/nonexistent/key.pem";
  cr_assert_eq(perfc_auth_new(&a, &o), PERFC_ETLS);
  perfc_auth_free(NULL);
  perfc_log_set_level(PERFC_LOG_INFO);
}

Test(rules, bad_rules_refused) {
  perfc_auth_opts o;
  perfc_auth_opts_init(&o);
  o.hs256_secret = (const uint8_t *)test_secret;
  o.hs256_secret_len = strlen(test_secret);
  perfc_auth_rule r[] = {{.method = "/a.B/C", .claim = "scope"}};
  o.rules = r;
  o.rule_count = 1;
  perfc_auth *a;
  cr_assert_eq(perfc_auth_new(&a, &o), PERFC_EINVAL, "claim without value");
  perfc_auth_rule r2[] = {{.method = NULL, .is_public = 1}};
  o.rules = r2;
  cr_assert_eq(perfc_auth_new(&a, &o), PERFC_EINVAL, "no method");
  perfc_auth_rule r3[] = {
      {.method = "*", .is_public = 1, .claim = "a", .value = "b"}};
  o.rules = r3;
  cr_assert_eq(perfc_auth_new(&a, &o), PERFC_EINVAL, "public with claim");
}

Test(status, strings_are_fixed) {
  for (int s = PERFC_JWT_OK; s <= PERFC_JWT_NO_MEMORY; s++)
    cr_assert_str_neq(perfc_jwt_status_str((perfc_jwt_status)s), "unknown");
  cr_assert_str_eq(perfc_jwt_status_str((perfc_jwt_status)99), "unknown");
}
