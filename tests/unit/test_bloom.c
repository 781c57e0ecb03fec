/* test_bloom.c — runtime/src/data/bloom.c: the false-positive bound it is
 * sized for, no false negatives, refused sizes, concurrent adds. */
#include <criterion/criterion.h>
#include <perfc/bloom.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

Test(bloom, no_false_negatives_and_fp_rate_near_target) {
  perfc_bloom *bf;
  cr_assert_eq(perfc_bloom_new(&bf, 1000, 0.01), 0);
  char k[32];
  for (int i = 0; i < 1000; i++) {
    snprintf(k, sizeof k, "key%d", i);
    perfc_bloom_add(bf, k);
  }
  for (int i = 0; i < 1000; i++) {
    snprintf(k, sizeof k, "key%d", i);
    cr_assert(perfc_bloom_maybe_contains(bf, k), "%s lost", k);
  }
  int fp = 0;
  for (int i = 0; i < 10000; i++) {
    snprintf(k, sizeof k, "absent%d", i);
    fp += perfc_bloom_maybe_contains(bf, k);
  }
  /* Sized for 1 % at 1000 items: 3 % leaves room for chance. */
  cr_assert_lt(fp, 300, "false positives %d/10000 at 1%%", fp);
  perfc_bloom_free(bf);
}

Test(bloom, bad_sizes_are_refused_with_a_message) {
  perfc_bloom *bf = NULL;
  cr_assert_eq(perfc_bloom_new(&bf, 0, 0.01), PERFC_EINVAL);
  cr_assert_eq(perfc_bloom_new(&bf, 10, 0), PERFC_EINVAL);
  cr_assert_eq(perfc_bloom_new(&bf, 10, 1), PERFC_EINVAL);
  cr_assert(strstr(perfc_last_error(), "fp_rate") != NULL, "%s",
            perfc_last_error());
  cr_assert_eq(perfc_bloom_new(NULL, 10, 0.1), PERFC_EINVAL);
  /* 10^12 items at 10^-6: far beyond PERFC_BLOOM_MAX_BITS. */
  cr_assert_eq(perfc_bloom_new(&bf, (size_t)1000000000000ull, 1e-6),
               PERFC_ETOOBIG);
  cr_assert_eq(perfc_last_error_detail().code, PERFC_ETOOBIG);
  cr_assert_null(bf);
  /* "No filter" lets everything through and NULL keys are ignored. */
  cr_assert_eq(perfc_bloom_maybe_contains(NULL, "x"), 1);
  perfc_bloom_add(NULL, "x");
  perfc_bloom_free(NULL);
}

typedef struct adder {
  perfc_bloom *bf;
  int base;
} adder;

static void *add_many(void *arg) {
  adder *a = arg;
  char k[32];
  for (int i = 0; i < 5000; i++) {
    snprintf(k, sizeof k, "t%d-%d", a->base, i);
    perfc_bloom_add(a->bf, k);
  }
  return NULL;
}

Test(bloom, concurrent_adds_lose_nothing) {
  perfc_bloom *bf;
  cr_assert_eq(perfc_bloom_new(&bf, 20000, 0.01), 0);
  pthread_t t[4];
  adder a[4];
  for (int i = 0; i < 4; i++) {
    a[i] = (adder){bf, i};
    cr_assert_eq(pthread_create(&t[i], NULL, add_many, &a[i]), 0);
  }
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  char k[32];
  for (int b = 0; b < 4; b++)
    for (int i = 0; i < 5000; i++) {
      snprintf(k, sizeof k, "t%d-%d", b, i);
      cr_assert(perfc_bloom_maybe_contains(bf, k), "%s lost", k);
    }
  perfc_bloom_free(bf);
}
