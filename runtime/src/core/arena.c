/*
 * arena.c — bump-pointer arena with chained blocks.
 *
 * Room: runtime/src/core. The server keeps one arena per call context and reuses
 * it across calls (perfc_arena_reset), so in steady state a call allocates
 * nothing from malloc: the first block is part of the arena's own allocation
 * and only oversized calls chain extra blocks, which reset gives back.
 */
#include "perfc/arena.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 16
#define ALIGN_UP(n) (((n) + (ALIGN - 1)) & ~(size_t)(ALIGN - 1))

typedef struct block {
  struct block *next;
  size_t cap;
  size_t used;
  /* Keeps data[] 16-aligned whatever the header's size. */
  _Alignas(ALIGN) unsigned char data[];
} block;

struct perfc_arena {
  block *cur;     /* block being filled; chain goes back to `first` */
  size_t total;   /* bytes handed out since the last reset */
  block first;    /* must be last: its data[] runs to the end of the malloc */
};

int perfc_arena_new(perfc_arena **out, size_t first_block) {
  if (out == NULL)
    return PERFC_EINVAL;
  if (first_block == 0)
    first_block = PERFC_DEFAULT_ARENA_BLOCK;
  first_block = ALIGN_UP(first_block);
  perfc_arena *a = malloc(sizeof *a + first_block);
  if (a == NULL)
    return PERFC_ENOMEM;
  a->first.next = NULL;
  a->first.cap = first_block;
  a->first.used = 0;
  a->cur = &a->first;
  a->total = 0;
  *out = a;
  return 0;
}

static void free_chain(perfc_arena *a) {
  block *b = a->cur;
  while (b != &a->first) {
    block *next = b->next;
    free(b);
    b = next;
  }
}

void perfc_arena_free(perfc_arena *a) {
  if (a == NULL)
    return;
  free_chain(a);
  free(a);
}

void perfc_arena_reset(perfc_arena *a) {
  free_chain(a);
  a->cur = &a->first;
  a->first.used = 0;
  a->total = 0;
}

size_t perfc_arena_used(const perfc_arena *a) { return a->total; }

void *perfc_arena_alloc(perfc_arena *a, size_t n) {
  size_t need = ALIGN_UP(n ? n : 1);
  if (need < n) /* overflow */
    return NULL;
  block *b = a->cur;
  if (b->cap - b->used < need) {
    /* Grow geometrically so a call that builds a large response takes
     * O(log n) mallocs, but never less than the request itself. */
    size_t cap = b->cap * 2;
    if (cap < need)
      cap = need;
    if (cap > SIZE_MAX - sizeof(block))
      return NULL;
    block *nb = malloc(sizeof(block) + cap);
    if (nb == NULL)
      return NULL;
    nb->next = b;
    nb->cap = cap;
    nb->used = 0;
    a->cur = b = nb;
  }
  void *p = b->data + b->used;
  b->used += need;
  a->total += need;
  return p;
}

void *perfc_arena_calloc(perfc_arena *a, size_t n) {
  void *p = perfc_arena_alloc(a, n);
  if (p != NULL)
    memset(p, 0, n);
  return p;
}

char *perfc_arena_strndup(perfc_arena *a, const char *s, size_t len) {
  char *p = perfc_arena_alloc(a, len + 1);
  if (p == NULL)
    return NULL;
  memcpy(p, s, len);
  p[len] = '\0';
  return p;
}

char *perfc_arena_strdup(perfc_arena *a, const char *s) {
  if (s == NULL)
    return NULL;
  return perfc_arena_strndup(a, s, strlen(s));
}

/* The formats generated cache keys use ("user:%lld", "%s/%llu", ...):
 * literal text, %s, %lld, %llu and %%. vsnprintf spends ~600 instructions
 * on a one-number key (most of it setting up its stream), which was a
 * tenth of what perfc adds to a cache hit; this does the same in ~200.
 * Any other conversion, flag or width takes vsnprintf. */
