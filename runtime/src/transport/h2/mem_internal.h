/*
 * transport/h2/mem_internal.h — a loop's allocator for nghttp2 (nghttp2_mem).
 *
 * Room: runtime/src/transport/h2 private header. Used by h2.c (one per
 * loop, freed with the server) and conn.c (every session of the loop).
 *
 * Why: nghttp2 mallocs and frees a stream's objects, header buffers and
 * frames on every call. With hundreds of streams in flight per loop,
 * glibc's per-thread cache (7 blocks per size) overflows and most of
 * those calls take malloc's slow paths (_int_malloc, _int_free,
 * unlink_chunk: about a tenth of the server's CPU on a unary echo). This
 * allocator keeps freed small blocks on per-size-class lists of the loop,
 * with no lock: every session of a loop is used on that loop's thread only
 * (and, after the loop thread has been joined, by perfc__h2_server_free).
 * Blocks over PERFC__H2_MEM_MAX_CLASS bytes, and blocks past the cached
 * byte cap, go to malloc/free as before.
 */
#ifndef PERFC_TRANSPORT_H2_MEM_INTERNAL_H
#define PERFC_TRANSPORT_H2_MEM_INTERNAL_H

#include <nghttp2/nghttp2.h>
#include <stddef.h>
#include <stdint.h>

/* Size classes are powers of two from 32 to 4096 bytes, the 16-byte block
 * header included. */
#define PERFC__H2_MEM_CLASSES 8
#define PERFC__H2_MEM_MAX_CLASS 4096
/* Most bytes a loop keeps cached for reuse (freed blocks past it go back
 * to malloc): about the blocks of 2,000 streams in flight. */
#define PERFC__H2_MEM_DEFAULT_CAP ((size_t)8 << 20)

typedef struct perfc__h2_mem perfc__h2_mem;

/* Counters for tests (and for nothing on the hot path but plain adds). */
typedef struct perfc__h2_mem_stats {
  uint64_t allocs;      /* malloc/calloc/realloc that returned a block */
  uint64_t reused;      /* of those, served from a free list */
  uint64_t large;       /* of those, over PERFC__H2_MEM_MAX_CLASS */
  size_t cached_bytes;  /* on the free lists now */
  size_t cached_blocks;
} perfc__h2_mem_stats;

/* A new allocator keeping at most `cap_bytes` cached (0: the default).
 * Returns 0 or PERFC_ENOMEM. Free with perfc__h2_mem_free after every
 * nghttp2 session and rcbuf that used it is gone. */
int perfc__h2_mem_new(perfc__h2_mem **out, size_t cap_bytes);
void perfc__h2_mem_free(perfc__h2_mem *m);

/* The nghttp2_mem to pass to nghttp2_session_server_new3; borrowed, valid
 * until perfc__h2_mem_free. */
nghttp2_mem *perfc__h2_mem_ng(perfc__h2_mem *m);

/* While `on`, blocks are malloc'ed at their exact size and every freed block
 * goes back to free(): for what lives as long as a connection (a session's
 * own structures, made and freed with this on), so an idle connection costs
 * no rounding up to a size class and a closed one leaves nothing cached. */
void perfc__h2_mem_direct(perfc__h2_mem *m, int on);

/* Gives every cached block back to malloc (the loop calls it when its last
 * connection has left, before malloc_trim). */
void perfc__h2_mem_release(perfc__h2_mem *m);

void perfc__h2_mem_get_stats(const perfc__h2_mem *m, perfc__h2_mem_stats *out);

#endif
