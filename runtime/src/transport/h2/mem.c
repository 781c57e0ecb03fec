/*
 * transport/h2/mem.c — a loop's allocator for nghttp2: per-size-class free
 * lists, no lock (mem_internal.h says why).
 *
 * Room: runtime/src/transport/h2. Touches nothing but its own lists and
 * malloc; nghttp2 calls it through the nghttp2_mem its sessions were made
 * with.
 *
 * Every block starts with a 16-byte header (the size class, and the byte
 * count of a large block or the free list's link), so the pointer nghttp2
 * gets keeps malloc's 16-byte alignment and free() needs no size. Under
 * AddressSanitizer a cached block's payload is poisoned, so a use after
 * nghttp2_mem_free of a block that sits on a list is still reported.
 */
#include "transport/h2/mem_internal.h"

#include "perfc/common.h"

#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define POISON(p, n) ((void)(p), (void)(n))
#define UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define HDR 16u
#define MIN_SHIFT 5u /* 32 bytes */
#define LARGE 0xffffffffu
#define MAGIC 0x6e326d65u /* "n2me": a foreign pointer fails loudly */

typedef struct hdr {
  uint32_t cls; /* size class, or LARGE */
  uint32_t magic;
  union {
    size_t size;      /* LARGE: the bytes asked for */
    struct hdr *next; /* cached: the next block of its list */
  } u;
} hdr;

_Static_assert(sizeof(hdr) == HDR, "the header keeps 16-byte alignment");

struct perfc__h2_mem {
  nghttp2_mem ng;
  hdr *free[PERFC__H2_MEM_CLASSES];
  size_t cap;
  int direct; /* perfc__h2_mem_direct */
  perfc__h2_mem_stats st;
};

static inline size_t class_bytes(uint32_t cls) {
  return (size_t)1 << (cls + MIN_SHIFT);
}

/* The smallest class whose blocks hold `n` payload bytes, or LARGE. */
static inline uint32_t class_of(size_t n) {
  if (n > PERFC__H2_MEM_MAX_CLASS - HDR)
    return LARGE;
  size_t total = n + HDR;
  if (total <= ((size_t)1 << MIN_SHIFT))
    return 0;
  /* ceil(log2(total)) - MIN_SHIFT */
  return (uint32_t)(64 - __builtin_clzll((unsigned long long)(total - 1))) -
         MIN_SHIFT;
}

static void *mem_malloc(size_t n, void *ud) {
  perfc__h2_mem *m = ud;
  uint32_t cls = m->direct ? LARGE : class_of(n);
  hdr *h;
  if (cls == LARGE) {
    if (n > SIZE_MAX - HDR || (h = malloc(HDR + n)) == NULL)
      return NULL;
    h->u.size = n;
    m->st.large++;
  } else if ((h = m->free[cls]) != NULL) {
    m->free[cls] = h->u.next;
    m->st.cached_bytes -= class_bytes(cls);
    m->st.cached_blocks--;
    m->st.reused++;
    UNPOISON(h + 1, class_bytes(cls) - HDR);
  } else if ((h = malloc(class_bytes(cls))) == NULL) {
    return NULL;
  }
  h->cls = cls;
  h->magic = MAGIC;
  m->st.allocs++;
  return h + 1;
}

static void mem_free(void *p, void *ud) {
  if (p == NULL)
    return;
  perfc__h2_mem *m = ud;
  hdr *h = (hdr *)p - 1;
  if (h->magic != MAGIC)
    abort(); /* not ours, or freed twice: stop before the lists are corrupt */
  h->magic = 0;
  if (h->cls == LARGE) {
    free(h);
    return;
  }
  size_t bytes = class_bytes(h->cls);
  if (m->direct || m->st.cached_bytes + bytes > m->cap) {
    free(h);
    return;
  }
  h->u.next = m->free[h->cls];
  m->free[h->cls] = h;
  m->st.cached_bytes += bytes;
  m->st.cached_blocks++;
  POISON(h + 1, bytes - HDR);
}

static void *mem_calloc(size_t nmemb, size_t size, void *ud) {
  if (size != 0 && nmemb > SIZE_MAX / size)
    return NULL;
  void *p = mem_malloc(nmemb * size, ud);
  if (p != NULL)
    memset(p, 0, nmemb * size);
  return p;
}

static void *mem_realloc(void *p, size_t n, void *ud) {
  if (p == NULL)
    return mem_malloc(n, ud);
  hdr *h = (hdr *)p - 1;
  if (h->magic != MAGIC)
    abort();
  size_t have = h->cls == LARGE ? h->u.size : class_bytes(h->cls) - HDR;
  if (h->cls != LARGE && n <= have)
    return p; /* still fits its block */
  if (h->cls == LARGE && (class_of(n) == LARGE || ((perfc__h2_mem *)ud)->direct)) {
    if (n > SIZE_MAX - HDR)
      return NULL;
    hdr *nh = realloc(h, HDR + n);
    if (nh == NULL)
      return NULL;
    nh->u.size = n;
    ((perfc__h2_mem *)ud)->st.allocs++;
    return nh + 1;
  }
  void *q = mem_malloc(n, ud);
  if (q == NULL)
    return NULL;
  memcpy(q, p, have < n ? have : n);
  mem_free(p, ud);
  return q;
}

int perfc__h2_mem_new(perfc__h2_mem **out, size_t cap_bytes) {
  perfc__h2_mem *m = calloc(1, sizeof *m);
  if (m == NULL)
    return PERFC_ENOMEM;
  m->cap = cap_bytes ? cap_bytes : PERFC__H2_MEM_DEFAULT_CAP;
  m->ng = (nghttp2_mem){.mem_user_data = m,
                        .malloc = mem_malloc,
                        .free = mem_free,
                        .calloc = mem_calloc,
                        .realloc = mem_realloc};
  *out = m;
  return 0;
}

nghttp2_mem *perfc__h2_mem_ng(perfc__h2_mem *m) { return &m->ng; }

void perfc__h2_mem_direct(perfc__h2_mem *m, int on) { m->direct = on; }

void perfc__h2_mem_release(perfc__h2_mem *m) {
  if (m == NULL)
    return;
  for (uint32_t c = 0; c < PERFC__H2_MEM_CLASSES; c++) {
    hdr *h = m->free[c];
    while (h != NULL) {
      hdr *next = h->u.next;
      UNPOISON(h + 1, class_bytes(c) - HDR);
      free(h);
      h = next;
    }
    m->free[c] = NULL;
  }
  m->st.cached_bytes = 0;
  m->st.cached_blocks = 0;
}

void perfc__h2_mem_free(perfc__h2_mem *m) {
  perfc__h2_mem_release(m);
  free(m);
}

void perfc__h2_mem_get_stats(const perfc__h2_mem *m, perfc__h2_mem_stats *out) {
  *out = m->st;
}
