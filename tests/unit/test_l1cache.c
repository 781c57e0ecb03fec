/* test_l1cache.c — runtime/src/data/l1cache.c: hits and misses, copy-out, TTL,
 * LRU eviction under the byte bound, negative entries, delete, clear,
 * versioned sets fenced by delete, stats, a threaded smoke test, and the
 * plain-protobuf mark taken when a value is stored. */
#include "data/cache_internal.h" /* perfc__l1cache_get_arena */

#include <criterion/criterion.h>
#include <perfc/arena.h>
#include <perfc/l1cache.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static perfc_slice S(const char *s) {
  perfc_slice v = {(const uint8_t *)s, strlen(s)};
  return v;
}

static perfc_l1cache *mk_lru(unsigned shards, size_t max_bytes, int exact) {
  perfc_l1cache_opts o;
  perfc_l1cache_opts_init(&o);
  o.exact_lru = exact;
  o.shards = shards;
  o.max_bytes = max_bytes;
  perfc_l1cache *c = NULL;
  cr_assert_eq(perfc_l1cache_new(&c, &o), 0);
  return c;
}

static perfc_l1cache *mk(unsigned shards, size_t max_bytes) {
  return mk_lru(shards, max_bytes, 0);
}

Test(l1cache, set_get_copy_out) {
  perfc_l1cache *c = mk(4, 1 << 20);
  uint8_t *v;
  size_t n;
  int neg = -1;
  cr_assert_eq(perfc_l1cache_get(c, "a", &v, &n, &neg), PERFC_ENOENT);
  cr_assert_eq(perfc_l1cache_set(c, "a", S("hello"), 0), 0);
  cr_assert_eq(perfc_l1cache_get(c, "a", &v, &n, &neg), 0);
  cr_assert_eq(neg, 0);
  cr_assert_eq(n, 5);
  cr_assert_eq(memcmp(v, "hello", 5), 0);
  /* The copy is the caller's: replacing the entry does not touch it. */
  cr_assert_eq(perfc_l1cache_set(c, "a", S("world!"), 0), 0);
  cr_assert_eq(memcmp(v, "hello", 5), 0);
  free(v);
  uint8_t buf[4];
  cr_assert_eq(perfc_l1cache_get_into(c, "a", buf, sizeof buf, &n, NULL),
               PERFC_ETOOBIG);
  cr_assert_eq(n, 6);
  uint8_t big[16];
  cr_assert_eq(perfc_l1cache_get_into(c, "a", big, sizeof big, &n, NULL), 0);
  cr_assert_eq(memcmp(big, "world!", 6), 0);
  /* Empty values are values, not negative entries. */
  cr_assert_eq(perfc_l1cache_set(c, "e", S(""), 0), 0);
  cr_assert_eq(perfc_l1cache_get(c, "e", &v, &n, &neg), 0);
  cr_assert_eq(n, 0);
  cr_assert_eq(neg, 0);
  cr_assert_not_null(v);
  free(v);
  /* A value bigger than the stack copy takes the two-look path; still one
   * hit in the stats. */
  static uint8_t big_val[4000];
  for (size_t i = 0; i < sizeof big_val; i++)
    big_val[i] = (uint8_t)(i * 7);
  perfc_slice sbig = {big_val, sizeof big_val};
  cr_assert_eq(perfc_l1cache_set(c, "big", sbig, 0), 0);
  cr_assert_eq(perfc_l1cache_get(c, "big", &v, &n, &neg), 0);
  cr_assert_eq(n, sizeof big_val);
  cr_assert_eq(neg, 0);
  cr_assert_eq(memcmp(v, big_val, n), 0);
  free(v);
  perfc_l1cache_stats st;
  perfc_l1cache_stats_get(c, &st);
  cr_assert_eq(st.hits, 5);
  cr_assert_eq(st.misses, 1);
  cr_assert_eq(st.entries, 3);
  cr_assert_gt(st.bytes, 0);
  perfc_l1cache_free(c);
}

