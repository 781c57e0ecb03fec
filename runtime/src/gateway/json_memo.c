/*
 * gateway/json_memo.c — the JSON of a response given as protobuf bytes
 * (perfc_http_codec.encode_bytes), remembered per thread.
 *
 * Room: runtime/src/gateway (libperfc-gateway). Internal; perfc__ names.
 *
 * A cache hit answers with the stored protobuf bytes
 * (perfc_ctx_set_raw_response). Over HTTP/JSON the listener had to unpack
 * them and encode the message as JSON on every request: for
 * examples/user-service's GetUser about 8,000 of the ~23,000 instructions
 * of the whole request (callgrind), for bytes that rarely change. The JSON
 * is a pure function of the bytes, the message type, the route (its
 * response_body) and the gateway's JSON options, so the last answers are
 * kept keyed by exactly those and checked byte for byte: a memo needs no
 * invalidation, a changed value is other bytes. A hit copies the JSON
 * into the call's arena.
 *
 * Bounds: per thread (loops and workers each have their own, no lock),
 * MEMO_SLOTS direct-mapped slots holding values up to MEMO_MAX_BYTES of
 * protobuf and MEMO_MAX_JSON of JSON: at most ~320 KiB per thread, freed
 * when the thread exits. Larger answers are encoded every time.
 */
#include "gateway/json_internal.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define MEMO_SLOTS 64
#define MEMO_MAX_BYTES 1024
#define MEMO_MAX_JSON 4096

typedef struct memo_slot {
  uint64_t gen; /* the gateway's perfc__gateway_memo_gen(); 0: empty */
  const void *route;
  const ProtobufCMessageDescriptor *desc;
  uint64_t hash;
  uint32_t n, jlen;
  uint8_t *data; /* n protobuf bytes, then jlen bytes of JSON */
} memo_slot;

typedef struct memo {
  memo_slot slot[MEMO_SLOTS];
  uint64_t hits, misses;
} memo;

static pthread_key_t memo_key;
static pthread_once_t memo_once = PTHREAD_ONCE_INIT;
static int memo_key_ok;
static atomic_uint_fast64_t memo_gens;

static void memo_free(void *p) {
  memo *m = p;
  for (size_t i = 0; i < MEMO_SLOTS; i++)
    free(m->slot[i].data);
  free(m);
}

static void memo_key_init(void) {
  memo_key_ok = pthread_key_create(&memo_key, memo_free) == 0;
}

/* The calling thread's memo, made on first use; NULL without memory (the
 * answer is then encoded as if the memo did not exist). */
static memo *memo_get(void) {
  pthread_once(&memo_once, memo_key_init);
  if (!memo_key_ok)
    return NULL;
  memo *m = pthread_getspecific(memo_key);
  if (m == NULL && (m = calloc(1, sizeof *m)) != NULL &&
      pthread_setspecific(memo_key, m) != 0) {
    free(m);
    m = NULL;
  }
  return m;
}

uint64_t perfc__gateway_memo_gen(void) {
  /* Never 0 (an empty slot's), and never reused: a gateway freed and
   * another made at its address (other JSON options) cannot match the
   * first one's entries. */
  return atomic_fetch_add(&memo_gens, 1) + 1;
}

void perfc__gateway_memo_stats(uint64_t *hits, uint64_t *misses) {
  memo *m = memo_get();
  *hits = m ? m->hits : 0;
  *misses = m ? m->misses : 0;
}

/* Eight bytes at a time, then murmur3's finalizer. Not keyed: the bytes
 * are a response this server made, not something a client chose, and a
 * collision only costs a slot. */
static uint64_t hash_bytes(uint64_t h, const uint8_t *p, size_t n) {
  h ^= n * 0x9e3779b97f4a7c15ull;
  for (; n >= 8; p += 8, n -= 8) {
    uint64_t w;
    memcpy(&w, p, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 29;
  }
  uint64_t w = 0;
  for (size_t i = 0; i < n; i++)
    w |= (uint64_t)p[i] << (8 * i);
  h = (h ^ w) * 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

int perfc__gateway_encode_bytes(const perfc_json_opts *opts, uint64_t gen,
                                const perfc_gateway_match *match,
                                const ProtobufCMessageDescriptor *desc,
                                const uint8_t *bytes, size_t n,
                                perfc_arena *arena, char **out, size_t *len) {
  if (!opts || !match || !match->route || !desc || (n && !bytes) || !arena ||
      !out || !len)
    return perfc_error_set(PERFC_EINVAL, NULL, -1,
                           "perfc__gateway_encode_bytes: NULL argument");
  memo *m = n <= MEMO_MAX_BYTES ? memo_get() : NULL;
  memo_slot *s = NULL;
  uint64_t h = 0;
  if (m != NULL) {
    h = hash_bytes((uint64_t)(uintptr_t)match->route ^
                       ((uint64_t)(uintptr_t)desc << 1) ^ gen,
                   bytes, n);
    s = &m->slot[h & (MEMO_SLOTS - 1)];
    if (s->gen == gen && s->hash == h && s->route == match->route &&
        s->desc == desc && s->n == n &&
        (n == 0 || memcmp(s->data, bytes, n) == 0)) {
      char *j = perfc_arena_alloc(arena, (size_t)s->jlen + 1);
      if (j == NULL)
        return perfc_error_set(PERFC_ENOMEM, NULL, -1,
                               "gateway: out of memory");
      memcpy(j, s->data + n, s->jlen);
      j[s->jlen] = '\0';
      *out = j;
      *len = s->jlen;
      m->hits++;
      return 0;
    }
    m->misses++;
  }
  ProtobufCAllocator al = perfc_arena_allocator(arena);
  ProtobufCMessage *msg = protobuf_c_message_unpack(desc, &al, n, bytes);
  if (msg == NULL)
    return perfc_error_set(PERFC_EPARSE, NULL, -1,
                           "gateway: the response's bytes do not decode as %s",
                           desc->name);
  int rc = perfc_gateway_encode_response(match, msg, opts, arena, out, len);
  if (rc != 0 || s == NULL || *len > MEMO_MAX_JSON)
    return rc;
  /* Remembered in the slot, replacing what was there; without memory the
   * slot is left empty (the answer itself is done). */
  uint8_t *d = realloc(s->data, n + *len);
  if (d == NULL) {
    free(s->data);
    memset(s, 0, sizeof *s);
    return 0;
  }
  if (n > 0)
    memcpy(d, bytes, n);
  memcpy(d + n, *out, *len);
  *s = (memo_slot){.gen = gen, .route = match->route, .desc = desc,
                   .hash = h, .n = (uint32_t)n, .jlen = (uint32_t)*len,
                   .data = d};
  return 0;
}
