/* test_cache_key.c — the cache keys generated code builds
 * (perfc_cache_key_put_i64/u64 in perfc/cache_rpc.h and the per-key
 * builders protoc-gen-perfc writes): byte for byte what the printf format
 * of earlier perfc versions gave, since keys are shared with Redis, other
 * replicas and the docs. cache_key/keys.proto names every field kind a key
 * may hold, with literal text that needs escaping in C. */
#include <criterion/criterion.h>
#include <perfc/arena.h>
#include <perfc/cache_rpc.h>

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

/* The generated builders are static: the test compiles the generated
 * source into itself. */
#include "keys.perfc.c"

static const long long ints[] = {0,  1,   -1,  9,   10,         -10,
                                 99, 100, 12345, -987654321, INT32_MAX,
                                 INT32_MIN, LLONG_MAX, LLONG_MIN,
                                 LLONG_MAX - 1, LLONG_MIN + 1,
                                 1000000000000000000LL, -999999999999999999LL};
static const unsigned long long uints[] = {0,
                                           1,
                                           9,
                                           10,
                                           UINT32_MAX,
                                           10000000000000000000ULL,
                                           9999999999999999999ULL,
                                           ULLONG_MAX - 1,
                                           ULLONG_MAX};

Test(cache_key, put_matches_printf) {
  char want[32], got[32];
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    snprintf(want, sizeof want, "%lld", ints[i]);
    char *end = perfc_cache_key_put_i64(got, ints[i]);
    cr_assert_leq((size_t)(end - got), PERFC_CACHE_KEY_INT_MAX);
    *end = '\0';
    cr_assert_str_eq(got, want);
  }
  for (size_t i = 0; i < sizeof uints / sizeof uints[0]; i++) {
    snprintf(want, sizeof want, "%llu", uints[i]);
    char *end = perfc_cache_key_put_u64(got, uints[i]);
    cr_assert_leq((size_t)(end - got), PERFC_CACHE_KEY_INT_MAX);
    *end = '\0';
    cr_assert_str_eq(got, want);
  }
  /* Every power of ten and its neighbours: the digit count's edges. */
  for (unsigned long long p = 1; p <= 10000000000000000000ULL; p *= 10) {
    for (int d = -1; d <= 1; d++) {
      unsigned long long u = p + (unsigned long long)d;
      snprintf(want, sizeof want, "%llu", u);
      *perfc_cache_key_put_u64(got, u) = '\0';
      cr_assert_str_eq(got, want);
      snprintf(want, sizeof want, "%lld", -(long long)(u & LLONG_MAX));
      *perfc_cache_key_put_i64(got, -(long long)(u & LLONG_MAX)) = '\0';
      cr_assert_str_eq(got, want);
    }
    if (p > ULLONG_MAX / 10)
      break;
  }
}

/* What protoc-gen-perfc's format for keys.proto's Get key was. */
static void printf_get_key(char *out, size_t cap,
                           const Keytest__V1__KeysRequest *r) {
  snprintf(out, cap,
           "k%%d\"\\\001\303\251:%lld|%lld|%lld|%lld|%lld|%lld|%llu|%llu|"
           "%llu|%llu|%d|%d|%s|%s|%lld|%s|%lld%%",
           (long long)r->i32, (long long)r->i64, (long long)r->si32,
           (long long)r->si64, (long long)r->sf32, (long long)r->sf64,
           (unsigned long long)r->u32, (unsigned long long)r->u64,
           (unsigned long long)r->f32, (unsigned long long)r->f64, (int)r->b,
           (int)r->e, r->s ? r->s : "",
           r->inner && r->inner->s ? r->inner->s : "",
           (long long)(r->inner ? r->inner->n : 0),
           r->inner && r->inner->deeper && r->inner->deeper->s
               ? r->inner->deeper->s
               : "",
           (long long)r->last);
}

Test(cache_key, generated_builders_match_printf) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 256), 0);
  static const char *strs[] = {"", "alice", "a b%s%%\"\\{id}", "\303\251\360\237\230\200",
                               "\001\177", NULL};
  Keytest__V1__Inner deeper = KEYTEST__V1__INNER__INIT;
  Keytest__V1__Inner inner = KEYTEST__V1__INNER__INIT;
  char want[1024];
  size_t nint = sizeof ints / sizeof ints[0];
  size_t nuint = sizeof uints / sizeof uints[0];
  size_t nstr = sizeof strs / sizeof strs[0];
  for (size_t i = 0; i < 64; i++) {
    Keytest__V1__KeysRequest r = KEYTEST__V1__KEYS_REQUEST__INIT;
    long long v = ints[i % nint];
    unsigned long long u = uints[i % nuint];
    r.i32 = (int32_t)v;
    r.i64 = v;
    r.si32 = (int32_t)ints[(i + 3) % nint];
    r.si64 = ints[(i + 5) % nint];
    r.sf32 = (int32_t)ints[(i + 7) % nint];
    r.sf64 = ints[(i + 11) % nint];
    r.u32 = (uint32_t)u;
    r.u64 = u;
    r.f32 = (uint32_t)uints[(i + 2) % nuint];
    r.f64 = uints[(i + 4) % nuint];
    r.b = (protobuf_c_boolean)(i & 1);
    r.e = (i % 3) == 0   ? KEYTEST__V1__COLOR__COLOR_RED
          : (i % 3) == 1 ? KEYTEST__V1__COLOR__COLOR_BLUE
                         : (Keytest__V1__Color)12345;
    r.s = (char *)strs[i % nstr];
    r.last = ints[(i + 13) % nint];
    /* The nested message unset, set with an unset child, set with both. */
    if (i % 3 != 0) {
      inner.s = (char *)strs[(i + 1) % nstr];
      inner.n = ints[(i + 1) % nint];
      inner.deeper = i % 3 == 2 ? &deeper : NULL;
      deeper.s = (char *)strs[(i + 2) % nstr];
      r.inner = &inner;
    }
    printf_get_key(want, sizeof want, &r);
    const char *got = keytest__v1__keys__get__perfc_key(a, &r);
    cr_assert_not_null(got);
    cr_assert_str_eq(got, want, "request %zu", i);

    snprintf(want, sizeof want, "%s", r.s ? r.s : "");
    cr_assert_str_eq(keytest__v1__keys__put__perfc_key0(a, &r), want);
    cr_assert_str_eq(keytest__v1__keys__put__perfc_key1(a, &r), "fixed");
    snprintf(want, sizeof want, "%llu%lld%s%d", (unsigned long long)r.u64,
             (long long)r.i64, r.s ? r.s : "", (int)r.e);
    cr_assert_str_eq(keytest__v1__keys__put__perfc_key2(a, &r), want);
    perfc_arena_reset(a);
  }
  perfc_arena_free(a);
}
