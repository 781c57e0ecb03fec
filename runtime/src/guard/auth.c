/*
 * auth.c — the verifier object (keys, expected issuer/audience, rules),
 * perfc_auth_verify(), and the bearer-token server interceptor.
 *
 * Room: runtime/src/guard. A perfc_auth is immutable after perfc_auth_new(), so
 * pollers and workers share it without locks. Per-call memory comes from
 * the call's arena; the verified claims sit in the interceptor's per-call
 * slot, where perfc_auth_claims() finds them.
 *
 * What is logged on a refusal: the fixed reason, the method and the peer.
 * Never the token, never a claim value, never key material: a token in a
 * log is a credential anyone with log access can replay.
 */
#include "perfc/auth.h"
#include "core/error_internal.h"
#include "guard/auth_internal.h"
#include "perfc/log.h"
#include "perfc/server.h"
#include "server/server_internal.h"

#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* RFC 7518 3.2: an HMAC key at least as long as the hash output. */
#define HS256_MIN_SECRET 32
/* NIST SP 800-131A: RSA under 2048 bits is not acceptable for signatures. */
#define RS256_MIN_BITS 2048
#define PEM_MAX_BYTES (64 * 1024)

typedef struct rule {
  char *method;
  bool is_public;
  char *claim, *value;
} rule;

struct perfc_auth {
  uint8_t *secret;
  size_t secret_len;
  EVP_PKEY *rsa;
  char *issuer, *audience;
  int64_t leeway_s; /* whole seconds: JWT dates are seconds */
  bool allow_missing_exp;
  size_t max_token_len;
  rule *rules;
  size_t n_rules;
  int64_t (*now)(void *);
  void *now_user_data;
};

void perfc_auth_opts_init(perfc_auth_opts *o) {
  if (o != NULL)
    memset(o, 0, sizeof *o);
}

void perfc_auth_free(perfc_auth *a) {
  if (a == NULL)
    return;
  if (a->secret != NULL) {
    OPENSSL_cleanse(a->secret, a->secret_len);
    free(a->secret);
  }
  EVP_PKEY_free(a->rsa);
  free(a->issuer);
  free(a->audience);
  for (size_t i = 0; i < a->n_rules; i++) {
    free(a->rules[i].method);
    free(a->rules[i].claim);
    free(a->rules[i].value);
  }
  free(a->rules);
  free(a);
}

static char *dup_or_null(const char *s, int *oom) {
  if (s == NULL)
    return NULL;
  char *d = strdup(s);
  if (d == NULL)
    *oom = 1;
  return d;
}

/* Reads a PEM file whole (bounded), for the _file option. */
static char *read_pem(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL)
    return NULL;
  char *buf = malloc(PEM_MAX_BYTES + 1);
  size_t n = buf ? fread(buf, 1, PEM_MAX_BYTES + 1, f) : 0;
  fclose(f);
  if (buf == NULL || n == 0 || n > PEM_MAX_BYTES) {
    free(buf);
    return NULL;
  }
  buf[n] = '\0';
  return buf;
}

static int load_rsa(perfc_auth *a, const char *pem, const char *what) {
  /* One decoder takes both "BEGIN PUBLIC KEY" (SubjectPublicKeyInfo) and
   * "BEGIN RSA PUBLIC KEY" (PKCS#1, what openssl rsa -RSAPublicKey_out and
   * many JWKS converters write), without the deprecated RSA_* API. */
  EVP_PKEY *k = NULL;
  OSSL_DECODER_CTX *dc = OSSL_DECODER_CTX_new_for_pkey(
      &k, "PEM", NULL, "RSA", EVP_PKEY_PUBLIC_KEY, NULL, NULL);
  if (dc == NULL)
    return perfc__fail(PERFC_ENOMEM, "auth: out of memory");
  const unsigned char *p = (const unsigned char *)pem;
  size_t plen = strlen(pem);
  if (OSSL_DECODER_from_data(dc, &p, &plen) != 1) {
    EVP_PKEY_free(k);
    k = NULL;
  }
  OSSL_DECODER_CTX_free(dc);
  ERR_clear_error();
  if (k == NULL) {
    return perfc__fail(PERFC_ETLS, "auth: %s: no PEM public key found", what);
  }
  if (!EVP_PKEY_is_a(k, "RSA")) {
    EVP_PKEY_free(k);
    return perfc__fail(PERFC_ETLS, "auth: %s: RS256 needs an RSA key", what);
  }
  if (EVP_PKEY_get_bits(k) < RS256_MIN_BITS) {
    EVP_PKEY_free(k);
    return perfc__fail(PERFC_ETLS, "auth: %s: RSA key under %d bits", what,
                       RS256_MIN_BITS);
  }
  a->rsa = k;
  return 0;
}