Test(l1cache, ttl_expires) {
  perfc_l1cache *c = mk(1, 1 << 20);
  cr_assert_eq(perfc_l1cache_set(c, "k", S("v"), 30), 0);
  cr_assert_eq(perfc_l1cache_set(c, "long", S("v"), 60000), 0);
  uint8_t *v;
  size_t n;
  cr_assert_eq(perfc_l1cache_get(c, "k", &v, &n, NULL), 0);
  free(v);
  usleep(80 * 1000);
  cr_assert_eq(perfc_l1cache_get(c, "k", &v, &n, NULL), PERFC_ENOENT);
  cr_assert_eq(perfc_l1cache_get(c, "long", &v, &n, NULL), 0);
  free(v);
  perfc_l1cache_stats st;
  perfc_l1cache_stats_get(c, &st);
  cr_assert_eq(st.expired, 1);
  cr_assert_eq(st.entries, 1);
  perfc_l1cache_free(c);
}

Test(l1cache, lru_eviction_by_bytes) {
  /* One shard, room for roughly ten 100-byte values; exact LRU so that the
   * touch right after the fill counts. */
  perfc_l1cache *c = mk_lru(1, 10 * (100 + 96), 1);
  char val[100];
  memset(val, 'x', sizeof val);
  perfc_slice sv = {(const uint8_t *)val, sizeof val};
  char key[16];
  for (int i = 0; i < 10; i++) {
    snprintf(key, sizeof key, "k%d", i);
    cr_assert_eq(perfc_l1cache_set(c, key, sv, 0), 0);
  }
  /* Touch k0 so k1 becomes the least recently used. */
  uint8_t buf[128];
  size_t n;
  cr_assert_eq(perfc_l1cache_get_into(c, "k0", buf, sizeof buf, &n, NULL), 0);
  for (int i = 10; i < 20; i++) {
    snprintf(key, sizeof key, "k%d", i);
    cr_assert_eq(perfc_l1cache_set(c, key, sv, 0), 0);
  }
  perfc_l1cache_stats st;
  perfc_l1cache_stats_get(c, &st);
  cr_assert_leq(st.bytes, 10 * (100 + 96));
  cr_assert_gt(st.evictions, 0);
  cr_assert_eq(perfc_l1cache_get_into(c, "k1", buf, sizeof buf, &n, NULL),
               PERFC_ENOENT, "LRU victim k1 should be gone");
  cr_assert_eq(perfc_l1cache_get_into(c, "k19", buf, sizeof buf, &n, NULL), 0);
  /* An entry larger than the shard's share is refused, not stored. */
  static uint8_t huge[8192];
  perfc_slice sh = {huge, sizeof huge};
  cr_assert_eq(perfc_l1cache_set(c, "huge", sh, 0), PERFC_ETOOBIG);
  perfc_l1cache_free(c);
}

Test(l1cache, approximate_lru_promotes_after_interval) {
  /* Default mode: a hit within PERFC_DEFAULT_L1_PROMOTE_MS of the fill does
   * not move the entry; one after it does. */
  perfc_l1cache *c = mk(1, 10 * (100 + 96));
  char val[100];
  memset(val, 'x', sizeof val);
  perfc_slice sv = {(const uint8_t *)val, sizeof val};
  char key[16];
  uint8_t buf[128];
  size_t n;
  /* Fill to exactly full: the set that first evicts tells the capacity. */
  perfc_l1cache_stats st = {0};
  int cap = 0;
  for (; st.evictions == 0; cap++) {
    snprintf(key, sizeof key, "p%d", cap);
    cr_assert_eq(perfc_l1cache_set(c, key, sv, 0), 0);
    perfc_l1cache_stats_get(c, &st);
  }
  perfc_l1cache_clear(c);
  for (int i = 0; i < cap - 1; i++) {
    snprintf(key, sizeof key, "k%d", i);
    cr_assert_eq(perfc_l1cache_set(c, key, sv, 0), 0);
  }
  cr_assert_eq(perfc_l1cache_get_into(c, "k0", buf, sizeof buf, &n, NULL), 0);
  cr_assert_eq(perfc_l1cache_set(c, "new1", sv, 0), 0);
  cr_assert_eq(perfc_l1cache_get_into(c, "k0", buf, sizeof buf, &n, NULL),
               PERFC_ENOENT, "k0 was not promoted, so it was the victim");
  usleep((PERFC_DEFAULT_L1_PROMOTE_MS + 50) * 1000);
  cr_assert_eq(perfc_l1cache_get_into(c, "k1", buf, sizeof buf, &n, NULL), 0);
  cr_assert_eq(perfc_l1cache_set(c, "new2", sv, 0), 0);
  cr_assert_eq(perfc_l1cache_get_into(c, "k1", buf, sizeof buf, &n, NULL), 0,
               "k1 was promoted after the interval");
  perfc_l1cache_free(c);
}

