/*
 * l1cache.c — the in-process cache: sharded hash tables with an LRU list
 * and a TTL per entry, bounded by bytes.
 *
 * Room: runtime/src/data (data layer, L1). Public API in perfc/l1cache.h;
 * design in docs/data-layer.md.
 *
 * A key's hash picks a shard; each shard is a lock, a chained hash table
 * that doubles when it gets full, an intrusive doubly linked LRU list (head
 * = most recently used) and its own counters. Counters are plain integers
 * because they are only touched under the shard's lock, which the operation
 * holds anyway. Expired entries are dropped lazily: when a lookup meets
 * one, and from the LRU tail when a set needs room.
 */
#include "perfc/l1cache.h"

#include "core/error_internal.h"
#include "core/pb_wire_internal.h"
#include "data/cache_internal.h"

#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Generation slots per shard. Fixed so that generations survive the entry
 * they describe (a delete of an absent key must still fence a load in
 * flight) without a table that grows with every key ever deleted. */
#define GEN_SLOTS 256
#define INITIAL_BUCKETS 64

typedef struct entry {
  struct entry *hnext;
  struct entry *prev, *next;
  uint64_t hash;
  uint64_t expires_ms;
  uint64_t promoted_ms; /* last move to the LRU head */
  uint32_t klen;
  uint32_t vlen;
  uint8_t negative;
  /* The value is protobuf fields perfc__pb_plain_fields() accepts, checked
   * once when stored: the declarative cache's hits send such bytes as
   * they are, and a hit then skips the walk (cache_rpc.c, answer_hit). */
  uint8_t plain;
  /* key bytes, a NUL, then value bytes */
  uint8_t data[];
} entry;

typedef struct shard {
  atomic_int lock; /* shard_lock() */
  entry **buckets;
  size_t nbuckets; /* power of two */
  entry *lru_head, *lru_tail;
  size_t bytes, max_bytes, entries;
  uint64_t epoch; /* advanced by clear: part of every key's version */
  uint64_t gens[GEN_SLOTS];
  uint64_t hits, negative_hits, misses, evictions, expired, stale_sets;
  /* Shards sit in one array; padding keeps two shards' locks off one line. */
  char pad[64];
} shard;

struct perfc_l1cache {
  shard *shards;
  unsigned nshards; /* power of two */
  int64_t default_ttl_ms;
  uint32_t promote_ms; /* 0 = exact LRU */
};

void perfc_l1cache_opts_init(perfc_l1cache_opts *o) {
  /* Zero first: fields appended later start at their "default" meaning. */
  memset(o, 0, sizeof *o);
  o->shards = PERFC_DEFAULT_L1_SHARDS;
  o->max_bytes = PERFC_DEFAULT_L1_MAX_BYTES;
  o->default_ttl_ms = PERFC_DEFAULT_L1_TTL_MS;
  o->exact_lru = false;
}

/* The shard lock: test-and-set, spinning. What it guards is short (a hash
 * walk and a copy of one value; an eviction's free(); rarely a table
 * doubling or a clear), and a hit is the path that must be cheap: a
 * pthread mutex costs it two calls into libc and a second atomic
 * read-modify-write to unlock, where this unlocks with a plain store. A
 * waiter that has spun 64 times yields its CPU, since the holder may have
 * been preempted (observe/metrics.c's gauges wait the same way). */
static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

static inline void shard_lock(shard *s) {
  unsigned n = 0;
  while (atomic_exchange_explicit(&s->lock, 1, memory_order_acquire)) {
    while (atomic_load_explicit(&s->lock, memory_order_relaxed)) {
      if (++n % 64 == 0)
        sched_yield();
      else
        cpu_relax();
    }
  }
}

static inline void shard_unlock(shard *s) {
  atomic_store_explicit(&s->lock, 0, memory_order_release);
}

