/*
 * perfc/auth.h — bearer-token authentication: JWT verification (HS256 with
 * a shared secret, RS256 with an RSA public key) and a server interceptor
 * that checks `authorization: Bearer <token>` against per-method rules.
 *
 * Room: runtime public headers. A verifier (perfc_auth) is immutable after
 * perfc_auth_new() and may be used from any number of threads at once.
 * Secrets and tokens never reach the logger: rejections are logged with a
 * fixed reason, the method and the peer only.
 */
#ifndef PERFC_AUTH_H
#define PERFC_AUTH_H

#include "perfc/arena.h"
#include "perfc/common.h"
#include "perfc/interceptor.h"
#include "perfc/jwt.h"

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Longest token accepted, in bytes (header.payload.signature). */
#define PERFC_DEFAULT_AUTH_MAX_TOKEN 8192
/** Clock-skew leeway applied to exp, nbf and iat: a minute covers the
 *  skew of NTP-synchronised hosts with a wide margin. */
#define PERFC_DEFAULT_AUTH_LEEWAY_MS 60000
/** Longest leeway accepted: a day. More is a configuration error. */
#define PERFC_AUTH_MAX_LEEWAY_MS (INT64_C(86400) * 1000)

/** A per-method rule. `method` is a full path "/pkg.Svc/Method", a service
 *  wildcard ("/pkg.Svc/" followed by a star) or a lone star; the most
 *  specific match wins. Methods no rule matches need a valid token and
 *  nothing more. */
typedef struct perfc_auth_rule {
  const char *method;
  /** No token needed; the token is not read at all on such methods. */
  bool is_public;
  /** When non-NULL, the token must carry `claim` holding `value` (see
   *  perfc_jwt_claim_has), else the call gets PERMISSION_DENIED. */
  const char *claim;
  const char *value;
} perfc_auth_rule;

typedef struct perfc_auth_opts {
  /** HS256 shared secret; copied. NULL/0 disables HS256. At least 32 bytes
   *  (RFC 7518 3.2: a key as long as the hash). */
  const uint8_t *hs256_secret;
  size_t hs256_secret_len;
  /** RS256 public key as PEM text (SubjectPublicKeyInfo or PKCS#1), or a
   *  path to such a file; copied/read at perfc_auth_new(). NULL disables
   *  RS256. RSA only, at least 2048 bits. */
  const char *rs256_public_key_pem;
  const char *rs256_public_key_file;
  /** When non-NULL, `iss` must equal this. Copied. */
  const char *issuer;
  /** When non-NULL, `aud` (string or array) must contain this. Copied. */
  const char *audience;
  /** Clock-skew leeway for exp/nbf/iat, milliseconds, 0 to
   *  PERFC_AUTH_MAX_LEEWAY_MS; 0 = PERFC_DEFAULT_AUTH_LEEWAY_MS. Applied in
   *  whole seconds (JWT dates are seconds), rounded down. */
  int64_t leeway_ms;
  /** true: no leeway at all (times checked exactly); leeway_ms must then
   *  be 0. */
  bool disable_leeway;
  /** true accepts tokens without `exp`; by default exp is required. */
  bool allow_missing_exp;
  /** 0 = PERFC_DEFAULT_AUTH_MAX_TOKEN. */
  size_t max_token_len;
  /** Per-method rules; the array and its strings are copied. */
  const perfc_auth_rule *rules;
#ifndef PERFC_NO_DEPRECATED_NAMES
  union {
    size_t rule_count;
    size_t n_rules; /**< deprecated alias of rule_count (docs used it) */
  };
#else
  size_t rule_count;
#endif
  /** Wall clock in seconds since the epoch; NULL = time(). For tests. */
  int64_t (*now)(void *now_user_data);
  void *now_user_data;
} perfc_auth_opts;

/** Fills `o` with the defaults (zero everywhere, which means default). */
PERFC_API void perfc_auth_opts_init(perfc_auth_opts *o);

#ifndef PERFC_NO_DEPRECATED_NAMES
/** Deprecated: the leeway in seconds, before options took milliseconds
 *  (docs used it). */
#define PERFC_DEFAULT_AUTH_LEEWAY_S (PERFC_DEFAULT_AUTH_LEEWAY_MS / 1000)
#endif

typedef struct perfc_auth perfc_auth;

/** Builds a verifier from `opts` (copied; keys are parsed now). Returns 0,
 *  PERFC_EINVAL (no key, short secret, bad rule), PERFC_ETLS (unreadable
 *  or non-RSA key, under 2048 bits) or PERFC_ENOMEM. The caller frees it
 *  with perfc_auth_free() after every server using it was freed. */
PERFC_API int perfc_auth_new(perfc_auth **out, const perfc_auth_opts *opts);
/** NULL is a no-op. */
PERFC_API void perfc_auth_free(perfc_auth *auth);

/** Verifies a compact JWS `token` (`len` bytes, no "Bearer " prefix): the
 *  header's alg picks the key (alg none and an alg without a configured key
 *  are refused, so an RSA public key is never used as an HMAC secret),
 *  then the signature, then exp/nbf/iat with leeway, iss and aud. On
 *  PERFC_JWT_OK `*out` points to claims allocated in `arena`. */
PERFC_API perfc_jwt_status perfc_auth_verify(const perfc_auth *auth,
                                             const char *token, size_t len,
                                             perfc_arena *arena,
                                             const perfc_jwt_claims **out);

/** Adds the bearer-token interceptor to `srv` (before perfc_server_start).
 *  Missing or invalid token: UNAUTHENTICATED; valid token failing the
 *  method's rule: PERMISSION_DENIED. `auth` is borrowed and must outlive
 *  the server. Returns what perfc_server_add_interceptor() returns. */
PERFC_API int perfc_auth_attach(const perfc_auth *auth, perfc_server *srv);

/** The verified claims of the current call, or NULL (public method, no
 *  auth interceptor, or called outside a handler). Valid during the call. */
PERFC_API const perfc_jwt_claims *perfc_auth_claims(perfc_ctx *ctx);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_AUTH_H */
