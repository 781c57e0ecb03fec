/* test_arena.c — runtime/src/core/arena.c: alignment, growth, reset, protobuf-c
 * allocator. */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <perfc/arena.h>
#include <stdint.h>
#include <string.h>

Test(arena, allocations_are_aligned_and_distinct) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 256), 0);
  void *prev = NULL;
  for (size_t n = 0; n < 40; n++) {
    void *p = perfc_arena_alloc(a, n);
    cr_assert_not_null(p);
    cr_assert_eq((uintptr_t)p % 16, 0, "size %zu not 16-aligned", n);
    cr_assert_neq(p, prev);
    memset(p, 0xab, n);
    prev = p;
  }
  perfc_arena_free(a);
}

Test(arena, grows_past_first_block_and_keeps_data) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 64), 0);
  char *small = perfc_arena_strdup(a, "kept");
  char *big = perfc_arena_alloc(a, 100000);
  cr_assert_not_null(big);
  memset(big, 'x', 100000);
  cr_assert_str_eq(small, "kept");
  cr_assert_geq(perfc_arena_used(a), 100000);
  perfc_arena_free(a);
}

Test(arena, reset_reuses_first_block) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 1024), 0);
  void *first = perfc_arena_alloc(a, 32);
  perfc_arena_alloc(a, 5000); /* chains a second block */
  perfc_arena_reset(a);
  cr_assert_eq(perfc_arena_used(a), 0);
  cr_assert_eq(perfc_arena_alloc(a, 32), first);
  perfc_arena_free(a);
}

Test(arena, strings_and_printf) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 0), 0);
  cr_assert_str_eq(perfc_arena_strndup(a, "abcdef", 3), "abc");
  cr_assert_str_eq(perfc_arena_sprintf(a, "%s-%d", "user", 42), "user-42");
  cr_assert_null(perfc_arena_strdup(a, NULL));
  char *z = perfc_arena_calloc(a, 64);
  for (int i = 0; i < 64; i++)
    cr_assert_eq(z[i], 0);
  perfc_arena_free(a);
}

/* sprintf formats into the block's free space and keeps only what fitted:
 * texts that fit, that end exactly at the block's end, and that do not fit
 * (a new block) all come back whole, and later allocations never overlap
 * them. */
Test(arena, sprintf_in_place_and_across_blocks) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 64), 0);
  char *s1 = perfc_arena_sprintf(a, "user:%lld", 123456789LL);
  cr_assert_str_eq(s1, "user:123456789");
  cr_assert_eq(perfc_arena_used(a), 16);
  /* 47 characters + NUL: exactly the 48 bytes left. */
  char *s2 = perfc_arena_sprintf(a, "%047d", 7);
  cr_assert_eq(strlen(s2), 47);
  cr_assert_eq(perfc_arena_used(a), 64);
  /* Nothing left in the first block: a new one. */
  char *s3 = perfc_arena_sprintf(a, "%s/%d", "longer than nothing", 99);
  cr_assert_str_eq(s3, "longer than nothing/99");
  /* Larger than the next block's share: formatted in a second pass. */
  char big[300];
  memset(big, 'x', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  char *s4 = perfc_arena_sprintf(a, "<%s>", big);
  cr_assert_eq(strlen(s4), 301);
  cr_assert_eq(s4[0], '<');
  cr_assert_eq(s4[300], '>');
  char *z = perfc_arena_calloc(a, 32);
  cr_assert_not_null(z);
  cr_assert_str_eq(s1, "user:123456789");
  cr_assert_eq(strspn(s2, "0"), 46);
  cr_assert_str_eq(s3, "longer than nothing/99");
  cr_assert_eq(strlen(s4), 301);
  perfc_arena_free(a);
}

/* The formats generated keys use (text, %s, %lld, %llu, %%) take a short
 * path that skips vsnprintf; it must agree with snprintf byte for byte,
 * including the extremes, empty strings, and texts that only fit
 * a new block (first in place, then across the block's end). */
#define SAME_AS_SNPRINTF(a, fmt, ...)                                          \
  do {                                                                         \
    char want_[512];                                                           \
    snprintf(want_, sizeof want_, fmt, __VA_ARGS__);                           \
    const char *got_ = perfc_arena_sprintf(a, fmt, __VA_ARGS__);               \
    cr_assert_not_null(got_);                                                  \
    cr_assert_str_eq(got_, want_, "format \"%s\"", fmt);                      \
  } while (0)

Test(arena, sprintf_short_path_matches_snprintf) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 64), 0);
  for (int round = 0; round < 40; round++) {
    SAME_AS_SNPRINTF(a, "user:%lld", (long long)round * 7919);
    SAME_AS_SNPRINTF(a, "user:%lld", LLONG_MIN);
    SAME_AS_SNPRINTF(a, "user:%lld", LLONG_MAX);
    SAME_AS_SNPRINTF(a, "%lld", -1LL);
    SAME_AS_SNPRINTF(a, "%lld", 0LL);
    SAME_AS_SNPRINTF(a, "k:%llu", ULLONG_MAX);
    SAME_AS_SNPRINTF(a, "k:%llu", 0ULL);
    SAME_AS_SNPRINTF(a, "%s:%s", "a", "");
    SAME_AS_SNPRINTF(a, "%s", "no conversions after this");
    SAME_AS_SNPRINTF(a, "100%% of %s/%llu:%lld", "keys", 42ULL, -42LL);
    SAME_AS_SNPRINTF(a, "user_email:%s", "someone.with.a.long.address@example.com");
  }
  char big[300];
  memset(big, 'y', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  SAME_AS_SNPRINTF(a, "<%s>:%lld", big, 5LL);
  /* Other conversions still go through vsnprintf. */
  SAME_AS_SNPRINTF(a, "%05d|%-4s|%x", 42, "ab", 255);
  SAME_AS_SNPRINTF(a, "%ld %lu", -7L, 7UL);
  perfc_arena_free(a);
}

Test(arena, protobuf_allocator_routes_to_arena) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 0), 0);
  ProtobufCAllocator al = perfc_arena_allocator(a);
  size_t before = perfc_arena_used(a);
  void *p = al.alloc(al.allocator_data, 100);
  cr_assert_not_null(p);
  cr_assert_geq(perfc_arena_used(a), before + 100);
  al.free(al.allocator_data, p); /* no-op, must not crash */
  perfc_arena_free(a);
}

Test(arena, free_null_is_noop_and_new_rejects_null) {
  perfc_arena_free(NULL);
  cr_assert_eq(perfc_arena_new(NULL, 0), PERFC_EINVAL);
}

Test(arena, huge_request_fails_cleanly) {
  perfc_arena *a;
  cr_assert_eq(perfc_arena_new(&a, 0), 0);
  cr_assert_null(perfc_arena_alloc(a, SIZE_MAX - 8));
  cr_assert_not_null(perfc_arena_alloc(a, 8));
  perfc_arena_free(a);
}