int perfc_auth_new(perfc_auth **out, const perfc_auth_opts *opts) {
  if (out == NULL || opts == NULL)
    return perfc__fail(PERFC_EINVAL, "auth: NULL out or options");
  *out = NULL;
  /* Copied whole, then zeros become defaults; strings, keys and rules are
   * deep-copied into the verifier below. */
  perfc_auth_opts o = *opts;
  if (o.max_token_len == 0)
    o.max_token_len = PERFC_DEFAULT_AUTH_MAX_TOKEN;
  if (o.leeway_ms == 0 && !o.disable_leeway)
    o.leeway_ms = PERFC_DEFAULT_AUTH_LEEWAY_MS;
  bool has_hs = o.hs256_secret != NULL && o.hs256_secret_len > 0;
  bool has_rs =
      o.rs256_public_key_pem != NULL || o.rs256_public_key_file != NULL;
  if (!has_hs && !has_rs)
    return perfc__fail(PERFC_EINVAL, "auth: neither an HS256 secret nor an "
                                     "RS256 public key is configured");
  if (has_hs && o.hs256_secret_len < HS256_MIN_SECRET)
    return perfc__fail(PERFC_EINVAL, "auth: HS256 secret shorter than %d bytes",
                       HS256_MIN_SECRET);
  if (o.rs256_public_key_pem != NULL && o.rs256_public_key_file != NULL)
    return perfc__fail(PERFC_EINVAL, "auth: rs256_public_key_pem and "
                                     "rs256_public_key_file are both set");
  if (o.disable_leeway
          ? o.leeway_ms != 0
          : o.leeway_ms < 0 || o.leeway_ms > PERFC_AUTH_MAX_LEEWAY_MS)
    return perfc__fail(
        PERFC_EINVAL, "auth: leeway_ms %lld with disable_leeway %s",
        (long long)o.leeway_ms,
        o.disable_leeway ? "true (needs 0)" : "false (needs 0 to a day)");
  if (o.rule_count > 0 && o.rules == NULL)
    return perfc__fail(PERFC_EINVAL, "auth: %zu rules but no array",
                       o.rule_count);
  for (size_t i = 0; i < o.rule_count; i++) {
    const perfc_auth_rule *r = &o.rules[i];
    if (r->method == NULL || (r->claim == NULL) != (r->value == NULL) ||
        (r->is_public && r->claim != NULL))
      return perfc_error_set(PERFC_EINVAL, NULL, (long)i, "auth: rule %zu: %s",
                             i,
                             r->method == NULL ? "no method"
                             : r->is_public    ? "a public method with a claim"
                                               : "claim without value or "
                                                 "value without claim");
  }
  perfc_auth *a = calloc(1, sizeof *a);
  if (a == NULL)
    return perfc__fail(PERFC_ENOMEM, "auth: out of memory");
  int oom = 0;
  if (has_hs) {
    a->secret = malloc(o.hs256_secret_len);
    if (a->secret == NULL)
      oom = 1;
    else
      memcpy(a->secret, o.hs256_secret, o.hs256_secret_len);
    a->secret_len = o.hs256_secret_len;
  }
  a->issuer = dup_or_null(o.issuer, &oom);
  a->audience = dup_or_null(o.audience, &oom);
  /* At most a day, so exp + leeway cannot overflow (dates are below 2^62,
   * jwt.c). */
  a->leeway_s = o.disable_leeway ? 0 : o.leeway_ms / 1000;
  a->allow_missing_exp = o.allow_missing_exp;
  a->max_token_len = o.max_token_len;
  a->now = o.now;
  a->now_user_data = o.now_user_data;
  if (o.rule_count > 0) {
    a->rules = calloc(o.rule_count, sizeof *a->rules);
    if (a->rules == NULL)
      oom = 1;
    else
      a->n_rules = o.rule_count;
    for (size_t i = 0; i < a->n_rules; i++) {
      a->rules[i].method = dup_or_null(o.rules[i].method, &oom);
      a->rules[i].is_public = o.rules[i].is_public;
      a->rules[i].claim = dup_or_null(o.rules[i].claim, &oom);
      a->rules[i].value = dup_or_null(o.rules[i].value, &oom);
    }
  }
  if (oom) {
    perfc_auth_free(a);
    return perfc__fail(PERFC_ENOMEM, "auth: out of memory");
  }
  int rc = 0;
  if (o.rs256_public_key_pem != NULL) {
    rc = load_rsa(a, o.rs256_public_key_pem, "rs256_public_key_pem");
  } else if (o.rs256_public_key_file != NULL) {
    char *pem = read_pem(o.rs256_public_key_file);
    if (pem == NULL) {
      rc = perfc__fail(PERFC_ETLS, "auth: cannot read %s",
                       o.rs256_public_key_file);
    } else {
      rc = load_rsa(a, pem, o.rs256_public_key_file);
      free(pem);
    }
  }
  if (rc != 0) {
    perfc_auth_free(a);
    return rc;
  }
  *out = a;
  return 0;
}

