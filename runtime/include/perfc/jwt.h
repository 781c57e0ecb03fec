/*
 * perfc/jwt.h — what a verified JSON Web Token looks like to perfc's users:
 * the outcome of a verification (perfc_jwt_status), the verified claims
 * and their getters, and the JSON limits the token reader enforces.
 * Verification itself is perfc_auth_verify() (perfc/auth.h), which holds
 * the keys.
 *
 * Room: runtime public headers; implemented by runtime/src/guard/jwt.c
 * (compact JWS and JSON reading, claim getters). Claims are immutable and
 * may be read from any thread while their arena lives.
 */
#ifndef PERFC_JWT_H
#define PERFC_JWT_H

#include "perfc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Most top-level members read from the header or the claims object. */
#define PERFC_JWT_MAX_CLAIMS 64
/** Deepest nesting of arrays/objects inside a claim value. */
#define PERFC_JWT_MAX_DEPTH 16

/**
 * The outcome of verifying a token. Not a PERFC_E* error: a refused token is
 * a normal result of a call that worked, as perfc_status_code is for calls.
 * Values are never renumbered.
 */
typedef enum perfc_jwt_status {
  PERFC_JWT_OK = 0,
  PERFC_JWT_MALFORMED = 1,     /**< not three base64url parts of JSON */
  PERFC_JWT_TOO_LARGE = 2,     /**< over max_token_len or a JSON limit */
  PERFC_JWT_BAD_ALG = 3,       /**< alg none, unknown, or no key for it */
  PERFC_JWT_BAD_SIGNATURE = 4, /**< signature does not verify */
  PERFC_JWT_EXPIRED = 5,       /**< now >= exp + leeway */
  PERFC_JWT_NOT_YET_VALID = 6, /**< now < nbf - leeway, or iat in future */
  PERFC_JWT_BAD_ISSUER = 7,    /**< iss differs from the expected one */
  PERFC_JWT_BAD_AUDIENCE = 8,  /**< aud lacks the expected audience */
  PERFC_JWT_MISSING_CLAIM = 9, /**< exp absent (and required) */
  PERFC_JWT_NO_MEMORY = 10
} perfc_jwt_status;

/** A short fixed description of `s` ("expired", ...); static, never NULL,
 *  never contains token content. */
PERFC_API const char *perfc_jwt_status_str(perfc_jwt_status s);

/**
 * The verified claims of one token. Strings live in the arena the token was
 * verified into (the call's arena for the interceptor) and are valid until
 * it is freed; NULL when the claim is absent or not a string. Numeric dates
 * are 0 when absent.
 */
typedef struct perfc_jwt_claims {
  const char *sub;
  const char *iss;
  const char *alg; /**< "HS256" or "RS256" */
  const char *kid; /**< header kid, or NULL */
  int64_t exp, nbf, iat;
  const void *internal; /**< every member, for the getters below */
} perfc_jwt_claims;

/** The string value of top-level claim `name`, or NULL when absent or not a
 *  string. Borrowed like the claims. */
PERFC_API const char *perfc_jwt_claim_str(const perfc_jwt_claims *c,
                                          const char *name);
/** Non-zero when claim `name` holds `value`: equal to a string claim, one
 *  word of a space-separated string claim (OAuth `scope`), or one element
 *  of an array of strings (`roles`, `aud`). */
PERFC_API int perfc_jwt_claim_has(const perfc_jwt_claims *c, const char *name,
                                  const char *value);

/* Deprecated aliases: these limits were named after auth.h, where
 * docs/reliability.md found them. Define PERFC_NO_DEPRECATED_NAMES to
 * check that nothing uses them. */
#ifndef PERFC_NO_DEPRECATED_NAMES
#define PERFC_AUTH_MAX_CLAIMS PERFC_JWT_MAX_CLAIMS
#define PERFC_AUTH_MAX_DEPTH PERFC_JWT_MAX_DEPTH
#endif

#ifdef __cplusplus
}
#endif
#endif /* PERFC_JWT_H */