static uint64_t now_ms(void) {
  struct timespec ts;
  /* The coarse clock is a vDSO read without a TSC fence: ms resolution is
   * all a TTL needs, and a hit should not pay for more. */
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Eight bytes at a time, each word multiplied in, then a final avalanche
 * (murmur3's fmix64) because both the shard and the bucket index come from
 * low bits. FNV-1a's byte loop cost a hit ~100 instructions on a 20-byte
 * key; this is a third of that. Not a keyed hash: neither was FNV. */
static uint64_t hash_key(const char *key, size_t len) {
  uint64_t h = 0x9e3779b97f4a7c15ull ^ len;
  while (len >= 8) {
    uint64_t w;
    memcpy(&w, key, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 29;
    key += 8;
    len -= 8;
  }
  if (len > 0) {
    /* The last 1-7 bytes without a byte loop (wyhash's trick): two
     * overlapping 4-byte reads, or first/middle/last byte; the length is
     * in h already, so no two tails collide by their padding. */
    uint64_t w;
    if (len >= 4) {
      uint32_t a, b;
      memcpy(&a, key, 4);
      memcpy(&b, key + len - 4, 4);
      w = (uint64_t)a << 32 | b;
    } else {
      w = (uint64_t)(uint8_t)key[0] << 16 | (uint64_t)(uint8_t)key[len / 2] << 8 |
          (uint8_t)key[len - 1];
    }
    h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
  }
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

static shard *shard_for(perfc_l1cache *c, uint64_t h) {
  return &c->shards[h & (c->nshards - 1)];
}

/* The bucket index uses bits above the shard bits so that one shard's keys
 * spread over all its buckets. */
static size_t bucket_of(const shard *s, uint64_t h) {
  return (size_t)(h >> 20) & (s->nbuckets - 1);
}

static size_t gen_slot(uint64_t h) { return (size_t)(h >> 44) % GEN_SLOTS; }

static size_t entry_cost(size_t klen, size_t vlen) {
  return sizeof(entry) + klen + 1 + vlen;
}

int perfc_l1cache_new(perfc_l1cache **out, const perfc_l1cache_opts *opts) {
  if (!out)
    return perfc__fail(PERFC_EINVAL, "l1cache: NULL out");
  /* Copied whole (no field can be dropped by a copy list), then each zero
   * replaced by its default and every value checked. */
  perfc_l1cache_opts d, o;
  perfc_l1cache_opts_init(&d);
  o = opts ? *opts : d;
  if (!o.shards)
    o.shards = d.shards;
  if (!o.max_bytes)
    o.max_bytes = d.max_bytes;
  if (!o.default_ttl_ms)
    o.default_ttl_ms = d.default_ttl_ms;
  if (o.shards > (1u << 16))
    return perfc__fail(PERFC_EINVAL, "l1cache: %u shards (at most 65536)",
                       o.shards);
  if (o.default_ttl_ms < 0 || o.default_ttl_ms > UINT32_MAX)
    return perfc__fail(PERFC_EINVAL,
                       "l1cache: default_ttl_ms %lld out of range",
                       (long long)o.default_ttl_ms);
  unsigned n = 1;
  while (n < o.shards)
    n <<= 1;
  perfc_l1cache *c = calloc(1, sizeof(*c));
  if (!c)
    return perfc__fail(PERFC_ENOMEM, "l1cache: out of memory");
  c->shards = calloc(n, sizeof(shard));
  if (!c->shards) {
    free(c);
    return perfc__fail(PERFC_ENOMEM, "l1cache: out of memory");
  }
  c->nshards = n;
  c->default_ttl_ms = o.default_ttl_ms;
  c->promote_ms = o.exact_lru ? 0 : PERFC_DEFAULT_L1_PROMOTE_MS;
  for (unsigned i = 0; i < n; i++) {
    shard *s = &c->shards[i];
    atomic_init(&s->lock, 0);
    s->nbuckets = INITIAL_BUCKETS;
    s->buckets = calloc(s->nbuckets, sizeof(entry *));
    s->max_bytes = o.max_bytes / n;
    if (!s->buckets) {
      c->nshards = i + 1;
      perfc_l1cache_free(c);
      return perfc__fail(PERFC_ENOMEM, "l1cache: out of memory");
    }
  }
  *out = c;
  return 0;
}

static void shard_drop_all(shard *s) {
  entry *e = s->lru_head;
  while (e) {
    entry *nx = e->next;
    free(e);
    e = nx;
  }
  s->lru_head = s->lru_tail = NULL;
  memset(s->buckets, 0, s->nbuckets * sizeof(entry *));
  s->bytes = 0;
  s->entries = 0;
}

void perfc_l1cache_free(perfc_l1cache *c) {
  if (!c)
    return;
  for (unsigned i = 0; i < c->nshards; i++) {
    shard *s = &c->shards[i];
    if (s->buckets)
      shard_drop_all(s);
    free(s->buckets);
  }
  free(c->shards);
  free(c);
}

static void lru_unlink(shard *s, entry *e) {
  if (e->prev)
    e->prev->next = e->next;
  else
    s->lru_head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    s->lru_tail = e->prev;
  e->prev = e->next = NULL;
}

static void lru_push_front(shard *s, entry *e) {
  e->prev = NULL;
  e->next = s->lru_head;
  if (s->lru_head)
    s->lru_head->prev = e;
  s->lru_head = e;
  if (!s->lru_tail)
    s->lru_tail = e;
}

/* Finds the entry and, through `link`, the pointer that points at it, so
 * that removal needs no second walk. */
static entry *find(shard *s, uint64_t h, const char *key, size_t klen,
                   entry ***link) {
  entry **p = &s->buckets[bucket_of(s, h)];
  for (; *p; p = &(*p)->hnext) {
    entry *e = *p;
    if (e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0) {
      if (link)
        *link = p;
      return e;
    }
  }
  return NULL;
}

static void remove_entry(shard *s, entry *e, entry **link) {
  if (!link) {
    entry **p = &s->buckets[bucket_of(s, e->hash)];
    while (*p != e)
      p = &(*p)->hnext;
    link = p;
  }
  *link = e->hnext;
  lru_unlink(s, e);
  s->bytes -= entry_cost(e->klen, e->vlen);
  s->entries--;
  free(e);
}

static void maybe_grow(shard *s) {
  if (s->entries < s->nbuckets)
    return;
  size_t nn = s->nbuckets * 2;
  entry **nb = calloc(nn, sizeof(entry *));
  if (!nb)
    return; /* longer chains, still correct */
  for (size_t i = 0; i < s->nbuckets; i++) {
    entry *e = s->buckets[i];
    while (e) {
      entry *nx = e->hnext;
      size_t b = (size_t)(e->hash >> 20) & (nn - 1);
      e->hnext = nb[b];
      nb[b] = e;
      e = nx;
    }
  }
  free(s->buckets);
  s->buckets = nb;
  s->nbuckets = nn;
}

/* Copies the value into `buf` under the shard lock; nothing is allocated
 * while the lock is held. `count` = 0 for the second look of a value that
 * did not fit the first time (one call, one hit in the stats). */
static int lookup(perfc_l1cache *c, const char *key, uint8_t *buf, size_t cap,
                  size_t *out_len, int *out_negative, int *out_plain,
                  int count) {
  if (!c || !key || !out_len || (cap && !buf))
    return PERFC_EINVAL;
  size_t klen = strlen(key);
  uint64_t h = hash_key(key, klen);
  shard *s = shard_for(c, h);
  uint64_t now = now_ms();
  shard_lock(s);
  entry **link;
  entry *e = find(s, h, key, klen, &link);
  if (e && e->expires_ms <= now) {
    remove_entry(s, e, link);
    s->expired++;
    e = NULL;
  }
  if (!e) {
    if (count)
      s->misses++;
    shard_unlock(s);
    return PERFC_ENOENT;
  }
  if (count) {
    s->hits++;
    if (e->negative)
      s->negative_hits++;
  }
  /* Moving the entry writes its neighbours' cache lines; skipping the move
   * for recently moved entries keeps most hits on hot keys read-only. */
  if (s->lru_head != e && now - e->promoted_ms >= c->promote_ms) {
    lru_unlink(s, e);
    lru_push_front(s, e);
    e->promoted_ms = now;
  }
  *out_len = e->vlen;
  if (out_negative)
    *out_negative = e->negative;
  if (out_plain)
    *out_plain = e->plain;
  int rc = 0;
  if (e->vlen > cap)
    rc = PERFC_ETOOBIG;
  else if (e->vlen)
    memcpy(buf, e->data + e->klen + 1, e->vlen);
  shard_unlock(s);
  return rc;
}

/* Values up to this size are copied to the stack under the lock and
 * malloc'd after it; larger ones take a second look into a buffer of the
 * size the first look reported. */
#define GET_STACK_BYTES 512

int perfc_l1cache_get(perfc_l1cache *c, const char *key, uint8_t **out,
                      size_t *out_len, int *out_negative) {
  if (!out)
    return PERFC_EINVAL;
  uint8_t stack[GET_STACK_BYTES];
  int neg = 0;
  size_t n = 0;
  int rc = lookup(c, key, stack, sizeof stack, &n, &neg, NULL, 1);
  if (rc == 0) {
    *out = NULL;
    if (!neg) {
      if (!(*out = malloc(n ? n : 1)))
        return PERFC_ENOMEM;
      memcpy(*out, stack, n);
    }
  }
  while (rc == PERFC_ETOOBIG) {
    /* The entry may be replaced between the looks: repeat until the buffer
     * fits what is there now (or it is gone: then it is a miss). */
    uint8_t *p = malloc(n);
    if (!p)
      return PERFC_ENOMEM;
    rc = lookup(c, key, p, n, &n, &neg, NULL, 0);
    if (rc == 0 && !neg)
      *out = p;
    else {
      free(p);
      if (rc == 0) /* replaced by a negative entry */
        *out = NULL;
    }
  }
  if (rc == 0) {
    *out_len = neg ? 0 : n;
    if (out_negative)
      *out_negative = neg;
  }
  return rc;
}

int perfc__l1cache_get_arena(perfc_l1cache *c, const char *key, perfc_arena *a,
                             uint8_t **out, size_t *out_len, int *out_negative,
                             int *out_plain) {
  if (!out || !a)
    return PERFC_EINVAL;
  /* A guess that fits most cached messages; the arena is the call's, so
   * the unused tail costs nothing but address space until the reset. */
  size_t cap = GET_STACK_BYTES, n = 0;
  uint8_t *buf = perfc_arena_alloc(a, cap);
  if (!buf)
    return PERFC_ENOMEM;
  int neg = 0;
  int rc = lookup(c, key, buf, cap, &n, &neg, out_plain, 1);
  while (rc == PERFC_ETOOBIG) {
    /* Replaced between the looks: repeat until it fits or is gone. */
    if (!(buf = perfc_arena_alloc(a, n)))
      return PERFC_ENOMEM;
    cap = n;
    rc = lookup(c, key, buf, cap, &n, &neg, out_plain, 0);
  }
  if (rc != 0)
    return rc;
  /* A negative entry's note comes back too (NULL when it has none). */
  *out = n == 0 ? NULL : buf;
  *out_len = n;
  if (out_negative)
    *out_negative = neg;
  return 0;
}

int perfc__l1cache_note(perfc_l1cache *c, const char *key, perfc_arena *a,
                        uint8_t **out, size_t *out_len) {
  if (!out || !out_len || !a)
    return PERFC_EINVAL;
  size_t cap = 64, n = 0;
  uint8_t *buf = perfc_arena_alloc(a, cap);
  int neg = 0;
  int rc = buf ? lookup(c, key, buf, cap, &n, &neg, NULL, 0) : PERFC_ENOMEM;
  while (rc == PERFC_ETOOBIG) {
    if (!(buf = perfc_arena_alloc(a, n)))
      return PERFC_ENOMEM;
    cap = n;
    rc = lookup(c, key, buf, cap, &n, &neg, NULL, 0);
  }
  if (rc != 0)
    return rc;
  if (!neg)
    return PERFC_ENOENT;
  *out = n ? buf : NULL;
  *out_len = n;
  return 0;
}

int perfc_l1cache_get_into(perfc_l1cache *c, const char *key, uint8_t *buf,
                           size_t cap, size_t *out_len, int *out_negative) {
  return lookup(c, key, buf, cap, out_len, out_negative, NULL, 1);
}

static uint64_t version_locked(const shard *s, uint64_t h) {
  /* Both terms only grow, so their sum changes whenever either does. */
  return s->epoch + s->gens[gen_slot(h)];
}

/* One routine for the four set variants: `check_version` fences stale
 * loads (see perfc_l1cache_set_versioned). */
static int store(perfc_l1cache *c, const char *key, perfc_slice value,
                 int negative, int64_t ttl_ms, int check_version,
                 uint64_t version) {
  if (!c || !key || (!negative && value.len && !value.base))
    return perfc__fail(PERFC_EINVAL, "l1cache: NULL cache, key or value");
  if (ttl_ms < 0 || ttl_ms > UINT32_MAX)
    return perfc__fail(PERFC_EINVAL, "l1cache: ttl_ms %lld out of range",
                       (long long)ttl_ms);
  size_t klen = strlen(key);
  if (klen > UINT32_MAX || value.len > UINT32_MAX)
    return perfc__fail(PERFC_ETOOBIG, "l1cache: key or value over 4 GiB");
  /* A negative entry may carry a note (the NOT_FOUND message of
   * perfc_cache_rpc); without bytes it has none. */
  size_t vlen = negative && !value.base ? 0 : value.len;
  size_t cost = entry_cost(klen, vlen);
  uint64_t h = hash_key(key, klen);
  shard *s = shard_for(c, h);
  /* Allocate and copy before taking the lock: the critical section is then
   * only pointer surgery. */
  entry *ne = NULL;
  if (cost <= s->max_bytes) {
    ne = malloc(cost);
    if (!ne)
      return perfc__fail(PERFC_ENOMEM, "l1cache: out of memory");
    ne->hash = h;
    ne->klen = (uint32_t)klen;
    ne->vlen = (uint32_t)vlen;
    ne->negative = negative ? 1 : 0;
    ne->plain = !negative && perfc__pb_plain_fields(value.base, vlen) >= 0;
    ne->promoted_ms = now_ms();
    ne->expires_ms =
        ne->promoted_ms + (uint64_t)(ttl_ms ? ttl_ms : c->default_ttl_ms);
    memcpy(ne->data, key, klen);
    ne->data[klen] = 0;
    if (vlen)
      memcpy(ne->data + klen + 1, value.base, vlen);
  }
  shard_lock(s);
  if (check_version && version_locked(s, h) != version) {
    s->stale_sets++;
    shard_unlock(s);
    free(ne);
    return PERFC_ESTATE;
  }
  entry **link;
  entry *old = find(s, h, key, klen, &link);
  if (old)
    remove_entry(s, old, link);
  if (!ne) {
    shard_unlock(s);
    return perfc__fail(PERFC_ETOOBIG,
                       "l1cache: %zu-byte entry over a shard's share of %zu "
                       "bytes",
                       cost, s->max_bytes);
  }
  uint64_t now = now_ms();
  while (s->bytes + cost > s->max_bytes && s->lru_tail) {
    entry *victim = s->lru_tail;
    if (victim->expires_ms <= now)
      s->expired++;
    else
      s->evictions++;
    remove_entry(s, victim, NULL);
  }
  maybe_grow(s);
  size_t b = bucket_of(s, h);
  ne->hnext = s->buckets[b];
  s->buckets[b] = ne;
  lru_push_front(s, ne);
  s->bytes += cost;
  s->entries++;
  shard_unlock(s);
  return 0;
}

int perfc_l1cache_set(perfc_l1cache *c, const char *key, perfc_slice value,
                      int64_t ttl_ms) {
  return store(c, key, value, 0, ttl_ms, 0, 0);
}

int perfc_l1cache_set_negative(perfc_l1cache *c, const char *key,
                               int64_t ttl_ms) {
  perfc_slice none = {NULL, 0};
  return store(c, key, none, 1, ttl_ms, 0, 0);
}

int perfc_l1cache_set_versioned(perfc_l1cache *c, const char *key,
                                perfc_slice value, int negative, int64_t ttl_ms,
                                uint64_t version) {
  return store(c, key, value, negative, ttl_ms, 1, version);
}

uint64_t perfc_l1cache_version(perfc_l1cache *c, const char *key) {
  if (!c || !key)
    return 0;
  uint64_t h = hash_key(key, strlen(key));
  shard *s = shard_for(c, h);
  shard_lock(s);
  uint64_t v = version_locked(s, h);
  shard_unlock(s);
  return v;
}

int perfc_l1cache_delete(perfc_l1cache *c, const char *key) {
  if (!c || !key)
    return PERFC_EINVAL;
  size_t klen = strlen(key);
  uint64_t h = hash_key(key, klen);
  shard *s = shard_for(c, h);
  shard_lock(s);
  s->gens[gen_slot(h)]++;
  entry **link;
  entry *e = find(s, h, key, klen, &link);
  if (e)
    remove_entry(s, e, link);
  shard_unlock(s);
  return e ? 0 : PERFC_ENOENT;
}

void perfc_l1cache_clear(perfc_l1cache *c) {
  if (!c)
    return;
  for (unsigned i = 0; i < c->nshards; i++) {
    shard *s = &c->shards[i];
    shard_lock(s);
    s->epoch++;
    shard_drop_all(s);
    shard_unlock(s);
  }
}

void perfc_l1cache_stats_get(perfc_l1cache *c, perfc_l1cache_stats *out) {
  memset(out, 0, sizeof(*out));
  if (!c)
    return;
  for (unsigned i = 0; i < c->nshards; i++) {
    shard *s = &c->shards[i];
    shard_lock(s);
    out->hits += s->hits;
    out->negative_hits += s->negative_hits;
    out->misses += s->misses;
    out->evictions += s->evictions;
    out->expired += s->expired;
    out->stale_sets += s->stale_sets;
    out->bytes += s->bytes;
    out->entries += s->entries;
    shard_unlock(s);
  }
}