static int simple_format(const char *fmt) {
  for (const char *p = fmt; (p = strchr(p, '%')) != NULL;) {
    if (p[1] == 's' || p[1] == '%')
      p += 2;
    else if (p[1] == 'l' && p[2] == 'l' && (p[3] == 'd' || p[3] == 'u'))
      p += 4;
    else
      return 0;
  }
  return 1;
}

/* Writes v in decimal backwards ending at `end`; returns the first char. */
static char *utoa_back(char *end, unsigned long long v) {
  do
    *--end = (char)('0' + v % 10);
  while ((v /= 10) != 0);
  return end;
}

/* Formats a simple_format() `fmt` into `dst` (`room` bytes); returns the
 * length it needs without the NUL, like vsnprintf, writing only what fits. */
static size_t simple_vformat(char *dst, size_t room, const char *fmt,
                             va_list ap) {
  size_t n = 0;
  char num[24];
  for (const char *p = fmt; *p;) {
    const char *piece;
    size_t len;
    if (*p != '%') {
      const char *q = strchr(p, '%');
      len = q ? (size_t)(q - p) : strlen(p);
      piece = p;
      p += len;
    } else if (p[1] == '%') {
      piece = "%";
      len = 1;
      p += 2;
    } else if (p[1] == 's') {
      piece = va_arg(ap, const char *);
      if (piece == NULL)
        piece = "(null)"; /* glibc's choice, kept so both paths agree */
      len = strlen(piece);
      p += 2;
    } else {
      char *end = num + sizeof num, *first;
      if (p[3] == 'u') {
        first = utoa_back(end, va_arg(ap, unsigned long long));
      } else {
        long long v = va_arg(ap, long long);
        /* Negate as unsigned: -LLONG_MIN overflows a long long. */
        first = utoa_back(end, v < 0 ? 0ULL - (unsigned long long)v
                                     : (unsigned long long)v);
        if (v < 0)
          *--first = '-';
      }
      piece = first;
      len = (size_t)(end - first);
      p += 4;
    }
    if (n < room)
      memcpy(dst + n, piece, len < room - n ? len : room - n);
    n += len;
  }
  if (room > 0)
    dst[n < room ? n : room - 1] = '\0';
  return n;
}

/* simple_vformat() or vsnprintf(); SIZE_MAX when vsnprintf fails. */
static size_t vformat(char *dst, size_t room, int simple, const char *fmt,
                      va_list ap) {
  if (simple)
    return simple_vformat(dst, room, fmt, ap);
  int n = vsnprintf(dst, room, fmt, ap);
  return n < 0 ? SIZE_MAX : (size_t)n;
}

/* Formats straight into the current block's free space and keeps the bytes
 * only if the text fitted: one formatting pass instead of a measuring pass
 * and a writing pass. Generated cache keys ("user:{id}") are formatted this
 * way on every cached call. */
char *perfc_arena_sprintf(perfc_arena *a, const char *fmt, ...) {
  int simple = simple_format(fmt);
  block *b = a->cur;
  size_t room = b->cap - b->used;
  char *dst = (char *)b->data + b->used;
  va_list ap;
  va_start(ap, fmt);
  size_t n = vformat(dst, room, simple, fmt, ap);
  va_end(ap);
  if (n == SIZE_MAX)
    return NULL;
  if (n < room) {
    /* used and cap are multiples of ALIGN, so the rounded size fits too. */
    size_t need = ALIGN_UP(n + 1);
    b->used += need;
    a->total += need;
    return dst;
  }
  char *p = perfc_arena_alloc(a, n + 1);
  if (p == NULL)
    return NULL;
  va_start(ap, fmt);
  vformat(p, n + 1, simple, fmt, ap);
  va_end(ap);
  return p;
}

static void *pb_alloc(void *data, size_t size) {
  return perfc_arena_alloc(data, size);
}

static void pb_free(void *data, void *ptr) {
  /* Arena memory is released all at once when the call ends. */
  (void)data;
  (void)ptr;
}

ProtobufCAllocator perfc_arena_allocator(perfc_arena *a) {
  ProtobufCAllocator al = {.alloc = pb_alloc, .free = pb_free,
                           .allocator_data = a};
  return al;
}
