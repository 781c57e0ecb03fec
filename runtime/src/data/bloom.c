/*
 * bloom.c — the bloom filter of perfc/bloom.h.
 *
 * Room: runtime sources (data layer). Touches nothing but libc. The bits
 * are an array of 64-bit atomics: an add is k relaxed fetch-or operations,
 * a test k relaxed loads, so filters are shared between threads without a
 * lock (a bit once set is never cleared, so no ordering is needed beyond
 * the atomicity of each word).
 */
#include "perfc/bloom.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/error_internal.h"

struct perfc_bloom {
  _Atomic uint64_t *bits;
  uint64_t nbits;
  unsigned k;
};

/* FNV-1a with murmur3's final mix: FNV alone leaves the low bits weak for
 * short similar keys, and the bit index is taken modulo nbits. */
static uint64_t bloom_hash(const char *key, uint64_t seed) {
  uint64_t h = 1469598103934665603ull ^ seed;
  for (const unsigned char *p = (const unsigned char *)key; *p; p++) {
    h ^= *p;
    h *= 1099511628211ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

int perfc_bloom_new(perfc_bloom **out, size_t expected_items, double fp_rate) {
  if (!out || expected_items == 0 || !(fp_rate > 0 && fp_rate < 1))
    return perfc__fail(PERFC_EINVAL,
                       "bloom: need out, expected_items > 0 and 0 < fp_rate "
                       "< 1 (got %zu, %g)",
                       expected_items, fp_rate);
  double ln2 = 0.6931471805599453;
  double m = -(double)expected_items * log(fp_rate) / (ln2 * ln2);
  if (m < 64)
    m = 64;
  if (m > PERFC_BLOOM_MAX_BITS)
    return perfc__fail(PERFC_ETOOBIG,
                       "bloom: %zu items at %g would take %.0f bits (at most "
                       "%.0f)",
                       expected_items, fp_rate, m, PERFC_BLOOM_MAX_BITS);
  perfc_bloom *b = calloc(1, sizeof(*b));
  if (!b)
    return perfc__fail(PERFC_ENOMEM, "bloom: out of memory");
  b->nbits = (uint64_t)m;
  b->k = (unsigned)(m / (double)expected_items * ln2 + 0.5);
  if (b->k < 1)
    b->k = 1;
  if (b->k > 16)
    b->k = 16;
  b->bits = calloc((size_t)((b->nbits + 63) / 64), sizeof(*b->bits));
  if (!b->bits) {
    free(b);
    return perfc__fail(PERFC_ENOMEM, "bloom: out of memory for %llu bits",
                       (unsigned long long)(uint64_t)m);
  }
  *out = b;
  return 0;
}

void perfc_bloom_free(perfc_bloom *b) {
  if (!b)
    return;
  free((void *)b->bits);
  free(b);
}

/* Kirsch–Mitzenmacher: k indexes from two hashes, h1 + i*h2. */
void perfc_bloom_add(perfc_bloom *b, const char *key) {
  if (!b || !key)
    return;
  uint64_t h1 = bloom_hash(key, 0), h2 = bloom_hash(key, 0x5bd1e995) | 1;
  for (unsigned i = 0; i < b->k; i++) {
    uint64_t bit = (h1 + i * h2) % b->nbits;
    atomic_fetch_or_explicit(&b->bits[bit / 64], 1ull << (bit % 64),
                             memory_order_relaxed);
  }
}

int perfc_bloom_maybe_contains(perfc_bloom *b, const char *key) {
  if (!b || !key)
    return 1;
  uint64_t h1 = bloom_hash(key, 0), h2 = bloom_hash(key, 0x5bd1e995) | 1;
  for (unsigned i = 0; i < b->k; i++) {
    uint64_t bit = (h1 + i * h2) % b->nbits;
    if (!(atomic_load_explicit(&b->bits[bit / 64], memory_order_relaxed) &
          (1ull << (bit % 64))))
      return 0;
  }
  return 1;
}
