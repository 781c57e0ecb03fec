/*
 * cache_rpc_internal.h — the cached-response pass-through of cache_rpc.c,
 * for its tests. Never installed.
 *
 * Room: runtime/src private header.
 */
#ifndef PERFC_CACHE_RPC_INTERNAL_H
#define PERFC_CACHE_RPC_INTERNAL_H

#include "perfc/arena.h"

#include <protobuf-c/protobuf-c.h>

/* Makes `msg` (initialised, known fields unset) pack to exactly the `len`
 * bytes at `data`: a copy of them goes into `a`, and each top-level field
 * becomes one of msg's unknown fields pointing into it, which protobuf-c
 * packs as it finds them (the tag, then the bytes). Returns 0, -1 when the
 * bytes are not a sequence of well-formed varint, 64-bit, length-delimited
 * or 32-bit fields (msg unchanged; decode it instead), or PERFC_ENOMEM. */
int perfc__pb_pass_through(perfc_arena *a, ProtobufCMessage *msg,
                           const uint8_t *data, size_t len);

#endif /* PERFC_CACHE_RPC_INTERNAL_H */
