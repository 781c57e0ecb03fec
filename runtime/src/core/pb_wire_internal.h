/*
 * pb_wire_internal.h — protobuf wire-format checks for cache_rpc.c (and its
 * tests). Never installed.
 *
 * Room: runtime/src private header.
 */
#ifndef PERFC_PB_WIRE_INTERNAL_H
#define PERFC_PB_WIRE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* The number of top-level fields in the `len` bytes at `data` (0 for none)
 * when they are a sequence of well-formed varint, 64-bit, length-delimited
 * or 32-bit fields with numbers 1..2^29-1; -1 otherwise (truncated, a
 * group, an invalid wire type or field number). */
int perfc__pb_plain_fields(const uint8_t *data, size_t len);

#endif /* PERFC_PB_WIRE_INTERNAL_H */