/* ---- verification ------------------------------------------------------ */

static int hs256_ok(const perfc_auth *a, const char *input, size_t len,
                    const uint8_t *sig, size_t sig_len) {
  unsigned char mac[EVP_MAX_MD_SIZE];
  size_t mac_len = 0;
  if (sig_len != 32)
    return 0;
  if (EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, a->secret, a->secret_len,
                (const unsigned char *)input, len, mac, sizeof mac,
                &mac_len) == NULL ||
      mac_len != 32)
    return 0;
  /* Constant time, so the comparison leaks nothing about the right MAC. */
  int ok = CRYPTO_memcmp(mac, sig, 32) == 0;
  OPENSSL_cleanse(mac, sizeof mac);
  return ok;
}

static int rs256_ok(const perfc_auth *a, const char *input, size_t len,
                    const uint8_t *sig, size_t sig_len) {
  if ((int)sig_len != EVP_PKEY_get_size(a->rsa))
    return 0;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  if (md == NULL)
    return 0;
  /* PKCS#1 v1.5 padding is the RSA default and what RS256 means. */
  int ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, a->rsa) == 1 &&
           EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)input,
                            len) == 1;
  EVP_MD_CTX_free(md);
  return ok;
}

static int64_t now_s(const perfc_auth *a) {
  return a->now ? a->now(a->now_user_data) : (int64_t)time(NULL);
}

/* Reads a NumericDate member: absent is fine (0), anything but an integer
 * that fits is malformed. */
static int date_claim(const perfc__jobject *o, const char *name, int64_t *v) {
  const perfc__jmember *m = perfc__json_get(o, name);
  *v = 0;
  if (m == NULL)
    return 0;
  if (m->kind != JV_NUMBER || !m->num_ok || m->num < 0)
    return -1;
  *v = m->num;
  return 0;
}

