/*
 * perfc/arena.h — a bump-pointer arena: many allocations, one free.
 *
 * Every server call owns one arena. The request is unpacked into it, the
 * response is built in it, handler scratch memory comes from it, and the
 * whole thing is released in one go when the call ends. protobuf-c allocates
 * through it via perfc_arena_allocator().
 *
 * Room: runtime public headers. An arena is not thread-safe: one call, one
 * thread at a time (the call context hands it from poller to worker and back,
 * never sharing it concurrently).
 */
#ifndef PERFC_ARENA_H
#define PERFC_ARENA_H

#include "perfc/common.h"
#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct perfc_arena perfc_arena;

/** Default size of the first block: big enough for a typical small RPC's
 *  request, response and context so that the common case never grows. */
#define PERFC_DEFAULT_ARENA_BLOCK 4096

/** Creates an arena whose first block holds `first_block` bytes (0 means
 *  PERFC_DEFAULT_ARENA_BLOCK). Returns 0 or PERFC_ENOMEM. The caller frees it
 *  with perfc_arena_free(). */
PERFC_API int perfc_arena_new(perfc_arena **out, size_t first_block);

/** Frees the arena and everything allocated from it. NULL is a no-op. */
PERFC_API void perfc_arena_free(perfc_arena *a);

/** Returns `n` bytes aligned to 16, valid until the arena is reset or freed;
 *  NULL when memory runs out. n == 0 returns a valid unique pointer. */
PERFC_API void *perfc_arena_alloc(perfc_arena *a, size_t n);

/** Like perfc_arena_alloc() but zero-filled. */
PERFC_API void *perfc_arena_calloc(perfc_arena *a, size_t n);

/** Copies a NUL-terminated string (or NULL → NULL) into the arena. */
PERFC_API char *perfc_arena_strdup(perfc_arena *a, const char *s);

/** Copies `len` bytes into the arena and appends a NUL. */
PERFC_API char *perfc_arena_strndup(perfc_arena *a, const char *s, size_t len);

/** printf into the arena; NULL on allocation failure. */
PERFC_API char *perfc_arena_sprintf(perfc_arena *a, const char *fmt, ...)
#if defined(__GNUC__) || defined(__clang__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/** Releases every allocation but keeps the first block for reuse; extra
 *  blocks are returned to the system. */
PERFC_API void perfc_arena_reset(perfc_arena *a);

/** Bytes handed out since creation or the last reset (for tests/stats). */
PERFC_API size_t perfc_arena_used(const perfc_arena *a);

/** A protobuf-c allocator backed by the arena: alloc comes from the arena,
 *  free is a no-op. Pass it to protobuf_c_message_unpack(); never call
 *  protobuf_c_message_free_unpacked() on such a message. The returned struct
 *  points at the arena (borrowed). */
PERFC_API ProtobufCAllocator perfc_arena_allocator(perfc_arena *a);

#ifdef __cplusplus
}
#endif
#endif /* PERFC_ARENA_H */
