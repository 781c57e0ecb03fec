/* fuzz_jwt.c — the JWT path of runtime/src/guard/jwt.c and auth.c: base64url,
 * the strict JSON reader, and perfc_auth_verify(). (The configuration
 * loader has its own target, fuzz_config.c.)
 *
 * The first byte picks a mode:
 *   0: the rest is a JSON object for perfc__json_object() directly;
 *   1: the rest is a token for perfc_auth_verify() (mostly stops at the
 *      header or the signature, as a forger's token would);
 *   2: the rest is a claims object that this harness signs with HS256
 *      first, so the claims checks after the signature are reached too;
 *   3: the rest goes to perfc__b64url_decode().
 *
 * Room: tests/fuzz. */
#include "guard/auth_internal.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

static const char secret[] = "fuzzing-secret-fuzzing-secret-0123456789";

static void b64url(const uint8_t *in, size_t len, char *out) {
  static const char al[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  size_t o = 0, i = 0;
  for (; i + 2 < len; i += 3) {
    unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
    out[o++] = al[v >> 18 & 63];
    out[o++] = al[v >> 12 & 63];
    out[o++] = al[v >> 6 & 63];
    out[o++] = al[v & 63];
  }
  if (len - i >= 1) {
    unsigned v =
        (unsigned)in[i] << 16 | (len - i == 2 ? (unsigned)in[i + 1] << 8 : 0);
    out[o++] = al[v >> 18 & 63];
    out[o++] = al[v >> 12 & 63];
    if (len - i == 2)
      out[o++] = al[v >> 6 & 63];
  }
  out[o] = '\0';
}

static int64_t fixed_now(void *ud) {
  (void)ud;
  return 1700000000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static perfc_auth *auth;
  if (auth == NULL) {
    perfc_auth_opts o;
    perfc_auth_opts_init(&o);
    o.hs256_secret = (const uint8_t *)secret;
    o.hs256_secret_len = strlen(secret);
    o.issuer = "iss";
    o.audience = "aud";
    o.now = fixed_now;
    if (perfc_auth_new(&auth, &o) != 0)
      abort();
  }
  if (size < 1 || size > 16384)
    return 0;
  perfc_arena *a;
  if (perfc_arena_new(&a, 0) != 0)
    return 0;
  const char *s = (const char *)data + 1;
  size_t n = size - 1;
  const perfc_jwt_claims *c = NULL;
  switch (data[0] % 4) {
  case 0: {
    perfc__jobject o;
    if (perfc__json_object(a, s, n, &o) == PERFC_JWT_OK)
      for (size_t i = 0; i < o.n; i++)
        if (perfc__json_get(&o, o.m[i].name) != &o.m[i])
          abort(); /* names are unique, so lookup finds this member */
    break;
  }
  case 1:
    (void)perfc_auth_verify(auth, s, n, a, &c);
    break;
  case 2: {
    static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char *tok = malloc(n * 4 / 3 + 200);
    b64url((const uint8_t *)hdr, strlen(hdr), tok);
    size_t l = strlen(tok);
    tok[l++] = '.';
    b64url((const uint8_t *)s, n, tok + l);
    l = strlen(tok);
    unsigned char mac[32];
    unsigned mac_len = 0;
    HMAC(EVP_sha256(), secret, (int)strlen(secret), (const uint8_t *)tok, l,
         mac, &mac_len);
    tok[l++] = '.';
    b64url(mac, mac_len, tok + l);
    if (perfc_auth_verify(auth, tok, strlen(tok), a, &c) == PERFC_JWT_OK) {
      (void)perfc_jwt_claim_str(c, "sub");
      (void)perfc_jwt_claim_has(c, "scope", "read");
      (void)perfc_jwt_claim_has(c, "roles", "admin");
    }
    free(tok);
    break;
  }
  default: {
    uint8_t *out;
    size_t out_len;
    (void)perfc__b64url_decode(a, s, n, &out, &out_len);
    break;
  }
  }
  perfc_arena_free(a);
  return 0;
}