perfc_jwt_status perfc_auth_verify(const perfc_auth *a, const char *token,
                                   size_t len, perfc_arena *arena,
                                   const perfc_jwt_claims **out) {
  if (out != NULL)
    *out = NULL;
  if (a == NULL || token == NULL || arena == NULL || out == NULL)
    return PERFC_JWT_MALFORMED;
  if (len > a->max_token_len)
    return PERFC_JWT_TOO_LARGE;
  const char *d1 = memchr(token, '.', len);
  const char *d2 =
      d1 ? memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - token)) : NULL;
  if (d1 == NULL || d2 == NULL ||
      memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - token)) != NULL)
    return PERFC_JWT_MALFORMED; /* JWE (five parts) is not supported */

  uint8_t *hdr_json, *body_json, *sig;
  size_t hdr_len, body_len, sig_len;
  if (perfc__b64url_decode(arena, token, (size_t)(d1 - token), &hdr_json,
                           &hdr_len) != 0)
    return PERFC_JWT_MALFORMED;
  perfc__jobject hdr, body;
  perfc_jwt_status st =
      perfc__json_object(arena, (const char *)hdr_json, hdr_len, &hdr);
  if (st != PERFC_JWT_OK)
    return st;

  /* The header decides which key to use, and only a key configured for
   * exactly that algorithm: "none", HS384, or HS256 while only an RSA key
   * is set (the RSA-public-key-as-HMAC-secret confusion) are all refused. */
  const perfc__jmember *alg = perfc__json_get(&hdr, "alg");
  if (alg == NULL || alg->kind != JV_STRING)
    return PERFC_JWT_MALFORMED;
  int is_hs = strcmp(alg->str, "HS256") == 0;
  int is_rs = strcmp(alg->str, "RS256") == 0;
  if ((!is_hs && !is_rs) || (is_hs && a->secret == NULL) ||
      (is_rs && a->rsa == NULL))
    return PERFC_JWT_BAD_ALG;
  const perfc__jmember *typ = perfc__json_get(&hdr, "typ");
  if (typ != NULL &&
      (typ->kind != JV_STRING || (strcasecmp(typ->str, "JWT") != 0 &&
                                  strcasecmp(typ->str, "at+jwt") != 0)))
    return PERFC_JWT_MALFORMED;
  /* RFC 7515 4.1.11: extensions we do not understand must be refused. */
  if (perfc__json_get(&hdr, "crit") != NULL)
    return PERFC_JWT_MALFORMED;
  const perfc__jmember *kid = perfc__json_get(&hdr, "kid");
  if (kid != NULL && kid->kind != JV_STRING)
    return PERFC_JWT_MALFORMED;

  if (perfc__b64url_decode(arena, d2 + 1, len - (size_t)(d2 + 1 - token), &sig,
                           &sig_len) != 0)
    return PERFC_JWT_MALFORMED;
  size_t signed_len = (size_t)(d2 - token);
  int ok = is_hs ? hs256_ok(a, token, signed_len, sig, sig_len)
                 : rs256_ok(a, token, signed_len, sig, sig_len);
  if (!ok)
    return PERFC_JWT_BAD_SIGNATURE;

  /* Only now, with the signature checked, is the payload parsed: a forger
   * cannot reach the claims reader with content of their choosing. */
  if (perfc__b64url_decode(arena, d1 + 1, (size_t)(d2 - d1 - 1), &body_json,
                           &body_len) != 0)
    return PERFC_JWT_MALFORMED;
  st = perfc__json_object(arena, (const char *)body_json, body_len, &body);
  if (st != PERFC_JWT_OK)
    return st;

  perfc_jwt_claims *c = perfc_arena_calloc(arena, sizeof *c);
  perfc__jobject *keep = perfc_arena_alloc(arena, sizeof *keep);
  if (c == NULL || keep == NULL)
    return PERFC_JWT_NO_MEMORY;
  *keep = body;
  c->internal = keep;
  c->alg = alg->str;
  c->kid = kid ? kid->str : NULL;
  if (date_claim(&body, "exp", &c->exp) != 0 ||
      date_claim(&body, "nbf", &c->nbf) != 0 ||
      date_claim(&body, "iat", &c->iat) != 0)
    return PERFC_JWT_MALFORMED;
  const perfc__jmember *sub = perfc__json_get(&body, "sub");
  const perfc__jmember *iss = perfc__json_get(&body, "iss");
  if ((sub && sub->kind != JV_STRING) || (iss && iss->kind != JV_STRING))
    return PERFC_JWT_MALFORMED;
  c->sub = sub ? sub->str : NULL;
  c->iss = iss ? iss->str : NULL;

  int64_t now = now_s(a);
  if (perfc__json_get(&body, "exp") == NULL) {
    if (!a->allow_missing_exp)
      return PERFC_JWT_MISSING_CLAIM;
  } else if (now >= c->exp + a->leeway_s) {
    return PERFC_JWT_EXPIRED;
  }
  if (c->nbf != 0 && now + a->leeway_s < c->nbf)
    return PERFC_JWT_NOT_YET_VALID;
  if (c->iat != 0 && now + a->leeway_s < c->iat)
    return PERFC_JWT_NOT_YET_VALID;
  if (a->issuer != NULL && (c->iss == NULL || strcmp(c->iss, a->issuer) != 0))
    return PERFC_JWT_BAD_ISSUER;
  if (a->audience != NULL) {
    const perfc__jmember *aud = perfc__json_get(&body, "aud");
    int match = 0;
    if (aud && aud->kind == JV_STRING)
      match = strcmp(aud->str, a->audience) == 0;
    else if (aud && aud->kind == JV_STR_ARRAY)
      for (size_t i = 0; i < aud->n_items && !match; i++)
        match = strcmp(aud->items[i], a->audience) == 0;
    if (!match)
      return PERFC_JWT_BAD_AUDIENCE;
  }
  *out = c;
  return PERFC_JWT_OK;
}