Test(l1cache, negative_entries) {
  perfc_l1cache *c = mk(4, 1 << 20);
  cr_assert_eq(perfc_l1cache_set_negative(c, "nope", 1000), 0);
  uint8_t *v = (uint8_t *)1;
  size_t n = 9;
  int neg = 0;
  cr_assert_eq(perfc_l1cache_get(c, "nope", &v, &n, &neg), 0);
  cr_assert_eq(neg, 1);
  cr_assert_null(v);
  cr_assert_eq(n, 0);
  perfc_l1cache_stats st;
  perfc_l1cache_stats_get(c, &st);
  cr_assert_eq(st.negative_hits, 1);
  perfc_l1cache_free(c);
}

Test(l1cache, delete_clear_and_versions) {
  perfc_l1cache *c = mk(4, 1 << 20);
  cr_assert_eq(perfc_l1cache_set(c, "a", S("1"), 0), 0);
  cr_assert_eq(perfc_l1cache_set(c, "b", S("2"), 0), 0);
  uint64_t va = perfc_l1cache_version(c, "a");
  cr_assert_eq(perfc_l1cache_delete(c, "a"), 0);
  cr_assert_eq(perfc_l1cache_delete(c, "a"), PERFC_ENOENT);
  cr_assert_neq(perfc_l1cache_version(c, "a"), va);
  /* A load that read the version before the delete may not fill. */
  cr_assert_eq(perfc_l1cache_set_versioned(c, "a", S("stale"), 0, 0, va),
               PERFC_ESTATE);
  uint8_t *v;
  size_t n;
  cr_assert_eq(perfc_l1cache_get(c, "a", &v, &n, NULL), PERFC_ENOENT);
  /* With a fresh version it fills. */
  uint64_t va2 = perfc_l1cache_version(c, "a");
  cr_assert_eq(perfc_l1cache_set_versioned(c, "a", S("new"), 0, 0, va2), 0);
  cr_assert_eq(perfc_l1cache_get(c, "a", &v, &n, NULL), 0);
  free(v);
  /* Deleting an absent key still fences. */
  uint64_t vz = perfc_l1cache_version(c, "zz");
  cr_assert_eq(perfc_l1cache_delete(c, "zz"), PERFC_ENOENT);
  cr_assert_eq(perfc_l1cache_set_versioned(c, "zz", S("x"), 0, 0, vz),
               PERFC_ESTATE);
  /* Clear drops everything and fences every key. */
  uint64_t vb = perfc_l1cache_version(c, "b");
  perfc_l1cache_clear(c);
  cr_assert_eq(perfc_l1cache_get(c, "b", &v, &n, NULL), PERFC_ENOENT);
  cr_assert_eq(perfc_l1cache_set_versioned(c, "b", S("x"), 1, 0, vb),
               PERFC_ESTATE);
  perfc_l1cache_stats st;
  perfc_l1cache_stats_get(c, &st);
  cr_assert_eq(st.entries, 0);
  cr_assert_eq(st.bytes, 0);
  cr_assert_eq(st.stale_sets, 3);
  perfc_l1cache_free(c);
  perfc_l1cache_free(NULL);
}

static perfc_l1cache *g_c;

static void *hammer(void *arg) {
  unsigned seed = (unsigned)(uintptr_t)arg;
  char key[32];
  uint8_t buf[64];
  size_t n;
  for (int i = 0; i < 200000; i++) {
    int k = (int)(rand_r(&seed) % 5000);
    snprintf(key, sizeof key, "key%d", k);
    switch (rand_r(&seed) % 4) {
    case 0:
      perfc_l1cache_set(g_c, key, S("value-value"), 1000);
      break;
    case 1:
      perfc_l1cache_delete(g_c, key);
      break;
    default:
      if (perfc_l1cache_get_into(g_c, key, buf, sizeof buf, &n, NULL) == 0)
        cr_assert_eq(n, 11);
    }
  }
  return NULL;
}

