/*
 * perfc/bloom.h — a bloom filter of string keys: "certainly never added"
 * or "may have been added". The cache-aside layer (perfc/cache.h) takes one
 * to answer keys that cannot exist without touching L1, Redis or the
 * loader; it stands alone for any other use.
 *
 * Room: runtime public headers (data layer). Adding and testing are
 * lock-free (relaxed atomic bit sets) and may run concurrently from any
 * thread; a key added on one thread may be reported absent to a test that
 * races it, never after the add returned. See docs/data-layer.md.
 */
#ifndef PERFC_BLOOM_H
#define PERFC_BLOOM_H

#include "perfc/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/** A bloom filter of keys that may exist. Opaque. */
typedef struct perfc_bloom perfc_bloom;

/** The largest filter perfc_bloom_new() makes, in bits (125 GB). */
#define PERFC_BLOOM_MAX_BITS 1e12

/** Creates a filter sized for `expected_items` with false-positive rate
 *  `fp_rate` (0 < fp_rate < 1): m = -n ln(p) / ln(2)^2 bits, k = m/n ln 2
 *  hash functions (1 to 16). Returns 0, PERFC_EINVAL, PERFC_ETOOBIG (more
 *  than PERFC_BLOOM_MAX_BITS) or PERFC_ENOMEM, with the detail in
 *  perfc_last_error(). The caller frees it with perfc_bloom_free(). */
PERFC_API int perfc_bloom_new(perfc_bloom **out, size_t expected_items,
                              double fp_rate);

/** Frees the filter. No other call may be running on it. NULL is a no-op. */
PERFC_API void perfc_bloom_free(perfc_bloom *b);

/** Records that `key` (NUL-terminated, borrowed) may exist. NULL filter or
 *  key: nothing happens. */
PERFC_API void perfc_bloom_add(perfc_bloom *b, const char *key);

/** 0 when `key` was certainly never added; 1 when it may have been (also
 *  for a NULL filter or key, so "no filter" lets everything through). */
PERFC_API int perfc_bloom_maybe_contains(perfc_bloom *b, const char *key);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_BLOOM_H */