/* ---- the interceptor --------------------------------------------------- */

/* A method's resolved rule: index into the verifier's rules, or a default
 * "token required, nothing else". Static instance so no allocation. */
static const rule default_rule = {NULL, 0, NULL, NULL};

static int rule_rank(const rule *r, const char *path, const char *svc) {
  if (strcmp(r->method, path) == 0)
    return 3;
  size_t sl = strlen(svc);
  /* A service wildcard: "/pkg.Svc/" plus a star. */
  if (r->method[0] == '/' && strncmp(r->method + 1, svc, sl) == 0 &&
      strcmp(r->method + 1 + sl, "/*") == 0)
    return 2;
  if (strcmp(r->method, "*") == 0)
    return 1;
  return 0;
}

static void *method_init(void *self, const perfc_service_desc *svc,
                         const perfc_method_desc *m) {
  const perfc_auth *a = self;
  const rule *best = &default_rule;
  int best_rank = 0;
  for (size_t i = 0; i < a->n_rules; i++) {
    int r = rule_rank(&a->rules[i], m->path, svc->name);
    if (r > best_rank)
      best = &a->rules[i], best_rank = r;
  }
  return (void *)best;
}

static perfc_status_code before(void *self, void *method_state, perfc_ctx *ctx,
                                void **call_state) {
  const perfc_auth *a = self;
  const rule *r = method_state ? method_state : &default_rule;
  if (r->is_public)
    return PERFC_STATUS_OK;
  size_t len = 0;
  const char *h = perfc_ctx_metadata_get(ctx, "authorization", &len);
  const char *why = NULL;
  perfc_jwt_status st = PERFC_JWT_OK;
  const perfc_jwt_claims *c = NULL;
  if (h == NULL) {
    why = "missing bearer token";
  } else if (len < 7 || strncasecmp(h, "Bearer ", 7) != 0) {
    why = "authorization is not a bearer token";
  } else {
    const char *tok = h + 7;
    size_t tlen = len - 7;
    while (tlen > 0 && *tok == ' ')
      tok++, tlen--;
    st = perfc_auth_verify(a, tok, tlen, perfc_ctx_arena(ctx), &c);
    if (st != PERFC_JWT_OK)
      why = perfc_jwt_status_str(st);
  }
  if (why != NULL) {
    perfc_log_field f[] = {{"method", perfc_ctx_method(ctx)},
                           {"peer", perfc_ctx_peer(ctx)},
                           {"reason", why}};
    /* Any client can cause this at will: rate-limited (perfc/log.h). */
    perfc_log_fields_ratelimited(PERFC_LOG_INFO, PERFC_LOG_SITE, f, 3,
                                 "auth: unauthenticated");
    return perfc_ctx_error(ctx, PERFC_STATUS_UNAUTHENTICATED, "%s", why);
  }
  if (r->claim != NULL && !perfc_jwt_claim_has(c, r->claim, r->value)) {
    perfc_log_field f[] = {{"method", perfc_ctx_method(ctx)},
                           {"peer", perfc_ctx_peer(ctx)},
                           {"required_claim", r->claim}};
    perfc_log_fields_ratelimited(PERFC_LOG_INFO, PERFC_LOG_SITE, f, 3,
                                 "auth: permission denied");
    return perfc_ctx_error(ctx, PERFC_STATUS_PERMISSION_DENIED,
                           "token lacks %s=%s", r->claim, r->value);
  }
  *call_state = (void *)c;
  return PERFC_STATUS_OK;
}

int perfc_auth_attach(const perfc_auth *auth, perfc_server *srv) {
  if (srv == NULL || auth == NULL)
    return perfc__fail(PERFC_EINVAL,
                       "auth: attach needs a verifier and a server");
  perfc_server_interceptor ic = {
      .name = "auth",
      .self = (void *)auth,
      .method_init = method_init,
      .before = before,
  };
  return perfc_server_add_interceptor(srv, &ic);
}

const perfc_jwt_claims *perfc_auth_claims(perfc_ctx *ctx) {
  return perfc__ctx_call_state(ctx, before);
}