Test(l1cache, threads_smoke) {
  g_c = mk(8, 64 * 1024); /* small: forces evictions under contention */
  pthread_t t[4];
  for (uintptr_t i = 0; i < 4; i++)
    pthread_create(&t[i], NULL, hammer, (void *)(i + 1));
  for (int i = 0; i < 4; i++)
    pthread_join(t[i], NULL);
  perfc_l1cache_stats st;
  perfc_l1cache_stats_get(g_c, &st);
  cr_assert_leq(st.bytes, 64 * 1024);
  cr_assert_gt(st.evictions, 0);
  perfc_l1cache_free(g_c);
}

/* #14: durations are int64 ms and checked; a refusal says why. */
Test(l1cache, negative_ttls_are_refused_with_a_message) {
  perfc_l1cache_opts o;
  perfc_l1cache_opts_init(&o);
  o.default_ttl_ms = -1;
  perfc_l1cache *c = NULL;
  cr_assert_eq(perfc_l1cache_new(&c, &o), PERFC_EINVAL);
  cr_assert_null(c);
  cr_assert(strstr(perfc_last_error(), "default_ttl_ms") != NULL, "%s",
            perfc_last_error());
  c = mk(1, 1 << 20);
  cr_assert_eq(perfc_l1cache_set(c, "k", S("v"), -5), PERFC_EINVAL);
  cr_assert_eq(perfc_l1cache_set(c, "k", S("v"), (int64_t)UINT32_MAX + 1),
               PERFC_EINVAL);
  cr_assert_eq(perfc_l1cache_set_negative(c, "k", -1), PERFC_EINVAL);
  cr_assert_eq(
      perfc_l1cache_get(c, "k", &(uint8_t *){NULL}, &(size_t){0}, NULL),
      PERFC_ENOENT, "a refused set stores nothing");
  /* A miss is an answer: it leaves the last failure's message alone. */
  perfc_error_set(PERFC_EIO, NULL, -1, "marker");
  cr_assert_eq(
      perfc_l1cache_get(c, "absent", &(uint8_t *){NULL}, &(size_t){0}, NULL),
      PERFC_ENOENT);
  cr_assert_str_eq(perfc_last_error(), "marker");
  perfc_l1cache_free(c);
}

/* Whether a value is protobuf fields the declarative cache may send as
 * they are is decided once, when it is stored (perfc__pb_plain_fields),
 * and read with every hit: the hit path then skips its own walk. A value
 * the walk refuses (a group, a truncated field) is not plain, so its hits
 * are still decoded by protobuf-c (cache_rpc.c, answer_hit). */
Test(l1cache, plain_protobuf_values_are_marked_when_stored) {
  perfc_l1cache *c = mk(4, 1 << 20);
  perfc_arena *a = NULL;
  cr_assert_eq(perfc_arena_new(&a, 0), 0);
  static const uint8_t plain[] = {0x08, 0x96, 0x01, 0x12, 0x03, 'a', 'b', 'c'};
  static const uint8_t group[] = {0x0b, 0x08, 0x01, 0x0c}; /* field 1, group */
  static const uint8_t cut[] = {0x12, 0x05, 'a'};          /* length past end */
  struct {
    const char *key;
    perfc_slice v;
    int want;
  } cases[] = {
      {"k:plain", {plain, sizeof plain}, 1},
      {"k:group", {group, sizeof group}, 0},
      {"k:cut", {cut, sizeof cut}, 0},
      {"k:empty", {NULL, 0}, 1},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    cr_assert_eq(perfc_l1cache_set(c, cases[i].key, cases[i].v, 60000), 0);
    uint8_t *out = NULL;
    size_t n = 0;
    int neg = -1, pl = -1;
    cr_assert_eq(perfc__l1cache_get_arena(c, cases[i].key, a, &out, &n, &neg,
                                          &pl),
                 0, "%s", cases[i].key);
    cr_assert_eq(n, cases[i].v.len, "%s", cases[i].key);
    cr_assert_eq(neg, 0, "%s", cases[i].key);
    cr_assert_eq(pl, cases[i].want, "%s: plain %d", cases[i].key, pl);
  }
  /* A value replaced by one that is not plain loses the mark. */
  cr_assert_eq(perfc_l1cache_set(c, "k:plain", (perfc_slice){group, sizeof group},
                                 60000),
               0);
  uint8_t *out = NULL;
  size_t n = 0;
  int neg = 0, pl = -1;
  cr_assert_eq(perfc__l1cache_get_arena(c, "k:plain", a, &out, &n, &neg, &pl), 0);
  cr_assert_eq(pl, 0);
  perfc_arena_free(a);
  perfc_l1cache_free(c);
}
